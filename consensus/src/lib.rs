//! drchain-consensus: Tendermint around Malachite's pure core, and what it needs to decide and
//! keep blocks. Our [`context`] (Malachite's `Context`), the wire and WAL types ([`codec`]),
//! the sans-I/O [`driver`] with its effect handling, the chain [`store`] over any ordered
//! key-value database, and the transaction [`pool`].
//!
//! No I/O crate enters here (no tokio, libp2p, rocksdb or jsonrpsee; `scripts/check-boundaries.sh`
//! checks it): the node executes the driver's outputs, and the deterministic simulation in
//! `drchain-tests` runs the same code over a virtual clock and network.

#![forbid(unsafe_code)]

pub mod clock;
pub mod codec;
pub mod context;
pub mod driver;
pub mod host;
pub mod pool;
pub mod state_sync;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use driver::{
    ConsensusDriver, DriverConfig, DriverError, DriverStats, Output, Timeouts, TimerKey, Verdict,
};
