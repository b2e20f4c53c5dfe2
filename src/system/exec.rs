//! `smolmix-vpn exec [--netns NAME] [--user USER] -- CMD ARGS`: run one program in the per-app
//! namespace, as the user, with DNS that can only go through the tunnel.
//!
//! The child, between fork and exec (steps in [`Step`] order):
//!
//! 1. a new mount namespace, `/` made recursively *slave*: the host's later mounts (a USB
//!    disk) still appear inside, our mounts never propagate out;
//! 2. `setns` into network namespace NAME (only `lo` and the TUN, see [`super::netns`]), and a
//!    fresh `/sys` so `/sys/class/net` shows NAME's links, as `ip netns exec` does;
//! 3. an empty tmpfs over each resolver socket directory that exists ([`MASKED_DIRS`]): glibc's
//!    nscd client and nss-resolve connect to Unix sockets there, which are answered by daemons in
//!    the host namespace and would resolve outside the tunnel (docs/peers.md §12.2,
//!    firejail#7209);
//! 4. our resolv.conf (the tunnel's DNS servers only) bind-mounted, read-only, over whatever
//!    `/etc/resolv.conf` finally points to (a symlink into a masked directory gets a file created
//!    in our tmpfs first). The file is written on a tmpfs staged for an instant on [`STAGE_DIRS`]
//!    and unmounted again: a bind source must be a named file in the child's own mount namespace
//!    (a memfd or an fd opened before `unshare` gives EINVAL, an O_TMPFILE file ENOENT: measured);
//!    The same for `/etc/nsswitch.conf` when it exists: the host's, with its `hosts:` line
//!    replaced by `files dns`, so no NSS module (resolve, mdns, myhostname's peers) asks a
//!    daemon outside the namespace; passwd and group stay as the host has them;
//! 5. a session of its own, on a pty of its own when any of the caller's stdin, stdout and
//!    stderr is a terminal ([`super::pty`]: no TIOCSTI into the caller's shell, no reading it);
//! 6. the user's identity: ambient capabilities cleared, the bounding set emptied, supplementary
//!    groups from getgrouplist(3), gid, uid, every capability set zeroed, `PR_SET_NO_NEW_PRIVS`,
//!    then `PR_SET_PDEATHSIG` so the program does not outlive an `exec` that is killed.
//!
//! The host is not changed: every mount, the resolv.conf's tmpfs included, lives in the child's
//! private mount namespace and goes away with its last process, so nothing needs journalling.
//!
//! Who runs CMD, and why never root by accident nor anyone but the sudo caller: exec_user.rs.
//!
//! Limits (as for every netns tool, docs/peers.md §12.3): a program can still ask a process outside
//! to connect for it over IPC, e.g. D-Bus to systemd-resolved's `org.freedesktop.resolve1`.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::{getgrouplist, pipe2, setgroups, setresgid, setresuid, Gid, Uid};

pub use super::exec_user::{choose_user, delegated_caller, only_the_caller, target_user, UserChoice};
use super::netns::{self, NetnsError};
use super::pty::Terminals;

/// Resolver socket directories hidden from CMD: systemd-resolved (varlink + stub files), nscd
/// (`/var/run` is usually `/run`; duplicates are merged), avahi (nss-mdns sends `.local`
/// queries as multicast on the host's LAN).
pub const MASKED_DIRS: [&str; 4] = ["/run/systemd/resolve", "/run/nscd", "/var/run/nscd", "/run/avahi-daemon"];
/// Directories, one of which briefly hosts the tmpfs holding our resolv.conf in the child's own
/// mount namespace (covered for a few system calls, before the program runs).
const STAGE_DIRS: [&str; 3] = ["/tmp", "/mnt", "/var/tmp"];
/// glibc reads at most 3 `nameserver` lines (MAXNS in resolv.h); more would be ignored.
const MAX_NAMESERVERS: usize = 3;
/// Bound on symlink hops when following /etc/resolv.conf (the kernel's is 40).
const MAX_LINKS: usize = 40;

