//! Storage and state-tree costs of one block.
//!
//! - `commit_block/1000_txs`: prepare the state update for ~2,000 touched keys
//!   (a nonce and a value per transaction) and commit a 1,000-transaction block
//!   with its receipts to sled (one batch + flush). Reported per block.
//! - `prepare_state/1000_keys_on_100k`: compute the next root for 1,000 touched
//!   keys on top of a committed state of 100,000 keys (writes nothing).
//! - `prepare_state/tree_log_records_1000_keys`: lay out that update's tree
//!   nodes and values as the tree log's records (the block writer's encoding).
//! - `sled_records/<bytes>`: insert 1.2 MB (a 400-transaction block's tree
//!   nodes) into sled as records of that size, in key order, and flush: what
//!   sizing the state tree's records trades (`state::tree_records`).
//! - `event_stream/<step>_1000_txs`: what an event stream paid per block for
//!   each block it sent before streams shared the newest blocks and their
//!   messages (`storage::recent`): reading the block and its receipts back
//!   from the store, and encoding each transaction's message as JSON. Now
//!   only the first stream encodes, and none reads a recent block back.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use trellis_node::state::Writes;
use trellis_node::storage::Storage;
use trellis_types::api::CommittedTx;
use trellis_types::block::{receipts_root, tx_root};
use trellis_types::{
    Address, Block, Event, EventSource, Hash, Header, KeyPair, Payload, QuorumCertificate, Receipt,
    ReceiptStatus, SignedTransaction, SystemOp, Transaction,
};

const TXS_PER_BLOCK: usize = 1_000;

fn remark(key: &KeyPair, nonce: u64) -> SignedTransaction {
    Transaction {
        chain_id: "bench".into(),
        sender: key.public(),
        nonce,
        expires_at_ms: u64::MAX,
        payload: Payload::System(SystemOp::Remark {
            data: vec![0xab; 100].into(),
        }),
    }
    .sign(key)
}

/// The writes of a block of remarks: each sender's nonce and one value per transaction
/// (every sender sends one transaction per block, so ~2,000 distinct keys).
fn block_writes(txs: &[SignedTransaction], height: u64) -> Writes {
    let mut writes = Writes::new();
    for (i, tx) in txs.iter().enumerate() {
        let mut nonce_key = b"nonce/".to_vec();
        nonce_key.extend_from_slice(&tx.tx.sender.0);
        writes.insert(nonce_key, Some((tx.tx.nonce + 1).to_be_bytes().to_vec()));
        writes.insert(
            format!("value/{height}/{i}").into_bytes(),
            Some(vec![0x5a; 64]),
        );
    }
    writes
}

/// Prepares and commits the next block carrying `txs` and `writes`, each
/// receipt with `events`.
fn commit_next(
    storage: &Storage,
    txs: Vec<SignedTransaction>,
    writes: Writes,
    proposer: &KeyPair,
    events: &[Event],
) {
    let head = storage.head();
    let height = head.map_or(0, |h| h.height + 1);
    let update = storage
        .prepare_state(height, writes)
        .expect("prepare_state");
    let receipts: Vec<Receipt> = txs
        .iter()
        .map(|tx| Receipt {
            tx: tx.hash(),
            status: ReceiptStatus::Success,
            error: None,
            fuel_used: 1_000,
            events: events.to_vec(),
        })
        .collect();
    let block = Block {
        header: Header {
            chain_id: "bench".into(),
            height,
            round: 0,
            parent: head.map_or(Hash::ZERO, |h| h.block_hash),
            tx_root: tx_root(&txs),
            parent_commit_hash: QuorumCertificate::genesis(Hash::ZERO).hash(),
            receipts_root: receipts_root(&receipts),
            state_root: update.root,
            timestamp_ms: 1_700_000_000_000 + height,
            proposer: proposer.public(),
        },
        parent_commit: QuorumCertificate::genesis(Hash::ZERO),
        txs,
    };
    let qc = QuorumCertificate {
        height,
        round: 0,
        block: block.hash(),
        votes: vec![],
    };
    storage
        .commit_block(Arc::new(block), &qc, receipts, update)
        .expect("commit_block");
}

