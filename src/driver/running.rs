//! The running tunnel: the loop that moves packets between the TUN, the pipeline, the link and
//! the transport, and acts on the link's events.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tun_rs::AsyncDevice;

use super::guard::HostGuard;
use super::report::{Report, Reporter};
use super::setup::DnsOutcome;
use super::{open_options, unix_now, DriverError, UpConfig};
use crate::ipr::Allocation;
use crate::link::{self, sleep_opt, Link, LinkEvent};
use crate::pipeline::{Action, Pipeline};
use crate::system::dns::Applied;
use crate::system::resolv_conf;
use crate::system::status::{self, State, Status};
use crate::system::tun::{self, LOCAL_V4, LOCAL_V6};
use crate::transport::{self, Transport};

/// Packets (or messages) handled per wake-up before yielding to the other direction; 64 is
/// smoltcp's and the seed library's device burst, enough to amortise a wake-up.
const BURST: usize = 64;
/// Largest IP packet (u16 total length) and so the largest TUN read.
pub(super) const MAX_PACKET: usize = 65535;
/// How often the status file is refreshed and NAT/reassembly state expired.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// State of a running tunnel.
pub(super) struct Running<'a> {
    pub(super) cfg: &'a UpConfig,
    /// The host's changes, and its networks kept in step (guard.rs).
    pub(super) guard: &'a mut HostGuard,
    /// The connection to the exit: sessions, reconnects, the allocation.
    pub(super) link: Link,
    /// The highest IPR version the exit speaks (what a rebuilt transport's sessions ask for).
    pub(super) max_version: u8,
    pub(super) exit: String,
    pub(super) dev: AsyncDevice,
    pub(super) pipe: Pipeline,
    pub(super) mtu: u16,
    /// When the current session came up (Unix seconds), for the status.
    pub(super) since: Option<u64>,
    /// The transport's path changes already answered with a probe.
    pub(super) path_changes: u64,
    pub(super) tun_buf: Vec<u8>,
    /// How the host resolver points at the tunnel (full-tunnel mode), re-asserted each second.
    pub(super) dns: Option<Applied>,
    /// The DNS check's outcome, once known.
    pub(super) dns_check: Option<String>,
    pub(super) dns_pending: Option<oneshot::Receiver<DnsOutcome>>,
    /// Where what the user should see goes.
    pub(super) reporter: &'a mut Reporter,
}

