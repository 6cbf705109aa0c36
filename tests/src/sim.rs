//! A deterministic simulator: every node of a network in one process, under a
//! seeded scheduler.
//!
//! Each node is the real thing minus sockets and clocks: [`Consensus`], a
//! [`Chain`] on real sled [`Storage`] in its own temporary directory, a
//! [`Mempool`], and an in-memory "disk" for its persisted [`SafetyState`].
//! The sim executes consensus's actions exactly as `node.rs` does (the safety
//! record is written before any later action of the batch; blocks are built at
//! the block interval when transactions wait, else at the idle heartbeat), and
//! syncs a node that fell behind as `Driver::apply_synced` does.
//!
//! Everything happens at events of one priority queue ordered by (simulated
//! time, sequence number), and every random choice comes from one seeded
//! [`Rng`]: the same seed replays the same run, step for step, which
//! [`Outcome::digest`] lets a test check. No wall clock and no hash-map order
//! reach an outcome.
//!
//! Faults before the global stabilisation time (GST): random delays (so
//! reordering), loss, duplication, partitions that heal, crashes (some in the
//! middle of a batch of actions) and restarts. Byzantine validators hold their
//! real keys and run an honest state machine whose outgoing messages are
//! rewritten ([`Behaviour`]). After GST the network is reliable with bounded
//! delay and every crashed honest node restarts; byzantine nodes go on.
//!
//! Checked after every step: honest nodes agree on every committed block and
//! on every state root; after a restart a node still finds every transaction
//! it committed. At the end: liveness (every honest node commits K blocks past
//! the highest honest head at GST, within a bounded time). A violation panics
//! with the seed and the step; with more than f byzantine validators it is
//! recorded instead ([`Config::assert_safety`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use trellis_genesis::{Genesis, NetworkSpec};
use trellis_node::chain::{self, Chain};
use trellis_node::consensus::{
    Action, Consensus, Message, ProposalData, Rejected, SafetyState, Step, Timeouts,
};
use trellis_node::mempool::Mempool;
use trellis_node::storage::Storage;
use trellis_node::vm::Vm;
use trellis_types::{
    Block, Bytes, DuplicateVote, Hash, KeyPair, Payload, QuorumCertificate, SystemOp, Transaction,
    Vote,
};

const GENESIS_TIME_MS: u64 = trellis_genesis::DEV_GENESIS_TIME_MS;
/// Node clocks read `GENESIS_TIME_MS + CLOCK_OFFSET_MS + simulated time + skew`.
const CLOCK_OFFSET_MS: u64 = 1_000;
/// As `node.rs`: at most one sync request per interval.
const SYNC_RETRY_MS: u64 = 500;
/// As `network.rs`: blocks per sync answer.
const SYNC_BATCH: u64 = trellis_node::network::SYNC_BATCH as u64;
/// Messages a replaying byzantine node remembers.
const REPLAY_MEMORY: usize = 256;
/// Transactions per account waiting at once.
const OUTSTANDING_PER_ACCOUNT: usize = 3;
const ACCOUNTS: [&str; 6] = [
    "consortium/ops",
    "core-acme/ops",
    "supplier-t1/ops",
    "supplier-t2/ops",
    "supplier-t3/ops",
    "bank-first/ops",
];

/// splitmix64: small, fast, and good enough to drive a scheduler.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// What a byzantine validator does to the messages it sends. It holds its real
/// key, follows the chain with an honest state machine, and rewrites that
/// machine's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behaviour {
    /// As proposer, builds a second block (another timestamp) and sends one
    /// block to each half of the honest validators.
    Equivocate,
    /// Signs two different values for each of its votes, one per half; with an
    /// equivocating colleague, the two blocks it proposed.
    DoubleVote,
    /// Sends every message with a flipped signature bit, and the intact message
    /// only half of the time.
    BadSignatures,
    /// Sends nothing and answers no sync request.
    Silent,
    /// Also re-sends, every few hundred ms, messages it saw earlier (any height).
    Replay,
}

pub const ALL_BEHAVIOURS: [Behaviour; 5] = [
    Behaviour::Equivocate,
    Behaviour::DoubleVote,
    Behaviour::BadSignatures,
    Behaviour::Silent,
    Behaviour::Replay,
];

/// Behaviours for `count` byzantine validators, drawn from `seed`: each gets one
/// or two (silence excludes the others).
pub fn random_behaviours(seed: u64, count: usize) -> Vec<Vec<Behaviour>> {
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xb7e1);
    (0..count)
        .map(|_| {
            let first = *rng.pick(&ALL_BEHAVIOURS);
            let mut set = vec![first];
            if first != Behaviour::Silent && rng.chance(500) {
                let second = *rng.pick(&ALL_BEHAVIOURS);
                if second != Behaviour::Silent && second != first {
                    set.push(second);
                }
            }
            set.sort();
            set
        })
        .collect()
}

/// One scenario. Times are simulated milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    pub validators: usize,
    /// One entry per byzantine validator (which validators is drawn from the seed).
    pub byzantine: Vec<Vec<Behaviour>>,
    /// Crash/restart episodes of honest nodes before GST, at most.
    pub max_crashes: u64,
    /// Partition episodes before GST, at most.
    pub max_partitions: u64,
    /// Per-message loss before GST, per mille.
    pub loss_per_mille: u64,
    /// Per-message duplication, per mille.
    pub duplicate_per_mille: u64,
    /// Message delay before GST, uniform in this range.
    pub delay_ms: (u64, u64),
    /// Messages lost or cut by a partition before GST arrive after GST instead:
    /// the reliable channels of the paper's model, which a real transport gets
    /// only by retransmitting (Trellis's does not).
    pub retransmit: bool,
    /// Message delay after GST: the Δ of partial synchrony.
    pub stable_delay_ms: (u64, u64),
    /// Largest clock skew of a node (each node draws its own in `0..=`).
    pub max_skew_ms: u64,
    /// The global stabilisation time.
    pub gst_ms: u64,
    /// K: blocks every honest node must commit past the best honest head at GST.
    pub liveness_blocks: u64,
    /// ... within this long after GST.
    pub liveness_window_ms: u64,
    pub check_liveness: bool,
    /// Panic on a safety violation (false: record it in [`Outcome::violations`]).
    pub assert_safety: bool,
    /// Mean time between two workload ticks (each submits or resubmits a transaction).
    pub tx_interval_ms: u64,
    pub timeouts: Timeouts,
    pub max_block_txs: u32,
    pub block_interval_ms: u64,
    pub idle_block_interval_ms: u64,
}

