//! The client: endpoints with failover, retries, reads, contract queries,
//! verified state, and signed submissions with local nonce allocation.
//!
//! Every request goes to the current endpoint; a connection error, a 429 or
//! a 5xx moves to the next endpoint and is retried after a deterministic
//! exponential backoff, up to [`RetryPolicy::max_attempts`]. Any other 4xx
//! is the node's final word and becomes [`Error::Rejected`] at once.

use crate::error::{Error, Result};
use crate::events::EventsBuilder;
use crate::receivables::Receivables;
use crate::submit::{Committed, PendingTx};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trellis_types::access::RequestSignature;
use trellis_types::api::{
    BatchSubmitted, BatchVerdict, BlockResponse, ContractQuery, ContractQueryResult, DropReason,
    ErrorBody, EvidenceList, HeaderResponse, Health, MAX_BLOCK_WAIT_MS, StateResponse,
    StatusResponse, TxProofResponse, TxStatus, TxSubmitted, ValidatorList,
};
use trellis_types::{
    Address, Bytes, Domain, DuplicateVote, Hash, Header, KeyPair, MerkleProof, Payload, PublicKey,
    QUERY_INDEX, Receipt, SignedTransaction, Transaction, ValidatorSet,
};

/// How requests are retried: on connection errors, 429 and 5xx answers,
/// with a backoff that doubles from `initial_backoff` up to `max_backoff`
/// (no jitter: the bounds are exact). 4xx admission refusals are never retried.
///
/// ```
/// use std::time::Duration;
/// use trellis_sdk::RetryPolicy;
/// let policy = RetryPolicy { max_attempts: 4, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_millis(250) };
/// assert_eq!(policy.backoff(1), Duration::from_millis(100));
/// assert_eq!(policy.backoff(2), Duration::from_millis(200));
/// assert_eq!(policy.backoff(3), Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per request, the first one included (at least 1).
    pub max_attempts: u32,
    /// Wait after the first failure.
    pub initial_backoff: Duration,
    /// Longest wait between two tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms doubling to at most 2 s (at most 1.5 s of waiting in all).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    ///
    /// ```
    /// assert_eq!(trellis_sdk::RetryPolicy::none().max_attempts, 1);
    /// ```
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait after the `failures`-th consecutive failure (1-based):
    /// `min(initial_backoff * 2^(failures-1), max_backoff)`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// An account's record on chain (state key `sys/account/<key>`): its
/// organisation, whether it administers it, and the nonce its next
/// transaction must carry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The organisation the account acts for.
    pub org: String,
    /// Whether it may add and remove its organisation's keys.
    pub org_admin: bool,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
}

impl Account {
    /// The state key of `key`'s account record.
    ///
    /// ```
    /// let key = trellis_sdk::keys::generate().public();
    /// assert!(trellis_sdk::Account::state_key(&key).starts_with(b"sys/account/"));
    /// ```
    pub fn state_key(key: &PublicKey) -> Vec<u8> {
        [b"sys/account/".as_slice(), &key.0].concat()
    }
}

/// A state value checked against the header of the committed block it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedState {
    /// The raw state key.
    pub key: Vec<u8>,
    /// `None`: the key is proven absent.
    pub value: Option<Vec<u8>>,
    /// The committed height it was read at.
    pub height: u64,
    /// That block's time (ms since the Unix epoch): how old "the latest"
    /// is. A node can always offer an older state than its newest, so a
    /// reader that acts on the latest bounds its age (the chain makes a
    /// block at least every `idle_block_interval_ms`), as
    /// [`ClientBuilder::max_staleness`] does.
    pub timestamp_ms: u64,
    /// The state root of the block at `height`, which the proof checks against.
    pub state_root: Hash,
    /// The hash of that block's header.
    pub block_hash: Hash,
}

impl VerifiedState {
    /// The value decoded from its canonical encoding.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, me: trellis_types::PublicKey) -> trellis_sdk::Result<()> {
    /// let state = client.state_with_proof(&trellis_sdk::Account::state_key(&me)).await?;
    /// let account: Option<trellis_sdk::Account> = state.decode()?;
    /// # Ok(()) }
    /// ```
    pub fn decode<T: Serialize + DeserializeOwned>(&self) -> Result<Option<T>> {
        self.value
            .as_deref()
            .map(|v| {
                trellis_types::decode(v).map_err(|e| Error::Decode(format!("state value: {e}")))
            })
            .transpose()
    }
}

/// Checks a `GET /v1/state/{key}?proof=true` answer against `header`, a
/// header of the block at the answer's height that the caller trusts.
/// [`Client::state_with_proof`] does this with the header it fetches.
///
/// ```no_run
/// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
/// let answer = client.state(b"sys/params", None, true).await?;
/// let block = client.block(answer.height).await?;
/// let verified = trellis_sdk::verify_state(&answer, &block.block.header)?;
/// # Ok(()) }
/// ```
pub fn verify_state(answer: &StateResponse, header: &Header) -> Result<VerifiedState> {
    let proof = answer
        .proof
        .as_ref()
        .ok_or_else(|| Error::Proof("the answer carries no proof".into()))?;
    if header.height != answer.height || proof.height != answer.height {
        return Err(Error::Proof(format!(
            "heights differ: answer {}, proof {}, header {}",
            answer.height, proof.height, header.height
        )));
    }
    if proof.key != answer.key || proof.value != answer.value {
        return Err(Error::Proof("the proof is for another key or value".into()));
    }
    if answer.key.0.starts_with(QUERY_INDEX) {
        // Outside the tree: a proof of absence from it says nothing of them.
        return Err(Error::Proof(
            "query-index keys (q/...) are not in the state tree: no proof covers them".into(),
        ));
    }
    if header.state_root != proof.state_root || header.state_root != answer.state_root {
        return Err(Error::Proof(format!(
            "state root {} is not the committed header's {}",
            proof.state_root, header.state_root
        )));
    }
    trellis_types::verify_state_proof(
        &header.state_root,
        &answer.key,
        answer.value.as_deref(),
        &proof.proof,
    )
    .map_err(|e| Error::Proof(e.to_string()))?;
    Ok(VerifiedState {
        key: answer.key.0.clone(),
        value: answer.value.as_ref().map(|v| v.0.clone()),
        height: answer.height,
        timestamp_ms: header.timestamp_ms,
        state_root: header.state_root,
        block_hash: header.hash(),
    })
}

/// A committed transaction and its receipt, checked against the header of
/// the block that holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTransaction {
    /// The signed transaction, its signature checked.
    pub tx: SignedTransaction,
    /// What executing it did.
    pub receipt: Receipt,
    /// The height of the block that holds it.
    pub height: u64,
    /// Its position in that block, as the node states it: the proofs bind
    /// the transaction and its receipt to the block, but the header does not
    /// commit to the block's transaction count, so a place whose path is the
    /// same in a smaller tree (the last of an odd number) proves as well.
    pub index: u32,
    /// The hash of that block's header.
    pub block_hash: Hash,
}

