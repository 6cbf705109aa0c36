//! Transactions: what a member signs and submits.

use crate::bytes::{Bytes, fixed_bytes};
use crate::codec::encode;
use crate::crypto::{KeyPair, PublicKey, Signature, SignatureError};
use crate::governance::Change;
use crate::hash::{Domain, Hash};
use serde::{Deserialize, Serialize};

fixed_bytes!(
    /// A contract's address: derived from deployer, code hash and salt.
    Address,
    32
);

impl Address {
    pub fn derive(deployer: &PublicKey, code_hash: &Hash, salt: &Hash) -> Address {
        let mut h = Domain::ContractAddress.hasher();
        h.update(&deployer.0);
        h.update(&code_hash.0);
        h.update(&salt.0);
        Address(*h.finalize().as_bytes())
    }

    /// The raw state key of this contract's own key `key`: contracts' keys
    /// live under `c/<32-byte address>/`.
    pub fn state_key(&self, key: &[u8]) -> Vec<u8> {
        [b"c/".as_slice(), &self.0, b"/", key].concat()
    }

    /// The contract and its own key a raw state key names: the inverse of
    /// [`Address::state_key`]; `None` for a key of no contract.
    pub fn split_state_key(key: &[u8]) -> Option<(Address, &[u8])> {
        let (address, rest) = key.strip_prefix(b"c/")?.split_first_chunk::<32>()?;
        Some((Address(*address), rest.strip_prefix(b"/")?))
    }
}

/// The unsigned body of a transaction. Its hash is its id and what is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transaction {
    /// Must equal the chain's id: a transaction signed for one chain is void on every other.
    pub chain_id: String,
    /// The signing account; must belong to a member organisation.
    pub sender: PublicKey,
    /// The sender's next sequence number; each value is usable once.
    pub nonce: u64,
    /// Unix milliseconds; the transaction is void in any block stamped at or after this.
    pub expires_at_ms: u64,
    pub payload: Payload,
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// Call `method` of the contract at `contract` with canonically encoded `args`.
    Call {
        contract: Address,
        method: String,
        args: Bytes,
    },
    /// Deploy WASM `code`; the address is [`Address::derive`] of sender, code hash and salt.
    Deploy { code: Bytes, salt: Hash },
    /// An operation the node executes natively.
    System(SystemOp),
}

/// Built-in operations, executed natively by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemOp {
    /// An organisation admin adds an account key to its own organisation.
    AddKey { key: PublicKey, org_admin: bool },
    /// An organisation admin removes an account key of its own organisation.
    RemoveKey { key: PublicKey },
    /// Records `data` on chain and changes nothing else (notes, liveness probes, load tests).
    Remark { data: Bytes },
    /// An account of an admin organisation proposes `change` to the
    /// consortium, its organisation approving it; it is carried out at once
    /// if that is already a majority of the admin organisations
    /// ([`crate::governance`]). The proposal is known by this transaction's hash.
    Propose {
        change: Change,
        /// Unix milliseconds, after the block's time and at most
        /// [`crate::governance::MAX_PROPOSAL_LIFETIME_MS`] after it.
        expires_at_ms: u64,
    },
    /// An account of an admin organisation approves open proposal `proposal`
    /// for its organisation; the approval that makes the majority carries
    /// the change out.
    Approve { proposal: Hash },
}

impl Transaction {
    /// The transaction's id: the domain hash of its canonical encoding.
    pub fn hash(&self) -> Hash {
        Domain::Transaction.hash(&encode(self))
    }

    pub fn sign(self, key: &KeyPair) -> SignedTransaction {
        let signature = key.sign(&self.hash());
        SignedTransaction {
            tx: self,
            signature,
        }
    }
}

/// A transaction with the sender's signature over its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedTransaction {
    pub tx: Transaction,
    pub signature: Signature,
}

impl SignedTransaction {
    pub fn hash(&self) -> Hash {
        self.tx.hash()
    }

    /// Single verification; hot paths use [`crate::crypto::verify_batch`].
    pub fn verify(&self) -> Result<(), SignatureError> {
        self.tx.sender.verify(&self.hash(), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contract_state_key_splits_back_into_its_address_and_own_key() {
        let address = Address([7; 32]);
        for own in [&b""[..], b"p/\x00\x01", b"/"] {
            let key = address.state_key(own);
            assert_eq!(Address::split_state_key(&key), Some((address, own)));
        }
        let key = address.state_key(b"x");
        for other in [
            &b"sys/params"[..],
            b"c/short",
            &key[..34],
            &[b"q".as_slice(), &key[1..]].concat(),
        ] {
            assert_eq!(Address::split_state_key(other), None, "{other:?}");
        }
    }
}
