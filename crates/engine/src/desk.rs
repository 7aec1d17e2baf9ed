//! Stage M, one market: the matcher ("desk") that accepts, amends, cancels, matches and
//! fires that market's orders, over that market's state only.
//!
//! A `Desk` borrows exactly what matching one market writes — its book, its slice of the
//! order table, its trigger heaps, its rows of the per-(account, market) tables (`Rows`),
//! its running cost — plus scratch of its own (`Scratch`: the fills' money, the accounts
//! fills touched, the orders that fired) and, read-only, what stage R handed the segment
//! (decisions, `Basis`) and the liquidation queue's flags. It reads no account money and
//! no other market: fills' money settles when the segment ends (`Engine::settle_fills`),
//! and a closing order's bankruptcy limit comes from R's `Basis` and this market's own
//! unsettled fills. So the desks of a segment's markets can run at once, on different
//! threads, and come out exactly as sequence order does (DESIGN.md §2; property 6c).
//!
//! The serial engine runs every command through a desk too (`Engine::desk`), so there is
//! one matching code path for every topology.

use amdahl_book::{Book, Match, RestingOrder, Taker};
use amdahl_disjoint::{Rows, Work};
use amdahl_risk::{Instrument, Position};
use amdahl_types::{
    AccountId, AmendOrder, CancelReason, Command, Currency, Event, ExecInst, MarketId, Money,
    NewOrder, OrdType, OrderId, Price, Qty, RejectReason, Seq, Sequenced, Side, TimeInForce,
    TriggerRef,
};

use crate::engine::{Direction, Market, direction};
use crate::margin::AccountMarket;
use crate::orders::{NIL, OrderRecord, OrderSlice, Working};
use crate::remargin::{AccountShard, MarginCache};
use crate::risk::{Basis, Decision};
use crate::sink::EventSink;

/// One market's matcher, over borrowed state (see the module docs).
pub(crate) struct Desk<'a> {
    pub id: MarketId,
    pub n_markets: usize,
    pub market: &'a mut Market,
    pub book: &'a mut Book,
    pub orders: OrderSlice<'a>,
    pub positions: Rows<'a, Position>,
    pub accounts: Rows<'a, AccountMarket>,
    pub margin_cache: Rows<'a, MarginCache>,
    pub extra_margin: Rows<'a, Money>,
    /// What the market's unsettled fills will move each account's wallet by (realised
    /// PnL less nominal fees), for `closing_margin`.
    pub unsettled: Rows<'a, Money>,
    /// Σ position cost in the market, kept at every fill.
    pub market_cost: &'a mut i128,
    pub shards: Shards<'a>,
    pub scratch: &'a mut Scratch,
    /// Read-only, indexed `account × markets + market`: accounts queued for liquidation,
    /// and where R's `Basis` for the segment is (`NIL`: none).
    pub queued: &'a [bool],
    pub basis_at: &'a [u32],
    pub basis: &'a [Basis],
    /// User accounts (ids below this are known).
    pub users: u32,
    pub liquidator: AccountId,
    pub max_open_orders: u32,
    pub max_stop_orders: u32,
    /// Matching a segment's ordinary commands: fills settle when the segment ends, and a
    /// closing order reads R's `Basis`. Otherwise (a fired order, a liquidation) every
    /// earlier fill has settled, and `now_basis` is the order's account as it is now.
    pub settle_later: bool,
    pub now_basis: Option<(i128, i128)>,
}

/// Where fills put their positions' packed rows for the remargin pass.
pub(crate) enum Shards<'a> {
    /// At once (the matcher has the shards to itself).
    Own(&'a mut [AccountShard]),
    /// Read-only (other markets' matchers read them too): each fill's row goes in
    /// `Scratch::synced`, and the core writes them, in order, when the run is done.
    Shared(&'a [AccountShard]),
}

impl Shards<'_> {
    fn get(&self) -> &[AccountShard] {
        match self {
            Shards::Own(s) => s,
            Shards::Shared(s) => s,
        }
    }
}

/// A fill's position row, for the remargin pass, kept for the core (`Shards::Shared`).
#[derive(Clone, Copy)]
pub(crate) struct Synced {
    pub account: AccountId,
    pub pos: Position,
    pub floor: i64,
}

