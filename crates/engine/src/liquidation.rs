//! Remargin, liquidation and auto-deleveraging (DESIGN.md §4–5, API.md §9).
//!
//! The lifecycle, as BitMEX runs it:
//! 1. Every mark change re-margins every open position of that market (`remargin`); a
//!    position whose margin balance is below its maintenance requirement is queued. The
//!    queue leaves the engine through `take_liquidations` and comes back as
//!    `Command::Liquidate` in the next group, so a journal replays liquidations exactly.
//! 2. `Liquidate` re-checks, cancels the account's orders in that market, and has the
//!    liquidation engine (the insurance fund's own account) take the position over at its
//!    bankruptcy price: the trader loses exactly the margin that backed the position.
//! 3. The liquidation engine works the position out: first an IOC at the bankruptcy price
//!    (fills better than it pay into the fund); then, if the fund can pay for the worst
//!    fill the price band allows, a protected Market IOC (fills worse are paid by the
//!    fund); what is left either rests at the bankruptcy price, worked again on every
//!    mark tick, or — when the fund cannot cover the loss — is auto-deleveraged.
//! 4. Auto-deleveraging closes opposing positions at the bankruptcy price, the highest ADL
//!    rank first (PnL% × effective leverage for profitable positions), cancelling their
//!    orders in that market.
//!
//! Margin backing a position: isolated, its position margin (posInit + posComm) plus any
//! margin transferred in; cross, the wallet less what every other position and order of
//! the currency commits.

use amdahl_risk::liquidation::{AdlCandidate, AdlScore, adl_indicator, bankruptcy_price, sort_adl};
use amdahl_types::{
    AccountId, CancelReason, Command, Currency, Event, ExecInst, Leverage, MarketId, Money,
    NewOrder, OrdType, Price, Qty, RejectReason, Seq, Side, TimeInForce,
};

use amdahl_ledger::Entry;

use crate::engine::Engine;
use crate::margin::committed;
use crate::orders::NIL;
use crate::sink::EventSink;

impl Engine {
    /// The liquidation engine's account (its positions belong to the insurance fund).
    pub fn liquidator(&self) -> AccountId {
        self.liquidator
    }

    /// Move the liquidations found since the last call into `out`, ordered by (market,
    /// account) so the order never depends on how positions were laid out. The driver
    /// (sequencer) feeds them back as the first commands of the next group.
    pub fn take_liquidations(&mut self, out: &mut Vec<Command>) {
        self.pending.sort_unstable();
        for (market, account) in self.pending.drain(..) {
            let i = account.0 as usize * self.markets.len() + market.0 as usize;
            self.queued[i] = false;
            out.push(Command::Liquidate { account, market });
        }
    }

