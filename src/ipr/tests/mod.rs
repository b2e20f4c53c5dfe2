//! Session tests: byte-literal IPR replies (docs/ipr-protocol.md §1.6) against the state machine,
//! with requests checked by the published `nym-ip-packet-requests` decoders.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use bincode::Options;
use bytes::{Bytes, BytesMut};
use nym_ip_packet_requests::codec::{IprPacket, MultiIpPacketCodec};
use nym_ip_packet_requests::v8::request::{ControlRequest, IpPacketRequest, IpPacketRequestData};
use nym_ip_packet_requests::{v10, v9};

use super::lp::{LpHeader, MsgType};
use super::message::tests::{connect_ok_v10, connect_ok_v9};
use super::message::ConnectDenial;
use super::{Allocation, Event, Session, SessionConfig, SessionError};

const SID: u64 = 0x0011_2233_4455_6677;
const V4: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 7);

fn cfg() -> SessionConfig {
    SessionConfig::new(SID)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn drain(s: &mut Session) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(m) = s.poll_transmit() {
        out.push(m.bytes.to_vec());
        s.pop_transmit();
    }
    out
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Split an outbound message into its LP header and the request, decoded by the published
/// types with the IPR's own bincode options (docs/ipr-protocol.md §1.2).
fn request(msg: &[u8]) -> (LpHeader, IpPacketRequest) {
    let (h, payload) = LpHeader::parse(msg).unwrap();
    let o = bincode::DefaultOptions::new().with_big_endian().with_varint_encoding();
    (h, o.deserialize(payload).unwrap())
}

fn frame(seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = LpHeader::data(SID, seq).encode().to_vec();
    m.extend_from_slice(payload);
    m
}

fn connect_id(msg: &[u8]) -> (u8, u64) {
    let (_, req) = request(msg);
    match req.data {
        IpPacketRequestData::Control(c) => match *c {
            ControlRequest::Connect(ref conn) => {
                assert_eq!(conn.buffer_timeout, None);
                (req.protocol.version, conn.request_id)
            }
            ref other => panic!("expected connect, got {other}"),
        },
        _ => panic!("expected control"),
    }
}

/// A connected v10 session at `t0`, with its transmit ring drained.
fn connected(t0: Instant) -> Session {
    let mut s = Session::new(cfg(), t0);
    let tx = drain(&mut s);
    let (_, id) = connect_id(&tx[0]);
    assert_eq!(s.handle_message(&frame(0, &connect_ok_v10(id)), t0).count(), 0);
    assert!(s.is_connected());
    events(&mut s);
    s
}

/// A data response with `pkts`, encoded by the published types.
fn data_response(version: u8, pkts: &[&[u8]]) -> Vec<u8> {
    let mut bundle = Vec::new();
    for p in pkts {
        bundle.extend_from_slice(&MultiIpPacketCodec::bundle_one_packet(Bytes::copy_from_slice(p)));
    }
    let resp = if version == 10 {
        v10::new_ip_packet_response(bundle.into()).to_bytes()
    } else {
        v9::new_ip_packet_response(bundle.into()).to_bytes()
    };
    resp.unwrap()
}

fn bundle_of(msg: &[u8]) -> (u8, Vec<Vec<u8>>) {
    let (_, req) = request(msg);
    let IpPacketRequestData::Data(d) = req.data else { panic!("expected data") };
    let mut src = BytesMut::from(&d.ip_packets[..]);
    let mut codec = MultiIpPacketCodec::new();
    let mut pkts = Vec::new();
    while let Some(IprPacket::Data(p)) = codec.decode_one(&mut src).unwrap() {
        pkts.push(p.to_vec());
    }
    assert!(src.is_empty(), "no trailing partial packet");
    (req.protocol.version, pkts)
}

#[test]
fn first_message_is_a_v10_connect_without_open_frame() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg(), t0);
    let tx = drain(&mut s);
    assert_eq!(tx.len(), 1, "connect only, no LP Open (docs/ipr-protocol.md §4.4)");
    let (h, _) = request(&tx[0]);
    assert_eq!(h, LpHeader { stream_id: SID, msg_type: MsgType::Data, seq: 0 });
    assert_eq!(&tx[0][..16], &[3, 0, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 1, 0, 0, 0, 0, 0]);
    assert_eq!(connect_id(&tx[0]).0, 10);
    assert_eq!(&tx[0][16..20], &[0x0a, 0x01, 0x01, 0x00]);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(15)));
    assert!(!s.is_connected() && s.allocation().is_none());
}

#[test]
fn v10_reference_reply_connects() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg(), t0);
    let (_, id) = connect_id(&drain(&mut s)[0]);
    let reply = connect_ok_v10(id);
    assert_eq!(reply.len(), 36);
    assert_eq!(&reply[33..], &[0xfb, 0x05, 0xdc]);
    assert_eq!(s.handle_message(&frame(0, &reply), t0).count(), 0);
    let ipv6: Ipv6Addr = "fc00::307".parse().unwrap();
    let expected_alloc = Allocation { ipv4: V4, ipv6, mtu: Some(1500), version: 10 };
    let expected = Event::Connected(expected_alloc);
    assert_eq!(events(&mut s), vec![expected]);
    assert_eq!(s.allocation(), Some(expected_alloc));
}

#[test]
fn v9_only_session_uses_the_33_byte_reply() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig { max_version: 9, ..cfg() }, t0);
    let (v, id) = connect_id(&drain(&mut s)[0]);
    assert_eq!(v, 9);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(60)));
    s.handle_message(&frame(0, &connect_ok_v9(id)), t0);
    let ev = events(&mut s);
    assert!(matches!(ev[..], [Event::Connected(Allocation { mtu: None, version: 9, .. })]), "{ev:?}");
}

