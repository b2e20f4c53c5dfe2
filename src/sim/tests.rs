//! The simulation's scenarios: each drives the production pipeline, link and exit double
//! through simulated time and fails if the behaviour it names is taken out.

use std::time::Duration;

use super::*;
use crate::exit::ImpairConfig;
use crate::ipr::bundle::LEN_PREFIX;
use crate::ipr::{Allocation, BUNDLE_BUDGET};
use crate::link::{LinkState, Loss};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const APP_PORT: u16 = 5000;

fn perfect() -> WireConfig {
    WireConfig { delay: 20 * MS, ..Default::default() }
}

fn sim(exit: ExitConfig) -> Sim {
    Sim::new(exit, perfect(), perfect(), 7)
}

/// Runs until the link is up; returns its allocation.
fn connected(s: &mut Sim) -> Allocation {
    assert!(s.run_until(30 * S, |s| s.link.allocation().is_some()), "no connect: {:?}", s.events);
    s.link.allocation().expect("up")
}

fn datagram(payload: &[u8]) -> Vec<u8> {
    udp4(LOCAL_V4, APP_PORT, REMOTE_V4, 7, payload)
}

/// Echoed datagrams that reached the app: their payloads.
fn echoes(s: &Sim) -> Vec<Vec<u8>> {
    s.to_app
        .iter()
        .filter_map(|p| parse_udp4(p))
        .filter(|(src, sport, dst, dport, _)| (*src, *sport, *dst, *dport) == (REMOTE_V4, 7, LOCAL_V4, APP_PORT))
        .map(|(.., payload)| payload)
        .collect()
}

/// The source port the internet saw on the last datagram (the NAT's external port).
fn external_port(s: &Sim) -> u16 {
    s.internet.iter().rev().find_map(|p| parse_udp4(p)).map(|(_, sport, ..)| sport).expect("a datagram out")
}

fn losses(s: &Sim) -> Vec<(Duration, Loss, Duration)> {
    s.events
        .iter()
        .filter_map(|(t, e)| match e {
            LinkEvent::Lost { loss, retry_in } => Some((*t, loss.clone(), *retry_in)),
            _ => None,
        })
        .collect()
}

#[test]
fn connects_with_v10_and_carries_udp_both_ways() {
    let mut s = sim(ExitConfig::default());
    let alloc = connected(&mut s);
    assert_eq!((alloc.version, alloc.mtu), (10, Some(1500)));
    assert!(s.elapsed() < S, "one round trip, not a timeout: {:?}", s.elapsed());
    s.app_send(&datagram(b"ping"));
    s.run_for(S);
    assert_eq!(echoes(&s), vec![b"ping".to_vec()]);
    let (src, ..) = parse_udp4(&s.internet[0]).expect("udp");
    assert_eq!(src, alloc.ipv4, "the pipeline's NAT rewrote the source to the allocated address");
}

#[test]
fn an_exit_without_v10_is_reached_with_v9_after_the_v10_timeout() {
    let mut s = sim(ExitConfig { max_version: 9, ..Default::default() });
    let alloc = connected(&mut s);
    assert_eq!((alloc.version, alloc.mtu), (9, None), "v9 reports no MTU");
    let t = s.elapsed();
    assert!(t >= 5 * S && t < 6 * S, "fell back after the 5 s v10 timeout: {t:?}");
    assert_eq!(s.session_stats().connect_attempts, 2);
    s.app_send(&datagram(b"v9"));
    s.run_for(S);
    assert_eq!(echoes(&s), vec![b"v9".to_vec()], "v9 data flows");
}

#[test]
fn keepalives_hold_an_idle_session_for_hours_against_the_60_s_idle_drop() {
    let mut s = sim(ExitConfig::default());
    connected(&mut s);
    s.run_for(Duration::from_secs(2 * 3600));
    let c = s.exit.counters();
    assert_eq!(c.idle_removed, 0, "the exit never dropped us for inactivity");
    assert_eq!(s.exit.client_count(), 1);
    assert_eq!(s.link.reconnects(), 0, "{:?}", s.events);
    let keepalives = s.session_stats().keepalives;
    assert!((400..=500).contains(&keepalives), "one per 15 s idle over 2 h: {keepalives}");
    s.app_send(&datagram(b"still here"));
    s.run_for(S);
    assert_eq!(echoes(&s), vec![b"still here".to_vec()]);
}

