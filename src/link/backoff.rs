//! When to try again after the exit or the transport was lost.

use std::time::Duration;

/// The first retry at once, then exponentially spaced (1 s, 2 s, 4 s, … up to [`Backoff::CAP`]),
/// each delay jittered by ±25 % so that many clients of one restarted exit do not come back in
/// step. A success resets it. An exit that refuses us is asked again at most once a minute, not
/// once a round trip.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The second retry waits this long; each further one twice as long as the last.
    pub const FIRST: Duration = Duration::from_secs(1);
    /// No retry waits longer than this (before jitter).
    pub const CAP: Duration = Duration::from_secs(60);

    /// The delay before the next attempt; `jitter` in 0.0..1.0 (a random draw).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let n = self.failures;
        self.failures = self.failures.saturating_add(1);
        if n == 0 {
            return Duration::ZERO;
        }
        let base = Self::FIRST.saturating_mul(1u32 << (n - 1).min(16)).min(Self::CAP);
        base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// Attempts that failed in a row (the status shows it).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next loss is retried at once again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_once_doubles_and_caps() {
        let mut b = Backoff::default();
        let mid: Vec<u64> = (0..10).map(|_| b.next_delay(0.5).as_secs()).collect();
        assert_eq!(mid, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.failures(), 10);
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::ZERO);
    }

    #[test]
    fn backoff_jitter_stays_within_a_quarter() {
        let mut lo = Backoff::default();
        let mut hi = Backoff::default();
        for _ in 0..5 {
            let (a, b) = (lo.next_delay(0.0), hi.next_delay(1.0));
            assert!(a <= b);
        }
        assert_eq!(lo.next_delay(0.0), Duration::from_secs(12)); // 16 s × 0.75
        assert_eq!(hi.next_delay(1.0), Duration::from_secs(20)); // 16 s × 1.25
        assert_eq!(Backoff { failures: 40 }.next_delay(7.0), Duration::from_secs(75), "clamped jitter, capped base");
    }
}
