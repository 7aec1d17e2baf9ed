//! The clock-driven part of the risk lifecycle (DESIGN.md §5, API.md §10): the composite
//! index, fair-price marks, premium samples, funding, settlement of dated futures, and
//! margin transfers.
//!
//! Everything here runs on the sequencer's journaled clock — `Command::Tick` (about once a
//! second) and `Command::IndexPrice` — never on a wall clock, so a replay is exact.
//!
//! Funding: at each funding time every open position pays or receives `mark value × F`
//! (truncated toward zero). Payers pay into the clearing entry first, receivers are paid
//! out of it, and what is left (the rounding residue, or a payer's shortfall) moves to or
//! from the insurance fund, so the clearing entry is empty again and the audit stays
//! exact. The rate paid at a funding time was announced at the previous one (BitMEX: the
//! premium of the window that just ended sets the *next* payment); the first interval pays
//! the interest rate alone.

use amdahl_book::Level;
use amdahl_ledger::Entry;
use amdahl_risk::fair::{FuturesBasis, MarkMethod, futures_fair_price, perpetual_fair_price};
use amdahl_risk::funding::premium_index;
use amdahl_risk::funding::{PremiumAccumulator, funding_payment, funding_rate, interest_rate};
use amdahl_risk::index::{CompositeIndex, IndexEvent, IndexStatus, IndexTwap};
use amdahl_types::{
    AccountId, CancelReason, Event, Leverage, MarketId, Money, Price, Rate, RejectReason, Seq,
    Side, Timestamp,
};

use crate::config::Lifecycle;
use crate::engine::Engine;
use crate::sink::EventSink;

/// The settlement TWAP window of a dated future (BitMEX `.BXBT30M`).
const SETTLEMENT_WINDOW_NS: i64 = 30 * 60_000_000_000;
const MINUTE_NS: i64 = 60_000_000_000;

/// A market's lifecycle state.
pub(crate) struct LifeState {
    pub cfg: Lifecycle,
    pub index: Option<CompositeIndex>,
    /// The composite index's health after its last computation (which constituents were
    /// used, stale or outliers; held; single source).
    pub index_status: Option<IndexStatus>,
    pub twap: IndexTwap,
    pub premium: PremiumAccumulator,
    pub next_sample: Option<Timestamp>,
    pub next_funding: Option<Timestamp>,
    /// The rate to be paid at `next_funding`.
    pub rate: Rate,
    /// A dated future's smoothed fair basis, and when it is next sampled.
    pub basis: Option<FuturesBasis>,
    pub next_basis_sample: Option<Timestamp>,
    pub settled: bool,
}

impl LifeState {
    pub fn new(cfg: &Lifecycle) -> LifeState {
        let index = cfg.index.map(|c| CompositeIndex::new(c).expect("validated index config"));
        LifeState {
            cfg: cfg.clone(),
            index,
            index_status: None,
            twap: IndexTwap::new(MINUTE_NS),
            premium: PremiumAccumulator::default(),
            next_sample: None,
            next_funding: None,
            rate: Rate(0),
            basis: cfg.basis.map(|b| FuturesBasis::new(b.alpha, b.max_abs).expect("validated")),
            next_basis_sample: None,
            settled: false,
        }
    }
}

impl Engine {
    pub fn is_settled(&self, market: MarketId) -> bool {
        self.markets[market.0 as usize].life.settled
    }

    /// The funding rate to be paid at the next funding time, and that time.
    pub fn funding(&self, market: MarketId) -> Option<(Rate, Timestamp)> {
        let life = &self.markets[market.0 as usize].life;
        life.next_funding.map(|t| (life.rate, t))
    }

    /// The composite index's health: constituents used, stale and outliers, whether it
    /// holds its last value, and whether it is configured single-source (and so says).
    pub fn index_status(&self, market: MarketId) -> Option<IndexStatus> {
        self.markets[market.0 as usize].life.index_status
    }

    pub fn index_price(&self, market: MarketId) -> Option<Price> {
        self.markets[market.0 as usize].index
    }

