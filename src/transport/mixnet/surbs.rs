//! How many reply SURBs each uplink message carries: as many as the exit will need, not a
//! fixed number per message.
//!
//! The IPR can only answer through reply SURBs we sent it; each downlink message uses one
//! (ARCHITECTURE.md, "What the real IPR expects"). It keeps its first 10 in reserve and, when
//! it runs below that, spends one asking for more, which costs a mixnet round trip while its
//! replies wait. A SURB is not free: in the SDK's default (legacy) Sphinx format one is 1164 B,
//! so four of them cost about three more Sphinx packets than the message itself (a bundle fits
//! one packet, 1604 B). A fixed count per message is wrong both ways: a download's few uplink
//! messages (ACKs) carry too few SURBs for the many replies, and an upload's many messages
//! carry far more than the exit's few ACK bundles need.
//!
//! [`ReplySupply`] keeps an estimate of the SURBs the exit holds (given minus used, where each
//! downlink message used one) near a target: the reserve, plus whichever is larger of `spare`
//! (the user's `--surbs`, default 4) and the replies expected within [`HORIZON`] at the recent
//! downlink rate. A data message carries the shortfall, at most [`MAX_PER_MESSAGE`]; with the
//! exit well stocked it carries none and fits one Sphinx packet. The estimate drifts (SURBs
//! spent on the exit's own requests for more, and the SDK's answers to them, are not seen
//! here), but both ways, and a short exit asks for more by itself.
//! Control messages carry [`super::options::CONTROL_REPLY_SURBS`] as before.

use std::time::{Duration, Instant};

/// SURBs the IPR keeps for itself and never answers with (nym-node's IPR config, threshold 10).
pub const IPR_RESERVE: u32 = 10;
/// How far ahead the supply looks: about one default-profile mixnet round trip, so the next
/// uplink message arrives before the SURBs run out.
pub const HORIZON: Duration = Duration::from_secs(1);
/// At most this many SURBs in one message (≈ 9 Sphinx packets of legacy SURBs); a larger need
/// is spread over the following messages.
pub const MAX_PER_MESSAGE: u32 = 12;
/// Never aim above this: the IPR stores at most 200 SURBs per client.
pub const MAX_TARGET: u32 = 150;
/// Weight of the newest sample in the downlink rate average (per [`RATE_WINDOW`]).
const RATE_WINDOW: Duration = Duration::from_millis(250);
const RATE_GAIN: f64 = 0.3;

/// The reply-SURB supply of one session (see the module doc).
#[derive(Debug, Clone)]
pub struct ReplySupply {
    spare: u32,
    given: u64,
    used: u64,
    /// Downlink messages per second, smoothed.
    rate: f64,
    window_start: Instant,
    window_count: u32,
}

impl ReplySupply {
    /// `spare`: SURBs the exit should hold beyond its reserve even on an idle link (`--surbs`).
    pub fn new(spare: u32, now: Instant) -> Self {
        ReplySupply { spare, given: 0, used: 0, rate: 0.0, window_start: now, window_count: 0 }
    }

    /// SURBs sent so far.
    pub fn given(&self) -> u64 {
        self.given
    }

    /// SURBs the exit should still hold, by our count.
    pub fn outstanding(&self) -> u64 {
        self.given.saturating_sub(self.used)
    }

    /// The SURBs to attach to a data message sent now.
    pub fn for_data(&mut self, now: Instant) -> u32 {
        self.roll(now);
        let expected = (self.rate * HORIZON.as_secs_f64()).ceil() as u64;
        let want = (u64::from(IPR_RESERVE) + expected.max(u64::from(self.spare))).min(u64::from(MAX_TARGET));
        want.saturating_sub(self.outstanding()).min(u64::from(MAX_PER_MESSAGE)) as u32
    }

    /// Records a message sent with `surbs` reply SURBs.
    pub fn sent(&mut self, surbs: u32) {
        self.given += u64::from(surbs);
    }

