//! ed25519 keys and signatures, under one verification rule.
//!
//! The rule is ZIP-215's (ed25519-zebra), on public keys with a canonical
//! encoding that are not of small order. [`verify_batch`] is a faster path to
//! the same answer: it applies the same key checks, verifies the batch, and on
//! failure falls back to checking each signature alone so the caller learns
//! exactly which ones are bad; [`verify_all`] only says whether all verify.

use crate::bytes::fixed_bytes;
use crate::hash::Hash;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use ed25519_zebra::{VerificationKey, VerificationKeyBytes, batch};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

fixed_bytes!(
    /// An ed25519 public key: an account, a validator or a node identity.
    PublicKey,
    32
);

fixed_bytes!(
    /// An ed25519 signature.
    Signature,
    64
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("public key is not a canonical curve point")]
    MalformedKey,
    #[error("public key is weak (small order)")]
    WeakKey,
    #[error("signature is malformed or not canonical")]
    Malformed,
    #[error("signature does not verify")]
    Invalid,
}

/// Keys that passed [`PublicKey::verification_key`], decompressed. Signers are
/// few and known (accounts, validators), and decompressing a point costs about
/// as much as a batched signature check. A lookup table only: never iterated.
static CHECKED_KEYS: LazyLock<Mutex<HashMap<PublicKey, VerificationKey>>> =
    LazyLock::new(Default::default);

/// Keys kept in [`CHECKED_KEYS`]; past this it starts over.
const CHECKED_KEYS_CAPACITY: usize = 65_536;

impl PublicKey {
    /// Parses the key and checks it is canonical and not of small order.
    pub fn verifying_key(&self) -> Result<VerifyingKey, SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::MalformedKey)?;
        // VerifyingKey keeps the bytes it was given: re-compress the point to
        // catch a second (non-canonical) encoding of the same key.
        if key.to_edwards().compress().to_bytes() != self.0 {
            return Err(SignatureError::MalformedKey);
        }
        if key.is_weak() {
            return Err(SignatureError::WeakKey);
        }
        Ok(key)
    }

    /// [`PublicKey::verifying_key`]'s checks, remembered, and the key in the
    /// form signatures are checked against.
    fn verification_key(&self) -> Result<VerificationKey, SignatureError> {
        let cache = || CHECKED_KEYS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = cache().get(self) {
            return Ok(*key);
        }
        self.verifying_key()?;
        let key = VerificationKey::try_from(self.0).map_err(|_| SignatureError::MalformedKey)?;
        let mut keys = cache();
        if keys.len() >= CHECKED_KEYS_CAPACITY {
            keys.clear();
        }
        keys.insert(*self, key);
        Ok(key)
    }

    /// Verifies `signature` over the 32-byte `message` digest, by the rules
    /// of ZIP-215 (as CometBFT does): `s` canonical, `R` any encoding of a
    /// curve point, and `[8]([s]B − R − [k]A)` the identity. Every signature
    /// RFC 8032's strict check accepts passes, and, unlike that check, a
    /// batch ([`verify_batch`]) gives each signature the same verdict: which
    /// other signatures share its batch cannot change whether it is valid.
    pub fn verify(&self, message: &Hash, signature: &Signature) -> Result<(), SignatureError> {
        self.verification_key()?
            .verify(&zebra_signature(signature), &message.0)
            .map_err(|_| SignatureError::Invalid)
    }
}

fn zebra_signature(signature: &Signature) -> ed25519_zebra::Signature {
    ed25519_zebra::Signature::from_bytes(&signature.0)
}

/// One triple for ed25519-zebra's batch (the key already checked).
fn batch_item(key: &PublicKey, message: &Hash, signature: &Signature) -> batch::Item {
    (
        VerificationKeyBytes::from(key.0),
        zebra_signature(signature),
        &message.0[..],
    )
        .into()
}

/// Whether every one of `(key, message, signature)` triples verifies, as
/// [`PublicKey::verify`] would say: one batch check, never one per item, so
/// a batch with a bad signature costs what a good one does.
pub fn verify_all(items: &[(PublicKey, Hash, Signature)]) -> Result<(), SignatureError> {
    let mut batch = batch::Verifier::new();
    for (key, msg, sig) in items {
        key.verification_key()?;
        batch.queue(batch_item(key, msg, sig));
    }
    batch
        .verify(rand::rng())
        .map_err(|_| SignatureError::Invalid)
}

