//! [`MixnetTransport`]: a `MixnetClient` in message mode behind the transport contract.
//!
//! Uplink: [`MixnetTransport::send`] wraps the session's bytes in
//! `InputMessage::new_anonymous(ipr, bytes, reply_surbs, TransmissionLane::General, None)` and
//! hands it to the client's input channel (a clone from `split_sender`). The SDK API takes an
//! owned `Vec`, so this is the one copy per message on this side. Retransmission is the SDK
//! default (unlimited, ack-driven, docs/ipr-protocol.md §4.6): uplink is reliable but may be late.
//!
//! Downlink: a task owns the client and moves each `ReconstructedMessage.message` (already an
//! owned `Vec`, no copy) into a bounded queue of [`RECV_QUEUE`] messages; full → drop + count.
//! Everything is passed up, including non-LP junk (the session counts it). [`RecvQueue`] copies
//! one message into the caller's buffer; one that does not fit is dropped and counted. The
//! same task disconnects the client when the transport is shut down or dropped.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nym_sdk::mixnet::{
    InputMessage, LaneQueueLengths, MixnetClientBuilder, MixnetClientSender, MixnetClientStorage, MixnetMessageSender,
    Recipient, StoragePaths, TransmissionLane,
};
use nym_sdk::ShutdownTracker;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::discovery::{lookup_protocol, unreachable};
use super::gateway::GatewayWatch;
use super::pacing::Pacer;
use super::sphinx::PacketCounts;
use super::surbs::ReplySupply;
use super::{error_chain, parse_recipient, MixnetClient, MixnetError, MixnetOptions};
use crate::ipr::MessageKind;
use crate::transport::Step;

/// Downlink messages buffered between the client and the driver: ~1 s of a saturated
/// downlink at 4 000 messages/s, far beyond what SURB supply allows (docs/performance.md §1.6).
pub const RECV_QUEUE: usize = 4096;
/// `disconnect` may wait 2 s for a remember-me message plus task shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest wait for the SDK to take one message. Its input channel fills when the gateway
/// stalls; waiting longer would stall the driver's loop (timers, downlink, SIGTERM) with it.
/// One second is several round trips of the local send pace and far beyond a healthy hand-off
/// (microseconds); the message is then dropped and counted, as the UDP path drops.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Counters, for `status --json`.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct MixnetStats {
    /// Messages from the exit handed to the session (taken from the receive queue).
    pub messages_in: u64,
    /// Bytes of those messages, LP header included.
    pub bytes_in: u64,
    /// Messages the SDK took for sending to the exit.
    pub messages_out: u64,
    /// Bytes of those messages, LP header included (SURBs and Sphinx overhead not counted).
    pub bytes_out: u64,
    /// Messages the SDK refused (its input channel is closed: the client has stopped).
    pub send_errors: u64,
    /// Messages dropped because the SDK did not take them within 1 s (a stalled gateway).
    pub send_timeouts: u64,
    /// Downlink messages dropped because the receive queue was full.
    pub recv_queue_drops: u64,
    /// Downlink messages dropped because they did not fit the caller's buffer.
    pub oversize_drops: u64,
    /// `--surbs`: SURBs the exit should hold beyond its reserve (a setting, shown in status).
    pub reply_surbs_spare: u64,
    /// Reply SURBs sent in all (data and control messages), and how many of them the exit
    /// should still hold by our count (sent minus downlink messages).
    pub reply_surbs_sent: u64,
    /// Reply SURBs the exit should still hold by our count: sent minus downlink messages.
    pub reply_surbs_outstanding: u64,
    /// Sphinx packets, as the SDK counts them (since this transport started).
    pub sphinx: PacketCounts,
    /// Packets waiting in the SDK's send queues (all lanes): the mixnet's own backlog.
    pub send_queue: u64,
    /// Messages waiting in the downlink queue for the driver.
    pub recv_queue: u64,
}

