//! ICMP through the pipeline: generated "too big", translated errors in both directions, and
//! the no-panic property on random and mutated input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::{Rng, SeedableRng};
use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet};

use crate::pipeline::packet;
use crate::pipeline::tests::*;
use crate::pipeline::tests_frag::{frag_v4, frag_v6, udp_packet};
use crate::pipeline::{Action, Pipeline};

const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn router6() -> Ipv6Addr {
    "2001:db8:ffff::1".parse().unwrap()
}

/// An ICMPv4 error from `src` to `dst` quoting `quote`.
fn icmp4_error(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, word: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((28 + quote.len()) as u16).to_be_bytes());
    p[8] = 250;
    p[9] = 1;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20] = ty;
    p[21] = code;
    p[24..28].copy_from_slice(&word);
    p.extend_from_slice(quote);
    Icmpv4Packet::new_unchecked(&mut p[20..]).fill_checksum();
    Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
    p
}

fn icmp6_error(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, word: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((8 + quote.len()) as u16).to_be_bytes());
    p[6] = 58;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40] = ty;
    p[44..48].copy_from_slice(&word);
    p.extend_from_slice(quote);
    Icmpv6Packet::new_unchecked(&mut p[40..]).fill_checksum(&src, &dst);
    p
}

#[test]
fn too_big_v4_df_answers_frag_needed() {
    let mut p = pipe(1280);
    let orig = udp_packet(IpAddr::V4(LOCAL4), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 1, 2, 1400, true);
    let icmp = tun(p.handle_tun(&mut orig.clone(), t0()));
    assert_valid(&icmp);
    assert!(icmp.len() <= 576);
    assert_eq!(&icmp[12..16], &orig[16..20], "from the original destination");
    assert_eq!(&icmp[16..20], &orig[12..16], "to the original source");
    assert_eq!(&icmp[20..22], &[3, 4]);
    assert_eq!(&icmp[26..28], &1280u16.to_be_bytes());
    assert_eq!(&icmp[28..], &orig[..icmp.len() - 28]);
    assert_eq!(p.stats().too_big_sent, 1);
    // Without DF the exit may fragment: forwarded whole.
    let nodf = udp_packet(IpAddr::V4(LOCAL4), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 1, 2, 1400, false);
    assert_eq!(out(p.handle_tun(&mut nodf.clone(), t0())).len(), nodf.len());
}

#[test]
fn too_big_v6_answers_packet_too_big() {
    let mut p = pipe(1280);
    let orig = udp_packet(IpAddr::V6(LOCAL6), IpAddr::V6("2001:db8::9".parse().unwrap()), 1, 2, 1400, false);
    let icmp = tun(p.handle_tun(&mut orig.clone(), t0()));
    assert_valid(&icmp);
    assert_eq!(icmp.len(), 1280);
    assert_eq!(&icmp[8..24], &orig[24..40]);
    assert_eq!(icmp[40], 2);
    assert_eq!(&icmp[44..48], &1280u32.to_be_bytes());
    assert_eq!(&icmp[48..], &orig[..1232]);
}

#[test]
fn too_big_is_rate_limited_and_never_about_errors() {
    let mut c = config(1280);
    c.limits.icmp_burst = 2;
    c.limits.icmp_rate_per_sec = 1;
    let mut p = Pipeline::with_seed(c, 1);
    p.set_allocated(EXT4, Some(EXT6));
    let now = t0();
    let big = udp_packet(IpAddr::V4(LOCAL4), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 1, 2, 1400, true);
    assert!(matches!(p.handle_tun(&mut big.clone(), now), Action::ToTun(_)));
    assert!(matches!(p.handle_tun(&mut big.clone(), now), Action::ToTun(_)));
    assert_eq!(p.handle_tun(&mut big.clone(), now), Action::Drop);
    assert!(matches!(p.handle_tun(&mut big.clone(), now + std::time::Duration::from_secs(1)), Action::ToTun(_)));
    let mut err = icmp4_error(LOCAL4, Ipv4Addr::new(192, 0, 2, 9), 3, 3, [0; 4], &big[..1300]);
    err[6] = 0x40;
    Ipv4Packet::new_unchecked(&mut err[..]).fill_checksum();
    assert_eq!(p.handle_tun(&mut err, now + std::time::Duration::from_secs(9)), Action::Drop);
    assert_eq!(p.stats().too_big_dropped, 2);
}

