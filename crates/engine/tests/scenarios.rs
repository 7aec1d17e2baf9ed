//! Scenarios with numbers worked out by hand; the arithmetic is in the comments.
//!
//! Markets of `EngineConfig::reference`: 0 = XBTUSD (inverse, tick 0.5, lot 100, IM 1%,
//! MM 0.5%, maker −0.025%, taker 0.075%), 1 = ETHUSD (quanto, tick 0.05, lot 1, multiplier
//! 100 XBt per USD, IM 2%), 2 = XBTUSDT (linear, tick 0.5, lot 1000, settles USDt, maker
//! −0.01%, taker 0.075%). All opening marks are 10000.0 / 2000.00 / 10000.0.

use amdahl_engine::EngineConfig;
use amdahl_engine::testkit::{Harness, limit, market};
use amdahl_ledger::Entry;
use amdahl_types::{
    AccountId, AmendOrder, CancelReason, Command, Currency, Event, ExecInst, Leverage, MarketId,
    NewOrder, OrdType, OrderId, Price, Qty, RejectReason, Seq, Sequenced, Side, TimeInForce,
};

const XBT: Currency = Currency::XBt;
const USDT: Currency = Currency::USDt;
const ONE_XBT: i64 = 100_000_000;
const ONE_USDT: i64 = 1_000_000;

fn harness() -> Harness {
    let mut h = Harness::new(&EngineConfig::reference(8));
    for a in 0..8 {
        h.deposit(a, XBT, ONE_XBT);
    }
    h
}

fn px(usd_halves: f64) -> i64 {
    // XBTUSD/XBTUSDT ticks are 0.5 USD.
    (usd_halves * 2.0) as i64
}

fn fills(events: &[Event]) -> Vec<(OrderId, OrderId, i64, i64, i64, i64, i64)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Fill {
                maker_order,
                taker_order,
                price,
                qty,
                value,
                maker_fee,
                taker_fee,
                ..
            } => Some((maker_order, taker_order, price.0, qty.0, value, maker_fee, taker_fee)),
            _ => None,
        })
        .collect()
}

fn accepted(events: &[Event]) -> OrderId {
    events
        .iter()
        .find_map(|e| match *e {
            Event::OrderAccepted { order, .. } => Some(order),
            _ => None,
        })
        .expect("order accepted")
}

fn rejected(events: &[Event]) -> Option<RejectReason> {
    events.iter().find_map(|e| match *e {
        Event::Rejected { reason, .. } => Some(reason),
        _ => None,
    })
}

/// Every refusal among `events`, as (seq, reason).
fn refusals(events: &[Event]) -> Vec<(u64, RejectReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected { seq, reason, .. } => Some((seq.0, *reason)),
            _ => None,
        })
        .collect()
}

/// An amend of `order`'s quantity alone.
fn amend_qty(account: u32, order: OrderId, qty: i64) -> AmendOrder {
    AmendOrder {
        account: AccountId(account),
        order,
        qty: Some(Qty(qty)),
        price: None,
        stop_px: None,
    }
}

/// The events as short labels: `label`'s where it gives one, else the variant's name.
fn labels(ev: &[Event], label: impl Fn(&Event) -> Option<String>) -> Vec<String> {
    ev.iter()
        .map(|e| {
            label(e).unwrap_or_else(|| {
                format!("{e:?}").split_whitespace().next().unwrap_or("").to_string()
            })
        })
        .collect()
}

fn wallet(h: &Harness, a: u32, c: Currency) -> i64 {
    h.engine.ledger().wallet(AccountId(a), c)
}

#[test]
fn inverse_open_partial_close_and_flip_with_fees() {
    let mut h = harness();
    let (maker, taker) = (0, 1);
    // Open: maker sells 1000 @ 10000, taker buys at market.
    h.run(Command::Place(limit(maker, 0, Side::Sell, 1000, px(10000.0))));
    let ev = h.run(Command::Place(market(taker, 0, Side::Buy, 1000)));
    // unit = round(−1e8 / 10000) = −10000; value = 1000 × −10000 = −10,000,000.
    // taker fee = trunc(10,000,000 × 0.00075) = 7,500; maker fee = −trunc(10,000,000 ×
    // 0.00025) = −2,500 (a rebate).
    let f = fills(&ev);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].2, f[0].3, f[0].4, f[0].5, f[0].6),
        (px(10000.0), 1000, -10_000_000, -2_500, 7_500)
    );
    let p = h.engine.position(AccountId(taker), MarketId(0));
    assert_eq!((p.qty, p.cost), (1000, -10_000_000));
    assert_eq!(wallet(&h, taker, XBT), ONE_XBT - 7_500);
    assert_eq!(wallet(&h, maker, XBT), ONE_XBT + 2_500);

    // Partial close: taker sells 400 @ 11000 into the maker's bid.
    h.run(Command::Place(limit(maker, 0, Side::Buy, 400, px(11000.0))));
    let ev = h.run(Command::Place(limit(taker, 0, Side::Sell, 400, px(11000.0))));
    // unit = round(−1e8/11000) = round(−9090.909) = −9091; value = 400 × −9091 = −3,636,400.
    // Taker (long 1000, cost −10,000,000) sells 400: cost −10,000,000 + 3,636,400 =
    // −6,363,600; the 600 kept keep trunc(−10,000,000 × 600/1000) = −6,000,000; the residue
    // 363,600 (= 400 × (10000 − 9091)) is realised into the wallet.
    // Fees: taker trunc(3,636,400 × 0.00075 = 2727.3) = 2,727; maker −trunc(909.1) = −909.
    let f = fills(&ev);
    assert_eq!((f[0].4, f[0].5, f[0].6), (-3_636_400, -909, 2_727));
    assert!(ev.contains(&Event::Realised {
        seq: amdahl_types::Seq(h.seq),
        account: AccountId(taker),
        market: MarketId(0),
        amount: 363_600
    }));
    let p = h.engine.position(AccountId(taker), MarketId(0));
    assert_eq!((p.qty, p.cost), (600, -6_000_000));
    let m = h.engine.position(AccountId(maker), MarketId(0));
    assert_eq!((m.qty, m.cost), (-600, 6_000_000));
    // Taker: 100,000,000 − 7,500 + 363,600 − 2,727 = 100,353,373.
    // Maker: 100,000,000 + 2,500 − 363,600 + 909 = 99,639,809.
    assert_eq!(wallet(&h, taker, XBT), 100_353_373);
    assert_eq!(wallet(&h, maker, XBT), 99_639_809);

    // Flip: taker sells 1000 @ 9000 (exactly at the 10% band edge) into the maker's bid.
    h.run(Command::Place(limit(maker, 0, Side::Buy, 1000, px(9000.0))));
    let ev = h.run(Command::Place(limit(taker, 0, Side::Sell, 1000, px(9000.0))));
    // unit = round(−1e8/9000) = round(−11111.1) = −11111; value = −11,111,000.
    // Closing part (600 of 1000): trunc(−11,111,000 × 600/1000) = −6,666,600; opening
    // part −4,444,400. Taker cost −6,000,000 + 6,666,600 = 666,600, keeps 0, so −666,600 is
    // realised (a loss of 600 × (11111 − 10000)); the new short costs +4,444,400.
    // Fees: taker trunc(8333.25) = 8,333; maker −trunc(2777.75) = −2,777.
    let f = fills(&ev);
    assert_eq!((f[0].4, f[0].5, f[0].6), (-11_111_000, -2_777, 8_333));
    let p = h.engine.position(AccountId(taker), MarketId(0));
    assert_eq!((p.qty, p.cost), (-400, 4_444_400));
    let m = h.engine.position(AccountId(maker), MarketId(0));
    assert_eq!((m.qty, m.cost), (400, -4_444_400));
    // Taker: 100,353,373 − 666,600 − 8,333 = 99,678,440.
    // Maker: 99,639,809 + 666,600 + 2,777 = 100,309,186.
    // Fees: 7,500 − 2,500 + 2,727 − 909 + 8,333 − 2,777 = 12,374.
    assert_eq!(wallet(&h, taker, XBT), 99_678_440);
    assert_eq!(wallet(&h, maker, XBT), 100_309_186);
    assert_eq!(h.engine.ledger().balance(Entry::Fees, XBT), 12_374);
    // 99,678,440 + 100,309,186 + 12,374 = 200,000,000 and Σ cost = 0: the books balance.
    h.engine.audit_full().unwrap();
}

#[test]
fn linear_open_add_and_close_in_usdt() {
    let mut h = harness();
    h.deposit(2, USDT, 1_000_000_000); // 1000 USDT
    h.deposit(3, USDT, 1_000_000_000);
    // Account 2 buys 1000 @ 10000 then 1000 @ 10100; account 3 sells.
    // value = qty × multiplier × price = 1000 × 1 × 10000 = 10,000,000 USDt (10 USDT),
    // positive for a buy (linear).
    h.run(Command::Place(limit(3, 2, Side::Sell, 1000, px(10000.0))));
    h.run(Command::Place(limit(2, 2, Side::Buy, 1000, px(10000.0))));
    h.run(Command::Place(limit(3, 2, Side::Sell, 1000, px(10100.0))));
    let ev = h.run(Command::Place(limit(2, 2, Side::Buy, 1000, px(10100.0))));
    // 1000 × 10100 = 10,100,000; taker fee trunc(10,100,000 × 0.00075 = 7575) = 7,575;
    // maker rebate −trunc(10,100,000 × 0.0001 = 1010) = −1,010.
    let f = fills(&ev);
    assert_eq!((f[0].4, f[0].5, f[0].6), (10_100_000, -1_010, 7_575));
    let p = h.engine.position(AccountId(2), MarketId(2));
    // Adding sums the costs: 10,000,000 + 10,100,000.
    assert_eq!((p.qty, p.cost), (2000, 20_100_000));
    // Close everything at 10200 with a Close order (no quantity).
    h.run(Command::Place(limit(3, 2, Side::Buy, 2000, px(10200.0))));
    let close = amdahl_types::NewOrder {
        exec_inst: ExecInst::CLOSE,
        qty: Qty(0),
        ..limit(2, 2, Side::Sell, 0, px(10200.0))
    };
    let ev = h.run(Command::Place(close));
    // value = 2000 × 10200 = 20,400,000; the long realises 20,400,000 − 20,100,000 = 300,000.
    let f = fills(&ev);
    assert_eq!((f[0].3, f[0].4), (2000, 20_400_000));
    let p = h.engine.position(AccountId(2), MarketId(2));
    assert_eq!((p.qty, p.cost), (0, 0));
    // Wallet: 1,000,000,000 − fees (first buy as taker: trunc(7500) = 7,500; second 7,575;
    // close as taker: trunc(20,400,000 × 0.00075 = 15,300) = 15,300) + 300,000 PnL
    // = 1,000,269,625.
    assert_eq!(wallet(&h, 2, USDT), 1_000_000_000 - 7_500 - 7_575 - 15_300 + 300_000);
    // XBt balances are untouched by USDt trading.
    assert_eq!(wallet(&h, 2, XBT), ONE_XBT);
    h.engine.audit_full().unwrap();
}

