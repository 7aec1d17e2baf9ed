//! The risk lifecycle with hand-worked numbers: index, fair price, risk limits, liquidation
//! and bankruptcy prices, ADL, funding and settlement; then properties.
//!
//! Prices are ticks: XBTUSD and XBTUSDT tick 0.5 USD (20000 ticks = 10000 USD).

use amdahl_risk::fair::perpetual_fair_price;
use amdahl_risk::funding::{
    funding_caps, funding_payment, funding_rate, funding_residue, interest_rate, premium_index,
};
use amdahl_risk::index::{CompositeIndex, IndexConfig, IndexEvent, IndexTwap, Twap};
use amdahl_risk::liquidation::{
    AdlCandidate, AdlScore, adl_indicator, bankruptcy_price, below_maintenance, is_liquidatable,
    liquidation_price, margin_rates, risk_limit_at, risk_steps, sort_adl,
};
use amdahl_risk::{FundingClearing, FundingSchedule, Instrument, Position};
use amdahl_types::{AccountId, Leverage, Money, Price, Qty, Rate, Side, Timestamp};
use proptest::prelude::*;

const SEC: i64 = 1_000_000_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const XBT: Money = 100_000_000;

/// A position opened by one fill of `qty` (signed) at `ticks` with `leverage` (hundredths).
fn open(inst: &Instrument, qty: i64, ticks: i64, leverage: u32) -> Position {
    let mut p = Position { leverage: Leverage(leverage), ..Position::default() };
    let side = if qty > 0 { Side::Buy } else { Side::Sell };
    p.apply_fill(side, Qty(qty.abs()), inst.value(Qty(qty.abs()), Price(ticks)));
    p
}

/// Margin balance at `ticks`.
fn equity(inst: &Instrument, pos: &Position, margin: Money, ticks: i64) -> Money {
    margin + pos.unrealised(inst, Price(ticks))
}

// ---------------------------------------------------------------------------------------
// Index
// ---------------------------------------------------------------------------------------

/// Five venues, weights 30/30/20/10/10, stale after 60 s, outliers beyond 5%, at least 3.
fn bxbt() -> CompositeIndex {
    let cfg =
        IndexConfig::new(&[30, 30, 20, 10, 10], 60 * SEC, Rate(5_000_000), 3, Price(2_000_000));
    CompositeIndex::new(cfg).unwrap()
}

#[test]
fn index_excludes_stale_and_outlier_constituents() {
    let mut ix = bxbt();
    let t0 = Timestamp(1_000 * SEC);
    for (i, p) in [16_000, 16_010, 15_990, 16_004, 16_020].into_iter().enumerate() {
        ix.on_price(i, Price(p), t0).unwrap();
    }
    let (st, ev) = ix.compute(t0);
    // (30·16000 + 30·16010 + 20·15990 + 10·16004 + 10·16020) / 100
    // = (480000 + 480300 + 319800 + 160040 + 160200) / 100 = 16003.4 → 16003.
    assert_eq!(st.price, Some(Price(16_003)));
    assert_eq!((st.used, st.stale, st.outliers, st.held, ev), (0b11111, 0, 0, false, None));

    // Exactly 60 s later everything is still fresh (stale means older than 60 s).
    let t1 = Timestamp(t0.0 + 60 * SEC);
    assert_eq!(ix.compute(t1).0.stale, 0);

    // The April 2018 incident: one venue (1) crashes 18%, 16010 × 0.82 = 13128.2 → 13128,
    // and venue 4 stops updating.
    let t2 = Timestamp(t0.0 + 61 * SEC);
    for (i, p) in [(0, 16_000), (1, 13_128), (2, 15_990), (3, 16_004)] {
        ix.on_price(i, Price(p), t2).unwrap();
    }
    let (st, ev) = ix.compute(t2);
    // Venue 1 against the median of {16000, 15990, 16004} = 16000: |13128 − 16000| = 2872
    // = 17.95% > 5%. Venue 0 against median{13128, 15990, 16004} = 15990: 0.06%.
    // Index = (30·16000 + 20·15990 + 10·16004) / 60 = 959840 / 60 = 15997.33 → 15997.
    assert_eq!(st.price, Some(Price(15_997)));
    assert_eq!((st.used, st.stale, st.outliers), (0b01101, 0b10000, 0b00010));
    assert_eq!((st.used_count(), ev), (3, None));

    // Venues 0 and 2 go quiet too: only 1 (crashed) and 3 are fresh; each is > 5% from the
    // other, so none is usable, 0 < 3: the index holds 15997 and says so, once.
    let t3 = Timestamp(t2.0 + 30 * SEC);
    ix.on_price(1, Price(13_128), t3).unwrap();
    ix.on_price(3, Price(16_004), t3).unwrap();
    let t4 = Timestamp(t2.0 + 90 * SEC);
    let (st, ev) = ix.compute(t4);
    assert_eq!(st.price, Some(Price(15_997)));
    assert!(st.held);
    assert_eq!(st.last_good_at, Some(t2));
    assert_eq!((st.stale, st.outliers), (0b10101, 0b01010));
    assert_eq!(ev, Some(IndexEvent::Held { last: Some(Price(15_997)), usable: 0, required: 3 }));
    let (st, ev) = ix.compute(Timestamp(t4.0 + 1));
    assert_eq!((st.price, st.held, ev), (Some(Price(15_997)), true, None));

    // The venues come back (3 is stale now, 70 s old): resumed with
    // (30·16100 + 30·16100 + 20·16090) / 80 = 1287800 / 80 = 16097.5 → 16098.
    let t5 = Timestamp(t4.0 + 10 * SEC);
    for (i, p) in [(0, 16_100), (1, 16_100), (2, 16_090)] {
        ix.on_price(i, Price(p), t5).unwrap();
    }
    let (st, ev) = ix.compute(t5);
    assert_eq!((st.price, st.used), (Some(Price(16_098)), 0b00111));
    assert_eq!(ev, Some(IndexEvent::Resumed { price: Price(16_098) }));
    assert!(!st.held);
}

