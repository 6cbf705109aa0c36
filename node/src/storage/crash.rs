//! A test hook: `TRELLIS_CRASH_AT=<point>@<height>` makes the node abort at
//! `point` of writing block `height`, as a power cut there would, so process
//! tests can check recovery from exactly there rather than from wherever a
//! kill happens to land (CometBFT's `FAIL_TEST_INDEX` serves the same end).
//! Points: `redo-synced` (the redo file is on disk, sled has nothing of the
//! block) and `half-applied` (half of the block's records are in sled, flushed).
//! Unset, it costs a comparison per block.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Point {
    RedoSynced,
    HalfApplied,
}

const VAR: &str = "TRELLIS_CRASH_AT";

fn planned() -> Option<(Point, u64)> {
    static PLANNED: OnceLock<Option<(Point, u64)>> = OnceLock::new();
    *PLANNED.get_or_init(|| {
        let spec = std::env::var(VAR).ok()?;
        let parsed = parse(&spec);
        if parsed.is_none() {
            tracing::warn!(
                "{VAR}={spec:?} ignored: expected redo-synced@<height> or half-applied@<height>"
            );
        }
        parsed
    })
}

fn parse(spec: &str) -> Option<(Point, u64)> {
    let (point, height) = spec.split_once('@')?;
    let point = match point {
        "redo-synced" => Point::RedoSynced,
        "half-applied" => Point::HalfApplied,
        _ => return None,
    };
    Some((point, height.parse().ok()?))
}

/// Whether the process is to abort at `point` of writing block `height`.
pub(super) fn planned_at(point: Point, height: u64) -> bool {
    planned() == Some((point, height))
}

/// Aborts the process if it is to abort here.
pub(super) fn abort_if_planned(point: Point, height: u64) {
    if planned_at(point, height) {
        tracing::error!("{VAR}: aborting at {point:?} of block {height}");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_anything_else_is_refused() {
        assert_eq!(parse("redo-synced@7"), Some((Point::RedoSynced, 7)));
        assert_eq!(parse("half-applied@12"), Some((Point::HalfApplied, 12)));
        for bad in [
            "",
            "redo-synced",
            "redo-synced@",
            "redo-synced@x",
            "later@3",
            "@3",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
