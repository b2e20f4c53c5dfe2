//! The end-to-end DNS check after `up`: one query per server, through the normal socket API.
//!
//! Contract: [`check_lookup`] sends a standard query (RD, one question, class IN, type A) for a
//! configurable name to port 53 of each server from an ordinary UDP socket, so it follows the
//! host's routes — into the tunnel when DNS is set up correctly. It returns the round-trip time
//! of the first server that answers. *Any* well-formed response with our id and question counts,
//! NXDOMAIN and SERVFAIL included: the check proves the path (TUN → exit → resolver → back),
//! not the resolver's opinion of the name. No answer from any server within the timeout is an
//! error that names every server and why it failed, which `up` prints.
//!
//! Why not a resolver library: the check needs nothing but an encoder for one question and a
//! decoder for a header (RFC 1035 §4.1), which transport/dns_wire.rs has (the directory
//! relay's resolver uses the same codec) and unit-tests on byte literals; hickory is only a
//! dev-dependency. Why resend: the mixnet loses packets and a round trip takes ~0.7 s, so
//! one datagram would make the check flaky; the same query (same id) goes out up to
//! [`SENDS`] times, spread over the timeout. Each socket is `connect()`ed, so the kernel drops
//! datagrams from anyone but the server and reports an ICMP port-unreachable as ECONNREFUSED.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::transport::dns_wire::{self, QType, HEADER, MAX_NAME};
pub use crate::transport::dns_wire::{parse_reply, Reply, ReplyError};

/// Queries sent per server within the timeout (at 0, 1/3 and 2/3 of it).
pub const SENDS: u32 = 3;
/// Largest reply we read; a plain UDP answer is at most 512 bytes, EDNS0 ones a few KiB.
const MAX_REPLY: usize = 4096;

/// Why the DNS check failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsCheckError {
    /// The name to look up cannot be encoded as a query.
    #[error("{name:?} is not a DNS name we can ask for: {why}")]
    BadName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// The server list was empty.
    #[error("no DNS servers to check")]
    NoServers,
    /// No server answered within the timeout.
    #[error("DNS does not work through the tunnel: no answer for {name} within {timeout:?} ({details})")]
    NoAnswer {
        /// The name looked up.
        name: String,
        /// How long each server was given.
        timeout: Duration,
        /// Every server and why it failed, `; `-separated.
        details: String,
    },
}

/// Appends the query for `name` (type A, class IN) with `id` to `out` (transport/dns_wire.rs,
/// shared with the directory relay's resolver).
pub fn encode_query(id: u16, name: &str, out: &mut Vec<u8>) -> Result<(), DnsCheckError> {
    dns_wire::encode_query(id, name, QType::A, out)
        .map_err(|e| DnsCheckError::BadName { name: name.to_string(), why: e.0 })
}

/// Asks each server (port 53) for `name`; Ok(round-trip time of the first answer).
pub async fn check_lookup(servers: &[IpAddr], name: &str, timeout: Duration) -> Result<Duration, DnsCheckError> {
    let addrs: Vec<SocketAddr> = servers.iter().map(|ip| SocketAddr::new(*ip, 53)).collect();
    check_lookup_at(&addrs, name, timeout).await.map(|(_, rtt, _)| rtt)
}

/// [`check_lookup`] on explicit addresses; also returns which server answered and how.
pub async fn check_lookup_at(
    servers: &[SocketAddr],
    name: &str,
    timeout: Duration,
) -> Result<(SocketAddr, Duration, Reply), DnsCheckError> {
    if servers.is_empty() {
        return Err(DnsCheckError::NoServers);
    }
    encode_query(0, name, &mut Vec::new())?; // validate once, before any socket
    let mut tasks = tokio::task::JoinSet::new();
    for &server in servers {
        let name = name.to_string();
        tasks.spawn(async move { (server, ask(server, &name, timeout).await) });
    }
    let mut details = String::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((server, Ok((rtt, reply)))) => {
                tracing::debug!(%server, ?rtt, rcode = reply.rcode, "DNS check answered");
                return Ok((server, rtt, reply)); // dropping `tasks` aborts the others
            }
            Ok((server, Err(why))) => {
                let sep = if details.is_empty() { "" } else { "; " };
                let _ = write!(details, "{sep}{server}: {why}");
            }
            Err(e) => tracing::warn!(%e, "DNS check task"),
        }
    }
    Err(DnsCheckError::NoAnswer { name: name.to_string(), timeout, details })
}