    /// `Command::IndexPrice`: one venue's price, then everything it moves.
    pub(crate) fn index_price_command<S: EventSink>(
        &mut self,
        seq: Seq,
        market: MarketId,
        source: u8,
        price: Price,
        sink: &mut S,
    ) {
        let account = AccountId(u32::MAX);
        if !self.known_market(market) {
            return self.reject(seq, account, RejectReason::UnknownMarket, 0, sink);
        }
        let now = self.now;
        let Some(index) = self.markets[market.0 as usize].life.index.as_mut() else {
            return self.reject(seq, account, RejectReason::UnknownConstituent, 0, sink);
        };
        if let Err(e) = index.on_price(source as usize, price, now) {
            let reason = match e {
                amdahl_risk::index::IndexError::UnknownConstituent(_) => {
                    RejectReason::UnknownConstituent
                }
                amdahl_risk::index::IndexError::BadPrice(p) if p.0 <= 0 => {
                    RejectReason::PriceNotPositive
                }
                amdahl_risk::index::IndexError::BadPrice(_) => RejectReason::PriceTooLarge,
            };
            return self.reject(seq, account, reason, 0, sink);
        }
        self.advance_market(seq, market, sink);
    }

    /// `Command::Tick`: the clock moved; run every market's time-driven work, in market order.
    pub(crate) fn tick<S: EventSink>(&mut self, seq: Seq, sink: &mut S) {
        for m in 0..self.markets.len() {
            if self.halt.is_some() {
                return;
            }
            self.advance_market(seq, MarketId(m as u16), sink);
        }
    }

    /// Index, premium sample, funding, mark, settlement — in that order — at `self.now`.
    fn advance_market<S: EventSink>(&mut self, seq: Seq, market: MarketId, sink: &mut S) {
        let m = market.0 as usize;
        let now = self.now;
        if self.markets[m].life.settled {
            return;
        }
        // 1. The composite index.
        if let Some(index) = self.markets[m].life.index.as_mut() {
            let (status, change) = index.compute(now);
            self.markets[m].life.index_status = Some(status);
            match change {
                Some(IndexEvent::Held { usable, required, .. }) => {
                    sink.emit(Event::IndexHeld { seq, market, usable, required })
                }
                Some(IndexEvent::Resumed { price }) => {
                    sink.emit(Event::IndexResumed { seq, market, price })
                }
                None => {}
            }
            if let Some(p) = status.price
                && self.markets[m].index != Some(p)
            {
                self.markets[m].index = Some(p);
                sink.emit(Event::IndexChanged { seq, market, price: p });
            }
        }
        if let Some(p) = self.markets[m].index {
            self.markets[m].life.twap.observe(now, p);
        }
        // 2. Premium samples and funding.
        if let Some(f) = self.markets[m].life.cfg.funding {
            self.sample_premium(market, f.premium_every_ns, f.impact_notional);
            let interest = interest_rate(f.quote_rate, f.base_rate, f.schedule.interval_ns);
            match self.markets[m].life.next_funding {
                None => {
                    let next = f.schedule.next_after(now);
                    self.markets[m].life.next_funding = Some(next);
                    self.markets[m].life.rate = interest;
                    sink.emit(Event::FundingRate { seq, market, rate: interest, next });
                }
                Some(due) if now >= due => {
                    let rate = self.markets[m].life.rate;
                    self.pay_funding(seq, market, rate, sink);
                    // Payers' wallets shrank: cross positions may now be under maintenance.
                    self.remargin(market);
                    let life = &mut self.markets[m].life;
                    let premium = life.premium.take_mean();
                    let inst = &self.markets[m].inst;
                    let next_rate = funding_rate(premium, interest, Some(rate), inst);
                    let next = f.schedule.next_after(now);
                    let life = &mut self.markets[m].life;
                    life.rate = next_rate;
                    life.next_funding = Some(next);
                    sink.emit(Event::FundingRate { seq, market, rate: next_rate, next });
                }
                Some(_) => {}
            }
        }
        // 2b. A dated future's fair basis.
        if let (Some(b), Some(expiry)) =
            (self.markets[m].life.cfg.basis, self.markets[m].life.cfg.expiry)
        {
            let next = *self.markets[m].life.next_basis_sample.get_or_insert(now);
            if now >= next {
                let every = b.sample_every_ns;
                self.markets[m].life.next_basis_sample =
                    Some(Timestamp(now.0 - now.0.rem_euclid(every) + every));
                if let Some(index) = self.markets[m].index {
                    let bid = self.impact_price(market, Side::Buy, b.impact_notional);
                    let ask = self.impact_price(market, Side::Sell, b.impact_notional);
                    let mm = self.markets[m].inst.maint_margin;
                    if let Some(basis) = self.markets[m].life.basis.as_mut() {
                        basis.sample(bid, ask, index, mm, now, expiry);
                    }
                }
            }
        }
        // 3. The mark.
        if let Some(mark) = self.computed_mark(market)
            && mark != self.markets[m].mark
        {
            self.apply_mark(seq, market, mark, sink);
        }
        // 4. Expiry.
        if let Some(expiry) = self.markets[m].life.cfg.expiry
            && now >= expiry
        {
            self.settle(seq, market, expiry, sink);
        }
    }

