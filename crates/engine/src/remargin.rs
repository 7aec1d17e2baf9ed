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
//! position depends on the whole account, so its floor is `i64::MAX` ("always look"): the
//! compare sends it to the account-level check, which reads cached margins.
//!
//! Hot bytes per position: 4 (account) + 8 (qty) + 8 (floor) + 8 (cost, for the tick's
//! recount) = 28 ≤ 32.

use amdahl_risk::{Instrument, Position};
use amdahl_types::{AccountId, Leverage, Money};

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

/// The floor that means "check the whole account" (cross margin, the liquidator).
pub(crate) const ACCOUNT_CHECK: i64 = i64::MAX;

/// The mark value below which the position is under maintenance, or `ACCOUNT_CHECK`.
pub(crate) fn floor(pos: &Position, cache: &MarginCache, extra_margin: Money, cross: bool) -> i64 {
    if cross || pos.leverage == Leverage::CROSS {
        return ACCOUNT_CHECK;
    }
    let f = pos.cost as i128 + cache.maint as i128 - (cache.init + extra_margin) as i128;
    f.clamp(i64::MIN as i128 + 1, i64::MAX as i128 - 1) as i64
}

/// The accounts with an open position in one market, packed for the remargin pass.
pub(crate) struct OpenPositions {
    pub accounts: Vec<u32>,
    pub qty: Vec<i64>,
    pub cost: Vec<i64>,
    pub floor: Vec<i64>,
    /// Where each account sits in the arrays, or `NIL`.
    pub index: Vec<u32>,
}

impl OpenPositions {
    pub fn new(rows: usize) -> OpenPositions {
        OpenPositions {
            accounts: Vec::with_capacity(rows),
            qty: Vec::with_capacity(rows),
            cost: Vec::with_capacity(rows),
            floor: Vec::with_capacity(rows),
            index: vec![NIL; rows],
        }
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Make the packed copy of one account's position true again (insert, update, or
    /// swap-remove when it went flat).
    pub fn sync(&mut self, account: AccountId, pos: &Position, floor: i64) {
        let a = account.0 as usize;
        let at = self.index[a];
        if pos.qty != 0 {
            if at == NIL {
                self.index[a] = self.accounts.len() as u32;
                self.accounts.push(account.0);
                self.qty.push(pos.qty);
                self.cost.push(pos.cost);
                self.floor.push(floor);
            } else {
                let k = at as usize;
                self.qty[k] = pos.qty;
                self.cost[k] = pos.cost;
                self.floor[k] = floor;
            }
        } else if at != NIL {
            let k = at as usize;
            self.accounts.swap_remove(k);
            self.qty.swap_remove(k);
            self.cost.swap_remove(k);
            self.floor.swap_remove(k);
            if let Some(&moved) = self.accounts.get(k) {
                self.index[moved as usize] = k as u32;
            }
            self.index[a] = NIL;
        }
    }
}