/// Verifies many `(key, message, signature)` triples; returns one result each,
/// identical to what [`PublicKey::verify`] returns for that triple.
pub fn verify_batch(items: &[(PublicKey, Hash, Signature)]) -> Vec<Result<(), SignatureError>> {
    let mut results: Vec<Result<(), SignatureError>> = Vec::with_capacity(items.len());
    let mut batch = batch::Verifier::new();
    let mut batched = Vec::with_capacity(items.len());
    for (i, (key, msg, sig)) in items.iter().enumerate() {
        match key.verification_key() {
            Ok(_) => {
                batch.queue(batch_item(key, msg, sig));
                batched.push(i);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    // All valid, or find which are not: under ZIP-215 both say the same.
    if !batched.is_empty() && batch.verify(rand::rng()).is_err() {
        for &i in &batched {
            let (key, msg, sig) = &items[i];
            results[i] = key.verify(msg, sig);
        }
    }
    results
}

/// A signing key with its public key. Holds secret material: keep it out of logs.
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public())
    }
}

impl KeyPair {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        KeyPair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Derives a key deterministically from a label. For dev and test chains only:
    /// anyone who knows the label knows the key.
    pub fn insecure_from_label(label: &str) -> Self {
        Self::from_seed(blake3::derive_key(
            "trellis v1 INSECURE dev key",
            label.as_bytes(),
        ))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &Hash) -> Signature {
        Signature(self.signing.sign(&message.0).to_bytes())
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Domain;

    fn triple(label: &str, msg: &[u8]) -> (PublicKey, Hash, Signature) {
        let k = KeyPair::insecure_from_label(label);
        let m = Domain::Transaction.hash(msg);
        (k.public(), m, k.sign(&m))
    }

    #[test]
    fn signature_verifies_and_tampering_fails() {
        let (pk, m, sig) = triple("a", b"hello");
        assert_eq!(pk.verify(&m, &sig), Ok(()));
        let other = Domain::Transaction.hash(b"hellp");
        assert_eq!(pk.verify(&other, &sig), Err(SignatureError::Invalid));
        let mut bad = sig;
        bad.0[40] ^= 1;
        assert!(pk.verify(&m, &bad).is_err());
    }

    #[test]
    fn weak_key_is_refused_before_verification() {
        // The identity point: small order, would verify forged signatures.
        let mut id = [0u8; 32];
        id[0] = 1;
        let (_, m, sig) = triple("a", b"x");
        assert_eq!(PublicKey(id).verify(&m, &sig), Err(SignatureError::WeakKey));
        let r = verify_batch(&[(PublicKey(id), m, sig)]);
        assert_eq!(r, vec![Err(SignatureError::WeakKey)]);
    }

    #[test]
    fn non_canonical_key_encoding_is_refused() {
        // y = p + 1 (p = 2^255 - 19) is the non-canonical encoding of y = 1, the identity.
        // y = p + 2 encodes y = 2 non-canonically; decoding it succeeds only if a point exists,
        // so search upward from p for a non-canonical y that decodes.
        let mut found = false;
        for extra in 0u8..19 {
            let mut bytes = [0xffu8; 32];
            bytes[0] = 0xed + extra; // p = 0x7fff..ffed; p + extra for small extra
            bytes[31] = 0x7f;
            if VerifyingKey::from_bytes(&bytes).is_ok() {
                assert_eq!(
                    PublicKey(bytes).verifying_key().unwrap_err(),
                    SignatureError::MalformedKey
                );
                found = true;
            }
        }
        assert!(
            found,
            "no non-canonical encoding decoded; the test needs another candidate"
        );
    }

    #[test]
    fn non_canonical_s_is_refused() {
        let (pk, m, mut sig) = triple("a", b"x");
        // s + L (the group order) is the same scalar in a non-canonical form.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (s_byte, l_byte) in sig.0[32..].iter_mut().zip(L) {
            let v = *s_byte as u16 + l_byte as u16 + carry;
            *s_byte = v as u8;
            carry = v >> 8;
        }
        assert!(pk.verify(&m, &sig).is_err());
        assert!(verify_batch(&[(pk, m, sig)])[0].is_err());
    }

