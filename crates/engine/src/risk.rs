//! Stage R: pre-trade risk of a group (DESIGN.md §2).
//!
//! Within group g a new order's margin is checked against its account as of the end of
//! group g−1, plus the reservations R made earlier in g — not against the state matching
//! has reached by then. R's decision is final: M matches the orders R accepted and
//! refuses the ones it refused, and never looks at the account's money to accept one. So
//! R is a pure function of (the state R starts from, the commands it decides), depends on
//! nothing but the order's own account, and runs per account shard before any command it
//! decides is matched; the shards' decisions merge by sequence number. That is what lets
//! matching leave account state alone.
//!
//! What R decides: the risk limit and the available balance for new orders that open
//! exposure (not ReduceOnly, not conditional), the available balance for amends of
//! resting orders that open exposure, and both for stop and if-touched orders that fire
//! and open exposure. An amend reserves the growth it gives its order, so that a later
//! order of the segment cannot promise the same balance twice.
//!
//! **Segments.** Some commands change what R reads in ways R does not model: a mark,
//! index or clock command moves every position's margin; a withdrawal, a margin transfer,
//! a leverage or risk-limit change and a liquidation move one account's. Each such command
//! ends a segment: R decides the group up to and including it, M applies that much, and R
//! decides the next segment from the state M has reached (`segment_len`). An amend of an
//! order placed earlier in the segment, which R cannot look up yet, begins the next one.
//! Segments are a function of the group's commands and the state at their start, fixed
//! before M applies them.
//!
//! **Closing orders.** R also keeps, for each (account, market) an order or amend of the
//! segment names, the account's `Basis` as the segment begins: its wallet and what it
//! commits in the currency's other markets. Matching works a closing order's bankruptcy
//! price from it (`Engine::closing_margin`), since fills' money settles only when the
//! segment ends.
//!
//! **Fired orders.** A stop or if-touched order whose trigger M reaches waits, holding
//! nothing, until its segment ends (`Engine::execute_fired`); there R decides it as a new
//! order, against the state the segment left plus the reservations of the orders fired
//! before it (`decide_fired`), and M executes it, announcing the trigger then. So the
//! segment's other orders were decided without it, and it is decided after them: an order
//! later in the segment may take the balance a stop fired earlier would have needed.
//!
//! Consequence, by design: what R does not model, it does not see until the segment
//! ends. An order does not see the fills, fees or deposits earlier in its segment (a fill
//! costs what its order reserved, give or take the fee and posComm against the
//! reservation's two fees, plus, away from the mark, its unrealised loss inside the price
//! band; liquidation at maintenance margin covers that), and an IOC's reservation
//! outlives its cancel. The contract is the journal's cuts: the same commands with the
//! same cuts give the same events in every topology. A group of one command is checked
//! against the state every earlier command left, exactly as a one-command-at-a-time
//! engine would.

use amdahl_types::{
    AccountId, AmendOrder, Command, Currency, ExecInst, MarketId, Money, NewOrder, OrderId, Price,
    Qty, RejectReason, Seq, Sequenced, Side,
};

use crate::engine::Engine;
use crate::margin::AccountMarket;
use crate::orders::{NIL, Working};

/// R's decision on one new order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Decision {
    /// The order's command.
    pub seq: Seq,
    /// Why R refused it, or `None`: accepted and reserved.
    pub refusal: Option<RejectReason>,
}

/// What a closing order's bankruptcy price is worked from, as R sees the account when the
/// segment begins: its wallet, and what it commits in the currency's other markets
/// (`Engine::cross_elsewhere`). Matching reads no account money within a segment, so it
/// works from this, moved by its own market's fills since (`Engine::closing_margin`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Basis {
    pub account: AccountId,
    pub market: MarketId,
    pub wallet: Money,
    pub elsewhere: i128,
}

/// One account shard's part of stage R: the group's reservations for its accounts, and
/// its decisions in sequence order. Capacity is reserved up front; a group with more new
/// orders than that grows it once. (`Default`: an empty place left while the shard is
/// away on a helper thread.)
#[derive(Default)]
pub(crate) struct RiskShard {
    /// The shard's accounts: `first..end`.
    first: u32,
    end: u32,
    markets: usize,
    /// Per (local account, market): where its reserved aggregates sit in `reserved`.
    reserved_at: Vec<u32>,
    /// (index into `reserved_at`, the account's aggregates with the group's reservations).
    reserved: Vec<(u32, AccountMarket)>,
    /// Per (local account, currency): where the hold reserved so far sits in `held`.
    held_at: Vec<u32>,
    held: Vec<(u32, Money)>,
    /// In sequence order.
    pub decisions: Vec<Decision>,
    /// Per (local account, market): what `note_basis` knows of it this segment (`UNSEEN`,
    /// `SEEN`, `NOTED`), and the places it marked; and the entries, one per (account,
    /// market) that may hold a closing order.
    basis_mark: Vec<u8>,
    marked: Vec<u32>,
    pub basis: Vec<Basis>,
}

