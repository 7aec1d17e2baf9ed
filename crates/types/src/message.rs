//! The engine's input (`Command`) and output (`Event`).

use crate::{
    AccountId, AmendOrder, Currency, Leverage, MarketId, Money, NewOrder, OrdType, OrderId, Price,
    Qty, Rate, Seq, Side, Timestamp,
};

/// One input to the engine. The sequencer stamps it with a `Seq` and a `Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Command {
    /// Credit an account (a confirmed on-chain deposit). Money enters the system here only.
    Deposit {
        account: AccountId,
        currency: Currency,
        amount: Money,
    },
    /// Debit an account; refused if it exceeds the available balance.
    Withdraw {
        account: AccountId,
        currency: Currency,
        amount: Money,
    },
    Place(NewOrder),
    Amend(AmendOrder),
    Cancel {
        account: AccountId,
        order: OrderId,
    },
    /// Cancel every open and untriggered order of the account, in one market or all.
    CancelAll {
        account: AccountId,
        market: Option<MarketId>,
    },
    /// Isolated margin at `leverage`, or cross margin with `Leverage::CROSS`.
    SetLeverage {
        account: AccountId,
        market: MarketId,
        leverage: Leverage,
    },
    /// A new mark price (from the index and fair basis; the risk lifecycle computes it).
    Mark {
        market: MarketId,
        price: Price,
    },
    /// A new index price for the market's underlying (a trigger reference for stops).
    Index {
        market: MarketId,
        price: Price,
    },
    /// A constituent price of the market's composite index (a spot venue's last price).
    IndexPrice {
        market: MarketId,
        source: u8,
        price: Price,
    },
    /// The sequencer's clock tick (about once a second): index staleness, fair-price
    /// marks, premium samples, funding and settlement happen on the journaled clock.
    Tick,
    /// Choose the risk limit (BitMEX `POST /position/riskLimit`): the base limit plus a
    /// whole number of risk steps; each step raises IM and MM by the base MM.
    SetRiskLimit {
        account: AccountId,
        market: MarketId,
        limit: Money,
    },
    /// Move margin into (`amount` > 0) or out of (< 0) an isolated position.
    TransferMargin {
        account: AccountId,
        market: MarketId,
        amount: Money,
    },
    /// Engine-generated, never accepted from a client: work out a position the remargin
    /// pass of an earlier group found below maintenance (DESIGN.md §2: liquidations found in
    /// group g enter group g+1 as commands, so every topology replays them identically).
    /// With the liquidator's own account it works out the liquidator's open position.
    Liquidate {
        account: AccountId,
        market: MarketId,
    },
}

impl Command {
    /// The account the command acts for, if any (used to shard by account).
    pub fn account(&self) -> Option<AccountId> {
        match self {
            Command::Deposit { account, .. }
            | Command::Withdraw { account, .. }
            | Command::Cancel { account, .. }
            | Command::CancelAll { account, .. }
            | Command::SetLeverage { account, .. }
            | Command::TransferMargin { account, .. }
            | Command::SetRiskLimit { account, .. } => Some(*account),
            Command::Place(o) => Some(o.account),
            Command::Amend(a) => Some(a.account),
            Command::Mark { .. }
            | Command::Index { .. }
            | Command::IndexPrice { .. }
            | Command::Tick
            | Command::Liquidate { .. } => None,
        }
    }
}

/// A command with the sequencer's stamp.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Sequenced {
    pub seq: Seq,
    pub time: Timestamp,
    pub command: Command,
}