fn bench_commit_block(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("open");
    let proposer = KeyPair::insecure_from_label("proposer");
    let senders: Vec<KeyPair> = (0..TXS_PER_BLOCK)
        .map(|i| KeyPair::insecure_from_label(&format!("sender-{i}")))
        .collect();
    commit_next(&storage, vec![], Writes::new(), &proposer, &[]);
    let mut round = 0u64;

    let mut group = c.benchmark_group("commit_block");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("1000_txs", |b| {
        b.iter_batched(
            || {
                // Signing is the client's cost, not storage's: done outside the measurement.
                let txs: Vec<SignedTransaction> =
                    senders.iter().map(|key| remark(key, round)).collect();
                round += 1;
                let height = storage.head().map_or(0, |h| h.height + 1);
                let writes = block_writes(&txs, height);
                (txs, writes)
            },
            |(txs, writes)| commit_next(&storage, txs, writes, &proposer, &[]),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn bench_prepare_state(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("open");
    let proposer = KeyPair::insecure_from_label("proposer");
    let key = |i: u64| format!("account/{i:08}").into_bytes();
    for chunk in 0..10u64 {
        let writes: Writes = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| (key(i), Some(vec![7; 32])))
            .collect();
        commit_next(&storage, vec![], writes, &proposer, &[]);
    }
    let next = storage.head().expect("head").height + 1;
    // Half updates of existing keys, half new keys.
    let writes: Writes = (0..1_000u64)
        .map(|i| {
            if i % 2 == 0 {
                (key(i * 97), Some(vec![9; 32]))
            } else {
                (key(1_000_000 + i), Some(vec![9; 32]))
            }
        })
        .collect();

    let mut group = c.benchmark_group("prepare_state");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("1000_keys_on_100k", |b| {
        b.iter_batched(
            || writes.clone(),
            |w| black_box(storage.prepare_state(next, w).expect("prepare_state").root),
            BatchSize::SmallInput,
        );
    });
    let update = storage
        .prepare_state(next, writes.clone())
        .expect("prepare_state");
    group.bench_function("tree_log_records_1000_keys", |b| {
        b.iter(|| black_box(update.tree_log_records().len()));
    });
    group.finish();
}

fn bench_sled_records(c: &mut Criterion) {
    const BLOCK_BYTES: usize = 1_200_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = trellis_node::storage::sled_config(dir.path())
        .open()
        .expect("open sled");
    let mut version = 0u64;
    let mut group = c.benchmark_group("sled_records");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for size in [800, 4 * 1024, 8 * 1024, 16 * 1024] {
        let record = vec![0x5a; size];
        group.bench_function(size.to_string(), |b| {
            b.iter(|| {
                // Each block's records are new keys after the last block's.
                version += 1;
                for i in 0..(BLOCK_BYTES / size) as u32 {
                    let mut key = version.to_be_bytes().to_vec();
                    key.extend_from_slice(&i.to_be_bytes());
                    db.insert(key, record.as_slice()).expect("insert");
                }
                db.flush().expect("flush")
            });
        });
    }
    group.finish();
}

/// A split's event, about the size of the receivables contract's.
fn split_event() -> Event {
    let attribute = |k: &str, v: &str| (k.to_string(), v.to_string());
    Event {
        source: EventSource::Contract(Address::derive(
            &KeyPair::insecure_from_label("deployer").public(),
            &Hash::ZERO,
            &Hash::ZERO,
        )),
        kind: "split".into(),
        attributes: vec![
            attribute("piece", "r-000123/4"),
            attribute("parent", "r-000123/2"),
            attribute("amount", "125000.00"),
            attribute("currency", "CNY"),
            attribute("holder", "supplier-t2"),
            attribute("root", "r-000123"),
        ],
    }
}

fn bench_event_stream(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("open");
    let proposer = KeyPair::insecure_from_label("proposer");
    commit_next(&storage, vec![], Writes::new(), &proposer, &[]);
    let txs: Vec<SignedTransaction> = (0..TXS_PER_BLOCK)
        .map(|i| remark(&KeyPair::insecure_from_label(&format!("sender-{i}")), 0))
        .collect();
    commit_next(&storage, txs, Writes::new(), &proposer, &[split_event()]);
    // More blocks than storage keeps in memory: block 1 is read back.
    for _ in 0..8 {
        commit_next(&storage, vec![], Writes::new(), &proposer, &[]);
    }

    let mut group = c.benchmark_group("event_stream");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("read_back_1000_txs", |b| {
        b.iter(|| black_box(storage.committed_block(1).expect("read").expect("block 1")));
    });
    let committed = storage.committed_block(1).expect("read").expect("block 1");
    // A status query: the transaction's record, then its receipt group.
    let last = committed.block.txs.last().expect("a full block").hash();
    group.bench_function("tx_location", |b| {
        b.iter(|| black_box(storage.tx_location(&last).expect("read").expect("found")));
    });
    group.bench_function("encode_1000_txs", |b| {
        b.iter(|| {
            let txs = committed.block.txs.iter().zip(&committed.receipts);
            for (index, (stx, receipt)) in (0u32..).zip(txs) {
                let tx = CommittedTx::new(&committed.block.header, index, stx.tx.sender, receipt);
                black_box(serde_json::to_string(&tx).expect("encode"));
            }
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_commit_block,
    bench_prepare_state,
    bench_sled_records,
    bench_event_stream
);
criterion_main!(benches);
