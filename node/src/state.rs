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

use crate::cache::Cache;
use crate::storage::{ReadCaches, Storage, StorageError, corrupt, lock, prefix, state_key};
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, Version};
use std::collections::BTreeMap;
use std::sync::Mutex;
use trellis_types::proof::{StateHasher, key_hash};
use trellis_types::{Hash, StateProof, codec};

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

type Tree<'a> = JellyfishMerkleTree<'a, TreeStore<'a>, StateHasher>;

/// jmt's view of the sled tree, through the node cache when there is one.
struct TreeStore<'a> {
    db: &'a sled::Tree,
    nodes: Option<&'a Mutex<Cache<Vec<u8>, Node>>>,
}

fn node_key_bytes(node_key: &NodeKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + 8 + 4 + 32);
    out.push(prefix::TREE_NODE);
    out.extend_from_slice(&node_key.version().to_be_bytes());
    borsh::to_writer(&mut out, node_key.nibble_path()).expect("writing to a Vec cannot fail");
    out
}

fn value_key_bytes(key: KeyHash, version: Version) -> [u8; 41] {
    let mut out = [0u8; 41];
    out[0] = prefix::TREE_VALUE;
    out[1..33].copy_from_slice(&key.0);
    out[33..].copy_from_slice(&version.to_be_bytes());
    out
}

const VALUE_DELETED: u8 = 0;
const VALUE_PRESENT: u8 = 1;

impl TreeReader for TreeStore<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let key = node_key_bytes(node_key);
        if let Some(node) = self.nodes.and_then(|nodes| lock(nodes).get(&key)) {
            return Ok(Some(node));
        }
        let Some(bytes) = self.db.get(&key).map_err(StorageError::from)? else {
            return Ok(None);
        };
        let node: Node = borsh::from_slice(&bytes).map_err(|e| {
            corrupt(format!(
                "state tree node at version {}: {e}",
                node_key.version()
            ))
        })?;
        if let Some(nodes) = self.nodes {
            lock(nodes).insert(key, node.clone());
        }
        Ok(Some(node))
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        let range = value_key_bytes(key, 0)..=value_key_bytes(key, max_version);
        let Some(entry) = self.db.range(range).next_back() else {
            return Ok(None);
        };
        let (_, bytes) = entry.map_err(StorageError::from)?;
        match bytes.split_first() {
            Some((&VALUE_PRESENT, value)) => Ok(Some(value.to_vec())),
            Some((&VALUE_DELETED, [])) => Ok(None),
            _ => Err(corrupt(format!("state tree value {}", hex::encode(key.0))).into()),
        }
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!(
            "rightmost-leaf lookup is only for jmt's chunk restore, which Trellis does not use"
        )
    }
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
pub(crate) fn tree_root(tree: &sled::Tree, version: u64) -> Result<Option<Hash>, StorageError> {
    let store = TreeStore {
        db: tree,
        nodes: None,
    };
    let root = Tree::new(&store)
        .get_root_hash_option(version)
        .map_err(tree_error)?;
    Ok(root.map(|r| Hash(r.0)))
}

#[cfg(test)]
pub(crate) fn tree_node_key_for_root(version: u64) -> Vec<u8> {
    // borsh of the empty nibble path: a zero u64 nibble count and a zero u32 byte length.
    let empty: jmt::storage::NibblePath =
        borsh::from_slice(&[0u8; 12]).expect("the empty nibble path decodes");
    node_key_bytes(&NodeKey::new(version, empty))
}

/// Adds `update` (latest state, tree nodes, versioned values, stale-node index) to a block's batch.
pub(crate) fn write_update(batch: &mut sled::Batch, update: &StateUpdate) {
    for (key, value) in &update.writes {
        match value {
            Some(value) => batch.insert(state_key(key), value.as_slice()),
            None => batch.remove(state_key(key)),
        }
    }
    let nodes = &update.tree.node_batch;
    for (node_key, node) in nodes.nodes() {
        batch.insert(
            node_key_bytes(node_key),
            borsh::to_vec(node).expect("writing to a Vec cannot fail"),
        );
    }
    for ((version, key), value) in nodes.values() {
        let stored = match value {
            Some(value) => {
                let mut v = Vec::with_capacity(1 + value.len());
                v.push(VALUE_PRESENT);
                v.extend_from_slice(value);
                v
            }
            None => vec![VALUE_DELETED],
        };
        batch.insert(&value_key_bytes(*key, *version)[..], stored);
    }
    // One record per version (not one key per node: sled pays per key) listing the nodes
    // this version made stale, so old versions can be pruned later without walking the tree.
    if !update.tree.stale_node_index_batch.is_empty() {
        let stale: Vec<&NodeKey> = update
            .tree
            .stale_node_index_batch
            .iter()
            .map(|s| &s.node_key)
            .collect();
        let mut key = [0u8; 9];
        key[0] = prefix::TREE_STALE;
        key[1..].copy_from_slice(&update.version.to_be_bytes());
        batch.insert(
            &key[..],
            borsh::to_vec(&stale).expect("writing to a Vec cannot fail"),
        );
    }
}

