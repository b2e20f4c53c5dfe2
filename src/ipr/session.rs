//! The IPR client session: a sans-IO state machine in the style of quinn-proto.
//!
//! Inputs: [`Session::handle_message`] (one whole transport message), [`Session::send_ip`],
//! [`Session::flush`], [`Session::handle_timeout`], [`Session::disconnect`]. Outputs:
//! [`Session::poll_transmit`]/[`Session::pop_transmit`] (whole messages, LP frame included),
//! [`Session::poll_event`], [`Session::poll_timeout`]. Time only enters as `now`.
//!
//! Lifecycle: `Connecting(v10)` →(no reply within `v10_timeout`)→ `Connecting(v9)`
//! →(no reply within `v9_timeout`)→ `ConnectFailed(Timeout)`; a matching success → `Up`;
//! [`Session::disconnect`] → `Disconnecting` → `Disconnected` (reply or `v10_timeout`).
//! See `super` (mod.rs) for the quirks of the real IPR this tolerates.

use std::collections::VecDeque;

use std::time::{Duration, Instant};

use serde::Serialize;

use super::bundle::{Bundler, BUNDLE_BUDGET};
use super::data::{write_data_request_header, DATA_REQUEST_HEADER_MAX};
use super::liveness::{build_echo_request, SeqTracker, IPR_TUN_V4};
use super::lp::{LpHeader, LP_HEADER_LEN};
use super::message;
use super::transmit::{Kind, Pushed, TxRing};
use super::Allocation;
use super::SessionError;

mod receive;
pub use receive::Packets;

/// Reserved bytes in front of every data bundle: LP header + worst-case IPR data header.
const HEADROOM: usize = LP_HEADER_LEN + DATA_REQUEST_HEADER_MAX;
/// Pending events at most; events are a handful per session, so this never fills in practice.
const EVENT_CAP: usize = 32;

/// Settings of one session; [`SessionConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// LP stream id of this session; all frames carry it and the IPR binds downlink to it.
    pub stream_id: u64,
    /// 10: try v10 then fall back to v9. 9: v9 only. Other values are clamped to 9/10.
    pub max_version: u8,
    /// How long to wait for the v10 connect reply (IpMixStream: 15 s, docs/ipr-protocol.md §3.5).
    pub v10_timeout: Duration,
    /// How long to wait for the v9 connect reply (IpMixStream: 60 s, docs/ipr-protocol.md §3.5).
    pub v9_timeout: Duration,
    /// Send a keepalive after this much uplink (or downlink) silence; the IPR drops a client
    /// 60–70 s after its last uplink data packet (docs/ipr-protocol.md §3.6).
    pub keepalive_idle: Duration,
    /// No downlink at all for this long while we keep sending → `ExitUnresponsive`.
    pub dead_after: Duration,
    /// After [`Session::handle_path_change`], how long the exit has to answer the probe
    /// before it is declared unresponsive (shorter than `dead_after`: the path is new, so
    /// silence now means the exit lost us, not that the mixnet is slow).
    pub probe_timeout: Duration,
    /// Finished messages the session holds at most while the transport is not ready for them
    /// (the oldest data message goes first when full; up to [`super::transmit::TX_RING_CAP`]).
    pub tx_queue: usize,
}

impl SessionConfig {
    /// Defaults: v10 first, 15 s / 60 s connect timeouts, keepalive after 15 s, dead after 60 s.
    pub fn new(stream_id: u64) -> Self {
        SessionConfig {
            stream_id,
            max_version: 10,
            v10_timeout: Duration::from_secs(15),
            v9_timeout: Duration::from_secs(60),
            keepalive_idle: Duration::from_secs(15),
            dead_after: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(15),
            tx_queue: super::transmit::TX_RING_CAP,
        }
    }
}

/// One whole message for the transport: the bytes to send and what they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The whole message, LP header first.
    pub bytes: &'a [u8],
    /// Control or data; a control message expects a reply.
    pub kind: Kind,
}

/// What the session reports to its owner, read with [`Session::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The exit accepted the session: packets flow from now on.
    Connected(Allocation),
    /// The connect failed (no reply in time, a refusal, a remote disconnect); no session.
    ConnectFailed(SessionError),
    /// Nothing came back for `dead_after` while we were sending. Reported once per silence.
    ExitUnresponsive,
    /// The session is over: the IPR acknowledged the disconnect, the wait for it ran out, or
    /// the IPR dropped us.
    Disconnected,
}