    /// The mark the lifecycle asks for now, if it computes one.
    fn computed_mark(&self, market: MarketId) -> Option<Price> {
        let mk = &self.markets[market.0 as usize];
        let life = &mk.life;
        let price = match life.cfg.mark? {
            MarkMethod::LastPrice => mk.last?,
            MarkMethod::FairPrice => {
                let index = mk.index?;
                match (life.cfg.funding, life.next_funding, life.cfg.expiry) {
                    (Some(f), Some(next), _) => perpetual_fair_price(
                        index,
                        life.rate,
                        self.now,
                        next,
                        f.schedule.interval_ns,
                    ),
                    // A dated future: the index plus the smoothed fair basis for the time
                    // left (zero basis if none is configured or no sample was usable yet).
                    (_, _, Some(expiry)) => {
                        let rate = life.basis.map_or(Rate(0), |b| b.rate());
                        futures_fair_price(index, rate, self.now, expiry)
                    }
                    _ => index,
                }
            }
        };
        Some(price.max(Price(1)).min(mk.inst.max_price))
    }

    /// One premium-index sample per sampling period, from the impact prices of the book.
    fn sample_premium(&mut self, market: MarketId, every: i64, notional: Money) {
        let m = market.0 as usize;
        let now = self.now;
        let next = *self.markets[m].life.next_sample.get_or_insert(now);
        if now < next {
            return;
        }
        self.markets[m].life.next_sample = Some(Timestamp(now.0 - now.0.rem_euclid(every) + every));
        let Some(index) = self.markets[m].index else { return };
        let bid = self.impact_price(market, Side::Buy, notional);
        let ask = self.impact_price(market, Side::Sell, notional);
        let sample = premium_index(bid, ask, self.markets[m].mark, index);
        self.markets[m].life.premium.add(sample);
    }

    /// The price at which a market order of `notional` on `side` of the book would finish
    /// (the worst level it reaches); `None` when the shown book is too thin.
    fn impact_price(&self, market: MarketId, side: Side, notional: Money) -> Option<Price> {
        let mut levels = [Level::default(); 32];
        let n = self.books[market.0 as usize].depth(side, &mut levels);
        let inst = &self.markets[market.0 as usize].inst;
        let mut filled: i128 = 0;
        for level in &levels[..n] {
            filled += inst.value(level.visible, level.price).unsigned_abs() as i128;
            if filled >= notional as i128 {
                return Some(level.price);
            }
        }
        None
    }

