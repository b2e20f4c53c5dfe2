//! Byte-level tests of the whole double: requests are byte literals (docs/ipr-protocol.md §1.6),
//! responses are checked byte by byte and, where useful, decoded with the published types.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use nym_ip_packet_requests::{v10, v9};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ExitConfig, ImpairConfig, Server};

const MS: Duration = Duration::from_millis(1);
const SID: u64 = 0x0011_2233_4455_6677;
/// request_id 0x0102030405060708 as a bincode varint.
const REQ_ID: [u8; 9] = [0xfd, 1, 2, 3, 4, 5, 6, 7, 8];
/// 2024-01-01T12:59:59.5Z as time's non-human-readable serde tuple (docs/ipr-protocol.md §1.6).
const TIMESTAMP: [u8; 15] = [0xfb, 0x0f, 0xd0, 0x01, 0x0c, 0x3b, 0x3b, 0xfc, 0x1d, 0xcd, 0x65, 0x00, 0, 0, 0];

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn server(config: ExitConfig) -> (Server, Instant) {
    let t0 = Instant::now();
    (Server::new(config, t0).unwrap(), t0)
}

/// LP SphinxStream Data frame header + payload.
fn lp(stream_id: u64, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x03, 0x00];
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.push(0x01);
    out.extend_from_slice(&seq.to_be_bytes());
    out.push(0x00);
    out.extend_from_slice(payload);
    out
}

fn lp_header(stream_id: u64, seq: u32) -> Vec<u8> {
    lp(stream_id, seq, &[])
}

fn control(version: u8, tag: u8, extra: &[u8]) -> Vec<u8> {
    let mut out = vec![version, 0x01, 0x01, tag];
    out.extend_from_slice(&REQ_ID);
    out.extend_from_slice(extra);
    out.extend_from_slice(&TIMESTAMP);
    out
}

/// The 29-byte connect request of docs/ipr-protocol.md §1.6 (`buffer_timeout: None`).
fn connect(version: u8) -> Vec<u8> {
    control(version, 0x00, &[0x00])
}

fn varint_len(len: usize) -> Vec<u8> {
    match u16::try_from(len) {
        Ok(l) if l <= 250 => vec![l as u8],
        Ok(l) => vec![0xfb, (l >> 8) as u8, l as u8],
        Err(_) => unreachable!("test bundles are small"),
    }
}

fn bundle(packets: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn data(version: u8, packets: &[&[u8]]) -> Vec<u8> {
    let b = bundle(packets);
    let mut out = vec![version, 0x01, 0x00];
    out.extend(varint_len(b.len()));
    out.extend(b);
    out
}

/// An IPv4/UDP packet of exactly `total` bytes.
fn udp4(src: Ipv4Addr, dst: Ipv4Addr, total: usize) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .udp(40000, 53)
        .write(&mut out, &vec![0x5a; total - 28])
        .unwrap();
    out
}

fn drain(s: &mut Server) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((p, m)) = s.poll_transmit() {
        out.push((p, m.to_vec()));
        s.pop_transmit();
    }
    out
}

fn drain_tun(s: &mut Server) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(p) = s.poll_tun() {
        out.push(p.to_vec());
        s.pop_tun();
    }
    out
}

/// Connects `peer` with v10 on `sid` and returns its IPv4 address.
fn connected(s: &mut Server, sid: u64, now: Instant) -> Ipv4Addr {
    s.handle_datagram(peer(), &lp(sid, 0, &connect(10)), now);
    assert_eq!(drain(s).len(), 1);
    s.client_ips(&peer()).unwrap().ipv4
}

#[test]
fn an_announced_mtu_replaces_the_tuns_in_the_connect_reply_whatever_it_is() {
    for announced in [0u16, 1200, 65535] {
        let (mut s, t0) = server(ExitConfig { announce_mtu: Some(announced), ..ExitConfig::default() });
        s.handle_datagram(peer(), &lp(SID, 0, &connect(10)), t0);
        let out = drain(&mut s);
        // Read back with the published v10 decoder (a small MTU is a 1-byte varint).
        let decoded = v10::response::IpPacketResponse::from_bytes(&out[0].1[16..]).unwrap();
        let v10::response::IpPacketResponseData::Control(c) = decoded.data else { panic!() };
        let v10::response::ControlResponse::Connect(c) = *c else { panic!() };
        let v10::response::ConnectResponseReply::Success(ok) = c.reply else { panic!() };
        assert_eq!(ok.mtu, announced);
    }
}

