//! Session traffic tests: bundling both ways through the published codec, loss/duplication/
//! reordering tolerance, foreign streams, garbage, keepalive, liveness and the transmit bound.

use super::*;
use crate::ipr::bundle::BUNDLE_BUDGET;
use crate::ipr::liveness::{build_echo_request, IPR_TUN_V4};
use crate::ipr::transmit::TX_RING_CAP;
use rand::{Rng, RngCore, SeedableRng};
#[test]
fn uplink_data_decodes_with_the_published_codec() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    let pkts: Vec<Vec<u8>> = (0..3).map(|i| vec![0x45; 60 + i]).collect();
    for p in &pkts {
        s.send_ip(p, t0);
    }
    assert!(s.poll_transmit().is_none(), "bundling waits for flush");
    s.flush();
    let tx = drain(&mut s);
    assert_eq!(tx.len(), 1);
    let (h, _) = request(&tx[0]);
    assert_eq!(h.seq, 1, "connect was seq 0");
    assert_eq!(bundle_of(&tx[0]), (10, pkts.clone()));
    // Byte-identical to the published encoder.
    let bundle: Vec<u8> =
        pkts.iter().flat_map(|p| MultiIpPacketCodec::bundle_one_packet(Bytes::copy_from_slice(p))).collect();
    assert_eq!(&tx[0][16..], &v10::new_data_request(bundle.into()).to_bytes().unwrap()[..]);
    s.flush();
    assert!(s.poll_transmit().is_none(), "flush with nothing pending emits nothing");
    assert_eq!((s.stats().bundles_out, s.stats().packets_out), (1, 3));
}

#[test]
fn downlink_data_from_published_encoder_is_delivered() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    let (a, b) = ([0x45u8; 60], [0x60u8; 80]);
    let msg = frame(1, &data_response(10, &[&a, &b]));
    let got: Vec<&[u8]> = s.handle_message(&msg, t0).collect();
    assert_eq!(got, vec![&a[..], &b[..]]);
    assert_eq!(s.stats().packets_in, 2);
    // A v9 data response on a v10 session belongs to a superseded allocation.
    assert_eq!(s.handle_message(&frame(2, &data_response(9, &[&a])), t0).count(), 0);
    assert_eq!(s.stats().version_mismatch_in, 1);
}

#[test]
fn lost_duplicated_reordered_downlink_delivers_everything_at_once() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    // Data seq starts at 1 (docs/ipr-protocol.md §4.4): 2 and 4 lost, 5 duplicated, 1 late.
    for seq in [3u32, 5, 5, 6, 1, 7] {
        let pkt = [seq as u8; 40];
        let msg = frame(seq, &data_response(10, &[&pkt]));
        let got: Vec<&[u8]> = s.handle_message(&msg, t0).collect();
        assert_eq!(got, vec![&pkt[..]], "seq {seq} delivered immediately");
    }
    let st = s.stats();
    assert_eq!((st.seq_gap, st.seq_dup, st.seq_reorder), (3, 1, 1));
}

#[test]
fn foreign_stream_and_bare_messages_are_dropped() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    let payload = data_response(10, &[&[0x45; 40]]);
    let mut foreign = LpHeader::data(SID + 1, 1).encode().to_vec();
    foreign.extend_from_slice(&payload);
    assert_eq!(s.handle_message(&foreign, t0).count(), 0);
    assert_eq!(s.handle_message(&payload, t0).count(), 0, "bare IPR message");
    assert_eq!((s.stats().foreign_stream_in, s.stats().non_lp_in), (1, 1));
}

#[test]
fn seq0_control_replies_are_handled_after_connect() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    let mut info = vec![0x0a, 0x01, 0x05, 0x00, 0x02, 0x0d];
    info.extend_from_slice(b"192.168.1.1:0");
    info.push(0x01);
    s.handle_message(&frame(0, &info), t0);
    let mut pong = vec![0x0a, 0x01, 0x03, 0x05];
    s.handle_message(&frame(0, &pong), t0);
    pong[0] = 0x09; // Pong to a v9 ping on the same stream: still fine
    s.handle_message(&frame(0, &pong), t0);
    let st = s.stats();
    assert_eq!((st.info_denials, st.pongs, st.malformed_in), (1, 2, 0));
}

