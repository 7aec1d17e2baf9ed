//! Continuous remargin: the open positions of each market packed for the mark-tick pass.
//!
//! Every mark change re-values every open position of that market. To make that pass a
//! stream over memory rather than a walk over accounts, each market keeps its open
//! positions in parallel dense arrays (structure of arrays): account, quantity, cost, and
//! a *floor* — the mark value below which the position is under maintenance. For an
//! isolated position, `margin + markValue − cost < posMaint` is `markValue < cost + posMaint
//! − margin`, so the floor is fixed until the position, its leverage or its margin change,
//! and the pass is one multiply and one compare per position (inverse: markValue = qty ×
//! unit, with the unit value computed once per tick — no division in the loop). A cross
//! position depends on the whole account, so its floor is a sentinel above every value
//! ("always look"): `ACCOUNT_CHECK` sends it to the account's cross sum, `ACCOUNT_DEFER`
//! (the account holds isolated positions beside) to the engine's full account check.
//!
//! Hot bytes per position: 4 (account) + 8 (qty) + 8 (floor) + 8 (cost, for the tick's
//! recount) = 28 ≤ 32. A cross row also reads its account's wallet and moves its 8-byte
//! cross sum; the rows are kept near account order (`OpenPositions::order`) so those
//! accesses walk forwards.

use amdahl_ledger::Ledger;
use amdahl_risk::{ContractKind, Instrument, Position};
use amdahl_types::{AccountId, Currency, Leverage, Money, Price, Qty};
use strength_reduce::StrengthReducedU64;

use crate::orders::NIL;

/// A position's margins, cached when the position changes (they depend on its cost and
/// leverage only): BitMEX posInit + posComm, and posMaint.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct MarginCache {
    pub init: Money,
    pub maint: Money,
}

impl MarginCache {
    pub fn of(pos: &Position, inst: &Instrument) -> MarginCache {
        if pos.qty == 0 && pos.cost == 0 {
            return MarginCache::default();
        }
        MarginCache { init: pos.init_margin(inst), maint: pos.maint_margin(inst) }
    }
}

/// The floor of a cross row decided by its account's cross sum alone (and of every row of
/// the liquidation engine, which the pass hands to the engine).
pub(crate) const ACCOUNT_CHECK: i64 = i64::MAX;
/// The floor of a cross row whose account also holds isolated positions in the currency:
/// the pass still moves the cross sum, but the engine's full account check decides. Kept in
/// the floor rather than read from the account so the pass touches 8 bytes per account
/// (the sum), not 16: at a million positions the cross pass is bound by memory traffic.
pub(crate) const ACCOUNT_DEFER: i64 = i64::MAX - 1;

/// Whether a floor is one of the cross sentinels (no isolated floor reaches them).
#[inline]
pub(crate) fn is_cross(floor: i64) -> bool {
    floor >= ACCOUNT_DEFER
}

/// The sentinel for the account's cross rows, by whether it holds isolated positions in
/// the currency.
#[inline]
pub(crate) fn cross_floor(iso_beside: bool) -> i64 {
    if iso_beside { ACCOUNT_DEFER } else { ACCOUNT_CHECK }
}

/// The mark value below which the position is under maintenance, or a cross sentinel:
/// `ACCOUNT_CHECK` for the liquidation engine, `cross_floor(iso_beside)` for a cross
/// position.
pub(crate) fn floor(
    pos: &Position,
    cache: &MarginCache,
    extra_margin: Money,
    liquidator: bool,
    iso_beside: bool,
) -> i64 {
    if liquidator {
        return ACCOUNT_CHECK;
    }
    if pos.leverage == Leverage::CROSS {
        return cross_floor(iso_beside);
    }
    let f = pos.cost as i128 + cache.maint as i128 - (cache.init + extra_margin) as i128;
    f.clamp(i64::MIN as i128 + 1, ACCOUNT_DEFER as i128 - 1) as i64
}