/// What matching leaves for the core: a matcher's own, so matchers share no list.
pub(crate) struct Scratch {
    /// Accounts whose position changed during one match and hold ReduceOnly orders.
    pub touched: Vec<AccountId>,
    /// Accounts whose positions fills changed: their cross sums are refreshed when the
    /// segment ends, their maintenance is checked when the group ends.
    pub filled: Filled,
    /// The money of the fills not yet settled, in fill order (`Engine::settle_fills`).
    pub fill_money: Vec<FillMoney>,
    /// Orders whose trigger was reached, in the order they fired, and the seq of the
    /// command each fired in: they execute when the segment ends.
    pub fired: Vec<OrderId>,
    pub fired_at: Vec<Seq>,
    /// `Shards::Shared`: the fills' position rows, in fill order.
    pub synced: Vec<Synced>,
}

impl Scratch {
    /// Room for `rows` accounts, and for fills as many as `makers` (an iceberg refilled
    /// within one take can exceed it once; the list then keeps its larger capacity).
    pub fn new(rows: usize, makers: usize) -> Scratch {
        Scratch {
            touched: Vec::with_capacity(1 << 16),
            filled: Filled::new(rows),
            fill_money: Vec::with_capacity(makers + 1),
            fired: Vec::with_capacity(1 << 10),
            fired_at: Vec::with_capacity(1 << 10),
            synced: Vec::with_capacity(2 * (makers + 1)),
        }
    }
}

/// One market's lane of a run (`Engine::apply_run`): its matcher's scratch, and its events,
/// each tagged with its command's place in the run.
pub(crate) struct Lane {
    pub scratch: Scratch,
    pub events: Vec<(u32, Event)>,
}

/// One market's share of a run of a segment's commands: its desk, the run, which lane
/// each command of the run is in, and stage R's decisions (found by seq). It runs
/// wherever it is sent (`amdahl_disjoint::Work`), alone with its market's state.
pub(crate) struct MatchJob<'a> {
    pub desk: Desk<'a>,
    pub lane: u32,
    pub run: &'a [Sequenced],
    pub lanes: &'a [u32],
    pub decisions: &'a [Decision],
    pub events: &'a mut Vec<(u32, Event)>,
}

impl Work for MatchJob<'_> {
    fn work(&mut self) {
        for (k, cmd) in self.run.iter().enumerate() {
            if self.lanes[k] != self.lane {
                continue;
            }
            let decided = match cmd.command {
                Command::Place(_) | Command::Amend(_) => decision(self.decisions, cmd.seq),
                _ => None,
            };
            let mut sink = Tagged { at: k as u32, out: self.events };
            self.desk.apply(cmd.seq, &cmd.command, decided, &mut sink);
        }
    }
}

/// Stage R's decision for command `seq`, if it made one (`decisions` are in seq order).
pub(crate) fn decision(decisions: &[Decision], seq: Seq) -> Option<Decision> {
    let at = decisions.binary_search_by_key(&seq, |d| d.seq).ok()?;
    Some(decisions[at])
}

/// Events of one command of a run, tagged with its place in the run.
pub(crate) struct Tagged<'b> {
    pub at: u32,
    pub out: &'b mut Vec<(u32, Event)>,
}

impl EventSink for Tagged<'_> {
    #[inline]
    fn emit(&mut self, event: Event) {
        self.out.push((self.at, event));
    }
}

/// What one fill moves in money, recorded by matching and moved by `settle_fills`.
#[derive(Clone, Copy)]
pub(crate) struct FillMoney {
    /// The command whose match made the fill.
    pub seq: Seq,
    pub market: MarketId,
    /// The buyer's cost change (the seller's is −value).
    pub value: Money,
    /// Buyer's and seller's realised PnL.
    pub realised: [(AccountId, Money); 2],
    /// The taker's and the maker's nominal fees (the `Fill` event's).
    pub fees: [(AccountId, Money); 2],
}

