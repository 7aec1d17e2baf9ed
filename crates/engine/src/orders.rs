//! The engine's order table: every accepted order that is still working (resting in a
//! book, or waiting for its trigger), in a pre-allocated slab.
//!
//! Records of one (account, market) are threaded on an intrusive doubly-linked list so
//! cancel-all and the ReduceOnly trim walk only that account's orders.

use amdahl_book::OrderHandle;
use amdahl_types::{
    AccountId, ExecInst, MarketId, Money, NewOrder, OrdType, OrderId, Price, Qty, Side, TimeInForce,
};
use rustc_hash::FxHashMap;

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
    free: Vec<u32>,
    by_id: FxHashMap<u64, u32>,
}

impl Orders {
    pub fn new(capacity: u32) -> Orders {
        let n = capacity as usize;
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
        let mut by_id = FxHashMap::default();
        by_id.reserve(n);
        Orders {
            slots: vec![blank; n],
            live: vec![false; n],
            // Pop order is ascending slot number, so the layout is a pure function of history.
            free: (0..capacity).rev().collect(),
            by_id,
        }
    }

    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Slots, live or free.
    pub fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn is_live(&self, slot: u32) -> bool {
        self.live.get(slot as usize).copied().unwrap_or(false)
    }

    pub fn insert(&mut self, record: OrderRecord) -> Option<u32> {
        let slot = self.free.pop()?;
        self.slots[slot as usize] = record;
        self.live[slot as usize] = true;
        self.by_id.insert(record.id.0, slot);
        Some(slot)
    }

    pub fn remove(&mut self, slot: u32) -> OrderRecord {
        assert!(self.live[slot as usize], "removing a free order slot {slot}");
        let r = self.slots[slot as usize];
        self.live[slot as usize] = false;
        self.by_id.remove(&r.id.0);
        self.free.push(slot);
        r
    }

    pub fn slot_of(&self, id: OrderId) -> Option<u32> {
        self.by_id.get(&id.0).copied()
    }

    pub fn get(&self, slot: u32) -> &OrderRecord {
        debug_assert!(self.live[slot as usize]);
        &self.slots[slot as usize]
    }

    pub fn get_mut(&mut self, slot: u32) -> &mut OrderRecord {
        debug_assert!(self.live[slot as usize]);
        &mut self.slots[slot as usize]
    }

    /// Every live record, in slot order (deterministic: slots are handed out by history).
    pub fn for_each(&self, mut f: impl FnMut(u32, &OrderRecord)) {
        for (i, r) in self.slots.iter().enumerate() {
            if self.live[i] {
                f(i as u32, r);
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
