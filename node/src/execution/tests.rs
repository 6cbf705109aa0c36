//! Execution against real sled storage holding the dev genesis state. Blocks
//! that later tests build on are committed through `prepare_state` and
//! `commit_block`, exactly as the chain does.

use super::*;
use crate::chain;
use crate::storage::Storage;
use std::sync::Arc;
use tempfile::TempDir;
use trellis_genesis::{DEV_GENESIS_TIME_MS, Genesis, dev_account};
use trellis_types::block::{receipts_root, tx_root};
use trellis_types::{
    Address, Block, Bytes, Change, Hash, Header, KeyPair, Proposal, QuorumCertificate, Transaction,
};

mod governance;

const CHAIN_ID: &str = "trellis-dev";
const ACME: &str = "core-acme/ops";
const T1: &str = "supplier-t1/ops";
const BANK: &str = "bank-first/ops";

struct Env {
    _dir: TempDir,
    storage: Storage,
    vm: Vm,
}

impl Env {
    fn new() -> Env {
        Env::with_genesis(&Genesis::dev())
    }

    fn with_genesis(genesis: &Genesis) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(dir.path()).expect("open storage");
        let vm = Vm::new();
        chain::initialise(&storage, genesis, &vm).expect("write genesis");
        Env {
            _dir: dir,
            storage,
            vm,
        }
    }

    /// The context of the next block, a second after the head.
    fn next(&self) -> BlockContext {
        let head = self.storage.head().expect("initialised");
        BlockContext {
            chain_id: CHAIN_ID.into(),
            height: head.height + 1,
            timestamp_ms: head.timestamp_ms + 1_000,
            max_expiry_ms: trellis_genesis::Genesis::dev().params.max_expiry_ms,
            limits: Limits::from_params(&trellis_genesis::Genesis::dev().params),
        }
    }

    fn execute(&self, txs: &[SignedTransaction]) -> BlockOutput {
        match execute_block(&self.vm, &self.storage, &self.next(), txs, &hashes(txs)) {
            Ok(output) => output,
            Err(e) => panic!("the block should execute: {e}"),
        }
    }

    /// Executes `txs` as the next block and commits it.
    fn commit(&self, txs: &[SignedTransaction]) -> Vec<Receipt> {
        let ctx = self.next();
        let head = self.storage.head().expect("initialised");
        let output = self.execute(txs);
        let update = self
            .storage
            .prepare_state(ctx.height, output.writes)
            .expect("prepare_state");
        let block = Block {
            header: Header {
                chain_id: CHAIN_ID.into(),
                height: ctx.height,
                round: 0,
                parent: head.block_hash,
                tx_root: tx_root(txs),
                parent_commit_hash: QuorumCertificate::genesis(head.block_hash).hash(),
                receipts_root: receipts_root(&output.receipts),
                state_root: update.root,
                timestamp_ms: ctx.timestamp_ms,
                proposer: KeyPair::insecure_from_label("proposer").public(),
            },
            parent_commit: QuorumCertificate::genesis(head.block_hash),
            txs: txs.to_vec(),
        };
        // Storage takes the certificate as given; consensus is what checks its votes.
        let qc = QuorumCertificate {
            height: ctx.height,
            round: 0,
            block: block.hash(),
            votes: Vec::new(),
        };
        self.storage
            .commit_block(Arc::new(block), &qc, output.receipts.clone(), update)
            .expect("commit_block");
        output.receipts
    }

    fn account(&self, key: &PublicKey) -> Option<AccountRecord> {
        account(&self.storage, key).expect("readable state")
    }
}

fn expiry() -> u64 {
    DEV_GENESIS_TIME_MS + 3_600_000
}

fn tx_by(key: &KeyPair, nonce: u64, payload: Payload) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN_ID.into(),
        sender: key.public(),
        nonce,
        expires_at_ms: expiry(),
        payload,
    }
    .sign(key)
}

fn tx(label: &str, nonce: u64, payload: Payload) -> SignedTransaction {
    tx_by(&dev_account(label), nonce, payload)
}

fn remark(data: &[u8]) -> Payload {
    Payload::System(SystemOp::Remark {
        data: Bytes::from(data),
    })
}

fn add_key(key: PublicKey, org_admin: bool) -> Payload {
    Payload::System(SystemOp::AddKey { key, org_admin })
}

fn remove_key(key: PublicKey) -> Payload {
    Payload::System(SystemOp::RemoveKey { key })
}

fn pk(label: &str) -> PublicKey {
    dev_account(label).public()
}

fn record(org: &str, org_admin: bool, nonce: u64) -> Option<Vec<u8>> {
    Some(encode(&AccountRecord {
        org: org.into(),
        org_admin,
        nonce,
    }))
}

fn failure_code(receipt: &Receipt) -> &str {
    assert_eq!(receipt.status, ReceiptStatus::Failed, "{receipt:?}");
    assert!(
        receipt.events.is_empty(),
        "a failed transaction emits nothing: {receipt:?}"
    );
    &receipt
        .error
        .as_ref()
        .expect("a failed receipt says why")
        .code
}

