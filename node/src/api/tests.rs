//! The API over real HTTP: a sled store in a temp dir holding the dev genesis,
//! a real mempool, the server on 127.0.0.1:0 and reqwest as the client.

use super::*;
use crate::execution::{self, AccountRecord};
use crate::node::now_ms;
use crate::state::Writes;
use crate::storage::Indexes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};
use trellis_genesis::{Genesis, dev_account};
use trellis_types::access::{MAX_CLOCK_SKEW_MS, RequestSignature};
use trellis_types::{
    Bytes, ChainParams, KeyPair, Payload, PublicKey, Receipt, SignedTransaction, SystemOp,
    Transaction, encode,
};

const MAX_BODY_BYTES: usize = 4096;
/// Reads that may hold a thread, and run or wait, at once.
const READ_THREADS: usize = 2;
const READS_ADMITTED: usize = 8;

/// The routes that read the store or run a query, within the read limit.
const STORE_READS: [(&str, &str); 11] = [
    ("/v1/transactions/{hash}", "get"),
    ("/v1/transactions/{hash}/proof", "get"),
    ("/v1/blocks/latest", "get"),
    ("/v1/blocks/{height}", "get"),
    ("/v1/blocks/{height}/header", "get"),
    ("/v1/blocks/by-hash/{hash}", "get"),
    ("/v1/state/{key}", "get"),
    ("/v1/contracts/{address}", "get"),
    ("/v1/contracts/{address}/query", "post"),
    ("/v1/proposals", "get"),
    ("/v1/proposals/{id}", "get"),
];

struct TestNode {
    url: String,
    client: reqwest::Client,
    api: Arc<ApiState>,
    chain_id: String,
    storage: Storage,
    mempool: Arc<Mempool>,
    status: tokio::sync::watch::Sender<ChainStatus>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _admission: crate::mempool::Worker,
    _dir: tempfile::TempDir,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl TestNode {
    async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    /// A node on the dev genesis whose mempool uses the genesis parameters as changed by `adjust`.
    async fn start_with(adjust: impl FnOnce(&mut ChainParams)) -> TestNode {
        Self::start_on(Genesis::dev(), None, adjust).await
    }

    /// A node on the dev genesis whose event streams use `config`.
    async fn start_streaming(config: EventStreamConfig) -> TestNode {
        Self::start_full(
            Genesis::dev(),
            None,
            |_| {},
            config,
            Indexes::default(),
            Access::Open,
        )
        .await
    }

    /// A node on the dev genesis whose store keeps `indexes`.
    async fn start_keeping(indexes: Indexes) -> TestNode {
        Self::start_full(
            Genesis::dev(),
            None,
            |_| {},
            EventStreamConfig::default(),
            indexes,
            Access::Open,
        )
        .await
    }

    /// A node on `genesis`; a genesis contract gets `code` if that is the code
    /// it names, else the code this build embeds.
    async fn start_on(
        genesis: Genesis,
        code: Option<Vec<u8>>,
        adjust: impl FnOnce(&mut ChainParams),
    ) -> TestNode {
        Self::start_full(
            genesis,
            code,
            adjust,
            EventStreamConfig::default(),
            Indexes::default(),
            Access::Open,
        )
        .await
    }

    async fn start_full(
        genesis: Genesis,
        code: Option<Vec<u8>>,
        adjust: impl FnOnce(&mut ChainParams),
        streams: EventStreamConfig,
        indexes: Indexes,
        access: Access,
    ) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open_with(dir.path(), 64 << 20, indexes).expect("open storage");
        let vm = Arc::new(Vm::new());
        let code_for = |contract: &trellis_genesis::GenesisContract| {
            code.clone()
                .filter(|code| crate::vm::code_hash(code) == contract.code_hash)
                .or_else(|| crate::chain::embedded_contract_code(contract))
        };
        let head = crate::chain::initialise_with(&storage, &genesis, &vm, code_for)
            .expect("initialise the chain");
        let mut params = genesis.params.clone();
        adjust(&mut params);
        let mempool = Arc::new(Mempool::new(genesis.chain_id.clone(), params));
        let (status_tx, status_rx) = tokio::sync::watch::channel(ChainStatus {
            height: head.height,
            block_hash: head.block_hash,
            state_root: head.state_root,
            last_block_time_ms: head.timestamp_ms,
            validator: true,
            ..ChainStatus::default()
        });
        let (admission, admission_worker) = crate::mempool::Batcher::start(
            mempool.clone(),
            storage.clone(),
            64,
            crate::node::now_ms,
            crate::priority::Priority::Normal,
        );
        let state = Arc::new(ApiState {
            chain_id: genesis.chain_id.clone(),
            genesis_hash: genesis.hash(),
            validators: validator_list(&genesis),
            storage: storage.clone(),
            mempool: mempool.clone(),
            admission,
            vm,
            status: status_rx,
            metrics: Arc::new(Metrics::new()),
            max_body_bytes: MAX_BODY_BYTES,
            reads: ReadLimit::new(READ_THREADS, READS_ADMITTED),
            access,
            replays: Replays::new(REPLAY_CAPACITY),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve_with(listener, state.clone(), streams, async move {
            let _ = shutdown_rx.await;
        }));
        TestNode {
            url,
            client: reqwest::Client::new(),
            api: state,
            chain_id: genesis.chain_id,
            storage,
            mempool,
            status: status_tx,
            shutdown: Some(shutdown_tx),
            served: Some(served),
            _admission: admission_worker,
            _dir: dir,
        }
    }

    fn tx(&self, key: &KeyPair, nonce: u64) -> SignedTransaction {
        self.tx_with(key, |tx| tx.nonce = nonce)
    }

    /// A remark from `key` with nonce 0, valid for a minute, as changed by `adjust`, signed by `key`.
    fn tx_with(&self, key: &KeyPair, adjust: impl FnOnce(&mut Transaction)) -> SignedTransaction {
        let mut tx = Transaction {
            chain_id: self.chain_id.clone(),
            sender: key.public(),
            nonce: 0,
            expires_at_ms: now_ms() + 60_000,
            payload: Payload::System(SystemOp::Remark {
                data: b"api test".to_vec().into(),
            }),
        };
        adjust(&mut tx);
        tx.sign(key)
    }

    async fn post(&self, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
        self.post_to("/v1/transactions", content_type, body).await
    }

    async fn post_to(&self, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("valid status");
        (status, response.json().await.expect("JSON response body"))
    }

    /// Posts `txs` (each already encoded) as one binary batch.
    async fn submit_batch(&self, txs: &[Vec<u8>]) -> (StatusCode, Value) {
        let list: Vec<Bytes> = txs.iter().map(|tx| Bytes(tx.clone())).collect();
        self.post_to(
            "/v1/transactions/batch",
            "application/octet-stream",
            encode(&list),
        )
        .await
    }

    async fn submit(&self, tx: &SignedTransaction) -> (StatusCode, Value) {
        self.post("application/octet-stream", encode(tx)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("valid status");
        (status, response.json().await.expect("JSON response body"))
    }

    /// Posts `body` and asserts it is refused with `status` and `code`, leaving the mempool as it was.
    async fn assert_refused(
        &self,
        content_type: &str,
        body: Vec<u8>,
        status: StatusCode,
        code: &str,
    ) {
        let before = self.mempool.len();
        let (got_status, got) = self.post(content_type, body).await;
        assert_eq!(
            (got_status, got["code"].as_str()),
            (status, Some(code)),
            "response: {got}"
        );
        assert!(
            got["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message in {got}"
        );
        assert_eq!(
            self.mempool.len(),
            before,
            "a refused transaction entered the mempool"
        );
    }

    async fn assert_tx_refused(&self, tx: &SignedTransaction, status: StatusCode, code: &str) {
        self.assert_refused("application/octet-stream", encode(tx), status, code)
            .await;
    }

    /// Commits a block straight to storage (no consensus) carrying `txs` and `writes`.
    fn commit(&self, txs: Vec<SignedTransaction>, writes: Writes) {
        crate::storage::tests::commit(&self.storage, txs, writes);
    }

    /// Writes an account record, e.g. to move an account's nonce on.
    fn account_write(key: &PublicKey, record: &AccountRecord) -> Writes {
        Writes::from([(execution::keys::account(key), Some(encode(record)))])
    }

    fn account(&self, key: &PublicKey) -> AccountRecord {
        execution::account(&self.storage, key)
            .expect("read account")
            .expect("account exists")
    }

    /// Commits `tx` of `key` in a block, its sender's next nonce after it.
    fn commit_sent(&self, key: &KeyPair, tx: &SignedTransaction) {
        let record = AccountRecord {
            nonce: tx.tx.nonce + 1,
            ..self.account(&key.public())
        };
        self.commit(
            vec![tx.clone()],
            TestNode::account_write(&key.public(), &record),
        );
    }
}

fn acme() -> KeyPair {
    dev_account("core-acme/ops")
}

/// A read of the latest state that a new block's staging overlaps is run
/// again, so that its answer is of one height (a query listing a holder's
/// pieces could otherwise read the index of one height and the pieces of
/// the next); a read that blocks keep overlapping is 503 `busy`.
#[tokio::test]
async fn a_read_overlapped_by_a_new_block_is_run_again_at_one_height() {
    let node = TestNode::start().await;
    let before = node.storage.head().unwrap().height;
    let mut runs = 0;
    let height = at_one_head(&node.storage, |head| {
        runs += 1;
        if runs == 1 {
            node.commit(vec![], Writes::new());
        }
        head.height
    })
    .unwrap();
    assert_eq!((runs, height), (2, before + 1));
    let busy = at_one_head(&node.storage, |_| node.commit(vec![], Writes::new())).unwrap_err();
    assert_eq!(
        (busy.status, &*busy.code),
        (StatusCode::SERVICE_UNAVAILABLE, "busy")
    );
}

// ---------------------------------------------------------------------------
// Submission: accepted

#[tokio::test]
async fn a_good_transaction_is_accepted_and_then_pending() {
    let node = TestNode::start().await;
    let tx = node.tx(&acme(), 0);
    let (status, body) = node.submit(&tx).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({ "tx_hash": tx.hash().to_hex() }));
    assert_eq!(node.mempool.len(), 1);

    let (status, body) = node.get(&format!("/v1/transactions/{}", tx.hash())).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "status": "pending" }))
    );
}

#[tokio::test]
async fn a_transaction_is_accepted_as_hex_in_json() {
    let node = TestNode::start().await;
    let tx = node.tx(&acme(), 0);
    let body =
        serde_json::to_vec(&json!({ "signed_tx": format!("0x{}", hex::encode(encode(&tx))) }))
            .unwrap();
    let (status, body) = node.post("application/json; charset=utf-8", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["tx_hash"], tx.hash().to_hex());
    assert!(node.mempool.contains(&tx.hash()));
}

