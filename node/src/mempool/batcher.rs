//! Admission of concurrent submissions in batches.
//!
//! API handlers hand their bytes (one transaction, or a client's batch of
//! them), and the network its peers' forwarded batches, to one worker
//! thread, which takes whatever is waiting when it is free (until it holds
//! [`MAX_BATCH`] transactions) and admits it with one
//! [`Mempool::admit_batches`] call, so signatures are verified as one batch.
//! Under load batches grow by themselves; an idle node admits a lone
//! transaction at once, with no timer in the way. Verdicts are exactly those
//! of [`Mempool::admit`] for a client's transactions, in submission order,
//! and of [`Mempool::admit_batch_from_peer`] for a peer's batch. The queue
//! is bounded in clients' transactions, not submissions, so a few large
//! batches cannot hold the worker for long; peers' batches are bounded by
//! the network's places for them. On a node alone the thread runs at a
//! lower priority than the driver (see `priority`). Dropping the [`Worker`]
//! stops the thread and waits for it, so its storage handle is gone when
//! the node is.

use super::{AdmissionError, Mempool, Origin};
use crate::priority::Priority;
use crate::storage::Storage;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use trellis_types::Hash;

/// Most transactions admitted in one batch (a client's batch may fill it alone).
pub const MAX_BATCH: usize = 1_024;

type Verdict = Result<Hash, AdmissionError>;

/// One submission: one transaction, a client's batch or a peer's, answered together.
struct Request {
    origin: Origin,
    txs: Vec<Vec<u8>>,
    reply: oneshot::Sender<Vec<Verdict>>,
}

impl Request {
    fn items(&self) -> Vec<&[u8]> {
        self.txs.iter().map(Vec::as_slice).collect()
    }

    /// Places this takes in the queue: a client's transactions count.
    fn places(&self) -> usize {
        match self.origin {
            Origin::Client => self.txs.len(),
            Origin::Peer => 0,
        }
    }
}

enum Message {
    Submit(Request),
    Stop,
}

/// Why a submission got no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// More transactions would wait than the queue holds.
    #[error("the admission queue holds {0} transactions and has no room for these")]
    QueueFull(usize),
    /// The worker stopped (the node is shutting down).
    #[error("admission has stopped")]
    Stopped,
}

/// Hands submissions to the admission worker; cheap to share.
#[derive(Clone)]
pub struct Batcher {
    queue: SyncSender<Message>,
    /// Most transactions waiting in the queue.
    capacity: usize,
    /// Clients' transactions in the queue, not yet taken by the worker.
    queued: Arc<AtomicUsize>,
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
    /// Starts the worker thread, at `priority`, with room for `capacity`
    /// waiting transactions. `now_ms` is the clock admission checks expiries
    /// against.
    pub fn start(
        mempool: Arc<Mempool>,
        storage: Storage,
        capacity: usize,
        now_ms: fn() -> u64,
        priority: Priority,
    ) -> (Batcher, Worker) {
        let (batcher, requests) = Batcher::unstarted(capacity);
        let queued = batcher.queued.clone();
        let thread = std::thread::Builder::new()
            .name("admission".into())
            .spawn(move || {
                priority.apply_to_this_thread();
                run(&mempool, &storage, &requests, &queued, now_ms)
            })
            .expect("spawning the admission thread");
        let worker = Worker {
            queue: batcher.queue.clone(),
            thread: Some(thread),
        };
        (batcher, worker)
    }

    /// The queue without its worker.
    fn unstarted(capacity: usize) -> (Batcher, Receiver<Message>) {
        // Every submission holds at least one transaction, so the channel never fills first.
        let (queue, requests) = sync_channel(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Batcher {
                queue,
                capacity,
                queued,
            },
            requests,
        )
    }

    /// Admits `bytes` together with whatever else is waiting.
    pub async fn admit(&self, bytes: Vec<u8>) -> Result<Verdict, NotAdmitted> {
        let mut verdicts = self.admit_all(vec![bytes]).await?;
        Ok(verdicts.pop().expect("one verdict per transaction"))
    }

    /// Admits `txs` (at most [`MAX_BATCH`] make one signature batch) together
    /// with whatever else is waiting; one verdict per transaction, in order.
    /// Each transaction takes a place in the queue; refused whole without room for all.
    pub async fn admit_all(&self, txs: Vec<Vec<u8>>) -> Result<Vec<Verdict>, NotAdmitted> {
        let count = txs.len();
        let before = self.queued.fetch_add(count, Ordering::SeqCst);
        if before + count > self.capacity {
            self.queued.fetch_sub(count, Ordering::SeqCst);
            return Err(NotAdmitted::QueueFull(self.capacity));
        }
        let verdicts = self.send(Origin::Client, txs).inspect_err(|_| {
            self.queued.fetch_sub(count, Ordering::SeqCst);
        })?;
        verdicts.await.map_err(|_| NotAdmitted::Stopped)
    }

    /// Admits a batch a peer forwarded, whole or not at all (see
    /// [`Mempool::admit_batch_from_peer`]), with whatever else is waiting. It
    /// takes no client's place in the queue: the network bounds how many
    /// peers' batches wait.
    pub async fn admit_forwarded(&self, txs: Vec<Vec<u8>>) -> Result<Vec<Verdict>, NotAdmitted> {
        let verdicts = self.send(Origin::Peer, txs)?;
        verdicts.await.map_err(|_| NotAdmitted::Stopped)
    }

