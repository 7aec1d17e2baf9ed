//! Property tests of the risk lifecycle: random mark paths (random walks with jumps of
//! several percent) under random leveraged order flow, cut into random groups, with the
//! liquidations each group finds fed back as the first commands of the next group, as the
//! sequencer does (DESIGN.md §2, §4–5).
//!
//! Properties, checked after every group (numbers as in the brief):
//! 1. `end_group` returns true, `audit_full()` is Ok, and no `Halted` event ever appears.
//! 2. No wallet, the fee account, the insurance fund or the clearing entry is negative.
//! 3. Auto-deleveraging happens only when the insurance fund is insufficient: for every
//!    `Liquidate` command the test follows the liquidation engine's position and the fund
//!    through the command's events (takeover, fills of the IOC at the bankruptcy price,
//!    realised PnL, insurance cover) and recomputes, at the moment the engine decides, the
//!    fund's worst loss at the edge of the price band. `Deleveraged` requires fund < worst;
//!    the protected Market order requires fund ≥ worst. Runs with a huge fund (10^15) never
//!    see `Deleveraged`; a deterministic test shows an empty fund does deleverage.
//! 4. After a group's liquidations are taken, every user position below maintenance at the
//!    current mark has its `Liquidate` among them (pending for the next group).
//! 5. Σ position quantity per market (including the liquidation engine's) is 0, and the
//!    liquidation engine's position is flat or it has a resting order in that market.
//! 6. Determinism: the same command stream replayed with the same cuts on 2 and 5 account
//!    shards regenerates exactly the same `Liquidate` commands at the same places (they are
//!    not copied), and gives identical events and `state_hash()` (6a); replayed with other
//!    cuts it does the same, or first differs where the cuts decide: a margin decision,
//!    which stage R makes against the state its segment began from; where a fired order
//!    executes, which is when its segment ends; or which accounts fills leave in
//!    liquidation (the liquidations found, and the orders refused `InLiquidation`), since
//!    fills are checked for maintenance when their group ends; or a closing order's
//!    bankruptcy limit, worked from the money its segment began with. Settlement events are
//!    compared apart: a fill's money moves when its segment ends (6b). With the same cuts,
//!    each segment's market commands matched market by market, each market's on its own
//!    desk (`Engine::match_markets_in_turn`), give identical events and state hash too
//!    (6c).
//! 7. A taker never realises a loss its wallet cannot pay: it trades no further than its
//!    position's bankruptcy price, so the insurance fund covers only makers, gaps and the
//!    liquidation engine (every command) — or a taker that filled in another market of the
//!    currency earlier in its group, which the bankruptcy price, worked from the money its
//!    segment began with, does not see. Runs with the huge fund also rest orders deep in the
//!    book and close whole positions into them, so a close can reach past its bankruptcy
//!    price there (with a smaller fund, makers filled that deep drain it, and the engine
//!    halts by design).
//! 8. The events explain every balance change (every command): each wallet, the fee
//!    account and the insurance fund move exactly by what Deposited, Realised (the
//!    liquidation engine's into the fund), InsuranceCovered, FundTopUp, the Fill fees and
//!    FeeShortfall say, through liquidations, auto-deleveraging and bankrupt closes.
//!
//! Also (deterministic): an empty fund deleverages a bankrupt position with no bids; a
//! composite index (`Lifecycle::index`, fair-price mark) ignores a constituent that jumps by
//! more than the outlier bound, so one venue's crash liquidates nobody.
//!
//! `PROPTEST_CASES=n` sets the number of cases (default 64); the soak test (`--ignored`)
//! reads `AMDAHL_SOAK_CASES` (default 1000). `AMDAHL_RISK_STATS=1` prints what each case
//! exercised (liquidations, ADL, resting liquidation orders, fund-paid Market orders).

mod common;

use common::{balances, cut_lengths, first_difference, group_sizes, reconcile};
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};

use amdahl_engine::testkit::{Harness, limit, market};
use amdahl_engine::{Engine, EngineConfig, Lifecycle};
use amdahl_ledger::Entry;
use amdahl_risk::Position;
use amdahl_risk::fair::MarkMethod;
use amdahl_risk::index::IndexConfig;
use amdahl_types::{
    AccountId, CancelReason, Command, Currency, Event, ExecInst, Leverage, MarketId, NewOrder,
    OrdType, OrderId, Price, Qty, Rate, RejectReason, Seq, Sequenced, Side, TimeInForce, Timestamp,
};
use proptest::prelude::*;

const ACCOUNTS: u32 = 6;
const MARKETS: u16 = 3;
const XBT: Currency = Currency::XBt;
const USDT: Currency = Currency::USDt;
const ONE_XBT: i64 = 100_000_000;
const ONE_USDT: i64 = 1_000_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000_000_000;
const HUGE_FUND: i64 = 1_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;

// ---------------------------------------------------------------------------------------
// Operations and generators
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Op {
    /// A new mark `bp` basis points from the current one.
    Mark {
        m: u8,
        bp: i16,
    },
    /// A GoodTillCancel or IOC limit order `k` steps (0.2% of the mark) from the mark.
    Limit {
        a: u8,
        m: u8,
        buy: bool,
        k: i8,
        lots: u8,
        ioc: bool,
    },
    Market {
        a: u8,
        m: u8,
        buy: bool,
        lots: u8,
    },
    /// A Market order closing the account's whole position in the market (if it is flat:
    /// a cancel-all there instead).
    Close {
        a: u8,
        m: u8,
    },
    /// Account 0, the liquidity, rests a limit order `pct`% from the mark on the passive
    /// side: deep in the book, where a close can walk past its bankruptcy price.
    Deep {
        m: u8,
        buy: bool,
        pct: u8,
        lots: u8,
    },
    /// Leverage from the table `LEVERAGES` (index 7: cross).
    Leverage {
        a: u8,
        m: u8,
        lev: u8,
    },
    /// Cancel an order seen earlier (`pick` modulo the ids seen; may be gone).
    Cancel {
        pick: u16,
    },
    CancelAll {
        a: u8,
        m: u8,
    },
    /// Move `pct`% of 0.01 XBT (100 USDT) into (`into`) or out of an isolated position.
    Transfer {
        a: u8,
        m: u8,
        into: bool,
        pct: u8,
    },
}

/// 1x, 2x, 5x, 10x, 25x, 50x, 100x isolated, and cross.
const LEVERAGES: [u32; 8] = [100, 200, 500, 1_000, 2_500, 5_000, 10_000, 0];

