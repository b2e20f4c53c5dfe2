//! Configuration of the IPR double and its validation.
//!
//! Contract: [`ExitConfig::default`] is the real IPR (docs/ipr-protocol.md §3.4, §3.6, §2.4):
//! MTU 1500, versions up to 10, 60 s inactivity checked every 10 s, 20 ms downlink flush, no
//! non-global filter (the real one is on; tests use documentation ranges it would deny), a
//! perfect link. Timers are configurable so tests can run in seconds.

use std::time::Duration;

use super::impair::ImpairConfig;
use super::wire;

/// Smallest MTU accepted: the real v10 IPR ignores `NYM_MTU_SIZE` below 1280
/// (docs/ipr-protocol.md §3.4), which is also the IPv6 minimum link MTU the TUN needs.
pub const MIN_MTU: u16 = crate::pipeline::IPV6_MIN_MTU;

/// Configuration of the double; [`Default`] matches the real IPR.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitConfig {
    /// MTU reported in a v10 connect success (the real v10 default TUN MTU is 1500,
    /// docs/ipr-protocol.md §3.4).
    pub mtu: u16,
    /// Reported in v10 connect replies instead of `mtu` when set, unchecked: an exit that
    /// lies about its MTU (the client must not trust it).
    pub announce_mtu: Option<u16>,
    /// Highest accepted version: 10 (newest server) or 9 (a pre-v10 node, drops v10 silently).
    pub max_version: u8,
    /// A client is removed when idle for longer than this (60 s).
    pub idle_timeout: Duration,
    /// Period of the inactivity sweep (10 s).
    pub sweep_interval: Duration,
    /// Flush period when the connect request says `buffer_timeout: None` (20 ms).
    pub flush_interval: Duration,
    /// Apply the IPR's non-global destination filter (docs/ipr-protocol.md §5.2 step 5).
    pub deny_non_global: bool,
    /// Mixnet stand-in: delay, jitter, downlink loss and pacing.
    pub impair: ImpairConfig,
    /// Seed for IP allocation and the impairment model.
    pub seed: u64,
}

impl Default for ExitConfig {
    fn default() -> Self {
        Self {
            mtu: 1500,
            announce_mtu: None,
            max_version: wire::V10,
            idle_timeout: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(10),
            flush_interval: Duration::from_millis(20),
            deny_non_global: false,
            impair: ImpairConfig::default(),
            seed: 0,
        }
    }
}

/// An [`ExitConfig`] the double cannot honour.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Only 9 and 10 are meaningful ceilings (8 is always accepted, docs/ipr-protocol.md §1.3).
    #[error("max version must be 9 or 10, got {0}")]
    MaxVersion(u8),
    /// Below [`MIN_MTU`].
    #[error("mtu must be at least {MIN_MTU}, got {0}")]
    Mtu(u16),
    /// Timers must tick.
    #[error("{0} must be non-zero")]
    ZeroDuration(&'static str),
    /// Loss is a probability.
    #[error("loss must be within [0, 1], got {0}")]
    Loss(f64),
    /// The Health reply could not be built from the published type.
    #[error("building the health reply failed: {0}")]
    Health(String),
}

impl ExitConfig {
    /// Checks every field the server relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(wire::V9..=wire::V10).contains(&self.max_version) {
            return Err(ConfigError::MaxVersion(self.max_version));
        }
        if self.mtu < MIN_MTU {
            return Err(ConfigError::Mtu(self.mtu));
        }
        for (name, d) in [
            ("idle timeout", self.idle_timeout),
            ("sweep interval", self.sweep_interval),
            ("flush interval", self.flush_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if !(0.0..=1.0).contains(&self.impair.loss) {
            return Err(ConfigError::Loss(self.impair.loss));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        assert_eq!(ExitConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut ExitConfig)| {
            let mut c = ExitConfig::default();
            f(&mut c);
            c.validate()
        };
        assert_eq!(bad(|c| c.max_version = 8), Err(ConfigError::MaxVersion(8)));
        assert_eq!(bad(|c| c.mtu = 1279), Err(ConfigError::Mtu(1279)));
        assert!(matches!(bad(|c| c.flush_interval = Duration::ZERO), Err(ConfigError::ZeroDuration(_))));
        assert!(matches!(bad(|c| c.impair.loss = 1.5), Err(ConfigError::Loss(_))));
    }
}
