//! The tree log: the state tree's records (node, value and stale-node
//! records, see `state::tree_records`) appended to a file of their own,
//! with only a pointer to each in sled.
//!
//! Tree records are most of a block's bytes (a few KB per transaction) and
//! never change once written. In sled each was written about three times
//! (into its log, then again as leaves split and are consolidated); here
//! once. A pointer is `offset (u64 BE) ‖ length (u32 BE) ‖ crc32 of the
//! record (u32 BE)`; the pointers go into the block's batch, so they are all
//! or nothing with the rest of the block (through the redo file).
//!
//! Order: a block's records are appended and synced before its redo file is
//! written, so a durable pointer always points at durable bytes. A stop in
//! between leaves bytes that no pointer reaches; appends go on after them
//! (they are wasted, never read). A prune's copy writes a new log with only
//! what it keeps.

use super::redo::{io, sync_dir};
use super::{Records, StorageError, corrupt};
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

    /// Appends `records`' values and syncs them; returns the same keys with
    /// pointers to the values, for sled.
    pub(crate) fn append<'r>(
        &self,
        records: impl IntoIterator<Item = (&'r [u8], &'r [u8])>,
    ) -> Result<Records, StorageError> {
        let mut end = super::lock(&self.end);
        let mut pointers = Records::new();
        let mut chunk = Vec::with_capacity(WRITE_CHUNK);
        let mut chunk_start = *end;
        for (key, value) in records {
            let offset = chunk_start + chunk.len() as u64;
            pointers.insert(key.to_vec(), Some(pointer(offset, value)[..].into()));
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

    /// The record `pointer` (stored at sled key `key`) points at, checked
    /// against its checksum.
    pub(crate) fn read(&self, key: &[u8], pointer: &[u8]) -> Result<Vec<u8>, StorageError> {
        let damaged = |what: &str| {
            corrupt(format!(
                "state tree record {} {what}",
                hex::encode(key.get(..10).unwrap_or(key))
            ))
        };
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

fn pointer(offset: u64, value: &[u8]) -> [u8; POINTER_LEN] {
    let len = u32::try_from(value.len()).expect("a tree record is under 4 GiB");
    let mut out = [0; POINTER_LEN];
    out[..8].copy_from_slice(&offset.to_be_bytes());
    out[8..12].copy_from_slice(&len.to_be_bytes());
    out[12..].copy_from_slice(&crc32fast::hash(value).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(log: &TreeLog, pointers: &Records) -> Vec<(Vec<u8>, Vec<u8>)> {
        pointers
            .iter()
            .map(|(k, p)| (k.clone(), log.read(k, p.as_ref().unwrap()).unwrap()))
            .collect()
    }

    #[test]
    fn appended_records_read_back_across_chunks_reopens_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than a write chunk, so the append writes more than once.
        let first: Vec<(Vec<u8>, Vec<u8>)> = (0u8..40)
            .map(|i| (vec![7, i], vec![i; 40_000 + usize::from(i)]))
            .collect();
        let log = TreeLog::open(dir.path(), true).unwrap();
        let pointers = log
            .append(first.iter().map(|(k, v)| (&k[..], &v[..])))
            .unwrap();
        assert_eq!(read_all(&log, &pointers), first);
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
            (vec![8, 0], b"after the tail".to_vec()),
            (vec![8, 1], vec![]),
        ];
        let later = log
            .append(second.iter().map(|(k, v)| (&k[..], &v[..])))
            .unwrap();
        assert_eq!(read_all(&log, &pointers), first);
        assert_eq!(read_all(&log, &later), second);
    }

    #[test]
    fn a_damaged_record_or_pointer_is_refused_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let log = TreeLog::open(dir.path(), true).unwrap();
        let pointers = log.append([(&b"k"[..], &b"a tree record"[..])]).unwrap();
        let pointer = pointers[&b"k".to_vec()].clone().unwrap().to_vec();
        // A flipped byte in the file.
        log.file.write_all_at(b"A", 0).unwrap();
        let mut past_end = pointer.clone();
        past_end[..8].copy_from_slice(&1000u64.to_be_bytes());
        for (bad, says) in [
            (&pointer[..], "fails its checksum"),
            (&pointer[..15], "malformed pointer"),
            (&past_end[..], "past the tree log's end"),
        ] {
            let err = log.read(b"k", bad).unwrap_err();
            assert!(
                matches!(&err, StorageError::Corrupt { what } if what.contains(says)),
                "{err}"
            );
        }
    }
}
