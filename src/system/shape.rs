//! Which journal lines `down` replays: the journal is replayed as root, so a line runs only if
//! it has a shape this program writes ([`own_shape`]), and a line naming a file only if it names
//! exactly the files of the configuration in use ([`JournalContext`]). host.rs replays; this
//! file only judges. A refused line is reported and dropped (host.rs `recover`).

use std::path::{Path, PathBuf};

use super::files::staging;
use super::firewall;
use super::journal::Undo;
use super::mark::{self, SRC_VALID_MARK};

/// The only files a journal of ours may name, exactly: the resolver file that DNS's file mode
/// replaces, its staging file beside it, and the backup of its original (dns.rs `DnsPaths`:
/// `/etc/resolv.conf` itself, also when it is a link or a bind mount, never a link's target; the
/// backup in the state dir). The journal is replayed as root: a line may not choose which file
/// root writes or removes, the configuration does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalContext {
    resolv_conf: PathBuf,
    backup: PathBuf,
}

impl JournalContext {
    /// The resolver file at `resolv_conf`, its original kept at `backup`.
    pub fn new(resolv_conf: &Path, backup: &Path) -> JournalContext {
        JournalContext { resolv_conf: resolv_conf.to_path_buf(), backup: backup.to_path_buf() }
    }
}

/// Why a journal line is not one this program writes ([`own_shape`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Foreign {
    #[error("not an ip delete")]
    Ip,
    #[error("not one of our nft tables")]
    Nft,
    #[error("not resolvectl revert")]
    Resolvectl,
    #[error("not our sysctl")]
    Sysctl,
    #[error("not a namespace name")]
    Netns,
    #[error("this run replaced no resolver file")]
    NoResolverFile,
    #[error("names another file than the resolver file {0} and its staging file")]
    ResolverFile(PathBuf),
    #[error("not the backup {0} (was `up` given another --state-dir?)")]
    Backup(PathBuf),
}

