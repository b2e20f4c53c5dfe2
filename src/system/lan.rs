//! The host's directly connected networks, split into the host's own container/VM networks and
//! the LAN, so the full tunnel can leave them reachable (`throw` routes in our table).
//!
//! Our table is consulted before `main` (routes.rs), so without an exception even the printer
//! and the host's own Docker bridge are routed into the TUN. The exceptions come from here:
//!
//! ```text
//!  class     interfaces                                    thrown        kill switch
//!  internal  a bridge whose ports are all veth or tap      always        oifname + daddr
//!            (or none: docker0, br-*, virbr*, podman*,
//!            lxdbr*), an unenslaved veth (ve-* of nspawn)
//!  lan       every other up interface: NICs, Wi-Fi, a      --allow-lan   oifname + daddr
//!            bridge with a NIC port, bond, vlan, macvlan,
//!            a tap or tun of another VPN
//!  never     loopback, our TUN, down, a bridge's or VRF's   no            no
//!            ports, a VRF
//! ```
//!
//! Rules, each chosen to fail closed (a prefix we leave out goes into the tunnel):
//!
//! * **Internal needs proof.** Only veth and tap lead to something on this host; anything that
//!   could be the physical LAN is LAN. A tap that is not a bridge port is LAN: ZeroTier, tinc
//!   and OpenVPN's tap mode carry remote networks on one. An interface that carries a default
//!   route of `main` is the host's uplink whatever its kind (the host is itself a container:
//!   its `eth0` is a veth), so it is LAN.
//! * **An internal prefix never covers a LAN prefix.** If it did (docker on 10.0.0.0/8, the
//!   LAN on 10.1.2.0/24), its throw would hand the LAN's addresses to `main` without
//!   `--allow-lan`; such a prefix is counted as LAN.
//! * **Connected prefixes come from addresses, never from routes.** A route DHCP pushes into
//!   `main` (option 121, TunnelVision: docs/reliability.md §1.7, docs/peers.md §12.6) must never
//!   become an exception; an address's own prefix (or its peer's, for `peer`) is what the
//!   kernel, or NetworkManager for its `noprefixroute` addresses, installs as the on-link route.
//! * **Only private ranges**: 10/8, 172.16/12, 192.168/16, 169.254/16, fc00::/7, the ranges the
//!   kill switch already opens with `--allow-lan`. A rogue access point that declares a public
//!   range local (TunnelCrack LocalNet, docs/reliability.md §1.7) gets nothing, nor does a /0
//!   or a /7 that only starts inside 10/8: such prefixes are reported in
//!   [`LocalNets::outside`]. 100.64/10 is the carrier's shared space (RFC 6598), not the LAN.
//! * **No IPv6 link-local.** fe80::/10 is scoped: a socket must name the interface, and the
//!   kernel then matches routes by that interface only, so our `default dev smx0` never takes it
//!   (measured on Linux 6.18: with `default dev tun0` in a table at pref 5209,
//!   `ip -6 route get fe80::1 oif veth0` answers `dev veth0` from `main`). A throw for fe80::/64
//!   would only hand a packet without an interface to whichever of `main`'s many fe80::/64
//!   routes comes first. Whether link-local traffic may leave is the kill switch's decision.
//! * **Bounded**: each JSON document at most [`MAX_JSON`] bytes, each class at most
//!   [`MAX_NETS`] entries (the excess, highest addresses first, is counted, not thrown).
//!
//! The kill switch must accept these destinations by interface *and* address: a more specific
//! route in `main` can pull part of a thrown prefix to another interface, and a program bound
//! to a bridge can send anything there.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use super::host::{run, HostError};
use super::routes::Cidr;

/// Largest `ip -j` document we parse. A bridge port takes about 1.3 KB in `ip -j -d link show`
/// (measured), so this is room for some ten thousand containers.
pub const MAX_JSON: usize = 16 << 20;
/// Most entries kept per class: each becomes one route and one firewall element.
pub const MAX_NETS: usize = 128;