/// `RiskShard::basis_mark`: nothing yet; an order of the segment named it, and needed no
/// `Basis` (`Engine::note_basis`); its `Basis` is kept.
const UNSEEN: u8 = 0;
const SEEN: u8 = 1;
const NOTED: u8 = 2;

/// New orders per group a shard has room for before it grows.
const GROUP_ORDERS: usize = 4096;

impl RiskShard {
    pub fn new(first: u32, end: u32, markets: usize) -> RiskShard {
        let local = (end - first) as usize;
        RiskShard {
            first,
            end,
            markets,
            reserved_at: vec![NIL; local * markets],
            reserved: Vec::with_capacity(GROUP_ORDERS),
            held_at: vec![NIL; local * Currency::COUNT],
            held: Vec::with_capacity(GROUP_ORDERS),
            decisions: Vec::with_capacity(GROUP_ORDERS),
            basis_mark: vec![UNSEEN; local * markets],
            marked: Vec::with_capacity(GROUP_ORDERS),
            basis: Vec::with_capacity(GROUP_ORDERS),
        }
    }

    fn owns(&self, account: AccountId) -> bool {
        (self.first..self.end).contains(&account.0)
    }

    /// Forget the segment: its reservations and decisions.
    pub fn clear(&mut self) {
        for &(at, _) in &self.reserved {
            self.reserved_at[at as usize] = NIL;
        }
        for &(at, _) in &self.held {
            self.held_at[at as usize] = NIL;
        }
        for &at in &self.marked {
            self.basis_mark[at as usize] = UNSEEN;
        }
        self.marked.clear();
        self.reserved.clear();
        self.held.clear();
        self.decisions.clear();
        self.basis.clear();
    }
}

impl Engine {
    /// How many of `rest`'s commands make the segment that starts it: up to and including
    /// the first command that changes what R reads in a way R does not model (see the
    /// module's "Segments"), or all of them.
    pub(crate) fn segment_len(&self, rest: &[Sequenced]) -> usize {
        for (i, cmd) in rest.iter().enumerate() {
            // An id the engine has not given out yet can only name an order placed earlier
            // in this segment, which R cannot look up: the amend opens the next segment,
            // where the order is M's and R's alike. (An id given out before names a live
            // order, or one M refuses as not open. First in its segment, the amend meets
            // the state R saw: there the order does not exist, and M refuses it.)
            if i > 0 && matches!(cmd.command, Command::Amend(a) if !self.issued(a.order)) {
                return i;
            }
            if self.ends_segment(&cmd.command) {
                return i + 1;
            }
        }
        rest.len()
    }

    pub(crate) fn ends_segment(&self, command: &Command) -> bool {
        match command {
            Command::Mark { .. }
            | Command::Index { .. }
            | Command::IndexPrice { .. }
            | Command::Tick
            | Command::Withdraw { .. }
            | Command::TransferMargin { .. }
            | Command::SetLeverage { .. }
            | Command::SetRiskLimit { .. }
            | Command::Liquidate { .. } => true,
            Command::Deposit { .. }
            | Command::Place(_)
            | Command::Amend(_)
            | Command::Cancel { .. }
            | Command::CancelAll { .. } => false,
        }
    }

    /// Stage R for one account shard: decide the margin of every new order and every amend
    /// of a resting order of its accounts in `segment`, against the state M has reached
    /// plus the reservations made earlier in the segment. Reads the engine only.
    pub(crate) fn risk_pass(&self, segment: &[Sequenced], shard: &mut RiskShard) {
        for cmd in segment {
            match &cmd.command {
                Command::Place(o) if shard.owns(o.account) => {
                    // A Close order without a quantity takes the closing side when M
                    // accepts it, whichever that is then.
                    let whole = o.exec_inst.contains(ExecInst::CLOSE) && o.qty.0 == 0;
                    let side = (!whole).then_some(o.side);
                    self.note_basis(shard, o.account, o.market, side, o.price);
                    if self.margin_checkable(o) {
                        let refusal =
                            self.reserve_order(shard, o.account, o.market, o.side, o.qty, o.price);
                        shard.decisions.push(Decision { seq: cmd.seq, refusal });
                    }
                }
                Command::Amend(a) if shard.owns(a.account) => {
                    if let Some(slot) = self.orders.slot_of(a.order) {
                        let r = self.orders.get(slot);
                        let price = a.price.or(r.price);
                        self.note_basis(shard, a.account, a.order.market(), Some(r.side), price);
                    }
                    if let Some(refusal) = self.reserve_amend(shard, a) {
                        shard.decisions.push(Decision { seq: cmd.seq, refusal });
                    }
                }
                _ => {}
            }
        }
    }

