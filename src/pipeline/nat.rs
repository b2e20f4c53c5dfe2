//! NAT tables: (protocol, local address, local port or echo id) ⇄ external port.
//!
//! Contract: one external address per family (the address the exit allocated), so an inbound
//! packet is identified by (kind, family, external port) alone. Mappings are endpoint-independent
//! (RFC 4787 REQ-1, RFC 5382 REQ-1): the remote endpoint is not part of the key, which keeps the
//! table small and lets a UDP socket talk to many peers through one mapping.
//!
//! Ports are preserved when free (RFC 4787 REQ-3 "port preservation" is only a MAY, but it makes
//! traces readable and costs nothing); otherwise up to [`PORT_PROBES`] random ports are tried.
//!
//! Expiry. Every mapping is in one of three classes, by what it has seen; each class has its own
//! idle timeout per kind ([`crate::pipeline::Limits`]), refreshed by packets both ways (RFC 4787
//! REQ-6 allows the inbound refresh; receive-mostly flows need it):
//! - *assured*: a TCP connection whose SYN was answered (2 h 4 min, RFC 5382 REQ-5), a UDP
//!   mapping that has seen a reply (5 min, RFC 4787 REQ-5's recommended default), an answered
//!   echo id (60 s, RFC 5508 REQ-1);
//! - *transitory*: TCP before the answer or after FIN/RST (4 min, RFC 5382 REQ-5), UDP nobody
//!   has answered yet (30 s, Linux's `nf_conntrack_udp_timeout`), an unanswered echo id (60 s);
//! - *DNS done*: a UDP mapping that carried nothing but DNS (queries to remote port 53, answers
//!   back) once every query it sent has been answered (2 s).
//!
//! 30 s for unanswered UDP is below RFC 4787 REQ-5's 2 minutes, as in Linux's conntrack: a
//! mapping nobody answered within 30 s is a failed lookup or a probe, and that is what a flood
//! is made of; a flow that is answered gets the RFC's 5 minutes, and one that keeps sending
//! keeps its mapping either way. DNS mappings may be shorter still (REQ-5a allows per-service
//! timers for well-known destination ports): glibc opens a fresh socket, hence a fresh port,
//! for every lookup, so without this each lookup would hold a mapping long after its answer.
//! glibc sends the A and AAAA queries of one lookup in parallel from that one port, so a
//! mapping tracks its outstanding queries by transaction id ([`Pending`]): answering A alone
//! does not end it, and neither does a duplicated answer. The 2 s after the last answer cover
//! glibc's `single-request` mode (resolv.conf(5)), which sends AAAA from the same port only once
//! the A answer is in, and late duplicates. Anything else on the mapping (another remote port,
//! a non-DNS datagram, more ids in flight than tracked) puts it under the plain UDP rules, which
//! never end it sooner.
//!
//! Bounds. A table holds at most its `Limits` entries, and one local source address (the TUN's
//! own, a host of a forwarded subnet, another namespace) at most half of them, so two sources
//! always fit: the host and one container can never push each other out. A new flow is never
//! refused for lack of room (only a table of 0 entries refuses):
//! - from a source at its share, it replaces that source's own least valuable, longest idle
//!   mapping (counted `nat_recycled`): a flooding source churns through its own half and never
//!   touches another source's mappings;
//! - otherwise, into a full table (which takes three sources or more), it replaces the table's
//!   least valuable, longest idle mapping, whoever holds it (counted `nat_evicted`).
//!
//! "Least valuable": DNS done, then transitory, then assured; within a class, the longest idle.
//! Due mappings of the table are expired first, so nothing live goes while a dead one is left.
//!
//! Cost. A table is a slab of slots preallocated to its capacity, threaded by intrusive doubly
//! linked lists, one per class through the whole table and one per class through each source,
//! in order of last use. Lookup, refresh (move to a list's tail), creation and eviction are O(1);
//! expiry pops list heads, O(expired), so a new flow can afford to expire its table first. After
//! [`Nat::new`] nothing allocates: the slab, the free lists and the per-port inbound index are
//! sized to capacity, and the hash maps to twice their most entries (hashbrown rehashes in place
//! below half load instead of growing). A 16384-entry table reserves about 6 MiB of address
//! space, paged in as it fills: 1.25 MiB of 80-byte slots, 1.6 MiB for each of the outbound and
//! the source map (64 Ki buckets of 24 bytes; the source map and the 0.9 MiB source slab are
//! sized for one source per mapping, and stay untouched with a few), the 512 KiB inbound index.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use crate::pipeline::packet::{TCP_FIN, TCP_RST, TCP_SYN};
use crate::pipeline::stats::Stats;
use crate::pipeline::Limits;

/// Random ports tried when the original port is taken. With a table at most 25 % full of one
/// kind (16384 of 64512 ports) the chance that 32 probes all fail is 0.25^32 ≈ 5e-20.
const PORT_PROBES: usize = 32;
/// The DNS server port (RFC 1035 §4.2.1).
const DNS_PORT: u16 = 53;
/// A DNS message starts with a 12-byte header (RFC 1035 §4.1.1); anything shorter is not one.
const DNS_HEADER: usize = 12;
/// Distinct DNS transaction ids tracked per mapping. glibc has 2 in flight per lookup (A and
/// AAAA); musl sends each query to every nameserver at once with the same id, which counts as
/// copies of one id, not as more ids. 4 is twice what either needs.
const DNS_PENDING: usize = 4;
/// One external port per family and port number: the most any table can hold.
const EXT_PORTS: usize = 2 << 16;
/// The end of a list.
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Tcp = 0,
    Udp = 1,
    Icmp = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NatError {
    /// Only a table limited to 0 entries: a full one evicts.
    #[error("NAT table full")]
    TableFull,
    #[error("no free external port")]
    PortsExhausted,
}

