//! The clock-driven risk lifecycle, with numbers worked by hand: funding through the
//! clearing entry, the composite index, fair-price marks, dated-future settlement at the
//! 30-minute index TWAP, and margin transfers.
//!
//! Units: XBTUSD (market 0) and XBTUSDT (market 2) prices are ticks of 0.5 USD, so 20000
//! ticks = 10000.0 USD. Inverse value = qty × round(−2e8 / ticks) XBt; linear value =
//! round(qty × ticks / 2) USDt (half away from zero). Rates are in 1e-8 (10_000 = 0.01%).
//!
//! The harness starts its clock at 2026-01-01T00:00:00Z (`T0`), a multiple of 8 h, so the
//! BitMEX funding times are T0 + 4 h, + 12 h, + 20 h. `run_at` stamps a command at exactly
//! `T0 + t` (the harness adds 1 ms before each command).

use amdahl_engine::testkit::{Harness, limit};
use amdahl_engine::{EngineConfig, FundingParams, Lifecycle};
use amdahl_ledger::Entry;
use amdahl_risk::Instrument;
use amdahl_risk::fair::MarkMethod;
use amdahl_risk::index::IndexConfig;
use amdahl_types::{
    AccountId, CancelReason, Command, Currency, Event, Leverage, MarketId, Price, Qty, Rate,
    RejectReason, Side, Timestamp,
};

const XBT: Currency = Currency::XBt;
const USDT: Currency = Currency::USDt;
const ONE_XBT: i64 = 100_000_000;

const T0: i64 = 1_767_225_600_000_000_000;
const MS: i64 = 1_000_000;
const SEC: i64 = 1_000_000_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

const M0: MarketId = MarketId(0);
const M2: MarketId = MarketId(2);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Apply `command` stamped at exactly `T0 + t` (the clock never moves backwards).
fn run_at(h: &mut Harness, t: i64, command: Command) -> Vec<Event> {
    let stamp = T0 + t - MS;
    assert!(stamp >= h.time.0, "run_at({t}) would move the clock backwards");
    h.time = Timestamp(stamp);
    let ev = h.run(command);
    assert!(!h.engine.is_halted(), "engine halted: {:?}", h.engine.halt_evidence());
    ev
}

fn tick_at(h: &mut Harness, t: i64) -> Vec<Event> {
    run_at(h, t, Command::Tick)
}

fn index_price(market: MarketId, source: u8, price: i64) -> Command {
    Command::IndexPrice { market, source, price: Price(price) }
}

/// Equal-or-given weights, outlier bound 10%, refuse prices above 2,000,000 ticks.
fn index_cfg(weights: &[u32], stale_after_ns: i64, min_constituents: usize) -> IndexConfig {
    IndexConfig::new(weights, stale_after_ns, Rate(10_000_000), min_constituents, Price(2_000_000))
}

fn wallet(h: &Harness, a: u32, c: Currency) -> i64 {
    h.engine.ledger().wallet(AccountId(a), c)
}

fn insurance(h: &Harness, c: Currency) -> i64 {
    h.engine.ledger().balance(Entry::Insurance, c)
}

fn clearing(h: &Harness, c: Currency) -> i64 {
    h.engine.ledger().balance(Entry::Clearing, c)
}

fn rejected(ev: &[Event]) -> Option<RejectReason> {
    ev.iter().find_map(|e| match *e {
        Event::Rejected { reason, .. } => Some(reason),
        _ => None,
    })
}

/// `(account, amount, rate)` of every `FundingPaid`, in event order.
fn funding_paid(ev: &[Event]) -> Vec<(u32, i64, i64)> {
    ev.iter()
        .filter_map(|e| match *e {
            Event::FundingPaid { account, amount, rate, .. } => Some((account.0, amount, rate.0)),
            _ => None,
        })
        .collect()
}

/// `(rate, next)` of every `FundingRate`, in event order.
fn funding_rates(ev: &[Event]) -> Vec<(i64, i64)> {
    ev.iter()
        .filter_map(|e| match *e {
            Event::FundingRate { rate, next, .. } => Some((rate.0, next.0)),
            _ => None,
        })
        .collect()
}

fn marks(ev: &[Event], market: MarketId) -> Vec<i64> {
    ev.iter()
        .filter_map(|e| match *e {
            Event::MarkChanged { market: m, price, .. } if m == market => Some(price.0),
            _ => None,
        })
        .collect()
}

fn index_changes(ev: &[Event]) -> Vec<i64> {
    ev.iter()
        .filter_map(|e| match *e {
            Event::IndexChanged { price, .. } => Some(price.0),
            _ => None,
        })
        .collect()
}

fn liquidated(ev: &[Event]) -> Option<(u32, i64, i64)> {
    ev.iter().find_map(|e| match *e {
        Event::Liquidated { account, qty, price, .. } => Some((account.0, qty, price.0)),
        _ => None,
    })
}

fn qty_cost(h: &Harness, a: u32, m: MarketId) -> (i64, i64) {
    let p = h.engine.position(AccountId(a), m);
    (p.qty, p.cost)
}

// ---------------------------------------------------------------------------------------
// 1. Funding
// ---------------------------------------------------------------------------------------

const A: u32 = 0;
const B: u32 = 1;
const C: u32 = 2;
const D: u32 = 3;

/// XBTUSD as a perpetual: a 3-venue index (equal weights, stale after a day, 2 needed),
/// external marks (`Command::Mark`), BitMEX XBTUSD funding (8 h, I = 0.01%, impact
/// notional 1 XBT, a premium sample a minute). Five accounts with 10 XBT; fund 1 XBT.
fn perpetual(mark: Option<MarkMethod>) -> Harness {
    let mut cfg = EngineConfig::reference(5);
    cfg.insurance_fund = [ONE_XBT, ONE_XBT];
    cfg.markets[0].lifecycle = Lifecycle {
        index: Some(index_cfg(&[1, 1, 1], DAY, 2)),
        mark,
        funding: Some(FundingParams::bitmex_xbtusd()),
        expiry: None,
        basis: None,
    };
    let mut h = Harness::new(&cfg);
    for a in 0..5 {
        h.deposit(a, XBT, 10 * ONE_XBT);
    }
    h
}

