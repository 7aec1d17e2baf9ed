use std::ops::Range;
use std::sync::Arc;

use amdahl_book::{Book, BookConfig};
use amdahl_ledger::{Entry, Ledger};
use amdahl_risk::{Instrument, Position};
use amdahl_types::{
    AccountId, CancelReason, Command, Currency, Event, Leverage, MarketId, Money, NewOrder,
    OrdType, OrderId, Price, Qty, Rate, RejectReason, Seq, Sequenced, Side, TimeInForce, Timestamp,
    TriggerRef,
};

use crate::audit::HaltEvidence;
use crate::config::EngineConfig;
use crate::desk::{Desk, Filled, Lane, MatchJob, Scratch, Shards, Tagged};
use crate::margin::{AccountMarket, committed};
use crate::orders::{NIL, OrderRecord, Orders, Working};
use crate::remargin::{AccountShard, MarginCache};
use crate::sink::EventSink;
use crate::triggers::TriggerHeap;
use amdahl_disjoint::Rows;
use amdahl_disjoint::Work;

/// The ledger for writing. Shard threads read it only during a tick's fan-out, and the
/// engine waits for every shard before it goes on, so outside a fan-out this is the only
/// reference: the check is one atomic load, never a lock.
#[inline]
pub(crate) fn edit(ledger: &mut Arc<Ledger>) -> &mut Ledger {
    Arc::get_mut(ledger).expect("no shard thread holds the ledger outside a tick")
}

/// Which way the trigger price must move to fire a conditional order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Direction {
    /// Fires when the reference price is at or above `stop_px` (buy Stop, sell IfTouched).
    Rising,
    /// Fires when the reference price is at or below `stop_px` (sell Stop, buy IfTouched).
    Falling,
}

pub(crate) fn direction(side: Side, placed: OrdType) -> Direction {
    let stop = matches!(placed, OrdType::Stop | OrdType::StopLimit);
    match (side, stop) {
        (Side::Buy, true) | (Side::Sell, false) => Direction::Rising,
        (Side::Sell, true) | (Side::Buy, false) => Direction::Falling,
    }
}

/// Untriggered orders of one market, per reference price and direction, in firing order.
pub(crate) struct Triggers {
    pub rising: [TriggerHeap; 3],
    pub falling: [TriggerHeap; 3],
    /// Per slot of the market's slice of the order table (from `base`): its place in its
    /// heap (`NIL` if not untriggered). The heaps hold these local slot numbers.
    at: Vec<u32>,
    base: u32,
}

impl Triggers {
    fn new(slots: Range<u32>) -> Triggers {
        let capacity = slots.len().min(1 << 16);
        Triggers {
            rising: std::array::from_fn(|_| TriggerHeap::new(true, capacity)),
            falling: std::array::from_fn(|_| TriggerHeap::new(false, capacity)),
            at: vec![NIL; slots.len()],
            base: slots.start,
        }
    }

    fn heap(&mut self, t: usize, dir: Direction) -> (&mut TriggerHeap, &mut [u32]) {
        let heap = match dir {
            Direction::Rising => &mut self.rising[t],
            Direction::Falling => &mut self.falling[t],
        };
        (heap, &mut self.at)
    }

    pub(crate) fn insert(&mut self, t: usize, dir: Direction, stop: i64, id: u64, slot: u32) {
        let local = slot - self.base;
        let (heap, at) = self.heap(t, dir);
        heap.insert(stop, id, local, at);
    }

    pub(crate) fn remove(&mut self, t: usize, dir: Direction, slot: u32) -> bool {
        let local = slot - self.base;
        let (heap, at) = self.heap(t, dir);
        heap.remove(local, at)
    }
}

pub(crate) struct Market {
    pub life: crate::lifecycle::LifeState,
    pub inst: Instrument,
    pub mark: Price,
    /// Inverse contracts: the value of one contract at the mark, computed once per mark
    /// change so re-valuing a position is a multiply (0 for linear and quanto).
    pub mark_unit: i64,
    /// Linear and quanto contracts: the value rule at the mark with its division
    /// strength-reduced, also made once per mark change (`None` for inverse).
    pub mark_linear: Option<crate::remargin::LinearValue>,
    pub index: Option<Price>,
    pub last: Option<Price>,
    pub triggers: Triggers,
    /// The number the market's next accepted order takes (`OrderId::new`).
    pub next_order: u64,
}

/// The value of one inverse contract at `price`, or 0 for linear and quanto contracts.
pub(crate) fn unit_at(inst: &Instrument, price: Price) -> i64 {
    match inst.kind {
        amdahl_risk::ContractKind::Inverse => inst.value(Qty(1), price),
        _ => 0,
    }
}

impl Market {
    /// The position's value at the mark, without a division in the common case (inverse:
    /// a multiply by the unit value; linear: the strength-reduced rule).
    #[inline]
    pub fn mark_value(&self, qty: i64) -> Money {
        if self.mark_unit != 0 {
            qty * self.mark_unit
        } else if let Some(linear) = &self.mark_linear {
            linear.value(qty, &self.inst)
        } else {
            self.inst.value(Qty(qty), self.mark)
        }
    }

    /// The worst price a Market order may trade at: the edge of the band around the mark
    /// (BitMEX stops a Market order before it walks the book without limit).
    pub fn protection_price(&self, side: Side) -> Price {
        let mark = self.mark.0 as i128;
        let band = self.inst.price_band.0 as i128;
        let scale = Rate::SCALE as i128;
        let p = match side {
            Side::Buy => (mark * (scale + band)) / scale,
            Side::Sell => (mark * (scale - band) + scale - 1) / scale,
        };
        Price((p as i64).clamp(1, self.inst.max_price.0))
    }

    /// Has the market given out order number `n` (it may since have stopped working)?
    pub fn issued(&self, n: u64) -> bool {
        n != 0 && n < self.next_order
    }

    pub(crate) fn reference(&self, r: TriggerRef) -> Option<Price> {
        match r {
            TriggerRef::MarkPrice => Some(self.mark),
            TriggerRef::LastPrice => self.last,
            TriggerRef::IndexPrice => self.index,
        }
    }
}