    /// Keep the account's `Basis` in `market` as the segment begins, once per segment, for
    /// an order or amend on `side` (`None`: either) whose bankruptcy limit may read it
    /// (`Engine::solvent_limit`: only an order that reduces a position does). None is kept
    /// for the account's first order or amend in the market in the segment where, as the
    /// segment begins, it holds no position against `side` and no margin-holding order on
    /// the other side: only such orders' fills, or an earlier order of its own in the
    /// segment, could give it a position against `side` before the order executes.
    /// (R reads the state the segment began from wherever in its pass it is; an amend
    /// names a resting order, whose side is known. `price` only weeds out orders M
    /// refuses.)
    fn note_basis(
        &self,
        shard: &mut RiskShard,
        account: AccountId,
        market: MarketId,
        side: Option<Side>,
        price: Option<Price>,
    ) {
        if !self.known_account(account) || !self.known_market(market) {
            return;
        }
        let inst = &self.markets[market.0 as usize].inst;
        if price.is_some_and(|p| p.0 <= 0 || p > inst.max_price) {
            return; // M refuses it.
        }
        let at = (account.0 - shard.first) as usize * shard.markets + market.0 as usize;
        match shard.basis_mark[at] {
            NOTED => return,
            SEEN => {}
            _ => {
                shard.marked.push(at as u32);
                let i = self.pm(account, market);
                let pos = self.positions[i].qty;
                let free = match side {
                    Some(Side::Buy) => pos >= 0 && self.accounts[i].qty[Side::Sell.index()] == 0,
                    Some(Side::Sell) => pos <= 0 && self.accounts[i].qty[Side::Buy.index()] == 0,
                    None => false,
                };
                if free {
                    shard.basis_mark[at] = SEEN;
                    return;
                }
            }
        }
        shard.basis_mark[at] = NOTED;
        let wallet = self.ledger.wallet(account, inst.settle);
        let elsewhere = self.cross_elsewhere(account, market);
        shard.basis.push(Basis { account, market, wallet, elsewhere });
    }

    /// Check one order that opens exposure against its account's reserved state; reserve
    /// it if it passes.
    fn reserve_order(
        &self,
        shard: &mut RiskShard,
        account: AccountId,
        market: MarketId,
        side: Side,
        qty: Qty,
        price: Option<Price>,
    ) -> Option<RejectReason> {
        let (base, held) = self.reserved(shard, account, market);
        let value = self.margin_value(market, side, qty, price);
        let more = match self.margin_check(account, market, side, qty.0, value, &base, held) {
            Ok(more) => more,
            Err(reason) => return Some(reason),
        };
        let mut am = base;
        am.add(side, qty.0, value);
        self.keep(shard, account, market, am, more);
        None
    }

    /// Stage R for the orders fired in a segment, as the segment ends: each one that opens
    /// exposure is decided as a new order would be, against the state the segment left
    /// plus the reservations of those that fired before it, into `fired_refusals` (in
    /// `fired`'s order; `None` also for the ones R does not decide). Every shard on this
    /// thread: a segment fires few.
    pub(crate) fn decide_fired(&mut self, fired: &[OrderId]) {
        let mut risk = std::mem::take(&mut self.risk);
        let mut refusals = std::mem::take(&mut self.fired_refusals);
        refusals.clear();
        for &id in fired {
            let refusal = self.orders.slot_of(id).and_then(|slot| {
                let r = self.orders.get(slot);
                if r.is_reduce_only() {
                    return None; // Reducing orders are free; sized when they execute.
                }
                let shard = risk.iter_mut().find(|s| s.owns(r.account));
                let shard = shard.expect("the shards cover every account");
                self.reserve_order(shard, r.account, r.market, r.side, r.leaves, r.price)
            });
            refusals.push(refusal);
        }
        for shard in &mut risk {
            shard.clear();
        }
        self.fired_refusals = refusals;
        self.risk = risk;
    }

