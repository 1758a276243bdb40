//! A fixed-capacity map with least-recently-used eviction.
//!
//! All memory is allocated when the table is built, so inserts and evictions
//! in the event path never allocate. The layout is chosen for a worker whose
//! events mostly start new flows (so most lookups miss and most inserts
//! evict), where cache misses, not instructions, are the cost:
//!
//! - the index is an open-addressing array of 8-byte buckets (a 32-bit hash
//!   tag and a slot number), linear probing, at most half full, with
//!   backward-shift deletion (no tombstones, so probe chains never grow).
//!   A miss usually costs one cache line of the index; a hit one line of
//!   the index and one of the keys;
//! - keys with their recency links, and values, live in separate arrays,
//!   so probing and relinking never pull in the (possibly large) values, and
//!   an evicted slot's value is only written, never read, unless its type
//!   asks to reuse it ([`LruTable::entry_reset`]).
//!
//! Recency is an intrusive doubly-linked list over slot numbers; the least
//! recently touched entry is evicted when the table is full.

use sensor_common::{
    FlowKey,
    hash::{fmix64, mix_word as mix},
};

/// A key the table can hash. Keys come from the kernel and are
/// attacker-controlled (spoofable addresses), so every table mixes them with
/// its own random seed: colliding keys cannot be precomputed offline to
/// build long probe chains.
pub(crate) trait TableKey: Copy + Eq {
    /// A 64-bit hash of the key mixed with `seed`.
    fn table_hash(&self, seed: u64) -> u64;
}

#[inline]
fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl TableKey for [u8; 16] {
    #[inline]
    fn table_hash(&self, seed: u64) -> u64 {
        fmix64(mix(mix(seed, word(self, 0)), word(self, 8)))
    }
}

impl TableKey for FlowKey {
    #[inline]
    fn table_hash(&self, seed: u64) -> u64 {
        let mut h = seed;
        h = mix(h, word(&self.src, 0));
        h = mix(h, word(&self.src, 8));
        h = mix(h, word(&self.dst, 0));
        h = mix(h, word(&self.dst, 8));
        let rest = u64::from(self.sport)
            | u64::from(self.dport) << 16
            | u64::from(self.proto) << 32
            | u64::from(self._pad[0]) << 40
            | u64::from(self._pad[1]) << 48
            | u64::from(self._pad[2]) << 56;
        fmix64(mix(h, rest))
    }
}

impl TableKey for u64 {
    #[inline]
    fn table_hash(&self, seed: u64) -> u64 {
        fmix64(mix(seed, *self))
    }
}

impl TableKey for u32 {
    #[inline]
    fn table_hash(&self, seed: u64) -> u64 {
        fmix64(mix(seed, u64::from(*self)))
    }
}

/// A random seed per table (std's `RandomState` is seeded from the OS once
/// per thread; one `SipHash` output of it is a good seed).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7ab1_e5ee_d000_0001);
    h.finish()
}

const NIL: u32 = u32::MAX;

/// One index bucket: the low 32 bits of the key's hash and its slot, or
/// `idx == NIL` when empty. The home bucket is `tag & mask`.
#[derive(Clone, Copy)]
struct Bucket {
    tag: u32,
    idx: u32,
}

const EMPTY: Bucket = Bucket { tag: 0, idx: NIL };

/// A slot's key, recency links and the key's hash tag (to find its bucket
/// on eviction without rehashing the key). Together, and aligned so a node
/// of a 40-byte flow key or a 16-byte address never straddles two cache
/// lines, a hit reads its key and relinks itself with one line.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Node<K> {
    key: K,
    prev: u32,
    next: u32,
    tag: u32,
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
pub(crate) struct LruTable<K, V> {
    buckets: Box<[Bucket]>,
    mask: usize,
    seed: u64,
    nodes: Vec<Node<K>>,
    values: Vec<V>,
    cap: usize,
    /// Most recently used slot.
    head: u32,
    /// Least recently used slot.
    tail: u32,
    evictions: u64,
}

impl<K: TableKey, V> LruTable<K, V> {
    /// A table holding at most `cap` entries (at least 1).
    #[must_use]
    pub(crate) fn new(cap: usize) -> Self {
        Self::with_seed(cap, random_seed())
    }

    /// [`Self::new`] with a given hash seed (reproducible tests).
    #[must_use]
    pub(crate) fn with_seed(cap: usize, seed: u64) -> Self {
        let cap = cap.clamp(1, (NIL as usize) / 4);
        // At most half full: linear probes stay short, and a probe for an
        // absent key always ends at an empty bucket.
        let n = (2 * cap).next_power_of_two();
        Self {
            buckets: vec![EMPTY; n].into_boxed_slice(),
            mask: n - 1,
            seed,
            nodes: Vec::with_capacity(cap),
            values: Vec::with_capacity(cap),
            cap,
            head: NIL,
            tail: NIL,
            evictions: 0,
        }
    }

