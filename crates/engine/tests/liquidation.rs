//! Liquidation, the insurance fund and auto-deleveraging, with numbers worked by hand.
//!
//! XBTUSD (market 0): inverse, tick 0.5 (ticks = 2 × USD), IM 1%, MM 0.5%, taker 0.075%.
//! A 100x isolated long of 10,000 contracts at 10000.0 (20000 ticks):
//!   value = 10,000 × round(−1e8 / 10000) = −100,000,000 (cost)
//!   posInit = ⌈1% × 100,000,000⌉ = 1,000,000; posComm = ⌈101,000,000 × 0.00075⌉ = 75,750
//!   margin M = 1,075,750; posMaint = ⌈0.5% × 100,000,000⌉ + 75,750 = 575,750.
//! Liquidation price: the highest tick where M + markValue − cost < posMaint:
//!   19899: unit round(−2e8/19899 = −10050.76) = −10051 → 1,075,750 − 510,000 = 565,750 < 575,750
//!   19900: unit −10050 → 1,075,750 − 500,000 = 575,750, not below: so L = 19899 (9949.5).
//! Bankruptcy price: the lowest tick where M + markValue − cost ≥ 0:
//!   19788: unit round(−10107.14) = −10107 → 1,075,750 − 1,070,000 = 5,750 ≥ 0
//!   19787: unit round(−10107.65) = −10108 → 1,075,750 − 1,080,000 < 0: so B = 19788 (9894.0).

use amdahl_engine::EngineConfig;
use amdahl_engine::testkit::{Harness, limit};
use amdahl_ledger::Entry;
use amdahl_types::{
    AccountId, CancelReason, Command, Currency, Event, Leverage, MarketId, NewOrder, Price,
    RejectReason, Side, TimeInForce,
};

const XBT: Currency = Currency::XBt;
const USDT: Currency = Currency::USDt;
const ONE_XBT: i64 = 100_000_000;
const VICTIM: u32 = 0;
const SHORT: u32 = 1;
const BIDDER: u32 = 2;

fn setup(insurance: i64) -> Harness {
    let mut cfg = EngineConfig::reference(4);
    cfg.insurance_fund = [insurance, insurance];
    let mut h = Harness::new(&cfg);
    for a in 0..4 {
        h.deposit(a, XBT, ONE_XBT);
        h.deposit(a, USDT, 100_000_000);
    }
    h.run(Command::SetLeverage {
        account: AccountId(VICTIM),
        market: MarketId(0),
        leverage: Leverage(10_000),
    });
    h.run(Command::Place(limit(SHORT, 0, Side::Sell, 10_000, 20_000)));
    h.run(Command::Place(limit(VICTIM, 0, Side::Buy, 10_000, 20_000)));
    let p = h.engine.position(AccountId(VICTIM), MarketId(0));
    assert_eq!((p.qty, p.cost), (10_000, -100_000_000));
    assert_eq!(h.engine.position_margin(AccountId(VICTIM), MarketId(0)), 1_075_750);
    assert_eq!(h.engine.bankruptcy_price(AccountId(VICTIM), MarketId(0)), Some(Price(19_788)));
    h
}

fn insurance(h: &Harness, c: Currency) -> i64 {
    h.engine.ledger().balance(Entry::Insurance, c)
}

fn liquidated(ev: &[Event]) -> Option<(i64, Price)> {
    ev.iter().find_map(|e| match *e {
        Event::Liquidated { qty, price, .. } => Some((qty, price)),
        _ => None,
    })
}

