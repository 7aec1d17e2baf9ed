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
    len: usize,
}

struct MarketOrders {
    slots: Range<u32>,
    free: Vec<u32>,
    by_id: FxHashMap<u64, u32>,
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
        Orders { slots: vec![blank; n], live: vec![false; n], markets, len: 0 }
    }

    /// Is `market`'s slice full?
    pub fn is_full(&self, market: MarketId) -> bool {
        self.markets[market.0 as usize].free.is_empty()
    }

    pub fn len(&self) -> usize {
        self.len
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

    /// Into a free slot of the record's market's slice.
    pub fn insert(&mut self, record: OrderRecord) -> Option<u32> {
        let m = &mut self.markets[record.market.0 as usize];
        let slot = m.free.pop()?;
        m.by_id.insert(record.id.0, slot);
        self.slots[slot as usize] = record;
        self.live[slot as usize] = true;
        self.len += 1;
        Some(slot)
    }

    pub fn remove(&mut self, slot: u32) -> OrderRecord {
        assert!(self.live[slot as usize], "removing a free order slot {slot}");
        let r = self.slots[slot as usize];
        self.live[slot as usize] = false;
        let m = &mut self.markets[r.market.0 as usize];
        m.by_id.remove(&r.id.0);
        m.free.push(slot);
        self.len -= 1;
        r
    }

    /// The id names its market, so only that market's index is asked.
    pub fn slot_of(&self, id: OrderId) -> Option<u32> {
        self.markets.get(id.market().0 as usize)?.by_id.get(&id.0).copied()
    }

    pub fn get(&self, slot: u32) -> &OrderRecord {
        debug_assert!(self.live[slot as usize]);
        &self.slots[slot as usize]
    }

    pub fn get_mut(&mut self, slot: u32) -> &mut OrderRecord {
        debug_assert!(self.live[slot as usize]);
        &mut self.slots[slot as usize]
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

    /// Link `slot` at the head of a list whose head is `*head`.
    pub fn link(&mut self, head: &mut u32, slot: u32) {
        let old = *head;
        {
            let r = &mut self.slots[slot as usize];
            r.prev = NIL;
            r.next = old;
        }
        if old != NIL {
            self.slots[old as usize].prev = slot;
        }
        *head = slot;
    }

    pub fn unlink(&mut self, head: &mut u32, slot: u32) {
        let (prev, next) = {
            let r = &self.slots[slot as usize];
            (r.prev, r.next)
        };
        if prev != NIL {
            self.slots[prev as usize].next = next;
        } else {
            debug_assert_eq!(*head, slot);
            *head = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        }
        let r = &mut self.slots[slot as usize];
        r.prev = NIL;
        r.next = NIL;
    }

    pub fn next_in_list(&self, slot: u32) -> u32 {
        self.slots[slot as usize].next
    }

    pub fn prev_in_list(&self, slot: u32) -> u32 {
        self.slots[slot as usize].prev
    }
}