/// Counters; `msgs_*`/`bytes_*` count whole transport messages (LP header included).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionStats {
    /// Whole messages handed to the transport (popped from the queue).
    pub msgs_out: u64,
    /// Bytes of those messages.
    pub bytes_out: u64,
    /// Whole messages received from the transport, whatever they hold.
    pub msgs_in: u64,
    /// Bytes of those messages.
    pub bytes_in: u64,
    /// Control requests (connect, disconnect) among `msgs_out`.
    pub control_out: u64,
    /// Control responses received on our stream (connect, disconnect, pong, info, …).
    pub control_in: u64,
    /// Data bundles closed and queued; those the full queue drops later are in `tx_dropped`.
    pub bundles_out: u64,
    /// IP packets in those bundles, keepalives included.
    pub packets_out: u64,
    /// Data responses accepted (connected, connect-time version).
    pub bundles_in: u64,
    /// Non-empty IP packets in those responses, keepalive echo replies excluded.
    pub packets_in: u64,
    /// Connect requests queued; a v10 try and its v9 fallback count as two.
    pub connect_attempts: u64,
    /// Messages that are not LP stream frames (bare IPR messages, other LP kinds, short).
    pub non_lp_in: u64,
    /// LP frames of another stream id, dropped.
    pub foreign_stream_in: u64,
    /// LP frames of our stream or payloads that do not decode.
    pub malformed_in: u64,
    /// LP frames of our stream with no payload.
    pub empty_frames_in: u64,
    /// Data bundles that end in a truncated length prefix or packet (the tail is dropped).
    pub truncated_bundles_in: u64,
    /// Zero-length entries in received bundles, skipped.
    pub empty_packets_in: u64,
    /// Data responses whose version is not the connect-time version.
    pub version_mismatch_in: u64,
    /// Data responses that arrived while no session was up, dropped.
    pub data_not_connected_in: u64,
    /// Control responses matching no pending request (late v10 connect after fallback, dups).
    pub stale_control_in: u64,
    /// Downlink frames whose sequence number was seen before.
    pub seq_dup: u64,
    /// Downlink frames behind the highest sequence number seen (late, or older than the window).
    pub seq_reorder: u64,
    /// Downlink sequence numbers skipped over; a late one that turns up is also in `seq_reorder`.
    pub seq_gap: u64,
    /// Exit-policy denials of our packets (those of the keepalive excluded).
    pub info_denials: u64,
    /// Other `Info` responses (version mismatch, generic).
    pub info_other: u64,
    /// Pong responses.
    pub pongs: u64,
    /// Keepalive echo requests sent.
    pub keepalives: u64,
    /// Keepalive answers: exit-policy denials of 10.0.0.1 and echo replies from it.
    pub keepalive_replies: u64,
    /// Times [`Event::ExitUnresponsive`] was reported.
    pub exit_unresponsive: u64,
    /// The longest wait, so far, from an unanswered uplink message to the next downlink one
    /// (a stall that ended). What `dead_after` must stay above to spare healthy sessions.
    pub longest_stall_ms: u64,
    /// Data messages dropped because the transmit queue was full (the oldest or the new one).
    pub tx_dropped: u64,
    /// Uplink packets over 65 535 bytes, dropped.
    pub tx_oversize: u64,
    /// Uplink packets dropped because no session was up.
    pub tx_not_connected: u64,
    /// Oldest events dropped because the event queue was full.
    pub events_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting { version: u8, request_id: u64, deadline: Instant },
    Up,
    Disconnecting { request_id: u64, deadline: Instant },
    Closed,
}

/// One IPR client session: connect, data, keepalive and disconnect over one LP stream.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    phase: Phase,
    /// What the exit gave us, once connected.
    alloc: Option<Allocation>,
    bundler: Bundler,
    ring: TxRing,
    /// The bundle being filled, if any, and how many packets it holds.
    cur: Option<Vec<u8>>,
    cur_packets: u64,
    tx_seq: u32,
    events: VecDeque<Event>,
    stats: SessionStats,
    rx_seq: SeqTracker,
    echo_ident: u16,
    echo_seq: u16,
    /// Latest `now` seen; used by inputs that take no time (flush, disconnect).
    now: Instant,
    last_uplink_ip: Instant,
    last_rx: Instant,
    last_probe: Instant,
    /// First uplink message sent since the last downlink message.
    unanswered_since: Option<Instant>,
    /// Set by a path change: the exit must answer by then.
    probe_deadline: Option<Instant>,
    unresponsive_reported: bool,
}