#[test]
fn index_refuses_bad_commands_and_single_sources() {
    let mut ix = bxbt();
    assert!(ix.on_price(5, Price(1), Timestamp(0)).is_err());
    assert!(ix.on_price(0, Price(0), Timestamp(0)).is_err());
    assert!(ix.on_price(0, Price(2_000_001), Timestamp(0)).is_err());
    // Nothing reported yet: no value, held, with an event carrying no last value.
    let (st, ev) = ix.compute(Timestamp(0));
    assert_eq!((st.price, st.held), (None, true));
    assert_eq!(ev, Some(IndexEvent::Held { last: None, usable: 0, required: 3 }));

    let one = IndexConfig::new(&[1], 60 * SEC, Rate(5_000_000), 1, Price(2_000_000));
    assert!(one.validate().unwrap_err().contains("single_source"));
    let min_one = IndexConfig::new(&[1, 1, 1], 60 * SEC, Rate(5_000_000), 1, Price(2_000_000));
    assert!(min_one.validate().is_err());
    let mut ok = IndexConfig { single_source: true, ..one };
    ok.validate().unwrap();
    let mut ix = CompositeIndex::new(ok).unwrap();
    ix.on_price(0, Price(16_000), Timestamp(0)).unwrap();
    let (st, _) = ix.compute(Timestamp(0));
    assert_eq!((st.price, st.single_source, st.used_count()), (Some(Price(16_000)), true, 1));
    assert!(!bxbt().compute(Timestamp(0)).0.single_source);
    ok.weights[0] = 0;
    assert!(ok.validate().is_err());
}

// ---------------------------------------------------------------------------------------
// Fair price and funding schedule together
// ---------------------------------------------------------------------------------------

#[test]
fn fair_price_follows_the_funding_clock() {
    let sched = FundingSchedule::BITMEX_8H;
    let ix = Price(16_003);
    let f = Rate(37_500); // 0.0375%
    let mark = |now: i64| {
        let next = sched.next_after(Timestamp(now));
        perpetual_fair_price(ix, f, Timestamp(now), next, sched.interval_ns)
    };
    // 04:00 exactly: next is 12:00, 8 h left: 16003 × 1.000375 = 16009.001 → 16009.
    assert_eq!(mark(4 * HOUR), Price(16_009));
    // 06:00, 6 h left: basis 0.0375% × 0.75 = 0.028125%: 16003 × 1.00028125 = 16007.50
    // (16003 × 0.00028125 = 4.5008) → 16007.5008 → 16008.
    assert_eq!(mark(6 * HOUR), Price(16_008));
    // 10:00, 2 h left: 16003 × 0.0375% / 4 = 1.5003 → 16004.5003 → 16005.
    assert_eq!(mark(10 * HOUR), Price(16_005));
    // 11:59, 1 min left: 16003 × 0.0375% / 480 = 0.0125 → 16003.
    assert_eq!(mark(12 * HOUR - MIN), Price(16_003));
}

