//! The order book of one market: price-time priority, allocation-free in steady state.
//!
//! API CONTRACT (the engine, the LOBSTER harness and the benches are written against it;
//! change it only together with them).
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
//!
//! # Data structure
//!
//! Everything lives in flat arrays sized by `BookConfig` in `Book::new`; nothing
//! allocates afterwards, and no `HashMap` is consulted on the matching path.
//!
//! - **Order pool**: a slab of `max_orders` nodes with an intrusive free list. An
//!   `OrderHandle` is the slot index, so `cancel`, `reduce` and `get` are one array access.
//!   A node is exactly one 64-byte cache line (aligned): the order, its displayed slice and
//!   `prev`/`next` slot indices, making it a member of an intrusive doubly-linked FIFO:
//!   unlinking from the middle of a queue is O(1) and touches three lines (the order and
//!   its two neighbours). The node stores no level: `ladder[price]` finds it. A vacant slot
//!   has zero leaves (a resting order never does), which turns a handle to a freed slot into
//!   a loud panic instead of silent corruption (a handle to a slot freed *and reused*
//!   cannot be told apart: the engine must drop handles when
//!   `Match::Fill { maker_leaves: 0 }`, `SelfTradeCancel` or `cancel` says so).
//! - **Level pool**: `min(max_orders, max_price)` level slots with a free list (a non-empty
//!   level holds at least one order at one valid price, so levels outnumber neither). A
//!   level holds two FIFO queues, displayed then hidden, and the aggregates an L2 feed
//!   needs (visible, total, count), so `depth` never walks orders.
//! - **Price ladder**: a dense `Vec<u32>` from tick to level slot over `0..=max_price`.
//!   One ladder serves both sides: the book is never crossed, so a tick holds bids or asks,
//!   never both. Inserting at an existing level is one lookup and a tail link; a new level
//!   is one lookup, one slot off the free list and two bit sets.
//! - **Occupancy bitmaps**: per side, a two-level bitmap (`u64` words plus a summary word
//!   per 64 words) of ticks with a level. The best price is cached per side; when the best
//!   level empties, the next one is found with a few `leading_zeros`/`trailing_zeros`
//!   instead of walking empty ticks.
//!
//! Memory per tick: 4 bytes of ladder plus 2 × (1 + 1/64) bits of bitmap ≈ 4.26 bytes, so
//! 2,000,000 ticks cost about 8.5 MB, plus one level slot (48 bytes) per tick or per order,
//! whichever is fewer. Per order: one node (64 bytes), so 1,000,000 orders cost 64 MB.
//!
//! # Invariants (checked by `Book::assert_invariants`)
//!
//! - Best bid < best ask whenever both exist.
//! - A level is in the ladder and its side's bitmap iff it holds at least one order.
//! - `visible` = the sum of displayed slices of the displayed queue; `total` = the sum of
//!   leaves of both queues; every resting order has leaves > 0 and a displayed order has a
//!   slice of `min(display, leaves)` at rest and `1..=min(display, leaves)` while matching.
//!
//! # Limits
//!
//! `max_orders < u32::MAX` and `1 <= max_price < u32::MAX` ticks (asserted in `new`).
#![forbid(unsafe_code)]

mod bitmap;
#[cfg(test)]
mod tests;

use bitmap::PriceBitmap;

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
    SelfTradeCancel {
        maker: OrderId,
        maker_account: AccountId,
        maker_handle: OrderHandle,
        leaves: Qty,
    },
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

/// The end of a queue or free list.
const NIL: u32 = u32::MAX;

/// A slot of the order pool: a resting order and its links in its level's queue.
///
/// Exactly one 64-byte cache line (aligned to it), so touching an order (cancel, fill, a
/// queue neighbour's link) costs one line. The level is not stored: `ladder[price]` finds
/// it. A vacant slot has `order.leaves == 0` (a resting order always has leaves > 0).
#[derive(Clone, Copy)]
#[repr(align(64))]
struct OrderNode {
    order: RestingOrder,
    /// The displayed slice still to fill; zero for hidden orders.
    shown: Qty,
    /// Neighbours in the level queue; `next` doubles as the free-list link.
    prev: u32,
    next: u32,
}

impl OrderNode {
    const VACANT: OrderNode = OrderNode {
        order: RestingOrder {
            id: OrderId(0),
            account: AccountId(0),
            side: Side::Buy,
            price: Price(0),
            leaves: Qty(0),
            display: None,
        },
        shown: Qty(0),
        prev: NIL,
        next: NIL,
    };

