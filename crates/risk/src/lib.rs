//! Instruments, BitMEX contract math, positions and margin.
//!
//! The engine is written against this API; change it only together with the engine.
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
//!
//! All arithmetic runs in i128 and is checked: converting back to `i64` (or an i128
//! overflow, only possible with absurd configurations) panics. Prices and quantities are
//! validated by the caller against `max_price`/`max_order_qty`, and
//! [`Instrument::validate`] checks that those bounds cannot overflow, so a panic here is a
//! programmer or configuration error, never a user error.
#![forbid(unsafe_code)]

use amdahl_types::{Currency, Leverage, Money, Price, Qty, Rate, Side};

mod edge;
pub mod fair;
pub mod funding;
pub mod index;
pub mod liquidation;
mod math;

pub use fair::{FuturesBasis, MarkMethod};
pub use funding::{FundingClearing, FundingSchedule, PremiumAccumulator};
pub use index::{CompositeIndex, IndexConfig, IndexEvent, IndexStatus, IndexTwap};
pub use liquidation::{AdlCandidate, AdlScore};

use math::{ceil_div_nonneg, div_round_half_away, mul, to_money};

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
    ///
    /// Max order qty 10,000,000; max price 1,000,000 USD (2,000,000 ticks); risk limit
    /// 200 XBT, step 100 XBT; price band 10%.
    pub fn xbtusd() -> Instrument {
        Instrument {
            symbol: "XBTUSD".to_string(),
            kind: ContractKind::Inverse,
            settle: Currency::XBt,
            multiplier: -100_000_000,
            tick: TickSize { num: 1, den: 2 },
            lot: Qty(100),
            max_order_qty: Qty(10_000_000),
            max_price: Price(2_000_000),
            init_margin: Rate(1_000_000),
            maint_margin: Rate(500_000),
            maker_fee: Rate(-25_000),
            taker_fee: Rate(75_000),
            risk_limit: 20_000_000_000,
            risk_step: 10_000_000_000,
            price_band: Rate(10_000_000),
        }
    }
    /// ETHUSD, quanto perpetual settled in XBt (multiplier 100, tick 0.05, lot 1, IM 2%, MM 1%).
    ///
    /// Maker −0.025%, taker 0.075%; max order qty 10,000,000; max price 100,000 USD
    /// (2,000,000 ticks); risk limit 50 XBT, step 50 XBT; price band 10%.
    pub fn ethusd() -> Instrument {
        Instrument {
            symbol: "ETHUSD".to_string(),
            kind: ContractKind::Quanto,
            settle: Currency::XBt,
            multiplier: 100,
            tick: TickSize { num: 1, den: 20 },
            lot: Qty(1),
            max_order_qty: Qty(10_000_000),
            max_price: Price(2_000_000),
            init_margin: Rate(2_000_000),
            maint_margin: Rate(1_000_000),
            maker_fee: Rate(-25_000),
            taker_fee: Rate(75_000),
            risk_limit: 5_000_000_000,
            risk_step: 5_000_000_000,
            price_band: Rate(10_000_000),
        }
    }
    /// XBTUSDT, linear perpetual settled in USDt (multiplier 1, tick 0.5, lot 1000).
    ///
    /// IM 1%, MM 0.5%, maker −0.01%, taker 0.075%; max order qty 1,000,000,000 (1000 XBT);
    /// max price 1,000,000 USD (2,000,000 ticks); risk limit and step 1e12 USDt; band 10%.
    pub fn xbtusdt() -> Instrument {
        Instrument {
            symbol: "XBTUSDT".to_string(),
            kind: ContractKind::Linear,
            settle: Currency::USDt,
            multiplier: 1,
            tick: TickSize { num: 1, den: 2 },
            lot: Qty(1000),
            max_order_qty: Qty(1_000_000_000),
            max_price: Price(2_000_000),
            init_margin: Rate(1_000_000),
            maint_margin: Rate(500_000),
            maker_fee: Rate(-10_000),
            taker_fee: Rate(75_000),
            risk_limit: 1_000_000_000_000,
            risk_step: 1_000_000_000_000,
            price_band: Rate(10_000_000),
        }
    }

    /// Checks the configuration for sanity: positive tick fraction, lot, max order qty (a
    /// multiple of the lot) and max price; the multiplier's sign matches the kind (inverse
    /// < 0, linear/quanto > 0); 0 < MM ≤ IM ≤ 1; taker ≥ 0 and taker + maker ≥ 0 (the fee
    /// account never pays out more than it takes on one fill); positive risk limit and band,
    /// non-negative risk step; and the value of any order (up to max_order_qty, at any
    /// price from 1 tick to max_price) fits in `Money`.
    pub fn validate(&self) -> Result<(), String> {
        let sym = &self.symbol;
        let err = |m: String| Err(format!("instrument {sym}: {m}"));
        if self.symbol.is_empty() {
            return Err("instrument with an empty symbol".to_string());
        }
        if self.tick.num <= 0 || self.tick.den <= 0 {
            return err(format!("tick {}/{} must be positive", self.tick.num, self.tick.den));
        }
        if self.lot.0 <= 0 {
            return err(format!("lot {} must be positive", self.lot.0));
        }
        if self.max_order_qty.0 < self.lot.0 || !self.is_multiple_of_lot(self.max_order_qty) {
            return err(format!(
                "max_order_qty {} must be a positive multiple of the lot {}",
                self.max_order_qty.0, self.lot.0
            ));
        }
        if self.max_price.0 <= 0 {
            return err(format!("max_price {} must be positive", self.max_price.0));
        }
        match self.kind {
            ContractKind::Inverse if self.multiplier >= 0 => {
                return err(format!("inverse multiplier {} must be < 0", self.multiplier));
            }
            ContractKind::Linear | ContractKind::Quanto if self.multiplier <= 0 => {
                return err(format!("{:?} multiplier {} must be > 0", self.kind, self.multiplier));
            }
            _ => {}
        }
        let (im, mm) = (self.init_margin.0, self.maint_margin.0);
        if !(0 < mm && mm <= im && im <= Rate::SCALE) {
            return err(format!("need 0 < maint_margin {mm} <= init_margin {im} <= 1e8"));
        }
        if self.taker_fee.0 < 0 {
            return err(format!("taker_fee {} must be >= 0", self.taker_fee.0));
        }
        if self.taker_fee.0 > Rate::SCALE || self.maker_fee.0.abs() > Rate::SCALE {
            return err("fee rates must lie within ±100%".to_string());
        }
        if self.taker_fee.0 + self.maker_fee.0 < 0 {
            return err(format!(
                "taker_fee {} + maker_fee {} must be >= 0",
                self.taker_fee.0, self.maker_fee.0
            ));
        }
        if self.risk_limit <= 0 || self.risk_step < 0 {
            return err(format!(
                "risk_limit {} must be > 0 and risk_step {} >= 0",
                self.risk_limit, self.risk_step
            ));
        }
        if self.price_band.0 <= 0 {
            return err(format!("price_band {} must be positive", self.price_band.0));
        }
        // |value| is largest at the smallest price (inverse) or the largest (linear/quanto).
        for p in [Price(1), self.max_price] {
            if self.checked_value(self.max_order_qty, p).is_none() {
                return err(format!(
                    "value of max_order_qty {} at {} ticks overflows",
                    self.max_order_qty.0, p.0
                ));
            }
        }
        Ok(())
    }

    /// Is `qty` a whole number of lots? (Zero is; negative quantities are judged by |qty|.)
    pub fn is_multiple_of_lot(&self, qty: Qty) -> bool {
        self.lot.0 > 0 && qty.0 % self.lot.0 == 0
    }

    /// [`Instrument::value`] that returns `None` instead of panicking when the result (or
    /// an intermediate product) overflows, or when `price` is not positive.
    pub fn checked_value(&self, qty: Qty, price: Price) -> Option<Money> {
        i64::try_from(self.value_wide(qty, price)?).ok()
    }

    /// The same value, the same rounding, in 64-bit arithmetic; `None` when an intermediate
    /// would not fit (then `value_wide` decides). The common case of every fill and margin
    /// check, so it avoids the 128-bit library division.
    #[inline]
    fn value_narrow(&self, qty: Qty, price: Price) -> Option<Money> {
        if price.0 <= 0 || self.tick.num <= 0 || self.tick.den <= 0 {
            return None;
        }
        let round = |n: i64, d: i64| -> Option<i64> {
            let (n, d) = if d < 0 { (n.checked_neg()?, d.checked_neg()?) } else { (n, d) };
            let (q, r) = (n / d, n % d);
            Some(if r.abs() >= d - r.abs() { q + n.signum() } else { q })
        };
        match self.kind {
            ContractKind::Inverse => {
                let unit = round(
                    self.multiplier.checked_mul(self.tick.den)?,
                    price.0.checked_mul(self.tick.num)?,
                )?;
                qty.0.checked_mul(unit)
            }
            ContractKind::Linear | ContractKind::Quanto => {
                let n = qty.0.checked_mul(self.multiplier)?.checked_mul(price.0)?;
                round(n.checked_mul(self.tick.num)?, self.tick.den)
            }
        }
    }

    /// [`Instrument::checked_value`] before the conversion to `Money`: the same rounding,
    /// in i128, `None` only on an i128 overflow or a non-positive price. The liquidation
    /// solver uses it to probe prices at which a large position's value leaves `Money`.
    pub(crate) fn value_wide(&self, qty: Qty, price: Price) -> Option<i128> {
        if price.0 <= 0 || self.tick.num <= 0 || self.tick.den <= 0 {
            return None;
        }
        let (q, m, t) = (qty.0 as i128, self.multiplier as i128, price.0 as i128);
        let (num, den) = (self.tick.num as i128, self.tick.den as i128);
        let v = match self.kind {
            ContractKind::Inverse => {
                // unit = round_half_away(multiplier × den / (ticks × num)); value = qty × unit.
                let unit = div_round_half_away(m.checked_mul(den)?, t.checked_mul(num)?);
                q.checked_mul(unit)?
            }
            ContractKind::Linear | ContractKind::Quanto => {
                let n = q.checked_mul(m)?.checked_mul(t)?.checked_mul(num)?;
                div_round_half_away(n, den)
            }
        };
        Some(v)
    }

    /// The value of `qty` contracts at `price` with BitMEX's sign: what a buyer's position
    /// cost changes by. Inverse: negative for positive qty. `qty` may be negative.
    ///
    /// Inverse: `qty × round_half_away(multiplier × den / (ticks × num))`; linear and
    /// quanto: `round_half_away(qty × multiplier × ticks × num / den)`, all in i128.
    /// Odd in `qty`: `value(−q, p) = −value(q, p)`.
    ///
    /// # Panics
    /// If `price` is not positive or the result does not fit in `Money`. Prices and
    /// quantities are validated against `max_price`/`max_order_qty` before they get here
    /// and [`Instrument::validate`] proves those bounds safe, so a panic is a programmer or
    /// configuration error, never a user error.
    pub fn value(&self, qty: Qty, price: Price) -> Money {
        if let Some(v) = self.value_narrow(qty, price) {
            return v;
        }
        match self.checked_value(qty, price) {
            Some(v) => v,
            None => panic!(
                "amdahl-risk: {} value of {} contracts at {} ticks overflows or the price \
                 is not positive",
                self.symbol, qty.0, price.0
            ),
        }
    }
    /// Commission on a fill of `value` at `rate`: |value| × rate, truncated toward zero,
    /// carrying the rate's sign (negative = rebate).
    ///
    /// `(|value| × rate) / 1e8` with Rust's truncating division: taker 0.075% on 15722 →
    /// 11.79 → 11; maker −0.025% on 15722 → −3.93 → −3.
    ///
    /// # Panics
    /// On overflow (|value| near `i64::MAX` with a rate above 1), a programmer error.
    pub fn fee(&self, value: Money, rate: Rate) -> Money {
        let n = mul(value.unsigned_abs() as i128, rate.0 as i128);
        // A 64-bit division by the constant compiles to a multiply; the 128-bit one does not.
        match i64::try_from(n) {
            Ok(n) => n / Rate::SCALE,
            Err(_) => to_money(n / Rate::SCALE as i128, "fee"),
        }
    }
    /// The initial margin rate for `leverage` (cross: the base rate): max(base, 1/leverage),
    /// with 1/leverage rounded up to the next 1e-8.
    ///
    /// `leverage` is in hundredths, so 1/leverage = ⌈1e8 × 100 / hundredths⌉ in 1e-8:
    /// 100x → 1_000_000, 10x → 10_000_000, 3x → 33_333_334. Leverage above
    /// `Leverage::MAX` (100x) gives the base rate (the caller validates it).
    pub fn init_rate(&self, leverage: Leverage) -> Rate {
        self.init_rate_at(leverage, 0)
    }

    /// The initial margin rate at risk-limit tier `steps`: each step above the base risk
    /// limit raises the base IM by the base MM (API.md §9), and 1/leverage still applies.
    pub fn init_rate_at(&self, leverage: Leverage, steps: u32) -> Rate {
        let base = Rate(self.init_margin.0 + steps as i64 * self.maint_margin.0);
        if leverage == Leverage::CROSS || leverage > Leverage::MAX {
            return base;
        }
        let inv = ceil_div_nonneg(Rate::SCALE as i128 * 100, leverage.0 as i128);
        Rate(base.0.max(inv as i64))
    }
    /// Margin reserved for open orders worth `abs_value` (≥ 0, the sum of |value| of the
    /// orders that would open exposure): ⌈IM × v⌉ + ⌈2 × taker × v⌉ (entry and exit fee),
    /// as BitMEX's order `initMargin` (API.md §9: Buy 1 @ 6360.5 → 158 + 24 = 182).
    ///
    /// The taker rate is clamped at ≥ 0. A negative `abs_value` is a caller bug
    /// (debug-asserted); it is treated as its absolute value.
    ///
    /// # Panics
    /// On overflow, a programmer error.
    pub fn order_margin(&self, abs_value: Money, leverage: Leverage) -> Money {
        self.order_margin_at(abs_value, leverage, 0)
    }

    /// [`Instrument::order_margin`] at risk-limit tier `steps`.
    pub fn order_margin_at(&self, abs_value: Money, leverage: Leverage, steps: u32) -> Money {
        debug_assert!(abs_value >= 0, "order_margin of a negative value {abs_value}");
        let v = abs_value.unsigned_abs() as i128;
        let im = self.init_rate_at(leverage, steps).0 as i128;
        let taker = self.taker_fee.0.max(0) as i128;
        let s = Rate::SCALE as i128;
        let init = ceil_div_nonneg(mul(im, v), s);
        let comm = ceil_div_nonneg(mul(2 * taker, v), s);
        to_money(init + comm, "order margin")
    }
    /// Is `price` within the band around `mark`?
    ///
    /// Exact: `|price − mark| × 1e8 ≤ band × mark` in i128, no division.
    pub fn within_band(&self, price: Price, mark: Price) -> bool {
        let diff = (price.0 as i128 - mark.0 as i128).abs();
        diff * Rate::SCALE as i128 <= self.price_band.0 as i128 * mark.0 as i128
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
    /// The risk-limit tier: steps of `risk_step` above the base `risk_limit`. Each raises
    /// the initial and maintenance margin rates by the base maintenance rate.
    pub risk_steps: u32,
}