/// Why the connected networks could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LanError {
    /// An `ip` command failed or could not be started.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A document is larger than [`MAX_JSON`].
    #[error("the output of `{what}` is {len} bytes, more than the {MAX_JSON} we read")]
    TooLarge {
        /// The command that wrote it.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A document is not the JSON iproute2 writes.
    #[error("the output of `{what}` is not iproute2's JSON: {source}")]
    Json {
        /// The command that wrote it.
        what: &'static str,
        /// What serde_json found.
        source: serde_json::Error,
    },
    /// Two links share an index or a name: not one consistent view of the host.
    #[error("`ip -j -d link show` lists interface {0:?} twice")]
    DuplicateLink(String),
}

/// The commands whose output [`classify`] reads, as [`read`] runs them.
pub const COMMANDS: [&str; 4] = [
    "ip -j -d link show",
    "ip -j addr show",
    "ip -j -4 route show table main default",
    "ip -j -6 route show table main default",
];

/// The output of the four [`COMMANDS`], in that order.
#[derive(Debug, Clone, Copy)]
pub struct IpJson<'a> {
    /// `ip -j -d link show`: kinds, bridge ports, state.
    pub links: &'a str,
    /// `ip -j addr show`: the addresses and their prefixes.
    pub addrs: &'a str,
    /// `ip -j -4 route show table main default`: which interfaces are the IPv4 uplink.
    pub default4: &'a str,
    /// `ip -j -6 route show table main default`: which interfaces are the IPv6 uplink.
    pub default6: &'a str,
}

/// One connected prefix and the interface it is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Net {
    /// The interface (for the kill switch's `oifname`).
    pub ifname: String,
    /// The prefix, host bits cleared.
    pub cidr: Cidr,
}

/// The connected networks of one class, sorted by family, address, length and interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nets {
    /// At most [`MAX_NETS`] entries; one prefix on two interfaces is two entries.
    pub nets: Vec<Net>,
    /// Entries left out because there were more than [`MAX_NETS`].
    pub over_cap: usize,
}

impl Nets {
    /// The distinct IPv4 prefixes.
    pub fn v4(&self) -> Vec<Cidr> {
        self.prefixes(false)
    }
    /// The distinct IPv6 prefixes.
    pub fn v6(&self) -> Vec<Cidr> {
        self.prefixes(true)
    }
    /// The distinct interface names, sorted.
    pub fn ifnames(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nets.iter().map(|n| n.ifname.clone()).collect();
        names.sort();
        names.dedup();
        names
    }
    fn prefixes(&self, v6: bool) -> Vec<Cidr> {
        let mut out: Vec<Cidr> = Vec::new();
        for n in self.nets.iter().filter(|n| n.cidr.is_ipv6() == v6) {
            if !out.contains(&n.cidr) {
                out.push(n.cidr);
            }
        }
        out
    }
}

/// The host's connected networks, classified (see the module documentation for the rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalNets {
    /// The host's own container and VM networks: reachable in both modes.
    pub internal: Nets,
    /// The LAN: reachable with `--allow-lan` only.
    pub lan: Nets,
    /// Connected prefixes outside the private ranges (a public LAN, a /0): left to the tunnel,
    /// for the log. At most [`MAX_NETS`].
    pub outside: Vec<Net>,
    /// Address entries that could not be used: no parsable address, a prefix length past the
    /// family's, or an interface missing from the link list or renamed (it changed between the
    /// `ip` calls; that change is an event of its own, so the next recompute sees it).
    pub unusable: usize,
}

impl LocalNets {
    /// The prefixes to `throw` from our table: internal ones, and the LAN's with `allow_lan`.
    pub fn throws(&self, allow_lan: bool) -> Vec<Cidr> {
        let mut out = self.internal.v4();
        out.extend(self.internal.v6());
        if allow_lan {
            for c in self.lan.v4().into_iter().chain(self.lan.v6()) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }
}

#[derive(Deserialize)]
struct Link {
    ifindex: u32,
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
}

#[derive(Deserialize)]
struct LinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
}

