//! Which destinations go into the tunnel, expressed as one owned routing table and rules.
//!
//! The plan (all journalled by [`super::Host`] before each change):
//!
//! ```text
//!  pref 5208  fwmark 0x736d        lookup main      the transport's own sockets (mark.rs)
//!  pref 5209  from all             lookup 0x736d    our table, consulted before main
//!  table 0x736d:  <each --route> dev smx0           (default: 0.0.0.0/0 and ::/0)
//!                 unreachable <each --route> metric 4096   backstop once the TUN is gone
//!                 throw <each --exclude>            falls through to main: reached directly
//!                 unreachable ::/0                  when IPv6 is off or not allocated
//! ```
//!
//! Why a table and a rule ahead of `main` rather than routes in `main` (wg-quick's
//! `suppress_prefixlength 0` scheme): a more specific route that DHCP option 121 or another
//! program pushes into `main` would win over a tunnel route there and pull traffic out of the
//! tunnel ("TunnelVision", CVE-2024-3661, docs/reliability.md §1.7). Our table is looked up
//! first, so only our own `throw` entries and the transport's mark send anything to `main`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Our routing table id: "sm" in ASCII, unlikely to clash with tables others own.
pub const TABLE: u32 = 0x736d;
/// Rule priority for the transport's mark (and the directory during a rebuild); below
/// [`RULE_PREF_TABLE`].
pub const RULE_PREF_BYPASS: u32 = 5208;
/// Rule priority for "everything else: our table". Well before `main` (32766).
pub const RULE_PREF_TABLE: u32 = 5209;
/// Metric of the `unreachable` backstop beside each tunnelled prefix; the TUN route has 0.
pub const BACKSTOP_METRIC: u32 = 4096;

/// An IPv4 or IPv6 prefix with the host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// `0.0.0.0/0`: every IPv4 destination.
    pub const ANY_V4: Cidr = Cidr { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), len: 0 };
    /// `::/0`: every IPv6 destination.
    pub const ANY_V6: Cidr = Cidr { addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED), len: 0 };

    /// A prefix; host bits are cleared, `None` if `len` is too long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Cidr { addr, len })
    }

    /// The single-address prefix of `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, len }
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    /// The prefix length in bits: 0 to 32 for IPv4, to 128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    /// Is this an IPv6 prefix?
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
    /// Is `ip` inside this prefix (same family, same leading `len` bits)?
    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.len).is_some_and(|c| c.addr == self.addr)
    }
    /// Is all of `other` inside this prefix (same family, no shorter, same leading bits)?
    pub fn covers(&self, other: &Cidr) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }
    /// `-4` or `-6`, the family flag of iproute2.
    pub fn family_flag(&self) -> &'static str {
        if self.is_ipv6() {
            "-6"
        } else {
            "-4"
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A string that is not a prefix (`ADDR/LEN`) or a bare address; holds the string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IPv4 or IPv6 prefix such as 192.0.2.0/24 or 2001:db8::/32")]
pub struct CidrParseError(String);

impl FromStr for Cidr {
    type Err = CidrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError(s.to_string());
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                let a: IpAddr = a.parse().map_err(|_| err())?;
                // Digits only: u8::from_str would accept "+24".
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                (a, l.parse::<u8>().map_err(|_| err())?)
            }
            None => {
                let a: IpAddr = s.parse().map_err(|_| err())?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        Cidr::new(addr, len).ok_or_else(err)
    }
}

/// One entry of our routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableEntry {
    /// Send the prefix into the TUN.
    Tunnel(Cidr),
    /// Leave our table and continue with the next rule (`main`): reached directly.
    Throw(Cidr),
    /// Refuse at once (ENETUNREACH to the application): the family is blocked.
    Unreachable(Cidr),
}

/// The whole routing intent of one `up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// What our table holds, one entry per prefix.
    pub entries: Vec<TableEntry>,
}

impl RoutePlan {
    /// Builds the table for `routes`/`excludes`. With `ipv6 == false` every IPv6 prefix we
    /// would tunnel becomes unreachable instead, so IPv6 is decided, never left to leak out of
    /// the physical interface; when only IPv4 is routed, IPv6 is simply left alone.
    pub fn new(routes: &[Cidr], excludes: &[Cidr], ipv6: bool) -> RoutePlan {
        let mut entries = Vec::new();
        for r in routes {
            if r.is_ipv6() && !ipv6 {
                entries.push(TableEntry::Unreachable(*r));
            } else {
                entries.push(TableEntry::Tunnel(*r));
            }
        }
        for e in excludes {
            entries.push(TableEntry::Throw(*e));
        }
        RoutePlan { entries }
    }

