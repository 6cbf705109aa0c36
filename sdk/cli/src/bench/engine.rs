//! The bench's moving parts, around the [`Planner`]:
//!
//! - the **planner thread** (an OS thread of its own, off the async
//!   runtime) plans and signs ahead into a bounded queue, learns from every
//!   commit, and keeps the per-transaction results;
//! - the **submitter** task takes signed transactions from the queue on
//!   schedule (open loop at a rate, or as fast as a bounded in-flight window
//!   allows) and sends what is due at once, in batches, to the next node in
//!   turn, retrying refusals that say "later" (429, 5xx, a nonce still
//!   ahead) with the same bytes;
//! - the **follower** task reads committed transactions from one node's
//!   event stream; a block's commit time is when its first transaction
//!   arrives.
//!
//! Messages flow one way into the planner thread ([`Inbound`]), signed
//! transactions one way out of it ([`Outbound`]); counters the progress line
//! and the in-flight window read are atomics in [`Shared`].

use super::plan::{Method, Phase, Planner};
use super::reads::RecentBlocks;
use super::sign::{ExpandedKey, Nonces, sign_batch};
use foldhash::{HashMap, HashSet, HashSetExt};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use trellis_sdk::Client;
use trellis_sdk::api::CommittedTx;
use trellis_types::{Hash, SignedTransaction};

/// Most transactions the planner thread plans and signs at once: enough to
/// share signing's field inversion, few enough to stay fresh when the queue
/// is full.
const SIGN_BATCH: usize = 64;

/// How long one transaction's sender keeps retrying "later" refusals.
const RETRY_FOR: Duration = Duration::from_secs(30);
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

pub enum Inbound {
    Commit {
        tx: Box<CommittedTx>,
        seen: Instant,
    },
    Sent {
        hash: Hash,
        at: Instant,
    },
    Admitted {
        hash: Hash,
    },
    /// One refused submission; `last` when the sender gives up on it.
    Refused {
        hash: Hash,
        code: String,
        last: bool,
    },
    AddRoots(Vec<u64>),
    /// Signature nonces made for the run once the setup measured its rate.
    AddNonces(Nonces),
    SetPhase(Phase),
    Finish,
}

pub struct Outbound {
    pub tx: SignedTransaction,
    pub hash: Hash,
    pub measured: bool,
}

/// Counters shared between the parts (the planner thread writes most).
#[derive(Default)]
pub struct Shared {
    /// Sent and not yet seen committed or given up on.
    pub in_flight: AtomicU64,
    /// Measured transactions seen committed: succeeded, failed.
    pub committed: AtomicU64,
    pub failed: AtomicU64,
    /// Refused submissions of measured transactions.
    pub refused: AtomicU64,
    /// Setup transactions seen committed.
    pub setup_committed: AtomicU64,
    /// How many [`Inbound::AddRoots`] batches are issued and answered.
    pub setup_batches_done: AtomicU64,
    pub chain_time_ms: AtomicU64,
    /// Pieces ready to act on, receivables accepted and unsettled.
    pub ready_pieces: AtomicU64,
    pub live_roots: AtomicU64,
    /// The highest piece id the run has seen made.
    pub newest_piece: AtomicU64,
    /// What reads beside the load ask about.
    pub recent_blocks: Arc<RecentBlocks>,
}

/// One measured transaction.
#[derive(Debug, Clone)]
pub struct Record {
    pub method: Method,
    /// When its latency counts from: when it was due (open loop) or first sent.
    pub sent: Option<Instant>,
    pub admitted: bool,
    pub committed: Option<Instant>,
    pub failure: Option<String>,
}

/// One block, as the follower saw it.
#[derive(Debug, Clone, Copy)]
pub struct BlockSeen {
    pub seen: Instant,
    pub txs: u32,
}

/// Everything the planner thread kept.
#[derive(Default)]
pub struct Results {
    pub records: HashMap<Hash, Record>,
    /// Refused submissions of measured transactions, by the node's code.
    pub refused: BTreeMap<String, u64>,
    /// Measured transactions given up on after refusals.
    pub lost: u64,
    pub setup_refused: BTreeMap<String, u64>,
    pub setup_failed: BTreeMap<String, u64>,
    pub blocks: BTreeMap<u64, BlockSeen>,
    /// Time spent signing (the planner thread's main cost), and how many.
    pub signing: Duration,
    pub signed: u64,
    /// Signatures whose nonce was made while signing, none being left from
    /// those made ahead.
    pub nonces_made_late: u64,
}

