//! DNS through the tunnel when no systemd-resolved manages it: our own `/etc/resolv.conf`,
//! with the original kept and put back exactly.
//!
//! Contract:
//! - [`apply_file`] replaces the file at the path by ours ([`render_resolv_conf`]) with one
//!   atomic `rename`, so readers never see no file. Before that, the journal gets
//!   `Undo::RestoreFile { path, backup }` (or `Undo::RemoveFile` when there was no file), and
//!   the original is kept at `backup` (in the run dir) *as it was*: a hard link on the same
//!   filesystem (same inode: bytes, mode, owner, xattrs, mtime); across filesystems (run dir on
//!   tmpfs, /etc on disk) an exact copy (bytes, mode, owner, mtime). A symlink is kept as the
//!   symlink itself, never its target: writing through a link would edit resolvconf's or
//!   NetworkManager's file, which they rewrite, while a regular file at the path is one both
//!   leave alone.
//! - [`restore_file`] (what `host::recover` runs for `RestoreFile`) puts the backup back only if
//!   the file at the path is still ours or gone. A foreign edit made while we were up (an
//!   administrator; NetworkManager in `file` mode) is kept and the stale backup removed
//!   (docs/reliability.md §5.2 C3; Tailscale's "owned by" gate). [`reassert_file`] lets the driver
//!   rewrite ours while up, so a DHCP renewal cannot silently move DNS off the tunnel.
//! - An existing backup is never overwritten: it may be the only copy of the user's file.
//! - The journal names exactly `path`, its staging file ([`staging`]) and `backup`, and the
//!   [`Host`] is told so: `host::recover` refuses a restore or removal naming any other file.
//!   `path` is the link itself when `/etc/resolv.conf` is one (also resolved's uplink file,
//!   dns.rs), never its target; a bind-mounted file is written in place at the same path.
//!
//! Crash windows, all safe: killed before the backup exists → "no such backup", nothing to do;
//! after the backup, before the rename → the path still holds the original, which is "not
//! ours", so it is kept and the backup dropped; after the rename → the backup goes back. The
//! same holds for a power loss: the staging file and the backup are synced with their
//! directory before the rename, the directory of the path after it (files.rs).
//!
//! The exact backup and restore themselves live in files.rs, below this module and host.rs
//! (re-exported here); the error and result types of both DNS modes live here, below dns.rs.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use super::files::{is_ours, restore_file, staging, Restored, BACKUP_NAME, MARKER};
use super::files::{keep_exact, move_onto, sync_file};
use super::host::{Host, HostError, JournalContext};
use super::journal::Undo;

/// glibc reads at most 3 `nameserver` lines (MAXNS, resolv.conf(5)); more would be ignored.
pub const MAX_NAMESERVERS: usize = 3;

/// Why the resolver could not be pointed at the tunnel (either mode, see dns.rs).
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Journalling the undo, or a `resolvectl` call, failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// An empty server list.
    #[error("no DNS servers given; pass --dns IP or --no-dns")]
    NoServers,
    /// A backup from an earlier run is still there (possibly the only copy of the original).
    #[error("{0} exists: a previous run was not cleaned up; run `smolmix-vpn down` first")]
    StaleBackup(PathBuf),
    /// The resolv.conf path is a directory or another special file.
    #[error("{0} is neither a file nor a symlink; refusing to replace it")]
    NotAFile(PathBuf),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("cannot write", "cannot back up", …).
        what: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The error of the operation.
        source: io::Error,
    },
}

/// What [`apply`](super::dns::apply) or [`apply_file`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// systemd-resolved now sends every query to our servers over this link (the TUN).
    Resolved {
        /// The TUN's name.
        link: String,
    },
    /// Our resolv.conf is at this path.
    File {
        /// Usually `/etc/resolv.conf`.
        path: PathBuf,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl Fn(io::Error) -> DnsError + 'a {
    move |source| DnsError::Io { what, path: path.to_path_buf(), source }
}

/// Our resolv.conf: the marker, at most [`MAX_NAMESERVERS`] servers, and `options edns0`.
///
/// `edns0`: glibc then advertises a 1200-byte UDP buffer, so answers that would be truncated at
/// 512 bytes come back in one datagram instead of a retry over TCP, which through the mixnet
/// costs a handshake of ~0.7 s round trips. 1200 bytes fits any tunnel MTU we accept.
/// No `trust-ad`: the resolver sits past the exit, and nothing authenticates the exit→resolver
/// leg, so an AD bit from it must not be trusted. No `search`/`domain` lines are carried over:
/// they would send internal names (`host.corp.example`) to a public resolver.
pub fn render_resolv_conf(servers: &[IpAddr]) -> Result<String, DnsError> {
    if servers.is_empty() {
        return Err(DnsError::NoServers);
    }
    if servers.len() > MAX_NAMESERVERS {
        tracing::warn!(given = servers.len(), "glibc uses only the first {MAX_NAMESERVERS} DNS servers");
    }
    let mut s = format!("{MARKER}\n# The original is restored by `smolmix-vpn down`.\n");
    for ip in servers.iter().take(MAX_NAMESERVERS) {
        s.push_str(&format!("nameserver {ip}\n"));
    }
    s.push_str("options edns0\n");
    Ok(s)
}

