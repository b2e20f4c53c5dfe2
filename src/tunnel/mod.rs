//! The library API: TCP and UDP sockets through the mixnet, without root.
//!
//! A [`Tunnel`] runs its own userspace IP stack (smoltcp 0.14, `Medium::Ip`) over the same IPR
//! session and transport as the VPN: no TUN, no routes, no privileges. The interface owns
//! exactly the IPv4 and IPv6 addresses the IPR allocated, with default routes towards the
//! exit, so every destination is reached through it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let tunnel = smolmix::Tunnel::builder()
//!     .ipr("udp://203.0.113.1:51820".parse()?) // a Nym address, or a local smolmix-exit
//!     .build()
//!     .await?;
//! let mut tcp = tunnel.tcp_connect("203.0.113.80:80".parse()?).await?;
//! tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
//! let mut page = Vec::new();
//! tcp.read_to_end(&mut page).await?;
//!
//! let udp = tunnel.udp_socket().await?;
//! udp.send_to(b"ping", "203.0.113.53:7".parse()?).await?;
//! let mut buf = [0u8; 1500];
//! let (n, from) = udp.recv_from(&mut buf).await?;
//!
//! let (v4, v6) = tunnel.allocated_ips();
//! tunnel.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! ```text
//!  TcpStream / UdpSocket ──lock──▶ Stack (stack.rs): Interface + SocketSet + QueueDevice (device.rs)
//!           ▲ wakers                       ▲ poll, rx/tx queues
//!           └──────────── Runner (runner.rs): Session (ipr) + Transport (udp | mixnet)
//! ```
//!
//! # Lifetime and reconnects
//!
//! The background task lives as long as the `Tunnel` value: [`Tunnel::shutdown`] (or dropping
//! the tunnel) tells the exit goodbye and closes every socket, whose pending and future
//! operations then fail with `NotConnected`. When the exit stops answering, the tunnel starts
//! a new session by itself. UDP sockets carry on. **Established TCP connections die** if the
//! new session has other addresses (the usual case: their segments carry the old address):
//! reads and writes fail with `ConnectionReset`, and the caller reconnects. While the new
//! session is being set up, `tcp_connect` and `udp_socket` fail with
//! [`TunnelError::Reconnecting`].

mod device;
mod error;
mod ports;
mod runner;
mod stack;
mod tcp;
mod udp;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use device::DeviceStats;
pub use error::TunnelError;
pub use tcp::TcpStream;
pub use udp::UdpSocket;

#[cfg(feature = "mixnet")]
pub use crate::transport::mixnet::{MixnetClient, MixnetOptions, TrafficProfile};

use crate::link::{self, MAX_MESSAGE};
#[cfg(feature = "mixnet")]
use crate::transport::Transport;
use crate::transport::{IprAddr, OpenOptions, Opened, Progress};
use runner::Runner;
use stack::{Shared, Stack};

/// How long [`Tunnel::tcp_connect`] waits for the handshake by default: the SYN and its
/// retransmissions (RTO from 0.7 s, doubling) get ~5 tries on a 0.7 s RTT mixnet path.
pub const DEFAULT_TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A userspace network stack whose traffic leaves through an IPR exit.
#[derive(Debug)]
pub struct Tunnel {
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    exit: String,
    tcp_connect_timeout: Duration,
}

/// Options for [`Tunnel`]; see [`Tunnel::builder`].
#[derive(Debug, Clone)]
pub struct TunnelBuilder {
    ipr: Option<IprAddr>,
    tcp_connect_timeout: Duration,
    progress: Progress,
    #[cfg(feature = "mixnet")]
    mixnet: MixnetOptions,
}

impl Default for TunnelBuilder {
    fn default() -> Self {
        TunnelBuilder {
            ipr: None,
            tcp_connect_timeout: DEFAULT_TCP_CONNECT_TIMEOUT,
            progress: Progress::default(),
            #[cfg(feature = "mixnet")]
            mixnet: MixnetOptions::default(),
        }
    }
}

impl TunnelBuilder {
    /// The exit: a Nym address of an IPR, or `udp://HOST:PORT` for a local `smolmix-exit`.
    /// Without it, `build` picks the best IPR exit from the Nym directory.
    pub fn ipr(mut self, ipr: IprAddr) -> Self {
        self.ipr = Some(ipr);
        self
    }

    /// How long `tcp_connect` waits for the handshake (default 30 s).
    pub fn tcp_connect_timeout(mut self, timeout: Duration) -> Self {
        self.tcp_connect_timeout = timeout;
        self
    }

    /// Mixnet traffic profile (mixnet only; ignored for `udp://`).
    #[cfg(feature = "mixnet")]
    pub fn traffic(mut self, profile: TrafficProfile) -> Self {
        self.mixnet.traffic = profile;
        self
    }

    /// Reply SURBs the exit holds in hand beyond its reserve even when idle, default 4; more
    /// are sent as its replies need them (mixnet only; ignored for `udp://`).
    #[cfg(feature = "mixnet")]
    pub fn reply_surbs(mut self, surbs: u32) -> Self {
        self.mixnet.reply_surbs = surbs;
        self
    }

    /// Every mixnet option at once (identity directory, directory URLs and timeouts).
    #[cfg(feature = "mixnet")]
    pub fn mixnet_options(mut self, options: MixnetOptions) -> Self {
        self.mixnet = options;
        self
    }

    /// Where the connect steps (directory, exit, gateway, IPR session) are reported while
    /// [`TunnelBuilder::build`] runs, e.g. to show them to a user; nowhere by default.
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Opens the transport, connects the IPR session (v10, falling back to v9) and starts the
    /// background task. Needs a tokio runtime.
    pub async fn build(self) -> Result<Tunnel, TunnelError> {
        let opts = OpenOptions {
            mark: None,
            progress: self.progress.clone(),
            #[cfg(feature = "mixnet")]
            mixnet: self.mixnet.clone(),
        };
        let opened = crate::transport::open(self.ipr.as_ref(), &opts).await?;
        Tunnel::start(opened, self.tcp_connect_timeout, &self.progress).await
    }
}

