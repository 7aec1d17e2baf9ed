//! Unit tests of the book's matching rules, one rule per test.

use super::*;
use Side::{Buy, Sell};

const ALICE: AccountId = AccountId(1);
const BOB: AccountId = AccountId(2);
const CAROL: AccountId = AccountId(3);
const TAKER: AccountId = AccountId(9);

fn book_with(max_orders: u32, max_price: i64) -> Book {
    Book::new(BookConfig { max_orders, max_price: Price(max_price) })
}

fn book() -> Book {
    book_with(64, 1_000)
}

fn order(id: u64, account: AccountId, side: Side, price: i64, leaves: i64) -> RestingOrder {
    RestingOrder {
        id: OrderId(id),
        account,
        side,
        price: Price(price),
        leaves: Qty(leaves),
        display: None,
    }
}

fn with_display(order: RestingOrder, display: i64) -> RestingOrder {
    RestingOrder { display: Some(Qty(display)), ..order }
}

fn rest(book: &mut Book, order: RestingOrder) -> OrderHandle {
    let handle = book.rest(order).expect("rests");
    book.assert_invariants();
    handle
}

/// Runs a taker and returns its matches and unfilled quantity.
fn take(book: &mut Book, side: Side, limit: Option<i64>, qty: i64) -> (Vec<Match>, i64) {
    take_as(book, TAKER, side, limit, qty)
}

fn take_as(
    book: &mut Book,
    account: AccountId,
    side: Side,
    limit: Option<i64>,
    qty: i64,
) -> (Vec<Match>, i64) {
    let taker = Taker { id: OrderId(999), account, side, limit: limit.map(Price), qty: Qty(qty) };
    let mut matches = Vec::new();
    let left = book.take(taker, |m| matches.push(m));
    book.assert_invariants();
    (matches, left.0)
}

/// Fills as (maker id, price, qty, maker leaves); self-trade cancels as (id, 0, 0, leaves).
fn summary(matches: &[Match]) -> Vec<(u64, i64, i64, i64)> {
    let row = |m: &Match| match *m {
        Match::Fill { maker, price, qty, maker_leaves, .. } => {
            (maker.0, price.0, qty.0, maker_leaves.0)
        }
        Match::SelfTradeCancel { maker, leaves, .. } => (maker.0, 0, 0, leaves.0),
    };
    matches.iter().map(row).collect()
}

/// Resting order ids of a side in matching order.
fn queue(book: &Book, side: Side) -> Vec<u64> {
    let mut ids = Vec::new();
    book.for_each_order(side, |_, order, _| ids.push(order.id.0));
    ids
}

fn depth(book: &Book, side: Side) -> Vec<(i64, i64, i64)> {
    let mut out = [Level::default(); 16];
    let n = book.depth(side, &mut out);
    out[..n].iter().map(|l| (l.price.0, l.visible.0, l.total.0)).collect()
}

#[test]
fn price_then_time_priority_for_asks() {
    let mut book = book();
    rest(&mut book, order(1, ALICE, Sell, 102, 5));
    rest(&mut book, order(2, BOB, Sell, 101, 5));
    rest(&mut book, order(3, CAROL, Sell, 101, 5));
    rest(&mut book, order(4, ALICE, Sell, 100, 5));
    let (matches, left) = take(&mut book, Buy, Some(102), 20);
    assert_eq!(summary(&matches), [(4, 100, 5, 0), (2, 101, 5, 0), (3, 101, 5, 0), (1, 102, 5, 0)]);
    assert_eq!(left, 0);
    assert!(book.is_empty());
    assert_eq!(book.best_ask(), None);
}

#[test]
fn price_then_time_priority_for_bids() {
    let mut book = book();
    rest(&mut book, order(1, ALICE, Buy, 98, 5));
    rest(&mut book, order(2, BOB, Buy, 99, 5));
    rest(&mut book, order(3, CAROL, Buy, 99, 5));
    rest(&mut book, order(4, ALICE, Buy, 100, 5));
    assert_eq!(queue(&book, Buy), [4, 2, 3, 1]);
    let (matches, _) = take(&mut book, Sell, Some(98), 12);
    assert_eq!(summary(&matches), [(4, 100, 5, 0), (2, 99, 5, 0), (3, 99, 2, 3)]);
    assert_eq!(book.best_bid(), Some(Price(99)));
}

