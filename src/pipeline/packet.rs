//! Checked parsing of one untrusted IP packet into a small [`View`].
//!
//! Contract: [`parse`] either returns a `View` whose offsets are all within the packet (so later
//! stages may index `buf[..view.len]` at `view.l4_off + fixed header fields` of the parsed
//! protocol without further checks failing), or a [`ParseError`]. It never panics and never
//! allocates. The IP layer is validated with smoltcp `new_checked` wrappers plus the checks
//! smoltcp leaves to the caller (version nibble, IPv4 IHL >= 5). IPv6 extension headers are
//! walked as far as the upper-layer header: hop-by-hop (0), routing (43), destination options
//! (60), AH (51) and fragment (44); any other next header is treated as the upper layer.
//!
//! A fragment (IPv4 MF or offset != 0, any IPv6 fragment header incl. atomic fragments) gets
//! `frag = Some(..)` and `l4 = L4::Other`: its transport header is only looked at after
//! reassembly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket};

pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_ICMPV6: u8 = 58;
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
pub(crate) const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_DEST_OPTS: u8 = 60;
/// At most this many IPv6 extension headers are walked; a legitimate packet has 0–3
/// (RFC 8200 §4.1 recommends each to appear at most once, dest-opts at most twice).
const MAX_EXT_HEADERS: usize = 8;

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
#[cfg(test)]
pub(crate) const TCP_ACK: u8 = 0x10;

/// Why a packet could not be parsed (all are counted as malformed by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("empty or truncated IP header")]
    Truncated,
    #[error("IP version is neither 4 nor 6")]
    Version,
    #[error("bad IP header length or total length")]
    IpLength,
    #[error("bad or truncated IPv6 extension header chain")]
    ExtHeader,
    #[error("bad or truncated transport header")]
    Transport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    V4,
    V6,
}

/// Where a fragment sits in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frag {
    /// Offset of this fragment's data in the datagram's fragmentable part, in bytes.
    pub offset: usize,
    pub more: bool,
    pub ident: u32,
    /// Start of the fragment data in the packet.
    pub data_off: usize,
    /// IPv6: offset of the fragment header and of the next-header byte pointing at it, plus the
    /// next header it announces. IPv4: 0, 0 and the IP protocol.
    pub hdr_off: usize,
    pub nh_off: usize,
    pub next_header: u8,
}

/// Transport-level facts the NAT needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        hdr_len: usize,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP(v6) echo request (`request`) or reply, with its identifier.
    Echo {
        request: bool,
        id: u16,
    },
    /// ICMP(v6) error (dest unreachable, time exceeded, param problem, packet too big); a copy of
    /// the offending packet starts at `l4_off + 8`.
    IcmpError,
    /// Any other ICMP(v6) message.
    IcmpOther,
    /// Other protocols, and fragments.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct View {
    pub fam: Family,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Length of the packet according to its header; trailing bytes beyond it are ignored.
    pub len: usize,
    /// Start of the upper-layer header (fragment data for fragments).
    pub l4_off: usize,
    /// Upper-layer protocol number.
    pub proto: u8,
    /// IPv4 "don't fragment" flag (always false for IPv6).
    pub df: bool,
    pub frag: Option<Frag>,
    pub l4: L4,
}

impl View {
    /// Offset of the source address field.
    pub(crate) fn src_off(&self) -> usize {
        match self.fam {
            Family::V4 => 12,
            Family::V6 => 8,
        }
    }
    /// Offset of the destination address field.
    pub(crate) fn dst_off(&self) -> usize {
        match self.fam {
            Family::V4 => 16,
            Family::V6 => 24,
        }
    }
}

/// Parse one IP packet.
pub(crate) fn parse(buf: &[u8]) -> Result<View, ParseError> {
    match buf.first().map(|b| b >> 4) {
        None => Err(ParseError::Truncated),
        Some(4) => parse_v4(buf),
        Some(6) => parse_v6(buf),
        Some(_) => Err(ParseError::Version),
    }
}

