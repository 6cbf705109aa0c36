//! The HTTP API's JSON shapes, shared by the node (which serves them and
//! documents them in its OpenAPI document) and the SDK (which reads them).
//!
//! One definition per shape: the node derives its schemas from these types, so
//! what the SDK decodes is what the node's `/openapi.json` describes. Hashes,
//! keys and byte strings are hex in JSON.

use crate::bytes::Bytes;
use crate::crypto::PublicKey;
use crate::hash::Hash;
use crate::proof::{MerkleProof, StateProof};
use crate::receipt::{Event, ExecError, Receipt, ReceiptStatus};
use crate::{Block, DuplicateVote, Header, OrgId, Proposal, QuorumCertificate, SignedTransaction};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error response.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `bad_signature`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

// The answer to an admitted `POST /v1/transactions` (status 202). (No doc
// comment: it would become the schema's description in the OpenAPI document.)
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct TxSubmitted {
    pub tx_hash: Hash,
}

/// Most transactions one `POST /v1/transactions/batch` may carry.
pub const MAX_BATCH_TXS: usize = 1_024;

// The answer to `POST /v1/transactions/batch` (status 200): one verdict per
// transaction, in the order they were sent.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct BatchSubmitted {
    pub results: Vec<BatchVerdict>,
}

/// What `POST /v1/transactions` would have answered for one transaction of
/// a batch: status 202 and its hash, or the status and error of its refusal.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct BatchVerdict {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<Hash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Where a transaction is.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatus {
    /// Admitted to this node's mempool, not yet committed.
    Pending,
    /// Committed at `height`, as the block's `index`-th transaction.
    Committed {
        height: u64,
        index: u32,
        receipt: Receipt,
    },
    /// Left this node's mempool without being committed, and no later block
    /// may include it (a node restarted since, or one that has dropped many
    /// since, has forgotten and answers 404).
    Dropped { reason: DropReason },
}

/// Why a transaction was dropped. Each is final on every node: it follows
/// from committed blocks alone.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A committed block's time reached its expiry (`expires_at_ms`).
    Expired,
    /// Another transaction of its sender's with its nonce was committed.
    NonceUsed,
    /// Its sender's account was removed.
    SenderRemoved,
}

impl DropReason {
    /// The stable code, as in JSON.
    pub fn code(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::NonceUsed => "nonce_used",
            DropReason::SenderRemoved => "sender_removed",
        }
    }
}

/// A committed transaction with what ties it to its block's header
/// (`GET /v1/transactions/{hash}/proof`): the signed transaction's leaf
/// ([`crate::block::tx_leaf`]) under `tx_root` and its receipt's hash under
/// `receipts_root`. Checked against a header the client trusts (the SDK's
/// `verify_transaction`), it shows the transaction committed with this
/// result without trusting the node that answered.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct TxProofResponse {
    pub height: u64,
    /// The transaction's position in the block.
    pub index: u32,
    pub tx: SignedTransaction,
    pub receipt: Receipt,
    pub tx_proof: MerkleProof,
    pub receipt_proof: MerkleProof,
}

/// Longest wait a `GET /v1/blocks/{height}?wait_ms=` may ask for.
pub const MAX_BLOCK_WAIT_MS: u64 = 30_000;

/// A committed block with the certificate that committed it and its receipts.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct BlockResponse {
    pub hash: Hash,
    pub block: Block,
    pub commit: QuorumCertificate,
    /// One per transaction, in block order.
    pub receipts: Vec<Receipt>,
}

/// A committed block's header with the certificate that committed it
/// (`GET /v1/blocks/{height}/header`): what a client that knows the
/// validators needs to trust the header, and with it the state root that
/// state proofs check against, without the block's transactions.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct HeaderResponse {
    pub hash: Hash,
    pub header: Header,
    /// The precommits that decided the block (none for the genesis block,
    /// whose hash the next block's `parent` names).
    pub commit: QuorumCertificate,
}

/// A state value (`null` when absent) at a committed height.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct StateResponse {
    pub key: Bytes,
    pub value: Option<Bytes>,
    pub height: u64,
    /// The state root in the header of the block at `height`.
    pub state_root: Hash,
    /// Present when asked for with `proof=true`.
    pub proof: Option<StateProof>,
}

/// Proofs of validators' equivocation this node has recorded (`GET /v1/evidence`).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct EvidenceList {
    /// In order of height, round, step and validator; each checks with
    /// [`DuplicateVote::check`].
    pub evidence: Vec<DuplicateVote>,
}

