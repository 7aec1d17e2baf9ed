//! The full audit (recompute everything from scratch and compare) and the state hash.

use core::hash::Hasher;

use amdahl_ledger::{AuditFailure, LedgerError};
use amdahl_types::{Currency, MarketId, Money, Seq, Side};
use xxhash_rust::xxh3::Xxh3;

use crate::engine::Engine;
use crate::margin::AccountMarket;
use crate::orders::Working;

/// Why the engine halted. Carried as evidence; the engine never patches balances.
// Built once, on the way to a halt: its size does not matter, and boxing would allocate.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuditError {
    /// The ledger's invariant or its recomputation failed.
    Ledger(AuditFailure),
    /// Σ position quantity in a market is not zero.
    OpenInterest { market: MarketId, net_qty: i64 },
    /// An account's order-margin aggregates differ from its open orders.
    OrderHold { account: u32, market: MarketId },
    /// The book is crossed after matching.
    CrossedBook { market: MarketId },
    /// A cached margin or the packed remargin copy of a position disagrees with it.
    PositionCache { account: u32, market: MarketId },
    /// A mark tick's recount of the market's positions disagrees with the running sums.
    MarketRecount { market: MarketId, net_qty: i64, cost: i128, expected_cost: i128 },
    /// A settlement transfer was refused (a loss neither the wallet nor the insurance
    /// fund could cover: auto-deleveraging is the risk lifecycle's job).
    Settlement(LedgerError),
}

impl AuditError {
    /// The currency and amount to report in the `Halted` event.
    pub fn summary(&self) -> (Currency, Money) {
        match self {
            AuditError::Ledger(f) => {
                (f.currency, Money::try_from(f.discrepancy).unwrap_or(Money::MAX))
            }
            _ => (Currency::XBt, 0),
        }
    }
}

/// What an operator needs to investigate a halt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HaltEvidence {
    /// The last command of the group that failed.
    pub seq: Seq,
    pub error: AuditError,
    pub groups: u64,
}

impl Engine {
    /// Recompute every sum from scratch and check every invariant of DESIGN.md §4, all at
    /// one instant: every account's caches (`audit_accounts`), every order's links
    /// (`audit_orders`), the whole-system sums (`audit_totals`), and that the order lists
    /// reach exactly the live orders.
    // Cold path: the evidence travels by value, no allocation when the books are broken.
    #[allow(clippy::result_large_err)]
    pub fn audit_full(&self) -> Result<(), AuditError> {
        let reached = self.audit_accounts(0..self.account_rows())?;
        if reached != self.orders.len() {
            return Err(AuditError::OrderHold { account: u32::MAX, market: MarketId(u16::MAX) });
        }
        self.audit_orders(0..self.orders.capacity())?;
        self.audit_totals(false)
    }

    /// One group's share of the rolling recomputation: every `audit_cycle` commands it
    /// covers every account and every order slot once, each group the share its commands
    /// earned (counted in commands, not groups, so short groups under light load do not
    /// multiply the work), and the group that completes the cycle recounts the
    /// whole-system sums. Each slice is exact at its instant; spreading them keeps any one
    /// group's audit to microseconds, where the whole recomputation at once stops the
    /// engine for tens of milliseconds.
    #[allow(clippy::result_large_err)]
    pub(crate) fn audit_slice(&mut self) -> Result<(), AuditError> {
        let cycle = self.audit_cycle.max(1);
        let done = self.audited_commands.min(cycle);
        // How far into `total` the cycle should be after `done` of its `cycle` commands.
        let due = |total: u32| (total as u128 * done as u128).div_ceil(cycle as u128) as u32;
        let (accounts, slots) = (self.account_rows(), self.orders.capacity());
        let (a0, o0) = (self.audit_cursor, self.order_cursor);
        let (a1, o1) = (due(accounts).max(a0), due(slots).max(o0));
        let complete = done == cycle;
        if complete {
            self.audited_commands = 0;
            (self.audit_cursor, self.order_cursor) = (0, 0);
        } else {
            (self.audit_cursor, self.order_cursor) = (a1, o1);
        }
        self.audit_accounts(a0..a1)?;
        self.audit_orders(o0..o1)?;
        if !complete {
            return Ok(());
        }
        let totals = self.audit_totals(true);
        self.recounted.iter_mut().for_each(|r| *r = false);
        totals
    }

