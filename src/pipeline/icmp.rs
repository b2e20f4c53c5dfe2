//! ICMP(v6) errors: "too big" generation and translation of embedded packets.
//!
//! Contract:
//! - [`too_big`] builds, into a caller buffer, the answer a router on the path would send for a
//!   packet larger than the tunnel MTU: ICMP Destination Unreachable / Fragmentation Needed
//!   (type 3 code 4 with the next-hop MTU, RFC 1191 §4) or ICMPv6 Packet Too Big (type 2,
//!   RFC 4443 §3.2, RFC 8201). Its source is the original packet's destination, so the kernel
//!   takes it as coming from the path and updates the route's PMTU. It never answers an ICMP
//!   error (RFC 1122 §3.2.2, RFC 4443 §2.4(e)); [`TokenBucket`] bounds the rate.
//! - [`embedded`] + [`rewrite_error`] translate an ICMP error and the copy of the offending
//!   packet inside it: outer address, embedded address and embedded port / echo id, and every
//!   checksum they touch (embedded IPv4 header, embedded TCP/UDP/ICMP checksum if present in the
//!   quoted bytes, outer ICMP checksum, outer IPv4 header), all incrementally. The quote may be
//!   truncated (RFC 792 guarantees only IP header + 8 bytes), so every access is bounds-checked.
//!   This makes traceroute and PMTU discovery work through the NAT.

use std::net::IpAddr;
use std::time::Instant;

use smoltcp::wire::{Icmpv4Packet, Icmpv6Packet, Ipv4Packet};

use crate::pipeline::checksum::{patch, patch_udp, read16, set16, set_bytes, Delta};
use crate::pipeline::nat::Kind;
use crate::pipeline::packet::{
    octets, read_addr, walk_ext, Family, View, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

/// RFC 1812 §4.3.2.3: an ICMPv4 error should not exceed 576 bytes.
const V4_ERROR_MAX: usize = 576;
/// RFC 4443 §2.4(c): an ICMPv6 error must not exceed the IPv6 minimum MTU.
const V6_ERROR_MAX: usize = 1280;
use super::IPV6_MIN_MTU as V6_MIN_MTU;

/// Token bucket for generated ICMP; tokens are kept in nanoseconds-of-rate units so that
/// refill is exact integer arithmetic.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_sec: u64,
    burst: u64,
    /// Current tokens × 1e9.
    nanotokens: u64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub(crate) fn new(per_sec: u32, burst: u32) -> Self {
        let burst = u64::from(burst.max(1));
        TokenBucket { per_sec: u64::from(per_sec), burst, nanotokens: burst * 1_000_000_000, last: None }
    }

    pub(crate) fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let ns = u64::try_from(now.saturating_duration_since(last).as_nanos()).unwrap_or(u64::MAX);
            self.nanotokens =
                self.nanotokens.saturating_add(ns.saturating_mul(self.per_sec)).min(self.burst * 1_000_000_000);
        }
        self.last = Some(now);
        if self.nanotokens >= 1_000_000_000 {
            self.nanotokens -= 1_000_000_000;
            true
        } else {
            false
        }
    }
}

/// Build the "too big" answer for `orig` (a whole packet from the TUN) into `out`; returns its
/// length, or `None` if no answer must be sent (the packet is itself an ICMP error).
pub(crate) fn too_big(orig: &[u8], view: &View, mtu: u16, out: &mut Vec<u8>) -> Option<usize> {
    if matches!(view.l4, crate::pipeline::packet::L4::IcmpError) {
        return None;
    }
    out.clear();
    match (view.src, view.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let quote = orig.get(..orig.len().min(V4_ERROR_MAX - 28))?;
            let len = 28 + quote.len();
            out.resize(len, 0);
            out[0] = 0x45;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            out[8] = 64; // TTL
            out[9] = PROTO_ICMP;
            out[12..16].copy_from_slice(&dst.octets());
            out[16..20].copy_from_slice(&src.octets());
            out[20] = 3; // destination unreachable
            out[21] = 4; // fragmentation needed and DF set
            out[26..28].copy_from_slice(&mtu.to_be_bytes()); // RFC 1191 §4 next-hop MTU
            out[28..].copy_from_slice(quote);
            Icmpv4Packet::new_unchecked(&mut out[20..]).fill_checksum();
            Ipv4Packet::new_unchecked(&mut out[..]).fill_checksum();
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let quote = orig.get(..orig.len().min(V6_ERROR_MAX - 48))?;
            let len = 48 + quote.len();
            out.resize(len, 0);
            out[0] = 0x60;
            out[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            out[6] = PROTO_ICMPV6;
            out[7] = 64; // hop limit
            out[8..24].copy_from_slice(&dst.octets());
            out[24..40].copy_from_slice(&src.octets());
            out[40] = 2; // packet too big
                         // RFC 8201 §4: a PMTU below 1280 is never used, so never report one.
            out[44..48].copy_from_slice(&u32::from(mtu.max(V6_MIN_MTU)).to_be_bytes());
            out[48..].copy_from_slice(quote);
            Icmpv6Packet::new_unchecked(&mut out[40..]).fill_checksum(&dst, &src);
        }
        _ => return None,
    }
    Some(out.len())
}

/// Which endpoint of the embedded packet is ours: `Src` for errors from the exit (the quoted
/// packet is one we sent), `Dst` for errors from local hosts (the quoted packet came from the
/// exit to them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Src,
    Dst,
}