/// The serial engine. See the crate docs for its invariants.
pub struct Engine {
    pub(crate) markets: Vec<Market>,
    pub(crate) books: Vec<Book>,
    pub(crate) orders: Orders,
    /// Indexed by `account × markets + market`.
    pub(crate) positions: Vec<Position>,
    pub(crate) accounts: Vec<AccountMarket>,
    /// Shared (read-only) with the remargin shard threads during a tick's fan-out, and only
    /// then; every write goes through `edit`.
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) day: Option<i64>,
    pub(crate) halt: Option<HaltEvidence>,
    pub(crate) groups: u64,
    pub(crate) full_audit_due: bool,
    pub(crate) max_open_orders: u32,
    pub(crate) max_stop_orders: u32,
    /// Commands per cycle of the rolling recomputation (`audit_slice`; 0: off), the
    /// commands applied so far in this cycle, and where it goes on: the next account, and
    /// the next order slot.
    pub(crate) audit_cycle: u64,
    pub(crate) audited_commands: u64,
    pub(crate) audit_cursor: u32,
    pub(crate) order_cursor: u32,
    /// What matching leaves for the segment's end: the fills' money, the accounts fills
    /// changed, the orders that fired (`desk.rs`).
    matching: Scratch,
    /// Whether fills now settle when the segment ends (matching a segment's ordinary
    /// commands) rather than after each taker (a command that ends its segment, fired
    /// orders): see `settle_fills`.
    settle_later: bool,
    /// Stage R's `Basis` for the current segment, by (account × markets + market): where it
    /// sits in `basis`, or `NIL`.
    basis_at: Vec<u32>,
    basis: Vec<crate::risk::Basis>,
    /// Per (account, market): what the market's unsettled fills will move the account's
    /// wallet by (realised PnL less nominal fees), for `closing_margin`.
    unsettled: Vec<Money>,
    /// The liquidation engine's account: one past the last user account. Its positions
    /// belong to the insurance fund; it pays no fees and no margin.
    pub(crate) liquidator: AccountId,
    /// The remargin stage's account shards (see `remargin.rs`): per market, the accounts
    /// with an open position (the pass walks only these), and the accounts' cross sums.
    pub(crate) shards: Vec<AccountShard>,
    /// Where a tick's shards are re-margined when the engine runs in a pipeline: dealt over
    /// the engine's thread and the helpers. `None`: all on this thread, in turn.
    ///
    /// In a `Mutex` only to make the engine `Sync` (stage R reads it from the helper
    /// threads through an `Arc`); it is reached through `Mutex::get_mut`, which needs
    /// `&mut self` and never locks.
    pub(crate) fan_out: std::sync::Mutex<Option<crate::pipeline::FanOut>>,
    /// Liquidations found by remargin, to be fed back as `Command::Liquidate` in the next
    /// group; a flag per (account, market) keeps each queued once.
    pub(crate) pending: Vec<(MarketId, AccountId)>,
    pub(crate) queued: Vec<bool>,
    /// Margin transferred into an isolated position beyond its initial margin.
    pub(crate) extra_margin: Vec<Money>,
    /// Per (account, market): the position's margins, refreshed whenever it changes.
    pub(crate) margin_cache: Vec<MarginCache>,
    /// Per market: the mark (and inverse unit value) the cross sums were last moved to.
    pub(crate) remargined_mark: Vec<(Price, i64)>,
    /// Per market: the bankruptcy price of the latest takeover (the price its liquidation
    /// order works at and auto-deleveraging closes at).
    pub(crate) bankruptcy: Vec<Option<Price>>,
    /// The sequencer's clock at the current command (not hashed: see `state_hash`).
    pub(crate) now: Timestamp,
    /// Reusable space for canonical (sorted) walks over accounts.
    pub(crate) scratch: Vec<u32>,
    /// Per market: Σ position cost, kept at every fill; a mark tick recounts it.
    pub(crate) market_cost: Vec<i128>,
    /// Per market: whether a mark tick has recounted its rows since the rolled audit's
    /// cycle began (the cycle's end then need not stream them again).
    pub(crate) recounted: Vec<bool>,
    /// A failed recount, halting the engine at the end of the group.
    pub(crate) recount_failure: Option<crate::audit::AuditError>,
    /// Stage R, one part per account shard (the same ranges as `shards`).
    pub(crate) risk: Vec<crate::risk::RiskShard>,
    /// R's decisions for the current segment's new orders, merged in sequence order.
    pub(crate) decisions: Vec<crate::risk::Decision>,
    /// How many of `decisions` M has taken.
    decided: usize,
    /// The open group's commands, which R decides one segment at a time (`risk.rs`), and
    /// where the current segment ends (the index after its last command).
    group: Vec<Sequenced>,
    segment_end: usize,
    /// The round of fired orders (`Scratch::fired`) being executed (`execute_fired`), and
    /// `fired_refusals` stage R's decisions for it.
    firing: Vec<OrderId>,
    pub(crate) fired_refusals: Vec<Option<RejectReason>>,
    /// Whether `begin_group` opened the current group, and the commands applied in it.
    group_begun: bool,
    group_applied: u64,
    /// The command being applied.
    applying: Seq,
    /// Runs of a segment's market commands go to a matcher per market (`apply_run`): every
    /// run in test mode (`match_markets_in_turn`), runs of `run_min` commands or more in a
    /// pipeline (0: none).
    in_turn: bool,
    run_min: usize,
    /// Applying a run's commands out of sequence order (`apply_run`).
    in_run: bool,
    /// Where the last run too short to fan out ended (`apply_at`), in the open group.
    short_run: usize,
    /// Per market, its matcher's lane of a run; the lane of each command of the current
    /// run (`markets` for none); the events of the run's commands that name no market;
    /// cursors of the merge; and the run's jobs' room, kept between runs (`recycle`).
    lanes: Vec<Lane>,
    run_lanes: Vec<u32>,
    run_events: Vec<(u32, Event)>,
    cursors: Vec<usize>,
    job_store: Vec<MatchJob<'static>>,
}

impl Engine {
    pub fn new(config: &EngineConfig) -> Engine {
        Engine::with_shards(config, 1)
    }

    /// An engine whose remargin state is split into `shards` account shards (ranges of
    /// consecutive accounts, see `remargin::shard_of`). The events and the state hash do
    /// not depend on `shards`; the pipeline re-margins the shards of a tick in parallel.
    pub fn with_shards(config: &EngineConfig, shards: u32) -> Engine {
        config.validate().expect("invalid engine config");
        assert!(shards >= 1, "at least one account shard");
        let n_markets = config.markets.len();
        // One row per user account plus the liquidation engine's.
        let rows = config.accounts as usize + 1;
        let mut ledger = Ledger::new(config.accounts);
        for c in Currency::ALL {
            let amount = config.insurance_fund[c.index()];
            if amount > 0 {
                ledger.fund_insurance(c, amount).expect("positive");
            }
        }
        let capacities: Vec<u32> = config.markets.iter().map(|m| m.max_orders).collect();
        let orders = Orders::new(&capacities);
        let makers = capacities.iter().copied().max().unwrap_or(0) as usize;
        Engine {
            markets: config
                .markets
                .iter()
                .enumerate()
                .map(|(k, m)| Market {
                    life: crate::lifecycle::LifeState::new(&m.lifecycle),
                    inst: m.instrument.clone(),
                    mark: m.mark,
                    mark_unit: unit_at(&m.instrument, m.mark),
                    mark_linear: crate::remargin::LinearValue::new(&m.instrument, m.mark),
                    index: None,
                    last: None,
                    // Room for the stops a busy market holds; past it the heap grows.
                    triggers: Triggers::new(orders.slots_of(MarketId(k as u16))),
                    next_order: 1,
                })
                .collect(),
            books: config
                .markets
                .iter()
                .map(|m| {
                    Book::new(BookConfig {
                        max_orders: m.max_orders,
                        max_price: m.instrument.max_price,
                    })
                })
                .collect(),
            orders,
            positions: vec![Position::default(); rows * n_markets],
            accounts: vec![AccountMarket::default(); rows * n_markets],
            ledger: Arc::new(ledger),
            day: None,
            halt: None,
            groups: 0,
            full_audit_due: false,
            max_open_orders: config.max_open_orders,
            max_stop_orders: config.max_stop_orders,
            audit_cycle: config.audit_cycle,
            audited_commands: 0,
            audit_cursor: 0,
            order_cursor: 0,
            // As many fills as the largest book has makers.
            matching: Scratch::new(rows, makers),
            settle_later: false,
            basis_at: vec![NIL; rows * n_markets],
            basis: Vec::with_capacity(1 << 12),
            unsettled: vec![0; rows * n_markets],
            liquidator: AccountId(config.accounts),
            shards: (0..shards).map(|s| AccountShard::new(n_markets, rows, shards, s)).collect(),
            fan_out: std::sync::Mutex::new(None),
            pending: Vec::with_capacity(rows),
            queued: vec![false; rows * n_markets],
            extra_margin: vec![0; rows * n_markets],
            margin_cache: vec![MarginCache::default(); rows * n_markets],
            remargined_mark: config
                .markets
                .iter()
                .map(|m| (m.mark, unit_at(&m.instrument, m.mark)))
                .collect(),
            bankruptcy: vec![None; n_markets],
            now: Timestamp(0),
            scratch: Vec::with_capacity(rows),
            market_cost: vec![0; n_markets],
            recounted: vec![false; n_markets],
            recount_failure: None,
            risk: (0..shards)
                .map(|s| {
                    let local = rows.div_ceil(shards as usize) as u32;
                    let first = (s * local).min(rows as u32);
                    crate::risk::RiskShard::new(first, (first + local).min(rows as u32), n_markets)
                })
                .collect(),
            decisions: Vec::with_capacity(1 << 12),
            decided: 0,
            group: Vec::with_capacity(1 << 12),
            segment_end: 0,
            firing: Vec::with_capacity(1 << 10),
            fired_refusals: Vec::with_capacity(1 << 10),
            group_begun: false,
            group_applied: 0,
            applying: Seq(0),
            in_turn: false,
            run_min: 0,
            in_run: false,
            short_run: 0,
            lanes: Vec::new(),
            run_lanes: Vec::with_capacity(1 << 12),
            run_events: Vec::with_capacity(1 << 12),
            cursors: Vec::new(),
            job_store: Vec::new(),
        }
    }

