//! Property tests: double entry per fill, exact zero cost after a full close, odd symmetry
//! of values, and non-negative monotone margins.

use amdahl_risk::{Instrument, Position};
use amdahl_types::{Leverage, Money, Price, Qty, Rate, Side};
use proptest::prelude::*;

fn instrument(i: usize) -> Instrument {
    match i % 3 {
        0 => Instrument::xbtusd(),
        1 => Instrument::ethusd(),
        _ => Instrument::xbtusdt(),
    }
}

fn leverage() -> impl Strategy<Value = Leverage> {
    prop_oneof![Just(Leverage::CROSS), (1u32..=10_000).prop_map(Leverage)]
}

/// (A buys?, lots, price ticks).
fn fills() -> impl Strategy<Value = Vec<(bool, i64, i64)>> {
    prop::collection::vec((any::<bool>(), 1i64..=60, 1i64..=2_000_000), 1..60)
}

/// Applies one fill between `a` (on `a_side`) and its counterparty `b`, checks the double
/// entry and returns the two wallet credits.
fn trade(
    inst: &Instrument,
    a: &mut Position,
    b: &mut Position,
    a_side: Side,
    qty: i64,
    ticks: i64,
) -> Result<(Money, Money), TestCaseError> {
    let value = inst.value(Qty(qty), Price(ticks));
    let (ca, cb) = (a.cost, b.cost);
    let wa = a.apply_fill(a_side, Qty(qty), value);
    let wb = b.apply_fill(a_side.opposite(), Qty(qty), value);
    let (da, db) = (a.cost - ca, b.cost - cb);
    // Per side: cost change − wallet credit = side.sign() × value …
    prop_assert_eq!(da - wa, a_side.sign() * value);
    prop_assert_eq!(db - wb, -a_side.sign() * value);
    // … so over both sides (cost change − wallet credit) sums to 0: Σ wallet − Σ cost is
    // unchanged by the fill.
    prop_assert_eq!((da - wa) + (db - wb), 0);
    prop_assert_eq!(a.qty + b.qty, 0);
    // (b) a flat position holds exactly zero cost.
    if a.qty == 0 {
        prop_assert_eq!(a.cost, 0);
        prop_assert_eq!(b.cost, 0);
    }
    // A position's cost has the sign of its value (or is 0).
    for p in [&*a, &*b] {
        let expect = inst.value(Qty(p.qty.signum()), Price(ticks)).signum();
        prop_assert!(p.cost == 0 || p.cost.signum() == expect, "{p:?}");
    }
    Ok((wa, wb))
}

