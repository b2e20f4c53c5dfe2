//! Keepalive probes and downlink sequence bookkeeping.
//!
//! Contract:
//! - [`build_echo_request`] writes an ICMPv4 echo request (valid IPv4 and ICMP checksums, via
//!   smoltcp's wire types) from the allocated IPv4 to the IPR's own TUN address 10.0.0.1
//!   (docs/ipr-protocol.md §3.3) into a stack buffer. The IPR refreshes a client's activity for any
//!   parsable data packet whose *source* is an allocated IP, before the exit-policy check, so even
//!   the denied ping keeps the session alive; the denial comes back as an `Info` reply, which
//!   doubles as proof that the exit is alive (docs/ipr-protocol.md §3.6, §5.2 steps 2–3, §7 #9).
//! - [`is_echo_reply`] recognises the reply to such a probe (an IPR with `allow_local_ips`, or
//!   the local exit double, lets the ping through and 10.0.0.1 answers it) so that the session
//!   can consume it instead of handing it to the pipeline. Checked parsing, no checksum work.
//! - [`SeqTracker`] classifies downlink LP sequence numbers for statistics only. IP needs no
//!   ordering and the IPR sends data without retransmission (docs/ipr-protocol.md §4.6), so waiting
//!   for a gap would only stall the tunnel (the SDK's bug, docs/ipr-protocol.md §7 #2); the session
//!   never waits. The window is 64 sequence numbers, a fixed-size bitmap.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr};

/// The IPR's TUN address, the keepalive destination (docs/ipr-protocol.md §3.3, §3.6).
pub const IPR_TUN_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Length of a keepalive probe: IPv4 header 20 + ICMP echo header 8, no payload.
pub const ECHO_LEN: usize = 28;

/// Build the keepalive echo request from `src` to 10.0.0.1.
pub fn build_echo_request(src: Ipv4Addr, ident: u16, seq_no: u16) -> [u8; ECHO_LEN] {
    let mut buf = [0u8; ECHO_LEN];
    let icmp = Icmpv4Repr::EchoRequest { ident, seq_no, data: &[] };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: IPR_TUN_V4,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let mut ip_pkt = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut ip_pkt, &caps);
    let mut icmp_pkt = Icmpv4Packet::new_unchecked(ip_pkt.payload_mut());
    icmp.emit(&mut icmp_pkt, &caps);
    buf
}

/// Whether `pkt` is an echo reply from 10.0.0.1 to `dst` carrying our `ident`.
pub fn is_echo_reply(pkt: &[u8], dst: Ipv4Addr, ident: u16) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(pkt) else {
        return false;
    };
    if ip.version() != 4
        || ip.next_header() != IpProtocol::Icmp
        || ip.src_addr() != IPR_TUN_V4
        || ip.dst_addr() != dst
        || ip.more_frags()
        || ip.frag_offset() != 0
    {
        return false;
    }
    let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
        return false;
    };
    icmp.msg_type() == Icmpv4Message::EchoReply && icmp.msg_code() == 0 && icmp.echo_ident() == ident
}

/// How one downlink sequence number relates to the ones seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqClass {
    /// First data frame since (re)connect.
    First,
    /// Exactly the next one.
    InOrder,
    /// Ahead of the next expected one; `missing` numbers were skipped (lost or late).
    Gap {
        /// Sequence numbers between the next expected one and this one.
        missing: u32,
    },
    /// Seen before (mixnet retransmission duplicates).
    Duplicate,
    /// Behind the highest seen, not seen before: arrived out of order (a gap filled late).
    Reordered,
    /// Further behind than the window remembers.
    TooOld,
}

const WINDOW: u32 = 64;

/// Highest sequence number seen plus a bitmap of the `WINDOW` numbers below it.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    highest: Option<u32>,
    /// Bit i set = `highest - i` seen (bit 0 is `highest` itself).
    seen: u64,
}

impl SeqTracker {
    /// Forget everything (a reconnect restarts the server's data seq at 1,
    /// docs/ipr-protocol.md §3.2).
    pub fn reset(&mut self) {
        *self = SeqTracker::default();
    }

    /// Forget everything and expect `first` next: the IPR numbers a new client's data frames
    /// from 1 (docs/ipr-protocol.md §4.4), so losses before the first arrival count as a gap too.
    pub fn expect_from(&mut self, first: u32) {
        self.highest = Some(first.wrapping_sub(1));
        self.seen = 1;
    }

