//! A deterministic simulation of the whole tunnel in one process, in the style of quinn-proto's
//! test pair: the client's pipeline and [`Link`] against the exit double's [`Server`], joined
//! by a simulated network, with simulated time advanced straight to the next deadline. No
//! tokio, no sockets, no root: hours of simulated time run in milliseconds, and a seed replays
//! a run exactly.
//!
//! ```text
//!   app ──▶ Pipeline ──▶ Link ──▶ Wire (uplink) ──▶ Server ──▶ internet (echo responder)
//!   app ◀── Pipeline ◀── Link ◀── Wire (downlink) ◀── Server ◀──┘
//! ```
//!
//! The harness plays the VPN driver's part in miniature (a `Link::Up` installs the allocation
//! and the MTU in the pipeline, a loss clears it); everything else is the production code.
//! [`Wire`] models what the mixnet does to messages: delay with jitter (reordering), loss and
//! duplication, each direction seeded on its own; the exit can also be silenced (a dead exit)
//! or replaced by a fresh one (a restarted exit).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::exit::{ExitConfig, Server};
use crate::ipr::{SessionConfig, SessionStats};
use crate::link::{Link, LinkConfig, LinkEvent};
use crate::pipeline::{self, Action, Pipeline};

mod tests;

/// The client's TUN address (what applications see), as in `system/tun.rs`.
pub(crate) const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(100, 86, 0, 2);
/// A destination on the far side of the exit (TEST-NET-2, never routed).
pub(crate) const REMOTE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// A host on the far side that never answers (a dead nameserver, say).
pub(crate) const DEAD_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);
/// The client as the exit sees it (the stand-in for its sender tag).
const CLIENT_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000);

/// What the simulated network does to messages in one direction.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WireConfig {
    /// Mean one-way delay.
    pub(crate) delay: Duration,
    /// Uniform in ±`jitter` around `delay`: messages overtake each other.
    pub(crate) jitter: Duration,
    /// Probability that a message is lost.
    pub(crate) loss: f64,
    /// Probability that a message arrives twice (each copy delayed on its own).
    pub(crate) dup: f64,
}

/// One direction of the network: messages in flight, ordered by arrival time.
pub(crate) struct Wire {
    cfg: WireConfig,
    rng: StdRng,
    /// (arrival, tie-breaker, message).
    in_flight: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    next_id: u64,
    pub(crate) sent: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
}

impl Wire {
    fn new(cfg: WireConfig, seed: u64) -> Wire {
        Wire {
            cfg,
            rng: StdRng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            next_id: 0,
            sent: 0,
            lost: 0,
            duplicated: 0,
        }
    }

    fn send(&mut self, msg: &[u8], now: Instant) {
        self.sent += 1;
        if self.rng.gen_bool(self.cfg.loss) {
            self.lost += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.cfg.dup) { 2 } else { 1 };
        self.duplicated += copies - 1;
        for _ in 0..copies {
            let spread = self.cfg.jitter.as_secs_f64() * (2.0 * self.rng.gen::<f64>() - 1.0);
            let at = self.cfg.delay.as_secs_f64() + spread;
            let arrival = now + Duration::from_secs_f64(at.max(0.0));
            self.in_flight.push(Reverse((arrival, self.next_id, msg.to_vec())));
            self.next_id += 1;
        }
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse((t, ..))| *t)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_arrival()? > now {
            return None;
        }
        self.in_flight.pop().map(|Reverse((.., m))| m)
    }
}

/// The client, the exit, the network between them, and a clock.
pub(crate) struct Sim {
    pub(crate) now: Instant,
    pub(crate) t0: Instant,
    pub(crate) pipe: Pipeline,
    pub(crate) link: Link,
    pub(crate) exit: Server,
    exit_cfg: ExitConfig,
    pub(crate) up: Wire,
    pub(crate) down: Wire,
    /// A dead exit: every message to it is lost and it sends nothing.
    pub(crate) exit_silent: bool,
    /// The internet answers UDP datagrams (ports swapped, payload echoed, a DNS query as an
    /// answer) when set; [`DEAD_V4`] never answers.
    pub(crate) echo: bool,
    /// Packets the pipeline wrote into the client's TUN, in order.
    pub(crate) to_app: Vec<Vec<u8>>,
    /// Packets the exit wrote into its TUN (what reached the internet).
    pub(crate) internet: Vec<Vec<u8>>,
    /// Every link event, with the time it was seen.
    pub(crate) events: Vec<(Duration, LinkEvent)>,
    /// Uplink messages carrying data (not control), for bundling efficiency.
    pub(crate) data_msgs_up: u64,
}

