//! The status file: what `smolmix-vpn status` shows, written by the running `up`.
//!
//! Written atomically (temp file + rename) about once a second, so a reader never sees half a
//! file. A status whose `up` no longer holds the instance lock ([`super::lock`]) is reported as
//! `stopped`: the file alone proves nothing, and neither does a pid, which can be reused.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// `connecting`, `connected`, `reconnecting`, `stopping`; `stopped` when read back stale.
    pub state: String,
    pub pid: u32,
    pub tun: String,
    pub exit: String,
    /// Protocol version negotiated with the IPR (10 or 9).
    pub version: Option<u8>,
    pub mtu: Option<u16>,
    /// Addresses the IPR allocated (they change on reconnect).
    pub allocated_ipv4: Option<String>,
    pub allocated_ipv6: Option<String>,
    /// The TUN's stable addresses, the ones applications see.
    pub local_ipv4: String,
    pub local_ipv6: String,
    /// Seconds since the Unix epoch when the current session connected.
    pub connected_since: Option<u64>,
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
        s.state = if journal { "blocked" } else { "stopped" }.into();
    }
    Some(s)
}

pub fn remove(run_dir: &Path) {
    let _ = fs::remove_file(path(run_dir));
}
