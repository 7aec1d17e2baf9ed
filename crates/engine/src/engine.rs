use std::ops::Range;
use std::sync::Arc;

use amdahl_book::{Book, BookConfig, Match, RestingOrder, Taker};
use amdahl_ledger::{Entry, Ledger};
use amdahl_risk::{Instrument, Position};
use amdahl_types::{
    AccountId, AmendOrder, CancelReason, Command, Currency, Event, ExecInst, Leverage, MarketId,
    Money, NewOrder, OrdType, OrderId, Price, Qty, Rate, RejectReason, Seq, Sequenced, Side,
    TimeInForce, Timestamp, TriggerRef,
};

use crate::audit::HaltEvidence;
use crate::config::EngineConfig;
use crate::margin::{AccountMarket, committed};
use crate::orders::{NIL, OrderRecord, Orders, Working};
use crate::remargin::{AccountShard, MarginCache};
use crate::sink::EventSink;
use crate::triggers::TriggerHeap;

/// The ledger for writing. Shard threads read it only during a tick's fan-out, and the
/// engine waits for every shard before it goes on, so outside a fan-out this is the only
/// reference: the check is one atomic load, never a lock.
#[inline]
pub(crate) fn edit(ledger: &mut Arc<Ledger>) -> &mut Ledger {
    Arc::get_mut(ledger).expect("no shard thread holds the ledger outside a tick")
}

/// Which way the trigger price must move to fire a conditional order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    /// Fires when the reference price is at or above `stop_px` (buy Stop, sell IfTouched).
    Rising,
    /// Fires when the reference price is at or below `stop_px` (sell Stop, buy IfTouched).
    Falling,
}

fn direction(side: Side, placed: OrdType) -> Direction {
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
}

