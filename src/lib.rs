//! smolmix: put a Linux host, one application, or one program's sockets behind the Nym mixnet.
//!
//! # Layer map
//!
//! ```text
//!  kernel ─▶ TUN ─▶ pipeline ─────────────▶ ipr::Session ─────────▶ transport ─▶ exit (IPR)
//!  apps   ◀─     ◀─ NAT · reassembly · MSS ◀─ LP frames · bundles ◀─  udp | mixnet
//! ```
//!
//! | module        | does                                                         | I/O?            |
//! |---------------|--------------------------------------------------------------|-----------------|
//! | [`pipeline`]  | checked parsing, NAT to the IPR's addresses, reassembly, MSS clamp, ICMP too-big | none (sans-IO) |
//! | [`ipr`]       | IPR v10/v9 connect, LP framing, bundling, keepalive, dead-exit detection | none (sans-IO) |
//! | [`transport`] | moves whole IPR messages: `udp://` to a local exit           | sockets         |
//! | [`system`]    | TUN device, routes and rules, the journal of host changes    | kernel          |
//! | [`driver`]    | the one async loop joining TUN, pipeline, session, transport | tokio           |
//! | [`exit`]      | the sans-IO core of `smolmix-exit`, the local IPR test double | none (sans-IO) |
//! | [`cli`]       | the `smolmix-vpn` command line                               | none            |
//!
//! The sans-IO layers take packets and `now` and give packets back; they are unit-tested with
//! byte-literal packets and never read a clock, a socket or a device. Everything that touches
//! the host lives in [`system`], [`transport`] and [`driver`]. See `ARCHITECTURE.md`.

pub mod cli;
pub mod driver;
pub mod exit;
pub mod ipr;
pub mod link;
pub mod pipeline;
pub mod system;
pub mod transport;
pub mod tunnel;

pub use transport::IprAddr;
pub use tunnel::{TcpStream, Tunnel, TunnelBuilder, UdpSocket};
