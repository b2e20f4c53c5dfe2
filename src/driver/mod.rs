//! The driver: `up`, and the one async loop that joins TUN, pipeline, link and transport.
//!
//! It owns no protocol logic: the session lifecycle is the [`Link`]'s, packet translation the
//! pipeline's. This file reaches the exit and sets up the host; `running.rs` is the loop. Each
//! wake-up drains what is ready in batches (64 packets from the TUN, 64 messages from the
//! transport), hands them to the sans-IO
//! stages, then sends what those produced. A partial bundle is closed as soon as the TUN has
//! nothing more queued, so bundling only ever merges packets that were already waiting: it
//! adds no latency to an idle link.
//!
//! ```text
//!   lockdown (full tunnel: the kill switch, before any packet to the directory or a gateway)
//!   ──▶ connect, retried with backoff while it fails ──▶ TUN + routes + DNS
//!   ──▶ loop { TUN → pipeline → link → transport
//!              transport → link → pipeline → TUN
//!              timers: keepalive, dead exit → reconnect, expiry, status }
//!   (per-app: namespace ──▶ TUN moved into it; host routes and DNS untouched)
//!   SIGINT/SIGTERM ──▶ Disconnect to the exit ──▶ journal rolled back ──▶ exit 0
//! ```
//!
//! Nothing opens the host but a stop (`guard.rs`). While the first connect fails (the
//! directory, the gateway or the exit away) `up` says that the host is blocked and tries again
//! with the link's backoff; only an error no retry can mend (a pinned exit that is too old, no
//! right to mark sockets) ends it, with the host kept closed in full-tunnel mode. Losing the
//! exit or the transport later keeps the TUN, routes and DNS, so packets are dropped, not sent
//! around the tunnel, while a new session (or, when the mixnet client itself stopped, a new
//! transport) is set up ([`crate::link::Backoff`]). An error nothing can repair (the TUN gone)
//! ends `up` with every host change kept, as a crash would ([`DriverError::FailedClosed`]).

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ipr::Allocation;
use crate::link::{self, Backoff, ConnectError, Link, MAX_MESSAGE};
use crate::pipeline::{self, Pipeline};
use crate::system::dns::DnsError;
use crate::system::host::HostError;
use crate::system::netns::NetnsError;
use crate::system::routes::Cidr;
use crate::system::status::{self, State};
use crate::system::tun::{TunError, LOCAL_V4, LOCAL_V6};
use crate::transport::{self, IprAddr, OpenError, OpenOptions, Opened, Progress};

mod guard;
mod report;
mod running;
mod setup;
use guard::{HostGuard, Outcome, Purpose};
pub use report::Report;
use report::Reporter;
use running::{Running, MAX_PACKET};
use setup::{setup_host, setup_netns, start_dns_check, Setup};

/// Everything `up` needs, already validated by the CLI.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// `None`: the best IPR exit from the Nym directory.
    pub ipr: Option<IprAddr>,
    /// How to open the transport (the mixnet's options); `up` sets the routing mark.
    pub transport: OpenOptions,
    /// The TUN's name (`--tun`).
    pub tun: String,
    /// `--mtu`: used instead of the exit's.
    pub mtu_override: Option<u16>,
    /// Destinations through the tunnel (`--route`; 0.0.0.0/0 and ::/0 for the full tunnel).
    pub routes: Vec<Cidr>,
    /// Destinations kept off the tunnel (`--exclude`).
    pub excludes: Vec<Cidr>,
    /// Full tunnel: the kill switch lets local networks through (`--allow-lan`).
    pub allow_lan: bool,
    /// IPv6 through the tunnel (`--ipv6 on`), else blocked.
    pub ipv6: bool,
    /// The run dir (`--run-dir`): journal, lock, status.
    pub run_dir: PathBuf,
    /// Persistent state (`--state-dir`): the resolv.conf backup.
    pub state_dir: PathBuf,
    /// DNS servers through the tunnel; `None` leaves DNS alone (`--no-dns`).
    pub dns: Option<Vec<IpAddr>>,
    /// The name the end-to-end DNS check asks for.
    pub dns_check_name: String,
    /// Per-app mode: the namespace that gets the TUN; the host's routes and DNS stay as they are.
    pub netns: Option<String>,
}

impl UpConfig {
    /// The full tunnel: the host's default routes go into the tunnel, and the kill switch
    /// closes everything else (not split mode with `--route`, not per-app mode).
    pub fn full_tunnel(&self) -> bool {
        self.netns.is_none() && self.routes.iter().any(|r| r.prefix_len() == 0)
    }

    /// The host's resolver files, with the backup in the state dir.
    pub fn dns_paths(&self) -> crate::system::dns::DnsPaths {
        crate::system::dns::DnsPaths { backup_dir: self.state_dir.clone(), ..Default::default() }
    }
}