    /// Re-margin every open position of `market` at its current mark and queue those below
    /// maintenance, and the liquidation engine's own position while it has one. Each
    /// account shard streams its packed positions (see `remargin.rs`): one multiply and one
    /// compare per isolated position, the account-level check for cross ones. With a
    /// pipeline attached the shards run in parallel; the merge is the same either way.
    pub(crate) fn remargin(&mut self, market: MarketId) {
        let m = market.0 as usize;
        let mark = self.markets[m].mark;
        let unit = self.markets[m].mark_unit;
        let (old_mark, old_unit) = self.remargined_mark[m];
        self.remargined_mark[m] = (mark, unit);
        let currency = self.markets[m].inst.settle;
        let tick = crate::remargin::Tick {
            market: m,
            currency,
            mark,
            unit,
            old_mark,
            old_unit,
            liquidator: self.liquidator.0,
        };
        match crate::pipeline::links(&mut self.fan_out) {
            Some(fan_out) => {
                fan_out.remargin(&mut self.shards, &self.ledger, &self.markets[m].inst, &tick)
            }
            None => {
                let inst = &self.markets[m].inst;
                for shard in &mut self.shards {
                    crate::remargin::remargin_shard(shard, &self.ledger, inst, &tick);
                }
            }
        }
        // Merge (stage A's share of a tick): the partial sums recount the market's quantity
        // and cost against the running sums (DESIGN.md §4 — the whole-system recomputation
        // is rolled over `audit_cycle` commands), then the candidates are queued. Queueing
        // is a set (`take_liquidations` sorts), so shard order does not matter.
        let (mut net, mut recount) = (0i64, 0i64);
        for shard in &self.shards {
            net = net.wrapping_add(shard.found.net);
            recount = recount.wrapping_add(shard.found.cost);
        }
        let expected_cost = self.market_cost[m];
        self.recounted[m] = true;
        if self.shards.iter().any(|s| s.found.cross_rows != s.open[m].cross_rows) {
            let error = crate::audit::AuditError::PositionCache { account: u32::MAX, market };
            self.recount_failure.get_or_insert(error);
        }
        if net != 0 || recount != expected_cost as i64 {
            let cost = self.shards.iter().flat_map(|s| &s.open[m].cost).map(|&c| c as i128).sum();
            let error = crate::audit::AuditError::MarketRecount {
                market,
                net_qty: net,
                cost,
                expected_cost,
            };
            self.recount_failure.get_or_insert(error);
        }
        for s in 0..self.shards.len() {
            for k in 0..self.shards[s].found.isolated.len() {
                let account = AccountId(self.shards[s].found.isolated[k]);
                self.queue_liquidation(account, market);
            }
            for k in 0..self.shards[s].found.deferred.len() {
                let account = AccountId(self.shards[s].found.deferred[k]);
                if self.is_liquidatable(account, market) {
                    // Cross margin is the account's: all its cross positions are at stake.
                    self.check_account(account, currency);
                }
            }
            for k in 0..self.shards[s].found.cross.len() {
                let account = AccountId(self.shards[s].found.cross[k]);
                self.check_account(account, currency);
            }
        }
    }

    /// Queue every position of the account in `currency` that is under maintenance.
    pub(crate) fn check_account(&mut self, account: AccountId, currency: amdahl_types::Currency) {
        // An account with only cross positions in the currency is under maintenance exactly
        // when wallet + its cross sum < 0 (the sum is at the current marks: every mark
        // change re-margins), and then every one of its positions is; above it, none is.
        // One compare instead of a walk over the markets — the common case after a fill.
        if account != self.liquidator {
            let (s, c) = self.cross_slot(account, currency);
            let (sum, iso) = (self.shards[s].cross[c], self.shards[s].iso[c]);
            let wallet = self.ledger.wallet(account, currency) as i128;
            if iso == 0 && wallet + sum as i128 >= 0 {
                debug_assert!(
                    (0..self.markets.len()).all(|m| self.markets[m].inst.settle != currency
                        || !self.is_liquidatable(account, MarketId(m as u16))),
                    "the cross sum of account {} disagrees with the full check",
                    account.0
                );
                return;
            }
        }
        for m in 0..self.markets.len() {
            let market = MarketId(m as u16);
            if self.markets[m].inst.settle == currency && self.is_liquidatable(account, market) {
                self.queue_liquidation(account, market);
            }
        }
    }

    pub(crate) fn queue_liquidation(&mut self, account: AccountId, market: MarketId) {
        let i = self.pm(account, market);
        if !self.queued[i] {
            self.queued[i] = true;
            self.pending.push((market, account));
        }
    }

