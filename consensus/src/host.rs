//! What every host of the driver does with its outputs that needs no I/O: build a proposal
//! from the pool, update the pool at a finalized block, choose the blocks that answer a sync
//! request, and the limits all three use. The node and the simulation both call these, so the
//! simulation runs the limits and the order of steps that ship.

use drchain_runtime::{Block, BlockError, TransactionError};
use drchain_support::H256;
use parity_scale_codec::Encode;

use crate::codec::WireCertificate;
use crate::driver::{ConsensusDriver, DriverError, Output};
use crate::pool::TransactionPool;
use crate::store::kv::KeyValueDb;
use crate::store::{ChainReader, StoreError};

/// Extrinsics per block at most.
pub const BLOCK_LIMIT: usize = 4096;
/// Pending transactions at most.
pub const POOL_LIMIT: usize = 65_536;
/// Blocks a sync answer holds at most (and what a lagging node asks for).
pub const SYNC_BATCH: u64 = 32;
/// Bytes of blocks a sync answer holds at most (it always holds one if there is one): well
/// within what an asker reads, whatever the blocks' sizes.
pub const SYNC_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Transactions and why they were left out or dropped.
pub type Refused = Vec<(H256, TransactionError)>;

/// A proposal built and handed to the driver.
#[derive(Debug)]
#[must_use = "the driver's outputs must be executed"]
pub struct Proposed {
    /// What the driver made of it (the proposal to gossip, and whatever followed).
    pub outputs: Vec<Output>,
    /// Pending transactions left out of the block, and why.
    pub left_out: Refused,
}

/// Why no proposal was made.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The runtime could not build a block on the head.
    #[error("could not build a block: {0}")]
    Build(#[from] BlockError),
    /// The driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// [`Output::BuildBlock`]: builds the block for `height`, `round` from the pool on the
/// driver's head at `now_ms` and hands it to the driver.
pub fn propose<D: KeyValueDb>(
    driver: &mut ConsensusDriver<D>,
    pool: &TransactionPool,
    now_ms: u64,
    height: u64,
    round: u32,
) -> Result<Proposed, ProposeError> {
    let built = {
        let store = driver.store();
        pool.build_block(&store.state(), store.head(), now_ms, round, BLOCK_LIMIT)?
    };
    let outputs = driver.on_block_built(now_ms, height, round, built.block, built.executed)?;
    Ok(Proposed {
        outputs,
        left_out: built.rejected,
    })
}

/// [`Output::Finalized`], for the pool: drops what block `number` included or made invalid
/// (returned with the reasons) and, with transactions still pending, tells the driver (an
/// idle driver starts the next height).
pub fn finalized_into_pool<D: KeyValueDb>(
    driver: &mut ConsensusDriver<D>,
    pool: &mut TransactionPool,
    now_ms: u64,
    number: u64,
    included: &[H256],
) -> Result<(Refused, Vec<Output>), DriverError> {
    let dropped = {
        let store = driver.store();
        pool.finalized(&store.state(), store.head().number, number, included)
    };
    let outputs = if pool.is_empty() {
        vec![]
    } else {
        driver.on_transactions_pending(now_ms)?
    };
    Ok((dropped, outputs))
}

/// The finalized blocks with certificates that answer a sync request from height `from` for
/// up to `max` blocks: at most [`SYNC_BATCH`] and [`SYNC_RESPONSE_BYTES`], stopping at the
/// first one missing. The asker asks again from where the answer ends.
pub fn sync_batch<D: KeyValueDb + ?Sized>(
    store: &ChainReader<'_, D>,
    from: u64,
    max: u64,
) -> Result<Vec<(Block, WireCertificate)>, StoreError> {
    let head = store.finalized_number()?;
    let last = head.min(from.saturating_add(max.min(SYNC_BATCH)).saturating_sub(1));
    let mut blocks = vec![];
    let mut bytes = 0;
    for n in from.max(1)..=last {
        match (store.block(n)?, store.certificate(n)?) {
            (Some(b), Some(c)) => {
                let size = b.encoded_size() + c.encoded_size();
                if !blocks.is_empty() && bytes + size > SYNC_RESPONSE_BYTES {
                    break;
                }
                bytes += size;
                blocks.push((b, c));
            }
            _ => break,
        }
    }
    Ok(blocks)
}