    /// Does the slot hold a resting order?
    #[inline]
    fn in_use(&self) -> bool {
        self.order.leaves.0 > 0
    }

    /// Fully hidden orders queue behind every displayed order of their level.
    #[inline]
    fn is_hidden(&self) -> bool {
        self.order.display == Some(Qty::ZERO)
    }
}

/// A fresh displayed slice: `min(display, leaves)`; `None` displays everything.
#[inline]
fn slice(order: &RestingOrder) -> Qty {
    order.display.map_or(order.leaves, |display| display.min(order.leaves))
}

/// Does a taker on `side` with `limit` accept a maker at `price`?
#[inline]
fn within_limit(side: Side, limit: Option<Price>, price: i64) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(limit)) => price <= limit.0,
        (Side::Sell, Some(limit)) => price >= limit.0,
    }
}

/// An intrusive FIFO of order slots.
#[derive(Clone, Copy)]
struct Queue {
    head: u32,
    tail: u32,
}

impl Queue {
    const EMPTY: Queue = Queue { head: NIL, tail: NIL };

    #[inline]
    fn push_back(&mut self, orders: &mut [OrderNode], slot: u32) {
        let node = &mut orders[slot as usize];
        node.prev = self.tail;
        node.next = NIL;
        match self.tail {
            NIL => self.head = slot,
            tail => orders[tail as usize].next = slot,
        }
        self.tail = slot;
    }

    #[inline]
    fn unlink(&mut self, orders: &mut [OrderNode], slot: u32) {
        let OrderNode { prev, next, .. } = orders[slot as usize];
        match prev {
            NIL => self.head = next,
            prev => orders[prev as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => orders[next as usize].prev = prev,
        }
    }
}

/// A slot of the level pool: one price of one side.
#[derive(Clone, Copy)]
struct PriceLevel {
    price: Price,
    visible: Qty,
    total: Qty,
    displayed: Queue,
    hidden: Queue,
    count: u32,
    /// The free-list link while the slot is vacant.
    next_free: u32,
}

impl PriceLevel {
    const VACANT: PriceLevel = PriceLevel {
        price: Price(0),
        visible: Qty(0),
        total: Qty(0),
        displayed: Queue::EMPTY,
        hidden: Queue::EMPTY,
        count: 0,
        next_free: NIL,
    };