/// Why a command was refused. Every refusal changes no state.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum RejectReason {
    UnknownAccount,
    UnknownMarket,
    UnknownOrder,
    /// The order exists but belongs to another account; reported as unknown at the API.
    NotYourOrder,
    /// The order is filled, cancelled or otherwise no longer open.
    OrderNotOpen,
    PriceNotMultipleOfTick,
    QtyNotMultipleOfLot,
    QtyNotPositive,
    QtyTooLarge,
    PriceNotPositive,
    PriceTooLarge,
    /// The limit price is outside the band around the mark price.
    PriceOutsideBand,
    MissingPrice,
    MissingStopPx,
    /// A price given to an order type that takes none (e.g. `price` on a Market order).
    UnexpectedPrice,
    InvalidDisplayQty,
    InsufficientAvailableBalance,
    /// ReduceOnly/Close would open or increase a position.
    ReduceOnlyWouldIncrease,
    /// Close without quantity, but there is no position.
    NoPositionToClose,
    /// Post-only order would cross (BitMEX cancels these; see `CancelReason::PostOnlyWouldCross`).
    PostOnlyWouldCross,
    /// AllOrNone was removed by BitMEX on 2018-05-14.
    AllOrNoneRemoved,
    TooManyOpenOrders,
    TooManyStopOrders,
    /// An amend with nothing to change, or a quantity at or below what is already filled.
    InvalidAmend,
    InvalidLeverage,
    AmountNotPositive,
    /// The engine is halted after a failed audit; no writes are admitted.
    EngineHalted,
    /// The book or order table is at its configured capacity.
    CapacityExhausted,
    /// A Market order found nothing to trade against.
    NoLiquidity,
    /// A `Liquidate` command found the position back above maintenance (or flat).
    NotLiquidatable,
    /// The market has settled (a dated future past expiry).
    MarketClosed,
    /// The market has no composite index, or no such constituent.
    UnknownConstituent,
    /// A margin transfer on a cross position, of zero, or below the initial margin.
    InvalidTransfer,
    /// The change would leave the position below its maintenance margin at the mark.
    WouldLiquidate,
    /// Position plus open orders would exceed the risk limit.
    RiskLimitExceeded,
    /// Not the base risk limit plus a whole number of steps.
    InvalidRiskLimit,
    /// The position is under maintenance and queued for liquidation: no new exposure.
    InLiquidation,
}

impl RejectReason {
    /// The message BitMEX clients expect (shared/bitmex/API.md §2), or ours where BitMEX
    /// has none.
    pub fn message(self) -> &'static str {
        match self {
            RejectReason::UnknownAccount => "Account does not exist",
            RejectReason::UnknownMarket => "Invalid symbol",
            RejectReason::UnknownOrder | RejectReason::NotYourOrder => "Invalid orderID",
            RejectReason::OrderNotOpen => "Unable to cancel order due to existing state",
            RejectReason::PriceNotMultipleOfTick => "Invalid price tickSize",
            RejectReason::QtyNotMultipleOfLot => "Invalid orderQty lotSize",
            RejectReason::QtyNotPositive => "Invalid orderQty",
            RejectReason::QtyTooLarge => "Invalid orderQty: exceeds maxOrderQty",
            RejectReason::PriceNotPositive => "Invalid price",
            RejectReason::PriceTooLarge => "Invalid price: exceeds maxPrice",
            RejectReason::PriceOutsideBand => "Invalid price: outside the allowed band around mark",
            RejectReason::MissingPrice => "Invalid price: required for this ordType",
            RejectReason::MissingStopPx => "Invalid stopPx for ordType",
            RejectReason::UnexpectedPrice => "Invalid price: not allowed for this ordType",
            RejectReason::InvalidDisplayQty => "Invalid displayQty",
            RejectReason::InsufficientAvailableBalance => {
                "Account has insufficient Available Balance"
            }
            RejectReason::ReduceOnlyWouldIncrease => {
                "Executing at order price would lead to immediate liquidation or ReduceOnly \
                 would increase position"
            }
            RejectReason::NoPositionToClose => "Invalid orderQty: no position to close",
            RejectReason::PostOnlyWouldCross => "Order had execInst of ParticipateDoNotInitiate",
            RejectReason::AllOrNoneRemoved => "execInst AllOrNone has been removed",
            RejectReason::TooManyOpenOrders => "Too many open orders",
            RejectReason::TooManyStopOrders => "Too many open stop orders",
            RejectReason::InvalidAmend => "Invalid amend",
            RejectReason::InvalidLeverage => "Invalid leverage",
            RejectReason::AmountNotPositive => "Invalid amount",
            RejectReason::EngineHalted => {
                "Trading is halted: the system audit failed. No writes are accepted."
            }
            RejectReason::CapacityExhausted => "The system is at capacity",
            RejectReason::NoLiquidity => "Market order found no liquidity",
            RejectReason::NotLiquidatable => "Position is not below maintenance margin",
            RejectReason::MarketClosed => "Instrument expired",
            RejectReason::WouldLiquidate => "Change would lead to immediate liquidation",
            RejectReason::RiskLimitExceeded => "Position and orders would exceed the risk limit",
            RejectReason::InvalidRiskLimit => "Invalid riskLimit",
            RejectReason::InLiquidation => "Position is in liquidation",
            RejectReason::UnknownConstituent => "Unknown index constituent",
            RejectReason::InvalidTransfer => {
                "Invalid transferMargin: isolated positions only, and not below initial margin"
            }
        }
    }
}

