//! The async half of a link, shared by both drivers: moving a [`Link`]'s messages over a
//! [`Transport`] for the handshake, the steady state and the goodbye.

use std::io;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use super::{Link, LinkConfig, LinkEvent, Loss};
use crate::ipr::{Allocation, MessageKind, SessionConfig};
use crate::transport::{Progress, Step, Transport};

/// Largest transport message: a 64 KiB bundle plus the LP and IPR headers; every receive
/// buffer is this long.
pub const MAX_MESSAGE: usize = 65535 + 64;

/// Why the first session did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No answer to the v10 or the v9 connect.
    #[error("did not answer within {secs} s (tried protocol v10 and v9); is it running and reachable?")]
    NoAnswer {
        /// How long it was given.
        secs: u64,
    },
    /// The session ended otherwise (a refusal, a Disconnect).
    #[error("{0}")]
    Lost(Loss),
    /// The transport failed while connecting.
    #[error("transport failed: {0}")]
    Io(#[from] io::Error),
}

/// Session settings for `transport`: its connect timeouts, a keepalive well inside the IPR's
/// 60 s inactivity limit (docs/ipr-protocol.md §3.6), and a dead-exit verdict after 45 s of
/// silence.
pub fn session_config(transport: &Transport, max_version: u8) -> SessionConfig {
    let (v10, v9) = transport.connect_timeouts();
    SessionConfig {
        stream_id: 0, // drawn by the link for each session
        max_version,
        v10_timeout: v10,
        v9_timeout: v9,
        keepalive_idle: Duration::from_secs(15),
        dead_after: Duration::from_secs(45),
        probe_timeout: Duration::from_secs(15),
        tx_queue: transport.queue_limit(),
    }
}

/// A link over `transport` whose first session starts now, with a random seed.
pub fn new_link(transport: &Transport, max_version: u8) -> Link {
    let cfg = LinkConfig { session: session_config(transport, max_version), seed: rand::random() };
    Link::new(cfg, Instant::now().into_std())
}

/// Runs the first session's handshake (v10, falling back to v9) until it is up, refused or
/// timed out, reporting each Connect sent and the allocation to `progress`. `rx` is a receive
/// buffer of [`MAX_MESSAGE`] bytes.
pub async fn connect(
    link: &mut Link,
    transport: &mut Transport,
    rx: &mut [u8],
    progress: &Progress,
) -> Result<Allocation, ConnectError> {
    let started = Instant::now();
    let mut asked = None;
    loop {
        flush_transmit(link, transport).await;
        if let Some(v) = link.session().connecting_version().filter(|v| asked != Some(*v)) {
            asked = Some(v);
            progress.report(Step::Session { version: v });
        }
        match link.poll_event() {
            Some(LinkEvent::Up(alloc)) => {
                progress.report(Step::Allocated(alloc));
                return Ok(alloc);
            }
            Some(LinkEvent::Failed(Loss::NoAnswer | Loss::Unresponsive)) => {
                return Err(ConnectError::NoAnswer { secs: started.elapsed().as_secs() })
            }
            Some(LinkEvent::Failed(loss) | LinkEvent::Lost { loss, .. }) => return Err(ConnectError::Lost(loss)),
            Some(LinkEvent::Closed) => return Err(ConnectError::Lost(Loss::Disconnected)),
            None => {}
        }
        tokio::select! {
            r = transport.recv(rx) => {
                let n = r?;
                // No data can arrive before the session is up; whatever does is counted.
                let _ = link.handle_message(&rx[..n], Instant::now().into_std()).count();
            }
            () = sleep_opt(link.poll_timeout().map(Instant::from_std)) => link.handle_timeout(Instant::now().into_std()),
        }
    }
}

/// How long a clean stop waits for the exit to confirm the Disconnect. The confirmation proves
/// the Disconnect arrived, so the IPR freed our addresses at once rather than after its 60 s
/// idle sweep; a mixnet round trip takes about a second (the default profile), and the
/// Disconnect may queue behind data still in the mixnet client.
pub const DISCONNECT_GRACE: Duration = Duration::from_secs(3);

/// Closes the link: sends the Disconnect if a session is up and waits up to
/// [`DISCONNECT_GRACE`] for the exit's confirmation. Returns whether it came. Whatever else
/// arrives meanwhile is dropped (the caller is closing).
pub async fn disconnect(link: &mut Link, transport: &mut Transport, rx: &mut [u8]) -> bool {
    if !link.close() {
        return false; // nothing to free at the exit
    }
    let give_up = Instant::now() + DISCONNECT_GRACE;
    loop {
        if tokio::time::timeout_at(give_up, flush_transmit(link, transport)).await.is_err() {
            return false;
        }
        // Within the grace period only the exit's reply ends the Disconnect (the session's own
        // timeout is the connect timeout, 5 s or more).
        while let Some(ev) = link.poll_event() {
            if ev == LinkEvent::Closed {
                return true;
            }
        }
        tokio::select! {
            r = transport.recv(rx) => match r {
                Ok(n) => link.handle_message(&rx[..n], Instant::now().into_std()).for_each(drop),
                Err(_) => return false,
            },
            () = sleep_until(give_up) => return false,
            () = sleep_opt(link.poll_timeout().map(Instant::from_std)) => link.handle_timeout(Instant::now().into_std()),
        }
    }
}

/// Sends every message the link has ready, whatever the transport's pace (the handshake and
/// the goodbye, which are control messages anyway).
pub async fn flush_transmit(link: &mut Link, transport: &mut Transport) {
    while let Some(msg) = link.poll_transmit() {
        transport.send(msg.bytes, msg.kind).await;
        link.pop_transmit();
    }
}

/// Sends what the transport has room for: control messages always, data while it is ready;
/// when it is ready and nothing else is queued, the open bundle is closed and sent too, so a
/// packet on an idle link never waits. Returns when to try again if something is still held
/// back (the caller's pacing timer), `None` when nothing is.
pub async fn transmit(link: &mut Link, transport: &mut Transport) -> Option<Instant> {
    loop {
        match link.poll_transmit() {
            Some(msg) if msg.kind == MessageKind::Control || transport.ready() => {
                transport.send(msg.bytes, msg.kind).await;
                link.pop_transmit();
            }
            Some(_) => break,
            None if link.has_pending() && transport.ready() => link.flush(),
            None => break,
        }
    }
    link.has_pending().then(|| Instant::now() + transport.retry_after())
}

/// Sleeps until `deadline`, or forever without one (a `select!` arm that never fires).
pub async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}
