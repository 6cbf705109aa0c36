//! The `trellis-node` binary as an operator runs it: real processes, loopback
//! ports, signals. Every child is killed on drop if it is still running, and
//! every wait has a deadline.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use trellis_genesis::Genesis;
use trellis_node::config::{self, NodeConfig};
use trellis_node::node::now_ms;
use trellis_types::access::RequestSignature;
use trellis_types::{Bytes, Payload, SignedTransaction, SystemOp, Transaction};

const BIN: &str = env!("CARGO_BIN_EXE_trellis-node");
const DEADLINE: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;

/// A child process, killed and reaped on drop unless it has exited.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Runs `trellis-node args` in `dir`, its stdout and stderr to `dir/<name>.{out,err}`.
    fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
        Proc::spawn_with(dir, name, args, &[])
    }

    /// [`Proc::spawn`] with environment variables `env` set.
    fn spawn_with(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let out = File::create(dir.join(format!("{name}.out"))).unwrap();
        let log = dir.join(format!("{name}.err"));
        let child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("trellis-node starts");
        Proc { child, log }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("the child can be waited for")
    }

    /// Waits (bounded) for the process to exit by itself.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {DEADLINE:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a helper command of `trellis-node` to completion (bounded).
async fn run_to_exit(dir: &Path, name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut proc = Proc::spawn(dir, name, args);
    let status = proc.wait_exit().await;
    (status, proc.stdout(), proc.stderr())
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS gives a free loopback port")
}

/// A remark by dev account `sender`, signed.
fn signed_remark(sender: &str, nonce: u64, text: &str) -> SignedTransaction {
    let key = trellis_genesis::dev_account(sender);
    Transaction {
        chain_id: "trellis-dev".into(),
        sender: key.public(),
        nonce,
        expires_at_ms: now_ms() + 10 * 60 * 1000,
        payload: Payload::System(SystemOp::Remark {
            data: Bytes(text.as_bytes().to_vec()),
        }),
    }
    .sign(&key)
}

/// A `trellis-node --dev` process and its API address.
struct DevProcess {
    proc: Proc,
    base: String,
    client: reqwest::Client,
}

impl DevProcess {
    /// Starts a dev node on `data_dir` and waits until its API answers; a port
    /// taken between our probe and its bind means another try.
    async fn start(dir: &Path, name: &str, data_dir: &Path) -> DevProcess {
        DevProcess::start_with(dir, name, data_dir, &[], &[]).await
    }

