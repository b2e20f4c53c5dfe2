//! Bounded IPv4 / IPv6 fragment reassembly.
//!
//! Contract: [`Reassembler::push`] takes one fragment (a packet whose [`View`] has
//! `frag = Some(..)`) and either stores it or, when it completes its datagram, writes the whole
//! datagram into the caller's buffer: IPv4 with MF = 0, offset 0, new total length and header
//! checksum; IPv6 without the fragment header, with the preceding next-header byte and the
//! payload length fixed. The output is a normal packet that is parsed again by the caller.
//!
//! Why the pipeline reassembles at all: the IPR drops fragments it receives from clients
//! (docs/ipr-protocol.md §3.4, §7 item 14), so the uplink must carry whole datagrams; downlink
//! fragments are reassembled too because reverse NAT needs the transport header, which only the
//! first fragment carries.
//!
//! Bounds (all in [`crate::pipeline::Limits`], one reassembler per direction):
//! - memory: the sum of buffered bytes (+ a fixed per-datagram overhead) never exceeds
//!   `frag_memory`; when a fragment would exceed it, the oldest other datagrams are evicted, and
//!   if that is not enough the datagram is dropped (counted `frag_memory`);
//! - at most `frag_datagrams` datagrams and `frag_max_fragments` fragments per datagram;
//! - datagrams older than `frag_timeout` are dropped (RFC 791 suggests 15 s as the initial timer,
//!   RFC 8200 §4.5 requires 60 s at most; Linux uses 30 s, `ipfrag_time`);
//! - a datagram never exceeds 65535 bytes (IPv4 total length / IPv6 payload length field).
//!
//! Overlaps: any fragment that overlaps another of the same datagram, other than an exact
//! duplicate, drops the whole datagram (RFC 5722 §4 for IPv6; Linux applies the same rule to
//! IPv4 since 4.19). Exact duplicates (retransmissions) are ignored. RFC 5722's "and discard
//! later fragments of that datagram" is not remembered: later fragments start a new partial
//! datagram, which then times out.
//!
//! Allocation happens per stored fragment (not the hot path) and is bounded by the memory cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use smoltcp::wire::Ipv4Packet;

use crate::pipeline::packet::{Family, View};
use crate::pipeline::stats::Stats;
use crate::pipeline::Limits;

/// Fixed bookkeeping cost charged per datagram (the struct, the hash entry), so that a flood
/// of tiny fragments of distinct datagrams still hits the memory cap.
const DATAGRAM_OVERHEAD: usize = 256;
const MAX_DATAGRAM: usize = 65535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FragError {
    #[error("invalid fragment")]
    Invalid,
    #[error("overlapping fragment")]
    Overlap,
    #[error("reassembly memory exhausted")]
    Memory,
}

/// What happened to a pushed fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Stored,
    /// The datagram is complete and was written to the output buffer (this many bytes).
    Complete(usize),
}

/// RFC 791 §3.2: (src, dst, protocol, identification); RFC 8200 §4.5: (src, dst, identification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ident: u32,
}

struct Datagram {
    /// IPv4 header or IPv6 unfragmentable part, from the offset-0 fragment; empty until then.
    header: Vec<u8>,
    nh_off: usize,
    next_header: u8,
    data: Vec<u8>,
    /// Received (start, end) byte ranges.
    frags: Vec<(usize, usize)>,
    received: usize,
    total: Option<usize>,
    first: Instant,
}

impl Datagram {
    fn cost(&self) -> usize {
        DATAGRAM_OVERHEAD + self.header.capacity() + self.data.capacity() + self.frags.capacity() * 16
    }
}

pub(crate) struct Reassembler {
    table: HashMap<Key, Datagram>,
    mem: usize,
    limits: Limits,
}

impl Reassembler {
    pub(crate) fn new(limits: Limits) -> Self {
        Reassembler { table: HashMap::with_capacity(limits.frag_datagrams), mem: 0, limits }
    }

    /// Bytes currently charged against the memory cap.
    pub(crate) fn memory(&self) -> usize {
        self.mem
    }

    pub(crate) fn datagrams(&self) -> usize {
        self.table.len()
    }

