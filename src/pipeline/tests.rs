//! Pipeline-level tests: byte-literal packets through `handle_tun` / `handle_exit`, with every
//! checksum verified by full recomputation (smoltcp `verify_checksum`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, IpAddress, Ipv4Packet, TcpPacket, UdpPacket};

use crate::pipeline::packet::{self, L4};
use crate::pipeline::{Action, Config, Limits, Pipeline, SWEEP_INTERVAL};

/// IPv4 TCP SYN 100.86.0.2:40000 -> 192.0.2.80:80, MSS 1460, SACK-perm, TS, WS 7 (Linux-style).
pub(super) const V4_TCP_SYN: [u8; 60] = [
    0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0xf7, 0xcd, 0x64, 0x56, 0x00, 0x02, 0xc0, 0x00, 0x02,
    0x50, 0x9c, 0x40, 0x00, 0x50, 0x5b, 0xa3, 0xe0, 0xc1, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x17, 0x19,
    0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x0a, 0x1b, 0x2c, 0x3d, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x03, 0x03, 0x07,
];
/// IPv4 UDP DNS query 100.86.0.2:53000 -> 192.0.2.53:53, "example.com A".
pub(super) const V4_UDP_DNS: [u8; 57] = [
    0x45, 0x00, 0x00, 0x39, 0x3e, 0x2f, 0x00, 0x00, 0x40, 0x11, 0x15, 0xf8, 0x64, 0x56, 0x00, 0x02, 0xc0, 0x00, 0x02,
    0x35, 0xcf, 0x08, 0x00, 0x35, 0x00, 0x25, 0x8e, 0x9d, 0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x01, 0x00, 0x01,
];
/// IPv4 ICMP echo request 100.86.0.2 -> 192.0.2.1, id 0x1234 seq 1.
pub(super) const V4_ICMP_ECHO: [u8; 44] = [
    0x45, 0x00, 0x00, 0x2c, 0x00, 0x01, 0x40, 0x00, 0x40, 0x01, 0x14, 0x77, 0x64, 0x56, 0x00, 0x02, 0xc0, 0x00, 0x02,
    0x01, 0x08, 0x00, 0x2d, 0x0a, 0x12, 0x34, 0x00, 0x01, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19,
    0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
/// IPv6 UDP fd6d:6978::2:5000 -> [2001:db8::53]:53, 12 bytes of data.
pub(super) const V6_UDP: [u8; 60] = [
    0x60, 0x00, 0x00, 0x00, 0x00, 0x14, 0x11, 0x40, 0xfd, 0x6d, 0x69, 0x78, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x02, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x53, 0x13, 0x88, 0x00, 0x35, 0x00, 0x14, 0xc7, 0xd6, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x6d, 0x69, 0x78,
    0x6e, 0x65, 0x74,
];
/// IPv6 TCP SYN [fd6d:6978::2]:40001 -> [2001:db8::80]:443, MSS 1440.
pub(super) const V6_TCP_SYN: [u8; 68] = [
    0x60, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x06, 0x40, 0xfd, 0x6d, 0x69, 0x78, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x02, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x80, 0x9c, 0x41, 0x01, 0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0xfd, 0x20, 0x52,
    0xf4, 0x00, 0x00, 0x02, 0x04, 0x05, 0xa0, 0x01, 0x01, 0x04, 0x02,
];

pub(super) const LOCAL4: Ipv4Addr = Ipv4Addr::new(100, 86, 0, 2);
pub(super) const LOCAL6: Ipv6Addr = Ipv6Addr::new(0xfd6d, 0x6978, 0, 0, 0, 0, 0, 2);
pub(super) const EXT4: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 7);
pub(super) const EXT6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0x307);

pub(super) fn config(mtu: u16) -> Config {
    Config { local_v4: LOCAL4, local_v6: LOCAL6, mtu, limits: Limits::default() }
}

pub(super) fn pipe(mtu: u16) -> Pipeline {
    let mut p = Pipeline::with_seed(config(mtu), 1);
    p.set_allocated(EXT4, Some(EXT6));
    p
}

pub(super) fn out(a: Action<'_>) -> Vec<u8> {
    match a {
        Action::ToExit(b) => b.to_vec(),
        other => panic!("expected ToExit, got {other:?}"),
    }
}