fn parse_v4(buf: &[u8]) -> Result<View, ParseError> {
    let ip = Ipv4Packet::new_checked(buf).map_err(|_| ParseError::IpLength)?;
    let hl = usize::from(ip.header_len());
    // smoltcp's check_len does not reject IHL < 5.
    if hl < 20 {
        return Err(ParseError::IpLength);
    }
    let len = usize::from(ip.total_len());
    let proto = u8::from(ip.next_header());
    let src = IpAddr::V4(ip.src_addr());
    let dst = IpAddr::V4(ip.dst_addr());
    let offset = usize::from(ip.frag_offset());
    let more = ip.more_frags();
    let mut view =
        View { fam: Family::V4, src, dst, len, l4_off: hl, proto, df: ip.dont_frag(), frag: None, l4: L4::Other };
    if more || offset != 0 {
        view.frag = Some(Frag {
            offset,
            more,
            ident: u32::from(ip.ident()),
            data_off: hl,
            hdr_off: 0,
            nh_off: 0,
            next_header: proto,
        });
        return Ok(view);
    }
    view.l4 = parse_l4(Family::V4, proto, &buf[hl..len])?;
    Ok(view)
}

fn parse_v6(buf: &[u8]) -> Result<View, ParseError> {
    let ip = Ipv6Packet::new_checked(buf).map_err(|_| ParseError::IpLength)?;
    let len = ip.total_len();
    let walk = walk_ext(&buf[..len], u8::from(ip.next_header()), 40)?;
    let mut view = View {
        fam: Family::V6,
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        len,
        l4_off: walk.l4_off,
        proto: walk.proto,
        df: false,
        frag: walk.frag,
        l4: L4::Other,
    };
    if view.frag.is_none() {
        view.l4 = parse_l4(Family::V6, walk.proto, &buf[walk.l4_off..len])?;
    }
    Ok(view)
}

/// Result of walking an IPv6 extension header chain.
pub(crate) struct ExtWalk {
    pub proto: u8,
    pub l4_off: usize,
    pub frag: Option<Frag>,
}

/// Walk IPv6 extension headers in `buf` (the whole packet, or the part of it that is present)
/// starting at `off` with next header `nh`. Stops at the first fragment header.
pub(crate) fn walk_ext(buf: &[u8], mut nh: u8, mut off: usize) -> Result<ExtWalk, ParseError> {
    let mut nh_off = 6;
    for _ in 0..MAX_EXT_HEADERS {
        let hdr_len = match nh {
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS => {
                (usize::from(*buf.get(off + 1).ok_or(ParseError::ExtHeader)?) + 1) * 8
            }
            // RFC 4302 §2.2: AH length is in 4-octet units, minus 2.
            EXT_AH => (usize::from(*buf.get(off + 1).ok_or(ParseError::ExtHeader)?) + 2) * 4,
            EXT_FRAGMENT => {
                let h = buf.get(off..off + 8).ok_or(ParseError::ExtHeader)?;
                let field = u16::from_be_bytes([h[2], h[3]]);
                let frag = Frag {
                    offset: usize::from(field & 0xfff8),
                    more: field & 1 == 1,
                    ident: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    data_off: off + 8,
                    hdr_off: off,
                    nh_off,
                    next_header: h[0],
                };
                return Ok(ExtWalk { proto: h[0], l4_off: off + 8, frag: Some(frag) });
            }
            _ => return Ok(ExtWalk { proto: nh, l4_off: off, frag: None }),
        };
        let next = *buf.get(off).ok_or(ParseError::ExtHeader)?;
        if off + hdr_len > buf.len() {
            return Err(ParseError::ExtHeader);
        }
        nh_off = off;
        nh = next;
        off += hdr_len;
    }
    Err(ParseError::ExtHeader)
}