/// Every kind of verdict in one batch: good, a duplicate of a batch-mate, a
/// bad signature, an unknown sender, a nonce too far ahead, bytes that do not
/// decode, and a second good one.
fn mixed_batch(node: &TestNode) -> Vec<Vec<u8>> {
    let good = node.tx(&acme(), 0);
    let mut forged = node.tx(&dev_account("supplier-t1/ops"), 0);
    forged.signature = good.signature;
    let gap = Genesis::dev().params.max_nonce_gap;
    vec![
        encode(&good),
        encode(&good),
        encode(&forged),
        encode(&node.tx(&KeyPair::insecure_from_label("not a member"), 0)),
        encode(&node.tx(&dev_account("bank-first/ops"), gap)),
        vec![1, 2, 3],
        encode(&node.tx(&acme(), 1)),
    ]
}

#[tokio::test]
async fn a_batch_gets_for_each_transaction_what_a_single_submission_gets() {
    let node = TestNode::start().await;
    let txs = mixed_batch(&node);
    let (status, body) = node.submit_batch(&txs).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The same bytes one by one to a twin node.
    let singly = TestNode::start().await;
    let mut expected = Vec::new();
    for tx in txs.clone() {
        let (status, body) = singly.post("application/octet-stream", tx).await;
        expected.push(if status == StatusCode::ACCEPTED {
            json!({ "status": 202, "tx_hash": body["tx_hash"] })
        } else {
            json!({ "status": status.as_u16(), "error": body })
        });
    }
    assert_eq!(body, json!({ "results": expected }));
    let codes: Vec<&str> = expected
        .iter()
        .filter_map(|v| v["error"]["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        [
            "already_known",
            "bad_signature",
            "unknown_sender",
            "nonce_too_far_ahead",
            "malformed"
        ]
    );
    assert_eq!(node.mempool.len(), 2);
    for tx in [&txs[0], &txs[6]] {
        let tx: SignedTransaction = trellis_types::decode(tx).unwrap();
        assert!(node.mempool.contains(&tx.hash()));
    }
}

#[tokio::test]
async fn a_batch_is_accepted_as_hex_in_json() {
    let node = TestNode::start().await;
    let txs = [node.tx(&acme(), 0), node.tx(&acme(), 1)];
    let body = json!({ "signed_txs": [
        format!("0x{}", hex::encode(encode(&txs[0]))),
        hex::encode(encode(&txs[1])),
    ]});
    let (status, body) = node
        .post_to(
            "/v1/transactions/batch",
            "application/json",
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hashes: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["tx_hash"].as_str().unwrap())
        .collect();
    assert_eq!(hashes, [txs[0].hash().to_hex(), txs[1].hash().to_hex()]);
    assert_eq!(node.mempool.len(), 2);
}

