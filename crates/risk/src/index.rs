//! Composite index (`.BXBT`-style) from constituent venue prices, and the sampled TWAP of an
//! index that settles dated futures.
//!
//! Deterministic and allocation-free after construction: constituents live in fixed arrays
//! of [`MAX_CONSTITUENTS`]; time is the sequencer's journaled [`Timestamp`], passed in.
//! Constituent prices arrive as journaled commands ([`CompositeIndex::on_price`]), so a
//! replay recomputes the same index.
//!
//! Index rule, evaluated by [`CompositeIndex::compute`] at `now`:
//! 1. **Stale**: a constituent that never reported, or whose last update is more than
//!    `stale_after_ns` old (`now − at > stale_after_ns`), is excluded.
//! 2. **Outlier**: a fresh constituent is excluded when it lies further than
//!    `outlier_bound` from the median of the *other* fresh constituents:
//!    `|2p − 2m| × 1e8 > bound × 2m` (the median `m` of an even count is the mean of the two
//!    middle prices, carried doubled so that it stays an integer; no division). With no
//!    other fresh constituent nothing is an outlier; with exactly one other, two prices that
//!    disagree by more than the bound exclude each other (nobody can tell which is right).
//! 3. If at least `min_constituents` remain, the index is their weighted mean
//!    `Σ wᵢpᵢ / Σ wᵢ` (weights renormalised over the included constituents), rounded half
//!    away from zero to a tick (the index is a reference, not a payment: nearest is
//!    neutral). Otherwise the index **holds** its last good value and reports `held`;
//!    entering and leaving the held state each produce one [`IndexEvent`].
//!
//! A configuration that can produce a value from one source (one constituent, or
//! `min_constituents == 1`) is refused unless `single_source` is set, and then every
//! [`IndexStatus`] carries `single_source = true`.
//!
//! Prices are in ticks of the instruments that reference the index (all instruments on one
//! index share its tick size).

use amdahl_types::{Price, Rate, Timestamp};

use crate::math::{div_round_half_away, mul, to_money};

/// The most constituents one index can have.
pub const MAX_CONSTITUENTS: usize = 16;

/// Static configuration of one composite index.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IndexConfig {
    /// Number of constituents (1..=16); constituent `i` is addressed by its position.
    pub count: usize,
    /// Relative weight of each constituent (only the first `count` are used; all > 0).
    pub weights: [u32; MAX_CONSTITUENTS],
    /// A constituent with no update for longer than this is stale.
    pub stale_after_ns: i64,
    /// Maximum distance from the median of the others, as a fraction (0 < bound ≤ 1).
    pub outlier_bound: Rate,
    /// Fewer included constituents than this and the index holds its last value.
    pub min_constituents: usize,
    /// Explicitly allow an index that may be computed from a single source.
    pub single_source: bool,
    /// Constituent prices above this are refused ([`IndexError::BadPrice`]); it bounds the
    /// i128 arithmetic of the fair price and funding.
    pub max_price: Price,
}

impl IndexConfig {
    /// A configuration with the weights `weights` (at most 16; extra entries are an error
    /// reported by [`IndexConfig::validate`] as a count of 17).
    pub fn new(
        weights: &[u32],
        stale_after_ns: i64,
        outlier_bound: Rate,
        min_constituents: usize,
        max_price: Price,
    ) -> IndexConfig {
        let mut w = [0; MAX_CONSTITUENTS];
        for (dst, src) in w.iter_mut().zip(weights) {
            *dst = *src;
        }
        IndexConfig {
            count: weights.len().min(MAX_CONSTITUENTS + 1),
            weights: w,
            stale_after_ns,
            outlier_bound,
            min_constituents,
            single_source: false,
            max_price,
        }
    }