/// Whether `undo` has a shape this program writes: delete-only `ip` commands on links,
/// addresses, routes and rules; deleting our own nft tables; `resolvectl revert`; one sysctl
/// back to 0 or 1; a namespace by a plain name; and exactly the files of `files`.
pub(super) fn own_shape(undo: &Undo, files: Option<&JournalContext>) -> Result<(), Foreign> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
            && !s.starts_with('-')
    };
    match undo {
        Undo::Ip { args } => {
            // Options first (`-n NS`, `-4`/`-6`, in either order), then the command.
            let mut a: &[String] = args;
            loop {
                match a {
                    [flag, rest @ ..] if flag == "-4" || flag == "-6" => a = rest,
                    [flag, ns, rest @ ..] if flag == "-n" && plain(ns) => a = rest,
                    _ => break,
                }
            }
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            match a.as_slice() {
                ["link" | "addr" | "route" | "rule", "del", rest @ ..] if rest.iter().all(|s| plain(s)) => Ok(()),
                // netns.rs: the TUN moved into a namespace is taken down again first.
                ["link", "set", "dev", dev, "down"] if plain(dev) => Ok(()),
                _ => Err(Foreign::Ip),
            }
        }
        Undo::Nft { args } if *args == firewall::undo_args() || *args == mark::undo_args() => Ok(()),
        Undo::Nft { .. } => Err(Foreign::Nft),
        Undo::Resolvectl { args } => match args.as_slice() {
            [verb, link] if verb == "revert" && plain(link) => Ok(()),
            _ => Err(Foreign::Resolvectl),
        },
        Undo::Sysctl { key, value } if key == SRC_VALID_MARK && (value == "0" || value == "1") => Ok(()),
        Undo::Sysctl { .. } => Err(Foreign::Sysctl),
        Undo::DeleteNetns { name } if plain(name) && !name.contains('/') => Ok(()),
        Undo::DeleteNetns { .. } => Err(Foreign::Netns),
        Undo::RestoreFile { path, backup } => {
            let files = files.ok_or(Foreign::NoResolverFile)?;
            // Only the file itself has an original to restore; the staging file had none.
            if *path != files.resolv_conf {
                return Err(Foreign::ResolverFile(files.resolv_conf.clone()));
            }
            if *backup != files.backup {
                return Err(Foreign::Backup(files.backup.clone()));
            }
            Ok(())
        }
        Undo::RemoveFile { path } => {
            let files = files.ok_or(Foreign::NoResolverFile)?;
            if *path == files.resolv_conf || *path == staging(&files.resolv_conf) {
                Ok(())
            } else {
                Err(Foreign::ResolverFile(files.resolv_conf.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::files::BACKUP_NAME;
    use super::*;

    fn strings(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    /// The default configuration's files (dns.rs `DnsPaths::default`).
    fn default_files() -> JournalContext {
        JournalContext::new(Path::new("/etc/resolv.conf"), &Path::new("/var/lib/smolmix-vpn").join(BACKUP_NAME))
    }

    #[test]
    fn only_our_own_undo_shapes_are_replayed() {
        let run = Path::new("/run/smolmix-vpn");
        let files = default_files();
        let ip = |a: &[&str]| Undo::Ip { args: strings(a) };
        let restore = |path: &str, backup: &Path| Undo::RestoreFile { path: path.into(), backup: backup.into() };
        let ours = [
            ip(&["link", "del", "smx0"]),
            ip(&["-6", "addr", "del", "fd00::2/128", "dev", "smx0"]),
            ip(&["-n", "app", "link", "del", "smx0"]),
            ip(&["-n", "app", "-6", "route", "del", "default", "dev", "smx0"]),
            ip(&["-n", "app", "link", "set", "dev", "smx0", "down"]),
            ip(&["-4", "rule", "del", "fwmark", "0x736d", "lookup", "main", "pref", "5208"]),
            ip(&["-4", "route", "del", "unreachable", "0.0.0.0/0", "metric", "4096", "table", "29549"]),
            Undo::Nft { args: firewall::undo_args() },
            Undo::Nft { args: mark::undo_args() },
            Undo::Resolvectl { args: strings(&["revert", "smx0"]) },
            Undo::Sysctl { key: SRC_VALID_MARK.into(), value: "0".into() },
            Undo::DeleteNetns { name: "app".into() },
            restore("/etc/resolv.conf", &files.backup),
            Undo::RemoveFile { path: "/etc/resolv.conf".into() },
            Undo::RemoveFile { path: "/etc/.resolv.conf.smolmix-vpn.tmp".into() },
        ];
        for u in &ours {
            assert_eq!(own_shape(u, Some(&files)), Ok(()), "{u:?}");
        }
        let foreign = [
            ip(&["netns", "exec", "app", "sh", "-c", "id"]),
            ip(&["-batch", "/tmp/x"]),
            ip(&["link", "add", "x", "type", "dummy"]),
            ip(&["-n", "app", "netns", "exec", "x", "sh"]),
            ip(&["route", "del", "-force"]),
            ip(&["-n", "app", "link", "set", "dev", "smx0", "netns", "1"]),
            ip(&["-n", "-6", "link", "del", "x"]),
            Undo::Nft { args: strings(&["flush", "ruleset"]) },
            Undo::Resolvectl { args: strings(&["dns", "eth0", "9.9.9.9"]) },
            Undo::Sysctl { key: "kernel.core_pattern".into(), value: "|/tmp/x".into() },
            Undo::Sysctl { key: SRC_VALID_MARK.into(), value: "2".into() },
            Undo::DeleteNetns { name: "../../etc".into() },
            restore("/etc/shadow", &files.backup),
            restore("/etc/resolv.conf", Path::new("/tmp/evil")),
            Undo::RemoveFile { path: "/etc/../etc/resolv.conf/../passwd".into() },
            Undo::RemoveFile { path: "relative/resolv.conf".into() },
            // A `resolv.conf` that is not the resolver file: root writing into modprobe.d
            // would run a command at the next module load.
            restore("/etc/modprobe.d/resolv.conf", &files.backup),
            restore("/etc/../etc/resolv.conf", &files.backup),
            restore("/etc/.resolv.conf.smolmix-vpn.tmp", &files.backup),
            Undo::RemoveFile { path: "/etc/modprobe.d/resolv.conf".into() },
            Undo::RemoveFile { path: "/etc/modprobe.d/.resolv.conf.smolmix-vpn.tmp".into() },
            Undo::RemoveFile { path: "/etc/.resolv.conf.smolmix-vpn.restore".into() },
            // A backup by its name, elsewhere than in this configuration's state dir.
            restore("/etc/resolv.conf", &run.join(BACKUP_NAME)),
            restore("/etc/resolv.conf", &Path::new("/tmp").join(BACKUP_NAME)),
            restore("/etc/resolv.conf", &Path::new("/var/lib/smolmix-vpn/../../../tmp").join(BACKUP_NAME)),
            restore("/etc/resolv.conf", &files.backup.with_file_name("resolv.conf.backup.old")),
            Undo::RemoveFile { path: files.backup.clone() },
        ];
        for u in &foreign {
            assert!(own_shape(u, Some(&files)).is_err(), "{u:?}");
        }
        // A run that replaced no resolver file wrote no file line at all.
        for u in ours.iter().filter(|u| matches!(u, Undo::RestoreFile { .. } | Undo::RemoveFile { .. })) {
            assert_eq!(own_shape(u, None), Err(Foreign::NoResolverFile), "{u:?}");
        }
    }

    #[test]
    fn the_resolver_file_is_the_configurations_not_a_fixed_name() {
        // A test's temp dir, or an administrator's --state-dir: exactly those paths, nothing else.
        let files =
            JournalContext::new(Path::new("/tmp/t/etc/resolv.conf"), Path::new("/srv/state/resolv.conf.backup"));
        let ok =
            Undo::RestoreFile { path: "/tmp/t/etc/resolv.conf".into(), backup: "/srv/state/resolv.conf.backup".into() };
        assert_eq!(own_shape(&ok, Some(&files)), Ok(()));
        assert_eq!(
            own_shape(&Undo::RemoveFile { path: "/tmp/t/etc/.resolv.conf.smolmix-vpn.tmp".into() }, Some(&files)),
            Ok(())
        );
        let default_backup =
            Undo::RestoreFile { path: "/tmp/t/etc/resolv.conf".into(), backup: default_files().backup };
        assert_eq!(
            own_shape(&default_backup, Some(&files)),
            Err(Foreign::Backup("/srv/state/resolv.conf.backup".into()))
        );
        let default_file = Undo::RemoveFile { path: "/etc/resolv.conf".into() };
        assert_eq!(own_shape(&default_file, Some(&files)), Err(Foreign::ResolverFile("/tmp/t/etc/resolv.conf".into())));
    }
}