    /// Every open position pays or receives `mark value × rate` through the clearing entry.
    fn pay_funding<S: EventSink>(&mut self, seq: Seq, market: MarketId, rate: Rate, sink: &mut S) {
        let m = market.0 as usize;
        let currency = self.markets[m].inst.settle;
        let mark = self.markets[m].mark;
        // Canonical order (by account), whatever the layout of the open list.
        let mut accounts = std::mem::take(&mut self.scratch);
        accounts.clear();
        for shard in &self.shards {
            accounts.extend_from_slice(&shard.open[m].accounts);
        }
        accounts.sort_unstable();
        let entry = |e: &Engine, a: u32| {
            if AccountId(a) == e.liquidator {
                Entry::Insurance
            } else {
                Entry::Wallet(AccountId(a))
            }
        };
        let mut owed: i128 = 0;
        // Payers first, into clearing.
        for &a in &accounts {
            let pos = self.position(AccountId(a), market);
            let mark_value = pos.mark_value(&self.markets[m].inst, mark);
            let change = funding_payment(pos.qty, mark_value, rate);
            if change < 0 {
                let from = entry(self, a);
                let paid = (-change).min(self.ledger.balance(from, currency));
                if paid > 0 {
                    crate::engine::edit(&mut self.ledger)
                        .transfer(currency, from, Entry::Clearing, paid)
                        .expect("covered");
                }
                let account = AccountId(a);
                sink.emit(Event::FundingPaid { seq, account, market, amount: -paid, rate });
            } else {
                owed += change as i128;
            }
        }
        // A shortfall (payers who could not pay in full, or receivers' truncation adding up
        // past the payers') comes from the fund as far as it can pay; whatever it cannot is
        // short-paid to the last receivers in account order (never a halt over a rounding).
        let in_clearing = self.ledger.balance(Entry::Clearing, currency) as i128;
        if owed > in_clearing {
            let need = Money::try_from(owed - in_clearing).expect("fits");
            let can = need.min(self.ledger.balance(Entry::Insurance, currency));
            if can > 0 {
                crate::engine::edit(&mut self.ledger)
                    .transfer(currency, Entry::Insurance, Entry::Clearing, can)
                    .expect("held");
            }
        }
        for &a in &accounts {
            let pos = self.position(AccountId(a), market);
            let mark_value = pos.mark_value(&self.markets[m].inst, mark);
            let change = funding_payment(pos.qty, mark_value, rate);
            let change = change.min(self.ledger.balance(Entry::Clearing, currency));
            if change > 0 {
                let to = entry(self, a);
                crate::engine::edit(&mut self.ledger)
                    .transfer(currency, Entry::Clearing, to, change)
                    .expect("funded");
                let account = AccountId(a);
                sink.emit(Event::FundingPaid { seq, account, market, amount: change, rate });
            }
        }
        // The residue (payers' rounding in the fund's favour) goes to the fund.
        let left = self.ledger.balance(Entry::Clearing, currency);
        if left > 0 {
            crate::engine::edit(&mut self.ledger)
                .transfer(currency, Entry::Clearing, Entry::Insurance, left)
                .expect("held");
        }
        self.scratch = accounts;
    }

    /// Settle a dated future at the TWAP of its index over the 30 minutes before expiry:
    /// cancel every order, close every position at that price against the liquidation
    /// engine (which ends flat: Σ positions is 0), and close the market.
    fn settle<S: EventSink>(
        &mut self,
        seq: Seq,
        market: MarketId,
        expiry: Timestamp,
        sink: &mut S,
    ) {
        let m = market.0 as usize;
        let mk = &mut self.markets[m];
        let twap = mk.life.twap.twap(expiry, SETTLEMENT_WINDOW_NS).map(|t| t.price);
        let price = twap.or(mk.index).unwrap_or(mk.mark);
        let mut working = Vec::new();
        self.orders.for_each_in(market, |slot, r| working.push((r.id, slot)));
        working.sort_unstable();
        for (_, slot) in working {
            self.cancel_slot(seq, slot, CancelReason::Settlement, sink);
        }
        if self.halt.is_some() {
            return;
        }
        let mut accounts: Vec<u32> =
            self.shards.iter().flat_map(|s| s.open[m].accounts.iter().copied()).collect();
        accounts.sort_unstable();
        for a in accounts {
            let account = AccountId(a);
            if account == self.liquidator {
                continue;
            }
            let qty = self.position(account, market).qty;
            let closing = if qty > 0 { Side::Sell } else { Side::Buy };
            self.trade_with_liquidator(
                seq,
                account,
                market,
                closing,
                amdahl_types::Qty(qty.abs()),
                price,
                sink,
            );
            if self.halt.is_some() {
                return;
            }
            sink.emit(Event::SettledPosition { seq, account, market, qty, price });
        }
        debug_assert_eq!(self.position(self.liquidator, market).qty, 0);
        let mk = &mut self.markets[m];
        mk.life.settled = true;
        mk.mark = price;
        // The cached value rules follow the mark wherever it moves (no position is left to
        // value, but a stale unit would be a trap for the next reader).
        mk.mark_unit = crate::engine::unit_at(&mk.inst, price);
        mk.mark_linear = crate::remargin::LinearValue::new(&mk.inst, price);
        self.full_audit_due = true;
        sink.emit(Event::Settled { seq, market, price });
    }

