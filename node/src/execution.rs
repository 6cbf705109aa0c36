//! Deterministic execution of a block's transactions against state.
//!
//! Input: the committed state (read-only), the block's context (height,
//! timestamp) and its transactions in order. Output: one receipt per
//! transaction and the set of state writes; nothing is written here. A
//! transaction that is not admissible at this point of the chain (wrong chain,
//! expired at the block's timestamp, unknown sender, nonce out of sequence)
//! makes the whole block invalid; a transaction that fails while executing
//! gets a failed receipt, its writes are dropped and its nonce is consumed.
//! Signatures are checked before execution (see `node::verify_block_signatures`).

use crate::state::{StateRead, Writes};
use crate::storage::StorageError;
use serde::{Deserialize, Serialize};
use trellis_types::codec::{decode, encode};
use trellis_types::{
    ChainParams, Event, EventSource, ExecError, OrgId, Organisation, Payload, PublicKey, Receipt,
    ReceiptStatus, SignedTransaction, SystemOp,
};

/// Where the node keeps its own records in the state tree.
pub mod keys {
    use trellis_types::PublicKey;

    pub const PARAMS: &[u8] = b"sys/params";
    pub const GENESIS: &[u8] = b"sys/genesis";

    pub fn account(key: &PublicKey) -> Vec<u8> {
        [b"sys/account/".as_slice(), &key.0].concat()
    }

    /// The next nonce of a removed key, kept so that a key added again
    /// continues from it and what it signed before can never run twice.
    pub fn removed_account_nonce(key: &PublicKey) -> Vec<u8> {
        [b"sys/removed-account-nonce/".as_slice(), &key.0].concat()
    }

    pub fn organisation(id: &str) -> Vec<u8> {
        [b"sys/org/".as_slice(), id.as_bytes()].concat()
    }
}

/// An account as the state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountRecord {
    pub org: OrgId,
    pub org_admin: bool,
    /// The nonce the account's next transaction must carry.
    pub nonce: u64,
}

/// Reads a record stored with the canonical encoding; a record that does not
/// decode means the state is corrupt.
fn read<T: Serialize + serde::de::DeserializeOwned>(
    state: &dyn StateRead,
    key: &[u8],
) -> Result<Option<T>, StorageError> {
    match state.get(key)? {
        None => Ok(None),
        Some(bytes) => decode(&bytes).map(Some).map_err(|e| StorageError::Corrupt {
            what: format!("state record {}: {e}", String::from_utf8_lossy(key)),
        }),
    }
}

pub fn account(
    state: &dyn StateRead,
    key: &PublicKey,
) -> Result<Option<AccountRecord>, StorageError> {
    read(state, &keys::account(key))
}

pub fn organisation(state: &dyn StateRead, id: &str) -> Result<Option<Organisation>, StorageError> {
    read(state, &keys::organisation(id))
}

pub fn params(state: &dyn StateRead) -> Result<ChainParams, StorageError> {
    read(state, keys::PARAMS)?.ok_or_else(|| StorageError::Corrupt {
        what: "chain parameters missing from state".into(),
    })
}

/// The block a transaction is executed in.
#[derive(Debug, Clone)]
pub struct BlockContext {
    pub chain_id: String,
    pub height: u64,
    pub timestamp_ms: u64,
    /// A transaction may expire at most this long after the block's timestamp
    /// (bounds how long a signed transaction stays usable).
    pub max_expiry_ms: u64,
}

/// Why a transaction may not be in a block at this point of the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Inadmissible {
    #[error("transaction is for chain {0}")]
    WrongChain(String),
    #[error("transaction expired at {expires_at_ms}, block time is {block_ms}")]
    Expired { expires_at_ms: u64, block_ms: u64 },
    #[error(
        "transaction expires at {expires_at_ms}, more than {max_ms} ms after block time {block_ms}"
    )]
    ExpiryTooFar {
        expires_at_ms: u64,
        block_ms: u64,
        max_ms: u64,
    },
    #[error("sender {0} is not an account of any member")]
    UnknownSender(PublicKey),
    #[error("nonce {got}, the sender's next nonce is {expected}")]
    BadNonce { expected: u64, got: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("transaction {index} is inadmissible: {reason}")]
    Inadmissible { index: usize, reason: Inadmissible },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct BlockOutput {
    pub receipts: Vec<Receipt>,
    pub writes: Writes,
}