fn assert_success(receipt: &Receipt) {
    assert_eq!(receipt.status, ReceiptStatus::Success, "{receipt:?}");
    assert_eq!(receipt.error, None);
}

/// The only write of a transaction that failed: its sender's nonce.
fn only_nonce_bumped(org: &str, sender: &PublicKey, org_admin: bool, nonce: u64) -> Writes {
    Writes::from([(keys::account(sender), record(org, org_admin, nonce))])
}

#[test]
fn a_remark_succeeds_emits_its_size_and_only_bumps_the_senders_nonce() {
    let env = Env::new();
    let stx = tx(ACME, 0, remark(b"hello"));
    let out = env.execute(std::slice::from_ref(&stx));

    assert_eq!(
        out.receipts,
        vec![Receipt {
            tx: stx.hash(),
            status: ReceiptStatus::Success,
            error: None,
            fuel_used: 0,
            events: vec![Event {
                source: EventSource::System,
                kind: "remark".into(),
                attributes: vec![("bytes".into(), "5".into())],
            }],
        }]
    );
    assert_eq!(
        out.writes,
        only_nonce_bumped("core-acme", &pk(ACME), true, 1)
    );

    env.commit(&[stx]);
    assert_eq!(env.account(&pk(ACME)).unwrap().nonce, 1);
}

#[test]
fn consecutive_nonces_of_one_sender_execute_in_one_block() {
    let env = Env::new();
    let txs: Vec<_> = (0..3).map(|n| tx(ACME, n, remark(&[n as u8]))).collect();
    let receipts = env.commit(&txs);
    receipts.iter().for_each(assert_success);
    assert_eq!(env.account(&pk(ACME)).unwrap().nonce, 3);
}

#[test]
fn add_key_by_an_org_admin_adds_an_account_to_the_senders_org() {
    let env = Env::new();
    let new = KeyPair::insecure_from_label("acme/clerk");
    let out = env.execute(&[tx(ACME, 0, add_key(new.public(), false))]);

    assert_success(&out.receipts[0]);
    assert_eq!(
        out.receipts[0].events,
        vec![Event {
            source: EventSource::System,
            kind: "account_added".into(),
            attributes: vec![
                ("org".into(), "core-acme".into()),
                ("key".into(), new.public().to_hex()),
                ("org_admin".into(), "false".into()),
            ],
        }]
    );
    let mut expected = only_nonce_bumped("core-acme", &pk(ACME), true, 1);
    expected.insert(keys::account(&new.public()), record("core-acme", false, 0));
    assert_eq!(out.writes, expected);

    env.commit(&[tx(ACME, 0, add_key(new.public(), false))]);
    assert_eq!(
        env.account(&new.public()),
        Some(AccountRecord {
            org: "core-acme".into(),
            org_admin: false,
            nonce: 0
        })
    );
    let receipts = env.commit(&[tx_by(&new, 0, remark(b"first words"))]);
    assert_success(&receipts[0]);
}

#[test]
fn an_account_added_earlier_in_a_block_can_send_later_in_it() {
    let env = Env::new();
    let new = KeyPair::insecure_from_label("acme/clerk");
    let receipts = env.commit(&[
        tx(ACME, 0, add_key(new.public(), false)),
        tx_by(&new, 0, remark(b"already here")),
    ]);
    receipts.iter().for_each(assert_success);
    assert_eq!(env.account(&new.public()).unwrap().nonce, 1);
}

#[test]
fn add_key_by_a_non_admin_fails_with_not_org_admin_and_only_consumes_its_nonce() {
    let env = Env::new();
    let clerk = KeyPair::insecure_from_label("acme/clerk");
    env.commit(&[tx(ACME, 0, add_key(clerk.public(), false))]);

    let outsider = KeyPair::insecure_from_label("acme/would-be");
    let out = env.execute(&[tx_by(&clerk, 0, add_key(outsider.public(), true))]);
    assert_eq!(failure_code(&out.receipts[0]), "not_org_admin");
    assert_eq!(
        out.writes,
        only_nonce_bumped("core-acme", &clerk.public(), false, 1)
    );

    let out = env.execute(&[tx_by(&clerk, 0, remove_key(pk(ACME)))]);
    assert_eq!(failure_code(&out.receipts[0]), "not_org_admin");
    assert_eq!(
        out.writes,
        only_nonce_bumped("core-acme", &clerk.public(), false, 1)
    );

    let root_before = env.storage.head().unwrap().state_root;
    env.commit(&[tx_by(&clerk, 0, add_key(outsider.public(), true))]);
    assert_eq!(env.account(&outsider.public()), None);
    assert_eq!(env.account(&clerk.public()).unwrap().nonce, 1);
    assert_ne!(
        env.storage.head().unwrap().state_root,
        root_before,
        "the nonce did change"
    );
}

