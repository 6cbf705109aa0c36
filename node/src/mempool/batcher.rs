//! Admission of concurrent submissions in batches.
//!
//! API handlers hand their bytes (one transaction, or a client's batch of
//! them) to one worker thread, which takes whatever is waiting when it is
//! free (until it holds [`MAX_BATCH`] transactions) and admits it with one
//! [`Mempool::admit_batch`] call, so signatures are verified as one batch.
//! Under load batches grow by themselves; an idle node admits a lone
//! transaction at once, with no timer in the way. Verdicts are exactly those
//! of [`Mempool::admit`], in submission order. Dropping the [`Worker`] stops
//! the thread and waits for it, so its storage handle is gone when the node is.

use super::{AdmissionError, Mempool};
use crate::storage::Storage;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use trellis_types::Hash;

/// Most transactions admitted in one batch (a client's batch may fill it alone).
pub const MAX_BATCH: usize = 1_024;

type Verdict = Result<Hash, AdmissionError>;

/// One submission: one transaction or a client's batch, answered together.
struct Request {
    txs: Vec<Vec<u8>>,
    reply: oneshot::Sender<Vec<Verdict>>,
}

enum Message {
    Submit(Request),
    Stop,
}

/// Why a submission got no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// More submissions wait than the queue holds.
    #[error("{0} submissions are already waiting for admission")]
    QueueFull(usize),
    /// The worker stopped (the node is shutting down).
    #[error("admission has stopped")]
    Stopped,
}

/// Hands submissions to the admission worker; cheap to share.
#[derive(Clone)]
pub struct Batcher {
    queue: SyncSender<Message>,
    capacity: usize,
}

/// The admission thread. Dropping it stops the thread and waits for it.
pub struct Worker {
    queue: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Behind whatever already waits: those submissions still get their verdicts.
        let _ = self.queue.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Batcher {
    /// Starts the worker thread. `now_ms` is the clock admission checks
    /// expiries against.
    pub fn start(
        mempool: Arc<Mempool>,
        storage: Storage,
        capacity: usize,
        now_ms: fn() -> u64,
    ) -> (Batcher, Worker) {
        let (batcher, requests) = Batcher::unstarted(capacity);
        let thread = std::thread::Builder::new()
            .name("admission".into())
            .spawn(move || run(&mempool, &storage, &requests, now_ms))
            .expect("spawning the admission thread");
        let worker = Worker {
            queue: batcher.queue.clone(),
            thread: Some(thread),
        };
        (batcher, worker)
    }

    /// The queue without its worker.
    fn unstarted(capacity: usize) -> (Batcher, Receiver<Message>) {
        let (queue, requests) = sync_channel(capacity);
        (Batcher { queue, capacity }, requests)
    }

    /// Admits `bytes` together with whatever else is waiting.
    pub async fn admit(&self, bytes: Vec<u8>) -> Result<Verdict, NotAdmitted> {
        let mut verdicts = self.admit_all(vec![bytes]).await?;
        Ok(verdicts.pop().expect("one verdict per transaction"))
    }

    /// Admits `txs` (at most [`MAX_BATCH`] make one signature batch) together
    /// with whatever else is waiting; one verdict per transaction, in order.
    /// The queue counts the call as one submission.
    pub async fn admit_all(&self, txs: Vec<Vec<u8>>) -> Result<Vec<Verdict>, NotAdmitted> {
        let (reply, verdicts) = oneshot::channel();
        self.queue
            .try_send(Message::Submit(Request { txs, reply }))
            .map_err(|e| match e {
                TrySendError::Full(_) => NotAdmitted::QueueFull(self.capacity),
                TrySendError::Disconnected(_) => NotAdmitted::Stopped,
            })?;
        verdicts.await.map_err(|_| NotAdmitted::Stopped)
    }
}

fn run(mempool: &Mempool, storage: &Storage, requests: &Receiver<Message>, now_ms: fn() -> u64) {
    let mut stop = false;
    while !stop && let Ok(Message::Submit(first)) = requests.recv() {
        let mut count = first.txs.len();
        let mut batch = vec![first];
        while count < MAX_BATCH {
            match requests.try_recv() {
                Ok(Message::Submit(request)) => {
                    count += request.txs.len();
                    batch.push(request);
                }
                Ok(Message::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let items: Vec<&[u8]> = batch
            .iter()
            .flat_map(|r| r.txs.iter().map(Vec::as_slice))
            .collect();
        let mut verdicts = mempool.admit_batch(&items, storage, now_ms()).into_iter();
        for request in batch {
            let answer = verdicts.by_ref().take(request.txs.len()).collect();
            // The submitter may have gone away; its transactions are admitted all the same.
            let _ = request.reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let (batcher, _requests) = Batcher::unstarted(2);
        for i in 0..2u8 {
            let (reply, _) = oneshot::channel();
            let txs = vec![vec![i]];
            let request = Message::Submit(Request { txs, reply });
            batcher.queue.try_send(request).unwrap();
        }
        assert_eq!(
            batcher.admit(vec![3]).await.err(),
            Some(NotAdmitted::QueueFull(2))
        );
    }

    #[tokio::test]
    async fn submissions_to_a_stopped_worker_get_stopped_not_a_hang() {
        let (batcher, requests) = Batcher::unstarted(2);
        let waiting = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.admit(vec![1]).await }
        });
        // The worker takes the submission and dies without answering it.
        let taken = tokio::task::spawn_blocking(move || requests.recv().map(drop))
            .await
            .unwrap();
        assert!(taken.is_ok());
        assert_eq!(waiting.await.unwrap().err(), Some(NotAdmitted::Stopped));
        assert_eq!(
            batcher.admit(vec![2]).await.err(),
            Some(NotAdmitted::Stopped)
        );
    }
}
