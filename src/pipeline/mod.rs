//! The sans-IO packet pipeline between the TUN and the IPR session.
//!
//! ```text
//! TUN ──▶ handle_tun:  parse ─▶ reassemble ─▶ too-big? ─▶ MSS clamp ─▶ NAT (src) ─▶ ToExit
//!                                               └─────▶ ICMP too big ─▶ ToTun
//! TUN ◀── handle_exit: parse ─▶ reassemble ─▶ reverse NAT (dst, ICMP error quotes) ─▶ MSS ─▶ ToTun
//! ```
//!
//! Contract:
//! - No I/O, no clock: time comes in as `now`. One `Pipeline` is owned by one task.
//! - Every input packet ends in exactly one [`Action`]; every `Drop` increments one counter in
//!   [`Stats`] and logs at `trace` level. No input can make it panic (checked parsing in
//!   `packet`, bounds-checked accessors everywhere else; see the property test
//!   `tests_icmp::never_panics_on_random_or_mutated_input` and the fuzz target).
//! - The TUN side uses stable local addresses ([`Config::local_v4`], [`Config::local_v6`]); the
//!   exit side uses the addresses the IPR allocated ([`Pipeline::set_allocated`]), which may
//!   change on reconnect. Sources are rewritten on the way out, destinations on the way back;
//!   remote addresses are never touched. TCP/UDP ports and ICMP echo ids are mapped through
//!   bounded NAT tables (`nat`), so hosts behind the TUN (forwarded subnets, other namespaces)
//!   share the allocated address. Other protocols get a 1:1 mapping for the TUN's own address.
//! - The uplink only ever carries whole datagrams (the IPR drops fragments,
//!   docs/ipr-protocol.md §3.4): fragments are reassembled (`reassembly`), and an oversized whole
//!   packet is either answered with an ICMP "too big" (IPv4 DF, IPv6) or forwarded whole (IPv4
//!   without DF, the exit fragments it).
//! - The established-flow path rewrites in place and does not allocate; reassembly and generated
//!   ICMP use one reusable scratch buffer.

/// The smallest MTU of a link that carries IPv6 (RFC 8200 §5): the one floor every layer uses
/// (the pipeline's too-big replies, the exit's MTU, `--mtu`).
pub const IPV6_MIN_MTU: u16 = 1280;

mod checksum;
mod icmp;
mod mss;
mod nat;
mod packet;
mod reassembly;
mod stats;
mod translate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_frag;
#[cfg(test)]
mod tests_icmp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::pipeline::icmp::TokenBucket;
use crate::pipeline::nat::Nat;
use crate::pipeline::packet::{Family, View};
use crate::pipeline::reassembly::{FragError, Push, Reassembler};
pub use crate::pipeline::stats::Stats;

/// How often NAT and reassembly tables are swept while they hold anything. The shortest timeout
/// is the 2 s of an answered DNS mapping (see [`Limits::default`]), which the sweep ends within
/// 3 s; the others are tens of seconds and more, so a second's lateness is noise. Room is never
/// waiting for the sweep: a new NAT flow expires its own table first, and evicts when full.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Static configuration of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The TUN's own IPv4 address (stable across reconnects).
    pub local_v4: Ipv4Addr,
    /// The TUN's own IPv6 address (stable across reconnects).
    pub local_v6: Ipv6Addr,
    /// Tunnel MTU: the largest IP packet the exit takes whole (docs/ipr-protocol.md §3.4).
    pub mtu: u16,
    /// Bounds of the NAT and reassembly tables and of generated ICMP.
    pub limits: Limits,
}

