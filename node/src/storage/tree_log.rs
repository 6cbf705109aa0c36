//! The tree log: the state tree's records (node, value and stale-node
//! records, see `state::tree_records`) appended to a file of their own,
//! with only pointers to them in sled.
//!
//! Tree records are most of a block's bytes (a few KB per transaction) and
//! never change once written. In sled each was written about three times
//! (into its log, then again as leaves split and are consolidated); here
//! once. A pointer is `offset (u64 BE) ‖ length (u32 BE) ‖ crc32 of the
//! record (u32 BE)`; the pointers go into the block's batch, so they are all
//! or nothing with the rest of the block (through the redo file).
//!
//! Pointers are kept in tables, since sled's cost is per record and a busy
//! block writes thousands of tree records: a tree record's key without its
//! last byte is the sled key of its table, and that byte its id in it (see
//! [`table_of`]). So one version's node records with the same first path
//! nibble share a table, and all its value records one: a block adds at
//! most 19 records to sled for its tree (17 node tables, a value table, its
//! stale-node record's pointer) instead of up to 4,354. A table is `id (u8)
//! ‖ pointer` entries sorted by id, at most 256 of them (4.3 KB).
//!
//! Order: a block's records are appended and synced before its redo file is
//! written, so a durable pointer always points at durable bytes. A stop in
//! between leaves bytes that no pointer reaches; appends go on after them
//! (they are wasted, never read). A prune's copy writes a new log with only
//! what it keeps.

use super::redo::{io, sync_dir};
use super::{Records, StorageError, corrupt, prefix};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The tree log of the store in `dir` (sled's own directory).
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join("trellis-tree")
}

/// Bytes gathered before they are written out, while a block's records are appended.
const WRITE_CHUNK: usize = 1 << 20;

const POINTER_LEN: usize = 16;

type Pointer = [u8; POINTER_LEN];

/// A table's entry: `id ‖ pointer`.
const ENTRY_LEN: usize = 1 + POINTER_LEN;

pub(crate) struct TreeLog {
    file: File,
    /// Where the next record goes: the file's length. Held while appending.
    end: Mutex<u64>,
}

impl TreeLog {
    /// Opens the tree log of the store in `dir`; creates it only for a new
    /// store (`new_store`): an existing store without one has lost its state
    /// tree.
    pub(crate) fn open(dir: &Path, new_store: bool) -> Result<TreeLog, StorageError> {
        let path = path(dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(new_store)
            .truncate(false)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => corrupt(format!(
                    "the tree log {} is missing: it holds the store's state tree; restore \
                     the whole data directory from one backup",
                    path.display()
                )),
                _ => io(e),
            })?;
        let end = file.metadata().map_err(io)?.len();
        if end == 0 {
            // A new file: its name must survive a crash with its first records.
            sync_dir(&path)?;
        }
        Ok(TreeLog {
            file,
            end: Mutex::new(end),
        })
    }

    /// Appends `records`' values and syncs them; returns pointers to them,
    /// for sled.
    pub(crate) fn append<'r>(
        &self,
        records: impl IntoIterator<Item = (&'r [u8], &'r [u8])>,
    ) -> Result<Pointers, StorageError> {
        let mut end = super::lock(&self.end);
        let mut pointers = Pointers::default();
        let mut chunk = Vec::with_capacity(WRITE_CHUNK);
        let mut chunk_start = *end;
        for (key, value) in records {
            let offset = chunk_start + chunk.len() as u64;
            pointers.add(key, pointer(offset, value));
            chunk.extend_from_slice(value);
            if chunk.len() >= WRITE_CHUNK {
                self.file.write_all_at(&chunk, chunk_start).map_err(io)?;
                chunk_start += chunk.len() as u64;
                chunk.clear();
            }
        }
        self.file.write_all_at(&chunk, chunk_start).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        *end = chunk_start + chunk.len() as u64;
        Ok(pointers)
    }

    /// Tree record `key`, which `pointer` points at, checked against its
    /// checksum.
    pub(crate) fn read(&self, key: &[u8], pointer: &[u8]) -> Result<Vec<u8>, StorageError> {
        let damaged =
            |what: &str| corrupt(format!("state tree record {} {what}", hex::encode(key)));
        let pointer: &[u8; POINTER_LEN] = pointer
            .try_into()
            .map_err(|_| damaged("has a malformed pointer"))?;
        let (offset, rest) = pointer.split_at(8);
        let (len, crc) = rest.split_at(4);
        let offset = u64::from_be_bytes(offset.try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes"));
        let mut record = vec![0; len as usize];
        self.file
            .read_exact_at(&mut record, offset)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => damaged("points past the tree log's end"),
                _ => io(e),
            })?;
        if crc32fast::hash(&record).to_be_bytes() != crc {
            return Err(damaged("fails its checksum"));
        }
        Ok(record)
    }
}

