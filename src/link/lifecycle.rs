//! [`Link`]: the lifecycle of the connection to one exit, as a sans-IO state machine.
//!
//! A [`Session`] is one attempt: one LP stream, one connect, one allocation. The link owns the
//! succession of them and the one policy both the VPN driver and the library follow:
//!
//! ```text
//!   Connecting ──Connected──▶ Up ──exit silent / refused / disconnected / transport lost──▶ Reconnecting
//!       │                      ▲                                                              │
//!       │ (no answer, refused) └──────────Connected (new stream, after Backoff)───────────────┘
//!       ▼
//!    Closed ◀── close() from any state (a Disconnect is sent if a session is up)
//! ```
//!
//! - The first session failing is final ([`LinkEvent::Failed`]): nothing was ever up, so the
//!   caller reports the exit unreachable without having changed anything.
//! - Once up, a loss is never final: packets are dropped (the session refuses them, fail
//!   closed), and a new session on a fresh stream id starts after [`Backoff`] (at once the first
//!   time, then 1 s, 2 s, … 60 s, jittered), until one connects or the caller closes the link.
//!   The IPR treats a new stream as a new client and may hand out new addresses
//!   (docs/ipr-protocol.md §3.2): [`LinkEvent::Up`] carries them every time.
//! - The transport below can also be lost (the mixnet client stops): the caller reports it with
//!   [`Link::handle_transport_lost`], builds a new transport after the delay it returns, and
//!   hands it over with [`Link::handle_transport_restored`].
//!
//! Inputs: `handle_message`, `send_ip`, `handle_timeout`, `handle_path_change`,
//! `handle_transport_lost`, `handle_transport_restored`, `close`. Outputs: `poll_transmit`,
//! `poll_event`, `poll_timeout`. Time only enters as `now`; the randomness (stream ids, jitter)
//! comes from a seed, so a test replays a run exactly.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Backoff;
use crate::ipr::{Allocation, Event, Packets, Session, SessionConfig, SessionError, Transmit};

/// Pending link events at most; a turn produces one or two.
const EVENT_CAP: usize = 16;

/// Where the link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// The first session is being set up; nothing has been up yet.
    Connecting,
    /// Packets flow, with this allocation.
    Up(Allocation),
    /// The exit or the transport was lost; packets are dropped until a new session is up.
    Reconnecting,
    /// Given up or closed by the caller: no session will start again.
    Closed,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Loss {
    /// No answer to the v10 or v9 connect.
    #[error("did not answer the connect (tried protocol v10 and v9)")]
    NoAnswer,
    /// The exit answered the connect with a refusal.
    #[error("refused the connection: {0}")]
    Refused(SessionError),
    /// Nothing came back for `dead_after` while we kept sending (docs/ipr-protocol.md §3.6).
    #[error("went silent")]
    Unresponsive,
    /// The exit ended the session.
    #[error("disconnected us")]
    Disconnected,
    /// The transport below stopped.
    #[error("became unreachable: the transport stopped")]
    TransportLost,
}

/// What the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A session is up: the first one, or a new one after a loss (possibly with new addresses
    /// or a new MTU).
    Up(Allocation),
    /// The exit was lost, or a new session failed; the next one starts in `retry_in` (for a
    /// lost transport, the caller builds a new one after `retry_in`).
    Lost {
        /// Why.
        loss: Loss,
        /// When the next session starts (or the caller builds the next transport).
        retry_in: Duration,
    },
    /// The first session failed: the link is closed.
    Failed(Loss),
    /// The exit confirmed our Disconnect.
    Closed,
}

/// Settings of a link.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Every session's settings; the stream id is drawn anew for each session.
    pub session: SessionConfig,
    /// Seeds the stream ids and the backoff's jitter: random in production, fixed in tests.
    pub seed: u64,
}

/// The connection to one exit over any number of sessions; see the module doc.
#[derive(Debug)]
pub struct Link {
    cfg: LinkConfig,
    session: Session,
    state: LinkState,
    backoff: Backoff,
    rng: StdRng,
    /// When the next session starts, after a loss (`None` while a transport is rebuilt).
    retry_at: Option<Instant>,
    /// The latest `now` seen; events are handled at this time.
    now: Instant,
    /// When the link was lost, for the log line once it is back.
    lost_at: Option<Instant>,
    /// Losses after being up.
    reconnects: u64,
    events: VecDeque<LinkEvent>,
}

impl Link {
    /// A link whose first session starts connecting now.
    pub fn new(cfg: LinkConfig, now: Instant) -> Link {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let session = Session::new(SessionConfig { stream_id: rng.gen(), ..cfg.session.clone() }, now);
        Link {
            cfg,
            session,
            state: LinkState::Connecting,
            backoff: Backoff::default(),
            rng,
            retry_at: None,
            now,
            lost_at: None,
            reconnects: 0,
            events: VecDeque::new(),
        }
    }

    /// Where the link is.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The current allocation, while up.
    pub fn allocation(&self) -> Option<Allocation> {
        match self.state {
            LinkState::Up(a) => Some(a),
            _ => None,
        }
    }