/// Why `exec` could not start the program.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// We are root, not under sudo or pkexec, and `--user` was not given.
    #[error("refusing to run the command as root without being asked: you are root and not under sudo; pass --user NAME, or --user root to confirm")]
    RootRefused,
    /// A sudo or pkexec id variable is not a number.
    #[error("{var}={value:?} is not a numeric id")]
    BadEnv {
        /// The variable: `SUDO_UID`, `SUDO_GID` or `PKEXEC_UID`.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The user database has no such name or uid.
    #[error("no such user: {0}")]
    UnknownUser(String),
    /// Run through sudo (or pkexec) by one user, `--user` named another.
    #[error("exec run by uid {caller} through sudo (or pkexec) runs programs only as that user, and --user {asked} is uid {uid}; leave --user out")]
    NotTheCaller {
        /// The sudo (or pkexec) caller's uid.
        caller: u32,
        /// `--user` as given.
        asked: String,
        /// The uid it names.
        uid: u32,
    },
    /// `up` configured no DNS servers for the tunnel.
    #[error("no DNS servers for the tunnel: pass --dns to `up`")]
    NoDns,
    /// `/etc/resolv.conf` leads to a path where the tunnel's resolv.conf cannot be placed.
    #[error("/etc/resolv.conf leads to {0}, which does not exist; cannot place the tunnel's resolv.conf there")]
    ResolvConf(PathBuf),
    /// None of the staging directories exists off the path to resolv.conf.
    #[error("no directory to stage resolv.conf on (tried {STAGE_DIRS:?})")]
    NoStageDir,
    /// Opening the network namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A step of the child's sandbox setup failed.
    #[error("setting up the command's sandbox failed at `{step}`: {source}")]
    Setup {
        /// The step that failed.
        step: &'static str,
        /// Its error.
        source: std::io::Error,
    },
    /// The sandbox was ready but the program could not be executed.
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        /// The program as given (or the login shell).
        program: OsString,
        /// The error from starting it.
        source: std::io::Error,
    },
    /// Another call in the parent failed (the user database, the pipe, the pty, waiting).
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Its error.
        source: std::io::Error,
    },
}

/// What the CLI passes: `exec [--netns NAME] [--user USER] -- PROGRAM ARGS`.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The network namespace to run in.
    pub netns: String,
    /// `--user`: a name or uid; `None` picks one as [`choose_user`] does.
    pub user: Option<String>,
    /// The tunnel's DNS servers (`up --dns`), reached through the TUN.
    pub dns: Vec<IpAddr>,
    /// `None`: the user's login shell (an interactive shell inside the tunnel).
    pub program: Option<OsString>,
    /// The program's arguments.
    pub args: Vec<OsString>,
}

/// The resolv.conf CMD sees: only the tunnel's servers. No `search` line: the host's search
/// domains name its LAN and would be sent to the exit's resolver with every short name.
pub fn resolv_conf(dns: &[IpAddr]) -> Result<String, ExecError> {
    if dns.is_empty() {
        return Err(ExecError::NoDns);
    }
    let servers: String = dns.iter().take(MAX_NAMESERVERS).map(|ip| format!("nameserver {ip}\n")).collect();
    Ok(format!("# generated by smolmix-vpn exec: DNS through the tunnel only\n{servers}"))
}

/// Largest nsswitch.conf we copy (a real one is under 2 KiB).
const MAX_NSSWITCH: u64 = 32 << 10;

