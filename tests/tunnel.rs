//! The library API against an in-process exit, without privileges or namespaces.
//!
//! ```text
//!  Tunnel (smoltcp, 10.0.x.y) ──udp 127.0.0.1──▶ exit::Server (the IPR double, sans-IO)
//!                                                   │ "TUN" packets
//!                                                   ▼
//!                                  Internet: a second smoltcp stack owning 192.0.2.2 and
//!                                  2001:db8:1::2, TCP echo on :7, UDP echo on :7, no NAT
//! ```
//!
//! The exit's impairment model stands in for the mixnet (350 ms each way = the 0.7 s RTT of
//! docs/performance.md §1.4), so the TCP settings are exercised on the latency they were chosen
//! for.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use smolmix::exit::{ExitConfig, ImpairConfig, Server};
use smolmix::tunnel::TunnelError;
use smolmix::{IprAddr, Tunnel};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket as TokioUdp;

const INET_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const INET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const ECHO_PORT: u16 = 7;
const TCP_LISTENERS: usize = 8;

/// A queue device for the "internet" host: `rx` from the exit's TUN, `tx` back to it.
#[derive(Default)]
struct Wire {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}
struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);
impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}
impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}
impl phy::Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = 1500;
        caps
    }
}

/// The exit and its internet, driven by one task. Returns the exit's `udp://` address.
async fn start_exit(impair: ImpairConfig) -> IprAddr {
    let sock = TokioUdp::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let epoch = std::time::Instant::now();
        let cfg = ExitConfig { impair, ..ExitConfig::default() };
        let mut exit = Server::new(cfg, epoch).unwrap();
        let mut wire = Wire::default();
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut wire, SmolInstant::ZERO);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(INET_V4), 24)).unwrap();
            a.push(IpCidr::new(IpAddress::Ipv6(INET_V6), 64)).unwrap();
        });
        iface.routes_mut().add_default_ipv4_route(Ipv4Addr::new(192, 0, 2, 1)).unwrap();
        iface.routes_mut().add_default_ipv6_route(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)).unwrap();
        let mut sockets = SocketSet::new(Vec::new());
        let listeners: Vec<SocketHandle> = (0..TCP_LISTENERS)
            .map(|_| {
                let mut s =
                    tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]));
                s.listen(ECHO_PORT).unwrap();
                sockets.add(s)
            })
            .collect();
        let mut u = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16384]),
        );
        u.bind(ECHO_PORT).unwrap();
        let udp_echo = sockets.add(u);
        let mut buf = vec![0u8; 65536];
        loop {
            let now = std::time::Instant::now();
            exit.handle_timeout(now);
            while let Some(p) = exit.poll_tun() {
                wire.rx.push_back(p.to_vec());
                exit.pop_tun();
            }
            let ts = SmolInstant::from_micros((now - epoch).as_micros() as i64);
            iface.poll(ts, &mut wire, &mut sockets);
            echo(&mut sockets, &listeners, udp_echo, &mut buf);
            iface.poll(ts, &mut wire, &mut sockets);
            while let Some(p) = wire.tx.pop_front() {
                exit.handle_tun_packet(&p, now);
            }
            while let Some((peer, msg)) = exit.poll_transmit() {
                let _ = sock.send_to(msg, peer).await;
                exit.pop_transmit();
            }
            tokio::select! {
                r = sock.recv_from(&mut buf) => {
                    let (n, peer) = r.unwrap();
                    exit.handle_datagram(peer, &buf[..n], std::time::Instant::now());
                }
                () = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
    });
    format!("udp://{addr}").parse().unwrap()
}

/// TCP: echo what arrived, close after the peer's FIN, listen again. UDP: echo datagrams.
fn echo(sockets: &mut SocketSet, listeners: &[SocketHandle], udp_echo: SocketHandle, buf: &mut [u8]) {
    for &h in listeners {
        let s = sockets.get_mut::<tcp::Socket>(h);
        while s.can_recv() && s.can_send() {
            let room = (s.send_capacity() - s.send_queue()).min(buf.len());
            let n = s.recv_slice(&mut buf[..room]).unwrap();
            s.send_slice(&buf[..n]).unwrap();
        }
        if !s.may_recv() && s.state() == tcp::State::CloseWait && s.send_queue() == 0 {
            s.close();
        }
        if s.state() == tcp::State::Closed {
            s.listen(ECHO_PORT).unwrap();
        }
    }
    let u = sockets.get_mut::<udp::Socket>(udp_echo);
    while let Ok((n, meta)) = u.recv_slice(buf) {
        let _ = u.send_slice(&buf[..n], meta.endpoint);
    }
}