/// The accounts of one account shard with an open position in one market, packed for the
/// remargin pass.
pub(crate) struct OpenPositions {
    pub accounts: Vec<u32>,
    pub qty: Vec<i64>,
    pub cost: Vec<i64>,
    pub floor: Vec<i64>,
    /// Where each of the shard's accounts (by local index, `account % per_shard`) sits in
    /// the arrays, or `NIL`.
    pub index: Vec<u32>,
    /// Rows whose floor is a cross sentinel (cross positions, the liquidation engine's).
    pub cross_rows: u32,
    /// Rows put out of account order since the arrays were last in it (see `order`).
    disorder: u32,
    per_shard: u32,
}

impl OpenPositions {
    pub fn new(rows: usize, per_shard: u32) -> OpenPositions {
        OpenPositions {
            accounts: Vec::with_capacity(rows),
            qty: Vec::with_capacity(rows),
            cost: Vec::with_capacity(rows),
            floor: Vec::with_capacity(rows),
            index: vec![NIL; rows],
            cross_rows: 0,
            disorder: 0,
            per_shard,
        }
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Where the account sits in the arrays, or `NIL`.
    pub fn at(&self, account: AccountId) -> u32 {
        self.index[(account.0 % self.per_shard) as usize]
    }

    /// Make the packed copy of one account's position true again (insert, update, or
    /// swap-remove when it went flat).
    pub fn sync(&mut self, account: AccountId, pos: &Position, floor: i64) {
        let a = (account.0 % self.per_shard) as usize;
        let at = self.index[a];
        if pos.qty != 0 {
            if at == NIL {
                self.cross_rows += is_cross(floor) as u32;
                let behind = self.accounts.last().is_some_and(|&last| last > account.0);
                self.disorder = self.disorder.saturating_add(behind as u32);
                self.index[a] = self.accounts.len() as u32;
                self.accounts.push(account.0);
                self.qty.push(pos.qty);
                self.cost.push(pos.cost);
                self.floor.push(floor);
            } else {
                let k = at as usize;
                self.cross_rows += is_cross(floor) as u32;
                self.cross_rows -= is_cross(self.floor[k]) as u32;
                self.qty[k] = pos.qty;
                self.cost[k] = pos.cost;
                self.floor[k] = floor;
            }
        } else if at != NIL {
            let k = at as usize;
            self.cross_rows -= is_cross(self.floor[k]) as u32;
            self.accounts.swap_remove(k);
            self.qty.swap_remove(k);
            self.cost.swap_remove(k);
            self.floor.swap_remove(k);
            if let Some(&moved) = self.accounts.get(k) {
                self.index[(moved % self.per_shard) as usize] = k as u32;
                // Saturating: where `order` never runs (few or thin rows) this only grows.
                self.disorder = self.disorder.saturating_add(1);
            }
            self.index[a] = NIL;
        }
    }

    /// Give the account's row, if it is a cross row, the cross sentinel `floor` (its
    /// account began or stopped holding isolated positions beside it).
    pub fn set_cross_floor(&mut self, account: AccountId, floor: i64) {
        debug_assert!(is_cross(floor));
        let at = self.at(account);
        if at != NIL && is_cross(self.floor[at as usize]) {
            self.floor[at as usize] = floor;
        }
    }
}

impl OpenPositions {
    /// Put the rows back in account order once more than an eighth of them are out of
    /// it. The cross pass reads each row's account's cross sum and wallet: in account
    /// order those reads walk memory forwards, which the hardware prefetches; in the order
    /// positions happened to open they are one cache miss each (1M cross positions ticked
    /// at ~35 ns each that way, ~5 in account order: the remargin bench's
    /// `cross_scattered`). Nothing depends on the order of the rows — every
    /// walk that decides anything sorts by account first — so this is layout only, done
    /// by the shard's own pass (in parallel) with no memory beyond the arrays: a walk over
    /// the shard's accounts in order, swapping each one's row into the next place.
    ///
    /// Not for few rows: a few thousand sit in cache in any order, and rows scattered
    /// thinly over many accounts miss on every read in any order, where the walk over all
    /// the shard's accounts would cost more than it saves.
    fn order(&mut self) {
        let n = self.accounts.len();
        if (self.disorder as usize) * 8 <= n || n < 4096 || n * 16 < self.index.len() {
            return;
        }
        let mut next = 0usize;
        for a in 0..self.index.len() {
            let at = self.index[a];
            if at == NIL {
                continue;
            }
            let at = at as usize;
            if at != next {
                // Rows before `next` hold the smaller accounts, in order: `at` is after.
                self.accounts.swap(at, next);
                self.qty.swap(at, next);
                self.cost.swap(at, next);
                self.floor.swap(at, next);
                self.index[(self.accounts[at] % self.per_shard) as usize] = at as u32;
                self.index[a] = next as u32;
            }
            next += 1;
        }
        debug_assert_eq!(next, n, "every row is indexed");
        self.disorder = 0;
    }
}

/// Which account shard holds `account`, and its index there: shards are ranges of
/// `per_shard` consecutive accounts, so a shard's wallets and cross sums are one run of
/// memory that no other shard's pass touches.
#[inline]
pub(crate) fn shard_of(account: u32, per_shard: u32) -> (usize, usize) {
    ((account / per_shard) as usize, (account % per_shard) as usize)
}

/// Make the packed copy of the account's position in `market` true again, in its shard.
#[inline]
pub(crate) fn sync(
    shards: &mut [AccountShard],
    market: amdahl_types::MarketId,
    account: AccountId,
    pos: &Position,
    floor: i64,
) {
    let (s, _) = shard_of(account.0, shards[0].local as u32);
    shards[s].open[market.0 as usize].sync(account, pos, floor);
}

/// One account shard of the remargin stage (DESIGN.md §1, stage P): account `a` belongs
/// to shard `a / per_shard`, at local index `a % per_shard` (see `shard_of`). A shard owns
/// everything a mark tick writes for its accounts — their packed positions in every market
/// and their cross sums — so shards re-margin in parallel without sharing a written byte.
/// Between ticks the engine owns every shard; during a tick's fan-out a shard is moved (its
/// `Vec` headers, not its rows) to the thread that re-margins it, and back before the
/// engine goes on. (`Default` is an empty shard, no allocation: the placeholder left
/// behind while a shard is away.)
#[derive(Default)]
pub(crate) struct AccountShard {
    /// Per market: this shard's open positions.
    pub open: Vec<OpenPositions>,
    /// Per (currency, local account) — currency-major, so a tick walks one dense run —
    /// the account's cross sum: Σ over its cross positions in the currency of (mark value −
    /// cost − posMaint). With no isolated position beside them, its cross positions are
    /// under maintenance exactly when wallet + sum < 0, so a mark tick re-margins a cross
    /// account by adding its position's change of value and comparing once. The sum of
    /// position values, each of which the risk limits keep far inside `Money`, fits i64: a
    /// sum that would leave it is a broken invariant and panics (checked), never wraps.
    pub cross: Vec<i64>,
    /// Per (currency, local account), as `cross`: how many isolated positions the account
    /// holds in the currency. The pass never reads it: its cross rows' floors say whether
    /// it is zero (`ACCOUNT_CHECK` / `ACCOUNT_DEFER`).
    pub iso: Vec<u32>,
    /// Accounts per shard (the local index range).
    pub local: usize,
    /// The shard's first account id: account `a` sits at local index `a − first`.
    pub first: u32,
    /// What the last pass found (capacity reserved for every account of the shard, so a
    /// pass never allocates).
    pub found: PassFindings,
}

/// A cross sum as the shard stores it (see `AccountShard::cross`).
pub(crate) fn cross_sum(base: i128) -> i64 {
    i64::try_from(base).expect("a cross sum leaves Money: the risk limits failed")
}

/// The account's shard, and its (currency, account) row in that shard's `cross` and `iso`.
#[inline]
pub(crate) fn cross_slot(
    shards: &[AccountShard],
    account: AccountId,
    currency: Currency,
) -> (usize, usize) {
    let local = shards[0].local;
    let (s, a) = shard_of(account.0, local as u32);
    (s, currency.index() * local + a)
}

/// Whether the account holds isolated positions in `currency`: the sentinel its cross rows
/// carry (see `cross_floor`).
#[inline]
pub(crate) fn iso_beside(shards: &[AccountShard], account: AccountId, currency: Currency) -> bool {
    let (s, c) = cross_slot(shards, account, currency);
    shards[s].iso[c] != 0
}

/// One shard's findings in one tick: partial sums for the tick's recount and the
/// liquidation candidates, merged by the engine in a canonical order.
#[derive(Default)]
pub(crate) struct PassFindings {
    /// Σ qty and Σ cost (wrapping) over the shard's positions in the market.
    pub net: i64,
    pub cost: i64,
    /// Rows seen with a cross sentinel floor, to hold `OpenPositions::cross_rows` to
    /// (it picks the pass; the pure scan counts them only on its rare path, which a stale
    /// count always takes: the sentinels are above any value).
    pub cross_rows: u32,
    /// Isolated positions (and the liquidation engine's) at or past their floor.
    pub isolated: Vec<u32>,
    /// Cross accounts under maintenance by their cross sum.
    pub cross: Vec<u32>,
    /// Cross accounts with isolated positions beside: the full account check decides.
    pub deferred: Vec<u32>,
}

impl AccountShard {
    /// Shard `index` of `shards`, over `rows` accounts.
    pub fn new(markets: usize, rows: usize, shards: u32, index: u32) -> AccountShard {
        let local = rows.div_ceil(shards as usize);
        AccountShard {
            first: index * local as u32,
            open: (0..markets).map(|_| OpenPositions::new(local, local as u32)).collect(),
            cross: vec![0; local * Currency::COUNT],
            iso: vec![0; local * Currency::COUNT],
            local,
            found: PassFindings {
                net: 0,
                cost: 0,
                cross_rows: 0,
                isolated: Vec::with_capacity(local),
                cross: Vec::with_capacity(local),
                deferred: Vec::with_capacity(local),
            },
        }
    }
}

/// What a mark tick of one market needs to re-margin a shard; small and `Copy`, so it
/// travels to the shard threads by value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tick {
    pub market: usize,
    pub currency: Currency,
    pub mark: Price,
    pub unit: i64,
    /// The mark (and unit) the cross sums were last moved to.
    pub old_mark: Price,
    pub old_unit: i64,
    pub liquidator: u32,
}

