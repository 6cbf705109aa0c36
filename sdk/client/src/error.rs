//! The SDK's one error type, in the caller's terms: refused by the node,
//! failed in execution, not committed in time, or not reachable.

use crate::keys::KeyError;
use trellis_types::api::DropReason;
use trellis_types::{Hash, Receipt};

/// Everything a [`Client`](crate::Client) call can fail with.
///
/// Match on the variant to decide what to do: [`Error::Rejected`],
/// [`Error::Failed`] and [`Error::Dropped`] are final answers (fix the
/// request, or sign it again), [`Error::Transport`],
/// [`Error::Server`] and [`Error::CommitTimeout`] may succeed later.
///
/// ```no_run
/// # async fn demo(client: trellis_sdk::Client, payload: trellis_types::Payload) {
/// use trellis_sdk::Error;
/// match client.submit(payload).await {
///     Ok(pending) => println!("admitted as {}", pending.tx_hash()),
///     Err(Error::Rejected { code, .. }) if code == "unknown_sender" => eprintln!("register this key first"),
///     Err(e) => eprintln!("{e} (code: {:?})", e.code()),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node refused the request with a 4xx answer and a stable code:
    /// at admission (`nonce_replayed`, `unknown_sender`, `bad_signature`,
    /// `mempool_full` once retries are used up, ...), or for a read
    /// (`not_found`, `malformed`, or a contract query's own code such as
    /// `not_found` with status 422). Never retried, except 429.
    #[error("refused by the node ({status} {code}): {message}")]
    Rejected {
        /// The HTTP status (400, 401, 403, 404, 409, 413, 415, 422, 429).
        status: u16,
        /// The node's stable code.
        code: String,
        /// The node's explanation, for people.
        message: String,
    },
    /// The transaction was committed but its execution failed: `code` and
    /// `message` are the contract's (e.g. `not_holder`, `invoice_used`). Its
    /// nonce is used; it changed nothing else.
    #[error("transaction failed in execution ({code}): {message}")]
    Failed {
        /// The contract's (or the node's, for system operations) stable code.
        code: String,
        /// Its explanation, for people.
        message: String,
        /// The committed receipt.
        receipt: Box<Receipt>,
    },
    /// The transaction was admitted, then dropped from the node's mempool
    /// without being committed, and no block may include it now: it expired,
    /// another transaction used its nonce, or its sender was removed. An
    /// expired one's nonce is free again (the client's next submission
    /// takes it).
    #[error("transaction {tx_hash} was dropped: {}", reason.code())]
    Dropped {
        /// The transaction waited for.
        tx_hash: Hash,
        /// Why.
        reason: DropReason,
    },
    /// The transaction was admitted but not seen committed within the wait.
    /// It may still commit (until its expiry): look it up by hash.
    #[error("transaction {tx_hash} was not committed within the wait")]
    CommitTimeout {
        /// The transaction waited for.
        tx_hash: Hash,
    },
    /// No usable answer from any endpoint: connection refused or reset,
    /// request timeout, after every retry.
    #[error("could not reach the node ({endpoint}): {message}")]
    Transport {
        /// The endpoint last tried.
        endpoint: String,
        /// What failed, with its causes.
        message: String,
    },
    /// The node answered 5xx after every retry.
    #[error("node error ({status} {code}): {message}")]
    Server {
        /// The HTTP status (5xx).
        status: u16,
        /// The node's code (`internal`), or `http_<status>` for a non-JSON answer.
        code: String,
        /// The node's explanation.
        message: String,
    },
    /// An answer that does not decode as the API or the contract defines it.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// A verified read that does not verify: a state proof that does not
    /// check against its block's header, or a header its commit certificate
    /// does not show committed by a quorum of the validators.
    #[error("not verified: {0}")]
    Proof(String),
    /// A key file could not be read, written or decrypted.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The client is not set up for this call (no endpoint, no signer, bad URL).
    #[error("client configuration: {0}")]
    Config(String),
}

impl Error {
    /// The node's or the contract's stable code, for [`Error::Rejected`],
    /// [`Error::Failed`] and [`Error::Server`]; why, for [`Error::Dropped`].
    ///
    /// ```
    /// let e = trellis_sdk::Error::Rejected { status: 409, code: "nonce_replayed".into(), message: String::new() };
    /// assert_eq!(e.code(), Some("nonce_replayed"));
    /// ```
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Rejected { code, .. }
            | Error::Failed { code, .. }
            | Error::Server { code, .. } => Some(code),
            Error::Dropped { reason, .. } => Some(reason.code()),
            _ => None,
        }
    }

    /// True when trying again later may succeed: transport trouble, node
    /// errors, a full mempool, or a commit not seen in time.
    ///
    /// ```
    /// let e = trellis_sdk::Error::Transport { endpoint: "http://127.0.0.1:8080".into(), message: "refused".into() };
    /// assert!(e.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Server { .. } | Error::CommitTimeout { .. } => true,
            Error::Rejected { status, .. } => *status == 429,
            _ => false,
        }
    }
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
