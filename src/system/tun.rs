//! The TUN device: created with tun-rs, addressed with the *stable local* addresses.
//!
//! The kernel only ever sees [`LOCAL_V4`] and [`LOCAL_V6`] on the TUN. The addresses the IPR
//! allocates (10.0.x.y, fc00::x) are applied by the pipeline's NAT, so a reconnect that brings
//! new addresses does not change a single socket's local address on the host: connected UDP
//! sockets and the routing table stay valid (the address changes are invisible to apps; TCP
//! connections through the old allocation die at the exit, as they would with any VPN).

use std::net::{Ipv4Addr, Ipv6Addr};

use tun_rs::{AsyncDevice, DeviceBuilder};

use super::host::{Host, HostError};
use super::journal::Undo;

/// The TUN's IPv4 address: from the shared address space of RFC 6598 (100.64.0.0/10), which
/// no LAN and no public host uses, so it cannot shadow a real destination.
pub const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(100, 86, 0, 2);
/// The TUN's IPv6 address: a ULA (RFC 4193) under fd6d:6978::/48 ("mix" in hex).
pub const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0xfd6d, 0x6978, 0, 0, 0, 0, 0, 2);

/// Why the TUN could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The kernel refused to create the device.
    #[error("cannot create TUN device {name}: {source} (is /dev/net/tun available, and are you root?)")]
    Create {
        /// The interface name.
        name: String,
        /// The error from tun-rs.
        source: std::io::Error,
    },
    /// An interface of that name exists already: taking its name would let the kill switch
    /// (which passes everything leaving by the TUN's name) pass everything leaving by it.
    #[error("an interface named {name} exists already: choose another --tun (if an earlier smolmix-vpn left it, `smolmix-vpn down` removes it)")]
    Exists {
        /// The interface name.
        name: String,
    },
    /// Journalling or configuring the device (addresses, link up) failed.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Refuses `name` if an interface of that name exists in this process's network namespace.
/// Asked of the kernel (`if_nametoindex`), not of `/sys/class/net`, which shows the namespace
/// that mounted sysfs and can miss an interface right here (`nsenter --net`).
pub fn ensure_free(name: &str) -> Result<(), TunError> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(_) => Err(TunError::Exists { name: name.to_string() }),
        Err(_) => Ok(()),
    }
}

/// Creates and configures the TUN `name` with the stable addresses and `mtu`; its removal is
/// journalled first.
pub fn create(host: &mut Host, name: &str, mtu: u16, ipv6: bool) -> Result<AsyncDevice, TunError> {
    ensure_free(name)?;
    // The device vanishes when our fd closes, even after SIGKILL; the journal entry covers a
    // device left behind by anything else (e.g. a kernel that kept it for a lingering fd).
    let undo = Undo::Ip { args: vec!["link".into(), "del".into(), name.into()] };
    host.record(undo.clone())?;
    let dev = match DeviceBuilder::new().name(name).mtu(mtu).ipv4(LOCAL_V4, 32, None).build_async() {
        Ok(dev) => dev,
        Err(source) => {
            // Not ours after all (it appeared in between, or the name is refused): a `down`
            // must not delete an interface of that name.
            host.forget(&undo)?;
            return Err(TunError::Create { name: name.to_string(), source });
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    if ipv6 {
        // nodad: duplicate address detection would hold the address "tentative" for ~1 s
        // (RFC 4862 §5.4) and fail early sends; nothing else is on this point-to-point link.
        let v6 = format!("{LOCAL_V6}/128");
        host.ip(&s(&["-6", "addr", "add", &v6, "dev", name, "nodad"]), &s(&["-6", "addr", "del", &v6, "dev", name]))?;
    }
    host.ip(&s(&["link", "set", "dev", name, "up"]), &s(&["link", "del", name]))?;
    Ok(dev)
}

/// Changes the MTU of an existing TUN (after a reconnect to an exit with another MTU); `netns`
/// is where the TUN lives in per-app mode.
pub fn set_mtu(name: &str, netns: Option<&str>, mtu: u16) -> Result<(), HostError> {
    let mtu = mtu.to_string();
    let mut args = match netns {
        Some(ns) => vec!["-n", ns],
        None => vec![],
    };
    args.extend(["link", "set", "dev", name, "mtu", &mtu]);
    super::host::run("ip", &args).map(drop)
}
