//! The queue-backed smoltcp device between the userspace stack and the IPR session.
//!
//! # Contract
//!
//! [`QueueDevice`] is a `phy::Device` with `Medium::Ip` made of two bounded [`PacketQueue`]s,
//! like smoltcp's `Loopback` and the sibling smolmix `NymAsyncDevice`, but with no I/O and no
//! channels: the runner pushes IP packets unbundled from exit messages into `rx` and drains
//! what the stack emitted from `tx` into the session.
//!
//! - **Bounded.** Each queue holds at most its capacity; a packet that does not fit is dropped
//!   and counted ([`DeviceStats`]), as a congested link would drop it. TCP retransmits it.
//! - **No allocation per packet.** Packet buffers return to a free list when popped, so the
//!   steady state reuses the same `Vec`s.
//! - **Burst per poll.** [`QueueDevice::begin_poll`] arms a budget of [`DEVICE_BURST`] received
//!   packets; `Interface::poll` drains ingress until `receive` says `None`, so without the budget
//!   one poll could process a whole 256-packet backlog while uplink messages wait.
//! - **Back-pressure, not loss, on transmit.** `transmit` returns `None` while `tx` is full, so
//!   smoltcp keeps the segment and retries on the next poll instead of losing it.

use std::collections::VecDeque;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Received packets handed to smoltcp per `Interface::poll`; upstream smolmix hands it one at a
/// time (docs/performance.md §1.8).
pub(crate) const DEVICE_BURST: usize = 64;

/// Packets waiting for the stack. 256 × 1500 B ≥ one full 256 KiB TCP window (180 segments of
/// 1460 B), so a window's worth of downlink never overflows between two polls.
pub(crate) const RX_QUEUE_CAP: usize = 256;

/// Packets waiting for the session. One poll emits at most a window of segments per socket;
/// beyond this `transmit` pushes back and smoltcp retries on the next poll.
pub(crate) const TX_QUEUE_CAP: usize = 256;

/// Free buffers kept for reuse per queue; beyond this they are freed.
const FREE_CAP: usize = 64;

/// Counters of the device (dropped packets are the only interesting event here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Packets from the exit that found the receive queue full.
    pub rx_dropped: u64,
    /// Packets from the exit larger than the MTU: smoltcp would drop them anyway.
    pub rx_oversize: u64,
    /// Times smoltcp wanted to transmit while the transmit queue was full.
    pub tx_backpressure: u64,
}

/// A bounded FIFO of packets with a free list of buffers.
#[derive(Debug)]
pub(crate) struct PacketQueue {
    packets: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
    cap: usize,
}

impl PacketQueue {
    pub(crate) fn new(cap: usize) -> Self {
        PacketQueue { packets: VecDeque::with_capacity(cap), free: Vec::new(), cap }
    }

    pub(crate) fn len(&self) -> usize {
        self.packets.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.packets.len() >= self.cap
    }

    /// Copies `pkt` in. Returns `false` (and keeps nothing) when the queue is full.
    pub(crate) fn push(&mut self, pkt: &[u8]) -> bool {
        match self.slot(pkt.len()) {
            Some(buf) => {
                buf.copy_from_slice(pkt);
                true
            }
            None => false,
        }
    }

    /// Appends a zeroed packet of `len` bytes and returns it for filling, or `None` when full.
    pub(crate) fn slot(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        self.packets.push_back(buf);
        self.packets.back_mut().map(Vec::as_mut_slice)
    }

    /// The oldest packet, if any.
    pub(crate) fn front(&self) -> Option<&[u8]> {
        self.packets.front().map(Vec::as_slice)
    }

    /// Drops the oldest packet, keeping its buffer for reuse.
    pub(crate) fn pop(&mut self) {
        if let Some(buf) = self.packets.pop_front() {
            if self.free.len() < FREE_CAP {
                self.free.push(buf);
            }
        }
    }
}

/// The smoltcp device of a tunnel: `rx` from the exit, `tx` towards it.
#[derive(Debug)]
pub(crate) struct QueueDevice {
    pub(crate) rx: PacketQueue,
    pub(crate) tx: PacketQueue,
    mtu: usize,
    budget: usize,
    pub(crate) stats: DeviceStats,
}

impl QueueDevice {
    /// `mtu` is the IP MTU of the allocation (v10 reports it; v9 means 1420,
    /// docs/ipr-protocol.md §3.4).
    pub(crate) fn new(mtu: u16) -> Self {
        QueueDevice {
            rx: PacketQueue::new(RX_QUEUE_CAP),
            tx: PacketQueue::new(TX_QUEUE_CAP),
            mtu: usize::from(mtu),
            budget: DEVICE_BURST,
            stats: DeviceStats::default(),
        }
    }

    pub(crate) fn mtu(&self) -> usize {
        self.mtu
    }

    /// Queues one IP packet from the exit for the stack; drops and counts when full or larger
    /// than the MTU (the exit's TUN never sends more, so such a packet is malformed).
    pub(crate) fn push_rx(&mut self, pkt: &[u8]) {
        if pkt.len() > self.mtu {
            self.stats.rx_oversize += 1;
            tracing::trace!(len = pkt.len(), mtu = self.mtu, "dropping oversize downlink packet");
        } else if !self.rx.push(pkt) {
            self.stats.rx_dropped += 1;
            tracing::trace!(len = pkt.len(), "device receive queue full: dropping packet");
        }
    }