#[test]
fn funding_longs_pay_then_shorts_pay_with_the_residue_in_the_fund() {
    let mut h = perpetual(None);
    // Mark 7500.0 USD (15000 ticks): unit = round(−2e8 / 15000 = −13333.33) = −13333.
    h.mark(0, 15_000);
    // A buys 1000 from B (300) and C (700), all at 15000.
    h.run(Command::Place(limit(B, 0, Side::Sell, 300, 15_000)));
    h.run(Command::Place(limit(C, 0, Side::Sell, 700, 15_000)));
    h.run(Command::Place(limit(A, 0, Side::Buy, 1000, 15_000)));
    // Costs: A 1000 × −13333 = −13,333,000; B −(300 × −13333) = +3,999,900; C +9,333,100.
    assert_eq!(qty_cost(&h, A, M0), (1000, -13_333_000));
    assert_eq!(qty_cost(&h, B, M0), (-300, 3_999_900));
    assert_eq!(qty_cost(&h, C, M0), (-700, 9_333_100));

    // The first lifecycle step announces the interest rate for the 04:00 funding:
    // I = (0.06% − 0.03%) × 8 h / 24 h = 0.01% = 10_000. One venue of the needed two: held.
    let ev = h.run(index_price(M0, 0, 15_000));
    assert_eq!(funding_rates(&ev), vec![(10_000, T0 + 4 * HOUR)]);
    assert!(ev.iter().any(|e| matches!(e, Event::IndexHeld { usable: 1, required: 2, .. })));
    h.run(index_price(M0, 1, 15_000));
    h.run(index_price(M0, 2, 15_000));
    assert_eq!(h.engine.index_price(M0), Some(Price(15_000)));
    assert_eq!(h.engine.funding(M0), Some((Rate(10_000), Timestamp(T0 + 4 * HOUR))));

    // D quotes below the mark: bid 7500 @ 14985, ask 7500 @ 14990. Both fill the 1 XBT
    // impact notional: 7500 × round(2e8/14985 = 13346.7) = 7500 × 13347 = 100,102,500 and
    // 7500 × round(2e8/14990 = 13342.2) = 7500 × 13342 = 100,065,000 ≥ 100,000,000.
    // Premium sample: (max(0, 14985 − 15000) − max(0, 15000 − 14990)) / 15000
    //   = −10 / 15000 = −0.000666667 → −66_667 (half away from zero).
    h.run(Command::Place(limit(D, 0, Side::Buy, 7500, 14_985)));
    h.run(Command::Place(limit(D, 0, Side::Sell, 7500, 14_990)));
    tick_at(&mut h, HOUR); // a sample at 01:00
    let ev = tick_at(&mut h, 4 * HOUR - MS); // one tick early: nothing is paid
    assert!(funding_paid(&ev).is_empty() && funding_rates(&ev).is_empty());

    // 04:00: every position pays or receives trunc(|mark value| × 0.01%), longs pay.
    //   A pays trunc(13,333,000 × 0.0001 = 1333.3) = 1333
    //   B receives trunc(3,999,900 × 0.0001 = 399.99) = 399
    //   C receives trunc(9,333,100 × 0.0001 = 933.31) = 933
    // Residue: 1333 − (399 + 933) = +1 to the insurance fund.
    // Next rate: P = mean(−66_667, −66_667) = −66_667 (the samples at 01:00 and 04:00);
    //   F = P + clamp(I − P = 76_667, ±50_000) = −66_667 + 50_000 = −16_667; within the
    //   caps |F| ≤ 75% × (1% − 0.5%) = 375_000 and |F − 10_000| ≤ 75% × 0.5% = 375_000.
    let (wa, wb, wc) = (wallet(&h, A, XBT), wallet(&h, B, XBT), wallet(&h, C, XBT));
    let fund = insurance(&h, XBT);
    let ev = tick_at(&mut h, 4 * HOUR);
    assert_eq!(funding_paid(&ev), vec![(A, -1333, 10_000), (B, 399, 10_000), (C, 933, 10_000)]);
    assert_eq!(funding_rates(&ev), vec![(-16_667, T0 + 12 * HOUR)]);
    assert_eq!(wallet(&h, A, XBT), wa - 1333);
    assert_eq!(wallet(&h, B, XBT), wb + 399);
    assert_eq!(wallet(&h, C, XBT), wc + 933);
    assert_eq!(insurance(&h, XBT), fund + 1);
    assert_eq!(clearing(&h, XBT), 0);
    h.engine.audit_full().unwrap();

    // 12:00: F = −0.016667%, shorts pay longs.
    //   B pays trunc(3,999,900 × 16_667 / 1e8 = 666.663) = 666
    //   C pays trunc(9,333,100 × 16_667 / 1e8 = 1555.548) = 1555
    //   A receives trunc(13,333,000 × 16_667 / 1e8 = 2222.211) = 2222
    // Residue: (666 + 1555) − 2222 = −1: the fund pays 1.
    // Next: the window 04:00–12:00 has one sample (12:00), −66_667 again: F = −16_667.
    let (wa, wb, wc) = (wallet(&h, A, XBT), wallet(&h, B, XBT), wallet(&h, C, XBT));
    let fund = insurance(&h, XBT);
    let ev = tick_at(&mut h, 12 * HOUR);
    assert_eq!(
        funding_paid(&ev),
        vec![(B, -666, -16_667), (C, -1555, -16_667), (A, 2222, -16_667)]
    );
    assert_eq!(funding_rates(&ev), vec![(-16_667, T0 + 20 * HOUR)]);
    assert_eq!(wallet(&h, A, XBT), wa + 2222);
    assert_eq!(wallet(&h, B, XBT), wb - 666);
    assert_eq!(wallet(&h, C, XBT), wc - 1555);
    assert_eq!(insurance(&h, XBT), fund - 1);
    assert_eq!(clearing(&h, XBT), 0);
    // D holds no position and neither pays nor receives.
    assert!(funding_paid(&h.events).iter().all(|&(a, _, _)| a != D));
    h.engine.audit_full().unwrap();
}

#[test]
fn funding_rate_is_capped_in_size_and_in_change() {
    let mut h = perpetual(None);
    h.mark(0, 15_000);
    for s in 0..3 {
        h.run(index_price(M0, s, 15_000));
    }
    // A deep discount: bid 7000 @ 13990, ask 7000 @ 14000 (7000 × round(2e8/14000 = 14285.7)
    // = 100,002,000 and 7000 × round(14295.9) = 100,072,000 fill the impact notional).
    // P = −(15000 − 14000) / 15000 = −0.0666667 → −6_666_667.
    h.run(Command::Place(limit(D, 0, Side::Buy, 7000, 13_990)));
    h.run(Command::Place(limit(D, 0, Side::Sell, 7000, 14_000)));
    // 04:00: F = P + clamp(I − P, ±0.05%) = −6_666_667 + 50_000 = −6_616_667; the size cap
    // allows [−375_000, 375_000], the change cap from the previous 10_000 allows
    // [−365_000, 385_000]: F = −365_000.
    let ev = tick_at(&mut h, 4 * HOUR);
    assert_eq!(funding_rates(&ev), vec![(-365_000, T0 + 12 * HOUR)]);
    // 12:00: same premium; from −365_000 the change cap allows [−740_000, 10_000], the size
    // cap [−375_000, 375_000]: F = −375_000.
    let ev = tick_at(&mut h, 12 * HOUR);
    assert_eq!(funding_rates(&ev), vec![(-375_000, T0 + 20 * HOUR)]);
    // Nobody holds a position: nothing is paid, nothing moves.
    assert!(funding_paid(&h.events).is_empty());
    h.engine.audit_full().unwrap();
}

// ---------------------------------------------------------------------------------------
// 2. The composite index
// ---------------------------------------------------------------------------------------

