//! Helpers for end-to-end tests of real in-process nodes over the HTTP API.
//!
//! [`DevNode`] runs `trellis_node::node::run` on the dev genesis, on a thread
//! and runtime of its own, with its API on a free loopback port and its data in
//! a temporary directory. Dropping it always stops the node (bounded wait), even
//! when a test fails; [`DevNode::stop`] stops it and reports how `run` ended,
//! and [`DevNode::resume`] starts it again on the same data. Waiting is always
//! polling with a deadline ([`poll`]), never a sleep that assumes a speed.

pub mod sim;

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use trellis_genesis::{Genesis, NetworkSpec};
use trellis_node::api::{BlockResponse, ErrorBody, StateResponse, TxStatus};
use trellis_node::config::{Access, ApiConfig, NodeConfig};
use trellis_types::access::RequestSignature;
use trellis_types::block::VoteKind;
use trellis_types::{
    Bytes, DuplicateVote, Hash, KeyPair, Payload, PublicKey, Receipt, SignedTransaction, SystemOp,
    Transaction, VoteData,
};

pub const DEV_CHAIN_ID: &str = "trellis-dev";
/// How long a node may take to start, to stop, or to commit a transaction.
pub const DEADLINE: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 5;

/// Logs of the nodes under test, at `RUST_LOG` (default `warn`), in the test's output.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A loopback port that was free a moment ago; callers retry if it is taken meanwhile.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS gives a free loopback port")
}

/// Runs `openssl` with `args`, which must succeed; its standard output.
pub fn openssl(args: &[&str]) -> String {
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
}

/// Calls `check` until it returns `Some`, or fails after `timeout` with `what`
/// and the last error seen.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A dev remark from the genesis account `account` (e.g. `core-acme/ops`).
pub fn remark(account: &str, nonce: u64, text: &str) -> SignedTransaction {
    let key = trellis_genesis::dev_account(account);
    Transaction {
        chain_id: DEV_CHAIN_ID.into(),
        sender: key.public(),
        nonce,
        expires_at_ms: trellis_node::node::now_ms() + 60_000,
        payload: Payload::System(SystemOp::Remark {
            data: Bytes(text.as_bytes().to_vec()),
        }),
    }
    .sign(&key)
}

/// The state key of an account record.
pub fn account_key(account: &PublicKey) -> Vec<u8> {
    trellis_node::execution::keys::account(account)
}

/// Writes `proofs` of equivocation into the store in `data_dir`, as a node
/// that found them would; the node must be stopped.
pub fn record_evidence(data_dir: &Path, proofs: &[DuplicateVote]) -> anyhow::Result<()> {
    let storage = open_when_unlocked(&data_dir.join("chain"))?;
    for proof in proofs {
        storage.record_evidence(proof)?;
    }
    Ok(())
}

/// sled lets go of its file lock from a background thread after its last
/// handle is dropped: a store just closed may still be locked for a moment.
pub fn open_when_unlocked(path: &Path) -> anyhow::Result<trellis_node::storage::Storage> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match trellis_node::storage::Storage::open(path) {
            Err(e) if is_locked(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            opened => return Ok(opened?),
        }
    }
}

fn is_locked(e: &impl std::fmt::Display) -> bool {
    format!("{e:#}").contains("could not acquire lock")
}

/// Two precommits by `key` at `height` of chain `chain_id`, for nothing and
/// for a block: a proof of equivocation.
pub fn equivocation(key: &KeyPair, chain_id: &str, height: u64) -> DuplicateVote {
    let vote = |block| {
        let data = VoteData {
            chain_id: chain_id.into(),
            height,
            round: 0,
            kind: VoteKind::Precommit,
            block,
        };
        data.sign(key)
    };
    DuplicateVote {
        first: vote(None),
        second: vote(Some(Hash([7; 32]))),
    }
}

/// The dev genesis and its single validator's key.
pub fn dev_chain() -> (Genesis, KeyPair) {
    let (genesis, nodes) =
        trellis_genesis::build(&NetworkSpec::dev()).expect("the dev spec builds");
    let key = nodes
        .into_iter()
        .find_map(|n| n.consensus)
        .expect("the dev chain has a validator");
    (genesis, key)
}