async fn tcp_echo(tunnel: &Tunnel, to: SocketAddr, len: usize) -> Vec<u8> {
    let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let stream = tunnel.tcp_connect(to).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = async {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let ((), r) = tokio::join!(writer, rd.read_to_end(&mut got));
    r.unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "echo differs");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_echo_over_v4_and_v6() {
    let ipr = start_exit(ImpairConfig::default()).await;
    let tunnel = Tunnel::builder().ipr(ipr).build().await.unwrap();
    let (v4, v6) = tunnel.allocated_ips();
    assert_eq!(v4.octets()[..2], [10, 0], "IPv4 from the IPR pool 10.0.0.0/16");
    assert_eq!(v6.segments()[..7], [0xfc00, 0, 0, 0, 0, 0, 0], "IPv6 from fc00::/112");
    assert_eq!(tunnel.mtu(), 1500, "v10 reports the exit's MTU");

    tcp_echo(&tunnel, SocketAddr::new(IpAddr::V4(INET_V4), ECHO_PORT), 1 << 20).await;
    tcp_echo(&tunnel, SocketAddr::new(IpAddr::V6(INET_V6), ECHO_PORT), 100_000).await;

    let udp = tunnel.udp_socket().await.unwrap();
    assert!((49152..=65535).contains(&udp.local_port()));
    for to in [SocketAddr::new(IpAddr::V4(INET_V4), ECHO_PORT), SocketAddr::new(IpAddr::V6(INET_V6), ECHO_PORT)] {
        udp.send_to(b"hello through the tunnel", to).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!((&buf[..n], from), (&b"hello through the tunnel"[..], to));
    }
    let too_big = vec![0u8; 1500];
    let e = udp.send_to(&too_big, SocketAddr::new(IpAddr::V4(INET_V4), ECHO_PORT)).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    tunnel.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_connections_share_one_tunnel() {
    let ipr = start_exit(ImpairConfig::default()).await;
    let tunnel = std::sync::Arc::new(Tunnel::builder().ipr(ipr).build().await.unwrap());
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let t = tunnel.clone();
            tokio::spawn(async move { tcp_echo(&t, SocketAddr::new(IpAddr::V4(INET_V4), ECHO_PORT), 200_000).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    tunnel.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_and_ports_are_exclusive() {
    let ipr = start_exit(ImpairConfig::default()).await;
    let tunnel = Tunnel::builder().ipr(ipr).tcp_connect_timeout(Duration::from_secs(2)).build().await.unwrap();

    // Nothing listens on :81 of the internet host: its stack answers the SYN with a RST.
    let refused = SocketAddr::new(IpAddr::V4(INET_V4), 81);
    assert!(matches!(tunnel.tcp_connect(refused).await, Err(TunnelError::Refused { addr }) if addr == refused));
    // Nobody owns 192.0.2.99: the SYN goes unanswered.
    let silent = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), 80);
    assert!(matches!(tunnel.tcp_connect(silent).await, Err(TunnelError::ConnectTimeout { .. })));
    let zero = SocketAddr::new(IpAddr::V4(INET_V4), 0);
    assert!(matches!(tunnel.tcp_connect(zero).await, Err(TunnelError::Unaddressable { .. })));

    let a = tunnel.udp_socket_on(5353).await.unwrap();
    assert!(matches!(tunnel.udp_socket_on(5353).await, Err(TunnelError::PortInUse { port: 5353 })));
    drop(a);
    let b = tunnel.udp_socket_on(5353).await.expect("dropping a socket frees its port");

    // After shutdown every operation fails instead of hanging.
    let mut tcp = tunnel.tcp_connect(SocketAddr::new(IpAddr::V4(INET_V4), ECHO_PORT)).await.unwrap();
    tunnel.shutdown().await;
    let mut buf = [0u8; 16];
    assert_eq!(tcp.read(&mut buf).await.unwrap_err().kind(), std::io::ErrorKind::NotConnected);
    assert_eq!(b.recv_from(&mut buf).await.unwrap_err().kind(), std::io::ErrorKind::NotConnected);
    assert!(matches!(tunnel.udp_socket().await, Err(TunnelError::Closed)));
    tunnel.shutdown().await; // idempotent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_over_a_mixnet_like_round_trip() {
    // 350 ms each way: the modelled mixnet RTT of ~0.7 s. SMX_JITTER_MS adds uniform jitter,
    // which reorders segments as the mixnet does; measured on the 2-core dev VM:
    // jitter 0 → 5.7 s; ±50 ms → 25–31 s with smoltcp's default 4-hole assembler, 7.6 s with
    // `assembler-max-segment-count-32` (both ends are smoltcp here, so both suffer).
    let jitter_ms = std::env::var("SMX_JITTER_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let impair = ImpairConfig {
        delay: Duration::from_millis(350),
        jitter: Duration::from_millis(jitter_ms),
        ..ImpairConfig::default()
    };
    let ipr = start_exit(impair).await;
    let tunnel = Tunnel::builder().ipr(ipr).build().await.unwrap();
    let started = std::time::Instant::now();
    tcp_echo(&tunnel, SocketAddr::new(IpAddr::V4(INET_V4), ECHO_PORT), 256 * 1024).await;
    let took = started.elapsed();
    // Handshake + a 256 KiB window each way + FINs: a handful of RTTs, not one MSS per RTT
    // (which would be ~180 RTTs ≈ 2 minutes, docs/performance.md §1.8).
    eprintln!("256 KiB echo over a 0.7 s RTT: {took:?}");
    let bound = Duration::from_secs(if jitter_ms == 0 { 20 } else { 60 });
    assert!(took < bound, "256 KiB echo took {took:?}");
    tunnel.shutdown().await;
}

#[tokio::test]
async fn an_exit_that_does_not_answer_is_a_clear_error() {
    // A bound socket that never answers: the v10 (5 s) and v9 (10 s) connects time out.
    let silent = TokioUdp::bind("127.0.0.1:0").await.unwrap();
    let ipr: IprAddr = format!("udp://{}", silent.local_addr().unwrap()).parse().unwrap();
    let e = Tunnel::builder().ipr(ipr.clone()).build().await.unwrap_err();
    assert!(matches!(e, TunnelError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains(&ipr.to_string()), "{e}");
}
