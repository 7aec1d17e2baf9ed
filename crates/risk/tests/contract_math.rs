//! Hand-worked checks of the contract math, fees, margins and position accounting.
//! Every expected number is derived in the comment next to it (API.md §8–9).

use amdahl_risk::{ContractKind, Instrument, Position, TickSize};
use amdahl_types::{Leverage, Money, Price, Qty, Rate, Side};

fn v(inst: &Instrument, qty: i64, ticks: i64) -> Money {
    inst.value(Qty(qty), Price(ticks))
}

/// Applies a fill and checks the per-fill double entry:
/// cost change − wallet credit = side.sign() × value.
fn fill(pos: &mut Position, inst: &Instrument, side: Side, qty: i64, ticks: i64) -> Money {
    let value = v(inst, qty, ticks);
    let before = pos.cost;
    let credit = pos.apply_fill(side, Qty(qty), value);
    assert_eq!(pos.cost - before - credit, side.sign() * value, "double entry");
    credit
}

// ---------------------------------------------------------------- values

#[test]
fn inverse_values_match_captures() {
    let x = Instrument::xbtusd();
    // 1 @ 6360.5 = 12721 ticks: −1e8 × 2 / 12721 = −15722.033 → −15722.
    assert_eq!(v(&x, 1, 12721), -15722);
    // 5000 @ 6379 = 12758 ticks: −2e8 / 12758 = −15676.44 → −15676; × 5000 = −78,380,000.
    assert_eq!(v(&x, 5000, 12758), -78_380_000);
    // The unit is rounded BEFORE multiplying: 5000 × −15676.44 would be −78,382,191.
    assert_ne!(v(&x, 5000, 12758), -78_382_191);
    // 100 @ 10000 = 20000 ticks: −2e8 / 20000 = −10000 exactly; × 100 = −1,000,000.
    assert_eq!(v(&x, 100, 20000), -1_000_000);
    // A sell-side (negative) qty: +15722.
    assert_eq!(v(&x, -1, 12721), 15722);
    assert_eq!(v(&x, 0, 12721), 0);
}

#[test]
fn inverse_unit_rounds_half_away_from_zero() {
    let x = Instrument::xbtusd();
    // 512 USD = 1024 ticks: −2e8 / 1024 = −195312.5 → −195313 (away from zero).
    assert_eq!(v(&x, 1, 1024), -195_313);
    assert_eq!(v(&x, -1, 1024), 195_313);
    // 11000 USD = 22000 ticks: −2e8 / 22000 = −9090.909 → −9091.
    assert_eq!(v(&x, 1, 22000), -9091);
    // 9000 USD = 18000 ticks: −2e8 / 18000 = −11111.11 → −11111.
    assert_eq!(v(&x, 1, 18000), -11111);
}

#[test]
fn quanto_values() {
    let e = Instrument::ethusd();
    // 1 @ 200 USD = 4000 ticks of 1/20: 1 × 100 × 4000 / 20 = 20,000 XBt
    // (= 200 × 0.000001 XBT, API.md §8).
    assert_eq!(v(&e, 1, 4000), 20_000);
    // 3 @ 200.05 = 4001 ticks: 3 × 100 × 4001 / 20 = 60,015.
    assert_eq!(v(&e, 3, 4001), 60_015);
    // 1 @ 0.05 = 1 tick: 100 / 20 = 5.
    assert_eq!(v(&e, 1, 1), 5);
    assert_eq!(v(&e, -7, 4001), -7 * 20_005);
}