proptest! {
    #[test]
    fn double_entry_and_exact_close(
        inst_ix in 0usize..3,
        seq in fills(),
        close_ticks in 1i64..=2_000_000,
    ) {
        let inst = instrument(inst_ix);
        let (mut a, mut b) = (Position::default(), Position::default());
        let (mut wallet_a, mut wallet_b) = (0i64, 0i64);
        let mut signed_a = 0i64; // Σ side.sign() × value for A
        for (a_buys, lots, ticks) in seq {
            let side = if a_buys { Side::Buy } else { Side::Sell };
            let qty = lots * inst.lot.0;
            signed_a += side.sign() * inst.value(Qty(qty), Price(ticks));
            let (wa, wb) = trade(&inst, &mut a, &mut b, side, qty, ticks)?;
            wallet_a += wa;
            wallet_b += wb;
            // The audit invariant over the two accounts.
            prop_assert_eq!(wallet_a + wallet_b - a.cost - b.cost, 0);
        }
        // Close A's position completely against B.
        if a.qty != 0 {
            let side = if a.qty > 0 { Side::Sell } else { Side::Buy };
            let qty = a.qty.abs();
            signed_a += side.sign() * inst.value(Qty(qty), Price(close_ticks));
            let (wa, wb) = trade(&inst, &mut a, &mut b, side, qty, close_ticks)?;
            wallet_a += wa;
            wallet_b += wb;
        }
        prop_assert_eq!((a.qty, a.cost, b.qty, b.cost), (0, 0, 0, 0));
        prop_assert_eq!(wallet_a, a.realised);
        prop_assert_eq!(wallet_b, b.realised);
        // Flat to flat, the realised total is exact: minus the signed values traded.
        prop_assert_eq!(a.realised, -signed_a);
        prop_assert_eq!(a.realised + b.realised, 0);
    }

    #[test]
    fn value_is_odd_and_monotone(
        inst_ix in 0usize..3,
        q in -10_000_000i64..=10_000_000,
        ticks in 1i64..=2_000_000,
    ) {
        let inst = instrument(inst_ix);
        let v = inst.value(Qty(q), Price(ticks));
        prop_assert_eq!(inst.value(Qty(-q), Price(ticks)), -v);
        let v1 = inst.value(Qty(q.abs() + 1), Price(ticks));
        prop_assert!(v1.abs() >= v.abs());
        // Sign: inverse negative for a long, linear/quanto positive.
        prop_assert_eq!(v.signum(), q.signum() * inst.multiplier.signum());
    }

    #[test]
    fn fee_is_truncated_and_odd_in_the_rate(
        value in -1_000_000_000_000i64..=1_000_000_000_000,
        rate in -1_000_000i64..=1_000_000,
    ) {
        let inst = Instrument::xbtusd();
        let f = inst.fee(value, Rate(rate));
        prop_assert_eq!(inst.fee(value, Rate(-rate)), -f);
        prop_assert_eq!(inst.fee(-value, Rate(rate)), f);
        prop_assert!(f == 0 || f.signum() == rate.signum());
        // |f| ≤ |value| × |rate| / 1e8 < |f| + 1
        let exact = value.unsigned_abs() as i128 * rate.unsigned_abs() as i128;
        let fa = f.unsigned_abs() as i128 * Rate::SCALE as i128;
        prop_assert!(fa <= exact && exact < fa + Rate::SCALE as i128);
    }

    #[test]
    fn margins_are_non_negative_and_monotone(
        inst_ix in 0usize..3,
        c1 in -10_000_000_000_000i64..=10_000_000_000_000,
        c2 in -10_000_000_000_000i64..=10_000_000_000_000,
        lev in leverage(),
    ) {
        let inst = instrument(inst_ix);
        let (lo, hi) = if c1.abs() <= c2.abs() { (c1, c2) } else { (c2, c1) };
        let p_lo = Position { qty: -lo.signum(), cost: lo, leverage: lev, ..Position::default() };
        let p_hi = Position { qty: -hi.signum(), cost: hi, leverage: lev, ..Position::default() };
        for p in [p_lo, p_hi] {
            prop_assert!(p.init_margin(&inst) >= 0);
            prop_assert!(p.maint_margin(&inst) >= 0);
            // MM ≤ IM, so the maintenance requirement never exceeds the position margin.
            prop_assert!(p.maint_margin(&inst) <= p.init_margin(&inst));
            // The requirement covers at least IM × |cost|.
            let rate = inst.init_rate(lev).0 as i128;
            prop_assert!(
                p.init_margin(&inst) as i128 * Rate::SCALE as i128
                    >= rate * p.cost.unsigned_abs() as i128
            );
        }
        prop_assert!(p_lo.init_margin(&inst) <= p_hi.init_margin(&inst));
        prop_assert!(p_lo.maint_margin(&inst) <= p_hi.maint_margin(&inst));
        let (v_lo, v_hi) = (lo.abs(), hi.abs());
        prop_assert!(inst.order_margin(v_lo, lev) >= 0);
        prop_assert!(inst.order_margin(v_lo, lev) <= inst.order_margin(v_hi, lev));
    }

    #[test]
    fn higher_leverage_never_needs_more_margin(
        inst_ix in 0usize..3,
        v in 0i64..=10_000_000_000_000,
        l1 in 1u32..=10_000,
        l2 in 1u32..=10_000,
    ) {
        let inst = instrument(inst_ix);
        let (lo, hi) = if l1 <= l2 { (l1, l2) } else { (l2, l1) };
        prop_assert!(inst.init_rate(Leverage(lo)) >= inst.init_rate(Leverage(hi)));
        prop_assert!(inst.init_rate(Leverage(hi)) >= inst.init_margin);
        prop_assert!(inst.order_margin(v, Leverage(lo)) >= inst.order_margin(v, Leverage(hi)));
        // 1/leverage rounded up: rate × leverage ≥ 1e10, and one unit less is below it.
        let r = inst.init_rate(Leverage(lo)).0 as i128;
        let base = inst.init_margin.0 as i128;
        prop_assert!(r * lo as i128 >= Rate::SCALE as i128 * 100 || r == base);
    }

    #[test]
    fn band_matches_a_rational_check(mark in 1i64..=2_000_000, off in -300_000i64..=300_000) {
        let inst = Instrument::xbtusd();
        let price = mark + off;
        prop_assume!(price > 0);
        // |off| / mark ≤ 10%  ⇔  10 × |off| ≤ mark.
        prop_assert_eq!(inst.within_band(Price(price), Price(mark)), 10 * off.abs() <= mark);
    }
}

proptest! {
    /// The 64-bit fast path of `value` and the checked 128-bit path agree everywhere.
    #[test]
    fn value_fast_path_agrees_with_the_wide_path(
        qty in -10_000_000i64..=10_000_000,
        ticks in 1i64..=2_000_000,
    ) {
        for inst in [Instrument::xbtusd(), Instrument::ethusd(), Instrument::xbtusdt()] {
            let price = Price(ticks.min(inst.max_price.0));
            let wide = inst.checked_value(Qty(qty), price);
            prop_assert_eq!(Some(inst.value(Qty(qty), price)), wide);
        }
    }
}
