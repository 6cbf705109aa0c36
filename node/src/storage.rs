//! Durable chain data in one sled tree: blocks, commit certificates, receipts,
//! the transaction index, the latest state, the state tree (its records in
//! the tree log beside sled, see [`tree_log`], sled holding tables of
//! pointers to them) and the chain head.
//!
//! Guarantees: all a block implies (block, certificate, receipts, indexes, state
//! writes, tree nodes, new head) is one batch, written all or nothing (through
//! a redo file, see [`redo`]; the tree log is synced before it), so a reopened
//! store holds all of a block or none of it. A block is committed in two steps:
//! [`Storage::stage_block`] checks it and makes it the head that every reader
//! sees (its records are read from memory, over sled's), and
//! [`StagedBlock::write`] makes the batch durable and applies it, which a
//! caller may do on another thread while the next block is built and staged;
//! [`Storage::commit_block`] does both. [`Storage::open`] finishes an
//! interrupted write, then re-derives the head block's roots from what is
//! stored; records are checksummed; any mismatch is [`StorageError::Corrupt`].
//! Assumes: blocks come in height order on top of the head, at most
//! [`MAX_STAGED`] staged at a time, written in height order (all enforced);
//! sled's flush is trusted for chain data, which peers can resend.

mod crash;
mod indexes;
mod prune;
mod recent;
mod redo;
mod tree_log;

pub use crate::state::live_tree::CopiedTree;
pub use indexes::Indexes;
pub use prune::{PruneReport, prune_state};
pub use recent::CommittedBlock;
pub(crate) use tree_log::TreeLog;

use crate::cache::Cache;
use crate::state::{StateUpdate, Writes};
use jmt::storage::TreeUpdateBatch;
use recent::RecentBlocks;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use trellis_types::block::receipts_root;
use trellis_types::{
    Block, DuplicateVote, Hash, Header, PublicKey, QuorumCertificate, Receipt, codec,
};

/// One-byte prefixes of the single sled tree. Heights and versions are
/// big-endian so that sled's byte order is numeric order.
pub(crate) mod prefix {
    /// `BLOCK ‖ height ‖ piece` → sealed `encode(Block)` (see [`seal`](super::seal)),
    /// in pieces (see [`put_in_pieces`](super::put_in_pieces)).
    pub const BLOCK: u8 = 0x01;
    /// `BLOCK_HASH ‖ hash` → height.
    pub const BLOCK_HASH: u8 = 0x02;
    /// `COMMIT ‖ height` → sealed `encode(QuorumCertificate)`.
    pub const COMMIT: u8 = 0x03;
    /// `RECEIPTS ‖ height ‖ group (u32)` → sealed `encode([Receipt])`: block
    /// `height`'s receipts from index `group × RECEIPTS_PER_GROUP` on, at most
    /// [`RECEIPTS_PER_GROUP`](super::RECEIPTS_PER_GROUP) of them.
    pub const RECEIPTS: u8 = 0x04;
    /// `TX ‖ tx hash` → `height ‖ index (u32)`: where a transaction is. Small
    /// enough for sled to keep inline, so that the one record every
    /// transaction adds to sled's index is as cheap as it can be.
    pub const TX: u8 = 0x05;
    /// `STATE ‖ raw key` → value: the latest committed state.
    pub const STATE: u8 = 0x06;
    // The state tree's records are in the tree log (see `tree_log`), under
    // these keys; sled holds pointers to them, in tables keyed by a record's
    // key without its last byte (the stale-node record's: its key).
    /// `TREE_NODE ‖ version ‖ group` → the state-tree nodes that version wrote
    /// in that group (see `state::tree_records`).
    pub const TREE_NODE: u8 = 0x07;
    /// `TREE_VALUE ‖ version ‖ first key-hash byte` → the values that version
    /// gave to the tree's leaves in that group.
    pub const TREE_VALUE: u8 = 0x08;
    /// `TREE_STALE ‖ version` → `borsh(Vec<NodeKey>)`: the nodes that version
    /// made stale, for pruning.
    pub const TREE_STALE: u8 = 0x09;

    /// `EVIDENCE ‖ height ‖ voter` → sealed `encode(DuplicateVote)`: the first
    /// proof of a validator's equivocation at a height (one proves it).
    pub const EVIDENCE: u8 = 0x0a;

    /// Whether `key` is a state-tree record's, or the key of pointers to them.
    pub fn is_tree(key: &[u8]) -> bool {
        matches!(key.first(), Some(&(TREE_NODE | TREE_VALUE | TREE_STALE)))
    }

    /// Chain metadata sits under prefix `0x00`: the sealed [`ChainHead`](super::ChainHead) ...
    pub const HEAD: &[u8] = b"\x00head";
    /// ... and the layout version, written with genesis ...
    pub const SCHEMA: &[u8] = b"\x00schema";
    /// ... and, once pruned, the oldest version whose state tree is kept (u64) ...
    pub const PRUNED: &[u8] = b"\x00pruned";
    /// ... and the indexes the store keeps, written with genesis (see `indexes`).
    pub const INDEXES: &[u8] = b"\x00indexes";
}

/// Layout version written with genesis; a store with another version is refused.
/// 2: receipts live in the transaction records. 3: tree nodes and values are stored in groups.
/// 4: blocks and stale-node lists are stored in pieces, in 8 MiB sled segments.
/// 5: tree nodes are grouped by their first three nibbles, not two.
/// 6: the state tree's records are in the tree log, sled holds pointers to them.
/// 7: receipts are stored per block in groups; a transaction's record is its location.
/// 8: sled holds the tree log's pointers in tables, a few per version.
/// 9: block headers commit to the whole body (signatures, the parent's certificate).
/// 10: transactions' `SystemOp` has governance's `propose` and `approve`, not `upgrade_contract`.
const SCHEMA_VERSION: u8 = 10;

/// Receipts per `RECEIPTS` record: a block writes one record per this many
/// transactions instead of one per transaction, and looking one transaction
/// up reads and decodes this many (a few KB).
const RECEIPTS_PER_GROUP: usize = 32;

/// sled's segment (log buffer) size. A quarter of it (2 MiB) is the largest
/// leaf page sled keeps inline in its log; a larger page goes to a blob file
/// of its own, and sled's cache then counts that page as the few bytes of the
/// pointer to it, so the page is never evicted and memory grows with what was
/// written. A leaf holds up to 17 records: 17 block pieces (64 KiB each)
/// stay inline at this size, not at sled's 512 KiB.
const SEGMENT_BYTES: usize = 8 << 20;

/// sled's cache by default, in bytes (`[storage] cache_mib`).
pub const DEFAULT_SLED_CACHE_BYTES: u64 = 256 << 20;

/// The largest piece a block is stored in, so that a leaf page of them stays
/// inline (see [`SEGMENT_BYTES`]): 17 pieces are about 1.1 MiB.
const PIECE_BYTES: usize = 64 * 1024;

/// `key ‖ index`: piece `index` of the record at `key`.
fn piece_key(key: &[u8], index: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 4);
    out.extend_from_slice(key);
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// Stores `value` at `key` as pieces of at most [`PIECE_BYTES`] (at least one).
pub(crate) fn put_in_pieces(records: &mut Records, key: &[u8], value: &[u8]) {
    let count = value.len().div_ceil(PIECE_BYTES).max(1);
    for index in 0..count {
        let piece = &value[index * PIECE_BYTES..value.len().min((index + 1) * PIECE_BYTES)];
        let index = u32::try_from(index).expect("a record is smaller than 256 TiB");
        records.insert(piece_key(key, index), Some(piece.into()));
    }
}

/// The record [`put_in_pieces`] stored at `key`: its pieces from the first up
/// to the first missing one. A lost piece shows as a record that fails its checksum.
fn read_pieces(db: &RecordReader, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
    let Some(first) = db.get(&piece_key(key, 0))? else {
        return Ok(None);
    };
    let mut value = first.to_vec();
    for index in 1.. {
        match db.get(&piece_key(key, index))? {
            Some(piece) => value.extend_from_slice(&piece),
            None => break,
        }
    }
    Ok(Some(value))
}

fn height_key(prefix: u8, height: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&height.to_be_bytes());
    key
}

/// The key of block `height`'s first piece: present for every stored block.
fn block_key(height: u64) -> Vec<u8> {
    piece_key(&height_key(prefix::BLOCK, height), 0)
}

/// `RECEIPTS ‖ height ‖ group`.
fn receipts_key(height: u64, group: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..9].copy_from_slice(&height_key(prefix::RECEIPTS, height));
    key[9..].copy_from_slice(&group.to_be_bytes());
    key
}

/// [`prefix::EVIDENCE`]'s key of a validator's proof at `height`, or where
/// that height's begin.
fn evidence_key(height: u64, voter: Option<&PublicKey>) -> Vec<u8> {
    let mut key = height_key(prefix::EVIDENCE, height).to_vec();
    if let Some(voter) = voter {
        key.extend_from_slice(&voter.0);
    }
    key
}

fn hash_key(prefix: u8, hash: &Hash) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = prefix;
    key[1..].copy_from_slice(&hash.0);
    key
}

/// A block's batch as sled keys and values (`None` removes the key), kept in
/// order so that readers can scan it beside sled while it is being written.
pub(crate) type Records = BTreeMap<Vec<u8>, Option<sled::IVec>>;

pub(crate) fn state_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(prefix::STATE);
    out.extend_from_slice(key);
    out
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("stored data is corrupt: {what}")]
    Corrupt { what: String },
    #[error("the chain has no genesis block yet")]
    NotInitialised,
    #[error("the chain already has a genesis block")]
    AlreadyInitialised,
    #[error("expected height {expected}, got {got}")]
    UnexpectedHeight { expected: u64, got: u64 },
    #[error("block's parent {got} is not the head block {expected}")]
    ParentMismatch { expected: Hash, got: Hash },
    #[error("block {height} does not match its parts: {reason}")]
    InvalidBlock { height: u64, reason: String },
    #[error("block {height} commits to state root {header} but its state update gives {computed}")]
    StateRootMismatch {
        height: u64,
        header: Hash,
        computed: Hash,
    },
    #[error("state update for version {version} no longer applies: {reason}")]
    StaleStateUpdate { version: u64, reason: String },
    #[error("version {version} is not committed (head: {head:?})")]
    VersionNotCommitted { version: u64, head: Option<u64> },
    #[error(
        "the state at height {version} was pruned from this node; it keeps heights {oldest} and later"
    )]
    Pruned { version: u64, oldest: u64 },
    #[error(
        "keys under `q/` are contracts' query indexes, kept beside the state tree and not in it: they have no proof and no history; ask the contract"
    )]
    NotInStateTree,
    #[error(
        "the store keeps {stored} but the configuration asks for {configured}: an index is \
         built block by block from genesis, so it cannot be switched on or off for a stored \
         chain; set [index] back, or start this node on an empty data directory and let it sync"
    )]
    IndexesDiffer {
        stored: Indexes,
        configured: Indexes,
    },
    /// The node keeps no such index (`[index]` in its configuration).
    #[error("this node keeps no {0} index ([index] in its configuration); ask a node that does")]
    NotIndexed(&'static str),
    #[error("block {height} is still being written; write it before staging another")]
    StillWriting { height: u64 },
    #[error("block {height} cannot be written before block {first}, staged before it")]
    WrittenOutOfOrder { height: u64, first: u64 },
    /// A limit of this node (not of the chain) was reached, e.g. all contract
    /// instance slots in use; trying again later may succeed.
    #[error("the node is busy: {0}")]
    Busy(String),
}

