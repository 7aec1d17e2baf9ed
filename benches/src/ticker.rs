//! The remargin bench's engine: N open positions in one inverse market (XBTUSD), ready
//! for mark ticks (see `benches/remargin.rs`). Here, not in the bench, so that the test
//! suite builds and ticks it: a bench binary only runs when someone benchmarks, and its
//! setup drives the engine's API directly.

use std::hint::black_box;
use std::time::{Duration, Instant};

use amdahl_engine::testkit::limit;
use amdahl_engine::{Engine, EngineConfig, Lifecycle, MarketConfig};
use amdahl_risk::Instrument;
use amdahl_types::{
    AccountId, Command, Currency, Event, Leverage, MarketId, Price, Seq, Sequenced, Side, Timestamp,
};

const MARKET: MarketId = MarketId(0);
/// XBTUSD's opening mark: 10000.0 USD in ticks of 0.5.
const MARK: i64 = 20_000;
/// 2026-01-01T00:00:00Z: every command is stamped within one UTC day.
const TIME: Timestamp = Timestamp(1_767_225_600_000_000_000);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Margin {
    Isolated,
    /// Cross, the pairs trading in account order (the packed rows start in it).
    Cross,
    /// Cross, the pairs trading in a scattered order, as positions open in real flow.
    CrossScattered,
    /// Isolated, but one pair in eight cross: a market as traders hold it, mixed.
    Mixed,
}

impl Margin {
    pub const ALL: [Margin; 4] =
        [Margin::Isolated, Margin::Cross, Margin::CrossScattered, Margin::Mixed];

