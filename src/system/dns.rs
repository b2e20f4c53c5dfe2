//! DNS through the tunnel: who manages the resolver, and the systemd-resolved integration.
//!
//! Contract:
//! - [`detect`] decides who manages `/etc/resolv.conf`. It is systemd-resolved when the file is
//!   a symlink to `stub-resolv.conf` or `resolv.conf` in `/run/systemd/resolve` *and* resolved
//!   answers; anything else (a plain file, a symlink to resolvconf's or NetworkManager's file,
//!   a symlink to resolved's file while resolved is down, no file at all) is handled as a file
//!   by [`super::resolv_conf`]. The stub file is stub mode; resolved's `resolv.conf` is uplink
//!   mode, below.
//! - [`apply`] configures that manager, journalling the undo through [`Host`] *before* each
//!   change, so [`super::host::recover`] restores the host after a crash as after a clean stop.
//! - resolved mode only touches the TUN link: its servers, the routing domain `~.`,
//!   default-route, and LLMNR/mDNS off. Other links are left as they are. Undo: `resolvectl
//!   revert <tun>`. In practice resolved has forgotten the link before that runs: the driver
//!   closes the TUN before it replays the journal, the kernel deletes the link, resolved drops
//!   its settings with it ("Removing link" in its log; netns-tests/resolved.sh sees no
//!   RevertLink call reach it), and the revert answers "No such device", which the replay counts
//!   as already undone. The revert is for a TUN that outlives us.
//! - Uplink mode (the symlink points at resolved's `resolv.conf`, not the stub): glibc reads
//!   that file, which lists *every* link's servers, the physical link's included, in the order
//!   of resolved's link table, and asks them itself, past resolved's routing (netns-tests/
//!   resolved.sh saw getent ask the physical link's server directly, in split mode). So the TUN
//!   link is configured as in stub mode, and the symlink is replaced, as any symlink is in file
//!   mode, by our file naming the stub, 127.0.0.53, so that glibc asks resolved too. Not our
//!   servers: resolved reads a foreign /etc/resolv.conf and adopts its servers as global ones,
//!   and still has them after the symlink is back (it does not re-read its own files), so our
//!   servers would outlive us in its global state; its own stub address it ignores there. A
//!   host whose stub listener is off then fails lookups while up: closed, not leaking.
//!
//! Why no wait for resolved to learn of a TUN just created: the kernel queues the RTM_NEWLINK on
//! resolved's rtnetlink socket before the TUN ioctl returns, and resolved dispatches rtnetlink
//! ahead of the bus (its event priority is `SD_EVENT_PRIORITY_IMPORTANT`), so the `SetLinkDNS`
//! of the first `resolvectl` never meets "Link N not known" (netns-tests/resolved.sh brings a
//! fresh TUN up four times a run, setup.rs calling resolvectl right after its addresses and
//! routes, and has not seen it; 20 `ip tuntap add` + `resolvectl dns` in a row did not either).
//!
//! Why `~.` sends every query to the tunnel's servers: resolved routes a query to the links
//! whose routing or search domains are a suffix of the name, the longest match winning, and
//! only when *no* link matches does it fall back to all links with default-route set
//! (systemd-resolved.service(8), "Protocols and Routing"). `~.` is the root as a routing-only
//! domain: it matches every name, so the fallback never happens and the physical links'
//! servers are never asked. The exception is a name under a longer domain that another link
//! claims (a corporate VPN's `~corp.example`, a DHCP search domain `lan`): that link still
//! wins for those names, so the leak test must not configure such a domain on the physical
//! link, and `status` should print them. resolved binds its upstream sockets to the link's
//! ifindex, so the queries leave by the TUN whatever the routing table says, also in split
//! mode. `default-route true` is what resolved would infer from `~.` anyway; setting it keeps
//! older versions (< 240 has no default-route, and fails the call: we report that) explicit.
//!
//! Not here: the firewall that drops port 53 not sent into the tunnel (the kill switch's job,
//! docs/reliability.md §1.7) and the per-namespace resolv.conf of `exec` (in exec.rs).

use std::ffi::OsStr;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path, PathBuf};

use super::files::{restore_file, BACKUP_NAME};
use super::host::{run, Host, JournalContext};
use super::journal::Undo;
use super::resolv_conf::apply_file;
// Defined with the file mode, the lower of the two modules; the driver names them from here.
pub use super::resolv_conf::{Applied, DnsError};

/// Where the resolver configuration lives; injectable so tests run in a temp dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPaths {
    /// The resolver file itself (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// systemd-resolved's runtime directory, where its `stub-resolv.conf` and `resolv.conf` live.
    pub resolved_stub_dir: PathBuf,
    /// Persistent storage for the resolv.conf backup (`--state-dir`): a backup on tmpfs would
    /// vanish with a power loss and leave the host's resolver pointing at our servers for good.
    pub backup_dir: PathBuf,
}