#[test]
fn v10_connect_gets_the_36_byte_body_after_an_lp_header_with_seq_0() {
    let (mut s, t0) = server(ExitConfig::default());
    let request = lp(SID, 0, &connect(10));
    assert_eq!(request.len(), 16 + 29);
    s.handle_datagram(peer(), &request, t0);
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    let (to, msg) = &out[0];
    assert_eq!(*to, peer());
    assert_eq!(msg.len(), 16 + 36);
    assert_eq!(msg[..16], lp_header(SID, 0)[..]);
    let body = &msg[16..];
    assert_eq!(body[..13], [0x0a, 0x01, 0x00, 0xfd, 1, 2, 3, 4, 5, 6, 7, 8, 0x00]);
    assert_eq!(body[33..], [0xfb, 0x05, 0xdc]);
    let v4 = Ipv4Addr::new(body[13], body[14], body[15], body[16]);
    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(&body[17..33]).unwrap());
    assert_eq!(v4.octets()[..2], [10, 0]);
    assert_ne!(v4, Ipv4Addr::new(10, 0, 0, 1));
    let x = u16::from_be_bytes([v4.octets()[2], v4.octets()[3]]);
    assert_eq!(v6, Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, x));
    let ips = s.client_ips(&peer()).unwrap();
    assert_eq!((ips.ipv4, ips.ipv6), (v4, v6));
    // Independent check: the published v10 decoder accepts it, and sees mtu 1500.
    let decoded = v10::response::IpPacketResponse::from_bytes(body).unwrap();
    let v10::response::IpPacketResponseData::Control(c) = decoded.data else { panic!() };
    let v10::response::ControlResponse::Connect(c) = *c else { panic!() };
    let v10::response::ConnectResponseReply::Success(ok) = c.reply else { panic!() };
    assert_eq!(ok.mtu, 1500);
}

#[test]
fn v9_connect_gets_33_bytes_without_mtu() {
    let (mut s, t0) = server(ExitConfig::default());
    s.handle_datagram(peer(), &lp(SID, 0, &connect(9)), t0);
    let out = drain(&mut s);
    let body = &out[0].1[16..];
    assert_eq!(body.len(), 33);
    assert_eq!(body[0], 0x09);
    assert!(v9::response::IpPacketResponse::from_bytes(body).is_ok());
    assert!(v10::response::IpPacketResponse::from_bytes(body).is_err());
}

#[test]
fn max_version_9_is_silent_to_v10_and_answers_the_v9_fallback() {
    let config = ExitConfig { max_version: 9, ..Default::default() };
    let (mut s, t0) = server(config);
    s.handle_datagram(peer(), &lp(SID, 0, &connect(10)), t0);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.client_count(), 0);
    assert_eq!(s.counters().bad_version, 1);
    s.handle_datagram(peer(), &lp(SID, 1, &connect(9)), t0);
    assert_eq!(drain(&mut s)[0].1.len(), 16 + 33);
}

#[test]
fn wrong_transport_for_the_version_is_silent() {
    let (mut s, t0) = server(ExitConfig::default());
    s.handle_datagram(peer(), &connect(9), t0); // v9 bare
    s.handle_datagram(peer(), &connect(10), t0); // v10 bare
    s.handle_datagram(peer(), &lp(SID, 0, &connect(8)), t0); // v8 inside LP
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.counters().wrong_transport, 3);
    assert_eq!(s.client_count(), 0);
}

#[test]
fn v8_bare_connect_is_answered_raw_and_reconnect_keeps_the_ips() {
    let (mut s, t0) = server(ExitConfig::default());
    s.handle_datagram(peer(), &connect(8), t0);
    let first = drain(&mut s);
    let body = &first[0].1;
    assert_eq!(body.len(), 33, "raw v8 reply, no LP header");
    assert_eq!(body[..3], [0x08, 0x01, 0x00]);
    s.handle_datagram(peer(), &connect(8), t0 + MS);
    let second = drain(&mut s);
    assert_eq!(second[0].1, first[0].1);
    assert_eq!(s.counters().reconnects_v8, 1);
}

