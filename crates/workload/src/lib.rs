//! A deterministic, seeded workload for the engine: the command stream that `amdahl bench`
//! and the criterion engine bench feed through the serial engine.
//!
//! One [`WorkloadConfig`] (with its seed) fixes the whole stream, byte for byte, on any
//! machine: the PRNG is xoshiro256** written out in [`rng`], and nothing reads a clock.
//!
//! The stream is:
//! 1. **Setup**: one deposit per account per settlement currency in use
//!    ([`DEPOSIT_XBT`], [`DEPOSIT_USDT`]), ample for the order sizes below.
//!    Then, if `positions` is set, that many open positions: pairs of accounts trade one
//!    order size at the opening mark (a resting buy, then an IOC sell that fills it), pair
//!    after pair round-robin over the markets, the pairs in a seeded shuffle (positions open
//!    in no account order in real flow) — the standing open interest a remargin-heavy run
//!    re-values on every tick (positions take the default, cross, margin).
//! 2. **The mix**, `commands` long, per mille (see [`mix`]): 450 limit orders near the mark,
//!    300 cancels, 100 amends, 100 crossing orders (half Market, half IOC limits), 20
//!    stop-market orders, 15 cancel-alls, 15 leverage changes; and, when `mark_every` is
//!    set, every `mark_every`-th command is instead a mark tick for the next market
//!    (round-robin), the mark doing a bounded random walk.
//!
//! Accounts are drawn from a Zipf law (exponent 1), markets and sides uniformly.
//!
//! **Predicted order ids.** A generator cannot see the engine's events, but the engine
//! assigns `OrderId`s from 1 in the order it *accepts* orders. The generator therefore
//! counts the orders it places and predicts each id, and it shapes the flow so that places
//! are not refused: deposits are large, every limit price is a few ticks from the mark
//! (well inside the 10% band), quantities are whole lots, and it keeps an upper bound on
//! each (account, market)'s working and stop orders — the number placed since its last
//! cancel-all — sending a cancel-all before the engine's 200 open / 10 stop limits could
//! be reached. Cancels and amends pick from a bounded pool of recently placed limit orders;
//! some of those have filled by then and are refused as `OrderNotOpen`, as on a real
//! exchange. A `NotYourOrder` refusal in a run means a prediction drifted (some place was
//! refused): the bench's reject counts show it.
//!
//! Limits: the generator allocates everything in [`Workload::new`] (the Zipf table, the
//! per-(account, market) counters, the recent-order pool); producing a command allocates
//! nothing. Timing harnesses pre-generate the stream into a `Vec` and time only the engine.
#![forbid(unsafe_code)]

pub mod rng;

use amdahl_engine::{EngineConfig, EventSink, MarketConfig};
use amdahl_risk::{ContractKind, Instrument};
use amdahl_types::{
    AccountId, AmendOrder, Command, Currency, ExecInst, Leverage, MarketId, NewOrder, OrdType,
    OrderId, Price, Qty, Seq, Sequenced, Side, TimeInForce, Timestamp,
};

pub use rng::{Rng, Zipf};

/// The sequencer clock at the first command: 2026-01-01T00:00:00Z.
pub const START_TIME: Timestamp = Timestamp(1_767_225_600_000_000_000);
/// The journaled clock advances this much per command (1 µs): a million-command run stays
/// inside one UTC day, so no `Day` roll happens mid-run.
pub const NANOS_PER_COMMAND: i64 = 1_000;
/// Each account's XBt deposit: 100 XBT.
pub const DEPOSIT_XBT: i64 = 100 * 100_000_000;
/// Each account's USDt deposit: 1,000,000 USDT.
pub const DEPOSIT_USDT: i64 = 1_000_000 * 1_000_000;
/// Every market opens at 10,000.0 USD (20,000 ticks of 0.5).
pub const OPENING_MARK: Price = Price(20_000);

/// The command mix, per mille of the non-mark commands.
pub mod mix {
    pub const LIMIT: u64 = 450;
    pub const CANCEL: u64 = 300;
    pub const AMEND: u64 = 100;
    pub const CROSS: u64 = 100;
    pub const STOP: u64 = 20;
    pub const CANCEL_ALL: u64 = 15;
    pub const LEVERAGE: u64 = 15;
    const _: () = assert!(LIMIT + CANCEL + AMEND + CROSS + STOP + CANCEL_ALL + LEVERAGE == 1000);
}

