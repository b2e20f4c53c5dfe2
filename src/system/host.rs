//! [`Host`]: the only way the client changes the host, each change journalled first.
//!
//! Changes are made with iproute2 and nft, as wg-quick does: their behaviour is documented and
//! stable, their error text is what administrators already know, and a user can replay any
//! step by hand from the journal. The few dozen commands of one `up` cost milliseconds.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::files;
use super::firewall::{self, HostNets, KillSwitch};
use super::journal::{self, Journal, JournalError, Undo};
use super::mark::{self, FWMARK, SRC_VALID_MARK};
use super::routes::{Cidr, RoutePlan, TableEntry, BACKSTOP_METRIC, RULE_PREF_BYPASS, RULE_PREF_TABLE, TABLE};
use super::shape::own_shape;
pub use super::shape::JournalContext;
use super::tun::{LOCAL_V4, LOCAL_V6};

/// Why a change to the host failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The journal could not be opened, written or read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A command ran and exited with an error.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A command could not be started.
    #[error("cannot run `{cmd}`: {source} (is iproute2 installed?)")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The error from starting it.
        source: std::io::Error,
    },
}

/// Runs `program args`, returning its stdout, or an error carrying the command line and stderr.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String, HostError> {
    let cmd = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%cmd, "host");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HostError::Spawn { cmd: cmd.clone(), source })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(HostError::Command { cmd, stderr })
    }
}

/// Host changes made by one `up`, journalled in `run_dir`.
#[derive(Debug)]
pub struct Host {
    run_dir: PathBuf,
    journal: Journal,
    /// What the journal holds, oldest first: so that a change undone while up runs (a throw
    /// route of a bridge that went away) can leave the journal as well ([`Journal::rewrite`]).
    recorded: Vec<Undo>,
    /// The throw routes of the host's own networks in our table now ([`Host::sync_throws`]).
    throws: Vec<Cidr>,
    /// The resolver file this run replaced, for [`Host::rollback`]'s check ([`JournalContext`]).
    resolver: Option<JournalContext>,
}

impl Host {
    /// Starts recording in `run_dir`. Call [`recover`] (or use [`Host::take_over`]) first so
    /// that we start clean.
    pub fn open(run_dir: &Path) -> Result<Host, HostError> {
        let journal = Journal::open(run_dir)?;
        Ok(Host { run_dir: run_dir.to_path_buf(), journal, recorded: Vec::new(), throws: Vec::new(), resolver: None })
    }

    /// Takes over what an earlier `up` left behind (a crash, a restart by systemd, the
    /// boot-time lockdown), without opening the host for an instant: `kill_switch`, when given,
    /// replaces the one in place in a single nft transaction ([`KillSwitch::script`]), and only
    /// then is the rest of the old journal undone (its file lines checked against `files`).
    /// Without one (split or per-app mode, which the user chose) the old journal is simply
    /// replayed. Returns the new host and the undo failures worth a warning.
    pub fn take_over(
        run_dir: &Path,
        kill_switch: Option<&KillSwitch>,
        files: &JournalContext,
    ) -> Result<(Host, Vec<String>), HostError> {
        let old = journal::load(run_dir)?;
        let Some(ks) = kill_switch else {
            let failures = if old.is_empty() { Vec::new() } else { recover(run_dir, files) };
            return Ok((Host::open(run_dir)?, failures));
        };
        let mut host = Host::open(run_dir)?;
        let ks_undo = Undo::Nft { args: firewall::undo_args() };
        if !old.contains(&ks_undo) {
            host.journal.record(&ks_undo)?;
        }
        host.nft_script(&ks.script())?;
        let (failures, kept) = replay(&old, Some(files), |u| *u == ks_undo);
        // What is left: our kill switch, and what could not be undone yet (for `down`).
        let mut now = vec![ks_undo];
        now.extend(kept);
        host.journal.rewrite(run_dir, &now)?;
        host.recorded = now;
        Ok((host, failures))
    }

    /// Says which resolver file and backup this run's journal names (resolv_conf.rs, before
    /// it records them), so that [`Host::rollback`] replays exactly those.
    pub fn expect_resolver(&mut self, files: JournalContext) {
        self.resolver = Some(files);
    }

