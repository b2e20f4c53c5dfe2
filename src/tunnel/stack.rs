//! The userspace IP stack of a tunnel: smoltcp `Interface` + `SocketSet` + [`QueueDevice`],
//! shared between the runner task and the socket handles.
//!
//! # Contract
//!
//! [`Shared`] is the only state the runner and the handles share: a `std::sync::Mutex<Stack>`
//! (held for microseconds, never across an `.await`) and a `Notify` that a handle pulses after
//! it changed a socket, so the runner polls the interface and sends what is now due. smoltcp
//! wakes the handles through `register_recv_waker`/`register_send_waker` from inside
//! `Interface::poll`.
//!
//! The stack never removes a socket a handle still refers to (so `SocketSet::get_mut` never
//! meets a stale handle). Closing TCP sockets stay in the set as *orphans* until smoltcp has
//! finished the close (FIN exchange, TIME-WAIT, or the idle timeout), then their port is freed.
//! At most [`MAX_SOCKETS`] sockets exist at once.
//!
//! # TCP settings for a ~0.7 s round trip
//!
//! NymVPN models the mixnet RTT as 2 × (6 × 50 ms + 3 × 15 ms) = 690 ms
//! (docs/performance.md §1.4). The settings below follow from that (each constant says why):
//! 256 KiB buffers, no Nagle, a 20 ms ACK delay, keep-alive and an idle timeout measured in
//! tens of seconds. The RTO cannot be set in smoltcp 0.14: its estimator follows RFC 6298
//! (initial 1 s, min 1 s, max 60 s) and learns from the first ACKed segment, so on the mixnet
//! a SYN whose round trip exceeds 1 s is sent twice (the "RTT storm" of
//! docs/performance.md §1.8), which the peer answers with a duplicate SYN-ACK.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use tokio::sync::Notify;

use super::device::QueueDevice;
use super::error::TunnelError;
use super::ports::{PortError, Ports, Proto};
use crate::ipr::Allocation;

/// Sockets per tunnel, closing ones included. Bounds memory: a TCP socket reserves 2 × 256 KiB
/// of (lazily committed) buffer.
pub(crate) const MAX_SOCKETS: usize = 512;

/// Per-direction TCP buffer. At 690 ms RTT a window W moves W/RTT: 8 KiB (smolmix's
/// tokio-smoltcp default) gives 11.9 KB/s, 256 KiB gives 380 KB/s (docs/performance.md §1.8),
/// above the default Poisson ceiling of ~0.6 Mbit/s (docs/performance.md §1.5), so the window is
/// never the bottleneck. smoltcp derives window scale 2 from it (docs/performance.md §2.7).
pub(crate) const TCP_BUFFER: usize = 256 * 1024;

/// Delayed-ACK timer. smoltcp's default is 10 ms (docs/performance.md §2.7); every ACK that
/// leaves alone costs a mixnet message (≥ 1 Sphinx packet, docs/performance.md §3.4), and the IPR
/// itself holds packets 20 ms to bundle them (docs/performance.md §3.1), so 20 ms more lets an
/// ACK ride with the reply data at no visible cost next to a 690 ms RTT. smoltcp still ACKs
/// every second full segment at once.
pub(crate) const TCP_ACK_DELAY: Duration = Duration::from_millis(20);

/// Keep-alive probe after this much silence: finds a dead peer of an idle connection while
/// costing one mixnet message a minute (the IPR session's own keepalive already keeps the
/// allocation alive, docs/ipr-protocol.md §3.6).
pub(crate) const TCP_KEEP_ALIVE: Duration = Duration::from_secs(60);

/// A connection with unacknowledged data (or unanswered keep-alives) is aborted after this
/// much silence from the peer: 12 × smoltcp's 10 s maximum RTO, far beyond mixnet jitter.
pub(crate) const TCP_TIMEOUT: Duration = Duration::from_secs(120);

/// UDP: datagrams (metadata slots) and payload bytes per direction.
const UDP_SLOTS: usize = 64;
const UDP_BUFFER: usize = 64 * 1024;

/// The IPR's own TUN addresses (docs/ipr-protocol.md §3.3): the next hop of the default routes.
/// With `Medium::Ip` there is no neighbour discovery, so the gateway only marks "routable".
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 1);

/// What the sockets see of the link (`crate::link::LinkState`): whether traffic can flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StackState {
    Up,
    /// The exit was lost; a new session is being set up.
    Reconnecting,
    /// Shut down, or the transport failed: every operation fails.
    Closed,
}

/// State shared by the runner and the socket handles.
#[derive(Debug)]
pub(crate) struct Shared {
    stack: Mutex<Stack>,
    /// Pulsed by handles after changing a socket; the runner then polls the interface.
    pub(crate) wake: Notify,
}

impl Shared {
    pub(crate) fn new(stack: Stack) -> Self {
        Shared { stack: Mutex::new(stack), wake: Notify::new() }
    }