pub(super) fn tun(a: Action<'_>) -> Vec<u8> {
    match a {
        Action::ToTun(b) => b.to_vec(),
        other => panic!("expected ToTun, got {other:?}"),
    }
}

/// Full recomputation of every checksum of a whole packet.
pub(super) fn assert_valid(p: &[u8]) {
    let v = packet::parse(p).expect("parses");
    let (src, dst) = (IpAddress::from(v.src), IpAddress::from(v.dst));
    if v.fam == packet::Family::V4 {
        assert!(Ipv4Packet::new_checked(p).unwrap().verify_checksum(), "IPv4 header checksum");
    }
    let l4 = &p[v.l4_off..v.len];
    match v.l4 {
        L4::Tcp { .. } => assert!(TcpPacket::new_checked(l4).unwrap().verify_checksum(&src, &dst), "TCP checksum"),
        L4::Udp { .. } => assert!(UdpPacket::new_checked(l4).unwrap().verify_checksum(&src, &dst), "UDP checksum"),
        L4::Echo { .. } | L4::IcmpError | L4::IcmpOther => match (v.src, v.dst) {
            (IpAddr::V4(_), _) => assert!(Icmpv4Packet::new_checked(l4).unwrap().verify_checksum(), "ICMP checksum"),
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                assert!(Icmpv6Packet::new_checked(l4).unwrap().verify_checksum(&s, &d), "ICMPv6 checksum")
            }
            _ => unreachable!(),
        },
        L4::Other => {}
    }
}

/// Turn a packet into the reply a peer would send: swap addresses and (TCP/UDP) ports. The
/// one's-complement sums are unchanged, so every checksum stays valid.
pub(super) fn mirror(p: &[u8]) -> Vec<u8> {
    let mut r = p.to_vec();
    let v = packet::parse(p).unwrap();
    let (s, d, n) = (v.src_off(), v.dst_off(), if v.fam == packet::Family::V4 { 4 } else { 16 });
    r[s..s + n].copy_from_slice(&p[d..d + n]);
    r[d..d + n].copy_from_slice(&p[s..s + n]);
    if matches!(v.l4, L4::Tcp { .. } | L4::Udp { .. }) {
        let l = v.l4_off;
        r[l..l + 2].copy_from_slice(&p[l + 2..l + 4]);
        r[l + 2..l + 4].copy_from_slice(&p[l..l + 2]);
    }
    r
}

pub(super) fn src_port(p: &[u8]) -> u16 {
    let v = packet::parse(p).unwrap();
    u16::from_be_bytes([p[v.l4_off], p[v.l4_off + 1]])
}

pub(super) fn t0() -> Instant {
    Instant::now()
}

#[test]
fn literals_are_valid() {
    for p in [&V4_TCP_SYN[..], &V4_UDP_DNS, &V4_ICMP_ECHO, &V6_UDP, &V6_TCP_SYN] {
        assert_valid(p);
    }
}

#[test]
fn tcp_syn_out_and_back_restores_original_bytes() {
    let mut p = pipe(1500);
    let now = t0();
    let mut pkt = V4_TCP_SYN;
    let o = out(p.handle_tun(&mut pkt, now));
    assert_valid(&o);
    assert_eq!(&o[12..16], &EXT4.octets());
    assert_eq!(&o[16..20], &V4_TCP_SYN[16..20], "destination never changes");
    assert_eq!(src_port(&o), 40000, "port preserved");
    // MSS 1460 is exactly 1500 - 40: untouched.
    assert_eq!(&o[40..44], &[2, 4, 0x05, 0xb4]);
    let mut reply = mirror(&o);
    let back = tun(p.handle_exit(&mut reply, now));
    assert_valid(&back);
    assert_eq!(mirror(&back), V4_TCP_SYN.to_vec());
    let s = p.stats();
    assert_eq!((s.exit_tx_packets, s.tun_tx_packets, s.nat_created), (1, 1, 1));
}

