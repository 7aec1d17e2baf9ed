//! What the property suites (`properties.rs`, `risk_properties.rs`) share: group cuts, and
//! the check that the event stream explains every balance change.

use amdahl_engine::Engine;
use amdahl_ledger::Entry;
use amdahl_types::{AccountId, Currency, Event};

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
/// InsuranceCovered, FundTopUp, the Fill fees and FeeShortfall.
pub fn reconcile(
    engine: &Engine,
    accounts: u32,
    before: &[i64],
    evs: &[Event],
) -> Result<(), String> {
    let n = accounts as usize + 2;
    let (fees, ins) = (accounts as usize, accounts as usize + 1);
    let at = |c: Currency, i: usize| c.index() * n + i;
    // The liquidation engine has no wallet here: its PnL is the fund's, its fees are 0.
    let user = |a: AccountId| (a.0 < accounts).then_some(a.0 as usize);
    let settle = |m| engine.instrument(m).settle;
    let mut want = before.to_vec();
    for e in evs {
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
