//! How the state tree is laid out in sled: not one key per node or value but
//! one record per group. sled's cost is per key, and a block writes whole
//! paths, so a block touching thousands of keys writes a few thousand
//! records (at most 4,097 node records and 256 value records) instead of
//! several records per key.
//!
//! - Node records group the nodes one version wrote under the same first
//!   three nibbles of their path, plus one record for the top three levels.
//!   Three, not two: a node read pulls a whole sled leaf (up to 16 records)
//!   into memory, and with two-nibble records those leaves reached 1.6 MB on
//!   a large store, which sled's cache could not evict (docs/benchmarks.md).
//! - Value records group the values one version gave to leaves whose key hash
//!   starts with the same byte. A leaf that only moved (a neighbour was
//!   inserted or deleted) gets a [`StoredValue::Moved`] entry instead of a copy
//!   of its value, so moves cost nothing to write.
//!
//! A record is `u32 count ‖ count × u32 offset ‖ entries`, the entries sorted
//! by id (so a lookup is a binary search), each `u16 id length ‖ id ‖ u32
//! length ‖ entry`: for a node the id is its borsh-encoded nibble path and the
//! entry the borsh-encoded node; for a value the id is the key hash and the
//! entry a tag and the value. Records are written once, never changed.

use crate::storage::prefix;
use jmt::storage::{Node, NodeKey};
use jmt::{KeyHash, OwnedValue, Version};
use std::collections::BTreeMap;

/// `TREE_NODE ‖ version ‖ selector`: selector `[0, 0]` for paths shorter than
/// three nibbles, `[1 ‖ first nibble, next two nibbles]` for the rest.
pub(crate) type NodeRecordKey = [u8; 11];

/// `TREE_VALUE ‖ version ‖ first byte of the key hash`.
pub(crate) type ValueRecordKey = [u8; 10];

/// The record `node_key`'s node is stored in.
pub(crate) fn node_record_key(node_key: &NodeKey) -> NodeRecordKey {
    let mut key = [0u8; 11];
    key[0] = prefix::TREE_NODE;
    key[1..9].copy_from_slice(&node_key.version().to_be_bytes());
    let path = node_key.nibble_path();
    if path.num_nibbles() >= 3 {
        key[9] = 0x10 | u8::from(path.get_nibble(0));
        key[10] = (u8::from(path.get_nibble(1)) << 4) | u8::from(path.get_nibble(2));
    }
    key
}

/// The record holding the value `version` gave to `key`, if it gave one.
pub(crate) fn value_record_key(version: Version, key: KeyHash) -> ValueRecordKey {
    let mut out = [0u8; 10];
    out[0] = prefix::TREE_VALUE;
    out[1..9].copy_from_slice(&version.to_be_bytes());
    out[9] = key.0[0];
    out
}

/// The longest node id: the borsh-encoded nibble path of a full key (nibble
/// count u64 ‖ byte count u32 ‖ 32 bytes).
const NODE_ID_MAX: usize = 44;

/// A node's id within its record: its borsh-encoded nibble path, held inline.
/// A busy block builds tens of thousands at once; one heap allocation each
/// was a visible part of the block writer.
pub(crate) struct NodeId {
    len: u8,
    bytes: [u8; NODE_ID_MAX],
}

