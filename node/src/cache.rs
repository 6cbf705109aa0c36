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
//! elsewhere.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

pub struct Cache<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// Holds between `capacity` and `2 × capacity` entries once filled.
    pub fn new(capacity: usize) -> Self {
        Cache {
            young: HashMap::new(),
            old: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(value) = self.young.get(key) {
            return Some(value.clone());
        }
        let value = self.old.remove(key)?;
        drop(self.insert(key.to_owned(), value.clone()));
        Some(value)
    }

    /// Inserts or replaces an entry; returns the generation this insert aged
    /// out of the cache, if it did, for the caller to drop.
    pub fn insert(&mut self, key: K, value: V) -> Option<HashMap<K, V>> {
        let mut dropped = None;
        if self.young.len() >= self.capacity && !self.young.contains_key(&key) {
            // Sized up front: growing a map of this size rehashes it several times.
            let young = std::mem::replace(&mut self.young, HashMap::with_capacity(self.capacity));
            dropped = Some(std::mem::replace(&mut self.old, young));
        }
        self.old.remove(&key);
        self.young.insert(key, value);
        dropped
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
        assert_eq!(cache.insert(3, 30), Some(HashMap::new()));
        assert_eq!(cache.len(), 4);
        // 0 is found in the old generation and comes back to the young one.
        assert_eq!(cache.get(&0), Some(0));
        cache.insert(4, 40);
        // Young (3, 0, 4) is full again: the old generation (1, 2) is dropped.
        let dropped = cache.insert(5, 50).expect("a generation aged out");
        assert_eq!(dropped, HashMap::from([(1, 10), (2, 20)]));
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&2), None);
        for (key, value) in [(0, 0), (3, 30), (4, 40), (5, 50)] {
            assert_eq!(cache.get(&key), Some(value), "{key}");
        }
        assert!(cache.len() <= 6);
    }

    #[test]
    fn an_insert_replaces_an_entry_of_either_generation() {
        let mut cache = Cache::new(2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        cache.insert("c", 3); // "a" and "b" are now old
        cache.insert("a", 10);
        assert_eq!(cache.get(&"a"), Some(10));
        assert_eq!(cache.len(), 3, "the old \"a\" is gone");
    }
}