    #[test]
    fn all_verify_or_the_batch_is_refused() {
        let mut items: Vec<_> = (0..8)
            .map(|i| triple(&format!("k{i}"), &[i as u8]))
            .collect();
        assert_eq!(verify_all(&items), Ok(()));
        assert_eq!(verify_all(&[]), Ok(()));
        items[5].2.0[3] ^= 0x80;
        assert_eq!(verify_all(&items), Err(SignatureError::Invalid));
        let mut weak = [0u8; 32];
        weak[0] = 1;
        items[5] = (PublicKey(weak), items[4].1, items[4].2);
        assert_eq!(verify_all(&items), Err(SignatureError::WeakKey));
    }

    #[test]
    fn batch_pinpoints_the_bad_signature() {
        let mut items: Vec<_> = (0..8)
            .map(|i| triple(&format!("k{i}"), &[i as u8]))
            .collect();
        items[5].2.0[3] ^= 0x80;
        let r = verify_batch(&items);
        for (i, res) in r.iter().enumerate() {
            assert_eq!(res.is_ok(), i != 5, "item {i}");
        }
    }

    /// A signature whose R has a small-order component `torsion` (R = rB + T)
    /// and whose `s` is built for that R: RFC 8032's strict check refuses it,
    /// and a batch check that is not cofactored passes or fails it depending
    /// on the other signatures in its batch.
    fn mixed_order_signature(key: &KeyPair, message: &Hash, torsion: usize) -> Signature {
        use curve25519_dalek::constants::EIGHT_TORSION;
        use curve25519_dalek::{EdwardsPoint, Scalar};
        use sha2::{Digest, Sha512};
        let r = Scalar::from_bytes_mod_order_wide(&[torsion as u8 + 1; 64]);
        let big_r = (EdwardsPoint::mul_base(&r) + EIGHT_TORSION[torsion]).compress();
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(big_r.as_bytes())
                .chain_update(key.public().0)
                .chain_update(message.0),
        );
        let s = r + k * key.signing_key().to_scalar();
        let mut bytes = [0; 64];
        bytes[..32].copy_from_slice(big_r.as_bytes());
        bytes[32..].copy_from_slice(s.as_bytes());
        Signature(bytes)
    }

    /// What decided whether a validator accepted a transaction must not be
    /// the company it kept in a batch: each signature gets, in every batch,
    /// the verdict it gets alone, or validators judge one block differently.
    #[test]
    fn a_signature_has_the_same_verdict_alone_and_in_any_batch() {
        let key = KeyPair::insecure_from_label("mixed");
        let message = Domain::Transaction.hash(b"pay 100");
        let mut odd = Vec::new();
        // Torsion components of order 8, 4 and 2 (indices 1, 2, 4).
        for torsion in [1, 2, 4] {
            let sig = mixed_order_signature(&key, &message, torsion);
            odd.push(((key.public(), message, sig), Ok(())));
            let mut spoiled = sig;
            spoiled.0[40] ^= 1;
            odd.push((
                (key.public(), message, spoiled),
                Err(SignatureError::Invalid),
            ));
        }
        for ((k, m, s), verdict) in &odd {
            assert_eq!(&k.verify(m, s), verdict);
            assert_eq!(&verify_batch(&[(*k, *m, *s)])[0], verdict);
        }
        // Batches of every size up to 40, the odd signature at every
        // place: the batch's random coefficients differ each time too.
        for size in 1..=40 {
            for (place, (item, verdict)) in odd.iter().enumerate() {
                let mut items: Vec<_> = (0..size)
                    .map(|i| triple(&format!("signer {i}"), &[i as u8, place as u8]))
                    .collect();
                items.insert((size * place) % (size + 1), *item);
                let at = items.iter().position(|i| i == item).unwrap();
                let results = verify_batch(&items);
                assert_eq!(&results[at], verdict, "batch of {size}, place {place}");
                assert_eq!(
                    results.iter().filter(|r| r.is_err()).count(),
                    usize::from(verdict.is_err())
                );
            }
        }
    }
}
