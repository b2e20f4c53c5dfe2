//! The host side of one `up`: what it changed (the journal, through [`Host`]) and what it
//! tells `status`, from the first instant to the one place where `up` ends.
//!
//! ```text
//!  begin:   take over what an earlier run left (crash, restart, boot-time lockdown)
//!           full tunnel: the kill switch replaces any old one in one nft transaction,
//!           then the rest of the old journal is undone           ── closed from here on
//!  ...      connect (retried while it fails), TUN, routes, DNS, the loop
//!  finish:  a deliberate stop        → everything undone, status removed       (open)
//!           setup failed, no kill switch (split, per-app: nothing was carried yet)
//!                                    → everything undone, the error returned
//!           anything else            → every change kept, status "failed"      (closed)
//! ```
//!
//! Every way `up` ends goes through [`HostGuard::finish`]; a crash never reaches it, which
//! leaves the same as "anything else": the journal and the kill switch, until `down`. Only a
//! deliberate stop opens the host (docs/design.md §3.1, "States and the host").
//!
//! In full-tunnel mode it also keeps the host's own networks in step (lan.rs): the kill
//! switch's sets from the first instant, and once the routes exist the `throw` routes that
//! leave the host's container bridges (always) and the LAN (`--allow-lan`) reachable. It
//! re-reads them when the kernel reports a link, address or route change (netwatch.rs), never
//! on a timer.

use std::os::fd::OwnedFd;

use super::{DriverError, UpConfig};
use crate::system::firewall::{self, HostNets, KillSwitch};
use crate::system::host::{Host, HostError};
use crate::system::lan::{self, LocalNets};
use crate::system::netwatch::{self, NetWatch};
use crate::system::status::{self, State};
use crate::system::tun;

/// How the work between [`HostGuard::begin`] and [`HostGuard::finish`] ended.
pub(super) enum Outcome {
    /// A stop was asked (SIGINT, SIGTERM, `down`): the host is opened.
    Stopped,
    /// The tunnel never carried traffic: the first connect failed for good, or setting up the
    /// host did. Undone unless a kill switch is in place (full tunnel: blocked, as a crash).
    NeverUp(DriverError),
    /// The tunnel broke while up: every change is kept, the host stays closed.
    Broken(DriverError),
}

/// Who takes over the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// `up`: its TUN comes next.
    Up,
    /// `block`: the kill switch alone, letting nothing out by an interface's name.
    Block,
}

/// The changes of one `up` and its status file.
pub(super) struct HostGuard {
    pub(super) host: Host,
    /// The full tunnel's kill switch is in place.
    kill_switch: bool,
    /// The host's networks as last read (full tunnel only).
    nets: LocalNets,
    /// The routes are in: the throw routes follow `nets` from now on.
    routed: bool,
    /// Link, address and route events of the host's namespace (full tunnel only).
    watch: Watch,
}

/// The netlink watcher: its socket is opened before the networks are first read (so no change
/// after that read is missed) and registered with the runtime on first use (`block` has none).
enum Watch {
    Off,
    Opened(OwnedFd),
    On(NetWatch),
}

impl HostGuard {
    /// Takes over the host: in full-tunnel mode the kill switch is in place when this returns
    /// `Ok`, before anything is sent to the directory or a gateway. Returns the guard and the
    /// undo failures of an earlier run worth a warning.
    pub(super) fn begin(cfg: &UpConfig, purpose: Purpose) -> Result<(HostGuard, Vec<String>), DriverError> {
        // Before anything: the kill switch passes all that leaves by the TUN's name, so that
        // name must not be an interface that exists (the uplink, by a typo in a profile). An
        // error here changes nothing: a lockdown in place stays.
        if purpose == Purpose::Up {
            tun::ensure_free(&cfg.tun)?;
        }
        if !cfg.full_tunnel() {
            let (host, failures) = Host::take_over(&cfg.run_dir, None, &cfg.dns_paths().journal_context())?;
            let guard =
                HostGuard { host, kill_switch: false, nets: LocalNets::default(), routed: false, watch: Watch::Off };
            return Ok((guard, failures));
        }
        // Opened first: a change between reading the networks and the kill switch is seen.
        let watch = match netwatch::socket() {
            Ok(fd) => Watch::Opened(fd),
            Err(e) => {
                tracing::warn!(%e, "cannot watch the host's networks");
                Watch::Off
            }
        };
        let nets = read_nets(cfg);
        let mut ks = kill_switch(cfg);
        if purpose == Purpose::Block {
            ks.tun = None; // there is no TUN yet, and its name may be taken
        }
        ks.nets = HostNets::from(&nets);
        let (host, failures) = Host::take_over(&cfg.run_dir, Some(&ks), &cfg.dns_paths().journal_context())?;
        Ok((HostGuard { host, kill_switch: true, nets, routed: false, watch }, failures))
    }

