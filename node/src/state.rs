//! Authenticated state: a Jellyfish Merkle tree (jmt) over [`Storage`], one version per block height.
//!
//! Guarantees: the root of version `h` commits to exactly the key/values after
//! block `h`, whatever order or blocks they were written in;
//! [`Storage::prepare_state`] computes the next version's root from the committed
//! head, reading only the paths of the keys it touches and writing nothing;
//! [`Storage::commit_block`] persists exactly that update; proofs from
//! [`Storage::get_with_proof`] verify with [`trellis_types::verify_state_proof`].
//! Assumes single-level speculation: only version head+1 is ever prepared. The tree
//! holds key hashes; raw keys live in storage's latest-state range, for reads and scans.
//! Keys under [`QUERY_INDEX`] live only there: they are written with each block
//! like any other, but the tree and its root never see them.

use crate::cache::{Cache, Generation};
use crate::storage::{
    ReadCaches, RecordReader, Records, Storage, StorageError, corrupt, lock, prefix, state_key,
};
use jmt::storage::{LeafNode, NibblePath, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, Version};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use trellis_types::proof::{StateHasher, key_hash};
use trellis_types::{Hash, StateProof, codec};

pub(crate) mod live_tree;
mod tree_records;
mod tree_update;

use tree_records::StoredValue;
use tree_update::NodeReader;

/// Not authenticated, which is why calls may write them but only queries read them.
pub use trellis_types::QUERY_INDEX;

/// Whether `key` is part of the authenticated state (the tree), rather than
/// a query index kept beside it.
pub fn in_state_tree(key: &[u8]) -> bool {
    !key.starts_with(QUERY_INDEX)
}

/// Reads of the latest committed state.
pub trait StateRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
}

/// A block's effect on state: `None` deletes the key.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The state after one block, computed but not yet persisted; hand it to [`Storage::commit_block`].
#[derive(Debug, Clone)]
pub struct StateUpdate {
    pub version: u64,
    pub root: Hash,
    /// Root of the state this update was computed on (`None`: the empty pre-genesis tree).
    pub(crate) base_root: Option<Hash>,
    pub(crate) writes: Writes,
    pub(crate) tree: TreeUpdateBatch,
}

impl StateUpdate {
    /// What the block writer appends to the tree log for this update
    /// ([`tree_records`]); public for the storage benchmarks.
    pub fn tree_log_records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        tree_records(self.version, &self.tree)
    }
}

type Tree<'a> = JellyfishMerkleTree<'a, TreeStore<'a>, StateHasher>;

/// jmt's view of the stored tree, through the node cache when there is one.
struct TreeStore<'a> {
    db: &'a RecordReader<'a>,
    nodes: Option<&'a Mutex<Cache<NodeKey, Node>>>,
}

impl TreeReader for TreeStore<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self.read_node(node_key, Node::clone)?)
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        match self.leaf_version(max_version, key)? {
            Some(leaf_version) => Ok(Some(self.leaf_value(leaf_version, key)?)),
            None => Ok(None),
        }
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!(
            "rightmost-leaf lookup is only for jmt's chunk restore, which Trellis does not use"
        )
    }
}

impl NodeReader for TreeStore<'_> {
    fn read_node<T>(
        &self,
        node_key: &NodeKey,
        read: impl Fn(&Node) -> T,
    ) -> Result<Option<T>, StorageError> {
        if let Some(tree) = self.staged(node_key.version()) {
            return Ok(tree.node_batch.get_node(node_key).map(read));
        }
        if let Some(cached) = self
            .nodes
            .and_then(|nodes| lock(nodes).get_with(node_key, &read))
        {
            return Ok(Some(cached));
        }
        let record_key = tree_records::node_record_key(node_key);
        let Some(record) = self.db.get_tree(&record_key)? else {
            return Ok(None);
        };
        let damaged = |e: &dyn std::fmt::Display| {
            corrupt(format!(
                "state tree node record {} of version {}: {e}",
                hex::encode(&record_key[9..]),
                node_key.version()
            ))
        };
        let Some(bytes) = tree_records::find_node(&record, &tree_records::node_id(node_key))
            .map_err(|e| damaged(&e))?
        else {
            return Ok(None);
        };
        let node: Node = borsh::from_slice(bytes).map_err(|e| damaged(&e))?;
        let read = read(&node);
        if let Some(nodes) = self.nodes {
            let aged_out = lock(nodes).insert(node_key.clone(), node);
            if let Some(mut aged_out) = aged_out {
                aged_out.clear();
                lock(nodes).recycle(aged_out);
            }
        }
        Ok(Some(read))
    }
}

