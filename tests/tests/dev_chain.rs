//! A single-validator dev chain, in process, end to end over the HTTP API.

use std::collections::BTreeMap;
use std::path::Path;
use trellis_genesis::Genesis;
use trellis_node::api::StateResponse;
use trellis_node::config::Indexes;
use trellis_node::execution::AccountRecord;
use trellis_node::storage::{ChainHead, Storage};
use trellis_tests::{DEADLINE, DevNode, account_key, dev_chain, remark};
use trellis_types::{KeyPair, ReceiptStatus, verify_state_proof};

const ACCOUNTS: [&str; 2] = ["core-acme/ops", "supplier-t1/ops"];

fn head_on_disk(data_dir: &std::path::Path) -> ChainHead {
    let storage = Storage::open(&data_dir.join("chain")).expect("the stopped node's store opens");
    storage.head().expect("the store holds a chain")
}

fn account_nonce(state: &StateResponse) -> u64 {
    let value = state.value.as_ref().expect("the account record exists");
    trellis_types::decode::<AccountRecord>(value)
        .expect("an account record decodes")
        .nonce
}

/// Checks `state`'s proof against the state root in the header of the block at
/// its height, and that a tampered value does not pass.
async fn assert_proof_holds(node: &DevNode, key: &[u8], state: &StateResponse) {
    let block = node.block(state.height).await.unwrap();
    let root = block.block.header.state_root;
    assert_eq!(state.state_root, root, "the answer's root is the header's");
    let proof = state.proof.as_ref().expect("proof=true returns a proof");
    assert_eq!(
        proof.state_root, root,
        "the proof is against the header's root"
    );
    assert_eq!(proof.height, state.height);
    assert_eq!(&proof.key.0[..], key);
    let value = state.value.as_deref();
    verify_state_proof(&root, key, value, &proof.proof)
        .expect("the proof verifies against the header's root");
    proof
        .verify()
        .expect("the proof verifies against its own root");

    let mut record: AccountRecord = trellis_types::decode(value.unwrap()).unwrap();
    record.nonce += 1;
    let tampered = trellis_types::encode(&record);
    assert!(
        verify_state_proof(&root, key, Some(&tampered), &proof.proof).is_err(),
        "a tampered value verifies"
    );
    assert!(
        verify_state_proof(&root, key, None, &proof.proof).is_err(),
        "absence verifies for a present key"
    );
    // Against a block of another state root: genesis, or the latest block when
    // the proof's root is genesis's (at genesis, or after empty blocks).
    let genesis = node.block(0).await.unwrap();
    let other = if genesis.block.header.state_root != root {
        genesis
    } else {
        node.get("/v1/blocks/latest").await.unwrap()
    };
    assert_ne!(other.block.header.state_root, root, "the chain moved on");
    assert!(
        verify_state_proof(&other.block.header.state_root, key, value, &proof.proof).is_err(),
        "the proof verifies against block {}",
        other.block.header.height
    );
}

