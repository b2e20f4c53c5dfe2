//! The link to one exit: the session lifecycle both drivers share.
//!
//! - [`lifecycle`]: [`Link`], the sans-IO state machine that owns the succession of IPR
//!   sessions (connect with v10→v9 fallback, allocation, loss, reconnect with [`Backoff`]) and
//!   emits [`LinkEvent`]s. No tokio, no clock.
//! - [`backoff`]: the one reconnect policy.
//! - [`drive`]: the async glue that moves a link's messages over a
//!   [`Transport`](crate::transport::Transport): the handshake, paced transmission, the goodbye.
//!
//! The VPN driver (`driver/`, packets from a TUN through the pipeline) and the library's
//! runner (`tunnel/runner.rs`, packets from a userspace smoltcp stack) only move bytes between
//! a link, their device and the transport, and act on its events.

pub mod backoff;
pub mod drive;
pub mod lifecycle;

pub use backoff::Backoff;
pub use drive::{
    connect, disconnect, flush_transmit, new_link, session_config, sleep_opt, transmit, ConnectError, DISCONNECT_GRACE,
    MAX_MESSAGE,
};
pub use lifecycle::{Link, LinkConfig, LinkEvent, LinkState, Loss};