#[test]
fn add_key_of_an_existing_account_fails_with_key_exists() {
    let env = Env::new();
    // Another org's account, and the sender's own.
    for key in [pk(T1), pk(ACME)] {
        let out = env.execute(&[tx(ACME, 0, add_key(key, true))]);
        assert_eq!(failure_code(&out.receipts[0]), "key_exists", "adding {key}");
    }
    let out = env.execute(&[tx(ACME, 0, add_key(pk(T1), false))]);
    assert_eq!(
        out.writes,
        only_nonce_bumped("core-acme", &pk(ACME), true, 1)
    );
    assert_eq!(
        env.account(&pk(T1)).unwrap().org,
        "supplier-t1",
        "the other org's key is untouched"
    );
}

#[test]
fn add_key_of_a_weak_key_fails_with_invalid_key() {
    let env = Env::new();
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let out = env.execute(&[tx(ACME, 0, add_key(PublicKey(weak), false))]);
    assert_eq!(failure_code(&out.receipts[0]), "invalid_key");
    assert_eq!(
        out.writes,
        only_nonce_bumped("core-acme", &pk(ACME), true, 1)
    );
}

#[test]
fn remove_key_of_the_senders_own_key_fails_with_self_removal() {
    let env = Env::new();
    let out = env.execute(&[tx(ACME, 0, remove_key(pk(ACME)))]);
    assert_eq!(failure_code(&out.receipts[0]), "self_removal");
    assert_eq!(
        out.writes,
        only_nonce_bumped("core-acme", &pk(ACME), true, 1)
    );
}

#[test]
fn remove_key_of_another_orgs_or_an_unknown_key_fails_with_not_in_org() {
    let env = Env::new();
    let stranger = KeyPair::insecure_from_label("stranger").public();
    for key in [pk(BANK), stranger] {
        let out = env.execute(&[tx(ACME, 0, remove_key(key))]);
        assert_eq!(
            failure_code(&out.receipts[0]),
            "not_in_org",
            "removing {key}"
        );
        assert_eq!(
            out.writes,
            only_nonce_bumped("core-acme", &pk(ACME), true, 1)
        );
    }
    assert!(env.account(&pk(BANK)).is_some());
}

#[test]
fn remove_key_deletes_an_account_of_the_senders_org_which_then_cannot_send() {
    let env = Env::new();
    let clerk = KeyPair::insecure_from_label("acme/clerk");
    env.commit(&[tx(ACME, 0, add_key(clerk.public(), false))]);
    let out = env.execute(&[tx(ACME, 1, remove_key(clerk.public()))]);
    assert_success(&out.receipts[0]);
    assert_eq!(out.receipts[0].events[0].kind, "account_removed");
    assert_eq!(out.writes.get(&keys::account(&clerk.public())), Some(&None));

    let late = tx_by(&clerk, 0, remark(b"too late"));
    let removed_then_sent = [tx(ACME, 1, remove_key(clerk.public())), late];
    assert!(matches!(
        execute_block(&env.vm, &env.storage, &env.next(), &removed_then_sent, &hashes(&removed_then_sent)),
        Err(BlockError::Inadmissible { index: 1, reason: Inadmissible::UnknownSender(k) }) if k == clerk.public()
    ));
    env.commit(&removed_then_sent[..1]);
    assert_eq!(env.account(&clerk.public()), None);
}

#[test]
fn a_call_to_no_contract_fails_and_only_admins_may_deploy() {
    let env = Env::new();
    let call = Payload::Call {
        contract: Address([9; 32]),
        method: "transfer".into(),
        args: Bytes::from(&b"{}"[..]),
    };
    let out = env.execute(&[tx(ACME, 0, call)]);
    assert_eq!(failure_code(&out.receipts[0]), "contract_not_found");
    assert_eq!(out.receipts[0].fuel_used, 0);
    assert_eq!(
        out.writes,
        only_nonce_bumped("core-acme", &pk(ACME), true, 1)
    );

    let deploy = Payload::Deploy {
        code: Bytes::from(&b"\0asm"[..]),
        salt: Hash::ZERO,
    };
    let out = env.execute(&[tx(ACME, 0, deploy)]);
    assert_eq!(failure_code(&out.receipts[0]), "not_admin");
}

/// Puts `bad` between two good transactions: `execute_block` must refuse the
/// block at index 1, `execute_candidates` must leave `bad` out and give what
/// the block of the two good ones gives.
fn assert_inadmissible(bad: SignedTransaction, reason: Inadmissible) {
    let env = Env::new();
    let good = [tx(ACME, 0, remark(b"before")), tx(T1, 0, remark(b"after"))];
    let block = [good[0].clone(), bad.clone(), good[1].clone()];

    match execute_block(&env.vm, &env.storage, &env.next(), &block, &hashes(&block)) {
        Err(BlockError::Inadmissible { index, reason: got }) => {
            assert_eq!((index, got), (1, reason));
        }
        Err(e) => panic!("expected an inadmissible transaction, got {e}"),
        Ok(_) => panic!("a block carrying {bad:?} was accepted"),
    }

    let (included, output) = execute_candidates(
        &env.vm,
        &env.storage,
        &env.next(),
        with_hashes(&block),
        None,
    )
    .unwrap();
    assert_eq!(included, good);
    let clean = env.execute(&good);
    assert_eq!(output.receipts, clean.receipts);
    assert_eq!(output.writes, clean.writes);
}

