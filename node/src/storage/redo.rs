//! The redo file: a block's whole batch, written and synced as one file
//! before the batch is applied to sled key by key.
//!
//! sled's `apply_batch` is atomic, but it holds a process-wide write lock for
//! the whole batch (up to ~0.3 s for a busy block), and every sled read waits
//! on that lock: the next block's execution stalled behind the previous
//! block's write. Key-by-key writes take that lock only shared, so readers go
//! on; the redo file makes them all-or-nothing again. Once it is synced the
//! block is durable: [`recover`] applies it again on open, which is harmless
//! when it was applied already, because it is always the latest block's (it
//! is replaced only after sled has flushed the block it holds).
//!
//! Layout: `blake3(body) ‖ body`, body = `height (u64 BE)` then per record
//! `key length (u32 BE) ‖ key ‖ 0` (remove) or `… ‖ 1 ‖ value length (u32 BE) ‖ value`.
//! It is written as `trellis-redo.tmp`, synced and renamed, so a `trellis-redo`
//! file is always whole.

use super::{StorageError, corrupt};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The redo file of the store in `dir` (sled's own directory).
pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join("trellis-redo")
}

pub(super) fn io(e: std::io::Error) -> StorageError {
    StorageError::Io(sled::Error::Io(e))
}

/// Writes and syncs the redo file of block `height`: from then on the block
/// survives a crash.
pub(super) fn write<'a>(
    path: &Path,
    height: u64,
    records: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Result<(), StorageError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io)?;
    write_to(&mut file, height, records).map_err(io)?;
    file.sync_data().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path)
}

/// Streams the redo file's content into `file`: the body goes out as it is
/// encoded, hashed on the way (in the buffer's large chunks, which blake3
/// hashes fastest), and the checksum is written in front last. A block's
/// batch is tens of megabytes; building it in memory first cost two copies
/// and as many freshly faulted pages.
fn write_to<'a>(
    file: &mut (impl Write + Seek),
    height: u64,
    records: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> std::io::Result<()> {
    file.write_all(&[0; 32])?;
    let hashed = Hashed {
        out: &mut *file,
        hasher: blake3::Hasher::new(),
    };
    let mut body = BufWriter::with_capacity(1 << 20, hashed);
    body.write_all(&height.to_be_bytes())?;
    for (key, value) in records {
        put_bytes(&mut body, key)?;
        match value {
            None => body.write_all(&[0])?,
            Some(value) => {
                body.write_all(&[1])?;
                put_bytes(&mut body, value)?;
            }
        }
    }
    let checksum = body.into_inner()?.hasher.finalize();
    file.seek(SeekFrom::Start(0))?;
    file.write_all(checksum.as_bytes())
}

/// A writer that hashes what it passes on.
struct Hashed<W> {
    out: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.out.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Makes a rename or removal in the file's directory durable.
pub(super) fn sync_dir(path: &Path) -> Result<(), StorageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Removes the redo file once sled has flushed its block.
pub(super) fn clear(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

fn put_bytes(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).expect("sled keys and values are under 4 GiB");
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

/// A decoded redo file: the block's height and its batch.
pub(super) struct Redo<'a> {
    pub height: u64,
    pub records: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

pub(super) fn decode(bytes: &[u8]) -> Result<Redo<'_>, StorageError> {
    let damaged = |what: &str| corrupt(format!("the redo file {what}"));
    let (checksum, body) = bytes
        .split_at_checked(32)
        .ok_or_else(|| damaged("is truncated"))?;
    if blake3::hash(body).as_bytes() != checksum {
        return Err(damaged("fails its checksum"));
    }
    let mut rest = body;
    let height = u64::from_be_bytes(take::<8>(&mut rest).ok_or_else(|| damaged("has no height"))?);
    let mut records = Vec::new();
    while !rest.is_empty() {
        let key = take_bytes(&mut rest).ok_or_else(|| damaged("has a truncated key"))?;
        let value = match take::<1>(&mut rest).ok_or_else(|| damaged("has no value tag"))? {
            [0] => None,
            [1] => Some(take_bytes(&mut rest).ok_or_else(|| damaged("has a truncated value"))?),
            _ => return Err(damaged("has an unknown value tag")),
        };
        records.push((key, value));
    }
    Ok(Redo { height, records })
}

fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(*head)
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(take::<4>(rest)?) as usize;
    let (bytes, tail) = rest.split_at_checked(len)?;
    *rest = tail;
    Some(bytes)
}

/// Applies records key by key (see the module note for why not as one batch).
pub(super) fn apply<'a>(
    db: &sled::Db,
    records: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Result<(), StorageError> {
    for (key, value) in records {
        match value {
            Some(value) => db.insert(key, value)?,
            None => db.remove(key)?,
        };
    }
    Ok(())
}

/// Finishes the write a stop interrupted, if any: applies the redo file at
/// `path` to `db`, flushes, and removes it. Returns the height of the block it
/// finished. A leftover `.tmp` file was never synced, so its block was not
/// durable yet: it is dropped.
pub(super) fn recover(db: &sled::Db, path: &Path) -> Result<Option<u64>, StorageError> {
    clear(&path.with_extension("tmp"))?;
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let redo = decode(&bytes)?;
    apply(db, redo.records)?;
    db.flush()?;
    clear(path)?;
    Ok(Some(redo.height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Records;

    /// The redo file's content for `records` at height 41.
    fn encode(records: &Records) -> Vec<u8> {
        let mut file = std::io::Cursor::new(Vec::new());
        write_to(&mut file, 41, crate::storage::record_slices(records)).unwrap();
        file.into_inner()
    }

    fn records() -> Records {
        let mut records = Records::new();
        records.insert(b"a".to_vec(), Some(b"1".as_slice().into()));
        records.insert(b"b".to_vec(), None);
        records.insert(Vec::new(), Some(Vec::new().into()));
        records.insert(vec![7; 300], Some(vec![9; 70_000].into()));
        // Larger than the write buffer, so it bypasses it.
        records.insert(vec![8; 3], Some(vec![6; 3 << 20].into()));
        records
    }

    #[test]
    fn a_redo_record_decodes_to_the_batch_it_encodes() {
        let records = records();
        let bytes = encode(&records);
        let redo = decode(&bytes).unwrap();
        assert_eq!(redo.height, 41);
        let expected: Vec<(&[u8], Option<&[u8]>)> = records
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        assert_eq!(redo.records, expected);
    }

    #[test]
    fn a_damaged_redo_record_is_refused_as_corrupt() {
        let bytes = encode(&records());
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        for damaged in [&bytes[..20], &bytes[..bytes.len() - 1], &flipped[..]] {
            let err = decode(damaged).err().expect("refused");
            assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        }
        // A well-checksummed body that does not parse is refused too.
        let mut body = 5u64.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 1, b'k', 2]);
        let mut bad_tag = blake3::hash(&body).as_bytes().to_vec();
        bad_tag.extend_from_slice(&body);
        let err = decode(&bad_tag).err().expect("refused");
        assert!(err.to_string().contains("unknown value tag"), "{err}");
    }
}