impl Tunnel {
    /// A builder; see the module docs for an example.
    pub fn builder() -> TunnelBuilder {
        TunnelBuilder::default()
    }

    /// A tunnel through the best IPR exit of the Nym directory, with default options.
    pub async fn new() -> Result<Tunnel, TunnelError> {
        Tunnel::builder().build().await
    }

    /// A tunnel over a mixnet client the caller built (its own traffic profile, identity or
    /// network), to the IPR at `ipr`, which must be a Nym address. Reply SURBs: 4 per message.
    /// The exit's release is looked up in mainnet's directory; use
    /// [`Tunnel::from_client_with`] for a client of another network.
    #[cfg(feature = "mixnet")]
    pub async fn from_client(client: MixnetClient, ipr: IprAddr) -> Result<Tunnel, TunnelError> {
        Tunnel::from_client_with(client, ipr, MixnetOptions::default()).await
    }

    /// [`Tunnel::from_client`] with options: the reply SURBs per message, and the directory
    /// (`nym_api_urls`) in which the exit's release is looked up, so that the tunnel speaks the
    /// exit's protocol at once. The client's own settings (traffic profile, identity, network)
    /// are the caller's; the options' `traffic` and `storage_dir` are not used here.
    #[cfg(feature = "mixnet")]
    pub async fn from_client_with(
        client: MixnetClient,
        ipr: IprAddr,
        options: MixnetOptions,
    ) -> Result<Tunnel, TunnelError> {
        use crate::transport::mixnet::{MixnetError, MixnetTransport};
        let IprAddr::Nym(address) = ipr else {
            return Err(MixnetError::BadAddress(format!("{ipr} (a mixnet client needs a Nym address)")).into());
        };
        let t = MixnetTransport::from_client(client, &address, &options).await?;
        let max_version = t.ipr_version_hint().unwrap_or(10);
        let opened = Opened { transport: Transport::Mixnet(t), exit: address, max_version };
        Tunnel::start(opened, DEFAULT_TCP_CONNECT_TIMEOUT, &options.progress).await
    }

    async fn start(opened: Opened, tcp_connect_timeout: Duration, progress: &Progress) -> Result<Tunnel, TunnelError> {
        let Opened { mut transport, exit, max_version } = opened;
        let mut rx = vec![0u8; MAX_MESSAGE];
        let mut link = link::new_link(&transport, max_version);
        let alloc = match link::connect(&mut link, &mut transport, &mut rx, progress).await {
            Ok(alloc) => alloc,
            Err(source) => {
                transport.shutdown().await;
                return Err(TunnelError::Connect { exit, source });
            }
        };
        tracing::info!(%exit, ipv4 = %alloc.ipv4, ipv6 = %alloc.ipv6, version = alloc.version,
            mtu = alloc.tunnel_mtu(true), "tunnel connected");
        let shared = Arc::new(Shared::new(Stack::new(alloc, tokio::time::Instant::now().into_std())));
        let (stop_tx, stop_rx) = oneshot::channel();
        let path_changes = transport.path_changes();
        let runner = Runner { shared: shared.clone(), link, transport, rx, exit: exit.clone(), path_changes };
        let task = tokio::spawn(runner.run(stop_rx));
        Ok(Tunnel { shared, stop: Mutex::new(Some(stop_tx)), task: Mutex::new(Some(task)), exit, tcp_connect_timeout })
    }

    /// Connects to `addr` through the exit. Resolves once the handshake completes; fails with
    /// [`TunnelError::Refused`] on a reset and [`TunnelError::ConnectTimeout`] without answer.
    pub async fn tcp_connect(&self, addr: SocketAddr) -> Result<TcpStream, TunnelError> {
        let stream = TcpStream::open(self.shared.clone(), addr)?;
        match tokio::time::timeout(self.tcp_connect_timeout, stream.established()).await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TunnelError::ConnectTimeout { addr, after: self.tcp_connect_timeout }),
        }
        // On error `stream` drops here, which frees the socket and its port.
    }

    /// A UDP socket on an ephemeral port (49152–65535).
    pub async fn udp_socket(&self) -> Result<UdpSocket, TunnelError> {
        UdpSocket::bind(self.shared.clone(), 0)
    }

    /// A UDP socket on `port` (0: an ephemeral port).
    pub async fn udp_socket_on(&self, port: u16) -> Result<UdpSocket, TunnelError> {
        UdpSocket::bind(self.shared.clone(), port)
    }

    /// The IPv4 and IPv6 addresses the IPR allocated to this tunnel (the current session's).
    pub fn allocated_ips(&self) -> (Ipv4Addr, Ipv6Addr) {
        let alloc = self.shared.lock().allocation();
        (alloc.ipv4, alloc.ipv6)
    }

    /// The tunnel's MTU: what one IP packet through the exit may carry.
    pub fn mtu(&self) -> u16 {
        self.shared.lock().allocation().tunnel_mtu(true)
    }

    /// The exit this tunnel uses (`udp://…` or a Nym address).
    pub fn exit(&self) -> &str {
        &self.exit
    }

    /// Packets the userspace device dropped or held back so far.
    pub fn device_stats(&self) -> DeviceStats {
        self.shared.lock().device.stats
    }

    /// Tells the exit goodbye, stops the background task and closes every socket. Idempotent.
    pub async fn shutdown(&self) {
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "tunnel task ended abnormally");
            }
        }
    }
}