// ---------------------------------------------------------------------------------------
// Risk limits
// ---------------------------------------------------------------------------------------

#[test]
fn xbtusd_risk_limit_steps() {
    let x = Instrument::xbtusd(); // limit 200 XBT, step 100 XBT, IM 1%, MM 0.5%
    let r = |xbt: Money, extra: Money| {
        let v = xbt * XBT + extra;
        (risk_steps(&x, v), margin_rates(&x, v))
    };
    assert_eq!(r(150, 0), (0, (Rate(1_000_000), Rate(500_000))));
    assert_eq!(r(200, 0), (0, (Rate(1_000_000), Rate(500_000)))); // the limit itself
    assert_eq!(r(200, 1), (1, (Rate(1_500_000), Rate(1_000_000)))); // one satoshi over
    assert_eq!(r(300, 0), (1, (Rate(1_500_000), Rate(1_000_000))));
    assert_eq!(r(350, 0), (2, (Rate(2_000_000), Rate(1_500_000))));
    // 650 XBT: ⌈450 / 100⌉ = 5 steps: IM 1% + 5 × 0.5% = 3.5%, MM 0.5% + 2.5% = 3%.
    assert_eq!(r(650, 0), (5, (Rate(3_500_000), Rate(3_000_000))));
    assert_eq!(risk_limit_at(&x, 5), 700 * XBT);
    // The 2021 step of 150 XBT reproduces API.md §9's table: <200 0.5/1.0, <350 1.0/1.5,
    // <500 1.5/2.0, <650 2.0/2.5.
    let x21 = Instrument { risk_step: 150 * XBT, ..Instrument::xbtusd() };
    let m = |xbt: Money| margin_rates(&x21, xbt * XBT);
    assert_eq!(m(199), (Rate(1_000_000), Rate(500_000)));
    assert_eq!(m(349), (Rate(1_500_000), Rate(1_000_000)));
    assert_eq!(m(499), (Rate(2_000_000), Rate(1_500_000)));
    assert_eq!(m(649), (Rate(2_500_000), Rate(2_000_000)));
    // No step configured: never steps.
    let flat = Instrument { risk_step: 0, ..Instrument::xbtusd() };
    assert_eq!(risk_steps(&flat, 10_000 * XBT), 0);
}

// ---------------------------------------------------------------------------------------
// Liquidation and bankruptcy
// ---------------------------------------------------------------------------------------

/// Checks L and B against the hand-worked values and the tick rounding around them.
fn check_prices(inst: &Instrument, pos: &Position, margin: Money, liq: i64, bankrupt: i64) {
    let maint = pos.maint_margin(inst);
    assert_eq!(liquidation_price(inst, pos, margin), Some(Price(liq)));
    assert_eq!(bankruptcy_price(inst, pos, margin), Some(Price(bankrupt)));
    let safe = if pos.qty > 0 { 1 } else { -1 }; // one tick away from liquidation
    assert!(is_liquidatable(inst, pos, margin, Price(liq)));
    assert!(!is_liquidatable(inst, pos, margin, Price(liq + safe)));
    assert!(equity(inst, pos, margin, liq) < maint);
    assert!(equity(inst, pos, margin, liq + safe) >= maint);
    assert!(equity(inst, pos, margin, bankrupt) >= 0);
    assert!(equity(inst, pos, margin, bankrupt - safe) < 0);
}

