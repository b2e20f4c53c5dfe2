//! Mixnet impairment model: delay, jitter, downlink loss and downlink rate pacing.
//!
//! This kernel has no netem, and the mixnet's timing is what makes the real IPR hard to use
//! (docs/ipr-protocol.md §6.4, §7 items 1–3), so the double can impose it itself.
//!
//! Contract:
//! - Each message independently gets a one-way delay drawn uniformly from
//!   `[delay − jitter, delay + jitter]` (clamped at 0). Independent delays reorder messages,
//!   as Sphinx packets on independent mix paths do.
//! - Loss applies only to messages the caller marks as lossy: downlink Data responses, which
//!   the real IPR sends with `max_retransmissions(0)`. Control replies and the uplink are
//!   retransmitted by the mixnet, so they are only delayed, never lost.
//! - Pacing (`rate`, bits/s) serializes messages onto one link before the delay: a message
//!   leaves the link `len·8/rate` after the previous one did.
//! - Bounded: at most [`MAX_QUEUED`] messages in total and [`MAX_QUEUED_PER_PEER`] per peer;
//!   beyond that a message is refused (the caller drops and counts it).
//! - Deterministic: randomness comes from the caller's seeded RNG; time is passed in.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;

/// Upper bound on messages held by one queue.
pub const MAX_QUEUED: usize = 8192;
/// Upper bound on messages held for one peer, so that one client's backlog cannot fill the
/// whole queue (the real IPR's per-client channel is unbounded, docs/ipr-protocol.md §5.1).
pub const MAX_QUEUED_PER_PEER: usize = 1024;
/// Upper bound on bytes held by one queue: 8192 messages of up to 64 KiB would be 512 MiB.
/// 32 MiB holds 1 s of a 256 Mbit/s link, longer than any delay the model is used with.
pub const MAX_QUEUED_BYTES: usize = 32 << 20;

/// Impairment parameters; the default is a perfect link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ImpairConfig {
    /// Mean one-way delay, applied in each direction.
    pub delay: Duration,
    /// Half-width of the uniform jitter around `delay`.
    pub jitter: Duration,
    /// Probability in `[0, 1]` of losing a downlink Data response.
    pub loss: f64,
    /// Downlink pacing rate in bits per second; `None` = unlimited.
    pub rate_bps: Option<u64>,
}

impl ImpairConfig {
    /// True when messages in the given direction pass straight through.
    pub fn is_transparent(&self, downlink: bool) -> bool {
        let shaping = downlink && (self.loss > 0.0 || self.rate_bps.is_some());
        self.delay.is_zero() && self.jitter.is_zero() && !shaping
    }
}

/// Result of offering a message to the queue; refused buffers go back to the caller.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Held until its release time.
    Queued,
    /// Dropped by the loss model.
    Lost(BytesMut),
    /// Dropped because a bound was reached.
    Full(BytesMut),
}

/// One direction of the impaired link.
#[derive(Debug)]
pub(crate) struct ImpairQueue {
    /// Parameters for this direction.
    config: ImpairConfig,
    /// Whether loss and pacing apply (downlink) or only delay (uplink).
    downlink: bool,
    /// Messages ordered by release time, then by arrival.
    heap: BinaryHeap<Reverse<Held>>,
    /// Messages currently held per peer, for the per-peer bound.
    per_peer: HashMap<SocketAddr, usize>,
    /// Bytes of the messages held.
    bytes: usize,
    /// When the paced link finishes sending its last message.
    link_free: Option<Instant>,
    /// Arrival counter, the tie-breaker that keeps equal release times in FIFO order.
    arrivals: u64,
}

#[derive(Debug)]
struct Held {
    release: Instant,
    arrival: u64,
    peer: SocketAddr,
    message: BytesMut,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.release, self.arrival).cmp(&(other.release, other.arrival))
    }
}

impl ImpairQueue {
    /// A queue for one direction.
    pub(crate) fn new(config: ImpairConfig, downlink: bool) -> Self {
        Self {
            config,
            downlink,
            heap: BinaryHeap::new(),
            per_peer: HashMap::new(),
            bytes: 0,
            link_free: None,
            arrivals: 0,
        }
    }

    /// True when this direction needs no queue at all.
    pub(crate) fn is_transparent(&self) -> bool {
        self.config.is_transparent(self.downlink)
    }