/// A validator as the genesis names it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ValidatorInfo {
    pub name: String,
    /// The organisation that runs it.
    pub org: OrgId,
    /// Signs its proposals and votes.
    pub consensus_key: PublicKey,
    /// Its node's peer-to-peer identity.
    pub node_key: PublicKey,
}

/// The validator set (`GET /v1/validators`), fixed by the genesis.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ValidatorList {
    /// In the genesis's order.
    pub validators: Vec<ValidatorInfo>,
    /// Votes a block needs to commit: more than two thirds of the validators.
    pub quorum: usize,
}

impl ValidatorList {
    /// True if `key` is a validator's consensus key.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.validators.iter().any(|v| &v.consensus_key == key)
    }
}

/// The node's view of the chain, as the consensus driver last published it.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug, PartialEq, Eq)]
pub struct ChainStatus {
    /// Height of the latest committed block.
    pub height: u64,
    pub block_hash: Hash,
    pub state_root: Hash,
    /// Timestamp of the latest committed block (unix ms).
    pub last_block_time_ms: u64,
    /// True while the node is catching up with its peers.
    pub syncing: bool,
    /// The committed height the chain has reached as far as this node can
    /// tell (f+1 validators have signed messages past it); `height` catches
    /// up to it. Equal to `height` on a node that is not behind.
    pub sync_target: u64,
    /// Connected peers.
    pub peers: usize,
    /// True if this node votes.
    pub validator: bool,
    /// Consensus round at the height being decided.
    pub round: u64,
}

impl Default for ChainStatus {
    fn default() -> Self {
        ChainStatus {
            height: 0,
            block_hash: Hash::ZERO,
            state_root: Hash::ZERO,
            last_block_time_ms: 0,
            syncing: false,
            sync_target: 0,
            peers: 0,
            validator: false,
            round: 0,
        }
    }
}

// `GET /status`: the chain's identity and the node's view of it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    pub chain_id: String,
    pub genesis_hash: Hash,
    #[serde(flatten)]
    pub status: ChainStatus,
    /// The lowest height whose state this node can answer for (0 unless
    /// its store was pruned); blocks and receipts are kept from genesis.
    #[serde(default)]
    pub earliest_state_height: u64,
    /// The indexes this node keeps beside the chain (`[index]` in its
    /// configuration); without them some reads answer 501 `not_indexed`.
    #[serde(default)]
    pub indexes: IndexesKept,
}

/// The indexes a node keeps, in `GET /status`.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(default)]
pub struct IndexesKept {
    /// Committed transactions by hash (`GET /v1/transactions/{hash}`).
    pub transactions: bool,
    /// Contracts' query indexes (queries that list, such as a holder's pieces).
    pub queries: bool,
}

impl Default for IndexesKept {
    /// What a node that does not say keeps: both.
    fn default() -> Self {
        IndexesKept {
            transactions: true,
            queries: true,
        }
    }
}

/// `POST /v1/contracts/{address}/query`.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContractQuery {
    /// The contract's query method.
    pub method: String,
    /// Hex of the canonically encoded arguments (optional `0x` prefix; empty by default).
    #[serde(default)]
    pub args: String,
}

/// What a contract query returned.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ContractQueryResult {
    /// The contract's output (canonically encoded, as hex).
    pub result: Bytes,
    /// The committed height whose state the query read.
    pub height: u64,
    pub fuel_used: u64,
}

// `GET /health`.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

// ---------------------------------------------------------------------------
// The event stream (`GET /v1/events`)

/// Where a committed transaction sits: its block's height and its index in
/// the block. The event stream's SSE `id` is this, written `height:index`;
/// positions are totally ordered, which is what makes a stream resumable.
///
/// ```
/// use trellis_types::api::TxPosition;
/// let at: TxPosition = "12:3".parse().unwrap();
/// assert_eq!(at, TxPosition { height: 12, index: 3 });
/// assert_eq!(at.to_string(), "12:3");
/// assert!(at < TxPosition { height: 13, index: 0 });
/// assert!("12".parse::<TxPosition>().is_err());
/// ```
#[derive(
    Serialize, Deserialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub struct TxPosition {
    pub height: u64,
    pub index: u32,
}

impl std::fmt::Display for TxPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.height, self.index)
    }
}