#[test]
fn quanto_value_and_pnl_settle_in_xbt() {
    let mut h = harness();
    // ETHUSD at 2000.00 (40000 ticks of 0.05): value of 10 contracts = 10 × 100 × 2000 =
    // 2,000,000 XBt, positive for a buy.
    h.run(Command::Place(limit(4, 1, Side::Sell, 10, 40_000)));
    let ev = h.run(Command::Place(limit(5, 1, Side::Buy, 10, 40_000)));
    assert_eq!(fills(&ev)[0].4, 2_000_000);
    // Close at 2100.00 (42000 ticks): value 10 × 100 × 2100 = 2,100,000; PnL +100,000 XBt
    // = (2100 − 2000) × 0.000001 XBT × 10 contracts.
    h.run(Command::Place(limit(4, 1, Side::Buy, 10, 42_000)));
    h.run(Command::Place(limit(5, 1, Side::Sell, 10, 42_000)));
    let p = h.engine.position(AccountId(5), MarketId(1));
    assert_eq!((p.qty, p.cost, p.realised), (0, 0, 100_000));
    h.engine.audit_full().unwrap();
}

#[test]
fn initial_margin_is_checked_against_available_balance() {
    let mut h = Harness::new(&EngineConfig::reference(2));
    // Buy 100 XBTUSD @ 10000: |value| = 100 × 10000 = 1,000,000 XBt. Order margin (cross,
    // base IM 1%) = ⌈1% × 1,000,000⌉ + ⌈2 × 0.075% × 1,000,000⌉ = 10,000 + 1,500 = 11,500.
    h.deposit(0, XBT, 11_499);
    let order = limit(0, 0, Side::Buy, 100, px(10000.0));
    let before = h.engine.state_hash();
    let ev = h.run(Command::Place(order));
    assert_eq!(rejected(&ev), Some(RejectReason::InsufficientAvailableBalance));
    assert_eq!(h.engine.state_hash(), before);
    h.deposit(0, XBT, 1);
    let ev = h.run(Command::Place(order));
    assert_eq!(rejected(&ev), None);
    assert_eq!(h.engine.order_hold(AccountId(0), MarketId(0)), 11_500);
    assert_eq!(h.engine.available(AccountId(0), XBT), 0);
    // A sell of the same size nets against the buy: the hold is the larger side, so it is
    // accepted with zero available balance.
    let ev = h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10100.0))));
    assert_eq!(rejected(&ev), None);
    // Sell side: 100 × round(1e8/10100 = 9900.99) = 990,100; ⌈9,901⌉ + ⌈1485.15⌉ = 9,901 +
    // 1,486 = 11,387 < 11,500, so the hold stays 11,500.
    assert_eq!(h.engine.order_hold(AccountId(0), MarketId(0)), 11_500);
    // At 10x isolated the buy needs ⌈10% × 1,000,000⌉ + 1,500 = 101,500: refused.
    let ev = h.run(Command::SetLeverage {
        account: AccountId(0),
        market: MarketId(0),
        leverage: Leverage(1000),
    });
    assert_eq!(rejected(&ev), Some(RejectReason::InsufficientAvailableBalance));
}

/// Stage R (DESIGN.md §2): within a group, new orders are checked against the state the
/// last group left, plus what earlier orders of the group reserved.
#[test]
fn stage_r_checks_a_group_against_the_last_groups_state_plus_its_reservations() {
    let mut h = Harness::new(&EngineConfig::reference(3));
    // XBTUSD buy 100 @ 10000.0: |value| 1,000,000 XBt; order margin (cross, IM 1%, two
    // taker fees of 0.075%) = 10,000 + 1,500 = 11,500 (see the test above).
    let xbt = limit(0, 0, Side::Buy, 100, px(10000.0));
    // ETHUSD (quanto, 100 XBt per USD per contract, tick 0.05) buy 5 @ 2000.00 (40,000
    // ticks): |value| = 5 × 100 × 40,000 / 20 = 1,000,000 XBt; IM 2%: 20,000 + 1,500 =
    // 21,500. One more contract: 6 × 200,000 = 1,200,000; 24,000 + 1,800 = 25,800.
    let eth = limit(0, 1, Side::Buy, 5, 40_000);
    let eth_one_more = limit(0, 1, Side::Buy, 1, 40_000);

    // 1. Reservations add up across markets of one currency. Wallet 33,000 = 11,500 +
    // 21,500: both fit; the sixth ETHUSD contract needs 25,800 − 21,500 = 4,300 more, and
    // R has reserved all 33,000.
    h.deposit(0, XBT, 33_000);
    let ev = h.run_group(&[Command::Place(xbt), Command::Place(eth), Command::Place(eth_one_more)]);
    let third = h.seq;
    assert_eq!(refusals(&ev), vec![(third, RejectReason::InsufficientAvailableBalance)]);
    assert_eq!(h.engine.order_hold(AccountId(0), MarketId(0)), 11_500);
    assert_eq!(h.engine.order_hold(AccountId(0), MarketId(1)), 21_500);
    assert_eq!(h.engine.available(AccountId(0), XBT), 0);

    // 2. A reservation holds for the whole group, even for an order M then does not rest:
    // an IOC with nobody to trade with is cancelled, but a second order in its group still
    // finds its 11,500 reserved. In groups of their own, the IOC's hold is gone first.
    h.deposit(1, XBT, 11_500);
    let ioc = NewOrder {
        time_in_force: TimeInForce::ImmediateOrCancel,
        ..limit(1, 0, Side::Buy, 100, px(10000.0))
    };
    let gtc = limit(1, 0, Side::Buy, 100, px(10000.0));
    let ev = h.run_group(&[Command::Place(ioc), Command::Place(gtc)]);
    assert_eq!(rejected(&ev), Some(RejectReason::InsufficientAvailableBalance), "{ev:?}");
    assert!(ev.iter().any(|e| matches!(e, Event::OrderCanceled { .. })), "the IOC: {ev:?}");
    assert_eq!(h.engine.order_hold(AccountId(1), MarketId(0)), 0);
    h.run(Command::Place(ioc));
    let ev = h.run(Command::Place(gtc));
    assert_eq!(rejected(&ev), None, "{ev:?}");
    assert_eq!(h.engine.order_hold(AccountId(1), MarketId(0)), 11_500);

    // 3. A deposit is seen from the next group on: R checked the order against the
    // wallet the last group left (0).
    let order = limit(2, 0, Side::Buy, 100, px(10000.0));
    let before = h.engine.state_hash();
    let ev = h.run_group(&[
        Command::Deposit { account: AccountId(2), currency: XBT, amount: 11_500 },
        Command::Place(order),
    ]);
    assert_eq!(rejected(&ev), Some(RejectReason::InsufficientAvailableBalance));
    assert_ne!(h.engine.state_hash(), before, "the deposit itself was taken");
    assert_eq!(wallet(&h, 2, XBT), 11_500);
    let ev = h.run(Command::Place(order));
    assert_eq!(rejected(&ev), None);
}

/// Stage R's decisions are final (DESIGN.md §2): M accepts what R accepted. So whatever
/// changes an account in a way R does not model must end R's segment, and R decides the
/// rest of the group from the state M has reached (`risk.rs`, "Segments"). Each part
/// below would over-commit the account by a whole order's margin if its segment did not
/// end where it does.
#[test]
fn stage_r_decides_each_segment_from_the_state_m_has_reached() {
    let mut h = Harness::new(&EngineConfig::reference(8));
    let a = AccountId;
    // XBTUSD buy 100 @ 10000.0: |value| 1,000,000 XBt; order margin 11,500 (see
    // `initial_margin_is_checked_against_available_balance`).
    let buy = |account| limit(account, 0, Side::Buy, 100, px(10000.0));

    // 1. A withdrawal ends the segment. Wallet 11,500; withdraw 1: the order needs 11,500
    // and 11,499 is left. (Had R decided both against the last group's 11,500, the order
    // would rest with available −1.)
    h.deposit(3, XBT, 11_500);
    let ev = h.run_group(&[
        Command::Withdraw { account: a(3), currency: XBT, amount: 1 },
        Command::Place(buy(3)),
    ]);
    assert_eq!(refusals(&ev), vec![(h.seq, RejectReason::InsufficientAvailableBalance)]);
    assert_eq!(wallet(&h, 3, XBT), 11_499);
    assert_eq!(h.engine.available(a(3), XBT), 11_499);

    // 2. An amend that grows a resting order reserves the growth. Wallet 23,000, one buy
    // 100 resting (hold 11,500, available 11,500). Amend it to 200: |value| 2,000,000,
    // hold 20,000 + 3,000 = 23,000, so +11,500, which M allows (available 11,500). The new
    // buy 100 in the same group needs 11,500 more: R counted the amend's growth, so 0 is
    // left for it.
    h.deposit(4, XBT, 23_000);
    let resting = accepted(&h.run(Command::Place(buy(4))));
    let amend = amend_qty(4, resting, 200);
    let ev = h.run_group(&[Command::Amend(amend), Command::Place(buy(4))]);
    assert!(ev.iter().any(|e| matches!(e, Event::OrderAmended { .. })), "{ev:?}");
    assert_eq!(refusals(&ev), vec![(h.seq, RejectReason::InsufficientAvailableBalance)]);
    assert_eq!(h.engine.order_hold(a(4), MarketId(0)), 23_000);
    assert_eq!(h.engine.available(a(4), XBT), 0);

    // 3. An amend of an order placed earlier in the same segment ends it: R cannot look
    // the order up before M has accepted it. Wallet 23,000: buy 100 (11,500), amend it to
    // 200 (+11,500), buy 100 more (refused: 0 left). A market numbers its orders one by
    // one, so the group can name the order it places.
    h.deposit(5, XBT, 23_000);
    let next = OrderId::new(resting.market(), resting.number() + 1);
    let amend = amend_qty(5, next, 200);
    let ev = h.run_group(&[Command::Place(buy(5)), Command::Amend(amend), Command::Place(buy(5))]);
    assert_eq!(accepted(&ev), next);
    assert_eq!(refusals(&ev), vec![(h.seq, RejectReason::InsufficientAvailableBalance)]);
    assert_eq!(h.engine.order_hold(a(5), MarketId(0)), 23_000);
    assert_eq!(h.engine.available(a(5), XBT), 0);
    h.run(Command::CancelAll { account: a(4), market: None });
    h.run(Command::CancelAll { account: a(5), market: None });

    // 4. A mark ends the segment. Account 2 buys 100 @ 10000.0 from account 0's offer and
    // holds a cross long: cost −1,000,000 (inverse: 100 × round(−1e8 / 10000)), taker fee
    // ⌊0.075% × 1,000,000⌋ = 750, position margin posInit ⌈1% × 1,000,000⌉ = 10,000 plus
    // posComm ⌈0.075% × (1,000,000 + 10,000)⌉ = ⌈757.5⌉ = 758. Wallet 30,000 − 750 =
    // 29,250; available 29,250 − 10,758 = 18,492.
    h.deposit(0, XBT, ONE_XBT);
    h.deposit(2, XBT, 30_000);
    h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10000.0))));
    h.run(Command::Place(NewOrder { time_in_force: TimeInForce::ImmediateOrCancel, ..buy(2) }));
    assert_eq!(h.engine.position(a(2), MarketId(0)).qty, 100);
    assert_eq!(h.engine.available(a(2), XBT), 18_492);
    // Mark 9900.0: the long is worth 100 × round(−1e8 / 9900) = 100 × −10,101 = −1,010,100,
    // a loss of 10,100 that a cross position takes out of the available balance: 8,392.
    // A buy 100 @ 9900.0 needs ⌈1% × 1,010,100⌉ + ⌈0.15% × 1,010,100⌉ = 10,101 + 1,516 =
    // 11,617: refused. Before the mark, 18,492 would have covered it.
    let dip = limit(2, 0, Side::Buy, 100, px(9900.0));
    let ev = h.run_group(&[
        Command::Mark { market: MarketId(0), price: Price(px(9900.0)) },
        Command::Place(dip),
    ]);
    assert_eq!(refusals(&ev), vec![(h.seq, RejectReason::InsufficientAvailableBalance)]);
    assert_eq!(h.engine.available(a(2), XBT), 8_392);
    h.mark(0, px(10000.0));

    h.engine.audit_full().unwrap();
}