#[test]
fn mss_clamped_v4_and_v6_both_directions() {
    let mut p = pipe(1420);
    let now = t0();
    let mut pkt = V4_TCP_SYN;
    let o = out(p.handle_tun(&mut pkt, now));
    assert_valid(&o);
    assert_eq!(&o[40..44], &[2, 4, 0x05, 0x64], "1380 = 1420 - 40");
    let mut pkt = V6_TCP_SYN;
    let o6 = out(p.handle_tun(&mut pkt, now));
    assert_valid(&o6);
    assert_eq!(&o6[60..64], &[2, 4, 0x05, 0x50], "1360 = 1420 - 60");
    assert_eq!(&o6[8..24], &EXT6.octets());
    // A SYN-ACK from the exit carrying MSS 1460 is clamped on its way into the TUN.
    let mut synack = mirror(&o);
    synack[33] = 0x12;
    synack[42..44].copy_from_slice(&1460u16.to_be_bytes());
    fix_tcp(&mut synack);
    let back = tun(p.handle_exit(&mut synack, now));
    assert_valid(&back);
    assert_eq!(&back[42..44], &1380u16.to_be_bytes());
    assert_eq!(&back[16..20], &LOCAL4.octets());
    assert_eq!(p.stats().mss_clamped, 3);
}

pub(super) fn fix_tcp(p: &mut [u8]) {
    let v = packet::parse(p).unwrap();
    let (s, d) = (IpAddress::from(v.src), IpAddress::from(v.dst));
    TcpPacket::new_unchecked(&mut p[v.l4_off..v.len]).fill_checksum(&s, &d);
}

#[test]
fn udp_dns_round_trip_and_zero_checksum() {
    let mut p = pipe(1500);
    let now = t0();
    let mut pkt = V4_UDP_DNS;
    let o = out(p.handle_tun(&mut pkt, now));
    assert_valid(&o);
    assert_eq!(&o[12..16], &EXT4.octets());
    let mut reply = mirror(&o);
    let back = tun(p.handle_exit(&mut reply, now));
    assert_eq!(mirror(&back), V4_UDP_DNS.to_vec());

    // UDP over IPv4 without checksum stays without checksum.
    let mut nock = V4_UDP_DNS;
    nock[26] = 0;
    nock[27] = 0;
    let o = out(p.handle_tun(&mut nock, now));
    assert_eq!(&o[26..28], &[0, 0]);
    assert!(Ipv4Packet::new_checked(&o[..]).unwrap().verify_checksum());
}

#[test]
fn v6_udp_round_trip() {
    let mut p = pipe(1500);
    let now = t0();
    let mut pkt = V6_UDP;
    let o = out(p.handle_tun(&mut pkt, now));
    assert_valid(&o);
    assert_eq!(&o[8..24], &EXT6.octets());
    let mut reply = mirror(&o);
    let back = tun(p.handle_exit(&mut reply, now));
    assert_valid(&back);
    assert_eq!(mirror(&back), V6_UDP.to_vec());
}

#[test]
fn echo_id_is_mapped_and_restored() {
    let mut p = pipe(1500);
    let now = t0();
    let mut pkt = V4_ICMP_ECHO;
    let o = out(p.handle_tun(&mut pkt, now));
    assert_valid(&o);
    // Echo reply from the exit.
    let mut reply = mirror(&o);
    reply[20] = 0;
    Icmpv4Packet::new_unchecked(&mut reply[20..]).fill_checksum();
    let back = tun(p.handle_exit(&mut reply, now));
    assert_valid(&back);
    assert_eq!(&back[24..26], &[0x12, 0x34]);
    assert_eq!(&back[16..20], &LOCAL4.octets());
    assert_eq!(p.nat_entries(), (0, 0, 1));
}

#[test]
fn icmpv6_echo_pseudo_header_checksum() {
    let mut p = pipe(1500);
    let now = t0();
    let mut pkt = v6_echo(LOCAL6, "2001:db8::1".parse().unwrap(), 128, 0x4242);
    let o = out(p.handle_tun(&mut pkt, now));
    assert_valid(&o);
    let mut reply = v6_echo("2001:db8::1".parse().unwrap(), EXT6, 129, u16::from_be_bytes([o[44], o[45]]));
    let back = tun(p.handle_exit(&mut reply, now));
    assert_valid(&back);
    assert_eq!(&back[24..40], &LOCAL6.octets());
    assert_eq!(&back[44..46], &0x4242u16.to_be_bytes());
}

pub(super) fn v6_echo(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, id: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40 + 8 + 8];
    p[0] = 0x60;
    p[5] = 16;
    p[6] = 58;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40] = ty;
    p[44..46].copy_from_slice(&id.to_be_bytes());
    p[46..48].copy_from_slice(&7u16.to_be_bytes());
    p[48..].copy_from_slice(b"pingpong");
    Icmpv6Packet::new_unchecked(&mut p[40..]).fill_checksum(&src, &dst);
    p
}

