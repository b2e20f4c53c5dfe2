//! The mixnet client's entry gateway: its socket, which gets the VPN's routing mark before it
//! connects ([`GatewayWatch::on_connection`], system/mark.rs), and its live peer, which `status`
//! shows. Nothing routes by the gateway's address: it comes from the gateway's operator, and
//! exempting it would let a published 9.9.9.9 pull DNS out of the tunnel; the mark is what lets
//! the socket out.
//!
//! nym-sdk 1.21.6 has no "gateway address" getter. It reports the websocket's file descriptor:
//! once after start-up (`MixnetClient::gateway_connection().gateway_ws_fd`) and, for clients we
//! build, on every (re)connection (`MixnetClientBuilder::with_connection_fd_callback`);
//! `getpeername(2)` on it gives the address in use, including one resolved from the gateway's
//! hostname (wss). It is read when asked, so a reconnect shows at once. The fd is not ours:
//! after a reconnect of a caller-built client (no callback) the number may belong to another
//! socket, which is why this is only ever shown, never acted on.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crate::transport::socket::{self, Opt};

/// What we know about the entry gateway's connection, shared with the SDK's callback.
#[derive(Debug)]
pub struct GatewayWatch {
    /// The routing mark each new websocket gets before it connects (system/mark.rs).
    mark: Option<u32>,
    /// Sockets the mark could not be set on (their packets meet the tunnel's routes: the
    /// connection fails, nothing leaks).
    mark_failures: AtomicU64,
    /// The websocket's fd, or -1.
    ws_fd: AtomicI32,
    /// Connections the SDK reported through its callback (the first, then each reconnect).
    connections: AtomicU64,
}

impl Default for GatewayWatch {
    fn default() -> Self {
        GatewayWatch::with_mark(None)
    }
}

impl GatewayWatch {
    /// A watch that sets `mark` on each new gateway socket (`None`: no mark).
    pub fn with_mark(mark: Option<u32>) -> GatewayWatch {
        GatewayWatch {
            mark,
            mark_failures: AtomicU64::new(0),
            ws_fd: AtomicI32::new(-1),
            connections: AtomicU64::new(0),
        }
    }

    /// Sockets that could not be marked so far.
    pub fn mark_failures(&self) -> u64 {
        self.mark_failures.load(Ordering::Relaxed)
    }

    /// The websocket's current fd, as the SDK reports it (`None`: no connection).
    pub fn set_fd(&self, fd: Option<RawFd>) {
        self.ws_fd.store(fd.unwrap_or(-1), Ordering::Relaxed);
    }

    /// The SDK's connection callback: a new gateway websocket, at start or after a reconnect,
    /// called before `connect` (nym-gateway-client 1.21.6, `connect_async_with_hickory`), so
    /// the mark set here decides its route from the first SYN.
    pub fn on_connection(&self, fd: RawFd) {
        if let Some(mark) = self.mark {
            // SAFETY: the SDK calls us with the fd of a socket it owns and keeps open across
            // the call; we only borrow it for this setsockopt.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            if let Err(e) = socket::set(borrowed, Opt::Mark, mark) {
                self.mark_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%e, "cannot mark the gateway socket; it will not reach the gateway");
            }
        }
        self.set_fd(Some(fd));
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Gateway reconnections so far (connections after the first).
    pub fn reconnections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// The gateway the websocket is connected to now, for `status`.
    pub fn peer(&self) -> Option<SocketAddr> {
        let fd = self.ws_fd.load(Ordering::Relaxed);
        let peer = if fd >= 0 { socket::peer_of(fd) } else { None }?;
        Some(SocketAddr::new(canonical(peer.ip()), peer.port()))
    }
}

/// An IPv4 peer of a dual-stack socket shows up as ::ffff:a.b.c.d; people read a.b.c.d.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_peer_is_the_live_socket_s() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let w = GatewayWatch::default();
        assert_eq!(w.peer(), None);
        w.set_fd(Some(client.as_raw_fd()));
        assert_eq!(w.peer(), Some(addr));
        w.set_fd(None);
        assert_eq!(w.peer(), None);
    }

    #[test]
    fn a_v4_mapped_peer_reads_as_v4() {
        assert_eq!(canonical("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(canonical("2001:db8::1".parse().unwrap()), "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn reconnections_count_connections_after_the_first() {
        let w = GatewayWatch::default();
        assert_eq!(w.reconnections(), 0);
        w.on_connection(7);
        assert_eq!(w.reconnections(), 0, "the first connection is not a reconnection");
        w.on_connection(9);
        w.on_connection(11);
        assert_eq!(w.reconnections(), 2);
    }
}