    /// Is the account's position in `market` below its maintenance requirement at mark?
    /// Isolated: position margin + unrealised < posMaint. Cross: the currency's wallet plus
    /// every cross position's unrealised PnL, less what isolated positions lock, is below
    /// the sum of the cross positions' maintenance.
    pub fn is_liquidatable(&self, account: AccountId, market: MarketId) -> bool {
        let i = self.pm(account, market);
        let pos = &self.positions[i];
        if pos.qty == 0 || account == self.liquidator {
            return false;
        }
        let m = &self.markets[market.0 as usize];
        if pos.leverage != Leverage::CROSS {
            let cache = &self.margin_cache[i];
            let margin = cache.init + self.extra_margin[i];
            let mark_value = m.mark_value(pos.qty);
            return amdahl_risk::liquidation::below_maintenance(
                pos.cost,
                margin,
                cache.maint,
                mark_value,
            );
        }
        let currency = m.inst.settle;
        let mut balance = self.ledger.wallet(account, currency) as i128;
        let mut maint = 0i128;
        for (k, other) in self.markets.iter().enumerate() {
            let j = account.0 as usize * self.markets.len() + k;
            let p = &self.positions[j];
            if other.inst.settle != currency || p.qty == 0 {
                continue;
            }
            if p.leverage == Leverage::CROSS {
                balance += (other.mark_value(p.qty) - p.cost) as i128;
                maint += self.margin_cache[j].maint as i128;
            } else {
                let locked = (self.margin_cache[j].init + self.extra_margin[j]) as i128;
                let loss = -((other.mark_value(p.qty) - p.cost) as i128).min(0);
                balance -= locked.max(loss);
            }
        }
        balance < maint
    }

    /// The margin that backs the account's position in `market` (see the module docs).
    pub fn position_margin(&self, account: AccountId, market: MarketId) -> Money {
        let wallet = self.ledger.wallet(account, self.instrument(market).settle);
        let elsewhere = self.cross_elsewhere(account, market);
        let margin = self.backing(account, market, wallet as i128, elsewhere).max(0);
        Money::try_from(margin).expect("margin fits i64")
    }

    /// `position_margin` for a given wallet and `cross_elsewhere`, before it is floored at
    /// zero: a cross position's is the wallet less what the rest commits, an isolated one's
    /// its own.
    fn backing(&self, account: AccountId, market: MarketId, wallet: i128, elsewhere: i128) -> i128 {
        let i = self.pm(account, market);
        backing(&self.positions[i], &self.margin_cache[i], self.extra_margin[i], wallet, elsewhere)
    }

    /// What the account commits in the markets of `market`'s currency other than `market`
    /// (what a cross position's margin is its wallet less).
    pub(crate) fn committed_elsewhere(&self, account: AccountId, market: MarketId) -> i128 {
        let currency = self.markets[market.0 as usize].inst.settle;
        let mut sum = 0i128;
        for (k, other) in self.markets.iter().enumerate() {
            if k == market.0 as usize || other.inst.settle != currency {
                continue;
            }
            let j = account.0 as usize * self.markets.len() + k;
            sum += committed(
                &self.accounts[j],
                &self.positions[j],
                &other.inst,
                other.mark_value(self.positions[j].qty),
                self.margin_cache[j].init + self.extra_margin[j],
            );
        }
        sum
    }

    /// The bankruptcy price of the account's position in `market`, if it has one.
    pub fn bankruptcy_price(&self, account: AccountId, market: MarketId) -> Option<Price> {
        let pos = self.position(account, market);
        if pos.qty == 0 {
            return None;
        }
        bankruptcy_price(self.instrument(market), &pos, self.bankruptcy_margin(account, market))
    }

    /// The margin a position's bankruptcy price is worked from: what backs it, but never
    /// more than the wallet holds — the trader cannot lose money they do not have, whatever
    /// their wallet lost elsewhere since the margin was set aside.
    pub(crate) fn bankruptcy_margin(&self, account: AccountId, market: MarketId) -> Money {
        let wallet = self.ledger.wallet(account, self.instrument(market).settle);
        let elsewhere = self.cross_elsewhere(account, market);
        self.bankruptcy_margin_from(account, market, wallet as i128, elsewhere)
    }

    /// What a cross position's margin is its wallet less (`committed_elsewhere`); 0 for an
    /// isolated position, which its own margin backs.
    pub(crate) fn cross_elsewhere(&self, account: AccountId, market: MarketId) -> i128 {
        let cross = self.positions[self.pm(account, market)].leverage == Leverage::CROSS;
        if cross { self.committed_elsewhere(account, market) } else { 0 }
    }