    /// The directory holding the journal.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn record_undo(&mut self, undo: Undo) -> Result<(), HostError> {
        self.journal.record(&undo)?;
        self.recorded.push(undo);
        Ok(())
    }

    /// Records `undo`, then runs `ip args`.
    pub fn ip(&mut self, args: &[String], undo: &[String]) -> Result<(), HostError> {
        self.record_undo(Undo::Ip { args: undo.to_vec() })?;
        run("ip", args).map(drop)
    }

    /// Records an arbitrary undo step before a change made elsewhere (e.g. by tun-rs).
    pub fn record(&mut self, undo: Undo) -> Result<(), HostError> {
        self.record_undo(undo)
    }

    /// Drops the last record of `undo`: its change was not made after all (a device that could
    /// not be created), and undoing it could hit something that is not ours.
    pub fn forget(&mut self, undo: &Undo) -> Result<(), HostError> {
        if let Some(i) = self.recorded.iter().rposition(|u| u == undo) {
            self.recorded.remove(i);
            self.journal.rewrite(&self.run_dir, &self.recorded)?;
        }
        Ok(())
    }

    /// Installs `plan` for the interface `dev`: our table, its rules and the transport's mark.
    pub fn install_routes(&mut self, dev: &str, plan: &RoutePlan) -> Result<(), HostError> {
        let table = TABLE.to_string();
        // Backstops first: an `unreachable` twin of every tunnelled prefix at a worse metric.
        // While the TUN exists its route wins; when the TUN vanishes with a crashed process
        // (SIGKILL, OOM, panic), the kernel deletes its routes and the backstop refuses the
        // prefix, so traffic fails closed instead of falling through to `main` until `down`.
        let metric = BACKSTOP_METRIC.to_string();
        for entry in &plan.entries {
            if let TableEntry::Tunnel(c) = entry {
                let spec = strings(&[
                    c.family_flag(),
                    "route",
                    "add",
                    "unreachable",
                    &c.to_string(),
                    "metric",
                    &metric,
                    "table",
                    &table,
                ]);
                let mut undo = spec.clone();
                undo[2] = "del".into();
                self.ip(&spec, &undo)?;
            }
        }
        for entry in &plan.entries {
            let (kind, cidr, via_dev): (&str, &Cidr, bool) = match entry {
                TableEntry::Tunnel(c) => ("unicast", c, true),
                TableEntry::Throw(c) => ("throw", c, false),
                TableEntry::Unreachable(c) => ("unreachable", c, false),
            };
            let mut spec = strings(&[cidr.family_flag(), "route", "add", kind, &cidr.to_string()]);
            if via_dev {
                spec.extend(strings(&["dev", dev]));
            }
            spec.extend(strings(&["table", &table]));
            let mut undo = spec.clone();
            undo[2] = "del".into();
            self.ip(&spec, &undo)?;
        }
        self.install_transport_mark(dev, plan.has_v4(), plan.has_v6())?;
        let pref = RULE_PREF_TABLE.to_string();
        for (flag, wanted) in [("-4", plan.has_v4()), ("-6", plan.has_v6())] {
            if wanted {
                let rule = strings(&[flag, "rule", "add", "lookup", &table, "pref", &pref]);
                self.ip(&rule, &del_rule(&rule))?;
            }
        }
        Ok(())
    }

    /// The transport's packets (marked [`FWMARK`]) keep the physical link: the mark table
    /// (with the guard of the TUN's addresses), the reverse-path sysctl, then
    /// `fwmark … lookup main` ahead of our table ([`mark`]).
    fn install_transport_mark(&mut self, dev: &str, v4: bool, v6: bool) -> Result<(), HostError> {
        let _ = run("nft", &mark::undo_args());
        self.record_undo(Undo::Nft { args: mark::undo_args() })?;
        self.nft_script(&mark::script(dev, LOCAL_V4, LOCAL_V6))?;
        let path = mark::sysctl_path(SRC_VALID_MARK);
        let spawn = |source| HostError::Spawn { cmd: format!("sysctl {SRC_VALID_MARK}"), source };
        let old = fs::read_to_string(&path).map_err(spawn)?.trim().to_string();
        if old != "1" {
            self.record_undo(Undo::Sysctl { key: SRC_VALID_MARK.into(), value: old })?;
            fs::write(&path, "1").map_err(spawn)?;
        }
        let (mark, pref) = (format!("{FWMARK:#x}"), RULE_PREF_BYPASS.to_string());
        for (flag, wanted) in [("-4", v4), ("-6", v6)] {
            if wanted {
                let rule = strings(&[flag, "rule", "add", "fwmark", &mark, "lookup", "main", "pref", &pref]);
                self.ip(&rule, &del_rule(&rule))?;
            }
        }
        Ok(())
    }

    /// Makes our table's `throw` routes for the host's own networks (lan.rs: its container
    /// bridges always, the LAN with `--allow-lan`) exactly `want`: new ones are added
    /// (journalled first), gone ones deleted and their journal lines dropped. Call after
    /// [`Host::install_routes`], and again whenever the host's networks change.
    pub fn sync_throws(&mut self, want: &[Cidr]) -> Result<(), HostError> {
        let table = TABLE.to_string();
        let spec =
            |c: &Cidr, verb: &str| strings(&[c.family_flag(), "route", verb, "throw", &c.to_string(), "table", &table]);
        for c in want.iter().filter(|c| !self.throws.contains(c)).copied().collect::<Vec<_>>() {
            self.ip(&spec(&c, "add"), &spec(&c, "del"))?;
            self.throws.push(c);
        }
        let gone: Vec<Cidr> = self.throws.iter().filter(|c| !want.contains(c)).copied().collect();
        if gone.is_empty() {
            return Ok(());
        }
        for c in &gone {
            // Already gone (the kernel removed it with its device) is as good as deleted.
            if let Err(e) = run("ip", &spec(c, "del")) {
                tracing::debug!(%e, "old throw route");
            }
            let undo = Undo::Ip { args: spec(c, "del") };
            self.recorded.retain(|u| *u != undo);
        }
        self.throws.retain(|c| want.contains(c));
        self.journal.rewrite(&self.run_dir, &self.recorded)?;
        Ok(())
    }

    /// Installs the kill switch ([`firewall`]): journalled first, then created (or an old one
    /// replaced) in one nft transaction.
    pub fn install_kill_switch(&mut self, ks: &KillSwitch) -> Result<(), HostError> {
        self.record_undo(Undo::Nft { args: firewall::undo_args() })?;
        self.nft_script(&ks.script())
    }

    /// Points the kill switch's sets at the host's networks as they are now.
    pub fn update_kill_switch(&mut self, nets: &HostNets) -> Result<(), HostError> {
        self.nft_script(&firewall::nets_script(nets))
    }

    /// Runs `nft -f` on `script`, staged in the run dir (root-only, see lock.rs).
    fn nft_script(&self, script: &str) -> Result<(), HostError> {
        let path = self.run_dir.join("nft.script");
        fs::write(&path, script)
            .map_err(|source| HostError::Spawn { cmd: format!("write {}", path.display()), source })?;
        let out = run("nft", &[OsStr::new("-f"), path.as_os_str()]);
        let _ = fs::remove_file(&path);
        out.map(drop)
    }

    /// Undoes everything recorded, newest first, and removes the journal. A line naming a file
    /// other than the resolver file of [`Host::expect_resolver`] is refused, as by [`recover`];
    /// one left by an earlier run with other paths was already replayed by `up`'s [`recover`].
    pub fn rollback(self) -> Vec<String> {
        drop(self.journal);
        recover_with(&self.run_dir, self.resolver.as_ref())
    }
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn del_rule(add: &[String]) -> Vec<String> {
    let mut v = add.to_vec();
    v[2] = "del".into();
    v
}