    /// Account rows: every user account and the liquidation engine's.
    fn account_rows(&self) -> u32 {
        (self.positions.len() / self.markets.len()) as u32
    }

    /// The caches of each account in `range`, against what they cache: per position, its
    /// margins and its packed remargin row (and no row when flat); per currency, its cross
    /// sum; per market, its order-margin aggregates against its own order list, every
    /// order on which must be its own. Returns how many listed orders it reached.
    #[allow(clippy::result_large_err)]
    pub(crate) fn audit_accounts(&self, range: core::ops::Range<u32>) -> Result<usize, AuditError> {
        let n = self.markets.len();
        let mut reached = 0usize;
        for a in range {
            let account = amdahl_types::AccountId(a);
            let (s, _) = crate::remargin::shard_of(a, self.shards[0].local as u32);
            // Recounted first: the floors of the account's cross rows depend on them.
            let (mut base, mut iso) = ([0i128; Currency::COUNT], [0u32; Currency::COUNT]);
            for (k, mk) in self.markets.iter().enumerate() {
                let p = &self.positions[a as usize * n + k];
                let c = mk.inst.settle.index();
                if p.qty == 0 {
                    continue;
                }
                if p.leverage == amdahl_types::Leverage::CROSS {
                    let mv = mk.mark_value(p.qty);
                    base[c] += (mv - p.cost - self.margin_cache[a as usize * n + k].maint) as i128;
                } else {
                    iso[c] += 1;
                }
            }
            for (m, mk) in self.markets.iter().enumerate() {
                let i = a as usize * n + m;
                let p = &self.positions[i];
                let market = MarketId(m as u16);
                let stale = || AuditError::PositionCache { account: a, market };
                if self.margin_cache[i] != crate::remargin::MarginCache::of(p, &mk.inst) {
                    return Err(stale());
                }
                let open = &self.shards[s].open[m];
                let at = open.at(account);
                if p.qty == 0 {
                    if at != crate::orders::NIL {
                        return Err(stale());
                    }
                } else {
                    let k = at as usize;
                    let floor = crate::remargin::floor(
                        p,
                        &self.margin_cache[i],
                        self.extra_margin[i],
                        account == self.liquidator,
                        iso[mk.inst.settle.index()] != 0,
                    );
                    if at == crate::orders::NIL
                        || open.accounts[k] != a
                        || open.qty[k] != p.qty
                        || open.cost[k] != p.cost
                        || open.floor[k] != floor
                    {
                        return Err(stale());
                    }
                }
                reached += self.audit_order_list(account, market)?;
            }
            if account == self.liquidator {
                continue;
            }
            for currency in Currency::ALL {
                let (s, c) = self.cross_slot(account, currency);
                let (i, shard) = (currency.index(), &self.shards[s]);
                if shard.cross[c] as i128 != base[i] || shard.iso[c] != iso[i] {
                    let market = MarketId(u16::MAX);
                    return Err(AuditError::PositionCache { account: a, market });
                }
            }
        }
        Ok(reached)
    }