pub(crate) fn corrupt(what: impl Into<String>) -> StorageError {
    StorageError::Corrupt { what: what.into() }
}

/// The latest committed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub height: u64,
    pub block_hash: Hash,
    pub state_root: Hash,
    pub timestamp_ms: u64,
}

/// Where a committed transaction is, and what executing it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
    pub receipt: Receipt,
}

/// Handle on the node's store; clones share the same database.
#[derive(Clone)]
pub struct Storage {
    pub(crate) db: sled::Db,
    head: Arc<RwLock<Option<ChainHead>>>,
    /// Serialises `stage_block`: the head check and staging must not interleave.
    commit_lock: Arc<Mutex<()>>,
    /// The blocks staged and not yet written, oldest first, whose records
    /// readers see over sled's.
    staged: Arc<RwLock<StagedBlocks>>,
    /// The block last written, while its tree nodes are going into the node
    /// cache: tree reads take them from its update until then.
    uncached: Arc<RwLock<Option<Arc<Staged>>>>,
    /// The newest committed blocks with their receipts, for event streams.
    recent: Arc<RecentBlocks>,
    pub(crate) caches: Arc<ReadCaches>,
    /// Where [`StagedBlock::write`] puts a block's batch before applying it.
    redo_path: Arc<PathBuf>,
    pub(crate) tree_log: Arc<TreeLog>,
    /// The oldest version whose state tree is stored (0 unless pruned).
    pub(crate) oldest_state: u64,
    indexes: Indexes,
}

/// How many blocks may be staged and not yet written: one being written
/// while the next are executed, staged and wait their turn. Four rather
/// than two let blocks of uneven size overlap when catching up (a small
/// block executes while a large one is written, and the next large one
/// while the small ones are); a validator waits for its blocks to be
/// durable before it sends anything at the next height anyway.
pub const MAX_STAGED: usize = 4;

/// The staged blocks, oldest first; replaced whole when one is added or written.
type StagedBlocks = Arc<[Arc<Staged>]>;

/// A staged block: its records, except those of its state-tree update, which
/// it keeps as jmt's nodes and values. Encoding the update into records is the
/// writer's job, off the driver's path; until then readers take the update's
/// nodes and values from here.
pub(crate) struct Staged {
    pub(crate) height: u64,
    pub(crate) records: Records,
    pub(crate) tree: TreeUpdateBatch,
}

impl Staged {
    /// Appends the block's tree update to the tree log; returns the pointers
    /// to its records, for sled.
    fn append_tree(&self, log: &TreeLog, db: &sled::Db) -> Result<Records, StorageError> {
        let records = crate::state::tree_records(self.height, &self.tree);
        log.append(records.iter().map(|(k, v)| (&k[..], &v[..])))?
            .into_records(db)
    }

    /// The block's whole batch: its records, then `tree` (its [`Self::append_tree`]).
    fn batch<'a>(
        &'a self,
        tree: &'a Records,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + Clone {
        record_slices(&self.records).chain(record_slices(tree))
    }
}

/// Reads stored records: the staged blocks' first, newest first, then sled's.
/// Holds the staged blocks it started with, which stay right after they are
/// written (sled then holds the same records).
pub(crate) struct RecordReader<'a> {
    pub(crate) db: &'a sled::Db,
    tree_log: &'a TreeLog,
    staged: StagedBlocks,
    /// See [`Storage::uncached`]: only its tree nodes are read from here.
    pub(crate) uncached: Option<Arc<Staged>>,
}

impl RecordReader<'_> {
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StorageError> {
        if let Some(record) = self.staged().find_map(|s| s.records.get(key)) {
            return Ok(record.clone());
        }
        Ok(self.db.get(key)?)
    }

    /// A state-tree record, from the tree log (never staged: a staged
    /// block's tree update is read from the block itself).
    pub(crate) fn get_tree(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(stored) = self.db.get(tree_log::table_of(key).0)? else {
            return Ok(None);
        };
        match tree_log::find_pointer(key, &stored)? {
            Some(pointer) => self.tree_log.read(key, pointer).map(Some),
            None => Ok(None),
        }
    }

    /// The staged blocks, newest first.
    pub(crate) fn staged(&self) -> impl Iterator<Item = &Staged> {
        self.staged.iter().rev().map(|s| &**s)
    }
}

/// A block staged by [`Storage::stage_block`]: the head for every reader, not
/// yet on disk. Dropping it unwritten leaves the store unable to stage another
/// block (a reopened store has the block before it).
#[must_use = "a staged block is durable only once written"]
pub struct StagedBlock {
    storage: Storage,
    staged: Arc<Staged>,
    writes: Writes,
}

/// Entries the state-value cache keeps at least (and at most twice that); the
/// tree-node cache keeps four times as many, since a block writes several
/// nodes per key and a busy block writes tens of thousands (about 130 MiB at
/// most when full).
const READ_CACHE_ENTRIES: usize = 32_768;

/// What reads of committed data keep in memory, so execution and admission
/// rarely reach sled. Only committed data is ever cached.
pub(crate) struct ReadCaches {
    pub(crate) state: Mutex<StateCache>,
    /// Decoded state-tree nodes by version and path (a node never changes once written).
    pub(crate) nodes: Mutex<Cache<jmt::storage::NodeKey, jmt::storage::Node>>,
}

/// Latest committed value (or absence) by state key.
pub(crate) struct StateCache {
    /// Blocks committed so far: a read that began before a commit must not
    /// put its older value back after the commit updated the entry.
    pub(crate) commits: u64,
    pub(crate) values: Cache<Vec<u8>, Option<Vec<u8>>>,
}

impl ReadCaches {
    fn new(entries: usize) -> Self {
        ReadCaches {
            state: Mutex::new(StateCache {
                commits: 0,
                values: Cache::new(entries),
            }),
            nodes: Mutex::new(Cache::of_immutable(entries.saturating_mul(4))),
        }
    }
}

/// Locks a cache; a panic while holding one leaves it consistent (each change
/// is one insert or remove), so poisoning is ignored.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

/// A transaction's record: `height ‖ index`.
fn tx_record(height: u64, index: u32) -> [u8; 12] {
    let mut record = [0u8; 12];
    record[..8].copy_from_slice(&height.to_be_bytes());
    record[8..].copy_from_slice(&index.to_be_bytes());
    record
}

/// Records (head, blocks, certificates, receipts) are stored as
/// `blake3(encoding) ‖ encoding`: signatures and votes are covered by no root,
/// so without the checksum a flipped bit in them would still decode and pass.
fn seal<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let encoded = codec::encode(value);
    let mut out = Vec::with_capacity(CHECKSUM_LEN + encoded.len());
    out.extend_from_slice(blake3::hash(&encoded).as_bytes());
    out.extend_from_slice(&encoded);
    out
}

const CHECKSUM_LEN: usize = 32;

fn unseal<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StorageError> {
    if bytes.len() < CHECKSUM_LEN
        || blake3::hash(&bytes[CHECKSUM_LEN..]).as_bytes()[..] != bytes[..CHECKSUM_LEN]
    {
        return Err(corrupt(format!("{}: checksum mismatch", what())));
    }
    codec::decode(&bytes[CHECKSUM_LEN..]).map_err(|e| corrupt(format!("{}: {e}", what())))
}

/// How every store is opened, tests' and benchmarks' included (sled refuses another segment size).
pub fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        // Nearly every write is a block's, flushed by `StagedBlock::write`
        // itself (evidence, rare, goes with the next one).
        .flush_every_ms(None)
        .segment_size(SEGMENT_BYTES)
}

fn be_u64(bytes: &[u8], what: impl FnOnce() -> String) -> Result<u64, StorageError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("{}: not 8 bytes", what())))?;
    Ok(u64::from_be_bytes(array))
}

impl Storage {
    /// Opens (or creates) the store at `path` and checks the head block's
    /// integrity. It keeps the indexes it was created with (both, if new).
    pub fn open(path: &Path) -> Result<Storage, StorageError> {
        Self::open_inner(path, DEFAULT_SLED_CACHE_BYTES, READ_CACHE_ENTRIES, None)
    }

    /// [`Storage::open`] with `sled_cache_bytes` of sled cache, keeping
    /// `indexes`: a stored chain that keeps others is refused
    /// ([`StorageError::IndexesDiffer`]).
    pub fn open_with(
        path: &Path,
        sled_cache_bytes: u64,
        indexes: Indexes,
    ) -> Result<Storage, StorageError> {
        Self::open_inner(path, sled_cache_bytes, READ_CACHE_ENTRIES, Some(indexes))
    }

    /// [`Storage::open`] with read caches of `entries` entries.
    #[cfg(test)]
    pub(crate) fn open_with_cache(path: &Path, entries: usize) -> Result<Storage, StorageError> {
        Self::open_inner(path, DEFAULT_SLED_CACHE_BYTES, entries, None)
    }

    fn open_inner(
        path: &Path,
        sled_cache_bytes: u64,
        entries: usize,
        configured: Option<Indexes>,
    ) -> Result<Storage, StorageError> {
        prune::finish_interrupted(path)?;
        let db = sled_config(path)
            .cache_capacity(sled_cache_bytes)
            .open()
            .map_err(|e| match e {
                // sled's own words ask to change the segment size back, which no setting does.
                sled::Error::Unsupported(reason) if reason.contains("io buffer size") => {
                    corrupt(format!(
                        "the store was written with another sled segment size (storage layout \
                         version 3 or older; this build writes {SCHEMA_VERSION}): move the \
                         data directory aside and sync the chain again"
                    ))
                }
                e => e.into(),
            })?;
        if db.is_empty() {
            // A new store: its directory's name must survive a crash with
            // the first block written into it.
            redo::sync_dir(path)?;
        }
        let redo_path = redo::path(path);
        if let Some(height) = redo::recover(&db, &redo_path)? {
            tracing::warn!(
                height,
                "finished writing block {height}, which a stop had interrupted"
            );
        }
        // Before the tree log: a store of another layout has none, and is
        // refused for its layout, with no file created in it.
        Self::check_layout(&db)?;
        let indexes = Indexes::kept(&db, configured)?;
        let tree_log = Arc::new(TreeLog::open(path, db.is_empty())?);
        let head = Self::check_integrity(
            &RecordReader {
                db: &db,
                tree_log: &tree_log,
                staged: Arc::new([]),
                uncached: None,
            },
            indexes,
        )?;
        let oldest_state = match db.get(prefix::PRUNED)? {
            Some(v) => be_u64(&v, || "pruned version".into())?,
            None => 0,
        };
        Ok(Storage {
            db,
            head: Arc::new(RwLock::new(head)),
            commit_lock: Arc::new(Mutex::new(())),
            staged: Arc::new(RwLock::new(Arc::new([]))),
            uncached: Arc::new(RwLock::new(None)),
            recent: Arc::default(),
            caches: Arc::new(ReadCaches::new(entries)),
            redo_path: Arc::new(redo_path),
            tree_log,
            oldest_state,
            indexes,
        })
    }