    /// Queues a submission; its verdicts come on the returned channel.
    fn send(
        &self,
        origin: Origin,
        txs: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Vec<Verdict>>, NotAdmitted> {
        let (reply, verdicts) = oneshot::channel();
        let request = Request { origin, txs, reply };
        match self.queue.try_send(Message::Submit(request)) {
            Ok(()) => Ok(verdicts),
            Err(TrySendError::Full(_)) => Err(NotAdmitted::QueueFull(self.capacity)),
            Err(TrySendError::Disconnected(_)) => Err(NotAdmitted::Stopped),
        }
    }
}

fn run(
    mempool: &Mempool,
    storage: &Storage,
    requests: &Receiver<Message>,
    queued: &AtomicUsize,
    now_ms: fn() -> u64,
) {
    while let Some((batch, stop)) = take(requests, queued) {
        // Clients' transactions together, each peer's batch apart: a bad
        // signature condemns a peer's whole batch, and only its own.
        let (clients, peers): (Vec<Request>, Vec<Request>) =
            batch.into_iter().partition(|r| r.origin == Origin::Client);
        let client_items: Vec<&[u8]> = clients.iter().flat_map(Request::items).collect();
        let peer_items: Vec<Vec<&[u8]>> = peers.iter().map(Request::items).collect();
        let groups: Vec<(Origin, &[&[u8]])> = std::iter::once((Origin::Client, &client_items[..]))
            .chain(peer_items.iter().map(|items| (Origin::Peer, &items[..])))
            .collect();
        let mut verdicts = mempool
            .admit_batches(&groups, storage, now_ms())
            .into_iter();
        let mut client_verdicts = verdicts.next().expect("one result per batch").into_iter();
        // The submitter may have gone away; its transactions are admitted all the same.
        for request in clients {
            let answer = client_verdicts.by_ref().take(request.txs.len()).collect();
            let _ = request.reply.send(answer);
        }
        for (request, answer) in peers.into_iter().zip(verdicts) {
            let _ = request.reply.send(answer);
        }
        if stop {
            return;
        }
    }
}

/// Waits for a submission and takes it with whatever else waits, until
/// [`MAX_BATCH`] transactions, freeing their places in the queue; and
/// whether a stop came behind them. `None` once stopped.
fn take(requests: &Receiver<Message>, queued: &AtomicUsize) -> Option<(Vec<Request>, bool)> {
    let Ok(Message::Submit(first)) = requests.recv() else {
        return None;
    };
    let mut count = first.txs.len();
    let mut places = first.places();
    let mut batch = vec![first];
    let mut stop = false;
    while count < MAX_BATCH {
        match requests.try_recv() {
            Ok(Message::Submit(request)) => {
                count += request.txs.len();
                places += request.places();
                batch.push(request);
            }
            Ok(Message::Stop) => {
                stop = true;
                break;
            }
            Err(_) => break,
        }
    }
    queued.fetch_sub(places, Ordering::SeqCst);
    Some((batch, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_holds_transactions_up_to_its_capacity_however_they_come() {
        let (batcher, requests) = Batcher::unstarted(4);
        // Three waiting as one batch (no worker takes them yet).
        let waiting = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.admit_all(vec![vec![1], vec![2], vec![3]]).await }
        });
        while batcher.queued.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        // Two more do not fit, as a batch or one by one past the fourth.
        let full = Some(NotAdmitted::QueueFull(4));
        assert_eq!(batcher.admit_all(vec![vec![4], vec![5]]).await.err(), full);
        let fourth = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.admit(vec![4]).await }
        });
        while batcher.queued.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(batcher.admit(vec![5]).await.err(), full);
        // The worker's take frees the places of all it took.
        let (taken, stop) = take(&requests, &batcher.queued).expect("submissions wait");
        assert_eq!(taken.iter().map(|r| r.txs.len()).sum::<usize>(), 4);
        assert!(!stop);
        assert_eq!(batcher.queued.load(Ordering::SeqCst), 0);
        let again = tokio::spawn({
            let batcher = batcher.clone();
            async move {
                batcher
                    .admit_all(vec![vec![6], vec![7], vec![8], vec![9]])
                    .await
            }
        });
        while batcher.queued.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
        drop((taken, requests));
        for task in [waiting, again] {
            assert_eq!(task.await.unwrap().err(), Some(NotAdmitted::Stopped));
        }
        assert_eq!(fourth.await.unwrap().err(), Some(NotAdmitted::Stopped));
    }

    #[tokio::test]
    async fn a_peer_s_batch_takes_no_client_s_place_in_the_queue() {
        let (batcher, requests) = Batcher::unstarted(2);
        let clients = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.admit_all(vec![vec![1], vec![2]]).await }
        });
        while batcher.queued.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // The clients' queue is full, yet a peer's batch of three still waits.
        let full = Some(NotAdmitted::QueueFull(2));
        assert_eq!(batcher.admit(vec![3]).await.err(), full);
        let peer = batcher
            .send(Origin::Peer, vec![vec![4], vec![5], vec![6]])
            .expect("queued");
        let (taken, stop) = take(&requests, &batcher.queued).expect("submissions wait");
        assert!(!stop);
        let origins: Vec<Origin> = taken.iter().map(|r| r.origin).collect();
        assert_eq!(origins, [Origin::Client, Origin::Peer]);
        // Only the clients' places were held, and taking frees them.
        assert_eq!(batcher.queued.load(Ordering::SeqCst), 0);
        drop((taken, requests));
        assert_eq!(clients.await.unwrap().err(), Some(NotAdmitted::Stopped));
        assert!(peer.await.is_err(), "no verdicts from a stopped worker");
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
