//! The per-packet steps of both directions: validation, reassembly hand-off, the too-big
//! decision, and the address / port rewrite with its checksum updates.
//!
//! Contract: `translate_out` rewrites the *source* of a whole packet from the TUN to the
//! allocated address (and port / echo id through the NAT); `translate_in` rewrites the
//! *destination* of a whole packet from the exit back to the local endpoint. Both only touch
//! bytes inside `view.len`, update checksums incrementally (see `checksum`), and either succeed
//! completely or leave the packet to be dropped.

use std::time::Instant;

use crate::pipeline::checksum::{patch, patch_udp, set16, set_bytes, Delta};
use crate::pipeline::icmp::{self, Side};
use crate::pipeline::mss;
use crate::pipeline::nat::{Dns, NatError, Seen};
use crate::pipeline::packet::{self, is_unroutable, octets, Family, View, L4, PROTO_ICMPV6, TCP_SYN};
use crate::pipeline::{DropReason, Out, Pipeline};

impl From<NatError> for DropReason {
    fn from(e: NatError) -> Self {
        match e {
            NatError::TableFull => DropReason::TableFull,
            NatError::PortsExhausted => DropReason::PortsExhausted,
        }
    }
}

/// Which address a translation replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Src,
    Dst,
}

impl Pipeline {
    pub(super) fn tun_inner(&mut self, pkt: &mut [u8], now: Instant) -> Result<Out, DropReason> {
        if !self.connected {
            return Err(DropReason::NotConnected);
        }
        let view = packet::parse(pkt).map_err(|e| {
            tracing::trace!(error = %e, "malformed packet from the TUN");
            DropReason::MalformedTun
        })?;
        let pkt = pkt.get_mut(..view.len).ok_or(DropReason::MalformedTun)?;
        if is_unroutable(view.src) || is_unroutable(view.dst) {
            return Err(DropReason::Filtered);
        }
        if self.ext_addr(view.fam).is_none() {
            return Err(DropReason::NotConnected);
        }
        if view.frag.is_some() {
            // Reassembled datagrams go out whole whatever their size: the IPR cannot take
            // fragments, and the exit's kernel fragments towards the internet if needed.
            let (n, whole) = self.reassemble(pkt, &view, now, true)?;
            let mut buf = std::mem::take(&mut self.scratch);
            let r = buf.get_mut(..n).ok_or(DropReason::MalformedTun).and_then(|b| self.translate_out(b, &whole, now));
            self.scratch = buf;
            return r.map(|()| Out::ScratchExit(n));
        }
        let mtu = usize::from(self.cfg.mtu);
        let too_big = match view.fam {
            // IPv4 without DF may be fragmented by the exit (RFC 791): forward whole.
            Family::V4 => view.len > mtu && view.df,
            // IPv6 links carry at least 1280 bytes (RFC 8200 §5).
            Family::V6 => view.len > mtu.max(usize::from(super::IPV6_MIN_MTU)),
        };
        if too_big {
            return self.answer_too_big(pkt, &view, now);
        }
        self.translate_out(pkt, &view, now)?;
        Ok(Out::PktExit(view.len))
    }

    fn answer_too_big(&mut self, pkt: &[u8], view: &View, now: Instant) -> Result<Out, DropReason> {
        if matches!(view.l4, L4::IcmpError) || !self.icmp_bucket.take(now) {
            return Err(DropReason::TooBig);
        }
        match icmp::too_big(pkt, view, self.cfg.mtu, &mut self.scratch) {
            Some(n) => {
                self.stats.too_big_sent += 1;
                Ok(Out::ScratchTun(n))
            }
            None => Err(DropReason::TooBig),
        }
    }

