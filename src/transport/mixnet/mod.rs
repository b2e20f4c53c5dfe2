//! The real Nym transport: one IPR message in, one Nym message out, through our own
//! `MixnetClient` in **message mode**. The only module in the crate that imports `nym_sdk`.
//!
//! Contract (shared with [`super::udp`]): [`MixnetTransport::send`] takes the exact bytes the
//! session produced (16-byte LP header + IPR message, docs/ipr-protocol.md §1.1) and sends them as
//! one anonymous message with `reply_surbs` SURBs; [`MixnetTransport::recv`] hands up the bytes
//! of one reconstructed message, unchanged. No `open_stream`, no `IpMixStream`: the SDK stream's
//! reorder buffer stalls on one lost downlink frame and drops seq-0 control replies
//! (docs/ipr-protocol.md §7 items 1–3); the session does its own LP framing and tolerates loss.
//!
//! - [`options`]: [`MixnetOptions`] and how each one maps onto the SDK's `DebugConfig` and
//!   network details (docs/performance.md §1.3–1.4, docs/nym-vpn-client.md §7).
//! - [`discovery`]: the IPR exits of the Nym directory (nym-api), ranked; weighted best pick.
//! - [`client`]: [`MixnetTransport`], its receive task and bounded queue, counters.
//! - [`sphinx`]: the SDK's own Sphinx packet counters, for `status`.
//! - [`gateway`]: which IP addresses the client's entry-gateway connection uses, so that a
//!   full tunnel keeps them outside itself.
//! - [`relay`]: the SDK's HTTP to the directory through a Unix socket, and from there out
//!   through marked sockets to the directory's hosts only (docs/directory-relay.md §1).
//!
//! Failure without internet is fast and names the directory: every directory call is wrapped in
//! `tokio::time::timeout(directory_timeout)` because the SDK's own HTTP timeouts are long and its
//! client start-up waits for topology: offline, `up` and `exits` must fail within 15 s.

pub mod client;
pub mod discovery;
pub mod gateway;
pub mod options;
pub mod pacing;
pub mod relay;
pub mod sphinx;
pub mod surbs;

use std::error::Error as StdError;
use std::path::PathBuf;

/// Re-exported so that the library's `Tunnel::from_client` callers never import `nym_sdk`.
pub use nym_sdk::mixnet::MixnetClient;

pub use client::{MixnetStats, MixnetTransport};
pub use discovery::{best_ipr, list_exits, ExitInfo};
pub use options::{MixnetOptions, TrafficProfile};

/// Errors of the mixnet transport and of discovery. Each Display is one line meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum MixnetError {
    /// No answer (or no usable answer) from any nym-api URL within `directory_timeout`.
    #[error("cannot reach the Nym directory (nym-api) at {url}: {reason}")]
    DirectoryUnreachable {
        /// The nym-api URLs asked, comma-separated.
        url: String,
        /// What went wrong, with its sources.
        reason: String,
    },
    /// A nym-api URL given in the options does not parse.
    #[error("bad Nym directory URL in {0:?}: expected http(s)://HOST[:PORT]/PATH")]
    BadDirectoryUrl(String),
    /// The directory answered but lists no exit we could use.
    #[error("the Nym directory lists no usable IPR exit (exit gateways with the IPR role, release >= 1.30.0, performance > 0)")]
    NoExits,
    /// The exit runs a release that speaks no IPR protocol we do (LP framing came with v9).
    #[error("the exit runs nym-node {version}, which predates IPR protocol v9 (nym-node 1.30.0): it cannot carry this tunnel; pick another exit (smolmix-vpn exits)")]
    ExitTooOld {
        /// The exit's nym-node release, as the directory lists it.
        version: String,
    },
    /// Zero reply SURBs: the IPR could never answer (it replies only through SURBs we send).
    #[error("at least one reply SURB per message is needed: the exit answers only through the SURBs it is sent")]
    NoReplySurbs,
    /// The `--ipr` value is not a Nym recipient.
    #[error("not a Nym address (<identity>.<encryption-key>@<gateway>, base58): {0}")]
    BadAddress(String),
    /// The persistent identity directory cannot be used.
    #[error("cannot use {} for the mixnet identity: {reason}", path.display())]
    Storage {
        /// The identity directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The directory answered, but the client did not finish joining the mixnet in time.
    #[error(
        "connecting to the Nym mixnet timed out after {secs} s (the directory answered; the entry gateway did not)"
    )]
    ConnectTimeout {
        /// The `connect_timeout` that ran out, in seconds.
        secs: u64,
    },
    /// The gateway socket could not carry the routing mark the options ask for.
    #[error("cannot mark the gateway socket for routing beside the tunnel (needs CAP_NET_ADMIN)")]
    Mark,
    /// Any other SDK failure (gateway registration, no tokio runtime, ...).
    #[error("Nym mixnet client: {0}")]
    Client(String),
}

