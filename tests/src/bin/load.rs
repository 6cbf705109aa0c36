//! `trellis-load`: an open-loop load generator for a running Trellis network.
//!
//! Pre-signs `SystemOp::Remark` transactions from the dev member accounts
//! (so signing is off the measured path), submits them round-robin across the
//! given nodes at a fixed rate for a fixed time (a schedule, not waiting for
//! responses, with bounded concurrency), and measures from committed blocks:
//! a poller walks `GET /v1/blocks/{h}` on one node and records, for each of
//! our transactions, the local time its block was first seen.
//!
//! ```text
//! trellis-load --nodes http://127.0.0.1:18180,http://127.0.0.1:18181 \
//!     --chain-id trellis-local --rate 200 --duration 30 [--accounts 7] [--output json]
//! ```
//!
//! Reported: committed ops/s and blocks/s over the steady window (the run
//! without its first and last 10 %), p50/p95/p99 submit-to-commit latency of
//! transactions submitted in that window, failed receipts, and rejected
//! submissions by code. Polling stops when every accepted transaction is
//! committed or `--drain` seconds (default 30) after the last submission.

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use trellis_node::execution::AccountRecord;
use trellis_types::{
    Bytes, Hash, KeyPair, Payload, ReceiptStatus, SignedTransaction, SystemOp, Transaction,
};

/// The member organisations of generated networks, each with a `<org>/ops` dev account.
const ORGS: [&str; 7] = [
    "consortium",
    "core-acme",
    "supplier-t1",
    "supplier-t2",
    "supplier-t3",
    "bank-first",
    "regulator",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "trellis-load",
    about = "Open-loop load generator for a Trellis network"
)]
struct Args {
    /// API base URLs, comma separated; submissions go round-robin across them.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Chain id the transactions are signed for.
    #[arg(long, default_value = "trellis-local")]
    chain_id: String,
    /// Target submissions per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Length of the submission phase, in seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// How many of the seven dev accounts send (1..=7).
    #[arg(long, default_value_t = 7)]
    accounts: usize,
    /// Most submissions in flight at once; the schedule waits (and the lag is reported) beyond it.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Index into --nodes of the node whose blocks are polled.
    #[arg(long, default_value_t = 0)]
    poll_node: usize,
    /// Seconds to keep polling after the last submission.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Bytes of remark data per transaction (at least 8: a sequence number).
    #[arg(long, default_value_t = 32)]
    remark_bytes: usize,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Deserialize)]
struct StateResponse {
    value: Option<Bytes>,
}

#[derive(Deserialize)]
struct BlockResponse {
    block: BlockBody,
    receipts: Vec<ReceiptLite>,
}

#[derive(Deserialize)]
struct BlockBody {
    header: HeaderLite,
}

#[derive(Deserialize)]
struct HeaderLite {
    height: u64,
    timestamp_ms: u64,
}

#[derive(Deserialize)]
struct ReceiptLite {
    tx: Hash,
    status: ReceiptStatus,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
}

struct BlockSeen {
    height: u64,
    seen: Instant,
    timestamp_ms: u64,
    txs: usize,
    ours: usize,
}

/// What the submitters record, shared with the poller.
struct Shared {
    /// Local send time of transaction `i`, once sent.
    sent: Mutex<Vec<Option<Instant>>>,
    /// Wall-clock send time of transaction `i` (Unix ms), to compare with header timestamps.
    sent_wall_ms: Mutex<Vec<u64>>,
    accepted: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    sending_done: AtomicBool,
    last_send: Mutex<Option<Instant>>,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn account_nonce(client: &reqwest::Client, node: &str, key: &KeyPair) -> anyhow::Result<u64> {
    let state_key = [b"sys/account/".as_slice(), &key.public().0].concat();
    let url = format!("{node}/v1/state/{}", hex::encode(state_key));
    let resp = client.get(&url).send().await.with_context(|| url.clone())?;
    if !resp.status().is_success() {
        bail!("{url}: {}", resp.status());
    }
    let state: StateResponse = resp.json().await.with_context(|| url.clone())?;
    let Some(value) = state.value else {
        bail!("account {} is not in the state", key.public());
    };
    let record: AccountRecord = trellis_types::decode(&value.0)
        .map_err(|e| anyhow::anyhow!("account record does not decode: {e}"))?;
    Ok(record.nonce)
}

async fn latest_height(client: &reqwest::Client, node: &str) -> anyhow::Result<u64> {
    let url = format!("{node}/v1/blocks/latest");
    let resp = client.get(&url).send().await.with_context(|| url.clone())?;
    if !resp.status().is_success() {
        bail!("{url}: {}", resp.status());
    }
    let block: BlockResponse = resp.json().await.with_context(|| url.clone())?;
    Ok(block.block.header.height)
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(1..=ORGS.len()).contains(&args.accounts) {
        bail!("--accounts must be 1..={}", ORGS.len());
    }
    if args.rate <= 0.0 || args.duration <= 0.0 {
        bail!("--rate and --duration must be positive");
    }
    if args.poll_node >= args.nodes.len() {
        bail!("--poll-node is out of range");
    }
    let nodes: Vec<String> = args
        .nodes
        .iter()
        .map(|n| n.trim_end_matches('/').to_owned())
        .collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight)
        .timeout(Duration::from_secs(10))
        .build()?;

