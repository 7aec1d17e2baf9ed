//! Shared helpers for the benchmarks.
//!
//! The order-book benches feed our [`Book`] and the published `lobster` crate (v0.7)
//! **identical** operation streams ([`Op`]), generated once up front by a seeded PRNG or
//! converted from LOBSTER messages, so that only the books are timed.
//!
//! Both sides keep the state an engine needs to address orders by id: for ours that is
//! `FxHashMap<id, OrderHandle>` next to the book (the book itself is handle-addressed, as
//! the engine's order records hold the handle); `lobster` keeps its own id map inside.
//!
//! [`ticker`] is the remargin bench's engine, kept here so that the tests build it.
pub mod ticker;

use amdahl_book::{Book, BookConfig, Match, OrderHandle, RestingOrder, Taker};
use amdahl_types::{AccountId, OrderId, Price, Qty, Side};
use lobster::{OrderBook, OrderEvent, OrderType};
use rustc_hash::FxHashMap;

// ---------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------

/// SplitMix64: tiny, seeded, deterministic on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0), by 128-bit multiply (no modulo bias worth mentioning).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    pub fn side(&mut self) -> Side {
        if self.next_u64() & 1 == 0 { Side::Buy } else { Side::Sell }
    }
    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

/// One order-book operation, applied identically to both books.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// A limit order: trades whatever it crosses, then rests the remainder (GTC).
    Limit { id: u64, side: Side, price: i64, qty: i64 },
    /// A market order: trades up to `qty` at any price and never rests (IOC).
    Market { id: u64, side: Side, qty: i64 },
    /// Cancel by id; a no-op when the order is not resting (filled, or never added).
    Cancel { id: u64 },
}

/// Our book plus the id → handle map an engine keeps beside it.
pub struct Ours {
    pub book: Book,
    pub handles: FxHashMap<u64, OrderHandle>,
    /// Fills and traded quantity, to check both books did the same work.
    pub fills: u64,
    pub traded: i64,
}

/// A distinct account per order (ids below 2^31 map to themselves; the LOBSTER
/// anonymous range maps above), so the self-trade policy of our book never triggers, as
/// `lobster` has none.
fn account(id: u64) -> AccountId {
    AccountId(if id < 1 << 31 { id as u32 } else { 0x8000_0000 | (id as u32 & 0x7FFF_FFFF) })
}

/// Market orders' account: no resting order has it.
const MARKET_ACCOUNT: AccountId = AccountId(u32::MAX);

impl Ours {
    pub fn new(max_orders: u32, max_price: i64) -> Ours {
        Ours {
            book: Book::new(BookConfig { max_orders, max_price: Price(max_price) }),
            handles: FxHashMap::with_capacity_and_hasher(max_orders as usize, Default::default()),
            fills: 0,
            traded: 0,
        }
    }

    fn take(&mut self, id: u64, side: Side, limit: Option<Price>, qty: i64) -> i64 {
        let (handles, fills, traded) = (&mut self.handles, &mut self.fills, &mut self.traded);
        let account = if limit.is_some() { account(id) } else { MARKET_ACCOUNT };
        let taker = Taker { id: OrderId(id), account, side, limit, qty: Qty(qty) };
        self.book
            .take(taker, |m| {
                if let Match::Fill { maker, qty, maker_leaves, .. } = m {
                    *fills += 1;
                    *traded += qty.0;
                    if maker_leaves.is_zero() {
                        handles.remove(&maker.0);
                    }
                }
            })
            .0
    }

    #[inline]
    pub fn limit(&mut self, id: u64, side: Side, price: i64, qty: i64) {
        let left = if self.book.would_cross(side, Price(price)) {
            self.take(id, side, Some(Price(price)), qty)
        } else {
            qty
        };
        if left > 0 {
            let order = RestingOrder {
                id: OrderId(id),
                account: account(id),
                side,
                price: Price(price),
                leaves: Qty(left),
                display: None,
            };
            let h = self.book.rest(order).expect("bench order rests");
            self.handles.insert(id, h);
        }
    }

    #[inline]
    pub fn market(&mut self, id: u64, side: Side, qty: i64) {
        self.take(id, side, None, qty);
    }