#[test]
fn inbound_time_exceeded_restores_quoted_udp_of_forwarded_host() {
    let mut p = pipe(1500);
    let now = t0();
    out(p.handle_tun(&mut V4_UDP_DNS.clone(), now)); // takes port 53000 for 100.86.0.2
    let mut orig = V4_UDP_DNS.to_vec();
    set_v4_src(&mut orig, Ipv4Addr::new(192, 168, 7, 9));
    let sent = out(p.handle_tun(&mut orig.clone(), now));
    assert_ne!(src_port(&sent), 53000);
    for quote_len in [28, sent.len()] {
        let mut err = icmp4_error(ROUTER4, EXT4, 11, 0, [0; 4], &sent[..quote_len]);
        let back = tun(p.handle_exit(&mut err, now));
        assert_valid(&back);
        assert_eq!(&back[12..16], &ROUTER4.octets(), "the router stays the source");
        assert_eq!(&back[16..20], &[192, 168, 7, 9]);
        assert_eq!(&back[28..], &orig[..quote_len], "quoted packet is the original again");
    }
    assert_eq!(p.stats().icmp_errors_in, 2);
}

#[test]
fn inbound_frag_needed_about_tcp_and_echo() {
    let mut p = pipe(1500);
    let now = t0();
    let sent = out(p.handle_tun(&mut V4_TCP_SYN.clone(), now));
    let mut err = icmp4_error(ROUTER4, EXT4, 3, 4, [0, 0, 0x05, 0x00], &sent[..48]);
    let back = tun(p.handle_exit(&mut err, now));
    assert_valid(&back);
    assert_eq!(&back[28..], &V4_TCP_SYN[..48]);

    let sent = out(p.handle_tun(&mut V4_ICMP_ECHO.clone(), now));
    let mut err = icmp4_error(ROUTER4, EXT4, 11, 0, [0; 4], &sent);
    let back = tun(p.handle_exit(&mut err, now));
    assert_valid(&back);
    assert_eq!(&back[28..], &V4_ICMP_ECHO[..]);
    // An error quoting a flow we never had is dropped.
    let mut stray = sent.clone();
    stray[24] ^= 0x55;
    let mut err = icmp4_error(ROUTER4, EXT4, 11, 0, [0; 4], &stray);
    assert_eq!(p.handle_exit(&mut err, now), Action::Drop);
    assert_eq!(p.stats().no_mapping, 1);
}

#[test]
fn inbound_packet_too_big_v6() {
    let mut p = pipe(1500);
    let now = t0();
    let sent = out(p.handle_tun(&mut V6_UDP.clone(), now));
    let mut err = icmp6_error(router6(), EXT6, 2, 1280u32.to_be_bytes(), &sent);
    let back = tun(p.handle_exit(&mut err, now));
    assert_valid(&back);
    assert_eq!(&back[24..40], &LOCAL6.octets());
    assert_eq!(&back[48..], &V6_UDP[..]);
    // Echo quoted in a v6 time exceeded.
    let ping = v6_echo(LOCAL6, "2001:db8::1".parse().unwrap(), 128, 0x4242);
    let sent = out(p.handle_tun(&mut ping.clone(), now));
    let mut err = icmp6_error(router6(), EXT6, 3, [0; 4], &sent);
    let back = tun(p.handle_exit(&mut err, now));
    assert_valid(&back);
    assert_eq!(&back[48..], &ping[..]);
}

