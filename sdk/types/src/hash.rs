//! blake3 hashes with one domain-separation tag per hashed type.

use crate::bytes::fixed_bytes;
use std::cell::RefCell;
use std::sync::OnceLock;

fixed_bytes!(
    /// A 32-byte blake3 digest.
    Hash,
    32
);

impl Hash {
    pub const ZERO: Hash = Hash([0; 32]);
}

/// What is being hashed. Each domain keys blake3 differently, so a digest of
/// one type can never be passed off as a digest of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Transaction,
    Header,
    Proposal,
    Vote,
    TxRoot,
    ReceiptRoot,
    Receipt,
    ContractAddress,
    StateKey,
    StateTree,
    Genesis,
    SafetyRecord,
    SignedTransaction,
    Certificate,
    ApiRequest,
}

impl Domain {
    /// How many domains there are: a slot each in the hasher tables below.
    /// A new domain must come last or move this (the test that hashes under
    /// every domain fails out of bounds until it does).
    const COUNT: usize = Domain::ApiRequest as usize + 1;

    pub const fn tag(self) -> &'static str {
        match self {
            Domain::Transaction => "trellis v1 transaction",
            Domain::Header => "trellis v1 block header",
            Domain::Vote => "trellis v1 vote",
            Domain::SafetyRecord => "trellis v1 safety record",
            Domain::Proposal => "trellis v1 proposal",
            Domain::TxRoot => "trellis v1 transactions root",
            Domain::ReceiptRoot => "trellis v1 receipts root",
            Domain::Receipt => "trellis v1 receipt",
            Domain::ContractAddress => "trellis v1 contract address",
            Domain::StateKey => "trellis v1 state key",
            Domain::StateTree => "trellis v1 state tree node",
            Domain::Genesis => "trellis v1 genesis",
            Domain::SignedTransaction => "trellis v1 signed transaction",
            Domain::Certificate => "trellis v1 commit certificate",
            Domain::ApiRequest => "trellis v1 api request",
        }
    }

    /// A fresh hasher keyed for this domain. Deriving a key from the tag
    /// costs a blake3 compression, as much as hashing a tree node's 64
    /// bytes, so each domain's hasher is derived once and cloned.
    pub fn hasher(self) -> blake3::Hasher {
        static DERIVED: [OnceLock<blake3::Hasher>; Domain::COUNT] =
            [const { OnceLock::new() }; Domain::COUNT];
        DERIVED[self as usize]
            .get_or_init(|| blake3::Hasher::new_derive_key(self.tag()))
            .clone()
    }

    /// A hasher is about 2 KB, so copying a fresh one out of `hasher` cost
    /// about as much as hashing a short input; each thread keeps one per
    /// domain and resets it instead.
    pub fn hash(self, bytes: &[u8]) -> Hash {
        thread_local! {
            static HASHERS: RefCell<[Option<blake3::Hasher>; Domain::COUNT]> =
                const { RefCell::new([const { None }; Domain::COUNT]) };
        }
        HASHERS.with_borrow_mut(|hashers| {
            let hasher = hashers[self as usize].get_or_insert_with(|| self.hasher());
            let digest = Hash(*hasher.update(bytes).finalize().as_bytes());
            hasher.reset();
            digest
        })
    }
}

/// Binary Merkle root over `leaves` (already domain-hashed items).
///
/// Leaves and inner nodes are prefixed 0 and 1 so a leaf can never be read as
/// an inner node; an odd node at the end of a level is carried up unchanged;
/// the root of no leaves is the domain hash of the empty string.
/// [`crate::proof::MerkleProof`] proves one leaf under such a root.
pub fn merkle_root(domain: Domain, leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return domain.hash(&[]);
    }
    let mut level: Vec<Hash> = leaves.iter().map(|l| merkle_leaf(domain, l)).collect();
    while level.len() > 1 {
        level = merkle_parents(domain, &level);
    }
    level[0]
}

/// A leaf's node: `leaf` under the leaf prefix.
pub(crate) fn merkle_leaf(domain: Domain, leaf: &Hash) -> Hash {
    let mut h = domain.hasher();
    h.update(&[0]);
    h.update(&leaf.0);
    Hash(*h.finalize().as_bytes())
}

/// The inner node over `left` and `right`.
pub(crate) fn merkle_inner(domain: Domain, left: &Hash, right: &Hash) -> Hash {
    let mut h = domain.hasher();
    h.update(&[1]);
    h.update(&left.0);
    h.update(&right.0);
    Hash(*h.finalize().as_bytes())
}

/// The level above `level`: each pair hashed, an odd last node carried up.
pub(crate) fn merkle_parents(domain: Domain, level: &[Hash]) -> Vec<Hash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => merkle_inner(domain, a, b),
            [a] => *a,
            _ => unreachable!("chunks(2) yields one or two items"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_hash_is_a_freshly_derived_hashers_however_often_its_hasher_is_reused() {
        use Domain::*;
        let every = [
            Transaction,
            Header,
            Proposal,
            Vote,
            TxRoot,
            ReceiptRoot,
            Receipt,
            ContractAddress,
            StateKey,
            StateTree,
            Genesis,
            SafetyRecord,
            SignedTransaction,
            Certificate,
            ApiRequest,
        ];
        for domain in every {
            // Exhaustive: a new domain fails to compile here until listed.
            match domain {
                Transaction | Header | Proposal | Vote | TxRoot | ReceiptRoot | Receipt
                | ContractAddress | StateKey | StateTree | Genesis | SafetyRecord
                | SignedTransaction | Certificate | ApiRequest => {}
            }
            for bytes in [&b""[..], b"x", &[7; 64], &[9; 1500]] {
                let mut fresh = blake3::Hasher::new_derive_key(domain.tag());
                fresh.update(bytes);
                assert_eq!(domain.hash(bytes).0, *fresh.finalize().as_bytes());
            }
        }
    }

    #[test]
    fn domains_give_different_digests_of_the_same_bytes() {
        assert_ne!(Domain::Transaction.hash(b"x"), Domain::Header.hash(b"x"));
    }

    #[test]
    fn merkle_root_depends_on_order_and_count() {
        let a = Domain::Transaction.hash(b"a");
        let b = Domain::Transaction.hash(b"b");
        let r = |l: &[Hash]| merkle_root(Domain::TxRoot, l);
        assert_ne!(r(&[a, b]), r(&[b, a]));
        assert_ne!(r(&[a]), r(&[a, a]));
        assert_ne!(r(&[]), r(&[a]));
        assert_ne!(r(&[a, b, a]), r(&[a, b]));
    }
}
