//! Transports: the only I/O boundary towards the exit. A message in, a message out.
//!
//! A *message* is exactly one Nym message payload: the 16-byte LP frame header and one IPR
//! message (docs/ipr-protocol.md §1.1). Message boundaries are part of the protocol, so every
//! transport must preserve them.
//!
//! - [`udp`]: one UDP datagram per message, to a local `smolmix-exit`.
//! - `mixnet` (feature `mixnet`): one Nym message per message, through a `MixnetClient` in
//!   message mode; the only module that imports `nym_sdk`.
//!
//! [`open`] opens the one an exit address names, for the VPN and the library alike.
//!
//! Beside them, for the mixnet's directory relay (docs/directory-relay.md §4): [`sniff`] (the
//! host a TLS ClientHello or HTTP request head names, sans-IO), [`dns_wire`] (the DNS codec,
//! sans-IO, also used by `up`'s DNS check) and [`resolver`] (A/AAAA lookups from marked UDP
//! sockets).
//!
//! [`Transport`] is the closed set of them; an enum rather than a trait object because the
//! driver awaits `recv`/`send` in a `select!` loop and both variants are known at compile time.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

pub mod dns_wire;
#[cfg(feature = "mixnet")]
pub mod mixnet;
mod open;
pub mod progress;
pub mod resolver;
pub mod sniff;
mod socket;
pub mod udp;

pub use open::{open, OpenError, OpenOptions, Opened};
pub use progress::{Progress, Step};
pub use udp::UdpTransport;

use crate::ipr::MessageKind;

/// A transport towards one IPR exit. The mixnet variant is large (the SDK's client), but there
/// is one transport per tunnel, moved only when it is opened or replaced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Transport {
    /// `udp://`: datagrams to a local `smolmix-exit`.
    Udp(UdpTransport),
    /// The Nym mixnet.
    #[cfg(feature = "mixnet")]
    Mixnet(mixnet::MixnetTransport),
}

impl Transport {
    /// Whether the transport takes a data message now; `false` means it is still busy with
    /// earlier ones, so the session keeps bundling (control messages go regardless).
    pub fn ready(&self) -> bool {
        match self {
            Transport::Udp(_) => true,
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => t.ready(),
        }
    }

    /// Messages the session may hold for this transport (its bottleneck queue). A local exit
    /// takes everything at once; on the mixnet the session's queue is where an upload waits,
    /// so it is kept short: 32 messages are ~0.2 s of the fast profile's uplink and ~1 s of the
    /// default's, a delay TCP can live with, where a deeper queue reads as a longer round trip.
    pub fn queue_limit(&self) -> usize {
        match self {
            Transport::Udp(_) => crate::ipr::transmit::TX_RING_CAP,
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(_) => 32,
        }
    }

    /// How long to wait before asking [`Transport::ready`] again.
    pub fn retry_after(&self) -> Duration {
        match self {
            Transport::Udp(_) => Duration::ZERO,
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => t.retry_after(),
        }
    }

    /// Waits for one whole message from the exit; returns its length in `buf`.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Udp(t) => t.recv(buf).await,
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => t.recv(buf).await,
        }
    }

    /// One more message if one is already queued (`WouldBlock` otherwise).
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Udp(t) => t.try_recv(buf),
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => t.try_recv(buf),
        }
    }

    /// Sends one message; failures are counted by the transport, never fatal. `kind` tells a
    /// control message (which expects an answer at once) from data.
    pub async fn send(&mut self, msg: &[u8], kind: MessageKind) {
        match self {
            Transport::Udp(t) => t.send(msg).await,
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => t.send(msg, kind).await,
        }
        #[cfg(not(feature = "mixnet"))]
        let _ = kind;
    }

    /// What this transport's socket is connected to now (the local exit, or the mixnet entry
    /// gateway), for `status`. Routing does not use it: the transport's sockets leave beside
    /// the tunnel by their mark (system/mark.rs), never by an address a gateway publishes.
    pub fn peer(&self) -> Option<SocketAddr> {
        match self {
            Transport::Udp(t) => Some(t.peer()),
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => t.peer(),
        }
    }

    /// How often the path to the exit was re-established underneath us (mixnet: gateway
    /// reconnections). The session probes the exit after each (`Session::handle_path_change`).
    pub fn path_changes(&self) -> u64 {
        match self {
            Transport::Udp(_) => 0,
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => t.gateway_reconnections(),
        }
    }

    /// The mixnet entry gateway's identity (base58), from our own Nym address; `None` for udp.
    pub fn entry_gateway(&self) -> Option<String> {
        match self {
            Transport::Udp(_) => None,
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => t.nym_address().rsplit_once('@').map(|(_, gw)| gw.to_string()),
        }
    }

    /// Connect timeouts (v10 attempt, v9 attempt) that suit this transport's round trip.
    pub fn connect_timeouts(&self) -> (Duration, Duration) {
        match self {
            // A local exit answers in milliseconds: report an absent one within 15 s.
            Transport::Udp(_) => (Duration::from_secs(5), Duration::from_secs(10)),
            // IpMixStream's values (docs/ipr-protocol.md §3.5): mixnet round trips take seconds.
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(_) => (Duration::from_secs(15), Duration::from_secs(60)),
        }
    }

    /// Ends the transport cleanly (the mixnet client says goodbye to its gateway).
    pub async fn shutdown(self) {
        match self {
            Transport::Udp(_) => {}
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => t.shutdown().await,
        }
    }

    /// Counters, for the status file.
    pub fn stats(&self) -> serde_json::Value {
        match self {
            Transport::Udp(t) => serde_json::to_value(t.stats()).unwrap_or_default(),
            #[cfg(feature = "mixnet")]
            Transport::Mixnet(t) => serde_json::to_value(t.stats()).unwrap_or_default(),
        }
    }
}

