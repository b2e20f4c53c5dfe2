//! A resolver whose queries leave beside the tunnel: A and AAAA over UDP from sockets that
//! carry the transport's routing mark, to nameservers the caller names. The directory relay
//! uses it to find the directory's addresses while the kill switch is up
//! (docs/directory-relay.md §5).
//!
//! Contract of [`Resolver::lookup`]:
//! - An IP address is returned as it is, without a query.
//! - Otherwise every server (at most [`MAX_SERVERS`], port as given) is asked at once, from
//!   its own `connect()`ed socket (the kernel drops datagrams from anyone else) that gets the
//!   mark *before* it connects, so its route is decided with the mark. Each server gets an A
//!   and an AAAA query with random ids, resent up to [`SENDS`] times within the timeout while
//!   unanswered. A server is done when both are answered (NOERROR or NXDOMAIN), or at the
//!   deadline with one of them answered.
//! - The first server with addresses wins (IPv4 first, then IPv6, each in answer order, at most
//!   [`MAX_ADDRS`]). If none has any, the error says whether the name does not exist (a server
//!   answered with no address) or nothing usable came back, naming every server.
//! - No TCP fallback: a truncated reply's addresses are used, a truncated empty one counts as
//!   no answer. No cache: the directory is asked every few minutes, not every second.
//!
//! The nameservers are the host's own upstream ones captured before `up` changes DNS (system/
//! upstream_dns.rs), never the tunnel's: those are reached only through the tunnel.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::dns_wire::{self, QType};
use super::socket::{self, Opt};

/// Servers asked per lookup; more are ignored (glibc reads 3).
pub const MAX_SERVERS: usize = 4;
/// Queries of each type sent per server within the timeout (at 0, 1/3 and 2/3 of it).
pub const SENDS: u32 = 3;
/// Addresses returned per lookup.
pub const MAX_ADDRS: usize = 8;
/// Largest reply we read; plain UDP is at most 512 bytes, EDNS0 replies a few KiB.
const MAX_REPLY: usize = 4096;

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No nameservers were given.
    #[error("no nameservers to ask")]
    NoServers,
    /// The name cannot be put in a query.
    #[error("{name:?} is not a DNS name: {why}")]
    BadName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A server answered, and no server gave an address.
    #[error("{name} has no address (the nameservers answered: {details})")]
    NotFound {
        /// The name looked up.
        name: String,
        /// Every server and what it said, `; `-separated.
        details: String,
    },
    /// No server answered usably within the timeout.
    #[error("no nameserver answered for {name} within {timeout:?} ({details})")]
    NoAnswer {
        /// The name looked up.
        name: String,
        /// How long each server was given.
        timeout: Duration,
        /// Every server and why it failed, `; `-separated.
        details: String,
    },
}

/// What one server said about one name.
#[derive(Debug, Default)]
struct Heard {
    v4: Option<Vec<IpAddr>>,
    v6: Option<Vec<IpAddr>>,
}

/// Looks names up with marked UDP sockets; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    mark: Option<u32>,
    timeout: Duration,
}

impl Resolver {
    /// A resolver asking `servers` (the first [`MAX_SERVERS`]), each query socket marked with
    /// `mark` (`None`: unmarked, for tests and the library), giving up after `timeout`.
    pub fn new(servers: Vec<SocketAddr>, mark: Option<u32>, timeout: Duration) -> Result<Resolver, ResolveError> {
        let mut unique: Vec<SocketAddr> = Vec::new();
        for s in servers {
            if !unique.contains(&s) && unique.len() < MAX_SERVERS {
                unique.push(s);
            }
        }
        let servers = unique;
        if servers.is_empty() {
            return Err(ResolveError::NoServers);
        }
        Ok(Resolver { servers, mark, timeout })
    }

