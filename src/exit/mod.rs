//! `smolmix-exit`: a local double of the Nym IP Packet Router (IPR), sans-IO.
//!
//! The real IPR runs inside a nym-node exit gateway and is reached through the mixnet. This
//! module reproduces it at the IPR/LP layer so that a v9/v10 client cannot tell the two
//! apart by the bytes it exchanges (docs/ipr-protocol.md §6). The binary
//! `src/bin/smolmix-exit.rs` is a thin tokio driver: one UDP datagram = one Nym message
//! payload, the UDP source address stands in for the AnonymousSenderTag, and a real TUN
//! (`nymtun0`, 10.0.0.1/16, fc00::1/112) is the exit's "internet" side.
//!
//! # Layout
//! - [`server`]: [`Server`], the state machine: public API, routing, timers, outputs.
//! - `dispatch`: what each request does (docs/ipr-protocol.md §3.2, §5.2, §6.2 item 6).
//! - `config`: [`ExitConfig`] (defaults = the real IPR) and its validation.
//! - `wire`: inbound checks and decoding (docs/ipr-protocol.md §6.2 items 1–5), response encoding
//!   with the published `nym-ip-packet-requests` and `nym-lp-data` 1.21.6 types.
//! - `client`: per-client downlink bundler and LP sequence numbering
//!   (docs/ipr-protocol.md §2.2, §6.2 items 8–9).
//! - `alloc`: random IP allocation in 10.0.0.0/16 / fc00::/112 (docs/ipr-protocol.md §3.3).
//! - `filter`: uplink packet parsing and the non-global destination filter
//!   (docs/ipr-protocol.md §5.2).
//! - [`impair`]: delay, jitter, downlink loss and pacing, the mixnet stand-in
//!   (docs/ipr-protocol.md §6.4).
//!
//! # Faithful
//! - Wire bytes: LP header, v8/v9/v10 request and response trees, bundle framing; requests
//!   are decoded and responses encoded with the published types, independently of the
//!   client's hand-rolled codec.
//! - Check order and silence: every rejected message (wrong version, wrong transport, bad
//!   provider byte, undecodable, trailing bytes, Open frame) gets no reply; `max_version 9`
//!   drops v10 like a pre-v10 node, so clients exercise their fallback.
//! - Sessions: v8 re-connect keeps the IPs; LP re-connect gives new random IPs, a new
//!   downlink bound to the new stream id, and restarts data seq at 1. Inline control replies
//!   always use LP seq 0 (which SDK stream clients then drop, docs/ipr-protocol.md §7 item 1).
//! - Uplink attribution by source IP, activity refreshed only by such packets (not by Ping),
//!   silent removal after `idle_timeout` checked every `sweep_interval` (60 s / 10 s).
//! - Downlink: bundling with target 1500, `buffer_timeout` flush timer reset on each bundle,
//!   connect version on every Data response, routing by destination IP.
//!
//! # Deliberately different
//! - Not a VPN server: no encryption, no anonymity, no authentication, no SURBs. Anyone who
//!   can reach the UDP port can connect. Use it on loopback or in test namespaces only.
//! - No exit policy: apart from the optional non-global filter (`deny_non_global`, off by
//!   default because tests use documentation ranges) every destination is allowed.
//! - Bounded queues where the real IPR is unbounded (per-client channels): overflow is
//!   dropped and counted. `buffer_timeout: Some(0)`, which panics the real listener task, is
//!   dropped without a reply; `buffer_timeout` is capped at one hour.
//! - Loss only happens in the optional impairment model; without it the link is perfect.

pub mod alloc;
mod client;
mod config;
mod counters;
mod dispatch;
mod filter;
pub mod impair;
pub mod server;
mod wire;

#[cfg(test)]
mod tests;

pub use alloc::{TUN_IPV4, TUN_IPV4_PREFIX, TUN_IPV6, TUN_IPV6_PREFIX};
pub use client::{Oversize, BUNDLE_TARGET};
pub use config::{ConfigError, ExitConfig, MIN_MTU};
pub use counters::Counters;
pub use filter::{is_global, PacketError};
pub use impair::ImpairConfig;
pub use server::{Server, MAX_TRANSMIT_QUEUE, MAX_TUN_QUEUE};
pub use wire::{EncodeError, Reject};