/// The translatable endpoint of the packet quoted in an ICMP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Embedded {
    pub fam: Family,
    /// Absolute offsets in the outer packet.
    ip_off: usize,
    addr_off: usize,
    l4_off: usize,
    proto: u8,
    /// The endpoint address on `side`.
    pub addr: IpAddr,
    /// NAT kind and port / echo id on `side`, if the quote carries them.
    pub port: Option<(Kind, u16)>,
    /// Offset of that port / id from `l4_off`.
    port_rel: usize,
}

/// Locate the quoted packet of the ICMP error `view` (which must be `L4::IcmpError`).
pub(crate) fn embedded(buf: &[u8], view: &View, side: Side) -> Option<Embedded> {
    let ip_off = view.l4_off + 8;
    let q = buf.get(ip_off..view.len)?;
    let (fam, rel_l4, proto, first) = match (view.fam, q.first()? >> 4) {
        (Family::V4, 4) => {
            let hl = usize::from(q[0] & 0x0f) * 4;
            if hl < 20 || hl > q.len() {
                return None;
            }
            let offset = read16(q, 6)? & 0x1fff;
            (Family::V4, hl, q[9], offset == 0)
        }
        (Family::V6, 6) => {
            let nh = *q.get(6)?;
            if q.len() < 40 {
                return None;
            }
            match walk_ext(q, nh, 40) {
                Ok(w) => (Family::V6, w.l4_off, w.proto, w.frag.is_none_or(|f| f.offset == 0)),
                Err(_) => (Family::V6, q.len(), 0, false),
            }
        }
        _ => return None,
    };
    let addr_rel = match (fam, side) {
        (Family::V4, Side::Src) => 12,
        (Family::V4, Side::Dst) => 16,
        (Family::V6, Side::Src) => 8,
        (Family::V6, Side::Dst) => 24,
    };
    let addr = read_addr(q, fam, addr_rel)?;
    let l4 = q.get(rel_l4..).unwrap_or(&[]);
    let port = match proto {
        _ if !first => None,
        PROTO_TCP => Some(Kind::Tcp),
        PROTO_UDP => Some(Kind::Udp),
        PROTO_ICMP if fam == Family::V4 && matches!(l4.first(), Some(0 | 8)) => Some(Kind::Icmp),
        PROTO_ICMPV6 if fam == Family::V6 && matches!(l4.first(), Some(128 | 129)) => Some(Kind::Icmp),
        _ => None,
    };
    let port_rel = match (port, side) {
        (Some(Kind::Icmp), _) => 4,
        (_, Side::Src) => 0,
        (_, Side::Dst) => 2,
    };
    let port = port.and_then(|kind| Some((kind, read16(l4, port_rel)?)));
    Some(Embedded { fam, ip_off, addr_off: ip_off + addr_rel, l4_off: ip_off + rel_l4, proto, addr, port, port_rel })
}

/// Rewrite the quoted endpoint to `new_addr` / `new_port` and the outer address at `outer_off`
/// to `outer_new`, fixing all checksums.
pub(crate) fn rewrite_error(
    buf: &mut [u8],
    view: &View,
    emb: &Embedded,
    new_addr: IpAddr,
    new_port: Option<u16>,
    outer_off: usize,
    outer_new: IpAddr,
) {
    // Every quoted field sits at an even offset from the ICMP header (IP headers are multiples
    // of 4 bytes, IPv6 extension headers of 8), so plain word deltas apply to the outer checksum.
    let mut outer_icmp = Delta::default();

    let (a, n) = octets(new_addr);
    let mut addr_delta = Delta::default();
    set_bytes(buf, emb.addr_off, &a[..n], &mut addr_delta);
    outer_icmp.add(addr_delta);
    if emb.fam == Family::V4 {
        // Quoted IPv4 header checksum.
        patch_recording(buf, emb.ip_off + 10, addr_delta, &mut outer_icmp, false);
    }

    let mut l4_delta = Delta::default();
    if let (Some(_), Some(port)) = (emb.port, new_port) {
        set16(buf, emb.l4_off + emb.port_rel, port, &mut l4_delta);
        outer_icmp.add(l4_delta);
    }
    // Quoted transport checksum, when the quote is long enough to contain it.
    let pseudo = !matches!((emb.proto, emb.fam), (PROTO_ICMP, Family::V4));
    if pseudo {
        l4_delta.add(addr_delta);
    }
    match emb.proto {
        PROTO_TCP => patch_recording(buf, emb.l4_off + 16, l4_delta, &mut outer_icmp, false),
        PROTO_UDP => patch_recording(buf, emb.l4_off + 6, l4_delta, &mut outer_icmp, emb.fam == Family::V4),
        PROTO_ICMP | PROTO_ICMPV6 if emb.port.is_some() => {
            patch_recording(buf, emb.l4_off + 2, l4_delta, &mut outer_icmp, false)
        }
        _ => {}
    }

    let (o, n) = octets(outer_new);
    let mut outer_addr = Delta::default();
    set_bytes(buf, outer_off, &o[..n], &mut outer_addr);
    match view.fam {
        Family::V4 => patch(buf, 10, outer_addr),
        // ICMPv6 checksums cover the pseudo-header (RFC 4443 §2.3).
        Family::V6 => outer_icmp.add(outer_addr),
    }
    patch(buf, view.l4_off + 2, outer_icmp);
}

/// Apply `delta` to the checksum at `off` (if present) and record the field's change in `outer`.
/// `udp_v4` keeps a zero (absent) UDP checksum zero.
fn patch_recording(buf: &mut [u8], off: usize, delta: Delta, outer: &mut Delta, udp_v4: bool) {
    let Some(old) = read16(buf, off) else { return };
    if udp_v4 {
        patch_udp(buf, off, delta);
    } else {
        patch(buf, off, delta);
    }
    if let Some(new) = read16(buf, off) {
        outer.word(old, new);
    }
}
