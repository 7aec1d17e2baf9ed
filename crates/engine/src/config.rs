use amdahl_risk::Instrument;
use amdahl_types::{Currency, Money, Price};

/// One market: its instrument and its opening mark price.
#[derive(Clone, Debug)]
pub struct MarketConfig {
    pub instrument: Instrument,
    /// The mark price at start (later marks arrive as `Command::Mark`).
    pub mark: Price,
    /// The most orders that can rest in this market's book at once.
    pub max_resting: u32,
}

/// Every capacity and limit of the engine; nothing grows past these.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Accounts are `0..accounts`.
    pub accounts: u32,
    pub markets: Vec<MarketConfig>,
    /// The most working orders (resting + untriggered) across all markets.
    pub max_orders: u32,
    /// BitMEX: 200 open orders per account per market.
    pub max_open_orders: u32,
    /// BitMEX: 10 untriggered stop orders per account per market.
    pub max_stop_orders: u32,
    /// Run the full recomputation audit every this many groups (it also runs on every
    /// mark tick). 0 disables the periodic run.
    pub full_audit_every: u64,
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
                max_resting: 1 << 16,
            },
            // ETHUSD at 2000.00: 40000 ticks of 0.05.
            MarketConfig {
                instrument: Instrument::ethusd(),
                mark: Price(40_000),
                max_resting: 1 << 16,
            },
            // XBTUSDT at 10000.0: 20000 ticks of 0.5.
            MarketConfig {
                instrument: Instrument::xbtusdt(),
                mark: Price(20_000),
                max_resting: 1 << 16,
            },
        ];
        EngineConfig {
            accounts,
            markets,
            max_orders: 1 << 18,
            max_open_orders: 200,
            max_stop_orders: 10,
            full_audit_every: 64,
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
        }
        if self.accounts == 0 || self.max_orders == 0 {
            return Err("accounts and max_orders must be positive".into());
        }
        Ok(())
    }
}