    /// Checks the configuration: 1 ≤ count ≤ 16, every used weight > 0, staleness > 0,
    /// 0 < outlier bound ≤ 100%, 1 ≤ min_constituents ≤ count, max_price > 0, and a
    /// single-source setup (count 1 or min 1) only with `single_source`.
    pub fn validate(&self) -> Result<(), String> {
        if self.count == 0 || self.count > MAX_CONSTITUENTS {
            return Err(format!("index: {} constituents, need 1..={MAX_CONSTITUENTS}", self.count));
        }
        if let Some(i) = self.weights[..self.count].iter().position(|&w| w == 0) {
            return Err(format!("index: constituent {i} has weight 0"));
        }
        if self.stale_after_ns <= 0 {
            return Err(format!("index: stale_after_ns {} must be > 0", self.stale_after_ns));
        }
        if self.outlier_bound.0 <= 0 || self.outlier_bound.0 > Rate::SCALE {
            return Err(format!(
                "index: outlier_bound {} must be in (0, 1e8]",
                self.outlier_bound.0
            ));
        }
        if self.min_constituents == 0 || self.min_constituents > self.count {
            return Err(format!(
                "index: min_constituents {} must be in 1..={}",
                self.min_constituents, self.count
            ));
        }
        if self.max_price.0 <= 0 {
            return Err(format!("index: max_price {} must be > 0", self.max_price.0));
        }
        if (self.count == 1 || self.min_constituents == 1) && !self.single_source {
            return Err(format!(
                "index: {} constituent(s) with min_constituents {} can be a single-source \
                 index; set single_source to allow it",
                self.count, self.min_constituents
            ));
        }
        Ok(())
    }
}

/// Why a constituent price command was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IndexError {
    /// No constituent at this position.
    UnknownConstituent(usize),
    /// Not positive, or above the configured `max_price`.
    BadPrice(Price),
}

/// The index after one [`CompositeIndex::compute`]. Masks are by constituent position.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct IndexStatus {
    /// The index: freshly computed, or the last good value while `held`; `None` before the
    /// first good value.
    pub price: Option<Price>,
    /// Too few constituents remained; `price` is the last good value.
    pub held: bool,
    /// The configuration allows a single source (see [`IndexConfig::single_source`]).
    pub single_source: bool,
    /// When `price` was last computed from enough constituents.
    pub last_good_at: Option<Timestamp>,
    /// Constituents in the mean, stale ones, and outliers.
    pub used: u16,
    pub stale: u16,
    pub outliers: u16,
}

impl IndexStatus {
    /// How many constituents went into the value.
    pub fn used_count(&self) -> u32 {
        self.used.count_ones()
    }
}

/// A change of the index's health, emitted once per transition.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IndexEvent {
    /// Fewer than `required` constituents remain (`usable`); the index holds `last`.
    Held { last: Option<Price>, usable: u8, required: u8 },
    /// Enough constituents again; the index is `price`.
    Resumed { price: Price },
}

/// One composite index: last price and update time per constituent, and its last value.
#[derive(Clone, Hash, Debug)]
pub struct CompositeIndex {
    cfg: IndexConfig,
    prices: [i64; MAX_CONSTITUENTS],
    /// Timestamp of the last update, `None` before the first.
    updated: [Option<Timestamp>; MAX_CONSTITUENTS],
    last: Option<Price>,
    last_good_at: Option<Timestamp>,
    held: bool,
}

impl CompositeIndex {
    /// A new index; the configuration must pass [`IndexConfig::validate`].
    pub fn new(cfg: IndexConfig) -> Result<CompositeIndex, String> {
        cfg.validate()?;
        Ok(CompositeIndex {
            cfg,
            prices: [0; MAX_CONSTITUENTS],
            updated: [None; MAX_CONSTITUENTS],
            last: None,
            last_good_at: None,
            held: false,
        })
    }

    pub fn config(&self) -> &IndexConfig {
        &self.cfg
    }

    /// The last good value (what [`IndexStatus::price`] reports).
    pub fn last(&self) -> Option<Price> {
        self.last
    }

    /// A constituent price command (journaled): constituent `i` quoted `price` at `at`.
    pub fn on_price(&mut self, i: usize, price: Price, at: Timestamp) -> Result<(), IndexError> {
        if i >= self.cfg.count {
            return Err(IndexError::UnknownConstituent(i));
        }
        if price.0 <= 0 || price > self.cfg.max_price {
            return Err(IndexError::BadPrice(price));
        }
        self.prices[i] = price.0;
        self.updated[i] = Some(at);
        Ok(())
    }

