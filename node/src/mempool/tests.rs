//! Admission verdicts, block candidates and pruning, against real sled storage
//! initialised with the dev genesis. Where a test needs a committed nonce above
//! zero it commits a block through the real chain (build, certify, commit).

use super::*;
use crate::chain::tests::{certificate, validator};
use crate::chain::{self, Chain};
use crate::priority::Priority;
use crate::storage::Storage;
use std::sync::Arc;
use tempfile::TempDir;
use trellis_genesis::{DEV_GENESIS_TIME_MS, Genesis, GenesisAccount, dev_account};
use trellis_types::codec::encode;
use trellis_types::{Block, Bytes, KeyPair, Payload, SystemOp, Transaction};

const CHAIN_ID: &str = "trellis-dev";
/// A minute after the dev genesis: the clock of every test unless it says otherwise.
const NOW: u64 = DEV_GENESIS_TIME_MS + 60_000;
/// Default expiry of test transactions: a minute from `NOW`, well inside `max_expiry_ms`.
const EXPIRES: u64 = NOW + 60_000;

const ACME: &str = "core-acme/ops";
const T1: &str = "supplier-t1/ops";
const T2: &str = "supplier-t2/ops";
const BANK: &str = "bank-first/ops";

/// An identity-point key: small order, so it would accept forged signatures.
const WEAK: PublicKey = {
    let mut key = [0u8; 32];
    key[0] = 1;
    PublicKey(key)
};

struct Env {
    _dir: TempDir,
    storage: Storage,
    mempool: Mempool,
}

impl Env {
    fn new() -> Env {
        Env::with(Genesis::dev(), trellis_genesis::dev_params())
    }

    /// A node with peers: what its clients have admitted is kept to forward.
    fn forwarding() -> Env {
        let env = Env::new();
        Env {
            mempool: env.mempool.with_forwarding(),
            ..env
        }
    }

    fn with_params(params: ChainParams) -> Env {
        Env::with(Genesis::dev(), params)
    }

    fn with_weak_account() -> Env {
        Env::with(genesis_with_weak_account(), trellis_genesis::dev_params())
    }

    fn with(genesis: Genesis, params: ChainParams) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(dir.path()).expect("open storage");
        chain::initialise(&storage, &genesis, &crate::vm::Vm::new()).expect("write genesis");
        Env {
            _dir: dir,
            storage,
            mempool: Mempool::new(CHAIN_ID.into(), params),
        }
    }

    fn admit(&self, stx: &SignedTransaction) -> Result<Hash, AdmissionError> {
        self.mempool.admit(&encode(stx), &self.storage, NOW)
    }

    fn refused(&self, bytes: &[u8]) -> AdmissionError {
        self.mempool
            .admit(bytes, &self.storage, NOW)
            .expect_err("the transaction should be refused")
    }

    /// The candidates, each checked to come with its own hash.
    fn candidates(&self, max_txs: usize, max_bytes: u64) -> Vec<SignedTransaction> {
        let candidates = self.mempool.candidates(&self.storage, max_txs, max_bytes);
        let candidates = candidates.expect("candidates");
        for (hash, tx) in &candidates {
            assert_eq!(*hash, tx.hash());
        }
        candidates.into_iter().map(|(_, tx)| tx).collect()
    }

    /// Commits `txs` in a block built, certified and committed by the real chain
    /// with its own mempool, so the mempool under test sees only the new state
    /// (until [`Env::prune`]s it with the block returned).
    fn commit(&self, txs: &[SignedTransaction], now_ms: u64) -> Arc<Block> {
        let genesis = Genesis::dev();
        let pool = Arc::new(Mempool::new(CHAIN_ID.into(), genesis.params.clone()));
        for tx in txs {
            pool.admit(&encode(tx), &self.storage, now_ms)
                .expect("the chain's mempool admits every transaction to commit");
        }
        let mut chain = Chain::new(
            self.storage.clone(),
            &genesis,
            pool,
            std::sync::Arc::new(crate::vm::Vm::new()),
        );
        let validator = validator();
        let block = chain.build(0, &validator, now_ms).expect("build");
        let mut included: Vec<Hash> = block.txs.iter().map(SignedTransaction::hash).collect();
        let mut wanted: Vec<Hash> = txs.iter().map(SignedTransaction::hash).collect();
        included.sort();
        wanted.sort();
        assert_eq!(
            included, wanted,
            "the block carries exactly the transactions given"
        );
        let qc = certificate(&block, &validator);
        chain
            .validators()
            .verify_certificate(CHAIN_ID, &qc)
            .expect("a real certificate");
        let block = Arc::new(block);
        chain.commit(&block, &qc).expect("commit");
        block
    }

    /// What the node does after committing `block`.
    fn prune(&self, block: &Block) {
        let block_ms = block.header.timestamp_ms;
        let committed = hashes(&block.txs);
        self.mempool
            .prune(&self.storage, &committed, block_ms)
            .unwrap();
    }

    fn nonce(&self, label: &str) -> u64 {
        execution::account(&self.storage, &dev_account(label).public())
            .unwrap()
            .expect("a dev account")
            .nonce
    }
}

/// The dev genesis with one more account whose key is weak. A valid genesis
/// refuses such a key; written straight into state, it lets us reach the
/// admission check that is the last line of defence against it.
fn genesis_with_weak_account() -> Genesis {
    genesis_with_account("supplier-t3", WEAK, "weak")
}

/// The dev genesis with one more account for `org`.
fn genesis_with_account(org: &str, key: PublicKey, label: &str) -> Genesis {
    let mut genesis = Genesis::dev();
    genesis
        .organisations
        .iter_mut()
        .find(|o| o.id == org)
        .expect("an organisation of the dev genesis")
        .accounts
        .push(GenesisAccount {
            key,
            org_admin: false,
            label: label.into(),
        });
    genesis
}

fn remark(label: &str, nonce: u64) -> Transaction {
    Transaction {
        chain_id: CHAIN_ID.into(),
        sender: dev_account(label).public(),
        nonce,
        expires_at_ms: EXPIRES,
        payload: Payload::System(SystemOp::Remark {
            data: Bytes::from(format!("{label} #{nonce}").into_bytes()),
        }),
    }
}

