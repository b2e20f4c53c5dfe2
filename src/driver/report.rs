//! What `up` tells its user while it runs: connect steps with their elapsed time, the
//! `connected` line, losses and reconnects, warnings, the stop.
//!
//! The driver says *what* happened as a [`Report`]; the binary decides where it goes (stdout,
//! stderr, systemd's `NOTIFY_SOCKET`). Steps arrive from whichever task reached them (the
//! mixnet client's gateway callback runs inside the SDK) through a bounded channel, stamped
//! when they happened, so the printed time is the step's own, not the time it was printed.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::transport::{Progress, Step};

/// Steps queued between the task that reached them and the driver. A connect has about eight;
/// a gateway that reconnects in a loop must not grow memory, so beyond this they are dropped.
const STEP_QUEUE: usize = 64;
/// Lines kept for `status` (the current or last connect): a mixnet connect has eight steps,
/// and a connect retried for long keeps its latest attempts.
const STEP_LOG: usize = 16;

/// One thing to tell the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report<'a> {
    /// A step towards the exit, with the time since connecting began (`  0.42 s  directory: …`).
    Step(&'a str),
    /// The tunnel carries traffic: the `connected …` line, once (systemd's `READY=1`).
    Connected(&'a str),
    /// A new session is up after a loss: `reconnected …`.
    Reconnected(&'a str),
    /// The exit or the transport is lost; the host stays closed while `up` reconnects.
    Lost(&'a str),
    /// The first connect failed for a reason a retry can mend; `up` tries again and says what
    /// the host is meanwhile (blocked, in full-tunnel mode).
    Retrying(&'a str),
    /// Something the user should know that does not stop the tunnel.
    Warning(&'a str),
    /// The outcome of a check, e.g. `dns: ok …`.
    Note(&'a str),
    /// A stop was asked: the exit is told and the host restored (systemd's `STOPPING=1`).
    Stopping,
}

/// Turns the progress of a connect into timed lines, and keeps them for `status`.
pub(super) struct Reporter {
    sink: Box<dyn FnMut(Report<'_>)>,
    steps: mpsc::Receiver<(Instant, Step)>,
    progress: Progress,
    /// When the current connect (or reconnect) began.
    began: Instant,
    /// Its steps so far, as printed.
    log: Vec<String>,
}

impl Reporter {
    pub(super) fn new(sink: impl FnMut(Report<'_>) + 'static) -> Reporter {
        let (tx, steps) = mpsc::channel(STEP_QUEUE);
        // try_send: a full queue drops the step rather than block the SDK's task.
        let progress = Progress::new(move |step| drop(tx.try_send((Instant::now(), step))));
        Reporter { sink: Box::new(sink), steps, progress, began: Instant::now(), log: Vec::new() }
    }

    /// The sink to hand to [`crate::transport::open`] and [`crate::link::connect`].
    pub(super) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// A new connect begins now: steps are timed from here and the old ones forgotten.
    pub(super) fn begin(&mut self) {
        self.drain();
        self.began = Instant::now();
        self.log.clear();
    }

    /// Waits for the next step and reports it (for a `select!` arm while connecting).
    pub(super) async fn next_step(&mut self) {
        if let Some((at, step)) = self.steps.recv().await {
            self.step(at, &step);
        }
    }

    /// Reports every step already queued.
    pub(super) fn drain(&mut self) {
        while let Ok((at, step)) = self.steps.try_recv() {
            self.step(at, &step);
        }
    }

    fn step(&mut self, at: Instant, step: &Step) {
        let line = timed(at.saturating_duration_since(self.began), step);
        (self.sink)(Report::Step(&line));
        self.keep(line);
    }

    /// The first connect failed and is tried again: said, and kept with the steps.
    pub(super) fn retrying(&mut self, why: &str) {
        let line = format!("{:>7.2} s  {why}", self.began.elapsed().as_secs_f64());
        (self.sink)(Report::Retrying(why));
        self.keep(line);
    }

    /// Keeps `line` for `status`, the oldest going first once [`STEP_LOG`] are kept.
    fn keep(&mut self, line: String) {
        if self.log.len() == STEP_LOG {
            self.log.remove(0);
        }
        self.log.push(line);
    }

    /// The steps of the current or last connect, for `status`.
    pub(super) fn log(&self) -> &[String] {
        &self.log
    }

    /// Passes anything else on.
    pub(super) fn report(&mut self, r: Report<'_>) {
        (self.sink)(r);
    }
}

/// A step's line: its elapsed time, right-aligned so the steps of one connect line up.
fn timed(elapsed: Duration, step: &Step) -> String {
    format!("{:>7.2} s  {step}", elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn capture() -> (Reporter, Rc<RefCell<Vec<String>>>) {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        let r = Reporter::new(move |rep| s.borrow_mut().push(format!("{rep:?}")));
        (r, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn steps_carry_the_time_they_happened_not_when_they_were_printed() {
        let (mut r, seen) = capture();
        r.begin();
        tokio::time::advance(Duration::from_millis(420)).await;
        r.progress().report(Step::Directory { exits: 3 });
        tokio::time::advance(Duration::from_secs(5)).await; // printed later
        r.drain();
        assert_eq!(r.log(), ["   0.42 s  directory: 3 usable IPR exits listed"]);
        assert_eq!(seen.borrow().len(), 1);
        // A reconnect starts the clock and the log again.
        r.begin();
        r.progress().report(Step::Session { version: 9 });
        r.next_step().await;
        assert_eq!(r.log(), ["   0.00 s  ipr: Connect sent, protocol v9"]);
    }

    #[tokio::test]
    async fn a_runaway_source_cannot_grow_the_queue_or_the_log() {
        let (mut r, seen) = capture();
        for _ in 0..1000 {
            r.progress().report(Step::Gateway);
        }
        r.drain();
        assert_eq!(seen.borrow().len(), STEP_QUEUE);
        assert_eq!(r.log().len(), STEP_LOG);
    }
}