#[test]
fn a_dead_exit_is_declared_then_replaced_and_the_nat_table_survives() {
    let mut s = sim(ExitConfig::default());
    let alloc = connected(&mut s);
    s.app_send(&datagram(b"before"));
    s.run_for(S);
    let port = external_port(&s);
    let out_before = s.internet.len();

    // The exit goes silent while the app keeps sending, once a second.
    s.exit_silent = true;
    let silent_at = s.elapsed();
    for _ in 0..70 {
        s.app_send(&datagram(b"into the void"));
        s.run_for(S);
    }
    let lost = losses(&s);
    let (t, loss, retry_in) = lost.first().cloned().expect("the silence was noticed");
    assert_eq!((loss, retry_in), (Loss::Unresponsive, Duration::ZERO), "first retry at once");
    let after = t - silent_at;
    assert!(after >= 45 * S && after <= 61 * S, "dead after 45 s of silence (+ keepalive): {after:?}");
    assert_eq!(s.link.state(), LinkState::Reconnecting);
    assert!(s.pipe.stats().not_connected > 0, "packets are dropped, not queued, while reconnecting");
    assert_eq!(s.internet.len(), out_before, "nothing reached the internet through a dead exit");

    // It comes back as a fresh process (same seed: same first addresses).
    s.restart_exit(|_| {});
    s.exit_silent = false;
    assert!(s.run_until(120 * S, |s| s.link.allocation().is_some()), "{:?}", s.events);
    let again = s.link.allocation().expect("up");
    assert_eq!((again.ipv4, again.ipv6), (alloc.ipv4, alloc.ipv6));
    assert_eq!(s.link.reconnects(), 1);
    assert_eq!(s.pipe.nat_entries().1, 1, "the same addresses keep the NAT table");
    s.to_app.clear();
    s.app_send(&datagram(b"after"));
    s.run_for(S);
    assert_eq!(echoes(&s), vec![b"after".to_vec()]);
    assert_eq!(external_port(&s), port, "the flow kept its external port");
}

#[test]
fn reconnect_attempts_back_off_and_a_first_failure_is_final() {
    // Once up, a lost exit is retried forever, spaced out.
    let mut s = sim(ExitConfig::default());
    connected(&mut s);
    s.exit_silent = true;
    s.run_for(Duration::from_secs(400));
    let waits: Vec<f64> = losses(&s).iter().map(|(_, _, d)| d.as_secs_f64()).collect();
    assert!(waits.len() >= 6, "{waits:?}");
    assert_eq!(waits[0], 0.0);
    for (i, pair) in waits.windows(2).enumerate().take(6) {
        assert!(pair[1] > pair[0], "each wait longer than the last: {waits:?}");
        let base = f64::from(1u32 << i);
        assert!((0.75 * base..=1.25 * base).contains(&pair[1]), "{i}: {waits:?}");
    }
    assert!(losses(&s)[1..].iter().all(|(_, l, _)| *l == Loss::NoAnswer), "later attempts time out");

    // Never up: the first failure ends the link, and nothing more is sent.
    let mut s = sim(ExitConfig::default());
    s.exit_silent = true;
    s.run_for(60 * S);
    assert!(matches!(s.events[..], [(_, LinkEvent::Failed(Loss::NoAnswer))]), "{:?}", s.events);
    assert_eq!(s.link.state(), LinkState::Closed);
    let sent = s.up.sent;
    s.run_for(600 * S);
    assert_eq!(s.up.sent, sent, "no retry after a first failure");
}

