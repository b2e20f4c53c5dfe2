use super::*;
use crate::system::host::run;
use crate::system::netns::in_netns;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

// Captured on x86-64 (Linux 6.18) from a socket bound to the same groups, in a throwaway
// namespace: `ip addr add 192.0.2.1/24 dev cap0` and `ip addr add 2001:db8::1/64 dev cap0`.
/// RTM_NEWADDR, AF_INET, 80 bytes.
const NEWADDR4: &str = "50000000140000000b58176bf21a0000021880001400000008000100c000020108000200c0000201090003006361703000000000080008008000000014000600ffffffffffffffff8880010088800100";
/// RTM_NEWROUTE, AF_INET (the local route, table 255), 60 bytes.
const NEWROUTE4: &str = "3c00000018000006000000000000000002200000ff02fe020000000008000f00ff00000008000100c000020108000700c00002010800040014000000";
/// RTM_DELADDR, AF_INET6, 72 bytes.
const DELADDR6: &str = "480000001500000000000000000000000a408200140000001400010020010db800000000000000000000000114000600ffffffffffffffff8a8001008a8001000800080082000000";

/// A message of `kind` with `payload`, laid out as the kernel does (native endian, padded).
fn msg(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + payload.len()) as u32;
    let mut m = len.to_ne_bytes().to_vec();
    m.extend(kind.to_ne_bytes());
    m.extend([0; 10]);
    m.extend(payload);
    m.resize((m.len() + 3) & !3, 0);
    m
}

#[test]
fn constants_match_the_kernel_headers() {
    assert_eq!(NLMSG_HDRLEN, std::mem::size_of::<libc::nlmsghdr>());
    assert_eq!(i32::from(NLMSG_OVERRUN), libc::NLMSG_OVERRUN);
    let rtm = [RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE];
    let libc_rtm = [
        libc::RTM_NEWLINK,
        libc::RTM_DELLINK,
        libc::RTM_NEWADDR,
        libc::RTM_DELADDR,
        libc::RTM_NEWROUTE,
        libc::RTM_DELROUTE,
    ];
    assert_eq!(rtm, libc_rtm);
    assert_eq!((i32::from(AF_INET), i32::from(AF_INET6)), (libc::AF_INET, libc::AF_INET6));
    let groups = libc::RTMGRP_LINK
        | libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_ROUTE;
    assert_eq!(GROUPS, groups as u32);
}

#[cfg(target_endian = "little")]
#[test]
fn captured_messages_are_recognised() {
    let c = parse(&hex(NEWADDR4));
    assert_eq!(c, Changes { addr4: true, messages: 1, ..Changes::default() });
    let c = parse(&hex(NEWROUTE4));
    assert_eq!(c, Changes { route4: true, messages: 1, ..Changes::default() });
    let c = parse(&hex(DELADDR6));
    assert_eq!(c, Changes { addr6: true, messages: 1, ..Changes::default() });
    // Several messages in one datagram, as a dump or a batch would send them.
    let mut all = hex(NEWADDR4);
    all.extend(hex(NEWROUTE4));
    all.extend(hex(DELADDR6));
    let c = parse(&all);
    assert_eq!(c.to_string(), "addr4 addr6 route4 (3 messages)");
}

#[test]
fn kinds_and_families_are_told_apart() {
    assert!(parse(&msg(RTM_DELLINK, &[0; 16])).link);
    assert!(parse(&msg(RTM_NEWROUTE, &[10, 64])).route6);
    assert!(parse(&msg(RTM_DELROUTE, &[2])).route4);
    // Not subscribed or not ours (NLMSG_DONE, RTM_NEWNEIGH, an MPLS route): counted, no change.
    for (kind, payload) in [(3u16, &[0u8; 4][..]), (28, &[2][..]), (24, &[28][..])] {
        let c = parse(&msg(kind, payload));
        assert!(!c.any() && c.messages == 1, "{kind}: {c}");
    }
    assert!(!parse(&[]).any());
}

