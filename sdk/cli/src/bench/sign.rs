//! Signing a batch of transactions at once, for the load generator.
//!
//! Signatures are ed25519's as ed25519-dalek makes them (RFC 8032, so the
//! same bytes for the same key and message), made cheaper three ways: each
//! account's expanded key is derived once, not once a signature; the nonce
//! points `R` of a whole batch are compressed with one field inversion
//! instead of one each (a quarter of a signature's work); and the nonce
//! points come from a table, in variable time ([`nonce_points`]: about half
//! of what was left). The generator signs on the same cores as the node it
//! measures, and signing was half of its CPU. Not for keys that matter: the
//! dev accounts' keys are public, this code keeps their expanded secrets in
//! plain memory, and which table entries it reads depends on each
//! signature's secret nonce.

use curve25519_dalek_5::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek_5::{EdwardsPoint, Scalar, scalar::clamp_integer};
use sha2::{Digest, Sha512};
use std::sync::LazyLock;
use trellis_types::{Hash, KeyPair, Signature};

/// `j · 256^i · B` at `i * 256 + j`, for each byte place `i` of a scalar and
/// each byte value `j` (1.3 MB): a nonce point is then the sum of one entry
/// per byte of the nonce, 31 additions, where curve25519-dalek's constant-time
/// `mul_base` does 64 and scans its table for each.
static BASE_TABLE: LazyLock<Vec<EdwardsPoint>> = LazyLock::new(|| {
    let mut table = Vec::with_capacity(32 * 256);
    let mut place = ED25519_BASEPOINT_POINT;
    for _ in 0..32 {
        let mut multiple = EdwardsPoint::default();
        for _ in 0..256 {
            table.push(multiple);
            multiple += place;
        }
        place = multiple;
    }
    table
});

/// `r · B` for each nonce `r`, in variable time (see [`BASE_TABLE`]). Byte
/// place by byte place for the whole batch, so each place's part of the
/// table (40 KB) stays in the core's cache while the batch uses it.
fn nonce_points(nonces: &[Scalar]) -> Vec<EdwardsPoint> {
    let rows: Vec<&[EdwardsPoint]> = BASE_TABLE.chunks(256).collect();
    let mut points: Vec<EdwardsPoint> = nonces
        .iter()
        .map(|r| rows[0][usize::from(r.as_bytes()[0])])
        .collect();
    for (place, row) in rows.iter().enumerate().skip(1) {
        for (point, r) in points.iter_mut().zip(nonces) {
            *point += row[usize::from(r.as_bytes()[place])];
        }
    }
    points
}

/// An account's key, expanded as RFC 8032 signs with it.
pub struct ExpandedKey {
    scalar: Scalar,
    prefix: [u8; 32],
    public: [u8; 32],
}

impl ExpandedKey {
    pub fn new(key: &KeyPair) -> ExpandedKey {
        let h: [u8; 64] = Sha512::digest(key.seed()).into();
        let (low, high) = h.split_at(32);
        ExpandedKey {
            scalar: Scalar::from_bytes_mod_order(clamp_integer(low.try_into().expect("32 bytes"))),
            prefix: high.try_into().expect("32 bytes"),
            public: key.public().0,
        }
    }
}

/// Each `(key, message)`'s signature, in order.
pub fn sign_batch(items: &[(&ExpandedKey, Hash)]) -> Vec<Signature> {
    let nonces: Vec<Scalar> = items
        .iter()
        .map(|(key, message)| wide_hash(&[&key.prefix, &message.0]))
        .collect();
    let points = nonce_points(&nonces);
    let compressed = EdwardsPoint::compress_batch_alloc(&points);
    items
        .iter()
        .zip(nonces.iter().zip(&compressed))
        .map(|((key, message), (r, big_r))| {
            let k = wide_hash(&[big_r.as_bytes(), &key.public, &message.0]);
            let s = k * key.scalar + r;
            let mut signature = [0; 64];
            signature[..32].copy_from_slice(big_r.as_bytes());
            signature[32..].copy_from_slice(s.as_bytes());
            Signature(signature)
        })
        .collect()
}

/// SHA-512 of `parts`, reduced modulo the group order.
fn wide_hash(parts: &[&[u8]]) -> Scalar {
    let mut hasher = Sha512::new();
    for part in parts {
        hasher.update(part);
    }
    Scalar::from_bytes_mod_order_wide(&hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes as `KeyPair::sign`, for many keys and messages in one
    /// batch, and for a batch of one.
    #[test]
    fn batch_signatures_are_the_keys_own() {
        let keys: Vec<KeyPair> = (0..5)
            .map(|i| KeyPair::insecure_from_label(&format!("bench/sign/{i}")))
            .collect();
        let expanded: Vec<ExpandedKey> = keys.iter().map(ExpandedKey::new).collect();
        let messages: Vec<Hash> = (0..40u8).map(|i| Hash([i; 32])).collect();
        let items: Vec<(&ExpandedKey, Hash)> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (&expanded[i % keys.len()], *m))
            .collect();
        let batch = sign_batch(&items);
        for (i, (message, signature)) in messages.iter().zip(&batch).enumerate() {
            let key = &keys[i % keys.len()];
            assert_eq!(*signature, key.sign(message), "message {i}");
            key.public().verify(message, signature).expect("verifies");
        }
        assert_eq!(sign_batch(&items[..1]), vec![keys[0].sign(&messages[0])]);
        assert!(sign_batch(&[]).is_empty());
    }

    /// The table's sums are dalek's `mul_base`, for nonces from hashes, for
    /// zero, one and minus one, and with 0xff at each byte place alone.
    #[test]
    fn table_nonce_points_are_the_constant_time_ones() {
        let mut nonces: Vec<Scalar> = (0..64u8).map(|i| wide_hash(&[&[i]])).collect();
        nonces.extend([Scalar::ZERO, Scalar::ONE, -Scalar::ONE]);
        for place in 0..32 {
            let mut bytes = [0; 32];
            bytes[place] = 0xff;
            nonces.push(Scalar::from_bytes_mod_order(bytes));
        }
        let points = nonce_points(&nonces);
        assert_eq!(points.len(), nonces.len());
        for (r, point) in nonces.iter().zip(&points) {
            assert_eq!(*point, EdwardsPoint::mul_base(r), "{r:?}");
        }
        assert!(nonce_points(&[]).is_empty());
    }
}