/// `GET /status`, the fields the tests look at.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub chain_id: String,
    pub genesis_hash: Hash,
    pub height: u64,
    pub block_hash: Hash,
    pub state_root: Hash,
}

/// A transaction's place in the chain, from `GET /v1/transactions/{hash}`.
#[derive(Debug, Clone)]
pub struct Committed {
    pub height: u64,
    pub index: u32,
    pub receipt: Receipt,
}

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: u16,
    pub code: String,
    pub message: String,
}

struct Running {
    /// Dropping or sending on it resolves the node's shutdown future.
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn(config: NodeConfig, genesis: Genesis, key: KeyPair) -> anyhow::Result<Running> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dev-node".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(trellis_node::node::run(config, genesis, Some(key), async {
                    let _ = stopped.await;
                }))
            })?;
        Ok(Running { stop, thread })
    }

    /// Signals shutdown and waits (bounded) for `run` to return.
    fn finish_blocking(self, timeout: Duration) -> Option<anyhow::Result<()>> {
        let _ = self.stop.send(());
        let deadline = Instant::now() + timeout;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(join(self.thread))
    }
}

fn join(thread: JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    thread
        .join()
        .map_err(|_| anyhow!("the node thread panicked"))?
}

/// An in-process dev validator (n = 1) with its API on a loopback port.
pub struct DevNode {
    data_dir: PathBuf,
    addr: SocketAddr,
    access: Access,
    running: Option<Running>,
    client: reqwest::Client,
    /// Kept last: the directory is removed after the node has stopped.
    _temp: Option<TempDir>,
}

impl DevNode {
    /// Starts a dev node on a fresh temporary data directory, asking who
    /// reads (`[api] access = "members"`, a node's default).
    pub async fn start() -> anyhow::Result<DevNode> {
        Self::start_with(Access::Members).await
    }

    /// [`DevNode::start`] with an open API, as `trellis-node --dev` serves it.
    pub async fn start_open() -> anyhow::Result<DevNode> {
        Self::start_with(Access::Open).await
    }

    async fn start_with(access: Access) -> anyhow::Result<DevNode> {
        let temp = tempfile::Builder::new().prefix("trellis-node-").tempdir()?;
        let mut node = DevNode::new(temp.path().join("data"));
        node.access = access;
        node._temp = Some(temp);
        node.resume().await?;
        Ok(node)
    }

    /// Starts a dev node on `data_dir`, which the caller owns.
    pub async fn start_in(data_dir: &Path) -> anyhow::Result<DevNode> {
        let mut node = DevNode::new(data_dir.to_owned());
        node.resume().await?;
        Ok(node)
    }

