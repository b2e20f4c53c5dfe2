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
//! - when stdin and stdout are terminals: a new pty whose slave becomes CMD's stdio and
//!   controlling terminal (so shells keep job control and Ctrl-C), and we copy bytes between
//!   it and the caller's terminal, which is put in raw mode meanwhile, forwarding resizes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{openpty, OpenptyResult, Winsize};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::unistd::{isatty, read, write, Uid};

/// A pty for the child: `slave` becomes its stdio, `master` stays with us.
#[derive(Debug)]
pub struct Pty {
    /// Our end: what we relay to and from the caller's terminal.
    pub master: OwnedFd,
    /// The program's end: its stdio and controlling terminal.
    pub slave: OwnedFd,
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
    /// A pty sized and set up like the caller's terminal, owned by `uid`; `None` when stdin
    /// or stdout is not a terminal (a pipe, a file: nothing to protect, nothing to relay).
    pub fn for_caller(uid: Uid) -> io::Result<Option<Pty>> {
        let (stdin, stdout) = (io::stdin(), io::stdout());
        if !isatty(stdin.as_raw_fd()).unwrap_or(false) || !isatty(stdout.as_raw_fd()).unwrap_or(false) {
            return Ok(None);
        }
        let termios = tcgetattr(stdin.as_fd()).map_err(io::Error::from)?;
        let size = winsize(stdin.as_raw_fd());
        let OpenptyResult { master, slave } = openpty(size.as_ref(), Some(&termios)).map_err(io::Error::from)?;
        // Neither end may reach the program through exec: the slave arrives as stdio (dup2
        // clears the flag on the copies), the master never.
        for fd in [&master, &slave] {
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
                .map_err(io::Error::from)?;
        }
        // Owned by the user who runs in it, as login(1) and sshd leave a pty.
        nix::unistd::fchown(slave.as_raw_fd(), Some(uid), None).map_err(io::Error::from)?;
        Ok(Some(Pty { master, slave }))
    }
}

/// In the child between fork and exec (async-signal-safe system calls only): a new session,
/// then, with a pty, its slave as controlling terminal and stdio.
pub fn child_side(slave: Option<RawFd>) -> io::Result<()> {
    nix::unistd::setsid()?;
    if let Some(fd) = slave {
        // SAFETY: TIOCSCTTY takes an int argument; 0 = do not steal from another session.
        if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for target in 0..3 {
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
pub fn relay(master: OwnedFd, child: &mut Child) -> io::Result<ExitStatus> {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let (ifd, ofd) = (stdin.as_fd(), stdout.as_fd());
    let saved = tcgetattr(ifd).map_err(io::Error::from)?;
    let mut raw = saved.clone();
    cfmakeraw(&mut raw);
    tcsetattr(ifd, SetArg::TCSADRAIN, &raw).map_err(io::Error::from)?;
    let _restore = RawMode { fd: ifd, saved };
    // SAFETY: the handler only stores to an atomic.
    let winch = SigAction::new(SigHandler::Handler(on_winch), SaFlags::empty(), SigSet::empty());
    let old = unsafe { sigaction(Signal::SIGWINCH, &winch) }.map_err(io::Error::from)?;

    let mut buf = [0u8; 4096];
    let mut stdin_open = true;
    let result: io::Result<()> = loop {
        if RESIZED.swap(false, Ordering::Relaxed) {
            if let Some(ws) = winsize(ifd.as_raw_fd()) {
                // SAFETY: TIOCSWINSZ reads a Winsize we own.
                let _ = unsafe { set_winsize(master.as_raw_fd(), &ws) };
            }
        }
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
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
                Ok(n) => {
                    if let Err(e) = write_all(ofd, &buf[..n]) {
                        break Err(e);
                    }
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(e) => break Err(e.into()),
            }
        }
        if from_user {
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