    // Accounts and their next nonces.
    let keys: Vec<KeyPair> = ORGS[..args.accounts]
        .iter()
        .map(|org| trellis_genesis::dev_account(&format!("{org}/ops")))
        .collect();
    let mut nonces = Vec::new();
    for key in &keys {
        nonces.push(account_nonce(&client, &nodes[0], key).await?);
    }

    // Pre-sign everything.
    let total = (args.rate * args.duration).ceil() as usize;
    let expiry = wall_ms() + 10 * 60 * 1000;
    let sign_start = Instant::now();
    let mut bodies: Vec<Option<Vec<u8>>> = Vec::with_capacity(total);
    let mut index_of: HashMap<Hash, usize> = HashMap::with_capacity(total);
    let run_tag = wall_ms();
    for i in 0..total {
        let a = i % keys.len();
        let nonce = nonces[a];
        nonces[a] += 1;
        let mut data = Vec::with_capacity(args.remark_bytes.max(16));
        data.extend_from_slice(&run_tag.to_be_bytes());
        data.extend_from_slice(&(i as u64).to_be_bytes());
        data.resize(args.remark_bytes.max(16), 0);
        let signed: SignedTransaction = Transaction {
            chain_id: args.chain_id.clone(),
            sender: keys[a].public(),
            nonce,
            expires_at_ms: expiry,
            payload: Payload::System(SystemOp::Remark { data: Bytes(data) }),
        }
        .sign(&keys[a]);
        index_of.insert(signed.hash(), i);
        bodies.push(Some(trellis_types::encode(&signed)));
    }
    let sign_elapsed = sign_start.elapsed();
    if args.output == Output::Table {
        eprintln!(
            "pre-signed {total} transactions from {} accounts in {:.2} s",
            keys.len(),
            sign_elapsed.as_secs_f64()
        );
    }

    let start_height = latest_height(&client, &nodes[args.poll_node]).await?;
    let shared = Arc::new(Shared {
        sent: Mutex::new(vec![None; total]),
        sent_wall_ms: Mutex::new(vec![0; total]),
        accepted: AtomicU64::new(0),
        rejected: Mutex::new(BTreeMap::new()),
        sending_done: AtomicBool::new(false),
        last_send: Mutex::new(None),
    });

