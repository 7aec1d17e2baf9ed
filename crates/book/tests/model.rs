//! Differential test: the book against a naive reference book.
//!
//! The reference keeps resting orders in a plain `Vec` and re-sorts it for every decision
//! (price best-first, displayed before hidden, then arrival or refresh sequence). It is
//! slow and obviously right; the book must agree with it on every match report, on
//! `depth`, `fillable`, `best` and `for_each_order` after every step of a random command
//! sequence. Small price ranges and capacities make crossing, iceberg refreshes,
//! self-trades and `Full` common.

use amdahl_book::{Book, BookConfig, BookError, Level, Match, OrderHandle, RestingOrder, Taker};
use amdahl_types::{AccountId, OrderId, Price, Qty, Side};
use proptest::prelude::*;
use std::collections::BTreeMap;

const MAX_PRICE: i64 = 12;

#[derive(Clone, Copy, Debug)]
struct RefOrder {
    order: RestingOrder,
    shown: i64,
    /// Arrival or last iceberg refresh: later means further back in the queue.
    seq: u64,
}

impl RefOrder {
    fn hidden(&self) -> bool {
        self.order.display == Some(Qty(0))
    }
}

fn slice(order: &RestingOrder) -> i64 {
    order.display.map_or(order.leaves.0, |d| d.0.min(order.leaves.0))
}

fn acceptable(side: Side, limit: Option<i64>, price: i64) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(limit)) => price <= limit,
        (Side::Sell, Some(limit)) => price >= limit,
    }
}

/// A match with the handle left out (handles are checked separately against ids).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Report {
    Fill { maker: u64, account: u32, price: i64, qty: i64, leaves: i64 },
    SelfTradeCancel { maker: u64, account: u32, leaves: i64 },
}

struct RefBook {
    orders: Vec<RefOrder>,
    max_orders: usize,
    seq: u64,
}