    /// One (account, market) row's order-margin aggregates against its order list, whose
    /// every order must be live and its own. The walk stops one past the count the row
    /// claims, so a list broken into a cycle is a finding, not a hang.
    #[allow(clippy::result_large_err)]
    fn audit_order_list(
        &self,
        account: amdahl_types::AccountId,
        market: MarketId,
    ) -> Result<usize, AuditError> {
        let have = &self.accounts[self.pm(account, market)];
        let broken = || AuditError::OrderHold { account: account.0, market };
        let mut want = AccountMarket::default();
        let mut s = have.head;
        while s != crate::orders::NIL {
            if want.open_orders > have.open_orders || !self.orders.is_live(s) {
                return Err(broken());
            }
            let r = self.orders.get(s);
            if r.account != account || r.market != market {
                return Err(broken());
            }
            want.open_orders += 1;
            if r.is_reduce_only() {
                want.reduce_only += 1;
            }
            match r.working {
                Working::Untriggered => want.stop_orders += 1,
                Working::Resting(_) if !r.is_reduce_only() => {
                    let inst = &self.markets[r.market.0 as usize].inst;
                    let v = inst.value(r.leaves, r.price.expect("resting")).abs();
                    want.add(r.side, r.leaves.0, v);
                }
                _ => {}
            }
            s = self.orders.next_in_list(s);
        }
        let same = want.qty == have.qty
            && want.value == have.value
            && want.open_orders == have.open_orders
            && want.stop_orders == have.stop_orders
            && want.reduce_only == have.reduce_only;
        if !same {
            return Err(broken());
        }
        Ok(want.open_orders as usize)
    }

    /// Every live order in the slot `range` is linked into its own (account, market) list:
    /// its neighbours point back at it, and an order with no predecessor is its list's
    /// head. With `audit_order_list` (each list holds only its own orders), no live order
    /// is lost from the lists that margin it.
    #[allow(clippy::result_large_err)]
    pub(crate) fn audit_orders(&self, range: core::ops::Range<u32>) -> Result<(), AuditError> {
        for slot in range {
            if !self.orders.is_live(slot) {
                continue;
            }
            let r = self.orders.get(slot);
            let (prev, next) = (self.orders.prev_in_list(slot), self.orders.next_in_list(slot));
            let linked = if prev == crate::orders::NIL {
                self.accounts[self.pm(r.account, r.market)].head == slot
            } else {
                self.orders.is_live(prev) && self.orders.next_in_list(prev) == slot
            } && (next == crate::orders::NIL
                || (self.orders.is_live(next) && self.orders.prev_in_list(next) == slot));
            if !linked {
                return Err(AuditError::OrderHold { account: r.account.0, market: r.market });
            }
        }
        Ok(())
    }

    /// The whole-system sums, recounted from the packed position rows (which
    /// `audit_accounts` holds equal to the positions): the ledger identity per currency
    /// with Σ cost re-summed, Σ quantity = 0 per market, each shard's count of cross rows,
    /// and no book crossed. With `ticked_count`, a market whose rows a mark tick recounted
    /// since the cycle began (Σ qty = 0, Σ cost = the running sum, the cross-row counts:
    /// the P shards' partial sums, DESIGN.md §4) enters with its running sum instead of
    /// being streamed again: at a million open positions that stream is milliseconds.
    #[allow(clippy::result_large_err)]
    pub(crate) fn audit_totals(&self, ticked_count: bool) -> Result<(), AuditError> {
        let mut cost = [0i128; Currency::COUNT];
        for (m, market) in self.markets.iter().enumerate() {
            if ticked_count && self.recounted[m] {
                cost[market.inst.settle.index()] += self.market_cost[m];
                continue;
            }
            let (mut net, mut market_cost) = (0i64, 0i128);
            for shard in &self.shards {
                let open = &shard.open[m];
                net += open.qty.iter().sum::<i64>();
                market_cost += open.cost.iter().map(|&c| c as i128).sum::<i128>();
                let cross = open.floor.iter().filter(|&&f| crate::remargin::is_cross(f)).count();
                if cross != open.cross_rows as usize {
                    let market = MarketId(m as u16);
                    return Err(AuditError::PositionCache { account: u32::MAX, market });
                }
            }
            if net != 0 {
                return Err(AuditError::OpenInterest { market: MarketId(m as u16), net_qty: net });
            }
            cost[market.inst.settle.index()] += market_cost;
        }
        self.ledger.audit_full(cost).map_err(AuditError::Ledger)?;
        for (m, book) in self.books.iter().enumerate() {
            if let (Some(b), Some(a)) = (book.best_bid(), book.best_ask())
                && b >= a
            {
                return Err(AuditError::CrossedBook { market: MarketId(m as u16) });
            }
        }
        Ok(())
    }