#[test]
fn a_new_mtu_after_reconnect_reaches_the_pipeline() {
    let mut s = sim(ExitConfig::default());
    connected(&mut s);
    let big = |n: usize| {
        let mut p = datagram(&vec![0u8; n - 28]);
        p[6] |= 0x40; // DF: the pipeline must answer too-big rather than fragment
        p[10..12].copy_from_slice(&[0, 0]);
        let words = p[..20].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])));
        let mut sum: u32 = words.sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        p
    };
    s.app_send(&big(1450));
    s.run_for(S);
    assert_eq!(s.pipe.stats().too_big_sent, 0, "1450 fits the first MTU of 1500");

    s.restart_exit(|c| c.mtu = 1400);
    assert!(
        s.run_until(200 * S, |s| s.link.allocation().is_some_and(|a| a.mtu == Some(1400))),
        "reconnected with the new MTU: {:?}",
        s.events
    );
    s.app_send(&big(1450));
    assert_eq!(s.pipe.stats().too_big_sent, 1, "a packet over the new MTU is refused with ICMP");
}

#[test]
fn loss_duplication_and_reordering_both_ways_leave_the_session_up() {
    let rough = WireConfig { delay: 200 * MS, jitter: 150 * MS, loss: 0.05, dup: 0.05 };
    let exit = ExitConfig {
        impair: ImpairConfig { delay: 20 * MS, jitter: 10 * MS, ..Default::default() },
        ..Default::default()
    };
    let mut s = Sim::new(exit, rough, rough, 11);
    connected(&mut s);
    let n = 2000u32;
    for i in 0..n {
        s.app_send(&datagram(&i.to_be_bytes()));
        s.run_for(100 * MS);
    }
    s.run_for(5 * S);
    let got: Vec<u32> = echoes(&s).iter().map(|p| u32::from_be_bytes(p[..4].try_into().expect("4 bytes"))).collect();
    assert!(got.iter().all(|&i| i < n), "only what was sent comes back");
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    // Each datagram crosses the lossy wire twice: ~0.95² arrive.
    assert!(unique.len() as f64 > 0.85 * f64::from(n), "{} of {n}", unique.len());
    assert!(got.len() > unique.len(), "duplicates are delivered, not hidden (TCP dedups)");
    assert!(got.windows(2).any(|w| w[1] < w[0]), "reordered on the way");
    let st = s.session_stats();
    assert!(st.seq_dup > 0 && st.seq_reorder > 0 && st.seq_gap > 0, "{st:?}");
    assert_eq!((st.malformed_in, st.non_lp_in, st.foreign_stream_in), (0, 0, 0));
    assert_eq!(s.link.reconnects(), 0, "{:?}", s.events);
    assert!(s.up.lost > 0 && s.up.duplicated > 0 && s.down.lost > 0 && s.down.duplicated > 0);
}

#[test]
fn a_bulk_upload_is_bundled_close_to_the_minimum_message_count() {
    let mut s = sim(ExitConfig::default());
    s.echo = false;
    connected(&mut s);
    let (size, burst) = (200usize, 64usize);
    let total = 1 << 20;
    let packets = total / size;
    let before = s.data_msgs_up;
    let mut sent = 0;
    while sent < packets {
        let n = burst.min(packets - sent);
        let pkts: Vec<Vec<u8>> = (0..n).map(|_| datagram(&vec![0x55; size - 28])).collect();
        s.app_send_burst(&pkts);
        s.run_for(MS);
        sent += n;
    }
    s.run_for(S);
    let msgs = s.data_msgs_up - before;
    // Packets are never split across bundles: a bundle holds this many at most.
    let per_bundle = BUNDLE_BUDGET / (size + LEN_PREFIX);
    let minimum = packets.div_ceil(per_bundle) as u64;
    // Each burst closes its last bundle at once (no latency is added to wait for more).
    let bound = (packets / burst * burst.div_ceil(per_bundle) + (packets % burst).div_ceil(per_bundle)) as u64;
    let mib = (packets * size) as f64 / f64::from(1 << 20);
    println!(
        "bulk upload of {packets} packets of {size} B: {:.0} messages per MiB, minimum {:.0}, bound {:.0}",
        msgs as f64 / mib,
        minimum as f64 / mib,
        bound as f64 / mib
    );
    assert_eq!(s.internet.len(), packets, "every packet arrived");
    assert!(msgs >= minimum && msgs <= bound, "{msgs} messages for {minimum}..={bound}");
    assert!(msgs * 100 <= minimum * 110, "within 10 % of the minimum: {msgs} vs {minimum}");
}

