//! Block checks that depend on who asks: a proposal before a vote, or a block
//! a quorum already certified.

use super::*;
use crate::vm::Vm;
use tempfile::TempDir;
use trellis_genesis::{DEV_GENESIS_TIME_MS, NetworkSpec};

pub(crate) const NOW: u64 = DEV_GENESIS_TIME_MS + 60_000;

struct Node {
    _dir: TempDir,
    chain: Chain,
}

fn node() -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("open storage");
    let genesis = Genesis::dev();
    let vm = Arc::new(Vm::new());
    initialise(&storage, &genesis, &vm).expect("write genesis");
    let mempool = Arc::new(Mempool::new(
        genesis.chain_id.clone(),
        genesis.params.clone(),
    ));
    Node {
        _dir: dir,
        chain: Chain::new(storage, &genesis, mempool, vm),
    }
}

/// The dev chain's single validator key.
pub(crate) fn validator() -> KeyPair {
    let (_, nodes) = trellis_genesis::build(&NetworkSpec::dev()).expect("dev network builds");
    nodes[0]
        .consensus
        .clone()
        .expect("the dev node is a validator")
}

/// `validator`'s precommit for `block`: on the dev chain, a quorum of one.
pub(crate) fn certificate(block: &Block, validator: &KeyPair) -> QuorumCertificate {
    let mut qc = QuorumCertificate {
        height: block.header.height,
        round: block.header.round,
        block: block.hash(),
        votes: Vec::new(),
    };
    let signature = validator.sign(&qc.vote_data(&block.header.chain_id).signing_hash());
    qc.votes.push((validator.public(), signature));
    qc
}

/// A block built by a proposer whose clock runs an hour ahead of ours.
fn block_from_the_future() -> (Block, QuorumCertificate) {
    let mut proposer = node();
    let key = validator();
    let block = proposer
        .chain
        .build(0, &key, NOW + 3_600_000)
        .expect("build");
    let qc = certificate(&block, &key);
    (block, qc)
}

/// A verdict that depends on when the block arrived is no verdict: the
/// same block, proposed again once our clock has caught up, is judged then.
#[test]
fn a_proposal_from_a_clock_far_ahead_is_not_judged_until_our_clock_catches_up() {
    let (block, _) = block_from_the_future();
    let mut follower = node();
    assert!(
        follower.chain.validate_proposal(&block, NOW).is_none(),
        "an hour ahead is past the allowed drift"
    );
    follower
        .chain
        .validate_proposal(&block, NOW + 3_600_000 - MAX_CLOCK_DRIFT_MS)
        .expect("judged once within the drift")
        .expect("and valid");
}

#[test]
fn a_certified_block_is_committed_whatever_our_clock_says() {
    let (block, qc) = block_from_the_future();
    let mut follower = node();
    follower
        .chain
        .commit(&Arc::new(block.clone()), &qc)
        .expect("a quorum decided it: our clock has no say");
    assert_eq!(follower.chain.head().unwrap().block_hash, block.hash());

    let mut syncing = node();
    syncing
        .chain
        .validate_synced(&block, &qc, Signatures::Unchecked)
        .expect("block sync does not consult the clock either");
}

#[test]
fn a_synced_block_needs_a_certificate_for_exactly_it() {
    let (block, qc) = block_from_the_future();
    let mut other = block.clone();
    other.header.timestamp_ms += 1;
    let mut syncing = node();
    let err = syncing
        .chain
        .validate_synced(&other, &qc, Signatures::Unchecked)
        .unwrap_err();
    assert!(err.to_string().contains("certified next block"), "{err}");

    let mut forged = qc.clone();
    forged.votes[0].1 = trellis_types::Signature([7; 64]);
    let err = syncing
        .chain
        .validate_synced(&block, &forged, Signatures::Unchecked)
        .unwrap_err();
    assert!(err.to_string().contains("commit certificate"), "{err}");
}

/// A block's hash covers its whole body: a block with the hash of a valid
/// one but another parent certificate is refused as a spoiled body, before
/// and after the real one is executed here, and the real one still commits.
#[test]
fn a_block_whose_body_is_not_its_headers_is_refused() {
    let (block, qc) = block_from_the_future();
    let mut spoiled = block.clone();
    spoiled.parent_commit.round += 1;
    assert_eq!(spoiled.hash(), block.hash());
    let is_spoiled_body = |e: InvalidBlock| {
        assert!(
            matches!(&e, InvalidBlock::Body(m) if m.contains("parent_commit_hash")),
            "{e}"
        )
    };

    let mut follower = node();
    is_spoiled_body(
        follower
            .chain
            .validate_synced(&spoiled, &qc, Signatures::Unchecked)
            .unwrap_err(),
    );
    follower
        .chain
        .validate_synced(&block, &qc, Signatures::Unchecked)
        .expect("the block itself is valid");
    is_spoiled_body(
        follower
            .chain
            .validate_synced(&spoiled, &qc, Signatures::Unchecked)
            .unwrap_err(),
    );
    follower
        .chain
        .commit(&Arc::new(block.clone()), &qc)
        .expect("the block executed here still commits");
    assert_eq!(follower.chain.head().unwrap().block_hash, block.hash());
}

