//! The background task of a tunnel: joins the userspace stack, the IPR session and the
//! transport, like `driver` does for the TUN.
//!
//! # Loop
//!
//! Each turn:
//! * if the session's timer is due, run it (keepalive, connect fallback, dead-exit verdict);
//! * poll the stack once (≤ `DEVICE_BURST` received packets in, everything due out) and move
//!   the packets it emitted into the session, and send what the transport has room for
//!   (`link::transmit`: the bundle stays open while the mixnet client is busy);
//! * handle session events (a lost exit starts a new session; `Connected` installs the new
//!   allocation in the stack);
//! * wait for the first of: shutdown, a message from the exit, a pulse from a socket handle,
//!   or the earliest of the stack's, the session's, the retry's and the pacing deadline (now,
//!   if received packets are still queued).
//!
//! # Cancel safety
//!
//! Every future raced in the `select!` is cancel-safe: `Transport::recv` is a socket or
//! channel receive that mutates nothing before it resolves, `Notify::notified` keeps its
//! permit for the next turn, and the timers hold no state. Losing a race never loses a message.
//!
//! # Exit path
//!
//! There is one: on shutdown (or the `Tunnel` being dropped) or a failed transport, the session
//! sends its Disconnect (best effort, bounded by [`link::DISCONNECT_GRACE`]) and every socket is
//! closed so that waiting tasks wake up with an error.

use std::io;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::device::DEVICE_BURST;
use super::stack::{LinkState, Shared};
use crate::ipr::{Event, Session};
use crate::link::{self, sleep_opt, Allocation, Backoff};
use crate::transport::Transport;

/// Receive buffer: one whole message (a 64 KiB bundle plus the LP and IPR headers).
pub(crate) const MAX_MESSAGE: usize = 65535 + 64;

/// The connect protocol version to try first: v10 (falling back to v9), or v9 straight
/// away when the directory said the exit's release predates v10 (saves the 15 s v10 wait).
pub(crate) fn max_version(transport: &Transport) -> u8 {
    match transport {
        #[cfg(feature = "mixnet")]
        Transport::Mixnet(t) => t.ipr_version_hint().unwrap_or(10),
        _ => 10,
    }
}

/// Owns everything that is awaited: the session and the transport.
pub(crate) struct Runner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) session: Session,
    pub(crate) transport: Transport,
    pub(crate) rx: Vec<u8>,
    /// For log lines.
    pub(crate) exit: String,
    /// See [`max_version`].
    pub(crate) max_version: u8,
    /// Spacing of new sessions after a loss (the VPN driver's policy).
    pub(crate) backoff: Backoff,
    /// When the next session starts, after a loss.
    pub(crate) retry_at: Option<Instant>,
    /// The transport's path changes already answered with a probe.
    pub(crate) path_changes: u64,
}

