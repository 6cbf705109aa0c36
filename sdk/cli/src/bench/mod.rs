//! `trellis bench`: the load generator.
//!
//! A setup (not measured) gives each organisation signing accounts of its
//! own (`add_key` by its dev admin account, so no account nears the chain's
//! per-sender limits), raises the issuer's credit limit if the run needs
//! more, and issues and accepts the receivables the run starts from: some
//! maturing far out, some maturing during the run so settlements happen.
//! Then load is offered for `--duration` — on a fixed schedule (`--rate N`)
//! or as fast as a bounded in-flight window allows (`--rate max`) — and
//! measured from committed blocks, not from submit acknowledgements. See
//! docs/benchmarks.md for what is measured and how.
//!
//! - [`plan`]: what to sign next (the mix, the pool of pieces), pure logic;
//! - [`engine`]: the planner thread, the submitter and the follower;
//! - [`report`]: the figures, as a table and as JSON;
//! - [`procfs`]: CPU and memory of processes; [`nodes`]: nodes `--start` runs.

pub mod engine;
pub mod nodes;
pub mod plan;
pub mod procfs;
pub mod reads;
pub mod report;
pub mod sign;

use crate::cli::{BenchArgs, BenchMix, BenchRate};
use crate::context::Ctx;
use crate::devnode::find_binary;
use crate::error::{Class, CliError, Result};
use crate::output::Report;
use crate::when::now_ms;
use engine::{Inbound, Pace, Shared, Submitter};
use plan::{AccountSpec, Config, Mix, Phase, Planner};
use report::grouped;
use sign::Nonces;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use trellis_genesis::Genesis;
use trellis_receivables::{CreditRef, SetCreditLimit};
use trellis_sdk::{Client, RetryPolicy};
use trellis_types::api::IndexesKept;
use trellis_types::{ChainParams, KeyPair, Payload, Role, SystemOp};

/// `--quick`: the rate, the length and the floor (a tenth of the dev node's
/// documented figure, docs/benchmarks.md).
pub const QUICK_RATE: f64 = 500.0;
pub const QUICK_DURATION: Duration = Duration::from_secs(5);
pub const QUICK_MIN_OPS: f64 = 150.0;
pub const QUICK_WINDOW: u64 = 2_000;

/// In flight at `--rate max` unless `--window` says: near the best for the
/// receivables mix on one validator; more only adds latency there, and on
/// four validators much more makes blocks too slow (docs/benchmarks.md).
const DEFAULT_WINDOW: u64 = 4_000;
const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// Accounts are sized for this rate with `--rate max` and no `--expect-rate`.
const DEFAULT_EXPECT_RATE: f64 = 20_000.0;
/// The steady window leaves out this share of the run at each end.
const WARM_SHARE: f64 = 0.1;
/// How long a transaction may take from signing to commit, for sizing accounts.
const ASSUMED_IN_FLIGHT: f64 = 2.0;
/// Every receivable's face value, in `min_piece_amount`s: room for eight
/// levels of splits (100,000.00 CNY on the dev chain).
const ROOT_AMOUNT_IN_MIN_PIECES: u128 = 1_000;
const CURRENCY: &str = "CNY";
/// Setup receivables that do not mature in the run mature this far out.
const FAR_MATURITY_MS: u64 = 24 * 3_600_000;
/// Between the acceptance window's end and the first maturity of the setup's
/// receivables, for their issue and acceptance to commit.
const SETUP_SLACK_MS: u64 = 3_000;
const MOVE_MARGIN_MS: u64 = 5_000;
const RUN_MATURITY_AFTER_WINDOW_MS: u64 = 20_000;
/// Longest wait for the run's last transactions to commit.
const DRAIN: Duration = Duration::from_secs(30);
/// Most receivables `--setup-roots` may ask for: two million pieces, about
/// four million setup transactions.
const MAX_SETUP_ROOTS: usize = 2_000_000;
/// The setup fails when nothing of it commits for this long.
const SETUP_STALL: Duration = Duration::from_secs(60);
const HTTP_PER_NODE: usize = 256;
/// Most signature nonces made ahead (64 bytes each); past them, signing
/// makes its own.
const MAX_NONCES_AHEAD: usize = 2_000_000;
/// With `--rate max`, the run's nonces are sized for this many times the
/// rate the setup's receivables committed at (at most the default expected
/// rate): runs have committed 0.9 to 1.6 times as many operations a second
/// as their setup's issues and acceptances (docs/benchmarks.md).
const RUN_OVER_SETUP_RATE: f64 = 2.5;

/// What the run was asked to do, after `--quick` and the defaults.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mix: BenchMix,
    pub rate: BenchRate,
    pub duration: Duration,
    pub window: u64,
    /// Most transactions per submission request.
    pub batch: usize,
    /// How often the submitter sends.
    pub send_every: Duration,
    /// The generator's CPU niceness while it runs.
    pub nice: i32,
    pub min_ops: Option<f64>,
    /// Observers started beside the validators (watched, sent no load).
    pub observers: usize,
    /// Reads a second beside the load (0: none).
    pub reads: u32,
}