fn pointer(offset: u64, value: &[u8]) -> Pointer {
    let len = u32::try_from(value.len()).expect("a tree record is under 4 GiB");
    let mut out = [0; POINTER_LEN];
    out[..8].copy_from_slice(&offset.to_be_bytes());
    out[8..12].copy_from_slice(&len.to_be_bytes());
    out[12..].copy_from_slice(&crc32fast::hash(value).to_be_bytes());
    out
}

/// Whether sled holds a table of pointers at `sled_key`, not one pointer.
fn holds_table(sled_key: &[u8]) -> bool {
    matches!(
        sled_key.first(),
        Some(&(prefix::TREE_NODE | prefix::TREE_VALUE))
    )
}

/// The sled key tree record `key`'s pointer is stored under, and its id in
/// that table; `None` for the stale-node record, whose pointer is stored
/// alone (one per version).
pub(crate) fn table_of(key: &[u8]) -> (&[u8], Option<u8>) {
    match key.split_last() {
        Some((&id, table)) if holds_table(key) => (table, Some(id)),
        _ => (key, None),
    }
}

/// Pointers to appended records, for sled: the stale-node records' ready as
/// they are, the others gathered into their tables.
#[derive(Default)]
pub(crate) struct Pointers {
    alone: Records,
    tables: BTreeMap<Vec<u8>, BTreeMap<u8, Pointer>>,
}

impl Pointers {
    fn add(&mut self, key: &[u8], pointer: Pointer) {
        match table_of(key) {
            (table, Some(id)) => {
                self.tables
                    .entry(table.to_vec())
                    .or_default()
                    .insert(id, pointer);
            }
            (key, None) => {
                self.alone.insert(key.to_vec(), Some(pointer[..].into()));
            }
        }
    }

    /// The records for sled: each table with the entries `stored` already
    /// has under its key (a prune's copy fills a table in several appends),
    /// the new ones replacing any with the same id.
    pub(crate) fn into_records(self, stored: &sled::Db) -> Result<Records, StorageError> {
        let mut records = self.alone;
        for (sled_key, mut entries) in self.tables {
            if let Some(table) = stored.get(&sled_key)? {
                for entry in table_entries(&sled_key, &table)? {
                    let pointer = entry[1..].try_into().expect("16 bytes");
                    entries.entry(entry[0]).or_insert(pointer);
                }
            }
            let mut table = Vec::with_capacity(entries.len() * ENTRY_LEN);
            for (id, pointer) in entries {
                table.push(id);
                table.extend_from_slice(&pointer);
            }
            records.insert(sled_key, Some(table.into()));
        }
        Ok(records)
    }
}

/// The entries of the table sled holds at `sled_key`, in id order.
fn table_entries<'t>(
    sled_key: &[u8],
    table: &'t [u8],
) -> Result<&'t [[u8; ENTRY_LEN]], StorageError> {
    match table.as_chunks::<ENTRY_LEN>() {
        (entries, []) => Ok(entries),
        _ => Err(corrupt(format!(
            "state tree pointer table {} is malformed",
            hex::encode(sled_key)
        ))),
    }
}