/// State as seen in the middle of a block: the block's writes so far over the committed state.
struct Overlay<'a> {
    base: &'a dyn StateRead,
    writes: Writes,
}

impl StateRead for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }
}

/// Executes a block proposed by someone else: every transaction must be admissible.
pub fn execute_block(
    base: &dyn StateRead,
    ctx: &BlockContext,
    txs: &[SignedTransaction],
) -> Result<BlockOutput, BlockError> {
    let mut overlay = Overlay {
        base,
        writes: Writes::new(),
    };
    let mut receipts = Vec::with_capacity(txs.len());
    for (index, tx) in txs.iter().enumerate() {
        match execute_tx(&mut overlay, ctx, tx)? {
            Ok(receipt) => receipts.push(receipt),
            Err(reason) => return Err(BlockError::Inadmissible { index, reason }),
        }
    }
    Ok(BlockOutput {
        receipts,
        writes: overlay.writes,
    })
}

/// Executes candidate transactions for a block we propose, leaving out those
/// that are not admissible at this point. Returns what was included.
pub fn execute_candidates(
    base: &dyn StateRead,
    ctx: &BlockContext,
    candidates: Vec<SignedTransaction>,
) -> Result<(Vec<SignedTransaction>, BlockOutput), StorageError> {
    let mut overlay = Overlay {
        base,
        writes: Writes::new(),
    };
    let mut included = Vec::with_capacity(candidates.len());
    let mut receipts = Vec::with_capacity(candidates.len());
    for tx in candidates {
        if let Ok(receipt) = execute_tx(&mut overlay, ctx, &tx)? {
            receipts.push(receipt);
            included.push(tx);
        }
    }
    Ok((
        included,
        BlockOutput {
            receipts,
            writes: overlay.writes,
        },
    ))
}

/// Checks admissibility, then runs the payload. Inadmissible: nothing written.
fn execute_tx(
    overlay: &mut Overlay<'_>,
    ctx: &BlockContext,
    stx: &SignedTransaction,
) -> Result<Result<Receipt, Inadmissible>, StorageError> {
    let tx = &stx.tx;
    if tx.chain_id != ctx.chain_id {
        return Ok(Err(Inadmissible::WrongChain(tx.chain_id.clone())));
    }
    if ctx.timestamp_ms >= tx.expires_at_ms {
        return Ok(Err(Inadmissible::Expired {
            expires_at_ms: tx.expires_at_ms,
            block_ms: ctx.timestamp_ms,
        }));
    }
    if tx.expires_at_ms - ctx.timestamp_ms > ctx.max_expiry_ms {
        return Ok(Err(Inadmissible::ExpiryTooFar {
            expires_at_ms: tx.expires_at_ms,
            block_ms: ctx.timestamp_ms,
            max_ms: ctx.max_expiry_ms,
        }));
    }
    let Some(mut sender) = account(overlay, &tx.sender)? else {
        return Ok(Err(Inadmissible::UnknownSender(tx.sender)));
    };
    if tx.nonce != sender.nonce {
        return Ok(Err(Inadmissible::BadNonce {
            expected: sender.nonce,
            got: tx.nonce,
        }));
    }

    let mut run = TxRun {
        view: Overlay {
            base: &*overlay,
            writes: Writes::new(),
        },
        sender: &sender,
        sender_key: tx.sender,
        events: Vec::new(),
    };
    let outcome = run.payload(&tx.payload)?;
    let TxRun { view, events, .. } = run;
    let (status, error, events) = match outcome {
        Ok(()) => {
            let mut tx_writes = view.writes;
            // No system operation touches its sender's own record (no self-removal,
            // no re-adding an existing key), so the nonce update below cannot clobber it.
            debug_assert!(!tx_writes.contains_key(&keys::account(&tx.sender)));
            overlay.writes.append(&mut tx_writes);
            (ReceiptStatus::Success, None, events)
        }
        Err(e) => (ReceiptStatus::Failed, Some(e), Vec::new()),
    };
    // The nonce is consumed whatever the outcome.
    sender.nonce += 1;
    overlay
        .writes
        .insert(keys::account(&tx.sender), Some(encode(&sender)));
    Ok(Ok(Receipt {
        tx: stx.hash(),
        status,
        error,
        fuel_used: 0,
        events,
    }))
}

