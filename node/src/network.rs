//! Peer-to-peer transport between member nodes: libp2p over TCP, noise, yamux.
//!
//! Only peers whose identity key is listed in the genesis (validators and
//! observers) may connect; others are refused at the connection layer.
//! Traffic goes directly to each peer (no gossip mesh): consensus messages
//! (from validators' nodes only) and batches of transactions on their way to
//! the proposer on one long-lived stream per peer ([`push`]), block sync as
//! requests with responses (a peer may send the others as requests too, as
//! older nodes do). Every frame is length-prefixed and capped; the frames of
//! a connection's requests, and those of a peer's push streams, held in
//! memory (being read or waiting to be handled) never exceed their budget of
//! bytes; a peer has at most two connections and a rate limit; a peer that
//! keeps sending what is refused is disconnected and kept out for a while.
//! Sync requests are answered here from storage; everything else goes to the
//! driver, and transactions straight to the mempool.

use crate::consensus::Message;
use crate::mempool::{Batcher, Mempool, NotAdmitted};
use crate::metrics::{CodeLabels, Metrics};
use crate::storage::Storage;
use libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, allow_block_list, connection_limits, identity, noise, tcp,
    yamux,
};
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use trellis_types::codec::{decode, encode};
use trellis_types::{Block, Bytes, DuplicateVote, Hash, PublicKey, QuorumCertificate};

/// The request protocol, named with the wire version. Bump the version here
/// and in [`push::PROTOCOL`] with any change to what crosses the wire (the
/// messages or the types they carry), so that nodes of two releases refuse
/// each other's streams rather than strike each other for bytes they cannot
/// read. Version 2: equivocation evidence passed on, headers that commit to
/// their whole body. Version 3: governance transactions (`SystemOp::Propose`,
/// `Approve`) in place of `upgrade_contract`.
const PROTOCOL: StreamProtocol = StreamProtocol::new("/trellis/3");
/// Blocks per sync response at most.
pub const SYNC_BATCH: u32 = 64;
/// Sync requests read from storage at once; more are refused as busy.
const SYNC_READS: usize = 2;
/// Requests a peer may send per second on average, and in a burst. An
/// honest peer sends a few dozen a second (a batch of transactions every
/// [`FORWARD_INTERVAL`], a few consensus messages per block).
const RATE_PER_SEC: f64 = 1_000.0;
const RATE_BURST: f64 = 2_000.0;
/// Refusals (malformed, mis-signed, over the rate) within [`STRIKE_WINDOW`]
/// before a peer is disconnected.
const STRIKES: u32 = 100;
/// Strikes older than this are forgiven, so an honest peer's rare refused
/// message (a race around a commit, say) never adds up to a ban over days.
const STRIKE_WINDOW: Duration = Duration::from_secs(60);
/// How long a disconnected offender is kept out.
const BAN: Duration = Duration::from_secs(60);
/// Peers' transaction batches being admitted at once, at most. More are
/// dropped (the peer keeps them in its own mempool and proposes them
/// itself), so no member can queue unbounded work behind the admission checks.
const PEER_BATCHES_IN_FLIGHT: usize = 64;
/// Of those, one peer's at most, so a flooding member cannot take every
/// place and have the other members' batches dropped.
const PEER_BATCHES_PER_PEER: usize = 16;
/// Connections one peer may hold at once: two, for when both sides dial at
/// the same moment. More would multiply what a peer can have in flight.
const CONNECTIONS_PER_PEER: u32 = 2;
/// A connection's frames held in memory at once, being read or waiting to be
/// handled: this many of the largest frame (36 MiB with 8 MiB blocks).
const FRAME_BUDGET_FRAMES: usize = 4;
/// Requests a connection may have in flight at once, both ways; a peer's
/// stream beyond them is dropped. A stream waiting for its frame's budget may
/// still have yamux buffer up to 256 KiB of its body, so this also bounds
/// what sits outside the budget (32 MiB a connection, and as much again for
/// the at most 128 streams libp2p lets negotiate their protocol at once).
/// yamux's own limit (512) stays above it: past that yamux closes the
/// connection.
const STREAMS_PER_CONNECTION: usize = 128;
/// How long transactions admitted by this node's API gather before they are
/// forwarded to the other members, together. Each forwarded batch is a
/// request to every peer and a signature check there, which cost nearly as
/// much for a few transactions as for dozens: four validators at 800 ops/s
/// spend 14 % less CPU forwarding every 50 ms than every 20 ms, and at
/// 2,500 ops/s (the machine nearly saturated) their p99 latency over the
/// same hour was 320-570 ms instead of 500-1,230 (docs/benchmarks.md,
/// "Forwarding every 50 ms"). A transaction waits 25 ms on average, a
/// fraction of a block interval.
const FORWARD_INTERVAL: Duration = Duration::from_millis(50);
/// An observer's node sends what its API admitted again when it still waits
/// this long after it was sent, then after twice as long each time, up to
/// [`RESEND_MAX`]: it never proposes, and when every validator dropped the
/// batch (busy, or its push queue full) no one else sends it again, so the
/// transaction, and its sender's later nonces behind it, would wait until
/// they expire. A validator that has it refuses the copy as already known
/// before checking its signature.
const RESEND_AFTER: Duration = Duration::from_secs(5);
const RESEND_MAX: Duration = Duration::from_secs(60);
/// Transactions an observer's node sends again per forward, at most (5,120
/// a second); what else is due waits for the next.
const RESEND_PER_TICK: usize = 256;
/// No transaction encodes shorter: a sender key (32 bytes) and a signature
/// (64) at least.
const MIN_TX_BYTES: usize = 96;
/// Transactions in one forwarded batch, at most: what the admission thread
/// checks with one batch equation. A batch with a bad signature is refused
/// whole and strikes its sender once, so this bounds the signature checks a
/// member can cost the node per strike.
const MAX_FORWARDED_TXS: usize = crate::mempool::MAX_BATCH;
/// Messages waiting for the driver. The network task never waits for a
/// place for a consensus message: each validator's may hold an even share
/// of half the queue, and one past its share is dropped, so a validator
/// sending at its rate limit through a long pause of the driver (applying
/// synced blocks, say) loses only its own messages and cannot stop the
/// network task for every peer. A lost message costs a round at worst; the
/// driver catches up by sync. The rest of the queue is for what the
/// network task does wait on, and has little of: answers to this node's own
/// sync requests (one at a time) and peer counts.
const DRIVER_QUEUE: usize = 10_000;
/// Frames read from peers' push streams waiting for the network task; a
/// reader waits while it is full.
const PUSH_EVENTS: usize = 1_024;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Request {
    Consensus(Message),
    Transactions(TxBatch),
    /// Committed blocks from `from` on, at most `max`.
    Sync {
        from: u64,
        max: u32,
    },
    /// A proof that a validator equivocated, sent on by every node that
    /// keeps it new (docs/consensus.md, "Equivocation evidence").
    Evidence(Box<DuplicateVote>),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Response {
    Ack,
    Blocks(Vec<(Block, QuorumCertificate)>),
    Refused(String),
}

/// Encoded transactions a peer forwards, at most [`MAX_FORWARDED_TXS`].
/// Decoding refuses more, and an entry shorter than any transaction, so a
/// frame cannot decode to many times its size (an empty entry is one byte on
/// the wire and 24 in memory).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct TxBatch(pub Vec<Bytes>);

impl<'de> serde::Deserialize<'de> for TxBatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = TxBatch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(
                    f,
                    "at most {MAX_FORWARDED_TXS} encoded transactions of at least \
                     {MIN_TX_BYTES} bytes each"
                )
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TxBatch, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element::<Bytes>()? {
                    if entry.len() < MIN_TX_BYTES {
                        return Err(serde::de::Error::invalid_length(entry.len(), &self));
                    }
                    if entries.len() == MAX_FORWARDED_TXS {
                        return Err(serde::de::Error::invalid_length(entries.len() + 1, &self));
                    }
                    entries.push(entry);
                }
                Ok(TxBatch(entries))
            }
        }
        d.deserialize_seq(Entries)
    }
}

