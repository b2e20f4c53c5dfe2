//! The kill switch: an nftables table that lets nothing leave the host but through the tunnel.
//!
//! Routing alone fails open in ways a firewall does not: a program that binds to the physical
//! interface (`SO_BINDTODEVICE`, `curl --interface eth0`, `ping -I eth0`) makes the kernel skip
//! routes whose device differs, so our table's `dev smx0` route is passed over and `main`
//! answers; so does a socket with a routing mark of its own. The table below is consulted for
//! every packet the host sends or forwards, whatever route it took:
//!
//! ```text
//!  table inet smolmix_killswitch
//!   output (filter hook, policy accept; the last rule rejects):
//!    oifname lo | oifname <tun>               accept   loopback, the tunnel itself
//!    meta mark 0x736d                         accept   the transport's own sockets (mark.rs)
//!    tcp/udp dport 53, 853, 5355              reject   DNS, DNS over TLS and LLMNR go through
//!                                                      the tunnel or nowhere, whatever follows
//!    oifname . daddr @internal4 / @internal6  accept   the host's own container and VM bridges
//!    daddr <each --exclude>                   accept   what the user keeps off the tunnel
//!    DHCPv4 68→67 to 255.255.255.255 or
//!    oifname . daddr @link4, DHCPv6 546→547
//!    to ff02::1:2 or
//!    fe80::/10, from root (and the DHCP
//!    clients' service users) only;
//!    ICMPv6 router/neighbour solicitation,
//!    neighbour advertisement, MLD reports     accept   what the link itself needs
//!    with --allow-lan: RFC 1918, link-local,
//!    multicast, fc00::/7, fe80::/10, ff00::/8 accept
//!    counter reject (admin prohibited)                 everything else: an immediate error
//!   forward (filter hook): from or into the tunnel, into the host's own bridges, with
//!    --allow-lan to the LAN ranges; everything else rejected
//! ```
//!
//! Nothing is accepted by the address of a remote peer the network told us about: the
//! directory, the gateways and the exit are reached by the transport's marked sockets, and the
//! sets `internal4/6` and `link4` hold only the host's own interfaces with their connected
//! prefixes (lan.rs), refreshed whenever they change ([`nets_script`]). They match interface
//! *and* address: a program bound to the LAN's interface must not reach a container's prefix
//! there, nor a route in `main` move part of a bridge's prefix to another interface.
//!
//! Why DNS is rejected before anything else that is not the tunnel: with `--allow-lan` a LAN
//! resolver (or resolved's per-link DNS on the Wi-Fi, or LLMNR's multicast) would otherwise see
//! lookups that belong in the tunnel. Why forwarded traffic is covered: a container, a VM or a
//! LAN behind this host routes through us, and its packets must go into the tunnel (the
//! pipeline maps every local source onto the allocation) or nowhere, never out of the physical
//! link. Why DHCP only from root: any local user could otherwise send UDP 68→67 anywhere.
//!
//! It is installed before the first packet to the directory or a gateway, and an `up` that
//! finds one left by a crash, a restart or the boot-time lockdown replaces it in one nft
//! transaction ([`KillSwitch::script`]), so there is never a moment without it. Journalled like
//! every other change ([`super::journal`]: `delete table`), it outlives the process: after
//! SIGKILL, OOM or a panic it keeps the host closed until `smolmix-vpn down`. It is for the full
//! tunnel only: with `--route` (split) the rest of the traffic is meant to go out directly, and
//! in per-app mode the namespace has no other way out to begin with.

use std::fmt::Write as _;

use super::lan::{LocalNets, Net};
use super::mark::FWMARK;
use super::routes::Cidr;

/// nftables table (family inet) that holds the kill switch.
pub const TABLE: &str = "smolmix_killswitch";

/// Ports whose traffic goes through the tunnel or nowhere: DNS (53), DNS over TLS (853,
/// RFC 7858) and LLMNR (5355, RFC 4795), which systemd-resolved sends on every link.
const DNS_PORTS: &str = "53, 853, 5355";

