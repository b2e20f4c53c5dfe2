//! Receive path of the session: LP demultiplexing, response dispatch, unbundling.
//!
//! Contract: every input message is accounted for in exactly one `SessionStats` counter
//! family and never panics; data packets come back as a zero-copy [`Packets`] iterator over the
//! message itself. Sequence numbers are bookkept, never waited for (docs/ipr-protocol.md §7 #2).

use std::net::Ipv4Addr;
use std::time::Instant;

use super::{Allocation, Event, Phase, Session, SessionError};
use crate::ipr::bundle::Unbundler;
use crate::ipr::liveness::{is_echo_reply, SeqClass};
use crate::ipr::lp::{LpError, LpHeader};
use crate::ipr::message::{self, ConnectOk, Info, Response};

/// What the IPR reports for a denied ICMP keepalive: "ip:port", port 0 for ICMP
/// (docs/ipr-protocol.md §3.5, §5.2).
const KEEPALIVE_DENIAL_DST: &str = "10.0.0.1:0";

/// IP packets carried by one downlink message, borrowed from it. Empty entries and the
/// session's own keepalive echo replies are skipped.
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    inner: Unbundler<'a>,
    keepalive: Option<(Ipv4Addr, u16)>,
}

impl Packets<'_> {
    fn none() -> Self {
        Packets { inner: Unbundler::empty(), keepalive: None }
    }
}

impl<'a> Iterator for Packets<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let pkt = self.inner.next()?;
            let ours = self.keepalive.is_some_and(|(ip, id)| is_echo_reply(pkt, ip, id));
            if !pkt.is_empty() && !ours {
                return Some(pkt);
            }
        }
    }
}