/// The live counters, shared between the transport, its receive queue and its receive task.
#[derive(Debug, Default)]
pub struct Counters {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    send_errors: AtomicU64,
    send_timeouts: AtomicU64,
    recv_queue_drops: AtomicU64,
    oversize_drops: AtomicU64,
}

impl Counters {
    fn snapshot(&self, reply_surbs: u32, supply: &ReplySupply) -> MixnetStats {
        MixnetStats {
            sphinx: PacketCounts::default(),
            send_queue: 0,
            recv_queue: 0,
            messages_in: self.messages_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            send_timeouts: self.send_timeouts.load(Relaxed),
            recv_queue_drops: self.recv_queue_drops.load(Relaxed),
            oversize_drops: self.oversize_drops.load(Relaxed),
            reply_surbs_spare: u64::from(reply_surbs),
            reply_surbs_sent: supply.given(),
            reply_surbs_outstanding: supply.outstanding(),
        }
    }
}

/// The receiving end of the bounded downlink queue.
#[derive(Debug)]
pub struct RecvQueue {
    rx: mpsc::Receiver<Vec<u8>>,
    counters: Arc<Counters>,
}

/// The task side: offers one reconstructed message; a full queue drops it.
pub fn offer(tx: &mpsc::Sender<Vec<u8>>, msg: Vec<u8>, counters: &Counters) {
    match tx.try_send(msg) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(m)) => {
            counters.recv_queue_drops.fetch_add(1, Relaxed);
            tracing::trace!(len = m.len(), "mixnet receive queue full, message dropped");
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

impl RecvQueue {
    /// A queue of at most `capacity` messages (at least 1) and the sender the task offers to.
    pub fn new(capacity: usize, counters: Arc<Counters>) -> (mpsc::Sender<Vec<u8>>, RecvQueue) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, RecvQueue { rx, counters })
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Waits for one message that fits `buf`. Cancel safe: a message is either returned or
    /// deliberately dropped, never lost half-way.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(msg) = self.rx.recv().await else { return Err(stopped()) };
            if let Some(n) = self.deliver(&msg, buf) {
                return Ok(n);
            }
        }
    }

    /// One more message if one is queued, `WouldBlock` otherwise.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.rx.try_recv() {
                Ok(msg) => {
                    if let Some(n) = self.deliver(&msg, buf) {
                        return Ok(n);
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(stopped()),
            }
        }
    }

    fn deliver(&self, msg: &[u8], buf: &mut [u8]) -> Option<usize> {
        let Some(dst) = buf.get_mut(..msg.len()) else {
            self.counters.oversize_drops.fetch_add(1, Relaxed);
            tracing::trace!(len = msg.len(), cap = buf.len(), "mixnet message larger than the buffer, dropped");
            return None;
        };
        dst.copy_from_slice(msg);
        self.counters.messages_in.fetch_add(1, Relaxed);
        self.counters.bytes_in.fetch_add(msg.len() as u64, Relaxed);
        Some(msg.len())
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the Nym mixnet client has stopped")
}

/// The uplink message for `msg`: anonymous (our address stays hidden from the IPR), with
/// `reply_surbs` SURBs for its answers, on the general lane, default packet type.
pub(crate) fn input_message(ipr: Recipient, msg: &[u8], reply_surbs: u32) -> InputMessage {
    InputMessage::new_anonymous(ipr, msg.to_vec(), reply_surbs, TransmissionLane::General, None)
}

/// Reply SURBs attached to a message of `kind`: control messages `control` (enough for an
/// immediate answer), data messages what the supply says (see [`super::surbs`]).
pub(crate) fn surbs_for(kind: MessageKind, control: u32, supply: &mut ReplySupply, now: Instant) -> u32 {
    match kind {
        // Exactly `control`: more than any data message carries (≤ 12), and a smaller setting
        // must really be small, to show what it costs (the bench's connect comparison).
        MessageKind::Control => control,
        MessageKind::Data => supply.for_data(now),
    }
}

