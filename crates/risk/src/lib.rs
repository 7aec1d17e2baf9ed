//! Instruments, BitMEX contract math, positions and margin.
//!
//! API CONTRACT (the engine is written against it; change it only together with the
//! engine). The implementation replaces the `todo!()`s.
//!
//! Rounding rules, each applied once where a value is created (shared/bitmex/API.md §8–9):
//! - inverse contract value: the value of ONE contract, `multiplier / price`, is rounded
//!   half away from zero first, then multiplied by the quantity;
//! - linear and quanto value: `qty × multiplier × price` computed exactly in i128 and
//!   rounded half away from zero once (exact for BitMEX's lot and tick sizes);
//! - margin requirements round up (ceiling of the absolute value);
//! - commissions truncate toward zero;
//! - the cost kept by a position after a partial close truncates toward zero; the residue
//!   is realised, so every unit that leaves a cost enters a wallet.
#![forbid(unsafe_code)]

use amdahl_types::{Currency, Leverage, Money, Price, Qty, Rate, Side};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ContractKind {
    /// Settled in the underlying; value = qty × round(multiplier / price), multiplier < 0.
    Inverse,
    /// Settled in the quote; value = qty × multiplier × price.
    Linear,
    /// Settled in a third currency at a fixed rate; value = qty × multiplier × price.
    Quanto,
}

/// The tick size as an exact fraction of the quote currency: 0.5 = 1/2, 0.05 = 1/20.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TickSize {
    pub num: i64,
    pub den: i64,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Instrument {
    pub symbol: String,
    pub kind: ContractKind,
    pub settle: Currency,
    /// BitMEX `multiplier`, in settlement minor units (negative for inverse).
    pub multiplier: i64,
    pub tick: TickSize,
    pub lot: Qty,
    pub max_order_qty: Qty,
    pub max_price: Price,
    /// Base initial and maintenance margin (the first risk-limit step).
    pub init_margin: Rate,
    pub maint_margin: Rate,
    pub maker_fee: Rate,
    pub taker_fee: Rate,
    pub risk_limit: Money,
    pub risk_step: Money,
    /// Limit prices must lie within mark × (1 ± band).
    pub price_band: Rate,
}

impl Instrument {
    /// XBTUSD, inverse perpetual (2018–2020 parameters: tick 0.5, lot 100 here as the issue
    /// asks, IM 1%, MM 0.5%, maker −0.025%, taker 0.075%).
    pub fn xbtusd() -> Instrument {
        todo!()
    }
    /// ETHUSD, quanto perpetual settled in XBt (multiplier 100, tick 0.05, lot 1, IM 2%, MM 1%).
    pub fn ethusd() -> Instrument {
        todo!()
    }
    /// XBTUSDT, linear perpetual settled in USDt (multiplier 1, tick 0.5, lot 1000).
    pub fn xbtusdt() -> Instrument {
        todo!()
    }
    /// The value of `qty` contracts at `price` with BitMEX's sign: what a buyer's position
    /// cost changes by. Inverse: negative for positive qty. `qty` may be negative.
    pub fn value(&self, qty: Qty, price: Price) -> Money {
        let _ = (qty, price);
        todo!()
    }
    /// Commission on a fill of `value` at `rate`: |value| × rate, truncated toward zero,
    /// carrying the rate's sign (negative = rebate).
    pub fn fee(&self, value: Money, rate: Rate) -> Money {
        let _ = (value, rate);
        todo!()
    }
    /// The initial margin rate for `leverage` (cross: the base rate): max(base, 1/leverage),
    /// with 1/leverage rounded up to the next 1e-8.
    pub fn init_rate(&self, leverage: Leverage) -> Rate {
        let _ = leverage;
        todo!()
    }
    /// Margin reserved for open orders worth `abs_value` (≥ 0, the sum of |value| of the
    /// orders that would open exposure): ⌈IM × v⌉ + ⌈2 × taker × v⌉ (entry and exit fee),
    /// as BitMEX's order `initMargin` (API.md §9: Buy 1 @ 6360.5 → 158 + 24 = 182).
    pub fn order_margin(&self, abs_value: Money, leverage: Leverage) -> Money {
        let _ = (abs_value, leverage);
        todo!()
    }
    /// Is `price` within the band around `mark`?
    pub fn within_band(&self, price: Price, mark: Price) -> bool {
        let _ = (price, mark);
        todo!()
    }
    /// An approximate (decimal) price for display: ticks × tick size.
    pub fn price_f64(&self, price: Price) -> f64 {
        price.0 as f64 * self.tick.num as f64 / self.tick.den as f64
    }
}

/// One account's position in one market.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Position {
    /// Signed contracts: long > 0.
    pub qty: i64,
    /// Σ execCost of the open part (BitMEX sign).
    pub cost: Money,
    /// Cumulative realised PnL (excluding fees), for reporting.
    pub realised: Money,
    /// Isolated leverage, or `Leverage::CROSS`.
    pub leverage: Leverage,
}

impl Position {
    /// Apply a fill of `qty` (> 0) contracts on `side` whose value is `value`
    /// (`Instrument::value(qty, price)`, i.e. the buyer's cost change). Returns the
    /// realised PnL (the residue of the closed part's cost) that must move into the
    /// wallet; the position's cost changes by `−realised + signed value`.
    pub fn apply_fill(&mut self, side: Side, qty: Qty, value: Money) -> Money {
        let _ = (side, qty, value);
        todo!()
    }
    /// Mark value of the position at `mark`.
    pub fn mark_value(&self, inst: &Instrument, mark: Price) -> Money {
        inst.value(Qty(self.qty), mark)
    }
    /// Unrealised PnL = mark value − cost.
    pub fn unrealised(&self, inst: &Instrument, mark: Price) -> Money {
        self.mark_value(inst, mark) - self.cost
    }
    /// Position margin (BitMEX posInit + posComm):
    /// ⌈IM × |cost|⌉ + ⌈(|cost| + posInit) × taker⌉.
    pub fn init_margin(&self, inst: &Instrument) -> Money {
        let _ = inst;
        todo!()
    }
    /// Maintenance requirement (BitMEX posMaint): ⌈MM × |cost|⌉ + posComm.
    pub fn maint_margin(&self, inst: &Instrument) -> Money {
        let _ = inst;
        todo!()
    }
}
