//! Computing one version of the state tree from the previous one and a
//! block's writes, in one walk of the tree.
//!
//! jmt 0.12 rebuilds each touched node once for a batch of inserts, but
//! deletes key by key, rebuilding the whole path of every deleted key, and
//! its tree cache copies every node several times. A busy block deletes
//! thousands of keys (a piece leaving its holder's index), so this module
//! walks the previous version's tree once for all of a block's writes,
//! inserts and deletions alike.
//!
//! It builds exactly jmt's tree: a key set has one shape (a leaf sits at the
//! shortest path that tells it apart from every other key; an internal node
//! with one child has an internal child), so the root is the one jmt would
//! compute, and the nodes are jmt's own types, which jmt reads back for
//! proofs. Genesis (version 0) still goes through jmt, which builds it on its
//! pre-genesis root.

use super::{key_path, nibble, tree_error};
use crate::storage::{StorageError, corrupt};
use jmt::storage::{
    LeafNode, NibblePath, Node, NodeBatch, NodeKey, StaleNodeIndex, TreeReader, TreeUpdateBatch,
};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, RootHash, ValueHash, Version};
use std::collections::{BTreeMap, BTreeSet};
use trellis_types::proof::StateHasher;

/// A block's write to one key of the tree.
pub(super) struct KeyWrite {
    pub key: KeyHash,
    /// `None` deletes the key.
    pub value: Option<OwnedValue>,
    /// The key is known to be in the tree before the write (at `version -
    /// 1`). `true` must be exact: a key in the tree is the only leaf on its
    /// path, so the walk takes the leaf it meets there for this key's own,
    /// unread. `false` may also mean "not known": the walk then reads the leaf
    /// and compares keys.
    pub present: bool,
}

/// Reads stored nodes for the walk without copying them: the walk needs
/// only a node's children or its leaf, and most reads are of internal nodes
/// (16 boxed slots) held by the node cache or a staged block's update.
pub(super) trait NodeReader {
    /// `read` of the node at `key`, if there is one.
    fn read_node<T>(
        &self,
        key: &NodeKey,
        read: impl Fn(&Node) -> T,
    ) -> Result<Option<T>, StorageError>;
}

/// The tree at `version` after `writes` on the tree at `version - 1`.
pub(super) fn compute<R: TreeReader + NodeReader>(
    store: &R,
    version: Version,
    writes: Vec<KeyWrite>,
) -> Result<(RootHash, TreeUpdateBatch), StorageError> {
    if version == 0 {
        let writes: Vec<_> = writes.into_iter().map(|w| (w.key, w.value)).collect();
        return JellyfishMerkleTree::<_, StateHasher>::new(store)
            .put_value_set(writes, version)
            .map_err(tree_error);
    }
    let writes: BTreeMap<KeyHash, KeyWrite> = writes.into_iter().map(|w| (w.key, w)).collect();
    let hashed: Vec<Write> = writes
        .values()
        .map(|w| Write {
            key: w.key,
            value: w.value.as_ref().map(ValueHash::with::<StateHasher>),
            present: w.present,
        })
        .collect();
    let mut update = Update {
        store,
        version,
        nodes: BTreeMap::new(),
        stale: BTreeSet::new(),
    };
    let previous_root = NodeKey::new(version - 1, root_path());
    let root = update.subtree(Some(&previous_root), false, 0, &hashed)?;
    let root_hash = match root {
        // Already written at the root's path.
        Subtree::Internal(child) => child.hash,
        // Every version has a root: an unchanged one is copied to it.
        Subtree::Unchanged => {
            let root = update.read(&previous_root, Node::clone)?;
            update.mark_stale(Some(previous_root));
            update.put_root(root)
        }
        Subtree::Empty => update.put_root(Node::Null),
        Subtree::Leaf { leaf, stored } => {
            update.mark_stale(stored);
            update.put_root(Node::Leaf(leaf))
        }
    };
    let values = writes
        .into_iter()
        .map(|(key, w)| ((version, key), w.value))
        .collect();
    Ok((
        RootHash(root_hash),
        TreeUpdateBatch {
            node_batch: NodeBatch::new(update.nodes, values),
            stale_node_index_batch: update.stale,
            node_stats: Vec::new(),
        },
    ))
}