#[test]
fn close_says_goodbye_and_the_exit_frees_the_addresses() {
    let mut s = sim(ExitConfig::default());
    connected(&mut s);
    assert!(s.link.close(), "a Disconnect was queued");
    s.app_send(&datagram(b"after close"));
    assert!(s.run_until(5 * S, |s| s.events.iter().any(|(_, e)| *e == LinkEvent::Closed)), "{:?}", s.events);
    assert_eq!(s.exit.client_count(), 0);
    assert_eq!(s.exit.counters().disconnects, 1);
    assert!(s.internet.is_empty(), "nothing sent after close");
    s.run_for(600 * S);
    assert!(!s.events.iter().any(|(_, e)| matches!(e, LinkEvent::Up(_))) || s.link.state() == LinkState::Closed);
    assert_eq!(s.link.state(), LinkState::Closed, "no new session after a close");
}

/// A DNS query for example.com (A) from the host's `port`, with transaction id `id`.
fn lookup(port: u16, id: u16, resolver: Ipv4Addr) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    udp4(LOCAL_V4, port, resolver, 53, &q)
}

#[test]
fn a_dns_flood_from_fresh_ports_leaves_room_for_the_next_lookup() {
    let mut s = sim(ExitConfig::default());
    connected(&mut s);
    // A two-way flow of the host's, which the flood must not push out.
    s.app_send(&datagram(b"before"));
    s.run_for(S);
    let port = external_port(&s);
    // 20,000 lookups in one minute, each from a fresh port as glibc does (a socket per
    // lookup): 9 in 10 to a dead resolver, never answered, the rest answered.
    let mut peak = 0;
    for i in 0..20_000u16 {
        let resolver = if i % 10 == 0 { REMOTE_V4 } else { DEAD_V4 };
        s.app_send(&lookup(10_000 + i, i, resolver));
        s.run_for(3 * MS);
        peak = peak.max(s.pipe.nat_entries().1);
    }
    s.run_for(S);
    let answered = s.to_app.iter().filter_map(|p| parse_udp4(p)).filter(|(.., dport, _)| *dport >= 10_000).count();
    assert_eq!(answered, 2000, "every answer the resolver sent was translated back");
    // 300 unanswered lookups a second for 30 s would be 9000 mappings: the host holds half the
    // table at most and recycles its own unanswered ones, never the two-way flow.
    assert!(peak <= 8192, "the host's share: {peak}");

    // The next lookup gets a mapping and its answer.
    s.to_app.clear();
    s.app_send(&lookup(40_000, 0xbeef, REMOTE_V4));
    s.run_for(S);
    let got: Vec<_> = s.to_app.iter().filter_map(|p| parse_udp4(p)).collect();
    assert!(matches!(&got[..], [(REMOTE_V4, 53, LOCAL_V4, 40_000, a)] if a[..3] == [0xbe, 0xef, 0x81]), "{got:?}");
    s.to_app.clear();
    s.app_send(&datagram(b"after"));
    s.run_for(S);
    assert_eq!(echoes(&s), vec![b"after".to_vec()]);
    assert_eq!(external_port(&s), port, "the two-way flow kept its mapping");
    assert_eq!(s.pipe.stats().dropped(), 0, "no flow refused, no answer without a mapping");

    // 30 s after the flood, its mappings are gone: answered ones 2 s after their answer,
    // unanswered ones 30 s after their query.
    s.run_for(30 * S);
    assert_eq!(s.pipe.nat_entries().1, 1, "only the two-way flow");
}