#[test]
fn linear_values() {
    let u = Instrument::xbtusdt();
    // 1000 @ 20933 = 41866 ticks: 1000 × 1 × 41866 / 2 = 20,933,000 USDt (testnet fill).
    assert_eq!(v(&u, 1000, 41866), 20_933_000);
    // 1000 @ 20933.5 = 41867 ticks: 41,867,000 / 2 = 20,933,500.
    assert_eq!(v(&u, 1000, 41867), 20_933_500);
    // 1 @ 0.5 = 1 tick: 0.5 → 1 (half away); −1 → −1; 3 → 1.5 → 2.
    assert_eq!(v(&u, 1, 1), 1);
    assert_eq!(v(&u, -1, 1), -1);
    assert_eq!(v(&u, 3, 1), 2);
    assert_eq!(v(&u, -3, 1), -2);
}

#[test]
fn checked_value_reports_overflow_and_bad_price() {
    let u = Instrument::xbtusdt();
    assert_eq!(u.checked_value(Qty(1000), Price(41866)), Some(20_933_000));
    assert_eq!(u.checked_value(Qty(1), Price(0)), None);
    assert_eq!(u.checked_value(Qty(1), Price(-2)), None);
    // i64::MAX × 2e6 / 2 does not fit in i64.
    assert_eq!(u.checked_value(Qty(i64::MAX), Price(2_000_000)), None);
}

#[test]
#[should_panic(expected = "overflows")]
fn value_overflow_panics() {
    Instrument::xbtusdt().value(Qty(i64::MAX), Price(2_000_000));
}

#[test]
#[should_panic(expected = "not positive")]
fn value_at_zero_price_panics() {
    Instrument::xbtusd().value(Qty(1), Price(0));
}

// ---------------------------------------------------------------- fees

#[test]
fn fees_truncate_toward_zero_with_the_rate_sign() {
    let x = Instrument::xbtusd();
    // taker 0.075%: 15722 × 75000 / 1e8 = 11.79 → 11; the value's sign does not matter.
    assert_eq!(x.fee(15722, x.taker_fee), 11);
    assert_eq!(x.fee(-15722, x.taker_fee), 11);
    // API.md's 0.000675 example: 15722 × 67500 / 1e8 = 10.61 → 10.
    assert_eq!(x.fee(-15722, Rate(67_500)), 10);
    // maker −0.025%: 15722 × 25000 / 1e8 = 3.93 → rebate −3 (truncated toward zero).
    assert_eq!(x.fee(15722, x.maker_fee), -3);
    assert_eq!(x.fee(-15722, x.maker_fee), -3);
    // 78,380,000 × 0.075% = 58,785 exactly; maker rebate 78,380,000 × 0.025% = −19,595.
    assert_eq!(x.fee(-78_380_000, x.taker_fee), 58_785);
    assert_eq!(x.fee(78_380_000, x.maker_fee), -19_595);
    // 133 × 0.075% = 0.09975 → 0; zero value → 0.
    assert_eq!(x.fee(133, x.taker_fee), 0);
    assert_eq!(x.fee(0, x.maker_fee), 0);
    // XBTUSDT maker −0.01%: 20,933,000 × 10000 / 1e8 = −2093.3 → −2093.
    let u = Instrument::xbtusdt();
    assert_eq!(u.fee(20_933_000, u.maker_fee), -2093);
}

// ---------------------------------------------------------------- margin rates

#[test]
fn init_rate_from_leverage() {
    let x = Instrument::xbtusd();
    // cross → base 1%.
    assert_eq!(x.init_rate(Leverage::CROSS), Rate(1_000_000));
    // 100x = 10000 hundredths: ⌈1e10 / 10000⌉ = 1,000,000 = base.
    assert_eq!(x.init_rate(Leverage(10_000)), Rate(1_000_000));
    // 10x: ⌈1e10 / 1000⌉ = 10,000,000 (10%).
    assert_eq!(x.init_rate(Leverage(1_000)), Rate(10_000_000));
    // 3x: 1e10 / 300 = 33,333,333.33 → 33,333,334 (rounded up).
    assert_eq!(x.init_rate(Leverage(300)), Rate(33_333_334));
    // 1.5x: 1e10 / 150 = 66,666,666.67 → 66,666,667.
    assert_eq!(x.init_rate(Leverage(150)), Rate(66_666_667));
    // 1x → 100%.
    assert_eq!(x.init_rate(Leverage(100)), Rate(100_000_000));
    // above 100x → base.
    assert_eq!(x.init_rate(Leverage(20_000)), Rate(1_000_000));
    // ETHUSD base 2%: 100x and 50x give the base; 25x gives 4%.
    let e = Instrument::ethusd();
    assert_eq!(e.init_rate(Leverage(10_000)), Rate(2_000_000));
    assert_eq!(e.init_rate(Leverage(5_000)), Rate(2_000_000));
    assert_eq!(e.init_rate(Leverage(2_500)), Rate(4_000_000));
    assert_eq!(e.init_rate(Leverage::CROSS), Rate(2_000_000));
}

