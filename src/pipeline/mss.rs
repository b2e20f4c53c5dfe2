//! TCP MSS clamping.
//!
//! Contract: [`clamp`] lowers the MSS option (kind 2, length 4, RFC 9293 §3.7.1) of a TCP
//! segment to at most `max`, in place, and fixes the TCP checksum incrementally. It never raises
//! an MSS and never adds a missing option (without one the peer assumes 536 / 1220,
//! RFC 9293 §3.7.1 and RFC 8200 §8.3, both below any tunnel MTU we accept).
//!
//! Why: the tunnel MTU (1500 by default for v10 exits, 1420 before, docs/ipr-protocol.md §3.4) is
//! often below the path MTU the endpoints would otherwise assume, and ICMP "too big" messages
//! are unreliable through the exit's NAT. Clamping the SYN and SYN-ACK keeps every TCP segment
//! within `mtu` in both directions: MSS = mtu − 40 (IPv4 20 + TCP 20) or mtu − 60 (IPv6 40 + TCP
//! 20).

use crate::pipeline::checksum::{patch, read16, write16, Delta};

const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// Clamp the MSS option of the TCP header `tcp` (exactly `hdr_len` bytes of header at its
/// start, already validated). Returns `Some((old, new))` if the option was lowered.
pub(crate) fn clamp(tcp: &mut [u8], hdr_len: usize, max: u16) -> Option<(u16, u16)> {
    let end = hdr_len.min(tcp.len());
    let mut i = 20;
    while i < end {
        let kind = tcp[i];
        match kind {
            OPT_END => return None,
            OPT_NOP => i += 1,
            _ => {
                let len = usize::from(*tcp.get(i + 1)?);
                if len < 2 || i + len > end {
                    return None; // malformed option list: leave the segment alone
                }
                if kind == OPT_MSS && len == 4 {
                    let old = read16(tcp, i + 2)?;
                    if old <= max {
                        return None;
                    }
                    write16(tcp, i + 2, max);
                    let mut d = Delta::default();
                    // The option may sit at an odd offset (e.g. behind one NOP).
                    d.word_at((i + 2) % 2 == 1, old, max);
                    patch(tcp, 16, d);
                    return Some((old, max));
                }
                i += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, Ipv4Address, TcpPacket};

    const SRC: IpAddress = IpAddress::Ipv4(Ipv4Address::new(100, 86, 0, 2));
    const DST: IpAddress = IpAddress::Ipv4(Ipv4Address::new(192, 0, 2, 80));

    fn seg(opts: &[u8]) -> Vec<u8> {
        let hl = 20 + opts.len();
        let mut s = vec![0u8; hl];
        s[0..2].copy_from_slice(&40000u16.to_be_bytes());
        s[2..4].copy_from_slice(&80u16.to_be_bytes());
        s[12] = ((hl / 4) as u8) << 4;
        s[13] = 0x02;
        s[20..].copy_from_slice(opts);
        let mut p = TcpPacket::new_unchecked(&mut s[..]);
        p.fill_checksum(&SRC, &DST);
        s
    }

    #[test]
    fn clamps_aligned_and_unaligned() {
        for opts in [
            &[2, 4, 0x05, 0xb4, 1, 1, 1, 0][..], // MSS 1460 at offset 22
            &[1, 2, 4, 0x05, 0xb4, 1, 1, 0][..], // MSS 1460 at odd offset 23
            &[1, 3, 3, 7, 2, 4, 0x05, 0xb4][..], // behind window scale
        ] {
            let mut s = seg(opts);
            let hl = s.len();
            assert_eq!(clamp(&mut s, hl, 1380), Some((1460, 1380)));
            assert!(TcpPacket::new_checked(&s[..]).unwrap().verify_checksum(&SRC, &DST));
            assert_eq!(clamp(&mut s, hl, 1380), None);
        }
    }

    #[test]
    fn leaves_small_or_malformed_alone() {
        let mut s = seg(&[2, 4, 0x02, 0x18, 0, 0, 0, 0]);
        assert_eq!(clamp(&mut s, 28, 1380), None);
        let mut s = seg(&[3, 0, 2, 4, 0x05, 0xb4, 0, 0]);
        assert_eq!(clamp(&mut s, 28, 1380), None);
        let mut s = seg(&[3, 200, 2, 4, 0x05, 0xb4, 0, 0]);
        assert_eq!(clamp(&mut s, 28, 1380), None);
    }
}