    /// The indexes this store keeps.
    pub fn indexes(&self) -> Indexes {
        self.indexes
    }

    /// The latest committed block; `None` before genesis.
    pub fn head(&self) -> Option<ChainHead> {
        *read(&self.head)
    }

    /// Reads of stored records, the staged blocks' first.
    pub(crate) fn records(&self) -> RecordReader<'_> {
        RecordReader {
            db: &self.db,
            tree_log: &self.tree_log,
            staged: read(&self.staged).clone(),
            uncached: read(&self.uncached).clone(),
        }
    }

    /// Persists a committed block, its certificate, receipts (one per transaction, in
    /// block order) and the state update prepared for it, atomically and durably:
    /// [`Storage::stage_block`], then [`StagedBlock::write`].
    pub fn commit_block(
        &self,
        block: Arc<Block>,
        commit: &QuorumCertificate,
        receipts: Vec<Receipt>,
        update: StateUpdate,
    ) -> Result<(), StorageError> {
        self.stage_block(block, commit, receipts, update)?.write()
    }

    /// Checks a committed block with its certificate, receipts and state update
    /// and makes it the head: from now on every read sees it, served from memory
    /// until [`StagedBlock::write`] has put it in sled, and kept with its
    /// receipts among the newest blocks (see [`Storage::committed_block`]). At
    /// most [`MAX_STAGED`] blocks are staged at a time; they must be written in
    /// height order.
    pub fn stage_block(
        &self,
        block: Arc<Block>,
        commit: &QuorumCertificate,
        receipts: Vec<Receipt>,
        update: StateUpdate,
    ) -> Result<StagedBlock, StorageError> {
        self.stage(block, commit, receipts, update, true)
    }

    /// [`Storage::stage_block`] for a block whose body, receipts and header
    /// agree by construction: the chain's own, which it sealed from its
    /// receipts or executed and checked against its header. Checking them
    /// again here hashed every transaction and receipt of a block once more.
    pub(crate) fn stage_executed(
        &self,
        block: Arc<Block>,
        commit: &QuorumCertificate,
        receipts: Vec<Receipt>,
        update: StateUpdate,
    ) -> Result<StagedBlock, StorageError> {
        self.stage(block, commit, receipts, update, false)
    }

    fn stage(
        &self,
        block: Arc<Block>,
        commit: &QuorumCertificate,
        receipts: Vec<Receipt>,
        mut update: StateUpdate,
        check_body: bool,
    ) -> Result<StagedBlock, StorageError> {
        let _writer = self
            .commit_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let staged_now = read(&self.staged).clone();
        if staged_now.len() >= MAX_STAGED {
            return Err(StorageError::StillWriting {
                height: staged_now[0].height,
            });
        }
        let head = self.head();
        let header = &block.header;
        let height = header.height;
        match head {
            None if height != 0 => return Err(StorageError::NotInitialised),
            Some(_) if height == 0 => return Err(StorageError::AlreadyInitialised),
            Some(h) if height != h.height + 1 => {
                return Err(StorageError::UnexpectedHeight {
                    expected: h.height + 1,
                    got: height,
                });
            }
            Some(h) if header.parent != h.block_hash => {
                return Err(StorageError::ParentMismatch {
                    expected: h.block_hash,
                    got: header.parent,
                });
            }
            _ => {}
        }
        let block_hash = block.hash();
        let invalid = |reason: String| StorageError::InvalidBlock { height, reason };
        if commit.block != block_hash || commit.height != height {
            return Err(invalid(format!(
                "commit certificate is for block {} at height {}, not {block_hash}",
                commit.block, commit.height
            )));
        }
        if check_body {
            check_body_and_receipts(&block, &receipts).map_err(invalid)?;
        }
        if update.version != height {
            return Err(StorageError::StaleStateUpdate {
                version: update.version,
                reason: format!("prepared for version {}, block is {height}", update.version),
            });
        }
        if update.base_root != head.map(|h| h.state_root) {
            return Err(StorageError::StaleStateUpdate {
                version: update.version,
                reason: "prepared on a state other than the head's".into(),
            });
        }
        if update.root != header.state_root {
            return Err(StorageError::StateRootMismatch {
                height,
                header: header.state_root,
                computed: update.root,
            });
        }

        let mut records = Records::new();
        put_in_pieces(
            &mut records,
            &height_key(prefix::BLOCK, height),
            &seal(&*block),
        );
        let mut put = |key: &[u8], value: Vec<u8>| records.insert(key.to_vec(), Some(value.into()));
        put(
            &hash_key(prefix::BLOCK_HASH, &block_hash),
            height.to_be_bytes().to_vec(),
        );
        put(&height_key(prefix::COMMIT, height), seal(commit));
        let too_many = || invalid("more than 2^32 transactions".into());
        // Execution refuses a nonce used before, so a transaction commits at
        // most once and its record is never overwritten.
        for (index, receipt) in receipts.iter().enumerate() {
            let index = u32::try_from(index).map_err(|_| too_many())?;
            if self.indexes.transactions {
                put(
                    &hash_key(prefix::TX, &receipt.tx),
                    tx_record(height, index).to_vec(),
                );
            }
        }
        for (group, part) in receipts.chunks(RECEIPTS_PER_GROUP).enumerate() {
            let group = u32::try_from(group).map_err(|_| too_many())?;
            put(&receipts_key(height, group), seal(part));
        }
        let new_head = ChainHead {
            height,
            block_hash,
            state_root: header.state_root,
            timestamp_ms: header.timestamp_ms,
        };
        put(prefix::HEAD, seal(&new_head));
        if height == 0 {
            put(prefix::SCHEMA, vec![SCHEMA_VERSION]);
            put(prefix::INDEXES, self.indexes.record());
        }
        if !self.indexes.queries {
            update
                .writes
                .retain(|key, _| crate::state::in_state_tree(key));
        }
        crate::state::write_state(&mut records, &update.writes);
        let staged = Arc::new(Staged {
            height,
            records,
            tree: update.tree,
        });
        // Readers see the block from here on: its records first, then the head.
        // Rebuilt under the lock: the writer may be removing a written block.
        let mut slot = write(&self.staged);
        *slot = slot.iter().cloned().chain([staged.clone()]).collect();
        drop(slot);
        self.recent
            .push(Arc::new(CommittedBlock::new(block, receipts)));
        *write(&self.head) = Some(new_head);
        Ok(StagedBlock {
            storage: self.clone(),
            staged,
            writes: update.writes,
        })
    }

    /// The committed block at `height`, or `None` above the head.
    pub fn block(&self, height: u64) -> Result<Option<Block>, StorageError> {
        // The head first: a block staged after this read is then above it. The
        // other order could find a staged head without its records.
        let head = self.head().map(|h| h.height);
        Self::read_block(&self.records(), height, head)
    }

    pub fn block_by_hash(&self, hash: &Hash) -> Result<Option<Block>, StorageError> {
        let Some(height) = self.block_height(hash)? else {
            return Ok(None);
        };
        let block = self
            .block(height)?
            .ok_or_else(|| corrupt(format!("block {hash} indexed at missing height {height}")))?;
        check_indexed(&block, hash)?;
        Ok(Some(block))
    }

    /// The height of the committed block `hash`, from the hash index alone:
    /// a caller that reads the block itself checks it with [`check_indexed`].
    pub fn block_height(&self, hash: &Hash) -> Result<Option<u64>, StorageError> {
        self.records()
            .get(&hash_key(prefix::BLOCK_HASH, hash))?
            .map(|bytes| be_u64(&bytes, || format!("height of block {hash}")))
            .transpose()
    }

    /// The certificate that committed the block at `height`.
    pub fn commit_certificate(
        &self,
        height: u64,
    ) -> Result<Option<QuorumCertificate>, StorageError> {
        let head = self.head().map(|h| h.height); // first, as in `block`
        Self::read_commit(&self.records(), height, head)
    }

    /// The header of the committed block at `height` with the certificate
    /// that committed it, read without the block's body: the header is
    /// decoded from the start of the block's first piece and checked
    /// against the certificate, which names its hash (the block's checksum
    /// covers the whole body, which is not read). `None` above the head.
    pub fn certified_header(
        &self,
        height: u64,
    ) -> Result<Option<(Header, QuorumCertificate)>, StorageError> {
        let head = self.head().map(|h| h.height); // first, as in `block`
        let db = self.records();
        let Some(commit) = Self::read_commit(&db, height, head)? else {
            return Ok(None);
        };
        let first = db
            .get(&block_key(height))?
            .ok_or_else(|| corrupt(format!("block {height} is missing")))?;
        let encoded = first.get(CHECKSUM_LEN..).unwrap_or_default();
        let (header, _) = codec::decode_prefix::<Header>(encoded)
            .map_err(|e| corrupt(format!("header of block {height}: {e}")))?;
        if header.height != height || header.hash() != commit.block {
            return Err(corrupt(format!(
                "the header stored at height {height} is not the block its certificate names"
            )));
        }
        Ok(Some((header, commit)))
    }

    /// Keeps `proof` of a validator's equivocation unless one for the same
    /// validator and height is kept; returns whether it is new. So a
    /// validator equivocating in every round of a height writes one record.
    /// It reaches the disk with the next block's flush.
    pub fn record_evidence(&self, proof: &DuplicateVote) -> Result<bool, StorageError> {
        let key = evidence_key(proof.second.data.height, Some(&proof.second.voter));
        let new = self
            .db
            .compare_and_swap(key, None::<&[u8]>, Some(seal(proof)))?
            .is_ok();
        Ok(new)
    }

    /// Whether a proof of `voter`'s equivocation at `height` is kept.
    pub fn has_evidence(&self, height: u64, voter: &PublicKey) -> Result<bool, StorageError> {
        Ok(self.db.contains_key(evidence_key(height, Some(voter)))?)
    }

    /// Up to `limit` proofs of equivocation in order of height and validator,
    /// from `from_height` on, or after `after`'s proof at that height.
    pub fn evidence(
        &self,
        from_height: u64,
        after: Option<&PublicKey>,
        limit: usize,
    ) -> Result<Vec<DuplicateVote>, StorageError> {
        let start = match after {
            Some(voter) => Bound::Excluded(evidence_key(from_height, Some(voter))),
            None => Bound::Included(evidence_key(from_height, None)),
        };
        let end = Bound::Excluded(vec![prefix::EVIDENCE + 1]);
        self.db
            .range::<Vec<u8>, _>((start, end))
            .take(limit)
            .map(|record| {
                let (key, value) = record?;
                unseal(&value, || format!("evidence record {key:?}"))
            })
            .collect()
    }

    /// The receipts of the block at `height`, in transaction order; `None` above the head.
    pub fn receipts(&self, height: u64) -> Result<Option<Vec<Receipt>>, StorageError> {
        match self.block(height)? {
            Some(block) => self.block_receipts(&block).map(Some),
            None => Ok(None),
        }
    }

    /// The committed block at `height` with its receipts; `None` above the
    /// head. One of the newest is shared from memory, an older one is read.
    pub fn committed_block(
        &self,
        height: u64,
    ) -> Result<Option<Arc<CommittedBlock>>, StorageError> {
        if let Some(committed) = self.recent.get(height) {
            return Ok(Some(committed));
        }
        let Some(block) = self.block(height)? else {
            return Ok(None);
        };
        let receipts = self.block_receipts(&block)?;
        Ok(Some(Arc::new(CommittedBlock::new(
            Arc::new(block),
            receipts,
        ))))
    }

    /// The receipts of a committed `block`'s transactions, in order.
    pub fn block_receipts(&self, block: &Block) -> Result<Vec<Receipt>, StorageError> {
        Self::read_receipts(&self.records(), block)
    }

    /// Where transaction `tx` was committed, with its receipt; an error if
    /// this store keeps no transaction index.
    pub fn tx_location(&self, tx: &Hash) -> Result<Option<TxLocation>, StorageError> {
        if !self.indexes.transactions {
            return Err(StorageError::NotIndexed("transaction"));
        }
        Self::read_tx(&self.records(), tx)
    }

    fn read_tx(db: &RecordReader, tx: &Hash) -> Result<Option<TxLocation>, StorageError> {
        let Some((height, index)) = Self::read_tx_record(db, tx)? else {
            return Ok(None);
        };
        let group = Self::read_receipt_group(db, height, index / RECEIPTS_PER_GROUP as u32)?;
        let receipt = group
            .into_iter()
            .nth(index as usize % RECEIPTS_PER_GROUP)
            .filter(|receipt| receipt.tx == *tx)
            .ok_or_else(|| {
                corrupt(format!(
                    "transaction {tx} is recorded at {height}:{index}, whose receipt is for another"
                ))
            })?;
        Ok(Some(TxLocation {
            height,
            index,
            receipt,
        }))
    }

    /// Where the record of transaction `tx` says it is: `(height, index)`.
    fn read_tx_record(db: &RecordReader, tx: &Hash) -> Result<Option<(u64, u32)>, StorageError> {
        let Some(bytes) = db.get(&hash_key(prefix::TX, tx))? else {
            return Ok(None);
        };
        let Ok(bytes) = <[u8; 12]>::try_from(&bytes[..]) else {
            return Err(corrupt(format!(
                "record of transaction {tx}: {} bytes, not 12",
                bytes.len()
            )));
        };
        let (height, index) = bytes.split_at(8);
        let height = u64::from_be_bytes(height.try_into().expect("8 bytes"));
        let index = u32::from_be_bytes(index.try_into().expect("4 bytes"));
        Ok(Some((height, index)))
    }

    /// Receipt group `group` of block `height` (see [`prefix::RECEIPTS`]).
    fn read_receipt_group(
        db: &RecordReader,
        height: u64,
        group: u32,
    ) -> Result<Vec<Receipt>, StorageError> {
        let what = || format!("receipts {group} of block {height}");
        let bytes = db
            .get(&receipts_key(height, group))?
            .ok_or_else(|| corrupt(format!("{} are missing", what())))?;
        let receipts: Vec<Receipt> = unseal(&bytes, what)?;
        if receipts.is_empty() || receipts.len() > RECEIPTS_PER_GROUP {
            return Err(corrupt(format!("{}: {} receipts", what(), receipts.len())));
        }
        Ok(receipts)
    }

    fn read_block(
        db: &RecordReader,
        height: u64,
        head: Option<u64>,
    ) -> Result<Option<Block>, StorageError> {
        match read_pieces(db, &height_key(prefix::BLOCK, height))? {
            Some(bytes) => unseal(&bytes, || format!("block {height}")).map(Some),
            None if head.is_some_and(|h| height <= h) => {
                Err(corrupt(format!("block {height} is missing")))
            }
            None => Ok(None),
        }
    }

    fn read_commit(
        db: &RecordReader,
        height: u64,
        head: Option<u64>,
    ) -> Result<Option<QuorumCertificate>, StorageError> {
        match db.get(&height_key(prefix::COMMIT, height))? {
            Some(bytes) => {
                unseal(&bytes, || format!("commit certificate of block {height}")).map(Some)
            }
            None if head.is_some_and(|h| height <= h) => Err(corrupt(format!(
                "commit certificate of block {height} is missing"
            ))),
            None => Ok(None),
        }
    }

    /// The receipts of `block`'s transactions, from its receipt groups.
    fn read_receipts(db: &RecordReader, block: &Block) -> Result<Vec<Receipt>, StorageError> {
        let height = block.header.height;
        let groups = u32::try_from(block.txs.len().div_ceil(RECEIPTS_PER_GROUP))
            .map_err(|_| corrupt(format!("block {height} has more than 2^32 transactions")))?;
        let mut receipts = Vec::with_capacity(block.txs.len());
        for group in 0..groups {
            receipts.extend(Self::read_receipt_group(db, height, group)?);
        }
        if receipts.len() != block.txs.len() {
            return Err(corrupt(format!(
                "block {height} has {} transactions and {} receipts",
                block.txs.len(),
                receipts.len()
            )));
        }
        if let Some(index) = block
            .txs
            .iter()
            .zip(&receipts)
            .position(|(tx, receipt)| tx.hash() != receipt.tx)
        {
            return Err(corrupt(format!(
                "receipt {index} of block {height} is for another transaction"
            )));
        }
        Ok(receipts)
    }

    /// Re-checks the head block against everything stored for it.
    /// Refuses a store written in another storage layout (a store without a
    /// head is new, or is refused by [`Self::check_integrity`]).
    fn check_layout(db: &sled::Db) -> Result<(), StorageError> {
        if !db.contains_key(prefix::HEAD)? {
            return Ok(());
        }
        match db.get(prefix::SCHEMA)?.as_deref() {
            Some([SCHEMA_VERSION]) => Ok(()),
            Some(&[other]) => Err(corrupt(format!(
                "the store has storage layout version {other}, this build reads version \
                 {SCHEMA_VERSION}: move the data directory aside and sync the chain again"
            ))),
            _ => Err(corrupt(
                "the store's layout version is missing or malformed",
            )),
        }
    }

    fn check_integrity(
        db: &RecordReader,
        indexes: Indexes,
    ) -> Result<Option<ChainHead>, StorageError> {
        let Some(head_bytes) = db.get(prefix::HEAD)? else {
            if db.db.is_empty() {
                return Ok(None);
            }
            return Err(corrupt("data present but no chain head"));
        };
        let head: ChainHead = unseal(&head_bytes, || "chain head".into())?;
        let h = head.height;
        let block = Self::read_block(db, h, Some(h))?
            .ok_or_else(|| corrupt(format!("head block {h} is missing")))?;
        let header = &block.header;
        let block_hash = block.hash();
        if header.height != h || block_hash != head.block_hash {
            return Err(corrupt(format!(
                "head records block {} at height {h}, stored block is {block_hash} at height {}",
                head.block_hash, header.height
            )));
        }
        if header.state_root != head.state_root || header.timestamp_ms != head.timestamp_ms {
            return Err(corrupt(format!(
                "head block {h} disagrees with the recorded head"
            )));
        }
        match db.get(&hash_key(prefix::BLOCK_HASH, &block_hash))? {
            Some(v) if *v == h.to_be_bytes() => {}
            _ => {
                return Err(corrupt(format!(
                    "hash index of head block {h} is missing or wrong"
                )));
            }
        }
        let receipts = Self::read_receipts(db, &block)?;
        check_body_and_receipts(&block, &receipts)
            .map_err(|reason| corrupt(format!("head block {h}: {reason}")))?;
        // Each transaction's record, unless the store keeps no such index.
        let indexed = if indexes.transactions {
            &receipts[..]
        } else {
            &[]
        };
        for (index, receipt) in indexed.iter().enumerate() {
            let tx = &receipt.tx;
            match Self::read_tx_record(db, tx)? {
                Some(at) if at == (h, index as u32) => {}
                Some((height, index)) => {
                    return Err(corrupt(format!(
                        "transaction {tx} of head block {h} is recorded at {height}:{index}"
                    )));
                }
                None => {
                    return Err(corrupt(format!(
                        "record of transaction {tx} of head block {h} is missing"
                    )));
                }
            }
        }
        let state_root = crate::state::tree_root(db, h)?
            .ok_or_else(|| corrupt(format!("state tree has no root at version {h}")))?;
        if state_root != header.state_root {
            return Err(corrupt(format!(
                "state tree root {state_root} at version {h} differs from the head block's {}",
                header.state_root
            )));
        }
        let commit = Self::read_commit(db, h, Some(h))?
            .ok_or_else(|| corrupt(format!("commit certificate of head block {h} is missing")))?;
        if commit.block != block_hash || commit.height != h {
            return Err(corrupt(format!(
                "commit certificate of head block {h} is for another block"
            )));
        }
        if db.get(&block_key(h + 1))?.is_some() {
            return Err(corrupt(format!("block {} is stored above the head", h + 1)));
        }
        Ok(Some(head))
    }
}