#[test]
fn order_margin_examples() {
    let x = Instrument::xbtusd();
    // API.md §9, Buy 1 @ 6360.5, |value| 15722, cross:
    // ⌈1% × 15722⌉ = ⌈157.22⌉ = 158; ⌈2 × 0.075% × 15722⌉ = ⌈23.583⌉ = 24; 182.
    assert_eq!(x.order_margin(15722, Leverage::CROSS), 182);
    // 10x: ⌈10% × 15722⌉ = ⌈1572.2⌉ = 1573; + 24 = 1597.
    assert_eq!(x.order_margin(15722, Leverage(1_000)), 1597);
    assert_eq!(x.order_margin(0, Leverage::CROSS), 0);
    // 1 XBt still needs ⌈0.01⌉ + ⌈0.0015⌉ = 2.
    assert_eq!(x.order_margin(1, Leverage::CROSS), 2);
}

#[test]
fn price_band_is_inclusive_and_exact() {
    let x = Instrument::xbtusd();
    // mark 10000 ticks, band 10%: |p − 10000| × 1e8 ≤ 1e7 × 10000 ⇔ |p − 10000| ≤ 1000.
    assert!(x.within_band(Price(11_000), Price(10_000)));
    assert!(!x.within_band(Price(11_001), Price(10_000)));
    assert!(x.within_band(Price(9_000), Price(10_000)));
    assert!(!x.within_band(Price(8_999), Price(10_000)));
    assert!(x.within_band(Price(10_000), Price(10_000)));
    // mark 12721: 10% = 1272.1 ticks, so +1272 is in and +1273 is out.
    assert!(x.within_band(Price(12721 + 1272), Price(12721)));
    assert!(!x.within_band(Price(12721 + 1273), Price(12721)));
}

// ---------------------------------------------------------------- position margin

fn pos_with_cost(cost: Money, leverage: Leverage) -> Position {
    Position { qty: if cost < 0 { 1 } else { -1 }, cost, realised: 0, leverage, risk_steps: 0 }
}

#[test]
fn position_margin_matches_captures() {
    let x = Instrument::xbtusd();
    // |cost| 31403, IM 1%: posInit ⌈314.03⌉ = 315; posComm ⌈(31403 + 315) × 0.00075⌉ =
    // ⌈23.7885⌉ = 24; init 339. posMaint ⌈0.005 × 31403⌉ = ⌈157.015⌉ = 158, + 24 = 182.
    let p = pos_with_cost(-31_403, Leverage::CROSS);
    assert_eq!(p.init_margin(&x), 315 + 24);
    assert_eq!(p.maint_margin(&x), 158 + 24);
    // |cost| 15681: posInit ⌈156.81⌉ = 157; posComm ⌈(15681 + 157) × 0.00075⌉ = ⌈11.8785⌉
    // = 12 → posMargin 169; posMaint ⌈78.405⌉ = 79, + 12 = 91.
    let p = pos_with_cost(-15_681, Leverage::CROSS);
    assert_eq!(p.init_margin(&x), 169);
    assert_eq!(p.maint_margin(&x), 91);
    // A short with the same |cost| needs the same.
    let p = pos_with_cost(15_681, Leverage::CROSS);
    assert_eq!(p.init_margin(&x), 169);
    assert_eq!(p.maint_margin(&x), 91);
    // Isolated 10x: posInit ⌈1568.1⌉ = 1569; posComm ⌈(15681 + 1569) × 0.00075⌉ =
    // ⌈12.9375⌉ = 13; init 1582; maint 79 + 13 = 92.
    let p = pos_with_cost(-15_681, Leverage(1_000));
    assert_eq!(p.init_margin(&x), 1582);
    assert_eq!(p.maint_margin(&x), 92);
    // Flat: nothing.
    assert_eq!(Position::default().init_margin(&x), 0);
    assert_eq!(Position::default().maint_margin(&x), 0);
}

