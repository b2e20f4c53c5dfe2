//! What the user can choose about the mixnet client, and how each choice maps onto nym-sdk 1.21.6.
//!
//! - `traffic`: [`TrafficProfile::Default`] leaves the SDK's `DebugConfig` untouched.
//!   [`TrafficProfile::Fast`] applies upstream's named high-traffic profile
//!   (`Config::set_high_default_traffic_volume` in nym-client-core-config-types;
//!   docs/performance.md §1.4), field by field because that method lives on a config type the SDK
//!   does not expose:
//!   - `traffic.message_sending_average_delay` 20 ms → 4 ms: the Poisson main stream ticks at
//!     250/s instead of 50/s, so the uplink cap rises from ~75 KB/s to ~375 KB/s of IPR
//!     payload (docs/nym-vpn-client.md §7), at the price of more cover packets when idle;
//!   - `traffic.average_packet_delay` 15 ms → 10 ms per mix hop (RTT ≈ 6 hops × delay, so
//!     ~30 ms less round trip; NymVPN's tuning allows 0–200 ms);
//!   - `cover_traffic.loop_cover_traffic_average_delay` 200 ms → 2 000 s: loop cover drops
//!     from 5 packets/s (~96 kbit/s) to ~none ("basically don't really send cover messages").
//!     The Poisson stream itself still emits cover when idle, so traffic stays unlinkable
//!     in timing, only its loop-cover component goes.
//! - `reply_surbs`: reply SURBs the exit should hold beyond its reserve of 10 even when idle,
//!   default 4; [`super::surbs::ReplySupply`] tops the exit up to that, or to what its reply
//!   rate needs, with the SURBs of the next data messages (`InputMessage::new_anonymous`), and
//!   sends none while it is stocked. A legacy SURB (the SDK's default Sphinx format) is 1164 B:
//!   the SDK's fixed 10 per message cost ~7 Sphinx packets beside a message of one.
//! - `storage_dir`: `None` = ephemeral keys (a new Nym address per run, the SDK default);
//!   `Some(dir)` = `MixnetClientBuilder::new_with_default_storage` in `dir` (mode 0700): same
//!   identity, same registered entry gateway across runs.
//! - `nym_api_urls` + `directory_timeout`: the directory to ask and how long to wait for it.
//!   The mainnet list is the default; other URLs replace both the nym-api list and the
//!   legacy validator endpoints in `NymNetworkDetails` (the SDK reads both).
//! - `connect_timeout`: cap on joining the mixnet once the directory has answered.

use std::path::PathBuf;
use std::time::Duration;

use nym_sdk::{DebugConfig, NymNetworkDetails, ValidatorDetails};

use super::MixnetError;

/// Fast profile: mean interval of the Poisson sending stream. The three `FAST_*` values are
/// upstream's high-traffic profile (nym-client-core-config-types `set_high_default_traffic_volume`).
pub const FAST_MESSAGE_SENDING_AVERAGE_DELAY: Duration = Duration::from_millis(4);
/// Fast profile: mean delay at each mix hop.
pub const FAST_AVERAGE_PACKET_DELAY: Duration = Duration::from_millis(10);
/// Fast profile: mean loop-cover interval (2000 s, practically no loop cover).
pub const FAST_LOOP_COVER_AVERAGE_DELAY: Duration = Duration::from_millis(2_000_000);

/// Default spare reply SURBs the exit holds beyond its reserve (see [`super::surbs`]).
pub const DEFAULT_REPLY_SURBS: u32 = 4;
/// Reply SURBs on a control message (Connect, Disconnect). The IPR keeps the first 10 SURBs of
/// a sender in reserve and answers only with SURBs above that (nym-node's service-provider
/// config: threshold 10); with fewer it first spends the reserve asking us for more, one extra
/// mixnet round trip before the Connect is answered. 20 is what upstream's own IPR client
/// sends with its Connect. See ARCHITECTURE.md, "What the real IPR expects".
pub const CONTROL_REPLY_SURBS: u32 = 20;
/// The directory must answer within this, so that `up`/`exits` fail within 15 s offline.
pub const DEFAULT_DIRECTORY_TIMEOUT: Duration = Duration::from_secs(10);
/// Gateway registration is one websocket handshake plus a key exchange; 30 s covers a slow
/// gateway while still ending a hang.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::transport::TrafficProfile;