/// What the network hands the driver.
#[derive(Debug)]
pub enum Inbound {
    Consensus {
        from: PeerId,
        message: Message,
        /// The message's share of the frame budget, returned when this is dropped.
        held: Option<FrameBytes>,
        /// Its place in the sender's share of the driver's queue, likewise.
        place: OwnedSemaphorePermit,
    },
    Blocks {
        from: PeerId,
        blocks: Vec<(Block, QuorumCertificate)>,
        held: Option<FrameBytes>,
    },
    Evidence {
        from: PeerId,
        proof: Box<DuplicateVote>,
        /// Its place in the sender's share of the driver's queue.
        place: OwnedSemaphorePermit,
    },
    Peers(usize),
}

/// What the driver asks of the network.
#[derive(Debug)]
pub enum Outbound {
    Broadcast(Message),
    /// Ask `peer` (or the next connected peer in turn) for blocks from
    /// `from` on.
    Sync {
        peer: Option<PeerId>,
        from: u64,
    },
    /// `peer` sent something consensus refused.
    Strike(PeerId),
    /// Proof of an equivocation this node keeps new: to every peer.
    Evidence(Box<DuplicateVote>),
}

pub struct NetworkConfig {
    pub listen: Multiaddr,
    pub dial: Vec<Multiaddr>,
    /// This node's identity (the ed25519 node key).
    pub identity: identity::Keypair,
    /// Node keys of every member node in the genesis, validators and observers.
    pub members: Vec<PublicKey>,
    /// Node keys of the validators: only their nodes send consensus messages.
    pub validators: Vec<PublicKey>,
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
}

/// The libp2p peer id of an ed25519 node key.
pub fn peer_id(key: &PublicKey) -> Option<PeerId> {
    let key = identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(identity::PublicKey::from(key).to_peer_id())
}

/// The libp2p identity of a node key seed.
pub fn identity_from_seed(seed: [u8; 32]) -> identity::Keypair {
    let mut seed = seed;
    identity::Keypair::ed25519_from_bytes(&mut seed)
        .expect("any 32 bytes are an ed25519 secret key")
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    rpc: request_response::Behaviour<Codec>,
    push: libp2p_stream::Behaviour,
}

/// One frame's share of its connection's budget, given back when dropped.
#[derive(Debug)]
pub struct FrameBytes {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    held: Gauge,
}

impl Drop for FrameBytes {
    fn drop(&mut self) {
        self.held.dec_by(self.bytes);
    }
}