    /// [`DevProcess::start`] with more arguments `args` and environment
    /// variables `env` set.
    async fn start_with(
        dir: &Path,
        name: &str,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> DevProcess {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        for attempt in 1..=START_ATTEMPTS {
            let listen = format!("127.0.0.1:{}", free_port());
            let data = data_dir.to_str().unwrap();
            let dev = ["--dev", "--data-dir", data, "--api-listen", &listen];
            let mut proc = Proc::spawn_with(dir, name, &[&dev[..], args].concat(), env);
            let base = format!("http://{listen}");
            let deadline = Instant::now() + DEADLINE;
            loop {
                if let Some(status) = proc.exited() {
                    let stderr = proc.stderr();
                    if attempt < START_ATTEMPTS && stderr.contains("binding the API") {
                        break;
                    }
                    panic!(
                        "the node exited with {status} before its API answered; stderr:\n{stderr}"
                    );
                }
                if let Ok(r) = client.get(format!("{base}/health")).send().await
                    && r.status().is_success()
                {
                    return DevProcess { proc, base, client };
                }
                assert!(
                    Instant::now() < deadline,
                    "no /health within {DEADLINE:?}; stderr:\n{}",
                    proc.stderr()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// `GET path` signed by the dev chain's account `label`.
    async fn get_as(&self, label: &str, path: &str) -> u16 {
        let key = trellis_genesis::dev_account(label);
        let auth = RequestSignature::sign(&key, "trellis-dev", "GET", path, &[], now_ms());
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("authorization", auth.header_value())
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }

    async fn height(&self) -> u64 {
        let (status, body) = self.get("/status").await;
        assert_eq!(status, 200, "{body}");
        body["height"].as_u64().expect("/status has a height")
    }

    /// Polls /status until its height is at least `min`; returns it.
    async fn wait_height(&self, min: u64) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let height = self.height().await;
            if height >= min {
                return height;
            }
            assert!(
                Instant::now() < deadline,
                "/status stayed at {height}, below {min}, for {DEADLINE:?}; stderr:\n{}",
                self.proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The hash of the block at `height`, which must exist.
    async fn block_hash(&self, height: u64) -> String {
        let (status, body) = self.get(&format!("/v1/blocks/{height}")).await;
        assert_eq!(status, 200, "block {height}: {body}");
        body["hash"]
            .as_str()
            .expect("a block has a hash")
            .to_owned()
    }

    /// Posts `signed` (canonical bytes); the HTTP status, or `None` if the
    /// node could not be reached.
    async fn post_transaction(&self, signed: &SignedTransaction) -> Option<u16> {
        let response = self
            .client
            .post(format!("{}/v1/transactions", self.base))
            .header("content-type", "application/octet-stream")
            .body(trellis_types::encode(signed))
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    /// Submits a remark by dev account `sender`; returns the HTTP status and
    /// the transaction's hash.
    async fn submit_remark(&self, sender: &str, nonce: u64, text: &str) -> (u16, String) {
        let signed = signed_remark(sender, nonce, text);
        let status = self
            .post_transaction(&signed)
            .await
            .expect("the node answers");
        (status, hex::encode(signed.hash().0))
    }

    /// Submits remarks by `sender` with `nonces`, each accepted, and waits
    /// for the last to commit; returns its hash and height.
    async fn commit_remarks(
        &self,
        sender: &str,
        nonces: std::ops::Range<u64>,
        text: &str,
    ) -> (String, u64) {
        let mut last = String::new();
        for nonce in nonces {
            let (status, hash) = self.submit_remark(sender, nonce, text).await;
            assert_eq!(status, 202, "nonce {nonce}");
            last = hash;
        }
        let height = self.wait_committed(&last).await;
        (last, height)
    }

    /// Polls the transaction until it is committed; returns its height.
    async fn wait_committed(&self, hash: &str) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, body) = self.get(&format!("/v1/transactions/{hash}")).await;
            if status == 200 && body["status"] == "committed" {
                assert_eq!(body["receipt"]["status"], "success", "{body}");
                return body["height"]
                    .as_u64()
                    .expect("a committed transaction has a height");
            }
            assert!(
                Instant::now() < deadline,
                "{hash} not committed within {DEADLINE:?}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn dev_node_process_commits_and_stops_cleanly_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut node = DevProcess::start(tmp.path(), "first", &data_dir).await;
    // Its generated node key is not the genesis' validator-0 node key, yet it
    // is that validator, alone: no transport, no outbox to forward from.
    assert!(
        node.proc
            .stderr()
            .contains("running without a peer-to-peer transport"),
        "stderr:\n{}",
        node.proc.stderr()
    );

    let (status, signed, stderr) = run_to_exit(
        tmp.path(),
        "dev-tx",
        &["dev-tx", "remark", "over a real socket", "--nonce", "0"],
    )
    .await;
    assert!(status.success(), "dev-tx failed: {stderr}");
    let response = node
        .client
        .post(format!("{}/v1/transactions", node.base))
        .header("content-type", "application/json")
        .body(signed.trim().to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    let hash = body["tx_hash"]
        .as_str()
        .expect("202 carries the tx hash")
        .to_owned();
    let committed_at = node.wait_committed(&hash).await;
    // /status is published after storage commits (and after the mempool is
    // pruned), so it may briefly lag the transaction's height.
    let height = node.wait_height(committed_at).await;

    node.proc.signal("-INT");
    let exit = node.proc.wait_exit().await;
    assert!(
        exit.success(),
        "SIGINT ended the node with {exit}; stderr:\n{}",
        node.proc.stderr()
    );

    let node = DevProcess::start(tmp.path(), "second", &data_dir).await;
    let resumed = node.height().await;
    assert!(
        resumed >= height,
        "resumed at {resumed}, below {height} before the restart"
    );
    assert_eq!(
        node.wait_committed(&hash).await,
        committed_at,
        "the transaction stays where it was committed"
    );

    let mut proc = node.proc;
    proc.signal("-TERM");
    let exit = proc.wait_exit().await;
    assert!(
        exit.success(),
        "SIGTERM ended the node with {exit}; stderr:\n{}",
        proc.stderr()
    );
}

/// A node is killed (SIGKILL) the moment /status shows a new block while it
/// commits bursts of transactions: often the block is decided and shown but
/// not yet on disk (the "chain opened" line it prints on restart is then below
/// what was seen). Each restart must keep every block seen before, the same
/// (a decided block that was not written is decided again from the safety
/// record, where the node locked on it), and go on committing.
#[tokio::test]
async fn a_dev_node_killed_while_committing_keeps_every_block_it_showed() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    for (round, sender) in ["core-acme/ops", "bank-first/ops", "supplier-t1/ops", ""]
        .into_iter()
        .enumerate()
    {
        let mut node = DevProcess::start(tmp.path(), &format!("run-{round}"), &data_dir).await;
        let last_seen = seen.keys().last().copied().unwrap_or(0);
        let log = node.proc.stderr();
        let opened = log.lines().find(|l| l.contains("chain opened"));
        eprintln!("run {round}: {last_seen} seen before the kill; {opened:?}");
        node.wait_height(last_seen).await;
        for (height, hash) in &seen {
            assert_eq!(
                node.block_hash(*height).await,
                *hash,
                "block {height} changed across a kill; stderr:\n{}",
                node.proc.stderr()
            );
        }
        if sender.is_empty() {
            break;
        }
        // A burst of remarks, so that blocks are large while the node is killed.
        for nonce in 0..1000 {
            let text = format!("burst {round} {nonce}");
            let (status, _) = node.submit_remark(sender, nonce, &text).await;
            assert_eq!(status, 202, "nonce {nonce}");
        }
        // Kill the node the moment /status shows it a few blocks on: /status
        // shows a block as soon as it is decided, possibly before it is written.
        let from = node.height().await;
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, body) = node.get("/status").await;
            assert_eq!(status, 200, "{body}");
            let height = body["height"].as_u64().expect("/status has a height");
            if height > from {
                let hash = body["block_hash"].as_str().expect("and a block hash");
                seen.insert(height, hash.to_owned());
            }
            if height >= from + 3 {
                break;
            }
            assert!(Instant::now() < deadline, "stuck at {height}");
        }
        node.proc.child.kill().expect("SIGKILL is delivered");
        node.proc.child.wait().expect("the killed node is reaped");
    }
}

/// A node aborts at a chosen point of writing block 4 (the `TRELLIS_CRASH_AT`
/// test hook) while remarks stream in: once with the redo file synced and
/// nothing of the block in sled, once with half the block's records in sled
/// and flushed. Each restart must finish the block from the redo file, serve
/// it and its transactions as committed, and go on committing.
#[tokio::test]
async fn a_dev_node_that_dies_while_writing_a_block_finishes_it_on_restart() {
    const CRASH_HEIGHT: u64 = 4;
    for point in ["redo-synced", "half-applied"] {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let crash_at = format!("{point}@{CRASH_HEIGHT}");
        let env = [("TRELLIS_CRASH_AT", crash_at.as_str())];
        let mut node = DevProcess::start_with(tmp.path(), point, &data_dir, &[], &env).await;
        // Remarks from three senders until the node dies, so that blocks
        // 2 to 4 hold transactions (block 1 may be built before any arrives).
        let senders = ["core-acme/ops", "bank-first/ops", "supplier-t1/ops"];
        let mut sent = 0u64;
        while node.proc.exited().is_none() && sent < 3_000 {
            let sender = senders[(sent % 3) as usize];
            let signed = signed_remark(sender, sent / 3, &format!("{point} {sent}"));
            if node.post_transaction(&signed).await.is_none() {
                break; // The node is gone.
            }
            sent += 1;
        }
        let status = node.proc.wait_exit().await;
        assert!(!status.success(), "{point}: exited with {status}");
        assert!(
            node.proc.stderr().contains("aborting at"),
            "{point}: the hook did not fire; stderr:\n{}",
            node.proc.stderr()
        );
        assert!(
            data_dir.join("chain/trellis-redo").exists(),
            "{point}: the redo file is left"
        );

        let node = DevProcess::start(tmp.path(), &format!("{point}-restart"), &data_dir).await;
        let log = node.proc.stderr();
        assert!(
            log.contains(&format!("finished writing block {CRASH_HEIGHT}")),
            "{point}: stderr:\n{log}"
        );
        assert!(!data_dir.join("chain/trellis-redo").exists());
        let (status, block) = node.get(&format!("/v1/blocks/{CRASH_HEIGHT}")).await;
        assert_eq!(status, 200, "{point}: {block}");
        let receipts = block["receipts"].as_array().expect("a block has receipts");
        assert!(
            !receipts.is_empty(),
            "{point}: block {CRASH_HEIGHT} is empty"
        );
        for receipt in receipts {
            let tx = receipt["tx"]
                .as_str()
                .expect("a receipt names its transaction");
            assert_eq!(node.wait_committed(tx).await, CRASH_HEIGHT, "{point}: {tx}");
        }
        node.wait_height(CRASH_HEIGHT + 2).await;
    }
}

#[tokio::test]
async fn unknown_config_keys_are_refused_with_their_name() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, "[api]\nlistn = \"127.0.0.1:1\"\n").unwrap();
    let (status, _, stderr) =
        run_to_exit(tmp.path(), "node", &["--config", config.to_str().unwrap()]).await;
    assert!(
        !status.success(),
        "a config with an unknown key was accepted; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("listn"),
        "the error does not name the unknown key: {stderr}"
    );
    assert!(
        !tmp.path().join("data").exists(),
        "a refused config still created the data directory"
    );
}

#[tokio::test]
async fn genesis_generate_writes_a_network_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("net");
    let (status, stdout, stderr) = run_to_exit(
        tmp.path(),
        "generate",
        &[
            "genesis",
            "generate",
            "--validators",
            "4",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(status.success(), "genesis generate failed: {stderr}");

    let genesis = Genesis::load(&out.join("genesis.json")).expect("genesis.json parses");
    assert_eq!(genesis.validator_keys().len(), 4);
    let mut api_ports = Vec::new();
    for i in 0..4 {
        let path = out.join(format!("validator-{i}")).join("config.toml");
        assert!(
            stdout.contains(path.to_str().unwrap()),
            "{} is not listed in:\n{stdout}",
            path.display()
        );
        let config = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let genesis_path = config
            .genesis
            .as_deref()
            .expect("a generated config names its genesis");
        assert_eq!(Genesis::load(genesis_path).unwrap().hash(), genesis.hash());
        let key = config::read_key_file(
            config
                .validator_key
                .as_deref()
                .expect("a validator has a key"),
        )
        .unwrap();
        assert_eq!(
            key.public(),
            genesis.validator_keys()[i],
            "validator-{i}'s key is its genesis key"
        );
        assert!(config.api.listen.ip().is_loopback());
        api_ports.push(config.api.listen.port());
    }
    api_ports.dedup();
    assert_eq!(api_ports.len(), 4, "each node has its own API port");
}

/// A member of a production network makes its node's keys itself: `keygen`
/// writes a fresh key readable by its owner only and prints the public key
/// the genesis names, never replaces a key, and `public-key` reads one back;
/// a key file others could read is refused.
#[tokio::test]
async fn keygen_makes_a_private_key_and_never_replaces_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("validator.key");
    let path = out.to_str().unwrap();
    let (status, stdout, stderr) =
        run_to_exit(tmp.path(), "keygen", &["keygen", "--out", path]).await;
    assert!(status.success(), "keygen failed: {stderr}");
    let public = stdout.trim().to_owned();
    assert_eq!(
        config::read_key_file(&out).unwrap().public().to_string(),
        public
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let (status, _, stderr) = run_to_exit(tmp.path(), "again", &["keygen", "--out", path]).await;
    assert!(!status.success() && stderr.contains("exists"), "{stderr}");
    assert_eq!(
        config::read_key_file(&out).unwrap().public().to_string(),
        public
    );

    let (status, shown, _) = run_to_exit(tmp.path(), "show", &["public-key", path]).await;
    assert!(status.success());
    assert_eq!(shown.trim(), public);
    let other = tmp.path().join("node.key");
    let (_, second, _) = run_to_exit(
        tmp.path(),
        "other",
        &["keygen", "--out", other.to_str().unwrap()],
    )
    .await;
    assert_ne!(second.trim(), public, "each key from fresh randomness");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, PermissionsExt::from_mode(0o644)).unwrap();
        let (status, _, stderr) = run_to_exit(tmp.path(), "open", &["public-key", path]).await;
        assert!(
            !status.success() && stderr.contains("chmod 600"),
            "{stderr}"
        );
    }
}

/// A node of a network started with another member's node key would be
/// refused by every peer: it says so and stops instead of running unheard.
#[tokio::test]
async fn a_validator_with_another_members_node_key_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("net");
    let net = out.to_str().unwrap();
    let args = ["genesis", "generate", "--validators", "2", "--out", net];
    let (status, _, stderr) = run_to_exit(tmp.path(), "generate", &args).await;
    assert!(status.success(), "genesis generate failed: {stderr}");
    let node_key = |i: usize| out.join(format!("validator-{i}")).join("node.key");
    std::fs::copy(node_key(1), node_key(0)).unwrap();

    let config = out.join("validator-0").join("config.toml");
    let api = format!("127.0.0.1:{}", free_port());
    let args = ["--config", config.to_str().unwrap(), "--api-listen", &api];
    let (status, _, stderr) = run_to_exit(tmp.path(), "node", &args).await;
    assert!(!status.success(), "the node ran; stderr:\n{stderr}");
    assert!(
        stderr.contains("for validator validator-0, not this node's key"),
        "the error does not say whose key it should be: {stderr}"
    );
}

/// The operator's prune: refused while the node runs; on the stopped node it
/// keeps every block and the state of the heights asked for, answers 410
/// for state below them, and the node goes on committing.
#[tokio::test]
async fn prune_state_keeps_blocks_and_recent_state_and_the_node_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let data = data_dir.to_str().unwrap();
    let node = DevProcess::start(tmp.path(), "before", &data_dir).await;
    let sender = "core-acme/ops";
    let (last, committed_at) = node.commit_remarks(sender, 0..20, "before the prune").await;
    // Empty blocks follow, so that the heights pruned include the remarks'.
    let height = node.wait_height(committed_at + 2).await;
    let mut blocks = Vec::new();
    for h in 0..=height {
        blocks.push(node.block_hash(h).await);
    }

