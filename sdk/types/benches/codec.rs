//! The canonical encoding, which every hash, signature check, state read and
//! stored record goes through.
//!
//! - `codec/encode_tx`: encode a signed transaction (a ~100-byte remark).
//! - `codec/decode_tx`: decode it, with the canonical check (re-encoding).
//! - `codec/tx_hash`: `SignedTransaction::hash` (encode, then blake3).
//!
//! Run with `cargo bench -p trellis-types --bench codec`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use trellis_types::{KeyPair, Payload, SignedTransaction, SystemOp, Transaction, decode, encode};

fn codec(c: &mut Criterion) {
    let key = KeyPair::insecure_from_label("bench/codec");
    let stx = Transaction {
        chain_id: "trellis-bench".into(),
        sender: key.public(),
        nonce: 7,
        expires_at_ms: 1_767_225_600_000,
        payload: Payload::System(SystemOp::Remark {
            data: vec![0xab; 100].into(),
        }),
    }
    .sign(&key);
    let bytes = encode(&stx);

    let mut group = c.benchmark_group("codec");
    group.bench_function("encode_tx", |b| b.iter(|| encode(black_box(&stx))));
    group.bench_function("decode_tx", |b| {
        b.iter(|| decode::<SignedTransaction>(black_box(&bytes)).expect("decodes"))
    });
    group.bench_function("tx_hash", |b| b.iter(|| black_box(&stx).hash()));
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