/// A [`KeyWrite`] with its value hashed (`None`: deleted).
#[derive(Clone, Copy)]
struct Write {
    key: KeyHash,
    value: Option<ValueHash>,
    present: bool,
}

/// One block's walk of the tree: the nodes it writes and the ones it makes stale.
struct Update<'a, R> {
    store: &'a R,
    version: Version,
    nodes: BTreeMap<NodeKey, Node>,
    stale: BTreeSet<StaleNodeIndex>,
}

/// A subtree after the update, as its parent sees it.
enum Subtree {
    Unchanged,
    Empty,
    /// A single key: a leaf is placed by its parent, as high as it can sit.
    /// `stored` is where it is stored now, if it is an old leaf moving up.
    Leaf {
        leaf: LeafNode,
        stored: Option<NodeKey>,
    },
    /// An internal node, written at its path in this version.
    Internal(ChildRef),
}

/// What an internal node records of a child.
#[derive(Clone)]
struct ChildRef {
    hash: [u8; 32],
    version: Version,
    /// 1 for a leaf.
    leaf_count: usize,
    is_leaf: bool,
}

/// What the walk takes of a stored node.
#[expect(
    clippy::large_enum_variant,
    reason = "held on the stack for one step of the walk; a box would be the allocation reading in place saves"
)]
enum Existing {
    /// An internal node's children.
    Internal([Option<Slot>; 16]),
    Leaf(LeafNode),
    Null,
}

impl Existing {
    fn of(node: &Node) -> Existing {
        match node {
            Node::Internal(internal) => {
                let mut slots: [Option<Slot>; 16] = Default::default();
                for (index, child) in internal.children_sorted() {
                    slots[usize::from(u8::from(index))] = Some(Slot::Child(ChildRef {
                        hash: child.hash,
                        version: child.version,
                        leaf_count: child.leaf_count(),
                        is_leaf: child.is_leaf(),
                    }));
                }
                Existing::Internal(slots)
            }
            Node::Leaf(leaf) => Existing::Leaf(leaf.clone()),
            Node::Null => Existing::Null,
        }
    }
}

/// A child slot of an internal node being rebuilt.
enum Slot {
    Child(ChildRef),
    /// A leaf not yet placed: it moves up instead if it ends up an only child.
    Leaf {
        leaf: LeafNode,
        stored: Option<NodeKey>,
    },
}

