//! Admission and the pool of transactions waiting for a block.
//!
//! [`Mempool::admit`] applies every check a transaction must pass before it
//! may take space here, cheapest first, and answers with a specific
//! [`AdmissionError`]: size, canonical decoding, chain id, expiry, membership
//! of the sender, nonce (no replay, bounded gap), duplicates, capacity (total
//! count and bytes, per sender, and per organisation) and, last, the
//! signature. Admission reads only committed state. Its decisions are
//! local: what makes a block valid is decided again, deterministically, by
//! execution.

mod batcher;

pub use batcher::{Batcher, MAX_BATCH, NotAdmitted, Worker};

use crate::execution;
use crate::metrics::CodeLabels;
use crate::state::StateRead;
use crate::storage::StorageError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
pub use trellis_types::api::DropReason;
use trellis_types::codec::{CodecError, decode};
use trellis_types::crypto::{SignatureError, verify_all, verify_batch};
use trellis_types::{ChainParams, Hash, PublicKey, Signature, SignedTransaction, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("transaction is {size} bytes, the limit is {max}")]
    Oversized { size: usize, max: usize },
    #[error("transaction does not decode: {0}")]
    Malformed(CodecError),
    #[error("transaction is for chain {got}, this is {expected}")]
    WrongChain { expected: String, got: String },
    #[error("transaction expired at {expires_at_ms} (now {now_ms})")]
    Expired { expires_at_ms: u64, now_ms: u64 },
    #[error("expiry {expires_at_ms} is more than {max_ms} ms ahead")]
    ExpiryTooFar { expires_at_ms: u64, max_ms: u64 },
    #[error("sender {0} is not an account of any member")]
    UnknownSender(PublicKey),
    #[error("sender acts for {0}, a regulator: it reads everything and sends nothing")]
    ReadOnlySender(String),
    #[error("sender acts for {0}, which is suspended: it has no roles")]
    Suspended(String),
    #[error("nonce {got} was already used; the next nonce is {expected}")]
    NonceReplayed { expected: u64, got: u64 },
    #[error(
        "nonce {got} is too far ahead: the next nonce is {expected}, and a nonce may be \
         fewer than {max_gap} ahead of it"
    )]
    NonceTooFarAhead {
        expected: u64,
        got: u64,
        max_gap: u64,
    },
    #[error("transaction {0} is already waiting")]
    AlreadyKnown(Hash),
    #[error("another transaction with nonce {0} from this sender is already waiting")]
    NonceTaken(u64),
    #[error("sender's public key is weak or malformed")]
    WeakKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("mempool is full ({capacity} transactions)")]
    MempoolFull { capacity: usize },
    #[error("mempool is full ({max_bytes} bytes of transactions)")]
    MempoolBytesFull { max_bytes: usize },
    #[error("sender has {limit} transactions waiting, the most allowed")]
    SenderQueueFull { limit: usize },
    #[error(
        "organisation {org} holds its share of the mempool: at most {max_txs} transactions and {max_bytes} bytes"
    )]
    OrgShareFull {
        org: String,
        max_txs: usize,
        max_bytes: usize,
    },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl AdmissionError {
    /// Whether only a dishonest (or broken) peer forwards a transaction
    /// refused so: an honest one admitted it itself, and these checks depend
    /// on the transaction alone, not on state or the clock.
    pub fn blames_the_forwarder(&self) -> bool {
        matches!(
            self,
            AdmissionError::Oversized { .. }
                | AdmissionError::Malformed(_)
                | AdmissionError::WrongChain { .. }
                | AdmissionError::WeakKey
                | AdmissionError::BadSignature
        )
    }

    /// Stable machine-readable code, used by the API and the SDK.
    pub fn code(&self) -> &'static str {
        match self {
            AdmissionError::Oversized { .. } => "oversized",
            AdmissionError::Malformed(CodecError::NonCanonical) => "non_canonical",
            AdmissionError::Malformed(_) => "malformed",
            AdmissionError::WrongChain { .. } => "wrong_chain",
            AdmissionError::Expired { .. } => "expired",
            AdmissionError::ExpiryTooFar { .. } => "expiry_too_far",
            AdmissionError::UnknownSender(_) => "unknown_sender",
            AdmissionError::ReadOnlySender(_) => "read_only_sender",
            AdmissionError::Suspended(_) => "suspended",
            AdmissionError::NonceReplayed { .. } => "nonce_replayed",
            AdmissionError::NonceTooFarAhead { .. } => "nonce_too_far_ahead",
            AdmissionError::AlreadyKnown(_) => "already_known",
            AdmissionError::NonceTaken(_) => "nonce_taken",
            AdmissionError::WeakKey => "weak_key",
            AdmissionError::BadSignature => "bad_signature",
            AdmissionError::MempoolFull { .. } | AdmissionError::MempoolBytesFull { .. } => {
                "mempool_full"
            }
            AdmissionError::SenderQueueFull { .. } => "sender_queue_full",
            AdmissionError::OrgShareFull { .. } => "org_share_full",
            AdmissionError::Storage(_) => "internal",
        }
    }
}