/// A stop or if-touched order whose trigger is reached waits for the end of its segment,
/// and executes there under stage R's decision, against the state the segment left: the
/// matcher never reads the account's money for it (`Engine::execute_fired`).
#[test]
fn a_fired_stop_executes_when_its_segment_ends_under_stage_rs_decision() {
    let mut h = Harness::new(&EngineConfig::reference(8));
    let a = AccountId;
    h.deposit(0, XBT, ONE_XBT);
    h.deposit(6, XBT, 20_000);
    h.deposit(7, XBT, ONE_XBT);
    // Account 0 offers 200 @ 10000.5, where a contract is worth round(1e8 / 10000.5) =
    // round(9999.500025) = 10,000 XBt, as at the 10000.0 mark. Account 6 has a buy Stop
    // of 100 on the last price at 10000.5 (there is no last price yet); it holds nothing.
    h.run(Command::Place(limit(0, 0, Side::Sell, 200, px(10000.5))));
    let stop = NewOrder {
        ord_type: OrdType::Stop,
        exec_inst: ExecInst::LAST_PRICE,
        price: None,
        stop_px: Some(Price(px(10000.5))),
        ..limit(6, 0, Side::Buy, 100, 0)
    };
    let stop_id = accepted(&h.run(Command::Place(stop)));
    assert_eq!(h.engine.order_hold(a(6), MarketId(0)), 0);
    // One group: account 7 buys 100 @ 10000.5 (the last price becomes 10000.5: the stop
    // fires and waits), then account 6 bids 100 @ 10000.0. R decided the bid before the
    // segment: 11,500 (|value| 1,000,000; 10,000 + two taker fees of 750) of 20,000, so it
    // rests and 8,500 is left. At the segment's end R decides the stop, a Market buy of 100
    // valued at the best offer, 10000.5: 11,500 again, more than 8,500, so it is
    // cancelled. Its trigger is announced there, after the bid, with the bid's seq.
    let take = limit(7, 0, Side::Buy, 100, px(10000.5));
    let bid = limit(6, 0, Side::Buy, 100, px(10000.0));
    let ev = h.run_group(&[Command::Place(take), Command::Place(bid)]);
    let last = Seq(h.seq);
    let tail: Vec<Event> = ev.iter().rev().take(2).rev().copied().collect();
    assert_eq!(
        tail,
        vec![
            Event::OrderTriggered { seq: last, order: stop_id, ord_type: OrdType::Market },
            Event::OrderCanceled {
                seq: last,
                order: stop_id,
                account: a(6),
                reason: CancelReason::InsufficientBalance,
                leaves: Qty(100),
            },
        ],
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| matches!(e, Event::OrderAccepted { seq, account, .. }
            if *seq == last && *account == a(6))),
        "the bid rests first: {ev:?}"
    );
    assert_eq!(h.engine.position(a(6), MarketId(0)).qty, 0);
    assert_eq!(h.engine.order_hold(a(6), MarketId(0)), 11_500);
    assert_eq!(h.engine.available(a(6), XBT), 8_500);
    h.engine.audit_full().unwrap();
}

/// Stage R decides an amend's margin too, with the segment's reservations, and M takes
/// the decision: here current state would allow the amend and R, rightly by its rules,
/// does not.
#[test]
fn stage_r_decides_an_amend_against_the_segments_reservations() {
    let mut h = Harness::new(&EngineConfig::reference(2));
    // Wallet 23,000; a buy 100 @ 10000.0 rests (hold 11,500, available 11,500).
    h.deposit(1, XBT, 23_000);
    let resting = accepted(&h.run(Command::Place(limit(1, 0, Side::Buy, 100, px(10000.0)))));
    // In one group: an IOC buy 100 @ 10000.0 that finds no seller (R reserves its 11,500,
    // and M cancels it), then an amend of the resting buy to 200 (hold 23,000: 11,500
    // more). R has 11,500 − 11,500 = 0 left for the amend and refuses it; M, with the IOC
    // gone, would have found 11,500.
    let ioc = NewOrder {
        time_in_force: TimeInForce::ImmediateOrCancel,
        ..limit(1, 0, Side::Buy, 100, px(10000.0))
    };
    let amend = amend_qty(1, resting, 200);
    let before = h.engine.order(resting).copied();
    let ev = h.run_group(&[Command::Place(ioc), Command::Amend(amend)]);
    assert!(ev.iter().any(|e| matches!(e, Event::OrderCanceled { .. })), "the IOC: {ev:?}");
    assert_eq!(rejected(&ev), Some(RejectReason::InsufficientAvailableBalance), "{ev:?}");
    assert_eq!(h.engine.order(resting).copied(), before);
    assert_eq!(h.engine.order_hold(AccountId(1), MarketId(0)), 11_500);
    // The next group starts from the state M reached: the amend fits.
    let ev = h.run(Command::Amend(amend));
    assert_eq!(rejected(&ev), None, "{ev:?}");
    assert_eq!(h.engine.order_hold(AccountId(1), MarketId(0)), 23_000);
    assert_eq!(h.engine.available(AccountId(1), XBT), 0);
}

/// Matching takes stage R's decisions without reading the account's money: here the
/// wallet is drained behind the engine's back (a test hook, no double entry) after R
/// decided the group and before M applies it, and M still accepts the order and the amend
/// R accepted. The whole-system recomputation then finds the drained wallet, as it must.
/// (This is what lets a matcher per market run while other markets move the account.)
#[test]
fn matching_reads_no_account_money_to_apply_rs_decisions() {
    let mut h = Harness::new(&EngineConfig::reference(2));
    // Wallet 34,500: a buy 100 @ 10000.0 rests (hold 11,500), leaving 23,000.
    h.deposit(1, XBT, 34_500);
    let resting = accepted(&h.run(Command::Place(limit(1, 0, Side::Buy, 100, px(10000.0)))));
    // One group: amend the resting buy to 200 (hold 23,000: 11,500 more), and a new buy
    // 100 @ 10000.0 (11,500). R reserves both: 23,000 of 23,000.
    let amend = amend_qty(1, resting, 200);
    let group: Vec<Sequenced> =
        [Command::Amend(amend), Command::Place(limit(1, 0, Side::Buy, 100, px(10000.0)))]
            .into_iter()
            .map(|command| {
                h.seq += 1;
                Sequenced { seq: Seq(h.seq), time: h.time, command }
            })
            .collect();
    h.engine.begin_group(&group);
    // Drain the wallet: current state could back neither now.
    h.engine.corrupt_for_test(AccountId(1), XBT, -34_500);
    assert_eq!(wallet(&h, 1, XBT), 0);
    let mut ev = Vec::new();
    for cmd in &group {
        h.engine.apply(cmd, &mut ev);
    }
    assert_eq!(rejected(&ev), None, "{ev:?}");
    assert!(ev.iter().any(|e| matches!(e, Event::OrderAmended { order, .. } if *order == resting)));
    assert_eq!(h.engine.order_hold(AccountId(1), MarketId(0)), 34_500);
    h.engine.end_group(Seq(h.seq), &mut ev);
    assert!(h.engine.audit_full().is_err(), "the recomputation finds the drained wallet");
}

