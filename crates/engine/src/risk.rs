//! Stage R: pre-trade risk of a group (DESIGN.md §2).
//!
//! Within group g a new order's margin is checked against its account as of the end of
//! group g−1, plus the reservations of the orders R accepted earlier in g — not against
//! the state matching has reached by then. So R is a pure function of (the state at the
//! end of g−1, the group's commands), and it depends on nothing but the order's own
//! account: it runs per account shard, before any command of the group is matched, and
//! the shards' decisions merge by sequence number. Matching (stage M) then takes each new
//! order's margin decision from R and checks everything else against current state.
//!
//! What R decides: the risk limit and the available balance for new orders that open
//! exposure (not ReduceOnly, not conditional). An order R accepts is checked once more by
//! M against current state (see `validate_new`; skipped where R saw exactly M's state), so
//! R can only refuse more, never let an account commit money that earlier commands of the
//! group spent. A reservation lives only for its group: at the group's end the order's
//! real hold, if it rests, is in the account's aggregates. What stays with M, against
//! current state: amendments, stops when they trigger, withdrawals, leverage and margin
//! transfers (they act on orders and positions M owns).
//!
//! Consequence, by design: the same commands cut into other groups may get other margin
//! decisions (an order late in a big group does not see the fills or deposits earlier in
//! it, and an IOC's reservation outlives its cancel). The contract is the journal's cuts:
//! the same commands with the same cuts give the same events in every topology. A group of
//! one command is checked against the state every earlier command left, exactly as a
//! one-command-at-a-time engine would.

use amdahl_types::{
    AccountId, Command, Currency, ExecInst, Money, NewOrder, RejectReason, Seq, Sequenced,
};

use crate::engine::Engine;
use crate::margin::AccountMarket;
use crate::orders::NIL;

/// R's decision on one new order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Decision {
    /// The order's command.
    pub seq: Seq,
    /// Why R refused it, or `None`: accepted and reserved.
    pub refusal: Option<RejectReason>,
    /// R reserved nothing before it for the account in the order's currency: it was
    /// checked against the last group's state alone.
    pub fresh: bool,
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
}

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
        }
    }

    fn owns(&self, account: AccountId) -> bool {
        (self.first..self.end).contains(&account.0)
    }

    /// Forget the group: its reservations and decisions.
    pub fn clear(&mut self) {
        for &(at, _) in &self.reserved {
            self.reserved_at[at as usize] = NIL;
        }
        for &(at, _) in &self.held {
            self.held_at[at as usize] = NIL;
        }
        self.reserved.clear();
        self.held.clear();
        self.decisions.clear();
    }
}

impl Engine {
    /// Stage R for one account shard: decide the margin of every new order of its accounts
    /// in `group`, against the state at the end of the last group plus the reservations
    /// made earlier in this one. Reads the engine only.
    pub(crate) fn risk_pass(&self, group: &[Sequenced], shard: &mut RiskShard) {
        for cmd in group {
            let Command::Place(o) = &cmd.command else { continue };
            if !shard.owns(o.account) || !self.margin_checkable(o) {
                continue;
            }
            let (refusal, fresh) = self.reserve(shard, o);
            shard.decisions.push(Decision { seq: cmd.seq, refusal, fresh });
        }
    }

    /// Check one new order against its account's reserved state; reserve it if it passes.
    /// Returns the refusal, and whether nothing was reserved before it in its currency.
    fn reserve(&self, shard: &mut RiskShard, o: &NewOrder) -> (Option<RejectReason>, bool) {
        let inst = &self.markets[o.market.0 as usize].inst;
        let local = (o.account.0 - shard.first) as usize;
        let am_at = local * shard.markets + o.market.0 as usize;
        let held_at = local * Currency::COUNT + inst.settle.index();
        let i = self.pm(o.account, o.market);
        let base = match shard.reserved_at[am_at] {
            NIL => self.accounts[i],
            k => shard.reserved[k as usize].1,
        };
        let held = match shard.held_at[held_at] {
            NIL => 0,
            k => shard.held[k as usize].1,
        };
        // A reservation in a market is always entered in its currency's hold too, so none
        // in the currency means none in the market either.
        let fresh = shard.held_at[held_at] == NIL;
        let value = self.margin_value(o.market, o.side, o.qty, o.price);
        let more = match self.margin_check(o.account, o.market, o.side, o.qty.0, value, &base, held)
        {
            Ok(more) => more,
            Err(reason) => return (Some(reason), fresh),
        };
        let mut am = base;
        am.add(o.side, o.qty.0, value);
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
        (None, fresh)
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
