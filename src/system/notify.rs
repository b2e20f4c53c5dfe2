//! systemd's service notification protocol (sd_notify(3)), for `Type=notify` units
//! (dist/smolmix-vpn@.service).
//!
//! systemd passes `NOTIFY_SOCKET`, a Unix datagram socket (a path, or `@name` in the abstract
//! namespace); each datagram is newline-separated `KEY=VALUE` assignments. `up` sends:
//!
//! - `STATUS=…` for each connect step and each loss or reconnect (what `systemctl status`
//!   shows on its "Status:" line);
//! - `READY=1` together with the `connected …` line, and never before: a unit ordered
//!   `After=smolmix-vpn@x.service` must not start while traffic would still go nowhere;
//! - `STOPPING=1` when a stop begins (the exit is told, then the host restored).
//!
//! Best effort by design: a notification that cannot be sent is logged, never fatal, so a
//! broken socket cannot end a tunnel. The variable is removed from the environment at start, as
//! `sd_notify(unset_environment=1)` does, so the programs `up` runs (`ip`, `nft`) never see it.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names, if it is set (and removes it from the environment).
    /// Call before any thread starts: changing the environment is not thread-safe.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os(NOTIFY_SOCKET)?;
        std::env::remove_var(NOTIFY_SOCKET);
        match Notifier::connect(path.as_encoded_bytes()) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(%e, "cannot use NOTIFY_SOCKET; systemd will not hear from us");
                None
            }
        }
    }

    /// A notifier for the socket at `path` (`@name`: the abstract namespace).
    pub fn connect(path: &[u8]) -> io::Result<Notifier> {
        let addr = match path.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None if path.first() == Some(&b'/') => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))?,
            None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "neither an absolute path nor @name")),
        };
        Ok(Notifier { sock: UnixDatagram::unbound()?, addr })
    }

    /// Sends one notification (newline-separated assignments); failures are logged.
    pub fn send(&self, assignments: &str) {
        if let Err(e) = self.sock.send_to_addr(assignments.as_bytes(), &self.addr) {
            tracing::debug!(%e, "cannot notify systemd");
        }
    }

    /// `STATUS=line`: one line, what `systemctl status` shows.
    pub fn status(&self, line: &str) {
        self.send(&format!("STATUS={}", one_line(line)));
    }

    /// `READY=1`, with the status that says why.
    pub fn ready(&self, line: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(line)));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: telling the exit, restoring the host");
    }
}

/// A value must not contain a newline (it would start a new assignment); steps are padded for
/// a terminal, systemd shows them trimmed.
fn one_line(s: &str) -> String {
    s.trim().replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(dir: &std::path::Path) -> (UnixDatagram, std::path::PathBuf) {
        let path = dir.join("notify");
        (UnixDatagram::bind(&path).unwrap(), path)
    }

    fn recv(l: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = l.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_what_systemd_parses() {
        let dir = tempdir();
        let (l, path) = listener(&dir);
        let n = Notifier::connect(path.as_os_str().as_encoded_bytes()).unwrap();
        n.status("   0.42 s  directory: 3 usable IPR exits listed");
        n.ready("connected to udp://192.0.2.1:51820 (IPR v10)\nsecond line");
        n.stopping();
        assert_eq!(recv(&l), "STATUS=0.42 s  directory: 3 usable IPR exits listed");
        assert_eq!(recv(&l), "READY=1\nSTATUS=connected to udp://192.0.2.1:51820 (IPR v10) second line");
        assert!(recv(&l).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn abstract_names_and_bad_values() {
        let name = format!("smolmix-notify-test-{}", std::process::id());
        let l = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        Notifier::connect(format!("@{name}").as_bytes()).unwrap().status("x");
        assert_eq!(recv(&l), "STATUS=x");
        assert!(Notifier::connect(b"relative/path").is_err());
        // Nobody listening: logged, not an error or a panic.
        Notifier::connect(b"/nonexistent/notify").unwrap().status("lost");
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "smolmix-notify-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