#[test]
fn bad_lengths_and_overruns_ask_for_a_resync() {
    let good = msg(RTM_NEWADDR, &[2, 24, 0, 0]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short header", good[..15].to_vec()),
        ("length 0", [0u8, 0, 0, 0, 20, 0].iter().copied().chain([0; 10]).collect()),
        ("length past the datagram", [&[200u8, 0, 0, 0][..], &good[4..]].concat()),
        ("address without family", msg(RTM_NEWADDR, &[])),
        ("route without family", msg(RTM_DELROUTE, &[])),
        ("overrun message", msg(NLMSG_OVERRUN, &[0; 4])),
        ("trailing junk", [&good[..], &[1, 2, 3][..]].concat()),
    ];
    for (what, bytes) in cases {
        assert!(parse(&bytes).resync, "{what}");
    }
    // The last message may end without padding.
    let unpadded = msg(RTM_NEWADDR, &[2, 24, 0, 0, 9]);
    assert!(!parse(&unpadded[..NLMSG_HDRLEN + 5]).resync);
}

#[test]
fn any_bytes_parse_without_panicking() {
    let mut all = hex(NEWADDR4);
    all.extend(hex(DELADDR6));
    for end in 0..=all.len() {
        let _ = parse(&all[..end]);
    }
    // A fixed-seed xorshift: reproducible junk, lengths included.
    let mut x: u64 = 0x0073_6d6f_6c6d_6978;
    let mut buf = vec![0u8; 512];
    for _ in 0..2000 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = (x as usize) % buf.len();
        let _ = parse(&buf[..n]);
    }
}

#[test]
fn merge_keeps_every_kind() {
    let mut c = Changes { link: true, messages: u32::MAX, ..Changes::default() };
    c.merge(Changes { route6: true, resync: true, messages: 5, ..Changes::default() });
    assert_eq!(c.to_string(), format!("link route6 resync ({} messages)", u32::MAX));
    assert_eq!(Changes::default().to_string(), "nothing (0 messages)");
}

/// A namespace for one test, deleted when dropped (also when the test fails).
struct TempNetns(String);

impl TempNetns {
    fn new(tag: &str) -> TempNetns {
        // 15 characters at most (IFNAMSIZ, netns.rs): "smx-nw" + tag + up to 7 pid digits.
        let name = format!("smx-nw{tag}{}", std::process::id());
        run("ip", &["netns", "add", &name]).unwrap();
        TempNetns(name)
    }
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend(args);
        run("ip", &all).unwrap();
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root to create network namespaces");
    }
    root
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

const WAIT: Duration = Duration::from_secs(5);

/// Runs as root only (skipped otherwise, as profile/tests.rs does): changes inside the
/// namespace the socket was opened in are seen, those of another namespace are not.
#[test]
fn sees_the_changes_of_its_own_namespace_only() {
    if !root() {
        return;
    }
    let (ns, other) = (TempNetns::new("a"), TempNetns::new("b"));
    let fd = in_netns(&ns.0, socket).unwrap().unwrap();
    rt().block_on(async {
        let mut w = NetWatch::from_socket(fd).unwrap();
        ns.ip(&["link", "set", "lo", "up"]);
        let c = timeout(WAIT, w.changed()).await.unwrap().unwrap();
        assert!(c.link && !c.resync, "{c}");
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "lo"]);
        let c = timeout(WAIT, w.changed()).await.unwrap().unwrap();
        assert!(c.addr4 && c.route4 && !c.link && !c.addr6, "{c}");
        ns.ip(&["addr", "add", "2001:db8::1/64", "dev", "lo"]);
        let c = timeout(WAIT, w.changed()).await.unwrap().unwrap();
        assert!(c.addr6 && !c.addr4, "{c}");
        other.ip(&["link", "set", "lo", "up"]);
        other.ip(&["addr", "add", "192.0.2.2/24", "dev", "lo"]);
        let quiet = timeout(Duration::from_millis(500), w.changed()).await;
        assert!(quiet.is_err(), "saw another namespace: {quiet:?}");
    });
}