impl TreeStore<'_> {
    /// The value of `key`'s leaf written at `leaf_version`: what that version
    /// wrote, or, if the leaf only moved then, what the leaf held just before.
    fn leaf_value(
        &self,
        mut leaf_version: Version,
        key: KeyHash,
    ) -> Result<OwnedValue, StorageError> {
        loop {
            let missing = || {
                corrupt(format!(
                    "state tree value of {} at version {leaf_version} is missing",
                    hex::encode(key.0)
                ))
            };
            let record;
            let stored = match self.staged(leaf_version) {
                Some(tree) => Some(tree_records::leaf_value(
                    tree.node_batch.values(),
                    leaf_version,
                    key,
                )),
                None => {
                    record = self
                        .db
                        .get_tree(&tree_records::value_record_key(leaf_version, key))?;
                    tree_records::find_value(record.as_deref().unwrap_or_default(), key)
                        .map_err(|e| corrupt(format!("state tree value record: {e}")))?
                }
            };
            match stored.ok_or_else(missing)? {
                StoredValue::Written(value) => return Ok(value.to_vec()),
                StoredValue::Moved => {
                    let before = leaf_version.checked_sub(1).ok_or_else(missing)?;
                    leaf_version = self.leaf_version(before, key)?.ok_or_else(missing)?;
                }
            }
        }
    }

    /// The tree update of a staged block, or of the written block whose
    /// nodes are not cached yet, if it is `version`'s: a staged block's
    /// nodes and values are not in sled (or the caches) until it is written.
    fn staged(&self, version: Version) -> Option<&TreeUpdateBatch> {
        let db = self.db;
        let mut blocks = db.staged().chain(db.uncached.as_deref());
        blocks.find(|b| b.height == version).map(|b| &b.tree)
    }

    /// The version that wrote the leaf holding `key` in the tree at `version`;
    /// `None` if the key is not in that tree.
    fn leaf_version(
        &self,
        version: Version,
        key: KeyHash,
    ) -> Result<Option<Version>, StorageError> {
        let mut node_key = NodeKey::new(version, key_path(key, 0));
        for depth in 0..64 {
            let node = self
                .get_node_option(&node_key)
                .map_err(tree_error)?
                .ok_or_else(|| {
                    corrupt(format!(
                        "state tree node at version {} depth {depth} is missing",
                        node_key.version()
                    ))
                })?;
            match node {
                Node::Null => return Ok(None),
                Node::Leaf(leaf) => {
                    return Ok((leaf.key_hash() == key).then_some(node_key.version()));
                }
                Node::Internal(internal) => {
                    let Some(child) = internal.child(nibble(key, depth).into()) else {
                        return Ok(None);
                    };
                    node_key = NodeKey::new(child.version, key_path(key, depth + 1));
                }
            }
        }
        Err(corrupt(format!(
            "state tree path to {} is deeper than the key",
            hex::encode(key.0)
        )))
    }
}

/// Nibble `i` of `key`, high nibble first.
fn nibble(key: KeyHash, i: usize) -> u8 {
    let byte = key.0[i / 2];
    if i.is_multiple_of(2) {
        byte >> 4
    } else {
        byte & 0x0f
    }
}

/// The first `nibbles` nibbles of `key`, as a tree path.
fn key_path(key: KeyHash, nibbles: usize) -> NibblePath {
    // borsh(NibblePath) = u64 nibble count ‖ u32 byte length ‖ bytes, unused low nibble zero.
    let len = nibbles.div_ceil(2);
    let mut bytes = (nibbles as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&(len as u32).to_le_bytes());
    bytes.extend_from_slice(&key.0[..len]);
    if !nibbles.is_multiple_of(2) {
        *bytes.last_mut().expect("an odd path has a byte") &= 0xf0;
    }
    borsh::from_slice(&bytes).expect("a well-formed nibble path decodes")
}

/// Turns an error out of jmt back into ours: our own errors pass through, anything jmt
/// itself complains about (a missing or inconsistent node) means the tree on disk is damaged.
fn tree_error(e: anyhow::Error) -> StorageError {
    match e.downcast::<StorageError>() {
        Ok(e) => e,
        Err(e) => corrupt(format!("state tree: {e:#}")),
    }
}

/// The tree's root at `version`, if that version exists on disk.
pub(crate) fn tree_root(db: &RecordReader, version: u64) -> Result<Option<Hash>, StorageError> {
    let store = TreeStore { db, nodes: None };
    let root = Tree::new(&store)
        .get_root_hash_option(version)
        .map_err(tree_error)?;
    Ok(root.map(|r| Hash(r.0)))
}

/// The key of the tree record holding `version`'s root node.
#[cfg(test)]
pub(crate) fn tree_root_record_key(version: u64) -> Vec<u8> {
    tree_records::node_record_key(&NodeKey::new(version, key_path(KeyHash([0; 32]), 0))).to_vec()
}

/// Adds a block's writes to its records as the latest state.
pub(crate) fn write_state(batch: &mut Records, writes: &Writes) {
    for (key, value) in writes {
        batch.insert(state_key(key), value.as_deref().map(Into::into));
    }
}

