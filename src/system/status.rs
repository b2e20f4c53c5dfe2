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
    /// `up` runs and is reaching the exit for the first time; nothing on the host changed yet.
    Connecting,
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
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Reconnecting => "reconnecting",
            State::Failed => "failed",
            State::Blocked => "blocked",
            State::Stopped => "stopped",
        }
    }

    /// Whether an `up` is running behind this status with its tunnel in place (connected or
    /// reconnecting: the TUN exists, and so does the namespace of per-app mode).
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
    /// The steps of the current (connecting, reconnecting) or last connect, each with its
    /// elapsed time, as `up` printed them.
    #[serde(default)]
    pub progress: Vec<String>,
}

impl Status {
    /// What the mixnet costs and how it is doing, for `status`: Sphinx packets per MB of IP
    /// traffic each way (docs/performance.md §3.4 has the minimum: ~700 per MB one way),
    /// reply SURBs supplied and asked for, and the queues. Empty for a `udp://` exit.
    pub fn mixnet_summary(&self) -> Vec<String> {
        let c = &self.counters;
        let t = &c["transport"];
        let Some(sphinx) = t.get("sphinx") else { return Vec::new() };
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let (sent, received) = (n(&sphinx["real_sent"]), n(&sphinx["real_received"]));
        let (ip_up, ip_down) = (n(&c["pipeline"]["exit_tx_bytes"]), n(&c["pipeline"]["exit_rx_bytes"]));
        vec![
            format!(
                "mixnet:    Sphinx packets {sent} sent ({} per MB of IP), {received} received ({} per MB), {} retransmitted",
                per_mb(sent, ip_up),
                per_mb(received, ip_down),
                n(&sphinx["retransmissions"])
            ),
            format!(
                "surbs:     {} reply SURBs supplied, {} outstanding; {} top-ups the exit asked for",
                n(&t["reply_surbs_sent"]),
                n(&t["reply_surbs_outstanding"]),
                n(&sphinx["surb_top_ups"])
            ),
            format!(
                "queues:    session {} messages, mixnet client {} packets, downlink {} messages",
                n(&c["session_queue"]),
                n(&t["send_queue"]),
                n(&t["recv_queue"])
            ),
        ]
    }
}

/// Packets per MB (10^6 bytes) of `bytes`; "-" below 64 KB, where keepalives and the
/// handshake would dominate the ratio.
fn per_mb(packets: u64, bytes: u64) -> String {
    if bytes < 64_000 {
        return "-".into();
    }
    format!("{:.0}", packets as f64 * 1e6 / bytes as f64)
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

/// Sets the state of the status file as it is, keeping everything else it says (the exit, the
/// addresses, the last connect's steps): `up`'s last word before it ends with the host closed.
pub fn set_state(run_dir: &Path, state: State) -> io::Result<()> {
    let bytes = fs::read(path(run_dir))?;
    let mut s: Status = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    s.state = state;
    write(run_dir, &s)
}

/// Removes the status file (a clean stop).
pub fn remove(run_dir: &Path) {
    let _ = fs::remove_file(path(run_dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(counters: serde_json::Value) -> Status {
        Status {
            state: State::Connecting,
            pid: 1,
            tun: "smx0".into(),
            exit: "udp://192.0.2.1:51820".into(),
            version: None,
            mtu: None,
            allocated_ipv4: None,
            allocated_ipv6: None,
            local_ipv4: "100.86.0.2".into(),
            local_ipv6: "fd6d:6978::2".into(),
            connected_since: None,
            reconnects: 0,
            counters,
            netns: None,
            dns: Vec::new(),
            dns_mode: None,
            dns_check: None,
            progress: vec!["   0.01 s  ipr: Connect sent, protocol v10".into()],
        }
    }

    #[test]
    fn connecting_and_its_steps_survive_the_file() {
        let dir = std::env::temp_dir().join(format!("smolmix-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = status(serde_json::Value::Null);
        write(&dir, &st).unwrap();
        let text = std::fs::read_to_string(path(&dir)).unwrap();
        assert!(text.contains("\"state\": \"connecting\""), "{text}");
        let back: Status = serde_json::from_str(&text).unwrap();
        assert_eq!(back, st);
        // A file from before `progress` existed still reads.
        let old = text.replace("\"progress\"", "\"ignored\"");
        assert!(serde_json::from_str::<Status>(&old).unwrap().progress.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_mixnet_summary_divides_by_the_ip_traffic() {
        let st = status(serde_json::json!({
            "pipeline": { "exit_tx_bytes": 2_000_000, "exit_rx_bytes": 1_000 },
            "transport": {
                "reply_surbs_sent": 3000, "reply_surbs_outstanding": 12, "send_queue": 10, "recv_queue": 0,
                "sphinx": { "real_sent": 1500, "real_received": 40, "retransmissions": 4, "surb_top_ups": 2 }
            },
            "session_queue": 3,
        }));
        assert_eq!(
            st.mixnet_summary(),
            [
                "mixnet:    Sphinx packets 1500 sent (750 per MB of IP), 40 received (- per MB), 4 retransmitted",
                "surbs:     3000 reply SURBs supplied, 12 outstanding; 2 top-ups the exit asked for",
                "queues:    session 3 messages, mixnet client 10 packets, downlink 0 messages",
            ]
        );
        // A udp:// exit has no Sphinx packets: nothing to say.
        assert!(status(serde_json::json!({ "transport": { "messages_in": 1 } })).mixnet_summary().is_empty());
    }
}