    /// Decide an amend of a resting order that opens exposure (`None`: R does not decide
    /// it — M refuses it before its margin is looked at, or it holds nothing), and reserve
    /// what it may add to the order's hold. The decision: the amended order's hold, less
    /// its hold now, must fit in the available balance less the segment's reservations (as
    /// `Engine::validate_amend` checks one outside a group). The reservation: the growth of
    /// the order's leaves and value over what they were when the segment began, each
    /// counted only where it grows. The hold only grows with either
    /// (`AccountMarket::hold` is monotone in both), so this covers the amend whatever else
    /// the segment does to the order (a fill only lowers its leaves), and covers several
    /// amends of one order by their sum — the second of two amends that both grow an order
    /// is decided with the first's growth still counted, an over-estimate on the safe side.
    fn reserve_amend(&self, shard: &mut RiskShard, a: &AmendOrder) -> Option<Option<RejectReason>> {
        let slot = self.orders.slot_of(a.order)?;
        let r = self.orders.get(slot);
        if r.account != a.account || !matches!(r.working, Working::Resting(_)) || r.is_reduce_only()
        {
            return None; // Refused, or holds nothing: reducing orders are free.
        }
        let inst = &self.markets[r.market.0 as usize].inst;
        let qty = a.qty.unwrap_or(r.qty);
        let price = a.price.or(r.price)?;
        if qty <= r.cum || price.0 <= 0 || price > inst.max_price || qty > inst.max_order_qty {
            return None; // M refuses it.
        }
        let leaves = qty - r.cum;
        let value = inst.value(leaves, price).abs();
        let (base, held) = self.reserved(shard, r.account, r.market);
        if let Some(reason) = self.amend_refusal(r, leaves, value, &base, held) {
            return Some(Some(reason));
        }
        let grow_qty = (leaves.0 - r.leaves.0).max(0);
        let grow_value = (value - r.held_value).max(0);
        if grow_qty > 0 || grow_value > 0 {
            let pos = &self.positions[self.pm(r.account, r.market)];
            let mut am = base;
            am.add(r.side, grow_qty, grow_value);
            let more = (am.hold(pos, inst) - base.hold(pos, inst)).max(0);
            self.keep(shard, r.account, r.market, am, more);
        }
        Some(None)
    }

    /// The account's order aggregates in `market` with the segment's reservations, and
    /// the hold reserved so far in the market's currency.
    fn reserved(
        &self,
        shard: &RiskShard,
        account: AccountId,
        market: MarketId,
    ) -> (AccountMarket, Money) {
        let (am_at, held_at) = self.reservation_slots(shard, account, market);
        let base = match shard.reserved_at[am_at] {
            NIL => self.accounts[self.pm(account, market)],
            k => shard.reserved[k as usize].1,
        };
        let held = match shard.held_at[held_at] {
            NIL => 0,
            k => shard.held[k as usize].1,
        };
        (base, held)
    }

    /// Keep `am` as the account's reserved aggregates in `market`, and `more` more held.
    fn keep(
        &self,
        shard: &mut RiskShard,
        account: AccountId,
        market: MarketId,
        am: AccountMarket,
        more: Money,
    ) {
        let (am_at, held_at) = self.reservation_slots(shard, account, market);
        match shard.reserved_at[am_at] {
            NIL => {
                shard.reserved_at[am_at] = shard.reserved.len() as u32;
                shard.reserved.push((am_at as u32, am));
            }
            k => shard.reserved[k as usize].1 = am,
        }
        match shard.held_at[held_at] {
            NIL => {
                shard.held_at[held_at] = shard.held.len() as u32;
                shard.held.push((held_at as u32, more));
            }
            k => shard.held[k as usize].1 += more,
        }
    }

    /// Where (account, market) and (account, currency) sit in the shard's reservations.
    fn reservation_slots(
        &self,
        shard: &RiskShard,
        account: AccountId,
        market: MarketId,
    ) -> (usize, usize) {
        let settle = self.markets[market.0 as usize].inst.settle;
        let local = (account.0 - shard.first) as usize;
        (local * shard.markets + market.0 as usize, local * Currency::COUNT + settle.index())
    }

    /// Whether a new order reaches the margin check in `validate_new` whenever current
    /// state allows: every check before it that depends on the order alone passes, and it
    /// opens exposure. R decides exactly these orders (a stricter test would leave M an
    /// order without a decision; a looser one only reserves for an order M refuses).
    fn margin_checkable(&self, o: &NewOrder) -> bool {
        if !self.known_account(o.account) || !self.known_market(o.market) {
            return false;
        }
        if o.exec_inst.is_reduce_only()
            || o.ord_type.is_conditional()
            || o.exec_inst.contains(ExecInst::ALL_OR_NONE)
        {
            return false;
        }
        let inst = &self.markets[o.market.0 as usize].inst;
        if o.ord_type.has_limit_price() != o.price.is_some() || o.stop_px.is_some() {
            return false;
        }
        if o.price.is_some_and(|p| p.0 <= 0 || p > inst.max_price) {
            return false;
        }
        if o.qty.0 <= 0 || o.qty.0 % inst.lot.0 != 0 || o.qty > inst.max_order_qty {
            return false;
        }
        true
    }
}