impl Plan {
    pub fn from_args(args: &BenchArgs) -> Result<Plan> {
        let rate = args.rate.unwrap_or(if args.quick {
            BenchRate::PerSecond(QUICK_RATE)
        } else {
            BenchRate::Max
        });
        let duration = args.duration.unwrap_or(if args.quick {
            QUICK_DURATION
        } else {
            DEFAULT_DURATION
        });
        if duration < Duration::from_secs(1) || duration > Duration::from_secs(3_600) {
            return Err(CliError::usage("--duration must be 1s to 1h"));
        }
        let window = args.window.unwrap_or(if args.quick {
            QUICK_WINDOW
        } else {
            DEFAULT_WINDOW
        });
        if window == 0 {
            return Err(CliError::usage("--window must be at least 1"));
        }
        let min_ops = args.min_ops.or(if args.quick {
            Some(QUICK_MIN_OPS)
        } else {
            None
        });
        if min_ops.is_some_and(|m| !m.is_finite() || m < 0.0) {
            return Err(CliError::usage("--min-ops must be a number of at least 0"));
        }
        if args.accounts.is_some_and(|a| a == 0 || a > 1_000) {
            return Err(CliError::usage("--accounts must be 1 to 1000"));
        }
        if args.expect_rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
            return Err(CliError::usage("--expect-rate must be a positive number"));
        }
        if args
            .setup_roots
            .is_some_and(|n| n == 0 || n > MAX_SETUP_ROOTS)
        {
            return Err(CliError::usage(format!(
                "--setup-roots must be 1 to {MAX_SETUP_ROOTS}"
            )));
        }
        if args.start && !(1..=16).contains(&args.validators) {
            return Err(CliError::usage("--validators must be 1 to 16"));
        }
        if args.observers > 16 {
            return Err(CliError::usage("--observers must be 0 to 16"));
        }
        if args.observers > 0 && args.validators < 2 {
            return Err(CliError::usage(
                "--observers needs a network: give --validators 2 or more",
            ));
        }
        if args.reads > reads::MAX_READS {
            return Err(CliError::usage(format!(
                "--reads must be 0 to {}",
                reads::MAX_READS
            )));
        }
        if args.reads > 0 && args.mix != BenchMix::Receivables {
            return Err(CliError::usage(
                "--reads asks about receivables: use it with --mix receivables",
            ));
        }
        Ok(Plan {
            mix: args.mix,
            rate,
            duration,
            window,
            batch: args.batch.into(),
            send_every: args.send_every,
            nice: args.nice,
            min_ops,
            observers: args.observers,
            reads: args.reads,
        })
    }
}

/// " and N observer(s)" for a network with observers, else nothing.
fn observers_text(observers: usize) -> String {
    match observers {
        0 => String::new(),
        1 => " and 1 observer".to_owned(),
        n => format!(" and {n} observers"),
    }
}

/// Organisations of the dev and local chains, by role.
struct Members {
    issuer: String,
    suppliers: Vec<String>,
    bank: String,
    admin: String,
}

impl Members {
    fn of_dev_chains() -> Result<Members> {
        let genesis = Genesis::dev();
        let with = |role: Role| -> Vec<String> {
            genesis
                .organisations
                .iter()
                .filter(|o| o.roles.contains(&role))
                .map(|o| o.id.clone())
                .collect()
        };
        let first = |role: Role| {
            with(role)
                .into_iter()
                .next()
                .ok_or_else(|| CliError::other(format!("the dev genesis has no {role:?}")))
        };
        Ok(Members {
            issuer: first(Role::CoreEnterprise)?,
            suppliers: with(Role::Supplier),
            bank: first(Role::Bank)?,
            admin: first(Role::Admin)?,
        })
    }

    /// The organisations that sign, with their share of the transactions.
    fn signing_shares(&self, mix: BenchMix) -> Vec<(String, f64)> {
        let mut orgs = vec![self.issuer.clone()];
        orgs.extend(self.suppliers.iter().cloned());
        orgs.push(self.bank.clone());
        match mix {
            BenchMix::Remark => {
                let share = 1.0 / orgs.len() as f64;
                orgs.into_iter().map(|o| (o, share)).collect()
            }
            // Issue and settle are the issuer's (7.5 %), accepting financing
            // the bank's (5 %), the rest the suppliers'.
            BenchMix::Receivables => orgs
                .into_iter()
                .map(|o| {
                    let share = if o == self.issuer {
                        0.075
                    } else if o == self.bank {
                        0.05
                    } else {
                        0.875 / self.suppliers.len() as f64
                    };
                    (o, share)
                })
                .collect(),
        }
    }
}

/// The setup, for the report.
#[derive(Debug, Default, Clone)]
pub struct SetupInfo {
    pub accounts: Vec<(String, usize)>,
    pub keys_added: usize,
    pub account_cap: u32,
    pub roots_far: usize,
    pub roots_maturing: usize,
    pub root_amount: u128,
    pub credit_limit_set: Option<u128>,
    pub planned_rate: Option<f64>,
    pub setup_rate: Option<f64>,
    pub seconds: f64,
    pub waited_seconds: f64,
    /// Signature nonces made before the run, and how long that took.
    pub nonces_ahead: usize,
    pub nonces_seconds: f64,
}

/// Progress on stderr: one line rewritten on a terminal; otherwise (a log,
/// a pipe) a line a second at most, or one every five seconds while waiting.
struct Progress {
    terminal: bool,
    dirty: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            dirty: false,
            last: None,
        }
    }

    fn line(&mut self, text: &str) {
        self.line_every(text, Duration::from_millis(900));
    }

    fn line_every(&mut self, text: &str, every: Duration) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{text}");
            self.dirty = true;
        } else if self.last.is_none_or(|t| t.elapsed() >= every) {
            self.last = Some(Instant::now());
            let _ = writeln!(err, "{text}");
        }
        let _ = err.flush();
    }

    fn done(&mut self) {
        if self.dirty {
            eprintln!();
            self.dirty = false;
        }
    }
}

