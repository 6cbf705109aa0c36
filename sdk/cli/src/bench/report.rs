//! The bench's figures from what the planner thread recorded: committed
//! operations per second over the steady window, submit-to-commit latency,
//! the committed mix, refusals and failures by code, blocks, and the CPU and
//! memory of the node processes and of the generator itself.

use super::engine::{Results, ScheduleStats};
use super::plan::{Kind, Method};
use super::procfs::{CpuTicks, TICKS_PER_SECOND};
use super::reads::{ReadDone, ReadKind};
use super::{Plan, SetupInfo, Snapshot, Timing, Watched};
use crate::cli::{BenchMix, BenchRate};
use crate::error::{Class, CliError};
use crate::output::{Report, record};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Instant;
use trellis_types::api::IndexesKept;

/// A node process's CPU (% of one core, all of it and the kernel's part)
/// over the window, its peak and current RSS in KiB, and its data
/// directory's size at the window's end and growth per operation in it.
struct NodeRow {
    pid: u32,
    cpu: Option<f64>,
    kernel_cpu: Option<f64>,
    peak_kib: Option<u64>,
    rss_kib: Option<u64>,
    disk_mib: Option<f64>,
    disk_bytes_per_op: Option<f64>,
}

pub struct Inputs<'a> {
    pub plan: &'a Plan,
    pub chain_id: &'a str,
    pub nodes: &'a [String],
    /// Each node's indexes, in the order of `nodes`.
    pub indexes: &'a [IndexesKept],
    pub watched: &'a Watched,
    pub setup: &'a SetupInfo,
    pub results: &'a Results,
    pub schedule: &'a ScheduleStats,
    pub timing: &'a Timing,
    /// The nodes read and every read (none without `--reads`).
    pub read_urls: &'a [String],
    pub reads: &'a [ReadDone],
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A process's CPU use between two snapshots, in % of one core: `part` of
/// its ticks (all of them, or the kernel's).
fn cpu_percent(
    start: Option<CpuTicks>,
    end: Option<CpuTicks>,
    seconds: f64,
    part: fn(CpuTicks) -> u64,
) -> Option<f64> {
    let (start, end) = (part(start?), part(end?));
    (seconds > 0.0).then(|| end.saturating_sub(start) as f64 / TICKS_PER_SECOND / seconds * 100.0)
}

/// CPU per committed operation in µs, from a process's share of one core (%)
/// and the committed rate over the same window: what each operation costs it.
fn cpu_us_per_op(cpu_percent: Option<f64>, ops_per_s: f64) -> Option<f64> {
    cpu_percent
        .filter(|_| ops_per_s > 0.0)
        .map(|p| p / 100.0 * 1e6 / ops_per_s)
}

fn machine_percent(start: &Snapshot, end: &Snapshot) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (start.machine?, end.machine?);
    let total = t1.saturating_sub(t0);
    (total > 0).then(|| b1.saturating_sub(b0) as f64 / total as f64 * 100.0)
}