    /// The order that trades next here: displayed FIFO first, then hidden FIFO.
    #[inline]
    fn front(&self) -> u32 {
        match self.displayed.head {
            NIL => self.hidden.head,
            head => head,
        }
    }
}

const _: () = assert!(size_of::<OrderNode>() == 64);
const _: () = assert!(size_of::<PriceLevel>() <= 48);

pub struct Book {
    config: BookConfig,
    orders: Vec<OrderNode>,
    free_order: u32,
    levels: Vec<PriceLevel>,
    free_level: u32,
    /// Tick → level slot (`NIL` when no level), shared by both sides.
    ladder: Vec<u32>,
    /// Per side (`Side::index`), the ticks that hold a level.
    occupied: [PriceBitmap; 2],
    /// Per side, the best price in ticks; 0 when the side is empty (prices start at 1).
    best: [i64; 2],
    len: u32,
}

impl Book {
    /// Allocates every structure for `config` up front.
    pub fn new(config: BookConfig) -> Book {
        assert!(config.max_orders < NIL, "max_orders must be below u32::MAX");
        assert!(
            (1..i64::from(u32::MAX)).contains(&config.max_price.0),
            "max_price must be in 1..u32::MAX ticks, got {}",
            config.max_price.0
        );
        let max_tick = config.max_price.0 as u32;
        let capacity = config.max_orders as usize;
        let mut orders = vec![OrderNode::VACANT; capacity];
        for (slot, node) in orders.iter_mut().enumerate() {
            node.next = if slot + 1 < capacity { slot as u32 + 1 } else { NIL };
        }
        // A level holds at least one order at one valid price: no more levels than either.
        let level_capacity = capacity.min(max_tick as usize);
        let mut levels = vec![PriceLevel::VACANT; level_capacity];
        for (slot, level) in levels.iter_mut().enumerate() {
            level.next_free = if slot + 1 < level_capacity { slot as u32 + 1 } else { NIL };
        }
        let first = |capacity| if capacity > 0 { 0 } else { NIL };
        Book {
            config,
            orders,
            free_order: first(capacity),
            levels,
            free_level: first(level_capacity),
            ladder: vec![NIL; max_tick as usize + 1],
            occupied: [PriceBitmap::new(max_tick), PriceBitmap::new(max_tick)],
            best: [0, 0],
            len: 0,
        }
    }
    pub fn config(&self) -> BookConfig {
        self.config
    }
    /// Number of resting orders.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The best price with any resting quantity (hidden included) on `side`.
    #[inline]
    pub fn best(&self, side: Side) -> Option<Price> {
        match self.best[side.index()] {
            0 => None,
            price => Some(Price(price)),
        }
    }
    pub fn best_bid(&self) -> Option<Price> {
        self.best(Side::Buy)
    }
    pub fn best_ask(&self) -> Option<Price> {
        self.best(Side::Sell)
    }
    /// Would an order of `side` at `price` trade against the opposite side now?
    #[inline]
    pub fn would_cross(&self, side: Side, price: Price) -> bool {
        match self.best[side.opposite().index()] {
            0 => false,
            best => within_limit(side, Some(price), best),
        }
    }
    /// How much an incoming order could fill, up to `want`, at prices no worse than
    /// `limit`, ignoring resting orders of `account` (they would be self-trade cancelled,
    /// not filled). Used for FillOrKill; stops scanning once `want` is reached.
    pub fn fillable(&self, side: Side, limit: Option<Price>, account: AccountId, want: Qty) -> Qty {
        let maker_side = side.opposite();
        let mut found = Qty::ZERO;
        let mut price = self.best[maker_side.index()];
        while found < want && price != 0 && within_limit(side, limit, price) {
            let level = &self.levels[self.ladder[price as usize] as usize];
            found += self.level_fillable(level, account, want - found);
            price = self.next_price(maker_side, price);
        }
        found.min(want)
    }
    /// Match `taker` against the opposite side, best price first, FIFO within a level.
    /// Calls `on_match` for every fill and self-trade cancel, in order. Returns the
    /// taker's unfilled quantity. Never rests the taker.
    pub fn take(&mut self, taker: Taker, mut on_match: impl FnMut(Match)) -> Qty {
        assert!(taker.qty.0 >= 0, "taker {:?} has negative qty", taker.id);
        let maker_side = taker.side.opposite();
        let mut remaining = taker.qty;
        while remaining.0 > 0 {
            let price = self.best[maker_side.index()];
            if price == 0 || !within_limit(taker.side, taker.limit, price) {
                break;
            }
            let level = self.ladder[price as usize];
            remaining = self.take_level(level, &taker, remaining, &mut on_match);
        }
        remaining
    }
    /// Add a non-crossing order at the tail of its level.
    pub fn rest(&mut self, order: RestingOrder) -> Result<OrderHandle, BookError> {
        assert!(order.leaves.0 > 0, "resting order {:?} needs leaves > 0", order.id);
        assert!(
            order.display.is_none_or(|display| display.0 >= 0),
            "resting order {:?} has a negative display",
            order.id
        );
        if !(1..=self.config.max_price.0).contains(&order.price.0) {
            return Err(BookError::PriceOutOfRange);
        }
        if self.would_cross(order.side, order.price) {
            return Err(BookError::WouldCross);
        }
        let slot = match self.free_order {
            NIL => return Err(BookError::Full),
            slot => slot,
        };
        self.free_order = self.orders[slot as usize].next;
        let level = self.level_for(order.side, order.price);
        let shown = slice(&order);
        self.orders[slot as usize] = OrderNode { order, shown, prev: NIL, next: NIL };
        let lvl = &mut self.levels[level as usize];
        if order.display == Some(Qty::ZERO) {
            lvl.hidden.push_back(&mut self.orders, slot);
        } else {
            lvl.displayed.push_back(&mut self.orders, slot);
        }
        lvl.visible += shown;
        lvl.total += order.leaves;
        lvl.count += 1;
        self.len += 1;
        Ok(OrderHandle(slot))
    }
    /// Remove a resting order; returns it as it was (with its current leaves).
    /// Panics on a stale handle: that is an engine bug.
    pub fn cancel(&mut self, handle: OrderHandle) -> RestingOrder {
        let price = self.node(handle).order.price; // Panics on a stale handle first.
        self.remove_order(handle.0, self.ladder[price.0 as usize])
    }
    /// Lower a resting order's leaves in place, keeping its time priority
    /// (`0 < new_leaves < leaves`). A displayed slice larger than the new leaves shrinks.
    pub fn reduce(&mut self, handle: OrderHandle, new_leaves: Qty) {
        let node = self.node(handle);
        let (leaves, shown) = (node.order.leaves, node.shown);
        assert!(
            Qty::ZERO < new_leaves && new_leaves < leaves,
            "reduce of {:?} to {new_leaves:?} is outside 0 < new_leaves < {leaves:?}",
            node.order.id
        );
        let new_shown = shown.min(new_leaves);
        let node = &mut self.orders[handle.0 as usize];
        node.order.leaves = new_leaves;
        node.shown = new_shown;
        let level = &mut self.levels[self.ladder[node.order.price.0 as usize] as usize];
        level.total -= leaves - new_leaves;
        level.visible -= shown - new_shown;
    }
    /// The resting order behind a handle.
    #[inline]
    pub fn get(&self, handle: OrderHandle) -> &RestingOrder {
        &self.node(handle).order
    }
    /// The displayed slice of a resting order right now (zero when hidden).
    #[inline]
    pub fn displayed(&self, handle: OrderHandle) -> Qty {
        self.node(handle).shown
    }
    /// Fills `out` with the best levels of `side` that have visible quantity, best first;
    /// returns how many were written. Hidden-only levels are not shown (as in an L2 feed).
    pub fn depth(&self, side: Side, out: &mut [Level]) -> usize {
        let mut written = 0;
        let mut price = self.best[side.index()];
        while price != 0 && written < out.len() {
            let level = &self.levels[self.ladder[price as usize] as usize];
            if level.visible.0 > 0 {
                out[written] =
                    Level { price: level.price, visible: level.visible, total: level.total };
                written += 1;
            }
            price = self.next_price(side, price);
        }
        written
    }
    /// Every resting order of `side`, best price first, in matching order within a level
    /// (displayed FIFO, then hidden FIFO), with the currently displayed slice.
    /// For state hashing, audits and tests.
    pub fn for_each_order(&self, side: Side, mut f: impl FnMut(OrderHandle, &RestingOrder, Qty)) {
        let mut price = self.best[side.index()];
        while price != 0 {
            let level = &self.levels[self.ladder[price as usize] as usize];
            for queue in [level.displayed, level.hidden] {
                let mut slot = queue.head;
                while slot != NIL {
                    let node = &self.orders[slot as usize];
                    f(OrderHandle(slot), &node.order, node.shown);
                    slot = node.next;
                }
            }
            price = self.next_price(side, price);
        }
    }