#[test]
fn not_liquidated_at_maintenance_liquidated_one_tick_below() {
    let mut h = setup(ONE_XBT);
    let ev = h.mark(0, 19_900);
    assert_eq!(liquidated(&ev), None);
    assert!(!h.engine.is_liquidatable(AccountId(VICTIM), MarketId(0)));
    // A resting order of the victim is cancelled first.
    h.run(Command::Place(limit(VICTIM, 0, Side::Buy, 100, 19_000)));
    let ev = h.mark(0, 19_899);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::OrderCanceled { reason: CancelReason::Liquidation, account: AccountId(0), .. }
    )));
    assert_eq!(liquidated(&ev), Some((10_000, Price(19_788))));
    assert_eq!(h.engine.position(AccountId(VICTIM), MarketId(0)).qty, 0);
    // The victim lost the margin, less the 5,750 the tick rounding left: closing 10,000 at
    // 19788 realises 10,000 × (10000 − 10107) = −1,070,000. Wallet: 100,000,000 − 75,000
    // (taker fee on the open: trunc(100,000,000 × 0.00075)) − 1,070,000 = 98,855,000.
    assert_eq!(h.engine.ledger().wallet(AccountId(VICTIM), XBT), 98_855_000);
    h.engine.audit_full().unwrap();
}

#[test]
fn liquidation_filled_better_than_bankruptcy_pays_the_fund() {
    let mut h = setup(ONE_XBT);
    // A bid at 9900.0 (19800), above the bankruptcy price 9894.0.
    h.run(Command::Place(limit(BIDDER, 0, Side::Buy, 10_000, 19_800)));
    let ev = h.mark(0, 19_899);
    assert_eq!(liquidated(&ev), Some((10_000, Price(19_788))));
    // The liquidation engine bought at 19788 (unit −10107) and sells at 19800 (unit
    // round(−10101.01) = −10101): it realises 10,000 × (10107 − 10101) = +60,000 into the fund.
    assert!(ev.contains(&Event::Realised {
        seq: amdahl_types::Seq(h.seq),
        account: h.engine.liquidator(),
        market: MarketId(0),
        amount: 60_000,
    }));
    assert_eq!(insurance(&h, XBT), ONE_XBT + 60_000);
    assert_eq!(h.engine.position(h.engine.liquidator(), MarketId(0)).qty, 0);
    assert_eq!(h.engine.position(AccountId(BIDDER), MarketId(0)).qty, 10_000);
    h.engine.audit_full().unwrap();
}

#[test]
fn liquidation_filled_worse_than_bankruptcy_is_paid_by_the_fund() {
    let mut h = setup(ONE_XBT);
    // The only bid is at 9880.0 (19760), below the bankruptcy price.
    h.run(Command::Place(limit(BIDDER, 0, Side::Buy, 10_000, 19_760)));
    let ev = h.mark(0, 19_899);
    assert_eq!(liquidated(&ev), Some((10_000, Price(19_788))));
    // The IOC at 19788 finds nothing; the fund can pay for the worst band fill (at
    // ⌈19899 × 0.9⌉ = 17910: 10,000 × (11167 − 10107) = 10,600,000 ≤ 1 XBT), so a protected
    // Market order sells at 19760 (unit round(−10121.46) = −10121): the fund pays
    // 10,000 × (10121 − 10107) = 140,000.
    assert_eq!(insurance(&h, XBT), ONE_XBT - 140_000);
    assert_eq!(h.engine.position(h.engine.liquidator(), MarketId(0)).qty, 0);
    assert!(!ev.iter().any(|e| matches!(e, Event::Deleveraged { .. })));
    h.engine.audit_full().unwrap();
}

#[test]
fn empty_fund_auto_deleverages_the_opposing_position() {
    let mut h = setup(0);
    let ev = h.mark(0, 19_899);
    assert_eq!(liquidated(&ev), Some((10_000, Price(19_788))));
    // No bids, and a fund of 0 cannot pay for any worse fill: the short (the only opposing
    // position, rank 5) is closed at the bankruptcy price 19788. It sold 10,000 at 10000.0
    // (unit −10000) and buys back at unit −10107: it realises 10,000 × 107 = +1,070,000.
    assert!(ev.contains(&Event::Deleveraged {
        seq: amdahl_types::Seq(h.seq),
        account: AccountId(SHORT),
        market: MarketId(0),
        qty: 10_000,
        price: Price(19_788),
    }));
    assert!(ev.contains(&Event::Realised {
        seq: amdahl_types::Seq(h.seq),
        account: AccountId(SHORT),
        market: MarketId(0),
        amount: 1_070_000,
    }));
    assert_eq!(h.engine.position(AccountId(SHORT), MarketId(0)).qty, 0);
    assert_eq!(h.engine.position(h.engine.liquidator(), MarketId(0)).qty, 0);
    assert_eq!(insurance(&h, XBT), 0);
    h.engine.audit_full().unwrap();
}