#[test]
fn partial_fill_keeps_the_maker_at_the_front() {
    let mut book = book();
    let first = rest(&mut book, order(1, ALICE, Sell, 100, 10));
    rest(&mut book, order(2, BOB, Sell, 100, 10));
    let (matches, left) = take(&mut book, Buy, Some(100), 4);
    assert_eq!((summary(&matches), left), (vec![(1, 100, 4, 6)], 0));
    assert_eq!(book.get(first).leaves, Qty(6));
    assert_eq!(queue(&book, Sell), [1, 2]);
    assert_eq!(depth(&book, Sell), [(100, 16, 16)]);
}

#[test]
fn market_order_sweeps_every_level_and_returns_the_rest() {
    let mut book = book();
    rest(&mut book, order(1, ALICE, Sell, 100, 3));
    rest(&mut book, order(2, BOB, Sell, 900, 3));
    let (matches, left) = take(&mut book, Buy, None, 10);
    assert_eq!(summary(&matches), [(1, 100, 3, 0), (2, 900, 3, 0)]);
    assert_eq!(left, 4);
    assert!(book.is_empty());
}

#[test]
fn limit_stops_matching_at_the_limit_price() {
    let mut book = book();
    rest(&mut book, order(1, ALICE, Buy, 100, 3));
    rest(&mut book, order(2, BOB, Buy, 99, 3));
    rest(&mut book, order(3, BOB, Buy, 98, 3));
    let (matches, left) = take(&mut book, Sell, Some(99), 10);
    assert_eq!(summary(&matches), [(1, 100, 3, 0), (2, 99, 3, 0)]);
    assert_eq!(left, 4);
    assert_eq!(book.best_bid(), Some(Price(98)));
    let (matches, left) = take(&mut book, Sell, Some(99), 10);
    assert!(matches.is_empty());
    assert_eq!(left, 10);
}

#[test]
fn self_trade_cancels_the_resting_order_and_matching_continues_behind_it() {
    let mut book = book();
    rest(&mut book, order(1, BOB, Sell, 100, 5));
    let own = rest(&mut book, order(2, ALICE, Sell, 100, 7));
    rest(&mut book, order(3, CAROL, Sell, 100, 5));
    rest(&mut book, order(4, ALICE, Sell, 101, 2));
    rest(&mut book, order(5, BOB, Sell, 101, 5));
    let (matches, left) = take_as(&mut book, ALICE, Buy, Some(101), 12);
    assert_eq!(
        summary(&matches),
        [(1, 100, 5, 0), (2, 0, 0, 7), (3, 100, 5, 0), (4, 0, 0, 2), (5, 101, 2, 3)]
    );
    assert!(matches!(
        matches[1],
        Match::SelfTradeCancel { maker_account: ALICE, maker_handle, .. } if maker_handle == own
    ));
    assert_eq!(left, 0);
    assert_eq!(queue(&book, Sell), [5]);
}

#[test]
fn self_trade_cancel_only_reaches_orders_within_the_limit() {
    let mut book = book();
    rest(&mut book, order(1, ALICE, Sell, 100, 5));
    rest(&mut book, order(2, ALICE, Sell, 101, 5));
    let (matches, left) = take_as(&mut book, ALICE, Buy, Some(100), 3);
    assert_eq!((summary(&matches), left), (vec![(1, 0, 0, 5)], 3));
    assert_eq!(queue(&book, Sell), [2]);
}

#[test]
fn iceberg_refresh_loses_priority_to_a_later_order() {
    let mut book = book();
    let ice = rest(&mut book, with_display(order(1, ALICE, Sell, 100, 10), 3));
    rest(&mut book, order(2, BOB, Sell, 100, 4));
    assert_eq!(depth(&book, Sell), [(100, 7, 14)]);
    let (matches, _) = take(&mut book, Buy, Some(100), 5);
    // The slice of 3 fills, the refreshed slice goes behind order 2.
    assert_eq!(summary(&matches), [(1, 100, 3, 7), (2, 100, 2, 2)]);
    assert_eq!(queue(&book, Sell), [2, 1]);
    assert_eq!(book.displayed(ice), Qty(3));
    let (matches, _) = take(&mut book, Buy, Some(100), 20);
    assert_eq!(summary(&matches), [(2, 100, 2, 0), (1, 100, 3, 4), (1, 100, 3, 1), (1, 100, 1, 0)]);
    assert!(book.is_empty());
}