/// The records of version `version`'s tree update (nodes, versioned values
/// and stale-node index), for the tree log, in key order. Until they are
/// written, readers take the staged block's nodes and values from its update
/// itself (see [`TreeStore`]).
pub(crate) fn tree_records(version: Version, tree: &TreeUpdateBatch) -> Vec<(Vec<u8>, Vec<u8>)> {
    let nodes = &tree.node_batch;
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = tree_records::encode_nodes(nodes.nodes())
        .into_iter()
        .map(|(key, record)| (key.to_vec(), record))
        .collect();
    records.extend(
        tree_records::encode_values(version, nodes.nodes(), nodes.values())
            .into_iter()
            .map(|(key, record)| (key.to_vec(), record)),
    );
    // One record per version listing the nodes this version made stale, so
    // old versions can be pruned later without walking the tree.
    if !tree.stale_node_index_batch.is_empty() {
        let stale: Vec<&NodeKey> = tree
            .stale_node_index_batch
            .iter()
            .map(|s| &s.node_key)
            .collect();
        let mut key = vec![prefix::TREE_STALE];
        key.extend_from_slice(&version.to_be_bytes());
        records.push((
            key,
            borsh::to_vec(&stale).expect("writing to a Vec cannot fail"),
        ));
    }
    records
}

impl StateRead for Storage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let commits = match self.in_memory(key) {
            Ok(value) => return Ok(value),
            Err(commits) => commits,
        };
        let value = self.db.get(state_key(key))?.map(|v| v.to_vec());
        self.remember(key, &value, commits);
        Ok(value)
    }
}

impl Storage {
    /// `key`'s latest value if memory has it: the staged blocks' writes first,
    /// newest first (neither the cache nor sled has them yet), then the
    /// cache. Otherwise the number of commits so far, to hand to
    /// [`Storage::remember`] with what sled says.
    fn in_memory(&self, key: &[u8]) -> Result<Option<Vec<u8>>, u64> {
        let record_key = state_key(key);
        if let Some(value) = self
            .records()
            .staged()
            .find_map(|staged| staged.records.get(&record_key))
        {
            return Ok(value.as_ref().map(|v| v.to_vec()));
        }
        let mut cache = lock(&self.caches.state);
        cache.values.get(key).ok_or(cache.commits)
    }

    /// Whether `key` has a value, as far as memory knows (the state records
    /// and the tree are written in one batch, so this is also whether the key
    /// is in the tree). Most keys a block rewrites were just read by execution
    /// and are in memory; most it does not find there are new keys, and
    /// reading sled would only confirm they are absent. A key not found counts
    /// as absent, which the tree walk takes as "unknown" and settles by
    /// reading the leaf it meets.
    fn known_present(&self, key: &[u8]) -> bool {
        matches!(self.in_memory(key), Ok(Some(_)))
    }

    /// Caches `value`, read from sled, unless a block was committed since
    /// `commits` (the value may predate it) or `key` is a query index's
    /// (see [`cache_values`]).
    fn remember(&self, key: &[u8], value: &Option<Vec<u8>>, commits: u64) {
        if !in_state_tree(key) {
            return;
        }
        let mut cache = lock(&self.caches.state);
        if cache.commits == commits
            && let Some(mut aged_out) = cache.values.insert(key.to_vec(), value.clone())
        {
            drop(cache);
            aged_out.clear();
            lock(&self.caches.state).values.recycle(aged_out);
        }
    }
}

/// After a block's batch is applied and before it leaves the staged slot:
/// its writes to the state tree become the cached latest values. Query
/// indexes are left out (and never cached, see `Storage::remember`): calls
/// cannot read them, so caching their entries, nearly half of what a busy
/// block writes, was work for nothing.
///
/// Both this and [`cache_nodes`] run beside the next block's build, which
/// reads the caches: entries go in a chunk per lock hold, so a reader waits
/// for one chunk at most. Generations that age out of the caches are emptied
/// on a thread of their own: that takes tens of milliseconds, which the next
/// block need not wait for. Their tables go back to the caches for reuse.
pub(crate) fn cache_values(caches: &Arc<ReadCaches>, writes: Writes) {
    lock(&caches.state).commits += 1;
    let writes = writes.into_iter().filter(|(key, _)| in_state_tree(key));
    let aged_out = fill(&caches.state, writes, |state| &mut state.values);
    empty_elsewhere(caches, aged_out, Vec::new());
}

/// After a block is written: its internal tree nodes are cached for the next
/// blocks' updates (until then tree reads take them from the block's update).
/// Leaves are not: a walk reads a leaf only when a new key lands beside it,
/// seldom one written lately, and a third of the entries would be leaves.
pub(crate) fn cache_nodes(caches: &Arc<ReadCaches>, tree: &TreeUpdateBatch) {
    let internal = tree
        .node_batch
        .nodes()
        .iter()
        .filter(|(_, node)| matches!(node, Node::Internal(_)));
    let aged_out = fill(
        &caches.nodes,
        internal.map(|(key, node)| (key.clone(), node.clone())),
        |nodes| nodes,
    );
    empty_elsewhere(caches, Vec::new(), aged_out);
}

fn empty_elsewhere(
    caches: &Arc<ReadCaches>,
    values: Vec<Generation<Vec<u8>, Option<Vec<u8>>>>,
    nodes: Vec<Generation<NodeKey, Node>>,
) {
    if values.is_empty() && nodes.is_empty() {
        return;
    }
    let caches = caches.clone();
    let free = std::thread::Builder::new().name("cache-free".into());
    // Should no thread be available, the generations drop here.
    let _ = free.spawn(move || {
        for mut emptied in values {
            emptied.clear();
            lock(&caches.state).values.recycle(emptied);
        }
        for mut emptied in nodes {
            emptied.clear();
            lock(&caches.nodes).recycle(emptied);
        }
    });
}