/// File mode on an explicit path and backup (tests use a temp dir).
pub fn apply_file(host: &mut Host, path: &Path, backup: &Path, servers: &[IpAddr]) -> Result<Applied, DnsError> {
    let ours = render_resolv_conf(servers)?;
    if fs::symlink_metadata(backup).is_ok() {
        // Possibly the only copy of the user's original: never overwrite it.
        return Err(DnsError::StaleBackup(backup.to_path_buf()));
    }
    if is_ours(path) {
        // Ours without a backup: the run dir (tmpfs) was lost, e.g. a reboot while up. The
        // pre-`up` original is gone; what we keep and later restore is this leftover.
        tracing::warn!(path = %path.display(), "left over from an earlier run whose backup is lost");
    }
    let tmp = staging(path);
    let original = match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() || m.file_type().is_symlink() => true,
        Ok(_) => return Err(DnsError::NotAFile(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err("cannot read", path)(e)),
    };
    // What the journal may name, for the replay's check (host.rs).
    host.expect_resolver(JournalContext::new(path, backup));
    // Intent first: the journal is replayed newest first, so the tmp file goes last.
    host.record(Undo::RemoveFile { path: tmp.clone() })?;
    if original {
        host.record(Undo::RestoreFile { path: path.to_path_buf(), backup: backup.to_path_buf() })?;
    } else {
        host.record(Undo::RemoveFile { path: path.to_path_buf() })?;
    }
    write_new(&tmp, ours.as_bytes(), 0o644)?;
    if original {
        // On disk, file and directory, before the original is replaced (files.rs).
        keep_exact(path, backup).map_err(io_err("cannot back up", path))?;
    }
    move_onto(&tmp, path).map_err(io_err("cannot replace", path))?;
    Ok(Applied::File { path: path.to_path_buf() })
}

/// Re-writes our file if something replaced it while we are up (NetworkManager in `file` mode
/// after a DHCP renewal). The backup is untouched: `down` still restores the pre-`up` original.
/// Returns whether anything had to be rewritten. Meant for the driver's 1 s housekeeping tick.
pub fn reassert_file(path: &Path, servers: &[IpAddr]) -> Result<bool, DnsError> {
    if is_ours(path) {
        return Ok(false);
    }
    let tmp = staging(path);
    write_new(&tmp, render_resolv_conf(servers)?.as_bytes(), 0o644)?;
    move_onto(&tmp, path).map_err(io_err("cannot replace", path))?;
    tracing::warn!(path = %path.display(), "resolver configuration was changed by another program; re-asserted");
    Ok(true)
}

