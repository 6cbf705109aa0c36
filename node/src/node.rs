//! The driver: wires consensus to clocks, disk, the mempool and the API.
//!
//! One task owns the consensus state machine and the chain and executes the
//! actions consensus returns, in order: the safety record is fsync'ed before
//! the vote that follows it is sent; a block is built only when consensus asks
//! for one, as soon as transactions wait (but no sooner than the block
//! interval after the last commit) or at the idle heartbeat; timers are a
//! sorted map of deadlines. A single validator (`--dev`) runs this same path
//! with a validator set of one.

use crate::api::{self, Access, ApiState, ChainStatus, REPLAY_CAPACITY, ReadLimit, Replays};
use crate::chain::{self, Chain, SignatureChecks};
use crate::config::NodeConfig;
use crate::consensus::{Action, Consensus, Message, Rejected, SafetyState, Step, Timeouts};
use crate::mempool::{Batcher, MAX_BATCH, Mempool};
use crate::metrics::{Metrics, ValidatorLabels};
use crate::network::{self, Inbound, NetworkConfig, NetworkHandle, Outbound};
use crate::priority::Priority;
use crate::safety::SafetyStore;
use crate::storage::{MAX_STAGED, Storage};
use crate::vm::Vm;
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use trellis_genesis::Genesis;
use trellis_types::{Block, DuplicateVote, KeyPair, PublicKey, QuorumCertificate};
use writer::{BlockWriter, Report};

#[cfg(test)]
mod tests;
mod writer;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Transactions waiting for admission at most (16 full signature batches,
/// however they were submitted); more are answered 429.
const ADMISSION_QUEUE: usize = 16 * MAX_BATCH;

/// Contract queries the API runs at once; more are answered 503 `busy`.
const QUERY_CONCURRENCY: u32 = 16;

/// API reads and queries running or waiting at most; more are answered 503 `busy`.
const API_READS_ADMITTED: usize = 512;

/// Threads tokio may start for blocking work: API reads, peers' signature
/// checks, the driver's block phases. Each thread keeps its own allocator
/// heap, so tokio's default (512) let a busy node start twenty of them and
/// hold about a gigabyte more than it used (docs/benchmarks.md). Block writes
/// have a thread of their own and never queue here.
pub fn blocking_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    4 * cores
}

/// Whether this node has peers: member nodes the genesis names besides
/// itself. A validator is itself by its consensus key, so a lone validator
/// (the dev node, whose node key is generated on first start) runs alone
/// whatever its node key. A node beside other members must carry the node
/// key the genesis names for it, or every peer would refuse it.
fn has_peers(
    genesis: &Genesis,
    node_key: &PublicKey,
    validator_key: Option<&PublicKey>,
) -> anyhow::Result<bool> {
    let own = genesis
        .validators
        .iter()
        .find(|v| Some(&v.consensus_key) == validator_key);
    let me = own.map_or(node_key, |v| &v.node_key);
    let members = genesis.node_keys();
    if members.iter().all(|k| k == me) {
        return Ok(false);
    }
    if let Some(v) = own.filter(|v| v.node_key != *node_key) {
        anyhow::bail!(
            "the genesis names {} for validator {}, not this node's key {node_key}: \
             its peers would refuse it",
            v.node_key,
            v.name
        );
    }
    if !members.contains(node_key) {
        anyhow::bail!(
            "the genesis names this node's key {node_key} for no member node: \
             its peers would refuse it"
        );
    }
    Ok(true)
}