    #[inline]
    pub fn cancel(&mut self, id: u64) {
        if let Some(h) = self.handles.remove(&id) {
            self.book.cancel(h);
        }
    }

    #[inline]
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Limit { id, side, price, qty } => self.limit(id, side, price, qty),
            Op::Market { id, side, qty } => self.market(id, side, qty),
            Op::Cancel { id } => self.cancel(id),
        }
    }

    pub fn run(&mut self, ops: &[Op]) {
        for op in ops {
            self.apply(op);
        }
    }
}

/// The `lobster` crate's book.
pub struct Theirs {
    pub book: OrderBook,
    pub fills: u64,
    pub traded: i64,
}

fn their_side(side: Side) -> lobster::Side {
    match side {
        Side::Buy => lobster::Side::Bid,
        Side::Sell => lobster::Side::Ask,
    }
}

impl Theirs {
    /// `capacity` orders pre-allocated in its arena (as ours pre-allocates `max_orders`).
    pub fn new(capacity: usize) -> Theirs {
        Theirs { book: OrderBook::new(capacity, 10, false), fills: 0, traded: 0 }
    }

    fn count(&mut self, e: OrderEvent) {
        if let OrderEvent::Filled { fills, filled_qty, .. }
        | OrderEvent::PartiallyFilled { fills, filled_qty, .. } = e
        {
            self.fills += fills.len() as u64;
            self.traded += filled_qty as i64;
        }
    }

    #[inline]
    pub fn apply(&mut self, op: &Op) {
        let e = match *op {
            Op::Limit { id, side, price, qty } => self.book.execute(OrderType::Limit {
                id: u128::from(id),
                side: their_side(side),
                qty: qty as u64,
                price: price as u64,
            }),
            Op::Market { id, side, qty } => self.book.execute(OrderType::Market {
                id: u128::from(id),
                side: their_side(side),
                qty: qty as u64,
            }),
            Op::Cancel { id } => self.book.execute(OrderType::Cancel { id: u128::from(id) }),
        };
        self.count(e);
    }