impl Link {
    fn kind(&self) -> Option<&str> {
        self.linkinfo.as_ref()?.info_kind.as_deref()
    }
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

#[derive(Deserialize)]
struct AddrLink {
    ifindex: u32,
    ifname: String,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

/// One address. iproute2 writes `{}` for entries a family filter hid, hence all optional.
#[derive(Deserialize)]
struct AddrInfo {
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    local: Option<String>,
    /// The peer of a point-to-point address (`ip addr add A peer P/len`): the on-link prefix
    /// is the peer's.
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    prefixlen: Option<u32>,
    /// Duplicate address detection failed: the kernel does not use the address.
    #[serde(default)]
    dadfailed: bool,
}

#[derive(Deserialize)]
struct Route {
    #[serde(default)]
    dst: Option<String>,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    nexthops: Vec<Nexthop>,
}

#[derive(Deserialize)]
struct Nexthop {
    #[serde(default)]
    dev: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(what: &'static str, text: &str) -> Result<Vec<T>, LanError> {
    if text.len() > MAX_JSON {
        return Err(LanError::TooLarge { what, len: text.len() });
    }
    // iproute2 writes nothing at all for an empty dump on some versions.
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text).map_err(|source| LanError::Json { what, source })
}

/// The private ranges a connected prefix must lie inside to be thrown (network, length).
const PRIVATE: [(IpAddr, u8); 5] = [
    (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
    (IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)), 12),
    (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16),
    (IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
    (IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)), 7),
];
/// IPv6 link-local, never thrown (scoped to its interface: see the module documentation).
const LINK_LOCAL_V6: (IpAddr, u8) = (IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10);

/// Is `c` wholly inside `range`? A range that were not a prefix would cover nothing.
fn inside(range: (IpAddr, u8), c: &Cidr) -> bool {
    Cidr::new(range.0, range.1).is_some_and(|r| r.covers(c))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Internal,
    Lan,
}

/// Classifies the host's connected networks from `ip -j` output; `exclude_ifname` is our TUN.
pub fn classify(json: &IpJson<'_>, exclude_ifname: &str) -> Result<LocalNets, LanError> {
    let links: Vec<Link> = parse(COMMANDS[0], json.links)?;
    let addrs: Vec<AddrLink> = parse(COMMANDS[1], json.addrs)?;
    let mut uplinks: HashSet<String> = HashSet::new();
    for (what, text) in [(COMMANDS[2], json.default4), (COMMANDS[3], json.default6)] {
        for r in parse::<Route>(what, text)?.into_iter().filter(|r| r.dst.as_deref() == Some("default")) {
            uplinks.extend(r.dev.into_iter().chain(r.nexthops.into_iter().filter_map(|n| n.dev)));
        }
    }

    let mut by_index: HashMap<u32, &Link> = HashMap::new();
    let mut names: HashSet<&str> = HashSet::new();
    for l in &links {
        if by_index.insert(l.ifindex, l).is_some() || !names.insert(&l.ifname) {
            return Err(LanError::DuplicateLink(l.ifname.clone()));
        }
    }
    // A bridge is internal only if every port is a veth or a tap (kind "tun": a bridge refuses
    // a tun, which has no Ethernet address). Ports are found by their `master`.
    let mut lan_masters: HashSet<&str> = HashSet::new();
    for l in &links {
        if let Some(master) = &l.master {
            if !matches!(l.kind(), Some("veth" | "tun")) {
                lan_masters.insert(master);
            }
        }
    }
    let class_of = |l: &Link| -> Option<Class> {
        if l.ifname == exclude_ifname || l.has_flag("LOOPBACK") || !l.has_flag("UP") {
            return None;
        }
        // A port's addresses are unusual; a VRF's (and its ports') routes are not in `main`, so
        // a throw would fall through to `main`'s default instead.
        if l.master.is_some() || l.kind() == Some("vrf") {
            return None;
        }
        let internal = match l.kind() {
            Some("bridge") => !lan_masters.contains(l.ifname.as_str()),
            Some("veth") => true,
            _ => false,
        };
        Some(if internal && !uplinks.contains(&l.ifname) { Class::Internal } else { Class::Lan })
    };

    let mut out = LocalNets::default();
    let (mut internal, mut lan) = (Vec::new(), Vec::new());
    for a in &addrs {
        let link = by_index.get(&a.ifindex).filter(|l| l.ifname == a.ifname);
        let class = match link {
            Some(l) => class_of(l),
            None => {
                out.unusable += a.addr_info.iter().filter(|i| i.family.is_some()).count();
                continue;
            }
        };
        let Some(class) = class else { continue };
        for info in &a.addr_info {
            let Some(cidr) = connected_prefix(info, &mut out.unusable) else { continue };
            if inside(LINK_LOCAL_V6, &cidr) {
                continue;
            }
            let net = Net { ifname: a.ifname.clone(), cidr };
            if !PRIVATE.iter().any(|&r| inside(r, &cidr)) {
                out.outside.push(net);
            } else if class == Class::Internal {
                internal.push(net);
            } else {
                lan.push(net);
            }
        }
    }
    // An internal prefix that covers a LAN prefix would throw the LAN too.
    let (demoted, kept): (Vec<Net>, Vec<Net>) =
        internal.into_iter().partition(|i| lan.iter().any(|l| i.cidr.covers(&l.cidr)));
    lan.extend(demoted);
    out.internal = bounded(kept);
    out.lan = bounded(lan);
    out.outside = bounded(std::mem::take(&mut out.outside)).nets;
    Ok(out)
}