/// The nsswitch.conf CMD sees: `host`'s, with every `hosts:` line made `hosts: files dns`
/// (one is added if it has none). Other databases are untouched: users from LDAP or
/// systemd-userdb must still resolve.
pub fn nsswitch_conf(host: &str) -> String {
    let mut out = String::from("# smolmix-vpn exec: host names by files and DNS (through the tunnel) only\n");
    let mut seen = false;
    for line in host.lines() {
        if line.trim_start().starts_with("hosts:") {
            seen = true;
            out.push_str("hosts: files dns\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !seen {
        out.push_str("hosts: files dns\n");
    }
    out
}

/// The directories to mask: candidates that `canon` finds (canonical, directories), each once.
fn mask_dirs(candidates: &[&str], canon: impl Fn(&Path) -> Option<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = candidates.iter().filter_map(|c| canon(Path::new(c))).collect();
    out.dedup(); // duplicates are adjacent: the candidates list each path and its alias in turn
    out
}

/// Follows the symlink chain from `start` (relative targets are relative to the link's
/// directory), normalising `..` lexically; `read_link` answers `None` for a non-link.
fn follow_links(start: &Path, read_link: impl Fn(&Path) -> Option<PathBuf>) -> PathBuf {
    let mut p = start.to_path_buf();
    for _ in 0..MAX_LINKS {
        let Some(t) = read_link(&p) else { break };
        let joined = p.parent().unwrap_or(Path::new("/")).join(t);
        p = PathBuf::from("/");
        for c in joined.components() {
            match c {
                Component::ParentDir => _ = p.pop(),
                Component::Normal(n) => p.push(n),
                _ => {}
            }
        }
    }
    p
}

/// Where the resolv.conf bind mount goes, and whether we must first create that file in a
/// masked directory (its real one is hidden by our tmpfs). Only a direct child of a masked
/// directory can be created there: that is where systemd-resolved keeps both of its files.
fn resolv_target(target: &Path, exists: bool, masks: &[PathBuf]) -> Result<(PathBuf, bool), ExecError> {
    let in_mask = masks.iter().any(|m| target.parent() == Some(m.as_path()));
    if !in_mask && !exists {
        return Err(ExecError::ResolvConf(target.to_path_buf()));
    }
    Ok((target.to_path_buf(), in_mask))
}

/// The shell's convention: a program killed by signal N exits 128 + N.
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The child's setup steps, reported one byte each over a pipe so that a failure names its step
/// (std passes only the errno of a failed `pre_exec` back to the parent).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Step {
    MountNs = 1,
    NetNs,
    Mask,
    ResolvConf,
    Terminal,
    Capabilities,
    Identity,
    NoNewPrivs,
    /// Setup done: a failure now is execve's own (no such program, permission denied).
    Exec,
}
const STEP_NAMES: [&str; 9] = [
    "unshare mount namespace",
    "setns network namespace",
    "mask resolver sockets",
    "bind resolv.conf and nsswitch.conf",
    "new session and terminal",
    "drop capabilities",
    "become the user",
    "no_new_privs",
    "exec",
];

/// Everything the child needs, computed before fork: the child may not allocate (another
/// thread may hold the allocator's lock at fork time), so it only makes system calls.
struct ChildPlan {
    netns: OwnedFd,
    masks: Vec<CString>,
    resolv_text: Vec<u8>,
    /// Our nsswitch.conf, its staging path and the host file it covers, if the host has one.
    nsswitch: Option<(Vec<u8>, CString, CString)>,
    stage_dir: CString,
    stage_file: CString,
    resolv_dst: CString,
    create_dst: bool,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    cap_last: u32,
    parent: u32,
    report: OwnedFd,
    /// The pty's slave, to become the child's controlling terminal and terminal stdio.
    tty: Option<(std::os::fd::RawFd, Terminals)>,
}

/// Runs `spec.program` as described in the module doc and waits for it; returns the exit code
/// the CLI should exit with. Call it from a plain thread, not from inside an async runtime.
pub fn exec(spec: &ExecSpec) -> Result<i32, ExecError> {
    let (mut child, master) = spawn(spec)?;
    // The program runs in its own session, out of reach of the terminal's signals: what the
    // caller's terminal (Ctrl-C) or a service manager sends us is passed on, as sudo does.
    let _forwarding = super::pty::forward_signals(child.id());
    let status = match master {
        Some((master, terminals)) => super::pty::relay(master, terminals, &mut child),
        None => child.wait(),
    };
    Ok(exit_code(status.map_err(|source| ExecError::Io { what: "wait for the command", source })?))
}

/// Resolves the user, prepares the sandbox and starts the program.
/// Returns the child and, when it got a pty, the pty's master and the caller's terminals for
/// [`super::pty::relay`].
pub fn spawn(spec: &ExecSpec) -> Result<(Child, Option<(OwnedFd, Terminals)>), ExecError> {
    let (user, gid) = target_user(spec.user.as_deref())?;
    let name = CString::new(user.name.as_bytes()).map_err(|_| ExecError::UnknownUser(user.name.clone()))?;
    let groups = getgrouplist(&name, gid).map_err(|e| ExecError::Io { what: "getgrouplist", source: e.into() })?;

    let netns = OwnedFd::from(netns::open(&spec.netns)?);
    let resolv_text = resolv_conf(&spec.dns)?.into_bytes();
    // The file itself, wherever a symlink chain puts it; only a regular file is covered.
    let nsswitch = std::fs::canonicalize("/etc/nsswitch.conf").ok().filter(|p| p.is_file()).and_then(|dst| {
        let mut text = String::new();
        File::open(&dst).ok()?.take(MAX_NSSWITCH).read_to_string(&mut text).ok()?;
        Some((nsswitch_conf(&text).into_bytes(), dst))
    });
    let masks = mask_dirs(&MASKED_DIRS, |p| std::fs::canonicalize(p).ok().filter(|c| c.is_dir()));
    let followed = follow_links(Path::new("/etc/resolv.conf"), |p| std::fs::read_link(p).ok());
    let target = match followed.parent().and_then(|d| std::fs::canonicalize(d).ok()) {
        Some(dir) => dir.join(followed.file_name().unwrap_or_default()),
        None => followed,
    };
    let (dst, create_dst) = resolv_target(&target, target.is_file(), &masks)?;
    let stage = stage_dir(&STAGE_DIRS, &dst, |p| p.is_dir()).ok_or(ExecError::NoStageDir)?;
    let cap_last =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(63);
    let (report_rx, report_tx) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| ExecError::Io { what: "pipe", source: e.into() })?;
    let pty = super::pty::Pty::for_caller(user.uid).map_err(|source| ExecError::Io { what: "open a pty", source })?;
    let cpath = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| ExecError::ResolvConf(p.into()));
    let plan = ChildPlan {
        netns,
        masks: masks.iter().map(|m| cpath(m)).collect::<Result<_, _>>()?,
        resolv_text,
        nsswitch: match nsswitch {
            Some((text, dst)) => Some((text, cpath(&stage.join("nsswitch.conf"))?, cpath(&dst)?)),
            None => None,
        },
        stage_dir: cpath(&stage)?,
        stage_file: cpath(&stage.join("resolv.conf"))?,
        resolv_dst: cpath(&dst)?,
        create_dst,
        uid: user.uid,
        gid,
        groups,
        cap_last,
        parent: std::process::id(),
        report: report_tx,
        tty: pty.as_ref().map(|p| (p.slave.as_raw_fd(), p.terminals)),
    };
    tracing::debug!(user = %user.name, uid = %user.uid, %gid, ns = %spec.netns, masks = ?masks, resolv = %dst.display(), "exec");

    let program = spec.program.clone().unwrap_or_else(|| login_shell(&user.shell));
    let mut cmd = Command::new(&program);
    // A cleared environment plus what a program needs to find its terminal, language and
    // display: the caller's (root's, under sudo) secrets and loader variables stay behind.
    cmd.args(&spec.args).env_clear().envs(child_env(std::env::vars_os()));
    cmd.env("HOME", &user.dir).env("USER", &user.name).env("LOGNAME", &user.name).env("SHELL", &user.shell);
    // SAFETY: the closure only makes system calls on data prepared above (see ChildPlan).
    unsafe { cmd.pre_exec(move || child_setup(&plan)) };
    let spawned = cmd.spawn();
    drop(cmd); // closes our copy of the report pipe's write end (moved into the closure)
               // Only the child may hold the slave now: the master reports the end once it lets go.
    let master = pty.map(|p| (p.master, p.terminals));
    spawned.map(|child| (child, master)).map_err(|source| {
        let mut steps = Vec::new();
        let _ = File::from(report_rx).read_to_end(&mut steps);
        match steps.last() {
            Some(&s) if s != Step::Exec as u8 => ExecError::Setup {
                step: STEP_NAMES.get(usize::from(s).wrapping_sub(1)).copied().unwrap_or("?"),
                source,
            },
            _ => ExecError::Spawn { program, source },
        }
    })
}