    pub fn run(&mut self, ops: &[Op]) {
        for op in ops {
            self.apply(op);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Synthetic scenarios
// ---------------------------------------------------------------------------------------

/// The mid price of the synthetic books, in ticks; asks rest above it, bids below.
pub const MID: i64 = 10_000;
/// `max_price` for the synthetic books.
pub const MAX_PRICE: i64 = 2 * MID;

/// `per_side` resting orders on each side, spread uniformly over `levels_per_side`
/// levels (asks `MID+1..`, bids `..MID-1`), quantities 1..=100, ids `first_id..`.
pub fn resting_book(seed: u64, per_side: usize, levels_per_side: i64, first_id: u64) -> Vec<Op> {
    let mut rng = SplitMix64(seed);
    let mut id = first_id;
    let mut ops = Vec::with_capacity(2 * per_side);
    for _ in 0..per_side {
        for side in [Side::Buy, Side::Sell] {
            let offset = rng.range(1, levels_per_side);
            let price = if side == Side::Buy { MID - offset } else { MID + offset };
            ops.push(Op::Limit { id, side, price, qty: rng.range(1, 100) });
            id += 1;
        }
    }
    ops
}

/// Scenario (a): a deep book to cross into, and the crossing limit orders.
pub struct Crossing {
    /// 200 levels × 50 orders per side (10,000 per side, ~500,000 shares).
    pub book: Vec<Op>,
    /// Limit orders of random side and quantity 1..=100 priced through the whole book
    /// (marketable limits): each fills completely against about two makers and never
    /// rests. Their total (~250,000 shares per side) is half the depth, so the book never
    /// runs dry within one batch.
    pub takers: Vec<Op>,
}

pub fn crossing(seed: u64, takers: usize) -> Crossing {
    let book = resting_book(seed, 10_000, 200, 1);
    let mut rng = SplitMix64(seed ^ 0xC505);
    let first = book.len() as u64 + 1;
    let takers = (0..takers as u64)
        .map(|i| {
            let side = rng.side();
            let price = if side == Side::Buy { MID + 200 } else { MID - 200 };
            Op::Limit { id: first + i, side, price, qty: rng.range(1, 100) }
        })
        .collect();
    Crossing { book, takers }
}

/// Scenario (b): `n` non-crossing limit orders spread over 200 price levels (100 per
/// side), random side and quantity.
pub fn resting_adds(seed: u64, n: usize) -> Vec<Op> {
    let mut ops = resting_book(seed, n.div_ceil(2), 100, 1);
    ops.truncate(n);
    ops
}

/// Scenario (c): `n` resting orders over 200 levels (100 per side), and a cancel of each
/// in random order.
pub struct Cancels {
    pub book: Vec<Op>,
    pub cancels: Vec<Op>,
}

pub fn cancels(seed: u64, n: usize) -> Cancels {
    let book = resting_adds(seed, n);
    let mut cancels: Vec<Op> = book
        .iter()
        .map(|op| match *op {
            Op::Limit { id, .. } => Op::Cancel { id },
            _ => unreachable!(),
        })
        .collect();
    SplitMix64(seed ^ 0xCA9C).shuffle(&mut cancels);
    Cancels { book, cancels }
}

// ---------------------------------------------------------------------------------------
// LOBSTER day as an operation stream
// ---------------------------------------------------------------------------------------

/// The LOBSTER day as book operations, identical for both books:
/// - row 0 seeds one anonymous limit order per level (ids from `ANON_ID_BASE`);
/// - type 1 → `Limit` (never crosses in this data);
/// - type 2 (partial cancel) → skipped for both books: `lobster` has no reduce, and
///   cancel + re-add would lose time priority, so the two books would diverge;
/// - type 3 → `Cancel` (a no-op on both when the id never rested);
/// - type 4 → `Market` of the opposite side for Size;
/// - types 5, 6, 7 → nothing (no visible book change).
///
/// There is no window re-seeding (that is the correctness harness's job), so the books
/// drift from NASDAQ's over the day; both drift identically.
pub fn lobster_ops(
    messages: &[amdahl_tests::lobster::Message],
    snaps: &amdahl_tests::lobster::Snapshots,
) -> Vec<Op> {
    let mut ops = Vec::with_capacity(messages.len() + 2 * snaps.levels);
    let mut anon = amdahl_tests::lobster::ANON_ID_BASE;
    if !snaps.is_empty() {
        for side in [Side::Buy, Side::Sell] {
            for l in snaps.row(0) {
                if let Some((price, qty)) = l.get(side) {
                    ops.push(Op::Limit { id: anon, side, price, qty });
                    anon += 1;
                }
            }
        }
    }
    let mut taker = amdahl_tests::lobster::TAKER_ID_BASE;
    for m in messages.iter().skip(1) {
        match m.kind {
            1 => ops.push(Op::Limit { id: m.id, side: m.side, price: m.price, qty: m.size }),
            3 => ops.push(Op::Cancel { id: m.id }),
            4 => {
                ops.push(Op::Market { id: taker, side: m.side.opposite(), qty: m.size });
                taker += 1;
            }
            _ => {}
        }
    }
    ops
}

/// Every visible level, as (price, quantity): bids best first, then asks best first.
pub type Depth = (Vec<(i64, i64)>, Vec<(i64, i64)>);

impl Ours {
    /// The whole book by level, to check both books agree.
    pub fn depth(&self) -> Depth {
        let mut buf = vec![amdahl_book::Level::default(); 1 << 16];
        let mut side = |s| {
            let n = self.book.depth(s, &mut buf);
            buf[..n].iter().map(|l| (l.price.0, l.visible.0)).collect::<Vec<_>>()
        };
        (side(Side::Buy), side(Side::Sell))
    }
}

impl Theirs {
    /// The whole book by level, to check both books agree.
    pub fn depth(&self) -> Depth {
        let d = self.book.depth(1 << 16); // only a capacity hint: it returns every level
        let level = |l: &lobster::BookLevel| (l.price as i64, l.qty as i64);
        (d.bids.iter().rev().map(level).collect(), d.asks.iter().map(level).collect())
    }
}