#[test]
fn index_excludes_stale_and_outliers_holds_and_resumes() {
    // Four venues, weights 1, 2, 3, 4; stale after 60 s; outlier bound 10%; 3 needed.
    let mut cfg = EngineConfig::reference(2);
    cfg.markets[0].lifecycle.index = Some(index_cfg(&[1, 2, 3, 4], 60 * SEC, 3));
    let mut h = Harness::new(&cfg);
    let at = |s: i64, ms: i64| s * SEC + ms * MS;

    // t = 1 s: venues report 20000, 20010, 20020, 20030.
    let ev = run_at(&mut h, at(1, 0), index_price(M0, 0, 20_000));
    assert!(ev.iter().any(|e| matches!(e, Event::IndexHeld { usable: 1, required: 3, .. })));
    let ev = run_at(&mut h, at(1, 1), index_price(M0, 1, 20_010));
    assert!(index_changes(&ev).is_empty()); // still held, no second IndexHeld
    assert!(!ev.iter().any(|e| matches!(e, Event::IndexHeld { .. })));
    // Three venues: (20000 + 2 × 20010 + 3 × 20020) / 6 = 120080 / 6 = 20013.33 → 20013.
    let ev = run_at(&mut h, at(1, 2), index_price(M0, 2, 20_020));
    assert!(ev.iter().any(|e| matches!(e, Event::IndexResumed { price: Price(20_013), .. })));
    assert_eq!(index_changes(&ev), vec![20_013]);
    // Four: (20000 + 40020 + 60060 + 4 × 20030) / 10 = 200200 / 10 = 20020.
    let ev = run_at(&mut h, at(1, 3), index_price(M0, 3, 20_030));
    assert_eq!(index_changes(&ev), vec![20_020]);

    // t = 10 s: venue 3 crashes 18% (20030 × 0.82 = 16424.6 → 16424). The median of the
    // others is 20010 and |16424 − 20010| = 3586 > 10% × 20010: an outlier, ignored.
    // The index is the three others again: 20013 (no hold).
    let ev = run_at(&mut h, at(10, 0), index_price(M0, 3, 16_424));
    assert_eq!(index_changes(&ev), vec![20_013]);
    assert!(!ev.iter().any(|e| matches!(e, Event::IndexHeld { .. })));

    // t = 30 s: venues 1 and 2 refresh, venue 3 recovers to 20040:
    // (20000 + 40020 + 60060 + 4 × 20040) / 10 = 200240 / 10 = 20024.
    run_at(&mut h, at(30, 0), index_price(M0, 1, 20_010));
    run_at(&mut h, at(30, 1), index_price(M0, 2, 20_020));
    let ev = run_at(&mut h, at(30, 2), index_price(M0, 3, 20_040));
    assert_eq!(index_changes(&ev), vec![20_024]);

    // Venue 0 last reported at 1 s. At 61 s it is exactly 60 s old: still fresh.
    let ev = tick_at(&mut h, at(61, 0));
    assert!(index_changes(&ev).is_empty());
    // At 61.001 s it is stale: (2 × 20010 + 3 × 20020 + 4 × 20040) / 9 = 180240 / 9
    //   = 20026.67 → 20027.
    let ev = tick_at(&mut h, at(61, 1));
    assert_eq!(index_changes(&ev), vec![20_027]);
    assert_eq!(h.engine.index_price(M0), Some(Price(20_027)));

    // t = 80 s: venues 1 and 2 move to 20012 and 20022.
    // After venue 1: (40024 + 60060 + 80160) / 9 = 180244 / 9 = 20027.1 → 20027, no change.
    // After venue 2: (40024 + 60066 + 80160) / 9 = 180250 / 9 = 20027.8 → 20028.
    let ev = run_at(&mut h, at(80, 0), index_price(M0, 1, 20_012));
    assert!(index_changes(&ev).is_empty());
    let ev = run_at(&mut h, at(80, 1), index_price(M0, 2, 20_022));
    assert_eq!(index_changes(&ev), vec![20_028]);

    // Venue 3 last reported at 30.002 s: stale after 90.002 s. Two venues left of the three
    // needed: the index holds 20028.
    let ev = tick_at(&mut h, at(90, 3));
    assert!(ev.iter().any(|e| matches!(e, Event::IndexHeld { usable: 2, required: 3, .. })));
    assert!(index_changes(&ev).is_empty());
    assert_eq!(h.engine.index_price(M0), Some(Price(20_028)));
    let ev = tick_at(&mut h, at(95, 0)); // still held: no second event
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(h.engine.index_price(M0), Some(Price(20_028)));

    // t = 100 s: venue 0 reports 19990 (median of the others 20017: not an outlier).
    // (19990 + 2 × 20012 + 3 × 20022) / 6 = 120080 / 6 = 20013.3 → 20013, resumed.
    let ev = run_at(&mut h, at(100, 0), index_price(M0, 0, 19_990));
    assert!(ev.iter().any(|e| matches!(e, Event::IndexResumed { price: Price(20_013), .. })));
    assert_eq!(index_changes(&ev), vec![20_013]);

    // Refused constituent prices change nothing.
    let hash = h.engine.state_hash();
    let ev = run_at(&mut h, at(101, 0), index_price(M0, 4, 20_000));
    assert_eq!(rejected(&ev), Some(RejectReason::UnknownConstituent));
    let ev = run_at(&mut h, at(101, 1), index_price(M0, 0, 0));
    assert_eq!(rejected(&ev), Some(RejectReason::PriceNotPositive));
    let ev = run_at(&mut h, at(101, 2), index_price(M0, 0, 2_000_001));
    assert_eq!(rejected(&ev), Some(RejectReason::PriceTooLarge));
    // A market without a composite index has no constituents.
    let ev = run_at(&mut h, at(101, 3), index_price(MarketId(1), 0, 40_000));
    assert_eq!(rejected(&ev), Some(RejectReason::UnknownConstituent));
    assert_eq!(h.engine.state_hash(), hash);
    assert_eq!(h.engine.index_price(M0), Some(Price(20_013)));
    h.engine.audit_full().unwrap();
}

#[test]
fn single_source_index_needs_the_explicit_flag() {
    let mut cfg = EngineConfig::reference(2);
    cfg.markets[0].lifecycle.index = Some(index_cfg(&[1, 2, 3], 60 * SEC, 2));
    cfg.validate().unwrap();
    // One constituent.
    let mut one = index_cfg(&[1], 60 * SEC, 1);
    cfg.markets[0].lifecycle.index = Some(one);
    let err = cfg.validate().unwrap_err();
    assert!(err.contains("single_source"), "{err}");
    one.single_source = true;
    cfg.markets[0].lifecycle.index = Some(one);
    cfg.validate().unwrap();
    // …and the index says so in its status, with the one constituent it used.
    let mut h = Harness::new(&cfg);
    run_at(&mut h, SEC, index_price(M0, 0, 20_000));
    let status = h.engine.index_status(M0).expect("computed");
    assert!(status.single_source);
    assert_eq!((status.price, status.used), (Some(Price(20_000)), 0b1));
    // Three constituents of which one suffices.
    let mut min_one = index_cfg(&[1, 1, 1], 60 * SEC, 1);
    cfg.markets[0].lifecycle.index = Some(min_one);
    assert!(cfg.validate().unwrap_err().contains("single_source"));
    min_one.single_source = true;
    cfg.markets[0].lifecycle.index = Some(min_one);
    cfg.validate().unwrap();
    // Fair-price marking needs an index at all.
    cfg.markets[0].lifecycle =
        Lifecycle { mark: Some(MarkMethod::FairPrice), ..Lifecycle::default() };
    assert!(cfg.validate().is_err());
}