/// Where a batch of transactions came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client of this node: each transaction stands alone, and those
    /// admitted are forwarded to peers.
    Client,
    /// A peer, forwarding what it admitted: the batch stands or falls whole.
    Peer,
}

struct Entry {
    tx: SignedTransaction,
    hash: Hash,
    size: usize,
    /// The sender's organisation when it was admitted.
    org: String,
}

/// What one organisation's senders have waiting.
#[derive(Default)]
struct Load {
    txs: usize,
    bytes: usize,
}

#[derive(Default)]
struct Pool {
    /// sender → nonce → transaction. Ordered, so block building is deterministic.
    senders: BTreeMap<PublicKey, BTreeMap<u64, Entry>>,
    /// For lookups only; never iterated.
    by_hash: HashMap<Hash, (PublicKey, u64)>,
    /// Encoded size of everything waiting.
    bytes: usize,
    /// By organisation, for its share.
    orgs: BTreeMap<String, Load>,
    dropped: DropLog,
}

/// How many of the latest drops [`Mempool::dropped`] remembers (about 5 MB).
const DROPS_KEPT: usize = 65_536;

/// The latest transactions pruned without being committed, with why: so
/// that a client waiting for one learns it will never commit instead of
/// reading "not found" until it gives up.
#[derive(Default)]
struct DropLog {
    /// For lookups only; never iterated.
    reasons: HashMap<Hash, DropReason>,
    /// Oldest first, to forget past [`DROPS_KEPT`].
    order: VecDeque<Hash>,
}

impl DropLog {
    fn record(&mut self, hash: Hash, reason: DropReason) {
        if self.reasons.insert(hash, reason).is_none() {
            self.order.push_back(hash);
        }
        if self.order.len() > DROPS_KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.reasons.remove(&oldest);
        }
    }
}

impl Pool {
    fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Takes the transaction out, returning its hash.
    fn remove(&mut self, sender: &PublicKey, nonce: u64) -> Option<Hash> {
        let mut removed = None;
        if let Some(queue) = self.senders.get_mut(sender) {
            if let Some(entry) = queue.remove(&nonce) {
                removed = Some(entry.hash);
                self.by_hash.remove(&entry.hash);
                self.bytes -= entry.size;
                let load = self.orgs.get_mut(&entry.org);
                debug_assert!(
                    load.is_some(),
                    "every entry counts in its organisation's load"
                );
                if let Some(load) = load {
                    load.txs -= 1;
                    load.bytes -= entry.size;
                    if load.txs == 0 {
                        self.orgs.remove(&entry.org);
                    }
                }
            }
            if queue.is_empty() {
                self.senders.remove(sender);
            }
        }
        removed
    }
}

/// Default of [`Mempool::with_max_bytes`]: 256 MiB, so a full pool of
/// largest transactions (count cap × size cap) cannot exhaust memory.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