impl RefBook {
    /// Indices of one side's orders in matching order.
    fn sorted(&self, side: Side) -> Vec<usize> {
        let mut idx: Vec<usize> =
            (0..self.orders.len()).filter(|&i| self.orders[i].order.side == side).collect();
        idx.sort_by_key(|&i| {
            let o = &self.orders[i];
            let price = if side == Side::Buy { -o.order.price.0 } else { o.order.price.0 };
            (price, o.hidden(), o.seq)
        });
        idx
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn take(&mut self, taker: Taker) -> (Vec<Report>, i64) {
        let mut reports = Vec::new();
        let mut remaining = taker.qty.0;
        while remaining > 0 {
            let Some(&i) = self.sorted(taker.side.opposite()).first() else { break };
            let maker = self.orders[i];
            if !acceptable(taker.side, taker.limit.map(|p| p.0), maker.order.price.0) {
                break;
            }
            let (id, account) = (maker.order.id.0, maker.order.account.0);
            if maker.order.account == taker.account {
                self.orders.remove(i);
                let leaves = maker.order.leaves.0;
                reports.push(Report::SelfTradeCancel { maker: id, account, leaves });
                continue;
            }
            let qty =
                remaining.min(if maker.hidden() { maker.order.leaves.0 } else { maker.shown });
            remaining -= qty;
            let seq = self.next_seq();
            let o = &mut self.orders[i];
            o.order.leaves.0 -= qty;
            if !o.hidden() {
                o.shown -= qty;
            }
            let (price, leaves) = (o.order.price.0, o.order.leaves.0);
            reports.push(Report::Fill { maker: id, account, price, qty, leaves });
            if leaves == 0 {
                self.orders.remove(i);
            } else if !o.hidden() && o.shown == 0 {
                o.shown = slice(&o.order);
                o.seq = seq;
            }
        }
        (reports, remaining)
    }

    fn rest(&mut self, order: RestingOrder) -> Result<(), BookError> {
        if !(1..=MAX_PRICE).contains(&order.price.0) {
            return Err(BookError::PriceOutOfRange);
        }
        let crosses = self.orders.iter().any(|o| {
            o.order.side != order.side
                && acceptable(order.side, Some(order.price.0), o.order.price.0)
        });
        if crosses {
            return Err(BookError::WouldCross);
        }
        if self.orders.len() == self.max_orders {
            return Err(BookError::Full);
        }
        let seq = self.next_seq();
        self.orders.push(RefOrder { order, shown: slice(&order), seq });
        Ok(())
    }

    fn position(&self, id: u64) -> usize {
        self.orders.iter().position(|o| o.order.id.0 == id).expect("live order")
    }

    fn cancel(&mut self, id: u64) -> RestingOrder {
        self.orders.remove(self.position(id)).order
    }

    fn reduce(&mut self, id: u64, new_leaves: i64) {
        let i = self.position(id);
        let o = &mut self.orders[i];
        o.order.leaves = Qty(new_leaves);
        o.shown = o.shown.min(new_leaves);
    }

    fn fillable(&self, side: Side, limit: Option<i64>, account: AccountId, want: i64) -> i64 {
        let total: i64 = self
            .orders
            .iter()
            .filter(|o| o.order.side != side && o.order.account != account)
            .filter(|o| acceptable(side, limit, o.order.price.0))
            .map(|o| o.order.leaves.0)
            .sum();
        total.min(want)
    }

    fn best(&self, side: Side) -> Option<Price> {
        self.sorted(side).first().map(|&i| self.orders[i].order.price)
    }

    fn depth(&self, side: Side) -> Vec<Level> {
        let mut levels: Vec<Level> = Vec::new();
        for i in self.sorted(side) {
            let o = &self.orders[i];
            match levels.last_mut() {
                Some(level) if level.price == o.order.price => {
                    level.visible.0 += o.shown;
                    level.total += o.order.leaves;
                }
                _ => levels.push(Level {
                    price: o.order.price,
                    visible: Qty(o.shown),
                    total: o.order.leaves,
                }),
            }
        }
        levels.retain(|level| level.visible.0 > 0);
        levels
    }

    fn queue(&self, side: Side) -> Vec<(RestingOrder, i64)> {
        self.sorted(side)
            .into_iter()
            .map(|i| (self.orders[i].order, self.orders[i].shown))
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// A GTC limit order: take up to the price, rest what is left.
    Limit {
        side: Side,
        price: i64,
        qty: i64,
        display: Option<i64>,
        account: u32,
    },
    /// A post-only order: rest or be rejected.
    Post {
        side: Side,
        price: i64,
        qty: i64,
        display: Option<i64>,
        account: u32,
    },
    Market {
        side: Side,
        qty: i64,
        account: u32,
    },
    Cancel {
        pick: usize,
    },
    Reduce {
        pick: usize,
        by: i64,
    },
    Fillable {
        side: Side,
        limit: Option<i64>,
        account: u32,
        want: i64,
    },
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}

fn display() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        4 => Just(None),
        2 => Just(Some(0)),
        3 => (1i64..=4).prop_map(Some),
        1 => Just(Some(100)),
    ]
}

/// Mostly mid-book prices, sometimes edges and out-of-range ticks.
fn price() -> impl Strategy<Value = i64> {
    prop_oneof![8 => 4i64..=9, 3 => 1i64..=MAX_PRICE, 1 => prop_oneof![Just(0i64), Just(13i64)]]
}

/// The fields of a new order: (side, price, qty, display, account).
fn new_order() -> impl Strategy<Value = (Side, i64, i64, Option<i64>, u32)> {
    (side(), price(), 1i64..=10, display(), 0u32..3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => new_order().prop_map(|(side, price, qty, display, account)| {
            Op::Limit { side, price, qty, display, account }
        }),
        3 => new_order().prop_map(|(side, price, qty, display, account)| {
            Op::Post { side, price, qty, display, account }
        }),
        1 => (side(), 1i64..=25, 0u32..3)
            .prop_map(|(side, qty, account)| Op::Market { side, qty, account }),
        3 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        2 => (any::<usize>(), 1i64..=9).prop_map(|(pick, by)| Op::Reduce { pick, by }),
        1 => (side(), proptest::option::of(price()), 0u32..3, 1i64..=30)
            .prop_map(|(side, limit, account, want)| Op::Fillable { side, limit, account, want }),
    ]
}

