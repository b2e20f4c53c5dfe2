//! A TCP echo round trip through a smolmix tunnel: sends `--bytes` of data, half-closes
//! (`shutdown`, a FIN), reads the echo to the server's FIN and compares.
//!
//!     cargo run --release --example tcp_echo -- --ipr udp://198.51.100.1:51820 --server 192.0.2.2:7 --bytes 300000
//!
//! Prints one line `tcp echo: N bytes ... from <allocated IPv4>` and exits 0 if the echo is
//! identical. Exercises write back-pressure, poll_shutdown and end-of-stream.

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
    /// Echo server, IP:PORT
    #[arg(long, default_value = "192.0.2.2:7")]
    server: SocketAddr,
    /// Bytes to send
    #[arg(long, default_value_t = 100_000)]
    bytes: usize,
    /// Seconds the whole exchange may take
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    common::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let tunnel = args.tunnel.open().await?;
    let (v4, v6) = tunnel.allocated_ips();
    let started = Instant::now();
    // A pattern no echo of a shorter or shifted stream can match by accident.
    let sent: Vec<u8> = (0..args.bytes).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect();
    let exchange = async {
        let stream = tunnel.tcp_connect(args.server).await?;
        let local = stream.local_addr();
        let (mut rd, mut wr) = tokio::io::split(stream);
        // Write and read concurrently: the echo fills our receive window while we still send.
        let writer = async {
            wr.write_all(&sent).await?;
            wr.shutdown().await?;
            Ok::<_, std::io::Error>(())
        };
        let mut got = Vec::with_capacity(sent.len());
        let reader = rd.read_to_end(&mut got);
        let (w, r) = tokio::join!(writer, reader);
        w?;
        r?;
        Ok::<_, Box<dyn std::error::Error>>((local, got))
    };
    let result = tokio::time::timeout(Duration::from_secs(args.timeout), exchange).await;
    tunnel.shutdown().await;
    let (local, got) = result.map_err(|_| format!("no complete echo within {} s", args.timeout))??;
    let ok = got == sent;
    println!(
        "tcp echo: {} of {} bytes {} in {:.2} s, local {local} (allocated {v4}, {v6})",
        got.len(),
        sent.len(),
        if ok { "matched" } else { "DIFFER" },
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}