/// The engine's limits the generator stays under (`max_open_orders`, `max_stop_orders`),
/// with a margin.
const OPEN_ORDER_CAP: u8 = 190;
const STOP_ORDER_CAP: u8 = 10;
/// How many recently placed limit orders the generator remembers, and how many of the
/// newest of them a cancel or amend picks from (traders mostly cancel their latest
/// quotes; older ones are left to fill or to a cancel-all).
const RECENT_POOL: usize = 1 << 16;
const RECENT_PICK: usize = 32;
/// Limit prices lie this many ticks around the mark: buys at mark+1 … mark−(SPREAD−2)
/// (mirrored for sells), so a few cross and most rest near the touch.
const LIMIT_SPREAD_TICKS: u64 = 10;
/// Crossing IOC limits reach this many ticks through the mark.
const CROSS_TICKS: i64 = 5;
/// Stop triggers lie 10 … 10+STOP_SPREAD ticks beyond the mark.
const STOP_SPREAD_TICKS: u64 = 40;
/// The mark moves −mark_step … +mark_step ticks per tick (3 by default), pulled back
/// toward the opening mark once it strays more than MARK_RANGE_BP basis points (well
/// inside the 10% band).
const MARK_STEP_TICKS: u64 = 3;
const MARK_RANGE_BP: i64 = 200;
/// Leverage settings a leverage change picks from (hundredths; 0 = cross). No low
/// leverage: an isolated 1x account would fail the margin check on its next order and
/// break the id prediction.
const LEVERAGES: [u32; 5] = [0, 1_000, 2_500, 5_000, 10_000];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    pub seed: u64,
    /// Markets alternate inverse (XBTUSD-like) and linear (XBTUSDT-like).
    pub markets: u16,
    pub accounts: u32,
    /// Commands in the mix, after the setup deposits.
    pub commands: u64,
    /// A mark tick every this many commands (0: never; the mark stays at the opening mark).
    pub mark_every: u64,
    /// The largest move of one mark tick, in ticks. Larger steps liquidate more.
    pub mark_step_ticks: u64,
    /// Open positions the setup creates (even; at most markets × the accounts that pair up:
    /// an odd last account holds none).
    pub positions: u64,
    /// Commands per group (the engine audits after each group).
    pub group_size: u32,
    /// The engine's whole-system recomputation, rolled over this many commands (each group
    /// checks its share of the accounts and order slots; 0: never; every mark tick
    /// recounts its own market and every group runs the ledger audit).
    pub audit_cycle: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 1,
            markets: 4,
            accounts: 100_000,
            commands: 1_000_000,
            mark_every: 1000,
            mark_step_ticks: MARK_STEP_TICKS,
            positions: 0,
            group_size: 64,
            audit_cycle: 262_144,
        }
    }
}