#[test]
fn falls_back_to_v9_then_times_out() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg(), t0);
    drain(&mut s);
    assert_eq!(s.connecting_version(), Some(10));
    s.handle_timeout(t0 + secs(14));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0 + secs(15));
    assert_eq!(s.connecting_version(), Some(9));
    let tx = drain(&mut s);
    assert_eq!(tx.len(), 1);
    let (h, _) = request(&tx[0]);
    assert_eq!(h.stream_id, SID, "fallback on the same stream");
    assert_eq!(connect_id(&tx[0]).0, 9);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), Some(t0 + secs(75)));
    s.handle_timeout(t0 + secs(75));
    assert_eq!(events(&mut s), vec![Event::ConnectFailed(SessionError::Timeout)]);
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.connecting_version(), None);
    assert_eq!(s.stats().connect_attempts, 2);
}

#[test]
fn late_v10_reply_after_fallback_is_ignored() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg(), t0);
    let (_, id10) = connect_id(&drain(&mut s)[0]);
    s.handle_timeout(t0 + secs(15));
    let (_, id9) = connect_id(&drain(&mut s)[0]);
    // The late v10 success (seq 0) arrives first: the v9 connect will reallocate
    // (docs/ipr-protocol.md §3.2).
    s.handle_message(&frame(0, &connect_ok_v10(id10)), t0 + secs(16));
    assert!(events(&mut s).is_empty() && !s.is_connected());
    assert_eq!(s.stats().stale_control_in, 1);
    // Then the v9 reply with the new allocation, also seq 0: it must not be dropped.
    let mut v9 = connect_ok_v9(id9);
    v9[16] = 9; // 10.0.3.9
    s.handle_message(&frame(0, &v9), t0 + secs(17));
    let ev = events(&mut s);
    assert!(
        matches!(ev[..], [Event::Connected(Allocation { ipv4, version: 9, mtu: None, .. })] if ipv4 == Ipv4Addr::new(10, 0, 3, 9)),
        "{ev:?}"
    );
}

#[test]
fn reply_with_wrong_id_or_version_is_ignored() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg(), t0);
    let (_, id) = connect_id(&drain(&mut s)[0]);
    s.handle_message(&frame(0, &connect_ok_v10(id ^ 1)), t0);
    s.handle_message(&frame(0, &connect_ok_v9(id)), t0); // right id, wrong version
    assert!(events(&mut s).is_empty());
    assert_eq!(s.stats().stale_control_in, 2);
}

#[test]
fn no_available_ip_fails_the_connect() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg(), t0);
    let (_, id) = connect_id(&drain(&mut s)[0]);
    let mut fail = vec![0x0a, 0x01, 0x00, 0xfd];
    fail.extend_from_slice(&id.to_be_bytes());
    fail.extend_from_slice(&[0x01, 0x01]);
    assert_eq!(fail.len(), 14);
    s.handle_message(&frame(0, &fail), t0);
    let denied = SessionError::Denied(ConnectDenial::NoAvailableIp);
    assert_eq!(events(&mut s), vec![Event::ConnectFailed(denied)]);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn disconnect_sends_pending_data_then_the_request() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    s.send_ip(&[0x45; 40], t0);
    s.disconnect();
    let tx = drain(&mut s);
    assert_eq!(tx.len(), 2);
    assert_eq!(bundle_of(&tx[0]).1.len(), 1);
    let (_, req) = request(&tx[1]);
    assert_eq!(req.protocol.version, 10);
    let IpPacketRequestData::Control(c) = req.data else { panic!() };
    let ControlRequest::Disconnect(d) = *c else { panic!() };
    s.send_ip(&[0x45; 40], t0);
    assert_eq!(s.stats().tx_not_connected, 1);
    let mut reply = vec![0x0a, 0x01, 0x01, 0xfd];
    reply.extend_from_slice(&d.request_id.to_be_bytes());
    reply.push(0x00);
    s.handle_message(&frame(0, &reply), t0);
    assert_eq!(events(&mut s), vec![Event::Disconnected]);
    assert_eq!(s.poll_timeout(), None);

    // Without a reply it completes after the v10 timeout.
    let mut s = connected(t0);
    s.disconnect();
    s.handle_timeout(t0 + secs(15));
    assert_eq!(events(&mut s), vec![Event::Disconnected]);
}

#[test]
fn nothing_flows_before_connect() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg(), t0);
    drain(&mut s);
    s.send_ip(&[0x45; 40], t0);
    s.flush();
    assert!(s.poll_transmit().is_none());
    assert_eq!(s.handle_message(&frame(1, &data_response(10, &[&[0x45; 40]])), t0).count(), 0);
    let st = s.stats();
    assert_eq!((st.tx_not_connected, st.data_not_connected_in), (1, 1));
    // Stats serialize (serde) for `status --json`.
    assert!(bincode::serialize(st).is_ok());
}

mod traffic;

#[test]
fn a_closed_session_sends_nothing_runs_no_timer_and_drops_data() {
    let t0 = Instant::now();
    let mut s = connected(t0);
    s.send_ip(&[0x45; 60], t0);
    s.flush();
    s.send_ip(&[0x45; 60], t0); // a partial bundle too
    s.close();
    assert!(s.poll_transmit().is_none(), "queued and partial data are dropped");
    assert_eq!(s.poll_timeout(), None, "no keepalive, no dead-exit verdict");
    let got = s.handle_message(&frame(1, &data_response(10, &[&[0x45; 20]])), t0 + secs(1)).count();
    assert_eq!(got, 0);
    assert_eq!(s.stats().data_not_connected_in, 1);
    s.handle_timeout(t0 + secs(3600));
    assert!(events(&mut s).is_empty());
}