/// A remark by `key` on the dev chain.
pub(crate) fn remark(key: &KeyPair, nonce: u64) -> SignedTransaction {
    trellis_types::Transaction {
        chain_id: Genesis::dev().chain_id,
        sender: key.public(),
        nonce,
        expires_at_ms: NOW + 60_000,
        payload: trellis_types::Payload::System(trellis_types::SystemOp::Remark {
            data: vec![nonce as u8].into(),
        }),
    }
    .sign(key)
}

/// A transaction larger than `max_tx_bytes`, which no mempool admits, makes
/// the block that carries it invalid: a proposer cannot slip one in.
#[test]
fn a_block_with_a_transaction_over_the_size_limit_is_refused() {
    let key = trellis_genesis::dev_account("core-acme/ops");
    let validator = validator();
    let mut proposer = node();
    let chain = &proposer.chain;
    chain
        .mempool
        .admit(&encode(&remark(&key, 0)), &chain.storage, NOW)
        .expect("a member's remark is admitted");
    let good = proposer.chain.build(0, &validator, NOW).expect("build");
    let limit = Genesis::dev().params.max_tx_bytes as usize;
    let mut oversized = good.clone();
    oversized.txs[0] = trellis_types::Transaction {
        payload: trellis_types::Payload::System(trellis_types::SystemOp::Remark {
            data: vec![7; limit].into(),
        }),
        ..good.txs[0].tx.clone()
    }
    .sign(&key);
    oversized.header.tx_root = tx_root(&oversized.txs);
    let qc = certificate(&oversized, &validator);
    let err = node()
        .chain
        .validate_synced(&oversized, &qc, Signatures::Unchecked)
        .unwrap_err();
    assert!(err.to_string().contains("transaction 0 is"), "{err}");
}

/// A synced block whose second transaction carries the first's signature
/// (its header, body and certificate all agreeing) is refused for that
/// signature, whether validation checks it or `SignatureChecks` did
/// beforehand; checked beforehand, the verdicts come in the blocks' order.
#[test]
fn a_synced_block_with_a_bad_signature_is_refused_checked_here_or_beforehand() {
    let key = trellis_genesis::dev_account("core-acme/ops");
    let validator = validator();
    let mut proposer = node();
    for nonce in 0..3 {
        let bytes = encode(&remark(&key, nonce));
        let chain = &proposer.chain;
        chain
            .mempool
            .admit(&bytes, &chain.storage, NOW)
            .expect("a member's remark is admitted");
    }
    let good = proposer.chain.build(0, &validator, NOW).expect("build");
    assert_eq!(good.txs.len(), 3);
    let mut bad = good.clone();
    bad.txs[1].signature = bad.txs[0].signature;
    bad.header.tx_root = tx_root(&bad.txs);
    let good_qc = certificate(&good, &validator);
    let bad_qc = certificate(&bad, &validator);
    let is_the_second_s = |e: InvalidBlock| {
        assert!(matches!(e, InvalidBlock::Signature { index: 1 }), "{e}");
    };

    let mut syncing = node();
    let unchecked = syncing
        .chain
        .validate_synced(&bad, &bad_qc, Signatures::Unchecked);
    is_the_second_s(unchecked.unwrap_err());

    let checks = SignatureChecks::spawn(vec![Arc::new(bad.clone()), Arc::new(good.clone())]);
    let verdict = checks.next();
    assert!(matches!(
        verdict,
        Signatures::Checked(Err(InvalidBlock::Signature { index: 1 }))
    ));
    is_the_second_s(
        syncing
            .chain
            .validate_synced(&bad, &bad_qc, verdict)
            .unwrap_err(),
    );
    let verdict = checks.next();
    assert!(matches!(verdict, Signatures::Checked(Ok(()))));
    syncing
        .chain
        .validate_synced(&good, &good_qc, verdict)
        .expect("the block as built is valid");
    assert!(
        matches!(checks.next(), Signatures::Unchecked),
        "two blocks, two verdicts"
    );
}