fn within(t: Instant, start: Instant, end: Instant) -> bool {
    t >= start && t < end
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn opt(x: Option<f64>, places: i32) -> Value {
    x.map_or(Value::Null, |x| json!(round(x, places)))
}

fn show(x: Option<f64>, places: usize) -> String {
    x.map_or_else(|| "unknown".to_owned(), |x| format!("{x:.places$}"))
}

pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Each node's indexes, one per line in node order, or one line when all
/// keep the same.
fn indexes_text(indexes: &[IndexesKept]) -> String {
    let text = |kept: &IndexesKept| match (kept.transactions, kept.queries) {
        (true, true) => "transactions and queries",
        (true, false) => "transactions only",
        (false, true) => "queries only",
        (false, false) => "none",
    };
    match indexes {
        [first, rest @ ..] if rest.iter().all(|kept| kept == first) => {
            format!("{} (every node)", text(first))
        }
        _ => indexes
            .iter()
            .enumerate()
            .map(|(i, kept)| format!("node {i}: {}", text(kept)))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn codes(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(code, n)| format!("{code} {}", grouped(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Milliseconds from when each read was due to its answer, of those due in
/// the steady window that succeeded, sorted.
fn read_latencies<'a>(
    reads: impl Iterator<Item = &'a ReadDone>,
    start: Instant,
    end: Instant,
) -> Vec<f64> {
    let mut ms: Vec<f64> = reads
        .filter(|r| r.failure.is_none() && within(r.due, start, end))
        .map(|r| r.latency.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// The reads beside the load, as JSON and as the table's text: per kind
/// answered, failed and latency over the steady window, and all together.
fn reads_summary(inputs: &Inputs) -> (Value, String) {
    let (reads, plan) = (inputs.reads, inputs.plan);
    let (ws, we) = (inputs.timing.window_start, inputs.timing.window_end);
    if plan.reads == 0 {
        return (Value::Null, "none (--reads)".to_owned());
    }
    let latency_json = |ms: &[f64]| {
        json!({
            "samples": ms.len(),
            "p50": opt(percentile(ms, 50.0), 1),
            "p95": opt(percentile(ms, 95.0), 1),
            "p99": opt(percentile(ms, 99.0), 1),
            "max": opt(ms.last().copied(), 1),
        })
    };
    let mut kinds = serde_json::Map::new();
    let mut kinds_text = Vec::new();
    let mut failed_by_code: BTreeMap<String, u64> = BTreeMap::new();
    for kind in ReadKind::ALL {
        let of_kind = || reads.iter().filter(move |r| r.kind == kind);
        let mut failed: BTreeMap<String, u64> = BTreeMap::new();
        for code in of_kind().filter_map(|r| r.failure.clone()) {
            *failed_by_code.entry(code.clone()).or_default() += 1;
            *failed.entry(code).or_default() += 1;
        }
        let answered = of_kind().filter(|r| r.failure.is_none()).count() as u64;
        let ms = read_latencies(of_kind(), ws, we);
        kinds_text.push(format!(
            "{:<11} {:>9} answered, p50/p95/p99 {} / {} / {} ms",
            kind.name(),
            grouped(answered),
            show(percentile(&ms, 50.0), 1),
            show(percentile(&ms, 95.0), 1),
            show(percentile(&ms, 99.0), 1)
        ));
        kinds.insert(
            kind.name().to_owned(),
            json!({"answered": answered, "failed": failed, "latency_ms": latency_json(&ms)}),
        );
    }
    let all = read_latencies(reads.iter(), ws, we);
    let failed: u64 = failed_by_code.values().sum();
    let json = json!({
        "per_s": plan.reads,
        "nodes": inputs.read_urls,
        "sent": reads.len(),
        "answered": reads.len() as u64 - failed,
        "failed": failed,
        "failed_by_code": failed_by_code,
        "latency_ms": latency_json(&all),
        "kinds": kinds,
    });
    let text = format!(
        "{} a second to {} node{}, timed from when due: p50/p95/p99 {} / {} / {} ms; failed: {}\n{}",
        plan.reads,
        inputs.read_urls.len(),
        if inputs.read_urls.len() == 1 { "" } else { "s" },
        show(percentile(&all, 50.0), 1),
        show(percentile(&all, 95.0), 1),
        show(percentile(&all, 99.0), 1),
        codes(&failed_by_code),
        kinds_text.join("\n")
    );
    (json, text)
}

pub fn build(inputs: &Inputs) -> Report {
    let Inputs {
        plan,
        chain_id,
        nodes,
        indexes,
        watched,
        setup,
        results,
        schedule,
        timing,
        ..
    } = *inputs;
    let (reads_json, reads_text) = reads_summary(inputs);
    let (ws, we) = (timing.window_start, timing.window_end);
    let window_secs = (we - ws).as_secs_f64();
    let run_secs = (timing.run_end - timing.run_start).as_secs_f64();

    let mut submitted = 0u64;
    let mut accepted = 0u64;
    let mut committed = 0u64;
    let mut failed = 0u64;
    let mut failed_by_code: BTreeMap<String, u64> = BTreeMap::new();
    let mut ok_in_window = 0u64;
    let mut committed_in_window = 0u64;
    let mut latencies: Vec<f64> = Vec::new();
    let mut by_method: BTreeMap<Method, u64> = BTreeMap::new();
    for r in results.records.values() {
        if r.sent.is_none() {
            continue; // Signed ahead, never sent: the run ended first.
        }
        submitted += 1;
        accepted += u64::from(r.admitted);
        let Some(at) = r.committed else {
            continue;
        };
        committed += 1;
        match &r.failure {
            Some(code) => {
                failed += 1;
                *failed_by_code.entry(code.clone()).or_default() += 1;
            }
            None => *by_method.entry(r.method).or_default() += 1,
        }
        if within(at, ws, we) {
            committed_in_window += 1;
            ok_in_window += u64::from(r.failure.is_none());
        }
        if let Some(sent) = r.sent
            && within(sent, ws, we)
        {
            latencies.push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let ops_per_s = ok_in_window as f64 / window_secs;
    let txs_per_s = committed_in_window as f64 / window_secs;
    let p50 = percentile(&latencies, 50.0);
    let p95 = percentile(&latencies, 95.0);
    let p99 = percentile(&latencies, 99.0);
    let max = latencies.last().copied();

    // The mix: what committed successfully in the whole run, by kind and method.
    let ok_total: u64 = by_method.values().sum();
    let kinds: Vec<Kind> = match plan.mix {
        BenchMix::Receivables => Kind::RECEIVABLES.to_vec(),
        BenchMix::Remark => vec![Kind::Remark],
    };
    let share = |n: u64| {
        if ok_total == 0 {
            0.0
        } else {
            n as f64 / ok_total as f64 * 100.0
        }
    };
    let mut mix_json = serde_json::Map::new();
    let mut mix_text = Vec::new();
    for kind in &kinds {
        let methods: Vec<(Method, u64)> = Method::ALL
            .iter()
            .filter(|m| m.kind() == *kind)
            .map(|m| (*m, by_method.get(m).copied().unwrap_or(0)))
            .collect();
        let n: u64 = methods.iter().map(|(_, n)| n).sum();
        let target = match plan.mix {
            BenchMix::Receivables => f64::from(kind.target_permille()) / 10.0,
            BenchMix::Remark => 100.0,
        };
        mix_json.insert(
            kind.name().to_owned(),
            json!({
                "committed": n,
                "share_percent": round(share(n), 2),
                "target_percent": target,
                "methods": methods.iter().map(|(m, n)| (m.name().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
            }),
        );
        let detail = if methods.len() > 1 {
            format!(
                " ({})",
                methods
                    .iter()
                    .map(|(m, n)| format!("{} {}", m.name(), grouped(*n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        };
        mix_text.push(format!(
            "{:<9} {:>9}  {:>5.1} % (target {target:.0} %){detail}",
            kind.name(),
            grouped(n),
            share(n)
        ));
    }

    // Blocks first seen in the window (heights without a transaction of anyone's are empty blocks).
    let window_blocks: Vec<(u64, u32)> = results
        .blocks
        .iter()
        .filter(|(_, b)| within(b.seen, ws, we))
        .map(|(h, b)| (*h, b.txs))
        .collect();
    let block_span = match (window_blocks.first(), window_blocks.last()) {
        (Some((first, _)), Some((last, _))) => last - first + 1,
        _ => 0,
    };
    let block_txs: u64 = window_blocks.iter().map(|(_, n)| u64::from(*n)).sum();
    let mean_txs = (block_span > 0).then(|| block_txs as f64 / block_span as f64);
    let max_txs = window_blocks.iter().map(|(_, n)| *n).max().unwrap_or(0);

    // CPU and memory.
    let (c0, c1) = (&timing.start, &timing.end);
    let cpu_secs = (c1.at - c0.at).as_secs_f64();
    let window_ops = ops_per_s * cpu_secs;
    let node_rows: Vec<NodeRow> = watched
        .pids
        .iter()
        .enumerate()
        .map(|(i, &pid)| {
            let (start, end) = (
                c0.nodes.get(i).copied().flatten(),
                c1.nodes.get(i).copied().flatten(),
            );
            let (disk_start, disk_end) = (
                c0.disk.get(i).copied().flatten(),
                c1.disk.get(i).copied().flatten(),
            );
            NodeRow {
                pid,
                cpu: cpu_percent(start, end, cpu_secs, CpuTicks::total),
                kernel_cpu: cpu_percent(start, end, cpu_secs, |t| t.system),
                peak_kib: timing.peak_rss_kib.get(i).copied().flatten(),
                rss_kib: timing.rss_kib.get(i).copied().flatten(),
                disk_mib: disk_end.map(|bytes| bytes as f64 / 1_048_576.0),
                disk_bytes_per_op: disk_start
                    .zip(disk_end)
                    .filter(|_| window_ops > 0.0)
                    .map(|(start, end)| (end as f64 - start as f64) / window_ops),
            }
        })
        .collect();
    let bench_cpu = cpu_percent(c0.bench, c1.bench, cpu_secs, CpuTicks::total);
    let machine_cpu = machine_percent(c0, c1);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let sign_us =
        (results.signed > 0).then(|| results.signing.as_secs_f64() * 1e6 / results.signed as f64);
    let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);

    let regression = plan.min_ops.map(|min| (min, ops_per_s >= min));
    let refused_total: u64 = results.refused.values().sum();
    let rate_json = match plan.rate {
        BenchRate::PerSecond(r) => json!(r),
        BenchRate::Max => json!("max"),
    };
    let offered = schedule.sent as f64 / run_secs;
    let per_request =
        (schedule.requests > 0).then(|| schedule.sent as f64 / schedule.requests as f64);

    // Apart: one object of this size is past json!'s recursion limit.
    let setup_json = json!({
        "accounts_per_org": setup.accounts.iter().map(|(o, n)| (o.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "account_cap": setup.account_cap,
        "keys_added": setup.keys_added,
        "receivables_far": setup.roots_far,
        "receivables_maturing_in_run": setup.roots_maturing,
        "receivable_minor_units": setup.root_amount.to_string(),
        "credit_limit_set": setup.credit_limit_set.map(|l| l.to_string()),
        "setup_txs_per_s": opt(setup.setup_rate, 1),
        "planned_rate": opt(setup.planned_rate, 1),
        "refused": results.setup_refused,
        "failed": results.setup_failed,
        "seconds": round(setup.seconds, 2),
        "waited_for_maturity_s": round(setup.waited_seconds, 2),
        "nonces_made_ahead": setup.nonces_ahead,
        "nonces_seconds": round(setup.nonces_seconds, 2),
    });
    let json = json!({
        "mix": match plan.mix { BenchMix::Receivables => "receivables", BenchMix::Remark => "remark" },
        "chain_id": chain_id,
        "nodes": nodes,
        "observers": plan.observers,
        "node_indexes": indexes,
        "trellis_version": env!("CARGO_PKG_VERSION"),
        "target_rate": rate_json,
        "duration_s": round(run_secs, 3),
        "window": plan.window,
        "batch": plan.batch,
        "steady_window_s": round(window_secs, 3),
        "ops_per_s": round(ops_per_s, 1),
        "committed_txs_per_s": round(txs_per_s, 1),
        "latency_ms": {
            "samples": latencies.len(),
            "p50": opt(p50, 1),
            "p95": opt(p95, 1),
            "p99": opt(p99, 1),
            "max": opt(max, 1),
        },
        "submitted": submitted,
        "accepted": accepted,
        "committed": committed,
        "failed": failed,
        "failed_by_code": failed_by_code,
        "uncommitted": accepted.saturating_sub(committed),
        "drained": timing.drained,
        "rejected": {
            "total": refused_total,
            "by_code": results.refused,
            "given_up": results.lost,
        },
        "mix_committed": mix_json,
        "blocks": {
            "count": block_span,
            "with_transactions": window_blocks.len(),
            "mean_txs_per_block": opt(mean_txs, 1),
            "max_txs_per_block": max_txs,
        },
        "schedule": {
            "offered_per_s": round(offered, 1),
            "max_lag_ms": round(schedule.max_lag.as_secs_f64() * 1000.0, 1),
            "window_full_ms": schedule.window_full_ms,
            "starved_ms": schedule.starved_ms,
            "send_every_ms": plan.send_every.as_millis(),
            "requests": schedule.requests,
            "mean_txs_per_request": opt(per_request, 1),
        },
        "node_processes": node_rows.iter().map(|n| json!({
            "pid": n.pid,
            "cpu_percent": opt(n.cpu, 1),
            "kernel_cpu_percent": opt(n.kernel_cpu, 1),
            "cpu_us_per_op": opt(cpu_us_per_op(n.cpu, ops_per_s), 1),
            "peak_rss_mib": opt(mib(n.peak_kib), 1),
            "rss_mib": opt(mib(n.rss_kib), 1),
            "disk_mib": opt(n.disk_mib, 1),
            "disk_bytes_per_op": opt(n.disk_bytes_per_op, 0),
        })).collect::<Vec<_>>(),
        "generator": {
            "cpu_percent": opt(bench_cpu, 1),
            "cpu_us_per_op": opt(cpu_us_per_op(bench_cpu, ops_per_s), 1),
            "sign_us_per_tx": opt(sign_us, 1),
            "signed": results.signed,
            "nonces_made_late": results.nonces_made_late,
            "nice": plan.nice,
        },
        "machine": {
            "cores": cores,
            "cpu_busy_percent": opt(machine_cpu, 1),
        },
        "setup": setup_json,
        "reads": reads_json,
        "regression": regression.map(|(min, passed)| json!({"min_ops": min, "passed": passed})),
    });

    let f = |x: Option<f64>| show(x, 0);
    let mut rows: Vec<(&str, String)> = vec![
        (
            "load",
            format!(
                "{} mix, {} for {:.0} s, window {}, batches of up to {}, on {} ({} node{}{})",
                json["mix"].as_str().unwrap_or_default(),
                match plan.rate {
                    BenchRate::PerSecond(r) => format!("{r} tx/s"),
                    BenchRate::Max => "max rate".to_owned(),
                },
                run_secs,
                grouped(plan.window),
                plan.batch,
                chain_id,
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" },
                match plan.observers {
                    0 => String::new(),
                    n => format!("{}, sent no load", super::observers_text(n)),
                }
            ),
        ),
        (
            "committed ops/s",
            format!(
                "{ops_per_s:.1} (steady window of {window_secs:.1} s; {txs_per_s:.1} tx/s with failed ones)"
            ),
        ),
        (
            "latency p50/p95/p99",
            format!(
                "{} / {} / {} ms (max {}, {} samples), submit to commit seen",
                f(p50),
                f(p95),
                f(p99),
                f(max),
                grouped(latencies.len() as u64)
            ),
        ),
        (
            "transactions",
            format!(
                "{} submitted, {} accepted, {} committed ({} failed){}",
                grouped(submitted),
                grouped(accepted),
                grouped(committed),
                grouped(failed),
                if timing.drained {
                    String::new()
                } else {
                    format!(
                        "; {} not seen committed",
                        grouped(accepted.saturating_sub(committed))
                    )
                }
            ),
        ),
        ("failed by code", codes(&failed_by_code)),
        (
            "rejected",
            format!(
                "{} responses: {}{}",
                grouped(refused_total),
                codes(&results.refused),
                if results.lost > 0 {
                    format!("; {} given up", grouped(results.lost))
                } else {
                    String::new()
                }
            ),
        ),
        ("mix (committed)", mix_text.join("\n")),
        (
            "blocks",
            format!(
                "{} in the window ({} with transactions), mean {} txs, max {}",
                grouped(block_span),
                window_blocks.len(),
                show(mean_txs, 1),
                grouped(u64::from(max_txs))
            ),
        ),
        (
            "schedule",
            format!(
                "offered {offered:.1} tx/s every {} ms, {} a request; max lag {:.0} ms, window full {} ms, nothing signed {} ms",
                plan.send_every.as_millis(),
                show(per_request, 1),
                schedule.max_lag.as_secs_f64() * 1000.0,
                grouped(schedule.window_full_ms),
                grouped(schedule.starved_ms)
            ),
        ),
    ];
    rows.push(("reads", reads_text));
    let node_text = if node_rows.is_empty() {
        "unknown (give --node-pid)".to_owned()
    } else {
        node_rows
            .iter()
            .map(|n| {
                let disk = match n.disk_mib {
                    Some(_) => format!(
                        "; data {} MiB, {} bytes more per operation",
                        show(n.disk_mib, 0),
                        show(n.disk_bytes_per_op, 0)
                    ),
                    None => String::new(),
                };
                format!(
                    "pid {}: CPU {} % ({} in the kernel; {} µs per operation), peak RSS {} MiB (now {} MiB){disk}",
                    n.pid,
                    show(n.cpu, 0),
                    show(n.kernel_cpu, 0),
                    show(cpu_us_per_op(n.cpu, ops_per_s), 0),
                    show(mib(n.peak_kib), 0),
                    show(mib(n.rss_kib), 0)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    rows.push(("node processes", node_text));
    rows.push(("node indexes", indexes_text(indexes)));
    rows.push((
        "generator",
        format!(
            "CPU {} % at nice {} ({} µs per operation; signing {} µs/tx, {} signed, {} of them with a nonce made late)",
            show(bench_cpu, 0),
            plan.nice,
            show(cpu_us_per_op(bench_cpu, ops_per_s), 0),
            show(sign_us, 1),
            grouped(results.signed),
            grouped(results.nonces_made_late)
        ),
    ));
    rows.push((
        "machine",
        format!(
            "{cores} cores, {} % busy (100 % = all cores)",
            show(machine_cpu, 0)
        ),
    ));
    rows.push((
        "setup",
        format!(
            "{:.1} s: {} accounts ({} added), {} signature nonces made ahead ({:.1} s), {} receivables far out, {} maturing in the run{}{}",
            setup.seconds,
            setup.accounts.iter().map(|(_, n)| n).sum::<usize>(),
            setup.keys_added,
            grouped(setup.nonces_ahead as u64),
            setup.nonces_seconds,
            grouped(setup.roots_far as u64),
            grouped(setup.roots_maturing as u64),
            setup
                .setup_rate
                .map_or(String::new(), |r| format!(", setup ran at {r:.0} tx/s")),
            if setup.waited_seconds > 0.5 {
                format!(", then waited {:.1} s for maturity", setup.waited_seconds)
            } else {
                String::new()
            }
        ),
    ));
    if let Some((min, passed)) = regression {
        rows.push((
            "floor",
            format!(
                "{} ({ops_per_s:.1} ops/s against --min-ops {min})",
                if passed { "passed" } else { "FAILED" }
            ),
        ));
    }
    let report = Report::new(record(rows), json);
    match regression {
        Some((min, false)) => report.with_failure(
            CliError::new(
                Class::Regression,
                format!("committed {ops_per_s:.1} operations per second, below the floor of {min}"),
            )
            .with_code("below_floor")
            .with_hint(
                "a gross slowdown; see docs/benchmarks.md for the figures this floor comes from",
            ),
        ),
        _ => report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_ordered() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    #[test]
    fn cpu_per_operation_is_the_cores_share_over_the_rate() {
        // 135 % of a core at 10,800 operations a second: 125 µs each.
        assert_eq!(cpu_us_per_op(Some(135.0), 10_800.0), Some(125.0));
        assert_eq!(cpu_us_per_op(Some(50.0), 0.0), None);
        assert_eq!(cpu_us_per_op(None, 1_000.0), None);
    }
}
