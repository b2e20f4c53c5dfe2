//! Pipeline counters.
//!
//! Contract: every packet handed to the pipeline ends in exactly one outcome, and every outcome
//! that is not "forwarded" has its own counter, so `status --json` can explain any loss. The
//! counters are plain `u64` (the pipeline is single-threaded and owned by the driver, which
//! copies the struct out for reporting); they wrap only after 2^64 events.

use serde::Serialize;

/// Counters of the pipeline, see the field docs for what each one counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Packets read from the TUN (handed to `handle_tun`).
    pub tun_rx_packets: u64,
    /// Bytes of those packets, IP header included.
    pub tun_rx_bytes: u64,
    /// Packets handed to the exit (`Action::ToExit`).
    pub exit_tx_packets: u64,
    /// Bytes of those packets, IP header included.
    pub exit_tx_bytes: u64,
    /// Packets received from the exit (handed to `handle_exit`).
    pub exit_rx_packets: u64,
    /// Bytes of those packets, IP header included.
    pub exit_rx_bytes: u64,
    /// Packets written to the TUN (`Action::ToTun`, including generated ICMP).
    pub tun_tx_packets: u64,
    /// Bytes of those packets, IP header included.
    pub tun_tx_bytes: u64,

    /// Unparseable packet from the TUN (truncated, bad version/header length, bad L4 header).
    pub malformed_tun: u64,
    /// Unparseable packet from the exit.
    pub malformed_exit: u64,
    /// Packet from the TUN while no address is allocated (or no IPv6 address for an IPv6 packet).
    pub not_connected: u64,
    /// Packet from the TUN with an unusable address: unspecified, multicast, broadcast or
    /// link-local source or destination (kernel chatter such as MLD or router solicitations).
    pub filtered_tun: u64,
    /// Non-TCP/UDP/echo packet from a source other than the TUN's own address: without ports it
    /// cannot be told apart on the way back, so only the TUN's address gets a 1:1 mapping.
    pub unsupported_tun: u64,
    /// New flow refused because its NAT table is limited to 0 entries (a full table evicts
    /// instead: `nat_evicted`, `nat_recycled`).
    pub nat_table_full: u64,
    /// New flow refused because no free external port was found within the probe budget.
    pub nat_ports_exhausted: u64,
    /// NAT mappings created.
    pub nat_created: u64,
    /// NAT mappings removed by idle expiry (an answered DNS lookup's after its 2 s included).
    pub nat_expired: u64,
    /// NAT mappings replaced by a new flow because their table was full: the least valuable,
    /// longest idle one of the table.
    pub nat_evicted: u64,
    /// NAT mappings replaced by a new flow of the same local source because that source held
    /// its share (half a table): its own least valuable, longest idle one.
    pub nat_recycled: u64,
    /// Packet from the exit for which no mapping exists (unsolicited, or expired).
    pub no_mapping: u64,
    /// Packet from the exit whose destination is not our allocated address.
    pub wrong_dst_exit: u64,

    /// Fragments from the TUN stored for reassembly (datagram not yet complete).
    pub frag_stored_tun: u64,
    /// Fragments from the exit stored for reassembly.
    pub frag_stored_exit: u64,
    /// Datagrams from the TUN reassembled and forwarded whole.
    pub reassembled_tun: u64,
    /// Datagrams from the exit reassembled and forwarded whole.
    pub reassembled_exit: u64,
    /// Partial datagrams dropped because their reassembly timer ran out.
    pub frag_timeout: u64,
    /// Partial datagrams evicted because of the memory cap or the datagram count cap.
    pub frag_memory: u64,
    /// Datagrams dropped because of overlapping fragments (RFC 5722).
    pub frag_overlap: u64,
    /// Invalid fragments (length not a multiple of 8, beyond 65535, inconsistent last fragment,
    /// too many fragments).
    pub frag_invalid: u64,

    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" written into the TUN.
    pub too_big_sent: u64,
    /// Oversized packets dropped without an ICMP answer (rate limit, or the packet was itself an
    /// ICMP error: RFC 1122 §3.2.2, RFC 4443 §2.4(e)).
    pub too_big_dropped: u64,
    /// TCP SYNs whose MSS option was lowered.
    pub mss_clamped: u64,
    /// ICMP errors from the exit whose embedded packet was translated.
    pub icmp_errors_in: u64,
    /// ICMP errors from the TUN whose embedded packet was translated.
    pub icmp_errors_out: u64,
}

impl Stats {
    /// All packets that were dropped, for a one-number health check in `status`. Not included:
    /// `frag_stored_*` (consumed, not lost) and `frag_timeout` / `frag_memory` (they count
    /// datagrams, whose fragments were already counted as stored).
    pub fn dropped(&self) -> u64 {
        self.malformed_tun
            + self.malformed_exit
            + self.not_connected
            + self.filtered_tun
            + self.unsupported_tun
            + self.nat_table_full
            + self.nat_ports_exhausted
            + self.no_mapping
            + self.wrong_dst_exit
            + self.frag_invalid
            + self.frag_overlap
            + self.too_big_dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_sums_packet_drops_only() {
        // frag_stored_* is consumption, frag_timeout / frag_memory count datagrams.
        let s = Stats { malformed_tun: 2, no_mapping: 3, frag_stored_tun: 9, frag_timeout: 1, ..Stats::default() };
        assert_eq!(s.dropped(), 5);
        fn assert_serialize<T: Serialize + Copy + Default>() {}
        assert_serialize::<Stats>();
    }
}
