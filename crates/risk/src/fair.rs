//! Mark price: fair-price marking (API.md §10) or last-price marking.
//!
//! - Perpetuals: `mark = index × (1 + F × t_left / interval)`, where `F` is the funding rate
//!   of the next payment and `t_left` the time until it, clamped to `[0, interval]`.
//! - Dated futures: `mark = index × (1 + r × t_left / year)`, where `r` is the annualised fair
//!   basis rate kept by [`FuturesBasis`] (an EMA of premium samples) and `t_left` the time to
//!   expiry (0 at and after expiry, so the mark converges to the index).
//! - Last-price marking: `mark = last`.
//!
//! Rounding: each mark is computed as one exact fraction in i128 and rounded **half away from
//! zero** to a tick, once. The mark moves PnL of longs and shorts in opposite directions, so no
//! direction is safe for the exchange as a whole; nearest is the neutral rule. Liquidation is
//! then decided exactly at that tick (see `liquidation`).

use amdahl_types::{Price, Rate, Timestamp};

use crate::math::{div_round_half_away, mul, to_money};

/// Nanoseconds in the 365-day year that annualises basis rates (BitMEX: `daysToExpiry / 365`).
pub const YEAR_NS: i64 = 365 * Timestamp::NANOS_PER_DAY;

/// How an instrument is marked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MarkMethod {
    /// Fair-price marking from the index (perpetual: funding basis; future: fair basis).
    FairPrice,
    /// The last traded price.
    LastPrice,
}

/// `index × (1 + rate × t / span)` rounded half away from zero to a tick; `t` in `[0, span]`.
fn index_plus_basis(index: Price, rate: Rate, t: i64, span: i64) -> Price {
    let s = Rate::SCALE as i128;
    let den = mul(s, span as i128);
    let num = mul(index.0 as i128, den + mul(rate.0 as i128, t as i128));
    Price(to_money(div_round_half_away(num, den), "fair price"))
}

/// Perpetual fair price: `index × (1 + F × t_left / interval)` with
/// `t_left = clamp(next_funding − now, 0, interval)`, rounded half away from zero to a tick.
///
/// Example: index 20000 ticks (10000 USD), F = 0.01%, 4 h of an 8 h interval left:
/// 20000 × (1 + 0.0001 × 0.5) = 20001 ticks.
pub fn perpetual_fair_price(
    index: Price,
    funding_rate: Rate,
    now: Timestamp,
    next_funding: Timestamp,
    interval_ns: i64,
) -> Price {
    assert!(interval_ns > 0, "amdahl-risk: funding interval {interval_ns} must be > 0");
    let t_left = (next_funding.0 - now.0).clamp(0, interval_ns);
    index_plus_basis(index, funding_rate, t_left, interval_ns)
}

/// BitMEX `fairBasisRate` of a perpetual, the funding rate annualised: `F × year / interval`
/// (`F × 3 × 365` for 8 h), truncated toward zero to 1e-8 (a display field).
pub fn perpetual_fair_basis_rate(funding_rate: Rate, interval_ns: i64) -> Rate {
    assert!(interval_ns > 0, "amdahl-risk: funding interval {interval_ns} must be > 0");
    let r = mul(funding_rate.0 as i128, YEAR_NS as i128) / interval_ns as i128;
    Rate(to_money(r, "fair basis rate"))
}

/// Dated-future fair price: `index × (1 + rate × t_left / year)`, `t_left = max(0, expiry −
/// now)`, rounded half away from zero to a tick.
pub fn futures_fair_price(
    index: Price,
    basis_rate: Rate,
    now: Timestamp,
    expiry: Timestamp,
) -> Price {
    let t_left = (expiry.0 - now.0).clamp(0, YEAR_NS * 100);
    index_plus_basis(index, basis_rate, t_left, YEAR_NS)
}

/// Last-price marking: the mark is the last trade price.
pub fn last_price_mark(last: Price) -> Price {
    last
}

/// The smoothed, annualised fair basis rate of a dated future (BitMEX `%FairBasis`).
///
/// Each accepted sample is `s = (impactMid / index − 1) × year / t_left`, computed exactly
/// as `(bid + ask − 2·index) × year × 1e8 / (2·index·t_left)` and rounded half away from
/// zero to 1e-8, then clamped to `±max_abs`. The first sample seeds the rate; later ones
/// move it by the EMA step `round_half_away(alpha × (s − rate))`. A sample is refused (the
/// rate is unchanged) when either impact price is missing, the book is crossed, the expiry
/// has passed, or the impact spread is not narrower than `max(MM × mid, 3 ticks)`:
/// `2·(ask − bid)·1e8 ≥ max(MM × (bid + ask), 6·1e8)`, exactly in i128 (API.md §10).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FuturesBasis {
    rate: Rate,
    seeded: bool,
    alpha: Rate,
    max_abs: Rate,
}

impl FuturesBasis {
    /// `alpha` in (0, 1] is the EMA weight of a new sample; `max_abs` > 0 bounds a sample.
    pub fn new(alpha: Rate, max_abs: Rate) -> Result<FuturesBasis, String> {
        if alpha.0 <= 0 || alpha.0 > Rate::SCALE {
            return Err(format!("fair basis: alpha {} must be in (0, 1e8]", alpha.0));
        }
        if max_abs.0 <= 0 {
            return Err(format!("fair basis: max_abs {} must be > 0", max_abs.0));
        }
        Ok(FuturesBasis { rate: Rate(0), seeded: false, alpha, max_abs })
    }

