//! Headers and blocks.

use drchain_support::{blake3_hash, BlockNumber, Moment, H256};
use parity_scale_codec::{Decode, Encode};

use crate::extrinsic::UncheckedExtrinsic;

/// A block header. Its hash is the block's hash (the consensus value id).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Header {
    /// Hash of the parent header.
    pub parent_hash: H256,
    /// Height; genesis is 0.
    pub number: BlockNumber,
    /// Milliseconds since the Unix epoch, chosen by the proposer: `max(parent + 1, its clock)`.
    pub timestamp: Moment,
    /// Merkle root of the extrinsics.
    pub extrinsics_root: H256,
    /// State root after executing the block.
    pub state_root: H256,
    /// The consensus round the block was proposed in (0 for genesis): the proposers of the
    /// earlier rounds of its height missed their turn (see `pallet_membership::proposers`).
    pub round: u32,
}

impl Header {
    /// blake3 of the SCALE-encoded header.
    pub fn hash(&self) -> H256 {
        blake3_hash(&self.encode())
    }
}

/// A block: header and extrinsics.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Block {
    pub header: Header,
    /// The extrinsics, in execution order.
    pub extrinsics: Vec<UncheckedExtrinsic>,
}

impl Block {
    /// The block's hash (its header's).
    pub fn hash(&self) -> H256 {
        self.header.hash()
    }
}

/// Binary Merkle root over the extrinsics' encodings. Leaves are `blake3(0x00 ‖ bytes)`, inner
/// nodes `blake3(0x01 ‖ left ‖ right)`, an odd node is carried up unchanged, and no
/// extrinsics give zero.
pub fn extrinsics_root(extrinsics: &[UncheckedExtrinsic]) -> H256 {
    let mut level: Vec<H256> = extrinsics
        .iter()
        .map(|x| {
            let mut buf = vec![0u8];
            x.encode_to(&mut buf);
            blake3_hash(&buf)
        })
        .collect();
    if level.is_empty() {
        return H256::default();
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => {
                    let mut buf = [0u8; 65];
                    buf[0] = 1;
                    buf[1..33].copy_from_slice(&l.0);
                    buf[33..].copy_from_slice(&r.0);
                    blake3_hash(&buf)
                }
                [one] => *one,
                _ => H256::default(),
            })
            .collect();
    }
    level[0]
}