    /// Arms the per-poll receive budget; call before every `Interface::poll`.
    pub(crate) fn begin_poll(&mut self) {
        self.budget = DEVICE_BURST;
    }
}

/// Receives the oldest packet of `rx`.
pub(crate) struct RxToken<'a> {
    queue: &'a mut PacketQueue,
}

/// Appends one packet to `tx`; only handed out while `tx` has room.
pub(crate) struct TxToken<'a> {
    queue: &'a mut PacketQueue,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(self.queue.front().unwrap_or_default());
        self.queue.pop();
        r
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.queue.slot(len) {
            Some(buf) => f(buf),
            // The token exists only while there is room; should that invariant ever break,
            // the packet is lost like any dropped packet instead of panicking.
            None => f(&mut vec![0u8; len]),
        }
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // A reply (ACK, RST) needs room in `tx`; without it leave the packet queued.
        if self.budget == 0 || self.rx.is_empty() || self.tx.is_full() {
            return None;
        }
        self.budget -= 1;
        Some((RxToken { queue: &mut self.rx }, TxToken { queue: &mut self.tx }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.tx.is_full() {
            self.stats.tx_backpressure += 1;
            return None;
        }
        Some(TxToken { queue: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // smoltcp clamps every advertised TCP window to max_burst_size × MSS
        // (docs/performance.md §2.7; with smolmix's Some(1) that is one 1460 B segment per RTT,
        // 2.1 KB/s at 690 ms, docs/performance.md §1.8). The real limit of this device is the
        // receive queue, which holds a whole 256 KiB window, so that is what it declares: the
        // clamp (256 × MSS) never binds.
        caps.max_burst_size = Some(RX_QUEUE_CAP);
        // Packets from the exit are untrusted: verify every checksum, and compute ours.
        caps.checksum = ChecksumCapabilities::default();
        caps.checksum.ipv4 = Checksum::Both;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken as _, TxToken as _};

    fn now() -> Instant {
        Instant::from_millis(0)
    }

    #[test]
    fn queue_is_bounded_and_fifo() {
        let mut q = PacketQueue::new(3);
        assert!(q.push(&[1]) && q.push(&[2, 2]) && q.push(&[3, 3, 3]));
        assert!(!q.push(&[4]), "a full queue refuses");
        assert_eq!(q.len(), 3);
        assert_eq!(q.front(), Some(&[1u8][..]));
        q.pop();
        assert!(q.push(&[4]));
        let mut seen = Vec::new();
        while let Some(p) = q.front() {
            seen.push(p.to_vec());
            q.pop();
        }
        assert_eq!(seen, vec![vec![2, 2], vec![3, 3, 3], vec![4]]);
        q.pop(); // popping an empty queue is a no-op
    }

    #[test]
    fn buffers_are_reused() {
        let mut q = PacketQueue::new(2);
        q.push(&[0; 1500]);
        let ptr = q.front().unwrap().as_ptr();
        q.pop();
        q.push(&[1; 40]);
        assert_eq!(q.front().unwrap().as_ptr(), ptr, "the popped buffer is reused");
    }

    #[test]
    fn rx_drops_and_counts_when_full_or_oversize() {
        let mut dev = QueueDevice::new(1280);
        for _ in 0..RX_QUEUE_CAP + 5 {
            dev.push_rx(&[0x45; 60]);
        }
        dev.push_rx(&[0x45; 1281]);
        assert_eq!(dev.rx.len(), RX_QUEUE_CAP);
        assert_eq!(dev.stats.rx_dropped, 5);
        assert_eq!(dev.stats.rx_oversize, 1);
    }

    #[test]
    fn receive_respects_the_burst_budget() {
        let mut dev = QueueDevice::new(1500);
        for i in 0..DEVICE_BURST + 10 {
            dev.push_rx(&[i as u8]);
        }
        dev.begin_poll();
        let mut got = 0;
        while let Some((rx, _tx)) = dev.receive(now()) {
            rx.consume(|p| assert_eq!(p, [got as u8]));
            got += 1;
        }
        assert_eq!(got, DEVICE_BURST);
        assert_eq!(dev.rx.len(), 10);
        dev.begin_poll();
        assert!(dev.receive(now()).is_some(), "a new poll gets a new budget");
    }

    #[test]
    fn transmit_pushes_back_when_full() {
        let mut dev = QueueDevice::new(1500);
        for _ in 0..TX_QUEUE_CAP {
            dev.transmit(now()).expect("room").consume(20, |b| b.fill(7));
        }
        assert!(dev.transmit(now()).is_none());
        assert_eq!(dev.stats.tx_backpressure, 1);
        dev.push_rx(&[1]);
        dev.begin_poll();
        assert!(dev.receive(now()).is_none(), "no reply room: leave the packet queued");
        assert_eq!(dev.tx.front(), Some(&[7u8; 20][..]));
        dev.tx.pop();
        assert!(dev.receive(now()).is_some());
    }

    #[test]
    fn capabilities_do_not_clamp_the_window() {
        let caps = QueueDevice::new(1420).capabilities();
        assert_eq!(caps.medium, Medium::Ip);
        assert_eq!(caps.max_transmission_unit, 1420);
        let mss = 1420 - 40;
        assert!(caps.max_burst_size.unwrap() * mss >= 256 * 1024);
    }
}
