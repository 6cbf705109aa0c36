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

use crate::client::{Client, read_body, refusal, sign, transport_message};
use crate::error::{Error, Result};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use trellis_types::PublicKey;
use trellis_types::api::{CommittedTx, ErrorBody, EventFilter, TxPosition};

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
    max_message_bytes: usize,
}

impl EventsBuilder {
    /// The longest event message a stream takes unless told otherwise
    /// ([`EventsBuilder::max_message_bytes`]): one committed transaction as
    /// JSON, its bytes in hex, is about twice the chain's `max_tx_bytes` (64
    /// KiB by default, at most `max_block_bytes`, 8 MiB by default) plus its
    /// events.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

    pub(crate) fn new(client: Client) -> Self {
        EventsBuilder {
            client,
            start: None,
            filter: EventFilter::default(),
            give_up_after: None,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
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

    /// End the stream with [`Error::Decode`] when a message grows past this
    /// many bytes (default [`EventsBuilder::DEFAULT_MAX_MESSAGE_BYTES`]),
    /// rather than hold whatever a broken or hostile endpoint keeps sending.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes.max(1);
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
            max_message_bytes: self.max_message_bytes,
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

const PATH: &str = "/v1/events";

/// Opens one connection: 200 with `text/event-stream`, or the node's refusal.
async fn connect(client: &Client, start: Start, filter: &EventFilter) -> Result<reqwest::Response> {
    let endpoint = client.endpoint().to_owned();
    let mut request = client
        .inner
        .http
        .get(format!("{endpoint}{PATH}"))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .query(&filter.to_query());
    request = match start {
        Start::Height(height) => request.query(&[("from_height", height.to_string())]),
        Start::After(position) => request.header("last-event-id", position.to_string()),
    };
    let signer = client.request_signer(PATH).await?;
    let request = request
        .build()
        .map(|request| sign(request, PATH, signer.as_ref(), &[]));
    let response = match request {
        Ok(request) => client.inner.http.execute(request).await,
        Err(e) => Err(e),
    }
    .map_err(|e| Error::Transport {
        endpoint: endpoint.clone(),
        message: transport_message(&e),
    })?;
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(response);
    }
    let max = client.inner.max_response_bytes;
    let body = read_body(response, max).await.ok().flatten();
    Err(refusal(status, &body.unwrap_or_default()))
}

struct Reader {
    client: Client,
    start: Start,
    filter: EventFilter,
    give_up_after: Option<u32>,
    max_message_bytes: usize,
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
        let mut parser = SseParser::new(self.max_message_bytes);
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
            let messages = match parser.push(&bytes) {
                Ok(messages) => messages,
                Err(too_long) => return self.stop_with(too_long).await,
            };
            for message in messages {
                if message.event.as_deref() == Some("error") {
                    return self.ended_by_node(&message.data).await;
                }
                let tx: CommittedTx = match serde_json::from_str(&message.data) {
                    Ok(tx) => tx,
                    Err(e) => return self.stop_with(format!("event stream message: {e}")).await,
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

    /// Ends the stream with the error the node ended it with (`event:
    /// error`, an [`ErrorBody`]): it cannot go on from here, and reconnecting
    /// would meet the same failure.
    async fn ended_by_node(&self, data: &str) -> Read {
        let error = match serde_json::from_str::<ErrorBody>(data) {
            Ok(body) => Error::Server {
                status: 500,
                code: body.code,
                message: body.message,
            },
            Err(e) => Error::Decode(format!("event stream error message: {e}")),
        };
        let _ = self.out.send(Err(error)).await;
        Read::Stop
    }

    /// Ends the stream with `message` as its last item: what the node sent
    /// cannot be read, and reading it again would fail the same way.
    async fn stop_with(&self, message: String) -> Read {
        let _ = self.out.send(Err(Error::Decode(message))).await;
        Read::Stop
    }
}

/// One Server-Sent Events message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseMessage {
    /// Its type (`event:`); none for a committed transaction.
    event: Option<String>,
    id: Option<String>,
    data: String,
}

/// Splits an SSE byte stream into messages (fields `event`, `id` and
/// `data`; comments and other fields are ignored), across chunk boundaries.
#[derive(Debug)]
struct SseParser {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no message end, so a message
    /// arriving in many chunks is searched once, not once per chunk.
    searched: usize,
    max_message_bytes: usize,
}

impl SseParser {
    fn new(max_message_bytes: usize) -> Self {
        SseParser {
            buffer: Vec::new(),
            searched: 0,
            max_message_bytes,
        }
    }

    /// The messages `bytes` completes, or why the stream cannot go on: a
    /// message longer than the limit.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseMessage>, String> {
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        // Parsed in place and drained once: a chunk of many messages costs
        // one pass over it, not one per message.
        let mut start = 0;
        // A terminator (at most `\r\n\r\n`) may straddle the old end.
        let mut from = self.searched.saturating_sub(3);
        while let Some((end, skip)) = message_end(&self.buffer[start..], from) {
            if end > self.max_message_bytes {
                return Err(self.too_long());
            }
            let text = String::from_utf8_lossy(&self.buffer[start..start + end]);
            let (mut event, mut id, mut data) = (None, None, Vec::new());
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = Some(value.to_owned()),
                    "id" => id = Some(value.to_owned()),
                    "data" => data.push(value),
                    _ => {} // comments (empty field), retry
                }
            }
            if !data.is_empty() {
                messages.push(SseMessage {
                    event,
                    id,
                    data: data.join("\n"),
                });
            }
            start += end + skip;
            from = 0;
        }
        self.buffer.drain(..start);
        if self.buffer.len() > self.max_message_bytes {
            return Err(self.too_long());
        }
        self.searched = self.buffer.len();
        Ok(messages)
    }

