//! Order-margin holds and the available balance.
//!
//! A hold is a reservation, not a movement of money: the wallet keeps the money and the
//! available balance excludes it. BitMEX's rules (API.md §9): reducing orders are free,
//! and only the net of bids versus offers is charged — so per (account, market) the hold
//! is the larger of the buy side's and the sell side's margin, each counting only the
//! quantity beyond what would close the current position.

use amdahl_risk::{Instrument, Position};
use amdahl_types::{Leverage, Money, Side};

use crate::orders::NIL;

/// One account's order aggregates in one market. Kept incrementally; the full audit
/// recomputes them from the order records.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct AccountMarket {
    /// Σ leaves and Σ |value| of margin-holding orders, per side.
    pub qty: [i64; 2],
    pub value: [i128; 2],
    /// Working orders (resting + untriggered), untriggered ones, ReduceOnly ones.
    pub open_orders: u32,
    pub stop_orders: u32,
    pub reduce_only: u32,
    /// Head of the intrusive list of this account's orders in this market.
    pub head: u32,
}

impl Default for AccountMarket {
    fn default() -> Self {
        AccountMarket {
            qty: [0; 2],
            value: [0; 2],
            open_orders: 0,
            stop_orders: 0,
            reduce_only: 0,
            head: NIL,
        }
    }
}

impl AccountMarket {
    pub fn add(&mut self, side: Side, qty: i64, abs_value: Money) {
        self.qty[side.index()] += qty;
        self.value[side.index()] += abs_value as i128;
    }

    pub fn sub(&mut self, side: Side, qty: i64, abs_value: Money) {
        self.qty[side.index()] -= qty;
        self.value[side.index()] -= abs_value as i128;
        debug_assert!(self.qty[side.index()] >= 0 && self.value[side.index()] >= 0);
    }

    /// The largest |value| the account would hold in the market: its position plus the
    /// opening value of its larger order side (what the risk limit must cover).
    pub fn gross_value(&self, position: &Position) -> i128 {
        let closable = [(-position.qty).max(0), position.qty.max(0)];
        let mut orders = 0i128;
        for ((&qty, &value), closable) in self.qty.iter().zip(&self.value).zip(closable) {
            if qty == 0 {
                continue;
            }
            let opening = (qty - closable).max(0) as i128;
            // Rounded up, in 64 bits when it fits (see `hold`).
            let v = value * opening;
            let share = match u64::try_from(v) {
                Ok(v) => v.div_ceil(qty as u64) as i128,
                Err(_) => (v + qty as i128 - 1) / qty as i128,
            };
            orders = orders.max(share);
        }
        position.cost.unsigned_abs() as i128 + orders
    }

    /// The order-margin hold given the current position.
    pub fn hold(&self, position: &Position, inst: &Instrument) -> Money {
        let closable = [(-position.qty).max(0), position.qty.max(0)];
        let mut worst = 0;
        for side in [Side::Buy, Side::Sell] {
            let s = side.index();
            let qty = self.qty[s];
            if qty == 0 {
                continue;
            }
            let opening = (qty - closable[s]).max(0);
            if opening == 0 {
                continue;
            }
            // The opening share of the side's value, rounded up (margin rounds up).
            let v = self.value[s] * opening as i128;
            // In 64 bits when it fits (a hardware divide, not the i128 library call).
            let opening_value = match u64::try_from(v) {
                Ok(v) => (v.div_ceil(qty as u64)) as i128,
                Err(_) => (v + qty as i128 - 1) / qty as i128,
            };
            let opening_value = Money::try_from(opening_value).expect("order value fits i64");
            let margin =
                inst.order_margin_at(opening_value, position.leverage, position.risk_steps);
            worst = worst.max(margin);
        }
        worst
    }
}

/// What the account has committed in one market: position margin plus order hold, less
/// (for cross margin) any unrealised loss. `mark_value` is the position's value at the
/// mark (`Market::mark_value`: no division).
pub(crate) fn committed(
    am: &AccountMarket,
    position: &Position,
    inst: &Instrument,
    mark_value: Money,
    margin: Money,
) -> i128 {
    let mut used = am.hold(position, inst) as i128;
    if position.qty != 0 {
        // `margin`: the cached posInit + posComm plus any margin transferred in.
        let margin = margin as i128;
        let loss = -((mark_value - position.cost) as i128).min(0);
        used += if position.leverage == Leverage::CROSS {
            // Cross margin: the whole wallet backs the position, so a loss eats the
            // available balance. A profit does not fund new positions (no portfolio margin).
            margin + loss
        } else {
            // Isolated: the position margin absorbs losses up to its size; a loss beyond it
            // (before liquidation catches it) must not be withdrawable either.
            margin.max(loss)
        };
    }
    used
}
