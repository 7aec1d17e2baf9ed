//! The serial engine: takes sequenced commands a group at a time — stage R checks the
//! group's new orders segment by segment, each against the state its segment begins
//! from, and each command is applied in sequence order — emits events, audits the books
//! after every group, and exposes a state hash.
//!
//! This engine is the oracle every other topology is compared with (DESIGN.md §2): the
//! same commands with the same group cuts must give the same events and the same hash.
//!
//! Architecture invariants:
//! - Nothing here reads a clock, draws randomness or iterates a hash map into output:
//!   time is the sequencer's `Timestamp`, and every walk is over dense arrays, intrusive
//!   lists or ordered sets.
//! - A refused command emits exactly one `Rejected` event and changes no state (the state
//!   hash is unchanged).
//! - After every group the ledger's incremental audit runs, and a slice of the full
//!   recomputation: every `audit_cycle` commands it has covered everything; every mark
//!   tick recounts its market. A failed audit halts the engine: every later write is
//!   rejected with `EngineHalted`; balances are never patched.
//! - Capacities (accounts, orders, book levels) are fixed in `EngineConfig`; the steady
//!   state allocates nothing (`tests/tests/allocations.rs` counts).
#![forbid(unsafe_code)]

mod audit;
mod config;
mod desk;
mod engine;
mod lifecycle;
mod liquidation;
mod margin;
mod orders;
pub mod pipeline;
mod remargin;
mod risk;
mod sink;
mod triggers;

pub use audit::{AuditError, HaltEvidence};
pub use config::{BasisParams, EngineConfig, FundingParams, Lifecycle, MarketConfig};
pub use engine::Engine;
pub use orders::{OrderRecord, Working};
pub use sink::{EventSink, HashSink};
pub mod testkit;