/// Inserts `entries` into the cache behind `mutex`, [`FILL_CHUNK`] per lock
/// hold; returns the generations that aged out.
fn fill<T, K: std::hash::Hash + Eq + Clone, V: Clone>(
    mutex: &Mutex<T>,
    entries: impl IntoIterator<Item = (K, V)>,
    cache: impl Fn(&mut T) -> &mut Cache<K, V>,
) -> Vec<Generation<K, V>> {
    let mut aged_out = Vec::new();
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        let mut guard = lock(mutex);
        let cache = cache(&mut guard);
        aged_out.extend(
            entries
                .by_ref()
                .take(FILL_CHUNK)
                .filter_map(|(key, value)| cache.insert(key, value)),
        );
    }
    aged_out
}

/// Cache entries inserted per lock hold by [`cache_values`] and [`cache_nodes`].
const FILL_CHUNK: usize = 512;

impl Storage {
    /// Computes the state after applying `writes` to the head's state as `version`
    /// (which must be head+1, or 0 on an empty store). Writes nothing.
    pub fn prepare_state(&self, version: u64, writes: Writes) -> Result<StateUpdate, StorageError> {
        let head = self.head();
        match head {
            None if version != 0 => return Err(StorageError::NotInitialised),
            Some(_) if version == 0 => return Err(StorageError::AlreadyInitialised),
            Some(h) if version != h.height + 1 => {
                return Err(StorageError::UnexpectedHeight {
                    expected: h.height + 1,
                    got: version,
                });
            }
            _ => {}
        }
        let store = TreeStore {
            db: &self.records(),
            nodes: Some(&self.caches.nodes),
        };
        let key_writes = writes
            .iter()
            .filter(|(key, _)| in_state_tree(key))
            .map(|(key, value)| tree_update::KeyWrite {
                key: key_hash(key),
                value: value.clone(),
                present: self.known_present(key),
            })
            .collect();
        let (root, tree) = tree_update::compute(&store, version, key_writes)?;
        Ok(StateUpdate {
            version,
            root: Hash(root.0),
            base_root: head.map(|h| h.state_root),
            writes,
            tree,
        })
    }

    /// The state root of committed `version`; `None` above the head.
    pub fn state_root(&self, version: u64) -> Result<Option<Hash>, StorageError> {
        self.check_kept(version)?;
        match self.head() {
            Some(head) if version <= head.height => tree_root(&self.records(), version)?
                .map(Some)
                .ok_or_else(|| {
                    corrupt(format!(
                        "state tree has no root at committed version {version}"
                    ))
                }),
            _ => Ok(None),
        }
    }

    /// The oldest version whose state is kept: 0 unless the store was
    /// pruned ([`crate::storage::prune_state`]).
    pub fn earliest_state_height(&self) -> u64 {
        self.oldest_state
    }

    /// Refuses a version whose state tree was pruned.
    fn check_kept(&self, version: u64) -> Result<(), StorageError> {
        if version < self.oldest_state {
            return Err(StorageError::Pruned {
                version,
                oldest: self.oldest_state,
            });
        }
        Ok(())
    }

    /// `key`'s value (or its absence) at committed `version`, with the proof against that version's root.
    pub fn get_with_proof(&self, key: &[u8], version: u64) -> Result<StateProof, StorageError> {
        if !in_state_tree(key) {
            return Err(StorageError::NotInStateTree);
        }
        let head = self.head().ok_or(StorageError::NotInitialised)?;
        if version > head.height {
            return Err(StorageError::VersionNotCommitted {
                version,
                head: Some(head.height),
            });
        }
        self.check_kept(version)?;
        let store = TreeStore {
            db: &self.records(),
            nodes: Some(&self.caches.nodes),
        };
        let tree = Tree::new(&store);
        let (value, proof) = tree
            .get_with_proof(key_hash(key), version)
            .map_err(tree_error)?;
        let state_root = Hash(tree.get_root_hash(version).map_err(tree_error)?.0);
        let proof = codec::encode(&proof);
        debug_assert!(
            trellis_types::verify_state_proof(&state_root, key, value.as_deref(), &proof).is_ok(),
            "a proof the tree just produced must verify"
        );
        Ok(StateProof {
            key: key.to_vec().into(),
            value: value.map(Into::into),
            height: version,
            state_root,
            proof: proof.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{commit, stage, writes};
    use trellis_types::verify_state_proof;

    /// Keys `k<i>` with values `v<i>`, for each `i` in `range`.
    fn numbered(range: std::ops::Range<u32>) -> Writes {
        range
            .map(|i| {
                let (key, value) = (format!("k{i}"), format!("v{i}"));
                (key.into_bytes(), Some(value.into_bytes()))
            })
            .collect()
    }

    fn store() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        (dir, storage)
    }

    #[test]
    fn proofs_verify_for_present_and_absent_keys() {
        let (_dir, storage) = store();
        commit(
            &storage,
            vec![],
            writes(&[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))]),
        );
        let root = storage.state_root(0).unwrap().unwrap();

        let present = storage.get_with_proof(b"b", 0).unwrap();
        assert_eq!(present.value.as_deref(), Some(&b"2"[..]));
        assert_eq!(present.state_root, root);
        present.verify().unwrap();
        verify_state_proof(&root, b"b", Some(b"2"), &present.proof).unwrap();

        let absent = storage.get_with_proof(b"zz", 0).unwrap();
        assert_eq!(absent.value, None);
        verify_state_proof(&root, b"zz", None, &absent.proof).unwrap();
    }

