//! The authenticated state's hash function and proof verification, and
//! proofs of one leaf under a header's transactions or receipts root.
//!
//! State is a Jellyfish Merkle tree (the `jmt` crate) keyed by the domain hash
//! of each state key. [`verify_state_proof`] is what the SDK and auditors call
//! to check a value (or its absence) against a committed header's state root;
//! [`MerkleProof`] checks a transaction or receipt against `tx_root` or
//! `receipts_root`.

use crate::bytes::Bytes;
use crate::hash::{Domain, Hash, merkle_inner, merkle_leaf, merkle_parents};
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
    #[error("the proof does not fit its place: {0}")]
    Shape(String),
}

/// The prefix of contracts' query indexes (`q/<address>/`): records a
/// contract keeps so that queries can list things, derived from what its
/// calls did. They are kept beside the state tree, not in it: no root
/// commits to them and no proof covers them.
pub const QUERY_INDEX: &[u8] = b"q/";

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

/// One leaf's place under a root built by [`merkle_root`](crate::hash::merkle_root),
/// as a header's `tx_root` and `receipts_root` are: with the leaf, it gives
/// back the root, which a trusted header then confirms.
///
/// The place (`index` of `total`) fixes at which levels the path has a
/// sibling and on which side (an odd last node is carried up without one),
/// so the proof carries only the hashes, as CometBFT's do. A header does not
/// count its transactions, so what a proof shows is that the leaf is under
/// the root; its place is as the proof states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MerkleProof {
    /// The leaf's position, from 0.
    pub index: u32,
    /// How many leaves the tree has.
    pub total: u32,
    /// The sibling at each level from the leaf up that has one.
    pub siblings: Vec<Hash>,
}

impl MerkleProof {
    /// The proof of `leaves[index]` under `domain`'s root of `leaves`; `None`
    /// if there is no such leaf.
    pub fn new(domain: Domain, leaves: &[Hash], index: usize) -> Option<MerkleProof> {
        let total = u32::try_from(leaves.len()).ok()?;
        if index >= leaves.len() {
            return None;
        }
        let mut level: Vec<Hash> = leaves.iter().map(|l| merkle_leaf(domain, l)).collect();
        let mut at = index;
        let mut siblings = Vec::new();
        while level.len() > 1 {
            if let Some(sibling) = level.get(at ^ 1) {
                siblings.push(*sibling);
            }
            level = merkle_parents(domain, &level);
            at /= 2;
        }
        Some(MerkleProof {
            index: index as u32,
            total,
            siblings,
        })
    }

    /// The root that `leaf` in this proof's place gives. A proof whose
    /// hashes do not fit its place is an error, not a root.
    pub fn root(&self, domain: Domain, leaf: &Hash) -> Result<Hash, ProofError> {
        if self.index >= self.total {
            return Err(ProofError::Shape(format!(
                "leaf {} of {} does not exist",
                self.index, self.total
            )));
        }
        let mut node = merkle_leaf(domain, leaf);
        let (mut at, mut width) = (self.index, self.total);
        let mut siblings = self.siblings.iter();
        while width > 1 {
            // The last node of an odd level has no sibling and is carried up.
            if (at ^ 1) < width {
                let sibling = siblings.next().ok_or_else(|| {
                    ProofError::Shape(format!(
                        "{} sibling hashes are too few for leaf {} of {}",
                        self.siblings.len(),
                        self.index,
                        self.total
                    ))
                })?;
                node = if at % 2 == 0 {
                    merkle_inner(domain, &node, sibling)
                } else {
                    merkle_inner(domain, sibling, &node)
                };
            }
            at /= 2;
            width = width.div_ceil(2);
        }
        if siblings.next().is_some() {
            return Err(ProofError::Shape(format!(
                "{} sibling hashes are too many for leaf {} of {}",
                self.siblings.len(),
                self.index,
                self.total
            )));
        }
        Ok(node)
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

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| Domain::Receipt.hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn every_leaf_of_every_tree_up_to_70_leaves_proves_its_root_and_nothing_else() {
        let domain = Domain::ReceiptRoot;
        for n in 1..=70 {
            let leaves = leaves(n);
            let root = crate::hash::merkle_root(domain, &leaves);
            for (i, leaf) in leaves.iter().enumerate() {
                let proof = MerkleProof::new(domain, &leaves, i).unwrap();
                assert_eq!((proof.index, proof.total), (i as u32, n as u32));
                assert_eq!(proof.root(domain, leaf), Ok(root), "leaf {i} of {n}");
                // Another leaf, another domain, or any sibling changed: another root.
                let other = Domain::Receipt.hash(b"not a leaf");
                assert_ne!(proof.root(domain, &other), Ok(root));
                assert_ne!(proof.root(Domain::TxRoot, leaf), Ok(root));
                for s in 0..proof.siblings.len() {
                    let mut altered = proof.clone();
                    altered.siblings[s].0[0] ^= 1;
                    assert_ne!(altered.root(domain, leaf), Ok(root), "sibling {s}");
                }
            }
            assert_eq!(MerkleProof::new(domain, &leaves, n), None);
        }
        assert_eq!(MerkleProof::new(domain, &[], 0), None);
    }

    #[test]
    fn a_proof_whose_hashes_do_not_fit_its_place_is_refused() {
        let domain = Domain::TxRoot;
        let leaves = leaves(5);
        let proof = MerkleProof::new(domain, &leaves, 1).unwrap();
        assert_eq!(proof.siblings.len(), 3);
        let shape =
            |p: &MerkleProof| matches!(p.root(domain, &leaves[1]), Err(ProofError::Shape(_)));

        let mut short = proof.clone();
        short.siblings.pop();
        assert!(shape(&short));
        let mut long = proof.clone();
        long.siblings.push(leaves[0]);
        assert!(shape(&long));
        let outside = MerkleProof {
            index: 5,
            ..proof.clone()
        };
        assert!(shape(&outside));
        let empty = MerkleProof {
            index: 0,
            total: 0,
            siblings: Vec::new(),
        };
        assert!(shape(&empty));
        // Leaf 4 of 5 is carried up twice: one sibling only.
        let last = MerkleProof::new(domain, &leaves, 4).unwrap();
        assert_eq!(last.siblings.len(), 1);
    }
}
