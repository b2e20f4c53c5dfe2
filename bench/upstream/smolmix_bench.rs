//! The measuring program for upstream smolmix (nym repository, `smolmix/core`, release tag
//! nym-binaries-v2026.9-venaco, plus `smolmix-from-client.patch`). `scripts/bench-mixnet.sh`
//! copies it to `smolmix/core/examples/` of a nym source tree and builds it there; it is the
//! twin of this project's `examples/mixnet_bench.rs`: same arguments, same output lines, so
//! that one script reads both.
//!
//! ```text
//! smolmix_bench --nym-api URL --ipr ADDR [--traffic default|fast]
//!               [--echo IP:PORT:COUNT] [--get URL:FILE]... [--upload IP:PORT:BYTES]...
//! ```
//!
//! With `--stepped` it prints `ready` and waits for a line on stdin before each operation, so
//! that a script can read the mixnodes' counters around it (and idle in between).
//!
//! Output, one line each: `connected SECS`, `echo COUNT P50_MS P95_MS LOST`,
//! `get URL BYTES SECS`, `upload BYTES SECS REPLY`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nym_sdk::mixnet::MixnetClientBuilder;
use nym_sdk::{DebugConfig, NymNetworkDetails, ValidatorDetails};
use smolmix::Tunnel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn all(args: &[String], name: &str) -> Vec<String> {
    args.windows(2).filter(|w| w[0] == name).map(|w| w[1].clone()).collect()
}

/// Mainnet's details with every nym-api URL replaced by `url` (the local directory).
fn network(url: &str) -> NymNetworkDetails {
    let mut net = NymNetworkDetails::new_mainnet();
    // ApiUrl is not re-exported by nym-sdk: reuse mainnet's entries, rewritten.
    let mut urls = net.nym_api_urls.clone().unwrap_or_default();
    urls.truncate(1);
    for u in &mut urls {
        u.url = url.to_string();
        u.front_hosts = None;
    }
    let nyxd = net.endpoints.first().map(|e| e.nyxd_url.clone()).unwrap_or_default();
    net.endpoints = vec![ValidatorDetails::new(nyxd, Some(url.to_string()), None)];
    net.with_nym_api_urls(urls)
}

/// Upstream's high-traffic profile, the same three knobs as smolmix-vpn's `--traffic fast`.
fn debug_config(fast: bool) -> DebugConfig {
    let mut cfg = DebugConfig::default();
    if fast {
        cfg.traffic.message_sending_average_delay = Duration::from_millis(4);
        cfg.traffic.average_packet_delay = Duration::from_millis(10);
        cfg.cover_traffic.loop_cover_traffic_average_delay = Duration::from_millis(2_000_000);
    }
    cfg
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // RUST_LOG as for ours: the bench reads the SDK's packet statistics from stderr.
    nym_bin_common::logging::setup_tracing_logger();
    let args: Vec<String> = std::env::args().collect();
    let api = arg(&args, "--nym-api").ok_or("--nym-api URL is required")?;
    let ipr = arg(&args, "--ipr").ok_or("--ipr ADDR is required")?;
    let fast = arg(&args, "--traffic").as_deref() == Some("fast");
    let stepped = args.iter().any(|a| a == "--stepped");

    let t0 = Instant::now();
    let client = MixnetClientBuilder::new_ephemeral()
        .network_details(network(&api))
        .debug_config(debug_config(fast))
        .build()?
        .connect_to_mixnet()
        .await?;
    let tunnel = Tunnel::from_client(client, ipr.parse()?).await?;
    println!("connected {:.3}", t0.elapsed().as_secs_f64());

    if let Some(spec) = arg(&args, "--echo") {
        let (addr, count) = spec.rsplit_once(':').ok_or("--echo IP:PORT:COUNT")?;
        let addr: SocketAddr = addr.parse()?;
        let count: usize = count.parse()?;
        step(stepped).await?;
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

    for spec in all(&args, "--get") {
        // http://IP[:PORT]/PATH:FILE — the body is written to FILE for the caller's checksum.
        let (url, file) = spec.rsplit_once(':').ok_or("--get URL:FILE")?;
        let rest = url.strip_prefix("http://").ok_or("--get wants http://")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let addr: SocketAddr = if host.contains(':') { host.parse()? } else { format!("{host}:80").parse()? };
        step(stepped).await?;
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

    for spec in all(&args, "--upload") {
        let (addr, bytes) = spec.rsplit_once(':').ok_or("--upload IP:PORT:BYTES")?;
        let addr: SocketAddr = addr.parse()?;
        let bytes: usize = bytes.parse()?;
        step(stepped).await?;
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
    Ok(())
}

/// With `--stepped`: says `ready` and waits for the script's go (a line on stdin).
async fn step(stepped: bool) -> std::io::Result<()> {
    if stepped {
        println!("ready");
        tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await??;
    }
    Ok(())
}