// ---------------------------------------------------------------- apply_fill, inverse

#[test]
fn inverse_long_partial_close_profit_flip_and_short_close() {
    let x = Instrument::xbtusd();
    let mut p = Position::default();
    // Buy 100 @ 10000: unit −2e8/20000 = −10000, value −1,000,000; cost −1,000,000.
    assert_eq!(fill(&mut p, &x, Side::Buy, 100, 20_000), 0);
    assert_eq!((p.qty, p.cost), (100, -1_000_000));
    assert_eq!(p.entry_price_f64(&x), Some(10_000.0));
    // Unrealised at 11000: mark value 100 × −9091 = −909,100; − (−1,000,000) = 90,900.
    assert_eq!(p.unrealised(&x, Price(22_000)), 90_900);

    // Sell 40 @ 11000: unit −9091, value(40) = −363,640; seller sign −1 → +363,640 into the
    // cost → −636,360; keep = trunc(−1,000,000 × 60/100) = −600,000; residue
    // R = −636,360 − (−600,000) = −36,360 leaves the cost; the wallet gets 36,360
    // (= 40 × (10000 − 9091)).
    assert_eq!(fill(&mut p, &x, Side::Sell, 40, 22_000), 36_360);
    assert_eq!((p.qty, p.cost, p.realised), (60, -600_000, 36_360));

    // Sell 150 @ 9000 (flip): unit −2e8/18000 = −11111.11 → −11111; value(150) = −1,666,650.
    // closed = min(150, 60) = 60; closing = trunc(−1,666,650 × 60/150) = −666,660;
    // opening = −1,666,650 − (−666,660) = −999,990. keep = 0.
    // R = −600,000 + 666,660 − 0 = 66,660 → wallet −66,660 (= 60 × (10000 − 11111)).
    // New cost = −1 × −999,990 = 999,990 (= −90 × −11111), qty 60 − 150 = −90.
    assert_eq!(fill(&mut p, &x, Side::Sell, 150, 18_000), -66_660);
    assert_eq!((p.qty, p.cost, p.realised), (-90, 999_990, 36_360 - 66_660));

    // Buy 90 @ 8000 (full close of the short, profit): unit −2e8/16000 = −12500,
    // value(90) = −1,125,000. R = 999,990 − 1,125,000 − 0 = −125,010 → wallet 125,010
    // (= 90 × (12500 − 11111) = 90 × 1389).
    assert_eq!(fill(&mut p, &x, Side::Buy, 90, 16_000), 125_010);
    assert_eq!((p.qty, p.cost), (0, 0));
    // realised: 36,360 − 66,660 + 125,010 = 94,710.
    assert_eq!(p.realised, 94_710);
    assert_eq!(p.entry_price_f64(&x), None);
}

