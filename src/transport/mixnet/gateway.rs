//! The mixnet client's entry gateway: its socket, which gets the VPN's routing mark before it
//! connects ([`GatewayWatch::on_connection`], system/mark.rs), and its IP address(es), which
//! `status` shows. Routing does not use the addresses: they come from the gateway's operator,
//! and exempting them would let a published 9.9.9.9 pull DNS out of the tunnel.
//!
//! nym-sdk 1.21.6 has no "gateway address" getter, so we combine two sources:
//!
//! 1. **The live socket.** The SDK reports the websocket's file descriptor: once after start-up
//!    (`MixnetClient::gateway_connection().gateway_ws_fd`) and, for clients we build, on every
//!    (re)connection (`MixnetClientBuilder::with_connection_fd_callback`). `getpeername(2)` on
//!    it gives the exact address in use, including one resolved from the gateway's hostname
//!    (wss). It is read at every [`super::MixnetTransport::peer_addrs`] call, so a reconnect
//!    is seen at once. The fd is not ours: after a reconnect without callback (a caller-built
//!    client) the number may be reused by an unrelated socket, so a peer is only trusted when
//!    its port is one of the gateway's published client ports.
//! 2. **The topology.** The client's current topology (`read_current_route_provider`, refreshed
//!    by the SDK every 5 min) lists the gateway — found by the identity in our own Nym address —
//!    with `entry.ip_addresses` and its websocket ports. Refreshed by the receive task every
//!    [`TOPOLOGY_REFRESH`]. If the gateway has no entry details we fall back to its `mix_host`.
//!
//! The result is empty only if both fail (no fd, e.g. a custom gateway transceiver, and a
//! gateway absent from the topology).
//!
//! A client's gateway identity is part of its Nym address and never changes for its lifetime;
//! what can change is the gateway's IP (topology) and the socket (reconnect), both covered.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::MixnetClient;
use crate::transport::socket::{self, Opt};

/// How often the receive task re-reads the gateway from the topology.
pub const TOPOLOGY_REFRESH: Duration = Duration::from_secs(60);
/// More addresses than this for one host is a directory error (also caps the directory's, which
/// are exempted by address while a client is rebuilt).
pub const MAX_GATEWAY_ADDRS: usize = 8;

/// What we know about the entry gateway, shared between the transport and its receive task.
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
    published: Mutex<Published>,
}

/// The gateway as the topology describes it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Published {
    /// The gateway's listed IP addresses (or its `mix_host` without entry details).
    pub ips: Vec<IpAddr>,
    /// Websocket ports (ws and wss) clients connect to; empty if unknown.
    pub ports: Vec<u16>,
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
            published: Mutex::new(Published::default()),
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

    /// Replace what the topology says about the gateway.
    pub fn set_published(&self, p: Published) {
        if let Ok(mut g) = self.published.lock() {
            *g = p;
        }
    }

    /// The gateway's addresses, now.
    pub fn addrs(&self) -> Vec<IpAddr> {
        let published = self.published.lock().map(|g| g.clone()).unwrap_or_default();
        let fd = self.ws_fd.load(Ordering::Relaxed);
        let peer = if fd >= 0 { socket::peer_of(fd) } else { None };
        merge(&published, peer)
    }

    /// Reads the gateway from the client's topology into `self`.
    pub async fn refresh(&self, client: &MixnetClient) {
        let gateway = client.nym_address().gateway();
        let found = match client.read_current_route_provider().await {
            Some(rp) => rp.node_by_identity(gateway).map(|node| {
                let (ips, ports) = match &node.entry {
                    Some(e) => {
                        (e.ip_addresses.clone(), e.clients_wss_port.into_iter().chain([e.clients_ws_port]).collect())
                    }
                    None => (vec![node.mix_host.ip()], Vec::new()),
                };
                Published { ips, ports }
            }),
            None => None,
        };
        match found {
            Some(p) => self.set_published(p),
            None => tracing::debug!(gateway = %gateway.to_base58_string(), "entry gateway not in the current topology"),
        }
    }
}

/// Topology addresses, plus the live peer if its port is a published client port (or if no
/// ports are known). Unspecified addresses are dropped; the list is bounded and de-duplicated.
pub fn merge(published: &Published, peer: Option<SocketAddr>) -> Vec<IpAddr> {
    let trusted_peer =
        peer.filter(|p| published.ports.is_empty() || published.ports.contains(&p.port())).map(|p| canonical(p.ip()));
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in trusted_peer.into_iter().chain(published.ips.iter().copied().map(canonical)) {
        if !ip.is_unspecified() && !out.contains(&ip) && out.len() < MAX_GATEWAY_ADDRS {
            out.push(ip);
        }
    }
    out
}

/// An IPv4 peer of a dual-stack socket shows up as ::ffff:a.b.c.d; routes want a.b.c.d.
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn merge_puts_the_live_peer_first_and_deduplicates() {
        let p = Published { ips: vec![ip("192.0.2.7"), ip("2001:db8::7"), ip("192.0.2.7")], ports: vec![9001, 9000] };
        let live = Some("198.51.100.9:9000".parse().unwrap());
        assert_eq!(merge(&p, live), [ip("198.51.100.9"), ip("192.0.2.7"), ip("2001:db8::7")]);
        // The live socket is usually one of the published addresses.
        let same = Some("192.0.2.7:9001".parse().unwrap());
        assert_eq!(merge(&p, same), [ip("192.0.2.7"), ip("2001:db8::7")]);
    }

    #[test]
    fn merge_ignores_a_peer_on_a_foreign_port() {
        // A reused fd now connected to, say, an HTTPS server must not be routed around the tunnel.
        let p = Published { ips: vec![ip("192.0.2.7")], ports: vec![9000] };
        assert_eq!(merge(&p, Some("203.0.113.5:443".parse().unwrap())), [ip("192.0.2.7")]);
        // Ports unknown (gateway not in the topology yet): the live socket is all we have.
        assert_eq!(merge(&Published::default(), Some("203.0.113.5:443".parse().unwrap())), [ip("203.0.113.5")]);
        assert!(merge(&Published::default(), None).is_empty());
    }

    #[test]
    fn merge_normalises_and_bounds() {
        let mut p = Published { ips: vec![ip("0.0.0.0"), ip("::")], ports: vec![] };
        assert_eq!(merge(&p, Some("[::ffff:192.0.2.1]:9000".parse().unwrap())), [ip("192.0.2.1")]);
        p.ips = (1..=20).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        assert_eq!(merge(&p, None).len(), MAX_GATEWAY_ADDRS);
    }

    #[test]
    fn watch_combines_fd_and_topology() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let w = GatewayWatch::default();
        assert!(w.addrs().is_empty());
        w.set_fd(Some(client.as_raw_fd()));
        assert_eq!(w.addrs(), [ip("127.0.0.1")]);
        w.set_published(Published { ips: vec![ip("192.0.2.7")], ports: vec![addr.port()] });
        assert_eq!(w.addrs(), [ip("127.0.0.1"), ip("192.0.2.7")]);
        w.set_fd(None);
        assert_eq!(w.addrs(), [ip("192.0.2.7")]);
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