/// A message read off the wire (decoded, or why it was refused) with the
/// budget its bytes hold; or one of ours on its way out, which holds none.
/// A refusal is a value rather than an I/O error because libp2p drops failed
/// reads silently, and the node must count them against the peer.
#[derive(Debug)]
struct Frame<T> {
    message: Result<T, String>,
    held: Option<FrameBytes>,
}

impl<T> Frame<T> {
    fn outgoing(message: T) -> Self {
        Frame {
            message: Ok(message),
            held: None,
        }
    }
}

/// Length-prefixed canonical encoding, capped at `max` bytes a frame.
///
/// Each connection has a budget of bytes for its frames in memory. A frame
/// takes its length before its body is read (waiting while the budget is
/// spent) and gives it back when its message is dropped, after it has been
/// handled, so no number of streams or queued messages makes the node hold
/// more for a connection; and a peer that spends its budget, by flooding or by
/// claiming frames it never sends, stalls only its own connection.
struct Codec {
    max: usize,
    /// This connection's budget; `None` in the behaviour's own codec, which
    /// only makes the connections' codecs.
    budget: Option<Arc<Semaphore>>,
    /// Bytes taken over all connections, for `trellis_network_frame_bytes`.
    held: Gauge,
}

/// libp2p clones the behaviour's codec once for each connection, and that
/// clone once for each of the connection's streams: the first clone opens a
/// budget of its own, which the streams' clones share. (Were libp2p to clone
/// the behaviour's codec for every stream instead, each frame would have a
/// budget of its own; `a_member_cannot_make_the_node_hold_more_than_the_frame_budget`
/// would catch it.)
impl Clone for Codec {
    fn clone(&self) -> Self {
        let budget = self
            .budget
            .clone()
            .unwrap_or_else(|| Arc::new(Semaphore::new(FRAME_BUDGET_FRAMES * self.max)));
        Codec {
            max: self.max,
            budget: Some(budget),
            held: self.held.clone(),
        }
    }
}

impl Codec {
    /// Takes `bytes` from the connection's budget, waiting while it is spent.
    async fn take(&self, bytes: usize) -> Option<FrameBytes> {
        let permit = self
            .budget
            .clone()?
            .acquire_many_owned(bytes as u32)
            .await
            .expect("a budget is never closed");
        self.held.inc_by(bytes as i64);
        Some(FrameBytes {
            _permit: permit,
            bytes: bytes as i64,
            held: self.held.clone(),
        })
    }

    async fn read<T, V>(&self, io: &mut T) -> io::Result<Frame<V>>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
        V: serde::Serialize + serde::de::DeserializeOwned,
    {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max {
            // Refused on the length alone: the body is never read.
            return Ok(Frame {
                message: Err(format!("frame of {len} bytes exceeds {}", self.max)),
                held: None,
            });
        }
        let held = self.take(len).await;
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        Ok(Frame {
            message: decode(&buf).map_err(|e| format!("malformed frame: {e}")),
            held,
        })
    }

    async fn write<T, V>(&self, io: &mut T, frame: &Frame<V>) -> io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
        V: serde::Serialize,
    {
        let Ok(value) = &frame.message else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a refusal is never sent",
            ));
        };
        let Some(bytes) = encode_frame(value, self.max) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame too large to send",
            ));
        };
        io.write_all(&bytes).await?;
        io.flush().await
    }
}