/// Why an order left the book without filling completely.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum CancelReason {
    /// The owner asked (Cancel or CancelAll).
    Requested,
    /// The unfilled rest of an IOC or Market order.
    ImmediateOrCancel,
    /// A FillOrKill that could not fill completely (nothing traded).
    FillOrKill,
    /// Post-only that would have crossed: BitMEX cancels rather than rejects.
    PostOnlyWouldCross,
    /// A ReduceOnly/Close order that the position no longer needs.
    ReduceOnly,
    /// A Day order at the end of its UTC day.
    Expired,
    /// The resting order would have traded with the same account (see the engine's
    /// self-trade policy: cancel the resting order).
    SelfTrade,
    /// A Market order stopped at the edge of the price band around the mark.
    PriceProtection,
    /// A triggered conditional order whose account can no longer margin it.
    InsufficientBalance,
    /// A triggered ReduceOnly/Close order with no position left to reduce.
    NothingToReduce,
    /// The account's position in the market is being liquidated.
    Liquidation,
    /// The account's position was auto-deleveraged.
    Deleveraged,
    /// The market settled at expiry.
    Settlement,
}

/// One output of the engine. The stream of events (with their order) is the contract every
/// topology must reproduce byte for byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Event {
    /// A command was refused; nothing changed.
    Rejected {
        seq: Seq,
        account: AccountId,
        reason: RejectReason,
        client_tag: u64,
    },
    /// A new order was accepted (it may rest, trade, or wait for its trigger).
    OrderAccepted {
        seq: Seq,
        order: OrderId,
        account: AccountId,
        market: MarketId,
        side: Side,
        ord_type: OrdType,
        qty: Qty,
        price: Option<Price>,
        client_tag: u64,
    },
    /// A conditional order's trigger was reached; it now works as `ord_type`.
    OrderTriggered {
        seq: Seq,
        order: OrderId,
        ord_type: OrdType,
    },
    /// One match between a resting (maker) and an incoming (taker) order.
    Fill {
        seq: Seq,
        market: MarketId,
        maker_order: OrderId,
        taker_order: OrderId,
        maker_account: AccountId,
        taker_account: AccountId,
        /// The taker's side.
        taker_side: Side,
        price: Price,
        qty: Qty,
        /// The fill's value (`qty × unit value`, BitMEX sign): the buyer's cost change.
        value: Money,
        /// The nominal fees (rate × value; zero for the liquidation engine). Positive: paid
        /// by the maker; negative: a rebate to the maker. Where the wallet or the fee account
        /// cannot move all of a fee, a `FeeShortfall` follows.
        maker_fee: Money,
        taker_fee: Money,
        maker_leaves: Qty,
        taker_leaves: Qty,
    },
    /// The order is no longer working; `leaves` contracts went unfilled.
    OrderCanceled {
        seq: Seq,
        order: OrderId,
        account: AccountId,
        reason: CancelReason,
        leaves: Qty,
    },
    /// The order changed in place (amend, or ReduceOnly trimmed by the position).
    OrderAmended {
        seq: Seq,
        order: OrderId,
        qty: Qty,
        leaves: Qty,
        price: Option<Price>,
    },
    /// Money moved in or out of the system.
    Deposited {
        seq: Seq,
        account: AccountId,
        currency: Currency,
        amount: Money,
    },
    Withdrawn {
        seq: Seq,
        account: AccountId,
        currency: Currency,
        amount: Money,
    },
    /// A realised PnL settled into the wallet when a position was reduced.
    Realised {
        seq: Seq,
        account: AccountId,
        market: MarketId,
        amount: Money,
    },
    /// The insurance fund paid `amount` into a wallet that could not absorb a realised loss
    /// (a close past the bankruptcy price).
    InsuranceCovered {
        seq: Seq,
        account: AccountId,
        currency: Currency,
        amount: Money,
    },
    LeverageChanged {
        seq: Seq,
        account: AccountId,
        market: MarketId,
        leverage: Leverage,
    },
    MarkChanged {
        seq: Seq,
        market: MarketId,
        price: Price,
    },
    IndexChanged {
        seq: Seq,
        market: MarketId,
        price: Price,
    },
    /// The liquidation engine took over `qty` contracts (signed: the position as it was) of
    /// a position below maintenance, at its bankruptcy price.
    Liquidated {
        seq: Seq,
        account: AccountId,
        market: MarketId,
        qty: i64,
        price: Price,
    },
    /// Auto-deleveraging closed `qty` contracts (signed: the change to this account's
    /// position) against the liquidation engine at the bankruptcy price.
    Deleveraged {
        seq: Seq,
        account: AccountId,
        market: MarketId,
        qty: i64,
        price: Price,
    },
    /// The composite index lost too many constituents and holds its last good value.
    IndexHeld {
        seq: Seq,
        market: MarketId,
        usable: u8,
        required: u8,
    },
    /// Enough constituents again.
    IndexResumed {
        seq: Seq,
        market: MarketId,
        price: Price,
    },
    /// A funding payment: `amount` is the wallet change (negative: paid).
    FundingPaid {
        seq: Seq,
        account: AccountId,
        market: MarketId,
        amount: Money,
        rate: Rate,
    },
    /// The rate that will be paid at `next` (nanoseconds since the epoch).
    FundingRate {
        seq: Seq,
        market: MarketId,
        rate: Rate,
        next: Timestamp,
    },
    /// A position closed at the settlement price of an expired future.
    SettledPosition {
        seq: Seq,
        account: AccountId,
        market: MarketId,
        qty: i64,
        price: Price,
    },
    /// A dated future settled; the market is closed.
    Settled {
        seq: Seq,
        market: MarketId,
        price: Price,
    },
    MarginTransferred {
        seq: Seq,
        account: AccountId,
        market: MarketId,
        amount: Money,
    },
    RiskLimitChanged {
        seq: Seq,
        account: AccountId,
        market: MarketId,
        limit: Money,
    },
    /// The fee account paid `amount` into an empty insurance fund so a loss could be covered
    /// (the last backstop before a halt).
    FundTopUp {
        seq: Seq,
        currency: Currency,
        amount: Money,
    },
    /// The audit failed; the engine accepts no more writes.
    Halted {
        seq: Seq,
        currency: Currency,
        discrepancy: Money,
    },
    // New variants go last: one added in the middle shifts the discriminant, and so the
    // hash encoding, of every variant after it, and with it every recorded stream hash.
    /// Part of a fill's fee did not move: `amount = nominal fee − fee moved`, on the
    /// `Fill` just before it. Positive: the account's wallet could not pay its fee (a
    /// bankrupt close emptied it) and keeps `amount`; negative: the fee account could not
    /// fund the whole rebate, and the account received `−amount` less. A `Fill` always
    /// carries the nominal fee: its rate times its value, known from the market alone.
    FeeShortfall {
        seq: Seq,
        account: AccountId,
        currency: Currency,
        amount: Money,
    },
}
