//! Incremental Internet checksum updates (RFC 1624).
//!
//! Contract: every rewrite in the pipeline changes a handful of 16-bit words (an address, a
//! port, an echo id, an MSS value). Instead of re-summing the whole segment (up to 64 KiB for a
//! reassembled datagram, ~1500 B on the hot path) we add the difference of the changed words to
//! the existing checksum, using RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`. That is O(changed
//! words) instead of O(packet), and it keeps a *wrong* checksum wrong: a corrupted segment still
//! fails verification at the end host, which a full recomputation would silently "repair".
//!
//! Eqn. 3 (not eqn. 2 of RFC 1141) is used because it never yields the 0x0000/-0 ambiguity for
//! a non-zero input (RFC 1624 §3).
//!
//! A [`Delta`] accumulates `~m + m'` for any number of words; the same delta of an address change
//! is applied to the IPv4 header checksum and to the TCP/UDP/ICMPv6 pseudo-header checksum.

/// Accumulated one's-complement difference between old and new 16-bit words.
///
/// The accumulator is a `u64` so that no intermediate fold is needed: even a full IPv6 address
/// pair (16 words, each adding at most 2 × 0xffff) is far from overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delta(u64);

impl Delta {
    /// Record that the big-endian word `old` at an *even* offset (relative to the start of the
    /// checksummed data) became `new`.
    pub(crate) fn word(&mut self, old: u16, new: u16) {
        // An unchanged word would add 0xffff (-0): harmless, but keep `is_zero` meaningful.
        if old != new {
            self.0 += u64::from(!old) + u64::from(new);
        }
    }

    /// Like [`Delta::word`] for a 16-bit value at an *odd* offset (e.g. an MSS option behind a
    /// single NOP). Its two bytes fall into two different checksum words as (low byte, high
    /// byte), which in one's-complement arithmetic is the byte-swapped value (RFC 1071 §2(B)).
    pub(crate) fn word_at(&mut self, odd: bool, old: u16, new: u16) {
        if odd {
            self.word(old.swap_bytes(), new.swap_bytes());
        } else {
            self.word(old, new);
        }
    }

    /// Record a change of an even-length, even-aligned byte string (an IP address).
    pub(crate) fn bytes(&mut self, old: &[u8], new: &[u8]) {
        debug_assert_eq!(old.len(), new.len());
        for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
            self.word(u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([n[0], n[1]]));
        }
    }

    /// Add another delta (e.g. address delta + port delta).
    pub(crate) fn add(&mut self, other: Delta) {
        self.0 += other.0;
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// The new checksum field value, given the old one (RFC 1624 eqn. 3).
    pub(crate) fn apply(self, checksum: u16) -> u16 {
        !fold(u64::from(!checksum) + self.0)
    }
}

/// Fold a wide one's-complement sum to 16 bits (end-around carry).
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// RFC 1071 one's-complement sum of `data` (not complemented); an odd trailing byte is padded
/// with zero. Used by tests and for the rare full recomputations.
#[cfg(test)]
pub(crate) fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold(acc)
}

/// Read the big-endian u16 at `off`; `None` if out of bounds.
pub(crate) fn read16(buf: &[u8], off: usize) -> Option<u16> {
    let b = buf.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Write a big-endian u16 at `off`; returns `false` (and writes nothing) if out of bounds.
pub(crate) fn write16(buf: &mut [u8], off: usize, value: u16) -> bool {
    match off.checked_add(2).and_then(|end| buf.get_mut(off..end)) {
        Some(b) => {
            b.copy_from_slice(&value.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Apply `delta` to the checksum field at `off` (no-op if out of bounds or the delta is zero).
pub(crate) fn patch(buf: &mut [u8], off: usize, delta: Delta) {
    if delta.is_zero() {
        return;
    }
    if let Some(old) = read16(buf, off) {
        write16(buf, off, delta.apply(old));
    }
}

/// Like [`patch`] for a UDP checksum: 0 means "no checksum" over IPv4 (RFC 768) and stays 0; a
/// computed 0 is transmitted as 0xffff (RFC 768, RFC 8200 §8.1).
pub(crate) fn patch_udp(buf: &mut [u8], off: usize, delta: Delta) {
    match read16(buf, off) {
        Some(0) | None => {}
        Some(old) => {
            let new = delta.apply(old);
            write16(buf, off, if new == 0 { 0xffff } else { new });
        }
    }
}

/// Write a 16-bit word at an even offset and record the change into `delta`.
pub(crate) fn set16(buf: &mut [u8], off: usize, new: u16, delta: &mut Delta) {
    if let Some(old) = read16(buf, off) {
        write16(buf, off, new);
        delta.word(old, new);
    }
}

/// Overwrite an even-aligned byte string (an address) and record the change into `delta`.
pub(crate) fn set_bytes(buf: &mut [u8], off: usize, new: &[u8], delta: &mut Delta) {
    if let Some(dst) = off.checked_add(new.len()).and_then(|end| buf.get_mut(off..end)) {
        let mut old = [0u8; 16];
        let old = &mut old[..new.len().min(16)];
        old.copy_from_slice(&dst[..old.len()]);
        dst.copy_from_slice(new);
        delta.bytes(old, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(data: &[u8]) -> u16 {
        !sum(data)
    }

    #[test]
    fn incremental_matches_full_even_and_odd() {
        let mut data: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        data[10] = 0;
        data[11] = 0;
        let ck = full(&data);
        data[10..12].copy_from_slice(&ck.to_be_bytes());
        assert_eq!(sum(&data), 0xffff);

        // Even word change.
        let mut d = Delta::default();
        set16(&mut data, 20, 0xbeef, &mut d);
        patch(&mut data, 10, d);
        assert_eq!(sum(&data), 0xffff);

        // Odd-offset u16 change.
        let old = u16::from_be_bytes([data[33], data[34]]);
        data[33..35].copy_from_slice(&0x05b4u16.to_be_bytes());
        let mut d = Delta::default();
        d.word_at(true, old, 0x05b4);
        patch(&mut data, 10, d);
        assert_eq!(sum(&data), 0xffff);

        // Address-sized change.
        let mut d = Delta::default();
        set_bytes(&mut data, 40, &[10, 0, 3, 7], &mut d);
        patch(&mut data, 10, d);
        assert_eq!(sum(&data), 0xffff);
    }

    #[test]
    fn udp_zero_stays_zero() {
        let mut b = [0u8; 8];
        let mut d = Delta::default();
        d.word(1, 2);
        patch_udp(&mut b, 6, d);
        assert_eq!(read16(&b, 6), Some(0));
    }

    #[test]
    fn out_of_bounds_is_noop() {
        let mut b = [1u8; 3];
        assert!(!write16(&mut b, 2, 7));
        assert_eq!(read16(&b, 2), None);
        let mut d = Delta::default();
        set16(&mut b, usize::MAX, 1, &mut d);
        set_bytes(&mut b, 1, &[1, 2, 3, 4], &mut d);
        assert!(d.is_zero());
    }
}
