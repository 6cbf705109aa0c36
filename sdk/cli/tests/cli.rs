//! The `trellis` binary as people and scripts run it, against real nodes:
//! in-process dev nodes (`trellis_tests::DevNode`), `trellis-node --dev`
//! started by `trellis demo` itself, and a four-validator `trellis-node
//! localnet`. Every child process is killed on drop, every wait has a
//! deadline, and nothing listens on or dials an address other than loopback
//! ports picked free for the test.
//!
//! The tests that need `trellis-node` processes take the binary next to
//! `trellis` in the target directory: `cargo test --workspace` builds it (as
//! does `cargo run -p trellis-node`).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use trellis_tests::{DevNode, TlsFront, equivocation, free_port, openssl, record_evidence};

mod common;

use common::*;

/// `trellis --node <url> --output json args`, which must succeed; its JSON.
async fn json_ok(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--node", url, "--output", "json"];
    all.extend_from_slice(args);
    trellis(&all).await.ok().json()
}

/// Signs as the dev account of `org`.
async fn json_as(url: &str, org: &str, args: &[&str]) -> Value {
    let mut all = vec!["--dev-account", org];
    all.extend_from_slice(args);
    json_ok(url, &all).await
}

/// core-acme issues `amount` CNY to supplier-t1 against `invoice`, maturing
/// in a day; the root piece's id.
async fn issue_to_tier_1(url: &str, amount: &str, invoice: &str) -> String {
    let args = [
        "receivable",
        "issue",
        "--to",
        "supplier-t1",
        "--amount",
        amount,
        "--currency",
        "CNY",
        "--maturity",
        "+1d",
        "--invoice",
        invoice,
    ];
    id(&json_as(url, "core-acme", &args).await["piece"]).to_string()
}

