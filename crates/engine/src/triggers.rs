//! The conditional-order index: per market, trigger reference and direction, the
//! untriggered orders in the order they fire.
//!
//! Each index is a binary heap over a preallocated array, with each order's place in its
//! heap kept by order slot, so inserting, cancelling and firing are O(log n) and — unlike
//! an ordered tree — never allocate once the arrays have reached their working size.
//!
//! Order of firing: rising triggers (fire when the reference is at or above the stop) the
//! lowest stop first; falling triggers the highest stop first; equal stops, the older order
//! (the lower id) first.

use crate::orders::NIL;

#[derive(Clone, Copy, Debug)]
struct Entry {
    stop: i64,
    id: u64,
    slot: u32,
}

pub(crate) struct TriggerHeap {
    entries: Vec<Entry>,
    rising: bool,
}

impl TriggerHeap {
    pub fn new(rising: bool, capacity: usize) -> TriggerHeap {
        TriggerHeap { entries: Vec::with_capacity(capacity), rising }
    }

    /// Does `a` fire before `b`?
    #[inline]
    fn before(&self, a: &Entry, b: &Entry) -> bool {
        if a.stop != b.stop { (a.stop < b.stop) == self.rising } else { a.id < b.id }
    }

    /// The next to fire: (stop, id).
    #[inline]
    pub fn first(&self) -> Option<(i64, u64)> {
        self.entries.first().map(|e| (e.stop, e.id))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `at[slot]` is where each order sits in its heap (shared by all heaps: an order is in
    /// at most one).
    pub fn insert(&mut self, stop: i64, id: u64, slot: u32, at: &mut [u32]) {
        debug_assert_eq!(at[slot as usize], NIL, "an order is indexed once");
        self.entries.push(Entry { stop, id, slot });
        let i = self.entries.len() - 1;
        at[slot as usize] = i as u32;
        self.sift_up(i, at);
    }

    /// Remove the order in `slot`; false if it is not in this heap.
    pub fn remove(&mut self, slot: u32, at: &mut [u32]) -> bool {
        let i = at[slot as usize];
        if i == NIL || self.entries.get(i as usize).is_none_or(|e| e.slot != slot) {
            return false;
        }
        let i = i as usize;
        at[slot as usize] = NIL;
        let last = self.entries.pop().expect("not empty");
        if i < self.entries.len() {
            self.entries[i] = last;
            at[last.slot as usize] = i as u32;
            self.sift_up(i, at);
            let j = at[last.slot as usize] as usize;
            self.sift_down(j, at);
        }
        true
    }

    fn sift_up(&mut self, mut i: usize, at: &mut [u32]) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.before(&self.entries[i], &self.entries[parent]) {
                break;
            }
            self.swap(i, parent, at);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize, at: &mut [u32]) {
        let n = self.entries.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut best = i;
            if l < n && self.before(&self.entries[l], &self.entries[best]) {
                best = l;
            }
            if r < n && self.before(&self.entries[r], &self.entries[best]) {
                best = r;
            }
            if best == i {
                break;
            }
            self.swap(i, best, at);
            i = best;
        }
    }

    fn swap(&mut self, i: usize, j: usize, at: &mut [u32]) {
        self.entries.swap(i, j);
        at[self.entries[i].slot as usize] = i as u32;
        at[self.entries[j].slot as usize] = j as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a sorted list: the heap's first is always the list's first, through random
    /// inserts and removals (a small deterministic generator, no dependency).
    #[test]
    fn heap_agrees_with_a_sorted_model() {
        for rising in [true, false] {
            let mut at = vec![NIL; 512];
            let mut heap = TriggerHeap::new(rising, 4);
            let mut model: Vec<(i64, u64, u32)> = Vec::new();
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            let mut next_id = 1u64;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let free: Vec<u32> = (0..512).filter(|&s| at[s as usize] == NIL).collect();
                if !x.is_multiple_of(3) && !free.is_empty() {
                    let slot = free[(x >> 8) as usize % free.len()];
                    let stop = (x >> 20) as i64 % 16;
                    heap.insert(stop, next_id, slot, &mut at);
                    model.push((stop, next_id, slot));
                    next_id += 1;
                } else if !model.is_empty() {
                    let k = (x >> 8) as usize % model.len();
                    let (_, _, slot) = model.swap_remove(k);
                    assert!(heap.remove(slot, &mut at));
                    assert!(!heap.remove(slot, &mut at), "removed twice");
                }
                model.sort_by(|a, b| {
                    let by_stop = if rising { a.0.cmp(&b.0) } else { b.0.cmp(&a.0) };
                    by_stop.then(a.1.cmp(&b.1))
                });
                assert_eq!(heap.first(), model.first().map(|&(s, id, _)| (s, id)));
                assert_eq!(heap.len(), model.len());
            }
        }
    }
}