/// Checks a `GET /v1/transactions/{hash}/proof` answer for transaction
/// `hash` against `header`, a header of the block at the answer's height
/// that the caller trusts: the transaction hashes to `hash` and carries its
/// sender's signature, the receipt is its receipt, and both are under the
/// header's roots at the same place. [`Client::transaction_with_proof`]
/// does this with a header it verifies.
///
/// ```no_run
/// # async fn demo(client: trellis_sdk::Client, hash: trellis_types::Hash) -> trellis_sdk::Result<()> {
/// if let Some(answer) = client.transaction_proof(&hash).await? {
///     let header = client.verified_header(answer.height).await?;
///     let verified = trellis_sdk::verify_transaction(&answer, &hash, &header)?;
///     println!("{:?} at {}:{}", verified.receipt.status, verified.height, verified.index);
/// }
/// # Ok(()) }
/// ```
pub fn verify_transaction(
    answer: &TxProofResponse,
    hash: &Hash,
    header: &Header,
) -> Result<VerifiedTransaction> {
    if header.height != answer.height {
        return Err(Error::Proof(format!(
            "the answer is for height {}, the header for {}",
            answer.height, header.height
        )));
    }
    let tx = &answer.tx;
    if tx.hash() != *hash || answer.receipt.tx != *hash {
        return Err(Error::Proof(format!(
            "the answer is for another transaction than {hash}"
        )));
    }
    tx.verify()
        .map_err(|e| Error::Proof(format!("transaction {hash}: {e}")))?;
    let place = |proof: &MerkleProof| (proof.index, proof.total);
    if place(&answer.tx_proof) != place(&answer.receipt_proof)
        || answer.tx_proof.index != answer.index
    {
        return Err(Error::Proof(
            "the transaction's and the receipt's proofs are for different places".into(),
        ));
    }
    let under = |proof: &MerkleProof, domain, leaf: &Hash, root: &Hash, what: &str| match proof
        .root(domain, leaf)
    {
        Ok(computed) if computed == *root => Ok(()),
        Ok(_) => Err(Error::Proof(format!(
            "the {what} is not under the header's {what}s root"
        ))),
        Err(e) => Err(Error::Proof(format!("the {what}'s proof: {e}"))),
    };
    let leaf = trellis_types::block::tx_leaf(hash, &tx.signature);
    under(
        &answer.tx_proof,
        Domain::TxRoot,
        &leaf,
        &header.tx_root,
        "transaction",
    )?;
    under(
        &answer.receipt_proof,
        Domain::ReceiptRoot,
        &answer.receipt.hash(),
        &header.receipts_root,
        "receipt",
    )?;
    Ok(VerifiedTransaction {
        tx: tx.clone(),
        receipt: answer.receipt.clone(),
        height: answer.height,
        index: answer.index,
        block_hash: header.hash(),
    })
}

/// Checks a `GET /v1/blocks/{height}` answer against `header`, a header of
/// the block at that height that the caller trusts: the answer's header is
/// that one, and its transactions (with their signatures), the parent's
/// certificate it carries and its receipts are the ones the header commits
/// to, one receipt per transaction and in order. The signatures themselves
/// are the validators' to have checked: the header binds each to its
/// transaction. [`Client::verified_block`] does this with a header it
/// verifies.
///
/// ```no_run
/// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
/// let block = client.block(42).await?;
/// let header = client.verified_header(42).await?;
/// trellis_sdk::verify_block(&block, &header)?;
/// # Ok(()) }
/// ```
pub fn verify_block(answer: &BlockResponse, header: &Header) -> Result<()> {
    let block = &answer.block;
    if block.header != *header || answer.hash != header.hash() {
        return Err(Error::Proof(format!(
            "block {} is not the one whose header is trusted",
            block.header.height
        )));
    }
    let tx_hashes = block.tx_hashes();
    if let Some(part) = block.mismatched_body(&tx_hashes) {
        return Err(Error::Proof(format!("block {}: {part}", header.height)));
    }
    let receipts_match = answer.receipts.len() == tx_hashes.len()
        && answer
            .receipts
            .iter()
            .zip(&tx_hashes)
            .all(|(r, h)| r.tx == *h)
        && trellis_types::block::receipts_root(&answer.receipts) == header.receipts_root;
    if !receipts_match {
        return Err(Error::Proof(format!(
            "block {}: the receipts are not the ones receipts_root commits to",
            header.height
        )));
    }
    Ok(())
}

/// Checks a `GET /v1/blocks/{height}/header` answer: the header hashes to
/// the answer's hash and is of chain `chain_id`, and its commit certificate
/// carries precommits for exactly that block from more than two thirds of
/// `validators`. [`Client::verified_header`] does this with the validators
/// the client trusts. The genesis block, decided by no votes, never passes.
///
/// ```no_run
/// # async fn demo(client: trellis_sdk::Client, validators: trellis_types::ValidatorSet) -> trellis_sdk::Result<()> {
/// let answer = client.header(42).await?;
/// trellis_sdk::verify_header(&answer, &client.chain_id().await?, &validators)?;
/// # Ok(()) }
/// ```
pub fn verify_header(
    answer: &HeaderResponse,
    chain_id: &str,
    validators: &ValidatorSet,
) -> Result<()> {
    let header = &answer.header;
    if header.hash() != answer.hash {
        return Err(Error::Proof("the header does not hash to its hash".into()));
    }
    if header.chain_id != chain_id {
        return Err(Error::Proof(format!(
            "the header is of chain `{}`, not `{chain_id}`",
            header.chain_id
        )));
    }
    let commit = &answer.commit;
    if commit.height != header.height || commit.block != answer.hash {
        return Err(Error::Proof(format!(
            "the certificate is for block {} at height {}, not this one",
            commit.block, commit.height
        )));
    }
    validators
        .verify_certificate(chain_id, commit)
        .map_err(|e| Error::Proof(format!("block {}: {e}", header.height)))
}

/// Builds a [`Client`].
///
/// ```no_run
/// use std::time::Duration;
/// let client = trellis_sdk::Client::builder()
///     .endpoint("http://127.0.0.1:8080")
///     .endpoint("http://127.0.0.1:8081") // failover
///     .signer(trellis_sdk::keys::load("ops.pem", None)?)
///     .request_timeout(Duration::from_secs(5))
///     .commit_timeout(Duration::from_secs(20))
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    signer: Option<KeyPair>,
    request_timeout: Duration,
    commit_timeout: Duration,
    tx_ttl: Duration,
    retry: RetryPolicy,
    chain_id: Option<String>,
    validators: Option<Vec<PublicKey>>,
    max_response_bytes: usize,
    max_staleness: Option<Duration>,
    root_certificates: Vec<Vec<u8>>,
}

impl ClientBuilder {
    /// The default of [`ClientBuilder::max_response_bytes`]: a node's
    /// largest answer, a full block (`max_block_bytes`, 8 MiB by default)
    /// as JSON with its receipts, is a few times its size.
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 128 << 20;
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoints: Vec::new(),
            signer: None,
            request_timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(30),
            tx_ttl: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            chain_id: None,
            validators: None,
            max_response_bytes: ClientBuilder::DEFAULT_MAX_RESPONSE_BYTES,
            max_staleness: None,
            root_certificates: Vec::new(),
        }
    }
}