    /// Locks the stack. A panic while locked cannot leave smoltcp state half-updated in a
    /// way that matters more than the panic itself, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Stack> {
        self.stack.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// smoltcp interface, sockets and device of one tunnel.
pub(crate) struct Stack {
    iface: Interface,
    pub(crate) device: QueueDevice,
    pub(crate) sockets: SocketSet<'static>,
    ports: Ports,
    /// TCP sockets whose handle was dropped while the connection was still closing.
    orphans: Vec<(SocketHandle, u16)>,
    alloc: Allocation,
    pub(crate) state: StackState,
    /// Origin of the smoltcp clock (smoltcp's own `Instant::now` is wall-clock based).
    epoch: std::time::Instant,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("alloc", &self.alloc).field("state", &self.state).finish_non_exhaustive()
    }
}

impl Stack {
    pub(crate) fn new(alloc: Allocation, now: std::time::Instant) -> Stack {
        let mut device = QueueDevice::new(alloc.tunnel_mtu(true));
        let iface = new_iface(&mut device, alloc, SmolInstant::ZERO);
        Stack {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            ports: Ports::new(rand::random()),
            orphans: Vec::new(),
            alloc,
            state: StackState::Up,
            epoch: now,
        }
    }

    pub(crate) fn allocation(&self) -> Allocation {
        self.alloc
    }

    fn smol_now(&self, now: std::time::Instant) -> SmolInstant {
        SmolInstant::from_micros(now.saturating_duration_since(self.epoch).as_micros() as i64)
    }

    /// One `Interface::poll` (ingress at most `DEVICE_BURST` packets, then egress) and the
    /// reaping of finished orphans. Returns whether received packets are still queued.
    pub(crate) fn poll(&mut self, now: std::time::Instant) -> bool {
        let ts = self.smol_now(now);
        self.device.begin_poll();
        self.iface.poll(ts, &mut self.device, &mut self.sockets);
        self.reap();
        !self.device.rx.is_empty()
    }

    /// When smoltcp next needs a poll (retransmit, delayed ACK, TIME-WAIT, keep-alive).
    pub(crate) fn poll_at(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        let ts = self.smol_now(now);
        let at = self.iface.poll_at(ts, &self.sockets)?;
        Some(self.epoch + Duration::from_micros(at.total_micros().max(0) as u64))
    }

    /// A new session is up. If its addresses or MTU differ, established TCP connections cannot
    /// continue (their segments carry the old address): they are aborted. UDP sockets are
    /// bound to a port only and keep working.
    pub(crate) fn set_allocation(&mut self, alloc: Allocation, now: std::time::Instant) {
        let old = self.alloc;
        self.alloc = alloc;
        self.state = StackState::Up;
        if (old.ipv4, old.ipv6, old.tunnel_mtu(true)) == (alloc.ipv4, alloc.ipv6, alloc.tunnel_mtu(true)) {
            return;
        }
        tracing::info!(%alloc.ipv4, %alloc.ipv6, "new allocation: resetting TCP connections");
        self.abort_tcp();
        self.device = QueueDevice::new(alloc.tunnel_mtu(true));
        let ts = self.smol_now(now);
        self.iface = new_iface(&mut self.device, alloc, ts);
    }

    /// Closes everything: TCP sockets are aborted, UDP sockets closed; their waiting tasks wake
    /// up and see [`StackState::Closed`].
    pub(crate) fn close_all(&mut self) {
        self.state = StackState::Closed;
        self.abort_tcp();
        for (_, s) in self.sockets.iter_mut() {
            if let smoltcp::socket::Socket::Udp(u) = s {
                u.close();
            }
        }
    }

    fn abort_tcp(&mut self) {
        for (_, s) in self.sockets.iter_mut() {
            if let smoltcp::socket::Socket::Tcp(t) = s {
                t.abort();
            }
        }
    }

    fn reserve_socket(&self) -> Result<(), TunnelError> {
        match self.state {
            StackState::Up => {}
            StackState::Reconnecting => return Err(TunnelError::Reconnecting),
            StackState::Closed => return Err(TunnelError::Closed),
        }
        if self.sockets.iter().count() >= MAX_SOCKETS {
            return Err(TunnelError::TooManySockets { max: MAX_SOCKETS });
        }
        Ok(())
    }