/// One transaction's payload, writing into its own overlay.
struct TxRun<'a> {
    view: Overlay<'a>,
    sender: &'a AccountRecord,
    sender_key: PublicKey,
    events: Vec<Event>,
}

fn fail(code: &str, message: impl Into<String>) -> ExecError {
    ExecError {
        code: code.to_owned(),
        message: message.into(),
    }
}

impl TxRun<'_> {
    fn payload(&mut self, payload: &Payload) -> Result<Result<(), ExecError>, StorageError> {
        match payload {
            Payload::System(op) => self.system(op),
            Payload::Call { contract, .. } => Ok(Err(fail(
                "contract_not_found",
                format!("no contract is deployed at {contract}"),
            ))),
            Payload::Deploy { .. } => Ok(Err(fail(
                "contracts_unavailable",
                "this chain version has no contract runtime",
            ))),
        }
    }

    fn system(&mut self, op: &SystemOp) -> Result<Result<(), ExecError>, StorageError> {
        match op {
            SystemOp::Remark { data } => {
                self.event("remark", vec![("bytes".into(), data.len().to_string())]);
            }
            SystemOp::AddKey { key, org_admin } => {
                if !self.sender.org_admin {
                    return Ok(Err(fail(
                        "not_org_admin",
                        "only an organisation admin may add keys",
                    )));
                }
                if key.verifying_key().is_err() {
                    return Ok(Err(fail(
                        "invalid_key",
                        format!("{key} is not a usable ed25519 public key"),
                    )));
                }
                if account(&self.view, key)?.is_some() {
                    return Ok(Err(fail(
                        "key_exists",
                        format!("{key} is already an account"),
                    )));
                }
                let tombstone = keys::removed_account_nonce(key);
                let nonce = match read::<u64>(&self.view, &tombstone)? {
                    Some(nonce) => {
                        self.view.writes.insert(tombstone, None);
                        nonce
                    }
                    None => 0,
                };
                let record = AccountRecord {
                    org: self.sender.org.clone(),
                    org_admin: *org_admin,
                    nonce,
                };
                self.view
                    .writes
                    .insert(keys::account(key), Some(encode(&record)));
                self.event(
                    "account_added",
                    vec![
                        ("org".into(), record.org),
                        ("key".into(), key.to_hex()),
                        ("org_admin".into(), org_admin.to_string()),
                    ],
                );
            }
            SystemOp::RemoveKey { key } => {
                if !self.sender.org_admin {
                    return Ok(Err(fail(
                        "not_org_admin",
                        "only an organisation admin may remove keys",
                    )));
                }
                if *key == self.sender_key {
                    return Ok(Err(fail(
                        "self_removal",
                        "an admin cannot remove its own key",
                    )));
                }
                match account(&self.view, key)? {
                    Some(record) if record.org == self.sender.org => {
                        self.view.writes.insert(keys::account(key), None);
                        self.view.writes.insert(
                            keys::removed_account_nonce(key),
                            Some(encode(&record.nonce)),
                        );
                        self.event(
                            "account_removed",
                            vec![("org".into(), record.org), ("key".into(), key.to_hex())],
                        );
                    }
                    _ => {
                        return Ok(Err(fail(
                            "not_in_org",
                            format!("{key} is not an account of {}", self.sender.org),
                        )));
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    fn event(&mut self, kind: &str, attributes: Vec<(String, String)>) {
        self.events.push(Event {
            source: EventSource::System,
            kind: kind.to_owned(),
            attributes,
        });
    }
}

#[cfg(test)]
mod tests;