/// `value` as it goes on the wire (its length, then its encoding), or `None`
/// when its encoding is larger than `max` bytes.
fn encode_frame<V: serde::Serialize>(value: &V, max: usize) -> Option<Vec<u8>> {
    let body = encode(value);
    if body.len() > max {
        return None;
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Some(frame)
}

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Frame<Request>;
    type Response = Frame<Response>;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Frame<Request>>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        self.read(io).await
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Frame<Response>>
    where
        T: libp2p::futures::AsyncRead + Unpin + Send,
    {
        self.read(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame<Request>,
    ) -> io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        self.write(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Frame<Response>,
    ) -> io::Result<()>
    where
        T: libp2p::futures::AsyncWrite + Unpin + Send,
    {
        self.write(io, &res).await
    }
}

/// A token bucket per peer, plus its count of refused messages.
struct PeerBudget {
    tokens: f64,
    last: Instant,
    strikes: u32,
    /// When the current strike window began.
    strikes_since: Instant,
}

impl PeerBudget {
    fn new() -> Self {
        PeerBudget {
            tokens: RATE_BURST,
            last: Instant::now(),
            strikes: 0,
            strikes_since: Instant::now(),
        }
    }

    /// Counts a refusal at `now`; true once there are [`STRIKES`] within one window.
    fn strike(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.strikes_since) > STRIKE_WINDOW {
            self.strikes = 0;
            self.strikes_since = now;
        }
        self.strikes += 1;
        self.strikes >= STRIKES
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + (now - self.last).as_secs_f64() * RATE_PER_SEC).min(RATE_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct NetworkHandle {
    pub outbound: mpsc::Sender<Outbound>,
    pub local_peer_id: PeerId,
}

/// Starts the network task. Returns the handle for the driver and the stream of what arrives.
pub fn spawn(
    config: NetworkConfig,
    storage: Storage,
    mempool: Arc<Mempool>,
    admission: Batcher,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(NetworkHandle, mpsc::Receiver<Inbound>)> {
    let local_peer_id = config.identity.public().to_peer_id();
    let mut allowed = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
    let mut members = BTreeSet::new();
    for key in &config.members {
        if let Some(peer) = peer_id(key).filter(|p| *p != local_peer_id) {
            allowed.allow_peer(peer);
            members.insert(peer);
        }
    }
    let validators: BTreeSet<PeerId> = config.validators.iter().filter_map(peer_id).collect();
    let max_frame_bytes = config.max_frame_bytes;
    // Requests' and push streams' codecs: each connection or peer budgets a clone.
    let codec = || Codec {
        max: max_frame_bytes,
        budget: None,
        held: metrics.network_frame_bytes.clone(),
    };
    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER)),
    );
    let rpc = request_response::Behaviour::with_codec(
        codec(),
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(30))
            .with_max_concurrent_streams(STREAMS_PER_CONNECTION),
    );
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.identity)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| Behaviour {
            allowed,
            limits,
            rpc,
            push: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm.listen_on(config.listen.clone())?;
    let mut control = swarm.behaviour().push.new_control();
    let incoming = control
        .accept(push::PROTOCOL)
        .expect("the push protocol is registered once");
    let (push_tx, push_rx) = mpsc::channel(PUSH_EVENTS);
    tokio::spawn(push::accept(incoming, codec(), push_tx.clone()));
    let writers = push::Writers::new(
        control,
        push_tx,
        metrics.network_push_dropped.clone(),
        FRAME_BUDGET_FRAMES * max_frame_bytes,
    );
    info!(peer_id = %local_peer_id, listen = %config.listen, members = members.len(), "peer-to-peer transport up");

    let (out_tx, out_rx) = mpsc::channel(10_000);
    let (in_tx, in_rx) = mpsc::channel(DRIVER_QUEUE);
    let driver_share = (DRIVER_QUEUE / 2 / validators.len().max(1)).max(1);
    let (served_tx, served_rx) = mpsc::channel(SYNC_READS);
    let (faults_tx, faults_rx) = mpsc::channel(PEER_BATCHES_IN_FLIGHT);
    let task = NetworkTask {
        swarm,
        dial: config.dial,
        members,
        validators,
        connected: BTreeSet::new(),
        budgets: BTreeMap::new(),
        banned: BTreeMap::new(),
        storage,
        mempool,
        admission,
        peer_batches: Arc::new(Semaphore::new(PEER_BATCHES_IN_FLIGHT)),
        batches_of: BTreeMap::new(),
        metrics,
        inbound: in_tx,
        resend: BTreeMap::new(),
        driver_places: BTreeMap::new(),
        driver_share,
        max_frame_bytes,
        writers,
        requests_only: BTreeMap::new(),
        other_version: BTreeSet::new(),
        sync_reads: Arc::new(Semaphore::new(SYNC_READS)),
        syncs_read_for: BTreeSet::new(),
        syncs_delivering: BTreeMap::new(),
        syncs_asked: BTreeSet::new(),
        last_asked: None,
        sync_served: served_tx,
        batch_faults: faults_tx,
    };
    tokio::spawn(task.run(out_rx, push_rx, served_rx, faults_rx));
    Ok((
        NetworkHandle {
            outbound: out_tx,
            local_peer_id,
        },
        in_rx,
    ))
}

