//! Tells when the host's links, addresses or routes changed: a `NETLINK_ROUTE` socket bound to
//! the rtnetlink multicast groups, so the full tunnel's exceptions for connected networks
//! ([`super::lan`]) follow interfaces and addresses as they come and go, without polling.
//!
//! ```text
//!  kernel ── RTM_{NEW,DEL}{LINK,ADDR,ROUTE} ──▶ socket (non-blocking, in tokio's AsyncFd)
//!  NetWatch::changed():  wait for the first datagram; drain; keep draining until QUIET passes
//!                        with nothing new (at most MAX_WAIT after the first): one Changes
//! ```
//!
//! * **Coalesced.** A DHCP renewal or a container start is a dozen messages within
//!   milliseconds; one [`Changes`] covers the burst, so the caller recomputes once.
//! * **Overrun is a change, not an error.** When the socket's buffer overflows the kernel drops
//!   messages and the next read fails with ENOBUFS once. We cannot know what was lost, so
//!   [`Changes::resync`] says "recompute everything"; so do a truncated datagram and one whose
//!   headers do not add up. Reading continues: one overrun is never an error loop.
//! * **Bounded.** One datagram buffer of [`BUF_LEN`]; at most [`BATCH`] datagrams per wake-up
//!   before yielding to the runtime, so a flood of events cannot starve the other tasks.
//! * **One namespace.** A netlink socket belongs to the network namespace its creating thread
//!   was in, for its whole life: [`NetWatch::open`] watches the caller's namespace; a socket
//!   from [`socket`] opened inside [`super::netns::in_netns`] watches that one.
//! * **Only the kernel.** Datagrams from another sender (a root process can unicast to any
//!   netlink port) are ignored; they could only cause needless recomputes anyway.
//!
//! [`parse`] is sans-IO (a datagram in, a summary out) and tested with byte literals.

use std::fmt;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self as sock, bind, recvmsg, setsockopt, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::time::{timeout, Instant};

/// A burst ends once this long passes without a new message.
pub const QUIET: Duration = Duration::from_millis(100);
/// A burst ends at the latest this long after its first message, so a flood still reports.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// The receive buffer: larger than any rtnetlink notification (NLMSG_GOODSIZE, 8 KiB), and a
/// larger one is still reported (MSG_TRUNC) as a resync.
pub const BUF_LEN: usize = 64 * 1024;
/// Datagrams read per wake-up before yielding to the runtime.
pub const BATCH: usize = 256;
/// The socket buffer we ask for (capped by net.core.rmem_max unless CAP_NET_ADMIN forces it).
const RCVBUF: usize = 1 << 20;

// linux/netlink.h and linux/rtnetlink.h; checked against libc in the tests.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_OVERRUN: u16 = 4;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
/// The groups we join: links, IPv4/IPv6 addresses, IPv4/IPv6 routes.
const GROUPS: u32 = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;

/// Why the watcher could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// A call on the netlink socket failed.
    #[error("cannot {what} the netlink route socket: {source}")]
    Socket {
        /// What we tried: "open", "bind", "read".
        what: &'static str,
        /// The kernel's answer.
        source: Errno,
    },
    /// tokio could not register or poll the socket (no runtime with I/O enabled?).
    #[error("cannot wait on the netlink route socket: {0}")]
    Reactor(#[source] std::io::Error),
}

/// What changed since the last [`NetWatch::changed`]: which kinds of objects, per family.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// A link appeared, went, or changed state, name, master or flags.
    pub link: bool,
    /// An IPv4 address was added or removed.
    pub addr4: bool,
    /// An IPv6 address was added, removed or changed state (DAD, lifetimes).
    pub addr6: bool,
    /// An IPv4 route was added or removed (any table).
    pub route4: bool,
    /// An IPv6 route was added or removed (any table).
    pub route6: bool,
    /// Messages were lost or unreadable (overrun, truncated, malformed): anything may have
    /// changed, recompute everything.
    pub resync: bool,
    /// Messages counted (saturating).
    pub messages: u32,
}

impl Changes {
    /// Did anything change (or must everything be rechecked)?
    pub fn any(&self) -> bool {
        self.link || self.addr4 || self.addr6 || self.route4 || self.route6 || self.resync
    }
    /// Adds `other`'s changes to these.
    pub fn merge(&mut self, other: Changes) {
        self.link |= other.link;
        self.addr4 |= other.addr4;
        self.addr6 |= other.addr6;
        self.route4 |= other.route4;
        self.route6 |= other.route6;
        self.resync |= other.resync;
        self.messages = self.messages.saturating_add(other.messages);
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds = [
            (self.link, "link"),
            (self.addr4, "addr4"),
            (self.addr6, "addr6"),
            (self.route4, "route4"),
            (self.route6, "route6"),
            (self.resync, "resync"),
        ];
        let names: Vec<&str> = kinds.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        let names = if names.is_empty() { "nothing".to_string() } else { names.join(" ") };
        write!(f, "{names} ({} messages)", self.messages)
    }
}