impl Position {
    /// Apply a fill of `qty` (> 0) contracts on `side` whose value is `value`
    /// (`Instrument::value(qty, price)`, i.e. the buyer's cost change). Returns the
    /// realised PnL (the residue of the closed part's cost) that must move into the
    /// wallet (positive = profit); the position's cost changes by
    /// `side.sign() × value + realised`, so that
    /// `wallet change − cost change = −side.sign() × value` and, summed over the buyer and
    /// the seller of one fill, `Σ wallet − Σ cost` is unchanged (DESIGN §4).
    ///
    /// Rounding (the one rule, both parts truncate toward zero):
    /// - opening or adding (flat, or the fill has the position's sign): `cost += s × value`,
    ///   nothing realised;
    /// - reducing by `closed = min(qty, |self.qty|)`: the fill value is split into
    ///   `closing = trunc(value × closed / qty)` and `opening = value − closing` (they sum
    ///   exactly to `value`); the `r = |self.qty| − closed` contracts left open keep
    ///   `keep = trunc(cost × r / |self.qty|)`; the residue
    ///   `R = cost + s × closing − keep` leaves the cost and `realised = −R` enters the
    ///   wallet. A full close keeps exactly 0. On a flip the opening part opens the new
    ///   position: `cost = keep (= 0) + s × opening`.
    ///
    /// # Panics
    /// If `qty ≤ 0` (debug) or on overflow, a programmer error.
    pub fn apply_fill(&mut self, side: Side, qty: Qty, value: Money) -> Money {
        debug_assert!(qty.0 > 0, "apply_fill with qty {}", qty.0);
        let s = side.sign();
        let d = s * qty.0;
        let signed_value = s as i128 * value as i128;
        let old_qty = self.qty;
        if old_qty == 0 || (d > 0) == (old_qty > 0) {
            self.cost = to_money(self.cost as i128 + signed_value, "position cost");
            self.qty = to_money(old_qty as i128 + d as i128, "position qty");
            return 0;
        }
        let fill_qty = qty.0 as i128;
        let abs_old = old_qty.unsigned_abs() as i128;
        let closed = fill_qty.min(abs_old);
        let closing = mul(value as i128, closed) / fill_qty;
        let opening = value as i128 - closing;
        let remaining = abs_old - closed;
        let keep = mul(self.cost as i128, remaining) / abs_old;
        let residue = self.cost as i128 + s as i128 * closing - keep;
        let realised = to_money(-residue, "realised pnl");
        self.cost = to_money(keep + s as i128 * opening, "position cost");
        self.qty = to_money(old_qty as i128 + d as i128, "position qty");
        self.realised = to_money(self.realised as i128 + realised as i128, "cumulative realised");
        realised
    }