impl WorkloadConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.markets == 0 {
            return Err("markets must be at least 1".into());
        }
        if self.accounts == 0 {
            return Err("accounts must be at least 1".into());
        }
        if self.group_size == 0 {
            return Err("group_size must be at least 1".into());
        }
        // Seeds pair accounts (2p, 2p+1): an odd last account holds none.
        let seedable = (self.accounts as u64 / 2 * 2) * self.markets as u64;
        if !self.positions.is_multiple_of(2) || self.positions > seedable {
            return Err(format!(
                "positions {}: need an even number ≤ paired accounts × markets ({seedable})",
                self.positions,
            ));
        }
        // Deposits must not overflow the ledger's i64 sums.
        let total_usdt = self.accounts as i128 * DEPOSIT_USDT as i128;
        if total_usdt > i64::MAX as i128 / 4 {
            return Err(format!("accounts {} too many for the fixed deposits", self.accounts));
        }
        // The clock must stay inside one UTC day (no Day roll mid-run).
        let span = (self.setup_len() + self.commands) as i128 * NANOS_PER_COMMAND as i128;
        if span >= Timestamp::NANOS_PER_DAY as i128 {
            return Err(format!("commands {} too many for one day of 1 µs", self.commands));
        }
        Ok(())
    }

    /// Market `i`'s instrument: even markets are XBTUSD-like inverse, odd XBTUSDT-like
    /// linear; markets past the first two get a numeric suffix (`XBTUSD2`, `XBTUSDT3`).
    pub fn instrument(&self, i: u16) -> Instrument {
        let mut inst =
            if i.is_multiple_of(2) { Instrument::xbtusd() } else { Instrument::xbtusdt() };
        if i >= 2 {
            inst.symbol = format!("{}{}", inst.symbol, i);
        }
        // The generator is open-loop: it predicts order ids by counting accepted orders, so
        // a refused placement shifts every later cancel and amend. Its busiest Zipf accounts
        // are whales; give them a risk limit they do not reach (100× the base, in steps of
        // the base) so placements are refused only for the reasons the mix means to test.
        inst.risk_limit = inst.risk_limit.saturating_mul(100);
        inst
    }

    /// Does any market settle in `currency`?
    pub fn uses(&self, currency: Currency) -> bool {
        (0..self.markets).any(|i| self.instrument(i).settle == currency)
    }

    /// How many setup commands (deposits, then two orders per pair of seeded positions)
    /// precede the mix.
    pub fn setup_len(&self) -> u64 {
        self.deposits_len() + self.positions
    }

    fn deposits_len(&self) -> u64 {
        let currencies = Currency::ALL.iter().filter(|&&c| self.uses(c)).count() as u64;
        self.accounts as u64 * currencies
    }

    /// The engine configuration this workload runs against. Capacities: market `m` holds
    /// every order `lasting[m]` counts (the generated stream's orders there that could
    /// still be working if none ever filled or was cancelled by id), or as many as the
    /// per-account caps allow, whichever is less, plus room for liquidation orders and
    /// the order being executed — so a run never meets `CapacityExhausted`.
    fn engine_config(&self, lasting: &[u64]) -> EngineConfig {
        let per_account = self.accounts as u64 * OPEN_ORDER_CAP as u64;
        let markets = (0..self.markets)
            .map(|i| MarketConfig {
                instrument: self.instrument(i),
                mark: OPENING_MARK,
                max_orders: (lasting[i as usize].min(per_account) + 4096).min(1 << 24) as u32,
                lifecycle: Default::default(),
            })
            .collect();
        EngineConfig {
            accounts: self.accounts,
            markets,
            max_open_orders: 200,
            max_stop_orders: STOP_ORDER_CAP as u32,
            audit_cycle: self.audit_cycle,
            insurance_fund: [0; Currency::COUNT],
        }
    }
}

/// Per-market state the generator tracks.
#[derive(Clone, Copy, Debug)]
struct MarketState {
    lot: i64,
    /// Order quantities are `lot × qty_scale × (1 … 10)`: about 1,000–10,000 USD.
    qty_scale: i64,
    mark: i64,
    /// The number the engine gives the market's next accepted order (`OrderId::new`).
    next_order: u64,
}

/// A recently placed resting-capable limit order, for cancels and amends.
#[derive(Clone, Copy, Debug)]
struct Recent {
    id: u64,
    account: u32,
    market: u16,
    side: Side,
    price: i64,
    qty: i64,
}

/// The generator: an iterator of `Sequenced` commands, setup deposits first.
pub struct Workload {
    config: WorkloadConfig,
    rng: Rng,
    zipf: Zipf,
    markets: Vec<MarketState>,
    currencies: [Option<Currency>; Currency::COUNT],
    /// Upper bounds on working (resting + untriggered) and untriggered orders per
    /// (account × markets + market): placed since the last cancel-all.
    open_bound: Vec<u8>,
    stop_bound: Vec<u8>,
    /// The index in `LEVERAGES` last set per cell, so a change always changes something.
    leverage_set: Vec<u8>,
    recent: Vec<Recent>,
    /// Commands emitted so far (setup included); the next `Seq` is this + 1.
    emitted: u64,
    setup_len: u64,
    marks_sent: u64,
    /// The order in which account pairs open their seeded positions: shuffled, as
    /// positions open in real flow (empty without seeded positions).
    seed_pairs: Vec<u32>,
}

