//! Cost of receivables operations through the real execution path: signed
//! transactions executed by `execution::execute_block` against a committed sled
//! state, each call instantiating the dev genesis's receivables module in
//! wasmtime (`vm::Vm`).
//!
//! Setup commits blocks that issue and accept enough roots; each benchmark then
//! executes one block of [`N`] transactions of one kind against that committed
//! state, without committing, so every iteration sees the same state. Criterion
//! reports time per block (and elements/s with N elements per block); the fuel
//! per operation, from the receipts, is printed once per benchmark.
//!
//! - `issue`: core-acme issues a root to supplier-t1.
//! - `accept`: supplier-t1 accepts a pending root.
//! - `transfer`: supplier-t1 transfers an active root to supplier-t2.
//! - `split_2_parts`: supplier-t1 splits an active root into two parts
//!   (supplier-t2, supplier-t3; no remainder).
//! - `financing`: supplier-t1 requests financing from bank-first and the bank
//!   accepts it: two transactions per operation (the block holds 2N).
//! - `settle`: core-acme settles a matured single-piece root.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use trellis_genesis::{Genesis, dev_account};
use trellis_node::execution::{self, BlockContext};
use trellis_node::storage::Storage;
use trellis_node::vm::{Limits, Vm};
use trellis_receivables::{
    AcceptFinancing, Issue, PieceId, PieceRef, RequestFinancing, Settle, Split, Terms, Transfer,
};
use trellis_types::block::{receipts_root, tx_root};
use trellis_types::codec::encode;
use trellis_types::{
    Address, Block, Bytes, Hash, Header, KeyPair, Payload, QuorumCertificate, Receipt,
    ReceiptStatus, SignedTransaction, Transaction,
};

/// Operations per measured block.
const N: u64 = 100;
const AMOUNT: u128 = 1_000_000; // 10,000.00
const DAY_MS: u64 = 86_400_000;

struct Fixture {
    _dir: tempfile::TempDir,
    storage: Storage,
    vm: Vm,
    genesis: Genesis,
    contract: Address,
    /// Genesis time; setup blocks follow it by seconds.
    t0: u64,
    maturity: u64,
    /// Next nonce per account label.
    nonces: std::collections::HashMap<&'static str, u64>,
}

impl Fixture {
    fn ctx(&self, timestamp_ms: u64) -> BlockContext {
        BlockContext {
            chain_id: self.genesis.chain_id.clone(),
            height: self.storage.head().expect("head").height + 1,
            timestamp_ms,
            max_expiry_ms: self.genesis.params.max_expiry_ms,
            limits: Limits::from_params(&self.genesis.params),
        }
    }

    /// A signed call from `org`'s ops account, taking its next nonce.
    fn call<A: serde::Serialize>(
        &mut self,
        org: &'static str,
        method: &str,
        args: &A,
        expires_at_ms: u64,
    ) -> SignedTransaction {
        let key: KeyPair = dev_account(&format!("{org}/ops"));
        let nonce = self.nonces.entry(org).or_insert(0);
        let tx = Transaction {
            chain_id: self.genesis.chain_id.clone(),
            sender: key.public(),
            nonce: *nonce,
            expires_at_ms,
            payload: Payload::Call {
                contract: self.contract,
                method: method.into(),
                args: Bytes(encode(args)),
            },
        }
        .sign(&key);
        *nonce += 1;
        tx
    }

    /// Executes `txs` at `timestamp_ms`; every receipt must succeed. Returns
    /// the receipts and how many state keys the block writes.
    fn execute(&self, timestamp_ms: u64, txs: &[SignedTransaction]) -> (Vec<Receipt>, usize) {
        let ctx = self.ctx(timestamp_ms);
        let out = execution::execute_block(&self.vm, &self.storage, &ctx, txs, &hashes(txs))
            .expect("block executes");
        check_success(&out.receipts);
        (out.receipts, out.writes.len())
    }

