//! Fixtures are real `ip -j` output (iproute2 6.1, Linux 6.18), trimmed to a few keys per
//! object (unknown keys such as `mtu` and `address` stay, to show they are ignored):
//!
//! * `ns-*.json`: a throwaway namespace built with `ip -n NS -batch` for every interface kind
//!   this kernel has: docker0 (bridge, veth ports, one peer in another namespace), virbr0
//!   (bridge, tap port, plus 10.66.0.1/0), br-lan (bridge with a non-veth port, the IPv4
//!   uplink; one `noprefixroute` address), ve-ctr (unenslaved veth, nspawn-like), eth0c
//!   (unenslaved veth, the IPv6 uplink: a host inside a container), mv0 (macvlan, 100.64/10),
//!   tap0, smx0 and tun1 (`peer`), vethbad (8.8.8.8/0 and 10.3.0.1/7), lo. There is no
//!   `dummy` module on this kernel.
//! * `host-*.json`: this machine's own interfaces, read only: a virtio NIC (no linkinfo), ifb.

use super::*;

const NS: IpJson<'static> = IpJson {
    links: include_str!("fixtures/ns-links.json"),
    addrs: include_str!("fixtures/ns-addrs.json"),
    default4: include_str!("fixtures/ns-default4.json"),
    default6: include_str!("fixtures/ns-default6.json"),
};

const HOST: IpJson<'static> = IpJson {
    links: include_str!("fixtures/host-links.json"),
    addrs: include_str!("fixtures/host-addrs.json"),
    default4: include_str!("fixtures/host-default4.json"),
    default6: include_str!("fixtures/host-default6.json"),
};