impl Workload {
    /// # Panics
    /// If the configuration is invalid (see [`WorkloadConfig::validate`]).
    pub fn new(config: &WorkloadConfig) -> Workload {
        if let Err(e) = config.validate() {
            panic!("invalid workload config: {e}");
        }
        let markets = (0..config.markets)
            .map(|i| {
                let inst = config.instrument(i);
                let qty_scale = match inst.kind {
                    // 100 contracts = 100 USD.
                    ContractKind::Inverse => 10,
                    // 1000 contracts = 0.001 XBT ≈ 10 USD.
                    ContractKind::Linear | ContractKind::Quanto => 100,
                };
                MarketState { lot: inst.lot.0, qty_scale, mark: OPENING_MARK.0, next_order: 1 }
            })
            .collect();
        let mut currencies = [None; Currency::COUNT];
        for c in Currency::ALL {
            if config.uses(c) {
                currencies[c.index()] = Some(c);
            }
        }
        let cells = config.accounts as usize * config.markets as usize;
        Workload {
            rng: Rng::new(config.seed),
            zipf: Zipf::new(config.accounts),
            markets,
            currencies,
            open_bound: vec![0; cells],
            stop_bound: vec![0; cells],
            leverage_set: vec![0; cells],
            recent: Vec::with_capacity(RECENT_POOL),
            emitted: 0,
            setup_len: config.setup_len(),
            marks_sent: 0,
            seed_pairs: Self::seed_pairs(config),
            config: config.clone(),
        }
    }

    /// Account pairs 0..accounts/2 in a seeded shuffle (Fisher–Yates, on a PRNG of its own so
    /// the mix after the setup does not depend on `positions`).
    fn seed_pairs(config: &WorkloadConfig) -> Vec<u32> {
        if config.positions == 0 {
            return Vec::new();
        }
        let mut pairs: Vec<u32> = (0..config.accounts / 2).collect();
        let mut rng = Rng::new(config.seed ^ 0x5EED_9A1B_0000_0000);
        for k in (1..pairs.len()).rev() {
            pairs.swap(k, rng.below(k as u64 + 1) as usize);
        }
        pairs
    }

    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// Setup commands (deposits) at the head of the stream.
    pub fn setup_len(&self) -> u64 {
        self.setup_len
    }

    /// Setup plus mix: the stream's total length.
    pub fn total_len(&self) -> u64 {
        self.setup_len + self.config.commands
    }

    fn stamp(&mut self, command: Command) -> Sequenced {
        self.emitted += 1;
        let time = Timestamp(START_TIME.0 + self.emitted as i64 * NANOS_PER_COMMAND);
        Sequenced { seq: Seq(self.emitted), time, command }
    }

    fn deposit(&self, i: u64) -> Command {
        // Account-major: every currency of one account, then the next. With seeded
        // positions the accounts come pair by pair in the seeds' order, so a seed's
        // deposits are as far ahead of it as in an unshuffled stream: a group cut near the
        // end of the deposits never holds a seed whose deposit stage R has not yet seen.
        let n = self.currencies.iter().flatten().count() as u64;
        let k = (i / n) as u32;
        let account = match self.seed_pairs.get(k as usize / 2) {
            Some(&pair) => AccountId(2 * pair + k % 2),
            None => AccountId(k),
        };
        let currency = self.currencies.iter().flatten().nth((i % n) as usize).copied();
        let currency = currency.expect("at least one currency in use");
        let amount = match currency {
            Currency::XBt => DEPOSIT_XBT,
            Currency::USDt => DEPOSIT_USDT,
        };
        Command::Deposit { account, currency, amount }
    }

    /// Seeding command `j`: seed `j / 2` opens a long and a short of one order size at the
    /// opening mark. Seeds go round-robin over the markets, and within a market over
    /// account pairs (2p, 2p+1) in the shuffled order of `seed_pairs`, so every (account,
    /// market) holds at most one seed (`validate`: at most accounts / 2 seeds per market).
    fn seed_position(&mut self, j: u64) -> Command {
        let markets = self.config.markets as u64;
        let (seed, m) = (j / 2 / markets, (j / 2 % markets) as usize);
        let pair = self.seed_pairs[seed as usize] as u64;
        let (side, account, tif) = if j.is_multiple_of(2) {
            (Side::Buy, 2 * pair, TimeInForce::GoodTillCancel)
        } else {
            (Side::Sell, 2 * pair + 1, TimeInForce::ImmediateOrCancel)
        };
        let s = self.markets[m];
        let mut o = Self::order(account as u32, m, side, OrdType::Limit, s.lot * s.qty_scale);
        o.price = Some(OPENING_MARK);
        o.time_in_force = tif;
        self.accept(o).0
    }