    /// Records one message from the exit: it used one SURB.
    pub fn received(&mut self, now: Instant) {
        self.used += 1;
        self.roll(now);
        self.window_count += 1;
    }

    /// Folds finished rate windows into the average.
    fn roll(&mut self, now: Instant) {
        while now.saturating_duration_since(self.window_start) >= RATE_WINDOW {
            let sample = f64::from(self.window_count) / RATE_WINDOW.as_secs_f64();
            self.rate += RATE_GAIN * (sample - self.rate);
            self.window_count = 0;
            self.window_start += RATE_WINDOW;
            if self.rate < 0.01 && self.window_count == 0 {
                // Idle: jump to now instead of folding thousands of empty windows.
                self.rate = 0.0;
                self.window_start = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_idle_stocked_exit_gets_no_surbs_and_a_short_one_is_topped_up() {
        let t0 = Instant::now();
        let mut s = ReplySupply::new(4, t0);
        s.sent(20); // the Connect's SURBs
        s.received(t0); // its reply
        assert_eq!(s.for_data(t0 + ms(10)), 0, "19 held, 14 wanted: none");
        for i in 0..7 {
            s.received(t0 + ms(20 + i)); // seven replies: 12 left
        }
        assert_eq!(s.for_data(t0 + Duration::from_secs(60)), 2, "back up to reserve + spare");
    }

    #[test]
    fn a_download_gets_surbs_in_step_with_its_replies() {
        let t0 = Instant::now();
        let mut s = ReplySupply::new(4, t0);
        s.sent(20);
        let (mut given, mut t) = (20u64, t0);
        // 200 replies/s for 5 s, one uplink message (an ACK bundle) per 8 replies.
        for i in 0..1000u64 {
            t += ms(5);
            s.received(t);
            if i % 8 == 7 {
                let n = s.for_data(t);
                assert!(n <= MAX_PER_MESSAGE);
                s.sent(n);
                given += u64::from(n);
            }
        }
        // The exit never ran dry for long: supply kept up with the ~1000 replies ...
        assert!(given >= 950, "given {given}");
        // ... without stockpiling far beyond a second's worth.
        assert!(s.outstanding() <= u64::from(IPR_RESERVE) + 200 + u64::from(MAX_PER_MESSAGE), "{}", s.outstanding());
    }

    #[test]
    fn an_upload_does_not_pay_for_surbs_it_will_not_use() {
        let t0 = Instant::now();
        let mut s = ReplySupply::new(4, t0);
        s.sent(20);
        let (mut given, mut t) = (0u64, t0);
        // 100 uplink messages/s, the exit's ACK bundles at 20/s.
        for i in 0..500u64 {
            t += ms(10);
            if i % 5 == 0 {
                s.received(t);
            }
            let n = s.for_data(t);
            s.sent(n);
            given += u64::from(n);
        }
        // A fixed 4 per message would have sent 2000; the ~100 replies need about that many.
        assert!(given < 250, "given {given}");
        assert!(s.outstanding() >= u64::from(IPR_RESERVE), "the reserve stays filled: {}", s.outstanding());
    }

    #[test]
    fn the_spare_is_kept_and_a_large_need_is_capped_per_message() {
        let t0 = Instant::now();
        let mut s = ReplySupply::new(4, t0);
        assert_eq!(s.for_data(t0), MAX_PER_MESSAGE, "empty: 14 wanted, 12 at most per message");
        let mut t = t0;
        for _ in 0..400 {
            t += ms(1);
            s.received(t);
        }
        assert_eq!(s.for_data(t + ms(300)), MAX_PER_MESSAGE);
        let mut idle = ReplySupply::new(4, t0);
        idle.sent(100);
        assert_eq!(idle.for_data(t0 + Duration::from_secs(3600)), 0);
        let mut spare = ReplySupply::new(40, t0);
        spare.sent(30);
        assert_eq!(spare.for_data(t0), 12, "a larger --surbs raises the stock: 50 wanted");
    }
}