    /// Store fragment `pkt` (already trimmed to `view.len`), or complete its datagram into `out`.
    pub(crate) fn push(
        &mut self,
        pkt: &[u8],
        view: &View,
        now: Instant,
        out: &mut Vec<u8>,
        stats: &mut Stats,
    ) -> Result<Push, FragError> {
        let frag = view.frag.ok_or(FragError::Invalid)?;
        let data = pkt.get(frag.data_off..view.len).ok_or(FragError::Invalid)?;
        let (start, end) = (frag.offset, frag.offset + data.len());
        // RFC 791 / RFC 8200 §4.5: every fragment but the last carries a multiple of 8 bytes.
        if data.is_empty() || (frag.more && data.len() % 8 != 0) || end > MAX_DATAGRAM {
            return Err(FragError::Invalid);
        }
        let key = Key {
            src: view.src,
            dst: view.dst,
            proto: if view.fam == Family::V4 { view.proto } else { 0 },
            ident: frag.ident,
        };
        if let Some(d) = self.table.get(&key) {
            if now.saturating_duration_since(d.first) >= self.limits.frag_timeout {
                self.remove(&key);
                stats.frag_timeout += 1;
            }
        }
        if !self.table.contains_key(&key) {
            if self.table.len() >= self.limits.frag_datagrams {
                self.expire(now, stats);
                if self.table.len() >= self.limits.frag_datagrams {
                    self.evict_oldest(None);
                    stats.frag_memory += 1;
                }
            }
            let d = Datagram {
                header: Vec::new(),
                nh_off: 0,
                next_header: 0,
                data: Vec::new(),
                frags: Vec::new(),
                received: 0,
                total: None,
                first: now,
            };
            self.mem += d.cost();
            self.table.insert(key, d);
        }

        // Memory needed for this fragment (upper bound; capacity is reserved exactly).
        let header_len = match (start, view.fam) {
            (0, Family::V4) => frag.data_off,
            (0, Family::V6) => frag.hdr_off,
            _ => 0,
        };
        let grow = end.saturating_sub(self.table.get(&key).map_or(0, |d| d.data.len()));
        let need = grow + header_len + 16;
        while self.mem + need > self.limits.frag_memory {
            if !self.evict_oldest(Some(key)) {
                self.remove(&key);
                return Err(FragError::Memory);
            }
            stats.frag_memory += 1;
        }

        let d = self.table.get_mut(&key).ok_or(FragError::Invalid)?;
        let before = d.cost();
        let r = insert(d, pkt, view, start, end, data);
        let after = d.cost();
        self.mem = self.mem + after - before;
        if let Err(e) = r {
            self.remove(&key);
            return Err(e);
        }
        let complete = d.total == Some(d.received) && !d.header.is_empty();
        if !complete {
            return Ok(Push::Stored);
        }
        let fam = view.fam;
        let d = self.remove(&key).ok_or(FragError::Invalid)?;
        finish(&d, fam, out).map(Push::Complete)
    }

    fn remove(&mut self, key: &Key) -> Option<Datagram> {
        let d = self.table.remove(key)?;
        self.mem -= d.cost();
        Some(d)
    }

    /// Evict the oldest datagram other than `keep`; false if there is none.
    fn evict_oldest(&mut self, keep: Option<Key>) -> bool {
        let oldest = self.table.iter().filter(|(k, _)| Some(**k) != keep).min_by_key(|(_, d)| d.first).map(|(k, _)| *k);
        match oldest {
            Some(k) => self.remove(&k).is_some(),
            None => false,
        }
    }

    /// Drop datagrams whose timer ran out (counted `frag_timeout`).
    pub(crate) fn expire(&mut self, now: Instant, stats: &mut Stats) {
        let timeout = self.limits.frag_timeout;
        let mut freed = 0;
        self.table.retain(|_, d| {
            let keep = now.saturating_duration_since(d.first) < timeout;
            if !keep {
                freed += d.cost();
                stats.frag_timeout += 1;
            }
            keep
        });
        self.mem -= freed;
    }

    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.mem = 0;
    }
}

fn insert(d: &mut Datagram, pkt: &[u8], view: &View, start: usize, end: usize, data: &[u8]) -> Result<(), FragError> {
    if d.frags.contains(&(start, end)) {
        return Ok(()); // exact duplicate: a retransmission, harmless
    }
    if d.frags.iter().any(|&(s, e)| start < e && s < end) {
        return Err(FragError::Overlap);
    }
    if d.frags.len() >= MAX_FRAGMENTS {
        return Err(FragError::Invalid);
    }
    let frag = view.frag.ok_or(FragError::Invalid)?;
    if !frag.more {
        if d.total.is_some_and(|t| t != end) || d.frags.iter().any(|&(_, e)| e > end) {
            return Err(FragError::Invalid);
        }
        d.total = Some(end);
    } else if d.total.is_some_and(|t| end > t) {
        return Err(FragError::Invalid);
    }
    if start == 0 {
        // IPv4: the whole header incl. options; IPv6: everything before the fragment header.
        let hdr = match view.fam {
            Family::V4 => pkt.get(..frag.data_off),
            Family::V6 => pkt.get(..frag.hdr_off),
        }
        .ok_or(FragError::Invalid)?;
        d.header.reserve_exact(hdr.len());
        d.header.extend_from_slice(hdr);
        d.nh_off = frag.nh_off;
        d.next_header = frag.next_header;
    }
    if d.data.len() < end {
        d.data.reserve_exact(end - d.data.len());
        d.data.resize(end, 0);
    }
    d.data[start..end].copy_from_slice(data);
    d.frags.push((start, end));
    d.received += end - start;
    Ok(())
}

/// 65535 / 552 (the data of a 576-byte IPv4 fragment) ≈ 119: enough for any legitimate
/// datagram on links down to the IPv4 minimum reassembly size, while bounding the per-fragment
/// overlap scan.
const MAX_FRAGMENTS: usize = 128;

fn finish(d: &Datagram, fam: Family, out: &mut Vec<u8>) -> Result<usize, FragError> {
    let total = d.total.ok_or(FragError::Invalid)?;
    let len = d.header.len() + total;
    let payload_field = match fam {
        Family::V4 => len,
        Family::V6 => len.checked_sub(40).ok_or(FragError::Invalid)?,
    };
    if payload_field > MAX_DATAGRAM {
        return Err(FragError::Invalid);
    }
    out.clear();
    out.extend_from_slice(&d.header);
    out.extend_from_slice(d.data.get(..total).ok_or(FragError::Invalid)?);
    match fam {
        Family::V4 => {
            let hl = d.header.len();
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            out[6] &= 0x40; // keep DF, clear MF and the offset
            out[7] = 0;
            Ipv4Packet::new_unchecked(&mut out[..hl]).fill_checksum();
        }
        Family::V6 => {
            *out.get_mut(d.nh_off).ok_or(FragError::Invalid)? = d.next_header;
            out[4..6].copy_from_slice(&(payload_field as u16).to_be_bytes());
        }
    }
    Ok(len)
}