    fn side(&mut self) -> Side {
        if self.rng.below(2) == 0 { Side::Buy } else { Side::Sell }
    }

    fn qty(&mut self, m: usize) -> i64 {
        let s = self.markets[m];
        s.lot * s.qty_scale * (1 + self.rng.below(10) as i64)
    }

    /// A passive-ish limit price: buys at mark+1 … mark−(SPREAD−2), sells mirrored.
    fn near_touch(&mut self, m: usize, side: Side) -> i64 {
        let behind = self.rng.below(LIMIT_SPREAD_TICKS) as i64 - 1;
        self.markets[m].mark - side.sign() * behind
    }

    fn cell(&self, account: u32, market: usize) -> usize {
        account as usize * self.config.markets as usize + market
    }

    fn order(account: u32, m: usize, side: Side, ord_type: OrdType, qty: i64) -> NewOrder {
        NewOrder {
            account: AccountId(account),
            market: MarketId(m as u16),
            side,
            ord_type,
            time_in_force: TimeInForce::GoodTillCancel,
            exec_inst: ExecInst::NONE,
            qty: Qty(qty),
            price: None,
            stop_px: None,
            display_qty: None,
            client_tag: 0,
        }
    }

    /// The id the engine gives the order being placed now; the tag echoes it.
    fn accept(&mut self, mut order: NewOrder) -> (Command, u64) {
        let market = &mut self.markets[order.market.0 as usize];
        let id = OrderId::new(order.market, market.next_order).0;
        market.next_order += 1;
        order.client_tag = id;
        (Command::Place(order), id)
    }

    fn cancel_all(&mut self, account: u32, market: Option<usize>) -> Command {
        for m in 0..self.markets.len() {
            if market.is_none_or(|x| x == m) {
                let c = self.cell(account, m);
                self.open_bound[c] = 0;
                self.stop_bound[c] = 0;
            }
        }
        Command::CancelAll {
            account: AccountId(account),
            market: market.map(|m| MarketId(m as u16)),
        }
    }

    fn limit(&mut self) -> Command {
        let account = self.zipf.sample(&mut self.rng);
        let m = self.rng.below(self.markets.len() as u64) as usize;
        let c = self.cell(account, m);
        if self.open_bound[c] >= OPEN_ORDER_CAP {
            return self.cancel_all(account, Some(m));
        }
        self.open_bound[c] += 1;
        let side = self.side();
        let qty = self.qty(m);
        let price = self.near_touch(m, side);
        let mut o = Self::order(account, m, side, OrdType::Limit, qty);
        o.price = Some(Price(price));
        let (cmd, id) = self.accept(o);
        let r = Recent { id, account, market: m as u16, side, price, qty };
        if self.recent.len() < RECENT_POOL {
            self.recent.push(r);
        } else {
            let i = self.rng.below(RECENT_POOL as u64) as usize;
            self.recent[i] = r;
        }
        cmd
    }

    /// One of the newest `RECENT_PICK` remembered orders.
    fn pick_recent(&mut self) -> usize {
        let n = self.recent.len();
        n - 1 - self.rng.below(n.min(RECENT_PICK) as u64) as usize
    }

    fn cancel(&mut self) -> Command {
        if self.recent.is_empty() {
            return self.limit();
        }
        let i = self.pick_recent();
        let r = self.recent.swap_remove(i);
        Command::Cancel { account: AccountId(r.account), order: OrderId(r.id) }
    }