impl Session {
    /// Queue the first Connect (v10, or v9 if `max_version` is 9). No LP Open frame is sent: the
    /// IPR ignores empty-payload frames and keeps no stream state (docs/ipr-protocol.md §4.4), so
    /// an Open would cost one whole mixnet message for nothing; the Connect frame binds the stream
    /// (docs/ipr-protocol.md §4.4).
    pub fn new(cfg: SessionConfig, now: Instant) -> Self {
        let first = if cfg.max_version >= 10 { 10 } else { 9 };
        let ring = TxRing::with_cap(cfg.tx_queue);
        let mut s = Session {
            cfg,
            phase: Phase::Closed,
            alloc: None,
            bundler: Bundler::new(BUNDLE_BUDGET, HEADROOM),
            ring,
            cur: None,
            cur_packets: 0,
            tx_seq: 0,
            events: VecDeque::with_capacity(EVENT_CAP),
            stats: SessionStats::default(),
            rx_seq: SeqTracker::default(),
            echo_ident: rand::random(),
            echo_seq: 0,
            now,
            last_uplink_ip: now,
            last_rx: now,
            last_probe: now,
            unanswered_since: None,
            probe_deadline: None,
            unresponsive_reported: false,
        };
        s.start_connect(first);
        s
    }

    /// Whether one more packet can be queued without pushing out a finished message: the
    /// transmit queue has room for the bundle it may close. A caller that can hold packets
    /// back (a userspace stack) waits for this instead of losing them.
    pub fn can_queue(&self) -> bool {
        self.ring.len() + 1 < self.ring.cap()
    }

    /// Whether anything waits to be sent: a partial bundle or finished messages.
    pub fn has_pending(&self) -> bool {
        self.cur.is_some() || !self.ring.is_empty()
    }

    /// Whether the exit accepted the session and it is not yet closing.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Messages queued for the transport (the bounded ring; a bundle still open is not one).
    pub fn queued(&self) -> usize {
        self.ring.len()
    }

    /// The protocol version of the Connect awaiting its answer, if one is.
    pub fn connecting_version(&self) -> Option<u8> {
        match self.phase {
            Phase::Connecting { version, .. } => Some(version),
            _ => None,
        }
    }

    /// What the IPR allocated (addresses, MTU, version), once connected.
    pub fn allocation(&self) -> Option<Allocation> {
        self.alloc
    }

    /// The LP stream id this session's frames carry.
    pub fn stream_id(&self) -> u64 {
        self.cfg.stream_id
    }

    /// The counters so far.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Queue one IP packet for the exit (copied into the current bundle; may close a full one).
    pub fn send_ip(&mut self, pkt: &[u8], now: Instant) {
        self.tick(now);
        if self.phase != Phase::Up {
            self.stats.tx_not_connected += 1;
            tracing::trace!(len = pkt.len(), "not connected: dropping uplink packet");
            return;
        }
        if pkt.len() > usize::from(u16::MAX) {
            self.stats.tx_oversize += 1;
            tracing::trace!(len = pkt.len(), "uplink packet exceeds the u16 bundle prefix");
            return;
        }
        self.last_uplink_ip = now;
        self.push_packet(pkt);
    }

    /// Close the current partial bundle now. With nothing pending this does nothing.
    pub fn flush(&mut self) {
        let Some(mut buf) = self.cur.take() else {
            return;
        };
        let packets = std::mem::take(&mut self.cur_packets);
        let bundle_len = self.bundler.bundle_len(&buf);
        let (Some(alloc), true) = (self.alloc, bundle_len > 0) else {
            self.ring.recycle(buf);
            return;
        };
        // Header right-aligned in the headroom: [.. LP 16 | IPR hdr ≤ 8][bundle].
        let mut hdr = [0u8; DATA_REQUEST_HEADER_MAX];
        let hlen = write_data_request_header(alloc.version, bundle_len, &mut hdr);
        let ipr_hdr = hdr.get(DATA_REQUEST_HEADER_MAX - hlen..).unwrap_or_default();
        let start = HEADROOM - ipr_hdr.len() - LP_HEADER_LEN;
        let lp = LpHeader::data(self.cfg.stream_id, self.next_tx_seq()).encode();
        for (dst, src) in buf.iter_mut().skip(start).zip(lp.iter().chain(ipr_hdr)) {
            *dst = *src;
        }
        self.stats.bundles_out += 1;
        self.stats.packets_out += packets;
        self.queue(buf, start, Kind::Data);
    }

