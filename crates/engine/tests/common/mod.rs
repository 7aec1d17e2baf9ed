//! What the property suites (`properties.rs`, `risk_properties.rs`) share: group cuts, and
//! the check that the event stream explains every balance change.

use amdahl_engine::Engine;
use amdahl_ledger::Entry;
use amdahl_types::{AccountId, CancelReason, Currency, Event, Side};

/// Group sizes from a random cut list, repeated as often as needed (a zero is a group of 1).
pub fn group_sizes(cuts: &[u8]) -> impl Iterator<Item = usize> + '_ {
    cuts.iter().cycle().map(|&c| c.max(1) as usize)
}

/// Cut `len` commands by `cuts` (property 6b's other cuts): group sizes that add up to
/// exactly `len`, the last one shortened to fit.
pub fn cut_lengths(cuts: &[u8], len: usize) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut left = len;
    for size in group_sizes(cuts) {
        if left == 0 {
            break;
        }
        lengths.push(size.min(left));
        left -= size.min(left);
    }
    lengths
}

/// Every user wallet (accounts `0..accounts`), then the fee account and the insurance
/// fund, per currency.
pub fn balances(engine: &Engine, accounts: u32) -> Vec<i64> {
    let l = engine.ledger();
    let mut v = Vec::new();
    for c in Currency::ALL {
        v.extend((0..accounts).map(|a| l.wallet(AccountId(a), c)));
        v.push(l.balance(Entry::Fees, c));
        v.push(l.balance(Entry::Insurance, c));
    }
    v
}

/// What one command moved (`balances` before it, against now), predicted from its events
/// alone: Deposited, Withdrawn, Realised (the liquidation engine's into the fund),
/// InsuranceCovered, FundTopUp, the Fill fees and FeeShortfall. A fill's money moves when
/// its segment ends, which may be a later command of its group: its fees wait in `unsettled`
/// (kept from command to command) until the engine has no unsettled fill left.
pub fn reconcile(
    engine: &Engine,
    accounts: u32,
    before: &[i64],
    evs: &[Event],
    unsettled: &mut Vec<Event>,
) -> Result<(), String> {
    let n = accounts as usize + 2;
    let (fees, ins) = (accounts as usize, accounts as usize + 1);
    let at = |c: Currency, i: usize| c.index() * n + i;
    // The liquidation engine has no wallet here: its PnL is the fund's, its fees are 0.
    let user = |a: AccountId| (a.0 < accounts).then_some(a.0 as usize);
    let settle = |m| engine.instrument(m).settle;
    let mut want = before.to_vec();
    unsettled.extend(evs.iter().filter(|e| matches!(e, Event::Fill { .. })).copied());
    let settled: &[Event] = if engine.unsettled_fills() == 0 { unsettled } else { &[] };
    for e in evs.iter().filter(|e| !matches!(e, Event::Fill { .. })).chain(settled) {
        match *e {
            Event::Deposited { account, currency, amount, .. } => {
                want[at(currency, account.0 as usize)] += amount
            }
            Event::Withdrawn { account, currency, amount, .. } => {
                want[at(currency, account.0 as usize)] -= amount
            }
            Event::Realised { account, market, amount, .. } => {
                want[at(settle(market), user(account).unwrap_or(ins))] += amount;
            }
            Event::InsuranceCovered { account, currency, amount, .. } => {
                want[at(currency, account.0 as usize)] += amount;
                want[at(currency, ins)] -= amount;
            }
            Event::FundTopUp { currency, amount, .. } => {
                want[at(currency, fees)] -= amount;
                want[at(currency, ins)] += amount;
            }
            Event::Fill { market, maker_account, taker_account, maker_fee, taker_fee, .. } => {
                let c = settle(market);
                for (account, fee) in [(taker_account, taker_fee), (maker_account, maker_fee)] {
                    if let Some(a) = user(account) {
                        want[at(c, a)] -= fee;
                    }
                    want[at(c, fees)] += fee;
                }
            }
            Event::FeeShortfall { account, currency, amount, .. } => {
                want[at(currency, account.0 as usize)] += amount;
                want[at(currency, fees)] -= amount;
            }
            _ => {}
        }
    }
    if engine.unsettled_fills() == 0 {
        unsettled.clear();
    }
    let have = balances(engine, accounts);
    if have == want {
        return Ok(());
    }
    let diff: Vec<String> = (0..have.len())
        .filter(|&i| have[i] != want[i])
        .map(|i| {
            let c = Currency::ALL[i / n];
            let who = match i % n {
                x if x == fees => "fees".to_string(),
                x if x == ins => "insurance".to_string(),
                x => format!("wallet {x}"),
            };
            format!("{who} {c}: events say {}, ledger has {}", want[i], have[i])
        })
        .collect();
    Err(format!("balances moved without events: {diff:?}"))
}

