//! Connect progress: the steps between "start" and "traffic flows", reported as they happen.
//!
//! Over the mixnet, connecting takes seconds (docs/performance.md §2: the directory, the
//! entry gateway's registration, then the IPR's Connect over a mixnet round trip), and a
//! program that says nothing meanwhile looks hung. [`open`](super::open) and
//! [`crate::link::connect`] report each [`Step`] to a [`Progress`] sink; the VPN prints them
//! with their elapsed time, writes them to `status` and to systemd's `STATUS=`. The library's
//! default sink drops them.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::ipr::Allocation;

/// One step of reaching the exit.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The Nym directory answered with this many usable IPR exits.
    Directory {
        /// Usable IPR exits it lists.
        exits: usize,
    },
    /// The exit to use, and why this one.
    Exit {
        /// `udp://…` or its Nym address.
        exit: String,
        /// Why it was chosen ("given with --ipr", "picked by performance: …").
        why: String,
    },
    /// The directory lists the exit gateway's release, which decides the IPR version asked for.
    Release {
        /// The exit gateway's nym-node release.
        version: String,
        /// The IPR protocol that release speaks (`None`: not listed; v10 then v9 are tried).
        protocol: Option<u8>,
    },
    /// A connection to the entry gateway is being opened (the SDK reports it before `connect`,
    /// so its address is not known yet).
    Gateway,
    /// Registered with the entry gateway: the mixnet client runs under this Nym address.
    Registered {
        /// Our own Nym address (`…@<gateway identity>`).
        address: String,
        /// The gateway's socket address, when the connection's peer could be read.
        peer: Option<SocketAddr>,
    },
    /// The UDP socket to a local exit is open.
    Udp {
        /// Its local address.
        local: Option<SocketAddr>,
    },
    /// A Connect in this IPR protocol version was sent.
    Session {
        /// 10 or 9.
        version: u8,
    },
    /// The IPR answered: the session is up with this allocation.
    Allocated(Allocation),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Directory { exits } => write!(f, "directory: {exits} usable IPR exits listed"),
            Step::Exit { exit, why } => write!(f, "exit: {exit} ({why})"),
            Step::Release { version, protocol: Some(p) } => {
                write!(f, "exit gateway: nym-node {version}, speaks IPR v{p}")
            }
            Step::Release { version, protocol: None } => write!(f, "exit gateway: nym-node {version}"),
            Step::Gateway => write!(f, "entry gateway: opening a connection"),
            Step::Registered { address, peer: Some(p) } => {
                write!(f, "entry gateway: registered at {p}, our address is {address}")
            }
            Step::Registered { address, peer: None } => {
                write!(f, "entry gateway: registered, our address is {address}")
            }
            Step::Udp { local: Some(l) } => write!(f, "transport: UDP socket {l} open"),
            Step::Udp { local: None } => write!(f, "transport: UDP socket open"),
            Step::Session { version } => write!(f, "ipr: Connect sent, protocol v{version}"),
            Step::Allocated(a) => {
                write!(
                    f,
                    "ipr: session up (v{}), allocated {} {}, mtu {}",
                    a.version,
                    a.ipv4,
                    a.ipv6,
                    a.mtu_or_default()
                )
            }
        }
    }
}

/// Where steps go: a callback (the VPN's) or nowhere (the default).
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<dyn Fn(Step) + Send + Sync>>);

impl Progress {
    /// A sink that calls `f` for each step, from whichever task reached it.
    pub fn new(f: impl Fn(Step) + Send + Sync + 'static) -> Progress {
        Progress(Some(Arc::new(f)))
    }

    /// Reports `step` (nothing without a sink).
    pub fn report(&self, step: Step) {
        if let Some(f) = &self.0 {
            f(step);
        }
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Progress(sink)" } else { "Progress(none)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Mutex;

    #[test]
    fn a_sink_sees_each_step_in_order_and_none_is_silent() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let p = Progress::new(move |step| s.lock().unwrap().push(step.to_string()));
        p.report(Step::Session { version: 10 });
        p.clone().report(Step::Allocated(Allocation {
            ipv4: Ipv4Addr::new(10, 0, 0, 2),
            ipv6: Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 2),
            mtu: None,
            version: 9,
        }));
        Progress::default().report(Step::Directory { exits: 3 });
        assert_eq!(
            *seen.lock().unwrap(),
            ["ipr: Connect sent, protocol v10", "ipr: session up (v9), allocated 10.0.0.2 fc00::2, mtu 1420"]
        );
    }

    #[test]
    fn no_step_line_could_be_taken_for_the_connected_line() {
        // Scripts and users wait for a line starting with "connected": a step must never be one.
        let steps = [
            Step::Directory { exits: 1 },
            Step::Exit { exit: "udp://192.0.2.1:1".into(), why: "given with --ipr".into() },
            Step::Release { version: "1.31.0".into(), protocol: Some(9) },
            Step::Gateway,
            Step::Registered { address: "a.b@c".into(), peer: None },
            Step::Udp { local: None },
            Step::Session { version: 9 },
        ];
        for s in steps {
            assert!(!s.to_string().starts_with("connected"), "{s}");
        }
    }
}