/// What R does not model it does not see until its segment ends, by design (DESIGN.md
/// §2): a fill's fee and its distance from the mark. This is the most an order can
/// over-commit its account by, shown on the numbers.
#[test]
fn stage_r_does_not_see_fills_earlier_in_its_segment() {
    let mut h = Harness::new(&EngineConfig::reference(8));
    h.deposit(0, XBT, ONE_XBT);
    h.deposit(1, XBT, 23_012);
    h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10000.0))));
    // In one group account 1 takes the offer (IOC buy 100 @ 10000.0) and bids 100 @
    // 9990.0. R reserves the IOC's order margin, 11,500 (10,000 + two taker fees of 750),
    // and decides the bid against the 11,512 left of wallet 23,012: the bid needs
    // ⌈1% × 1,001,000⌉ + ⌈0.15% × 1,001,000⌉ = 10,010 + 1,502 = 11,512 (|value| = 100 ×
    // round(1e8 / 9990) = 100 × 10,010), so it is accepted. The IOC's fill then costs the
    // fee 750 and holds 10,758 of position margin (see the test above): 11,508 where R
    // reserved 11,500, leaving 23,012 − 11,508 − 11,512 = −8 available. Eight XBt is the
    // over-commitment here: the fill's fee and posComm against the reservation's two
    // fees. A fill away from the mark adds its unrealised loss, up to the price band. One
    // group later the same bid is refused.
    let ioc = NewOrder {
        time_in_force: TimeInForce::ImmediateOrCancel,
        ..limit(1, 0, Side::Buy, 100, px(10000.0))
    };
    let bid = limit(1, 0, Side::Buy, 100, px(9990.0));
    let ev = h.run_group(&[Command::Place(ioc), Command::Place(bid)]);
    assert_eq!(rejected(&ev), None, "{ev:?}");
    assert_eq!(h.engine.position(AccountId(1), MarketId(0)).qty, 100);
    assert_eq!(h.engine.order_hold(AccountId(1), MarketId(0)), 11_512);
    assert_eq!(h.engine.available(AccountId(1), XBT), -8);
    let ev = h.run(Command::Place(bid));
    assert_eq!(rejected(&ev), Some(RejectReason::InsufficientAvailableBalance));
    // Nothing is lost: the account stays far above maintenance (margin balance 23,012 − 750
    // = 22,262 against posMaint ⌈0.5% × 1,000,000⌉ + 758 = 5,758), and the audit balances.
    h.engine.audit_full().unwrap();
}

/// Account 1, cross, with 200 USDT, buys 0.5 XBT of XBTUSDT from account 0 (50,000 USDT).
/// XBTUSDT (linear, 0.5 USD ticks, qty in 1e-6 XBT): value = qty × ticks / 2 USDt. At
/// 10000.0 (20000 ticks): value 500,000 × 20,000 / 2 = 5,000,000,000 (5,000 USDT); taker
/// fee 0.075% = 3,750,000; wallet 196,250,000.
fn half_xbt_long_on_200_usdt() -> Harness {
    let mut h = Harness::new(&EngineConfig::reference(2));
    h.deposit(0, USDT, 50_000 * ONE_USDT);
    h.deposit(1, USDT, 200 * ONE_USDT);
    h.run(Command::Place(limit(0, 2, Side::Sell, 500_000, 20_000)));
    h.run(Command::Place(market(1, 2, Side::Buy, 500_000)));
    assert_eq!(h.engine.position(AccountId(1), MarketId(2)).qty, 500_000);
    assert_eq!(wallet(&h, 1, USDT), 196_250_000);
    h
}

/// Closing a position may not trade past its bankruptcy price: beyond it the realised loss
/// exceeds the margin behind the position, the wallet cannot pay it, and the insurance fund
/// would (an empty fund halts the engine). Found by the risk soak: a cross long market-sold
/// into a thin book down to the price band.
#[test]
fn a_closing_order_stops_at_the_bankruptcy_price() {
    let mut h = half_xbt_long_on_200_usdt();
    // Bankruptcy (cross, the wallet is the margin): value ≥ cost − margin = 5,000,000,000 −
    // 196,250,000 = 4,803,750,000 ⇔ 250,000 × t ≥ 4,803,750,000 ⇔ t ≥ 19,215 (9607.5).
    assert_eq!(h.engine.bankruptcy_price(AccountId(1), MarketId(2)), Some(Price(19_215)));
    // Bids: 0.1 XBT at 9900.0 (above it) and 0.4 XBT at 9000.0 (the band's edge, below it).
    h.run(Command::Place(limit(0, 2, Side::Buy, 100_000, 19_800)));
    h.run(Command::Place(limit(0, 2, Side::Buy, 400_000, 18_000)));
    let ev = h.run(Command::Place(market(1, 2, Side::Sell, 500_000)));
    let f = fills(&ev);
    assert_eq!(f.len(), 1, "only the bid above the bankruptcy price trades: {ev:?}");
    assert_eq!((f[0].2, f[0].3), (19_800, 100_000), "{ev:?}");
    assert!(ev.iter().any(|e| matches!(e, Event::OrderCanceled { .. })), "the rest: {ev:?}");
    assert!(!ev.iter().any(|e| matches!(e, Event::InsuranceCovered { .. })), "{ev:?}");
    // Sold 0.1 XBT for 100,000 × 19,800 / 2 = 990,000,000 against a cost share of
    // 1,000,000,000: realised −10,000,000; taker fee 0.075% × 990,000,000 = 742,500.
    assert_eq!(wallet(&h, 1, USDT), 196_250_000 - 10_000_000 - 742_500);
    assert_eq!(h.engine.position(AccountId(1), MarketId(2)).qty, 400_000);

    // A limit order priced past it trades only down to it, and does not rest out there
    // (a buyer would fill it past the bankruptcy price later). Bankruptcy now: margin =
    // wallet 185,507,500; cost 4,000,000,000 (0.4 of 5,000,000,000); 200,000 × t ≥
    // 3,814,492,500 ⇔ t ≥ 19,072.46…, so 19,073 (9536.5).
    assert_eq!(h.engine.bankruptcy_price(AccountId(1), MarketId(2)), Some(Price(19_073)));
    let ev = h.run(Command::Place(limit(1, 2, Side::Sell, 400_000, 18_500)));
    assert!(fills(&ev).is_empty(), "the 9000.0 bid is past it: {ev:?}");
    let cancelled = ev
        .iter()
        .any(|e| matches!(e, Event::OrderCanceled { reason: CancelReason::PriceProtection, .. }));
    assert!(cancelled, "{ev:?}");
    assert_eq!(h.engine.book(MarketId(2)).best(Side::Sell), None);

    // At exactly the bankruptcy price the loss takes all but 107,500 of the wallet, less than
    // the taker fee: the Fill still says the nominal fee and a FeeShortfall says what did not
    // move. Sold 0.4 XBT at 19,073: value 200,000 × 19,073 = 3,814,600,000; realised
    // 3,814,600,000 − 4,000,000,000 = −185,400,000; wallet 185,507,500 − 185,400,000 =
    // 107,500. Taker fee 0.075% × 3,814,600,000 = 2,860,950, of which 107,500 is paid and
    // 2,753,450 falls short; the maker's rebate is 0.01% × 3,814,600,000 = 381,460.
    h.run(Command::Place(limit(0, 2, Side::Buy, 400_000, 19_073)));
    let fees_before = h.engine.ledger().balance(Entry::Fees, USDT);
    let ev = h.run(Command::Place(market(1, 2, Side::Sell, 400_000)));
    let f = fills(&ev);
    assert_eq!((f[0].2, f[0].3, f[0].4), (19_073, 400_000, 3_814_600_000), "{ev:?}");
    assert_eq!((f[0].5, f[0].6), (-381_460, 2_860_950), "nominal fees: {ev:?}");
    let shortfalls: Vec<_> = ev
        .iter()
        .filter_map(|e| match *e {
            Event::FeeShortfall { account, currency, amount, .. } => {
                Some((account.0, currency, amount))
            }
            _ => None,
        })
        .collect();
    assert_eq!(shortfalls, [(1, USDT, 2_753_450)], "{ev:?}");
    assert!(!ev.iter().any(|e| matches!(e, Event::InsuranceCovered { .. })), "{ev:?}");
    assert_eq!(wallet(&h, 1, USDT), 0);
    assert_eq!(h.engine.position(AccountId(1), MarketId(2)).qty, 0);
    // The fee account took what moved: 107,500 in, 381,460 out.
    let fees = h.engine.ledger().balance(Entry::Fees, USDT);
    assert_eq!(fees, fees_before + 107_500 - 381_460);
    h.engine.audit_full().unwrap();
}

/// Within a segment a fill's money waits for the segment's end (stage P), and a closing
/// order's bankruptcy price is worked from the money the segment began with, moved by its
/// own market's unsettled fills. XBTUSDT as in
/// `a_closing_order_stops_at_the_bankruptcy_price`.
#[test]
fn a_close_counts_its_markets_unsettled_fills_in_its_segment() {
    // Long 0.5 XBT at 10000.0: cost 5,000,000,000, wallet 196,250,000.
    let mut h = half_xbt_long_on_200_usdt();
    // Bids: 0.1 XBT at 9900.0 and 0.4 XBT at 9525.0 (19,050 ticks).
    h.run(Command::Place(limit(0, 2, Side::Buy, 100_000, 19_800)));
    h.run(Command::Place(limit(0, 2, Side::Buy, 400_000, 19_050)));
    // One group, one segment: a Market sell of the whole position, then a limit sell of the
    // 0.4 XBT it leaves at 9500.0.
    let ev = h.run_group(&[
        Command::Place(market(1, 2, Side::Sell, 500_000)),
        Command::Place(limit(1, 2, Side::Sell, 400_000, 19_000)),
    ]);
    // The first (seq 7, after 2 deposits and 4 orders): bankruptcy with the segment's
    // 196,250,000: 250,000 × t ≥ 5,000,000,000 − 196,250,000 ⇔ t ≥ 19,215, so 0.1 XBT
    // fills at 9900.0 (realised 100,000 × 19,800 / 2 − 1,000,000,000 = −10,000,000; fee
    // 0.075% × 990,000,000 = 742,500) and the rest is cancelled.
    // The second: 196,250,000 − 10,000,000 − 742,500 = 185,507,500 of margin, 200,000 × t ≥
    // 4,000,000,000 − 185,507,500 ⇔ t ≥ 19,072.46…, so 19,073: the 9525.0 bid is past it.
    // (Without its market's unsettled fill it would read 196,250,000: t ≥ 19,018.75, and it
    // would sell at 19,050, losing 190,000,000 of a 185,507,500 wallet.)
    // The first fill's money moves when the segment ends, after both.
    let kinds = labels(&ev, |e| match e {
        Event::Fill { price, qty, .. } => Some(format!("Fill/{}/{}", price.0, qty.0)),
        Event::OrderCanceled { reason, .. } => Some(format!("Canceled/{reason:?}")),
        Event::Realised { seq, account, amount, .. } => {
            Some(format!("Realised/{}/{}/{amount}", seq.0, account.0))
        }
        _ => None,
    });
    // (The maker, short from 10000.0, realises the opposite +10,000,000.)
    assert_eq!(
        kinds,
        [
            "OrderAccepted",
            "Fill/19800/100000",
            "Canceled/PriceProtection",
            "OrderAccepted",
            "Canceled/PriceProtection",
            "Realised/7/0/10000000",
            "Realised/7/1/-10000000",
        ],
        "{ev:?}"
    );
    assert_eq!(wallet(&h, 1, USDT), 185_507_500);
    assert_eq!(h.engine.position(AccountId(1), MarketId(2)).qty, 400_000);
    h.engine.audit_full().unwrap();
}

