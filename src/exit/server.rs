//! The sans-IO IPR double: public API, downlink routing, timers and outputs.
//! (What each request does lives in `dispatch`.)
//!
//! # Call order
//! Inputs, in any order, each with the current time:
//! - [`Server::handle_datagram`] for every transport message (one UDP datagram = one Nym
//!   message; the peer address stands in for the AnonymousSenderTag),
//! - [`Server::handle_tun_packet`] for every packet read from the exit's TUN,
//! - [`Server::handle_timeout`] when [`Server::poll_timeout`] has passed.
//!
//! Outputs, drained after every input: [`Server::poll_transmit`] / [`Server::pop_transmit`]
//! (messages to send to a peer) and [`Server::poll_tun`] / [`Server::pop_tun`] (packets to
//! write into the TUN). The core never reads a clock and never does I/O.
//!
//! # Behaviour
//! docs/ipr-protocol.md §6.2 items 1–12: checks in the order of `wire::decode_request`; Connect as
//! in docs/ipr-protocol.md §3.2 (a known client's v8 re-connect gets the same IPs and changes
//! nothing; a known client's LP connect is a "stream reconnect": old session dropped, new random
//! IPs, new downlink bound to the new stream id, seq restarting at 1); Disconnect; Ping → Pong and
//! Health without refreshing activity; Data per packet (docs/ipr-protocol.md §5.2): parse, find the
//! client by **source IP** (not by peer), refresh its activity, optional non-global filter answered
//! by `Info(ExitPolicyFilterCheckFailed, Warn, request_id 0)`, else to the TUN. Inline replies use
//! the request's version and LP seq 0; downlink Data uses the connect version and seq 1, 2, ….
//! Every `sweep_interval` clients idle for more than `idle_timeout` are removed silently (no
//! UnrequestedDisconnect, docs/ipr-protocol.md §3.6).
//!
//! # Bounds
//! Clients are bounded by the 65 533-address pool; the transmit and TUN queues by
//! [`MAX_TRANSMIT_QUEUE`] / [`MAX_TUN_QUEUE`]; each client's downlink by one bundle buffer
//! plus the impairment queue's per-peer bound. Every refusal is a counter.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nym_ip_packet_requests::v8::response as v8r;
use nym_ip_packet_requests::{ConnectFailureReason, IpPair};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::alloc::IpAllocator;
use super::client::Downlink;
use super::config::{ConfigError, ExitConfig};
use super::counters::Counters;
use super::impair::{Admit, ImpairQueue};
use super::wire::{self, Envelope};

/// Messages waiting for the driver to send; beyond this they are dropped and counted.
pub const MAX_TRANSMIT_QUEUE: usize = 4096;
/// Packets waiting for the driver to write into the TUN.
pub const MAX_TUN_QUEUE: usize = 4096;
/// The same two queues bounded in bytes: 4096 messages of up to 64 KiB would be 256 MiB each.
/// 8 MiB is 67 ms at 1 Gbit/s, far more than a driver that drains every wake-up needs.
pub const MAX_QUEUE_BYTES: usize = 8 << 20;
/// Spare buffers kept for reuse, so the steady state does not allocate per message.
const MAX_POOLED_BUFFERS: usize = 512;
/// Capacity of a fresh buffer: a full 1500-byte bundle plus LP and IPR framing (≈ 1521 B).
const BUFFER_CAPACITY: usize = 2048;

/// One connected client (key: its peer address, the stand-in for the sender tag).
#[derive(Debug)]
pub(super) struct Client {
    /// Addresses allocated at connect.
    pub(super) ips: IpPair,
    /// Last uplink packet attributed to this client by source IP (docs/ipr-protocol.md §3.6).
    pub(super) last_activity: Instant,
    /// Bundler and LP framing state of the downlink.
    pub(super) downlink: Downlink,
}