/// Root only: a burst that overflows a tiny socket buffer is one resync, then quiet, and the
/// socket keeps working (with so small a buffer, one address's messages may overflow it again).
#[test]
fn an_overrun_burst_is_one_resync_and_then_quiet() {
    if !root() {
        return;
    }
    let ns = TempNetns::new("c");
    // The kernel raises a tiny buffer to its minimum (about 2 KiB): a few messages fill it.
    let fd = in_netns(&ns.0, || socket_with(1)).unwrap().unwrap();
    rt().block_on(async {
        let mut w = NetWatch::from_socket(fd).unwrap();
        ns.ip(&["link", "set", "lo", "up"]);
        let batch: String = (1..=60).map(|i| format!("addr add 10.9.{i}.1/24 dev lo\n")).collect();
        let path = std::env::temp_dir().join(format!("{}.batch", ns.0));
        std::fs::write(&path, batch).unwrap();
        ns.ip(&["-batch", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        let c = timeout(WAIT, w.changed()).await.unwrap().unwrap();
        assert!(c.resync, "{c}");
        let quiet = timeout(Duration::from_millis(300), w.changed()).await;
        assert!(quiet.is_err(), "the burst was reported twice: {quiet:?}");
        ns.ip(&["addr", "del", "10.9.1.1/24", "dev", "lo"]);
        let c = timeout(WAIT, w.changed()).await.unwrap().unwrap();
        assert!(c.addr4, "{c}");
    });
}

/// Root only: events 50 ms apart for 1.5 s. The first report comes at the cap (while they
/// still arrive), the rest as one more report, then nothing.
#[test]
fn a_long_burst_is_capped_then_coalesced() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if !root() {
        return;
    }
    let ns = TempNetns::new("d");
    let fd = in_netns(&ns.0, socket).unwrap().unwrap();
    ns.ip(&["link", "set", "lo", "up"]);
    rt().block_on(async {
        let mut w = NetWatch::from_socket(fd).unwrap();
        (w.quiet, w.max_wait) = (Duration::from_millis(400), Duration::from_secs(1));
        let _ = timeout(Duration::from_millis(500), w.changed()).await; // lo going up
        let done = Arc::new(AtomicBool::new(false));
        let (name, flag) = (ns.0.clone(), done.clone());
        let writer = std::thread::spawn(move || {
            for i in 1..=30 {
                run("ip", &["-n", &name, "addr", "add", &format!("10.7.{i}.1/24"), "dev", "lo"]).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            flag.store(true, Ordering::SeqCst);
        });
        let first = timeout(WAIT, w.changed()).await.unwrap().unwrap();
        assert!(first.addr4 && !done.load(Ordering::SeqCst), "not capped: {first}");
        // Read while the writer goes on: only the quiet after its last change ends this one.
        let rest = timeout(WAIT, w.changed()).await.unwrap().unwrap();
        assert!(rest.addr4 && done.load(Ordering::SeqCst), "not coalesced: {rest}");
        writer.join().unwrap();
        let quiet = timeout(Duration::from_millis(800), w.changed()).await;
        assert!(quiet.is_err(), "the burst's tail was split: {quiet:?}");
    });
}

/// Root only: a call dropped while the burst settles (a `select!` took another branch) loses
/// nothing: the next call returns what it had read.
#[test]
fn a_dropped_call_loses_nothing() {
    if !root() {
        return;
    }
    let ns = TempNetns::new("e");
    let fd = in_netns(&ns.0, socket).unwrap().unwrap();
    rt().block_on(async {
        let mut w = NetWatch::from_socket(fd).unwrap();
        w.quiet = Duration::from_millis(500);
        ns.ip(&["addr", "add", "10.6.0.1/24", "dev", "lo"]);
        assert!(timeout(Duration::from_millis(200), w.changed()).await.is_err(), "returned before the quiet");
        let c = timeout(WAIT, w.changed()).await.unwrap().unwrap();
        assert!(c.addr4, "{c}");
    });
}