    fn amend(&mut self) -> Command {
        if self.recent.is_empty() {
            return self.limit();
        }
        let i = self.pick_recent();
        let r = self.recent[i];
        let m = r.market as usize;
        let lot = self.markets[m].lot;
        let mut a = AmendOrder {
            account: AccountId(r.account),
            order: OrderId(r.id),
            qty: None,
            price: None,
            stop_px: None,
        };
        if r.qty > lot && self.rng.below(2) == 0 {
            // Quantity down by one lot: keeps time priority.
            let qty = r.qty - lot;
            a.qty = Some(Qty(qty));
            self.recent[i].qty = qty;
        } else {
            // A new price near the touch: loses priority, may cross.
            let mut price = self.near_touch(m, r.side);
            if price == r.price {
                price -= r.side.sign();
            }
            a.price = Some(Price(price));
            self.recent[i].price = price;
        }
        Command::Amend(a)
    }

    fn cross(&mut self) -> Command {
        let account = self.zipf.sample(&mut self.rng);
        let m = self.rng.below(self.markets.len() as u64) as usize;
        let side = self.side();
        let qty = self.qty(m);
        let o = if self.rng.below(2) == 0 {
            let mut o = Self::order(account, m, side, OrdType::Market, qty);
            o.time_in_force = TimeInForce::ImmediateOrCancel;
            o
        } else {
            let mut o = Self::order(account, m, side, OrdType::Limit, qty);
            o.time_in_force = TimeInForce::ImmediateOrCancel;
            o.price = Some(Price(self.markets[m].mark + side.sign() * CROSS_TICKS));
            o
        };
        self.accept(o).0
    }

    fn stop(&mut self) -> Command {
        let account = self.zipf.sample(&mut self.rng);
        let m = self.rng.below(self.markets.len() as u64) as usize;
        let c = self.cell(account, m);
        if self.open_bound[c] >= OPEN_ORDER_CAP || self.stop_bound[c] >= STOP_ORDER_CAP {
            return self.cancel_all(account, Some(m));
        }
        self.open_bound[c] += 1;
        self.stop_bound[c] += 1;
        let side = self.side();
        let qty = self.qty(m);
        // A buy stop fires when the mark rises through it, a sell stop when it falls.
        let away = 10 + self.rng.below(STOP_SPREAD_TICKS) as i64;
        let mut o = Self::order(account, m, side, OrdType::Stop, qty);
        o.stop_px = Some(Price(self.markets[m].mark + side.sign() * away));
        self.accept(o).0
    }

    fn leverage(&mut self) -> Command {
        let account = self.zipf.sample(&mut self.rng);
        let m = self.rng.below(self.markets.len() as u64) as usize;
        let c = self.cell(account, m);
        // Any setting but the current one (index 0, cross, at start).
        let shift = 1 + self.rng.below(LEVERAGES.len() as u64 - 1) as usize;
        let k = (self.leverage_set[c] as usize + shift) % LEVERAGES.len();
        self.leverage_set[c] = k as u8;
        let leverage = Leverage(LEVERAGES[k]);
        Command::SetLeverage { account: AccountId(account), market: MarketId(m as u16), leverage }
    }

    fn mark(&mut self) -> Command {
        let m = (self.marks_sent % self.markets.len() as u64) as usize;
        self.marks_sent += 1;
        let most = self.config.mark_step_ticks;
        let step = self.rng.below(2 * most + 1) as i64 - most as i64;
        let open = OPENING_MARK.0;
        let mark = self.markets[m].mark;
        let range = open * MARK_RANGE_BP / 10_000;
        let step = if mark - open > range {
            -step.abs()
        } else if open - mark > range {
            step.abs()
        } else {
            step
        };
        self.markets[m].mark = mark + step;
        Command::Mark { market: MarketId(m as u16), price: Price(mark + step) }
    }

    fn mix_command(&mut self, i: u64) -> Command {
        let every = self.config.mark_every;
        if every != 0 && (i + 1).is_multiple_of(every) {
            return self.mark();
        }
        let mut r = self.rng.below(1000);
        for (share, f) in [
            (mix::LIMIT, Self::limit as fn(&mut Self) -> Command),
            (mix::CANCEL, Self::cancel),
            (mix::AMEND, Self::amend),
            (mix::CROSS, Self::cross),
            (mix::STOP, Self::stop),
        ] {
            if r < share {
                return f(self);
            }
            r -= share;
        }
        if r < mix::CANCEL_ALL {
            let account = self.zipf.sample(&mut self.rng);
            let market = if self.rng.below(2) == 0 {
                Some(self.rng.below(self.markets.len() as u64) as usize)
            } else {
                None
            };
            return self.cancel_all(account, market);
        }
        self.leverage()
    }
}

