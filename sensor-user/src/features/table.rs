//! A fixed-capacity map with least-recently-used eviction.
//!
//! All memory is allocated when the table is built: the slot array and a hash
//! index sized for the capacity, so inserts and evictions in the event path
//! never allocate. Recency is an intrusive doubly-linked list over slot
//! indexes; the least recently touched entry is evicted when the table is full.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher},
};

use sensor_common::hash::fmix64;

/// A fast, non-cryptographic hasher for keys that come from the kernel.
/// Flooding a worker's table with crafted collisions needs control of the
/// keys' full 64-bit mix, and the table is bounded anyway.
#[derive(Clone, Copy, Default)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.0)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.0 = (self.0 ^ u64::from_le_bytes(b))
                .rotate_left(23)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .rotate_left(23)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Builds [`FastHasher`]s.
#[derive(Clone, Copy, Default)]
pub struct FastBuild;

impl BuildHasher for FastBuild {
    type Hasher = FastHasher;
    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0x243f_6a88_85a3_08d3)
    }
}

const NIL: u32 = u32::MAX;

struct Slot<K, V> {
    key: K,
    value: V,
    prev: u32,
    next: u32,
}

/// Result of [`LruTable::entry`].
pub struct Entry {
    /// Slot index, valid until the next insert.
    pub idx: u32,
    /// The key was not present and a slot was (re)initialised for it.
    pub inserted: bool,
    /// Inserting it evicted the least recently used entry.
    pub evicted: bool,
}

/// Fixed-capacity map with LRU eviction. See the module docs.
pub struct LruTable<K, V> {
    slots: Vec<Slot<K, V>>,
    index: HashMap<K, u32, FastBuild>,
    cap: usize,
    /// Most recently used slot.
    head: u32,
    /// Least recently used slot.
    tail: u32,
    evictions: u64,
}

impl<K: Copy + Eq + Hash, V> LruTable<K, V> {
    /// A table holding at most `cap` entries (at least 1).
    #[must_use]
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            slots: Vec::with_capacity(cap),
            // Twice the entries: with evictions the index deletes and inserts
            // forever; at most half full, hashbrown always cleans its
            // tombstones in place instead of growing (allocating).
            index: HashMap::with_capacity_and_hasher(2 * cap, FastBuild),
            cap,
            head: NIL,
            tail: NIL,
            evictions: 0,
        }
    }

    /// Entries held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Entries evicted so far to make room.
    #[must_use]
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Capacity fixed at construction.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Slot of `key` without touching its recency.
    #[inline]
    #[must_use]
    pub fn find(&self, key: &K) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// Key stored in a slot.
    #[inline]
    #[must_use]
    pub fn key(&self, idx: u32) -> &K {
        &self.slots[idx as usize].key
    }

    /// Value stored in a slot.
    #[inline]
    #[must_use]
    pub fn get(&self, idx: u32) -> &V {
        &self.slots[idx as usize].value
    }

    /// Mutable value stored in a slot.
    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut V {
        &mut self.slots[idx as usize].value
    }

    /// Two distinct slots mutably at once.
    #[inline]
    pub fn get2_mut(&mut self, a: u32, b: u32) -> (&mut V, &mut V) {
        assert_ne!(a, b, "get2_mut needs two distinct slots");
        let (lo, hi, swap) = if a < b { (a, b, false) } else { (b, a, true) };
        let (x, y) = self.slots.split_at_mut(hi as usize);
        let (l, h) = (&mut x[lo as usize].value, &mut y[0].value);
        if swap { (h, l) } else { (l, h) }
    }

    /// Looks `key` up, marking it most recently used; inserts it with
    /// `init()` (evicting the least recently used entry when full) if absent.
    #[inline]
    pub fn entry(&mut self, key: K, init: impl FnOnce() -> V) -> Entry {
        if let Some(&idx) = self.index.get(&key) {
            self.touch(idx);
            return Entry {
                idx,
                inserted: false,
                evicted: false,
            };
        }
        let mut evicted = false;
        let idx = if self.slots.len() < self.cap {
            let idx = self.slots.len() as u32;
            self.slots.push(Slot {
                key,
                value: init(),
                prev: NIL,
                next: NIL,
            });
            idx
        } else {
            let idx = self.tail;
            self.unlink(idx);
            let old = self.slots[idx as usize].key;
            self.index.remove(&old);
            let s = &mut self.slots[idx as usize];
            s.key = key;
            s.value = init();
            self.evictions += 1;
            evicted = true;
            idx
        };
        self.index.insert(key, idx);
        self.push_front(idx);
        Entry {
            idx,
            inserted: true,
            evicted,
        }
    }

    /// Marks a slot most recently used.
    #[inline]
    pub fn touch(&mut self, idx: u32) {
        if self.head != idx {
            self.unlink(idx);
            self.push_front(idx);
        }
    }

    fn unlink(&mut self, idx: u32) {
        let (p, n) = {
            let s = &self.slots[idx as usize];
            (s.prev, s.next)
        };
        if p == NIL {
            self.head = n;
        } else {
            self.slots[p as usize].next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.slots[n as usize].prev = p;
        }
    }

    fn push_front(&mut self, idx: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[idx as usize];
            s.prev = NIL;
            s.next = old;
        }
        if old == NIL {
            self.tail = idx;
        } else {
            self.slots[old as usize].prev = idx;
        }
        self.head = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut t: LruTable<u32, u32> = LruTable::new(3);
        for k in 0..3 {
            let e = t.entry(k, || k * 10);
            assert!(e.inserted && !e.evicted);
        }
        // Touch 0 so 1 becomes the oldest.
        assert!(!t.entry(0, || 0).inserted);
        let e = t.entry(7, || 70);
        assert!(e.inserted && e.evicted);
        assert!(t.find(&1).is_none());
        assert!(t.find(&0).is_some() && t.find(&2).is_some());
        assert_eq!(*t.get(t.find(&7).unwrap()), 70);
        assert_eq!((t.len(), t.evictions()), (3, 1));
    }

    #[test]
    fn matches_a_brute_force_lru() {
        let mut t: LruTable<u64, u64> = LruTable::new(16);
        let mut order: Vec<u64> = Vec::new();
        let mut x = 1u64;
        for _ in 0..10_000 {
            x = fmix64(x);
            let k = x % 40;
            t.entry(k, || k);
            order.retain(|&o| o != k);
            order.push(k);
            if order.len() > 16 {
                order.remove(0);
            }
            assert_eq!(t.len(), order.len());
            for o in &order {
                assert!(t.find(o).is_some());
            }
        }
    }
}