impl Sim {
    /// A client connecting to a fresh exit; the exit's seed is `seed`, the network's derive
    /// from it.
    pub(crate) fn new(exit_cfg: ExitConfig, up: WireConfig, down: WireConfig, seed: u64) -> Sim {
        let t0 = Instant::now();
        let exit_cfg = ExitConfig { seed, ..exit_cfg };
        let exit = Server::new(exit_cfg.clone(), t0).expect("valid exit config");
        let pipe = Pipeline::with_seed(
            pipeline::Config {
                local_v4: LOCAL_V4,
                local_v6: "fd6d:6978::2".parse().expect("literal"),
                mtu: 1500,
                limits: pipeline::Limits::default(),
            },
            seed,
        );
        let link = Link::new(LinkConfig { session: session_config(), seed }, t0);
        let mut sim = Sim {
            now: t0,
            t0,
            pipe,
            link,
            exit,
            exit_cfg,
            up: Wire::new(up, seed ^ 0x5550),
            down: Wire::new(down, seed ^ 0xd0d0),
            exit_silent: false,
            echo: true,
            to_app: Vec::new(),
            internet: Vec::new(),
            events: Vec::new(),
            data_msgs_up: 0,
        };
        sim.client_output(); // the first Connect
        sim
    }

    /// Simulated time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// The exit restarts: it forgets every client; with the same seed it hands out the same
    /// first addresses again. `change` alters its configuration first (a new MTU).
    pub(crate) fn restart_exit(&mut self, change: impl FnOnce(&mut ExitConfig)) {
        change(&mut self.exit_cfg);
        self.exit = Server::new(self.exit_cfg.clone(), self.now).expect("valid exit config");
    }

    /// An application writes `pkt` into the TUN.
    pub(crate) fn app_send(&mut self, pkt: &[u8]) {
        self.app_send_burst(std::slice::from_ref(&pkt.to_vec()));
    }

    /// Packets the driver reads from the TUN in one wake-up: all go into the link before
    /// anything is sent, as in `driver/running.rs`, so they can share bundles.
    pub(crate) fn app_send_burst(&mut self, pkts: &[Vec<u8>]) {
        for pkt in pkts {
            let mut buf = pkt.clone();
            match self.pipe.handle_tun(&mut buf, self.now) {
                Action::ToExit(p) => self.link.send_ip(p, self.now),
                Action::ToTun(reply) => self.to_app.push(reply.to_vec()),
                Action::Drop => {}
            }
        }
        self.client_output();
    }

    /// Advances the clock to the next deadline, never past `until`, and runs what is due
    /// then. Returns false once nothing is left to do before `until` (the clock is at `until`).
    pub(crate) fn step(&mut self, until: Instant) -> bool {
        let next = [
            self.link.poll_timeout(),
            self.pipe.poll_timeout(),
            self.exit.poll_timeout(),
            self.up.next_arrival(),
            self.down.next_arrival(),
        ]
        .into_iter()
        .flatten()
        .min();
        let more = next.is_some_and(|t| t <= until);
        self.now = self.now.max(if more { next.unwrap_or(until) } else { until });
        self.run_due();
        more
    }

