//! The engine's order table: every accepted order that is still working (resting in a
//! book, or waiting for its trigger), in a pre-allocated slab.
//!
//! Each market owns a contiguous slice of the slab, with its own free list and id index,
//! so a market's records never share a slot range, a list or a map with another's (what a
//! matcher per market needs), and slot numbers stay global for the rest of the engine.
//!
//! Records of one (account, market) are threaded on an intrusive doubly-linked list so
//! cancel-all and the ReduceOnly trim walk only that account's orders.

use amdahl_book::OrderHandle;
use amdahl_types::{
    AccountId, ExecInst, MarketId, Money, NewOrder, OrdType, OrderId, Price, Qty, Side, TimeInForce,
};
use rustc_hash::FxHashMap;
use std::ops::Range;

pub(crate) const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Working {
    /// Accepted and being executed (not yet resting or waiting).
    Pending,
    /// Waiting in the market's trigger index.
    Untriggered,
    /// Its trigger was reached; it executes when its segment of the group ends, under
    /// stage R's decision (`risk.rs`), and holds nothing until then.
    Triggered,
    /// Resting in the book.
    Resting(OrderHandle),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OrderRecord {
    pub id: OrderId,
    pub account: AccountId,
    pub market: MarketId,
    pub side: Side,
    /// The type it works as now (a triggered Stop works as Market).
    pub ord_type: OrdType,
    /// The type it was placed as.
    pub placed_type: OrdType,
    pub time_in_force: TimeInForce,
    pub exec_inst: ExecInst,
    /// Total order quantity; 0 for an untriggered Close "whole position" order.
    pub qty: Qty,
    pub leaves: Qty,
    pub cum: Qty,
    pub price: Option<Price>,
    pub stop_px: Option<Price>,
    pub display: Option<Qty>,
    pub client_tag: u64,
    pub working: Working,
    /// |value| of `leaves` counted in the account's order-margin aggregates (0 for orders
    /// that hold no margin: ReduceOnly and untriggered).
    pub held_value: Money,
    pub(crate) prev: u32,
    pub(crate) next: u32,
}

impl OrderRecord {
    /// The record of a newly accepted order: nothing filled, not yet working anywhere
    /// (conditional orders wait for their trigger).
    pub(crate) fn accepted(id: OrderId, o: &NewOrder) -> OrderRecord {
        let conditional = o.ord_type.is_conditional();
        OrderRecord {
            id,
            account: o.account,
            market: o.market,
            side: o.side,
            ord_type: o.ord_type,
            placed_type: o.ord_type,
            time_in_force: o.time_in_force,
            exec_inst: o.exec_inst,
            qty: o.qty,
            leaves: o.qty,
            cum: Qty(0),
            price: o.price,
            stop_px: o.stop_px,
            display: o.display_qty,
            client_tag: o.client_tag,
            working: if conditional { Working::Untriggered } else { Working::Pending },
            held_value: 0,
            prev: NIL,
            next: NIL,
        }
    }

    pub fn is_reduce_only(&self) -> bool {
        self.exec_inst.is_reduce_only()
    }
}

pub(crate) struct Orders {
    slots: Vec<OrderRecord>,
    live: Vec<bool>,
    /// Per market: its slice of `slots`, its free slots and its id → slot index.
    markets: Vec<MarketOrders>,
}

struct MarketOrders {
    slots: Range<u32>,
    free: Vec<u32>,
    by_id: FxHashMap<u64, u32>,
}

/// One market's slice of the table, with everything a matcher changes in it: what a
/// matcher per market owns (`Orders::slice`, `Orders::slices`). Slot numbers stay global.
pub(crate) struct OrderSlice<'a> {
    /// The slice's first slot.
    base: u32,
    slots: &'a mut [OrderRecord],
    live: &'a mut [bool],
    market: &'a mut MarketOrders,
}

impl Orders {
    /// A table of `capacities[m]` slots for each market `m`.
    pub fn new(capacities: &[u32]) -> Orders {
        let n: usize = capacities.iter().map(|&c| c as usize).sum();
        let n = u32::try_from(n).expect("the order table fits u32 slots") as usize;
        let blank = OrderRecord {
            id: OrderId(0),
            account: AccountId(0),
            market: MarketId(0),
            side: Side::Buy,
            ord_type: OrdType::Limit,
            placed_type: OrdType::Limit,
            time_in_force: TimeInForce::GoodTillCancel,
            exec_inst: ExecInst::NONE,
            qty: Qty(0),
            leaves: Qty(0),
            cum: Qty(0),
            price: None,
            stop_px: None,
            display: None,
            client_tag: 0,
            working: Working::Pending,
            held_value: 0,
            prev: NIL,
            next: NIL,
        };
        let mut start = 0u32;
        let markets = capacities
            .iter()
            .map(|&c| {
                let slots = start..start + c;
                start += c;
                let mut by_id = FxHashMap::default();
                by_id.reserve(c as usize);
                // Pop order is ascending slot number, so the layout is a pure function of
                // history.
                MarketOrders { free: slots.clone().rev().collect(), slots, by_id }
            })
            .collect();
        Orders { slots: vec![blank; n], live: vec![false; n], markets }
    }