impl Iterator for Workload {
    type Item = Sequenced;

    fn next(&mut self) -> Option<Sequenced> {
        let i = self.emitted;
        if i >= self.total_len() {
            return None;
        }
        let deposits = self.config.deposits_len();
        let command = if i < deposits {
            self.deposit(i)
        } else if i < self.setup_len {
            self.seed_position(i - deposits)
        } else {
            self.mix_command(i - self.setup_len)
        };
        Some(self.stamp(command))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.total_len() - self.emitted) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Workload {}

/// A whole workload, pre-generated: the engine configuration, the setup deposits and the
/// mix (sequence numbers continue from the setup's).
pub struct Generated {
    pub engine: EngineConfig,
    pub setup: Vec<Sequenced>,
    pub commands: Vec<Sequenced>,
}

/// Generate the whole stream into memory (allocation happens here, before any timing).
pub fn generate(config: &WorkloadConfig) -> Generated {
    let mut w = Workload::new(config);
    let setup: Vec<Sequenced> = w.by_ref().take(config.setup_len() as usize).collect();
    let mut commands = Vec::with_capacity(config.commands as usize);
    commands.extend(w);
    // The setup's seeded orders never outlast their pair's IOC; the mix's limit and stop
    // orders may.
    let mut lasting = vec![0u64; config.markets as usize];
    for c in &commands {
        if let Command::Place(o) = c.command {
            let immediate = o.ord_type == OrdType::Market
                || matches!(
                    o.time_in_force,
                    TimeInForce::ImmediateOrCancel | TimeInForce::FillOrKill
                );
            if o.ord_type.is_conditional() || !immediate {
                lasting[o.market.0 as usize] += 1;
            }
        }
    }
    Generated { engine: config.engine_config(&lasting), setup, commands }
}

/// Apply `commands` to the engine, closing a group every `group_size` commands and after
/// the last. Returns false if an audit failed (the engine halted).
pub fn apply_grouped<S: EventSink>(
    engine: &mut amdahl_engine::Engine,
    commands: &[Sequenced],
    group_size: usize,
    sink: &mut S,
) -> bool {
    // As the sequencer does: number every command as it enters, and feed the liquidations a
    // group found back as the first commands of the next group.
    let mut ok = true;
    let mut seq = commands.first().map_or(1, |c| c.seq.0);
    let mut liquidations = Vec::new();
    let mut numbered = Vec::with_capacity(group_size.max(1));
    for group in commands.chunks(group_size.max(1)) {
        let time = group[0].time;
        let fed_back = liquidations.drain(..).map(|command| Sequenced {
            seq: amdahl_types::Seq(0),
            time,
            command,
        });
        numbered.clear();
        for cmd in fed_back.chain(group.iter().copied()) {
            numbered.push(Sequenced { seq: amdahl_types::Seq(seq), ..cmd });
            seq += 1;
        }
        ok &= engine.apply_group(&numbered, sink);
        engine.take_liquidations(&mut liquidations);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use amdahl_engine::{Engine, HashSink};
    use amdahl_types::{Event, RejectReason};

    fn small() -> WorkloadConfig {
        WorkloadConfig {
            seed: 42,
            markets: 4,
            accounts: 500,
            commands: 50_000,
            mark_every: 100,
            mark_step_ticks: MARK_STEP_TICKS,
            positions: 0,
            group_size: 64,
            audit_cycle: 64,
        }
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a = generate(&small());
        let b = generate(&small());
        assert_eq!(a.setup, b.setup);
        assert_eq!(a.commands, b.commands);
        let c = generate(&WorkloadConfig { seed: 43, ..small() });
        assert_ne!(a.commands, c.commands);
    }

    #[test]
    fn sequence_and_clock() {
        let g = generate(&small());
        assert_eq!(g.setup.len(), 1000, "two currencies × 500 accounts");
        assert_eq!(g.commands.len(), 50_000);
        for (i, c) in g.setup.iter().chain(&g.commands).enumerate() {
            assert_eq!(c.seq, Seq(i as u64 + 1));
            assert_eq!(c.time.0, START_TIME.0 + (i as i64 + 1) * NANOS_PER_COMMAND);
        }
        let marks = g.commands.iter().filter(|c| matches!(c.command, Command::Mark { .. }));
        assert_eq!(marks.count(), 500);
    }

    /// The engine accepts every place (so the predicted ids hold), the audit never fails,
    /// and cancels name the right owner.
    #[test]
    fn engine_accepts_every_place_and_predictions_hold() {
        let cfg = small();
        let g = generate(&cfg);
        let mut engine = Engine::new(&g.engine);
        let mut events = Vec::with_capacity(1 << 20);
        assert!(apply_grouped(&mut engine, &g.setup, 64, &mut events));
        assert!(apply_grouped(&mut engine, &g.commands, 64, &mut events));
        let mut rejects = [0u32; 64];
        let mut fills = 0;
        for e in &events {
            match *e {
                Event::Rejected { reason, .. } => rejects[reason as usize] += 1,
                Event::OrderAccepted { order, client_tag, .. } => assert_eq!(order.0, client_tag),
                Event::Fill { .. } => fills += 1,
                _ => {}
            }
        }
        assert!(!engine.is_halted());
        assert!(fills > 1000, "{fills} fills");
        for reason in [
            RejectReason::NotYourOrder,
            RejectReason::UnknownOrder,
            RejectReason::InsufficientAvailableBalance,
            RejectReason::TooManyOpenOrders,
            RejectReason::TooManyStopOrders,
            RejectReason::PriceOutsideBand,
            RejectReason::CapacityExhausted,
            RejectReason::InvalidLeverage,
        ] {
            assert_eq!(rejects[reason as usize], 0, "{reason:?}");
        }
        assert!(engine.audit_full().is_ok());
        let mut hash = HashSink::default();
        let mut again = Engine::new(&g.engine);
        apply_grouped(&mut again, &g.setup, 64, &mut hash);
        apply_grouped(&mut again, &g.commands, 64, &mut hash);
        assert_eq!(again.state_hash(), engine.state_hash());
    }

    #[test]
    fn seeded_positions_are_open_after_setup() {
        // 3 markets × 1001 accounts: 500 pairs (the odd last account holds none), so at
        // most 3000 seeded positions; 2400 = 1200 seeds, 400 per market, and all 3000.
        for positions in [2400, 3000] {
            let config = WorkloadConfig { positions, commands: 0, ..small() };
            let config = WorkloadConfig { accounts: 1001, markets: 3, ..config };
            let g = generate(&config);
            assert_eq!(g.setup.len() as u64, config.setup_len());
            let mut engine = Engine::new(&g.engine);
            let mut events: Vec<Event> = Vec::new();
            assert!(apply_grouped(&mut engine, &g.setup, 64, &mut events));
            let rejected = events.iter().filter(|e| matches!(e, Event::Rejected { .. })).count();
            assert_eq!(rejected, 0, "every seeding order is accepted");
            // Every seed opened its own (account, market): one order size each, no more.
            let mut open = 0;
            for a in 0..1001 {
                for m in 0..3u16 {
                    let q = engine.position(AccountId(a), MarketId(m)).qty;
                    let size = 10 * Instrument::xbtusd().lot.0;
                    let size = if m % 2 == 0 { size } else { 100 * Instrument::xbtusdt().lot.0 };
                    assert!(q == 0 || q.abs() == size, "account {a} market {m}: {q}");
                    open += (q != 0) as u64;
                }
            }
            assert_eq!(open, positions);
            // Every account made its deposits, the odd last one included.
            for a in 0..1001 {
                for c in [Currency::XBt, Currency::USDt] {
                    assert!(engine.ledger().wallet(AccountId(a), c) > 0, "account {a}: {c:?}");
                }
            }
            // Not in account order: the first seeds are scattered over the accounts.
            let first: Vec<u32> = g.setup[config.deposits_len() as usize..][..8]
                .iter()
                .filter_map(|c| c.command.account())
                .map(|a| a.0)
                .collect();
            assert!(!first.is_sorted(), "seeds in account order: {first:?}");
        }
        // Too many for the paired accounts is refused.
        let config = WorkloadConfig { accounts: 1001, markets: 3, commands: 0, ..small() };
        assert!(WorkloadConfig { positions: 3002, ..config }.validate().is_err());
    }
}