/// Variables passed from the caller to the program; everything else is dropped.
const ENV_ALLOW: &[&str] = &[
    "TERM",
    "COLORTERM",
    "LANG",
    "LANGUAGE",
    "TZ",
    "PATH",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "XDG_RUNTIME_DIR",
    "XDG_SESSION_TYPE",
    "XDG_CURRENT_DESKTOP",
    "DBUS_SESSION_BUS_ADDRESS",
];
/// `PATH` when the caller has none (a minimal `env -i`): the FHS directories.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The program's environment from the caller's: the [`ENV_ALLOW`] list and `LC_*`, with a
/// default `PATH`. (`HOME`, `USER`, `LOGNAME` and `SHELL` are the target user's, set apart.)
fn child_env(vars: impl Iterator<Item = (OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> =
        vars.filter(|(k, _)| k.to_str().is_some_and(|k| ENV_ALLOW.contains(&k) || k.starts_with("LC_"))).collect();
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    out
}

/// The shell `exec` starts when no command is given: the user's own, unless it is one of the
/// "no login" placeholders (system users such as nobody), then /bin/sh.
fn login_shell(shell: &Path) -> OsString {
    let refuses = shell.as_os_str().is_empty()
        || matches!(shell.file_name().and_then(|n| n.to_str()), Some("nologin" | "false" | "true"));
    if refuses {
        OsString::from("/bin/sh")
    } else {
        shell.as_os_str().to_owned()
    }
}

/// The first existing directory of `candidates` that is not on the way to `dst` (covering it
/// would hide the bind target).
fn stage_dir(candidates: &[&str], dst: &Path, is_dir: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|d| !dst.starts_with(d) && is_dir(d))
}

