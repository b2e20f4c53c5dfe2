//! Per-app mode: the network namespace that holds only `lo` and the TUN.
//!
//! The contract:
//!
//! ```text
//!  host namespace                          namespace NAME
//!  ─────────────────────────────           ──────────────────────────────────
//!  smolmix-vpn up (process stays here)     lo              127.0.0.1, ::1
//!    transport sockets ── physical link    smx0 (the TUN)  100.86.0.2/32, fd6d:6978::2/128
//!    TUN fd  ◀══════════════════════════▶    default     dev smx0
//!  routing table untouched                   default ::/0 dev smx0 (or unreachable: IPv6 off)
//! ```
//!
//! * [`ensure`] creates NAME if it is missing (journalling `DeleteNetns` first, and only then)
//!   and brings `lo` up inside. An existing NAME is reused, never deleted by us: several `exec`
//!   calls and a restarted `up` share it, as vopono's namespaces are shared (docs/peers.md §6).
//! * [`move_link`] moves the TUN into NAME and configures it there with `ip -n NAME`, each
//!   step journalled with an undo that also runs inside NAME. Moving a link drops its
//!   addresses and sets it down (measured on Linux 6.18), so the addresses that `tun::create`
//!   put on it in the host are set again inside.
//! * The process, and so the transport's sockets, stays in the host namespace; only the link
//!   moves. The TUN fd keeps working across the move (same experiment), as namespaced-openvpn
//!   relies on (docs/peers.md §7). No veth, no NAT, no host firewall rule: a process in NAME has
//!   no interface but the TUN, so the only way out is the tunnel. That is the structural fix for
//!   route injection and TunnelVision that docs/peers.md §7 and §12.6 describe.
//! * [`in_netns`] runs a closure on a short-lived thread that has joined NAME (`setns(2)` is
//!   per thread for CLONE_NEWNET), e.g. to set a namespaced sysctl or to check DNS from inside.
//!
//! When NAME is deleted while no process is inside it, the kernel destroys the TUN with it and
//! our fd answers EBADFD (measured): `up` sees a TUN I/O error, not a silent leak.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use super::host::{run, Host, HostError};
use super::journal::Undo;

/// Where iproute2 (and so every peer: firejail `--netns`, vopono) keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// IFNAMSIZ (16, linux/if.h) minus the NUL: the interface-name limit we also apply to
/// namespace names, so a name fits everywhere we may reuse it (e.g. a veth peer for tests).
const MAX_NAME: usize = 15;

/// Why a network namespace could not be checked, created, entered or configured.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name breaks [`validate_name`]'s rules.
    #[error("{0:?} is not a valid namespace name: 1-15 characters, no '/', ':', whitespace or control characters, not '.' or '..', not starting with '-'")]
    BadName(String),
    /// The file under [`NETNS_DIR`] is not on nsfs.
    #[error("{path} exists but is not a network namespace (a stale file? remove it or pick another name)")]
    NotANamespace {
        /// The file under [`NETNS_DIR`].
        path: PathBuf,
    },
    /// No namespace of that name exists.
    #[error("no network namespace {name}: start `smolmix-vpn up --netns {name}` first")]
    Missing {
        /// The namespace's name.
        name: String,
    },
    /// Opening or inspecting the namespace file failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file under [`NETNS_DIR`].
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `setns(2)` into the namespace failed.
    #[error("cannot enter network namespace {name}: {source}")]
    Enter {
        /// The namespace's name.
        name: String,
        /// setns's error.
        source: nix::Error,
    },
    /// Another step inside the namespace failed.
    #[error("namespace {name}: {what}: {source}")]
    Io {
        /// The namespace's name.
        name: String,
        /// The step that failed.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A journalled host change (iproute2, the journal) failed.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Did [`ensure`] create the namespace, or find it?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// We created it; its deletion is journalled, so `down` removes it.
    New,
    /// It was there already (a previous `up`, or the user's own); we leave it in place.
    Existing,
}

/// The addresses the TUN gets inside the namespace: the driver passes `tun::LOCAL_V4` and,
/// when IPv6 is tunnelled, `tun::LOCAL_V6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddrs {
    /// The TUN's IPv4 address (a /32).
    pub v4: Ipv4Addr,
    /// `None`: IPv6 is off or not allocated; `::/0` becomes `unreachable`, so applications in
    /// the namespace get ENETUNREACH at once instead of a hang.
    pub v6: Option<Ipv6Addr>,
}