fn signed(label: &str, nonce: u64) -> SignedTransaction {
    remark(label, nonce).sign(&dev_account(label))
}

fn with_data(label: &str, nonce: u64, data: &[u8]) -> SignedTransaction {
    let mut tx = remark(label, nonce);
    tx.payload = Payload::System(SystemOp::Remark { data: data.into() });
    tx.sign(&dev_account(label))
}

fn hashes(txs: &[SignedTransaction]) -> Vec<Hash> {
    txs.iter().map(SignedTransaction::hash).collect()
}

// ---- admission: one test per verdict ----

#[test]
fn a_valid_transaction_is_admitted_under_its_hash() {
    let env = Env::new();
    let stx = signed(ACME, 0);
    assert_eq!(env.admit(&stx).unwrap(), stx.hash());
    assert_eq!(env.mempool.len(), 1);
    assert!(env.mempool.contains(&stx.hash()));
}

#[test]
fn admission_refuses_a_transaction_larger_than_max_tx_bytes() {
    let env = Env::with_params(ChainParams {
        max_tx_bytes: 200,
        ..trellis_genesis::dev_params()
    });
    let fits = with_data(ACME, 0, &[7; 50]);
    let bytes = encode(&with_data(ACME, 0, &[7; 150]));
    assert!(encode(&fits).len() <= 200);
    let err = env.refused(&bytes);
    assert!(
        matches!(err, AdmissionError::Oversized { size, max: 200 } if size == bytes.len()),
        "{err:?}"
    );
    assert_eq!(err.code(), "oversized");
    env.admit(&fits)
        .expect("a transaction under the limit is admitted");
}

#[test]
fn admission_refuses_bytes_that_do_not_decode() {
    let env = Env::new();
    let bytes = encode(&signed(ACME, 0));
    let err = env.refused(&bytes[..bytes.len() - 1]);
    assert!(
        matches!(err, AdmissionError::Malformed(CodecError::Malformed(_))),
        "{err:?}"
    );
    assert_eq!(err.code(), "malformed");

    let mut other_version = bytes.clone();
    other_version[0] = 2;
    let err = env.refused(&other_version);
    assert!(
        matches!(
            err,
            AdmissionError::Malformed(CodecError::Version { found: 2 })
        ),
        "{err:?}"
    );
    assert!(matches!(
        env.refused(&[]),
        AdmissionError::Malformed(CodecError::Empty)
    ));
    assert!(env.mempool.is_empty());
}

#[test]
fn admission_refuses_a_nonce_written_as_an_over_long_varint() {
    let env = Env::new();
    let stx = signed(ACME, 5);
    let canonical = encode(&stx);
    // version, chain id length, chain id, sender: then the nonce, one varint byte for 5.
    let at = 1 + 1 + CHAIN_ID.len() + PublicKey::LEN;
    assert_eq!(
        canonical[at], 5,
        "layout assumption: the nonce is the byte at {at}"
    );
    let mut over_long = canonical[..at].to_vec();
    over_long.extend([0x85, 0x00]); // 5 with a redundant zero continuation group
    over_long.extend(&canonical[at + 1..]);

    let err = env.refused(&over_long);
    assert!(
        matches!(err, AdmissionError::Malformed(CodecError::NonCanonical)),
        "{err:?}"
    );
    assert_eq!(err.code(), "non_canonical");
    env.admit(&stx)
        .expect("the canonical form of the same transaction is admitted");
}

#[test]
fn admission_refuses_bytes_trailing_the_transaction() {
    let env = Env::new();
    let mut bytes = encode(&signed(ACME, 0));
    bytes.extend([0, 0, 0]);
    let err = env.refused(&bytes);
    assert!(
        matches!(err, AdmissionError::Malformed(CodecError::TrailingBytes(3))),
        "{err:?}"
    );
    assert_eq!(err.code(), "malformed");
}

#[test]
fn admission_refuses_a_transaction_signed_for_another_chain() {
    let env = Env::new();
    let mut tx = remark(ACME, 0);
    tx.chain_id = "trellis-local".into();
    let err = env.refused(&encode(&tx.sign(&dev_account(ACME))));
    assert!(
        matches!(&err, AdmissionError::WrongChain { expected, got } if expected == CHAIN_ID && got == "trellis-local"),
        "{err:?}"
    );
    assert_eq!(err.code(), "wrong_chain");
}

#[test]
fn admission_refuses_a_transaction_expiring_now_or_earlier() {
    let env = Env::new();
    for expires_at_ms in [NOW, NOW - 1, 0] {
        let mut tx = remark(ACME, 0);
        tx.expires_at_ms = expires_at_ms;
        let err = env.refused(&encode(&tx.sign(&dev_account(ACME))));
        assert!(
            matches!(err, AdmissionError::Expired { expires_at_ms: e, now_ms: NOW } if e == expires_at_ms),
            "{err:?}"
        );
        assert_eq!(err.code(), "expired");
    }
    let mut tx = remark(ACME, 0);
    tx.expires_at_ms = NOW + 1;
    env.admit(&tx.sign(&dev_account(ACME)))
        .expect("a millisecond of life left is enough");
}

#[test]
fn admission_refuses_an_expiry_further_ahead_than_max_expiry_ms() {
    let env = Env::new();
    let max = trellis_genesis::dev_params().max_expiry_ms;
    let mut tx = remark(ACME, 0);
    tx.expires_at_ms = NOW + max + 1;
    let err = env.refused(&encode(&tx.clone().sign(&dev_account(ACME))));
    assert!(
        matches!(err, AdmissionError::ExpiryTooFar { expires_at_ms, max_ms } if expires_at_ms == NOW + max + 1 && max_ms == max),
        "{err:?}"
    );
    assert_eq!(err.code(), "expiry_too_far");

    tx.expires_at_ms = NOW + max;
    env.admit(&tx.sign(&dev_account(ACME)))
        .expect("exactly max_expiry_ms ahead is allowed");
}

#[test]
fn admission_refuses_a_sender_that_is_no_members_account() {
    let env = Env::new();
    let stranger = KeyPair::insecure_from_label("stranger");
    let mut tx = remark(ACME, 0);
    tx.sender = stranger.public();
    let err = env.refused(&encode(&tx.sign(&stranger)));
    assert!(
        matches!(err, AdmissionError::UnknownSender(k) if k == stranger.public()),
        "{err:?}"
    );
    assert_eq!(err.code(), "unknown_sender");
}