fn hashes(txs: &[SignedTransaction]) -> Vec<Hash> {
    txs.iter().map(SignedTransaction::hash).collect()
}

/// `txs` as candidates come from the mempool: each with its hash.
fn with_hashes(txs: &[SignedTransaction]) -> Vec<(Hash, SignedTransaction)> {
    txs.iter().map(|tx| (tx.hash(), tx.clone())).collect()
}

#[test]
fn candidates_stop_at_the_deadline_once_one_is_included() {
    let env = Env::new();
    let candidates = [
        tx(ACME, 5, remark(b"inadmissible: left out, not counted")),
        tx(ACME, 0, remark(b"first")),
        tx(T1, 0, remark(b"second")),
    ];
    let passed = Some(Instant::now());
    let (included, output) = execute_candidates(
        &env.vm,
        &env.storage,
        &env.next(),
        with_hashes(&candidates),
        passed,
    )
    .unwrap();
    assert_eq!(included, [candidates[1].clone()]);
    assert_eq!(output.writes, env.execute(&included).writes);

    let later = Some(Instant::now() + std::time::Duration::from_secs(3600));
    let (included, _) = execute_candidates(
        &env.vm,
        &env.storage,
        &env.next(),
        with_hashes(&candidates),
        later,
    )
    .unwrap();
    assert_eq!(included, candidates[1..]);
}

#[test]
fn a_nonce_out_of_sequence_makes_the_block_inadmissible_and_is_left_out_of_candidates() {
    assert_inadmissible(
        tx(ACME, 5, remark(b"ahead")),
        Inadmissible::BadNonce {
            expected: 1,
            got: 5,
        },
    );
    assert_inadmissible(
        tx(ACME, 0, remark(b"before")),
        Inadmissible::BadNonce {
            expected: 1,
            got: 0,
        },
    );
}

#[test]
fn a_transaction_for_another_chain_makes_the_block_inadmissible_and_is_left_out_of_candidates() {
    let bank = dev_account(BANK);
    let other = Transaction {
        chain_id: "trellis-local".into(),
        sender: bank.public(),
        nonce: 0,
        expires_at_ms: expiry(),
        payload: remark(b"x"),
    }
    .sign(&bank);
    assert_inadmissible(other, Inadmissible::WrongChain("trellis-local".into()));
}

#[test]
fn a_transaction_expired_at_block_time_makes_the_block_inadmissible_and_is_left_out_of_candidates()
{
    let block_ms = Env::new().next().timestamp_ms;
    let bank = dev_account(BANK);
    let expired = Transaction {
        chain_id: CHAIN_ID.into(),
        sender: bank.public(),
        nonce: 0,
        expires_at_ms: block_ms,
        payload: remark(b"x"),
    }
    .sign(&bank);
    assert_inadmissible(
        expired,
        Inadmissible::Expired {
            expires_at_ms: block_ms,
            block_ms,
        },
    );
}

#[test]
fn a_transaction_expiring_beyond_the_expiry_horizon_makes_the_block_inadmissible() {
    let ctx = Env::new().next();
    let bank = dev_account(BANK);
    let far = ctx.timestamp_ms + ctx.max_expiry_ms + 1;
    let too_far = Transaction {
        chain_id: CHAIN_ID.into(),
        sender: bank.public(),
        nonce: 0,
        expires_at_ms: far,
        payload: remark(b"x"),
    }
    .sign(&bank);
    assert_inadmissible(
        too_far,
        Inadmissible::ExpiryTooFar {
            expires_at_ms: far,
            block_ms: ctx.timestamp_ms,
            max_ms: ctx.max_expiry_ms,
        },
    );
}

#[test]
fn a_transaction_from_an_unknown_sender_makes_the_block_inadmissible_and_is_left_out_of_candidates()
{
    let stranger = KeyPair::insecure_from_label("stranger");
    assert_inadmissible(
        tx_by(&stranger, 0, remark(b"x")),
        Inadmissible::UnknownSender(stranger.public()),
    );
}

#[test]
fn a_transaction_from_a_regulator_makes_the_block_inadmissible_and_is_left_out_of_candidates() {
    assert_inadmissible(
        tx("regulator/ops", 0, remark(b"x")),
        Inadmissible::ReadOnlySender("regulator".into()),
    );
}