    let (status, _, stderr) = run_to_exit(
        tmp.path(),
        "prune-busy",
        &["prune-state", "--data-dir", data],
    )
    .await;
    assert!(
        !status.success(),
        "a prune beside the running node succeeded"
    );
    assert!(stderr.contains("stop the node first"), "{stderr}");
    assert_eq!(node.block_hash(height).await, blocks[height as usize]);

    let mut proc = node.proc;
    proc.signal("-TERM");
    assert!(proc.wait_exit().await.success(), "{}", proc.stderr());
    let (status, stdout, stderr) = run_to_exit(
        tmp.path(),
        "prune",
        &["prune-state", "--data-dir", data, "--keep", "2"],
    )
    .await;
    assert!(status.success(), "prune-state failed: {stderr}");
    // The node may have committed empty blocks after `height` was read and
    // before it stopped: the prune keeps the last two of whatever it has.
    let kept: Vec<u64> = stdout
        .split("kept the state of heights ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .map(|range| range.split(" to ").filter_map(|h| h.parse().ok()).collect())
        .unwrap_or_default();
    let [from, head] = kept[..] else {
        panic!("no kept range in: {stdout}");
    };
    assert!(head >= height && from == head - 1, "{stdout}");
    let height = head;

    let node = DevProcess::start(tmp.path(), "after", &data_dir).await;
    let (_, status) = node.get("/status").await;
    assert_eq!(status["earliest_state_height"], height - 1, "{status}");
    for (h, hash) in blocks.iter().enumerate() {
        assert_eq!(&node.block_hash(h as u64).await, hash, "block {h}");
    }
    assert_eq!(
        node.wait_committed(&last).await,
        committed_at,
        "the receipt stays"
    );
    let key = trellis_genesis::dev_account(sender).public();
    let account = hex::encode(trellis_node::execution::keys::account(&key));
    for kept in [height - 1, height] {
        let (status, body) = node
            .get(&format!("/v1/state/{account}?height={kept}&proof=true"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["value"].is_string(), "{body}");
    }
    let (status, body) = node
        .get(&format!("/v1/state/{account}?height={committed_at}"))
        .await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["code"], "pruned", "{body}");
    let (status, hash) = node.submit_remark(sender, 20, "after the prune").await;
    assert_eq!(status, 202);
    assert!(node.wait_committed(&hash).await > height);
}

/// The operator's export and import: the export is refused while the node
/// runs; from the stopped node it carries the chain to a new store, where
/// an import run again finds every block already there, and a node on the
/// new store serves the same blocks and receipts and goes on committing.
#[tokio::test]
async fn export_and_import_move_a_chain_to_a_new_store_that_a_node_goes_on_from() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let data = data_dir.to_str().unwrap();
    let file = tmp.path().join("chain.export");
    let out = file.to_str().unwrap();
    let node = DevProcess::start(tmp.path(), "source", &data_dir).await;
    let sender = "core-acme/ops";
    let (last, committed_at) = node
        .commit_remarks(sender, 0..10, "before the export")
        .await;