/// The pointer to tree record `key` in `stored`, what sled holds at
/// `table_of(key).0`; `None` if the table has no entry for it.
pub(crate) fn find_pointer<'s>(
    key: &[u8],
    stored: &'s [u8],
) -> Result<Option<&'s [u8]>, StorageError> {
    let (sled_key, Some(id)) = table_of(key) else {
        return Ok(Some(stored));
    };
    let entries = table_entries(sled_key, stored)?;
    Ok(entries
        .binary_search_by_key(&id, |entry| entry[0])
        .ok()
        .map(|at| &entries[at][1..]))
}

/// A tree record's key and its pointer.
type KeyAndPointer = (Vec<u8>, Vec<u8>);

/// Each tree record's key and pointer in what sled holds at `sled_key`.
pub(crate) fn pointers_in(
    sled_key: &[u8],
    stored: &[u8],
) -> Result<Vec<KeyAndPointer>, StorageError> {
    if !holds_table(sled_key) {
        return Ok(vec![(sled_key.to_vec(), stored.to_vec())]);
    }
    Ok(table_entries(sled_key, stored)?
        .iter()
        .map(|entry| ([sled_key, &entry[..1]].concat(), entry[1..].to_vec()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporary_sled() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    /// Appends `records` and puts their pointers into `db`, as a block's
    /// write does.
    fn append_and_store(log: &TreeLog, db: &sled::Db, records: &[(Vec<u8>, Vec<u8>)]) {
        let pointers = log
            .append(records.iter().map(|(k, v)| (&k[..], &v[..])))
            .unwrap();
        for (key, value) in pointers.into_records(db).unwrap() {
            db.insert(key, value.unwrap()).unwrap();
        }
    }

    /// The tree record `key`, through its pointer in `db`; `None` if the
    /// pointer is not there.
    fn read(log: &TreeLog, db: &sled::Db, key: &[u8]) -> Option<Vec<u8>> {
        let stored = db.get(table_of(key).0).unwrap()?;
        let pointer = find_pointer(key, &stored).unwrap()?;
        Some(log.read(key, pointer).unwrap())
    }

    fn read_all(log: &TreeLog, db: &sled::Db, records: &[(Vec<u8>, Vec<u8>)]) {
        for (key, value) in records {
            assert_eq!(read(log, db, key).as_ref(), Some(value), "{key:?}");
        }
    }

    fn node_key(version: u64, selector: [u8; 2]) -> Vec<u8> {
        [&[prefix::TREE_NODE][..], &version.to_be_bytes(), &selector].concat()
    }

    #[test]
    fn appended_records_read_back_across_chunks_reopens_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let db = temporary_sled();
        // Larger than a write chunk, so the append writes more than once.
        let first: Vec<(Vec<u8>, Vec<u8>)> = (0u8..40)
            .map(|i| (node_key(3, [0x10, i]), vec![i; 40_000 + usize::from(i)]))
            .collect();
        let log = TreeLog::open(dir.path(), true).unwrap();
        append_and_store(&log, &db, &first);
        read_all(&log, &db, &first);
        drop(log);
        // A stop after appending bytes no pointer reaches (an append whose
        // block never became durable): later appends go after them.
        let mut file = OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap();
        std::io::Write::write_all(&mut file, b"torn").unwrap();
        let log = TreeLog::open(dir.path(), true).unwrap();
        let second = vec![
            (node_key(4, [0, 0]), b"after the tail".to_vec()),
            (node_key(4, [0x1f, 0xff]), vec![]),
        ];
        append_and_store(&log, &db, &second);
        read_all(&log, &db, &first);
        read_all(&log, &db, &second);
    }

    #[test]
    fn a_versions_pointers_share_tables_that_later_appends_add_to() {
        let dir = tempfile::tempdir().unwrap();
        let db = temporary_sled();
        let log = TreeLog::open(dir.path(), true).unwrap();
        let stale = [&[prefix::TREE_STALE][..], &7u64.to_be_bytes()].concat();
        let values = [&[prefix::TREE_VALUE][..], &7u64.to_be_bytes(), &[0xab]].concat();
        let first = vec![
            (node_key(7, [0x11, 3]), b"node 113".to_vec()),
            (node_key(7, [0x11, 1]), b"node 111".to_vec()),
            (values.clone(), b"values ab".to_vec()),
            (stale.clone(), b"stale".to_vec()),
        ];
        let pointers = log
            .append(first.iter().map(|(k, v)| (&k[..], &v[..])))
            .unwrap();
        let records = pointers.into_records(&db).unwrap();
        // One table for the two nodes, one for the values, the stale
        // record's pointer alone.
        let sled_keys: Vec<&[u8]> = records.keys().map(|k| &k[..]).collect();
        assert_eq!(
            sled_keys,
            [&node_key(7, [0x11, 3])[..10], &values[..9], &stale[..]]
        );
        assert_eq!(records[&stale].as_ref().unwrap().len(), POINTER_LEN);
        for (key, value) in records {
            db.insert(key, value.unwrap()).unwrap();
        }
        // A later append to the same table (a prune's copy, in batches)
        // keeps what the table had.
        let second = vec![(node_key(7, [0x11, 2]), b"node 112".to_vec())];
        append_and_store(&log, &db, &second);
        read_all(&log, &db, &first);
        read_all(&log, &db, &second);
        assert_eq!(read(&log, &db, &node_key(7, [0x11, 4])), None);
        assert_eq!(read(&log, &db, &node_key(7, [0x12, 3])), None);

        let table_key = &node_key(7, [0x11, 0])[..10];
        let table = db.get(table_key).unwrap().unwrap();
        let listed: Vec<Vec<u8>> = pointers_in(table_key, &table)
            .unwrap()
            .into_iter()
            .map(|(key, pointer)| log.read(&key, &pointer).unwrap())
            .collect();
        assert_eq!(listed, [&b"node 111"[..], b"node 112", b"node 113"]);
        let stored_stale = db.get(&stale).unwrap().unwrap();
        assert_eq!(
            pointers_in(&stale, &stored_stale).unwrap(),
            [(stale.clone(), stored_stale.to_vec())]
        );

        let cut = &table[..table.len() - 1];
        for err in [
            find_pointer(&node_key(7, [0x11, 3]), cut).unwrap_err(),
            pointers_in(table_key, cut).unwrap_err(),
        ] {
            assert!(
                matches!(&err, StorageError::Corrupt { what } if what.contains("pointer table")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_damaged_record_or_pointer_is_refused_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let log = TreeLog::open(dir.path(), true).unwrap();
        let key = node_key(1, [0, 0]);
        let pointers = log.append([(&key[..], &b"a tree record"[..])]).unwrap();
        let records = pointers.into_records(&temporary_sled()).unwrap();
        let table = records[table_of(&key).0].clone().unwrap();
        let pointer = find_pointer(&key, &table).unwrap().unwrap().to_vec();
        // A flipped byte in the file.
        log.file.write_all_at(b"A", 0).unwrap();
        let mut past_end = pointer.clone();
        past_end[..8].copy_from_slice(&1000u64.to_be_bytes());
        for (bad, says) in [
            (&pointer[..], "fails its checksum"),
            (&pointer[..15], "malformed pointer"),
            (&past_end[..], "past the tree log's end"),
        ] {
            let err = log.read(&key, bad).unwrap_err();
            assert!(
                matches!(&err, StorageError::Corrupt { what } if what.contains(says)),
                "{err}"
            );
        }
    }
}