/// What the kill switch lets through besides the TUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillSwitch {
    /// The TUN interface: everything leaving by it is allowed. `None` before there is one
    /// (`smolmix-vpn block`): then nothing is let out by an interface's name at all, so a
    /// profile whose TUN name is taken (the uplink's, by a typo) still blocks.
    pub tun: Option<String>,
    /// `--exclude` prefixes: the user asked for these to be reached directly.
    pub excludes: Vec<Cidr>,
    /// `--allow-lan`: local networks stay reachable.
    pub allow_lan: bool,
    /// Users whose DHCP is let through: root, and the service users of DHCP clients that drop
    /// privileges (systemd-networkd's). Read once at install ([`dhcp_uids`]).
    pub dhcp_uids: Vec<u32>,
    /// The host's own networks at install time; kept in step later by [`nets_script`].
    pub nets: HostNets,
}

/// The host's own interfaces and prefixes the kill switch needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNets {
    /// Connected networks of the host's own container and VM bridges: reached directly in
    /// both modes (host ↔ container, published ports).
    pub internal: Vec<Net>,
    /// Every connected IPv4 network of the host's interfaces: where a DHCP server that renews
    /// by unicast can be.
    pub link4: Vec<Net>,
}

impl From<&LocalNets> for HostNets {
    fn from(nets: &LocalNets) -> HostNets {
        let link4 = nets.lan.nets.iter().chain(&nets.internal.nets).filter(|n| !n.cidr.is_ipv6()).cloned().collect();
        HostNets { internal: nets.internal.nets.clone(), link4 }
    }
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
    /// The `nft -f` script that creates the table, replacing one already there in the same
    /// transaction (declare, delete, create): atomic, so a table left by a crashed or earlier
    /// run is never absent for an instant, and the new rules are all there or none.
    pub fn script(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "table inet {TABLE}");
        let _ = writeln!(s, "delete table inet {TABLE}");
        let _ = writeln!(s, "table inet {TABLE} {{");
        for (set, ty) in [("internal4", "ipv4_addr"), ("internal6", "ipv6_addr"), ("link4", "ipv4_addr")] {
            let _ = writeln!(s, "\tset {set} {{ type ifname . {ty}; flags interval; }}");
        }
        let tun = self.tun.as_deref().map(quoted);
        // The host's own bridges, and the LAN when asked: the same in both chains.
        let mut local = vec![
            "oifname . ip daddr @internal4 accept".to_string(),
            "oifname . ip6 daddr @internal6 accept".to_string(),
        ];
        let lan = [format!("ip daddr {{ {LAN_V4} }} accept"), format!("ip6 daddr {{ {LAN_V6} }} accept")];
        let mut output = vec!["oifname \"lo\" accept".to_string()];
        output.extend(tun.iter().map(|t| format!("oifname {t} accept")));
        output.extend([
            format!("meta mark {FWMARK:#x} accept"),
            format!("meta l4proto {{ tcp, udp }} th dport {{ {DNS_PORTS} }} counter reject with icmpx type admin-prohibited"),
        ]);
        output.extend(local.iter().cloned());
        for c in &self.excludes {
            let family = if c.is_ipv6() { "ip6" } else { "ip" };
            output.push(format!("{family} daddr {c} accept"));
        }
        let uids = self.uid_set();
        output.extend([
            format!("meta skuid {uids} udp sport 68 udp dport 67 ip daddr 255.255.255.255 accept"),
            format!("meta skuid {uids} udp sport 68 udp dport 67 oifname . ip daddr @link4 accept"),
            format!("meta skuid {uids} udp sport 546 udp dport 547 ip6 daddr {{ ff02::1:2, fe80::/10 }} accept"),
            "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report } accept".to_string(),
        ]);
        if self.allow_lan {
            output.extend(lan.iter().cloned());
            local.extend(lan);
        }
        let mut forward: Vec<String> =
            tun.iter().flat_map(|t| [format!("iifname {t} accept"), format!("oifname {t} accept")]).collect();
        forward.extend(local);
        chain(&mut s, "output", &output);
        chain(&mut s, "forward", &forward);
        let _ = writeln!(s, "}}");
        s.push_str(&nets_script(&self.nets));
        s
    }

    /// `{ 0, 998 }`: root first, duplicates removed.
    fn uid_set(&self) -> String {
        let mut uids = vec![0u32];
        for u in &self.dhcp_uids {
            if !uids.contains(u) {
                uids.push(*u);
            }
        }
        let list: Vec<String> = uids.iter().map(u32::to_string).collect();
        format!("{{ {} }}", list.join(", "))
    }
}