impl Config {
    /// `n` validators, no byzantine ones, mild faults; scenarios adjust from here.
    pub fn new(validators: usize) -> Config {
        Config {
            validators,
            byzantine: Vec::new(),
            max_crashes: 0,
            max_partitions: 0,
            loss_per_mille: 50,
            duplicate_per_mille: 20,
            delay_ms: (1, 60),
            retransmit: false,
            stable_delay_ms: (1, 25),
            max_skew_ms: 50,
            gst_ms: 3_000,
            liveness_blocks: 3,
            liveness_window_ms: 20_000,
            check_liveness: true,
            assert_safety: true,
            tx_interval_ms: 60,
            timeouts: Timeouts {
                propose_ms: 200,
                prevote_ms: 100,
                precommit_ms: 100,
                delta_ms: 50,
                idle_block_ms: 0, // replaced by the genesis idle interval, as the driver does
            },
            max_block_txs: 8,
            block_interval_ms: 40,
            idle_block_interval_ms: 200,
        }
    }

    /// The largest number of byzantine validators the protocol tolerates.
    pub fn f(&self) -> usize {
        (self.validators - 1) / 3
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub seed: u64,
    /// A digest of every event and every commit, in order: equal digests mean
    /// identical runs.
    pub digest: u64,
    pub steps: u64,
    pub sim_ms: u64,
    /// Lowest and highest committed height among honest nodes at the end.
    pub min_height: u64,
    pub max_height: u64,
    pub committed_txs: usize,
    /// Safety violations recorded (only when `assert_safety` is off).
    pub violations: Vec<String>,
    pub crashes: u64,
    pub blocks_synced: u64,
    /// Heights whose committed block needed a round > 0.
    pub later_rounds: u64,
    /// Messages consensus refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Proofs of equivocation honest nodes found (each names a byzantine
    /// validator: one naming an honest one is a violation).
    pub evidence: u64,
    /// Time spent in `Chain::commit` (sled batch + flush) and overall, wall clock,
    /// for the report only (never fed into the run).
    pub commit_wall: Duration,
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        message: Message,
    },
    Txs {
        to: usize,
        txs: Vec<Vec<u8>>,
    },
    SyncRequest {
        server: usize,
        client: usize,
        start: u64,
    },
    SyncResponse {
        client: usize,
        server: usize,
        blocks: Vec<(Block, QuorumCertificate)>,
    },
    Timer {
        node: usize,
        incarnation: u64,
        height: u64,
        round: u64,
        step: Step,
    },
    Build {
        node: usize,
        incarnation: u64,
    },
    Workload,
    Crash(usize),
    ForceCrash(usize),
    Restart(usize),
    Partition,
    Heal,
    Gst,
    ReplayTick(usize),
}

impl Event {
    fn tag(&self) -> (u64, u64) {
        match self {
            Event::Deliver { to, .. } => (1, *to as u64),
            Event::Txs { to, .. } => (2, *to as u64),
            Event::SyncRequest { server, .. } => (3, *server as u64),
            Event::SyncResponse { client, .. } => (4, *client as u64),
            Event::Timer { node, .. } => (5, *node as u64),
            Event::Build { node, .. } => (6, *node as u64),
            Event::Workload => (7, 0),
            Event::Crash(n) => (8, *n as u64),
            Event::ForceCrash(n) => (9, *n as u64),
            Event::Restart(n) => (10, *n as u64),
            Event::Partition => (11, 0),
            Event::Heal => (12, 0),
            Event::Gst => (13, 0),
            Event::ReplayTick(n) => (14, *n as u64),
        }
    }
}

/// A running node: everything a crash loses.
struct Live {
    storage: Storage,
    chain: Chain,
    mempool: Arc<Mempool>,
    consensus: Consensus,
    pending_build: Option<u64>,
    last_sync_request: Option<u64>,
}

/// One committed block as a node saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    height: u64,
    block: Hash,
    state_root: Hash,
}

struct Node {
    key: KeyPair,
    behaviours: Vec<Behaviour>,
    dir: PathBuf,
    live: Option<Live>,
    /// The "disk": the last safety record persisted.
    safety: SafetyState,
    /// Bumped at each crash, so timers and builds of a former life are ignored.
    incarnation: u64,
    /// Stopped for good: its chain refused a decided block.
    halted: bool,
    crash_armed: bool,
    skew_ms: u64,
    /// Every block it committed, in order; `checked` of them passed the checker.
    commits: Vec<Committed>,
    checked: usize,
    committed_txs: BTreeSet<Hash>,
    /// For [`Behaviour::Replay`]: messages seen or sent.
    seen: VecDeque<Message>,
    /// Which half of the validators a double-dealing byzantine node puts this one in.
    side: usize,
}

impl Node {
    fn honest(&self) -> bool {
        self.behaviours.is_empty()
    }

    fn has(&self, b: Behaviour) -> bool {
        self.behaviours.contains(&b)
    }

    fn height(&self) -> u64 {
        self.commits.last().map_or(0, |c| c.height)
    }
}

struct Account {
    key: KeyPair,
    next_nonce: u64,
    /// Issued and not yet seen committed: (hash, encoding), oldest first.
    outstanding: VecDeque<(Hash, Vec<u8>)>,
}