/// How to build and use the mixnet client; the module docs say what each setting maps onto.
#[derive(Debug, Clone)]
pub struct MixnetOptions {
    /// Sending pace, per-hop delay and loop cover (`--traffic`).
    pub traffic: TrafficProfile,
    /// Reply SURBs the exit holds beyond its reserve even when idle (see [`super::surbs`]).
    pub reply_surbs: u32,
    /// Reply SURBs on a control message (default [`CONTROL_REPLY_SURBS`]). Fewer than 11 make
    /// a Connect wait a round trip for the IPR's own request for more; settable so the bench
    /// can show that.
    pub control_surbs: u32,
    /// `None`: ephemeral identity. `Some(dir)`: persistent keys and gateway registration.
    pub storage_dir: Option<PathBuf>,
    /// How long any directory query may take before it counts as unreachable.
    pub directory_timeout: Duration,
    /// nym-api base URLs, tried by the SDK's HTTP client in order. Default: mainnet's.
    pub nym_api_urls: Vec<String>,
    /// How long joining the mixnet may take once the directory has answered.
    pub connect_timeout: Duration,
    /// The entry gateway to register with (its identity, base58); `None`: the SDK picks one.
    pub gateway: Option<String>,
    /// `SO_MARK` for the gateway websocket, set before it connects: the VPN's routing mark
    /// (system/mark.rs); `None` (the library) leaves sockets unmarked.
    pub socket_mark: Option<u32>,
    /// Where the connect steps (directory, exit, gateway, registration) are reported.
    pub progress: crate::transport::Progress,
}

impl Default for MixnetOptions {
    fn default() -> Self {
        MixnetOptions {
            traffic: TrafficProfile::Default,
            reply_surbs: DEFAULT_REPLY_SURBS,
            control_surbs: CONTROL_REPLY_SURBS,
            storage_dir: None,
            directory_timeout: DEFAULT_DIRECTORY_TIMEOUT,
            nym_api_urls: mainnet_api_urls(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            gateway: None,
            socket_mark: None,
            progress: crate::transport::Progress::default(),
        }
    }
}

/// Mainnet's nym-api URLs as published in nym-network-defaults 1.21.6.
pub fn mainnet_api_urls() -> Vec<String> {
    NymNetworkDetails::new_mainnet().nym_api_urls().into_iter().map(|u| u.url).collect()
}

impl MixnetOptions {
    /// The SDK `DebugConfig` for this profile (see the module doc for each knob).
    pub fn debug_config(&self) -> DebugConfig {
        let mut cfg = DebugConfig::default();
        if self.traffic == TrafficProfile::Fast {
            cfg.traffic.message_sending_average_delay = FAST_MESSAGE_SENDING_AVERAGE_DELAY;
            cfg.traffic.average_packet_delay = FAST_AVERAGE_PACKET_DELAY;
            cfg.cover_traffic.loop_cover_traffic_average_delay = FAST_LOOP_COVER_AVERAGE_DELAY;
        }
        cfg
    }

    /// Refuses options that can never work.
    pub fn validate(&self) -> Result<(), MixnetError> {
        if self.reply_surbs == 0 || self.control_surbs == 0 {
            return Err(MixnetError::NoReplySurbs);
        }
        Ok(())
    }

    /// Host and port of each directory URL (for keeping the directory reachable).
    pub fn directory_hosts(&self) -> Vec<(String, u16)> {
        self.nym_api_urls.iter().filter_map(|u| host_port(u)).collect()
    }

    /// Every (host, port) the SDK's HTTP may ask for with these options: [`Self::directory_hosts`],
    /// the hosts of both nym-api lists of the network details the SDK is given (`nym_api_urls`,
    /// read by its HTTP clients, and `endpoints[].api_url`, read by its gateway selection), and
    /// the fronting hosts some mainnet URLs carry, on 443 (nym-http-api-client dials
    /// `https://{front}`; it fronts only under a fronting policy nothing in nym-sdk 1.21.6
    /// turns on). The directory relay's allowlist (docs/directory-relay.md §3).
    pub fn relay_allowlist(&self) -> Result<Vec<(String, u16)>, MixnetError> {
        let net = self.network_details()?;
        let mut out = self.directory_hosts();
        let api_urls = net.nym_api_urls();
        let listed =
            api_urls.iter().map(|a| a.url.as_str()).chain(net.endpoints.iter().filter_map(|e| e.api_url.as_deref()));
        out.extend(listed.filter_map(host_port));
        let fronts = api_urls.iter().flat_map(|a| a.front_hosts.iter().flatten());
        out.extend(fronts.map(|f| (f.trim_start_matches("https://").trim_end_matches('/').to_string(), 443)));
        let mut unique: Vec<(String, u16)> = Vec::new();
        for hp in out {
            if !unique.contains(&hp) {
                unique.push(hp);
            }
        }
        Ok(unique)
    }