    /// `market`'s slice, to change.
    pub fn slice(&mut self, market: MarketId) -> OrderSlice<'_> {
        let m = &mut self.markets[market.0 as usize];
        let range = m.slots.start as usize..m.slots.end as usize;
        OrderSlice {
            base: m.slots.start,
            slots: &mut self.slots[range.clone()],
            live: &mut self.live[range],
            market: m,
        }
    }

    /// Every market's slice at once, in market order (the slices share nothing).
    pub fn slices(&mut self) -> impl Iterator<Item = OrderSlice<'_>> {
        let (mut slots, mut live) = (&mut self.slots[..], &mut self.live[..]);
        self.markets.iter_mut().map(move |m| {
            let n = m.slots.len();
            let (s, rest) = std::mem::take(&mut slots).split_at_mut(n);
            slots = rest;
            let (l, rest) = std::mem::take(&mut live).split_at_mut(n);
            live = rest;
            OrderSlice { base: m.slots.start, slots: s, live: l, market: m }
        })
    }

    /// Is `market`'s slice full?
    pub fn is_full(&self, market: MarketId) -> bool {
        self.markets[market.0 as usize].free.is_empty()
    }

    /// Live records, in every market.
    pub fn len(&self) -> usize {
        self.markets.iter().map(|m| m.by_id.len()).sum()
    }

    /// `market`'s slots, live or free.
    pub fn slots_of(&self, market: MarketId) -> Range<u32> {
        self.markets[market.0 as usize].slots.clone()
    }

    /// Slots, live or free.
    pub fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn is_live(&self, slot: u32) -> bool {
        self.live.get(slot as usize).copied().unwrap_or(false)
    }

    /// The id names its market, so only that market's index is asked.
    pub fn slot_of(&self, id: OrderId) -> Option<u32> {
        self.markets.get(id.market().0 as usize)?.by_id.get(&id.0).copied()
    }

    pub fn get(&self, slot: u32) -> &OrderRecord {
        debug_assert!(self.live[slot as usize]);
        &self.slots[slot as usize]
    }

    /// Every live record, in slot order: market by market (deterministic: slots are handed
    /// out by history).
    pub fn for_each(&self, mut f: impl FnMut(u32, &OrderRecord)) {
        for (i, r) in self.slots.iter().enumerate() {
            if self.live[i] {
                f(i as u32, r);
            }
        }
    }

    /// Every live record of `market`, in slot order.
    pub fn for_each_in(&self, market: MarketId, mut f: impl FnMut(u32, &OrderRecord)) {
        for slot in self.slots_of(market) {
            if self.live[slot as usize] {
                f(slot, &self.slots[slot as usize]);
            }
        }
    }

    pub fn next_in_list(&self, slot: u32) -> u32 {
        self.slots[slot as usize].next
    }

    pub fn prev_in_list(&self, slot: u32) -> u32 {
        self.slots[slot as usize].prev
    }
}

impl OrderSlice<'_> {
    #[inline]
    fn at(&self, slot: u32) -> usize {
        let i = slot.wrapping_sub(self.base) as usize;
        debug_assert!(i < self.slots.len(), "slot {slot} is not this market's");
        i
    }

    /// Is the slice full?
    pub fn is_full(&self) -> bool {
        self.market.free.is_empty()
    }

    /// Into a free slot of the slice (the record is this market's).
    pub fn insert(&mut self, record: OrderRecord) -> Option<u32> {
        let slot = self.market.free.pop()?;
        self.market.by_id.insert(record.id.0, slot);
        let i = self.at(slot);
        self.slots[i] = record;
        self.live[i] = true;
        Some(slot)
    }

    pub fn remove(&mut self, slot: u32) -> OrderRecord {
        let i = self.at(slot);
        assert!(self.live[i], "removing a free order slot {slot}");
        let r = self.slots[i];
        self.live[i] = false;
        self.market.by_id.remove(&r.id.0);
        self.market.free.push(slot);
        r
    }

    /// `id` must name this market.
    pub fn slot_of(&self, id: OrderId) -> Option<u32> {
        self.market.by_id.get(&id.0).copied()
    }

    pub fn get(&self, slot: u32) -> &OrderRecord {
        let i = self.at(slot);
        debug_assert!(self.live[i]);
        &self.slots[i]
    }

    pub fn get_mut(&mut self, slot: u32) -> &mut OrderRecord {
        let i = self.at(slot);
        debug_assert!(self.live[i]);
        &mut self.slots[i]
    }

    /// Link `slot` at the head of a list whose head is `*head`.
    pub fn link(&mut self, head: &mut u32, slot: u32) {
        let old = *head;
        {
            let r = self.get_mut(slot);
            r.prev = NIL;
            r.next = old;
        }
        if old != NIL {
            self.get_mut(old).prev = slot;
        }
        *head = slot;
    }

    pub fn unlink(&mut self, head: &mut u32, slot: u32) {
        let (prev, next) = {
            let r = self.get(slot);
            (r.prev, r.next)
        };
        if prev != NIL {
            self.get_mut(prev).next = next;
        } else {
            debug_assert_eq!(*head, slot);
            *head = next;
        }
        if next != NIL {
            self.get_mut(next).prev = prev;
        }
        let r = self.get_mut(slot);
        r.prev = NIL;
        r.next = NIL;
    }

    pub fn next_in_list(&self, slot: u32) -> u32 {
        self.get(slot).next
    }

    pub fn prev_in_list(&self, slot: u32) -> u32 {
        self.get(slot).prev
    }
}
