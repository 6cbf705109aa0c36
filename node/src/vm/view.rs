//! State as a contract call sees it: committed storage, then the writes of the
//! block so far (`pending`), then the call's own writes, each layer hiding the
//! one below, deletions included. Committed storage is itself sled under the
//! blocks staged and not yet written, if any.
//!
//! [`StateView::next`] is the ordered "first live key after" over these
//! layers: sled's keys come from its ordered range, the layers above from
//! `BTreeMap` ranges; a key deleted by an upper layer is skipped, so a scan
//! costs one lookup per layer per key returned or deleted key passed over.
//!
//! Committed values a view reads are kept for its life: a block is built or
//! checked on its parent's state, which does not change meanwhile, and nearly
//! every transaction of a block reads the same few records (the contract's,
//! the organisations', the contract's parameters), each read otherwise going
//! through the staged blocks and the shared cache. (A query's view may see a
//! block committed while it runs, as it did before; it then keeps answering
//! the values it read first.)

use crate::state::{StateRead, Writes};
use crate::storage::{Storage, StorageError, state_key};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Bound;

/// A key and its value.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// Committed storage under the block's writes so far. Owns what it holds (a
/// `Storage` handle is a cheap clone), so a call can keep it in its store.
pub struct StateView {
    committed: Storage,
    pending: Writes,
    /// Committed values read so far (absence included).
    read: RefCell<HashMap<Vec<u8>, Option<Vec<u8>>, foldhash::fast::RandomState>>,
}

impl StateView {
    pub fn new(committed: Storage, pending: Writes) -> StateView {
        StateView {
            committed,
            pending,
            read: RefCell::default(),
        }
    }

    /// The writes made over committed storage.
    pub fn pending(&self) -> &Writes {
        &self.pending
    }

    pub fn into_pending(self) -> Writes {
        self.pending
    }

    /// Adds `writes` on top of the pending ones. (Not `BTreeMap::append`,
    /// which rebuilds the whole map: a block applies thousands of small sets.)
    pub fn apply(&mut self, writes: Writes) {
        self.pending.extend(writes);
    }

    /// The committed storage this view reads through to.
    pub fn committed(&self) -> &Storage {
        &self.committed
    }

    /// A value as seen with `top` (a call's writes) over this view.
    pub(crate) fn get_under(
        &self,
        top: &Writes,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        match top.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.get(key),
        }
    }

    /// The first live entry, with `top` over this view, whose key starts with
    /// `prefix` and is greater than `after` (at or after `prefix` when `None`).
    pub(crate) fn next_under(
        &self,
        top: &Writes,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> Result<Option<Entry>, StorageError> {
        // Start from the larger of `after` and `prefix`: an `after` below the prefix
        // must not stop the scan at a key between the two.
        let mut lower: Bound<Vec<u8>> = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        loop {
            let from = as_slice(&lower);
            let candidates = [
                first_in(top, prefix, from),
                first_in(&self.pending, prefix, from),
                self.first_committed(prefix, from)?,
            ];
            // `get_under` below reads the staged blocks over sled, so a key any
            // of them has is found with its latest value (or skipped if deleted).
            let Some(key) = candidates.into_iter().flatten().min() else {
                return Ok(None);
            };
            match self.get_under(top, &key)? {
                Some(value) => return Ok(Some((key, value))),
                None => lower = Bound::Excluded(key),
            }
        }
    }

    /// The first committed key (live or deleted by a staged block) at `from`
    /// or above, if it has `prefix`: the smallest of sled's and the staged blocks'.
    fn first_committed(
        &self,
        prefix: &[u8],
        from: Bound<&[u8]>,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let from = match from {
            Bound::Included(k) => Bound::Included(state_key(k)),
            Bound::Excluded(k) => Bound::Excluded(state_key(k)),
            Bound::Unbounded => Bound::Included(state_key(prefix)),
        };
        let full_prefix = state_key(prefix);
        let records = self.committed.records();
        let staged = records
            .staged()
            .filter_map(|staged| {
                staged
                    .records
                    .range::<Vec<u8>, _>((from.clone(), Bound::Unbounded))
                    .next()
                    .map(|(k, _)| k.clone())
            })
            .min();
        let stored = match records
            .db
            .range::<Vec<u8>, _>((from, Bound::Unbounded))
            .next()
        {
            Some(entry) => Some(entry?.0.to_vec()),
            None => None,
        };
        Ok([staged, stored]
            .into_iter()
            .flatten()
            .min()
            .filter(|key| key.starts_with(&full_prefix))
            .map(|key| key[1..].to_vec()))
    }
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The first key of `writes` (live or deleted) at `from` or above, if it has `prefix`.
/// Keys with a prefix are contiguous in byte order and `from` is at or above the
/// prefix, so the first key past it either has the prefix or none later does.
fn first_in(writes: &Writes, prefix: &[u8], from: Bound<&[u8]>) -> Option<Vec<u8>> {
    writes
        .range::<[u8], _>((from, Bound::Unbounded))
        .next()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(prefix))
        .cloned()
}

impl StateRead for StateView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = self.read.borrow().get(key) {
            return Ok(v.clone());
        }
        let value = self.committed.get(key)?;
        self.read.borrow_mut().insert(key.to_vec(), value.clone());
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{commit, writes};

    #[test]
    fn a_view_reads_the_state_it_started_on_under_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        commit(
            &storage,
            vec![],
            writes(&[("a", Some("1")), ("b", Some("1"))]),
        );
        let mut view = StateView::new(storage.clone(), Writes::new());
        let get = |view: &StateView, key: &str| view.get(key.as_bytes()).unwrap();
        assert_eq!(get(&view, "a"), Some(b"1".to_vec()));
        assert_eq!(get(&view, "b"), Some(b"1".to_vec()));
        assert_eq!(get(&view, "c"), None);

        // A later block changes the store; the view keeps the state it read.
        commit(
            &storage,
            vec![],
            writes(&[("a", Some("2")), ("b", None), ("c", Some("2"))]),
        );
        for key in ["a", "b"] {
            assert_eq!(get(&view, key), Some(b"1".to_vec()), "{key}");
        }
        assert_eq!(get(&view, "c"), None);
        let fresh = StateView::new(storage, Writes::new());
        assert_eq!(get(&fresh, "a"), Some(b"2".to_vec()));
        assert_eq!(get(&fresh, "b"), None);

        // The view's own writes hide what it read, deletions included.
        view.apply(writes(&[("a", Some("3")), ("b", None)]));
        assert_eq!(get(&view, "a"), Some(b"3".to_vec()));
        assert_eq!(get(&view, "b"), None);
    }
}