#[tokio::test]
async fn a_submitted_transaction_is_committed_and_queryable() {
    let node = DevNode::start().await.unwrap();
    let per_account = 3u64;
    let mut submitted = Vec::new();
    for nonce in 0..per_account {
        for account in ACCOUNTS {
            let tx = remark(account, nonce, &format!("{account} #{nonce}"));
            let hash = node.submit_ok(&tx).await.unwrap();
            submitted.push((account, nonce, tx, hash));
        }
    }

    let mut last_height: BTreeMap<&str, u64> = BTreeMap::new();
    for (account, nonce, tx, hash) in &submitted {
        let committed = node.wait_committed(hash).await.unwrap();
        assert_eq!(committed.receipt.tx, *hash);
        assert_eq!(
            committed.receipt.status,
            ReceiptStatus::Success,
            "{account} #{nonce}: {:?}",
            committed.receipt
        );
        assert_eq!(committed.receipt.error, None);

        let block = node.block(committed.height).await.unwrap();
        assert_eq!(block.block.header.height, committed.height);
        assert_eq!(block.hash, block.block.hash());
        let index = committed.index as usize;
        assert_eq!(
            block.block.txs.get(index),
            Some(tx),
            "{account} #{nonce} is in its block at its index"
        );
        assert_eq!(block.receipts.get(index), Some(&committed.receipt));
        assert!(block.block.header.height > 0);

        let by_hash: trellis_node::api::BlockResponse = node
            .get(&format!("/v1/blocks/by-hash/{}", block.hash))
            .await
            .unwrap();
        assert_eq!(by_hash, block);

        let previous = last_height.insert(account, committed.height).unwrap_or(0);
        assert!(
            committed.height >= previous,
            "{account}'s nonces commit in order"
        );
    }

    for account in ACCOUNTS {
        let sender = trellis_genesis::dev_account(account).public();
        let key = account_key(&sender);

        // At the height where its last transaction committed, and at the latest height.
        let at_commit = node
            .state_with_proof(&key, Some(last_height[account]))
            .await
            .unwrap();
        assert_eq!(at_commit.height, last_height[account]);
        assert_eq!(
            account_nonce(&at_commit),
            per_account,
            "{account}'s nonce after {per_account} transactions"
        );
        assert_proof_holds(&node, &key, &at_commit).await;

        let before = node
            .state_with_proof(&key, Some(last_height[account] - 1))
            .await
            .unwrap();
        assert!(
            account_nonce(&before) < per_account,
            "{account}'s last transaction changed its nonce"
        );
        assert_proof_holds(&node, &key, &before).await;

        let latest = node.state_with_proof(&key, None).await.unwrap();
        assert!(latest.height >= last_height[account]);
        assert_eq!(account_nonce(&latest), per_account);
        assert_proof_holds(&node, &key, &latest).await;
    }
}

/// A transaction that cannot go in yet (its sender's nonce gap) does not
/// make the chain build empty blocks at the block interval until it
/// expires: once a block came out empty around it, the next waits the idle
/// heartbeat (1 s on the dev chain, against 100 ms). The missing nonces
/// arrive, and all go in.
#[tokio::test]
async fn a_transaction_that_cannot_go_in_yet_does_not_speed_up_empty_blocks() {
    let node = DevNode::start().await.unwrap();
    let account = ACCOUNTS[0];
    let gapped = remark(account, 3, "after a gap");
    let gapped_hash = node.submit_ok(&gapped).await.unwrap();
    let before = node.status().await.unwrap().height;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let blocks = node.status().await.unwrap().height - before;
    // At the block interval, about 30; at the heartbeat, about 3.
    assert!(blocks <= 8, "{blocks} empty blocks in 3 s");
    let mut hashes = Vec::new();
    for nonce in 0..3 {
        hashes.push(
            node.submit_ok(&remark(account, nonce, "the gap"))
                .await
                .unwrap(),
        );
    }
    hashes.push(gapped_hash);
    for hash in &hashes {
        node.wait_committed(hash).await.unwrap();
    }
}