/// The node processes the bench watches: their pids, and the data
/// directories of those it started itself (none otherwise).
pub struct Watched {
    pub pids: Vec<u32>,
    pub data_dirs: Vec<PathBuf>,
}

/// CPU times and disk use at one moment: the node processes', the bench's
/// (CPU only), the machine's (CPU only).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub nodes: Vec<Option<procfs::CpuTicks>>,
    pub bench: Option<procfs::CpuTicks>,
    pub machine: Option<(u64, u64)>,
    /// Bytes on disk of each watched data directory.
    pub disk: Vec<Option<u64>>,
}

impl Snapshot {
    fn take(watched: &Watched) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            nodes: watched.pids.iter().map(|&p| procfs::cpu_ticks(p)).collect(),
            bench: procfs::cpu_ticks(std::process::id()),
            machine: procfs::machine_ticks(),
            disk: watched
                .data_dirs
                .iter()
                .map(|d| nodes::disk_bytes(d))
                .collect(),
        }
    }
}

pub async fn run(ctx: &Ctx, args: &BenchArgs, node_defaulted: bool) -> Result<Report> {
    let plan = Plan::from_args(args)?;
    if args.start && !node_defaulted {
        return Err(CliError::usage(
            "give either --start or --node: --start runs its own nodes",
        ));
    }
    let started = if args.start {
        let binary = find_binary(args.node_bin.as_deref())?;
        note(format!(
            "starting {} ({})",
            if args.validators > 1 {
                format!(
                    "a local network of {} validators{}",
                    args.validators,
                    observers_text(args.observers)
                )
            } else {
                "trellis-node --dev".to_owned()
            },
            binary.display()
        ));
        Some(nodes::start(&binary, args.validators, args.observers, args.indexes).await?)
    } else {
        None
    };
    let urls: Vec<String> = match &started {
        Some(s) => s.urls.clone(),
        None => ctx.endpoints(),
    };
    let pids = if !args.node_pids.is_empty() {
        args.node_pids.clone()
    } else if let Some(s) = &started {
        s.pids.clone()
    } else {
        urls.iter()
            .filter_map(|u| loopback_port(u))
            .filter_map(procfs::listening_pid)
            .collect()
    };
    // After the nodes started, which would have inherited it.
    if plan.nice > 0
        && let Err(e) = procfs::set_own_niceness(plan.nice)
    {
        note(format!("could not lower this program's CPU priority: {e}"));
    }
    let watched = Watched {
        pids,
        data_dirs: started
            .as_ref()
            .map(|s| s.data_dirs.clone())
            .unwrap_or_default(),
    };
    // Reads go where asked, else to the nodes that serve readers: the
    // observers, if any.
    let asked = crate::context::urls(&args.read_nodes);
    let read_urls = match &started {
        _ if !asked.is_empty() => asked,
        Some(s) if !s.observer_urls.is_empty() => s.observer_urls.clone(),
        _ => urls.clone(),
    };
    let result = bench(ctx, args, &plan, &urls, &read_urls, &watched).await;
    drop(started);
    result
}