/// Once the pool is half full (by count or by bytes), one organisation's
/// senders together may hold no more than this share of it (a quarter), or
/// one sender's limit if that is more: an organisation with many accounts
/// may use a pool that has room, but cannot fill it and keep the other
/// members' transactions out; at least half of it stays theirs.
const ORG_SHARE_DIVISOR: usize = 4;

pub struct Mempool {
    chain_id: String,
    params: ChainParams,
    max_bytes: usize,
    pool: Mutex<Pool>,
    arrived: tokio::sync::Notify,
    /// Transactions admitted since the start: whether any arrived since a
    /// point, for [`Mempool::admissions`]'s callers.
    admissions: std::sync::atomic::AtomicU64,
    /// Encoded transactions admitted here (not from peers), each with its
    /// hash, waiting to be forwarded to the other members; `None` on a node
    /// without peers. Always transactions still in the pool (pruned with
    /// it), so held to its byte cap even at an observer that has no
    /// validator to forward to.
    outbox: Option<Mutex<Vec<Encoded>>>,
    /// Counts what [`Mempool::prune`] drops, by reason (`trellis_mempool_dropped_total`).
    drop_counts: Option<Family<CodeLabels, Counter>>,
    /// The sender of the last transaction [`Mempool::candidates`] took: the
    /// next block's first pass starts after it, so that when blocks are full
    /// no sender is first (or last) every time by its key alone.
    last_taken_from: Mutex<Option<PublicKey>>,
}

/// A transaction's hash and canonical bytes.
type Encoded = (Hash, Vec<u8>);

/// A sender's waiting transactions from its committed nonce on, and the
/// nonce due next.
type Run<'a> = (PublicKey, std::collections::VecDeque<&'a Entry>, u64);

/// A transaction that passed the checks that need no signature.
struct Checked {
    tx: SignedTransaction,
    hash: Hash,
    size: usize,
    org: String,
}

impl Mempool {
    pub fn new(chain_id: String, params: ChainParams) -> Self {
        Mempool {
            chain_id,
            params,
            max_bytes: DEFAULT_MAX_BYTES,
            pool: Mutex::new(Pool::default()),
            arrived: tokio::sync::Notify::new(),
            admissions: std::sync::atomic::AtomicU64::new(0),
            outbox: None,
            drop_counts: None,
            last_taken_from: Mutex::new(None),
        }
    }

    /// Caps the encoded bytes of all waiting transactions (a local limit, beside
    /// the chain's count limits).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Keeps what is admitted locally for [`Mempool::take_outbox`], to forward to peers.
    pub fn with_forwarding(mut self) -> Self {
        self.outbox = Some(Mutex::new(Vec::new()));
        self
    }

    /// Counts each drop in `counts`, labelled with its reason.
    pub fn with_drop_counts(mut self, counts: Family<CodeLabels, Counter>) -> Self {
        self.drop_counts = Some(counts);
        self
    }