    // ---- read access (for the gateway's mirror, tests and audits) ----

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
    pub fn book(&self, market: MarketId) -> &Book {
        &self.books[market.0 as usize]
    }
    pub fn instrument(&self, market: MarketId) -> &Instrument {
        &self.markets[market.0 as usize].inst
    }
    pub fn mark(&self, market: MarketId) -> Price {
        self.markets[market.0 as usize].mark
    }
    pub fn last_price(&self, market: MarketId) -> Option<Price> {
        self.markets[market.0 as usize].last
    }
    pub fn markets(&self) -> usize {
        self.markets.len()
    }
    pub fn accounts(&self) -> u32 {
        self.ledger.accounts()
    }
    pub fn position(&self, account: AccountId, market: MarketId) -> Position {
        self.positions[self.pm(account, market)]
    }
    pub fn order(&self, id: OrderId) -> Option<&OrderRecord> {
        self.orders.slot_of(id).map(|s| self.orders.get(s))
    }
    pub fn open_orders(&self) -> usize {
        self.orders.len()
    }
    /// Open positions in `market`: the rows a mark tick of it re-margins.
    pub fn open_positions(&self, market: MarketId) -> usize {
        self.shards.iter().map(|s| s.open[market.0 as usize].len()).sum()
    }
    /// Fills matched whose money has not moved yet: it moves when their segment ends
    /// (`settle_fills`), so there are none between groups.
    pub fn unsettled_fills(&self) -> usize {
        self.matching.fill_money.len()
    }

    pub fn is_halted(&self) -> bool {
        self.halt.is_some()
    }
    pub fn halt_evidence(&self) -> Option<&HaltEvidence> {
        self.halt.as_ref()
    }

    /// The balance an account can still commit in `currency`: wallet − position margins −
    /// order holds − cross-margin unrealised losses.
    pub fn available(&self, account: AccountId, currency: Currency) -> Money {
        let mut avail = self.ledger.wallet(account, currency) as i128;
        for (m, market) in self.markets.iter().enumerate() {
            if market.inst.settle != currency {
                continue;
            }
            let i = account.0 as usize * self.markets.len() + m;
            let extra = self.extra_margin[i];
            let init = self.margin_cache[i].init;
            avail -= committed(
                &self.accounts[i],
                &self.positions[i],
                &market.inst,
                market.mark_value(self.positions[i].qty),
                init + extra,
            );
        }
        Money::try_from(avail).expect("available fits i64")
    }

    /// Break the books on purpose (see `Ledger::corrupt_for_test`): tests use it to show
    /// that the audit halts the engine.
    #[doc(hidden)]
    pub fn corrupt_for_test(&mut self, account: AccountId, currency: Currency, amount: Money) {
        edit(&mut self.ledger).corrupt_for_test(account, currency, amount);
    }

    /// Break a cache on purpose: the cached maintenance margin of one position, which only
    /// the full recomputation re-derives. Tests use it to show the rolling audit reaches it.
    #[doc(hidden)]
    pub fn corrupt_margin_cache_for_test(&mut self, account: AccountId, market: MarketId) {
        let i = self.pm(account, market);
        self.margin_cache[i].maint += 1;
    }

    /// Break the count of cross rows of one market (which picks the remargin pass): the
    /// next mark tick of the market must find it.
    #[doc(hidden)]
    pub fn corrupt_cross_rows_for_test(&mut self, market: MarketId, delta: i32) {
        let rows = &mut self.shards[0].open[market.0 as usize].cross_rows;
        *rows = rows.checked_add_signed(delta).expect("a count");
    }

    /// Skip a market's order numbers ahead, to where its last numbers are given out
    /// (`OrderId::MAX_NUMBER`), which no test could reach by placing orders.
    #[doc(hidden)]
    pub fn skip_order_numbers_for_test(&mut self, market: MarketId, next: u64) {
        self.markets[market.0 as usize].next_order = next;
    }

    /// The order-margin hold of an account in a market.
    pub fn order_hold(&self, account: AccountId, market: MarketId) -> Money {
        let i = self.pm(account, market);
        self.accounts[i].hold(&self.positions[i], &self.markets[market.0 as usize].inst)
    }

    /// After any change to a position (fill, takeover, leverage, margin transfer): refresh
    /// its cached margins and its packed copy in the market's remargin arrays.
    pub(crate) fn sync_position(&mut self, account: AccountId, market: MarketId) {
        let i = self.pm(account, market);
        let inst = &self.markets[market.0 as usize].inst;
        let pos = self.positions[i];
        if pos.qty == 0 {
            // A closed isolated position hands its transferred margin back.
            self.extra_margin[i] = 0;
        }
        self.margin_cache[i] = MarginCache::of(&pos, inst);
        let liquidator = account == self.liquidator;
        let beside = crate::remargin::iso_beside(&self.shards, account, inst.settle);
        let cache = &self.margin_cache[i];
        let floor = crate::remargin::floor(&pos, cache, self.extra_margin[i], liquidator, beside);
        crate::remargin::sync(&mut self.shards, market, account, &pos, floor);
        // If this change began or ended the account's last isolated position in the
        // currency, this re-marks its cross rows (this one among them).
        self.refresh_cross(account, inst.settle);
    }

    /// Recompute an account's cross sums in `currency` from its positions (see
    /// `cross_base`), at the marks the remargin passes last moved them to.
    pub(crate) fn refresh_cross(&mut self, account: AccountId, currency: Currency) {
        let (mut base, mut iso) = (0i128, 0u32);
        // The liquidation engine has no margin: it is worked out, never liquidated.
        let markets =
            if account == self.liquidator { &self.markets[..0] } else { &self.markets[..] };
        for (k, mk) in markets.iter().enumerate() {
            let j = account.0 as usize * self.markets.len() + k;
            let p = &self.positions[j];
            if mk.inst.settle != currency || p.qty == 0 {
                continue;
            }
            if p.leverage == Leverage::CROSS {
                let (mark, unit) = self.remargined_mark[k];
                let mv = if unit != 0 { p.qty * unit } else { mk.inst.value(Qty(p.qty), mark) };
                base += (mv - p.cost - self.margin_cache[j].maint) as i128;
            } else {
                iso += 1;
            }
        }
        let (s, c) = self.cross_slot(account, currency);
        let shard = &mut self.shards[s];
        shard.cross[c] = crate::remargin::cross_sum(base);
        let was = std::mem::replace(&mut shard.iso[c], iso);
        if (was != 0) != (iso != 0) {
            let floor = crate::remargin::cross_floor(iso != 0);
            for (k, mk) in self.markets.iter().enumerate() {
                if mk.inst.settle == currency {
                    shard.open[k].set_cross_floor(account, floor);
                }
            }
        }
    }

    /// The account's shard, and its (account, currency) row in the shard's cross sums.
    #[inline]
    pub(crate) fn cross_slot(&self, account: AccountId, currency: Currency) -> (usize, usize) {
        crate::remargin::cross_slot(&self.shards, account, currency)
    }

    #[inline]
    pub(crate) fn pm(&self, account: AccountId, market: MarketId) -> usize {
        account.0 as usize * self.markets.len() + market.0 as usize
    }

    // ---- the command loop ----

    /// Open a group: stage R decides the margin of every new order in its first segment,
    /// shard by shard, against the state the last group left (see `risk.rs`). Then
    /// `apply` each of `group`'s commands in order (R decides each later segment when M
    /// reaches it), and `end_group`. A group of one command may skip this: its order is
    /// then checked against current state, which is the same thing.
    pub fn begin_group(&mut self, group: &[Sequenced]) {
        if let Some(segment) = self.open_group(group) {
            self.risk_segment(segment);
        }
    }

    /// Mark a group open and keep its commands; returns its first segment, for stage R to
    /// decide (none when halted: then every command is refused anyway).
    pub(crate) fn open_group(&mut self, group: &[Sequenced]) -> Option<Range<usize>> {
        assert!(
            !self.group_begun && self.group_applied == 0,
            "begin_group: the previous group was not ended"
        );
        self.group_begun = true;
        self.short_run = 0;
        self.group.clear();
        self.group.extend_from_slice(group);
        self.segment_end = 0;
        self.next_segment()
    }

    /// The segment R must decide before M applies the group's next command: `Some` once
    /// M has applied all of the current one and commands remain.
    // On every command's path. LTO stopped inlining it (and `accept`) as `apply` grew;
    // inlined, the default bench runs 30 fewer instructions per command (callgrind).
    #[inline(always)]
    pub(crate) fn next_segment(&mut self) -> Option<Range<usize>> {
        let from = self.group_applied as usize;
        if !self.group_begun
            || self.halt.is_some()
            || from != self.segment_end
            || from == self.group.len()
        {
            return None;
        }
        self.segment_end = from + self.segment_len(&self.group[from..]);
        Some(from..self.segment_end)
    }