#[test]
fn fund_with_no_book_waits_at_the_bankruptcy_price() {
    let mut h = setup(ONE_XBT);
    let ev = h.mark(0, 19_899);
    assert_eq!(liquidated(&ev), Some((10_000, Price(19_788))));
    // The fund could cover a band fill but there is no bid: the liquidation order rests at
    // the bankruptcy price, and nobody is deleveraged.
    assert!(!ev.iter().any(|e| matches!(e, Event::Deleveraged { .. })));
    assert_eq!(h.engine.book(MarketId(0)).best_ask(), Some(Price(19_788)));
    // A buyer arrives at the bankruptcy price: the fund is flat again, no gain, no loss.
    h.run(Command::Place(limit(BIDDER, 0, Side::Buy, 10_000, 19_788)));
    assert_eq!(h.engine.position(h.engine.liquidator(), MarketId(0)).qty, 0);
    assert_eq!(insurance(&h, XBT), ONE_XBT);
    h.engine.audit_full().unwrap();
}

#[test]
fn linear_100x_long_liquidation() {
    // XBTUSDT (market 2): linear, tick 0.5, value = qty × ticks / 2 USDt.
    // Long 100,000 @ 20000.0 (40000 ticks): cost = 100,000 × 40000 / 2 = 2,000,000,000.
    // posInit = 20,000,000; posComm = ⌈2,020,000,000 × 0.00075⌉ = 1,515,000; M = 21,515,000.
    // posMaint = 10,000,000 + 1,515,000 = 11,515,000.
    // L: M + value − cost < maint ⇔ value < 1,989,999,999... at 39800: 1,990,000,000 → equal,
    // not below; at 39799: 1,989,950,000 → below: L = 39799.
    // B: value ≥ cost − M = 1,978,485,000: at 39570: 1,978,500,000 ✓; 39569: 1,978,450,000 ✗.
    let mut cfg = EngineConfig::reference(4);
    cfg.markets[2].mark = Price(40_000);
    cfg.insurance_fund = [0, 100_000_000];
    let mut h = Harness::new(&cfg);
    for a in 0..4 {
        h.deposit(a, USDT, 100_000_000);
    }
    h.run(Command::SetLeverage {
        account: AccountId(VICTIM),
        market: MarketId(2),
        leverage: Leverage(10_000),
    });
    h.run(Command::Place(limit(SHORT, 2, Side::Sell, 100_000, 40_000)));
    h.run(Command::Place(limit(VICTIM, 2, Side::Buy, 100_000, 40_000)));
    assert_eq!(h.engine.position_margin(AccountId(VICTIM), MarketId(2)), 21_515_000);
    h.run(Command::Place(limit(BIDDER, 2, Side::Buy, 100_000, 39_600)));
    assert_eq!(liquidated(&h.mark(2, 39_800)), None);
    let ev = h.mark(2, 39_799);
    assert_eq!(liquidated(&ev), Some((100_000, Price(39_570))));
    // The victim realises 1,978,500,000 − 2,000,000,000 = −21,500,000; the fund gains
    // 100,000 × (39600 − 39570) / 2 = 1,500,000 from the better fill.
    assert!(ev.contains(&Event::Realised {
        seq: amdahl_types::Seq(h.seq),
        account: AccountId(VICTIM),
        market: MarketId(2),
        amount: -21_500_000,
    }));
    assert_eq!(insurance(&h, USDT), 100_000_000 + 1_500_000);
    h.engine.audit_full().unwrap();
}

