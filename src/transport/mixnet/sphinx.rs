//! What the mixnet costs, in Sphinx packets: the SDK's own counters, read back.
//!
//! Our counters ([`super::MixnetStats`]) see messages; the mixnet carries fixed-size Sphinx
//! packets, and what a user pays in time and cover is packets per MB
//! (docs/performance.md §3.4). nym-sdk 1.21.6 has no getter for them, but its statistics task
//! (nym-statistics-common 1.21.6, `clients/packet_statistics.rs`) counts every packet it
//! sends and receives into nym-metrics' process-wide registry, as integer counters named
//! `nym_statistics_common_<event>`; `scripts/bench-mixnet.sh` reads the same numbers from the
//! SDK's debug log. We read the registry's text form.
//!
//! The registry is per process and cumulative: a rebuilt client (the VPN builds a new one when
//! the old one stops) adds to the same counters, so a transport subtracts what it found when
//! it started ([`PacketCounts::since`]).

use serde::Serialize;

/// Sphinx packets counted by the SDK's statistics task.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PacketCounts {
    /// Real (non-cover) packets sent, retransmissions included.
    pub real_sent: u64,
    /// Real packets received (the exit's replies, through our SURBs).
    pub real_received: u64,
    /// Packets queued again because their acknowledgement did not come.
    pub retransmissions: u64,
    /// Packets that carried more reply SURBs because the exit asked for them.
    pub surb_top_ups: u64,
}

/// The counter names, without the crate prefix the SDK's `inc!` macro adds.
const PREFIX: &str = "nym_statistics_common_";

impl PacketCounts {
    /// The counts now, for the whole process.
    pub fn read() -> PacketCounts {
        PacketCounts::parse(&String::from_utf8_lossy(&nym_metrics::REGISTRY.gather()))
    }

    /// The counts in a Prometheus text exposition (`name value` lines; `#` lines are comments).
    fn parse(text: &str) -> PacketCounts {
        let mut c = PacketCounts::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.split_once(' ') else { continue };
            let Some(event) = name.strip_prefix(PREFIX) else { continue };
            // Counters are integers, but the format allows floats ("1e+06"); both parse.
            let Ok(v) = value.trim().parse::<f64>() else { continue };
            let slot = match event {
                "real_packets_sent" => &mut c.real_sent,
                "real_packets_received" => &mut c.real_received,
                "retransmissions_queued" => &mut c.retransmissions,
                "additional_reply_surbs_queued" => &mut c.surb_top_ups,
                _ => continue,
            };
            *slot = v as u64;
        }
        c
    }

    /// What was counted since `start` (a counter never goes back; saturating all the same).
    pub fn since(self, start: PacketCounts) -> PacketCounts {
        PacketCounts {
            real_sent: self.real_sent.saturating_sub(start.real_sent),
            real_received: self.real_received.saturating_sub(start.real_received),
            retransmissions: self.retransmissions.saturating_sub(start.retransmissions),
            surb_top_ups: self.surb_top_ups.saturating_sub(start.surb_top_ups),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_counters_it_knows_and_nothing_else() {
        let text = "# HELP nym_statistics_common_real_packets_sent x\n\
                    # TYPE nym_statistics_common_real_packets_sent counter\n\
                    nym_statistics_common_real_packets_sent 812\n\
                    nym_statistics_common_real_packets_sent_size 1700000\n\
                    nym_statistics_common_real_packets_received 1.65e3\n\
                    nym_statistics_common_retransmissions_queued 4\n\
                    nym_statistics_common_additional_reply_surbs_queued 2\n\
                    other_real_packets_sent 99\n\
                    garbage\n";
        let c = PacketCounts::parse(text);
        assert_eq!(c, PacketCounts { real_sent: 812, real_received: 1650, retransmissions: 4, surb_top_ups: 2 });
        let later = PacketCounts { real_sent: 900, ..c };
        assert_eq!(later.since(c), PacketCounts { real_sent: 88, ..Default::default() });
    }

    #[test]
    fn reads_the_registry_the_sdk_counts_into() {
        // What the SDK's `inc!("real_packets_sent")` does from inside nym-statistics-common.
        let before = PacketCounts::read();
        nym_metrics::REGISTRY.maybe_register_and_inc("nym_statistics_common_real_packets_sent", None);
        assert_eq!(PacketCounts::read().since(before).real_sent, 1);
    }
}