#[test]
fn empty_lp_payload_and_unknown_msg_type_are_ignored() {
    let (mut s, t0) = server(ExitConfig::default());
    let mut open = lp_header(SID, 0);
    open[10] = 0x00; // msg_type Open
    s.handle_datagram(peer(), &open, t0);
    let mut ping_frame = lp(SID, 0, &connect(10));
    ping_frame[10] = 0x03; // msg_type Ping (nym-lp-data 1.22), unknown to 1.21.6
    s.handle_datagram(peer(), &ping_frame, t0);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.client_count(), 0);
    assert_eq!(s.counters().lp_open_ignored, 1);
    assert_eq!(s.counters().lp_bad_attributes, 1);
}

#[test]
fn bad_provider_byte_trailing_bytes_and_short_messages_are_silent() {
    let (mut s, t0) = server(ExitConfig::default());
    let mut wrong_provider = connect(10);
    wrong_provider[1] = 0x00;
    s.handle_datagram(peer(), &lp(SID, 0, &wrong_provider), t0);
    let mut trailing = connect(10);
    trailing.push(0);
    s.handle_datagram(peer(), &lp(SID, 0, &trailing), t0);
    s.handle_datagram(peer(), &lp(SID, 0, &[0x0a]), t0);
    s.handle_datagram(peer(), &[], t0);
    assert!(drain(&mut s).is_empty());
    let c = s.counters();
    assert_eq!((c.bad_service_provider, c.undecodable, c.too_short), (1, 1, 2));
}

#[test]
fn buffer_timeout_zero_is_dropped_without_reply() {
    let (mut s, t0) = server(ExitConfig::default());
    s.handle_datagram(peer(), &lp(SID, 0, &control(10, 0x00, &[0x01, 0x00])), t0);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.counters().connect_zero_buffer_timeout, 1);
}

#[test]
fn uplink_packet_from_the_allocated_ip_reaches_the_tun() {
    let (mut s, t0) = server(ExitConfig::default());
    let ip = connected(&mut s, SID, t0);
    let packet = udp4(ip, Ipv4Addr::new(192, 0, 2, 80), 60);
    s.handle_datagram(peer(), &lp(SID, 1, &data(10, &[&packet])), t0);
    assert_eq!(drain_tun(&mut s), vec![packet]);
    // A source address nobody owns is dropped silently.
    let stranger = udp4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 80), 60);
    s.handle_datagram(peer(), &lp(SID, 2, &data(10, &[&stranger])), t0);
    assert!(drain_tun(&mut s).is_empty());
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.counters().uplink_unknown_source, 1);
}

#[test]
fn downlink_packets_leave_on_the_flush_tick_with_seq_1_then_2() {
    let (mut s, t0) = server(ExitConfig::default());
    let ip = connected(&mut s, SID, t0);
    let packet = udp4(Ipv4Addr::new(192, 0, 2, 80), ip, 60);
    s.handle_tun_packet(&packet, t0 + MS);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), Some(t0 + 20 * MS));
    s.handle_timeout(t0 + 20 * MS);
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    let mut expected = lp_header(SID, 1);
    expected.extend_from_slice(&[0x0a, 0x00, 62, 0x00, 60]);
    expected.extend_from_slice(&packet);
    assert_eq!(out[0].1, expected, "docs/ipr-protocol.md §1.6: Data response with one 60-B packet is 65 B");

    s.handle_tun_packet(&packet, t0 + 25 * MS);
    s.handle_timeout(t0 + 40 * MS);
    assert_eq!(drain(&mut s)[0].1[..16], lp_header(SID, 2)[..]);
}

#[test]
fn two_1498_byte_packets_give_a_first_bundle_of_exactly_1500_bytes() {
    let (mut s, t0) = server(ExitConfig::default());
    let ip = connected(&mut s, SID, t0);
    let a = udp4(Ipv4Addr::new(192, 0, 2, 1), ip, 1498);
    let b = udp4(Ipv4Addr::new(192, 0, 2, 2), ip, 1498);
    s.handle_tun_packet(&a, t0);
    s.handle_tun_packet(&b, t0);
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    let body = &out[0].1[16..];
    assert_eq!(body[..5], [0x0a, 0x00, 0xfb, 0x05, 0xdc]);
    assert_eq!(body.len(), 5 + 1500);
    assert_eq!(body[5..7], [0x05, 0xda]);
    assert_eq!(body[7..], a[..]);
    s.handle_timeout(t0 + 20 * MS);
    let second = drain(&mut s);
    assert_eq!(second[0].1[..16], lp_header(SID, 2)[..]);
    assert_eq!(second[0].1[16 + 7..], b[..]);
}