#[test]
fn adl_indicator_ranks_profit_times_leverage() {
    let mut h = setup(ONE_XBT);
    // Two more shorts against a new long: account 3 shorts at a higher price (more profit
    // when the price falls) and is ranked first.
    h.run(Command::Place(limit(BIDDER, 0, Side::Buy, 1_000, 20_000)));
    h.run(Command::Place(limit(3, 0, Side::Sell, 1_000, 20_000)));
    h.mark(0, 19_950);
    let short = h.engine.adl_indicator(AccountId(SHORT), MarketId(0));
    let other = h.engine.adl_indicator(AccountId(3), MarketId(0));
    assert!(short.is_some() && other.is_some());
    assert_ne!(short, other, "two positions of different leverage rank apart");
    assert_eq!(h.engine.adl_indicator(AccountId(VICTIM), MarketId(0)), Some(5));
}

/// A cross position whose account also holds an isolated one in the same currency: the
/// isolated margin is locked away from the cross positions, so the cross position is
/// liquidated sooner than its cross sum alone (wallet + markValue − cost − posMaint) says.
/// The mark-tick pass must hand such an account to the full check, not decide it itself.
///
/// Account 0 (1 XBT): ETHUSD isolated at 10x, long 100 at 2000.00 (40000 ticks of 0.05):
///   cost = 100 × 100 × 2000 = 20,000,000; posInit = 10% = 2,000,000;
///   posComm = ⌈22,000,000 × 0.075%⌉ = 16,500: locked margin 2,016,500.
/// XBTUSD cross, long 20,000 at 10000.0: cost = 20,000 × −10,000 = −200,000,000;
///   posInit (IM 1%) 2,000,000, posComm ⌈202,000,000 × 0.075%⌉ = 151,500;
///   posMaint = 1,000,000 + 151,500 = 1,151,500.
/// Wallet after both taker fees: 100,000,000 − 15,000 − 150,000 = 99,835,000.
/// With unit u = round(−2e8 / mark ticks):
///   full check: 99,835,000 + 20,000u + 200,000,000 − 2,016,500 < 1,151,500 ⇔ u ≤ −14,834:
///     13483 → round(−14,833.49) = −14,833: safe; 13482 → round(−14,834.59) = −14,835: liquidated.
///   cross sum alone: 99,835,000 + 20,000u + 200,000,000 − 1,151,500 < 0 ⇔ u ≤ −14,935, first
///     at 13391 (round(−14,935.40)): 91 ticks too late.
#[test]
fn cross_position_beside_an_isolated_one_is_liquidated_by_the_full_account_check() {
    let mut cfg = EngineConfig::reference(4);
    cfg.insurance_fund = [ONE_XBT, ONE_XBT];
    let mut h = Harness::new(&cfg);
    for a in 0..4 {
        h.deposit(a, XBT, ONE_XBT);
    }
    let (victim, eth) = (AccountId(VICTIM), MarketId(1));
    h.run(Command::SetLeverage { account: victim, market: eth, leverage: Leverage(1_000) });
    h.run(Command::Place(limit(SHORT, 1, Side::Sell, 100, 40_000)));
    h.run(Command::Place(limit(VICTIM, 1, Side::Buy, 100, 40_000)));
    h.run(Command::Place(limit(SHORT, 0, Side::Sell, 20_000, 20_000)));
    h.run(Command::Place(limit(VICTIM, 0, Side::Buy, 20_000, 20_000)));
    assert_eq!(h.engine.position(victim, MarketId(0)).cost, -200_000_000);
    assert_eq!(h.engine.position(victim, eth).cost, 20_000_000);
    assert_eq!(h.engine.position_margin(victim, eth), 2_016_500);
    assert_eq!(h.engine.ledger().wallet(victim, XBT), 99_835_000);
    // Down to 13483 one tick at a time (each tick re-margins): never liquidated.
    for mark in (13_483..=13_500).rev() {
        let ev = h.mark(0, mark);
        assert_eq!(liquidated(&ev), None, "at {mark}");
    }
    assert!(!h.engine.is_liquidatable(victim, MarketId(0)));
    let ev = h.mark(0, 13_482);
    assert!(matches!(liquidated(&ev), Some((20_000, _))), "not liquidated at 13482: {ev:?}");
    assert_eq!(h.engine.position(victim, MarketId(0)).qty, 0);
    // The isolated position stands on its own margin.
    assert_eq!(h.engine.position(victim, eth).qty, 100);
    h.engine.audit_full().unwrap();
}