fn nets(list: &[(&str, &str)]) -> Vec<Net> {
    list.iter().map(|(i, c)| Net { ifname: i.to_string(), cidr: c.parse().unwrap() }).collect()
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

/// A synthetic interface: name, `info_kind`, `master`, addresses with prefix lengths.
type Iface<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [(&'a str, u32)]);

/// Links and addresses for a synthetic host, every interface up.
fn host(ifaces: &[Iface<'_>]) -> (String, String) {
    let mut links = Vec::new();
    let mut addrs = Vec::new();
    for (i, (name, kind, master, list)) in ifaces.iter().enumerate() {
        let mut l = serde_json::json!({"ifindex": i + 1, "ifname": name, "flags": ["BROADCAST", "UP"]});
        if let Some(k) = kind {
            l["linkinfo"] = serde_json::json!({"info_kind": k});
        }
        if let Some(m) = master {
            l["master"] = serde_json::json!(m);
        }
        links.push(l);
        let info: Vec<_> = list
            .iter()
            .map(|(a, len)| {
                let family = if a.contains(':') { "inet6" } else { "inet" };
                serde_json::json!({"family": family, "local": a, "prefixlen": len})
            })
            .collect();
        addrs.push(serde_json::json!({"ifindex": i + 1, "ifname": name, "addr_info": info}));
    }
    (serde_json::to_string(&links).unwrap(), serde_json::to_string(&addrs).unwrap())
}

fn classify_host(ifaces: &[Iface<'_>]) -> LocalNets {
    let (links, addrs) = host(ifaces);
    classify(&IpJson { links: &links, addrs: &addrs, default4: "[]", default6: "[]" }, "smx0").unwrap()
}

#[test]
fn the_namespace_capture_is_classified() {
    let n = classify(&NS, "smx0").unwrap();
    assert_eq!(
        n.internal.nets,
        nets(&[
            ("ve-ctr", "10.0.0.0/24"),
            ("ve-ctr", "169.254.0.0/16"),
            ("docker0", "172.17.0.0/16"),
            ("virbr0", "192.168.122.0/24"),
            ("docker0", "fd00:d0c::/64"),
        ])
    );
    assert_eq!(
        n.lan.nets,
        nets(&[
            ("tun1", "10.8.0.5/32"),
            ("eth0c", "10.88.0.0/16"),
            ("tap0", "10.200.0.4/30"),
            ("br-lan", "192.168.1.0/24"),
            ("br-lan", "192.168.7.0/24"),
            ("br-lan", "fd12:3456::/64"),
        ])
    );
    assert_eq!(
        n.outside,
        nets(&[
            ("vethbad", "0.0.0.0/0"),
            ("virbr0", "0.0.0.0/0"),
            ("vethbad", "10.0.0.0/7"),
            ("mv0", "100.64.0.0/10"),
            ("br-lan", "2001:db8:1::/64"),
        ])
    );
    assert_eq!((n.unusable, n.internal.over_cap, n.lan.over_cap), (0, 0, 0));
    assert_eq!(n.internal.ifnames(), ["docker0", "ve-ctr", "virbr0"]);
    assert_eq!(n.lan.ifnames(), ["br-lan", "eth0c", "tap0", "tun1"]);
    assert_eq!(n.internal.v6(), cidrs(&["fd00:d0c::/64"]));
}

#[test]
fn allow_lan_adds_the_lan_to_the_throws_and_nothing_else() {
    let n = classify(&NS, "smx0").unwrap();
    let internal = cidrs(&["10.0.0.0/24", "169.254.0.0/16", "172.17.0.0/16", "192.168.122.0/24", "fd00:d0c::/64"]);
    assert_eq!(n.throws(false), internal);
    let all = n.throws(true);
    assert_eq!(all.len(), internal.len() + 6);
    assert!(!all.iter().any(|c| c.prefix_len() < 7), "{all:?}");
}

#[test]
fn the_tun_is_never_a_network_of_either_class() {
    let n = classify(&NS, "tun1").unwrap();
    let all: Vec<&Net> = n.internal.nets.iter().chain(&n.lan.nets).chain(&n.outside).collect();
    assert!(!all.iter().any(|x| x.ifname == "tun1"));
    // smx0 is just another tun when it is not ours.
    assert!(n.lan.nets.contains(&nets(&[("smx0", "fd6d:6978::2/128")])[0]));
}

#[test]
fn a_physical_nic_is_lan_and_a_public_lan_prefix_is_not_thrown() {
    let n = classify(&HOST, "smx0").unwrap();
    assert_eq!(n.internal, Nets::default());
    assert_eq!(n.lan.nets, nets(&[("eth0", "fd00::/64")]));
    assert_eq!(n.outside, nets(&[("eth0", "192.0.2.0/24")]));
}

#[test]
fn a_bridge_is_internal_only_while_every_port_is_veth_or_tap() {
    let br = ("br0", Some("bridge"), None, &[("10.5.0.1", 24)][..]);
    let veth = ("veth0", Some("veth"), Some("br0"), &[][..]);
    let tap = ("vnet0", Some("tun"), Some("br0"), &[][..]);
    assert_eq!(classify_host(&[br, veth, tap]).internal.ifnames(), ["br0"]);
    assert_eq!(classify_host(&[br]).internal.ifnames(), ["br0"], "no port yet");
    for port_kind in [None, Some("vlan"), Some("bond"), Some("macvlan")] {
        let nic = ("enp3s0", port_kind, Some("br0"), &[][..]);
        let n = classify_host(&[br, veth, nic]);
        assert_eq!(n.lan.ifnames(), ["br0"], "{port_kind:?}");
    }
}

#[test]
fn standalone_taps_tuns_and_uplinks_are_lan() {
    let n = classify_host(&[
        ("zt0", Some("tun"), None, &[("10.147.17.3", 24)]),
        ("wg0", Some("wireguard"), None, &[("10.66.0.2", 24)]),
        ("wlp2s0", None, None, &[("192.168.0.10", 24)]),
        ("ve-web", Some("veth"), None, &[("10.0.0.1", 28)]),
    ]);
    assert_eq!(n.lan.ifnames(), ["wg0", "wlp2s0", "zt0"]);
    assert_eq!(n.internal.ifnames(), ["ve-web"]);
    // The same veth carrying a default route (multipath, as `ip -j` writes it) is the uplink.
    let (links, addrs) = host(&[("eth0", Some("veth"), None, &[("172.18.0.5", 16)])]);
    let multipath = r#"[{"dst":"default","metric":1024,"flags":[],"nexthops":[{"gateway":"fe80::1","dev":"eth0","weight":1,"flags":[]}]}]"#;
    let unreachable = r#"[{"type":"unreachable","dst":"default","metric":9999,"flags":[]}]"#;
    let n = classify(&IpJson { links: &links, addrs: &addrs, default4: unreachable, default6: multipath }, "").unwrap();
    assert_eq!(n.lan.nets, nets(&[("eth0", "172.18.0.0/16")]));
}

#[test]
fn down_loopback_enslaved_and_vrf_interfaces_give_nothing() {
    let links = r#"[
        {"ifindex":1,"ifname":"lo0","flags":["LOOPBACK","UP"]},
        {"ifindex":2,"ifname":"br0","flags":["UP"],"linkinfo":{"info_kind":"bridge"}},
        {"ifindex":3,"ifname":"veth0","flags":["UP"],"master":"br0","linkinfo":{"info_kind":"veth"}},
        {"ifindex":4,"ifname":"vrf-blue","flags":["UP"],"linkinfo":{"info_kind":"vrf"}},
        {"ifindex":5,"ifname":"eth1","flags":["UP"],"master":"vrf-blue"},
        {"ifindex":6,"ifname":"eth2","flags":["BROADCAST","LOWER_UP"]}
    ]"#;
    let addr = |i: u32, name: &str| {
        format!(
            r#"{{"ifindex":{i},"ifname":"{name}","addr_info":[{{"family":"inet","local":"10.{i}.0.1","prefixlen":24}}]}}"#
        )
    };
    let addrs = format!(
        "[{}]",
        [(1, "lo0"), (3, "veth0"), (4, "vrf-blue"), (5, "eth1"), (6, "eth2")].map(|(i, n)| addr(i, n)).join(",")
    );
    let n = classify(&IpJson { links, addrs: &addrs, default4: "", default6: "" }, "smx0").unwrap();
    assert_eq!(n, LocalNets::default());
}

#[test]
fn an_internal_prefix_that_covers_the_lan_is_lan() {
    let n = classify_host(&[
        ("docker0", Some("bridge"), None, &[("10.0.0.1", 8), ("172.17.0.1", 16)]),
        ("eth0", None, None, &[("10.1.2.3", 24)]),
        ("virbr0", Some("bridge"), None, &[("10.1.2.129", 25)]),
    ]);
    assert_eq!(n.internal.nets, nets(&[("virbr0", "10.1.2.128/25"), ("docker0", "172.17.0.0/16")]));
    assert_eq!(n.lan.nets, nets(&[("docker0", "10.0.0.0/8"), ("eth0", "10.1.2.0/24")]));
}

#[test]
fn absurd_prefixes_are_outside_or_unusable_never_thrown() {
    let n = classify_host(&[(
        "br0",
        Some("bridge"),
        None,
        &[
            ("10.9.9.9", 0),
            ("172.16.0.1", 11),
            ("169.254.0.1", 15),
            ("fc00::1", 6),
            ("fe80::1", 64),
            ("fe80::1", 10),
            ("10.0.0.1", 33),
            ("fd00::1", 129),
            ("10.0.0.1", 4_000_000_000),
            ("not-an-address", 24),
            ("fd00::", 7),
            ("10.255.255.255", 32),
        ],
    )]);
    assert_eq!(n.internal.nets, nets(&[("br0", "10.255.255.255/32"), ("br0", "fc00::/7")]));
    let outside: Vec<String> = n.outside.iter().map(|x| x.cidr.to_string()).collect();
    assert_eq!(outside, ["0.0.0.0/0", "169.254.0.0/15", "172.0.0.0/11", "fc00::/6"]);
    assert_eq!(n.unusable, 4);
}

#[test]
fn address_entries_that_do_not_fit_are_skipped_or_counted() {
    let links = r#"[{"ifindex":2,"ifname":"eth0","flags":["UP"]}]"#;
    let addrs = r#"[
        {"ifindex":2,"ifname":"eth0","addr_info":[{},{"family":"inet","local":"fd00::1","prefixlen":24},
            {"family":"inet6","local":"fd00::1","prefixlen":64,"dadfailed":true},
            {"family":"mpls","local":"10.0.0.1","prefixlen":8},
            {"family":"inet","local":"10.1.0.1","address":"10.1.0.2","prefixlen":32},
            {"family":"inet","prefixlen":24}]},
        {"ifindex":3,"ifname":"eth1","addr_info":[{"family":"inet","local":"10.2.0.1","prefixlen":24}]},
        {"ifindex":2,"ifname":"renamed","addr_info":[{"family":"inet","local":"10.3.0.1","prefixlen":24}]}
    ]"#;
    let n = classify(&IpJson { links, addrs, default4: "[]", default6: "[]" }, "smx0").unwrap();
    assert_eq!(n.lan.nets, nets(&[("eth0", "10.1.0.2/32")]), "the peer's prefix");
    assert_eq!(n.unusable, 4, "v6 text as inet, no address, two raced interfaces");
}

#[test]
fn hostile_documents_are_errors_not_panics() {
    let ok = r#"[{"ifindex":1,"ifname":"eth0"}]"#;
    let deep = "[".repeat(100_000);
    let huge = format!("[{}]", " ".repeat(MAX_JSON));
    let bad_links = [
        "not json",
        "{}",
        r#"["eth0"]"#,
        r#"[{"ifname":"eth0"}]"#,
        r#"[{"ifindex":-1,"ifname":"eth0"}]"#,
        r#"[{"ifindex":1,"ifname":"eth0","flags":"UP"}]"#,
        r#"[{"ifindex":1,"ifname":"eth0"},{"ifindex":1,"ifname":"eth1"}]"#,
        r#"[{"ifindex":1,"ifname":"eth0"},{"ifindex":2,"ifname":"eth0"}]"#,
        r#"[{"ifindex":1,"ifname":"eth0"}"#,
        &deep,
        &huge,
    ];
    for links in bad_links {
        let e = classify(&IpJson { links, addrs: "[]", default4: "[]", default6: "[]" }, "smx0").unwrap_err();
        assert!(!matches!(e, LanError::Host(_)), "{e}");
    }
    let e = classify(&IpJson { links: ok, addrs: "[]", default4: "[]", default6: &huge }, "").unwrap_err();
    assert!(matches!(e, LanError::TooLarge { what, .. } if what == COMMANDS[3]), "{e}");
    let e = classify(
        &IpJson {
            links: ok,
            addrs: r#"[{"ifindex":1,"ifname":"eth0","addr_info":[{"prefixlen":"24"}]}]"#,
            default4: "[]",
            default6: "[]",
        },
        "",
    )
    .unwrap_err();
    assert!(e.to_string().contains("ip -j addr show"), "{e}");
}

#[test]
fn each_class_is_capped_and_the_excess_counted() {
    let names: Vec<String> = (0..300).map(|i| format!("veth{i}")).collect();
    let addrs: Vec<String> = (0..300).map(|i| format!("10.{}.{}.1", i / 256, i % 256)).collect();
    let ifaces: Vec<_> =
        names.iter().zip(&addrs).map(|(n, a)| (n.as_str(), Some("veth"), None, vec![(a.as_str(), 24)])).collect();
    let ifaces: Vec<_> = ifaces.iter().map(|(n, k, m, a)| (*n, *k, *m, a.as_slice())).collect();
    let n = classify_host(&ifaces);
    assert_eq!((n.internal.nets.len(), n.internal.over_cap), (MAX_NETS, 300 - MAX_NETS));
    assert_eq!(n.internal.nets[0].cidr.to_string(), "10.0.0.0/24", "lowest addresses kept");
}

/// Root only (skipped otherwise, as profile/tests.rs does): [`read`]'s command lines work on
/// this iproute2, inside a throwaway namespace (`ip` inherits the thread's namespace).
#[test]
fn read_runs_the_commands_in_a_namespace() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to create a network namespace");
        return;
    }
    let name = format!("smx-lanr{}", std::process::id());
    run("ip", &["netns", "add", &name]).unwrap();
    let result = crate::system::netns::in_netns(&name, || {
        for cmd in [
            "link add br0 type bridge",
            "addr add 172.30.0.1/24 dev br0",
            "addr add 192.0.2.1/24 dev br0",
            "link set br0 up",
        ] {
            run("ip", &cmd.split(' ').collect::<Vec<_>>()).unwrap();
        }
        read("smx0")
    });
    let _ = run("ip", &["netns", "del", &name]);
    let n = result.unwrap().unwrap();
    assert_eq!(n.internal.nets, nets(&[("br0", "172.30.0.0/24")]));
    assert_eq!(n.outside, nets(&[("br0", "192.0.2.0/24")]));
    assert_eq!(n.lan, Nets::default());
}
