//! A chain's validators and the check of a commit certificate against them:
//! shared by the node's consensus and the SDK's light-client checks, so both
//! count a quorum the same way.

use crate::block::QuorumCertificate;
use crate::crypto::PublicKey;

/// The validators of a chain, sorted by key, with equal voting power.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<PublicKey>,
}

impl ValidatorSet {
    /// The set of `validators` (duplicates count once); `None` if empty.
    pub fn new(mut validators: Vec<PublicKey>) -> Option<Self> {
        validators.sort();
        validators.dedup();
        (!validators.is_empty()).then_some(ValidatorSet { validators })
    }

    pub fn len(&self) -> usize {
        self.validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.validators.binary_search(key).is_ok()
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.validators
    }

    /// Votes needed for a quorum: more than two thirds (2f+1 of n = 3f+1).
    pub fn quorum(&self) -> usize {
        self.len() * 2 / 3 + 1
    }

    /// Votes that include at least one honest validator: more than a third (f+1).
    pub fn one_third_plus(&self) -> usize {
        self.len() / 3 + 1
    }

    /// The round's proposer: rotates with height and round so that a silent
    /// validator delays at most its own turns.
    pub fn proposer(&self, height: u64, round: u64) -> PublicKey {
        let n = self.len() as u64;
        self.validators[(height.wrapping_add(round) % n) as usize]
    }

    /// Checks that `qc` carries valid precommits of a quorum for its block.
    pub fn verify_certificate(
        &self,
        chain_id: &str,
        qc: &QuorumCertificate,
    ) -> Result<(), CertificateError> {
        let message = qc.vote_data(chain_id).signing_hash();
        let mut previous: Option<&PublicKey> = None;
        for (voter, signature) in &qc.votes {
            if previous.is_some_and(|p| p >= voter) {
                return Err(CertificateError::Unsorted);
            }
            previous = Some(voter);
            if !self.contains(voter) {
                return Err(CertificateError::UnknownVoter(*voter));
            }
            voter
                .verify(&message, signature)
                .map_err(|_| CertificateError::BadSignature(*voter))?;
        }
        if qc.votes.len() < self.quorum() {
            return Err(CertificateError::NoQuorum {
                votes: qc.votes.len(),
                needed: self.quorum(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("certificate signers are not sorted and unique")]
    Unsorted,
    #[error("certificate signed by {0}, who is not a validator")]
    UnknownVoter(PublicKey),
    #[error("certificate signature of {0} does not verify")]
    BadSignature(PublicKey),
    #[error("certificate has {votes} votes, {needed} needed")]
    NoQuorum { votes: usize, needed: usize },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;

    fn keys(n: usize) -> Vec<PublicKey> {
        (0..n)
            .map(|i| KeyPair::insecure_from_label(&format!("validator {i}")).public())
            .collect()
    }

    #[test]
    fn a_set_needs_a_validator_and_counts_each_once() {
        assert_eq!(ValidatorSet::new(Vec::new()), None);
        let twice = [keys(2), keys(2)].concat();
        assert_eq!(ValidatorSet::new(twice).unwrap().len(), 2);
    }

    #[test]
    fn a_quorum_is_more_than_two_thirds() {
        let quorums: Vec<usize> = (1..=7)
            .map(|n| ValidatorSet::new(keys(n)).unwrap().quorum())
            .collect();
        assert_eq!(quorums, [1, 2, 3, 3, 4, 5, 5]);
    }
}