/// The exception to the bankruptcy limit that settling at the segment's end makes: a close
/// does not see what the account lost in another market earlier in its segment, and the
/// fund covers the gap, as for a maker. Two XBTUSDT-like linear markets (2 and a copy, 3):
/// value = qty × ticks / 2 USDt; IM 1%, taker 0.075%, maker −0.01%. The same commands cut
/// into two groups keep the old, exact limit.
#[test]
fn a_close_does_not_see_a_loss_in_another_market_earlier_in_its_segment() {
    let setup = |bid: i64| {
        let mut config = EngineConfig::reference(2);
        let mut copy = config.markets[2].clone();
        copy.instrument.symbol = "XBTUSDT2".to_string();
        config.markets.push(copy);
        config.insurance_fund[USDT.index()] = 1_000 * ONE_USDT;
        let mut h = Harness::new(&config);
        h.deposit(0, USDT, 50_000 * ONE_USDT);
        h.deposit(1, USDT, 200 * ONE_USDT);
        // Account 1, cross, buys 0.5 XBT in market 2 and 0.05 XBT in market 3 at 10000.0:
        // costs 5,000,000,000 and 500,000,000, taker fees 3,750,000 and 375,000; wallet
        // 200,000,000 − 4,125,000 = 195,875,000.
        h.run(Command::Place(limit(0, 2, Side::Sell, 500_000, 20_000)));
        h.run(Command::Place(market(1, 2, Side::Buy, 500_000)));
        h.run(Command::Place(limit(0, 3, Side::Sell, 50_000, 20_000)));
        h.run(Command::Place(market(1, 3, Side::Buy, 50_000)));
        assert_eq!(wallet(&h, 1, USDT), 195_875_000);
        // Market 3 commits posInit ⌈1% × 500,000,000⌉ = 5,000,000 + posComm ⌈505,000,000 ×
        // 0.075%⌉ = 378,750: the market-2 position's margin is 195,875,000 − 5,378,750.
        assert_eq!(h.engine.position_margin(AccountId(1), MarketId(2)), 190_496_250);
        // Bids: 0.05 XBT at 9000.0 in market 3, 0.5 XBT at `bid` in market 2.
        h.run(Command::Place(limit(0, 3, Side::Buy, 50_000, 18_000)));
        h.run(Command::Place(limit(0, 2, Side::Buy, 500_000, bid)));
        h
    };
    let close_3 = Command::Place(market(1, 3, Side::Sell, 50_000));
    let close_2 = Command::Place(limit(1, 2, Side::Sell, 500_000, 18_000));
    let covered = |ev: &[Event]| {
        ev.iter()
            .filter_map(|e| match *e {
                Event::InsuranceCovered { account, amount, .. } => Some((account.0, amount)),
                Event::FeeShortfall { account, amount, .. } => Some((account.0, -amount)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };

    // One segment. Market 3's close sells at 9000.0: realised 50,000 × 18,000 / 2 −
    // 500,000,000 = −50,000,000, fee 0.075% × 450,000,000 = 337,500 (its own bankruptcy
    // margin, 195,875,000 − market 2's 53,787,500, covers the loss). Market 2's close works
    // its limit from the segment's start: 190,496,250 of margin, 250,000 × t ≥
    // 5,000,000,000 − 190,496,250 ⇔ t ≥ 19,238.02…, so it sells all 0.5 XBT at 19,400:
    // realised 250,000 × 19,400 − 5,000,000,000 = −150,000,000. Settled in fill order, the
    // wallet has 195,875,000 − 50,000,000 − 337,500 = 145,537,500 left for it: the fund
    // covers 4,462,500, and all of the 0.075% × 4,850,000,000 = 3,637,500 fee falls short.
    let mut h = setup(19_400);
    let fund = h.engine.ledger().balance(Entry::Insurance, USDT);
    let ev = h.run_group(&[close_3, close_2]);
    assert_eq!(fills(&ev).len(), 2, "{ev:?}");
    assert_eq!(covered(&ev), [(1, 4_462_500), (1, -3_637_500)], "{ev:?}");
    assert_eq!(wallet(&h, 1, USDT), 0);
    assert_eq!(h.engine.ledger().balance(Entry::Insurance, USDT), fund - 4_462_500);
    h.engine.audit_full().unwrap();

    // Cut between them, market 2's close sees the loss: margin 145,537,500 (market 3 is
    // closed), 250,000 × t ≥ 4,854,462,500 ⇔ t ≥ 19,417.85, so 19,418: the bid at 19,400 is
    // past it, nothing trades, and the fund pays nothing.
    let mut h = setup(19_400);
    h.run_group(&[close_3]);
    let ev = h.run_group(&[close_2]);
    assert!(fills(&ev).is_empty(), "{ev:?}");
    assert_eq!(covered(&ev), [], "{ev:?}");
    assert_eq!(wallet(&h, 1, USDT), 145_537_500);
    h.engine.audit_full().unwrap();

    // The limit reads the segment's start, not market 3's rows as the close left them: with
    // the bid at 19,230 < 19,239 nothing trades in one segment either. (Market 3 closed,
    // its 5,378,750 no longer committed, the margin would be 195,875,000: t ≥ 19,216.5.)
    let mut h = setup(19_230);
    let ev = h.run_group(&[close_3, close_2]);
    assert_eq!(fills(&ev).len(), 1, "only market 3's close trades: {ev:?}");
    assert_eq!(covered(&ev), [], "{ev:?}");
    h.engine.audit_full().unwrap();
}

/// A rebate the fee account cannot fund: the taker's fee fell short (a close at exactly the
/// bankruptcy price) and a maker's bankrupt loss had drained the fee account into the empty
/// insurance fund. Both `FeeShortfall`s say what did not move. XBTUSDT: value = qty ×
/// ticks / 2 USDt; taker 0.075%, maker −0.01%.
#[test]
fn a_rebate_the_fee_account_cannot_fund_is_a_shortfall_too() {
    let fees = |h: &Harness| h.engine.ledger().balance(Entry::Fees, USDT);
    let fund = |h: &Harness| h.engine.ledger().balance(Entry::Insurance, USDT);
    let mut h = Harness::new(&EngineConfig::reference(4));
    h.deposit(0, USDT, 50_000 * ONE_USDT);
    h.deposit(1, USDT, 200 * ONE_USDT);
    h.deposit(2, USDT, 20 * ONE_USDT);
    h.deposit(3, USDT, 50_000 * ONE_USDT);
    // Account 1 buys 0.5 XBT at 10000.0 (as in the test above): value 5,000,000,000; it
    // pays 3,750,000 and account 0 earns a rebate of 500,000: fees 3,250,000.
    h.run(Command::Place(limit(0, 2, Side::Sell, 500_000, 20_000)));
    h.run(Command::Place(market(1, 2, Side::Buy, 500_000)));
    // Account 2 buys 0.01 XBT at 10000.0: value 10,000 × 20,000 / 2 = 100,000,000; fee
    // 75,000, rebate 10,000: fees 3,315,000; its wallet 20,000,000 − 75,000 = 19,925,000.
    h.run(Command::Place(limit(0, 2, Side::Sell, 10_000, 20_000)));
    h.run(Command::Place(market(2, 2, Side::Buy, 10_000)));
    assert_eq!((fees(&h), wallet(&h, 2, USDT)), (3_315_000, 19_925_000));
    // It rests its close at 9000.0, the band's edge: value 10,000 × 18,000 / 2 =
    // 90,000,000, a loss of 10,000,000 its wallet can still pay. Then it withdraws down to
    // 6,700,000 (a resting order is not re-checked when the wallet moves).
    h.run(Command::Place(limit(2, 2, Side::Sell, 10_000, 18_000)));
    let out = Command::Withdraw { account: AccountId(2), currency: USDT, amount: 13_225_000 };
    assert_eq!(rejected(&h.run(out)), None);
    // Account 3 takes the close: realised −10,000,000 against a wallet of 6,700,000.
    // The fund is empty, so the fee account pays the 3,300,000 short into it (fees 15,000)
    // and the fund covers the wallet. Then account 3 pays 67,500 and account 2 earns 9,000:
    // fees 15,000 + 67,500 − 9,000 = 73,500.
    let ioc = TimeInForce::ImmediateOrCancel;
    let ev = h.run(Command::Place(NewOrder {
        time_in_force: ioc,
        ..limit(3, 2, Side::Buy, 10_000, 18_000)
    }));
    assert!(ev.iter().any(|e| matches!(e, Event::FundTopUp { amount: 3_300_000, .. })), "{ev:?}");
    assert_eq!((fees(&h), fund(&h), wallet(&h, 2, USDT)), (73_500, 0, 9_000));
    // Account 1 closes at exactly its bankruptcy price 19,215 (test above): value 500,000 ×
    // 19,215 / 2 = 4,803,750,000, realised −196,250,000: its wallet is 0. Its fee,
    // 0.075% × 4,803,750,000 = 3,602,812 (truncated), does not move at all; account 0's
    // rebate, 480,375, gets the 73,500 the fee account holds: 406,875 short.
    h.run(Command::Place(limit(0, 2, Side::Buy, 500_000, 19_215)));
    let ev = h.run(Command::Place(market(1, 2, Side::Sell, 500_000)));
    let f = fills(&ev);
    assert_eq!((f[0].2, f[0].5, f[0].6), (19_215, -480_375, 3_602_812), "{ev:?}");
    let shortfalls: Vec<_> = ev
        .iter()
        .filter_map(|e| match *e {
            Event::FeeShortfall { account, amount, .. } => Some((account.0, amount)),
            _ => None,
        })
        .collect();
    assert_eq!(shortfalls, [(1, 3_602_812), (0, -406_875)], "{ev:?}");
    assert_eq!((wallet(&h, 1, USDT), fees(&h)), (0, 0));
    h.engine.audit_full().unwrap();
}

/// Each market numbers its own orders (a matcher per market shares no counter), and an id
/// says its market. Past its last number a market refuses new orders; the others go on.
#[test]
fn each_market_numbers_its_orders_and_refuses_past_the_last_number() {
    let mut h = harness();
    let (xbt, eth) = (MarketId(0), MarketId(1));
    // ETHUSD ticks are 0.05 USD: 2010.00 is 40,200 ticks.
    let a = accepted(&h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10100.0)))));
    let b = accepted(&h.run(Command::Place(limit(0, 1, Side::Sell, 1, 40_200))));
    let c = accepted(&h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10100.0)))));
    assert_eq!((a, b, c), (OrderId::new(xbt, 1), OrderId::new(eth, 1), OrderId::new(xbt, 2)));
    assert_eq!((b.market(), b.number()), (eth, 1));

    h.engine.skip_order_numbers_for_test(xbt, OrderId::MAX_NUMBER);
    let last = accepted(&h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10100.0)))));
    assert_eq!(last, OrderId::new(xbt, OrderId::MAX_NUMBER));
    let hash = h.engine.state_hash();
    let ev = h.run(Command::Place(limit(1, 0, Side::Buy, 100, px(9900.0))));
    assert_eq!(rejected(&ev), Some(RejectReason::CapacityExhausted), "{ev:?}");
    assert_eq!(h.engine.state_hash(), hash, "a refusal changes nothing");
    let d = accepted(&h.run(Command::Place(limit(1, 1, Side::Buy, 1, 39_800))));
    assert_eq!(d, OrderId::new(eth, 2));
    // The last order works like any other.
    let ev = h.run(Command::Cancel { account: AccountId(0), order: last });
    assert!(ev.iter().any(|e| matches!(e, Event::OrderCanceled { order, .. } if *order == last)));
    h.engine.audit_full().unwrap();
}