/// What a packet tells the NAT beyond its key; also names the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A TCP segment with these flags.
    Tcp(u8),
    Udp(Dns),
    /// An ICMP(v6) echo request (out) or reply (in).
    Echo,
}

impl Seen {
    fn kind(self) -> Kind {
        match self {
            Seen::Tcp(_) => Kind::Tcp,
            Seen::Udp(_) => Kind::Udp,
            Seen::Echo => Kind::Icmp,
        }
    }
}

/// A UDP datagram as DNS tracking sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dns {
    /// A query (QR = 0) to or from remote port 53, with its transaction id.
    Query(u16),
    /// An answer (QR = 1) to or from remote port 53, with its transaction id.
    Answer(u16),
    /// Not DNS: another remote port, or too short for a DNS header.
    Other,
}

impl Dns {
    /// Classifies a UDP datagram: `remote_port` is the far end's port (the destination going
    /// out, the source coming back), `payload` the bytes after the UDP header.
    pub(crate) fn of(remote_port: u16, payload: &[u8]) -> Dns {
        match *payload {
            [id0, id1, flags, ..] if remote_port == DNS_PORT && payload.len() >= DNS_HEADER => {
                let id = u16::from_be_bytes([id0, id1]);
                // QR is the top bit of the third byte (RFC 1035 §4.1.1).
                if flags & 0x80 == 0 {
                    Dns::Query(id)
                } else {
                    Dns::Answer(id)
                }
            }
            _ => Dns::Other,
        }
    }
}

/// DNS queries sent through a mapping and not answered yet: (transaction id, copies sent), a
/// count of 0 marking a free pair. Counting copies makes a retransmitted query (same id) wait
/// for both answers; an answer whose id is not pending (a duplicate) changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Pending([(u16, u8); DNS_PENDING]);

impl Pending {
    fn one(id: u16) -> Pending {
        let mut p = Pending::default();
        p.0[0] = (id, 1);
        p
    }

    /// Records a query; false when it cannot be tracked (all pairs taken, or 255 copies).
    fn add(&mut self, id: u16) -> bool {
        if let Some(pair) = self.0.iter_mut().find(|(i, n)| *n > 0 && *i == id) {
            return match pair.1.checked_add(1) {
                Some(n) => {
                    pair.1 = n;
                    true
                }
                None => false,
            };
        }
        match self.0.iter_mut().find(|(_, n)| *n == 0) {
            Some(free) => {
                *free = (id, 1);
                true
            }
            None => false,
        }
    }

    fn answer(&mut self, id: u16) {
        if let Some(pair) = self.0.iter_mut().find(|(i, n)| *n > 0 && *i == id) {
            pair.1 -= 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|&(_, n)| n == 0)
    }
}

/// TCP mapping state, only used to pick the class (RFC 5382 REQ-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpState {
    /// Nothing answered yet: created by a SYN, or by a segment of a connection whose mapping
    /// expired or was evicted. Transitory: otherwise a flood of bare ACKs from fresh ports would
    /// fill the table with mappings worth two hours each.
    Opening,
    Established,
    /// FIN or RST seen: transitory.
    Closing,
}

/// What a mapping has seen, per kind; it decides the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Tcp(TcpState),
    /// `dns` is `Some` while the mapping has carried nothing but DNS queries out and DNS
    /// answers back.
    Udp {
        answered: bool,
        dns: Option<Pending>,
    },
    Echo {
        answered: bool,
    },
}

impl Flow {
    fn new(seen: Seen) -> Flow {
        match seen {
            Seen::Tcp(flags) if flags & (TCP_FIN | TCP_RST) != 0 => Flow::Tcp(TcpState::Closing),
            Seen::Tcp(_) => Flow::Tcp(TcpState::Opening),
            Seen::Udp(Dns::Query(id)) => Flow::Udp { answered: false, dns: Some(Pending::one(id)) },
            Seen::Udp(_) => Flow::Udp { answered: false, dns: None },
            Seen::Echo => Flow::Echo { answered: false },
        }
    }

    fn outbound(&mut self, seen: Seen) {
        match (self, seen) {
            (Flow::Tcp(s), Seen::Tcp(flags)) => *s = next_state(*s, flags),
            (Flow::Udp { dns, .. }, Seen::Udp(d)) => {
                let tracked = match (dns.as_mut(), d) {
                    (Some(p), Dns::Query(id)) => p.add(id),
                    _ => false,
                };
                if !tracked {
                    *dns = None;
                }
            }
            _ => {}
        }
    }

