//! Reassembly through the whole pipeline: fragments from the TUN leave as one whole datagram,
//! fragments from the exit enter the TUN as one whole datagram, within the bounds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use smoltcp::wire::{IpAddress, Ipv4Packet, UdpPacket};

use crate::pipeline::tests::*;
use crate::pipeline::{Action, Pipeline};

/// A whole UDP packet with `len` bytes of patterned payload and a valid checksum.
pub(super) fn udp_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, len: usize, df: bool) -> Vec<u8> {
    let hl = if src.is_ipv4() { 20 } else { 40 };
    let mut p = vec![0u8; hl + 8 + len];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&((hl + 8 + len) as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x7a11u16.to_be_bytes());
            p[6] = if df { 0x40 } else { 0 };
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
            p[6] = 17;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
        }
        _ => unreachable!(),
    }
    p[hl..hl + 2].copy_from_slice(&sport.to_be_bytes());
    p[hl + 2..hl + 4].copy_from_slice(&dport.to_be_bytes());
    p[hl + 4..hl + 6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    for (i, b) in p[hl + 8..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    UdpPacket::new_unchecked(&mut p[hl..]).fill_checksum(&IpAddress::from(src), &IpAddress::from(dst));
    p
}

/// Split an IPv4 packet (20-byte header) into fragments carrying `chunk` data bytes each.
pub(super) fn frag_v4(p: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let data = &p[20..];
    data.chunks(chunk)
        .enumerate()
        .map(|(i, c)| {
            let mut f = p[..20].to_vec();
            f.extend_from_slice(c);
            let off = i * chunk;
            let more = off + c.len() < data.len();
            f[2..4].copy_from_slice(&((20 + c.len()) as u16).to_be_bytes());
            let field = (u16::from(p[6] & 0x40) << 8) | if more { 0x2000 } else { 0 } | (off / 8) as u16;
            f[6..8].copy_from_slice(&field.to_be_bytes());
            Ipv4Packet::new_unchecked(&mut f[..]).fill_checksum();
            f
        })
        .collect()
}

/// Split an IPv6 packet (no extension headers) into fragments with a fragment header.
pub(super) fn frag_v6(p: &[u8], chunk: usize, ident: u32) -> Vec<Vec<u8>> {
    let data = &p[40..];
    data.chunks(chunk)
        .enumerate()
        .map(|(i, c)| {
            let mut f = p[..40].to_vec();
            f[6] = 44;
            f[4..6].copy_from_slice(&((8 + c.len()) as u16).to_be_bytes());
            let off = i * chunk;
            let more = off + c.len() < data.len();
            f.push(p[6]);
            f.push(0);
            f.extend_from_slice(&((off as u16) | u16::from(more)).to_be_bytes());
            f.extend_from_slice(&ident.to_be_bytes());
            f.extend_from_slice(c);
            f
        })
        .collect()
}

fn remote4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99))
}

fn remote6() -> IpAddr {
    IpAddr::V6("2001:db8::99".parse::<Ipv6Addr>().unwrap())
}

/// Feed all fragments; every one but the last must be stored, the last yields the datagram.
fn feed(p: &mut Pipeline, frags: &[Vec<u8>], from_tun: bool) -> Vec<u8> {
    let now = t0();
    let (last, rest) = frags.split_last().unwrap();
    for f in rest {
        let mut f = f.clone();
        let a = if from_tun { p.handle_tun(&mut f, now) } else { p.handle_exit(&mut f, now) };
        assert_eq!(a, Action::Drop);
    }
    let mut f = last.clone();
    if from_tun {
        out(p.handle_tun(&mut f, now))
    } else {
        tun(p.handle_exit(&mut f, now))
    }
}

#[test]
fn v4_fragments_reassembled_both_ways() {
    let mut p = pipe(1500);
    let orig = udp_packet(IpAddr::V4(LOCAL4), remote4(), 4000, 9000, 3000, false);
    let mut frags = frag_v4(&orig, 1480);
    frags.swap(0, 2); // out of order: last fragment first
    let whole = feed(&mut p, &frags, true);
    assert_eq!(whole.len(), orig.len(), "forwarded whole although larger than the MTU");
    assert_valid(&whole);
    assert_eq!(&whole[6..8], &[0, 0], "MF and offset cleared");
    assert_eq!(&whole[12..16], &EXT4.octets());
    assert_eq!(p.stats().frag_stored_tun, 2);
    assert_eq!(p.stats().reassembled_tun, 1);

    // The exit's answer arrives fragmented too.
    let reply = mirror(&whole);
    let back = feed(&mut p, &frag_v4(&reply, 1200), false);
    assert_valid(&back);
    assert_eq!(mirror(&back), orig);
    assert_eq!(p.reassembly_memory(), 0);
}

#[test]
fn v6_fragments_reassembled_both_ways() {
    let mut p = pipe(1280);
    let orig = udp_packet(IpAddr::V6(LOCAL6), remote6(), 4000, 9000, 4000, false);
    let frags = frag_v6(&orig, 1232, 0xdead_beef);
    let whole = feed(&mut p, &frags, true);
    assert_eq!(whole.len(), orig.len(), "fragment header removed");
    assert_eq!(whole[6], 17, "next header restored");
    assert_valid(&whole);
    assert_eq!(&whole[8..24], &EXT6.octets());
    let back = feed(&mut p, &frag_v6(&mirror(&whole), 1448, 7), false);
    assert_eq!(mirror(&back), orig);
}