// ---------------------------------------------------------------------------------------
// 3. Fair-price marking
// ---------------------------------------------------------------------------------------

#[test]
fn fair_price_mark_follows_time_to_funding() {
    let mut h = perpetual(Some(MarkMethod::FairPrice));
    // mark = index × (1 + F × t_left / 8 h), rounded half away from zero; index 20000,
    // F = 0.01% until the 04:00 funding: mark = 20000 + 2 × t_left / 8 h.
    let ev = run_at(&mut h, SEC, index_price(M0, 0, 20_000));
    assert_eq!(funding_rates(&ev), vec![(10_000, T0 + 4 * HOUR)]);
    assert!(marks(&ev, M0).is_empty()); // no index yet (1 of 2 venues)
    // t_left = 4 h − 1.001 s: 20000 + 2 × 14398.999 / 28800 = 20000.99993 → 20001.
    let ev = run_at(&mut h, SEC + MS, index_price(M0, 1, 20_000));
    assert_eq!(marks(&ev, M0), vec![20_001]);
    let ev = run_at(&mut h, SEC + 2 * MS, index_price(M0, 2, 20_000));
    assert!(marks(&ev, M0).is_empty());
    let expect = [
        // (time, mark, changed?)
        (HOUR, 20_001, false),          // 3 h left: 20000.75 → 20001
        (2 * HOUR, 20_001, false),      // 2 h left: 20000.5 exactly → 20001 (half away)
        (2 * HOUR + MS, 20_000, true),  // a hair under 20000.5 → 20000
        (3 * HOUR, 20_000, false),      // 1 h left: 20000.25 → 20000
        (4 * HOUR, 20_002, true),       // funded; next F = 0.01%, 8 h left: 20002
        (8 * HOUR, 20_001, true),       // 4 h left: 20001
        (10 * HOUR, 20_001, false),     // 2 h left: 20000.5 → 20001
        (10 * HOUR + MS, 20_000, true), // → 20000
        (12 * HOUR, 20_002, true),      // funded again, F = 0.01%: 20002
    ];
    for (t, mark, changed) in expect {
        let ev = tick_at(&mut h, t);
        assert_eq!(h.engine.mark(M0), Price(mark), "mark at T0 + {t} ns");
        let want = if changed { vec![mark] } else { vec![] };
        assert_eq!(marks(&ev, M0), want, "mark events at T0 + {t} ns");
    }
    // No book, so every premium sample is 0 and F = 0 + clamp(I − 0) = I = 0.01%.
    assert_eq!(h.engine.funding(M0), Some((Rate(10_000), Timestamp(T0 + 20 * HOUR))));
    h.engine.audit_full().unwrap();
}

#[test]
fn fair_price_mark_liquidates_across_the_liquidation_price() {
    // A 100x isolated long of 10,000 at 10000.0 (see tests/liquidation.rs): cost
    // −100,000,000, margin 1,075,750, posMaint 575,750; liquidation price 19899 (at 19900
    // the margin balance is exactly 575,750, not below), bankruptcy price 19788.
    const VICTIM: u32 = 0;
    const SHORT: u32 = 1;
    let mut h = perpetual(Some(MarkMethod::FairPrice));
    for s in 0..3 {
        run_at(&mut h, SEC + s as i64 * MS, index_price(M0, s, 20_000));
    }
    assert_eq!(h.engine.mark(M0), Price(20_001));
    h.run(Command::SetLeverage {
        account: AccountId(VICTIM),
        market: M0,
        leverage: Leverage(10_000),
    });
    h.run(Command::Place(limit(SHORT, 0, Side::Sell, 10_000, 20_000)));
    h.run(Command::Place(limit(VICTIM, 0, Side::Buy, 10_000, 20_000)));
    assert_eq!(qty_cost(&h, VICTIM, M0), (10_000, -100_000_000));
    assert_eq!(h.engine.bankruptcy_price(AccountId(VICTIM), M0), Some(Price(19_788)));

    // 03:00, one hour to funding: mark = index × (1 + 0.0001 × 1/8) = index × 1.0000125.
    let ev = tick_at(&mut h, 3 * HOUR);
    assert_eq!(marks(&ev, M0), vec![20_000]);
    // The venues fall to 19900: index 19900 → mark 19900.249 → 19900 = L + 1: safe.
    // (Intermediate: (19900 + 40000)/3 = 19966.7 → 19967, then 59800/3 = 19933.3 → 19933.)
    let mut ev = Vec::new();
    for s in 0..3 {
        ev.extend(run_at(&mut h, 3 * HOUR + SEC + s as i64 * MS, index_price(M0, s, 19_900)));
    }
    assert_eq!(marks(&ev, M0), vec![19_967, 19_933, 19_900]);
    assert_eq!(liquidated(&ev), None);
    // Venue 0 at 19899: (19899 + 39800)/3 = 19899.67 → 19900, the mark stays.
    let ev = run_at(&mut h, 3 * HOUR + 2 * SEC, index_price(M0, 0, 19_899));
    assert!(marks(&ev, M0).is_empty());
    // Venue 1 at 19899: 59698/3 = 19899.33 → 19899 → mark 19899.249 → 19899 = L: the
    // re-margin queues the victim and the liquidation engine takes it over at 19788.
    let ev = run_at(&mut h, 3 * HOUR + 3 * SEC, index_price(M0, 1, 19_899));
    assert_eq!(marks(&ev, M0), vec![19_899]);
    assert_eq!(liquidated(&ev), Some((VICTIM, 10_000, 19_788)));
    assert_eq!(h.engine.position(AccountId(VICTIM), M0).qty, 0);
    assert_eq!(h.engine.position(h.engine.liquidator(), M0).qty, 10_000);
    h.engine.audit_full().unwrap();
}

// ---------------------------------------------------------------------------------------
// 4. Dated futures
// ---------------------------------------------------------------------------------------

/// Market 0: XBTUSD expiring at 01:00; market 2: XBTUSDT with lot 1 expiring at 01:00.
/// Both fair-price marked (a future with no basis feed: mark = index), each on its own
/// 3-venue index (stale after 2 h, 2 needed). Fund: 1 XBT and 1 USDT.
fn dated() -> Harness {
    let life = Lifecycle {
        index: Some(index_cfg(&[1, 1, 1], 2 * HOUR, 2)),
        mark: Some(MarkMethod::FairPrice),
        funding: None,
        expiry: Some(Timestamp(T0 + HOUR)),
        basis: None,
    };
    let mut cfg = EngineConfig::reference(5);
    cfg.insurance_fund = [ONE_XBT, 1_000_000];
    cfg.markets[0].lifecycle = life.clone();
    let mut linear = Instrument::xbtusdt();
    linear.lot = Qty(1);
    cfg.markets[2].instrument = linear;
    cfg.markets[2].lifecycle = life;
    let mut h = Harness::new(&cfg);
    for a in 0..5 {
        h.deposit(a, XBT, ONE_XBT);
        h.deposit(a, USDT, 100_000_000);
    }
    h
}