    /// The servers asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The addresses of `name`; see the module docs.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        dns_wire::encode_query(0, name, QType::A, &mut Vec::new())
            .map_err(|e| ResolveError::BadName { name: name.to_string(), why: e.0 })?;
        let mut tasks = tokio::task::JoinSet::new();
        for &server in &self.servers {
            let (name, mark, timeout) = (name.to_string(), self.mark, self.timeout);
            tasks.spawn(async move { (server, ask(server, &name, mark, timeout).await) });
        }
        let (mut details, mut answered) = (String::new(), false);
        while let Some(joined) = tasks.join_next().await {
            let (server, heard) = match joined {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(%e, "resolver task");
                    continue;
                }
            };
            let sep = if details.is_empty() { "" } else { "; " };
            match heard {
                Ok(h) => {
                    let mut addrs: Vec<IpAddr> = h.v4.iter().chain(h.v6.iter()).flatten().copied().collect();
                    addrs.truncate(MAX_ADDRS);
                    if !addrs.is_empty() {
                        tracing::debug!(%server, name, ?addrs, "resolved beside the tunnel");
                        return Ok(addrs); // dropping `tasks` aborts the other servers
                    }
                    answered = true;
                    let _ = write!(details, "{sep}{server}: no address");
                }
                Err(why) => {
                    let _ = write!(details, "{sep}{server}: {why}");
                }
            }
        }
        let name = name.to_string();
        if answered {
            Err(ResolveError::NotFound { name, details })
        } else {
            Err(ResolveError::NoAnswer { name, timeout: self.timeout, details })
        }
    }
}

/// A UDP socket connected to `server`, marked before it connects.
async fn marked_socket(server: SocketAddr, mark: Option<u32>) -> io::Result<UdpSocket> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    let sock = UdpSocket::bind(local).await?;
    if let Some(mark) = mark {
        socket::set(sock.as_fd(), Opt::Mark, mark)?;
    }
    sock.connect(server).await?;
    Ok(sock)
}

/// One server: an A and an AAAA query, each resent while unanswered.
async fn ask(server: SocketAddr, name: &str, mark: Option<u32>, timeout: Duration) -> Result<Heard, String> {
    let sock = marked_socket(server, mark).await.map_err(|e| format!("cannot open a marked UDP socket: {e}"))?;
    // Random ids (a spoofer off the path must guess them), distinct so a reply finds its query.
    let id: u16 = rand::random();
    let mut queries = [Vec::new(), Vec::new()];
    for ((q, qtype), id) in queries.iter_mut().zip([QType::A, QType::Aaaa]).zip([id, id.wrapping_add(1)]) {
        dns_wire::encode_query(id, name, qtype, q).map_err(|e| e.to_string())?;
    }
    let mut heard = Heard::default();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_REPLY];
    let (mut sent, mut skipped, mut refused) = (0u32, 0u32, false);
    while tokio::time::Instant::now() < deadline {
        if sent < SENDS {
            sent += 1;
            for (q, answered) in queries.iter().zip([heard.v4.is_some(), heard.v6.is_some()]) {
                if answered {
                    continue;
                }
                match sock.send(q).await {
                    Ok(_) => {}
                    // An ICMP port unreachable for an earlier send, reported now.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused = true,
                    Err(e) => return Err(format!("send failed: {e}")),
                }
            }
        }
        let next = tokio::time::Instant::now() + timeout / SENDS;
        let wake = if sent < SENDS { next.min(deadline) } else { deadline };
        loop {
            let n = match tokio::time::timeout_at(wake, sock.recv(&mut buf)).await {
                Err(_elapsed) => break,
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    refused = true;
                    continue;
                }
                Ok(Err(e)) => return Err(format!("receive failed: {e}")),
            };
            let reply = buf.get(..n).unwrap_or_default();
            let slot = match dns_wire::parse_addresses(&queries[0], reply) {
                Err(dns_wire::ReplyError::WrongId) => (1, dns_wire::parse_addresses(&queries[1], reply)),
                other => (0, other),
            };
            match slot {
                // SERVFAIL, REFUSED, ...: this server cannot tell; keep asking until the end.
                (_, Ok(a)) if a.reply.rcode != 0 && a.reply.rcode != 3 => skipped += 1,
                (_, Ok(a)) if a.reply.truncated && a.addrs.is_empty() => skipped += 1,
                (0, Ok(a)) => heard.v4 = Some(a.addrs),
                (_, Ok(a)) => heard.v6 = Some(a.addrs),
                (_, Err(dns_wire::ReplyError::WrongId)) => {} // a late reply to an earlier lookup
                (_, Err(why)) => {
                    skipped += 1;
                    tracing::trace!(%server, %why, "resolver: datagram skipped");
                }
            }
            if heard.v4.is_some() && heard.v6.is_some() {
                return Ok(heard);
            }
        }
    }
    if heard.v4.is_some() || heard.v6.is_some() {
        return Ok(heard);
    }
    let mut why = format!("no reply to {sent} rounds of queries");
    if refused {
        why.push_str(", port unreachable (ICMP): nothing serves DNS there");
    }
    if skipped > 0 {
        let _ = write!(why, ", {skipped} unusable replies (SERVFAIL, REFUSED, truncated or malformed)");
    }
    Err(why)
}

#[cfg(test)]
mod tests;