#[test]
fn admission_refuses_a_regulator_which_reads_and_sends_nothing() {
    let env = Env::new();
    let err = env.refused(&encode(&signed("regulator/ops", 0)));
    assert!(
        matches!(err, AdmissionError::ReadOnlySender(ref org) if org == "regulator"),
        "{err:?}"
    );
    assert_eq!(err.code(), "read_only_sender");
}

#[test]
fn admission_refuses_a_nonce_the_chain_has_already_used() {
    let env = Env::new();
    let first = signed(ACME, 0);
    env.commit(std::slice::from_ref(&first), NOW);
    assert_eq!(env.nonce(ACME), 1);

    let err = env.refused(&encode(&first));
    assert!(
        matches!(
            err,
            AdmissionError::NonceReplayed {
                expected: 1,
                got: 0
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "nonce_replayed");
    let other_payload = with_data(ACME, 0, b"a different transaction, same used nonce");
    assert!(matches!(
        env.refused(&encode(&other_payload)),
        AdmissionError::NonceReplayed {
            expected: 1,
            got: 0
        }
    ));
    env.admit(&signed(ACME, 1))
        .expect("the next nonce is admitted");
}

#[test]
fn admission_refuses_a_nonce_max_nonce_gap_or_more_ahead() {
    let env = Env::new();
    let gap = trellis_genesis::dev_params().max_nonce_gap;
    let err = env.refused(&encode(&signed(ACME, gap)));
    assert!(
        matches!(err, AdmissionError::NonceTooFarAhead { expected: 0, got, max_gap } if got == gap && max_gap == gap),
        "{err:?}"
    );
    assert_eq!(err.code(), "nonce_too_far_ahead");
    env.admit(&signed(ACME, gap - 1))
        .expect("the furthest nonce inside the gap is admitted");
}

#[test]
fn admission_refuses_a_transaction_already_waiting() {
    let env = Env::new();
    let stx = signed(ACME, 0);
    env.admit(&stx).unwrap();
    let err = env.refused(&encode(&stx));
    assert!(
        matches!(err, AdmissionError::AlreadyKnown(h) if h == stx.hash()),
        "{err:?}"
    );
    assert_eq!(err.code(), "already_known");
    assert_eq!(env.mempool.len(), 1);
}

#[test]
fn admission_refuses_a_second_transaction_with_a_waiting_nonce() {
    let env = Env::new();
    let first = signed(ACME, 3);
    env.admit(&first).unwrap();
    let rival = with_data(ACME, 3, b"same sender, same nonce, other payload");
    let err = env.refused(&encode(&rival));
    assert!(matches!(err, AdmissionError::NonceTaken(3)), "{err:?}");
    assert_eq!(err.code(), "nonce_taken");
    assert!(env.mempool.contains(&first.hash()) && !env.mempool.contains(&rival.hash()));
}

#[test]
fn admission_refuses_a_nonce_a_block_used_between_its_check_and_its_insert() {
    // The race behind a transaction answered 202 that could never commit: it
    // is checked while its nonce is free; a rival with that nonce is then
    // admitted, committed and pruned; then it is inserted.
    let env = Env::new();
    let late = with_data(ACME, 0, b"checked while nonce 0 was free");
    let checked = match env.mempool.check(&encode(&late), &env.storage, NOW) {
        Ok(checked) => checked,
        Err(e) => panic!("nonce 0 is free: {e:?}"),
    };
    let rival = signed(ACME, 0);
    env.admit(&rival).unwrap();
    let block = env.commit(std::slice::from_ref(&rival), NOW);
    env.prune(&block);
    assert!(env.mempool.is_empty());

    let err = env
        .mempool
        .insert(checked, &env.storage)
        .expect_err("insert reads the nonce again, under the pool lock");
    assert!(
        matches!(
            err,
            AdmissionError::NonceReplayed {
                expected: 1,
                got: 0
            }
        ),
        "{err:?}"
    );
    assert!(env.mempool.is_empty());
}

#[test]
fn admission_refuses_an_account_with_a_weak_key_before_trusting_its_signature() {
    let env = Env::with_weak_account();
    assert!(
        execution::account(&env.storage, &WEAK).unwrap().is_some(),
        "the weak key is a member account"
    );
    let mut tx = remark(ACME, 0);
    tx.sender = WEAK;
    // Under the identity key s·B = R forges anything, so the key itself must be refused, whatever the signature.
    let stx = SignedTransaction {
        signature: dev_account(ACME).sign(&tx.hash()),
        tx,
    };
    let err = env.refused(&encode(&stx));
    assert!(matches!(err, AdmissionError::WeakKey), "{err:?}");
    assert_eq!(err.code(), "weak_key");
    assert!(env.mempool.is_empty());
}

#[test]
fn admission_refuses_a_signature_that_does_not_verify() {
    let env = Env::new();
    let tx = remark(ACME, 0);
    let by_someone_else = SignedTransaction {
        signature: dev_account(T1).sign(&tx.hash()),
        tx: tx.clone(),
    };
    let err = env.refused(&encode(&by_someone_else));
    assert!(matches!(err, AdmissionError::BadSignature), "{err:?}");
    assert_eq!(err.code(), "bad_signature");

    let mut flipped = tx.sign(&dev_account(ACME));
    flipped.signature.0[0] ^= 1;
    assert!(matches!(
        env.refused(&encode(&flipped)),
        AdmissionError::BadSignature
    ));
    assert!(env.mempool.is_empty());
}

#[test]
fn admission_refuses_anything_once_mempool_capacity_is_reached() {
    let env = Env::with_params(ChainParams {
        mempool_capacity: 2,
        ..trellis_genesis::dev_params()
    });
    env.admit(&signed(ACME, 0)).unwrap();
    env.admit(&signed(T1, 0)).unwrap();
    let err = env.refused(&encode(&signed(T2, 0)));
    assert!(
        matches!(err, AdmissionError::MempoolFull { capacity: 2 }),
        "{err:?}"
    );
    assert_eq!(err.code(), "mempool_full");
    assert_eq!(env.mempool.len(), 2);
}

/// A dev-chain mempool capped at `max_bytes` of waiting transactions.
fn pool_of_bytes(max_bytes: usize) -> Mempool {
    Mempool::new(CHAIN_ID.into(), trellis_genesis::dev_params()).with_max_bytes(max_bytes)
}

#[test]
fn admission_refuses_past_the_byte_cap_and_a_commit_frees_the_room() {
    let first = signed(ACME, 0);
    let size = encode(&first).len();
    let mut env = Env::new();
    env.mempool = pool_of_bytes(2 * size + size / 2);
    env.admit(&first).unwrap();
    env.admit(&signed(T1, 0)).unwrap();
    let err = env.refused(&encode(&signed(T2, 0)));
    assert!(
        matches!(err, AdmissionError::MempoolBytesFull { max_bytes } if max_bytes == 2 * size + size / 2),
        "{err:?}"
    );
    assert_eq!(err.code(), "mempool_full");
    assert_eq!(env.mempool.len(), 2);

    // Committed and pruned, the first one's bytes are free again.
    let block = env.commit(std::slice::from_ref(&first), NOW);
    env.prune(&block);
    assert_eq!(env.mempool.len(), 1);
    env.admit(&signed(T2, 0)).unwrap();
}

#[test]
fn an_outbox_nobody_takes_holds_only_what_still_waits_in_the_pool() {
    let env = Env::forwarding();
    let first = signed(ACME, 0);
    env.admit(&first).unwrap();
    env.admit(&signed(T1, 0)).unwrap();
    // Both commit and leave the pool, and the outbox nobody took with it
    // (an observer with no validator connected): what it admits next is
    // still forwarded once one is.
    let block = env.commit(&[first, signed(T1, 0)], NOW);
    env.prune(&block);
    assert_eq!(env.mempool.len(), 0);
    let third = signed(T2, 0);
    env.admit(&third).unwrap();
    assert_eq!(
        env.mempool.take_outbox(),
        vec![(third.hash(), encode(&third))]
    );
}

#[test]
fn admission_refuses_a_sender_with_mempool_per_sender_transactions_waiting() {
    let env = Env::with_params(ChainParams {
        mempool_per_sender: 2,
        ..trellis_genesis::dev_params()
    });
    env.admit(&signed(ACME, 0)).unwrap();
    env.admit(&signed(ACME, 1)).unwrap();
    let err = env.refused(&encode(&signed(ACME, 2)));
    assert!(
        matches!(err, AdmissionError::SenderQueueFull { limit: 2 }),
        "{err:?}"
    );
    assert_eq!(err.code(), "sender_queue_full");
    env.admit(&signed(T1, 0))
        .expect("another sender still has room");
}

/// The dev genesis with a second account for core-acme.
fn genesis_with_second_acme_account() -> Genesis {
    genesis_with_account("core-acme", dev_account(ACME_TREASURY).public(), "treasury")
}

const ACME_TREASURY: &str = "core-acme/treasury";

#[test]
fn an_organisation_s_senders_together_hold_at_most_its_share_once_the_pool_is_half_full() {
    let params = ChainParams {
        mempool_capacity: 12,
        mempool_per_sender: 3,
        ..trellis_genesis::dev_params()
    };
    let env = Env::with(genesis_with_second_acme_account(), params);
    // While the pool has room, more than a quarter of 12, from two accounts.
    for nonce in 0..3 {
        env.admit(&signed(ACME, nonce)).unwrap();
    }
    env.admit(&signed(ACME_TREASURY, 0)).unwrap();
    // Half full: core-acme, over its quarter, may add no more.
    env.admit(&signed(T1, 0)).unwrap();
    env.admit(&signed(T1, 1)).unwrap();
    let err = env.refused(&encode(&signed(ACME_TREASURY, 1)));
    assert!(
        matches!(&err, AdmissionError::OrgShareFull { org, max_txs: 3, .. } if org == "core-acme"),
        "{err:?}"
    );
    assert_eq!(err.code(), "org_share_full");
    env.admit(&signed(T2, 0))
        .expect("another organisation still has room");

    // Once most of it commits, the organisation has room again.
    let block = env.commit(&[signed(ACME, 0), signed(ACME, 1), signed(ACME, 2)], NOW);
    env.prune(&block);
    env.admit(&signed(ACME_TREASURY, 1)).unwrap();
}

#[test]
fn an_organisation_s_share_of_bytes_is_a_quarter_of_the_pool_s_once_half_is_used() {
    let size = encode(&signed(ACME, 0)).len();
    let mut env = Env::with(
        genesis_with_second_acme_account(),
        trellis_genesis::dev_params(),
    );
    // A quarter is two and a half transactions, half is five.
    env.mempool =
        Mempool::new(CHAIN_ID.into(), trellis_genesis::dev_params()).with_max_bytes(10 * size);
    env.admit(&signed(ACME, 0)).unwrap();
    env.admit(&signed(ACME_TREASURY, 0)).unwrap();
    env.admit(&signed(ACME, 1)).unwrap();
    env.admit(&signed(T1, 0)).unwrap();
    let err = env.refused(&encode(&signed(ACME, 2)));
    assert_eq!(err.code(), "org_share_full", "{err:?}");
    env.admit(&signed(T2, 0)).unwrap();
}

// ---- batches ----

/// A mix of every verdict a batch can give, including ones that depend on an
/// earlier item of the same batch (duplicates, nonce clashes, queue limits).
fn mixed_batch() -> Vec<Vec<u8>> {
    let mut wrong_chain = remark(T1, 0);
    wrong_chain.chain_id = "elsewhere".into();
    let mut expired = remark(T1, 0);
    expired.expires_at_ms = NOW;
    let stranger = KeyPair::insecure_from_label("stranger");
    let mut unknown = remark(T1, 0);
    unknown.sender = stranger.public();
    let mut weak = remark(T1, 0);
    weak.sender = WEAK;
    let bank = remark(BANK, 0);
    let bad_signature = SignedTransaction {
        signature: dev_account(T2).sign(&bank.hash()),
        tx: bank.clone(),
    };
    let mut truncated = encode(&signed(T2, 9));
    truncated.pop();

    let txs = [
        encode(&signed(ACME, 0)),
        encode(&signed(ACME, 0)),              // duplicate of a batch-mate
        encode(&with_data(ACME, 0, b"rival")), // nonce taken by a batch-mate
        encode(&signed(ACME, 1)),
        encode(&signed(ACME, 2)), // sender queue full (limit 2)
        encode(&wrong_chain.sign(&dev_account(T1))),
        encode(&expired.sign(&dev_account(T1))),
        encode(&unknown.sign(&stranger)),
        encode(&SignedTransaction {
            signature: stranger.sign(&weak.hash()),
            tx: weak,
        }),
        encode(&bad_signature),
        encode(&bank.sign(&dev_account(BANK))), // same hash as the bad one, good signature
        encode(&signed(T1, 1_000)),             // nonce too far ahead
        truncated,
        encode(&signed(T2, 0)),
        encode(&signed(T1, 0)), // mempool full (capacity 4)
    ];
    txs.to_vec()
}

fn slices(items: &[Vec<u8>]) -> Vec<&[u8]> {
    items.iter().map(Vec::as_slice).collect()
}

fn verdicts(results: Vec<Result<Hash, AdmissionError>>) -> Vec<Result<Hash, String>> {
    results
        .into_iter()
        .map(|r| r.map_err(|e| format!("{e:?}")))
        .collect()
}

#[test]
fn batch_admission_gives_the_same_verdicts_as_one_by_one() {
    let params = ChainParams {
        mempool_capacity: 4,
        mempool_per_sender: 2,
        ..trellis_genesis::dev_params()
    };
    let items = mixed_batch();
    let refs = slices(&items);

    let one_by_one = Env::with(genesis_with_weak_account(), params.clone());
    let singly = verdicts(
        refs.iter()
            .map(|b| one_by_one.mempool.admit(b, &one_by_one.storage, NOW))
            .collect(),
    );
    let batched = Env::with(genesis_with_weak_account(), params);
    let together = verdicts(batched.mempool.admit_batch(&refs, &batched.storage, NOW));

    assert_eq!(together, singly);
    let admitted = singly.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 4);
    assert_eq!(batched.mempool.len(), 4);
    for hash in singly.iter().flatten() {
        assert!(batched.mempool.contains(hash) && one_by_one.mempool.contains(hash));
    }
    let expected_errors: Vec<&str> = together
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.split([' ', '(', '{']).next().unwrap())
        .collect();
    assert_eq!(
        expected_errors,
        [
            "AlreadyKnown",
            "NonceTaken",
            "SenderQueueFull",
            "WrongChain",
            "Expired",
            "UnknownSender",
            "WeakKey",
            "BadSignature",
            "NonceTooFarAhead",
            "Malformed",
            "MempoolFull",
        ]
    );
}