#[test]
fn xbtusd_inverse_100x_and_10x() {
    let x = Instrument::xbtusd();
    // Long 10000 @ 10000 USD (20000 ticks), 100x. Unit value round(−1e8 · 2 / 20000) =
    // −10000, cost −100_000_000 (1 XBT).
    let long = open(&x, 10_000, 20_000, 10_000);
    assert_eq!(long.cost, -100_000_000);
    // posInit ⌈1% × 1e8⌉ = 1_000_000; posComm ⌈(1e8 + 1e6) × 0.075%⌉ = 75_750;
    // margin = 1_075_750; posMaint ⌈0.5% × 1e8⌉ + 75_750 = 575_750.
    let margin = long.init_margin(&x);
    assert_eq!((margin, long.maint_margin(&x)), (1_075_750, 575_750));
    // Liquidatable: 1_075_750 + 10000·u + 1e8 < 575_750 ⇔ u < −10050 ⇔ u ≤ −10051
    // ⇔ round(2e8 / t) ≥ 10051 ⇔ 2e8 / t ≥ 10050.5 ⇔ t ≤ 19899.5 → L = 19899 (9949.5 USD):
    // 2e8/19899 = 10050.76 → 10051 yes; 2e8/19900 = 10050.25 → 10050 no.
    // Bankrupt: 10000·u ≥ −101_075_750 ⇔ u ≥ −10107 ⇔ 2e8 / t < 10107.5 ⇔ t > 19787.3
    // → B = 19788 (9894 USD), rounded up: 2e8/19788 = 10107.14 → 10107 solvent; 19787 not.
    check_prices(&x, &long, margin, 19_899, 19_788);

    // Short 10000 @ 10000, 100x: cost +1e8, same margin fields.
    let short = open(&x, -10_000, 20_000, 10_000);
    assert_eq!((short.cost, short.init_margin(&x)), (100_000_000, 1_075_750));
    // Liquidatable: 1_075_750 + 10000·round(2e8/t) − 1e8 < 575_750 ⇔ u ≤ 9949
    // ⇔ 2e8 / t < 9949.5 ⇔ t > 20101.5 → L = 20102 (10051 USD).
    // Bankrupt: 10000·u ≥ 98_924_250 ⇔ u ≥ 9893 ⇔ 2e8 / t ≥ 9892.5 ⇔ t ≤ 20217.3
    // → B = 20217 (10108.5 USD), rounded down.
    check_prices(&x, &short, margin, 20_102, 20_217);

    // 10x: posInit 10% × 1e8 = 10_000_000; posComm ⌈1.1e8 × 0.075%⌉ = 82_500;
    // margin 10_082_500; posMaint 500_000 + 82_500 = 582_500.
    let long10 = open(&x, 10_000, 20_000, 1_000);
    let margin10 = long10.init_margin(&x);
    assert_eq!((margin10, long10.maint_margin(&x)), (10_082_500, 582_500));
    // Long L: 10000·u < −109_500_000 ⇔ u ≤ −10951 ⇔ 2e8/t ≥ 10950.5 ⇔ t ≤ 18264.02
    // → 18264 (9132 USD). B: u ≥ −11008.25 ⇔ u ≥ −11008 ⇔ 2e8/t < 11008.5 ⇔ t > 18167.8
    // → 18168 (9084 USD).
    check_prices(&x, &long10, margin10, 18_264, 18_168);
    // Short L: 10000·u < 90_500_000 ⇔ u ≤ 9049 ⇔ 2e8/t < 9049.5 ⇔ t > 22100.7 → 22101.
    // B: 10000·u ≥ 89_917_500 ⇔ u ≥ 8992 ⇔ 2e8/t ≥ 8991.5 ⇔ t ≤ 22243.2 → 22243.
    let short10 = open(&x, -10_000, 20_000, 1_000);
    check_prices(&x, &short10, margin10, 22_101, 22_243);

    // Cross margin: the liquidation price moves with the balance behind the position.
    // With 0.5 XBT more: long L: 10000·u < 575_750 − 51_075_750 − 1e8 ⇔ u ≤ −15051
    // ⇔ 2e8/t ≥ 15050.5 ⇔ t ≤ 13288.6 → 13288.
    assert_eq!(liquidation_price(&x, &long, margin + 50_000_000), Some(Price(13_288)));
}

