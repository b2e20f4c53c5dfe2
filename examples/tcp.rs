//! HTTP/1.1 GET through a smolmix tunnel, with hyper over a userspace `TcpStream`.
//!
//!     cargo run --release --example tcp -- --ipr udp://198.51.100.1:51820 --url http://192.0.2.2/mid.bin
//!     cargo run --release --example tcp -- --url http://203.0.113.80/      # best IPR exit of the Nym mixnet
//!
//! Prints one line `HTTP <status>: <bytes> bytes in <secs> s via <exit>` and exits 0 on a 2xx
//! answer; `--output FILE` keeps the body (the netns suite compares its sha256). No root needed.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::{header, Request, Uri};
use hyper_util::rt::TokioIo;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    tunnel: common::TunnelArgs,
    /// What to fetch: http://IP[:PORT]/PATH (an IP literal: no DNS is done here)
    #[arg(long, default_value = "http://192.0.2.2/")]
    url: Uri,
    /// Write the body to this file
    #[arg(long)]
    output: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    common::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    if args.url.scheme_str() != Some("http") {
        return Err("only http:// URLs (for https, put tokio-rustls on the TcpStream)".into());
    }
    let host = args.url.host().ok_or("the URL has no host")?;
    let ip: IpAddr =
        host.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| "the URL host must be an IP address")?;
    let addr = SocketAddr::new(ip, args.url.port_u16().unwrap_or(80));
    let authority = args.url.authority().map(|a| a.to_string()).unwrap_or_default();
    let path = args.url.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();

    let tunnel = args.tunnel.open().await?;
    let started = Instant::now();
    let result = async {
        let stream = tunnel.tcp_connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let req = Request::get(path).header(header::HOST, authority).body(Empty::<Bytes>::new())?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        drop(sender);
        let _ = conn.await;
        Ok::<_, Box<dyn std::error::Error>>((status, body))
    }
    .await;
    let exit = tunnel.exit().to_string();
    tunnel.shutdown().await;
    let (status, body) = result?;
    if let Some(path) = &args.output {
        std::fs::write(path, &body)?;
    }
    println!("HTTP {}: {} bytes in {:.2} s via {exit}", status.as_u16(), body.len(), started.elapsed().as_secs_f64());
    Ok(status.is_success())
}