    /// Transactions admitted locally since the last call, to forward to
    /// peers, with their hashes.
    pub fn take_outbox(&self) -> Vec<Encoded> {
        match &self.outbox {
            Some(outbox) => std::mem::take(&mut *outbox.lock().unwrap_or_else(|e| e.into_inner())),
            None => Vec::new(),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A panic while holding the lock leaves the pool consistent (every
        // mutation is a single insert or remove), so poisoning is ignored.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.pool().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.pool().by_hash.contains_key(hash)
    }

    /// Why `hash` was dropped, if it is among the latest drops ([`DROPS_KEPT`]).
    pub fn dropped(&self, hash: &Hash) -> Option<DropReason> {
        self.pool().dropped.reasons.get(hash).copied()
    }

    /// Those of `hashes` still waiting, encoded (after the lock is let go),
    /// each with its hash; `None` for the others.
    pub fn encoded(&self, hashes: &[Hash]) -> Vec<Option<Encoded>> {
        let waiting: Vec<Option<SignedTransaction>> = {
            let pool = self.pool();
            hashes
                .iter()
                .map(|hash| {
                    let (sender, nonce) = pool.by_hash.get(hash)?;
                    Some(pool.senders.get(sender)?.get(nonce)?.tx.clone())
                })
                .collect()
        };
        hashes
            .iter()
            .zip(waiting)
            .map(|(hash, tx)| Some((*hash, trellis_types::encode(&tx?))))
            .collect()
    }

    /// How many transactions were admitted since the start.
    pub fn admissions(&self) -> u64 {
        self.admissions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves when a transaction was admitted since the last call.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    /// Admits one encoded signed transaction.
    pub fn admit(
        &self,
        bytes: &[u8],
        state: &dyn StateRead,
        now_ms: u64,
    ) -> Result<Hash, AdmissionError> {
        self.admit_batch(&[bytes], state, now_ms)
            .pop()
            .expect("one result per input")
    }

    /// Admits many submitted here; signatures are verified as one batch.
    pub fn admit_batch(
        &self,
        items: &[&[u8]],
        state: &dyn StateRead,
        now_ms: u64,
    ) -> Vec<Result<Hash, AdmissionError>> {
        self.admit_batches(&[(Origin::Client, items)], state, now_ms)
            .pop()
            .expect("one result per batch")
    }

    /// Admits many forwarded by a peer: the same checks, but not forwarded
    /// again. A peer forwards only what it admitted, so every signature it
    /// sends verifies; one that does not condemns the whole batch (each
    /// refused as its bad one is, `bad_signature` or `weak_key`), found by one
    /// batch equation and never signature by signature: a peer's bad batch
    /// costs this node what a good one does.
    pub fn admit_batch_from_peer(
        &self,
        items: &[&[u8]],
        state: &dyn StateRead,
        now_ms: u64,
    ) -> Vec<Result<Hash, AdmissionError>> {
        self.admit_batches(&[(Origin::Peer, items)], state, now_ms)
            .pop()
            .expect("one result per batch")
    }

    /// Admits several batches, in order, as [`Mempool::admit_batch`] or
    /// [`Mempool::admit_batch_from_peer`] would one after the other, with one
    /// batch equation over all their signatures: a signature costs less the
    /// larger its batch, and peers' batches are small. Only if that equation
    /// fails is each batch judged alone, so a bad signature costs its own
    /// batch's verdicts and never another's. One result per batch, one
    /// verdict per transaction.
    pub fn admit_batches(
        &self,
        batches: &[(Origin, &[&[u8]])],
        state: &dyn StateRead,
        now_ms: u64,
    ) -> Vec<Vec<Result<Hash, AdmissionError>>> {
        let checked: Vec<Vec<Result<Checked, AdmissionError>>> = batches
            .iter()
            .map(|(_, items)| {
                items
                    .iter()
                    .map(|bytes| self.check(bytes, state, now_ms))
                    .collect()
            })
            .collect();
        let triples: Vec<(Origin, Vec<SignatureCheck>)> = batches
            .iter()
            .zip(&checked)
            .map(|((origin, _), checked)| {
                let triples = checked
                    .iter()
                    .filter_map(|c| c.as_ref().ok())
                    .map(|c| (c.tx.tx.sender, c.hash, c.tx.signature))
                    .collect();
                (*origin, triples)
            })
            .collect();
        let verdicts = verify_batches(&triples);
        let mut results = Vec::with_capacity(batches.len());
        for (((origin, items), checked), verdicts) in batches.iter().zip(checked).zip(verdicts) {
            let mut verdicts = verdicts.into_iter();
            let admitted: Vec<_> = checked
                .into_iter()
                .map(|c| {
                    c.and_then(|c| {
                        let verdict = verdicts
                            .next()
                            .expect("one verdict per checked transaction");
                        // Room first, as one-by-one admission would see it after the
                        // batch's earlier inserts; the signature is the last check.
                        self.check_room(&self.pool(), &c)?;
                        match verdict {
                            Ok(()) => self.insert(c, state),
                            Err(SignatureError::MalformedKey | SignatureError::WeakKey) => {
                                Err(AdmissionError::WeakKey)
                            }
                            Err(_) => Err(AdmissionError::BadSignature),
                        }
                    })
                })
                .collect();
            if *origin == Origin::Client {
                self.to_forward(items, &admitted);
            }
            results.push(admitted);
        }
        let admitted = results.iter().flatten().filter(|r| r.is_ok()).count();
        if admitted > 0 {
            self.admissions
                .fetch_add(admitted as u64, std::sync::atomic::Ordering::Relaxed);
            self.arrived.notify_one();
        }
        results
    }

    /// Keeps what a client's batch had admitted for [`Mempool::take_outbox`].
    fn to_forward(&self, items: &[&[u8]], admitted: &[Result<Hash, AdmissionError>]) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        let mut outbox = outbox.lock().unwrap_or_else(|e| e.into_inner());
        for (bytes, result) in items.iter().zip(admitted) {
            if let Ok(hash) = result {
                outbox.push((*hash, bytes.to_vec()));
            }
        }
    }

    fn check(
        &self,
        bytes: &[u8],
        state: &dyn StateRead,
        now_ms: u64,
    ) -> Result<Checked, AdmissionError> {
        let max = self.params.max_tx_bytes as usize;
        if bytes.len() > max {
            return Err(AdmissionError::Oversized {
                size: bytes.len(),
                max,
            });
        }
        let stx: SignedTransaction = decode(bytes).map_err(AdmissionError::Malformed)?;
        let tx = &stx.tx;
        if tx.chain_id != self.chain_id {
            return Err(AdmissionError::WrongChain {
                expected: self.chain_id.clone(),
                got: tx.chain_id.clone(),
            });
        }
        if tx.expires_at_ms <= now_ms {
            return Err(AdmissionError::Expired {
                expires_at_ms: tx.expires_at_ms,
                now_ms,
            });
        }
        if tx.expires_at_ms - now_ms > self.params.max_expiry_ms {
            return Err(AdmissionError::ExpiryTooFar {
                expires_at_ms: tx.expires_at_ms,
                max_ms: self.params.max_expiry_ms,
            });
        }
        let org = self.check_sender(tx, state)?;
        let checked = Checked {
            hash: stx.hash(),
            tx: stx,
            size: bytes.len(),
            org,
        };
        self.check_room(&self.pool(), &checked)?;
        Ok(checked)
    }

    /// The sender is an account of a member that may send, and the nonce is
    /// neither used on chain nor `max_nonce_gap` or more ahead of it. Returns
    /// the sender's organisation.
    fn check_sender(
        &self,
        tx: &Transaction,
        state: &dyn StateRead,
    ) -> Result<String, AdmissionError> {
        let account = execution::account(state, &tx.sender)?
            .ok_or(AdmissionError::UnknownSender(tx.sender))?;
        let org = execution::organisation(state, &account.org)?;
        if execution::is_suspended(org.as_ref()) {
            return Err(AdmissionError::Suspended(account.org));
        }
        if !execution::may_send(org.as_ref()) {
            return Err(AdmissionError::ReadOnlySender(account.org));
        }
        if tx.nonce < account.nonce {
            return Err(AdmissionError::NonceReplayed {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        if tx.nonce - account.nonce >= self.params.max_nonce_gap {
            return Err(AdmissionError::NonceTooFarAhead {
                expected: account.nonce,
                got: tx.nonce,
                max_gap: self.params.max_nonce_gap,
            });
        }
        Ok(account.org)
    }

    fn check_room(&self, pool: &Pool, c: &Checked) -> Result<(), AdmissionError> {
        let (stx, hash) = (&c.tx, c.hash);
        if pool.by_hash.contains_key(&hash) {
            return Err(AdmissionError::AlreadyKnown(hash));
        }
        let queue = pool.senders.get(&stx.tx.sender);
        if queue.is_some_and(|q| q.contains_key(&stx.tx.nonce)) {
            return Err(AdmissionError::NonceTaken(stx.tx.nonce));
        }
        let capacity = self.params.mempool_capacity as usize;
        if pool.len() >= capacity {
            return Err(AdmissionError::MempoolFull { capacity });
        }
        if pool.bytes + c.size > self.max_bytes {
            return Err(AdmissionError::MempoolBytesFull {
                max_bytes: self.max_bytes,
            });
        }
        let limit = self.params.mempool_per_sender as usize;
        if queue.is_some_and(|q| q.len() >= limit) {
            return Err(AdmissionError::SenderQueueFull { limit });
        }
        let max_txs = (capacity / ORG_SHARE_DIVISOR).max(limit);
        let max_bytes = self.max_bytes / ORG_SHARE_DIVISOR;
        let half_full = pool.len() >= capacity / 2 || pool.bytes + c.size > self.max_bytes / 2;
        if half_full
            && let Some(load) = pool.orgs.get(&c.org)
            && (load.txs >= max_txs || load.bytes + c.size > max_bytes)
        {
            return Err(AdmissionError::OrgShareFull {
                org: c.org.clone(),
                max_txs,
                max_bytes,
            });
        }
        Ok(())
    }

    fn insert(&self, c: Checked, state: &dyn StateRead) -> Result<Hash, AdmissionError> {
        let mut pool = self.pool();
        // Re-check under the lock: another request may have taken the room or
        // the nonce, or a block may have used the nonce since `check` read it.
        // A block is staged (its state readable) before its transactions are
        // pruned under this lock, so a rival for the nonce is either still
        // waiting here or already visible as used.
        self.check_room(&pool, &c)?;
        self.check_sender(&c.tx.tx, state)?;
        let (sender, nonce) = (c.tx.tx.sender, c.tx.tx.nonce);
        pool.by_hash.insert(c.hash, (sender, nonce));
        pool.bytes += c.size;
        let load = pool.orgs.entry(c.org.clone()).or_default();
        load.txs += 1;
        load.bytes += c.size;
        pool.senders.entry(sender).or_default().insert(
            nonce,
            Entry {
                tx: c.tx,
                hash: c.hash,
                size: c.size,
                org: c.org,
            },
        );
        Ok(c.hash)
    }

    /// True when this exact transaction and signature passed admission here,
    /// so block validation need not verify the signature again.
    pub fn verified(&self, hash: &Hash, signature: &Signature) -> bool {
        let pool = self.pool();
        pool.by_hash
            .get(hash)
            .and_then(|(sender, nonce)| pool.senders.get(sender)?.get(nonce))
            .is_some_and(|e| e.tx.signature == *signature)
    }

    /// Transactions for the next block, each with its hash: for each
    /// sender, the run of consecutive nonces starting at its committed
    /// nonce, taken one per sender per pass so that a busy sender cannot
    /// starve the others. Passes go round the senders in key order from the
    /// one after the sender the last call took from last, so a full block
    /// does not always favour the same keys.
    pub fn candidates(
        &self,
        state: &dyn StateRead,
        max_txs: usize,
        max_bytes: u64,
    ) -> Result<Vec<(Hash, SignedTransaction)>, StorageError> {
        let pool = self.pool();
        let mut runs: Vec<Run> = Vec::new();
        for (sender, queue) in &pool.senders {
            if let Some(account) = execution::account(state, sender)? {
                runs.push((
                    *sender,
                    queue.range(account.nonce..).map(|(_, e)| e).collect(),
                    account.nonce,
                ));
            }
        }
        let mut last_taken_from = self
            .last_taken_from
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(last) = *last_taken_from {
            // `runs` is in key order, as `pool.senders` is.
            let first = runs.partition_point(|(sender, ..)| *sender <= last);
            runs.rotate_left(first);
        }
        let out = Self::take_round_robin(runs, max_txs, max_bytes);
        if let Some((_, tx)) = out.last() {
            *last_taken_from = Some(tx.tx.sender);
        }
        Ok(out)
    }

    fn take_round_robin(
        mut runs: Vec<Run>,
        max_txs: usize,
        max_bytes: u64,
    ) -> Vec<(Hash, SignedTransaction)> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        loop {
            let mut progressed = false;
            for (_, run, next) in &mut runs {
                if out.len() >= max_txs {
                    return out;
                }
                let Some(entry) = run.front().filter(|e| e.tx.tx.nonce == *next) else {
                    continue;
                };
                if bytes + entry.size as u64 > max_bytes {
                    return out;
                }
                bytes += entry.size as u64;
                *next += 1;
                out.push((entry.hash, entry.tx.clone()));
                run.pop_front();
                progressed = true;
            }
            if !progressed {
                return out;
            }
        }
    }

    /// After a block is committed (its transactions `committed`, the state
    /// `state` after it, its time `block_ms`): takes out its transactions and
    /// drops those no later block may include: any whose nonce is now used,
    /// whose sender is gone, or that expire by the next block's time (at
    /// least `block_ms + 1`). Chain time, not this node's clock, so that a
    /// drop is final and every node drops the same.
    pub fn prune(
        &self,
        state: &dyn StateRead,
        committed: &[Hash],
        block_ms: u64,
    ) -> Result<(), StorageError> {
        let next_block_ms = block_ms.saturating_add(1);
        let mut pool = self.pool();
        let mut stale: Vec<(PublicKey, u64, DropReason)> = Vec::new();
        for (sender, queue) in &pool.senders {
            let next = execution::account(state, sender)?.map(|a| a.nonce);
            for (nonce, entry) in queue {
                let reason = match next {
                    None => DropReason::SenderRemoved,
                    Some(next) if *nonce < next => DropReason::NonceUsed,
                    Some(_) if entry.tx.tx.expires_at_ms <= next_block_ms => DropReason::Expired,
                    Some(_) => continue,
                };
                stale.push((*sender, *nonce, reason));
            }
        }
        if !stale.is_empty() {
            let committed: HashSet<&Hash> = committed.iter().collect();
            for (sender, nonce, reason) in stale {
                if let Some(hash) = pool.remove(&sender, nonce)
                    && !committed.contains(&hash)
                {
                    pool.dropped.record(hash, reason);
                    if let Some(counts) = &self.drop_counts {
                        let code = reason.code().to_owned();
                        counts.get_or_create(&CodeLabels { code }).inc();
                    }
                }
            }
            if let Some(outbox) = &self.outbox {
                let mut outbox = outbox.lock().unwrap_or_else(|e| e.into_inner());
                outbox.retain(|(hash, _)| pool.by_hash.contains_key(hash));
            }
        }
        Ok(())
    }
}

/// A signature to check: the key, the hash it signs, the signature.
type SignatureCheck = (PublicKey, Hash, Signature);

/// One verdict per signature of each batch: one equation over them all
/// when there are several and it holds; otherwise each batch on its own, a
/// client's signature by signature, a peer's whole.
fn verify_batches(
    batches: &[(Origin, Vec<SignatureCheck>)],
) -> Vec<Vec<Result<(), SignatureError>>> {
    let several = batches.iter().filter(|(_, t)| !t.is_empty()).count() > 1;
    let all_good = several && {
        let all: Vec<_> = batches
            .iter()
            .flat_map(|(_, t)| t.iter().copied())
            .collect();
        verify_all(&all).is_ok()
    };
    batches
        .iter()
        .map(|(origin, triples)| match origin {
            _ if all_good => vec![Ok(()); triples.len()],
            Origin::Client => verify_batch(triples),
            Origin::Peer => vec![verify_all(triples); triples.len()],
        })
        .collect()
}

#[cfg(test)]
mod tests;