#[test]
fn garbage_never_panics() {
    let t0 = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let valid = frame(1, &data_response(10, &[&[0x45; 60], &[0x60; 100]]));
    let control = frame(0, &connect_ok_v10(7));
    for round in 0..3 {
        let mut s = if round == 0 { Session::new(cfg(), t0) } else { connected(t0) };
        for i in 0..20_000u32 {
            let mut msg = match i % 4 {
                0 => {
                    let mut m = vec![0u8; rng.gen_range(0..64)];
                    rng.fill_bytes(&mut m);
                    m
                }
                1 => {
                    let mut m = LpHeader::data(SID, rng.gen()).encode().to_vec();
                    let mut p = vec![0u8; rng.gen_range(0..48)];
                    rng.fill_bytes(&mut p);
                    if let Some(b) = p.first_mut() {
                        *b = [9u8, 10][rng.gen_range(0..2)];
                    }
                    m.extend_from_slice(&p);
                    m
                }
                2 => valid.clone(),
                _ => control.clone(),
            };
            if i % 4 >= 2 {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(16..msg.len());
                    msg[at] = rng.gen();
                }
                msg.truncate(rng.gen_range(16..=msg.len()));
            }
            for p in s.handle_message(&msg, t0) {
                assert!(!p.is_empty());
            }
        }
        assert!(s.stats().malformed_in > 0);
    }
}

/// Run timers up to `until`, answering nothing; returns the messages sent.
fn run_timers(s: &mut Session, until: Instant) -> Vec<(Instant, Vec<u8>)> {
    let mut sent = Vec::new();
    while let Some(t) = s.poll_timeout().filter(|t| *t <= until) {
        s.handle_timeout(t);
        sent.extend(drain(s).into_iter().map(|m| (t, m)));
    }
    sent
}

#[test]
fn keepalive_is_an_icmp_echo_to_the_ipr_tun_after_idle() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(15)));
    s.handle_timeout(t0 + secs(15));
    let tx = drain(&mut s);
    assert_eq!(tx.len(), 1, "sent at once, not left in a partial bundle");
    let (v, pkts) = bundle_of(&tx[0]);
    assert_eq!(v, 10);
    assert_eq!(pkts.len(), 1);
    let ident = u16::from_be_bytes([pkts[0][24], pkts[0][25]]);
    assert_eq!(pkts[0], build_echo_request(V4, ident, 1).to_vec());
    assert_eq!(&pkts[0][16..20], &IPR_TUN_V4.octets());
    assert_eq!(s.stats().keepalives, 1);

    // Its echo reply is consumed; other packets in the same bundle still come through.
    let mut reply = build_echo_request(IPR_TUN_V4, ident, 1);
    reply[12..16].copy_from_slice(&IPR_TUN_V4.octets());
    reply[16..20].copy_from_slice(&V4.octets());
    reply[20] = 0; // echo reply (checksums do not matter for matching)
    let other = [0x45u8; 40];
    let msg = frame(1, &data_response(10, &[&reply, &other]));
    let got: Vec<&[u8]> = s.handle_message(&msg, t0 + secs(16)).collect();
    assert_eq!(got, vec![&other[..]]);
    // The real IPR's answer, an exit-policy denial of 10.0.0.1, counts as a keepalive reply.
    let mut info = vec![0x0a, 0x01, 0x05, 0x00, 0x02, 0x0a];
    info.extend_from_slice(b"10.0.0.1:0");
    info.push(0x01);
    s.handle_message(&frame(0, &info), t0 + secs(16));
    assert_eq!((s.stats().keepalive_replies, s.stats().info_denials), (2, 0));
}

#[test]
fn no_keepalive_while_busy() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    for step in 1..=40u64 {
        let t = t0 + secs(step * 5);
        s.send_ip(&[0x45; 40], t);
        s.flush();
        s.handle_message(&frame(step as u32, &data_response(10, &[&[0x45; 40]])), t);
        s.handle_timeout(t);
        for m in drain(&mut s) {
            assert_eq!(bundle_of(&m).1, vec![vec![0x45; 40]]);
        }
    }
    assert_eq!(s.stats().keepalives, 0);
    assert!(events(&mut s).is_empty());
}

#[test]
fn idle_session_keeps_alive_every_period_and_is_unresponsive_without_answers() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    let sent = run_timers(&mut s, t0 + secs(90));
    let times: Vec<Duration> = sent.iter().map(|(t, _)| *t - t0).collect();
    assert_eq!(times, vec![secs(15), secs(30), secs(45), secs(60), secs(75), secs(90)]);
    // First unanswered uplink at 15 s → unresponsive at 75 s, reported once.
    assert_eq!(events(&mut s), vec![Event::ExitUnresponsive]);
    run_timers(&mut s, t0 + secs(300));
    assert!(events(&mut s).is_empty());
    // Any downlink re-arms it.
    s.handle_message(&frame(0, &[0x0a, 0x01, 0x03, 0x05]), t0 + secs(301));
    s.send_ip(&[0x45; 40], t0 + secs(302));
    s.flush();
    run_timers(&mut s, t0 + secs(362));
    assert_eq!(events(&mut s), vec![Event::ExitUnresponsive]);
    assert_eq!(s.stats().exit_unresponsive, 2);
}