fn op() -> impl Strategy<Value = Op> {
    let acct = 0u8..ACCOUNTS as u8;
    let mkt = 0u8..MARKETS as u8;
    let bp = prop_oneof![8 => -60i16..=60, 2 => -250i16..=250, 1 => -1_200i16..=1_200];
    let lots = prop_oneof![3 => 1u8..=10, 2 => 1u8..=40, 1 => 1u8..=120];
    prop_oneof![
        14 => (mkt.clone(), bp).prop_map(|(m, bp)| Op::Mark { m, bp }),
        24 => (acct.clone(), mkt.clone(), any::<bool>(), -10i8..=10, lots.clone(), any::<bool>())
            .prop_map(|(a, m, buy, k, lots, ioc)| Op::Limit { a, m, buy, k, lots, ioc }),
        8 => (acct.clone(), mkt.clone(), any::<bool>(), lots.clone())
            .prop_map(|(a, m, buy, lots)| Op::Market { a, m, buy, lots }),
        5 => (acct.clone(), mkt.clone()).prop_map(|(a, m)| Op::Close { a, m }),
        5 => (mkt.clone(), any::<bool>(), 2u8..=9, lots)
            .prop_map(|(m, buy, pct, lots)| Op::Deep { m, buy, pct, lots }),
        6 => (acct.clone(), mkt.clone(), 0u8..8).prop_map(|(a, m, lev)| Op::Leverage { a, m, lev }),
        4 => any::<u16>().prop_map(|pick| Op::Cancel { pick }),
        1 => (acct.clone(), mkt.clone()).prop_map(|(a, m)| Op::CancelAll { a, m }),
        3 => (acct, mkt, any::<bool>(), 1u8..=100)
            .prop_map(|(a, m, into, pct)| Op::Transfer { a, m, into, pct }),
    ]
}

/// Group sizes (user commands per group), consumed cyclically.
fn cuts() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![3 => 1u8..=3, 2 => 1u8..=12, 1 => 13u8..=48], 1..16)
}

/// The insurance fund: 0, small, or huge.
fn fund() -> impl Strategy<Value = u8> {
    prop_oneof![2 => Just(0u8), 1 => Just(1u8), 2 => Just(2u8)]
}

fn fund_amounts(kind: u8) -> [i64; Currency::COUNT] {
    match kind {
        0 => [0, 0],
        1 => [ONE_XBT / 1_000, 10 * ONE_USDT],
        _ => [HUGE_FUND, HUGE_FUND],
    }
}

fn config(fund: u8) -> EngineConfig {
    let mut c = EngineConfig::reference(ACCOUNTS);
    c.insurance_fund = fund_amounts(fund);
    c.audit_cycle = 4;
    for m in &mut c.markets {
        m.max_orders = 4_096;
    }
    c
}

/// One rich account (the usual liquidity), three modest ones, two poor ones.
fn deposits() -> Vec<Command> {
    let mut v = Vec::new();
    for a in 0..ACCOUNTS {
        let (x, u) = match a {
            0 => (5 * ONE_XBT, 50_000 * ONE_USDT),
            1..=3 => (ONE_XBT / 2, 5_000 * ONE_USDT),
            _ => (ONE_XBT / 20, 500 * ONE_USDT),
        };
        v.push(Command::Deposit { account: AccountId(a), currency: XBT, amount: x });
        v.push(Command::Deposit { account: AccountId(a), currency: USDT, amount: u });
    }
    v
}

fn opening_mark(m: u16) -> i64 {
    [20_000, 40_000, 20_000][m as usize]
}

fn side(buy: bool) -> Side {
    if buy { Side::Buy } else { Side::Sell }
}

/// Contracts for `lots` steps of about 0.02 XBT (200 USDT) of notional at the mark.
fn order_qty(engine: &Engine, m: MarketId, lots: u8) -> Qty {
    let inst = engine.instrument(m);
    let step = if inst.settle == XBT { ONE_XBT / 50 } else { 200 * ONE_USDT };
    let per_lot = inst.value(inst.lot, engine.mark(m)).abs().max(1);
    let lots_per_step = (step / per_lot).max(1);
    Qty(inst.lot.0 * lots_per_step * lots as i64)
}

