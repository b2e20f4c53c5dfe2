//! The journal: every host change is written down, with how to undo it, *before* it is made.
//!
//! One JSON object per line in `<run-dir>/journal`, appended and `fsync`ed before the change
//! runs. A clean stop replays it backwards and deletes it; after a crash (SIGKILL, OOM, power
//! loss of a container) `smolmix-vpn down` — or the next `up` — replays whatever is left. A
//! change that failed half-way still has its undo recorded; undoing something that is not there
//! is harmless (the "not found" answers of iproute2 are ignored), which is what makes `down`
//! idempotent.
//!
//! The same discipline as a database's write-ahead log: intent first, action second.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bound on what we read back: a journal is a few dozen lines; a huge file is not ours.
const MAX_JOURNAL_BYTES: u64 = 1 << 20;

/// How to undo one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "snake_case")]
pub enum Undo {
    /// Run `ip <args>` (delete a link, address, route or rule).
    Ip {
        /// The arguments after `ip`.
        args: Vec<String>,
    },
    /// Run `nft <args>` (delete a table we created).
    Nft {
        /// The arguments after `nft`.
        args: Vec<String>,
    },
    /// Put `backup` back at `path` (byte for byte), then remove the backup.
    RestoreFile {
        /// The file we replaced.
        path: PathBuf,
        /// Our copy of its original.
        backup: PathBuf,
    },
    /// Remove a file we created where none existed.
    RemoveFile {
        /// The file we created.
        path: PathBuf,
    },
    /// Delete a network namespace we created (`ip netns del`).
    DeleteNetns {
        /// The namespace's name.
        name: String,
    },
    /// Run `resolvectl <args>` (`revert <link>`: forget the DNS settings of our TUN).
    Resolvectl {
        /// The arguments after `resolvectl`.
        args: Vec<String>,
    },
    /// Write `value` back to the sysctl `key` (dotted, as `sysctl(8)` names it).
    Sysctl {
        /// The sysctl's name, e.g. `net.ipv4.conf.all.src_valid_mark`.
        key: String,
        /// Its value before our change.
        value: String,
    },
}

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Creating the run dir, or opening, appending to or syncing the journal failed.
    #[error("cannot write the journal {path}: {source}")]
    Write {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading the journal back failed.
    #[error("cannot read the journal {path}: {source}")]
    Read {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// An open journal that records undo steps.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Records written through this handle.
    records: u32,
}

/// Fault injection for tests: `SMOLMIX_FAULT_ABORT_AT=N` aborts the process (SIGABRT, as a
/// panic with `panic=abort` or an OOM kill would end it) right after the Nth record.
fn fault_abort_at() -> Option<u32> {
    static AT: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *AT.get_or_init(|| std::env::var("SMOLMIX_FAULT_ABORT_AT").ok()?.parse().ok())
}

impl Journal {
    /// The journal's path inside `run_dir`.
    pub fn path_in(run_dir: &Path) -> PathBuf {
        run_dir.join("journal")
    }

    /// Opens (creating) the journal in `run_dir` for appending.
    pub fn open(run_dir: &Path) -> Result<Journal, JournalError> {
        let path = Self::path_in(run_dir);
        let wrap = |source| JournalError::Write { path: path.clone(), source };
        fs::create_dir_all(run_dir).map_err(wrap)?;
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(wrap)?;
        Ok(Journal { path, file, records: 0 })
    }

    /// Appends `undo` and forces it to disk before returning, so the change that follows can
    /// always be undone.
    pub fn record(&mut self, undo: &Undo) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(undo).expect("Undo serialises");
        line.push(b'\n');
        let wrap = |source| JournalError::Write { path: self.path.clone(), source };
        self.file.write_all(&line).map_err(wrap)?;
        self.file.sync_data().map_err(wrap)?;
        self.records += 1;
        if fault_abort_at() == Some(self.records) {
            // A crash with this record on disk and its change not yet made (and every earlier
            // change made): the reliability suite walks N over every step of `up`.
            std::process::abort();
        }
        Ok(())
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the journal hold exactly `undos` (oldest first), atomically ([`replace`]), and
    /// keeps appending to the new file: for changes undone while up runs (a throw route of a
    /// bridge that went away), so a long run's journal does not grow with every change.
    pub fn rewrite(&mut self, run_dir: &Path, undos: &[Undo]) -> Result<(), JournalError> {
        let wrap = |source| JournalError::Write { path: self.path.clone(), source };
        replace(run_dir, undos).map_err(wrap)?;
        // The old handle points at the replaced (or removed) inode.
        self.file = OpenOptions::new().create(true).append(true).open(&self.path).map_err(wrap)?;
        Ok(())
    }
}

/// Reads the undo steps of a journal, oldest first. A missing journal is an empty one. A torn
/// last line (crash mid-write) or a line we do not understand is skipped with a warning: the
/// rest must still be undone.
pub fn load(run_dir: &Path) -> Result<Vec<Undo>, JournalError> {
    let path = Journal::path_in(run_dir);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(JournalError::Read { path, source }),
    };
    let mut undos = Vec::new();
    for line in BufReader::new(file.take(MAX_JOURNAL_BYTES)).lines() {
        let line = line.map_err(|source| JournalError::Read { path: path.clone(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Undo>(&line) {
            Ok(u) => undos.push(u),
            Err(e) => tracing::warn!(%e, line, "skipping unreadable journal line"),
        }
    }
    Ok(undos)
}

/// Leaves only `undos` (oldest first) in the journal, atomically (temp file, fsync, rename);
/// with none left the journal is removed.
pub fn replace(run_dir: &Path, undos: &[Undo]) -> io::Result<()> {
    if undos.is_empty() {
        return remove(run_dir);
    }
    let tmp = run_dir.join("journal.tmp");
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    for undo in undos {
        let mut line = serde_json::to_vec(undo).map_err(io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
    }
    file.sync_all()?;
    fs::rename(&tmp, Journal::path_in(run_dir))?;
    // The rename itself must reach the disk too, or a crash could bring the old journal back.
    File::open(run_dir)?.sync_all()
}

/// Removes the journal once everything in it has been undone.
pub fn remove(run_dir: &Path) -> io::Result<()> {
    match fs::remove_file(Journal::path_in(run_dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("smolmix-journal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn records_in_order_and_survives_a_torn_tail() {
        let dir = tmpdir("torn");
        let mut j = Journal::open(&dir).unwrap();
        let a = Undo::Ip { args: vec!["link".into(), "del".into(), "smx0".into()] };
        let b = Undo::DeleteNetns { name: "app".into() };
        j.record(&a).unwrap();
        j.record(&b).unwrap();
        drop(j);
        // A crash in the middle of a write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(Journal::path_in(&dir)).unwrap();
        f.write_all(br#"{"undo":"ip","args":["ro"#).unwrap();
        assert_eq!(load(&dir).unwrap(), vec![a, b.clone()]);
        replace(&dir, std::slice::from_ref(&b)).unwrap();
        assert_eq!(load(&dir).unwrap(), vec![b], "a failed undo is kept for the next down");
        replace(&dir, &[]).unwrap();
        assert!(load(&dir).unwrap().is_empty());
        remove(&dir).unwrap(); // idempotent
        let _ = fs::remove_dir_all(&dir);
    }
}
