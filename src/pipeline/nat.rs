//! NAT tables: (protocol, local address, local port or echo id) ⇄ external port.
//!
//! Contract: one external address per family (the address the exit allocated), so an inbound
//! packet is identified by (kind, family, external port) alone. Mappings are endpoint-independent
//! (RFC 4787 REQ-1, RFC 5382 REQ-1): the remote endpoint is not part of the key, which keeps the
//! table small and lets a UDP socket talk to many peers through one mapping.
//!
//! Ports are preserved when free (RFC 4787 REQ-3 "port preservation" is only a MAY, but it makes
//! traces readable and costs nothing); otherwise up to [`PORT_PROBES`] random ports are tried.
//! Each kind has its own bounded table ([`crate::pipeline::Limits`]); when full, idle entries are
//! expired (at most once per [`SWEEP_INTERVAL`], so a flood of new flows cannot turn every packet
//! into a full-table scan) and then the new flow is refused.
//!
//! Lookups and refreshes of existing mappings do not allocate: both maps are created with their
//! final capacity.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use crate::pipeline::packet::{TCP_FIN, TCP_RST, TCP_SYN};
use crate::pipeline::Limits;

/// Random ports tried when the original port is taken. With a table at most 25 % full of one
/// kind (16384 of 64512 ports) the chance that 32 probes all fail is 0.25^32 ≈ 5e-20.
const PORT_PROBES: usize = 32;
/// Minimum time between two forced sweeps of a full table.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Tcp = 0,
    Udp = 1,
    Icmp = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NatError {
    #[error("NAT table full")]
    TableFull,
    #[error("no free external port")]
    PortsExhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OutKey {
    kind: Kind,
    local: IpAddr,
    port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct InKey {
    kind: Kind,
    v6: bool,
    port: u16,
}

/// TCP mapping state, only used to pick the idle timeout (RFC 5382 REQ-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpState {
    /// Created by a SYN, no answer seen yet: transitory.
    Opening,
    Established,
    /// FIN or RST seen: transitory.
    Closing,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ext: u16,
    last: Instant,
    tcp: TcpState,
}

pub(crate) struct Nat {
    out: HashMap<OutKey, Entry>,
    inb: HashMap<InKey, OutKey>,
    count: [usize; 3],
    limits: Limits,
    rng: StdRng,
    last_sweep: Option<Instant>,
    /// Mappings removed by idle expiry since creation (also by sweeps forced by a full table).
    expired_total: u64,
}

impl Nat {
    pub(crate) fn new(limits: Limits, rng: StdRng) -> Self {
        let cap = limits.nat_tcp_entries + limits.nat_udp_entries + limits.nat_icmp_entries;
        Nat {
            out: HashMap::with_capacity(cap),
            inb: HashMap::with_capacity(cap),
            count: [0; 3],
            limits,
            rng,
            last_sweep: None,
            expired_total: 0,
        }
    }

    fn max(&self, kind: Kind) -> usize {
        match kind {
            Kind::Tcp => self.limits.nat_tcp_entries,
            Kind::Udp => self.limits.nat_udp_entries,
            Kind::Icmp => self.limits.nat_icmp_entries,
        }
    }

    pub(crate) fn len(&self, kind: Kind) -> usize {
        self.count[kind as usize]
    }

    /// Drop every mapping (the allocated address changed, so all of them are meaningless).
    pub(crate) fn clear(&mut self) {
        self.out.clear();
        self.inb.clear();
        self.count = [0; 3];
    }

    /// External port for an outbound packet, creating the mapping if needed. `tcp_flags` is 0
    /// for non-TCP. Returns `(external port, created)`.
    pub(crate) fn outbound(
        &mut self,
        kind: Kind,
        local: IpAddr,
        port: u16,
        tcp_flags: u8,
        now: Instant,
    ) -> Result<(u16, bool), NatError> {
        let key = OutKey { kind, local, port };
        if let Some(e) = self.out.get_mut(&key) {
            e.last = now;
            e.tcp = next_state(e.tcp, tcp_flags);
            return Ok((e.ext, false));
        }
        if self.count[kind as usize] >= self.max(kind) {
            let due = self.last_sweep.is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_INTERVAL);
            if due {
                self.expire(now);
            }
            if self.count[kind as usize] >= self.max(kind) {
                return Err(NatError::TableFull);
            }
        }
        let v6 = local.is_ipv6();
        let ext = self.pick_port(kind, v6, port).ok_or(NatError::PortsExhausted)?;
        let tcp = if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            TcpState::Closing
        } else if tcp_flags & TCP_SYN != 0 {
            TcpState::Opening
        } else {
            TcpState::Established
        };
        self.out.insert(key, Entry { ext, last: now, tcp });
        self.inb.insert(InKey { kind, v6, port: ext }, key);
        self.count[kind as usize] += 1;
        Ok((ext, true))
    }

    fn pick_port(&mut self, kind: Kind, v6: bool, want: u16) -> Option<u16> {
        let free = |p: u16, inb: &HashMap<InKey, OutKey>| !inb.contains_key(&InKey { kind, v6, port: p });
        if free(want, &self.inb) {
            return Some(want);
        }
        // Keep privileged source ports privileged (RFC 4787 REQ-3 (a) spirit), echo ids may be
        // anything.
        let range = match kind {
            Kind::Icmp => 0..=u16::MAX,
            _ if want < 1024 => 1..=1023,
            _ => 1024..=u16::MAX,
        };
        (0..PORT_PROBES).map(|_| self.rng.gen_range(range.clone())).find(|&p| free(p, &self.inb))
    }

    /// Reverse lookup for an inbound packet, refreshing the mapping. Inbound refresh is allowed
    /// by RFC 4787 REQ-6 and needed for receive-mostly flows (downloads, streams).
    pub(crate) fn inbound(
        &mut self,
        kind: Kind,
        v6: bool,
        ext: u16,
        tcp_flags: u8,
        now: Instant,
    ) -> Option<(IpAddr, u16)> {
        let key = *self.inb.get(&InKey { kind, v6, port: ext })?;
        let e = self.out.get_mut(&key)?;
        e.last = now;
        e.tcp = match (e.tcp, kind) {
            // Any answer to our SYN makes the connection established (unless it is a RST).
            (TcpState::Opening, Kind::Tcp) if tcp_flags & (TCP_FIN | TCP_RST) == 0 => TcpState::Established,
            (s, _) => next_state(s, tcp_flags),
        };
        Some((key.local, key.port))
    }

    /// Reverse lookup without refresh (for ICMP errors, which must not keep a mapping alive).
    pub(crate) fn peek_inbound(&self, kind: Kind, v6: bool, ext: u16) -> Option<(IpAddr, u16)> {
        self.inb.get(&InKey { kind, v6, port: ext }).map(|k| (k.local, k.port))
    }

    /// Forward lookup without creating or refreshing.
    pub(crate) fn peek_outbound(&self, kind: Kind, local: IpAddr, port: u16) -> Option<u16> {
        self.out.get(&OutKey { kind, local, port }).map(|e| e.ext)
    }

    fn timeout(&self, kind: Kind, tcp: TcpState) -> Duration {
        match (kind, tcp) {
            (Kind::Tcp, TcpState::Established) => self.limits.tcp_established_timeout,
            (Kind::Tcp, _) => self.limits.tcp_transitory_timeout,
            (Kind::Udp, _) => self.limits.udp_timeout,
            (Kind::Icmp, _) => self.limits.icmp_timeout,
        }
    }

    /// Remove idle mappings; returns how many were removed. O(entries), no allocation.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        self.last_sweep = Some(now);
        let before = self.out.len();
        let limits = (
            self.timeout(Kind::Tcp, TcpState::Established),
            self.timeout(Kind::Tcp, TcpState::Closing),
            self.limits.udp_timeout,
            self.limits.icmp_timeout,
        );
        let (inb, count) = (&mut self.inb, &mut self.count);
        self.out.retain(|k, e| {
            let t = match (k.kind, e.tcp) {
                (Kind::Tcp, TcpState::Established) => limits.0,
                (Kind::Tcp, _) => limits.1,
                (Kind::Udp, _) => limits.2,
                (Kind::Icmp, _) => limits.3,
            };
            let keep = now.saturating_duration_since(e.last) < t;
            if !keep {
                inb.remove(&InKey { kind: k.kind, v6: k.local.is_ipv6(), port: e.ext });
                count[k.kind as usize] -= 1;
            }
            keep
        });
        let removed = before - self.out.len();
        self.expired_total += removed as u64;
        removed
    }

    pub(crate) fn expired_total(&self) -> u64 {
        self.expired_total
    }
}