impl std::fmt::Debug for StagedBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedBlock")
            .field("height", &self.staged.height)
            .finish_non_exhaustive()
    }
}

impl StagedBlock {
    pub fn height(&self) -> u64 {
        self.staged.height
    }

    /// Writes the staged block: its batch as one redo file, synced (from then
    /// on the block survives a crash), then key by key into sled (see [`redo`]).
    /// An error means it may not be durable: callers should treat it as fatal.
    /// Staged blocks must be written in height order.
    pub fn write(self) -> Result<(), StorageError> {
        self.write_then(|| (), || ())
    }

    /// [`Self::write`], calling `durable` once the redo file is synced (the
    /// block survives a crash from then on, long before it is in sled) and
    /// `written` once the block is in sled and no longer staged, before its
    /// tree nodes go into the node cache (the longest part of filling the
    /// caches), so that whoever waits for either need not wait for more.
    pub fn write_then(
        self,
        durable: impl FnOnce(),
        written: impl FnOnce(),
    ) -> Result<(), StorageError> {
        let StagedBlock {
            storage,
            staged,
            writes,
        } = self;
        if let Some(oldest) = read(&storage.staged).first()
            && !Arc::ptr_eq(oldest, &staged)
        {
            return Err(StorageError::WrittenOutOfOrder {
                height: staged.height,
                first: oldest.height,
            });
        }
        let tree = staged.append_tree(&storage.tree_log, &storage.db)?;
        let batch = staged.batch(&tree);
        redo::write(&storage.redo_path, staged.height, batch.clone())?;
        crash::abort_if_planned(crash::Point::RedoSynced, staged.height);
        durable();
        if crash::planned_at(crash::Point::HalfApplied, staged.height) {
            let half = batch.clone().count() / 2;
            redo::apply(&storage.db, batch.clone().take(half))?;
            storage.db.flush()?;
            crash::abort_if_planned(crash::Point::HalfApplied, staged.height);
        }
        redo::apply(&storage.db, batch)?;
        // Before the block leaves the staged slot: a cached value it replaced
        // must not be read again.
        crate::state::cache_values(&storage.caches, writes);
        storage.db.flush()?;
        redo::clear(&storage.redo_path)?;
        *write(&storage.uncached) = Some(staged.clone());
        let mut slot = write(&storage.staged);
        *slot = slot
            .iter()
            .filter(|s| !Arc::ptr_eq(s, &staged))
            .cloned()
            .collect();
        drop(slot);
        written();
        crate::state::cache_nodes(&storage.caches, &staged.tree);
        let mut uncached = write(&storage.uncached);
        // A later block may have taken the slot already.
        if uncached.as_ref().is_some_and(|u| Arc::ptr_eq(u, &staged)) {
            *uncached = None;
        }
        Ok(())
    }
}

