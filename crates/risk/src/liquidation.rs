//! Risk-limit steps, bankruptcy and liquidation prices, the liquidation test, and ADL ranking
//! (API.md §9).
//!
//! # The position's equity
//! A position is backed by `margin`: for isolated margin the position margin (posInit +
//! posComm, plus any margin transferred in); for cross margin the part of the account's
//! margin balance available to it (the caller's choice, e.g. wallet balance minus the other
//! positions' and orders' requirements). At mark `p` its equity (margin balance) is
//! `E(p) = margin + value(qty, p) − cost`, exact in i128, with `value` the crate's one
//! contract-value rule. The maintenance requirement `maint` is posMaint
//! ([`Position::maint_margin`]) unless given explicitly (e.g. with risk-limit steps).
//!
//! - **Liquidatable**: `E(mark) < maint` (strict).
//! - **Liquidation price** `L`: the boundary tick of that test. Long: the *highest* tick at
//!   which the position is liquidatable, so `mark ≤ L ⇔ liquidatable`. Short: the *lowest*,
//!   so `mark ≥ L ⇔ liquidatable`.
//! - **Bankruptcy price** `B`: the tick nearest to the exact root of `E = 0` on the solvent
//!   side. Long: the *lowest* tick with `E ≥ 0` (rounds up); short: the *highest* tick with
//!   `E ≥ 0` (rounds down). Taking the position over at `B` never leaves the owner with a
//!   negative balance, so no rounding is ever charged to the insurance fund.
//!
//! # Rounding rule (exact)
//! Both prices are found by bisection over the ticks `[1, max_price]` on the exact integer
//! predicate (`value` is monotone in the price for a fixed quantity), so there is no
//! approximation left to round: `L` agrees with [`is_liquidatable`] at every tick. In terms
//! of the real root `x*` of `E = maint`, a long's `L` is the last tick strictly below `x*`
//! (a short's the first strictly above): at every tick on the other side the margin balance
//! still covers maintenance, so not liquidating there costs the exchange nothing, and at
//! `L` itself it does not. Where one tick moves the value by more than `maint` (prices of a
//! few ticks), `L` can fall one tick beyond `B`.
//!
//! Results are `None` when the set is empty within `[1, max_price]` (a long that is not
//! liquidatable even at 1 tick, a short not even at `max_price`; for `B`, a position that is
//! insolvent at every tick); when every tick qualifies the range end is returned. Each
//! solve costs about 21 value computations and allocates nothing.

use core::cmp::Ordering;

use amdahl_types::{AccountId, Money, Price, Qty, Rate};

use crate::math::mul;
use crate::{ContractKind, Instrument, Position};

// ---------------------------------------------------------------------------------------
// Risk limits
// ---------------------------------------------------------------------------------------

