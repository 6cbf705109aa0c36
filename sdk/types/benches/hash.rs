//! Domain-separated blake3 hashing, which the state tree does for every node
//! it rebuilds.
//!
//! - `hash/tree_node`: `Domain::StateTree.hash` of 64 bytes (two child
//!   digests, as an internal node hashes its children).
//! - `hash/state_key`: `proof::key_hash` of an 18-byte state key (a piece's key is 10).
//! - `hash/jmt_internal`: what jmt does for each of the up to 15 binary
//!   nodes inside an internal node, through [`StateHasher`]: a new hasher,
//!   its 16-byte domain separator and two 32-byte child hashes.
//!
//! Run with `cargo bench -p trellis-types --bench hash`.

use criterion::{Criterion, criterion_group, criterion_main};
use jmt::SimpleHasher;
use std::hint::black_box;
use trellis_types::Domain;
use trellis_types::proof::{StateHasher, key_hash};

fn hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    let children = [7u8; 64];
    group.bench_function("tree_node", |b| {
        b.iter(|| Domain::StateTree.hash(black_box(&children)))
    });
    let key = *b"p/\0\0\0\0\0\0\0\x2aholder..";
    group.bench_function("state_key", |b| b.iter(|| key_hash(black_box(&key))));
    let (left, right) = ([1u8; 32], [2u8; 32]);
    group.bench_function("jmt_internal", |b| {
        b.iter(|| {
            let mut hasher = StateHasher::new();
            hasher.update(b"JMT::IntrnalNode");
            hasher.update(black_box(&left));
            hasher.update(black_box(&right));
            hasher.finalize()
        })
    });
    group.finish();
}

criterion_group!(benches, hash);
criterion_main!(benches);