/// Replays the journal in `run_dir` backwards, then removes it. Returns the failures that
/// matter (an undo of something already gone is not one). Safe to call any number of times.
/// `files` names the resolver file and backup of the configuration in use; a line naming any
/// other file is refused (and dropped), so `down` must be given the `up`'s state dir.
pub fn recover(run_dir: &Path, files: &JournalContext) -> Vec<String> {
    recover_with(run_dir, Some(files))
}

/// [`recover`], where `None` means that no file line is ours.
fn recover_with(run_dir: &Path, files: Option<&JournalContext>) -> Vec<String> {
    let undos = match journal::load(run_dir) {
        Ok(u) => u,
        Err(e) => return vec![e.to_string()],
    };
    let (mut failures, kept) = replay(&undos, files, |_| false);
    // A failed undo stays for the next `down` (a busy file, a resolver that was not up yet):
    // forgetting it would leave the host changed with nothing left that knows how to fix it.
    if let Err(e) = journal::replace(run_dir, &kept) {
        failures.push(format!("cannot rewrite the journal: {e}"));
    }
    failures
}

/// Undoes `undos` newest first, but for those `keep` selects, each checked by [`own_shape`]
/// against `files`. Returns the failures that matter and the undos still to do (oldest
/// first): the failed ones.
fn replay(undos: &[Undo], files: Option<&JournalContext>, keep: impl Fn(&Undo) -> bool) -> (Vec<String>, Vec<Undo>) {
    let mut failures = Vec::new();
    let mut kept = Vec::new();
    for undo in undos.iter().rev().filter(|u| !keep(u)) {
        if let Err(why) = own_shape(undo, files) {
            // Root replays this file: a line we would never have written is not run, and not
            // kept either (the next `down` would refuse it again).
            failures.push(format!("refusing a journal entry smolmix-vpn does not write ({why}): {undo:?}"));
            continue;
        }
        if let Err(e) = apply(undo) {
            if !is_already_gone(&e) {
                failures.push(e);
                kept.push(undo.clone());
            } else {
                tracing::debug!(err = %e, "already undone");
            }
        }
    }
    kept.reverse();
    (failures, kept)
}

