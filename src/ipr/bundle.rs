//! MultiIpPacketCodec framing: `([len u16 BE][IP packet])*` (docs/ipr-protocol.md §2.1).
//!
//! Contract:
//! - [`Bundler`] appends packets into a message buffer owned by the caller (reused from a free
//!   list by the session, so no allocation per packet). The buffer starts with `headroom` bytes
//!   reserved for the LP + IPR headers, written once the bundle is closed.
//! - A bundle never exceeds [`BUNDLE_BUDGET`] unless it holds a single packet that is bigger on
//!   its own; such a packet goes alone in its own message (unlike the server encoder, which
//!   buffers it, docs/ipr-protocol.md §2.2, we close it at once: it cannot share anyway).
//! - [`Unbundler`] iterates the packets of a received bundle as `&[u8]` slices of the message
//!   (zero-copy). It stops at a truncated length prefix or packet and records that, like the
//!   published decoder, which ignores an incomplete tail (docs/ipr-protocol.md §2.3). Zero-length
//!   entries are yielded as empty slices, as the published decoder does; the session filters them.

use super::data::DATA_REQUEST_HEADER_TYPICAL;
use super::lp::LP_HEADER_LEN;

/// Largest serialized `NymMessage` that fits one regular Sphinx packet: fragment payload
/// 1604 B minus the 1-byte padding marker, and then one more byte to stay strictly below
/// (docs/performance.md §1.2: "fits iff < 1604 B, i.e. NymMessage ≤ 1602 B").
pub const MAX_NYM_MESSAGE_ONE_PACKET: usize = 1602;

/// `NymMessage` bytes around our payload for an anonymous (Repliable) message with no reply
/// SURBs: 1 B type tag + 16 B sender tag + 1 B content tag + 4 B SURB-block prefix
/// (docs/performance.md §3.3; cross-check: its "1500 B IP, v8, 0 SURBs" row is 1500+2+6+22 = 1530).
pub const REPLIABLE_OVERHEAD: usize = 22;

/// Byte budget of one uplink bundle, length prefixes included: the largest bundle whose
/// message (LP 16 + IPR data header 6 + bundle) still fits one regular Sphinx packet when no
/// SURBs ride along: 1602 − 22 − 16 − 6 = 1558. (Reply SURBs, when attached, add whole packets
/// of their own; the budget then keeps the data part at one packet.)
pub const BUNDLE_BUDGET: usize =
    MAX_NYM_MESSAGE_ONE_PACKET - REPLIABLE_OVERHEAD - LP_HEADER_LEN - DATA_REQUEST_HEADER_TYPICAL;

/// Length prefix of each packet in a bundle.
pub const LEN_PREFIX: usize = 2;

/// Smallest IP packet worth keeping a bundle open for (an IPv4 header, 20 B). A bundle with
/// less room than this left is closed at once instead of waiting for a flush.
const MIN_IP_PACKET: usize = 20;

/// A packet that cannot be bundled at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet of {0} bytes exceeds the u16 length prefix")]
pub struct TooLarge(pub usize);

/// Appends packets into a message buffer after `headroom` reserved bytes.
#[derive(Debug, Clone, Copy)]
pub struct Bundler {
    budget: usize,
    headroom: usize,
}

impl Bundler {
    /// A bundler closing bundles at `budget` bytes (prefixes included), after `headroom`
    /// reserved bytes.
    pub const fn new(budget: usize, headroom: usize) -> Self {
        Bundler { budget, headroom }
    }

    /// Bytes reserved in front of the bundle for the headers.
    pub const fn headroom(&self) -> usize {
        self.headroom
    }

    /// Reset `buf` to an empty bundle (headroom zeroed, capacity kept).
    pub fn begin(&self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.resize(self.headroom, 0);
    }

    /// Bytes of bundle (prefixes included) currently in `buf`.
    pub fn bundle_len(&self, buf: &[u8]) -> usize {
        buf.len().saturating_sub(self.headroom)
    }

    /// The bundle part of `buf`.
    pub fn bundle<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.headroom..).unwrap_or(&[])
    }

    /// Whether a packet of `pkt_len` bytes may be appended to `buf` (an empty bundle takes
    /// anything up to 65 535 bytes).
    pub fn has_room(&self, buf: &[u8], pkt_len: usize) -> bool {
        let used = self.bundle_len(buf);
        used == 0 || used + LEN_PREFIX + pkt_len <= self.budget
    }

    /// Whether `buf` should be closed now: no further minimal packet would fit.
    pub fn is_full(&self, buf: &[u8]) -> bool {
        self.bundle_len(buf) + LEN_PREFIX + MIN_IP_PACKET > self.budget
    }

    /// Append one packet. The caller checks [`has_room`](Self::has_room) first; this only
    /// refuses what the framing itself cannot express.
    pub fn append(&self, buf: &mut Vec<u8>, pkt: &[u8]) -> Result<(), TooLarge> {
        let len = u16::try_from(pkt.len()).map_err(|_| TooLarge(pkt.len()))?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(pkt);
        Ok(())
    }
}