    /// Offers a message for `peer`; `lossy` marks a downlink Data response.
    pub(crate) fn push(
        &mut self,
        peer: SocketAddr,
        message: BytesMut,
        lossy: bool,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Admit {
        let held_for_peer = self.per_peer.get(&peer).copied().unwrap_or(0);
        if self.heap.len() >= MAX_QUEUED
            || held_for_peer >= MAX_QUEUED_PER_PEER
            || self.bytes + message.len() > MAX_QUEUED_BYTES
        {
            return Admit::Full(message);
        }
        if self.downlink && lossy && self.config.loss > 0.0 && rng.gen_bool(self.config.loss.min(1.0)) {
            return Admit::Lost(message);
        }
        let mut leaves_link = now;
        if let (true, Some(rate)) = (self.downlink, self.config.rate_bps) {
            let start = self.link_free.map_or(now, |free| free.max(now));
            let bits = (message.len() as u128) * 8;
            let nanos = bits * 1_000_000_000 / u128::from(rate.max(1));
            leaves_link = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
            self.link_free = Some(leaves_link);
        }
        let release = leaves_link + self.sample_delay(rng);
        self.arrivals += 1;
        *self.per_peer.entry(peer).or_insert(0) += 1;
        self.bytes += message.len();
        self.heap.push(Reverse(Held { release, arrival: self.arrivals, peer, message }));
        Admit::Queued
    }

    /// The next message whose release time has come.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, BytesMut)> {
        if self.heap.peek()?.0.release > now {
            return None;
        }
        let Reverse(held) = self.heap.pop()?;
        self.bytes -= held.message.len();
        if let Some(count) = self.per_peer.get_mut(&held.peer) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&held.peer);
            }
        }
        Some((held.peer, held.message))
    }

    /// Release time of the earliest held message.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|held| held.0.release)
    }

    fn sample_delay(&self, rng: &mut impl Rng) -> Duration {
        let ImpairConfig { delay, jitter, .. } = self.config;
        if jitter.is_zero() {
            return delay;
        }
        let low = delay.saturating_sub(jitter);
        let high = delay.saturating_add(jitter);
        rng.gen_range(low..=high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    fn peer() -> SocketAddr {
        "192.0.2.1:1000".parse().unwrap()
    }

    /// A queue for one direction, a seeded rng and the start time.
    fn queue(config: ImpairConfig, downlink: bool, seed: u64) -> (ImpairQueue, StdRng, Instant) {
        (ImpairQueue::new(config, downlink), StdRng::seed_from_u64(seed), Instant::now())
    }

    #[test]
    fn fixed_delay_keeps_order_and_releases_on_time() {
        let config = ImpairConfig { delay: 100 * MS, ..Default::default() };
        let (mut q, mut rng, t0) = queue(config, true, 1);
        for i in 0..3u8 {
            assert!(matches!(q.push(peer(), BytesMut::from(&[i][..]), true, t0, &mut rng), Admit::Queued));
        }
        assert_eq!(q.poll_timeout(), Some(t0 + 100 * MS));
        assert!(q.pop_due(t0 + 99 * MS).is_none());
        let order: Vec<u8> = std::iter::from_fn(|| q.pop_due(t0 + 100 * MS)).map(|(_, m)| m[0]).collect();
        assert_eq!(order, vec![0, 1, 2]);
    }

    #[test]
    fn pacing_spaces_messages_by_their_serialization_time() {
        // 1 Mbit/s: 125 bytes take 1 ms.
        let config = ImpairConfig { rate_bps: Some(1_000_000), ..Default::default() };
        let (mut q, mut rng, t0) = queue(config, true, 1);
        for _ in 0..3 {
            q.push(peer(), BytesMut::from(&[0u8; 125][..]), true, t0, &mut rng);
        }
        assert!(q.pop_due(t0 + MS).is_some());
        assert!(q.pop_due(t0 + MS).is_none());
        assert!(q.pop_due(t0 + 3 * MS).is_some());
        assert!(q.pop_due(t0 + 3 * MS).is_some());
    }

    #[test]
    fn loss_hits_only_lossy_downlink_messages() {
        let config = ImpairConfig { loss: 1.0, ..Default::default() };
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut down = ImpairQueue::new(config, true);
        assert!(matches!(down.push(peer(), BytesMut::new(), true, t0, &mut rng), Admit::Lost(_)));
        assert!(matches!(down.push(peer(), BytesMut::new(), false, t0, &mut rng), Admit::Queued));
        let mut up = ImpairQueue::new(config, false);
        assert!(up.is_transparent());
        assert!(matches!(up.push(peer(), BytesMut::new(), true, t0, &mut rng), Admit::Queued));
    }

    #[test]
    fn the_byte_bound_refuses_large_messages_and_recovers() {
        let config = ImpairConfig { delay: MS, ..Default::default() };
        let (mut q, mut rng, t0) = queue(config, true, 1);
        let big = || BytesMut::zeroed(65_535);
        let fit = MAX_QUEUED_BYTES / 65_535;
        assert!(fit < MAX_QUEUED_PER_PEER, "the byte bound is the one that bites");
        for _ in 0..fit {
            assert!(matches!(q.push(peer(), big(), false, t0, &mut rng), Admit::Queued));
        }
        assert!(matches!(q.push(peer(), big(), false, t0, &mut rng), Admit::Full(_)));
        assert!(q.pop_due(t0 + MS).is_some());
        assert!(matches!(q.push(peer(), big(), false, t0, &mut rng), Admit::Queued));
    }

    #[test]
    fn the_per_peer_bound_refuses_and_recovers() {
        let config = ImpairConfig { delay: MS, ..Default::default() };
        let (mut q, mut rng, t0) = queue(config, true, 1);
        for _ in 0..MAX_QUEUED_PER_PEER {
            assert!(matches!(q.push(peer(), BytesMut::new(), false, t0, &mut rng), Admit::Queued));
        }
        assert!(matches!(q.push(peer(), BytesMut::new(), false, t0, &mut rng), Admit::Full(_)));
        let other: SocketAddr = "192.0.2.2:1".parse().unwrap();
        assert!(matches!(q.push(other, BytesMut::new(), false, t0, &mut rng), Admit::Queued));
        assert!(q.pop_due(t0 + MS).is_some());
        assert!(matches!(q.push(peer(), BytesMut::new(), false, t0, &mut rng), Admit::Queued));
    }

    #[test]
    fn jitter_stays_within_bounds_and_reorders() {
        let config = ImpairConfig { delay: 50 * MS, jitter: 40 * MS, ..Default::default() };
        let (mut q, mut rng, t0) = queue(config, false, 9);
        for i in 0..100u8 {
            q.push(peer(), BytesMut::from(&[i][..]), false, t0, &mut rng);
        }
        assert!(q.poll_timeout().unwrap() >= t0 + 10 * MS);
        let order: Vec<u8> = std::iter::from_fn(|| q.pop_due(t0 + 90 * MS)).map(|(_, m)| m[0]).collect();
        assert_eq!(order.len(), 100);
        assert!(order.windows(2).any(|w| w[0] > w[1]), "independent delays reorder");
    }
}