/// The value of linear and quanto contracts at one price, for a pass over many positions:
/// `Instrument::value`'s rule exactly — `round_half_away(qty × k / den)` with `k =
/// multiplier × price × tick.num` — with `k` computed once and the division by the tick's
/// denominator strength-reduced to a multiply (DESIGN.md §3: exact, never floating point).
/// Where `den` divides `k` there is nothing to round and the value is `qty × (k / den)`
/// (ETHUSD at every price; XBTUSDT at every whole dollar). A product that leaves 64 bits
/// falls back to `Instrument::value` and its wide path.
#[derive(Clone, Copy)]
pub(crate) struct LinearValue {
    k: i64,
    den: u64,
    reduced: StrengthReducedU64,
    price: Price,
    /// `k / den` and `k % den` (truncating).
    whole: i64,
    rest: i64,
}

impl LinearValue {
    pub fn new(inst: &Instrument, price: Price) -> Option<LinearValue> {
        if inst.kind == ContractKind::Inverse || price.0 <= 0 || inst.tick.den <= 0 {
            return None;
        }
        let k = inst.multiplier.checked_mul(price.0)?.checked_mul(inst.tick.num)?;
        let den = inst.tick.den as u64;
        let (whole, rest) = (k / inst.tick.den, k % inst.tick.den);
        Some(LinearValue { k, den, reduced: StrengthReducedU64::new(den), price, whole, rest })
    }