    #[test]
    fn query_index_keys_are_stored_but_leave_the_root_alone_and_have_no_proof() {
        let (dir_a, with_index) = store();
        let (_dir_b, without) = store();
        let state = writes(&[("a", Some("1"))]);
        let mut both = state.clone();
        both.extend(writes(&[("q/x/h1", Some("")), ("q/x/h2", Some("2"))]));
        commit(&with_index, vec![], both);
        commit(&without, vec![], state);
        assert_eq!(
            with_index.state_root(0).unwrap(),
            without.state_root(0).unwrap()
        );
        // Removing an index key changes nothing either.
        commit(
            &with_index,
            vec![],
            writes(&[("q/x/h1", None), ("b", Some("2"))]),
        );
        commit(&without, vec![], writes(&[("b", Some("2"))]));
        assert_eq!(
            with_index.state_root(1).unwrap(),
            without.state_root(1).unwrap()
        );

        // Kept with the latest state, across a reopen.
        drop(with_index);
        let reopened = crate::storage::retry_while_locked(|| Storage::open(dir_a.path())).unwrap();
        assert_eq!(reopened.get(b"q/x/h1").unwrap(), None);
        assert_eq!(reopened.get(b"q/x/h2").unwrap(), Some(b"2".to_vec()));
        assert!(matches!(
            reopened.get_with_proof(b"q/x/h2", 1),
            Err(StorageError::NotInStateTree)
        ));
        reopened.get_with_proof(b"a", 1).unwrap().verify().unwrap();
    }

    #[test]
    fn proofs_verify_on_a_one_key_tree_and_on_an_empty_tree() {
        let (_dir, storage) = store();
        commit(&storage, vec![], Writes::new());
        let empty_root = storage.state_root(0).unwrap().unwrap();
        let absent = storage.get_with_proof(b"a", 0).unwrap();
        verify_state_proof(&empty_root, b"a", None, &absent.proof).unwrap();

        commit(&storage, vec![], writes(&[("a", Some("1"))]));
        let root = storage.state_root(1).unwrap().unwrap();
        verify_state_proof(
            &root,
            b"a",
            Some(b"1"),
            &storage.get_with_proof(b"a", 1).unwrap().proof,
        )
        .unwrap();
        verify_state_proof(
            &root,
            b"b",
            None,
            &storage.get_with_proof(b"b", 1).unwrap().proof,
        )
        .unwrap();
    }

    #[test]
    fn a_tampered_value_fails_verification() {
        let (_dir, storage) = store();
        commit(
            &storage,
            vec![],
            writes(&[("a", Some("1")), ("b", Some("2"))]),
        );
        let p = storage.get_with_proof(b"a", 0).unwrap();
        assert!(verify_state_proof(&p.state_root, b"a", Some(b"9"), &p.proof).is_err());
        assert!(verify_state_proof(&p.state_root, b"a", None, &p.proof).is_err());
        assert!(verify_state_proof(&p.state_root, b"b", Some(b"1"), &p.proof).is_err());
        let absent = storage.get_with_proof(b"x", 0).unwrap();
        assert!(verify_state_proof(&p.state_root, b"x", Some(b"1"), &absent.proof).is_err());
    }

    #[test]
    fn tampered_proof_bytes_fail_verification() {
        let (_dir, storage) = store();
        commit(&storage, vec![], numbered(0..50));
        let p = storage.get_with_proof(b"k7", 0).unwrap();
        verify_state_proof(&p.state_root, b"k7", Some(b"v7"), &p.proof).unwrap();
        for i in 0..p.proof.len() {
            let mut bytes = p.proof.to_vec();
            bytes[i] ^= 0x01;
            assert!(
                verify_state_proof(&p.state_root, b"k7", Some(b"v7"), &bytes).is_err(),
                "flipping a bit of proof byte {i} went unnoticed"
            );
        }
        let mut longer = p.proof.to_vec();
        longer.push(0);
        assert!(verify_state_proof(&p.state_root, b"k7", Some(b"v7"), &longer).is_err());
    }

    #[test]
    fn a_proof_does_not_verify_against_another_root() {
        let (_dir, storage) = store();
        commit(
            &storage,
            vec![],
            writes(&[("a", Some("1")), ("b", Some("2"))]),
        );
        commit(&storage, vec![], writes(&[("c", Some("3"))]));
        let old = storage.get_with_proof(b"a", 0).unwrap();
        let new_root = storage.state_root(1).unwrap().unwrap();
        assert_ne!(old.state_root, new_root);
        assert!(verify_state_proof(&new_root, b"a", Some(b"1"), &old.proof).is_err());
        // The value is unchanged at version 1, and the version-1 proof checks against the new root.
        let new = storage.get_with_proof(b"a", 1).unwrap();
        verify_state_proof(&new_root, b"a", Some(b"1"), &new.proof).unwrap();
    }

