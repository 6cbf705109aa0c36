//! The authenticated state's hash function and proof verification.
//!
//! State is a Jellyfish Merkle tree (the `jmt` crate) keyed by the domain hash
//! of each state key. [`verify_state_proof`] is what the SDK and auditors call
//! to check a value (or its absence) against a committed header's state root.

use crate::bytes::Bytes;
use crate::hash::{Domain, Hash};
use serde::{Deserialize, Serialize};

/// blake3 keyed for the state tree, as jmt's hasher.
///
/// jmt makes a new hasher for every node it hashes (a separator and two
/// digests, 80 bytes), and a blake3 hasher is about 2 KB: copying one in and
/// out cost as much as the hashing. So short inputs are gathered here and
/// hashed at the end by [`Domain::hash`] (a per-thread hasher, reset, never
/// copied); a longer input (a large state value) gets a hasher of its own.
#[derive(Clone)]
pub struct StateHasher(Input);

#[derive(Clone)]
enum Input {
    Short {
        bytes: [u8; SHORT_INPUT],
        len: usize,
    },
    Long(Box<blake3::Hasher>),
}

/// Inputs up to this long are gathered: a tree node's is 80 bytes.
const SHORT_INPUT: usize = 128;

impl jmt::SimpleHasher for StateHasher {
    fn new() -> Self {
        StateHasher(Input::Short {
            bytes: [0; SHORT_INPUT],
            len: 0,
        })
    }
    fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            Input::Short { bytes, len } if *len + data.len() <= SHORT_INPUT => {
                bytes[*len..*len + data.len()].copy_from_slice(data);
                *len += data.len();
            }
            Input::Short { bytes, len } => {
                let mut hasher = Box::new(Domain::StateTree.hasher());
                hasher.update(&bytes[..*len]);
                hasher.update(data);
                self.0 = Input::Long(hasher);
            }
            Input::Long(hasher) => {
                hasher.update(data);
            }
        }
    }
    fn finalize(self) -> [u8; 32] {
        match self.0 {
            Input::Short { bytes, len } => Domain::StateTree.hash(&bytes[..len]).0,
            Input::Long(hasher) => *hasher.finalize().as_bytes(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use jmt::SimpleHasher;
    use proptest::prelude::*;

    proptest! {
        /// However the input comes (in pieces, short, at the inline limit,
        /// past it) and whatever this thread hashed before, the digest is
        /// the state tree's domain hash of the whole input.
        #[test]
        fn the_state_hasher_is_the_domain_hash_of_its_input(
            inputs in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::collection::vec(any::<u8>(), 0..70),
                    0..5,
                ),
                1..4,
            ),
        ) {
            for pieces in inputs {
                let mut hasher = StateHasher::new();
                for piece in &pieces {
                    hasher.update(piece);
                }
                let whole = pieces.concat();
                prop_assert_eq!(hasher.finalize(), Domain::StateTree.hash(&whole).0);
            }
        }
    }

    #[test]
    fn inputs_at_and_past_the_inline_limit_hash_like_the_domain_hash() {
        for len in [0, 80, SHORT_INPUT - 1, SHORT_INPUT, SHORT_INPUT + 1, 5_000] {
            let input: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut hasher = StateHasher::new();
            hasher.update(&input);
            assert_eq!(hasher.finalize(), Domain::StateTree.hash(&input).0, "{len}");
            assert_eq!(StateHasher::hash(&input), Domain::StateTree.hash(&input).0);
        }
    }
}
