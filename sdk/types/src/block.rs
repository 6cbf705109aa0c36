//! Blocks, votes and the certificates consensus builds from votes.

use crate::codec::encode;
use crate::crypto::{KeyPair, PublicKey, Signature};
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
    /// Merkle root of the signed transactions, in block order: each leaf
    /// binds a transaction's hash and its signature ([`tx_root`]).
    pub tx_root: Hash,
    /// [`QuorumCertificate::hash`] of the parent's commit certificate the
    /// block carries. With `tx_root` it makes the header, and so the block
    /// hash that proposals and votes sign, cover the whole block.
    pub parent_commit_hash: Hash,
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

    /// The hashes of its transactions, in order.
    pub fn tx_hashes(&self) -> Vec<Hash> {
        self.txs.iter().map(SignedTransaction::hash).collect()
    }

    /// Which part of the body, if any, is not the one its header commits
    /// to; `tx_hashes` are [`Block::tx_hashes`]. A block whose body does not
    /// match is not a block at all: whoever sent it spoiled it, and its
    /// header may well be an honest one.
    pub fn mismatched_body(&self, tx_hashes: &[Hash]) -> Option<&'static str> {
        if self.parent_commit.hash() != self.header.parent_commit_hash {
            Some("the parent's commit certificate does not match parent_commit_hash")
        } else if tx_root_of(tx_hashes, &self.txs) != self.header.tx_root {
            Some("the transactions do not match tx_root")
        } else {
            None
        }
    }
}

pub fn tx_root(txs: &[SignedTransaction]) -> Hash {
    let hashes: Vec<Hash> = txs.iter().map(SignedTransaction::hash).collect();
    tx_root_of(&hashes, txs)
}

/// [`tx_root`] of `txs`, whose hashes the caller already has in `tx_hashes`.
/// A leaf is the hash of a transaction's hash and its signature: the
/// transaction's hash leaves the signature out, and a block's hash must not.
pub fn tx_root_of(tx_hashes: &[Hash], txs: &[SignedTransaction]) -> Hash {
    debug_assert_eq!(tx_hashes.len(), txs.len());
    let leaves: Vec<Hash> = tx_hashes
        .iter()
        .zip(txs)
        .map(|(hash, tx)| tx_leaf(hash, &tx.signature))
        .collect();
    merkle_root(Domain::TxRoot, &leaves)
}

