//! A link: one sans-IO [`Session`] driven over one [`Transport`].
//!
//! The handshake and the transmit flush are shared by the two users of a session: the VPN
//! driver (packets from a TUN) and the library tunnel (packets from a userspace smoltcp stack).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::ipr::{Event, MessageKind, Session, SessionConfig, SessionError};
use crate::transport::Transport;

/// What the exit gave us on connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// Reported by v10 exits only.
    pub mtu: Option<u16>,
    pub version: u8,
}

impl Allocation {
    /// MTU the IPR uses when it does not report one (v9: `CLIENT_MTU_FALLBACK`,
    /// docs/ipr-protocol.md §3.4).
    pub const V9_MTU: u16 = 1420;

    pub fn mtu_or_default(&self) -> u16 {
        self.mtu.unwrap_or(Self::V9_MTU)
    }

    /// The MTU to give the tunnel: what the exit announced, clamped to what it can sanely be.
    /// The exit's word is untrusted input: Linux switches IPv6 off on an interface whose MTU
    /// drops below 1280 (RFC 8200 §5), which deletes the tunnel's IPv6 routes and lets IPv6
    /// out of the tunnel while it still looks connected; 0 would fail `ip link set`. So with
    /// IPv6 tunnelled nothing below [`MIN_MTU_V6`] is used, without it nothing below
    /// [`MIN_MTU_V4`], and nothing above [`MAX_EXIT_MTU`] (a larger bundle could not cross
    /// the mixnet as one message anyway).
    pub fn tunnel_mtu(&self, ipv6: bool) -> u16 {
        let floor = if ipv6 { MIN_MTU_V6 } else { MIN_MTU_V4 };
        self.mtu_or_default().clamp(floor, MAX_EXIT_MTU)
    }

    /// The allocation a `Connected` event carries; says once, here, if the exit's MTU is out
    /// of the range [`Allocation::tunnel_mtu`] keeps to.
    pub fn new(ipv4: Ipv4Addr, ipv6: Ipv6Addr, mtu: Option<u16>, version: u8) -> Allocation {
        if let Some(m) = mtu.filter(|m| !(MIN_MTU_V6..=MAX_EXIT_MTU).contains(m)) {
            tracing::warn!(
                announced = m,
                "the exit announced an MTU outside {MIN_MTU_V6}..={MAX_EXIT_MTU}; the tunnel clamps it"
            );
        }
        Allocation { ipv4, ipv6, mtu, version }
    }
}

/// The smallest MTU of a link that carries IPv6 (RFC 8200 §5).
pub use crate::pipeline::IPV6_MIN_MTU as MIN_MTU_V6;
/// The smallest MTU every IPv4 host must accept whole (RFC 791: 576-byte datagrams).
pub const MIN_MTU_V4: u16 = 576;
/// The largest MTU taken from an exit: jumbo frames; the IPR's own default is 1420.
pub const MAX_EXIT_MTU: u16 = 9000;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("did not answer within {secs} s (tried protocol v10 and v9); is it running and reachable?")]
    NoAnswer { secs: u64 },
    #[error("refused the connection: {0}")]
    Refused(String),
    #[error("transport failed: {0}")]
    Io(#[from] io::Error),
}

/// Session settings for `transport`: its connect timeouts, a keepalive well inside the IPR's
/// 60 s inactivity limit (docs/ipr-protocol.md §3.6), and a dead-exit verdict after 45 s of
/// silence.
pub fn session_config(transport: &Transport, max_version: u8) -> SessionConfig {
    let (v10, v9) = transport.connect_timeouts();
    SessionConfig {
        stream_id: rand::random(),
        max_version,
        v10_timeout: v10,
        v9_timeout: v9,
        keepalive_idle: Duration::from_secs(15),
        dead_after: Duration::from_secs(45),
        probe_timeout: Duration::from_secs(15),
        tx_queue: transport.queue_limit(),
    }
}

/// Runs the handshake (v10, falling back to v9) until connected, refused or timed out.
/// `rx` is a receive buffer large enough for one message.
pub async fn connect(
    transport: &mut Transport,
    rx: &mut [u8],
    max_version: u8,
) -> Result<(Session, Allocation), ConnectError> {
    let started = Instant::now();
    let mut session = Session::new(session_config(transport, max_version), started.into_std());
    loop {
        flush_transmit(&mut session, transport).await;
        // Every event ends the handshake, one way or the other.
        if let Some(ev) = session.poll_event() {
            match ev {
                Event::Connected { ipv4, ipv6, mtu, version } => {
                    return Ok((session, Allocation::new(ipv4, ipv6, mtu, version)));
                }
                Event::ConnectFailed(SessionError::Timeout) | Event::ExitUnresponsive => {
                    return Err(ConnectError::NoAnswer { secs: started.elapsed().as_secs() });
                }
                Event::ConnectFailed(e) => return Err(ConnectError::Refused(e.to_string())),
                Event::Disconnected => return Err(ConnectError::Refused("disconnected".into())),
            }
        }
        let deadline = session.poll_timeout().map(Instant::from_std);
        tokio::select! {
            r = transport.recv(rx) => {
                let n = r?;
                // No data can arrive before Connected; whatever does is counted by the session.
                let _ = session.handle_message(&rx[..n], Instant::now().into_std()).count();
            }
            () = sleep_opt(deadline) => session.handle_timeout(Instant::now().into_std()),
        }
    }
}