#[test]
fn iceberg_partial_slice_fill_keeps_its_place() {
    let mut book = book();
    let ice = rest(&mut book, with_display(order(1, ALICE, Sell, 100, 10), 3));
    rest(&mut book, order(2, BOB, Sell, 100, 4));
    take(&mut book, Buy, Some(100), 2);
    assert_eq!(queue(&book, Sell), [1, 2]);
    assert_eq!(book.displayed(ice), Qty(1));
    assert_eq!(depth(&book, Sell), [(100, 5, 12)]);
}

#[test]
fn display_at_or_above_leaves_behaves_like_a_plain_order() {
    let mut book = book();
    let big = rest(&mut book, with_display(order(1, ALICE, Sell, 100, 5), 8));
    rest(&mut book, order(2, BOB, Sell, 100, 4));
    assert_eq!(book.displayed(big), Qty(5));
    assert_eq!(depth(&book, Sell), [(100, 9, 9)]);
    let (matches, _) = take(&mut book, Buy, Some(100), 7);
    assert_eq!(summary(&matches), [(1, 100, 5, 0), (2, 100, 2, 2)]);
}

#[test]
fn hidden_fills_after_displayed_at_its_level_but_before_worse_levels() {
    let mut book = book();
    rest(&mut book, with_display(order(1, ALICE, Sell, 100, 5), 0));
    rest(&mut book, order(2, BOB, Sell, 100, 2));
    rest(&mut book, with_display(order(3, CAROL, Sell, 100, 4), 1));
    rest(&mut book, order(4, BOB, Sell, 101, 5));
    assert_eq!(queue(&book, Sell), [2, 3, 1, 4]);
    let (matches, _) = take(&mut book, Buy, Some(101), 12);
    assert_eq!(
        summary(&matches),
        [
            (2, 100, 2, 0),
            (3, 100, 1, 3),
            (3, 100, 1, 2),
            (3, 100, 1, 1),
            (3, 100, 1, 0),
            (1, 100, 5, 0),
            (4, 101, 1, 4),
        ]
    );
}

#[test]
fn hidden_only_level_sets_best_but_not_depth() {
    let mut book = book();
    rest(&mut book, with_display(order(1, ALICE, Buy, 100, 5), 0));
    rest(&mut book, order(2, BOB, Buy, 99, 2));
    assert_eq!(book.best_bid(), Some(Price(100)));
    assert_eq!(depth(&book, Buy), [(99, 2, 2)]);
    assert_eq!(book.rest(order(3, CAROL, Sell, 100, 1)), Err(BookError::WouldCross));
}

#[test]
fn depth_excludes_hidden_and_iceberg_reserve() {
    let mut book = book();
    rest(&mut book, order(1, ALICE, Sell, 101, 5));
    rest(&mut book, with_display(order(2, BOB, Sell, 101, 10), 2));
    rest(&mut book, with_display(order(3, BOB, Sell, 101, 7), 0));
    rest(&mut book, order(4, CAROL, Sell, 105, 1));
    rest(&mut book, order(5, CAROL, Buy, 99, 3));
    assert_eq!(depth(&book, Sell), [(101, 7, 22), (105, 1, 1)]);
    assert_eq!(depth(&book, Buy), [(99, 3, 3)]);
    let mut one = [Level::default(); 1];
    assert_eq!(book.depth(Sell, &mut one), 1);
    assert_eq!(one[0], Level { price: Price(101), visible: Qty(7), total: Qty(22) });
}

#[test]
fn reduce_keeps_priority_and_shrinks_the_slice() {
    let mut book = book();
    let first = rest(&mut book, order(1, ALICE, Sell, 100, 10));
    let ice = rest(&mut book, with_display(order(2, BOB, Sell, 100, 10), 4));
    let hidden = rest(&mut book, with_display(order(3, CAROL, Sell, 100, 10), 0));
    book.reduce(first, Qty(3));
    book.reduce(ice, Qty(2));
    book.reduce(hidden, Qty(6));
    book.assert_invariants();
    assert_eq!((book.get(first).leaves, book.displayed(first)), (Qty(3), Qty(3)));
    assert_eq!((book.get(ice).leaves, book.displayed(ice)), (Qty(2), Qty(2)));
    assert_eq!(depth(&book, Sell), [(100, 5, 11)]);
    let (matches, _) = take(&mut book, Buy, Some(100), 4);
    assert_eq!(summary(&matches), [(1, 100, 3, 0), (2, 100, 1, 1)]);
}