    /// Stage R of a segment of the open group, every shard on this thread.
    pub(crate) fn risk_segment(&mut self, segment: Range<usize>) {
        let mut risk = std::mem::take(&mut self.risk);
        let group = std::mem::take(&mut self.group);
        for shard in &mut risk {
            self.risk_pass(&group[segment.clone()], shard);
        }
        self.group = group;
        self.merge_decisions(&mut risk);
        self.risk = risk;
    }

    /// Stage R for a command applied outside a group R saw (a group of one command without
    /// `begin_group`, or a harness that applies more than it began): a segment of its own,
    /// decided against current state. M then has R's decision for every order and amend.
    fn decide_alone(&mut self, cmd: &Sequenced) {
        if !matches!(cmd.command, Command::Place(_) | Command::Amend(_)) {
            return;
        }
        let mut risk = std::mem::take(&mut self.risk);
        for shard in &mut risk {
            self.risk_pass(std::slice::from_ref(cmd), shard);
        }
        self.merge_decisions(&mut risk);
        self.risk = risk;
    }

    /// Whether the command just applied ends its segment (a command outside `begin_group`
    /// is a segment of its own).
    fn segment_ended(&self) -> bool {
        !self.group_begun || self.group_applied as usize >= self.segment_end
    }

    /// Take the shards' decisions into one list in sequence order, and clear the shards.
    pub(crate) fn merge_decisions(&mut self, risk: &mut [crate::risk::RiskShard]) {
        // The last segment's end cleared its own (R decides nothing once halted).
        debug_assert!(self.basis.is_empty(), "a Basis outlived its segment");
        for shard in risk.iter() {
            for b in &shard.basis {
                let i = self.pm(b.account, b.market);
                self.basis_at[i] = self.basis.len() as u32;
                self.basis.push(*b);
            }
        }
        self.decisions.clear();
        self.decided = 0;
        if let [one] = risk {
            // One shard's list is the merged list: trade buffers, copy nothing.
            std::mem::swap(&mut self.decisions, &mut one.decisions);
            one.clear();
            return;
        }
        for shard in risk.iter_mut() {
            self.decisions.extend_from_slice(&shard.decisions);
            shard.clear();
        }
        // Each shard's list is in sequence order already; this only interleaves them.
        self.decisions.sort_unstable_by_key(|d| d.seq);
    }

    /// Forget the segment's `Basis` (when the segment ends).
    fn clear_basis(&mut self) {
        for b in &self.basis {
            self.basis_at[b.account.0 as usize * self.markets.len() + b.market.0 as usize] = NIL;
        }
        self.basis.clear();
    }

    /// Stage R's decision for the new order of command `seq`, if R decided it. Commands
    /// are applied in sequence order, so the decisions are taken in order too (in a run,
    /// market by market, they are found by seq).
    fn take_decision(&mut self, seq: Seq) -> Option<crate::risk::Decision> {
        if self.in_run {
            return crate::desk::decision(&self.decisions, seq);
        }
        while let Some(&d) = self.decisions.get(self.decided) {
            if d.seq > seq {
                break;
            }
            self.decided += 1;
            if d.seq == seq {
                return Some(d);
            }
        }
        None
    }

    /// A whole group: `begin_group`, `apply` each command, `end_group`. Returns what
    /// `end_group` returns.
    pub fn apply_group<S: EventSink>(&mut self, group: &[Sequenced], sink: &mut S) -> bool {
        let Some(last) = group.last() else { return self.halt.is_none() };
        self.begin_group(group);
        let mut i = 0;
        while i < group.len() {
            i += self.apply_at(group, i, sink);
        }
        self.end_group(last.seq, sink)
    }

    /// Match each segment's market commands market by market rather than in sequence
    /// order, on this thread, whatever the run's length (`apply_group` and `apply_at`): the
    /// schedule of the matchers per market (`apply_run`), for the property tests to hold
    /// to sequence order. The events, the state and the state hash must be exactly those
    /// of sequence order: within a segment no market's matching may read what another's
    /// writes.
    #[doc(hidden)]
    pub fn match_markets_in_turn(&mut self, on: bool) {
        self.in_turn = on;
        if on {
            self.make_lanes();
        }
    }

    /// Runs of at least `commands` market commands (`apply_at`) are matched by a matcher
    /// per market, on the pipeline's threads when it has them (0: never).
    pub(crate) fn match_runs_of(&mut self, commands: usize) {
        self.run_min = commands;
        if commands != 0 {
            self.make_lanes();
        }
    }

    fn make_lanes(&mut self) {
        if self.lanes.is_empty() {
            let rows = self.liquidator.0 as usize + 1;
            let makers = (0..self.markets.len())
                .map(|m| self.orders.slots_of(MarketId(m as u16)).len())
                .max()
                .unwrap_or(0);
            self.lanes = (0..self.markets.len())
                .map(|_| Lane { scratch: Scratch::new(rows, makers), events: Vec::new() })
                .collect();
            self.job_store = Vec::with_capacity(self.markets.len());
            self.cursors = vec![0; self.markets.len() + 1];
        }
    }

    /// Apply `group[i]`, the group's next command; or, where it begins a run of a
    /// segment's market commands long enough (`match_runs_of`, `match_markets_in_turn`),
    /// the whole run, market by market (`apply_run`). Returns how many commands it applied.
    pub(crate) fn apply_at<S: EventSink>(
        &mut self,
        group: &[Sequenced],
        i: usize,
        sink: &mut S,
    ) -> usize {
        let min = if self.in_turn { 2 } else { self.run_min };
        // `group[i..short_run]` was scanned as part of a run too short: a later start in it
        // only makes the run shorter, so it is not scanned again.
        if min != 0 && i >= self.short_run {
            if let Some(segment) = self.next_segment() {
                self.risk_segment(segment);
            }
            let end = self.segment_end.min(group.len());
            // A run is never the segment's last command (which settles it).
            let mut j = i;
            while j + 1 < end && self.halt.is_none() && self.lane(&group[j]).is_some() {
                j += 1;
            }
            if j - i >= min {
                self.apply_run(&group[i..j], sink);
                return j - i;
            }
            self.short_run = j;
        }
        self.apply(&group[i], sink);
        1
    }

    /// Which matcher a command goes to in a run (the markets', then one for commands that
    /// touch no market), or `None`: it must wait for every market (a day's first command,
    /// which expires Day orders everywhere; a cancel-all across markets; a segment's end).
    fn lane(&self, cmd: &Sequenced) -> Option<usize> {
        if self.day != Some(cmd.time.day()) || self.ends_segment(&cmd.command) {
            return None;
        }
        let market = match cmd.command {
            Command::Place(o) => Some(o.market),
            Command::Amend(a) => Some(a.order.market()),
            Command::Cancel { order, .. } => Some(order.market()),
            Command::CancelAll { market: Some(m), .. } => Some(m),
            Command::Deposit { .. } => None,
            _ => return None,
        };
        Some(match market {
            Some(m) if self.known_market(m) => m.0 as usize,
            _ => self.markets.len(),
        })
    }