#[test]
fn xbtusdt_linear_100x_and_10x() {
    let x = Instrument::xbtusdt();
    // Long 100000 contracts (0.1 XBT) @ 20000 USD = 40000 ticks: value = 100000 × 40000 / 2
    // = 2_000_000_000 USDt (2000 USDT). Value at t ticks: 50_000·t.
    let long = open(&x, 100_000, 40_000, 10_000);
    assert_eq!(long.cost, 2_000_000_000);
    // 100x: posInit 20_000_000; posComm ⌈2.02e9 × 0.075%⌉ = 1_515_000; margin 21_515_000;
    // posMaint 10_000_000 + 1_515_000 = 11_515_000.
    let margin = long.init_margin(&x);
    assert_eq!((margin, long.maint_margin(&x)), (21_515_000, 11_515_000));
    // L: 50000·t < 11_515_000 − 21_515_000 + 2e9 = 1.99e9 ⇔ t < 39800 exactly: at 39800 the
    // balance equals maintenance, not below, so L = 39799 (19899.5 USD).
    // B: 50000·t ≥ 2e9 − 21_515_000 = 1_978_485_000 ⇔ t ≥ 39569.7 → 39570 (19785 USD).
    check_prices(&x, &long, margin, 39_799, 39_570);
    let short = open(&x, -100_000, 40_000, 10_000);
    // Short: −50000·t < 11_515_000 − 21_515_000 − 2e9 ⇔ t > 40200 → L = 40201;
    // B: 50000·t ≤ 2_021_515_000 ⇔ t ≤ 40430.3 → 40430.
    check_prices(&x, &short, margin, 40_201, 40_430);

    // 10x: posInit 200_000_000; posComm ⌈2.2e9 × 0.075%⌉ = 1_650_000; margin 201_650_000;
    // posMaint 11_650_000.
    let long10 = open(&x, 100_000, 40_000, 1_000);
    let margin10 = long10.init_margin(&x);
    assert_eq!((margin10, long10.maint_margin(&x)), (201_650_000, 11_650_000));
    // L: 50000·t < 1_810_000_000 ⇔ t < 36200 → 36199. B: 50000·t ≥ 1_798_350_000
    // ⇔ t ≥ 35967 exactly → 35967 (the balance is exactly 0 there).
    check_prices(&x, &long10, margin10, 36_199, 35_967);
    assert_eq!(equity(&x, &long10, margin10, 35_967), 0);
    // Short L: −50000·t < −2_190_000_000 ⇔ t > 43800 → 43801. B: t ≤ 44033 → 44033.
    let short10 = open(&x, -100_000, 40_000, 1_000);
    check_prices(&x, &short10, margin10, 43_801, 44_033);

    // A flat position has neither price and is never liquidatable.
    let flat = Position::default();
    assert_eq!(liquidation_price(&x, &flat, 0), None);
    assert!(!is_liquidatable(&x, &flat, 0, Price(1)));
    // The division-free comparison on a cached mark value agrees.
    let mv = long.mark_value(&x, Price(39_799));
    assert!(below_maintenance(long.cost, margin, long.maint_margin(&x), mv));
}

// ---------------------------------------------------------------------------------------
// ADL
// ---------------------------------------------------------------------------------------

#[test]
fn adl_ranks_profit_times_leverage() {
    let x = Instrument::xbtusdt();
    let mark = Price(44_000); // 22000 USD; mark value of 100000 contracts = 2.2e9
    let cand = |account: u32, entry: i64, lev: u32| {
        let p = open(&x, 100_000, entry, lev);
        let m = p.init_margin(&x);
        AdlCandidate { account: AccountId(account), score: AdlScore::for_position(&x, &p, m, mark) }
    };
    // Account 7, 10x from 20000 USD: PNL% = 2e8 / 2e9 = 10%; B = 35967 (above), BV =
    // 1_798_350_000; effLev = 2.2e9 / 401_650_000 = 5.477; rank 0.5477.
    let a7 = cand(7, 40_000, 1_000);
    assert_eq!(a7.score, AdlScore::new(2_200_000_000, 2_000_000_000, 1_798_350_000));
    // Accounts 1 and 3, 100x from 20000: BV = 50000 × 39570 = 1_978_500_000,
    // effLev = 2.2e9 / 221_500_000 = 9.932; rank 0.9932 (a tie, broken by account id).
    let (a1, a3) = (cand(1, 40_000, 10_000), cand(3, 40_000, 10_000));
    // Account 5, 10x from 23000 USD (46000): cost 2.3e9, PNL% = −1e8 / 2.3e9 = −4.35%;
    // margin 2.3e8 + ⌈2.53e9 × 0.075%⌉ = 231_897_500; B: 50000·t ≥ 2_068_102_500 → 41363,
    // BV = 2_068_150_000; effLev = 2.2e9 / 131_850_000 = 16.69; rank −0.0435 / 16.69.
    let a5 = cand(5, 46_000, 1_000);
    assert_eq!(a5.score, AdlScore::new(2_200_000_000, 2_300_000_000, 2_068_150_000));
    let mut c = [a5, a3, a7, a1];
    sort_adl(&mut c);
    let order: Vec<u32> = c.iter().map(|c| c.account.0).collect();
    assert_eq!(order, [1, 3, 7, 5]);
    let lights: Vec<u8> = (0..4).map(|i| adl_indicator(i, 4)).collect();
    assert_eq!(lights, [5, 4, 3, 2]); // 5 − ⌊5i/4⌋
    assert!((a7.score.to_f64() - 0.5477).abs() < 1e-4);
    assert!((a5.score.to_f64() + 0.002606).abs() < 1e-5);
    // Exact where f64 is not: M/(M − 1) against (M + 1)/M for M = 1e17 (profit 1, cushion
    // 1): both are 1.0 as doubles, but M² > M² − 1, so the first ranks higher.
    let m: Money = 100_000_000_000_000_000;
    let hi = AdlScore::new(m, m - 1, m - 1);
    let lo = AdlScore::new(m + 1, m, m);
    assert_eq!(hi.to_f64(), lo.to_f64());
    assert_eq!(hi.cmp_value(&lo), core::cmp::Ordering::Greater);
    // Losses: −3 × 1 / (2 × 1) = −1.5 ranks below −4 × 1 / (3 × 1) = −1.33.
    let a = AdlScore::new(-1, 2, -2);
    let b = AdlScore::new(-1, 3, -2);
    assert_eq!(a.cmp_value(&b), core::cmp::Ordering::Less);
}