#[test]
fn dated_future_settles_at_the_30_minute_twap() {
    let mut h = dated();
    let mut t = SEC;
    for m in [M0, M2] {
        for s in 0..3 {
            run_at(&mut h, t, index_price(m, s, 20_000));
            t += MS;
        }
    }
    assert_eq!(h.engine.index_price(M0), Some(Price(20_000)));
    assert_eq!(h.engine.index_price(M2), Some(Price(20_000)));

    // XBTUSD: A buys 600 from B at 20000 (unit −10000) and 400 from C at 20010
    // (unit round(−2e8/20010 = −9995.0) = −9995): A's cost −6,000,000 − 3,998,000.
    h.run(Command::Place(limit(B, 0, Side::Sell, 600, 20_000)));
    h.run(Command::Place(limit(C, 0, Side::Sell, 400, 20_010)));
    h.run(Command::Place(limit(A, 0, Side::Buy, 1000, 20_010)));
    assert_eq!(qty_cost(&h, A, M0), (1000, -9_998_000));
    assert_eq!(qty_cost(&h, B, M0), (-600, 6_000_000));
    assert_eq!(qty_cost(&h, C, M0), (-400, 3_998_000));
    // XBTUSDT: C sells 2000 at 20000 to A (999) and B (1001): values 999 × 10000 =
    // 9,990,000 and 10,010,000.
    h.run(Command::Place(limit(C, 2, Side::Sell, 2000, 20_000)));
    h.run(Command::Place(limit(A, 2, Side::Buy, 999, 20_000)));
    h.run(Command::Place(limit(B, 2, Side::Buy, 1001, 20_000)));
    assert_eq!(qty_cost(&h, A, M2), (999, 9_990_000));
    assert_eq!(qty_cost(&h, B, M2), (1001, 10_010_000));
    assert_eq!(qty_cost(&h, C, M2), (-2000, -20_000_000));
    // Working orders the settlement must cancel.
    h.run(Command::Place(limit(D, 0, Side::Buy, 500, 19_900)));
    h.run(Command::Place(limit(D, 0, Side::Sell, 500, 20_100)));
    h.run(Command::Place(limit(D, 2, Side::Buy, 1000, 19_900)));

    // 00:39:30: every venue moves to 20301 (about +1.5%, not an outlier).
    let mut t = 39 * MIN + 30 * SEC;
    for m in [M0, M2] {
        for s in 0..3 {
            run_at(&mut h, t, index_price(m, s, 20_301));
            t += MS;
        }
    }
    assert_eq!(h.engine.mark(M0), Price(20_301));
    assert_eq!(h.engine.mark(M2), Price(20_301));

    // One tick before expiry: nothing settles.
    let ev = tick_at(&mut h, HOUR - MS);
    assert!(!ev.iter().any(|e| matches!(e, Event::Settled { .. })));
    assert!(!h.engine.is_settled(M0) && !h.engine.is_settled(M2));

    // The TWAP: one sample per minute in [00:30, 01:00), the index in force at each:
    // 00:30 … 00:39 → 20000 (10 samples), 00:40 … 00:59 → 20301 (20 samples):
    //   (10 × 20000 + 20 × 20301) / 30 = 606020 / 30 = 20200.67 → 20201.
    //
    // XBTUSD at 20201: unit = round(−2e8/20201 = −9900.49998) = −9900.
    //   A sells 1000: value −9,900,000; realises −9,900,000 − (−9,998,000) = +98,000
    //     (1000 × (9998 − 9900))
    //   B buys 600: value −5,940,000; realises 5,940,000 − 6,000,000 = −60,000
    //   C buys 400: value −3,960,000; realises 3,960,000 − 3,998,000 = −38,000
    //   The liquidation engine buys 1000 (cost −9,900,000) and sells 600 + 400 at the same
    //   unit: it realises 0 and ends flat.
    // XBTUSDT at 20201 (value round(qty × 20201 / 2)):
    //   A sells 999: round(10,090,399.5) = 10,090,400; realises 10,090,400 − 9,990,000
    //     = +100,400
    //   B sells 1001: round(10,110,600.5) = 10,110,601; realises +100,601
    //   C buys 2000: 20,201,000 exactly; realises 20,000,000 − 20,201,000 = −201,000
    //   The liquidation engine bought for 10,090,400 + 10,110,601 = 20,201,001 and sold for
    //   20,201,000: it realises −1, which the insurance fund absorbs.
    let w0: Vec<(i64, i64)> = (0..4).map(|a| (wallet(&h, a, XBT), wallet(&h, a, USDT))).collect();
    let (fund_x, fund_u) = (insurance(&h, XBT), insurance(&h, USDT));
    let ev = tick_at(&mut h, HOUR);

    let settled: Vec<(u32, u16, i64, i64)> = ev
        .iter()
        .filter_map(|e| match *e {
            Event::SettledPosition { account, market, qty, price, .. } => {
                Some((account.0, market.0, qty, price.0))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        settled,
        vec![
            (A, 0, 1000, 20_201),
            (B, 0, -600, 20_201),
            (C, 0, -400, 20_201),
            (A, 2, 999, 20_201),
            (B, 2, 1001, 20_201),
            (C, 2, -2000, 20_201),
        ]
    );
    let closed: Vec<(u16, i64)> = ev
        .iter()
        .filter_map(|e| match *e {
            Event::Settled { market, price, .. } => Some((market.0, price.0)),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![(0, 20_201), (2, 20_201)]);
    let cancels = ev
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::OrderCanceled {
                    reason: CancelReason::Settlement,
                    account: AccountId(D),
                    ..
                }
            )
        })
        .count();
    assert_eq!(cancels, 3);
    assert_eq!(h.engine.open_orders(), 0);
    let realised: Vec<(u32, u16, i64)> = ev
        .iter()
        .filter_map(|e| match *e {
            Event::Realised { account, market, amount, .. } => Some((account.0, market.0, amount)),
            _ => None,
        })
        .collect();
    let liq = h.engine.liquidator().0;
    assert_eq!(
        realised,
        vec![
            (A, 0, 98_000),
            (B, 0, -60_000),
            (C, 0, -38_000),
            (A, 2, 100_400),
            (B, 2, 100_601),
            (C, 2, -201_000),
            (liq, 2, -1),
        ]
    );
    assert_eq!(wallet(&h, A, XBT), w0[0].0 + 98_000);
    assert_eq!(wallet(&h, B, XBT), w0[1].0 - 60_000);
    assert_eq!(wallet(&h, C, XBT), w0[2].0 - 38_000);
    assert_eq!(wallet(&h, A, USDT), w0[0].1 + 100_400);
    assert_eq!(wallet(&h, B, USDT), w0[1].1 + 100_601);
    assert_eq!(wallet(&h, C, USDT), w0[2].1 - 201_000);
    assert_eq!(wallet(&h, D, XBT), w0[3].0);
    assert_eq!(insurance(&h, XBT), fund_x);
    assert_eq!(insurance(&h, USDT), fund_u - 1);
    for m in [M0, M2] {
        assert!(h.engine.is_settled(m));
        assert_eq!(h.engine.mark(m), Price(20_201));
        for a in 0..=h.engine.liquidator().0 {
            assert_eq!(h.engine.position(AccountId(a), m).qty, 0, "account {a}");
        }
    }
    h.engine.audit_full().unwrap();

    // The markets are closed.
    let ev = h.run(Command::Place(limit(A, 0, Side::Buy, 100, 20_000)));
    assert_eq!(rejected(&ev), Some(RejectReason::MarketClosed));
    let ev = h.run(Command::Place(limit(B, 2, Side::Sell, 10, 20_300)));
    assert_eq!(rejected(&ev), Some(RejectReason::MarketClosed));
    let ev =
        h.run(Command::SetLeverage { account: AccountId(A), market: M0, leverage: Leverage(1000) });
    assert_eq!(rejected(&ev), Some(RejectReason::MarketClosed));
    // Later ticks and venue prices do not settle again.
    let ev = tick_at(&mut h, HOUR + MIN);
    assert!(ev.is_empty(), "{ev:?}");
    // The other markets still trade.
    let ev = h.run(Command::Place(limit(A, 1, Side::Buy, 10, 40_000)));
    assert_eq!(rejected(&ev), None);
    h.engine.audit_full().unwrap();
}