/// The book, the reference and the handles the engine would hold.
struct Harness {
    book: Book,
    model: RefBook,
    handles: BTreeMap<u64, OrderHandle>,
    next_id: u64,
}

impl Harness {
    fn new(max_orders: u32) -> Harness {
        let config = BookConfig { max_orders, max_price: Price(MAX_PRICE) };
        Harness {
            book: Book::new(config),
            model: RefBook { orders: Vec::new(), max_orders: max_orders as usize, seq: 0 },
            handles: BTreeMap::new(),
            next_id: 1,
        }
    }

    fn take(&mut self, taker: Taker) -> Qty {
        let mut matches = Vec::new();
        let left = self.book.take(taker, |m| matches.push(m));
        let reports: Vec<Report> = matches.iter().map(|m| self.report(m)).collect();
        let (expected, expected_left) = self.model.take(taker);
        assert_eq!(reports, expected, "matches of {taker:?}");
        assert_eq!(left.0, expected_left, "unfilled qty of {taker:?}");
        left
    }

    /// Checks the handle against the id and drops it when the maker left the book.
    fn report(&mut self, m: &Match) -> Report {
        let (maker, handle, report, gone) = match *m {
            Match::Fill { maker, maker_account, maker_handle, price, qty, maker_leaves } => {
                let report = Report::Fill {
                    maker: maker.0,
                    account: maker_account.0,
                    price: price.0,
                    qty: qty.0,
                    leaves: maker_leaves.0,
                };
                (maker.0, maker_handle, report, maker_leaves.0 == 0)
            }
            Match::SelfTradeCancel { maker, maker_account, maker_handle, leaves } => {
                let report = Report::SelfTradeCancel {
                    maker: maker.0,
                    account: maker_account.0,
                    leaves: leaves.0,
                };
                (maker.0, maker_handle, report, true)
            }
        };
        assert_eq!(self.handles.get(&maker), Some(&handle), "handle of maker {maker}");
        if gone {
            self.handles.remove(&maker);
        }
        report
    }

    fn rest(&mut self, order: RestingOrder) {
        let expected = self.model.rest(order);
        let actual = self.book.rest(order);
        assert_eq!(actual.map(|_| ()), expected, "rest of {order:?}");
        if let Ok(handle) = actual {
            assert!(
                !self.handles.values().any(|&h| h == handle),
                "handle {handle:?} reused while live"
            );
            self.handles.insert(order.id.0, handle);
        }
    }