struct NetworkTask {
    swarm: libp2p::Swarm<Behaviour>,
    dial: Vec<Multiaddr>,
    members: BTreeSet<PeerId>,
    validators: BTreeSet<PeerId>,
    connected: BTreeSet<PeerId>,
    budgets: BTreeMap<PeerId, PeerBudget>,
    banned: BTreeMap<PeerId, Instant>,
    storage: Storage,
    mempool: Arc<Mempool>,
    admission: Batcher,
    /// Places for peers' transaction batches being admitted.
    peer_batches: Arc<Semaphore>,
    /// Each member's own share of those places.
    batches_of: BTreeMap<PeerId, Arc<Semaphore>>,
    metrics: Arc<Metrics>,
    inbound: mpsc::Sender<Inbound>,
    /// What an observer's node sent, by when to send it again if it still
    /// waits, with how long it waited since it was last sent.
    resend: BTreeMap<(Instant, Hash), Duration>,
    /// Each validator's share of the driver's queue ([`DRIVER_QUEUE`]).
    driver_places: BTreeMap<PeerId, Arc<Semaphore>>,
    driver_share: usize,
    max_frame_bytes: usize,
    writers: push::Writers,
    /// Connected peers that do not speak the push protocol, sent requests
    /// instead, with those not yet answered (at most
    /// [`STREAMS_PER_CONNECTION`]; more are dropped as a full push queue's are).
    requests_only: BTreeMap<PeerId, BTreeSet<request_response::OutboundRequestId>>,
    /// Connected peers found to speak another wire version, each warned of once.
    other_version: BTreeSet<PeerId>,
    /// Places for sync requests being read from storage ...
    sync_reads: Arc<Semaphore>,
    /// ... one per peer at most, held from the read until the answer is
    /// delivered (or fails) ...
    syncs_read_for: BTreeSet<PeerId>,
    /// ... the answers being delivered, by request.
    syncs_delivering: BTreeMap<request_response::InboundRequestId, PeerId>,
    /// Our sync requests not yet answered: only they may be answered with blocks.
    syncs_asked: BTreeSet<request_response::OutboundRequestId>,
    /// The peer last asked for blocks by [`Self::next_sync_peer`].
    last_asked: Option<PeerId>,
    /// Answers to sync requests, read off the network task, to be sent.
    sync_served: mpsc::Sender<SyncServed>,
    /// Peers whose forwarded batch held what no honest peer forwards (see
    /// `AdmissionError::blames_the_forwarder`), found off the network task.
    batch_faults: mpsc::Sender<(PeerId, &'static str)>,
}

/// Where the answer to a peer's request goes.
type ResponseChannel = request_response::ResponseChannel<Frame<Response>>;

/// A sync request's answer, read on a blocking thread: the request, where
/// the answer goes, and the answer.
struct SyncServed {
    peer: PeerId,
    request: request_response::InboundRequestId,
    channel: ResponseChannel,
    response: Response,
}

impl NetworkTask {
    async fn run(
        mut self,
        mut outbound: mpsc::Receiver<Outbound>,
        mut pushed: mpsc::Receiver<push::Event>,
        mut served: mpsc::Receiver<SyncServed>,
        mut batch_faults: mpsc::Receiver<(PeerId, &'static str)>,
    ) {
        let mut redial = tokio::time::interval(Duration::from_secs(2));
        let mut forward = tokio::time::interval(FORWARD_INTERVAL);
        loop {
            tokio::select! {
                command = outbound.recv() => match command {
                    Some(command) => self.on_command(command),
                    // The driver is gone: the node is stopping.
                    None => return,
                },
                event = self.swarm.select_next_some() => self.on_event(event).await,
                Some(event) = pushed.recv() => self.on_pushed(event).await,
                Some(served) = served.recv() => self.send_synced(served),
                Some((peer, code)) = batch_faults.recv() => {
                    self.strike(peer, code);
                }
                _ = redial.tick() => self.redial(),
                _ = forward.tick() => self.forward_transactions(),
            }
        }
    }

    fn redial(&mut self) {
        if self.connected.len() >= self.members.len() {
            return;
        }
        for addr in self.dial.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                debug!(%addr, error = %e, "dial failed");
            }
        }
    }

    /// Sends transactions admitted here by the API to every other member, so
    /// that whichever validator proposes next has them. At an observer's
    /// node they wait while no validator's node is connected: it never
    /// proposes what it admits, and its peers do not forward it again (the
    /// mempool holds the outbox to its byte cap); and what still waits
    /// [`RESEND_AFTER`] later is sent again.
    fn forward_transactions(&mut self) {
        let observer = !self.validators.contains(self.swarm.local_peer_id());
        if observer && self.connected.is_disjoint(&self.validators) {
            return;
        }
        let now = Instant::now();
        let mut txs = Vec::new();
        for (hash, bytes) in self.mempool.take_outbox() {
            if observer {
                self.resend.insert((now + RESEND_AFTER, hash), RESEND_AFTER);
            }
            txs.push(bytes);
        }
        let budget = self.max_frame_bytes / 2;
        for batch in forward_batches(txs, budget) {
            self.send_to(&self.connected.clone(), Request::Transactions(batch));
        }
        let again = self.due_again(now);
        if !again.is_empty() {
            // Only validators propose; the other observers had it the first time.
            let validators = &self.connected & &self.validators;
            for batch in forward_batches(again, budget) {
                self.send_to(&validators, Request::Transactions(batch));
            }
        }
    }

    /// What an observer sent that still waits and is due to be sent again,
    /// at most [`RESEND_PER_TICK`]; the rest stays due.
    fn due_again(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut due = Vec::new();
        while due.len() < RESEND_PER_TICK
            && let Some(entry) = self.resend.first_entry()
            && entry.key().0 <= now
        {
            due.push(entry.remove_entry());
        }
        let hashes: Vec<Hash> = due.iter().map(|((_, hash), _)| *hash).collect();
        let mut again = Vec::new();
        for ((_, waited), tx) in due.into_iter().zip(self.mempool.encoded(&hashes)) {
            // Gone from the pool (committed, or expired): done with.
            let Some((hash, bytes)) = tx else { continue };
            let wait = (2 * waited).min(RESEND_MAX);
            self.resend.insert((now + wait, hash), wait);
            again.push(bytes);
        }
        self.metrics.network_resent.inc_by(again.len() as u64);
        again
    }

    /// Sends `request` to every connected member.
    fn send_to_all(&mut self, request: Request) {
        self.send_to(&self.connected.clone(), request);
    }

    /// Sends `request` to `peers`: on each one's push stream, or as a
    /// request to a peer without one.
    fn send_to(&mut self, peers: &BTreeSet<PeerId>, request: Request) {
        let Some(frame) = encode_frame(&request, self.max_frame_bytes) else {
            warn!("a message too large for a frame was not sent");
            return;
        };
        let frame: push::Encoded = frame.into();
        for peer in peers {
            match self.requests_only.get_mut(peer) {
                Some(unanswered) => {
                    send_as_request(&mut self.swarm, peer, unanswered, &request, &self.metrics)
                }
                None => self.writers.send(peer, frame.clone()),
            }
        }
    }