    /// A TCP socket with the mixnet settings, connecting to `remote` from an ephemeral port.
    /// Returns its handle, local port and local address.
    pub(crate) fn open_tcp(&mut self, remote: SocketAddr) -> Result<(SocketHandle, u16, SocketAddr), TunnelError> {
        self.reserve_socket()?;
        if remote.port() == 0 || remote.ip().is_unspecified() || remote.ip().is_multicast() {
            return Err(TunnelError::Unaddressable { addr: remote });
        }
        let port = self.ports.ephemeral(Proto::Tcp).map_err(|_| TunnelError::NoFreePort)?;
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        );
        // Nagle holds a small write for a whole RTT while earlier data is unacknowledged:
        // 690 ms per request line or TLS record on the mixnet. The session bundles small
        // segments into one message anyway (docs/performance.md §3.3), so tinygrams cost little.
        sock.set_nagle_enabled(false);
        // No congestion control (smoltcp picks CUBIC when the feature is on): on the mixnet a
        // duplicate ACK means reordering far more often than loss (the mixnet reordered 414 of
        // 751 downlink messages in one download), and CUBIC shrinks the window for each. What
        // bounds the flight is our own bounded queue: the stack's device takes no segment while
        // the session's ring is full (runner.rs), so nothing is flooded. Measured with the
        // library's 1 MB upload, fast profile: see bench/RESULTS.md.
        sock.set_congestion_control(tcp::CongestionControl::None);
        sock.set_ack_delay(Some(to_smol(TCP_ACK_DELAY)));
        sock.set_keep_alive(Some(to_smol(TCP_KEEP_ALIVE)));
        sock.set_timeout(Some(to_smol(TCP_TIMEOUT)));
        let endpoint = IpEndpoint::from(remote);
        if let Err(e) = sock.connect(self.iface.context(), endpoint, port) {
            self.ports.release(Proto::Tcp, port);
            tracing::debug!(%remote, ?e, "tcp connect refused by the stack");
            return Err(TunnelError::Unaddressable { addr: remote });
        }
        let local_ip = match remote.ip() {
            IpAddr::V4(_) => IpAddr::V4(self.alloc.ipv4),
            IpAddr::V6(_) => IpAddr::V6(self.alloc.ipv6),
        };
        let handle = self.sockets.add(sock);
        Ok((handle, port, SocketAddr::new(local_ip, port)))
    }

    /// A UDP socket bound to `port` (0: an ephemeral port). Returns its handle and port.
    pub(crate) fn open_udp(&mut self, port: u16) -> Result<(SocketHandle, u16), TunnelError> {
        self.reserve_socket()?;
        let port = self.ports.bind(Proto::Udp, port).map_err(|e| match e {
            PortError::Exhausted => TunnelError::NoFreePort,
            PortError::InUse(port) => TunnelError::PortInUse { port },
        })?;
        let mut sock = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; UDP_SLOTS], vec![0u8; UDP_BUFFER]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; UDP_SLOTS], vec![0u8; UDP_BUFFER]),
        );
        if sock.bind(port).is_err() {
            self.ports.release(Proto::Udp, port);
            return Err(TunnelError::PortInUse { port });
        }
        Ok((self.sockets.add(sock), port))
    }

    /// The handle of a TCP socket is gone: close gracefully (FIN) and free it once closed.
    pub(crate) fn release_tcp(&mut self, handle: SocketHandle, port: u16) {
        self.sockets.get_mut::<tcp::Socket>(handle).close();
        self.orphans.push((handle, port));
        self.reap();
    }

    /// The handle of a UDP socket is gone: free it now.
    pub(crate) fn release_udp(&mut self, handle: SocketHandle, port: u16) {
        self.sockets.remove(handle);
        self.ports.release(Proto::Udp, port);
    }

    /// Removes orphans smoltcp has finished with.
    fn reap(&mut self) {
        let sockets = &mut self.sockets;
        let ports = &mut self.ports;
        self.orphans.retain(|&(handle, port)| {
            if sockets.get::<tcp::Socket>(handle).state() != tcp::State::Closed {
                return true;
            }
            sockets.remove(handle);
            ports.release(Proto::Tcp, port);
            false
        });
    }
}

fn to_smol(d: Duration) -> SmolDuration {
    SmolDuration::from_micros(d.as_micros() as u64)
}

/// A `Medium::Ip` interface owning exactly the allocated addresses, with default routes.
fn new_iface(device: &mut QueueDevice, alloc: Allocation, now: SmolInstant) -> Interface {
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = rand::random();
    let mut iface = Interface::new(config, device, now);
    iface.update_ip_addrs(|addrs| {
        // Host routes (/32, /128): the allocation is one address, not a subnet we could reach
        // directly; everything goes "via" the IPR.
        for cidr in [IpCidr::new(IpAddress::Ipv4(alloc.ipv4), 32), IpCidr::new(IpAddress::Ipv6(alloc.ipv6), 128)] {
            if addrs.push(cidr).is_err() {
                tracing::warn!(%cidr, "interface address table full");
            }
        }
    });
    if iface.routes_mut().add_default_ipv4_route(GATEWAY_V4).is_err()
        || iface.routes_mut().add_default_ipv6_route(GATEWAY_V6).is_err()
    {
        tracing::warn!("interface route table full");
    }
    iface
}