    pub fn name(self) -> &'static str {
        match self {
            Margin::Isolated => "isolated",
            Margin::Cross => "cross",
            Margin::CrossScattered => "cross_scattered",
            Margin::Mixed => "mixed",
        }
    }

    pub fn named(name: &str) -> Option<Margin> {
        Margin::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// One engine with `positions` open positions in market 0, ready to tick.
pub struct Ticker {
    engine: Engine,
    sink: Vec<Event>,
    /// Setup commands waiting for their group.
    staged: Vec<Sequenced>,
    seq: u64,
    up: bool,
    pub positions: usize,
}

impl Ticker {
    /// `accounts` ≥ `positions` (even): the first `positions` accounts trade, the rest idle.
    pub fn new(positions: usize, accounts: usize, margin: Margin) -> Ticker {
        assert!(positions.is_multiple_of(2) && accounts >= positions);
        let config = EngineConfig {
            accounts: accounts as u32,
            markets: vec![MarketConfig {
                instrument: Instrument::xbtusd(),
                mark: Price(MARK),
                max_orders: 1 << 10,
                lifecycle: Lifecycle::default(),
            }],
            max_open_orders: 200,
            max_stop_orders: 10,
            audit_cycle: 0,
            insurance_fund: [0; Currency::COUNT],
        };
        let mut t = Ticker {
            engine: Engine::new(&config),
            sink: Vec::with_capacity(1 << 10),
            staged: Vec::with_capacity(4096),
            seq: 0,
            up: false,
            positions,
        };
        // Batches of 1024 pairs, in two groups each: the deposits (and leverage), then the
        // orders, which stage R checks against the state the deposits' group left.
        let mut order: Vec<u32> = (0..positions as u32 / 2).collect();
        if margin == Margin::CrossScattered {
            let mut rng = crate::SplitMix64(7);
            for k in (1..order.len()).rev() {
                order.swap(k, (rng.next_u64() % (k as u64 + 1)) as usize);
            }
        }
        for batch in order.chunks(1024) {
            for &pair in batch {
                for account in [AccountId(2 * pair), AccountId(2 * pair + 1)] {
                    t.stage(Command::Deposit {
                        account,
                        currency: Currency::XBt,
                        amount: 10_000_000,
                    });
                    if Self::isolated(margin, pair) {
                        let leverage = Leverage(1000);
                        t.stage(Command::SetLeverage { account, market: MARKET, leverage });
                    }
                }
            }
            t.setup_group();
            for &pair in batch {
                let (seller, buyer) = (2 * pair, 2 * pair + 1);
                let price = MARK - 10 + (pair % 21) as i64;
                t.stage(Command::Place(limit(seller, 0, Side::Sell, 100, price)));
                t.stage(Command::Place(limit(buyer, 0, Side::Buy, 100, price)));
            }
            t.setup_group();
        }
        t.engine.begin_group(&[]);
        for a in 0..accounts as u32 {
            let pos = t.engine.position(AccountId(a), MARKET);
            let want = if (a as usize) >= positions {
                0
            } else if a % 2 == 0 {
                -100
            } else {
                100
            };
            assert_eq!(pos.qty, want, "account {a}: setup must leave one position each");
            let cross = pos.leverage == Leverage::CROSS;
            let isolated = Self::isolated(margin, a / 2);
            assert!(want == 0 || cross != isolated, "account {a}: leverage");
        }
        assert_eq!(t.engine.open_orders(), 0, "setup must leave the book empty");
        // One tick each way: only `MarkChanged`, nobody liquidated.
        for _ in 0..2 {
            t.tick();
            assert_eq!(t.sink.len(), 1, "a tick must emit only MarkChanged: {:?}", t.sink);
            assert!(matches!(t.sink[0], Event::MarkChanged { .. }));
        }
        t.check();
        t
    }

    fn next(&mut self, command: Command) -> Sequenced {
        self.seq += 1;
        Sequenced { seq: Seq(self.seq), time: TIME, command }
    }

    /// Whether account pair `pair` holds isolated (10x) positions.
    fn isolated(margin: Margin, pair: u32) -> bool {
        match margin {
            Margin::Isolated => true,
            Margin::Cross | Margin::CrossScattered => false,
            Margin::Mixed => !pair.is_multiple_of(8),
        }
    }

    fn stage(&mut self, command: Command) {
        let cmd = self.next(command);
        self.staged.push(cmd);
    }

    /// Apply the staged commands as one group.
    fn setup_group(&mut self) {
        self.sink.clear();
        assert!(self.engine.apply_group(&self.staged, &mut self.sink), "setup halted");
        let refused = self.sink.iter().find(|e| matches!(e, Event::Rejected { .. }));
        assert!(refused.is_none(), "setup refused: {refused:?}");
        self.staged.clear();
    }

    /// End the open group of ticks (its audit must pass) and open the next: ticks are
    /// timed inside one open group, without the group's end.
    fn end_group(&mut self) {
        self.sink.clear();
        assert!(self.engine.end_group(Seq(self.seq), &mut self.sink), "audit failed");
        self.engine.begin_group(&[]);
    }

    /// The timed operation: one mark tick, alternating between two prices.
    #[inline]
    fn tick(&mut self) {
        self.up = !self.up;
        let price = Price(if self.up { MARK + 1 } else { MARK });
        let cmd = self.next(Command::Mark { market: MARKET, price });
        self.sink.clear();
        self.engine.apply(black_box(&cmd), &mut self.sink);
    }

    pub fn ticks(&mut self, n: usize) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            self.tick();
        }
        start.elapsed()
    }

    /// Nothing liquidated, the ticks' recounts held (the group's audit passes), and a full
    /// audit holds.
    pub fn check(&mut self) {
        let mut queued = Vec::new();
        self.engine.take_liquidations(&mut queued);
        assert!(queued.is_empty(), "a small mark move liquidated: {queued:?}");
        self.end_group();
        assert!(!self.engine.is_halted());
        // Every cache against the positions, the packed rows included (the groups here
        // audit only what their commands touched, and ticks touch no position).
        assert_eq!(self.engine.audit_full(), Ok(()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both variants set up (every account one position, the book empty, nobody
    /// liquidated: `new` asserts it) and tick, and the ticks' recounts hold.
    #[test]
    fn the_remargin_bench_sets_up_and_ticks() {
        for margin in Margin::ALL {
            // Enough scattered rows that the first tick puts them in account order.
            let n = if margin == Margin::CrossScattered { 10_000 } else { 3_000 };
            let mut t = Ticker::new(n, n + 1_000, margin);
            t.ticks(5);
            t.check();
            t.ticks(2);
            t.check();
        }
    }
}
