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
//! Contracts run in the [`Vm`]; deploy, upgrade and call are here, the host ABI
//! and its limits in [`crate::vm`].

use crate::state::{StateRead, Writes};
use crate::storage::{Storage, StorageError};
use crate::vm::{self, CallEnv, Entry, Invocation, Limits, StateView, Vm};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use trellis_types::codec::{decode, encode};
use trellis_types::{
    Address, ChainParams, Event, EventSource, ExecError, Hash, OrgId, Organisation, Payload,
    PublicKey, Receipt, ReceiptStatus, Role, SignedTransaction, SystemOp,
};

mod governance;
pub use governance::{open_proposal, open_proposals};

/// Where the node keeps its own records in the state tree.
pub mod keys {
    use trellis_types::{Address, Hash, PublicKey};

    pub const PARAMS: &[u8] = b"sys/params";
    pub const GENESIS: &[u8] = b"sys/genesis";
    /// The prefixes of accounts', organisations' and contracts' records.
    pub const ACCOUNT: &[u8] = b"sys/account/";
    pub const ORGANISATION: &[u8] = b"sys/org/";
    pub const CONTRACT: &[u8] = b"sys/contract/";
    /// The prefix of open governance proposals, by id.
    pub const PROPOSAL: &[u8] = b"sys/proposal/";

    pub fn account(key: &PublicKey) -> Vec<u8> {
        [ACCOUNT, &key.0].concat()
    }

    /// The next nonce of a removed key, kept so that a key added again
    /// continues from it and what it signed before can never run twice.
    pub fn removed_account_nonce(key: &PublicKey) -> Vec<u8> {
        [b"sys/removed-account-nonce/".as_slice(), &key.0].concat()
    }

    pub fn organisation(id: &str) -> Vec<u8> {
        [ORGANISATION, id.as_bytes()].concat()
    }

    /// An open [`trellis_types::Proposal`], by the hash of the transaction that made it.
    pub fn proposal(id: &Hash) -> Vec<u8> {
        [PROPOSAL, &id.0].concat()
    }

    /// A contract module's bytes, by [`crate::vm::code_hash`].
    pub fn code(hash: &Hash) -> Vec<u8> {
        [b"sys/code/".as_slice(), &hash.0].concat()
    }

    /// A contract's [`super::ContractRecord`].
    pub fn contract(address: &Address) -> Vec<u8> {
        [CONTRACT, &address.0].concat()
    }

    /// The prefix of a contract's own keys: `c/<32-byte address>/`.
    pub fn contract_data(address: &Address) -> Vec<u8> {
        address.state_key(b"")
    }

    /// The prefix of a contract's query index: `q/<32-byte address>/`,
    /// outside the state tree (see [`crate::state::QUERY_INDEX`]).
    pub fn contract_index(address: &Address) -> Vec<u8> {
        [crate::state::QUERY_INDEX, &address.0, b"/"].concat()
    }
}

/// A deployed contract as the state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContractRecord {
    /// What runs: `sys/code/<code_hash>` holds the module.
    pub code_hash: Hash,
    /// The account that deployed it (part of the address).
    pub deployer: PublicKey,
    pub deployed_at_height: u64,
    /// Height of the latest upgrade, if it was ever upgraded.
    pub upgraded_at_height: Option<u64>,
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

/// Whether organisation `org` (as read: `None` if absent) is suspended:
/// governance left it no roles, so its accounts neither send nor read.
pub fn is_suspended(org: Option<&Organisation>) -> bool {
    org.is_some_and(|o| o.roles.is_empty())
}

/// Whether the accounts of organisation `org` (as read: `None` if absent)
/// may send transactions: all but those of an organisation that is only a
/// regulator, which reads everything and changes nothing, or suspended.
pub fn may_send(org: Option<&Organisation>) -> bool {
    org.is_none_or(|o| o.roles.iter().any(|r| *r != Role::Regulator))
}

pub fn contract(
    state: &dyn StateRead,
    address: &Address,
) -> Result<Option<ContractRecord>, StorageError> {
    read(state, &keys::contract(address))
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
    /// What one contract call may use.
    pub limits: Limits,
}