    fn new(data_dir: PathBuf) -> DevNode {
        init_logging();
        DevNode {
            data_dir,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            access: Access::Members,
            running: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a plain HTTP client builds"),
            _temp: None,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Starts the (stopped) node again on its data directory, on a new port,
    /// and returns once its API answers.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        assert!(self.running.is_none(), "the node is already running");
        let (genesis, key) = dev_chain();
        let lock_deadline = Instant::now() + DEADLINE;
        let mut port_attempts = 0;
        loop {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let config = NodeConfig {
                data_dir: self.data_dir.clone(),
                api: ApiConfig {
                    listen: addr,
                    access: self.access,
                    ..ApiConfig::default()
                },
                ..NodeConfig::default()
            };
            self.addr = addr;
            self.running = Some(Running::spawn(config, genesis.clone(), key.clone())?);
            match self.wait_healthy().await {
                Ok(()) => return Ok(()),
                // Someone took the port between our probe and the node's bind.
                Err(e)
                    if port_attempts < START_ATTEMPTS
                        && format!("{e:#}").contains("binding the API") =>
                {
                    port_attempts += 1;
                }
                // The store was closed a moment ago (by the node or a test).
                Err(e) if Instant::now() < lock_deadline && is_locked(&e) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let running = self
                .running
                .as_ref()
                .expect("wait_healthy is called on a started node");
            if running.thread.is_finished() {
                let running = self.running.take().expect("checked above");
                return match join(running.thread) {
                    Ok(()) => Err(anyhow!("the node stopped before its API answered")),
                    Err(e) => Err(e.context("the node failed to start")),
                };
            }
            if let Ok(response) = self.client.get(self.url("/health")).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the node's API did not answer /health within {DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resolves the node's shutdown future and returns what `run` returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let running = self.running.take().context("the node is not running")?;
        let _ = running.stop.send(());
        let thread = running.thread;
        poll("the node to stop", DEADLINE, || {
            let finished = thread.is_finished();
            async move { Ok(finished.then_some(())) }
        })
        .await?;
        join(thread)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /v1/transactions` with the canonical bytes: the tx hash, or the API's refusal.
    pub async fn submit(&self, tx: &SignedTransaction) -> anyhow::Result<Result<Hash, Rejection>> {
        let response = self
            .client
            .post(self.url("/v1/transactions"))
            .header("content-type", "application/octet-stream")
            .body(trellis_types::encode(tx))
            .send()
            .await?;
        let status = response.status();
        if status.as_u16() == 202 {
            #[derive(Deserialize)]
            struct Submitted {
                tx_hash: Hash,
            }
            let submitted: Submitted = response.json().await.context("decoding the 202 body")?;
            return Ok(Ok(submitted.tx_hash));
        }
        let body: ErrorBody = response
            .json()
            .await
            .with_context(|| format!("decoding the {status} body"))?;
        Ok(Err(Rejection {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
        }))
    }

    /// Submits a transaction the node must admit; checks the hash it answers with.
    pub async fn submit_ok(&self, tx: &SignedTransaction) -> anyhow::Result<Hash> {
        match self.submit(tx).await? {
            Ok(hash) if hash == tx.hash() => Ok(hash),
            Ok(hash) => bail!(
                "the node answered tx hash {hash}, the transaction's is {}",
                tx.hash()
            ),
            Err(r) => bail!(
                "transaction refused: {} {}: {}",
                r.status,
                r.code,
                r.message
            ),
        }
    }

    /// `method path` with `body`, signed as the dev chain's regulator, who
    /// reads everything (the node asks who reads: `[api] access =
    /// "members"`, the default).
    pub fn as_regulator(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        as_regulator(&self.client, method, &self.url(""), path, body)
    }

    /// `GET path` as the regulator, which must answer 200 with JSON of type `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .as_regulator(reqwest::Method::GET, path, Vec::new())
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GET {path}: decoding {text}"))
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        self.get("/status").await
    }

    pub async fn block(&self, height: u64) -> anyhow::Result<BlockResponse> {
        self.get(&format!("/v1/blocks/{height}")).await
    }

    pub async fn transaction(&self, hash: &Hash) -> anyhow::Result<TxStatus> {
        self.get(&format!("/v1/transactions/{hash}")).await
    }

    /// `GET /v1/state/{key}?proof=true`, at `height` or the latest.
    pub async fn state_with_proof(
        &self,
        key: &[u8],
        height: Option<u64>,
    ) -> anyhow::Result<StateResponse> {
        let at = height.map(|h| format!("&height={h}")).unwrap_or_default();
        self.get(&format!("/v1/state/{}?proof=true{at}", hex::encode(key)))
            .await
    }

    /// Polls `GET /v1/transactions/{hash}` until the transaction is committed.
    pub async fn wait_committed(&self, hash: &Hash) -> anyhow::Result<Committed> {
        poll(
            &format!("transaction {hash} to commit"),
            DEADLINE,
            || async {
                Ok(match self.transaction(hash).await? {
                    TxStatus::Committed {
                        height,
                        index,
                        receipt,
                    } => Some(Committed {
                        height,
                        index,
                        receipt,
                    }),
                    TxStatus::Pending => None,
                    TxStatus::Dropped { reason } => {
                        anyhow::bail!("transaction {hash} was dropped: {}", reason.code())
                    }
                })
            },
        )
        .await
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            match running.finish_blocking(DEADLINE) {
                Some(Ok(())) => {}
                Some(Err(e)) => eprintln!("dev node stopped with an error: {e:#}"),
                None => eprintln!(
                    "dev node did not stop within {DEADLINE:?}; leaving its thread behind"
                ),
            }
        }
    }
}

/// A TCP proxy on a loopback port in front of `upstream`, whose open
/// connections a test can cut at will (both sides see the connection drop),
/// e.g. to break an event stream mid-way while the node keeps running.
pub struct TcpProxy {
    addr: SocketAddr,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<TcpProxy> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let tracked = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut open = tracked.lock().unwrap_or_else(|e| e.into_inner());
                open.retain(|t| !t.is_finished());
                open.push(task);
            }
        });
        Ok(TcpProxy {
            addr,
            connections,
            accept,
        })
    }

    /// `http://<proxy address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every open connection; new ones are still accepted. Returns how many it cut.
    pub fn cut(&self) -> usize {
        let mut open = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let cut = open.iter().filter(|t| !t.is_finished()).count();
        for task in open.drain(..) {
            task.abort();
        }
        cut
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A TLS front on a loopback port for a node that serves plain HTTP, as a
/// member's proxy before its node would be: a certificate for 127.0.0.1
/// signed by a certificate authority made for the test, `ca_pem`.
pub struct TlsFront {
    addr: SocketAddr,
    /// The authority's certificate (PEM): what a client must trust.
    pub ca_pem: String,
    accept: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<TlsFront> {
        use tokio_rustls::rustls;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "trellis test CA");
        let ca = ca.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let certificate = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?
            .signed_by(&key, &ca, &ca_key)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the CA ends its handshake here.
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Ok(TlsFront {
            addr,
            ca_pem: ca.pem(),
            accept,
        })
    }

    /// `https://<front address>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What a [`LyingNode`] changes: the path and query of each request, and
/// each JSON answer (given the path and query it was asked with).
pub struct Lies {
    pub request: fn(&str) -> String,
    pub answer: fn(&str, &mut serde_json::Value),
}

/// An HTTP proxy on a loopback port in front of a real node that alters
/// what passes through it as `lies` say: a node that lies to its clients,
/// for the SDK's verification to catch. Answers that are not JSON pass
/// unchanged. It asks the node as the regulator, whatever its client signed.
pub struct LyingNode {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl LyingNode {
    pub async fn start(upstream: &str, lies: Lies) -> anyhow::Result<LyingNode> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = std::sync::Arc::new((reqwest::Client::new(), upstream.to_owned(), lies));
        let app = axum::Router::new().fallback(relay).with_state(shared);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(LyingNode { addr, server })
    }

    /// `http://<proxy address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LyingNode {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn relay(
    axum::extract::State(shared): axum::extract::State<
        std::sync::Arc<(reqwest::Client, String, Lies)>,
    >,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (http, upstream, lies) = &*shared;
    let asked = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let target = (lies.request)(asked);
    let (parts, body) = request.into_parts();
    let relayed = async {
        let body = axum::body::to_bytes(body, usize::MAX).await?;
        // The liar reads what it likes: it asks its node as the regulator.
        let mut forward = as_regulator(http, parts.method, upstream, &target, body.to_vec());
        if let Some(kind) = parts.headers.get("content-type") {
            forward = forward.header("content-type", kind);
        }
        let answer = forward.send().await?;
        let status = answer.status();
        let bytes = answer.bytes().await?;
        let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(mut json) => {
                (lies.answer)(&target, &mut json);
                axum::Json(json).into_response()
            }
            Err(_) => bytes.into_response(),
        };
        anyhow::Ok((status, body))
    };
    match relayed.await {
        Ok((status, body)) => (status, body).into_response(),
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// `method base+path` with `body`, signed as the dev chain's regulator.
pub fn as_regulator(
    http: &reqwest::Client,
    method: reqwest::Method,
    base: &str,
    path: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let auth = RequestSignature::sign(
        &trellis_genesis::dev_account("regulator/ops"),
        &dev_chain().0.chain_id,
        method.as_str(),
        path,
        &body,
        trellis_node::node::now_ms(),
    );
    http.request(method, format!("{base}{path}"))
        .header("authorization", auth.header_value())
        .body(body)
}

impl DevNode {
    /// The API's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