async fn bench(
    ctx: &Ctx,
    args: &BenchArgs,
    plan: &Plan,
    urls: &[String],
    read_urls: &[String],
    watched: &Watched,
) -> Result<Report> {
    let setup_started = Instant::now();
    let reader = Client::builder()
        .endpoints(urls.to_vec())
        .signer(regulator())
        .request_timeout(Duration::from_secs(10))
        .commit_timeout(Duration::from_secs(60))
        .build()?;
    let status = reader.status().await?;
    let indexes = node_indexes(urls).await?;
    let chain_params: ChainParams = match reader.state(b"sys/params", None, false).await?.value {
        Some(bytes) => trellis_types::decode(&bytes.0)
            .map_err(|e| CliError::other(format!("the chain's parameters do not decode: {e}")))?,
        None => return Err(CliError::other("the chain has no parameters (sys/params)")),
    };
    let members = Members::of_dev_chains()?;
    let contract = ctx.contract();
    let readers = if plan.reads > 0 {
        check_read_indexes(read_urls).await?;
        let mut holders = members.suppliers.clone();
        holders.push(members.bank.clone());
        Some(reads::Readers::new(
            plan.reads, read_urls, contract, holders,
        )?)
    } else {
        None
    };
    let receivables = reader.receivables(contract);
    let params = match plan.mix {
        BenchMix::Receivables => Some(receivables.params().await?),
        BenchMix::Remark => None,
    };

    // Accounts: enough that no account has more in flight than a fraction
    // of what the chain lets one sender have waiting or ahead.
    let per_sender = u64::from(chain_params.mempool_per_sender).min(chain_params.max_nonce_gap);
    let account_cap = u32::try_from(per_sender * 2 / 5).unwrap_or(u32::MAX).max(1);
    let sizing_rate = match plan.rate {
        BenchRate::PerSecond(r) => r,
        BenchRate::Max => args.expect_rate.unwrap_or(DEFAULT_EXPECT_RATE),
    };
    let in_flight = expected_in_flight(sizing_rate, plan.window);
    let shares = members.signing_shares(plan.mix);
    let per_org: Vec<(String, usize)> = shares
        .iter()
        .map(|(org, share)| {
            let n = args
                .accounts
                .unwrap_or_else(|| accounts_for(*share, in_flight, account_cap));
            (org.clone(), n)
        })
        .collect();
    let mut progress = Progress::new();
    progress.line(&format!(
        "setup: {} signing accounts on {} ({} node{})",
        per_org.iter().map(|(_, n)| n).sum::<usize>(),
        status.chain_id,
        urls.len(),
        if urls.len() == 1 { "" } else { "s" }
    ));
    let (specs, keys_added) = prepare_accounts(&reader, urls, &per_org).await?;
    let mut setup = SetupInfo {
        accounts: per_org.clone(),
        keys_added,
        account_cap,
        ..SetupInfo::default()
    };

    let tx_ttl_ms = chain_params
        .max_expiry_ms
        .saturating_sub(60_000)
        .clamp(1_000, 600_000);
    let root_amount = params.map_or(0, |p| p.min_piece_amount * ROOT_AMOUNT_IN_MIN_PIECES);
    let window_ms = params.map_or(0, |p| p.acceptance_window_ms);
    let run_secs = plan.duration.as_secs_f64();
    // Settlements needed in the run: 5 % of what it commits, each a receivable
    // that matured in it (with 10 % to spare).
    let maturing_for = |rate: f64| ((0.05 * rate * run_secs * 1.1).ceil() as usize).max(1);
    // Pieces to act on from the start: as many as may be in flight, unless asked.
    let far_roots = args.setup_roots.unwrap_or(match plan.rate {
        BenchRate::PerSecond(r) => (r as usize).clamp(100, 20_000),
        BenchRate::Max => (plan.window as usize / 2).clamp(1_000, 20_000),
    });
    let credit_headroom = if params.is_some() {
        let roots =
            far_roots + maturing_for(sizing_rate) + (0.05 * sizing_rate * run_secs) as usize;
        let needed = root_amount * (roots as u128 + 100);
        let issuer = CreditRef {
            issuer: members.issuer.clone(),
            currency: CURRENCY.into(),
        };
        let outstanding: u128 = reader.query(&contract, "outstanding", &issuer).await?;
        let limit: u128 = reader.query(&contract, "credit_limit", &issuer).await?;
        if limit.saturating_sub(outstanding) < needed {
            let new_limit = outstanding.saturating_add(needed);
            let admin = admin_client(urls, &members.admin)?;
            admin
                .receivables(contract)
                .set_credit_limit(&SetCreditLimit {
                    issuer: members.issuer.clone(),
                    currency: CURRENCY.into(),
                    limit: new_limit,
                })
                .await?;
            setup.credit_limit_set = Some(new_limit);
            new_limit - outstanding
        } else {
            limit - outstanding
        }
    } else {
        0
    };

    let run_tag = run_tag();
    let config = Config {
        mix: match plan.mix {
            BenchMix::Receivables => Mix::Receivables,
            BenchMix::Remark => Mix::Remark,
        },
        chain_id: status.chain_id.clone(),
        contract,
        issuer: members.issuer.clone(),
        suppliers: members.suppliers.clone(),
        bank: members.bank.clone(),
        min_piece: params.map_or(1, |p| p.min_piece_amount),
        max_depth: params.map_or(0, |p| p.max_depth),
        acceptance_window_ms: window_ms,
        root_amount,
        currency: CURRENCY.to_owned(),
        account_cap,
        tx_ttl_ms,
        move_margin_ms: MOVE_MARGIN_MS,
        run_maturity_after_window_ms: RUN_MATURITY_AFTER_WINDOW_MS,
        credit_headroom,
        run_tag,
    };
    setup.root_amount = root_amount;

    // A nonce for each transaction the planner thread may sign: the setup's
    // receivables (an issue and an acceptance each) and the run's; when the
    // run's wait for the setup's measure, only the first receivables' now.
    let nonces_now = if run_nonces_after_setup(plan, args) {
        2 * far_roots
    } else {
        2 * (far_roots + maturing_for(sizing_rate)) + run_nonces(sizing_rate, run_secs)
    };
    let nonces = make_nonces(nonces_now, &mut setup, &mut progress).await?;

    // The moving parts.
    let shared = Arc::new(Shared::default());
    let (inbound_tx, inbound_rx) = std::sync::mpsc::channel::<Inbound>();
    let queue_len = match plan.rate {
        BenchRate::PerSecond(r) => ((r * 0.05) as usize).clamp(64, 4_096),
        BenchRate::Max => 4_096,
    };
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(queue_len);
    let planner = Planner::new(config, specs);
    let planner_thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("bench-planner".into())
            .spawn(move || engine::planner_thread(planner, nonces, inbound_rx, out_tx, shared))
            .map_err(|e| CliError::other(format!("starting the planner thread: {e}")))?
    };
    let head = reader.status().await?.status.height;
    let follower = tokio::spawn(engine::follow(
        reader.clone(),
        head + 1,
        inbound_tx.clone(),
        shared.clone(),
    ));
    let (run_started, run_started_rx) = tokio::sync::watch::channel(None);
    let reading = readers.map(|readers| {
        tokio::spawn(readers.run(run_started_rx, plan.duration, shared.recent_blocks.clone()))
    });
    let (pace_tx, pace_rx) = tokio::sync::watch::channel(Pace::Hold);
    let senders = urls
        .iter()
        .map(|url| {
            Client::builder()
                .endpoint(url)
                .chain_id(status.chain_id.clone())
                .request_timeout(Duration::from_secs(10))
                .retry(RetryPolicy::none())
                .build()
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let submitter = tokio::spawn(
        Submitter {
            nodes: senders,
            queue: out_rx,
            inbound: inbound_tx.clone(),
            shared: shared.clone(),
            pace: pace_rx,
            window: plan.window,
            batch: plan.batch,
            send_every: plan.send_every,
            http_per_node: HTTP_PER_NODE,
        }
        .run(),
    );
    let parts = Parts {
        inbound: inbound_tx,
        pace: pace_tx,
        shared,
        follower,
        run_started,
    };

    let outcome = measure(
        plan,
        args,
        &parts,
        &mut setup,
        &mut progress,
        window_ms,
        far_roots,
        maturing_for,
        watched,
        setup_started,
    )
    .await;
    progress.done();
    let _ = parts.pace.send(Pace::Stop);
    let _ = parts.inbound.send(Inbound::Finish);
    parts.follower.abort();
    let schedule = submitter.await.unwrap_or_default();
    let results = tokio::task::spawn_blocking(move || planner_thread.join())
        .await
        .map_err(|e| CliError::other(format!("the planner thread: {e}")))?
        .map_err(|_| CliError::other("the planner thread panicked"))?;
    if outcome.is_err()
        && let Some(reading) = &reading
    {
        reading.abort();
    }
    let timing = outcome?;
    let reads = match reading {
        Some(reading) => reading
            .await
            .map_err(|e| CliError::other(format!("the reads beside the load: {e}")))?,
        None => Vec::new(),
    };
    let inputs = report::Inputs {
        plan,
        chain_id: &status.chain_id,
        nodes: urls,
        indexes: &indexes,
        watched,
        setup: &setup,
        results: &results,
        schedule: &schedule,
        timing: &timing,
        read_urls,
        reads: &reads,
    };
    Ok(report::build(&inputs))
}

/// Which indexes each node keeps, as its `/status` says.
async fn node_indexes(urls: &[String]) -> Result<Vec<IndexesKept>> {
    let mut kept = Vec::with_capacity(urls.len());
    for url in urls {
        let node = Client::builder()
            .endpoint(url)
            .request_timeout(Duration::from_secs(10))
            .build()?;
        kept.push(node.status().await?.indexes);
    }
    Ok(kept)
}

/// Refuses reads of nodes that do not keep both indexes: every holdings
/// or transaction read would fail.
async fn check_read_indexes(read_urls: &[String]) -> Result<()> {
    let kept = node_indexes(read_urls).await?;
    match read_urls
        .iter()
        .zip(&kept)
        .find(|(_, k)| !(k.transactions && k.queries))
    {
        Some((url, _)) => Err(CliError::usage(format!(
            "--reads needs nodes that keep both indexes, and {url} does not"
        ))
        .with_hint("add --observers 1 (observers keep both), or leave out --indexes")),
        None => Ok(()),
    }
}

/// What the orchestration talks to.
struct Parts {
    inbound: std::sync::mpsc::Sender<Inbound>,
    pace: tokio::sync::watch::Sender<Pace>,
    shared: Arc<Shared>,
    follower: tokio::task::JoinHandle<trellis_sdk::Result<()>>,
    /// Told the run's start, when it starts (the reads begin then).
    run_started: tokio::sync::watch::Sender<Option<Instant>>,
}

impl Parts {
    fn send(&self, message: Inbound) -> Result<()> {
        self.inbound
            .send(message)
            .map_err(|_| CliError::other("the planner thread stopped"))
    }

    /// Fails when the event stream ended, which nothing recovers from.
    fn check_follower(&self) -> Result<()> {
        if self.follower.is_finished() {
            return Err(CliError::new(
                Class::Unreachable,
                "the event stream of committed transactions ended",
            ));
        }
        Ok(())
    }
}

/// When the measured run happened, and the CPU snapshots around its steady window.
pub struct Timing {
    pub run_start: Instant,
    pub run_end: Instant,
    pub window_start: Instant,
    pub window_end: Instant,
    pub drained: bool,
    pub start: Snapshot,
    pub end: Snapshot,
    pub peak_rss_kib: Vec<Option<u64>>,
    pub rss_kib: Vec<Option<u64>>,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    plan: &Plan,
    args: &BenchArgs,
    parts: &Parts,
    setup: &mut SetupInfo,
    progress: &mut Progress,
    window_ms: u64,
    far_roots: usize,
    maturing_for: impl Fn(f64) -> usize,
    watched: &Watched,
    setup_started: Instant,
) -> Result<Timing> {
    // Receivables: issued and accepted before the run; the first batch of
    // those maturing in the run sets when it may start.
    let mut first_maturity = None;
    if plan.mix == BenchMix::Receivables {
        parts.send(Inbound::SetPhase(Phase::Setup))?;
        let _ = parts.pace.send(Pace::Max);
        let mut batches = 0;
        let far = now_ms() + FAR_MATURITY_MS;
        let maturing = |count: usize| -> Vec<u64> {
            let first = now_ms() + window_ms + SETUP_SLACK_MS;
            let spacing = plan.duration.as_millis() as u64 / count as u64;
            (0..count as u64).map(|i| first + i * spacing).collect()
        };
        match plan.rate {
            BenchRate::PerSecond(rate) => {
                let count = maturing_for(rate);
                let roots = maturing(count);
                first_maturity = roots.first().copied();
                let mut all = roots;
                all.extend(std::iter::repeat_n(far, far_roots));
                parts.send(Inbound::AddRoots(all))?;
                batches += 1;
                setup.roots_maturing = count;
                setup.roots_far = far_roots;
                setup.planned_rate = Some(rate);
                wait_setup(parts, batches, 2 * (count + far_roots), progress).await?;
            }
            BenchRate::Max => {
                parts.send(Inbound::AddRoots(vec![far; far_roots]))?;
                batches += 1;
                setup.roots_far = far_roots;
                let started = Instant::now();
                let before = parts.shared.setup_committed.load(Ordering::Relaxed);
                wait_setup(parts, batches, 2 * far_roots, progress).await?;
                let committed = parts.shared.setup_committed.load(Ordering::Relaxed) - before;
                let measured = committed as f64 / started.elapsed().as_secs_f64().max(0.001);
                setup.setup_rate = Some(measured);
                let rate = args.expect_rate.unwrap_or(measured);
                setup.planned_rate = Some(rate);
                let count = maturing_for(rate);
                if run_nonces_after_setup(plan, args) {
                    let run_rate = (measured * RUN_OVER_SETUP_RATE).min(DEFAULT_EXPECT_RATE);
                    let more = 2 * count + run_nonces(run_rate, plan.duration.as_secs_f64());
                    let nonces = make_nonces(more, setup, progress).await?;
                    parts.send(Inbound::AddNonces(nonces))?;
                }
                let roots = maturing(count);
                first_maturity = roots.first().copied();
                setup.roots_maturing = count;
                parts.send(Inbound::AddRoots(roots))?;
                batches += 1;
                wait_setup(parts, batches, 2 * count, progress).await?;
            }
        }
        let _ = parts.pace.send(Pace::Hold);
        parts.send(Inbound::SetPhase(Phase::Idle))?;
    }
    setup.seconds = setup_started.elapsed().as_secs_f64();

    // Start so that the first settlement is possible as the steady window opens.
    let warm = plan.duration.mul_f64(WARM_SHARE);
    if let Some(first) = first_maturity {
        let start_at = first.saturating_sub(warm.as_millis() as u64);
        let waited = Instant::now();
        loop {
            parts.check_follower()?;
            let now = now_ms();
            if now >= start_at {
                break;
            }
            progress.line_every(
                &format!(
                    "setup done; the run starts in {:.0} s, when the first receivables mature",
                    (start_at - now) as f64 / 1000.0
                ),
                Duration::from_secs(5),
            );
            tokio::time::sleep(
                Duration::from_millis(500).min(Duration::from_millis(start_at - now)),
            )
            .await;
        }
        setup.waited_seconds = waited.elapsed().as_secs_f64();
    }

    // The run.
    let run_start = Instant::now();
    let run_end = run_start + plan.duration;
    let window_start = run_start + warm;
    let window_end = run_end - warm;
    parts.send(Inbound::SetPhase(Phase::Run))?;
    let _ = parts.run_started.send(Some(run_start));
    let _ = parts.pace.send(match plan.rate {
        BenchRate::PerSecond(per_s) => Pace::Rate {
            per_s,
            start: run_start,
        },
        BenchRate::Max => Pace::Max,
    });
    let shared = &parts.shared;
    let mut start = None;
    let mut end = None;
    let mut last = (Instant::now(), 0u64);
    let mut next_tick = run_start + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        if start.is_none() && now >= window_start {
            start = Some(Snapshot::take(watched));
        }
        if end.is_none() && now >= window_end {
            end = Some(Snapshot::take(watched));
        }
        if now >= run_end {
            break;
        }
        if now >= next_tick {
            parts.check_follower()?;
            let committed = shared.committed.load(Ordering::Relaxed);
            let rate = (committed - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, committed);
            progress.line(&format!(
                "run {:>3.0}/{:.0} s: {:>7.0} ops/s now, {:>7.0} avg; in flight {}, committed {}, failed {}, rejected {}; ready pieces {}",
                (now - run_start).as_secs_f64(),
                plan.duration.as_secs_f64(),
                rate,
                committed as f64 / (now - run_start).as_secs_f64(),
                shared.in_flight.load(Ordering::Relaxed),
                committed,
                shared.failed.load(Ordering::Relaxed),
                shared.refused.load(Ordering::Relaxed),
                shared.ready_pieces.load(Ordering::Relaxed),
            ));
            next_tick += Duration::from_secs(1);
        }
        let wake = [
            Some(next_tick),
            Some(run_end),
            start.is_none().then_some(window_start),
            end.is_none().then_some(window_end),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(run_end);
        tokio::time::sleep_until(wake.into()).await;
    }
    let _ = parts.pace.send(Pace::Hold);
    parts.send(Inbound::SetPhase(Phase::Idle))?;

    // Drain: wait for what was sent to commit.
    let drain_until = Instant::now() + DRAIN;
    let drained = loop {
        let in_flight = shared.in_flight.load(Ordering::Relaxed);
        if in_flight == 0 {
            break true;
        }
        if Instant::now() >= drain_until || parts.follower.is_finished() {
            break false;
        }
        progress.line(&format!(
            "run over; waiting for {in_flight} transactions to commit"
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let now = Snapshot::take(watched);
    Ok(Timing {
        run_start,
        run_end,
        window_start,
        window_end,
        drained,
        start: start.unwrap_or_else(|| now.clone()),
        end: end.unwrap_or(now),
        peak_rss_kib: watched
            .pids
            .iter()
            .map(|&p| procfs::peak_rss_kib(p))
            .collect(),
        rss_kib: watched.pids.iter().map(|&p| procfs::rss_kib(p)).collect(),
    })
}

/// Whether the run's nonces wait for the setup to measure the chain: at
/// `--rate max` on receivables (whose setup measures) without `--expect-rate`.
fn run_nonces_after_setup(plan: &Plan, args: &BenchArgs) -> bool {
    plan.mix == BenchMix::Receivables && plan.rate == BenchRate::Max && args.expect_rate.is_none()
}

/// Signature nonces for a run of `run_secs` at `rate`, with a tenth to spare.
fn run_nonces(rate: f64, run_secs: f64) -> usize {
    (rate * run_secs * 1.1) as usize
}

/// Makes `count` signature nonces, counted in `setup` (fewer where those
/// made before and these together would pass [`MAX_NONCES_AHEAD`]).
async fn make_nonces(
    count: usize,
    setup: &mut SetupInfo,
    progress: &mut Progress,
) -> Result<Nonces> {
    let count = count.min(MAX_NONCES_AHEAD.saturating_sub(setup.nonces_ahead));
    progress.line(&format!(
        "setup: making {} signature nonces ahead",
        grouped(count as u64)
    ));
    let making = Instant::now();
    let nonces = tokio::task::spawn_blocking(move || Nonces::make(count))
        .await
        .map_err(|e| CliError::other(format!("making signature nonces: {e}")))?;
    setup.nonces_ahead += count;
    setup.nonces_seconds += making.elapsed().as_secs_f64();
    Ok(nonces)
}

/// Waits until the planner has issued and answered `batches` batches of
/// setup receivables (`expected` transactions, for the progress line).
async fn wait_setup(
    parts: &Parts,
    batches: u64,
    expected: usize,
    progress: &mut Progress,
) -> Result<()> {
    let shared = &parts.shared;
    let mut last = (
        Instant::now(),
        shared.setup_committed.load(Ordering::Relaxed),
    );
    loop {
        parts.check_follower()?;
        if shared.setup_batches_done.load(Ordering::Relaxed) >= batches {
            return Ok(());
        }
        let committed = shared.setup_committed.load(Ordering::Relaxed);
        if committed != last.1 {
            last = (Instant::now(), committed);
        } else if last.0.elapsed() > SETUP_STALL {
            return Err(CliError::new(
                Class::CommitTimeout,
                format!("the setup stalled: nothing committed for {SETUP_STALL:?}"),
            ));
        }
        progress.line(&format!(
            "setup: issuing and accepting receivables, {committed} of about {expected} transactions committed, {} in flight",
            shared.in_flight.load(Ordering::Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The dev chains' regulator account: the bench reads whole blocks, and
/// the holdings of every organisation, which a node that asks who reads
/// (`[api] access = "members"`, the local network's) shows a regulator.
pub fn regulator() -> trellis_types::KeyPair {
    trellis_genesis::dev_account("regulator/ops")
}

/// A client signing as `<org>/ops`, the dev chains' admin account of `org`.
fn admin_client(urls: &[String], org: &str) -> Result<Client> {
    Ok(Client::builder()
        .endpoints(urls.to_vec())
        .signer(trellis_genesis::dev_account(&format!("{org}/ops")))
        .request_timeout(Duration::from_secs(10))
        .commit_timeout(Duration::from_secs(60))
        .build()?)
}

/// The bench's accounts: `trellis-bench/<org>/<i>`, derived from public
/// labels (so every run reuses them, and they are as insecure as the dev
/// keys); the missing ones are added by the organisation's dev admin
/// account. Returns them with their nonces, and how many were added.
async fn prepare_accounts(
    reader: &Client,
    urls: &[String],
    per_org: &[(String, usize)],
) -> Result<(Vec<AccountSpec>, usize)> {
    let mut keys: Vec<(String, KeyPair)> = Vec::new();
    for (org, n) in per_org {
        let admin = trellis_genesis::dev_account(&format!("{org}/ops"));
        match reader.account(&admin.public()).await? {
            Some(a) if a.org == *org && a.org_admin => {}
            _ => {
                return Err(CliError::usage(format!(
                    "{org}/ops is not an admin account of {org} on this chain: trellis bench signs \
                     with the public dev keys, so it needs a dev or local chain"
                ))
                .with_hint("start one with `trellis-node --dev` or `trellis-node localnet`, or run `trellis bench --start`"));
            }
        }
        for i in 0..*n {
            keys.push((
                org.clone(),
                KeyPair::insecure_from_label(&format!("trellis-bench/{org}/{i}")),
            ));
        }
    }
    // One client per admin, so its nonces are handed out in turn, not raced for.
    let admins: BTreeMap<&str, Client> = per_org
        .iter()
        .map(|(org, _)| Ok((org.as_str(), admin_client(urls, org)?)))
        .collect::<Result<_>>()?;
    let mut added = 0;
    for chunk in keys.chunks(32) {
        let accounts = futures_util::future::join_all(chunk.iter().map(|(_, k)| {
            let key = k.public();
            async move { reader.account(&key).await }
        }))
        .await;
        let mut pending = Vec::new();
        for ((org, key), account) in chunk.iter().zip(accounts) {
            match account? {
                Some(a) if a.org == *org => {}
                Some(a) => {
                    return Err(CliError::other(format!(
                        "bench account {} belongs to {}, not {org}",
                        key.public(),
                        a.org
                    )));
                }
                None => {
                    pending.push(
                        admins[org.as_str()]
                            .submit(Payload::System(SystemOp::AddKey {
                                key: key.public(),
                                org_admin: false,
                            }))
                            .await?,
                    );
                }
            }
        }
        added += pending.len();
        for result in futures_util::future::join_all(pending.into_iter().map(|p| p.wait())).await {
            result?;
        }
    }
    let accounts = futures_util::future::join_all(keys.iter().map(|(_, k)| {
        let key = k.public();
        async move { reader.account(&key).await }
    }))
    .await;
    let mut specs = Vec::with_capacity(keys.len());
    for ((org, key), account) in keys.into_iter().zip(accounts) {
        let nonce = account?
            .ok_or_else(|| {
                CliError::other(format!("bench account {} was not added", key.public()))
            })?
            .nonce;
        specs.push(AccountSpec { key, org, nonce });
    }
    Ok((specs, added))
}

/// The port of a loopback URL (`http://127.0.0.1:8080`, `http://localhost:8080/`).
fn loopback_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        .then(|| port.parse().ok())
        .flatten()
}

/// A number from the OS's randomness that makes this run's invoices and remarks its own.
fn run_tag() -> u64 {
    let seed = trellis_sdk::keys::generate().seed();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&seed[..8]);
    u64::from_be_bytes(bytes)
}

fn note(message: String) {
    crate::output::note(message);
}

/// How many transactions to size signing accounts for: what `rate` keeps
/// in flight at the assumed signing-to-commit time, or the window if it is
/// larger, since latency grows under load until the window is what binds
/// (sized for the rate alone, the accounts reached their caps first).
fn expected_in_flight(rate: f64, window: u64) -> f64 {
    (rate * ASSUMED_IN_FLIGHT).max(window as f64)
}

/// Signing accounts for an organisation that sends `share` of the
/// transactions, so that `in_flight` transactions leave each under `cap`.
fn accounts_for(share: f64, in_flight: f64, cap: u32) -> usize {
    let needed = share * in_flight / f64::from(cap);
    (needed.ceil() as usize).clamp(2, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(args: &[&str]) -> Result<Plan> {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["trellis", "bench"].iter().chain(args))
            .expect("the arguments parse");
        match &cli.command {
            crate::cli::Command::Bench(args) => Plan::from_args(args),
            _ => unreachable!("a bench command"),
        }
    }

    #[test]
    fn setup_roots_are_one_to_the_most_a_setup_may_issue() {
        let most = MAX_SETUP_ROOTS.to_string();
        let too_many = (MAX_SETUP_ROOTS + 1).to_string();
        assert!(plan_of(&["--setup-roots", "1"]).is_ok());
        assert!(plan_of(&["--setup-roots", &most]).is_ok());
        for bad in ["0", too_many.as_str()] {
            let err = plan_of(&["--setup-roots", bad]).expect_err(bad);
            assert!(err.to_string().contains("--setup-roots must be"), "{err}");
        }
    }

    #[test]
    fn loopback_ports_are_found_in_node_urls() {
        assert_eq!(loopback_port("http://127.0.0.1:8080"), Some(8080));
        assert_eq!(loopback_port("http://localhost:18081/"), Some(18081));
        assert_eq!(loopback_port("http://10.0.0.5:8080"), None);
        assert_eq!(loopback_port("http://127.0.0.1"), None);
    }

    #[test]
    fn the_dev_chains_have_an_issuer_suppliers_a_bank_and_an_admin() {
        let m = Members::of_dev_chains().expect("dev genesis");
        assert_eq!(m.issuer, "core-acme");
        assert_eq!(m.bank, "bank-first");
        assert_eq!(m.admin, "consortium");
        assert_eq!(m.suppliers.len(), 3);
        let shares = m.signing_shares(BenchMix::Receivables);
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn signing_accounts_hold_the_window_when_it_is_wider_than_the_rate_needs() {
        let m = Members::of_dev_chains().expect("dev genesis");
        let cap = 400;
        // 15,000/s for the assumed 2 s is 30,000 in flight; a window of
        // 40,000 lets more go, and the accounts must not stop it first.
        for (rate, window, sized_for) in [(15_000.0, 40_000, 40_000.0), (15_000.0, 4_000, 30_000.0)]
        {
            let in_flight = expected_in_flight(rate, window);
            assert_eq!(in_flight, sized_for);
            for (org, share) in m.signing_shares(BenchMix::Receivables) {
                let accounts = accounts_for(share, in_flight, cap);
                let room = (accounts * cap as usize) as f64;
                assert!(
                    room >= share * in_flight,
                    "{org}: {accounts} accounts for {in_flight}"
                );
            }
        }
        assert_eq!(accounts_for(0.05, 100.0, cap), 2, "at least two accounts");
        assert_eq!(
            accounts_for(0.3, 1e9, cap),
            64,
            "at most 64 per organisation"
        );
    }
}