    pub(super) fn exit_inner(&mut self, pkt: &mut [u8], now: Instant) -> Result<Out, DropReason> {
        let view = packet::parse(pkt).map_err(|e| {
            tracing::trace!(error = %e, "malformed packet from the exit");
            DropReason::MalformedExit
        })?;
        let pkt = pkt.get_mut(..view.len).ok_or(DropReason::MalformedExit)?;
        let Some(ext) = self.ext_addr(view.fam) else {
            return Err(DropReason::NotConnected);
        };
        if view.dst != ext {
            return Err(DropReason::WrongDst);
        }
        if view.frag.is_some() {
            let (n, whole) = self.reassemble(pkt, &view, now, false)?;
            let mut buf = std::mem::take(&mut self.scratch);
            let r = buf.get_mut(..n).ok_or(DropReason::MalformedExit).and_then(|b| self.translate_in(b, &whole, now));
            self.scratch = buf;
            return r.map(|()| Out::ScratchTun(n));
        }
        self.translate_in(pkt, &view, now)?;
        Ok(Out::PktTun(view.len))
    }

    /// Source NAT of a whole packet from the TUN.
    fn translate_out(&mut self, buf: &mut [u8], view: &View, now: Instant) -> Result<(), DropReason> {
        let ext = self.ext_addr(view.fam).ok_or(DropReason::NotConnected)?;
        let l4 = view.l4_off;
        let mut port_delta = Delta::default();
        match view.l4 {
            L4::Tcp { sport, flags, hdr_len, .. } => {
                if flags & TCP_SYN != 0 {
                    self.clamp_mss(buf, view, hdr_len);
                }
                let p = self.map_out(view, sport, Seen::Tcp(flags), now)?;
                set16(buf, l4, p, &mut port_delta);
            }
            L4::Udp { sport, dport } => {
                let dns = Dns::of(dport, udp_payload(buf, view));
                let p = self.map_out(view, sport, Seen::Udp(dns), now)?;
                set16(buf, l4, p, &mut port_delta);
            }
            L4::Echo { request: true, id } => {
                let p = self.map_out(view, id, Seen::Echo, now)?;
                set16(buf, l4 + 4, p, &mut port_delta);
            }
            L4::IcmpError => return self.error_out(buf, view),
            // Echo replies, other ICMP and other protocols carry nothing to tell hosts apart:
            // only the TUN's own address gets its 1:1 mapping.
            L4::Echo { request: false, .. } | L4::IcmpOther | L4::Other => {
                if view.src != self.local_addr(view.fam) {
                    return Err(DropReason::Unsupported);
                }
            }
        }
        rewrite_addr(buf, view, Which::Src, ext, port_delta);
        Ok(())
    }

    /// Reverse NAT of a whole packet from the exit (its destination is the allocated address).
    fn translate_in(&mut self, buf: &mut [u8], view: &View, now: Instant) -> Result<(), DropReason> {
        let v6 = view.fam == Family::V6;
        let l4 = view.l4_off;
        let mut port_delta = Delta::default();
        let local = match view.l4 {
            L4::Tcp { dport, flags, hdr_len, .. } => {
                let (ip, p) = self.nat.inbound(v6, dport, Seen::Tcp(flags), now).ok_or(DropReason::NoMapping)?;
                set16(buf, l4 + 2, p, &mut port_delta);
                if flags & TCP_SYN != 0 {
                    // SYN-ACK: clamp what the local host will send, too.
                    self.clamp_mss(buf, view, hdr_len);
                }
                ip
            }
            L4::Udp { sport, dport } => {
                let dns = Dns::of(sport, udp_payload(buf, view));
                let (ip, p) = self.nat.inbound(v6, dport, Seen::Udp(dns), now).ok_or(DropReason::NoMapping)?;
                set16(buf, l4 + 2, p, &mut port_delta);
                ip
            }
            L4::Echo { request: false, id } => {
                let (ip, p) = self.nat.inbound(v6, id, Seen::Echo, now).ok_or(DropReason::NoMapping)?;
                set16(buf, l4 + 4, p, &mut port_delta);
                ip
            }
            L4::IcmpError => return self.error_in(buf, view),
            L4::Echo { request: true, .. } | L4::IcmpOther | L4::Other => self.local_addr(view.fam),
        };
        rewrite_addr(buf, view, Which::Dst, local, port_delta);
        Ok(())
    }

