//! Signing a batch of transactions at once, for the load generator.
//!
//! An ed25519 signature is `(R, s)` with `R = r·B` for a secret nonce `r`
//! and `s = r + H(R ‖ A ‖ M)·a`. Only `s` depends on the message, and `R`
//! was most of the work (a nonce point and its compression). So the
//! generator makes its nonces ahead ([`Nonces::make`], before the measured
//! run: the "pre-signing" a load generator does) and a signature in the run
//! is a hash and a scalar multiply-add. The nonces are random, from the
//! thread's CSPRNG, and each is used once: the signatures verify as any
//! ed25519 signature does, but are not RFC 8032's deterministic ones (those
//! derive `r` from the message, so cannot be made ahead). Signing itself is
//! cheaper two more ways: each account's expanded key is derived once, not
//! once a signature, and the nonce points of a batch come from a table in
//! variable time ([`nonce_points`]) and are compressed with one field
//! inversion. The generator signs on the same cores as the node it
//! measures, and signing was half of its CPU. Not for keys that matter: the
//! dev accounts' keys are public, this code keeps their expanded secrets and
//! the nonces in plain memory, and which table entries it reads depends on
//! each secret nonce.

use curve25519_dalek_5::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek_5::edwards::CompressedEdwardsY;
use curve25519_dalek_5::{EdwardsPoint, Scalar, scalar::clamp_integer};
use rand::Rng;
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

/// An account's key, expanded as ed25519 signs with it.
pub struct ExpandedKey {
    scalar: Scalar,
    public: [u8; 32],
}

impl ExpandedKey {
    pub fn new(key: &KeyPair) -> ExpandedKey {
        let h: [u8; 64] = Sha512::digest(key.seed()).into();
        let low: [u8; 32] = h[..32].try_into().expect("32 bytes");
        ExpandedKey {
            scalar: Scalar::from_bytes_mod_order(clamp_integer(low)),
            public: key.public().0,
        }
    }
}

/// A secret nonce `r` and its point `R = r·B`, compressed: the half of a
/// signature that does not depend on the message.
struct Nonce {
    r: Scalar,
    big_r: CompressedEdwardsY,
}

/// Nonces made ahead, each taken for one signature only.
pub struct Nonces {
    ready: Vec<Nonce>,
    /// Made while signing because none were left ready.
    pub made_late: u64,
}

/// Nonces made at a time: the points of a chunk and one byte place's row of
/// the table (40 KB) stay in the core's cache.
const NONCE_CHUNK: usize = 1024;