#[tokio::test]
async fn a_restarted_node_resumes_at_the_same_height_with_the_same_state_root() {
    let data = tempfile::tempdir().unwrap();
    let mut node = DevNode::start_in(&data.path().join("data")).await.unwrap();
    let account = ACCOUNTS[0];
    let first: Vec<_> = (0..2)
        .map(|nonce| remark(account, nonce, &format!("before restart #{nonce}")))
        .collect();
    let mut committed = Vec::new();
    for tx in &first {
        node.submit_ok(tx).await.unwrap();
    }
    for tx in &first {
        committed.push(node.wait_committed(&tx.hash()).await.unwrap());
    }
    node.stop().await.expect("the node stops cleanly");

    // The node makes idle blocks until it stops: what it resumes from is what is on disk.
    let head = head_on_disk(node.data_dir());
    assert!(head.height >= committed[1].height);

    node.resume().await.unwrap();
    let status = node.status().await.unwrap();
    assert!(
        status.height >= head.height,
        "resumed at {} below the stored head {}",
        status.height,
        head.height
    );
    if status.height == head.height {
        assert_eq!(
            (status.block_hash, status.state_root),
            (head.block_hash, head.state_root)
        );
    }
    let old_head = node.block(head.height).await.unwrap();
    assert_eq!(
        old_head.hash, head.block_hash,
        "the block at the old head is unchanged"
    );
    assert_eq!(
        old_head.block.header.state_root, head.state_root,
        "the state root at the old head is unchanged"
    );
    for (tx, before) in first.iter().zip(&committed) {
        let after = node.wait_committed(&tx.hash()).await.unwrap();
        assert_eq!(
            (after.height, after.index, &after.receipt),
            (before.height, before.index, &before.receipt)
        );
    }

    // Nonces continue from the stored state: an old one is refused, the next one commits.
    let replay = node
        .submit(&first[1])
        .await
        .unwrap()
        .expect_err("a committed transaction is refused");
    assert_eq!(
        (replay.status, replay.code.as_str()),
        (409, "nonce_replayed"),
        "{}",
        replay.message
    );
    let reused = remark(account, 1, "a new transaction with a used nonce");
    let refused = node
        .submit(&reused)
        .await
        .unwrap()
        .expect_err("a used nonce is refused");
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (409, "nonce_replayed"),
        "{}",
        refused.message
    );

    let next = remark(account, 2, "after restart");
    let hash = node.submit_ok(&next).await.unwrap();
    let after = node.wait_committed(&hash).await.unwrap();
    assert_eq!(after.receipt.status, ReceiptStatus::Success);
    assert!(after.height > head.height);
    let state = node
        .state_with_proof(&account_key(&next.tx.sender), Some(after.height))
        .await
        .unwrap();
    assert_eq!(account_nonce(&state), 3);
}

/// Why a node on `data_dir` (loopback API) with `genesis`, `key` and `index`
/// refuses to start: it must fail, and fail at once.
async fn refusal(data_dir: &Path, genesis: Genesis, key: KeyPair, index: Indexes) -> String {
    let config = trellis_node::config::NodeConfig {
        data_dir: data_dir.to_owned(),
        api: trellis_node::config::ApiConfig {
            listen: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
            ..Default::default()
        },
        index,
        ..Default::default()
    };
    let run = trellis_node::node::run(config, genesis, Some(key), std::future::pending());
    let error = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the node refuses to start rather than run")
        .expect_err("the node refuses the data directory");
    format!("{error:#}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_data_dir_of_another_chain() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let mut node = DevNode::start_in(&data_dir).await.unwrap();
    node.stop().await.unwrap();
    let head = head_on_disk(&data_dir);

    let (local, nodes) = trellis_genesis::build(&trellis_genesis::NetworkSpec::local()).unwrap();
    let key = nodes.into_iter().find_map(|n| n.consensus).unwrap();
    let message = refusal(&data_dir, local.clone(), key, Indexes::default()).await;
    let (dev, _) = dev_chain();
    assert_ne!(dev.hash(), local.hash());
    for (what, hash) in [("stored", dev.hash()), ("given", local.hash())] {
        assert!(
            message.contains(&hash.to_hex()),
            "the error names the {what} genesis {hash}: {message}"
        );
    }

    // Refusing changed nothing: the dev chain is intact and resumes.
    assert_eq!(head_on_disk(&data_dir), head);
    node.resume().await.unwrap();
    let status = node.status().await.unwrap();
    assert_eq!(status.genesis_hash, dev.hash());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_store_that_keeps_other_indexes_and_leaves_it_intact() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let mut node = DevNode::start_in(&data_dir).await.unwrap();
    node.stop().await.unwrap();
    let head = head_on_disk(&data_dir);

    // The store was created keeping both indexes; the configuration now asks for none.
    let (dev, key) = dev_chain();
    let message = refusal(&data_dir, dev, key, Indexes::NONE).await;
    assert!(
        message.contains(
            "keeps transactions = true, queries = true but the configuration asks for \
             transactions = false, queries = false"
        ),
        "{message}"
    );

    // Refusing changed nothing: the chain is intact and resumes with both indexes.
    assert_eq!(head_on_disk(&data_dir), head);
    node.resume().await.unwrap();
    assert!(node.status().await.unwrap().height >= head.height);
}