/// The (account, currency) pairs fills changed, each listed once until taken: `refresh`
/// until the cross sums are refreshed (a segment's end), `check` until maintenance is
/// checked (the group's end).
pub(crate) struct Filled {
    pub refresh: Vec<(AccountId, Currency)>,
    pub check: Vec<(AccountId, Currency)>,
    pub refreshing: Vec<bool>,
    pub checking: Vec<bool>,
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

    pub fn at(account: AccountId, currency: Currency) -> usize {
        account.0 as usize * Currency::COUNT + currency.index()
    }

    pub fn note(&mut self, account: AccountId, currency: Currency) {
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

/// An order matched, to finish (`Desk::finish_order`): what is left of it, and whether its
/// limit was narrowed to its bankruptcy price.
pub(crate) struct Taken {
    left: Qty,
    narrowed: bool,
}

/// A new or amended order's limit and stop prices: positive, on the ladder, and the limit
/// inside the band around the mark.
fn prices_refusal(
    inst: &Instrument,
    mark: Price,
    price: Option<Price>,
    stop_px: Option<Price>,
) -> Result<(), RejectReason> {
    for p in [price, stop_px].into_iter().flatten() {
        if p.0 <= 0 {
            return Err(RejectReason::PriceNotPositive);
        }
        if p > inst.max_price {
            return Err(RejectReason::PriceTooLarge);
        }
    }
    if let Some(p) = price
        && !inst.within_band(p, mark)
    {
        return Err(RejectReason::PriceOutsideBand);
    }
    Ok(())
}

/// Take an order's record out of the table and out of its account's aggregates in the
/// market: its margin hold, its place in the account's list, its counts.
fn remove_record(
    orders: &mut OrderSlice<'_>,
    accounts: &mut Rows<'_, AccountMarket>,
    slot: u32,
) -> OrderRecord {
    let r = *orders.get(slot);
    let am = &mut accounts[r.account];
    if r.held_value != 0 {
        am.sub(r.side, r.leaves.0, r.held_value);
    }
    let mut head = am.head;
    orders.unlink(&mut head, slot);
    let am = &mut accounts[r.account];
    am.head = head;
    am.open_orders -= 1;
    if r.is_reduce_only() {
        am.reduce_only -= 1;
    }
    if matches!(r.working, Working::Untriggered) {
        am.stop_orders -= 1;
    }
    orders.remove(slot)
}

pub(crate) fn reject<S: EventSink>(
    seq: Seq,
    account: AccountId,
    reason: RejectReason,
    client_tag: u64,
    sink: &mut S,
) {
    sink.emit(Event::Rejected { seq, account, reason, client_tag });
}

impl Desk<'_> {
    /// Row `account × markets + market` of the engine's read-only tables.
    #[inline]
    fn pm(&self, account: AccountId) -> usize {
        account.0 as usize * self.n_markets + self.id.0 as usize
    }

    fn known_account(&self, account: AccountId) -> bool {
        account.0 < self.users
    }

    /// A command naming this market (`Engine::lane`): a new order, an amend, a cancel, or
    /// a cancel-all of this market. `decided`: R's decision for it, if R made one.
    pub fn apply<S: EventSink>(
        &mut self,
        seq: Seq,
        command: &Command,
        decided: Option<Decision>,
        sink: &mut S,
    ) {
        match *command {
            Command::Place(o) => self.place(seq, o, decided, sink),
            Command::Amend(a) => self.amend(seq, a, decided, sink),
            Command::Cancel { account, order } => self.cancel(seq, account, order, sink),
            Command::CancelAll { account, .. } => {
                if !self.known_account(account) {
                    return reject(seq, account, RejectReason::UnknownAccount, 0, sink);
                }
                self.cancel_all(seq, account, sink)
            }
            _ => unreachable!("not a command of one market"),
        }
    }

    // ---- placing orders ----

    pub fn place<S: EventSink>(
        &mut self,
        seq: Seq,
        order: NewOrder,
        decided: Option<Decision>,
        sink: &mut S,
    ) {
        let o = match self.validate_new(decided, order) {
            Ok(o) => o,
            Err(reason) => return reject(seq, order.account, reason, order.client_tag, sink),
        };
        let conditional = o.ord_type.is_conditional();
        let slot = self.accept(seq, &o, sink);
        if conditional {
            self.index_trigger(slot);
        } else {
            self.execute(seq, slot, sink);
        }
        self.fire_triggers(seq);
    }

    /// Every check a new order must pass; returns the (possibly resolved) order.
    /// `decided`: stage R's margin decision for the order.
    fn validate_new(
        &self,
        decided: Option<Decision>,
        mut o: NewOrder,
    ) -> Result<NewOrder, RejectReason> {
        debug_assert_eq!(o.market, self.id);
        if !self.known_account(o.account) {
            return Err(RejectReason::UnknownAccount);
        }
        if o.exec_inst.contains(ExecInst::ALL_OR_NONE) {
            return Err(RejectReason::AllOrNoneRemoved);
        }
        let market = &*self.market;
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
        prices_refusal(inst, market.mark, o.price, o.stop_px)?;
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
        if self.queued[self.pm(o.account)] && !o.exec_inst.is_reduce_only() {
            return Err(RejectReason::InLiquidation);
        }
        let am = &self.accounts[o.account];
        if am.open_orders >= self.max_open_orders {
            return Err(RejectReason::TooManyOpenOrders);
        }
        if o.ord_type.is_conditional() && am.stop_orders >= self.max_stop_orders {
            return Err(RejectReason::TooManyStopOrders);
        }
        if o.exec_inst.is_reduce_only() && !o.ord_type.is_conditional() {
            let reducible = self.reducible(o.account, o.side);
            if close && o.qty.0 == 0 {
                let pos = self.positions[o.account].qty;
                if pos == 0 {
                    return Err(RejectReason::NoPositionToClose);
                }
                // Close without a quantity: the whole position, on the closing side.
                o.side = if pos > 0 { Side::Sell } else { Side::Buy };
                o.qty = Qty(self.reducible(o.account, o.side));
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
            && self.book.would_cross(o.side, p)
        {
            return Err(RejectReason::PostOnlyWouldCross);
        }
        if !o.exec_inst.is_reduce_only() && !o.ord_type.is_conditional() {
            // Stage R decided this order's margin before its segment was matched, and the
            // decision is final (DESIGN.md §2, `risk.rs`): M does not read the account's
            // money to accept it. R decides every order that gets this far, even one
            // applied outside `begin_group` (`Engine::apply` runs R for it alone).
            let d = decided.expect("stage R decides every order that reaches its margin");
            if let Some(reason) = d.refusal {
                return Err(reason);
            }
        }
        // A market's book holds only records of its slice, so it is never the one full.
        if !self.order_room() {
            return Err(RejectReason::CapacityExhausted);
        }
        Ok(o)
    }

    /// Can the market accept one more order: a free record, and a number left to give it?
    fn order_room(&self) -> bool {
        !self.orders.is_full() && self.market.next_order <= OrderId::MAX_NUMBER
    }

    /// How many contracts an order on `side` can still reduce: the opposite position less
    /// the leaves of ReduceOnly orders already working on that side.
    pub fn reducible(&self, account: AccountId, side: Side) -> i64 {
        let pos = self.positions[account].qty;
        let closable = match side {
            Side::Buy => (-pos).max(0),
            Side::Sell => pos.max(0),
        };
        let mut working = 0;
        let mut s = self.accounts[account].head;
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

    /// An order that reduces its account's position may not trade past the position's
    /// bankruptcy price: there the loss it realises would exceed the margin behind the
    /// position, and the wallet could not pay it (the insurance fund would, and an empty
    /// fund halts the engine). Returns `limit` narrowed to the bankruptcy price where it
    /// reaches past it; the rest of the order is then treated as out of price range.
    /// The liquidation engine, which works positions out at their bankruptcy price by
    /// design, is exempt.
    fn solvent_limit(&self, account: AccountId, side: Side, limit: Option<Price>) -> Option<Price> {
        let pos = &self.positions[account];
        let reduces = match side {
            Side::Buy => pos.qty < 0,
            Side::Sell => pos.qty > 0,
        };
        if !reduces || account == self.liquidator {
            return limit;
        }
        let inst = &self.market.inst;
        let worst = limit.unwrap_or(self.market.protection_price(side));
        // Solvent at the worst price: the position's value there covers cost − margin (the
        // usual case: one valuation, no search; no margin either where closing there
        // realises no loss at all).
        let value = inst.value(Qty(pos.qty), worst) as i128;
        if value >= pos.cost as i128 {
            return limit;
        }
        let margin = self.closing_margin(account);
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
    /// does for a maker. Elsewhere every fill has settled, and the engine hands the
    /// account as it is now (`now_basis`).
    ///
    /// R keeps a `Basis` wherever one may be read (`note_basis`), and the engine hands a
    /// settled order its account (`now_basis`); the debug assertions hold both. Were either
    /// missing in a release build, this is in the middle of a command (the order is
    /// accepted), so it does not panic: it takes no margin at all, and the order trades
    /// only where it realises no loss beyond its own market's unsettled gains.
    fn closing_margin(&self, account: AccountId) -> Money {
        let known = if self.settle_later {
            let at = self.basis_at[self.pm(account)];
            debug_assert!(
                at != NIL,
                "no Basis for a closing order of ({account:?}, {:?})",
                self.id
            );
            (at != NIL).then(|| {
                let b = &self.basis[at as usize];
                (b.wallet as i128, b.elsewhere)
            })
        } else {
            debug_assert!(self.now_basis.is_some(), "a settled order without its account");
            self.now_basis
        };
        let (wallet, elsewhere) = known.unwrap_or((0, 0));
        let wallet = wallet + self.unsettled[account] as i128;
        let backing = crate::liquidation::backing(
            &self.positions[account],
            &self.margin_cache[account],
            self.extra_margin[account],
            wallet,
            elsewhere,
        );
        crate::liquidation::bankruptcy_margin_of(backing, wallet)
    }

    /// Give an order that passed its checks an id and a record, and announce it. Returns
    /// its slot; the caller then indexes its trigger or executes it.
    #[inline(always)] // see `Engine::next_segment`
    pub fn accept<S: EventSink>(&mut self, seq: Seq, o: &NewOrder, sink: &mut S) -> u32 {
        let id = OrderId::new(o.market, self.market.next_order);
        self.market.next_order += 1;
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

    fn add_record(&mut self, record: OrderRecord) -> u32 {
        let slot = self.orders.insert(record).expect("capacity checked before acceptance");
        let a = record.account;
        let mut head = self.accounts[a].head;
        self.orders.link(&mut head, slot);
        let am = &mut self.accounts[a];
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
        remove_record(&mut self.orders, &mut self.accounts, slot)
    }

    /// Count a resting order's leaves in its account's order-margin aggregates.
    fn hold(&mut self, slot: u32) {
        let r = *self.orders.get(slot);
        if r.is_reduce_only() || r.held_value != 0 || r.leaves.0 == 0 {
            return;
        }
        let price = r.price.expect("a resting order has a limit price");
        let v = self.market.inst.value(r.leaves, price).abs();
        self.accounts[r.account].add(r.side, r.leaves.0, v);
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
        self.accounts[r.account].sub(r.side, r.leaves.0, r.held_value);
        self.orders.get_mut(slot).held_value = 0;
    }

    /// Run an accepted (or triggered, or re-priced) order: match it, then rest, cancel or
    /// finish it according to its type and time in force.
    pub fn execute<S: EventSink>(&mut self, seq: Seq, slot: u32, sink: &mut S) {
        if let Some(taken) = self.match_order(seq, slot, sink) {
            self.finish_order(seq, slot, taken, sink);
        }
    }

    /// `execute`'s matching: `None` if the order was cancelled before it could match.
    pub fn match_order<S: EventSink>(
        &mut self,
        seq: Seq,
        slot: u32,
        sink: &mut S,
    ) -> Option<Taken> {
        let r = *self.orders.get(slot);
        if r.exec_inst.is_post_only()
            && let Some(p) = r.price
            && self.book.would_cross(r.side, p)
        {
            self.cancel_slot(seq, slot, CancelReason::PostOnlyWouldCross, sink);
            return None;
        }
        let limit = match r.ord_type {
            OrdType::Market => Some(self.market.protection_price(r.side)),
            _ => r.price,
        };
        let solvent = self.solvent_limit(r.account, r.side, limit);
        // Narrowed: the order reached past its position's bankruptcy price. It trades up
        // to that price and its remainder does not rest (resting out there, it would be
        // filled past it later).
        let narrowed = solvent != limit;
        let limit = solvent;
        if r.time_in_force == TimeInForce::FillOrKill
            && self.book.fillable(r.side, limit, r.account, r.leaves) < r.leaves
        {
            self.cancel_slot(seq, slot, CancelReason::FillOrKill, sink);
            return None;
        }
        let left = self.take(seq, slot, limit, sink);
        Some(Taken { left, narrowed })
    }

    /// `execute` after the match: rest, cancel or finish the order.
    pub fn finish_order<S: EventSink>(&mut self, seq: Seq, slot: u32, t: Taken, sink: &mut S) {
        let Taken { left, narrowed } = t;
        let r = {
            let rec = self.orders.get_mut(slot);
            rec.leaves = left;
            rec.cum = rec.qty - left;
            *rec
        };
        self.trim_touched(seq, sink);
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
            let allowed = self.reducible(r.account, r.side);
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
        match self.book.rest(resting) {
            Ok(handle) => {
                self.orders.get_mut(slot).working = Working::Resting(handle);
                self.hold(slot);
            }
            Err(_) => self.cancel_slot(seq, slot, CancelReason::ImmediateOrCancel, sink),
        }
    }

    /// Match the order in `slot` against the book, recording every fill (its money moves
    /// when `Engine::settle_fills` runs). Returns leaves.
    fn take<S: EventSink>(
        &mut self,
        seq: Seq,
        slot: u32,
        limit: Option<Price>,
        sink: &mut S,
    ) -> Qty {
        let r = *self.orders.get(slot);
        let taker = Taker { id: r.id, account: r.account, side: r.side, limit, qty: r.leaves };
        let Desk {
            id,
            market,
            book,
            orders,
            positions,
            accounts,
            margin_cache,
            extra_margin,
            unsettled,
            market_cost,
            shards,
            scratch,
            liquidator,
            ..
        } = self;
        let market = &mut **market;
        let mut ctx = Settlement {
            seq,
            market: *id,
            inst: &market.inst,
            last: &mut market.last,
            orders,
            positions,
            accounts,
            unsettled,
            shards,
            scratch,
            market_cost,
            margin_cache,
            extra_margin,
            liquidator: *liquidator,
            taker: r,
            taker_left: r.leaves,
        };
        book.take(taker, |mt| ctx.on_match(mt, sink))
    }

    /// ReduceOnly orders must never exceed the position they reduce: after a match, trim
    /// (least aggressive first) or cancel them for every account whose position changed.
    fn trim_touched<S: EventSink>(&mut self, seq: Seq, sink: &mut S) {
        while let Some(account) = self.scratch.touched.pop() {
            for side in [Side::Buy, Side::Sell] {
                loop {
                    let excess = -self.reducible(account, side);
                    if excess <= 0 {
                        break;
                    }
                    let Some(slot) = self.least_aggressive_reduce_only(account, side) else {
                        break;
                    };
                    let r = *self.orders.get(slot);
                    if r.leaves.0 <= excess {
                        self.cancel_slot(seq, slot, CancelReason::ReduceOnly, sink);
                    } else {
                        let new_leaves = Qty(r.leaves.0 - excess);
                        if let Working::Resting(h) = r.working {
                            self.book.reduce(h, new_leaves);
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

    fn least_aggressive_reduce_only(&self, account: AccountId, side: Side) -> Option<u32> {
        let mut best: Option<(u32, i64, u64)> = None;
        let mut s = self.accounts[account].head;
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
    pub fn cancel_slot<S: EventSink>(
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
                self.book.cancel(h);
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
        self.market.triggers.insert(t, dir, stop, id, slot);
    }

    fn unindex_trigger(&mut self, slot: u32) {
        let r = *self.orders.get(slot);
        let (t, dir, _) = Self::trigger_key(&r);
        let removed = self.market.triggers.remove(t, dir, slot);
        debug_assert!(removed, "untriggered order missing from the trigger index");
    }

    /// The next conditional order whose trigger has been reached, if any: references in
    /// the order Mark, Last, Index; rising before falling; within a set, the stop nearest
    /// the side it was crossed from first, then the older order.
    fn next_triggered(&self) -> Option<OrderId> {
        let m = &*self.market;
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
    /// (`Engine::execute_fired`), which announces it. Matching does not look at the
    /// account's money for it; stage R decides it then, from the state the segment left.
    /// `seq`: the command being applied.
    #[inline]
    pub fn fire_triggers(&mut self, seq: Seq) {
        while let Some(id) = self.next_triggered() {
            let slot = self.orders.slot_of(id).expect("indexed orders are live");
            self.unindex_trigger(slot);
            let r = *self.orders.get(slot);
            let now = r.ord_type.triggered();
            self.accounts[r.account].stop_orders -= 1;
            let rec = self.orders.get_mut(slot);
            rec.ord_type = now;
            rec.working = Working::Triggered;
            self.scratch.fired.push(id);
            self.scratch.fired_at.push(seq);
        }
    }

    // ---- amend and cancel ----

    fn owned_slot(&self, account: AccountId, order: OrderId) -> Result<u32, RejectReason> {
        if !self.known_account(account) {
            return Err(RejectReason::UnknownAccount);
        }
        debug_assert_eq!(order.market(), self.id);
        let slot = self.orders.slot_of(order).ok_or(if self.market.issued(order.number()) {
            RejectReason::OrderNotOpen
        } else {
            RejectReason::UnknownOrder
        })?;
        if self.orders.get(slot).account != account {
            return Err(RejectReason::NotYourOrder);
        }
        Ok(slot)
    }

    fn amend<S: EventSink>(
        &mut self,
        seq: Seq,
        a: AmendOrder,
        decided: Option<Decision>,
        sink: &mut S,
    ) {
        match self.validate_amend(decided, a) {
            Ok((slot, qty, price, stop_px)) => {
                self.apply_amend(seq, slot, qty, price, stop_px, sink)
            }
            Err(reason) => reject(seq, a.account, reason, 0, sink),
        }
    }

    /// Every check an amend must pass; `decided`: stage R's margin decision for it.
    fn validate_amend(
        &self,
        decided: Option<Decision>,
        a: AmendOrder,
    ) -> Result<(u32, Qty, Option<Price>, Option<Price>), RejectReason> {
        let slot = self.owned_slot(a.account, a.order)?;
        let r = *self.orders.get(slot);
        let market = &*self.market;
        let inst = &market.inst;
        let untriggered = matches!(r.working, Working::Untriggered);
        if a.price.is_some() && !r.ord_type.has_limit_price() {
            return Err(RejectReason::UnexpectedPrice);
        }
        if a.stop_px.is_some() && !untriggered {
            return Err(RejectReason::UnexpectedPrice);
        }
        prices_refusal(inst, market.mark, a.price, a.stop_px)?;
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
            let d = decided.expect("stage R decides every amend that reaches its margin");
            if let Some(reason) = d.refusal {
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
                self.fire_triggers(seq);
            }
            Working::Resting(h) => {
                self.unhold(slot);
                if price == r.price && leaves < r.leaves {
                    // Quantity down keeps time priority.
                    self.book.reduce(h, leaves);
                    let rec = self.orders.get_mut(slot);
                    rec.qty = qty;
                    rec.leaves = leaves;
                    self.hold(slot);
                    sink.emit(amended);
                } else {
                    // A price change or quantity up loses priority: out of the book, and
                    // back in through matching (an amended price may cross).
                    self.book.cancel(h);
                    let rec = self.orders.get_mut(slot);
                    rec.qty = qty;
                    rec.leaves = leaves;
                    rec.price = price;
                    rec.working = Working::Pending;
                    sink.emit(amended);
                    self.execute(seq, slot, sink);
                    self.fire_triggers(seq);
                }
                if r.is_reduce_only() && self.orders.slot_of(r.id).is_some() {
                    // A ReduceOnly order amended up must still fit the position.
                    self.scratch.touched.push(r.account);
                    self.trim_touched(seq, sink);
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
            Err(reason) => reject(seq, account, reason, 0, sink),
        }
    }

    /// Cancel every order of the (known) account in this market.
    pub fn cancel_all<S: EventSink>(&mut self, seq: Seq, account: AccountId, sink: &mut S) {
        // Oldest first (the list's tail), so the events read in placement order: find the
        // tail once, then walk back — each cancel unlinks only the order itself.
        let mut s = self.accounts[account].head;
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

/// Everything one match needs, borrowed from the desk apart from the book being matched.
struct Settlement<'b, 'a> {
    seq: Seq,
    market: MarketId,
    inst: &'b Instrument,
    last: &'b mut Option<Price>,
    orders: &'b mut OrderSlice<'a>,
    positions: &'b mut Rows<'a, Position>,
    accounts: &'b mut Rows<'a, AccountMarket>,
    unsettled: &'b mut Rows<'a, Money>,
    shards: &'b mut Shards<'a>,
    scratch: &'b mut Scratch,
    market_cost: &'b mut i128,
    margin_cache: &'b mut Rows<'a, MarginCache>,
    extra_margin: &'b mut Rows<'a, Money>,
    liquidator: AccountId,
    taker: OrderRecord,
    taker_left: Qty,
}

impl Settlement<'_, '_> {
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
        remove_record(self.orders, self.accounts, slot);
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
        let cost_before = self.positions[buyer].cost as i128 + self.positions[seller].cost as i128;
        let realised_buyer = self.positions[buyer].apply_fill(Side::Buy, qty, value);
        let realised_seller = self.positions[seller].apply_fill(Side::Sell, qty, value);
        *self.market_cost +=
            self.positions[buyer].cost as i128 + self.positions[seller].cost as i128 - cost_before;
        for account in [buyer, seller] {
            let pos = self.positions[account];
            if pos.qty == 0 {
                // A closed isolated position hands its transferred margin back.
                self.extra_margin[account] = 0;
            }
            self.margin_cache[account] = MarginCache::of(&pos, inst);
            let liquidator = account == self.liquidator;
            // The isolated count is as of the last refresh: if a fill since then opened or
            // closed the account's only isolated position, the refresh at the segment's end
            // flips it and re-marks every cross row of the account, this one among them.
            let beside = crate::remargin::iso_beside(self.shards.get(), account, currency);
            let (cache, extra) = (&self.margin_cache[account], self.extra_margin[account]);
            let floor = crate::remargin::floor(&pos, cache, extra, liquidator, beside);
            match self.shards {
                Shards::Own(shards) => {
                    crate::remargin::sync(shards, self.market, account, &pos, floor)
                }
                Shards::Shared(_) => self.scratch.synced.push(Synced { account, pos, floor }),
            }
            self.scratch.filled.note(account, currency);
        }
        // The money moves when the segment's fills are done (`Engine::settle_fills`).
        let fee = |account: AccountId, rate| {
            // Liquidation orders trade without fees (the fund would only pay itself).
            if account == self.liquidator { 0 } else { inst.fee(value, rate) }
        };
        let taker_fee = fee(self.taker.account, inst.taker_fee);
        let maker_fee = fee(maker_account, inst.maker_fee);
        self.unsettled[buyer] += realised_buyer;
        self.unsettled[seller] += realised_seller;
        self.unsettled[self.taker.account] -= taker_fee;
        self.unsettled[maker_account] -= maker_fee;
        self.scratch.fill_money.push(FillMoney {
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
            let v = if r.held_value != 0 {
                let v = inst.value(maker_leaves, r.price.expect("resting")).abs();
                self.accounts[r.account].sub(r.side, r.leaves.0, r.held_value);
                self.accounts[r.account].add(r.side, maker_leaves.0, v);
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
        let touched = &mut self.scratch.touched;
        for account in [buyer, seller] {
            if self.accounts[account].reduce_only != 0 && !touched.contains(&account) {
                touched.push(account);
            }
        }
        if !touched.contains(&self.taker.account) {
            touched.push(self.taker.account);
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