    /// `bankruptcy_margin` for a given wallet and `cross_elsewhere`.
    pub(crate) fn bankruptcy_margin_from(
        &self,
        account: AccountId,
        market: MarketId,
        wallet: i128,
        elsewhere: i128,
    ) -> Money {
        bankruptcy_margin_of(self.backing(account, market, wallet, elsewhere), wallet)
    }

    /// BitMEX's five-light ADL indicator of the account's position: its quintile among
    /// the positions on the same side of `market`, 5 = first to be deleveraged.
    pub fn adl_indicator(&self, account: AccountId, market: MarketId) -> Option<u8> {
        let pos = self.position(account, market);
        if pos.qty == 0 || account == self.liquidator {
            return None;
        }
        let ranked = self.adl_ranking(market, pos.qty.signum());
        let at = ranked.iter().position(|c| c.account == account)?;
        Some(adl_indicator(at, ranked.len()))
    }

    /// The positions of `market` whose sign is `sign`, in ADL order.
    fn adl_ranking(&self, market: MarketId, sign: i64) -> Vec<AdlCandidate> {
        let m = &self.markets[market.0 as usize];
        let mut ranked: Vec<AdlCandidate> = self
            .shards
            .iter()
            .flat_map(|shard| &shard.open[market.0 as usize].accounts)
            .map(|&a| AccountId(a))
            .filter(|&a| a != self.liquidator)
            .filter_map(|a| {
                let pos = self.position(a, market);
                (pos.qty.signum() == sign).then(|| {
                    let margin = self.position_margin(a, market);
                    let score = AdlScore::for_position(&m.inst, &pos, margin, m.mark);
                    AdlCandidate { account: a, score }
                })
            })
            .collect();
        sort_adl(&mut ranked);
        ranked
    }