#[test]
fn second_host_same_port_gets_other_port() {
    let mut p = pipe(1500);
    let now = t0();
    let mut a = V4_UDP_DNS;
    let oa = out(p.handle_tun(&mut a, now));
    // Same source port from a forwarded host 192.168.7.9.
    let mut b = V4_UDP_DNS.to_vec();
    set_v4_src(&mut b, Ipv4Addr::new(192, 168, 7, 9));
    let ob = out(p.handle_tun(&mut b, now));
    assert_valid(&ob);
    assert_ne!(src_port(&oa), src_port(&ob));
    let mut rb = mirror(&ob);
    let back = tun(p.handle_exit(&mut rb, now));
    assert_valid(&back);
    assert_eq!(&back[16..20], &[192, 168, 7, 9]);
    assert_eq!(u16::from_be_bytes([back[22], back[23]]), 53000);
}

/// Re-source an IPv4 TCP/UDP packet with full checksum recomputation (test helper).
pub(super) fn set_v4_src(p: &mut [u8], src: Ipv4Addr) {
    p[12..16].copy_from_slice(&src.octets());
    Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
    let v = packet::parse(p).unwrap();
    let (s, d) = (IpAddress::from(v.src), IpAddress::from(v.dst));
    match v.l4 {
        L4::Udp { .. } => UdpPacket::new_unchecked(&mut p[v.l4_off..v.len]).fill_checksum(&s, &d),
        L4::Tcp { .. } => TcpPacket::new_unchecked(&mut p[v.l4_off..v.len]).fill_checksum(&s, &d),
        _ => {}
    }
}

#[test]
fn drops_are_counted() {
    let now = t0();
    let mut p = Pipeline::with_seed(config(1500), 1);
    let mut pkt = V4_UDP_DNS;
    assert_eq!(p.handle_tun(&mut pkt, now), Action::Drop);
    assert_eq!(p.stats().not_connected, 1);
    p.set_allocated(EXT4, None);
    let mut pkt = V6_UDP;
    assert_eq!(p.handle_tun(&mut pkt, now), Action::Drop);
    assert_eq!(p.stats().not_connected, 2);

    // Unsolicited inbound.
    let mut p = pipe(1500);
    let mut unsolicited = mirror(&V4_UDP_DNS);
    unsolicited[16..20].copy_from_slice(&EXT4.octets());
    set_v4_src(&mut unsolicited, Ipv4Addr::new(192, 0, 2, 53));
    assert_eq!(p.handle_exit(&mut unsolicited, now), Action::Drop);
    assert_eq!(p.stats().no_mapping, 1);
    // Wrong destination.
    let mut wrong = mirror(&V4_UDP_DNS);
    assert_eq!(p.handle_exit(&mut wrong, now), Action::Drop);
    assert_eq!(p.stats().wrong_dst_exit, 1);
    // Garbage both ways.
    assert_eq!(p.handle_tun(&mut [0x45, 0, 0], now), Action::Drop);
    assert_eq!(p.handle_exit(&mut [0x60; 39], now), Action::Drop);
    assert_eq!((p.stats().malformed_tun, p.stats().malformed_exit), (1, 1));
    // Truncated TCP header.
    let mut t = V4_TCP_SYN;
    t[2..4].copy_from_slice(&30u16.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut t[..]).fill_checksum();
    assert_eq!(p.handle_tun(&mut t, now), Action::Drop);
    assert_eq!(p.stats().malformed_tun, 2);
    // Multicast destination (kernel chatter).
    let mut m = V4_UDP_DNS;
    m[16..20].copy_from_slice(&[224, 0, 0, 251]);
    assert_eq!(p.handle_tun(&mut m, now), Action::Drop);
    assert_eq!(p.stats().filtered_tun, 1);
}

#[test]
fn other_protocols_only_from_own_address() {
    let mut p = pipe(1500);
    let now = t0();
    let mut gre = V4_UDP_DNS;
    gre[9] = 47;
    Ipv4Packet::new_unchecked(&mut gre[..]).fill_checksum();
    let orig = gre;
    let o = out(p.handle_tun(&mut gre, now));
    assert_valid(&o);
    assert_eq!(&o[20..], &V4_UDP_DNS[20..], "payload untouched");
    let mut back = mirror(&o);
    let b = tun(p.handle_exit(&mut back, now));
    assert_eq!(mirror(&b), orig.to_vec());
    let mut foreign = orig;
    foreign[12..16].copy_from_slice(&[192, 168, 7, 9]);
    Ipv4Packet::new_unchecked(&mut foreign[..]).fill_checksum();
    assert_eq!(p.handle_tun(&mut foreign, now), Action::Drop);
    assert_eq!(p.stats().unsupported_tun, 1);
}