    /// Checks every structural invariant listed in the module docs; panics on the first
    /// violation. O(max_price + max_orders): for tests, audits and after snapshot restore.
    pub fn assert_invariants(&self) {
        if let (Some(bid), Some(ask)) = (self.best_bid(), self.best_ask()) {
            assert!(bid < ask, "book crossed: bid {bid:?} >= ask {ask:?}");
        }
        let mut orders_seen = 0;
        for side in [Side::Buy, Side::Sell] {
            let mut walked = Vec::new();
            let mut price = self.best[side.index()];
            while price != 0 {
                self.assert_level(side, price);
                orders_seen += self.levels[self.ladder[price as usize] as usize].count;
                walked.push(price);
                price = self.next_price(side, price);
            }
            let scanned: Vec<i64> = self.levels_on(side).collect();
            assert_eq!(walked, scanned, "{side:?} bitmap walk disagrees with the ladder");
        }
        assert_eq!(orders_seen, self.len, "order count");
        let in_use = self.orders.iter().filter(|node| node.in_use()).count();
        assert_eq!(in_use, self.len as usize, "in-use slots");
        let mut free = 0;
        let mut slot = self.free_order;
        while slot != NIL {
            assert!(!self.orders[slot as usize].in_use(), "free list holds a live slot");
            free += 1;
            slot = self.orders[slot as usize].next;
        }
        assert_eq!(free + self.len, self.config.max_orders, "free order slots");
        let ladder_levels = self.ladder.iter().filter(|&&level| level != NIL).count();
        let mut free_levels = 0;
        let mut level = self.free_level;
        while level != NIL {
            free_levels += 1;
            level = self.levels[level as usize].next_free;
        }
        assert_eq!(ladder_levels + free_levels, self.levels.len(), "level slots leaked");
    }

