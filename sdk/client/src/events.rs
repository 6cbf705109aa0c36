//! The event stream client: `GET /v1/events` (Server-Sent Events) as a
//! [`Stream`](futures_util::Stream) of committed transactions that survives
//! dropped connections.
//!
//! A stream always has a definite start (a height, or a position to continue
//! after); after a dropped connection it reconnects with backoff, failing
//! over between endpoints, and asks to continue strictly after the last
//! transaction it delivered (`Last-Event-ID`). It also drops anything at or
//! before that position, so a consumer sees each transaction once, in chain
//! order, with no gap.

use crate::client::{Client, refusal, transport_message};
use crate::error::{Error, Result};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use trellis_types::PublicKey;
use trellis_types::api::{CommittedTx, EventFilter, TxPosition};

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Height(u64),
    After(TxPosition),
}

/// A connection with no byte (not even a keep-alive) for this long is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Configures an event stream; [`EventsBuilder::subscribe`] opens it.
///
/// ```no_run
/// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
/// let mut stream = client
///     .events()
///     .from_height(1)
///     .kind("issued")
///     .kind("split")
///     .party("supplier-t2")
///     .subscribe()
///     .await?;
/// while let Some(tx) = stream.next().await {
///     let tx = tx?;
///     for event in &tx.events {
///         println!("{} {} {:?}", tx.position(), event.kind, event.attributes);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EventsBuilder {
    client: Client,
    start: Option<Start>,
    filter: EventFilter,
    give_up_after: Option<u32>,
}

impl EventsBuilder {
    pub(crate) fn new(client: Client) -> Self {
        EventsBuilder {
            client,
            start: None,
            filter: EventFilter::default(),
            give_up_after: None,
        }
    }

    /// Start with the block at `height` (default: the block after the head
    /// at the time of [`EventsBuilder::subscribe`]).
    pub fn from_height(mut self, height: u64) -> Self {
        self.start = Some(Start::Height(height));
        self
    }

    /// Continue strictly after `position`, e.g. the last one a previous run processed.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let saved: trellis_types::api::TxPosition = "42:1".parse().expect("a saved position");
    /// let stream = client.events().after(saved).subscribe().await?;
    /// # Ok(()) }
    /// ```
    pub fn after(mut self, position: TxPosition) -> Self {
        self.start = Some(Start::After(position));
        self
    }