#[test]
fn ten_100_byte_packets_make_one_1020_byte_bundle() {
    let (mut s, t0) = server(ExitConfig::default());
    let ip = connected(&mut s, SID, t0);
    for i in 0..10 {
        s.handle_tun_packet(&udp4(Ipv4Addr::new(192, 0, 2, i), ip, 100), t0 + MS);
    }
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0 + 20 * MS);
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[16..21], [0x0a, 0x00, 0xfb, 0x03, 0xfc]);
    assert_eq!(out[0].1.len(), 16 + 5 + 1020);
}

#[test]
fn ipv6_goes_both_ways_by_the_allocated_fc00_address() {
    let (mut s, t0) = server(ExitConfig::default());
    connected(&mut s, SID, t0);
    let ip6 = s.client_ips(&peer()).unwrap().ipv6;
    let remote: Ipv6Addr = "2001:db8::80".parse().unwrap();
    let mut up = Vec::new();
    PacketBuilder::ipv6(ip6.octets(), remote.octets(), 64).udp(40000, 53).write(&mut up, &[7; 20]).unwrap();
    s.handle_datagram(peer(), &lp(SID, 1, &data(10, &[&up])), t0);
    assert_eq!(drain_tun(&mut s), vec![up]);
    let mut down = Vec::new();
    PacketBuilder::ipv6(remote.octets(), ip6.octets(), 64).udp(53, 40000).write(&mut down, &[8; 20]).unwrap();
    s.handle_tun_packet(&down, t0);
    s.handle_timeout(t0 + 20 * MS);
    let out = drain(&mut s);
    assert_eq!(out[0].1[..16], lp_header(SID, 1)[..]);
    assert_eq!(out[0].1[16 + 5..], down[..]);
}

#[test]
fn v8_client_downlink_is_raw_with_version_8() {
    let (mut s, t0) = server(ExitConfig::default());
    s.handle_datagram(peer(), &connect(8), t0);
    drain(&mut s);
    let ip = s.client_ips(&peer()).unwrap().ipv4;
    let packet = udp4(Ipv4Addr::new(192, 0, 2, 80), ip, 60);
    s.handle_tun_packet(&packet, t0);
    s.handle_timeout(t0 + 20 * MS);
    let out = drain(&mut s);
    assert_eq!(out[0].1[..5], [0x08, 0x00, 62, 0x00, 60]);
    assert_eq!(out[0].1.len(), 65);
}

#[test]
fn idle_clients_are_removed_silently_and_their_data_dropped() {
    let (mut s, t0) = server(ExitConfig::default());
    let ip = connected(&mut s, SID, t0);
    let packet = udp4(ip, Ipv4Addr::new(192, 0, 2, 80), 60);
    for secs in (10..=50).step_by(10) {
        s.handle_timeout(t0 + Duration::from_secs(secs));
    }
    // Activity at 50 s keeps the session through the 60 s … 110 s sweeps.
    s.handle_datagram(peer(), &lp(SID, 1, &data(10, &[&packet])), t0 + Duration::from_secs(50));
    for secs in (60..=110).step_by(10) {
        s.handle_timeout(t0 + Duration::from_secs(secs));
    }
    assert_eq!(s.client_count(), 1);
    s.handle_timeout(t0 + Duration::from_secs(120));
    assert_eq!(s.client_count(), 0);
    assert_eq!(s.counters().idle_removed, 1);
    drain_tun(&mut s);
    assert!(drain(&mut s).is_empty(), "no UnrequestedDisconnect");
    s.handle_datagram(peer(), &lp(SID, 2, &data(10, &[&packet])), t0 + Duration::from_secs(121));
    assert!(drain_tun(&mut s).is_empty());
    assert!(drain(&mut s).is_empty());
}

