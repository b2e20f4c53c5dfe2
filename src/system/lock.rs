//! The run dir and the instance lock: one `up` at a time, in a directory nobody else can steer.
//!
//! The run dir holds the journal, whose lines are replayed as root, and the status file. So it
//! must be ours alone: a real directory (not a symlink someone planted), owned by the effective
//! user, writable by nobody else. One we create is made 0700; an existing one that only we can
//! write is tightened to 0700; anything else is refused, never "fixed" by following it.
//!
//! Liveness is an `flock` on `<run-dir>/lock`, held by `up` for its whole life and released by
//! the kernel however the process ends (SIGKILL and OOM included). Unlike a pid in a file it
//! cannot be fooled by a reused pid, and unlike a check-then-write it has no window: a second
//! `up` started while the first is still connecting finds the lock taken and stops before it
//! touches anything, the first one's journal included.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the run dir cannot be used, or the lock not taken.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// The run dir is a symbolic link.
    #[error("{path} is a symbolic link; the state directory must be a real directory (remove the link)")]
    Symlink {
        /// The run dir.
        path: PathBuf,
    },
    /// The run dir exists and is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The run dir.
        path: PathBuf,
    },
    /// The run dir belongs to another user.
    #[error("{path} belongs to uid {owner}, not to us (uid {us}); refusing to keep root state there")]
    Owner {
        /// The run dir.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// Our effective uid.
        us: u32,
    },
    /// Group or others may write to the run dir.
    #[error("{path} can be written by others (mode {mode:o}); refusing to keep root state there")]
    Writable {
        /// The run dir.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another `up` holds the lock.
    #[error("smolmix-vpn is already running (state in {path}); stop it with `smolmix-vpn down` first")]
    Running {
        /// The run dir.
        path: PathBuf,
    },
    /// A system call on the run dir or its lock file failed.
    #[error("cannot use the state directory {path}: {source}")]
    Io {
        /// The run dir.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Makes sure `run_dir` exists and is ours alone (see the module doc).
pub fn prepare(run_dir: &Path) -> Result<(), RunDirError> {
    let io = |source| RunDirError::Io { path: run_dir.to_path_buf(), source };
    let created = match DirBuilder::new().mode(0o700).create(run_dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A missing parent (say /run/user/…/x/y): create the parents as root-only too.
            DirBuilder::new().mode(0o700).recursive(true).create(run_dir).map_err(io)?;
            true
        }
        Err(e) => return Err(io(e)),
    };
    if created {
        // The state dir is to hold the only copy of the user's resolv.conf (files.rs): its own
        // name must be on disk before that is. (Parents a recursive create made are not synced.)
        let parent = run_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
    }
    check(run_dir)?;
    let mode = fs::symlink_metadata(run_dir).map_err(io)?.mode() & 0o7777;
    if mode != 0o700 {
        fs::set_permissions(run_dir, Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Checks without changing anything: a real directory, owned by us, writable only by us.
pub fn check(run_dir: &Path) -> Result<(), RunDirError> {
    let path = run_dir.to_path_buf();
    let meta = fs::symlink_metadata(run_dir).map_err(|source| RunDirError::Io { path: path.clone(), source })?;
    if meta.file_type().is_symlink() {
        return Err(RunDirError::Symlink { path });
    }
    if !meta.is_dir() {
        return Err(RunDirError::NotADirectory { path });
    }
    let us = nix::unistd::geteuid().as_raw();
    if meta.uid() != us {
        return Err(RunDirError::Owner { path, owner: meta.uid(), us });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(RunDirError::Writable { path, mode });
    }
    Ok(())
}

/// Held by `up` for its whole life; dropping it (or dying) releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
}

fn lock_path(run_dir: &Path) -> PathBuf {
    run_dir.join("lock")
}

fn open_lock(run_dir: &Path) -> io::Result<File> {
    // O_NOFOLLOW: a planted symlink named `lock` fails instead of being opened.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(lock_path(run_dir))
}

impl InstanceLock {
    /// Takes the lock in a [`prepare`]d run dir, or says that another `up` holds it.
    pub fn acquire(run_dir: &Path) -> Result<InstanceLock, RunDirError> {
        let path = run_dir.to_path_buf();
        let mut file = open_lock(run_dir).map_err(|source| RunDirError::Io { path: path.clone(), source })?;
        // `held` (status, down, exec) takes a shared lock for microseconds; that must not make
        // an `up` think another one runs. 10 tries over ~100 ms outlast any probe.
        let mut tries = 10;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut lock) => {
                    // Our pid, for `down` to signal while we are still connecting (no status yet).
                    let write = |f: &mut File| -> io::Result<()> {
                        f.set_len(0)?;
                        f.write_all(format!("{}\n", std::process::id()).as_bytes())
                    };
                    write(&mut lock).map_err(|source| RunDirError::Io { path, source })?;
                    return Ok(InstanceLock { _lock: lock });
                }
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if tries > 1 => {
                    tries -= 1;
                    file = f;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(RunDirError::Running { path }),
                Err((_, e)) => return Err(RunDirError::Io { path, source: e.into() }),
            }
        }
    }
}

/// The pid of the `up` holding the lock, if one does.
pub fn holder(run_dir: &Path) -> Option<u32> {
    if !held(run_dir) {
        return None;
    }
    fs::read_to_string(lock_path(run_dir)).ok()?.trim().parse().ok()
}

/// Is an `up` alive with its state in `run_dir`? (Its lock is held.) Never blocks.
pub fn held(run_dir: &Path) -> bool {
    let Ok(file) = File::open(lock_path(run_dir)) else { return false };
    // A shared lock conflicts only with up's exclusive one; taken and dropped at once.
    matches!(Flock::lock(file, FlockArg::LockSharedNonblock), Err((_, nix::errno::Errno::EWOULDBLOCK)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("smolmix-lock-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let _ = fs::remove_file(&d);
        d
    }

    #[test]
    fn a_second_instance_is_refused_until_the_first_lets_go() {
        let dir = tmp("second");
        prepare(&dir).unwrap();
        assert!(!held(&dir));
        let first = InstanceLock::acquire(&dir).unwrap();
        assert!(held(&dir));
        assert_eq!(holder(&dir), Some(std::process::id()));
        assert!(matches!(InstanceLock::acquire(&dir), Err(RunDirError::Running { .. })));
        drop(first);
        assert!(!held(&dir));
        assert_eq!(holder(&dir), None, "a pid left in the file is not proof of life");
        let _again = InstanceLock::acquire(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_run_dir_is_made_private_and_a_symlink_or_shared_dir_is_refused() {
        let dir = tmp("private");
        prepare(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700, "only-ours-writable is tightened");
        fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(prepare(&dir), Err(RunDirError::Writable { .. })));
        fs::set_permissions(&dir, Permissions::from_mode(0o700)).unwrap();

        let link = tmp("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(prepare(&link), Err(RunDirError::Symlink { .. })));
        // A planted `lock` symlink is not followed either.
        let target = dir.join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.join("lock")).unwrap();
        assert!(matches!(InstanceLock::acquire(&dir), Err(RunDirError::Io { .. })));
        assert!(!target.exists());
        fs::remove_file(&link).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