/// Runs the planner thread until [`Inbound::Finish`]; returns the results.
pub fn planner_thread(
    planner: Planner,
    nonces: Nonces,
    inbound: std_mpsc::Receiver<Inbound>,
    out: mpsc::Sender<Outbound>,
    shared: Arc<Shared>,
) -> Results {
    let mut thread = PlannerThread {
        planner,
        results: Results::default(),
        unresolved: HashSet::new(),
        shared,
        batches: 0,
        keys: HashMap::default(),
        nonces,
    };
    let mut signed: VecDeque<Outbound> = VecDeque::new();
    loop {
        loop {
            match inbound.try_recv() {
                Ok(Inbound::Finish) | Err(std_mpsc::TryRecvError::Disconnected) => {
                    return thread.finish();
                }
                Ok(message) => thread.handle(message),
                Err(std_mpsc::TryRecvError::Empty) => break,
            }
        }
        let mut produced = 0;
        while produced < 256 {
            if signed.is_empty() {
                signed = thread.sign_batch();
            }
            let Some(next) = signed.pop_front() else {
                break;
            };
            match out.try_send(next) {
                Ok(()) => produced += 1,
                Err(mpsc::error::TrySendError::Full(next)) => {
                    signed.push_front(next);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return thread.finish(),
            }
        }
        thread.publish();
        if produced == 0 {
            match inbound.recv_timeout(Duration::from_millis(2)) {
                Ok(Inbound::Finish) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    return thread.finish();
                }
                Ok(message) => thread.handle(message),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

struct PlannerThread {
    planner: Planner,
    results: Results,
    /// Sent, and not yet seen committed or given up on.
    unresolved: HashSet<Hash>,
    shared: Arc<Shared>,
    /// [`Inbound::AddRoots`] messages received.
    batches: u64,
    /// Accounts' keys as signing uses them, by account.
    keys: HashMap<usize, ExpandedKey>,
    nonces: Nonces,
}

impl PlannerThread {
    fn finish(mut self) -> Results {
        self.results.nonces_made_late = self.nonces.made_late;
        self.results
    }

    /// Plans up to [`SIGN_BATCH`] transactions and signs them together.
    fn sign_batch(&mut self) -> VecDeque<Outbound> {
        let now = crate::when::now_ms();
        let mut planned = Vec::new();
        while planned.len() < SIGN_BATCH {
            let Some(next) = self.planner.next(now) else {
                break;
            };
            planned.push(next);
        }
        // What is signed is the transaction's id: hashed once for both.
        let hashes: Vec<Hash> = planned.iter().map(|p| p.tx.hash()).collect();
        let started = Instant::now();
        for p in &planned {
            let planner = &self.planner;
            self.keys
                .entry(p.account)
                .or_insert_with(|| ExpandedKey::new(planner.key(p.account)));
        }
        let items: Vec<(&ExpandedKey, Hash)> = planned
            .iter()
            .zip(&hashes)
            .map(|(p, hash)| (&self.keys[&p.account], *hash))
            .collect();
        let signatures = sign_batch(&items, &mut self.nonces);
        self.results.signing += started.elapsed();
        self.results.signed += planned.len() as u64;
        let mut signed = VecDeque::with_capacity(planned.len());
        for ((planned, hash), signature) in planned.into_iter().zip(hashes).zip(signatures) {
            let measured = planned.ticket.measured;
            if measured {
                self.results.records.insert(
                    hash,
                    Record {
                        method: planned.ticket.method,
                        sent: None,
                        admitted: false,
                        committed: None,
                        failure: None,
                    },
                );
            }
            self.planner.bind(hash, planned.ticket);
            let tx = SignedTransaction {
                tx: planned.tx,
                signature,
            };
            signed.push_back(Outbound { tx, hash, measured });
        }
        signed
    }

    /// Publishes what the other parts read.
    fn publish(&self) {
        let shared = &self.shared;
        let (ready, roots) = self.planner.pool();
        shared.ready_pieces.store(ready as u64, Ordering::Relaxed);
        shared.live_roots.store(roots as u64, Ordering::Relaxed);
        shared
            .newest_piece
            .store(self.planner.newest_piece(), Ordering::Relaxed);
        shared
            .chain_time_ms
            .store(self.planner.chain_time_ms(), Ordering::Relaxed);
        if self.planner.setup_done() {
            shared
                .setup_batches_done
                .store(self.batches, Ordering::Relaxed);
        }
    }

    fn resolved(&mut self, hash: &Hash) {
        if self.unresolved.remove(hash) {
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn handle(&mut self, message: Inbound) {
        match message {
            Inbound::Commit { tx, seen } => {
                let block = self
                    .results
                    .blocks
                    .entry(tx.height)
                    .or_insert(BlockSeen { seen, txs: 0 });
                block.txs += 1;
                let Some(outcome) = self.planner.on_commit(&tx) else {
                    return;
                };
                self.resolved(&tx.tx_hash);
                if outcome.measured {
                    if let Some(record) = self.results.records.get_mut(&tx.tx_hash) {
                        record.committed = Some(seen);
                        // A commit proves admission, even if its answer was lost.
                        record.admitted = true;
                        record.failure.clone_from(&outcome.failure);
                    }
                    if outcome.failure.is_some() {
                        self.shared.failed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.shared.committed.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    self.shared.setup_committed.fetch_add(1, Ordering::Relaxed);
                    if let Some(code) = outcome.failure {
                        *self.results.setup_failed.entry(code).or_default() += 1;
                    }
                }
            }
            Inbound::Sent { hash, at } => {
                if !self.planner.is_pending(&hash) {
                    // Sends precede their commits, so this does not happen; keep the count right.
                    self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                self.unresolved.insert(hash);
                if let Some(record) = self.results.records.get_mut(&hash) {
                    record.sent.get_or_insert(at);
                }
            }
            Inbound::Admitted { hash } => {
                if let Some(record) = self.results.records.get_mut(&hash) {
                    record.admitted = true;
                }
            }
            Inbound::Refused { hash, code, last } => {
                let measured = self.results.records.contains_key(&hash);
                let counts = if measured {
                    self.shared.refused.fetch_add(1, Ordering::Relaxed);
                    &mut self.results.refused
                } else {
                    &mut self.results.setup_refused
                };
                *counts.entry(code.clone()).or_default() += 1;
                if last && self.planner.on_refused(&hash, &code).is_some() {
                    self.resolved(&hash);
                    if measured {
                        self.results.lost += 1;
                    }
                }
            }
            Inbound::AddRoots(maturities) => {
                self.planner.add_setup_roots(maturities);
                self.batches += 1;
            }
            Inbound::AddNonces(nonces) => self.nonces.add(nonces),
            Inbound::SetPhase(phase) => self.planner.set_phase(phase),
            Inbound::Finish => {}
        }
    }
}

/// How the submitter paces sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Send nothing.
    Hold,
    /// As fast as the in-flight window allows.
    Max,
    /// `per_s` a second from `start` (open loop: a backlog is caught up).
    Rate { per_s: f64, start: Instant },
    /// End the submitter.
    Stop,
}

/// What the submitter saw of its own schedule.
#[derive(Debug, Default, Clone)]
pub struct ScheduleStats {
    /// Transactions sent under [`Pace::Rate`] or the run's [`Pace::Max`].
    pub sent: u64,
    /// Most the schedule fell behind, and why (window full, nothing signed).
    pub max_lag: Duration,
    pub window_full_ms: u64,
    pub starved_ms: u64,
    /// Submission requests those transactions went out in (first tries only).
    pub requests: u64,
}

pub struct Submitter {
    pub nodes: Vec<Client>,
    pub queue: mpsc::Receiver<Outbound>,
    pub inbound: std_mpsc::Sender<Inbound>,
    pub shared: Arc<Shared>,
    pub pace: watch::Receiver<Pace>,
    /// Most transactions sent and not yet committed.
    pub window: u64,
    /// Most transactions per request (1: `POST /v1/transactions` each).
    pub batch: usize,
    /// How often it sends what is due.
    pub send_every: Duration,
    /// Most HTTP requests open at once per node.
    pub http_per_node: usize,
}

impl Submitter {
    /// Runs until [`Pace::Stop`]; returns the schedule's figures since the
    /// last pace change to `Rate` or `Max`.
    pub async fn run(mut self) -> ScheduleStats {
        let permits: Vec<Arc<Semaphore>> = self
            .nodes
            .iter()
            .map(|_| Arc::new(Semaphore::new(self.http_per_node)))
            .collect();
        let mut stats = ScheduleStats::default();
        let mut next_node = 0usize;
        let mut pace = *self.pace.borrow_and_update();
        let mut tick = tokio::time::interval(self.send_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let tick_ms = self.send_every.as_millis() as u64;
        loop {
            if self.pace.has_changed().unwrap_or(true) {
                let new = *self.pace.borrow_and_update();
                if matches!(new, Pace::Rate { .. }) || (new == Pace::Max && pace != Pace::Max) {
                    stats = ScheduleStats::default();
                }
                pace = new;
            }
            let due = match pace {
                Pace::Stop => return stats,
                Pace::Hold => 0,
                Pace::Max => u64::MAX,
                Pace::Rate { per_s, start } => {
                    (start.elapsed().as_secs_f64() * per_s).floor() as u64
                }
            };
            let now = Instant::now();
            let mut batch = Vec::new();
            while stats.sent < due {
                if self.shared.in_flight.load(Ordering::Relaxed) + batch.len() as u64 >= self.window
                {
                    stats.window_full_ms += tick_ms;
                    break;
                }
                let Ok(out) = self.queue.try_recv() else {
                    stats.starved_ms += tick_ms;
                    break;
                };
                // Latency counts from when it was due: waiting here for the
                // next send, or behind a backlog, is part of it.
                let at = match pace {
                    Pace::Rate { per_s, start } => due_at(start, per_s, stats.sent),
                    _ => now,
                };
                batch.push((out, at));
                stats.sent += 1;
                if batch.len() == self.batch {
                    stats.requests += 1;
                    let Some(()) = self.send(&mut next_node, &permits, batch).await else {
                        return stats;
                    };
                    batch = Vec::new();
                }
            }
            if !batch.is_empty() {
                stats.requests += 1;
                if self.send(&mut next_node, &permits, batch).await.is_none() {
                    return stats;
                }
            }
            if let Pace::Rate { per_s, .. } = pace {
                let behind = due.saturating_sub(stats.sent) as f64 / per_s;
                stats.max_lag = stats.max_lag.max(Duration::from_secs_f64(behind));
            }
            tick.tick().await;
        }
    }

    /// Sends `batch` (each transaction with the time its latency counts
    /// from) to the next node in turn, once a request to it may open; `None`
    /// when the submitter is shutting down.
    async fn send(
        &self,
        next_node: &mut usize,
        permits: &[Arc<Semaphore>],
        batch: Vec<(Outbound, Instant)>,
    ) -> Option<()> {
        let first_node = *next_node % self.nodes.len();
        *next_node += 1;
        let permit = permits[first_node].clone().acquire_owned().await.ok()?;
        self.shared
            .in_flight
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let batch: Vec<Outbound> = batch
            .into_iter()
            .map(|(out, at)| {
                let _ = self.inbound.send(Inbound::Sent { hash: out.hash, at });
                out
            })
            .collect();
        let nodes = self.nodes.clone();
        let inbound = self.inbound.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let give_up = Instant::now() + RETRY_FOR;
            let mut node = first_node;
            let mut pending = batch;
            while !pending.is_empty() {
                let verdicts = submit(&nodes[node], &pending).await;
                let may_retry = Instant::now() < give_up;
                let mut later = Vec::new();
                for (out, verdict) in pending.into_iter().zip(verdicts) {
                    match verdict {
                        Ok(()) => {
                            let _ = inbound.send(Inbound::Admitted { hash: out.hash });
                        }
                        Err((code, is_later)) => {
                            let retry = is_later && may_retry;
                            let _ = inbound.send(Inbound::Refused {
                                hash: out.hash,
                                code,
                                last: !retry,
                            });
                            if retry {
                                later.push(out);
                            }
                        }
                    }
                }
                pending = later;
                if !pending.is_empty() {
                    node = (node + 1) % nodes.len();
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        });
        Some(())
    }
}

/// When transaction `k` (from 0) of an open-loop schedule of `per_s` a
/// second from `start` is due.
fn due_at(start: Instant, per_s: f64, k: u64) -> Instant {
    start + Duration::from_secs_f64(k as f64 / per_s)
}

/// Submits `batch` to `client`: one verdict per transaction, a refusal as
/// its code and whether it says "later". A lone transaction goes to
/// `POST /v1/transactions`, more as one batch.
async fn submit(client: &Client, batch: &[Outbound]) -> Vec<Result<(), (String, bool)>> {
    let refusal = |e: &trellis_sdk::Error| (refusal_code(e), is_later(e));
    if let [out] = batch {
        return vec![
            client
                .send_signed(&out.tx)
                .await
                .map(drop)
                .map_err(|e| refusal(&e)),
        ];
    }
    let txs: Vec<SignedTransaction> = batch.iter().map(|out| out.tx.clone()).collect();
    match client.send_signed_batch(&txs).await {
        Ok(verdicts) => verdicts
            .into_iter()
            .map(|v| v.map(drop).map_err(|e| refusal(&e)))
            .collect(),
        Err(e) => vec![Err(refusal(&e)); batch.len()],
    }
}

/// A refusal that says "not now" rather than "never".
fn is_later(e: &trellis_sdk::Error) -> bool {
    use trellis_sdk::Error as E;
    match e {
        E::Rejected { status, code, .. } => *status == 429 || code == "nonce_too_far_ahead",
        E::Server { .. } | E::Transport { .. } => true,
        _ => false,
    }
}

/// A refusal's or failure's code: the node's, or `transport`.
pub(super) fn refusal_code(e: &trellis_sdk::Error) -> String {
    match e {
        trellis_sdk::Error::Transport { .. } => "transport".to_owned(),
        trellis_sdk::Error::Proof(_) => "proof".to_owned(),
        e => e.code().unwrap_or("other").to_owned(),
    }
}

/// How long one request of [`follow`] waits for the next block.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);
/// Failed requests in a row after which [`follow`] gives up.
const FOLLOW_GIVE_UP: u32 = 20;

/// Follows the chain from `from_height` block by block, in long polls for
/// each next block in its canonical encoding (for node and generator a
/// fraction of the work of the JSON event stream, message by message), and
/// hands each committed transaction to the planner thread with the time its
/// block was seen. Ends when the planner thread is gone, or with the error
/// after [`FOLLOW_GIVE_UP`] failed requests in a row.
pub async fn follow(
    client: Client,
    from_height: u64,
    inbound: std_mpsc::Sender<Inbound>,
    shared: Arc<Shared>,
) -> trellis_sdk::Result<()> {
    let mut height = from_height;
    let mut failures = 0;
    loop {
        let block = match client.wait_for_block(height, FOLLOW_WAIT).await {
            Ok(Some(block)) => block,
            Ok(None) => continue,
            Err(e) => {
                failures += 1;
                if failures >= FOLLOW_GIVE_UP {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        failures = 0;
        let seen = Instant::now();
        let block_time_ms = block.block.header.timestamp_ms;
        if let Some(last) = block.receipts.last() {
            let newest_piece = shared.newest_piece.load(Ordering::Relaxed);
            shared.recent_blocks.push(last.tx, newest_piece);
        }
        let txs = block.block.txs.into_iter().zip(block.receipts);
        for (index, (signed, receipt)) in (0u32..).zip(txs) {
            let tx = CommittedTx {
                height,
                index,
                tx_hash: receipt.tx,
                sender: signed.tx.sender,
                status: receipt.status,
                error: receipt.error,
                events: receipt.events,
                fuel_used: receipt.fuel_used,
                block_time_ms,
            };
            let commit = Inbound::Commit {
                tx: Box::new(tx),
                seen,
            };
            if inbound.send(commit).is_err() {
                return Ok(());
            }
        }
        height += 1;
    }
}