    /// Record `seq` (a data frame, never the control seq 0) and classify it.
    pub fn record(&mut self, seq: u32) -> SeqClass {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.seen = 1;
            return SeqClass::First;
        };
        // Serial-number arithmetic (RFC 1982 style) so that u32 wrap-around is "ahead".
        let delta = seq.wrapping_sub(highest) as i32;
        if delta > 0 {
            let d = delta as u32;
            self.seen = if d >= WINDOW { 0 } else { self.seen << d };
            self.seen |= 1;
            self.highest = Some(seq);
            // The server skips 0 when its counter wraps (docs/ipr-protocol.md §4.4): not a loss.
            let skipped_zero = u32::from(seq < highest);
            match d - 1 - skipped_zero.min(d - 1) {
                0 => SeqClass::InOrder,
                missing => SeqClass::Gap { missing },
            }
        } else if delta == 0 {
            SeqClass::Duplicate
        } else {
            let back = delta.unsigned_abs();
            if back >= WINDOW {
                return SeqClass::TooOld;
            }
            let bit = 1u64 << back;
            if self.seen & bit != 0 {
                SeqClass::Duplicate
            } else {
                self.seen |= bit;
                SeqClass::Reordered
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{Icmpv4Repr, Ipv4Repr};

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 7);

    #[test]
    fn echo_request_has_valid_checksums() {
        let pkt = build_echo_request(SRC, 0xbeef, 3);
        let caps = ChecksumCapabilities::default();
        let ip = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert!(ip.verify_checksum());
        let repr = Ipv4Repr::parse(&ip, &caps).unwrap();
        assert_eq!((repr.src_addr, repr.dst_addr), (SRC, IPR_TUN_V4));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        let r = Icmpv4Repr::parse(&icmp, &caps).unwrap();
        assert_eq!(r, Icmpv4Repr::EchoRequest { ident: 0xbeef, seq_no: 3, data: &[] });
        // Byte literal of the header fields that matter: version/IHL, total length, proto.
        assert_eq!(&pkt[..4], &[0x45, 0x00, 0x00, 0x1c]);
        assert_eq!(pkt[9], 1);
        assert_eq!(&pkt[16..20], &[10, 0, 0, 1]);
    }

    fn reply(src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> [u8; ECHO_LEN] {
        let mut buf = [0u8; ECHO_LEN];
        let icmp = Icmpv4Repr::EchoReply { ident, seq_no: 1, data: &[] };
        let ip =
            Ipv4Repr { src_addr: src, dst_addr: dst, next_header: IpProtocol::Icmp, payload_len: 8, hop_limit: 64 };
        let caps = ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut p, &caps);
        icmp.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
        buf
    }

    #[test]
    fn echo_reply_matching() {
        assert!(is_echo_reply(&reply(IPR_TUN_V4, SRC, 7), SRC, 7));
        assert!(!is_echo_reply(&reply(IPR_TUN_V4, SRC, 8), SRC, 7), "other ident");
        assert!(!is_echo_reply(&reply(Ipv4Addr::new(192, 0, 2, 1), SRC, 7), SRC, 7), "other source");
        assert!(!is_echo_reply(&build_echo_request(SRC, 7, 1), IPR_TUN_V4, 7), "a request");
        assert!(!is_echo_reply(&reply(IPR_TUN_V4, SRC, 7)[..27], SRC, 7), "truncated");
        assert!(!is_echo_reply(&[], SRC, 7));
        assert!(!is_echo_reply(&[0x60; 40], SRC, 7), "IPv6");
    }

    #[test]
    fn seq_classification() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(1), SeqClass::First);
        assert_eq!(t.record(2), SeqClass::InOrder);
        assert_eq!(t.record(5), SeqClass::Gap { missing: 2 });
        assert_eq!(t.record(4), SeqClass::Reordered);
        assert_eq!(t.record(4), SeqClass::Duplicate);
        assert_eq!(t.record(5), SeqClass::Duplicate);
        assert_eq!(t.record(3), SeqClass::Reordered);
        assert_eq!(t.record(200), SeqClass::Gap { missing: 194 });
        assert_eq!(t.record(100), SeqClass::TooOld);
        assert_eq!(t.record(199), SeqClass::Reordered);
        t.reset();
        assert_eq!(t.record(7), SeqClass::First);
        t.expect_from(1);
        assert_eq!(t.record(1), SeqClass::InOrder);
        t.expect_from(1);
        assert_eq!(t.record(3), SeqClass::Gap { missing: 2 });
    }

    #[test]
    fn seq_wraps_over_the_skipped_zero() {
        let mut t = SeqTracker::default();
        t.record(u32::MAX - 1);
        assert_eq!(t.record(u32::MAX), SeqClass::InOrder);
        assert_eq!(t.record(1), SeqClass::InOrder, "server skips 0 on wrap");
        assert_eq!(t.record(u32::MAX), SeqClass::Duplicate);
    }
}