#[test]
fn cancel_from_head_middle_and_tail() {
    let mut book = book();
    let handles: Vec<_> = (1..=5).map(|id| rest(&mut book, order(id, ALICE, Buy, 50, 1))).collect();
    assert_eq!(book.cancel(handles[2]), order(3, ALICE, Buy, 50, 1));
    book.assert_invariants();
    assert_eq!(queue(&book, Buy), [1, 2, 4, 5]);
    book.cancel(handles[0]);
    book.assert_invariants();
    assert_eq!(queue(&book, Buy), [2, 4, 5]);
    book.cancel(handles[4]);
    book.assert_invariants();
    assert_eq!(queue(&book, Buy), [2, 4]);
    assert_eq!(depth(&book, Buy), [(50, 2, 2)]);
    rest(&mut book, order(6, BOB, Buy, 50, 1));
    assert_eq!(queue(&book, Buy), [2, 4, 6]);
    book.cancel(handles[1]);
    book.cancel(handles[3]);
    assert_eq!(queue(&book, Buy), [6]);
}

#[test]
fn cancel_of_the_best_level_moves_best_to_the_next_level() {
    let mut book = book();
    let best = rest(&mut book, order(1, ALICE, Sell, 10, 1));
    rest(&mut book, order(2, ALICE, Sell, 700, 1));
    book.cancel(best);
    book.assert_invariants();
    assert_eq!(book.best_ask(), Some(Price(700)));
}

#[test]
fn cancel_returns_current_leaves() {
    let mut book = book();
    let handle = rest(&mut book, order(1, ALICE, Sell, 100, 10));
    take(&mut book, Buy, None, 4);
    assert_eq!(book.cancel(handle).leaves, Qty(6));
    assert!(book.is_empty());
}

#[test]
fn fillable_stops_at_want_respects_limit_and_ignores_own_orders() {
    let mut book = book();
    rest(&mut book, order(1, ALICE, Sell, 100, 5));
    rest(&mut book, with_display(order(2, BOB, Sell, 100, 5), 1));
    rest(&mut book, with_display(order(3, CAROL, Sell, 101, 5), 0));
    rest(&mut book, order(4, BOB, Sell, 102, 5));
    let before = queue(&book, Sell);
    assert_eq!(book.fillable(Buy, None, TAKER, Qty(100)), Qty(20));
    assert_eq!(book.fillable(Buy, None, TAKER, Qty(7)), Qty(7));
    assert_eq!(book.fillable(Buy, Some(Price(101)), TAKER, Qty(100)), Qty(15));
    assert_eq!(book.fillable(Buy, Some(Price(99)), TAKER, Qty(100)), Qty(0));
    assert_eq!(book.fillable(Buy, None, BOB, Qty(100)), Qty(10));
    assert_eq!(book.fillable(Buy, Some(Price(100)), ALICE, Qty(100)), Qty(5));
    assert_eq!(book.fillable(Sell, None, TAKER, Qty(100)), Qty(0));
    assert_eq!(queue(&book, Sell), before);
    assert_eq!(depth(&book, Sell), [(100, 6, 10), (102, 5, 5)]);
    // What fillable promised is what take delivers.
    let (_, left) = take_as(&mut book, BOB, Buy, Some(101), 100);
    assert_eq!(left, 100 - 10);
}

#[test]
fn rest_errors_change_nothing() {
    let mut book = book_with(3, 1_000);
    rest(&mut book, order(1, ALICE, Sell, 100, 5));
    rest(&mut book, order(2, BOB, Buy, 90, 5));
    let snapshot = |book: &Book| (queue(book, Buy), queue(book, Sell), book.len());
    let before = snapshot(&book);
    assert_eq!(book.rest(order(3, CAROL, Buy, 100, 1)), Err(BookError::WouldCross));
    assert_eq!(book.rest(order(3, CAROL, Sell, 90, 1)), Err(BookError::WouldCross));
    assert_eq!(book.rest(order(3, CAROL, Buy, 0, 1)), Err(BookError::PriceOutOfRange));
    assert_eq!(book.rest(order(3, CAROL, Sell, 1_001, 1)), Err(BookError::PriceOutOfRange));
    assert_eq!(book.rest(order(3, CAROL, Sell, -5, 1)), Err(BookError::PriceOutOfRange));
    assert_eq!(snapshot(&book), before);
    book.assert_invariants();
    rest(&mut book, order(3, CAROL, Sell, 1_000, 1));
    let before = snapshot(&book);
    assert_eq!(book.rest(order(4, CAROL, Sell, 200, 1)), Err(BookError::Full));
    assert_eq!(snapshot(&book), before);
    book.assert_invariants();
}