impl Runner {
    /// Runs until `stop` fires or is dropped, or the transport fails.
    pub(crate) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let result = self.event_loop(&mut stop).await;
        if let Err(e) = &result {
            tracing::warn!(exit = %self.exit, error = %e, "tunnel transport failed; closing the tunnel");
        }
        self.shared.lock().close_all();
        let confirmed = link::disconnect(&mut self.session, &mut self.transport, &mut self.rx).await;
        tracing::debug!(exit = %self.exit, confirmed, "disconnected");
        let stats = self.session.stats();
        tracing::debug!(
            exit = %self.exit,
            msgs_out = stats.msgs_out,
            msgs_in = stats.msgs_in,
            packets_out = stats.packets_out,
            packets_in = stats.packets_in,
            "tunnel closed"
        );
        // The mixnet client has tasks and a gateway connection of its own to stop.
        #[cfg(feature = "mixnet")]
        if let Transport::Mixnet(t) = self.transport {
            t.shutdown().await;
        }
    }

    async fn event_loop(&mut self, stop: &mut oneshot::Receiver<()>) -> io::Result<()> {
        loop {
            let now = Instant::now().into_std();
            if self.retry_at.is_some_and(|t| t.into_std() <= now) {
                self.retry_at = None;
                self.session = Session::new(link::session_config(&self.transport, self.max_version), now);
            }
            let changes = self.transport.path_changes();
            if changes != self.path_changes {
                self.path_changes = changes;
                self.session.handle_path_change(now);
            }
            if self.session.poll_timeout().is_some_and(|t| t <= now) {
                self.session.handle_timeout(now);
            }
            let more = self.poll_stack(now);
            link::transmit(&mut self.session, &mut self.transport).await;
            while let Some(ev) = self.session.poll_event() {
                self.on_event(ev);
            }
            let pace_at = link::transmit(&mut self.session, &mut self.transport).await;

            let deadline = if more {
                Some(Instant::now())
            } else {
                let now = Instant::now().into_std();
                let stack_at = self.shared.lock().poll_at(now);
                [
                    stack_at,
                    self.session.poll_timeout(),
                    self.retry_at.map(Instant::into_std),
                    pace_at.map(Instant::into_std),
                ]
                .into_iter()
                .flatten()
                .min()
                .map(Instant::from_std)
            };
            tokio::select! {
                biased;
                _ = &mut *stop => return Ok(()),
                r = self.transport.recv(&mut self.rx) => {
                    let n = r?;
                    self.from_exit(n);
                    self.drain_transport()?;
                }
                () = self.shared.wake.notified() => {}
                () = sleep_opt(deadline) => {}
            }
        }
    }

    /// Polls the stack once and hands what it emitted to the session. Returns whether
    /// received packets are still waiting for the next poll.
    fn poll_stack(&mut self, now: std::time::Instant) -> bool {
        let mut st = self.shared.lock();
        let more = st.poll(now);
        let tx = &mut st.device.tx;
        // Only what the session can queue: the rest stays in the device, whose full queue makes
        // smoltcp hold its segments (back-pressure) rather than lose them in the session.
        while let Some(pkt) = tx.front().filter(|_| self.session.can_queue()) {
            self.session.send_ip(pkt, now);
            tx.pop();
        }
        // The bundle stays open until the transport can take it (link::transmit).
        more
    }

    /// One message from the exit: its IP packets go into the device's receive queue.
    fn from_exit(&mut self, n: usize) {
        let now = Instant::now().into_std();
        let Some(msg) = self.rx.get(..n) else { return };
        let mut st = self.shared.lock();
        for pkt in self.session.handle_message(msg, now) {
            st.device.push_rx(pkt);
        }
    }

    /// Takes further queued messages, until a poll's worth of packets is waiting.
    fn drain_transport(&mut self) -> io::Result<()> {
        while self.shared.lock().device.rx.len() < DEVICE_BURST {
            match self.transport.try_recv(&mut self.rx) {
                Ok(n) => self.from_exit(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Connected { ipv4, ipv6, mtu, version } => {
                tracing::info!(exit = %self.exit, %ipv4, %ipv6, version, "tunnel reconnected");
                let alloc = Allocation::new(ipv4, ipv6, mtu, version);
                self.shared.lock().set_allocation(alloc, Instant::now().into_std());
                self.backoff.reset();
            }
            Event::ExitUnresponsive | Event::Disconnected | Event::ConnectFailed(_) => {
                // Same policy as the VPN driver: keep the sockets, drop packets while a new
                // session on a fresh stream is set up, forever (the exit may come back),
                // spaced out by the shared backoff.
                let delay = self.backoff.next_delay(rand::random());
                tracing::warn!(exit = %self.exit, event = ?ev, retry_in = ?delay, "exit lost; reconnecting");
                {
                    let mut st = self.shared.lock();
                    if st.state != LinkState::Closed {
                        st.state = LinkState::Reconnecting;
                    }
                }
                self.session.close();
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }
}