    #[inline]
    pub fn value(&self, qty: i64, inst: &Instrument) -> i64 {
        if self.rest == 0
            && let Some(v) = qty.checked_mul(self.whole)
        {
            return v;
        }
        let Some(n) = qty.checked_mul(self.k) else {
            return inst.value(Qty(qty), self.price);
        };
        let a = n.unsigned_abs();
        let q = a / self.reduced;
        let r = a - q * self.den;
        // Half away from zero: up when the remainder is at least half the divisor.
        let rounded = (q + (r >= self.den - r) as u64) as i64;
        if n < 0 { -rounded } else { rounded }
    }

    /// The change of one contract's value since `before`, when every quantity's value
    /// changes by exactly `qty ×` it: with k = whole × den + rest at both prices and the
    /// same rest ≥ 0, `qty × k / den = qty × whole + qty × rest / den`, whose two terms
    /// share the sign of `qty`, so rounding half away from zero touches only the second —
    /// the same at both prices. The change is then `qty × (whole − whole_before)`.
    pub fn change_since(&self, before: &LinearValue) -> Option<i64> {
        let same = self.den == before.den && self.rest == before.rest;
        if !same || self.k <= 0 || before.k <= 0 {
            return None;
        }
        self.whole.checked_sub(before.whole)
    }
}

