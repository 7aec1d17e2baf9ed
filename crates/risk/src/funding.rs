//! Perpetual funding (API.md §10): premium index samples, their mean over the interval, the
//! clamped and capped funding rate, payments, the clearing residue and the schedule.
//!
//! Rounding rules:
//! - a premium sample and the interest rate are exact fractions rounded half away from zero
//!   to 1e-8 (rates, not money: nearest is neutral); the mean of the samples likewise;
//! - the caps `75% × (IM − MM)` and `75% × MM` truncate toward zero (a smaller cap is the
//!   conservative one);
//! - a payment is `|mark value| × F` **truncated toward zero**, the same rule for payers and
//!   receivers. Payers may pay and receivers may receive up to 1 unit less than exact, so
//!   the clearing balance is left with a residue `Σ paid − Σ received` in
//!   `(−#receivers, +#payers)`; [`FundingClearing`] computes it exactly and it moves to the
//!   insurance fund (negative: the fund pays it), so the audit stays exact.

use amdahl_types::{Money, Price, Rate, Timestamp};

use crate::Instrument;
use crate::math::{div_round_half_away, mul, to_money};

/// The premium-to-interest clamp: `F = P + clamp(I − P, −0.05%, +0.05%)`.
pub const INTEREST_CLAMP: Rate = Rate(50_000);

/// Eight hours in nanoseconds, BitMEX's funding interval.
pub const EIGHT_HOURS_NS: i64 = 8 * 3_600_000_000_000;

/// When funding happens: every `interval_ns`, at `offset_ns` past a multiple of the interval
/// since the epoch (8 h, offset 4 h: 04:00, 12:00 and 20:00 UTC).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FundingSchedule {
    pub interval_ns: i64,
    pub offset_ns: i64,
}

impl FundingSchedule {
    /// BitMEX perpetuals: 8 h at 04:00, 12:00, 20:00 UTC.
    pub const BITMEX_8H: FundingSchedule =
        FundingSchedule { interval_ns: EIGHT_HOURS_NS, offset_ns: 4 * 3_600_000_000_000 };

    /// Checks `interval_ns > 0` and `0 ≤ offset_ns < interval_ns`.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_ns <= 0 || self.offset_ns < 0 || self.offset_ns >= self.interval_ns {
            return Err(format!(
                "funding schedule: need interval {} > 0 and 0 <= offset {} < interval",
                self.interval_ns, self.offset_ns
            ));
        }
        Ok(())
    }

    /// The first funding time **strictly after** `now`. At exactly 12:00 the 12:00 funding is
    /// due (the caller pays it) and the next is 20:00.
    pub fn next_after(&self, now: Timestamp) -> Timestamp {
        let k = (now.0 - self.offset_ns).div_euclid(self.interval_ns);
        Timestamp((k + 1) * self.interval_ns + self.offset_ns)
    }
}

/// The interest rate of one interval from the daily quote and base interest rates
/// (`fundingQuoteRate`, `fundingBaseRate`): `I = (quote − base) × interval / 1 day`, rounded
/// half away from zero. XBTUSD, 8 h: (0.06% − 0.03%) / 3 = 0.01%.
pub fn interest_rate(quote_rate: Rate, base_rate: Rate, interval_ns: i64) -> Rate {
    let d = quote_rate.0 as i128 - base_rate.0 as i128;
    let r = div_round_half_away(mul(d, interval_ns as i128), Timestamp::NANOS_PER_DAY as i128);
    Rate(to_money(r, "interest rate"))
}

/// One premium index sample:
/// `P = (max(0, impactBid − mark) − max(0, mark − impactAsk)) / index`, rounded half away from
/// zero to 1e-8. A missing impact price (a book too thin for the impact notional)
/// contributes 0. BitMEX adds the funding basis used in the mark to each sample; a caller
/// that wants that adds it to the result.
pub fn premium_index(
    impact_bid: Option<Price>,
    impact_ask: Option<Price>,
    mark: Price,
    index: Price,
) -> Rate {
    assert!(index.0 > 0, "amdahl-risk: premium index with index {}", index.0);
    let up = impact_bid.map_or(0, |b| (b.0 as i128 - mark.0 as i128).max(0));
    let down = impact_ask.map_or(0, |a| (mark.0 as i128 - a.0 as i128).max(0));
    let r = div_round_half_away(mul(up - down, Rate::SCALE as i128), index.0 as i128);
    Rate(to_money(r, "premium index"))
}

/// The premium samples of one interval; the mean sets the next payment's rate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PremiumAccumulator {
    sum: i128,
    count: u32,
}

impl PremiumAccumulator {
    pub fn add(&mut self, sample: Rate) {
        self.sum += sample.0 as i128;
        self.count += 1;
    }
    pub fn count(&self) -> u32 {
        self.count
    }
    /// The mean of the samples, rounded half away from zero; 0 with no sample.
    pub fn mean(&self) -> Rate {
        if self.count == 0 {
            return Rate(0);
        }
        Rate(to_money(div_round_half_away(self.sum, self.count as i128), "premium mean"))
    }
    /// The mean, and a fresh start for the next interval.
    pub fn take_mean(&mut self) -> Rate {
        let m = self.mean();
        *self = PremiumAccumulator::default();
        m
    }
}

/// The caps of an instrument's funding rate from its base margins:
/// `(|F| ≤ 75% × (IM − MM), |F − F_prev| ≤ 75% × MM)`, each truncated toward zero.
/// XBTUSD (1%, 0.5%): (0.375%, 0.375%).
pub fn funding_caps(inst: &Instrument) -> (Rate, Rate) {
    let im = inst.init_margin.0 as i128;
    let mm = inst.maint_margin.0 as i128;
    let abs = mul(im - mm, 3) / 4;
    let change = mul(mm, 3) / 4;
    (Rate(to_money(abs, "funding cap")), Rate(to_money(change, "funding change cap")))
}