impl std::ops::Deref for NodeId {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for NodeId {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

pub(crate) fn node_id(node_key: &NodeKey) -> NodeId {
    let mut bytes = [0u8; NODE_ID_MAX];
    let mut rest = &mut bytes[..];
    borsh::to_writer(&mut rest, node_key.nibble_path())
        .expect("a nibble path's encoding fits NODE_ID_MAX bytes");
    let len = (NODE_ID_MAX - rest.len()) as u8;
    NodeId { len, bytes }
}

/// What a value record says about a leaf of its version.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StoredValue<'r> {
    /// The version wrote this value.
    Written(&'r [u8]),
    /// The leaf moved with its value unchanged: the value is where the
    /// previous version's leaf for the key says.
    Moved,
}

const WRITTEN: u8 = 1;
const MOVED: u8 = 2;

/// The records for one version's new nodes, in key order.
pub(crate) fn encode_nodes(nodes: &BTreeMap<NodeKey, Node>) -> Vec<(NodeRecordKey, Vec<u8>)> {
    let entries = nodes
        .iter()
        .map(|(node_key, node)| (node_record_key(node_key), node_id(node_key), node))
        .collect();
    records(entries, |node, out| {
        borsh::to_writer(out, node).expect("writing to a Vec cannot fail")
    })
}

/// The records for one version's leaves: the values it wrote (deletions leave
/// no leaf and need no entry) and a [`StoredValue::Moved`] for every other new leaf.
pub(crate) fn encode_values(
    version: Version,
    nodes: &BTreeMap<NodeKey, Node>,
    written: &BTreeMap<(Version, KeyHash), Option<OwnedValue>>,
) -> Vec<(ValueRecordKey, Vec<u8>)> {
    value_records(nodes.values().filter_map(|node| match node {
        Node::Leaf(leaf) => {
            let key = leaf.key_hash();
            Some((version, key, leaf_value(written, version, key)))
        }
        _ => None,
    }))
}

/// The value records of leaves given with their values, each entry
/// [`StoredValue::Written`] (a pruned store keeps no older versions for a
/// `Moved` entry to point to).
pub(crate) fn encode_written<'v>(
    leaves: impl IntoIterator<Item = (Version, KeyHash, &'v [u8])>,
) -> Vec<(ValueRecordKey, Vec<u8>)> {
    value_records(
        leaves
            .into_iter()
            .map(|(version, key, value)| (version, key, StoredValue::Written(value))),
    )
}

fn value_records<'v>(
    entries: impl Iterator<Item = (Version, KeyHash, StoredValue<'v>)>,
) -> Vec<(ValueRecordKey, Vec<u8>)> {
    let entries = entries
        .map(|(version, key, value)| (value_record_key(version, key), key.0, value))
        .collect();
    records(entries, write_value)
}

/// Groups `(record key, id, entry)` triples by record key and lays out each
/// record, entries in id order. Sorting one flat list costs a fraction of
/// building a map per record with an allocated id per entry.
fn records<K: Ord + Copy, I: AsRef<[u8]>, E>(
    mut entries: Vec<(K, I, E)>,
    write_entry: impl Fn(&E, &mut Vec<u8>),
) -> Vec<(K, Vec<u8>)> {
    entries.sort_unstable_by(|a, b| (a.0, a.1.as_ref()).cmp(&(b.0, b.1.as_ref())));
    entries
        .chunk_by(|a, b| a.0 == b.0)
        .map(|group| {
            let entries = group.iter().map(|(_, id, entry)| (id.as_ref(), entry));
            (group[0].0, encode(entries, &write_entry))
        })
        .collect()
}

fn write_value(value: &StoredValue, out: &mut Vec<u8>) {
    match value {
        StoredValue::Written(value) => {
            out.push(WRITTEN);
            out.extend_from_slice(value);
        }
        StoredValue::Moved => out.push(MOVED),
    }
}

/// What `version`'s leaf for `key` holds, given the values that version wrote.
pub(crate) fn leaf_value(
    written: &BTreeMap<(Version, KeyHash), Option<OwnedValue>>,
    version: Version,
    key: KeyHash,
) -> StoredValue<'_> {
    match written.get(&(version, key)) {
        Some(Some(value)) => StoredValue::Written(value),
        _ => StoredValue::Moved,
    }
}

/// The encoded node with `id` in a node record.
pub(crate) fn find_node<'r>(record: &'r [u8], id: &[u8]) -> Result<Option<&'r [u8]>, String> {
    find(record, id)
}

/// What a value record holds for `key`.
pub(crate) fn find_value(record: &[u8], key: KeyHash) -> Result<Option<StoredValue<'_>>, String> {
    match find(record, &key.0)? {
        None => Ok(None),
        Some([WRITTEN, value @ ..]) => Ok(Some(StoredValue::Written(value))),
        Some([MOVED]) => Ok(Some(StoredValue::Moved)),
        Some(other) => Err(format!("unknown value entry starting {:?}", other.first())),
    }
}

/// Lays out a record from its entries in id order: `write_entry` writes each
/// entry straight into it, so an entry is never encoded on its own and copied in.
fn encode<'e, E: 'e>(
    entries: impl ExactSizeIterator<Item = (&'e [u8], &'e E)>,
    write_entry: impl Fn(&E, &mut Vec<u8>),
) -> Vec<u8> {
    // Ids are at most NODE_ID_MAX bytes; entries and records are far below
    // 4 GiB (values are bounded by the transaction size limit).
    let count = entries.len();
    let table = 4 + 4 * count;
    let mut record = vec![0; table]; // the count, then offsets filled in below
    record[..4].copy_from_slice(&(count as u32).to_be_bytes());
    let mut previous: Option<&[u8]> = None;
    for (i, (id, entry)) in entries.enumerate() {
        debug_assert!(previous < Some(id), "ids in strictly increasing order");
        previous = Some(id);
        let offset = (record.len() - table) as u32;
        record[4 + 4 * i..8 + 4 * i].copy_from_slice(&offset.to_be_bytes());
        record.extend_from_slice(&(id.len() as u16).to_be_bytes());
        record.extend_from_slice(id);
        let length_at = record.len();
        record.extend_from_slice(&[0; 4]);
        write_entry(entry, &mut record);
        let length = (record.len() - length_at - 4) as u32;
        record[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }
    record
}

fn find<'r>(record: &'r [u8], id: &[u8]) -> Result<Option<&'r [u8]>, String> {
    let (count, rest) = take_u32(record)?;
    let (offsets, body) = rest
        .split_at_checked(4 * count as usize)
        .ok_or("truncated offset table")?;
    let entry_at = |i: usize| -> Result<(&'r [u8], &'r [u8]), String> {
        let (offset, _) = take_u32(&offsets[4 * i..])?;
        let entry = body.get(offset as usize..).ok_or("offset past the end")?;
        let (id, rest) = take(entry, 2)?;
        let (entry, _) = take(rest, 4)?;
        Ok((id, entry))
    };
    let (mut low, mut high) = (0, count as usize);
    while low < high {
        let middle = low + (high - low) / 2;
        let (entry_id, entry) = entry_at(middle)?;
        match entry_id.cmp(id) {
            std::cmp::Ordering::Less => low = middle + 1,
            std::cmp::Ordering::Greater => high = middle,
            std::cmp::Ordering::Equal => return Ok(Some(entry)),
        }
    }
    Ok(None)
}