// ---------------------------------------------------------------------------------------
// 5. TransferMargin
// ---------------------------------------------------------------------------------------

const VICTIM: u32 = 0;
const SHORT: u32 = 1;
const BIDDER: u32 = 2;

/// External marks; VICTIM holds a 100x isolated long of 10,000 XBTUSD at 10000.0:
/// cost −100,000,000, posInit 1,000,000 + posComm 75,750 = margin 1,075,750, posMaint
/// 575,750; wallet 100,000,000 − 75,000 (taker fee) = 99,925,000; available
/// 99,925,000 − 1,075,750 = 98,849,250. SHORT (cross) holds the other side.
fn isolated_long() -> Harness {
    let mut cfg = EngineConfig::reference(4);
    cfg.insurance_fund = [ONE_XBT, ONE_XBT];
    let mut h = Harness::new(&cfg);
    for a in 0..4 {
        h.deposit(a, XBT, ONE_XBT);
    }
    h.run(Command::SetLeverage {
        account: AccountId(VICTIM),
        market: M0,
        leverage: Leverage(10_000),
    });
    h.run(Command::Place(limit(SHORT, 0, Side::Sell, 10_000, 20_000)));
    h.run(Command::Place(limit(VICTIM, 0, Side::Buy, 10_000, 20_000)));
    assert_eq!(qty_cost(&h, VICTIM, M0), (10_000, -100_000_000));
    assert_eq!(h.engine.position_margin(AccountId(VICTIM), M0), 1_075_750);
    assert_eq!(h.engine.available(AccountId(VICTIM), XBT), 98_849_250);
    h
}

fn transfer(account: u32, market: MarketId, amount: i64) -> Command {
    Command::TransferMargin { account: AccountId(account), market, amount }
}

#[test]
fn transfer_margin_moves_the_bankruptcy_and_liquidation_prices() {
    let mut h = isolated_long();
    let victim = AccountId(VICTIM);
    assert_eq!(h.engine.bankruptcy_price(victim, M0), Some(Price(19_788)));

    // In: 1,000,000. Margin 2,075,750. Bankruptcy: the lowest tick with
    // 2,075,750 + 10,000 × unit − (−100,000,000) ≥ 0, i.e. |unit| ≤ 10207:
    //   19594: round(2e8/19594 = 10207.2) = 10207 ✓; 19593: round(10207.7) = 10208 ✗.
    let ev = h.run(transfer(VICTIM, M0, 1_000_000));
    assert!(ev.iter().any(|e| matches!(e, Event::MarginTransferred { amount: 1_000_000, .. })));
    assert_eq!(h.engine.position_margin(victim, M0), 2_075_750);
    assert_eq!(h.engine.bankruptcy_price(victim, M0), Some(Price(19_594)));
    assert_eq!(h.engine.available(victim, XBT), 97_849_250);
    // Before the transfer 19899 liquidated; now 19800 (unit 10101: margin balance
    // 2,075,750 − 1,010,000 = 1,065,750 ≥ 575,750) does not.
    let ev = h.mark(0, 19_800);
    assert_eq!(liquidated(&ev), None);

    // Out: 400,000 of the 1,000,000. Margin 1,675,750.
    // Bankruptcy: |unit| ≤ 10167 (10,000 × 10167 = 101,670,000 ≤ 101,675,750):
    //   19671: round(10167.25) = 10167 ✓; 19670: round(10167.77) = 10168 ✗.
    // Liquidation: margin balance < 575,750 ⇔ 10,000 × |unit| > 101,100,000 ⇔ |unit| ≥ 10111:
    //   19781: round(10110.71) = 10111 ✓; 19782: round(10110.2) = 10110 (exactly 575,750).
    let ev = h.run(transfer(VICTIM, M0, -400_000));
    assert!(ev.iter().any(|e| matches!(e, Event::MarginTransferred { amount: -400_000, .. })));
    assert_eq!(h.engine.position_margin(victim, M0), 1_675_750);
    assert_eq!(h.engine.bankruptcy_price(victim, M0), Some(Price(19_671)));
    assert_eq!(liquidated(&h.mark(0, 19_782)), None);
    let ev = h.mark(0, 19_781);
    assert_eq!(liquidated(&ev), Some((VICTIM, 10_000, 19_671)));
    // The victim lost exactly the margin that backed the position (fee already paid):
    // closing at 19671 realises 10,000 × (10000 − 10167) = −1,670,000.
    assert_eq!(wallet(&h, VICTIM, XBT), ONE_XBT - 75_000 - 1_670_000);
    h.engine.audit_full().unwrap();
}