/// The IPR double. See the module documentation for the call order.
#[derive(Debug)]
pub struct Server {
    /// Validated configuration.
    pub(super) config: ExitConfig,
    /// Seeded randomness for allocation and impairment (reproducible runs).
    pub(super) rng: StdRng,
    /// Used address suffixes.
    pub(super) alloc: IpAllocator,
    /// Sessions by peer (the sender-tag stand-in).
    pub(super) clients: HashMap<SocketAddr, Client>,
    /// Owner of each allocated IPv4 address (uplink attribution, downlink routing).
    pub(super) by_v4: HashMap<Ipv4Addr, SocketAddr>,
    /// Owner of each allocated IPv6 address.
    pub(super) by_v6: HashMap<Ipv6Addr, SocketAddr>,
    /// Clients whose downlink has a pending flush tick.
    pub(super) flushing: HashSet<SocketAddr>,
    /// Next tick of the inactivity sweep grid.
    pub(super) next_sweep: Instant,
    /// Messages ready for the driver to send.
    pub(super) transmit: VecDeque<(SocketAddr, BytesMut)>,
    /// Bytes held in `transmit`.
    pub(super) transmit_bytes: usize,
    /// Packets ready for the driver to write into the TUN.
    pub(super) tun: VecDeque<BytesMut>,
    /// Bytes held in `tun`.
    pub(super) tun_bytes: usize,
    /// Spare buffers.
    pub(super) pool: Vec<BytesMut>,
    /// Delay model for client → exit messages.
    pub(super) uplink: ImpairQueue,
    /// Delay, loss and pacing model for exit → client messages.
    pub(super) downlink: ImpairQueue,
    /// Health reply body, built once.
    pub(super) health: v8r::HealthResponseReply,
    /// Reused list of peers for the timer paths (no allocation per tick).
    pub(super) scratch: Vec<SocketAddr>,
    /// Everything counted so far.
    pub(super) counters: Counters,
}

impl Server {
    /// A server with no clients; the sweep grid starts at `now`.
    pub fn new(config: ExitConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let health = wire::health_reply().map_err(|e| ConfigError::Health(e.to_string()))?;
        Ok(Self {
            rng: StdRng::seed_from_u64(config.seed),
            alloc: IpAllocator::default(),
            clients: HashMap::new(),
            by_v4: HashMap::new(),
            by_v6: HashMap::new(),
            flushing: HashSet::new(),
            next_sweep: now + config.sweep_interval,
            transmit: VecDeque::new(),
            transmit_bytes: 0,
            tun: VecDeque::new(),
            tun_bytes: 0,
            pool: Vec::new(),
            uplink: ImpairQueue::new(config.impair, false),
            downlink: ImpairQueue::new(config.impair, true),
            health,
            scratch: Vec::new(),
            counters: Counters::default(),
            config,
        })
    }

    /// One transport message from `peer`.
    pub fn handle_datagram(&mut self, peer: SocketAddr, message: &[u8], now: Instant) {
        self.counters.rx_messages += 1;
        if self.uplink.is_transparent() {
            return self.process_message(peer, message, now);
        }
        let mut buf = self.take_buffer();
        buf.extend_from_slice(message);
        match self.uplink.push(peer, buf, false, now, &mut self.rng) {
            Admit::Queued => {}
            Admit::Lost(buf) | Admit::Full(buf) => {
                self.counters.impair_queue_full += 1;
                self.recycle(buf);
            }
        }
    }

    /// One packet read from the exit's TUN: route by destination IP to its client
    /// (docs/ipr-protocol.md §5.3).
    pub fn handle_tun_packet(&mut self, packet: &[u8], now: Instant) {
        self.counters.tun_rx += 1;
        let owner = match destination(packet) {
            Some(IpAddr::V4(ip)) => self.by_v4.get(&ip),
            Some(IpAddr::V6(ip)) => self.by_v6.get(&ip),
            None => {
                self.counters.downlink_unparseable += 1;
                return;
            }
        };
        let Some(owner) = owner.copied() else {
            self.counters.downlink_unknown_destination += 1;
            tracing::trace!(len = packet.len(), "downlink packet for no client dropped");
            return;
        };
        let Some(client) = self.clients.get_mut(&owner) else {
            return;
        };
        let framed = match client.downlink.push(packet, now) {
            Ok(Some(bundle)) => Some((client.downlink.next_envelope(), client.downlink.version(), bundle)),
            Ok(None) => None,
            Err(oversize) => {
                self.counters.downlink_oversize += 1;
                tracing::trace!(%oversize, "downlink packet dropped");
                None
            }
        };
        if client.downlink.poll_timeout().is_some() {
            self.flushing.insert(owner);
        }
        if let Some((env, version, bundle)) = framed {
            self.send_bundle(owner, env, version, bundle, now);
        }
    }