/// Splits a `width`-byte big-endian length and that many bytes off the front of `bytes`.
fn take(bytes: &[u8], width: usize) -> Result<(&[u8], &[u8]), String> {
    let (len, rest) = bytes.split_at_checked(width).ok_or("truncated length")?;
    let len = len.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
    Ok(rest.split_at_checked(len).ok_or("truncated entry")?)
}

fn take_u32(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    let (n, rest) = bytes.split_first_chunk::<4>().ok_or("truncated length")?;
    Ok((u32::from_be_bytes(*n), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jmt::ValueHash;
    use jmt::storage::LeafNode;

    fn node_key(version: u64, path: &[u8], odd: bool) -> NodeKey {
        // borsh(NibblePath) = u64 nibble count ‖ u32 byte length ‖ bytes.
        let nibbles = path.len() * 2 - usize::from(odd);
        let mut bytes = (nibbles as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&(path.len() as u32).to_le_bytes());
        let mut path = path.to_vec();
        if odd {
            *path.last_mut().unwrap() &= 0xf0;
        }
        bytes.extend_from_slice(&path);
        NodeKey::new(version, borsh::from_slice(&bytes).unwrap())
    }

    fn leaf(byte: u8) -> Node {
        Node::Leaf(LeafNode::new(KeyHash([byte; 32]), ValueHash([byte; 32])))
    }

    #[test]
    fn nodes_are_grouped_by_version_and_first_three_nibbles() {
        let top = node_key(7, &[0xab], true);
        let also_top = node_key(7, &[0xab], false);
        let under_abc = node_key(7, &[0xab, 0xcd], false);
        let also_under_abc = node_key(7, &[0xab, 0xc0], true);
        let under_abd = node_key(7, &[0xab, 0xd0], false);
        assert_eq!(node_record_key(&top)[9..], [0, 0]);
        assert_eq!(node_record_key(&also_top), node_record_key(&top));
        assert_eq!(node_record_key(&under_abc)[9..], [0x1a, 0xbc]);
        assert_eq!(
            node_record_key(&under_abc),
            node_record_key(&also_under_abc)
        );
        assert_ne!(node_record_key(&under_abc), node_record_key(&under_abd));
        let next_version = node_key(8, &[0xab, 0xcd], false);
        assert_ne!(node_record_key(&under_abc), node_record_key(&next_version));
        assert_eq!(node_record_key(&under_abc)[1..9], 7u64.to_be_bytes());
    }

    #[test]
    fn every_node_is_found_in_its_record_and_no_other() {
        let nodes: BTreeMap<NodeKey, Node> = [
            node_key(3, &[0x12], true),
            node_key(3, &[0x12, 0x30], true),
            node_key(3, &[0x12, 0x34], false),
            node_key(3, &[0x12, 0x34, 0x50], true),
            node_key(3, &[0x99, 0x00], false),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k, leaf(i as u8)))
        .collect();
        let records = encode_nodes(&nodes);
        assert_eq!(records.len(), 3);
        for (key, node) in &nodes {
            for (record_key, record) in &records {
                let found = find_node(record, &node_id(key)).unwrap();
                if *record_key == node_record_key(key) {
                    let found: Node = borsh::from_slice(found.expect("in its record")).unwrap();
                    assert_eq!(&found, node);
                } else {
                    assert_eq!(found, None);
                }
            }
        }
    }

    #[test]
    fn written_leaves_keep_their_value_and_moved_leaves_say_so() {
        let written = KeyHash([0x11; 32]);
        let moved = KeyHash([0x12; 32]);
        let nodes = BTreeMap::from([
            (node_key(5, &[0x11], false), leaf(0x11)),
            (node_key(5, &[0x12], false), leaf(0x12)),
            (node_key(5, &[0x13], true), Node::Null),
        ]);
        let values = BTreeMap::from([
            ((5, written), Some(b"new".to_vec())),
            ((5, KeyHash([0x14; 32])), None),
        ]);
        let records: BTreeMap<_, _> = encode_values(5, &nodes, &values).into_iter().collect();
        assert_eq!(
            records.len(),
            2,
            "one record per leaf's first key-hash byte"
        );
        let value = |key: KeyHash| {
            let record = &records[&value_record_key(5, key)];
            find_value(record, key).unwrap()
        };
        assert_eq!(value(written), Some(StoredValue::Written(b"new")));
        assert_eq!(value(moved), Some(StoredValue::Moved));
        let deleted = value_record_key(5, KeyHash([0x14; 32]));
        assert!(
            !records.contains_key(&deleted),
            "a deletion leaves no entry"
        );
    }

    /// A record of entries given as bytes, by id.
    fn encode_bytes(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
        encode(entries.iter().map(|(id, e)| (&id[..], e)), |entry, out| {
            out.extend_from_slice(entry)
        })
    }

    /// The record layout as the module's documentation states it, built the
    /// plain way: a map per record, ids and entries encoded on their own.
    fn layout_as_documented(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
        let mut offsets = Vec::new();
        let mut body = Vec::new();
        for (id, entry) in entries {
            offsets.extend_from_slice(&(body.len() as u32).to_be_bytes());
            body.extend_from_slice(&(id.len() as u16).to_be_bytes());
            body.extend_from_slice(id);
            body.extend_from_slice(&(entry.len() as u32).to_be_bytes());
            body.extend_from_slice(entry);
        }
        let mut record = (entries.len() as u32).to_be_bytes().to_vec();
        record.extend(offsets);
        record.extend(body);
        record
    }

    #[test]
    fn a_malformed_record_is_an_error_not_a_panic() {
        let key = node_key(1, &[0x12, 0x34], false);
        let nodes = BTreeMap::from([(key, leaf(1))]);
        let (_, record) = encode_nodes(&nodes).into_iter().next().unwrap();
        let other = node_id(&node_key(1, &[0x12, 0x35], false));
        for cut in 1..record.len() {
            assert!(find_node(&record[..cut], &other).is_err(), "cut at {cut}");
        }
        assert!(find_node(&record, &other).unwrap().is_none());

        let unknown = encode_bytes(&BTreeMap::from([(vec![7; 32], vec![9])]));
        assert!(find_value(&unknown, KeyHash([7; 32])).is_err());
    }

    proptest::proptest! {
        /// Whatever bytes a record holds (a damaged disk), a lookup answers or
        /// errs, and never panics.
        #[test]
        fn lookups_in_arbitrary_bytes_do_not_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            key in proptest::prelude::any::<[u8; 32]>(),
        ) {
            let _ = find_value(&bytes, KeyHash(key));
            let _ = find_node(&bytes, &key[..12]);
        }

        /// Records are written once and read for the life of a store: the
        /// layout must stay the documented one, byte for byte.
        #[test]
        fn node_records_keep_the_documented_layout(
            paths in proptest::collection::vec(
                (1u64..4, proptest::collection::vec(proptest::prelude::any::<u8>(), 1..4), proptest::prelude::any::<bool>()),
                0..60,
            ),
        ) {
            let nodes: BTreeMap<NodeKey, Node> = paths
                .iter()
                .enumerate()
                .map(|(i, (version, path, odd))| (node_key(*version, path, *odd), leaf(i as u8)))
                .collect();
            let mut expected: BTreeMap<NodeRecordKey, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
            for (key, node) in &nodes {
                expected
                    .entry(node_record_key(key))
                    .or_default()
                    .insert(borsh::to_vec(key.nibble_path()).unwrap(), borsh::to_vec(node).unwrap());
            }
            let expected: Vec<_> = expected
                .into_iter()
                .map(|(key, entries)| (key, layout_as_documented(&entries)))
                .collect();
            proptest::prop_assert_eq!(encode_nodes(&nodes), expected);
        }
    }

    #[test]
    fn lookups_find_every_entry_of_a_many_entry_record() {
        let entries: BTreeMap<Vec<u8>, Vec<u8>> = (0u8..=200)
            .map(|i| (vec![i; 1 + i as usize % 7], vec![i]))
            .collect();
        let record = encode_bytes(&entries);
        for (id, entry) in &entries {
            assert_eq!(find(&record, id).unwrap(), Some(entry.as_slice()));
        }
        assert_eq!(find(&record, &[201]).unwrap(), None);
        assert_eq!(find(&record, &[]).unwrap(), None);
    }
}