    #[test]
    fn proofs_at_old_versions_show_old_values() {
        let (_dir, storage) = store();
        commit(&storage, vec![], writes(&[("a", Some("1"))]));
        commit(&storage, vec![], writes(&[("a", Some("2"))]));
        commit(&storage, vec![], writes(&[("a", None)]));
        for (version, value) in [(0, Some(&b"1"[..])), (1, Some(&b"2"[..])), (2, None)] {
            let p = storage.get_with_proof(b"a", version).unwrap();
            assert_eq!(p.value.as_deref(), value, "version {version}");
            p.verify().unwrap();
        }
        assert!(matches!(
            storage.get_with_proof(b"a", 3),
            Err(StorageError::VersionNotCommitted {
                version: 3,
                head: Some(2)
            })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Every key at every version reads back with a verifying proof, from
        /// the caches and from a reopened store, while keys sharing path
        /// prefixes are inserted and deleted around each other (so leaves move
        /// down and back up without their value being written); and whichever
        /// path a block took (deletions, inserts or both), its root is the one
        /// its state has.
        #[test]
        fn every_version_of_every_key_proves_its_value(
            blocks in proptest::collection::vec(
                proptest::collection::btree_map(0u8..48, proptest::option::weighted(0.8, 0u8..4), 0..12),
                1..16,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut expected: Vec<BTreeMap<u8, u8>> = Vec::new();
            {
                let storage = Storage::open(dir.path()).unwrap();
                let mut state = BTreeMap::new();
                for block in &blocks {
                    let mut w = Writes::new();
                    for (&key, value) in block {
                        match value {
                            Some(v) => state.insert(key, *v),
                            None => state.remove(&key),
                        };
                        w.insert(vec![key], value.map(|v| vec![v]));
                    }
                    commit(&storage, vec![], w);
                    expected.push(state.clone());
                }
                check_every_proof(&storage, &expected);
                // The tree is a function of the key set alone: each version's root is the
                // root of that version's state written into an empty tree at once.
                let (_empty_dir, empty) = store();
                for (version, state) in expected.iter().enumerate() {
                    let at_once = state.iter().map(|(k, v)| (vec![*k], Some(vec![*v]))).collect();
                    let root = empty.prepare_state(0, at_once).unwrap().root;
                    assert_eq!(storage.state_root(version as u64).unwrap(), Some(root), "version {version}");
                }
            }
            let reopened =
                crate::storage::tests::retry_while_locked(|| Storage::open(dir.path())).unwrap();
            check_every_proof(&reopened, &expected);
        }
    }

    fn check_every_proof(storage: &Storage, expected: &[BTreeMap<u8, u8>]) {
        for (version, state) in expected.iter().enumerate() {
            let root = storage.state_root(version as u64).unwrap().unwrap();
            for key in 0u8..48 {
                let proof = storage.get_with_proof(&[key], version as u64).unwrap();
                let value = state.get(&key).map(|v| vec![*v]);
                assert_eq!(
                    proof.value.as_deref(),
                    value.as_deref(),
                    "key {key} at {version}"
                );
                verify_state_proof(&root, &[key], value.as_deref(), &proof.proof).unwrap();
            }
        }
    }

    #[test]
    fn root_is_the_same_whatever_order_and_blocks_the_writes_came_in() {
        let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
        let all: Writes = keys
            .iter()
            .map(|k| (k.as_bytes().to_vec(), Some(k.as_bytes().to_vec())))
            .collect();

        let (_d1, at_once) = store();
        commit(&at_once, vec![], all.clone());

        // Same keys, inserted in reverse order and spread over several blocks.
        let (_d2, spread) = store();
        commit(&spread, vec![], Writes::new());
        for chunk in keys.iter().rev().collect::<Vec<_>>().chunks(7) {
            let w: Writes = chunk
                .iter()
                .map(|k| (k.as_bytes().to_vec(), Some(k.as_bytes().to_vec())))
                .collect();
            commit(&spread, vec![], w);
        }
        assert_eq!(
            at_once.head().unwrap().state_root,
            spread.head().unwrap().state_root
        );
    }

    /// Blocks without deletions take jmt's batch insertion, blocks with them the
    /// key-by-key path: both must give the same tree.
    #[test]
    fn batch_and_key_by_key_insertion_give_the_same_root() {
        let (_d1, batch) = store();
        let (_d2, key_by_key) = store();
        for storage in [&batch, &key_by_key] {
            commit(storage, vec![], numbered(0..100));
        }
        commit(&batch, vec![], numbered(100..300));
        // Deleting a key that is not there changes nothing but the path taken.
        let mut with_deletion = numbered(100..300);
        with_deletion.insert(b"absent".to_vec(), None);
        commit(&key_by_key, vec![], with_deletion);
        assert_eq!(
            batch.head().unwrap().state_root,
            key_by_key.head().unwrap().state_root
        );
    }

    #[test]
    fn deleting_a_key_restores_the_root_from_before_it_was_inserted() {
        let (_dir, storage) = store();
        commit(&storage, vec![], numbered(0..30));
        let before = storage.head().unwrap().state_root;
        commit(&storage, vec![], writes(&[("new", Some("x"))]));
        assert_ne!(storage.head().unwrap().state_root, before);
        commit(&storage, vec![], writes(&[("new", None)]));
        assert_eq!(storage.head().unwrap().state_root, before);

        // Deleting every key gives the empty tree's root.
        let all_deleted: Writes = numbered(0..30).into_keys().map(|key| (key, None)).collect();
        commit(&storage, vec![], all_deleted);
        assert_eq!(storage.head().unwrap().state_root, Hash(Tree::EMPTY_ROOT.0));
    }

    #[test]
    fn blocks_without_writes_still_get_a_state_root() {
        let (_dir, storage) = store();
        commit(&storage, vec![], Writes::new());
        assert_eq!(
            storage.state_root(0).unwrap(),
            Some(Hash(Tree::EMPTY_ROOT.0))
        );
        commit(&storage, vec![], writes(&[("a", Some("1"))]));
        commit(&storage, vec![], Writes::new());
        commit(&storage, vec![], writes(&[("absent", None)]));
        let r1 = storage.state_root(1).unwrap().unwrap();
        assert_eq!(storage.state_root(2).unwrap(), Some(r1));
        assert_eq!(storage.state_root(3).unwrap(), Some(r1));
        assert_eq!(storage.state_root(4).unwrap(), None);
        storage.get_with_proof(b"a", 3).unwrap().verify().unwrap();
    }

    #[test]
    fn prepare_state_writes_nothing_until_the_block_is_committed() {
        let (_dir, storage) = store();
        commit(&storage, vec![], writes(&[("a", Some("1"))]));
        let root = storage.state_root(0).unwrap();
        let entries = storage.db.len();

        let update = storage
            .prepare_state(1, writes(&[("a", Some("2")), ("b", Some("3"))]))
            .unwrap();
        // Preparing twice gives the same answer: nothing was left behind by the first.
        let again = storage
            .prepare_state(1, writes(&[("b", Some("3")), ("a", Some("2"))]))
            .unwrap();
        assert_eq!(update.root, again.root);
        assert_ne!(update.root, root.unwrap());
        assert_eq!(storage.db.len(), entries);
        assert_eq!(storage.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(storage.get(b"b").unwrap(), None);
        assert_eq!(storage.state_root(0).unwrap(), root);
        assert_eq!(storage.state_root(1).unwrap(), None);

        let block = commit(
            &storage,
            vec![],
            writes(&[("a", Some("2")), ("b", Some("3"))]),
        );
        assert_eq!(block.header.state_root, update.root);
        assert_eq!(storage.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(storage.get(b"b").unwrap(), Some(b"3".to_vec()));
    }

    #[test]
    fn prepare_state_only_accepts_the_next_version() {
        let (_dir, storage) = store();
        assert!(matches!(
            storage.prepare_state(1, Writes::new()),
            Err(StorageError::NotInitialised)
        ));
        commit(&storage, vec![], Writes::new());
        assert!(matches!(
            storage.prepare_state(0, Writes::new()),
            Err(StorageError::AlreadyInitialised)
        ));
        assert!(matches!(
            storage.prepare_state(2, Writes::new()),
            Err(StorageError::UnexpectedHeight {
                expected: 1,
                got: 2
            })
        ));
    }

    #[test]
    fn a_state_update_prepared_before_another_commit_is_refused() {
        let (_dir, storage) = store();
        commit(&storage, vec![], Writes::new());
        let stale = storage
            .prepare_state(1, writes(&[("a", Some("1"))]))
            .unwrap();
        commit(&storage, vec![], writes(&[("b", Some("2"))]));
        let mut block = storage.block(1).unwrap().unwrap();
        block.header.height = 2;
        block.header.parent = storage.head().unwrap().block_hash;
        let qc = trellis_types::QuorumCertificate {
            height: 2,
            round: 0,
            block: block.hash(),
            votes: vec![],
        };
        let err = storage
            .commit_block(Arc::new(block), &qc, Vec::new(), stale)
            .unwrap_err();
        assert!(
            matches!(err, StorageError::StaleStateUpdate { .. }),
            "{err}"
        );
    }

    /// The latest `(key, value)` pairs under `prefix`, in key order, as contracts scan them.
    fn scan(storage: &Storage, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let view = crate::vm::StateView::new(storage.clone(), Writes::new());
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while let Some(entry) = view
            .next_under(
                &Writes::new(),
                prefix,
                out.last().map(|(k, _)| k.as_slice()),
            )
            .unwrap()
        {
            out.push(entry);
        }
        out
    }

    #[test]
    fn scans_return_latest_values_in_key_order_staged_block_included() {
        let (_dir, storage) = store();
        commit(
            &storage,
            vec![],
            writes(&[
                ("p/b", Some("2")),
                ("p/a", Some("1")),
                ("q/a", Some("x")),
                ("p", Some("0")),
            ]),
        );
        commit(
            &storage,
            vec![],
            writes(&[("p/c", Some("3")), ("p/a", None), ("p/b", Some("22"))]),
        );
        let pairs = |pairs: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
            pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(scan(&storage, b"p/"), pairs(&[("p/b", "22"), ("p/c", "3")]));
        assert_eq!(scan(&storage, b"").len(), 4);
        // A staged block's insert, update and deletion count before it is written.
        let (_, staged) = stage(
            &storage,
            vec![],
            writes(&[("p/a", Some("5")), ("p/b", None), ("p/d", Some("4"))]),
        );
        let expected = pairs(&[("p/a", "5"), ("p/c", "3"), ("p/d", "4")]);
        assert_eq!(scan(&storage, b"p/"), expected);
        staged.write().unwrap();
        assert_eq!(scan(&storage, b"p/"), expected);
    }

    #[test]
    fn latest_reads_follow_commits_and_deletions() {
        let (_dir, storage) = store();
        commit(&storage, vec![], writes(&[("a", Some("1"))]));
        assert_eq!(storage.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(storage.get(b"b").unwrap(), None);
        commit(
            &storage,
            vec![],
            writes(&[("a", Some("2")), ("b", Some("3"))]),
        );
        assert_eq!(storage.get(b"a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(storage.get(b"b").unwrap().as_deref(), Some(&b"3"[..]));
        commit(&storage, vec![], writes(&[("a", None)]));
        assert_eq!(storage.get(b"a").unwrap(), None);
    }

    /// The block writer reports a block durable once its redo file is synced,
    /// still staged, and answers once it is in sled, before its tree nodes
    /// are cached: reads in between see the block's values (already cached,
    /// so an older cached value is never read again) and its tree.
    #[test]
    fn between_a_write_and_caching_its_tree_nodes_reads_see_the_written_block() {
        let (_dir, storage) = store();
        commit(
            &storage,
            vec![],
            writes(&[("a", Some("1")), ("b", Some("2"))]),
        );
        assert_eq!(storage.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        let (block, staged) = stage(
            &storage,
            vec![],
            writes(&[("a", Some("10")), ("c", Some("3"))]),
        );
        let height = block.header.height;
        let root = NodeKey::new(height, key_path(KeyHash([0; 32]), 0));
        let cached = || lock(&storage.caches.nodes).get(&root).is_some();
        let durable = std::cell::Cell::new(false);
        let mut answered = false;
        staged
            .write_then(
                || {
                    durable.set(true);
                    assert_eq!(storage.records().staged().count(), 1, "still staged");
                    assert_eq!(storage.get(b"a").unwrap().as_deref(), Some(&b"10"[..]));
                },
                || {
                    assert!(durable.get(), "reported durable first");
                    answered = true;
                    let records = storage.records();
                    assert!(records.staged().next().is_none() && records.uncached.is_some());
                    assert!(!cached(), "the block's nodes are not cached yet");
                    assert_eq!(storage.get(b"a").unwrap().as_deref(), Some(&b"10"[..]));
                    let proof = storage.get_with_proof(b"c", height).unwrap();
                    assert_eq!(proof.value.as_deref(), Some(&b"3"[..]));
                    proof.verify().unwrap();
                },
            )
            .unwrap();
        assert!(answered);
        assert!(cached());
        assert!(storage.records().uncached.is_none());
        assert_eq!(storage.get(b"a").unwrap().as_deref(), Some(&b"10"[..]));
    }

    /// A read that missed the cache, read sled, and lost the race to a commit
    /// must not put its older value in the cache.
    #[test]
    fn a_read_overtaken_by_a_commit_does_not_cache_its_older_value() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open_with_cache(dir.path(), 1).unwrap();
        commit(&storage, vec![], writes(&[("n", Some("0"))]));
        // Two other reads push "n" out of the one-entry cache's two generations.
        storage.get(b"x").unwrap();
        storage.get(b"y").unwrap();
        let commits = storage.in_memory(b"n").expect_err("n is not in memory");
        let old = storage.db.get(state_key(b"n")).unwrap().map(|v| v.to_vec());
        commit(&storage, vec![], writes(&[("n", Some("1"))]));
        storage.remember(b"n", &old, commits);
        assert_eq!(storage.get(b"n").unwrap().as_deref(), Some(&b"1"[..]));
    }

    /// Blocks do not cache query index entries (calls cannot read them), so
    /// no read may cache one either: a value a query read would outlive the
    /// block that rewrites it.
    #[test]
    fn a_query_index_entry_is_read_anew_after_each_block_that_writes_it() {
        let (_dir, storage) = store();
        let entry = "q/contract/h/1";
        for value in [Some("1"), Some("2"), None, Some("3")] {
            commit(&storage, vec![], writes(&[(entry, value)]));
            for _ in 0..2 {
                assert_eq!(
                    storage.get(entry.as_bytes()).unwrap().as_deref(),
                    value.map(str::as_bytes)
                );
            }
        }
    }
}
