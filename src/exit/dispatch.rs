//! Request dispatch of the IPR double: docs/ipr-protocol.md §6.2 item 6, the uplink of §5.2.
//!
//! Contract: [`Server::process_message`] takes one transport message that has passed the impairment
//! model, runs the `wire` checks (docs/ipr-protocol.md §6.2 items 1–5, silent on failure) and then:
//! - Connect (docs/ipr-protocol.md §3.2): a known client's bare v8 re-connect gets `Success` with
//!   the same IPs and changes nothing; any other connect drops the peer's old session (a "stream
//!   reconnect"), allocates new random IPs and binds a new downlink to this frame's stream id with
//!   seq restarting at 1; no free IP after 100 draws → `Failure(NoAvailableIp)`.
//! - Disconnect: `Success` and removal, or `Failure(ClientNotConnected)`.
//! - Ping → Pong, Health → Health; neither refreshes activity.
//! - Data: each bundled packet is parsed, attributed by **source IP**, refreshes that
//!   client's activity, and is either denied (Info Warn, request_id 0) or queued for the TUN.
//!
//! Replies use the request's version, the request's stream id and LP seq 0.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nym_ip_packet_requests::v8::request::{ControlRequest, IpPacketRequestData};
use nym_ip_packet_requests::v8::response as v8r;
use nym_ip_packet_requests::ConnectFailureReason;

use super::client::Downlink;
use super::counters::Counters;
use super::filter::{classify, is_global};
use super::server::{Client, Server, MAX_QUEUE_BYTES, MAX_TUN_QUEUE};
use super::wire::{self, Envelope, Reject};

/// The real IPR accepts any `buffer_timeout`; the double caps it so `Instant` math cannot
/// overflow. An hour is far beyond anything a client sends (all Nym clients send `None`).
const MAX_BUFFER_TIMEOUT: Duration = Duration::from_secs(3600);

impl Server {
    /// One transport message, after the uplink impairment: checks, then dispatch.
    pub(super) fn process_message(&mut self, peer: SocketAddr, message: &[u8], now: Instant) {
        let inbound = match wire::decode_request(message, self.config.max_version) {
            Ok(inbound) => inbound,
            Err(reject) => {
                self.counters.reject(reject);
                tracing::trace!(%peer, %reject, len = message.len(), "message dropped silently");
                return;
            }
        };
        let stream_id = inbound.stream_id;
        let version = inbound.request.protocol.version;
        let env = Envelope::control(stream_id);
        match inbound.request.data {
            IpPacketRequestData::Data(data) => self.on_data(peer, env, version, &data.ip_packets, now),
            IpPacketRequestData::Control(control) => match *control {
                ControlRequest::Connect(r) => {
                    self.on_connect(peer, stream_id, version, r.request_id, r.buffer_timeout, now)
                }
                ControlRequest::Disconnect(r) => {
                    let reply = if self.remove_client(peer) {
                        self.counters.disconnects += 1;
                        v8r::DisconnectResponseReply::Success
                    } else {
                        v8r::DisconnectResponseReply::Failure(v8r::DisconnectFailureReason::ClientNotConnected)
                    };
                    let response = v8r::DisconnectResponse { request_id: r.request_id, reply };
                    self.reply_control(peer, env, version, v8r::ControlResponse::Disconnect(response), now);
                }
                ControlRequest::Ping(r) => {
                    self.counters.pings += 1;
                    let pong = v8r::PongResponse { request_id: r.request_id };
                    self.reply_control(peer, env, version, v8r::ControlResponse::Pong(pong), now);
                }
                ControlRequest::Health(r) => {
                    let health = v8r::HealthResponse { request_id: r.request_id, reply: self.health.clone() };
                    self.reply_control(peer, env, version, v8r::ControlResponse::Health(Box::new(health)), now);
                }
            },
        }
    }