    /// XXH3-128 over a canonical encoding of all state: counters, marks, every resting
    /// order in book order, every working order by id, every position, every balance.
    /// Two engines that applied the same commands must agree on it.
    pub fn state_hash(&self) -> u128 {
        let mut h = Xxh3::new();
        // The current UTC day is not hashed: it is the clock of the last command, and only
        // matters through the Day orders it expires, whose cancellations are hashed. (A
        // rejected command that is the first of a new day must leave the hash unchanged.)
        h.write_u8(self.halt.is_some() as u8);
        for (m, market) in self.markets.iter().enumerate() {
            h.write_u64(market.next_order);
            h.write_i64(market.mark.0);
            h.write_i64(market.index.map_or(-1, |p| p.0));
            h.write_i64(market.last.map_or(-1, |p| p.0));
            for side in [Side::Buy, Side::Sell] {
                self.books[m].for_each_order(side, |_, o, visible| {
                    h.write_u64(o.id.0);
                    h.write_u32(o.account.0);
                    h.write_i64(o.price.0);
                    h.write_i64(o.leaves.0);
                    h.write_i64(o.display.map_or(-1, |d| d.0));
                    h.write_i64(visible.0);
                });
            }
        }
        let mut ids = Vec::with_capacity(self.orders.len());
        self.orders.for_each(|slot, r| ids.push((r.id.0, slot)));
        ids.sort_unstable();
        for (_, slot) in ids {
            let r = self.orders.get(slot);
            h.write_u64(r.id.0);
            h.write_u32(r.account.0);
            h.write_u16(r.market.0);
            h.write_u8(r.side as u8);
            h.write_u8(r.ord_type as u8);
            h.write_u8(r.placed_type as u8);
            h.write_u8(r.time_in_force as u8);
            h.write_u8(r.exec_inst.0);
            h.write_i64(r.qty.0);
            h.write_i64(r.leaves.0);
            h.write_i64(r.cum.0);
            h.write_i64(r.price.map_or(-1, |p| p.0));
            h.write_i64(r.stop_px.map_or(-1, |p| p.0));
            h.write_i64(r.display.map_or(-1, |d| d.0));
            h.write_u64(r.client_tag);
            h.write_u8(matches!(r.working, Working::Untriggered) as u8);
            h.write_i64(r.held_value);
        }
        for (p, extra) in self.positions.iter().zip(&self.extra_margin) {
            h.write_i64(p.qty);
            h.write_i64(p.cost);
            h.write_i64(p.realised);
            h.write_u32(p.leverage.0);
            h.write_u32(p.risk_steps);
            h.write_i64(*extra);
        }
        for b in &self.bankruptcy {
            h.write_i64(b.map_or(-1, |p| p.0));
        }
        let mut pending = self.pending.clone();
        pending.sort_unstable();
        for (m, a) in pending {
            h.write_u16(m.0);
            h.write_u32(a.0);
        }
        for market in &self.markets {
            use core::hash::Hash;
            let life = &market.life;
            h.write_i64(life.rate.0);
            h.write_i64(life.next_funding.map_or(-1, |t| t.0));
            h.write_i64(life.next_sample.map_or(-1, |t| t.0));
            h.write_u8(life.settled as u8);
            life.index.hash(&mut h);
            life.premium.hash(&mut h);
            life.twap.hash(&mut h);
            life.basis.hash(&mut h);
            h.write_i64(life.next_basis_sample.map_or(-1, |t| t.0));
        }
        self.ledger.hash_into(&mut h);
        h.digest128()
    }
}