    /// Runs for `d` of simulated time.
    pub(crate) fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
    }

    /// Runs until `done` holds or `limit` of simulated time passed; returns whether it held.
    pub(crate) fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let until = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(until) {
                return done(self);
            }
        }
    }

    pub(crate) fn session_stats(&self) -> &SessionStats {
        self.link.session().stats()
    }

    fn run_due(&mut self) {
        let now = self.now;
        self.link.handle_timeout(now);
        self.pipe.handle_timeout(now);
        self.exit.handle_timeout(now);
        while let Some(msg) = self.up.pop_due(now) {
            if !self.exit_silent {
                self.exit.handle_datagram(CLIENT_PEER, &msg, now);
            }
        }
        self.exit_output();
        while let Some(msg) = self.down.pop_due(now) {
            for pkt in self.link.handle_message(&msg, now) {
                let mut buf = pkt.to_vec();
                if let Action::ToTun(p) = self.pipe.handle_exit(&mut buf, now) {
                    self.to_app.push(p.to_vec());
                }
            }
        }
        self.client_output();
    }

    /// The driver's part: act on link events, then send what the link has (the simulated
    /// transport is always ready, like `udp://`).
    fn client_output(&mut self) {
        while let Some(ev) = self.link.poll_event() {
            match &ev {
                LinkEvent::Up(alloc) => {
                    self.pipe.set_mtu(alloc.tunnel_mtu(false));
                    self.pipe.set_allocated(alloc.ipv4, None);
                }
                LinkEvent::Lost { .. } => self.pipe.clear_allocated(),
                LinkEvent::Failed(_) | LinkEvent::Closed => {}
            }
            self.events.push((self.elapsed(), ev));
        }
        loop {
            match self.link.poll_transmit() {
                Some(msg) => {
                    if msg.kind == crate::ipr::MessageKind::Data {
                        self.data_msgs_up += 1;
                    }
                    self.up.send(msg.bytes, self.now);
                    self.link.pop_transmit();
                }
                None if self.link.has_pending() => self.link.flush(),
                None => break,
            }
        }
    }

    /// The exit's outputs: messages onto the downlink wire, TUN packets to the internet, whose
    /// answers go back into the exit (and so, maybe, onto the wire again).
    fn exit_output(&mut self) {
        loop {
            while let Some((_, msg)) = self.exit.poll_transmit() {
                if !self.exit_silent {
                    self.down.send(msg, self.now);
                }
                self.exit.pop_transmit();
            }
            let Some(pkt) = self.exit.poll_tun() else { break };
            let answer = if self.echo { answer(pkt) } else { None };
            self.internet.push(pkt.to_vec());
            self.exit.pop_tun();
            if let Some(a) = answer {
                self.exit.handle_tun_packet(&a, self.now);
            }
        }
    }
}

/// Session settings of the simulated client: the VPN's (link/drive.rs `session_config` for a
/// `udp://` exit: 5 s and 10 s connect timeouts, keepalive 15 s, dead after 45 s).
fn session_config() -> SessionConfig {
    SessionConfig {
        stream_id: 0,
        max_version: 10,
        v10_timeout: Duration::from_secs(5),
        v9_timeout: Duration::from_secs(10),
        keepalive_idle: Duration::from_secs(15),
        dead_after: Duration::from_secs(45),
        probe_timeout: Duration::from_secs(15),
        tx_queue: crate::ipr::transmit::TX_RING_CAP,
    }
}

/// An IPv4 UDP datagram.
pub(crate) fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64).udp(sport, dport).write(&mut out, payload).expect("builds");
    out
}

/// (src, sport, dst, dport, payload) of an IPv4 UDP datagram.
pub(crate) fn parse_udp4(pkt: &[u8]) -> Option<(Ipv4Addr, u16, Ipv4Addr, u16, Vec<u8>)> {
    let p = SlicedPacket::from_ip(pkt).ok()?;
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) = (p.net, p.transport) else { return None };
    let h = ip.header();
    Some((h.source_addr(), udp.source_port(), h.destination_addr(), udp.destination_port(), udp.payload().to_vec()))
}

/// The internet's answer: a UDP datagram's payload back to its sender (a DNS query to port 53
/// comes back as an answer without records: its own bytes with QR set, RFC 1035 §4.1.1), and an
/// ICMP echo reply to an echo request (as the exit's own kernel answers the keepalive to
/// 10.0.0.1 behind a local exit). Nothing from [`DEAD_V4`].
fn answer(pkt: &[u8]) -> Option<Vec<u8>> {
    if let Some((src, sport, dst, dport, mut payload)) = parse_udp4(pkt) {
        if dst == DEAD_V4 {
            return None;
        }
        if dport == 53 && payload.len() >= 12 {
            payload[2] |= 0x80;
        }
        return Some(udp4(dst, dport, src, sport, &payload));
    }
    let p = SlicedPacket::from_ip(pkt).ok()?;
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Icmpv4(icmp))) = (p.net, p.transport) else { return None };
    let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type() else { return None };
    let h = ip.header();
    let mut out = Vec::new();
    PacketBuilder::ipv4(h.destination(), h.source(), 64)
        .icmpv4_echo_reply(echo.id, echo.seq)
        .write(&mut out, icmp.payload())
        .ok()?;
    Some(out)
}