impl<R: NodeReader> Update<'_, R> {
    fn read<T>(&self, key: &NodeKey, read: impl Fn(&Node) -> T) -> Result<T, StorageError> {
        self.store.read_node(key, read)?.ok_or_else(|| {
            corrupt(format!(
                "state tree node of version {} at depth {} is missing",
                key.version(),
                key.nibble_path().num_nibbles()
            ))
        })
    }

    fn mark_stale(&mut self, node_key: Option<NodeKey>) {
        if let Some(node_key) = node_key {
            self.stale.insert(StaleNodeIndex {
                stale_since_version: self.version,
                node_key,
            });
        }
    }

    /// The subtree at depth `depth` on the path of `writes` (all of which
    /// share it) after them; `existing` is the node there now, if any, and
    /// `existing_is_leaf` says it is a leaf (false: an internal node, or unknown).
    fn subtree(
        &mut self,
        existing: Option<&NodeKey>,
        existing_is_leaf: bool,
        depth: usize,
        writes: &[Write],
    ) -> Result<Subtree, StorageError> {
        // A leaf here is the leaf of any written key that is in the tree, and
        // that key is rewritten or deleted: its old leaf is not needed. Most
        // writes change keys in the tree, so most leaves are never read.
        let known_leaf = existing_is_leaf && writes.iter().any(|w| w.present);
        let node = match existing {
            Some(key) if !known_leaf => self.read(key, Existing::of)?,
            _ => Existing::Null,
        };
        let old_leaf = match node {
            Existing::Internal(slots) => {
                return self.rebuild_internal(existing.cloned(), slots, depth, writes);
            }
            Existing::Leaf(leaf) => Some(leaf),
            Existing::Null => None,
        };
        // A leaf or nothing here now. After the writes the subtree holds the
        // keys written with a value, and the old leaf unless it was written.
        let old_leaf_written = known_leaf
            || old_leaf
                .as_ref()
                .is_some_and(|leaf| writes.iter().any(|w| w.key == leaf.key_hash()));
        let mut leaves: Vec<LeafNode> = writes
            .iter()
            .filter_map(|w| Some(LeafNode::new(w.key, w.value?)))
            .collect();
        if leaves.is_empty() && !old_leaf_written {
            // Only deletions of keys that are not in the tree.
            return Ok(Subtree::Unchanged);
        }
        leaves.extend(old_leaf.filter(|_| !old_leaf_written));
        leaves.sort_by_key(LeafNode::key_hash);
        self.mark_stale(existing.cloned());
        Ok(match leaves.len() {
            0 => Subtree::Empty,
            1 => Subtree::Leaf {
                leaf: leaves.pop().expect("one leaf"),
                stored: None,
            },
            _ => Subtree::Internal(self.new_internal(depth, &leaves)),
        })
    }

    /// The internal node at `existing` (with children `slots`) after `writes`.
    fn rebuild_internal(
        &mut self,
        existing: Option<NodeKey>,
        mut slots: [Option<Slot>; 16],
        depth: usize,
        writes: &[Write],
    ) -> Result<Subtree, StorageError> {
        let child_key = |index: usize, version: Version| {
            NodeKey::new(version, child_path(writes[0].key, depth, index))
        };
        let mut changed = false;
        for group in writes.chunk_by(|a, b| nibble(a.key, depth) == nibble(b.key, depth)) {
            let index = usize::from(nibble(group[0].key, depth));
            let (existing_child, is_leaf) = match &slots[index] {
                Some(Slot::Child(child)) => (Some(child_key(index, child.version)), child.is_leaf),
                _ => (None, false),
            };
            slots[index] = match self.subtree(existing_child.as_ref(), is_leaf, depth + 1, group)? {
                Subtree::Unchanged => continue,
                Subtree::Empty => None,
                Subtree::Leaf { leaf, stored } => Some(Slot::Leaf { leaf, stored }),
                Subtree::Internal(child) => Some(Slot::Child(child)),
            };
            changed = true;
        }
        if !changed {
            return Ok(Subtree::Unchanged);
        }
        self.mark_stale(existing);
        let mut occupied = slots.iter().enumerate().filter(|(_, s)| s.is_some());
        let only = match (occupied.next(), occupied.next()) {
            (None, _) => return Ok(Subtree::Empty),
            (Some((index, _)), None) => Some(index),
            _ => None,
        };
        if let Some(index) = only {
            match slots[index].take().expect("occupied") {
                Slot::Leaf { leaf, stored } => return Ok(Subtree::Leaf { leaf, stored }),
                Slot::Child(child) if child.is_leaf => {
                    let stored = child_key(index, child.version);
                    let Existing::Leaf(leaf) = self.read(&stored, Existing::of)? else {
                        return Err(corrupt("state tree child marked a leaf is not one"));
                    };
                    return Ok(Subtree::Leaf {
                        leaf,
                        stored: Some(stored),
                    });
                }
                child => slots[index] = Some(child),
            }
        }
        let mut children: [Option<ChildRef>; 16] = Default::default();
        for (index, slot) in slots.into_iter().enumerate() {
            children[index] = match slot {
                None => None,
                Some(Slot::Child(child)) => Some(child),
                Some(Slot::Leaf { leaf, stored }) => {
                    self.mark_stale(stored);
                    Some(self.put_leaf(child_key(index, self.version), leaf))
                }
            };
        }
        let path = key_path(writes[0].key, depth);
        Ok(Subtree::Internal(self.put_internal(path, &children)))
    }

    /// A new internal node at depth `depth` over `leaves` (at least two,
    /// sorted, sharing the path to it), with every node under it new.
    fn new_internal(&mut self, depth: usize, leaves: &[LeafNode]) -> ChildRef {
        let mut children: [Option<ChildRef>; 16] = Default::default();
        for group in
            leaves.chunk_by(|a, b| nibble(a.key_hash(), depth) == nibble(b.key_hash(), depth))
        {
            let key = group[0].key_hash();
            children[usize::from(nibble(key, depth))] = Some(match group {
                [leaf] => self.put_leaf(
                    NodeKey::new(self.version, key_path(key, depth + 1)),
                    leaf.clone(),
                ),
                _ => self.new_internal(depth + 1, group),
            });
        }
        self.put_internal(key_path(leaves[0].key_hash(), depth), &children)
    }

    /// Writes `node` as this version's root; returns its hash.
    fn put_root(&mut self, node: Node) -> [u8; 32] {
        let hash = node_hash(&node);
        self.nodes
            .insert(NodeKey::new(self.version, root_path()), node);
        hash
    }

    fn put_leaf(&mut self, node_key: NodeKey, leaf: LeafNode) -> ChildRef {
        let child = ChildRef {
            hash: leaf.hash::<StateHasher>(),
            version: self.version,
            leaf_count: 1,
            is_leaf: true,
        };
        self.nodes.insert(node_key, Node::Leaf(leaf));
        child
    }

    fn put_internal(&mut self, path: NibblePath, children: &[Option<ChildRef>; 16]) -> ChildRef {
        let node = internal_node(children);
        let child = ChildRef {
            hash: node_hash(&node),
            version: self.version,
            leaf_count: children.iter().flatten().map(|c| c.leaf_count).sum(),
            is_leaf: false,
        };
        self.nodes.insert(NodeKey::new(self.version, path), node);
        child
    }
}