    /// The directory URLs, for error messages.
    pub fn directory_label(&self) -> String {
        if self.nym_api_urls.is_empty() {
            "(no nym-api URL configured)".to_string()
        } else {
            self.nym_api_urls.join(", ")
        }
    }

    /// Network details pointing every nym-api consumer of the SDK at `nym_api_urls`.
    /// Mainnet's own list is used verbatim so that its fronting hosts are kept.
    pub fn network_details(&self) -> Result<NymNetworkDetails, MixnetError> {
        let mainnet = NymNetworkDetails::new_mainnet();
        let default_urls: Vec<String> = mainnet.nym_api_urls().into_iter().map(|u| u.url).collect();
        if self.nym_api_urls == default_urls {
            return Ok(mainnet);
        }
        for u in &self.nym_api_urls {
            if !plausible_url(u) {
                return Err(MixnetError::BadDirectoryUrl(u.clone()));
            }
        }
        if self.nym_api_urls.is_empty() {
            return Err(MixnetError::BadDirectoryUrl(String::new()));
        }
        let mut net = mainnet;
        let nyxd = net.endpoints.first().map(|e| e.nyxd_url.clone()).unwrap_or_default();
        // The builder's gateway selection reads `endpoints[].api_url`, the base client reads
        // `nym_api_urls`; both must point at the same place.
        net.endpoints =
            self.nym_api_urls.iter().map(|u| ValidatorDetails::new(nyxd.clone(), Some(u.clone()), None)).collect();
        net.nym_api_urls = Some(api_urls(&self.nym_api_urls));
        Ok(net)
    }
}

/// `http(s)://HOST[:PORT]/…` → (HOST without IPv6 brackets, PORT or the scheme's default).
fn host_port(u: &str) -> Option<(String, u16)> {
    let (default_port, rest) = match u.split_once("://")? {
        ("https", r) => (443, r),
        ("http", r) => (80, r),
        _ => return None,
    };
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, default_port), // bare IPv6
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Builds nym-network-defaults' `ApiUrl` values through their serde form: the type is not
/// re-exported by nym-sdk and we do not depend on that crate directly.
pub(crate) fn api_urls<T: serde::de::DeserializeOwned>(urls: &[String]) -> Vec<T> {
    urls.iter()
        .filter_map(|u| serde_json::from_value(serde_json::json!({ "url": u, "front_hosts": null })).ok())
        .collect()
}

/// A cheap check before the URL reaches `ValidatorDetails::api_url()`, which panics on a
/// malformed URL; the HTTP client still does the real parsing.
fn plausible_url(u: &str) -> bool {
    let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_is_the_sdk_default() {
        let o = MixnetOptions::default();
        assert_eq!(o.debug_config(), DebugConfig::default());
        assert_eq!(o.reply_surbs, 4);
        assert_eq!(o.control_surbs, CONTROL_REPLY_SURBS);
        assert_eq!(o.directory_timeout, Duration::from_secs(10));
        assert!(o.storage_dir.is_none());
    }

    #[test]
    fn zero_surbs_anywhere_are_refused() {
        assert!(MixnetOptions::default().validate().is_ok());
        for o in [
            MixnetOptions { reply_surbs: 0, ..Default::default() },
            MixnetOptions { control_surbs: 0, ..Default::default() },
        ] {
            assert!(matches!(o.validate(), Err(MixnetError::NoReplySurbs)));
        }
    }

    #[test]
    fn fast_profile_changes_exactly_the_three_knobs() {
        let o = MixnetOptions { traffic: TrafficProfile::Fast, ..Default::default() };
        let cfg = o.debug_config();
        let def = DebugConfig::default();
        assert_eq!(cfg.traffic.message_sending_average_delay, Duration::from_millis(4));
        assert_eq!(cfg.traffic.average_packet_delay, Duration::from_millis(10));
        assert_eq!(cfg.cover_traffic.loop_cover_traffic_average_delay, Duration::from_secs(2000));
        // Each is a real change from the SDK's defaults (20 ms, 15 ms, 200 ms) ...
        assert!(cfg.traffic.message_sending_average_delay < def.traffic.message_sending_average_delay);
        assert!(cfg.traffic.average_packet_delay < def.traffic.average_packet_delay);
        assert!(
            cfg.cover_traffic.loop_cover_traffic_average_delay > def.cover_traffic.loop_cover_traffic_average_delay
        );
        // ... and nothing else moved (Poisson stays on, retransmissions, SURB policy, topology).
        let mut reset = cfg;
        reset.traffic.message_sending_average_delay = def.traffic.message_sending_average_delay;
        reset.traffic.average_packet_delay = def.traffic.average_packet_delay;
        reset.cover_traffic.loop_cover_traffic_average_delay = def.cover_traffic.loop_cover_traffic_average_delay;
        assert_eq!(reset, def);
        assert!(cfg.validate());
    }

    #[test]
    fn mainnet_urls_are_the_default_and_kept_verbatim() {
        let o = MixnetOptions::default();
        assert!(!o.nym_api_urls.is_empty());
        assert!(o.nym_api_urls.iter().all(|u| u.starts_with("https://")));
        let net = o.network_details().unwrap();
        assert_eq!(net.nym_api_urls(), NymNetworkDetails::new_mainnet().nym_api_urls());
    }

    #[test]
    fn custom_urls_replace_both_directory_lists() {
        let urls = vec!["http://127.0.0.1:9/".to_string(), "http://[::1]:9/api/".to_string()];
        let o = MixnetOptions { nym_api_urls: urls.clone(), ..Default::default() };
        let net = o.network_details().unwrap();
        let got: Vec<String> = net.nym_api_urls().into_iter().map(|u| u.url).collect();
        assert_eq!(got, urls);
        let legacy: Vec<Option<String>> = net.endpoints.iter().map(|e| e.api_url.clone()).collect();
        assert_eq!(legacy, urls.iter().cloned().map(Some).collect::<Vec<_>>());
        assert!(o.directory_label().contains("127.0.0.1:9"));
    }

    #[test]
    fn directory_hosts_are_read_from_the_urls() {
        let o = MixnetOptions {
            nym_api_urls: vec![
                "http://198.18.0.20:8000/".into(),
                "https://validator.example/api/".into(),
                "http://[2001:db8::20]:8080/".into(),
                "ftp://nope/".into(),
            ],
            ..Default::default()
        };
        let want = [("198.18.0.20", 8000), ("validator.example", 443), ("2001:db8::20", 8080)];
        let got = o.directory_hosts();
        assert_eq!(got.iter().map(|(h, p)| (h.as_str(), *p)).collect::<Vec<_>>(), want);
    }

    #[test]
    fn the_relay_allows_every_directory_host_of_the_network_details() {
        let mainnet = MixnetOptions::default().relay_allowlist().unwrap();
        for want in [("validator.nymtech.net", 443), ("nym-frontdoor.global.ssl.fastly.net", 443)] {
            assert!(mainnet.iter().any(|(h, p)| (h.as_str(), *p) == want), "{want:?} in {mainnet:?}");
        }
        // Mainnet's fronted URL carries a front host (nym-network-defaults 1.21.6 mainnet.rs).
        assert!(mainnet.iter().any(|(h, p)| h == "yelp.global.ssl.fastly.net" && *p == 443), "{mainnet:?}");
        assert!(mainnet.iter().all(|(h, _)| !h.contains('/') && !h.contains(':')), "{mainnet:?}");
        let mut seen = mainnet.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), mainnet.len());

        let local = MixnetOptions { nym_api_urls: vec!["http://198.18.0.20:8000/".into()], ..Default::default() };
        assert_eq!(local.relay_allowlist().unwrap(), [("198.18.0.20".to_string(), 8000)]);
        let bad = MixnetOptions { nym_api_urls: vec!["ftp://x/".into()], ..Default::default() };
        assert!(bad.relay_allowlist().is_err());
    }

    #[test]
    fn malformed_urls_are_rejected_before_the_sdk_sees_them() {
        for bad in ["", "127.0.0.1:9", "ftp://x/", "http://", "http:///x", "http://a b/"] {
            let o = MixnetOptions { nym_api_urls: vec![bad.to_string()], ..Default::default() };
            assert!(matches!(o.network_details(), Err(MixnetError::BadDirectoryUrl(_))), "{bad}");
        }
        let none = MixnetOptions { nym_api_urls: vec![], ..Default::default() };
        assert!(none.network_details().is_err());
    }
}