    /// Executes and commits the next block (setup only).
    fn commit(&mut self, timestamp_ms: u64, txs: Vec<SignedTransaction>) {
        let ctx = self.ctx(timestamp_ms);
        let head = self.storage.head().expect("head");
        let out = execution::execute_block(&self.vm, &self.storage, &ctx, &txs, &hashes(&txs))
            .expect("setup block executes");
        check_success(&out.receipts);
        let update = self
            .storage
            .prepare_state(ctx.height, out.writes)
            .expect("prepare_state");
        let block = Block {
            header: Header {
                chain_id: ctx.chain_id.clone(),
                height: ctx.height,
                round: 0,
                parent: head.block_hash,
                tx_root: tx_root(&txs),
                parent_commit_hash: QuorumCertificate::genesis(head.block_hash).hash(),
                receipts_root: receipts_root(&out.receipts),
                state_root: update.root,
                timestamp_ms,
                proposer: dev_account("bench/proposer").public(),
            },
            parent_commit: QuorumCertificate::genesis(head.block_hash),
            txs,
        };
        // Storage checks that the certificate names the block; consensus
        // (not measured here) checks its votes.
        let qc = QuorumCertificate {
            height: ctx.height,
            round: 0,
            block: block.hash(),
            votes: vec![],
        };
        self.storage
            .commit_block(Arc::new(block), &qc, out.receipts, update)
            .expect("commit_block");
    }
}

fn hashes(txs: &[SignedTransaction]) -> Vec<Hash> {
    txs.iter().map(SignedTransaction::hash).collect()
}

fn check_success(receipts: &[Receipt]) {
    for (i, r) in receipts.iter().enumerate() {
        assert!(
            r.status == ReceiptStatus::Success,
            "transaction {i} failed: {:?}",
            r.error
        );
    }
}

fn invoice(i: u64) -> [u8; 32] {
    *blake3::hash(format!("bench-invoice-{i}").as_bytes()).as_bytes()
}

fn issue_args(i: u64, maturity_ms: u64) -> Issue {
    Issue {
        to: "supplier-t1".into(),
        amount: AMOUNT,
        currency: "CNY".into(),
        maturity_ms,
        invoice_hash: invoice(i),
        terms: "net 90".into(),
    }
}

fn terms(t0: u64) -> Terms {
    Terms {
        price: Some(AMOUNT * 95 / 100),
        annual_rate_bps: None,
        expires_ms: t0 + 3_600_000,
    }
}

/// Builds the committed state: roots 1..=5N issued by core-acme to
/// supplier-t1; roots N+1..=5N accepted. Root ranges by use:
/// 1..=N pending (accept), N+1..=2N (transfer), 2N+1..=3N (split),
/// 3N+1..=4N (financing), 4N+1..=5N (settle).
fn setup() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("open storage");
    let vm = Vm::new();
    let genesis = Genesis::dev();
    trellis_node::chain::initialise(&storage, &genesis, &vm).expect("initialise dev genesis");
    let contract = genesis.contracts[0].address();
    let t0 = genesis.genesis_time_ms;
    let mut f = Fixture {
        _dir: dir,
        storage,
        vm,
        genesis,
        contract,
        t0,
        maturity: t0 + DAY_MS,
        nonces: Default::default(),
    };
    // Piece ids are numbered from 1 by one counter; the dev genesis issues none.
    let ts1 = t0 + 1_000;
    let txs: Vec<_> = (1..=5 * N)
        .map(|i| {
            f.call(
                "core-acme",
                "issue",
                &issue_args(i, f.maturity),
                ts1 + 60_000,
            )
        })
        .collect();
    f.commit(ts1, txs);
    let ts2 = t0 + 2_000;
    let txs: Vec<_> = (N + 1..=5 * N)
        .map(|piece| f.call("supplier-t1", "accept", &PieceRef { piece }, ts2 + 60_000))
        .collect();
    f.commit(ts2, txs);
    f
}