    /// Ticks holding a level on `side`, best first, found by a plain scan of the ladder
    /// (the independent witness `assert_invariants` compares the bitmap walk against).
    fn levels_on(&self, side: Side) -> impl Iterator<Item = i64> + '_ {
        let on_side = move |(tick, &level): (usize, &u32)| {
            (level != NIL && self.side_of(level) == side).then_some(tick as i64)
        };
        let ascending = self.ladder.iter().enumerate().filter_map(on_side);
        let mut ticks: Vec<i64> = ascending.collect();
        if side == Side::Buy {
            ticks.reverse();
        }
        ticks.into_iter()
    }

    fn side_of(&self, level: u32) -> Side {
        let head = self.levels[level as usize].front();
        assert_ne!(head, NIL, "empty level left in the ladder");
        self.orders[head as usize].order.side
    }

    fn assert_level(&self, side: Side, price: i64) {
        let slot = self.ladder[price as usize];
        assert_ne!(slot, NIL, "bitmap has tick {price} without a level");
        let level = &self.levels[slot as usize];
        assert_eq!(level.price.0, price, "level price");
        let (mut visible, mut total, mut count) = (Qty::ZERO, Qty::ZERO, 0);
        for (queue, hidden) in [(level.displayed, false), (level.hidden, true)] {
            let (mut slot_at, mut prev) = (queue.head, NIL);
            while slot_at != NIL {
                let node = &self.orders[slot_at as usize];
                assert!(node.in_use() && node.prev == prev, "queue links");
                assert_eq!((node.order.side, node.order.price.0), (side, price), "order place");
                assert_eq!(node.is_hidden(), hidden, "order in the wrong queue");
                assert!(node.order.leaves.0 > 0, "resting order without leaves");
                let cap = if hidden { Qty::ZERO } else { slice(&node.order) };
                assert!(node.shown <= cap && (hidden || node.shown.0 > 0), "displayed slice");
                visible += node.shown;
                total += node.order.leaves;
                count += 1;
                prev = slot_at;
                slot_at = node.next;
            }
            assert_eq!(queue.tail, prev, "queue tail");
        }
        assert!(count > 0, "empty level left in the ladder");
        assert_eq!(
            (level.visible, level.total, level.count),
            (visible, total, count),
            "aggregates"
        );
    }

    /// The slot behind a handle; a stale handle is an engine bug, so it panics.
    #[inline]
    fn node(&self, handle: OrderHandle) -> &OrderNode {
        match self.orders.get(handle.0 as usize) {
            Some(node) if node.in_use() => node,
            _ => panic!("stale order handle {handle:?}: the order has left the book"),
        }
    }

    /// The next worse occupied price on `side` after `price`, or 0.
    #[inline]
    fn next_price(&self, side: Side, price: i64) -> i64 {
        let occupied = &self.occupied[side.index()];
        let next = match side {
            Side::Buy => occupied.last_through(price as u32 - 1),
            Side::Sell => occupied.first_from(price as u32 + 1),
        };
        next.map_or(0, i64::from)
    }

    /// What `take` would fill at one level, up to `want`, skipping `account`'s orders.
    #[inline]
    fn level_fillable(&self, level: &PriceLevel, account: AccountId, want: Qty) -> Qty {
        let mut found = Qty::ZERO;
        for queue in [level.displayed, level.hidden] {
            let mut slot = queue.head;
            while slot != NIL && found < want {
                let node = &self.orders[slot as usize];
                if node.order.account != account {
                    found += node.order.leaves;
                }
                slot = node.next;
            }
        }
        found
    }

    /// The level slot for a new order at `price`, opening the level if needed.
    #[inline]
    fn level_for(&mut self, side: Side, price: Price) -> u32 {
        let tick = price.0 as usize;
        if self.ladder[tick] != NIL {
            return self.ladder[tick];
        }
        let slot = self.free_level;
        assert_ne!(slot, NIL, "level pool exhausted with order slots free");
        let level = &mut self.levels[slot as usize];
        self.free_level = level.next_free;
        *level = PriceLevel { price, ..PriceLevel::VACANT };
        self.ladder[tick] = slot;
        self.occupied[side.index()].insert(tick as u32);
        let best = &mut self.best[side.index()];
        if *best == 0 || within_limit(side.opposite(), Some(Price(*best)), price.0) {
            *best = price.0;
        }
        slot
    }

