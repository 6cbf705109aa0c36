//! The node's Prometheus metrics, in one registry, every name prefixed `trellis_`.
//!
//! Components hold an `Arc<Metrics>` and update the public fields directly;
//! [`Metrics::encode`] renders the OpenMetrics text served at `GET /metrics`.
//! Values that can be read off a component (the mempool's size) are set at
//! scrape time by whoever serves the scrape, so they are never stale.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The matched route template, e.g. `/v1/blocks/{height}`, or `unmatched`.
    pub route: String,
    /// The HTTP status code.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `build` (execute waiting transactions and compute the state root, as
    /// proposer), `validate` (the same for another validator's proposal),
    /// `commit` (check the decided block, make it the head, prune the mempool),
    /// `durable` (from the block writer taking it until its redo file is
    /// synced) or `write` (from the same start until it is in sled and no
    /// longer staged; caching its tree nodes comes after).
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidatorLabels {
    /// The validator's public key, hex.
    pub validator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// A stable error code, e.g. `bad_signature`.
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    /// Height of the latest committed block.
    pub height: Gauge,
    pub committed_txs: Counter,
    /// Set from the mempool at scrape time.
    pub mempool_size: Gauge,
    pub block_interval_seconds: Histogram,
    pub block_txs: Histogram,
    /// Wall time each phase of a block takes.
    pub block_phase_seconds: Family<PhaseLabels, Histogram>,
    pub api_requests: Family<ApiLabels, Counter>,
    pub api_latency_seconds: Family<RouteLabels, Histogram>,
    pub admission_rejected: Family<CodeLabels, Counter>,
    /// Kept by the mempool: what it dropped uncommitted, by reason.
    pub mempool_dropped: Family<CodeLabels, Counter>,
    /// Rounds beyond round 0: each one is a height that needed another try.
    pub consensus_rounds: Counter,
    pub consensus_rejected_messages: Family<CodeLabels, Counter>,
    /// Equivocations recorded as evidence, by validator.
    pub consensus_equivocations: Family<ValidatorLabels, Counter>,
    /// Connected member peers.
    pub peers: Gauge,
    /// Refused messages counted against peers (malformed, mis-signed, over the rate).
    pub network_strikes: Counter,
    pub network_rate_limited: Counter,
    /// Bytes of peers' frames held in memory, being read or waiting to be handled.
    pub network_frame_bytes: Gauge,
    /// Transactions an observer's node sent again, still waiting.
    pub network_resent: Counter,
    /// Peers' consensus messages dropped: the sender's share of the
    /// driver's queue was full.
    pub network_consensus_dropped: Counter,
    /// Messages to peers not sent: the peer's push queue was full, or its
    /// stream failed or stalled before they were written.
    pub network_push_dropped: Counter,
    /// Requests a peer could not take: it speaks another wire version.
    pub network_other_version: Counter,
    /// 1 while catching up with the network by block sync.
    pub syncing: Gauge,
    /// The committed height f+1 validators vouch the chain has reached.
    pub sync_target: Gauge,
}