/// Admission promises to check the signature last. A batch checks every item's
/// room against the pool as it was before the batch, so a duplicate of an earlier
/// batch-mate that also carries a bad signature is reported as `BadSignature`,
/// where admitting the same bytes one by one reports `AlreadyKnown`.
#[test]
fn batch_admission_reports_a_waiting_duplicate_with_a_bad_signature_as_already_known() {
    let good = signed(ACME, 0);
    let mut forged = good.clone();
    forged.signature.0[0] ^= 1;
    let items = [encode(&good), encode(&forged)];
    let refs = slices(&items);

    let one_by_one = Env::new();
    let singly = verdicts(
        refs.iter()
            .map(|b| one_by_one.mempool.admit(b, &one_by_one.storage, NOW))
            .collect(),
    );
    let batched = Env::new();
    let together = verdicts(batched.mempool.admit_batch(&refs, &batched.storage, NOW));
    assert_eq!(together, singly);
}

/// A peer's batch is judged whole: what an honest peer forwards all verifies,
/// so one bad signature refuses every transaction in it, found by one batch
/// check. The same batch through the API admits the good ones.
#[test]
fn a_peers_batch_with_a_bad_signature_is_refused_whole() {
    let good = signed(ACME, 0);
    let mut forged = signed(ACME, 1);
    forged.signature.0[0] ^= 1;
    let items = [encode(&good), encode(&forged)];
    let refs = slices(&items);

    let from_peer = Env::new();
    let results = from_peer
        .mempool
        .admit_batch_from_peer(&refs, &from_peer.storage, NOW);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(AdmissionError::BadSignature))),
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().unwrap_err().blames_the_forwarder())
    );
    assert_eq!(from_peer.mempool.len(), 0);

    let from_api = Env::new();
    let results = verdicts(from_api.mempool.admit_batch(&refs, &from_api.storage, NOW));
    assert_eq!(results[0], Ok(good.hash()));
    assert!(
        results[1]
            .as_ref()
            .is_err_and(|e| e.starts_with("BadSignature"))
    );

    // A good batch from a peer is admitted whole.
    let clean = [encode(&good), encode(&signed(ACME, 1))];
    let refs = slices(&clean);
    let results = from_peer
        .mempool
        .admit_batch_from_peer(&refs, &from_peer.storage, NOW);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// Clients' and peers' batches admitted together (one batch equation when