/// The funding rate `F = P + clamp(I − P, −0.05%, +0.05%)` from the premium mean `P` and the
/// interest `I`, then capped: within `previous ± change cap` (skipped when there is no
/// previous rate) and within `± absolute cap`. If a previous rate lies so far outside the
/// absolute cap that the two ranges do not meet (only after a configuration change), the
/// absolute cap wins.
pub fn funding_rate(
    premium: Rate,
    interest: Rate,
    previous: Option<Rate>,
    inst: &Instrument,
) -> Rate {
    let (p, i, c) = (premium.0 as i128, interest.0 as i128, INTEREST_CLAMP.0 as i128);
    let f = p + (i - p).clamp(-c, c);
    let (abs, change) = funding_caps(inst);
    let (abs, change) = (abs.0 as i128, change.0 as i128);
    let (mut lo, mut hi) = (-abs, abs);
    if let Some(prev) = previous {
        let (l, h) = (lo.max(prev.0 as i128 - change), hi.min(prev.0 as i128 + change));
        if l <= h {
            (lo, hi) = (l, h);
        }
    }
    Rate(to_money(f.clamp(lo, hi), "funding rate"))
}

/// The wallet change of one position at a funding: `∓ trunc(|mark value| × |F|)`, negative
/// for a payer. Positive `F`: longs (`qty > 0`) pay, shorts receive; negative `F` the
/// reverse. `mark_value` is the position's value at the mark (either BitMEX sign; only its
/// magnitude is used). Truncated toward zero for payers and receivers alike.
///
/// Example: a long of 1 XBT value at F = 0.01% pays 100_000_000 × 0.0001 = 10_000 XBt.
pub fn funding_payment(qty: i64, mark_value: Money, rate: Rate) -> Money {
    let amount = mul(mark_value.unsigned_abs() as i128, rate.0 as i128) / Rate::SCALE as i128;
    to_money(-(qty.signum() as i128) * amount, "funding payment")
}

/// Sums the wallet changes of one market's funding and gives the residue for the insurance
/// fund: `Σ paid − Σ received`, so that Σ wallet changes + residue = 0 exactly.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FundingClearing {
    paid: i128,
    received: i128,
}

impl FundingClearing {
    /// Adds one position's wallet change (from [`funding_payment`]).
    pub fn add(&mut self, wallet_change: Money) {
        if wallet_change < 0 {
            self.paid += -(wallet_change as i128);
        } else {
            self.received += wallet_change as i128;
        }
    }
    pub fn paid(&self) -> Money {
        to_money(self.paid, "funding paid")
    }
    pub fn received(&self) -> Money {
        to_money(self.received, "funding received")
    }
    /// `Σ paid − Σ received`: credit it to the insurance fund (negative: debit).
    pub fn residue(&self) -> Money {
        to_money(self.paid - self.received, "funding residue")
    }
}

/// The clearing residue of a whole market's wallet changes (see [`FundingClearing`]).
pub fn funding_residue(wallet_changes: impl IntoIterator<Item = Money>) -> Money {
    let mut c = FundingClearing::default();
    for w in wallet_changes {
        c.add(w);
    }
    c.residue()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;

    #[test]
    fn schedule_is_04_12_20_utc() {
        let s = FundingSchedule::BITMEX_8H;
        s.validate().unwrap();
        assert_eq!(s.next_after(Timestamp(0)), Timestamp(4 * H)); // 00:00 → 04:00
        assert_eq!(s.next_after(Timestamp(4 * H - 1)), Timestamp(4 * H));
        assert_eq!(s.next_after(Timestamp(4 * H)), Timestamp(12 * H)); // strictly after
        assert_eq!(s.next_after(Timestamp(13 * H)), Timestamp(20 * H));
        assert_eq!(s.next_after(Timestamp(21 * H)), Timestamp(28 * H)); // 04:00 next day
        assert_eq!(s.next_after(Timestamp(-1)), Timestamp(4 * H)); // 23:59:59.999999999
        assert_eq!(s.next_after(Timestamp(-5 * H)), Timestamp(-4 * H)); // 19:00 → 20:00
    }

    #[test]
    fn interest_and_premium() {
        // (0.06% − 0.03%) / 3 = 0.01%.
        assert_eq!(interest_rate(Rate(60_000), Rate(30_000), 8 * H), Rate(10_000));
        // Impact bid 10 ticks above the mark, index 20000: 10 / 20000 = 0.05%.
        let p =
            premium_index(Some(Price(20_010)), Some(Price(20_020)), Price(20_000), Price(20_000));
        assert_eq!(p, Rate(50_000));
        // Impact ask 3 below the mark: −3 / 20000 = −0.015%.
        let p =
            premium_index(Some(Price(19_990)), Some(Price(19_997)), Price(20_000), Price(20_000));
        assert_eq!(p, Rate(-15_000));
        // Mark inside the impact spread, or no book: 0.
        assert_eq!(
            premium_index(Some(Price(19_999)), Some(Price(20_001)), Price(20_000), Price(20_000)),
            Rate(0)
        );
        assert_eq!(premium_index(None, None, Price(20_000), Price(20_000)), Rate(0));
        let mut acc = PremiumAccumulator::default();
        for s in [10_000, 20_000, 20_001] {
            acc.add(Rate(s));
        }
        // 50001 / 3 = 16667.0 → 16667.
        assert_eq!(acc.take_mean(), Rate(16_667));
        assert_eq!(acc.count(), 0);
    }
}
