//! The driver: the one async loop that joins TUN, pipeline, IPR session and transport.
//!
//! It owns no protocol logic. Each wake-up drains what is ready in batches (up to [`BURST`]
//! packets from the TUN, [`BURST`] messages from the transport), hands them to the sans-IO
//! stages, then sends what those produced. A partial bundle is closed as soon as the TUN has
//! nothing more queued, so bundling only ever merges packets that were already waiting: it
//! adds no latency to an idle link.
//!
//! ```text
//!   connect ──▶ TUN + routes + DNS ──▶ loop { TUN → pipeline → session → transport
//!                                       transport → session → pipeline → TUN
//!                                       timers: keepalive, dead exit → reconnect, expiry, status }
//!   (per-app: namespace ──▶ TUN moved into it; host routes and DNS untouched)
//!   SIGINT/SIGTERM ──▶ Disconnect to the exit ──▶ journal rolled back ──▶ exit 0
//! ```
//!
//! Losing the exit or the transport never opens the host: the TUN, routes and DNS stay, so
//! packets are dropped, not sent around the tunnel, while a new session (or, when the mixnet
//! client itself stopped, a new transport) is set up with [`Backoff`] between attempts. An
//! error nothing can repair (the TUN gone) ends `up` with every host change kept, as a crash
//! would: only a stop opens the host ([`DriverError::FailedClosed`]).

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio::time::Instant;
use tun_rs::AsyncDevice;

use crate::ipr::{Event, Session};
use crate::link::{self, sleep_opt, Allocation, Backoff, ConnectError};
use crate::pipeline::{self, Action, Pipeline};
use crate::system::dns::{Applied, DnsError};
use crate::system::host::{Host, HostError};
use crate::system::netns::NetnsError;
use crate::system::resolv_conf;
use crate::system::routes::Cidr;
use crate::system::status::{self, Status};
use crate::system::tun::{self, TunError, LOCAL_V4, LOCAL_V6};
use crate::transport::{IprAddr, Transport, UdpTransport};

mod setup;
use setup::{setup_host, setup_netns, start_dns_check, DnsOutcome, Setup};

/// Packets (or messages) handled per wake-up before yielding to the other direction; 64 is
/// smoltcp's and the seed library's device burst, enough to amortise a wake-up.
const BURST: usize = 64;
/// Largest IP packet (u16 total length) and so the largest TUN read.
const MAX_PACKET: usize = 65535;
/// Largest transport message: LP header + IPR header + a bundle of one maximal packet.
const MAX_MESSAGE: usize = 65535 + 64;
/// How often the status file is refreshed and NAT/reassembly state expired.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How to reach a mixnet exit (unused for `udp://` exits).
#[derive(Debug, Clone, Default)]
pub struct MixnetSettings {
    pub fast: bool,
    pub reply_surbs: u32,
    pub identity_dir: Option<PathBuf>,
    /// nym-api URLs; empty = mainnet's.
    pub nym_api: Vec<String>,
}

