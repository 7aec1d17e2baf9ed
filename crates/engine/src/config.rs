use amdahl_risk::Instrument;
use amdahl_risk::fair::MarkMethod;
use amdahl_risk::funding::FundingSchedule;
use amdahl_risk::index::IndexConfig;
use amdahl_types::{Currency, Money, Price, Rate, Timestamp};

/// One market: its instrument, its opening mark price and its risk lifecycle.
#[derive(Clone, Debug)]
pub struct MarketConfig {
    pub instrument: Instrument,
    /// The mark price at start.
    pub mark: Price,
    /// The most working orders of this market at once (resting in its book, or waiting for
    /// a trigger): the size of its book and of its slice of the order table. Past it, new
    /// orders are refused `CapacityExhausted`.
    pub max_orders: u32,
    pub lifecycle: Lifecycle,
}

/// How a market's index, mark, funding and expiry work. The default is the bare market
/// the engine's own tests use: index and mark arrive whole as commands (`Command::Index`,
/// `Command::Mark`: an external index and mark service), no funding, no expiry.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    /// A composite index fed by `Command::IndexPrice` constituent prices.
    pub index: Option<IndexConfig>,
    /// The engine computes the mark on every tick: fair price (from the index) or last
    /// price. `None`: marks arrive as `Command::Mark`.
    pub mark: Option<MarkMethod>,
    /// Perpetual funding.
    pub funding: Option<FundingParams>,
    /// A dated future: it settles at this time at the 30-minute TWAP of the index.
    pub expiry: Option<Timestamp>,
    /// A dated future's fair basis: the smoothed premium of the book over the index.
    pub basis: Option<BasisParams>,
}

/// How a dated future's fair basis is sampled (API.md §10: every 30 s, only while the
/// impact spread is narrower than max(MM, 3 ticks)) and smoothed.
#[derive(Clone, Copy, Debug)]
pub struct BasisParams {
    /// The EMA weight of a new sample, in (0, 1].
    pub alpha: Rate,
    /// A sample's annualised rate is clamped to ±this.
    pub max_abs: Rate,
    pub sample_every_ns: i64,
    /// The notional the impact bid/ask prices must fill.
    pub impact_notional: Money,
}

/// Perpetual funding (API.md §10): `F = P + clamp(I − P, ±0.05%)`, capped.
#[derive(Clone, Copy, Debug)]
pub struct FundingParams {
    pub schedule: FundingSchedule,
    /// Daily interest rates of the quote and base currencies (XBTUSD: 0.06%, 0.03%).
    pub quote_rate: Rate,
    pub base_rate: Rate,
    /// The notional (in settlement units) the impact bid/ask prices must fill.
    pub impact_notional: Money,
    /// How often the premium index is sampled (BitMEX: every minute).
    pub premium_every_ns: i64,
}

impl FundingParams {
    /// XBTUSD's: 8 h at 04:00/12:00/20:00 UTC, I = 0.01%, impact notional 10,000 USD at
    /// ~10,000 USD/XBT = 1 XBT, sampled every minute.
    pub fn bitmex_xbtusd() -> FundingParams {
        FundingParams {
            schedule: FundingSchedule::BITMEX_8H,
            quote_rate: Rate(60_000),
            base_rate: Rate(30_000),
            impact_notional: 100_000_000,
            premium_every_ns: 60_000_000_000,
        }
    }
}

/// Every capacity and limit of the engine; nothing grows past these.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Accounts are `0..accounts`.
    pub accounts: u32,
    pub markets: Vec<MarketConfig>,
    /// BitMEX: 200 open orders per account per market.
    pub max_open_orders: u32,
    /// BitMEX: 10 untriggered stop orders per account per market.
    pub max_stop_orders: u32,
    /// The full recomputation audit is rolled over this many commands: each group checks
    /// the slice of the accounts and order slots its commands earned, and the group that
    /// completes the cycle recounts the whole-system sums (every mark tick also recounts
    /// its market). 0 disables it.
    pub audit_cycle: u64,
    /// The insurance fund's opening balance per currency (enters as a deposit).
    pub insurance_fund: [Money; Currency::COUNT],
}

impl EngineConfig {
    /// A small configuration with the three reference instruments, for tests and examples.
    pub fn reference(accounts: u32) -> EngineConfig {
        use amdahl_risk::Instrument;
        let markets = vec![
            // XBTUSD at 10000.0 USD: 20000 ticks of 0.5.
            MarketConfig {
                instrument: Instrument::xbtusd(),
                mark: Price(20_000),
                max_orders: 1 << 16,
                lifecycle: Lifecycle::default(),
            },
            // ETHUSD at 2000.00: 40000 ticks of 0.05.
            MarketConfig {
                instrument: Instrument::ethusd(),
                mark: Price(40_000),
                max_orders: 1 << 16,
                lifecycle: Lifecycle::default(),
            },
            // XBTUSDT at 10000.0: 20000 ticks of 0.5.
            MarketConfig {
                instrument: Instrument::xbtusdt(),
                mark: Price(20_000),
                max_orders: 1 << 16,
                lifecycle: Lifecycle::default(),
            },
        ];
        EngineConfig {
            accounts,
            markets,
            max_open_orders: 200,
            max_stop_orders: 10,
            audit_cycle: 64,
            insurance_fund: [0; Currency::COUNT],
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.markets.is_empty() || self.markets.len() > u16::MAX as usize {
            return Err("markets: need 1..=65535".into());
        }
        for (i, m) in self.markets.iter().enumerate() {
            m.instrument.validate().map_err(|e| format!("market {i}: {e}"))?;
            if m.mark.0 <= 0 || m.mark > m.instrument.max_price {
                return Err(format!("market {i}: opening mark outside 1..=max_price"));
            }
            if m.max_orders == 0 {
                return Err(format!("market {i}: max_orders must be positive"));
            }
            if let Some(ix) = &m.lifecycle.index {
                ix.validate().map_err(|e| format!("market {i}: index: {e}"))?;
            }
            if let Some(f) = &m.lifecycle.funding {
                f.schedule.validate().map_err(|e| format!("market {i}: {e}"))?;
                if f.premium_every_ns <= 0 || f.impact_notional <= 0 {
                    return Err(format!("market {i}: funding sampling must be positive"));
                }
            }
            if m.lifecycle.mark == Some(MarkMethod::FairPrice) && m.lifecycle.index.is_none() {
                return Err(format!("market {i}: fair-price marking needs a composite index"));
            }
            if let Some(b) = m.lifecycle.basis {
                amdahl_risk::fair::FuturesBasis::new(b.alpha, b.max_abs)
                    .map_err(|e| format!("market {i}: {e}"))?;
                if m.lifecycle.expiry.is_none() || b.sample_every_ns <= 0 || b.impact_notional <= 0
                {
                    return Err(format!("market {i}: a fair basis needs an expiry and sampling"));
                }
            }
            if m.lifecycle.funding.is_some() && m.lifecycle.expiry.is_some() {
                return Err(format!("market {i}: a market is perpetual (funding) or dated"));
            }
        }
        if self.accounts == 0 {
            return Err("accounts must be positive".into());
        }
        // Order slots are numbered across markets in a u32.
        if self.markets.iter().map(|m| m.max_orders as u64).sum::<u64>() > u32::MAX as u64 {
            return Err("the markets' max_orders must sum to at most 2^32 − 1".into());
        }
        Ok(())
    }
}
