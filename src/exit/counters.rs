//! Counters of the IPR double: every message and packet handled or dropped is one increment.
//!
//! Contract: plain `u64` fields, only ever incremented by the server; the driver logs them
//! (`Display` gives one `name=value` line) and tests assert on them. A drop that the real IPR
//! would make silently is still silent on the wire; the counter is how a test sees it.

use std::fmt;

/// What the server has seen and done. Field names say what was counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Transport messages received (before impairment and checks).
    pub rx_messages: u64,
    /// LP frames with an unknown stream msg_type (docs/ipr-protocol.md §6.2 item 1).
    pub lp_bad_attributes: u64,
    /// LP frames with an empty payload, i.e. stream Opens, ignored (docs/ipr-protocol.md §4.4).
    pub lp_open_ignored: u64,
    /// Messages shorter than 2 bytes.
    pub too_short: u64,
    /// Messages whose second byte is not the IPR service provider type.
    pub bad_service_provider: u64,
    /// Versions outside 8..=max_version.
    pub bad_version: u64,
    /// Requests that did not decode with the published v8 tree.
    pub undecodable: u64,
    /// v8 inside LP, or v9/v10 bare.
    pub wrong_transport: u64,
    /// New sessions (including stream reconnects).
    pub connects: u64,
    /// v8 re-connects of a known client (same IPs, nothing changed).
    pub reconnects_v8: u64,
    /// LP re-connects of a known client (old session dropped, new IPs).
    pub reconnects_stream: u64,
    /// Connects refused with `NoAvailableIp`.
    pub no_available_ip: u64,
    /// Connects with `buffer_timeout: Some(0)`, dropped (the real IPR would panic).
    pub connect_zero_buffer_timeout: u64,
    /// Successful Disconnect requests.
    pub disconnects: u64,
    /// Ping requests answered with Pong.
    pub pings: u64,
    /// Clients removed by the inactivity sweep.
    pub idle_removed: u64,
    /// Uplink packets written to the TUN queue.
    pub uplink_forwarded: u64,
    /// Uplink packets without a parseable IP + transport header.
    pub uplink_unparseable: u64,
    /// Uplink packets whose source IP belongs to no client.
    pub uplink_unknown_source: u64,
    /// Uplink packets denied by the non-global filter (answered with Info).
    pub uplink_denied: u64,
    /// Data requests whose bundle ended in an incomplete entry.
    pub uplink_truncated_bundles: u64,
    /// Uplink packets dropped because the TUN queue was full.
    pub tun_queue_full: u64,
    /// Packets read from the TUN.
    pub tun_rx: u64,
    /// TUN packets without a readable destination address.
    pub downlink_unparseable: u64,
    /// TUN packets for an address no client owns.
    pub downlink_unknown_destination: u64,
    /// TUN packets longer than the u16 bundle length prefix.
    pub downlink_oversize: u64,
    /// Downlink Data responses produced.
    pub downlink_bundles: u64,
    /// Downlink Data responses lost by the impairment model.
    pub impair_lost: u64,
    /// Messages refused by a full impairment queue.
    pub impair_queue_full: u64,
    /// Messages dropped because the transmit queue was full.
    pub transmit_queue_full: u64,
    /// Responses that failed to encode (never expected).
    pub encode_errors: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = [
            ("rx", self.rx_messages),
            ("lp_bad_attributes", self.lp_bad_attributes),
            ("lp_open_ignored", self.lp_open_ignored),
            ("too_short", self.too_short),
            ("bad_service_provider", self.bad_service_provider),
            ("bad_version", self.bad_version),
            ("undecodable", self.undecodable),
            ("wrong_transport", self.wrong_transport),
            ("connects", self.connects),
            ("reconnects_v8", self.reconnects_v8),
            ("reconnects_stream", self.reconnects_stream),
            ("no_available_ip", self.no_available_ip),
            ("connect_zero_buffer_timeout", self.connect_zero_buffer_timeout),
            ("disconnects", self.disconnects),
            ("pings", self.pings),
            ("idle_removed", self.idle_removed),
            ("uplink_forwarded", self.uplink_forwarded),
            ("uplink_unparseable", self.uplink_unparseable),
            ("uplink_unknown_source", self.uplink_unknown_source),
            ("uplink_denied", self.uplink_denied),
            ("uplink_truncated_bundles", self.uplink_truncated_bundles),
            ("tun_queue_full", self.tun_queue_full),
            ("tun_rx", self.tun_rx),
            ("downlink_unparseable", self.downlink_unparseable),
            ("downlink_unknown_destination", self.downlink_unknown_destination),
            ("downlink_oversize", self.downlink_oversize),
            ("downlink_bundles", self.downlink_bundles),
            ("impair_lost", self.impair_lost),
            ("impair_queue_full", self.impair_queue_full),
            ("transmit_queue_full", self.transmit_queue_full),
            ("encode_errors", self.encode_errors),
        ];
        let mut first = true;
        for (name, value) in fields {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}