#[test]
fn inverse_add_cost_adds() {
    let x = Instrument::xbtusd();
    let mut p = Position::default();
    // Buy 100 @ 10000 → −1,000,000; buy 100 @ 8000: unit −12500 → −1,250,000.
    fill(&mut p, &x, Side::Buy, 100, 20_000);
    assert_eq!(fill(&mut p, &x, Side::Buy, 100, 16_000), 0);
    assert_eq!((p.qty, p.cost, p.realised), (200, -2_250_000, 0));
    // Entry = 200 × −1e8 / −2,250,000 = 8888.89 (the harmonic mean of 10000 and 8000).
    let entry = p.entry_price_f64(&x).unwrap();
    assert!((entry - 8_888.888_888).abs() < 1e-3, "{entry}");
}

#[test]
fn inverse_short_open_and_loss() {
    let x = Instrument::xbtusd();
    let mut p = Position::default();
    // Sell 100 @ 10000: cost −1 × −1,000,000 = +1,000,000, qty −100.
    assert_eq!(fill(&mut p, &x, Side::Sell, 100, 20_000), 0);
    assert_eq!((p.qty, p.cost), (-100, 1_000_000));
    // Buy 100 @ 11000: value(100) = −909,100; cost before realise 1,000,000 − 909,100 =
    // 90,900; keep 0; R = 90,900 → wallet −90,900 (= 100 × (9091 − 10000)).
    assert_eq!(fill(&mut p, &x, Side::Buy, 100, 22_000), -90_900);
    assert_eq!((p.qty, p.cost, p.realised), (0, 0, -90_900));
}

#[test]
fn inverse_keep_truncates_and_the_residue_is_realised() {
    let x = Instrument::xbtusd();
    let mut p = Position::default();
    // Buy 2 @ 6360.5 (2 × −15722 = −31,444) and 1 @ 6379 (−15,676): cost −47,120.
    fill(&mut p, &x, Side::Buy, 2, 12_721);
    fill(&mut p, &x, Side::Buy, 1, 12_758);
    assert_eq!(p.cost, -47_120);
    // Sell 2 @ 6379: value −31,352; keep = trunc(−47,120 × 1/3) = trunc(−15,706.67) =
    // −15,706; R = −47,120 + 31,352 + 15,706 = −62 → wallet 62.
    assert_eq!(fill(&mut p, &x, Side::Sell, 2, 12_758), 62);
    assert_eq!((p.qty, p.cost), (1, -15_706));
    // Sell 1 @ 6379: value −15,676; R = −15,706 + 15,676 = −30 → wallet 30.
    assert_eq!(fill(&mut p, &x, Side::Sell, 1, 12_758), 30);
    assert_eq!((p.qty, p.cost), (0, 0));
    // Total 92 = exact round trip: 3 × −15,676 − (−47,120).
    assert_eq!(p.realised, 92);
}

// ---------------------------------------------------------------- apply_fill, linear

#[test]
fn linear_long_partial_profit_loss_flip_and_short_loss() {
    let u = Instrument::xbtusdt();
    let mut p = Position::default();
    // Buy 3000 @ 20000 (40000 ticks): 3000 × 40000 / 2 = 60,000,000 USDt; cost +60,000,000.
    assert_eq!(fill(&mut p, &u, Side::Buy, 3000, 40_000), 0);
    assert_eq!((p.qty, p.cost), (3000, 60_000_000));
    assert_eq!(p.entry_price_f64(&u), Some(20_000.0));

    // Sell 1000 @ 21000: value 21,000,000; keep = 60e6 × 2000/3000 = 40,000,000;
    // R = 60e6 − 21e6 − 40e6 = −1,000,000 → wallet +1,000,000 (1000 × 1e-6 XBT × 1000 USD).
    assert_eq!(fill(&mut p, &u, Side::Sell, 1000, 42_000), 1_000_000);
    assert_eq!((p.qty, p.cost), (2000, 40_000_000));

    // Sell 1000 @ 19000.5 (38001 ticks): value 1000 × 38001 / 2 = 19,000,500; keep 20e6;
    // R = 40e6 − 19,000,500 − 20e6 = 999,500 → wallet −999,500 (a loss).
    assert_eq!(fill(&mut p, &u, Side::Sell, 1000, 38_001), -999_500);
    assert_eq!((p.qty, p.cost), (1000, 20_000_000));

    // Sell 3000 @ 19000 (flip): value 57,000,000; closing = 57e6 × 1000/3000 = 19,000,000;
    // opening 38,000,000; R = 20e6 − 19e6 = 1e6 → wallet −1,000,000;
    // new cost = −38,000,000 (a linear short has negative cost), qty −2000.
    assert_eq!(fill(&mut p, &u, Side::Sell, 3000, 38_000), -1_000_000);
    assert_eq!((p.qty, p.cost), (-2000, -38_000_000));

    // Buy 2000 @ 20000: value 40,000,000; R = −38e6 + 40e6 = 2e6 → wallet −2,000,000
    // (short loss: 2000 × 1e-6 × 1000 USD).
    assert_eq!(fill(&mut p, &u, Side::Buy, 2000, 40_000), -2_000_000);
    assert_eq!((p.qty, p.cost), (0, 0));
    // 1,000,000 − 999,500 − 1,000,000 − 2,000,000.
    assert_eq!(p.realised, -2_999_500);
}