#[tokio::test]
async fn a_batch_that_cannot_be_read_is_refused_whole_and_admits_nothing() {
    let node = TestNode::start().await;
    let good = encode(&node.tx(&acme(), 0));
    let list = |items: Vec<Vec<u8>>| encode(&items.into_iter().map(Bytes).collect::<Vec<_>>());
    let mut trailing = list(vec![good.clone()]);
    trailing.push(0);
    let json = |body: Value| body.to_string().into_bytes();
    let binary = "application/octet-stream";
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (binary, list(vec![]), StatusCode::BAD_REQUEST, "malformed"),
        (binary, good.clone(), StatusCode::BAD_REQUEST, "malformed"),
        (binary, trailing, StatusCode::BAD_REQUEST, "malformed"),
        (binary, Vec::new(), StatusCode::BAD_REQUEST, "malformed"),
        (
            binary,
            list(vec![vec![0]; MAX_BATCH_TXS + 1]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_transactions",
        ),
        // Refused on its count alone, before the entries are read.
        (
            binary,
            list(vec![vec![0]; 5_000])[..8].to_vec(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_transactions",
        ),
        // Refused at the entry past the limit, before the (unfinished) rest.
        (
            "application/json",
            format!("{{\"signed_txs\": [{}", "\"\",".repeat(MAX_BATCH_TXS + 100)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_transactions",
        ),
        (
            binary,
            list(vec![vec![0; MAX_BODY_BYTES]]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized",
        ),
        (
            "application/json",
            json(json!({ "signed_txs": [hex::encode(&good), "zz"] })),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "application/json",
            json(json!({ "signed_tx": hex::encode(&good) })),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "text/plain",
            list(vec![good]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let (got_status, got) = node
            .post_to("/v1/transactions/batch", content_type, body)
            .await;
        assert_eq!(
            (got_status, got["code"].as_str()),
            (status, Some(code)),
            "{got}"
        );
        assert!(
            got["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{got}"
        );
    }
    assert_eq!(node.mempool.len(), 0);
    // The node still admits the same transaction afterwards.
    let (status, body) = node.submit_batch(&[encode(&node.tx(&acme(), 0))]).await;
    assert_eq!(
        (status, &body["results"][0]["status"]),
        (StatusCode::OK, &json!(202)),
        "{body}"
    );
}

#[tokio::test]
async fn a_committed_transaction_reports_its_height_index_and_receipt() {
    let node = TestNode::start().await;
    let key = acme();
    let tx = node.tx(&key, 0);
    node.commit_sent(&key, &tx);

    let (status, body) = node.get(&format!("/v1/transactions/{}", tx.hash())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "committed");
    assert_eq!(body["height"], 1);
    assert_eq!(body["index"], 0);
    assert_eq!(body["receipt"]["tx"], tx.hash().to_hex());
}

#[tokio::test]
async fn a_node_without_indexes_says_so_where_an_index_would_answer() {
    let node = TestNode::start_keeping(Indexes::NONE).await;
    let assert_not_indexed = |(status, body): (StatusCode, Value), index: &str| {
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_IMPLEMENTED, Some("not_indexed")),
            "{body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("{index} index")), "{body}");
    };
    let (status, body) = node.get("/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["indexes"],
        json!({ "transactions": false, "queries": false })
    );

    // A pending transaction is found in the mempool; a committed one is not.
    let key = acme();
    let pending = node.tx(&key, 0);
    assert_eq!(node.submit(&pending).await.0, StatusCode::ACCEPTED);
    let (status, body) = node
        .get(&format!("/v1/transactions/{}", pending.hash()))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    let committed = node.tx(&key, 1);
    node.commit_sent(&key, &committed);
    for path in ["", "/proof"] {
        assert_not_indexed(
            node.get(&format!("/v1/transactions/{}{path}", committed.hash()))
                .await,
            "transaction",
        );
    }

    // A query that lists through the contract's query index is refused, not
    // answered empty; one that reads state alone still answers.
    let receivables = Genesis::dev().contracts[0].address().to_hex();
    let by_holder = trellis_receivables::ByHolder {
        org: "supplier-t1".into(),
        after: None,
        limit: None,
    };
    let ask = |method: &str, args: String| json!({ "method": method, "args": args });
    assert_not_indexed(
        node.query(
            &receivables,
            ask("pieces_by_holder", hex::encode(encode(&by_holder))),
        )
        .await,
        "query",
    );
    let (status, body) = node
        .query(&receivables, ask("params", hex::encode(encode(&()))))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A transaction pruned without being committed reads as dropped, with
/// why, also on a node without the transaction index.
#[tokio::test]
async fn a_dropped_transaction_says_why_with_or_without_the_index() {
    for indexes in [Indexes::default(), Indexes::NONE] {
        let node = TestNode::start_keeping(indexes).await;
        // Nonce 1 while 0 is next: it waits, and expires before any block takes it.
        let expires_at_ms = now_ms() + 30_000;
        let gapped = node.tx_with(&acme(), |tx| {
            tx.nonce = 1;
            tx.expires_at_ms = expires_at_ms;
        });
        assert_eq!(node.submit(&gapped).await.0, StatusCode::ACCEPTED);
        let path = format!("/v1/transactions/{}", gapped.hash());
        node.mempool
            .prune(&node.storage, &[], expires_at_ms - 2)
            .unwrap();
        assert_eq!(node.get(&path).await.1["status"], "pending");
        node.mempool
            .prune(&node.storage, &[], expires_at_ms - 1)
            .unwrap();
        let (status, body) = node.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{indexes}: {body}");
        assert_eq!(
            body,
            json!({ "status": "dropped", "reason": "expired" }),
            "{indexes}"
        );
    }
}

#[tokio::test]
async fn an_unknown_transaction_is_not_found_and_a_bad_hash_is_malformed() {
    let node = TestNode::start().await;
    let (status, body) = node
        .get(&format!("/v1/transactions/{}", Hash([7; 32])))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = node.get("/v1/transactions/not-hex").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed"))
    );
}

// ---------------------------------------------------------------------------
// Submission: every class of refusal, and nothing enters the mempool

#[tokio::test]
async fn a_body_that_does_not_decode_is_malformed() {
    let node = TestNode::start().await;
    node.assert_refused(
        "application/octet-stream",
        vec![1, 2, 3],
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await;
    node.assert_refused(
        "application/octet-stream",
        Vec::new(),
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await;
    // Trailing bytes after a valid transaction.
    let mut bytes = encode(&node.tx(&acme(), 0));
    bytes.push(0);
    node.assert_refused(
        "application/octet-stream",
        bytes,
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await;
    // An unknown encoding version.
    let mut bytes = encode(&node.tx(&acme(), 0));
    bytes[0] ^= 0xff;
    node.assert_refused(
        "application/octet-stream",
        bytes,
        StatusCode::BAD_REQUEST,
        "malformed",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_or_hex_is_malformed() {
    let node = TestNode::start().await;
    for body in [
        &b"not json"[..],
        br#"{"signed_tx": "zz"}"#,
        br#"{"signed_tx": 5}"#,
        br#"{"tx": "00"}"#,
        br#"{"signed_tx": "0102"}"#,
    ] {
        node.assert_refused(
            "application/json",
            body.to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed",
        )
        .await;
    }
}

#[tokio::test]
async fn another_content_type_is_unsupported() {
    let node = TestNode::start().await;
    let bytes = encode(&node.tx(&acme(), 0));
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        node.assert_refused(
            content_type,
            bytes.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
        )
        .await;
    }
    // No Content-Type at all.
    let response = node
        .client
        .post(format!("{}/v1/transactions", node.url))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unsupported_content_type");
    assert_eq!(node.mempool.len(), 0);
}

#[tokio::test]
async fn a_bad_signature_is_unauthorised() {
    let node = TestNode::start().await;
    let mut bytes = encode(&node.tx(&acme(), 0));
    // The signature is the last 64 bytes; corrupt its R half.
    let at = bytes.len() - 64;
    bytes[at] ^= 0x01;
    node.assert_refused(
        "application/octet-stream",
        bytes,
        StatusCode::UNAUTHORIZED,
        "bad_signature",
    )
    .await;
    // Signed by another key than the sender's.
    let mut tx = node.tx(&acme(), 0);
    tx.signature = node.tx(&dev_account("supplier-t1/ops"), 0).signature;
    node.assert_tx_refused(&tx, StatusCode::UNAUTHORIZED, "bad_signature")
        .await;
}

/// A real non-canonical encoding: the nonce's varint written in two bytes
/// (`0x80 0x00`) instead of one (`0x00`). It decodes to the very same,
/// correctly signed transaction, and must still be refused.
#[tokio::test]
async fn an_overlong_varint_is_non_canonical() {
    let node = TestNode::start().await;
    let tx = node.tx(&acme(), 0);
    let mut bytes = encode(&tx);
    // version ‖ chain id (varint length < 128, then bytes) ‖ sender (32) ‖ nonce varint ‖ ...
    let at = 1 + 1 + node.chain_id.len() + 32;
    assert_eq!(bytes[at], 0x00, "the nonce 0 is one byte at {at}");
    bytes.splice(at..=at, [0x80, 0x00]);
    node.assert_refused(
        "application/octet-stream",
        bytes,
        StatusCode::BAD_REQUEST,
        "non_canonical",
    )
    .await;
}

/// The sender is the identity point, a small-order key. Admission checks
/// membership before the signature, so the key is first made an account.
#[tokio::test]
async fn a_weak_sender_key_is_refused() {
    let node = TestNode::start().await;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = PublicKey(identity);
    let record = AccountRecord {
        org: "core-acme".into(),
        org_admin: false,
        nonce: 0,
    };
    node.commit(Vec::new(), TestNode::account_write(&weak, &record));
    let tx = node.tx_with(&acme(), |tx| tx.sender = weak);
    node.assert_tx_refused(&tx, StatusCode::BAD_REQUEST, "weak_key")
        .await;
}

#[tokio::test]
async fn a_transaction_for_another_chain_is_refused() {
    let node = TestNode::start().await;
    let tx = node.tx_with(&acme(), |tx| tx.chain_id = "trellis-other".into());
    node.assert_tx_refused(&tx, StatusCode::BAD_REQUEST, "wrong_chain")
        .await;
}

#[tokio::test]
async fn expired_and_far_future_expiries_are_refused() {
    let node = TestNode::start().await;
    let tx = node.tx_with(&acme(), |tx| tx.expires_at_ms = now_ms() - 1_000);
    node.assert_tx_refused(&tx, StatusCode::BAD_REQUEST, "expired")
        .await;
    let max = Genesis::dev().params.max_expiry_ms;
    let tx = node.tx_with(&acme(), |tx| tx.expires_at_ms = now_ms() + max + 60_000);
    node.assert_tx_refused(&tx, StatusCode::BAD_REQUEST, "expiry_too_far")
        .await;
}

#[tokio::test]
async fn an_unknown_sender_is_forbidden() {
    let node = TestNode::start().await;
    let tx = node.tx(&KeyPair::insecure_from_label("not a member"), 0);
    node.assert_tx_refused(&tx, StatusCode::FORBIDDEN, "unknown_sender")
        .await;
}

#[tokio::test]
async fn a_regulator_may_not_send_transactions() {
    let node = TestNode::start().await;
    let tx = node.tx(&trellis_genesis::dev_account("regulator/ops"), 0);
    node.assert_tx_refused(&tx, StatusCode::FORBIDDEN, "read_only_sender")
        .await;
}

/// The account's committed nonce is moved to 1 by a block written straight to storage.
#[tokio::test]
async fn a_used_nonce_is_a_replay() {
    let node = TestNode::start().await;
    let key = acme();
    let record = AccountRecord {
        nonce: 1,
        ..node.account(&key.public())
    };
    node.commit(Vec::new(), TestNode::account_write(&key.public(), &record));
    node.assert_tx_refused(&node.tx(&key, 0), StatusCode::CONFLICT, "nonce_replayed")
        .await;
    let (status, body) = node.submit(&node.tx(&key, 1)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn a_second_submission_is_already_known_and_a_second_use_of_a_nonce_is_taken() {
    let node = TestNode::start().await;
    let tx = node.tx(&acme(), 0);
    assert_eq!(node.submit(&tx).await.0, StatusCode::ACCEPTED);
    node.assert_tx_refused(&tx, StatusCode::CONFLICT, "already_known")
        .await;
    let other = node.tx_with(&acme(), |tx| {
        tx.payload = Payload::System(SystemOp::Remark {
            data: b"other".to_vec().into(),
        })
    });
    node.assert_tx_refused(&other, StatusCode::CONFLICT, "nonce_taken")
        .await;
    assert_eq!(node.mempool.len(), 1);
}

#[tokio::test]
async fn a_nonce_too_far_ahead_is_unprocessable() {
    let node = TestNode::start().await;
    let gap = Genesis::dev().params.max_nonce_gap;
    node.assert_tx_refused(
        &node.tx(&acme(), gap),
        StatusCode::UNPROCESSABLE_ENTITY,
        "nonce_too_far_ahead",
    )
    .await;
    let (status, body) = node.submit(&node.tx(&acme(), gap - 1)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_oversized() {
    let node = TestNode::start().await;
    let big = vec![0u8; MAX_BODY_BYTES + 1];
    node.assert_refused(
        "application/octet-stream",
        big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "oversized",
    )
    .await;
    let json = serde_json::to_vec(&json!({ "signed_tx": "00".repeat(MAX_BODY_BYTES) })).unwrap();
    node.assert_refused(
        "application/json",
        json,
        StatusCode::PAYLOAD_TOO_LARGE,
        "oversized",
    )
    .await;
}

#[tokio::test]
async fn a_transaction_over_max_tx_bytes_is_oversized() {
    let node = TestNode::start_with(|p| p.max_tx_bytes = 200).await;
    let tx = node.tx_with(&acme(), |tx| {
        tx.payload = Payload::System(SystemOp::Remark {
            data: vec![7; 300].into(),
        })
    });
    node.assert_tx_refused(&tx, StatusCode::PAYLOAD_TOO_LARGE, "oversized")
        .await;
}

#[tokio::test]
async fn a_full_mempool_is_too_many_requests() {
    let node = TestNode::start_with(|p| p.mempool_capacity = 1).await;
    assert_eq!(
        node.submit(&node.tx(&acme(), 0)).await.0,
        StatusCode::ACCEPTED
    );
    let tx = node.tx(&dev_account("supplier-t1/ops"), 0);
    node.assert_tx_refused(&tx, StatusCode::TOO_MANY_REQUESTS, "mempool_full")
        .await;
}

#[tokio::test]
async fn a_full_sender_queue_is_too_many_requests() {
    let node = TestNode::start_with(|p| p.mempool_per_sender = 1).await;
    assert_eq!(
        node.submit(&node.tx(&acme(), 0)).await.0,
        StatusCode::ACCEPTED
    );
    node.assert_tx_refused(
        &node.tx(&acme(), 1),
        StatusCode::TOO_MANY_REQUESTS,
        "sender_queue_full",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Queries

#[tokio::test]
async fn block_zero_is_the_genesis_block_by_height_hash_and_as_latest() {
    let node = TestNode::start().await;
    let genesis = node.storage.block(0).unwrap().unwrap();
    for path in ["/v1/blocks/0", "/v1/blocks/latest"] {
        let response = node.client.get(format!("{}{path}", node.url)).send();
        let response = response.await.unwrap();
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }
    let (status, body) = node.get("/v1/blocks/0").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let by_height: BlockResponse = serde_json::from_value(body).expect("a BlockResponse");
    assert_eq!(by_height.block, genesis);
    assert_eq!(by_height.hash, genesis.hash());
    assert_eq!(by_height.commit.block, genesis.hash());
    assert!(by_height.receipts.is_empty());
    assert_eq!(by_height.block.header.chain_id, node.chain_id);

    let (_, latest) = node.get("/v1/blocks/latest").await;
    assert_eq!(
        serde_json::from_value::<BlockResponse>(latest).unwrap(),
        by_height
    );
    let (_, by_hash) = node
        .get(&format!("/v1/blocks/by-hash/{}", genesis.hash()))
        .await;
    assert_eq!(
        serde_json::from_value::<BlockResponse>(by_hash).unwrap(),
        by_height
    );
}

#[tokio::test]
async fn missing_or_malformed_blocks_are_errors() {
    let node = TestNode::start().await;
    for (path, status, code) in [
        (
            "/v1/blocks/1".to_owned(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/blocks/-1".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "/v1/blocks/99999999999999999999999".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            format!("/v1/blocks/by-hash/{}", Hash([3; 32])),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/blocks/by-hash/abcd".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        ("/v2/nothing".to_owned(), StatusCode::NOT_FOUND, "not_found"),
    ] {
        let (got, body) = node.get(&path).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_header_comes_with_its_commit_certificate_and_without_the_body() {
    let node = TestNode::start().await;
    node.commit_remarks(&acme(), 0, vec![vec![], vec![]]);
    for (path, height) in [
        ("/v1/blocks/0/header", 0),
        ("/v1/blocks/1/header", 1),
        ("/v1/blocks/latest/header", 1),
    ] {
        let (status, body) = node.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body.get("block").is_none() && body.get("receipts").is_none());
        let answer: HeaderResponse = serde_json::from_value(body).expect("a HeaderResponse");
        let block = node.storage.block(height).unwrap().unwrap();
        assert_eq!(answer.header, block.header, "{path}");
        assert_eq!(answer.hash, block.hash());
        let commit = node.storage.commit_certificate(height).unwrap().unwrap();
        assert_eq!(answer.commit, commit, "{path}");
        assert_eq!(answer.commit.block, answer.hash);
    }
    for (path, status, code) in [
        ("/v1/blocks/2/header", StatusCode::NOT_FOUND, "not_found"),
        (
            "/v1/blocks/first/header",
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        ("/v1/blocks/-1/header", StatusCode::BAD_REQUEST, "malformed"),
    ] {
        let (got, body) = node.get(path).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_transaction_proof_ties_the_transaction_and_its_receipt_to_the_header() {
    let node = TestNode::start().await;
    let key = acme();
    // Five transactions: the last leaf of an odd level is carried up.
    let txs = node.commit_remarks(&key, 0, vec![vec![]; 5]);
    let block = node.storage.block(1).unwrap().unwrap();
    let receipts = node.storage.block_receipts(&block).unwrap();
    for (index, tx) in txs.iter().enumerate() {
        let path = format!("/v1/transactions/{}/proof", tx.hash());
        let (status, body) = node.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let answer: TxProofResponse = serde_json::from_value(body).expect("a TxProofResponse");
        assert_eq!((answer.height, answer.index), (1, index as u32));
        assert_eq!((&answer.tx, &answer.receipt), (tx, &receipts[index]));
        let leaf = trellis_types::block::tx_leaf(&tx.hash(), &tx.signature);
        assert_eq!(
            answer.tx_proof.root(Domain::TxRoot, &leaf),
            Ok(block.header.tx_root)
        );
        assert_eq!(
            answer
                .receipt_proof
                .root(Domain::ReceiptRoot, &answer.receipt.hash()),
            Ok(block.header.receipts_root)
        );
    }

    let pending = node.tx(&key, 5);
    assert_eq!(node.submit(&pending).await.0, StatusCode::ACCEPTED);
    for (path, status, code) in [
        (
            format!("/v1/transactions/{}/proof", pending.hash()),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("/v1/transactions/{}/proof", Hash([7; 32])),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/transactions/not-hex/proof".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
    ] {
        let (got, body) = node.get(&path).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    let (_, body) = node
        .get(&format!("/v1/transactions/{}/proof", pending.hash()))
        .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("pending here"),
        "{body}"
    );
}

impl TestNode {
    /// `GET {path}` asking with `accept`: the status, `Content-Type`, `Vary` and body.
    async fn get_accepting(
        &self,
        path: &str,
        accept: &str,
    ) -> (StatusCode, String, String, Vec<u8>) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .expect("GET");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("valid status");
        let header = |name| {
            response
                .headers()
                .get(name)
                .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
        };
        let (content_type, vary) = (header(CONTENT_TYPE), header(reqwest::header::VARY));
        let body = response.bytes().await.expect("body").to_vec();
        (status, content_type, vary, body)
    }
}

#[tokio::test]
async fn blocks_come_in_their_canonical_encoding_when_the_request_accepts_it() {
    let node = TestNode::start().await;
    node.commit_remarks(
        &acme(),
        0,
        vec![vec![event("noted", &[("k", "v")])], vec![]],
    );
    let block = node.storage.block(1).unwrap().unwrap();
    let (_, json) = node.get("/v1/blocks/1").await;
    let expected: BlockResponse = serde_json::from_value(json).unwrap();
    assert_eq!(expected.block, block);
    assert_eq!(expected.receipts.len(), 2);
    let by_hash = format!("/v1/blocks/by-hash/{}", block.hash());
    for path in ["/v1/blocks/1", "/v1/blocks/latest", by_hash.as_str()] {
        for accept in [
            "application/octet-stream",
            "application/json;q=0.5, Application/Octet-Stream",
        ] {
            let (status, content_type, vary, body) = node.get_accepting(path, accept).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, "application/octet-stream", "{path} {accept}");
            assert_eq!(vary, "accept");
            let decoded: BlockResponse = trellis_types::decode(&body).expect("canonical bytes");
            assert_eq!(decoded, expected, "{path} {accept}");
        }
        for accept in ["application/json", "*/*", "application/octet-stream;q=0"] {
            let (status, content_type, vary, body) = node.get_accepting(path, accept).await;
            assert_eq!(
                (status, content_type.as_str()),
                (StatusCode::OK, "application/json")
            );
            assert_eq!(vary, "accept");
            assert_eq!(
                serde_json::from_slice::<BlockResponse>(&body).unwrap(),
                expected
            );
        }
    }
    // Errors stay JSON whatever was asked for.
    let (status, content_type, _, body) = node
        .get_accepting("/v1/blocks/9", "application/octet-stream")
        .await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::NOT_FOUND, "application/json")
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn a_block_request_that_waits_is_answered_when_the_block_commits() {
    let node = TestNode::start().await;
    let url = format!("{}/v1/blocks/1?wait_ms=20000", node.url);
    let waiting = tokio::spawn(node.client.get(url).send());
    // The request waits: nothing is committed yet, so it cannot have an answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "answered before block 1 committed");
    let txs = node.commit_remarks(&acme(), 0, vec![vec![]]);
    let response = waiting.await.unwrap().expect("GET");
    assert_eq!(response.status().as_u16(), 200);
    let block: BlockResponse = response.json().await.unwrap();
    assert_eq!(block.block.header.height, 1);
    assert_eq!(block.receipts[0].tx, txs[0].hash());
    // A committed block is answered at once, however long the wait asked for.
    let (status, body) = node.get("/v1/blocks/1?wait_ms=30000").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_block_wait_ends_with_not_found_when_the_block_does_not_commit() {
    let node = TestNode::start().await;
    let started = Instant::now();
    let (status, body) = node.get("/v1/blocks/2?wait_ms=300").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered before the wait ended"
    );
    // A block committed meanwhile, but not the one asked for, does not end the wait.
    let url = format!("{}/v1/blocks/2?wait_ms=400", node.url);
    let waiting = tokio::spawn(node.client.get(url).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.commit_remarks(&acme(), 0, vec![vec![]]);
    let response = waiting.await.unwrap().expect("GET");
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn shutting_down_answers_a_waiting_block_request_at_once() {
    let mut node = TestNode::start().await;
    let url = format!("{}/v1/blocks/1?wait_ms=30000", node.url);
    let waiting = tokio::spawn(node.client.get(url).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = node.shutdown.take().unwrap().send(());
    // Well before its 30 s are up.
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting).await;
    let response = answer.expect("answered on shutdown").unwrap().expect("GET");
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn malformed_block_waits_are_refused() {
    let node = TestNode::start().await;
    for query in ["wait_ms=30001", "wait_ms=-1", "wait_ms=soon", "wait=5"] {
        let (status, body) = node.get(&format!("/v1/blocks/1?{query}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("malformed")),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn block_waits_share_the_stream_slots_and_give_theirs_back() {
    let node = TestNode::with_stream_slots(1).await;
    // A wait gives its slot back before it answers, so the stream gets it.
    assert_eq!(
        node.get("/v1/blocks/1?wait_ms=50").await.0,
        StatusCode::NOT_FOUND
    );
    let stream = node.events("").await;
    let (status, body) = node.get("/v1/blocks/1?wait_ms=1000").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_streams")),
        "{body}"
    );
    // Without waiting, or for a committed block, no slot is needed.
    assert_eq!(node.get("/v1/blocks/1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        node.get("/v1/blocks/0?wait_ms=1000").await.0,
        StatusCode::OK
    );
    drop(stream);
}

/// A validator's two signed precommits for one step of `height`.
fn equivocation(chain_id: &str, height: u64) -> trellis_types::DuplicateVote {
    let key = KeyPair::insecure_from_label("equivocating validator");
    let vote = |block| {
        let data = trellis_types::VoteData {
            chain_id: chain_id.into(),
            height,
            round: 0,
            kind: trellis_types::VoteKind::Precommit,
            block,
        };
        data.sign(&key)
    };
    trellis_types::DuplicateVote {
        first: vote(None),
        second: vote(Some(Hash([height as u8; 32]))),
    }
}

#[tokio::test]
async fn recorded_equivocations_are_listed_once_each_from_a_height() {
    let node = TestNode::start().await;
    let (status, body) = node.get("/v1/evidence").await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "evidence": [] })));

    let (at_3, at_9) = (
        equivocation(&node.chain_id, 3),
        equivocation(&node.chain_id, 9),
    );
    assert!(node.storage.record_evidence(&at_9).unwrap());
    assert!(node.storage.record_evidence(&at_3).unwrap());
    // The same validator at the same height, even another proof, is not new.
    let mut again = at_3.clone();
    std::mem::swap(&mut again.first, &mut again.second);
    assert!(!node.storage.record_evidence(&again).unwrap());

    let listed = |body: Value| -> Vec<trellis_types::DuplicateVote> {
        serde_json::from_value(body["evidence"].clone()).expect("a list of proofs")
    };
    let (status, body) = node.get("/v1/evidence").await;
    assert_eq!(status, StatusCode::OK);
    let all = listed(body);
    assert_eq!(all, [at_3.clone(), at_9.clone()]);
    assert!(all.iter().all(|proof| proof.check().is_ok()));
    let (_, body) = node.get("/v1/evidence?from_height=4").await;
    assert_eq!(listed(body), std::slice::from_ref(&at_9));
    let (_, body) = node.get("/v1/evidence?limit=1").await;
    assert_eq!(listed(body), std::slice::from_ref(&at_3));
    // The next page goes on after the last proof shown.
    let next = format!(
        "/v1/evidence?limit=1&from_height=3&after_validator={}",
        at_3.second.voter
    );
    let (_, body) = node.get(&next).await;
    assert_eq!(listed(body), std::slice::from_ref(&at_9));

    for path in [
        "/v1/evidence?limit=101",
        "/v1/evidence?from_height=-1",
        "/v1/evidence?height=3",
        "/v1/evidence?after_validator=xyz",
    ] {
        let (status, body) = node.get(path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("malformed")),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_error() {
    let node = TestNode::start().await;
    let response = node
        .client
        .delete(format!("{}/health", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn state_reads_come_with_a_proof_that_verifies_against_the_root() {
    let node = TestNode::start().await;
    let key = execution::keys::PARAMS;
    let (status, body) = node
        .get(&format!("/v1/state/{}?proof=true", hex::encode(key)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let read: StateResponse = serde_json::from_value(body).expect("a StateResponse");
    let head = node.storage.head().unwrap();
    assert_eq!(
        (read.height, read.state_root),
        (head.height, head.state_root)
    );
    let value = read.value.clone().expect("sys/params is set");
    assert_eq!(value.0, encode(&Genesis::dev().params));
    let proof = read.proof.expect("asked for a proof");
    trellis_types::verify_state_proof(&read.state_root, key, Some(&value), &proof.proof)
        .expect("proof verifies");

    let mut altered = value.0.clone();
    altered[0] ^= 1;
    assert!(
        trellis_types::verify_state_proof(&read.state_root, key, Some(&altered), &proof.proof)
            .is_err()
    );
    assert!(trellis_types::verify_state_proof(&read.state_root, key, None, &proof.proof).is_err());
}

#[tokio::test]
async fn state_reads_prove_absence_default_to_no_proof_and_read_old_heights() {
    let node = TestNode::start().await;
    let (status, body) = node
        .get(&format!("/v1/state/{}?hieght=0", hex::encode(b"k")))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed")),
        "a misspelt parameter is refused, not ignored: {body}"
    );
    let (status, body) = node
        .get(&format!(
            "/v1/state/{}?proof=true",
            hex::encode(b"no/such/key")
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let read: StateResponse = serde_json::from_value(body).unwrap();
    assert_eq!(read.value, None);
    let proof = read.proof.unwrap();
    trellis_types::verify_state_proof(&read.state_root, b"no/such/key", None, &proof.proof)
        .unwrap();

    node.commit(
        Vec::new(),
        Writes::from([(b"test/key".to_vec(), Some(b"v1".to_vec()))]),
    );
    let (_, body) = node
        .get(&format!("/v1/state/{}", hex::encode(b"test/key")))
        .await;
    assert_eq!(body["value"], hex::encode(b"v1"));
    assert_eq!(body["height"], 1);
    assert_eq!(body["proof"], Value::Null);
    let (_, body) = node
        .get(&format!("/v1/state/{}?height=0", hex::encode(b"test/key")))
        .await;
    assert_eq!(
        (body["value"].clone(), body["height"].clone()),
        (Value::Null, json!(0))
    );

    for (path, status, code) in [
        (
            format!("/v1/state/{}?height=5", hex::encode(b"test/key")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/state/xyz".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            format!("/v1/state/{}?proof=maybe", hex::encode(b"k")),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        // A contract's query index has no proof to give.
        (
            format!("/v1/state/{}", hex::encode(b"q/any")),
            StatusCode::BAD_REQUEST,
            "not_in_state_tree",
        ),
    ] {
        let (got, body) = node.get(&path).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn status_and_health_answer() {
    let node = TestNode::start().await;
    let (status, body) = node.get("/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["chain_id"], node.chain_id);
    assert_eq!(body["genesis_hash"], Genesis::dev().hash().to_hex());
    assert_eq!(body["height"], 0);
    assert_eq!(
        body["block_hash"],
        node.storage.head().unwrap().block_hash.to_hex()
    );
    assert_eq!(body["validator"], true);
    assert_eq!(body["earliest_state_height"], 0, "a store never pruned");
    assert_eq!(
        body["indexes"],
        json!({ "transactions": true, "queries": true })
    );
    assert_eq!(
        node.get("/health").await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );
}

#[tokio::test]
async fn the_validator_set_is_the_genesis_s_with_its_quorum() {
    let node = TestNode::start().await;
    let (status, body) = node.get("/v1/validators").await;
    assert_eq!(status, StatusCode::OK);
    let dev = &Genesis::dev().validators[0];
    assert_eq!(
        body,
        json!({
            "validators": [{
                "name": dev.name,
                "org": dev.org,
                "consensus_key": dev.consensus_key.to_hex(),
                "node_key": dev.node_key.to_hex(),
            }],
            "quorum": 1,
        })
    );
    // Four validators tolerate one fault: a block needs three votes.
    let local = validator_list(&Genesis::local());
    assert_eq!(local.validators.len(), 4);
    assert_eq!(local.quorum, 3);
    let names: Vec<&str> = local.validators.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["validator-0", "validator-1", "validator-2", "validator-3"]
    );
    assert!(local.contains(&Genesis::local().validators[2].consensus_key));
    assert!(!local.contains(&dev.consensus_key));
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let node = TestNode::start().await;
    let (status, doc) = node.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let others = [
        ("/v1/transactions", "post"),
        ("/v1/transactions/batch", "post"),
        ("/status", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/events", "get"),
        ("/v1/validators", "get"),
    ];
    for (path, method) in STORE_READS.into_iter().chain(others) {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    // Reads and queries wait for the node's read threads, and may be busy.
    for (path, method) in STORE_READS {
        let responses = &doc["paths"][path][method]["responses"];
        assert!(responses["503"].is_object(), "{method} {path}: {responses}");
    }
    let submit = &doc["paths"]["/v1/transactions"]["post"];
    assert!(submit["requestBody"]["content"]["application/octet-stream"].is_object());
    assert!(submit["requestBody"]["content"]["application/json"].is_object());
    for status in [
        "202", "400", "401", "403", "409", "413", "415", "422", "429", "500",
    ] {
        assert!(
            submit["responses"][status].is_object(),
            "submit response {status} undocumented"
        );
    }
    for schema in [
        "ErrorBody",
        "BlockResponse",
        "StateResponse",
        "TxStatus",
        "DropReason",
        "ChainStatus",
        "SignedTransaction",
        "CommittedTx",
        "BatchSubmitted",
        "BatchVerdict",
        "TxProofResponse",
        "MerkleProof",
        "ProposalList",
        "ProposalInfo",
        "Change",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_report_the_mempool() {
    let node = TestNode::start().await;
    node.get("/health").await;
    node.get(&format!("/v1/blocks/by-hash/{}", Hash([3; 32])))
        .await;
    let tx = node.tx(&acme(), 0);
    node.submit(&tx).await;
    node.assert_tx_refused(&tx, StatusCode::CONFLICT, "already_known")
        .await;

    let response = node
        .client
        .get(format!("{}/metrics", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    for line in [
        "trellis_height",
        "trellis_mempool_size 1",
        r#"trellis_api_requests_total{route="/health",status="200"} 1"#,
        r#"trellis_api_requests_total{route="/v1/blocks/by-hash/{hash}",status="404"} 1"#,
        r#"trellis_api_requests_total{route="/v1/transactions",status="202"} 1"#,
        r#"trellis_admission_rejected_total{code="already_known"} 1"#,
        r#"trellis_api_latency_seconds_count{route="/health"} 1"#,
    ] {
        assert!(text.contains(line), "`{line}` missing from:\n{text}");
    }
}

#[tokio::test]
async fn a_read_past_the_admitted_limit_is_busy_and_the_next_one_is_served() {
    let node = TestNode::start().await;
    let places = node.api.reads.admitted.clone();
    let all = places
        .try_acquire_many_owned(READS_ADMITTED as u32)
        .expect("no read is running");
    let tx = format!("/v1/transactions/{}", "00".repeat(32));
    for path in ["/v1/blocks/latest", "/v1/blocks/0", "/v1/state/00", &tx] {
        let (status, body) = node.get(path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["code"], "busy", "{path}");
    }
    // What reads nothing from the store is not held up.
    assert_eq!(node.get("/status").await.0, StatusCode::OK);

    drop(all);
    let (status, body) = node.get("/v1/blocks/latest").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["block"]["header"]["height"], 0);
}

#[tokio::test]
async fn a_read_waits_for_a_free_thread_holding_its_place() {
    let node = TestNode::start().await;
    let threads = node.take_every_read_thread();
    let url = format!("{}/v1/blocks/0", node.url);
    let read = tokio::spawn(node.client.get(url).send());
    let places = &node.api.reads.admitted;
    let deadline = Instant::now() + Duration::from_secs(10);
    while places.available_permits() == READS_ADMITTED {
        assert!(Instant::now() < deadline, "the read never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(places.available_permits(), READS_ADMITTED - 1);
    assert!(!read.is_finished(), "a read ran with every thread taken");

    drop(threads);
    let response = read.await.expect("the read task").expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(places.available_permits(), READS_ADMITTED);
}

// ---------------------------------------------------------------------------
// Contracts

/// A node whose genesis deploys the WAT counter (step 5) and initialises it to 5.
async fn node_with_counter() -> (TestNode, trellis_types::Address) {
    let code = crate::vm::tests::counter_module(5);
    let mut genesis = Genesis::dev();
    genesis.contracts.push(trellis_genesis::GenesisContract {
        name: "counter".into(),
        code_hash: crate::vm::code_hash(&code),
        salt: Hash::ZERO,
        deployer: dev_account("consortium/ops").public(),
        calls: vec![trellis_genesis::GenesisCall {
            method: "init".into(),
            args: Bytes::default(),
        }],
    });
    let address = genesis.contracts.last().expect("just pushed").address();
    (
        TestNode::start_on(genesis, Some(code), |_| {}).await,
        address,
    )
}

impl TestNode {
    async fn query(&self, address: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/v1/contracts/{address}/query", self.url))
            .json(&body)
            .send()
            .await
            .expect("POST query");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("valid status");
        (status, response.json().await.expect("JSON response body"))
    }
}

#[tokio::test]
async fn a_deployed_contract_has_its_record_served() {
    let (node, address) = node_with_counter().await;
    let (status, body) = node.get(&format!("/v1/contracts/{address}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = crate::vm::tests::counter_module(5);
    assert_eq!(
        body,
        json!({
            "code_hash": crate::vm::code_hash(&code).to_hex(),
            "deployer": dev_account("consortium/ops").public().to_hex(),
            "deployed_at_height": 0,
            "upgraded_at_height": null,
        })
    );
    let (status, body) = node
        .get(&format!("/v1/contracts/{}", "ab".repeat(32)))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("contract_not_found"))
    );
    let (status, body) = node.get("/v1/contracts/xyz").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed"))
    );
}

#[tokio::test]
async fn a_contract_query_reads_committed_state() {
    let (node, address) = node_with_counter().await;
    let (status, body) = node
        .query(&address.to_hex(), json!({ "method": "get", "args": "" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], hex::encode(5u64.to_le_bytes()));
    assert_eq!(body["height"], 0);
    assert!(body["fuel_used"].as_u64().is_some_and(|f| f > 0));
    // `args` may be left out.
    let (status, _) = node
        .query(&address.to_hex(), json!({ "method": "get" }))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn contract_queries_refuse_writes_and_bad_requests_with_codes() {
    let (node, address) = node_with_counter().await;
    let address = address.to_hex();
    for (body, status, code) in [
        (
            json!({ "method": "write" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "trap",
        ),
        (
            json!({ "method": "nothing" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "trap",
        ),
        (
            json!({ "method": "get", "args": "zz" }),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            json!({ "method": "get", "extra": 1 }),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (json!({ "args": "" }), StatusCode::BAD_REQUEST, "malformed"),
    ] {
        let (got_status, got) = node.query(&address, body.clone()).await;
        assert_eq!(
            (got_status, got["code"].as_str()),
            (status, Some(code)),
            "{body}: {got}"
        );
    }
    let (status, body) = node
        .query(&"cd".repeat(32), json!({ "method": "get" }))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("contract_not_found"))
    );
    // The refused write left the state as it was.
    let (_, body) = node.query(&address, json!({ "method": "get" })).await;
    assert_eq!(body["result"], hex::encode(5u64.to_le_bytes()));

    // A body over the limit, or not JSON, is refused as a submission would be.
    let url = format!("{}/v1/contracts/{address}/query", node.url);
    let big = json!({ "method": "get", "args": "00".repeat(MAX_BODY_BYTES) });
    for (request, status, code) in [
        (
            node.client.post(&url).json(&big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "oversized",
        ),
        (
            node.client.post(&url).body(r#"{"method":"get"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status.as_u16());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{body}");
    }
}

// ---------------------------------------------------------------------------
// The event stream

/// One SSE message: its id and its data, decoded.
#[derive(Debug)]
struct SseMessage {
    id: String,
    tx: CommittedTx,
}

/// Reads Server-Sent Events off a streaming response, one message at a time.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// The next message, or `None` when the stream ends; fails after 10 s of silence.
    async fn next(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let tx = serde_json::from_str(&data).expect("a CommittedTx in data");
                return Some(SseMessage {
                    id: id.expect("every message has an id"),
                    tx,
                });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("a message or the end of the stream within 10 s")
                .expect("reading the stream");
            self.buffer
                .push_str(std::str::from_utf8(&chunk?).expect("UTF-8 stream"));
        }
    }

    /// Everything left until the stream ends, as text; fails after 10 s of silence.
    async fn rest(mut self) -> String {
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("the stream goes on or ends within 10 s")
                .expect("reading the stream");
            match chunk {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream")),
                None => return self.buffer,
            }
        }
    }

    /// The next `n` messages' ids.
    async fn ids(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(self.next().await.expect("another message").id);
        }
        ids
    }
}

impl TestNode {
    /// Opens `GET /v1/events{query}` with extra headers; the status and the stream.
    async fn events_with(
        &self,
        query: &str,
        last_event_id: Option<&str>,
    ) -> (StatusCode, SseReader) {
        let mut request = self.client.get(format!("{}/v1/events{query}", self.url));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("GET /v1/events");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("valid status");
        (
            status,
            SseReader {
                response,
                buffer: String::new(),
            },
        )
    }

    async fn events(&self, query: &str) -> SseReader {
        let (status, reader) = self.events_with(query, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reader.response.headers()[CONTENT_TYPE], "text/event-stream",);
        reader
    }

    /// Commits a block carrying `txs` with `receipts`, and tells the API, as the driver does.
    fn commit_receipts(&self, txs: Vec<SignedTransaction>, receipts: Vec<Receipt>) {
        let height = commit_block(&self.storage, &self.chain_id, txs, receipts, Writes::new());
        self.status.send_modify(|s| s.height = height);
    }

    /// Commits a block of remarks from `key` starting at `nonce`, one per event list.
    fn commit_remarks(
        &self,
        key: &KeyPair,
        nonce: u64,
        events: Vec<Vec<trellis_types::Event>>,
    ) -> Vec<SignedTransaction> {
        let txs: Vec<SignedTransaction> = (0..events.len() as u64)
            .map(|i| self.tx(key, nonce + i))
            .collect();
        let receipts = txs
            .iter()
            .zip(events)
            .map(|(tx, events)| Receipt {
                tx: tx.hash(),
                status: trellis_types::ReceiptStatus::Success,
                error: None,
                fuel_used: 1,
                events,
            })
            .collect();
        self.commit_receipts(txs.clone(), receipts);
        txs
    }
}

/// Commits the next block on `storage`, carrying `txs` with `receipts` and
/// making `writes` to the state; returns its height.
fn commit_block(
    storage: &Storage,
    chain_id: &str,
    txs: Vec<SignedTransaction>,
    receipts: Vec<Receipt>,
    writes: Writes,
) -> u64 {
    let head = storage.head().expect("initialised");
    let height = head.height + 1;
    let update = storage
        .prepare_state(height, writes)
        .expect("prepare_state");
    let parent_commit = trellis_types::QuorumCertificate::genesis(head.block_hash);
    let block = trellis_types::Block {
        header: trellis_types::Header {
            chain_id: chain_id.into(),
            height,
            round: 0,
            parent: head.block_hash,
            tx_root: trellis_types::block::tx_root(&txs),
            parent_commit_hash: parent_commit.hash(),
            receipts_root: trellis_types::block::receipts_root(&receipts),
            state_root: update.root,
            timestamp_ms: head.timestamp_ms + 1,
            proposer: KeyPair::insecure_from_label("proposer").public(),
        },
        parent_commit,
        txs,
    };
    let qc = trellis_types::QuorumCertificate {
        height,
        round: 0,
        block: block.hash(),
        votes: Vec::new(),
    };
    storage
        .commit_block(Arc::new(block), &qc, receipts, update)
        .expect("commit_block");
    height
}

fn event(kind: &str, attributes: &[(&str, &str)]) -> trellis_types::Event {
    trellis_types::Event {
        source: trellis_types::EventSource::System,
        kind: kind.into(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    }
}

#[tokio::test]
async fn the_event_stream_delivers_committed_transactions_from_a_height_in_order() {
    let node = TestNode::start().await;
    let key = acme();
    let first = node.commit_remarks(&key, 0, vec![vec![event("noted", &[("n", "1")])], vec![]]);
    let second = node.commit_remarks(&key, 2, vec![vec![]]);

    let mut stream = node.events("?from_height=1").await;
    let a = stream.next().await.unwrap();
    assert_eq!(a.id, "1:0");
    assert_eq!(a.tx.tx_hash, first[0].hash());
    assert_eq!(a.tx.sender, key.public());
    assert_eq!((a.tx.height, a.tx.index), (1, 0));
    assert_eq!(a.tx.status, trellis_types::ReceiptStatus::Success);
    assert_eq!(a.tx.events, vec![event("noted", &[("n", "1")])]);
    assert_eq!(a.tx.fuel_used, 1);
    assert_eq!(
        a.tx.block_time_ms,
        node.storage.block(1).unwrap().unwrap().header.timestamp_ms
    );
    let b = stream.next().await.unwrap();
    assert_eq!((b.id.as_str(), b.tx.tx_hash), ("1:1", first[1].hash()));
    let c = stream.next().await.unwrap();
    assert_eq!((c.id.as_str(), c.tx.tx_hash), ("2:0", second[0].hash()));
}

/// A block a stream cannot read ends it with an `error` message saying why:
/// a client that saw it only end would reconnect into the same failure
/// without end.
#[tokio::test]
async fn a_stream_that_cannot_read_a_block_ends_with_an_error_message() {
    let node = TestNode::start().await;
    // More blocks than storage keeps in memory, so the first is read back.
    for nonce in 0..6 {
        node.commit_remarks(&acme(), nonce, vec![vec![]]);
    }
    // Block 1's receipts (prefix RECEIPTS, height, group 0) damaged in the store.
    let mut key = vec![crate::storage::prefix::RECEIPTS];
    key.extend(1u64.to_be_bytes());
    key.extend(0u32.to_be_bytes());
    node.storage.db.insert(key, b"damaged".as_slice()).unwrap();

    let mut stream = node.events("?from_height=2").await;
    assert_eq!(stream.next().await.expect("block 2 reads").id, "2:0");
    let rest = node.events("?from_height=1").await.rest().await;
    let (head, data) = rest
        .split_once("data:")
        .unwrap_or_else(|| panic!("no message in {rest:?}"));
    assert!(head.contains("event: error"), "{rest:?}");
    let error: ErrorBody = serde_json::from_str(data.trim()).expect("an ErrorBody");
    assert_eq!(error.code, "internal");
    assert!(
        error.message.contains("reading block 1"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn streams_send_the_same_messages_for_the_newest_blocks_and_for_blocks_read_back() {
    let node = TestNode::start().await;
    let key = acme();
    // More blocks than storage keeps in memory: the first ones are read back.
    let blocks = 8u64;
    for b in 0..blocks {
        let noted = vec![event("noted", &[("block", &b.to_string())])];
        node.commit_remarks(&key, 2 * b, vec![noted, vec![]]);
    }
    let mut expected = Vec::new();
    for height in 1..=blocks {
        let block = node.storage.block(height).unwrap().unwrap();
        let receipts = node.storage.block_receipts(&block).unwrap();
        for (index, (stx, receipt)) in (0u32..).zip(block.txs.iter().zip(receipts)) {
            assert_eq!(receipt.tx, stx.hash());
            expected.push(CommittedTx::new(
                &block.header,
                index,
                stx.tx.sender,
                &receipt,
            ));
        }
    }
    // Two streams at once: the second takes the messages the first made.
    let mut first = node.events("?from_height=1").await;
    let mut second = node.events("?from_height=1").await;
    for want in &expected {
        for stream in [&mut first, &mut second] {
            let got = stream.next().await.expect("a message");
            assert_eq!(got.id, want.position().to_string());
            assert_eq!(got.tx, *want);
        }
    }
}

#[tokio::test]
async fn an_event_stream_without_a_start_follows_the_blocks_committed_after_it_opened() {
    let node = TestNode::start().await;
    let key = acme();
    node.commit_remarks(&key, 0, vec![vec![]]);
    let mut stream = node.events("").await;
    let later = node.commit_remarks(&key, 1, vec![vec![], vec![]]);
    let more = node.commit_remarks(&key, 3, vec![vec![]]);
    let got: Vec<(String, Hash)> = [
        stream.next().await.unwrap(),
        stream.next().await.unwrap(),
        stream.next().await.unwrap(),
    ]
    .into_iter()
    .map(|m| (m.id, m.tx.tx_hash))
    .collect();
    assert_eq!(
        got,
        vec![
            ("2:0".to_string(), later[0].hash()),
            ("2:1".to_string(), later[1].hash()),
            ("3:0".to_string(), more[0].hash()),
        ]
    );
}

#[tokio::test]
async fn resuming_after_an_id_continues_with_no_gap_and_no_duplicate() {
    let node = TestNode::start().await;
    let key = acme();
    node.commit_remarks(&key, 0, vec![vec![], vec![], vec![]]);
    node.commit_remarks(&key, 3, vec![vec![]]);

    let (status, mut stream) = node.events_with("", Some("1:0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stream.ids(3).await, ["1:1", "1:2", "2:0"]);
    let mut stream = node.events("?after=1:2").await;
    assert_eq!(stream.ids(1).await, ["2:0"]);
    // The header wins over the parameters; the last index of a block goes on to the next.
    let (_, mut stream) = node
        .events_with("?after=0:0&from_height=1", Some("1:2"))
        .await;
    assert_eq!(stream.ids(1).await, ["2:0"]);
    // Resuming after the head waits for the next commit.
    let (_, mut stream) = node.events_with("", Some("2:0")).await;
    node.commit_remarks(&key, 4, vec![vec![]]);
    assert_eq!(stream.ids(1).await, ["3:0"]);
}

#[tokio::test]
async fn event_streams_filter_by_kind_party_and_sender() {
    let node = TestNode::start().await;
    let (acme, t1) = (acme(), dev_account("supplier-t1/ops"));
    node.commit_remarks(
        &acme,
        0,
        vec![
            vec![event("issued", &[("piece", "1"), ("to", "supplier-t1")])],
            vec![event("split", &[("child", "2:supplier-t2:400")])],
            vec![event("noted", &[])],
        ],
    );
    node.commit_remarks(&t1, 0, vec![vec![event("accepted", &[("piece", "1")])]]);

    let ids = |query: &'static str, n: usize| {
        let node = &node;
        async move { node.events(query).await.ids(n).await }
    };
    assert_eq!(
        ids("?from_height=1&kind=split,accepted", 2).await,
        ["1:1", "2:0"]
    );
    assert_eq!(
        ids("?from_height=1&kind=split&kind=issued", 2).await,
        ["1:0", "1:1"]
    );
    // An attribute value names the party, or one `:`-separated field of it does.
    assert_eq!(ids("?from_height=1&party=supplier-t2", 1).await, ["1:1"]);
    // supplier-t1 is named by the issue and sent the acceptance.
    assert_eq!(
        ids("?from_height=1&party=supplier-t1", 2).await,
        ["1:0", "2:0"]
    );
    // A party as a key: what that key sent.
    let by_key = format!("?from_height=1&party={}", t1.public());
    assert_eq!(node.events(&by_key).await.ids(1).await, ["2:0"]);
    // The organisation of the sender counts too.
    assert_eq!(
        ids("?from_height=1&party=core-acme&kind=noted", 1).await,
        ["1:2"]
    );
    let by_sender = format!("?from_height=1&sender={}", acme.public());
    let mut stream = node.events(&by_sender).await;
    assert_eq!(stream.ids(3).await, ["1:0", "1:1", "1:2"]);
    // Nothing else arrives for it: the next message is a later commit of acme's.
    node.commit_remarks(&t1, 1, vec![vec![]]);
    node.commit_remarks(&acme, 3, vec![vec![]]);
    assert_eq!(stream.ids(1).await, ["4:0"]);
}

/// On a node that pruned old state, a `party` filter meeting a transaction
/// whose sender's key was removed since cannot learn the key's
/// organisation: the transaction is judged by its key and events alone,
/// and the stream goes on past it.
#[test]
fn a_party_filter_on_pruned_state_goes_past_a_key_removed_since() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Genesis::dev();
    let t1 = dev_account("supplier-t1/ops");
    let remark = |nonce: u64| {
        trellis_types::Transaction {
            chain_id: genesis.chain_id.clone(),
            sender: t1.public(),
            nonce,
            expires_at_ms: u64::MAX,
            payload: trellis_types::Payload::System(trellis_types::SystemOp::Remark {
                data: vec![].into(),
            }),
        }
        .sign(&t1)
    };
    {
        let storage = Storage::open(dir.path()).unwrap();
        crate::chain::initialise(&storage, &genesis, &Vm::new()).unwrap();
        let tx = remark(0);
        let receipt = Receipt {
            tx: tx.hash(),
            status: trellis_types::ReceiptStatus::Success,
            error: None,
            fuel_used: 1,
            events: vec![],
        };
        commit_block(
            &storage,
            &genesis.chain_id,
            vec![tx],
            vec![receipt],
            Writes::new(),
        );
        let removed = Writes::from([(execution::keys::account(&t1.public()), None)]);
        commit_block(&storage, &genesis.chain_id, vec![], vec![], removed);
    }
    // sled may hold the store's lock a moment after the last handle drops.
    use crate::storage::retry_while_locked;
    retry_while_locked(|| crate::storage::prune_state(dir.path(), 1)).expect("prune");
    let storage = retry_while_locked(|| Storage::open(dir.path())).unwrap();

    let by_org = EventFilter {
        parties: vec!["supplier-t1".into()],
        ..EventFilter::default()
    };
    let sent = committed_txs(&storage, &mut Matcher::new(by_org, None), 1, 0);
    assert_eq!(sent.expect("no error").expect("block 1").len(), 0);
    let by_key = EventFilter {
        parties: vec![t1.public().to_string()],
        ..EventFilter::default()
    };
    let sent = committed_txs(&storage, &mut Matcher::new(by_key, None), 1, 0);
    assert_eq!(sent.expect("no error").expect("block 1").len(), 1);
}

#[tokio::test]
async fn bad_event_stream_parameters_are_malformed() {
    let node = TestNode::start().await;
    for (query, header) in [
        ("?from_height=x", None),
        ("?from_height=1&from_height=2", None),
        ("?after=12", None),
        ("?after=a:b", None),
        ("?sender=not-a-key", None),
        ("?colour=red", None),
        ("", Some("yesterday")),
        // A filter with an empty value would match everything.
        ("?kind=", None),
        ("?sender=,", None),
        ("?kind=issued&party=", None),
        // A bad `after` is refused even when the header wins.
        ("?after=garbage", Some("1:0")),
    ] {
        let (status, reader) = node.events_with(query, header).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query} {header:?}");
        let body: Value = reader.response.json().await.expect("JSON error body");
        assert_eq!(body["code"], "malformed", "{query} {header:?}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Filters are bounded: 64 distinct values of at most 128 bytes each.
    let many: Vec<String> = (0..65).map(|i| format!("k{i}")).collect();
    let long = "p".repeat(129);
    for query in [
        format!("?kind={}", many.join(",")),
        format!("?party={long}"),
    ] {
        let (status, reader) = node.events_with(&query, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        let body: Value = reader.response.json().await.unwrap();
        assert_eq!(body["code"], "malformed", "{body}");
    }
    let repeated = format!("?kind={}", ["issued"; 100].join(","));
    let (status, _reader) = node.events_with(&repeated, None).await;
    assert_eq!(status, StatusCode::OK, "a value repeated counts once");
}

#[tokio::test]
async fn one_stream_over_the_limit_is_refused_until_another_closes() {
    let node = TestNode::with_stream_slots(2).await;
    let first = node.events("").await;
    let _second = node.events("").await;
    let (status, reader) = node.events_with("", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let body: Value = reader.response.json().await.unwrap();
    assert_eq!(body["code"], "too_many_streams");

    drop(first);
    node.wait_for_a_stream_slot("", "the closed stream's slot never came back")
        .await;
}

impl TestNode {
    async fn with_stream_slots(max_streams: usize) -> TestNode {
        TestNode::start_streaming(EventStreamConfig {
            max_streams,
            ..EventStreamConfig::default()
        })
        .await
    }

    /// Holds every API read thread, so reads wait, until dropped.
    fn take_every_read_thread(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.api
            .reads
            .running
            .clone()
            .try_acquire_many_owned(READ_THREADS as u32)
            .expect("no read is running")
    }

    /// Opens `GET /v1/events{query}` until it is no longer refused for want of
    /// a stream slot; panics with `never` after 10 s.
    async fn wait_for_a_stream_slot(&self, query: &str, never: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _reader) = self.events_with(query, None).await;
            if status == StatusCode::OK {
                return;
            }
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert!(Instant::now() < deadline, "{never}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A stream still catching up, here waiting for a read thread, gives its
/// slot back as soon as its client goes, not once it reaches the head.
#[tokio::test]
async fn a_stream_catching_up_frees_its_slot_when_its_client_goes() {
    let node = TestNode::with_stream_slots(1).await;
    let threads = node.take_every_read_thread();
    drop(node.events("?from_height=0").await);
    node.wait_for_a_stream_slot(
        "?from_height=0",
        "the departed client's stream kept its slot while waiting to read",
    )
    .await;
    drop(threads);
}

#[tokio::test]
async fn shutting_down_ends_open_event_streams_and_the_server() {
    let mut node = TestNode::start().await;
    let mut stream = node.events("").await;
    let _ = node.shutdown.take().unwrap().send(());
    assert!(stream.next().await.is_none(), "the stream ended");
    let served = node.served.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the server stops")
        .expect("the server task")
        .expect("the server stopped cleanly");
}

// ---------------------------------------------------------------------------
// Who reads what (`[api] access = "members"`)

impl TestNode {
    /// A node on the dev genesis that asks who reads.
    async fn start_asking() -> TestNode {
        Self::start_full(
            Genesis::dev(),
            None,
            |_| {},
            EventStreamConfig::default(),
            Indexes::default(),
            Access::Members,
        )
        .await
    }

    /// `method path` with `body`, signed by `key` as signed at `time_ms`.
    fn signed_at(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &[u8],
        key: &KeyPair,
        time_ms: u64,
    ) -> reqwest::RequestBuilder {
        let auth =
            RequestSignature::sign(key, &self.chain_id, method.as_str(), path, body, time_ms);
        self.client
            .request(method, format!("{}{path}", self.url))
            .header(AUTHORIZATION, auth.header_value())
            .body(body.to_vec())
    }

    /// `GET path` signed by `key` now.
    async fn get_as(&self, key: &KeyPair, path: &str) -> (StatusCode, Value) {
        answer(self.signed_at(reqwest::Method::GET, path, &[], key, now_ms())).await
    }

    /// A contract query signed by `key`.
    async fn query_as(
        &self,
        key: &KeyPair,
        address: &trellis_types::Address,
        method: &str,
        args: &[u8],
    ) -> (StatusCode, Value) {
        let body = json!({"method": method, "args": hex::encode(args)}).to_string();
        let path = format!("/v1/contracts/{address}/query");
        let request = self.signed_at(reqwest::Method::POST, &path, body.as_bytes(), key, now_ms());
        answer(request.header(CONTENT_TYPE, "application/json")).await
    }

    /// `GET /v1/events{query}` signed by `key`: the status and the stream.
    async fn events_as(&self, key: &KeyPair, query: &str) -> (StatusCode, SseReader) {
        let path = format!("/v1/events{query}");
        let request = self.signed_at(reqwest::Method::GET, &path, &[], key, now_ms());
        let response = request.send().await.expect("GET /v1/events");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("valid status");
        let reader = SseReader {
            response,
            buffer: String::new(),
        };
        (status, reader)
    }
}

/// The status and JSON body of `request`'s answer.
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("valid status");
    (status, response.json().await.expect("JSON response body"))
}

fn regulator() -> KeyPair {
    dev_account("regulator/ops")
}

fn receivables(node: &TestNode) -> trellis_types::Address {
    Genesis::dev()
        .contracts
        .iter()
        .find(|c| c.name == "receivables")
        .map(|c| c.address())
        .filter(|address| {
            execution::contract(&node.storage, address)
                .unwrap()
                .is_some()
        })
        .expect("the dev genesis deploys the receivables contract")
}

#[tokio::test]
async fn a_node_that_asks_refuses_unsigned_reads_and_serves_what_is_public() {
    let node = TestNode::start_asking().await;
    let contract = receivables(&node);
    for path in [
        "/v1/blocks/latest".to_owned(),
        "/v1/blocks/0".to_owned(),
        format!("/v1/transactions/{}", Hash([1; 32])),
        format!("/v1/transactions/{}/proof", Hash([1; 32])),
        format!("/v1/state/{}", hex::encode(b"sys/params")),
        format!("/v1/contracts/{contract}"),
        "/v1/events?from_height=0".to_owned(),
    ] {
        let (status, body) = node.get(&path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
            "GET {path}: {body}"
        );
    }
    let (status, body) = node
        .post_to(
            &format!("/v1/contracts/{contract}/query"),
            "application/json",
            json!({"method": "params", "args": ""})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    for path in [
        "/health",
        "/status",
        "/v1/validators",
        "/v1/blocks/0/header",
        "/v1/blocks/latest/header",
        "/v1/evidence",
    ] {
        let (status, body) = node.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    }
    for path in ["/metrics", "/openapi.json"] {
        let response = node.client.get(format!("{}{path}", node.url)).send().await;
        assert_eq!(response.unwrap().status().as_u16(), 200, "GET {path}");
    }
    // A transaction is its own credential.
    let (status, body) = node.submit(&node.tx(&acme(), 0)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn a_signature_must_be_a_members_own_fresh_and_first() {
    let node = TestNode::start_asking().await;
    let path = format!("/v1/state/{}", hex::encode(b"sys/params"));
    let get = reqwest::Method::GET;
    let now = now_ms();
    let refused = |code: &'static str| (StatusCode::UNAUTHORIZED, Some(code));
    let code = |(status, body): (StatusCode, Value)| {
        let code = body["code"].as_str().map(str::to_owned);
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        (status, code)
    };
    let check = |got: (StatusCode, Option<String>), want: (StatusCode, Option<&str>)| {
        assert_eq!((got.0, got.1.as_deref()), want);
    };

    // Signed by a member, just now: taken once.
    let request = node.signed_at(get.clone(), &path, &[], &acme(), now);
    let again = request.try_clone().expect("a bodiless request clones");
    let (status, body) = answer(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    check(code(answer(again).await), refused("replayed"));

    // Too far from the node's clock, either way.
    for time in [now - 2 * MAX_CLOCK_SKEW_MS, now + 2 * MAX_CLOCK_SKEW_MS] {
        let request = node.signed_at(get.clone(), &path, &[], &acme(), time);
        check(code(answer(request).await), refused("stale_request"));
    }

    // Signed for another path, chain, method or body than it is sent with.
    let other_path = format!("/v1/state/{}", hex::encode(b"sys/genesis"));
    let auth = RequestSignature::sign(&acme(), &node.chain_id, "GET", &other_path, &[], now);
    let request = node
        .client
        .get(format!("{}{path}", node.url))
        .header(AUTHORIZATION, auth.header_value());
    check(code(answer(request).await), refused("bad_signature"));
    let auth = RequestSignature::sign(&acme(), "another-chain", "GET", &path, &[], now);
    let request = node
        .client
        .get(format!("{}{path}", node.url))
        .header(AUTHORIZATION, auth.header_value());
    check(code(answer(request).await), refused("bad_signature"));
    let contract = receivables(&node);
    let query = format!("/v1/contracts/{contract}/query");
    let signed_body = json!({"method": "params", "args": ""}).to_string();
    let auth = RequestSignature::sign(
        &acme(),
        &node.chain_id,
        "POST",
        &query,
        signed_body.as_bytes(),
        now,
    );
    let request = node
        .client
        .post(format!("{}{query}", node.url))
        .header(AUTHORIZATION, auth.header_value())
        .header(CONTENT_TYPE, "application/json")
        .body(json!({"method": "piece", "args": ""}).to_string());
    check(code(answer(request).await), refused("bad_signature"));

    // Not a member's account; a header that does not parse.
    let stranger = KeyPair::from_seed([42; 32]);
    let request = node.signed_at(get.clone(), &path, &[], &stranger, now);
    let again = request.try_clone().expect("a bodiless request clones");
    check(code(answer(request).await), refused("unknown_account"));
    // Not remembered as taken: only members' signatures fill that memory.
    check(code(answer(again).await), refused("unknown_account"));
    for header in [&b"Bearer abc"[..], b"Trellis key=00", b"Trellis key=\xff"] {
        let header = reqwest::header::HeaderValue::from_bytes(header).expect("a header value");
        let request = node
            .client
            .get(format!("{}{path}", node.url))
            .header(AUTHORIZATION, header);
        check(code(answer(request).await), refused("bad_authorization"));
    }

    // The node goes on serving the member that signs properly.
    let (status, _) = node.get_as(&acme(), &path).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_member_reads_the_transactions_that_concern_it_and_a_regulator_all() {
    let node = TestNode::start_asking().await;
    let (acme, t1, t2) = (
        acme(),
        dev_account("supplier-t1/ops"),
        dev_account("supplier-t2/ops"),
    );
    // Acme's issue names supplier-t1; its remark names no one.
    let sent = node.commit_remarks(
        &acme,
        0,
        vec![
            vec![event("issued", &[("piece", "1"), ("to", "supplier-t1")])],
            vec![event("noted", &[])],
        ],
    );
    let (issue, remark) = (sent[0].hash(), sent[1].hash());
    let status_of = |key: &KeyPair, hash: Hash, proof: bool| {
        let suffix = if proof { "/proof" } else { "" };
        let path = format!("/v1/transactions/{hash}{suffix}");
        let node = &node;
        let key = key.clone();
        async move { node.get_as(&key, &path).await.0 }
    };
    for proof in [false, true] {
        for (key, hash, seen) in [
            (&acme, issue, true),
            (&acme, remark, true),
            (&t1, issue, true),
            (&t1, remark, false),
            (&t2, issue, false),
            (&regulator(), remark, true),
        ] {
            let want = if seen {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(
                status_of(key, hash, proof).await,
                want,
                "{} reads {hash} (proof: {proof})",
                key.public()
            );
        }
    }

    // Whole blocks are a regulator's.
    let (status, body) = node.get_as(&t1, "/v1/blocks/1").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    for path in ["/v1/blocks/1", "/v1/blocks/latest"] {
        assert_eq!(node.get_as(&regulator(), path).await.0, StatusCode::OK);
    }

    // The event stream: what concerns the reader, whatever it asks for.
    let (status, mut stream) = node.events_as(&t1, "?from_height=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stream.ids(1).await, ["1:0"]);
    let (_, mut everything) = node.events_as(&regulator(), "?from_height=1").await;
    assert_eq!(everything.ids(2).await, ["1:0", "1:1"]);
    let (_, mut asked_for_acme) = node.events_as(&t2, "?from_height=1&party=core-acme").await;
    // Each stream's next message is the first that concerns its reader
    // (and, asked for, core-acme).
    node.commit_remarks(&t2, 0, vec![vec![]]);
    let (_, mut own) = node.events_as(&t2, "?from_height=1").await;
    assert_eq!(own.ids(1).await, ["2:0"]);
    node.commit_remarks(
        &acme,
        2,
        vec![vec![event("split", &[("child", "2:supplier-t2:1")])]],
    );
    assert_eq!(asked_for_acme.ids(1).await, ["3:0"]);
    node.commit_remarks(
        &acme,
        3,
        vec![vec![event("transferred", &[("to", "supplier-t1")])]],
    );
    assert_eq!(stream.ids(1).await, ["4:0"]);
}

#[tokio::test]
async fn a_member_reads_membership_state_and_only_the_contract_keys_it_may() {
    let node = TestNode::start_asking().await;
    let t2 = dev_account("supplier-t2/ops");
    for key in [
        b"sys/params".to_vec(),
        execution::keys::account(&acme().public()),
        execution::keys::organisation("core-acme"),
    ] {
        let path = format!("/v1/state/{}?proof=true", hex::encode(&key));
        let (status, body) = node.get_as(&t2, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // A piece's key: the contract's `may_read` decides (no such piece here,
    // so no one but a regulator); a key of no contract: a regulator's.
    let contract = receivables(&node);
    let piece = contract.state_key(&trellis_receivables::piece_key(1));
    for key in [piece, b"c/short".to_vec(), b"elsewhere".to_vec()] {
        let path = format!("/v1/state/{}", hex::encode(&key));
        let (status, body) = node.get_as(&t2, &path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{body}"
        );
        assert_eq!(node.get_as(&regulator(), &path).await.0, StatusCode::OK);
    }
    // A query runs as the member: the contract shows supplier-t2 its own
    // holdings only.
    let own = trellis_types::encode(&trellis_receivables::ByHolder {
        org: "supplier-t2".into(),
        after: None,
        limit: None,
    });
    let (status, body) = node
        .query_as(&t2, &contract, "pieces_by_holder", &own)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let other = trellis_types::encode(&trellis_receivables::ByHolder {
        org: "supplier-t1".into(),
        after: None,
        limit: None,
    });
    let (status, body) = node
        .query_as(&t2, &contract, "pieces_by_holder", &other)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("not_visible")),
        "{body}"
    );
    let (status, _) = node
        .query_as(&regulator(), &contract, "pieces_by_holder", &other)
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Writes `proposal` as open under `id`.
fn proposal_write(id: Hash, proposal: &trellis_types::Proposal) -> Writes {
    Writes::from([(execution::keys::proposal(&id), Some(encode(proposal)))])
}

fn suspend(org: &str) -> Writes {
    let record = trellis_types::Organisation {
        id: org.into(),
        name: org.into(),
        roles: vec![],
    };
    Writes::from([(execution::keys::organisation(org), Some(encode(&record)))])
}

#[tokio::test]
async fn members_read_the_open_proposals_in_pages_with_the_approvals_that_count() {
    use trellis_types::{Change, Proposal, Role};
    let node = TestNode::start_asking().await;
    let proposal = |approvals: &[&str], expires_at_ms| Proposal {
        change: Change::SetRoles {
            org: "supplier-t1".into(),
            roles: vec![Role::Supplier, Role::Bank],
        },
        proposer: approvals[0].into(),
        approvals: approvals.iter().map(|a| a.to_string()).collect(),
        proposed_at_height: 1,
        expires_at_ms,
    };
    // One by the dev chain's admin organisation, open; one approved only by
    // an organisation that holds no admin role, long expired.
    let (open, lapsed) = (Hash([1; 32]), Hash([2; 32]));
    let mut writes = proposal_write(open, &proposal(&["consortium"], u64::MAX));
    writes.extend(proposal_write(lapsed, &proposal(&["core-acme"], 1)));
    node.commit(vec![], writes);

    let t2 = dev_account("supplier-t2/ops");
    let (status, body) = node.get_as(&t2, "/v1/proposals").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: ProposalList = serde_json::from_value(body).unwrap();
    let summary: Vec<(Hash, usize, usize, bool)> = list
        .proposals
        .iter()
        .map(|p| (p.id, p.approvals_counted, p.needed, p.expired))
        .collect();
    assert_eq!(summary, [(open, 1, 1, false), (lapsed, 0, 1, true)]);
    assert_eq!(
        list.proposals[0].proposal,
        proposal(&["consortium"], u64::MAX)
    );
    assert_eq!(list.next_after, None);

    // Pages of one, then on from the first.
    let (_, body) = node.get_as(&t2, "/v1/proposals?limit=1").await;
    let page: ProposalList = serde_json::from_value(body).unwrap();
    assert_eq!((page.proposals.len(), page.next_after), (1, Some(open)));
    let (_, body) = node
        .get_as(&t2, &format!("/v1/proposals?after={open}"))
        .await;
    let page: ProposalList = serde_json::from_value(body).unwrap();
    assert_eq!(page.proposals[0].id, lapsed);

    let (status, body) = node.get_as(&t2, &format!("/v1/proposals/{open}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], open.to_hex());
    for (path, status, code) in [
        (
            format!("/v1/proposals/{}", Hash([3; 32])),
            StatusCode::NOT_FOUND,
            "proposal_not_found",
        ),
        (
            "/v1/proposals/xyz".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
        (
            "/v1/proposals?limit=101".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
    ] {
        let (got, body) = node.get_as(&t2, &path).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    let (status, body) = node.get("/v1/proposals").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
}

#[tokio::test]
async fn a_suspended_organisation_neither_reads_nor_sends_and_the_node_serves_the_others() {
    let node = TestNode::start_asking().await;
    let t1 = dev_account("supplier-t1/ops");
    node.commit(vec![], suspend("supplier-t1"));

    let (status, body) = node.get_as(&t1, "/v1/proposals").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("suspended")),
        "{body}"
    );
    node.assert_tx_refused(&node.tx(&t1, 0), StatusCode::FORBIDDEN, "suspended")
        .await;

    let t2 = dev_account("supplier-t2/ops");
    assert_eq!(node.get_as(&t2, "/v1/proposals").await.0, StatusCode::OK);
    assert_eq!(node.submit(&node.tx(&t2, 0)).await.0, StatusCode::ACCEPTED);
}