/// every signature is good) get the verdicts each gets alone: a forged
/// signature in a peer's batch refuses that batch only, one in a client's
/// batch that transaction only, and only a client's admissions are kept
/// for forwarding.
#[test]
fn batches_admitted_together_get_the_verdicts_each_gets_alone() {
    let forged = |label: &str, nonce: u64| {
        let mut stx = signed(label, nonce);
        stx.signature.0[0] ^= 1;
        encode(&stx)
    };
    let client = [
        encode(&signed(ACME, 0)),
        forged(ACME, 1),
        encode(&signed(ACME, 2)),
    ];
    let good_peer = [encode(&signed(T1, 0)), encode(&signed(T1, 1))];
    let bad_peer = [encode(&signed(T2, 0)), forged(T2, 1)];
    let last_peer = [encode(&signed(BANK, 0))];
    let (client, good_peer, bad_peer, last_peer) = (
        slices(&client),
        slices(&good_peer),
        slices(&bad_peer),
        slices(&last_peer),
    );
    let batches = [
        (Origin::Client, &client[..]),
        (Origin::Peer, &good_peer[..]),
        (Origin::Peer, &bad_peer[..]),
        (Origin::Peer, &last_peer[..]),
    ];

    let apart = Env::forwarding();
    let one_by_one: Vec<_> = batches
        .iter()
        .map(|(origin, items)| {
            let pool = &apart.mempool;
            verdicts(match origin {
                Origin::Client => pool.admit_batch(items, &apart.storage, NOW),
                Origin::Peer => pool.admit_batch_from_peer(items, &apart.storage, NOW),
            })
        })
        .collect();
    let env = Env::forwarding();
    let together: Vec<_> = env
        .mempool
        .admit_batches(&batches, &env.storage, NOW)
        .into_iter()
        .map(verdicts)
        .collect();
    assert_eq!(together, one_by_one);

    let admitted = |r: &Vec<Result<Hash, String>>| r.iter().filter(|v| v.is_ok()).count();
    assert_eq!(
        together.iter().map(admitted).collect::<Vec<_>>(),
        [2, 2, 0, 1]
    );
    assert!(together[0][1].as_ref().is_err_and(|e| e == "BadSignature"));
    assert!(
        together[2]
            .iter()
            .all(|v| v.as_ref().is_err_and(|e| e == "BadSignature"))
    );
    assert_eq!(env.mempool.len(), 5);
    // Only the client's two go on to peers.
    let forwarded: Vec<Hash> = env
        .mempool
        .take_outbox()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(forwarded, [signed(ACME, 0).hash(), signed(ACME, 2).hash()]);

    // All good: every one admitted, the client's forwarded.
    let env = Env::forwarding();
    let pool = &env.mempool;
    let client = [encode(&signed(ACME, 0))];
    let peer = [encode(&signed(T1, 0)), encode(&signed(T1, 1))];
    let (client, peer) = (slices(&client), slices(&peer));
    let results = pool.admit_batches(
        &[(Origin::Client, &client[..]), (Origin::Peer, &peer[..])],
        &env.storage,
        NOW,
    );
    assert!(results.iter().flatten().all(Result::is_ok), "{results:?}");
    assert_eq!(pool.len(), 3);
    assert_eq!(pool.take_outbox().len(), 1);
}