/// The money of fills (`Engine::settle_fills`): it moves, and these follow, when the fills'
/// segment ends, which is where the cuts put it.
pub fn is_settlement(e: &Event) -> bool {
    matches!(
        e,
        Event::Realised { .. }
            | Event::InsuranceCovered { .. }
            | Event::FundTopUp { .. }
            | Event::FeeShortfall { .. }
    )
}

/// Where two runs of the same commands under different cuts first differ (property 6b).
/// The settlement events are compared apart from the rest: where they fall is the cuts'.
pub struct Difference {
    pub a: Option<Event>,
    pub b: Option<Event>,
    /// It is the fill (or the price-protection cancel) of a taker reducing its position.
    pub closing: bool,
    /// The rest is identical; this is the first difference among the settlement events.
    pub settlement: bool,
}

impl Difference {
    /// Whether the cuts explain it: an event `decided` names (the suite's margin decisions
    /// and fired orders); a closing order's bankruptcy limit, worked from the money its
    /// segment began with; or what a fill's money met in a wallet, the fee account or the
    /// fund when its segment ended (an insurance cover, a top-up, a fee shortfall).
    pub fn by_cuts(&self, decided: impl Fn(&Event) -> bool) -> bool {
        let either = [self.a, self.b].into_iter().flatten();
        if self.settlement {
            return either.into_iter().any(|e| {
                matches!(
                    e,
                    Event::InsuranceCovered { .. }
                        | Event::FundTopUp { .. }
                        | Event::FeeShortfall { .. }
                )
            });
        }
        self.closing || either.into_iter().any(|e| decided(&e))
    }
}

/// The first difference between `a` and `b`, or `None`: identical but for where the
/// settlement events fall.
pub fn first_difference(a: &[Event], b: &[Event]) -> Option<Difference> {
    let (rest_a, money_a): (Vec<Event>, Vec<Event>) = a.iter().partition(|e| !is_settlement(e));
    let (rest_b, money_b): (Vec<Event>, Vec<Event>) = b.iter().partition(|e| !is_settlement(e));
    let differ =
        |x: &[Event], y: &[Event]| (0..x.len().max(y.len())).find(|&i| x.get(i) != y.get(i));
    if let Some(i) = differ(&rest_a, &rest_b) {
        let (ea, eb) = (rest_a.get(i).copied(), rest_b.get(i).copied());
        let closing = [ea, eb].into_iter().flatten().any(|e| closes(&rest_a[..i], &e));
        return Some(Difference { a: ea, b: eb, closing, settlement: false });
    }
    let i = differ(&money_a, &money_b)?;
    let (a, b) = (money_a.get(i).copied(), money_b.get(i).copied());
    Some(Difference { a, b, closing: false, settlement: true })
}

/// Whether `e` is a fill of a taker, or the price-protection cancel of an order, that
/// reduces its account's position as the events before it (`prefix`) leave it.
fn closes(prefix: &[Event], e: &Event) -> bool {
    let (account, market, side) = match *e {
        Event::Fill { taker_account, market, taker_side, .. } => {
            (taker_account, market, taker_side)
        }
        Event::OrderCanceled { order, account, reason: CancelReason::PriceProtection, .. } => {
            let accepted = prefix.iter().rev().find_map(|p| match *p {
                Event::OrderAccepted { order: o, market, side, .. } if o == order => {
                    Some((market, side))
                }
                _ => None,
            });
            let Some((market, side)) = accepted else { return false };
            (account, market, side)
        }
        _ => return false,
    };
    let mut pos = 0i64;
    for p in prefix {
        match *p {
            Event::Fill { market: m, taker_account, maker_account, taker_side, qty, .. }
                if m == market =>
            {
                let bought = if taker_side == Side::Buy { qty.0 } else { -qty.0 };
                if taker_account == account {
                    pos += bought;
                } else if maker_account == account {
                    pos -= bought;
                }
            }
            Event::Liquidated { account: a, market: m, .. }
            | Event::SettledPosition { account: a, market: m, .. }
                if (a, m) == (account, market) =>
            {
                pos = 0
            }
            Event::Deleveraged { account: a, market: m, qty, .. }
                if (a, m) == (account, market) =>
            {
                pos += qty
            }
            _ => {}
        }
    }
    match side {
        Side::Buy => pos < 0,
        Side::Sell => pos > 0,
    }
}