impl ClientBuilder {
    /// Adds a node's API base URL, e.g. `http://127.0.0.1:8080`. The first is
    /// used until it fails; then the next, in turn.
    ///
    /// ```
    /// let builder = trellis_sdk::Client::builder().endpoint("http://10.0.0.1:8080").endpoint("http://10.0.0.2:8080");
    /// ```
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints.push(url.into());
        self
    }

    /// Adds several endpoints.
    ///
    /// ```
    /// let builder = trellis_sdk::Client::builder().endpoints(["http://10.0.0.1:8080", "http://10.0.0.2:8080"]);
    /// ```
    pub fn endpoints<I: IntoIterator<Item = S>, S: Into<String>>(mut self, urls: I) -> Self {
        self.endpoints.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The account key that signs submissions (needed only to submit).
    ///
    /// ```no_run
    /// let builder = trellis_sdk::Client::builder().signer(trellis_sdk::keys::load("ops.pem", None)?);
    /// # Ok::<(), trellis_sdk::keys::KeyError>(())
    /// ```
    pub fn signer(mut self, key: KeyPair) -> Self {
        self.signer = Some(key);
        self
    }

    /// Longest time for one HTTP request (default 10 s). Event streams have none.
    ///
    /// ```
    /// let builder = trellis_sdk::Client::builder().request_timeout(std::time::Duration::from_secs(3));
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long [`PendingTx::wait`] and the typed calls wait for a commit (default 30 s).
    ///
    /// ```
    /// let builder = trellis_sdk::Client::builder().commit_timeout(std::time::Duration::from_secs(60));
    /// ```
    pub fn commit_timeout(mut self, timeout: Duration) -> Self {
        self.commit_timeout = timeout;
        self
    }

    /// How long a signed transaction stays valid (default 120 s; the chain caps it).
    ///
    /// ```
    /// let builder = trellis_sdk::Client::builder().tx_ttl(std::time::Duration::from_secs(300));
    /// ```
    pub fn tx_ttl(mut self, ttl: Duration) -> Self {
        self.tx_ttl = ttl;
        self
    }

    /// How failed requests are retried (see [`RetryPolicy`]).
    ///
    /// ```
    /// let builder = trellis_sdk::Client::builder().retry(trellis_sdk::RetryPolicy::none());
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The longest answer taken (default
    /// [`ClientBuilder::DEFAULT_MAX_RESPONSE_BYTES`]): a longer one is
    /// [`Error::Decode`] rather than memory held for whatever an endpoint sends.
    ///
    /// ```
    /// let builder = trellis_sdk::Client::builder().max_response_bytes(1 << 20);
    /// ```
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The chain id to sign for; by default it is read once from `/status`.
    ///
    /// ```
    /// let builder = trellis_sdk::Client::builder().chain_id("trellis-dev");
    /// ```
    pub fn chain_id(mut self, chain_id: impl Into<String>) -> Self {
        self.chain_id = Some(chain_id.into());
        self
    }

    /// The consensus keys of the chain's validators, as its genesis file
    /// names them: verified reads ([`Client::state_with_proof`],
    /// [`Client::verified_header`]) accept a header only with precommits for
    /// it from more than two thirds of these. Without them the client asks
    /// the node it reads from (`GET /v1/validators`) once and keeps the
    /// answer, which trusts that node for the set: name them wherever one
    /// node's word is not enough, with [`ClientBuilder::chain_id`] from the
    /// same genesis (the same keys may sign for another chain; `build`
    /// refuses validators without a chain id).
    ///
    /// ```
    /// let validator = trellis_sdk::keys::generate().public();
    /// let builder = trellis_sdk::Client::builder()
    ///     .chain_id("trellis-dev")
    ///     .validators([validator]);
    /// ```
    pub fn validators<I: IntoIterator<Item = PublicKey>>(mut self, keys: I) -> Self {
        self.validators = Some(keys.into_iter().collect());
        self
    }

    /// The oldest a verified read of the latest state may be
    /// ([`Client::state_with_proof`] and the reads built on it): an answer
    /// from a block older than this, by the block's time and this machine's
    /// clock, is an [`Error::Proof`]. A node can answer from any height it
    /// keeps, so without this "latest" is only as new as the node chooses.
    /// By default not checked; [`VerifiedState::timestamp_ms`] says the age.
    ///
    /// ```
    /// let builder = trellis_sdk::Client::builder().max_staleness(std::time::Duration::from_secs(30));
    /// ```
    pub fn max_staleness(mut self, max: Duration) -> Self {
        self.max_staleness = Some(max);
        self
    }

    /// Trusts the certificate authority in `pem` (PEM, one or more
    /// certificates) for `https` endpoints, beside the public roots
    /// (Mozilla's, built in): a consortium's or a member's own CA in front
    /// of its nodes. The node serves plain HTTP; TLS is the proxy's before it.
    ///
    /// ```no_run
    /// let ca = std::fs::read("consortium-ca.pem").unwrap();
    /// let builder = trellis_sdk::Client::builder()
    ///     .endpoint("https://node.bank-first.example:8443")
    ///     .root_certificate(ca);
    /// ```
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(pem.into());
        self
    }

    /// The client; [`Error::Config`] without an endpoint, with a URL that is
    /// not http(s), with an empty list of validators or with validators but
    /// no chain id.
    ///
    /// ```
    /// let client = trellis_sdk::Client::builder().endpoint("http://127.0.0.1:8080").build().unwrap();
    /// assert_eq!(client.endpoint(), "http://127.0.0.1:8080");
    /// assert!(trellis_sdk::Client::builder().build().is_err());
    /// assert!(trellis_sdk::Client::builder().endpoint("ftp://x").build().is_err());
    /// ```
    pub fn build(self) -> Result<Client> {
        if self.endpoints.is_empty() {
            return Err(Error::Config(
                "no endpoint: add one with .endpoint(url)".into(),
            ));
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| {
                let url = reqwest::Url::parse(e)
                    .map_err(|err| Error::Config(format!("endpoint `{e}` is not a URL: {err}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(Error::Config(format!("endpoint `{e}` is not http(s)")));
                }
                Ok(e.trim_end_matches('/').to_owned())
            })
            .collect::<Result<Vec<_>>>()?;
        let mut http = reqwest::Client::builder().connect_timeout(self.request_timeout);
        for pem in &self.root_certificates {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Error::Config("a root certificate is not PEM certificates".into())
                })?;
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let chain_id = tokio::sync::OnceCell::new();
        if let Some(id) = self.chain_id {
            let _ = chain_id.set(id);
        }
        if self.validators.is_some() && chain_id.get().is_none() {
            // Headers are checked for the chain id: the same validators may
            // sign for another chain (a test chain, a relaunch).
            return Err(Error::Config(
                "validators without a chain id: set .chain_id(..) from the same genesis".into(),
            ));
        }
        let validators = tokio::sync::OnceCell::new();
        if let Some(keys) = self.validators {
            let set = ValidatorSet::new(keys)
                .ok_or_else(|| Error::Config("an empty list of validators".into()))?;
            let _ = validators.set(set);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                current: AtomicUsize::new(0),
                retry: RetryPolicy {
                    max_attempts: self.retry.max_attempts.max(1),
                    ..self.retry
                },
                request_timeout: self.request_timeout,
                max_response_bytes: self.max_response_bytes,
                commit_timeout: self.commit_timeout,
                tx_ttl: self.tx_ttl,
                signer: self.signer,
                chain_id,
                validators,
                verified_headers: Mutex::new(BTreeMap::new()),
                max_staleness: self.max_staleness,
                nonces: tokio::sync::Mutex::new(NonceState::default()),
            }),
        })
    }
}