/// Our own Nym client in message mode, sending to one IPR exit.
pub struct MixnetTransport {
    sender: MixnetClientSender,
    ipr: Recipient,
    reply_surbs: u32,
    control_surbs: u32,
    supply: ReplySupply,
    pacer: Pacer,
    /// The SDK's send queue lengths, per lane.
    lanes: LaneQueueLengths,
    queue: RecvQueue,
    counters: Arc<Counters>,
    /// The process-wide Sphinx counts when this transport started.
    packets_at_start: PacketCounts,
    gateway: Arc<GatewayWatch>,
    version_hint: Option<u8>,
    nym_address: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MixnetTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixnetTransport")
            .field("nym_address", &self.nym_address)
            .field("ipr", &self.ipr.to_string())
            .field("reply_surbs", &self.reply_surbs)
            .field("ipr_version_hint", &self.version_hint)
            .finish_non_exhaustive()
    }
}

impl MixnetTransport {
    /// Looks up the exit in the directory (its protocol version; this also proves the
    /// directory is reachable, within `directory_timeout`), then builds and connects our own
    /// client: ephemeral or persistent storage, `DebugConfig` from the traffic profile.
    pub async fn connect(ipr: &str, opts: &MixnetOptions) -> Result<Self, MixnetError> {
        opts.validate()?;
        let recipient = parse_recipient(ipr)?;
        let hint = lookup_protocol(opts, recipient.gateway()).await?;
        let gateway = Arc::new(GatewayWatch::with_mark(opts.socket_mark));
        let tracker = ShutdownTracker::default();
        let secs = opts.connect_timeout.as_secs();
        let client = match tokio::time::timeout(opts.connect_timeout, build(opts, &gateway, tracker.clone())).await {
            Ok(r) => r?,
            Err(_) => {
                // Stop whatever the half-built client spawned before reporting.
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.shutdown()).await;
                return Err(MixnetError::ConnectTimeout { secs });
            }
        };
        if gateway.mark_failures() > 0 {
            // Unmarked, its packets would enter the tunnel they carry once routes are in.
            client.disconnect().await;
            return Err(MixnetError::Mark);
        }
        let ws_fd = client.gateway_connection().gateway_ws_fd;
        gateway.set_fd(ws_fd);
        tracing::info!(nym_address = %client.nym_address(), ipr = %recipient, ?hint, "connected to the Nym mixnet");
        let peer = ws_fd.and_then(crate::transport::socket::peer_of);
        opts.progress.report(Step::Registered { address: client.nym_address().to_string(), peer });
        Self::start(client, recipient, opts, hint, gateway)
    }

    /// Wraps a caller-built client (`Tunnel::from_client`). Needs a tokio runtime. The client
    /// must still be in message mode (no `open_stream`/`listener` call: those switch it to
    /// stream mode for good and `recv` would report it stopped). The exit's release is looked up
    /// in the directory of `opts`, so that a v9 exit is not first asked for v10 (a 15 s wait);
    /// if that directory cannot be asked, the session probes v10 then v9 by itself.
    pub async fn from_client(client: MixnetClient, ipr: &str, opts: &MixnetOptions) -> Result<Self, MixnetError> {
        opts.validate()?;
        let recipient = parse_recipient(ipr)?;
        let hint = match lookup_protocol(opts, recipient.gateway()).await {
            Ok(hint) => hint,
            Err(MixnetError::DirectoryUnreachable { url, reason }) => {
                tracing::warn!(%url, %reason, "cannot look the exit up; probing IPR v10, then v9");
                None
            }
            Err(e) => return Err(e),
        };
        let gateway = Arc::new(GatewayWatch::default());
        gateway.set_fd(client.gateway_connection().gateway_ws_fd);
        Self::start(client, recipient, opts, hint, gateway)
    }

    fn start(
        client: MixnetClient,
        ipr: Recipient,
        opts: &MixnetOptions,
        version_hint: Option<u8>,
        gateway: Arc<GatewayWatch>,
    ) -> Result<Self, MixnetError> {
        let reply_surbs = opts.reply_surbs;
        // A caller-built client's own profile is not readable; its options say which it is.
        let tick = opts.debug_config().traffic.message_sending_average_delay;
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| MixnetError::Client("a tokio runtime is needed to run the mixnet client".into()))?;
        let counters = Arc::new(Counters::default());
        let (tx, queue) = RecvQueue::new(RECV_QUEUE, counters.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        let sender = client.split_sender();
        let lanes = client.shared_lane_queue_lengths();
        let nym_address = client.nym_address().to_string();
        let task = rt.spawn(pump(client, tx, counters.clone(), stop_rx));
        Ok(MixnetTransport {
            sender,
            ipr,
            reply_surbs,
            control_surbs: opts.control_surbs,
            supply: ReplySupply::new(reply_surbs, Instant::now()),
            pacer: Pacer::new(tick),
            lanes,
            queue,
            counters,
            packets_at_start: PacketCounts::read(),
            gateway,
            version_hint,
            nym_address,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// Waits for one whole message from the exit; returns its length in `buf`. Fails once the
    /// client has stopped.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.queue.recv(buf).await?;
        self.supply.received(Instant::now());
        Ok(n)
    }

    /// One more message if one is already queued (`WouldBlock` otherwise).
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.queue.try_recv(buf)?;
        self.supply.received(Instant::now());
        Ok(n)
    }

    /// Sends one message; a failure is counted and logged, never returned (the session
    /// notices a dead exit; a stopped client also ends `recv`). A control message carries
    /// enough SURBs for the IPR to answer at once (see
    /// [`super::options::CONTROL_REPLY_SURBS`]).
    pub async fn send(&mut self, msg: &[u8], kind: MessageKind) {
        let surbs = surbs_for(kind, self.control_surbs, &mut self.supply, Instant::now());
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.sender.send(input_message(self.ipr, msg, surbs))).await;
        let Ok(sent) = sent else {
            self.counters.send_timeouts.fetch_add(1, Relaxed);
            tracing::debug!("the mixnet client did not take a message within {SEND_TIMEOUT:?}; dropped");
            return;
        };
        match sent {
            Ok(()) => {
                self.supply.sent(surbs);
                if kind == MessageKind::Data {
                    self.pacer.sent(Instant::now());
                }
                self.counters.messages_out.fetch_add(1, Relaxed);
                self.counters.bytes_out.fetch_add(msg.len() as u64, Relaxed);
            }
            Err(e) => {
                self.counters.send_errors.fetch_add(1, Relaxed);
                tracing::debug!(e = %error_chain(&e), "mixnet send failed");
            }
        }
    }

    /// Whether a data message may go now (see [`super::pacing`]); control messages always may.
    pub fn ready(&self) -> bool {
        self.pacer.ready(self.lanes.total(), Instant::now())
    }

    /// How long to wait before asking [`MixnetTransport::ready`] again.
    pub fn retry_after(&self) -> Duration {
        self.pacer.retry_after()
    }

    /// How often the client reconnected to its entry gateway (a caller-built client does not
    /// report it: always 0).
    pub fn gateway_reconnections(&self) -> u64 {
        self.gateway.reconnections()
    }

    /// The entry gateway the client is connected to now (`status`); see [`super::gateway`].
    pub fn peer(&self) -> Option<SocketAddr> {
        self.gateway.peer()
    }

    /// The counters so far.
    pub fn stats(&self) -> MixnetStats {
        MixnetStats {
            sphinx: PacketCounts::read().since(self.packets_at_start),
            send_queue: self.lanes.total() as u64,
            recv_queue: self.queue.len() as u64,
            ..self.counters.snapshot(self.reply_surbs, &self.supply)
        }
    }

    /// 10 or 9 if the directory told us the exit's release at connect time.
    pub fn ipr_version_hint(&self) -> Option<u8> {
        self.version_hint
    }

    /// Our own Nym address (ephemeral unless a storage directory was given).
    pub fn nym_address(&self) -> &str {
        &self.nym_address
    }

    /// Stops the receive task and disconnects the client (bounded wait).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("mixnet client did not stop within {} s", SHUTDOWN_GRACE.as_secs());
            }
        }
    }
}

