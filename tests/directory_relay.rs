//! The directory relay with the SDK's own HTTP stack: once `relay::start_with` has run, a
//! client from nym-http-api-client's `registry::default_builder()`, and the crate's `Client`
//! (the shared client every SDK directory request uses), reach the directory only through the
//! relay (docs/directory-relay.md §2).
//!
//! Its own process: routing is process-wide and set once. The names used (`*.test`, RFC 6761)
//! resolve nowhere but in the test's nameserver, which only the relay asks, so an answer proves
//! the request went through the relay.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nym_http_api_client::{ApiClient, NO_PARAMS};
use smolmix::transport::mixnet::relay::{self, RelayConfig, RouteError};
use smolmix::transport::sniff::{self, Sniffed, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn private_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smolmix-directory-relay-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    dir
}

/// An HTTP server answering every request with a JSON `{"via":"relay"}`; counts requests.
async fn http_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::Relaxed);
                let body = br#"{"via":"relay"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    (port, count)
}

/// A TCP server that keeps the first bytes of each connection (a ClientHello) and closes.
async fn tls_sink() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0;
            while let Ok(n @ 1..) =
                tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf[len..])).await.unwrap_or(Ok(0))
            {
                len += n;
                if matches!(sniff::sniff(&buf[..len]), Ok(Sniffed::Found(_)) | Err(_)) {
                    break;
                }
            }
            keep.lock().unwrap().push(buf[..len].to_vec());
        }
    });
    (port, got)
}

/// A nameserver: 127.0.0.1 for every A query, no address for AAAA. Counts queries.
async fn dns_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            seen.fetch_add(1, Ordering::Relaxed);
            let mut r = buf[..n].to_vec();
            r[2] = 0x81; // QR, RD
            r[3] = 0x80; // RA, NOERROR
            if buf[n - 3] == 1 {
                r[7] = 1; // ANCOUNT
                r.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x01");
            }
            let _ = sock.send_to(&r, from).await;
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_http_goes_through_the_relay_to_allowed_hosts_only() {
    let (http_port, requests) = http_server().await;
    let (tls_port, hellos) = tls_sink().await;
    let (ns, queries) = dns_server().await;
    let dir = private_dir("sdk");
    let allow = vec![("directory.test".to_string(), http_port), ("tls.test".to_string(), tls_port)];
    // Unmarked: setting SO_MARK needs CAP_NET_ADMIN (the unit tests check the mark is set).
    let handle = relay::start_with(&dir, RelayConfig { mark: None, allow, nameservers: vec![ns] }).unwrap();
    assert_eq!(relay::routed_path().as_deref(), Some(handle.path()));

    // 1. A client as the SDK builds them, from the registry's default builder.
    let client = nym_http_api_client::registry::default_builder().build().unwrap();
    let body = client.get(format!("http://directory.test:{http_port}/api/v1/health")).send().await.unwrap();
    assert_eq!(body.text().await.unwrap(), r#"{"via":"relay"}"#);
    assert_eq!(requests.load(Ordering::Relaxed), 1);
    assert!(queries.load(Ordering::Relaxed) >= 1, "the relay resolved the name");

    // 2. The crate's Client without a builder of its own: the shared client of the SDK's
    // directory requests (nym-http-api-client lib.rs, SHARED_CLIENT).
    let api = nym_http_api_client::Client::new_url(format!("http://directory.test:{http_port}/api/"), None).unwrap();
    let json: serde_json::Value = api.get_json("/v1/health", NO_PARAMS).await.unwrap();
    assert_eq!(json["via"], "relay");
    assert_eq!(requests.load(Ordering::Relaxed), 2);

    // 3. Another host is refused before anything is resolved or dialled.
    let before = queries.load(Ordering::Relaxed);
    let refused = client.get(format!("http://quad9.test:{http_port}/")).send().await;
    assert!(refused.is_err(), "{refused:?}");
    let by_address = client.get(format!("http://127.0.0.1:{http_port}/")).send().await;
    assert!(by_address.is_err(), "the directory's server by address is not the directory's name");
    assert_eq!(requests.load(Ordering::Relaxed), 2);
    assert_eq!(queries.load(Ordering::Relaxed), before);

    // 4. https: the relay forwards rustls's ClientHello, by its server name, to the allowed
    // port, where the sink finds the same name (the handshake then fails: no server there).
    let tls = client.get(format!("https://tls.test:{tls_port}/")).send().await;
    assert!(tls.is_err());
    let hellos = hellos.lock().unwrap().clone();
    assert_eq!(hellos.len(), 1);
    assert_eq!(sniff::sniff(&hellos[0]), Ok(Sniffed::Found(Target::Tls { host: "tls.test".into() })));

    // Connections are counted when they end, just after the client has its answer.
    let mut counts = handle.counts();
    for _ in 0..200 {
        if counts.relayed + counts.failed + counts.refused >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        counts = handle.counts();
    }
    assert_eq!((counts.relayed + counts.failed, counts.refused), (3, 2), "{counts:?}");

    // 5. The path is set once per process.
    let other = private_dir("other");
    let again = relay::start_with(
        &other,
        RelayConfig { mark: None, allow: vec![("a.test".into(), 80)], nameservers: vec![ns] },
    );
    assert!(matches!(again, Err(relay::RelayError::Route(RouteError::AlreadyRouted(p))) if p == handle.path()));
    assert!(!other.join(relay::SOCKET_NAME).exists(), "a relay that cannot be routed to is not left running");
    drop(handle);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(other);
}
