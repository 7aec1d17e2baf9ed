//! Ids and integer units.

use core::fmt;

/// A trading account. Dense: the engine indexes arrays by it, so ids are assigned
/// 0, 1, 2, … up to the configured account capacity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct AccountId(pub u32);

/// A market (one instrument's book). Dense, like `AccountId`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct MarketId(pub u16);

/// An order, numbered by the engine per market: the market's own count (from 1) above the
/// market's id. So each market numbers its orders without a counter shared across markets
/// (a matcher per market needs none), and an id alone says which market's orders to look
/// in. 0 is never an order. Ids are never reused, so a stale id can never name somebody
/// else's order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct OrderId(pub u64);

impl OrderId {
    const MARKET_BITS: u32 = u16::BITS;
    /// The last number a market can give out (2^48 − 1: at 5 M orders a second, 1.8
    /// years of one market's flow); past it the market refuses new orders.
    pub const MAX_NUMBER: u64 = u64::MAX >> Self::MARKET_BITS;

    /// The `number`-th order of `market` (`1 ..= MAX_NUMBER`).
    pub const fn new(market: MarketId, number: u64) -> OrderId {
        debug_assert!(number >= 1 && number <= Self::MAX_NUMBER);
        OrderId(number << Self::MARKET_BITS | market.0 as u64)
    }

    pub const fn market(self) -> MarketId {
        MarketId(self.0 as u16)
    }

    /// Its place in its market's count (0 for the id 0, which names no order).
    pub const fn number(self) -> u64 {
        self.0 >> Self::MARKET_BITS
    }
}

/// The sequencer's global sequence number of a command.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Seq(pub u64);

/// The sequencer's journaled clock: nanoseconds since the Unix epoch. The only notion of
/// time inside the engine; nothing in the engine reads the wall clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

    /// The UTC day number (days since the epoch); `Day` orders expire when it changes.
    pub fn day(self) -> i64 {
        self.0.div_euclid(Self::NANOS_PER_DAY)
    }
}

/// A price in integer ticks of the instrument's tick size. Always positive for a real price.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Price(pub i64);

/// A quantity in contracts (never lots: the lot size is a validation rule, not a unit).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Qty(pub i64);

impl Qty {
    pub const ZERO: Qty = Qty(0);
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn min(self, other: Qty) -> Qty {
        Qty(self.0.min(other.0))
    }
}

impl core::ops::Add for Qty {
    type Output = Qty;
    fn add(self, rhs: Qty) -> Qty {
        Qty(self.0 + rhs.0)
    }
}
impl core::ops::Sub for Qty {
    type Output = Qty;
    fn sub(self, rhs: Qty) -> Qty {
        Qty(self.0 - rhs.0)
    }
}
impl core::ops::AddAssign for Qty {
    fn add_assign(&mut self, rhs: Qty) {
        self.0 += rhs.0
    }
}
impl core::ops::SubAssign for Qty {
    fn sub_assign(&mut self, rhs: Qty) {
        self.0 -= rhs.0
    }
}

/// Money in the settlement currency's smallest unit (XBt, USDt). Signed: costs carry
/// BitMEX's sign convention and PnL can be negative. Intermediate products use `i128`.
pub type Money = i64;

/// A dimensionless rate (margin requirement, fee, funding) in units of 1e-8, so that
/// BitMEX's published rates are exact: 0.075% taker = 75_000, −0.025% maker = −25_000,
/// 1% initial margin = 1_000_000.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Rate(pub i64);

impl Rate {
    /// The denominator of a `Rate`: `Rate(SCALE)` is 1.0.
    pub const SCALE: i64 = 100_000_000;
}

/// Leverage in hundredths (`10000` = 100x, `100` = 1x). Zero means cross margin, as in
/// BitMEX's `POST /position/leverage`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Leverage(pub u32);

impl Leverage {
    pub const CROSS: Leverage = Leverage(0);
    pub const MAX: Leverage = Leverage(10_000);
}

/// A settlement currency. The engine keeps one wallet balance per account per currency.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
pub enum Currency {
    /// Bitcoin, in satoshis (XBt).
    XBt = 0,
    /// Tether, in millionths (USDt).
    USDt = 1,
}

impl Currency {
    pub const COUNT: usize = 2;
    pub const ALL: [Currency; Currency::COUNT] = [Currency::XBt, Currency::USDt];
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn code(self) -> &'static str {
        match self {
            Currency::XBt => "XBt",
            Currency::USDt => "USDt",
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
pub enum Side {
    Buy = 0,
    Sell = 1,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
    /// +1 for Buy, −1 for Sell: the sign a fill of this side adds to a position.
    pub fn sign(self) -> i64 {
        match self {
            Side::Buy => 1,
            Side::Sell => -1,
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}
