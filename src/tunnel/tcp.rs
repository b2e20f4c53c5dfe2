//! [`TcpStream`]: a TCP connection through the tunnel, with tokio's `AsyncRead + AsyncWrite`.
//!
//! # Contract
//!
//! - Reads and writes copy between the caller's buffer and the socket's 256 KiB smoltcp
//!   buffers under the stack lock, then pulse the runner, which sends what is now due (data,
//!   or a window update after a read). A `Pending` read or write registers the task's waker
//!   with smoltcp, which wakes it from inside `Interface::poll`.
//! - `poll_flush` is immediate: written bytes are already in the stack, as with a kernel
//!   socket. `poll_shutdown` closes the send half (FIN); reading continues until the peer's FIN.
//! - End of stream is `Ok(0)` only after the peer's FIN. A reset by the peer, the idle
//!   timeout, or a tunnel reconnect that changed the allocated address give
//!   `ConnectionReset`; a shut-down tunnel gives `NotConnected`.
//! - Dropping the stream closes it gracefully; the socket and its port are freed once smoltcp
//!   has finished closing (after TIME-WAIT).
//!
//! One task at a time may read and one may write (the `&mut self` of the traits ensures it;
//! smoltcp keeps one waker per direction).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::{closed, TunnelError};
use super::stack::{Shared, StackState};

/// A TCP connection through the tunnel. Create one with
/// [`Tunnel::tcp_connect`](super::Tunnel::tcp_connect).
#[derive(Debug)]
pub struct TcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
    port: u16,
    local: SocketAddr,
    peer: SocketAddr,
}

/// What the connect wait saw.
enum Progress {
    Established,
    Refused,
    Closed,
}

impl TcpStream {
    /// Opens the socket and sends the SYN; [`TcpStream::established`] waits for the answer.
    pub(crate) fn open(shared: Arc<Shared>, peer: SocketAddr) -> Result<TcpStream, TunnelError> {
        let (handle, port, local) = shared.lock().open_tcp(peer)?;
        shared.wake.notify_one();
        Ok(TcpStream { shared, handle, port, local, peer })
    }

    /// Resolves once the handshake is done, or fails if the peer reset it.
    pub(crate) async fn established(&self) -> Result<(), TunnelError> {
        let progress = std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.state == StackState::Closed {
                return Poll::Ready(Progress::Closed);
            }
            let sock = st.sockets.get_mut::<tcp::Socket>(self.handle);
            match sock.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    sock.register_send_waker(cx.waker());
                    Poll::Pending
                }
                // SYN-SENT → CLOSED happens on a RST (RFC 9293 §3.10.7.3), or on smoltcp's
                // timeout, which is longer than any connect timeout we apply.
                tcp::State::Closed => Poll::Ready(Progress::Refused),
                _ => Poll::Ready(Progress::Established),
            }
        })
        .await;
        match progress {
            Progress::Established => Ok(()),
            Progress::Refused if self.shared.lock().state == StackState::Reconnecting => Err(TunnelError::Reconnecting),
            Progress::Refused => Err(TunnelError::Refused { addr: self.peer }),
            Progress::Closed => Err(TunnelError::Closed),
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address: the IPR-allocated address of the peer's family, and our port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs `f` on the socket unless the tunnel is closed.
    fn with_socket<R>(&self, f: impl FnOnce(&mut tcp::Socket<'static>) -> Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        let mut st = self.shared.lock();
        if st.state == StackState::Closed {
            return Poll::Ready(Err(closed()));
        }
        f(st.sockets.get_mut::<tcp::Socket>(self.handle))
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection reset (by the peer, a timeout, or a tunnel reconnect)")
}

impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let r = self.with_socket(|sock| match sock.recv_slice(buf.initialize_unfilled()) {
            Ok(0) => {
                sock.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(true))
            }
            Err(tcp::RecvError::Finished) => Poll::Ready(Ok(false)),
            Err(tcp::RecvError::InvalidState) => Poll::Ready(Err(reset())),
        });
        match r {
            // The receive window just opened: let the runner advertise it.
            Poll::Ready(Ok(true)) => {
                self.shared.wake.notify_one();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(false)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let r = self.with_socket(|sock| {
            if !sock.may_send() {
                // After our own shutdown this is a broken pipe; otherwise the peer reset it.
                return Poll::Ready(Err(match sock.state() {
                    tcp::State::Closed => reset(),
                    _ => io::Error::new(io::ErrorKind::BrokenPipe, "the send half is closed"),
                }));
            }
            match sock.send_slice(data) {
                Ok(0) => {
                    sock.register_send_waker(cx.waker());
                    Poll::Pending
                }
                Ok(n) => Poll::Ready(Ok(n)),
                Err(tcp::SendError::InvalidState) => Poll::Ready(Err(reset())),
            }
        });
        if matches!(r, Poll::Ready(Ok(_))) {
            self.shared.wake.notify_one();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with_socket(|_| Poll::Ready(Ok(())))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = self.with_socket(|sock| {
            sock.close();
            Poll::Ready(Ok(()))
        });
        self.shared.wake.notify_one();
        r
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.shared.lock().release_tcp(self.handle, self.port);
        self.shared.wake.notify_one();
    }
}