/// Checks `name` with the kernel's rules for interface names (dev_valid_name in
/// net/core/dev.c), plus no leading '-' so iproute2 can never read it as an option.
pub fn validate_name(name: &str) -> Result<(), NetnsError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME
        || name == "."
        || name == ".."
        || name.starts_with('-')
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control() || !c.is_ascii());
    if bad {
        return Err(NetnsError::BadName(name.to_string()));
    }
    Ok(())
}

/// `/run/netns/NAME`, after validating NAME.
pub fn path(name: &str) -> Result<PathBuf, NetnsError> {
    validate_name(name)?;
    Ok(Path::new(NETNS_DIR).join(name))
}

/// Opens NAME's namespace file (O_CLOEXEC, as std opens every file) and checks that it really
/// is one: `ip netns add` bind-mounts an nsfs inode there; a plain file left by a crash
/// mid-`ip netns add` is not, and `setns` on it would fail with an unhelpful EINVAL.
pub fn open(name: &str) -> Result<File, NetnsError> {
    let path = path(name)?;
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(NetnsError::Missing { name: name.to_string() })
        }
        Err(source) => return Err(NetnsError::Open { path, source }),
    };
    match fstatfs(file.as_fd()) {
        Ok(st) if st.filesystem_type() == NSFS_MAGIC => Ok(file),
        Ok(_) => Err(NetnsError::NotANamespace { path }),
        Err(e) => Err(NetnsError::Open { path, source: e.into() }),
    }
}