/// Parse the transport header of a whole (unfragmented) packet; `l4` is exactly the IP payload.
fn parse_l4(fam: Family, proto: u8, l4: &[u8]) -> Result<L4, ParseError> {
    match (proto, fam) {
        (PROTO_TCP, _) => {
            let tcp = TcpPacket::new_checked(l4).map_err(|_| ParseError::Transport)?;
            Ok(L4::Tcp {
                sport: tcp.src_port(),
                dport: tcp.dst_port(),
                flags: l4[13],
                hdr_len: usize::from(tcp.header_len()),
            })
        }
        (PROTO_UDP, _) => {
            let udp = UdpPacket::new_checked(l4).map_err(|_| ParseError::Transport)?;
            Ok(L4::Udp { sport: udp.src_port(), dport: udp.dst_port() })
        }
        (PROTO_ICMP, Family::V4) | (PROTO_ICMPV6, Family::V6) => icmp_kind(fam, l4),
        _ => Ok(L4::Other),
    }
}

/// Classify an ICMP(v6) message; echo and error messages need their full 8-byte header.
pub(crate) fn icmp_kind(fam: Family, l4: &[u8]) -> Result<L4, ParseError> {
    let ty = *l4.first().ok_or(ParseError::Transport)?;
    if l4.len() < 4 {
        return Err(ParseError::Transport);
    }
    let (echo_req, echo_rep, is_error) = match fam {
        // RFC 792: 3 dest unreachable, 11 time exceeded, 12 parameter problem.
        Family::V4 => (8, 0, matches!(ty, 3 | 11 | 12)),
        // RFC 4443: 1 dest unreachable, 2 packet too big, 3 time exceeded, 4 param problem.
        Family::V6 => (128, 129, matches!(ty, 1..=4)),
    };
    if ty == echo_req || ty == echo_rep || is_error {
        let id = crate::pipeline::checksum::read16(l4, 4);
        match (id, l4.len() >= 8) {
            (Some(id), true) if !is_error => Ok(L4::Echo { request: ty == echo_req, id }),
            (Some(_), true) => Ok(L4::IcmpError),
            _ => Err(ParseError::Transport),
        }
    } else {
        Ok(L4::IcmpOther)
    }
}

/// Addresses that never belong on the tunnel: the exit could not route them, and for link-local
/// and multicast the kernel talks to the TUN link itself (MLD, router solicitations).
pub(crate) fn is_unroutable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast() || is_link_local_v6(a),
    }
}

fn is_link_local_v6(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

pub(crate) fn octets(addr: IpAddr) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (out, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

/// Read the address at `off` of family `fam`, if present.
pub(crate) fn read_addr(buf: &[u8], fam: Family, off: usize) -> Option<IpAddr> {
    match fam {
        Family::V4 => {
            let b: [u8; 4] = buf.get(off..off + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        Family::V6 => {
            let b: [u8; 16] = buf.get(off..off + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(&[]), Err(ParseError::Truncated));
        assert_eq!(parse(&[0x50; 40]), Err(ParseError::Version));
        // IHL 4 with a plausible total length.
        let mut v4 = [0u8; 40];
        v4[0] = 0x44;
        v4[3] = 40;
        assert_eq!(parse(&v4), Err(ParseError::IpLength));
        // Total length beyond the buffer.
        v4[0] = 0x45;
        v4[2] = 1;
        assert_eq!(parse(&v4), Err(ParseError::IpLength));
        // IPv6 with a hop-by-hop header running past the end.
        let mut v6 = [0u8; 48];
        v6[0] = 0x60;
        v6[5] = 8;
        v6[6] = 0;
        v6[41] = 5;
        assert_eq!(parse(&v6), Err(ParseError::ExtHeader));
    }

    #[test]
    fn v6_ext_chain_to_udp() {
        let mut p = vec![0u8; 40 + 8 + 8 + 8];
        p[0] = 0x60;
        p[5] = 24;
        p[6] = EXT_HOP_BY_HOP;
        p[7] = 64;
        p[40] = EXT_DEST_OPTS; // hop-by-hop: next = dest opts, len 0 (8 bytes)
        p[48] = PROTO_UDP; // dest opts: next = UDP
        p[56..58].copy_from_slice(&53u16.to_be_bytes());
        p[58..60].copy_from_slice(&5353u16.to_be_bytes());
        p[60..62].copy_from_slice(&8u16.to_be_bytes());
        let v = parse(&p).unwrap();
        assert_eq!(v.l4_off, 56);
        assert_eq!(v.l4, L4::Udp { sport: 53, dport: 5353 });
    }
}