    let export = ["export-chain", "--data-dir", data, "--out", out];
    let (status, _, stderr) = run_to_exit(tmp.path(), "export-busy", &export).await;
    assert!(
        !status.success(),
        "an export beside the running node succeeded"
    );
    assert!(stderr.contains("stop the node first"), "{stderr}");
    assert!(!file.exists());

    let mut proc = node.proc;
    proc.signal("-TERM");
    assert!(proc.wait_exit().await.success(), "{}", proc.stderr());
    let (status, stdout, stderr) = run_to_exit(tmp.path(), "export", &export).await;
    assert!(status.success(), "export-chain failed: {stderr}");
    let height: u64 = stdout
        .split("exported heights 1 to ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no height in: {stdout}"));
    assert!(height >= committed_at, "{stdout}");

    let imported_dir = tmp.path().join("imported");
    let import = [
        "import-chain",
        "--data-dir",
        imported_dir.to_str().unwrap(),
        "--from",
        out,
    ];
    let (status, stdout, stderr) = run_to_exit(tmp.path(), "import", &import).await;
    assert!(status.success(), "import-chain failed: {stderr}");
    let imported = format!("{height} blocks imported, 0 already in the store; head {height}");
    assert!(stdout.contains(&imported), "{stdout}");
    let (status, stdout, stderr) = run_to_exit(tmp.path(), "import-again", &import).await;
    assert!(status.success(), "import-chain again failed: {stderr}");
    let again = format!("0 blocks imported, {height} already in the store");
    assert!(stdout.contains(&again), "{stdout}");

    // Into a store of another chain: refused, naming both, before any store is made.
    let net = tmp.path().join("net");
    let generate = [
        "genesis",
        "generate",
        "--validators",
        "1",
        "--out",
        net.to_str().unwrap(),
    ];
    let (status, _, stderr) = run_to_exit(tmp.path(), "generate", &generate).await;
    assert!(status.success(), "{stderr}");
    let other = tmp.path().join("other");
    let (status, _, stderr) = run_to_exit(
        tmp.path(),
        "import-other",
        &[
            "import-chain",
            "--data-dir",
            other.to_str().unwrap(),
            "--from",
            out,
            "--genesis",
            net.join("genesis.json").to_str().unwrap(),
        ],
    )
    .await;
    assert!(!status.success(), "an import into another chain succeeded");
    assert!(
        stderr.contains("the export is of chain trellis-dev")
            && stderr.contains("not trellis-local"),
        "{stderr}"
    );
    assert!(!other.exists());

    let source = DevProcess::start(tmp.path(), "source-again", &data_dir).await;
    let node = DevProcess::start(tmp.path(), "imported", &imported_dir).await;
    for h in 0..=height {
        assert_eq!(
            node.block_hash(h).await,
            source.block_hash(h).await,
            "block {h}"
        );
    }
    assert_eq!(
        node.wait_committed(&last).await,
        committed_at,
        "the receipt found"
    );
    let (status, hash) = node.submit_remark(sender, 10, "after the import").await;
    assert_eq!(status, 202);
    assert!(node.wait_committed(&hash).await > height);
}