fn bench_contracts(c: &mut Criterion) {
    let mut f = setup();
    let now = f.t0 + 5_000; // within the 10 s acceptance window of the setup roots
    let exp = now + 60_000;
    let after_maturity = f.maturity + 1_000;
    let t0 = f.t0;
    let maturity = f.maturity;

    // Each block signed once, from the committed nonces: executing never
    // commits, so every block runs on the same state.
    let committed = f.nonces.clone();
    let mut blocks: Vec<(&str, u64, u64, Vec<SignedTransaction>)> = Vec::new();
    let ids = |k: u64| (k * N + 1..=(k + 1) * N).collect::<Vec<PieceId>>();

    let txs = (5 * N + 1..=6 * N)
        .map(|i| f.call("core-acme", "issue", &issue_args(i, maturity), exp))
        .collect();
    blocks.push(("issue", now, N, txs));
    f.nonces = committed.clone();

    let txs = ids(0)
        .into_iter()
        .map(|piece| f.call("supplier-t1", "accept", &PieceRef { piece }, exp))
        .collect();
    blocks.push(("accept", now, N, txs));
    f.nonces = committed.clone();

    let txs = ids(1)
        .into_iter()
        .map(|piece| {
            let to = "supplier-t2".into();
            f.call("supplier-t1", "transfer", &Transfer { piece, to }, exp)
        })
        .collect();
    blocks.push(("transfer", now, N, txs));
    f.nonces = committed.clone();

    let txs = ids(2)
        .into_iter()
        .map(|piece| {
            let parts = vec![
                ("supplier-t2".into(), AMOUNT * 4 / 10),
                ("supplier-t3".into(), AMOUNT * 6 / 10),
            ];
            f.call("supplier-t1", "split", &Split { piece, parts }, exp)
        })
        .collect();
    blocks.push(("split_2_parts", now, N, txs));
    f.nonces = committed.clone();

    let mut txs = Vec::new();
    for piece in ids(3) {
        let request = RequestFinancing {
            piece,
            bank: "bank-first".into(),
            terms: terms(t0),
        };
        txs.push(f.call("supplier-t1", "request_financing", &request, exp));
        let accept = AcceptFinancing {
            piece,
            bank: "bank-first".into(),
            terms: terms(t0),
            payment_ref: format!("wire-{piece}"),
        };
        txs.push(f.call("bank-first", "accept_financing", &accept, exp));
    }
    blocks.push(("financing", now, N, txs));
    f.nonces = committed.clone();

    let txs = ids(4)
        .into_iter()
        .map(|root| {
            let settle = Settle {
                root,
                payment_ref: format!("pay-{root}"),
            };
            f.call("core-acme", "settle", &settle, after_maturity + 60_000)
        })
        .collect();
    blocks.push(("settle", after_maturity, N, txs));

    let mut group = c.benchmark_group("receivables");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, ts, ops, txs) in &blocks {
        let (receipts, writes) = f.execute(*ts, txs);
        let fuel: u64 = receipts.iter().map(|r| r.fuel_used).sum();
        let detail = if receipts.len() as u64 != *ops {
            let per_tx: Vec<String> = receipts[..2]
                .iter()
                .map(|r| r.fuel_used.to_string())
                .collect();
            format!(
                " ({} txs per op, fuel {})",
                receipts.len() as u64 / ops,
                per_tx.join(" + ")
            )
        } else {
            String::new()
        };
        eprintln!(
            "receivables/{name}: {} fuel/op{detail}, {} state keys written/op, {ops} ops per block",
            fuel / ops,
            writes as u64 / ops
        );
        let ctx = f.ctx(*ts);
        let tx_hashes = hashes(txs);
        group.throughput(Throughput::Elements(*ops));
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(
                    execution::execute_block(&f.vm, &f.storage, &ctx, black_box(txs), &tx_hashes)
                        .expect("block executes"),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_contracts);
criterion_main!(benches);
