//! Four-validator networks (plus an observer) of real `trellis-node`
//! processes on loopback ports: a killed validator is survived and caught up,
//! two stopped validators halt commits until one returns (the observer's
//! presence changes nothing: it never votes), the observer follows the same
//! chain, serves it and forwards what is submitted to it, and `trellis-node
//! localnet` starts and stops the whole network. Every process is killed on drop if it is still running (so a
//! failing test leaves none behind), every wait has a deadline, and each test
//! has its own ports.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trellis_node::node::now_ms;
use trellis_types::access::RequestSignature;
use trellis_types::{Bytes, KeyPair, Payload, SystemOp, Transaction};

const BIN: &str = env!("CARGO_BIN_EXE_trellis-node");
const VALIDATORS: usize = 4;
/// The observer is the node after the validators.
const OBSERVER: usize = VALIDATORS;
const NODES: usize = VALIDATORS + 1;
/// Generous: these tests share two cores with builds and with each other.
const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);
/// Tries at starting a network whose freshly probed ports were taken meanwhile.
const START_ATTEMPTS: usize = 3;
/// Node logs without a line per API request (the tests poll a lot), with the
/// driver at debug: what was proposed and which messages were refused.
const RUST_LOG: &str = "info,trellis_node::api=warn,trellis_node::node=debug";
const CHAIN_ID: &str = "trellis-local";

// ---------------------------------------------------------------------------
// Processes

/// A child process, killed (SIGKILL) and reaped on drop unless it has exited.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Runs `trellis-node args` in `cwd`, stdout and stderr appended to `log`.
    fn spawn(cwd: &Path, log: PathBuf, args: &[&str]) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", RUST_LOG)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("trellis-node starts");
        Proc { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("the child can be waited for")
    }

    /// Sends a signal (`-TERM`, `-INT`) with kill(1): std only offers SIGKILL.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed child is reaped");
    }

    /// Waits (bounded) for the process to exit by itself.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pid {} still running after {within:?}; log:\n{}",
                self.pid(),
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// The last lines of a log file, for failure messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(25);
    format!("--- {} ---\n{}", path.display(), lines[from..].join("\n"))
}

/// Runs `trellis-node args` to completion (bounded) and asserts it succeeded.
async fn run_ok(cwd: &Path, log: PathBuf, args: &[&str]) {
    let mut proc = Proc::spawn(cwd, log, args);
    let status = proc.wait_exit(DEADLINE).await;
    assert!(
        status.success(),
        "trellis-node {args:?}: {status}\n{}",
        tail(&proc.log)
    );
}

// ---------------------------------------------------------------------------
// Ports

/// Ports handed out in this process: the tests of this file run in parallel.
static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A random number, different each call (std has no RNG; its hasher keys are random).
fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The first port of `count` consecutive loopback ports that are free now and
/// not handed out before in this process. They are taken below the kernel's
/// ephemeral range, so no outgoing connection (a libp2p dial, an HTTP
/// request) can grab one before its node binds it.
fn free_ports(count: u16) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(count).max(10_001));
    let mut reserved = RESERVED.lock().unwrap();
    for _ in 0..1_000 {
        let base = low + (random() % u64::from(high - low)) as u16;
        let ports = base..base + count;
        let free = ports
            .clone()
            .all(|p| !reserved.contains(&p) && TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok());
        if free {
            reserved.extend(ports);
            return base;
        }
    }
    panic!("no {count} consecutive free loopback ports in {low}..{high}");
}

/// A temporary directory, kept (and named on stderr) if the test fails, for its logs.
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new() -> Scratch {
        Scratch(Some(tempfile::tempdir().unwrap()))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("kept until drop").path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("logs and data kept in {}", dir.keep().display());
        }
    }
}

/// A node that exited at start because one of its ports was taken meanwhile.
fn lost_a_port_race(log: &Path) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.contains("in use") || text.contains("binding the API")
}

// ---------------------------------------------------------------------------
// HTTP

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET `url` as JSON, signed as the network's regulator (its nodes ask who
/// reads, and whole blocks are a regulator's); None when the node does not
/// answer.
async fn get_json(client: &reqwest::Client, url: &str) -> Option<(u16, serde_json::Value)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let path = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let regulator = trellis_genesis::dev_account("regulator/ops");
    let auth = RequestSignature::sign(&regulator, CHAIN_ID, "GET", &path, &[], now_ms());
    let response = client
        .get(url)
        .header("authorization", auth.header_value())
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