    /// Entries held.
    #[must_use]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Entries evicted so far to make room.
    #[must_use]
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    #[inline]
    fn tag(&self, key: &K) -> u32 {
        key.table_hash(self.seed) as u32
    }

    /// The bucket holding `key`, or the empty bucket ending its probe.
    #[inline]
    fn probe(&self, key: &K, tag: u32) -> Result<usize, usize> {
        let mut b = tag as usize & self.mask;
        loop {
            let e = self.buckets[b];
            if e.idx == NIL {
                return Err(b);
            }
            if e.tag == tag && self.nodes[e.idx as usize].key == *key {
                return Ok(b);
            }
            b = (b + 1) & self.mask;
        }
    }

    /// The hash tag of `key` for the `*_tagged` calls, so a caller that
    /// prefetches ([`Self::prefetch`]) does not hash twice.
    #[inline]
    #[must_use]
    pub(crate) fn tag_of(&self, key: &K) -> u32 {
        self.tag(key)
    }

    /// Hints the CPU to load the index bucket of a key with hash tag `tag`
    /// and, when the table is full, the slot a miss would evict. Issued for
    /// every table an event touches before using any of them, the cache
    /// misses of the tables overlap instead of following one another.
    #[inline]
    pub(crate) fn prefetch(&self, tag: u32) {
        prefetch_read(&self.buckets[tag as usize & self.mask]);
        if self.nodes.len() == self.cap && self.tail != NIL {
            let t = self.tail as usize;
            // The victim's node was prefetched when it became the tail.
            let victim_home = self.nodes[t].tag as usize & self.mask;
            prefetch_read(&self.buckets[victim_home]);
            prefetch_read(&self.values[t]);
        }
    }

    /// Slot of `key` without touching its recency.
    #[inline]
    #[must_use]
    pub(crate) fn find(&self, key: &K) -> Option<u32> {
        self.find_tagged(key, self.tag(key))
    }

    /// [`Self::find`] with the key's tag from [`Self::tag_of`].
    #[inline]
    #[must_use]
    pub(crate) fn find_tagged(&self, key: &K, tag: u32) -> Option<u32> {
        debug_assert_eq!(tag, self.tag(key));
        self.probe(key, tag).ok().map(|b| self.buckets[b].idx)
    }

    /// Hints the CPU to load the index bucket of a key with hash tag `tag`
    /// only (a lookup that may follow, not an insert).
    #[inline]
    pub(crate) fn prefetch_bucket(&self, tag: u32) {
        prefetch_read(&self.buckets[tag as usize & self.mask]);
    }

    #[cfg(test)]
    /// Key stored in a slot.
    #[inline]
    #[must_use]
    pub(crate) fn key(&self, idx: u32) -> &K {
        &self.nodes[idx as usize].key
    }

    /// Value stored in a slot.
    #[inline]
    #[must_use]
    pub(crate) fn get(&self, idx: u32) -> &V {
        &self.values[idx as usize]
    }

    /// Mutable value stored in a slot.
    #[inline]
    pub(crate) fn get_mut(&mut self, idx: u32) -> &mut V {
        &mut self.values[idx as usize]
    }

    #[cfg(test)]
    /// Two distinct slots mutably at once.
    #[inline]
    pub(crate) fn get2_mut(&mut self, a: u32, b: u32) -> (&mut V, &mut V) {
        assert_ne!(a, b, "get2_mut needs two distinct slots");
        let (lo, hi, swap) = if a < b { (a, b, false) } else { (b, a, true) };
        let (x, y) = self.values.split_at_mut(hi as usize);
        let (l, h) = (&mut x[lo as usize], &mut y[0]);
        if swap { (h, l) } else { (l, h) }
    }

    #[cfg(test)]
    /// Looks `key` up, marking it most recently used; inserts it with
    /// `init()` (evicting the least recently used entry when full) if absent.
    #[inline]
    pub(crate) fn entry(&mut self, key: K, init: impl FnOnce() -> V) -> Entry {
        let tag = self.tag(&key);
        self.entry_tagged(key, tag, init)
    }

    /// [`Self::entry`] with the key's tag from [`Self::tag_of`].
    #[inline]
    pub(crate) fn entry_tagged(&mut self, key: K, tag: u32, init: impl FnOnce() -> V) -> Entry {
        // Exactly one of the two closures runs, and only once.
        let init = std::cell::Cell::new(Some(init));
        let make = || init.take().expect("init runs at most once")();
        self.entry_reset_tagged(key, tag, make, |v| *v = make())
    }

