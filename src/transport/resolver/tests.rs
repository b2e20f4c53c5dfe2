//! The resolver against loopback servers that answer with crafted replies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::transport::dns_wire::tests::{record, response, AT_QNAME};

const T: Duration = Duration::from_millis(600);

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

/// The type asked for in a query built by encode_query.
fn qtype(query: &[u8]) -> u16 {
    let n = query.len();
    u16::from_be_bytes([query[n - 4], query[n - 3]])
}

/// A loopback server: `answer` turns the `i`-th query into the datagrams sent back. Returns its
/// address and a count of the queries it received.
async fn server(answer: impl Fn(usize, &[u8]) -> Vec<Vec<u8>> + Send + 'static) -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else { return };
            let i = seen.fetch_add(1, Ordering::Relaxed);
            for reply in answer(i, &buf[..n]) {
                let _ = sock.send_to(&reply, from).await;
            }
        }
    });
    (addr, count)
}

/// A: 192.0.2.1, AAAA: 2001:db8::1.
fn addresses(q: &[u8]) -> Vec<u8> {
    let mut r = response(q, 0);
    match qtype(q) {
        1 => record(&mut r, AT_QNAME, 1, &[192, 0, 2, 1]),
        _ => record(&mut r, AT_QNAME, 28, &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    }
    r
}

fn resolver(servers: &[SocketAddr]) -> Resolver {
    Resolver::new(servers.to_vec(), None, T).unwrap()
}

#[tokio::test]
async fn resolves_both_families_v4_first() {
    let (addr, count) = server(|_, q| vec![addresses(q)]).await;
    let got = resolver(&[addr]).lookup("directory.test").await.unwrap();
    assert_eq!(got, ips(&["192.0.2.1", "2001:db8::1"]));
    assert_eq!(count.load(Ordering::Relaxed), 2, "one A and one AAAA query");
}

#[tokio::test]
async fn ip_literals_need_no_query() {
    let (addr, count) = server(|_, q| vec![addresses(q)]).await;
    let r = resolver(&[addr]);
    assert_eq!(r.lookup("198.18.0.20").await.unwrap(), ips(&["198.18.0.20"]));
    assert_eq!(r.lookup("[2001:db8::20]").await.unwrap(), ips(&["2001:db8::20"]));
    assert_eq!(count.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn resends_lost_queries_and_skips_junk() {
    // The first two queries (one round) are lost; then junk, a SERVFAIL, a reply with another
    // id, and the answer.
    let (addr, count) = server(|i, q| {
        if i < 2 {
            return vec![];
        }
        let mut other_id = addresses(q);
        other_id[0] ^= 0x80;
        vec![b"junk".to_vec(), response(q, 2), other_id, addresses(q)]
    })
    .await;
    let started = tokio::time::Instant::now();
    let got = resolver(&[addr]).lookup("directory.test").await.unwrap();
    assert_eq!(got, ips(&["192.0.2.1", "2001:db8::1"]));
    assert!(started.elapsed() >= T / SENDS, "answered only after the resend");
    assert_eq!(count.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn follows_a_cname_in_the_answer() {
    let (addr, _) = server(|_, q| {
        let mut r = response(q, 0);
        record(&mut r, AT_QNAME, 5, b"\x04edge\x03cdn\x00");
        if qtype(q) == 1 {
            record(&mut r, b"\x04edge\x03cdn\x00", 1, &[198, 51, 100, 7]);
            record(&mut r, b"\x05other\x00", 1, &[203, 0, 113, 1]); // not on the chain
        }
        vec![r]
    })
    .await;
    assert_eq!(resolver(&[addr]).lookup("directory.test").await.unwrap(), ips(&["198.51.100.7"]));
}

#[tokio::test]
async fn a_silent_server_does_not_hide_a_good_one() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (good, _) = server(|_, q| vec![addresses(q)]).await;
    let started = tokio::time::Instant::now();
    let got = resolver(&[silent.local_addr().unwrap(), good]).lookup("directory.test").await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(started.elapsed() < T / 2, "the good server's answer is taken at once");
}

#[tokio::test]
async fn failures_name_every_server() {
    let (nx, _) = server(|_, q| vec![response(q, 3)]).await;
    let e = resolver(&[nx]).lookup("missing.test").await.unwrap_err();
    assert!(matches!(e, ResolveError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains(&format!("{nx}: no address")), "{e}");

    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (servfail, _) = server(|_, q| vec![response(q, 2)]).await;
    let e = resolver(&[silent_addr, servfail]).lookup("directory.test").await.unwrap_err().to_string();
    assert!(e.contains(&format!("{silent_addr}: no reply to 3 rounds")), "{e}");
    assert!(e.contains(&format!("{servfail}: no reply to 3 rounds")) && e.contains("6 unusable"), "{e}");
    drop(silent);
    let e = resolver(&[silent_addr]).lookup("directory.test").await.unwrap_err().to_string();
    assert!(e.contains("port unreachable"), "{e}");

    assert!(matches!(resolver(&[nx]).lookup("a..b").await, Err(ResolveError::BadName { .. })));
    assert!(matches!(Resolver::new(vec![], None, T), Err(ResolveError::NoServers)));
    let many: Vec<SocketAddr> = (1..=9).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
    let mut twice = many.clone();
    twice.insert(1, many[0]);
    assert_eq!(Resolver::new(twice, None, T).unwrap().servers(), &many[..MAX_SERVERS]);
}

/// With CAP_NET_ADMIN the query socket carries the mark; without, it is not opened at all
/// (a query that would leave unmarked is refused, not sent).
#[tokio::test]
async fn query_sockets_are_marked_before_they_connect() {
    let (addr, _) = server(|_, q| vec![addresses(q)]).await;
    match marked_socket(addr, Some(0x736d)).await {
        Ok(sock) => {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            use std::os::fd::AsRawFd;
            // SAFETY: a live socket; `v` and `len` are valid for the kernel to write.
            let rc = unsafe {
                libc::getsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!((rc, v), (0, 0x736d));
            assert_eq!(sock.peer_addr().unwrap(), addr);
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
    }
}
