//! The `trellis` binary as people and scripts run it, against real
//! in-process dev nodes (`trellis_tests::DevNode`). Every child process is
//! killed on drop, every wait has a deadline, and nothing listens on or
//! dials an address other than loopback ports picked free for the test.

use serde_json::Value;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use trellis_tests::DevNode;

const BIN: &str = env!("CARGO_BIN_EXE_trellis");
/// Longest any one CLI run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(180);
/// Environment a developer may have set that would change what the CLI does.
const TRELLIS_ENV: [&str; 7] = [
    "TRELLIS_NODE",
    "TRELLIS_KEY",
    "TRELLIS_KEY_PASSWORD",
    "TRELLIS_NEW_KEY_PASSWORD",
    "TRELLIS_OUTPUT",
    "TRELLIS_CONTRACT",
    "TRELLIS_NODE_BIN",
];

/// What a finished `trellis` run left.
#[derive(Debug)]
struct Run {
    args: Vec<String>,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self}");
        self
    }

    /// Stdout as exactly one JSON document (trailing output fails the parse).
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self}"))
    }

    fn expect_code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "{self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trellis {:?} exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

fn command(args: &[&str], envs: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for var in TRELLIS_ENV {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `trellis args` to completion (bounded; killed if it overruns).
async fn trellis_env(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let child = command(args, envs).spawn().expect("trellis starts");
    let output = tokio::time::timeout(RUN_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("trellis {args:?} still running after {RUN_DEADLINE:?}"))
        .expect("trellis runs");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn trellis(args: &[&str]) -> Run {
    trellis_env(args, &[]).await
}

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

fn minor(amount: &Value) -> u128 {
    amount["minor_units"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an amount: {amount}"))
}

fn id(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an id: {v}"))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_prints_exactly_one_json_document() {
    let node = DevNode::start().await.expect("dev node");
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
async fn errors_exit_with_their_documented_codes() {
    let node = DevNode::start().await.expect("dev node");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_round_trip_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
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