impl Default for DnsPaths {
    fn default() -> Self {
        DnsPaths {
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            resolved_stub_dir: PathBuf::from("/run/systemd/resolve"),
            backup_dir: PathBuf::from("/var/lib/smolmix-vpn"),
        }
    }
}

impl DnsPaths {
    /// Where the original resolv.conf is kept while we are up.
    pub fn backup(&self) -> PathBuf {
        self.backup_dir.join(BACKUP_NAME)
    }

    /// The files a journal written with these paths may name: [`apply`] journals only
    /// `resolv_conf` (in both file mode and resolved's uplink mode), its staging file and
    /// [`DnsPaths::backup`]. What `up` and `down` pass to [`super::host::recover`].
    pub fn journal_context(&self) -> JournalContext {
        JournalContext::new(&self.resolv_conf, &self.backup())
    }

    /// Puts the original resolv.conf back if its backup outlived the journal that knew of it
    /// (a reboot while up empties the run dir, not the state dir). Nothing to do without a
    /// backup; a resolv.conf that is no longer ours is kept and the stale backup dropped.
    pub fn recover_backup(&self) -> Result<bool, String> {
        let backup = self.backup();
        if std::fs::symlink_metadata(&backup).is_err() {
            return Ok(false);
        }
        restore_file(&self.resolv_conf, &backup).map(|_| true)
    }
}

/// Who manages the resolver configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manager {
    /// systemd-resolved in stub mode (`stub-resolv.conf`: only 127.0.0.53): configure the TUN
    /// link with resolvectl.
    Resolved,
    /// systemd-resolved in uplink mode (its `resolv.conf`: every link's servers, read by glibc
    /// directly): configure the TUN link *and* replace the symlink with our file.
    ResolvedUplink,
    /// A regular file at the path.
    File,
    /// A symlink to something resolved does not own (resolvconf, NetworkManager, a dead link).
    Symlink(PathBuf),
    /// No resolv.conf at all (glibc then asks 127.0.0.1).
    Missing,
}

/// Decides who manages `paths.resolv_conf`. `resolved_up` is asked only when the file points at
/// resolved's directory (so plain-file hosts never spawn `resolvectl`).
pub fn detect(paths: &DnsPaths, resolved_up: impl FnOnce() -> bool) -> Manager {
    let Ok(meta) = fs::symlink_metadata(&paths.resolv_conf) else { return Manager::Missing };
    if !meta.file_type().is_symlink() {
        return Manager::File;
    }
    let Ok(target) = fs::read_link(&paths.resolv_conf) else { return Manager::Missing };
    match resolved_file(&paths.resolv_conf, &target, &paths.resolved_stub_dir) {
        Some(name) if resolved_up() => match name {
            STUB => Manager::Resolved,
            _ => Manager::ResolvedUplink,
        },
        _ => Manager::Symlink(target),
    }
}

/// resolved's stub file: `nameserver 127.0.0.53` and nothing else.
const STUB: &str = "stub-resolv.conf";
/// The address of resolved's stub listener (systemd-resolved.service(8)).
const RESOLVED_STUB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53));

/// Which of resolved's two files the link target is, if any. Compared lexically first
/// (relative links like `../run/systemd/resolve/stub-resolv.conf` are common), then through
/// `canonicalize`, so `/var/run -> /run` style indirections match too.
fn resolved_file(link: &Path, target: &Path, stub_dir: &Path) -> Option<&'static str> {
    let name = match target.file_name().and_then(OsStr::to_str) {
        Some(STUB) => STUB,
        Some("resolv.conf") => "resolv.conf",
        _ => return None,
    };
    let base = link.parent().unwrap_or(Path::new("/"));
    let abs = normalize(&base.join(target));
    let dir = abs.parent()?;
    let same = dir == normalize(stub_dir)
        || matches!((fs::canonicalize(dir), fs::canonicalize(stub_dir)), (Ok(a), Ok(b)) if a == b);
    same.then_some(name)
}

/// Lexical `.`/`..` removal (symlinks inside are not followed; that is `canonicalize`'s job).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Is systemd-resolved running? `resolvectl status` talks to org.freedesktop.resolve1 and fails
/// when nobody owns that name; a missing `resolvectl` is "no" too.
pub fn resolved_is_up() -> bool {
    run("resolvectl", &["--no-pager", "status"]).is_ok()
}

