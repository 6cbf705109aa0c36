//! `prune-state`: rewrites a stopped node's store without the state tree's
//! old versions, which are most of its disk (docs/operator.md).
//!
//! The store is copied, not trimmed in place: sled does not give freed space
//! back to the file system, and the copy's page table (read whole at open) is
//! sized to what is kept. Everything but the tree is copied as it is (blocks,
//! certificates, receipts, indexes, the latest state); of the tree, the
//! oldest version kept is written by [`live_tree::copy`] (the nodes its root
//! reaches, every leaf's value written out) and the records of the versions
//! after it are copied as they are: every node a later version wrote is in
//! its tree, and a `Moved` entry there points at most back to the oldest
//! kept version, whose leaves now all hold their values. Afterwards state
//! at heights below the oldest kept is [`StorageError::Pruned`].
//!
//! Crash safety: the copy is built in `<store>.pruning` and opened like any
//! store (which checks its head) before anything is renamed; then the store moves to
//! `<store>.unpruned`, the copy to `<store>`, and `<store>.unpruned` is
//! removed. A stop between the two renames leaves both aside, and
//! [`finish_interrupted`] (run by every open) completes the swap.

use super::redo::{io, sync_dir};
use super::{
    BatchedWriter, DEFAULT_SLED_CACHE_BYTES, Storage, StorageError, TreeLog, be_u64, corrupt,
    prefix, retry_while_locked, sled_config, tree_log,
};
use crate::state::live_tree::{self, CopiedTree};
use std::path::{Path, PathBuf};

/// What [`prune_state`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    /// The oldest height whose state was kept, and the head.
    pub kept_from: u64,
    pub height: u64,
    /// Records copied as they were: all but the state tree's, and the
    /// tree's of the versions after `kept_from`.
    pub records: u64,
    /// The tree of `kept_from`.
    pub tree: CopiedTree,
    /// Size of the store's directory before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Prunes the store at `path` (sled's directory, `<data dir>/chain`) down
/// to the state of its `keep` latest heights (at least the head's). The
/// node must be stopped: sled's file lock refuses a second opener.
pub fn prune_state(path: &Path, keep: u64) -> Result<PruneReport, StorageError> {
    finish_interrupted(path)?;
    if !path.join("db").exists() {
        return Err(StorageError::NotInitialised);
    }
    let bytes_before = dir_bytes(path)?;
    // Opened first and held until the copy is in its place: its lock keeps
    // out the node and any other prune, whose copy must not be touched.
    let source = Storage::open(path)?;
    let head = source.head().ok_or(StorageError::NotInitialised)?;
    // Never below what an earlier prune kept: older trees are gone.
    let kept_from = head
        .height
        .saturating_sub(keep.saturating_sub(1))
        .max(source.oldest_state);
    let copy = aside(path, "pruning");
    if copy.exists() {
        // A copy never swapped in: an earlier prune stopped before its end.
        std::fs::remove_dir_all(&copy).map_err(io)?;
    }
    let (records, tree) = {
        let to = sled_config(&copy)
            .cache_capacity(DEFAULT_SLED_CACHE_BYTES)
            .open()?;
        let to_log = TreeLog::open(&copy, true)?;
        let mut out = BatchedWriter::new(&to, &to_log);
        let records = copy_all_but_old_trees(&source, kept_from, &mut out)?;
        to.insert(prefix::PRUNED, &kept_from.to_be_bytes())?;
        let tree = live_tree::copy(&source.records(), kept_from, out)?;
        to.flush()?;
        (records, tree)
    };
    // Opened as the node will open it, which checks its head block; sled
    // also replays the copy's log here, not at the node's next start.
    let copied = retry_while_locked(|| Storage::open(&copy))?.head();
    if copied != Some(head) {
        return Err(corrupt(format!(
            "the pruned copy's head {copied:?} is not the store's {head:?}"
        )));
    }
    let unpruned = aside(path, "unpruned");
    std::fs::rename(path, &unpruned).map_err(io)?;
    std::fs::rename(&copy, path).map_err(io)?;
    // Both renames durable before the store they set aside is removed.
    sync_dir(path)?;
    drop(source);
    std::fs::remove_dir_all(&unpruned).map_err(io)?;
    Ok(PruneReport {
        kept_from,
        height: head.height,
        records,
        tree,
        bytes_before,
        bytes_after: dir_bytes(path)?,
    })
}