    /// The current annualised basis rate (0 before the first sample).
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Offers one premium sample (e.g. every 30 s); returns whether it was used.
    pub fn sample(
        &mut self,
        impact_bid: Option<Price>,
        impact_ask: Option<Price>,
        index: Price,
        maint_margin: Rate,
        now: Timestamp,
        expiry: Timestamp,
    ) -> bool {
        let (Some(bid), Some(ask)) = (impact_bid, impact_ask) else { return false };
        let t_left = expiry.0 - now.0;
        if t_left <= 0 || index.0 <= 0 || bid.0 <= 0 || ask < bid {
            return false;
        }
        let s = Rate::SCALE as i128;
        let (b, a, ix) = (bid.0 as i128, ask.0 as i128, index.0 as i128);
        let spread2 = mul(2 * (a - b), s);
        let limit = mul(maint_margin.0 as i128, a + b).max(6 * s);
        if spread2 >= limit {
            return false;
        }
        let num = mul(mul(a + b - 2 * ix, YEAR_NS as i128), s);
        let den = mul(2 * ix, t_left as i128);
        let m = self.max_abs.0 as i128;
        let sample = div_round_half_away(num, den).clamp(-m, m) as i64;
        if self.seeded {
            let step = div_round_half_away(
                mul(self.alpha.0 as i128, sample as i128 - self.rate.0 as i128),
                s,
            );
            self.rate = Rate(self.rate.0 + step as i64);
        } else {
            self.rate = Rate(sample);
            self.seeded = true;
        }
        true
    }
}

/// The basis of `mark` over `index` in percent, for display and logs only.
pub fn basis_percent_f64(index: Price, mark: Price) -> f64 {
    if index.0 == 0 {
        return 0.0;
    }
    (mark.0 - index.0) as f64 / index.0 as f64 * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;

    #[test]
    fn perpetual_fair_price_at_several_times_to_funding() {
        let ix = Price(20_000); // 10000 USD in 0.5 ticks
        let f = Rate(10_000); // 0.01%
        let at =
            |left_h: i64| perpetual_fair_price(ix, f, Timestamp(0), Timestamp(left_h * H), 8 * H);
        // 8 h left: 20000 × 1.0001 = 20002.
        assert_eq!(at(8), Price(20_002));
        // 4 h: 20000 × 1.00005 = 20001.
        assert_eq!(at(4), Price(20_001));
        // 2 h: 20000 × 1.000025 = 20000.5 → half away → 20001.
        assert_eq!(at(2), Price(20_001));
        // 1 h: 20000 × 1.0000125 = 20000.25 → 20000.
        assert_eq!(at(1), Price(20_000));
        // Past the funding time: no basis; more than an interval away: clamped to 8 h.
        assert_eq!(at(-1), Price(20_000));
        assert_eq!(at(24), Price(20_002));
        // A negative rate, 8 h: 20000 × (1 − 0.0003) = 19994.
        let neg = perpetual_fair_price(ix, Rate(-30_000), Timestamp(0), Timestamp(8 * H), 8 * H);
        assert_eq!(neg, Price(19_994));
    }

    #[test]
    fn fair_basis_rate_annualises() {
        // API.md §10: 0.0001 → 0.1095, 0.00011 → 0.12045.
        assert_eq!(perpetual_fair_basis_rate(Rate(10_000), 8 * H), Rate(10_950_000));
        assert_eq!(perpetual_fair_basis_rate(Rate(11_000), 8 * H), Rate(12_045_000));
    }

    #[test]
    fn futures_basis_ema_and_fair_price() {
        let mut fb = FuturesBasis::new(Rate(50_000_000), Rate(500_000_000)).unwrap();
        let day = 24 * H;
        let expiry = Timestamp(73 * day);
        // Index 20000, impact 20199/20201 (mid 20200, +1%), 73 days = 0.2 year left:
        // s = 1% / 0.2 = 5% = 5_000_000. Spread 2 ticks < max(0.5% × 20200 = 101, 3).
        let ok = fb.sample(
            Some(Price(20_199)),
            Some(Price(20_201)),
            Price(20_000),
            Rate(500_000),
            Timestamp(0),
            expiry,
        );
        assert!(ok);
        assert_eq!(fb.rate(), Rate(5_000_000)); // seeded
        // Mid 20100 (+0.5%), same time: s = 2.5%; EMA α = 0.5: 5% + 0.5 × (2.5% − 5%) = 3.75%.
        assert!(fb.sample(
            Some(Price(20_099)),
            Some(Price(20_101)),
            Price(20_000),
            Rate(500_000),
            Timestamp(0),
            expiry
        ));
        assert_eq!(fb.rate(), Rate(3_750_000));
        // A wide spread (300 ticks ≥ 0.5% × 20100 = 100.5) is refused; the rate holds.
        assert!(!fb.sample(
            Some(Price(19_950)),
            Some(Price(20_250)),
            Price(20_000),
            Rate(500_000),
            Timestamp(0),
            expiry
        ));
        assert_eq!(fb.rate(), Rate(3_750_000));
        // Mark with 3.75%/yr and 73 days left: 20000 × (1 + 0.0375 × 0.2) = 20150.
        assert_eq!(
            futures_fair_price(Price(20_000), fb.rate(), Timestamp(0), expiry),
            Price(20_150)
        );
        // At expiry the mark is the index.
        assert_eq!(futures_fair_price(Price(20_000), fb.rate(), expiry, expiry), Price(20_000));
        assert_eq!(last_price_mark(Price(12_345)), Price(12_345));
    }
}
