//! `exec`'s terminal: the program runs in a session of its own, on a pseudo-terminal of its own
//! when the caller has a terminal, never on the caller's.
//!
//! Why: `sudo smolmix-vpn exec -- CMD` runs CMD as an ordinary user, but on the terminal of the
//! root shell that started it. With that terminal as its controlling tty, CMD could push
//! keystrokes into root's input queue (`ioctl(TIOCSTI)`, still allowed where
//! `dev.tty.legacy_tiocsti=1`, the default before Linux 6.2) and have root's shell run them
//! once CMD exits: the attack that made sudo add `use_pty` and util-linux `su --pty`
//! (CVE-2016-2568 for pkexec, CVE-2017-5226 for bubblewrap). TIOCSTI works only on one's own
//! controlling terminal (or with CAP_SYS_ADMIN, which CMD never has), so:
//!
//! - always: `setsid()` in the child, which leaves it without a controlling terminal;
//! - when any of stdin, stdout and stderr is a terminal: a new pty, the controlling terminal of
//!   CMD (so shells keep job control and Ctrl-C), whose slave replaces each of those three that
//!   is a terminal; the others (a file, a pipe) are passed on as they are, as sudo's `use_pty`
//!   does. We copy bytes between the pty and the caller's terminal, forwarding resizes; the
//!   caller's terminal is put in raw mode only while we read it (stdin a terminal), so that
//!   with stdin elsewhere its Ctrl-C still reaches us, and through [`forward_signals`] CMD.
//!
//! Why any, not only stdin and stdout: a terminal passed on as stderr alone is still the
//! caller's, usually opened read-write. Not its controlling terminal, so no TIOCSTI, but CMD
//! could read the keys typed into it (root's next password prompt, once `exec` has returned,
//! CMD running on in its own session), change its modes, or write to it after we are gone.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{openpty, OpenptyResult, Winsize};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::unistd::{isatty, read, write, Uid};

/// A pty for the child: `slave` becomes its controlling terminal and replaces its terminal
/// stdio ([`Terminals`]), `master` stays with us.
#[derive(Debug)]
pub struct Pty {
    /// Our end: what we relay to and from the caller's terminal.
    pub master: OwnedFd,
    /// The program's end: its controlling terminal and terminal stdio.
    pub slave: OwnedFd,
    /// Which of the caller's fds 0–2 are terminals, replaced by `slave` in the program.
    pub terminals: Terminals,
}

/// Which of fds 0, 1 and 2 are terminals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminals(pub [bool; 3]);

impl Terminals {
    /// The caller's: fds 0–2 of this process.
    pub fn of_caller() -> Terminals {
        Terminals([0, 1, 2].map(|fd| isatty(fd).unwrap_or(false)))
    }

    /// Whether `fd` (0–2) is one.
    pub fn is(self, fd: RawFd) -> bool {
        usize::try_from(fd).ok().and_then(|i| self.0.get(i)).copied().unwrap_or(false)
    }

    /// How the relay uses them, `None` when there is no terminal.
    fn roles(self) -> Option<Roles> {
        // The settings and size come from stdin's terminal when it is one, as before.
        let reference = (0..3).find(|&fd| self.is(fd))?;
        Some(Roles {
            reference,
            input: self.is(0).then_some(0),
            // What CMD writes, and the pty's echo of what is typed: to stdout's terminal, else
            // stderr's, else stdin's when that one was opened for writing too.
            output: [1, 2].into_iter().find(|&fd| self.is(fd)).or_else(|| writable(0).then_some(0)),
        })
    }
}

/// Which of the caller's fds the relay reads, writes, and takes the terminal's settings from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Roles {
    reference: RawFd,
    input: Option<RawFd>,
    output: Option<RawFd>,
}

/// Whether `fd` is open for writing.
fn writable(fd: RawFd) -> bool {
    match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
        Ok(flags) => flags & libc::O_ACCMODE != libc::O_RDONLY,
        Err(_) => false,
    }
}