    /// Runs every timer that is due: delayed uplink, flush ticks, the sweep, delayed downlink.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((peer, buf)) = self.uplink.pop_due(now) {
            self.process_message(peer, &buf, now);
            self.recycle(buf);
        }
        self.flush_due(now);
        if now >= self.next_sweep {
            self.sweep(now);
            // Next point of the free-running grid after `now` (a late call skips missed ticks
            // in O(1), like `MissedTickBehavior::Skip`).
            let period = self.config.sweep_interval.as_nanos().max(1);
            let late = now.saturating_duration_since(self.next_sweep).as_nanos() % period;
            let late = Duration::from_nanos(u64::try_from(late).unwrap_or(0));
            self.next_sweep = now + self.config.sweep_interval.saturating_sub(late);
        }
        while let Some((peer, buf)) = self.downlink.pop_due(now) {
            self.enqueue_transmit(peer, buf);
        }
    }

    /// The earliest instant at which [`Server::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let flush = self.flushing.iter().filter_map(|peer| self.clients.get(peer)?.downlink.poll_timeout());
        [self.uplink.poll_timeout(), self.downlink.poll_timeout(), Some(self.next_sweep)]
            .into_iter()
            .flatten()
            .chain(flush)
            .min()
    }

    /// The next message to send, without removing it.
    pub fn poll_transmit(&self) -> Option<(SocketAddr, &[u8])> {
        self.transmit.front().map(|(peer, buf)| (*peer, &buf[..]))
    }

    /// Removes the message returned by [`Server::poll_transmit`].
    pub fn pop_transmit(&mut self) {
        if let Some((_, buf)) = self.transmit.pop_front() {
            self.transmit_bytes -= buf.len();
            self.recycle(buf);
        }
    }

    /// The next packet to write into the TUN, without removing it.
    pub fn poll_tun(&self) -> Option<&[u8]> {
        self.tun.front().map(|buf| &buf[..])
    }

    /// Removes the packet returned by [`Server::poll_tun`].
    pub fn pop_tun(&mut self) {
        if let Some(buf) = self.tun.pop_front() {
            self.tun_bytes -= buf.len();
            self.recycle(buf);
        }
    }

    /// Counters of everything handled and dropped so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Addresses allocated to the client at `peer`, if connected.
    pub fn client_ips(&self, peer: &SocketAddr) -> Option<IpPair> {
        self.clients.get(peer).map(|c| c.ips)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ExitConfig {
        &self.config
    }

    fn flush_due(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.scratch);
        due.extend(self.flushing.iter().copied());
        for peer in due.drain(..) {
            let Some(client) = self.clients.get_mut(&peer) else {
                self.flushing.remove(&peer);
                continue;
            };
            let framed = client
                .downlink
                .handle_timeout(now)
                .map(|bundle| (client.downlink.next_envelope(), client.downlink.version(), bundle));
            if client.downlink.poll_timeout().is_none() {
                self.flushing.remove(&peer);
            }
            if let Some((env, version, bundle)) = framed {
                self.send_bundle(peer, env, version, bundle, now);
            }
        }
        self.scratch = due;
    }

    /// docs/ipr-protocol.md §3.6: silent removal of clients idle for more than `idle_timeout`.
    fn sweep(&mut self, now: Instant) {
        let idle = self.config.idle_timeout;
        let mut stale = std::mem::take(&mut self.scratch);
        stale.extend(
            self.clients
                .iter()
                .filter(|(_, c)| now.saturating_duration_since(c.last_activity) > idle)
                .map(|(peer, _)| *peer),
        );
        for peer in stale.drain(..) {
            self.remove_client(peer);
            self.counters.idle_removed += 1;
            tracing::debug!(%peer, "idle client removed silently");
        }
        self.scratch = stale;
    }

    /// Encodes and sends a Connect reply (inline: request version, LP seq 0).
    pub(super) fn reply_connect(
        &mut self,
        peer: SocketAddr,
        env: Envelope,
        version: u8,
        request_id: u64,
        reply: Result<IpPair, ConnectFailureReason>,
        now: Instant,
    ) {
        let mut buf = self.take_buffer();
        let encoded = wire::encode_connect(
            &mut buf,
            env,
            version,
            request_id,
            reply,
            self.config.announce_mtu.unwrap_or(self.config.mtu),
        );
        self.send_encoded(peer, buf, encoded, false, now);
    }

    /// Encodes and sends any other inline control reply.
    pub(super) fn reply_control(
        &mut self,
        peer: SocketAddr,
        env: Envelope,
        version: u8,
        control: v8r::ControlResponse,
        now: Instant,
    ) {
        let mut buf = self.take_buffer();
        let encoded = wire::encode_control(&mut buf, env, version, control);
        self.send_encoded(peer, buf, encoded, false, now);
    }

    /// Encodes and sends one downlink bundle as a Data response.
    pub(super) fn send_bundle(&mut self, peer: SocketAddr, env: Envelope, version: u8, bundle: Bytes, now: Instant) {
        let mut buf = self.take_buffer();
        let encoded = wire::encode_data(&mut buf, env, version, bundle);
        self.counters.downlink_bundles += 1;
        self.send_encoded(peer, buf, encoded, true, now);
    }

    /// Hands an encoded message to the downlink impairment (or straight to the transmit
    /// queue); `lossy` marks Data responses, sent by the real IPR without retransmission.
    pub(super) fn send_encoded(
        &mut self,
        peer: SocketAddr,
        buf: BytesMut,
        encoded: Result<(), wire::EncodeError>,
        lossy: bool,
        now: Instant,
    ) {
        if let Err(error) = encoded {
            self.counters.encode_errors += 1;
            tracing::warn!(%error, "response dropped");
            return self.recycle(buf);
        }
        if self.downlink.is_transparent() {
            return self.enqueue_transmit(peer, buf);
        }
        match self.downlink.push(peer, buf, lossy, now, &mut self.rng) {
            Admit::Queued => {}
            Admit::Lost(buf) => {
                self.counters.impair_lost += 1;
                self.recycle(buf);
            }
            Admit::Full(buf) => {
                self.counters.impair_queue_full += 1;
                self.recycle(buf);
            }
        }
    }

    /// Queues a message for the driver, or drops and counts it when the queue is full.
    pub(super) fn enqueue_transmit(&mut self, peer: SocketAddr, buf: BytesMut) {
        if self.transmit.len() >= MAX_TRANSMIT_QUEUE || self.transmit_bytes + buf.len() > MAX_QUEUE_BYTES {
            self.counters.transmit_queue_full += 1;
            return self.recycle(buf);
        }
        self.transmit_bytes += buf.len();
        self.transmit.push_back((peer, buf));
    }

    /// A cleared buffer from the pool, or a new one.
    pub(super) fn take_buffer(&mut self) -> BytesMut {
        self.pool.pop().unwrap_or_else(|| BytesMut::with_capacity(BUFFER_CAPACITY))
    }

    /// Returns a buffer to the pool; oversized ones (a 64 KiB datagram) are freed instead,
    /// so the pool stays within `MAX_POOLED_BUFFERS × 4 × BUFFER_CAPACITY` (4 MiB).
    pub(super) fn recycle(&mut self, mut buf: BytesMut) {
        if self.pool.len() < MAX_POOLED_BUFFERS && buf.capacity() <= 4 * BUFFER_CAPACITY {
            buf.clear();
            self.pool.push(buf);
        }
    }
}

/// Destination address of a TUN packet, read the way the IPR's `parse_dst_addr` does
/// (v4: bytes 16..20, v6: bytes 24..40, nothing else validated).
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let octets: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        6 => {
            let octets: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}