    /// Adds a host route into the tunnel for each DNS server that `routes` do not cover, so a
    /// split tunnel still sends every lookup through the tunnel rather than by `main`.
    pub fn with_dns(mut self, servers: &[IpAddr]) -> RoutePlan {
        for &s in servers {
            let covered = self.entries.iter().any(|e| matches!(e, TableEntry::Tunnel(c) if c.contains(s)));
            if !covered {
                self.entries.push(TableEntry::Tunnel(Cidr::host(s)));
            }
        }
        self
    }

    /// Does any entry carry IPv6 (so we need `ip -6 rule`s)?
    pub fn has_v6(&self) -> bool {
        self.entries.iter().any(|e| match e {
            TableEntry::Tunnel(c) | TableEntry::Throw(c) | TableEntry::Unreachable(c) => c.is_ipv6(),
        })
    }
    /// Does any entry carry IPv4 (so we need `ip -4 rule`s)?
    pub fn has_v4(&self) -> bool {
        self.entries.iter().any(|e| match e {
            TableEntry::Tunnel(c) | TableEntry::Throw(c) | TableEntry::Unreachable(c) => !c.is_ipv6(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!("192.0.2.77/24".parse::<Cidr>().unwrap().to_string(), "192.0.2.0/24");
        assert_eq!("2001:db8::1/32".parse::<Cidr>().unwrap().to_string(), "2001:db8::/32");
        assert_eq!("192.0.2.7".parse::<Cidr>().unwrap().to_string(), "192.0.2.7/32");
        assert_eq!("::/0".parse::<Cidr>().unwrap(), Cidr::ANY_V6);
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap(), Cidr::ANY_V4);
        for bad in ["", "/", "1.2.3.4/", "1.2.3.4/33", "::/129", "1.2.3.4/+8", "x/8", "1.2.3/8", "1.2.3.4/0008"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn contains_matches_family_and_prefix() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains("192.0.2.255".parse().unwrap()));
        assert!(!c.contains("192.0.3.0".parse().unwrap()));
        assert!(!c.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(Cidr::ANY_V6.contains("2001:db8::1".parse().unwrap()));
        assert!(!Cidr::ANY_V6.contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn covers_whole_prefixes_only() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(c("10.0.0.0/8").covers(&c("10.1.2.0/24")));
        assert!(c("10.0.0.0/8").covers(&c("10.0.0.0/8")));
        assert!(!c("10.0.0.0/8").covers(&c("10.0.0.0/7")), "starts inside, ends outside");
        assert!(!c("10.0.0.0/8").covers(&c("11.0.0.0/24")));
        assert!(!c("fc00::/7").covers(&c("fe80::/64")));
        assert!(!Cidr::ANY_V4.covers(&c("::/128")), "families never cover each other");
    }

    #[test]
    fn plan_blocks_v6_when_off() {
        let plan = RoutePlan::new(&[Cidr::ANY_V4, Cidr::ANY_V6], &[], false);
        assert_eq!(plan.entries[1], TableEntry::Unreachable(Cidr::ANY_V6));
        assert!(plan.has_v4() && plan.has_v6());
    }

    #[test]
    fn split_plan_routes_dns_servers_into_the_tunnel() {
        let r: Cidr = "192.0.2.0/24".parse().unwrap();
        let dns: [IpAddr; 2] = ["192.0.2.53".parse().unwrap(), "9.9.9.9".parse().unwrap()];
        let plan = RoutePlan::new(&[r], &[], true).with_dns(&dns);
        assert_eq!(plan.entries, vec![TableEntry::Tunnel(r), TableEntry::Tunnel(Cidr::host(dns[1]))]);
        let full = RoutePlan::new(&[Cidr::ANY_V4], &[], true).with_dns(&dns);
        assert_eq!(full.entries, vec![TableEntry::Tunnel(Cidr::ANY_V4)]);
    }

    #[test]
    fn plan_excludes_throw() {
        let ex: Cidr = "192.0.2.0/24".parse().unwrap();
        let plan = RoutePlan::new(&[Cidr::ANY_V4], &[ex], true);
        assert_eq!(plan.entries, vec![TableEntry::Tunnel(Cidr::ANY_V4), TableEntry::Throw(ex)]);
        assert!(!plan.has_v6());
    }
}
