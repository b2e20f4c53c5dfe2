//! When to hand the mixnet client another data message: only when its send queue is nearly
//! empty, so that packets wait in our open bundle, where they share one message, rather than
//! in the SDK's queue, one message each.
//!
//! The SDK sends one Sphinx packet per Poisson tick (20 ms mean by default, 4 ms with the fast
//! profile) and queues the rest; whatever we hand it early only waits there. So the session
//! keeps its bundle open, and its finished messages queued, while the SDK is busy: a trickle
//! of TCP ACKs behind a download, which used to leave as one message per ACK (585 messages for
//! 675 packets in the first run on a real network), shares messages instead, and a bulk
//! upload queues in the session's bounded ring, whose overflow drops the oldest message, not
//! in an unbounded SDK queue whose delay TCP would read as a multi-second round trip.
//!
//! The SDK publishes its queue length ([`nym_sdk::mixnet::LaneQueueLengths`]) only when it
//! pops a packet, so a length read right after a send can be one tick stale; [`Pacer`] also
//! spaces data messages by at least a tick. An idle link is never held back: with the queue
//! empty and the last send a tick ago, a packet leaves at once.

use std::time::{Duration, Instant};

/// Packets the SDK may have queued (over all lanes) before we hold further data back: enough
/// for the next tick to find one, so the Poisson stream never sends a dummy while we wait.
pub const MAX_BACKLOG: usize = 3;

/// Decides whether the transport takes a data message now.
#[derive(Debug, Clone)]
pub struct Pacer {
    tick: Duration,
    last_data: Option<Instant>,
}

impl Pacer {
    /// `tick`: the client's mean Poisson sending interval.
    pub fn new(tick: Duration) -> Self {
        Pacer { tick, last_data: None }
    }

    /// May a data message go now, with `backlog` packets queued in the SDK?
    pub fn ready(&self, backlog: usize, now: Instant) -> bool {
        backlog <= MAX_BACKLOG && self.last_data.is_none_or(|t| now.saturating_duration_since(t) >= self.tick)
    }

    /// When to ask again while not ready (the SDK drains one packet per tick).
    pub fn retry_after(&self) -> Duration {
        self.tick
    }

    /// Records a data message handed to the SDK at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last_data = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_client_takes_a_message_at_once() {
        let p = Pacer::new(Duration::from_millis(20));
        assert!(p.ready(0, Instant::now()));
    }

    #[test]
    fn a_busy_queue_or_a_recent_send_holds_data_back() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(4));
        assert!(!p.ready(MAX_BACKLOG + 1, t0), "the SDK queue is full enough");
        p.sent(t0);
        assert!(!p.ready(0, t0 + Duration::from_millis(1)), "the queue length may be stale");
        assert!(p.ready(0, t0 + Duration::from_millis(4)));
        assert!(p.ready(MAX_BACKLOG, t0 + Duration::from_millis(9)));
        assert_eq!(p.retry_after(), Duration::from_millis(4));
    }
}
