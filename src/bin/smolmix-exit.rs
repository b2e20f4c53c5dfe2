//! `smolmix-exit`: a local double of the Nym IP Packet Router, for tests and demos only.
//!
//! Not a VPN server: no encryption, no anonymity, no authentication. One UDP datagram is one
//! Nym message payload and the UDP source address stands in for the sender tag. The
//! protocol core is `smolmix::exit::Server`; this file is the thin I/O shell around it:
//! a TUN (`--tun`, 10.0.0.1/16 + fc00::1/112, `--mtu`), a UDP socket (`--listen`), and one
//! `tokio::select!` loop over socket, TUN, the core's timer and SIGINT/SIGTERM.
//! Forwarding and NAT towards the "internet" are host configuration done by the scripts
//! that start it. Prints `listening on <addr>` on stdout once the TUN and socket are ready.
//!
//! # Cancel safety
//! Every `select!` arm is cancel-safe: `UdpSocket::recv_from`, `AsyncDevice::recv` (it waits
//! for readiness, then reads without blocking), `Signal::recv` and `sleep_until` lose nothing
//! when another arm wins. Outputs are written after the `select!`, never in a racing arm.

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use smolmix::exit::{ExitConfig, ImpairConfig, Server, TUN_IPV4, TUN_IPV4_PREFIX, TUN_IPV6, TUN_IPV6_PREFIX};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tun_rs::{AsyncDevice, DeviceBuilder};

/// Datagrams or TUN packets handled per wake-up before outputs are flushed.
const BATCH: usize = 64;
/// Large enough for any UDP datagram and any TUN packet (MTU ≤ 65535).
const BUFFER_SIZE: usize = 65_536;
/// How often the counters are logged at debug level.
const STATS_INTERVAL: Duration = Duration::from_secs(30);

/// A local double of the Nym IP Packet Router (IPR v8/v9/v10) over UDP, for tests only.
#[derive(Debug, Parser)]
#[command(name = "smolmix-exit", version, about)]
struct Cli {
    /// UDP address to listen on; one datagram = one Nym message payload.
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// Name of the exit's TUN device (10.0.0.1/16, fc00::1/112).
    #[arg(long, value_name = "NAME", default_value = "nymtun0")]
    tun: String,
    /// TUN MTU, also reported in the v10 connect response.
    #[arg(long, value_name = "N", default_value_t = 1500, value_parser = clap::value_parser!(u16).range(1280..))]
    mtu: u16,
    /// Report this MTU in v10 connect replies instead of the TUN's, whatever it is (0 and
    /// 65535 included): a hostile or misconfigured exit, for tests of the client.
    #[arg(long, value_name = "N")]
    announce_mtu: Option<u16>,
    /// Highest IPR version accepted; 9 mimics a pre-v10 node (v10 requests get silence).
    #[arg(long, value_name = "9|10", default_value_t = 10, value_parser = clap::value_parser!(u8).range(9..=10))]
    max_version: u8,
    /// Remove clients without uplink data for longer than this.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Period of the inactivity sweep.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    sweep_interval: u64,
    /// Downlink flush period when the client's connect says `buffer_timeout: None`.
    #[arg(long, value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    flush_ms: u64,
    /// Deny non-global destinations with an exit-policy Info reply, like the real IPR.
    #[arg(long)]
    deny_non_global: bool,
    /// Impairment: mean one-way delay, applied to each direction.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
    /// Impairment: uniform jitter of ± this around the delay (reorders messages).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    jitter_ms: u64,
    /// Impairment: probability of losing a downlink data message (never retransmitted).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    loss: f64,
    /// Impairment: downlink pacing rate in Mbit/s.
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate_mbit: Option<f64>,
    /// Seed for IP allocation and impairment (random if absent; logged).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    (0.0..=1.0).contains(&p).then_some(p).ok_or_else(|| "must be within [0, 1]".into())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    (r > 0.0 && r.is_finite()).then_some(r).ok_or_else(|| "must be a positive number".into())
}