    /// The current session (its counters, for the status).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// How often the link was lost after being up.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// New sessions or transports that failed in a row.
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    /// One whole message from the transport; returns the IP packets it carried (none unless up).
    pub fn handle_message<'a>(&mut self, msg: &'a [u8], now: Instant) -> Packets<'a> {
        self.tick(now);
        self.session.handle_message(msg, now)
    }

    /// Queues one IP packet for the exit; dropped (and counted by the session) unless up.
    pub fn send_ip(&mut self, pkt: &[u8], now: Instant) {
        self.tick(now);
        self.session.send_ip(pkt, now);
    }

    /// Whether a packet given now would be queued rather than dropped at the tail.
    pub fn can_queue(&self) -> bool {
        self.session.can_queue()
    }

    /// Closes the open bundle so that it can be sent.
    pub fn flush(&mut self) {
        self.session.flush();
    }

    /// Whether a bundle is open or messages wait to be sent.
    pub fn has_pending(&self) -> bool {
        self.session.has_pending()
    }

    /// The next whole message to send, if any; [`Link::pop_transmit`] once it is sent.
    pub fn poll_transmit(&self) -> Option<Transmit<'_>> {
        self.session.poll_transmit()
    }

    /// Removes the message [`Link::poll_transmit`] returned, once sent.
    pub fn pop_transmit(&mut self) {
        self.session.pop_transmit();
    }

    /// The earliest of the session's timer and the next session's start.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.session.poll_timeout(), self.retry_at].into_iter().flatten().min()
    }

    /// Runs whatever is due at `now`: the session's timers (connect fallback, keepalive,
    /// dead-exit verdict) and the start of the next session.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.start_session(now);
        }
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
    }

    /// The transport's path was set up anew under us (mixnet: a gateway reconnection); the
    /// session probes the exit.
    pub fn handle_path_change(&mut self, now: Instant) {
        self.tick(now);
        self.session.handle_path_change(now);
    }

    /// The transport stopped (or a new one could not be built): the session is given up and
    /// no new one starts until [`Link::handle_transport_restored`]. Returns how long to wait
    /// before building the next transport; call it again after each failed attempt.
    pub fn handle_transport_lost(&mut self, now: Instant) -> Duration {
        self.tick(now);
        self.session.close();
        self.retry_at = None;
        let delay = self.backoff.next_delay(self.rng.gen());
        self.lose(Loss::TransportLost, delay);
        delay
    }

    /// A new transport runs: its session settings (timeouts, queue) replace the old ones and a
    /// session starts at once.
    pub fn handle_transport_restored(&mut self, session: SessionConfig, now: Instant) {
        self.tick(now);
        self.cfg.session = session;
        self.retry_at = None;
        if self.state != LinkState::Closed {
            self.start_session(now);
        }
    }

    /// Closes the link for good. A session that is up sends its Disconnect; one still
    /// connecting is dropped (an allocation the exit made meanwhile ends in its 60 s idle
    /// sweep, docs/ipr-protocol.md §3.6). Returns whether a Disconnect was queued, in which
    /// case [`LinkEvent::Closed`] follows the exit's confirmation.
    pub fn close(&mut self) -> bool {
        let was_live = self.state != LinkState::Closed && self.session.is_connected();
        self.state = LinkState::Closed;
        self.retry_at = None;
        if was_live {
            self.session.disconnect();
        } else {
            self.session.close();
        }
        was_live
    }

    /// The next event the caller must act on.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        while let Some(ev) = self.session.poll_event() {
            self.on_session_event(ev);
        }
        self.events.pop_front()
    }

    fn on_session_event(&mut self, ev: Event) {
        let loss = match ev {
            Event::Connected(alloc) if self.state != LinkState::Closed => {
                if let Some(lost) = self.lost_at.take() {
                    tracing::info!(after = ?self.now.saturating_duration_since(lost), "the exit is back");
                }
                self.state = LinkState::Up(alloc);
                self.backoff.reset();
                return self.push(LinkEvent::Up(alloc));
            }
            Event::Disconnected if self.state == LinkState::Closed => return self.push(LinkEvent::Closed),
            _ if self.state == LinkState::Closed => return,
            Event::Connected(_) => return,
            Event::ConnectFailed(SessionError::Timeout) => Loss::NoAnswer,
            Event::ConnectFailed(e) => Loss::Refused(e),
            Event::ExitUnresponsive => Loss::Unresponsive,
            Event::Disconnected => Loss::Disconnected,
        };
        self.session.close();
        if self.state == LinkState::Connecting {
            self.state = LinkState::Closed;
            return self.push(LinkEvent::Failed(loss));
        }
        let delay = self.backoff.next_delay(self.rng.gen());
        self.retry_at = Some(self.now + delay);
        self.lose(loss, delay);
    }

    /// The exit is gone: packets are dropped until a new session is up.
    fn lose(&mut self, loss: Loss, retry_in: Duration) {
        if matches!(self.state, LinkState::Up(_)) {
            self.reconnects += 1;
            self.lost_at = Some(self.now);
        }
        if self.state != LinkState::Closed {
            self.state = LinkState::Reconnecting;
        }
        tracing::warn!(%loss, ?retry_in, failures = self.backoff.failures(), "exit lost; reconnecting");
        self.push(LinkEvent::Lost { loss, retry_in });
    }

    fn start_session(&mut self, now: Instant) {
        let cfg = SessionConfig { stream_id: self.rng.gen(), ..self.cfg.session.clone() };
        self.session = Session::new(cfg, now);
    }

    fn push(&mut self, ev: LinkEvent) {
        if self.events.len() == EVENT_CAP {
            self.events.pop_front(); // the latest state matters most
        }
        self.events.push_back(ev);
    }

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }
}