    fn inbound(&mut self, seen: Seen) {
        match (self, seen) {
            (Flow::Tcp(s), Seen::Tcp(flags)) => {
                *s = match *s {
                    // Any answer to our SYN makes the connection established (unless it is a RST).
                    TcpState::Opening if flags & (TCP_FIN | TCP_RST) == 0 => TcpState::Established,
                    s => next_state(s, flags),
                }
            }
            (Flow::Udp { answered, dns }, Seen::Udp(d)) => {
                *answered = true;
                match (dns.as_mut(), d) {
                    (Some(p), Dns::Answer(id)) => p.answer(id),
                    _ => *dns = None,
                }
            }
            (Flow::Echo { answered }, Seen::Echo) => *answered = true,
            _ => {}
        }
    }

    fn class(&self) -> Class {
        match *self {
            Flow::Tcp(TcpState::Established) => Class::Assured,
            Flow::Tcp(_) => Class::Transitory,
            Flow::Udp { answered: true, dns: Some(p) } if p.is_empty() => Class::DnsDone,
            Flow::Udp { answered: true, dns: None } => Class::Assured,
            // Unanswered, or a DNS mapping with a query outstanding.
            Flow::Udp { .. } => Class::Transitory,
            Flow::Echo { answered: true } => Class::Assured,
            Flow::Echo { answered: false } => Class::Transitory,
        }
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

/// Eviction order, least valuable first; also indexes a table's timeouts and lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A DNS mapping whose every query was answered.
    DnsDone = 0,
    /// Nothing answered yet, TCP opening or closing, or a DNS query outstanding.
    Transitory = 1,
    /// Two-way: answered UDP and echo, established TCP.
    Assured = 2,
}

const CLASSES: usize = 3;

/// Every mapping is on two lists: its class's through the whole table ([`TABLE`]), and its
/// class's through its source ([`SOURCE`]).
const TABLE: usize = 0;
const SOURCE: usize = 1;

#[derive(Debug, Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links { prev: NIL, next: NIL };

/// A list of slots, least recently used at the head.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List { head: NIL, tail: NIL };

struct Slot {
    local: IpAddr,
    port: u16,
    ext: u16,
    /// Index of the local address in `Table::src`.
    src: u32,
    last: Instant,
    flow: Flow,
    /// `flow.class()` when the slot was last linked: the lists it is on.
    class: Class,
    links: [Links; 2],
}

/// One local source address of a table.
struct Source {
    addr: IpAddr,
    count: usize,
    lru: [List; CLASSES],
}

// The lists hold slot indices, always of live slots (the table's invariant), so indexing the
// slab directly cannot fail on any input.
fn push_back(slots: &mut [Slot], list: &mut List, ix: u32, chain: usize) {
    let tail = list.tail;
    slots[ix as usize].links[chain] = Links { prev: tail, next: NIL };
    match tail {
        NIL => list.head = ix,
        t => slots[t as usize].links[chain].next = ix,
    }
    list.tail = ix;
}

fn unlink(slots: &mut [Slot], list: &mut List, ix: u32, chain: usize) {
    let Links { prev, next } = slots[ix as usize].links[chain];
    match prev {
        NIL => list.head = next,
        p => slots[p as usize].links[chain].next = next,
    }
    match next {
        NIL => list.tail = prev,
        n => slots[n as usize].links[chain].prev = prev,
    }
    slots[ix as usize].links[chain] = UNLINKED;
}

/// The head of the least valuable non-empty list.
fn least_valuable(lists: &[List; CLASSES]) -> Option<u32> {
    lists.iter().map(|l| l.head).find(|&h| h != NIL)
}

/// The mappings of one kind.
struct Table {
    kind: Kind,
    max: usize,
    /// Most mappings one source may hold: half the table, so two sources always fit.
    share: usize,
    /// Idle timeout per class.
    timeouts: [Duration; CLASSES],
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_key: HashMap<(IpAddr, u16), u32>,
    /// Slot + 1 of each (family, external port), at `v6 << 16 | port`.
    by_ext: Vec<Option<NonZeroU32>>,
    lru: [List; CLASSES],
    sources: HashMap<IpAddr, u32>,
    src: Vec<Source>,
    src_free: Vec<u32>,
}

impl Table {
    fn new(kind: Kind, max: usize, timeouts: [Duration; CLASSES]) -> Table {
        let max = max.min(EXT_PORTS);
        Table {
            kind,
            max,
            share: (max / 2).max(1),
            timeouts,
            slots: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            by_key: HashMap::with_capacity(2 * max),
            // Zeroed: the allocator hands out lazily mapped pages.
            by_ext: vec![None; EXT_PORTS],
            lru: [EMPTY; CLASSES],
            sources: HashMap::with_capacity(2 * max),
            src: Vec::with_capacity(max),
            src_free: Vec::with_capacity(max),
        }
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }

    fn ext_index(v6: bool, port: u16) -> usize {
        usize::from(v6) << 16 | usize::from(port)
    }

    fn by_ext(&self, v6: bool, port: u16) -> Option<u32> {
        let ix = self.by_ext.get(Self::ext_index(v6, port)).copied().flatten()?;
        Some(ix.get() - 1)
    }

    fn clear(&mut self) {
        for &ix in self.by_key.values() {
            let s = &self.slots[ix as usize];
            self.by_ext[Self::ext_index(s.local.is_ipv6(), s.ext)] = None;
        }
        self.by_key.clear();
        self.slots.clear();
        self.free.clear();
        self.lru = [EMPTY; CLASSES];
        self.sources.clear();
        self.src.clear();
        self.src_free.clear();
    }