#[test]
fn atomic_v6_fragment_is_unwrapped() {
    let mut p = pipe(1500);
    let f = frag_v6(&V6_UDP, 1024, 1);
    assert_eq!(f.len(), 1);
    let whole = out(p.handle_tun(&mut f[0].clone(), t0()));
    assert_valid(&whole);
    assert_eq!(whole.len(), V6_UDP.len());
}

#[test]
fn random_order_and_sizes_reassemble() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for i in 0..50 {
        let mut p = pipe(1500);
        let len = rng.gen_range(100..20000);
        let chunk = rng.gen_range(1..200) * 8;
        let v6 = i % 2 == 1;
        let (src, dst) = if v6 { (IpAddr::V6(LOCAL6), remote6()) } else { (IpAddr::V4(LOCAL4), remote4()) };
        let orig = udp_packet(src, dst, 4000, 9000, len, false);
        let mut frags = if v6 { frag_v6(&orig, chunk, i) } else { frag_v4(&orig, chunk) };
        if frags.len() > 128 || (frags.len() < 2 && !v6) {
            continue; // beyond the per-datagram bound, or not fragmented at all
        }
        frags.shuffle(&mut rng);
        // One exact duplicate is tolerated.
        if frags.len() > 1 {
            let dup = frags[0].clone();
            frags.insert(1, dup);
        }
        let whole = feed(&mut p, &frags, true);
        assert_valid(&whole);
        assert_eq!(whole.len(), orig.len());
    }
}

#[test]
fn overlap_drops_datagram() {
    let mut p = pipe(1500);
    let now = t0();
    let orig = udp_packet(IpAddr::V6(LOCAL6), remote6(), 4000, 9000, 3000, false);
    let a = frag_v6(&orig, 1024, 5);
    let b = frag_v6(&orig, 1032, 5);
    assert_eq!(p.handle_tun(&mut a[0].clone(), now), Action::Drop);
    assert_eq!(p.handle_tun(&mut b[1].clone(), now), Action::Drop); // 1032..2064: a gap, no overlap yet
    assert_eq!(p.handle_tun(&mut a[1].clone(), now), Action::Drop); // 1024..2048 overlaps 1032..2064
    assert_eq!(p.stats().frag_overlap, 1);
    assert_eq!(p.reassembly_datagrams(), 0);
}

#[test]
fn invalid_fragment_lengths() {
    let mut p = pipe(1500);
    let now = t0();
    let orig = udp_packet(IpAddr::V4(LOCAL4), remote4(), 4000, 9000, 3000, false);
    let frags = frag_v4(&orig, 1001); // not a multiple of 8
    assert_eq!(p.handle_tun(&mut frags[0].clone(), now), Action::Drop);
    assert_eq!(p.stats().frag_invalid, 1);
    // A fragment reaching beyond 65535 bytes.
    let mut f = frag_v4(&orig, 1480)[2].clone();
    f[6..8].copy_from_slice(&0x1fffu16.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut f[..]).fill_checksum();
    assert_eq!(p.handle_tun(&mut f, now), Action::Drop);
    assert_eq!(p.stats().frag_invalid, 2);
}

#[test]
fn partial_datagrams_time_out() {
    let mut p = pipe(1500);
    let now = t0();
    let orig = udp_packet(IpAddr::V4(LOCAL4), remote4(), 4000, 9000, 3000, false);
    let frags = frag_v4(&orig, 1480);
    assert_eq!(p.handle_tun(&mut frags[0].clone(), now), Action::Drop);
    assert!(p.reassembly_memory() > 1480);
    p.handle_timeout(now + Duration::from_secs(29));
    assert_eq!(p.reassembly_datagrams(), 1);
    p.handle_timeout(now + Duration::from_secs(30));
    assert_eq!(p.reassembly_datagrams(), 0);
    assert_eq!(p.reassembly_memory(), 0);
    assert_eq!(p.stats().frag_timeout, 1);
    // The rest of the datagram arriving late does not complete it.
    let late = now + Duration::from_secs(31);
    assert_eq!(p.handle_tun(&mut frags[1].clone(), late), Action::Drop);
    assert_eq!(p.handle_tun(&mut frags[2].clone(), late), Action::Drop);
}

#[test]
fn memory_cap_evicts_oldest() {
    let mut c = config(1500);
    c.limits.frag_memory = 8 * 1024;
    let mut p = Pipeline::with_seed(c, 1);
    p.set_allocated(EXT4, None);
    let now = t0();
    let a = frag_v4(&udp_packet(IpAddr::V4(LOCAL4), remote4(), 1, 2, 6000, false), 1480);
    let mut b_orig = udp_packet(IpAddr::V4(LOCAL4), remote4(), 3, 4, 6000, false);
    b_orig[4] = 0x11; // another IP identification
    Ipv4Packet::new_unchecked(&mut b_orig[..]).fill_checksum();
    let b = frag_v4(&b_orig, 1480);
    // A's last fragment reserves ~6 KiB; B's last fragment forces A out.
    assert_eq!(p.handle_tun(&mut a[4].clone(), now), Action::Drop);
    assert_eq!(p.handle_tun(&mut b[4].clone(), now + Duration::from_millis(1)), Action::Drop);
    assert_eq!(p.stats().frag_memory, 1);
    assert!(p.reassembly_memory() <= 8 * 1024);
    // B still completes.
    for f in &b[..3] {
        assert_eq!(p.handle_tun(&mut f.clone(), now), Action::Drop);
    }
    assert!(matches!(p.handle_tun(&mut b[3].clone(), now), Action::ToExit(_)));
}