    #[cfg(test)]
    /// [`Self::entry`], but a slot taken from an evicted entry is handed to
    /// `reset` to be made equal to `init()` in place: for large values that
    /// can skip rewriting parts already in their initial state.
    #[inline]
    pub(crate) fn entry_reset(
        &mut self,
        key: K,
        init: impl FnOnce() -> V,
        reset: impl FnOnce(&mut V),
    ) -> Entry {
        let tag = self.tag(&key);
        self.entry_reset_tagged(key, tag, init, reset)
    }

    /// [`Self::entry_reset`] with the key's tag from [`Self::tag_of`].
    #[inline]
    pub(crate) fn entry_reset_tagged(
        &mut self,
        key: K,
        tag: u32,
        init: impl FnOnce() -> V,
        reset: impl FnOnce(&mut V),
    ) -> Entry {
        debug_assert_eq!(tag, self.tag(&key));
        match self.hit_or_claim(key, tag) {
            Claimed::Hit(idx) => Entry {
                idx,
                inserted: false,
                evicted: false,
            },
            Claimed::Fresh(idx) => {
                self.values.push(init());
                Entry {
                    idx,
                    inserted: true,
                    evicted: false,
                }
            }
            Claimed::Evicted(idx) => {
                reset(&mut self.values[idx as usize]);
                Entry {
                    idx,
                    inserted: true,
                    evicted: true,
                }
            }
        }
    }

    /// Finds `key` (and marks it most recently used), or gives it a slot:
    /// a never-used one (its value still to be pushed) or the least recently
    /// used one, whose entry is evicted (its value still to be replaced).
    #[inline]
    fn hit_or_claim(&mut self, key: K, tag: u32) -> Claimed {
        let empty = match self.probe(&key, tag) {
            Ok(b) => {
                let idx = self.buckets[b].idx;
                self.touch(idx);
                return Claimed::Hit(idx);
            }
            Err(b) => b,
        };
        if self.nodes.len() < self.cap {
            let idx = self.nodes.len() as u32;
            self.nodes.push(Node {
                key,
                prev: NIL,
                next: NIL,
                tag,
            });
            self.buckets[empty] = Bucket { tag, idx };
            self.push_front(idx);
            return Claimed::Fresh(idx);
        }
        let idx = self.tail;
        self.unlink(idx);
        self.remove_bucket_of(idx);
        self.evictions += 1;
        let n = &mut self.nodes[idx as usize];
        n.key = key;
        n.tag = tag;
        // Removing shifted buckets back: probe again for the free bucket.
        let mut b = tag as usize & self.mask;
        while self.buckets[b].idx != NIL {
            b = (b + 1) & self.mask;
        }
        self.buckets[b] = Bucket { tag, idx };
        self.push_front(idx);
        // The next victim: its links are read by the next eviction's
        // prefetch, a whole event from now.
        if self.tail != NIL {
            prefetch_read(&self.nodes[self.tail as usize]);
        }
        Claimed::Evicted(idx)
    }

    /// Empties the bucket pointing at slot `idx`, shifting the rest of its
    /// probe run back so every entry stays reachable from its home bucket.
    fn remove_bucket_of(&mut self, idx: u32) {
        let mask = self.mask;
        let mut hole = self.nodes[idx as usize].tag as usize & mask;
        while self.buckets[hole].idx != idx {
            hole = (hole + 1) & mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.buckets[j];
            if e.idx == NIL {
                break;
            }
            // An entry may fill the hole if the hole lies on its probe path,
            // between its home bucket and where it sits now.
            let home = e.tag as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.buckets[hole] = e;
                hole = j;
            }
        }
        self.buckets[hole] = EMPTY;
    }

    /// Marks a slot most recently used.
    #[inline]
    pub(crate) fn touch(&mut self, idx: u32) {
        if self.head != idx {
            self.unlink(idx);
            self.push_front(idx);
        }
    }

    fn unlink(&mut self, idx: u32) {
        let (p, n) = {
            let node = &self.nodes[idx as usize];
            (node.prev, node.next)
        };
        if p == NIL {
            self.head = n;
        } else {
            self.nodes[p as usize].next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.nodes[n as usize].prev = p;
        }
    }

    fn push_front(&mut self, idx: u32) {
        let old = self.head;
        {
            let l = &mut self.nodes[idx as usize];
            l.prev = NIL;
            l.next = old;
        }
        if old == NIL {
            self.tail = idx;
        } else {
            self.nodes[old as usize].prev = idx;
        }
        self.head = idx;
    }
}

/// What [`LruTable::hit_or_claim`] found or made.
enum Claimed {
    Hit(u32),
    Fresh(u32),
    Evicted(u32),
}

