//! The thread that writes decided blocks to disk.
//!
//! A write gets a thread of its own rather than one from tokio's blocking
//! pool: that pool is bounded (see `main.rs`), and a block write must never
//! wait behind API reads or peers' signature checks queued there. One block
//! is written at a time; the driver waits for it before committing the next.

use crate::metrics::Metrics;
use crate::storage::{StagedBlock, StorageError};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

/// The answer to one write: `Err` if the block could not be made durable.
pub type Written = oneshot::Receiver<Result<(), StorageError>>;

type Job = (StagedBlock, oneshot::Sender<Result<(), StorageError>>);

/// The block-writer thread. Dropping it lets the write in progress finish
/// and waits for the thread.
pub struct BlockWriter {
    queue: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl BlockWriter {
    pub fn start(metrics: Arc<Metrics>) -> std::io::Result<BlockWriter> {
        let (queue, jobs) = sync_channel::<Job>(1);
        let thread = std::thread::Builder::new()
            .name("block-writer".into())
            .spawn(move || {
                for (staged, reply) in jobs {
                    let start = Instant::now();
                    let mut reply = Some(reply);
                    // The driver may have stopped waiting (shutdown); the block is written all the same.
                    let mut answer = |result| {
                        if let Some(reply) = reply.take() {
                            metrics.observe_phase("write", start.elapsed());
                            let _ = reply.send(result);
                        }
                    };
                    // Answered once durable, before the block's tree nodes are cached.
                    if let Err(e) = staged.write_then(|| answer(Ok(()))) {
                        answer(Err(e));
                    }
                }
            })?;
        Ok(BlockWriter {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Hands `staged` to the thread. If the thread is gone, the returned
    /// receiver reports the write as abandoned.
    pub fn write(&self, staged: StagedBlock) -> Written {
        let (reply, written) = oneshot::channel();
        if let Some(queue) = &self.queue {
            // Never blocks: the driver waits for each write before handing over
            // the next. It fails only if the thread has died; the job, and with
            // it `reply`, is then dropped, which the receiver reports.
            let _ = queue.send((staged, reply));
        }
        written
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;
    use crate::storage::tests::{retry_while_locked, stage, writes};

    fn open(dir: &tempfile::TempDir) -> Storage {
        retry_while_locked(|| Storage::open(dir.path())).unwrap()
    }

    #[test]
    fn a_handed_over_block_is_written_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir);
        let writer = BlockWriter::start(Arc::new(Metrics::new())).unwrap();
        for expected in 0..3 {
            let (block, staged) = stage(&storage, Vec::new(), writes(&[("k", Some("v"))]));
            assert_eq!(block.header.height, expected);
            writer.write(staged).blocking_recv().unwrap().unwrap();
        }
        drop((writer, storage));
        assert_eq!(open(&dir).head().map(|h| h.height), Some(2));
    }

    #[test]
    fn dropping_the_writer_finishes_the_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir);
        let writer = BlockWriter::start(Arc::new(Metrics::new())).unwrap();
        let (block, staged) = stage(&storage, Vec::new(), writes(&[("k", Some("v"))]));
        let mut written = writer.write(staged);
        drop(writer);
        // Answered already: the drop waited for the write.
        written.try_recv().unwrap().unwrap();
        drop(storage);
        let reopened = open(&dir);
        assert_eq!(reopened.head().map(|h| h.block_hash), Some(block.hash()));
    }
}
