//! The chain export format: a chain's blocks, each with the certificate
//! that committed it, in one file. `trellis-node export-chain` writes one
//! from a stopped node's store, `trellis export` from a running node's API;
//! `trellis-node import-chain` reads it, executing and checking every block
//! again (nothing in the file is trusted).
//!
//! Layout: [`MAGIC`], then framed records, each `length (u32 BE) ‖ bytes ‖
//! blake3(bytes)`: first the [`ExportHeader`], then for every height from 1
//! to its `last` the canonical encoding of the pair `(Block,
//! QuorumCertificate)`. The checksum names a damaged record before its bytes
//! are decoded; the certificates are what make the blocks trustworthy.

use crate::{Block, Hash, QuorumCertificate, codec};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The first bytes of every export.
pub const MAGIC: &[u8; 14] = b"trellis-chain\n";

/// The export format this build writes and reads.
pub const FORMAT: u32 = 1;

const CHECKSUM_LEN: usize = 32;

/// What an export is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: u32,
    pub chain_id: String,
    /// The genesis's hash (`Genesis::hash`, block 0's parent).
    pub genesis: Hash,
    /// The last height in the export; every height from 1 to it follows.
    pub last: u64,
}

/// Writes an export to a file: the header, then each height's block in
/// turn. The file is written as `<path>.partial` and renamed to `path` once
/// whole and synced ([`ExportWriter::finish`]); a writer dropped before
/// that removes it, so `path` never holds part of an export.
pub struct ExportWriter {
    out: BufWriter<File>,
    path: PathBuf,
    partial: PathBuf,
    next: u64,
    last: u64,
    bytes: u64,
    finished: bool,
}

impl ExportWriter {
    /// Starts an export of the chain `header` names to `path`, which must
    /// not exist (`AlreadyExists`). The partial file of an earlier export to
    /// `path` that never finished is replaced.
    pub fn create(path: &Path, header: &ExportHeader) -> std::io::Result<ExportWriter> {
        if path.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists: an export is never written over a file",
                    path.display()
                ),
            ));
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let mut writer = ExportWriter {
            out: BufWriter::with_capacity(1 << 20, File::create(&partial)?),
            path: path.to_path_buf(),
            partial,
            next: 1,
            last: header.last,
            bytes: 0,
            finished: false,
        };
        writer.out.write_all(MAGIC)?;
        writer.bytes = MAGIC.len() as u64 + write_record(&mut writer.out, &codec::encode(header))?;
        Ok(writer)
    }

    /// Writes the next height's block with the certificate that committed it.
    pub fn block(&mut self, block: &Block, commit: &QuorumCertificate) -> std::io::Result<()> {
        let height = block.header.height;
        if height != self.next || height > self.last {
            return Err(std::io::Error::other(format!(
                "block {height} where the export's next is {} of {}",
                self.next, self.last
            )));
        }
        self.bytes += write_record(&mut self.out, &codec::encode_sized(&(block, commit)))?;
        self.next += 1;
        Ok(())
    }

    /// Once every height the header names is written: syncs the file and
    /// gives it its name; the bytes written.
    pub fn finish(mut self) -> std::io::Result<u64> {
        if self.next != self.last + 1 {
            return Err(std::io::Error::other(format!(
                "the export stops at height {} of {}",
                self.next - 1,
                self.last
            )));
        }
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        std::fs::rename(&self.partial, &self.path)?;
        self.finished = true;
        Ok(self.bytes)
    }
}

impl Drop for ExportWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

fn write_record(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<u64> {
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)?;
    out.write_all(blake3::hash(bytes).as_bytes())?;
    Ok(4 + bytes.len() as u64 + CHECKSUM_LEN as u64)
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not a Trellis chain export")]
    NotAnExport,
    #[error("export format {0}; this build reads format {FORMAT}")]
    Format(u32),
    #[error("the file ends inside it")]
    Cut,
    #[error("it claims {0} bytes, more than a block of this chain may have")]
    TooLarge(usize),
    #[error("checksum mismatch")]
    Checksum,
    #[error(transparent)]
    Decode(#[from] codec::CodecError),
}

/// Reads an export record by record.
pub struct ExportReader<R: Read> {
    input: R,
    /// The largest record a chain of this genesis can hold.
    max_record: usize,
}

impl<R: Read> ExportReader<R> {
    /// Reads the magic and the header; a record larger than `max_record` is
    /// refused before it is read.
    pub fn open(input: R, max_record: usize) -> Result<(Self, ExportHeader), RecordError> {
        let mut reader = ExportReader { input, max_record };
        let mut magic = [0; MAGIC.len()];
        if reader.fill(&mut magic)? < MAGIC.len() || &magic != MAGIC {
            return Err(RecordError::NotAnExport);
        }
        let bytes = reader.record()?.ok_or(RecordError::NotAnExport)?;
        // The format first, from the header's leading field, so that another
        // format is named as such rather than as damage.
        let (format, _) = codec::decode_prefix::<u32>(&bytes)?;
        if format != FORMAT {
            return Err(RecordError::Format(format));
        }
        Ok((reader, codec::decode(&bytes)?))
    }

    /// The next height's block and certificate; `None` at the end of the file.
    pub fn block(&mut self) -> Result<Option<(Block, QuorumCertificate)>, RecordError> {
        match self.record()? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The next record's bytes, checked against its checksum; `None` at the
    /// end of the file.
    fn record(&mut self) -> Result<Option<Vec<u8>>, RecordError> {
        let mut len = [0; 4];
        match self.fill(&mut len)? {
            0 => return Ok(None),
            4 => {}
            _ => return Err(RecordError::Cut),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_record {
            return Err(RecordError::TooLarge(len));
        }
        let mut bytes = vec![0; len + CHECKSUM_LEN];
        if self.fill(&mut bytes)? < bytes.len() {
            return Err(RecordError::Cut);
        }
        let checksum = bytes.split_off(len);
        if blake3::hash(&bytes).as_bytes() != checksum.as_slice() {
            return Err(RecordError::Checksum);
        }
        Ok(Some(bytes))
    }

    /// Reads into `buf` until it is full or the input ends; how much it read.
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(last: u64) -> ExportHeader {
        ExportHeader {
            format: FORMAT,
            chain_id: "test".into(),
            genesis: Hash([9; 32]),
            last,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_export_appears_under_its_name_only_whole_and_never_over_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.export");
        // A file beside it that an extension-swapping temporary name would hit.
        std::fs::write(dir.path().join("chain.tmp"), b"someone else's").unwrap();

        // Not every height written: nothing is left.
        let unfinished = ExportWriter::create(&path, &header(1)).unwrap();
        assert_eq!(names(dir.path()), ["chain.export.partial", "chain.tmp"]);
        let err = unfinished.finish().unwrap_err();
        assert!(err.to_string().contains("stops at height 0 of 1"), "{err}");
        assert_eq!(names(dir.path()), ["chain.tmp"]);
        drop(ExportWriter::create(&path, &header(1)).unwrap());
        assert_eq!(names(dir.path()), ["chain.tmp"]);

        // Whole: renamed, and read back.
        ExportWriter::create(&path, &header(0))
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(names(dir.path()), ["chain.export", "chain.tmp"]);
        let (mut reader, read) = ExportReader::open(File::open(&path).unwrap(), 1 << 20).unwrap();
        assert_eq!(read, header(0));
        assert!(reader.block().unwrap().is_none());
        assert_eq!(
            std::fs::read(dir.path().join("chain.tmp")).unwrap(),
            b"someone else's"
        );

        let err = ExportWriter::create(&path, &header(0)).err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    }
}