impl Nonces {
    /// `count` nonces, made on every core.
    pub fn make(count: usize) -> Nonces {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = count.div_ceil(threads);
        let ready = std::thread::scope(|scope| {
            let parts: Vec<_> = (0..threads)
                .map(|t| {
                    let n = share.min(count.saturating_sub(t * share));
                    scope.spawn(move || fresh_nonces(n))
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().expect("making nonces cannot panic"))
                .collect()
        });
        Nonces {
            ready,
            made_late: 0,
        }
    }

    /// Makes `more`'s nonces ready here too.
    pub fn add(&mut self, mut more: Nonces) {
        self.ready.append(&mut more.ready);
        self.made_late += more.made_late;
    }

    /// Nonces ready to be taken.
    pub fn ready(&self) -> usize {
        self.ready.len()
    }

    /// `count` nonces: ready ones first, then as many made now.
    fn take(&mut self, count: usize) -> Vec<Nonce> {
        let from_ready = count.min(self.ready.len());
        let mut taken = self.ready.split_off(self.ready.len() - from_ready);
        let late = count - from_ready;
        taken.extend(fresh_nonces(late));
        self.made_late += late as u64;
        taken
    }
}

/// `count` new nonces from the thread's CSPRNG, with their points.
fn fresh_nonces(count: usize) -> Vec<Nonce> {
    let mut rng = rand::rng();
    let mut nonces = Vec::with_capacity(count);
    while nonces.len() < count {
        let chunk: Vec<Scalar> = (0..NONCE_CHUNK.min(count - nonces.len()))
            .map(|_| {
                let mut wide = [0u8; 64];
                rng.fill_bytes(&mut wide);
                Scalar::from_bytes_mod_order_wide(&wide)
            })
            .collect();
        let points = EdwardsPoint::compress_batch_alloc(&nonce_points(&chunk));
        nonces.extend(
            chunk
                .into_iter()
                .zip(points)
                .map(|(r, big_r)| Nonce { r, big_r }),
        );
    }
    nonces
}

/// Each `(key, message)`'s signature, in order, each with a nonce of its own
/// from `nonces`.
pub fn sign_batch(items: &[(&ExpandedKey, Hash)], nonces: &mut Nonces) -> Vec<Signature> {
    items
        .iter()
        .zip(nonces.take(items.len()))
        .map(|((key, message), Nonce { r, big_r })| {
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
    use std::collections::BTreeSet;

    /// Signatures that verify under their own key (ZIP-215 and RFC 8032's
    /// strict check) and under no other, from ready nonces and, once those
    /// run out, from nonces made while signing; no nonce used twice.
    #[test]
    fn batch_signatures_verify_under_their_keys_with_a_nonce_each() {
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
        let mut nonces = Nonces::make(10);
        assert_eq!(nonces.ready(), 10);
        let mut batch = sign_batch(&items[..25], &mut nonces);
        assert_eq!((nonces.ready(), nonces.made_late), (0, 15));
        batch.extend(sign_batch(&items[25..], &mut nonces));
        assert_eq!(nonces.made_late, 30);
        for (i, (message, signature)) in messages.iter().zip(&batch).enumerate() {
            let key = &keys[i % keys.len()];
            key.public().verify(message, signature).expect("verifies");
            let dalek = ed25519_dalek::Signature::from_bytes(&signature.0);
            key.signing_key()
                .verifying_key()
                .verify_strict(&message.0, &dalek)
                .expect("passes the strict check");
            let other = &keys[(i + 1) % keys.len()];
            assert!(other.public().verify(message, signature).is_err());
            assert!(key.public().verify(&Hash([99; 32]), signature).is_err());
        }
        let points: BTreeSet<[u8; 32]> = batch
            .iter()
            .map(|s| s.0[..32].try_into().unwrap())
            .collect();
        assert_eq!(points.len(), batch.len(), "a nonce point used twice");
        assert!(sign_batch(&[], &mut nonces).is_empty());
    }

    /// As many nonces as asked, split over the cores, each point its own
    /// nonce's, no nonce twice.
    #[test]
    fn nonces_made_ahead_are_distinct_with_their_points() {
        let nonces = Nonces::make(NONCE_CHUNK + 3);
        assert_eq!(nonces.ready(), NONCE_CHUNK + 3);
        let rs: BTreeSet<[u8; 32]> = nonces.ready.iter().map(|n| n.r.to_bytes()).collect();
        assert_eq!(rs.len(), nonces.ready());
        for nonce in nonces.ready.iter().step_by(97) {
            assert_eq!(nonce.big_r, EdwardsPoint::mul_base(&nonce.r).compress());
        }
        assert_eq!(Nonces::make(0).ready(), 0);
    }

    /// Nonces made later join those made first, and none is lost or taken
    /// twice: all of them are used before one is made late.
    #[test]
    fn nonces_added_later_are_taken_before_any_is_made_late() {
        let mut nonces = Nonces::make(5);
        let first: BTreeSet<[u8; 32]> = nonces.ready.iter().map(|n| n.r.to_bytes()).collect();
        nonces.add(Nonces::make(7));
        assert_eq!(nonces.ready(), 12);
        let taken: BTreeSet<[u8; 32]> = nonces.take(12).iter().map(|n| n.r.to_bytes()).collect();
        assert_eq!(taken.len(), 12);
        assert!(first.is_subset(&taken));
        assert_eq!((nonces.ready(), nonces.made_late), (0, 0));
        nonces.take(1);
        assert_eq!(nonces.made_late, 1);
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