#[test]
fn linear_short_profit() {
    let u = Instrument::xbtusdt();
    let mut p = Position::default();
    // Sell 2000 @ 20000: cost −40,000,000. Buy 1000 @ 19000: value 19,000,000;
    // keep = trunc(−40e6 × 1000/2000) = −20e6; R = −40e6 + 19e6 + 20e6 = −1e6 → +1,000,000.
    fill(&mut p, &u, Side::Sell, 2000, 40_000);
    assert_eq!(p.cost, -40_000_000);
    assert_eq!(fill(&mut p, &u, Side::Buy, 1000, 38_000), 1_000_000);
    assert_eq!((p.qty, p.cost), (-1000, -20_000_000));
}

#[test]
fn split_truncates_the_closing_part() {
    // XBTUSDT 1 @ 0.5 is worth round(0.5) = 1; 3 @ 0.5 is worth round(1.5) = 2.
    let u = Instrument::xbtusdt();
    let mut p = Position::default();
    fill(&mut p, &u, Side::Buy, 1, 1);
    assert_eq!(p.cost, 1);
    // Sell 3 @ 0.5 (value 2): closed 1; closing = trunc(2 × 1/3) = 0; opening = 2;
    // R = 1 − 0 − 0 = 1 → wallet −1; new cost = −2, qty −2.
    // Check: cost change −3 − wallet (−1) = −2 = −1 × 2.
    assert_eq!(fill(&mut p, &u, Side::Sell, 3, 1), -1);
    assert_eq!((p.qty, p.cost), (-2, -2));
}

#[test]
fn quanto_round_trip() {
    let e = Instrument::ethusd();
    let mut p = Position::default();
    // Buy 10 @ 200 (4000 ticks): 10 × 20,000 = 200,000. Sell 10 @ 210 (4200 ticks):
    // 10 × 100 × 4200 / 20 = 210,000; R = 200,000 − 210,000 = −10,000 → wallet +10,000
    // (= 10 × 10 USD × 0.000001 XBT × 1e8).
    fill(&mut p, &e, Side::Buy, 10, 4000);
    assert_eq!(fill(&mut p, &e, Side::Sell, 10, 4200), 10_000);
    assert_eq!((p.qty, p.cost), (0, 0));
}

#[test]
fn leverage_is_kept_by_fills() {
    let x = Instrument::xbtusd();
    let mut p = Position { leverage: Leverage(1_000), ..Position::default() };
    fill(&mut p, &x, Side::Buy, 100, 20_000);
    fill(&mut p, &x, Side::Sell, 300, 20_000);
    assert_eq!(p.leverage, Leverage(1_000));
}

// ---------------------------------------------------------------- instruments