#[test]
fn ping_does_not_count_as_activity() {
    let (mut s, t0) = server(ExitConfig::default());
    connected(&mut s, SID, t0);
    for secs in (10..=70).step_by(10) {
        s.handle_datagram(peer(), &lp(SID, secs, &control(10, 0x02, &[])), t0 + Duration::from_secs(secs.into()));
        s.handle_timeout(t0 + Duration::from_secs(secs.into()));
    }
    assert_eq!(s.client_count(), 0);
}

#[test]
fn stream_reconnect_gives_new_ips_new_stream_and_seq_restarts_at_1() {
    let (mut s, t0) = server(ExitConfig::default());
    let old = connected(&mut s, SID, t0);
    s.handle_tun_packet(&udp4(Ipv4Addr::new(192, 0, 2, 80), old, 60), t0);
    s.handle_timeout(t0 + 20 * MS);
    assert_eq!(drain(&mut s)[0].1[..16], lp_header(SID, 1)[..]);

    let sid2 = SID + 1;
    s.handle_datagram(peer(), &lp(sid2, 0, &connect(10)), t0 + 30 * MS);
    let reply = drain(&mut s);
    assert_eq!(reply[0].1[..16], lp_header(sid2, 0)[..]);
    let new = s.client_ips(&peer()).unwrap().ipv4;
    assert_ne!(new, old);
    assert_eq!(s.counters().reconnects_stream, 1);

    s.handle_tun_packet(&udp4(Ipv4Addr::new(192, 0, 2, 80), old, 60), t0 + 31 * MS);
    assert_eq!(s.counters().downlink_unknown_destination, 1, "old IPs were freed");
    s.handle_tun_packet(&udp4(Ipv4Addr::new(192, 0, 2, 80), new, 60), t0 + 31 * MS);
    s.handle_timeout(t0 + 50 * MS);
    assert_eq!(drain(&mut s)[0].1[..16], lp_header(sid2, 1)[..]);
}

#[test]
fn ping_gets_a_12_byte_pong_with_seq_0() {
    let (mut s, t0) = server(ExitConfig::default());
    let ip = connected(&mut s, SID, t0);
    s.handle_tun_packet(&udp4(Ipv4Addr::new(192, 0, 2, 80), ip, 60), t0);
    s.handle_timeout(t0 + 20 * MS);
    drain(&mut s);
    s.handle_datagram(peer(), &lp(SID, 5, &control(10, 0x02, &[])), t0 + 21 * MS);
    let out = drain(&mut s);
    let mut expected = lp_header(SID, 0);
    expected.extend_from_slice(&[0x0a, 0x01, 0x03, 0xfd, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(out[0].1, expected);
}

#[test]
fn disconnect_succeeds_once_then_reports_not_connected() {
    let (mut s, t0) = server(ExitConfig::default());
    connected(&mut s, SID, t0);
    let disconnect = lp(SID, 1, &control(10, 0x01, &[]));
    s.handle_datagram(peer(), &disconnect, t0);
    s.handle_datagram(peer(), &disconnect, t0);
    let out = drain(&mut s);
    let prefix = [0x0a, 0x01, 0x01, 0xfd, 1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(out[0].1[16..], [&prefix[..], &[0x00]].concat()[..]);
    assert_eq!(out[1].1[16..], [&prefix[..], &[0x01, 0x00]].concat()[..]);
    assert_eq!(s.client_count(), 0);
}

#[test]
fn health_reply_decodes_with_the_published_types() {
    let (mut s, t0) = server(ExitConfig::default());
    s.handle_datagram(peer(), &lp(SID, 0, &control(9, 0x03, &[])), t0);
    let out = drain(&mut s);
    let decoded = v9::response::IpPacketResponse::from_bytes(&out[0].1[16..]).unwrap();
    let v9::response::IpPacketResponseData::Control(c) = decoded.data else { panic!() };
    let v9::response::ControlResponse::Health(h) = *c else { panic!() };
    assert_eq!(h.request_id, 0x0102030405060708);
    assert_eq!(h.reply.build_info.binary_name, "smolmix-exit");
    assert_eq!(h.reply.routable, None);
}

#[test]
fn non_global_destination_gets_an_info_warn_with_seq_0_when_filtering() {
    let config = ExitConfig { deny_non_global: true, ..Default::default() };
    let (mut s, t0) = server(config);
    let ip = connected(&mut s, SID, t0);
    let mut icmp = Vec::new();
    PacketBuilder::ipv4(ip.octets(), [10, 0, 0, 1], 64).icmpv4_echo_request(1, 1).write(&mut icmp, &[0; 8]).unwrap();
    s.handle_datagram(peer(), &lp(SID, 1, &data(10, &[&icmp])), t0);
    assert!(drain_tun(&mut s).is_empty());
    let out = drain(&mut s);
    let mut expected = lp_header(SID, 0);
    expected.extend_from_slice(&[0x0a, 0x01, 0x05, 0x00, 0x02, 10]);
    expected.extend_from_slice(b"10.0.0.1:0");
    expected.push(0x01);
    assert_eq!(out[0].1, expected);
    assert_eq!(s.counters().uplink_denied, 1);
}

#[test]
fn impairment_loses_data_but_delays_control_replies() {
    let impair = ImpairConfig { delay: 100 * MS, loss: 1.0, ..Default::default() };
    let (mut s, t0) = server(ExitConfig { impair, ..Default::default() });
    s.handle_datagram(peer(), &lp(SID, 0, &connect(10)), t0);
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0 + 100 * MS); // uplink delay: the connect is processed now
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.client_count(), 1);
    s.handle_timeout(t0 + 200 * MS); // downlink delay: the reply leaves now
    assert_eq!(drain(&mut s).len(), 1);
    let ip = s.client_ips(&peer()).unwrap().ipv4;
    s.handle_tun_packet(&udp4(Ipv4Addr::new(192, 0, 2, 80), ip, 60), t0 + 200 * MS);
    s.handle_timeout(t0 + 220 * MS);
    s.handle_timeout(t0 + 400 * MS);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.counters().impair_lost, 1);
}