/// Executes `block` on a fresh dev chain: its receipts, writes and state root.
fn on_a_fresh_store(block: &[SignedTransaction]) -> (Vec<Receipt>, Writes, Hash) {
    let env = Env::new();
    let out = env.execute(block);
    let root = env
        .storage
        .prepare_state(env.next().height, out.writes.clone())
        .unwrap()
        .root;
    (out.receipts, out.writes, root)
}

#[test]
fn the_same_block_on_two_fresh_stores_gives_identical_receipts_writes_and_root() {
    let clerk = KeyPair::insecure_from_label("acme/clerk");
    let block = [
        tx(ACME, 0, add_key(clerk.public(), false)),
        tx(T1, 0, remark(b"note")),
        tx_by(&clerk, 0, add_key(pk(BANK), false)),
        tx(ACME, 1, remove_key(clerk.public())),
        tx(
            BANK,
            0,
            Payload::Call {
                contract: Address([1; 32]),
                method: "m".into(),
                args: Bytes::default(),
            },
        ),
        tx(ACME, 2, remark(&[0; 300])),
    ];
    let (first, second) = (on_a_fresh_store(&block), on_a_fresh_store(&block));
    assert_eq!(first, second);
    let codes: Vec<Option<&str>> = first
        .0
        .iter()
        .map(|r| r.error.as_ref().map(|e| e.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            Some("not_org_admin"),
            None,
            Some("contract_not_found"),
            None
        ]
    );
}

/// A nonce is usable once (`Transaction::nonce`). Re-adding a removed key
/// starts its record again at nonce 0, so every transaction the key signed
/// before its removal and that has not expired executes a second time.
#[test]
fn a_removed_key_added_again_cannot_replay_what_it_signed_before() {
    let env = Env::new();
    let clerk = KeyPair::insecure_from_label("acme/clerk");
    env.commit(&[tx(ACME, 0, add_key(clerk.public(), false))]);
    let signed_before = tx_by(&clerk, 0, remark(b"pay supplier-t1 once"));
    assert_success(&env.commit(std::slice::from_ref(&signed_before))[0]);
    env.commit(&[tx(ACME, 1, remove_key(clerk.public()))]);
    env.commit(&[tx(ACME, 2, add_key(clerk.public(), false))]);

    match execute_block(
        &env.vm,
        &env.storage,
        &env.next(),
        std::slice::from_ref(&signed_before),
        &[signed_before.hash()],
    ) {
        Err(BlockError::Inadmissible {
            index: 0,
            reason: Inadmissible::BadNonce { .. },
        }) => {}
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(out) => panic!("the old transaction executed again: {:?}", out.receipts),
    }
}

// ---------------------------------------------------------------------------
// Contracts (the WAT counter of `vm::tests::counter_module`)

const ADMIN: &str = "consortium/ops";

fn deploy(code: &[u8], salt: Hash) -> Payload {
    Payload::Deploy {
        code: Bytes::from(code),
        salt,
    }
}

fn call_method(contract: Address, method: &str) -> Payload {
    Payload::Call {
        contract,
        method: method.into(),
        args: Bytes::default(),
    }
}

fn upgrade(contract: Address, code: &[u8]) -> Payload {
    propose(Change::UpgradeContract {
        contract,
        code: Bytes::from(code),
    })
}

/// Proposes `change`, open for an hour after the next block's time.
fn propose(change: Change) -> Payload {
    Payload::System(SystemOp::Propose {
        change,
        expires_at_ms: expiry(),
    })
}

/// The counter's code and the address the admin's deploy with `salt` gives it.
fn counter(step: u64, salt: Hash) -> (Vec<u8>, Address) {
    let code = crate::vm::tests::counter_module(step);
    let address = Address::derive(&pk(ADMIN), &vm::code_hash(&code), &salt);
    (code, address)
}

fn count(storage: &dyn StateRead, contract: &Address) -> Option<u64> {
    let key = [keys::contract_data(contract), b"count".to_vec()].concat();
    storage
        .get(&key)
        .unwrap()
        .map(|v| u64::from_le_bytes(v.try_into().expect("an 8-byte count")))
}

#[test]
fn an_admin_deploys_a_contract_that_members_then_call() {
    let env = Env::new();
    let (code, address) = counter(1, Hash::ZERO);
    let receipts = env.commit(&[tx(ADMIN, 0, deploy(&code, Hash::ZERO))]);
    assert_success(&receipts[0]);
    assert_eq!(receipts[0].events[0].kind, "contract_deployed");
    assert_eq!(
        receipts[0].events[0].attributes[0],
        ("address".to_string(), address.to_hex())
    );
    assert_eq!(
        contract(&env.storage, &address).unwrap(),
        Some(ContractRecord {
            code_hash: vm::code_hash(&code),
            deployer: pk(ADMIN),
            deployed_at_height: 1,
            upgraded_at_height: None,
        })
    );
    assert_eq!(
        env.storage.get(&keys::code(&vm::code_hash(&code))).unwrap(),
        Some(code.clone())
    );

    // The second call of the block sees the first one's write.
    let receipts = env.commit(&[
        tx(ACME, 0, call_method(address, "inc")),
        tx(T1, 0, call_method(address, "inc")),
    ]);
    for receipt in &receipts {
        assert_success(receipt);
        assert!(receipt.fuel_used > 0);
        assert_eq!(receipt.events.len(), 1);
        assert_eq!(receipt.events[0].source, EventSource::Contract(address));
        assert_eq!(receipt.events[0].kind, "incremented");
    }
    // The second reads a stored count (a result_read more), so it burns a little more.
    assert!(receipts[1].fuel_used > receipts[0].fuel_used);
    assert_eq!(count(&env.storage, &address), Some(2));
    assert_eq!(env.account(&pk(T1)).unwrap().nonce, 1);
}