/// Zero-copy iterator over the packets of a bundle.
#[derive(Debug, Clone)]
pub struct Unbundler<'a> {
    rest: &'a [u8],
    truncated: bool,
}

impl<'a> Unbundler<'a> {
    /// Iterate the packets of `bundle` (the bytes after the IPR data header).
    pub fn new(bundle: &'a [u8]) -> Self {
        Unbundler { rest: bundle, truncated: false }
    }

    /// An iterator that yields nothing.
    pub fn empty() -> Self {
        Unbundler::new(&[])
    }

    /// True once the iterator met an incomplete length prefix or packet at the end.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl<'a> Iterator for Unbundler<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((len, body)) = self.rest.split_first_chunk::<LEN_PREFIX>() else {
            self.truncated = true;
            self.rest = &[];
            return None;
        };
        let len = u16::from_be_bytes(*len) as usize;
        let Some((pkt, rest)) = body.split_at_checked(len) else {
            self.truncated = true;
            self.rest = &[];
            return None;
        };
        self.rest = rest;
        Some(pkt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use nym_ip_packet_requests::codec::{IprPacket, MultiIpPacketCodec};

    const HEAD: usize = 24;

    fn published_decode(bundle: &[u8]) -> Vec<Vec<u8>> {
        let mut codec = MultiIpPacketCodec::new();
        let mut src = BytesMut::from(bundle);
        let mut out = Vec::new();
        while let Some(IprPacket::Data(p)) = codec.decode_one(&mut src).unwrap() {
            out.push(p.to_vec());
        }
        out
    }

    #[test]
    fn budget_is_derived_from_one_sphinx_packet() {
        assert_eq!(BUNDLE_BUDGET, 1558);
        // 22 + 16 + 6 + 1558 = the largest one-packet NymMessage.
        assert_eq!(REPLIABLE_OVERHEAD + LP_HEADER_LEN + 6 + BUNDLE_BUDGET, 1602);
    }

    #[test]
    fn bundles_decode_with_the_published_codec() {
        let b = Bundler::new(BUNDLE_BUDGET, HEAD);
        let mut buf = Vec::new();
        b.begin(&mut buf);
        let pkts: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 40 + i * 100]).collect();
        for p in &pkts {
            assert!(b.has_room(&buf, p.len()));
            b.append(&mut buf, p).unwrap();
        }
        assert_eq!(&buf[..HEAD], &[0u8; HEAD]);
        assert_eq!(published_decode(b.bundle(&buf)), pkts);
        let ours: Vec<&[u8]> = Unbundler::new(b.bundle(&buf)).collect();
        assert_eq!(ours, pkts.iter().map(|p| &p[..]).collect::<Vec<_>>());
    }

    #[test]
    fn budget_is_respected_and_big_packets_go_alone() {
        let b = Bundler::new(BUNDLE_BUDGET, HEAD);
        let mut buf = Vec::new();
        b.begin(&mut buf);
        // 1556 + 2 = exactly the budget: fits, and then the bundle is full.
        assert!(b.has_room(&buf, BUNDLE_BUDGET - LEN_PREFIX));
        b.append(&mut buf, &[0u8; BUNDLE_BUDGET - LEN_PREFIX]).unwrap();
        assert_eq!(b.bundle_len(&buf), BUNDLE_BUDGET);
        assert!(b.is_full(&buf));
        assert!(!b.has_room(&buf, 1));

        b.begin(&mut buf);
        b.append(&mut buf, &[0u8; 1000]).unwrap();
        assert!(!b.is_full(&buf));
        assert!(!b.has_room(&buf, 600), "1002 + 602 > 1558");
        assert!(b.has_room(&buf, 554), "1002 + 556 = 1558");

        // An empty bundle takes a single oversized packet (it goes alone), up to u16::MAX.
        b.begin(&mut buf);
        assert!(b.has_room(&buf, 9000));
        b.append(&mut buf, &[7u8; 9000]).unwrap();
        assert!(b.is_full(&buf));
        assert_eq!(published_decode(b.bundle(&buf)), vec![vec![7u8; 9000]]);
        b.begin(&mut buf);
        assert_eq!(b.append(&mut buf, &vec![0u8; 65_536]), Err(TooLarge(65_536)));
    }

    #[test]
    fn unbundler_stops_on_truncation() {
        let bundle = [0x00, 0x02, 0xaa, 0xbb, 0x00, 0x00, 0x00, 0x05, 0x01];
        let mut u = Unbundler::new(&bundle);
        assert_eq!(u.next(), Some(&[0xaa, 0xbb][..]));
        assert_eq!(u.next(), Some(&[][..]), "zero-length entry, as the published decoder");
        assert_eq!(u.next(), None);
        assert!(u.truncated());
        assert_eq!(published_decode(&bundle).len(), 2, "the published decoder agrees");

        let mut u = Unbundler::new(&[0x00]);
        assert_eq!(u.next(), None);
        assert!(u.truncated());
        let mut u = Unbundler::empty();
        assert_eq!(u.next(), None);
        assert!(!u.truncated());
    }
}