/// Why a string is not a [`TxPosition`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a transaction position `<height>:<index>`")]
pub struct BadPosition(pub String);

impl std::str::FromStr for TxPosition {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.chars().take(64).collect());
        let (height, index) = s.trim().split_once(':').ok_or_else(bad)?;
        Ok(TxPosition {
            height: height.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        })
    }
}

/// One committed transaction as `GET /v1/events` delivers it: one SSE
/// message each, in chain order, with SSE `id` [`CommittedTx::position`].
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct CommittedTx {
    /// Height of the block that committed it.
    pub height: u64,
    /// Its index in that block.
    pub index: u32,
    pub tx_hash: Hash,
    /// The signing account.
    pub sender: PublicKey,
    pub status: ReceiptStatus,
    /// Why execution failed, when `status` is `failed`.
    pub error: Option<ExecError>,
    /// What it did (empty when it failed).
    pub events: Vec<Event>,
    /// Fuel its execution used, as in its receipt.
    pub fuel_used: u64,
    /// The block's timestamp (unix ms).
    pub block_time_ms: u64,
}

impl CommittedTx {
    /// The message for transaction `index` of the block with `header`, sent
    /// by `sender`, made from its receipt (which carries its hash).
    pub fn new(header: &Header, index: u32, sender: PublicKey, receipt: &Receipt) -> CommittedTx {
        CommittedTx {
            height: header.height,
            index,
            tx_hash: receipt.tx,
            sender,
            status: receipt.status,
            error: receipt.error.clone(),
            events: receipt.events.clone(),
            fuel_used: receipt.fuel_used,
            block_time_ms: header.timestamp_ms,
        }
    }

    /// The SSE id of this message.
    pub fn position(&self) -> TxPosition {
        TxPosition {
            height: self.height,
            index: self.index,
        }
    }

    /// The receipt this message was made from.
    pub fn receipt(&self) -> Receipt {
        Receipt {
            tx: self.tx_hash,
            status: self.status,
            error: self.error.clone(),
            fuel_used: self.fuel_used,
            events: self.events.clone(),
        }
    }
}

/// Which transactions an event stream delivers. Within one field any value
/// matches ("any of"); across fields all must match; an empty field matches
/// everything. As query parameters each field is repeatable or a comma list:
/// `kind=issued,split&party=supplier-t2`.
///
/// ```
/// use trellis_types::api::EventFilter;
/// let filter = EventFilter { kinds: vec!["issued".into(), "split".into()], ..EventFilter::default() };
/// assert_eq!(filter.to_query(), vec![("kind", "issued,split".to_string())]);
/// ```
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only transactions with an event of one of these kinds (`kind`).
    pub kinds: Vec<String>,
    /// Only transactions that concern one of these parties (`party`): an
    /// organisation id or an account key (hex). A transaction concerns a
    /// party when it sent it (the key, or any key of the organisation) or when
    /// an event attribute names it (the whole value, or one of its
    /// `:`-separated fields, as in a split's `child` = `id:org:amount`).
    pub parties: Vec<String>,
    /// Only transactions signed by one of these account keys (`sender`).
    pub senders: Vec<PublicKey>,
}

impl EventFilter {
    /// The filter as `GET /v1/events` query parameters (empty fields omitted).
    pub fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if !self.kinds.is_empty() {
            query.push(("kind", self.kinds.join(",")));
        }
        if !self.parties.is_empty() {
            query.push(("party", self.parties.join(",")));
        }
        if !self.senders.is_empty() {
            let senders: Vec<String> = self.senders.iter().map(PublicKey::to_hex).collect();
            query.push(("sender", senders.join(",")));
        }
        query
    }
}

/// An open governance proposal as a node sees it at its latest block
/// (`GET /v1/proposals`, `GET /v1/proposals/{id}`).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ProposalInfo {
    /// The hash of the transaction that proposed it; approvals name it.
    pub id: Hash,
    pub proposal: Proposal,
    /// The approvals that count now: those of organisations that still hold the admin role.
    pub approvals_counted: usize,
    /// Approvals it needs: more than half of the admin organisations now.
    pub needed: usize,
    /// Past its expiry at the latest block: it can no longer pass.
    pub expired: bool,
}

/// Open proposals in id order (`GET /v1/proposals`).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct ProposalList {
    pub proposals: Vec<ProposalInfo>,
    /// Where the next page starts (`?after=`), if there may be more.
    pub next_after: Option<Hash>,
}