    /// `Command::Liquidate`.
    pub(crate) fn liquidate<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        market: MarketId,
        sink: &mut S,
    ) {
        if !self.known_market(market) {
            return self.reject(seq, account, RejectReason::UnknownMarket, 0, sink);
        }
        if account == self.liquidator {
            self.work_out(seq, market, sink);
            return self.fire_triggers(market);
        }
        if !self.known_account(account) {
            return self.reject(seq, account, RejectReason::UnknownAccount, 0, sink);
        }
        if !self.is_liquidatable(account, market) {
            return self.reject(seq, account, RejectReason::NotLiquidatable, 0, sink);
        }
        self.cancel_market_orders(seq, account, market, CancelReason::Liquidation, sink);
        self.take_over(seq, account, market, sink);
        self.work_out(seq, market, sink);
        self.fire_triggers(market);
        // The loss came out of the wallet: the account's other cross positions may follow.
        let currency = self.markets[market.0 as usize].inst.settle;
        self.check_account(account, currency);
    }

    fn cancel_market_orders<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        market: MarketId,
        reason: CancelReason,
        sink: &mut S,
    ) {
        loop {
            let head = self.accounts[self.pm(account, market)].head;
            if head == NIL {
                break;
            }
            self.cancel_slot(seq, head, reason, sink);
        }
    }

    /// The liquidation engine takes the whole position over at its bankruptcy price: the
    /// trader realises the loss of exactly the margin that backed it.
    fn take_over<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        market: MarketId,
        sink: &mut S,
    ) {
        let pos = self.position(account, market);
        let mark = self.mark(market);
        // Past the lowest (or highest) tick nothing is solvent: take over at the mark and
        // let the fund cover the rest.
        let price = self.bankruptcy_price(account, market).unwrap_or(mark);
        let closing = if pos.qty > 0 { Side::Sell } else { Side::Buy };
        self.trade_with_liquidator(seq, account, market, closing, Qty(pos.qty.abs()), price, sink);
        let i = self.pm(account, market);
        self.extra_margin[i] = 0;
        self.bankruptcy[market.0 as usize] = Some(price);
        sink.emit(Event::Liquidated { seq, account, market, qty: pos.qty, price });
    }

    /// A trade between an account and the liquidation engine at `price`, outside the book
    /// (takeover and auto-deleveraging): no fees; the account's PnL goes to its wallet, the
    /// liquidation engine's to the insurance fund.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn trade_with_liquidator<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        market: MarketId,
        account_side: Side,
        qty: Qty,
        price: Price,
        sink: &mut S,
    ) {
        let m = market.0 as usize;
        let currency = self.markets[m].inst.settle;
        let value = self.markets[m].inst.value(qty, price);
        let (i, li) = (self.pm(account, market), self.pm(self.liquidator, market));
        let cost_before = self.positions[i].cost as i128 + self.positions[li].cost as i128;
        let realised = self.positions[i].apply_fill(account_side, qty, value);
        let liq_realised = self.positions[li].apply_fill(account_side.opposite(), qty, value);
        self.market_cost[m] +=
            self.positions[i].cost as i128 + self.positions[li].cost as i128 - cost_before;
        self.sync_position(account, market);
        self.sync_position(self.liquidator, market);
        crate::engine::edit(&mut self.ledger).post_trade_cost(currency, value, -value);
        if realised != 0 {
            self.realise_to_wallet(seq, account, market, realised, sink);
        }
        if liq_realised < 0 {
            // A loss the fund cannot pay in full can only be rounding (takeovers and
            // aggressive closes are sized to the fund): the fee account backstops it.
            let short = -liq_realised - self.ledger.balance(Entry::Insurance, currency);
            let fees = self.ledger.balance(Entry::Fees, currency);
            if short > 0 && fees >= short {
                crate::engine::edit(&mut self.ledger)
                    .transfer(currency, Entry::Fees, Entry::Insurance, short)
                    .expect("held");
                sink.emit(Event::FundTopUp { seq, currency, amount: short });
            }
        }
        if liq_realised != 0 {
            if let Err(e) =
                crate::engine::edit(&mut self.ledger).realise_insurance(currency, liq_realised)
            {
                self.halt_on(seq, currency, crate::audit::AuditError::Settlement(e), sink);
            }
            let liquidator = self.liquidator;
            sink.emit(Event::Realised { seq, account: liquidator, market, amount: liq_realised });
        }
    }

    pub(crate) fn halt_on<S: EventSink>(
        &mut self,
        seq: Seq,
        currency: Currency,
        error: crate::audit::AuditError,
        sink: &mut S,
    ) {
        if self.halt.is_none() {
            self.halt = Some(crate::audit::HaltEvidence { seq, error, groups: self.groups });
            sink.emit(Event::Halted { seq, currency, discrepancy: 0 });
        }
    }

    /// Work out the liquidation engine's position in `market` (see the module docs, 3).
    fn work_out<S: EventSink>(&mut self, seq: Seq, market: MarketId, sink: &mut S) {
        let liquidator = self.liquidator;
        self.cancel_market_orders(seq, liquidator, market, CancelReason::Liquidation, sink);
        let li = self.pm(liquidator, market);
        let price = self.bankruptcy[market.0 as usize].unwrap_or(self.mark(market));
        // 1. At the bankruptcy price or better.
        self.liquidation_order(
            seq,
            market,
            OrdType::Limit,
            TimeInForce::ImmediateOrCancel,
            price,
            sink,
        );
        if self.positions[li].qty == 0 || self.halt.is_some() {
            return;
        }
        // 2. Worse, down to the price band, if the fund can pay for the worst fill.
        let worst = self.liquidator_loss_at_band(market);
        let currency = self.markets[market.0 as usize].inst.settle;
        let fund = self.ledger.balance(amdahl_ledger::Entry::Insurance, currency);
        if fund >= worst {
            let tif = TimeInForce::ImmediateOrCancel;
            self.liquidation_order(seq, market, OrdType::Market, tif, price, sink);
            if self.positions[li].qty == 0 || self.halt.is_some() {
                return;
            }
            // 3a. The book is out of liquidity: rest at the bankruptcy price, try again on
            // the next mark tick.
            let tif = TimeInForce::GoodTillCancel;
            self.liquidation_order(seq, market, OrdType::Limit, tif, price, sink);
        } else {
            // 3b. The fund cannot cover it: auto-deleverage at the bankruptcy price.
            self.deleverage(seq, market, price, sink);
        }
    }

    /// The loss the fund would bear closing the liquidation engine's position at the edge
    /// of the price band (the worst a protected Market order can fill).
    fn liquidator_loss_at_band(&self, market: MarketId) -> Money {
        let pos = self.position(self.liquidator, market);
        if pos.qty == 0 {
            return 0;
        }
        let closing = if pos.qty > 0 { Side::Sell } else { Side::Buy };
        let edge = self.protection_price(market, closing);
        (-pos.unrealised(self.instrument(market), edge)).max(0)
    }

    /// Send an order of the liquidation engine closing its whole position in `market`.
    fn liquidation_order<S: EventSink>(
        &mut self,
        seq: Seq,
        market: MarketId,
        ord_type: OrdType,
        time_in_force: TimeInForce,
        price: Price,
        sink: &mut S,
    ) {
        let liquidator = self.liquidator;
        let pos = self.position(liquidator, market);
        if pos.qty == 0 || !self.order_room(market) {
            return;
        }
        let side = if pos.qty > 0 { Side::Sell } else { Side::Buy };
        let qty = Qty(pos.qty.abs());
        let price = (ord_type == OrdType::Limit).then_some(price);
        let order = NewOrder {
            account: liquidator,
            market,
            side,
            ord_type,
            time_in_force,
            exec_inst: ExecInst::NONE,
            qty,
            price,
            stop_px: None,
            display_qty: None,
            client_tag: 0,
        };
        let slot = self.accept(seq, &order, sink);
        self.execute(seq, slot, sink);
    }

    /// Close the liquidation engine's position against opposing positions in ADL order, at
    /// `price` (the bankruptcy price of the liquidated position).
    fn deleverage<S: EventSink>(&mut self, seq: Seq, market: MarketId, price: Price, sink: &mut S) {
        let li = self.pm(self.liquidator, market);
        let sign = -self.positions[li].qty.signum();
        for candidate in self.adl_ranking(market, sign) {
            let left = self.positions[li].qty.abs();
            if left == 0 || self.halt.is_some() {
                break;
            }
            let account = candidate.account;
            let pos = self.position(account, market);
            let qty = pos.qty.abs().min(left);
            self.cancel_market_orders(seq, account, market, CancelReason::Deleveraged, sink);
            let closing = if pos.qty > 0 { Side::Sell } else { Side::Buy };
            self.trade_with_liquidator(seq, account, market, closing, Qty(qty), price, sink);
            let delta = -pos.qty.signum() * qty;
            sink.emit(Event::Deleveraged { seq, account, market, qty: delta, price });
            // Closed at the bankruptcy price, not the mark: the account gave up mark-to-market
            // profit its other cross positions may have leant on.
            let currency = self.markets[market.0 as usize].inst.settle;
            self.check_account(account, currency);
        }
    }
}

/// What backs a position (`Engine::position_margin` before it is floored at zero): a cross
/// position's is the wallet less what the rest commits (`elsewhere`), an isolated one's its
/// own margin.
pub(crate) fn backing(
    pos: &amdahl_risk::Position,
    cache: &crate::remargin::MarginCache,
    extra: Money,
    wallet: i128,
    elsewhere: i128,
) -> i128 {
    if pos.leverage == Leverage::CROSS { wallet - elsewhere } else { (cache.init + extra) as i128 }
}

/// The margin a bankruptcy price is worked from: what backs the position, but never more
/// than the wallet holds.
pub(crate) fn bankruptcy_margin_of(backing: i128, wallet: i128) -> Money {
    let margin = backing.max(0).min(wallet.max(0));
    Money::try_from(margin).expect("margin fits i64")
}