    fn link(&mut self, ix: u32) {
        let s = &self.slots[ix as usize];
        let (c, src) = (s.class as usize, s.src as usize);
        push_back(&mut self.slots, &mut self.lru[c], ix, TABLE);
        push_back(&mut self.slots, &mut self.src[src].lru[c], ix, SOURCE);
    }

    fn unlink(&mut self, ix: u32) {
        let s = &self.slots[ix as usize];
        let (c, src) = (s.class as usize, s.src as usize);
        unlink(&mut self.slots, &mut self.lru[c], ix, TABLE);
        unlink(&mut self.slots, &mut self.src[src].lru[c], ix, SOURCE);
    }

    /// A packet of an existing mapping: to the tail of its (maybe new) class's lists.
    fn touch(&mut self, ix: u32, now: Instant) {
        self.unlink(ix);
        let s = &mut self.slots[ix as usize];
        s.last = now;
        s.class = s.flow.class();
        self.link(ix);
    }

    fn remove(&mut self, ix: u32) {
        self.unlink(ix);
        let s = &self.slots[ix as usize];
        let (key, ext, src) = ((s.local, s.port), Self::ext_index(s.local.is_ipv6(), s.ext), s.src as usize);
        self.by_key.remove(&key);
        self.by_ext[ext] = None;
        self.free.push(ix);
        let source = &mut self.src[src];
        source.count -= 1;
        if source.count == 0 {
            self.sources.remove(&source.addr);
            self.src_free.push(src as u32);
        }
    }

    fn insert(&mut self, local: IpAddr, port: u16, ext: u16, flow: Flow, now: Instant) {
        let src = match self.sources.get(&local) {
            Some(&s) => s,
            None => {
                let source = Source { addr: local, count: 0, lru: [EMPTY; CLASSES] };
                let s = match self.src_free.pop() {
                    Some(s) => {
                        self.src[s as usize] = source;
                        s
                    }
                    None => {
                        self.src.push(source);
                        (self.src.len() - 1) as u32
                    }
                };
                self.sources.insert(local, s);
                s
            }
        };
        self.src[src as usize].count += 1;
        let slot = Slot { local, port, ext, src, last: now, flow, class: flow.class(), links: [UNLINKED; 2] };
        let ix = match self.free.pop() {
            Some(ix) => {
                self.slots[ix as usize] = slot;
                ix
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.by_key.insert((local, port), ix);
        self.by_ext[Self::ext_index(local.is_ipv6(), ext)] = NonZeroU32::new(ix + 1);
        self.link(ix);
    }

    /// Removes the mappings idle for their class's timeout: the lists are in last-use order, so
    /// only their heads are looked at. (With a `now` that steps back, expiry is merely late.)
    fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        for c in 0..CLASSES {
            while let Some(ix) = Some(self.lru[c].head).filter(|&h| h != NIL) {
                if now.saturating_duration_since(self.slots[ix as usize].last) < self.timeouts[c] {
                    break;
                }
                self.remove(ix);
                removed += 1;
            }
        }
        removed
    }

    fn pick_port(&self, rng: &mut StdRng, v6: bool, want: u16) -> Option<u16> {
        let free = |p: u16| self.by_ext(v6, p).is_none();
        if free(want) {
            return Some(want);
        }
        // Keep privileged source ports privileged (RFC 4787 REQ-3 (a) spirit), echo ids may be
        // anything.
        let range = match self.kind {
            Kind::Icmp => 0..=u16::MAX,
            _ if want < 1024 => 1..=1023,
            _ => 1024..=u16::MAX,
        };
        (0..PORT_PROBES).map(|_| rng.gen_range(range.clone())).find(|&p| free(p))
    }
}

/// Mappings removed other than by their owner's traffic, since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    expired: u64,
    evicted: u64,
    recycled: u64,
}

/// The three tables (TCP, UDP, ICMP echo) and their port choice.
pub(crate) struct Nat {
    tables: [Table; 3],
    rng: StdRng,
    counters: Counters,
}

impl Nat {
    pub(crate) fn new(l: Limits, rng: StdRng) -> Self {
        let tcp = [l.tcp_transitory_timeout, l.tcp_transitory_timeout, l.tcp_established_timeout];
        let udp = [l.dns_answered_timeout, l.udp_unanswered_timeout, l.udp_timeout];
        let icmp = [l.icmp_timeout; CLASSES];
        Nat {
            tables: [
                Table::new(Kind::Tcp, l.nat_tcp_entries, tcp),
                Table::new(Kind::Udp, l.nat_udp_entries, udp),
                Table::new(Kind::Icmp, l.nat_icmp_entries, icmp),
            ],
            rng,
            counters: Counters::default(),
        }
    }

    pub(crate) fn len(&self, kind: Kind) -> usize {
        self.tables[kind as usize].len()
    }

    /// Drop every mapping (the allocated address changed, so all of them are meaningless).
    pub(crate) fn clear(&mut self) {
        self.tables.iter_mut().for_each(Table::clear);
    }

