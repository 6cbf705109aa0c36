//! Blocks, votes and the certificates consensus builds from votes.

use crate::codec::encode;
use crate::crypto::{PublicKey, Signature};
use crate::hash::{Domain, Hash, merkle_root};
use crate::receipt::Receipt;
use crate::tx::SignedTransaction;
use serde::{Deserialize, Serialize};

/// The part of a block that its hash covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Header {
    pub chain_id: String,
    pub height: u64,
    /// The consensus round in which the block was proposed.
    pub round: u64,
    /// Hash of the parent block's header (the genesis hash for height 1).
    pub parent: Hash,
    /// Merkle root of the transaction hashes, in block order.
    pub tx_root: Hash,
    /// Merkle root of the receipt hashes, in block order.
    pub receipts_root: Hash,
    /// Root of the authenticated state after executing this block.
    pub state_root: Hash,
    /// Unix milliseconds chosen by the proposer; strictly above the parent's.
    pub timestamp_ms: u64,
    /// The validator that proposed the block.
    pub proposer: PublicKey,
}

impl Header {
    pub fn hash(&self) -> Hash {
        Domain::Header.hash(&encode(self))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Block {
    pub header: Header,
    /// Commit certificate of the parent block, which this block extends.
    pub parent_commit: QuorumCertificate,
    pub txs: Vec<SignedTransaction>,
}

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }
}

pub fn tx_root(txs: &[SignedTransaction]) -> Hash {
    let leaves: Vec<Hash> = txs.iter().map(SignedTransaction::hash).collect();
    tx_root_of(&leaves)
}

/// [`tx_root`] of the transactions with these hashes, in order.
pub fn tx_root_of(tx_hashes: &[Hash]) -> Hash {
    merkle_root(Domain::TxRoot, tx_hashes)
}

pub fn receipts_root(receipts: &[Receipt]) -> Hash {
    let leaves: Vec<Hash> = receipts.iter().map(Receipt::hash).collect();
    merkle_root(Domain::ReceiptRoot, &leaves)
}

/// The two voting steps of a consensus round.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    Prevote,
    Precommit,
}

/// What a validator signs when it votes: a block, or nil (`block: None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VoteData {
    pub chain_id: String,
    pub height: u64,
    pub round: u64,
    pub kind: VoteKind,
    pub block: Option<Hash>,
}

impl VoteData {
    pub fn signing_hash(&self) -> Hash {
        Domain::Vote.hash(&encode(self))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vote {
    pub data: VoteData,
    pub voter: PublicKey,
    pub signature: Signature,
}

/// Precommits of a quorum (more than two thirds of the validators) for one
/// block: the proof that the block is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuorumCertificate {
    pub height: u64,
    pub round: u64,
    pub block: Hash,
    /// (validator, signature over the precommit's [`VoteData`]), sorted by validator, one each.
    pub votes: Vec<(PublicKey, Signature)>,
}

impl QuorumCertificate {
    /// The certificate of the genesis block: it carries no votes and is valid by definition.
    pub fn genesis(genesis_block: Hash) -> Self {
        QuorumCertificate {
            height: 0,
            round: 0,
            block: genesis_block,
            votes: Vec::new(),
        }
    }

    /// The precommit each signature in this certificate signed.
    pub fn vote_data(&self, chain_id: &str) -> VoteData {
        VoteData {
            chain_id: chain_id.to_owned(),
            height: self.height,
            round: self.round,
            kind: VoteKind::Precommit,
            block: Some(self.block),
        }
    }
}