// ---- candidates ----

#[test]
fn candidates_take_only_the_consecutive_run_from_each_senders_committed_nonce() {
    let env = Env::new();
    for stx in [
        signed(ACME, 0),
        signed(ACME, 1),
        signed(ACME, 3),
        signed(T1, 1),
        signed(T1, 2),
    ] {
        env.admit(&stx).unwrap();
    }
    let picked = env.candidates(usize::MAX, u64::MAX);
    // ACME stops at the gap before 3; T1 has nothing because its nonce 0 is missing.
    assert_eq!(hashes(&picked), hashes(&[signed(ACME, 0), signed(ACME, 1)]));
}

#[test]
fn candidates_start_at_the_committed_nonce_and_skip_used_ones_still_waiting() {
    let env = Env::new();
    for n in 0..3 {
        env.admit(&signed(ACME, n)).unwrap();
    }
    env.commit(&[signed(ACME, 0)], NOW);
    assert_eq!(env.mempool.len(), 3, "not pruned yet");
    let picked = env.candidates(usize::MAX, u64::MAX);
    assert_eq!(hashes(&picked), hashes(&[signed(ACME, 1), signed(ACME, 2)]));
}

#[test]
fn candidates_take_one_transaction_per_sender_per_pass() {
    let env = Env::new();
    let senders = [ACME, T1, T2];
    for label in senders {
        for n in 0..3 {
            env.admit(&signed(label, n)).unwrap();
        }
    }
    // Passes visit senders in key order.
    let mut order: Vec<&str> = senders.to_vec();
    order.sort_by_key(|l| dev_account(l).public());
    let expected: Vec<SignedTransaction> = (0..3)
        .flat_map(|n| order.iter().map(move |l| signed(l, n)))
        .collect();
    assert_eq!(
        hashes(&env.candidates(usize::MAX, u64::MAX)),
        hashes(&expected)
    );

    // A block with room for three gets one from each sender, however busy the first is.
    let three = env.candidates(3, u64::MAX);
    let mut from: Vec<PublicKey> = three.iter().map(|t| t.tx.sender).collect();
    from.sort();
    from.dedup();
    assert_eq!(from.len(), 3, "{three:?}");
    assert!(three.iter().all(|t| t.tx.nonce == 0));
}

/// When blocks are full, the next one starts after the sender the last one
/// took from last: no sender is first every time because of its key.
#[test]
fn full_blocks_take_the_senders_in_turn() {
    let env = Env::new();
    let mut order = [ACME, T1, T2];
    order.sort_by_key(|l| dev_account(l).public());
    for label in order {
        env.admit(&signed(label, 0)).unwrap();
    }
    let firsts: Vec<PublicKey> = (0..4)
        .map(|_| env.candidates(2, u64::MAX)[0].tx.sender)
        .collect();
    let key = |i: usize| dev_account(order[i]).public();
    assert_eq!(firsts, [key(0), key(2), key(1), key(0)]);
}

#[test]
fn candidates_respect_the_count_limit() {
    let env = Env::new();
    for n in 0..5 {
        env.admit(&signed(ACME, n)).unwrap();
    }
    for limit in [0, 1, 4, 5, 6] {
        assert_eq!(
            env.candidates(limit, u64::MAX).len(),
            limit.min(5),
            "max_txs {limit}"
        );
    }
}

#[test]
fn candidates_respect_the_byte_limit() {
    let env = Env::new();
    let txs: Vec<SignedTransaction> = (0..4).map(|n| with_data(ACME, n, &[0xab; 100])).collect();
    for stx in &txs {
        env.admit(stx).unwrap();
    }
    let size = encode(&txs[0]).len() as u64;
    assert!(txs.iter().all(|t| encode(t).len() as u64 == size));
    assert_eq!(env.candidates(usize::MAX, 3 * size - 1).len(), 2);
    assert_eq!(env.candidates(usize::MAX, 3 * size).len(), 3);
    assert!(env.candidates(usize::MAX, size - 1).is_empty());
    let picked = env.candidates(usize::MAX, 2 * size + size / 2);
    let bytes: u64 = picked.iter().map(|t| encode(t).len() as u64).sum();
    assert!(bytes <= 2 * size + size / 2);
}

