//! `udp://HOST:PORT`: one datagram is one Nym message payload, to a local `smolmix-exit`.
//!
//! The socket is `connect()`ed, so the kernel discards datagrams from anyone but the exit
//! before we see them; what the exit itself sends is still untrusted and is checked by the
//! session. An ICMP port-unreachable from the exit surfaces as `ECONNREFUSED` on the next
//! call: counted, never fatal (the exit may just be restarting). In a full or split tunnel the
//! socket carries the transport's routing mark, set before `connect` (system/mark.rs).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use serde::Serialize;
use tokio::net::UdpSocket;

/// Socket buffers big enough for ~2 ms of 10 Gbit/s bursts: the loop drains in batches and
/// the default 208 KiB drops datagrams while it is busy writing the TUN.
const SOCKET_BUFFER: u32 = 4 << 20;

/// Why [`UdpTransport::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// The exit's host did not resolve.
    #[error("cannot resolve the exit address udp://{host}:{port}: {source}")]
    Resolve {
        /// The host as given.
        host: String,
        /// The port as given.
        port: u16,
        /// The resolver's error.
        source: io::Error,
    },
    /// Binding or connecting the socket failed.
    #[error("cannot open a UDP socket to {peer}: {source}")]
    Socket {
        /// The resolved exit address.
        peer: SocketAddr,
        /// The socket call's error.
        source: io::Error,
    },
    /// Setting the routing mark failed.
    #[error("cannot mark the UDP socket to {peer} for routing beside the tunnel (needs CAP_NET_ADMIN): {source}")]
    Mark {
        /// The resolved exit address.
        peer: SocketAddr,
        /// The `setsockopt` error.
        source: io::Error,
    },
}

/// Counters of the UDP transport; one datagram is one message.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct UdpStats {
    /// Datagrams received from the exit.
    pub datagrams_in: u64,
    /// Datagrams sent to the exit.
    pub datagrams_out: u64,
    /// Bytes of the datagrams received (UDP payload).
    pub bytes_in: u64,
    /// Bytes of the datagrams sent (UDP payload).
    pub bytes_out: u64,
    /// Sends that failed for a reason other than a refusal; the message is lost.
    pub send_errors: u64,
    /// ICMP port-unreachable from the exit, seen as `ECONNREFUSED` on a send or receive.
    pub refused: u64,
}

/// A connected UDP socket to a local `smolmix-exit`.
#[derive(Debug)]
pub struct UdpTransport {
    sock: UdpSocket,
    peer: SocketAddr,
    stats: UdpStats,
}

impl UdpTransport {
    /// Connects to `host:port`; `mark`: the routing mark to set first (the VPN's, so the
    /// socket's packets leave beside the tunnel; `None` for the library).
    pub async fn connect(host: &str, port: u16, mark: Option<u32>) -> Result<UdpTransport, UdpError> {
        let resolve_err = |source| UdpError::Resolve { host: host.to_string(), port, source };
        let peer = (host, port)
            .to_socket_addrs()
            .map_err(resolve_err)?
            .next()
            .ok_or_else(|| resolve_err(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
        let sock_err = |source| UdpError::Socket { peer, source };
        let bind: SocketAddr = if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
        let sock = UdpSocket::bind(bind).await.map_err(sock_err)?;
        let fd = std::os::fd::AsFd::as_fd(&sock);
        // *BufForce needs CAP_NET_ADMIN, which `up` has; fall back to the capped variant.
        use super::socket::{set, Opt};
        if set(fd, Opt::RcvBufForce, SOCKET_BUFFER).is_err() {
            let _ = set(fd, Opt::RcvBuf, SOCKET_BUFFER);
        }
        if set(fd, Opt::SndBufForce, SOCKET_BUFFER).is_err() {
            let _ = set(fd, Opt::SndBuf, SOCKET_BUFFER);
        }
        if let Some(m) = mark {
            // Before connect: the route (and so the source address) is chosen by connect.
            set(fd, Opt::Mark, m).map_err(|source| UdpError::Mark { peer, source })?;
        }
        sock.connect(peer).await.map_err(sock_err)?;
        Ok(UdpTransport { sock, peer, stats: UdpStats::default() })
    }

    /// The socket's own address (`None` if the kernel cannot say).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sock.local_addr().ok()
    }

    /// The exit's resolved address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The counters so far.
    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// Waits for one message. Refusals (ICMP unreachable) are counted and skipped.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.sock.recv(buf).await {
                Ok(n) => return Ok(self.count_in(n)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.stats.refused += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// One more message if one is already queued (`WouldBlock` otherwise).
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.sock.try_recv(buf) {
                Ok(n) => return Ok(self.count_in(n)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.stats.refused += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one message. A failure is counted and logged, not returned: the exit's side is
    /// lossy anyway (a real mixnet loses messages too) and the session notices a dead exit.
    pub async fn send(&mut self, msg: &[u8]) {
        match self.sock.send(msg).await {
            Ok(_) => {
                self.stats.datagrams_out += 1;
                self.stats.bytes_out += msg.len() as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.stats.refused += 1,
            Err(e) => {
                self.stats.send_errors += 1;
                tracing::debug!(%e, peer = %self.peer, "send to exit failed");
            }
        }
    }

    fn count_in(&mut self, n: usize) -> usize {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += n as u64;
        n
    }
}
