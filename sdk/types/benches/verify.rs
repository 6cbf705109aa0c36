//! Signature verification on the admission path: decode the wire bytes, then
//! verify under ZIP-215's rules (see `crypto`).
//!
//! - `verify/single`: decode one signed transaction and `SignedTransaction::verify` it.
//!   Reported per transaction.
//! - `verify/batch/{1,4,16,256,1024}`: decode that many and check them with
//!   one `crypto::verify_batch` call, as `Mempool::admit_batch` does (an idle
//!   node's batches are small, a loaded node's large). Reported per batch;
//!   the throughput line gives transactions per second.
//!
//! - `verify/request`: read a signed API request's `Authorization` header
//!   and check its signature over the request (a contract query's path and
//!   JSON body), as the node does for each signed read.
//!
//! Transactions are ~100-byte remarks from 64 distinct senders. Run with
//! `cargo bench -p trellis-types --bench verify`.

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use std::hint::black_box;
use std::time::Duration;
use trellis_types::access::RequestSignature;
use trellis_types::crypto::verify_batch;
use trellis_types::{KeyPair, Payload, SignedTransaction, SystemOp, Transaction, decode};

const SENDERS: usize = 64;

fn wire_transactions(n: usize) -> Vec<Vec<u8>> {
    let keys: Vec<KeyPair> = (0..SENDERS)
        .map(|i| KeyPair::insecure_from_label(&format!("bench/{i}")))
        .collect();
    (0..n)
        .map(|i| {
            let key = &keys[i % SENDERS];
            let stx = Transaction {
                chain_id: "trellis-bench".into(),
                sender: key.public(),
                nonce: (i / SENDERS) as u64,
                expires_at_ms: 1_767_225_600_000 + 3_600_000,
                payload: Payload::System(SystemOp::Remark {
                    data: vec![0xab; 100].into(),
                }),
            }
            .sign(key);
            trellis_types::encode(&stx)
        })
        .collect()
}

fn decode_and_verify_batch(wire: &[Vec<u8>]) -> usize {
    let triples: Vec<_> = wire
        .iter()
        .map(|bytes| {
            let stx: SignedTransaction = decode(bytes).expect("bench transactions decode");
            (stx.tx.sender, stx.hash(), stx.signature)
        })
        .collect();
    verify_batch(&triples).iter().filter(|r| r.is_ok()).count()
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");

    let one = wire_transactions(1).pop().expect("one transaction");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single", |b| {
        b.iter(|| {
            let stx: SignedTransaction = decode(black_box(&one)).expect("decodes");
            stx.verify().expect("verifies")
        })
    });

    let key = KeyPair::insecure_from_label("bench/reader");
    let path = format!("/v1/contracts/{}/query", "ab".repeat(32));
    let body = br#"{"method":"pieces_by_holder","args":"0b737570706c6965722d7431000000"}"#;
    let header =
        RequestSignature::sign(&key, "trellis-bench", "POST", &path, body, 1_000).header_value();
    group.bench_function("request", |b| {
        b.iter(|| {
            let auth = RequestSignature::parse(black_box(&header)).expect("reads");
            assert!(auth.verify("trellis-bench", "POST", &path, black_box(body)));
        })
    });

    // A batch takes tens of milliseconds: sample it flat, not with growing iteration counts.
    group.sampling_mode(SamplingMode::Flat);
    for n in [1usize, 4, 16, 256, 1024] {
        let wire = wire_transactions(n);
        assert_eq!(
            decode_and_verify_batch(&wire),
            n,
            "every bench transaction verifies"
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("batch", n), &wire, |b, wire| {
            b.iter(|| decode_and_verify_batch(black_box(wire)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = verify
}
criterion_main!(benches);