    fn on_command(&mut self, command: Outbound) {
        match command {
            Outbound::Broadcast(message) => self.send_to_all(Request::Consensus(message)),
            Outbound::Sync { peer, from } => {
                if let Some(peer) = peer
                    .filter(|p| self.connected.contains(p))
                    .or_else(|| self.next_sync_peer())
                {
                    let request = self.swarm.behaviour_mut().rpc.send_request(
                        &peer,
                        Frame::outgoing(Request::Sync {
                            from,
                            max: SYNC_BATCH,
                        }),
                    );
                    self.syncs_asked.insert(request);
                }
            }
            Outbound::Strike(peer) => self.strike(peer, "refused by consensus"),
            Outbound::Evidence(proof) => self.send_to_all(Request::Evidence(proof)),
        }
    }

    /// A request to `peer` has its answer (or failed).
    fn answered(&mut self, peer: &PeerId, request: &request_response::OutboundRequestId) {
        if let Some(unanswered) = self.requests_only.get_mut(peer) {
            unanswered.remove(request);
        }
    }

    /// The connected peer after the one last asked this way, so that a peer
    /// with nothing to give is not the only one asked.
    fn next_sync_peer(&mut self) -> Option<PeerId> {
        let after = self.last_asked.take();
        let next = after
            .and_then(|last| self.connected.range((Excluded(last), Unbounded)).next())
            .or_else(|| self.connected.first())
            .copied();
        self.last_asked = next;
        next
    }

    fn strike(&mut self, peer: PeerId, why: &str) {
        self.metrics.network_strikes.inc();
        let budget = self.budgets.entry(peer).or_insert_with(PeerBudget::new);
        if budget.strike(Instant::now()) {
            warn!(%peer, why, "disconnecting a peer that keeps sending refused messages");
            self.banned.insert(peer, Instant::now() + BAN);
            self.budgets.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn is_banned(&mut self, peer: &PeerId) -> bool {
        match self.banned.get(peer) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                self.banned.remove(peer);
                false
            }
            None => false,
        }
    }

    async fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if self.is_banned(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if self.connected.insert(peer_id) {
                    info!(peer = %peer_id, "peer connected");
                    self.writers.start(peer_id);
                    self.report_peers().await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if self.connected.remove(&peer_id) => {
                info!(peer = %peer_id, "peer disconnected");
                self.writers.stop(&peer_id);
                self.requests_only.remove(&peer_id);
                self.other_version.remove(&peer_id);
                self.report_peers().await;
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                debug!(from = %send_back_addr, %error, "incoming connection refused");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => self.on_rpc(event).await,
            _ => {}
        }
    }

    async fn report_peers(&mut self) {
        self.metrics.peers.set(self.connected.len() as i64);
        let _ = self
            .inbound
            .send(Inbound::Peers(self.connected.len()))
            .await;
    }

    async fn on_rpc(&mut self, event: request_response::Event<Frame<Request>, Frame<Response>>) {
        use request_response::{Event, Message as Rpc};
        match event {
            Event::Message {
                peer,
                message:
                    Rpc::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                let response = match request.message {
                    Ok(Request::Sync { from, max }) => {
                        if self.within_budget(peer) {
                            return self.serve_sync(peer, request_id, channel, from, max);
                        }
                        Response::Refused("rate limited".into())
                    }
                    _ => self.answer(peer, request).await,
                };
                self.respond(channel, response);
            }
            Event::Message {
                peer,
                message:
                    Rpc::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let asked = self.syncs_asked.remove(&request_id);
                self.answered(&peer, &request_id);
                match response.message {
                    // Blocks answer our sync requests, nothing else: blocks
                    // for anything else would have the driver wait on its
                    // block writes for nothing.
                    Ok(Response::Blocks(_)) if !asked => {
                        self.strike(peer, "blocks for a request that was not a sync")
                    }
                    Ok(Response::Blocks(blocks)) => {
                        let _ = self
                            .inbound
                            .send(Inbound::Blocks {
                                from: peer,
                                blocks,
                                held: response.held,
                            })
                            .await;
                    }
                    Ok(Response::Ack) => {}
                    Ok(Response::Refused(why)) => {
                        debug!(%peer, %why, "peer refused our request")
                    }
                    Err(why) => self.strike(peer, &why),
                }
            }
            Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.sync_delivered(request_id);
                debug!(%peer, %error, "inbound request failed")
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.syncs_asked.remove(&request_id);
                self.answered(&peer, &request_id);
                if matches!(
                    error,
                    request_response::OutboundFailure::UnsupportedProtocols
                ) {
                    self.metrics.network_other_version.inc();
                    if self.other_version.insert(peer) {
                        warn!(%peer, protocol = %PROTOCOL, "a member's node speaks another wire version (another Trellis release): nothing is exchanged with it until both run one release");
                    }
                }
                debug!(%peer, %error, "request to peer failed")
            }
            Event::ResponseSent { request_id, .. } => self.sync_delivered(request_id),
        }
    }

    /// A frame that came on `peer`'s push stream: handled as a request whose
    /// answer nobody waits for. Sync needs its answer, so it is refused there.
    async fn on_pushed(&mut self, event: push::Event) {
        match event {
            push::Event::Frame { peer, frame } => {
                if let Ok(Request::Sync { .. }) = frame.message {
                    self.strike(peer, "sync request on a push stream");
                    return;
                }
                if let Response::Refused(why) = self.answer(peer, frame).await {
                    debug!(%peer, %why, "refused a pushed message");
                }
            }
            push::Event::Unsupported { peer, unsent } => {
                debug!(%peer, "peer has no push stream: sending it requests");
                let unanswered = self.requests_only.entry(peer).or_default();
                for frame in unsent {
                    // Encoded here, from a Request: it decodes.
                    if let Ok(request) = decode::<Request>(&frame[4..]) {
                        send_as_request(
                            &mut self.swarm,
                            &peer,
                            unanswered,
                            &request,
                            &self.metrics,
                        );
                    }
                }
            }
        }
    }