/// Completes a prune that stopped between its renames (see the module docs).
pub(super) fn finish_interrupted(path: &Path) -> Result<(), StorageError> {
    let unpruned = aside(path, "unpruned");
    if !unpruned.exists() {
        return Ok(());
    }
    if !path.exists() {
        let copy = aside(path, "pruning");
        if !copy.exists() {
            return Err(corrupt(format!(
                "{} is missing and {} holds the store a prune set aside: move it back",
                path.display(),
                unpruned.display()
            )));
        }
        // The copy was checked before the store was set aside.
        std::fs::rename(&copy, path).map_err(io)?;
        sync_dir(path)?;
    }
    tracing::warn!(
        "finished swapping in the pruned store that a stop had interrupted; removing {}",
        unpruned.display()
    );
    std::fs::remove_dir_all(&unpruned).map_err(io)
}

/// Copies every record of `from` into `out` except the state tree's of
/// versions `kept_from` and older; returns how many it copied.
fn copy_all_but_old_trees(
    from: &Storage,
    kept_from: u64,
    out: &mut BatchedWriter,
) -> Result<u64, StorageError> {
    for record in from.db.iter() {
        let (key, value) = record?;
        if !prefix::is_tree(&key) {
            out.put(&key, &value)?;
            continue;
        }
        // Tree records are `prefix ‖ version ‖ ...`.
        let version = be_u64(key.get(1..9).unwrap_or_default(), || {
            format!("tree record key {}", hex::encode(&key))
        })?;
        if version > kept_from {
            for (key, pointer) in tree_log::pointers_in(&key, &value)? {
                out.put(&key, &from.tree_log.read(&key, &pointer)?)?;
            }
        }
    }
    out.flush()?;
    Ok(out.written)
}

/// `<path>.<what>`, beside the store.
fn aside(path: &Path, what: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(what);
    path.with_file_name(name)
}