impl Running<'_> {
    /// Runs until `shutdown` (`Ok`), an error nothing can repair, or the transport failing
    /// ([`DriverError::TransportIo`]: the caller rebuilds it with [`Running::reopen`]).
    pub(super) async fn run(
        &mut self,
        transport: &mut Transport,
        rx: &mut [u8],
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), DriverError> {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When to offer held-back data to the transport again (it was busy).
        let mut pace_at: Option<Instant> = None;
        loop {
            let deadline = self.link.poll_timeout().map(Instant::from_std);
            // Unbiased on purpose: under a saturating upload the TUN is always readable, and a
            // biased select would never poll the transport (ACKs, keepalive replies) or timers.
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                r = self.dev.readable() => {
                    r.map_err(|e| self.tun_error(e))?;
                    self.drain_tun().await.map_err(|e| self.tun_error(e))?;
                }
                r = transport.recv(rx) => {
                    let n = r.map_err(DriverError::TransportIo)?;
                    self.handle_message(&rx[..n]).await;
                    for _ in 1..BURST {
                        match transport.try_recv(rx) {
                            Ok(n) => self.handle_message(&rx[..n]).await,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(DriverError::TransportIo(e)),
                        }
                    }
                }
                () = sleep_opt(deadline) => self.link.handle_timeout(Instant::now().into_std()),
                () = sleep_opt(pace_at) => {}
                () = self.guard.networks_changed() => self.guard.refresh_nets(self.cfg),
                _ = housekeeping.tick() => {
                    let now = Instant::now().into_std();
                    let changes = transport.path_changes();
                    if changes != self.path_changes {
                        self.path_changes = changes;
                        tracing::info!("the mixnet client reconnected to its gateway; probing the exit");
                        self.link.handle_path_change(now);
                    }
                    if self.pipe.poll_timeout().is_some_and(|t| t <= now) {
                        self.pipe.handle_timeout(now);
                    }
                    self.reporter.drain();
                    self.housekeep_dns();
                    let state = if self.link.allocation().is_some() { State::Connected } else { State::Reconnecting };
                    self.write_status(state, transport);
                }
            }
            link::transmit(&mut self.link, transport).await;
            self.handle_events();
            pace_at = link::transmit(&mut self.link, transport).await;
        }
    }

    /// Acts on what the link reports.
    fn handle_events(&mut self) {
        while let Some(ev) = self.link.poll_event() {
            match ev {
                LinkEvent::Up(alloc) => {
                    self.install(alloc);
                    self.reporter.report(Report::Reconnected(&format!(
                        "reconnected to {} (IPR v{}): exit-allocated {} {}, mtu {}",
                        self.exit, alloc.version, alloc.ipv4, alloc.ipv6, self.mtu
                    )));
                }
                // Keep the TUN and routes (fail closed: nothing leaks while we reconnect) and
                // drop packets until a new session is up; the link retries with its backoff.
                LinkEvent::Lost { loss, retry_in } => {
                    if self.since.is_some() {
                        self.reporter.report(Report::Lost(&format!(
                            "the exit {loss}; the host stays closed while reconnecting (next attempt in {:.1} s)",
                            retry_in.as_secs_f64()
                        )));
                    }
                    self.pipe.clear_allocated();
                    self.since = None;
                }
                LinkEvent::Failed(_) | LinkEvent::Closed => {}
            }
        }
    }

    /// Reads up to [`BURST`] packets from the TUN into the link's bundle; the bundle is closed
    /// by [`link::transmit`] as soon as the transport can take it.
    async fn drain_tun(&mut self) -> std::io::Result<()> {
        let now = Instant::now().into_std();
        for _ in 0..BURST {
            let n = match self.dev.try_recv(&mut self.tun_buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            match self.pipe.handle_tun(&mut self.tun_buf[..n], now) {
                Action::ToExit(pkt) => self.link.send_ip(pkt, now),
                Action::ToTun(reply) => write_tun(&self.dev, reply).await,
                Action::Drop => {}
            }
        }
        Ok(())
    }

    /// One message from the exit: unbundle, translate back, write into the TUN.
    async fn handle_message(&mut self, msg: &[u8]) {
        let now = Instant::now().into_std();
        // The link hands out packets borrowed from `msg`; the pipeline rewrites in place, so
        // each packet is copied once into the TUN buffer (the unbundler yields shared slices).
        for pkt in self.link.handle_message(msg, now) {
            let Some(buf) = self.tun_buf.get_mut(..pkt.len()) else { continue };
            buf.copy_from_slice(pkt);
            if let Action::ToTun(out) = self.pipe.handle_exit(buf, now) {
                write_tun(&self.dev, out).await;
            }
        }
    }

    /// A new allocation from the exit: packets flow again.
    fn install(&mut self, alloc: Allocation) {
        tracing::info!(ipv4 = %alloc.ipv4, ipv6 = %alloc.ipv6, version = alloc.version, "connected to {}", self.exit);
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
        self.since = Some(unix_now());
    }

    /// Builds a new transport after the old one stopped, with the link's backoff between
    /// attempts, until one opens (`Some`; the link's new session then connects in the loop) or
    /// `shutdown` fires (`None`). The host stays as it is, closed: the mixnet client goes back
    /// to the same entry gateway, and both its websocket and its directory requests leave by
    /// the transport's mark.
    pub(super) async fn reopen(
        &mut self,
        old: &Transport,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
        gateway: Option<String>,
    ) -> Option<Transport> {
        let mut delay = self.link.handle_transport_lost(Instant::now().into_std());
        self.handle_events();
        self.reporter.begin();
        self.write_status(State::Reconnecting, old);
        let opts = open_options(self.cfg, gateway, self.reporter.progress());
        loop {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return None,
            }
            let opened = {
                let mut open = std::pin::pin!(transport::open(self.cfg.ipr.as_ref(), &opts));
                loop {
                    tokio::select! {
                        r = &mut open => break r,
                        () = self.reporter.next_step() => self.write_status(State::Reconnecting, old),
                        () = &mut shutdown => return None,
                    }
                }
            };
            self.reporter.drain();
            let now = Instant::now().into_std();
            match opened {
                Ok(o) => {
                    self.path_changes = o.transport.path_changes();
                    self.exit = o.exit;
                    self.max_version = o.max_version;
                    self.link.handle_transport_restored(link::session_config(&o.transport, o.max_version), now);
                    return Some(o.transport);
                }
                Err(e) => {
                    tracing::warn!(error = %e, failures = self.link.failures(), "cannot reach the exit yet");
                    delay = self.link.handle_transport_lost(now);
                    self.handle_events();
                }
            }
        }
    }

    /// A failed TUN read: fatal, and kept closed by the caller. In per-app mode EBADFD means
    /// the namespace, and the TUN with it, was deleted under us.
    fn tun_error(&self, e: std::io::Error) -> DriverError {
        match &self.cfg.netns {
            Some(ns) if e.raw_os_error() == Some(nix::libc::EBADFD) => DriverError::NetnsGone(ns.clone()),
            _ => DriverError::TunIo(e),
        }
    }

    /// Reports the DNS check once it ends, and puts our resolv.conf back if another program
    /// (NetworkManager after a DHCP renewal) replaced it.
    fn housekeep_dns(&mut self) {
        if let Some(rx) = &mut self.dns_pending {
            match rx.try_recv() {
                Ok(outcome) => {
                    let status = match outcome {
                        Ok(ok) => {
                            self.reporter.report(Report::Note(&format!("dns: {ok}")));
                            ok
                        }
                        Err(e) => {
                            self.reporter.report(Report::Warning(&e.to_string()));
                            format!("failed: {e}")
                        }
                    };
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

    pub(super) fn write_status(&self, state: State, transport: &Transport) {
        let alloc = self.link.allocation();
        let counters = serde_json::json!({
            "pipeline": self.pipe.stats(),
            "session": self.link.session().stats(),
            "transport": transport.stats(),
            "session_queue": self.link.session().queued(),
            "transport_peer": transport.peer().map(|p| p.to_string()),
        });
        let st = Status {
            state,
            pid: std::process::id(),
            tun: self.cfg.tun.clone(),
            exit: self.exit.clone(),
            version: alloc.map(|a| a.version),
            mtu: Some(self.mtu),
            allocated_ipv4: alloc.map(|a| a.ipv4.to_string()),
            allocated_ipv6: alloc.filter(|_| self.cfg.ipv6).map(|a| a.ipv6.to_string()),
            local_ipv4: IpAddr::V4(LOCAL_V4).to_string(),
            local_ipv6: IpAddr::V6(LOCAL_V6).to_string(),
            connected_since: self.since,
            reconnects: self.link.reconnects(),
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
            progress: self.reporter.log().to_vec(),
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