/// A filter chain on `hook` with `rules`, then a counted reject of everything else.
fn chain(s: &mut String, hook: &str, rules: &[String]) {
    let _ = writeln!(s, "\tchain {hook} {{");
    let _ = writeln!(s, "\t\ttype filter hook {hook} priority filter; policy accept;");
    for r in rules {
        let _ = writeln!(s, "\t\t{r}");
    }
    let _ = writeln!(s, "\t\tcounter reject with icmpx type admin-prohibited");
    let _ = writeln!(s, "\t}}");
}

/// The `nft -f` lines that make the sets hold `nets`, replacing what they held, in one
/// transaction (flush and add together: no instant with the sets empty).
pub fn nets_script(nets: &HostNets) -> String {
    let mut s = String::new();
    let v4 = |n: &&Net| !n.cidr.is_ipv6();
    let v6 = |n: &&Net| n.cidr.is_ipv6();
    let sets: [(&str, Vec<&Net>); 3] = [
        ("internal4", nets.internal.iter().filter(v4).collect()),
        ("internal6", nets.internal.iter().filter(v6).collect()),
        ("link4", nets.link4.iter().filter(v4).collect()),
    ];
    for (set, elems) in sets {
        let _ = writeln!(s, "flush set inet {TABLE} {set}");
        let mut list: Vec<String> = elems.iter().map(|n| format!("{} . {}", quoted(&n.ifname), n.cidr)).collect();
        // The same pair twice is an error inside one `add element`.
        list.sort();
        list.dedup();
        if !list.is_empty() {
            let _ = writeln!(s, "add element inet {TABLE} {set} {{ {} }}", list.join(", "));
        }
    }
    s
}

/// Root and the service users of DHCP clients that send as themselves: systemd-networkd runs
/// as `systemd-network`, dhcpcd's privilege separation as `dhcpcd`. NetworkManager and
/// dhclient send as root. Users that do not exist on this host are skipped.
pub fn dhcp_uids() -> Vec<u32> {
    let mut uids = vec![0];
    for name in ["systemd-network", "dhcpcd"] {
        if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
            uids.push(u.uid.as_raw());
        }
    }
    uids
}