// ---- prune ----

#[test]
fn prune_drops_committed_and_used_nonces_and_keeps_the_rest() {
    let counts = Family::<CodeLabels, Counter>::default();
    let mut env = Env::new();
    env.mempool = Mempool::new(CHAIN_ID.into(), trellis_genesis::dev_params())
        .with_drop_counts(counts.clone());
    let waiting = [
        signed(ACME, 0),
        signed(ACME, 1),
        signed(ACME, 2),
        signed(T1, 0),
    ];
    for stx in &waiting {
        env.admit(stx).unwrap();
    }
    // Nonce 1 is used on chain by another transaction than the one waiting here.
    let rival = with_data(ACME, 1, b"committed elsewhere");
    let block = env.commit(&[signed(ACME, 0), rival], NOW);
    env.prune(&block);

    assert_eq!(env.mempool.len(), 2);
    assert!(!env.mempool.contains(&waiting[0].hash()));
    assert!(!env.mempool.contains(&waiting[1].hash()));
    assert!(env.mempool.contains(&waiting[2].hash()));
    assert!(env.mempool.contains(&waiting[3].hash()));
    assert_eq!(hashes(&env.candidates(usize::MAX, u64::MAX)).len(), 2);
    // The committed one left; the one whose nonce the rival took was dropped.
    assert_eq!(env.mempool.dropped(&waiting[0].hash()), None);
    assert_eq!(
        env.mempool.dropped(&waiting[1].hash()),
        Some(DropReason::NonceUsed)
    );
    assert_eq!(env.mempool.dropped(&waiting[2].hash()), None);
    let count = |code: &str| {
        counts
            .get_or_create(&CodeLabels { code: code.into() })
            .get()
    };
    assert_eq!((count("nonce_used"), count("expired")), (1, 0));
}

#[test]
fn prune_drops_what_expires_by_the_next_blocks_time_whatever_the_clock() {
    let env = Env::new();
    let mut soon = remark(ACME, 1);
    soon.expires_at_ms = NOW + 10;
    let soon = soon.sign(&dev_account(ACME));
    let later = signed(T1, 1);
    env.admit(&soon).unwrap();
    env.admit(&later).unwrap();

    // A block at NOW + 8: the next may be at NOW + 9, before the expiry.
    let block = env.commit(&[signed(ACME, 0)], NOW + 8);
    assert_eq!(block.header.timestamp_ms, NOW + 8);
    env.prune(&block);
    assert_eq!(env.mempool.len(), 2, "not expired yet");
    assert_eq!(env.mempool.dropped(&soon.hash()), None);
    // A block at NOW + 9: the next is at NOW + 10 or later, when it has expired.
    let block = env.commit(&[signed(T1, 0)], NOW + 9);
    env.prune(&block);
    assert!(!env.mempool.contains(&soon.hash()));
    assert_eq!(env.mempool.dropped(&soon.hash()), Some(DropReason::Expired));
    assert!(env.mempool.contains(&later.hash()));
    // The freed nonce can be taken again.
    env.admit(&with_data(ACME, 1, b"again"))
        .expect("nonce 1 is free after the expired one left");
}

#[test]
fn prune_drops_the_transactions_of_a_removed_sender() {
    let env = Env::with(
        genesis_with_second_acme_account(),
        trellis_genesis::dev_params(),
    );
    let orphan = signed(ACME_TREASURY, 0);
    env.admit(&orphan).unwrap();
    let removal = remark(ACME, 0);
    let removal = Transaction {
        payload: Payload::System(SystemOp::RemoveKey {
            key: dev_account(ACME_TREASURY).public(),
        }),
        ..removal
    }
    .sign(&dev_account(ACME));
    let block = env.commit(&[removal], NOW);
    env.prune(&block);
    assert!(env.mempool.is_empty());
    assert_eq!(
        env.mempool.dropped(&orphan.hash()),
        Some(DropReason::SenderRemoved)
    );
}

#[test]
fn the_drop_log_forgets_the_oldest_past_its_size() {
    let mut log = DropLog::default();
    let hash = |i: usize| {
        let mut bytes = [0; 32];
        bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
        Hash(bytes)
    };
    for i in 0..=DROPS_KEPT {
        log.record(hash(i), DropReason::Expired);
    }
    // Recording one again neither duplicates nor reorders it.
    log.record(hash(DROPS_KEPT), DropReason::Expired);
    assert_eq!(log.reasons.len(), DROPS_KEPT);
    assert_eq!(log.order.len(), DROPS_KEPT);
    assert!(!log.reasons.contains_key(&hash(0)));
    assert!(log.reasons.contains_key(&hash(1)));
    assert!(log.reasons.contains_key(&hash(DROPS_KEPT)));
}

// ---- verified ----

#[test]
fn verified_holds_only_for_the_exact_signature_admitted() {
    let env = Env::new();
    let stx = signed(ACME, 0);
    assert!(
        !env.mempool.verified(&stx.hash(), &stx.signature),
        "not admitted yet"
    );
    env.admit(&stx).unwrap();
    assert!(env.mempool.verified(&stx.hash(), &stx.signature));

    let mut other = stx.signature;
    other.0[63] ^= 1;
    assert!(!env.mempool.verified(&stx.hash(), &other));
    let by_other_key = dev_account(T1).sign(&stx.hash());
    assert!(!env.mempool.verified(&stx.hash(), &by_other_key));
    let unrelated = signed(ACME, 1);
    assert!(!env.mempool.verified(&unrelated.hash(), &stx.signature));

    let block = env.commit(std::slice::from_ref(&stx), NOW);
    env.prune(&block);
    assert!(
        !env.mempool.verified(&stx.hash(), &stx.signature),
        "forgotten once pruned"
    );
}

