//! Client side of the Nym IP Packet Router (IPR) protocol, v10 with v9 fallback, as a sans-IO
//! state machine. The protocol facts it relies on are in docs/ipr-protocol.md, cited by section.
//!
//! # Contract
//!
//! [`Session`] sits between the pipeline (IP packets) and a transport that moves whole
//! messages. One message = one Nym message payload = one UDP datagram for the local exit:
//! a 16-byte LP `SphinxStream` header ([`lp`]) followed by one IPR message ([`message`],
//! [`data`]); data messages carry a MultiIpPacketCodec bundle ([`bundle`]). The session never
//! does I/O and never reads a clock; time comes in as `now`. Untrusted bytes are parsed with
//! checked parsers: a bad message is a counter in [`SessionStats`] plus a `trace!`, never a
//! panic and never an error that unwinds the driver. Every queue is bounded.
//!
//! # Quirks of the real IPR that the session tolerates, and why
//!
//! - **Control replies use LP seq 0** (docs/ipr-protocol.md §4.4, §7 #1). They are handled like any
//!   other frame: the session never orders or deduplicates by seq, so Pong/Info/Disconnect replies
//!   and a connect reply during the v9 fallback are not lost the way the SDK loses them.
//! - **Downlink data is lossy and unordered** (`max_retransmissions(0)`, mixnet delays,
//!   docs/ipr-protocol.md §4.6). Every packet that arrives is delivered at once; seq numbers only
//!   feed the dup/reorder/gap counters ([`liveness::SeqTracker`]). Waiting for a gap is the SDK
//!   1.21.6 stall (docs/ipr-protocol.md §7 #2).
//! - **Silent version refusal** (docs/ipr-protocol.md §1.3, §3.5): an IPR without v10 drops the v10
//!   Connect without a word, so the session falls back to v9 on the same stream after
//!   `v10_timeout`.
//! - **Stream reconnect reallocates** (docs/ipr-protocol.md §3.2): after the fallback a late v10
//!   success is ignored; the v9 Connect that follows it replaces that allocation.
//! - **Data is stamped with the connect version** (docs/ipr-protocol.md §1.8) in both directions;
//!   downlink data of another version belongs to a superseded allocation and is dropped (counted).
//! - **Silent inactivity drop after 60–70 s, Ping does not count**
//!   (docs/ipr-protocol.md §3.6, §7 #4): the keepalive is a real IP packet, an ICMP echo from the
//!   allocated IPv4 to 10.0.0.1. The IPR refreshes activity before the exit-policy check, so the
//!   denial (docs/ipr-protocol.md §7 #9) still keeps us alive, and the `Info` denial it sends back
//!   proves the exit alive. Echo replies to it (IPR with `allow_local_ips`, or the local exit) are
//!   consumed by the session.
//! - **Empty LP frames are ignored by the IPR** (docs/ipr-protocol.md §4.4): no Open frame is sent.
//! - **`buffer_timeout: Some(0)` panics the IPR** (docs/ipr-protocol.md §2.4): the session always
//!   sends `None`.
//! - **No UnrequestedDisconnect is ever sent** (docs/ipr-protocol.md §1.5): a dead or forgetful
//!   exit shows up only as silence, hence [`Event::ExitUnresponsive`] after `dead_after` without
//!   any downlink while we were sending (keepalives guarantee we send).
//! - **Bare (non-LP) messages, other LP kinds, foreign stream ids**
//!   (docs/ipr-protocol.md §1.3, §4.1): dropped and counted; a v9/v10 IPR never sends them to a
//!   stream client.

pub mod allocation;
pub mod bundle;
pub mod data;
pub mod liveness;
pub mod lp;
pub mod message;
pub mod session;
pub mod transmit;

#[cfg(test)]
mod tests;

pub use allocation::{Allocation, MAX_EXIT_MTU, MIN_MTU_V4, MIN_MTU_V6};
pub use bundle::{Bundler, Unbundler, BUNDLE_BUDGET};
pub use lp::{LpHeader, MsgType, LP_HEADER_LEN};
pub use message::{ConnectDenial, MessageError};
pub use session::{Event, Packets, Session, SessionConfig, SessionStats, Transmit};
pub use transmit::Kind as MessageKind;

/// Why a session could not be established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No matching connect reply: v10 (if tried) and then v9 timed out.
    #[error("the IPR did not answer the connect request")]
    Timeout,
    /// The IPR answered with a failure (in practice only `NoAvailableIp`,
    /// docs/ipr-protocol.md §1.5).
    #[error(transparent)]
    Denied(#[from] ConnectDenial),
    /// The IPR sent UnrequestedDisconnect while we were connecting (never seen in practice).
    #[error("the IPR disconnected the client during connect: {0}")]
    RemoteDisconnect(String),
    /// A request could not be serialized (bincode; does not happen with these types).
    #[error("could not encode an IPR request")]
    Encode,
}
