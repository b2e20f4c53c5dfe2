//! A WebSocket session through a smolmix tunnel: tokio-tungstenite on a userspace `TcpStream`.
//!
//!     cargo run --release --example websocket -- --ipr udp://198.51.100.1:51820 --url ws://192.0.2.2:8765/
//!
//! Sends `--count` text messages and one 64 KiB binary message to an echo server and checks
//! every echo. Prints one line `websocket: N/N echoes matched ...` and exits 0 if all did.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use smolmix::Tunnel;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    tunnel: common::TunnelArgs,
    /// Echo server: ws://IP[:PORT]/PATH
    #[arg(long, default_value = "ws://192.0.2.2:8765/")]
    url: String,
    /// Text messages to send
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Seconds to wait for each echo
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    common::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let uri: Uri = args.url.parse()?;
    if uri.scheme_str() != Some("ws") {
        return Err("only ws:// URLs (for wss, put tokio-rustls on the TcpStream)".into());
    }
    let host = uri.host().ok_or("the URL has no host")?;
    let ip: IpAddr =
        host.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| "the URL host must be an IP address")?;
    let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(80));

    let tunnel = args.tunnel.open().await?;
    let started = Instant::now();
    let result = echo(&tunnel, addr, &args).await;
    tunnel.shutdown().await;
    let matched = result?;
    let total = args.count + 1;
    println!(
        "websocket: {matched}/{total} echoes matched in {:.2} s via {}",
        started.elapsed().as_secs_f64(),
        tunnel.exit()
    );
    Ok(matched == total)
}

/// Returns how many echoes matched what was sent.
async fn echo(tunnel: &Tunnel, addr: SocketAddr, args: &Args) -> Result<usize, Box<dyn std::error::Error>> {
    let stream = tunnel.tcp_connect(addr).await?;
    let (mut ws, _response) = tokio_tungstenite::client_async(args.url.as_str(), stream).await?;
    let wait = Duration::from_secs(args.timeout);
    let mut outgoing: Vec<Message> =
        (0..args.count).map(|i| Message::Text(format!("smolmix echo #{i} {}", rand_tag()))).collect();
    outgoing.push(Message::Binary((0..65536u32).map(|i| (i * 7 + 3) as u8).collect()));
    let mut matched = 0;
    for msg in outgoing {
        ws.send(msg.clone()).await?;
        // Skip control frames (ping/pong) until the echo arrives.
        loop {
            let got = tokio::time::timeout(wait, ws.next()).await.map_err(|_| "timed out waiting for an echo")?;
            let got = got.ok_or("the server closed the connection")??;
            if got.is_ping() || got.is_pong() {
                continue;
            }
            if got == msg {
                matched += 1;
            } else {
                eprintln!("mismatch: sent {} bytes, got {} bytes", msg.len(), got.len());
            }
            break;
        }
    }
    ws.close(None).await?;
    Ok(matched)
}

/// A per-run tag so that an echo of an earlier run can never match.
fn rand_tag() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