impl MixnetError {
    /// Whether trying again cannot help (a bad option, an exit that can never carry us, no
    /// right to mark sockets); the directory or a gateway being away is worth another try.
    pub fn is_permanent(&self) -> bool {
        match self {
            MixnetError::BadDirectoryUrl(_)
            | MixnetError::NoReplySurbs
            | MixnetError::BadAddress(_)
            | MixnetError::ExitTooOld { .. }
            | MixnetError::Storage { .. }
            | MixnetError::Mark => true,
            MixnetError::DirectoryUnreachable { .. }
            | MixnetError::NoExits
            | MixnetError::ConnectTimeout { .. }
            | MixnetError::Client(_) => false,
        }
    }
}

/// `e` and its sources on one line: the SDK's top-level messages are often just
/// "api directory error", with the useful part (connection refused, DNS) two levels down.
pub(crate) fn error_chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    // Bounded: a cyclic source chain would otherwise loop forever.
    for _ in 0..8 {
        let Some(src) = cur else { break };
        let msg = src.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = src.source();
    }
    s
}

/// Parses an IPR address with nym-sphinx-addressing's own parser (the FromStr in
/// `transport::IprAddr` only checks the shape).
pub(crate) fn parse_recipient(ipr: &str) -> Result<nym_sdk::mixnet::Recipient, MixnetError> {
    nym_sdk::mixnet::Recipient::try_from_base58_string(ipr.trim())
        .map_err(|e| MixnetError::BadAddress(format!("{ipr:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A valid recipient (keys are real curve points; the test vector of nym-sdk 1.21.6's
    // libp2p example). transport::tests' address only has the right shape: its identity is not
    // an Edwards point, which the real parser rejects.
    pub(crate) const IPR: &str = "D1rrpsysCGCYXy9saP8y3kmNpGtJZUXN9SvFoUcqAsM9.9Ssso1ea5NfkbMASdiseDSjTN1fSWda5SgEVjdSN4CvV@GJqd3ZxpXWSNxTfx7B1pPtswpetH4LnJdFeLeuY5KUuN";
    pub(crate) const IPR_GATEWAY: &str = "GJqd3ZxpXWSNxTfx7B1pPtswpetH4LnJdFeLeuY5KUuN";

    #[test]
    fn parses_valid_recipient_and_keeps_its_gateway() {
        let r = parse_recipient(IPR).unwrap();
        assert_eq!(r.to_string(), IPR);
        assert_eq!(r.gateway().to_base58_string(), IPR_GATEWAY);
        // Surrounding whitespace from a config file or a shell variable is tolerated.
        assert!(parse_recipient(&format!(" {IPR}\n")).is_ok());
    }

    #[test]
    fn rejects_invalid_recipients_with_the_input_in_the_message() {
        let short_key = IPR.replacen("D1rrpsysCGCYXy9s", "D1r", 1); // wrong key length
        let not_b58 = IPR.replacen('9', "0", 1); // '0' is not in the base58 alphabet
                                                 // The shape-only address of transport::tests: base58, right lengths, not a curve point.
        let not_a_point = "8hUvtEyZK8umsdxxPS2BizQhEDmbNeXEPBZLgscE57Zh.5P2bnwMTqtn9KvmYCTdzRsNXQA1SStLwTKMhKDpU4QWy@3zd3wrCK8P7rkTsC8Qvfq8xKMm8eXeWPHgMTTmWBrJ4e";
        let no_gateway = IPR.split('@').next().unwrap_or_default();
        for bad in ["", "a.b@c", "udp://192.0.2.1:9", no_gateway, short_key.as_str(), not_b58.as_str(), not_a_point] {
            let e = parse_recipient(bad).unwrap_err();
            assert!(matches!(e, MixnetError::BadAddress(_)), "{bad}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn error_chain_includes_sources_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = MixnetError::Client("x".into());
        assert_eq!(error_chain(&outer), "Nym mixnet client: x");
        #[derive(Debug, thiserror::Error)]
        #[error("api directory error")]
        struct Wrap(#[source] std::io::Error);
        assert_eq!(error_chain(&Wrap(inner)), "api directory error: connection refused");
    }
}