/// A Trellis node client. Cheap to clone (clones share connections and
/// the signer's nonce sequence); safe to use from many tasks at once.
///
/// ```no_run
/// # async fn demo() -> trellis_sdk::Result<()> {
/// let client = trellis_sdk::Client::builder().endpoint("http://127.0.0.1:8080").build()?;
/// let status = client.status().await?;
/// println!("{} at height {}", status.chain_id, status.status.height);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    endpoints: Vec<String>,
    current: AtomicUsize,
    pub(crate) retry: RetryPolicy,
    request_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) commit_timeout: Duration,
    tx_ttl: Duration,
    signer: Option<KeyPair>,
    chain_id: tokio::sync::OnceCell<String>,
    /// Whose precommits make a header trusted (see [`ClientBuilder::validators`]).
    validators: tokio::sync::OnceCell<ValidatorSet>,
    /// Headers already verified, by height: the newest [`VERIFIED_HEADERS`].
    verified_headers: Mutex<BTreeMap<u64, Header>>,
    max_staleness: Option<Duration>,
    nonces: tokio::sync::Mutex<NonceState>,
}

/// Verified headers a client keeps: reads at the same few heights, the
/// newest ones, check their header once.
const VERIFIED_HEADERS: usize = 64;

/// The signer's nonces: read from the chain once, then handed out locally.
#[derive(Debug, Default)]
struct NonceState {
    /// The next never-used nonce; `None` until read from the chain (again).
    next: Option<u64>,
    /// Nonces handed out whose transaction was refused: used first, so no gap stays.
    released: BTreeSet<u64>,
}

pub(crate) enum RequestBody {
    None,
    Json(Vec<u8>),
    Binary(Vec<u8>),
}

/// A successful (2xx) answer.
pub(crate) struct Answer {
    pub(crate) body: Vec<u8>,
}

/// How many times one submission may pick a new nonce after nonce conflicts.
const MAX_NONCE_RETRIES: u32 = 64;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The guard, also after a panic elsewhere (what it guards stays whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An answer's body, or `None` once it is longer than `max` bytes (read no further).
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    max: usize,
) -> reqwest::Result<Option<Vec<u8>>> {
    let length = response.content_length();
    if length.is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    // Sized once: a block of megabytes grown chunk by chunk was copied and
    // page-faulted over and over.
    let mut body = Vec::with_capacity(length.map_or(0, |n| n as usize));
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// The node's refusal as an [`Error`], from its status and `{"code", "message"}` body.
pub(crate) fn refusal(status: u16, body: &[u8]) -> Error {
    let error = serde_json::from_slice::<ErrorBody>(body).unwrap_or_else(|_| ErrorBody {
        code: format!("http_{status}"),
        message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    });
    refusal_of(status, error)
}

/// The error for a refusal with `status` and the node's error body.
fn refusal_of(status: u16, ErrorBody { code, message }: ErrorBody) -> Error {
    if status >= 500 {
        Error::Server {
            status,
            code,
            message,
        }
    } else {
        Error::Rejected {
            status,
            code,
            message,
        }
    }
}

/// One transaction's verdict out of a batch answer, as [`Client::send_signed`] would give it.
fn batch_verdict(tx: &SignedTransaction, verdict: BatchVerdict) -> Result<Hash> {
    match verdict {
        BatchVerdict {
            tx_hash: Some(hash),
            error: None,
            ..
        } if hash == tx.hash() => Ok(hash),
        BatchVerdict {
            status,
            tx_hash: None,
            error: Some(error),
        } => match refusal_of(status, error) {
            Error::Rejected { code, .. } if code == "already_known" => Ok(tx.hash()),
            e => Err(e),
        },
        other => Err(Error::Decode(format!(
            "verdict {other:?} for transaction {}",
            tx.hash()
        ))),
    }
}

/// `request` (to `path` under the endpoint, with `body`) with an
/// `Authorization` header signed by `signer` for its chain, now; unchanged
/// without a signer. Each attempt is signed afresh: a node takes a
/// signature once.
pub(crate) fn sign(
    mut request: reqwest::Request,
    path: &str,
    signer: Option<&(KeyPair, String)>,
    body: &[u8],
) -> reqwest::Request {
    let Some((key, chain_id)) = signer else {
        return request;
    };
    let path_and_query = match request.url().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let auth = RequestSignature::sign(
        key,
        chain_id,
        request.method().as_str(),
        &path_and_query,
        body,
        now_ms(),
    );
    if let Ok(value) = reqwest::header::HeaderValue::from_str(&auth.header_value()) {
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, value);
    }
    request
}

fn decode_json<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Decode(format!("{what}: {e}")))
}

impl Client {
    /// Starts a [`ClientBuilder`].
    ///
    /// ```
    /// let client = trellis_sdk::Client::builder().endpoint("http://127.0.0.1:8080").build().unwrap();
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The signer's public key, if the client has a signer.
    ///
    /// ```
    /// let key = trellis_sdk::keys::generate();
    /// let client = trellis_sdk::Client::builder().endpoint("http://127.0.0.1:8080").signer(key.clone()).build().unwrap();
    /// assert_eq!(client.signer(), Some(key.public()));
    /// ```
    pub fn signer(&self) -> Option<PublicKey> {
        self.inner.signer.as_ref().map(KeyPair::public)
    }

    /// The endpoint requests go to now (it moves on when one fails).
    ///
    /// ```
    /// let client = trellis_sdk::Client::builder().endpoint("http://127.0.0.1:8080/").build().unwrap();
    /// assert_eq!(client.endpoint(), "http://127.0.0.1:8080");
    /// ```
    pub fn endpoint(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        &self.inner.endpoints[i]
    }

