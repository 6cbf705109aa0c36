//! What the load generator's signing costs, a signature at a time.
//!
//! - `sign/dalek`: `KeyPair::sign` (RFC 8032 through ed25519-dalek), the
//!   SDK's signer, for comparison.
//! - `sign/nonces_ahead`: making 1,024 nonces and their points, what the
//!   bench does before its run ([`Nonces::make`]). Per nonce.
//! - `sign/batch_of_64`: signing 64 transaction ids with nonces made
//!   ahead, what the planner thread does in the run. Per signature.
//!
//! Run with `cargo bench -p trellis-cli --bench sign`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use trellis_cli::bench::sign::{ExpandedKey, Nonces, sign_batch};
use trellis_types::{Hash, KeyPair};

fn signing(c: &mut Criterion) {
    let keys: Vec<KeyPair> = (0..16)
        .map(|i| KeyPair::insecure_from_label(&format!("bench/sign/{i}")))
        .collect();
    let expanded: Vec<ExpandedKey> = keys.iter().map(ExpandedKey::new).collect();
    let items: Vec<(&ExpandedKey, Hash)> = (0..64u8)
        .map(|i| (&expanded[usize::from(i) % keys.len()], Hash([i; 32])))
        .collect();

    let mut group = c.benchmark_group("sign");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dalek", |b| b.iter(|| keys[0].sign(black_box(&items[0].1))));
    group.throughput(Throughput::Elements(1_024));
    group.bench_function("nonces_ahead", |b| {
        b.iter(|| Nonces::make(black_box(1_024)))
    });
    group.throughput(Throughput::Elements(items.len() as u64));
    group.bench_function("batch_of_64", |b| {
        b.iter_batched(
            || Nonces::make(items.len()),
            |mut nonces| sign_batch(black_box(&items), &mut nonces),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