/// Why `up` failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The exit was reached but its first session did not come up.
    #[error("the IPR exit at {exit} {reason}")]
    Connect {
        /// The exit (`udp://…` or a Nym address).
        exit: String,
        /// What went wrong. Not a `source`: the message already says it, and a chain printer
        /// (`{:#}`) would say it twice.
        reason: ConnectError,
    },
    /// No transport to the exit could be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The TUN could not be created or configured.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// A host change (route, rule, nftables, journal) failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The per-app namespace could not be set up.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The host's resolver could not be pointed at the tunnel.
    #[error("cannot configure DNS: {0}")]
    Dns(#[from] DnsError),
    /// Reading the TUN failed.
    #[error("TUN device I/O failed: {0}")]
    TunIo(std::io::Error),
    /// The per-app namespace already has interfaces of its own.
    #[error("network namespace {ns} already has other interfaces ({links}), through which its programs could bypass the tunnel; pick a new name (up creates it) or remove them")]
    NetnsNotEmpty {
        /// The namespace.
        ns: String,
        /// Its other interfaces.
        links: String,
    },
    /// The per-app namespace was deleted under us.
    #[error("the TUN is gone with network namespace {0} (was it deleted with `ip netns del`?)")]
    NetnsGone(String),
    /// The transport stopped; `up` builds a new one (never returned to the caller).
    #[error("transport I/O failed: {0}")]
    TransportIo(std::io::Error),
    /// The directory's requests cannot be relayed through marked sockets (the only way they
    /// may leave a closed host).
    #[cfg(feature = "mixnet")]
    #[error(transparent)]
    Relay(#[from] crate::transport::mixnet::relay::RelayError),
    /// The tunnel broke while up, not by a stop: every host change stays (kill switch, routes
    /// with their backstops, DNS), so nothing leaves in the clear until the user decides.
    #[error("{0}; the host is kept closed until `smolmix-vpn down` restores it")]
    FailedClosed(Box<DriverError>),
}

/// The exit, reached: the open transport, the link whose first session is up, its allocation.
struct Reached {
    opened: Opened,
    link: Link,
    alloc: Allocation,
}

impl DriverError {
    /// Whether another attempt at the first connect cannot help (see
    /// [`OpenError::is_permanent`]); an exit that did not answer or refused may yet.
    fn is_permanent(&self) -> bool {
        match self {
            DriverError::Open(e) => e.is_permanent(),
            DriverError::Connect { .. } => false,
            _ => true,
        }
    }
}

/// Opens the transport and brings the link's first session up: everything `up` needs from the
/// exit before it sets up the TUN. Each step goes to `progress`.
async fn reach_exit(cfg: &UpConfig, rx: &mut [u8], progress: &Progress) -> Result<Reached, DriverError> {
    let mut opened = transport::open(cfg.ipr.as_ref(), &open_options(cfg, None, progress)).await?;
    let mut link = link::new_link(&opened.transport, opened.max_version);
    match link::connect(&mut link, &mut opened.transport, rx, progress).await {
        Ok(alloc) => Ok(Reached { opened, link, alloc }),
        Err(reason) => {
            opened.transport.shutdown().await;
            Err(DriverError::Connect { exit: opened.exit, reason })
        }
    }
}

/// The transport's options for `cfg`: its routing mark in full-tunnel mode (per-app mode
/// leaves the host's routing alone, so the sockets need no mark there), and the entry gateway
/// a rebuilt mixnet client keeps.
fn open_options(cfg: &UpConfig, gateway: Option<String>, progress: &Progress) -> OpenOptions {
    let mut opts = cfg.transport.clone();
    opts.mark = cfg.netns.is_none().then_some(crate::system::mark::FWMARK);
    opts.progress = progress.clone();
    #[cfg(feature = "mixnet")]
    {
        opts.mixnet.gateway = gateway;
    }
    #[cfg(not(feature = "mixnet"))]
    let _ = gateway;
    opts
}

/// Closes the host (full tunnel), connects to the exit, brings the tunnel up, runs until
/// `shutdown` resolves, and undoes every host change. `report` gets what a user should see
/// ([`Report`]): each connect step with its elapsed time, why a connect failed and that it is
/// tried again, `connected …` once traffic can flow, `dns: ok …` or a warning when the DNS check
/// ends, losses and reconnects, and the stop.
pub async fn up(
    cfg: UpConfig,
    shutdown: impl Future<Output = ()>,
    report: impl FnMut(Report<'_>) + 'static,
) -> Result<(), DriverError> {
    let mut shutdown = pin!(shutdown);
    let mut reporter = Reporter::new(report);
    let (mut guard, failures) = HostGuard::begin(&cfg, Purpose::Up)?;
    for f in failures {
        reporter.report(Report::Warning(&format!("undoing what an earlier run left: {f}")));
    }
    write_connecting_status(&cfg, reporter.log());
    let outcome = tunnel(&cfg, &mut guard, &mut reporter, shutdown.as_mut()).await;
    guard.finish(&cfg, outcome)
}

/// `smolmix-vpn block`: closes the host as `up` would before its first packet (the full
/// tunnel's kill switch, replacing one already there, the rest of an earlier run undone) and
/// leaves it so: the journal keeps it for `up` to take over or `down` to undo. Returns the undo
/// failures of an earlier run worth a warning.
pub fn block(cfg: &UpConfig) -> Result<Vec<String>, DriverError> {
    let (_guard, failures) = HostGuard::begin(cfg, Purpose::Block)?;
    Ok(failures)
}

/// Everything between the lockdown and the end: connect, set up the host, run the loop, say
/// goodbye to the exit. The host is [`HostGuard::finish`]'s business.
async fn tunnel(
    cfg: &UpConfig,
    guard: &mut HostGuard,
    reporter: &mut Reporter,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Outcome {
    // Before the first request to the directory, and for the whole run.
    let _relay = match start_relay(cfg) {
        Ok(r) => r,
        Err(e) => return Outcome::NeverUp(e),
    };
    let mut rx = vec![0u8; MAX_MESSAGE];
    let reached = match connect_blocked(cfg, guard, reporter, &mut rx, shutdown.as_mut()).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            reporter.report(Report::Stopping);
            return Outcome::Stopped;
        }
        Err(e) => return Outcome::NeverUp(e),
    };
    let Reached { opened: Opened { mut transport, exit, max_version }, link, alloc } = reached;
    let mtu = cfg.mtu_override.unwrap_or(alloc.tunnel_mtu(cfg.ipv6));

    // Host changes, each journalled before it is made.
    let setup = match &cfg.netns {
        Some(ns) => setup_netns(cfg, &mut guard.host, ns, mtu),
        None => setup_host(cfg, &mut guard.host, mtu).and_then(|s| Ok(guard.routes_installed(cfg).map(|()| s)?)),
    };
    let Setup { dev, dns } = match setup {
        Ok(v) => v,
        Err(e) => {
            transport.shutdown().await;
            return Outcome::NeverUp(e);
        }
    };

    let mut pipe = Pipeline::new(pipeline::Config {
        local_v4: LOCAL_V4,
        local_v6: LOCAL_V6,
        mtu,
        limits: pipeline::Limits::default(),
    });
    pipe.set_allocated(alloc.ipv4, cfg.ipv6.then_some(alloc.ipv6));

    let mut state = Running {
        cfg,
        guard,
        link,
        dns,
        max_version,
        exit: exit.clone(),
        dev,
        pipe,
        mtu,
        since: Some(unix_now()),
        path_changes: transport.path_changes(),
        tun_buf: vec![0u8; MAX_PACKET],
        dns_check: None,
        dns_pending: None,
        reporter,
    };
    let place = cfg.netns.as_ref().map_or(String::new(), |ns| format!(" in namespace {ns}"));
    state.reporter.report(Report::Connected(&format!(
        "connected to {exit} (IPR v{}): {}{place} is up, mtu {mtu}, exit-allocated {} {}",
        alloc.version, cfg.tun, alloc.ipv4, alloc.ipv6
    )));
    state.dns_pending = start_dns_check(cfg, &transport);
    state.write_status(State::Connected, &transport);

    let result = loop {
        let r = state.run(&mut transport, &mut rx, shutdown.as_mut()).await;
        let Err(DriverError::TransportIo(e)) = r else { break r };
        // The transport itself is gone (the mixnet client stops after ~50 s without its
        // gateway). The host stays closed while a new one is built.
        // The user hears of it from the link's loss (reopen).
        tracing::warn!(error = %e, "the transport to {} stopped; building a new one", state.exit);
        let gateway = transport.entry_gateway();
        match state.reopen(&transport, shutdown.as_mut(), gateway).await {
            Some(new) => std::mem::replace(&mut transport, new).shutdown().await,
            None => break Ok(()),
        }
    };

    // Tell the exit (best effort), whether the host is opened next or kept closed.
    if result.is_ok() {
        state.reporter.report(Report::Stopping);
    }
    let confirmed = link::disconnect(&mut state.link, &mut transport, &mut rx).await;
    tracing::info!(confirmed, "disconnected from {}", state.exit);
    drop(state);
    transport.shutdown().await;
    match result {
        Ok(()) => Outcome::Stopped,
        Err(e) => Outcome::Broken(e),
    }
}

/// The mixnet client's requests to the Nym directory go through a relay in the run dir that
/// dials with the transport's mark (transport/mixnet/relay.rs, docs/directory-relay.md), so a
/// closed host needs no exception for the directory's address, which comes from a resolver.
/// Names are resolved, marked too, by the host's own upstream servers as they are now, before
/// `up` points the host's resolver at the tunnel; never by the tunnel's servers, which are
/// reached through the tunnel only. Per-app mode marks nothing; a `udp://` exit has no
/// directory.
#[cfg(feature = "mixnet")]
fn start_relay(cfg: &UpConfig) -> Result<Option<crate::transport::mixnet::relay::RelayHandle>, DriverError> {
    use crate::system::upstream_dns;
    use crate::transport::mixnet::relay;
    if cfg.netns.is_some() || matches!(cfg.ipr, Some(IprAddr::Udp { .. })) {
        return Ok(None);
    }
    let allow = cfg.transport.mixnet.relay_allowlist().map_err(OpenError::from)?;
    let tunnel_dns = cfg.dns.clone().unwrap_or_default();
    let servers = match upstream_dns::upstream_nameservers(&Default::default()) {
        Ok(s) => s.into_iter().filter(|ip| !tunnel_dns.contains(ip)).collect(),
        Err(e) => {
            // A directory named by address needs none; one named by host name fails to resolve,
            // and `up` says so and retries.
            tracing::warn!(%e, "no upstream nameserver for the directory's name");
            Vec::new()
        }
    };
    Ok(Some(relay::start(&cfg.run_dir, crate::system::mark::FWMARK, allow, servers)?))
}

#[cfg(not(feature = "mixnet"))]
fn start_relay(_cfg: &UpConfig) -> Result<Option<()>, DriverError> {
    Ok(None)
}

/// Reaches the exit, trying again while it fails for a reason a retry can mend (the directory,
/// a gateway or the exit away: on the real network these come and go). The host meanwhile is
/// as [`HostGuard::begin`] left it: closed in full-tunnel mode, untouched otherwise, and each
/// failure says so. `Ok(None)`: a stop was asked.
async fn connect_blocked(
    cfg: &UpConfig,
    guard: &mut HostGuard,
    reporter: &mut Reporter,
    rx: &mut [u8],
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<Reached>, DriverError> {
    let progress = reporter.progress().clone();
    let mut backoff = Backoff::default();
    // The first attempt is now; the backoff's "retry at once" is spent on it.
    let _ = backoff.next_delay(0.0);
    loop {
        let attempt = {
            let mut reach = pin!(reach_exit(cfg, rx, &progress));
            loop {
                tokio::select! {
                    r = &mut reach => break r,
                    () = reporter.next_step() => write_connecting_status(cfg, reporter.log()),
                    () = guard.networks_changed() => guard.refresh_nets(cfg),
                    () = &mut shutdown => return Ok(None),
                }
            }
        };
        reporter.drain();
        let e = match attempt {
            Ok(r) => return Ok(Some(r)),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => e,
        };
        let delay = backoff.next_delay(rand::random());
        let meanwhile = if guard.is_locked_down() {
            "nothing leaves the host meanwhile (blocked); Ctrl-C or `smolmix-vpn down` opens it"
        } else {
            "the host is not changed meanwhile"
        };
        reporter.retrying(&format!(
            "cannot connect yet: {e}; {meanwhile}; trying again in {:.0} s",
            delay.as_secs_f64().ceil()
        ));
        write_connecting_status(cfg, reporter.log());
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                () = guard.networks_changed() => guard.refresh_nets(cfg),
                () = &mut shutdown => return Ok(None),
            }
        }
    }
}

/// The status while the first session is not up yet: `connecting`, with the steps so far.
fn write_connecting_status(cfg: &UpConfig, steps: &[String]) {
    let st = status::Status {
        state: State::Connecting,
        pid: std::process::id(),
        tun: cfg.tun.clone(),
        exit: cfg.ipr.as_ref().map_or_else(|| "(the best of the Nym directory)".into(), IprAddr::to_string),
        version: None,
        mtu: None,
        allocated_ipv4: None,
        allocated_ipv6: None,
        local_ipv4: LOCAL_V4.to_string(),
        local_ipv6: LOCAL_V6.to_string(),
        connected_since: None,
        reconnects: 0,
        counters: serde_json::Value::Null,
        netns: cfg.netns.clone(),
        dns: Vec::new(),
        dns_mode: None,
        dns_check: None,
        progress: steps.to_vec(),
    };
    if let Err(e) = status::write(&cfg.run_dir, &st) {
        tracing::debug!(%e, "cannot write status");
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
