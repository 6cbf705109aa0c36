//! Exporting a chain's certified blocks to one file and importing them into
//! a store, which executes and checks every block again.
//!
//! An export holds what block sync sends: each block with the certificate
//! that committed it, in the canonical encoding, nothing of the store's own
//! layout. So it outlives a storage layout change (the next version imports
//! what this one exported), moves a chain to a node that keeps other
//! indexes, serves as a backup that needs no sled files, and lets an auditor
//! check a whole history offline: an import trusts nothing in the file, it
//! checks each certificate against the genesis's validators and executes
//! each block, which must reach the state root its header names.
//!
//! The file's layout is [`trellis_types::archive`]'s, shared with `trellis
//! export`, which writes the same from a running node's API.

use crate::chain::{self, Chain, ChainError, InvalidBlock, SignatureChecks};
use crate::mempool::Mempool;
use crate::storage::{ChainHead, MAX_STAGED, StagedBlock, Storage, StorageError};
use crate::vm::Vm;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use trellis_genesis::Genesis;
use trellis_types::archive::{ExportHeader, ExportReader, ExportWriter, FORMAT, RecordError};
use trellis_types::{Block, Hash, QuorumCertificate};

/// Blocks whose signatures are checked together, on a thread of their own,
/// while the previous ones execute.
const SIGNATURE_BATCH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists: an export is never written over a file")]
    Exists(PathBuf),
    #[error("{0} is not a Trellis chain export")]
    NotAnExport(PathBuf),
    #[error("export format {found}; this build reads format {FORMAT}")]
    Format { found: u32 },
    #[error("the export's {what} record is damaged: {reason}")]
    Damaged { what: String, reason: RecordError },
    #[error("the export ends after height {after}; its header promises {last}")]
    Truncated { after: u64, last: u64 },
    #[error(
        "the export is of chain {found} (genesis {found_genesis}), not {expected} (genesis {expected_genesis})"
    )]
    OtherChain {
        expected: String,
        expected_genesis: Hash,
        found: String,
        found_genesis: Hash,
    },
    #[error("the record at height {expected} holds block {found}")]
    OutOfOrder { expected: u64, found: u64 },
    #[error(
        "the store holds block {stored} at height {height}, the export {exported}: they are different chains from there"
    )]
    Diverges {
        height: u64,
        stored: Hash,
        exported: Hash,
    },
    #[error("block {height} refused: {reason}")]
    Refused { height: u64, reason: InvalidBlock },
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What [`export_chain`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub header: ExportHeader,
    pub bytes: u64,
}

/// Writes every block of `storage` above genesis, with its commit
/// certificate, to a new file `out`, which appears under its name only once
/// it is whole and synced ([`ExportWriter`]). Open the store as the node does (`Storage::open`):
/// its lock then keeps a node from writing to it meanwhile.
pub fn export_chain(storage: &Storage, out: &Path) -> Result<ExportReport, ArchiveError> {
    if out.exists() {
        return Err(ArchiveError::Exists(out.to_path_buf()));
    }
    let head = storage.head().ok_or(StorageError::NotInitialised)?;
    let genesis = crate::state::StateRead::get(storage, crate::execution::keys::GENESIS)?
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(Hash)
        .ok_or_else(|| crate::storage::corrupt("the genesis hash record"))?;
    let header = ExportHeader {
        format: FORMAT,
        chain_id: storage
            .block(0)?
            .ok_or_else(|| crate::storage::corrupt("block 0 is missing"))?
            .header
            .chain_id,
        genesis,
        last: head.height,
    };
    let io = |source| ArchiveError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut writer = ExportWriter::create(out, &header).map_err(io)?;
    for height in 1..=head.height {
        let missing = || crate::storage::corrupt(format!("block {height} is missing"));
        let block = storage.block(height)?.ok_or_else(missing)?;
        let certificate = storage.commit_certificate(height)?.ok_or_else(missing)?;
        writer.block(&block, &certificate).map_err(io)?;
    }
    let bytes = writer.finish().map_err(io)?;
    Ok(ExportReport { header, bytes })
}

/// An export being read: where it is, for errors that name it.
struct Reader {
    records: ExportReader<BufReader<File>>,
    path: PathBuf,
}

impl Reader {
    fn open(path: &Path, max_record: usize) -> Result<(Reader, ExportHeader), ArchiveError> {
        let file = File::open(path).map_err(|source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (records, header) =
            ExportReader::open(BufReader::with_capacity(1 << 20, file), max_record).map_err(
                |e| match e {
                    RecordError::NotAnExport => ArchiveError::NotAnExport(path.to_path_buf()),
                    RecordError::Format(found) => ArchiveError::Format { found },
                    e => Reader::error(path, "header", e),
                },
            )?;
        let path = path.to_path_buf();
        Ok((Reader { records, path }, header))
    }

    fn error(path: &Path, what: &str, e: RecordError) -> ArchiveError {
        match e {
            RecordError::Io(source) => ArchiveError::Io {
                path: path.to_path_buf(),
                source,
            },
            reason => ArchiveError::Damaged {
                what: what.into(),
                reason,
            },
        }
    }

    /// The certified block at `height`, which must come next.
    fn block(
        &mut self,
        height: u64,
        last: u64,
    ) -> Result<(Block, QuorumCertificate), ArchiveError> {
        let what = format!("height {height}");
        let (block, certificate) = self
            .records
            .block()
            .map_err(|e| Reader::error(&self.path, &what, e))?
            .ok_or(ArchiveError::Truncated {
                after: height - 1,
                last,
            })?;
        if block.header.height != height {
            return Err(ArchiveError::OutOfOrder {
                expected: height,
                found: block.header.height,
            });
        }
        Ok((block, certificate))
    }

    /// That nothing follows height `last`.
    fn end(&mut self, last: u64) -> Result<(), ArchiveError> {
        match self.records.block() {
            Ok(None) => Ok(()),
            Ok(Some((block, _))) => Err(ArchiveError::OutOfOrder {
                expected: last + 1,
                found: block.header.height,
            }),
            Err(e) => Err(Reader::error(&self.path, "trailing", e)),
        }
    }
}

/// What [`Export::import_into`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Blocks the store held already (each found the export's own).
    pub present: u64,
    pub imported: u64,
    pub head: ChainHead,
}

