//! The few raw socket calls of the transport, through `libc`: buffer sizes and `SO_MARK` (the
//! routing mark of system/mark.rs) before a socket connects, and the peer of a socket the SDK
//! owns. Plain `setsockopt(2)`/`getpeername(2)`, so the library needs no system crate for them.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// `SOL_SOCKET` options the transport sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opt {
    /// `SO_RCVBUF`: capped by `net.core.rmem_max`.
    RcvBuf,
    /// `SO_RCVBUFFORCE`: past the cap, needs CAP_NET_ADMIN.
    RcvBufForce,
    /// `SO_SNDBUF`: capped by `net.core.wmem_max`.
    SndBuf,
    /// `SO_SNDBUFFORCE`: past the cap, needs CAP_NET_ADMIN.
    SndBufForce,
    /// `SO_MARK`: the routing mark, needs CAP_NET_ADMIN.
    Mark,
}

impl Opt {
    fn name(self) -> libc::c_int {
        match self {
            Opt::RcvBuf => libc::SO_RCVBUF,
            Opt::RcvBufForce => libc::SO_RCVBUFFORCE,
            Opt::SndBuf => libc::SO_SNDBUF,
            Opt::SndBufForce => libc::SO_SNDBUFFORCE,
            Opt::Mark => libc::SO_MARK,
        }
    }
}

/// `setsockopt(fd, SOL_SOCKET, opt, &value, 4)`. Every option here is a 32-bit integer: the
/// buffers an `int`, the mark a `u32`; a buffer size past `i32::MAX` is clamped.
pub(crate) fn set(fd: BorrowedFd<'_>, opt: Opt, value: u32) -> io::Result<()> {
    let value: libc::c_int = match opt {
        Opt::Mark => value as libc::c_int, // the same 32 bits: the kernel reads a u32
        _ => value.min(libc::c_int::MAX as u32) as libc::c_int,
    };
    // SAFETY: `fd` is a live descriptor for the duration of the borrow; the kernel reads
    // exactly `size_of::<c_int>()` bytes from `value`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt.name(),
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The remote address of socket `fd`, if it is a connected IPv4/IPv6 socket (`None` for a bad
/// fd, a file, a listener, a Unix socket). An IPv6 address comes without flow info and scope.
#[cfg_attr(not(feature = "mixnet"), allow(dead_code))] // only the mixnet gateway asks
pub(crate) fn peer_of(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is writable for `len` bytes and `len` is a valid in/out length; an
    // invalid fd is an error (EBADF/ENOTSOCK), not undefined behaviour.
    let rc = unsafe { libc::getpeername(fd, (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (family and length checked); storage is
            // aligned for every sockaddr type.
            let sin = unsafe { &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    fn get(fd: BorrowedFd<'_>, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, name, (&mut v as *mut libc::c_int).cast(), &mut len)
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        v
    }

    #[test]
    fn sets_a_buffer_size_and_reports_a_refusal() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set(sock.as_fd(), Opt::SndBuf, 65536).unwrap();
        // Linux doubles the value for its bookkeeping (socket(7)).
        assert_eq!(get(sock.as_fd(), libc::SO_SNDBUF), 2 * 65536);
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = set(file.as_fd(), Opt::RcvBuf, 65536).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK));
    }

    #[test]
    fn peer_of_reads_a_connected_socket_and_rejects_others() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(server) = std::net::TcpListener::bind(host) else { continue }; // no IPv6 here
            let addr = server.local_addr().unwrap();
            let client = std::net::TcpStream::connect(addr).unwrap();
            assert_eq!(peer_of(client.as_raw_fd()), Some(addr));
            assert_eq!(peer_of(server.as_raw_fd()), None, "a listener has no peer");
        }
        assert_eq!(peer_of(-1), None);
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(peer_of(file.as_raw_fd()), None, "not a socket");
    }
}
