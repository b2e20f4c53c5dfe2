//! [`UdpSocket`]: datagrams through the tunnel, `send_to` / `recv_from` like tokio's.
//!
//! # Contract
//!
//! - Bounded buffers: 64 datagrams and 64 KiB per direction. A datagram that arrives while
//!   the receive buffer is full is dropped by smoltcp, as a kernel socket would drop it.
//! - `recv_from` with a buffer shorter than the datagram returns the first `buf.len()` bytes
//!   and discards the rest (the `recv(2)` behaviour without `MSG_TRUNC`).
//! - `send_to` waits while the send buffer is full; a datagram larger than one IP packet of
//!   the tunnel's MTU is refused (`InvalidInput`): smoltcp (0.14) fragments into a 1500-byte
//!   buffer only, and a mixnet loses a whole datagram when it loses any fragment.
//! - Several tasks may share a socket (`&self`): receivers queue behind each other, and so
//!   do senders, because smoltcp keeps one waker per direction.
//! - The socket survives a tunnel reconnect (it is bound to a port, not an address).
//!   Dropping it frees the socket and its port at once.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;
use tokio::sync::Mutex as AsyncMutex;

use super::error::{closed, TunnelError};
use super::stack::{Shared, StackState};

/// IPv4 (20) + UDP (8) header bytes.
const V4_OVERHEAD: usize = 28;
/// IPv6 (40) + UDP (8) header bytes.
const V6_OVERHEAD: usize = 48;

/// A UDP socket through the tunnel. Create one with
/// [`Tunnel::udp_socket`](super::Tunnel::udp_socket) or
/// [`Tunnel::udp_socket_on`](super::Tunnel::udp_socket_on).
#[derive(Debug)]
pub struct UdpSocket {
    shared: Arc<Shared>,
    handle: SocketHandle,
    port: u16,
    recv_turn: AsyncMutex<()>,
    send_turn: AsyncMutex<()>,
}

impl UdpSocket {
    pub(crate) fn bind(shared: Arc<Shared>, port: u16) -> Result<UdpSocket, TunnelError> {
        let (handle, port) = shared.lock().open_udp(port)?;
        Ok(UdpSocket { shared, handle, port, recv_turn: AsyncMutex::new(()), send_turn: AsyncMutex::new(()) })
    }

    /// The local port.
    pub fn local_port(&self) -> u16 {
        self.port
    }

    /// Sends one datagram to `target`; returns `buf.len()`.
    pub async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        if target.port() == 0 || target.ip().is_unspecified() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, TunnelError::Unaddressable { addr: target }));
        }
        let _turn = self.send_turn.lock().await;
        let endpoint = IpEndpoint::from(target);
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.state == StackState::Closed {
                return Poll::Ready(Err(closed()));
            }
            let overhead = if target.is_ipv4() { V4_OVERHEAD } else { V6_OVERHEAD };
            let max = st.device.mtu().saturating_sub(overhead);
            if buf.len() > max {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("datagram of {} bytes exceeds the {max} bytes one tunnel packet carries", buf.len()),
                )));
            }
            let sock = st.sockets.get_mut::<udp::Socket>(self.handle);
            match sock.send_slice(buf, endpoint) {
                Ok(()) => Poll::Ready(Ok(buf.len())),
                Err(udp::SendError::BufferFull) => {
                    sock.register_send_waker(cx.waker());
                    Poll::Pending
                }
                Err(udp::SendError::Unaddressable) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    TunnelError::Unaddressable { addr: target },
                ))),
            }
        })
        .await?;
        self.shared.wake.notify_one();
        Ok(buf.len())
    }

    /// Waits for one datagram; returns its length (at most `buf.len()`) and its sender.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let _turn = self.recv_turn.lock().await;
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.state == StackState::Closed {
                return Poll::Ready(Err(closed()));
            }
            let sock = st.sockets.get_mut::<udp::Socket>(self.handle);
            match sock.recv() {
                Ok((payload, meta)) => {
                    let n = payload.len().min(buf.len());
                    buf[..n].copy_from_slice(&payload[..n]);
                    let from = SocketAddr::new(IpAddr::from(meta.endpoint.addr), meta.endpoint.port);
                    Poll::Ready(Ok((n, from)))
                }
                Err(udp::RecvError::Exhausted | udp::RecvError::Truncated) => {
                    sock.register_recv_waker(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.shared.lock().release_udp(self.handle, self.port);
    }
}