    // The poller: walks committed blocks from the start height upward.
    let poller = {
        let client = client.clone();
        let node = nodes[args.poll_node].clone();
        let shared = shared.clone();
        let drain = Duration::from_secs_f64(args.drain);
        tokio::spawn(async move {
            let mut committed: Vec<Option<(Instant, u64)>> = vec![None; total];
            let mut n_committed = 0usize;
            let mut failed = 0u64;
            let mut blocks: Vec<BlockSeen> = Vec::new();
            let mut poll_errors = 0u64;
            let mut height = start_height + 1;
            loop {
                let url = format!("{node}/v1/blocks/{height}");
                match client.get(&url).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let seen = Instant::now();
                        match resp.json::<BlockResponse>().await {
                            Ok(b) => {
                                let mut ours = 0;
                                for r in &b.receipts {
                                    if let Some(&i) = index_of.get(&r.tx)
                                        && committed[i].is_none()
                                    {
                                        committed[i] = Some((seen, b.block.header.timestamp_ms));
                                        n_committed += 1;
                                        ours += 1;
                                        if r.status != ReceiptStatus::Success {
                                            failed += 1;
                                        }
                                    }
                                }
                                blocks.push(BlockSeen {
                                    height: b.block.header.height,
                                    seen,
                                    timestamp_ms: b.block.header.timestamp_ms,
                                    txs: b.receipts.len(),
                                    ours,
                                });
                                height += 1;
                                continue;
                            }
                            Err(_) => poll_errors += 1,
                        }
                    }
                    Ok(_) => {} // 404: not committed yet.
                    Err(_) => poll_errors += 1,
                }
                if shared.sending_done.load(Ordering::SeqCst) {
                    let accepted = shared.accepted.load(Ordering::SeqCst) as usize;
                    if n_committed >= accepted {
                        break;
                    }
                    let last = shared
                        .last_send
                        .lock()
                        .unwrap()
                        .unwrap_or_else(Instant::now);
                    if last.elapsed() > drain {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (committed, failed, blocks, poll_errors)
        })
    };

    // The open-loop submitter: transaction i is due at start + i / rate.
    let semaphore = Arc::new(Semaphore::new(args.max_in_flight));
    let run_start = Instant::now();
    let mut max_lag = Duration::ZERO;
    let mut handles = Vec::with_capacity(total);
    for (i, body) in bodies.iter_mut().enumerate() {
        let due = run_start + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(due.into()).await;
        let permit = semaphore.clone().acquire_owned().await?;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        let body = body.take().expect("each body is sent once");
        let url = format!("{}/v1/transactions", nodes[i % nodes.len()]);
        let client = client.clone();
        let shared = shared.clone();
        {
            let now = Instant::now();
            shared.sent.lock().unwrap()[i] = Some(now);
            shared.sent_wall_ms.lock().unwrap()[i] = wall_ms();
            *shared.last_send.lock().unwrap() = Some(now);
        }
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            let result = client
                .post(&url)
                .header("content-type", "application/octet-stream")
                .body(body)
                .send()
                .await;
            let code = match result {
                Ok(resp) if resp.status() == reqwest::StatusCode::ACCEPTED => {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.json::<ErrorBody>().await {
                        Ok(e) => format!("{status} {}", e.code),
                        Err(_) => format!("{status}"),
                    }
                }
                Err(e) if e.is_timeout() => "transport: timeout".to_owned(),
                Err(e) if e.is_connect() => "transport: connect".to_owned(),
                Err(_) => "transport: other".to_owned(),
            };
            *shared.rejected.lock().unwrap().entry(code).or_default() += 1;
        }));
    }
    let send_elapsed = run_start.elapsed();
    for h in handles {
        let _ = h.await;
    }
    shared.sending_done.store(true, Ordering::SeqCst);
    let (committed, failed, blocks, poll_errors) = poller.await?;
    let end = Instant::now();

    // Steady window: the scheduled run without its first and last 10 %.
    let run = Duration::from_secs_f64(args.duration);
    let w_start = run_start + run.mul_f64(0.1);
    let w_end = run_start + run.mul_f64(0.9);
    let w_secs = (w_end - w_start).as_secs_f64();
    let sent = shared.sent.lock().unwrap().clone();
    let sent_wall = shared.sent_wall_ms.lock().unwrap().clone();
    let in_window = |t: Instant| t >= w_start && t < w_end;

    let committed_total = committed.iter().filter(|c| c.is_some()).count();
    let committed_in_window = committed
        .iter()
        .filter(|c| c.is_some_and(|(t, _)| in_window(t)))
        .count();
    let mut latencies: Vec<f64> = Vec::new();
    let mut ts_latencies: Vec<f64> = Vec::new();
    for i in 0..total {
        if let (Some(s), Some((c, ts))) = (sent[i], committed[i])
            && in_window(s)
        {
            latencies.push((c - s).as_secs_f64() * 1000.0);
            ts_latencies.push(ts as f64 - sent_wall[i] as f64);
        }
    }
    latencies.sort_by(f64::total_cmp);
    ts_latencies.sort_by(f64::total_cmp);
    let blocks_in_window: Vec<&BlockSeen> = blocks.iter().filter(|b| in_window(b.seen)).collect();
    let blocks_per_s = blocks_in_window.len() as f64 / w_secs;
    let txs_per_block_mean = if blocks_in_window.is_empty() {
        0.0
    } else {
        blocks_in_window.iter().map(|b| b.txs).sum::<usize>() as f64 / blocks_in_window.len() as f64
    };
    let max_block_txs = blocks.iter().map(|b| b.txs).max().unwrap_or(0);
    let last_commit = committed.iter().flatten().map(|(t, _)| *t).max();
    let accepted = shared.accepted.load(Ordering::SeqCst);
    let rejected = shared.rejected.lock().unwrap().clone();
    let rejected_total: u64 = rejected.values().sum();
    let offered = total as f64 / send_elapsed.as_secs_f64();
    let committed_per_s = committed_in_window as f64 / w_secs;
    let p = |v: &[f64], q: f64| percentile(v, q);
    let drain_s = last_commit.map(|t| {
        t.saturating_duration_since(run_start + send_elapsed)
            .as_secs_f64()
    });

    let report = serde_json::json!({
        "nodes": nodes,
        "poll_node": nodes[args.poll_node],
        "chain_id": args.chain_id,
        "target_rate": args.rate,
        "duration_s": args.duration,
        "accounts": keys.len(),
        "max_in_flight": args.max_in_flight,
        "presign_s": sign_elapsed.as_secs_f64(),
        "submitted": total,
        "offered_rate": offered,
        "send_phase_s": send_elapsed.as_secs_f64(),
        "max_schedule_lag_ms": max_lag.as_secs_f64() * 1000.0,
        "accepted": accepted,
        "rejected_total": rejected_total,
        "rejected": rejected,
        "committed_total": committed_total,
        "uncommitted_accepted": accepted as i64 - committed_total as i64,
        "failed_receipts": failed,
        "steady_window_s": w_secs,
        "committed_in_window": committed_in_window,
        "committed_ops_per_s": committed_per_s,
        "latency_ms": {
            "samples": latencies.len(),
            "p50": p(&latencies, 50.0),
            "p95": p(&latencies, 95.0),
            "p99": p(&latencies, 99.0),
            "max": latencies.last(),
        },
        "submit_to_header_timestamp_ms": {
            "p50": p(&ts_latencies, 50.0),
            "p99": p(&ts_latencies, 99.0),
        },
        "blocks_seen": blocks.len(),
        "blocks_per_s": blocks_per_s,
        "mean_txs_per_block_in_window": txs_per_block_mean,
        "max_txs_per_block": max_block_txs,
        "start_height": start_height,
        "end_height": blocks.last().map(|b| b.height),
        "first_block_timestamp_ms": blocks.first().map(|b| b.timestamp_ms),
        "ours_in_blocks": blocks.iter().map(|b| b.ours).sum::<usize>(),
        "drain_after_last_submit_s": drain_s,
        "poll_errors": poll_errors,
        "wall_s": (end - run_start).as_secs_f64(),
    });

    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            let f = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.0}"));
            println!(
                "trellis-load: {} node(s), chain {}",
                nodes.len(),
                args.chain_id
            );
            println!("{:<38} {}", "target rate (ops/s)", args.rate);
            println!("{:<38} {:.1}", "offered rate (ops/s)", offered);
            println!(
                "{:<38} {:.0}",
                "max schedule lag (ms)",
                max_lag.as_secs_f64() * 1000.0
            );
            println!("{:<38} {total}", "submitted");
            println!("{:<38} {accepted}", "accepted (202)");
            println!("{:<38} {rejected_total}", "rejected");
            for (code, n) in &rejected {
                println!("  {code:<36} {n}");
            }
            println!("{:<38} {committed_total}", "committed (ours)");
            println!("{:<38} {failed}", "failed receipts");
            println!("{:<38} {w_secs:.1}", "steady window (s)");
            println!("{:<38} {committed_per_s:.1}", "committed ops/s (steady)");
            println!(
                "{:<38} {} / {} / {} (n = {})",
                "latency p50 / p95 / p99 (ms)",
                f(p(&latencies, 50.0)),
                f(p(&latencies, 95.0)),
                f(p(&latencies, 99.0)),
                latencies.len()
            );
            println!(
                "{:<38} {} / {}",
                "submit→header ts p50 / p99 (ms)",
                f(p(&ts_latencies, 50.0)),
                f(p(&ts_latencies, 99.0))
            );
            println!("{:<38} {blocks_per_s:.2}", "blocks/s (steady)");
            println!("{:<38} {txs_per_block_mean:.1}", "mean txs/block (steady)");
            println!("{:<38} {max_block_txs}", "max txs/block");
            println!(
                "{:<38} {}",
                "drain after last submit (s)",
                drain_s.map_or("-".to_owned(), |d| format!("{d:.2}"))
            );
            if poll_errors > 0 {
                println!("{:<38} {poll_errors}", "poll errors");
            }
        }
    }
    Ok(())
}
