//! A two-level occupancy bitmap over price ticks: which ticks of one side have a level.
//!
//! Bit `t` of `words` is set when tick `t` has a level; bit `w` of `summary` is set when
//! `words[w]` is non-zero. Finding the next occupied tick in either direction is a masked
//! `trailing_zeros`/`leading_zeros` in the current word, then the same in the summary
//! (one summary word covers 4096 ticks), then one more in the word it points to. A sparse
//! book over 2,000,000 ticks has 489 summary words, so even the worst gap is a short
//! linear scan of one cache-friendly array, and the usual case is two or three
//! instructions.
//!
//! Memory: 1 bit per tick plus 1 bit per 64 ticks.

/// Bits per word.
const BITS: u32 = u64::BITS;

pub(crate) struct PriceBitmap {
    words: Vec<u64>,
    summary: Vec<u64>,
}

/// Bits `from..64` of a word.
#[inline]
fn mask_from(from: u32) -> u64 {
    !0u64 << from
}

/// Bits `0..=to` of a word.
#[inline]
fn mask_through(to: u32) -> u64 {
    !0u64 >> (BITS - 1 - to)
}

#[inline]
fn split(bit: u32) -> (usize, u32) {
    ((bit / BITS) as usize, bit % BITS)
}

impl PriceBitmap {
    /// A bitmap for ticks `0..=max_tick`, all clear.
    pub(crate) fn new(max_tick: u32) -> PriceBitmap {
        let words = (max_tick / BITS + 1) as usize;
        let summary = words.div_ceil(BITS as usize);
        PriceBitmap { words: vec![0; words], summary: vec![0; summary] }
    }

    #[inline]
    pub(crate) fn insert(&mut self, tick: u32) {
        let (w, b) = split(tick);
        self.words[w] |= 1 << b;
        let (s, sb) = split(w as u32);
        self.summary[s] |= 1 << sb;
    }

    #[inline]
    pub(crate) fn remove(&mut self, tick: u32) {
        let (w, b) = split(tick);
        self.words[w] &= !(1 << b);
        if self.words[w] == 0 {
            let (s, sb) = split(w as u32);
            self.summary[s] &= !(1 << sb);
        }
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, tick: u32) -> bool {
        let (w, b) = split(tick);
        self.words[w] & (1 << b) != 0
    }

    /// The lowest set tick `>= tick`.
    #[inline]
    pub(crate) fn first_from(&self, tick: u32) -> Option<u32> {
        let (w, b) = split(tick);
        let bits = *self.words.get(w)? & mask_from(b);
        if bits != 0 {
            return Some(w as u32 * BITS + bits.trailing_zeros());
        }
        self.first_word_from(w as u32 + 1)
            .map(|w| w * BITS + self.words[w as usize].trailing_zeros())
    }

    /// The highest set tick `<= tick` (ticks beyond the end count as the end).
    #[inline]
    pub(crate) fn last_through(&self, tick: u32) -> Option<u32> {
        let (mut w, mut b) = split(tick);
        if w >= self.words.len() {
            (w, b) = (self.words.len() - 1, BITS - 1);
        }
        let bits = self.words[w] & mask_through(b);
        if bits != 0 {
            return Some(w as u32 * BITS + (BITS - 1 - bits.leading_zeros()));
        }
        let w = self.last_word_through((w as u32).checked_sub(1)?)?;
        Some(w * BITS + (BITS - 1 - self.words[w as usize].leading_zeros()))
    }

    /// The lowest non-empty word index `>= word`.
    #[inline]
    fn first_word_from(&self, word: u32) -> Option<u32> {
        let (mut s, b) = split(word);
        let mut bits = *self.summary.get(s)? & mask_from(b);
        while bits == 0 {
            s += 1;
            bits = *self.summary.get(s)?;
        }
        Some(s as u32 * BITS + bits.trailing_zeros())
    }

    /// The highest non-empty word index `<= word`.
    #[inline]
    fn last_word_through(&self, word: u32) -> Option<u32> {
        let (mut s, b) = split(word);
        let mut bits = self.summary[s] & mask_through(b);
        while bits == 0 {
            s = s.checked_sub(1)?;
            bits = self.summary[s];
        }
        Some(s as u32 * BITS + (BITS - 1 - bits.leading_zeros()))
    }
}

#[cfg(test)]
mod tests {
    use super::PriceBitmap;

    /// Compares both searches against a plain `Vec<bool>` at every tick.
    fn check_against_naive(max_tick: u32, set: &[u32]) {
        let mut bitmap = PriceBitmap::new(max_tick);
        let mut naive = vec![false; max_tick as usize + 1];
        for &t in set {
            bitmap.insert(t);
            naive[t as usize] = true;
        }
        // Naive answers for every tick, computed by one sweep in each direction.
        let mut first = vec![None; naive.len() + 1];
        for t in (0..naive.len()).rev() {
            first[t] = if naive[t] { Some(t as u32) } else { first[t + 1] };
        }
        let mut last = vec![None; naive.len()];
        for t in 0..naive.len() {
            let before = if t > 0 { last[t - 1] } else { None };
            last[t] = if naive[t] { Some(t as u32) } else { before };
        }
        for t in 0..=max_tick + 70 {
            let i = (t as usize).min(naive.len());
            assert_eq!(bitmap.first_from(t), first[i], "first_from({t})");
            let i = (t as usize).min(naive.len() - 1);
            assert_eq!(bitmap.last_through(t), last[i], "last_through({t})");
        }
    }

    #[test]
    fn searches_match_naive_across_word_and_summary_boundaries() {
        check_against_naive(10_000, &[]);
        check_against_naive(10_000, &[0]);
        check_against_naive(10_000, &[10_000]);
        check_against_naive(10_000, &[1, 63, 64, 4095, 4096, 4097, 8191, 9999]);
        check_against_naive(64, &[64]);
        check_against_naive(63, &[5, 63]);
    }

    #[test]
    fn remove_clears_summary_only_when_word_empties() {
        let mut bitmap = PriceBitmap::new(9000);
        bitmap.insert(100);
        bitmap.insert(101);
        bitmap.remove(100);
        assert_eq!(bitmap.first_from(0), Some(101));
        bitmap.remove(101);
        assert!(!bitmap.contains(101));
        assert_eq!(bitmap.first_from(0), None);
        assert_eq!(bitmap.last_through(9000), None);
        bitmap.insert(8999);
        assert_eq!(bitmap.first_from(0), Some(8999));
        assert_eq!(bitmap.last_through(u32::MAX), Some(8999));
    }
}