#[test]
fn outbound_port_unreachable_quotes_exit_side_packet() {
    let mut p = pipe(1500);
    let now = t0();
    let sent = out(p.handle_tun(&mut V4_UDP_DNS.clone(), now));
    let reply = mirror(&sent);
    let delivered = tun(p.handle_exit(&mut reply.clone(), now));
    // The local host answers "port unreachable" about the delivered reply.
    let mut err = icmp4_error(LOCAL4, Ipv4Addr::new(192, 0, 2, 53), 3, 3, [0; 4], &delivered);
    let o = out(p.handle_tun(&mut err, now));
    assert_valid(&o);
    assert_eq!(&o[12..16], &EXT4.octets());
    assert_eq!(&o[28..], &reply[..], "quote is the packet as the exit sent it");
    assert_eq!(p.stats().icmp_errors_out, 1);
}

/// Property: no input, random or a mutation of a valid packet, makes the pipeline panic, and
/// everything it emits parses.
#[test]
fn never_panics_on_random_or_mutated_input() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut p = pipe(1280);
    let now = t0();
    let mut seeds: Vec<Vec<u8>> = vec![
        V4_TCP_SYN.to_vec(),
        V4_UDP_DNS.to_vec(),
        V4_ICMP_ECHO.to_vec(),
        V6_UDP.to_vec(),
        V6_TCP_SYN.to_vec(),
        v6_echo(LOCAL6, "2001:db8::1".parse().unwrap(), 128, 1),
    ];
    // Establish mappings and collect exit-side seeds (replies, errors, fragments).
    for s in seeds.clone() {
        if let Action::ToExit(o) = p.handle_tun(&mut s.clone(), now) {
            let o = o.to_vec();
            seeds.push(mirror(&o));
            if o[0] >> 4 == 4 {
                seeds.push(icmp4_error(ROUTER4, EXT4, 11, 0, [0; 4], &o));
            } else {
                seeds.push(icmp6_error(router6(), EXT6, 1, [0; 4], &o));
            }
        }
    }
    let big4 = udp_packet(IpAddr::V4(LOCAL4), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 1, 2, 3000, false);
    let big6 = udp_packet(IpAddr::V6(LOCAL6), IpAddr::V6(Ipv6Addr::LOCALHOST), 1, 2, 3000, false);
    seeds.extend(frag_v4(&big4, 1480));
    seeds.extend(frag_v6(&big6, 1232, 9));
    seeds.push(big4);

    // PIPELINE_PROPTEST_ITERS raises the count for a longer local run.
    let iters = std::env::var("PIPELINE_PROPTEST_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000u32);
    for i in 0..iters {
        let mut buf = if i % 4 == 0 {
            let len = rng.gen_range(0..120);
            let mut b: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if let Some(first) = b.first_mut() {
                let version = if rng.gen() { 0x40 } else { 0x60 };
                let low = if i % 8 == 0 { *first & 0x0f } else { 5 };
                *first = version | low;
            }
            b
        } else {
            let mut b = seeds[rng.gen_range(0..seeds.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                match rng.gen_range(0..3) {
                    0 if !b.is_empty() => {
                        let n = rng.gen_range(0..b.len());
                        b[n] = rng.gen();
                    }
                    1 => b.truncate(rng.gen_range(0..=b.len())),
                    _ => {
                        // Hit the length / header-length / next-header fields on purpose.
                        let n = [0usize, 2, 3, 4, 5, 6, 7, 9, 32, 40, 41][rng.gen_range(0..11)];
                        if let Some(x) = b.get_mut(n) {
                            *x = rng.gen();
                        }
                    }
                }
            }
            b
        };
        let t = now + std::time::Duration::from_millis(u64::from(i % 100_000));
        let a = if i % 2 == 0 { p.handle_tun(&mut buf, t) } else { p.handle_exit(&mut buf, t) };
        match a {
            Action::ToExit(o) | Action::ToTun(o) => assert!(packet::parse(o).is_ok()),
            Action::Drop => {}
        }
        if i % 1000 == 0 {
            p.handle_timeout(t);
        }
    }
    let s = p.stats();
    assert!(s.malformed_tun > 0 && s.malformed_exit > 0);
}
