//! # drchain runtime
//!
//! The pure, deterministic state-transition function every node executes: the calls and
//! events of the pallets, signed extrinsics, block execution with header checks, and genesis
//! from a chain spec. It performs no I/O and reads no clock: the same parent state and the
//! same block give the same state root on every node.

#![forbid(unsafe_code)]

pub mod block;
pub mod call;
pub mod dev;
pub mod dispatch;
pub mod event;
pub mod executive;
pub mod extrinsic;
pub mod genesis;
pub mod system;

pub use block::{Block, Header};
pub use call::{AdminCall, DispatchError, RuntimeCall};
pub use event::{AdminEvent, EventRecord, Phase, RuntimeEvent, SystemEvent};
pub use executive::{
    build_block, build_block_in_round, check_body, check_proposal_time, execute_block,
    proposal_timestamp, revalidate_transaction, validate_transaction, BlockBuilder, BlockError,
    BuiltBlock, ExecutedBlock, TimestampError, TransactionError, ValidTransaction,
};
pub use extrinsic::UncheckedExtrinsic;
pub use genesis::{ChainSpec, Genesis, SpecError};

pub use drchain_support as support;
pub use pallet_checkpoints;
pub use pallet_failover;
pub use pallet_membership;
pub use pallet_network_config;
pub use pallet_service_status;

/// Version of the runtime's wire formats and rules.
pub const RUNTIME_VERSION: u32 = 1;
/// Deepest nesting accepted when decoding calls (an admin proposal wraps one call).
pub const MAX_DECODE_DEPTH: u32 = 16;

#[cfg(test)]
mod tests;
