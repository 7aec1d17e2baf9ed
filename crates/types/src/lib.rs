//! The vocabulary of amdahl: ids, integer units, and the `Command` / `Event` messages that
//! cross every stage of the engine.
//!
//! Architecture invariants:
//! - Every unit inside the engine is an integer: prices are ticks of the instrument's tick
//!   size, quantities are contracts, money is the settlement currency's smallest unit
//!   (XBt for XBT, USDt = 1e-6 USDT). Decimals exist only at the API edge.
//! - `Command` and `Event` are small, fixed-size and `Copy`: they live in pre-allocated ring
//!   slots and are hashed byte-for-byte into the output stream hash, so no heap pointer may
//!   hide inside them.
#![forbid(unsafe_code)]

mod units;
pub use units::*;

mod order;
pub use order::*;

mod message;
pub use message::*;

// Messages live in pre-allocated ring slots and are copied by value through every stage:
// their size is a contract. A change that grows them must say why here.
const _: () = assert!(size_of::<Command>() == 80);
const _: () = assert!(size_of::<Event>() == 96);
const _: () = assert!(size_of::<Sequenced>() == 96);