fn materialize(op: Op, engine: &Engine, seen: &[(OrderId, AccountId)]) -> Command {
    match op {
        Op::Mark { m, bp } => {
            let mid = MarketId(m as u16);
            let mark = engine.mark(mid).0;
            let open = opening_mark(mid.0);
            // A random walk, kept within [open/4, open*4].
            let next = (mark + mark * bp as i64 / 10_000).clamp(open / 4, open * 4);
            let next = if next == mark { mark + bp.signum() as i64 } else { next };
            Command::Mark { market: mid, price: Price(next.max(1)) }
        }
        Op::Limit { a, m, buy, k, lots, ioc } => {
            let mid = MarketId(m as u16);
            let mark = engine.mark(mid).0;
            let step = (mark / 500).max(1);
            let base = mark - mark % step;
            let price = (base + k as i64 * step).max(1);
            let qty = order_qty(engine, mid, lots);
            let mut o = limit(a as u32, m as u16, side(buy), qty.0, price);
            if ioc {
                o.time_in_force = TimeInForce::ImmediateOrCancel;
            }
            Command::Place(o)
        }
        Op::Market { a, m, buy, lots } => {
            let mid = MarketId(m as u16);
            let qty = order_qty(engine, mid, lots);
            Command::Place(NewOrder {
                account: AccountId(a as u32),
                market: mid,
                side: side(buy),
                ord_type: OrdType::Market,
                time_in_force: TimeInForce::ImmediateOrCancel,
                exec_inst: ExecInst::NONE,
                qty,
                price: None,
                stop_px: None,
                display_qty: None,
                client_tag: 0,
            })
        }
        Op::Close { a, m } => {
            let (account, mid) = (AccountId(a as u32), MarketId(m as u16));
            let qty = engine.position(account, mid).qty;
            if qty == 0 {
                return Command::CancelAll { account, market: Some(mid) };
            }
            Command::Place(NewOrder {
                side: if qty > 0 { Side::Sell } else { Side::Buy },
                time_in_force: TimeInForce::ImmediateOrCancel,
                ..market(a as u32, m as u16, Side::Buy, qty.abs())
            })
        }
        Op::Deep { m, buy, pct, lots } => {
            let mid = MarketId(m as u16);
            let mark = engine.mark(mid).0;
            let away = (mark * pct as i64 / 100).max(1);
            let price = if buy { mark - away } else { mark + away };
            let qty = order_qty(engine, mid, lots);
            Command::Place(limit(0, m as u16, side(buy), qty.0, price.max(1)))
        }
        Op::Leverage { a, m, lev } => Command::SetLeverage {
            account: AccountId(a as u32),
            market: MarketId(m as u16),
            leverage: Leverage(LEVERAGES[lev as usize]),
        },
        Op::Cancel { pick } => {
            let (order, account) = if seen.is_empty() {
                (OrderId::new(MarketId(0), 1), AccountId(0))
            } else {
                seen[pick as usize % seen.len()]
            };
            Command::Cancel { account, order }
        }
        Op::CancelAll { a, m } => {
            Command::CancelAll { account: AccountId(a as u32), market: Some(MarketId(m as u16)) }
        }
        Op::Transfer { a, m, into, pct } => {
            let mid = MarketId(m as u16);
            let unit =
                if engine.instrument(mid).settle == XBT { ONE_XBT } else { 10_000 * ONE_USDT };
            let amount = unit / 100 * pct as i64 / 100;
            Command::TransferMargin {
                account: AccountId(a as u32),
                market: mid,
                amount: if into { amount } else { -amount },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

fn currency_of(engine: &Engine, m: MarketId) -> Currency {
    engine.instrument(m).settle
}

/// The engine's protection price (the band's edge for a Market order on `side`).
fn band_edge(engine: &Engine, m: MarketId, side: Side) -> Price {
    let inst = engine.instrument(m);
    let mark = engine.mark(m).0 as i128;
    let band = inst.price_band.0 as i128;
    let scale = Rate::SCALE as i128;
    let p = match side {
        Side::Buy => (mark * (scale + band)) / scale,
        Side::Sell => (mark * (scale - band) + scale - 1) / scale,
    };
    Price((p as i64).clamp(1, inst.max_price.0))
}

/// What the test saw of the liquidation engine's decisions.
#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    liquidations: u64,
    rejected_liquidations: u64,
    deleveraged: u64,
    fund_market_orders: u64,
    resting_liquidation_orders: u64,
    groups: u64,
    /// Replays with other cuts: identical, or first different where the cuts decide.
    other_cuts_equal: u64,
    other_cuts_at_margin: u64,
}

/// Property 3 for one `Liquidate` command: follow the liquidation engine's position and the
/// fund through the events up to the engine's decision after the IOC at the bankruptcy
/// price, and check the decision against the fund's worst loss at the band edge.
/// `pos` and `fund` are the liquidation engine's position and the fund before the command.
fn check_adl_decision(
    engine: &Engine,
    market: MarketId,
    mut pos: Position,
    mut fund: i64,
    evs: &[Event],
    stats: &mut Stats,
) -> Result<(), String> {
    let liq = engine.liquidator();
    let inst = engine.instrument(market);
    let currency = inst.settle;
    let mut stage1: Option<OrderId> = None;
    let mut decided: Option<(bool, i64, i64)> = None;
    for e in evs {
        match *e {
            Event::Liquidated { market: m, qty, price, .. } if m == market => {
                stats.liquidations += 1;
                let q = Qty(qty.abs());
                pos.apply_fill(
                    if qty > 0 { Side::Buy } else { Side::Sell },
                    q,
                    inst.value(q, price),
                );
            }
            Event::InsuranceCovered { currency: c, amount, .. } if c == currency => fund -= amount,
            Event::FundTopUp { currency: c, amount, .. } if c == currency => fund += amount,
            Event::Realised { account, amount, .. } if account == liq => fund += amount,
            Event::Fill {
                market: m, taker_account, maker_account, taker_side, qty, value, ..
            } if m == market && (taker_account == liq || maker_account == liq) => {
                let s = if taker_account == liq { taker_side } else { taker_side.opposite() };
                pos.apply_fill(s, qty, value);
            }
            Event::OrderAccepted { account, order, ord_type, .. } if account == liq => {
                if stage1.is_none() {
                    stage1 = Some(order);
                    if ord_type != OrdType::Limit {
                        return Err(format!("first liquidation order is {ord_type:?}"));
                    }
                } else if ord_type == OrdType::Market {
                    stats.fund_market_orders += 1;
                    match decided {
                        Some((true, _, _)) => {}
                        other => {
                            return Err(format!(
                                "protected Market liquidation order without a fund able to pay \
                                 the band fill (fund ok, fund, worst) = {other:?}"
                            ));
                        }
                    }
                }
            }
            Event::OrderCanceled { order, .. } if Some(order) == stage1 && decided.is_none() => {
                let closing = if pos.qty > 0 { Side::Sell } else { Side::Buy };
                let edge = band_edge(engine, market, closing);
                let worst = (-pos.unrealised(inst, edge)).max(0);
                decided = Some((fund >= worst, fund, worst));
            }
            Event::Deleveraged { .. } => {
                stats.deleveraged += 1;
                match decided {
                    Some((false, _, _)) => {}
                    other => {
                        return Err(format!(
                            "Deleveraged although the fund could pay the worst band fill \
                             (fund ok, fund, worst) = {other:?}"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Is a `Liquidate` of the account's position in `m` pending? A cross position shares its
/// margin with every other position of the account in that currency (a cross position's
/// loss, or an isolated position's loss beyond its margin, eats the pool), and the pending
/// liquidation of any of them changes that pool, so one pending `Liquidate` of the same
/// account and currency counts for a cross position. If it does not restore it, the check
/// after the next group fails unless the engine queues it again.
fn liquidation_pending(engine: &Engine, pending: &[Command], a: AccountId, m: MarketId) -> bool {
    let cross = engine.position(a, m).leverage == Leverage::CROSS;
    pending.iter().any(|c| match *c {
        Command::Liquidate { account, market } if account == a => {
            market == m || (cross && currency_of(engine, market) == currency_of(engine, m))
        }
        _ => false,
    })
}

/// Properties 2, 4 and 5 after a group (its liquidations already taken into `pending`).
fn check_state(engine: &Engine, pending: &[Command], stats: &mut Stats) -> Result<(), String> {
    let ledger = engine.ledger();
    for c in [XBT, USDT] {
        for a in 0..ACCOUNTS {
            let w = ledger.wallet(AccountId(a), c);
            if w < 0 {
                return Err(format!("wallet of {a} in {c:?} is {w}"));
            }
        }
        for entry in [Entry::Fees, Entry::Insurance, Entry::Clearing] {
            let b = ledger.balance(entry, c);
            if b < 0 {
                return Err(format!("{entry:?} in {c:?} is {b}"));
            }
        }
    }
    let liq = engine.liquidator();
    for m in 0..MARKETS {
        let mid = MarketId(m);
        let mut sum = engine.position(liq, mid).qty;
        for a in 0..ACCOUNTS {
            let a = AccountId(a);
            sum += engine.position(a, mid).qty;
            if engine.is_liquidatable(a, mid) && !liquidation_pending(engine, pending, a, mid) {
                let p = engine.position(a, mid);
                return Err(format!(
                    "account {} is below maintenance in market {m} at mark {} with no \
                     Liquidate pending: position {p:?}, margin {}",
                    a.0,
                    engine.mark(mid).0,
                    engine.position_margin(a, mid),
                ));
            }
        }
        if sum != 0 {
            return Err(format!("Σ position qty in market {m} is {sum}"));
        }
        let lpos = engine.position(liq, mid).qty;
        if lpos != 0 {
            let mut resting = 0i64;
            for s in [Side::Buy, Side::Sell] {
                engine.book(mid).for_each_order(s, |_, o, _| {
                    if o.account == liq {
                        resting += s.sign() * o.leaves.0;
                    }
                });
            }
            if resting == 0 {
                return Err(format!(
                    "liquidation engine holds {lpos} in market {m} with no resting order"
                ));
            }
            stats.resting_liquidation_orders += 1;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------------------

/// The first pass: what it applied, and where it took liquidations.
struct Outcome {
    /// Every command applied, in order, fed-back `Liquidate`s included.
    stream: Vec<Sequenced>,
    /// (number of commands applied, the liquidations taken then) at every group end.
    feeds: Vec<(usize, Vec<Command>)>,
    /// The number of commands in each group.
    cuts: Vec<usize>,
    events: Vec<Event>,
    hash: u128,
    stats: Stats,
}

fn dump(commands: &[Sequenced]) -> String {
    let mut s = String::from("commands (seq: command; Liquidate = fed back by the driver):\n");
    for c in commands {
        s.push_str(&format!("  {}: {:?}\n", c.seq.0, c.command));
    }
    s
}

fn ev_lines(evs: &[Event]) -> String {
    evs.iter().map(|e| format!("  {e:?}\n")).collect()
}

/// Run `ops` with `cuts`, feeding liquidations back, checking properties 1–5, 7 and 8.
fn run_checked(ops: &[Op], cuts: &[u8], fund: u8) -> Result<Outcome, String> {
    let mut engine = Engine::new(&config(fund));
    let mut out = Outcome {
        stream: Vec::new(),
        feeds: Vec::new(),
        cuts: Vec::new(),
        events: Vec::new(),
        hash: 0,
        stats: Stats::default(),
    };
    let mut seen: Vec<(OrderId, AccountId)> = Vec::new();
    let mut unsettled = Vec::new();
    let mut sizes = group_sizes(cuts);
    let mut user: Vec<Result<Command, Op>> = deposits().into_iter().map(Ok).collect();
    user.extend(ops.iter().map(|&o| Err(o)));
    let mut next_user = 0usize;
    let mut pending: Vec<Command> = Vec::new();
    let mut seq = 0u64;
    // Since which seq each (account, market) has been below maintenance (diagnostics).
    let mut since: BTreeMap<(u32, u16), u64> = BTreeMap::new();
    // The first group is the deposits; then random cuts. After the last op, keep feeding
    // liquidations until none are left (each may be worked again only on a mark tick).
    let mut first = true;
    while next_user < user.len() || !pending.is_empty() {
        let take_user = if first { deposits().len() } else { sizes.next().unwrap() };
        first = false;
        let mut group: Vec<Result<Command, Op>> = pending.drain(..).map(Ok).collect();
        let end = (next_user + take_user).min(user.len());
        group.extend_from_slice(&user[next_user..end]);
        next_user = end;
        // Materialized against the state the last group left: stage R sees the group whole.
        let mut numbered = Vec::with_capacity(group.len());
        for step in group {
            let command = match step {
                Ok(c) => c,
                Err(op) => materialize(op, &engine, &seen),
            };
            seq += 1;
            let cmd =
                Sequenced { seq: Seq(seq), time: Timestamp(T0 + seq as i64 * 1_000_000), command };
            out.stream.push(cmd);
            numbered.push(cmd);
        }
        out.cuts.push(numbered.len());
        let last = numbered.last().map_or(Seq(seq), |c| c.seq);
        engine.begin_group(&numbered);
        let mut group_fills = Vec::new();
        for &cmd in &numbered {
            let (seq, command) = (cmd.seq.0, cmd.command);
            let snapshot = match command {
                Command::Liquidate { market, .. } => Some((
                    market,
                    engine.position(engine.liquidator(), market),
                    engine.ledger().balance(Entry::Insurance, currency_of(&engine, market)),
                )),
                _ => None,
            };
            let mut evs = Vec::new();
            let before = balances(&engine, ACCOUNTS);
            engine.apply(&cmd, &mut evs);
            for a in 0..ACCOUNTS {
                for m in 0..MARKETS {
                    if engine.is_liquidatable(AccountId(a), MarketId(m)) {
                        since.entry((a, m)).or_insert(seq);
                    } else {
                        since.remove(&(a, m));
                    }
                }
            }
            let fail = |msg: String, out: &Outcome| {
                Err(format!(
                    "{msg}\nat seq {seq}\nevents:\n{}{}",
                    ev_lines(&evs),
                    dump(&out.stream)
                ))
            };
            if evs.iter().any(|e| matches!(e, Event::Halted { .. })) {
                return fail(format!("halted: {:?}", engine.halt_evidence()), &out);
            }
            if let Err(e) = reconcile(&engine, ACCOUNTS, &before, &evs, &mut unsettled) {
                return fail(format!("property 8: {e}"), &out);
            }
            if let Some((market, pos, fund)) = snapshot {
                if evs.iter().any(|e| matches!(e, Event::Rejected { .. })) {
                    out.stats.rejected_liquidations += 1;
                }
                if let Err(e) = check_adl_decision(&engine, market, pos, fund, &evs, &mut out.stats)
                {
                    return fail(format!("property 3: {e}"), &out);
                }
            }
            // Property 7: a taker never realises a loss its wallet cannot pay (it trades no
            // further than its position's bankruptcy price): the fund covers only makers,
            // gaps and the liquidation engine. The bankruptcy price is worked from the money
            // the segment began with, moved by the market's own fills since
            // (`Engine::closing_margin`), so one exception: the account filled in another
            // market of the currency earlier in the group (it lost money there that the
            // order could not see). The money of command s's fills carries seq s, when it
            // settles at its segment's end.
            for e in &evs {
                match *e {
                    Event::Fill { seq, market, taker_account, maker_account, .. } => {
                        group_fills.push((seq, market, taker_account, maker_account))
                    }
                    Event::InsuranceCovered { seq, account, currency, .. }
                        if account.0 < ACCOUNTS =>
                    {
                        let at = |f: &&(Seq, MarketId, AccountId, AccountId)| f.0 == seq;
                        let here: Vec<_> = group_fills.iter().filter(at).collect();
                        let taker = here.iter().find(|f| f.2 == account).map(|f| f.1);
                        let maker = here.iter().any(|f| f.3 == account);
                        let elsewhere = |m| {
                            group_fills.iter().any(|&(s, k, t, mk)| {
                                s < seq
                                    && (t == account || mk == account)
                                    && k != m
                                    && currency_of(&engine, k) == currency
                            })
                        };
                        if let Some(m) = taker
                            && !maker
                            && !elsewhere(m)
                        {
                            let msg = format!("property 7: the fund covered taker {account:?}");
                            return fail(msg, &out);
                        }
                    }
                    _ => {}
                }
            }
            for e in &evs {
                match *e {
                    Event::OrderAccepted { order, account, .. } if account.0 < ACCOUNTS => {
                        seen.push((order, account))
                    }
                    Event::Deleveraged { .. } if fund == 2 => {
                        return fail("property 3: Deleveraged with a huge fund".into(), &out);
                    }
                    _ => {}
                }
            }
            out.events.extend_from_slice(&evs);
        }
        let mut gev = Vec::new();
        let ok = engine.end_group(last, &mut gev);
        out.stats.groups += 1;
        let fail = |msg: String, out: &Outcome| {
            Err(format!("{msg}\nafter the group ending at seq {seq}\n{}", dump(&out.stream)))
        };
        if !ok || !gev.is_empty() {
            return fail(format!("end_group: {ok} {gev:?} {:?}", engine.halt_evidence()), &out);
        }
        if let Err(e) = engine.audit_full() {
            return fail(format!("audit_full: {e:?}"), &out);
        }
        engine.take_liquidations(&mut pending);
        out.feeds.push((out.stream.len(), pending.clone()));
        if let Err(e) = check_state(&engine, &pending, &mut out.stats) {
            let causes: Vec<String> = since
                .iter()
                .map(|(k, &q)| format!("{k:?} since {q}: {:?}", out.stream[q as usize - 1].command))
                .collect();
            return fail(format!("{e}\nbelow maintenance (account, market):\n{causes:#?}"), &out);
        }
        if out.stats.groups > 100_000 {
            return fail("liquidations never settle".into(), &out);
        }
    }
    out.hash = engine.state_hash();
    Ok(out)
}

/// Whether an event is one where the group cuts decide (DESIGN.md §2, `risk.rs`): a margin
/// refusal (stage R's, or a fired order's as its segment ends), or a fired order's
/// execution, announced by its `OrderTriggered` when its segment ends.
fn cut_dependent(e: &Event) -> bool {
    matches!(
        e,
        Event::Rejected {
            reason: RejectReason::InsufficientAvailableBalance
                | RejectReason::RiskLimitExceeded
                | RejectReason::InLiquidation,
            ..
        } | Event::OrderCanceled { reason: CancelReason::InsufficientBalance, .. }
            | Event::OrderTriggered { .. }
    )
}

/// Property 6: replay the user commands of `run` cut into groups of `cuts` commands on an
/// engine of `shards` account shards, taking the liquidations at the first pass's feed
/// points and checking they are regenerated exactly. With `other_cuts`, a difference in
/// the liquidations found counts as one the cuts decide: fills are checked for
/// maintenance at the end of their group.
fn replay(
    run: &Outcome,
    cuts: &[usize],
    fund: u8,
    shards: u32,
    other_cuts: bool,
    in_turn: bool,
) -> Result<(), Replayed> {
    let mut engine = Engine::with_shards(&config(fund), shards);
    // Markets in turn take a group whole (`apply_group`); with the same cuts every feed is
    // at a group's start, before any of its commands.
    engine.match_markets_in_turn(in_turn);
    let mut whole = Vec::new();
    let mut events = Vec::new();
    let mut feeds = run.feeds.iter().peekable();
    let mut regen: VecDeque<Command> = VecDeque::new();
    let mut at = 0usize;
    let err = |msg: String, events: &[Event]| {
        // Where the replay first left the first pass, if it has: a margin decision there
        // explains everything after it.
        let refused = first_difference(events, &run.events)
            .is_some_and(|d| (d.a.is_some() || d.settlement) && d.by_cuts(cut_dependent));
        Err(Replayed {
            refused,
            msg: format!("property 6 ({shards} shards): {msg}\n{}", dump(&run.stream)),
        })
    };
    // The liquidations found differ before any event does.
    let found_otherwise = |msg: String, events: &[Event]| match err(msg, events) {
        Err(Replayed { refused, msg }) => Err(Replayed { refused: refused || other_cuts, msg }),
        ok => ok,
    };
    for &len in cuts {
        let group = &run.stream[at..at + len];
        if !in_turn {
            engine.begin_group(group);
        }
        whole.clear();
        for (i, recorded) in group.iter().enumerate().map(|(k, r)| (at + k, r)) {
            while let Some((fed, taken)) = feeds.peek() {
                if *fed != i {
                    break;
                }
                if !regen.is_empty() {
                    let msg = format!("liquidations {regen:?} were not fed at seq {}", i + 1);
                    return found_otherwise(msg, &events);
                }
                let mut now = Vec::new();
                engine.take_liquidations(&mut now);
                if &now != taken {
                    let msg =
                        format!("at seq {}: regenerated {now:?}, first pass {taken:?}", i + 1);
                    return found_otherwise(msg, &events);
                }
                regen.extend(now);
                feeds.next();
            }
            let command = match recorded.command {
                Command::Liquidate { .. } => match regen.pop_front() {
                    Some(c) => c,
                    None => {
                        let msg = format!("seq {}: Liquidate not regenerated", i + 1);
                        return found_otherwise(msg, &events);
                    }
                },
                c => {
                    if !regen.is_empty() {
                        let msg = format!("seq {}: {regen:?} not fed", i + 1);
                        return found_otherwise(msg, &events);
                    }
                    c
                }
            };
            let cmd = Sequenced { seq: recorded.seq, time: recorded.time, command };
            if cmd != *recorded {
                return err(format!("seq {}: replayed {cmd:?}", i + 1), &events);
            }
            if in_turn {
                whole.push(cmd);
            } else {
                engine.apply(&cmd, &mut events);
            }
        }
        at += len;
        let ok = if in_turn {
            engine.apply_group(&whole, &mut events)
        } else {
            engine.end_group(group[len - 1].seq, &mut events)
        };
        if !ok {
            return err(format!("the replay halted: {:?}", engine.halt_evidence()), &events);
        }
    }
    // Other cuts settle fills' money elsewhere: compared apart (`first_difference`).
    if events != run.events && (!other_cuts || first_difference(&events, &run.events).is_some()) {
        let i = events
            .iter()
            .zip(&run.events)
            .position(|(a, b)| a != b)
            .unwrap_or(events.len().min(run.events.len()));
        let msg = format!(
            "events differ at {i}: first pass {:?}, replay {:?}",
            run.events.get(i),
            events.get(i)
        );
        return err(msg, &events);
    }
    // The first pass ran until no liquidation was left to feed.
    let mut left = Vec::new();
    engine.take_liquidations(&mut left);
    if !left.is_empty() {
        return found_otherwise(format!("liquidations {left:?} left at the end"), &events);
    }
    if engine.state_hash() != run.hash {
        return err("final state hashes differ".into(), &events);
    }
    Ok(())
}

/// Why a replay differed, and whether it first differed where the cuts decide (with other
/// cuts, that is allowed).
struct Replayed {
    refused: bool,
    msg: String,
}

fn check(ops: &[Op], cuts_a: &[u8], cuts_b: &[u8], fund: u8) -> Result<Stats, String> {
    // Closes into deep books, where a close can walk past its bankruptcy price (the test
    // of property 7), run with the huge fund only: there a maker filled past its own
    // bankruptcy price is covered, as designed; with a small or empty one the fund runs
    // dry and the engine halts, as designed too, which property 1 does not allow.
    let ops: Vec<Op> = ops
        .iter()
        .filter(|op| fund == 2 || !matches!(op, Op::Deep { .. } | Op::Close { .. }))
        .cloned()
        .collect();
    let ops = &ops[..];
    let mut run = run_checked(ops, cuts_a, fund)?;
    // 6a. The same cuts on other account-shard counts: stage R's shards, merged by
    // sequence number, decide exactly what one shard does.
    for shards in [2, 5] {
        replay(&run, &run.cuts, fund, shards, false, false).map_err(|r| r.msg)?;
    }
    // 6c. The same cuts, each segment's market commands matched market by market (what a
    // matcher per market does): identical too.
    replay(&run, &run.cuts, fund, 1, false, true).map_err(|r| format!("in turn: {}", r.msg))?;
    // 6b. Other cuts: identical, or the first difference is one the cuts decide (stage R
    // decides against the state its segment began from, a fired order executes when its
    // segment ends, and fills are checked for maintenance when their group ends;
    // everything before the first one was decided alike).
    let other = cut_lengths(cuts_b, run.stream.len());
    match replay(&run, &other, fund, 1, true, false) {
        Ok(()) => run.stats.other_cuts_equal += 1,
        Err(r) if r.refused => run.stats.other_cuts_at_margin += 1,
        Err(r) => return Err(r.msg),
    }
    if std::env::var_os("AMDAHL_RISK_STATS").is_some() {
        eprintln!("fund {fund} ops {}: {:?}", ops.len(), run.stats);
    }
    Ok(run.stats)
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Regressions are recorded as explicit tests, not in files others share.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Streams of 100–300 operations (shrinking stops at 100; reproductions are then cut by
/// hand into explicit tests).
fn stream(min: usize, max: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), min..=max)
}

proptest! {
    #![proptest_config(proptest_config(cases(64)))]

    /// Properties 1–7 over random mark paths and leveraged order flow.
    #[test]
    fn risk_lifecycle_keeps_every_invariant(
        ops in stream(100, 300),
        a in cuts(),
        b in cuts(),
        fund in fund(),
    ) {
        let r = check(&ops, &a, &b, fund);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// Soak: `AMDAHL_SOAK_CASES=n cargo nextest run -p amdahl-engine --cargo-profile ci
/// --run-ignored only risk_soak`.
#[test]
#[ignore]
fn risk_soak() {
    let n = std::env::var("AMDAHL_SOAK_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let mut runner = proptest::test_runner::TestRunner::new(proptest_config(n));
    let total = Cell::new(Stats::default());
    let result = runner.run(&(stream(100, 800), cuts(), cuts(), fund()), |(ops, a, b, fund)| {
        let r = check(&ops, &a, &b, fund);
        prop_assert!(r.is_ok(), "{}", r.as_ref().unwrap_err());
        let (s, mut t) = (r.unwrap(), total.get());
        t.liquidations += s.liquidations;
        t.rejected_liquidations += s.rejected_liquidations;
        t.deleveraged += s.deleveraged;
        t.fund_market_orders += s.fund_market_orders;
        t.resting_liquidation_orders += s.resting_liquidation_orders;
        t.groups += s.groups;
        t.other_cuts_equal += s.other_cuts_equal;
        t.other_cuts_at_margin += s.other_cuts_at_margin;
        total.set(t);
        Ok(())
    });
    eprintln!("soak totals: {:?}", total.get());
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic tests
// ---------------------------------------------------------------------------------------

/// A 100x isolated long of 10,000 XBTUSD at 10000.0 (bankruptcy 9894.0, liquidation below
/// 9950.0, see tests/liquidation.rs), opposite account 1's short; nobody bids.
fn bankrupt_setup(fund: i64) -> Harness {
    let mut cfg = EngineConfig::reference(4);
    cfg.insurance_fund = [fund, fund];
    let mut h = Harness::new(&cfg);
    for a in 0..4 {
        h.deposit(a, XBT, ONE_XBT);
    }
    h.run(Command::SetLeverage {
        account: AccountId(0),
        market: MarketId(0),
        leverage: Leverage(10_000),
    });
    h.run(Command::Place(limit(1, 0, Side::Sell, 10_000, 20_000)));
    h.run(Command::Place(limit(0, 0, Side::Buy, 10_000, 20_000)));
    assert_eq!(h.engine.position(AccountId(0), MarketId(0)).qty, 10_000);
    h
}

#[test]
fn empty_fund_deleverages_a_bankrupt_position_with_no_bids() {
    let mut h = bankrupt_setup(0);
    // A gap straight through the bankruptcy price: 3% down.
    let ev = h.mark(0, 19_400);
    let liq = h.engine.liquidator();
    assert!(ev.iter().any(|e| matches!(e, Event::Liquidated { qty: 10_000, .. })), "{ev:#?}");
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Deleveraged { account: AccountId(1), qty: 10_000, .. })),
        "{ev:#?}"
    );
    assert_eq!(h.engine.position(liq, MarketId(0)).qty, 0);
    assert_eq!(h.engine.position(AccountId(1), MarketId(0)).qty, 0);
    assert!(h.engine.ledger().balance(Entry::Insurance, XBT) >= 0);
    h.engine.audit_full().unwrap();
}

#[test]
fn huge_fund_rests_instead_of_deleveraging() {
    let mut h = bankrupt_setup(HUGE_FUND);
    let ev = h.mark(0, 19_400);
    let liq = h.engine.liquidator();
    assert!(ev.iter().any(|e| matches!(e, Event::Liquidated { qty: 10_000, .. })));
    assert!(!ev.iter().any(|e| matches!(e, Event::Deleveraged { .. })));
    // The protected Market order found no bid; the position rests at the bankruptcy price.
    assert_eq!(h.engine.position(liq, MarketId(0)).qty, 10_000);
    assert_eq!(h.engine.book(MarketId(0)).best_ask(), Some(Price(19_788)));
    h.engine.audit_full().unwrap();
}

/// The composite index at the engine level: five venues (weights 30/30/20/10/10, outliers
/// beyond 5%, at least 3), the mark is the index (fair price, no funding, no expiry). One
/// venue crashing 18% is ignored, so a 100x long survives; a real 3% move liquidates it.
#[test]
fn index_ignores_an_outlier_constituent() {
    let mut cfg = EngineConfig::reference(4);
    cfg.insurance_fund = [ONE_XBT, 0];
    cfg.markets[0].lifecycle = Lifecycle {
        index: Some(IndexConfig::new(
            &[30, 30, 20, 10, 10],
            60 * SEC,
            Rate(5_000_000),
            3,
            Price(2_000_000),
        )),
        mark: Some(MarkMethod::FairPrice),
        ..Lifecycle::default()
    };
    let mut h = Harness::new(&cfg);
    let venues = |h: &mut Harness, prices: [i64; 5]| -> Vec<Event> {
        let mut ev = Vec::new();
        for (i, p) in prices.into_iter().enumerate() {
            ev.extend(h.run(Command::IndexPrice {
                market: MarketId(0),
                source: i as u8,
                price: Price(p),
            }));
        }
        ev
    };
    venues(&mut h, [20_000; 5]);
    assert_eq!(h.engine.mark(MarketId(0)), Price(20_000));
    for a in 0..4 {
        h.deposit(a, XBT, ONE_XBT);
    }
    h.run(Command::SetLeverage {
        account: AccountId(0),
        market: MarketId(0),
        leverage: Leverage(10_000),
    });
    h.run(Command::Place(limit(1, 0, Side::Sell, 10_000, 20_000)));
    h.run(Command::Place(limit(0, 0, Side::Buy, 10_000, 20_000)));
    assert_eq!(h.engine.position(AccountId(0), MarketId(0)).qty, 10_000);
    // Venue 1 crashes 18% (20000 × 0.82 = 16400): an outlier, excluded; the mark stays.
    let ev = venues(&mut h, [20_000, 16_400, 20_000, 20_000, 20_000]);
    assert!(!ev.iter().any(|e| matches!(e, Event::Liquidated { .. })), "{ev:#?}");
    assert_eq!(h.engine.mark(MarketId(0)), Price(20_000));
    assert_eq!(h.engine.position(AccountId(0), MarketId(0)).qty, 10_000);
    // All venues move 3% down (19400): the mark follows and the 100x long is liquidated.
    let ev = venues(&mut h, [19_400; 5]);
    assert!(ev.iter().any(|e| matches!(e, Event::Liquidated { qty: 10_000, .. })), "{ev:#?}");
    assert!(h.engine.mark(MarketId(0)) <= Price(19_400 + 200));
    assert_eq!(h.engine.position(AccountId(0), MarketId(0)).qty, 0);
    h.engine.audit_full().unwrap();
}

// ---------------------------------------------------------------------------------------
// Regressions: minimal reproductions of what the random tests found (explicit commands).
// ---------------------------------------------------------------------------------------

/// Property 4 (found by the random test on the working tree before `WouldLiquidate`).
/// Raising the leverage of an isolated position that carries an unrealised loss shrinks
/// its margin below maintenance; `set_leverage` accepted it (the available balance did not
/// fall: the loss already dominated the isolated commitment) and did not re-margin, so the
/// position sat below maintenance with no `Liquidate` pending until the next mark tick.
/// Either a refusal or an immediate liquidation satisfies the property.
///
/// 10x long 10,000 XBTUSD at 10000.0 (cost −100,000,000); mark 9850.0 (19700 ticks, unit
/// round(−1e8/9850) = −10152): unrealised −1,520,000. At 100x the margin is 1,075,750, so
/// 1,075,750 − 1,520,000 < posMaint 575,750.
#[test]
fn regression_raising_leverage_below_maintenance_is_not_liquidated() {
    let mut cfg = EngineConfig::reference(4);
    cfg.insurance_fund = [ONE_XBT, 0];
    let mut h = Harness::new(&cfg);
    for a in 0..4 {
        h.deposit(a, XBT, ONE_XBT);
    }
    h.run(Command::SetLeverage {
        account: AccountId(0),
        market: MarketId(0),
        leverage: Leverage(1_000),
    });
    h.run(Command::Place(limit(1, 0, Side::Sell, 10_000, 20_000)));
    h.run(Command::Place(limit(0, 0, Side::Buy, 10_000, 20_000)));
    h.mark(0, 19_700);
    assert!(!h.engine.is_liquidatable(AccountId(0), MarketId(0)));
    // Harness::run feeds whatever the command queued back at once.
    let ev = h.run(Command::SetLeverage {
        account: AccountId(0),
        market: MarketId(0),
        leverage: Leverage(10_000),
    });
    let accepted = ev.iter().any(|e| matches!(e, Event::LeverageChanged { .. }));
    assert!(
        !accepted || !h.engine.is_liquidatable(AccountId(0), MarketId(0)),
        "the leverage change was accepted and left the position below maintenance, not \
         liquidated: position {:?}, margin {}, events {ev:?}",
        h.engine.position(AccountId(0), MarketId(0)),
        h.engine.position_margin(AccountId(0), MarketId(0)),
    );
}

/// Property 4 (found by the random test; open when written, fixed since on the working
/// tree). Moving one position from cross to isolated margin changes the
/// margin pool of the account's other cross positions of the currency: the isolated
/// position then locks max(posInit, loss) instead of contributing its unrealised PnL and
/// maintenance. `set_leverage` checked `WouldLiquidate` only for the market whose leverage
/// changed, so the other cross position was left below maintenance with nothing queued.
///
/// Account 0 (0.03 XBT) is cross short 10,000 XBTUSD at 10000.0 and cross long 50 ETHUSD at
/// 2000.00 (value 10,000,000: posInit 2% = 200,000, posMaint 1% = 100,000); XBTUSD marks
/// at 10220.0 (20440 ticks), the cross pool just above maintenance. Isolating ETHUSD at 50x
/// takes ~100,000 more out of the pool than it frees.
#[test]
fn regression_isolating_one_position_leaves_a_cross_position_below_maintenance() {
    let mut cfg = EngineConfig::reference(4);
    cfg.insurance_fund = [ONE_XBT, 0];
    let mut h = Harness::new(&cfg);
    h.deposit(0, XBT, 3_000_000);
    h.deposit(1, XBT, ONE_XBT);
    for m in [0u16, 1] {
        h.run(Command::SetLeverage {
            account: AccountId(0),
            market: MarketId(m),
            leverage: Leverage::CROSS,
        });
    }
    h.run(Command::Place(limit(1, 0, Side::Buy, 10_000, 20_000)));
    h.run(Command::Place(limit(0, 0, Side::Sell, 10_000, 20_000)));
    h.run(Command::Place(limit(1, 1, Side::Sell, 50, 40_000)));
    h.run(Command::Place(limit(0, 1, Side::Buy, 50, 40_000)));
    assert_eq!(h.engine.position(AccountId(0), MarketId(0)).qty, -10_000);
    assert_eq!(h.engine.position(AccountId(0), MarketId(1)).qty, 50);
    h.mark(0, 20_440);
    assert!(!h.engine.is_liquidatable(AccountId(0), MarketId(0)));
    // Harness::run feeds whatever the command queued back at once.
    let ev = h.run(Command::SetLeverage {
        account: AccountId(0),
        market: MarketId(1),
        leverage: Leverage(5_000),
    });
    let accepted = ev.iter().any(|e| matches!(e, Event::LeverageChanged { .. }));
    assert!(
        !accepted || !h.engine.is_liquidatable(AccountId(0), MarketId(0)),
        "isolating ETHUSD was accepted and left the cross XBTUSD position below maintenance, \
         with no liquidation: events {ev:?}, available {}",
        h.engine.available(AccountId(0), XBT),
    );
}

/// Property 4 (found by the random test on the working tree before fills re-margined the
/// accounts they touch). A resting order placed at the old mark fills after the mark moved
/// away: the maker's new position is below maintenance (here past bankruptcy) at the
/// current mark; when positions were only re-margined on a mark change (and a margin
/// transfer), nothing was queued until the next mark tick of the market.
///
/// Account 0 (0.03 XBT) bids 10,000 XBTUSD at 10000.0 with 100x isolated; the mark falls to
/// 9800.0 (19600 ticks, −2%, the bid stays inside the 10% band); account 1 sells into the
/// bid. Account 0 is long 10,000 at 10000.0 with margin 1,075,750 and an unrealised loss
/// of 10,000 × (10000 − round(1e8/9800) = 10204) = 2,040,000 at the mark.
#[test]
fn regression_fill_far_from_mark_leaves_the_maker_below_maintenance() {
    let mut cfg = EngineConfig::reference(4);
    cfg.insurance_fund = [ONE_XBT, 0];
    let mut h = Harness::new(&cfg);
    h.deposit(0, XBT, 3_000_000);
    h.deposit(1, XBT, ONE_XBT);
    h.run(Command::SetLeverage {
        account: AccountId(0),
        market: MarketId(0),
        leverage: Leverage(10_000),
    });
    let ev = h.run(Command::Place(limit(0, 0, Side::Buy, 10_000, 20_000)));
    assert!(ev.iter().any(|e| matches!(e, Event::OrderAccepted { .. })), "{ev:?}");
    h.mark(0, 19_600);
    let ev = h.run(Command::Place(limit(1, 0, Side::Sell, 10_000, 19_600)));
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::Fill { maker_account: AccountId(0), price: Price(20_000), .. }
        )),
        "{ev:?}"
    );
    // Harness::run has fed back whatever the fill queued.
    assert!(
        !h.engine.is_liquidatable(AccountId(0), MarketId(0)),
        "the maker is below maintenance at mark {} with no liquidation: margin {}, \
         unrealised {}",
        h.engine.mark(MarketId(0)).0,
        h.engine.position_margin(AccountId(0), MarketId(0)),
        h.engine
            .position(AccountId(0), MarketId(0))
            .unrealised(h.engine.instrument(MarketId(0)), h.engine.mark(MarketId(0))),
    );
}

/// Drive `groups` through a fresh engine as the sequencer does: the liquidations each group
/// finds are the first commands of the next group (and of extra groups at the end, until
/// none are left). Returns the engine and every event.
fn run_groups(cfg: &EngineConfig, groups: &[Vec<Command>]) -> (Engine, Vec<Event>) {
    let mut engine = Engine::new(cfg);
    let mut events = Vec::new();
    let mut pending = Vec::new();
    let mut seq = 0u64;
    let mut k = 0;
    while k < groups.len() || !pending.is_empty() {
        let mut group: Vec<Command> = std::mem::take(&mut pending);
        if let Some(g) = groups.get(k) {
            group.extend_from_slice(g);
        }
        k += 1;
        let numbered: Vec<Sequenced> = group
            .into_iter()
            .map(|command| {
                seq += 1;
                Sequenced { seq: Seq(seq), time: Timestamp(T0 + seq as i64 * 1_000_000), command }
            })
            .collect();
        engine.apply_group(&numbered, &mut events);
        engine.take_liquidations(&mut pending);
    }
    (engine, events)
}

/// Properties 1 and 2 (found by the random test; fixed). An underwater cross account
/// escapes its liquidation by switching to isolated margin, and is then granted a position
/// margin its wallet does not hold; the takeover at the bankruptcy price derived from that
/// margin realises a loss larger than the wallet, which an empty insurance fund cannot
/// cover: the engine halts.
///
/// Account 4 (0.05 XBT) is cross long 5,200 XBTUSD at 9980.0 (cost −52,104,000, ~10x). The
/// mark falls to 9126.0 (18252 ticks): unrealised −4,877,600, the cross pool is below
/// maintenance and a `Liquidate` is queued. In the same group the account sets 10x isolated:
/// posInit + posComm = 5,253,386 > wallet 5,013,026. `set_leverage` accepts it because the
/// available balance, already negative, rises (engine.rs, `set_leverage`: `after < 0 &&
/// after < before`), and at 10x the position is above maintenance, so the fed-back
/// `Liquidate` is refused (NotLiquidatable). On the next tick (9109.0) it is liquidated at
/// the bankruptcy price computed from the 5,253,386 margin (9066.0): it realises −5,252,000
/// against a wallet of 5,013,026; `Ledger::realise` asks the fund for 238,974, the fund is
/// empty, and `trade_with_liquidator` halts on the settlement error.
#[test]
fn regression_isolating_an_underwater_cross_position_halts_on_liquidation() {
    let mut cfg = EngineConfig::reference(ACCOUNTS);
    cfg.insurance_fund = [0, 0];
    let buy = limit(4, 0, Side::Buy, 5_400, 19_960);
    let sell = NewOrder {
        ord_type: OrdType::Market,
        time_in_force: TimeInForce::ImmediateOrCancel,
        price: None,
        ..limit(0, 0, Side::Sell, 5_200, 1)
    };
    let groups = vec![
        vec![
            Command::Deposit { account: AccountId(0), currency: XBT, amount: 5 * ONE_XBT },
            Command::Deposit { account: AccountId(4), currency: XBT, amount: 5_000_000 },
        ],
        // Stage R checks a group against the state the last one left: the orders come
        // after the group that credits their margin.
        vec![Command::Place(buy), Command::Place(sell)],
        vec![
            Command::Mark { market: MarketId(0), price: Price(18_252) },
            Command::SetLeverage {
                account: AccountId(4),
                market: MarketId(0),
                leverage: Leverage(1_000),
            },
        ],
        vec![Command::Mark { market: MarketId(0), price: Price(18_218) }],
    ];
    let (_, events) = run_groups(&cfg, &groups);
    let halted = events.iter().any(|e| matches!(e, Event::Halted { .. }));
    assert!(!halted, "the engine halted:\n{}", ev_lines(&events));
}

/// Property 4 (open bug). Auto-deleveraging closes a profitable cross position at the
/// bankruptcy price of the liquidated one, which lies past the mark (the mark gapped
/// through it): the deleveraged account gives up part of its mark-to-market profit, and
/// with it the margin its other cross positions of the currency relied on. `deleverage`
/// (liquidation.rs) does not re-check the deleveraged accounts, so a cross position left
/// below maintenance is not queued until a mark tick of its own market.
///
/// Account 0: 100x isolated long 10,000 XBTUSD at 10000.0 (bankruptcy 9894.0), against
/// account 1 (wallet 0.018 XBT, cross) short 10,000 at 10000.0; account 1 is also cross
/// short 50 ETHUSD at 2000.00. XBTUSD gaps to 9700.0 (profit of the short at the mark:
/// 10,000 × (10309 − 10000) = 3,090,000) and ETHUSD to 2600.00 (loss 3,000,000): account 1
/// is still above maintenance. The fund is empty and nobody bids, so account 0's position
/// is deleveraged against account 1 at 9894.0, realising only 1,070,000: account 1's pool
/// loses 2,020,000 and its ETHUSD position is below maintenance, with nothing queued.
#[test]
fn regression_deleveraged_account_left_below_maintenance() {
    let mut cfg = EngineConfig::reference(ACCOUNTS);
    cfg.insurance_fund = [0, 0];
    let groups = vec![
        vec![
            Command::Deposit { account: AccountId(0), currency: XBT, amount: ONE_XBT },
            Command::Deposit { account: AccountId(1), currency: XBT, amount: 1_800_000 },
            Command::Deposit { account: AccountId(2), currency: XBT, amount: ONE_XBT },
            Command::SetLeverage {
                account: AccountId(0),
                market: MarketId(0),
                leverage: Leverage(10_000),
            },
        ],
        // Stage R checks a group against the state the last one left: the orders come
        // after the group that credits their margin.
        vec![
            Command::Place(limit(1, 0, Side::Sell, 10_000, 20_000)),
            Command::Place(limit(0, 0, Side::Buy, 10_000, 20_000)),
            Command::Place(limit(2, 1, Side::Buy, 50, 40_000)),
            Command::Place(limit(1, 1, Side::Sell, 50, 40_000)),
        ],
        vec![
            Command::Mark { market: MarketId(0), price: Price(19_400) },
            Command::Mark { market: MarketId(1), price: Price(52_000) },
        ],
    ];
    let (engine, events) = run_groups(&cfg, &groups);
    let lines = ev_lines(&events);
    assert!(
        events.iter().any(|e| matches!(e, Event::Deleveraged { account: AccountId(1), .. })),
        "{lines}"
    );
    assert!(
        !engine.is_liquidatable(AccountId(1), MarketId(1)),
        "account 1's cross ETHUSD position is below maintenance after auto-deleveraging, \
         with no Liquidate pending: {:?}, wallet {}\n{lines}",
        engine.position(AccountId(1), MarketId(1)),
        engine.ledger().wallet(AccountId(1), XBT),
    );
}