fn apply(undo: &Undo) -> Result<(), String> {
    match undo {
        Undo::Ip { args } => run("ip", args).map(drop).map_err(|e| e.to_string()),
        Undo::Nft { args } => run("nft", args).map(drop).map_err(|e| e.to_string()),
        Undo::DeleteNetns { name } => {
            // Programs started there by `exec` keep running in a namespace with only `lo` left
            // (the TUN died with our fd): cut off, not leaking. Say so rather than kill them.
            if let Ok(pids) = run("ip", &["netns", "pids", name.as_str()]) {
                let pids: Vec<&str> = pids.split_whitespace().collect();
                if !pids.is_empty() {
                    tracing::warn!(
                        "programs still running in namespace {name} (pids {}) have no network now",
                        pids.join(" ")
                    );
                }
            }
            run("ip", &["netns", "del", name.as_str()]).map(drop).map_err(|e| e.to_string())
        }
        // Exact, across filesystems and onto bind mounts, and only over our own file
        // (files.rs; the contract is resolv_conf.rs's).
        Undo::RestoreFile { path, backup } => files::restore_file(path, backup).map(drop),
        Undo::Resolvectl { args } => run("resolvectl", args).map(drop).map_err(|e| e.to_string()),
        Undo::RemoveFile { path } => fs::remove_file(path).map_err(|e| format!("remove {}: {e}", path.display())),
        Undo::Sysctl { key, value } => {
            fs::write(mark::sysctl_path(key), value).map_err(|e| format!("sysctl {key}={value}: {e}"))
        }
    }
}

/// iproute2/nft/fs answers meaning "nothing to undo".
fn is_already_gone(err: &str) -> bool {
    [
        "Cannot find device",
        "No such file or directory",
        "No such process",
        "No such device", // resolvectl revert on a TUN that is already gone
        "does not exist",
        "Cannot assign requested address",
        "no such backup",
        "RTNETLINK answers: No such",
    ]
    .iter()
    .any(|needle| err.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_of_a_rule_mirrors_its_add() {
        let add = strings(&["-4", "rule", "add", "lookup", "29549", "pref", "5209"]);
        assert_eq!(del_rule(&add), strings(&["-4", "rule", "del", "lookup", "29549", "pref", "5209"]));
    }

    #[test]
    fn recognises_already_gone() {
        assert!(is_already_gone("`ip link del smx0` failed: Cannot find device \"smx0\""));
        assert!(is_already_gone("`ip -4 rule del ...` failed: RTNETLINK answers: No such file or directory"));
        assert!(!is_already_gone("`ip route add` failed: RTNETLINK answers: Operation not permitted"));
    }
}