    /// The oldest finished message, LP header included. Call `pop_transmit` once it is sent.
    pub fn poll_transmit(&self) -> Option<Transmit<'_>> {
        self.ring.front().map(|(bytes, kind)| Transmit { bytes, kind })
    }

    /// Drop the message [`poll_transmit`](Self::poll_transmit) returned, now that it is sent.
    pub fn pop_transmit(&mut self) {
        if let Some((len, kind)) = self.ring.pop() {
            self.stats.msgs_out += 1;
            self.stats.bytes_out += len as u64;
            if kind == Kind::Control {
                self.stats.control_out += 1;
            }
        }
    }

    /// The oldest pending event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next (connect deadline, keepalive,
    /// dead-exit check); `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { deadline, .. } | Phase::Disconnecting { deadline, .. } => Some(deadline),
            Phase::Up => {
                let keepalive = self.keepalive_due();
                let dead = self.dead_due();
                Some(dead.map_or(keepalive, |d| d.min(keepalive)))
            }
            Phase::Closed => None,
        }
    }

    /// Run what is due at `now`: v9 fallback or connect failure, disconnect timeout, dead-exit
    /// report, keepalive.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        match self.phase {
            Phase::Connecting { version, deadline, .. } if now >= deadline => {
                if version == 10 {
                    tracing::info!(after = ?self.cfg.v10_timeout, "no v10 connect reply, falling back to v9");
                    self.start_connect(9);
                } else {
                    // The caller turns this into the one user-facing error line.
                    tracing::debug!("no connect reply from the IPR");
                    self.phase = Phase::Closed;
                    self.push_event(Event::ConnectFailed(SessionError::Timeout));
                }
            }
            Phase::Disconnecting { deadline, .. } if now >= deadline => {
                self.phase = Phase::Closed;
                self.push_event(Event::Disconnected);
            }
            Phase::Up => {
                if self.dead_due().is_some_and(|d| now >= d) {
                    tracing::warn!(silence = ?self.cfg.dead_after, "exit unresponsive");
                    self.unresponsive_reported = true;
                    self.stats.exit_unresponsive += 1;
                    self.push_event(Event::ExitUnresponsive);
                }
                if now >= self.keepalive_due() {
                    self.send_keepalive(now);
                }
            }
            _ => {}
        }
    }

    /// Queue a Disconnect request (after any pending data) so the IPR frees the IPs now.
    pub fn disconnect(&mut self) {
        let version = match (self.phase, self.alloc) {
            (Phase::Up, Some(alloc)) => alloc.version,
            (Phase::Connecting { version, .. }, _) => version,
            _ => return,
        };
        self.flush();
        match message::encode_disconnect(version) {
            Ok(req) => {
                self.queue_control(&req.bytes);
                let deadline = self.now + self.cfg.v10_timeout;
                self.phase = Phase::Disconnecting { request_id: req.request_id, deadline };
            }
            Err(_) => {
                self.phase = Phase::Closed;
                self.push_event(Event::Disconnected);
            }
        }
    }

    /// The transport's path to the exit was set up anew (the mixnet client reconnected to its
    /// entry gateway, which may have restarted with the exit inside it): whether the exit still
    /// knows us is unknown. Probe at once with a keepalive; without any answer within
    /// `probe_timeout`, [`Event::ExitUnresponsive`] follows, well before `dead_after`.
    pub fn handle_path_change(&mut self, now: Instant) {
        self.tick(now);
        if self.phase != Phase::Up {
            return;
        }
        self.send_keepalive(now);
        self.probe_deadline = Some(now + self.cfg.probe_timeout);
    }

    /// Gives the session up without a word to the exit (it is unresponsive or refused us):
    /// nothing queued is sent, no timer runs, whatever still arrives is dropped and counted.
    pub fn close(&mut self) {
        if let Some(buf) = self.cur.take() {
            self.ring.recycle(buf);
        }
        self.cur_packets = 0;
        self.ring.clear();
        self.phase = Phase::Closed;
    }

    // ---- internals ----

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn start_connect(&mut self, version: u8) {
        match message::encode_connect(version) {
            Ok(req) => {
                self.queue_control(&req.bytes);
                self.stats.connect_attempts += 1;
                let wait = if version == 10 { self.cfg.v10_timeout } else { self.cfg.v9_timeout };
                let deadline = self.now + wait;
                self.phase = Phase::Connecting { version, request_id: req.request_id, deadline };
            }
            Err(_) => {
                self.phase = Phase::Closed;
                self.push_event(Event::ConnectFailed(SessionError::Encode));
            }
        }
    }

    fn next_tx_seq(&mut self) -> u32 {
        // Like the SDK stream writer: 0, 1, 2, … wrapping; the IPR ignores it
        // (docs/ipr-protocol.md §4.4).
        let s = self.tx_seq;
        self.tx_seq = self.tx_seq.wrapping_add(1);
        s
    }

    fn queue_control(&mut self, body: &[u8]) {
        let mut buf = self.ring.take_buf();
        buf.extend_from_slice(&LpHeader::data(self.cfg.stream_id, self.next_tx_seq()).encode());
        buf.extend_from_slice(body);
        self.queue(buf, 0, Kind::Control);
    }

    fn queue(&mut self, buf: Vec<u8>, start: usize, kind: Kind) {
        match self.ring.push(buf, start, kind) {
            Pushed::Queued => {}
            Pushed::EvictedOldest | Pushed::DroppedNew => {
                self.stats.tx_dropped += 1;
                tracing::trace!("transmit ring full: dropped a data message");
            }
        }
        if self.phase == Phase::Up && self.unanswered_since.is_none() {
            self.unanswered_since = Some(self.now);
        }
    }

    fn push_packet(&mut self, pkt: &[u8]) {
        if self.cur.as_ref().is_some_and(|b| !self.bundler.has_room(b, pkt.len())) {
            self.flush();
        }
        let mut buf = match self.cur.take() {
            Some(b) => b,
            None => {
                let mut b = self.ring.take_buf();
                self.bundler.begin(&mut b);
                b
            }
        };
        if self.bundler.append(&mut buf, pkt).is_ok() {
            self.cur_packets += 1;
        }
        let full = self.bundler.is_full(&buf);
        self.cur = Some(buf);
        if full {
            self.flush();
        }
    }

    fn send_keepalive(&mut self, now: Instant) {
        let Some(alloc) = self.alloc else { return };
        self.echo_seq = self.echo_seq.wrapping_add(1);
        let probe = build_echo_request(alloc.ipv4, self.echo_ident, self.echo_seq);
        tracing::debug!(src = %alloc.ipv4, dst = %IPR_TUN_V4, "sending keepalive");
        self.stats.keepalives += 1;
        self.last_probe = now;
        self.last_uplink_ip = now;
        self.push_packet(&probe);
        self.flush(); // a keepalive must not wait for more traffic
    }

    fn keepalive_due(&self) -> Instant {
        // Due after `keepalive_idle` of uplink silence (IPR inactivity, docs/ipr-protocol.md §3.6)
        // or of downlink silence (a probe whose answer proves liveness), but at most once per idle
        // period.
        let quiet = self.last_uplink_ip.min(self.last_rx) + self.cfg.keepalive_idle;
        quiet.max(self.last_probe + self.cfg.keepalive_idle)
    }

    fn dead_due(&self) -> Option<Instant> {
        match (self.unanswered_since, self.unresponsive_reported) {
            (Some(since), false) => {
                let silence = since + self.cfg.dead_after;
                Some(self.probe_deadline.map_or(silence, |p| p.min(silence)))
            }
            _ => None,
        }
    }

    fn mark_rx(&mut self, now: Instant) {
        self.last_rx = now;
        if let Some(since) = self.unanswered_since {
            let stall = now.saturating_duration_since(since);
            self.stats.longest_stall_ms = self.stats.longest_stall_ms.max(stall.as_millis() as u64);
        }
        self.probe_deadline = None;
        self.unanswered_since = None;
        self.unresponsive_reported = false;
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= EVENT_CAP {
            self.stats.events_dropped += 1;
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}