/// Bounds of every table; see [`Limits::default`] for the reasoning behind each value.
///
/// A NAT table never refuses a new flow for lack of room (only a table of 0 entries does): one
/// local source address holds at most half of a table and then recycles its own least valuable,
/// longest idle mapping, and a full table evicts its least valuable, longest idle one (answered
/// DNS, then unanswered or transitory, then two-way or established; `nat` module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TCP mappings held at most (at most half of them per local source address).
    pub nat_tcp_entries: usize,
    /// UDP mappings held at most (at most half of them per local source address).
    pub nat_udp_entries: usize,
    /// ICMP echo-id mappings held at most (at most half of them per local source address).
    pub nat_icmp_entries: usize,
    /// Idle timeout of a TCP mapping whose SYN was answered.
    pub tcp_established_timeout: Duration,
    /// Idle timeout of a TCP mapping nothing has answered yet (a SYN, or a segment of a
    /// connection whose mapping is gone), or one that saw a FIN or RST.
    pub tcp_transitory_timeout: Duration,
    /// Idle timeout of a UDP mapping that has seen a reply (two-way).
    pub udp_timeout: Duration,
    /// Idle timeout of a UDP mapping nothing has answered yet, and of a DNS mapping with a
    /// query outstanding.
    pub udp_unanswered_timeout: Duration,
    /// How long a UDP mapping that carried only DNS (queries to remote port 53, their answers
    /// back) lives after the last of its outstanding queries was answered.
    pub dns_answered_timeout: Duration,
    /// Idle timeout of an ICMP echo mapping.
    pub icmp_timeout: Duration,
    /// Reassembly memory cap per direction, in bytes.
    pub frag_memory: usize,
    /// Concurrent partial datagrams per direction.
    pub frag_datagrams: usize,
    /// How long a partial datagram waits for its missing fragments, from the first one.
    pub frag_timeout: Duration,
    /// Generated ICMP ("too big"): sustained rate and burst.
    pub icmp_rate_per_sec: u32,
    /// Generated ICMP messages allowed back to back above the sustained rate.
    pub icmp_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 16384 flows each is far beyond one desktop (a busy browser holds a few hundred
            // connections) and reserves ~6 MiB per table, paged in as used (`nat` module doc);
            // ICMP ids are short-lived pings. Half a table per source: 8192 flows, so a source
            // recycles its own mappings only beyond 273 new unanswered UDP flows a second.
            nat_tcp_entries: 16384,
            nat_udp_entries: 16384,
            nat_icmp_entries: 4096,
            // RFC 5382 REQ-5: established idle timeout >= 2 h 4 min; transitory >= 4 min.
            tcp_established_timeout: Duration::from_secs(2 * 3600 + 4 * 60),
            tcp_transitory_timeout: Duration::from_secs(4 * 60),
            // RFC 4787 REQ-5: UDP mapping timer >= 2 min, 5 min recommended; we keep the
            // recommendation for anything that was answered (eviction, not a short timer, keeps
            // two-way flows from crowding out new ones).
            udp_timeout: Duration::from_secs(5 * 60),
            // Linux's nf_conntrack_udp_timeout: what nobody answers in 30 s is a failed lookup
            // or a probe. Below REQ-5's 2 min on purpose (`nat` module doc): at 5 min, 55 fresh
            // ports a second (one DNS lookup each) filled 16384 entries.
            udp_unanswered_timeout: Duration::from_secs(30),
            // Covers glibc's single-request mode (AAAA sent once the A answer is in, from the
            // same port) and late duplicates; REQ-5a allows per-port timers below 1024.
            dns_answered_timeout: Duration::from_secs(2),
            // RFC 5508 REQ-1: ICMP query mapping timeout >= 60 s.
            icmp_timeout: Duration::from_secs(60),
            // Linux ipfrag_high_thresh is 4 MiB: 64 maximum-size datagrams in flight.
            frag_memory: 4 * 1024 * 1024,
            frag_datagrams: 256,
            // Linux ipfrag_time (30 s); RFC 791 suggests a 15 s initial timer, RFC 8200 §4.5
            // allows at most 60 s.
            frag_timeout: Duration::from_secs(30),
            // Linux icmp_msgs_burst is 50; 100/s is plenty to teach the kernel one PMTU per
            // destination while keeping a misbehaving sender from looping on us.
            icmp_rate_per_sec: 100,
            icmp_burst: 50,
        }
    }
}

