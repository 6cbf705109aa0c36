//! ed25519 keys and signatures, under one verification rule.
//!
//! The rule is ed25519-dalek's `verify_strict` on canonical encodings, with
//! weak (small-order) public keys refused. [`verify_batch`] is a faster path to
//! the same answer: it applies the same pre-checks, verifies the batch, and on
//! failure falls back to checking each signature alone so the caller learns
//! exactly which ones are bad.

use crate::bytes::fixed_bytes;
use crate::hash::Hash;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
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

/// Keys that passed [`PublicKey::verifying_key`], decompressed. Signers are
/// few and known (accounts, validators), and decompressing a point costs about
/// as much as a batched signature check. A lookup table only: never iterated.
static CHECKED_KEYS: LazyLock<Mutex<HashMap<PublicKey, VerifyingKey>>> =
    LazyLock::new(Default::default);

/// Keys kept in [`CHECKED_KEYS`]; past this it starts over.
const CHECKED_KEYS_CAPACITY: usize = 65_536;

impl PublicKey {
    /// Parses the key and checks it is canonical and not of small order.
    pub fn verifying_key(&self) -> Result<VerifyingKey, SignatureError> {
        let cache = || CHECKED_KEYS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = cache().get(self) {
            return Ok(*key);
        }
        let key = self.check_key()?;
        let mut keys = cache();
        if keys.len() >= CHECKED_KEYS_CAPACITY {
            keys.clear();
        }
        keys.insert(*self, key);
        Ok(key)
    }

    fn check_key(&self) -> Result<VerifyingKey, SignatureError> {
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

    /// Strictly verifies `signature` over the 32-byte `message` digest.
    pub fn verify(&self, message: &Hash, signature: &Signature) -> Result<(), SignatureError> {
        let key = self.verifying_key()?;
        let sig = parse_signature(signature)?;
        key.verify_strict(&message.0, &sig)
            .map_err(|_| SignatureError::Invalid)
    }
}

fn parse_signature(signature: &Signature) -> Result<ed25519_dalek::Signature, SignatureError> {
    // from_bytes only splits R and s; verify_strict rejects a non-canonical s
    // and a small-order R.
    Ok(ed25519_dalek::Signature::from_bytes(&signature.0))
}

/// Verifies many `(key, message, signature)` triples; returns one result each,
/// identical to what [`PublicKey::verify`] would return for that triple.
pub fn verify_batch(items: &[(PublicKey, Hash, Signature)]) -> Vec<Result<(), SignatureError>> {
    let mut results: Vec<Result<(), SignatureError>> = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    let mut msgs: Vec<&[u8]> = Vec::with_capacity(items.len());
    let mut batched = Vec::with_capacity(items.len());
    for (i, (key, msg, sig)) in items.iter().enumerate() {
        // verify_batch does not check for weak keys: do it first.
        match key.verifying_key() {
            Ok(k) => {
                keys.push(k);
                sigs.push(ed25519_dalek::Signature::from_bytes(&sig.0));
                msgs.push(&msg.0);
                batched.push(i);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if batched.is_empty() {
        return results;
    }
    if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_err() {
        for &i in &batched {
            let (key, msg, sig) = &items[i];
            results[i] = key.verify(msg, sig);
        }
    } else {
        // The batch equation can accept what the strict single check refuses
        // (small-order R components); the strict check is the rule, so apply
        // its cheap structural part to every signature the batch passed.
        for &i in &batched {
            let (key, msg, sig) = &items[i];
            if !r_is_acceptable(&sig.0) {
                results[i] = key.verify(msg, sig);
            }
        }
    }
    results
}

/// For an R the batch equation accepted (so a curve point): true when it is
/// canonically encoded and not of small order, the case in which batch and
/// strict verification agree. Byte comparisons only, no point arithmetic:
/// the y coordinate must be below p, and R must not encode one of the eight
/// small-order points ([`SMALL_ORDER_ENCODINGS`]).
fn r_is_acceptable(sig: &[u8; 64]) -> bool {
    let r: [u8; 32] = sig[..32]
        .try_into()
        .expect("64-byte signature has a 32-byte R");
    y_below_p(&r) && !SMALL_ORDER_ENCODINGS.contains(&r)
}

/// The y coordinate (the low 255 bits, little-endian) is below p = 2^255 - 19.
fn y_below_p(encoding: &[u8; 32]) -> bool {
    let at_least_p = encoding[0] >= 0xed
        && encoding[1..31].iter().all(|&b| b == 0xff)
        && encoding[31] & 0x7f == 0x7f;
    !at_least_p
}

/// Every encoding with y below p of the eight small-order points: each one's
/// canonical encoding, and for the two with x = 0 (where the sign bit is
/// meaningless) also the one with the sign bit set.
static SMALL_ORDER_ENCODINGS: LazyLock<Vec<[u8; 32]>> = LazyLock::new(|| {
    let mut encodings = Vec::new();
    for point in curve25519_dalek::constants::EIGHT_TORSION {
        let canonical = point.compress().to_bytes();
        encodings.push(canonical);
        let mut flipped = canonical;
        flipped[31] ^= 0x80;
        if CompressedEdwardsY(flipped).decompress() == Some(point) {
            encodings.push(flipped);
        }
    }
    encodings
});

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

    /// The reference for `r_is_acceptable`, by point arithmetic: `None` for
    /// bytes that are no curve point (the batch equation refuses those).
    fn r_acceptable_by_point_arithmetic(r: &[u8; 32]) -> Option<bool> {
        let point = CompressedEdwardsY(*r).decompress()?;
        Some(!point.is_small_order() && point.compress().to_bytes() == *r)
    }

    #[test]
    fn the_byte_check_of_r_agrees_with_point_arithmetic() {
        let mut encodings: Vec<[u8; 32]> = Vec::new();
        for i in 0..200 {
            let (_, _, sig) = triple(&format!("signer {i}"), b"message");
            encodings.push(sig.0[..32].try_into().unwrap());
        }
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            let canonical = point.compress().to_bytes();
            let mut flipped = canonical;
            flipped[31] ^= 0x80;
            encodings.extend([canonical, flipped]);
        }
        // y + p for every y below 19, with either sign bit: non-canonical encodings.
        for y in 0..19u8 {
            let mut encoding = [0xff; 32];
            encoding[0] = 0xed + y;
            encoding[31] = 0x7f;
            let mut signed = encoding;
            signed[31] |= 0x80;
            encodings.extend([encoding, signed]);
        }
        let mut bytes = [7u8; 32];
        for _ in 0..2_000 {
            bytes = *blake3::hash(&bytes).as_bytes();
            encodings.push(bytes);
        }
        let mut points = 0;
        for r in encodings {
            if let Some(expected) = r_acceptable_by_point_arithmetic(&r) {
                points += 1;
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&r);
                assert_eq!(r_is_acceptable(&sig), expected, "R = {}", hex::encode(r));
            }
        }
        assert!(points > 1_000, "only {points} encodings were curve points");
    }
}
