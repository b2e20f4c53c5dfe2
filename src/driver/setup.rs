//! Host setup for `up` (full/split tunnel or per-app namespace) and the end-to-end DNS check.
//!
//! Everything here runs once, after the exit answered and before the loop starts; every change
//! goes through [`Host`], so the caller's rollback undoes a half-finished setup.

use std::time::Duration;

use tokio::sync::oneshot;
use tun_rs::AsyncDevice;

use super::{DriverError, UpConfig};
use crate::system::dns::{self, Applied};
use crate::system::dns_check;
use crate::system::host::Host;
use crate::system::netns::{self, LinkAddrs};
use crate::system::routes::RoutePlan;
use crate::system::tun::{self, LOCAL_V4, LOCAL_V6};
use crate::transport::Transport;

/// What `up` set up on the host, for the loop and the status file.
pub(super) struct Setup {
    pub dev: AsyncDevice,
    /// How the host's resolver was pointed at the tunnel (full-tunnel mode).
    pub dns: Option<Applied>,
}

/// Full or split tunnel: TUN, owned table and rules, then DNS (which needs both: resolvectl
/// configures the TUN link, and the routes must exist before anything queries). In full-tunnel
/// mode the kill switch has been in place since `up` began (guard.rs).
/// The transport's own sockets carry [`crate::system::mark::FWMARK`]: routing and the kill switch
/// exempt that mark, never an address.
pub(super) fn setup_host(cfg: &UpConfig, host: &mut Host, mtu: u16) -> Result<Setup, DriverError> {
    let dev = tun::create(host, &cfg.tun, mtu, cfg.ipv6)?;
    let servers = cfg.dns.as_deref().unwrap_or_default();
    let plan = RoutePlan::new(&cfg.routes, &cfg.excludes, cfg.ipv6).with_dns(servers);
    host.install_routes(&cfg.tun, &plan)?;
    let dns = match &cfg.dns {
        Some(servers) => Some(dns::apply(host, &cfg.dns_paths(), &cfg.tun, servers)?),
        None => None,
    };
    Ok(Setup { dev, dns })
}

/// Per-app mode: the namespace first (so deleting it is undone last), then the TUN, created
/// here and moved there. The process, and so the transport's sockets, stay in the host
/// namespace; our fd keeps reading and writing the moved TUN. Nothing in the namespace but lo
/// and the TUN, so its programs have no other way out. DNS is `exec`'s business.
pub(super) fn setup_netns(cfg: &UpConfig, host: &mut Host, ns: &str, mtu: u16) -> Result<Setup, DriverError> {
    if netns::ensure(host, ns)? == netns::Created::Existing {
        // Fail closed: another interface (a veth, a physical NIC) would be a way around us.
        let others = netns::foreign_links(ns, &cfg.tun)?;
        if !others.is_empty() {
            return Err(DriverError::NetnsNotEmpty { ns: ns.to_string(), links: others.join(", ") });
        }
    }
    // No host-side IPv6 address: the move drops addresses, move_link sets them inside.
    let dev = tun::create(host, &cfg.tun, mtu, false)?;
    netns::move_link(host, &cfg.tun, ns, &LinkAddrs { v4: LOCAL_V4, v6: cfg.ipv6.then_some(LOCAL_V6) })?;
    Ok(Setup { dev, dns: None })
}

/// Starts the end-to-end lookup through the tunnel (inside the namespace in per-app mode); the
/// receiver yields its outcome. Any well-formed reply proves the path, even NXDOMAIN.
pub(super) fn start_dns_check(cfg: &UpConfig, transport: &Transport) -> Option<oneshot::Receiver<DnsOutcome>> {
    let servers = cfg.dns.clone()?;
    let name = cfg.dns_check_name.clone();
    // A mixnet round trip is ~0.7 s with loss to ride out; the local exit answers in ms.
    let timeout = match transport {
        Transport::Udp(_) => Duration::from_secs(3),
        #[cfg(feature = "mixnet")]
        Transport::Mixnet(_) => Duration::from_secs(10),
    };
    let (tx, rx) = oneshot::channel();
    let describe = move |r: Result<Duration, dns_check::DnsCheckError>, name: &str| match r {
        Ok(rtt) => Ok(format!("ok ({name} answered through the tunnel in {} ms)", rtt.as_millis())),
        Err(e) => Err(e.to_string()),
    };
    match cfg.netns.clone() {
        None => {
            tokio::spawn(async move {
                let r = dns_check::check_lookup(&servers, &name, timeout).await;
                let _ = tx.send(describe(r, &name));
            });
        }
        Some(ns) => {
            // Sockets belong to the namespace of the thread that makes them: a thread that
            // joined `ns`, with its own small runtime.
            tokio::task::spawn_blocking(move || {
                let outcome = netns::in_netns(&ns, move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("cannot run the DNS check: {e}"))?;
                    describe(rt.block_on(dns_check::check_lookup(&servers, &name, timeout)), &name)
                });
                let _ = tx.send(outcome.unwrap_or_else(|e| Err(format!("cannot run the DNS check: {e}"))));
            });
        }
    }
    Some(rx)
}

/// How the DNS check ended: `ok (…)`, or why DNS does not work.
pub(super) type DnsOutcome = Result<String, String>;
