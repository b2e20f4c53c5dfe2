//! The kill switch: an nftables table that lets nothing leave the host but through the tunnel.
//!
//! Routing alone fails open in ways a firewall does not: a program that binds to the physical
//! interface (`SO_BINDTODEVICE`, `curl --interface eth0`, `ping -I eth0`) makes the kernel skip
//! routes whose device differs, so our table's `dev smx0` route is passed over and `main`
//! answers; so does a socket with a routing mark of its own. The table below is consulted for
//! every packet the host sends, whatever route it took:
//!
//! ```text
//!  table inet smolmix_killswitch
//!   output (filter hook, policy accept; the last rule rejects):
//!    oifname lo | oifname <tun>               accept   loopback, the tunnel itself
//!    meta mark 0x736d                         accept   the transport's own sockets (mark.rs)
//!    daddr @exempt4 / @exempt6                accept   empty but while a new mixnet client is
//!                                                      built: the directory, whose HTTP client
//!                                                      is the SDK's and unmarked; in step with
//!                                                      the routing rules for it
//!    daddr <each --exclude>                   accept   what the user keeps off the tunnel
//!    DHCPv4 68→67, DHCPv6 546→547,
//!    ICMPv6 router/neighbour solicitation,
//!    neighbour advertisement, MLD reports     accept   what the link itself needs
//!    with --allow-lan: RFC 1918, link-local,
//!    multicast, fc00::/7, fe80::/10, ff00::/8 accept
//!    counter reject (admin prohibited)                 everything else: an immediate error
//! ```
//!
//! It is installed before the TUN and the routes, journalled like every other change
//! ([`super::journal`]: `delete table`), and outlives the process: after SIGKILL, OOM or a
//! panic it keeps the host closed until `smolmix-vpn down`. Reconnects do not touch it. It is
//! for the full tunnel only: with `--route` (split) the rest of the traffic is meant to go out
//! directly, and in per-app mode the namespace has no other way out to begin with.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::mark::FWMARK;
use super::routes::Cidr;

/// nftables table (family inet) that holds the kill switch.
pub const TABLE: &str = "smolmix_killswitch";

/// What the kill switch lets through besides the TUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillSwitch {
    /// The TUN interface: everything leaving by it is allowed.
    pub tun: String,
    /// Destinations let through at install time (later changes: [`set_elements`]).
    pub exempt: Vec<IpAddr>,
    /// `--exclude` prefixes: the user asked for these to be reached directly.
    pub excludes: Vec<Cidr>,
    /// `--allow-lan`: local networks stay reachable.
    pub allow_lan: bool,
}

const LAN_V4: &str = "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255";
const LAN_V6: &str = "fc00::/7, fe80::/10, ff00::/8";

/// Quotes an interface name for nft: names are checked by the CLI (IFNAMSIZ, no quotes), but
/// the script must not be steerable even so.
fn quoted(name: &str) -> String {
    let clean: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
    format!("\"{clean}\"")
}

impl KillSwitch {
    /// The `nft -f` script that creates the table (atomically: all of it or nothing).
    pub fn script(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "table inet {TABLE} {{");
        let _ = writeln!(s, "\tset exempt4 {{ type ipv4_addr; }}");
        let _ = writeln!(s, "\tset exempt6 {{ type ipv6_addr; }}");
        let _ = writeln!(s, "\tchain output {{");
        let _ = writeln!(s, "\t\ttype filter hook output priority filter; policy accept;");
        let _ = writeln!(s, "\t\toifname \"lo\" accept");
        let _ = writeln!(s, "\t\toifname {} accept", quoted(&self.tun));
        let _ = writeln!(s, "\t\tmeta mark {FWMARK:#x} accept");
        let _ = writeln!(s, "\t\tip daddr @exempt4 accept");
        let _ = writeln!(s, "\t\tip6 daddr @exempt6 accept");
        for c in &self.excludes {
            let family = if c.is_ipv6() { "ip6" } else { "ip" };
            let _ = writeln!(s, "\t\t{family} daddr {c} accept");
        }
        let _ = writeln!(s, "\t\tudp sport 68 udp dport 67 accept");
        let _ = writeln!(s, "\t\tudp sport 546 udp dport 547 accept");
        let _ = writeln!(
            s,
            "\t\ticmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report }} accept"
        );
        if self.allow_lan {
            let _ = writeln!(s, "\t\tip daddr {{ {LAN_V4} }} accept");
            let _ = writeln!(s, "\t\tip6 daddr {{ {LAN_V6} }} accept");
        }
        let _ = writeln!(s, "\t\tcounter reject with icmpx type admin-prohibited");
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "}}");
        for a in &self.exempt {
            s.push_str(&set_elements("add", *a));
        }
        s
    }
}

/// One `nft` command line (as a script line) adding or deleting `addr` in the exempt sets.
pub fn set_elements(verb: &str, addr: IpAddr) -> String {
    let set = if addr.is_ipv4() { "exempt4" } else { "exempt6" };
    format!("{verb} element inet {TABLE} {set} {{ {addr} }}\n")
}

/// The undo of [`KillSwitch::script`]: `nft delete table inet smolmix_killswitch`.
pub fn undo_args() -> Vec<String> {
    ["delete", "table", "inet", TABLE].iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(allow_lan: bool) -> KillSwitch {
        KillSwitch {
            tun: "smx0".into(),
            exempt: vec!["198.51.100.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            excludes: vec!["192.0.2.0/24".parse().unwrap()],
            allow_lan,
        }
    }

    #[test]
    fn the_table_accepts_the_tunnel_and_the_transport_then_rejects_everything() {
        let s = ks(false).script();
        let rules: Vec<&str> = s.lines().map(str::trim).collect();
        let pos =
            |needle: &str| rules.iter().position(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("{needle}\n{s}"));
        assert!(pos("oifname \"smx0\" accept") < pos("counter reject"));
        assert!(pos("meta mark 0x736d accept") < pos("counter reject"));
        assert!(pos("ip daddr @exempt4 accept") < pos("counter reject"));
        assert!(pos("ip daddr 192.0.2.0/24 accept") < pos("counter reject"));
        assert_eq!(rules.iter().filter(|l| l.contains("reject")).count(), 1);
        assert!(!s.contains("192.168.0.0/16"), "no LAN without --allow-lan");
        assert!(s.ends_with(
            "add element inet smolmix_killswitch exempt4 { 198.51.100.1 }\nadd element inet smolmix_killswitch exempt6 { 2001:db8::1 }\n"
        ));
        assert!(ks(true).script().contains("ip daddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16"));
    }

    #[test]
    fn an_interface_name_cannot_inject_rules() {
        let mut k = ks(false);
        k.tun = "x\" accept; oifname \"eth0".into();
        assert!(k.script().contains("oifname \"xacceptoifnameeth0\" accept"));
    }
}