#[test]
fn reallocation_clears_nat_but_reconnect_keeps_it() {
    let mut p = pipe(1500);
    let now = t0();
    let mut pkt = V4_UDP_DNS;
    let o = out(p.handle_tun(&mut pkt, now));
    p.clear_allocated();
    let mut again = V4_UDP_DNS;
    assert_eq!(p.handle_tun(&mut again, now), Action::Drop);
    p.set_allocated(EXT4, Some(EXT6));
    let mut reply = mirror(&o);
    assert!(matches!(p.handle_exit(&mut reply, now), Action::ToTun(_)));
    p.set_allocated(Ipv4Addr::new(10, 0, 9, 9), Some(EXT6));
    assert_eq!(p.nat_entries(), (0, 0, 0));
}

#[test]
fn idle_mappings_expire() {
    let mut p = pipe(1500);
    let now = t0();
    assert_eq!(p.poll_timeout(), None, "an idle pipeline needs no timer");
    // An unanswered lookup: 30 s.
    let mut pkt = V4_UDP_DNS;
    let o = out(p.handle_tun(&mut pkt, now));
    assert_eq!(p.poll_timeout(), Some(now + SWEEP_INTERVAL));
    // A UDP flow that was answered: 5 min.
    let mut flow = V6_UDP;
    let o6 = out(p.handle_tun(&mut flow, now));
    tun(p.handle_exit(&mut mirror(&o6), now));
    p.handle_timeout(now + Duration::from_secs(29));
    assert_eq!(p.nat_entries().1, 2);
    assert_eq!(p.poll_timeout(), Some(now + Duration::from_secs(30)), "swept again a second later");
    p.handle_timeout(now + Duration::from_secs(30));
    assert_eq!(p.nat_entries().1, 1);
    assert_eq!(p.handle_exit(&mut mirror(&o), now), Action::Drop, "the lookup's mapping is gone");
    p.handle_timeout(now + Duration::from_secs(299));
    assert_eq!(p.nat_entries().1, 1);
    p.handle_timeout(now + Duration::from_secs(300));
    assert_eq!(p.nat_entries().1, 0);
    assert_eq!(p.stats().nat_expired, 2);
    assert_eq!(p.poll_timeout(), None, "nothing left to expire");
}

/// `V4_UDP_DNS` re-sourced from `src:sport`, with transaction id `id` and query type `qtype`.
fn dns_query(src: Ipv4Addr, sport: u16, id: u16, qtype: u16) -> Vec<u8> {
    let mut q = V4_UDP_DNS.to_vec();
    q[20..22].copy_from_slice(&sport.to_be_bytes());
    q[28..30].copy_from_slice(&id.to_be_bytes());
    q[53..55].copy_from_slice(&qtype.to_be_bytes());
    set_v4_src(&mut q, src);
    q
}

/// The resolver's answer to `query` as it left the pipeline: addresses and ports swapped, QR set.
fn dns_answer(query: &[u8]) -> Vec<u8> {
    let mut a = mirror(query);
    a[30] |= 0x80;
    let src = Ipv4Addr::new(a[12], a[13], a[14], a[15]);
    set_v4_src(&mut a, src);
    a
}