// ---------------------------------------------------------------------------------------
// Funding
// ---------------------------------------------------------------------------------------

#[test]
fn funding_rate_payments_and_residue() {
    let x = Instrument::xbtusd();
    // I = (0.06% − 0.03%) / 3 = 0.01%. Premium mean 0.03%: I − P = −0.02% within ±0.05%,
    // so F = I = 0.01%.
    let i = interest_rate(Rate(60_000), Rate(30_000), 8 * HOUR);
    assert_eq!(i, Rate(10_000));
    assert_eq!(funding_rate(Rate(30_000), i, None, &x), Rate(10_000));
    // P = 0.2%: I − P = −0.19% → clamp −0.05%: F = 0.15%.
    assert_eq!(funding_rate(Rate(200_000), i, None, &x), Rate(150_000));
    // P = 1%: F = 0.95% → capped at 75% × (1% − 0.5%) = 0.375%.
    assert_eq!(funding_caps(&x), (Rate(375_000), Rate(375_000)));
    assert_eq!(funding_rate(Rate(1_000_000), i, None, &x), Rate(375_000));
    // Previous −0.3%: the change is capped at 0.375%, so F ≤ 0.075%.
    assert_eq!(funding_rate(Rate(200_000), i, Some(Rate(-300_000)), &x), Rate(75_000));
    // Premium from the impact prices: bid 16 ticks over the mark on index 16000 = 0.1%.
    let p = premium_index(Some(Price(16_016)), Some(Price(16_020)), Price(16_000), Price(16_000));
    assert_eq!(p, Rate(100_000));

    // Inverse: long and short 10000 @ mark 10000 USD, |mark value| 1e8, F = 0.01%:
    // the long pays 10_000 XBt, the short receives it; nothing left over.
    let long = open(&x, 10_000, 20_000, 10_000);
    let mv = long.mark_value(&x, Price(20_000));
    assert_eq!(funding_payment(long.qty, mv, Rate(10_000)), -10_000);
    assert_eq!(funding_payment(-long.qty, -mv, Rate(10_000)), 10_000);
    // Negative F: shorts pay.
    assert_eq!(funding_payment(-long.qty, -mv, Rate(-10_000)), -10_000);
    assert_eq!(funding_payment(0, mv, Rate(10_000)), 0);

    // Linear, mark 40001 ticks (20000.5 USD), F = 0.01%: 11000 contracts are worth
    // 11000 × 40001 / 2 = 220_005_500 → 22000.55 → 22000; 22000 contracts 440_011_000
    // → 44001.1 → 44001.
    let u = Instrument::xbtusdt();
    let m = Price(40_001);
    let pay = |q: i64, f: i64| funding_payment(q, u.value(Qty(q), m), Rate(f));
    // Two longs of 11000 pay 22000 each; one short of 22000 receives 44001: the clearing
    // balance is 1 short, so the insurance fund pays the residue −1.
    let changes = [pay(11_000, 10_000), pay(11_000, 10_000), pay(-22_000, 10_000)];
    assert_eq!(changes, [-22_000, -22_000, 44_001]);
    assert_eq!(funding_residue(changes), -1);
    // Reversed roles: the long of 22000 pays 44001, the shorts receive 22000 each: +1.
    let changes = [pay(22_000, 10_000), pay(-11_000, 10_000), pay(-11_000, 10_000)];
    let mut c = FundingClearing::default();
    changes.iter().for_each(|&w| c.add(w));
    assert_eq!((c.paid(), c.received(), c.residue()), (44_001, 44_000, 1));
    // The audit: Σ wallet changes + residue = 0.
    assert_eq!(changes.iter().sum::<Money>() + c.residue(), 0);
}

