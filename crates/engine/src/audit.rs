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
    /// Recompute every sum from scratch and check every invariant of DESIGN.md §4:
    /// the ledger identity per currency (with Σ cost re-summed over every position),
    /// Σ position quantity per market = 0, each account's order-margin aggregates equal
    /// to its open orders, no wallet negative, and no book crossed.
    // Cold path: the evidence travels by value, no allocation when the books are broken.
    #[allow(clippy::result_large_err)]
    pub fn audit_full(&self) -> Result<(), AuditError> {
        let n = self.markets.len();
        // Per market: Σ cost, Σ qty and the open-position count, in one row-major pass into
        // stack arrays (the audit must not allocate); past `STACK_MARKETS` markets, a
        // strided walk per market instead.
        const STACK_MARKETS: usize = 64;
        let (mut cost_of, mut net_of, mut open_of) =
            ([0i128; STACK_MARKETS], [0i64; STACK_MARKETS], [0usize; STACK_MARKETS]);
        if n <= STACK_MARKETS {
            for row in self.positions.chunks_exact(n) {
                for (m, p) in row.iter().enumerate() {
                    cost_of[m] += p.cost as i128;
                    net_of[m] += p.qty;
                    open_of[m] += (p.qty != 0) as usize;
                }
            }
        }
        let column = |m: usize| self.positions.iter().skip(m).step_by(n);
        let market_cost = |m: usize| {
            if n <= STACK_MARKETS { cost_of[m] } else { column(m).map(|p| p.cost as i128).sum() }
        };
        let net_qty =
            |m: usize| if n <= STACK_MARKETS { net_of[m] } else { column(m).map(|p| p.qty).sum() };
        let open_count = |m: usize| {
            if n <= STACK_MARKETS { open_of[m] } else { column(m).filter(|p| p.qty != 0).count() }
        };
        let mut cost = [0i128; Currency::COUNT];
        for (m, market) in self.markets.iter().enumerate() {
            cost[market.inst.settle.index()] += market_cost(m);
        }
        self.ledger.audit_full(cost).map_err(AuditError::Ledger)?;
        // The caches the hot paths read must equal what they cache: margins per position,
        // and each market's packed remargin copy.
        for (i, p) in self.positions.iter().enumerate() {
            let (a, m) = ((i / n) as u32, i % n);
            let market = MarketId(m as u16);
            let inst = &self.markets[m].inst;
            let stale = || AuditError::PositionCache { account: a, market };
            if self.margin_cache[i] != crate::remargin::MarginCache::of(p, inst) {
                return Err(stale());
            }
            let (s, _) = crate::remargin::shard_of(a, self.shards[0].local as u32);
            let open = &self.shards[s].open[m];
            let at = open.at(amdahl_types::AccountId(a));
            if p.qty == 0 {
                if at != crate::orders::NIL {
                    return Err(stale());
                }
                continue;
            }
            let k = at as usize;
            let cross = amdahl_types::AccountId(a) == self.liquidator;
            let floor =
                crate::remargin::floor(p, &self.margin_cache[i], self.extra_margin[i], cross);
            if at == crate::orders::NIL
                || open.accounts[k] != a
                || open.qty[k] != p.qty
                || open.cost[k] != p.cost
                || open.floor[k] != floor
            {
                return Err(stale());
            }
        }
        for a in 0..self.positions.len() / n {
            if a == self.liquidator.0 as usize {
                continue;
            }
            for currency in Currency::ALL {
                let (mut base, mut iso) = (0i128, 0u32);
                for (k, mk) in self.markets.iter().enumerate() {
                    let p = &self.positions[a * n + k];
                    if mk.inst.settle != currency || p.qty == 0 {
                        continue;
                    }
                    if p.leverage == amdahl_types::Leverage::CROSS {
                        let mv = mk.mark_value(p.qty);
                        base += (mv - p.cost - self.margin_cache[a * n + k].maint) as i128;
                    } else {
                        iso += 1;
                    }
                }
                let (s, c) = self.cross_slot(amdahl_types::AccountId(a as u32), currency);
                let have = self.shards[s].cross[c];
                if have.base as i128 != base || have.iso != iso {
                    let market = MarketId(u16::MAX);
                    return Err(AuditError::PositionCache { account: a as u32, market });
                }
            }
        }
        let open_len = |m: usize| self.shards.iter().map(|s| s.open[m].len()).sum::<usize>();
        // The count that picks a shard's pass (pure scan, or fused with the cross sums).
        let cross_rows_stale = |o: &crate::remargin::OpenPositions| {
            let ac = o.floor.iter().filter(|&&f| f == crate::remargin::ACCOUNT_CHECK).count();
            ac != o.cross_rows as usize
        };
        if let Some(m) = (0..n).find(|&m| {
            open_len(m) != open_count(m) || self.shards.iter().any(|s| cross_rows_stale(&s.open[m]))
        }) {
            let market = MarketId(m as u16);
            return Err(AuditError::PositionCache { account: u32::MAX, market });
        }
        for m in 0..n {
            let q = net_qty(m);
            if q != 0 {
                return Err(AuditError::OpenInterest { market: MarketId(m as u16), net_qty: q });
            }
        }
        // Each (account, market) row's aggregates against its own order list: no scratch
        // memory, O(rows + orders); every live order must be on exactly one list.
        let mut reached = 0usize;
        for (i, have) in self.accounts.iter().enumerate() {
            let mut want = AccountMarket::default();
            let mut s = have.head;
            while s != crate::orders::NIL {
                let r = self.orders.get(s);
                reached += 1;
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
                let market = MarketId((i % n) as u16);
                return Err(AuditError::OrderHold { account: (i / n) as u32, market });
            }
        }
        if reached != self.orders.len() {
            return Err(AuditError::OrderHold { account: u32::MAX, market: MarketId(u16::MAX) });
        }
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
        h.write_u64(self.next_order);
        // The current UTC day is not hashed: it is the clock of the last command, and only
        // matters through the Day orders it expires, whose cancellations are hashed. (A
        // rejected command that is the first of a new day must leave the hash unchanged.)
        h.write_u8(self.halt.is_some() as u8);
        for (m, market) in self.markets.iter().enumerate() {
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