    /// External port for an outbound packet, creating the mapping if needed (evicting or
    /// recycling one if there is no room). Returns `(external port, created)`.
    pub(crate) fn outbound(
        &mut self,
        local: IpAddr,
        port: u16,
        seen: Seen,
        now: Instant,
    ) -> Result<(u16, bool), NatError> {
        let t = &mut self.tables[seen.kind() as usize];
        if let Some(&ix) = t.by_key.get(&(local, port)) {
            t.slots[ix as usize].flow.outbound(seen);
            t.touch(ix, now);
            return Ok((t.slots[ix as usize].ext, false));
        }
        self.counters.expired += t.expire(now) as u64;
        if t.max == 0 {
            return Err(NatError::TableFull);
        }
        let ext = t.pick_port(&mut self.rng, local.is_ipv6(), port).ok_or(NatError::PortsExhausted)?;
        let held = t.sources.get(&local).map(|&s| &t.src[s as usize]);
        let victim = match held {
            Some(s) if s.count >= t.share => {
                self.counters.recycled += 1;
                least_valuable(&s.lru)
            }
            _ if t.len() >= t.max => {
                self.counters.evicted += 1;
                least_valuable(&t.lru)
            }
            _ => None,
        };
        if let Some(v) = victim {
            t.remove(v);
        }
        t.insert(local, port, ext, Flow::new(seen), now);
        Ok((ext, true))
    }

    /// Reverse lookup for an inbound packet, refreshing the mapping.
    pub(crate) fn inbound(&mut self, v6: bool, ext: u16, seen: Seen, now: Instant) -> Option<(IpAddr, u16)> {
        let t = &mut self.tables[seen.kind() as usize];
        let ix = t.by_ext(v6, ext)?;
        t.slots[ix as usize].flow.inbound(seen);
        t.touch(ix, now);
        let s = &t.slots[ix as usize];
        Some((s.local, s.port))
    }

    /// Reverse lookup without refresh (for ICMP errors, which must not keep a mapping alive).
    pub(crate) fn peek_inbound(&self, kind: Kind, v6: bool, ext: u16) -> Option<(IpAddr, u16)> {
        let t = &self.tables[kind as usize];
        let s = &t.slots[t.by_ext(v6, ext)? as usize];
        Some((s.local, s.port))
    }

    /// Forward lookup without creating or refreshing.
    pub(crate) fn peek_outbound(&self, kind: Kind, local: IpAddr, port: u16) -> Option<u16> {
        let t = &self.tables[kind as usize];
        let &ix = t.by_key.get(&(local, port))?;
        Some(t.slots[ix as usize].ext)
    }

    /// Remove idle mappings; returns how many were removed. O(removed), no allocation.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let removed: usize = self.tables.iter_mut().map(|t| t.expire(now)).sum();
        self.counters.expired += removed as u64;
        removed
    }