/// Mixnet traffic profile (`--traffic default|fast`; the mixnet's options, docs in
/// `transport/mixnet/options.rs`). Defined here, outside the mixnet module, so that the command
/// line offers it in every build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "vpn", derive(clap::ValueEnum))]
pub enum TrafficProfile {
    /// The SDK's defaults: 20 ms Poisson sending, 15 ms per hop, loop cover every 200 ms.
    #[default]
    Default,
    /// Upstream's high-traffic profile: 4 ms sending, 10 ms per hop, ~no loop cover.
    Fast,
}

/// Where the IPR exit is: a Nym address, or `udp://HOST:PORT` for a local `smolmix-exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IprAddr {
    /// A Nym client address `<identity>.<encryption-key>@<gateway-identity>` (base58).
    Nym(String),
    /// A local exit reached over UDP.
    Udp {
        /// Host name or IP address (IPv6 without the brackets).
        host: String,
        /// UDP port, never 0.
        port: u16,
    },
}

/// Why a string is not an [`IprAddr`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IprAddrError {
    /// Neither `udp://HOST:PORT` nor a well-formed Nym address; holds the input.
    #[error("{0:?}: expected udp://HOST:PORT or a Nym address <identity>.<key>@<gateway>")]
    Malformed(String),
}

impl FromStr for IprAddr {
    type Err = IprAddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IprAddrError::Malformed(s.to_string());
        if let Some(rest) = s.strip_prefix("udp://") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(err)?;
            let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
            let port: u16 = port.parse().map_err(|_| err())?;
            if host.is_empty() || port == 0 || host.contains('/') {
                return Err(err());
            }
            return Ok(IprAddr::Udp { host: host.to_string(), port });
        }
        // A Nym recipient: three base58 strings "a.b@c" (nym-sphinx-addressing's format).
        let (keys, gateway) = s.split_once('@').ok_or_else(err)?;
        let (identity, enc) = keys.split_once('.').ok_or_else(err)?;
        let base58 = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() && !b"0OIl".contains(&b));
        if [identity, enc, gateway].iter().all(|p| base58(p)) {
            Ok(IprAddr::Nym(s.to_string()))
        } else {
            Err(err())
        }
    }
}

impl fmt::Display for IprAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IprAddr::Nym(a) => f.write_str(a),
            IprAddr::Udp { host, port } if host.contains(':') => write!(f, "udp://[{host}]:{port}"),
            IprAddr::Udp { host, port } => write!(f, "udp://{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(
            "udp://192.0.2.1:51820".parse::<IprAddr>().unwrap(),
            IprAddr::Udp { host: "192.0.2.1".into(), port: 51820 }
        );
        let v6: IprAddr = "udp://[2001:db8::1]:9".parse().unwrap();
        assert_eq!(v6, IprAddr::Udp { host: "2001:db8::1".into(), port: 9 });
        assert_eq!(v6.to_string(), "udp://[2001:db8::1]:9");
        let nym = "8hUvtEyZK8umsdxxPS2BizQhEDmbNeXEPBZLgscE57Zh.5P2bnwMTqtn9KvmYCTdzRsNXQA1SStLwTKMhKDpU4QWy@3zd3wrCK8P7rkTsC8Qvfq8xKMm8eXeWPHgMTTmWBrJ4e";
        assert_eq!(nym.parse::<IprAddr>().unwrap(), IprAddr::Nym(nym.into()));
        for bad in [
            "",
            "udp://",
            "udp://:9",
            "udp://host",
            "udp://host:0",
            "udp://host:99999",
            "tcp://a:1",
            "a.b",
            "a.b@",
            "a.0@c",
        ] {
            assert!(bad.parse::<IprAddr>().is_err(), "{bad}");
        }
    }
}