    /// A run of a segment's market commands (stage M of DESIGN.md §2, a matcher per
    /// market): each market's commands go to that market's desk, in sequence order, with
    /// their own scratch — on the pipeline's threads at once when the engine has them and
    /// the run is long enough, else here in turn. Then, here: the commands that name no
    /// market (deposits, refusals), and the merge — events in sequence order, the fills'
    /// money and the fired orders in the order the segment's end takes them, the packed
    /// position rows, the accounts fills changed.
    fn apply_run<S: EventSink>(&mut self, run: &[Sequenced], sink: &mut S) {
        let n = self.markets.len();
        self.run_lanes.clear();
        for cmd in run {
            let lane = self.lane(cmd).expect("a run holds lane commands");
            self.run_lanes.push(lane as u32);
        }
        // What `apply` does for each command before it reaches its market.
        for (cmd, &lane) in run.iter().zip(&self.run_lanes) {
            if lane as usize != n {
                debug_assert!(self.day == Some(cmd.time.day()) && self.halt.is_none());
                self.group_applied += 1;
                self.audited_commands += 1;
            }
        }
        let last = run.last().expect("a run is not empty");
        self.now = last.time;
        self.applying = last.seq;
        self.settle_later = true;
        self.match_lanes(run);
        self.settle_later = false;
        self.in_run = true;
        let mut other = std::mem::take(&mut self.run_events);
        for (k, cmd) in run.iter().enumerate() {
            if self.run_lanes[k] as usize == n {
                self.apply(cmd, &mut Tagged { at: k as u32, out: &mut other });
            }
        }
        self.in_run = false;
        self.applying = last.seq;
        self.now = last.time;
        // The merge, in sequence order: each lane's lists are in its commands' order.
        let Engine { lanes, cursors, run_lanes, matching, shards, .. } = self;
        cursors.fill(0);
        for (k, &l) in run_lanes.iter().enumerate() {
            let l = l as usize;
            let (events, c) = match lanes.get_mut(l) {
                Some(lane) => (&lane.events, &mut cursors[l]),
                None => (&other, &mut cursors[n]),
            };
            while let Some(&(at, e)) = events.get(*c)
                && at == k as u32
            {
                sink.emit(e);
                *c += 1;
            }
        }
        other.clear();
        self.run_events = other;
        cursors.fill(0);
        for (k, &l) in run_lanes.iter().enumerate() {
            let Some(lane) = lanes.get_mut(l as usize) else { continue };
            let seq = run[k].seq;
            let c = &mut cursors[l as usize];
            while let Some(f) = lane.scratch.fill_money.get(*c)
                && f.seq == seq
            {
                matching.fill_money.push(*f);
                *c += 1;
            }
        }
        for (m, lane) in lanes.iter_mut().enumerate() {
            let scratch = &mut lane.scratch;
            lane.events.clear();
            scratch.fill_money.clear();
            debug_assert!(scratch.touched.is_empty());
            for s in scratch.synced.drain(..) {
                crate::remargin::sync(shards, MarketId(m as u16), s.account, &s.pos, s.floor);
            }
            let filled = &mut scratch.filled;
            for &(account, currency) in &filled.refresh {
                matching.filled.note(account, currency);
                let at = Filled::at(account, currency);
                filled.refreshing[at] = false;
                filled.checking[at] = false;
            }
            filled.refresh.clear();
            filled.check.clear();
        }
        self.merge_fired(run);
    }

    /// The run's fired orders, from each lane's list, in the order the segment's end
    /// executes them: by the seq they fired in, and within one command in firing order.
    fn merge_fired(&mut self, run: &[Sequenced]) {
        let Engine { lanes, cursors, run_lanes, matching, .. } = self;
        cursors.fill(0);
        for (k, &l) in run_lanes.iter().enumerate() {
            let Some(lane) = lanes.get_mut(l as usize) else { continue };
            let seq = run[k].seq;
            let c = &mut cursors[l as usize];
            while let Some(&at) = lane.scratch.fired_at.get(*c)
                && at == seq
            {
                matching.fired.push(lane.scratch.fired[*c]);
                matching.fired_at.push(at);
                *c += 1;
            }
        }
        for lane in lanes.iter_mut() {
            lane.scratch.fired.clear();
            lane.scratch.fired_at.clear();
        }
    }

    /// Each market's commands of the run on its desk (`MatchJob`): on the pipeline's
    /// threads when the engine has them (`FanOut::matching`), else here, in turn.
    fn match_lanes(&mut self, run: &[Sequenced]) {
        let n = self.markets.len();
        let Engine {
            markets,
            books,
            orders,
            positions,
            accounts,
            margin_cache,
            extra_margin,
            unsettled,
            market_cost,
            shards,
            lanes,
            queued,
            basis_at,
            basis,
            decisions,
            ledger,
            liquidator,
            max_open_orders,
            max_stop_orders,
            fan_out,
            job_store,
            run_lanes,
            ..
        } = self;
        let mut jobs: Vec<MatchJob<'_>> = recycle(std::mem::take(job_store));
        let (mut mk, mut bk, mut os) = (markets.iter_mut(), books.iter_mut(), orders.slices());
        let (mut ps, mut am) = (Rows::split(positions, n), Rows::split(accounts, n));
        let (mut mc, mut em) = (Rows::split(margin_cache, n), Rows::split(extra_margin, n));
        let (mut un, mut co) = (Rows::split(unsettled, n), market_cost.iter_mut());
        let users = ledger.accounts();
        for (m, lane) in lanes.iter_mut().enumerate() {
            let desk = Desk {
                id: MarketId(m as u16),
                n_markets: n,
                market: mk.next().expect("a market per lane"),
                book: bk.next().expect("a book per market"),
                orders: os.next().expect("a slice per market"),
                positions: ps.next().expect("rows per market"),
                accounts: am.next().expect("rows per market"),
                margin_cache: mc.next().expect("rows per market"),
                extra_margin: em.next().expect("rows per market"),
                unsettled: un.next().expect("rows per market"),
                market_cost: co.next().expect("a cost per market"),
                shards: Shards::Shared(shards),
                scratch: &mut lane.scratch,
                queued,
                basis_at,
                basis,
                users,
                liquidator: *liquidator,
                max_open_orders: *max_open_orders,
                max_stop_orders: *max_stop_orders,
                settle_later: true,
                now_basis: None,
            };
            if run_lanes.contains(&(m as u32)) {
                jobs.push(MatchJob {
                    desk,
                    lane: m as u32,
                    run,
                    lanes: run_lanes,
                    decisions,
                    events: &mut lane.events,
                });
            }
        }
        match crate::pipeline::links(fan_out) {
            Some(fan_out) if jobs.len() > 1 => fan_out.matching(&mut jobs),
            _ => jobs.iter_mut().for_each(|job| job.work()),
        }
        *job_store = recycle(jobs);
    }

    /// Apply one sequenced command, emitting its events.
    pub fn apply<S: EventSink>(&mut self, cmd: &Sequenced, sink: &mut S) {
        let seq = cmd.seq;
        // Without `begin_group` R has not seen the group: only a group of one command
        // is then checked as the contract says.
        assert!(
            self.group_begun || self.group_applied == 0,
            "a group of more than one command needs begin_group"
        );
        if let Some(segment) = self.next_segment() {
            self.risk_segment(segment);
        }
        // (A bench harness may apply more commands than it gave `begin_group`: R decides
        // each of those alone, against current state: `decide_alone`.)
        debug_assert!(
            self.in_run || self.group.get(self.group_applied as usize).is_none_or(|c| c == cmd),
            "apply takes the group's commands in order"
        );
        self.applying = seq;
        self.group_applied += 1;
        self.audited_commands += 1;
        if let Some(account) = cmd.command.account()
            && self.halt.is_some()
        {
            let client_tag = match cmd.command {
                Command::Place(o) => o.client_tag,
                _ => 0,
            };
            sink.emit(Event::Rejected {
                seq,
                account,
                reason: RejectReason::EngineHalted,
                client_tag,
            });
            return;
        }
        if self.halt.is_some() {
            return;
        }
        self.now = cmd.time;
        self.roll_day(cmd.time, seq, sink);
        if !self.group_begun || self.group_applied as usize > self.group.len() {
            self.decide_alone(cmd);
        }
        let ends_segment = self.ends_segment(&cmd.command);
        if ends_segment {
            // It reads what fills earlier in its segment changed.
            self.settle_fills(sink);
            self.refresh_filled();
        }
        self.settle_later = !ends_segment;
        match cmd.command {
            Command::Deposit { account, currency, amount } => {
                self.deposit(seq, account, currency, amount, sink)
            }
            Command::Withdraw { account, currency, amount } => {
                self.withdraw(seq, account, currency, amount, sink)
            }
            Command::Place(order) => self.place(seq, order, sink),
            Command::Amend(_) | Command::Cancel { .. } => {
                self.order_command(seq, &cmd.command, sink)
            }
            Command::CancelAll { account, market } => self.cancel_all(seq, account, market, sink),
            Command::SetLeverage { account, market, leverage } => {
                self.set_leverage(seq, account, market, leverage, sink)
            }
            Command::Mark { market, price } => self.set_mark(seq, market, price, sink),
            Command::Index { market, price } => self.set_index(seq, market, price, sink),
            Command::Liquidate { account, market } => self.liquidate(seq, account, market, sink),
            Command::IndexPrice { market, source, price } => {
                self.index_price_command(seq, market, source, price, sink)
            }
            Command::Tick => self.tick(seq, sink),
            Command::TransferMargin { account, market, amount } => {
                self.transfer_margin(seq, account, market, amount, sink)
            }
            Command::SetRiskLimit { account, market, limit } => {
                self.set_risk_limit(seq, account, market, limit, sink)
            }
        }
        self.settle_later = false;
        if self.halt.is_none() && self.segment_ended() {
            self.settle_fills(sink);
            self.clear_basis();
            self.refresh_filled();
            if !self.matching.fired.is_empty() {
                self.execute_fired(seq, sink);
            }
        }
    }