/// Runs a node until `shutdown` resolves. `validator_key` is None for an observer.
pub async fn run(
    config: NodeConfig,
    genesis: Genesis,
    validator_key: Option<KeyPair>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if genesis.insecure_dev_keys {
        warn!(
            "this chain's genesis uses INSECURE public dev keys: never let it guard anything of value"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let storage = Storage::open_with(
        &config.data_dir.join("chain"),
        config.storage.cache_bytes(),
        config.index,
    )
    .context("opening the chain database")?;
    let vm = Arc::new(Vm::new());
    let head = chain::initialise(&storage, &genesis, &vm)?;
    info!(chain_id = %genesis.chain_id, height = head.height, state_root = %head.state_root, "chain opened");

    let metrics = Arc::new(Metrics::new());
    let node_key = config.load_or_generate_node_key()?;
    let has_peers = has_peers(
        &genesis,
        &node_key.public(),
        validator_key.as_ref().map(KeyPair::public).as_ref(),
    )
    .with_context(|| {
        format!(
            "checking the node key in {}",
            config.node_key_path().display()
        )
    })?;
    if !has_peers {
        info!("the genesis names no other member node: running without a peer-to-peer transport");
    }
    let mut mempool = Mempool::new(genesis.chain_id.clone(), genesis.params.clone())
        .with_max_bytes(config.mempool.max_bytes)
        .with_drop_counts(metrics.mempool_dropped.clone());
    if has_peers {
        mempool = mempool.with_forwarding();
    }
    let mempool = Arc::new(mempool);
    // Clients' submissions and peers' forwarded batches are admitted on one
    // thread, their signatures checked together.
    let background = Priority::for_node(has_peers);
    let (admission, admission_worker) = Batcher::start(
        mempool.clone(),
        storage.clone(),
        ADMISSION_QUEUE,
        now_ms,
        background,
    );
    let (network, inbound) = if has_peers {
        let config = NetworkConfig {
            listen: config
                .p2p
                .listen
                .parse()
                .context("[p2p] listen is not a multiaddr")?,
            dial: config
                .p2p
                .peers
                .iter()
                .map(|p| {
                    p.parse()
                        .with_context(|| format!("[p2p] peers: {p} is not a multiaddr"))
                })
                .collect::<anyhow::Result<_>>()?,
            identity: network::identity_from_seed(node_key.seed()),
            members: genesis.node_keys(),
            validators: genesis.validators.iter().map(|v| v.node_key).collect(),
            max_frame_bytes: genesis.params.max_block_bytes as usize + (1 << 20),
        };
        let (handle, inbound) = network::spawn(
            config,
            storage.clone(),
            mempool.clone(),
            admission.clone(),
            metrics.clone(),
        )?;
        (Some(handle), Some(inbound))
    } else {
        (None, None)
    };
    metrics.height.set(head.height as i64);

    // A validator whose safety record cannot be trusted follows the chain without voting.
    let (safety, safety_state, validator_key) =
        match SafetyStore::open(&config.data_dir.join("safety")) {
            Ok((store, state)) => (Some(store), state, validator_key),
            Err(e) => {
                error!(error = %e, "not voting");
                (None, SafetyState::default(), None)
            }
        };
    // A third of the propose timeout for executing, about as much again for
    // the state root, and the rest for the block to reach the validators.
    let build_budget = Duration::from_millis(config.consensus.timeout_propose_ms / 3);
    let chain = Chain::new(storage.clone(), &genesis, mempool.clone(), vm.clone())
        .with_build_budget(build_budget);
    let is_validator = validator_key
        .as_ref()
        .is_some_and(|k| chain.validators().contains(&k.public()));
    if validator_key.is_some() && !is_validator {
        warn!(
            "the configured validator key is not in the genesis validator set: running as an observer"
        );
    }
    let (status_tx, status_rx) = watch::channel(ChainStatus {
        height: head.height,
        block_hash: head.block_hash,
        state_root: head.state_root,
        last_block_time_ms: head.timestamp_ms,
        syncing: false,
        sync_target: head.height,
        peers: 0,
        validator: is_validator,
        round: 0,
    });

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.api.listen))?;
    info!(addr = %listener.local_addr()?, "API listening");
    if !config.api.listen.ip().is_loopback() {
        warn!(
            listen = %config.api.listen,
            "the API has no TLS: serve it behind a TLS proxy (docs/operator.md, \"The API\")"
        );
    }
    if config.api.access == Access::Open && !config.api.listen.ip().is_loopback() {
        warn!(
            listen = %config.api.listen,
            "the API is open (`[api] access = \"open\"`): whoever reaches it reads every \
             piece and every block"
        );
    }
    let api_state = Arc::new(ApiState {
        chain_id: genesis.chain_id.clone(),
        genesis_hash: genesis.hash(),
        validators: api::validator_list(&genesis),
        storage: storage.clone(),
        mempool: mempool.clone(),
        admission,
        // Queries get their own instance slots: however many arrive, block
        // execution always finds one free.
        vm: Arc::new(Vm::with_concurrent_calls(QUERY_CONCURRENCY)),
        status: status_rx,
        metrics: metrics.clone(),
        max_body_bytes: config.api.max_body_bytes,
        // Half the blocking threads: the other half stays free for peers
        // and the driver, however many reads arrive.
        reads: ReadLimit::new(blocking_threads() / 2, API_READS_ADMITTED),
        access: config.api.access,
        replays: Replays::new(REPLAY_CAPACITY),
    });
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(api::serve(listener, api_state, async {
        let _ = api_stopped.await;
    }));

    let c = &config.consensus;
    let timeouts = Timeouts {
        propose_ms: c.timeout_propose_ms,
        prevote_ms: c.timeout_prevote_ms,
        precommit_ms: c.timeout_precommit_ms,
        delta_ms: c.timeout_delta_ms,
        idle_block_ms: genesis.params.idle_block_interval_ms,
    };
    let consensus = Consensus::new(
        genesis.chain_id.clone(),
        chain.validators().clone(),
        validator_key.clone(),
        timeouts,
        head.height + 1,
        safety_state,
    );
    if let Some(height) = consensus.signing_suspended_until() {
        warn!(
            height,
            head = head.height,
            "the safety record holds a vote above the stored chain (lost blocks?): \
             following without signing until that height"
        );
    }
    let writer =
        BlockWriter::start(metrics.clone(), background).context("starting the block writer")?;
    let mut driver = Driver {
        consensus,
        chain,
        network,
        inbound,
        last_sync_request: None,
        sync_unhelpful: BTreeSet::new(),
        key: validator_key,
        safety,
        mempool,
        metrics,
        status: status_tx,
        timers: BTreeMap::new(),
        timer_seq: 0,
        pending_build: None,
        none_includable_at: None,
        last_commit: Instant::now(),
        writer,
        writing: VecDeque::new(),
    };
    let result = driver.run(shutdown).await;
    let _ = stop_api.send(());
    let served = api.await.context("API task");
    // Waits for the admission thread, so nothing holds the store once we return.
    drop(admission_worker);
    served?.context("API server")?;
    info!("stopped");
    result
}

