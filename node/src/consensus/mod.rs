//! Tendermint consensus around Malachite's pure core: our [`context`], the wire and WAL
//! [`codec`], and the sans-I/O [`driver`].

pub mod codec;
pub mod context;
pub mod driver;
mod host;

pub use driver::{
    ConsensusDriver, DriverConfig, DriverError, DriverStats, Output, Timeouts, TimerKey,
};

#[cfg(test)]
mod tests;