#[test]
fn pool_fills_to_exactly_max_orders_then_reuses_freed_slots() {
    let mut book = book_with(8, 100);
    let handles: Vec<_> =
        (0..8).map(|i| rest(&mut book, order(i, ALICE, Buy, 1 + i as i64 % 3, 1))).collect();
    assert_eq!(book.len(), 8);
    assert_eq!(book.rest(order(8, ALICE, Buy, 1, 1)), Err(BookError::Full));
    book.cancel(handles[5]);
    let reused = rest(&mut book, order(9, ALICE, Buy, 50, 1));
    assert_eq!(reused, handles[5]);
    assert_eq!(book.rest(order(10, ALICE, Buy, 1, 1)), Err(BookError::Full));
    let (_, left) = take(&mut book, Sell, None, 100);
    assert_eq!(left, 100 - 8);
    assert!(book.is_empty());
    for i in 0..8 {
        rest(&mut book, order(20 + i, BOB, Sell, 100 - i as i64, 1));
    }
    assert_eq!(book.rest(order(30, BOB, Sell, 1, 1)), Err(BookError::Full));
}

#[test]
fn zero_capacity_book_is_always_full() {
    let mut book = book_with(0, 10);
    assert_eq!(book.rest(order(1, ALICE, Buy, 5, 1)), Err(BookError::Full));
    assert_eq!(take(&mut book, Buy, None, 5).1, 5);
}

#[test]
fn would_cross_compares_against_the_opposite_best() {
    let mut book = book();
    assert!(!book.would_cross(Buy, Price(1_000)));
    rest(&mut book, order(1, ALICE, Sell, 100, 1));
    rest(&mut book, order(2, ALICE, Buy, 90, 1));
    assert!(book.would_cross(Buy, Price(100)));
    assert!(!book.would_cross(Buy, Price(99)));
    assert!(book.would_cross(Sell, Price(90)));
    assert!(!book.would_cross(Sell, Price(91)));
}

#[test]
fn wide_ladder_finds_levels_across_millions_of_ticks() {
    let mut book = book_with(16, 2_000_000);
    rest(&mut book, order(1, ALICE, Buy, 1, 1));
    rest(&mut book, order(2, ALICE, Buy, 3, 1));
    rest(&mut book, order(3, BOB, Sell, 1_999_999, 1));
    rest(&mut book, order(4, BOB, Sell, 2_000_000, 1));
    assert_eq!(depth(&book, Buy), [(3, 1, 1), (1, 1, 1)]);
    assert_eq!(depth(&book, Sell), [(1_999_999, 1, 1), (2_000_000, 1, 1)]);
    let (matches, _) = take(&mut book, Buy, None, 2);
    assert_eq!(summary(&matches), [(3, 1_999_999, 1, 0), (4, 2_000_000, 1, 0)]);
    let (matches, _) = take(&mut book, Sell, None, 2);
    assert_eq!(summary(&matches), [(2, 3, 1, 0), (1, 1, 1, 0)]);
}

#[test]
fn fill_reports_carry_the_maker_handle_and_account() {
    let mut book = book();
    let handle = rest(&mut book, order(7, CAROL, Sell, 100, 2));
    let (matches, _) = take(&mut book, Buy, None, 1);
    assert_eq!(
        matches,
        [Match::Fill {
            maker: OrderId(7),
            maker_account: CAROL,
            maker_handle: handle,
            price: Price(100),
            qty: Qty(1),
            maker_leaves: Qty(1),
        }]
    );
}

#[test]
#[should_panic(expected = "stale order handle")]
fn cancel_of_a_cancelled_order_panics() {
    let mut book = book();
    let handle = rest(&mut book, order(1, ALICE, Buy, 50, 1));
    book.cancel(handle);
    book.cancel(handle);
}

#[test]
#[should_panic(expected = "stale order handle")]
fn reduce_of_a_filled_order_panics() {
    let mut book = book();
    let handle = rest(&mut book, order(1, ALICE, Buy, 50, 2));
    take(&mut book, Sell, None, 2);
    book.reduce(handle, Qty(1));
}

#[test]
#[should_panic(expected = "stale order handle")]
fn get_of_an_out_of_range_handle_panics() {
    book().get(OrderHandle(1_000));
}

#[test]
#[should_panic(expected = "outside 0 < new_leaves")]
fn reduce_must_lower_leaves() {
    let mut book = book();
    let handle = rest(&mut book, order(1, ALICE, Buy, 50, 2));
    book.reduce(handle, Qty(2));
}