fn next_state(s: TcpState, flags: u8) -> TcpState {
    if flags & (TCP_FIN | TCP_RST) != 0 {
        TcpState::Closing
    } else if flags & TCP_SYN != 0 && s == TcpState::Closing {
        // Port reuse after a closed connection (RFC 5382 REQ-5 allows reuse on a new SYN).
        TcpState::Opening
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::net::Ipv4Addr;

    fn nat(limits: Limits) -> Nat {
        Nat::new(limits, StdRng::seed_from_u64(7))
    }

    #[test]
    fn preserves_then_remaps_ports() {
        let mut n = nat(Limits::default());
        let t = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(100, 86, 0, 2));
        let b = IpAddr::V4(Ipv4Addr::new(192, 168, 7, 9));
        assert_eq!(n.outbound(Kind::Udp, a, 5000, 0, t), Ok((5000, true)));
        assert_eq!(n.outbound(Kind::Udp, a, 5000, 0, t), Ok((5000, false)));
        let (p, created) = n.outbound(Kind::Udp, b, 5000, 0, t).unwrap();
        assert!(created && p != 5000 && p >= 1024);
        assert_eq!(n.inbound(Kind::Udp, false, p, 0, t), Some((b, 5000)));
        assert_eq!(n.inbound(Kind::Tcp, false, p, 0, t), None);
        assert_eq!(n.inbound(Kind::Udp, true, p, 0, t), None);
    }

    #[test]
    fn full_table_expires_then_refuses() {
        let limits = Limits { nat_udp_entries: 2, ..Limits::default() };
        let mut n = nat(limits);
        let t = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(100, 86, 0, 2));
        n.outbound(Kind::Udp, a, 1, 0, t).unwrap();
        n.outbound(Kind::Udp, a, 2, 0, t).unwrap();
        assert_eq!(n.outbound(Kind::Udp, a, 3, 0, t), Err(NatError::TableFull));
        // TCP has its own table.
        assert!(n.outbound(Kind::Tcp, a, 3, TCP_SYN, t).is_ok());
        let later = t + limits.udp_timeout + Duration::from_secs(1);
        assert!(n.outbound(Kind::Udp, a, 3, 0, later).is_ok());
        assert_eq!(n.len(Kind::Udp), 1);
    }

    #[test]
    fn tcp_timeouts_follow_state() {
        let l = Limits::default();
        let mut n = nat(l);
        let t = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::new(100, 86, 0, 2));
        n.outbound(Kind::Tcp, a, 40000, TCP_SYN, t).unwrap();
        n.outbound(Kind::Tcp, a, 40001, TCP_SYN, t).unwrap();
        // Answer to the second connection: established.
        n.inbound(Kind::Tcp, false, 40001, TCP_SYN | crate::pipeline::packet::TCP_ACK, t).unwrap();
        assert_eq!(n.expire(t + l.tcp_transitory_timeout), 1);
        assert_eq!(n.peek_inbound(Kind::Tcp, false, 40001), Some((a, 40001)));
        n.outbound(Kind::Tcp, a, 40001, TCP_FIN, t).unwrap();
        assert_eq!(n.expire(t + l.tcp_transitory_timeout), 1);
        assert_eq!(n.len(Kind::Tcp), 0);
    }
}