    fn too_long(&self) -> String {
        format!(
            "event stream message longer than {} bytes (EventsBuilder::max_message_bytes)",
            self.max_message_bytes
        )
    }
}

/// Where the first message in `buffer` ends (its first blank line, `\n\n`
/// or `\r\n\r\n`) and how long that terminator is, searching from `from`.
fn message_end(buffer: &[u8], mut from: usize) -> Option<(usize, usize)> {
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
        let mut parser = SseParser::new(EventsBuilder::DEFAULT_MAX_MESSAGE_BYTES);
        assert!(
            parser
                .push(b": keep-alive\n\nid: 1:0\nda")
                .unwrap()
                .is_empty()
        );
        let got = parser
            .push(b"ta: {\"a\":1}\n\nid:2:0\ndata:x\ndata:y\n\n")
            .unwrap();
        assert_eq!(
            got,
            vec![
                SseMessage {
                    event: None,
                    id: Some("1:0".into()),
                    data: "{\"a\":1}".into()
                },
                SseMessage {
                    event: None,
                    id: Some("2:0".into()),
                    data: "x\ny".into()
                },
            ]
        );
        assert_eq!(
            parser.push(b"id: 3:1\r\ndata: z\r\n\r\n").unwrap(),
            vec![SseMessage {
                event: None,
                id: Some("3:1".into()),
                data: "z".into()
            }]
        );
        // A typed message: the node's last word on a stream it cannot go on with.
        assert_eq!(
            parser
                .push(b"event: error\ndata: {\"code\":\"internal\"}\n\n")
                .unwrap(),
            vec![SseMessage {
                event: Some("error".into()),
                id: None,
                data: "{\"code\":\"internal\"}".into()
            }]
        );
        // A terminator split across chunks ends its message when it is whole.
        assert!(parser.push(b"id: 4:0\r\ndata: w\r\n\r").unwrap().is_empty());
        assert_eq!(
            parser.push(b"\n").unwrap(),
            vec![SseMessage {
                event: None,
                id: Some("4:0".into()),
                data: "w".into()
            }]
        );
    }

    #[test]
    fn a_stream_fed_a_byte_at_a_time_parses_as_in_one_piece() {
        let stream: &[u8] = b": hi\n\nid: 1:0\ndata: a\n\nid: 2:0\r\ndata: b\r\ndata: c\r\n\r\nid: 3:0\ndata: d\n\n";
        let whole = SseParser::new(EventsBuilder::DEFAULT_MAX_MESSAGE_BYTES)
            .push(stream)
            .unwrap();
        assert_eq!(whole.len(), 3, "{whole:?}");
        let mut parser = SseParser::new(EventsBuilder::DEFAULT_MAX_MESSAGE_BYTES);
        let mut bytewise = Vec::new();
        for byte in stream {
            bytewise.extend(parser.push(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(bytewise, whole);
    }

    #[test]
    fn a_message_past_the_limit_ends_the_stream_whole_or_unfinished() {
        let mut parser = SseParser::new(16);
        assert_eq!(parser.push(b"data: short\n\n").unwrap().len(), 1);
        let error = parser.push(b"data: 0123456789abcdef").unwrap_err();
        assert!(error.contains("longer than 16 bytes"), "{error}");

        let mut parser = SseParser::new(16);
        let error = parser.push(b"data: 0123456789abcdef\n\n").unwrap_err();
        assert!(error.contains("longer than 16 bytes"), "{error}");
    }
}