/// One server: up to [`SENDS`] copies of one query, the first valid reply wins.
async fn ask(server: SocketAddr, name: &str, timeout: Duration) -> Result<(Duration, Reply), String> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    let sock = UdpSocket::bind(local).await.map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    sock.connect(server).await.map_err(|e| format!("no route: {e}"))?;
    let mut query = Vec::with_capacity(HEADER + MAX_NAME + 4);
    encode_query(rand::random(), name, &mut query).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_REPLY];
    let (mut sent, mut skipped) = (0u32, 0u32);
    let mut refused = false;
    while tokio::time::Instant::now() < deadline {
        if sent < SENDS {
            match sock.send(&query).await {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused = true,
                Err(e) => return Err(format!("send failed: {e}")),
            }
        }
        let next_send = tokio::time::Instant::now() + timeout / SENDS;
        let wake = if sent < SENDS { next_send.min(deadline) } else { deadline };
        loop {
            match tokio::time::timeout_at(wake, sock.recv(&mut buf)).await {
                Err(_elapsed) => break,
                Ok(Ok(n)) => match parse_reply(&query, buf.get(..n).unwrap_or_default()) {
                    Ok(reply) => return Ok((start.elapsed(), reply)),
                    Err(why) => {
                        skipped += 1;
                        tracing::trace!(%server, %why, "DNS check: datagram skipped");
                    }
                },
                // ICMP port unreachable for an earlier send: the host is there, no DNS on it.
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => refused = true,
                Ok(Err(e)) => return Err(format!("receive failed: {e}")),
            }
        }
    }
    let mut why = format!("no reply to {sent} queries");
    if refused {
        why.push_str(", port unreachable (ICMP): nothing serves DNS there");
    }
    if skipped > 0 {
        let _ = write!(why, ", {skipped} malformed or unrelated datagrams");
    }
    Err(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query turned into a response: QR, RD, RA and `rcode`, no records.
    fn response(query: &[u8], rcode: u8) -> Vec<u8> {
        let mut r = query.to_vec();
        r[2] = 0x81;
        r[3] = 0x80 | rcode;
        r
    }

    #[test]
    fn encodes_a_type_a_query_with_the_shared_codec() {
        let mut out = Vec::new();
        encode_query(0x1234, "nymtech.net", &mut out).unwrap();
        assert_eq!(out, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07nymtech\x03net\x00\x00\x01\x00\x01");
        let mut out = vec![9];
        let e = encode_query(1, "a..b", &mut out).unwrap_err();
        assert!(matches!(e, DnsCheckError::BadName { ref name, .. } if name == "a..b"), "{e}");
        assert_eq!(out, [9]);
    }

    /// A loopback server: ignores the first `ignore` queries, sends junk, then NXDOMAIN.
    async fn server(ignore: usize) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            for i in 0.. {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else { return };
                if i >= ignore {
                    let _ = sock.send_to(b"junk", from).await;
                    let _ = sock.send_to(&response(&buf[..n], 3), from).await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn checks_a_lookup_on_loopback() {
        let t = Duration::from_millis(600);
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let good = server(1).await; // the first query is "lost": the resend must get through
        let (who, rtt, reply) = check_lookup_at(&[silent_addr, good], "example.test", t).await.unwrap();
        assert_eq!((who, reply.rcode), (good, 3));
        assert!(rtt >= t / SENDS && rtt < t, "{rtt:?}");

        let err = check_lookup_at(&[silent_addr], "example.test", t).await.unwrap_err().to_string();
        assert!(err.contains("no answer for example.test") && err.contains("no reply to 3 queries"), "{err}");
        drop(silent);
        let closed = check_lookup_at(&[silent_addr], "example.test", t).await.unwrap_err().to_string();
        assert!(closed.contains("port unreachable"), "{closed}");
        assert!(matches!(check_lookup_at(&[], "x", t).await, Err(DnsCheckError::NoServers)));
        assert!(matches!(check_lookup_at(&[good], "a..b", t).await, Err(DnsCheckError::BadName { .. })));
    }
}