/// Builds and connects the client; storage decides the builder's type, hence the generic tail.
async fn build(
    opts: &MixnetOptions,
    gateway: &Arc<GatewayWatch>,
    tracker: ShutdownTracker,
) -> Result<MixnetClient, MixnetError> {
    let net = opts.network_details()?;
    let watch = gateway.clone();
    let progress = opts.progress.clone();
    let on_fd: Arc<dyn Fn(std::os::fd::RawFd) + Send + Sync> = Arc::new(move |fd| {
        progress.report(Step::Gateway);
        watch.on_connection(fd)
    });
    let result = match &opts.storage_dir {
        None => {
            let b = MixnetClientBuilder::new_ephemeral();
            finish(b, opts, net, tracker, on_fd).await
        }
        Some(dir) => {
            let storage = |reason: String| MixnetError::Storage { path: dir.clone(), reason };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700) // private keys live here
                .create(dir)
                .map_err(|e| storage(e.to_string()))?;
            let paths = StoragePaths::new_from_dir(dir).map_err(|e| storage(error_chain(&e)))?;
            let b = MixnetClientBuilder::new_with_default_storage(paths).await.map_err(|e| storage(error_chain(&e)))?;
            finish(b, opts, net, tracker, on_fd).await
        }
    };
    result.map_err(|e| classify(opts, e))
}

