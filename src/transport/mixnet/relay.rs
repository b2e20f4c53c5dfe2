//! The directory relay: the SDK's HTTP to the Nym directory (nym-api) leaves the host only
//! through sockets carrying the transport's routing mark, to the directory's hosts only, so
//! that nothing is exempted from the kill switch by address (docs/directory-relay.md §1).
//!
//! - [`sdk_http`]: an `inventory` record of nym-http-api-client points every HTTP client the
//!   SDK builds at our Unix socket, once [`start`] has set its path.
//! - The relay listens on that socket, in a directory only root can enter. Per connection: read
//!   the first bytes (at most [`MAX_SNIFF`] within [`SNIFF_TIMEOUT`]) and take the TLS server
//!   name or the HTTP `Host` ([`crate::transport::sniff`]); refuse a host not in the
//!   [`Allowlist`]; resolve it with the marked resolver ([`crate::transport::resolver`]); dial
//!   it from a TCP socket marked before `connect`; write the bytes read and splice both ways
//!   until either side closes. TLS stays end to end: the relay never sees plaintext of https.
//! - Bounded: [`MAX_CONNECTIONS`] at once (more are closed at once), each for at most
//!   [`MAX_LIFETIME`]; every refusal and failure is logged and counted ([`RelayCounts`]).
//!
//! The driver calls [`start`] before the first directory request and keeps the handle for the
//! life of the process: the SDK's shared HTTP client is built once, so the path cannot change.

pub mod allow;
pub mod sdk_http;

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;

pub use allow::{AllowError, Allowlist, Refusal};
pub use sdk_http::{route_through, routed_path, RouteError};

use crate::transport::resolver::{ResolveError, Resolver};
use crate::transport::sniff::{self, SniffError, Sniffed, MAX_SNIFF};
use crate::transport::socket::{self, Opt};

/// The socket's name inside the directory the caller gives.
pub const SOCKET_NAME: &str = "directory.sock";
/// Connections relayed at once; the SDK opens one or two.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its ClientHello or request head.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a name may take to resolve (all servers, all retries).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one address may take to accept the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses tried per connection, in the resolver's order.
pub const MAX_DIAL_ADDRS: usize = 4;
/// The longest a relayed connection lives (a topology download takes seconds; reqwest's own
/// timeout is 30 s).
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// What the relay is allowed to do.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `SO_MARK` for every outgoing socket (TCP and DNS); `None` only in tests and the library.
    pub mark: Option<u32>,
    /// The (host, port) pairs it may connect to ([`Allowlist`]).
    pub allow: Vec<(String, u16)>,
    /// Nameservers for the hosts that are names (the host's upstream ones, never the tunnel's).
    pub nameservers: Vec<SocketAddr>,
}

