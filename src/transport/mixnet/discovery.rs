//! IPR exits from the Nym directory, picked as the SDK picks them (docs/ipr-protocol.md §3.1).
//!
//! The directory calls are nym-sdk 1.21.6's own (`ip_packet_client::discovery`):
//! `retrieve_exit_nodes_with_performance` asks nym-api (paged, `?page=N`) for
//! `GET v2/nym-nodes/described` (`get_all_described_nodes_v2`: release version and the node's
//! IPR Nym address) and `GET v2/unstable/nym-nodes/skimmed/exit-gateways`
//! (`get_all_basic_exit_assigned_nodes_with_metadata`: identity, declared roles, performance),
//! keeps exits
//! that declare `exit_ipr`, run a release ≥ 1.30.0 (v9, LP framing) and publish a parseable IPR
//! address. We re-check the version, de-duplicate, rank and pick here, in pure functions that
//! the tests drive with hand-built lists. `lookup_node_version` (the described list again) gives
//! the release of an exit named with `--ipr`.
//!
//! Performance: the SDK rounds nym-api's score to an integer percent; [`ExitInfo::performance`]
//! is that value as a fraction in 0.0..=1.0.

use std::time::Duration;

use nym_sdk::ip_packet_client::discovery::{self as sdk, IprWithPerformance};
use nym_sdk::mixnet::NodeIdentity;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use super::{error_chain, MixnetError, MixnetOptions};
use crate::transport::Step;

/// Upper bound on the exits we keep (mainnet has a few hundred exit gateways).
pub const MAX_EXITS: usize = 4096;

/// One usable IPR exit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExitInfo {
    /// The IPR's Nym address (`<identity>.<key>@<gateway>`): what `--ipr` takes.
    pub address: String,
    /// The exit gateway's ed25519 identity (base58).
    pub identity: String,
    /// The node's release version, e.g. "1.37.0".
    pub version: String,
    /// IPR protocol the node speaks best: 10 (≥ 1.37.0), 9 (≥ 1.30.0).
    pub ipr_protocol: Option<u8>,
    /// Directory performance score as a fraction, 0.0..=1.0.
    pub performance: f64,
}

/// A directory entry before ranking: what the SDK returns, as plain values.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The IPR's Nym address (`<identity>.<key>@<gateway>`).
    pub address: String,
    /// The exit gateway's ed25519 identity (base58).
    pub identity: String,
    /// The node's release version.
    pub version: semver::Version,
    /// Percent, 0..=100.
    pub performance: u8,
}

impl From<&IprWithPerformance> for Candidate {
    fn from(n: &IprWithPerformance) -> Self {
        Candidate {
            address: n.address.to_string(),
            identity: n.identity.to_base58_string(),
            version: n.version.clone(),
            performance: n.performance,
        }
    }
}

/// Node release → IPR protocol version (`nym_ip_packet_requests::best_supported_version`).
pub fn ipr_protocol(version: &semver::Version) -> Option<u8> {
    nym_ip_packet_requests::best_supported_version(version)
}

/// Keeps exits that speak v9 or v10, one entry per address (the better-scored one), sorted by
/// performance, then by protocol (v10 first), then by identity so the order is stable.
pub fn rank(candidates: impl IntoIterator<Item = Candidate>) -> Vec<ExitInfo> {
    let mut out: Vec<ExitInfo> = Vec::new();
    for c in candidates {
        let Some(proto) = ipr_protocol(&c.version) else {
            tracing::trace!(identity = %c.identity, version = %c.version, "exit too old for v9");
            continue;
        };
        let info = ExitInfo {
            address: c.address,
            identity: c.identity,
            version: c.version.to_string(),
            ipr_protocol: Some(proto),
            performance: f64::from(c.performance.min(100)) / 100.0,
        };
        match out.iter().position(|e| e.address == info.address) {
            Some(i) if out[i].performance < info.performance => out[i] = info,
            Some(_) => {}
            None if out.len() < MAX_EXITS => out.push(info),
            None => {}
        }
    }
    out.sort_by(|a, b| {
        b.performance
            .total_cmp(&a.performance)
            .then(b.ipr_protocol.cmp(&a.ipr_protocol))
            .then_with(|| a.identity.cmp(&b.identity))
    });
    out
}