/// Summarises one netlink datagram: the kinds of the messages in it. Headers whose lengths do
/// not add up end the walk with [`Changes::resync`]; message types we did not subscribe to are
/// counted but otherwise ignored.
pub fn parse(datagram: &[u8]) -> Changes {
    let mut c = Changes::default();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(hdr) = rest.get(..NLMSG_HDRLEN) else {
            c.resync = true;
            break;
        };
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let kind = u16::from_ne_bytes([hdr[4], hdr[5]]);
        // A length below the header's or past the datagram: `get` answers None for both.
        let Some(payload) = rest.get(NLMSG_HDRLEN..len) else {
            c.resync = true;
            break;
        };
        c.messages = c.messages.saturating_add(1);
        // ifaddrmsg and rtmsg both start with the family byte.
        let family = payload.first().copied();
        match (kind, family) {
            (RTM_NEWLINK | RTM_DELLINK, _) => c.link = true,
            (RTM_NEWADDR | RTM_DELADDR, Some(AF_INET)) => c.addr4 = true,
            (RTM_NEWADDR | RTM_DELADDR, Some(AF_INET6)) => c.addr6 = true,
            (RTM_NEWROUTE | RTM_DELROUTE, Some(AF_INET)) => c.route4 = true,
            (RTM_NEWROUTE | RTM_DELROUTE, Some(AF_INET6)) => c.route6 = true,
            (RTM_NEWADDR | RTM_DELADDR | RTM_NEWROUTE | RTM_DELROUTE, None) | (NLMSG_OVERRUN, _) => c.resync = true,
            _ => {}
        }
        // NLMSG_ALIGN: the next header starts on a 4-byte boundary; the last may omit padding.
        let step = len.saturating_add(3) & !3;
        rest = rest.get(step..).unwrap_or_default();
    }
    c
}

/// Opens a non-blocking netlink route socket joined to the groups, in the calling thread's
/// network namespace. It does not need a runtime; [`NetWatch::from_socket`] does.
pub fn socket() -> Result<OwnedFd, WatchError> {
    socket_with(RCVBUF)
}

fn socket_with(rcvbuf: usize) -> Result<OwnedFd, WatchError> {
    let err = |what| move |source| WatchError::Socket { what, source };
    let fd = sock::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(err("open"))?;
    // A bigger buffer makes overruns rarer; they are handled either way, so failure is fine.
    if setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &rcvbuf);
    }
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS)).map_err(err("bind"))?;
    Ok(fd)
}

/// One read from the socket.
enum Read {
    /// A datagram of this many bytes (from the kernel), possibly cut short.
    Datagram { len: usize, truncated: bool },
    /// From someone else: ignored.
    Foreign,
    /// ENOBUFS: the kernel dropped messages.
    Overrun,
    /// Nothing pending.
    Empty,
}

/// Waits for changes of links, addresses and routes in one network namespace.
#[derive(Debug)]
pub struct NetWatch {
    fd: AsyncFd<OwnedFd>,
    buf: Box<[u8]>,
    /// Read but not yet returned: kept across a cancelled [`NetWatch::changed`].
    pending: Changes,
    /// [`QUIET`] and [`MAX_WAIT`]; the tests stretch them so a loaded machine cannot fail them.
    quiet: Duration,
    max_wait: Duration,
}

impl NetWatch {
    /// Watches the calling thread's network namespace. Needs a tokio runtime with I/O.
    pub fn open() -> Result<NetWatch, WatchError> {
        NetWatch::from_socket(socket()?)
    }

    /// Watches with a socket from [`socket`] (which may belong to another namespace).
    pub fn from_socket(fd: OwnedFd) -> Result<NetWatch, WatchError> {
        // `new` is deprecated since tokio 1.54 for a `T` whose fd may change or close under it
        // (tokio#8587); an OwnedFd we own cannot, and `register`, its replacement, is newer
        // than the tokio 1.45 that Cargo.toml allows.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd).map_err(WatchError::Reactor)?;
        let buf = vec![0; BUF_LEN].into_boxed_slice();
        Ok(NetWatch { fd, buf, pending: Changes::default(), quiet: QUIET, max_wait: MAX_WAIT })
    }

    /// Resolves once at least one change arrived since the last call, after the burst it
    /// belongs to has settled ([`QUIET`], at most [`MAX_WAIT`] after this call saw its first).
    /// Cancel-safe, for a `select!` loop: what a dropped call read is returned by the next.
    pub async fn changed(&mut self) -> Result<Changes, WatchError> {
        while !self.pending.any() {
            self.drain().await?;
        }
        let deadline = Instant::now() + self.max_wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match timeout(self.quiet.min(left), self.drain()).await {
                Ok(r) => r?,
                Err(_quiet) => break,
            }
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Waits until the socket is readable, then reads what is pending (at most [`BATCH`]
    /// datagrams) into `pending`; returns once at least one kernel datagram or overrun came.
    async fn drain(&mut self) -> Result<(), WatchError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(WatchError::Reactor)?;
            let mut got = false;
            for _ in 0..BATCH {
                match read(guard.get_inner(), &mut self.buf)? {
                    Read::Datagram { len, truncated } => {
                        let mut c = parse(self.buf.get(..len).unwrap_or_default());
                        c.resync |= truncated;
                        self.pending.merge(c);
                        got = true;
                    }
                    Read::Overrun => {
                        self.pending.resync = true;
                        got = true;
                    }
                    Read::Foreign => {}
                    Read::Empty => {
                        guard.clear_ready();
                        break;
                    }
                }
            }
            if got {
                return Ok(());
            }
        }
    }
}

fn read(fd: &OwnedFd, buf: &mut [u8]) -> Result<Read, WatchError> {
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<NetlinkAddr>(fd.as_raw_fd(), &mut iov, None, MsgFlags::empty()) {
            Ok(msg) if msg.address.is_some_and(|a| a.pid() != 0) => return Ok(Read::Foreign),
            Ok(msg) => {
                // Without MSG_TRUNC in the call's flags, `bytes` is what fit in the buffer.
                let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
                return Ok(Read::Datagram { len: msg.bytes, truncated });
            }
            Err(Errno::EAGAIN) => return Ok(Read::Empty),
            Err(Errno::ENOBUFS) => return Ok(Read::Overrun),
            Err(Errno::EINTR) => continue,
            Err(source) => return Err(WatchError::Socket { what: "read", source }),
        }
    }
}

#[cfg(test)]
mod tests;
