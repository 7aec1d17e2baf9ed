//! The order book of one market: price-time priority, allocation-free in steady state.
//!
//! API CONTRACT (the engine, the LOBSTER harness and the benches are written against it;
//! change it only together with them). The implementation replaces the `todo!()`s.
//!
//! - The book knows nothing of money, margin or positions. The engine decides *whether*
//!   an order may trade; the book decides *with whom and in which order*.
//! - `take` matches an incoming order and never rests it; `rest` adds a non-crossing order
//!   to the tail of its level. The engine composes them (post-only, IOC, FOK, GTC, Day).
//! - Within a level: displayed orders (full or iceberg slices) in FIFO order first, then
//!   fully hidden orders (display 0) in FIFO order. An iceberg whose displayed slice is
//!   used up shows a new slice of `min(display, leaves)` at the *tail* of the displayed
//!   queue (it loses time priority on every refresh, as on BitMEX and CME).
//! - Self-trade policy: cancel the resting order. When an incoming order would match a
//!   resting order of the same account, the resting order is removed (reported as
//!   `Match::SelfTradeCancel`) and matching continues. The incoming order is never
//!   cancelled for it, so a trader cannot block their own aggressive flow.
//! - Every capacity is fixed at construction (`BookConfig`); running out is an error,
//!   never growth.
#![forbid(unsafe_code)]

use amdahl_types::{AccountId, OrderId, Price, Qty, Side};

/// Capacities, fixed at construction; nothing allocates afterwards.
#[derive(Clone, Copy, Debug)]
pub struct BookConfig {
    /// The most orders that can rest at once.
    pub max_orders: u32,
    /// The highest valid price in ticks; valid prices are `1..=max_price`.
    pub max_price: Price,
}

/// A resting order's slot in the book. Valid until the order leaves the book (filled,
/// cancelled); the owner (the engine) must drop it then.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OrderHandle(pub u32);

/// An order entering the book's resting queues.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RestingOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub side: Side,
    pub price: Price,
    /// Contracts still to fill (> 0).
    pub leaves: Qty,
    /// `None`: fully displayed; `Some(0)`: hidden; `Some(n)`: iceberg showing `n` at a time.
    pub display: Option<Qty>,
}

/// An incoming (aggressive) order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Taker {
    pub id: OrderId,
    pub account: AccountId,
    pub side: Side,
    /// The worst price it may trade at; `None` trades at any price (a Market order).
    pub limit: Option<Price>,
    pub qty: Qty,
}

/// What `take` reports, in the order it happened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Match {
    /// The taker traded `qty` at the maker's `price`. `maker_leaves == 0` means the maker
    /// left the book (its handle is now invalid).
    Fill {
        maker: OrderId,
        maker_account: AccountId,
        maker_handle: OrderHandle,
        price: Price,
        qty: Qty,
        maker_leaves: Qty,
    },
    /// A resting order of the taker's own account was removed (self-trade policy).
    SelfTradeCancel { maker: OrderId, maker_account: AccountId, maker_handle: OrderHandle, leaves: Qty },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BookError {
    /// `max_orders` orders are already resting.
    Full,
    /// The price is outside `1..=max_price`.
    PriceOutOfRange,
    /// The order would cross the opposite side (rest only non-crossing orders).
    WouldCross,
}

/// One price level as shown in an L2 feed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Level {
    pub price: Price,
    /// Displayed quantity (visible slices only: hidden and iceberg reserve excluded).
    pub visible: Qty,
    /// Everything resting at the price, hidden included.
    pub total: Qty,
}

pub struct Book {}

impl Book {
    /// Allocates every structure for `config` up front.
    pub fn new(config: BookConfig) -> Book {
        let _ = config;
        todo!()
    }
    pub fn config(&self) -> BookConfig {
        todo!()
    }
    /// Number of resting orders.
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The best price with any resting quantity (hidden included) on `side`.
    pub fn best(&self, side: Side) -> Option<Price> {
        let _ = side;
        todo!()
    }
    pub fn best_bid(&self) -> Option<Price> {
        self.best(Side::Buy)
    }
    pub fn best_ask(&self) -> Option<Price> {
        self.best(Side::Sell)
    }
    /// Would an order of `side` at `price` trade against the opposite side now?
    pub fn would_cross(&self, side: Side, price: Price) -> bool {
        let _ = (side, price);
        todo!()
    }
    /// How much an incoming order could fill, up to `want`, at prices no worse than
    /// `limit`, ignoring resting orders of `account` (they would be self-trade cancelled,
    /// not filled). Used for FillOrKill; stops scanning once `want` is reached.
    pub fn fillable(&self, side: Side, limit: Option<Price>, account: AccountId, want: Qty) -> Qty {
        let _ = (side, limit, account, want);
        todo!()
    }
    /// Match `taker` against the opposite side, best price first, FIFO within a level.
    /// Calls `on_match` for every fill and self-trade cancel, in order. Returns the
    /// taker's unfilled quantity. Never rests the taker.
    pub fn take(&mut self, taker: Taker, on_match: impl FnMut(Match)) -> Qty {
        let _ = (taker, on_match);
        todo!()
    }
    /// Add a non-crossing order at the tail of its level.
    pub fn rest(&mut self, order: RestingOrder) -> Result<OrderHandle, BookError> {
        let _ = order;
        todo!()
    }
    /// Remove a resting order; returns it as it was (with its current leaves).
    /// Panics on a stale handle: that is an engine bug.
    pub fn cancel(&mut self, handle: OrderHandle) -> RestingOrder {
        let _ = handle;
        todo!()
    }
    /// Lower a resting order's leaves in place, keeping its time priority
    /// (`0 < new_leaves < leaves`). A displayed slice larger than the new leaves shrinks.
    pub fn reduce(&mut self, handle: OrderHandle, new_leaves: Qty) {
        let _ = (handle, new_leaves);
        todo!()
    }
    /// The resting order behind a handle.
    pub fn get(&self, handle: OrderHandle) -> &RestingOrder {
        let _ = handle;
        todo!()
    }
    /// Fills `out` with the best levels of `side` that have visible quantity, best first;
    /// returns how many were written. Hidden-only levels are not shown (as in an L2 feed).
    pub fn depth(&self, side: Side, out: &mut [Level]) -> usize {
        let _ = (side, out);
        todo!()
    }
    /// Every resting order of `side`, best price first, in matching order within a level
    /// (displayed FIFO, then hidden FIFO), with the currently displayed slice.
    /// For state hashing, audits and tests.
    pub fn for_each_order(&self, side: Side, mut f: impl FnMut(OrderHandle, &RestingOrder, Qty)) {
        let _ = (side, &mut f);
        todo!()
    }
}