/// Writes `bytes` to a fresh `path` (replacing a stale one) with `mode`, synced to disk.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DnsError> {
    let wrap = io_err("cannot write", path);
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(&wrap)?;
    f.write_all(bytes)
        .and_then(|()| f.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| sync_file(&f, path))
        .map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::super::files::{sibling, take_synced};
    use super::super::{host, journal};
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    struct P {
        resolv_conf: PathBuf,
    }

    fn tree(tag: &str) -> (PathBuf, P) {
        let root = std::env::temp_dir().join(format!("smolmix-resolv-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for d in ["etc", "run/smolmix-vpn"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let p = P { resolv_conf: root.join("etc/resolv.conf") };
        (root, p)
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn renders_resolv_conf() {
        let text = render_resolv_conf(&ips(&["192.0.2.53", "2001:db8::53"])).unwrap();
        assert_eq!(
            text,
            format!("{MARKER}\n# The original is restored by `smolmix-vpn down`.\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions edns0\n")
        );
        let four = render_resolv_conf(&ips(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"])).unwrap();
        assert_eq!(four.matches("nameserver").count(), MAX_NAMESERVERS);
        assert!(matches!(render_resolv_conf(&[]), Err(DnsError::NoServers)));
    }

    /// Applies file mode through a journalled [`Host`], checks ours is in place, then runs the
    /// same recovery as `smolmix-vpn down` after a crash.
    fn apply_then_recover(root: &Path, p: &P) {
        let run_dir = root.join("run/smolmix-vpn");
        let backup = run_dir.join(BACKUP_NAME);
        let mut h = Host::open(&run_dir).unwrap();
        apply_file(&mut h, &p.resolv_conf, &backup, &ips(&["192.0.2.53"])).unwrap();
        assert!(is_ours(&p.resolv_conf));
        assert!(fs::read_to_string(&p.resolv_conf).unwrap().contains("nameserver 192.0.2.53\n"));
        assert!(!staging(&p.resolv_conf).exists());
        if fs::symlink_metadata(&backup).is_ok() {
            // A second `up` without `down` must not overwrite the only copy of the original.
            let mut h2 = Host::open(&root.join("run/other")).unwrap();
            let again = apply_file(&mut h2, &p.resolv_conf, &backup, &ips(&["192.0.2.54"]));
            assert!(matches!(again, Err(DnsError::StaleBackup(_))));
        }
        drop(h); // as if SIGKILLed: only the journal is left
        assert!(journal::load(&run_dir)
            .unwrap()
            .iter()
            .any(|u| matches!(u, Undo::RestoreFile { .. } | Undo::RemoveFile { .. })));
        let ctx = JournalContext::new(&p.resolv_conf, &backup);
        assert_eq!(host::recover(&run_dir, &ctx), Vec::<String>::new());
        assert!(fs::symlink_metadata(&backup).is_err(), "backup consumed");
        assert_eq!(host::recover(&run_dir, &ctx), Vec::<String>::new(), "down twice is harmless");
    }

    /// The configuration, not the journal, says which file is ours: `down` run with another
    /// state dir refuses to restore from a backup that is not its own, and changes nothing.
    #[test]
    fn replays_file_lines_only_for_this_configurations_files() {
        let (root, p) = tree("context");
        let run_dir = root.join("run/smolmix-vpn");
        let backup = run_dir.join(BACKUP_NAME);
        fs::write(&p.resolv_conf, "nameserver 198.51.100.1\n").unwrap();
        let mut h = Host::open(&run_dir).unwrap();
        apply_file(&mut h, &p.resolv_conf, &backup, &ips(&["192.0.2.53"])).unwrap();
        drop(h);
        let other = JournalContext::new(&p.resolv_conf, &root.join("var/lib/other").join(BACKUP_NAME));
        let refused = host::recover(&run_dir, &other);
        assert!(
            matches!(refused.as_slice(), [f] if f.contains("refusing") && f.contains("RestoreFile")),
            "{refused:?}"
        );
        assert!(is_ours(&p.resolv_conf) && backup.exists(), "neither restored nor dropped");
        fs::remove_dir_all(&root).unwrap();
    }

    /// A power loss right after any step leaves the old file or the new one, and the backup is
    /// on disk (file and directory) before the original is replaced (files.rs module doc).
    #[test]
    fn syncs_the_backup_before_the_original_is_replaced_and_each_name_after() {
        let (root, p) = tree("durable");
        let (run_dir, etc) = (root.join("run/smolmix-vpn"), root.join("etc"));
        let backup = run_dir.join(BACKUP_NAME);
        fs::write(&p.resolv_conf, "nameserver 198.51.100.1\n").unwrap();
        let mut h = Host::open(&run_dir).unwrap();
        take_synced();
        apply_file(&mut h, &p.resolv_conf, &backup, &ips(&["192.0.2.53"])).unwrap();
        // Ours (bytes), the backup (its inode, then its name), then the rename onto the path.
        assert_eq!(take_synced(), [staging(&p.resolv_conf), backup.clone(), run_dir.clone(), etc.clone()]);
        fs::write(&p.resolv_conf, "nameserver 203.0.113.9\n").unwrap(); // overwritten: re-asserted
        assert!(reassert_file(&p.resolv_conf, &ips(&["192.0.2.53"])).unwrap());
        assert_eq!(take_synced(), [staging(&p.resolv_conf), etc.clone()]);
        // The stop: the original back onto its name, then the backup's name gone.
        assert_eq!(h.rollback(), Vec::<String>::new());
        assert_eq!(take_synced(), [etc, run_dir]);
        assert_eq!(fs::read(&p.resolv_conf).unwrap(), b"nameserver 198.51.100.1\n");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn restores_a_regular_file_exactly() {
        let (root, p) = tree("regular");
        let original: &[u8] = b"# odd bytes \xff\xfe\r\nnameserver 198.51.100.1\nsearch corp.example"; // no final newline
        fs::write(&p.resolv_conf, original).unwrap();
        fs::set_permissions(&p.resolv_conf, fs::Permissions::from_mode(0o640)).unwrap();
        let before = fs::symlink_metadata(&p.resolv_conf).unwrap();
        apply_then_recover(&root, &p);
        let after = fs::symlink_metadata(&p.resolv_conf).unwrap();
        assert_eq!(fs::read(&p.resolv_conf).unwrap(), original);
        assert_eq!(
            (after.mode(), after.uid(), after.gid(), after.ino()),
            (before.mode(), before.uid(), before.gid(), before.ino())
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn restores_a_symlink_itself_not_its_target() {
        let (root, p) = tree("symlink");
        fs::create_dir_all(root.join("run/NetworkManager")).unwrap();
        let target_file = root.join("run/NetworkManager/resolv.conf");
        fs::write(&target_file, "nameserver 198.51.100.1\n").unwrap();
        symlink("../run/NetworkManager/resolv.conf", &p.resolv_conf).unwrap();
        apply_then_recover(&root, &p);
        assert_eq!(fs::read_link(&p.resolv_conf).unwrap(), PathBuf::from("../run/NetworkManager/resolv.conf"));
        assert_eq!(fs::read(&target_file).unwrap(), b"nameserver 198.51.100.1\n", "target never written");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn removes_ours_when_there_was_no_file() {
        let (root, p) = tree("missing");
        apply_then_recover(&root, &p);
        assert!(fs::symlink_metadata(&p.resolv_conf).is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn keeps_a_foreign_edit_and_reasserts_ours() {
        let (root, p) = tree("foreign");
        let backup = root.join("run/smolmix-vpn").join(BACKUP_NAME);
        fs::write(&p.resolv_conf, "nameserver 198.51.100.1\n").unwrap();
        let mut h = Host::open(&root.join("run/smolmix-vpn")).unwrap();
        apply_file(&mut h, &p.resolv_conf, &backup, &ips(&["192.0.2.53"])).unwrap();
        assert!(!reassert_file(&p.resolv_conf, &ips(&["192.0.2.53"])).unwrap());
        fs::write(&p.resolv_conf, "nameserver 203.0.113.9\n").unwrap(); // DHCP renewal
        assert!(reassert_file(&p.resolv_conf, &ips(&["192.0.2.53"])).unwrap());
        assert!(is_ours(&p.resolv_conf));
        fs::write(&p.resolv_conf, "nameserver 203.0.113.9\n").unwrap(); // the admin's, at the end
        assert_eq!(restore_file(&p.resolv_conf, &backup), Ok(Restored::KeptForeignEdit));
        assert_eq!(fs::read(&p.resolv_conf).unwrap(), b"nameserver 203.0.113.9\n");
        assert!(restore_file(&p.resolv_conf, &backup).unwrap_err().contains("no such backup"));
        fs::remove_dir_all(&root).unwrap();
    }

    /// The EXDEV path (run dir on tmpfs, /etc on disk), where /dev/shm is another filesystem.
    #[test]
    fn backs_up_and_restores_across_filesystems() {
        let shm = PathBuf::from(format!("/dev/shm/smolmix-resolv-xdev-{}", std::process::id()));
        let (root, p) = tree("xdev");
        let dev = |q: &Path| fs::metadata(q).map(|m| m.dev()).ok();
        if fs::create_dir_all(&shm).is_err() || dev(&shm) == dev(&root) {
            eprintln!("skipped: no second filesystem at /dev/shm");
            return;
        }
        for original in [None, Some("../run/resolvconf/resolv.conf")] {
            let _ = fs::remove_file(&p.resolv_conf);
            match original {
                Some(target) => symlink(target, &p.resolv_conf).unwrap(),
                None => fs::write(&p.resolv_conf, b"nameserver 198.51.100.1\n").unwrap(),
            }
            let backup = shm.join(BACKUP_NAME);
            let mut h = Host::open(&shm).unwrap();
            take_synced();
            apply_file(&mut h, &p.resolv_conf, &backup, &ips(&["192.0.2.53"])).unwrap();
            assert!(is_ours(&p.resolv_conf));
            // The copy's bytes (a regular file; a symlink has none to sync), then its name.
            let copy: &[PathBuf] = if original.is_none() { std::slice::from_ref(&backup) } else { &[] };
            let etc = root.join("etc");
            assert_eq!(take_synced(), [&[staging(&p.resolv_conf)], copy, &[shm.clone(), etc.clone()]].concat());
            assert_eq!(restore_file(&p.resolv_conf, &backup), Ok(Restored::Exact));
            // An exact copy beside the path (synced), renamed onto it, then the backup's name gone.
            let restored = sibling(&p.resolv_conf, "smolmix-vpn.restore");
            let copy: &[PathBuf] = if original.is_none() { std::slice::from_ref(&restored) } else { &[] };
            assert_eq!(take_synced(), [copy, &[etc, shm.clone()]].concat());
            match original {
                Some(target) => assert_eq!(fs::read_link(&p.resolv_conf).unwrap(), PathBuf::from(target)),
                None => assert_eq!(fs::read(&p.resolv_conf).unwrap(), b"nameserver 198.51.100.1\n"),
            }
            assert!(fs::symlink_metadata(&backup).is_err());
            assert!(!sibling(&p.resolv_conf, "smolmix-vpn.restore").exists());
        }
        fs::remove_dir_all(&shm).unwrap();
        fs::remove_dir_all(&root).unwrap();
    }
}
