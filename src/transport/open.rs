//! One way to open a transport from an exit address, for the VPN and the library alike.

use super::udp::{UdpError, UdpTransport};
use super::{IprAddr, Progress, Step, Transport};

/// How to open a transport.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// `SO_MARK` for the transport's sockets, set before they connect: the VPN's routing mark
    /// (system/mark.rs) in full-tunnel mode; `None` (the library, per-app mode) leaves them
    /// unmarked.
    pub mark: Option<u32>,
    /// Where the steps of opening (and of the first session, [`crate::link::connect`]) are
    /// reported; nowhere by default.
    pub progress: Progress,
    /// The mixnet client's options (its `socket_mark` and `progress` are replaced by `mark`
    /// and `progress`).
    #[cfg(feature = "mixnet")]
    pub mixnet: super::mixnet::MixnetOptions,
}

/// An open transport and what `open` learnt about the exit.
#[derive(Debug)]
pub struct Opened {
    /// The transport, ready to carry a session.
    pub transport: Transport,
    /// The exit's name for messages: `udp://…` or its Nym address.
    pub exit: String,
    /// The highest IPR protocol version to ask for: what the directory says the exit runs,
    /// else 10 (the session falls back to 9 by itself, after the v10 timeout).
    pub max_version: u8,
}

/// Why no transport could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The `udp://` exit's name did not resolve or its socket could not be set up.
    #[error(transparent)]
    Udp(#[from] UdpError),
    /// The directory, the mixnet client or the exit's address failed.
    #[cfg(feature = "mixnet")]
    #[error(transparent)]
    Mixnet(#[from] super::mixnet::MixnetError),
    /// A Nym address (or none: pick from the directory) in a build without the mixnet.
    #[error("the Nym mixnet transport is not available in this build (feature `mixnet`); use udp://HOST:PORT")]
    NoMixnet {
        /// The address asked for; `None`: the best exit of the directory.
        ipr: Option<String>,
    },
}

impl OpenError {
    /// Whether trying again cannot help: the configuration or the chosen exit is wrong, not the
    /// network. `up` retries everything else while it keeps the host closed.
    pub fn is_permanent(&self) -> bool {
        match self {
            OpenError::Udp(e) => matches!(e, UdpError::Mark { .. }),
            #[cfg(feature = "mixnet")]
            OpenError::Mixnet(e) => e.is_permanent(),
            OpenError::NoMixnet { .. } => true,
        }
    }
}

/// Why an exit the caller named was used.
const GIVEN: &str = "as given";

/// Opens a transport to `exit`: `udp://` to a local exit, a Nym address over the mixnet, or
/// (`None`) the best IPR exit of the Nym directory.
pub async fn open(exit: Option<&IprAddr>, opts: &OpenOptions) -> Result<Opened, OpenError> {
    match exit {
        Some(addr @ IprAddr::Udp { host, port }) => {
            opts.progress.report(Step::Exit { exit: addr.to_string(), why: GIVEN.into() });
            let t = UdpTransport::connect(host, *port, opts.mark).await?;
            opts.progress.report(Step::Udp { local: t.local_addr() });
            Ok(Opened { transport: Transport::Udp(t), exit: addr.to_string(), max_version: 10 })
        }
        #[cfg(feature = "mixnet")]
        other => {
            use super::mixnet::{best_ipr, MixnetTransport};
            let mut mixnet = opts.mixnet.clone();
            mixnet.socket_mark = opts.mark;
            mixnet.progress = opts.progress.clone();
            let (address, hint) = match other {
                Some(IprAddr::Nym(a)) => {
                    opts.progress.report(Step::Exit { exit: a.clone(), why: GIVEN.into() });
                    (a.clone(), None)
                }
                _ => {
                    let best = best_ipr(&mixnet).await?;
                    tracing::info!(exit = %best.address, version = %best.version, "best IPR exit");
                    (best.address, best.ipr_protocol)
                }
            };
            let t = MixnetTransport::connect(&address, &mixnet).await?;
            let max_version = hint.or(t.ipr_version_hint()).unwrap_or(10);
            Ok(Opened { transport: Transport::Mixnet(t), exit: address, max_version })
        }
        #[cfg(not(feature = "mixnet"))]
        other => Err(OpenError::NoMixnet { ipr: other.map(IprAddr::to_string) }),
    }
}