fn dir_bytes(path: &Path) -> Result<u64, StorageError> {
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let meta = entry.metadata().map_err(io)?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Writes;
    use crate::storage::tests::{commit, writes};
    use std::collections::BTreeMap;
    use trellis_types::verify_state_proof;

    /// One block's writes to one-byte keys: `None` deletes.
    type Changes = BTreeMap<u8, Option<u8>>;

    fn changes() -> impl proptest::strategy::Strategy<Value = Changes> {
        proptest::collection::btree_map(0u8..48, proptest::option::weighted(0.8, 0u8..4), 0..12)
    }

    /// Commits each block to every store, checking they agree on its root.
    fn commit_to(stores: &[&Storage], blocks: &[Changes]) {
        for block in blocks {
            let w: Writes = block
                .iter()
                .map(|(k, v)| (vec![*k], v.map(|v| vec![v])))
                .collect();
            let roots: Vec<_> = stores
                .iter()
                .map(|s| commit(s, vec![], w.clone()).header.state_root)
                .collect();
            assert!(roots.windows(2).all(|r| r[0] == r[1]), "{roots:?}");
        }
    }

    /// Every key at every version from `from` to the head reads the same
    /// from `pruned` as from `full`, with a proof that verifies.
    fn same_state(pruned: &Storage, full: &Storage, from: u64) {
        let head = pruned.head().unwrap().height;
        assert_eq!(Some(head), full.head().map(|h| h.height));
        for version in from..=head {
            let root = pruned.state_root(version).unwrap().unwrap();
            assert_eq!(Some(root), full.state_root(version).unwrap());
            for key in 0u8..48 {
                let got = pruned.get_with_proof(&[key], version).unwrap();
                let want = full.get_with_proof(&[key], version).unwrap();
                assert_eq!(got.value, want.value, "key {key} at {version}");
                verify_state_proof(&root, &[key], got.value.as_deref(), &got.proof).unwrap();
            }
        }
    }

    /// A store at `path` where "a" is "1" at height 0 and "2" at height 1.
    fn two_blocks(path: &Path) -> Storage {
        let storage = Storage::open(path).unwrap();
        commit(&storage, vec![], writes(&[("a", Some("1"))]));
        commit(
            &storage,
            vec![],
            writes(&[("a", Some("2")), ("b", Some("1"))]),
        );
        storage
    }

    fn reopen(path: &Path) -> Storage {
        retry_while_locked(|| Storage::open(path)).unwrap()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

        /// A store pruned to its `keep` latest heights answers their state
        /// exactly as the unpruned one does, refuses the heights before, and
        /// goes on giving the roots the unpruned one gives; so does a store
        /// pruned twice (whose leaves that only moved point back to versions
        /// the first prune rewrote).
        #[test]
        fn a_pruned_store_keeps_the_state_it_should_and_goes_on_like_an_unpruned_one(
            before in proptest::collection::vec(changes(), 2..10),
            between in proptest::collection::vec(changes(), 1..6),
            after in proptest::collection::vec(changes(), 1..4),
            keep in (1u64..5, 1u64..5),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("chain");
            let full_dir = tempfile::tempdir().unwrap();
            let full = Storage::open(full_dir.path()).unwrap();
            {
                let storage = Storage::open(&path).unwrap();
                commit_to(&[&storage, &full], &before);
            }
            let mut kept_before = 0;
            for (blocks, keep) in [(&between, keep.0), (&after, keep.1)] {
                let head = full.head().unwrap().height;
                let report = retry_while_locked(|| prune_state(&path, keep)).unwrap();
                // Never below what the earlier prune kept.
                let kept_from = head.saturating_sub(keep - 1).max(kept_before);
                assert_eq!((report.kept_from, report.height), (kept_from, head));
                let pruned = reopen(&path);
                same_state(&pruned, &full, kept_from);
                if let Some(gone) = kept_from.checked_sub(1) {
                    assert!(matches!(
                        pruned.get_with_proof(&[0], gone),
                        Err(StorageError::Pruned { version, oldest }) if version == gone && oldest == kept_from
                    ));
                }
                commit_to(&[&pruned, &full], blocks);
                same_state(&pruned, &full, kept_from);
                kept_before = kept_from;
            }
        }
    }

    #[test]
    fn a_pruned_store_keeps_the_query_index() {
        use crate::state::StateRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain");
        {
            let storage = two_blocks(&path);
            commit(&storage, vec![], writes(&[("q/x/h1", Some(""))]));
            commit(&storage, vec![], writes(&[("q/x/h2", Some("2"))]));
        }
        retry_while_locked(|| prune_state(&path, 1)).unwrap();
        let pruned = reopen(&path);
        assert_eq!(pruned.get(b"q/x/h1").unwrap(), Some(Vec::new()));
        assert_eq!(pruned.get(b"q/x/h2").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn a_pruned_store_keeps_no_index_if_it_kept_none() {
        use crate::storage::Indexes;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain");
        {
            let storage = Storage::open_with(&path, 1 << 20, Indexes::NONE).unwrap();
            commit(&storage, vec![], writes(&[("a", Some("1"))]));
            commit(&storage, vec![], writes(&[("q/x/h1", Some("1"))]));
        }
        retry_while_locked(|| prune_state(&path, 1)).unwrap();
        assert_eq!(reopen(&path).indexes(), Indexes::NONE);
    }

    #[test]
    fn a_prune_stopped_between_its_renames_is_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain");
        drop(two_blocks(&path));
        retry_while_locked(|| prune_state(&path, 1)).unwrap();
        let (copy, unpruned) = (aside(&path, "pruning"), aside(&path, "unpruned"));
        let value_of_a = |storage: &Storage| storage.get_with_proof(b"a", 1).unwrap().value;

        // Stopped after the first rename: the store set aside, the checked copy beside it.
        std::fs::rename(&path, &copy).unwrap();
        std::fs::create_dir(&unpruned).unwrap();
        std::fs::write(unpruned.join("db"), b"the old store").unwrap();
        let storage = reopen(&path);
        assert_eq!(value_of_a(&storage).as_deref(), Some(&b"2"[..]));
        assert!(!copy.exists() && !unpruned.exists());
        drop(storage);

        // Stopped after the second: only the old store is left to remove.
        std::fs::create_dir(&unpruned).unwrap();
        let storage = reopen(&path);
        assert_eq!(value_of_a(&storage).as_deref(), Some(&b"2"[..]));
        assert!(!unpruned.exists());
        drop(storage);

        // Neither the store nor the copy: nothing is guessed or created.
        std::fs::rename(&path, &unpruned).unwrap();
        let refused = Storage::open(&path).unwrap_err();
        assert!(refused.to_string().contains("move it back"), "{refused}");
        assert!(unpruned.exists() && !path.exists());
    }

    #[test]
    fn pruning_a_store_in_use_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain");
        let storage = two_blocks(&path);
        // As if another prune were writing its copy beside the store.
        let copy = aside(&path, "pruning");
        std::fs::create_dir(&copy).unwrap();
        std::fs::write(copy.join("db"), b"another prune's copy").unwrap();
        let refused = prune_state(&path, 1).unwrap_err();
        assert!(
            matches!(&refused, StorageError::Io(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock")),
            "{refused}"
        );
        assert!(
            copy.join("db").exists(),
            "the other prune's copy was touched"
        );
        let old = storage.get_with_proof(b"a", 0).unwrap();
        assert_eq!(old.value.as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn pruning_where_there_is_no_store_creates_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain");
        assert!(matches!(
            prune_state(&path, 1),
            Err(StorageError::NotInitialised)
        ));
        assert!(!path.exists());
    }
}