    /// Is the position flat?
    pub fn is_flat(&self) -> bool {
        self.qty == 0
    }

    /// The average entry price in quote units (for display only; `None` when flat or the
    /// cost is zero): inverse `qty × multiplier / cost`, linear/quanto
    /// `cost / (qty × multiplier)`.
    pub fn entry_price_f64(&self, inst: &Instrument) -> Option<f64> {
        if self.qty == 0 || self.cost == 0 {
            return None;
        }
        let qm = self.qty as f64 * inst.multiplier as f64;
        Some(match inst.kind {
            ContractKind::Inverse => qm / self.cost as f64,
            ContractKind::Linear | ContractKind::Quanto => self.cost as f64 / qm,
        })
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
    ///
    /// IM is `inst.init_rate(self.leverage)`; taker is clamped at ≥ 0. Check (API.md §9):
    /// |cost| 31403, IM 1%, taker 0.075% → 315 + 24.
    pub fn init_margin(&self, inst: &Instrument) -> Money {
        let (pos_init, pos_comm) = self.init_parts(inst);
        to_money(pos_init + pos_comm, "position margin")
    }

    /// (posInit, posComm) of [`Position::init_margin`].
    fn init_parts(&self, inst: &Instrument) -> (i128, i128) {
        let c = self.cost.unsigned_abs() as i128;
        let s = Rate::SCALE as i128;
        let im = inst.init_rate_at(self.leverage, self.risk_steps);
        let pos_init = ceil_div_nonneg(mul(im.0 as i128, c), s);
        let taker = inst.taker_fee.0.max(0) as i128;
        let pos_comm = ceil_div_nonneg(mul(c + pos_init, taker), s);
        (pos_init, pos_comm)
    }
    /// Maintenance requirement (BitMEX posMaint): ⌈MM × |cost|⌉ + posComm.
    ///
    /// Check (API.md §9): |cost| 15681, MM 0.5% → 79 + posComm 12 = 91.
    pub fn maint_margin(&self, inst: &Instrument) -> Money {
        let c = self.cost.unsigned_abs() as i128;
        let (_, pos_comm) = self.init_parts(inst);
        let mm = inst.maint_margin.0 as i128 * (1 + self.risk_steps as i128);
        let pos_maint = ceil_div_nonneg(mul(mm, c), Rate::SCALE as i128);
        to_money(pos_maint + pos_comm, "maintenance margin")
    }
}