fn root_path() -> NibblePath {
    key_path(KeyHash([0; 32]), 0)
}

/// The path of child `index` of the node at depth `depth` on `key`'s path.
fn child_path(key: KeyHash, depth: usize, index: usize) -> NibblePath {
    key_path(with_nibble(key, depth, index as u8), depth + 1)
}

/// `key` with nibble `depth` set to `nibble`.
pub(super) fn with_nibble(key: KeyHash, depth: usize, nibble: u8) -> KeyHash {
    let mut bytes = key.0;
    let byte = &mut bytes[depth / 2];
    *byte = if depth.is_multiple_of(2) {
        (nibble << 4) | (*byte & 0x0f)
    } else {
        (*byte & 0xf0) | nibble
    };
    KeyHash(bytes)
}

/// The hash jmt gives the empty tree (a crate-private constant of jmt's).
const EMPTY_TREE_HASH: [u8; 32] = *b"SPARSE_MERKLE_PLACEHOLDER_HASH__";

pub(super) fn node_hash(node: &Node) -> [u8; 32] {
    match node {
        Node::Null => EMPTY_TREE_HASH,
        Node::Internal(internal) => internal.hash::<StateHasher>(),
        Node::Leaf(leaf) => leaf.hash::<StateHasher>(),
    }
}