impl Cli {
    fn config(&self, seed: u64) -> ExitConfig {
        ExitConfig {
            mtu: self.mtu,
            announce_mtu: self.announce_mtu,
            max_version: self.max_version,
            idle_timeout: Duration::from_secs(self.idle_timeout),
            sweep_interval: Duration::from_secs(self.sweep_interval),
            flush_interval: Duration::from_millis(self.flush_ms),
            deny_non_global: self.deny_non_global,
            impair: ImpairConfig {
                delay: Duration::from_millis(self.delay_ms),
                jitter: Duration::from_millis(self.jitter_ms),
                loss: self.loss,
                rate_bps: self.rate_mbit.map(|m| (m * 1e6) as u64),
            },
            seed,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("smolmix-exit: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smolmix-exit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let listen: SocketAddr = tokio::net::lookup_host(&cli.listen)
        .await
        .with_context(|| format!("cannot resolve --listen {}", cli.listen))?
        .next()
        .with_context(|| format!("--listen {} resolves to nothing", cli.listen))?;
    let seed = cli.seed.unwrap_or_else(rand::random);
    let mut server = Server::new(cli.config(seed), Instant::now()).context("invalid configuration")?;

    let tun = DeviceBuilder::new()
        .name(&cli.tun)
        .mtu(cli.mtu)
        .ipv4(TUN_IPV4, TUN_IPV4_PREFIX, None)
        .ipv6(TUN_IPV6, TUN_IPV6_PREFIX)
        .build_async()
        .with_context(|| format!("cannot create TUN {} (needs CAP_NET_ADMIN)", cli.tun))?;
    let socket = UdpSocket::bind(listen).await.with_context(|| format!("cannot bind UDP {listen}"))?;
    enlarge_buffers(&socket);
    let local = socket.local_addr().context("cannot read the bound address")?;

    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;

    tracing::info!(%local, tun = %cli.tun, mtu = cli.mtu, max_version = cli.max_version, seed, "exit ready");
    println!("listening on {local}");
    std::io::stdout().flush().context("cannot write to stdout")?;

    let mut udp_buf = vec![0u8; BUFFER_SIZE];
    let mut tun_buf = vec![0u8; BUFFER_SIZE];
    let mut stats = tokio::time::interval(STATS_INTERVAL);
    loop {
        let deadline = server.poll_timeout();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            received = socket.recv_from(&mut udp_buf) => {
                on_datagrams(&mut server, &socket, &mut udp_buf, received);
            }
            read = tun.recv(&mut tun_buf) => {
                on_tun_packets(&mut server, &tun, &mut tun_buf, read);
            }
            () = timer => server.handle_timeout(Instant::now()),
            _ = stats.tick() => tracing::debug!(counters = %server.counters(), clients = server.client_count(), "stats"),
        }
        flush(&mut server, &socket, &tun).await;
    }
    flush(&mut server, &socket, &tun).await;
    tracing::info!(counters = %server.counters(), "stopped");
    Ok(())
}

/// Feeds the datagram that woke us and up to `BATCH - 1` more that are already queued.
fn on_datagrams(server: &mut Server, socket: &UdpSocket, buf: &mut [u8], first: std::io::Result<(usize, SocketAddr)>) {
    let now = Instant::now();
    let mut received = first;
    for _ in 0..BATCH {
        match received {
            Ok((len, peer)) => server.handle_datagram(peer, buf.get(..len).unwrap_or_default(), now),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(error = %e, "UDP receive failed");
                return;
            }
        }
        received = socket.try_recv_from(buf);
    }
}

/// Feeds the TUN packet that woke us and up to `BATCH - 1` more that are already queued.
fn on_tun_packets(server: &mut Server, tun: &AsyncDevice, buf: &mut [u8], first: std::io::Result<usize>) {
    let now = Instant::now();
    let mut read = first;
    for _ in 0..BATCH {
        match read {
            Ok(len) => server.handle_tun_packet(buf.get(..len).unwrap_or_default(), now),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(error = %e, "TUN read failed");
                return;
            }
        }
        read = tun.try_recv(buf);
    }
}

/// Writes every ready output: packets into the TUN, messages to their peers. A failed write
/// drops that one packet (logged), like any lossy link; it never stops the loop.
async fn flush(server: &mut Server, socket: &UdpSocket, tun: &AsyncDevice) {
    while let Some(packet) = server.poll_tun() {
        if let Err(e) = tun.send(packet).await {
            tracing::debug!(error = %e, len = packet.len(), "TUN write failed");
        }
        server.pop_tun();
    }
    while let Some((peer, message)) = server.poll_transmit() {
        if let Err(e) = socket.send_to(message, peer).await {
            tracing::debug!(error = %e, %peer, len = message.len(), "UDP send failed");
        }
        server.pop_transmit();
    }
}

/// Socket buffers for bursts: a client sends a TUN batch back to back, and the default
/// 208 KiB receive buffer overflows while this loop writes the previous batch into the TUN
/// (measured: ~10 % of datagrams lost at 900 Mbit/s with the default). `*Force` needs
/// CAP_NET_ADMIN, which the exit has; otherwise the capped variant is the best we can do.
fn enlarge_buffers(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    const SOCKET_BUFFER: usize = 4 << 20;
    let fd = std::os::fd::AsFd::as_fd(socket);
    if setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUFFER);
    }
}