#[test]
fn answered_keepalives_never_report_unresponsive() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    let mut info = vec![0x0a, 0x01, 0x05, 0x00, 0x02, 0x0a];
    info.extend_from_slice(b"10.0.0.1:0");
    info.push(0x01);
    let mut now = t0;
    while now < t0 + secs(600) {
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        if !drain(&mut s).is_empty() {
            s.handle_message(&frame(0, &info), now + secs(2)); // a 2 s mixnet round trip
        }
    }
    assert!(events(&mut s).is_empty());
    assert_eq!(s.stats().keepalives, 40);
}

#[test]
fn bundles_respect_the_budget_and_big_packets_go_alone() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    let small: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 100]).collect();
    for p in &small {
        s.send_ip(p, t0);
    }
    s.send_ip(&[0xbb; 3000], t0);
    s.flush();
    let tx = drain(&mut s);
    let mut all = Vec::new();
    for m in &tx {
        let (_, pkts) = bundle_of(m);
        let bundle_len: usize = pkts.iter().map(|p| p.len() + 2).sum();
        assert!(bundle_len <= BUNDLE_BUDGET || pkts.len() == 1, "{bundle_len}");
        assert!(m.len() <= 16 + 6 + BUNDLE_BUDGET || pkts.len() == 1);
        all.extend(pkts);
    }
    // 15 × 102 = 1530 ≤ 1558 per bundle → 15 + 15 + 10, then the big one alone.
    assert_eq!(tx.len(), 4);
    assert_eq!(bundle_of(&tx[3]).1, vec![vec![0xbb; 3000]]);
    assert_eq!(&all[..40], &small[..]);
    // Oversized for the u16 prefix: dropped and counted, nothing sent.
    s.send_ip(&vec![0u8; 70_000], t0);
    s.flush();
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().tx_oversize, 1);
}

#[test]
fn transmit_ring_is_bounded_and_keeps_control() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg(), t0);
    let (_, id) = connect_id(s.poll_transmit().unwrap().bytes); // connect stays queued (not popped)
    s.handle_message(&frame(0, &connect_ok_v10(id)), t0);
    for _ in 0..TX_RING_CAP + 50 {
        s.send_ip(&[0x45; 1400], t0);
        s.flush();
    }
    assert_eq!(s.stats().tx_dropped, 51);
    let tx = drain(&mut s);
    assert_eq!(tx.len(), TX_RING_CAP);
    assert_eq!(connect_id(&tx[0]).1, id, "control message survives");
}

#[test]
fn a_path_change_probes_at_once_and_a_silent_exit_is_unresponsive_after_the_probe_timeout() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    s.handle_path_change(t0 + secs(5));
    let tx = drain(&mut s);
    assert_eq!(tx.len(), 1, "the probe leaves at once");
    assert_eq!(bundle_of(&tx[0]).1[0][16..20], IPR_TUN_V4.octets());
    // 15 s probe timeout, not the 60 s silence verdict.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(20)));
    s.handle_timeout(t0 + secs(20));
    assert_eq!(events(&mut s), vec![Event::ExitUnresponsive]);
}

#[test]
fn an_answered_probe_keeps_the_session_and_the_longest_stall_is_recorded() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    s.handle_path_change(t0 + secs(5));
    drain(&mut s);
    s.handle_message(&frame(0, &[0x0a, 0x01, 0x03, 0x05]), t0 + secs(8));
    assert_eq!(s.stats().longest_stall_ms, 3000);
    run_timers(&mut s, t0 + secs(25));
    assert!(events(&mut s).is_empty(), "answered: no verdict");
    // A path change before connecting does nothing.
    let mut fresh = Session::new(cfg(), t0);
    drain(&mut fresh);
    fresh.handle_path_change(t0);
    assert!(drain(&mut fresh).is_empty());
}

#[test]
fn can_queue_says_when_one_more_bundle_would_push_out_a_message() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig { tx_queue: 4, ..cfg() }, t0);
    let (_, id) = connect_id(&drain(&mut s)[0]);
    s.handle_message(&frame(0, &connect_ok_v10(id)), t0);
    let mut queued = 0;
    while s.can_queue() {
        s.send_ip(&[0x45; 1400], t0); // one full bundle each
        s.flush();
        queued += 1;
    }
    assert_eq!(queued, 3, "room is kept for the bundle that closes next");
    assert_eq!(s.stats().tx_dropped, 0);
    assert_eq!(drain(&mut s).len(), 3);
    assert!(s.can_queue());
}