impl BlockContext {
    fn block_info(&self) -> vm::BlockInfo {
        vm::BlockInfo {
            chain_id: self.chain_id.clone(),
            height: self.height,
            timestamp_ms: self.timestamp_ms,
        }
    }
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
    #[error("sender acts for {0}, a regulator: it reads everything and sends nothing")]
    ReadOnlySender(String),
    #[error("sender acts for {0}, which is suspended: it has no roles")]
    Suspended(String),
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

/// A transaction's writes so far over the block's state.
struct Overlay<'a> {
    base: &'a StateView,
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

/// Executes a block proposed by someone else, whose transactions' hashes
/// are `tx_hashes`: every transaction must be admissible.
pub fn execute_block(
    vm: &Vm,
    base: &Storage,
    ctx: &BlockContext,
    txs: &[SignedTransaction],
    tx_hashes: &[Hash],
) -> Result<BlockOutput, BlockError> {
    debug_assert_eq!(txs.len(), tx_hashes.len());
    let mut block = StateView::new(base.clone(), Writes::new());
    let mut receipts = Vec::with_capacity(txs.len());
    for (index, (tx, hash)) in txs.iter().zip(tx_hashes).enumerate() {
        match execute_tx(vm, &mut block, ctx, tx, *hash)? {
            Ok(receipt) => receipts.push(receipt),
            Err(reason) => return Err(BlockError::Inadmissible { index, reason }),
        }
    }
    Ok(BlockOutput {
        receipts,
        writes: block.into_pending(),
    })
}

/// Executes candidate transactions (each with its hash) for a block we
/// propose, leaving out those that are not admissible at this point, until
/// `deadline`. Returns what was included.
pub fn execute_candidates(
    vm: &Vm,
    base: &Storage,
    ctx: &BlockContext,
    candidates: Vec<(Hash, SignedTransaction)>,
    deadline: Option<Instant>,
) -> Result<(Vec<SignedTransaction>, BlockOutput), StorageError> {
    let mut block = StateView::new(base.clone(), Writes::new());
    let mut included = Vec::with_capacity(candidates.len());
    let mut receipts = Vec::with_capacity(candidates.len());
    for (hash, tx) in candidates {
        // Past the deadline the block is full, once it holds one transaction
        // (so that a slow transaction cannot stop the chain).
        if !included.is_empty() && deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Ok(receipt) = execute_tx(vm, &mut block, ctx, &tx, hash)? {
            receipts.push(receipt);
            included.push(tx);
        }
    }
    Ok((
        included,
        BlockOutput {
            receipts,
            writes: block.into_pending(),
        },
    ))
}

/// What a payload did, before the nonce is consumed.
struct Effects {
    outcome: Result<(), ExecError>,
    /// Kept only on success.
    writes: Writes,
    events: Vec<Event>,
    fuel_used: u64,
}

/// Checks admissibility, then runs the payload (`hash` is `stx`'s, for its
/// receipt). Inadmissible: nothing written.
fn execute_tx(
    vm: &Vm,
    block: &mut StateView,
    ctx: &BlockContext,
    stx: &SignedTransaction,
    hash: Hash,
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
    let Some(mut sender) = account(block, &tx.sender)? else {
        return Ok(Err(Inadmissible::UnknownSender(tx.sender)));
    };
    let org = organisation(block, &sender.org)?;
    if is_suspended(org.as_ref()) {
        return Ok(Err(Inadmissible::Suspended(sender.org)));
    }
    if !may_send(org.as_ref()) {
        return Ok(Err(Inadmissible::ReadOnlySender(sender.org)));
    }
    if tx.nonce != sender.nonce {
        return Ok(Err(Inadmissible::BadNonce {
            expected: sender.nonce,
            got: tx.nonce,
        }));
    }

    let effects = match &tx.payload {
        Payload::Call {
            contract,
            method,
            args,
        } => {
            let invocation = Invocation {
                method: method.clone(),
                args: args.to_vec(),
            };
            let caller = contract_caller(tx.sender, &sender.org, org);
            call(vm, block, ctx, caller, contract, &invocation)?
        }
        payload => {
            let mut run = TxRun {
                view: Overlay {
                    base: &*block,
                    writes: Writes::new(),
                },
                vm,
                ctx,
                sender: &sender,
                sender_key: tx.sender,
                tx_hash: hash,
                events: Vec::new(),
            };
            let outcome = run.payload(payload)?;
            Effects {
                outcome,
                writes: run.view.writes,
                events: run.events,
                fuel_used: 0,
            }
        }
    };
    let (status, error, events) = match effects.outcome {
        Ok(()) => {
            // No payload touches its sender's own record (no self-removal, no
            // re-adding an existing key, contracts write only under `c/`), so
            // the nonce update below cannot clobber it.
            debug_assert!(!effects.writes.contains_key(&keys::account(&tx.sender)));
            block.apply(effects.writes);
            (ReceiptStatus::Success, None, effects.events)
        }
        Err(e) => (ReceiptStatus::Failed, Some(e), Vec::new()),
    };
    // The nonce is consumed whatever the outcome.
    sender.nonce += 1;
    let mut nonce = Writes::new();
    nonce.insert(keys::account(&tx.sender), Some(encode(&sender)));
    block.apply(nonce);
    Ok(Ok(Receipt {
        tx: hash,
        status,
        error,
        fuel_used: effects.fuel_used,
        events,
    }))
}

/// The `caller` a contract sees for account `key` of organisation `org_id`
/// (`org` its record, as read).
pub fn contract_caller(key: PublicKey, org_id: &str, org: Option<Organisation>) -> vm::Caller {
    vm::Caller {
        account: key.0,
        org: org_id.to_owned(),
        roles: org.map(|o| o.roles).unwrap_or_default(),
    }
}

/// Runs `call` of the contract at `address` for `caller`.
fn call(
    vm: &Vm,
    block: &mut StateView,
    ctx: &BlockContext,
    caller: vm::Caller,
    address: &Address,
    invocation: &Invocation,
) -> Result<Effects, StorageError> {
    let Some(record) = contract(block, address)? else {
        return Ok(Effects {
            outcome: Err(fail(
                "contract_not_found",
                format!("no contract is deployed at {address}"),
            )),
            writes: Writes::new(),
            events: Vec::new(),
            fuel_used: 0,
        });
    };
    let env = CallEnv {
        contract: *address,
        caller,
        block: ctx.block_info(),
        limits: ctx.limits,
    };
    let outcome = vm.run(&record.code_hash, Entry::Call, invocation, &env, block)?;
    Ok(Effects {
        outcome: outcome.result.map(|_output| ()),
        writes: outcome.writes,
        events: outcome.events,
        fuel_used: outcome.fuel_used,
    })
}

/// Stores `code` (already validated, hashing to `code_hash`) and a new record
/// for the contract at `address`.
fn install(
    writes: &mut Writes,
    address: &Address,
    code: &[u8],
    code_hash: Hash,
    deployer: PublicKey,
    height: u64,
) {
    writes.insert(keys::code(&code_hash), Some(code.to_vec()));
    let record = ContractRecord {
        code_hash,
        deployer,
        deployed_at_height: height,
        upgraded_at_height: None,
    };
    writes.insert(keys::contract(address), Some(encode(&record)));
}

/// Why a genesis contract could not be deployed.
#[derive(Debug, thiserror::Error)]
pub enum GenesisContractError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Deploys a genesis contract into `state` (the genesis writes over empty
/// storage) at height 0, then makes the genesis `calls` in order as the
/// deployer. Its events are not kept: genesis has no receipts.
pub fn deploy_genesis_contract(
    vm: &Vm,
    state: &mut StateView,
    ctx: &BlockContext,
    deployer: PublicKey,
    code: &[u8],
    salt: &Hash,
    calls: &[trellis_genesis::GenesisCall],
) -> Result<Address, GenesisContractError> {
    let refused = |m: String| GenesisContractError::Refused(m);
    let code_hash = vm
        .validate(code, ctx.limits)
        .map_err(|e| refused(format!("invalid module: {e}")))?;
    let address = Address::derive(&deployer, &code_hash, salt);
    if contract(state, &address)?.is_some() {
        return Err(refused(format!("a contract already exists at {address}")));
    }
    let mut writes = Writes::new();
    install(&mut writes, &address, code, code_hash, deployer, ctx.height);
    state.apply(writes);
    for genesis_call in calls {
        let Some(account) = account(state, &deployer)? else {
            return Err(refused(format!("deployer {deployer} is not an account")));
        };
        let invocation = Invocation {
            method: genesis_call.method.clone(),
            args: genesis_call.args.to_vec(),
        };
        let org = organisation(state, &account.org)?;
        let caller = contract_caller(deployer, &account.org, org);
        let effects = call(vm, state, ctx, caller, &address, &invocation)?;
        match effects.outcome {
            Ok(()) => state.apply(effects.writes),
            Err(e) => {
                return Err(refused(format!(
                    "{} failed: {} ({})",
                    genesis_call.method, e.message, e.code
                )));
            }
        }
    }
    Ok(address)
}

/// One transaction's payload (all but contract calls), writing into its own overlay.
struct TxRun<'a> {
    view: Overlay<'a>,
    vm: &'a Vm,
    ctx: &'a BlockContext,
    sender: &'a AccountRecord,
    sender_key: PublicKey,
    tx_hash: Hash,
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
            Payload::Deploy { code, salt } => self.deploy(code, salt),
            Payload::Call { .. } => unreachable!("execute_tx runs contract calls itself"),
        }
    }

    /// Admins only: consortium administration is what deploys and upgrades contracts.
    fn require_admin(&self, what: &str) -> Result<Result<(), ExecError>, StorageError> {
        let admin =
            organisation(&self.view, &self.sender.org)?.is_some_and(|o| o.has_role(Role::Admin));
        Ok(if admin {
            Ok(())
        } else {
            Err(fail(
                "not_admin",
                format!(
                    "only an organisation with the admin role may {what}; {} does not have it",
                    self.sender.org
                ),
            ))
        })
    }

    fn deploy(&mut self, code: &[u8], salt: &Hash) -> Result<Result<(), ExecError>, StorageError> {
        if let Err(e) = self.require_admin("deploy contracts")? {
            return Ok(Err(e));
        }
        let code_hash = match self.vm.validate(code, self.ctx.limits) {
            Ok(hash) => hash,
            Err(e) => return Ok(Err(fail(vm::codes::INVALID_MODULE, e.to_string()))),
        };
        let address = Address::derive(&self.sender_key, &code_hash, salt);
        if contract(&self.view, &address)?.is_some() {
            return Ok(Err(fail(
                "contract_exists",
                format!("a contract is already deployed at {address}"),
            )));
        }
        install(
            &mut self.view.writes,
            &address,
            code,
            code_hash,
            self.sender_key,
            self.ctx.height,
        );
        self.event(
            "contract_deployed",
            vec![
                ("address".into(), address.to_hex()),
                ("code_hash".into(), code_hash.to_hex()),
            ],
        );
        Ok(Ok(()))
    }

    fn upgrade(
        &mut self,
        address: &Address,
        code: &[u8],
    ) -> Result<Result<(), ExecError>, StorageError> {
        let Some(mut record) = contract(&self.view, address)? else {
            return Ok(Err(fail(
                "contract_not_found",
                format!("no contract is deployed at {address}"),
            )));
        };
        let code_hash = match self.vm.validate(code, self.ctx.limits) {
            Ok(hash) => hash,
            Err(e) => return Ok(Err(fail(vm::codes::INVALID_MODULE, e.to_string()))),
        };
        let previous = record.code_hash;
        record.code_hash = code_hash;
        record.upgraded_at_height = Some(self.ctx.height);
        self.view
            .writes
            .insert(keys::code(&code_hash), Some(code.to_vec()));
        self.view
            .writes
            .insert(keys::contract(address), Some(encode(&record)));
        self.event(
            "contract_upgraded",
            vec![
                ("address".into(), address.to_hex()),
                ("previous_code_hash".into(), previous.to_hex()),
                ("code_hash".into(), code_hash.to_hex()),
            ],
        );
        Ok(Ok(()))
    }

    fn system(&mut self, op: &SystemOp) -> Result<Result<(), ExecError>, StorageError> {
        match op {
            SystemOp::Remark { data } => {
                self.event("remark", vec![("bytes".into(), data.len().to_string())]);
            }
            SystemOp::Propose {
                change,
                expires_at_ms,
            } => return self.propose(change, *expires_at_ms),
            SystemOp::Approve { proposal } => return self.approve(proposal),
            SystemOp::AddKey { key, org_admin } => {
                if !self.sender.org_admin {
                    return Ok(Err(fail(
                        "not_org_admin",
                        "only an organisation admin may add keys",
                    )));
                }
                return self.add_account(key, &self.sender.org.clone(), *org_admin);
            }
            SystemOp::RemoveKey { key } => {
                if !self.sender.org_admin {
                    return Ok(Err(fail(
                        "not_org_admin",
                        "only an organisation admin may remove keys",
                    )));
                }
                return self.remove_account(key, Some(&self.sender.org.clone()));
            }
        }
        Ok(Ok(()))
    }

    /// Removes account `key`, if it is one of organisation `of` (any
    /// organisation's when `None`). Its next nonce is kept, so that what it
    /// signed never runs again if it is added back.
    fn remove_account(
        &mut self,
        key: &PublicKey,
        of: Option<&str>,
    ) -> Result<Result<(), ExecError>, StorageError> {
        // The sender's record takes its nonce after the payload: it cannot go.
        if *key == self.sender_key {
            return Ok(Err(fail(
                "self_removal",
                "an account cannot remove its own key",
            )));
        }
        let record = account(&self.view, key)?.filter(|r| of.is_none_or(|org| r.org == org));
        let Some(record) = record else {
            return Ok(Err(match of {
                Some(org) => fail("not_in_org", format!("{key} is not an account of {org}")),
                None => fail("account_not_found", format!("{key} is not an account")),
            }));
        };
        self.view.writes.insert(keys::account(key), None);
        self.view.writes.insert(
            keys::removed_account_nonce(key),
            Some(encode(&record.nonce)),
        );
        self.event(
            "account_removed",
            vec![("org".into(), record.org), ("key".into(), key.to_hex())],
        );
        Ok(Ok(()))
    }

    /// Adds account `key` to organisation `org`.
    fn add_account(
        &mut self,
        key: &PublicKey,
        org: &str,
        org_admin: bool,
    ) -> Result<Result<(), ExecError>, StorageError> {
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
            org: org.to_owned(),
            org_admin,
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
