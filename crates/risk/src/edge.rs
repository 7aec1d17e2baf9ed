//! The API edge: decimals in, integer units out, exactly or not at all.
//!
//! A price that is not a multiple of the tick, or a quantity that is not a whole multiple
//! of the lot, is a clear error — never rounded to the nearest representable value.

use amdahl_types::{Price, Qty, RejectReason};
use rust_decimal::Decimal;

use crate::Instrument;

impl Instrument {
    /// A decimal price (as sent by a client) in ticks.
    pub fn price_from_decimal(&self, price: Decimal) -> Result<Price, RejectReason> {
        if price <= Decimal::ZERO {
            return Err(RejectReason::PriceNotPositive);
        }
        // ticks = price / (num / den) = price × den / num, exact in Decimal's 96-bit mantissa
        // for any price an instrument can list.
        let scaled = price
            .checked_mul(Decimal::from(self.tick.den))
            .and_then(|x| x.checked_div(Decimal::from(self.tick.num)))
            .ok_or(RejectReason::PriceTooLarge)?;
        if !scaled.fract().is_zero() {
            return Err(RejectReason::PriceNotMultipleOfTick);
        }
        let ticks = i64::try_from(scaled.trunc()).map_err(|_| RejectReason::PriceTooLarge)?;
        if ticks > self.max_price.0 {
            return Err(RejectReason::PriceTooLarge);
        }
        Ok(Price(ticks))
    }

    /// Parse a decimal price string exactly (`"10000.5"`).
    pub fn parse_price(&self, text: &str) -> Result<Price, RejectReason> {
        let d = text.trim().parse::<Decimal>().map_err(|_| RejectReason::PriceNotPositive)?;
        self.price_from_decimal(d)
    }

    /// The decimal price of `price` ticks, exact (`Price(20001)` on XBTUSD → 10000.5).
    pub fn price_to_decimal(&self, price: Price) -> Decimal {
        Decimal::from(price.0) * Decimal::from(self.tick.num) / Decimal::from(self.tick.den)
    }

    /// A decimal order quantity in contracts: whole, positive, a multiple of the lot and
    /// at most `max_order_qty`.
    pub fn qty_from_decimal(&self, qty: Decimal) -> Result<Qty, RejectReason> {
        if qty <= Decimal::ZERO {
            return Err(RejectReason::QtyNotPositive);
        }
        if !qty.fract().is_zero() {
            return Err(RejectReason::QtyNotMultipleOfLot);
        }
        let q = i64::try_from(qty).map_err(|_| RejectReason::QtyTooLarge)?;
        if q > self.max_order_qty.0 {
            return Err(RejectReason::QtyTooLarge);
        }
        if q % self.lot.0 != 0 {
            return Err(RejectReason::QtyNotMultipleOfLot);
        }
        Ok(Qty(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn prices_convert_exactly_or_not_at_all() {
        let xbt = Instrument::xbtusd(); // tick 0.5
        assert_eq!(xbt.parse_price("10000.5"), Ok(Price(20_001)));
        assert_eq!(xbt.parse_price("10000"), Ok(Price(20_000)));
        assert_eq!(xbt.parse_price("10000.50"), Ok(Price(20_001)));
        assert_eq!(xbt.parse_price("10000.25"), Err(RejectReason::PriceNotMultipleOfTick));
        assert_eq!(xbt.parse_price("0.1"), Err(RejectReason::PriceNotMultipleOfTick));
        assert_eq!(xbt.parse_price("0"), Err(RejectReason::PriceNotPositive));
        assert_eq!(xbt.parse_price("-5"), Err(RejectReason::PriceNotPositive));
        assert_eq!(xbt.parse_price("abc"), Err(RejectReason::PriceNotPositive));
        // max price 1,000,000 USD = 2,000,000 ticks.
        assert_eq!(xbt.parse_price("1000000"), Ok(Price(2_000_000)));
        assert_eq!(xbt.parse_price("1000000.5"), Err(RejectReason::PriceTooLarge));
        assert_eq!(
            xbt.parse_price("79228162514264337593543950335"),
            Err(RejectReason::PriceTooLarge)
        );
        assert_eq!(xbt.price_to_decimal(Price(20_001)), d("10000.5"));
        let eth = Instrument::ethusd(); // tick 0.05
        assert_eq!(eth.parse_price("2000.05"), Ok(Price(40_001)));
        assert_eq!(eth.parse_price("2000.01"), Err(RejectReason::PriceNotMultipleOfTick));
        assert_eq!(eth.price_to_decimal(Price(40_001)), d("2000.05"));
    }

    #[test]
    fn quantities_must_be_whole_lots() {
        let xbt = Instrument::xbtusd(); // lot 100
        assert_eq!(xbt.qty_from_decimal(d("300")), Ok(Qty(300)));
        assert_eq!(xbt.qty_from_decimal(d("350")), Err(RejectReason::QtyNotMultipleOfLot));
        assert_eq!(xbt.qty_from_decimal(d("100.5")), Err(RejectReason::QtyNotMultipleOfLot));
        assert_eq!(xbt.qty_from_decimal(d("0")), Err(RejectReason::QtyNotPositive));
        assert_eq!(xbt.qty_from_decimal(d("-100")), Err(RejectReason::QtyNotPositive));
        assert_eq!(xbt.qty_from_decimal(d("10000100")), Err(RejectReason::QtyTooLarge));
    }
}