/// Σ qty, Σ cost (wrapping: compared with the running sum modulo 2^64) and whether any
/// position's mark value is below its floor — one pass, no stores, no early exit.
#[inline]
fn scan(qty: &[i64], cost: &[i64], floor: &[i64], value: impl Fn(i64) -> i64) -> (i64, i64, bool) {
    let (mut net, mut sum, mut below) = (0i64, 0i64, false);
    for ((&q, &c), &f) in qty.iter().zip(cost).zip(floor) {
        net = net.wrapping_add(q);
        sum = sum.wrapping_add(c);
        below |= value(q) < f;
    }
    (net, sum, below)
}

/// Whether a + b < 0, exactly, for any i64s: the wrapped sum's sign, flipped when the
/// addition overflowed. The cross pass makes this test once per row: 4 instructions a row
/// with the wallet's bounds check, where the i128 test took 11 (callgrind,
/// `perf/callgrind.sh` with `CALLGRIND_TOGGLE='*remargin_shard*'`).
#[inline]
fn sum_is_negative(a: i64, b: i64) -> bool {
    let (sum, overflowed) = a.overflowing_add(b);
    (sum < 0) != overflowed
}

/// Re-margin one shard's positions in the tick's market: the stage-P work of a mark tick.
/// Reads the ledger (wallets) and writes only the shard. The findings are a set: the
/// engine queues them in (market, account) order, so neither the layout of the arrays nor
/// the number of shards changes what is queued.
pub(crate) fn remargin_shard(
    shard: &mut AccountShard,
    ledger: &Ledger,
    inst: &Instrument,
    t: &Tick,
) {
    let inverse = inst.kind == ContractKind::Inverse;
    let AccountShard { open, cross, local, first, found, .. } = shard;
    found.isolated.clear();
    found.cross.clear();
    found.deferred.clear();
    let open = &mut open[t.market];
    if open.cross_rows != 0 {
        // Only the cross pass reads by account; the isolated scan reads the rows alone.
        open.order();
    }
    let open = &*open;
    let n = open.len();
    let (accounts, qty, cost, floor) =
        (&open.accounts[..n], &open.qty[..n], &open.cost[..n], &open.floor[..n]);
    let (now, before) = (LinearValue::new(inst, t.mark), LinearValue::new(inst, t.old_mark));
    let value = |q: i64, unit: i64, linear: &Option<LinearValue>, mark: Price| {
        if inverse {
            q * unit
        } else if let Some(l) = linear {
            l.value(q, inst)
        } else {
            inst.value(Qty(q), mark)
        }
    };
    if open.cross_rows == 0 {
        // Isolated positions only. 1. A pure scan that writes nothing: this shard's share
        // of the tick's recount, and whether any position is at or past its floor. Kept
        // free of stores so it streams.
        let (net, sum, any_below) = if inverse {
            scan(qty, cost, floor, |q| q.wrapping_mul(t.unit))
        } else if let Some(l) = &now {
            scan(qty, cost, floor, |q| l.value(q, inst))
        } else {
            scan(qty, cost, floor, |q| inst.value(Qty(q), t.mark))
        };
        found.net = net;
        found.cost = sum;
        found.cross_rows = 0;
        // 2. The rare path: find the positions under their floor.
        if any_below {
            for k in 0..n {
                found.cross_rows += is_cross(floor[k]) as u32;
                if value(qty[k], t.unit, &now, t.mark) < floor[k] {
                    found.isolated.push(accounts[k]);
                }
            }
        }
        return;
    }
    // Cross positions present: every one moves its account's cross sum, so there is no
    // pure pass to skip to; one fused pass recounts, moves the sums and finds. A cross
    // position's change of value is computed directly (inverse: qty × Δunit; both unit
    // values have the multiplier's sign, so |Δunit| is below the larger of them and the
    // product fits wherever the position's values do: checked, a panic only on a broken
    // invariant); the account check is then one compare (deferred to the engine when
    // isolated positions sit beside it, whose locked margin depends on their own marks).
    // All in 64 bits (with the per-row division also gone, the pass ran 16–30% faster:
    // `REMARGIN_PROFILE=cross:N` of the remargin bench).
    let sums = &mut cross[t.currency.index() * *local..][..*local];
    let wallets = ledger.wallets(t.currency);
    let first = *first;
    // A change of value per contract, where one holds for every quantity (inverse: Δunit;
    // linear: `change_since`): one multiply per row instead of two valuations.
    let per_contract = if inverse {
        Some(t.unit.checked_sub(t.old_unit).expect("unit values are far inside i64"))
    } else {
        now.as_ref().zip(before.as_ref()).and_then(|(now, before)| now.change_since(before))
    };
    let (mut net, mut sum, mut cross_rows) = (0i64, 0i64, 0u32);
    for k in 0..n {
        let q = qty[k];
        net = net.wrapping_add(q);
        sum = sum.wrapping_add(cost[k]);
        let account = accounts[k];
        let f = floor[k];
        if !is_cross(f) {
            if value(q, t.unit, &now, t.mark) < f {
                found.isolated.push(account);
            }
            continue;
        }
        cross_rows += 1;
        if account == t.liquidator {
            // The liquidation engine's position is worked on every tick while it lasts.
            found.isolated.push(account);
            continue;
        }
        let delta = match per_contract {
            Some(d) => q.checked_mul(d),
            None => value(q, t.unit, &now, t.mark)
                .checked_sub(value(q, t.old_unit, &before, t.old_mark)),
        };
        let sum_of = &mut sums[(account - first) as usize];
        *sum_of = delta
            .and_then(|d| sum_of.checked_add(d))
            .expect("a cross sum leaves Money: the risk limits failed");
        if f == ACCOUNT_DEFER {
            found.deferred.push(account);
        } else if sum_is_negative(wallets[account as usize], *sum_of) {
            found.cross.push(account);
        }
    }
    found.net = net;
    found.cost = sum;
    found.cross_rows = cross_rows;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After any churn of opens, changes and closes, `order` leaves every row in account
    /// order, still indexed and still holding its own account's numbers, and it runs only
    /// past its eighth.
    #[test]
    fn order_sorts_the_rows_and_keeps_them_indexed() {
        // Shard 1 of 2 over 40,000 accounts: accounts 20,000..40,000, local index a − 20,000.
        let (per_shard, first) = (20_000u32, 20_000u32);
        let mut open = OpenPositions::new(per_shard as usize, per_shard);
        let mut truth = vec![(0i64, 0i64); per_shard as usize];
        let mut sorts = 0;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for round in 0..100 {
            for _ in 0..1500 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let local = (x % per_shard as u64) as usize;
                // A third of the changes close the position.
                let qty = if x.is_multiple_of(3) { 0 } else { (x >> 40) as i64 % 1000 - 500 };
                let pos = Position { qty, cost: -7 * qty, ..Position::default() };
                let floor = match x % 10 {
                    0 => ACCOUNT_CHECK,
                    5 => ACCOUNT_DEFER,
                    _ => 3 * qty,
                };
                open.sync(AccountId(first + local as u32), &pos, floor);
                truth[local] = (qty, floor);
            }
            let disordered = open.disorder as usize * 8 > open.len() && open.len() >= 4096;
            open.order();
            let sorted = open.accounts.is_sorted();
            assert!(sorted || !disordered, "round {round}: still out of order after order()");
            if disordered {
                assert_eq!(open.disorder, 0);
                sorts += 1;
            }
            let mut cross = 0;
            for (local, &(qty, floor)) in truth.iter().enumerate() {
                let account = AccountId(first + local as u32);
                let at = open.at(account);
                if qty == 0 {
                    assert_eq!(at, NIL, "round {round}: a flat account has a row");
                    continue;
                }
                let k = at as usize;
                assert_eq!(open.accounts[k], account.0, "round {round}: index");
                let row = (open.qty[k], open.cost[k], open.floor[k]);
                assert_eq!(row, (qty, -7 * qty, floor), "round {round}: row");
                cross += is_cross(open.floor[k]) as u32;
            }
            assert_eq!(open.len(), truth.iter().filter(|t| t.0 != 0).count());
            assert_eq!(open.cross_rows, cross, "round {round}: cross rows");
        }
        assert!(sorts > 10, "the churn put the rows out of order only {sorts} times");
    }

    /// Where `change_since` offers a per-contract change, every quantity's value changes
    /// by exactly quantity × it (checked against `Instrument::value` at both prices), and
    /// it offers one for the pairs of prices that share k mod den.
    #[test]
    fn linear_change_since_is_exact() {
        let mut odd = Instrument::xbtusdt();
        odd.tick = amdahl_risk::TickSize { num: 1, den: 3 };
        for inst in [Instrument::xbtusdt(), Instrument::ethusd(), odd] {
            let (mut x, mut offered) = (0x2545_F491_4F6C_DD1Du64, 0);
            for _ in 0..100_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let old = Price(1 + (x % 2_000_000) as i64);
                let new = Price((old.0 + (x >> 24) as i64 % 41 - 20).max(1));
                let qty = ((x >> 32) % 2_000_001) as i64 - 1_000_000;
                let (now, before) = (LinearValue::new(&inst, new), LinearValue::new(&inst, old));
                let (now, before) = (now.expect("linear"), before.expect("linear"));
                let want = inst.value(Qty(qty), new) - inst.value(Qty(qty), old);
                if let Some(d) = now.change_since(&before) {
                    offered += 1;
                    assert_eq!(qty * d, want, "{qty}: {old:?} -> {new:?}");
                }
                let k = |p: Price| inst.multiplier * p.0 * inst.tick.num % inst.tick.den;
                assert_eq!(now.change_since(&before).is_some(), k(new) == k(old));
            }
            assert!(offered > 30_000, "{}: offered {offered}", inst.symbol);
        }
    }

    /// The sign test agrees with i128 arithmetic, at the edges where i64 overflows.
    #[test]
    fn sum_is_negative_is_exact() {
        let edges = [i64::MIN, i64::MIN + 1, -2, -1, 0, 1, 2, i64::MAX - 1, i64::MAX];
        for a in edges {
            for b in edges {
                assert_eq!(sum_is_negative(a, b), (a as i128) + (b as i128) < 0, "{a} + {b}");
            }
        }
    }

    /// The strength-reduced value equals `Instrument::value` everywhere it is used: both
    /// signs, odd and even prices (the half-tick rounding), both tick fractions in use,
    /// for the quantities a position can hold.
    #[test]
    fn linear_value_is_instrument_value() {
        let mut odd = Instrument::xbtusdt();
        odd.tick = amdahl_risk::TickSize { num: 1, den: 3 };
        for inst in [Instrument::xbtusdt(), Instrument::ethusd(), odd] {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..100_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let price = Price(1 + (x % 2_000_000) as i64);
                let qty = ((x >> 21) % 2_000_000_001) as i64 - 1_000_000_000;
                let l = LinearValue::new(&inst, price).expect("linear");
                assert_eq!(l.value(qty, &inst), inst.value(Qty(qty), price), "{qty} @ {price:?}");
            }
        }
    }
}
