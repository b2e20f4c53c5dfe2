//! The status file: what `smolmix-vpn status` shows, written by the running `up`.
//!
//! Written atomically (temp file + rename) about once a second, so a reader never sees half a
//! file. A status whose `up` no longer holds the instance lock ([`super::lock`]) is reported as
//! `stopped`: the file alone proves nothing, and neither does a pid, which can be reused.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `status` reports; written in lower case (`"connected"`), the file's interface
/// (docs/design.md §3.1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// `up` runs and traffic flows.
    Connected,
    /// `up` runs, the exit or the transport is lost; the host stays closed meanwhile.
    Reconnecting,
    /// `up` ended on an error with every host change kept (its last word).
    Failed,
    /// Read back: `up` is gone and its journal remains, so the host is kept closed until `down`.
    Blocked,
    /// Read back: `up` is gone and left nothing behind.
    Stopped,
}

impl State {
    /// The word `status` prints and the file holds.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connected => "connected",
            State::Reconnecting => "reconnecting",
            State::Failed => "failed",
            State::Blocked => "blocked",
            State::Stopped => "stopped",
        }
    }

    /// Whether an `up` is running behind this status.
    pub fn is_running(self) -> bool {
        matches!(self, State::Connected | State::Reconnecting)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a running `up` reports about itself (`status.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Where the tunnel is; `blocked` or `stopped` when read back from a process that is gone.
    pub state: State,
    /// The `up` process.
    pub pid: u32,
    /// The TUN's name.
    pub tun: String,
    /// The exit: `udp://…` or its Nym address.
    pub exit: String,
    /// Protocol version negotiated with the IPR (10 or 9).
    pub version: Option<u8>,
    /// The TUN's MTU.
    pub mtu: Option<u16>,
    /// Addresses the IPR allocated (they change on reconnect).
    pub allocated_ipv4: Option<String>,
    /// The allocated IPv6 address, when IPv6 is tunnelled.
    pub allocated_ipv6: Option<String>,
    /// The TUN's stable addresses, the ones applications see.
    pub local_ipv4: String,
    /// The TUN's stable IPv6 address.
    pub local_ipv6: String,
    /// Seconds since the Unix epoch when the current session connected.
    pub connected_since: Option<u64>,
    /// How often the exit was lost after being up.
    pub reconnects: u64,
    /// Counters of every stage: pipeline, session, transport.
    pub counters: serde_json::Value,
    /// Per-app mode: the network namespace that holds the TUN (`exec` runs programs there).
    #[serde(default)]
    pub netns: Option<String>,
    /// DNS servers reached through the tunnel; empty with `--no-dns`.
    #[serde(default)]
    pub dns: Vec<String>,
    /// How DNS is configured: `resolved on smx0`, `file /etc/resolv.conf`, `exec` (per-app).
    #[serde(default)]
    pub dns_mode: Option<String>,
    /// Outcome of the end-to-end lookup after connecting (`ok …` or the error).
    #[serde(default)]
    pub dns_check: Option<String>,
}

fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("status.json")
}

/// Replaces the status file atomically (temp file + rename).
pub fn write(run_dir: &Path, status: &Status) -> io::Result<()> {
    let tmp = run_dir.join("status.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(status).map_err(io::Error::other)?)?;
    fs::rename(tmp, path(run_dir))
}

/// The last status written. If its process is gone, `state` says what the host is left with:
/// `blocked` while its journal remains (a crash or an error kept the host closed: `down`
/// opens it), `stopped` otherwise.
pub fn read(run_dir: &Path) -> Option<Status> {
    let bytes = fs::read(path(run_dir)).ok()?;
    let mut s: Status = serde_json::from_slice(&bytes).ok()?;
    if !super::lock::held(run_dir) {
        let journal = super::journal::Journal::path_in(run_dir).exists();
        s.state = if journal { State::Blocked } else { State::Stopped };
    }
    Some(s)
}

/// Removes the status file (a clean stop).
pub fn remove(run_dir: &Path) {
    let _ = fs::remove_file(path(run_dir));
}