#[test]
fn refused_transfers_leave_the_state_unchanged() {
    let mut h = isolated_long();
    h.run(transfer(VICTIM, M0, 1_000_000));
    let available = h.engine.available(AccountId(VICTIM), XBT);
    assert_eq!(available, 97_849_250);
    let cases = [
        // More out than was transferred in.
        (transfer(VICTIM, M0, -1_000_001), RejectReason::InvalidTransfer),
        (transfer(VICTIM, M0, 0), RejectReason::InvalidTransfer),
        // A cross position has no isolated margin to move.
        (transfer(SHORT, M0, 1_000), RejectReason::InvalidTransfer),
        (transfer(SHORT, M0, -1_000), RejectReason::InvalidTransfer),
        // One unit more than the available balance.
        (transfer(VICTIM, M0, available + 1), RejectReason::InsufficientAvailableBalance),
        (transfer(VICTIM, MarketId(9), 1_000), RejectReason::UnknownMarket),
        (transfer(99, M0, 1_000), RejectReason::UnknownAccount),
    ];
    for (command, reason) in cases {
        let hash = h.engine.state_hash();
        let ev = h.run(command);
        assert_eq!(ev.len(), 1, "{command:?}: {ev:?}");
        assert_eq!(rejected(&ev), Some(reason), "{command:?}");
        assert_eq!(h.engine.state_hash(), hash, "{command:?}");
        assert_eq!(h.engine.position_margin(AccountId(VICTIM), M0), 2_075_750);
    }
    // The whole available balance can go in, and all of it back out.
    h.run(transfer(VICTIM, M0, available));
    assert_eq!(h.engine.available(AccountId(VICTIM), XBT), 0);
    h.run(transfer(VICTIM, M0, -(available + 1_000_000)));
    assert_eq!(h.engine.position_margin(AccountId(VICTIM), M0), 1_075_750);
    assert_eq!(h.engine.available(AccountId(VICTIM), XBT), 98_849_250);
    h.engine.audit_full().unwrap();
}

#[test]
fn transfer_out_that_would_liquidate_is_refused() {
    // API.md §9: isolated margin "can be added or removed via transferMargin (not below the
    // initial margin)"; a leverage change the position cannot carry is refused with
    // WouldLiquidate. With 1,000,000 transferred in and the mark at 19800 (unit 10101:
    // unrealised 10,000 × (10000 − 10101) = −1,010,000), taking the 1,000,000 back out
    // leaves 1,075,750 − 1,010,000 = 65,750 < posMaint 575,750: the command itself would
    // liquidate the position. It must be refused, and change nothing.
    let mut h = isolated_long();
    h.run(transfer(VICTIM, M0, 1_000_000));
    assert_eq!(liquidated(&h.mark(0, 19_800)), None);
    // 400,000 can come out: 1,675,750 − 1,010,000 = 665,750 ≥ 575,750.
    let ev = h.run(transfer(VICTIM, M0, -400_000));
    assert_eq!(rejected(&ev), None);
    // The remaining 600,000 cannot.
    let hash = h.engine.state_hash();
    let ev = h.run(transfer(VICTIM, M0, -600_000));
    assert_eq!(liquidated(&ev), None, "the transfer liquidated its own position");
    assert!(
        matches!(rejected(&ev), Some(RejectReason::WouldLiquidate | RejectReason::InvalidTransfer)),
        "{ev:?}"
    );
    assert_eq!(h.engine.state_hash(), hash);
    assert_eq!(h.engine.position_margin(AccountId(VICTIM), M0), 1_675_750);
}

#[test]
fn accepted_transfer_changes_the_state_hash() {
    // The hash is "a canonical encoding of all state" that two engines must agree on; the
    // margin transferred into a position decides its liquidation, so it must be in it.
    let mut h = isolated_long();
    let before = h.engine.state_hash();
    let ev = h.run(transfer(VICTIM, M0, 1_000_000));
    assert!(ev.iter().any(|e| matches!(e, Event::MarginTransferred { .. })));
    assert_eq!(h.engine.position_margin(AccountId(VICTIM), M0), 2_075_750);
    assert_ne!(h.engine.state_hash(), before, "transferred margin is not in the state hash");
}

#[test]
fn margin_transferred_in_does_not_outlive_the_position() {
    // Transfer 50,000,000 into the isolated long, close it, withdraw, reopen small: the
    // reopened position must not be backed by margin the wallet no longer holds.
    let mut h = isolated_long();
    h.run(transfer(VICTIM, M0, 50_000_000));
    assert_eq!(h.engine.available(AccountId(VICTIM), XBT), 48_849_250);
    // Close: BIDDER bids 10,000 @ 20000, the victim sells into it (taker fee 75,000 again).
    h.run(Command::Place(limit(BIDDER, 0, Side::Buy, 10_000, 20_000)));
    h.run(Command::Place(limit(VICTIM, 0, Side::Sell, 10_000, 20_000)));
    assert_eq!(h.engine.position(AccountId(VICTIM), M0).qty, 0);
    assert_eq!(wallet(&h, VICTIM, XBT), ONE_XBT - 150_000);
    // Flat: everything is available again, and 99,000,000 can be withdrawn.
    assert_eq!(h.engine.available(AccountId(VICTIM), XBT), 99_850_000);
    let ev =
        h.run(Command::Withdraw { account: AccountId(VICTIM), currency: XBT, amount: 99_000_000 });
    assert_eq!(rejected(&ev), None);
    assert_eq!(wallet(&h, VICTIM, XBT), 850_000);
    // Reopen 500 @ 20000 (value 5,000,000; order margin 50,000 + 7,500 ≤ 850,000).
    h.run(Command::Place(limit(SHORT, 0, Side::Sell, 500, 20_000)));
    let ev = h.run(Command::Place(limit(VICTIM, 0, Side::Buy, 500, 20_000)));
    assert_eq!(rejected(&ev), None);
    assert_eq!(h.engine.position(AccountId(VICTIM), M0).qty, 500);
    // posInit 50,000 + posComm ⌈5,050,000 × 0.00075⌉ = 3,788: margin 53,788. The wallet
    // (850,000 − 3,750 fee = 846,250) must back it; the old 50,000,000 must be gone.
    let margin = h.engine.position_margin(AccountId(VICTIM), M0);
    let wallet_now = wallet(&h, VICTIM, XBT);
    assert_eq!(wallet_now, 846_250);
    assert!(h.engine.available(AccountId(VICTIM), XBT) >= 0, "available went negative");
    assert!(margin <= wallet_now, "isolated margin {margin} > wallet {wallet_now}");
    assert_eq!(margin, 53_788);
}

// ---------------------------------------------------------------------------------------
// Rounding residues against an empty insurance fund, and the state hash
// ---------------------------------------------------------------------------------------