    /// Recomputes the index at `now` by the rule in the module documentation.
    pub fn compute(&mut self, now: Timestamp) -> (IndexStatus, Option<IndexEvent>) {
        let n = self.cfg.count;
        let mut stale = 0u16;
        // Fresh prices, sorted, for the medians of the others.
        let mut sorted = [0i64; MAX_CONSTITUENTS];
        let mut k = 0;
        for i in 0..n {
            match self.updated[i] {
                Some(at) if now.0.saturating_sub(at.0) <= self.cfg.stale_after_ns => {
                    sorted[k] = self.prices[i];
                    k += 1;
                }
                _ => stale |= 1 << i,
            }
        }
        let sorted = &mut sorted[..k];
        sorted.sort_unstable();
        let bound = self.cfg.outlier_bound.0 as i128;
        let (mut used, mut outliers) = (0u16, 0u16);
        let (mut sum_wp, mut sum_w) = (0i128, 0i128);
        for i in 0..n {
            if stale & (1 << i) != 0 {
                continue;
            }
            let p = self.prices[i];
            if let Some(m2) = doubled_median_without(sorted, p) {
                let dist = (2 * p as i128 - m2).abs();
                if mul(dist, Rate::SCALE as i128) > mul(bound, m2) {
                    outliers |= 1 << i;
                    continue;
                }
            }
            used |= 1 << i;
            let w = self.cfg.weights[i] as i128;
            sum_wp += mul(w, p as i128);
            sum_w += w;
        }
        let usable = used.count_ones() as usize;
        let mut event = None;
        if usable >= self.cfg.min_constituents {
            let price = Price(to_money(div_round_half_away(sum_wp, sum_w), "index price"));
            if self.held {
                event = Some(IndexEvent::Resumed { price });
            }
            self.last = Some(price);
            self.last_good_at = Some(now);
            self.held = false;
        } else {
            if !self.held {
                event = Some(IndexEvent::Held {
                    last: self.last,
                    usable: usable as u8,
                    required: self.cfg.min_constituents as u8,
                });
            }
            self.held = true;
        }
        let status = IndexStatus {
            price: self.last,
            held: self.held,
            single_source: self.cfg.single_source,
            last_good_at: self.last_good_at,
            used,
            stale,
            outliers,
        };
        (status, event)
    }
}

/// Twice the median of `sorted` (ascending) with one occurrence of `p` removed; `None` if
/// nothing remains. Removing any one of equal values leaves the same multiset.
fn doubled_median_without(sorted: &[i64], p: i64) -> Option<i128> {
    let k = sorted.len();
    if k < 2 {
        return None;
    }
    let j = sorted.partition_point(|&x| x < p);
    debug_assert!(sorted.get(j) == Some(&p), "price {p} not among the fresh prices");
    // The r-th element (0-based) of the others is sorted[r] before j and sorted[r + 1] after.
    let at = |r: usize| sorted[if r < j { r } else { r + 1 }] as i128;
    let m = k - 1;
    Some(if m % 2 == 1 { 2 * at(m / 2) } else { at(m / 2 - 1) + at(m / 2) })
}

/// Capacity of an [`IndexTwap`] ring, in samples.
pub const TWAP_CAPACITY: usize = 64;

/// A sampled time-weighted average of an index, for the settlement price of dated futures
/// (BitMEX `.BXBT30M`: the 30-minute TWAP of the index before expiry).
///
/// Sampling rule: the sample instants are the multiples of `step_ns` since the epoch (whole
/// minutes for a 1-minute step). The sample at instant `g` is the **last index value observed
/// at or before `g`** (an observation at exactly `g` counts; of several at the same
/// timestamp the last wins). A sample is fixed once time has moved past `g` (an observation
/// or [`IndexTwap::advance`] with a later time), so nothing observed later can change it.
/// Instants before the first observation have no sample. The ring keeps the latest
/// [`TWAP_CAPACITY`] samples; gaps longer than the ring are skipped in O(1).
#[derive(Clone, Hash, Debug)]
pub struct IndexTwap {
    step_ns: i64,
    /// The index currently in force, from the latest observation.
    current: Option<Price>,
    /// The next sample instant not yet fixed.
    next: i64,
    times: [i64; TWAP_CAPACITY],
    prices: [i64; TWAP_CAPACITY],
    /// Next write position and number of valid samples.
    head: usize,
    len: usize,
}

/// A TWAP and the number of samples it averages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Twap {
    pub price: Price,
    pub samples: u32,
}

impl IndexTwap {
    /// Samples every `step_ns` (> 0).
    pub fn new(step_ns: i64) -> IndexTwap {
        assert!(step_ns > 0, "amdahl-risk: TWAP step {step_ns} must be > 0");
        IndexTwap {
            step_ns,
            current: None,
            next: 0,
            times: [0; TWAP_CAPACITY],
            prices: [0; TWAP_CAPACITY],
            head: 0,
            len: 0,
        }
    }

