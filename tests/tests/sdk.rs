//! The SDK against real in-process dev nodes: the supply-chain story through
//! typed calls, errors as the caller sees them, keys that OpenSSL makes and
//! checks, the event stream across a dropped connection, concurrent
//! submissions from one account, and verified state proofs, headers and
//! transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use trellis_genesis::{Genesis, dev_account};
use trellis_node::node::now_ms;
use trellis_receivables as rcv;
use trellis_sdk::api::{CommittedTx, HeaderResponse, TxPosition, TxProofResponse, TxStatus};
use trellis_sdk::{Client, Error, EventStream, RetryPolicy};
use trellis_tests::{DEADLINE, DevNode, Lies, LyingNode, TcpProxy, TlsFront, openssl, poll};
use trellis_types::{
    Address, Bytes, Hash, KeyPair, Payload, PublicKey, ReceiptStatus, SignedTransaction, SystemOp,
    Transaction, ValidatorSet, decode, encode,
};

const CORE: &str = "core-acme";
const T1: &str = "supplier-t1";
const T2: &str = "supplier-t2";
const T3: &str = "supplier-t3";
const BANK: &str = "bank-first";

fn receivables_address() -> Address {
    Genesis::dev()
        .contracts
        .iter()
        .find(|c| c.name == "receivables")
        .expect("the dev genesis deploys the receivables contract")
        .address()
}

/// A client on `url` signing as `key`.
fn client_with(url: &str, key: KeyPair) -> Client {
    Client::builder()
        .endpoint(url)
        .signer(key)
        .commit_timeout(DEADLINE)
        .build()
        .expect("a client builds")
}

/// A client signing as the dev account of `org` (`<org>/ops`).
fn member(node: &DevNode, org: &str) -> Client {
    client_with(&node.url(""), dev_account(&format!("{org}/ops")))
}

fn remark(text: &str) -> Payload {
    Payload::System(SystemOp::Remark {
        data: Bytes(text.as_bytes().to_vec()),
    })
}

fn failed_code(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Failed {
            code,
            message,
            receipt,
        }) => {
            assert_eq!(receipt.status, ReceiptStatus::Failed);
            assert_eq!(receipt.error.as_ref().map(|e| &e.code), Some(&code));
            assert!(!message.is_empty(), "the contract's message arrives");
            code
        }
        other => panic!("expected a failed execution, got {other:?}"),
    }
}

fn decode_error(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Decode(message)) => message,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

