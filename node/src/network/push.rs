//! One long-lived stream to each peer for the messages that need no answer:
//! consensus messages and forwarded transactions.
//!
//! As a request (`/trellis/1`) each of them opened a yamux stream,
//! negotiated its protocol, waited for an acknowledgement and closed the
//! stream again: about a dozen encrypted frames and as many wake-ups on both
//! sides for a vote of a few hundred bytes. On `/trellis/push/1` a node
//! opens one stream to each peer and writes its frames back to back (the same
//! length-prefixed encoding, several in one write when they queue up), in
//! order, with no answer. Sync, which needs one, stays a request.
//!
//! A peer's frames are read as requests' are: each takes its length from a
//! budget before its body is read and gives it back once handled, and what
//! is refused counts against the peer. The budget is the peer's, shared by
//! its push streams; the newest stream a peer opens replaces the one before.
//! A peer that does not speak the protocol (an older node) is sent requests.
//!
//! What waits for one peer's writer is bounded both ways: in frames, and in
//! bytes (as many as a peer may have us hold of its frames), and a write
//! that makes no progress for [`WRITE_TIMEOUT`] is given up with its stream,
//! so a member that stops reading holds no more than that.

use super::{Codec, Frame, Request};
use libp2p::futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams, OpenStreamError};
use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::timeout;
use tracing::debug;

pub(super) const PROTOCOL: StreamProtocol = StreamProtocol::new("/trellis/push/3");

/// Frames waiting to be written to one peer; past this, or past its bytes
/// ([`Writers::new`]), new ones are dropped
/// (`trellis_network_push_dropped_total`), as a request that fails is: a
/// peer this far behind is not reading.
const QUEUE_FRAMES: usize = 1_024;

/// A write that makes no progress for this long (no [`WRITE_BYTES`] taken)
/// is given up, and its stream with it: a member that stops reading would
/// otherwise hold its queue, up to the largest frames, for as long as it
/// stays connected. A peer taking less than 6.5 KB a second is not keeping
/// up with consensus anyway.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Queued frames are gathered into one write up to about this many bytes.
const WRITE_BYTES: usize = 64 * 1024;

/// Opening a stream waits for a connection to the peer: past this the
/// frames in hand are dropped, and a writer whose peer went away ends.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One frame as it goes on the wire, shared by every peer's queue.
pub(super) type Encoded = Arc<[u8]>;

/// What the push streams tell the network task.
pub(super) enum Event {
    /// A frame read from `peer`, or why it was refused.
    Frame { peer: PeerId, frame: Frame<Request> },
    /// `peer` does not speak [`PROTOCOL`]: send it requests, starting with
    /// the frames that were waiting for its stream.
    Unsupported { peer: PeerId, unsent: Vec<Encoded> },
}

/// The writers, one task per connected peer.
pub(super) struct Writers {
    control: Control,
    queues: BTreeMap<PeerId, Queue>,
    events: mpsc::Sender<Event>,
    dropped: Counter,
    max_bytes: usize,
}

/// One peer's frames on their way to its writer.
struct Queue {
    frames: mpsc::Sender<Encoded>,
    /// Bytes queued or being written, at most [`Writers::max_bytes`].
    bytes: Arc<AtomicUsize>,
}

impl Writers {
    /// `max_bytes` is what one peer's frames may hold, queued or being written.
    pub(super) fn new(
        control: Control,
        events: mpsc::Sender<Event>,
        dropped: Counter,
        max_bytes: usize,
    ) -> Self {
        Writers {
            control,
            queues: BTreeMap::new(),
            events,
            dropped,
            max_bytes,
        }
    }

    /// Starts writing to `peer`; its stream is opened with the first frame.
    pub(super) fn start(&mut self, peer: PeerId) {
        let (frames, queued) = mpsc::channel(QUEUE_FRAMES);
        let bytes = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            peer,
            control: self.control.clone(),
            events: self.events.clone(),
            bytes: bytes.clone(),
            dropped: self.dropped.clone(),
        };
        tokio::spawn(writer.run(queued));
        self.queues.insert(peer, Queue { frames, bytes });
    }

    /// Stops writing to `peer`: its writer writes what is queued if its
    /// stream is open, and ends.
    pub(super) fn stop(&mut self, peer: &PeerId) {
        self.queues.remove(peer);
    }

    pub(super) fn send(&self, peer: &PeerId, frame: Encoded) {
        let Some(queue) = self.queues.get(peer) else {
            return;
        };
        let len = frame.len();
        let before = queue.bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > self.max_bytes || queue.frames.try_send(frame).is_err() {
            queue.bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.inc();
        }
    }
}