#[inline]
fn prefetch_read<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, even on a bad address,
    // and `p` is a valid reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(p).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
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

    /// A brute-force LRU: a vector of (key, value), most recent last.
    struct Model {
        cap: usize,
        order: Vec<(u64, u64)>,
        evictions: u64,
    }

    impl Model {
        /// Returns (inserted, evicted).
        fn entry(&mut self, k: u64, v: u64) -> (bool, bool) {
            if let Some(p) = self.order.iter().position(|e| e.0 == k) {
                let e = self.order.remove(p);
                self.order.push(e);
                return (false, false);
            }
            let mut evicted = false;
            if self.order.len() == self.cap {
                self.order.remove(0);
                self.evictions += 1;
                evicted = true;
            }
            self.order.push((k, v));
            (true, evicted)
        }
    }

    /// Drives the table and the model with the same keys and checks every
    /// answer: flags, membership of every key, values, length, evictions.
    /// Small tables over a key space a few times larger probe through long
    /// collision runs and evict constantly, exercising backward shifts.
    fn check_against_model(cap: usize, keys: u64, steps: usize, seed: u64) {
        let mut t: LruTable<u64, u64> = LruTable::with_seed(cap, seed);
        let mut m = Model {
            cap: cap.max(1),
            order: Vec::new(),
            evictions: 0,
        };
        let mut x = seed | 1;
        for step in 0..steps {
            x = fmix64(x);
            let k = x % keys;
            let v = step as u64;
            // Alternate the two insertion paths.
            let e = match step % 4 {
                0 => t.entry(k, || v),
                1 => t.entry_reset(k, || v, |old| *old = v),
                2 => {
                    let tag = t.tag_of(&k);
                    t.prefetch(tag);
                    t.entry_tagged(k, tag, || v)
                }
                _ => {
                    let tag = t.tag_of(&k);
                    t.prefetch(tag);
                    t.entry_reset_tagged(k, tag, || v, |old| *old = v)
                }
            };
            let (ins, ev) = m.entry(k, v);
            assert_eq!((e.inserted, e.evicted), (ins, ev), "step {step} key {k}");
            assert_eq!(*t.key(e.idx), k);
            // Values stay with their keys; bump one through get_mut.
            *t.get_mut(e.idx) += 1;
            let last = m.order.len() - 1;
            m.order[last].1 += 1;
            assert_eq!(t.len(), m.order.len());
            assert_eq!(t.evictions(), m.evictions);
            for q in 0..keys {
                let want = m.order.iter().find(|e| e.0 == q).map(|e| e.1);
                let got = t.find(&q).map(|i| *t.get(i));
                assert_eq!(got, want, "step {step} key {q}");
            }
        }
    }

    #[test]
    fn matches_a_brute_force_lru() {
        check_against_model(16, 40, 10_000, 1);
    }

    #[test]
    fn matches_a_brute_force_lru_in_many_shapes() {
        for (cap, keys, seed) in [
            (1, 3, 7),
            (2, 5, 8),
            (3, 4, 9),
            (5, 64, 10),
            (64, 100, 11),
            (100, 300, 12),
            (100, 101, 13),
        ] {
            check_against_model(cap, keys, 4000, seed);
        }
    }

    #[test]
    fn colliding_homes_stay_reachable() {
        // A seed under which many keys share home buckets: with only 32
        // buckets for 16 entries, runs wrap around the end of the index.
        for seed in 0..20 {
            check_against_model(16, 17, 600, seed * 0x1234_5678_9abc);
        }
    }

    #[test]
    fn flow_keys_hash_every_field() {
        let k = FlowKey::new([1; 16], [2; 16], 3, 4, 6);
        let h = k.table_hash(5);
        let mut other = k;
        other.sport = 4;
        other.dport = 3;
        assert_ne!(other.table_hash(5), h);
        other = k;
        other.src[15] = 9;
        assert_ne!(other.table_hash(5), h);
        other = k;
        other.proto = 17;
        assert_ne!(other.table_hash(5), h);
        assert_ne!(k.table_hash(6), h);
    }

    #[test]
    fn nodes_fit_one_cache_line() {
        assert_eq!(size_of::<Node<FlowKey>>(), 64);
        assert_eq!(size_of::<Node<[u8; 16]>>(), 32);
    }

    #[test]
    fn get2_mut_returns_both_in_order() {
        let mut t: LruTable<u32, u32> = LruTable::new(4);
        let a = t.entry(1, || 10).idx;
        let b = t.entry(2, || 20).idx;
        let (x, y) = t.get2_mut(b, a);
        assert_eq!((*x, *y), (20, 10));
    }
}