/// Each market's slice of the order table is pre-allocated: when it is full, the market
/// refuses new orders until one stops working, nothing else changes, and the other markets
/// are not affected.
#[test]
fn a_full_market_refuses_new_orders_until_one_stops_working() {
    let mut config = EngineConfig::reference(8);
    config.markets[0].max_orders = 2;
    let mut h = Harness::new(&config);
    for a in 0..2 {
        h.deposit(a, XBT, ONE_XBT);
    }
    let a = accepted(&h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10100.0)))));
    // A stop holds a slot too.
    let stop = NewOrder { stop_px: Some(Price(px(10200.0))), ..market(0, 0, Side::Buy, 100) };
    let stop = NewOrder { ord_type: OrdType::Stop, ..stop };
    accepted(&h.run(Command::Place(stop)));
    let hash = h.engine.state_hash();
    let ev = h.run(Command::Place(limit(1, 0, Side::Buy, 100, px(9900.0))));
    assert_eq!(rejected(&ev), Some(RejectReason::CapacityExhausted), "{ev:?}");
    assert_eq!(h.engine.state_hash(), hash, "a refusal changes nothing");
    accepted(&h.run(Command::Place(limit(1, 1, Side::Buy, 1, 39_800))));
    h.run(Command::Cancel { account: AccountId(0), order: a });
    let ev = h.run(Command::Place(limit(1, 0, Side::Buy, 100, px(9900.0))));
    assert_eq!(rejected(&ev), None, "{ev:?}");
    h.engine.audit_full().unwrap();
}

/// Matching moves no money: a taker's fills come first, then their money, fill by fill in
/// the order they matched (what a settle stage apart from the matchers would do).
#[test]
fn a_takers_money_moves_after_its_fills_in_fill_order() {
    let mut h = harness();
    // Account 1 buys 200 XBTUSD at 10000.0: cost 200 × round(−1e8 / 10000) = −2,000,000,
    // taker fee 0.075% × 2,000,000 = 1,500.
    h.run(Command::Place(limit(0, 0, Side::Sell, 200, px(10000.0))));
    h.run(Command::Place(limit(1, 0, Side::Buy, 200, px(10000.0))));
    // Bids of 100 at 9990.0 (account 2) and 100 at 9980.0 (account 3).
    h.run(Command::Place(limit(2, 0, Side::Buy, 100, px(9990.0))));
    h.run(Command::Place(limit(3, 0, Side::Buy, 100, px(9980.0))));
    let ev = h.run(Command::Place(market(1, 0, Side::Sell, 200)));
    // Each fill takes half the cost, −1,000,000. At 9990.0 the 100 are worth
    // 100 × round(−1e8 / 9990 = −10010.01) = −1,001,000: realised −1,000 (the long's loss
    // is 100 × (10000 − 10010)). At 9980.0: 100 × round(−10020.04) = −1,002,000: −2,000.
    let kinds = labels(&ev, |e| match e {
        Event::Fill { maker_account, .. } => Some(format!("Fill/{}", maker_account.0)),
        Event::Realised { account, amount, .. } => Some(format!("Realised/{}/{amount}", account.0)),
        _ => None,
    });
    assert_eq!(
        kinds,
        ["OrderAccepted", "Fill/2", "Fill/3", "Realised/1/-1000", "Realised/1/-2000"],
        "{ev:?}"
    );
    // Its fees: 0.075% of 1,001,000 = 750.75 → 750 and of 1,002,000 = 751.5 → 751.
    let f = fills(&ev);
    assert_eq!((f[0].6, f[1].6), (750, 751), "{ev:?}");
    assert_eq!(wallet(&h, 1, XBT), ONE_XBT - 1_500 - 1_000 - 2_000 - 750 - 751);
    h.engine.audit_full().unwrap();
}

#[test]
fn maintenance_and_position_margin_follow_bitmex_fields() {
    let mut h = harness();
    h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10000.0))));
    h.run(Command::Place(limit(1, 0, Side::Buy, 100, px(10000.0))));
    let inst = h.engine.instrument(MarketId(0)).clone();
    let p = h.engine.position(AccountId(1), MarketId(0));
    // |cost| = 1,000,000. posInit = ⌈1% × 1,000,000⌉ = 10,000; posComm = ⌈(1,000,000 +
    // 10,000) × 0.00075⌉ = ⌈757.5⌉ = 758; init = 10,758. posMaint = ⌈0.5% × 1,000,000⌉ +
    // 758 = 5,758.
    assert_eq!(p.init_margin(&inst), 10_758);
    assert_eq!(p.maint_margin(&inst), 5_758);
}

#[test]
fn cross_margin_loss_eats_available_isolated_does_not() {
    let mut h = Harness::new(&EngineConfig::reference(2));
    h.deposit(0, XBT, 1_000_000);
    h.deposit(1, XBT, 1_000_000);
    h.run(Command::Place(limit(1, 0, Side::Sell, 100, px(10000.0))));
    h.run(Command::Place(limit(0, 0, Side::Buy, 100, px(10000.0))));
    // Account 0: long 100 @ 10000, cost −1,000,000, paid taker fee 750: wallet 999,250.
    assert_eq!(wallet(&h, 0, XBT), 999_250);
    h.mark(0, px(9500.0));
    // Mark value = 100 × round(−1e8/9500 = −10526.3) = −1,052,600; unrealised =
    // −1,052,600 − (−1,000,000) = −52,600.
    // Cross: available = 999,250 − (10,000 + 758) − 52,600 = 935,892.
    assert_eq!(h.engine.available(AccountId(0), XBT), 935_892);
    let ev = h.run(Command::SetLeverage {
        account: AccountId(0),
        market: MarketId(0),
        leverage: Leverage(1000),
    });
    assert_eq!(rejected(&ev), None);
    // Isolated 10x: posInit = ⌈10% × 1,000,000⌉ = 100,000; posComm = ⌈1,100,000 × 0.00075⌉
    // = 825; the loss stays inside the isolated margin: available = 999,250 − 100,825 =
    // 898,425.
    assert_eq!(h.engine.available(AccountId(0), XBT), 898_425);
    h.engine.audit_full().unwrap();
}

#[test]
fn iceberg_refresh_loses_priority() {
    let mut h = harness();
    let ice = amdahl_types::NewOrder {
        display_qty: Some(Qty(100)),
        ..limit(0, 0, Side::Sell, 1000, px(10000.0))
    };
    let ice_id = accepted(&h.run(Command::Place(ice)));
    let plain_id = accepted(&h.run(Command::Place(limit(2, 0, Side::Sell, 500, px(10000.0)))));
    // The first 100 come from the iceberg's displayed slice (it was first in the queue).
    let ev = h.run(Command::Place(market(1, 0, Side::Buy, 100)));
    assert_eq!(fills(&ev)[0].0, ice_id);
    // The refreshed slice went to the back: the plain order fills next.
    let ev = h.run(Command::Place(market(1, 0, Side::Buy, 200)));
    let f = fills(&ev);
    assert_eq!((f[0].0, f[0].3), (plain_id, 200));
    // 300 left on the plain order, then the iceberg's slice: a 500 buy takes 300 + 100 +
    // (refresh, alone in the queue) 100.
    let ev = h.run(Command::Place(market(1, 0, Side::Buy, 500)));
    let f = fills(&ev);
    let makers: Vec<_> = f.iter().map(|x| (x.0, x.3)).collect();
    assert_eq!(makers, vec![(plain_id, 300), (ice_id, 100), (ice_id, 100)]);
}