#[test]
fn a_dns_mapping_goes_right_after_its_answers() {
    let mut p = pipe(1500);
    let now = t0();
    let s = Duration::from_secs(1);
    // glibc: A and AAAA in parallel from one port; the A answer comes first, and twice.
    let qa = out(p.handle_tun(&mut dns_query(LOCAL4, 53000, 0x1111, 1), now));
    let qaaaa = out(p.handle_tun(&mut dns_query(LOCAL4, 53000, 0x2222, 28), now));
    assert_eq!(src_port(&qa), src_port(&qaaaa));
    let back = tun(p.handle_exit(&mut dns_answer(&qa), now + s));
    assert_valid(&back);
    assert_eq!(back[30] & 0x80, 0x80);
    assert_eq!(mirror(&back)[..26], dns_query(LOCAL4, 53000, 0x1111, 1)[..26], "translated back");
    tun(p.handle_exit(&mut dns_answer(&qa), now + s));
    p.handle_timeout(now + 10 * s);
    assert_eq!(p.nat_entries().1, 1, "AAAA still outstanding");
    tun(p.handle_exit(&mut dns_answer(&qaaaa), now + 10 * s));
    p.handle_timeout(now + 11 * s);
    assert_eq!(p.nat_entries().1, 1);
    p.handle_timeout(now + 12 * s);
    assert_eq!(p.nat_entries().1, 0, "gone 2 s after its last answer");
    assert_eq!(p.handle_exit(&mut dns_answer(&qaaaa), now + 12 * s), Action::Drop);
    assert_eq!(p.stats().no_mapping, 1);
}

#[test]
fn a_zero_entry_nat_table_refuses() {
    let mut c = config(1500);
    c.limits.nat_udp_entries = 0;
    let mut p = Pipeline::with_seed(c, 1);
    p.set_allocated(EXT4, None);
    let now = t0();
    assert_eq!(p.handle_tun(&mut V4_UDP_DNS.clone(), now), Action::Drop);
    assert_eq!(p.stats().nat_table_full, 1);
    assert_eq!(p.stats().dropped(), 1);
}

#[test]
fn a_full_nat_table_evicts_and_a_source_at_its_share_recycles() {
    let mut c = config(1500);
    c.limits.nat_udp_entries = 4;
    let mut p = Pipeline::with_seed(c, 1);
    p.set_allocated(EXT4, None);
    let now = t0();
    let s = Duration::from_secs(1);
    let guest = Ipv4Addr::new(192, 168, 7, 9);
    let other = Ipv4Addr::new(192, 168, 7, 10);
    // A guest floods from fresh ports: it holds its share of 2 and recycles its own.
    for port in 1000..1010 {
        out(p.handle_tun(&mut dns_query(guest, port, port, 1), now));
    }
    assert_eq!(p.nat_entries().1, 2);
    // The host's lookup gets a mapping, and its A answer comes back.
    let qa = out(p.handle_tun(&mut dns_query(LOCAL4, 53000, 1, 1), now + s));
    let qaaaa = out(p.handle_tun(&mut dns_query(LOCAL4, 53000, 2, 28), now + s));
    tun(p.handle_exit(&mut dns_answer(&qa), now + s));
    let st = p.stats();
    assert_eq!((st.nat_created, st.nat_evicted, st.nat_recycled, st.nat_table_full), (11, 0, 8, 0));
    // A third source fills the table, then takes the longest idle mapping: the guest's, not
    // the host's (whose AAAA is outstanding), and the AAAA answer still comes back.
    out(p.handle_tun(&mut dns_query(other, 7, 7, 1), now + 2 * s));
    out(p.handle_tun(&mut dns_query(other, 8, 8, 1), now + 2 * s));
    assert_eq!((p.stats().nat_evicted, p.nat_entries().1), (1, 4));
    let back = tun(p.handle_exit(&mut dns_answer(&qaaaa), now + 2 * s));
    assert_eq!(&back[16..20], &LOCAL4.octets());
    assert_eq!(p.stats().dropped(), 0, "nothing refused");
}

#[test]
fn pipeline_is_send() {
    // The driver moves the pipeline into a tokio task.
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Pipeline>();
}

#[test]
fn v6_with_destination_options_is_translated() {
    // V6_UDP with an 8-byte destination options header (one PadN option) before UDP.
    let mut pkt = V6_UDP[..40].to_vec();
    pkt[6] = 60;
    pkt[4..6].copy_from_slice(&(20u16 + 8).to_be_bytes());
    pkt.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    pkt.extend_from_slice(&V6_UDP[40..]);
    assert_valid(&pkt);
    let mut p = pipe(1500);
    let orig = pkt.clone();
    let o = out(p.handle_tun(&mut pkt, t0()));
    assert_valid(&o);
    assert_eq!(&o[40..48], &orig[40..48], "extension header untouched");
    let mut reply = mirror(&o);
    // mirror() swaps ports at the parsed L4 offset, so the reply is a proper answer.
    let back = tun(p.handle_exit(&mut reply, t0()));
    assert_eq!(mirror(&back), orig);
}