/// jmt's internal node with `children`. jmt does not export the type's
/// constructor, so it is decoded from its borsh form: `1u8` (the `Internal`
/// variant) ‖ 16 × `Option<Child>` ‖ child count (u64) ‖ leaf count (u64),
/// a child being `hash ‖ version (u64) ‖ node type` (`0u8` leaf, or `1u8` ‖
/// leaf count (u64)). jmt is pinned; a layout change fails every state test.
fn internal_node(children: &[Option<ChildRef>; 16]) -> Node {
    let mut bytes = Vec::with_capacity(1 + 16 * 50 + 16);
    bytes.push(1);
    let (mut count, mut leaf_count) = (0u64, 0u64);
    for child in children {
        let Some(child) = child else {
            bytes.push(0);
            continue;
        };
        bytes.push(1);
        bytes.extend_from_slice(&child.hash);
        bytes.extend_from_slice(&child.version.to_le_bytes());
        if child.is_leaf {
            bytes.push(0);
        } else {
            bytes.push(1);
            bytes.extend_from_slice(&(child.leaf_count as u64).to_le_bytes());
        }
        count += 1;
        leaf_count += child.leaf_count as u64;
    }
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.extend_from_slice(&leaf_count.to_le_bytes());
    borsh::from_slice(&bytes).expect("an internal node's borsh form decodes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tree held in memory, for comparing with jmt's own updates; counts
    /// the leaves read.
    #[derive(Default)]
    struct MemoryTree(BTreeMap<NodeKey, Node>, std::cell::Cell<usize>);

    impl NodeReader for MemoryTree {
        fn read_node<T>(
            &self,
            key: &NodeKey,
            read: impl Fn(&Node) -> T,
        ) -> Result<Option<T>, StorageError> {
            let node = self.0.get(key);
            if matches!(node, Some(Node::Leaf(_))) {
                self.1.set(self.1.get() + 1);
            }
            Ok(node.map(read))
        }
    }

    impl TreeReader for MemoryTree {
        fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
            let node = self.0.get(node_key).cloned();
            if matches!(node, Some(Node::Leaf(_))) {
                self.1.set(self.1.get() + 1);
            }
            Ok(node)
        }

        fn get_value_option(&self, _: Version, _: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
            anyhow::bail!("not read")
        }

        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            anyhow::bail!("not read")
        }
    }

    /// Key `i` of a small universe whose hashes share long prefixes, so that
    /// updates split and collapse chains of single-child nodes.
    fn key(i: u8) -> KeyHash {
        let mut hash = [0u8; 32];
        if i < 64 {
            hash[0] = i & 3;
            hash[1] = (i >> 2) & 3;
            hash[2] = (i >> 4) & 3;
        } else {
            hash = *blake3::hash(&[i]).as_bytes();
        }
        KeyHash(hash)
    }

    /// The nodes reachable from `version`'s root, checking each child's hash
    /// and kind against the node stored for it.
    fn reachable(tree: &MemoryTree, version: Version) -> BTreeMap<NodeKey, Node> {
        let mut out = BTreeMap::new();
        // Each node with a key on its path.
        let mut pending = vec![(NodeKey::new(version, root_path()), KeyHash([0; 32]))];
        while let Some((node_key, on_path)) = pending.pop() {
            let node = tree.0[&node_key].clone();
            if let Node::Internal(internal) = &node {
                let depth = node_key.nibble_path().num_nibbles();
                for (index, child) in internal.children_sorted() {
                    let on_path = with_nibble(on_path, depth, u8::from(index));
                    let child_key = NodeKey::new(child.version, key_path(on_path, depth + 1));
                    let child_node = &tree.0[&child_key];
                    assert_eq!(node_hash(child_node), child.hash, "{child_key:?}");
                    assert_eq!(matches!(child_node, Node::Leaf(_)), child.is_leaf());
                    pending.push((child_key, on_path));
                }
            }
            out.insert(node_key, node);
        }
        out
    }

    fn key_writes(
        writes: &[(KeyHash, Option<OwnedValue>)],
        present: &BTreeSet<KeyHash>,
    ) -> Vec<KeyWrite> {
        writes
            .iter()
            .map(|(key, value)| KeyWrite {
                key: *key,
                value: value.clone(),
                present: present.contains(key),
            })
            .collect()
    }

    #[test]
    fn rewriting_or_deleting_keys_in_the_tree_reads_no_leaf() {
        let mut tree = MemoryTree::default();
        let keys: Vec<KeyHash> = (0..80).map(key).collect();
        let inserts: Vec<_> = keys.iter().map(|k| (*k, Some(vec![1]))).collect();
        let (_, batch) = compute(&tree, 0, key_writes(&inserts, &BTreeSet::new())).unwrap();
        tree.0.extend(batch.node_batch.nodes().clone());
        let present: BTreeSet<KeyHash> = keys.iter().copied().collect();
        // Every other key rewritten, every fourth deleted (leaving some
        // parents with one leaf, which moves up and so is read).
        let writes: Vec<_> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(i, k)| (*k, (i % 4 == 0).then(|| vec![2])))
            .collect();
        let (root, batch) = compute(&tree, 1, key_writes(&writes, &present)).unwrap();
        let moved_up = tree.1.get();
        let theirs = MemoryTree(tree.0.clone(), Default::default());
        let (expected, _) = JellyfishMerkleTree::<_, StateHasher>::new(&theirs)
            .put_value_set(writes.clone(), 1)
            .unwrap();
        assert_eq!(root, expected);
        // jmt reads every written key's leaf; this walk only the ones that move up.
        assert!(theirs.1.get() >= writes.len(), "{}", theirs.1.get());
        assert!(moved_up < writes.len() / 4, "{moved_up} leaves read");
        // Rewrites alone read no leaf at all.
        tree.0.extend(batch.node_batch.nodes().clone());
        theirs.1.set(0);
        tree.1.set(0);
        let rewrites: Vec<_> = keys
            .iter()
            .skip(1)
            .step_by(2)
            .map(|k| (*k, Some(vec![3])))
            .collect();
        compute(&tree, 2, key_writes(&rewrites, &present)).unwrap();
        assert_eq!(tree.1.get(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Block after block of inserts, updates and deletions, this module
        /// and jmt (key by key) build the same tree: same root, same nodes.
        #[test]
        fn one_walk_builds_the_tree_jmt_builds(
            blocks in prop::collection::vec(
                prop::collection::vec((0u8..80, prop::option::weighted(0.6, 0u8..4)), 0..24),
                1..8,
            ),
            // Keys whose presence the walk is not told (as for keys not cached).
            unknown in prop::collection::btree_set(0u8..80, 0..40),
        ) {
            let jmt_tree = |tree: &MemoryTree, writes: &[(KeyHash, Option<OwnedValue>)], version| {
                JellyfishMerkleTree::<_, StateHasher>::new(tree)
                    .put_value_set(writes.to_vec(), version)
                    .unwrap()
            };
            let mut ours = MemoryTree::default();
            let mut theirs = MemoryTree::default();
            let mut present = BTreeSet::new();
            let unknown: BTreeSet<KeyHash> = unknown.into_iter().map(key).collect();
            for (version, block) in blocks.iter().enumerate() {
                let version = version as Version;
                let writes: Vec<(KeyHash, Option<OwnedValue>)> = block
                    .iter()
                    .map(|(k, v)| (key(*k), v.map(|v| vec![v])))
                    .collect();
                let known: BTreeSet<KeyHash> = present.difference(&unknown).copied().collect();
                let (root, batch) = compute(&ours, version, key_writes(&writes, &known)).unwrap();
                // The last write of a key decides, as in jmt's value set.
                for (key, value) in &writes {
                    match value {
                        Some(_) => present.insert(*key),
                        None => present.remove(key),
                    };
                }
                let (expected_root, expected) = jmt_tree(&theirs, &writes, version);
                prop_assert_eq!(root, expected_root, "version {}", version);
                ours.0.extend(batch.node_batch.nodes().clone());
                theirs.0.extend(expected.node_batch.nodes().clone());
                // The same nodes at the same paths; ours may keep an older
                // version of a node jmt rewrote unchanged (a leaf it moved up
                // for a deletion and back down for an insert).
                let shape = |tree: &MemoryTree| -> BTreeMap<Vec<u8>, [u8; 32]> {
                    reachable(tree, version)
                        .iter()
                        .map(|(key, node)| (borsh::to_vec(key.nibble_path()).unwrap(), node_hash(node)))
                        .collect()
                };
                prop_assert_eq!(shape(&ours), shape(&theirs));
                let stale: BTreeSet<_> = batch.stale_node_index_batch.iter().map(|s| &s.node_key).collect();
                for node_key in reachable(&ours, version).keys() {
                    prop_assert!(!stale.contains(node_key), "{:?} is live and marked stale", node_key);
                }
            }
        }
    }
}