/// Everything `up` needs, already validated by the CLI.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// `None`: the best IPR exit from the Nym directory.
    pub ipr: Option<IprAddr>,
    pub mixnet: MixnetSettings,
    pub tun: String,
    pub mtu_override: Option<u16>,
    pub routes: Vec<Cidr>,
    pub excludes: Vec<Cidr>,
    /// Full tunnel: the kill switch lets local networks through (`--allow-lan`).
    pub allow_lan: bool,
    pub ipv6: bool,
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
    /// The host's resolver files, with the backup in the state dir.
    pub fn dns_paths(&self) -> crate::system::dns::DnsPaths {
        crate::system::dns::DnsPaths { backup_dir: self.state_dir.clone(), ..Default::default() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the IPR exit at {exit} {source}")]
    Connect { exit: String, source: ConnectError },
    #[error("{0}")]
    Transport(String),
    #[error("the Nym mixnet transport is not available in this build (feature `mixnet`); use --ipr udp://HOST:PORT")]
    NoMixnet,
    #[error(transparent)]
    Tun(#[from] TunError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot configure DNS: {0}")]
    Dns(#[from] DnsError),
    #[error("TUN device I/O failed: {0}")]
    TunIo(std::io::Error),
    #[error("network namespace {ns} already has other interfaces ({links}), through which its programs could bypass the tunnel; pick a new name (up creates it) or remove them")]
    NetnsNotEmpty { ns: String, links: String },
    #[error("the TUN is gone with network namespace {0} (was it deleted with `ip netns del`?)")]
    NetnsGone(String),
    #[error("transport I/O failed: {0}")]
    TransportIo(std::io::Error),
    /// The tunnel broke while up, not by a stop: every host change stays (kill switch, routes
    /// with their backstops, DNS), so nothing leaves in the clear until the user decides.
    #[error("{0}; the host is kept closed until `smolmix-vpn down` restores it")]
    FailedClosed(Box<DriverError>),
}

/// What the exit connection gave `up`: the transport, the exit's name for messages, the
/// highest IPR protocol version to ask for, and the session with its allocation.
struct Opened {
    transport: Transport,
    exit: String,
    max_version: u8,
    session: Session,
    alloc: Allocation,
}

/// Opens the transport and connects the session: everything `up` needs from the exit.
async fn open_link(cfg: &UpConfig, rx: &mut [u8], gateway: Option<&str>) -> Result<Opened, DriverError> {
    let (mut transport, exit, max_version) = open_transport(cfg, gateway).await?;
    match link::connect(&mut transport, rx, max_version).await {
        Ok((session, alloc)) => Ok(Opened { transport, exit, max_version, session, alloc }),
        Err(source) => {
            transport.shutdown().await;
            Err(DriverError::Connect { exit, source })
        }
    }
}

/// Connects to the exit, brings the tunnel up, runs until `shutdown` resolves, and undoes every
/// host change. `report` gets the lines a user should see: `connected …` once traffic can
/// flow, then `dns: ok …` or `warning: …` when the DNS check ends.
pub async fn up(
    cfg: UpConfig,
    shutdown: impl Future<Output = ()>,
    mut report: impl FnMut(&str),
) -> Result<(), DriverError> {
    let mut shutdown = pin!(shutdown);
    // The directory's addresses, learnt while the host's own DNS still works: should the
    // transport have to be rebuilt, the directory must be reachable around the dead tunnel.
    let directory = directory_addrs(&cfg).await;

    // 1. Talk to the exit before touching the host: a dead exit must leave nothing behind.
    let mut rx = vec![0u8; MAX_MESSAGE];
    let opened = tokio::select! {
        r = open_link(&cfg, &mut rx, None) => r?,
        () = &mut shutdown => return Ok(()),
    };
    let Opened { mut transport, exit: exit_name, max_version, mut session, alloc } = opened;
    let mtu = cfg.mtu_override.unwrap_or(alloc.tunnel_mtu(cfg.ipv6));

    // 2. Host changes, each journalled before it is made.
    let mut hostc = Host::open(&cfg.run_dir)?;
    let result = match &cfg.netns {
        Some(ns) => setup_netns(&cfg, &mut hostc, ns, mtu),
        None => setup_host(&cfg, &mut hostc, mtu),
    };
    let Setup { dev, bypass, dns } = match result {
        Ok(v) => v,
        Err(e) => {
            for f in hostc.rollback() {
                tracing::warn!("cleanup: {f}");
            }
            return Err(e);
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
        cfg: &cfg,
        host: &mut hostc,
        bypass,
        dns,
        max_version,
        exit: exit_name.clone(),
        dev,
        pipe,
        alloc: Some(alloc),
        mtu,
        since: Some(unix_now()),
        reconnects: 0,
        backoff: Backoff::default(),
        retry_at: None,
        lost_at: None,
        directory,
        path_changes: 0,
        tun_buf: vec![0u8; MAX_PACKET],
        dns_check: None,
        dns_pending: None,
    };
    let place = cfg.netns.as_ref().map_or(String::new(), |ns| format!(" in namespace {ns}"));
    report(&format!(
        "connected to {exit_name} (IPR v{}): {}{place} is up, mtu {mtu}, exit-allocated {} {}",
        alloc.version, cfg.tun, alloc.ipv4, alloc.ipv6
    ));
    state.dns_pending = start_dns_check(&cfg, &transport);
    state.write_status("connected", &session, &transport);

    let result = loop {
        let r = state.run(&mut session, &mut transport, &mut rx, shutdown.as_mut(), &mut report).await;
        let Err(DriverError::TransportIo(e)) = r else { break r };
        // The transport itself is gone (the mixnet client stops after ~50 s without its
        // gateway). The host stays closed while a new one is built.
        tracing::warn!(error = %e, "the transport to {} stopped; building a new one", state.exit);
        report(&format!("warning: lost the connection to the exit ({e}); reconnecting"));
        let gateway = transport.entry_gateway();
        match state.reopen(&mut session, &transport, &mut rx, shutdown.as_mut(), gateway.as_deref()).await? {
            Some(new) => std::mem::replace(&mut transport, new).shutdown().await,
            None => break Ok(()),
        }
    };

    // 3. Tell the exit (best effort). Only a stop opens the host again: after an error the
    //    journal stays for `down`, as after a crash.
    let confirmed = link::disconnect(&mut session, &mut transport, &mut rx).await;
    tracing::info!(confirmed, "disconnected from {}", state.exit);
    if let Err(e) = result {
        state.write_status("failed", &session, &transport);
        drop(state);
        transport.shutdown().await;
        return Err(DriverError::FailedClosed(Box::new(e)));
    }
    drop(state);
    for f in hostc.rollback() {
        tracing::warn!("cleanup: {f}");
    }
    status::remove(&cfg.run_dir);
    transport.shutdown().await;
    result
}

/// Opens the transport `cfg` asks for; returns it, the exit's name for messages, and the
/// highest IPR protocol version to try (what the directory says the exit runs, else 10).
/// `gateway`: the mixnet entry gateway to use (a rebuilt transport keeps the old one).
async fn open_transport(cfg: &UpConfig, gateway: Option<&str>) -> Result<(Transport, String, u8), DriverError> {
    // Per-app mode leaves the host's routing alone; the sockets need no mark there.
    let mark = cfg.netns.is_none().then_some(crate::system::mark::FWMARK);
    match &cfg.ipr {
        Some(addr @ IprAddr::Udp { host, port }) => {
            let t =
                UdpTransport::connect(host, *port, mark).await.map_err(|e| DriverError::Transport(e.to_string()))?;
            Ok((Transport::Udp(t), addr.to_string(), 10))
        }
        #[cfg(feature = "mixnet")]
        other => {
            use crate::transport::mixnet::{self, MixnetTransport};
            let mut opts = mixnet_options(&cfg.mixnet);
            opts.gateway = gateway.map(str::to_string);
            opts.socket_mark = mark;
            let mixnet_err = |e: mixnet::MixnetError| DriverError::Transport(e.to_string());
            let (address, hint) = match other {
                Some(IprAddr::Nym(a)) => (a.clone(), None),
                _ => {
                    let best = mixnet::best_ipr(&opts).await.map_err(mixnet_err)?;
                    tracing::info!(exit = %best.address, version = %best.version, "best IPR exit");
                    (best.address, best.ipr_protocol)
                }
            };
            let t = MixnetTransport::connect(&address, &opts).await.map_err(mixnet_err)?;
            let max_version = hint.or(t.ipr_version_hint()).unwrap_or(10);
            Ok((Transport::Mixnet(t), address, max_version))
        }
        #[cfg(not(feature = "mixnet"))]
        _ => {
            let _ = (gateway, mark);
            Err(DriverError::NoMixnet)
        }
    }
}

/// The IP addresses of the Nym directory (nym-api) `cfg` uses; empty for a `udp://` exit.
/// Names are resolved now, through the host's own resolver, within 2 s.
async fn directory_addrs(cfg: &UpConfig) -> Vec<IpAddr> {
    #[cfg(feature = "mixnet")]
    if !matches!(cfg.ipr, Some(IprAddr::Udp { .. })) {
        let opts = mixnet_options(&cfg.mixnet);
        let mut out = Vec::new();
        for (host, port) in opts.directory_hosts() {
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host((host.as_str(), port))).await {
                Ok(Ok(addrs)) => {
                    for ip in addrs.map(|a| a.ip()) {
                        if !out.contains(&ip) {
                            out.push(ip);
                        }
                    }
                }
                _ => tracing::debug!(%host, "cannot resolve the directory's address"),
            }
        }
        out.truncate(crate::transport::mixnet::gateway::MAX_GATEWAY_ADDRS);
        return out;
    }
    let _ = cfg;
    Vec::new()
}

/// The mixnet transport's options from the CLI's settings.
#[cfg(feature = "mixnet")]
pub fn mixnet_options(m: &MixnetSettings) -> crate::transport::mixnet::MixnetOptions {
    use crate::transport::mixnet::{MixnetOptions, TrafficProfile};
    let mut opts = MixnetOptions {
        traffic: if m.fast { TrafficProfile::Fast } else { TrafficProfile::Default },
        reply_surbs: m.reply_surbs,
        storage_dir: m.identity_dir.clone(),
        ..MixnetOptions::default()
    };
    if !m.nym_api.is_empty() {
        opts.nym_api_urls = m.nym_api.clone();
    }
    opts
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// State of a running tunnel.
struct Running<'a> {
    cfg: &'a UpConfig,
    host: &'a mut Host,
    /// Destinations currently kept outside the tunnel by address: the directory while a new
    /// transport is built, nothing otherwise (the transport itself goes by its mark).
    bypass: Vec<IpAddr>,
    max_version: u8,
    exit: String,
    dev: AsyncDevice,
    pipe: Pipeline,
    alloc: Option<Allocation>,
    mtu: u16,
    since: Option<u64>,
    reconnects: u64,
    /// Spacing of new sessions after a loss, and of new transports after a transport failure.
    backoff: Backoff,
    /// When the next session starts, after a loss.
    retry_at: Option<Instant>,
    /// When the exit was lost (for the log line once it is back).
    lost_at: Option<Instant>,
    /// The directory's addresses, kept outside the tunnel while a transport is rebuilt.
    directory: Vec<IpAddr>,
    /// The transport's path changes already answered with a probe.
    path_changes: u64,
    tun_buf: Vec<u8>,
    /// How the host resolver points at the tunnel (full-tunnel mode), re-asserted each second.
    dns: Option<Applied>,
    /// The DNS check's outcome, once known.
    dns_check: Option<String>,
    dns_pending: Option<oneshot::Receiver<DnsOutcome>>,
}

impl Running<'_> {
    async fn run(
        &mut self,
        session: &mut Session,
        transport: &mut Transport,
        rx: &mut [u8],
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
        report: &mut impl FnMut(&str),
    ) -> Result<(), DriverError> {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When to offer held-back data to the transport again (it was busy).
        let mut pace_at: Option<Instant> = None;
        loop {
            let deadline = session.poll_timeout().map(Instant::from_std);
            // Unbiased on purpose: under a saturating upload the TUN is always readable, and a
            // biased select would never poll the transport (ACKs, keepalive replies) or timers.
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                r = self.dev.readable() => {
                    r.map_err(|e| self.tun_error(e))?;
                    self.drain_tun(session).await.map_err(|e| match e {
                        DriverError::TunIo(e) => self.tun_error(e),
                        e => e,
                    })?;
                }
                r = transport.recv(rx) => {
                    let n = r.map_err(DriverError::TransportIo)?;
                    self.from_exit(session, &mut rx[..n]).await?;
                    for _ in 1..BURST {
                        match transport.try_recv(rx) {
                            Ok(n) => self.from_exit(session, &mut rx[..n]).await?,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(DriverError::TransportIo(e)),
                        }
                    }
                }
                () = sleep_opt(deadline) => session.handle_timeout(Instant::now().into_std()),
                () = sleep_opt(pace_at) => {}
                () = sleep_opt(self.retry_at) => {
                    self.retry_at = None;
                    *session = Session::new(link::session_config(transport, self.max_version), Instant::now().into_std());
                }
                _ = housekeeping.tick() => {
                    let changes = transport.path_changes();
                    if changes != self.path_changes {
                        self.path_changes = changes;
                        tracing::info!("the mixnet client reconnected to its gateway; probing the exit");
                        session.handle_path_change(Instant::now().into_std());
                    }
                    self.pipe.expire(Instant::now().into_std());
                    self.sync_bypass();
                    self.housekeep_dns(report);
                    let state = if self.alloc.is_some() { "connected" } else { "reconnecting" };
                    self.write_status(state, session, transport);
                }
            }
            link::transmit(session, transport).await;
            while let Some(ev) = session.poll_event() {
                self.on_event(session, ev)?;
            }
            pace_at = link::transmit(session, transport).await;
        }
    }

    /// Reads up to [`BURST`] packets from the TUN into the session's bundle; the bundle is
    /// closed by [`link::transmit`] as soon as the transport can take it.
    async fn drain_tun(&mut self, session: &mut Session) -> Result<(), DriverError> {
        let now = Instant::now().into_std();
        for _ in 0..BURST {
            let n = match self.dev.try_recv(&mut self.tun_buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(DriverError::TunIo(e)),
            };
            match self.pipe.from_tun(&mut self.tun_buf[..n], now) {
                Action::ToExit(pkt) => session.send_ip(pkt, now),
                Action::ToTun(reply) => write_tun(&self.dev, reply).await,
                Action::Drop => {}
            }
        }
        Ok(())
    }

    /// One message from the exit: unbundle, translate back, write into the TUN.
    async fn from_exit(&mut self, session: &mut Session, msg: &mut [u8]) -> Result<(), DriverError> {
        let now = Instant::now().into_std();
        // The session hands out packets borrowed from `msg`; the pipeline rewrites in place, so
        // each packet is copied once into the TUN buffer (the unbundler yields shared slices).
        for pkt in session.handle_message(msg, now) {
            let Some(buf) = self.tun_buf.get_mut(..pkt.len()) else { continue };
            buf.copy_from_slice(pkt);
            if let Action::ToTun(out) = self.pipe.from_exit(buf, now) {
                write_tun(&self.dev, out).await;
            }
        }
        Ok(())
    }

    fn on_event(&mut self, session: &mut Session, ev: Event) -> Result<(), DriverError> {
        match ev {
            Event::Connected { ipv4, ipv6, mtu, version } => {
                self.install(Allocation::new(ipv4, ipv6, mtu, version))?;
            }
            Event::ExitUnresponsive | Event::Disconnected | Event::ConnectFailed(_) => {
                // Keep the TUN and routes (fail closed: nothing leaks while we reconnect), drop
                // packets until a new session is up, and start over on a fresh stream, at
                // once the first time, then spaced out so a refusing exit is not hammered.
                let delay = self.backoff.next_delay(rand::random());
                tracing::warn!(event = ?ev, retry_in = ?delay, "exit {} lost; reconnecting", self.exit);
                self.lose();
                session.close();
                self.retry_at = Some(Instant::now() + delay);
            }
        }
        Ok(())
    }

    /// A new allocation from the exit: packets flow again.
    fn install(&mut self, alloc: Allocation) -> Result<(), DriverError> {
        let after = self.lost_at.take().map(|t| t.elapsed());
        tracing::info!(ipv4 = %alloc.ipv4, ipv6 = %alloc.ipv6, version = alloc.version, ?after, "reconnected to {}", self.exit);
        let new_mtu = self.cfg.mtu_override.unwrap_or(alloc.tunnel_mtu(self.cfg.ipv6));
        if new_mtu != self.mtu {
            // Not fatal: ending `up` over it would restore the host, i.e. open it. With the
            // old MTU kept, larger packets are refused by the pipeline (ICMP too-big) instead.
            match tun::set_mtu(&self.cfg.tun, self.cfg.netns.as_deref(), new_mtu) {
                Ok(()) => {
                    self.pipe.set_mtu(new_mtu);
                    self.mtu = new_mtu;
                }
                Err(e) => {
                    tracing::warn!(error = %e, old = self.mtu, new = new_mtu, "cannot change the tunnel's MTU; keeping the old one")
                }
            }
        }
        self.pipe.set_allocated(alloc.ipv4, self.cfg.ipv6.then_some(alloc.ipv6));
        self.alloc = Some(alloc);
        self.since = Some(unix_now());
        self.backoff.reset();
        Ok(())
    }

    /// The exit is gone: packets are dropped until a new allocation arrives.
    fn lose(&mut self) {
        self.pipe.clear_allocated();
        self.alloc = None;
        self.since = None;
        self.reconnects += 1;
        self.lost_at.get_or_insert_with(Instant::now);
    }

    /// Builds a new transport and session after the old transport stopped, with backoff,
    /// until one connects (`Some`) or `shutdown` fires (`None`). The host stays as it is; in a
    /// full tunnel the directory is kept reachable around it meanwhile, and the mixnet client
    /// goes back to the same entry gateway, whose address is already outside the tunnel.
    async fn reopen(
        &mut self,
        session: &mut Session,
        old: &Transport,
        rx: &mut [u8],
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
        gateway: Option<&str>,
    ) -> Result<Option<Transport>, DriverError> {
        self.lose();
        session.close();
        self.write_status("reconnecting", session, old);
        if self.cfg.netns.is_none() && !self.directory.is_empty() {
            let keep = self.directory.clone();
            if let Err(e) = self.host.sync_bypass(&self.bypass, &keep) {
                // The rebuild then fails at the directory and is retried with backoff; the
                // host stays closed either way.
                tracing::warn!(%e, "cannot exempt the directory while the transport is rebuilt");
            }
            self.bypass = keep;
        }
        loop {
            let delay = self.backoff.next_delay(rand::random());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return Ok(None),
            }
            let opened = tokio::select! {
                r = open_link(self.cfg, rx, gateway) => r,
                () = &mut shutdown => return Ok(None),
            };
            match opened {
                Ok(o) => {
                    self.path_changes = o.transport.path_changes();
                    *session = o.session;
                    self.exit = o.exit;
                    self.max_version = o.max_version;
                    self.install(o.alloc)?;
                    // The next housekeeping tick narrows the rules to the new transport's peers.
                    return Ok(Some(o.transport));
                }
                Err(e) => tracing::warn!(error = %e, failures = self.backoff.failures(), "cannot reach the exit yet"),
            }
        }
    }

    /// A failed TUN read; in per-app mode EBADFD means the namespace, and the TUN with it, was
    /// deleted under us.
    fn tun_error(&self, e: std::io::Error) -> DriverError {
        match &self.cfg.netns {
            Some(ns) if e.raw_os_error() == Some(nix::libc::EBADFD) => DriverError::NetnsGone(ns.clone()),
            _ => DriverError::TunIo(e),
        }
    }

    /// Reports the DNS check once it ends, and puts our resolv.conf back if another program
    /// (NetworkManager after a DHCP renewal) replaced it.
    fn housekeep_dns(&mut self, report: &mut impl FnMut(&str)) {
        if let Some(rx) = &mut self.dns_pending {
            match rx.try_recv() {
                Ok(outcome) => {
                    let (line, status) = match outcome {
                        Ok(ok) => (format!("dns: {ok}"), ok),
                        Err(e) => (format!("warning: {e}"), format!("failed: {e}")),
                    };
                    report(&line);
                    self.dns_check = Some(status);
                    self.dns_pending = None;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => self.dns_pending = None,
            }
        }
        if let (Some(Applied::File { path }), Some(servers)) = (&self.dns, &self.cfg.dns) {
            if let Err(e) = resolv_conf::reassert_file(path, servers) {
                tracing::warn!(%e, "cannot re-assert the resolver configuration");
            }
        }
    }

    /// Drops the directory's exemption once a rebuilt transport runs. A failure is retried on
    /// the next tick, never fatal: ending `up` would restore the host, i.e. open it.
    fn sync_bypass(&mut self) {
        if self.bypass.is_empty() {
            return;
        }
        match self.host.sync_bypass(&self.bypass, &[]) {
            Ok(()) => self.bypass.clear(),
            Err(e) => tracing::warn!(%e, "cannot remove the directory's exemption yet; retrying"),
        }
    }

    fn write_status(&self, state: &str, session: &Session, transport: &Transport) {
        let counters = serde_json::json!({
            "pipeline": self.pipe.stats(),
            "session": session.stats(),
            "transport": transport.stats(),
            "transport_peers": transport.peer_addrs(),
        });
        let st = Status {
            state: state.into(),
            pid: std::process::id(),
            tun: self.cfg.tun.clone(),
            exit: self.exit.clone(),
            version: self.alloc.map(|a| a.version),
            mtu: Some(self.mtu),
            allocated_ipv4: self.alloc.map(|a| a.ipv4.to_string()),
            allocated_ipv6: self.alloc.filter(|_| self.cfg.ipv6).map(|a| a.ipv6.to_string()),
            local_ipv4: IpAddr::V4(LOCAL_V4).to_string(),
            local_ipv6: IpAddr::V6(LOCAL_V6).to_string(),
            connected_since: self.since,
            reconnects: self.reconnects,
            counters,
            netns: self.cfg.netns.clone(),
            dns: self.cfg.dns.iter().flatten().map(IpAddr::to_string).collect(),
            dns_mode: match (&self.dns, &self.cfg.netns, &self.cfg.dns) {
                (Some(Applied::Resolved { link }), ..) => Some(format!("systemd-resolved on {link}")),
                (Some(Applied::File { path }), ..) => Some(format!("file {}", path.display())),
                (None, Some(_), Some(_)) => Some("per-app (smolmix-vpn exec)".into()),
                _ => None,
            },
            dns_check: self.dns_check.clone(),
        };
        if let Err(e) = status::write(&self.cfg.run_dir, &st) {
            tracing::debug!(%e, "cannot write status");
        }
    }
}

/// Writes one packet into the TUN. A failed write (e.g. the kernel's queue is full) loses one
/// packet, as a congested link would; it is logged, never fatal.
async fn write_tun(dev: &AsyncDevice, pkt: &[u8]) {
    let r = match dev.try_send(pkt) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => dev.send(pkt).await,
        r => r,
    };
    if let Err(e) = r {
        tracing::debug!(%e, len = pkt.len(), "TUN write failed");
    }
}
