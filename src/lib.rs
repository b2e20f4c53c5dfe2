#![warn(missing_docs, unreachable_pub)]
//! smolmix: put a Linux host, one application, or one program's sockets behind the Nym mixnet.
//!
//! # Layer map
//!
//! ```text
//!  kernel ─▶ TUN ─▶ pipeline ─────────────▶ ipr::Session ─────────▶ transport ─▶ exit (IPR)
//!  apps   ◀─     ◀─ NAT · reassembly · MSS ◀─ LP frames · bundles ◀─  udp | mixnet
//! ```
//!
//! | module        | does                                                          | I/O?           | feature  |
//! |---------------|---------------------------------------------------------------|----------------|----------|
//! | [`pipeline`]  | checked parsing, NAT to the IPR's addresses, reassembly, MSS clamp, ICMP too-big | none (sans-IO) | always |
//! | [`ipr`]       | IPR v10/v9 connect, LP framing, bundling, keepalive, dead-exit detection | none (sans-IO) | always |
//! | [`link`]      | the session lifecycle (connect, fallback, reconnect) and its async glue | via transport | always |
//! | [`transport`] | moves whole IPR messages: `udp://` to a local exit, the Nym mixnet | sockets     | always; the mixnet: `mixnet` |
//! | [`tunnel`]    | the library API: `Tunnel`, `TcpStream`, `UdpSocket` on smoltcp | tokio          | always   |
//! | `system`      | TUN device, routes and rules, the journal of host changes     | kernel         | `vpn`    |
//! | `driver`      | the one async loop joining TUN, pipeline, session, transport  | tokio          | `vpn`    |
//! | `cli`         | the `smolmix-vpn` command line                                | none           | `vpn`    |
//! | `manual`      | its man pages and shell completions, generated from `cli`     | none           | `vpn`    |
//! | `exit`        | the sans-IO core of `smolmix-exit`, the local IPR test double | none (sans-IO) | `exit`   |
//!
//! Features: `default = ["mixnet", "vpn", "exit"]`, what the two programs need (`smolmix-vpn`:
//! `vpn`; `smolmix-exit`: `exit` and `vpn`). A program that only wants the library depends on
//! `smolmix-vpn` with `default-features = false`, plus `mixnet` for the Nym mixnet: then no
//! clap, tun-rs, nix or tracing-subscriber is built, and nothing that changes the host. The
//! modules marked "always" never import `system`, `driver`, `cli` or `exit`.
//!
//! The sans-IO layers take packets and `now` and give packets back; they are unit-tested with
//! byte-literal packets and never read a clock, a socket or a device. Everything that touches
//! the host lives in `system`, [`transport`] and `driver`. See `ARCHITECTURE.md`.

#[cfg(feature = "vpn")]
pub mod cli;
#[cfg(feature = "vpn")]
pub mod driver;
#[cfg(feature = "exit")]
pub mod exit;
pub mod ipr;
pub mod link;
#[cfg(feature = "vpn")]
pub mod manual;
pub mod pipeline;
#[cfg(feature = "vpn")]
pub mod system;
pub mod transport;
pub mod tunnel;

#[cfg(all(test, feature = "exit"))]
mod sim;

pub use transport::IprAddr;
pub use tunnel::{TcpStream, Tunnel, TunnelBuilder, UdpSocket};
