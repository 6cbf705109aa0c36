//! Computing one version of the state tree from the previous one and a
//! block's writes, as cheaply as jmt allows.
//!
//! jmt's key-by-key insertion rebuilds the whole path of every key: with
//! thousands of keys a block, the top of the tree is copied and rehashed
//! thousands of times. Its batch insertion rebuilds each touched node once,
//! but cannot delete. So a block's deletions go key by key first, and its
//! inserts and updates go in one batch on top of the result, at the same
//! version; the two update batches are merged into one.

use super::{TreeStore, tree_error};
use crate::storage::StorageError;
use jmt::storage::{LeafNode, Node, NodeBatch, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, RootHash, Version};
use std::collections::{BTreeMap, BTreeSet};
use trellis_types::proof::StateHasher;

/// The tree at `version` after `writes` (by key hash; `None` deletes) on the tree at `version - 1`.
pub(super) fn compute(
    store: &TreeStore<'_>,
    version: Version,
    writes: Vec<(KeyHash, Option<OwnedValue>)>,
) -> Result<(RootHash, TreeUpdateBatch), StorageError> {
    let (deletes, inserts): (Vec<_>, Vec<_>) = writes.into_iter().partition(|(_, v)| v.is_none());
    let inserts: Vec<(KeyHash, OwnedValue)> = inserts
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect();
    // Version 0 builds on jmt's pre-genesis root, which `AfterDeletions` does not stand in
    // for: a genesis with deletions goes key by key.
    if inserts.is_empty() || (version == 0 && !deletes.is_empty()) {
        // Freezing jmt's tree cache copies the previous root to the new version, so
        // even a block without writes gives its version a root.
        let all = deletes
            .into_iter()
            .chain(inserts.into_iter().map(|(k, v)| (k, Some(v))));
        return JellyfishMerkleTree::<_, StateHasher>::new(store)
            .put_value_set(all, version)
            .map_err(tree_error);
    }
    if deletes.is_empty() {
        return insert_batch(store, version, inserts);
    }
    let (_, deleted) = JellyfishMerkleTree::<_, StateHasher>::new(store)
        .put_value_set(deletes, version)
        .map_err(tree_error)?;
    let after_deletions = AfterDeletions {
        base: store,
        nodes: deleted.node_batch.nodes(),
        version,
    };
    let (root, inserted) = insert_batch(&after_deletions, version, inserts)?;
    Ok((root, merge(deleted, inserted, version)))
}

fn insert_batch<R: TreeReader>(
    reader: &R,
    version: Version,
    inserts: Vec<(KeyHash, OwnedValue)>,
) -> Result<(RootHash, TreeUpdateBatch), StorageError> {
    let (roots, batch) = JellyfishMerkleTree::<_, StateHasher>::new(reader)
        .batch_put_value_sets(vec![inserts], None, version)
        .map_err(tree_error)?;
    Ok((roots[0], batch))
}

/// The tree with a block's deletions applied at `version` but not stored:
/// jmt builds `version` on the root of `version - 1`, so that root is
/// answered with the root after the deletions.
struct AfterDeletions<'a> {
    base: &'a TreeStore<'a>,
    nodes: &'a BTreeMap<NodeKey, Node>,
    version: Version,
}

impl TreeReader for AfterDeletions<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let is_previous_root =
            node_key.version() + 1 == self.version && node_key.nibble_path().num_nibbles() == 0;
        let key = if is_previous_root {
            &NodeKey::new(self.version, node_key.nibble_path().clone())
        } else {
            node_key
        };
        match self.nodes.get(key) {
            Some(node) => Ok(Some(node.clone())),
            None => self.base.get_node_option(key),
        }
    }

    fn get_value_option(
        &self,
        _max_version: Version,
        _key: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        anyhow::bail!("values are not read while inserting")
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        self.base.get_rightmost_leaf()
    }
}

/// One update for `version` out of the deletions' and then the inserts'.
/// Nodes the insert pass replaced or removed (it reports them stale) leave
/// the deletions' nodes; nodes both passes wrote keep the insert pass's
/// version; only nodes of earlier versions are stale.
fn merge(deleted: TreeUpdateBatch, inserted: TreeUpdateBatch, version: Version) -> TreeUpdateBatch {
    let replaced: BTreeSet<&NodeKey> = inserted
        .stale_node_index_batch
        .iter()
        .filter(|stale| stale.node_key.version() == version)
        .map(|stale| &stale.node_key)
        .collect();
    let nodes: BTreeMap<NodeKey, Node> = deleted
        .node_batch
        .nodes()
        .iter()
        .filter(|(key, _)| !replaced.contains(key))
        .chain(inserted.node_batch.nodes())
        .map(|(key, node)| (key.clone(), node.clone()))
        .collect();
    let values = deleted
        .node_batch
        .values()
        .iter()
        .chain(inserted.node_batch.values())
        .map(|(key, value)| (*key, value.clone()))
        .collect();
    let stale_node_index_batch = deleted
        .stale_node_index_batch
        .iter()
        .chain(&inserted.stale_node_index_batch)
        .filter(|stale| stale.node_key.version() < version)
        .cloned()
        .collect();
    TreeUpdateBatch {
        node_batch: NodeBatch::new(nodes, values),
        stale_node_index_batch,
        node_stats: Vec::new(),
    }
}
