//! Per-client downlink handler: the IPR's `ConnectedClientHandler` without the task.
//!
//! Contract (docs/ipr-protocol.md §2.2, §2.4, §6.2 items 8–9):
//! - Packets from the TUN are bundled with the MultiIpPacketCodec encoder rules, target
//!   1500 bytes: a lone packet with `len + 2 > 1500` into an empty buffer is emitted alone at
//!   once; a packet that would overflow a non-empty buffer first emits the buffer and is then
//!   *buffered* (so two 1498-byte packets give one exactly-1500-byte bundle holding only the
//!   first); otherwise `[len u16 BE][packet]` is appended.
//! - A flush tick fires every `buffer_timeout` (connect request value, else the configured
//!   default, 20 ms). Like the real `tokio::time::interval`, the tick grid runs freely and is
//!   `reset()` whenever a bundle is emitted, so a lone packet waits 0…buffer_timeout. Ticks
//!   on an empty buffer emit nothing, so only a non-empty buffer needs a wake-up.
//! - Each bundle becomes one Data response with the connect version, framed for the
//!   connect-time stream id with seq 1, 2, 3, … (0 is skipped on wrap: it belongs to inline
//!   control replies), or raw for a v8 client.
//! - Memory: one bundle buffer of at most 1500 bytes (or one single oversized packet); the
//!   allocation is reclaimed after the emitted `Bytes` is dropped, so steady state does not
//!   allocate per packet.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::wire::Envelope;

/// MultiIpPacketCodec bundle target (`codec::MAX_PACKET_SIZE`), not a hard limit.
pub const BUNDLE_TARGET: usize = 1500;
/// Bundle entries are prefixed by a u16 big-endian length.
const LENGTH_PREFIX: usize = 2;

/// A packet longer than the u16 length prefix can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("packet of {0} bytes does not fit the u16 length prefix")]
pub struct Oversize(pub usize);

/// Downlink state of one connected client.
#[derive(Debug)]
pub(crate) struct Downlink {
    /// Stream id of the Connect frame; `None` for a v8 (bare) client.
    stream_id: Option<u64>,
    /// Version byte of the Connect request, mirrored on every Data response
    /// (docs/ipr-protocol.md §1.8).
    version: u8,
    /// Next LP sequence number for a Data response; starts at 1.
    next_seq: u32,
    /// The bundle being built: `([len u16 BE][packet])*`.
    bundle: BytesMut,
    /// Flush tick period (`buffer_timeout`).
    interval: Duration,
    /// Instant the tick grid was last (re)started: creation or the last emitted bundle.
    anchor: Instant,
    /// Next tick that matters, i.e. only while the bundle is non-empty.
    deadline: Option<Instant>,
}

impl Downlink {
    /// A fresh handler; `interval` must be non-zero (the server guarantees it).
    pub(crate) fn new(stream_id: Option<u64>, version: u8, interval: Duration, now: Instant) -> Self {
        Self {
            stream_id,
            version,
            next_seq: 1,
            bundle: BytesMut::with_capacity(BUNDLE_TARGET),
            interval: interval.max(Duration::from_millis(1)),
            anchor: now,
            deadline: None,
        }
    }

    /// Version byte for this client's Data responses.
    pub(crate) fn version(&self) -> u8 {
        self.version
    }

    /// Adds one packet; returns a finished bundle if the encoder emitted one.
    pub(crate) fn push(&mut self, packet: &[u8], now: Instant) -> Result<Option<Bytes>, Oversize> {
        let len = u16::try_from(packet.len()).map_err(|_| Oversize(packet.len()))?;
        let entry = packet.len() + LENGTH_PREFIX;
        if self.bundle.is_empty() && entry > BUNDLE_TARGET {
            self.append(len, packet);
            return Ok(Some(self.emit(now)));
        }
        let emitted = (self.bundle.len() + entry > BUNDLE_TARGET).then(|| self.emit(now));
        if self.bundle.is_empty() {
            self.deadline = Some(self.next_tick_after(now));
        }
        self.append(len, packet);
        Ok(emitted)
    }