#[test]
fn instrument_parameters() {
    let x = Instrument::xbtusd();
    assert_eq!(x.kind, ContractKind::Inverse);
    assert_eq!(x.multiplier, -100_000_000);
    assert_eq!(x.tick, TickSize { num: 1, den: 2 });
    assert_eq!(
        (x.lot, x.max_order_qty, x.max_price),
        (Qty(100), Qty(10_000_000), Price(2_000_000))
    );
    assert_eq!((x.init_margin, x.maint_margin), (Rate(1_000_000), Rate(500_000)));
    assert_eq!((x.maker_fee, x.taker_fee), (Rate(-25_000), Rate(75_000)));
    assert_eq!((x.risk_limit, x.risk_step), (20_000_000_000, 10_000_000_000));
    assert_eq!(x.price_band, Rate(10_000_000));
    assert_eq!(x.price_f64(Price(12721)), 6360.5);

    let e = Instrument::ethusd();
    assert_eq!(
        (e.kind, e.multiplier, e.tick),
        (ContractKind::Quanto, 100, TickSize { num: 1, den: 20 })
    );
    assert_eq!((e.init_margin, e.maint_margin), (Rate(2_000_000), Rate(1_000_000)));
    assert_eq!(e.max_price, Price(2_000_000)); // 100,000 USD / 0.05
    assert_eq!(e.lot, Qty(1));

    let u = Instrument::xbtusdt();
    assert_eq!((u.kind, u.multiplier, u.lot), (ContractKind::Linear, 1, Qty(1000)));
    assert_eq!((u.maker_fee, u.taker_fee), (Rate(-10_000), Rate(75_000)));
    assert_eq!(u.settle, amdahl_types::Currency::USDt);
    assert_eq!(x.settle, amdahl_types::Currency::XBt);
    assert_eq!(e.settle, amdahl_types::Currency::XBt);
}

#[test]
fn lot_multiples() {
    let x = Instrument::xbtusd();
    assert!(x.is_multiple_of_lot(Qty(0)));
    assert!(x.is_multiple_of_lot(Qty(300)));
    assert!(x.is_multiple_of_lot(Qty(-300)));
    assert!(!x.is_multiple_of_lot(Qty(150)));
}

#[test]
fn validate_accepts_the_builtins_and_rejects_bad_configs() {
    for i in [Instrument::xbtusd(), Instrument::ethusd(), Instrument::xbtusdt()] {
        assert_eq!(i.validate(), Ok(()), "{}", i.symbol);
    }
    type Breaker = fn(&mut Instrument);
    let bad: Vec<(&str, Breaker)> = vec![
        ("tick", |i| i.tick.den = 0),
        ("tick", |i| i.tick.num = -1),
        ("lot", |i| i.lot = Qty(0)),
        ("max_order_qty", |i| i.max_order_qty = Qty(150)),
        ("max_price", |i| i.max_price = Price(0)),
        ("multiplier", |i| i.multiplier = 100_000_000),
        ("maint_margin", |i| i.maint_margin = Rate(2_000_000)),
        ("maint_margin", |i| i.maint_margin = Rate(0)),
        ("taker_fee", |i| i.maker_fee = Rate(-100_000)),
        ("taker_fee", |i| i.taker_fee = Rate(-1)),
        ("risk_limit", |i| i.risk_limit = 0),
        ("price_band", |i| i.price_band = Rate(0)),
        ("overflows", |i| i.max_order_qty = Qty(i64::MAX / 100 * 100)),
        ("symbol", |i| i.symbol.clear()),
    ];
    for (needle, breakit) in bad {
        let mut i = Instrument::xbtusd();
        breakit(&mut i);
        let e = i.validate().expect_err(needle);
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let mut lin = Instrument::xbtusdt();
    lin.multiplier = -1;
    assert!(lin.validate().unwrap_err().contains("multiplier"));
    let mut lin = Instrument::xbtusdt();
    lin.max_price = Price(i64::MAX);
    assert!(lin.validate().unwrap_err().contains("overflows"));
}