impl Session {
    /// One whole message from the transport. Returns the IP packets it carried.
    pub fn handle_message<'a>(&mut self, msg: &'a [u8], now: Instant) -> Packets<'a> {
        self.tick(now);
        self.stats.msgs_in += 1;
        self.stats.bytes_in += msg.len() as u64;
        let (hdr, payload) = match LpHeader::parse(msg) {
            Ok(x) => x,
            Err(e @ LpError::UnknownMsgType(_)) => {
                self.stats.malformed_in += 1;
                tracing::trace!(error = %e, "dropping LP frame");
                return Packets::none();
            }
            Err(e) => {
                self.stats.non_lp_in += 1;
                tracing::trace!(error = %e, len = msg.len(), "dropping non-LP message");
                return Packets::none();
            }
        };
        if hdr.stream_id != self.cfg.stream_id {
            self.stats.foreign_stream_in += 1;
            tracing::trace!(stream_id = hdr.stream_id, "dropping frame of a foreign stream");
            return Packets::none();
        }
        // Anything on our stream proves the exit and the return path alive.
        self.mark_rx(now);
        // Seq 0 carries inline control replies (docs/ipr-protocol.md §4.4) and is not part of the
        // data sequence.
        if hdr.seq != 0 {
            self.record_seq(hdr.seq);
        }
        if payload.is_empty() {
            self.stats.empty_frames_in += 1;
            return Packets::none();
        }
        match message::decode_response(payload) {
            Ok(Response::Data { version, bundle }) => self.on_data(version, bundle),
            Ok(control) => {
                self.stats.control_in += 1;
                self.on_control(control, now);
                Packets::none()
            }
            Err(e) => {
                self.stats.malformed_in += 1;
                tracing::trace!(error = %e, seq = hdr.seq, "dropping undecodable IPR message");
                Packets::none()
            }
        }
    }

    fn record_seq(&mut self, seq: u32) {
        match self.rx_seq.record(seq) {
            SeqClass::First | SeqClass::InOrder => {}
            SeqClass::Gap { missing } => self.stats.seq_gap += u64::from(missing),
            SeqClass::Duplicate => self.stats.seq_dup += 1,
            SeqClass::Reordered | SeqClass::TooOld => self.stats.seq_reorder += 1,
        }
    }

    fn on_data<'a>(&mut self, version: u8, bundle: &'a [u8]) -> Packets<'a> {
        let Some(alloc) = self.alloc.filter(|_| self.phase != Phase::Closed) else {
            self.stats.data_not_connected_in += 1;
            return Packets::none();
        };
        // The IPR stamps data with the connect version (docs/ipr-protocol.md §1.8). Another version
        // can only come from a handler of a superseded connect, addressed to IPs we do not hold.
        if version != alloc.version {
            self.stats.version_mismatch_in += 1;
            return Packets::none();
        }
        self.stats.bundles_in += 1;
        // Walk once for the counters, so they are right even if the caller stops iterating.
        let mut walk = Unbundler::new(bundle);
        for pkt in &mut walk {
            if pkt.is_empty() {
                self.stats.empty_packets_in += 1;
            } else if is_echo_reply(pkt, alloc.ipv4, self.echo_ident) {
                self.stats.keepalive_replies += 1;
            } else {
                self.stats.packets_in += 1;
            }
        }
        if walk.truncated() {
            self.stats.truncated_bundles_in += 1;
            tracing::trace!(len = bundle.len(), "bundle ends in a truncated packet");
        }
        Packets { inner: Unbundler::new(bundle), keepalive: Some((alloc.ipv4, self.echo_ident)) }
    }

    fn on_control(&mut self, resp: Response<'_>, now: Instant) {
        match resp {
            Response::Connect { version, request_id, result } => {
                let Phase::Connecting { version: want_v, request_id: want_id, .. } = self.phase else {
                    self.stale_control("connect", version, request_id);
                    return;
                };
                // Match on (version, request_id), docs/ipr-protocol.md §1.7. After a fallback the
                // pending request is the v9 one, so a late v10 success is ignored on purpose: the
                // IPR will process our v9 Connect after it, and on an LP stream a second Connect is
                // a "stream reconnect" that frees the v10 IPs and allocates new ones
                // (docs/ipr-protocol.md §3.2). Only the v9 reply carries the addresses that stay
                // valid.
                if (version, request_id) != (want_v, want_id) {
                    self.stale_control("connect", version, request_id);
                    return;
                }
                match result {
                    Ok(ok) => self.on_connected(version, ok, now),
                    Err(denial) => {
                        tracing::warn!(%denial, version, "IPR refused the connect");
                        self.phase = Phase::Closed;
                        self.push_event(Event::ConnectFailed(SessionError::Denied(denial)));
                    }
                }
            }
            Response::Disconnect { version, request_id, success } => match self.phase {
                Phase::Disconnecting { request_id: want, .. } if want == request_id => {
                    tracing::debug!(success, "IPR acknowledged the disconnect");
                    self.phase = Phase::Closed;
                    self.push_event(Event::Disconnected);
                }
                _ => self.stale_control("disconnect", version, request_id),
            },
            Response::UnrequestedDisconnect { reason, .. } => {
                // Never sent by the real IPR (docs/ipr-protocol.md §1.5, §3.6), handled for
                // completeness.
                tracing::warn!(%reason, "IPR disconnected us");
                let event = match self.phase {
                    Phase::Connecting { .. } => Event::ConnectFailed(SessionError::RemoteDisconnect(reason)),
                    Phase::Closed => return,
                    _ => Event::Disconnected,
                };
                self.phase = Phase::Closed;
                self.push_event(event);
            }
            Response::Pong { .. } => self.stats.pongs += 1,
            Response::Health { .. } => {}
            Response::Info { info: Info::ExitPolicyDenied { dst }, .. } => {
                if dst == KEEPALIVE_DENIAL_DST {
                    self.stats.keepalive_replies += 1;
                } else {
                    self.stats.info_denials += 1;
                    tracing::debug!(%dst, "exit policy denied a packet");
                }
            }
            Response::Info { info, .. } => {
                self.stats.info_other += 1;
                tracing::debug!(?info, "IPR info");
            }
            Response::Data { .. } => {} // handled by the caller
        }
    }

    fn stale_control(&mut self, what: &str, version: u8, request_id: u64) {
        self.stats.stale_control_in += 1;
        tracing::debug!(what, version, request_id, "ignoring a reply to no pending request");
    }

    fn on_connected(&mut self, version: u8, ok: ConnectOk, now: Instant) {
        tracing::info!(ipv4 = %ok.ipv4, ipv6 = %ok.ipv6, mtu = ?ok.mtu, version, "connected to the IPR");
        let alloc = Allocation { ipv4: ok.ipv4, ipv6: ok.ipv6, mtu: ok.mtu, version };
        if alloc.mtu_out_of_range() {
            tracing::warn!(announced = ?alloc.mtu, "the exit announced an MTU outside 1280..=9000; the tunnel clamps it");
        }
        self.alloc = Some(alloc);
        self.phase = Phase::Up;
        self.rx_seq.expect_from(1);
        self.last_uplink_ip = now;
        self.last_rx = now;
        self.last_probe = now;
        self.push_event(Event::Connected(alloc));
    }
}
