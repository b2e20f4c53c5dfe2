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
use super::stack::{Shared, StackState};
use crate::link::{self, sleep_opt, Link, LinkEvent};
use crate::transport::Transport;

/// Owns everything that is awaited: the link and the transport.
pub(crate) struct Runner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) link: Link,
    pub(crate) transport: Transport,
    pub(crate) rx: Vec<u8>,
    /// For log lines.
    pub(crate) exit: String,
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
        let confirmed = link::disconnect(&mut self.link, &mut self.transport, &mut self.rx).await;
        tracing::debug!(exit = %self.exit, confirmed, "disconnected");
        let stats = self.link.session().stats();
        tracing::debug!(
            exit = %self.exit,
            msgs_out = stats.msgs_out,
            msgs_in = stats.msgs_in,
            packets_out = stats.packets_out,
            packets_in = stats.packets_in,
            "tunnel closed"
        );
        // The mixnet client has tasks and a gateway connection of its own to stop.
        self.transport.shutdown().await;
    }

    async fn event_loop(&mut self, stop: &mut oneshot::Receiver<()>) -> io::Result<()> {
        loop {
            let now = Instant::now().into_std();
            let changes = self.transport.path_changes();
            if changes != self.path_changes {
                self.path_changes = changes;
                self.link.handle_path_change(now);
            }
            self.link.handle_timeout(now);
            let more = self.poll_stack(now);
            link::transmit(&mut self.link, &mut self.transport).await;
            while let Some(ev) = self.link.poll_event() {
                self.handle_event(ev);
            }
            let pace_at = link::transmit(&mut self.link, &mut self.transport).await;

            let deadline = if more {
                Some(Instant::now())
            } else {
                let now = Instant::now().into_std();
                let stack_at = self.shared.lock().poll_at(now);
                [stack_at, self.link.poll_timeout(), pace_at.map(Instant::into_std)]
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
                    self.handle_message(n);
                    self.drain_transport()?;
                }
                () = self.shared.wake.notified() => {}
                () = sleep_opt(deadline) => {}
            }
        }
    }

    /// Polls the stack once and hands what it emitted to the link. Returns whether received
    /// packets are still waiting for the next poll.
    fn poll_stack(&mut self, now: std::time::Instant) -> bool {
        let mut st = self.shared.lock();
        let more = st.poll(now);
        let tx = &mut st.device.tx;
        // Only what the session can queue: the rest stays in the device, whose full queue makes
        // smoltcp hold its segments (back-pressure) rather than lose them in the session.
        while let Some(pkt) = tx.front().filter(|_| self.link.can_queue()) {
            self.link.send_ip(pkt, now);
            tx.pop();
        }
        // The bundle stays open until the transport can take it (link::transmit).
        more
    }

    /// One message from the exit (`n` bytes in `rx`): its IP packets go into the device's
    /// receive queue.
    fn handle_message(&mut self, n: usize) {
        let now = Instant::now().into_std();
        let Some(msg) = self.rx.get(..n) else { return };
        let mut st = self.shared.lock();
        for pkt in self.link.handle_message(msg, now) {
            st.device.push_rx(pkt);
        }
    }

    /// Takes further queued messages, until a poll's worth of packets is waiting.
    fn drain_transport(&mut self) -> io::Result<()> {
        while self.shared.lock().device.rx.len() < DEVICE_BURST {
            match self.transport.try_recv(&mut self.rx) {
                Ok(n) => self.handle_message(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The link's word reaches the sockets: a new allocation is installed in the stack; while
    /// the exit is lost, the sockets stay and new connections are refused as `Reconnecting`
    /// (the link retries with its backoff, forever: the exit may come back).
    fn handle_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Up(alloc) => {
                tracing::info!(exit = %self.exit, ipv4 = %alloc.ipv4, ipv6 = %alloc.ipv6, version = alloc.version, "tunnel reconnected");
                self.shared.lock().set_allocation(alloc, Instant::now().into_std());
            }
            LinkEvent::Lost { .. } => {
                let mut st = self.shared.lock();
                if st.state != StackState::Closed {
                    st.state = StackState::Reconnecting;
                }
            }
            LinkEvent::Failed(_) | LinkEvent::Closed => {}
        }
    }
}