/// Why the relay did not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Not called inside a tokio runtime.
    #[error("the directory relay needs a tokio runtime")]
    NoRuntime,
    /// The directory for the socket may be entered by others than us.
    #[error("{} is not a private directory ({why}): others could reach the directory through the relay", path.display())]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The socket could not be created.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The allowlist is unusable.
    #[error("directory relay: {0}")]
    Allow(#[from] AllowError),
    /// Some allowed host is a name and no nameserver was given.
    #[error("directory relay: the directory is named by host name but no nameserver was given")]
    NoNameservers,
    /// The SDK's HTTP cannot be routed through this relay.
    #[error("directory relay: {0}")]
    Route(#[from] RouteError),
}

/// Why one connection was not relayed (logged, counted, never fatal to the relay).
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Sniff(#[from] SniffError),
    #[error("no ClientHello or request head within 5 s")]
    SniffTimeout,
    #[error("closed before a ClientHello or request head was complete")]
    ClosedEarly,
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("cannot connect to {host} port {port}: {details}")]
    Dial { host: String, port: u16, details: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Counters since the relay started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounts {
    /// Connections accepted on the socket.
    pub accepted: u64,
    /// Connections relayed to an allowed host (counted once the splice ends).
    pub relayed: u64,
    /// Connections refused: a host not allowed, or bytes that are no ClientHello or request head.
    pub refused: u64,
    /// Connections that failed otherwise: resolution, dial, I/O, timeouts.
    pub failed: u64,
    /// Connections closed at once because [`MAX_CONNECTIONS`] were open.
    pub busy: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    relayed: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    busy: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    allow: Allowlist,
    resolver: Option<Resolver>,
    mark: Option<u32>,
    counters: Counters,
}

/// The running relay. Dropping it stops the relay and removes its socket: the SDK's requests
/// then fail (closed), they never go around it.
#[derive(Debug)]
pub struct RelayHandle {
    path: PathBuf,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The counters so far.
    pub fn counts(&self) -> RelayCounts {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayCounts {
            accepted: get(&c.accepted),
            relayed: get(&c.relayed),
            refused: get(&c.refused),
            failed: get(&c.failed),
            busy: get(&c.busy),
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.task.abort(); // and with it every connection task (its JoinSet)
        let _ = fs::remove_file(&self.path);
    }
}

/// Starts the relay in `dir` (root's alone, e.g. the run dir) and routes the SDK's HTTP through
/// it from now on: every outgoing socket gets `mark`, only `allow` is reachable, names are
/// resolved by `nameservers` (port 53). Call once, before the first directory request.
pub fn start(
    dir: &Path,
    mark: u32,
    allow: Vec<(String, u16)>,
    nameservers: Vec<IpAddr>,
) -> Result<RelayHandle, RelayError> {
    let nameservers = nameservers.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect();
    start_with(dir, RelayConfig { mark: Some(mark), allow, nameservers })
}

/// [`start`] with every setting explicit (tests use an unmarked relay and a nameserver port).
pub fn start_with(dir: &Path, config: RelayConfig) -> Result<RelayHandle, RelayError> {
    let handle = spawn(dir, config)?;
    route_through(&handle.path)?; // on error the handle drops: the socket goes
    tracing::info!(socket = %handle.path.display(), "the SDK's directory requests go through the relay");
    Ok(handle)
}

/// Starts the relay without routing the SDK's HTTP through it.
pub fn spawn(dir: &Path, config: RelayConfig) -> Result<RelayHandle, RelayError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| RelayError::NoRuntime)?;
    let allow = Allowlist::new(config.allow)?;
    let resolver = match Resolver::new(config.nameservers, config.mark, RESOLVE_TIMEOUT) {
        Ok(r) => Some(r),
        Err(_) if !allow.has_names() => None,
        Err(_) => return Err(RelayError::NoNameservers),
    };
    check_private(dir)?;
    let path = dir.join(SOCKET_NAME);
    remove_stale_socket(&path)?;
    let bind_err = |source| RelayError::Bind { path: path.clone(), source };
    let listener = {
        let _guard = runtime.enter();
        UnixListener::bind(&path).map_err(bind_err)?
    };
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    let shared = Arc::new(Shared { allow, resolver, mark: config.mark, counters: Counters::default() });
    tracing::debug!(allow = ?shared.allow.entries(), mark = ?config.mark, "directory relay listening");
    let task = runtime.spawn(serve(listener, shared.clone()));
    Ok(RelayHandle { path, shared, task })
}

/// The directory must be ours, a real directory, and closed to group and others.
fn check_private(dir: &Path) -> Result<(), RelayError> {
    let unsafe_dir = |why: String| RelayError::UnsafeDir { path: dir.to_path_buf(), why };
    let meta = fs::symlink_metadata(dir).map_err(|e| unsafe_dir(e.to_string()))?;
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory (or a symlink)".into()));
    }
    // SAFETY: geteuid cannot fail and has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(unsafe_dir(format!("owned by uid {}, not {euid}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!("mode {:o}, group or others have access", meta.mode() & 0o7777)));
    }
    Ok(())
}

/// A socket left by a relay that died is removed; anything else at the path is an error.
fn remove_stale_socket(path: &Path) -> Result<(), RelayError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            fs::remove_file(path).map_err(|source| RelayError::Bind { path: path.to_path_buf(), source })
        }
        Ok(_) => Err(RelayError::Bind {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "something other than a socket is there"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RelayError::Bind { path: path.to_path_buf(), source }),
    }
}