fn block_phase_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn api_latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trellis");
        let metrics = Metrics {
            height: Gauge::default(),
            committed_txs: Counter::default(),
            mempool_size: Gauge::default(),
            block_interval_seconds: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ]),
            // 1 .. 16384 transactions.
            block_txs: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
            block_phase_seconds: Family::new_with_constructor(block_phase_histogram),
            api_requests: Family::default(),
            api_latency_seconds: Family::new_with_constructor(api_latency_histogram),
            admission_rejected: Family::default(),
            mempool_dropped: Family::default(),
            consensus_rounds: Counter::default(),
            consensus_rejected_messages: Family::default(),
            consensus_equivocations: Family::default(),
            peers: Gauge::default(),
            network_strikes: Counter::default(),
            network_rate_limited: Counter::default(),
            network_frame_bytes: Gauge::default(),
            network_push_dropped: Counter::default(),
            network_other_version: Counter::default(),
            network_consensus_dropped: Counter::default(),
            network_resent: Counter::default(),
            syncing: Gauge::default(),
            sync_target: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "height",
            "Height of the latest committed block",
            metrics.height.clone(),
        );
        registry.register(
            "committed_txs",
            "Transactions committed in blocks",
            metrics.committed_txs.clone(),
        );
        registry.register(
            "mempool_size",
            "Transactions waiting in the mempool",
            metrics.mempool_size.clone(),
        );
        registry.register_with_unit(
            "block_interval",
            "Time between the timestamps of consecutive committed blocks",
            Unit::Seconds,
            metrics.block_interval_seconds.clone(),
        );
        registry.register(
            "block_txs",
            "Transactions per committed block",
            metrics.block_txs.clone(),
        );
        registry.register_with_unit(
            "block_phase",
            "Time spent building, validating, committing and writing blocks",
            Unit::Seconds,
            metrics.block_phase_seconds.clone(),
        );
        registry.register(
            "api_requests",
            "HTTP API requests by route and status",
            metrics.api_requests.clone(),
        );
        registry.register_with_unit(
            "api_latency",
            "HTTP API request latency by route",
            Unit::Seconds,
            metrics.api_latency_seconds.clone(),
        );
        registry.register(
            "admission_rejected",
            "Transactions refused by mempool admission, by error code",
            metrics.admission_rejected.clone(),
        );
        registry.register(
            "mempool_dropped",
            "Transactions dropped from the mempool without being committed, by reason",
            metrics.mempool_dropped.clone(),
        );
        registry.register(
            "consensus_rounds",
            "Consensus rounds beyond round 0 (each is a failed attempt at a height)",
            metrics.consensus_rounds.clone(),
        );
        registry.register(
            "consensus_rejected_messages",
            "Consensus messages rejected, by reason code",
            metrics.consensus_rejected_messages.clone(),
        );
        registry.register(
            "consensus_equivocations",
            "Validators' equivocations (two votes signed for one step) recorded as evidence",
            metrics.consensus_equivocations.clone(),
        );
        registry.register("peers", "Connected member peers", metrics.peers.clone());
        registry.register(
            "network_strikes",
            "Refused peer messages (malformed, mis-signed, stale, over the rate limit)",
            metrics.network_strikes.clone(),
        );
        registry.register(
            "network_rate_limited",
            "Peer requests dropped by the per-peer rate limit",
            metrics.network_rate_limited.clone(),
        );
        registry.register(
            "network_frame_bytes",
            "Bytes of peers' frames held in memory, being read or waiting to be handled",
            metrics.network_frame_bytes.clone(),
        );
        registry.register(
            "network_push_dropped",
            "Messages to peers dropped: the peer's push queue was full, or its stream failed or stalled before they were written",
            metrics.network_push_dropped.clone(),
        );
        registry.register(
            "network_other_version",
            "Requests to peers that speak another wire version (another Trellis release), which they could not take",
            metrics.network_other_version.clone(),
        );
        registry.register(
            "network_resent",
            "Transactions an observer's node sent to the validators again because they still waited",
            metrics.network_resent.clone(),
        );
        registry.register(
            "network_consensus_dropped",
            "Peers' consensus messages dropped because the sender's share of the driver's queue was full",
            metrics.network_consensus_dropped.clone(),
        );
        registry.register(
            "syncing",
            "1 while the node catches up by block sync",
            metrics.syncing.clone(),
        );
        registry.register(
            "sync_target",
            "Committed height that f+1 validators' signed messages show the chain has reached",
            metrics.sync_target.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Records how long a block phase (see [`PhaseLabels`]) took.
    pub fn observe_phase(&self, phase: &'static str, took: std::time::Duration) {
        self.block_phase_seconds
            .get_or_create(&PhaseLabels { phase })
            .observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition of every metric (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_names_every_metric_with_the_trellis_prefix() {
        let metrics = Metrics::new();
        metrics.height.set(7);
        metrics
            .api_requests
            .get_or_create(&ApiLabels {
                route: "/health".into(),
                status: "200".into(),
            })
            .inc();
        metrics
            .api_latency_seconds
            .get_or_create(&RouteLabels {
                route: "/health".into(),
            })
            .observe(0.001);
        metrics
            .admission_rejected
            .get_or_create(&CodeLabels {
                code: "bad_signature".into(),
            })
            .inc();
        metrics
            .mempool_dropped
            .get_or_create(&CodeLabels {
                code: "expired".into(),
            })
            .inc();
        metrics.observe_phase("commit", std::time::Duration::from_millis(20));
        let text = metrics.encode();
        for name in [
            "trellis_height 7",
            "trellis_committed_txs_total",
            "trellis_mempool_size",
            "trellis_block_interval_seconds",
            "trellis_block_txs",
            "trellis_api_requests_total{route=\"/health\",status=\"200\"} 1",
            "trellis_api_latency_seconds_count{route=\"/health\"} 1",
            "trellis_admission_rejected_total{code=\"bad_signature\"} 1",
            "trellis_mempool_dropped_total{code=\"expired\"} 1",
            "trellis_consensus_rounds_total",
            "trellis_block_phase_seconds_count{phase=\"commit\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