#[test]
fn garbage_never_panics() {
    let (mut s, t0) = server(ExitConfig { deny_non_global: true, ..Default::default() });
    let mut rng = StdRng::seed_from_u64(0xdead_beef);
    let ip = connected(&mut s, SID, t0);
    let valid = [
        lp(SID, 0, &connect(10)),
        lp(SID, 1, &data(10, &[&udp4(ip, Ipv4Addr::new(192, 0, 2, 1), 60)])),
        lp(SID, 2, &control(10, 0x03, &[])),
        connect(8),
    ];
    let mut now = t0;
    for i in 0..50_000u32 {
        now += Duration::from_micros(500);
        let len = rng.gen_range(0..300);
        let mut msg: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        match i % 4 {
            0 => {}
            1 => msg.splice(0..0, [0x03, 0x00]).for_each(drop),
            _ => {
                // Mutate a valid message: flip a few bytes and maybe truncate.
                msg = valid[rng.gen_range(0..valid.len())].clone();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..msg.len());
                    msg[at] = rng.gen();
                }
                msg.truncate(rng.gen_range(0..=msg.len()));
            }
        }
        s.handle_datagram(peer(), &msg, now);
        s.handle_tun_packet(&msg, now);
        s.handle_timeout(now);
        drain(&mut s);
        drain_tun(&mut s);
    }
    assert!(s.counters().rx_messages >= 50_000);
}

#[test]
fn the_transmit_queue_is_bounded_in_bytes_as_well_as_messages() {
    let (mut s, _) = server(ExitConfig::default());
    let peer: std::net::SocketAddr = "192.0.2.9:1".parse().unwrap();
    let fit = super::server::MAX_QUEUE_BYTES / 65_535;
    assert!(fit < super::server::MAX_TRANSMIT_QUEUE, "the byte bound is the one that bites");
    for _ in 0..=fit {
        s.enqueue_transmit(peer, bytes::BytesMut::zeroed(65_535));
    }
    assert_eq!(s.counters().transmit_queue_full, 1);
    let mut held = 0;
    while s.poll_transmit().is_some() {
        s.pop_transmit();
        held += 1;
    }
    assert_eq!(held, fit);
    s.enqueue_transmit(peer, bytes::BytesMut::zeroed(65_535));
    assert!(s.poll_transmit().is_some(), "drained, it takes messages again");
}