struct Driver {
    consensus: Consensus,
    chain: Chain,
    network: Option<NetworkHandle>,
    inbound: Option<tokio::sync::mpsc::Receiver<Inbound>>,
    /// When we last asked a peer for blocks (see [`SYNC_RETRY`]).
    last_sync_request: Option<Instant>,
    /// Peers whose last sync answer brought no new block, or a refused one:
    /// not asked again on their own word.
    sync_unhelpful: BTreeSet<libp2p::PeerId>,
    key: Option<KeyPair>,
    safety: Option<SafetyStore>,
    mempool: Arc<Mempool>,
    metrics: Arc<Metrics>,
    status: watch::Sender<ChainStatus>,
    /// (deadline, sequence) → (height, round, step)
    timers: BTreeMap<(Instant, u64), (u64, u64, Step)>,
    timer_seq: u64,
    /// The round consensus asked us to build a block for.
    pending_build: Option<u64>,
    /// [`Mempool::admissions`] when this node last built an empty block
    /// although transactions waited: none of them could go in (a sender's
    /// nonce gap, say), so until another arrives the next block waits the
    /// idle interval, not the block interval.
    none_includable_at: Option<u64>,
    /// When the last block was decided.
    last_commit: Instant,
    writer: BlockWriter,
    /// The decided blocks handed to the block writer and not yet written,
    /// oldest first.
    writing: VecDeque<Writing>,
}

/// A decided block, already the head, being written by the block writer
/// while the driver goes on to the next height (see [`Driver::finish_durable`]).
struct Writing {
    height: u64,
    /// The block until it is durable, when it is published.
    unpublished: Option<Arc<Block>>,
}