impl StateRead for Storage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let commits = match self.cached(key) {
            Ok(value) => return Ok(value),
            Err(commits) => commits,
        };
        let value = self.db.get(state_key(key))?.map(|v| v.to_vec());
        self.remember(key, &value, commits);
        Ok(value)
    }
}

impl Storage {
    /// A cached latest value, or the number of commits so far, to hand to
    /// [`Storage::remember`] with what sled says.
    fn cached(&self, key: &[u8]) -> Result<Option<Vec<u8>>, u64> {
        let mut cache = lock(&self.caches.state);
        cache.values.get(key).ok_or(cache.commits)
    }

    /// Caches `value`, read from sled, unless a block was committed since
    /// `commits`: the value may predate it.
    fn remember(&self, key: &[u8], value: &Option<Vec<u8>>, commits: u64) {
        let mut cache = lock(&self.caches.state);
        if cache.commits == commits {
            cache.values.insert(key.to_vec(), value.clone());
        }
    }
}

/// After a block's batch is applied: its writes become the cached latest
/// values, and its tree nodes are cached for the next block's update.
pub(crate) fn cache_update(caches: &ReadCaches, update: &StateUpdate) {
    let mut state = lock(&caches.state);
    state.commits += 1;
    for (key, value) in &update.writes {
        state.values.insert(key.clone(), value.clone());
    }
    drop(state);
    let mut nodes = lock(&caches.nodes);
    for (node_key, node) in update.tree.node_batch.nodes() {
        nodes.insert(node_key_bytes(node_key), node.clone());
    }
}

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
            db: &self.db,
            nodes: Some(&self.caches.nodes),
        };
        let value_set: Vec<(KeyHash, Option<OwnedValue>)> = writes
            .iter()
            .map(|(key, value)| (key_hash(key), value.clone()))
            .collect();
        // An empty value set is fine here (unlike jmt's batch API): freezing the tree
        // cache copies the previous root to the new version, so every height has a root.
        let (root, tree) = Tree::new(&store)
            .put_value_set(value_set, version)
            .map_err(tree_error)?;
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
        match self.head() {
            Some(head) if version <= head.height => {
                tree_root(&self.db, version)?.map(Some).ok_or_else(|| {
                    corrupt(format!(
                        "state tree has no root at committed version {version}"
                    ))
                })
            }
            _ => Ok(None),
        }
    }

    /// `key`'s value (or its absence) at committed `version`, with the proof against that version's root.
    pub fn get_with_proof(&self, key: &[u8], version: u64) -> Result<StateProof, StorageError> {
        let head = self.head().ok_or(StorageError::NotInitialised)?;
        if version > head.height {
            return Err(StorageError::VersionNotCommitted {
                version,
                head: Some(head.height),
            });
        }
        let store = TreeStore {
            db: &self.db,
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

    /// Latest committed `(key, value)` pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + use<> {
        self.db.scan_prefix(state_key(prefix)).map(|entry| {
            let (key, value) = entry?;
            Ok((key[1..].to_vec(), value.to_vec()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{commit, writes};
    use trellis_types::verify_state_proof;

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
        let pairs: Vec<(String, Option<String>)> = (0..50)
            .map(|i| (format!("k{i}"), Some(format!("v{i}"))))
            .collect();
        let pairs: Vec<(&str, Option<&str>)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        commit(&storage, vec![], writes(&pairs));
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

    #[test]
    fn deleting_a_key_restores_the_root_from_before_it_was_inserted() {
        let (_dir, storage) = store();
        let pairs: Vec<(String, Option<String>)> = (0..30)
            .map(|i| (format!("k{i}"), Some(format!("v{i}"))))
            .collect();
        let pairs: Vec<(&str, Option<&str>)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        commit(&storage, vec![], writes(&pairs));
        let before = storage.head().unwrap().state_root;
        commit(&storage, vec![], writes(&[("new", Some("x"))]));
        assert_ne!(storage.head().unwrap().state_root, before);
        commit(&storage, vec![], writes(&[("new", None)]));
        assert_eq!(storage.head().unwrap().state_root, before);

        // Deleting every key gives the empty tree's root.
        let all_deleted: Writes = pairs
            .iter()
            .map(|(k, _)| (k.as_bytes().to_vec(), None))
            .collect();
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
        let err = storage.commit_block(&block, &qc, &[], stale).unwrap_err();
        assert!(
            matches!(err, StorageError::StaleStateUpdate { .. }),
            "{err}"
        );
    }

    #[test]
    fn scan_prefix_returns_latest_values_in_key_order() {
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
        let got: Vec<(Vec<u8>, Vec<u8>)> = storage
            .scan_prefix(b"p/")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            got,
            vec![
                (b"p/b".to_vec(), b"22".to_vec()),
                (b"p/c".to_vec(), b"3".to_vec())
            ]
        );
        assert_eq!(storage.scan_prefix(b"").count(), 4);
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
        let commits = storage.cached(b"n").expect_err("n is not cached");
        let old = storage.db.get(state_key(b"n")).unwrap().map(|v| v.to_vec());
        commit(&storage, vec![], writes(&[("n", Some("1"))]));
        storage.remember(b"n", &old, commits);
        assert_eq!(storage.get(b"n").unwrap().as_deref(), Some(&b"1"[..]));
    }
}