/// Weighted random pick by performance, as the SDK's `get_best_ipr` does; exits scored 0 are
/// never picked (a zero score means the network monitor could not route through them).
pub fn choose<'a, R: Rng + ?Sized>(exits: &'a [ExitInfo], rng: &mut R) -> Option<&'a ExitInfo> {
    exits.choose_weighted(rng, |e| e.performance.max(0.0)).ok()
}

/// The SDK's nym-api client for the configured URLs. A macro because the client type
/// (`nym_http_api_client::Client`) is not re-exported by nym-sdk, so no fn can name it.
macro_rules! api_client {
    ($opts:expr) => {
        sdk::create_nym_api_client($opts.network_details()?.nym_api_urls()).map_err(|e| match e {
            nym_sdk::Error::NoNymAPIUrl => MixnetError::BadDirectoryUrl($opts.directory_label()),
            e => MixnetError::Client(error_chain(&e)),
        })?
    };
}

/// All usable IPR exits, best first.
pub async fn list_exits(opts: &MixnetOptions) -> Result<Vec<ExitInfo>, MixnetError> {
    let client = api_client!(opts);
    let nodes = directory(opts, sdk::retrieve_exit_nodes_with_performance(client)).await?;
    let exits = rank(nodes.iter().map(Candidate::from));
    tracing::debug!(listed = nodes.len(), usable = exits.len(), "IPR exits from the directory");
    Ok(exits)
}

/// One exit, weighted random by performance among [`list_exits`].
pub async fn best_ipr(opts: &MixnetOptions) -> Result<ExitInfo, MixnetError> {
    let exits = list_exits(opts).await?;
    opts.progress.report(Step::Directory { exits: exits.len() });
    let pick = choose(&exits, &mut rand::thread_rng()).cloned().ok_or(MixnetError::NoExits)?;
    let why = format!(
        "picked among {} weighted by performance: {:.0}%, nym-node {}",
        exits.len(),
        pick.performance * 100.0,
        pick.version
    );
    opts.progress.report(Step::Exit { exit: pick.address.clone(), why });
    tracing::info!(ipr = %pick.address, version = %pick.version, performance = pick.performance, "picked IPR exit");
    Ok(pick)
}

/// The IPR protocol of the exit gateway `gateway` (from its release in the directory).
/// `Ok(None)` if the directory does not list it: the session then tries v10 and falls back to
/// v9 by itself. A release older than 1.30.0 speaks neither v9 nor v10 (no LP framing) and
/// would ignore every Connect; it is refused here rather than after a 75 s silence.
pub(crate) async fn lookup_protocol(opts: &MixnetOptions, gateway: NodeIdentity) -> Result<Option<u8>, MixnetError> {
    let client = api_client!(opts);
    match tokio::time::timeout(opts.directory_timeout, sdk::lookup_node_version(&client, gateway)).await {
        Ok(Ok(v)) => match ipr_protocol(&v) {
            Some(p) => {
                opts.progress.report(Step::Release { version: v.to_string(), protocol: Some(p) });
                Ok(Some(p))
            }
            None => Err(MixnetError::ExitTooOld { version: v.to_string() }),
        },
        Ok(Err(nym_sdk::Error::NoGatewayAvailable)) => Ok(None),
        Ok(Err(e)) => Err(unreachable(opts, error_chain(&e))),
        Err(_) => Err(unreachable(opts, timeout_reason(opts.directory_timeout))),
    }
}

/// Runs one directory query under `directory_timeout`; every failure names the URLs.
async fn directory<T>(
    opts: &MixnetOptions,
    query: impl std::future::Future<Output = Result<T, nym_sdk::Error>>,
) -> Result<T, MixnetError> {
    match tokio::time::timeout(opts.directory_timeout, query).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unreachable(opts, error_chain(&e))),
        Err(_) => Err(unreachable(opts, timeout_reason(opts.directory_timeout))),
    }
}

pub(crate) fn unreachable(opts: &MixnetOptions, reason: String) -> MixnetError {
    MixnetError::DirectoryUnreachable { url: opts.directory_label(), reason }
}

fn timeout_reason(t: Duration) -> String {
    format!("no answer within {} s", t.as_secs_f32())
}

#[cfg(test)]
mod tests;