/// capset(2) ABI, version 3 (linux/capability.h): header {version, pid}, then two data words
/// of {effective, permitted, inheritable}; all zero = no capability at all.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Runs in the child between fork and exec: system calls only, no allocation.
fn child_setup(p: &ChildPlan) -> std::io::Result<()> {
    let step = |s: Step| {
        // SAFETY: write(2) of one byte from the stack; async-signal-safe.
        unsafe { libc::write(p.report.as_raw_fd(), (&(s as u8) as *const u8).cast(), 1) };
    };
    let none: Option<&str> = None;

    step(Step::MountNs);
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none)?;

    step(Step::NetNs);
    setns(&p.netns, CloneFlags::CLONE_NEWNET)?;
    // Best effort, as `ip netns exec`: a sysfs mounted now shows this namespace's links.
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        let _ = mount(Some("sysfs"), "/sys", Some("sysfs"), MsFlags::empty(), none);
    }

    step(Step::Mask);
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for m in &p.masks {
        mount(Some("tmpfs"), m.as_c_str(), Some("tmpfs"), hidden, Some("mode=0755,size=64k"))?;
    }

    step(Step::ResolvConf);
    mount(Some("tmpfs"), p.stage_dir.as_c_str(), Some("tmpfs"), hidden, Some("mode=0755,size=64k"))?;
    write_new_file(&p.stage_file, &p.resolv_text)?;
    if p.create_dst {
        write_new_file(&p.resolv_dst, b"")?; // a mount point, inside our own tmpfs mask
    }
    mount(Some(p.stage_file.as_c_str()), p.resolv_dst.as_c_str(), none, MsFlags::MS_BIND, none)?;
    // Read-only: even `--user root` (owner of the file, but without capabilities) cannot edit it.
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hidden;
    mount(none, p.resolv_dst.as_c_str(), none, ro, none)?;
    if let Some((text, stage, dst)) = &p.nsswitch {
        write_new_file(stage, text)?;
        mount(Some(stage.as_c_str()), dst.as_c_str(), none, MsFlags::MS_BIND, none)?;
        mount(none, dst.as_c_str(), none, ro, none)?;
    }
    // The bind mounts keep the tmpfs alive; the staging directory is uncovered again.
    umount2(p.stage_dir.as_c_str(), MntFlags::MNT_DETACH)?;

    step(Step::Terminal);
    super::pty::child_side(p.tty)?;

    step(Step::Capabilities);
    prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong)?;
    for cap in 0..=p.cap_last {
        // The bounding set caps what any later execve can grant, even of a setuid-root file.
        prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap))?;
    }

    step(Step::Identity);
    setgroups(&p.groups)?;
    setresgid(p.gid, p.gid, p.gid)?;
    setresuid(p.uid, p.uid, p.uid)?;
    // Zero every set, also for `--user root` (root without capabilities, as the issue asks).
    let hdr: [u32; 2] = [LINUX_CAPABILITY_VERSION_3, 0];
    let data = [0u32; 6];
    // SAFETY: capset(2) with a v3 header and two data words, as the ABI requires.
    if unsafe { libc::syscall(libc::SYS_capset, hdr.as_ptr(), data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }

    step(Step::NoNewPrivs);
    nix::sys::prctl::set_no_new_privs()?;
    // After the uid change, which clears it. If `exec` has died already, do not start orphaned.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    if nix::unistd::getppid().as_raw() as u32 != p.parent {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    step(Step::Exec);
    Ok(())
}