/// The on-link prefix an address gives its interface, `None` for entries to skip (counting
/// the malformed ones in `unusable`).
fn connected_prefix(info: &AddrInfo, unusable: &mut usize) -> Option<Cidr> {
    let v6 = match info.family.as_deref() {
        Some("inet") => false,
        Some("inet6") => true,
        _ => return None,
    };
    if info.dadfailed {
        return None;
    }
    let addr = info.address.as_deref().or(info.local.as_deref());
    let parsed = addr.and_then(|a| a.parse::<IpAddr>().ok()).filter(|a| a.is_ipv6() == v6);
    let len = info.prefixlen.and_then(|l| u8::try_from(l).ok());
    match (parsed, len) {
        (Some(a), Some(len)) => Cidr::new(a, len).or_else(|| {
            *unusable += 1;
            None
        }),
        _ => {
            *unusable += 1;
            None
        }
    }
}

/// Sorted, deduplicated, at most [`MAX_NETS`].
fn bounded(mut nets: Vec<Net>) -> Nets {
    nets.sort_by(|a, b| {
        (a.cidr.is_ipv6(), a.cidr.addr(), a.cidr.prefix_len(), &a.ifname).cmp(&(
            b.cidr.is_ipv6(),
            b.cidr.addr(),
            b.cidr.prefix_len(),
            &b.ifname,
        ))
    });
    nets.dedup();
    let over_cap = nets.len().saturating_sub(MAX_NETS);
    nets.truncate(MAX_NETS);
    Nets { nets, over_cap }
}

/// Runs the [`COMMANDS`] and classifies their output; `exclude_ifname` is our TUN.
///
/// If the IPv6 route dump fails while no interface has an IPv6 address (`ipv6.disable=1`),
/// there can be no IPv6 uplink, so that failure alone is not an error.
pub fn read(exclude_ifname: &str) -> Result<LocalNets, LanError> {
    let links = run("ip", &["-j", "-d", "link", "show"])?;
    let addrs = run("ip", &["-j", "addr", "show"])?;
    let default4 = run("ip", &["-j", "-4", "route", "show", "table", "main", "default"])?;
    let default6 = match run("ip", &["-j", "-6", "route", "show", "table", "main", "default"]) {
        Ok(out) => out,
        Err(e) if addrs.contains("\"inet6\"") => return Err(e.into()),
        Err(_) => String::new(),
    };
    classify(&IpJson { links: &links, addrs: &addrs, default4: &default4, default6: &default6 }, exclude_ifname)
}

#[cfg(test)]
mod tests;