/// Account 1, cross at 100x with 12,000 XBt, and the IOC that buys it 100 XBTUSD at
/// 10000.0 from account 0's offer: cost −1,000,000, taker fee 750, wallet 11,250; posMaint
/// = ⌈0.5% × 1,000,000⌉ + posComm ⌈1,010,000 × 0.00075⌉ = 5,000 + 758 = 5,758. (R
/// reserves 10,000 + 2 × 750 = 11,500 of the 12,000 for it.)
fn cross_buyer() -> (Harness, NewOrder) {
    let mut h = Harness::new(&EngineConfig::reference(4));
    h.deposit(0, XBT, ONE_XBT);
    h.deposit(1, XBT, 12_000);
    h.run(Command::Place(limit(0, 0, Side::Sell, 100, 20_000)));
    let ioc = TimeInForce::ImmediateOrCancel;
    (h, NewOrder { time_in_force: ioc, ..limit(1, 0, Side::Buy, 100, 20_000) })
}

/// A mark tick reads the cross sums of the fills before it in its segment. Mark 9900.0
/// (19,800 ticks): unit round(−1e8 / 9900) = −10,101, the long is worth −1,010,100, so
/// its margin balance is 11,250 − 10,100 = 1,150 < 5,758 and the tick puts it in
/// liquidation. (Had the tick read the account's cross sum from before the fill, it would
/// have seen only the mark's move, 1,150 ≥ 0, and missed it.) The account's next order in
/// the group is refused `InLiquidation`.
#[test]
fn a_mark_tick_sees_the_fills_earlier_in_its_segment() {
    let (mut h, buy) = cross_buyer();
    let bid = limit(1, 0, Side::Buy, 100, 19_600);
    let ev = h.run_group(&[
        Command::Place(buy),
        Command::Mark { market: MarketId(0), price: Price(19_800) },
        Command::Place(bid),
    ]);
    let refused = ev.iter().find_map(|e| match e {
        Event::Rejected { reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(refused, Some(RejectReason::InLiquidation), "{ev:?}");
    assert_eq!(liquidated(&ev).map(|l| l.0), Some(100), "{ev:?}");
    h.engine.audit_full().unwrap();
}

/// Fills are checked for maintenance when their group ends (the liquidations found go out
/// then): an account a fill leaves under maintenance is found; one a deposit later in the
/// same group brings back is not.
#[test]
fn fills_are_checked_for_maintenance_when_their_group_ends() {
    // The mark is 9850.0 (19,700 ticks) when account 1 buys at 10000.0: unit round(−1e8 /
    // 9850) = −10,152, so the long is worth −1,015,200 (unrealised −15,200) and its margin
    // balance is 11,250 − 15,200 = −3,950 < 5,758.
    let (mut h, buy) = cross_buyer();
    h.mark(0, 19_700);
    let before = h.seq;
    let ev = h.run(Command::Place(buy));
    assert_eq!(fills(&ev), 1, "{ev:?}");
    assert_eq!(liquidated(&ev).map(|l| l.0), Some(100), "found at the group's end: {ev:?}");
    assert_eq!(h.seq, before + 2, "the buy, then the Liquidate fed back");

    // The same buy with a deposit of 10,000 behind it in its group: the group ends with a
    // margin balance of 21,250 − 15,200 = 6,050 ≥ 5,758, nothing to liquidate.
    let (mut h, buy) = cross_buyer();
    h.mark(0, 19_700);
    let deposit = Command::Deposit { account: AccountId(1), currency: XBT, amount: 10_000 };
    let before = h.seq;
    let ev = h.run_group(&[Command::Place(buy), deposit]);
    assert_eq!(fills(&ev), 1, "{ev:?}");
    assert_eq!(liquidated(&ev), None, "not found: {ev:?}");
    assert_eq!(h.seq, before + 2, "no Liquidate was fed back");
    assert_eq!(h.engine.position(AccountId(1), MarketId(0)).qty, 100);
    h.engine.audit_full().unwrap();
}

fn fills(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Fill { .. })).count()
}