    /// Close the current group: run the audit (and the full recomputation when due).
    /// Returns false, having halted the engine, if the audit failed.
    pub fn end_group<S: EventSink>(&mut self, last_seq: Seq, sink: &mut S) -> bool {
        // The group's last command ended its last segment, and with it every fired order.
        debug_assert!(
            self.matching.fired.is_empty() || self.halt.is_some(),
            "fired orders outlive a group"
        );
        debug_assert!(
            self.matching.fill_money.is_empty() || self.halt.is_some(),
            "unsettled fills"
        );
        self.group_begun = false;
        self.group_applied = 0;
        self.decisions.clear();
        self.decided = 0;
        self.group.clear();
        self.segment_end = 0;
        if self.halt.is_some() {
            return false;
        }
        self.check_filled();
        self.groups += 1;
        let result = if let Some(error) = self.recount_failure.take() {
            Err(error)
        } else if self.full_audit_due {
            self.full_audit_due = false;
            self.audit_full()
        } else {
            let ledger = self.ledger.audit().map_err(crate::audit::AuditError::Ledger);
            if ledger.is_ok() && self.audit_cycle != 0 { self.audit_slice() } else { ledger }
        };
        match result {
            Ok(()) => true,
            Err(error) => {
                let (currency, discrepancy) = error.summary();
                sink.emit(Event::Halted { seq: last_seq, currency, discrepancy });
                self.halt = Some(HaltEvidence { seq: last_seq, error, groups: self.groups });
                false
            }
        }
    }

    pub(crate) fn reject<S: EventSink>(
        &self,
        seq: Seq,
        account: AccountId,
        reason: RejectReason,
        tag: u64,
        sink: &mut S,
    ) {
        sink.emit(Event::Rejected { seq, account, reason, client_tag: tag });
    }

    pub(crate) fn known_account(&self, account: AccountId) -> bool {
        account.0 < self.ledger.accounts()
    }

    pub(crate) fn known_market(&self, market: MarketId) -> bool {
        (market.0 as usize) < self.markets.len()
    }

    // ---- money in and out ----

    fn money_refusal(&self, account: AccountId, amount: Money) -> Option<RejectReason> {
        if !self.known_account(account) {
            Some(RejectReason::UnknownAccount)
        } else if amount <= 0 {
            Some(RejectReason::AmountNotPositive)
        } else {
            None
        }
    }

