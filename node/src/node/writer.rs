//! The thread that writes decided blocks to disk.
//!
//! A write gets a thread of its own rather than one from tokio's blocking
//! pool: that pool is bounded (see `main.rs`), and a block write must never
//! wait behind API reads or peers' signature checks queued there. On a node
//! alone the thread runs at a lower priority than the driver (see
//! `priority`). Blocks are written one at a time, in the order handed over;
//! the driver may hand over the next while one is being written (up to
//! [`MAX_STAGED`] staged), and hears of each block twice: durable (its redo
//! file synced), then written (in sled and no longer staged).

use crate::metrics::Metrics;
use crate::priority::Priority;
use crate::storage::{MAX_STAGED, StagedBlock, StorageError};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// How far the writer got with the block at `height`: each block is reported
/// [`Step::Durable`], then [`Step::Written`], or an error, after which it may
/// not be durable.
#[derive(Debug)]
pub struct Report {
    pub height: u64,
    pub step: Result<Step, StorageError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The block survives a crash (a reopened store finishes writing it).
    Durable,
    /// The block is in sled and no longer staged: another may be staged.
    Written,
}

/// The block-writer thread. Dropping it lets the writes handed over finish
/// and waits for the thread.
pub struct BlockWriter {
    queue: Option<SyncSender<StagedBlock>>,
    reports: UnboundedReceiver<Report>,
    thread: Option<JoinHandle<()>>,
}

impl BlockWriter {
    /// Starts the thread, at `priority`.
    pub fn start(metrics: Arc<Metrics>, priority: Priority) -> std::io::Result<BlockWriter> {
        let (queue, jobs) = sync_channel::<StagedBlock>(MAX_STAGED);
        let (report_to, reports) = unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("block-writer".into())
            .spawn(move || {
                priority.apply_to_this_thread();
                for staged in jobs {
                    let start = Instant::now();
                    let height = staged.height();
                    // The driver may have stopped listening (shutdown); the block is written all the same.
                    let report = |step| {
                        let _ = report_to.send(Report { height, step });
                    };
                    let result = staged.write_then(
                        || {
                            metrics.observe_phase("durable", start.elapsed());
                            report(Ok(Step::Durable));
                        },
                        || {
                            metrics.observe_phase("write", start.elapsed());
                            report(Ok(Step::Written));
                        },
                    );
                    if let Err(e) = result {
                        report(Err(e));
                    }
                }
            })?;
        Ok(BlockWriter {
            queue: Some(queue),
            reports,
            thread: Some(thread),
        })
    }

    /// Hands `staged` to the thread, behind the blocks handed over before it.
    /// Blocks only if more than [`MAX_STAGED`] are waiting, which staging
    /// refuses. If the thread is gone, [`Self::report`] says so.
    pub fn write(&self, staged: StagedBlock) {
        if let Some(queue) = &self.queue {
            // Fails only if the thread has died; the block is then dropped unwritten.
            let _ = queue.send(staged);
        }
    }

    /// The next report on the blocks handed over; `None` if the thread is gone.
    pub async fn report(&mut self) -> Option<Report> {
        self.reports.recv().await
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
    use crate::priority::tests::{background_niceness, niceness_of_threads_named};
    use crate::storage::Storage;
    use crate::storage::tests::{retry_while_locked, stage, writes};

    fn open(dir: &tempfile::TempDir) -> Storage {
        retry_while_locked(|| Storage::open(dir.path())).unwrap()
    }

    fn stage_next(storage: &Storage, value: &str) -> (u64, StagedBlock) {
        let (block, staged) = stage(storage, Vec::new(), writes(&[("k", Some(value))]));
        (block.header.height, staged)
    }

    #[test]
    fn the_writer_thread_runs_at_the_priority_it_is_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir);
        let mut writer =
            BlockWriter::start(Arc::new(Metrics::new()), Priority::Background).unwrap();
        let (_, staged) = stage_next(&storage, "a");
        writer.write(staged);
        // Reports come from the thread after it set its priority.
        writer.reports.blocking_recv().unwrap().step.unwrap();
        // Other tests' writers may run beside it, at their creators' priority.
        let threads = niceness_of_threads_named("block-writer");
        assert!(threads.contains(&background_niceness()), "{threads:?}");
    }

    #[test]
    fn staged_blocks_are_written_in_order_each_reported_durable_then_written() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir);
        let mut writer = BlockWriter::start(Arc::new(Metrics::new()), Priority::Normal).unwrap();
        let (first, staged) = stage_next(&storage, "a");
        writer.write(staged);
        let (second, staged) = stage_next(&storage, "b");
        writer.write(staged);
        assert_eq!((first, second), (0, 1));
        let mut reports = Vec::new();
        while reports.len() < 4 {
            let report = writer.reports.blocking_recv().unwrap();
            reports.push((report.height, report.step.unwrap()));
        }
        use Step::{Durable, Written};
        assert_eq!(
            reports,
            [(0, Durable), (0, Written), (1, Durable), (1, Written)]
        );
        let (third, staged) = stage_next(&storage, "c");
        writer.write(staged);
        drop(writer);
        drop(storage);
        assert_eq!(open(&dir).head().map(|h| h.height), Some(third));
    }

    #[test]
    fn dropping_the_writer_finishes_the_writes_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir);
        let writer = BlockWriter::start(Arc::new(Metrics::new()), Priority::Normal).unwrap();
        let (_, staged) = stage_next(&storage, "a");
        writer.write(staged);
        let (_, staged) = stage_next(&storage, "b");
        writer.write(staged);
        let head = storage.head();
        drop(writer);
        assert!(storage.records().staged().next().is_none(), "both written");
        drop(storage);
        assert_eq!(open(&dir).head(), head);
    }
}
