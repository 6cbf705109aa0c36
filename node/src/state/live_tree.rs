//! Copying one version of the state tree alone, for `prune-state`: the nodes
//! reachable from its root and its leaves' values, nothing older.
//!
//! The walk is depth first with children in nibble order, so nodes arrive
//! grouped by their first three nibbles and leaves in key-hash order: a node
//! record (or a value record) is complete once the walk has left its group,
//! and is written then, so memory holds one group at a time. Every child is
//! checked against its parent's hash and kind, and every leaf's value against
//! the leaf: a damaged tree is refused, not copied.

use super::tree_records::{self, NodeRecordKey};
use super::tree_update::{node_hash, with_nibble};
use super::{TreeStore, key_path, tree_error};
use crate::cache::Cache;
use crate::storage::{BatchedWriter, RecordReader, StorageError, corrupt};
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, ValueHash, Version};
use std::collections::BTreeMap;
use std::sync::Mutex;
use trellis_types::proof::StateHasher;

/// Nodes kept decoded while leaves that only moved are followed back to
/// their values (those walks share their top levels).
const NODE_CACHE_ENTRIES: usize = 1 << 16;

/// What [`copy`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopiedTree {
    pub nodes: u64,
    pub leaves: u64,
}

/// Writes `version`'s tree from `from` into `to`, in the layout of
/// [`tree_records`], every leaf's value as written (no `Moved` entries).
pub(crate) fn copy(
    from: &RecordReader,
    version: Version,
    to: BatchedWriter,
) -> Result<CopiedTree, StorageError> {
    let nodes = Mutex::new(Cache::of_immutable(NODE_CACHE_ENTRIES));
    let store = TreeStore {
        db: from,
        nodes: Some(&nodes),
    };
    let mut out = Output::new(to);
    let root_key = NodeKey::new(version, key_path(KeyHash([0; 32]), 0));
    let root = read_node(&store, &root_key)?;
    // Each node with a key on its path; popped lowest nibble first.
    let mut pending = vec![(root_key, KeyHash([0; 32]), root)];
    while let Some((node_key, on_path, node)) = pending.pop() {
        match &node {
            Node::Internal(internal) => {
                let depth = node_key.nibble_path().num_nibbles();
                let children: Vec<_> = internal.children_sorted().collect();
                for (index, child) in children.into_iter().rev() {
                    let on_path = with_nibble(on_path, depth, u8::from(index));
                    let child_key = NodeKey::new(child.version, key_path(on_path, depth + 1));
                    let child_node = read_node(&store, &child_key)?;
                    if node_hash(&child_node) != child.hash
                        || matches!(child_node, Node::Leaf(_)) != child.is_leaf()
                    {
                        return Err(damaged(&child_key, "does not match its parent"));
                    }
                    pending.push((child_key, on_path, child_node));
                }
            }
            Node::Leaf(leaf) => {
                let value = store.leaf_value(node_key.version(), leaf.key_hash())?;
                let hashed = LeafNode::new(leaf.key_hash(), ValueHash::with::<StateHasher>(&value));
                if hashed != *leaf {
                    return Err(damaged(&node_key, "holds a value of another hash"));
                }
                out.value(node_key.version(), leaf.key_hash(), value)?;
            }
            Node::Null => {}
        }
        out.node(node_key, node)?;
    }
    out.finish()
}

fn read_node(store: &TreeStore, key: &NodeKey) -> Result<Node, StorageError> {
    store
        .get_node_option(key)
        .map_err(tree_error)?
        .ok_or_else(|| damaged(key, "is missing"))
}

fn damaged(key: &NodeKey, what: &str) -> StorageError {
    corrupt(format!(
        "state tree node of version {} at depth {} {what}",
        key.version(),
        key.nibble_path().num_nibbles()
    ))
}

/// The records being gathered, written out group by group.
struct Output<'a> {
    to: BatchedWriter<'a>,
    /// Nodes of the top three levels: one record per version, whose nodes
    /// the walk visits between the other groups'.
    top: BTreeMap<NodeKey, Node>,
    /// Nodes of the group being walked (selector of [`NodeRecordKey`]).
    group: BTreeMap<NodeKey, Node>,
    group_selector: [u8; 2],
    /// Leaf values whose key hash starts with `values_byte`.
    values: Vec<(Version, KeyHash, OwnedValue)>,
    values_byte: u8,
    copied: CopiedTree,
}

impl<'a> Output<'a> {
    fn new(to: BatchedWriter<'a>) -> Self {
        Output {
            to,
            top: BTreeMap::new(),
            group: BTreeMap::new(),
            group_selector: [0; 2],
            values: Vec::new(),
            values_byte: 0,
            copied: CopiedTree::default(),
        }
    }

    fn node(&mut self, key: NodeKey, node: Node) -> Result<(), StorageError> {
        self.copied.nodes += 1;
        if key.nibble_path().num_nibbles() < 3 {
            self.top.insert(key, node);
            return Ok(());
        }
        let selector = selector(&tree_records::node_record_key(&key));
        if selector != self.group_selector {
            self.flush_group()?;
            self.group_selector = selector;
        }
        self.group.insert(key, node);
        Ok(())
    }

    fn value(
        &mut self,
        version: Version,
        key: KeyHash,
        value: OwnedValue,
    ) -> Result<(), StorageError> {
        self.copied.leaves += 1;
        if key.0[0] != self.values_byte {
            self.flush_values()?;
            self.values_byte = key.0[0];
        }
        self.values.push((version, key, value));
        Ok(())
    }

    fn flush_group(&mut self) -> Result<(), StorageError> {
        let group = std::mem::take(&mut self.group);
        for (key, record) in tree_records::encode_nodes(&group) {
            self.to.put(&key[..], &record)?;
        }
        Ok(())
    }

    fn flush_values(&mut self) -> Result<(), StorageError> {
        let values = std::mem::take(&mut self.values);
        let leaves = values.iter().map(|(v, k, value)| (*v, *k, &value[..]));
        for (key, record) in tree_records::encode_written(leaves) {
            self.to.put(&key[..], &record)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<CopiedTree, StorageError> {
        self.flush_group()?;
        self.flush_values()?;
        let top = std::mem::take(&mut self.top);
        for (key, record) in tree_records::encode_nodes(&top) {
            self.to.put(&key[..], &record)?;
        }
        self.to.flush()?;
        Ok(self.copied)
    }
}

/// The group part of a node record's key (after prefix and version).
fn selector(key: &NodeRecordKey) -> [u8; 2] {
    [key[9], key[10]]
}