    /// docs/ipr-protocol.md §3.2: new client, v8 re-connect, or stream reconnect.
    fn on_connect(
        &mut self,
        peer: SocketAddr,
        stream_id: Option<u64>,
        version: u8,
        request_id: u64,
        buffer_timeout: Option<u64>,
        now: Instant,
    ) {
        let env = Envelope::control(stream_id);
        if let (Some(client), None) = (self.clients.get(&peer), stream_id) {
            // v8 re-connect: same IPs, old handler and buffer_timeout kept, activity untouched.
            let ips = client.ips;
            self.counters.reconnects_v8 += 1;
            return self.reply_connect(peer, env, version, request_id, Ok(ips), now);
        }
        let interval = match buffer_timeout {
            None => self.config.flush_interval,
            // The real server would call `interval(0)` and panic in its listener task: the
            // client never gets an answer. Reproduce the silence without the crash.
            Some(0) => {
                self.counters.connect_zero_buffer_timeout += 1;
                tracing::warn!(%peer, "connect with buffer_timeout Some(0) dropped (crashes the real IPR)");
                return;
            }
            Some(ms) => Duration::from_millis(ms).min(MAX_BUFFER_TIMEOUT),
        };
        if self.remove_client(peer) {
            self.counters.reconnects_stream += 1;
        }
        let Some(ips) = self.alloc.allocate(&mut self.rng) else {
            self.counters.no_available_ip += 1;
            return self.reply_connect(peer, env, version, request_id, Err(ConnectFailureReason::NoAvailableIp), now);
        };
        let downlink = Downlink::new(stream_id, version, interval, now);
        self.clients.insert(peer, Client { ips, last_activity: now, downlink });
        self.by_v4.insert(ips.ipv4, peer);
        self.by_v6.insert(ips.ipv6, peer);
        self.counters.connects += 1;
        tracing::debug!(%peer, ?stream_id, version, %ips, "client connected");
        self.reply_connect(peer, env, version, request_id, Ok(ips), now);
    }

    /// docs/ipr-protocol.md §5.2 for each packet of a Data request's bundle (§2.3 decoding).
    fn on_data(&mut self, peer: SocketAddr, env: Envelope, version: u8, bundle: &Bytes, now: Instant) {
        let mut rest: &[u8] = bundle;
        while let [hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            let (Some(packet), Some(next)) = (tail.get(..len), tail.get(len..)) else {
                break;
            };
            self.on_uplink_packet(peer, env, version, packet, now);
            rest = next;
        }
        if !rest.is_empty() {
            // Trailing incomplete entry: ignored by the real decoder as well.
            self.counters.uplink_truncated_bundles += 1;
        }
    }

    fn on_uplink_packet(&mut self, peer: SocketAddr, env: Envelope, version: u8, packet: &[u8], now: Instant) {
        let uplink = match classify(packet) {
            Ok(uplink) => uplink,
            Err(error) => {
                self.counters.uplink_unparseable += 1;
                tracing::trace!(%peer, %error, "uplink packet dropped");
                return;
            }
        };
        let owner = match uplink.src {
            IpAddr::V4(ip) => self.by_v4.get(&ip),
            IpAddr::V6(ip) => self.by_v6.get(&ip),
        };
        // Attribution by source IP, not by sender: the real IPR does not check that the packet came
        // from the client owning the address (docs/ipr-protocol.md §5.2 step 2, §7 item 7).
        let Some(client) = owner.copied().and_then(|owner| self.clients.get_mut(&owner)) else {
            self.counters.uplink_unknown_source += 1;
            tracing::trace!(%peer, src = %uplink.src, "uplink packet from no client's address dropped");
            return;
        };
        client.last_activity = now;
        if self.config.deny_non_global && !is_global(uplink.dst.ip()) {
            self.counters.uplink_denied += 1;
            let info = v8r::InfoResponse {
                request_id: 0,
                reply: v8r::InfoResponseReply::ExitPolicyFilterCheckFailed { dst: uplink.dst.to_string() },
                level: v8r::InfoLevel::Warn,
            };
            return self.reply_control(peer, env, version, v8r::ControlResponse::Info(info), now);
        }
        if self.tun.len() >= MAX_TUN_QUEUE || self.tun_bytes + packet.len() > MAX_QUEUE_BYTES {
            self.counters.tun_queue_full += 1;
            return;
        }
        let mut buf = self.take_buffer();
        buf.extend_from_slice(packet);
        self.tun_bytes += buf.len();
        self.tun.push_back(buf);
        self.counters.uplink_forwarded += 1;
    }

    /// Drops a client's session and frees its addresses; false if there was none.
    pub(super) fn remove_client(&mut self, peer: SocketAddr) -> bool {
        let Some(client) = self.clients.remove(&peer) else {
            return false;
        };
        self.alloc.free(client.ips);
        self.by_v4.remove(&client.ips.ipv4);
        self.by_v6.remove(&client.ips.ipv6);
        self.flushing.remove(&peer);
        true
    }
}

impl Counters {
    /// Counts a message rejected by the `wire` checks.
    pub(super) fn reject(&mut self, reject: Reject) {
        let counter = match reject {
            Reject::LpAttributes => &mut self.lp_bad_attributes,
            Reject::EmptyLpPayload => &mut self.lp_open_ignored,
            Reject::TooShort => &mut self.too_short,
            Reject::ServiceProvider(_) => &mut self.bad_service_provider,
            Reject::Version(_) => &mut self.bad_version,
            Reject::Decode => &mut self.undecodable,
            Reject::Transport { .. } => &mut self.wrong_transport,
        };
        *counter += 1;
    }
}