    /// Matches the taker against one level until it or the level is exhausted.
    #[inline]
    fn take_level(
        &mut self,
        level: u32,
        taker: &Taker,
        mut remaining: Qty,
        on_match: &mut impl FnMut(Match),
    ) -> Qty {
        while remaining.0 > 0 {
            let lvl = &self.levels[level as usize];
            let (maker, last) = (lvl.front(), lvl.count == 1);
            let maker_leaves = if self.orders[maker as usize].order.account == taker.account {
                let order = self.remove_order(maker, level);
                on_match(Match::SelfTradeCancel {
                    maker: order.id,
                    maker_account: order.account,
                    maker_handle: OrderHandle(maker),
                    leaves: order.leaves,
                });
                Qty::ZERO
            } else {
                let (filled, leaves) = self.fill_maker(maker, level, remaining, on_match);
                remaining -= filled;
                leaves
            };
            if last && maker_leaves.is_zero() {
                break;
            }
        }
        remaining
    }

    /// Fills one maker (of level slot `level`) for up to `want`; returns (filled, maker
    /// leaves after).
    #[inline]
    fn fill_maker(
        &mut self,
        maker: u32,
        level_slot: u32,
        want: Qty,
        on_match: &mut impl FnMut(Match),
    ) -> (Qty, Qty) {
        let node = &mut self.orders[maker as usize];
        let hidden = node.is_hidden();
        let qty = want.min(if hidden { node.order.leaves } else { node.shown });
        node.order.leaves -= qty;
        let level = &mut self.levels[level_slot as usize];
        level.total -= qty;
        if !hidden {
            node.shown -= qty;
            level.visible -= qty;
        }
        let (order, shown) = (node.order, node.shown);
        on_match(Match::Fill {
            maker: order.id,
            maker_account: order.account,
            maker_handle: OrderHandle(maker),
            price: order.price,
            qty,
            maker_leaves: order.leaves,
        });
        if order.leaves.is_zero() {
            self.remove_order(maker, level_slot);
        } else if !hidden && shown.is_zero() {
            self.refresh_iceberg(maker, level_slot);
        }
        (qty, order.leaves)
    }

    /// Shows a new slice of an iceberg at the tail of the displayed queue: each refresh
    /// loses time priority, so a reserve cannot jump orders that arrived after it.
    #[inline]
    fn refresh_iceberg(&mut self, maker: u32, level_slot: u32) {
        let node = &mut self.orders[maker as usize];
        node.shown = slice(&node.order);
        let shown = node.shown;
        let level = &mut self.levels[level_slot as usize];
        level.visible += shown;
        level.displayed.unlink(&mut self.orders, maker);
        level.displayed.push_back(&mut self.orders, maker);
    }

    /// Unlinks a live order (of level slot `level_slot`), frees its slot and closes its
    /// level if it was the last.
    #[inline]
    fn remove_order(&mut self, slot: u32, level_slot: u32) -> RestingOrder {
        let node = &mut self.orders[slot as usize];
        let (order, shown) = (node.order, node.shown);
        node.order.leaves = Qty::ZERO; // Vacant from here on.
        let level = &mut self.levels[level_slot as usize];
        if order.display == Some(Qty::ZERO) {
            level.hidden.unlink(&mut self.orders, slot);
        } else {
            level.displayed.unlink(&mut self.orders, slot);
        }
        level.visible -= shown;
        level.total -= order.leaves;
        level.count -= 1;
        self.orders[slot as usize].next = self.free_order;
        self.free_order = slot;
        self.len -= 1;
        if level.count == 0 {
            self.close_level(level_slot, order.side, order.price);
        }
        order
    }

    /// Takes an empty level out of the ladder and moves the side's best if it was the best.
    #[inline]
    fn close_level(&mut self, slot: u32, side: Side, price: Price) {
        let tick = price.0 as u32;
        self.ladder[tick as usize] = NIL;
        self.occupied[side.index()].remove(tick);
        if self.best[side.index()] == price.0 {
            self.best[side.index()] = self.next_price(side, price.0);
        }
        self.levels[slot as usize].next_free = self.free_level;
        self.free_level = slot;
    }
}