    /// Outbound NAT lookup / creation, keeping the NAT counters in step.
    fn map_out(&mut self, view: &View, port: u16, seen: Seen, now: Instant) -> Result<u16, DropReason> {
        let r = self.nat.outbound(view.src, port, seen, now);
        self.nat.copy_counters(&mut self.stats);
        let (ext, created) = r?;
        self.stats.nat_created += u64::from(created);
        Ok(ext)
    }

    fn clamp_mss(&mut self, buf: &mut [u8], view: &View, hdr_len: usize) {
        let max = self.max_mss(view.fam);
        if let Some(tcp) = buf.get_mut(view.l4_off..view.len) {
            if mss::clamp(tcp, hdr_len, max).is_some() {
                self.stats.mss_clamped += 1;
            }
        }
    }

    /// ICMP error from the exit about a packet we sent: the quote's source is ours.
    fn error_in(&mut self, buf: &mut [u8], view: &View) -> Result<(), DropReason> {
        let emb = icmp::embedded(buf, view, Side::Src).ok_or(DropReason::MalformedExit)?;
        if Some(emb.addr) != self.ext_addr(view.fam) {
            return Err(DropReason::NoMapping);
        }
        let (local, port) = match emb.port {
            Some((kind, ext)) => {
                let (ip, p) = self.nat.peek_inbound(kind, view.fam == Family::V6, ext).ok_or(DropReason::NoMapping)?;
                (ip, Some(p))
            }
            None => (self.local_addr(view.fam), None),
        };
        icmp::rewrite_error(buf, view, &emb, local, port, view.dst_off(), local);
        self.stats.icmp_errors_in += 1;
        Ok(())
    }

    /// ICMP error from a local host about a packet it received from the exit: the quote's
    /// destination is the local endpoint.
    fn error_out(&mut self, buf: &mut [u8], view: &View) -> Result<(), DropReason> {
        let ext = self.ext_addr(view.fam).ok_or(DropReason::NotConnected)?;
        let emb = icmp::embedded(buf, view, Side::Dst).ok_or(DropReason::MalformedTun)?;
        let port = match emb.port {
            Some((kind, port)) => Some(self.nat.peek_outbound(kind, emb.addr, port).ok_or(DropReason::NoMapping)?),
            None if emb.addr == self.local_addr(view.fam) => None,
            None => return Err(DropReason::Unsupported),
        };
        icmp::rewrite_error(buf, view, &emb, ext, port, view.src_off(), ext);
        self.stats.icmp_errors_out += 1;
        Ok(())
    }
}

/// The UDP payload of a whole packet (empty if the lengths disagree), for DNS tracking.
fn udp_payload<'a>(buf: &'a [u8], view: &View) -> &'a [u8] {
    buf.get(view.l4_off + 8..view.len).unwrap_or_default()
}

/// Replace the source or destination address and fix the IPv4 header checksum and the
/// transport checksum (pseudo-header for TCP, UDP, ICMPv6; `port_delta` for a changed port/id).
fn rewrite_addr(buf: &mut [u8], view: &View, which: Which, new: std::net::IpAddr, port_delta: Delta) {
    let off = match which {
        Which::Src => view.src_off(),
        Which::Dst => view.dst_off(),
    };
    let (o, n) = octets(new);
    let mut addr_delta = Delta::default();
    set_bytes(buf, off, &o[..n], &mut addr_delta);
    if view.fam == Family::V4 {
        patch(buf, 10, addr_delta);
    }
    let mut l4_delta = port_delta;
    let l4 = view.l4_off;
    match view.l4 {
        L4::Tcp { .. } => {
            l4_delta.add(addr_delta);
            patch(buf, l4 + 16, l4_delta);
        }
        L4::Udp { .. } => {
            l4_delta.add(addr_delta);
            patch_udp(buf, l4 + 6, l4_delta);
        }
        L4::Echo { .. } | L4::IcmpOther | L4::IcmpError => {
            if view.proto == PROTO_ICMPV6 {
                l4_delta.add(addr_delta);
            }
            patch(buf, l4 + 2, l4_delta);
        }
        L4::Other => {}
    }
}