/// Points the host's resolver at `servers` through the TUN `tun`, journalled in `host`.
pub fn apply(host: &mut Host, paths: &DnsPaths, tun: &str, servers: &[IpAddr]) -> Result<Applied, DnsError> {
    if servers.is_empty() {
        return Err(DnsError::NoServers);
    }
    match detect(paths, resolved_is_up) {
        Manager::Resolved => apply_resolved(host, tun, servers),
        Manager::ResolvedUplink => {
            // The module doc says why the file names the stub and not `servers`. Reported as
            // resolved mode: every lookup goes through resolved; nothing is re-asserted.
            let applied = apply_resolved(host, tun, servers)?;
            apply_file(host, &paths.resolv_conf, &paths.backup(), &[RESOLVED_STUB])?;
            Ok(applied)
        }
        manager => {
            tracing::debug!(?manager, "resolv.conf is not managed by systemd-resolved");
            apply_file(host, &paths.resolv_conf, &paths.backup(), servers)
        }
    }
}

/// The resolvectl calls for the TUN link, in order; the undo is `resolvectl revert <tun>`.
pub fn resolved_commands(tun: &str, servers: &[IpAddr]) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut dns = s(&["dns", tun]);
    dns.extend(servers.iter().map(IpAddr::to_string));
    vec![
        dns,
        s(&["domain", tun, "~."]),
        s(&["default-route", tun, "true"]),
        // LLMNR/mDNS on the TUN would multicast host names to the exit; they are useless there.
        s(&["llmnr", tun, "no"]),
        s(&["mdns", tun, "no"]),
    ]
}

fn apply_resolved(host: &mut Host, tun: &str, servers: &[IpAddr]) -> Result<Applied, DnsError> {
    // Deleting the TUN also makes resolved forget the link; the revert covers a TUN that stays.
    host.record(Undo::Resolvectl { args: vec!["revert".into(), tun.into()] })?;
    for args in resolved_commands(tun, servers) {
        run("resolvectl", &args)?;
    }
    // Answers cached from the physical link's servers would otherwise be served for a while.
    if let Err(e) = run("resolvectl", &["flush-caches"]) {
        tracing::debug!(%e, "flush-caches");
    }
    Ok(Applied::Resolved { link: tun.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(tag: &str) -> (PathBuf, DnsPaths) {
        let root = std::env::temp_dir().join(format!("smolmix-dns-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in ["etc", "run/systemd/resolve", "run/smolmix-vpn"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let paths = DnsPaths {
            resolv_conf: root.join("etc/resolv.conf"),
            resolved_stub_dir: root.join("run/systemd/resolve"),
            backup_dir: root.join("var/lib/smolmix-vpn"),
        };
        (root, paths)
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn detects_the_manager() {
        let (root, p) = tree("detect");
        let never = || -> bool { panic!("resolved must not be probed for this file") };
        assert_eq!(detect(&p, never), Manager::Missing);
        fs::write(&p.resolv_conf, "nameserver 192.0.2.1\n").unwrap();
        assert_eq!(detect(&p, never), Manager::File);

        fs::remove_file(&p.resolv_conf).unwrap();
        let rel = PathBuf::from("../run/systemd/resolve/stub-resolv.conf");
        symlink(&rel, &p.resolv_conf).unwrap();
        assert_eq!(detect(&p, || true), Manager::Resolved);
        // resolved down: its file is just a file someone else wrote; replace the link.
        assert_eq!(detect(&p, || false), Manager::Symlink(rel));

        // Uplink mode: glibc reads every link's servers from that file, so it is not the stub.
        fs::remove_file(&p.resolv_conf).unwrap();
        symlink(p.resolved_stub_dir.join("resolv.conf"), &p.resolv_conf).unwrap();
        assert_eq!(detect(&p, || true), Manager::ResolvedUplink);
        assert_eq!(detect(&p, || false), Manager::Symlink(p.resolved_stub_dir.join("resolv.conf")));

        // An indirection (/var/run -> /run) only matches through canonicalize.
        fs::create_dir_all(root.join("var")).unwrap();
        symlink("../run", root.join("var/run")).unwrap();
        fs::remove_file(&p.resolv_conf).unwrap();
        symlink(root.join("var/run/systemd/resolve/stub-resolv.conf"), &p.resolv_conf).unwrap();
        assert_eq!(detect(&p, || true), Manager::Resolved);

        for other in
            ["../run/NetworkManager/resolv.conf", "../run/resolvconf/resolv.conf", "../run/systemd/resolve/other.conf"]
        {
            fs::remove_file(&p.resolv_conf).unwrap();
            symlink(other, &p.resolv_conf).unwrap();
            assert_eq!(detect(&p, never), Manager::Symlink(other.into()), "{other}");
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn resolved_commands_route_everything_to_the_tun() {
        let cmds = resolved_commands("smx0", &ips(&["192.0.2.53", "2001:db8::53"]));
        assert_eq!(cmds[0], ["dns", "smx0", "192.0.2.53", "2001:db8::53"]);
        assert_eq!(cmds[1], ["domain", "smx0", "~."]);
        assert_eq!(cmds[2], ["default-route", "smx0", "true"]);
        assert!(cmds.iter().all(|c| c[1] == "smx0"), "other links are never touched");
    }
}