#[test]
fn deploys_fail_for_non_admins_invalid_modules_and_taken_addresses() {
    let env = Env::new();
    let (code, _) = counter(1, Hash::ZERO);
    let out = env.execute(&[
        tx(BANK, 0, deploy(&code, Hash::ZERO)),
        tx(ADMIN, 0, deploy(b"\0asm\x01\0\0\0\x01", Hash::ZERO)),
        tx(ADMIN, 1, deploy(&code, Hash::ZERO)),
        tx(ADMIN, 2, deploy(&code, Hash::ZERO)),
        tx(ADMIN, 3, deploy(&code, Hash([1; 32]))),
    ]);
    let codes: Vec<Option<&str>> = out
        .receipts
        .iter()
        .map(|r| r.error.as_ref().map(|e| e.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            Some("not_admin"),
            Some("invalid_module"),
            None,
            Some("contract_exists"),
            None
        ]
    );
}

#[test]
fn a_failed_call_keeps_only_the_nonce_and_later_transactions_still_run() {
    let env = Env::new();
    let (code, address) = counter(1, Hash::ZERO);
    env.commit(&[tx(ADMIN, 0, deploy(&code, Hash::ZERO))]);
    let out = env.execute(&[
        tx(ACME, 0, call_method(address, "inc")),
        tx(T1, 0, call_method(address, "fail")),
        tx(BANK, 0, call_method(address, "inc")),
        tx(ACME, 1, call_method(address, "loop")),
        tx(ACME, 2, call_method(address, "unknown")),
        tx(BANK, 1, remark(b"still here")),
    ]);
    let r = &out.receipts;
    assert_success(&r[0]);
    assert_eq!(failure_code(&r[1]), "refused");
    assert_eq!(r[1].error.as_ref().unwrap().message, "the counter refuses");
    assert!(r[1].fuel_used > 0);
    // The refused call's write was dropped: the bank's call counts from 1.
    assert_success(&r[2]);
    assert_eq!(failure_code(&r[3]), "out_of_fuel");
    assert_eq!(r[3].fuel_used, Genesis::dev().params.fuel_per_call);
    assert_eq!(failure_code(&r[4]), "trap");
    assert_success(&r[5]);
    let after = StateView::new(env.storage.clone(), out.writes.clone());
    assert_eq!(count(&after, &address), Some(2));
    assert_eq!(account(&after, &pk(T1)).unwrap().unwrap().nonce, 1);
    assert_eq!(account(&after, &pk(ACME)).unwrap().unwrap().nonce, 3);
}

#[test]
fn the_same_contract_block_on_two_fresh_stores_gives_identical_receipts_and_root() {
    let (code, address) = counter(3, Hash::ZERO);
    let block = [
        tx(ADMIN, 0, deploy(&code, Hash::ZERO)),
        tx(ACME, 0, call_method(address, "inc")),
        tx(T1, 0, call_method(address, "fail")),
        tx(BANK, 0, call_method(address, "inc")),
        tx(ACME, 1, call_method(address, "loop")),
    ];
    let (first, second) = (on_a_fresh_store(&block), on_a_fresh_store(&block));
    assert_eq!(first, second);
    assert!(first.0.iter().all(|r| r.tx != Hash::ZERO));
}

