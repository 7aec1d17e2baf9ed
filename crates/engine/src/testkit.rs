//! A small driver for tests, examples and tools: stamps commands with sequence numbers and
//! a clock, applies them, cuts groups, and collects the events. Not used by the engine.

use amdahl_types::{
    AccountId, Command, Currency, Event, ExecInst, MarketId, NewOrder, OrdType, Price, Qty, Seq,
    Sequenced, Side, TimeInForce, Timestamp,
};

use crate::{Engine, EngineConfig};

pub struct Harness {
    pub engine: Engine,
    pub seq: u64,
    /// The sequencer clock, advanced by one millisecond per command.
    pub time: Timestamp,
    pub events: Vec<Event>,
}

impl Harness {
    pub fn new(config: &EngineConfig) -> Harness {
        Harness {
            engine: Engine::new(config),
            seq: 0,
            // 2026-01-01T00:00:00Z
            time: Timestamp(1_767_225_600_000_000_000),
            events: Vec::new(),
        }
    }

    /// Apply one command as a group of its own, then — as the sequencer does — feed the
    /// liquidations that group found back as the following groups. Returns all their
    /// events (the audit ran after each group).
    pub fn run(&mut self, command: Command) -> Vec<Event> {
        let mut out = Vec::new();
        let mut queue = vec![command];
        while let Some(command) = queue.pop() {
            self.seq += 1;
            self.time = Timestamp(self.time.0 + 1_000_000);
            let cmd = Sequenced { seq: Seq(self.seq), time: self.time, command };
            self.engine.apply(&cmd, &mut out);
            self.engine.end_group(cmd.seq, &mut out);
            let mut next = Vec::new();
            self.engine.take_liquidations(&mut next);
            // `queue` pops from the back: keep the engine's order.
            queue.extend(next.into_iter().rev());
        }
        self.events.extend_from_slice(&out);
        out
    }

    /// Apply `commands` as one group (stage R decides its new orders against the state
    /// before it), then feed the liquidations it found back as `run` does. Returns all
    /// their events.
    pub fn run_group(&mut self, commands: &[Command]) -> Vec<Event> {
        let group: Vec<Sequenced> = commands
            .iter()
            .map(|&command| {
                self.seq += 1;
                self.time = Timestamp(self.time.0 + 1_000_000);
                Sequenced { seq: Seq(self.seq), time: self.time, command }
            })
            .collect();
        let mut out = Vec::new();
        self.engine.apply_group(&group, &mut out);
        self.events.extend_from_slice(&out);
        let mut next = Vec::new();
        self.engine.take_liquidations(&mut next);
        for command in next {
            out.extend(self.run(command));
        }
        out
    }

    pub fn deposit(&mut self, account: u32, currency: Currency, amount: i64) -> Vec<Event> {
        self.run(Command::Deposit { account: AccountId(account), currency, amount })
    }

    pub fn mark(&mut self, market: u16, price: i64) -> Vec<Event> {
        self.run(Command::Mark { market: MarketId(market), price: Price(price) })
    }
}

/// A plain GoodTillCancel limit order; adjust fields with struct update syntax.
pub fn limit(account: u32, market: u16, side: Side, qty: i64, price: i64) -> NewOrder {
    NewOrder {
        account: AccountId(account),
        market: MarketId(market),
        side,
        ord_type: OrdType::Limit,
        time_in_force: TimeInForce::GoodTillCancel,
        exec_inst: ExecInst::NONE,
        qty: Qty(qty),
        price: Some(Price(price)),
        stop_px: None,
        display_qty: None,
        client_tag: 0,
    }
}

/// A Market order (immediate, protected at the band's edge).
pub fn market(account: u32, market: u16, side: Side, qty: i64) -> NewOrder {
    NewOrder {
        ord_type: OrdType::Market,
        time_in_force: TimeInForce::ImmediateOrCancel,
        price: None,
        ..limit(account, market, side, qty, 1)
    }
}