#[test]
fn amend_priority_rules() {
    let mut h = harness();
    let a = accepted(&h.run(Command::Place(limit(0, 0, Side::Sell, 500, px(10000.0)))));
    let b = accepted(&h.run(Command::Place(limit(2, 0, Side::Sell, 500, px(10000.0)))));
    let amend = |order, qty: Option<i64>, price: Option<i64>| {
        Command::Amend(AmendOrder {
            account: AccountId(0),
            order,
            qty: qty.map(Qty),
            price: price.map(Price),
            stop_px: None,
        })
    };
    // Quantity down keeps priority: `a` still fills first.
    assert_eq!(rejected(&h.run(amend(a, Some(300), None))), None);
    let ev = h.run(Command::Place(market(1, 0, Side::Buy, 100)));
    assert_eq!(fills(&ev)[0].0, a);
    // Quantity up loses it: `b` now fills first. (a: cum 100, leaves 200 → qty 600, leaves 500.)
    assert_eq!(rejected(&h.run(amend(a, Some(600), None))), None);
    assert_eq!(h.engine.order(a).unwrap().leaves, Qty(500));
    let ev = h.run(Command::Place(market(1, 0, Side::Buy, 100)));
    assert_eq!(fills(&ev)[0].0, b);
    // A price change loses it too, and an amended price that crosses trades at once.
    let bid = accepted(&h.run(Command::Place(limit(3, 0, Side::Buy, 100, px(9990.0)))));
    let ev = h.run(amend(a, None, Some(px(9990.0))));
    let f = fills(&ev);
    assert_eq!((f[0].0, f[0].1, f[0].3), (bid, a, 100));
    // Amend to the same values, or below what is filled, is refused and changes nothing.
    let before = h.engine.state_hash();
    assert_eq!(rejected(&h.run(amend(a, Some(600), None))), Some(RejectReason::InvalidAmend));
    assert_eq!(rejected(&h.run(amend(a, Some(100), None))), Some(RejectReason::InvalidAmend));
    assert_eq!(h.engine.state_hash(), before);
}

#[test]
fn post_only_ioc_fok_and_day_orders() {
    let mut h = harness();
    h.run(Command::Place(limit(0, 0, Side::Sell, 500, px(10000.0))));
    // Post-only that would cross is refused, nothing changes.
    let before = h.engine.state_hash();
    let po = amdahl_types::NewOrder {
        exec_inst: ExecInst::PARTICIPATE_DO_NOT_INITIATE,
        ..limit(1, 0, Side::Buy, 100, px(10000.0))
    };
    assert_eq!(rejected(&h.run(Command::Place(po))), Some(RejectReason::PostOnlyWouldCross));
    assert_eq!(h.engine.state_hash(), before);
    // FOK for more than the book holds is killed without trading.
    let fok = amdahl_types::NewOrder {
        time_in_force: TimeInForce::FillOrKill,
        ..limit(1, 0, Side::Buy, 600, px(10000.0))
    };
    let ev = h.run(Command::Place(fok));
    assert!(fills(&ev).is_empty());
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::OrderCanceled { reason: CancelReason::FillOrKill, leaves: Qty(600), .. }
    )));
    // IOC trades what it can and cancels the rest.
    let ioc = amdahl_types::NewOrder {
        time_in_force: TimeInForce::ImmediateOrCancel,
        ..limit(1, 0, Side::Buy, 600, px(10000.0))
    };
    let ev = h.run(Command::Place(ioc));
    assert_eq!(fills(&ev)[0].3, 500);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::OrderCanceled { reason: CancelReason::ImmediateOrCancel, leaves: Qty(100), .. }
    )));
    // A Day order expires with the first command of the next UTC day.
    let day = amdahl_types::NewOrder {
        time_in_force: TimeInForce::Day,
        ..limit(2, 0, Side::Buy, 100, px(9900.0))
    };
    let id = accepted(&h.run(Command::Place(day)));
    h.time = amdahl_types::Timestamp(h.time.0 + 86_400 * 1_000_000_000);
    let ev = h.mark(0, px(10000.0));
    assert!(ev.contains(&Event::OrderCanceled {
        seq: amdahl_types::Seq(h.seq),
        order: id,
        account: AccountId(2),
        reason: CancelReason::Expired,
        leaves: Qty(100)
    }));
}

#[test]
fn reduce_only_and_close() {
    let mut h = harness();
    h.run(Command::Place(limit(0, 0, Side::Sell, 500, px(10000.0))));
    h.run(Command::Place(limit(1, 0, Side::Buy, 500, px(10000.0))));
    // Account 1 is long 500. A reduce-only buy would increase it: refused.
    let ro = |side, qty, price| amdahl_types::NewOrder {
        exec_inst: ExecInst::REDUCE_ONLY,
        ..limit(1, 0, side, qty, price)
    };
    assert_eq!(
        rejected(&h.run(Command::Place(ro(Side::Buy, 100, px(9000.0))))),
        Some(RejectReason::ReduceOnlyWouldIncrease)
    );
    // Two reduce-only sells: 300 @ 10500 and 300 @ 10400 → the second is clamped to 200.
    let s1 = accepted(&h.run(Command::Place(ro(Side::Sell, 300, px(10500.0)))));
    let ev = h.run(Command::Place(ro(Side::Sell, 300, px(10400.0))));
    assert!(matches!(ev[0], Event::OrderAccepted { qty: Qty(200), .. }));
    // The position shrinks by 200 (a market sell): the least aggressive (highest) sell,
    // s1, is trimmed from 300 to 100 so the two never exceed the position of 300.
    let ev = h.run(Command::Place(limit(0, 0, Side::Buy, 200, px(9990.0))));
    assert_eq!(rejected(&ev), None);
    let ev = h.run(Command::Place(market(1, 0, Side::Sell, 200)));
    assert!(
        ev.iter().any(
            |e| matches!(*e, Event::OrderAmended { order, leaves: Qty(100), .. } if order == s1)
        )
    );
    // Close without a quantity on a flat account is refused.
    let close = amdahl_types::NewOrder {
        exec_inst: ExecInst::CLOSE,
        qty: Qty(0),
        ..limit(7, 0, Side::Sell, 0, px(10000.0))
    };
    assert_eq!(rejected(&h.run(Command::Place(close))), Some(RejectReason::NoPositionToClose));
    h.engine.audit_full().unwrap();
}

#[test]
fn self_trade_cancels_the_resting_order() {
    let mut h = harness();
    let own = accepted(&h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10000.0)))));
    let other = accepted(&h.run(Command::Place(limit(1, 0, Side::Sell, 100, px(10000.0)))));
    let ev = h.run(Command::Place(limit(0, 0, Side::Buy, 100, px(10000.0))));
    let self_trade = |e: &Event| {
        matches!(*e, Event::OrderCanceled { order, reason: CancelReason::SelfTrade, .. }
            if order == own)
    };
    assert!(ev.iter().any(self_trade));
    assert_eq!(fills(&ev)[0].0, other);
}

#[test]
fn stops_trigger_on_mark_and_last_price() {
    let mut h = harness();
    // Liquidity on both sides.
    h.run(Command::Place(limit(0, 0, Side::Sell, 1000, px(10100.0))));
    h.run(Command::Place(limit(0, 0, Side::Buy, 1000, px(9900.0))));
    // A buy stop at 10050 on the mark; a sell stop-limit at 9950 on the last price.
    let stop = amdahl_types::NewOrder {
        ord_type: OrdType::Stop,
        price: None,
        stop_px: Some(Price(px(10050.0))),
        ..limit(1, 0, Side::Buy, 100, 0)
    };
    let id = accepted(&h.run(Command::Place(stop)));
    assert!(h.engine.order(id).is_some());
    // Stops hold no margin until triggered.
    assert_eq!(h.engine.order_hold(AccountId(1), MarketId(0)), 0);
    let ev = h.mark(0, px(10040.0));
    assert!(!ev.iter().any(|e| matches!(e, Event::OrderTriggered { .. })));
    let ev = h.mark(0, px(10050.0));
    assert!(ev.contains(&Event::OrderTriggered {
        seq: amdahl_types::Seq(h.seq),
        order: id,
        ord_type: OrdType::Market
    }));
    assert_eq!(fills(&ev)[0].2, px(10100.0));
    // Last price is now 10100; a sell StopLimit on LastPrice at 10100 triggers at once on
    // acceptance and rests as a limit at 9950 (it crosses the 9900 bid? no: 9950 > 9900).
    let sl = amdahl_types::NewOrder {
        ord_type: OrdType::StopLimit,
        exec_inst: ExecInst::LAST_PRICE,
        stop_px: Some(Price(px(10100.0))),
        ..limit(2, 0, Side::Sell, 100, px(9950.0))
    };
    let ev = h.run(Command::Place(sl));
    assert!(ev.iter().any(|e| matches!(e, Event::OrderTriggered { ord_type: OrdType::Limit, .. })));
    assert_eq!(h.engine.book(MarketId(0)).best_ask(), Some(Price(px(9950.0))));
    h.engine.audit_full().unwrap();
}

#[test]
fn every_bad_input_is_rejected_and_changes_nothing() {
    let mut h = harness();
    let first = accepted(&h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10000.0)))));
    // The market's 77th order: not given out yet.
    let never = OrderId::new(MarketId(0), 77);
    let base = limit(1, 0, Side::Buy, 100, px(9999.0));
    use amdahl_types::NewOrder;
    let cases: Vec<(Command, RejectReason)> = vec![
        (Command::Place(NewOrder { account: AccountId(99), ..base }), RejectReason::UnknownAccount),
        (Command::Place(NewOrder { market: MarketId(9), ..base }), RejectReason::UnknownMarket),
        (Command::Place(NewOrder { qty: Qty(150), ..base }), RejectReason::QtyNotMultipleOfLot),
        (Command::Place(NewOrder { qty: Qty(0), ..base }), RejectReason::QtyNotPositive),
        (Command::Place(NewOrder { qty: Qty(-100), ..base }), RejectReason::QtyNotPositive),
        (Command::Place(NewOrder { qty: Qty(20_000_000), ..base }), RejectReason::QtyTooLarge),
        (
            Command::Place(NewOrder { price: Some(Price(0)), ..base }),
            RejectReason::PriceNotPositive,
        ),
        (
            Command::Place(NewOrder { price: Some(Price(3_000_000)), ..base }),
            RejectReason::PriceTooLarge,
        ),
        (
            Command::Place(NewOrder { price: Some(Price(px(8000.0))), ..base }),
            RejectReason::PriceOutsideBand,
        ),
        (Command::Place(NewOrder { price: None, ..base }), RejectReason::MissingPrice),
        (
            Command::Place(NewOrder { ord_type: OrdType::Stop, price: None, ..base }),
            RejectReason::MissingStopPx,
        ),
        (
            Command::Place(NewOrder { exec_inst: ExecInst::ALL_OR_NONE, ..base }),
            RejectReason::AllOrNoneRemoved,
        ),
        (
            Command::Place(NewOrder { display_qty: Some(Qty(200)), ..base }),
            RejectReason::InvalidDisplayQty,
        ),
        // 1,000,000 × ~10000 XBt = 100 XBT: margin ≈ 1.15 XBT > the 1 XBT wallet.
        (
            Command::Place(NewOrder { qty: Qty(1_000_000), ..base }),
            RejectReason::InsufficientAvailableBalance,
        ),
        // 10,000,000 contracts = 1000 XBT > the 200 XBT base risk limit.
        (
            Command::Place(NewOrder { qty: Qty(10_000_000), ..base }),
            RejectReason::RiskLimitExceeded,
        ),
        (Command::Cancel { account: AccountId(1), order: first }, RejectReason::NotYourOrder),
        (Command::Cancel { account: AccountId(1), order: never }, RejectReason::UnknownOrder),
        (
            Command::Withdraw { account: AccountId(1), currency: XBT, amount: ONE_XBT + 1 },
            RejectReason::InsufficientAvailableBalance,
        ),
        (
            Command::Deposit { account: AccountId(1), currency: XBT, amount: 0 },
            RejectReason::AmountNotPositive,
        ),
        (
            Command::SetLeverage {
                account: AccountId(1),
                market: MarketId(0),
                leverage: Leverage(10_001),
            },
            RejectReason::InvalidLeverage,
        ),
    ];
    for (cmd, want) in cases {
        let before = h.engine.state_hash();
        let ev = h.run(cmd);
        assert_eq!(ev.len(), 1, "{cmd:?} → {ev:?}");
        assert_eq!(rejected(&ev), Some(want), "{cmd:?}");
        assert_eq!(h.engine.state_hash(), before, "{cmd:?} changed state");
    }
    // A cancelled order can no longer be cancelled.
    let id = accepted(&h.run(Command::Place(base)));
    h.run(Command::Cancel { account: AccountId(1), order: id });
    let before = h.engine.state_hash();
    let ev = h.run(Command::Cancel { account: AccountId(1), order: id });
    assert_eq!(rejected(&ev), Some(RejectReason::OrderNotOpen));
    assert_eq!(h.engine.state_hash(), before);
}