/// Creates network namespace `name` if missing, with `lo` up inside.
///
/// The `DeleteNetns` undo is journalled before `ip netns add`, and only when the name did not
/// exist: a namespace the user made (or shares with other tools) is never deleted by `down`.
/// If another program creates the same name between our check and our `ip netns add`, the add
/// fails and the caller's rollback would delete that namespace; `up` holds the run-dir, so this
/// needs a foreign tool racing us within microseconds on the same name, which we accept.
pub fn ensure(host: &mut Host, name: &str) -> Result<Created, NetnsError> {
    let created = match open(name) {
        Ok(_) => Created::Existing,
        Err(NetnsError::Missing { .. }) => {
            host.record(Undo::DeleteNetns { name: name.to_string() })?;
            run("ip", &["netns", "add", name])?;
            Created::New
        }
        Err(e) => return Err(e),
    };
    // Idempotent; needs no undo (it dies with the namespace, and `lo` up harms no one).
    // Programs expect 127.0.0.1 to work (local IPC, test servers); a new namespace has lo down.
    run("ip", &["-n", name, "link", "set", "dev", "lo", "up"])?;
    if created == Created::New {
        // Unprivileged ping uses ICMP datagram sockets, allowed only for the groups in
        // ping_group_range, which is "1 0" (nobody) in a new namespace; vopono opens it too
        // (docs/peers.md §6). Namespaced sysctl: it dies with the namespace, no undo needed.
        in_netns(name, || std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647\n"))?
            .map_err(|source| NetnsError::Io { name: name.into(), what: "ping_group_range", source })?;
    }
    Ok(created)
}

/// Moves the TUN `dev` into namespace `ns` and configures it there: addresses, up, and the
/// default routes (IPv4 via the TUN; IPv6 via the TUN or unreachable). The host's own routes
/// and rules are not touched.
pub fn move_link(host: &mut Host, dev: &str, ns: &str, addrs: &LinkAddrs) -> Result<(), NetnsError> {
    validate_name(ns)?;
    // After the move, `tun::create`'s `ip link del DEV` undo finds nothing in the host (ignored
    // as already gone); this one deletes the link where it now lives.
    host.ip(&strings(&["link", "set", "dev", dev, "netns", ns]), &strings(&["-n", ns, "link", "del", dev]))?;
    for (cmd, undo) in inner_commands(dev, ns, addrs) {
        host.ip(&cmd, &undo)?;
    }
    Ok(())
}

/// The `ip` commands, with their undos, that configure `dev` inside `ns` after the move.
fn inner_commands(dev: &str, ns: &str, addrs: &LinkAddrs) -> Vec<(Vec<String>, Vec<String>)> {
    let pair = |cmd: &[&str], undo: &[&str]| {
        let mut c = strings(&["-n", ns]);
        c.extend(strings(cmd));
        let mut u = strings(&["-n", ns]);
        u.extend(strings(undo));
        (c, u)
    };
    // Up first, so it is undone last: a link going down flushes its IPv6 addresses, and the
    // undo of the address would then fail with "address not found" (seen in the experiment).
    let mut out = vec![pair(&["link", "set", "dev", dev, "up"], &["link", "set", "dev", dev, "down"])];
    let v4 = format!("{}/32", addrs.v4);
    out.push(pair(&["-4", "addr", "add", &v4, "dev", dev], &["-4", "addr", "del", &v4, "dev", dev]));
    if let Some(v6) = addrs.v6 {
        // nodad: see tun.rs (DAD would hold the address tentative for ~1 s, RFC 4862 §5.4).
        let v6 = format!("{v6}/128");
        out.push(pair(&["-6", "addr", "add", &v6, "dev", dev, "nodad"], &["-6", "addr", "del", &v6, "dev", dev]));
    }
    out.push(pair(&["-4", "route", "add", "default", "dev", dev], &["-4", "route", "del", "default", "dev", dev]));
    if addrs.v6.is_some() {
        out.push(pair(&["-6", "route", "add", "default", "dev", dev], &["-6", "route", "del", "default", "dev", dev]));
    } else {
        out.push(pair(
            &["-6", "route", "add", "unreachable", "default"],
            &["-6", "route", "del", "unreachable", "default"],
        ));
    }
    out
}

/// Interfaces in namespace `name` other than `lo`. Per-app mode promises that this is only the
/// TUN; `exec` (or a test) can refuse a namespace that has another way out, e.g. a veth.
pub fn foreign_links(name: &str, tun: &str) -> Result<Vec<String>, NetnsError> {
    validate_name(name)?;
    let out = run("ip", &["-n", name, "-o", "link", "show"])?;
    Ok(parse_link_names(&out).into_iter().filter(|l| l != "lo" && l != tun).collect())
}

/// Names from `ip -o link show`: "5: smx0: <...>", or "7: veth0@if6: <...>" for a peer link.
fn parse_link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Runs `f` on a new thread that has joined network namespace `name`, and returns its result.
///
/// A thread, because `setns(CLONE_NEWNET)` changes only the calling thread and cannot be
/// undone reliably if `f` panics; the thread, and its namespace membership, end with `f`.
/// Sockets that `f` opens belong to `name` for their whole life, wherever they are used later.
pub fn in_netns<T, F>(name: &str, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = open(name)?;
    let owned = name.to_string();
    let handle = std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetnsError::Enter { name: owned, source })?;
            Ok(f())
        })
        .map_err(|source| NetnsError::Io { name: name.into(), what: "spawn thread", source })?;
    match handle.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_interface_rules() {
        for ok in ["app", "smx-app", "a", "web_1", "fifteen-chars-x"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a:b", "-n", "sixteen-chars-xx", "a\tb", "é", "a\nb"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(path("app").unwrap(), Path::new("/run/netns/app"));
    }

    #[test]
    fn commands_run_inside_the_namespace_with_v6() {
        let addrs = LinkAddrs { v4: Ipv4Addr::new(100, 86, 0, 2), v6: Some("fd6d:6978::2".parse().unwrap()) };
        let cmds = inner_commands("smx0", "app", &addrs);
        assert!(cmds.iter().all(|(c, u)| c[..2] == ["-n", "app"] && u[..2] == ["-n", "app"]));
        let joined: Vec<String> = cmds.iter().map(|(c, _)| c.join(" ")).collect();
        assert_eq!(
            joined,
            [
                "-n app link set dev smx0 up",
                "-n app -4 addr add 100.86.0.2/32 dev smx0",
                "-n app -6 addr add fd6d:6978::2/128 dev smx0 nodad",
                "-n app -4 route add default dev smx0",
                "-n app -6 route add default dev smx0",
            ]
        );
        // Each undo mirrors its command.
        assert_eq!(cmds[4].1.join(" "), "-n app -6 route del default dev smx0");
    }

    #[test]
    fn v6_off_is_unreachable_not_absent() {
        let addrs = LinkAddrs { v4: Ipv4Addr::new(100, 86, 0, 2), v6: None };
        let cmds = inner_commands("smx0", "app", &addrs);
        assert_eq!(cmds.len(), 4);
        assert_eq!(cmds[3].0.join(" "), "-n app -6 route add unreachable default");
        assert!(!cmds.iter().any(|(c, _)| c.join(" ").contains("-6 addr")));
    }

    #[test]
    fn parses_link_names() {
        let out = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\\    link/loopback 00:00:00:00:00:00\n\
                   5: smx0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1400 qdisc fq_codel state UNKNOWN\\    link/none\n\
                   7: veth0@if6: <BROADCAST,MULTICAST> mtu 1500\\    link/ether 02:00:00:00:00:01\n";
        assert_eq!(parse_link_names(out), ["lo", "smx0", "veth0"]);
    }
}