    /// Resolves when the host's links, addresses or routes changed (never without a kill
    /// switch to keep in step). Cancel-safe: a `select!` arm.
    pub(super) async fn networks_changed(&mut self) {
        if matches!(self.watch, Watch::Opened(_)) {
            if let Watch::Opened(fd) = std::mem::replace(&mut self.watch, Watch::Off) {
                match NetWatch::from_socket(fd) {
                    Ok(w) => self.watch = Watch::On(w),
                    Err(e) => tracing::warn!(%e, "cannot watch the host's networks"),
                }
            }
        }
        let Watch::On(watch) = &mut self.watch else { return std::future::pending().await };
        if let Err(e) = watch.changed().await {
            // Without events the sets stay as they are: fail closed, nothing new opens.
            tracing::warn!(%e, "cannot watch the host's networks any more");
            self.watch = Watch::Off;
        }
    }

    /// The routes are in place: from now on the throw routes follow the host's networks.
    pub(super) fn routes_installed(&mut self, cfg: &UpConfig) -> Result<(), HostError> {
        if !self.kill_switch {
            return Ok(());
        }
        self.routed = true;
        self.host.sync_throws(&self.nets.throws(cfg.allow_lan))
    }

    /// Re-reads the host's networks and brings the kill switch's sets and the throw routes in
    /// step. A failure is logged and mended by the next change: the host stays closed either
    /// way (a set or throw left out sends that network into the tunnel).
    pub(super) fn refresh_nets(&mut self, cfg: &UpConfig) {
        if !self.kill_switch {
            return;
        }
        let nets = read_nets(cfg);
        if nets == self.nets {
            return;
        }
        if let Err(e) = self.host.update_kill_switch(&HostNets::from(&nets)) {
            tracing::warn!(%e, "cannot update the kill switch's networks");
            return;
        }
        if self.routed {
            if let Err(e) = self.host.sync_throws(&nets.throws(cfg.allow_lan)) {
                tracing::warn!(%e, "cannot update the routes of the host's own networks");
            }
        }
        tracing::info!(internal = ?nets.internal.nets, lan = ?nets.lan.nets, "the host's networks changed");
        self.nets = nets;
    }

    /// Whether nothing but the tunnel can leave the host now.
    pub(super) fn is_locked_down(&self) -> bool {
        self.kill_switch
    }

    /// The one way `up` ends. Returns what the caller returns.
    pub(super) fn finish(self, cfg: &UpConfig, outcome: Outcome) -> Result<(), DriverError> {
        let error = match outcome {
            Outcome::Stopped => None,
            Outcome::NeverUp(e) if !self.kill_switch => {
                self.open(cfg);
                return Err(e);
            }
            Outcome::NeverUp(e) | Outcome::Broken(e) => Some(e),
        };
        match error {
            None => {
                self.open(cfg);
                Ok(())
            }
            Some(e) => {
                // Kept: the journal stays for `down`, as after a crash, and `status` says so.
                if let Err(err) = status::set_state(&cfg.run_dir, State::Failed) {
                    tracing::debug!(%err, "cannot write status");
                }
                Err(DriverError::FailedClosed(Box::new(e)))
            }
        }
    }

    /// Undoes every change and removes the status file.
    fn open(self, cfg: &UpConfig) {
        for f in self.host.rollback() {
            tracing::warn!("cleanup: {f}");
        }
        status::remove(&cfg.run_dir);
    }
}

/// The host's networks now; none if they cannot be read (nothing opens: fail closed).
fn read_nets(cfg: &UpConfig) -> LocalNets {
    match lan::read(&cfg.tun) {
        Ok(nets) => {
            if !nets.outside.is_empty() {
                tracing::info!(outside = ?nets.outside, "connected networks outside the private ranges stay in the tunnel");
            }
            nets
        }
        Err(e) => {
            tracing::warn!(%e, "cannot read the host's networks; none is reachable past the kill switch");
            LocalNets::default()
        }
    }
}

/// The kill switch `cfg` asks for, without the host's networks (see [`HostGuard::begin`]).
fn kill_switch(cfg: &UpConfig) -> KillSwitch {
    KillSwitch {
        tun: Some(cfg.tun.clone()),
        excludes: cfg.excludes.clone(),
        allow_lan: cfg.allow_lan,
        dhcp_uids: firewall::dhcp_uids(),
        nets: Default::default(),
    }
}