    /// Copies the totals of expired, evicted and recycled mappings into `stats`.
    pub(crate) fn copy_counters(&self, stats: &mut Stats) {
        let c = self.counters;
        (stats.nat_expired, stats.nat_evicted, stats.nat_recycled) = (c.expired, c.evicted, c.recycled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::net::Ipv4Addr;

    use crate::pipeline::packet::TCP_ACK;

    const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 86, 0, 2));
    const GUEST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 7, 9));
    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 7, 10));
    const S: Duration = Duration::from_secs(1);
    const UDP: Seen = Seen::Udp(Dns::Other);

    fn nat(limits: Limits) -> Nat {
        Nat::new(limits, StdRng::seed_from_u64(7))
    }

    fn counters(n: &Nat) -> (u64, u64, u64) {
        let c = n.counters;
        (c.expired, c.evicted, c.recycled)
    }

    /// Checks every link of every table against the maps: the structure is what the O(1)
    /// claims rest on, so the randomized test below runs this after every step.
    fn check(n: &Nat) {
        for t in &n.tables {
            assert!(t.len() <= t.max, "{:?}: {} > {}", t.kind, t.len(), t.max);
            let mut on_lists = 0;
            for (c, list) in t.lru.iter().enumerate() {
                let (mut prev, mut at, mut last) = (NIL, list.head, None);
                while at != NIL {
                    let s = &t.slots[at as usize];
                    assert_eq!(s.links[TABLE].prev, prev);
                    assert_eq!(s.class as usize, c);
                    assert_eq!(s.class, s.flow.class(), "re-linked on every change");
                    assert!(last.is_none_or(|l| l <= s.last), "last-use order");
                    assert_eq!(t.by_key.get(&(s.local, s.port)), Some(&at));
                    assert_eq!(t.by_ext(s.local.is_ipv6(), s.ext), Some(at));
                    last = Some(s.last);
                    (prev, at) = (at, s.links[TABLE].next);
                    on_lists += 1;
                }
                assert_eq!(list.tail, prev);
            }
            assert_eq!(on_lists, t.len());
            assert_eq!(t.slots.len(), t.len() + t.free.len());
            let mut by_sources = 0;
            for (&addr, &si) in &t.sources {
                let src = &t.src[si as usize];
                assert_eq!(src.addr, addr);
                assert!(src.count >= 1 && src.count <= t.share, "{:?} holds {} of {}", addr, src.count, t.share);
                let mut n = 0;
                for (c, list) in src.lru.iter().enumerate() {
                    let mut at = list.head;
                    while at != NIL {
                        let s = &t.slots[at as usize];
                        assert_eq!((s.local, s.src, s.class as usize), (addr, si, c));
                        at = s.links[SOURCE].next;
                        n += 1;
                    }
                }
                assert_eq!(n, src.count);
                by_sources += n;
            }
            assert_eq!(by_sources, t.len());
            assert_eq!(t.src.len(), t.sources.len() + t.src_free.len());
        }
    }

    /// The inbound index holds exactly the live mappings (a full scan: not after every step).
    fn check_ext(n: &Nat) {
        for t in &n.tables {
            assert_eq!(t.by_ext.iter().flatten().count(), t.len());
        }
    }

    #[test]
    fn preserves_then_remaps_ports() {
        let mut n = nat(Limits::default());
        let t = Instant::now();
        assert_eq!(n.outbound(HOST, 5000, UDP, t), Ok((5000, true)));
        assert_eq!(n.outbound(HOST, 5000, UDP, t), Ok((5000, false)));
        let (p, created) = n.outbound(GUEST, 5000, UDP, t).unwrap();
        assert!(created && p != 5000 && p >= 1024);
        assert_eq!(n.inbound(false, p, UDP, t), Some((GUEST, 5000)));
        assert_eq!(n.inbound(false, p, Seen::Tcp(TCP_ACK), t), None);
        assert_eq!(n.inbound(true, p, UDP, t), None);
        check(&n);
    }

    #[test]
    fn unanswered_udp_expires_at_30_s_and_two_way_after_5_min() {
        let l = Limits::default();
        assert_eq!((l.udp_unanswered_timeout, l.udp_timeout), (30 * S, 300 * S));
        let mut n = nat(l);
        let t = Instant::now();
        n.outbound(HOST, 1000, UDP, t).unwrap();
        n.outbound(HOST, 2000, UDP, t).unwrap();
        answer(&mut n, HOST, 2000, UDP, t + S);
        assert_eq!(n.expire(t + 29 * S), 0);
        assert_eq!(n.expire(t + 30 * S), 1, "unanswered: 30 s");
        assert!(gone(&n, HOST, 1000));
        assert_eq!(n.expire(t + 300 * S), 0, "answered at 1 s: lives until 301 s");
        assert_eq!(n.expire(t + 301 * S), 1);
        // Sending keeps an unanswered mapping alive.
        let t = t + 400 * S;
        n.outbound(HOST, 3000, UDP, t).unwrap();
        n.outbound(HOST, 3000, UDP, t + 29 * S).unwrap();
        assert_eq!(n.expire(t + 58 * S), 0);
        assert_eq!(n.expire(t + 59 * S), 1);
        assert_eq!(counters(&n), (3, 0, 0));
        check(&n);
        check_ext(&n);
    }

    #[test]
    fn dns_mapping_goes_right_after_its_last_outstanding_answer() {
        let l = Limits::default();
        assert_eq!(l.dns_answered_timeout, 2 * S);
        let mut n = nat(l);
        let (a, aaaa) = (Seen::Udp(Dns::Query(0xa)), Seen::Udp(Dns::Query(0xaaaa)));
        let ans = |id| Seen::Udp(Dns::Answer(id));

        // glibc: A and AAAA from one port, in parallel; the A answer arrives twice.
        let t = Instant::now();
        n.outbound(HOST, 40000, a, t).unwrap();
        n.outbound(HOST, 40000, aaaa, t).unwrap();
        answer(&mut n, HOST, 40000, ans(0xa), t + S);
        answer(&mut n, HOST, 40000, ans(0xa), t + S);
        assert_eq!(n.expire(t + 10 * S), 0, "AAAA outstanding: the 30 s rule");
        answer(&mut n, HOST, 40000, ans(0xaaaa), t + 12 * S);
        assert_eq!(n.expire(t + 13 * S), 0);
        assert_eq!(n.expire(t + 14 * S), 1, "gone 2 s after the last answer");

        // Unanswered: 30 s, like any UDP.
        let t = t + 100 * S;
        n.outbound(HOST, 40001, a, t).unwrap();
        assert_eq!(n.expire(t + 29 * S), 0);
        assert_eq!(n.expire(t + 30 * S), 1);

        // single-request: AAAA goes only after the A answer; the mapping waits for it again.
        let t = t + 100 * S;
        n.outbound(HOST, 40002, a, t).unwrap();
        answer(&mut n, HOST, 40002, ans(0xa), t + S);
        n.outbound(HOST, 40002, aaaa, t + S).unwrap();
        assert_eq!(n.expire(t + 20 * S), 0);
        answer(&mut n, HOST, 40002, ans(0xaaaa), t + 20 * S);
        assert_eq!(n.expire(t + 22 * S), 1);

        // A retransmitted query (same id) waits for both answers.
        let t = t + 100 * S;
        n.outbound(HOST, 40003, a, t).unwrap();
        n.outbound(HOST, 40003, a, t + 5 * S).unwrap();
        answer(&mut n, HOST, 40003, ans(0xa), t + 6 * S);
        assert_eq!(n.expire(t + 35 * S), 0);
        assert_eq!(n.expire(t + 36 * S), 1, "one answer missing: 30 s after the last packet");

        // Anything but DNS on the mapping: plain UDP rules.
        let t = t + 100 * S;
        n.outbound(HOST, 40004, a, t).unwrap();
        n.outbound(HOST, 40004, UDP, t).unwrap();
        answer(&mut n, HOST, 40004, ans(0xa), t);
        assert_eq!(n.expire(t + 299 * S), 0);
        assert_eq!(n.len(Kind::Udp), 1);
        check(&n);
        check_ext(&n);
    }

    #[test]
    fn more_dns_ids_than_tracked_fall_back_to_plain_udp() {
        let mut n = nat(Limits::default());
        let t = Instant::now();
        for id in 0..=DNS_PENDING as u16 {
            n.outbound(HOST, 40000, Seen::Udp(Dns::Query(id)), t).unwrap();
        }
        n.inbound(false, 40000, Seen::Udp(Dns::Answer(0)), t).unwrap();
        assert_eq!(n.expire(t + 299 * S), 0, "two-way: 5 min, never the 2 s of an answered lookup");
        assert_eq!(n.expire(t + 300 * S), 1);
    }

    /// Answers `ip:port`'s mapping (looked up: the external port may not be `port`).
    fn answer(n: &mut Nat, ip: IpAddr, port: u16, seen: Seen, now: Instant) {
        let ext = n.peek_outbound(seen.kind(), ip, port).expect("mapped");
        n.inbound(ip.is_ipv6(), ext, seen, now).expect("mapped");
    }

    fn gone(n: &Nat, ip: IpAddr, port: u16) -> bool {
        n.peek_outbound(Kind::Udp, ip, port).is_none()
    }

    #[test]
    fn a_full_table_evicts_the_least_valuable_longest_idle() {
        let mut n = nat(Limits { nat_udp_entries: 6, ..Limits::default() });
        let t = Instant::now();
        // Three per source at most. Each of HOST and GUEST: a two-way mapping (the oldest), then
        // an unanswered one; HOST also an answered lookup (2 s left).
        n.outbound(HOST, 1, UDP, t).unwrap();
        answer(&mut n, HOST, 1, UDP, t);
        n.outbound(GUEST, 1, UDP, t + S).unwrap();
        answer(&mut n, GUEST, 1, UDP, t + S);
        n.outbound(HOST, 2, UDP, t + 2 * S).unwrap();
        n.outbound(GUEST, 2, UDP, t + 3 * S).unwrap();
        n.outbound(HOST, 3, Seen::Udp(Dns::Query(9)), t + 4 * S).unwrap();
        answer(&mut n, HOST, 3, Seen::Udp(Dns::Answer(9)), t + 4 * S);
        n.outbound(GUEST, 3, UDP, t + 5 * S).unwrap();
        assert_eq!(n.len(Kind::Udp), 6);
        // A third source: the answered lookup goes first, then the unanswered ones, longest
        // idle first; never the older two-way ones.
        n.outbound(OTHER, 1, UDP, t + 5 * S).unwrap();
        assert!(gone(&n, HOST, 3));
        n.outbound(OTHER, 2, UDP, t + 5 * S).unwrap();
        assert!(gone(&n, HOST, 2));
        n.outbound(OTHER, 3, UDP, t + 5 * S).unwrap();
        assert!(gone(&n, GUEST, 2));
        assert!(!gone(&n, HOST, 1) && !gone(&n, GUEST, 1) && !gone(&n, GUEST, 3));
        assert_eq!(counters(&n), (0, 3, 0));
        // OTHER is at its share: its own longest idle goes, not GUEST's older unanswered 3.
        n.outbound(OTHER, 4, UDP, t + 6 * S).unwrap();
        assert!(gone(&n, OTHER, 1) && !gone(&n, GUEST, 3));
        assert_eq!(counters(&n), (0, 3, 1));
        check(&n);
        check_ext(&n);

        // Nothing but two-way mappings: the longest idle of them.
        let mut n = nat(Limits { nat_udp_entries: 4, ..Limits::default() });
        for (i, ip) in [HOST, GUEST, HOST, GUEST].into_iter().enumerate() {
            let port = 1 + i as u16;
            n.outbound(ip, port, UDP, t + i as u32 * S).unwrap();
            answer(&mut n, ip, port, UDP, t + i as u32 * S);
        }
        answer(&mut n, HOST, 1, UDP, t + 4 * S);
        n.outbound(OTHER, 1, UDP, t + 5 * S).unwrap();
        assert!(gone(&n, GUEST, 2) && !gone(&n, HOST, 1), "HOST's 1 was refreshed at 4 s");
        assert_eq!(counters(&n), (0, 1, 0));
        check(&n);

        // A due mapping goes before anything live is evicted, however valuable its class.
        let mut n = nat(Limits { nat_udp_entries: 4, ..Limits::default() });
        n.outbound(HOST, 1, UDP, t).unwrap();
        answer(&mut n, HOST, 1, UDP, t);
        n.outbound(HOST, 2, UDP, t + 290 * S).unwrap();
        n.outbound(GUEST, 1, UDP, t + 295 * S).unwrap();
        n.outbound(GUEST, 2, UDP, t + 295 * S).unwrap();
        n.outbound(OTHER, 1, UDP, t + 300 * S).unwrap();
        assert!(gone(&n, HOST, 1) && !gone(&n, HOST, 2), "HOST's 1 was idle for its 5 min");
        assert_eq!(counters(&n), (1, 0, 0));
        check(&n);
    }

    #[test]
    fn a_flooding_source_recycles_its_own_mappings_only() {
        for (kind, seen) in [(Kind::Tcp, Seen::Tcp(TCP_SYN)), (Kind::Udp, UDP), (Kind::Icmp, Seen::Echo)] {
            let l = Limits { nat_tcp_entries: 8, nat_udp_entries: 8, nat_icmp_entries: 8, ..Limits::default() };
            let mut n = nat(l);
            let t = Instant::now();
            // The host's mapping is the oldest and unanswered: the first a full table would evict.
            n.outbound(HOST, 53000, seen, t).unwrap();
            for port in 1..=1000 {
                n.outbound(GUEST, port, seen, t + S).unwrap();
            }
            assert_eq!(n.peek_outbound(kind, HOST, 53000), Some(53000), "{kind:?}");
            assert_eq!(n.len(kind), 5, "{kind:?}: the host's one and the guest's share of 4");
            assert_eq!(counters(&n), (0, 0, 996), "{kind:?}");
            let kept: Vec<u16> = (1..=1000).filter(|&p| n.peek_outbound(kind, GUEST, p).is_some()).collect();
            assert_eq!(kept, [997, 998, 999, 1000], "{kind:?}: the newest four");
            // The host still gets new mappings.
            assert!(n.outbound(HOST, 53001, seen, t + S).unwrap().1);
            check(&n);
        }
    }

    #[test]
    fn a_zero_entry_table_refuses_and_tables_are_separate() {
        let mut n = nat(Limits { nat_udp_entries: 0, ..Limits::default() });
        let t = Instant::now();
        assert_eq!(n.outbound(HOST, 1, UDP, t), Err(NatError::TableFull));
        assert!(n.outbound(HOST, 1, Seen::Tcp(TCP_SYN), t).is_ok());
        check(&n);
    }

    #[test]
    fn tcp_timeouts_follow_state() {
        let l = Limits::default();
        let mut n = nat(l);
        let t = Instant::now();
        n.outbound(HOST, 40000, Seen::Tcp(TCP_SYN), t).unwrap();
        n.outbound(HOST, 40001, Seen::Tcp(TCP_SYN), t).unwrap();
        // Answer to the second connection: established.
        n.inbound(false, 40001, Seen::Tcp(TCP_SYN | TCP_ACK), t).unwrap();
        assert_eq!(n.expire(t + l.tcp_transitory_timeout), 1);
        assert_eq!(n.peek_inbound(Kind::Tcp, false, 40001), Some((HOST, 40001)));
        n.outbound(HOST, 40001, Seen::Tcp(TCP_FIN), t).unwrap();
        assert_eq!(n.expire(t + l.tcp_transitory_timeout), 1);
        assert_eq!(n.len(Kind::Tcp), 0);
        // A bare ACK (a connection whose mapping is gone) is transitory until answered.
        n.outbound(HOST, 40002, Seen::Tcp(TCP_ACK), t).unwrap();
        n.outbound(HOST, 40003, Seen::Tcp(TCP_ACK), t).unwrap();
        n.inbound(false, 40003, Seen::Tcp(TCP_ACK), t).unwrap();
        assert_eq!(n.expire(t + l.tcp_transitory_timeout), 1);
        assert_eq!(n.peek_outbound(Kind::Tcp, HOST, 40002), None);
        assert_eq!(n.expire(t + l.tcp_established_timeout), 1);
        check(&n);
    }

    #[test]
    fn dns_of_reads_the_header() {
        let q = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let mut a = q;
        a[2] |= 0x80;
        assert_eq!(Dns::of(53, &q), Dns::Query(0xabcd));
        assert_eq!(Dns::of(53, &a), Dns::Answer(0xabcd));
        assert_eq!(Dns::of(5353, &q), Dns::Other);
        assert_eq!(Dns::of(53, &q[..11]), Dns::Other);
        assert_eq!(Dns::of(53, &[]), Dns::Other);
    }

    /// Random traffic from a few sources against small tables, checking the structure after
    /// every step and the bounds throughout.
    #[test]
    fn random_traffic_keeps_the_tables_consistent() {
        let l = Limits { nat_tcp_entries: 7, nat_udp_entries: 16, nat_icmp_entries: 3, ..Limits::default() };
        let mut n = nat(l);
        let mut rng = StdRng::seed_from_u64(99);
        let ips = [HOST, GUEST, OTHER, IpAddr::V6("fd6d:6978::2".parse().unwrap())];
        let mut now = Instant::now();
        for step in 0..20_000 {
            now += Duration::from_millis(rng.gen_range(0..3000));
            let seen = match rng.gen_range(0..6) {
                0 => Seen::Tcp([TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST][rng.gen_range(0..4)]),
                1 => Seen::Echo,
                2 => UDP,
                3 => Seen::Udp(Dns::Answer(rng.gen_range(0..4))),
                _ => Seen::Udp(Dns::Query(rng.gen_range(0..6))),
            };
            let ip = ips[rng.gen_range(0..ips.len())];
            match rng.gen_range(0..10) {
                0 => {
                    n.expire(now);
                }
                1..=5 => {
                    n.outbound(ip, rng.gen_range(1..40), seen, now).unwrap();
                }
                _ => {
                    n.inbound(ip.is_ipv6(), rng.gen_range(1..40), seen, now);
                }
            }
            if step % 5000 == 4999 {
                check_ext(&n);
                n.clear();
            }
            check(&n);
        }
        let (expired, evicted, recycled) = counters(&n);
        assert!(expired > 0 && evicted > 0 && recycled > 0, "{:?}", counters(&n));
    }
}
