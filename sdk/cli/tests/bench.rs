//! `trellis bench` against real dev nodes: the quick mode CI runs, on a
//! `trellis-node --dev` the bench starts (and stops) itself, and its floor
//! check on an in-process dev node. They check behaviour — the report is
//! one consistent JSON document, the mix has every kind, the exit codes —
//! and the quick run's floor is a tenth of what a debug build does, so it
//! catches a gross regression, not a slow day: figures live in
//! docs/benchmarks.md, never in tests.
//!
//! The first test takes the `trellis-node` binary next to `trellis` in the
//! target directory: `cargo test --workspace` builds it.

use serde_json::Value;
use std::path::Path;
use trellis_tests::DevNode;

mod common;

use common::*;

/// `trellis args`, run in the directory the binaries are in, so
/// `--node-bin ./trellis-node` is a relative path.
async fn trellis_beside_node(args: &[&str]) -> Run {
    let mut cmd = command(args, &[]);
    cmd.current_dir(
        Path::new(BIN)
            .parent()
            .expect("the binary is in a directory"),
    );
    finish(cmd, args).await
}

fn node_binary() -> String {
    let path = Path::new(BIN).with_file_name("trellis-node");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p trellis-node` (`cargo test --workspace` does)",
        path.display()
    );
    // Relative to the directory `trellis` runs in: the bench must resolve it
    // before starting the node in a directory of its own.
    "./trellis-node".to_owned()
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Every kind of the receivables mix committed, and no transaction failed.
fn assert_whole_mix_committed(report: &Value) {
    for kind in ["issue", "transfer", "split", "financing", "settle"] {
        let n = count(&report["mix_committed"][kind]["committed"]);
        assert!(n > 0, "no {kind} committed: {:#}", report["mix_committed"]);
    }
    assert_eq!(count(&report["failed"]), 0, "{report:#}");
}

/// `trellis args` exits 2 (a usage error) saying `message`.
async fn assert_refused(args: &[&str], message: &str) {
    let run = trellis_beside_node(args).await.expect_code(2);
    assert!(run.stderr.contains(message), "{}", run.stderr);
}

fn millis(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a latency: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_bench_runs_the_whole_mix_on_a_dev_node_it_starts_and_stops() {
    let node_bin = node_binary();
    // The regression guard CI runs: a debug build commits 350–540 receivable
    // operations a second at `--rate max` on the project's machine
    // (docs/benchmarks.md), so a floor of 30 fails only a gross (>10x)
    // slowdown, never noise.
    let run = trellis_beside_node(&[
        "--output",
        "json",
        "bench",
        "--quick",
        "--start",
        "--node-bin",
        &node_bin,
        "--rate",
        "max",
        "--min-ops",
        "30",
    ])
    .await
    .ok();
    let report = run.json();

    assert_eq!(report["mix"], "receivables");
    assert_eq!(report["chain_id"], "trellis-dev");
    // Submissions went in batches (POST /v1/transactions/batch) by default.
    assert_eq!(report["batch"], 64);
    let (submitted, accepted, committed) = (
        count(&report["submitted"]),
        count(&report["accepted"]),
        count(&report["committed"]),
    );
    assert!(committed > 0, "nothing committed: {report:#}");
    assert!(
        committed <= accepted && accepted <= submitted,
        "committed {committed} ≤ accepted {accepted} ≤ submitted {submitted}"
    );
    assert!(count(&report["failed"]) <= committed);
    assert!(report["ops_per_s"].is_number());

    let latency = &report["latency_ms"];
    assert!(count(&latency["samples"]) > 0);
    let (p50, p95, p99) = (
        millis(&latency["p50"]),
        millis(&latency["p95"]),
        millis(&latency["p99"]),
    );
    assert!(
        0.0 <= p50 && p50 <= p95 && p95 <= p99 && p99 <= millis(&latency["max"]),
        "{latency}"
    );

    // Every kind of the mix committed, and the kinds add up to the successes.
    let mut kinds = 0;
    for kind in ["issue", "transfer", "split", "financing", "settle"] {
        let n = count(&report["mix_committed"][kind]["committed"]);
        assert!(n > 0, "no {kind} committed: {:#}", report["mix_committed"]);
        kinds += n;
    }
    assert_eq!(kinds, committed - count(&report["failed"]));
    for method in ["issue", "accept"] {
        assert!(count(&report["mix_committed"]["issue"]["methods"][method]) > 0);
    }

    assert!(count(&report["blocks"]["count"]) > 0);
    let ops_per_s = report["ops_per_s"].as_f64().expect("ops/s");
    // CPU per operation is the CPU share over the rate; the share is rounded
    // to 0.1 %, which moves the quotient by up to 0.05 % × 10⁶ / rate.
    let per_op = |process: &Value| {
        let cpu = process["cpu_percent"].as_f64().expect("cpu %");
        let per_op = process["cpu_us_per_op"].as_f64().expect("µs per op");
        let expected = cpu / 100.0 * 1e6 / ops_per_s;
        assert!(
            (per_op - expected).abs() <= 0.1 + 500.0 / ops_per_s,
            "{process}: {per_op} µs per op, expected about {expected}"
        );
    };
    per_op(&report["generator"]);
    // The generator's CPU niceness while it ran: the default.
    assert_eq!(report["generator"]["nice"], 10);
    assert_eq!(report["regression"]["passed"], true);
    assert!(report["setup"]["receivables_maturing_in_run"].as_u64() > Some(0));
    // Every transaction signed with a nonce made before the run: enough were.
    let signed = count(&report["generator"]["signed"]);
    assert!(
        signed > committed / 2,
        "{signed} signed, {committed} committed"
    );
    assert!(count(&report["setup"]["nonces_made_ahead"]) >= signed);
    assert_eq!(count(&report["generator"]["nonces_made_late"]), 0);

    // The node it started keeps both indexes, as nodes do by default.
    assert_eq!(
        report["node_indexes"],
        serde_json::json!([{ "transactions": true, "queries": true }])
    );

    // The node it started is reported, and gone.
    let nodes = report["node_processes"].as_array().expect("node processes");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    per_op(&nodes[0]);
    // The kernel's part of the node's CPU is a part of it: a node writes
    // blocks, so some, but never more than all.
    let kernel = nodes[0]["kernel_cpu_percent"].as_f64().expect("kernel %");
    let cpu = nodes[0]["cpu_percent"].as_f64().expect("cpu %");
    assert!(kernel > 0.0 && kernel <= cpu, "{kernel} of {cpu}");
    // The bench knows the data directory of a node it started: its chain
    // is there, and committing blocks grew it.
    assert!(nodes[0]["disk_mib"].as_f64().is_some_and(|m| m > 0.0));
    assert!(
        nodes[0]["disk_bytes_per_op"]
            .as_f64()
            .is_some_and(|b| b > 0.0)
    );
    assert!(nodes[0]["peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0));
    let pid = count(&nodes[0]["pid"]);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the node {pid} the bench started still runs"
    );
    // Progress went to stderr, never into the JSON.
    assert!(run.stderr.contains("ops/s now"), "{}", run.stderr);
    // No reads were asked for, and none were sent.
    assert!(report["reads"].is_null(), "{}", report["reads"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_without_indexes_commits_the_mix_and_says_it_keeps_none() {
    let node_bin = node_binary();
    let run = trellis_beside_node(&[
        "--output",
        "json",
        "bench",
        "--quick",
        "--start",
        "--indexes",
        "none",
        "--node-bin",
        &node_bin,
        "--duration",
        "2s",
        // What runs, not how fast: the first test guards the rate.
        "--min-ops",
        "0",
    ])
    .await
    .ok();
    let report = run.json();
    // The node's own `/status` says what it keeps: `--no-indexes` reached it.
    assert_eq!(
        report["node_indexes"],
        serde_json::json!([{ "transactions": false, "queries": false }])
    );
    // The bench reads neither index: the whole mix commits all the same.
    assert_whole_mix_committed(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_without_indexes_beside_an_observer_commit_the_mix_while_it_answers_reads() {
    let node_bin = node_binary();
    let run = trellis_beside_node(&[
        "--output",
        "json",
        "bench",
        "--quick",
        "--start",
        "--validators",
        "2",
        "--observers",
        "1",
        "--indexes",
        "none",
        "--reads",
        "10",
        "--node-bin",
        &node_bin,
        // Three debug-built nodes and the reads share two cores: 2 s held
        // too few of their blocks for the mix's settlements when the machine
        // ran slow. This test checks what runs, the first one guards the
        // rate: no floor here.
        "--duration",
        "4s",
        "--min-ops",
        "0",
    ])
    .await
    .ok();
    let report = run.json();
    assert_eq!(report["observers"], 1);
    // The reads went to the observer, the one node that keeps the indexes
    // they need, and every kind was answered, none failed.
    let reads = &report["reads"];
    let observer = reads["nodes"][0].as_str().expect("the node read");
    assert_eq!(reads["nodes"].as_array().map(Vec::len), Some(1), "{reads}");
    assert!(
        !report["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| n == observer),
        "the reads went to a validator: {report:#}"
    );
    assert_eq!(count(&reads["failed"]), 0, "{reads:#}");
    assert_eq!(count(&reads["answered"]), count(&reads["sent"]));
    // 10 a second for 4 s, the last due just before the run's end.
    assert_eq!(count(&reads["sent"]), 40, "{reads:#}");
    for kind in ["holdings", "lineage", "transaction", "proven"] {
        let of_kind = &reads["kinds"][kind];
        assert!(count(&of_kind["answered"]) > 0, "no {kind} read: {reads:#}");
        let latency = &of_kind["latency_ms"];
        if count(&latency["samples"]) > 0 {
            assert!(
                millis(&latency["p50"]) <= millis(&latency["p99"])
                    && millis(&latency["p99"]) <= millis(&latency["max"]),
                "{latency}"
            );
        }
    }
    assert!(count(&reads["latency_ms"]["samples"]) > 0, "{reads:#}");
    // The load went to the two validators, which keep no index ...
    let none = serde_json::json!({ "transactions": false, "queries": false });
    assert_eq!(report["node_indexes"], serde_json::json!([none, none]));
    assert_eq!(report["nodes"].as_array().map(Vec::len), Some(2));
    assert_whole_mix_committed(&report);
    // ... and the observer, which followed every block, is measured with them.
    let processes = report["node_processes"].as_array().expect("node processes");
    assert_eq!(processes.len(), 3, "{report:#}");
    for node in processes {
        assert!(
            node["cpu_percent"].as_f64().is_some_and(|c| c > 0.0),
            "{node}"
        );
        assert!(node["disk_mib"].as_f64().is_some_and(|d| d > 0.0), "{node}");
        let pid = count(&node["pid"]);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "node {pid} still runs after the bench"
        );
    }
    assert!(
        run.stderr.contains("2 validators and 1 observer"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_without_a_network_are_refused_before_anything_starts() {
    assert_refused(
        &["bench", "--quick", "--start", "--observers", "1"],
        "--observers needs a network",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_node_without_indexes_or_of_remarks_are_refused() {
    let node_bin = node_binary();
    assert_refused(
        &[
            "bench",
            "--quick",
            "--start",
            "--indexes",
            "none",
            "--reads",
            "10",
            "--node-bin",
            &node_bin,
        ],
        "--reads needs nodes that keep both indexes",
    )
    .await;
    assert_refused(
        &["bench", "--quick", "--mix", "remark", "--reads", "10"],
        "--reads asks about receivables",
    )
    .await;
    // Where reads go means nothing without reads.
    assert_refused(
        &["bench", "--quick", "--read-node", "http://127.0.0.1:1"],
        "--reads",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_node_named_for_them() {
    // The load and the reads go to one dev node, named two ways (the SDK
    // drops a trailing slash), so the report shows which name got the reads.
    let node = DevNode::start().await.expect("dev node");
    let load = node.url("");
    let read = format!("{load}/");
    let run = trellis_beside_node(&[
        "--node",
        &load,
        "--output",
        "json",
        "bench",
        "--quick",
        "--duration",
        "2s",
        "--reads",
        "10",
        "--read-node",
        &read,
        "--min-ops",
        "0",
    ])
    .await
    .ok();
    let report = run.json();
    let reads = &report["reads"];
    assert_eq!(reads["nodes"], serde_json::json!([read]), "{reads:#}");
    assert_eq!(report["nodes"], serde_json::json!([load]));
    assert_eq!(count(&reads["sent"]), 20, "{reads:#}");
    assert_eq!(count(&reads["answered"]), 20, "{reads:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_its_floor_the_quick_bench_exits_with_the_regression_code() {
    let node = DevNode::start().await.expect("dev node");
    let url = node.url("");
    let run = trellis_beside_node(&[
        "--node",
        &url,
        "--output",
        "json",
        "bench",
        "--quick",
        "--mix",
        "remark",
        "--duration",
        "2s",
        "--min-ops",
        "100000000",
    ])
    .await
    .expect_code(9);
    // The report is still the one document on stdout, with the verdict.
    let report = run.json();
    assert_eq!(report["mix"], "remark");
    assert_eq!(report["regression"]["passed"], false);
    assert_eq!(report["regression"]["min_ops"], 100000000.0);
    assert!(count(&report["mix_committed"]["remark"]["committed"]) > 0);
    assert!(run.stderr.contains("error[below_floor]"), "{}", run.stderr);
    // At the quick rate of 500/s, what is due every 10 ms goes out together:
    // about 5 a request (one each when it sent every millisecond).
    let schedule = &report["schedule"];
    assert_eq!(schedule["send_every_ms"], 10);
    let per_request = schedule["mean_txs_per_request"]
        .as_f64()
        .expect("per request");
    assert!(per_request >= 2.5, "{schedule}");
}