/// The least time between two sync requests, but for one that follows a
/// response that brought new blocks.
const SYNC_RETRY: Duration = Duration::from_millis(500);

async fn next_inbound(
    inbound: &mut Option<tokio::sync::mpsc::Receiver<Inbound>>,
) -> Option<Inbound> {
    match inbound {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(&mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let start = self.consensus.start();
        self.process(start)?;
        tokio::pin!(shutdown);
        loop {
            let next_timer = self.timers.first_key_value().map(|(k, _)| k.0);
            let build_at = self.pending_build.and_then(|_| self.build_deadline());
            tokio::select! {
                _ = &mut shutdown => return self.finish_writing(0),
                report = self.writer.report(), if !self.writing.is_empty() => self.on_report(report)?,
                _ = sleep_until(next_timer) => self.fire_timers()?,
                _ = sleep_until(build_at) => self.build()?,
                _ = self.mempool.arrived(), if self.pending_build.is_some() => {}
                message = next_inbound(&mut self.inbound) => match message {
                    Some(message) => self.on_inbound(message)?,
                    None => anyhow::bail!("the peer-to-peer transport stopped"),
                },
            }
        }
    }

    /// When to build: the block interval after the parent block's timestamp (by
    /// our clock) if transactions wait (unless the last block this node built
    /// took none of them and none arrived since), else the idle heartbeat
    /// after it. A
    /// block's timestamp is when its building began, so a chain whose blocks
    /// take longer to build than the interval builds the next one as soon as
    /// it has decided. Never more than the interval from now: a proposer whose
    /// timestamp runs ahead must not hold up the next block.
    ///
    /// Not yet (`None`) while the writer holds as many blocks as may be staged
    /// and fewer transactions than a full block wait: the block could not be
    /// staged before a slot frees anyway, and transactions keep arriving
    /// meanwhile (clients answered at the last block's commit resubmit).
    fn build_deadline(&self) -> Option<Instant> {
        let params = self.chain.params();
        if self.writing.len() >= MAX_STAGED && self.mempool.len() < params.max_block_txs as usize {
            return None;
        }
        let idle =
            self.mempool.is_empty() || self.none_includable_at == Some(self.mempool.admissions());
        let wait = if idle {
            params.idle_block_interval_ms
        } else {
            params.block_interval_ms
        };
        let parent_ms = self.chain.head().map_or(0, |head| head.timestamp_ms);
        let due_in = parent_ms
            .saturating_add(wait)
            .saturating_sub(now_ms())
            .min(wait);
        Some(Instant::now() + Duration::from_millis(due_in))
    }

    fn fire_timers(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (height, round, step) = entry.remove();
            let actions = self.consensus.on_timeout(height, round, step);
            self.process(actions)?;
        }
        Ok(())
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let (Some(round), Some(key)) = (self.pending_build.take(), self.key.clone()) else {
            return Ok(());
        };
        if round != self.consensus.round() {
            return Ok(());
        }
        let admissions = self.mempool.admissions();
        let block = self.timed("build", |d| d.chain.build(round, &key, now_ms()))?;
        self.none_includable_at =
            (block.txs.is_empty() && !self.mempool.is_empty()).then_some(admissions);
        debug!(
            height = block.header.height,
            round,
            txs = block.txs.len(),
            "proposing"
        );
        let actions = self.consensus.on_block_built(block);
        self.process(actions)
    }

    fn process(&mut self, actions: Vec<Action>) -> anyhow::Result<()> {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::PersistSafety(state) => {
                    self.finish_durable()?;
                    // Nothing after this may leave the node unless it is on disk.
                    let store = self
                        .safety
                        .as_ref()
                        .context("voting without a safety record")?;
                    tokio::task::block_in_place(|| store.save(&state))?;
                }
                Action::Broadcast(message) => {
                    self.finish_durable()?;
                    self.broadcast(message);
                }
                Action::BuildBlock { round, .. } => self.pending_build = Some(round),
                Action::RecordEvidence(proof) => self.record_evidence(&proof),
                Action::ValidateBlock(block) => {
                    let hash = block.hash();
                    let verdict =
                        self.timed("validate", |d| d.chain.validate_proposal(&block, now_ms()));
                    if let Some(Err(e)) = &verdict {
                        warn!(height = block.header.height, block = %hash, error = %e, "invalid proposal");
                    }
                    if let Some(verdict) = verdict {
                        queue.extend(self.consensus.on_block_validated(hash, verdict.is_ok()));
                    }
                }
                Action::ScheduleTimeout {
                    height,
                    round,
                    step,
                    after_ms,
                } => {
                    self.timer_seq += 1;
                    let at = Instant::now() + Duration::from_millis(after_ms);
                    self.timers
                        .insert((at, self.timer_seq), (height, round, step));
                }
                Action::Commit { block, certificate } => {
                    if block.header.height <= self.chain.head()?.height {
                        // Already committed by block sync.
                        continue;
                    }
                    self.on_decided();
                    self.stage_and_write(block, &certificate)?;
                }
            }
        }
        Ok(())
    }

    /// Makes a decided block the head and hands it to the block writer, once
    /// fewer than [`MAX_STAGED`] blocks are being written, so the next block
    /// executes while this one is written; it is published when durable.
    fn stage_and_write(
        &mut self,
        block: Arc<Block>,
        certificate: &QuorumCertificate,
    ) -> anyhow::Result<()> {
        self.finish_writing(MAX_STAGED - 1)?;
        let staged = self.timed("commit", |d| d.chain.stage(&block, certificate))?;
        self.writer.write(staged);
        self.writing.push_back(Writing {
            height: block.header.height,
            unpublished: Some(block),
        });
        Ok(())
    }

    /// Waits until every block handed to the writer is durable. Called before
    /// anything leaves the node, so nothing this node signs at the next height
    /// goes out before the block under it would survive a crash.
    fn finish_durable(&mut self) -> anyhow::Result<()> {
        while self.writing.iter().any(|w| w.unpublished.is_some()) {
            self.await_report()?;
        }
        Ok(())
    }

    /// Waits until at most `at_most` blocks are still being written: staging
    /// takes a slot, and a block synced from peers is written in place.
    fn finish_writing(&mut self, at_most: usize) -> anyhow::Result<()> {
        while self.writing.len() > at_most {
            self.await_report()?;
        }
        Ok(())
    }

    fn await_report(&mut self) -> anyhow::Result<()> {
        let handle = tokio::runtime::Handle::current();
        let report = tokio::task::block_in_place(|| handle.block_on(self.writer.report()));
        self.on_report(report)
    }

    /// The writer's news of a block: durable (publish it), written (its slot
    /// is free), or failed (fatal).
    fn on_report(&mut self, report: Option<Report>) -> anyhow::Result<()> {
        let Report { height, step } = report.context("the block writer stopped")?;
        let step = step.with_context(|| format!("writing committed block {height}"))?;
        let out_of_turn = || format!("the block writer reported block {height} out of turn");
        match step {
            writer::Step::Durable => {
                let block = self
                    .writing
                    .iter_mut()
                    .find_map(|w| w.unpublished.take())
                    .filter(|block| block.header.height == height)
                    .with_context(out_of_turn)?;
                self.on_committed(&block);
            }
            writer::Step::Written => {
                self.writing
                    .pop_front()
                    .filter(|w| w.height == height && w.unpublished.is_none())
                    .with_context(out_of_turn)?;
            }
        }
        Ok(())
    }

    /// Runs a blocking block phase off the async workers' budget and records its wall time.
    fn timed<T>(&mut self, phase: &'static str, f: impl FnOnce(&mut Self) -> T) -> T {
        let start = Instant::now();
        let out = tokio::task::block_in_place(|| f(self));
        self.metrics.observe_phase(phase, start.elapsed());
        out
    }

    fn broadcast(&self, message: Message) {
        if let Some(network) = &self.network
            && network
                .outbound
                .try_send(Outbound::Broadcast(message))
                .is_err()
        {
            warn!("peer-to-peer outbox full: a consensus message was dropped");
        }
    }

    /// Keeps the proof of a validator's equivocation on disk, for operators
    /// and the API (`/v1/evidence`), and sends it to every peer when it is
    /// new. Not consensus-critical: a failed write is logged, and the node
    /// goes on.
    fn record_evidence(&self, proof: &DuplicateVote) {
        let vote = &proof.second;
        match tokio::task::block_in_place(|| self.chain.storage().record_evidence(proof)) {
            Ok(true) => {
                if let Some(network) = &self.network
                    && network
                        .outbound
                        .try_send(Outbound::Evidence(Box::new(proof.clone())))
                        .is_err()
                {
                    warn!("peer-to-peer outbox full: equivocation evidence was not sent");
                }
                let labels = ValidatorLabels {
                    validator: vote.voter.to_string(),
                };
                self.metrics
                    .consensus_equivocations
                    .get_or_create(&labels)
                    .inc();
                warn!(
                    validator = %vote.voter,
                    height = vote.data.height,
                    round = vote.data.round,
                    kind = ?vote.data.kind,
                    "a validator signed two votes for one step: evidence recorded"
                );
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "equivocation evidence not recorded"),
        }
    }

    /// A proof of equivocation a peer passed on: kept and passed on in turn
    /// if new and sound, its sender struck if it proves nothing. Checked
    /// last, as it costs two signature checks.
    fn on_evidence(&mut self, from: libp2p::PeerId, proof: DuplicateVote) {
        if !self.consensus.evidence_is_recent(&proof) {
            return;
        }
        let (height, voter) = (proof.second.data.height, proof.second.voter);
        match self.chain.storage().has_evidence(height, &voter) {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                warn!(error = %e, "equivocation evidence not read");
                return;
            }
        }
        match self.consensus.check_evidence(&proof) {
            Ok(()) => self.record_evidence(&proof),
            Err(why) => {
                debug!(peer = %from, why, "evidence refused");
                self.strike(from);
            }
        }
    }

    fn strike(&self, peer: libp2p::PeerId) {
        if let Some(network) = &self.network {
            let _ = network.outbound.try_send(Outbound::Strike(peer));
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) -> anyhow::Result<()> {
        match inbound {
            Inbound::Consensus { from, message, .. } => {
                let (actions, result) = self.consensus.on_message(message);
                if let Err(e) = &result
                    && *e != Rejected::Duplicate
                {
                    let code = crate::metrics::CodeLabels {
                        code: e.code().into(),
                    };
                    self.metrics
                        .consensus_rejected_messages
                        .get_or_create(&code)
                        .inc();
                }
                match result {
                    Ok(()) | Err(Rejected::Duplicate) => {}
                    // Sync on a validly signed message's word that the chain is
                    // ahead, not on this one's, whose signature may be unchecked.
                    Err(Rejected::WrongHeight { got, current })
                        if got > current && self.consensus.is_behind() =>
                    {
                        // Its sender, unless its last answer brought nothing:
                        // then the next peer in turn.
                        let peer = (!self.sync_unhelpful.contains(&from)).then_some(from);
                        self.request_sync(peer)
                    }
                    // Stale messages are normal around a commit: counted, never held
                    // against the peer.
                    Err(Rejected::WrongHeight { .. } | Rejected::RoundTooFar(_)) => {}
                    Err(e) => {
                        debug!(peer = %from, error = %e, "consensus message refused");
                        self.strike(from);
                    }
                }
                self.publish_sync_target();
                self.process(actions)
            }
            Inbound::Blocks { from, blocks, .. } => self.apply_synced(from, blocks),
            Inbound::Evidence { from, proof, .. } => {
                self.on_evidence(from, *proof);
                Ok(())
            }
            Inbound::Peers(peers) => {
                self.status.send_modify(|s| s.peers = peers);
                Ok(())
            }
        }
    }

    /// Asks a peer for the blocks after our head, unless a request is already pending.
    fn request_sync(&mut self, peer: Option<libp2p::PeerId>) {
        let now = Instant::now();
        if self
            .last_sync_request
            .is_some_and(|at| now - at < SYNC_RETRY)
        {
            return;
        }
        let Some(network) = &self.network else { return };
        let Ok(head) = self.chain.head() else { return };
        if network
            .outbound
            .try_send(Outbound::Sync {
                peer,
                from: head.height + 1,
            })
            .is_ok()
        {
            self.last_sync_request = Some(now);
        }
    }

    /// Verifies and commits blocks a peer sent, in order, then moves
    /// consensus past them. Each is written as a decided one is, while the
    /// next executes.
    fn apply_synced(
        &mut self,
        from: libp2p::PeerId,
        blocks: Vec<(Block, QuorumCertificate)>,
    ) -> anyhow::Result<()> {
        let mut applied = 0;
        let mut refused = false;
        let blocks: Vec<(Arc<Block>, QuorumCertificate)> = blocks
            .into_iter()
            .map(|(block, certificate)| (Arc::new(block), certificate))
            .collect();
        let signatures = SignatureChecks::spawn(blocks.iter().map(|(b, _)| b.clone()).collect());
        for (block, certificate) in blocks {
            // Taken in order, whether or not the block is applied.
            let verdict = tokio::task::block_in_place(|| signatures.next());
            if block.header.height <= self.chain.head()?.height {
                continue;
            }
            let checked = tokio::task::block_in_place(|| {
                self.chain.validate_synced(&block, &certificate, verdict)
            });
            if let Err(reason) = checked {
                warn!(peer = %from, height = block.header.height, %reason, "synced block refused");
                self.strike(from);
                refused = true;
                break;
            }
            // Votes held for this height may conflict with the certificate's.
            let evidence = self.consensus.evidence_in(&certificate);
            self.process(evidence)?;
            self.on_decided();
            self.stage_and_write(block, &certificate)?;
            applied += 1;
        }
        if applied > 0 {
            let height = self.chain.head()?.height;
            info!(applied, height, "caught up by block sync");
            self.pending_build = None;
            let actions = self.consensus.catch_up(height + 1);
            self.process(actions)?;
        }
        // The same peer again, at once, while it sends new blocks and the
        // chain is further on. After nothing new or a refused block, the next
        // request waits for another sign that the chain is ahead, and
        // `SYNC_RETRY`.
        if applied == 0 || refused {
            self.sync_unhelpful.insert(from);
        } else {
            self.sync_unhelpful.remove(&from);
        }
        let more = applied > 0 && !refused && self.consensus.is_behind();
        self.set_syncing(more);
        if more {
            self.last_sync_request = None;
            self.request_sync(Some(from));
        }
        Ok(())
    }

    fn publish_sync_target(&mut self) {
        let target = self.consensus.sync_target();
        self.status.send_if_modified(|s| {
            let target = target.max(s.height);
            let changed = s.sync_target != target;
            s.sync_target = target;
            changed
        });
        self.metrics
            .sync_target
            .set(self.status.borrow().sync_target as i64);
    }

    fn set_syncing(&mut self, syncing: bool) {
        self.metrics.syncing.set(syncing as i64);
        self.status.send_modify(|s| s.syncing = syncing);
    }

    /// A block was decided: the next block interval counts from now, so writing
    /// this block overlaps the wait.
    fn on_decided(&mut self) {
        let now = Instant::now();
        self.metrics
            .block_interval_seconds
            .observe((now - self.last_commit).as_secs_f64());
        self.last_commit = now;
    }

    /// A committed block is on disk: publish it.
    fn on_committed(&mut self, block: &trellis_types::Block) {
        let header = &block.header;
        self.metrics.height.set(header.height as i64);
        self.metrics.committed_txs.inc_by(block.txs.len() as u64);
        self.metrics.block_txs.observe(block.txs.len() as f64);
        if header.round > 0 {
            self.metrics.consensus_rounds.inc_by(header.round);
        }
        let height = self.consensus.height();
        self.timers.retain(|_, (h, _, _)| *h >= height);
        self.status.send_modify(|s| {
            s.height = header.height;
            s.block_hash = block.hash();
            s.state_root = header.state_root;
            s.last_block_time_ms = header.timestamp_ms;
            s.round = header.round;
        });
        self.publish_sync_target();
        info!(height = header.height, round = header.round, txs = block.txs.len(), hash = %block.hash(), "committed");
    }
}