impl Triggers {
    fn new(capacity: usize) -> Triggers {
        Triggers {
            rising: std::array::from_fn(|_| TriggerHeap::new(true, capacity)),
            falling: std::array::from_fn(|_| TriggerHeap::new(false, capacity)),
        }
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

    fn reference(&self, r: TriggerRef) -> Option<Price> {
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
    /// Per order slot: its place in its market's trigger heap (`NIL` if not untriggered).
    pub(crate) trigger_at: Vec<u32>,
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
    /// Accounts whose position changed during one match and hold ReduceOnly orders.
    touched: Vec<AccountId>,
    /// Accounts whose positions fills changed: their cross sums are refreshed when the
    /// segment ends, their maintenance is checked when the group ends (`Filled`).
    filled: Filled,
    /// The money of the fills not yet settled, in fill order (see `settle_fills`).
    fill_money: Vec<FillMoney>,
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
    /// Orders whose trigger was reached in the current segment, in the order they fired:
    /// they execute when the segment ends (`execute_fired`). `firing` is the round being
    /// executed, and `fired_refusals` stage R's decisions for it.
    fired: Vec<OrderId>,
    /// The seq of the command each of `fired` fired in (`applying` then).
    fired_at: Vec<Seq>,
    firing: Vec<OrderId>,
    pub(crate) fired_refusals: Vec<Option<RejectReason>>,
    /// Whether `begin_group` opened the current group, and the commands applied in it.
    group_begun: bool,
    group_applied: u64,
    /// The command being applied.
    applying: Seq,
    /// `apply_group` matches each segment's market commands market by market
    /// (`match_markets_in_turn`), and the events of each command of such a run.
    in_turn: bool,
    turn_events: Vec<Vec<Event>>,
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
        Engine {
            markets: config
                .markets
                .iter()
                .map(|m| Market {
                    life: crate::lifecycle::LifeState::new(&m.lifecycle),
                    inst: m.instrument.clone(),
                    mark: m.mark,
                    mark_unit: unit_at(&m.instrument, m.mark),
                    mark_linear: crate::remargin::LinearValue::new(&m.instrument, m.mark),
                    index: None,
                    last: None,
                    // Room for the stops a busy market holds; past it the heap grows.
                    triggers: Triggers::new((m.max_orders as usize).min(1 << 16)),
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
            orders: Orders::new(&capacities),
            trigger_at: vec![NIL; capacities.iter().map(|&c| c as usize).sum()],
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
            touched: Vec::with_capacity(1 << 16),
            filled: Filled::new(rows),
            // As many fills as the largest book has makers (an iceberg refilled within one
            // take can exceed it once; the list then keeps its larger capacity).
            fill_money: Vec::with_capacity(
                config.markets.iter().map(|m| m.max_orders as usize).max().unwrap_or(0) + 1,
            ),
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
            fired: Vec::with_capacity(1 << 10),
            fired_at: Vec::with_capacity(1 << 10),
            firing: Vec::with_capacity(1 << 10),
            fired_refusals: Vec::with_capacity(1 << 10),
            group_begun: false,
            group_applied: 0,
            applying: Seq(0),
            in_turn: false,
            turn_events: Vec::new(),
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
        self.fill_money.len()
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
    /// are applied in sequence order, so the decisions are taken in order too.
    fn take_decision(&mut self, seq: Seq) -> Option<crate::risk::Decision> {
        if self.in_turn {
            // Market by market, commands come out of sequence order.
            let at = self.decisions.binary_search_by_key(&seq, |d| d.seq).ok()?;
            return Some(self.decisions[at]);
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
        if self.in_turn {
            self.apply_in_turn(group, sink);
        } else {
            for cmd in group {
                self.apply(cmd, sink);
            }
        }
        self.end_group(last.seq, sink)
    }

    /// Match each segment's market commands market by market rather than in sequence
    /// order (`apply_group` only): what a matcher per market will do, run on one thread.
    /// The events, the state and the state hash must be exactly those of sequence order
    /// (the property tests hold it to that): within a segment no market's matching may
    /// read what another's writes.
    #[doc(hidden)]
    pub fn match_markets_in_turn(&mut self, on: bool) {
        self.in_turn = on;
    }

    /// `apply_group`'s commands, each segment's run of market commands (all of it but the
    /// command that ends it) market by market, the rest in order.
    fn apply_in_turn<S: EventSink>(&mut self, group: &[Sequenced], sink: &mut S) {
        let mut i = 0;
        while i < group.len() {
            if let Some(segment) = self.next_segment() {
                self.risk_segment(segment);
            }
            let end = self.segment_end.min(group.len());
            let mut j = i;
            while j + 1 < end && self.halt.is_none() && self.lane(&group[j]).is_some() {
                j += 1;
            }
            if j - i < 2 {
                self.apply(&group[i], sink);
                i += 1;
                continue;
            }
            self.apply_run(&group[i..j], sink);
            i = j;
        }
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

    /// A run of a segment's market commands, market by market (each in sequence order),
    /// their events put back in sequence order; then the fills' money and the fired
    /// orders, which the segment's end takes in sequence order.
    fn apply_run<S: EventSink>(&mut self, run: &[Sequenced], sink: &mut S) {
        let mut events = std::mem::take(&mut self.turn_events);
        events.resize_with(events.len().max(run.len()), Vec::new);
        for lane in 0..=self.markets.len() {
            for (k, cmd) in run.iter().enumerate() {
                if self.lane(cmd) == Some(lane) {
                    self.apply(cmd, &mut events[k]);
                }
            }
        }
        for buffer in &mut events[..run.len()] {
            for e in buffer.drain(..) {
                sink.emit(e);
            }
        }
        self.turn_events = events;
        // Stable: within one command, fills and firings keep their order.
        self.fill_money.sort_by_key(|f| f.seq);
        let mut fired: Vec<(Seq, OrderId)> =
            self.fired_at.iter().copied().zip(self.fired.iter().copied()).collect();
        fired.sort_by_key(|&(seq, _)| seq);
        (self.fired_at, self.fired) = fired.into_iter().unzip();
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
        // nothing for those, and M checks an order among them against current state.)
        debug_assert!(
            self.in_turn || self.group.get(self.group_applied as usize).is_none_or(|c| c == cmd),
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
            Command::Amend(amend) => self.amend(seq, amend, sink),
            Command::Cancel { account, order } => self.cancel(seq, account, order, sink),
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
            if !self.fired.is_empty() {
                self.execute_fired(seq, sink);
            }
        }
    }

    /// Close the current group: run the audit (and the full recomputation when due).
    /// Returns false, having halted the engine, if the audit failed.
    pub fn end_group<S: EventSink>(&mut self, last_seq: Seq, sink: &mut S) -> bool {
        // The group's last command ended its last segment, and with it every fired order.
        debug_assert!(self.fired.is_empty() || self.halt.is_some(), "fired orders outlive a group");
        debug_assert!(self.fill_money.is_empty() || self.halt.is_some(), "unsettled fills");
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

    /// Every check a new order must pass; returns the (possibly resolved) order.
    /// `decided`: stage R's margin decision for the order, if R saw it.
    fn validate_new(
        &self,
        decided: Option<crate::risk::Decision>,
        mut o: NewOrder,
    ) -> Result<NewOrder, RejectReason> {
        if !self.known_account(o.account) {
            return Err(RejectReason::UnknownAccount);
        }
        if !self.known_market(o.market) {
            return Err(RejectReason::UnknownMarket);
        }
        if o.exec_inst.contains(ExecInst::ALL_OR_NONE) {
            return Err(RejectReason::AllOrNoneRemoved);
        }
        let market = &self.markets[o.market.0 as usize];
        if market.life.settled {
            return Err(RejectReason::MarketClosed);
        }
        let inst = &market.inst;
        match (o.ord_type.has_limit_price(), o.price) {
            (true, None) => return Err(RejectReason::MissingPrice),
            (false, Some(_)) => return Err(RejectReason::UnexpectedPrice),
            _ => {}
        }
        match (o.ord_type.is_conditional(), o.stop_px) {
            (true, None) => return Err(RejectReason::MissingStopPx),
            (false, Some(_)) => return Err(RejectReason::UnexpectedPrice),
            _ => {}
        }
        for p in [o.price, o.stop_px].into_iter().flatten() {
            if p.0 <= 0 {
                return Err(RejectReason::PriceNotPositive);
            }
            if p > inst.max_price {
                return Err(RejectReason::PriceTooLarge);
            }
        }
        if let Some(p) = o.price
            && !inst.within_band(p, market.mark)
        {
            return Err(RejectReason::PriceOutsideBand);
        }
        let close = o.exec_inst.contains(ExecInst::CLOSE);
        if o.qty.0 < 0 || (o.qty.0 == 0 && !close) {
            return Err(RejectReason::QtyNotPositive);
        }
        if o.qty.0 % inst.lot.0 != 0 {
            return Err(RejectReason::QtyNotMultipleOfLot);
        }
        if o.qty > inst.max_order_qty {
            return Err(RejectReason::QtyTooLarge);
        }
        if let Some(d) = o.display_qty
            && (d.0 < 0 || d > o.qty || d.0 % inst.lot.0 != 0 || !o.ord_type.has_limit_price())
        {
            return Err(RejectReason::InvalidDisplayQty);
        }
        if self.queued[self.pm(o.account, o.market)] && !o.exec_inst.is_reduce_only() {
            return Err(RejectReason::InLiquidation);
        }
        let am = &self.accounts[self.pm(o.account, o.market)];
        if am.open_orders >= self.max_open_orders {
            return Err(RejectReason::TooManyOpenOrders);
        }
        if o.ord_type.is_conditional() && am.stop_orders >= self.max_stop_orders {
            return Err(RejectReason::TooManyStopOrders);
        }
        if o.exec_inst.is_reduce_only() && !o.ord_type.is_conditional() {
            let reducible = self.reducible(o.account, o.market, o.side);
            if close && o.qty.0 == 0 {
                let pos = self.positions[self.pm(o.account, o.market)].qty;
                if pos == 0 {
                    return Err(RejectReason::NoPositionToClose);
                }
                // Close without a quantity: the whole position, on the closing side.
                o.side = if pos > 0 { Side::Sell } else { Side::Buy };
                o.qty = Qty(self.reducible(o.account, o.market, o.side));
                if o.qty.0 == 0 {
                    return Err(RejectReason::ReduceOnlyWouldIncrease);
                }
            } else if reducible <= 0 {
                return Err(RejectReason::ReduceOnlyWouldIncrease);
            } else {
                o.qty = o.qty.min(Qty(reducible));
            }
        }
        if o.exec_inst.is_post_only()
            && !o.ord_type.is_conditional()
            && let Some(p) = o.price
            && self.books[o.market.0 as usize].would_cross(o.side, p)
        {
            return Err(RejectReason::PostOnlyWouldCross);
        }
        if !o.exec_inst.is_reduce_only() && !o.ord_type.is_conditional() {
            // Stage R decided this order's margin before its segment was matched, and the
            // decision is final (DESIGN.md §2, `risk.rs`): M does not read the account's
            // money to accept it. Only an order applied outside `begin_group` (a group of
            // one command) is checked here, against the state R would have seen.
            match decided {
                Some(d) => {
                    if let Some(reason) = d.refusal {
                        return Err(reason);
                    }
                }
                None => {
                    debug_assert!(
                        self.group.len() < self.group_applied as usize,
                        "R decides every order of a group"
                    );
                    let v = self.margin_value(o.market, o.side, o.qty, o.price);
                    if let Some(reason) =
                        self.margin_refusal(o.account, o.market, o.side, o.qty.0, v)
                    {
                        return Err(reason);
                    }
                }
            }
        }
        // A market's book holds only records of its slice, so it is never the one full.
        if !self.order_room(o.market) {
            return Err(RejectReason::CapacityExhausted);
        }
        Ok(o)
    }

    /// How many contracts an order on `side` can still reduce: the opposite position less
    /// the leaves of ReduceOnly orders already working on that side.
    fn reducible(&self, account: AccountId, market: MarketId, side: Side) -> i64 {
        let i = self.pm(account, market);
        let pos = self.positions[i].qty;
        let closable = match side {
            Side::Buy => (-pos).max(0),
            Side::Sell => pos.max(0),
        };
        let mut working = 0;
        let mut s = self.accounts[i].head;
        while s != NIL {
            let r = self.orders.get(s);
            // Only resting orders count: untriggered ones size themselves when they fire,
            // and the one order being executed (pending) is checked on its own.
            if r.side == side && r.is_reduce_only() && matches!(r.working, Working::Resting(_)) {
                working += r.leaves.0;
            }
            s = self.orders.next_in_list(s);
        }
        closable - working
    }

    /// Why an order of `qty` worth `abs_value` may not be added: the risk limit, or the
    /// available balance.
    pub(crate) fn margin_refusal(
        &self,
        account: AccountId,
        market: MarketId,
        side: Side,
        qty: i64,
        abs_value: Money,
    ) -> Option<RejectReason> {
        let am = self.accounts[self.pm(account, market)];
        self.margin_check(account, market, side, qty, abs_value, &am, 0).err()
    }

    /// `margin_refusal` with the account's orders in the market taken as `base`, and
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

    /// An order that reduces its account's position may not trade past the position's
    /// bankruptcy price: there the loss it realises would exceed the margin behind the
    /// position, and the wallet could not pay it (the insurance fund would, and an empty
    /// fund halts the engine). Returns `limit` narrowed to the bankruptcy price where it
    /// reaches past it; the rest of the order is then treated as out of price range.
    /// The liquidation engine, which works positions out at their bankruptcy price by
    /// design, is exempt.
    pub(crate) fn solvent_limit(
        &self,
        account: AccountId,
        market: MarketId,
        side: Side,
        limit: Option<Price>,
    ) -> Option<Price> {
        let pos = &self.positions[self.pm(account, market)];
        let reduces = match side {
            Side::Buy => pos.qty < 0,
            Side::Sell => pos.qty > 0,
        };
        if !reduces || account == self.liquidator {
            return limit;
        }
        let inst = &self.markets[market.0 as usize].inst;
        let worst = limit.unwrap_or(self.protection_price(market, side));
        // Solvent at the worst price: the position's value there covers cost − margin (the
        // usual case: one valuation, no search; no margin either where closing there
        // realises no loss at all).
        let value = inst.value(Qty(pos.qty), worst) as i128;
        if value >= pos.cost as i128 {
            return limit;
        }
        let margin = self.closing_margin(account, market);
        if value >= pos.cost as i128 - margin as i128 {
            return limit;
        }
        // Insolvent at every price: trade nothing (liquidation works the position out).
        let edge = match side {
            Side::Sell => inst.max_price,
            Side::Buy => Price(1),
        };
        let bankrupt =
            amdahl_risk::liquidation::bankruptcy_price(inst, pos, margin).unwrap_or(edge);
        Some(match side {
            Side::Sell => worst.max(bankrupt),
            Side::Buy => worst.min(bankrupt),
        })
    }

    /// The margin a closing order's bankruptcy price is worked from (`bankruptcy_margin`).
    /// Matching a segment's ordinary commands, it reads no account money (`settle_fills`):
    /// it takes the wallet and `cross_elsewhere` as stage R saw them when the segment
    /// began, and moves the wallet by this market's own unsettled fills of the account.
    /// Fills in the account's other markets earlier in the segment are not seen (as R
    /// does not see them); where they lost money, the insurance fund covers the gap, as it
    /// does for a maker. Elsewhere every fill has settled, and the account is read as is.
    fn closing_margin(&self, account: AccountId, market: MarketId) -> Money {
        let i = self.pm(account, market);
        // R keeps a Basis wherever one may be read (`note_basis`): a segment's ordinary
        // command that R decided never falls back on current state.
        debug_assert!(
            self.basis_at[i] != NIL
                || !self.settle_later
                || !self.group_begun
                || self.group_applied as usize > self.group.len(),
            "no Basis for a closing order of ({account:?}, {market:?})"
        );
        let (wallet, elsewhere) = match self.basis_at[i] {
            at if at != NIL && self.settle_later => {
                let b = &self.basis[at as usize];
                (b.wallet as i128, b.elsewhere)
            }
            // Everything before it has settled (a command that ends its segment, a fired
            // order), or R did not see the command (a segment of its own): current state.
            _ => {
                let wallet =
                    self.ledger.wallet(account, self.markets[market.0 as usize].inst.settle);
                (wallet as i128, self.cross_elsewhere(account, market))
            }
        };
        let wallet = wallet + self.unsettled[i] as i128;
        self.bankruptcy_margin_from(account, market, wallet, elsewhere)
    }

    /// The worst price a Market order may trade at: the edge of the band around the mark
    /// (BitMEX stops a Market order before it walks the book without limit).
    pub(crate) fn protection_price(&self, market: MarketId, side: Side) -> Price {
        let m = &self.markets[market.0 as usize];
        let mark = m.mark.0 as i128;
        let band = m.inst.price_band.0 as i128;
        let scale = Rate::SCALE as i128;
        let p = match side {
            Side::Buy => (mark * (scale + band)) / scale,
            Side::Sell => (mark * (scale - band) + scale - 1) / scale,
        };
        Price((p as i64).clamp(1, m.inst.max_price.0))
    }

    fn place<S: EventSink>(&mut self, seq: Seq, order: NewOrder, sink: &mut S) {
        let decided = self.take_decision(seq);
        let o = match self.validate_new(decided, order) {
            Ok(o) => o,
            Err(reason) => return self.reject(seq, order.account, reason, order.client_tag, sink),
        };
        let conditional = o.ord_type.is_conditional();
        let slot = self.accept(seq, &o, sink);
        if conditional {
            self.index_trigger(slot);
        } else {
            self.execute(seq, slot, sink);
        }
        self.fire_triggers(o.market);
    }

    /// Give an order that passed its checks an id and a record, and announce it. Returns
    /// its slot; the caller then indexes its trigger or executes it.
    #[inline(always)] // see `next_segment`
    pub(crate) fn accept<S: EventSink>(&mut self, seq: Seq, o: &NewOrder, sink: &mut S) -> u32 {
        let market = &mut self.markets[o.market.0 as usize];
        let id = OrderId::new(o.market, market.next_order);
        market.next_order += 1;
        let slot = self.add_record(OrderRecord::accepted(id, o));
        sink.emit(Event::OrderAccepted {
            seq,
            order: id,
            account: o.account,
            market: o.market,
            side: o.side,
            ord_type: o.ord_type,
            qty: o.qty,
            price: o.price,
            client_tag: o.client_tag,
        });
        slot
    }

    pub(crate) fn add_record(&mut self, record: OrderRecord) -> u32 {
        let slot = self.orders.insert(record).expect("capacity checked before acceptance");
        let i = self.pm(record.account, record.market);
        let mut head = self.accounts[i].head;
        self.orders.link(&mut head, slot);
        let am = &mut self.accounts[i];
        am.head = head;
        am.open_orders += 1;
        if record.is_reduce_only() {
            am.reduce_only += 1;
        }
        if matches!(record.working, Working::Untriggered) {
            am.stop_orders += 1;
        }
        slot
    }

    fn drop_record(&mut self, slot: u32) -> OrderRecord {
        self.unhold(slot);
        let r = *self.orders.get(slot);
        let i = self.pm(r.account, r.market);
        let mut head = self.accounts[i].head;
        self.orders.unlink(&mut head, slot);
        let am = &mut self.accounts[i];
        am.head = head;
        am.open_orders -= 1;
        if r.is_reduce_only() {
            am.reduce_only -= 1;
        }
        if matches!(r.working, Working::Untriggered) {
            am.stop_orders -= 1;
        }
        self.orders.remove(slot)
    }

    /// Count a resting order's leaves in its account's order-margin aggregates.
    fn hold(&mut self, slot: u32) {
        let r = *self.orders.get(slot);
        if r.is_reduce_only() || r.held_value != 0 || r.leaves.0 == 0 {
            return;
        }
        let price = r.price.expect("a resting order has a limit price");
        let v = self.markets[r.market.0 as usize].inst.value(r.leaves, price).abs();
        let i = self.pm(r.account, r.market);
        self.accounts[i].add(r.side, r.leaves.0, v);
        self.orders.get_mut(slot).held_value = v.max(1);
        // `held_value` doubles as the "is counted" flag; a zero-value order cannot exist
        // (prices and quantities are positive), so max(1) only guards the flag.
        debug_assert!(v > 0);
    }

    fn unhold(&mut self, slot: u32) {
        let r = *self.orders.get(slot);
        if r.held_value == 0 {
            return;
        }
        let i = self.pm(r.account, r.market);
        self.accounts[i].sub(r.side, r.leaves.0, r.held_value);
        self.orders.get_mut(slot).held_value = 0;
    }

    /// Run an accepted (or triggered, or re-priced) order: match it, then rest, cancel or
    /// finish it according to its type and time in force.
    pub(crate) fn execute<S: EventSink>(&mut self, seq: Seq, slot: u32, sink: &mut S) {
        let r = *self.orders.get(slot);
        let m = r.market.0 as usize;
        if r.exec_inst.is_post_only()
            && let Some(p) = r.price
            && self.books[m].would_cross(r.side, p)
        {
            return self.cancel_slot(seq, slot, CancelReason::PostOnlyWouldCross, sink);
        }
        let limit = match r.ord_type {
            OrdType::Market => Some(self.protection_price(r.market, r.side)),
            _ => r.price,
        };
        let solvent = self.solvent_limit(r.account, r.market, r.side, limit);
        // Narrowed: the order reached past its position's bankruptcy price. It trades up
        // to that price and its remainder does not rest (resting out there, it would be
        // filled past it later).
        let narrowed = solvent != limit;
        let limit = solvent;
        if r.time_in_force == TimeInForce::FillOrKill
            && self.books[m].fillable(r.side, limit, r.account, r.leaves) < r.leaves
        {
            return self.cancel_slot(seq, slot, CancelReason::FillOrKill, sink);
        }
        let left = self.take(seq, slot, limit, sink);
        {
            let rec = self.orders.get_mut(slot);
            rec.leaves = left;
            rec.cum = rec.qty - left;
        }
        self.trim_touched(seq, r.market, sink);
        if left.0 == 0 {
            self.drop_record(slot);
            return;
        }
        if narrowed {
            return self.cancel_slot(seq, slot, CancelReason::PriceProtection, sink);
        }
        let immediate = r.ord_type == OrdType::Market
            || matches!(r.time_in_force, TimeInForce::ImmediateOrCancel | TimeInForce::FillOrKill);
        if immediate {
            let reason = if r.ord_type == OrdType::Market
                && r.time_in_force != TimeInForce::ImmediateOrCancel
            {
                CancelReason::PriceProtection
            } else {
                CancelReason::ImmediateOrCancel
            };
            return self.cancel_slot(seq, slot, reason, sink);
        }
        let mut left = left;
        if r.is_reduce_only() {
            // Other ReduceOnly orders may have taken the room this one had: it may rest
            // only what still reduces the position.
            let allowed = self.reducible(r.account, r.market, r.side);
            if allowed <= 0 {
                return self.cancel_slot(seq, slot, CancelReason::ReduceOnly, sink);
            }
            if left.0 > allowed {
                left = Qty(allowed);
                let rec = self.orders.get_mut(slot);
                rec.leaves = left;
                rec.qty = rec.cum + left;
                let (order, qty, price) = (rec.id, rec.qty, rec.price);
                sink.emit(Event::OrderAmended { seq, order, qty, leaves: left, price });
            }
        }
        let resting = RestingOrder {
            id: r.id,
            account: r.account,
            side: r.side,
            price: r.price.expect("a non-Market order has a limit price"),
            leaves: left,
            display: r.display,
        };
        match self.books[m].rest(resting) {
            Ok(handle) => {
                self.orders.get_mut(slot).working = Working::Resting(handle);
                self.hold(slot);
            }
            Err(_) => self.cancel_slot(seq, slot, CancelReason::ImmediateOrCancel, sink),
        }
    }

    /// Match the order in `slot` against the book; settles every fill. Returns leaves.
    fn take<S: EventSink>(
        &mut self,
        seq: Seq,
        slot: u32,
        limit: Option<Price>,
        sink: &mut S,
    ) -> Qty {
        let r = *self.orders.get(slot);
        let m = r.market.0 as usize;
        let n_markets = self.markets.len();
        let taker = Taker { id: r.id, account: r.account, side: r.side, limit, qty: r.leaves };
        let liquidator = self.liquidator;
        let Engine {
            markets,
            books,
            orders,
            positions,
            accounts,
            fill_money,
            unsettled,
            touched,
            shards,
            market_cost,
            margin_cache,
            extra_margin,
            filled,
            ..
        } = self;
        let market = &mut markets[m];
        let mut ctx = Settlement {
            seq,
            market: r.market,
            inst: &market.inst,
            last: &mut market.last,
            orders,
            positions,
            accounts,
            money: fill_money,
            unsettled,
            touched,
            shards,
            market_cost: &mut market_cost[m],
            margin_cache,
            extra_margin,
            filled,
            liquidator,
            n_markets,
            taker: r,
            taker_left: r.leaves,
        };
        let left = books[m].take(taker, |mt| ctx.on_match(mt, sink));
        if !self.settle_later {
            self.settle_fills(sink);
        }
        left
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
        for k in 0..self.fill_money.len() {
            let f = self.fill_money[k];
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
        self.fill_money.clear();
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
        while let Some((account, currency)) = self.filled.refresh.pop() {
            self.filled.refreshing[Filled::at(account, currency)] = false;
            self.refresh_cross(account, currency);
        }
    }

    /// At the group's end: queue for liquidation every account fills left under
    /// maintenance (a fill away from the mark can do that without any mark change). The
    /// queue goes out at the group's end anyway, so this is the one check it needs; an
    /// account that dipped under and recovered within the group is not queued.
    fn check_filled(&mut self) {
        self.refresh_filled();
        while let Some((account, currency)) = self.filled.check.pop() {
            self.filled.checking[Filled::at(account, currency)] = false;
            // Fees and realised PnL moved the wallet behind every cross position of the
            // currency, not only the position that traded.
            self.check_account(account, currency);
        }
    }

    /// ReduceOnly orders must never exceed the position they reduce: after a match, trim
    /// (least aggressive first) or cancel them for every account whose position changed.
    fn trim_touched<S: EventSink>(&mut self, seq: Seq, market: MarketId, sink: &mut S) {
        while let Some(account) = self.touched.pop() {
            for side in [Side::Buy, Side::Sell] {
                loop {
                    let excess = -self.reducible(account, market, side);
                    if excess <= 0 {
                        break;
                    }
                    let Some(slot) = self.least_aggressive_reduce_only(account, market, side)
                    else {
                        break;
                    };
                    let r = *self.orders.get(slot);
                    if r.leaves.0 <= excess {
                        self.cancel_slot(seq, slot, CancelReason::ReduceOnly, sink);
                    } else {
                        let new_leaves = Qty(r.leaves.0 - excess);
                        if let Working::Resting(h) = r.working {
                            self.books[market.0 as usize].reduce(h, new_leaves);
                        }
                        let rec = self.orders.get_mut(slot);
                        rec.leaves = new_leaves;
                        rec.qty = rec.cum + new_leaves;
                        let (qty, price) = (rec.qty, rec.price);
                        sink.emit(Event::OrderAmended {
                            seq,
                            order: r.id,
                            qty,
                            leaves: new_leaves,
                            price,
                        });
                    }
                }
            }
        }
    }

    fn least_aggressive_reduce_only(
        &self,
        account: AccountId,
        market: MarketId,
        side: Side,
    ) -> Option<u32> {
        let mut best: Option<(u32, i64, u64)> = None;
        let mut s = self.accounts[self.pm(account, market)].head;
        while s != NIL {
            let r = self.orders.get(s);
            if r.side == side && r.is_reduce_only() && matches!(r.working, Working::Resting(_)) {
                // Least aggressive: the highest sell, the lowest buy; ties: the newest.
                let p = r.price.map_or(0, |p| p.0);
                let key = if side == Side::Sell { p } else { -p };
                if best.is_none_or(|(_, k, id)| key > k || (key == k && r.id.0 > id)) {
                    best = Some((s, key, r.id.0));
                }
            }
            s = self.orders.next_in_list(s);
        }
        best.map(|(s, _, _)| s)
    }

    /// Take an order out of wherever it works and report it cancelled.
    pub(crate) fn cancel_slot<S: EventSink>(
        &mut self,
        seq: Seq,
        slot: u32,
        reason: CancelReason,
        sink: &mut S,
    ) {
        let r = *self.orders.get(slot);
        match r.working {
            Working::Resting(h) => {
                self.unhold(slot);
                self.books[r.market.0 as usize].cancel(h);
            }
            Working::Untriggered => self.unindex_trigger(slot),
            Working::Triggered | Working::Pending => {}
        }
        sink.emit(Event::OrderCanceled {
            seq,
            order: r.id,
            account: r.account,
            reason,
            leaves: r.leaves,
        });
        self.drop_record(slot);
    }

    // ---- conditional orders ----

    fn trigger_key(r: &OrderRecord) -> (usize, Direction, (i64, u64)) {
        let stop = r.stop_px.expect("a conditional order has a stop price");
        (r.exec_inst.trigger() as usize, direction(r.side, r.placed_type), (stop.0, r.id.0))
    }

    fn index_trigger(&mut self, slot: u32) {
        let r = *self.orders.get(slot);
        let (t, dir, (stop, id)) = Self::trigger_key(&r);
        let triggers = &mut self.markets[r.market.0 as usize].triggers;
        let at = &mut self.trigger_at;
        match dir {
            Direction::Rising => triggers.rising[t].insert(stop, id, slot, at),
            Direction::Falling => triggers.falling[t].insert(stop, id, slot, at),
        };
    }

    fn unindex_trigger(&mut self, slot: u32) {
        let r = *self.orders.get(slot);
        let (t, dir, _) = Self::trigger_key(&r);
        let triggers = &mut self.markets[r.market.0 as usize].triggers;
        let at = &mut self.trigger_at;
        let removed = match dir {
            Direction::Rising => triggers.rising[t].remove(slot, at),
            Direction::Falling => triggers.falling[t].remove(slot, at),
        };
        debug_assert!(removed, "untriggered order missing from the trigger index");
    }

    /// The next conditional order whose trigger has been reached, if any: references in
    /// the order Mark, Last, Index; rising before falling; within a set, the stop nearest
    /// the side it was crossed from first, then the older order.
    fn next_triggered(&self, market: MarketId) -> Option<OrderId> {
        let m = &self.markets[market.0 as usize];
        for r in [TriggerRef::MarkPrice, TriggerRef::LastPrice, TriggerRef::IndexPrice] {
            let Some(p) = m.reference(r) else { continue };
            if let Some((stop, id)) = m.triggers.rising[r as usize].first()
                && stop <= p.0
            {
                return Some(OrderId(id));
            }
            if let Some((stop, id)) = m.triggers.falling[r as usize].first()
                && stop >= p.0
            {
                return Some(OrderId(id));
            }
        }
        None
    }

    /// Fire every reached trigger: queue the order to execute when its segment ends
    /// (`execute_fired`), which announces it. Matching does not look at the account's
    /// money for it; stage R decides it then, from the state the segment left.
    pub(crate) fn fire_triggers(&mut self, market: MarketId) {
        while let Some(id) = self.next_triggered(market) {
            let slot = self.orders.slot_of(id).expect("indexed orders are live");
            self.unindex_trigger(slot);
            let r = *self.orders.get(slot);
            let now = r.ord_type.triggered();
            let i = self.pm(r.account, r.market);
            self.accounts[i].stop_orders -= 1;
            let rec = self.orders.get_mut(slot);
            rec.ord_type = now;
            rec.working = Working::Triggered;
            self.fired.push(id);
            self.fired_at.push(self.applying);
        }
    }

    /// Execute the orders fired in the segment that `seq` ends, in the order they fired:
    /// stage R decides their margin first (`risk.rs`), against the state the segment left
    /// plus the reservations of those that fired before them. Each is announced
    /// (`OrderTriggered`) as it executes, so the event stream shows the trigger where the
    /// order takes effect; its events carry `seq`, the command after which it executes.
    /// Their fills may reach more triggers; those make the next round.
    fn execute_fired<S: EventSink>(&mut self, seq: Seq, sink: &mut S) {
        while !self.fired.is_empty() && self.halt.is_none() {
            std::mem::swap(&mut self.fired, &mut self.firing);
            self.fired_at.clear();
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
                self.orders.get_mut(slot).working = Working::Pending;
                sink.emit(Event::OrderTriggered { seq, order: id, ord_type: r.ord_type });
                if r.is_reduce_only() {
                    let reducible = self.reducible(r.account, r.market, r.side);
                    let want = if r.qty.0 == 0 { reducible } else { r.leaves.0.min(reducible) };
                    if want <= 0 {
                        self.cancel_slot(seq, slot, CancelReason::NothingToReduce, sink);
                        continue;
                    }
                    if want != r.qty.0 || want != r.leaves.0 {
                        // Sized to the position when it executes; say so before it trades.
                        let rec = self.orders.get_mut(slot);
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

    fn owned_slot(&self, account: AccountId, order: OrderId) -> Result<u32, RejectReason> {
        if !self.known_account(account) {
            return Err(RejectReason::UnknownAccount);
        }
        let slot = self.orders.slot_of(order).ok_or(if self.issued(order) {
            RejectReason::OrderNotOpen
        } else {
            RejectReason::UnknownOrder
        })?;
        if self.orders.get(slot).account != account {
            return Err(RejectReason::NotYourOrder);
        }
        Ok(slot)
    }

    /// Has `order` been given out (it may since have stopped working)?
    pub(crate) fn issued(&self, order: OrderId) -> bool {
        let n = order.number();
        n != 0 && self.markets.get(order.market().0 as usize).is_some_and(|m| n < m.next_order)
    }

    /// Can `market` accept one more order: a free record, and a number left to give it?
    pub(crate) fn order_room(&self, market: MarketId) -> bool {
        !self.orders.is_full(market)
            && self.markets[market.0 as usize].next_order <= OrderId::MAX_NUMBER
    }

    fn amend<S: EventSink>(&mut self, seq: Seq, a: AmendOrder, sink: &mut S) {
        let decided = self.take_decision(seq);
        match self.validate_amend(decided, a) {
            Ok((slot, qty, price, stop_px)) => {
                self.apply_amend(seq, slot, qty, price, stop_px, sink)
            }
            Err(reason) => self.reject(seq, a.account, reason, 0, sink),
        }
    }

    /// Every check an amend must pass; `decided`: stage R's margin decision for it, if R
    /// saw it.
    fn validate_amend(
        &self,
        decided: Option<crate::risk::Decision>,
        a: AmendOrder,
    ) -> Result<(u32, Qty, Option<Price>, Option<Price>), RejectReason> {
        let slot = self.owned_slot(a.account, a.order)?;
        let r = *self.orders.get(slot);
        let market = &self.markets[r.market.0 as usize];
        let inst = &market.inst;
        let untriggered = matches!(r.working, Working::Untriggered);
        if a.price.is_some() && !r.ord_type.has_limit_price() {
            return Err(RejectReason::UnexpectedPrice);
        }
        if a.stop_px.is_some() && !untriggered {
            return Err(RejectReason::UnexpectedPrice);
        }
        for p in [a.price, a.stop_px].into_iter().flatten() {
            if p.0 <= 0 {
                return Err(RejectReason::PriceNotPositive);
            }
            if p > inst.max_price {
                return Err(RejectReason::PriceTooLarge);
            }
        }
        if let Some(p) = a.price
            && !inst.within_band(p, market.mark)
        {
            return Err(RejectReason::PriceOutsideBand);
        }
        let qty = a.qty.unwrap_or(r.qty);
        if a.qty.is_some() {
            if qty.0 <= 0 {
                return Err(RejectReason::QtyNotPositive);
            }
            if qty.0 % inst.lot.0 != 0 {
                return Err(RejectReason::QtyNotMultipleOfLot);
            }
            if qty > inst.max_order_qty {
                return Err(RejectReason::QtyTooLarge);
            }
            if qty <= r.cum {
                return Err(RejectReason::InvalidAmend);
            }
        }
        let price = a.price.or(r.price);
        let stop_px = a.stop_px.or(r.stop_px);
        if qty == r.qty && price == r.price && stop_px == r.stop_px {
            return Err(RejectReason::InvalidAmend);
        }
        if let Working::Resting(_) = r.working
            && !r.is_reduce_only()
        {
            // Stage R decided this amend's margin, finally, as a new order's (`risk.rs`).
            if let Some(d) = decided {
                return match d.refusal {
                    Some(reason) => Err(reason),
                    None => Ok((slot, qty, price, stop_px)),
                };
            }
            debug_assert!(
                self.group.len() < self.group_applied as usize,
                "R decides every amend of a group that reaches its margin"
            );
            let leaves = qty - r.cum;
            let v = inst.value(leaves, price.expect("resting has a price")).abs();
            let am = self.accounts[self.pm(r.account, r.market)];
            if let Some(reason) = self.amend_refusal(&r, leaves, v, &am, 0) {
                return Err(reason);
            }
        }
        Ok((slot, qty, price, stop_px))
    }

    fn apply_amend<S: EventSink>(
        &mut self,
        seq: Seq,
        slot: u32,
        qty: Qty,
        price: Option<Price>,
        stop_px: Option<Price>,
        sink: &mut S,
    ) {
        let r = *self.orders.get(slot);
        let leaves = qty - r.cum;
        let amended = Event::OrderAmended { seq, order: r.id, qty, leaves, price };
        match r.working {
            Working::Untriggered => {
                self.unindex_trigger(slot);
                let rec = self.orders.get_mut(slot);
                rec.qty = qty;
                rec.leaves = leaves;
                rec.price = price;
                rec.stop_px = stop_px;
                self.index_trigger(slot);
                sink.emit(amended);
                self.fire_triggers(r.market);
            }
            Working::Resting(h) => {
                let m = r.market.0 as usize;
                self.unhold(slot);
                if price == r.price && leaves < r.leaves {
                    // Quantity down keeps time priority.
                    self.books[m].reduce(h, leaves);
                    let rec = self.orders.get_mut(slot);
                    rec.qty = qty;
                    rec.leaves = leaves;
                    self.hold(slot);
                    sink.emit(amended);
                } else {
                    // A price change or quantity up loses priority: out of the book, and
                    // back in through matching (an amended price may cross).
                    self.books[m].cancel(h);
                    let rec = self.orders.get_mut(slot);
                    rec.qty = qty;
                    rec.leaves = leaves;
                    rec.price = price;
                    rec.working = Working::Pending;
                    sink.emit(amended);
                    self.execute(seq, slot, sink);
                    self.fire_triggers(r.market);
                }
                if r.is_reduce_only() && self.orders.slot_of(r.id).is_some() {
                    // A ReduceOnly order amended up must still fit the position.
                    self.touched.push(r.account);
                    self.trim_touched(seq, r.market, sink);
                }
            }
            Working::Triggered => {
                // Not working anywhere yet: it executes, amended, when its segment ends.
                let rec = self.orders.get_mut(slot);
                rec.qty = qty;
                rec.leaves = leaves;
                rec.price = price;
                sink.emit(amended);
            }
            Working::Pending => unreachable!("no order is pending between commands"),
        }
    }

    fn cancel<S: EventSink>(&mut self, seq: Seq, account: AccountId, order: OrderId, sink: &mut S) {
        match self.owned_slot(account, order) {
            Ok(slot) => self.cancel_slot(seq, slot, CancelReason::Requested, sink),
            Err(reason) => self.reject(seq, account, reason, 0, sink),
        }
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
            if market.is_some_and(|x| x != m) {
                continue;
            }
            // Oldest first (the list's tail), so the events read in placement order: find
            // the tail once, then walk back — each cancel unlinks only the order itself.
            let mut s = self.accounts[self.pm(account, m)].head;
            while s != NIL && self.orders.next_in_list(s) != NIL {
                s = self.orders.next_in_list(s);
            }
            while s != NIL {
                let newer = self.orders.prev_in_list(s);
                self.cancel_slot(seq, s, CancelReason::Requested, sink);
                s = newer;
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

/// What one fill moves in money, recorded by matching and moved by `settle_fills`.
#[derive(Clone, Copy)]
struct FillMoney {
    /// The command whose match made the fill.
    seq: Seq,
    market: MarketId,
    /// The buyer's cost change (the seller's is −value).
    value: Money,
    /// Buyer's and seller's realised PnL.
    realised: [(AccountId, Money); 2],
    /// The taker's and the maker's nominal fees (the `Fill` event's).
    fees: [(AccountId, Money); 2],
}

/// The (account, currency) pairs fills changed, each listed once until taken: `refresh`
/// until the cross sums are refreshed (a segment's end), `check` until maintenance is
/// checked (the group's end).
pub(crate) struct Filled {
    refresh: Vec<(AccountId, Currency)>,
    check: Vec<(AccountId, Currency)>,
    refreshing: Vec<bool>,
    checking: Vec<bool>,
}

impl Filled {
    fn new(rows: usize) -> Filled {
        let n = rows * Currency::COUNT;
        Filled {
            refresh: Vec::with_capacity(n),
            check: Vec::with_capacity(n),
            refreshing: vec![false; n],
            checking: vec![false; n],
        }
    }

    fn at(account: AccountId, currency: Currency) -> usize {
        account.0 as usize * Currency::COUNT + currency.index()
    }

    fn note(&mut self, account: AccountId, currency: Currency) {
        let i = Filled::at(account, currency);
        if !self.refreshing[i] {
            self.refreshing[i] = true;
            self.refresh.push((account, currency));
        }
        if !self.checking[i] {
            self.checking[i] = true;
            self.check.push((account, currency));
        }
    }
}

/// Everything one match needs, borrowed apart from the book being matched.
struct Settlement<'a> {
    seq: Seq,
    market: MarketId,
    inst: &'a Instrument,
    last: &'a mut Option<Price>,
    orders: &'a mut Orders,
    positions: &'a mut [Position],
    accounts: &'a mut [AccountMarket],
    money: &'a mut Vec<FillMoney>,
    unsettled: &'a mut [Money],
    touched: &'a mut Vec<AccountId>,
    shards: &'a mut [AccountShard],
    market_cost: &'a mut i128,
    margin_cache: &'a mut [MarginCache],
    extra_margin: &'a mut [Money],
    filled: &'a mut Filled,
    liquidator: AccountId,
    n_markets: usize,
    taker: OrderRecord,
    taker_left: Qty,
}

impl Settlement<'_> {
    fn pm(&self, account: AccountId) -> usize {
        account.0 as usize * self.n_markets + self.market.0 as usize
    }

    fn on_match<S: EventSink>(&mut self, mt: Match, sink: &mut S) {
        match mt {
            Match::Fill { maker, maker_account, price, qty, maker_leaves, .. } => {
                self.fill(maker, maker_account, price, qty, maker_leaves, sink)
            }
            Match::SelfTradeCancel { maker, maker_account, leaves, .. } => {
                let slot = self.orders.slot_of(maker).expect("resting orders have records");
                self.forget_maker(slot);
                let seq = self.seq;
                let reason = CancelReason::SelfTrade;
                sink.emit(Event::OrderCanceled {
                    seq,
                    order: maker,
                    account: maker_account,
                    reason,
                    leaves,
                });
            }
        }
    }

    /// A maker left the book: drop its record and its margin hold.
    fn forget_maker(&mut self, slot: u32) {
        let r = *self.orders.get(slot);
        let i = self.pm(r.account);
        let am = &mut self.accounts[i];
        if r.held_value != 0 {
            am.sub(r.side, r.leaves.0, r.held_value);
        }
        let mut head = am.head;
        self.orders.unlink(&mut head, slot);
        let am = &mut self.accounts[i];
        am.head = head;
        am.open_orders -= 1;
        if r.is_reduce_only() {
            am.reduce_only -= 1;
        }
        self.orders.remove(slot);
    }

    fn fill<S: EventSink>(
        &mut self,
        maker: OrderId,
        maker_account: AccountId,
        price: Price,
        qty: Qty,
        maker_leaves: Qty,
        sink: &mut S,
    ) {
        let inst = self.inst;
        let currency = inst.settle;
        let taker_side = self.taker.side;
        let (buyer, seller) = match taker_side {
            Side::Buy => (self.taker.account, maker_account),
            Side::Sell => (maker_account, self.taker.account),
        };
        // The fill's value is computed once; the buyer's cost moves by +value, the
        // seller's by −value, and whatever leaves a cost enters that account's wallet.
        let value = inst.value(qty, price);
        let (bi, si) = (self.pm(buyer), self.pm(seller));
        let cost_before = self.positions[bi].cost as i128 + self.positions[si].cost as i128;
        let realised_buyer = self.positions[bi].apply_fill(Side::Buy, qty, value);
        let realised_seller = self.positions[si].apply_fill(Side::Sell, qty, value);
        *self.market_cost +=
            self.positions[bi].cost as i128 + self.positions[si].cost as i128 - cost_before;
        for (account, i) in [(buyer, bi), (seller, si)] {
            let pos = self.positions[i];
            if pos.qty == 0 {
                // A closed isolated position hands its transferred margin back.
                self.extra_margin[i] = 0;
            }
            self.margin_cache[i] = MarginCache::of(&pos, inst);
            let liquidator = account == self.liquidator;
            // The isolated count is as of the last refresh: if a fill since then opened or
            // closed the account's only isolated position, the refresh at the segment's end
            // flips it and re-marks every cross row of the account, this one among them.
            let beside = crate::remargin::iso_beside(self.shards, account, currency);
            let (cache, extra) = (&self.margin_cache[i], self.extra_margin[i]);
            let floor = crate::remargin::floor(&pos, cache, extra, liquidator, beside);
            crate::remargin::sync(self.shards, self.market, account, &pos, floor);
            self.filled.note(account, currency);
        }
        // The money moves when the taker's fills are done (`Engine::settle_fills`).
        let fee = |account: AccountId, rate| {
            // Liquidation orders trade without fees (the fund would only pay itself).
            if account == self.liquidator { 0 } else { inst.fee(value, rate) }
        };
        let taker_fee = fee(self.taker.account, inst.taker_fee);
        let maker_fee = fee(maker_account, inst.maker_fee);
        let (ti, mi) = (self.pm(self.taker.account), self.pm(maker_account));
        self.unsettled[bi] += realised_buyer;
        self.unsettled[si] += realised_seller;
        self.unsettled[ti] -= taker_fee;
        self.unsettled[mi] -= maker_fee;
        self.money.push(FillMoney {
            seq: self.seq,
            market: self.market,
            value,
            realised: [(buyer, realised_buyer), (seller, realised_seller)],
            fees: [(self.taker.account, taker_fee), (maker_account, maker_fee)],
        });
        // The maker's record.
        let slot = self.orders.slot_of(maker).expect("resting orders have records");
        let r = *self.orders.get(slot);
        if maker_leaves.0 == 0 {
            self.forget_maker(slot);
        } else {
            let i = self.pm(r.account);
            let v = if r.held_value != 0 {
                let v = inst.value(maker_leaves, r.price.expect("resting")).abs();
                self.accounts[i].sub(r.side, r.leaves.0, r.held_value);
                self.accounts[i].add(r.side, maker_leaves.0, v);
                v
            } else {
                0
            };
            let rec = self.orders.get_mut(slot);
            rec.leaves = maker_leaves;
            rec.cum += qty;
            rec.held_value = v;
        }
        self.taker_left -= qty;
        *self.last = Some(price);
        for account in [buyer, seller] {
            if self.accounts[self.pm(account)].reduce_only != 0 && !self.touched.contains(&account)
            {
                self.touched.push(account);
            }
        }
        if !self.touched.contains(&self.taker.account) {
            self.touched.push(self.taker.account);
        }
        sink.emit(Event::Fill {
            seq: self.seq,
            market: self.market,
            maker_order: maker,
            taker_order: self.taker.id,
            maker_account,
            taker_account: self.taker.account,
            taker_side,
            price,
            qty,
            value,
            maker_fee,
            taker_fee,
            maker_leaves,
            taker_leaves: self.taker_left,
        });
    }
}
