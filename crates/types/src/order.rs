//! Order vocabulary (BitMEX semantics, shared/bitmex/API.md §6).

use crate::{AccountId, MarketId, OrderId, Price, Qty, Side};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum OrdType {
    Limit = 0,
    Market = 1,
    /// Stop-market: becomes a Market order when the trigger price crosses `stop_px`.
    Stop = 2,
    /// Becomes a Limit order at `price` when triggered.
    StopLimit = 3,
    /// Take-profit market: triggers the opposite way to a stop.
    MarketIfTouched = 4,
    LimitIfTouched = 5,
}

impl OrdType {
    /// Orders the engine holds until a trigger price reaches `stop_px`.
    pub fn is_conditional(self) -> bool {
        matches!(
            self,
            OrdType::Stop | OrdType::StopLimit | OrdType::MarketIfTouched | OrdType::LimitIfTouched
        )
    }
    /// Orders that carry a limit price (`price`).
    pub fn has_limit_price(self) -> bool {
        matches!(self, OrdType::Limit | OrdType::StopLimit | OrdType::LimitIfTouched)
    }
    /// What a conditional order becomes when it triggers.
    pub fn triggered(self) -> OrdType {
        match self {
            OrdType::Stop | OrdType::MarketIfTouched => OrdType::Market,
            OrdType::StopLimit | OrdType::LimitIfTouched => OrdType::Limit,
            other => other,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OrdType::Limit => "Limit",
            OrdType::Market => "Market",
            OrdType::Stop => "Stop",
            OrdType::StopLimit => "StopLimit",
            OrdType::MarketIfTouched => "MarketIfTouched",
            OrdType::LimitIfTouched => "LimitIfTouched",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum TimeInForce {
    GoodTillCancel = 0,
    ImmediateOrCancel = 1,
    FillOrKill = 2,
    /// Expires at the first sequencer timestamp of the next UTC day.
    Day = 3,
}

/// Which price a conditional order watches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum TriggerRef {
    MarkPrice = 0,
    LastPrice = 1,
    IndexPrice = 2,
}

/// BitMEX `execInst` flags. A bit set, so it stays `Copy` and one byte wide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct ExecInst(pub u8);

impl ExecInst {
    pub const NONE: ExecInst = ExecInst(0);
    /// Post-only: an order that would cross is cancelled instead of taking liquidity.
    pub const PARTICIPATE_DO_NOT_INITIATE: ExecInst = ExecInst(1 << 0);
    /// May only reduce the position.
    pub const REDUCE_ONLY: ExecInst = ExecInst(1 << 1);
    /// Close the position: implies ReduceOnly; with no quantity, the whole position.
    pub const CLOSE: ExecInst = ExecInst(1 << 2);
    pub const MARK_PRICE: ExecInst = ExecInst(1 << 3);
    pub const LAST_PRICE: ExecInst = ExecInst(1 << 4);
    pub const INDEX_PRICE: ExecInst = ExecInst(1 << 5);
    /// Removed by BitMEX on 2018-05-14; accepted by the parser only so it can be rejected.
    pub const ALL_OR_NONE: ExecInst = ExecInst(1 << 6);

    pub fn contains(self, other: ExecInst) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
    pub fn with(self, other: ExecInst) -> ExecInst {
        ExecInst(self.0 | other.0)
    }
    pub fn is_reduce_only(self) -> bool {
        self.0 & (Self::REDUCE_ONLY.0 | Self::CLOSE.0) != 0
    }
    pub fn is_post_only(self) -> bool {
        self.contains(Self::PARTICIPATE_DO_NOT_INITIATE)
    }
    /// The trigger reference; MarkPrice is BitMEX's default.
    pub fn trigger(self) -> TriggerRef {
        if self.contains(Self::LAST_PRICE) {
            TriggerRef::LastPrice
        } else if self.contains(Self::INDEX_PRICE) {
            TriggerRef::IndexPrice
        } else {
            TriggerRef::MarkPrice
        }
    }
}

/// A new order as the engine receives it, already converted to integer units at the edge.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct NewOrder {
    pub account: AccountId,
    pub market: MarketId,
    pub side: Side,
    pub ord_type: OrdType,
    pub time_in_force: TimeInForce,
    pub exec_inst: ExecInst,
    /// Contracts. Zero is allowed only with `Close` (close the whole position).
    pub qty: Qty,
    /// The limit price (Limit, StopLimit, LimitIfTouched).
    pub price: Option<Price>,
    /// The trigger price of a conditional order.
    pub stop_px: Option<Price>,
    /// `Some(0)` hidden, `Some(n < qty)` iceberg, `None` fully displayed.
    pub display_qty: Option<Qty>,
    /// An opaque client tag (the gateway's handle for clOrdID), echoed on every event.
    pub client_tag: u64,
}

/// An amend (BitMEX `PUT /order`). `None` fields are left unchanged. Quantity down keeps
/// time priority; a price change or quantity up loses it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AmendOrder {
    pub account: AccountId,
    pub order: OrderId,
    /// The new total order quantity (BitMEX `orderQty`); leaves = qty − cum.
    pub qty: Option<Qty>,
    pub price: Option<Price>,
    pub stop_px: Option<Price>,
}