/// How long a clean stop waits for the exit to confirm the Disconnect. The confirmation proves
/// the Disconnect arrived, so the IPR freed our addresses at once rather than after its 60 s
/// idle sweep; a mixnet round trip takes about a second (the default profile), and the
/// Disconnect may queue behind data still in the mixnet client.
pub const DISCONNECT_GRACE: Duration = Duration::from_secs(3);

/// Says goodbye: queues the Disconnect, sends it, and waits up to [`DISCONNECT_GRACE`] for the
/// exit's confirmation. Returns whether it came. Whatever else arrives meanwhile is dropped
/// (the caller is closing).
pub async fn disconnect(session: &mut Session, transport: &mut Transport, rx: &mut [u8]) -> bool {
    if !session.is_connected() {
        return false; // nothing to free at the exit
    }
    session.disconnect();
    let give_up = Instant::now() + DISCONNECT_GRACE;
    loop {
        if tokio::time::timeout_at(give_up, flush_transmit(session, transport)).await.is_err() {
            return false;
        }
        while let Some(ev) = session.poll_event() {
            // Within the grace period only the exit's reply ends `Disconnecting` (the session's
            // own timeout is the connect timeout, 5 s or more).
            if ev == Event::Disconnected {
                return true;
            }
        }
        tokio::select! {
            r = transport.recv(rx) => match r {
                Ok(n) => session.handle_message(&rx[..n], Instant::now().into_std()).for_each(drop),
                Err(_) => return false,
            },
            () = sleep_until(give_up) => return false,
            () = sleep_opt(session.poll_timeout().map(Instant::from_std)) => session.handle_timeout(Instant::now().into_std()),
        }
    }
}

/// Sends every message the session has ready, whatever the transport's pace (the handshake and
/// the goodbye, which are control messages anyway).
pub async fn flush_transmit(session: &mut Session, transport: &mut Transport) {
    while let Some(msg) = session.poll_transmit() {
        transport.send(msg.bytes, msg.kind).await;
        session.pop_transmit();
    }
}

/// Sends what the transport has room for: control messages always, data while it is ready;
/// when it is ready and nothing else is queued, the open bundle is closed and sent too, so a
/// packet on an idle link never waits. Returns when to try again if something is still held
/// back (the caller's pacing timer), `None` when nothing is.
pub async fn transmit(session: &mut Session, transport: &mut Transport) -> Option<Instant> {
    loop {
        match session.poll_transmit() {
            Some(msg) if msg.kind == MessageKind::Control || transport.ready() => {
                transport.send(msg.bytes, msg.kind).await;
                session.pop_transmit();
            }
            Some(_) => break,
            None if session.has_pending() && transport.ready() => session.flush(),
            None => break,
        }
    }
    session.has_pending().then(|| Instant::now() + transport.retry_after())
}

/// Sleeps until `deadline`, or forever without one (a `select!` arm that never fires).
pub async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// When to try again after the exit or the transport was lost: the first retry at once, then
/// exponentially spaced (1 s, 2 s, 4 s, … up to [`Backoff::CAP`]), each delay jittered by ±25 %
/// so that many clients of one restarted exit do not come back in step. A success resets it.
/// An exit that refuses us is asked again at most once a minute, not once a round trip.
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

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(mtu: Option<u16>) -> Allocation {
        Allocation { ipv4: Ipv4Addr::new(10, 0, 0, 2), ipv6: Ipv6Addr::LOCALHOST, mtu, version: 10 }
    }

    #[test]
    fn the_exits_mtu_is_clamped_never_below_1280_with_ipv6() {
        assert_eq!(alloc(None).tunnel_mtu(true), 1420, "v9: the IPR's default");
        assert_eq!(alloc(Some(1500)).tunnel_mtu(true), 1500);
        for hostile in [0, 1, 1200, 1279] {
            assert_eq!(alloc(Some(hostile)).tunnel_mtu(true), MIN_MTU_V6, "{hostile}");
        }
        assert_eq!(alloc(Some(1200)).tunnel_mtu(false), 1200, "IPv4 only: a small MTU is honoured");
        assert_eq!(alloc(Some(0)).tunnel_mtu(false), MIN_MTU_V4);
        assert_eq!(alloc(Some(u16::MAX)).tunnel_mtu(true), MAX_EXIT_MTU);
    }

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
