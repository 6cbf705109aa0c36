//! The authenticated state's hash function and proof verification.
//!
//! State is a Jellyfish Merkle tree (the `jmt` crate) keyed by the domain hash
//! of each state key. [`verify_state_proof`] is what the SDK and auditors call
//! to check a value (or its absence) against a committed header's state root.

use crate::bytes::Bytes;
use crate::hash::{Domain, Hash};
use serde::{Deserialize, Serialize};

/// blake3 keyed for the state tree, as jmt's hasher.
#[derive(Clone)]
pub struct StateHasher(blake3::Hasher);

impl jmt::SimpleHasher for StateHasher {
    fn new() -> Self {
        StateHasher(Domain::StateTree.hasher())
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finalize(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// Where a state key sits in the tree.
pub fn key_hash(key: &[u8]) -> jmt::KeyHash {
    jmt::KeyHash(Domain::StateKey.hash(key).0)
}

pub type SparseProof = jmt::proof::SparseMerkleProof<StateHasher>;

/// A value (or its absence) with the proof that ties it to `state_root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateProof {
    pub key: Bytes,
    pub value: Option<Bytes>,
    /// The block whose header carries `state_root`.
    pub height: u64,
    pub state_root: Hash,
    /// Canonical encoding of the Merkle proof.
    pub proof: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof bytes are malformed: {0}")]
    Malformed(String),
    #[error("proof does not match the state root: {0}")]
    Mismatch(String),
}

/// Checks that `key` holds `value` (or is absent, for `None`) in the state whose root is `state_root`.
pub fn verify_state_proof(
    state_root: &Hash,
    key: &[u8],
    value: Option<&[u8]>,
    proof: &[u8],
) -> Result<(), ProofError> {
    let proof: SparseProof =
        crate::codec::decode(proof).map_err(|e| ProofError::Malformed(e.to_string()))?;
    proof
        .verify(jmt::RootHash(state_root.0), key_hash(key), value)
        .map_err(|e| ProofError::Mismatch(e.to_string()))
}

impl StateProof {
    /// Verifies this proof against its own `state_root`; the caller must also
    /// check that root against a header it trusts.
    pub fn verify(&self) -> Result<(), ProofError> {
        verify_state_proof(
            &self.state_root,
            &self.key,
            self.value.as_deref(),
            &self.proof,
        )
    }
}
