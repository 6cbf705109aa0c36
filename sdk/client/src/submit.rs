//! Waiting for a submitted transaction: from the event stream opened before
//! it was sent, with polling of `GET /v1/transactions/{hash}` as the fallback.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::events::EventStream;
use std::time::Duration;
use trellis_types::{Event, Hash, Receipt, ReceiptStatus};

/// A committed, successful transaction and what it produced: `value` is what
/// a typed call extracts from its events (the new piece's id for an issue,
/// for instance), `()` for plain submissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<T = ()> {
    /// What the call produced (see the typed call's documentation).
    pub value: T,
    /// The transaction's hash (its id).
    pub tx_hash: Hash,
    /// Height of the block that committed it.
    pub height: u64,
    /// Its index in that block.
    pub index: u32,
    /// The block's timestamp (unix ms).
    pub block_time_ms: u64,
    /// Its receipt, with every event it emitted.
    pub receipt: Receipt,
}

impl<T> Committed<T> {
    /// The receipt's events.
    ///
    /// ```no_run
    /// # async fn demo(committed: trellis_sdk::Committed) {
    /// for event in committed.events() {
    ///     println!("{} {:?}", event.kind, event.attributes);
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> &[Event] {
        &self.receipt.events
    }

    /// The same commit carrying another value.
    ///
    /// ```no_run
    /// # async fn demo(committed: trellis_sdk::Committed) {
    /// let labelled = committed.map(|()| "remark");
    /// # }
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Committed<U> {
        Committed {
            value: f(self.value),
            tx_hash: self.tx_hash,
            height: self.height,
            index: self.index,
            block_time_ms: self.block_time_ms,
            receipt: self.receipt,
        }
    }
}

/// A transaction the node admitted and that is not known to be committed yet.
///
/// ```no_run
/// # async fn demo(client: trellis_sdk::Client, payload: trellis_types::Payload) -> trellis_sdk::Result<()> {
/// use std::time::Duration;
/// let pending = client.submit(payload).await?;
/// println!("admitted {} with nonce {:?}", pending.tx_hash(), pending.nonce());
/// let committed = pending.wait_for_commit(Duration::from_secs(10)).await?;
/// for event in committed.events() {
///     println!("{}: {:?}", event.kind, event.attributes);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PendingTx {
    client: Client,
    tx_hash: Hash,
    nonce: Option<u64>,
    watch: Option<EventStream>,
}

/// How often a wait polls when it has a live event stream, and when it has none.
const POLL_WITH_STREAM: Duration = Duration::from_secs(2);
const POLL_WITHOUT_STREAM: Duration = Duration::from_millis(200);

impl PendingTx {
    pub(crate) fn new(
        client: Client,
        tx_hash: Hash,
        nonce: Option<u64>,
        watch: Option<EventStream>,
    ) -> Self {
        PendingTx {
            client,
            tx_hash,
            nonce,
            watch,
        }
    }

    /// The transaction's hash: look it up with [`Client::transaction`].
    ///
    /// ```no_run
    /// # async fn demo(pending: trellis_sdk::PendingTx) {
    /// println!("admitted {}", pending.tx_hash());
    /// # }
    /// ```
    pub fn tx_hash(&self) -> Hash {
        self.tx_hash
    }

    /// The nonce the client allocated (`None` for [`Client::submit_signed`]).
    ///
    /// ```no_run
    /// # async fn demo(pending: trellis_sdk::PendingTx) {
    /// println!("nonce {:?}", pending.nonce());
    /// # }
    /// ```
    pub fn nonce(&self) -> Option<u64> {
        self.nonce
    }

    /// Waits for the commit with the client's commit timeout.
    ///
    /// ```no_run
    /// # async fn demo(pending: trellis_sdk::PendingTx) -> trellis_sdk::Result<()> {
    /// let committed = pending.wait().await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait(self) -> Result<Committed> {
        let timeout = self.client.inner.commit_timeout;
        self.wait_for_commit(timeout).await
    }

    /// Waits up to `timeout` for the commit. A committed transaction whose
    /// execution failed is [`Error::Failed`] with the contract's code; one
    /// the node dropped is [`Error::Dropped`] (an expired one's nonce goes
    /// to the client's next submission); no commit in time is
    /// [`Error::CommitTimeout`].
    pub async fn wait_for_commit(mut self, timeout: Duration) -> Result<Committed> {
        let tx_hash = self.tx_hash;
        let committed = tokio::time::timeout(timeout, self.watch_commit())
            .await
            .map_err(|_| Error::CommitTimeout { tx_hash })?;
        if let (Err(Error::Dropped { reason, .. }), Some(nonce)) = (&committed, self.nonce) {
            self.client.forget_dropped(nonce, *reason).await;
        }
        let committed = committed?;
        if committed.receipt.status == ReceiptStatus::Failed {
            let (code, message) = committed.receipt.error.clone().map_or_else(
                || ("failed".to_owned(), String::new()),
                |e| (e.code, e.message),
            );
            return Err(Error::Failed {
                code,
                message,
                receipt: Box::new(committed.receipt),
            });
        }
        Ok(committed)
    }

    async fn watch_commit(&mut self) -> Result<Committed> {
        loop {
            let poll_every = if self.watch.is_some() {
                POLL_WITH_STREAM
            } else {
                POLL_WITHOUT_STREAM
            };
            let next = async {
                match self.watch.as_mut() {
                    Some(stream) => stream.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = next => match item {
                    Some(Ok(tx)) if tx.tx_hash == self.tx_hash => {
                        return Ok(Committed {
                            value: (),
                            tx_hash: tx.tx_hash,
                            height: tx.height,
                            index: tx.index,
                            block_time_ms: tx.block_time_ms,
                            receipt: tx.receipt(),
                        });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => self.watch = None,
                },
                () = tokio::time::sleep(poll_every) => {
                    match self.client.committed(&self.tx_hash).await {
                        Ok(Some(committed)) => return Ok(committed),
                        Ok(None) => {}
                        Err(e) if e.is_transient() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}
