//! The library's measuring program for `scripts/bench-mixnet.sh`: the twin of
//! `bench/upstream/smolmix_bench.rs` (upstream smolmix), with the same arguments and output
//! lines, so that one script reads both.
//!
//!     mixnet_bench --nym-api URL --ipr ADDR [--traffic fast] [--from-client]
//!                  [--echo IP:PORT:COUNT] [--get URL:FILE]... [--upload IP:PORT:BYTES]...
//!
//! With `--stepped` it prints `ready` and waits for a line on stdin before each operation, so
//! that a script can read the mixnodes' counters around it (and idle in between).
//!
//! Output, one line each: `connected SECS` (from start to a tunnel that carries traffic),
//! `echo COUNT P50_MS P95_MS LOST` (UDP echo round trips, one at a time),
//! `get URL BYTES SECS` (HTTP/1.0 over one TCP connection; the body goes to FILE),
//! `upload BYTES SECS REPLY` (bytes to a sink that answers with their count and sha256).

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    tunnel: common::TunnelArgs,
    /// UDP echo round trips: IP:PORT:COUNT
    #[arg(long)]
    echo: Option<String>,
    /// Download over HTTP/1.0: http://IP[:PORT]/PATH:FILE (repeatable)
    #[arg(long)]
    get: Vec<String>,
    /// Upload to a sink: IP:PORT:BYTES (repeatable)
    #[arg(long)]
    upload: Vec<String>,
    /// Print `ready` and wait for a line on stdin before each operation
    #[arg(long)]
    stepped: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    common::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let tunnel = args.tunnel.open().await?;
    println!("connected {:.3}", t0.elapsed().as_secs_f64());

    if let Some(spec) = &args.echo {
        let (addr, count) = spec.rsplit_once(':').ok_or("--echo IP:PORT:COUNT")?;
        let addr: SocketAddr = addr.parse()?;
        let count: usize = count.parse()?;
        step(args.stepped).await?;
        let udp = tunnel.udp_socket().await?;
        let mut rtts = Vec::new();
        let mut buf = [0u8; 1500];
        for i in 0..count {
            let sent = Instant::now();
            udp.send_to(format!("echo {i}").as_bytes(), addr).await?;
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), udp.recv_from(&mut buf)).await {
                rtts.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
        }
        rtts.sort_by(f64::total_cmp);
        let pct = |p: f64| rtts.get(((rtts.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
        println!("echo {count} {:.0} {:.0} {}", pct(0.5), pct(0.95), count - rtts.len());
    }

    for spec in &args.get {
        let (url, file) = spec.rsplit_once(':').ok_or("--get URL:FILE")?;
        let rest = url.strip_prefix("http://").ok_or("--get wants http://")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let addr: SocketAddr = if host.contains(':') { host.parse()? } else { format!("{host}:80").parse()? };
        step(args.stepped).await?;
        let started = Instant::now();
        let mut tcp = tunnel.tcp_connect(addr).await?;
        tcp.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
        let mut resp = Vec::new();
        tcp.read_to_end(&mut resp).await?;
        let secs = started.elapsed().as_secs_f64();
        let body = resp.windows(4).position(|w| w == b"\r\n\r\n").map(|i| &resp[i + 4..]).unwrap_or(&[]);
        std::fs::write(file, body)?;
        println!("get {url} {} {secs:.3}", body.len());
    }

    for spec in &args.upload {
        let (addr, bytes) = spec.rsplit_once(':').ok_or("--upload IP:PORT:BYTES")?;
        let addr: SocketAddr = addr.parse()?;
        let bytes: usize = bytes.parse()?;
        step(args.stepped).await?;
        let started = Instant::now();
        let mut tcp = tunnel.tcp_connect(addr).await?;
        let chunk: Vec<u8> = (0..16384u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            tcp.write_all(&chunk[..n]).await?;
            left -= n;
        }
        tcp.shutdown().await?;
        let mut reply = String::new();
        tcp.read_to_string(&mut reply).await?;
        println!("upload {bytes} {:.3} {}", started.elapsed().as_secs_f64(), reply.trim());
    }

    tunnel.shutdown().await;
    Ok(true)
}

/// With `--stepped`: says `ready` and waits for the script's go (a line on stdin).
async fn step(stepped: bool) -> std::io::Result<()> {
    if stepped {
        println!("ready");
        tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await??;
    }
    Ok(())
}