/// That `block`, read at the height the hash index gave for `hash`, is that block.
pub fn check_indexed(block: &Block, hash: &Hash) -> Result<(), StorageError> {
    if block.hash() == *hash {
        return Ok(());
    }
    Err(corrupt(format!(
        "block {hash} indexed at height {}, which holds another block",
        block.header.height
    )))
}

/// Why `receipts` are not those of `block`'s body, or the body not the one
/// its header commits to.
fn check_body_and_receipts(block: &Block, receipts: &[Receipt]) -> Result<(), String> {
    if receipts.len() != block.txs.len() {
        return Err(format!(
            "{} receipts for {} transactions",
            receipts.len(),
            block.txs.len()
        ));
    }
    let tx_hashes = block.tx_hashes();
    if let Some(mismatch) = block.mismatched_body(&tx_hashes) {
        return Err(mismatch.into());
    }
    if let Some(i) = tx_hashes
        .iter()
        .zip(receipts)
        .position(|(tx, r)| *tx != r.tx)
    {
        return Err(format!("receipt {i} is not for transaction {i}"));
    }
    if receipts_root(receipts) != block.header.receipts_root {
        return Err("receipts_root does not match the receipts".into());
    }
    Ok(())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn record_slices(records: &Records) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + Clone {
    records.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
}

/// Writes records into a store being filled (a prune's copy) in batches,
/// so that sled is not asked to apply one huge batch or millions of single
/// inserts.
pub(crate) struct BatchedWriter<'a> {
    to: &'a sled::Db,
    tree_log: &'a TreeLog,
    batch: sled::Batch,
    /// State-tree records gathered, for the tree log.
    tree: Vec<(Vec<u8>, Vec<u8>)>,
    in_batch: usize,
    /// Records written so far.
    pub(crate) written: u64,
}

impl<'a> BatchedWriter<'a> {
    const BATCH_RECORDS: usize = 4096;

    pub(crate) fn new(to: &'a sled::Db, tree_log: &'a TreeLog) -> Self {
        BatchedWriter {
            to,
            tree_log,
            batch: sled::Batch::default(),
            tree: Vec::new(),
            in_batch: 0,
            written: 0,
        }
    }

    /// Writes `value` at `key`; a state-tree record goes to the tree log.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        if prefix::is_tree(key) {
            self.tree.push((key.to_vec(), value.to_vec()));
        } else {
            self.batch.insert(key, value);
        }
        self.in_batch += 1;
        self.written += 1;
        if self.in_batch == Self::BATCH_RECORDS {
            self.flush()?;
        }
        Ok(())
    }

    /// Applies what is gathered (the caller flushes sled itself).
    pub(crate) fn flush(&mut self) -> Result<(), StorageError> {
        if !self.tree.is_empty() {
            let tree = std::mem::take(&mut self.tree);
            let pointers = self
                .tree_log
                .append(tree.iter().map(|(k, v)| (&k[..], &v[..])))?
                .into_records(self.to)?;
            for (key, pointer) in pointers {
                self.batch
                    .insert(key, pointer.expect("append gives a pointer for each"));
            }
        }
        self.to.apply_batch(std::mem::take(&mut self.batch))?;
        self.in_batch = 0;
        Ok(())
    }
}