/// An export opened for import: its header read and found to be of the
/// chain of the genesis given, before any store is touched.
pub struct Export {
    reader: Reader,
    header: ExportHeader,
}

impl Export {
    pub fn open(path: &Path, genesis: &Genesis) -> Result<Export, ArchiveError> {
        let max_record = genesis.params.max_block_bytes as usize + (1 << 20);
        let (reader, header) = Reader::open(path, max_record)?;
        if header.chain_id != genesis.chain_id || header.genesis != genesis.hash() {
            return Err(ArchiveError::OtherChain {
                expected: genesis.chain_id.clone(),
                expected_genesis: genesis.hash(),
                found: header.chain_id,
                found_genesis: header.genesis,
            });
        }
        Ok(Export { reader, header })
    }

    pub fn header(&self) -> &ExportHeader {
        &self.header
    }

    /// Imports the export into `storage` (initialised from `genesis` if
    /// new), executing and checking each block as block sync does: a
    /// certificate of the genesis's validators for exactly that block, then
    /// the block's own checks and the roots its execution gives. Blocks the
    /// store holds already must be the export's, and are skipped. Blocks are
    /// written in order, each whole or not at all, on a thread of their own
    /// while the next executes, so an import stopped by an error or a crash
    /// leaves the store whole at the last block written, and the same import
    /// run again carries on from there. `progress` hears each height as its
    /// block is staged.
    pub fn import_into(
        mut self,
        storage: &Storage,
        genesis: &Genesis,
        mut progress: impl FnMut(u64),
    ) -> Result<ImportReport, ArchiveError> {
        let vm = Arc::new(Vm::new());
        chain::initialise(storage, genesis, &vm)?;
        let mempool = Arc::new(Mempool::new(
            genesis.chain_id.clone(),
            genesis.params.clone(),
        ));
        let mut chain = Chain::new(storage.clone(), genesis, mempool, vm);
        let start = chain.head()?.height;
        let last = self.header.last;
        let mut present = 0;
        let mut height = 1;
        let mut writer = Writer::start()?;
        let mut unreadable = None;
        while height <= last && unreadable.is_none() {
            let mut batch = Vec::with_capacity(SIGNATURE_BATCH);
            while batch.len() < SIGNATURE_BATCH && height <= last {
                match self.reader.block(height, last) {
                    Ok((block, _)) if height <= start => {
                        check_present(storage, &block)?;
                        present += 1;
                    }
                    Ok((block, certificate)) => batch.push((Arc::new(block), certificate)),
                    // The blocks read before it are imported first.
                    Err(e) => {
                        unreadable = Some(e);
                        break;
                    }
                }
                height += 1;
            }
            let signatures = SignatureChecks::spawn(batch.iter().map(|(b, _)| b.clone()).collect());
            for (block, certificate) in batch {
                let height = block.header.height;
                let refused = |reason| ArchiveError::Refused { height, reason };
                chain
                    .validate_synced(&block, &certificate, signatures.next())
                    .map_err(refused)?;
                writer.write(chain.stage(&block, &certificate)?)?;
                progress(height);
            }
        }
        writer.finish()?;
        if let Some(e) = unreadable {
            return Err(e);
        }
        self.reader.end(last)?;
        let head = chain.head()?;
        Ok(ImportReport {
            present,
            imported: head.height - start,
            head,
        })
    }
}

/// Writes staged blocks on a thread of its own, in order, while the next
/// ones execute, as the node's block writer does. Dropped, it lets the
/// blocks handed over finish.
struct Writer {
    queue: Option<SyncSender<StagedBlock>>,
    thread: Option<JoinHandle<Result<(), StorageError>>>,
}

impl Writer {
    fn start() -> Result<Writer, StorageError> {
        // The block being written and those queued stay staged, and staging
        // refuses a block past `MAX_STAGED`: one place is kept for the next.
        let (queue, jobs) = sync_channel::<StagedBlock>(MAX_STAGED - 2);
        let thread = std::thread::Builder::new()
            .name("import-writer".into())
            .spawn(move || jobs.into_iter().try_for_each(StagedBlock::write))
            .map_err(|e| StorageError::Io(sled::Error::Io(e)))?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    fn write(&mut self, staged: StagedBlock) -> Result<(), StorageError> {
        let sent = self.queue.as_ref().is_some_and(|q| q.send(staged).is_ok());
        if sent {
            return Ok(());
        }
        // The thread stops early only at a write that failed: its error.
        self.finish()
    }

    /// Waits for every block handed over to be written; the first error.
    fn finish(&mut self) -> Result<(), StorageError> {
        drop(self.queue.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// That the store's block at `block`'s height is `block`: by the hash its
/// commit certificate names, without reading the stored block's body.
fn check_present(storage: &Storage, block: &Block) -> Result<(), ArchiveError> {
    let height = block.header.height;
    let stored = storage
        .commit_certificate(height)?
        .ok_or_else(|| crate::storage::corrupt(format!("block {height} is missing")))?
        .block;
    if stored != block.hash() {
        return Err(ArchiveError::Diverges {
            height,
            stored,
            exported: block.hash(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