/// The dev node's API is open (its keys are public); `--api-access members`
/// makes it ask who reads, as every other node does by default.
#[tokio::test]
async fn a_dev_node_asks_who_reads_when_told_to() {
    let tmp = tempfile::tempdir().unwrap();
    let open = DevProcess::start(tmp.path(), "open", &tmp.path().join("open")).await;
    assert_eq!(open.get("/v1/blocks/0").await.0, 200);
    drop(open);

    let data_dir = tmp.path().join("asking");
    let args = ["--api-access", "members"];
    let asking = DevProcess::start_with(tmp.path(), "asking", &data_dir, &args, &[]).await;
    let (status, body) = asking.get("/v1/blocks/0").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    assert_eq!(asking.get("/status").await.0, 200);
    assert_eq!(asking.get_as("supplier-t1/ops", "/v1/blocks/0").await, 403);
    assert_eq!(asking.get_as("regulator/ops", "/v1/blocks/0").await, 200);

    // The log line of each signed read says who read what, and the answer.
    let log = asking.proc.stderr();
    let read_by = |label: &str, org: &str, status: u16| {
        let key = trellis_genesis::dev_account(label).public();
        let who = [
            format!("key={key}"),
            format!("org={org}"),
            "path=/v1/blocks/0".to_owned(),
            format!("status={status}"),
        ];
        log.lines()
            .any(|line| who.iter().all(|field| line.contains(field.as_str())))
    };
    assert!(read_by("supplier-t1/ops", "supplier-t1", 403), "{log}");
    assert!(read_by("regulator/ops", "regulator", 200), "{log}");
}