    fn deposit<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        currency: Currency,
        amount: Money,
        sink: &mut S,
    ) {
        if let Some(reason) = self.money_refusal(account, amount) {
            return self.reject(seq, account, reason, 0, sink);
        }
        edit(&mut self.ledger).deposit(account, currency, amount).expect("validated");
        sink.emit(Event::Deposited { seq, account, currency, amount });
    }

    fn withdraw<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        currency: Currency,
        amount: Money,
        sink: &mut S,
    ) {
        if let Some(reason) = self.money_refusal(account, amount) {
            return self.reject(seq, account, reason, 0, sink);
        }
        if self.available(account, currency) < amount {
            return self.reject(seq, account, RejectReason::InsufficientAvailableBalance, 0, sink);
        }
        edit(&mut self.ledger).withdraw(account, currency, amount).expect("available covers it");
        sink.emit(Event::Withdrawn { seq, account, currency, amount });
    }

    // ---- placing orders ----

    /// Why an order of `qty` worth `abs_value` may not be added (the risk limit, or the
    /// available balance), with the account's orders in the market taken as `base`, and
    /// `reserved` more of its available balance already promised (stage R's reservations
    /// earlier in a group). Orders that do not raise the hold never fail on balance.
    /// Returns how much the order raises the hold.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn margin_check(
        &self,
        account: AccountId,
        market: MarketId,
        side: Side,
        qty: i64,
        abs_value: Money,
        base: &AccountMarket,
        reserved: Money,
    ) -> Result<Money, RejectReason> {
        let i = self.pm(account, market);
        let inst = &self.markets[market.0 as usize].inst;
        let pos = &self.positions[i];
        let mut am = *base;
        am.add(side, qty, abs_value);
        let limit = inst.risk_limit as i128 + pos.risk_steps as i128 * inst.risk_step as i128;
        // The gross value is at most |cost| plus the larger side's whole value (an opening
        // share never exceeds its side): below the limit, that settles it without the
        // divisions of the exact figure.
        let bound = pos.cost.unsigned_abs() as i128 + am.value[0].max(am.value[1]);
        if bound > limit {
            let gross = am.gross_value(pos);
            // (An order that does not raise the gross value may exceed the limit: it is
            // already exceeded, and the order only reduces.)
            if gross > limit && gross > base.gross_value(pos) {
                return Err(RejectReason::RiskLimitExceeded);
            }
        }
        let before = base.hold(pos, inst);
        let after = am.hold(pos, inst);
        if after <= before {
            return Ok(0);
        }
        let room = self.available(account, inst.settle) as i128 - reserved as i128;
        if (after - before) as i128 > room {
            return Err(RejectReason::InsufficientAvailableBalance);
        }
        Ok(after - before)
    }

    /// Why resting order `r` may not be amended to `leaves` worth `value`: the amended
    /// order's hold, with the account's orders in the market taken as `base` (the old
    /// order among them), less its hold now, must fit in the available balance less
    /// `reserved` (stage R's reservations earlier in a segment).
    pub(crate) fn amend_refusal(
        &self,
        r: &OrderRecord,
        leaves: Qty,
        value: Money,
        base: &AccountMarket,
        reserved: Money,
    ) -> Option<RejectReason> {
        let inst = &self.markets[r.market.0 as usize].inst;
        let pos = &self.positions[self.pm(r.account, r.market)];
        let before = base.hold(pos, inst);
        let mut am = *base;
        am.sub(r.side, r.leaves.0, r.held_value);
        am.add(r.side, leaves.0, value);
        let after = am.hold(pos, inst);
        let fits = after <= before
            || ((after - before) as i128)
                <= self.available(r.account, inst.settle) as i128 - reserved as i128;
        (!fits).then_some(RejectReason::InsufficientAvailableBalance)
    }

    /// The |value| an order is margined at. A limit order: at its price. A Market order
    /// may fill anywhere between the best opposite price and its protection price, and an
    /// inverse contract is worth more XBt at a lower price, so take the larger of the two.
    pub(crate) fn margin_value(
        &self,
        market: MarketId,
        side: Side,
        qty: Qty,
        price: Option<Price>,
    ) -> Money {
        let inst = &self.markets[market.0 as usize].inst;
        if let Some(p) = price {
            return inst.value(qty, p).abs();
        }
        let protection = self.protection_price(market, side);
        let at_protection = inst.value(qty, protection).abs();
        match self.books[market.0 as usize].best(side.opposite()) {
            Some(best) if !matches!((side, best > protection), (Side::Buy, true)) => {
                let best = if side == Side::Sell { best.max(protection) } else { best };
                at_protection.max(inst.value(qty, best).abs())
            }
            _ => at_protection,
        }
    }

    /// The worst price a Market order may trade at (`Market::protection_price`).
    pub(crate) fn protection_price(&self, market: MarketId, side: Side) -> Price {
        self.markets[market.0 as usize].protection_price(side)
    }

    fn place<S: EventSink>(&mut self, seq: Seq, order: NewOrder, sink: &mut S) {
        let decided = self.take_decision(seq);
        let refusal = if !self.known_account(order.account) {
            Some(RejectReason::UnknownAccount)
        } else if !self.known_market(order.market) {
            Some(RejectReason::UnknownMarket)
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.reject(seq, order.account, reason, order.client_tag, sink);
        }
        self.desk(order.market).place(seq, order, decided, sink);
    }

    /// Market `market`'s matcher, over the engine's state (see `desk.rs`).
    #[inline(always)]
    pub(crate) fn desk(&mut self, market: MarketId) -> Desk<'_> {
        let (m, n) = (market.0 as usize, self.markets.len());
        Desk {
            id: market,
            n_markets: n,
            market: &mut self.markets[m],
            book: &mut self.books[m],
            orders: self.orders.slice(market),
            positions: Rows::of(&mut self.positions, n, m),
            accounts: Rows::of(&mut self.accounts, n, m),
            margin_cache: Rows::of(&mut self.margin_cache, n, m),
            extra_margin: Rows::of(&mut self.extra_margin, n, m),
            unsettled: Rows::of(&mut self.unsettled, n, m),
            market_cost: &mut self.market_cost[m],
            shards: Shards::Own(&mut self.shards),
            scratch: &mut self.matching,
            queued: &self.queued,
            basis_at: &self.basis_at,
            basis: &self.basis,
            users: self.ledger.accounts(),
            liquidator: self.liquidator,
            max_open_orders: self.max_open_orders,
            max_stop_orders: self.max_stop_orders,
            settle_later: self.settle_later,
            now_basis: None,
        }
    }

    /// Give an order that passed its checks an id and a record, and announce it.
    pub(crate) fn accept<S: EventSink>(&mut self, seq: Seq, o: &NewOrder, sink: &mut S) -> u32 {
        self.desk(o.market).accept(seq, o, sink)
    }

    /// Run an order outside a segment's matching (a fired order, a liquidation order):
    /// every fill before it has settled, and its own settle as soon as it has matched.
    pub(crate) fn execute<S: EventSink>(&mut self, seq: Seq, slot: u32, sink: &mut S) {
        debug_assert!(!self.settle_later);
        let r = *self.orders.get(slot);
        let now_basis = (r.account != self.liquidator).then(|| {
            let wallet =
                self.ledger.wallet(r.account, self.markets[r.market.0 as usize].inst.settle);
            (wallet as i128, self.cross_elsewhere(r.account, r.market))
        });
        let mut desk = self.desk(r.market);
        desk.now_basis = now_basis;
        let taken = desk.match_order(seq, slot, sink);
        self.settle_fills(sink);
        if let Some(taken) = taken {
            let mut desk = self.desk(r.market);
            desk.now_basis = now_basis;
            desk.finish_order(seq, slot, taken, sink);
        }
    }

    /// Move the money of the fills matched so far, in fill order: each fill's cost totals,
    /// both sides' realised PnL (the insurance fund covering a wallet it empties, topped
    /// up from the fee account when it must be), then the taker's and the maker's fees.
    /// Matching moved none of it, so this is the one place a fill touches money (stage P
    /// of DESIGN.md §2). The events carry the seq of the fill's command.
    ///
    /// **When.** Matching a segment's ordinary commands (orders, amends) reads no account
    /// money, so their fills settle together when the segment ends, or before a command
    /// that ends it: a matcher per market then shares nothing with another but this list,
    /// in sequence order. A closing order's bankruptcy price is worked from R's `Basis`
    /// plus its own market's unsettled fills (`closing_margin`). The fills of a command
    /// that ends its segment (a liquidation) and of fired orders settle after each taker:
    /// what comes next in those reads the money.
    fn settle_fills<S: EventSink>(&mut self, sink: &mut S) {
        for k in 0..self.matching.fill_money.len() {
            let f = self.matching.fill_money[k];
            let seq = f.seq;
            for (account, _) in f.realised {
                let i = self.pm(account, f.market);
                self.unsettled[i] = 0;
            }
            let currency = self.markets[f.market.0 as usize].inst.settle;
            edit(&mut self.ledger).post_trade_cost(currency, f.value, -f.value);
            for (account, amount) in f.realised {
                if amount == 0 {
                    continue;
                }
                if account == self.liquidator {
                    // The liquidation engine's PnL is the insurance fund's.
                    if let Err(e) = edit(&mut self.ledger).realise_insurance(currency, amount) {
                        let error = crate::audit::AuditError::Settlement(e);
                        self.halt_on(seq, currency, error, sink);
                    }
                    sink.emit(Event::Realised { seq, account, market: f.market, amount });
                } else {
                    self.realise_to_wallet(seq, account, f.market, amount, sink);
                }
            }
            // The taker pays first, so the fee account can always fund the maker's rebate
            // (config guarantees taker fee ≥ |maker fee|) unless the taker fell short.
            for (account, fee) in f.fees {
                let short = charge(edit(&mut self.ledger), account, currency, fee);
                if short != 0 {
                    sink.emit(Event::FeeShortfall { seq, account, currency, amount: short });
                }
            }
        }
        self.matching.fill_money.clear();
    }

    /// Realise `amount` (≠ 0) into a user account's wallet: the insurance fund covers what
    /// an emptied wallet cannot pay, topped up from the fee account when it must be (an
    /// empty fund halts the engine).
    pub(crate) fn realise_to_wallet<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        market: MarketId,
        amount: Money,
        sink: &mut S,
    ) {
        let currency = self.markets[market.0 as usize].inst.settle;
        let ledger = edit(&mut self.ledger);
        let topped = ledger.top_up_for(account, currency, amount);
        if topped > 0 {
            sink.emit(Event::FundTopUp { seq, currency, amount: topped });
        }
        match ledger.realise(account, currency, amount) {
            Ok(0) => {}
            Ok(covered) => {
                sink.emit(Event::InsuranceCovered { seq, account, currency, amount: covered })
            }
            Err(e) => self.halt_on(seq, currency, crate::audit::AuditError::Settlement(e), sink),
        }
        sink.emit(Event::Realised { seq, account, market, amount });
    }

    /// Bring the cross sums (and isolated counts) of every account that fills changed up
    /// to date. Matching reads neither: they are read by what comes after a segment
    /// (stage R, fired orders' decisions, mark ticks and the other commands that end one,
    /// the audit), so they are refreshed once per account there, not once per fill.
    fn refresh_filled(&mut self) {
        while let Some((account, currency)) = self.matching.filled.refresh.pop() {
            self.matching.filled.refreshing[Filled::at(account, currency)] = false;
            self.refresh_cross(account, currency);
        }
    }

    /// At the group's end: queue for liquidation every account fills left under
    /// maintenance (a fill away from the mark can do that without any mark change). The
    /// queue goes out at the group's end anyway, so this is the one check it needs; an
    /// account that dipped under and recovered within the group is not queued.
    fn check_filled(&mut self) {
        self.refresh_filled();
        while let Some((account, currency)) = self.matching.filled.check.pop() {
            self.matching.filled.checking[Filled::at(account, currency)] = false;
            // Fees and realised PnL moved the wallet behind every cross position of the
            // currency, not only the position that traded.
            self.check_account(account, currency);
        }
    }

    /// Take an order out of wherever it works and report it cancelled.
    pub(crate) fn cancel_slot<S: EventSink>(
        &mut self,
        seq: Seq,
        slot: u32,
        reason: CancelReason,
        sink: &mut S,
    ) {
        let market = self.orders.get(slot).market;
        self.desk(market).cancel_slot(seq, slot, reason, sink);
    }

    /// Fire every reached trigger of `market` (`Desk::fire_triggers`).
    pub(crate) fn fire_triggers(&mut self, market: MarketId) {
        let seq = self.applying;
        self.desk(market).fire_triggers(seq);
    }

    /// Execute the orders fired in the segment that `seq` ends, in the order they fired:
    /// stage R decides their margin first (`risk.rs`), against the state the segment left
    /// plus the reservations of those that fired before them. Each is announced
    /// (`OrderTriggered`) as it executes, so the event stream shows the trigger where the
    /// order takes effect; its events carry `seq`, the command after which it executes.
    /// Their fills may reach more triggers; those make the next round.
    fn execute_fired<S: EventSink>(&mut self, seq: Seq, sink: &mut S) {
        while !self.matching.fired.is_empty() && self.halt.is_none() {
            std::mem::swap(&mut self.matching.fired, &mut self.firing);
            self.matching.fired_at.clear();
            let firing = std::mem::take(&mut self.firing);
            // R reads the cross sums of the accounts the last round's fills changed.
            self.refresh_filled();
            self.decide_fired(&firing);
            for (k, &id) in firing.iter().enumerate() {
                if self.halt.is_some() {
                    break;
                }
                // Cancelled (or expired) since it fired.
                let Some(slot) = self.orders.slot_of(id) else { continue };
                let r = *self.orders.get(slot);
                debug_assert_eq!(r.working, Working::Triggered, "a fired order waits");
                self.orders.slice(r.market).get_mut(slot).working = Working::Pending;
                sink.emit(Event::OrderTriggered { seq, order: id, ord_type: r.ord_type });
                if r.is_reduce_only() {
                    let reducible = self.desk(r.market).reducible(r.account, r.side);
                    let want = if r.qty.0 == 0 { reducible } else { r.leaves.0.min(reducible) };
                    if want <= 0 {
                        self.cancel_slot(seq, slot, CancelReason::NothingToReduce, sink);
                        continue;
                    }
                    if want != r.qty.0 || want != r.leaves.0 {
                        // Sized to the position when it executes; say so before it trades.
                        let mut orders = self.orders.slice(r.market);
                        let rec = orders.get_mut(slot);
                        rec.qty = Qty(want);
                        rec.leaves = Qty(want);
                        let (qty, leaves, price) = (rec.qty, rec.leaves, rec.price);
                        sink.emit(Event::OrderAmended { seq, order: id, qty, leaves, price });
                    }
                } else if self.fired_refusals[k].is_some() {
                    self.cancel_slot(seq, slot, CancelReason::InsufficientBalance, sink);
                    continue;
                }
                self.execute(seq, slot, sink);
                self.fire_triggers(r.market);
            }
            self.firing = firing;
            self.firing.clear();
        }
    }

    // ---- amend and cancel ----

    /// Has `order` been given out (it may since have stopped working)?
    pub(crate) fn issued(&self, order: OrderId) -> bool {
        self.markets.get(order.market().0 as usize).is_some_and(|m| m.issued(order.number()))
    }

    /// Can `market` accept one more order: a free record, and a number left to give it?
    pub(crate) fn order_room(&self, market: MarketId) -> bool {
        !self.orders.is_full(market)
            && self.markets[market.0 as usize].next_order <= OrderId::MAX_NUMBER
    }

    /// An amend or a cancel: the order's market's matcher has it (an unknown market names
    /// no order it gave out).
    fn order_command<S: EventSink>(&mut self, seq: Seq, command: &Command, sink: &mut S) {
        let (account, order) = match *command {
            Command::Amend(a) => (a.account, a.order),
            Command::Cancel { account, order } => (account, order),
            _ => unreachable!("an amend or a cancel"),
        };
        let decided = match command {
            Command::Amend(_) => self.take_decision(seq),
            _ => None,
        };
        if !self.known_account(account) {
            return self.reject(seq, account, RejectReason::UnknownAccount, 0, sink);
        }
        if !self.known_market(order.market()) {
            return self.reject(seq, account, RejectReason::UnknownOrder, 0, sink);
        }
        self.desk(order.market()).apply(seq, command, decided, sink);
    }

    fn cancel_all<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        market: Option<MarketId>,
        sink: &mut S,
    ) {
        if !self.known_account(account) {
            return self.reject(seq, account, RejectReason::UnknownAccount, 0, sink);
        }
        if let Some(m) = market
            && !self.known_market(m)
        {
            return self.reject(seq, account, RejectReason::UnknownMarket, 0, sink);
        }
        for m in 0..self.markets.len() {
            let m = MarketId(m as u16);
            if market.is_none_or(|x| x == m) {
                self.desk(m).cancel_all(seq, account, sink);
            }
        }
    }

    // ---- leverage, marks, time ----

    fn set_leverage<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        market: MarketId,
        leverage: Leverage,
        sink: &mut S,
    ) {
        if !self.known_account(account) {
            return self.reject(seq, account, RejectReason::UnknownAccount, 0, sink);
        }
        if !self.known_market(market) {
            return self.reject(seq, account, RejectReason::UnknownMarket, 0, sink);
        }
        if leverage > Leverage::MAX {
            return self.reject(seq, account, RejectReason::InvalidLeverage, 0, sink);
        }
        let i = self.pm(account, market);
        if self.markets[market.0 as usize].life.settled {
            return self.reject(seq, account, RejectReason::MarketClosed, 0, sink);
        }
        let old = self.positions[i].leverage;
        if old == leverage {
            return self.reject(seq, account, RejectReason::InvalidLeverage, 0, sink);
        }
        let currency = self.markets[market.0 as usize].inst.settle;
        let before = self.available(account, currency);
        let (old_cache, old_extra) = (self.margin_cache[i], self.extra_margin[i]);
        self.positions[i].leverage = leverage;
        self.margin_cache[i] =
            MarginCache::of(&self.positions[i], &self.markets[market.0 as usize].inst);
        if leverage == Leverage::CROSS {
            self.extra_margin[i] = 0;
        }
        let after = self.available(account, currency);
        // Isolated margin must be money the account has; a move to cross (or a margin cut)
        // may leave a negative available balance only if it improves it.
        let short = after < 0 && (after < before || leverage != Leverage::CROSS);
        let refusal = if short {
            Some(RejectReason::InsufficientAvailableBalance)
        } else if self.markets.iter().enumerate().any(|(k, other)| {
            other.inst.settle == currency && self.is_liquidatable(account, MarketId(k as u16))
        }) {
            // BitMEX refuses a leverage the account could not carry at the mark: isolating
            // one position locks margin that backed every cross position of the currency.
            Some(RejectReason::WouldLiquidate)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.positions[i].leverage = old;
            self.margin_cache[i] = old_cache;
            self.extra_margin[i] = old_extra;
            return self.reject(seq, account, reason, 0, sink);
        }
        if leverage == Leverage::CROSS {
            // Cross margin has no isolated margin: what was transferred in is free again.
            self.extra_margin[i] = 0;
        }
        self.sync_position(account, market);
        sink.emit(Event::LeverageChanged { seq, account, market, leverage });
    }

    fn valid_reference(&self, market: MarketId, price: Price) -> bool {
        self.known_market(market)
            && price.0 > 0
            && price <= self.markets[market.0 as usize].inst.max_price
    }

    fn reference_error(&self, market: MarketId, price: Price) -> RejectReason {
        if !self.known_market(market) {
            RejectReason::UnknownMarket
        } else if price.0 <= 0 {
            RejectReason::PriceNotPositive
        } else {
            RejectReason::PriceTooLarge
        }
    }

    fn set_mark<S: EventSink>(&mut self, seq: Seq, market: MarketId, price: Price, sink: &mut S) {
        if !self.valid_reference(market, price) {
            let reason = self.reference_error(market, price);
            return self.reject(seq, AccountId(u32::MAX), reason, 0, sink);
        }
        self.apply_mark(seq, market, price, sink);
    }

    /// A new mark: publish it, re-margin the market, audit everything at the group's end,
    /// and fire mark-triggered orders.
    pub(crate) fn apply_mark<S: EventSink>(
        &mut self,
        seq: Seq,
        market: MarketId,
        price: Price,
        sink: &mut S,
    ) {
        let mk = &mut self.markets[market.0 as usize];
        mk.mark = price;
        mk.mark_unit = unit_at(&mk.inst, price);
        mk.mark_linear = crate::remargin::LinearValue::new(&mk.inst, price);
        sink.emit(Event::MarkChanged { seq, market, price });
        self.remargin(market);
        self.fire_triggers(market);
    }

    fn set_index<S: EventSink>(&mut self, seq: Seq, market: MarketId, price: Price, sink: &mut S) {
        if !self.valid_reference(market, price) {
            let reason = self.reference_error(market, price);
            return self.reject(seq, AccountId(u32::MAX), reason, 0, sink);
        }
        self.markets[market.0 as usize].index = Some(price);
        sink.emit(Event::IndexChanged { seq, market, price });
        self.fire_triggers(market);
    }

    /// Day orders expire at the first command stamped in a later UTC day.
    fn roll_day<S: EventSink>(&mut self, time: Timestamp, seq: Seq, sink: &mut S) {
        let day = time.day();
        match self.day {
            Some(d) if day > d => {
                self.day = Some(day);
                let mut expired = Vec::new();
                self.orders.for_each(|slot, r| {
                    if r.time_in_force == TimeInForce::Day {
                        expired.push((r.market, r.id, slot));
                    }
                });
                expired.sort_unstable();
                // Market by market, each in the order its orders were accepted.
                for (_, _, slot) in expired {
                    self.cancel_slot(seq, slot, CancelReason::Expired, sink);
                }
            }
            None => self.day = Some(day),
            _ => {}
        }
    }
}

/// Move a fee between the account and the fee account; returns the part that could not
/// move (`FeeShortfall`). A wallet emptied by a bankrupt close pays what is left (the
/// insurance fund already covered the loss), so no balance goes negative.
fn charge(ledger: &mut Ledger, account: AccountId, currency: Currency, fee: Money) -> Money {
    if fee == 0 {
        return 0;
    }
    let (from, to, want) = if fee >= 0 {
        (Entry::Wallet(account), Entry::Fees, fee)
    } else {
        (Entry::Fees, Entry::Wallet(account), -fee)
    };
    let amount = want.min(ledger.balance(from, currency));
    if amount > 0 {
        ledger.transfer(currency, from, to, amount).expect("amount is within the balance");
    }
    if fee >= 0 { want - amount } else { amount - want }
}

/// An empty `Vec` of another lifetime with the same room: the run's jobs borrow the
/// engine for one run only, and their list keeps its allocation from run to run. (Collected
/// in place: the element types differ only in lifetimes, so size and alignment match.)
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the Vec is empty")).collect()
}