async fn finish<S>(
    b: MixnetClientBuilder<S>,
    opts: &MixnetOptions,
    net: nym_sdk::NymNetworkDetails,
    tracker: ShutdownTracker,
    on_fd: Arc<dyn Fn(std::os::fd::RawFd) + Send + Sync>,
) -> Result<MixnetClient, nym_sdk::Error>
where
    S: MixnetClientStorage + Clone + 'static,
{
    // Gateways are dialled by IP address only: a reconnect in a full tunnel must not depend on
    // resolving the gateway's hostname, i.e. on DNS through the very tunnel being repaired.
    let b = match &opts.gateway {
        Some(gw) => b.request_gateway(gw.clone()),
        None => b,
    };
    b.network_details(net)
        .no_hostname(true)
        .debug_config(opts.debug_config())
        .custom_shutdown(tracker)
        .with_connection_fd_callback(on_fd)
        .build()?
        .connect_to_mixnet()
        .await
}

/// SDK start-up errors that come from the directory are reported as such.
fn classify(opts: &MixnetOptions, e: nym_sdk::Error) -> MixnetError {
    let text = error_chain(&e);
    let lower = text.to_lowercase();
    if ["nym api", "nym-api", "api directory", "validator", "topology"].iter().any(|k| lower.contains(k)) {
        unreachable(opts, text)
    } else {
        MixnetError::Client(text)
    }
}

/// Owns the client: downlink into the queue, disconnect at the end.
async fn pump(
    mut client: MixnetClient,
    tx: mpsc::Sender<Vec<u8>>,
    counters: Arc<Counters>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            // Err too: the transport was dropped without shutdown().
            _ = &mut stop => break,
            batch = client.wait_for_messages() => match batch {
                Some(msgs) => {
                    for m in msgs {
                        offer(&tx, m.message, &counters);
                    }
                }
                None => {
                    tracing::warn!("the Nym mixnet client stopped delivering messages");
                    break;
                }
            },
        }
    }
    drop(tx); // recv() now reports the stop
    client.disconnect().await;
}

#[cfg(test)]
mod tests;