    /// Takes one of `peer`'s messages from its budget; a peer over its rate
    /// limit is struck.
    fn within_budget(&mut self, peer: PeerId) -> bool {
        // What a banned peer sent before its connection closed is not
        // handled, nor does it open a fresh budget.
        if self.is_banned(&peer) {
            return false;
        }
        let within = self
            .budgets
            .entry(peer)
            .or_insert_with(PeerBudget::new)
            .take();
        if !within {
            self.metrics.network_rate_limited.inc();
            self.strike(peer, "over its rate limit");
        }
        within
    }

    /// Checks `peer`'s rate and what it sent, then handles it.
    async fn answer(&mut self, peer: PeerId, request: Frame<Request>) -> Response {
        if !self.within_budget(peer) {
            return Response::Refused("rate limited".into());
        }
        match request.message {
            Ok(message) => self.on_request(peer, message, request.held).await,
            Err(why) => {
                self.strike(peer, &why);
                Response::Refused(why)
            }
        }
    }

    async fn on_request(
        &mut self,
        peer: PeerId,
        request: Request,
        held: Option<FrameBytes>,
    ) -> Response {
        match request {
            // Nodes send only their own consensus messages, never relay
            // others', so one from an observer is refused before it can take
            // a place in the driver's queue.
            Request::Consensus(_) if !self.validators.contains(&peer) => {
                self.strike(
                    peer,
                    "consensus message from a node that is not a validator",
                );
                Response::Refused("only validators send consensus messages".into())
            }
            Request::Consensus(message) => {
                self.queue_for_driver(peer, |place| Inbound::Consensus {
                    from: peer,
                    message,
                    held,
                    place,
                });
                Response::Ack
            }
            // From any member node: observers find evidence too, in the
            // certificates they follow.
            Request::Evidence(proof) => {
                self.queue_for_driver(peer, |place| Inbound::Evidence {
                    from: peer,
                    proof,
                    place,
                });
                Response::Ack
            }
            Request::Transactions(TxBatch(txs)) => {
                let own = self
                    .batches_of
                    .entry(peer)
                    .or_insert_with(|| Arc::new(Semaphore::new(PEER_BATCHES_PER_PEER)))
                    .clone();
                let (Ok(own), Ok(place)) = (
                    own.try_acquire_owned(),
                    self.peer_batches.clone().try_acquire_owned(),
                ) else {
                    admission_busy(&self.metrics, peer, txs.len());
                    return Response::Ack;
                };
                let admission = self.admission.clone();
                let faults = self.batch_faults.clone();
                let metrics = self.metrics.clone();
                // The admission thread checks its signatures with whatever
                // else waits there: one batch equation for all of it.
                tokio::spawn(async move {
                    let count = txs.len();
                    let txs = txs.into_iter().map(|t| t.0).collect();
                    let results = match admission.admit_forwarded(txs).await {
                        Ok(results) => results,
                        Err(NotAdmitted::QueueFull(_)) => {
                            admission_busy(&metrics, peer, count);
                            Vec::new()
                        }
                        Err(NotAdmitted::Stopped) => Vec::new(),
                    };
                    let fault = results.iter().find_map(|r| match r {
                        Err(e) if e.blames_the_forwarder() => Some(e.code()),
                        _ => None,
                    });
                    if let Some(code) = fault {
                        // Full only while many such batches wait: one strike is enough.
                        let _ = faults.try_send((peer, code));
                    }
                    drop((own, place, held));
                });
                Response::Ack
            }
            // Answered by `serve_sync` when it comes as a request; on a push
            // stream, where no answer goes back, it was struck before here.
            Request::Sync { .. } => Response::Refused("sync needs a request".into()),
        }
    }