    /// Only transactions with an event of this kind (repeat for "any of").
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.filter.kinds.push(kind.into());
        self
    }

    /// Only transactions concerning this party: an organisation id or an
    /// account key in hex (repeat for "any of"). See [`EventFilter::parties`].
    pub fn party(mut self, party: impl Into<String>) -> Self {
        self.filter.parties.push(party.into());
        self
    }

    /// Only transactions signed by this account key (repeat for "any of").
    pub fn sender(mut self, key: PublicKey) -> Self {
        self.filter.senders.push(key);
        self
    }

    /// End the stream with an error after this many failed reconnections in
    /// a row (default: keep trying, with the client's backoff).
    pub fn give_up_after(mut self, failures: u32) -> Self {
        self.give_up_after = Some(failures.max(1));
        self
    }

    /// Opens the stream. Returns once the node has accepted the subscription,
    /// so every transaction committed from then on will be delivered. A bad
    /// filter is [`Error::Rejected`] here; connection trouble is retried with
    /// the client's retry policy.
    pub async fn subscribe(self) -> Result<EventStream> {
        self.open(true).await
    }

    /// Like [`EventsBuilder::subscribe`] but with a single attempt.
    pub(crate) async fn subscribe_once(self) -> Result<EventStream> {
        self.open(false).await
    }

    async fn open(self, retry: bool) -> Result<EventStream> {
        let start = match self.start {
            Some(start) => start,
            None => Start::Height(self.client.status().await?.status.height + 1),
        };
        let attempts = if retry {
            self.client.inner.retry.max_attempts
        } else {
            1
        };
        let mut failures = 0;
        let response = loop {
            match connect(&self.client, start, &self.filter).await {
                Ok(response) => break response,
                Err(e) if e.is_transient() && failures + 1 < attempts => {
                    failures += 1;
                    self.client.fail_over();
                    tokio::time::sleep(self.client.inner.retry.backoff(failures)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let (tx, rx) = mpsc::channel(256);
        let reader = Reader {
            client: self.client,
            start,
            filter: self.filter,
            give_up_after: self.give_up_after,
            last: match start {
                Start::After(position) => Some(position),
                Start::Height(_) => None,
            },
            out: tx,
        };
        let task = tokio::spawn(reader.run(response));
        Ok(EventStream { rx, task })
    }
}

/// Committed transactions, in chain order, each once. Ends only when given
/// up on ([`EventsBuilder::give_up_after`]) or refused, with an error item.
/// Dropping it closes the connection.
///
/// Use [`EventStream::next`], or any `futures` `StreamExt` combinator: it is a
/// [`futures_util::Stream`] of `Result<CommittedTx>`.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Result<CommittedTx>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventStream {
    /// The next committed transaction; `None` once the stream has ended.
    ///
    /// ```no_run
    /// # async fn demo(mut stream: trellis_sdk::EventStream) -> trellis_sdk::Result<()> {
    /// while let Some(tx) = stream.next().await {
    ///     println!("{}", tx?.position());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Option<Result<CommittedTx>> {
        self.rx.recv().await
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_util::Stream for EventStream {
    type Item = Result<CommittedTx>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Opens one connection: 200 with `text/event-stream`, or the node's refusal.
async fn connect(client: &Client, start: Start, filter: &EventFilter) -> Result<reqwest::Response> {
    let endpoint = client.endpoint().to_owned();
    let mut request = client
        .inner
        .http
        .get(format!("{endpoint}/v1/events"))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .query(&filter.to_query());
    request = match start {
        Start::Height(height) => request.query(&[("from_height", height.to_string())]),
        Start::After(position) => request.header("last-event-id", position.to_string()),
    };
    let response = request.send().await.map_err(|e| Error::Transport {
        endpoint: endpoint.clone(),
        message: transport_message(&e),
    })?;
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    Err(refusal(status, &body))
}

struct Reader {
    client: Client,
    start: Start,
    filter: EventFilter,
    give_up_after: Option<u32>,
    /// The last position delivered (or the one to continue after).
    last: Option<TxPosition>,
    out: mpsc::Sender<Result<CommittedTx>>,
}

enum Read {
    /// The connection ended or broke: reconnect.
    Dropped,
    /// The consumer went away, or the node sent something unusable: stop.
    Stop,
}

impl Reader {
    async fn run(mut self, first: reqwest::Response) {
        let mut response = Some(first);
        let mut failures = 0u32;
        loop {
            let connection = match response.take() {
                Some(r) => r,
                None => {
                    let start = self.last.map_or(self.start, Start::After);
                    match connect(&self.client, start, &self.filter).await {
                        Ok(r) => {
                            failures = 0;
                            r
                        }
                        Err(e) => {
                            failures += 1;
                            let final_refusal =
                                matches!(e, Error::Rejected { status, .. } if status != 429);
                            if final_refusal
                                || self.give_up_after.is_some_and(|max| failures >= max)
                            {
                                let _ = self.out.send(Err(e)).await;
                                return;
                            }
                            self.client.fail_over();
                            let wait = self.client.inner.retry.backoff(failures);
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                () = self.out.closed() => return,
                            }
                            continue;
                        }
                    }
                }
            };
            match self.read(connection).await {
                Read::Dropped => {}
                Read::Stop => return,
            }
        }
    }

    async fn read(&mut self, mut connection: reqwest::Response) -> Read {
        let mut parser = SseParser::default();
        loop {
            let chunk = tokio::select! {
                chunk = tokio::time::timeout(IDLE_TIMEOUT, connection.chunk()) => chunk,
                () = self.out.closed() => return Read::Stop,
            };
            let bytes = match chunk {
                Ok(Ok(Some(bytes))) => bytes,
                // End of stream, a broken connection, or silence past the keep-alives.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return Read::Dropped,
            };
            for message in parser.push(&bytes) {
                let tx: CommittedTx = match serde_json::from_str(&message.data) {
                    Ok(tx) => tx,
                    Err(e) => {
                        let _ = self
                            .out
                            .send(Err(Error::Decode(format!("event stream message: {e}"))))
                            .await;
                        return Read::Stop;
                    }
                };
                let position = tx.position();
                if self.last.is_some_and(|last| position <= last) {
                    continue;
                }
                if self.out.send(Ok(tx)).await.is_err() {
                    return Read::Stop;
                }
                self.last = Some(position);
            }
        }
    }
}

/// One Server-Sent Events message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseMessage {
    id: Option<String>,
    data: String,
}

/// Splits an SSE byte stream into messages (fields `id` and `data`; comments
/// and other fields are ignored), across chunk boundaries.
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        // Parsed in place and drained once: a chunk of many messages costs
        // one pass over it, not one per message.
        let mut start = 0;
        while let Some((end, skip)) = message_end(&self.buffer[start..]) {
            let text = String::from_utf8_lossy(&self.buffer[start..start + end]);
            let (mut id, mut data) = (None, Vec::new());
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = Some(value.to_owned()),
                    "data" => data.push(value),
                    _ => {} // comments (empty field), event, retry
                }
            }
            if !data.is_empty() {
                messages.push(SseMessage {
                    id,
                    data: data.join("\n"),
                });
            }
            start += end + skip;
        }
        self.buffer.drain(..start);
        messages
    }
}

/// Where the first message in `buffer` ends (its first blank line, `\n\n`
/// or `\r\n\r\n`) and how long that terminator is.
fn message_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(at) = buffer[from..].iter().position(|&b| b == b'\n') {
        let lf = from + at;
        let next = &buffer[lf + 1..];
        if next.starts_with(b"\n") {
            return Some((lf, 2));
        }
        if lf > 0 && buffer[lf - 1] == b'\r' && next.starts_with(b"\r\n") {
            return Some((lf - 1, 4));
        }
        from = lf + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_joins_messages_split_across_chunks_and_skips_comments() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\nid: 1:0\nda").is_empty());
        let got = parser.push(b"ta: {\"a\":1}\n\nid:2:0\ndata:x\ndata:y\n\n");
        assert_eq!(
            got,
            vec![
                SseMessage {
                    id: Some("1:0".into()),
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    id: Some("2:0".into()),
                    data: "x\ny".into()
                },
            ]
        );
        assert_eq!(
            parser.push(b"id: 3:1\r\ndata: z\r\n\r\n"),
            vec![SseMessage {
                id: Some("3:1".into()),
                data: "z".into()
            }]
        );
        // A terminator split across chunks ends its message when it is whole.
        assert!(parser.push(b"id: 4:0\r\ndata: w\r\n\r").is_empty());
        assert_eq!(
            parser.push(b"\n"),
            vec![SseMessage {
                id: Some("4:0".into()),
                data: "w".into()
            }]
        );
    }
}
