//! Errors of the library API.
//!
//! One enum, [`TunnelError`], for everything a [`Tunnel`](super::Tunnel) method can return.
//! Variants say *when* they happen; foreign errors are wrapped at this boundary, never
//! flattened into strings. Errors of an established [`TcpStream`](super::TcpStream) are
//! `std::io::Error`s, because that is what tokio's `AsyncRead`/`AsyncWrite` (and so hyper,
//! tokio-rustls and tokio-tungstenite) speak; [`TunnelError`] converts into one for callers
//! that mix the two.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::link::ConnectError;
use crate::transport::udp::UdpError;
use crate::transport::OpenError;

/// Why a tunnel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// `build()` without `.ipr(..)` in a build without the `mixnet` feature: there is no Nym
    /// directory to pick an exit from.
    #[error("no IPR given and this build has no mixnet transport: use .ipr(\"udp://HOST:PORT\")")]
    NoIpr,

    /// A Nym address was given to a build without the `mixnet` feature.
    #[error("{ipr} is a Nym address, but this build has no mixnet transport (feature \"mixnet\")")]
    MixnetUnavailable {
        /// The address that was asked for.
        ipr: String,
    },

    /// The mixnet client could not be built, found no IPR exit, or could not reach the
    /// directory (only with the `mixnet` feature).
    #[error("mixnet: {0}")]
    Mixnet(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The `udp://` transport could not be opened (name resolution, socket).
    #[error(transparent)]
    Udp(#[from] UdpError),

    /// The IPR exit did not accept the session: no answer to the v10 and v9 connects, or a
    /// denial (no free IP).
    #[error("IPR exit {exit}: {source}")]
    Connect {
        /// The exit that was tried.
        exit: String,
        /// What went wrong.
        #[source]
        source: ConnectError,
    },

    /// The tunnel was shut down, or its background task stopped (transport failure).
    #[error("the tunnel is closed")]
    Closed,

    /// The exit was lost and a new session is being set up; try again in a moment.
    #[error("the tunnel is reconnecting to its exit")]
    Reconnecting,

    /// The remote host answered the SYN with a reset: nothing listens on that port (or a
    /// firewall on the far side said no).
    #[error("connection to {addr} refused")]
    Refused {
        /// The destination.
        addr: SocketAddr,
    },

    /// No SYN-ACK within the connect timeout (builder: `tcp_connect_timeout`).
    #[error("connection to {addr} timed out after {} s", .after.as_secs())]
    ConnectTimeout {
        /// The destination.
        addr: SocketAddr,
        /// How long we waited.
        after: Duration,
    },

    /// The destination cannot be reached from the allocated addresses (e.g. port 0, or an
    /// unspecified or multicast address).
    #[error("{addr} is not a reachable destination")]
    Unaddressable {
        /// The destination.
        addr: SocketAddr,
    },

    /// All 16 384 ephemeral ports (49152–65535) of the protocol are in use.
    #[error("no free local port")]
    NoFreePort,

    /// `udp_socket_on(port)` for a port another socket of this tunnel holds.
    #[error("local port {port} is already in use")]
    PortInUse {
        /// The requested port.
        port: u16,
    },

    /// The tunnel already holds its maximum number of sockets (closing TCP sockets count
    /// until they have left TIME-WAIT).
    #[error("too many open sockets (at most {max})")]
    TooManySockets {
        /// The limit.
        max: usize,
    },

    /// An I/O error of the underlying transport.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<TunnelError> for io::Error {
    fn from(e: TunnelError) -> io::Error {
        let kind = match &e {
            TunnelError::Io(inner) => inner.kind(),
            TunnelError::Refused { .. } => io::ErrorKind::ConnectionRefused,
            TunnelError::ConnectTimeout { .. } => io::ErrorKind::TimedOut,
            TunnelError::Closed | TunnelError::Reconnecting => io::ErrorKind::NotConnected,
            TunnelError::PortInUse { .. } => io::ErrorKind::AddrInUse,
            TunnelError::NoFreePort | TunnelError::TooManySockets { .. } => io::ErrorKind::AddrNotAvailable,
            TunnelError::Unaddressable { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

impl From<OpenError> for TunnelError {
    fn from(e: OpenError) -> TunnelError {
        match e {
            OpenError::Udp(e) => TunnelError::Udp(e),
            #[cfg(feature = "mixnet")]
            OpenError::Mixnet(e) => e.into(),
            OpenError::NoMixnet { ipr: Some(ipr) } => TunnelError::MixnetUnavailable { ipr },
            OpenError::NoMixnet { ipr: None } => TunnelError::NoIpr,
        }
    }
}

#[cfg(feature = "mixnet")]
impl From<crate::transport::mixnet::MixnetError> for TunnelError {
    fn from(e: crate::transport::mixnet::MixnetError) -> TunnelError {
        TunnelError::Mixnet(Box::new(e))
    }
}

/// The `io::Error` a socket operation returns once the tunnel is closed.
pub(crate) fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, TunnelError::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_follow_the_variant() {
        let addr: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert_eq!(io::Error::from(TunnelError::Refused { addr }).kind(), io::ErrorKind::ConnectionRefused);
        let e = io::Error::from(TunnelError::ConnectTimeout { addr, after: Duration::from_secs(30) });
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "connection to 192.0.2.1:80 timed out after 30 s");
        assert_eq!(closed().kind(), io::ErrorKind::NotConnected);
    }
}