/// An admission worker for `mempool` over `storage`.
fn start_batcher(mempool: Arc<Mempool>, storage: &Storage) -> (Batcher, Worker) {
    Batcher::start(mempool, storage.clone(), 1_024, || NOW, Priority::Normal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_through_the_batcher_get_each_their_own_verdict() {
    let env = Env::new();
    let mempool = Arc::new(env.mempool);
    let (batcher, _worker) = start_batcher(mempool.clone(), &env.storage);
    // Three senders, fifty nonces each, and every tenth signed by another key.
    let mut submissions = Vec::new();
    for label in [ACME, T1, BANK] {
        for nonce in 0..50 {
            let tx = remark(label, nonce);
            let signer = if nonce % 10 == 9 { T2 } else { label };
            let forged = signer != label;
            let stx = SignedTransaction {
                signature: dev_account(signer).sign(&tx.hash()),
                tx,
            };
            let batcher = batcher.clone();
            submissions.push(tokio::spawn(async move {
                (stx.hash(), forged, batcher.admit(encode(&stx)).await)
            }));
        }
    }
    let mut admitted = 0;
    for submission in submissions {
        let (hash, forged, verdict) = submission.await.unwrap();
        match verdict.expect("the worker answers every submission") {
            Ok(admitted_hash) => {
                assert!(!forged, "a forged signature was admitted");
                assert_eq!(admitted_hash, hash);
                admitted += 1;
            }
            Err(e) => assert!(forged && matches!(e, AdmissionError::BadSignature), "{e}"),
        }
    }
    assert_eq!(admitted, 3 * 45);
    assert_eq!(mempool.len(), 3 * 45);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_through_the_batcher_gets_the_verdicts_of_one_by_one_admission() {
    let params = ChainParams {
        mempool_capacity: 4,
        mempool_per_sender: 2,
        ..trellis_genesis::dev_params()
    };
    let items = mixed_batch();
    let one_by_one = Env::with(genesis_with_weak_account(), params.clone());
    let singly = verdicts(
        items
            .iter()
            .map(|b| one_by_one.mempool.admit(b, &one_by_one.storage, NOW))
            .collect(),
    );
    let env = Env::with(genesis_with_weak_account(), params);
    let (batcher, _worker) = start_batcher(Arc::new(env.mempool), &env.storage);
    let together = verdicts(batcher.admit_all(items).await.expect("answered"));
    assert_eq!(together, singly);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_batches_through_the_batcher_stand_or_fall_whole_beside_clients() {
    let env = Env::new();
    let mempool = Arc::new(env.mempool);
    let (batcher, _worker) = start_batcher(mempool.clone(), &env.storage);
    let batch = |label: &str, forged: Option<u64>| -> Vec<Vec<u8>> {
        (0..10)
            .map(|nonce| {
                let mut stx = signed(label, nonce);
                if forged == Some(nonce) {
                    stx.signature.0[0] ^= 1;
                }
                encode(&stx)
            })
            .collect()
    };
    // A peer's good batch, another's with one forged signature, and a
    // client's ten one by one, all at once.
    let from_peer = |txs: Vec<Vec<u8>>| {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.admit_forwarded(txs).await })
    };
    let good = from_peer(batch(T1, None));
    let bad = from_peer(batch(T2, Some(7)));
    let clients: Vec<_> = batch(ACME, None)
        .into_iter()
        .map(|tx| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.admit(tx).await })
        })
        .collect();

    let good = good.await.unwrap().expect("answered");
    assert!(good.iter().all(Result::is_ok), "{good:?}");
    let bad = bad.await.unwrap().expect("answered");
    assert_eq!(bad.len(), 10);
    assert!(
        bad.iter()
            .all(|r| matches!(r, Err(AdmissionError::BadSignature))),
        "{bad:?}"
    );
    for client in clients {
        let verdict = client.await.unwrap().expect("answered");
        assert!(verdict.is_ok(), "{verdict:?}");
    }
    assert_eq!(mempool.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_and_single_submissions_each_get_their_own_verdicts() {
    let env = Env::new();
    let mempool = Arc::new(env.mempool);
    let (batcher, _worker) = start_batcher(mempool.clone(), &env.storage);
    // Three senders' batches of forty, every tenth forged, beside single
    // submissions of a fourth sender, all at once: the worker merges them
    // into its batches and must hand each caller back its own verdicts.
    let mut batches = Vec::new();
    for label in [ACME, T1, BANK] {
        let txs: Vec<(SignedTransaction, bool)> = (0..40)
            .map(|nonce| {
                let tx = remark(label, nonce);
                let signer = if nonce % 10 == 9 { T2 } else { label };
                let stx = SignedTransaction {
                    signature: dev_account(signer).sign(&tx.hash()),
                    tx,
                };
                (stx, signer != label)
            })
            .collect();
        let batcher = batcher.clone();
        batches.push(tokio::spawn(async move {
            let bytes = txs.iter().map(|(stx, _)| encode(stx)).collect();
            (txs, batcher.admit_all(bytes).await)
        }));
    }
    let singles: Vec<_> = (0..40)
        .map(|nonce| {
            let stx = signed(T2, nonce);
            let batcher = batcher.clone();
            tokio::spawn(async move { (stx.hash(), batcher.admit(encode(&stx)).await) })
        })
        .collect();
    for batch in batches {
        let (txs, verdicts) = batch.await.unwrap();
        let verdicts = verdicts.expect("the worker answers every batch");
        assert_eq!(verdicts.len(), txs.len());
        for ((stx, forged), verdict) in txs.iter().zip(verdicts) {
            match verdict {
                Ok(hash) => assert!(!forged && hash == stx.hash()),
                Err(e) => assert!(*forged && matches!(e, AdmissionError::BadSignature), "{e}"),
            }
        }
    }
    for single in singles {
        let (hash, verdict) = single.await.unwrap();
        assert_eq!(verdict.expect("answered").expect("admitted"), hash);
    }
    assert_eq!(mempool.len(), 3 * 36 + 40);
}

#[tokio::test]
async fn the_admission_thread_runs_at_the_priority_it_is_started_with() {
    use crate::priority::tests::{background_niceness, niceness_of_threads_named};
    let env = Env::new();
    let (batcher, _worker) = Batcher::start(
        Arc::new(env.mempool),
        env.storage.clone(),
        8,
        || NOW,
        Priority::Background,
    );
    // A verdict comes from the thread after it set its priority.
    let verdict = batcher.admit(vec![1]).await.expect("answered");
    assert!(verdict.is_err(), "not a transaction");
    // Other tests' admission threads may run beside it, at their creators' priority.
    let threads = niceness_of_threads_named("admission");
    assert!(threads.contains(&background_niceness()), "{threads:?}");
}