    /// Observes the index `price` at `now` (non-decreasing across calls).
    pub fn observe(&mut self, now: Timestamp, price: Price) {
        if self.current.is_none() {
            // The first sample instant at or after the first observation.
            self.next = now.0.div_euclid(self.step_ns) * self.step_ns;
            if self.next < now.0 {
                self.next += self.step_ns;
            }
        } else {
            self.advance(now);
        }
        self.current = Some(price);
    }

    /// Fixes every sample instant strictly before `now` with the value in force.
    pub fn advance(&mut self, now: Timestamp) {
        let Some(price) = self.current else { return };
        let pending = (now.0 - self.next + self.step_ns - 1).div_euclid(self.step_ns);
        if pending <= 0 {
            return;
        }
        // Only the last TWAP_CAPACITY instants can survive in the ring.
        let skip = pending - TWAP_CAPACITY as i64;
        if skip > 0 {
            self.next += skip * self.step_ns;
        }
        while self.next < now.0 {
            self.times[self.head] = self.next;
            self.prices[self.head] = price.0;
            self.head = (self.head + 1) % TWAP_CAPACITY;
            self.len = (self.len + 1).min(TWAP_CAPACITY);
            self.next += self.step_ns;
        }
    }

    /// The mean of the samples at instants in `[end − window_ns, end)`, rounded half away
    /// from zero to a tick (a settlement price is neutral between longs and shorts); first
    /// fixes the samples before `end`. `None` when no sample lies in the window. The window
    /// must fit in the ring (`window_ns ≤ TWAP_CAPACITY × step`), else it panics.
    ///
    /// Settlement of a dated future: `twap(expiry, 30 min)` with a 1-minute step averages the
    /// 30 samples at expiry − 30 min, …, expiry − 1 min.
    pub fn twap(&mut self, end: Timestamp, window_ns: i64) -> Option<Twap> {
        assert!(
            window_ns > 0 && window_ns <= TWAP_CAPACITY as i64 * self.step_ns,
            "amdahl-risk: TWAP window {window_ns} does not fit the ring"
        );
        self.advance(end);
        let start = end.0 - window_ns;
        let (mut sum, mut count) = (0i128, 0i128);
        for i in 0..self.len {
            let t = self.times[i];
            if t >= start && t < end.0 {
                sum += self.prices[i] as i128;
                count += 1;
            }
        }
        if count == 0 {
            return None;
        }
        let price = Price(to_money(div_round_half_away(sum, count), "TWAP"));
        Some(Twap { price, samples: count as u32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_the_others() {
        let s = [10, 20, 30, 40];
        // without 10: {20, 30, 40} → 30, doubled 60.
        assert_eq!(doubled_median_without(&s, 10), Some(60));
        // without 30: {10, 20, 40} → 20.
        assert_eq!(doubled_median_without(&s, 30), Some(40));
        // without 40 of {10, 20, 30, 40, 50}: {10, 20, 30, 50} → (20 + 30) = 50 doubled.
        assert_eq!(doubled_median_without(&[10, 20, 30, 40, 50], 40), Some(50));
        assert_eq!(doubled_median_without(&[7, 7], 7), Some(14));
        assert_eq!(doubled_median_without(&[7], 7), None);
    }

    #[test]
    fn twap_samples_the_value_in_force_at_each_instant() {
        let mut t = IndexTwap::new(10);
        t.observe(Timestamp(5), Price(100)); // first instant ≥ 5 is 10
        t.observe(Timestamp(10), Price(200)); // at exactly 10: counts for instant 10
        t.observe(Timestamp(10), Price(300)); // the last one at 10 wins
        t.observe(Timestamp(25), Price(400)); // instants 10, 20 fixed at 300
        // Instants in [0, 40): 10 → 300, 20 → 300, 30 → 400 (fixed by twap's advance).
        let w = t.twap(Timestamp(40), 40).unwrap();
        assert_eq!(w, Twap { price: Price(333), samples: 3 }); // 1000 / 3 = 333.3 → 333
    }

    #[test]
    fn twap_skips_long_gaps_in_constant_time() {
        let mut t = IndexTwap::new(1);
        t.observe(Timestamp(0), Price(7));
        t.observe(Timestamp(1_000_000_000_000), Price(9));
        let w = t.twap(Timestamp(1_000_000_000_010), 20).unwrap();
        // 10 instants before 1e12 at 7, 10 from 1e12 at 9: mean 8.
        assert_eq!(w, Twap { price: Price(8), samples: 20 });
    }
}
