//! Bounded queue of finished outbound messages, over a pool of reused buffers.
//!
//! Contract:
//! - At most [`TX_RING_CAP`] queued messages. When full, a new *data* message evicts the oldest
//!   queued data message (never the front one, which the driver may be transmitting between
//!   `poll_transmit` and `pop_transmit`); with nothing to evict the new data message is dropped.
//!   Control messages (connect, disconnect) are never dropped: at most a handful exist per
//!   session, so they may exceed the cap by that handful. Every drop is counted by the caller.
//! - Buffers return to a free list of at most [`FREE_CAP`] buffers when popped, so the steady
//!   state allocates nothing. A buffer that grew beyond [`KEEP_CAPACITY_MAX`] (a jumbo packet
//!   sent alone) is freed instead of kept, so the pool stays ≤ 64 × 4 KiB.
//! - A message is `buf[start..]`: the session writes a variable-length header right-aligned in
//!   the buffer's headroom instead of shifting the bundle.

use std::collections::VecDeque;

/// Queued messages at most (plus the few control messages, see the module doc).
pub const TX_RING_CAP: usize = 256;
/// Spare buffers kept for reuse.
pub const FREE_CAP: usize = 64;
/// Initial capacity of a message buffer: one full bundle with its headers, rounded up.
pub const BUF_CAPACITY: usize = 2048;
/// Buffers larger than this are not recycled.
pub const KEEP_CAPACITY_MAX: usize = 4096;

/// What a queued message carries: control messages (connect, disconnect) ask for a reply at
/// once, which the transport may need to provision for (reply SURBs on the mixnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A control request (connect, disconnect): expects a reply, never dropped.
    Control,
    /// A bundle of IP packets.
    Data,
}

#[derive(Debug)]
struct Slot {
    buf: Vec<u8>,
    start: usize,
    kind: Kind,
}

/// Result of [`TxRing::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued without dropping anything.
    Queued,
    /// Queued after evicting the oldest data message.
    EvictedOldest,
    /// The new data message itself was dropped.
    DroppedNew,
}

/// The bounded FIFO of finished messages and the pool of their buffers.
#[derive(Debug)]
pub struct TxRing {
    queue: VecDeque<Slot>,
    free: Vec<Vec<u8>>,
    cap: usize,
}

impl Default for TxRing {
    fn default() -> Self {
        TxRing::new()
    }
}

impl TxRing {
    /// A ring of [`TX_RING_CAP`] data messages.
    pub fn new() -> Self {
        TxRing::with_cap(TX_RING_CAP)
    }

    /// A ring of at most `cap` data messages (1..=[`TX_RING_CAP`]).
    pub fn with_cap(cap: usize) -> Self {
        let cap = cap.clamp(1, TX_RING_CAP);
        TxRing { queue: VecDeque::with_capacity(cap), free: Vec::with_capacity(FREE_CAP), cap }
    }