/// Every way a call can go wrong, in one block, on two fresh stores: the
/// same failed receipts (code and fuel), the same writes, the same root.
#[test]
fn runaway_calls_fail_identically_in_a_block_on_two_fresh_stores() {
    let (counter_code, counter_at) = counter(1, Hash::ZERO);
    let misbehaving = [
        // A memory bomb, endless recursion, an endless loop, a trap.
        crate::vm::tests::call_module(
            "(loop $l (drop (memory.grow (i32.const 1))) (br $l)) (i32.const 0)",
        ),
        crate::vm::tests::recursion_module(0, 0),
        crate::vm::tests::call_module("(loop $l (br $l)) (i32.const 0)"),
        crate::vm::tests::call_module("unreachable"),
    ];
    let mut block = vec![tx(ADMIN, 0, deploy(&counter_code, Hash::ZERO))];
    let mut calls = Vec::new();
    for (i, code) in misbehaving.iter().enumerate() {
        let salt = Hash([i as u8 + 1; 32]);
        block.push(tx(ADMIN, i as u64 + 1, deploy(code, salt)));
        let address = Address::derive(&pk(ADMIN), &vm::code_hash(code), &salt);
        calls.push(tx(ACME, i as u64, call_method(address, "run")));
    }
    block.extend(calls);
    block.push(tx(BANK, 0, call_method(counter_at, "inc")));
    let (first, second) = (on_a_fresh_store(&block), on_a_fresh_store(&block));
    assert_eq!(first, second);
    let codes: Vec<&str> = first.0[5..9].iter().map(failure_code).collect();
    assert_eq!(
        codes,
        ["out_of_memory", "stack_exhausted", "out_of_fuel", "trap"]
    );
    // The block goes on: the call after them succeeds and every nonce was consumed.
    assert_success(&first.0[9]);
    let fresh = Env::new();
    let after = StateView::new(fresh.storage.clone(), first.1.clone());
    assert_eq!(account(&after, &pk(ACME)).unwrap().unwrap().nonce, 4);
}

#[test]
fn an_admin_upgrade_replaces_the_code_and_keeps_the_state() {
    let env = Env::new();
    let (code, address) = counter(1, Hash::ZERO);
    let (new_code, _) = counter(10, Hash::ZERO);
    env.commit(&[tx(ADMIN, 0, deploy(&code, Hash::ZERO))]);
    env.commit(&[tx(ACME, 0, call_method(address, "inc"))]);

    let receipts = env.commit(&[
        tx(ACME, 1, upgrade(address, &new_code)),
        tx(ADMIN, 1, upgrade(Address([5; 32]), &new_code)),
        tx(ADMIN, 2, upgrade(address, b"not wasm")),
        tx(ADMIN, 3, upgrade(address, &new_code)),
    ]);
    assert_eq!(failure_code(&receipts[0]), "not_admin");
    assert_eq!(failure_code(&receipts[1]), "contract_not_found");
    assert_eq!(failure_code(&receipts[2]), "invalid_module");
    assert_success(&receipts[3]);
    let kinds: Vec<&str> = receipts[3].events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["proposal_opened", "contract_upgraded"]);
    let record = contract(&env.storage, &address).unwrap().unwrap();
    assert_eq!(record.code_hash, vm::code_hash(&new_code));
    assert_eq!(record.deployed_at_height, 1);
    assert_eq!(record.upgraded_at_height, Some(3));

    env.commit(&[tx(ACME, 2, call_method(address, "inc"))]);
    assert_eq!(count(&env.storage, &address), Some(11));
}

/// The dev genesis with the counter deployed by the admin, initialised when `init` is set.
fn genesis_with_counter(code: &[u8], init: bool) -> Genesis {
    let mut genesis = Genesis::dev();
    // Only the counter, so that `initialise_with` needs no other code.
    genesis.contracts.clear();
    genesis.contracts.push(trellis_genesis::GenesisContract {
        // Not a name the genesis crate embeds code for.
        name: "wat-counter".into(),
        code_hash: vm::code_hash(code),
        salt: Hash([2; 32]),
        deployer: pk(ADMIN),
        calls: if init {
            vec![trellis_genesis::GenesisCall {
                method: "init".into(),
                args: Bytes::default(),
            }]
        } else {
            vec![]
        },
    });
    genesis.validate().expect("a valid genesis");
    genesis
}

#[test]
fn genesis_contracts_are_deployed_at_height_zero_and_initialised() {
    let code = crate::vm::tests::counter_module(5);
    let genesis = genesis_with_counter(&code, true);
    let address = genesis.contracts[0].address();
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let vm = Vm::new();
    chain::initialise_with(&storage, &genesis, &vm, |c| {
        (c.name == "wat-counter").then(|| code.clone())
    })
    .expect("genesis with a contract");
    let record = contract(&storage, &address).unwrap().unwrap();
    assert_eq!(record.deployed_at_height, 0);
    assert_eq!(record.deployer, pk(ADMIN));
    // `init` starts with `i`, which the counter takes for `inc`.
    assert_eq!(count(&storage, &address), Some(5));

    // The same genesis elsewhere gives the same state root.
    let dir2 = tempfile::tempdir().unwrap();
    let storage2 = Storage::open(dir2.path()).unwrap();
    let head2 =
        chain::initialise_with(&storage2, &genesis, &Vm::new(), |_| Some(code.clone())).unwrap();
    assert_eq!(head2.state_root, storage.head().unwrap().state_root);
}

