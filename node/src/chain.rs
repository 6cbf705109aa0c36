//! The chain as consensus sees it: genesis, and building, validating and
//! committing the next block on top of the committed head.
//!
//! Everything here is deterministic given the committed state and the block,
//! except two local judgements that only affect how this node votes: the
//! proposer's choice of timestamp and the check that a proposed timestamp is
//! not too far ahead of our clock. A block is executed once per node: the
//! result of building or validating it is kept until it commits or the height
//! moves on, and committing writes exactly that result.

use crate::consensus::ValidatorSet;
use crate::execution::{self, BlockContext, BlockOutput};
use crate::mempool::Mempool;
use crate::state::{StateUpdate, Writes};
use crate::storage::{ChainHead, StagedBlock, Storage, StorageError};
use crate::vm::{self, Limits, StateView, Vm};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trellis_genesis::{Genesis, GenesisContract};
use trellis_types::block::{receipts_root, tx_root, tx_root_of};
use trellis_types::codec::encode;
use trellis_types::crypto::verify_batch;
use trellis_types::{
    Block, ChainParams, Hash, Header, KeyPair, PublicKey, QuorumCertificate, Receipt,
    SignedTransaction,
};

/// How far ahead of our clock a proposed block's timestamp may be.
pub const MAX_CLOCK_DRIFT_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(
        "the data directory holds a chain whose genesis hash is {stored}, but the genesis given hashes to {given}: use another data directory or the matching genesis"
    )]
    GenesisMismatch { stored: String, given: String },
    #[error("genesis contract {name:?} cannot be deployed: {reason}")]
    GenesisContract { name: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The code of a genesis contract as this build ships it: the modules embedded
/// in `trellis-genesis` ([`trellis_genesis::contract_code`]), by name.
pub fn embedded_contract_code(contract: &GenesisContract) -> Option<Vec<u8>> {
    trellis_genesis::contract_code(&contract.name).map(<[u8]>::to_vec)
}

/// Writes the genesis state and block 0 into empty storage; on storage that
/// already holds a chain, checks that it is this genesis's chain. Genesis
/// contracts get their code from [`embedded_contract_code`].
pub fn initialise(storage: &Storage, genesis: &Genesis, vm: &Vm) -> Result<ChainHead, ChainError> {
    initialise_with(storage, genesis, vm, embedded_contract_code)
}

/// [`initialise`], with genesis contracts' code from `code_for`.
pub fn initialise_with(
    storage: &Storage,
    genesis: &Genesis,
    vm: &Vm,
    code_for: impl Fn(&GenesisContract) -> Option<Vec<u8>>,
) -> Result<ChainHead, ChainError> {
    let genesis_hash = genesis.hash();
    if let Some(head) = storage.head() {
        let stored = crate::state::StateRead::get(storage, execution::keys::GENESIS)?;
        return if stored.as_deref() == Some(genesis_hash.0.as_slice()) {
            Ok(head)
        } else {
            Err(ChainError::GenesisMismatch {
                stored: stored.map(hex::encode).unwrap_or_else(|| "none".into()),
                given: genesis_hash.to_hex(),
            })
        };
    }
    let writes = genesis_state(storage, genesis, vm, code_for)?;
    let update = storage.prepare_state(0, writes)?;
    let parent_commit = QuorumCertificate::genesis(genesis_hash);
    let block = Block {
        header: Header {
            chain_id: genesis.chain_id.clone(),
            height: 0,
            round: 0,
            parent: genesis_hash,
            tx_root: tx_root(&[]),
            parent_commit_hash: parent_commit.hash(),
            receipts_root: receipts_root(&[]),
            state_root: update.root,
            timestamp_ms: genesis.genesis_time_ms,
            proposer: PublicKey([0; 32]),
        },
        parent_commit,
        txs: Vec::new(),
    };
    let certificate = QuorumCertificate::genesis(block.hash());
    storage.commit_block(Arc::new(block), &certificate, Vec::new(), update)?;
    storage.head().ok_or_else(|| {
        StorageError::Corrupt {
            what: "no head after writing genesis".into(),
        }
        .into()
    })
}

/// The state genesis starts from: parameters, organisations and accounts.
pub fn genesis_writes(genesis: &Genesis) -> Writes {
    let mut writes = Writes::new();
    writes.insert(
        execution::keys::PARAMS.to_vec(),
        Some(encode(&genesis.params)),
    );
    writes.insert(
        execution::keys::GENESIS.to_vec(),
        Some(genesis.hash().0.to_vec()),
    );
    for org in genesis.organisations() {
        writes.insert(execution::keys::organisation(&org.id), Some(encode(&org)));
    }
    for account in genesis.accounts() {
        let record = execution::AccountRecord {
            org: account.org,
            org_admin: account.org_admin,
            nonce: 0,
        };
        writes.insert(
            execution::keys::account(&account.key),
            Some(encode(&record)),
        );
    }
    writes
}

/// Genesis state: [`genesis_writes`], then each genesis contract deployed (and
/// followed by its genesis `calls`) in listed order at height 0. `storage`
/// is empty: it only gives the contracts' state view a base.
fn genesis_state(
    storage: &Storage,
    genesis: &Genesis,
    vm: &Vm,
    code_for: impl Fn(&GenesisContract) -> Option<Vec<u8>>,
) -> Result<Writes, ChainError> {
    let mut state = StateView::new(storage.clone(), genesis_writes(genesis));
    let ctx = BlockContext {
        chain_id: genesis.chain_id.clone(),
        height: 0,
        timestamp_ms: genesis.genesis_time_ms,
        max_expiry_ms: genesis.params.max_expiry_ms,
        limits: Limits::from_params(&genesis.params),
    };
    for contract in &genesis.contracts {
        let refused = |reason: String| ChainError::GenesisContract {
            name: contract.name.clone(),
            reason,
        };
        let code =
            code_for(contract).ok_or_else(|| refused("this build has no code for it".into()))?;
        let hash = vm::code_hash(&code);
        if hash != contract.code_hash {
            return Err(refused(format!(
                "its code hashes to {hash}, the genesis says {}",
                contract.code_hash
            )));
        }
        let address = execution::deploy_genesis_contract(
            vm,
            &mut state,
            &ctx,
            contract.deployer,
            &code,
            &contract.salt,
            &contract.calls,
        )
        .map_err(|e| match e {
            execution::GenesisContractError::Storage(e) => ChainError::Storage(e),
            execution::GenesisContractError::Refused(reason) => refused(reason),
        })?;
        debug_assert_eq!(address, contract.address());
    }
    Ok(state.into_pending())
}

/// Why a proposed block is not valid. The node prevotes nil for it.
#[derive(Debug, thiserror::Error)]
pub enum InvalidBlock {
    #[error("{0}")]
    Header(String),
    /// Not the body its header commits to: spoiled by whoever sent it.
    #[error("body: {0}")]
    Body(&'static str),
    #[error("parent commit: {0}")]
    ParentCommit(String),
    #[error("transaction {index} has a bad signature")]
    Signature { index: usize },
    #[error(transparent)]
    Execution(#[from] execution::BlockError),
    #[error("{what} root mismatch: header {header}, computed {computed}")]
    Root {
        what: &'static str,
        header: Hash,
        computed: Hash,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A block's transaction signatures: still to be checked by validation, or
/// checked beforehand with this verdict.
pub enum Signatures {
    Unchecked,
    Checked(Result<(), InvalidBlock>),
}

/// Checks each of `blocks`' transaction signatures on a thread of its own,
/// block after block, so that block sync checks the next blocks' while the
/// driver executes one (a catching-up node's second core was otherwise idle).
pub struct SignatureChecks {
    verdicts: std::sync::mpsc::Receiver<Result<(), InvalidBlock>>,
}

impl SignatureChecks {
    pub fn spawn(blocks: Vec<Arc<Block>>) -> SignatureChecks {
        let (send, verdicts) = std::sync::mpsc::channel();
        let checking = std::thread::Builder::new()
            .name("sync-signatures".into())
            .spawn(move || {
                for block in blocks {
                    // Stops early when the blocks' validation did.
                    if send.send(check_signatures(&block)).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = checking {
            // No verdicts then: validation checks each block itself.
            tracing::warn!(error = %e, "no thread to check synced blocks' signatures");
        }
        SignatureChecks { verdicts }
    }

    /// The next block's verdict, once it is in.
    pub fn next(&self) -> Signatures {
        match self.verdicts.recv() {
            Ok(verdict) => Signatures::Checked(verdict),
            Err(_) => Signatures::Unchecked,
        }
    }
}

/// Every transaction signature of `block`, in one batch.
fn check_signatures(block: &Block) -> Result<(), InvalidBlock> {
    let triples: Vec<_> = block
        .txs
        .iter()
        .map(|t| (t.tx.sender, t.hash(), t.signature))
        .collect();
    match first_bad_signature(&triples) {
        Some(index) => Err(InvalidBlock::Signature { index }),
        None => Ok(()),
    }
}

fn first_bad_signature(triples: &[(PublicKey, Hash, trellis_types::Signature)]) -> Option<usize> {
    verify_batch(triples).iter().position(Result::is_err)
}

/// What a header commits to of its block's body.
struct Body {
    tx_root: Hash,
    parent_commit_hash: Hash,
}

struct Executed {
    receipts: Vec<Receipt>,
    update: StateUpdate,
}

pub struct Chain {
    storage: Storage,
    vm: Arc<Vm>,
    chain_id: String,
    params: ChainParams,
    validators: ValidatorSet,
    mempool: Arc<Mempool>,
    /// Blocks executed at the current height, by hash (which covers the
    /// whole block: [`Block::mismatched_body`]).
    executed: BTreeMap<Hash, Executed>,
    /// How long building a block may spend choosing and executing transactions.
    build_budget: Option<Duration>,
}

impl Chain {
    pub fn new(storage: Storage, genesis: &Genesis, mempool: Arc<Mempool>, vm: Arc<Vm>) -> Self {
        Chain {
            storage,
            vm,
            chain_id: genesis.chain_id.clone(),
            params: genesis.params.clone(),
            validators: ValidatorSet::new(genesis.validator_keys())
                .expect("a validated genesis names at least one validator"),
            mempool,
            executed: BTreeMap::new(),
            build_budget: None,
        }
    }

    /// Limits the time [`Chain::build`] spends executing transactions: the
    /// block must reach the other validators, and be executed by them,
    /// before their propose timeout. Without it, a block holds as many
    /// transactions as the chain's limits allow.
    pub fn with_build_budget(mut self, budget: Duration) -> Self {
        self.build_budget = Some(budget);
        self
    }

    pub fn head(&self) -> Result<ChainHead, StorageError> {
        self.storage.head().ok_or_else(|| StorageError::Corrupt {
            what: "chain has no genesis".into(),
        })
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// Builds the block for (head + 1, `round`) from waiting transactions.
    pub fn build(
        &mut self,
        round: u64,
        proposer: &KeyPair,
        now_ms: u64,
    ) -> Result<Block, StorageError> {
        let head = self.head()?;
        let height = head.height + 1;
        let ctx = BlockContext {
            chain_id: self.chain_id.clone(),
            height,
            timestamp_ms: now_ms.max(head.timestamp_ms + 1),
            max_expiry_ms: self.params.max_expiry_ms,
            limits: Limits::from_params(&self.params),
        };
        let deadline = self.build_budget.map(|budget| Instant::now() + budget);
        let candidates = self.mempool.candidates(
            &self.storage,
            self.params.max_block_txs as usize,
            self.params.max_block_bytes,
        )?;
        let (txs, output) =
            execution::execute_candidates(&self.vm, &self.storage, &ctx, candidates, deadline)?;
        let parent_commit = self
            .storage
            .commit_certificate(head.height)?
            .ok_or_else(|| StorageError::Corrupt {
                what: format!("no commit certificate for height {}", head.height),
            })?;
        // Execution gives each transaction a receipt naming its hash, in
        // order: the transactions root without hashing them again.
        let tx_hashes: Vec<Hash> = output.receipts.iter().map(|r| r.tx).collect();
        let body = Body {
            tx_root: tx_root_of(&tx_hashes, &txs),
            parent_commit_hash: parent_commit.hash(),
        };
        let (header, executed) = self.seal(
            &ctx,
            round,
            head.block_hash,
            proposer.public(),
            body,
            output,
        )?;
        let block = Block {
            header,
            parent_commit,
            txs,
        };
        self.executed.insert(block.hash(), executed);
        Ok(block)
    }

    fn seal(
        &self,
        ctx: &BlockContext,
        round: u64,
        parent: Hash,
        proposer: PublicKey,
        body: Body,
        output: BlockOutput,
    ) -> Result<(Header, Executed), StorageError> {
        let update = self.storage.prepare_state(ctx.height, output.writes)?;
        let header = Header {
            chain_id: ctx.chain_id.clone(),
            height: ctx.height,
            round,
            parent,
            tx_root: body.tx_root,
            parent_commit_hash: body.parent_commit_hash,
            receipts_root: receipts_root(&output.receipts),
            state_root: update.root,
            timestamp_ms: ctx.timestamp_ms,
            proposer,
        };
        Ok((
            header,
            Executed {
                receipts: output.receipts,
                update,
            },
        ))
    }

    /// Checks a block proposed by another validator before voting for it:
    /// `None` while its timestamp is more than `MAX_CLOCK_DRIFT_MS` ahead of
    /// our clock (not judged yet: the same block may be proposed again when
    /// our clock has caught up, and a verdict that depends on when it
    /// arrived must not stick to it), else [`Chain::validate`]'s verdict.
    pub fn validate_proposal(
        &mut self,
        block: &Block,
        now_ms: u64,
    ) -> Option<Result<(), InvalidBlock>> {
        let timestamp = block.header.timestamp_ms;
        if timestamp > now_ms.saturating_add(MAX_CLOCK_DRIFT_MS) {
            tracing::warn!(
                height = block.header.height,
                block = %block.hash(),
                timestamp,
                now_ms,
                "proposal ahead of our clock: not judged until proposed again"
            );
            return None;
        }
        Some(self.validate(block))
    }

    /// Checks a block a peer sent by block sync: the next height, with a
    /// valid commit certificate for exactly this block, and valid itself,
    /// its signatures by `signatures`' verdict when they were checked
    /// beforehand.
    pub fn validate_synced(
        &mut self,
        block: &Block,
        certificate: &QuorumCertificate,
        signatures: Signatures,
    ) -> Result<(), InvalidBlock> {
        let head = self.head()?;
        if block.header.height != head.height + 1
            || certificate.block != block.hash()
            || certificate.height != block.header.height
        {
            return Err(InvalidBlock::Header("not the certified next block".into()));
        }
        self.validators
            .verify_certificate(&self.chain_id, certificate)
            .map_err(|e| InvalidBlock::Header(format!("commit certificate: {e}")))?;
        self.validate_with(block, signatures)
    }

    /// Checks a block and executes it. Every check is deterministic, so all
    /// honest nodes agree whatever their clocks say: this is what a block
    /// certified by a quorum (decided or synced) must pass.
    pub fn validate(&mut self, block: &Block) -> Result<(), InvalidBlock> {
        self.validate_with(block, Signatures::Unchecked)
    }

    fn validate_with(&mut self, block: &Block, signatures: Signatures) -> Result<(), InvalidBlock> {
        let tx_hashes = block.tx_hashes();
        if let Some(mismatch) = block.mismatched_body(&tx_hashes) {
            return Err(InvalidBlock::Body(mismatch));
        }
        if self.executed.contains_key(&block.hash()) {
            return Ok(());
        }
        let head = self.head()?;
        let h = &block.header;
        let bad = |m: String| Err(InvalidBlock::Header(m));
        if h.chain_id != self.chain_id {
            return bad(format!("chain id {}", h.chain_id));
        }
        if h.height != head.height + 1 {
            return bad(format!("height {} on head {}", h.height, head.height));
        }
        if h.parent != head.block_hash {
            return bad(format!(
                "parent {} is not the head {}",
                h.parent, head.block_hash
            ));
        }
        if h.timestamp_ms <= head.timestamp_ms {
            return bad(format!(
                "timestamp {} not after the parent's {}",
                h.timestamp_ms, head.timestamp_ms
            ));
        }
        if block.txs.len() > self.params.max_block_txs as usize {
            return bad(format!(
                "{} transactions, limit {}",
                block.txs.len(),
                self.params.max_block_txs
            ));
        }
        // Each as admission would weigh it: a proposer may not include what
        // every mempool refuses.
        let mut bytes = 0u64;
        for (index, tx) in block.txs.iter().enumerate() {
            let len = encode(tx).len() as u64;
            if len > u64::from(self.params.max_tx_bytes) {
                return bad(format!(
                    "transaction {index} is {len} bytes, limit {}",
                    self.params.max_tx_bytes
                ));
            }
            bytes += len;
        }
        if bytes > self.params.max_block_bytes {
            return bad(format!(
                "{bytes} bytes of transactions, limit {}",
                self.params.max_block_bytes
            ));
        }
        self.check_parent_commit(block, &head)?;
        match signatures {
            Signatures::Unchecked => self.verify_signatures(&block.txs, &tx_hashes)?,
            Signatures::Checked(verdict) => verdict?,
        }

        let ctx = BlockContext {
            chain_id: self.chain_id.clone(),
            height: h.height,
            timestamp_ms: h.timestamp_ms,
            max_expiry_ms: self.params.max_expiry_ms,
            limits: Limits::from_params(&self.params),
        };
        let output =
            execution::execute_block(&self.vm, &self.storage, &ctx, &block.txs, &tx_hashes)?;
        let body = Body {
            tx_root: h.tx_root,
            parent_commit_hash: h.parent_commit_hash,
        };
        let (computed, executed) = self.seal(&ctx, h.round, h.parent, h.proposer, body, output)?;
        for (what, header, computed) in [
            ("receipts", h.receipts_root, computed.receipts_root),
            ("state", h.state_root, computed.state_root),
        ] {
            if header != computed {
                return Err(InvalidBlock::Root {
                    what,
                    header,
                    computed,
                });
            }
        }
        self.executed.insert(block.hash(), executed);
        Ok(())
    }

    fn check_parent_commit(&self, block: &Block, head: &ChainHead) -> Result<(), InvalidBlock> {
        let qc = &block.parent_commit;
        if qc.block != head.block_hash || qc.height != head.height {
            return Err(InvalidBlock::ParentCommit(format!(
                "certifies {} at height {}, the head is {} at {}",
                qc.block, qc.height, head.block_hash, head.height
            )));
        }
        if head.height == 0 {
            return if *qc == QuorumCertificate::genesis(head.block_hash) {
                Ok(())
            } else {
                Err(InvalidBlock::ParentCommit(
                    "not the genesis certificate".into(),
                ))
            };
        }
        self.validators
            .verify_certificate(&self.chain_id, qc)
            .map_err(|e| InvalidBlock::ParentCommit(e.to_string()))
    }

    /// Verifies, in one batch, the signatures this node has not already
    /// verified at admission; `hashes` are the transactions', in order.
    fn verify_signatures(
        &self,
        txs: &[SignedTransaction],
        hashes: &[Hash],
    ) -> Result<(), InvalidBlock> {
        let unseen: Vec<(usize, (PublicKey, Hash, trellis_types::Signature))> = txs
            .iter()
            .zip(hashes)
            .enumerate()
            .map(|(i, (t, hash))| (i, (t.tx.sender, *hash, t.signature)))
            .filter(|(_, (_, hash, sig))| !self.mempool.verified(hash, sig))
            .collect();
        let triples: Vec<_> = unseen.iter().map(|(_, t)| *t).collect();
        match first_bad_signature(&triples) {
            Some(k) => Err(InvalidBlock::Signature { index: unseen[k].0 }),
            None => Ok(()),
        }
    }

    /// Persists a decided block with the result of executing it here.
    pub fn commit(
        &mut self,
        block: &Arc<Block>,
        certificate: &QuorumCertificate,
    ) -> Result<(), StorageError> {
        self.stage(block, certificate)?.write()
    }

    /// [`Chain::commit`] up to making the block the head (see
    /// [`Storage::stage_block`]); it is durable once the returned block is
    /// written.
    pub fn stage(
        &mut self,
        block: &Arc<Block>,
        certificate: &QuorumCertificate,
    ) -> Result<StagedBlock, StorageError> {
        // By hash, which covers the whole block: what executing it here gave
        // is what its receipts and state are.
        let executed = match self.executed.remove(&block.hash()) {
            Some(e) => e,
            None => {
                // Decided by a quorum without our having judged it (e.g. we
                // timed out first): validate now; a quorum vouches for it.
                self.validate(block)
                    .map_err(|e| StorageError::InvalidBlock {
                        height: block.header.height,
                        reason: format!("a quorum committed a block this node finds invalid: {e}"),
                    })?;
                self.executed
                    .remove(&block.hash())
                    .expect("validate stores the executed block")
            }
        };
        let committed: Vec<Hash> = executed.receipts.iter().map(|r| r.tx).collect();
        let staged = self.storage.stage_executed(
            Arc::clone(block),
            certificate,
            executed.receipts,
            executed.update,
        )?;
        self.executed.clear();
        // Housekeeping: the staged block must reach the writer whatever it
        // finds; what it misses fails its checks at execution.
        let pruned = self
            .mempool
            .prune(&self.storage, &committed, block.header.timestamp_ms);
        if let Err(e) = pruned {
            let height = block.header.height;
            tracing::warn!(error = %e, height, "pruning the mempool after a block failed");
        }
        Ok(staged)
    }
}

#[cfg(test)]
pub(crate) mod tests;