#[test]
fn funding_residue_with_an_empty_fund_does_not_halt_the_engine() {
    // `EngineConfig::reference` starts every insurance fund at 0. Two longs pay one short:
    // at mark 15000 (unit 13333) and F = 0.01%,
    //   B (long 300) pays trunc(399.99) = 399, C (long 700) pays trunc(933.31) = 933,
    //   A (short 1000) is owed trunc(1333.3) = 1333: one unit more than was paid in.
    // A 1-satoshi truncation residue must not stop the exchange.
    let mut cfg = EngineConfig::reference(5);
    cfg.markets[0].lifecycle = Lifecycle {
        index: Some(index_cfg(&[1, 1, 1], DAY, 2)),
        mark: None,
        funding: Some(FundingParams::bitmex_xbtusd()),
        expiry: None,
        basis: None,
    };
    let mut h = Harness::new(&cfg);
    for a in 0..5 {
        h.deposit(a, XBT, 10 * ONE_XBT);
    }
    h.mark(0, 15_000);
    h.run(Command::Place(limit(B, 0, Side::Buy, 300, 15_000)));
    h.run(Command::Place(limit(C, 0, Side::Buy, 700, 15_000)));
    h.run(Command::Place(limit(A, 0, Side::Sell, 1000, 15_000)));
    for s in 0..3 {
        h.run(index_price(M0, s, 15_000));
    }
    assert_eq!(insurance(&h, XBT), 0);
    h.time = Timestamp(T0 + 4 * HOUR - MS);
    let ev = h.run(Command::Tick);
    let paid = funding_paid(&ev);
    assert_eq!(paid[..2], [(B, -399, 10_000), (C, -933, 10_000)]);
    assert!(!ev.iter().any(|e| matches!(e, Event::Halted { .. })), "{ev:?}");
    assert!(!h.engine.is_halted(), "{:?}", h.engine.halt_evidence());
    assert_eq!(clearing(&h, XBT), 0);
    h.engine.audit_full().unwrap();
}

#[test]
fn linear_settlement_residue_with_an_empty_fund_does_not_halt_the_engine() {
    // XBTUSDT (lot 1) expiring at 01:00 with the index at 20001 throughout: TWAP 20001.
    // A and B (long 999 and 1001) sell to the liquidation engine for round(999 × 20001 / 2
    // = 9,990,499.5) = 9,990,500 and round(10,010,500.5) = 10,010,501; C (short 2000) buys
    // back for 20,001,000. The liquidation engine is left with −1 for the insurance fund,
    // which holds 0 USDt.
    let life = Lifecycle {
        index: Some(index_cfg(&[1, 1, 1], 2 * HOUR, 2)),
        mark: Some(MarkMethod::FairPrice),
        funding: None,
        expiry: Some(Timestamp(T0 + HOUR)),
        basis: None,
    };
    let mut cfg = EngineConfig::reference(5);
    let mut linear = Instrument::xbtusdt();
    linear.lot = Qty(1);
    cfg.markets[2].instrument = linear;
    cfg.markets[2].lifecycle = life;
    let mut h = Harness::new(&cfg);
    for a in 0..5 {
        h.deposit(a, USDT, 100_000_000);
    }
    for s in 0..3 {
        h.run(index_price(M2, s, 20_001));
    }
    h.run(Command::Place(limit(C, 2, Side::Sell, 2000, 20_000)));
    h.run(Command::Place(limit(A, 2, Side::Buy, 999, 20_000)));
    h.run(Command::Place(limit(B, 2, Side::Buy, 1001, 20_000)));
    assert_eq!(insurance(&h, USDT), 0);
    h.time = Timestamp(T0 + HOUR - MS);
    let ev = h.run(Command::Tick);
    assert!(ev.iter().any(|e| matches!(e, Event::Settled { price: Price(20_001), .. })));
    assert!(!ev.iter().any(|e| matches!(e, Event::Halted { .. })), "{ev:?}");
    assert!(!h.engine.is_halted(), "{:?}", h.engine.halt_evidence());
    h.engine.audit_full().unwrap();
}

#[test]
fn state_hash_covers_the_index_constituents() {
    // Two engines whose venues report the same prices in a different venue order have the
    // same index, (20000 + 20010 + 20020) / 3 = 20010, but different futures: once venue 0
    // is stale, one index is (20010 + 20020) / 2 = 20015, the other (20000 + 20020) / 2 =
    // 20010. The state hash, which topologies compare, must tell them apart.
    let mut cfg = EngineConfig::reference(2);
    cfg.markets[0].lifecycle.index = Some(index_cfg(&[1, 1, 1], 60 * SEC, 2));
    let feed = |prices: [i64; 3]| {
        let mut h = Harness::new(&cfg);
        run_at(&mut h, SEC, index_price(M0, 0, prices[0]));
        run_at(&mut h, 30 * SEC, index_price(M0, 1, prices[1]));
        run_at(&mut h, 30 * SEC + MS, index_price(M0, 2, prices[2]));
        h
    };
    let mut one = feed([20_000, 20_010, 20_020]);
    let mut two = feed([20_010, 20_000, 20_020]);
    assert_eq!(one.engine.index_price(M0), Some(Price(20_010)));
    assert_eq!(two.engine.index_price(M0), Some(Price(20_010)));
    let (hash_one, hash_two) = (one.engine.state_hash(), two.engine.state_hash());
    tick_at(&mut one, 62 * SEC);
    tick_at(&mut two, 62 * SEC);
    assert_eq!(one.engine.index_price(M0), Some(Price(20_015)));
    assert_eq!(two.engine.index_price(M0), Some(Price(20_010)));
    assert_ne!(hash_one, hash_two, "different index constituents, same state hash");
}

/// A dated future marks at the index plus its smoothed fair basis (API.md §10).
#[test]
fn dated_future_marks_at_the_fair_basis_from_impact_prices() {
    use amdahl_engine::BasisParams;
    const YEAR: i64 = 365 * DAY;
    let expiry = T0 + 2 * YEAR;
    let mut index = index_cfg(&[1], MIN, 1);
    index.single_source = true;
    let mut cfg = EngineConfig::reference(4);
    cfg.markets[0].lifecycle = Lifecycle {
        index: Some(index),
        mark: Some(MarkMethod::FairPrice),
        funding: None,
        expiry: Some(Timestamp(expiry)),
        basis: Some(BasisParams {
            alpha: Rate(50_000_000),
            max_abs: Rate(100_000_000),
            sample_every_ns: 30 * SEC,
            impact_notional: ONE_XBT,
        }),
    };
    let mut h = Harness::new(&cfg);
    for a in 0..4 {
        h.deposit(a, XBT, 10 * ONE_XBT);
    }
    // Impact prices for 1 XBT: 20,000 contracts ≈ 2 XBT on each side, so the first level
    // fills the notional: impact bid 20100, impact ask 20110 (spread 10 ticks: 2·10·1e8 <
    // max(MM × (20100 + 20110), 6·1e8) = 2.01e10, so the sample counts).
    h.run(Command::Place(limit(1, 0, Side::Buy, 20_000, 20_100)));
    h.run(Command::Place(limit(2, 0, Side::Sell, 20_000, 20_110)));
    // The index (and the first basis sample) arrives a quarter-year before expiry.
    let at = expiry - YEAR / 4 - T0;
    let ev = run_at(&mut h, at, index_price(M0, 0, 20_000));
    // sample = (20100 + 20110 − 2·20000) × year × 1e8 / (2·20000 × year/4)
    //        = 210 × 4 × 1e8 / 40000 = 2,100,000 (2.1% a year; the first sample seeds it).
    // mark = 20000 × (1 + 0.021 × 1/4) = 20000 × 1.00525 = 20105 (the impact mid).
    let seq = amdahl_types::Seq(h.seq);
    assert!(ev.contains(&Event::MarkChanged { seq, market: M0, price: Price(20_105) }));
    assert_eq!(h.engine.mark(M0), Price(20_105));
    h.engine.audit_full().unwrap();
}