/// sled releases its file lock from a background thread after the last handle is
/// dropped, so a reopen right after a drop may briefly find the lock still held.
pub(crate) fn retry_while_locked<T>(
    mut f: impl FnMut() -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    for _ in 0..100 {
        match f() {
            Err(StorageError::Io(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
    f()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::StateRead;
    use trellis_types::block::tx_root;
    use trellis_types::{
        KeyPair, Payload, ReceiptStatus, SignedTransaction, SystemOp, Transaction,
    };

    pub(crate) fn signed_remark(key: &KeyPair, nonce: u64) -> SignedTransaction {
        remark_with(key, nonce, format!("remark {nonce}").into_bytes())
    }

    fn remark_with(key: &KeyPair, nonce: u64, data: Vec<u8>) -> SignedTransaction {
        Transaction {
            chain_id: "test".into(),
            sender: key.public(),
            nonce,
            expires_at_ms: u64::MAX,
            payload: Payload::System(SystemOp::Remark { data: data.into() }),
        }
        .sign(key)
    }

    pub(crate) fn success(tx: &SignedTransaction) -> Receipt {
        Receipt {
            tx: tx.hash(),
            status: ReceiptStatus::Success,
            error: None,
            fuel_used: 1,
            events: Vec::new(),
        }
    }

    /// Prepares `writes` on top of the head and commits a consistent block carrying `txs`.
    pub(crate) fn commit(storage: &Storage, txs: Vec<SignedTransaction>, writes: Writes) -> Block {
        let (block, staged) = stage(storage, txs, writes);
        staged.write().expect("write the staged block");
        block
    }

    /// [`commit`] up to staging: the block is the head, not yet written.
    pub(crate) fn stage(
        storage: &Storage,
        txs: Vec<SignedTransaction>,
        writes: Writes,
    ) -> (Block, StagedBlock) {
        let head = storage.head();
        let height = head.map_or(0, |h| h.height + 1);
        let update = storage
            .prepare_state(height, writes)
            .expect("prepare_state");
        let receipts: Vec<Receipt> = txs.iter().map(success).collect();
        let block = Block {
            header: trellis_types::Header {
                chain_id: "test".into(),
                height,
                round: 0,
                parent: head.map_or(Hash::ZERO, |h| h.block_hash),
                tx_root: tx_root(&txs),
                parent_commit_hash: QuorumCertificate::genesis(Hash::ZERO).hash(),
                receipts_root: receipts_root(&receipts),
                state_root: update.root,
                timestamp_ms: 1_000 + height,
                proposer: KeyPair::insecure_from_label("proposer").public(),
            },
            parent_commit: QuorumCertificate::genesis(Hash::ZERO),
            txs,
        };
        let qc = QuorumCertificate {
            height,
            round: 0,
            block: block.hash(),
            votes: Vec::new(),
        };
        let staged = storage
            .stage_block(Arc::new(block.clone()), &qc, receipts, update)
            .expect("stage_block");
        (block, staged)
    }

    pub(crate) fn writes(pairs: &[(&str, Option<&str>)]) -> Writes {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    pub(crate) use super::retry_while_locked;

    fn open(dir: &tempfile::TempDir) -> Result<Storage, StorageError> {
        retry_while_locked(|| Storage::open(dir.path()))
    }

    #[test]
    fn fresh_store_has_no_head_and_no_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir).unwrap();
        assert_eq!(storage.head(), None);
        assert!(storage.block(0).unwrap().is_none());
        assert!(storage.receipts(0).unwrap().is_none());
    }

    #[test]
    fn a_store_without_indexes_keeps_the_chain_and_state_but_no_index() {
        let dir = tempfile::tempdir().unwrap();
        let open_keeping =
            |indexes| retry_while_locked(|| Storage::open_with(dir.path(), 1 << 20, indexes));
        let storage = open_keeping(Indexes::NONE).unwrap();
        let key = KeyPair::insecure_from_label("alice");
        let tx = signed_remark(&key, 0);
        commit(&storage, vec![], writes(&[("a", Some("1"))]));
        let block = commit(
            &storage,
            vec![tx.clone()],
            writes(&[("b", Some("2")), ("q/holder/x", Some("1"))]),
        );
        let check = |storage: &Storage| {
            assert_eq!(storage.indexes(), Indexes::NONE);
            assert_eq!(storage.block(1).unwrap(), Some(block.clone()));
            assert_eq!(storage.receipts(1).unwrap().unwrap()[0].tx, tx.hash());
            assert_eq!(storage.get(b"b").unwrap(), Some(b"2".to_vec()));
            assert_eq!(storage.get(b"q/holder/x").unwrap(), None);
            assert!(
                !storage
                    .db
                    .contains_key(hash_key(prefix::TX, &tx.hash()))
                    .unwrap()
            );
            assert!(matches!(
                storage.tx_location(&tx.hash()),
                Err(StorageError::NotIndexed("transaction"))
            ));
        };
        check(&storage);
        drop(storage);
        // Reopened as stored, or asking for what it keeps: the same store.
        check(&open(&dir).unwrap());
        check(&open_keeping(Indexes::NONE).unwrap());
        // Asking for an index it never kept is refused, naming both sets.
        for configured in [
            Indexes::default(),
            Indexes {
                queries: false,
                ..Indexes::default()
            },
        ] {
            match open_keeping(configured) {
                Err(e @ StorageError::IndexesDiffer { stored, .. }) => {
                    assert_eq!(stored, Indexes::NONE);
                    assert!(
                        e.to_string()
                            .contains("transactions = false, queries = false"),
                        "{e}"
                    );
                }
                other => panic!(
                    "opened a store keeping other indexes: {:?}",
                    other.map(|_| ())
                ),
            }
        }
    }

    #[test]
    fn a_store_keeps_both_indexes_by_default_and_when_it_has_no_record_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir).unwrap();
        let tx = signed_remark(&KeyPair::insecure_from_label("alice"), 0);
        commit(
            &storage,
            vec![tx.clone()],
            writes(&[("q/holder/x", Some("1"))]),
        );
        assert_eq!(storage.indexes(), Indexes::default());
        assert_eq!(storage.get(b"q/holder/x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(storage.tx_location(&tx.hash()).unwrap().unwrap().height, 0);
        // A store written before the record existed kept both.
        drop(storage);
        tamper(&dir, prefix::INDEXES, |_| None);
        let reopened =
            retry_while_locked(|| Storage::open_with(dir.path(), 1 << 20, Indexes::default()))
                .unwrap();
        assert_eq!(reopened.indexes(), Indexes::default());
        drop(reopened);
        tamper(&dir, prefix::INDEXES, |_| Some(vec![1, 2]));
        assert_corrupt(&dir);
    }

    #[test]
    fn committed_blocks_are_found_by_height_hash_and_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir).unwrap();
        let key = KeyPair::insecure_from_label("alice");
        let genesis = commit(&storage, vec![], writes(&[("a", Some("1"))]));
        let txs = vec![signed_remark(&key, 0), signed_remark(&key, 1)];
        let b1 = commit(&storage, txs.clone(), writes(&[("b", Some("2"))]));

        let head = storage.head().unwrap();
        assert_eq!(
            (head.height, head.block_hash, head.state_root),
            (1, b1.hash(), b1.header.state_root)
        );
        assert_eq!(storage.block(0).unwrap(), Some(genesis.clone()));
        assert_eq!(storage.block(1).unwrap(), Some(b1.clone()));
        assert_eq!(storage.block(2).unwrap(), None);
        assert_eq!(storage.block_by_hash(&b1.hash()).unwrap(), Some(b1.clone()));
        assert_eq!(storage.block_by_hash(&Hash::ZERO).unwrap(), None);
        assert_eq!(storage.block_height(&genesis.hash()).unwrap(), Some(0));
        assert_eq!(storage.block_height(&b1.hash()).unwrap(), Some(1));
        assert_eq!(storage.block_height(&Hash::ZERO).unwrap(), None);
        assert!(check_indexed(&b1, &b1.hash()).is_ok());
        assert!(matches!(
            check_indexed(&genesis, &b1.hash()),
            Err(StorageError::Corrupt { .. })
        ));
        assert_eq!(
            storage.commit_certificate(1).unwrap().unwrap().block,
            b1.hash()
        );
        assert_eq!(storage.receipts(0).unwrap(), Some(vec![]));
        assert_eq!(storage.receipts(1).unwrap().unwrap().len(), 2);
        let location = storage.tx_location(&txs[1].hash()).unwrap().unwrap();
        assert_eq!(
            (location.height, location.index, location.receipt.tx),
            (1, 1, txs[1].hash())
        );
        assert_eq!(storage.tx_location(&Hash::ZERO).unwrap(), None);
    }

    /// The block at `height` and its receipts, read from the store.
    fn stored_in(storage: &Storage, height: u64) -> CommittedBlock {
        let block = storage.block(height).unwrap().unwrap();
        let receipts = storage.block_receipts(&block).unwrap();
        CommittedBlock::new(Arc::new(block), receipts)
    }

    #[test]
    fn the_newest_committed_blocks_are_shared_from_memory_older_ones_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir).unwrap();
        let key = KeyPair::insecure_from_label("alice");
        commit(&storage, vec![], Writes::new());
        let newest = 2 * recent::RECENT_BLOCKS as u64;
        for height in 1..=newest {
            let txs = vec![
                signed_remark(&key, 2 * height),
                signed_remark(&key, 2 * height + 1),
            ];
            commit(&storage, txs, Writes::new());
        }
        let oldest_kept = newest + 1 - recent::RECENT_BLOCKS as u64;
        for height in 0..=newest {
            let first = storage.committed_block(height).unwrap().unwrap();
            let again = storage.committed_block(height).unwrap().unwrap();
            let stored = stored_in(&storage, height);
            assert_eq!(
                (&first.block, &first.receipts),
                (&stored.block, &stored.receipts),
                "block {height}"
            );
            assert_eq!(first.receipts.len(), first.block.txs.len());
            // Kept blocks are one shared copy; older ones are read afresh.
            assert_eq!(
                Arc::ptr_eq(&first, &again),
                height >= oldest_kept,
                "block {height}"
            );
        }
        assert!(storage.committed_block(newest + 1).unwrap().is_none());

        // A reopened store keeps none in memory and reads them all back.
        drop(storage);
        let storage = open(&dir).unwrap();
        let read = storage.committed_block(newest).unwrap().unwrap();
        assert!(!Arc::ptr_eq(
            &read,
            &storage.committed_block(newest).unwrap().unwrap()
        ));
        let stored = stored_in(&storage, newest);
        assert_eq!(
            (&read.block, &read.receipts),
            (&stored.block, &stored.receipts)
        );
    }

    #[test]
    fn commit_block_rejects_blocks_that_do_not_extend_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir).unwrap();
        let genesis = commit(&storage, vec![], writes(&[("a", Some("1"))]));
        let update = storage.prepare_state(1, Writes::new()).unwrap();
        let mut block = genesis.clone();
        block.header.height = 1;
        block.header.parent = Hash::ZERO;
        block.header.state_root = update.root;
        let qc = QuorumCertificate {
            height: 1,
            round: 0,
            block: block.hash(),
            votes: vec![],
        };
        let err = storage
            .commit_block(Arc::new(block.clone()), &qc, Vec::new(), update.clone())
            .unwrap_err();
        assert!(matches!(err, StorageError::ParentMismatch { .. }), "{err}");

        block.header.parent = genesis.hash();
        let wrong_qc = QuorumCertificate {
            height: 1,
            round: 0,
            block: genesis.hash(),
            votes: vec![],
        };
        let err = storage
            .commit_block(
                Arc::new(block.clone()),
                &wrong_qc,
                Vec::new(),
                update.clone(),
            )
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidBlock { .. }), "{err}");

        let mut genesis_again = genesis.clone();
        genesis_again.header.timestamp_ms += 1;
        let err = storage
            .commit_block(
                Arc::new(genesis_again.clone()),
                &QuorumCertificate::genesis(genesis_again.hash()),
                Vec::new(),
                update.clone(),
            )
            .unwrap_err();
        assert!(matches!(err, StorageError::AlreadyInitialised), "{err}");

        let mut wrong_root = block.clone();
        wrong_root.header.state_root = Hash::ZERO;
        let qc = QuorumCertificate {
            height: 1,
            round: 0,
            block: wrong_root.hash(),
            votes: vec![],
        };
        let err = storage
            .commit_block(
                Arc::new(wrong_root.clone()),
                &qc,
                Vec::new(),
                update.clone(),
            )
            .unwrap_err();
        assert!(
            matches!(err, StorageError::StateRootMismatch { .. }),
            "{err}"
        );

        let qc = QuorumCertificate {
            height: 1,
            round: 0,
            block: block.hash(),
            votes: vec![],
        };
        storage
            .commit_block(Arc::new(block.clone()), &qc, Vec::new(), update.clone())
            .unwrap();
        assert_eq!(storage.head().unwrap().height, 1);
    }

    #[test]
    fn commit_block_rejects_receipts_or_a_body_that_do_not_match_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir).unwrap();
        let key = KeyPair::insecure_from_label("alice");
        let txs = vec![signed_remark(&key, 0)];
        let update = storage.prepare_state(0, Writes::new()).unwrap();
        let receipts: Vec<Receipt> = txs.iter().map(success).collect();
        let mut block = Block {
            header: trellis_types::Header {
                chain_id: "test".into(),
                height: 0,
                round: 0,
                parent: Hash::ZERO,
                tx_root: tx_root(&txs),
                parent_commit_hash: QuorumCertificate::genesis(Hash::ZERO).hash(),
                receipts_root: receipts_root(&receipts),
                state_root: update.root,
                timestamp_ms: 1,
                proposer: key.public(),
            },
            parent_commit: QuorumCertificate::genesis(Hash::ZERO),
            txs,
        };
        let qc = QuorumCertificate::genesis(block.hash());
        let err = storage
            .commit_block(Arc::new(block.clone()), &qc, Vec::new(), update.clone())
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidBlock { .. }), "{err}");
        block.header.receipts_root = Hash::ZERO;
        let qc = QuorumCertificate::genesis(block.hash());
        let err = storage
            .commit_block(
                Arc::new(block.clone()),
                &qc,
                receipts.clone(),
                update.clone(),
            )
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidBlock { .. }), "{err}");
        // The right receipts, but a signature the header does not commit to.
        block.header.receipts_root = receipts_root(&receipts);
        block.txs[0].signature = key.sign(&Hash::ZERO);
        let qc = QuorumCertificate::genesis(block.hash());
        let err = storage
            .commit_block(Arc::new(block), &qc, receipts, update)
            .unwrap_err();
        assert!(
            matches!(&err, StorageError::InvalidBlock { reason, .. } if reason.contains("tx_root")),
            "{err}"
        );
        assert_eq!(storage.head(), None);
    }

    /// Everything a reader can ask about the block at the head, and state keys
    /// `a`, `b`, `c`, as one comparable value.
    fn read_all(storage: &Storage, tx: &Hash) -> String {
        use crate::state::StateRead;
        let head = storage.head().expect("a head");
        let h = head.height;
        let block = storage.block(h).unwrap().expect("the head block");
        let proof = storage.get_with_proof(b"a", h).unwrap();
        trellis_types::verify_state_proof(
            &head.state_root,
            b"a",
            proof.value.as_deref(),
            &proof.proof,
        )
        .expect("the proof verifies against the head's root");
        format!(
            "{head:?} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            block.hash(),
            storage
                .block_by_hash(&block.hash())
                .unwrap()
                .map(|b| b.hash()),
            storage.commit_certificate(h).unwrap(),
            storage.receipts(h).unwrap(),
            storage.tx_location(tx).unwrap(),
            storage.state_root(h).unwrap(),
            [b"a", b"b", b"c"].map(|k| storage.get(k).unwrap()),
            proof.value,
        )
    }

    /// Commits genesis (`a` = 1, `b` = 2) and stages block 1: `tx`, `a` = 10,
    /// `b` deleted, `c` = 3.
    fn stage_over_genesis(storage: &Storage, tx: &SignedTransaction) -> (Block, StagedBlock) {
        commit(
            storage,
            vec![],
            writes(&[("a", Some("1")), ("b", Some("2"))]),
        );
        stage(
            storage,
            vec![tx.clone()],
            writes(&[("a", Some("10")), ("b", None), ("c", Some("3"))]),
        )
    }

    #[test]
    fn staged_blocks_read_the_same_before_and_after_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::insecure_from_label("alice");
        let tx = signed_remark(&key, 0);
        let storage = open(&dir).unwrap();
        let (block, staged) = stage_over_genesis(&storage, &tx);
        assert_eq!(staged.height(), 1);
        let first = read_all(&storage, &tx.hash());
        assert!(first.contains(&block.hash().to_string()), "{first}");
        assert!(
            first.contains(r#"[Some([49, 48]), None, Some([51])]"#),
            "the staged writes are read: {first}"
        );
        // A second block is staged over the first, whose writes it overrides.
        let (second_block, second) = stage(
            &storage,
            vec![signed_remark(&key, 1)],
            writes(&[("a", Some("20")), ("c", None)]),
        );
        let before = read_all(&storage, &tx.hash());
        assert!(
            before.contains(&second_block.hash().to_string()),
            "{before}"
        );
        assert!(
            before.contains(r#"[Some([50, 48]), None, None]"#),
            "both staged blocks' writes are read, the newer's first: {before}"
        );
        // As many as may be staged; one more waits for the oldest's write.
        let mut rest = Vec::new();
        while rest.len() + 2 < MAX_STAGED {
            rest.push(stage(&storage, vec![], writes(&[])).1);
        }
        let last = read_all(&storage, &tx.hash());
        let height = storage.head().unwrap().height + 1;
        let err = storage
            .stage_block(
                Arc::new(second_block.clone()),
                &QuorumCertificate::genesis(second_block.hash()),
                Vec::new(),
                storage.prepare_state(height, Writes::new()).unwrap(),
            )
            .unwrap_err();
        assert!(
            matches!(err, StorageError::StillWriting { height: 1 }),
            "{err}"
        );

        staged.write().unwrap();
        assert_eq!(read_all(&storage, &tx.hash()), last);
        second.write().unwrap();
        assert_eq!(read_all(&storage, &tx.hash()), last);
        for staged in rest {
            staged.write().unwrap();
            assert_eq!(read_all(&storage, &tx.hash()), last);
        }
        drop(storage);
        let reopened = retry_while_locked(|| open(&dir)).unwrap();
        assert_eq!(read_all(&reopened, &tx.hash()), last);
    }

    #[test]
    fn staged_blocks_are_written_in_height_order() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::insecure_from_label("alice");
        let tx = signed_remark(&key, 0);
        let storage = open(&dir).unwrap();
        let (_, first) = stage_over_genesis(&storage, &tx);
        let (_, second) = stage(&storage, vec![], writes(&[("a", Some("20"))]));
        let err = second.write().unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::WrittenOutOfOrder {
                    height: 2,
                    first: 1
                }
            ),
            "{err}"
        );
        let written = {
            first.write().unwrap();
            storage.get_with_proof(b"a", 1).unwrap().value
        };
        assert_eq!(written.as_deref(), Some(&b"10"[..]));
        drop(storage);
        // Block 2 was never written: the store reopens at block 1.
        let reopened = retry_while_locked(|| open(&dir)).unwrap();
        assert_eq!(reopened.head().map(|h| h.height), Some(1));
    }

    #[test]
    fn a_block_whose_write_stopped_midway_is_finished_when_the_store_reopens() {
        let key = KeyPair::insecure_from_label("alice");
        let tx = signed_remark(&key, 0);
        // Stop after the redo file and none, half, or all but one of the records.
        for stop in [Stop::NoRecord, Stop::Half, Stop::AllButOne] {
            let dir = tempfile::tempdir().unwrap();
            let expected = {
                let storage = open(&dir).unwrap();
                let (_, staged) = stage_over_genesis(&storage, &tx);
                let expected = read_all(&storage, &tx.hash());
                let StagedBlock {
                    storage: db_owner,
                    staged,
                    ..
                } = staged;
                let tree = staged
                    .append_tree(&db_owner.tree_log, &db_owner.db)
                    .unwrap();
                let batch = staged.batch(&tree);
                let applied = match stop {
                    Stop::NoRecord => 0,
                    Stop::Half => batch.clone().count() / 2,
                    Stop::AllButOne => batch.clone().count() - 1,
                };
                redo::write(&db_owner.redo_path, staged.height, batch.clone()).unwrap();
                redo::apply(&db_owner.db, batch.take(applied)).unwrap();
                // The process stops here; sled keeps what was applied.
                db_owner.db.flush().unwrap();
                expected
            };
            let reopened = open(&dir).unwrap();
            assert_eq!(read_all(&reopened, &tx.hash()), expected, "{stop:?}");
            assert!(!redo::path(dir.path()).exists(), "{stop:?}");
            // The chain goes on from the finished block.
            commit(&reopened, vec![], writes(&[("a", Some("4"))]));
            assert_eq!(reopened.head().unwrap().height, 2);
        }
    }

    #[test]
    fn a_leftover_redo_tmp_is_dropped_and_a_damaged_redo_file_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let first = commit(&open(&dir).unwrap(), vec![], writes(&[("a", Some("1"))]));
        let redo = redo::path(dir.path());
        // A stop while the redo file was being written: its block was never durable.
        std::fs::write(redo.with_extension("tmp"), b"half a redo file").unwrap();
        let reopened = open(&dir).unwrap();
        assert_eq!(reopened.head().unwrap().block_hash, first.hash());
        assert!(!redo.with_extension("tmp").exists());
        drop(reopened);

        std::fs::write(&redo, b"not a redo file").unwrap();
        let err = open(&dir).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    }

    #[derive(Debug, Clone, Copy)]
    enum Stop {
        NoRecord,
        Half,
        AllButOne,
    }

    #[test]
    fn a_staged_block_never_written_is_not_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = {
            let storage = open(&dir).unwrap();
            let first = commit(&storage, vec![], writes(&[("a", Some("1"))]));
            let (second, staged) = stage(&storage, vec![], writes(&[("a", Some("2"))]));
            assert_eq!(storage.head().unwrap().block_hash, second.hash());
            // The process stops before the block is written.
            drop(staged);
            (first, second)
        };
        let reopened = retry_while_locked(|| open(&dir)).unwrap();
        assert_eq!(reopened.head().unwrap().block_hash, first.hash());
        assert_eq!(reopened.block(1).unwrap(), None);
        assert_eq!(reopened.block_by_hash(&second.hash()).unwrap(), None);
        assert_eq!(
            crate::state::StateRead::get(&reopened, b"a")
                .unwrap()
                .as_deref(),
            Some(&b"1"[..])
        );
        // The chain goes on from the block before.
        commit(&reopened, vec![], writes(&[("a", Some("3"))]));
        assert_eq!(reopened.head().unwrap().height, 1);
    }

    #[test]
    fn reopened_store_has_the_same_head_root_blocks_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::insecure_from_label("alice");
        let (head, tx) = {
            let storage = open(&dir).unwrap();
            commit(
                &storage,
                vec![],
                writes(&[("a", Some("1")), ("b", Some("2"))]),
            );
            let tx = signed_remark(&key, 0);
            commit(
                &storage,
                vec![tx.clone()],
                writes(&[("a", None), ("c", Some("3"))]),
            );
            commit(&storage, vec![], Writes::new());
            (storage.head().unwrap(), tx)
        };
        let storage = open(&dir).unwrap();
        assert_eq!(storage.head(), Some(head));
        assert_eq!(storage.state_root(2).unwrap(), Some(head.state_root));
        use crate::state::StateRead;
        assert_eq!(storage.get(b"a").unwrap(), None);
        assert_eq!(storage.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(storage.get(b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(storage.tx_location(&tx.hash()).unwrap().unwrap().height, 1);
        commit(&storage, vec![], writes(&[("d", Some("4"))]));
        assert_eq!(storage.head().unwrap().height, 3);
    }

    #[test]
    fn a_busy_versions_tree_is_a_few_sled_records_and_reads_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Vec<u8>> = (0u32..3_000).map(|i| i.to_be_bytes().to_vec()).collect();
        let block = |value: &[u8]| -> Writes {
            keys.iter()
                .map(|k| (k.clone(), Some(value.to_vec())))
                .collect()
        };
        {
            let storage = open(&dir).unwrap();
            commit(&storage, vec![], block(b"first"));
            commit(&storage, vec![], block(b"second"));
        }
        let db = retry_while_locked(|| Ok(sled_config(dir.path()).open()?)).unwrap();
        // Thousands of tree records a version (node groups under most of the
        // 4,097 selectors, value groups under most of the 256 bytes), but at
        // most 17 node tables, a value table and the stale-node pointer.
        let under =
            |p: u8, version: u64| db.scan_prefix([&[p][..], &version.to_be_bytes()].concat());
        for version in [0u64, 1] {
            let in_sled: usize = [prefix::TREE_NODE, prefix::TREE_VALUE, prefix::TREE_STALE]
                .iter()
                .map(|p| under(*p, version).count())
                .sum();
            let expected = if version == 0 { 18 } else { 19 };
            assert_eq!(in_sled, expected, "version {version}");
            let node_records: usize = under(prefix::TREE_NODE, version)
                .map(|table| {
                    let (key, pointers) = table.unwrap();
                    tree_log::pointers_in(&key, &pointers).unwrap().len()
                })
                .sum();
            assert!(node_records > 2_000, "{node_records} node records");
        }
        drop(db);
        let storage = open(&dir).unwrap();
        let root = storage.state_root(1).unwrap().unwrap();
        for key in keys.iter().step_by(97) {
            let proof = storage.get_with_proof(key, 1).unwrap();
            assert_eq!(proof.value.as_deref(), Some(&b"second"[..]));
            trellis_types::verify_state_proof(&root, key, Some(b"second"), &proof.proof).unwrap();
        }
    }

    fn store_with_two_blocks(dir: &tempfile::TempDir) {
        let storage = open(dir).unwrap();
        let key = KeyPair::insecure_from_label("alice");
        commit(&storage, vec![], writes(&[("a", Some("1"))]));
        commit(
            &storage,
            vec![signed_remark(&key, 0)],
            writes(&[("b", Some("2"))]),
        );
    }

    /// Changes the raw bytes under `key` with `f`, as a disk fault or a torn write would.
    fn tamper(
        dir: &tempfile::TempDir,
        key: &[u8],
        f: impl FnOnce(Option<Vec<u8>>) -> Option<Vec<u8>>,
    ) {
        let db = retry_while_locked(|| Ok(sled_config(dir.path()).open()?)).unwrap();
        let old = db.get(key).unwrap().map(|v| v.to_vec());
        match f(old) {
            Some(new) => db.insert(key, new).unwrap(),
            None => db.remove(key).unwrap(),
        };
        db.flush().unwrap();
    }

    #[test]
    fn a_record_in_pieces_is_at_most_a_piece_each_and_whole_in_order() {
        for len in [0, 1, PIECE_BYTES, PIECE_BYTES + 1, 3 * PIECE_BYTES + 17] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut records = Records::new();
            put_in_pieces(&mut records, b"\x01key", &value);
            assert_eq!(records.len(), len.div_ceil(PIECE_BYTES).max(1), "{len}");
            let mut whole = Vec::new();
            for (index, (key, piece)) in records.iter().enumerate() {
                assert_eq!(*key, piece_key(b"\x01key", index as u32));
                let piece = piece.as_ref().unwrap();
                assert!(piece.len() <= PIECE_BYTES);
                whole.extend_from_slice(piece);
            }
            assert_eq!(whole, value, "{len}");
        }
    }

    #[test]
    fn a_large_block_is_stored_in_pieces_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::insecure_from_label("alice");
        // Four remarks of 50 kB: a block of about four pieces.
        let txs: Vec<SignedTransaction> = (0..4)
            .map(|nonce| remark_with(&key, nonce, vec![nonce as u8; 50_000]))
            .collect();
        let block = {
            let storage = open(&dir).unwrap();
            commit(&storage, vec![], Writes::new());
            let block = commit(&storage, txs, Writes::new());
            assert_eq!(storage.block(1).unwrap().as_ref(), Some(&block));
            let pieces: Vec<_> = storage
                .db
                .scan_prefix(height_key(prefix::BLOCK, 1))
                .map(|record| record.unwrap().1.len())
                .collect();
            assert!(pieces.len() >= 4, "{pieces:?}");
            assert!(pieces.iter().all(|len| *len <= PIECE_BYTES), "{pieces:?}");
            block
        };
        // Reopened, the head block is read whole from its pieces and checked.
        assert_eq!(open(&dir).unwrap().block(1).unwrap(), Some(block));
        // A lost middle piece makes a record that fails its checksum.
        tamper(&dir, &piece_key(&height_key(prefix::BLOCK, 1), 1), |_| None);
        assert_corrupt(&dir);
    }

    #[test]
    fn open_refuses_a_store_of_another_segment_size_by_name() {
        let dir = tempfile::tempdir().unwrap();
        drop(sled::open(dir.path()).unwrap());
        match open(&dir) {
            Err(StorageError::Corrupt { what }) => {
                assert!(what.contains("segment size"), "{what}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    fn assert_corrupt(dir: &tempfile::TempDir) {
        match open(dir) {
            Err(StorageError::Corrupt { what }) => assert!(!what.is_empty()),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn open_refuses_a_store_of_another_layout_version() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_blocks(&dir);
        tamper(&dir, prefix::SCHEMA, |_| Some(vec![SCHEMA_VERSION - 1]));
        // As a store of the layout before the tree log would be: without one.
        std::fs::remove_file(tree_log::path(dir.path())).unwrap();
        match open(&dir) {
            Err(StorageError::Corrupt { what }) => assert!(
                what.contains(&format!("layout version {}", SCHEMA_VERSION - 1)),
                "{what}"
            ),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(!tree_log::path(dir.path()).exists(), "no tree log created");
        tamper(&dir, prefix::SCHEMA, |_| None);
        assert_corrupt(&dir);
    }

    #[test]
    fn open_refuses_a_store_whose_tree_log_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_blocks(&dir);
        std::fs::remove_file(tree_log::path(dir.path())).unwrap();
        match open(&dir) {
            Err(StorageError::Corrupt { what }) => {
                assert!(
                    what.contains("tree log") && what.contains("missing"),
                    "{what}"
                )
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(!tree_log::path(dir.path()).exists(), "not created empty");
    }

    #[test]
    fn open_reports_a_corrupted_last_block() {
        // Flip one bit in the checksum, the header, the middle and the last byte (the last
        // transaction's signature, which no root covers).
        for position in [0, CHECKSUM_LEN + 3, usize::MAX / 2, usize::MAX] {
            let dir = tempfile::tempdir().unwrap();
            store_with_two_blocks(&dir);
            tamper(&dir, &block_key(1), |bytes| {
                let mut bytes = bytes.unwrap();
                let i = match position {
                    usize::MAX => bytes.len() - 1,
                    p if p == usize::MAX / 2 => bytes.len() / 2,
                    p => p,
                };
                bytes[i] ^= 0x01;
                Some(bytes)
            });
            assert_corrupt(&dir);
        }
    }

    #[test]
    fn a_header_is_read_without_its_body_and_checked_against_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let alice = KeyPair::insecure_from_label("alice");
        {
            let storage = open(&dir).unwrap();
            commit(&storage, vec![], writes(&[("a", Some("1"))]));
            let txs = (0..3).map(|n| signed_remark(&alice, n)).collect();
            commit(&storage, txs, Writes::new());
            commit(&storage, vec![], Writes::new());
            for height in 0..=2 {
                let (header, commit) = storage.certified_header(height).unwrap().unwrap();
                assert_eq!(header, storage.block(height).unwrap().unwrap().header);
                assert_eq!(commit, storage.commit_certificate(height).unwrap().unwrap());
            }
            assert_eq!(storage.certified_header(3).unwrap(), None);
        }
        // A header that is not the one its certificate names is corruption.
        tamper(&dir, &block_key(1), |bytes| {
            let mut bytes = bytes.unwrap();
            bytes[CHECKSUM_LEN + 3] ^= 0x01;
            Some(bytes)
        });
        let storage = open(&dir).unwrap();
        assert!(matches!(
            storage.certified_header(1),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(storage.certified_header(2).unwrap().is_some());
    }

    #[test]
    fn reading_a_corrupted_older_block_or_receipt_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let tx = signed_remark(&KeyPair::insecure_from_label("alice"), 0);
        {
            let storage = open(&dir).unwrap();
            commit(&storage, vec![], writes(&[("a", Some("1"))]));
            commit(&storage, vec![tx.clone()], Writes::new());
            commit(&storage, vec![], Writes::new());
        }
        tamper(&dir, &block_key(0), |bytes| {
            let mut bytes = bytes.unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x80;
            Some(bytes)
        });
        tamper(&dir, &hash_key(prefix::TX, &tx.hash()), |bytes| {
            bytes.map(|b| b[..b.len() - 1].to_vec())
        });
        // Open checks the head block only; older records are checked when read.
        let storage = open(&dir).unwrap();
        assert!(matches!(
            storage.block(0),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(matches!(
            storage.tx_location(&tx.hash()),
            Err(StorageError::Corrupt { .. })
        ));
        // The block's receipts do not go through the transaction's record.
        assert_eq!(storage.receipts(1).unwrap().unwrap()[0].tx, tx.hash());
        drop(storage);

        tamper(&dir, &receipts_key(1, 0), |bytes| {
            let mut bytes = bytes.unwrap();
            bytes[CHECKSUM_LEN] ^= 0x01;
            Some(bytes)
        });
        let storage = open(&dir).unwrap();
        assert!(matches!(
            storage.receipts(1),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(storage.block(1).unwrap().is_some());
    }

    #[test]
    fn a_block_has_a_receipt_record_per_group_and_each_transaction_is_found_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir).unwrap();
        commit(&storage, vec![], Writes::new());
        let key = KeyPair::insecure_from_label("alice");
        let count = 2 * RECEIPTS_PER_GROUP + 3;
        let txs: Vec<SignedTransaction> = (0..count as u64)
            .map(|nonce| signed_remark(&key, nonce))
            .collect();
        let block = commit(&storage, txs.clone(), Writes::new());
        drop(storage);

        let storage = open(&dir).unwrap();
        let groups: Vec<usize> = (0..4)
            .map(|group| {
                let bytes = storage.db.get(receipts_key(1, group)).unwrap();
                bytes.map_or(0, |b| {
                    unseal::<Vec<Receipt>>(&b, String::new).unwrap().len()
                })
            })
            .collect();
        assert_eq!(groups, [RECEIPTS_PER_GROUP, RECEIPTS_PER_GROUP, 3, 0]);
        let receipts = storage.receipts(1).unwrap().unwrap();
        assert_eq!(receipts, block.txs.iter().map(success).collect::<Vec<_>>());
        for (index, tx) in txs.iter().enumerate() {
            let found = storage.tx_location(&tx.hash()).unwrap().unwrap();
            assert_eq!((found.height, found.index as usize), (1, index));
            assert_eq!(found.receipt, receipts[index]);
        }
    }

    #[test]
    fn open_reports_a_truncated_last_block() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_blocks(&dir);
        tamper(&dir, &block_key(1), |bytes| {
            let bytes = bytes.unwrap();
            Some(bytes[..bytes.len() / 2].to_vec())
        });
        assert_corrupt(&dir);
    }

    #[test]
    fn open_reports_a_missing_last_block() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_blocks(&dir);
        tamper(&dir, &block_key(1), |_| None);
        assert_corrupt(&dir);
    }

    /// The sled key of the table holding the pointer to `version`'s root node record.
    fn tree_root_sled_key(version: u64) -> Vec<u8> {
        let record_key = crate::state::tree_root_record_key(version);
        tree_log::table_of(&record_key).0.to_vec()
    }

    #[test]
    fn open_reports_a_missing_receipt_commit_certificate_or_state_root() {
        let tx = signed_remark(&KeyPair::insecure_from_label("alice"), 0);
        for key in [
            hash_key(prefix::TX, &tx.hash()).to_vec(),
            receipts_key(1, 0).to_vec(),
            height_key(prefix::COMMIT, 1).to_vec(),
            tree_root_sled_key(1),
        ] {
            let dir = tempfile::tempdir().unwrap();
            store_with_two_blocks(&dir);
            tamper(&dir, &key, |_| None);
            assert_corrupt(&dir);
        }
    }

    #[test]
    fn open_reports_a_state_tree_root_that_differs_from_the_head_block() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_blocks(&dir);
        // Overwrite the head version's root node with the genesis root: the roots differ.
        let genesis_root = retry_while_locked(|| Ok(sled_config(dir.path()).open()?))
            .map(|db| db.get(tree_root_sled_key(0)).unwrap().unwrap().to_vec())
            .unwrap();
        tamper(&dir, &tree_root_sled_key(1), |_| Some(genesis_root));
        assert_corrupt(&dir);
    }

    #[test]
    fn open_reports_a_damaged_or_cut_tree_log() {
        for cut in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            store_with_two_blocks(&dir);
            // The head version's root record, through its pointer in sled.
            tamper(&dir, &tree_root_sled_key(1), |table| {
                let table = table.unwrap();
                let root = crate::state::tree_root_record_key(1);
                let pointer = tree_log::find_pointer(&root, &table).unwrap().unwrap();
                let offset = u64::from_be_bytes(pointer[..8].try_into().unwrap());
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(tree_log::path(dir.path()))
                    .unwrap();
                if cut {
                    file.set_len(offset + 1).unwrap();
                } else {
                    std::os::unix::fs::FileExt::write_all_at(&file, b"\xff", offset).unwrap();
                }
                Some(table)
            });
            assert_corrupt(&dir);
        }
    }

    #[test]
    fn open_reports_data_without_a_head() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_blocks(&dir);
        tamper(&dir, prefix::HEAD, |_| None);
        assert_corrupt(&dir);
    }
}