fn rejected(result: Result<impl std::fmt::Debug, Error>) -> (u16, String) {
    match result {
        Err(Error::Rejected {
            status,
            code,
            message,
        }) => {
            assert!(!message.is_empty(), "the node's message arrives");
            (status, code)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supply_chain_story_runs_through_the_sdk() {
    let node = DevNode::start().await.expect("dev node");
    let address = receivables_address();
    let [core, t1, t2, t3, bank] =
        [CORE, T1, T2, T3, BANK].map(|org| member(&node, org).receivables(address));

    // 1,000,000.00 CNY to tier 1 against INV-001, maturing after the dev
    // chain's 10 s acceptance window.
    let invoice = trellis_sdk::invoice_hash(b"INV-001");
    let maturity_ms = now_ms() + 20_000;
    let issue = rcv::Issue {
        to: T1.into(),
        amount: 100_000_000,
        currency: "CNY".into(),
        maturity_ms,
        invoice_hash: invoice,
        terms: "net 180".into(),
    };
    let issued = core.issue(&issue).await.expect("issued");
    let root = issued.value;
    assert_eq!(issued.receipt.status, ReceiptStatus::Success);
    assert_eq!(issued.events()[0].kind, "issued");
    assert_eq!(core.by_invoice(invoice).await.unwrap().unwrap().id, root);

    t1.accept(root).await.expect("accepted");
    let split = t1
        .split(&rcv::Split {
            piece: root,
            parts: vec![(T2.into(), 40_000_000)],
        })
        .await
        .expect("split to tier 2");
    let [t2_piece, t1_rest] = split.value[..] else {
        panic!("two pieces: {:?}", split.value)
    };
    let split = t2
        .split(&rcv::Split {
            piece: t2_piece,
            parts: vec![(T3.into(), 15_000_000)],
        })
        .await
        .expect("split to tier 3");
    let [t3_piece, t2_rest] = split.value[..] else {
        panic!("two pieces: {:?}", split.value)
    };
    assert_eq!(t3.piece(t3_piece).await.unwrap().piece.holder, T3);
    assert_eq!(t3.piece(t3_piece).await.unwrap().piece.amount, 15_000_000);

    // A non-holder cannot move a piece: the contract's code reaches the caller.
    let stolen = t2
        .transfer(&rcv::Transfer {
            piece: t1_rest,
            to: T2.into(),
        })
        .await;
    assert_eq!(failed_code(stolen), "not_holder");

    // Tier 3 finances its piece at the bank at a 3.5 % annual discount.
    let terms = rcv::Terms {
        price: None,
        annual_rate_bps: Some(350),
        expires_ms: now_ms() + 15_000,
    };
    t3.request_financing(&rcv::RequestFinancing {
        piece: t3_piece,
        bank: BANK.into(),
        terms: terms.clone(),
    })
    .await
    .expect("financing requested");
    let financed = bank
        .accept_financing(&rcv::AcceptFinancing {
            piece: t3_piece,
            bank: BANK.into(),
            terms: terms.clone(),
            payment_ref: "BANK-PAY-1".into(),
        })
        .await
        .expect("financed");
    assert_eq!(financed.value.bank, BANK);
    assert_eq!(financed.value.seller, T3);
    assert_eq!(financed.value.annual_rate_bps, Some(350));
    assert!(financed.value.price < 15_000_000, "discounted");
    let recorded = bank.piece(t3_piece).await.unwrap().piece;
    assert_eq!(recorded.financing.as_ref(), Some(&financed.value));
    // The bank checks what it financed without trusting the node: the
    // piece's record, proven in the state of a block the validators committed.
    let proven = bank.piece_with_proof(t3_piece).await.expect("proven");
    assert_eq!(
        proven.decode::<rcv::Piece>().unwrap(),
        Some(recorded.clone())
    );
    // A piece that is not the bank's to see (here, one that does not exist:
    // the two read alike) is refused; a regulator proves it absent.
    let refused = rejected(bank.piece_with_proof(1_000_000).await);
    assert_eq!(refused, (403, "forbidden".to_owned()));
    let absent = client_with(&node.url(""), regulator())
        .receivables(address)
        .piece_with_proof(1_000_000)
        .await
        .expect("proven absent");
    assert_eq!(absent.value, None);

    // Financing a financed piece again is refused; so is a second issue on INV-001.
    let again = bank
        .request_financing(&rcv::RequestFinancing {
            piece: t3_piece,
            bank: BANK.into(),
            terms,
        })
        .await;
    assert_eq!(failed_code(again), "already_financed");
    let twice = core
        .issue(&rcv::Issue {
            maturity_ms: now_ms() + 30_000,
            ..issue
        })
        .await;
    assert_eq!(failed_code(twice), "invoice_used");

    // Holdings, tree, lineage and what the core firm owes.
    let holdings: Vec<u64> = t2
        .holdings(T2)
        .await
        .unwrap()
        .iter()
        .map(|v| v.piece.id)
        .collect();
    assert_eq!(holdings, vec![t2_rest]);
    let tree: BTreeSet<u64> = core
        .tree(root)
        .await
        .unwrap()
        .iter()
        .map(|v| v.piece.id)
        .collect();
    assert_eq!(
        tree,
        BTreeSet::from([root, t2_piece, t1_rest, t3_piece, t2_rest])
    );
    assert_eq!(core.outstanding(CORE, "CNY").await.unwrap(), 100_000_000);

    // At maturity the core firm settles: every holder is paid.
    let early = core
        .settle(&rcv::Settle {
            root,
            payment_ref: "EARLY".into(),
        })
        .await;
    assert_eq!(failed_code(early), "not_matured");
    poll(
        "block time to pass maturity",
        Duration::from_secs(60),
        || async {
            let status = core_client(&node).status().await?.status;
            Ok((status.last_block_time_ms > maturity_ms).then_some(()))
        },
    )
    .await
    .unwrap();
    let settled = core
        .settle(&rcv::Settle {
            root,
            payment_ref: "CORE-PAY-1".into(),
        })
        .await
        .expect("settled");
    let paid: BTreeMap<String, u128> = settled.value.iter().fold(BTreeMap::new(), |mut paid, p| {
        *paid.entry(p.to.clone()).or_default() += p.amount;
        paid
    });
    assert_eq!(
        paid,
        BTreeMap::from([
            (T1.to_string(), 60_000_000),
            (T2.to_string(), 25_000_000),
            (BANK.to_string(), 15_000_000),
        ])
    );
    for piece in [root, t1_rest, t2_piece, t2_rest, t3_piece] {
        let lineage = core.lineage(piece).await.unwrap();
        assert_eq!(lineage.issuer, CORE);
        assert_eq!(lineage.path[0].piece.id, piece);
        assert_eq!(lineage.path.last().unwrap().piece.id, root);
    }
    assert_eq!(core.outstanding(CORE, "CNY").await.unwrap(), 0);
}

fn core_client(node: &DevNode) -> Client {
    member(node, CORE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_errors_reach_the_caller_with_the_nodes_code() {
    let node = DevNode::start().await.expect("dev node");

    // A key no member registered: its read of its own nonce is refused, as
    // no member's, and so is its transaction, sent as it is.
    let key = trellis_sdk::keys::generate();
    let stranger = client_with(&node.url(""), key.clone());
    let (status, code) = rejected(stranger.submit(remark("hello")).await);
    assert_eq!((status, code.as_str()), (401, "unknown_account"));
    let tx = Transaction {
        chain_id: "trellis-dev".into(),
        sender: key.public(),
        nonce: 0,
        expires_at_ms: now_ms() + 60_000,
        payload: remark("hello"),
    }
    .sign(&key);
    let (status, code) = rejected(stranger.send_signed(&tx).await);
    assert_eq!((status, code.as_str()), (403, "unknown_sender"));

    // A nonce already used, signed outside the SDK's nonce management.
    let core = core_client(&node);
    core.submit(remark("first"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let key = dev_account("core-acme/ops");
    let replay = Transaction {
        chain_id: core.chain_id().await.unwrap(),
        sender: key.public(),
        nonce: 0,
        expires_at_ms: now_ms() + 60_000,
        payload: remark("again"),
    }
    .sign(&key);
    let (status, code) = rejected(core.submit_signed(&replay).await);
    assert_eq!((status, code.as_str()), (409, "nonce_replayed"));

    // A contract query's refusal carries the contract's code.
    let missing = core.receivables(receivables_address()).piece(999).await;
    assert_eq!(rejected(missing), (422, "not_found".to_string()));
}

/// Three remarks signed by `key` with its next three nonces (the first
/// returned), and an event stream of its commits opened before any is sent.
async fn three_remarks(
    client: &Client,
    key: &KeyPair,
    label: &str,
) -> (u64, EventStream, Vec<SignedTransaction>) {
    let chain_id = client.chain_id().await.unwrap();
    let first = client.account(&key.public()).await.unwrap().unwrap().nonce;
    let stream = client
        .events()
        .sender(key.public())
        .subscribe()
        .await
        .unwrap();
    let signed = (0..3)
        .map(|i| {
            Transaction {
                chain_id: chain_id.clone(),
                sender: key.public(),
                nonce: first + i,
                expires_at_ms: now_ms() + 60_000,
                payload: remark(&format!("{label} {i}")),
            }
            .sign(key)
        })
        .collect();
    (first, stream, signed)
}

/// Waits until `stream` has shown `signed` committed, and checks they came in that order.
async fn assert_commits_in_order(stream: &mut EventStream, signed: &[SignedTransaction]) {
    let mut committed = Vec::new();
    while committed.len() < signed.len() {
        let tx = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("commits arrive")
            .expect("the stream continues")
            .unwrap();
        committed.push(tx.tx_hash);
    }
    assert_eq!(
        committed,
        signed.iter().map(|t| t.hash()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_sent_without_a_commit_watch_are_admitted_and_commit_in_nonce_order() {
    let node = DevNode::start().await.expect("dev node");
    let key = dev_account("supplier-t3/ops");
    let client = client_with(&node.url(""), key.clone());
    let (first, mut stream, signed) = three_remarks(&client, &key, "sent").await;
    // Last nonce first: the node holds it until the gap before it fills.
    for tx in signed.iter().rev() {
        assert_eq!(client.send_signed(tx).await.unwrap(), tx.hash());
    }
    // Sending the same bytes again is harmless.
    assert_eq!(
        client.send_signed(&signed[1]).await.unwrap(),
        signed[1].hash()
    );
    assert_commits_in_order(&mut stream, &signed).await;
    // A refusal is the node's final word, with its code.
    let mut forged = signed[0].clone();
    forged.tx.nonce = first + 10;
    let (status, code) = rejected(client.send_signed(&forged).await);
    assert_eq!((status, code.as_str()), (401, "bad_signature"));
}

/// A follower that asks for each next block, waiting for it to commit,
/// finds a transaction's block with its receipt, as the JSON answer has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_waiting_for_each_next_block_finds_a_transactions_block() {
    let node = DevNode::start().await.expect("dev node");
    let client = client_with(&node.url(""), dev_account("supplier-t1/ops"));
    // Whole blocks are a regulator's to read.
    let follower = client_with(&node.url(""), regulator());
    let mut height = client.status().await.unwrap().status.height + 1;
    let hash = client.submit(remark("followed")).await.unwrap().tx_hash();
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            let wait = Duration::from_secs(5);
            let Some(block) = follower.wait_for_block(height, wait).await.unwrap() else {
                continue;
            };
            assert_eq!(block.block.header.height, height);
            if let Some(index) = block.receipts.iter().position(|r| r.tx == hash) {
                return (block, index);
            }
            height += 1;
        }
    })
    .await
    .expect("the transaction's block commits");
    let (block, index) = found;
    assert_eq!(block.block.txs[index].hash(), hash);
    assert_eq!(block.hash, block.block.hash());
    assert_eq!(follower.block(height).await.unwrap(), block);
    // A block that does not commit within the wait is `None`, after the wait.
    let started = std::time::Instant::now();
    let far = follower.wait_for_block(height + 1_000_000, Duration::from_millis(200));
    assert_eq!(far.await.unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_a_verdict_per_transaction_and_its_admitted_ones_commit() {
    let node = DevNode::start().await.expect("dev node");
    let key = dev_account("supplier-t2/ops");
    let client = client_with(&node.url(""), key.clone());
    let (first, mut stream, signed) = three_remarks(&client, &key, "batched").await;
    let mut forged = signed[0].clone();
    forged.tx.nonce = first + 10;
    // A duplicate of a batch-mate is `already_known`, which counts as admitted.
    let batch = [
        signed[0].clone(),
        signed[1].clone(),
        signed[1].clone(),
        forged,
        signed[2].clone(),
    ];
    let verdicts = client.send_signed_batch(&batch).await.unwrap();
    assert_eq!(verdicts.len(), batch.len());
    for i in [0, 1, 2, 4] {
        assert_eq!(verdicts[i].as_ref().unwrap(), &batch[i].hash(), "{i}");
    }
    let forged_verdict = verdicts.into_iter().nth(3).unwrap();
    assert_eq!(rejected(forged_verdict), (401, "bad_signature".to_string()));
    assert_commits_in_order(&mut stream, &signed).await;
    assert!(client.send_signed_batch(&[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_cannot_commit_times_out_or_is_dropped_and_a_dead_endpoint_fails_over() {
    let node = DevNode::start().await.expect("dev node");
    // A dead endpoint first: requests move on to the live one.
    let dead = format!("http://127.0.0.1:{}", trellis_tests::free_port());
    let client = Client::builder()
        .endpoint(&dead)
        .endpoint(node.url(""))
        .signer(dev_account("core-acme/ops"))
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        })
        .build()
        .unwrap();
    assert_eq!(client.status().await.unwrap().chain_id, "trellis-dev");
    assert_eq!(client.endpoint(), node.url(""));
    // An honest chain has no evidence; the query is read and answered.
    let validator = dev_account("core-acme/ops").public();
    assert_eq!(client.evidence(0, None).await.unwrap(), []);
    assert_eq!(client.evidence(3, Some(&validator)).await.unwrap(), []);

    // Nonce 5 while 0 is next: admitted, but it can never be included.
    let key = dev_account("core-acme/ops");
    let gapped = Transaction {
        chain_id: "trellis-dev".into(),
        sender: key.public(),
        nonce: 5,
        expires_at_ms: now_ms() + 60_000,
        payload: remark("waits forever"),
    }
    .sign(&key);
    let pending = client.submit_signed(&gapped).await.expect("admitted");
    match pending.wait_for_commit(Duration::from_secs(2)).await {
        Err(Error::CommitTimeout { tx_hash }) => assert_eq!(tx_hash, gapped.hash()),
        other => panic!("expected a commit timeout, got {other:?}"),
    }

    // One that expires meanwhile ends the wait as soon as a block's time
    // passes its expiry (the dev node makes one a second when idle).
    let expiring = Transaction {
        nonce: 6,
        expires_at_ms: now_ms() + 1_500,
        ..gapped.tx.clone()
    }
    .sign(&key);
    let pending = client.submit_signed(&expiring).await.expect("admitted");
    match pending.wait_for_commit(Duration::from_secs(30)).await {
        Err(e @ Error::Dropped { .. }) => {
            assert_eq!(e.code(), Some("expired"));
            assert!(!e.is_transient());
        }
        other => panic!("expected the transaction dropped, got {other:?}"),
    }

    // Only dead endpoints: a transport error once the retries are spent.
    let nowhere = Client::builder()
        .endpoint(dead)
        .retry(RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        })
        .build()
        .unwrap();
    assert!(matches!(
        nowhere.status().await,
        Err(Error::Transport { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_from_one_account_all_commit_with_distinct_nonces() {
    let node = DevNode::start().await.expect("dev node");
    let client = member(&node, T1);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let pending = client.submit(remark(&format!("concurrent {i}"))).await?;
                let nonce = pending.nonce().expect("the client allocated it");
                pending.wait().await.map(|c| (nonce, c))
            })
        })
        .collect();
    let mut nonces = BTreeSet::new();
    let mut hashes = BTreeSet::new();
    for task in tasks {
        let (nonce, committed) = task.await.unwrap().expect("committed");
        assert_eq!(committed.receipt.status, ReceiptStatus::Success);
        nonces.insert(nonce);
        hashes.insert(committed.tx_hash);
    }
    assert_eq!(nonces, (0..16).collect::<BTreeSet<u64>>());
    assert_eq!(hashes.len(), 16);
    let account = client
        .account(&dev_account("supplier-t1/ops").public())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.nonce, 16);

    // Another client with the same key starts from the chain's nonce; the
    // first one, now stale, resynchronises after `nonce_replayed`.
    let other = member(&node, T1);
    let c = other.submit(remark("other")).await.unwrap();
    assert_eq!(c.nonce(), Some(16));
    c.wait().await.unwrap();
    let stale = client.submit(remark("stale")).await.unwrap();
    assert_eq!(stale.nonce(), Some(17));
    stale.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_proofs_are_verified_and_a_tampered_one_is_refused() {
    let node = DevNode::start().await.expect("dev node");
    let client = core_client(&node);
    client
        .submit(remark("move the nonce"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let me = dev_account("core-acme/ops").public();
    let key = trellis_sdk::Account::state_key(&me);

    let verified = client.state_with_proof(&key).await.expect("verified");
    let account: trellis_sdk::Account = verified.decode().unwrap().expect("present");
    assert_eq!(account.org, CORE);
    assert_eq!(account.nonce, 1);
    let header = client.header(verified.height).await.unwrap().header;
    assert_eq!(verified.state_root, header.state_root);
    assert_eq!(verified.block_hash, header.hash());
    // The SDK's account record is the node's, byte for byte.
    let stored: trellis_node::execution::AccountRecord =
        decode(verified.value.as_ref().unwrap()).unwrap();
    assert_eq!(encode(&stored), encode(&account));

    // An absent key is proven absent; an old height is verified against its own header.
    let stranger = trellis_sdk::Account::state_key(&KeyPair::from_seed([9; 32]).public());
    let absent = client.state_with_proof(&stranger).await.unwrap();
    assert_eq!(absent.value, None);
    let old = client.state_with_proof_at(&key, 0).await.unwrap();
    assert_eq!(
        old.decode::<trellis_sdk::Account>().unwrap().unwrap().nonce,
        0
    );

    // Tampering with the value, the proof or the root is refused.
    let answer = client
        .state(&key, Some(verified.height), true)
        .await
        .unwrap();
    assert!(trellis_sdk::verify_state(&answer, &header).is_ok());
    let mut forged_value = answer.clone();
    let mut record = account.clone();
    record.nonce = 1_000;
    forged_value.value = Some(Bytes(encode(&record)));
    forged_value.proof.as_mut().unwrap().value = forged_value.value.clone();
    let mut forged_proof = answer.clone();
    let bytes = &mut forged_proof.proof.as_mut().unwrap().proof.0;
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let older_header = client.header(0).await.unwrap().header;
    let mut other_root = answer.clone();
    other_root.height = 0;
    other_root.state_root = older_header.state_root;
    other_root.proof.as_mut().unwrap().height = 0;
    other_root.proof.as_mut().unwrap().state_root = older_header.state_root;
    for (what, answer, header) in [
        ("a forged value", &forged_value, &header),
        ("a damaged proof", &forged_proof, &header),
        (
            "a proof against another block's root",
            &other_root,
            &older_header,
        ),
    ] {
        assert!(
            matches!(
                trellis_sdk::verify_state(answer, header),
                Err(Error::Proof(_))
            ),
            "{what} was accepted"
        );
    }
    let mut no_proof = answer.clone();
    no_proof.proof = None;
    assert!(matches!(
        trellis_sdk::verify_state(&no_proof, &header),
        Err(Error::Proof(_))
    ));
    // A query-index key is outside the tree: the node answers 400 for it,
    // and a proof that it is absent from the tree proves nothing of it.
    let index_key = [trellis_types::QUERY_INDEX, b"some/index/entry"].concat();
    let absent_answer = client
        .state(&stranger, Some(verified.height), true)
        .await
        .unwrap();
    let mut of_index = absent_answer.clone();
    of_index.key = Bytes(index_key.clone());
    of_index.proof.as_mut().unwrap().key = Bytes(index_key.clone());
    let verdict = trellis_sdk::verify_state(&of_index, &header);
    assert!(
        matches!(&verdict, Err(Error::Proof(m)) if m.contains("query-index")),
        "{verdict:?}"
    );
    assert!(matches!(
        client.state_with_proof(&index_key).await,
        Err(Error::Rejected { status: 400, .. })
    ));
}

/// A node behind a member's TLS front with its own certificate authority:
/// the SDK reads and submits over https trusting that CA, and without it
/// refuses the connection; what is not a PEM certificate is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_tls_is_reached_with_its_ca_and_refused_without() {
    let node = DevNode::start().await.expect("dev node");
    let front = TlsFront::start(node.addr()).await.unwrap();
    let trusting = Client::builder()
        .endpoint(front.url())
        .root_certificate(front.ca_pem.clone())
        .signer(dev_account("core-acme/ops"))
        .commit_timeout(DEADLINE)
        .build()
        .unwrap();
    assert_eq!(trusting.status().await.unwrap().chain_id, "trellis-dev");
    let committed = trusting
        .submit(remark("over TLS"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(committed.receipt.status, ReceiptStatus::Success);

    let untrusting = Client::builder()
        .endpoint(front.url())
        .retry(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let refused = untrusting.status().await;
    assert!(
        matches!(&refused, Err(Error::Transport { message, .. }) if message.contains("certificate")),
        "{refused:?}"
    );
    let not_pem = Client::builder()
        .endpoint(front.url())
        .root_certificate("not a certificate")
        .build();
    assert!(matches!(not_pem, Err(Error::Config(_))), "{not_pem:?}");
}

/// A dev node that has committed a block past the genesis.
async fn node_past_genesis() -> DevNode {
    let node = DevNode::start().await.expect("dev node");
    core_client(&node)
        .submit(remark("a block past the genesis"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    node
}

/// A client of `url` that trusts the dev chain's validators for its chain
/// id, reading as the chain's regulator (who may read whole blocks).
fn pinned(url: &str) -> trellis_sdk::ClientBuilder {
    let genesis = Genesis::dev();
    Client::builder()
        .endpoint(url)
        .signer(regulator())
        .chain_id(&genesis.chain_id)
        .validators(genesis.validator_keys())
}

/// The dev chain's regulator account, which reads everything.
fn regulator() -> KeyPair {
    dev_account("regulator/ops")
}

fn pinned_client(url: &str) -> Client {
    pinned(url).build().expect("a client builds")
}

/// A node that answers a state read at one height below the one asked, and
/// answers a read of the latest state from the genesis block: both answers
/// true of their own height, both not what was asked.
fn older_state(asked: &str) -> String {
    let Some(rest) = asked.strip_prefix("/v1/state/") else {
        return asked.to_owned();
    };
    match rest.split_once("&height=") {
        Some((head, height)) => {
            let height: u64 = height.parse().expect("a height");
            format!("/v1/state/{head}&height={}", height.saturating_sub(1))
        }
        None => format!("{asked}&height=0"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_pass_off_another_height_or_an_old_state_as_the_latest() {
    let node = node_past_genesis().await;
    let lying = LyingNode::start(
        &node.url(""),
        Lies {
            request: older_state,
            answer: |_, _| {},
        },
    )
    .await
    .unwrap();
    let honest = pinned_client(&node.url(""));
    let head = honest.status().await.unwrap().status.height;
    let through_liar = pinned_client(&lying.url());
    let key = b"sys/params";

    let at = through_liar.state_with_proof_at(key, head).await;
    assert!(
        matches!(&at, Err(Error::Proof(m)) if m.contains("heights differ")),
        "{at:?}"
    );
    assert_eq!(
        honest.state_with_proof_at(key, head).await.unwrap().height,
        head
    );

    // "The latest" is whatever height the node chooses to answer from, each
    // true of its block: only its age tells. The genesis block is the dev
    // chain's genesis time, long before now.
    let old = through_liar
        .state_with_proof(key)
        .await
        .expect("true of block 0");
    assert_eq!(old.height, 0);
    assert_eq!(old.timestamp_ms, Genesis::dev().genesis_time_ms);
    let bounded = |url: &str| {
        pinned(url)
            .max_staleness(Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let stale = bounded(&lying.url()).state_with_proof(key).await;
    assert!(
        matches!(&stale, Err(Error::Proof(m)) if m.contains("max_staleness")),
        "{stale:?}"
    );
    let fresh = bounded(&node.url("")).state_with_proof(key).await.unwrap();
    assert!(fresh.height >= head);
    assert!(now_ms().saturating_sub(fresh.timestamp_ms) < 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_whose_carried_certificate_is_forged_is_refused() {
    let node = node_past_genesis().await;
    // The block's own certificate altered in one signature; the header
    // route, which the SDK verifies the header with, left honest.
    let lying = LyingNode::start(
        &node.url(""),
        Lies {
            request: str::to_owned,
            answer: |asked, json| {
                let is_block = asked
                    .strip_prefix("/v1/blocks/")
                    .is_some_and(|rest| !rest.contains('/'));
                if let Some(signature) = json.pointer_mut("/commit/votes/0/1")
                    && is_block
                {
                    let hex = signature.as_str().expect("a signature in hex");
                    let flipped = if hex.starts_with('0') { "1" } else { "0" };
                    *signature = format!("{flipped}{}", &hex[1..]).into();
                }
            },
        },
    )
    .await
    .unwrap();
    let head = pinned_client(&node.url(""))
        .verified_block(1)
        .await
        .expect("the honest block verifies");
    let forged = pinned_client(&lying.url()).verified_block(1).await;
    assert!(matches!(&forged, Err(Error::Proof(_))), "{forged:?}");
    // What the liar changed is only the certificate: the rest verifies.
    let unchecked = pinned_client(&lying.url()).block(1).await.unwrap();
    assert_eq!(unchecked.block, head.block);
    assert_ne!(unchecked.commit, head.commit);
    let header = pinned_client(&node.url(""))
        .verified_header(1)
        .await
        .unwrap();
    assert!(trellis_sdk::verify_block(&unchecked, &header).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_verified_with_their_receipts_and_altered_answers_are_refused() {
    let node = DevNode::start().await.expect("dev node");
    let key = dev_account("supplier-t2/ops");
    let client = client_with(&node.url(""), key.clone());
    let (_, mut stream, signed) = three_remarks(&client, &key, "proven").await;
    client.send_signed_batch(&signed).await.unwrap();
    assert_commits_in_order(&mut stream, &signed).await;

    let genesis = Genesis::dev();
    let pinned = pinned_client(&node.url(""));
    for tx in &signed {
        let hash = tx.hash();
        let verified = pinned
            .transaction_with_proof(&hash)
            .await
            .expect("verified")
            .expect("committed");
        assert_eq!(&verified.tx, tx);
        assert_eq!(verified.receipt.status, ReceiptStatus::Success);
        let Some(TxStatus::Committed {
            height,
            index,
            receipt,
        }) = client.transaction(&hash).await.unwrap()
        else {
            panic!("{hash} is committed");
        };
        assert_eq!((verified.height, verified.index), (height, index));
        assert_eq!(verified.receipt, receipt);
        assert_eq!(
            verified.block_hash,
            client.header(height).await.unwrap().hash
        );
    }
    assert_eq!(
        pinned.transaction_with_proof(&Hash([9; 32])).await.unwrap(),
        None
    );
    // Trusting other validators, the same answer does not verify.
    let strangers = Client::builder()
        .endpoint(node.url(""))
        .signer(regulator())
        .chain_id(&genesis.chain_id)
        .validators([KeyPair::insecure_from_label("not a validator").public()])
        .build()
        .unwrap();
    let refused = strangers.transaction_with_proof(&signed[0].hash()).await;
    assert!(matches!(&refused, Err(Error::Proof(_))), "{refused:?}");

    // Answers altered on the way are refused.
    let hash = signed[1].hash();
    let answer = client.transaction_proof(&hash).await.unwrap().unwrap();
    let header = pinned.verified_header(answer.height).await.unwrap();
    let verify = |answer: &TxProofResponse, hash: &Hash| {
        trellis_sdk::verify_transaction(answer, hash, &header)
    };
    assert!(verify(&answer, &hash).is_ok());
    let mut failed = answer.clone();
    failed.receipt.status = ReceiptStatus::Failed;
    let mut other_events = answer.clone();
    other_events.receipt.events.clear();
    let mut other_sibling = answer.clone();
    match other_sibling.receipt_proof.siblings.first_mut() {
        Some(sibling) => sibling.0[0] ^= 1,
        // Alone in its block: a sibling where there is none.
        None => other_sibling.receipt_proof.siblings.push(Hash([1; 32])),
    }
    let mut moved = answer.clone();
    moved.index += 1;
    moved.tx_proof.index += 1;
    moved.receipt_proof.index += 1;
    let mut forged_signature = answer.clone();
    forged_signature.tx.signature.0[0] ^= 1;
    let mut other_tx = answer.clone();
    other_tx.tx = signed[0].clone();
    let mut other_height = answer.clone();
    other_height.height += 1;
    for (what, altered, why) in [
        ("a failure for a success", &failed, "receipts root"),
        (
            "a receipt without its events",
            &other_events,
            "receipts root",
        ),
        ("a damaged receipt proof", &other_sibling, "receipt"),
        ("another place", &moved, "transaction"),
        ("a forged signature", &forged_signature, "transaction"),
        ("another transaction", &other_tx, "another transaction"),
        ("another height", &other_height, "height"),
    ] {
        let verdict = verify(altered, &hash);
        assert!(
            matches!(&verdict, Err(Error::Proof(m)) if m.contains(why)),
            "{what}: {verdict:?}"
        );
    }
    let asked_for_another = verify(&answer, &signed[0].hash());
    assert!(matches!(asked_for_another, Err(Error::Proof(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_verified_whole_and_an_altered_body_or_receipt_is_refused() {
    let node = DevNode::start().await.expect("dev node");
    let key = dev_account("supplier-t3/ops");
    let client = client_with(&node.url(""), key.clone());
    let (_, mut stream, signed) = three_remarks(&client, &key, "a block").await;
    client.send_signed_batch(&signed).await.unwrap();
    assert_commits_in_order(&mut stream, &signed).await;
    let Some(TxStatus::Committed { height, .. }) =
        client.transaction(&signed[2].hash()).await.unwrap()
    else {
        panic!("committed");
    };

    let pinned = pinned_client(&node.url(""));
    let block = pinned.verified_block(height).await.expect("verified");
    assert!(block.block.txs.contains(&signed[2]));
    assert_eq!(block, pinned.block(height).await.unwrap());
    pinned
        .verified_block(0)
        .await
        .expect("the genesis block verified");

    let header = pinned.verified_header(height).await.unwrap();
    assert!(trellis_sdk::verify_block(&block, &header).is_ok());
    let mut failed = block.clone();
    failed.receipts[0].status = ReceiptStatus::Failed;
    let mut dropped = block.clone();
    dropped.block.txs.pop();
    dropped.receipts.pop();
    let mut reordered = block.clone();
    match reordered.receipts.len() {
        1 => reordered.receipts[0].tx = Hash([5; 32]),
        _ => reordered.receipts.reverse(),
    }
    let mut no_receipts = block.clone();
    no_receipts.receipts.clear();
    let mut other_header = block.clone();
    other_header.block.header.timestamp_ms += 1;
    let mut other_parent_commit = block.clone();
    other_parent_commit.block.parent_commit.round += 1;
    for (what, altered, why) in [
        ("a failure for a success", &failed, "receipts"),
        ("a transaction left out", &dropped, "tx_root"),
        ("receipts out of order", &reordered, "receipts"),
        ("no receipts", &no_receipts, "receipts"),
        ("another header", &other_header, "not the one"),
        ("another parent certificate", &other_parent_commit, "parent"),
    ] {
        let verdict = trellis_sdk::verify_block(altered, &header);
        assert!(
            matches!(&verdict, Err(Error::Proof(m)) if m.contains(why)),
            "{what}: {verdict:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_verify_only_with_a_quorum_of_the_trusted_validators_for_this_chain() {
    let node = node_past_genesis().await;
    let genesis = Genesis::dev();
    let trusting = |validators: Vec<PublicKey>, chain_id: &str| {
        Client::builder()
            .endpoint(node.url(""))
            .signer(regulator())
            .validators(validators)
            .chain_id(chain_id)
            .build()
            .unwrap()
    };
    // Headers are public: a client of another chain reads them unsigned (a
    // signed request for another chain the node refuses, below).
    let other_chain = Client::builder()
        .endpoint(node.url(""))
        .validators(genesis.validator_keys())
        .chain_id("another-chain")
        .build()
        .unwrap();
    let pinned = trusting(genesis.validator_keys(), &genesis.chain_id);
    let head = pinned.status().await.unwrap().status.height;
    let header = pinned.verified_header(head).await.expect("verified");
    assert_eq!(header, pinned.block(head).await.unwrap().block.header);
    // The genesis block has no precommits: it is verified as block 1's parent.
    let zero = pinned.verified_header(0).await.expect("genesis verified");
    assert_eq!(zero.hash(), pinned.header(1).await.unwrap().header.parent);
    assert!(pinned.state_with_proof(b"sys/params").await.is_ok());
    // A client that asks the node for the validators verifies the same.
    let asking = core_client(&node);
    assert_eq!(asking.verified_header(head).await.unwrap(), header);

    // Trusting other validators, or another chain, nothing verifies.
    let stranger = KeyPair::insecure_from_label("not a validator").public();
    let strangers = trusting(vec![stranger], &genesis.chain_id);
    for (who, client, why) in [
        ("other validators", &strangers, "not a validator"),
        ("another chain", &other_chain, "of chain `"),
    ] {
        for read in [
            client.verified_header(head).await.map(drop),
            client.verified_header(0).await.map(drop),
        ] {
            assert!(
                matches!(&read, Err(Error::Proof(m)) if m.contains(why)),
                "{who}: {read:?}"
            );
        }
    }
    let read = strangers.state_with_proof(b"sys/params").await.map(drop);
    assert!(
        matches!(&read, Err(Error::Proof(m)) if m.contains("not a validator")),
        "{read:?}"
    );
    // A state read is signed for the client's chain: another chain's
    // signature the node refuses before any proof is made.
    let signed_for_another = trusting(genesis.validator_keys(), "another-chain");
    let read = rejected(signed_for_another.state_with_proof(b"sys/params").await);
    assert_eq!(read, (401, "bad_signature".to_owned()));
    assert!(matches!(
        Client::builder()
            .endpoint(node.url(""))
            .chain_id(&genesis.chain_id)
            .validators([])
            .build(),
        Err(Error::Config(_))
    ));
    // Validators sign for whatever chain they validate: pinned without the
    // chain id, another chain's headers under the same keys would pass.
    let no_chain = Client::builder()
        .endpoint(node.url(""))
        .validators(genesis.validator_keys())
        .build();
    assert!(
        matches!(&no_chain, Err(Error::Config(m)) if m.contains("chain id")),
        "{no_chain:?}"
    );

    // Answers altered on the way are refused.
    let validators = ValidatorSet::new(genesis.validator_keys()).unwrap();
    let answer = pinned.header(head).await.unwrap();
    let verify = |answer: &HeaderResponse| {
        trellis_sdk::verify_header(answer, &genesis.chain_id, &validators)
    };
    assert!(verify(&answer).is_ok());
    let mut other_root = answer.clone();
    other_root.header.state_root = Hash([7; 32]);
    let mut other_root_rehashed = other_root.clone();
    other_root_rehashed.hash = other_root.header.hash();
    let mut older_commit = answer.clone();
    older_commit.commit = pinned.header(head - 1).await.unwrap().commit;
    let mut no_votes = answer.clone();
    no_votes.commit.votes.clear();
    let mut forged_vote = answer.clone();
    forged_vote.commit.votes[0].1.0[0] ^= 1;
    let genesis_answer = pinned.header(0).await.unwrap();
    for (what, altered, why) in [
        (
            "a header that does not hash to its hash",
            &other_root,
            "does not hash",
        ),
        ("another state root", &other_root_rehashed, "for block"),
        ("the parent's certificate", &older_commit, "for block"),
        ("a certificate without votes", &no_votes, "votes"),
        ("a forged precommit", &forged_vote, "does not verify"),
        ("the genesis header alone", &genesis_answer, "votes"),
    ] {
        let verdict = verify(altered);
        assert!(
            matches!(&verdict, Err(Error::Proof(m)) if m.contains(why)),
            "{what}: {verdict:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_resumes_after_a_dropped_connection_with_no_gap_and_no_duplicate() {
    let node = DevNode::start().await.expect("dev node");
    let proxy = TcpProxy::start(node.addr()).await.unwrap();
    let t2 = dev_account("supplier-t2/ops");
    let writer = member(&node, T2);
    let reader = Client::builder()
        .endpoint(proxy.url())
        .signer(t2.clone())
        .retry(RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        })
        .build()
        .unwrap();
    let mut stream = reader
        .events()
        .from_height(1)
        .sender(t2.public())
        .subscribe()
        .await
        .expect("subscribed through the proxy");

    let mut sent = Vec::new();
    let mut seen: Vec<CommittedTx> = Vec::new();
    for round in 0..3 {
        for i in 0..4 {
            let committed = writer
                .submit(remark(&format!("round {round} tx {i}")))
                .await
                .unwrap()
                .wait()
                .await
                .unwrap();
            sent.push(committed.tx_hash);
        }
        while seen.len() < sent.len() {
            let tx = tokio::time::timeout(DEADLINE, stream.next())
                .await
                .expect("the stream delivers within the deadline")
                .expect("the stream goes on")
                .expect("no error item");
            seen.push(tx);
        }
        // Cut the stream's connection mid-way; the next round arrives over a new one.
        assert!(proxy.cut() >= 1, "the stream had a connection to cut");
    }

    let positions: Vec<TxPosition> = seen.iter().map(CommittedTx::position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "in chain order, no duplicate: {positions:?}"
    );
    let hashes: Vec<_> = seen.iter().map(|t| t.tx_hash).collect();
    assert_eq!(hashes, sent, "exactly what was committed, in order");
    assert!(seen.iter().all(|t| t.sender == t2.public()));

    // Resuming after a saved position gives the rest, and nothing before it.
    let mut resumed = reader
        .events()
        .after(positions[5])
        .sender(t2.public())
        .subscribe()
        .await
        .unwrap();
    for expected in &hashes[6..] {
        let tx = resumed.next().await.unwrap().unwrap();
        assert_eq!(&tx.tx_hash, expected);
    }
}

/// An answer or an event message longer than the client's limit is an
/// error saying so (the stream ends), instead of being held however long it
/// grows; the node and other clients go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_past_the_clients_limits_end_in_decode_errors() {
    let node = DevNode::start().await.expect("dev node");
    let writer = member(&node, T2);
    let reader = member(&node, T2);
    let tight = Client::builder()
        .endpoint(node.url(""))
        .max_response_bytes(16)
        .build()
        .unwrap();
    let message = decode_error(tight.status().await);
    assert!(message.contains("longer than 16 bytes"), "{message}");
    reader.status().await.expect("the node answers others");
    let mut small = reader
        .events()
        .from_height(1)
        .max_message_bytes(64)
        .subscribe()
        .await
        .unwrap();
    let mut usual = reader.events().from_height(1).subscribe().await.unwrap();
    let committed = writer
        .submit(remark("longer than 64 bytes once it is JSON"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();

    let item = tokio::time::timeout(DEADLINE, small.next())
        .await
        .expect("the stream answers within the deadline")
        .expect("an item before the end");
    let message = decode_error(item);
    assert!(message.contains("longer than 64 bytes"), "{message}");
    assert!(small.next().await.is_none(), "the stream ended");
    loop {
        let tx = tokio::time::timeout(DEADLINE, usual.next())
            .await
            .expect("the usual stream delivers within the deadline")
            .expect("the usual stream goes on")
            .expect("no error item");
        if tx.tx_hash == committed.tx_hash {
            break;
        }
    }
}

/// A node that cannot read a committed block ends the stream saying why,
/// and the SDK passes that on instead of reconnecting into it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_node_cannot_go_on_with_ends_with_the_nodes_error() {
    let mut node = DevNode::start().await.expect("dev node");
    let client = core_client(&node);
    let committed = client
        .submit(remark("its receipt will be damaged"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    // Blocks after it, so that it is not among those the node reads at start.
    for n in 0..5 {
        let later = client.submit(remark(&format!("later {n}"))).await.unwrap();
        later.wait().await.unwrap();
    }
    node.stop().await.unwrap();
    // Its block's first receipt group (storage `prefix::RECEIPTS`, 0x04,
    // then the height and the group, big-endian) overwritten in the store.
    let store = trellis_node::storage::sled_config(&node.data_dir().join("chain"))
        .open()
        .unwrap();
    let mut key = vec![0x04];
    key.extend(committed.height.to_be_bytes());
    key.extend(0u32.to_be_bytes());
    assert!(store.contains_key(&key).unwrap(), "the receipts' key");
    store.insert(key, b"damaged".as_slice()).unwrap();
    store.flush().unwrap();
    drop(store);
    node.resume().await.unwrap();

    let mut stream = core_client(&node)
        .events()
        .from_height(committed.height)
        .subscribe()
        .await
        .unwrap();
    let item = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("an item within the deadline")
        .expect("an item before the end");
    match item {
        Err(Error::Server { code, message, .. }) => {
            assert_eq!(code, "internal");
            assert!(message.contains("reading block"), "{message}");
        }
        other => panic!("expected the node's error, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "the stream ended");
}

/// 10,000.00 CNY to tier 1 against `invoice`, maturing in an hour.
fn to_tier_1(invoice: &[u8]) -> rcv::Issue {
    rcv::Issue {
        to: T1.into(),
        amount: 1_000_000,
        currency: "CNY".into(),
        maturity_ms: now_ms() + 3_600_000,
        invoice_hash: trellis_sdk::invoice_hash(invoice),
        terms: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_filters_by_kind_and_party() {
    let node = DevNode::start().await.expect("dev node");
    let address = receivables_address();
    let core = member(&node, CORE).receivables(address);
    let t1 = member(&node, T1).receivables(address);
    let watcher = core_client(&node);
    let mut to_t2 = watcher.events().party(T2).subscribe().await.unwrap();
    let mut splits = watcher.events().kind("split").subscribe().await.unwrap();

    let root = core.issue(&to_tier_1(b"INV-STREAM")).await.unwrap().value;
    t1.accept(root).await.unwrap();
    let split = t1
        .split(&rcv::Split {
            piece: root,
            parts: vec![(T2.into(), 400_000)],
        })
        .await
        .unwrap();

    let first = to_t2.next().await.unwrap().unwrap();
    assert_eq!(
        first.tx_hash, split.tx_hash,
        "tier 2 first appears in the split"
    );
    let first = splits.next().await.unwrap().unwrap();
    assert_eq!(first.tx_hash, split.tx_hash);
    assert_eq!(first.events[0].kind, "split");
}

/// A core enterprise follows its paper and a supplier its pieces through
/// `party` alone, including the changes others make: acceptance, splits and
/// transfers by holders, a freeze and its lifting by the consortium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_party_follows_every_change_to_its_paper_on_its_own_stream() {
    let node = DevNode::start().await.expect("dev node");
    let address = receivables_address();
    let core = member(&node, CORE).receivables(address);
    let t1 = member(&node, T1).receivables(address);
    let admin = member(&node, "consortium").receivables(address);
    let watcher = core_client(&node);
    let mut core_stream = watcher.events().party(CORE).subscribe().await.unwrap();
    let mut t3_stream = watcher.events().party(T3).subscribe().await.unwrap();

    let issued = core.issue(&to_tier_1(b"INV-FOLLOW")).await.unwrap();
    let root = issued.value;
    let accepted = t1.accept(root).await.unwrap();
    let split = t1
        .split(&rcv::Split {
            piece: root,
            parts: vec![(T2.into(), 400_000)],
        })
        .await
        .unwrap();
    // The remainder comes last; tier 1 keeps it (and no longer sees the
    // piece it passed on).
    let kept = *split.value.last().expect("a split returns pieces");
    assert_eq!(t1.piece(kept).await.unwrap().piece.holder, T1);
    let passed = rejected(t1.piece(split.value[0]).await);
    assert_eq!(passed, (422, "not_found".to_owned()));
    let transferred = t1
        .transfer(&rcv::Transfer {
            piece: kept,
            to: T3.into(),
        })
        .await
        .unwrap();
    let frozen = admin
        .freeze(&rcv::FreezePiece {
            piece: kept,
            reason: "audit".into(),
        })
        .await
        .unwrap();
    let unfrozen = admin.unfreeze(kept).await.unwrap();

    let next = async |stream: &mut EventStream| {
        let tx = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("a transaction within the deadline")
            .expect("the stream goes on")
            .expect("a transaction");
        (tx.tx_hash, tx.events[0].kind.clone())
    };
    for (tx_hash, kind) in [
        (issued.tx_hash, "issued"),
        (accepted.tx_hash, "accepted"),
        (split.tx_hash, "split"),
        (transferred.tx_hash, "transferred"),
        (frozen.tx_hash, "frozen"),
        (unfrozen.tx_hash, "unfrozen"),
    ] {
        assert_eq!(
            next(&mut core_stream).await,
            (tx_hash, kind.into()),
            "the issuer's stream"
        );
    }
    for (tx_hash, kind) in [
        (transferred.tx_hash, "transferred"),
        (frozen.tx_hash, "frozen"),
        (unfrozen.tx_hash, "unfrozen"),
    ] {
        assert_eq!(
            next(&mut t3_stream).await,
            (tx_hash, kind.into()),
            "the holder's stream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openssl_key_signs_transactions_the_node_accepts_and_sdk_signatures_verify_with_openssl()
{
    let node = DevNode::start().await.expect("dev node");
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("openssl.pem");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", path(&pem)]);
    let key = trellis_sdk::keys::load(&pem, None).expect("OpenSSL's key loads");

    // Its public key is the one OpenSSL derives.
    let der = dir.path().join("openssl.pub.der");
    openssl(&[
        "pkey",
        "-in",
        path(&pem),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        path(&der),
    ]);
    let spki = std::fs::read(&der).unwrap();
    assert_eq!(&spki[spki.len() - 32..], key.public().as_bytes());

    // core-acme's admin registers the key; then it signs a transaction that commits.
    let admin = core_client(&node);
    admin
        .submit(Payload::System(SystemOp::AddKey {
            key: key.public(),
            org_admin: false,
        }))
        .await
        .unwrap()
        .wait()
        .await
        .expect("key added");
    let client = client_with(&node.url(""), key.clone());
    let committed = client
        .submit(remark("signed by an OpenSSL key"))
        .await
        .expect("admitted")
        .wait()
        .await
        .expect("committed");
    assert_eq!(committed.receipt.status, ReceiptStatus::Success);

    // A signature the SDK makes verifies with OpenSSL over the transaction hash.
    let sdk_key = trellis_sdk::keys::generate();
    let pubkey = dir.path().join("sdk.pub.pem");
    std::fs::write(
        &pubkey,
        trellis_sdk::keys::public_key_pem(&sdk_key.public()).unwrap(),
    )
    .unwrap();
    let tx = Transaction {
        chain_id: "trellis-dev".into(),
        sender: sdk_key.public(),
        nonce: 0,
        expires_at_ms: now_ms() + 60_000,
        payload: remark("checked by openssl"),
    }
    .sign(&sdk_key);
    let (msg, sig) = (dir.path().join("msg.bin"), dir.path().join("sig.bin"));
    std::fs::write(&msg, tx.hash().as_bytes()).unwrap();
    std::fs::write(&sig, tx.signature.0).unwrap();
    let verify = |signature: &Path| {
        Command::new("openssl")
            .args([
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                path(&pubkey),
                "-rawin",
            ])
            .args(["-in", path(&msg), "-sigfile", path(signature)])
            .output()
            .expect("openssl runs")
    };
    let out = verify(&sig);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bad = tx.signature.0;
    bad[10] ^= 1;
    std::fs::write(&sig, bad).unwrap();
    assert!(
        !verify(&sig).status.success(),
        "OpenSSL refuses a bad signature"
    );

    // A key the SDK saves is one OpenSSL reads, with the same public key.
    let saved = dir.path().join("sdk.pem");
    trellis_sdk::keys::save(&saved, &sdk_key, None).unwrap();
    let der = dir.path().join("sdk.pub.der");
    openssl(&[
        "pkey",
        "-in",
        path(&saved),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        path(&der),
    ]);
    let spki = std::fs::read(&der).unwrap();
    assert_eq!(&spki[spki.len() - 32..], sdk_key.public().as_bytes());
}

#[test]
fn encrypted_key_files_round_trip_with_openssl_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = trellis_sdk::keys::generate();
    let file = dir.path().join("locked.pem");
    trellis_sdk::keys::save(&file, &key, Some(b"correct horse")).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the owner may read a key file");
    }

    let back = trellis_sdk::keys::load(&file, Some(b"correct horse")).unwrap();
    assert_eq!(back.public(), key.public());
    assert!(matches!(
        trellis_sdk::keys::load(&file, Some(b"wrong")),
        Err(trellis_sdk::keys::KeyError::WrongPassword)
    ));
    assert!(matches!(
        trellis_sdk::keys::load(&file, None),
        Err(trellis_sdk::keys::KeyError::PasswordNeeded)
    ));
    assert!(matches!(
        trellis_sdk::keys::save(&file, &key, None),
        Err(trellis_sdk::keys::KeyError::Exists(_))
    ));
    // No secret in what a key shows of itself.
    let shown = format!("{key:?}");
    assert!(!shown.contains(&hex::encode(key.seed())));

    // OpenSSL reads the SDK's encrypted file, and the SDK reads OpenSSL's.
    let der = dir.path().join("pub.der");
    openssl(&[
        "pkey",
        "-in",
        path(&file),
        "-passin",
        "pass:correct horse",
        "-pubout",
        "-outform",
        "DER",
        "-out",
        path(&der),
    ]);
    let spki = std::fs::read(&der).unwrap();
    assert_eq!(&spki[spki.len() - 32..], key.public().as_bytes());
    let theirs = dir.path().join("theirs.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-aes-256-cbc",
        "-pass",
        "pass:s3cret",
        "-out",
        path(&theirs),
    ]);
    assert!(trellis_sdk::keys::load(&theirs, Some(b"s3cret")).is_ok());
    assert!(matches!(
        trellis_sdk::keys::load(&theirs, Some(b"nope")),
        Err(trellis_sdk::keys::KeyError::WrongPassword)
    ));

    // Not a key, or a key of another algorithm.
    assert!(matches!(
        trellis_sdk::keys::from_pem("hello", None),
        Err(trellis_sdk::keys::KeyError::Malformed(_))
    ));
    let x25519 = dir.path().join("x25519.pem");
    openssl(&["genpkey", "-algorithm", "x25519", "-out", path(&x25519)]);
    assert!(matches!(
        trellis_sdk::keys::load(&x25519, None),
        Err(trellis_sdk::keys::KeyError::NotEd25519(_))
    ));
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A chain exported from a stopped node and imported into a new store (each
/// block executed again, contract calls included) is the same chain: a node
/// on the new store serves the same blocks and paper, its holdings index
/// rebuilt, and goes on from the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_exported_and_imported_into_a_new_store_serves_the_same_paper_and_goes_on() {
    use trellis_node::archive::{Export, export_chain};
    let mut node = DevNode::start().await.expect("dev node");
    let address = receivables_address();
    let core = member(&node, CORE).receivables(address);
    let t1 = member(&node, T1).receivables(address);
    let root = core.issue(&to_tier_1(b"INV-EXPORT")).await.unwrap().value;
    t1.accept(root).await.unwrap();
    t1.split(&rcv::Split {
        piece: root,
        parts: vec![(T2.into(), 300_000)],
    })
    .await
    .unwrap();
    let tree = core.tree(root).await.unwrap();
    let t2_holdings = member(&node, T2)
        .receivables(address)
        .holdings(T2)
        .await
        .unwrap();
    let status = node.status().await.unwrap();
    node.stop().await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("chain.export");
    let store = trellis_tests::open_when_unlocked(&node.data_dir().join("chain")).unwrap();
    let head = store.head().unwrap();
    let hashes: Vec<_> = (0..=head.height)
        .map(|h| store.block(h).unwrap().unwrap().hash())
        .collect();
    export_chain(&store, &file).unwrap();
    drop(store);
    let imported_dir = work.path().join("imported");
    let store = trellis_node::storage::Storage::open(&imported_dir.join("chain")).unwrap();
    let report = Export::open(&file, &Genesis::dev())
        .unwrap()
        .import_into(&store, &Genesis::dev(), |_| {})
        .unwrap();
    assert_eq!(report.head, head, "the same head, state root included");
    assert!(report.head.height >= status.height);
    drop(store);

    let imported = DevNode::start_in(&imported_dir)
        .await
        .expect("a node on the imported store");
    for (height, hash) in (0..).zip(hashes) {
        assert_eq!(
            imported.block(height).await.unwrap().hash,
            hash,
            "block {height}"
        );
    }
    let address = receivables_address();
    let t1 = member(&imported, T1).receivables(address);
    let core = member(&imported, CORE).receivables(address);
    let t2 = member(&imported, T2).receivables(address);
    assert_eq!(core.tree(root).await.unwrap(), tree);
    assert_eq!(t2.holdings(T2).await.unwrap(), t2_holdings);
    let [rest] = &t1.holdings(T1).await.unwrap()[..] else {
        panic!("tier 1 holds the rest of the split");
    };
    t1.transfer(&rcv::Transfer {
        piece: rest.piece.id,
        to: T2.into(),
    })
    .await
    .expect("the imported chain takes new transactions");
    assert_eq!(t2.piece(rest.piece.id).await.unwrap().piece.holder, T2);
}