#[test]
fn too_many_open_orders() {
    let mut cfg = EngineConfig::reference(2);
    cfg.max_open_orders = 3;
    let mut h = Harness::new(&cfg);
    h.deposit(0, XBT, ONE_XBT);
    for i in 0..3 {
        assert_eq!(
            rejected(&h.run(Command::Place(limit(0, 0, Side::Buy, 100, px(9000.0) + i)))),
            None
        );
    }
    let before = h.engine.state_hash();
    let ev = h.run(Command::Place(limit(0, 0, Side::Buy, 100, px(9100.0))));
    assert_eq!(rejected(&ev), Some(RejectReason::TooManyOpenOrders));
    assert_eq!(h.engine.state_hash(), before);
}

#[test]
fn failed_audit_halts_and_refuses_writes() {
    // The whole-system recomputation is rolled over `audit_cycle` commands; make the cycle
    // one command, so the corruption below is caught at the end of the very next group.
    let mut cfg = EngineConfig::reference(8);
    cfg.audit_cycle = 1;
    let mut h = Harness::new(&cfg);
    h.deposit(0, XBT, ONE_XBT);
    h.mark(0, px(10000.0));
    assert!(!h.engine.is_halted());
    // Corrupt the books from outside the engine's own paths (a wallet changed without its
    // other side): the recomputed Σ wallets no longer matches the running total.
    h.engine.corrupt_for_test(AccountId(0), XBT, 1);
    let ev = h.mark(0, px(10000.0));
    assert!(ev.iter().any(|e| matches!(e, Event::Halted { .. })), "{ev:?}");
    assert!(h.engine.is_halted());
    let evidence = h.engine.halt_evidence().expect("evidence is kept");
    assert!(matches!(evidence.error, amdahl_engine::AuditError::Ledger(_)), "{evidence:?}");
    let ev = h.run(Command::Place(limit(1, 0, Side::Buy, 100, px(9999.0))));
    assert_eq!(rejected(&ev), Some(RejectReason::EngineHalted));
}

/// The whole-system recomputation is spread over `audit_cycle` commands (each group
/// audits the slice of accounts and order slots its commands earned; the group that
/// completes the cycle recounts the sums), so any corruption is found within one cycle,
/// and by the slice that holds it.
#[test]
fn rolling_audit_finds_corruption_within_one_cycle() {
    const EVERY: u64 = 4;
    for corrupt in ["wallet", "cache"] {
        // 8 user accounts + the liquidation engine's = 9 rows; the harness makes each command
        // a group, so a cycle is 4 groups, reaching rows 3, 5, 7 and 9.
        let mut cfg = EngineConfig::reference(8);
        cfg.audit_cycle = EVERY;
        let mut h = Harness::new(&cfg);
        h.deposit(0, XBT, ONE_XBT);
        h.mark(0, px(10000.0));
        match corrupt {
            "wallet" => h.engine.corrupt_for_test(AccountId(0), XBT, 1),
            _ => h.engine.corrupt_margin_cache_for_test(AccountId(7), MarketId(1)),
        }
        let mut groups = 0;
        while !h.engine.is_halted() {
            groups += 1;
            assert!(groups <= EVERY, "{corrupt}: not found within a cycle");
            h.mark(0, px(10000.0));
        }
        let evidence = h.engine.halt_evidence().expect("evidence is kept");
        match corrupt {
            "wallet" => {
                assert!(matches!(evidence.error, amdahl_engine::AuditError::Ledger(_)))
            }
            _ => assert_eq!(
                evidence.error,
                amdahl_engine::AuditError::PositionCache { account: 7, market: MarketId(1) }
            ),
        }
        // The same corruption with the rolling audit off is never found by the per-group
        // ledger audit (it checks the running totals, not the wallets one by one).
        let mut cfg = EngineConfig::reference(8);
        cfg.audit_cycle = 0;
        let mut h = Harness::new(&cfg);
        h.deposit(0, XBT, ONE_XBT);
        match corrupt {
            "wallet" => h.engine.corrupt_for_test(AccountId(0), XBT, 1),
            _ => h.engine.corrupt_margin_cache_for_test(AccountId(7), MarketId(1)),
        }
        for _ in 0..2 * EVERY {
            h.mark(0, px(10000.0));
        }
        assert!(!h.engine.is_halted(), "{corrupt}");
        assert!(h.engine.audit_full().is_err(), "{corrupt}: the whole audit at once finds it");
    }
}

/// The end of a rolled audit cycle does not stream again the rows of a market a mark tick
/// recounted during the cycle; the tick holds them to account instead, including the
/// count of cross rows that picks its pass. Both ways a stale count halts the engine.
#[test]
fn a_stale_cross_row_count_is_found_by_the_next_tick() {
    // (cross margin?, the corruption): a count too high sends isolated rows to the fused
    // pass; one fallen to zero sends cross rows to the pure scan.
    for (cross, delta) in [(false, 1), (true, 1), (true, -2)] {
        let mut cfg = EngineConfig::reference(8);
        cfg.audit_cycle = 0;
        let mut h = Harness::new(&cfg);
        h.deposit(0, XBT, ONE_XBT);
        h.deposit(1, XBT, ONE_XBT);
        if !cross {
            for a in [0, 1] {
                let leverage = Leverage(1_000);
                h.run(Command::SetLeverage {
                    account: AccountId(a),
                    market: MarketId(0),
                    leverage,
                });
            }
        }
        // One position each side: the market has two rows, cross or isolated.
        h.run(Command::Place(limit(0, 0, Side::Sell, 100, px(10000.0))));
        h.run(Command::Place(limit(1, 0, Side::Buy, 100, px(10000.0))));
        assert_eq!(h.engine.position(AccountId(1), MarketId(0)).qty, 100);
        h.mark(0, px(10000.5));
        assert!(!h.engine.is_halted());
        h.engine.corrupt_cross_rows_for_test(MarketId(0), delta);
        h.mark(0, px(10000.0));
        let evidence = h.engine.halt_evidence().expect("the tick finds the stale count");
        assert_eq!(
            evidence.error,
            amdahl_engine::AuditError::PositionCache { account: u32::MAX, market: MarketId(0) },
            "cross: {cross}, delta {delta}"
        );
    }
}

#[test]
fn risk_limit_steps_raise_margins_and_cap_exposure() {
    // XBTUSD: base risk limit 200 XBT (20,000,000,000 XBt), step 100 XBT; each step adds the
    // base MM (0.5%) to IM and MM.
    let mut h = Harness::new(&EngineConfig::reference(3));
    for a in 0..3 {
        h.deposit(a, XBT, 1_000 * ONE_XBT);
    }
    // 2,000,000 contracts @ 10000 = 2,000,000 × 10,000 = 20,000,000,000 XBt: exactly the
    // limit, accepted; 100 more would exceed it.
    h.run(Command::Place(limit(1, 0, Side::Sell, 2_000_000, px(10000.0))));
    h.run(Command::Place(limit(2, 0, Side::Sell, 200, px(10000.0))));
    assert_eq!(
        rejected(&h.run(Command::Place(limit(0, 0, Side::Buy, 2_000_000, px(10000.0))))),
        None
    );
    let before = h.engine.state_hash();
    let ev = h.run(Command::Place(limit(0, 0, Side::Buy, 100, px(10000.0))));
    assert_eq!(rejected(&ev), Some(RejectReason::RiskLimitExceeded));
    assert_eq!(h.engine.state_hash(), before);
    // Not base + whole steps.
    let set = |limit| Command::SetRiskLimit { account: AccountId(0), market: MarketId(0), limit };
    assert_eq!(rejected(&h.run(set(25_000_000_000))), Some(RejectReason::InvalidRiskLimit));
    // One step up (300 XBT): IM 1.5%, MM 1.0%. |cost| = 20,000,000,000:
    // posInit = ⌈1.5% × 2e10⌉ = 300,000,000; posComm = ⌈(2e10 + 3e8) × 0.00075⌉ =
    // 15,225,000; init = 315,225,000. posMaint = ⌈1% × 2e10⌉ + 15,225,000 = 215,225,000.
    assert_eq!(rejected(&h.run(set(30_000_000_000))), None);
    let inst = h.engine.instrument(MarketId(0)).clone();
    let p = h.engine.position(AccountId(0), MarketId(0));
    assert_eq!(
        (p.risk_steps, p.init_margin(&inst), p.maint_margin(&inst)),
        (1, 315_225_000, 215_225_000)
    );
    // Now 100 more fit.
    assert_eq!(rejected(&h.run(Command::Place(limit(0, 0, Side::Buy, 100, px(10000.0))))), None);
    h.engine.audit_full().unwrap();
}
