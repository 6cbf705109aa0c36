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

/// The node's id within its record: its borsh-encoded nibble path, at most
/// 44 bytes (nibble count u64 ‖ byte count u32 ‖ 32 bytes). Sized here:
/// borsh's `to_vec` reserves a kilobyte, and a busy block holds tens of
/// thousands of ids at once while its records are built.
pub(crate) fn node_id(node_key: &NodeKey) -> Vec<u8> {
    let mut id = Vec::with_capacity(44);
    borsh::to_writer(&mut id, node_key.nibble_path()).expect("writing to a Vec cannot fail");
    id
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

/// The entries of a record being built: what each id's entry is made from, by id.
type Entries<E> = BTreeMap<Vec<u8>, E>;

/// The records for one version's new nodes, by key.
pub(crate) fn encode_nodes(nodes: &BTreeMap<NodeKey, Node>) -> BTreeMap<NodeRecordKey, Vec<u8>> {
    let mut records: BTreeMap<NodeRecordKey, Entries<&Node>> = BTreeMap::new();
    for (node_key, node) in nodes {
        records
            .entry(node_record_key(node_key))
            .or_default()
            .insert(node_id(node_key), node);
    }
    records
        .into_iter()
        .map(|(k, entries)| {
            let record = encode(&entries, |node, out| {
                borsh::to_writer(out, node).expect("writing to a Vec cannot fail")
            });
            (k, record)
        })
        .collect()
}

/// The records for one version's leaves: the values it wrote (deletions leave
/// no leaf and need no entry) and a [`StoredValue::Moved`] for every other new leaf.
pub(crate) fn encode_values(
    version: Version,
    nodes: &BTreeMap<NodeKey, Node>,
    written: &BTreeMap<(Version, KeyHash), Option<OwnedValue>>,
) -> BTreeMap<ValueRecordKey, Vec<u8>> {
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
) -> BTreeMap<ValueRecordKey, Vec<u8>> {
    value_records(
        leaves
            .into_iter()
            .map(|(version, key, value)| (version, key, StoredValue::Written(value))),
    )
}

fn value_records<'v>(
    entries: impl Iterator<Item = (Version, KeyHash, StoredValue<'v>)>,
) -> BTreeMap<ValueRecordKey, Vec<u8>> {
    let mut records: BTreeMap<ValueRecordKey, Entries<StoredValue>> = BTreeMap::new();
    for (version, key, value) in entries {
        records
            .entry(value_record_key(version, key))
            .or_default()
            .insert(key.0.to_vec(), value);
    }
    records
        .into_iter()
        .map(|(k, entries)| (k, encode(&entries, write_value)))
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

/// Lays out a record: `write_entry` writes each entry straight into it, so an
/// entry is never encoded on its own and copied in.
fn encode<E>(entries: &Entries<E>, write_entry: impl Fn(&E, &mut Vec<u8>)) -> Vec<u8> {
    // Ids are at most 44 bytes (a 64-nibble path); entries and records are far
    // below 4 GiB (values are bounded by the transaction size limit).
    let table = 4 + 4 * entries.len();
    let mut record = vec![0; table]; // the count, then offsets filled in below
    record[..4].copy_from_slice(&(entries.len() as u32).to_be_bytes());
    for (i, (id, entry)) in entries.iter().enumerate() {
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
        let records = encode_values(5, &nodes, &values);
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

    /// A record of entries given as bytes.
    fn encode_bytes(entries: &Entries<Vec<u8>>) -> Vec<u8> {
        encode(entries, |entry, out| out.extend_from_slice(entry))
    }

    #[test]
    fn a_malformed_record_is_an_error_not_a_panic() {
        let key = node_key(1, &[0x12, 0x34], false);
        let nodes = BTreeMap::from([(key, leaf(1))]);
        let record = encode_nodes(&nodes).into_values().next().unwrap();
        let other = node_id(&node_key(1, &[0x12, 0x35], false));
        for cut in 1..record.len() {
            assert!(find_node(&record[..cut], &other).is_err(), "cut at {cut}");
        }
        assert!(find_node(&record, &other).unwrap().is_none());

        let unknown = encode_bytes(&Entries::from([(vec![7; 32], vec![9])]));
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
    }

    #[test]
    fn lookups_find_every_entry_of_a_many_entry_record() {
        let entries: Entries<Vec<u8>> = (0u8..=200)
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