/// How many risk-limit steps a gross value (|position value| + |open orders' value|, ≥ 0)
/// takes: 0 up to and including `risk_limit`, then one more for each started `risk_step`
/// (`⌈(gross − limit) / step⌉`: any excess counts as a whole step, the safe side). A zero
/// `risk_step` means no steps (0). XBTUSD (200 XBT, step 100): 200 XBT → 0, 200 XBT + 1 sat
/// → 1, 300 XBT → 1, 350 XBT → 2.
pub fn risk_steps(inst: &Instrument, gross_value: Money) -> u32 {
    let excess = gross_value as i128 - inst.risk_limit as i128;
    if excess <= 0 || inst.risk_step <= 0 {
        return 0;
    }
    let step = inst.risk_step as i128;
    let n = excess / step + i128::from(excess % step != 0);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The risk limit of the tier with `steps` steps: `risk_limit + steps × risk_step`.
pub fn risk_limit_at(inst: &Instrument, steps: u32) -> Money {
    let v = inst.risk_limit as i128 + mul(steps as i128, inst.risk_step as i128);
    i64::try_from(v).unwrap_or(Money::MAX)
}

/// `(initial, maintenance)` margin rates for `gross_value`: the base rates raised by the
/// base maintenance rate per step ([`risk_steps`]), each capped at 100%.
/// XBTUSD: < 200 XBT (1%, 0.5%), then (1.5%, 1%), (2%, 1.5%), …
pub fn margin_rates(inst: &Instrument, gross_value: Money) -> (Rate, Rate) {
    let steps = risk_steps(inst, gross_value) as i128;
    let mm = inst.maint_margin.0 as i128;
    let cap = Rate::SCALE as i128;
    let init = (inst.init_margin.0 as i128 + mul(steps, mm)).min(cap);
    let maint = (mm + mul(steps, mm)).min(cap);
    (Rate(init as i64), Rate(maint as i64))
}

// ---------------------------------------------------------------------------------------
// Liquidation
// ---------------------------------------------------------------------------------------

/// `E(mark) < maint` for a precomputed mark value: `margin + mark_value − cost < maint`, in
/// i128 without division. The engine can cache `maint` per position and the inverse unit
/// value per mark, which makes the per-position test a multiply and a compare.
pub fn below_maintenance(cost: Money, margin: Money, maint: Money, mark_value: Money) -> bool {
    (margin as i128 + mark_value as i128 - cost as i128) < maint as i128
}

/// Is the position liquidatable at `mark` (margin balance < posMaint)? A flat position never
/// is. See [`is_liquidatable_with_maint`].
pub fn is_liquidatable(inst: &Instrument, pos: &Position, margin: Money, mark: Price) -> bool {
    is_liquidatable_with_maint(inst, pos, margin, pos.maint_margin(inst), mark)
}

/// `margin + value(qty, mark) − cost < maint`. Linear and quanto contracts compare without
/// division: with `X = qty × multiplier × ticks × num` and `d = den`, the value
/// `round_half_away(X / d) < T` is `2X + d < 2dT` for `X ≥ 0` and `d − 2X ≥ 2d(1 − T)` for
/// `X < 0`. Inverse contracts need the unit value `round(multiplier / price)`, one division
/// (or a per-mark cache with [`below_maintenance`]).
pub fn is_liquidatable_with_maint(
    inst: &Instrument,
    pos: &Position,
    margin: Money,
    maint: Money,
    mark: Price,
) -> bool {
    if pos.qty == 0 {
        return false;
    }
    let t = maint as i128 - margin as i128 + pos.cost as i128;
    match inst.kind {
        ContractKind::Inverse => value_at(inst, pos.qty, mark.0) < t,
        ContractKind::Linear | ContractKind::Quanto => {
            assert!(mark.0 > 0, "amdahl-risk: mark {} is not positive", mark.0);
            let x = mul(
                mul(mul(pos.qty as i128, inst.multiplier as i128), mark.0 as i128),
                inst.tick.num as i128,
            );
            let d = inst.tick.den as i128;
            if x >= 0 { 2 * x + d < mul(2 * d, t) } else { d - 2 * x >= mul(2 * d, 1 - t) }
        }
    }
}

/// The exact value in i128 at `ticks` (the crate's rounding rule), panicking only on an i128
/// overflow, impossible for `i64` quantities at validated prices.
fn value_at(inst: &Instrument, qty: i64, ticks: i64) -> i128 {
    match inst.value_wide(Qty(qty), Price(ticks)) {
        Some(v) => v,
        None => panic!("amdahl-risk: {} value of {qty} at {ticks} overflows i128", inst.symbol),
    }
}

/// The largest `t` in `[1, hi]` with `pred(t)`, where `pred` holds on a prefix.
fn last_true(hi: i64, pred: impl Fn(i64) -> bool) -> Option<i64> {
    if hi < 1 || !pred(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, hi); // pred(lo) holds; the answer is in [lo, hi]
    while lo < hi {
        let mid = lo + (hi - lo + 1) / 2;
        if pred(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

/// The smallest `t` in `[1, hi]` with `pred(t)`, where `pred` holds on a suffix.
fn first_true(hi: i64, pred: impl Fn(i64) -> bool) -> Option<i64> {
    if hi < 1 || !pred(hi) {
        return None;
    }
    let (mut lo, mut hi) = (1, hi); // pred(hi) holds; the answer is in [lo, hi]
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The bankruptcy price: long, the lowest tick with `E ≥ 0`; short, the highest (module
/// docs). `None` when flat or insolvent at every tick of `[1, max_price]`.
pub fn bankruptcy_price(inst: &Instrument, pos: &Position, margin: Money) -> Option<Price> {
    // E(t) ≥ 0 ⇔ value(t) ≥ cost − margin.
    let floor = pos.cost as i128 - margin as i128;
    let solvent = |t: i64| value_at(inst, pos.qty, t) >= floor;
    let hi = inst.max_price.0;
    match pos.qty.signum() {
        1 => first_true(hi, solvent).map(Price),
        -1 => last_true(hi, solvent).map(Price),
        _ => None,
    }
}

/// The liquidation price with posMaint as the requirement; see
/// [`liquidation_price_with_maint`].
pub fn liquidation_price(inst: &Instrument, pos: &Position, margin: Money) -> Option<Price> {
    liquidation_price_with_maint(inst, pos, margin, pos.maint_margin(inst))
}

/// The liquidation price: long, the highest tick where [`is_liquidatable_with_maint`]
/// holds; short, the lowest (module docs). `None` when flat or never liquidatable within
/// `[1, max_price]`.
pub fn liquidation_price_with_maint(
    inst: &Instrument,
    pos: &Position,
    margin: Money,
    maint: Money,
) -> Option<Price> {
    // E(t) < maint ⇔ value(t) < maint − margin + cost.
    let t = maint as i128 - margin as i128 + pos.cost as i128;
    let liquidatable = |p: i64| value_at(inst, pos.qty, p) < t;
    let hi = inst.max_price.0;
    match pos.qty.signum() {
        1 => last_true(hi, liquidatable).map(Price),
        -1 => first_true(hi, liquidatable).map(Price),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// ADL ranking
// ---------------------------------------------------------------------------------------

/// An exact ADL ranking as a signed fraction `±num / den` (`den > 0`):
///
/// `PNL% = (MV − C) / |C|`, `effLev = |MV| / (MV − BV)`, and the ranking is
/// `PNL% × effLev` if `PNL% > 0`, else `PNL% / effLev`, i.e.
/// - profit: `(MV − C)·|MV| / (|C|·(MV − BV))`;
/// - loss or zero: `(MV − C)·(MV − BV) / (|C|·|MV|)`;
///
/// with `MV` the mark value, `C` the cost (avgEntryValue) and `BV` the value at the
/// bankruptcy price, all with BitMEX's sign (for every kind and side `MV − BV` is the
/// margin left above bankruptcy, > 0 for a solvent position). Degenerate inputs are clamped
/// so the order stays total: `|C|`, `|MV|` and `MV − BV` count as at least 1. Magnitudes
/// are u128 products of two values below 2^64; comparisons cross-multiply into 256 bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AdlScore {
    negative: bool,
    num: u128,
    den: u128,
}

impl AdlScore {
    pub fn new(mark_value: Money, cost: Money, bankrupt_value: Money) -> AdlScore {
        let (mv, c, bv) = (mark_value as i128, cost as i128, bankrupt_value as i128);
        let pnl = mv - c;
        let abs_c = c.unsigned_abs().max(1);
        let abs_mv = mv.unsigned_abs().max(1);
        let cushion = (mv - bv).max(1) as u128;
        let (num, den) = if pnl > 0 {
            (pnl.unsigned_abs() * abs_mv, abs_c * cushion)
        } else {
            (pnl.unsigned_abs() * cushion, abs_c * abs_mv)
        };
        AdlScore { negative: pnl < 0, num, den }
    }

    /// The score of `pos` at `mark` backed by `margin`: `BV` is the value at
    /// [`bankruptcy_price`] (a position insolvent everywhere gets the clamped cushion 1).
    pub fn for_position(inst: &Instrument, pos: &Position, margin: Money, mark: Price) -> AdlScore {
        let mv = pos.mark_value(inst, mark);
        let bv = match bankruptcy_price(inst, pos, margin) {
            Some(b) => pos.mark_value(inst, b),
            None => mv,
        };
        AdlScore::new(mv, pos.cost, bv)
    }

    /// Orders rankings by value, exactly.
    pub fn cmp_value(&self, other: &AdlScore) -> Ordering {
        let sign = |s: &AdlScore| {
            if s.num == 0 {
                0
            } else if s.negative {
                -1
            } else {
                1
            }
        };
        let (sa, sb) = (sign(self), sign(other));
        if sa != sb || sa == 0 {
            return sa.cmp(&sb);
        }
        // a/b vs c/d with b, d > 0: compare a·d with c·b.
        let mag = mul_wide(self.num, other.den).cmp(&mul_wide(other.num, self.den));
        if sa > 0 { mag } else { mag.reverse() }
    }

    /// For display only.
    pub fn to_f64(&self) -> f64 {
        let v = self.num as f64 / self.den as f64;
        if self.negative { -v } else { v }
    }
}

/// `a × b` as a 256-bit `(high, low)` pair, so tuples compare as the numbers do.
fn mul_wide(a: u128, b: u128) -> (u128, u128) {
    const M: u128 = u64::MAX as u128;
    let (a1, a0, b1, b0) = (a >> 64, a & M, b >> 64, b & M);
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    let mid = (p00 >> 64) + (p01 & M) + (p10 & M);
    let lo = (p00 & M) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (hi, lo)
}

/// One position competing for deleveraging (longs and shorts are ranked separately).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AdlCandidate {
    pub account: AccountId,
    pub score: AdlScore,
}

/// The ADL order: the highest ranking first; equal rankings by ascending account id. A
/// total order, so an unstable sort is deterministic.
pub fn adl_order(a: &AdlCandidate, b: &AdlCandidate) -> Ordering {
    b.score.cmp_value(&a.score).then(a.account.cmp(&b.account))
}

/// Sorts candidates into ADL order, in place (no allocation).
pub fn sort_adl(candidates: &mut [AdlCandidate]) {
    candidates.sort_unstable_by(adl_order);
}

/// The 1–5 indicator (`deleveragePercentile` lights) of the candidate at 0-based `position`
/// of the ADL order among `n`: `5 − ⌊5·position / n⌋`, so the first 20% show 5 lights and
/// the last 20% 1 (with fewer than 5 candidates some levels are skipped; a lone candidate
/// shows 5).
///
/// # Panics
/// If `position ≥ n`.
pub fn adl_indicator(position: usize, n: usize) -> u8 {
    assert!(position < n, "amdahl-risk: ADL position {position} of {n}");
    (5 - (5 * position as u128 / n as u128)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_multiply() {
        assert_eq!(mul_wide(3, 5), (0, 15));
        assert_eq!(mul_wide(1 << 64, 1 << 64), (1, 0));
        // (2^128 − 1)² = 2^256 − 2^129 + 1.
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(mul_wide(u128::MAX, 2), (1, u128::MAX - 1));
    }

    #[test]
    fn bisection_edges() {
        assert_eq!(last_true(10, |t| t <= 4), Some(4));
        assert_eq!(last_true(10, |_| true), Some(10));
        assert_eq!(last_true(10, |_| false), None);
        assert_eq!(first_true(10, |t| t >= 7), Some(7));
        assert_eq!(first_true(10, |_| true), Some(1));
        assert_eq!(first_true(10, |_| false), None);
        assert_eq!(first_true(1, |_| true), Some(1));
    }

    #[test]
    fn indicator_quintiles() {
        let lights: Vec<u8> = (0..10).map(|i| adl_indicator(i, 10)).collect();
        assert_eq!(lights, [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]);
        assert_eq!(adl_indicator(0, 1), 5);
        assert_eq!((0..3).map(|i| adl_indicator(i, 3)).collect::<Vec<_>>(), [5, 4, 2]);
    }
}