// ---------------------------------------------------------------------------------------
// Settlement
// ---------------------------------------------------------------------------------------

#[test]
fn settlement_is_the_30_minute_twap_before_expiry() {
    let day = 20_000 * 24 * HOUR; // some midnight
    let expiry = Timestamp(day + 12 * HOUR);
    let mut twap = IndexTwap::new(MIN);
    twap.observe(Timestamp(day + 11 * HOUR), Price(20_000));
    twap.observe(Timestamp(day + 11 * HOUR + 40 * MIN + 30 * SEC), Price(20_060));
    // A spike in the last second and a print at expiry itself are in no sample: the
    // 11:59 sample was fixed at 20060 before 11:59:59, and 12:00 is outside [11:30, 12:00).
    twap.observe(Timestamp(expiry.0 - SEC), Price(30_000));
    twap.observe(expiry, Price(40_000));
    // Samples 11:30 … 11:40 (11) at 20000, 11:41 … 11:59 (19) at 20060:
    // (11 × 20000 + 19 × 20060) / 30 = 601140 / 30 = 20038.
    assert_eq!(twap.twap(expiry, 30 * MIN), Some(Twap { price: Price(20_038), samples: 30 }));
    // An expiry with no index observed: no settlement price.
    assert_eq!(IndexTwap::new(MIN).twap(expiry, 30 * MIN), None);
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

fn instrument(i: u8) -> Instrument {
    match i % 3 {
        0 => Instrument::xbtusd(),
        1 => Instrument::ethusd(),
        _ => Instrument::xbtusdt(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A constituent more than the bound (× 1.5 … 3) away from ≥ 3 consistent others is
    /// ignored: the index equals the index without it.
    #[test]
    fn index_ignores_a_jumping_constituent(
        base in 10_000i64..1_000_000,
        bound in 1_000_000i64..=20_000_000,
        offsets in prop::collection::vec(-1_000i64..=1_000, 3..=6),
        jump in 1_500i64..=3_000,
        up in any::<bool>(),
        weights in prop::collection::vec(1u32..=100, 7),
    ) {
        let k = offsets.len();
        let w = &weights[..=k];
        let cfg = IndexConfig::new(w, 60 * SEC, Rate(bound), 3, Price(1 << 40));
        let (mut with, mut without) =
            (CompositeIndex::new(cfg).unwrap(), CompositeIndex::new(cfg).unwrap());
        let t = Timestamp(0);
        for (i, o) in offsets.iter().enumerate() {
            // Others within ±bound/4 of the base (offset/1000 of bound/4).
            let p = base + (base as i128 * bound as i128 * *o as i128 / 4_000 / 100_000_000) as i64;
            with.on_price(i, Price(p), t).unwrap();
            without.on_price(i, Price(p), t).unwrap();
        }
        // The jumper moves by (1.5 … 3) × bound.
        let d = (base as i128 * bound as i128 * jump as i128 / 1_000 / 100_000_000) as i64;
        let jp = if up { base + d } else { base - d };
        with.on_price(k, Price(jp), t).unwrap();
        let (a, _) = with.compute(t);
        let (b, _) = without.compute(t);
        prop_assert_eq!(a.outliers, 1 << k);
        prop_assert_eq!(a.used_count() as usize, k);
        prop_assert_eq!(a.price, b.price);
        prop_assert!(a.price.is_some());
    }

    /// L ≥ B for a long (≤ for a short); L is liquidatable and one tick on the safe side is
    /// not; B is solvent and one tick beyond is not.
    #[test]
    fn liquidation_and_bankruptcy_prices_are_exact(
        inst in 0u8..3,
        long in any::<bool>(),
        lots in 1i64..=2_000,
        entry in 10_000i64..=400_000,
        lev in 100u32..=10_000,
        extra_pm in 0i64..=1_000,
    ) {
        let x = instrument(inst);
        let q = lots * x.lot.0 * if long { 1 } else { -1 };
        let pos = open(&x, q, entry, lev);
        // Isolated margin plus up to 100% of |cost| more (a cross balance).
        let margin = pos.init_margin(&x) + (pos.cost.unsigned_abs() as i128 * extra_pm as i128
            / 1_000) as i64;
        let maint = pos.maint_margin(&x);
        let safe = if long { 1 } else { -1 };
        let max = x.max_price.0;
        let liq = liquidation_price(&x, &pos, margin);
        let bank = bankruptcy_price(&x, &pos, margin);
        if let Some(Price(l)) = liq {
            prop_assert!(is_liquidatable(&x, &pos, margin, Price(l)));
            prop_assert!(equity(&x, &pos, margin, l) < maint);
            let s = l + safe;
            if (1..=max).contains(&s) {
                prop_assert!(!is_liquidatable(&x, &pos, margin, Price(s)));
            }
        }
        if let Some(Price(b)) = bank {
            prop_assert!(equity(&x, &pos, margin, b) >= 0);
            let s = b - safe;
            if (1..=max).contains(&s) {
                prop_assert!(equity(&x, &pos, margin, s) < 0);
            }
        }
        if let (Some(l), Some(b)) = (liq, bank) {
            if long { prop_assert!(l >= b) } else { prop_assert!(l <= b) }
        }
    }

    /// The division-free linear test agrees with the value-based one at any mark.
    #[test]
    fn liquidation_test_matches_the_value_rule(
        inst in 0u8..3,
        q in -2_000_000i64..=2_000_000,
        entry in 1i64..=2_000_000,
        mark in 1i64..=2_000_000,
        margin in -1_000_000_000i64..=1_000_000_000,
    ) {
        let x = instrument(inst);
        prop_assume!(q != 0);
        let pos = open(&x, q, entry, 0);
        let maint = pos.maint_margin(&x);
        let expected = below_maintenance(pos.cost, margin, maint, pos.mark_value(&x, Price(mark)));
        prop_assert_eq!(is_liquidatable(&x, &pos, margin, Price(mark)), expected);
    }

    /// Right at the boundary (margin balance = maintenance + delta, values often rounded
    /// from an exact half): liquidatable exactly when delta < 0.
    #[test]
    fn liquidation_test_at_the_boundary(
        inst in 0u8..3,
        q in -2_000_000i64..=2_000_000,
        entry in 1i64..=2_000_000,
        mark in 1i64..=2_000_000,
        delta in -2i64..=2,
    ) {
        let x = instrument(inst);
        prop_assume!(q != 0);
        let pos = open(&x, q, entry, 0);
        let maint = pos.maint_margin(&x);
        let margin = maint + pos.cost - pos.mark_value(&x, Price(mark)) + delta;
        prop_assert_eq!(is_liquidatable(&x, &pos, margin, Price(mark)), delta < 0);
    }

    /// The funding rate always respects both caps (for a previous rate within the caps).
    #[test]
    fn funding_rate_within_caps(
        inst in 0u8..3,
        p in -5_000_000i64..=5_000_000,
        i in -100_000i64..=100_000,
        prev in prop::option::of(-375_000i64..=375_000),
    ) {
        let x = instrument(inst);
        let (abs, chg) = funding_caps(&x);
        let prev = prev.map(|v| Rate(v.clamp(-abs.0, abs.0)));
        let f = funding_rate(Rate(p), Rate(i), prev, &x);
        prop_assert!(f.0.abs() <= abs.0);
        if let Some(pr) = prev {
            prop_assert!((f.0 - pr.0).abs() <= chg.0);
        }
        // Σ wallet changes + residue = 0 for any split of one market.
        let changes = [funding_payment(7, 123_456_789, f), funding_payment(-7, -123_456_788, f)];
        prop_assert_eq!(changes.iter().sum::<Money>() + funding_residue(changes), 0);
    }
}