    /// An empty buffer for a new message (recycled when possible).
    pub fn take_buf(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Vec::with_capacity(BUF_CAPACITY),
        }
    }

    /// Give back a buffer that was taken but not queued.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.free.len() < FREE_CAP && buf.capacity() <= KEEP_CAPACITY_MAX {
            self.free.push(buf);
        }
    }

    /// Queue `buf[start..]` as the newest message.
    pub fn push(&mut self, buf: Vec<u8>, start: usize, kind: Kind) -> Pushed {
        let mut outcome = Pushed::Queued;
        if self.queue.len() >= self.cap {
            // Skip index 0: it may be in flight between poll_transmit and pop_transmit.
            let victim = self.queue.iter().skip(1).position(|s| s.kind == Kind::Data).map(|i| i + 1);
            match (victim, kind) {
                (Some(i), _) => {
                    if let Some(old) = self.queue.remove(i) {
                        self.recycle(old.buf);
                    }
                    outcome = Pushed::EvictedOldest;
                }
                (None, Kind::Data) => {
                    self.recycle(buf);
                    return Pushed::DroppedNew;
                }
                (None, Kind::Control) => {}
            }
        }
        self.queue.push_back(Slot { buf, start, kind });
        outcome
    }

    /// The oldest queued message and its kind.
    pub fn front(&self) -> Option<(&[u8], Kind)> {
        self.queue.front().map(|s| (s.buf.get(s.start..).unwrap_or(&[]), s.kind))
    }

    /// Remove the oldest message; returns its length and kind.
    pub fn pop(&mut self) -> Option<(usize, Kind)> {
        let slot = self.queue.pop_front()?;
        let len = slot.buf.len().saturating_sub(slot.start);
        let kind = slot.kind;
        self.recycle(slot.buf);
        Some((len, kind))
    }

    /// Drops every queued message (their buffers go back to the pool).
    pub fn clear(&mut self) {
        while self.pop().is_some() {}
    }

    /// Data messages the ring holds at most.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ring: &mut TxRing, tag: u8) -> Vec<u8> {
        let mut b = ring.take_buf();
        b.extend_from_slice(&[0, 0, tag]);
        b
    }

    #[test]
    fn fifo_with_offsets_and_recycling() {
        let mut r = TxRing::new();
        let b = msg(&mut r, 1);
        assert_eq!(r.push(b, 2, Kind::Data), Pushed::Queued);
        let b = msg(&mut r, 2);
        r.push(b, 1, Kind::Control);
        assert_eq!(r.front(), Some((&[1u8][..], Kind::Data)));
        assert_eq!(r.pop(), Some((1, Kind::Data)));
        assert_eq!(r.front(), Some((&[0u8, 2][..], Kind::Control)));
        assert_eq!(r.pop(), Some((2, Kind::Control)));
        assert_eq!(r.pop(), None);
        assert_eq!(r.free.len(), 2, "both buffers back in the pool");
        let b = r.take_buf();
        assert!(b.is_empty() && b.capacity() >= BUF_CAPACITY);
    }

    #[test]
    fn full_ring_evicts_oldest_data_but_not_front_or_control() {
        let mut r = TxRing::new();
        let b = msg(&mut r, 0);
        r.push(b, 2, Kind::Data); // front: in flight, must survive
        let b = msg(&mut r, 1);
        r.push(b, 2, Kind::Control);
        for i in 2..TX_RING_CAP {
            let b = msg(&mut r, i as u8);
            r.push(b, 2, Kind::Data);
        }
        assert_eq!(r.len(), TX_RING_CAP);
        let b = msg(&mut r, 0xee);
        assert_eq!(r.push(b, 2, Kind::Data), Pushed::EvictedOldest);
        assert_eq!(r.len(), TX_RING_CAP);
        let order: Vec<u8> = std::iter::from_fn(|| {
            let f = r.front().map(|(m, _)| m[0]);
            r.pop();
            f
        })
        .collect();
        assert_eq!(&order[..3], &[0, 1, 3], "message 2 (oldest data after the front) evicted");
        assert_eq!(*order.last().unwrap(), 0xee);
    }

    #[test]
    fn control_is_never_dropped_and_data_dropped_when_nothing_to_evict() {
        let mut r = TxRing::new();
        for _ in 0..TX_RING_CAP {
            let b = msg(&mut r, 1);
            r.push(b, 0, Kind::Control);
        }
        let b = msg(&mut r, 2);
        assert_eq!(r.push(b, 0, Kind::Data), Pushed::DroppedNew);
        let b = msg(&mut r, 3);
        assert_eq!(r.push(b, 0, Kind::Control), Pushed::Queued);
        assert_eq!(r.len(), TX_RING_CAP + 1);
    }

    #[test]
    fn jumbo_buffers_are_not_kept() {
        let mut r = TxRing::new();
        let mut b = r.take_buf();
        b.resize(KEEP_CAPACITY_MAX * 4, 0);
        r.push(b, 0, Kind::Data);
        r.pop();
        assert!(r.free.is_empty());
    }
}