    /// Hands the driver what `peer` sent, within `peer`'s share of the
    /// driver's queue; dropped (and counted) when that share is full.
    fn queue_for_driver(
        &mut self,
        peer: PeerId,
        inbound: impl FnOnce(OwnedSemaphorePermit) -> Inbound,
    ) {
        let share = self
            .driver_places
            .entry(peer)
            .or_insert_with(|| Arc::new(Semaphore::new(self.driver_share)));
        let queued = share
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|place| self.inbound.try_send(inbound(place)).ok());
        if queued.is_none() {
            debug!(%peer, "driver busy: a message for consensus dropped");
            self.metrics.network_consensus_dropped.inc();
        }
    }

    /// Answers a peer's request; a peer gone since cannot be answered.
    fn respond(&mut self, channel: ResponseChannel, response: Response) {
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, Frame::outgoing(response));
    }

    /// Reads the blocks a sync request asks for on a blocking thread, up to
    /// [`SYNC_READS`] requests at once and one per peer, and has the network
    /// task send the answer when it is ready: reading up to 64 blocks must
    /// not hold up every other peer's messages.
    ///
    /// The peer's own place is held until the answer is delivered, or fails:
    /// a peer that asks and never reads would otherwise have the node read,
    /// and hold in memory, one answer after another. The shared read place
    /// goes back when the read is done, so such peers cannot keep others'
    /// syncs waiting.
    fn serve_sync(
        &mut self,
        peer: PeerId,
        request: request_response::InboundRequestId,
        channel: ResponseChannel,
        from: u64,
        max: u32,
    ) {
        let place = if self.syncs_read_for.contains(&peer) {
            Err("a sync of yours is being read")
        } else {
            Arc::clone(&self.sync_reads)
                .try_acquire_owned()
                .map_err(|_| "busy serving other syncs")
        };
        let place = match place {
            Ok(place) => place,
            Err(why) => return self.respond(channel, Response::Refused(why.into())),
        };
        self.syncs_read_for.insert(peer);
        let storage = self.storage.clone();
        let max = max.min(SYNC_BATCH);
        let budget = self.max_frame_bytes / 2;
        let served = self.sync_served.clone();
        tokio::spawn(async move {
            let blocks =
                tokio::task::spawn_blocking(move || read_blocks(&storage, from, max, budget)).await;
            let response = match blocks {
                Ok(Ok(blocks)) => Response::Blocks(blocks),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot serve sync request");
                    Response::Refused("storage error".into())
                }
                Err(_) => Response::Refused("internal error".into()),
            };
            // The read is done: another peer's may start while this answer
            // goes out (this peer's waits until it is delivered).
            drop(place);
            let _ = served
                .send(SyncServed {
                    peer,
                    request,
                    channel,
                    response,
                })
                .await;
        });
    }

    /// Sends a sync answer; its place is given back when it is delivered.
    fn send_synced(&mut self, served: SyncServed) {
        let sent = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(served.channel, Frame::outgoing(served.response));
        match sent {
            Ok(()) => {
                self.syncs_delivering.insert(served.request, served.peer);
            }
            // The peer is gone: nothing will be delivered.
            Err(_) => {
                self.syncs_read_for.remove(&served.peer);
            }
        }
    }

    /// A response was sent, or a request failed: if it was a sync answer,
    /// its peer may ask again and its place goes back.
    fn sync_delivered(&mut self, request: request_response::InboundRequestId) {
        if let Some(peer) = self.syncs_delivering.remove(&request) {
            self.syncs_read_for.remove(&peer);
        }
    }
}

/// A peer's forwarded batch found no place to be admitted: dropped (the
/// peer keeps it in its own mempool and proposes it itself) and counted.
fn admission_busy(metrics: &Metrics, peer: PeerId, txs: usize) {
    debug!(%peer, txs, "admission busy: forwarded transactions dropped");
    metrics
        .admission_rejected
        .get_or_create(&CodeLabels {
            code: "peer_admission_busy".into(),
        })
        .inc_by(txs as u64);
}

/// Sends `request` to `peer`, which takes no push stream, unless as many as
/// a connection may have in flight are unanswered: a peer that does not
/// answer holds no more of ours than a push queue does.
fn send_as_request(
    swarm: &mut libp2p::Swarm<Behaviour>,
    peer: &PeerId,
    unanswered: &mut BTreeSet<request_response::OutboundRequestId>,
    request: &Request,
    metrics: &Metrics,
) {
    if unanswered.len() >= STREAMS_PER_CONNECTION {
        metrics.network_push_dropped.inc();
        return;
    }
    let id = swarm
        .behaviour_mut()
        .rpc
        .send_request(peer, Frame::outgoing(request.clone()));
    unanswered.insert(id);
}

/// `txs` in batches of at most [`MAX_FORWARDED_TXS`] whose encoding stays
/// within `budget` bytes, so that none makes a frame too large to send or is
/// refused for its count: a burst becomes several requests. A transaction
/// alone over the budget (at most a block's bytes, which a frame always
/// holds) goes in a batch of its own.
fn forward_batches(txs: Vec<Vec<u8>>, budget: usize) -> Vec<TxBatch> {
    // An entry's length prefix is a varint of at most 10 bytes.
    const ENTRY_OVERHEAD: usize = 10;
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for tx in txs {
        let size = tx.len() + ENTRY_OVERHEAD;
        if !batch.is_empty() && (bytes + size > budget || batch.len() == MAX_FORWARDED_TXS) {
            batches.push(TxBatch(std::mem::take(&mut batch)));
            bytes = 0;
        }
        bytes += size;
        batch.push(Bytes(tx));
    }
    if !batch.is_empty() {
        batches.push(TxBatch(batch));
    }
    batches
}

/// Up to `max` committed blocks from `from` on, stopping before their encoding
/// passes `budget` bytes (but always at least one, which fits a frame by construction).
fn read_blocks(
    storage: &Storage,
    from: u64,
    max: u32,
    budget: usize,
) -> Result<Vec<(Block, QuorumCertificate)>, crate::storage::StorageError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for height in from..from.saturating_add(max as u64) {
        let (Some(block), Some(qc)) = (storage.block(height)?, storage.commit_certificate(height)?)
        else {
            break;
        };
        bytes += encode(&block).len() + encode(&qc).len();
        if !out.is_empty() && bytes > budget {
            break;
        }
        out.push((block, qc));
    }
    Ok(out)
}

mod push;
#[cfg(test)]
mod tests;