async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let conn = match accepted {
                    Ok((conn, _)) => conn,
                    Err(e) => {
                        // EMFILE and the like: wait a little rather than spin.
                        tracing::warn!(%e, "directory relay: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let c = &shared.counters;
                c.accepted.fetch_add(1, Ordering::Relaxed);
                if conns.len() >= MAX_CONNECTIONS {
                    c.busy.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("directory relay: {MAX_CONNECTIONS} connections open, closing a new one");
                    continue; // dropping `conn` closes it
                }
                let shared = shared.clone();
                conns.spawn(async move { finish(relay_one(conn, &shared).await, &shared) });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn finish(result: Result<(String, u16, u64, u64), ConnError>, shared: &Shared) {
    let c = &shared.counters;
    match result {
        Ok((host, port, up, down)) => {
            c.relayed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%host, port, up, down, "directory relay: connection done");
        }
        Err(e @ (ConnError::Refused(_) | ConnError::Sniff(_))) => {
            c.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "directory relay: connection refused");
        }
        Err(e) => {
            c.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "directory relay: connection failed");
        }
    }
}

/// One connection, start to end: (host, port, bytes up, bytes down).
async fn relay_one(mut conn: UnixStream, shared: &Shared) -> Result<(String, u16, u64, u64), ConnError> {
    let mut buf = vec![0u8; MAX_SNIFF];
    let (len, target) = tokio::time::timeout(SNIFF_TIMEOUT, read_target(&mut conn, &mut buf))
        .await
        .map_err(|_| ConnError::SniffTimeout)??;
    let (host, port) = shared.allow.admit(&target)?;
    let addrs = match &shared.resolver {
        Some(r) => r.lookup(&host).await?,
        None => vec![host.parse::<IpAddr>().map_err(|_| ResolveError::NoServers)?],
    };
    let mut upstream = dial(&host, port, &addrs, shared.mark).await?;
    upstream.write_all(&buf[..len]).await?;
    drop(buf);
    match tokio::time::timeout(MAX_LIFETIME, tokio::io::copy_bidirectional(&mut conn, &mut upstream)).await {
        Ok(Ok((up, down))) => Ok((host, port, up + len as u64, down)),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "open past the relay's lifetime cap").into()),
    }
}

/// Reads until the sniffer has a verdict: (bytes read, target).
async fn read_target(conn: &mut UnixStream, buf: &mut [u8]) -> Result<(usize, sniff::Target), ConnError> {
    let mut len = 0;
    loop {
        let Some(free) = buf.get_mut(len..).filter(|f| !f.is_empty()) else {
            return Err(SniffError::TooLarge(MAX_SNIFF).into());
        };
        let n = conn.read(free).await?;
        if n == 0 {
            return Err(ConnError::ClosedEarly);
        }
        len += n;
        if let Sniffed::Found(target) = sniff::sniff(&buf[..len])? {
            return Ok((len, target));
        }
    }
}

/// A TCP connection to the first of `addrs` that answers, from a socket marked before
/// `connect` (a socket that cannot be marked is not used: it would leave through the tunnel's
/// routes, or be dropped by the kill switch).
async fn dial(host: &str, port: u16, addrs: &[IpAddr], mark: Option<u32>) -> Result<TcpStream, ConnError> {
    let mut failures = Vec::new();
    for &ip in addrs.iter().take(MAX_DIAL_ADDRS) {
        let addr = SocketAddr::new(ip, port);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect_marked(addr, mark)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
            Err(_) => failures.push(format!("{addr}: no answer within {} s", CONNECT_TIMEOUT.as_secs())),
        }
    }
    Err(ConnError::Dial { host: host.to_string(), port, details: failures.join("; ") })
}

/// `socket`, `SO_MARK`, `connect`, in that order.
pub(crate) async fn connect_marked(addr: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    let sock = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(mark) = mark {
        socket::set(sock.as_fd(), Opt::Mark, mark)?;
    }
    sock.connect(addr).await
}

#[cfg(test)]
mod tests;