    /// When the next flush tick needs handling, if the buffer holds anything.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Flush tick: emits the buffered bundle if the tick is due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<Bytes> {
        match self.deadline {
            Some(deadline) if deadline <= now => {
                self.deadline = None;
                (!self.bundle.is_empty()).then(|| self.emit(now))
            }
            _ => None,
        }
    }

    /// Envelope for the next Data response: connect stream id, seq 1, 2, …, skipping 0.
    pub(crate) fn next_envelope(&mut self) -> Envelope {
        let seq = self.next_seq;
        self.next_seq = match self.next_seq.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        Envelope { stream_id: self.stream_id, seq }
    }

    fn append(&mut self, len: u16, packet: &[u8]) {
        // Reclaims the previous bundle's allocation once its `Bytes` has been dropped.
        self.bundle.reserve(packet.len() + LENGTH_PREFIX);
        self.bundle.put_u16(len);
        self.bundle.put_slice(packet);
    }

    /// Takes the buffer as a finished bundle and resets the tick grid (`interval.reset()`).
    fn emit(&mut self, now: Instant) -> Bytes {
        self.anchor = now;
        self.deadline = None;
        self.bundle.split().freeze()
    }

    /// First tick of the free-running grid `anchor + k·interval` (k ≥ 1) after `now`.
    fn next_tick_after(&self, now: Instant) -> Instant {
        let elapsed = now.saturating_duration_since(self.anchor).as_nanos();
        let period = self.interval.as_nanos().max(1);
        let into_period = u64::try_from(elapsed % period).unwrap_or(0);
        now + self.interval.saturating_sub(Duration::from_nanos(into_period))
    }

    #[cfg(test)]
    pub(crate) fn set_next_seq(&mut self, seq: u32) {
        self.next_seq = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn handler(now: Instant) -> Downlink {
        Downlink::new(Some(7), 10, 20 * MS, now)
    }

    #[test]
    fn two_1498_byte_packets_give_an_exact_1500_byte_bundle() {
        let t0 = Instant::now();
        let mut h = handler(t0);
        let p1 = [0xaa; 1498];
        let p2 = [0xbb; 1498];
        assert_eq!(h.push(&p1, t0).unwrap(), None);
        let first = h.push(&p2, t0).unwrap().expect("second packet flushes the first");
        assert_eq!(first.len(), 1500);
        assert_eq!(&first[..2], &[0x05, 0xda]);
        assert!(first[2..].iter().all(|b| *b == 0xaa));
        // The second one leaves on the next tick, one interval after the reset.
        assert_eq!(h.poll_timeout(), Some(t0 + 20 * MS));
        assert_eq!(h.handle_timeout(t0 + 19 * MS), None);
        let second = h.handle_timeout(t0 + 20 * MS).unwrap();
        assert_eq!(second.len(), 1500);
        assert_eq!(h.poll_timeout(), None);
    }

    #[test]
    fn ten_100_byte_packets_make_one_1020_byte_bundle() {
        let t0 = Instant::now();
        let mut h = handler(t0);
        for _ in 0..10 {
            assert_eq!(h.push(&[1; 100], t0 + MS).unwrap(), None);
        }
        let bundle = h.handle_timeout(t0 + 20 * MS).unwrap();
        assert_eq!(bundle.len(), 1020);
    }

    #[test]
    fn a_packet_bigger_than_the_target_leaves_alone_at_once() {
        let t0 = Instant::now();
        let mut h = handler(t0);
        let bundle = h.push(&[2; 1600], t0).unwrap().unwrap();
        assert_eq!(bundle.len(), 1602);
        assert_eq!(h.poll_timeout(), None);
        // ... but into a non-empty buffer it flushes the buffer and waits itself.
        h.push(&[3; 10], t0).unwrap();
        let old = h.push(&[4; 1600], t0).unwrap().unwrap();
        assert_eq!(old.len(), 12);
        assert_eq!(h.handle_timeout(t0 + 20 * MS).unwrap().len(), 1602);
    }

    #[test]
    fn the_tick_grid_runs_freely_until_a_bundle_resets_it() {
        let t0 = Instant::now();
        let mut h = handler(t0);
        // No emission since t0: ticks at t0+20, t0+40, ...; a packet at t0+45 waits to t0+60.
        h.push(&[1; 40], t0 + 45 * MS).unwrap();
        assert_eq!(h.poll_timeout(), Some(t0 + 60 * MS));
        h.handle_timeout(t0 + 60 * MS).unwrap();
        // The flush reset the grid at t0+60: a packet at t0+65 waits to t0+80.
        h.push(&[1; 40], t0 + 65 * MS).unwrap();
        assert_eq!(h.poll_timeout(), Some(t0 + 80 * MS));
    }

    #[test]
    fn seq_starts_at_one_and_skips_zero_on_wrap() {
        let mut h = handler(Instant::now());
        assert_eq!(h.next_envelope(), Envelope { stream_id: Some(7), seq: 1 });
        assert_eq!(h.next_envelope().seq, 2);
        h.set_next_seq(u32::MAX);
        assert_eq!(h.next_envelope().seq, u32::MAX);
        assert_eq!(h.next_envelope().seq, 1);
    }

    #[test]
    fn oversize_packets_are_refused() {
        let mut h = handler(Instant::now());
        let big = vec![0; 70_000];
        assert_eq!(h.push(&big, Instant::now()), Err(Oversize(70_000)));
    }
}
