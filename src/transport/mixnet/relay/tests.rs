//! The relay on loopback, unmarked (the mark itself: `connect_marked`), without routing the
//! SDK's HTTP (tests/directory_relay.rs does that, in a process of its own).

use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::AtomicUsize;

use tokio::net::{TcpListener, UdpSocket};

use super::*;
use crate::transport::dns_wire::tests::{record, response, AT_QNAME};

/// A fresh directory, mode 0700.
fn private_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smolmix-relay-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    dir
}

/// An HTTP server answering every request head with `ok`; counts the connections it accepts.
async fn http_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
            });
        }
    });
    (port, count)
}

/// A nameserver saying 127.0.0.1 for every A query and nothing for AAAA.
async fn dns_server() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let q = &buf[..n];
            let mut r = response(q, 0);
            if q[n - 3] == 1 {
                record(&mut r, AT_QNAME, 1, &[127, 0, 0, 1]);
            }
            let _ = sock.send_to(&r, from).await;
        }
    });
    addr
}

fn config(allow: &[(&str, u16)], nameservers: Vec<SocketAddr>) -> RelayConfig {
    RelayConfig { mark: None, allow: allow.iter().map(|(h, p)| (h.to_string(), *p)).collect(), nameservers }
}

/// Sends `head` through the relay and returns all it got back.
async fn exchange(relay: &RelayHandle, head: &[u8]) -> Vec<u8> {
    let mut c = UnixStream::connect(relay.path()).await.unwrap();
    c.write_all(head).await.unwrap();
    c.shutdown().await.unwrap(); // half-close: the relay sees the end of what we send
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await.unwrap();
    out
}

/// Waits until the relay has finished `n` connections (they are counted when they end).
async fn settled(relay: &RelayHandle, n: u64) -> RelayCounts {
    for _ in 0..200 {
        let c = relay.counts();
        if c.relayed + c.refused + c.failed + c.busy >= n {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.counts()
}

#[tokio::test]
async fn relays_allowed_hosts_by_address_and_by_name() {
    let (port, hits) = http_server().await;
    let dir = private_dir("allowed");
    let relay =
        spawn(&dir, config(&[("127.0.0.1", port), ("directory.test", port)], vec![dns_server().await])).unwrap();
    assert_eq!(relay.path(), dir.join(SOCKET_NAME));
    let mode = fs::metadata(relay.path()).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let by_ip = exchange(&relay, format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).await;
    assert!(by_ip.ends_with(b"\r\n\r\nok"), "{}", String::from_utf8_lossy(&by_ip));
    let by_name = exchange(&relay, format!("GET /x HTTP/1.1\r\nHost: Directory.Test:{port}\r\n\r\n").as_bytes()).await;
    assert!(by_name.ends_with(b"\r\n\r\nok"), "{}", String::from_utf8_lossy(&by_name));
    assert_eq!(hits.load(Ordering::Relaxed), 2);
    assert_eq!(settled(&relay, 2).await, RelayCounts { accepted: 2, relayed: 2, ..Default::default() });
    drop(relay);
    assert!(!dir.join(SOCKET_NAME).exists(), "dropping the handle removes the socket");
    fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn refuses_other_hosts_and_other_bytes() {
    let (port, hits) = http_server().await;
    let dir = private_dir("refused");
    let relay = spawn(&dir, config(&[("directory.test", port)], vec![dns_server().await])).unwrap();
    let heads = [
        format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"), // the same server, by address
        format!("GET / HTTP/1.1\r\nHost: directory.test:{}\r\n\r\n", port ^ 1), // another port
        format!("GET / HTTP/1.1\r\nHost: quad9.test:{port}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: directory.test:{port}\r\nHost: quad9.test\r\n\r\n"),
        "SSH-2.0-OpenSSH_9.6\r\n".to_string(),
    ];
    for head in &heads {
        assert!(exchange(&relay, head.as_bytes()).await.is_empty(), "{head}");
    }
    assert!(exchange(&relay, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00").await.is_empty(), "a cut hello");
    let c = settled(&relay, 6).await;
    assert_eq!((c.refused, c.relayed, c.failed), (6, 0, 0), "{c:?}");
    assert_eq!(hits.load(Ordering::Relaxed), 0, "nothing reached the server");
    drop(relay);
    fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn counts_failures_and_bounds_connections() {
    // An allowed address where nothing listens.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = private_dir("bounds");
    let relay = spawn(&dir, config(&[("127.0.0.1", port)], vec![])).unwrap();
    assert!(exchange(&relay, format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).await.is_empty());
    assert_eq!(settled(&relay, 1).await.failed, 1);
    let eof_early = exchange(&relay, b"GET / HTTP/1.1\r\nHo").await;
    assert!(eof_early.is_empty());

    // MAX_CONNECTIONS clients that send nothing; the next one is closed at once.
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(UnixStream::connect(relay.path()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = UnixStream::connect(relay.path()).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(1), extra.read(&mut b)).await.expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert_eq!(relay.counts().busy, 1);
    drop(relay);
    fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn refuses_to_start_unsafely() {
    let open = private_dir("open");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    let e = spawn(&open, config(&[("127.0.0.1", 9)], vec![])).unwrap_err();
    assert!(matches!(e, RelayError::UnsafeDir { .. }), "{e}");
    fs::remove_dir_all(open).unwrap();

    let dir = private_dir("start");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    assert!(matches!(spawn(&link, config(&[("127.0.0.1", 9)], vec![])), Err(RelayError::UnsafeDir { .. })));
    assert!(matches!(spawn(&dir, config(&[("a.test", 9)], vec![])), Err(RelayError::NoNameservers)));
    assert!(matches!(spawn(&dir, config(&[], vec![])), Err(RelayError::Allow(AllowError::Empty))));
    // Something other than a socket at the path is left alone; a stale socket is replaced.
    fs::write(dir.join(SOCKET_NAME), "x").unwrap();
    assert!(matches!(spawn(&dir, config(&[("127.0.0.1", 9)], vec![])), Err(RelayError::Bind { .. })));
    fs::remove_file(dir.join(SOCKET_NAME)).unwrap();
    let stale = std::os::unix::net::UnixListener::bind(dir.join(SOCKET_NAME)).unwrap();
    drop(stale);
    let relay = spawn(&dir, config(&[("127.0.0.1", 9)], vec![])).unwrap();
    drop(relay);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn needs_a_runtime() {
    let dir = private_dir("runtime");
    assert!(matches!(spawn(&dir, config(&[("127.0.0.1", 9)], vec![])), Err(RelayError::NoRuntime)));
    fs::remove_dir_all(dir).unwrap();
}

/// With CAP_NET_ADMIN the dialled socket carries the mark; without, nothing is dialled.
#[tokio::test]
async fn dials_with_the_mark_set_before_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match connect_marked(addr, Some(0x736d)).await {
        Ok(stream) => {
            use std::os::fd::AsRawFd;
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: a live socket; `v` and `len` are valid for the kernel to write.
            let rc = unsafe {
                libc::getsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!((rc, v), (0, 0x736d));
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
    }
    let plain = connect_marked(addr, None).await.unwrap();
    assert_eq!(plain.peer_addr().unwrap(), addr);
}