/// Creates `path` (mode 0644, must not exist) holding `data`, with system calls only.
fn write_new_file(path: &CString, mut data: &[u8]) -> std::io::Result<()> {
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let raw = nix::fcntl::open(path.as_c_str(), flags, nix::sys::stat::Mode::from_bits_truncate(0o644))?;
    // SAFETY: `raw` was just opened and nothing else owns it; dropping it closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    while !data.is_empty() {
        match nix::unistd::write(&fd, data)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => data = data.get(n..).unwrap_or_default(),
        }
    }
    Ok(())
}

/// prctl(2) with one argument; the unused ones passed as full-width zeros, as the kernel reads
/// them as unsigned long (a variadic `0` is an int whose upper register half is unspecified).
fn prctl(option: libc::c_int, arg: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: integer arguments only.
    match unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_command_means_the_users_shell_or_sh() {
        assert_eq!(login_shell(Path::new("/bin/bash")), "/bin/bash");
        assert_eq!(login_shell(Path::new("/usr/sbin/nologin")), "/bin/sh");
        assert_eq!(login_shell(Path::new("/bin/false")), "/bin/sh");
        assert_eq!(login_shell(Path::new("")), "/bin/sh");
    }

    #[test]
    fn the_child_gets_an_allowlisted_environment() {
        let caller = [
            ("TERM", "xterm-256color"),
            ("LC_ALL", "C.UTF-8"),
            ("DISPLAY", ":0"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("SUDO_COMMAND", "/usr/bin/smolmix-vpn exec"),
            ("HOME", "/root"),
        ];
        let env = child_env(caller.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))));
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(keys, ["TERM", "LC_ALL", "DISPLAY", "PATH"]);
        assert_eq!(env[3].1, DEFAULT_PATH, "a default PATH when the caller has none");
        let with_path = child_env([(OsString::from("PATH"), OsString::from("/opt/bin"))].into_iter());
        assert_eq!(with_path, [(OsString::from("PATH"), OsString::from("/opt/bin"))]);
    }
    #[test]
    fn nsswitch_keeps_other_databases_and_makes_hosts_files_and_dns() {
        let host = "passwd: files systemd sss\n  hosts: files mdns4_minimal [NOTFOUND=return] resolve dns myhostname\n# hosts: a comment\ngroup: files\n";
        let ours = nsswitch_conf(host);
        assert!(ours.contains("passwd: files systemd sss\n") && ours.contains("group: files\n"));
        assert!(ours.contains("# hosts: a comment\n"));
        assert_eq!(ours.lines().filter(|l| l.starts_with("hosts:")).collect::<Vec<_>>(), ["hosts: files dns"]);
        assert!(!ours.contains("resolve") && !ours.contains("mdns"));
        assert!(nsswitch_conf("passwd: files\n").ends_with("hosts: files dns\n"), "added when absent");
    }

    #[test]
    fn resolv_conf_lists_only_tunnel_servers() {
        let dns: Vec<IpAddr> =
            ["10.0.0.1", "2001:db8::53", "192.0.2.1", "192.0.2.2"].iter().map(|s| s.parse().unwrap()).collect();
        let text = resolv_conf(&dns).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["nameserver 10.0.0.1", "nameserver 2001:db8::53", "nameserver 192.0.2.1"]);
        assert!(!text.contains("search"));
        assert!(matches!(resolv_conf(&[]), Err(ExecError::NoDns)));
    }

    #[test]
    fn masks_only_existing_dirs_once() {
        let canon = |p: &Path| {
            Some(PathBuf::from(p.to_str()?.replace("/var/run/", "/run/"))).filter(|p| !p.ends_with("avahi-daemon"))
        };
        assert_eq!(mask_dirs(&MASKED_DIRS, canon), [PathBuf::from("/run/systemd/resolve"), PathBuf::from("/run/nscd")]);
        assert!(mask_dirs(&MASKED_DIRS, |_| None).is_empty());
    }

    #[test]
    fn resolv_conf_symlink_into_resolved_is_recreated_in_the_mask() {
        // Ubuntu: /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf
        let rl = |p: &Path| {
            (p == Path::new("/etc/resolv.conf")).then(|| PathBuf::from("../run/systemd/resolve/stub-resolv.conf"))
        };
        let t = follow_links(Path::new("/etc/resolv.conf"), rl);
        assert_eq!(t, Path::new("/run/systemd/resolve/stub-resolv.conf"));
        let masks = [PathBuf::from("/run/systemd/resolve")];
        assert_eq!(resolv_target(&t, false, &masks).unwrap(), (t.clone(), true));
        // A plain file: bind over it. A dangling link elsewhere: refuse.
        let plain = Path::new("/etc/resolv.conf");
        assert_eq!(resolv_target(plain, true, &masks).unwrap(), (plain.to_path_buf(), false));
        assert!(resolv_target(Path::new("/run/NetworkManager/resolv.conf"), false, &masks).is_err());
        // Staging never covers the way to the target.
        let all = |_: &Path| true;
        assert_eq!(stage_dir(&STAGE_DIRS, Path::new("/etc/resolv.conf"), all), Some(PathBuf::from("/tmp")));
        assert_eq!(stage_dir(&STAGE_DIRS, Path::new("/tmp/r/resolv.conf"), all), Some(PathBuf::from("/mnt")));
        assert_eq!(stage_dir(&STAGE_DIRS, Path::new("/etc/resolv.conf"), |_| false), None);
        // A link loop stops after MAX_LINKS hops instead of spinning.
        let _ = follow_links(Path::new("/a"), |p| Some(if p == Path::new("/a") { "/b".into() } else { "/a".into() }));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