/// The undo of [`KillSwitch::script`]: `nft delete table inet smolmix_killswitch`.
pub fn undo_args() -> Vec<String> {
    ["delete", "table", "inet", TABLE].iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(ifname: &str, cidr: &str) -> Net {
        Net { ifname: ifname.into(), cidr: cidr.parse().unwrap() }
    }

    fn ks(allow_lan: bool) -> KillSwitch {
        KillSwitch {
            tun: Some("smx0".into()),
            excludes: vec!["192.0.2.0/24".parse().unwrap()],
            allow_lan,
            dhcp_uids: vec![998, 0],
            nets: HostNets {
                internal: vec![net("docker0", "172.17.0.0/16"), net("docker0", "fd00:dc::/64")],
                link4: vec![net("eth0", "198.51.100.0/24")],
            },
        }
    }

    /// The rules of one chain, trimmed, in order.
    fn chain<'a>(script: &'a str, name: &str) -> Vec<&'a str> {
        let start = format!("chain {name} {{");
        script.lines().map(str::trim).skip_while(|l| *l != start).skip(2).take_while(|l| *l != "}").collect()
    }

    #[test]
    fn the_output_chain_accepts_the_tunnel_and_the_transport_then_rejects_everything() {
        let s = ks(false).script();
        let rules = chain(&s, "output");
        let pos =
            |needle: &str| rules.iter().position(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("{needle}\n{s}"));
        let reject = rules.len() - 1;
        assert_eq!(rules[reject], "counter reject with icmpx type admin-prohibited");
        assert!(pos("oifname \"smx0\" accept") < pos("meta l4proto { tcp, udp } th dport { 53, 853, 5355 }"));
        assert!(pos("meta mark 0x736d accept") < pos("meta l4proto"));
        // DNS is refused before anything that is not the tunnel is accepted.
        let dns = pos("meta l4proto");
        for accept in ["oifname . ip daddr @internal4", "ip daddr 192.0.2.0/24", "meta skuid", "icmpv6"] {
            assert!(dns < pos(accept), "{accept}");
        }
        assert!(!s.contains("192.168.0.0/16"), "no LAN without --allow-lan");
        assert!(!s.contains("exempt"), "nothing accepted by a peer's address");
    }

    #[test]
    fn dhcp_only_from_root_and_the_dhcp_clients_users_to_the_link() {
        let s = ks(false).script();
        let dhcp: Vec<&str> = chain(&s, "output").into_iter().filter(|l| l.contains("dport 67")).collect();
        assert_eq!(
            dhcp,
            [
                "meta skuid { 0, 998 } udp sport 68 udp dport 67 ip daddr 255.255.255.255 accept",
                "meta skuid { 0, 998 } udp sport 68 udp dport 67 oifname . ip daddr @link4 accept",
            ]
        );
    }

    #[test]
    fn forwarded_traffic_goes_through_the_tunnel_or_nowhere() {
        let s = ks(false).script();
        let fwd = chain(&s, "forward");
        assert_eq!(
            fwd,
            [
                "iifname \"smx0\" accept",
                "oifname \"smx0\" accept",
                "oifname . ip daddr @internal4 accept",
                "oifname . ip6 daddr @internal6 accept",
                "counter reject with icmpx type admin-prohibited",
            ]
        );
        assert!(chain(&ks(true).script(), "forward").contains(&"ip daddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255 } accept"));
    }

    #[test]
    fn an_old_table_is_replaced_in_the_same_transaction_and_the_sets_filled() {
        let s = ks(true).script();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "table inet smolmix_killswitch",
                "delete table inet smolmix_killswitch",
                "table inet smolmix_killswitch {"
            ]
        );
        assert!(s.contains("ip daddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16"));
        assert!(s.ends_with(
            "flush set inet smolmix_killswitch internal4\n\
             add element inet smolmix_killswitch internal4 { \"docker0\" . 172.17.0.0/16 }\n\
             flush set inet smolmix_killswitch internal6\n\
             add element inet smolmix_killswitch internal6 { \"docker0\" . fd00:dc::/64 }\n\
             flush set inet smolmix_killswitch link4\n\
             add element inet smolmix_killswitch link4 { \"eth0\" . 198.51.100.0/24 }\n"
        ));
        // Empty sets are flushed, never given an empty (invalid) element list.
        assert_eq!(nets_script(&HostNets::default()).lines().filter(|l| l.starts_with("add")).count(), 0);
    }

    #[test]
    fn without_a_tun_nothing_is_let_out_by_an_interface_name() {
        let mut k = ks(false);
        k.tun = None;
        let s = k.script();
        // Loopback aside, no rule lets anything out (or through) by an interface's name.
        let by_name =
            |r: &&str| (r.starts_with("oifname \"") && *r != "oifname \"lo\" accept") || r.starts_with("iifname");
        assert!(!chain(&s, "output").iter().chain(&chain(&s, "forward")).any(by_name), "{s}");
        assert!(ks(false).script().contains("oifname \"smx0\" accept"), "control: with a TUN, its rule is there");
        assert!(chain(&s, "output").contains(&"oifname \"lo\" accept"));
    }

    #[test]
    fn an_interface_name_cannot_inject_rules() {
        let mut k = ks(false);
        k.tun = Some("x\" accept; oifname \"eth0".into());
        assert!(k.script().contains("oifname \"xacceptoifnameeth0\" accept"));
    }
}