    fn pick(&self, pick: usize) -> Option<(u64, OrderHandle)> {
        let n = self.handles.len();
        (n > 0)
            .then(|| self.handles.iter().nth(pick % n).map(|(&id, &h)| (id, h)).expect("in range"))
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Limit { side, price, qty, display, account } => {
                let id = self.new_id();
                let account = AccountId(account);
                let taker = Taker { id, account, side, limit: Some(Price(price)), qty: Qty(qty) };
                let left = self.take(taker);
                if left.0 > 0 {
                    let display = display.map(Qty);
                    self.rest(RestingOrder {
                        id,
                        account,
                        side,
                        price: Price(price),
                        leaves: left,
                        display,
                    });
                }
            }
            Op::Post { side, price, qty, display, account } => {
                let (id, account, display) = (self.new_id(), AccountId(account), display.map(Qty));
                self.rest(RestingOrder {
                    id,
                    account,
                    side,
                    price: Price(price),
                    leaves: Qty(qty),
                    display,
                });
            }
            Op::Market { side, qty, account } => {
                let taker = Taker {
                    id: self.new_id(),
                    account: AccountId(account),
                    side,
                    limit: None,
                    qty: Qty(qty),
                };
                self.take(taker);
            }
            Op::Cancel { pick } => {
                if let Some((id, handle)) = self.pick(pick) {
                    assert_eq!(self.book.cancel(handle), self.model.cancel(id), "cancel of {id}");
                    self.handles.remove(&id);
                }
            }
            Op::Reduce { pick, by } => {
                if let Some((id, handle)) = self.pick(pick) {
                    let leaves = self.book.get(handle).leaves.0;
                    if leaves > by {
                        self.book.reduce(handle, Qty(leaves - by));
                        self.model.reduce(id, leaves - by);
                    }
                }
            }
            Op::Fillable { side, limit, account, want } => {
                let account = AccountId(account);
                let actual = self.book.fillable(side, limit.map(Price), account, Qty(want));
                assert_eq!(actual.0, self.model.fillable(side, limit, account, want), "{op:?}");
            }
        }
    }

    fn new_id(&mut self) -> OrderId {
        self.next_id += 1;
        OrderId(self.next_id)
    }

    /// Everything observable must agree, and the book must hold its own invariants.
    fn check(&self) {
        self.book.assert_invariants();
        assert_eq!(self.book.len(), self.model.orders.len(), "len");
        let (bid, ask) = (self.book.best_bid(), self.book.best_ask());
        if let (Some(bid), Some(ask)) = (bid, ask) {
            assert!(bid < ask, "crossed: {bid:?} >= {ask:?}");
        }
        for side in [Side::Buy, Side::Sell] {
            assert_eq!(self.book.best(side), self.model.best(side), "best {side:?}");
            let mut out = [Level::default(); MAX_PRICE as usize + 2];
            let n = self.book.depth(side, &mut out);
            assert_eq!(out[..n], self.model.depth(side), "depth {side:?}");
            let mut queue = Vec::new();
            self.book.for_each_order(side, |handle, order, shown| {
                assert_eq!(
                    self.handles.get(&order.id.0),
                    Some(&handle),
                    "handle of {:?}",
                    order.id
                );
                assert_eq!(self.book.get(handle), order);
                assert_eq!(self.book.displayed(handle), shown);
                queue.push((*order, shown.0));
            });
            assert_eq!(queue, self.model.queue(side), "queue {side:?}");
            assert_fifo(&queue);
        }
    }
}

/// Orders that never refresh (plain and hidden) keep arrival order within a level: ids
/// are assigned in arrival order, so they must rise. Checked without the reference.
fn assert_fifo(queue: &[(RestingOrder, i64)]) {
    let fixed = |o: &RestingOrder| o.display.is_none_or(|d| d.0 == 0 || d >= o.leaves);
    for (i, (a, _)) in queue.iter().enumerate() {
        for (b, _) in &queue[i + 1..] {
            let same_queue =
                a.price == b.price && (a.display == Some(Qty(0))) == (b.display == Some(Qty(0)));
            if same_queue && a.display.is_none() && b.display.is_none() {
                assert!(a.id < b.id, "FIFO broken at {:?}: {:?} before {:?}", a.price, a.id, b.id);
            }
            if same_queue && a.display == Some(Qty(0)) && fixed(b) {
                assert!(a.id < b.id, "hidden FIFO broken at {:?}", a.price);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Small capacities make `Full` common; larger ones let deep queues build up.
    #[test]
    fn book_matches_the_reference_book(
        max_orders in prop_oneof![1u32..=6, 12u32..=24],
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let mut harness = Harness::new(max_orders);
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
    }
}

/// One fixed sequence exercising every op kind, so a failure is easy to replay by hand.
#[test]
fn fixed_sequence_matches_the_reference_book() {
    let mut harness = Harness::new(8);
    let ops = [
        Op::Post { side: Side::Sell, price: 7, qty: 10, display: Some(3), account: 0 },
        Op::Post { side: Side::Sell, price: 7, qty: 4, display: None, account: 1 },
        Op::Post { side: Side::Sell, price: 7, qty: 5, display: Some(0), account: 2 },
        Op::Post { side: Side::Sell, price: 8, qty: 5, display: None, account: 0 },
        Op::Limit { side: Side::Buy, price: 5, qty: 3, display: None, account: 1 },
        Op::Fillable { side: Side::Buy, limit: Some(7), account: 0, want: 30 },
        Op::Limit { side: Side::Buy, price: 8, qty: 14, display: None, account: 1 },
        Op::Reduce { pick: 0, by: 1 },
        Op::Market { side: Side::Buy, qty: 25, account: 2 },
        Op::Cancel { pick: 0 },
    ];
    for op in &ops {
        harness.apply(op);
        harness.check();
    }
}
