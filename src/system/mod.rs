//! Everything that changes the host: TUN, routes and rules, DNS, network namespaces, and the
//! journal that can undo it.
//!
//! Nothing here knows about packets. Every change goes through [`host::Host`], which records
//! how to undo it before making it ([`journal`]), so `smolmix-vpn down` can restore the host
//! after a crash and `up` can start clean.
//!
//! [`lan`] reads the host's connected networks (its container/VM bridges and the LAN) that
//! the full tunnel leaves reachable, and [`netwatch`] tells when links, addresses or routes
//! changed, so that view is recomputed; neither changes the host.

pub mod dns;
pub mod dns_check;
pub mod exec;
mod exec_user;
pub mod files;
pub mod firewall;
pub mod host;
pub mod journal;
pub mod lan;
pub mod lock;
pub mod mark;
pub mod netns;
pub mod netwatch;
pub mod notify;
pub mod pty;
pub mod resolv_conf;
pub mod routes;
mod shape;
pub mod status;
pub mod tun;
pub mod upstream_dns;

/// Does this process hold CAP_NET_ADMIN (root, or a capability granted by systemd/setcap)?
///
/// Read from `/proc/self/status` (`CapEff`, bit 12 = CAP_NET_ADMIN, linux/capability.h) rather
/// than assuming uid 0: `sudo` is not the only way to run a network daemon.
pub fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}