    /// `Command::SetRiskLimit`: the base limit plus whole steps; refused when position and
    /// orders exceed it, or when the higher margins it brings cannot be carried.
    pub(crate) fn set_risk_limit<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        market: MarketId,
        limit: Money,
        sink: &mut S,
    ) {
        if !self.known_account(account) {
            return self.reject(seq, account, RejectReason::UnknownAccount, 0, sink);
        }
        if !self.known_market(market) {
            return self.reject(seq, account, RejectReason::UnknownMarket, 0, sink);
        }
        let inst = &self.markets[market.0 as usize].inst;
        let above = limit - inst.risk_limit;
        let step = inst.risk_step.max(1);
        // At most 100 steps: past that the maintenance rate alone would exceed 50%.
        if above < 0 || above % step != 0 || above / step > 100 {
            return self.reject(seq, account, RejectReason::InvalidRiskLimit, 0, sink);
        }
        let steps = (above / step) as u32;
        let i = self.pm(account, market);
        if self.accounts[i].gross_value(&self.positions[i]) > limit as i128 {
            return self.reject(seq, account, RejectReason::RiskLimitExceeded, 0, sink);
        }
        let currency = inst.settle;
        let old = self.positions[i].risk_steps;
        let before = self.available(account, currency);
        self.positions[i].risk_steps = steps;
        self.sync_position(account, market);
        let after = self.available(account, currency);
        let refusal = if after < 0 && after < before {
            Some(RejectReason::InsufficientAvailableBalance)
        } else if self.is_liquidatable(account, market) {
            Some(RejectReason::WouldLiquidate)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.positions[i].risk_steps = old;
            self.sync_position(account, market);
            return self.reject(seq, account, reason, 0, sink);
        }
        sink.emit(Event::RiskLimitChanged { seq, account, market, limit });
    }

    /// `Command::TransferMargin`: margin into or out of an isolated position. Out is
    /// refused below the position's initial margin (only what was transferred in can
    /// leave).
    pub(crate) fn transfer_margin<S: EventSink>(
        &mut self,
        seq: Seq,
        account: AccountId,
        market: MarketId,
        amount: Money,
        sink: &mut S,
    ) {
        if !self.known_account(account) {
            return self.reject(seq, account, RejectReason::UnknownAccount, 0, sink);
        }
        if !self.known_market(market) {
            return self.reject(seq, account, RejectReason::UnknownMarket, 0, sink);
        }
        let i = self.pm(account, market);
        if amount == 0 || self.positions[i].leverage == Leverage::CROSS {
            return self.reject(seq, account, RejectReason::InvalidTransfer, 0, sink);
        }
        let currency = self.markets[market.0 as usize].inst.settle;
        if amount > 0 && self.available(account, currency) < amount {
            return self.reject(seq, account, RejectReason::InsufficientAvailableBalance, 0, sink);
        }
        if amount < 0 && self.extra_margin[i] + amount < 0 {
            return self.reject(seq, account, RejectReason::InvalidTransfer, 0, sink);
        }
        self.extra_margin[i] += amount;
        self.sync_position(account, market);
        if amount < 0 && self.is_liquidatable(account, market) {
            // Margin out may not leave the position under maintenance at the mark.
            self.extra_margin[i] -= amount;
            self.sync_position(account, market);
            return self.reject(seq, account, RejectReason::WouldLiquidate, 0, sink);
        }
        sink.emit(Event::MarginTransferred { seq, account, market, amount });
    }
}
