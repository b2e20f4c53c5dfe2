//! A link: one sans-IO [`Session`] driven over one [`Transport`].
//!
//! The handshake and the transmit flush are shared by the two users of a session: the VPN
//! driver (packets from a TUN) and the library tunnel (packets from a userspace smoltcp stack).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::ipr::{Event, Session, SessionConfig, SessionError};
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
    /// MTU the IPR uses when it does not report one (v9: `CLIENT_MTU_FALLBACK`, ipr §3.4).
    pub const V9_MTU: u16 = 1420;

    pub fn mtu_or_default(&self) -> u16 {
        self.mtu.unwrap_or(Self::V9_MTU)
    }
}

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
/// 60 s inactivity limit (ipr §3.6), and a dead-exit verdict after 45 s of silence.
pub fn session_config(transport: &Transport, max_version: u8) -> SessionConfig {
    let (v10, v9) = transport.connect_timeouts();
    SessionConfig {
        stream_id: rand::random(),
        max_version,
        v10_timeout: v10,
        v9_timeout: v9,
        keepalive_idle: Duration::from_secs(15),
        dead_after: Duration::from_secs(45),
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
                    return Ok((session, Allocation { ipv4, ipv6, mtu, version }));
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

/// Sends every message the session has ready.
pub async fn flush_transmit(session: &mut Session, transport: &mut Transport) {
    while let Some(msg) = session.poll_transmit() {
        transport.send(msg.bytes, msg.kind).await;
        session.pop_transmit();
    }
}

/// Sleeps until `deadline`, or forever without one (a `select!` arm that never fires).
pub async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}