/// Writes one peer's frames.
struct Writer {
    peer: PeerId,
    control: Control,
    events: mpsc::Sender<Event>,
    bytes: Arc<AtomicUsize>,
    dropped: Counter,
}

impl Writer {
    /// Writes the frames as they come, gathering what queued meanwhile into
    /// one write. A stream that fails or stalls is dropped and the next frame
    /// opens another; frames that could not be written are lost (and
    /// counted), as a failed request is.
    async fn run(mut self, mut frames: mpsc::Receiver<Encoded>) {
        let peer = self.peer;
        let mut stream: Option<Stream> = None;
        while let Some(first) = frames.recv().await {
            let mut batch = vec![first];
            let mut bytes = batch[0].len();
            while bytes < WRITE_BYTES {
                match frames.try_recv() {
                    Ok(frame) => {
                        bytes += frame.len();
                        batch.push(frame);
                    }
                    Err(_) => break,
                }
            }
            if stream.is_none() && frames.is_closed() {
                // The peer is gone: what is left is stale, and opening a
                // stream would wait for it to come back.
                return;
            }
            let open = match stream.as_mut() {
                Some(open) => open,
                None => match timeout(OPEN_TIMEOUT, self.control.open_stream(peer, PROTOCOL)).await
                {
                    Ok(Ok(opened)) => stream.insert(opened),
                    Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => {
                        frames.close();
                        while let Some(frame) = frames.recv().await {
                            batch.push(frame);
                        }
                        self.done(&batch);
                        let unsent = batch;
                        let _ = self.events.send(Event::Unsupported { peer, unsent }).await;
                        return;
                    }
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "cannot open a push stream");
                        self.lost(&batch);
                        continue;
                    }
                    Err(_) => {
                        debug!(%peer, "timed out opening a push stream");
                        self.lost(&batch);
                        continue;
                    }
                },
            };
            match write_steadily(open, &batch.concat()).await {
                Ok(()) => self.done(&batch),
                Err(e) => {
                    debug!(%peer, error = %e, "push stream failed or stalled: dropped");
                    stream = None;
                    self.lost(&batch);
                }
            }
        }
        if let Some(mut open) = stream {
            let _ = open.close().await;
        }
    }

    /// `batch` has left the queue (written, lost or handed back): its bytes
    /// no longer count against the peer.
    fn done(&self, batch: &[Encoded]) {
        let bytes = batch.iter().map(|f| f.len()).sum();
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn lost(&self, batch: &[Encoded]) {
        self.done(batch);
        self.dropped.inc_by(batch.len() as u64);
    }
}

/// Writes `bytes` in pieces of [`WRITE_BYTES`], each within
/// [`WRITE_TIMEOUT`]: a slow peer may take a large block as long as it keeps
/// reading, one that stops is found out.
async fn write_steadily(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    let stalled = || std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer stopped reading");
    for piece in bytes.chunks(WRITE_BYTES) {
        timeout(WRITE_TIMEOUT, stream.write_all(piece))
            .await
            .map_err(|_| stalled())??;
    }
    timeout(WRITE_TIMEOUT, stream.flush())
        .await
        .map_err(|_| stalled())?
}

/// Accepts peers' push streams and reads each in a task of its own; a
/// peer's newer stream replaces its older one. `codec` is the behaviour's:
/// each peer's readers share a budget cloned from it.
pub(super) async fn accept(
    mut incoming: IncomingStreams,
    codec: Codec,
    events: mpsc::Sender<Event>,
) {
    let mut readers: BTreeMap<PeerId, (Codec, Option<AbortHandle>)> = BTreeMap::new();
    while let Some((peer, stream)) = incoming.next().await {
        // Only members connect (the allow list), so this map stays small.
        let (budget, reader) = readers.entry(peer).or_insert_with(|| (codec.clone(), None));
        if let Some(older) = reader.take() {
            older.abort();
        }
        let task = tokio::spawn(read_from(peer, stream, budget.clone(), events.clone()));
        *reader = Some(task.abort_handle());
    }
}

/// Reads `peer`'s frames until the stream ends or a frame is refused (after
/// an oversized length the stream is out of step; the peer opens another).
async fn read_from(peer: PeerId, mut stream: Stream, codec: Codec, events: mpsc::Sender<Event>) {
    while let Ok(frame) = codec.read::<_, Request>(&mut stream).await {
        let refused = frame.message.is_err();
        if events.send(Event::Frame { peer, frame }).await.is_err() || refused {
            return;
        }
    }
}