fn minor(amount: &Value) -> u128 {
    amount["minor_units"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an amount: {amount}"))
}

fn id(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an id: {v}"))
}

/// The `trellis-node` built beside `trellis`.
fn node_binary() -> PathBuf {
    let path = Path::new(BIN).with_file_name("trellis-node");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p trellis-node` (`cargo test --workspace` does)",
        path.display()
    );
    path
}

/// Checks a demo's JSON result: the figures of the story and every lineage.
fn assert_demo_story(demo: &Value) {
    let pieces = &demo["pieces"];
    let (root, t2, t1_kept, t3, t2_kept) = (
        id(&pieces["root"]),
        id(&pieces["supplier_t2"]),
        id(&pieces["supplier_t1_kept"]),
        id(&pieces["supplier_t3"]),
        id(&pieces["supplier_t2_kept"]),
    );
    let payouts: BTreeMap<u64, (String, u128)> = demo["payouts"]
        .as_array()
        .expect("payouts")
        .iter()
        .map(|p| {
            (
                id(&p["piece"]),
                (p["to"].as_str().unwrap().to_owned(), minor(&p["amount"])),
            )
        })
        .collect();
    assert_eq!(
        payouts,
        BTreeMap::from([
            (t1_kept, ("supplier-t1".to_owned(), 60_000_000)),
            (t3, ("bank-first".to_owned(), 15_000_000)),
            (t2_kept, ("supplier-t2".to_owned(), 25_000_000)),
        ]),
        "who was paid what: {demo}"
    );
    assert_eq!(minor(&demo["total_paid"]), 100_000_000);

    // 150,000.00 at 3.5 % a year for one day: 150,000.00 × 0.035 / 365 = 14.38 (rounded down).
    let f = &demo["financing"];
    assert_eq!(f["seller"], "supplier-t3");
    assert_eq!(f["bank"], "bank-first");
    assert_eq!(f["annual_rate_bps"], 350);
    assert_eq!(f["days"], 1);
    assert_eq!(minor(&f["price"]), 14_998_562);
    assert_eq!(minor(&f["discount"]), 1_438);
    assert_eq!(f["price"]["value"], "149985.62");

    assert_eq!(demo["double_issue"]["refused"], true);
    assert_eq!(demo["double_issue"]["code"], "invoice_used");

    let lineage: BTreeMap<u64, &Value> = demo["lineage"]
        .as_array()
        .expect("lineage")
        .iter()
        .map(|l| (id(&l["piece"]), l))
        .collect();
    assert_eq!(
        lineage.keys().copied().collect::<Vec<_>>(),
        {
            let mut all = vec![root, t2, t1_kept, t3, t2_kept];
            all.sort();
            all
        },
        "a lineage for every piece"
    );
    for (piece, l) in &lineage {
        assert_eq!(l["issuer"], "core-acme", "piece {piece}");
        let path = l["path"].as_array().expect("a path");
        assert_eq!(id(&path[0]["id"]), *piece);
        assert_eq!(
            id(&path[path.len() - 1]["id"]),
            root,
            "piece {piece} leads to the root"
        );
    }
    let t3_path: Vec<(u64, &str)> = lineage[&t3]["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (id(&p["id"]), p["holder"].as_str().unwrap()))
        .collect();
    assert_eq!(
        t3_path,
        vec![
            (t3, "bank-first"),
            (t2, "supplier-t2"),
            (root, "supplier-t1")
        ],
        "tier 3's piece, financed by the bank, back to the root"
    );
    assert_eq!(lineage[&t3]["path"][0]["status"], "settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plays_the_story_twice_at_once_on_one_dev_node() {
    let node = DevNode::start_open().await.expect("dev node");
    let url = node.url("");
    // Two runs at once on one chain and the same accounts: each has its own
    // invoice, and the SDK sorts out the shared nonces.
    let json_args = [
        "--node",
        &url,
        "--output",
        "json",
        "demo",
        "--no-start",
        "--maturity-in",
        "25s",
    ];
    let table_args = ["--node", &url, "demo", "--no-start"];
    let json_run = trellis(&json_args);
    let table_run = trellis(&table_args);
    let (json_run, table_run) = tokio::join!(json_run, table_run);
    let demo = json_run.ok().json();
    assert_eq!(demo["chain_id"], "trellis-dev");
    assert_eq!(demo["started_node"], false);
    assert_demo_story(&demo);

    let table_run = table_run.ok();
    for expected in [
        "core-acme issues 1,000,000.00 CNY to supplier-t1 against invoice INV-001-",
        "400,000.00 CNY to supplier-t2",
        "150,000.00 CNY to supplier-t3",
        "pays supplier-t3 149,985.62 CNY",
        "refused by the contract with `invoice_used`",
        "Who was paid what",
        "at financing by bank-first",
        "← issued by core-acme",
    ] {
        assert!(
            table_run.stdout.contains(expected),
            "missing {expected:?}:\n{table_run}"
        );
    }
    assert!(
        table_run.stderr.contains("waiting for maturity"),
        "progress goes to stderr:\n{table_run}"
    );
    assert!(!table_run.stdout.contains(demo["invoice"].as_str().unwrap()));

    // The chain agrees: tier 3's piece was paid to the bank.
    let t3 = demo["pieces"]["supplier_t3"].to_string();
    let piece = json_ok(&url, &["receivable", "show", &t3]).await;
    assert_eq!(piece["status"], "settled");
    assert_eq!(piece["settlement"]["paid_to"], "bank-first");
    assert_eq!(piece["financing"]["seller"], "supplier-t3");

    // Verified against the validators the genesis file names: the same
    // piece, and the block whose state holds its record.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, genesis: &trellis_genesis::Genesis| {
        let path = dir.path().join(name);
        std::fs::write(&path, genesis.to_json_pretty()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let dev = file("dev.json", &trellis_genesis::Genesis::dev());
    let verified = json_ok(
        &url,
        &["--genesis", &dev, "receivable", "show", &t3, "--verify"],
    )
    .await;
    assert_eq!(verified["status"], "settled");
    assert_eq!(verified["settlement"], piece["settlement"]);
    let height = verified["verified"]["height"].as_u64().expect("a height");
    let block = trellis(&[
        "--node",
        &url,
        "--output",
        "json",
        "block",
        &height.to_string(),
    ])
    .await;
    assert_eq!(
        block.ok().json()["hash"],
        verified["verified"]["block_hash"]
    );
    let table = trellis(&["--node", &url, "receivable", "show", &t3, "--verify"]).await;
    assert!(table.ok().stdout.contains("which the validators committed"));

    // Another chain's validators verify nothing; a file that is no genesis
    // is a usage error; a piece that does not exist is proven absent.
    let local = file("local.json", &trellis_genesis::Genesis::local());
    let refused = trellis(&[
        "--node",
        &url,
        "--genesis",
        &local,
        "receivable",
        "show",
        &t3,
        "--verify",
    ])
    .await;
    let refused = refused.expect_code(1);
    assert!(refused.stderr.contains("ask another node"), "{refused}");
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{").unwrap();
    let broken = broken.to_str().unwrap();
    trellis(&[
        "--node",
        &url,
        "--genesis",
        broken,
        "receivable",
        "show",
        &t3,
        "--verify",
    ])
    .await
    .expect_code(2);
    trellis(&["--node", &url, "receivable", "show", "999999", "--verify"])
        .await
        .expect_code(8);

    // The story's last transaction, with its receipt, proven in its block.
    let last = &demo["steps"].as_array().unwrap().last().unwrap()["transaction"];
    let hash = last["tx_hash"].as_str().unwrap();
    let proven = json_ok(&url, &["--genesis", &dev, "tx", hash, "--verify"]).await;
    let plain = json_ok(&url, &["tx", hash]).await;
    for field in ["status", "height", "index", "receipt"] {
        assert_eq!(proven[field], plain[field], "{field}");
    }
    assert_eq!(
        (&proven["height"], &proven["index"]),
        (&last["height"], &last["index"])
    );
    assert_eq!(proven["receipt"]["status"], "success");
    assert_eq!(proven["verified"]["height"], proven["height"]);
    let table = trellis(&["--node", &url, "tx", hash, "--verify"]).await;
    assert!(table.ok().stdout.contains("which the validators committed"));
    let refused = trellis(&["--node", &url, "--genesis", &local, "tx", hash, "--verify"]).await;
    assert!(refused.expect_code(1).stderr.contains("ask another node"));
    trellis(&["--node", &url, "tx", &"03".repeat(32), "--verify"])
        .await
        .expect_code(8);

    // Its whole block, body and receipts, against the committed header.
    let height = proven["height"].to_string();
    let block = json_ok(&url, &["--genesis", &dev, "block", &height, "--verify"]).await;
    assert_eq!(block["verified"]["height"], proven["height"]);
    assert_eq!(block["hash"], proven["verified"]["block_hash"]);
    let args = [
        "--node",
        &url,
        "--genesis",
        &local,
        "block",
        &height,
        "--verify",
    ];
    let refused = trellis(&args).await.expect_code(1);
    assert!(refused.stderr.contains("ask another node"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_starts_a_dev_node_when_told_and_stops_it_at_the_end() {
    let binary = node_binary();
    let run = trellis(&[
        "--output",
        "json",
        "demo",
        "--start",
        "--node-bin",
        binary.to_str().unwrap(),
    ])
    .await
    .ok();
    let demo = run.json();
    assert_eq!(demo["started_node"], true);
    assert_demo_story(&demo);
    assert!(run.stderr.contains("stopped the dev node"), "{run}");
    let url = demo["nodes"][0].as_str().expect("the node it used");
    let after = trellis(&["--node", url, "status"]).await;
    assert_eq!(after.code, 6, "the demo's node still answers:\n{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_demo_stops_the_node_it_started() {
    let binary = node_binary();
    let mut demo = command(
        &["demo", "--start", "--node-bin", binary.to_str().unwrap()],
        &[],
    )
    .spawn()
    .expect("trellis starts");
    let mut stderr = BufReader::new(demo.stderr.take().unwrap()).lines();
    let (url, node_pid) = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), stderr.next_line())
            .await
            .expect("the demo reports its node")
            .expect("stderr reads")
            .expect("the demo is still running");
        if let Some(rest) = line.strip_prefix("dev node up at ") {
            let mut words = rest.split_whitespace();
            let url = words.next().unwrap().to_owned();
            let pid = words.nth(1).unwrap().trim_end_matches(';').to_owned();
            break (url, pid);
        }
    };
    trellis(&["--node", &url, "status"]).await.ok();
    let pid = demo.id().expect("still running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), demo.wait())
        .await
        .expect("the demo stops on Ctrl-C")
        .expect("it can be waited for");
    assert_eq!(status.code(), Some(130));
    // By its process, not its port: another test's node may take the port.
    assert!(
        !Path::new(&format!("/proc/{node_pid}")).exists(),
        "the demo's node (pid {node_pid}) outlived it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_node_binary_the_demo_says_what_to_run() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let run = trellis(&[
        "--node",
        &nowhere,
        "demo",
        "--start",
        "--node-bin",
        "/nonexistent/trellis-node",
    ])
    .await
    .expect_code(6);
    assert!(
        run.stderr.contains("cargo run -p trellis-node -- --dev"),
        "{run}"
    );
    // An explicit --node that does not answer is an error, not a reason to start a node.
    let run = trellis(&["--node", &nowhere, "demo"]).await.expect_code(6);
    assert!(
        run.stderr.contains("cargo run -p trellis-node -- --dev"),
        "{run}"
    );
    assert!(!run.stderr.contains("starting"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_prints_exactly_one_json_document() {
    let node = DevNode::start_open().await.expect("dev node");
    let url = node.url("");
    let u = url.as_str();
    let dir = tempfile::tempdir().unwrap();

    let status = json_ok(u, &["status"]).await;
    assert_eq!(status["chain_id"], "trellis-dev");

    let key_file = dir.path().join("k.pem");
    let key_path = key_file.to_str().unwrap();
    let new = json_ok(u, &["keys", "new", "--out", key_path]).await;
    let shown = json_ok(u, &["keys", "show", key_path]).await;
    assert_eq!(new["public_key"], shown["public_key"]);
    assert_eq!(shown["encrypted"], false);

    // Keys the CLI made, and one openssl made, sign once their organisation's admin adds them.
    let public = new["public_key"].as_str().unwrap();
    let added = json_as(u, "core-acme", &["keys", "add", public]).await;
    assert_eq!(added["org"], "core-acme");
    let openssl_key = dir.path().join("openssl.pem");
    let status = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&openssl_key)
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let t1_key = dir.path().join("t1.pem");
    let t1_key = t1_key.to_str().unwrap();
    let imported = json_ok(
        u,
        &[
            "keys",
            "import",
            openssl_key.to_str().unwrap(),
            "--out",
            t1_key,
        ],
    )
    .await;
    let t1_public = imported["public_key"].as_str().unwrap();
    json_as(u, "supplier-t1", &["keys", "add", t1_public]).await;

    // A receivable, moved through its life by each command.
    let maturity = "+25s";
    let issued = json_ok(
        u,
        &[
            "--key",
            key_path,
            "receivable",
            "issue",
            "--to",
            "supplier-t1",
            "--amount",
            "500,000.00",
            "--currency",
            "CNY",
            "--maturity",
            maturity,
            "--invoice",
            "INV-JSON-1",
            "--terms",
            "net 30",
        ],
    )
    .await;
    let root = id(&issued["piece"]);
    assert_eq!(minor(&issued["amount"]), 50_000_000);
    let tx_hash = issued["transaction"]["tx_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let tx = json_ok(u, &["tx", &tx_hash]).await;
    assert_eq!(tx["status"], "committed");
    assert_eq!(tx["receipt"]["events"][0]["kind"], "issued");
    let r = root.to_string();
    let latest = json_ok(u, &["block"]).await;
    let hash = latest["hash"].as_str().unwrap().to_owned();
    let by_hash = json_ok(u, &["block", &hash]).await;
    assert_eq!(by_hash["hash"], latest["hash"]);
    let issued_at = tx["height"].to_string();
    let block = json_ok(u, &["block", &issued_at]).await;
    assert_eq!(block["block"]["txs"].as_array().unwrap().len(), 1);

    json_ok(u, &["--key", t1_key, "receivable", "accept", &r]).await;
    let removed = json_as(u, "supplier-t1", &["keys", "remove", t1_public]).await;
    assert_eq!(removed["action"], "removed");
    let run = trellis(&["--node", u, "--key", t1_key, "receivable", "reject", &r])
        .await
        .expect_code(3);
    assert!(run.stderr.contains("unknown_sender"), "{run}");
    let split = json_as(
        u,
        "supplier-t1",
        &[
            "receivable",
            "split",
            &r,
            "--part",
            "supplier-t2=200,000.00",
        ],
    )
    .await;
    let pieces = split["pieces"].as_array().unwrap();
    let (t2_piece, t1_rest) = (id(&pieces[0]["piece"]), id(&pieces[1]["piece"]));
    assert_eq!(minor(&pieces[1]["amount"]), 30_000_000);
    let (t2p, t1p) = (t2_piece.to_string(), t1_rest.to_string());

    let moved = json_as(
        u,
        "supplier-t2",
        &["receivable", "transfer", &t2p, "--to", "supplier-t3"],
    )
    .await;
    assert_eq!(moved["to"], "supplier-t3");
    let requested = json_as(
        u,
        "supplier-t3",
        &[
            "receivable",
            "finance",
            "request",
            &t2p,
            "--bank",
            "bank-first",
            "--rate",
            "4%",
        ],
    )
    .await;
    assert_eq!(requested["terms"]["annual_rate_bps"], 400);
    json_as(u, "supplier-t3", &["receivable", "finance", "cancel", &t2p]).await;
    let offered = json_as(
        u,
        "bank-first",
        &[
            "receivable",
            "finance",
            "offer",
            &t2p,
            "--price",
            "199,000.00",
        ],
    )
    .await;
    assert_eq!(minor(&offered["terms"]["price"]), 19_900_000);
    let financed = json_as(
        u,
        "supplier-t3",
        &[
            "receivable",
            "finance",
            "accept",
            &t2p,
            "--payment-ref",
            "T3-ACK",
            "--price",
            "199,000.00",
        ],
    )
    .await;
    assert_eq!(financed["bank"], "bank-first");
    assert_eq!(minor(&financed["price"]), 19_900_000);
    assert_eq!(minor(&financed["discount"]), 100_000);

    json_as(
        u,
        "consortium",
        &["receivable", "freeze", &t1p, "--reason", "audit 7"],
    )
    .await;
    let frozen = json_ok(u, &["receivable", "show", &t1p]).await;
    assert_eq!(frozen["frozen"]["reason"], "audit 7");
    json_as(u, "consortium", &["receivable", "unfreeze", &t1p]).await;

    let shown = json_ok(u, &["receivable", "show", &t2p]).await;
    assert_eq!(shown["holder"], "bank-first");
    assert_eq!(shown["status"], "financed");
    let lineage = json_ok(u, &["receivable", "lineage", &t2p]).await;
    assert_eq!(lineage["issuer"], "core-acme");
    assert_eq!(lineage["path"].as_array().unwrap().len(), 2);
    let tree = json_ok(u, &["receivable", "tree", &t2p]).await;
    assert_eq!(tree["root"], root);
    assert_eq!(tree["pieces"].as_array().unwrap().len(), 3);
    let holdings = json_ok(u, &["receivable", "holdings", "supplier-t1"]).await;
    assert_eq!(holdings["pieces"][0]["id"], t1_rest);
    let mine = json_as(u, "bank-first", &["receivable", "holdings"]).await;
    assert_eq!(mine["org"], "bank-first");

    // Settlement once the chain's clock passes maturity: one piece, then the rest.
    let maturity_ms = issued["maturity_ms"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while json_ok(u, &["status"]).await["last_block_time_ms"]
        .as_u64()
        .unwrap()
        < maturity_ms
    {
        assert!(
            Instant::now() < deadline,
            "the chain did not reach maturity"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let one = json_as(
        u,
        "core-acme",
        &[
            "receivable",
            "settle",
            "--piece",
            &t2p,
            "--payment-ref",
            "ACME-1",
        ],
    )
    .await;
    assert_eq!(one["payouts"][0]["to"], "bank-first");
    let rest = json_as(
        u,
        "core-acme",
        &["receivable", "settle", &r, "--payment-ref", "ACME-2"],
    )
    .await;
    assert_eq!(rest["payouts"][0]["to"], "supplier-t1");
    assert_eq!(minor(&rest["payouts"][0]["amount"]), 30_000_000);

    // Events from the start: one array; filtered by kind and party.
    let all = json_ok(u, &["events", "--from", "1"]).await;
    let all = all.as_array().expect("an array of transactions");
    assert!(all.len() >= 12, "{all:?}");
    let settled = json_ok(u, &["events", "--from", "1", "--kind", "settled"]).await;
    assert_eq!(settled.as_array().unwrap().len(), 2);
    let t3 = json_ok(
        u,
        &["events", "--kind", "financed", "--party", "supplier-t3"],
    )
    .await;
    assert_eq!(t3.as_array().unwrap().len(), 1);
    let after = format!(
        "{}:{}",
        all[all.len() - 2]["height"],
        all[all.len() - 2]["index"]
    );
    let resumed = json_ok(u, &["events", "--after", &after]).await;
    assert_eq!(resumed.as_array().unwrap(), &all[all.len() - 1..]);

    // --follow with JSON: one JSON document per line, in chain order.
    let mut follow = command(
        &[
            "--node", u, "--output", "json", "events", "--from", "1", "--follow",
        ],
        &[],
    )
    .spawn()
    .expect("trellis starts");
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut streamed = Vec::new();
    while streamed.len() < all.len() {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the stream delivers")
            .expect("stdout reads")
            .expect("the stream goes on");
        let tx: Value = serde_json::from_str(&line).expect("each line is one JSON document");
        streamed.push(tx);
    }
    assert_eq!(&streamed, all, "the stream delivers what the blocks hold");
    follow.kill().await.expect("the follower stops");

    // Completions are a shell script, not JSON.
    let bash = trellis(&["completions", "bash"]).await.ok();
    assert!(bash.stdout.contains("_trellis"), "{bash}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_tls_is_reached_with_the_ca_named_by_ca_cert() {
    let node = DevNode::start_open().await.expect("dev node");
    let front = TlsFront::start(node.addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();
    let ca = ca.to_str().unwrap();
    let status = json_ok(&front.url(), &["--ca-cert", ca, "status"]).await;
    assert_eq!(status["chain_id"], "trellis-dev");
    // Without the CA the front's certificate is no one's: unreachable.
    let run = trellis(&["--node", &front.url(), "status"])
        .await
        .expect_code(6);
    assert!(run.stderr.contains("certificate"), "{run}");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    trellis(&[
        "--node",
        &front.url(),
        "--ca-cert",
        not_pem.to_str().unwrap(),
        "status",
    ])
    .await
    .expect_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_exit_with_their_documented_codes() {
    let node = DevNode::start_open().await.expect("dev node");
    let url = node.url("");
    let u = url.as_str();
    let dir = tempfile::tempdir().unwrap();

    // 6: nobody answers.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let run = trellis(&["--node", &nowhere, "status"])
        .await
        .expect_code(6);
    assert!(run.stderr.contains("could not reach"), "{run}");
    let run = trellis(&["--node", &nowhere, "--output", "json", "status"])
        .await
        .expect_code(6);
    assert_eq!(run.json()["error"]["class"], "unreachable");
    assert_eq!(run.json()["error"]["exit_code"], 6);

    // 2: usage, including amounts and dates the CLI refuses before signing anything.
    for (amount, maturity, says) in [
        ("1.234", "+1d", "decimal"),
        ("-5", "+1d", "negative"),
        ("1,00", "+1d", "commas"),
        (
            "999999999999999999999999999999999999999",
            "+1d",
            "too large",
        ),
        ("lots", "+1d", "not an amount"),
        ("100", "next week", "not a time"),
    ] {
        let amount = format!("--amount={amount}");
        let run = trellis(&[
            "--node",
            u,
            "--dev-account",
            "core-acme",
            "receivable",
            "issue",
            "--to",
            "supplier-t1",
            &amount,
            "--currency",
            "CNY",
            "--maturity",
            maturity,
            "--invoice",
            "INV-E",
        ])
        .await
        .expect_code(2);
        assert!(run.stderr.contains(says), "expected {says:?}:\n{run}");
    }
    trellis(&["--node", u, "receivable", "accept"])
        .await
        .expect_code(2);
    let run = trellis(&["--node", u, "receivable", "accept", "1"])
        .await
        .expect_code(2);
    assert!(run.stderr.contains("--key"), "{run}");

    // 7: key and file problems.
    let run = trellis(&[
        "--node",
        u,
        "--key",
        "/nonexistent/ops.pem",
        "receivable",
        "accept",
        "1",
    ])
    .await
    .expect_code(7);
    assert!(run.stderr.contains("key_file"), "{run}");
    let locked = dir.path().join("locked.pem");
    let locked = locked.to_str().unwrap();
    trellis_env(
        &["keys", "new", "--out", locked, "--encrypt"],
        &[("TRELLIS_NEW_KEY_PASSWORD", "right")],
    )
    .await
    .ok();
    let run = trellis(&["--node", u, "--key", locked, "receivable", "accept", "1"])
        .await
        .expect_code(7);
    assert!(run.stderr.contains("password_needed"), "{run}");
    let run = trellis_env(
        &["--node", u, "--key", locked, "receivable", "accept", "1"],
        &[("TRELLIS_KEY_PASSWORD", "wrong")],
    )
    .await
    .expect_code(7);
    assert!(run.stderr.contains("wrong_password"), "{run}");

    // 3: refused at admission: a well-formed key no organisation registered.
    let run = trellis_env(
        &["--node", u, "--key", locked, "receivable", "accept", "1"],
        &[("TRELLIS_KEY_PASSWORD", "right")],
    )
    .await
    .expect_code(3);
    assert!(run.stderr.contains("unknown_sender"), "{run}");

    // 4: failed in execution, with the contract's code.
    let issued = json_as(
        u,
        "core-acme",
        &[
            "receivable",
            "issue",
            "--to",
            "supplier-t1",
            "--amount",
            "1000 CNY",
            "--maturity",
            "+30d",
            "--invoice",
            "INV-E-1",
        ],
    )
    .await;
    let root = issued["piece"].to_string();
    json_as(u, "supplier-t1", &["receivable", "accept", &root]).await;
    let run = trellis(&[
        "--node",
        u,
        "--dev-account",
        "supplier-t2",
        "receivable",
        "transfer",
        &root,
        "--to",
        "supplier-t2",
    ])
    .await
    .expect_code(4);
    assert!(run.stderr.contains("not_holder"), "{run}");
    let run = trellis(&[
        "--node",
        u,
        "--output",
        "json",
        "--dev-account",
        "core-acme",
        "receivable",
        "issue",
        "--to",
        "supplier-t1",
        "--amount",
        "1000 CNY",
        "--maturity",
        "+30d",
        "--invoice",
        "INV-E-1",
    ])
    .await
    .expect_code(4);
    let error = &run.json()["error"];
    assert_eq!(error["code"], "invoice_used");
    assert_eq!(error["class"], "failed");
    assert!(error["tx_hash"].is_string());

    // 5: admitted, but not committed within --timeout.
    let run = trellis(&[
        "--node",
        u,
        "--timeout",
        "0s",
        "--dev-account",
        "core-acme",
        "receivable",
        "issue",
        "--to",
        "supplier-t1",
        "--amount",
        "1000 CNY",
        "--maturity",
        "+30d",
        "--invoice",
        "INV-E-2",
    ])
    .await
    .expect_code(5);
    assert!(run.stderr.contains("trellis tx"), "{run}");

    // 8: not found.
    for args in [
        vec!["receivable", "show", "999999"],
        vec!["block", "999999"],
        vec![
            "tx",
            "0000000000000000000000000000000000000000000000000000000000000001",
        ],
    ] {
        let mut all = vec!["--node", u];
        all.extend(args);
        trellis(&all).await.expect_code(8);
    }
}

/// A transaction the node dropped reads as dropped, with why. (Exit code 10,
/// a command's own transaction dropped, cannot be provoked on one honest
/// node: the CLI takes the chain's next nonce, so its transactions have no
/// gap to expire behind and no rival for their nonce.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_shows_a_dropped_transaction_and_why() {
    use trellis_sdk::{Client, Error};
    use trellis_types::{Bytes, Payload, SystemOp, Transaction};
    let node = DevNode::start_open().await.expect("dev node");
    let url = node.url("");
    let key = trellis_genesis::dev_account("core-acme/ops");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Nonce 3 while 0 is next: it waits behind the gap until it expires.
    let gapped = Transaction {
        chain_id: "trellis-dev".into(),
        sender: key.public(),
        nonce: 3,
        expires_at_ms: now_ms + 1_500,
        payload: Payload::System(SystemOp::Remark {
            data: Bytes(b"behind a gap".to_vec()),
        }),
    }
    .sign(&key);
    let client = Client::builder().endpoint(&url).build().unwrap();
    let pending = client.submit_signed(&gapped).await.expect("admitted");
    let waited = pending.wait_for_commit(Duration::from_secs(30)).await;
    assert!(matches!(waited, Err(Error::Dropped { .. })), "{waited:?}");

    let hash = gapped.hash().to_hex();
    let shown = json_ok(&url, &["tx", &hash]).await;
    assert_eq!(
        (&shown["status"], &shown["reason"]),
        (&"dropped".into(), &"expired".into())
    );
    let table = trellis(&["--node", &url, "tx", &hash]).await;
    assert!(table.ok().stdout.contains("dropped (expired)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_round_trip_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let show = async |file: &str, envs: &[(&str, &str)]| -> Value {
        trellis_env(&["--output", "json", "keys", "show", file], envs)
            .await
            .ok()
            .json()
    };

    // An openssl key, imported as it is, as DER, and encrypted.
    let (key, pw) = (at("openssl.pem"), at("pw.txt"));
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &key]);
    let openssl_public = openssl(&["pkey", "-in", &key, "-pubout"]);
    std::fs::write(&pw, "s3cret phrase\n").unwrap();
    let imported = trellis(&[
        "--output",
        "json",
        "keys",
        "import",
        &key,
        "--out",
        &at("a.pem"),
    ])
    .await
    .ok()
    .json();
    assert_eq!(imported["public_key_pem"], openssl_public);
    assert_eq!(imported["encrypted"], false);
    assert_eq!(
        show(&at("a.pem"), &[]).await["public_key_pem"],
        openssl_public
    );

    openssl(&["pkey", "-in", &key, "-outform", "DER", "-out", &at("k.der")]);
    let from_der = trellis(&[
        "--output",
        "json",
        "keys",
        "import",
        &at("k.der"),
        "--out",
        &at("b.pem"),
    ])
    .await
    .ok()
    .json();
    assert_eq!(from_der["public_key"], imported["public_key"]);

    let encrypted = trellis(&[
        "--output",
        "json",
        "keys",
        "import",
        &key,
        "--out",
        &at("c.pem"),
        "--encrypt",
        "--new-password-file",
        &pw,
    ])
    .await
    .ok()
    .json();
    assert_eq!(encrypted["encrypted"], true);
    assert!(
        std::fs::read_to_string(at("c.pem"))
            .unwrap()
            .contains("ENCRYPTED PRIVATE KEY")
    );
    let pass = format!("file:{pw}");
    assert_eq!(
        openssl(&["pkey", "-in", &at("c.pem"), "-passin", &pass, "-pubout"]),
        openssl_public,
        "openssl reads the encrypted file"
    );
    let shown = trellis(&[
        "--output",
        "json",
        "--password-file",
        &pw,
        "keys",
        "show",
        &at("c.pem"),
    ])
    .await
    .ok()
    .json();
    assert_eq!(shown["public_key"], imported["public_key"]);
    assert_eq!(shown["encrypted"], true);
    trellis(&["keys", "show", &at("c.pem")])
        .await
        .expect_code(7);

    // openssl's own encrypted key.
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-aes-256-cbc",
        "-pass",
        "pass:opensesame",
        "-out",
        &at("o-enc.pem"),
    ]);
    let o_public = openssl(&[
        "pkey",
        "-in",
        &at("o-enc.pem"),
        "-passin",
        "pass:opensesame",
        "-pubout",
    ]);
    let run = trellis_env(
        &[
            "--output",
            "json",
            "keys",
            "import",
            &at("o-enc.pem"),
            "--out",
            &at("d.pem"),
        ],
        &[("TRELLIS_KEY_PASSWORD", "opensesame")],
    )
    .await
    .ok();
    assert_eq!(run.json()["public_key_pem"], o_public);

    // A new key: owner-only, openssl reads it, never overwritten.
    let new = trellis(&["--output", "json", "keys", "new", "--out", &at("new.pem")])
        .await
        .ok()
        .json();
    assert_eq!(
        openssl(&["pkey", "-in", &at("new.pem"), "-pubout"]),
        new["public_key_pem"].as_str().unwrap()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(at("new.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = std::fs::read(at("new.pem")).unwrap();
    let run = trellis(&["keys", "new", "--out", &at("new.pem")])
        .await
        .expect_code(7);
    assert!(run.stderr.contains("key_exists"), "{run}");
    assert_eq!(std::fs::read(at("new.pem")).unwrap(), before);
    let run = trellis(&["keys", "new", "--out", &at("e.pem"), "--encrypt"])
        .await
        .expect_code(7);
    assert!(run.stderr.contains("TRELLIS_NEW_KEY_PASSWORD"), "{run}");

    // Not ed25519, not a key at all.
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &at("ec.pem"),
    ]);
    let run = trellis(&["keys", "import", &at("ec.pem"), "--out", &at("f.pem")])
        .await
        .expect_code(7);
    assert!(run.stderr.contains("key_not_ed25519"), "{run}");
    std::fs::write(at("junk.pem"), "hello").unwrap();
    trellis(&["keys", "import", &at("junk.pem"), "--out", &at("g.pem")])
        .await
        .expect_code(7);
    assert!(!Path::new(&at("f.pem")).exists() && !Path::new(&at("g.pem")).exists());
}

// ---------------------------------------------------------------------------
// Four validators

/// `trellis-node localnet` in a process group of its own: dropping it stops
/// the group (SIGTERM, then SIGKILL for whatever is left), so no node outlives the test.
struct Localnet {
    child: std::process::Child,
    apis: Vec<String>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Localnet {
    const VALIDATORS: u16 = 4;

    async fn start(binary: &Path) -> Localnet {
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let (api, p2p) = (free_ports(Self::VALIDATORS), free_ports(Self::VALIDATORS));
            let log = dir.path().join("localnet.log");
            let out = std::fs::File::create(&log).unwrap();
            let child = {
                use std::os::unix::process::CommandExt;
                std::process::Command::new(binary)
                    .args([
                        "localnet",
                        "--validators",
                        &Self::VALIDATORS.to_string(),
                        "--dir",
                    ])
                    .arg(dir.path().join("net"))
                    .args(["--base-api-port", &api.to_string()])
                    .args(["--base-p2p-port", &p2p.to_string()])
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().unwrap())
                    .stderr(out)
                    .process_group(0)
                    .spawn()
                    .expect("trellis-node localnet starts")
            };
            let apis = (0..Self::VALIDATORS)
                .map(|i| format!("http://127.0.0.1:{}", api + i))
                .collect();
            let mut net = Localnet {
                child,
                apis,
                log,
                dir,
            };
            if net.wait_committing().await {
                return net;
            }
            // A port was taken between our probe and the nodes' binds: try others.
        }
        panic!("the local network did not start in three tries");
    }

    /// The network's genesis file, as localnet wrote it.
    fn genesis(&self) -> String {
        let path = self.dir.path().join("net").join("genesis.json");
        path.to_str().unwrap().to_owned()
    }

    /// Waits until every node has committed a block; false if localnet exited.
    async fn wait_committing(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(90);
        for api in self.apis.clone() {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    assert!(
                        log.contains("in use") || log.contains("binding"),
                        "localnet exited with {status}:\n{log}"
                    );
                    return false;
                }
                let run = trellis(&["--node", &api, "--output", "json", "status"]).await;
                if run.code == 0 && run.json()["height"].as_u64().unwrap_or(0) >= 1 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{api} did not commit a block in time:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        true
    }
}

impl Drop for Localnet {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        if let Ok(None) = self.child.try_wait() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &group])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Whatever is left of the group (localnet stops its nodes on SIGTERM; this is the backstop).
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of `count` consecutive free loopback ports, as the bench picks them.
fn free_ports(count: u16) -> u16 {
    trellis_cli::devnode::free_ports(count, None).expect("consecutive free loopback ports")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_on_a_four_validator_local_network() {
    let net = Localnet::start(&node_binary()).await;
    let nodes = net.apis.join(",");
    let demo = trellis(&[
        "--node",
        &nodes,
        "--output",
        "json",
        "demo",
        "--no-start",
        "--maturity-in",
        "30s",
    ])
    .await
    .ok()
    .json();
    assert_eq!(demo["chain_id"], "trellis-local");
    assert_demo_story(&demo);
    // Every validator holds the same settled receivable, which the bank
    // that financed it reads (these nodes ask who reads).
    let t3 = demo["pieces"]["supplier_t3"].to_string();
    for api in &net.apis {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let show = ["receivable", "show", &t3];
            let piece = trellis(
                &[
                    &[
                        "--node",
                        api,
                        "--output",
                        "json",
                        "--dev-account",
                        "bank-first",
                    ][..],
                    &show,
                ]
                .concat(),
            )
            .await;
            if piece.code == 0 && piece.json()["status"] == "settled" {
                assert_eq!(piece.json()["settlement"]["paid_to"], "bank-first");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{api} never saw the settlement:\n{piece}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // And each proves it: the record in the state of a block that at least
    // three of the genesis file's four validators precommitted, and the
    // settling transaction with its receipt in that block's roots.
    let genesis = net.genesis();
    let last = &demo["steps"].as_array().unwrap().last().unwrap()["transaction"];
    let hash = last["tx_hash"].as_str().unwrap();
    for api in &net.apis {
        let bank = ["--dev-account", "bank-first", "--genesis", &genesis];
        let args = [&bank[..], &["receivable", "show", &t3, "--verify"]].concat();
        let verified = json_ok(api, &args).await;
        assert_eq!(verified["status"], "settled", "{api}: {verified}");
        assert!(
            verified["verified"]["height"].as_u64() > Some(0),
            "{verified}"
        );
        let proven = json_ok(api, &[&bank[..], &["tx", hash, "--verify"]].concat()).await;
        assert_eq!(proven["height"], last["height"], "{api}: {proven}");
        assert_eq!(proven["receipt"]["status"], "success", "{api}: {proven}");
    }
}

/// `trellis evidence` pages through everything the node holds from a
/// height on and checks each proof itself, so a forged one, or one from
/// another chain, is shown as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_lists_every_proof_from_a_height_each_checked_here() {
    let mut node = DevNode::start_open().await.expect("dev node");
    let empty = json_ok(&node.url(""), &["evidence"]).await;
    assert_eq!(empty["evidence"], serde_json::json!([]));

    // More than one page (the API gives at most 100) by the dev chain's
    // validator, a forged proof, one from another chain and one by a key
    // that is no validator's.
    let (_, nodes) = trellis_genesis::build(&trellis_genesis::NetworkSpec::dev()).unwrap();
    let key = nodes[0].consensus.clone().expect("the dev validator's key");
    let mut proofs: Vec<_> = (1..=150)
        .map(|h| equivocation(&key, "trellis-dev", h))
        .collect();
    let mut forged = equivocation(&key, "trellis-dev", 200);
    forged.second.signature = forged.first.signature;
    proofs.push(forged);
    proofs.push(equivocation(&key, "another-chain", 201));
    let stranger = trellis_types::KeyPair::insecure_from_label("not a validator");
    proofs.push(equivocation(&stranger, "trellis-dev", 202));
    node.stop().await.unwrap();
    record_evidence(node.data_dir(), &proofs).unwrap();
    node.resume().await.unwrap();

    let listed = json_ok(&node.url(""), &["evidence", "--from-height", "11"]).await;
    let heights: Vec<u64> = listed["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["second"]["data"]["height"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (11..=150).chain([200, 201, 202]).collect();
    assert_eq!(
        heights, expected,
        "every proof from height 11, once, in order"
    );
    let checks = listed["checks"].as_array().unwrap();
    assert!(
        checks[..140].iter().all(Value::is_null),
        "the real proofs check"
    );
    assert_eq!(checks[140], "a vote's signature is not its validator's");
    assert_eq!(checks[141], "the votes are for chain another-chain");
    assert_eq!(
        checks[142],
        format!("{} is not a validator's key", stranger.public())
    );

    let text = trellis(&["--node", &node.url(""), "evidence", "--from-height", "150"])
        .await
        .ok()
        .stdout;
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[0].trim_end().ends_with(" valid"), "{text}");
    assert!(rows[1].contains("invalid: a vote's signature"), "{text}");
    assert!(
        rows[2].contains("invalid: the votes are for chain another-chain"),
        "{text}"
    );
    assert!(rows[3].contains("is not a validator's key"), "{text}");

    // The set the proofs were checked against.
    let set = json_ok(&node.url(""), &["validators"]).await;
    assert_eq!(set["quorum"], 1);
    let listed = set["validators"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "validator-0");
    assert_eq!(listed[0]["consensus_key"], key.public().to_hex());
    let text = trellis(&["--node", &node.url(""), "validators"])
        .await
        .ok()
        .stdout;
    assert!(
        text.contains("validator-0") && text.contains(&key.public().to_hex()),
        "{text}"
    );
    assert!(
        text.contains("a block needs 1 of these 1 validators' votes"),
        "{text}"
    );
}

/// `trellis export` reads a running node's chain into the file `trellis-node
/// import-chain` takes: imported into a new store, every block executed
/// again, it reaches the block and state root the node had at that height.
/// An existing file is never replaced, nor a height past the head asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_from_a_running_node_imports_into_a_new_store_at_the_same_head() {
    let node = DevNode::start().await.expect("dev node");
    let url = node.url("");
    let u = url.as_str();
    let piece = issue_to_tier_1(u, "1,000.00", "INV-EXPORT").await;
    json_as(u, "supplier-t1", &["receivable", "accept", &piece]).await;
    let status = json_ok(u, &["status"]).await;
    let height = status["height"].as_u64().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.export");
    let out = file.to_str().unwrap();
    let to = height.to_string();
    // Whole blocks are a regulator's: unsigned, or signed by a supplier, the
    // node refuses; the regulator's key exports.
    let run = trellis(&["--node", u, "export", "--out", out])
        .await
        .expect_code(3);
    assert!(run.stderr.contains("unauthenticated"), "{run}");
    let as_supplier = ["--dev-account", "supplier-t1", "export", "--out", out];
    let run = trellis(&[&["--node", u][..], &as_supplier].concat())
        .await
        .expect_code(3);
    assert!(run.stderr.contains("forbidden"), "{run}");
    assert!(!file.exists() && !dir.path().join("chain.export.partial").exists());
    let exported = json_as(
        u,
        "regulator",
        &["export", "--out", out, "--to-height", &to],
    )
    .await;
    assert_eq!(exported["last"], height, "{exported}");
    assert_eq!(exported["chain_id"], "trellis-dev");
    let run = trellis(&["--node", u, "export", "--out", out])
        .await
        .expect_code(2);
    assert!(run.stderr.contains("never written over a file"), "{run}");
    let past = (height + 1_000).to_string();
    let elsewhere = dir.path().join("past.export");
    let args = [
        "--node",
        u,
        "export",
        "--out",
        elsewhere.to_str().unwrap(),
        "--to-height",
        &past,
    ];
    let run = trellis(&args).await.expect_code(2);
    assert!(run.stderr.contains("above the node's head"), "{run}");
    assert!(!elsewhere.exists());

    let imported = dir.path().join("imported");
    let output = tokio::process::Command::new(node_binary())
        .args([
            "import-chain",
            "--data-dir",
            imported.to_str().unwrap(),
            "--from",
            out,
        ])
        .kill_on_drop(true)
        .output()
        .await
        .expect("trellis-node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let head = format!(
        "{height} blocks imported, 0 already in the store; head {height} (state root {})",
        status["state_root"].as_str().unwrap()
    );
    assert!(stdout.contains(&head), "{stdout}");
}

/// Against a node that asks who reads, `trellis` signs its reads with the
/// key it is given, and each member sees what concerns it: the holder and
/// the issuer a piece, another supplier nothing (as if there were no such
/// piece), an unsigned read not even that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_signed_with_the_key_given_and_show_what_concerns_it() {
    let node = DevNode::start().await.expect("dev node");
    let url = node.url("");
    let u = url.as_str();
    let piece = issue_to_tier_1(u, "500.00", "INV-READS").await;
    for org in ["supplier-t1", "core-acme", "regulator"] {
        let shown = json_as(u, org, &["receivable", "show", &piece]).await;
        assert_eq!(shown["holder"], "supplier-t1", "{org}: {shown}");
    }
    let as_t2 = [
        "--node",
        u,
        "--dev-account",
        "supplier-t2",
        "receivable",
        "show",
        &piece,
    ];
    let run = trellis(&as_t2).await.expect_code(8);
    assert!(run.stderr.contains("not_found"), "{run}");
    let run = trellis(&["--node", u, "receivable", "show", &piece])
        .await
        .expect_code(3);
    assert!(run.stderr.contains("unauthenticated"), "{run}");
    // What is public needs no key.
    assert_eq!(json_ok(u, &["status"]).await["chain_id"], "trellis-dev");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_admits_an_admin_then_a_change_waits_for_its_approval() {
    let node = DevNode::start().await.expect("dev node");
    let url = node.url("");
    let u = url.as_str();
    let key = json_as(u, "admin-b", &["keys", "show"]).await["public_key"]
        .as_str()
        .expect("a public key")
        .to_owned();

    // The dev chain's one admin organisation is the majority alone.
    let admitted = json_as(
        u,
        "consortium",
        &[
            "governance",
            "propose",
            "add-organisation",
            "--id",
            "admin-b",
            "--name",
            "Admin B",
            "--role",
            "admin",
            "--admin-key",
            &key,
        ],
    )
    .await;
    assert_eq!(admitted["passed"], true, "{admitted}");
    assert_eq!(admitted["events"][1], "organisation_added", "{admitted}");

    // With two, a change needs both.
    let proposed = json_as(
        u,
        "consortium",
        &[
            "gov",
            "propose",
            "set-roles",
            "--org",
            "supplier-t1",
            "--role",
            "bank",
            "--role",
            "supplier",
            "--lifetime",
            "1h",
        ],
    )
    .await;
    assert_eq!(
        (
            &proposed["passed"],
            &proposed["approvals"],
            &proposed["needed"]
        ),
        (&Value::Bool(false), &Value::from(1), &Value::from(2)),
        "{proposed}"
    );
    let id = proposed["proposal"].as_str().expect("an id").to_owned();
    let listed = json_as(u, "supplier-t2", &["gov", "list"]).await;
    assert_eq!(listed["proposals"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["proposals"][0]["needed"], 2, "{listed}");
    let shown = json_as(u, "supplier-t2", &["gov", "show", &id]).await;
    assert_eq!(
        shown["proposal"]["change"]["set_roles"]["roles"],
        serde_json::json!(["supplier", "bank"]),
        "the roles go sorted: {shown}"
    );

    // Not an admin: the chain refuses (exit 4); a role that does not exist: usage (2).
    let run = trellis(&[
        "--node",
        u,
        "--dev-account",
        "supplier-t2",
        "gov",
        "approve",
        &id,
    ])
    .await
    .expect_code(4);
    assert!(run.stderr.contains("not_admin"), "{run}");
    let run = trellis(&[
        "--node",
        u,
        "--dev-account",
        "consortium",
        "gov",
        "propose",
        "set-roles",
        "--org",
        "supplier-t1",
        "--role",
        "banker",
    ])
    .await
    .expect_code(2);
    assert!(run.stderr.contains("not a role"), "{run}");

    let approved = json_as(u, "admin-b", &["gov", "approve", &id]).await;
    assert_eq!(approved["passed"], true, "{approved}");
    assert_eq!(
        approved["events"],
        serde_json::json!(["roles_set"]),
        "{approved}"
    );
    let run = trellis(&[
        "--node",
        u,
        "--dev-account",
        "supplier-t2",
        "gov",
        "show",
        &id,
    ])
    .await
    .expect_code(8);
    assert!(run.stderr.contains("proposal_not_found"), "{run}");
}