/// A transaction's leaf under [`Header::tx_root`]: its hash, which leaves
/// the signature out, bound to the signature it was committed with.
pub fn tx_leaf(tx_hash: &Hash, signature: &Signature) -> Hash {
    let mut leaf = [0; 96];
    leaf[..32].copy_from_slice(&tx_hash.0);
    leaf[32..].copy_from_slice(&signature.0);
    Domain::SignedTransaction.hash(&leaf)
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

    /// This vote, signed by `key`.
    pub fn sign(self, key: &KeyPair) -> Vote {
        Vote {
            signature: key.sign(&self.signing_hash()),
            voter: key.public(),
            data: self,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vote {
    pub data: VoteData,
    pub voter: PublicKey,
    pub signature: Signature,
}

/// Two votes one validator signed for the same height, round and step of a
/// chain, for different blocks (or a block and nil): proof that it
/// equivocated, which anyone who knows its key can check
/// ([`DuplicateVote::check`]), as with CometBFT's duplicate-vote evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DuplicateVote {
    /// The vote the node held first.
    pub first: Vote,
    /// The one that conflicts with it.
    pub second: Vote,
}

impl DuplicateVote {
    /// Why the two votes prove nothing, if they do not.
    pub fn check(&self) -> Result<(), &'static str> {
        let (a, b) = (&self.first, &self.second);
        if a.voter != b.voter {
            return Err("the votes are by different validators");
        }
        let step = |d: &VoteData| (d.chain_id.clone(), d.height, d.round, d.kind);
        if step(&a.data) != step(&b.data) {
            return Err("the votes are for different steps");
        }
        if a.data.block == b.data.block {
            return Err("the votes agree");
        }
        for vote in [a, b] {
            vote.voter
                .verify(&vote.data.signing_hash(), &vote.signature)
                .map_err(|_| "a vote's signature is not its validator's")?;
        }
        Ok(())
    }
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
    /// What a block's header holds of the certificate it carries.
    pub fn hash(&self) -> Hash {
        Domain::Certificate.hash(&encode(self))
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;
    use crate::tx::{Payload, SystemOp, Transaction};

    fn remark(key: &KeyPair, nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: "test".into(),
            sender: key.public(),
            nonce,
            expires_at_ms: 1,
            payload: Payload::System(SystemOp::Remark {
                data: vec![nonce as u8].into(),
            }),
        }
        .sign(key)
    }

    fn block(txs: Vec<SignedTransaction>) -> Block {
        let parent_commit = QuorumCertificate::genesis(Hash([1; 32]));
        Block {
            header: Header {
                chain_id: "test".into(),
                height: 1,
                round: 0,
                parent: Hash([1; 32]),
                tx_root: tx_root(&txs),
                parent_commit_hash: parent_commit.hash(),
                receipts_root: Hash::ZERO,
                state_root: Hash::ZERO,
                timestamp_ms: 1,
                proposer: PublicKey([0; 32]),
            },
            parent_commit,
            txs,
        }
    }

    #[test]
    fn the_header_commits_to_every_part_of_the_body() {
        let key = KeyPair::insecure_from_label("sender");
        let honest = block(vec![remark(&key, 0), remark(&key, 1)]);
        assert_eq!(honest.mismatched_body(&honest.tx_hashes()), None);

        // Each spoiled copy keeps the header, and so the block hash.
        let mut signature = honest.clone();
        signature.txs[1].signature = key.sign(&Hash([9; 32]));
        let mut certificate = honest.clone();
        certificate.parent_commit.round = 1;
        let mut order = honest.clone();
        order.txs.swap(0, 1);
        let mut dropped = honest.clone();
        dropped.txs.pop();
        for (spoiled, part) in [
            (signature, "tx_root"),
            (certificate, "parent_commit_hash"),
            (order, "tx_root"),
            (dropped, "tx_root"),
        ] {
            assert_eq!(spoiled.hash(), honest.hash());
            let mismatch = spoiled.mismatched_body(&spoiled.tx_hashes());
            assert!(mismatch.is_some_and(|m| m.contains(part)), "{mismatch:?}");
        }
    }

    #[test]
    fn two_signed_votes_for_one_step_and_different_blocks_prove_equivocation() {
        let key = KeyPair::insecure_from_label("validator");
        let vote = |block: Option<Hash>, round: u64| {
            let data = VoteData {
                chain_id: "test".into(),
                height: 7,
                round,
                kind: VoteKind::Precommit,
                block,
            };
            data.sign(&key)
        };
        let proof = |first: Vote, second: Vote| DuplicateVote { first, second }.check();
        assert_eq!(proof(vote(Some(Hash([1; 32])), 0), vote(None, 0)), Ok(()));
        assert_eq!(
            proof(vote(Some(Hash([1; 32])), 0), vote(Some(Hash([2; 32])), 0)),
            Ok(())
        );
        assert_eq!(proof(vote(None, 0), vote(None, 0)), Err("the votes agree"));
        assert_eq!(
            proof(vote(None, 0), vote(Some(Hash([1; 32])), 1)),
            Err("the votes are for different steps")
        );
        let other = KeyPair::insecure_from_label("other");
        let mut stranger = vote(None, 0);
        stranger.voter = other.public();
        assert_eq!(
            proof(vote(Some(Hash([1; 32])), 0), stranger.clone()),
            Err("the votes are by different validators")
        );
        let mut forged = vote(None, 0);
        forged.signature = other.sign(&forged.data.signing_hash());
        assert_eq!(
            proof(vote(Some(Hash([1; 32])), 0), forged),
            Err("a vote's signature is not its validator's")
        );
    }
}