/// What the caller does with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send these bytes to the exit.
    ToExit(&'a [u8]),
    /// Write these bytes into the TUN.
    ToTun(&'a [u8]),
    /// Consumed (fragment stored) or dropped; counted in [`Stats`].
    Drop,
}

/// Why a packet was not forwarded (each maps to one [`Stats`] counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DropReason {
    #[error("malformed packet from the TUN")]
    MalformedTun,
    #[error("malformed packet from the exit")]
    MalformedExit,
    #[error("no allocated address")]
    NotConnected,
    #[error("unroutable source or destination")]
    Filtered,
    #[error("protocol without ports from a foreign source")]
    Unsupported,
    #[error("NAT table of 0 entries")]
    TableFull,
    #[error("no free external port")]
    PortsExhausted,
    #[error("no NAT mapping")]
    NoMapping,
    #[error("destination is not the allocated address")]
    WrongDst,
    #[error("fragment stored (from the TUN)")]
    FragStoredTun,
    #[error("fragment stored (from the exit)")]
    FragStoredExit,
    #[error(transparent)]
    Frag(#[from] FragError),
    #[error("too big, no ICMP sent")]
    TooBig,
}

/// Internal outcome before it is turned into an [`Action`] (keeps the borrow of `self` and of
/// the packet apart).
enum Out {
    /// The caller's packet, rewritten, this long, towards the exit or the TUN.
    PktExit(usize),
    PktTun(usize),
    /// `scratch[..n]`, towards the exit or the TUN.
    ScratchExit(usize),
    ScratchTun(usize),
}

/// The packet pipeline of one tunnel: parsing, NAT, reassembly, MSS clamp and too-big replies.
pub struct Pipeline {
    cfg: Config,
    /// Allocated addresses, kept across `clear_allocated` so that reconnecting to the same
    /// addresses keeps the NAT table.
    alloc: Option<(Ipv4Addr, Option<Ipv6Addr>)>,
    connected: bool,
    nat: Nat,
    reasm_tun: Reassembler,
    reasm_exit: Reassembler,
    icmp_bucket: TokenBucket,
    /// Reassembled datagrams and generated ICMP; 64 KiB, allocated once.
    scratch: Vec<u8>,
    stats: Stats,
    /// When the tables are next swept (see [`Pipeline::poll_timeout`]).
    next_sweep: Option<Instant>,
}

impl Pipeline {
    /// A pipeline with random NAT port choice.
    pub fn new(cfg: Config) -> Self {
        Self::with_rng(cfg, StdRng::from_entropy())
    }

    /// Deterministic port choice, for tests and fuzzing.
    pub fn with_seed(cfg: Config, seed: u64) -> Self {
        Self::with_rng(cfg, StdRng::seed_from_u64(seed))
    }

    fn with_rng(cfg: Config, rng: StdRng) -> Self {
        let l = cfg.limits;
        Pipeline {
            cfg,
            alloc: None,
            connected: false,
            nat: Nat::new(l, rng),
            reasm_tun: Reassembler::new(l),
            reasm_exit: Reassembler::new(l),
            icmp_bucket: TokenBucket::new(l.icmp_rate_per_sec, l.icmp_burst),
            scratch: Vec::with_capacity(65535),
            stats: Stats::default(),
            next_sweep: None,
        }
    }

    /// IPs the exit allocated. Changing them clears the NAT table (every mapping refers to the
    /// old external address); setting the same ones again after a reconnect keeps it.
    pub fn set_allocated(&mut self, v4: Ipv4Addr, v6: Option<Ipv6Addr>) {
        if self.alloc != Some((v4, v6)) {
            self.nat.clear();
            self.reasm_exit.clear();
        }
        self.alloc = Some((v4, v6));
        self.connected = true;
    }

    /// Not connected: `handle_tun` drops everything (counted `not_connected`).
    pub fn clear_allocated(&mut self) {
        self.connected = false;
    }

    /// Change the tunnel MTU, e.g. to the one a new allocation announced.
    pub fn set_mtu(&mut self, mtu: u16) {
        self.cfg.mtu = mtu;
    }

    /// The tunnel MTU: the largest IP packet the exit takes whole.
    pub fn mtu(&self) -> u16 {
        self.cfg.mtu
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// When NAT entries or reassembly state may next be due to expire: [`SWEEP_INTERVAL`]
    /// after the last sweep while any table holds something, `None` when all are empty (an
    /// idle tunnel needs no timer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Expires NAT entries and stale reassembly state if a sweep is due, at most once per
    /// [`SWEEP_INTERVAL`]: O(expired) for the NAT, O(table size) for reassembly.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| t > now) {
            return;
        }
        self.nat.expire(now);
        self.nat.copy_counters(&mut self.stats);
        self.reasm_tun.expire(now, &mut self.stats);
        self.reasm_exit.expire(now, &mut self.stats);
        let held = self.nat_entries() != (0, 0, 0) || self.reassembly_datagrams() > 0;
        self.next_sweep = held.then(|| now + SWEEP_INTERVAL);
    }

    /// One packet read from the TUN; `pkt` may be rewritten in place.
    pub fn handle_tun<'a>(&'a mut self, pkt: &'a mut [u8], now: Instant) -> Action<'a> {
        self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
        self.stats.tun_rx_packets += 1;
        self.stats.tun_rx_bytes += pkt.len() as u64;
        let r = self.tun_inner(pkt, now);
        self.finish(r, pkt)
    }

    /// One IP packet from the exit; `pkt` may be rewritten in place.
    pub fn handle_exit<'a>(&'a mut self, pkt: &'a mut [u8], now: Instant) -> Action<'a> {
        self.next_sweep.get_or_insert(now + SWEEP_INTERVAL);
        self.stats.exit_rx_packets += 1;
        self.stats.exit_rx_bytes += pkt.len() as u64;
        let r = self.exit_inner(pkt, now);
        self.finish(r, pkt)
    }

    fn finish<'a>(&'a mut self, r: Result<Out, DropReason>, pkt: &'a [u8]) -> Action<'a> {
        let (to_exit, bytes) = match r {
            Ok(Out::PktExit(n)) => (true, pkt.get(..n).unwrap_or_default()),
            Ok(Out::PktTun(n)) => (false, pkt.get(..n).unwrap_or_default()),
            Ok(Out::ScratchExit(n)) => (true, self.scratch.get(..n).unwrap_or_default()),
            Ok(Out::ScratchTun(n)) => (false, self.scratch.get(..n).unwrap_or_default()),
            Err(reason) => {
                self.count(reason);
                return Action::Drop;
            }
        };
        if to_exit {
            self.stats.exit_tx_packets += 1;
            self.stats.exit_tx_bytes += bytes.len() as u64;
            Action::ToExit(bytes)
        } else {
            self.stats.tun_tx_packets += 1;
            self.stats.tun_tx_bytes += bytes.len() as u64;
            Action::ToTun(bytes)
        }
    }

    fn count(&mut self, reason: DropReason) {
        tracing::trace!(%reason, "pipeline drop");
        let s = &mut self.stats;
        let c = match reason {
            DropReason::MalformedTun => &mut s.malformed_tun,
            DropReason::MalformedExit => &mut s.malformed_exit,
            DropReason::NotConnected => &mut s.not_connected,
            DropReason::Filtered => &mut s.filtered_tun,
            DropReason::Unsupported => &mut s.unsupported_tun,
            DropReason::TableFull => &mut s.nat_table_full,
            DropReason::PortsExhausted => &mut s.nat_ports_exhausted,
            DropReason::NoMapping => &mut s.no_mapping,
            DropReason::WrongDst => &mut s.wrong_dst_exit,
            DropReason::FragStoredTun => &mut s.frag_stored_tun,
            DropReason::FragStoredExit => &mut s.frag_stored_exit,
            DropReason::Frag(FragError::Invalid) => &mut s.frag_invalid,
            DropReason::Frag(FragError::Overlap) => &mut s.frag_overlap,
            DropReason::Frag(FragError::Memory) => &mut s.frag_memory,
            DropReason::TooBig => &mut s.too_big_dropped,
        };
        *c += 1;
    }

    /// External (allocated) address for `fam`, if connected.
    fn ext_addr(&self, fam: Family) -> Option<IpAddr> {
        match (self.connected, self.alloc, fam) {
            (true, Some((v4, _)), Family::V4) => Some(IpAddr::V4(v4)),
            (true, Some((_, Some(v6))), Family::V6) => Some(IpAddr::V6(v6)),
            _ => None,
        }
    }

    /// The TUN's own address for `fam`.
    fn local_addr(&self, fam: Family) -> IpAddr {
        match fam {
            Family::V4 => IpAddr::V4(self.cfg.local_v4),
            Family::V6 => IpAddr::V6(self.cfg.local_v6),
        }
    }

    /// Largest TCP MSS that keeps a segment within the tunnel MTU (see `mss`).
    fn max_mss(&self, fam: Family) -> u16 {
        match fam {
            Family::V4 => self.cfg.mtu.saturating_sub(40),
            Family::V6 => self.cfg.mtu.saturating_sub(60),
        }
    }

    /// Fragment handling shared by both directions: store, or reassemble into `scratch` and
    /// return the whole datagram's view.
    fn reassemble(
        &mut self,
        pkt: &[u8],
        view: &View,
        now: Instant,
        from_tun: bool,
    ) -> Result<(usize, View), DropReason> {
        let r = if from_tun {
            self.reasm_tun.push(pkt, view, now, &mut self.scratch, &mut self.stats)
        } else {
            self.reasm_exit.push(pkt, view, now, &mut self.scratch, &mut self.stats)
        };
        match r? {
            Push::Stored if from_tun => Err(DropReason::FragStoredTun),
            Push::Stored => Err(DropReason::FragStoredExit),
            Push::Complete(n) => {
                let malformed = if from_tun { DropReason::MalformedTun } else { DropReason::MalformedExit };
                let whole = packet::parse(self.scratch.get(..n).unwrap_or_default()).map_err(|_| malformed)?;
                // A second fragment header inside a reassembled datagram is not legitimate.
                if whole.frag.is_some() {
                    return Err(malformed);
                }
                if from_tun {
                    self.stats.reassembled_tun += 1;
                } else {
                    self.stats.reassembled_exit += 1;
                }
                Ok((n, whole))
            }
        }
    }
}

/// Memory currently held by reassembly (both directions), for status reporting and tests.
impl Pipeline {
    /// Bytes held by partial datagrams.
    pub fn reassembly_memory(&self) -> usize {
        self.reasm_tun.memory() + self.reasm_exit.memory()
    }

    /// Partial datagrams held.
    pub fn reassembly_datagrams(&self) -> usize {
        self.reasm_tun.datagrams() + self.reasm_exit.datagrams()
    }

    /// NAT mappings currently held: (TCP, UDP, ICMP).
    pub fn nat_entries(&self) -> (usize, usize, usize) {
        use crate::pipeline::nat::Kind;
        (self.nat.len(Kind::Tcp), self.nat.len(Kind::Udp), self.nat.len(Kind::Icmp))
    }
}
