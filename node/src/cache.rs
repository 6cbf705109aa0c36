//! A bounded map that keeps what was used lately.
//!
//! Two generations: lookups and inserts go to the young one; an entry found
//! only in the old one moves back to the young one; when the young one is
//! full, the old one is dropped and the young one takes its place. So an entry
//! used within the last `capacity` inserts stays, and at most `2 × capacity`
//! entries are held: LRU's behaviour, bounded, for two hash lookups. A lookup
//! table only: it is never iterated, so it cannot leak an order anywhere.
//!
//! Dropping a full generation frees `capacity` entries at once, which takes
//! tens of milliseconds for the tree-node cache: [`Cache::insert`] hands the
//! dropped generation back so that a caller on a hot path can free it
//! elsewhere. Its emptied table comes back through [`Cache::recycle`] to be
//! the next young generation: a new table of the node cache's size is about
//! 19 MB of memory touched for the first time, which cost 20–50 ms to
//! allocate and more to fill (docs/benchmarks.md).
//!
//! Keys are hashed with foldhash, seeded per table from the process's random
//! state: SipHash was a visible share of every cache lookup and insert, and a
//! seed an outsider cannot see keeps colliding keys as hard to choose as
//! before.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// One generation's table.
pub type Generation<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub struct Cache<K, V> {
    young: Generation<K, V>,
    old: Generation<K, V>,
    /// An emptied generation's table, kept for the next young generation.
    spare: Option<Generation<K, V>>,
    capacity: usize,
    /// A key's value never changes (tree nodes, by version and path): an
    /// insert need not look for the key in the old generation, where a copy
    /// would hold the same value and age out with it.
    immutable: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// Holds between `capacity` and `2 × capacity` entries once filled.
    pub fn new(capacity: usize) -> Self {
        Cache {
            young: Generation::default(),
            old: Generation::default(),
            spare: None,
            capacity: capacity.max(1),
            immutable: false,
        }
    }

    /// A cache whose keys each stand for one value forever; see [`Cache::insert`].
    pub fn of_immutable(capacity: usize) -> Self {
        Cache {
            immutable: true,
            ..Cache::new(capacity)
        }
    }

    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.get_with(key, V::clone)
    }

    /// `read` of the value at `key`, without copying the value.
    pub fn get_with<Q, T>(&mut self, key: &Q, read: impl FnOnce(&V) -> T) -> Option<T>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(value) = self.young.get(key) {
            return Some(read(value));
        }
        let value = self.old.remove(key)?;
        let read = read(&value);
        if let Some(mut aged_out) = self.insert_young(key.to_owned(), value) {
            aged_out.clear();
            self.recycle(aged_out);
        }
        Some(read)
    }

    /// Inserts or replaces an entry; returns the generation this insert aged
    /// out of the cache, if it did, for the caller to drop. In an immutable
    /// cache the old generation is not searched: one hash probe fewer into a
    /// large table for every new tree node.
    pub fn insert(&mut self, key: K, value: V) -> Option<Generation<K, V>> {
        if !self.immutable {
            self.old.remove(&key);
        }
        self.insert_young(key, value)
    }

    /// Puts an entry in the young generation, aging it first if it is full;
    /// the key is not in the old generation (or, immutable, may stay there).
    fn insert_young(&mut self, key: K, value: V) -> Option<Generation<K, V>> {
        let mut dropped = None;
        if self.young.len() >= self.capacity && !self.young.contains_key(&key) {
            // Sized up front: growing a map of this size rehashes it several times.
            let fresh = self.spare.take().unwrap_or_else(|| {
                Generation::with_capacity_and_hasher(self.capacity, Default::default())
            });
            let young = std::mem::replace(&mut self.young, fresh);
            dropped = Some(std::mem::replace(&mut self.old, young));
        }
        self.young.insert(key, value);
        dropped
    }

    /// Keeps `emptied`, a generation [`Cache::insert`] handed back and the
    /// caller cleared (outside any lock), as the next young generation's table.
    pub fn recycle(&mut self, emptied: Generation<K, V>) {
        if emptied.is_empty() && emptied.capacity() >= self.capacity && self.spare.is_none() {
            self.spare = Some(emptied);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recently_used_entries_stay_and_the_size_is_bounded() {
        let mut cache = Cache::new(3);
        for i in 0..3 {
            cache.insert(i, i * 10);
        }
        // Young is full: the next insert ages it; the old generation was empty.
        assert_eq!(cache.insert(3, 30), Some(Generation::default()));
        assert_eq!(cache.len(), 4);
        // 0 is found in the old generation and comes back to the young one.
        assert_eq!(cache.get(&0), Some(0));
        cache.insert(4, 40);
        // Young (3, 0, 4) is full again: the old generation (1, 2) is dropped.
        let dropped = cache.insert(5, 50).expect("a generation aged out");
        assert_eq!(dropped, Generation::from_iter([(1, 10), (2, 20)]));
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&2), None);
        for (key, value) in [(0, 0), (3, 30), (4, 40), (5, 50)] {
            assert_eq!(cache.get(&key), Some(value), "{key}");
        }
        assert!(cache.len() <= 6);
    }

    #[test]
    fn an_emptied_generation_is_the_next_young_one_and_a_full_one_is_refused() {
        let mut cache = Cache::new(2);
        // Larger than a new generation would be, so its reuse shows.
        let mut emptied = Generation::with_capacity_and_hasher(100, Default::default());
        emptied.insert(9, 90);
        cache.recycle(emptied.clone());
        assert!(
            cache.spare.is_none(),
            "a generation with entries is refused"
        );
        emptied.clear();
        cache.recycle(emptied);
        for i in 0..3 {
            cache.insert(i, i * 10);
        }
        assert!(
            cache.young.capacity() >= 100,
            "the spare table became the young one"
        );
        assert!(cache.spare.is_none());
        assert_eq!(cache.get(&9), None);
        for i in 0..3 {
            assert_eq!(cache.get(&i), Some(i * 10), "{i}");
        }
    }

    /// `cache` (of capacity 2) holding "a" and "b" in the old generation, "c" in the young one.
    fn with_a_and_b_old(mut cache: Cache<&'static str, i32>) -> Cache<&'static str, i32> {
        cache.insert("a", 1);
        cache.insert("b", 2);
        cache.insert("c", 3);
        cache
    }

    #[test]
    fn an_insert_replaces_an_entry_of_either_generation() {
        let mut cache = with_a_and_b_old(Cache::new(2));
        cache.insert("a", 10);
        assert_eq!(cache.get(&"a"), Some(10));
        assert_eq!(cache.len(), 3, "the old \"a\" is gone");
    }

    #[test]
    fn a_read_in_place_finds_either_generation_and_brings_the_old_back() {
        let mut cache = with_a_and_b_old(Cache::new(2));
        assert_eq!(cache.get_with(&"c", |v| v * 100), Some(300));
        assert_eq!(cache.get_with(&"a", |v| v * 100), Some(100));
        assert_eq!(cache.get_with(&"z", |v| v * 100), None);
        // Young ("c", "a") is full: the next insert drops "b", not "a".
        let dropped = cache.insert("d", 4).expect("a generation aged out");
        assert_eq!(dropped, Generation::from_iter([("b", 2)]));
        assert_eq!(cache.get(&"a"), Some(1));
    }

    #[test]
    fn an_immutable_cache_leaves_the_old_generation_alone_on_insert() {
        let mut cache = with_a_and_b_old(Cache::of_immutable(2));
        cache.insert("a", 1);
        assert_eq!(cache.len(), 4, "the old copy of \"a\" stays");
        assert_eq!(cache.get(&"a"), Some(1));
        // Young ("c", "a") is full: the next insert drops the old copies.
        let dropped = cache.insert("d", 4).expect("a generation aged out");
        assert_eq!(dropped, Generation::from_iter([("a", 1), ("b", 2)]));
        for (key, value) in [("a", 1), ("c", 3), ("d", 4)] {
            assert_eq!(cache.get(&key), Some(value), "{key}");
        }
        assert_eq!(cache.get(&"b"), None);
    }
}