#[test]
fn genesis_refuses_contracts_without_code_with_other_code_or_whose_init_fails() {
    let code = crate::vm::tests::counter_module(5);
    let open = || {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        (dir, storage)
    };
    let vm = Vm::new();
    let genesis = genesis_with_counter(&code, false);
    let (_d, storage) = open();
    let err = chain::initialise(&storage, &genesis, &vm).unwrap_err();
    assert!(err.to_string().contains("no code"), "{err}");
    let (_d, storage) = open();
    let other = crate::vm::tests::counter_module(6);
    let err = chain::initialise_with(&storage, &genesis, &vm, |_| Some(other.clone())).unwrap_err();
    assert!(err.to_string().contains("hashes to"), "{err}");

    // A module whose `call` always traps cannot be initialised.
    let trapping = wat::parse_str(
        r#"(module (memory (export "memory") 1)
           (func (export "call") (result i32) (unreachable))
           (func (export "query") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let genesis = genesis_with_counter(&trapping, true);
    let (_d, storage) = open();
    let err =
        chain::initialise_with(&storage, &genesis, &vm, |_| Some(trapping.clone())).unwrap_err();
    assert!(err.to_string().contains("init failed"), "{err}");
    assert!(storage.head().is_none());
}

// ---------------------------------------------------------------------------
// The Rust-built counter of `contracts/counter`, as embedded in trellis-genesis

fn rust_counter() -> &'static [u8] {
    trellis_genesis::contract_code("counter").expect("genesis/contracts/counter.wasm is embedded")
}

fn call_with(contract: Address, method: &str, args: Vec<u8>) -> Payload {
    Payload::Call {
        contract,
        method: method.into(),
        args: Bytes::from(args),
    }
}

#[test]
fn the_rust_built_counter_deploys_counts_refuses_and_answers_queries() {
    let env = Env::new();
    let code = rust_counter();
    let address = Address::derive(&pk(ADMIN), &vm::code_hash(code), &Hash::ZERO);
    assert_success(&env.commit(&[tx(ADMIN, 0, deploy(code, Hash::ZERO))])[0]);

    let receipts = env.commit(&[
        tx(ACME, 0, call_with(address, "increment", encode(&2u64))),
        tx(T1, 0, call_with(address, "increment", encode(&3u64))),
        tx(BANK, 0, call_with(address, "increment", encode(&0u64))),
        tx(ACME, 1, call_with(address, "decrement", encode(&1u64))),
        tx(T1, 1, call_with(address, "increment", vec![0xff])),
    ]);
    assert_success(&receipts[0]);
    assert_eq!(
        receipts[0].events,
        vec![Event {
            source: EventSource::Contract(address),
            kind: "incremented".into(),
            attributes: vec![
                ("org".into(), "core-acme".into()),
                ("by".into(), "2".into()),
                ("count".into(), "2".into()),
            ],
        }]
    );
    assert_success(&receipts[1]);
    assert_eq!(failure_code(&receipts[2]), "zero_increment");
    assert_eq!(failure_code(&receipts[3]), "unknown_method");
    assert_eq!(failure_code(&receipts[4]), "bad_args");
    assert!(receipts.iter().all(|r| r.fuel_used > 0));

    let head = env.storage.head().unwrap();
    let record = contract(&env.storage, &address).unwrap().unwrap();
    let mut view = StateView::new(env.storage.clone(), Writes::new());
    let outcome = env
        .vm
        .run(
            &record.code_hash,
            Entry::Query,
            &Invocation {
                method: "get".into(),
                args: encode(&()),
            },
            &CallEnv {
                contract: address,
                caller: vm::Caller::nobody(),
                block: vm::BlockInfo {
                    chain_id: CHAIN_ID.into(),
                    height: head.height,
                    timestamp_ms: head.timestamp_ms,
                },
                limits: env.next().limits,
            },
            &mut view,
        )
        .unwrap();
    assert_eq!(outcome.result, Ok(encode(&5u64)));
}

#[test]
fn the_rust_built_counter_runs_identically_on_two_fresh_stores() {
    let code = rust_counter();
    let address = Address::derive(&pk(ADMIN), &vm::code_hash(code), &Hash::ZERO);
    let block = [
        tx(ADMIN, 0, deploy(code, Hash::ZERO)),
        tx(ACME, 0, call_with(address, "increment", encode(&7u64))),
        tx(BANK, 0, call_with(address, "increment", encode(&0u64))),
    ];
    let run = || {
        let env = Env::new();
        let out = env.execute(&block);
        let root = env
            .storage
            .prepare_state(env.next().height, out.writes.clone())
            .unwrap()
            .root;
        (out.receipts, root)
    };
    assert_eq!(run(), run());
}

#[test]
fn a_genesis_deploys_the_embedded_rust_counter() {
    let code = rust_counter();
    let mut genesis = Genesis::dev();
    genesis.contracts.push(trellis_genesis::GenesisContract {
        name: "counter".into(),
        code_hash: vm::code_hash(code),
        salt: Hash::ZERO,
        deployer: pk(ADMIN),
        calls: vec![],
    });
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    chain::initialise(&storage, &genesis, &Vm::new()).expect("the embedded code deploys");
    let counter = genesis.contracts.last().expect("just pushed");
    let record = contract(&storage, &counter.address()).unwrap().unwrap();
    assert_eq!(record.code_hash, vm::code_hash(code));
}