thread_local! {
    /// (seed, step, simulated ms) of the run on this thread, for panic messages
    /// raised inside node code.
    static CURRENT: std::cell::Cell<(u64, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

/// (seed, step, simulated ms) of the last step run on this thread.
pub fn current_step() -> (u64, u64, u64) {
    CURRENT.with(|c| c.get())
}

pub struct Sim {
    cfg: Config,
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    step: u64,
    queue: BTreeMap<(u64, u64), Event>,
    genesis: Genesis,
    timeouts: Timeouts,
    nodes: Vec<Node>,
    /// Nodes in different groups cannot talk.
    groups: Vec<u8>,
    gst: bool,
    /// Set at GST: (height every honest node must reach, by when).
    liveness_target: Option<(u64, u64)>,
    accounts: Vec<Account>,
    /// Every transaction any honest node committed.
    committed_txs: BTreeSet<Hash>,
    /// height → (node that committed it first, block, state root), honest nodes only.
    canonical: BTreeMap<u64, (usize, Hash, Hash)>,
    /// For double-dealing: (height, round) → the block each half was sent.
    split: BTreeMap<(u64, u64), [Hash; 2]>,
    out: Outcome,
    /// `TRELLIS_SIM_TRACE=1`: print every step (for replaying one seed).
    trace: bool,
    /// Kept last: removed after every node's storage is dropped.
    _root: tempfile::TempDir,
}

/// The replay command for `seed` of the simulator test `test`.
pub fn replay_hint(seed: u64, test: &str) -> String {
    format!("TRELLIS_SIM_SEED={seed} cargo test -p trellis-tests --test simulator {test}")
}

fn open_storage(path: &Path) -> Storage {
    // sled may keep its file lock for a moment after the last handle drops.
    let mut attempt = 0;
    loop {
        match Storage::open(path) {
            Ok(storage) => return storage,
            Err(e) if attempt < 100 => {
                attempt += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot reopen {}: {e}", path.display()),
        }
    }
}

impl Sim {
    pub fn new(cfg: Config, seed: u64) -> Sim {
        assert!(cfg.validators >= 1);
        assert!(
            cfg.byzantine.len() < cfg.validators,
            "at least one honest validator"
        );
        let mut rng = Rng::new(seed);
        let (mut genesis, keys) = trellis_genesis::build(&NetworkSpec {
            chain_id: "trellis-sim".into(),
            seed: format!("sim-{}", cfg.validators),
            validators: cfg.validators,
            observers: 0,
            genesis_time_ms: GENESIS_TIME_MS,
        })
        .expect("generated networks are valid");
        genesis.params.max_block_txs = cfg.max_block_txs;
        genesis.params.block_interval_ms = cfg.block_interval_ms;
        genesis.params.idle_block_interval_ms = cfg.idle_block_interval_ms;
        let timeouts = Timeouts {
            idle_block_ms: genesis.params.idle_block_interval_ms,
            ..cfg.timeouts.clone()
        };
        let root = tempfile::Builder::new()
            .prefix("trellis-sim-")
            .tempdir_in(sim_tmp_dir())
            .expect("a temporary directory");

        let mut order: Vec<usize> = (0..cfg.validators).collect();
        rng.shuffle(&mut order);
        let mut behaviours = vec![Vec::new(); cfg.validators];
        for (b, &i) in cfg.byzantine.iter().zip(&order) {
            behaviours[i] = b.clone();
        }
        let honest: Vec<usize> = (0..cfg.validators)
            .filter(|&i| behaviours[i].is_empty())
            .collect();
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                let side = match honest.iter().position(|&h| h == i) {
                    Some(p) => usize::from(p >= honest.len().div_ceil(2)),
                    None => 0,
                };
                Node {
                    key: k.consensus.expect("validators have consensus keys"),
                    behaviours: std::mem::take(&mut behaviours[i]),
                    dir: root.path().join(format!("node-{i}")),
                    live: None,
                    safety: SafetyState::default(),
                    incarnation: 0,
                    halted: false,
                    crash_armed: false,
                    skew_ms: rng.range(0, cfg.max_skew_ms),
                    commits: Vec::new(),
                    checked: 0,
                    committed_txs: BTreeSet::new(),
                    seen: VecDeque::new(),
                    side,
                }
            })
            .collect();
        let accounts = ACCOUNTS
            .iter()
            .map(|label| Account {
                key: trellis_genesis::dev_account(label),
                next_nonce: 0,
                outstanding: VecDeque::new(),
            })
            .collect();
        let mut sim = Sim {
            groups: vec![0; cfg.validators],
            cfg,
            seed,
            rng,
            now: 0,
            seq: 0,
            step: 0,
            queue: BTreeMap::new(),
            genesis,
            timeouts,
            nodes,
            gst: false,
            liveness_target: None,
            accounts,
            committed_txs: BTreeSet::new(),
            canonical: BTreeMap::new(),
            split: BTreeMap::new(),
            out: Outcome {
                seed,
                ..Outcome::default()
            },
            trace: std::env::var_os("TRELLIS_SIM_TRACE").is_some_and(|v| v == "1"),
            _root: root,
        };
        sim.schedule_faults();
        for i in 0..sim.nodes.len() {
            sim.boot(i);
        }
        sim
    }

    fn schedule_faults(&mut self) {
        let gst = self.cfg.gst_ms;
        let honest: Vec<usize> = (0..self.cfg.validators)
            .filter(|&i| self.nodes[i].honest())
            .collect();
        let crashes = self.rng.range(0, self.cfg.max_crashes);
        for _ in 0..crashes {
            let at = self.rng.range(100, gst.saturating_sub(300).max(101));
            let victim = *self.rng.pick(&honest);
            self.push(at, Event::Crash(victim));
            let down = self.rng.range(300, 2_500);
            self.push(at + down, Event::Restart(victim));
        }
        let partitions = self.rng.range(0, self.cfg.max_partitions);
        for _ in 0..partitions {
            let at = self.rng.range(100, gst.saturating_sub(300).max(101));
            self.push(at, Event::Partition);
            let length = self.rng.range(200, 1_500);
            self.push(at + length, Event::Heal);
        }
        self.push(gst, Event::Gst);
        self.push(1, Event::Workload);
        for i in 0..self.nodes.len() {
            if self.nodes[i].has(Behaviour::Replay) {
                let at = self.rng.range(50, 300);
                self.push(at, Event::ReplayTick(i));
            }
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn mix(&mut self, x: u64) {
        let mut z = (self.out.digest ^ x).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.out.digest = z ^ (z >> 31);
    }

    fn mix_hash(&mut self, h: &Hash) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&h.0[..8]);
        self.mix(u64::from_le_bytes(word));
    }

    /// This node's wall clock, in unix ms.
    fn clock(&self, i: usize) -> u64 {
        GENESIS_TIME_MS + CLOCK_OFFSET_MS + self.now + self.nodes[i].skew_ms
    }

    fn live(&mut self, i: usize) -> Option<&mut Live> {
        self.nodes[i].live.as_mut()
    }

    /// Seed, step and time, for every failure message.
    fn whereabouts(&self) -> String {
        format!("seed {} step {} at {} ms", self.seed, self.step, self.now)
    }

    fn violation(&mut self, what: String) {
        let message = format!("{}: {what}", self.whereabouts());
        if self.cfg.assert_safety {
            panic!("simulation invariant violated, {message}");
        }
        if self.out.violations.len() < 100 {
            self.out.violations.push(message);
        }
    }

    // ---- node lifecycle -------------------------------------------------

    /// Starts (or restarts) node `i` on its data directory, as `node::run` does.
    fn boot(&mut self, i: usize) {
        let chain_id = self.genesis.chain_id.clone();
        let node = &self.nodes[i];
        if node.live.is_some() || node.halted {
            return;
        }
        std::fs::create_dir_all(&node.dir).expect("the node directory can be created");
        let storage = open_storage(&node.dir.join("chain"));
        let vm = Arc::new(Vm::new());
        let head = chain::initialise(&storage, &self.genesis, &vm)
            .expect("a node's own storage holds this genesis's chain");
        let mempool =
            Arc::new(Mempool::new(chain_id.clone(), self.genesis.params.clone()).with_forwarding());
        let chain = Chain::new(storage.clone(), &self.genesis, mempool.clone(), vm);
        let consensus = Consensus::new(
            chain_id,
            chain.validators().clone(),
            Some(node.key.clone()),
            self.timeouts.clone(),
            head.height + 1,
            node.safety.clone(),
        );

        // Durability: everything this node ever committed is still there.
        let node = &self.nodes[i];
        if head.height < node.height() {
            let what = format!(
                "node {i} restarted at height {} but had committed {}",
                head.height,
                node.height()
            );
            self.violation(what);
        }
        let node = &self.nodes[i];
        let lost: Vec<Hash> = node
            .committed_txs
            .iter()
            .filter(|tx| !matches!(storage.tx_location(tx), Ok(Some(_))))
            .copied()
            .collect();
        if !lost.is_empty() && self.nodes[i].honest() {
            let what = format!(
                "node {i} lost {} committed transactions across a restart, e.g. {}",
                lost.len(),
                lost[0]
            );
            self.violation(what);
        }

        let node = &mut self.nodes[i];
        node.live = Some(Live {
            storage,
            chain,
            mempool,
            consensus,
            pending_build: None,
            last_sync_request: None,
        });
        let actions = self.live(i).expect("just booted").consensus.start();
        self.process(i, actions);
    }

    /// Drops everything but the storage directory and the safety record.
    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.crash_armed = false;
        if node.live.take().is_some() {
            node.incarnation += 1;
            self.out.crashes += 1;
        }
    }

    // ---- the driver -----------------------------------------------------

    /// Executes consensus's actions in order, as `Driver::process` does.
    fn process(&mut self, i: usize, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            // A crash between two actions of a batch: whatever follows is lost.
            if self.nodes[i].crash_armed && self.rng.chance(300) {
                self.crash(i);
                return;
            }
            if self.nodes[i].live.is_none() {
                return;
            }
            match action {
                Action::PersistSafety(state) => self.nodes[i].safety = state,
                Action::Broadcast(message) => self.broadcast(i, message),
                Action::BuildBlock { round, .. } => {
                    self.live(i).expect("checked").pending_build = Some(round);
                    self.schedule_build(i);
                }
                Action::ValidateBlock(block) => {
                    let clock = self.clock(i);
                    let live = self.live(i).expect("checked");
                    if let Some(verdict) = live.chain.validate_proposal(&block, clock) {
                        queue.extend(
                            live.consensus
                                .on_block_validated(block.hash(), verdict.is_ok()),
                        );
                    }
                }
                Action::ScheduleTimeout {
                    height,
                    round,
                    step,
                    after_ms,
                } => {
                    let incarnation = self.nodes[i].incarnation;
                    self.push(
                        self.now + after_ms,
                        Event::Timer {
                            node: i,
                            incarnation,
                            height,
                            round,
                            step,
                        },
                    );
                }
                Action::Commit { block, certificate } => {
                    self.commit(i, &block, &certificate);
                }
                Action::RecordEvidence(proof) => self.on_evidence(i, &proof),
            }
        }
    }

    /// `Driver::record_evidence`: a proof must check and name a byzantine validator.
    fn on_evidence(&mut self, i: usize, proof: &DuplicateVote) {
        let voter = proof.second.voter;
        let accused = self.nodes.iter().position(|n| n.key.public() == voter);
        if let Err(why) = proof.check() {
            self.violation(format!("node {i} kept a proof that proves nothing: {why}"));
        } else if accused.is_none_or(|v| self.nodes[v].honest()) {
            self.violation(format!(
                "node {i} found evidence against honest validator {accused:?}"
            ));
        } else if self.nodes[i].honest() {
            self.out.evidence += 1;
        }
    }

    /// When `Driver::build_deadline` says to build.
    fn build_deadline(&self, i: usize) -> Option<u64> {
        let live = self.nodes[i].live.as_ref()?;
        live.pending_build?;
        let params = &self.genesis.params;
        let wait = if live.mempool.is_empty() {
            params.idle_block_interval_ms
        } else {
            params.block_interval_ms
        };
        // The interval counts from the parent block's timestamp, by this node's clock.
        let parent_ms = live.chain.head().map_or(0, |head| head.timestamp_ms);
        let due_in = (parent_ms + wait).saturating_sub(self.clock(i)).min(wait);
        Some(self.now + due_in)
    }

    fn schedule_build(&mut self, i: usize) {
        if let Some(at) = self.build_deadline(i) {
            let incarnation = self.nodes[i].incarnation;
            self.push(
                at,
                Event::Build {
                    node: i,
                    incarnation,
                },
            );
        }
    }

    fn on_build(&mut self, i: usize) {
        let Some(deadline) = self.build_deadline(i) else {
            return;
        };
        if deadline > self.now {
            // The pool emptied since this was scheduled: wait for the heartbeat.
            self.schedule_build(i);
            return;
        }
        let clock = self.clock(i);
        let key = self.nodes[i].key.clone();
        let live = self.live(i).expect("deadline implies live");
        let Some(round) = live.pending_build.take() else {
            return;
        };
        if round != live.consensus.round() {
            return;
        }
        let block = live
            .chain
            .build(round, &key, clock)
            .expect("building on a node's own storage works");
        let actions = live.consensus.on_block_built(block);
        self.process(i, actions);
    }

    fn commit(&mut self, i: usize, block: &Arc<Block>, certificate: &QuorumCertificate) {
        let live = self.live(i).expect("committing on a live node");
        let head = live.chain.head().expect("a node's storage has a head");
        if block.header.height <= head.height {
            return; // already committed by block sync
        }
        let started = std::time::Instant::now();
        // Written at once: the driver writes on another thread, but sends
        // nothing before that write is done, so the network sees the same.
        let result = live.chain.commit(block, certificate);
        self.out.commit_wall += started.elapsed();
        match result {
            Ok(()) => self.on_committed(i, block),
            Err(e) => self.node_failed(
                i,
                format!("cannot commit height {}: {e}", block.header.height),
            ),
        }
    }

    /// The node's driver would stop with this error. For an honest node with at
    /// most f byzantine validators that is a bug; otherwise it is recorded and
    /// the node stays down.
    fn node_failed(&mut self, i: usize, what: String) {
        let honest = self.nodes[i].honest();
        self.crash(i);
        self.nodes[i].halted = true;
        if honest {
            self.violation(format!("honest node {i} stopped: {what}"));
        }
    }

    fn on_committed(&mut self, i: usize, block: &Block) {
        let live = self.live(i).expect("just committed");
        let head = live.storage.head().expect("a head after a commit");
        let hash = block.hash();
        let record = Committed {
            height: block.header.height,
            block: hash,
            state_root: head.state_root,
        };
        if head.block_hash != hash || head.height != block.header.height {
            let what = format!(
                "node {i} committed {hash} but its head is {}",
                head.block_hash
            );
            self.violation(what);
        }
        if block.header.round > 0 {
            self.out.later_rounds += 1;
        }
        let txs: Vec<Hash> = block.txs.iter().map(|t| t.hash()).collect();
        let node = &mut self.nodes[i];
        node.commits.push(record);
        node.committed_txs.extend(txs.iter().copied());
        if node.honest() {
            self.committed_txs.extend(txs);
        }
        self.mix(i as u64);
        self.mix_hash(&hash);
    }

    fn on_message(&mut self, i: usize, from: usize, message: Message) {
        if self.nodes[i].has(Behaviour::Replay) {
            self.remember(i, message.clone());
        }
        let Some(live) = self.live(i) else { return };
        let (actions, result) = live.consensus.on_message(message);
        match result {
            Ok(()) | Err(Rejected::Duplicate) => {}
            Err(Rejected::WrongHeight { got, current }) if got > current => {
                self.request_sync(i, from)
            }
            Err(e) => {
                let code = e.code();
                *self.out.rejected.entry(code).or_default() += 1;
                self.mix(code.len() as u64);
            }
        }
        self.process(i, actions);
    }

    fn request_sync(&mut self, i: usize, peer: usize) {
        let now = self.now;
        let Some(live) = self.live(i) else { return };
        if live
            .last_sync_request
            .is_some_and(|at| now - at < SYNC_RETRY_MS)
        {
            return;
        }
        let start = live.chain.head().expect("a head").height + 1;
        live.last_sync_request = Some(now);
        self.send(
            i,
            peer,
            Event::SyncRequest {
                server: peer,
                client: i,
                start,
            },
        );
    }

    /// Answers a sync request from storage, as `network.rs` does.
    fn serve_sync(&mut self, server: usize, client: usize, start: u64) {
        if self.nodes[server].has(Behaviour::Silent) {
            return;
        }
        let Some(live) = self.live(server) else {
            return;
        };
        let mut blocks = Vec::new();
        for height in start..start + SYNC_BATCH {
            let (Ok(Some(block)), Ok(Some(qc))) = (
                live.storage.block(height),
                live.storage.commit_certificate(height),
            ) else {
                break;
            };
            blocks.push((block, qc));
        }
        self.send(
            server,
            client,
            Event::SyncResponse {
                client,
                server,
                blocks,
            },
        );
    }

    /// `Driver::apply_synced`: verify and commit in order, then move consensus past them.
    fn apply_synced(&mut self, i: usize, server: usize, blocks: Vec<(Block, QuorumCertificate)>) {
        let Some(live) = self.live(i) else { return };
        live.last_sync_request = None;
        let received = blocks.len() as u64;
        let mut applied = 0;
        for (block, certificate) in blocks {
            let live = self
                .live(i)
                .expect("checked above; a commit failure returns");
            let head = live.chain.head().expect("a head");
            if block.header.height <= head.height {
                continue;
            }
            let block = Arc::new(block);
            // Checked here, in turn: the simulation runs on one thread.
            let signatures = chain::Signatures::Unchecked;
            if live
                .chain
                .validate_synced(&block, &certificate, signatures)
                .is_err()
            {
                *self.out.rejected.entry("sync_refused").or_default() += 1;
                break;
            }
            let evidence = live.consensus.evidence_in(&certificate);
            self.process(i, evidence);
            let Some(live) = self.live(i) else { return };
            let started = std::time::Instant::now();
            let result = live.chain.commit(&block, &certificate);
            self.out.commit_wall += started.elapsed();
            if let Err(e) = result {
                let what = format!("cannot commit synced height {}: {e}", block.header.height);
                self.node_failed(i, what);
                return;
            }
            self.on_committed(i, &block);
            self.out.blocks_synced += 1;
            applied += 1;
        }
        if applied > 0 {
            let live = self.live(i).expect("still live");
            let height = live.chain.head().expect("a head").height;
            live.pending_build = None;
            let actions = live.consensus.catch_up(height + 1);
            self.process(i, actions);
        }
        if received >= SYNC_BATCH {
            self.request_sync(i, server);
        }
    }

    /// A client hands `bytes` to node `i`'s API.
    fn submit(&mut self, i: usize, bytes: &[u8]) {
        let clock = self.clock(i);
        let Some(live) = self.live(i) else { return };
        let _ = live.mempool.admit(bytes, &live.storage, clock);
        let outbox: Vec<Vec<u8>> = live
            .mempool
            .take_outbox()
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect();
        if !outbox.is_empty() {
            for j in 0..self.nodes.len() {
                if j != i {
                    self.send(
                        i,
                        j,
                        Event::Txs {
                            to: j,
                            txs: outbox.clone(),
                        },
                    );
                }
            }
            self.schedule_build(i);
        }
    }

    fn on_txs(&mut self, i: usize, txs: Vec<Vec<u8>>) {
        let clock = self.clock(i);
        let Some(live) = self.live(i) else { return };
        let items: Vec<&[u8]> = txs.iter().map(Vec::as_slice).collect();
        let results = live
            .mempool
            .admit_batch_from_peer(&items, &live.storage, clock);
        if results.iter().any(Result::is_ok) {
            self.schedule_build(i);
        }
    }

    // ---- the network ----------------------------------------------------

    /// Schedules `event` from `from` to `to` through the faulty network.
    fn send(&mut self, from: usize, to: usize, event: Event) {
        let lost = self.groups[from] != self.groups[to]
            || (!self.gst && self.rng.chance(self.cfg.loss_per_mille));
        if lost {
            if self.cfg.retransmit && !self.gst {
                let (lo, hi) = self.cfg.stable_delay_ms;
                let at = self.cfg.gst_ms + self.rng.range(lo, hi);
                self.push(at, event);
            }
            return;
        }
        let (lo, hi) = if self.gst {
            self.cfg.stable_delay_ms
        } else {
            self.cfg.delay_ms
        };
        let delay = self.rng.range(lo, hi);
        if self.rng.chance(self.cfg.duplicate_per_mille)
            && let Some(copy) = duplicate(&event)
        {
            let delay = self.rng.range(lo, hi);
            self.push(self.now + delay, copy);
        }
        self.push(self.now + delay, event);
    }

    fn send_message(&mut self, from: usize, to: usize, message: Message) {
        self.send(from, to, Event::Deliver { to, from, message });
    }

    /// `Action::Broadcast`, rewritten by a byzantine sender's behaviours.
    fn broadcast(&mut self, i: usize, message: Message) {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|&j| j != i).collect();
        if self.nodes[i].honest() {
            for j in others {
                self.send_message(i, j, message.clone());
            }
            return;
        }
        if self.nodes[i].has(Behaviour::Silent) {
            return;
        }
        if self.nodes[i].has(Behaviour::Replay) {
            self.remember(i, message.clone());
        }
        // One version per side of the split.
        let mut versions = [message.clone(), message.clone()];
        if self.nodes[i].has(Behaviour::Equivocate)
            && let Message::Proposal(p) = &message
            && p.pol_round.is_none()
            && let Some(other) = self.equivocate(i, p.round, &p.block)
        {
            self.split.insert(
                (p.block.header.height, p.round),
                [p.block.hash(), other.block.hash()],
            );
            versions[1] = Message::Proposal(Box::new(other));
        }
        if self.nodes[i].has(Behaviour::DoubleVote)
            && let Message::Vote(v) = &message
        {
            let split = self.split.get(&(v.data.height, v.data.round)).copied();
            let values = match (v.data.block, split) {
                (Some(_), Some([a, b])) => [Some(a), Some(b)],
                (Some(x), None) => [Some(x), None],
                (None, Some([_, b])) => [None, Some(b)],
                (None, None) => [None, None],
            };
            for side in 0..2 {
                if values[side] != v.data.block {
                    versions[side] = Message::Vote(self.resign(i, v, values[side]));
                }
            }
        }
        let double_dealing = versions[0] != versions[1];
        for j in others {
            let side = self.nodes[j].side;
            let version = versions[side].clone();
            // Now and then both versions reach one node, which must refuse the second.
            if double_dealing && self.rng.chance(250) {
                self.send_message(i, j, versions[1 - side].clone());
            }
            if self.nodes[i].has(Behaviour::BadSignatures) {
                let mut bad = version.clone();
                self.corrupt(&mut bad);
                self.send_message(i, j, bad);
                if self.rng.chance(500) {
                    self.send_message(i, j, version);
                }
            } else {
                self.send_message(i, j, version);
            }
        }
    }

    /// A second, different block for the same height and round, signed as a proposal.
    fn equivocate(
        &mut self,
        i: usize,
        round: u64,
        first: &Block,
    ) -> Option<trellis_node::consensus::Proposal> {
        let later = first.header.timestamp_ms + self.rng.range(1, 50);
        let key = self.nodes[i].key.clone();
        let chain_id = self.genesis.chain_id.clone();
        let live = self.live(i)?;
        let block = live.chain.build(round, &key, later).ok()?;
        if block.hash() == first.hash() {
            return None;
        }
        let data = ProposalData {
            chain_id,
            height: block.header.height,
            round,
            pol_round: None,
            block: block.hash(),
        };
        Some(trellis_node::consensus::Proposal {
            signature: key.sign(&data.signing_hash()),
            block: block.into(),
            round,
            pol_round: None,
            pol_votes: vec![],
        })
    }

    fn resign(&self, i: usize, vote: &Vote, block: Option<Hash>) -> Vote {
        let mut data = vote.data.clone();
        data.block = block;
        let key = &self.nodes[i].key;
        data.sign(key)
    }

    fn corrupt(&mut self, message: &mut Message) {
        let byte = self.rng.below(64) as usize;
        let bit = 1u8 << self.rng.below(8);
        match message {
            Message::Proposal(p) => p.signature.0[byte] ^= bit,
            Message::Vote(v) => v.signature.0[byte] ^= bit,
        }
    }

    fn remember(&mut self, i: usize, message: Message) {
        let seen = &mut self.nodes[i].seen;
        if seen.len() >= REPLAY_MEMORY {
            seen.pop_front();
        }
        seen.push_back(message);
    }

    fn replay(&mut self, i: usize) {
        let next = self.now + self.rng.range(50, 300);
        self.push(next, Event::ReplayTick(i));
        if self.nodes[i].live.is_none() || self.nodes[i].seen.is_empty() {
            return;
        }
        for _ in 0..self.rng.range(1, 4) {
            let k = self.rng.below(self.nodes[i].seen.len() as u64) as usize;
            let message = self.nodes[i].seen[k].clone();
            let mut to = self.rng.below(self.nodes.len() as u64 - 1) as usize;
            if to >= i {
                to += 1;
            }
            self.send_message(i, to, message);
        }
    }

    // ---- faults and workload ----------------------------------------------

    fn partition(&mut self) {
        let n = self.nodes.len();
        if n < 2 {
            return;
        }
        if self.rng.chance(500) {
            let lonely = self.rng.below(n as u64) as usize;
            for (j, g) in self.groups.iter_mut().enumerate() {
                *g = u8::from(j == lonely);
            }
        } else {
            for j in 0..n {
                self.groups[j] = self.rng.below(2) as u8;
            }
        }
    }

    fn workload(&mut self) {
        let next = self.now + self.rng.range(1, 2 * self.cfg.tx_interval_ms);
        self.push(next, Event::Workload);
        let targets: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| self.nodes[j].honest() && self.nodes[j].live.is_some())
            .collect();
        if targets.is_empty() {
            return;
        }
        let target = *self.rng.pick(&targets);
        let a = self.rng.below(self.accounts.len() as u64) as usize;
        let committed = &self.committed_txs;
        self.accounts[a]
            .outstanding
            .retain(|(hash, _)| !committed.contains(hash));
        let account = &self.accounts[a];
        // Clients retry: what was lost with a crashed mempool or the network comes back.
        let bytes = if account.outstanding.len() >= OUTSTANDING_PER_ACCOUNT || self.rng.chance(200)
        {
            match account.outstanding.front() {
                Some((_, bytes)) => bytes.clone(),
                None => return,
            }
        } else {
            let tx = Transaction {
                chain_id: self.genesis.chain_id.clone(),
                sender: account.key.public(),
                nonce: account.next_nonce,
                expires_at_ms: GENESIS_TIME_MS + CLOCK_OFFSET_MS + self.now + 600_000,
                payload: Payload::System(SystemOp::Remark {
                    data: Bytes(format!("sim {} {}", self.seed, self.step).into_bytes()),
                }),
            }
            .sign(&account.key);
            let bytes = trellis_types::encode(&tx);
            let account = &mut self.accounts[a];
            account.next_nonce += 1;
            account.outstanding.push_back((tx.hash(), bytes.clone()));
            bytes
        };
        self.submit(target, &bytes);
    }

    fn on_gst(&mut self) {
        self.gst = true;
        self.groups.iter_mut().for_each(|g| *g = 0);
        for i in 0..self.nodes.len() {
            self.nodes[i].crash_armed = false;
            if self.nodes[i].honest() {
                self.boot(i);
            }
        }
        let best = self.honest_heights().max().unwrap_or(0);
        self.liveness_target = Some((
            best + self.cfg.liveness_blocks,
            self.now + self.cfg.liveness_window_ms,
        ));
    }

    fn honest_heights(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.honest() && !n.halted)
            .map(Node::height)
    }

    // ---- the checker ------------------------------------------------------

    /// Agreement and state roots over every commit not checked yet.
    fn check(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].honest() {
                continue;
            }
            while self.nodes[i].checked < self.nodes[i].commits.len() {
                let c = self.nodes[i].commits[self.nodes[i].checked];
                self.nodes[i].checked += 1;
                match self.canonical.get(&c.height).copied() {
                    None => {
                        self.canonical.insert(c.height, (i, c.block, c.state_root));
                    }
                    Some((first, block, _)) if block != c.block => self.violation(format!(
                        "agreement: at height {} node {first} committed {block}, node {i} committed {}",
                        c.height, c.block
                    )),
                    Some((first, _, root)) if root != c.state_root => self.violation(format!(
                        "state roots differ at height {}: node {first} has {root}, node {i} has {}",
                        c.height, c.state_root
                    )),
                    Some(_) => {}
                }
            }
        }
    }

    /// Records that honest node `node` committed a block other than the one it
    /// did at `height` (or the same block with another state root): the next
    /// step's check must catch it.
    pub fn plant_fork(&mut self, node: usize, height: u64, same_block: bool) {
        let mut record = *self.nodes[node]
            .commits
            .iter()
            .find(|c| c.height == height)
            .expect("the node committed that height");
        if same_block {
            record.state_root.0[0] ^= 1;
        } else {
            record.block.0[0] ^= 1;
        }
        self.nodes[node].commits.push(record);
    }

    /// An honest node, and the height of its latest commit.
    pub fn honest_node(&self) -> (usize, u64) {
        let i = (0..self.nodes.len())
            .find(|&i| self.nodes[i].honest())
            .expect("at least one honest node");
        (i, self.nodes[i].height())
    }

    // ---- the scheduler ------------------------------------------------------

    /// Runs one event and the checker; false when nothing is left to run.
    pub fn step(&mut self) -> bool {
        let Some(((at, _), event)) = self.queue.pop_first() else {
            return false;
        };
        self.now = at;
        self.step += 1;
        CURRENT.with(|c| c.set((self.seed, self.step, self.now)));
        let (kind, node) = event.tag();
        if self.trace {
            self.print_step(&event);
        }
        self.mix(at);
        self.mix(kind << 32 | node);
        match event {
            Event::Deliver { to, from, message } => self.on_message(to, from, message),
            Event::Txs { to, txs } => self.on_txs(to, txs),
            Event::SyncRequest {
                server,
                client,
                start,
            } => self.serve_sync(server, client, start),
            Event::SyncResponse {
                client,
                server,
                blocks,
            } => self.apply_synced(client, server, blocks),
            Event::Timer {
                node,
                incarnation,
                height,
                round,
                step,
            } => {
                if self.nodes[node].incarnation == incarnation
                    && let Some(live) = self.live(node)
                {
                    let actions = live.consensus.on_timeout(height, round, step);
                    self.process(node, actions);
                }
            }
            Event::Build { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation {
                    self.on_build(node);
                }
            }
            Event::Workload => self.workload(),
            Event::Crash(i) => {
                if !self.gst && self.nodes[i].live.is_some() {
                    if self.rng.chance(500) {
                        self.crash(i);
                    } else {
                        // Crash somewhere inside one of its next batches of actions.
                        self.nodes[i].crash_armed = true;
                        let at = self.now + self.rng.range(50, 250);
                        self.push(at, Event::ForceCrash(i));
                    }
                }
            }
            Event::ForceCrash(i) => {
                if self.nodes[i].crash_armed {
                    self.crash(i);
                }
            }
            Event::Restart(i) => self.boot(i),
            Event::Partition => {
                if !self.gst {
                    self.partition();
                }
            }
            Event::Heal => self.groups.iter_mut().for_each(|g| *g = 0),
            Event::Gst => self.on_gst(),
            Event::ReplayTick(i) => self.replay(i),
        }
        self.check();
        true
    }

    fn print_step(&self, event: &Event) {
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match &n.live {
                Some(l) => format!(
                    "{}/{}/{:?}",
                    l.consensus.height(),
                    l.consensus.round(),
                    l.consensus.step()
                ),
                None => "down".into(),
            })
            .collect();
        let what = match event {
            Event::Deliver { to, from, message } => match message {
                Message::Proposal(p) => format!(
                    "{from}->{to} proposal h{} r{} pol {:?} hdr-round {} block {}",
                    p.block.header.height,
                    p.round,
                    p.pol_round,
                    p.block.header.round,
                    &p.block.hash().to_hex()[..8]
                ),
                Message::Vote(v) => format!(
                    "{from}->{to} {:?} h{} r{} {:?}",
                    v.data.kind,
                    v.data.height,
                    v.data.round,
                    v.data.block.map(|b| b.to_hex()[..8].to_owned())
                ),
            },
            Event::Txs { to, txs } => format!("txs {} -> {to}", txs.len()),
            Event::SyncResponse {
                client,
                server,
                blocks,
            } => {
                format!("sync {server} -> {client}: {} blocks", blocks.len())
            }
            other => format!("{other:?}"),
        };
        eprintln!("[{} {} ms] {states:?} {what}", self.step, self.now);
    }

    /// Runs until simulated time `until`.
    pub fn run_until(&mut self, until: u64) {
        while self
            .queue
            .first_key_value()
            .is_some_and(|((at, _), _)| *at <= until)
        {
            self.step();
        }
    }

    /// Runs to the end: until every honest node reached the liveness target
    /// after GST, or its deadline passed. Then checks liveness and durability.
    pub fn run(mut self) -> Outcome {
        loop {
            if let Some((target, deadline)) = self.liveness_target {
                let done = self.honest_heights().all(|h| h >= target);
                if done || self.now > deadline {
                    break;
                }
            }
            if self.step > 5_000_000 {
                self.violation("the step budget ran out".into());
                break;
            }
            if !self.step() {
                break;
            }
        }
        self.finish()
    }

    fn finish(mut self) -> Outcome {
        let (target, deadline) = self.liveness_target.unwrap_or((0, 0));
        if self.cfg.check_liveness {
            let laggards: Vec<(usize, u64)> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].honest())
                .map(|i| (i, self.nodes[i].height()))
                .filter(|&(_, h)| h < target)
                .collect();
            if !laggards.is_empty() {
                panic!(
                    "liveness violated, {}: honest (node, height) {laggards:?} below {target} by {deadline} ms (GST {} ms)",
                    self.whereabouts(),
                    self.cfg.gst_ms
                );
            }
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].honest() {
                continue;
            }
            let lost = match &self.nodes[i].live {
                Some(live) => self.nodes[i]
                    .committed_txs
                    .iter()
                    .filter(|tx| !matches!(live.storage.tx_location(tx), Ok(Some(_))))
                    .count(),
                None => 0,
            };
            if lost > 0 {
                self.violation(format!(
                    "node {i} cannot find {lost} committed transactions"
                ));
            }
        }
        let heights: Vec<u64> = self.honest_heights().collect();
        self.out.min_height = heights.iter().copied().min().unwrap_or(0);
        self.out.max_height = heights.iter().copied().max().unwrap_or(0);
        self.out.steps = self.step;
        self.out.sim_ms = self.now;
        self.out.committed_txs = self.committed_txs.len();
        // Drop every store before the directory goes.
        for node in &mut self.nodes {
            node.live = None;
        }
        std::mem::take(&mut self.out)
    }
}

fn duplicate(event: &Event) -> Option<Event> {
    match event {
        Event::Deliver { to, from, message } => Some(Event::Deliver {
            to: *to,
            from: *from,
            message: message.clone(),
        }),
        Event::Txs { to, txs } => Some(Event::Txs {
            to: *to,
            txs: txs.clone(),
        }),
        _ => None,
    }
}

/// Where node data directories go: `TRELLIS_SIM_TMPDIR`, else the system's.
fn sim_tmp_dir() -> PathBuf {
    std::env::var_os("TRELLIS_SIM_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}