/// One of fds 0–2, borrowed.
fn std_fd(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: fds 0–2 are open for the life of the process (`Terminals` saw them open), and
    // nothing here closes them.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

nix::ioctl_read_bad!(
    /// `TIOCGWINSZ`: reads a terminal's window size.
    get_winsize,
    libc::TIOCGWINSZ,
    Winsize
);
nix::ioctl_write_ptr_bad!(
    /// `TIOCSWINSZ`: sets a terminal's window size.
    set_winsize,
    libc::TIOCSWINSZ,
    Winsize
);

impl Pty {
    /// A pty sized and set up like the caller's terminal, owned by `uid`; `None` when none of
    /// fds 0–2 is a terminal (pipes, files: nothing to protect, nothing to relay).
    pub fn for_caller(uid: Uid) -> io::Result<Option<Pty>> {
        let terminals = Terminals::of_caller();
        let Some(roles) = terminals.roles() else { return Ok(None) };
        let termios = tcgetattr(std_fd(roles.reference)).map_err(io::Error::from)?;
        let size = winsize(roles.reference);
        let OpenptyResult { master, slave } = openpty(size.as_ref(), Some(&termios)).map_err(io::Error::from)?;
        // Neither end may reach the program through exec: the slave arrives as stdio (dup2
        // clears the flag on the copies), the master never.
        for fd in [&master, &slave] {
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
                .map_err(io::Error::from)?;
        }
        // Owned by the user who runs in it, as login(1) and sshd leave a pty.
        nix::unistd::fchown(slave.as_raw_fd(), Some(uid), None).map_err(io::Error::from)?;
        Ok(Some(Pty { master, slave, terminals }))
    }
}

/// In the child between fork and exec (async-signal-safe system calls only): a new session,
/// then, with a pty, its slave as controlling terminal and in place of each terminal of fds 0–2.
pub fn child_side(pty: Option<(RawFd, Terminals)>) -> io::Result<()> {
    nix::unistd::setsid()?;
    if let Some((fd, terminals)) = pty {
        // SAFETY: TIOCSCTTY takes an int argument; 0 = do not steal from another session.
        if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for target in (0..3).filter(|&t| terminals.is(t)) {
            // SAFETY: dup2 on descriptors we own; async-signal-safe.
            if unsafe { libc::dup2(fd, target) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

static RESIZED: AtomicBool = AtomicBool::new(false);
/// The program's pid while [`forward_signals`] is in force.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// The signals passed on to the program: the terminal's (Ctrl-C, Ctrl-backslash, hang-up; with a pty
/// those reach it through the pty anyway) and a service manager's SIGTERM.
const FORWARDED: [Signal; 4] = [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM, Signal::SIGHUP];

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Puts the previous handlers back when dropped.
pub struct Forwarding {
    old: Vec<(Signal, SigAction)>,
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for (sig, old) in &self.old {
            // SAFETY: restores the disposition we replaced.
            let _ = unsafe { sigaction(*sig, old) };
        }
        CHILD.store(0, Ordering::Relaxed);
    }
}

/// Passes [`FORWARDED`] signals on to `pid` until the guard is dropped. We stay alive to
/// report the program's exit status; it decides what a signal means.
pub fn forward_signals(pid: u32) -> Forwarding {
    CHILD.store(i32::try_from(pid).unwrap_or(0), Ordering::Relaxed);
    let action = SigAction::new(SigHandler::Handler(forward), SaFlags::SA_RESTART, SigSet::empty());
    let old = FORWARDED
        .iter()
        // SAFETY: the handler only loads an atomic and calls kill(2).
        .filter_map(|&sig| unsafe { sigaction(sig, &action) }.ok().map(|old| (sig, old)))
        .collect();
    Forwarding { old }
}

extern "C" fn on_winch(_: libc::c_int) {
    RESIZED.store(true, Ordering::Relaxed);
}

/// Restores the caller's terminal mode when the relay ends, however it ends.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies the caller's terminal to the pty and back until the program and everything it left
/// on the pty are done, then reaps it. `slave` must already be closed on our side, or the
/// master never reports the end.
pub fn relay(master: OwnedFd, terminals: Terminals, child: &mut Child) -> io::Result<ExitStatus> {
    let Some(roles) = terminals.roles() else { return child.wait() };
    let input = roles.input.map(std_fd);
    let output = roles.output.map(std_fd);
    let _restore = match input {
        Some(ifd) => {
            let saved = tcgetattr(ifd).map_err(io::Error::from)?;
            let mut raw = saved.clone();
            cfmakeraw(&mut raw);
            tcsetattr(ifd, SetArg::TCSADRAIN, &raw).map_err(io::Error::from)?;
            Some(RawMode { fd: ifd, saved })
        }
        None => None,
    };
    // SAFETY: the handler only stores to an atomic.
    let winch = SigAction::new(SigHandler::Handler(on_winch), SaFlags::empty(), SigSet::empty());
    let old = unsafe { sigaction(Signal::SIGWINCH, &winch) }.map_err(io::Error::from)?;

    let mut buf = [0u8; 4096];
    let mut stdin_open = input.is_some();
    let result: io::Result<()> = loop {
        if RESIZED.swap(false, Ordering::Relaxed) {
            if let Some(ws) = winsize(roles.reference) {
                // SAFETY: TIOCSWINSZ reads a Winsize we own.
                let _ = unsafe { set_winsize(master.as_raw_fd(), &ws) };
            }
        }
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if let Some(ifd) = input.filter(|_| stdin_open) {
            fds.push(PollFd::new(ifd, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break Err(e.into()),
            Ok(_) => {}
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let (from_pty, from_user) = (ready(&fds[0]), fds.get(1).is_some_and(ready));
        if from_pty {
            match read(master.as_raw_fd(), &mut buf) {
                // EIO: every holder of the slave is gone (the program and what it started).
                Ok(0) | Err(nix::errno::Errno::EIO) => break Ok(()),
                // Without a terminal to show it on (stdin's opened read-only), dropped.
                Ok(n) => {
                    if let Err(e) = output.map_or(Ok(()), |ofd| write_all(ofd, &buf[..n])) {
                        break Err(e);
                    }
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(e) => break Err(e.into()),
            }
        }
        if let Some(ifd) = input.filter(|_| from_user) {
            match read(ifd.as_raw_fd(), &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(n) => {
                    if let Err(e) = write_all(master.as_fd(), &buf[..n]) {
                        break Err(e);
                    }
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => stdin_open = false,
            }
        }
    };
    // SAFETY: puts back the disposition we replaced.
    let _ = unsafe { sigaction(Signal::SIGWINCH, &old) };
    drop(master);
    if result.is_err() {
        // The caller's terminal is gone or broken: hang up on the program, as a terminal would.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGHUP);
    }
    let status = child.wait();
    result.and(status)
}

fn winsize(fd: RawFd) -> Option<Winsize> {
    let mut ws = Winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one Winsize into memory we own.
    unsafe { get_winsize(fd, &mut ws) }.ok().map(|_| ws)
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(t: [bool; 3]) -> Option<(RawFd, Option<RawFd>, Option<RawFd>)> {
        Terminals(t).roles().map(|r| (r.reference, r.input, r.output))
    }

    #[test]
    fn any_terminal_of_the_three_gets_a_pty() {
        assert_eq!(roles([false; 3]), None, "pipes and files only: no pty");
        assert_eq!(roles([true; 3]), Some((0, Some(0), Some(1))));
        // `exec -- cmd </dev/null | tee log`: only stderr is the caller's terminal.
        assert_eq!(roles([false, false, true]), Some((2, None, Some(2))));
        assert_eq!(roles([false, true, false]), Some((1, None, Some(1))));
        assert_eq!(roles([true, false, true]), Some((0, Some(0), Some(2))));
        let t = Terminals([false, true, true]);
        assert!(!t.is(0) && t.is(1) && t.is(2) && !t.is(3) && !t.is(-1));
    }
}