async fn answers(client: &reqwest::Client, api: &str) -> bool {
    matches!(
        get_json(client, &format!("{api}/health")).await,
        Some((200, _))
    )
}

async fn status(client: &reqwest::Client, api: &str) -> Option<serde_json::Value> {
    match get_json(client, &format!("{api}/status")).await {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

async fn height(client: &reqwest::Client, api: &str) -> Option<u64> {
    status(client, api).await?["height"].as_u64()
}

/// Hash and state root of the block at `height`, when the node has it.
async fn block_id(client: &reqwest::Client, api: &str, height: u64) -> Option<(String, String)> {
    match get_json(client, &format!("{api}/v1/blocks/{height}")).await {
        Some((200, body)) => Some((
            body["hash"].as_str()?.to_owned(),
            body["block"]["header"]["state_root"].as_str()?.to_owned(),
        )),
        _ => None,
    }
}

/// The height a transaction is committed at on this node, if it is.
async fn committed_at(client: &reqwest::Client, api: &str, hash: &str) -> Option<u64> {
    match get_json(client, &format!("{api}/v1/transactions/{hash}")).await {
        Some((200, body)) if body["status"] == "committed" => body["height"].as_u64(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// A network of node processes started with `--config`

/// Node `i`'s name in the genesis: `validator-{i}`, or `observer-0` last.
fn node_name(i: usize) -> String {
    match i {
        OBSERVER => "observer-0".to_owned(),
        _ => format!("validator-{i}"),
    }
}

struct Node {
    /// `validator-{i}` or `observer-0`, as genesis names it.
    name: String,
    dir: PathBuf,
    api: String,
    proc: Option<Proc>,
    /// Starts so far; each start logs to its own file.
    runs: usize,
}

impl Node {
    fn log(&self) -> PathBuf {
        self.dir.join(format!("run-{}.log", self.runs))
    }
}

struct Network {
    nodes: Vec<Node>,
    client: reqwest::Client,
    /// Held for its drop, last: the processes stop before their directory goes.
    _tmp: Scratch,
}

impl Network {
    /// Generates a network of 4 validators and an observer on fresh ports and
    /// starts every node; returns once every API answers.
    async fn start() -> Network {
        for attempt in 1..=START_ATTEMPTS {
            let tmp = Scratch::new();
            let (api_base, p2p_base) = (free_ports(NODES as u16), free_ports(NODES as u16));
            let out = tmp.path().join("net");
            run_ok(
                tmp.path(),
                tmp.path().join("generate.log"),
                &[
                    "genesis",
                    "generate",
                    "--validators",
                    &VALIDATORS.to_string(),
                    "--observers",
                    "1",
                    "--out",
                    out.to_str().unwrap(),
                    "--base-api-port",
                    &api_base.to_string(),
                    "--base-p2p-port",
                    &p2p_base.to_string(),
                ],
            )
            .await;
            let nodes = (0..NODES)
                .map(|i| {
                    let name = node_name(i);
                    Node {
                        dir: out.join(&name),
                        name,
                        api: format!("http://127.0.0.1:{}", api_base as usize + i),
                        proc: None,
                        runs: 0,
                    }
                })
                .collect();
            let mut net = Network {
                nodes,
                client: client(),
                _tmp: tmp,
            };
            for i in 0..NODES {
                net.start_node(i);
            }
            match net.wait_answering(&net.all()).await {
                Ok(()) => return net,
                Err(log) if attempt < START_ATTEMPTS && lost_a_port_race(&log) => continue,
                Err(log) => panic!("a node exited at start:\n{}", tail(&log)),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).collect()
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.proc.is_none(), "{} is already running", node.name);
        node.runs += 1;
        let config = node.dir.join("config.toml");
        node.proc = Some(Proc::spawn(
            &node.dir,
            node.log(),
            &["--config", config.to_str().unwrap()],
        ));
    }

    /// Waits until the nodes' APIs answer; Err with the log of one that exited instead.
    async fn wait_answering(&mut self, nodes: &[usize]) -> Result<(), PathBuf> {
        let deadline = Instant::now() + DEADLINE;
        for &i in nodes {
            loop {
                let node = &mut self.nodes[i];
                let proc = node.proc.as_mut().expect("the node was started");
                if proc.exited().is_some() {
                    return Err(proc.log.clone());
                }
                if answers(&self.client, &node.api).await {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not answer within {DEADLINE:?}\n{}",
                    self.nodes[i].name,
                    self.logs()
                );
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    async fn restart_node(&mut self, i: usize) {
        self.start_node(i);
        if let Err(log) = self.wait_answering(&[i]).await {
            panic!("{} exited on restart:\n{}", self.nodes[i].name, tail(&log));
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    fn kill_node(&mut self, i: usize) {
        let mut proc = self.nodes[i].proc.take().expect("the node runs");
        proc.kill();
    }

    /// Sends SIGTERM to all of `nodes`, then asserts each exits cleanly in time.
    async fn terminate_nodes(&mut self, nodes: &[usize]) {
        for &i in nodes {
            self.nodes[i]
                .proc
                .as_ref()
                .expect("the node runs")
                .signal("-TERM");
        }
        for &i in nodes {
            let mut proc = self.nodes[i].proc.take().expect("the node runs");
            let status = proc.wait_exit(DEADLINE).await;
            assert!(
                status.success(),
                "SIGTERM ended {} with {status}\n{}",
                self.nodes[i].name,
                tail(&proc.log)
            );
        }
    }

    async fn height(&self, i: usize) -> Option<u64> {
        height(&self.client, &self.nodes[i].api).await
    }

    /// Heights of `nodes`, each polled until it answers (bounded).
    async fn heights(&self, nodes: &[usize]) -> Vec<u64> {
        let mut heights = Vec::new();
        for &i in nodes {
            heights.push(self.wait_height(i, 0).await);
        }
        heights
    }

    /// Polls validator-`i` until its height is at least `min`; returns it.
    async fn wait_height(&self, i: usize, min: u64) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let height = self.height(i).await;
            if let Some(h) = height
                && h >= min
            {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "{} stayed at {height:?}, below {min}, for {DEADLINE:?}\n{}",
                self.nodes[i].name,
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_heights(&self, nodes: &[usize], min: u64) -> Vec<u64> {
        let mut heights = Vec::new();
        for &i in nodes {
            heights.push(self.wait_height(i, min).await);
        }
        heights
    }

    /// Polls until every one of `nodes` reports `peers` connected peers.
    async fn wait_peers(&self, nodes: &[usize], peers: u64) {
        let deadline = Instant::now() + DEADLINE;
        for &i in nodes {
            loop {
                let seen = status(&self.client, &self.nodes[i].api)
                    .await
                    .map(|s| s["peers"].clone());
                if seen.as_ref().and_then(|p| p.as_u64()) == Some(peers) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} has {seen:?} peers, not {peers}, after {DEADLINE:?}\n{}",
                    self.nodes[i].name,
                    self.logs()
                );
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Asserts every node holds the same block (hash and state root) at every
    /// height from 1 to `up_to`.
    async fn assert_same_chain(&self, up_to: u64) {
        for height in 1..=up_to {
            let mut ids = BTreeMap::new();
            for i in self.all() {
                let id = block_id(&self.client, &self.nodes[i].api, height).await;
                ids.insert(i, id);
            }
            let first = ids[&0].clone();
            assert!(
                first.is_some(),
                "validator-0 has no block {height}\n{}",
                self.logs()
            );
            assert!(
                ids.values().all(|id| *id == first),
                "the nodes disagree on block {height}: {ids:#?}\n{}",
                self.logs()
            );
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| tail(&n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------------------------------------------------------------------------
// Load: remark transactions from a few accounts, to random live nodes

/// Transactions in flight per account.
const WINDOW: usize = 6;
/// Without progress for this long, an account's transactions in flight are
/// sent again to another node: the one that admitted them may have died
/// before forwarding them.
const RESEND: Duration = Duration::from_secs(2);
const ACCOUNTS: [&str; 3] = ["core-acme/ops", "bank-first/ops", "supplier-t1/ops"];

struct Sent {
    hash: String,
    bytes: Vec<u8>,
}

struct Account {
    key: KeyPair,
    next_nonce: u64,
    in_flight: VecDeque<Sent>,
    progress_at: Instant,
}

/// What the load did.
#[derive(Debug, Default)]
struct LoadReport {
    /// Hashes of every transaction made, in the order made.
    made: Vec<String>,
    /// Made but not seen committed by the end of the drain.
    undrained: Vec<String>,
    /// Answers other than admission, a duplicate, or a node that is down.
    refused: Vec<String>,
}

struct Load {
    live: Arc<Mutex<Vec<bool>>>,
    committed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

impl Load {
    fn start(net: &Network) -> Load {
        let live = Arc::new(Mutex::new(vec![true; net.nodes.len()]));
        let committed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let apis = net.nodes.iter().map(|n| n.api.clone()).collect();
        let task = tokio::spawn(run_load(
            net.client.clone(),
            apis,
            live.clone(),
            committed.clone(),
            stop.clone(),
        ));
        Load {
            live,
            committed,
            stop,
            task,
        }
    }

    fn set_live(&self, i: usize, live: bool) {
        self.live.lock().unwrap()[i] = live;
    }

    fn committed(&self) -> usize {
        self.committed.load(Ordering::SeqCst)
    }

    /// Polls until at least `n` transactions of the load are committed.
    async fn wait_committed(&self, n: usize, net: &Network) {
        let deadline = Instant::now() + DEADLINE;
        while self.committed() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} transactions committed after {DEADLINE:?}\n{}",
                self.committed(),
                net.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops making transactions and waits for those in flight to commit.
    async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the load task does not panic")
    }
}

/// A small xorshift generator: which live node gets the next request.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn pick_live(live: &Mutex<Vec<bool>>, rng: &mut Rng) -> Option<usize> {
    let live: Vec<usize> = live
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(i, &up)| up.then_some(i))
        .collect();
    (!live.is_empty()).then(|| live[rng.below(live.len())])
}

/// Posts a transaction; Err with what the node said when it is neither
/// admitted nor already there. A node that does not answer is not an error:
/// it is being killed, and the transaction will be sent again elsewhere.
async fn post_tx(client: &reqwest::Client, api: &str, bytes: &[u8]) -> Result<(), String> {
    let response = client
        .post(format!("{api}/v1/transactions"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await;
    let Ok(response) = response else {
        return Ok(());
    };
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    match (status, body["code"].as_str()) {
        (202, _) => Ok(()),
        // Already waiting or committed there (a resend), or the node is still
        // catching up and sees our nonce as far ahead: the resend covers it.
        (409, Some("already_known" | "nonce_replayed")) => Ok(()),
        (422, Some("nonce_too_far_ahead")) => Ok(()),
        _ => Err(format!("{api}: {status} {body}")),
    }
}

async fn run_load(
    client: reqwest::Client,
    apis: Vec<String>,
    live: Arc<Mutex<Vec<bool>>>,
    committed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let mut rng = Rng(random() | 1);
    let mut report = LoadReport::default();
    let mut accounts: Vec<Account> = ACCOUNTS
        .iter()
        .map(|label| Account {
            key: trellis_genesis::dev_account(label),
            next_nonce: 0,
            in_flight: VecDeque::new(),
            progress_at: Instant::now(),
        })
        .collect();
    let mut drain_until = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            let until = *drain_until.get_or_insert(Instant::now() + DEADLINE);
            if accounts.iter().all(|a| a.in_flight.is_empty()) || Instant::now() > until {
                break;
            }
        }
        for account in &mut accounts {
            // Nonces commit in order: the oldest in flight goes first.
            while let Some(oldest) = account.in_flight.front() {
                let Some(i) = pick_live(&live, &mut rng) else {
                    break;
                };
                if committed_at(&client, &apis[i], &oldest.hash)
                    .await
                    .is_none()
                {
                    break;
                }
                account.in_flight.pop_front();
                account.progress_at = Instant::now();
                committed.fetch_add(1, Ordering::SeqCst);
            }
            if drain_until.is_none() && account.in_flight.len() < WINDOW {
                let signed = Transaction {
                    chain_id: CHAIN_ID.into(),
                    sender: account.key.public(),
                    nonce: account.next_nonce,
                    expires_at_ms: now_ms() + 10 * 60 * 1000,
                    payload: Payload::System(SystemOp::Remark {
                        data: Bytes(format!("load {}", account.next_nonce).into_bytes()),
                    }),
                }
                .sign(&account.key);
                let sent = Sent {
                    hash: signed.hash().to_string(),
                    bytes: trellis_types::encode(&signed),
                };
                account.next_nonce += 1;
                if let Some(i) = pick_live(&live, &mut rng)
                    && let Err(e) = post_tx(&client, &apis[i], &sent.bytes).await
                {
                    report.refused.push(e);
                }
                report.made.push(sent.hash.clone());
                account.in_flight.push_back(sent);
            }
            if !account.in_flight.is_empty() && account.progress_at.elapsed() > RESEND {
                if let Some(i) = pick_live(&live, &mut rng) {
                    for sent in &account.in_flight {
                        if let Err(e) = post_tx(&client, &apis[i], &sent.bytes).await {
                            report.refused.push(e);
                        }
                    }
                }
                account.progress_at = Instant::now();
            }
        }
        // Pacing, not a wait for anything.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.undrained = accounts
        .iter()
        .flat_map(|a| a.in_flight.iter().map(|s| s.hash.clone()))
        .collect();
    report
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_validator_network_survives_a_killed_validator_and_it_catches_up() {
    let mut net = Network::start().await;
    net.wait_peers(&net.all(), NODES as u64 - 1).await;
    net.wait_heights(&net.all(), 2).await;

    let load = Load::start(&net);
    load.wait_committed(20, &net).await;

    let victim = 1;
    let survivors = [0, 2, 3];
    load.set_live(victim, false);
    net.kill_node(victim);
    let at_kill = *net.heights(&survivors).await.iter().max().unwrap();
    let committed_at_kill = load.committed();
    net.wait_heights(&survivors, at_kill + 3).await;
    load.wait_committed(committed_at_kill + 10, &net).await;

    net.restart_node(victim).await;
    load.set_live(victim, true);
    let others = *net.heights(&survivors).await.iter().max().unwrap();
    net.wait_height(victim, others).await;
    net.wait_peers(&[victim], NODES as u64 - 1).await;
    let common = *net.heights(&net.all()).await.iter().min().unwrap();
    net.assert_same_chain(common).await;

    let report = load.stop().await;
    assert!(report.refused.is_empty(), "refused: {:#?}", report.refused);
    assert!(
        report.undrained.is_empty(),
        "{} of {} transactions never committed: {:?}\n{}",
        report.undrained.len(),
        report.made.len(),
        report.undrained,
        net.logs()
    );
    for hash in &report.made {
        let mut heights = Vec::new();
        for i in net.all() {
            heights.push(committed_at(&net.client, &net.nodes[i].api, hash).await);
        }
        assert!(
            heights.iter().all(|h| h.is_some() && *h == heights[0]),
            "transaction {hash} is committed at {heights:?} on validators 0..4"
        );
    }
    for i in net.all() {
        let status = status(&net.client, &net.nodes[i].api).await.unwrap();
        assert_eq!(
            status["syncing"], false,
            "{} still syncing: {status}",
            net.nodes[i].name
        );
        // Caught up: what f+1 validators vouch for is where this node is
        // (give or take the block being decided as we read).
        let (height, target) = (status["height"].as_u64(), status["sync_target"].as_u64());
        assert!(
            height <= target && target <= height.map(|h| h + 2),
            "{}: {status}",
            net.nodes[i].name
        );
    }
    eprintln!(
        "{} transactions committed on every node; killed at height {at_kill}, caught up to {common}",
        report.made.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_four_validators_down_halt_commits_and_one_back_resumes_them() {
    let mut net = Network::start().await;
    net.wait_peers(&net.all(), NODES as u64 - 1).await;
    net.wait_heights(&net.all(), 3).await;

    // The observer serves the API, does not vote, and forwards what is
    // submitted to it to the validators, which commit it.
    let observer = status(&net.client, &net.nodes[OBSERVER].api).await.unwrap();
    assert_eq!(observer["validator"], false, "{observer}");
    let key = trellis_genesis::dev_account("supplier-t2/ops");
    let via_observer = Transaction {
        chain_id: CHAIN_ID.into(),
        sender: key.public(),
        nonce: 0,
        expires_at_ms: now_ms() + 10 * 60 * 1000,
        payload: Payload::System(SystemOp::Remark {
            data: Bytes(b"submitted to the observer".to_vec()),
        }),
    }
    .sign(&key);
    post_tx(
        &net.client,
        &net.nodes[OBSERVER].api,
        &trellis_types::encode(&via_observer),
    )
    .await
    .expect("the observer admits it");
    let hash = via_observer.hash().to_string();
    let deadline = Instant::now() + DEADLINE;
    while committed_at(&net.client, &net.nodes[0].api, &hash)
        .await
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "a transaction submitted to the observer never committed\n{}",
            net.logs()
        );
        tokio::time::sleep(POLL).await;
    }

    net.terminate_nodes(&[2, 3]).await;
    let survivors = [0, 1, OBSERVER];
    // A block whose precommits one survivor saw before the stop may still
    // reach the other by block sync: wait until they agree.
    let deadline = Instant::now() + DEADLINE;
    let halted = loop {
        let heights = net.heights(&survivors).await;
        if heights.iter().all(|&h| h == heights[0]) {
            break heights[0];
        }
        assert!(
            Instant::now() < deadline,
            "the survivors never agree on a height: {heights:?}\n{}",
            net.logs()
        );
        tokio::time::sleep(POLL).await;
    };

    // Proving that nothing happens needs a wait: 2 of 4 votes are below the
    // 3 a commit needs (the observer's presence adds none), so no height may
    // appear however long we look. Five
    // seconds covers several idle heartbeats (1 s) and round timeouts.
    let watch_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch_until {
        let heights = net.heights(&survivors).await;
        assert!(
            heights.iter().all(|&h| h == halted),
            "2 of 4 validators committed: {heights:?} after halting at {halted}\n{}",
            net.logs()
        );
        tokio::time::sleep(POLL).await;
    }

    net.restart_node(2).await;
    net.wait_heights(&[0, 1, 2, OBSERVER], halted + 2).await;
}

/// `trellis-node localnet` with validators that keep no indexes (an observer
/// keeps both), killed on drop together with its nodes.
struct Localnet {
    proc: Proc,
    dir: PathBuf,
    /// Node processes seen running under it.
    nodes: BTreeSet<u32>,
}

impl Localnet {
    fn spawn(cwd: &Path, log: PathBuf, dir: &Path, api_base: u16, p2p_base: u16) -> Localnet {
        Localnet::spawn_with(
            cwd,
            log,
            dir,
            (api_base, p2p_base),
            &["--no-validator-indexes"],
        )
    }

    fn spawn_with(
        cwd: &Path,
        log: PathBuf,
        dir: &Path,
        (api_base, p2p_base): (u16, u16),
        extra: &[&str],
    ) -> Localnet {
        let (validators, api_base, p2p_base) = (
            VALIDATORS.to_string(),
            api_base.to_string(),
            p2p_base.to_string(),
        );
        let mut args = vec![
            "localnet",
            "--validators",
            &validators,
            "--observers",
            "1",
            "--dir",
            dir.to_str().unwrap(),
            "--base-api-port",
            &api_base,
            "--base-p2p-port",
            &p2p_base,
        ];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(cwd, log, &args);
        Localnet {
            proc,
            dir: dir.to_owned(),
            nodes: BTreeSet::new(),
        }
    }

    /// Notes the node processes running under localnet now.
    fn record_nodes(&mut self) {
        self.nodes.extend(children_of(self.proc.pid()));
    }

    /// Node processes of this localnet still running (by pid, checked by command line).
    fn running_nodes(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .copied()
            .filter(|&pid| is_node_of(pid, &self.dir))
            .collect()
    }

    fn logs(&self) -> String {
        let mut logs = vec![tail(&self.proc.log)];
        for i in 0..NODES {
            logs.push(tail(&self.dir.join(node_name(i)).join("node.log")));
        }
        logs.join("\n")
    }
}

impl Drop for Localnet {
    fn drop(&mut self) {
        self.record_nodes();
        // SIGKILL gives localnet no chance to stop its nodes: stop them here.
        if self.proc.exited().is_none() {
            self.proc.kill();
        }
        for pid in self.running_nodes() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Pids whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Whether `pid` is a live trellis-node process of the network in `dir`.
fn is_node_of(pid: u32, dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("--config") && cmdline.contains(dir.to_str().unwrap())
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localnet_starts_validators_and_an_observer_and_stops_them_on_sigterm() {
    let client = client();
    let mut attempt = 0;
    let (tmp, dir, ports, apis, mut localnet) = loop {
        attempt += 1;
        let tmp = Scratch::new();
        let dir = tmp.path().join("localnet");
        let (api_base, p2p_base) = (free_ports(NODES as u16), free_ports(NODES as u16));
        let apis: Vec<String> = (0..NODES)
            .map(|i| format!("http://127.0.0.1:{}", api_base as usize + i))
            .collect();
        let mut localnet = Localnet::spawn(
            tmp.path(),
            tmp.path().join("localnet-1.log"),
            &dir,
            api_base,
            p2p_base,
        );
        let deadline = Instant::now() + DEADLINE;
        let mut up = 0;
        while up < NODES {
            if let Some(status) = localnet.proc.exited() {
                let port_race =
                    (0..NODES).any(|i| lost_a_port_race(&dir.join(node_name(i)).join("node.log")));
                assert!(
                    port_race && attempt < START_ATTEMPTS,
                    "localnet exited with {status} at start\n{}",
                    localnet.logs()
                );
                break;
            }
            if answers(&client, &apis[up]).await {
                up += 1;
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer within {DEADLINE:?}\n{}",
                node_name(up),
                localnet.logs()
            );
            tokio::time::sleep(POLL).await;
        }
        if up == NODES {
            break (tmp, dir, (api_base, p2p_base), apis, localnet);
        }
    };
    localnet.record_nodes();
    assert_eq!(
        localnet.running_nodes().len(),
        NODES,
        "one node process per validator and observer"
    );

    let heights_of = async |apis: &[String], min: u64, localnet: &Localnet| -> Vec<u64> {
        let deadline = Instant::now() + DEADLINE;
        let mut heights = Vec::new();
        for (i, api) in apis.iter().enumerate() {
            loop {
                let h = height(&client, api).await;
                if let Some(h) = h
                    && h >= min
                {
                    heights.push(h);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} stayed at {h:?}, below {min}\n{}",
                    node_name(i),
                    localnet.logs()
                );
                tokio::time::sleep(POLL).await;
            }
        }
        heights
    };
    heights_of(&apis, 2, &localnet).await;
    for (i, api) in apis.iter().enumerate() {
        let status = status(&client, api).await.expect("the node answers");
        let kept = i >= VALIDATORS;
        let expected = serde_json::json!({"transactions": kept, "queries": kept});
        assert_eq!(status["indexes"], expected, "{}", node_name(i));
    }
    let first_block = block_id(&client, &apis[0], 1)
        .await
        .expect("block 1 exists");
    // What each node has committed, at the latest: it stores at least this much.
    let stopped_at = heights_of(&apis, 0, &localnet).await;

    localnet.proc.signal("-TERM");
    let exit = localnet.proc.wait_exit(DEADLINE).await;
    assert!(
        exit.success(),
        "SIGTERM ended localnet with {exit}\n{}",
        localnet.logs()
    );
    assert_eq!(
        localnet.running_nodes(),
        Vec::<u32>::new(),
        "node processes left running"
    );
    for (i, api) in apis.iter().enumerate() {
        assert!(
            !answers(&client, api).await,
            "{}'s API still answers",
            node_name(i)
        );
    }
    drop(localnet);

    // Asking for validators with indexes is refused before any node starts:
    // their stores keep none.
    let mut refused = Localnet::spawn_with(
        tmp.path(),
        tmp.path().join("localnet-refused.log"),
        &dir,
        ports,
        &[],
    );
    let exit = refused.proc.wait_exit(DEADLINE).await;
    let log = std::fs::read_to_string(&refused.proc.log).unwrap();
    assert!(!exit.success(), "{log}");
    assert!(
        log.contains("holds validators configured with [index] transactions = false"),
        "{log}"
    );
    refused.record_nodes();
    assert_eq!(refused.running_nodes(), Vec::<u32>::new());
    drop(refused);

    // The same directory again: the same network, resumed.
    let mut again = Localnet::spawn(
        tmp.path(),
        tmp.path().join("localnet-2.log"),
        &dir,
        ports.0,
        ports.1,
    );
    let resumed = heights_of(&apis, 0, &again).await;
    again.record_nodes();
    for (i, (&resumed, &stopped)) in resumed.iter().zip(&stopped_at).enumerate() {
        assert!(
            resumed >= stopped,
            "{} resumed at {resumed}, below {stopped} where it stopped",
            node_name(i)
        );
    }
    assert_eq!(
        block_id(&client, &apis[0], 1).await,
        Some(first_block),
        "the second run continues the first run's chain"
    );
    let top = *stopped_at.iter().max().unwrap();
    heights_of(&apis, top + 2, &again).await;

    again.proc.signal("-TERM");
    let exit = again.proc.wait_exit(DEADLINE).await;
    assert!(
        exit.success(),
        "SIGTERM ended localnet with {exit}\n{}",
        again.logs()
    );
    assert_eq!(
        again.running_nodes(),
        Vec::<u32>::new(),
        "node processes left running"
    );
}
