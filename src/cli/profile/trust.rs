//! Whether root may act on a profile: one that decides where traffic goes must be root's alone.
//!
//! As root, a profile is refused when anyone but root could have written it, or could swap it
//! for another by writing a directory above it: the file and every directory up to `/` must
//! be owned by root and writable by no group but root's and by no one else. A world-writable
//! directory with the sticky bit (`/tmp`) is allowed, since there nobody can rename or remove
//! root's entries. Links are resolved first and the checked path is the one then read, so a
//! link cannot be re-pointed between the check and the read. Being readable by others is fine:
//! a profile holds no secrets (the mixnet identity lives in `identity-dir`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ProfileError;

const STICKY: u32 = 0o1000;
const GROUP_WRITE: u32 = 0o020;
const OTHER_WRITE: u32 = 0o002;

/// The profile's real path (links resolved), once it and every directory above it are root's
/// alone; `Ok(path)` unchanged if it does not exist, for the caller to report.
pub(super) fn check(path: &Path) -> Result<PathBuf, ProfileError> {
    let real = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path.to_path_buf()),
        Err(source) => return Err(ProfileError::Read { path: path.to_path_buf(), source }),
    };
    for p in real.ancestors() {
        let meta = fs::metadata(p).map_err(|source| ProfileError::Read { path: p.to_path_buf(), source })?;
        if let Some(who) = others_can_write(meta.uid(), meta.gid(), meta.mode(), meta.is_dir()) {
            return Err(ProfileError::Untrusted { path: p.to_path_buf(), who });
        }
    }
    Ok(real)
}

/// Who besides root can change a file or directory with this owner, group and mode; `None`:
/// nobody.
pub(super) fn others_can_write(uid: u32, gid: u32, mode: u32, is_dir: bool) -> Option<String> {
    let sticky_dir = is_dir && mode & STICKY != 0;
    let mode = mode & 0o7777;
    if uid != 0 {
        Some(format!("belongs to uid {uid}"))
    } else if mode & OTHER_WRITE != 0 && !sticky_dir {
        Some(format!("can be written by everyone (mode {mode:04o})"))
    } else if mode & GROUP_WRITE != 0 && gid != 0 && !sticky_dir {
        Some(format!("can be written by group {gid} (mode {mode:04o})"))
    } else {
        None
    }
}

/// The message of [`ProfileError::Untrusted`]: what is wrong, why it matters, the fix.
pub(super) fn explain(path: &Path, who: &str) -> String {
    let p = path.display();
    format!(
        "{p} {who}: a profile decides where traffic goes, so as root smolmix-vpn only reads one \
         that root alone can change; fix it with `chown root:root {p} && chmod go-w {p}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_alone() {
        assert_eq!(others_can_write(0, 0, 0o100644, false), None);
        assert_eq!(others_can_write(0, 0, 0o100664, false), None, "root's group writing is root");
        assert_eq!(others_can_write(0, 0, 0o40755, true), None);
        // /tmp: world-writable, but sticky, so root's entries stay root's.
        assert_eq!(others_can_write(0, 0, 0o41777, true), None);
    }

    #[test]
    fn anyone_else() {
        assert_eq!(others_can_write(1000, 0, 0o100600, false).unwrap(), "belongs to uid 1000");
        assert!(others_can_write(0, 0, 0o100646, false).unwrap().contains("everyone (mode 0646)"));
        assert!(others_can_write(0, 100, 0o100664, false).unwrap().contains("group 100"));
        assert!(others_can_write(0, 100, 0o40775, true).unwrap().contains("group 100"));
        // The sticky bit means nothing on a file.
        assert!(others_can_write(0, 0, 0o101666, false).is_some());
        assert!(others_can_write(0, 0, 0o40777, true).is_some());
    }

    #[test]
    fn the_message_names_the_path_and_the_fix() {
        let m = explain(Path::new("/etc/smolmix-vpn/w.toml"), "belongs to uid 1000");
        assert!(m.starts_with("/etc/smolmix-vpn/w.toml belongs to uid 1000: "), "{m}");
        assert!(m.contains("chown root:root /etc/smolmix-vpn/w.toml && chmod go-w /etc/smolmix-vpn/w.toml"), "{m}");
    }
}