    pub(crate) fn fail_over(&self) {
        if self.inner.endpoints.len() > 1 {
            self.inner.current.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One request with retries and failover; 2xx answers only.
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: RequestBody,
    ) -> Result<Answer> {
        let timeout = self.inner.request_timeout;
        self.request_with(method, path, query, body, None, timeout)
            .await
    }

    /// [`Client::request`] with an `Accept` header and its own timeout.
    async fn request_with(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: RequestBody,
        accept: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer> {
        let retry = &self.inner.retry;
        let signer = self.request_signer(path).await?;
        let mut failures = 0;
        loop {
            let endpoint = self.endpoint().to_owned();
            let mut request = self
                .inner
                .http
                .request(method.clone(), format!("{endpoint}{path}"))
                .timeout(timeout)
                .query(query);
            if let Some(accept) = accept {
                request = request.header(reqwest::header::ACCEPT, accept);
            }
            let (content_type, bytes): (_, &[u8]) = match &body {
                RequestBody::None => (None, &[]),
                RequestBody::Json(bytes) => (Some("application/json"), bytes),
                RequestBody::Binary(bytes) => (Some("application/octet-stream"), bytes),
            };
            if let Some(content_type) = content_type {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(bytes.to_vec());
            }
            let max = self.inner.max_response_bytes;
            let sent = request
                .build()
                .map(|request| sign(request, path, signer.as_ref(), bytes));
            let outcome = match sent {
                Ok(request) => self.inner.http.execute(request).await,
                Err(e) => Err(e),
            };
            let outcome = match outcome {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match read_body(response, max).await {
                        Ok(Some(body)) => Ok((status, body)),
                        Ok(None) => {
                            return Err(Error::Decode(format!(
                                "{path}: an answer longer than {max} bytes \
                                 (ClientBuilder::max_response_bytes)"
                            )));
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let error = match outcome {
                Ok((status, body)) if status < 300 => {
                    return Ok(Answer { body });
                }
                Ok((status, body)) if status == 429 || status >= 500 => refusal(status, &body),
                Ok((status, body)) => return Err(refusal(status, &body)),
                Err(e) => Error::Transport {
                    endpoint,
                    message: transport_message(&e),
                },
            };
            failures += 1;
            if failures >= retry.max_attempts {
                return Err(error);
            }
            self.fail_over();
            tokio::time::sleep(retry.backoff(failures)).await;
        }
    }

    /// The key and chain id requests to `path` are signed with: the
    /// signer's, for every request but `/status` (public, and where the
    /// chain id is read) and submissions (whose transactions are signed).
    pub(crate) async fn request_signer(&self, path: &str) -> Result<Option<(KeyPair, String)>> {
        let unsigned = ["/status", "/v1/transactions", "/v1/transactions/batch"];
        match &self.inner.signer {
            Some(key) if !unsigned.contains(&path) => {
                Ok(Some((key.clone(), self.chain_id().await?)))
            }
            _ => Ok(None),
        }
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let answer = self
            .request(reqwest::Method::GET, path, query, RequestBody::None)
            .await?;
        decode_json(path, &answer.body)
    }

    /// [`Client::get_json`], with a 404 answer as `None`.
    pub(crate) async fn get_json_if_found<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>> {
        match self.get_json(path, &[]).await {
            Ok(answer) => Ok(Some(answer)),
            Err(Error::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /status`: chain id, genesis hash, height, head hash and root, and the node's own state.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let status = client.status().await?;
    /// println!("{} at {} (syncing: {})", status.chain_id, status.status.height, status.status.syncing);
    /// # Ok(()) }
    /// ```
    pub async fn status(&self) -> Result<StatusResponse> {
        self.get_json("/status", &[]).await
    }

    /// `GET /v1/evidence`: proofs that validators equivocated, as this node
    /// saw them, in order of height and validator: from `from_height` on,
    /// or after `after`'s proof at that height (the last of a page), at most
    /// 100. Each is two signed votes; [`DuplicateVote::check`] verifies one.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// for proof in client.evidence(0, None).await? {
    ///     assert!(proof.check().is_ok());
    ///     println!("{} equivocated at {}", proof.second.voter, proof.second.data.height);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn evidence(
        &self,
        from_height: u64,
        after: Option<&PublicKey>,
    ) -> Result<Vec<DuplicateVote>> {
        let mut query = vec![("from_height", from_height.to_string())];
        if let Some(validator) = after {
            query.push(("after_validator", validator.to_string()));
        }
        let list: EvidenceList = self.get_json("/v1/evidence", &query).await?;
        Ok(list.evidence)
    }

    /// `GET /v1/validators`: the validator set the genesis fixed, and the
    /// votes a block needs.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let set = client.validators().await?;
    /// for proof in client.evidence(0, None).await? {
    ///     assert!(proof.check().is_ok() && set.contains(&proof.second.voter));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn validators(&self) -> Result<ValidatorList> {
        self.get_json("/v1/validators", &[]).await
    }

    /// `GET /health`: answers while the node's API runs.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// assert_eq!(client.health().await?.status, "ok");
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> Result<Health> {
        self.get_json("/health", &[]).await
    }

    /// The latest committed block with its commit certificate and receipts.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let head = client.latest_block().await?;
    /// println!("height {} with {} transactions", head.block.header.height, head.block.txs.len());
    /// # Ok(()) }
    /// ```
    pub async fn latest_block(&self) -> Result<BlockResponse> {
        self.get_json("/v1/blocks/latest", &[]).await
    }

    /// The committed block at `height` (a 404 `not_found` above the head).
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let genesis = client.block(0).await?;
    /// println!("genesis block {}", genesis.hash);
    /// # Ok(()) }
    /// ```
    pub async fn block(&self, height: u64) -> Result<BlockResponse> {
        self.get_json(&format!("/v1/blocks/{height}"), &[]).await
    }

    /// The committed block at `height` with its receipts, verified: its
    /// header committed by the validators ([`Client::verified_header`]) and
    /// its body and receipts the ones that header commits to
    /// ([`verify_block`]). An answer that does not verify is an
    /// [`Error::Proof`].
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let block = client.verified_block(42).await?;
    /// println!("{} transactions, all as committed", block.block.txs.len());
    /// # Ok(()) }
    /// ```
    pub async fn verified_block(&self, height: u64) -> Result<BlockResponse> {
        let answer = self.block(height).await?;
        let header = self.verified_header(height).await?;
        verify_block(&answer, &header)?;
        if height > 0 {
            // The certificate it carries is checked too, not only the one
            // that verified the header: a caller may keep it as the proof.
            let carried = HeaderResponse {
                hash: answer.hash,
                header,
                commit: answer.commit.clone(),
            };
            verify_header(
                &carried,
                &self.chain_id().await?,
                self.trusted_validators().await?,
            )?;
        }
        Ok(answer)
    }

    /// The committed block at `height` once it commits: waits up to `wait`
    /// (at most 30 s) for a block above the head, and answers `None` if it
    /// has not committed by then. Fetched in the canonical encoding, which
    /// is smaller and cheaper to read than JSON: what a follower of the
    /// chain calls in a loop.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let mut height = client.status().await?.status.height + 1;
    /// loop {
    ///     let wait = std::time::Duration::from_secs(10);
    ///     if let Some(block) = client.wait_for_block(height, wait).await? {
    ///         println!("{height}: {} transactions", block.block.txs.len());
    ///         height += 1;
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn wait_for_block(
        &self,
        height: u64,
        wait: Duration,
    ) -> Result<Option<BlockResponse>> {
        let path = format!("/v1/blocks/{height}");
        let wait_ms = u64::try_from(wait.as_millis())
            .unwrap_or(u64::MAX)
            .min(MAX_BLOCK_WAIT_MS);
        let query = [("wait_ms", wait_ms.to_string())];
        // The node answers when the block commits or the wait ends.
        let timeout = self.inner.request_timeout + Duration::from_millis(wait_ms);
        let answer = self
            .request_with(
                reqwest::Method::GET,
                &path,
                &query,
                RequestBody::None,
                Some("application/octet-stream"),
                timeout,
            )
            .await;
        match answer {
            Ok(answer) => trellis_types::decode(&answer.body)
                .map(Some)
                .map_err(|e| Error::Decode(format!("{path}: {e}"))),
            Err(Error::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The committed block with header hash `hash`.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, hash: trellis_types::Hash) -> trellis_sdk::Result<()> {
    /// let block = client.block_by_hash(&hash).await?;
    /// # Ok(()) }
    /// ```
    pub async fn block_by_hash(&self, hash: &Hash) -> Result<BlockResponse> {
        self.get_json(&format!("/v1/blocks/by-hash/{hash}"), &[])
            .await
    }

    /// Where a transaction is: `None` when the node knows nothing of it.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, hash: trellis_types::Hash) -> trellis_sdk::Result<()> {
    /// use trellis_types::api::TxStatus;
    /// match client.transaction(&hash).await? {
    ///     Some(TxStatus::Committed { height, receipt, .. }) => println!("at {height}: {:?}", receipt.status),
    ///     Some(TxStatus::Pending) => println!("waiting"),
    ///     Some(TxStatus::Dropped { reason }) => println!("dropped: {}", reason.code()),
    ///     None => println!("unknown"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn transaction(&self, hash: &Hash) -> Result<Option<TxStatus>> {
        self.get_json_if_found(&format!("/v1/transactions/{hash}"))
            .await
    }

    /// `GET /v1/transactions/{hash}/proof`: a committed transaction with its
    /// receipt and their proofs; `None` if the node has not committed it.
    /// Nothing is verified: see [`Client::transaction_with_proof`].
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, hash: trellis_types::Hash) -> trellis_sdk::Result<()> {
    /// if let Some(answer) = client.transaction_proof(&hash).await? {
    ///     println!("at {}:{}", answer.height, answer.index);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn transaction_proof(&self, hash: &Hash) -> Result<Option<TxProofResponse>> {
        self.get_json_if_found(&format!("/v1/transactions/{hash}/proof"))
            .await
    }

    /// A committed transaction and its receipt, verified: both must be
    /// under the roots of the header of their block, and the header
    /// committed by the validators ([`Client::verified_header`]). `None` if
    /// the node answers that it has not committed it, which proves nothing
    /// (ask another node, or later). An answer that does not verify is an
    /// [`Error::Proof`].
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, hash: trellis_types::Hash) -> trellis_sdk::Result<()> {
    /// if let Some(verified) = client.transaction_with_proof(&hash).await? {
    ///     println!("{:?}, proven in block {}", verified.receipt.status, verified.block_hash);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn transaction_with_proof(&self, hash: &Hash) -> Result<Option<VerifiedTransaction>> {
        let Some(answer) = self.transaction_proof(hash).await? else {
            return Ok(None);
        };
        let header = self.verified_header(answer.height).await?;
        verify_transaction(&answer, hash, &header).map(Some)
    }

    /// `GET /v1/blocks/{height}/header`: a committed block's header and the
    /// certificate that committed it, without its body. Nothing is
    /// verified: see [`Client::verified_header`].
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let answer = client.header(42).await?;
    /// println!("{}: state root {}", answer.hash, answer.header.state_root);
    /// # Ok(()) }
    /// ```
    pub async fn header(&self, height: u64) -> Result<HeaderResponse> {
        self.get_json(&format!("/v1/blocks/{height}/header"), &[])
            .await
    }

    /// The header of the committed block at `height`, verified as a light
    /// client verifies it: for this chain, and committed by precommits from
    /// more than two thirds of the validators the client trusts
    /// ([`ClientBuilder::validators`]). The genesis block, which no votes
    /// decide, is verified as the parent that the verified block 1 names. A
    /// header that does not verify is an [`Error::Proof`]. The newest
    /// verified headers are kept, so reads at one height check it once.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let header = client.verified_header(42).await?;
    /// println!("state root {} at height 42", header.state_root);
    /// # Ok(()) }
    /// ```
    pub async fn verified_header(&self, height: u64) -> Result<Header> {
        if let Some(header) = lock(&self.inner.verified_headers).get(&height) {
            return Ok(header.clone());
        }
        let chain_id = self.chain_id().await?;
        let validators = self.trusted_validators().await?;
        let answer = self.header(height).await?;
        if answer.header.height != height {
            return Err(Error::Proof(format!(
                "asked for the header at height {height}, given one at {}",
                answer.header.height
            )));
        }
        if height == 0 {
            let child = self.header(1).await.map_err(|e| match e {
                Error::Rejected { status: 404, .. } => Error::Proof(
                    "the genesis header is verified through block 1, not committed yet".into(),
                ),
                e => e,
            })?;
            verify_header(&child, &chain_id, validators)?;
            if child.header.parent != answer.header.hash() {
                return Err(Error::Proof(
                    "the genesis header is not the parent that block 1 names".into(),
                ));
            }
        } else {
            verify_header(&answer, &chain_id, validators)?;
        }
        let mut verified = lock(&self.inner.verified_headers);
        verified.insert(height, answer.header.clone());
        if verified.len() > VERIFIED_HEADERS {
            verified.pop_first();
        }
        Ok(answer.header)
    }

    /// The validators whose precommits make a header trusted: the builder's,
    /// else the node's answer, asked for once.
    async fn trusted_validators(&self) -> Result<&ValidatorSet> {
        self.inner
            .validators
            .get_or_try_init(|| async {
                let list = self.validators().await?;
                let keys = list.validators.iter().map(|v| v.consensus_key).collect();
                ValidatorSet::new(keys)
                    .ok_or_else(|| Error::Decode("the node names no validators".into()))
            })
            .await
    }

    /// `GET /v1/state/{key}`: the raw answer, at `height` (default latest),
    /// with a proof when `proof` is set. Nothing is verified: see
    /// [`Client::state_with_proof`].
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let answer = client.state(b"sys/params", Some(10), false).await?;
    /// # Ok(()) }
    /// ```
    pub async fn state(
        &self,
        key: &[u8],
        height: Option<u64>,
        proof: bool,
    ) -> Result<StateResponse> {
        let mut query = vec![("proof", proof.to_string())];
        if let Some(h) = height {
            query.push(("height", h.to_string()));
        }
        self.get_json(&format!("/v1/state/{}", hex::encode(key)), &query)
            .await
    }

    /// A state value at the latest committed height, verified: its Merkle
    /// proof must check against the state root in the header of the block at
    /// that height, and the header must be committed by the validators
    /// ([`Client::verified_header`]). A value that does not verify is an
    /// [`Error::Proof`], never a value.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let params = client.state_with_proof(b"sys/params").await?;
    /// println!("{} bytes proven at height {}", params.value.map_or(0, |v| v.len()), params.height);
    /// # Ok(()) }
    /// ```
    pub async fn state_with_proof(&self, key: &[u8]) -> Result<VerifiedState> {
        self.verified_state(key, None).await
    }

    /// [`Client::state_with_proof`] at a given committed height.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let then = client.state_with_proof_at(b"sys/params", 0).await?;
    /// # Ok(()) }
    /// ```
    pub async fn state_with_proof_at(&self, key: &[u8], height: u64) -> Result<VerifiedState> {
        self.verified_state(key, Some(height)).await
    }

    async fn verified_state(&self, key: &[u8], height: Option<u64>) -> Result<VerifiedState> {
        let answer = self.state(key, height, true).await?;
        if answer.key.0 != key {
            return Err(Error::Proof("the answer is for another key".into()));
        }
        // At the height asked, the answer must be at that header's height.
        let header = self
            .verified_header(height.unwrap_or(answer.height))
            .await?;
        let verified = verify_state(&answer, &header)?;
        if height.is_none()
            && let Some(max) = self.inner.max_staleness
        {
            let age_ms = now_ms().saturating_sub(verified.timestamp_ms);
            if u128::from(age_ms) > max.as_millis() {
                return Err(Error::Proof(format!(
                    "the latest state offered, at height {}, is {:.1} s old, past the {:.1} s \
                     allowed (max_staleness): the node is behind or withholds newer blocks",
                    verified.height,
                    age_ms as f64 / 1000.0,
                    max.as_secs_f64()
                )));
            }
        }
        Ok(verified)
    }

    /// An account's record (unverified read of the latest state); `None` for unknown keys.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, key: trellis_types::PublicKey) -> trellis_sdk::Result<()> {
    /// if let Some(account) = client.account(&key).await? {
    ///     println!("{} acts for {}, next nonce {}", key, account.org, account.nonce);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn account(&self, key: &PublicKey) -> Result<Option<Account>> {
        let answer = self.state(&Account::state_key(key), None, false).await?;
        answer
            .value
            .map(|v| {
                trellis_types::decode(&v).map_err(|e| Error::Decode(format!("account record: {e}")))
            })
            .transpose()
    }

    /// Runs a contract's read-only query `method(args)` on the latest state
    /// and decodes its result. A contract refusal is [`Error::Rejected`] with
    /// status 422 and the contract's code.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, contract: trellis_types::Address) -> trellis_sdk::Result<()> {
    /// use trellis_receivables::CreditRef;
    /// let owed: u128 = client.query(&contract, "outstanding", &CreditRef { issuer: "core-acme".into(), currency: "CNY".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn query<A: Serialize, R: Serialize + DeserializeOwned>(
        &self,
        contract: &Address,
        method: &str,
        args: &A,
    ) -> Result<R> {
        let body = serde_json::to_vec(&ContractQuery {
            method: method.into(),
            args: hex::encode(trellis_types::encode(args)),
        })
        .map_err(|e| Error::Decode(format!("encoding the query: {e}")))?;
        let answer = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/contracts/{contract}/query"),
                &[],
                RequestBody::Json(body),
            )
            .await?;
        let result: ContractQueryResult = decode_json("contract query", &answer.body)?;
        trellis_types::decode(&result.result)
            .map_err(|e| Error::Decode(format!("result of query `{method}`: {e}")))
    }

    /// The chain id transactions are signed for (read from `/status` once, unless set on the builder).
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// println!("signing for {}", client.chain_id().await?);
    /// # Ok(()) }
    /// ```
    pub async fn chain_id(&self) -> Result<String> {
        self.inner
            .chain_id
            .get_or_try_init(|| async {
                // Boxed: a signed request reads the chain id, through here.
                Ok(Box::pin(self.status()).await?.chain_id)
            })
            .await
            .cloned()
    }

    /// Follows committed transactions: see [`EventsBuilder`].
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// let mut stream = client.events().from_height(1).kind("issued").subscribe().await?;
    /// while let Some(tx) = stream.next().await {
    ///     let tx = tx?;
    ///     println!("{} {}", tx.position(), tx.tx_hash);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> EventsBuilder {
        EventsBuilder::new(self.clone())
    }

    /// The receivables contract at `contract`, with typed calls and queries.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, address: trellis_types::Address) -> trellis_sdk::Result<()> {
    /// let held = client.receivables(address).holdings("supplier-t1").await?;
    /// # Ok(()) }
    /// ```
    pub fn receivables(&self, contract: Address) -> Receivables {
        Receivables::new(self.clone(), contract)
    }

    fn signing_key(&self) -> Result<&KeyPair> {
        self.inner
            .signer
            .as_ref()
            .ok_or_else(|| Error::Config("no signer: set one with .signer(key) to submit".into()))
    }

    /// Signs `payload` with the client's signer and a nonce it allocates,
    /// submits it, and returns once the node admitted it. The commit watch
    /// starts before the transaction is sent, so no commit is missed.
    ///
    /// Nonces: read from the chain once, then allocated locally, so many
    /// tasks may submit from one client at once. A `nonce_replayed` re-reads
    /// the chain and `nonce_taken` moves past the taken nonce (another client
    /// uses the same key); both re-sign and resubmit. A refused transaction's
    /// nonce is reused by the next submission.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client) -> trellis_sdk::Result<()> {
    /// use trellis_types::{Bytes, Payload, SystemOp};
    /// let pending = client.submit(Payload::System(SystemOp::Remark { data: Bytes(b"hello".to_vec()) })).await?;
    /// let committed = pending.wait().await?;
    /// println!("committed at {}:{}", committed.height, committed.index);
    /// # Ok(()) }
    /// ```
    pub async fn submit(&self, payload: Payload) -> Result<PendingTx> {
        let key = self.signing_key()?.clone();
        let chain_id = self.chain_id().await?;
        let watch = self.commit_watch(key.public()).await;
        let mut conflicts = 0;
        loop {
            let nonce = self.allocate_nonce(&key.public()).await?;
            let tx = Transaction {
                chain_id: chain_id.clone(),
                sender: key.public(),
                nonce,
                expires_at_ms: now_ms().saturating_add(
                    u64::try_from(self.inner.tx_ttl.as_millis()).unwrap_or(u64::MAX),
                ),
                payload: payload.clone(),
            }
            .sign(&key);
            match self.send_transaction(&tx).await {
                Ok(hash) => return Ok(PendingTx::new(self.clone(), hash, Some(nonce), watch)),
                Err(Error::Rejected { ref code, .. })
                    if code == "nonce_replayed" && conflicts < MAX_NONCE_RETRIES =>
                {
                    conflicts += 1;
                    self.resync_nonces().await;
                }
                Err(Error::Rejected { ref code, .. })
                    if code == "nonce_taken" && conflicts < MAX_NONCE_RETRIES =>
                {
                    conflicts += 1;
                    self.skip_nonce(nonce).await;
                }
                Err(e @ Error::Rejected { .. }) => {
                    self.release_nonce(nonce).await;
                    return Err(e);
                }
                Err(e) => {
                    // We cannot tell whether it was admitted: read the chain again next time.
                    self.resync_nonces().await;
                    return Err(e);
                }
            }
        }
    }

    /// Calls `method(args)` of the contract at `contract` (see [`Client::submit`]).
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, contract: trellis_types::Address) -> trellis_sdk::Result<()> {
    /// let receipt = client.call(&contract, "accept", &trellis_receivables::PieceRef { piece: 1 }).await?.wait().await?.receipt;
    /// # Ok(()) }
    /// ```
    pub async fn call<A: Serialize>(
        &self,
        contract: &Address,
        method: &str,
        args: &A,
    ) -> Result<PendingTx> {
        self.submit(Payload::Call {
            contract: *contract,
            method: method.into(),
            args: Bytes(trellis_types::encode(args)),
        })
        .await
    }

    /// Submits a transaction signed elsewhere, as it is: no nonce
    /// management, any refusal is returned. The commit watch starts first.
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, tx: trellis_types::SignedTransaction) -> trellis_sdk::Result<()> {
    /// let committed = client.submit_signed(&tx).await?.wait().await?;
    /// # Ok(()) }
    /// ```
    pub async fn submit_signed(&self, tx: &SignedTransaction) -> Result<PendingTx> {
        let watch = self.commit_watch(tx.tx.sender).await;
        let hash = self.send_transaction(tx).await?;
        Ok(PendingTx::new(self.clone(), hash, None, watch))
    }

    /// Sends a transaction signed elsewhere, as it is, and returns its hash
    /// once the node admitted it, without watching for its commit: for
    /// callers that follow commits themselves on one event stream, such as a
    /// load generator, where a watch per transaction would cost more than the
    /// transaction. Retries follow the client's [`RetryPolicy`]; resending the
    /// same bytes is safe (`already_known` counts as admitted).
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, tx: trellis_types::SignedTransaction) -> trellis_sdk::Result<()> {
    /// let hash = client.send_signed(&tx).await?;
    /// assert_eq!(hash, tx.hash());
    /// # Ok(()) }
    /// ```
    pub async fn send_signed(&self, tx: &SignedTransaction) -> Result<Hash> {
        self.send_transaction(tx).await
    }

    /// Sends up to [`MAX_BATCH_TXS`](trellis_types::api::MAX_BATCH_TXS)
    /// transactions signed elsewhere in one request (`POST
    /// /v1/transactions/batch`), without watching for their commits, and
    /// returns each one's verdict in order: its hash once admitted, or the
    /// [`Error::Rejected`] (or [`Error::Server`]) a single submission would
    /// have got. Each transaction stands alone (a batch is not atomic);
    /// `already_known` counts as admitted, so resending a batch is safe. The
    /// request as a whole is retried per the client's [`RetryPolicy`];
    /// refusals of single transactions are not: retry those (a 429, a nonce
    /// still ahead) as the caller sees fit. The outer error is for the batch
    /// as a whole (unreachable node, an unreadable or too large batch).
    ///
    /// ```no_run
    /// # async fn demo(client: trellis_sdk::Client, txs: Vec<trellis_types::SignedTransaction>) -> trellis_sdk::Result<()> {
    /// for (tx, verdict) in txs.iter().zip(client.send_signed_batch(&txs).await?) {
    ///     match verdict {
    ///         Ok(hash) => println!("admitted {hash}"),
    ///         Err(e) => eprintln!("{} refused: {e}", tx.hash()),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn send_signed_batch(&self, txs: &[SignedTransaction]) -> Result<Vec<Result<Hash>>> {
        if txs.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<Bytes> = txs
            .iter()
            .map(|tx| Bytes(trellis_types::encode(tx)))
            .collect();
        let answer = self
            .request(
                reqwest::Method::POST,
                "/v1/transactions/batch",
                &[],
                RequestBody::Binary(trellis_types::encode(&list)),
            )
            .await?;
        let batch: BatchSubmitted = decode_json("batch answer", &answer.body)?;
        if batch.results.len() != txs.len() {
            return Err(Error::Decode(format!(
                "{} verdicts for a batch of {}",
                batch.results.len(),
                txs.len()
            )));
        }
        Ok(txs
            .iter()
            .zip(batch.results)
            .map(|(tx, verdict)| batch_verdict(tx, verdict))
            .collect())
    }

    /// Opens the stream that will report the commit, before sending; on any
    /// trouble the wait falls back to polling.
    async fn commit_watch(&self, sender: PublicKey) -> Option<crate::events::EventStream> {
        self.events().sender(sender).subscribe_once().await.ok()
    }

    /// `POST /v1/transactions` with retries. Resending the same bytes after
    /// a lost answer is safe: the node knows the transaction by its hash.
    async fn send_transaction(&self, tx: &SignedTransaction) -> Result<Hash> {
        let bytes = trellis_types::encode(tx);
        let mut failures = 0;
        loop {
            let result = self
                .request(
                    reqwest::Method::POST,
                    "/v1/transactions",
                    &[],
                    RequestBody::Binary(bytes.clone()),
                )
                .await;
            match result {
                Ok(answer) => {
                    let submitted: TxSubmitted = decode_json("submission answer", &answer.body)?;
                    if submitted.tx_hash != tx.hash() {
                        return Err(Error::Decode(format!(
                            "the node admitted {} for transaction {}",
                            submitted.tx_hash,
                            tx.hash()
                        )));
                    }
                    return Ok(submitted.tx_hash);
                }
                // Sent before (a retry, or resubmission of the same bytes): it is in.
                Err(Error::Rejected { ref code, .. }) if code == "already_known" => {
                    return Ok(tx.hash());
                }
                Err(e @ Error::Rejected { .. }) if e.code() == Some("nonce_replayed") => {
                    // Ours may have committed while an answer was lost.
                    if let Ok(Some(_)) = self.transaction(&tx.hash()).await {
                        return Ok(tx.hash());
                    }
                    return Err(e);
                }
                // Our own earlier nonces are still on their way: wait like for a 429.
                Err(e @ Error::Rejected { .. })
                    if e.code() == Some("nonce_too_far_ahead")
                        && failures + 1 < self.inner.retry.max_attempts =>
                {
                    failures += 1;
                    tokio::time::sleep(self.inner.retry.backoff(failures)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn allocate_nonce(&self, sender: &PublicKey) -> Result<u64> {
        let mut nonces = self.inner.nonces.lock().await;
        if let Some(nonce) = nonces.released.pop_first() {
            return Ok(nonce);
        }
        let next = match nonces.next {
            Some(next) => next,
            None => self.account(sender).await?.map_or(0, |a| a.nonce),
        };
        nonces.next = Some(next + 1);
        Ok(next)
    }

    /// After [`Error::Dropped`] of a transaction of ours with `nonce`: an
    /// expired one's nonce is free for the next submission; otherwise the
    /// chain moved without us, so read the nonce again.
    pub(crate) async fn forget_dropped(&self, nonce: u64, reason: DropReason) {
        match reason {
            DropReason::Expired => self.release_nonce(nonce).await,
            DropReason::NonceUsed | DropReason::SenderRemoved => self.resync_nonces().await,
        }
    }

    async fn release_nonce(&self, nonce: u64) {
        let mut nonces = self.inner.nonces.lock().await;
        if nonces.next.is_some_and(|next| nonce < next) {
            nonces.released.insert(nonce);
        }
    }

    async fn skip_nonce(&self, taken: u64) {
        let mut nonces = self.inner.nonces.lock().await;
        nonces.released.remove(&taken);
        nonces.next = Some(nonces.next.map_or(taken + 1, |next| next.max(taken + 1)));
    }

    async fn resync_nonces(&self) {
        let mut nonces = self.inner.nonces.lock().await;
        nonces.next = None;
        nonces.released.clear();
    }

    /// A committed transaction found by polling `GET /v1/transactions/{hash}`;
    /// [`Error::Dropped`] for one the node dropped.
    pub(crate) async fn committed(&self, hash: &Hash) -> Result<Option<Committed>> {
        let (height, index, receipt) = match self.transaction(hash).await? {
            Some(TxStatus::Committed {
                height,
                index,
                receipt,
            }) => (height, index, receipt),
            Some(TxStatus::Dropped { reason }) => {
                return Err(Error::Dropped {
                    tx_hash: *hash,
                    reason,
                });
            }
            Some(TxStatus::Pending) | None => return Ok(None),
        };
        let block = self.block(height).await?;
        Ok(Some(Committed {
            value: (),
            tx_hash: *hash,
            height,
            index,
            block_time_ms: block.block.header.timestamp_ms,
            receipt,
        }))
    }
}

pub(crate) fn transport_message(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An endpoint that answers every request with a chunked body that never
    /// ends: the client stops reading at its limit instead of holding it all.
    #[tokio::test]
    async fn an_answer_without_end_is_refused_at_the_clients_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            socket.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
            // Until the client hangs up.
            while socket.write_all(chunk.as_bytes()).await.is_ok() {}
        });
        let client = Client::builder()
            .endpoint(format!("http://{addr}"))
            .retry(RetryPolicy::none())
            .max_response_bytes(4096)
            .build()
            .unwrap();
        match client.status().await {
            Err(Error::Decode(message)) => {
                assert!(message.contains("longer than 4096 bytes"), "{message}")
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    /// An expired transaction's nonce goes to the next submission (else every
    /// later one would wait behind the gap until it expired too); after any
    /// other drop the nonce is read from the chain again.
    #[tokio::test]
    async fn a_dropped_transactions_nonce_is_reused_or_read_again() {
        let client = Client::builder()
            .endpoint("http://127.0.0.1:9")
            .signer(KeyPair::insecure_from_label("nonces"))
            .build()
            .unwrap();
        let sender = client.signing_key().unwrap().public();
        client.inner.nonces.lock().await.next = Some(7);
        client.forget_dropped(5, DropReason::Expired).await;
        assert_eq!(client.allocate_nonce(&sender).await.unwrap(), 5);
        assert_eq!(client.allocate_nonce(&sender).await.unwrap(), 7);
        for reason in [DropReason::NonceUsed, DropReason::SenderRemoved] {
            client.inner.nonces.lock().await.next = Some(8);
            client.forget_dropped(5, DropReason::Expired).await;
            client.forget_dropped(7, reason).await;
            let nonces = client.inner.nonces.lock().await;
            assert_eq!(
                (nonces.next, nonces.released.len()),
                (None, 0),
                "{reason:?}"
            );
        }
    }
}
