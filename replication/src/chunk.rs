//! Content-defined chunking: FastCDC (v2020) cuts a file where its content says, so an edit
//! or an insertion changes only the chunks around it and the rest keep their names.

use std::io::Read;

use drchain_support::{blake3_hash, H256};
use parity_scale_codec::{Decode, Encode};

use crate::error::ReplicationError;

/// A chunk's name: blake3 of its plain bytes.
pub type ChunkId = H256;

/// The largest chunk any manifest may declare, bytes (bounds every buffer a peer can make us
/// allocate for one chunk).
pub const MAX_CHUNK_BYTES: u32 = 1024 * 1024;

/// How files are cut. Recorded in every manifest, so chunk boundaries stay reproducible even
/// if defaults change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct ChunkingParams {
    /// Smallest chunk, bytes (even).
    pub min: u32,
    /// Target average, bytes (a power of two).
    pub avg: u32,
    /// Largest chunk, bytes (even, at most [`MAX_CHUNK_BYTES`]).
    pub max: u32,
    /// FastCDC normalization level (0–3).
    pub normalization: u8,
}

impl Default for ChunkingParams {
    /// 4 / 16 / 64 KiB: small enough that an in-place edit of a 4 KiB database page rewrites
    /// about one 16 KiB chunk, large enough to keep manifests small (measured in
    /// docs/benchmarks.md).
    fn default() -> Self {
        Self {
            min: 4 * 1024,
            avg: 16 * 1024,
            max: 64 * 1024,
            normalization: 1,
        }
    }
}

impl ChunkingParams {
    /// Checks the params against FastCDC's limits and ours.
    pub fn validate(&self) -> Result<(), ReplicationError> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && min.is_multiple_of(2)
            && avg.is_power_of_two()
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && max >= MAXIMUM_MIN
            && max.is_multiple_of(2)
            && self.max <= MAX_CHUNK_BYTES
            && self.min <= self.avg
            && self.avg <= self.max
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(ReplicationError::BadChunkingParams { params: *self })
        }
    }

    fn level(&self) -> fastcdc::v2020::Normalization {
        match self.normalization {
            0 => fastcdc::v2020::Normalization::Level0,
            1 => fastcdc::v2020::Normalization::Level1,
            2 => fastcdc::v2020::Normalization::Level2,
            _ => fastcdc::v2020::Normalization::Level3,
        }
    }
}

/// A chunk cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// blake3 of `data`.
    pub id: ChunkId,
    /// Its bytes.
    pub data: Vec<u8>,
}

impl Chunk {
    /// Names `data`.
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            id: blake3_hash(&data),
            data,
        }
    }
}

/// Cuts `reader` into chunks, calling `each` for every one in order.
pub fn chunk_stream(
    reader: impl Read,
    params: &ChunkingParams,
    mut each: impl FnMut(Chunk) -> Result<(), ReplicationError>,
) -> Result<(), ReplicationError> {
    params.validate()?;
    let stream = fastcdc::v2020::StreamCDC::with_level(
        reader,
        params.min as usize,
        params.avg as usize,
        params.max as usize,
        params.level(),
    );
    for chunk in stream {
        let chunk = chunk.map_err(|e| ReplicationError::Read {
            what: "a file being chunked".to_owned(),
            reason: e.to_string(),
        })?;
        each(Chunk::new(chunk.data))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::pseudo_random;

    fn ids(data: &[u8]) -> Vec<ChunkId> {
        let mut out = vec![];
        chunk_stream(data, &ChunkingParams::default(), |c| {
            out.push(c.id);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn an_insertion_changes_only_the_chunks_around_it() {
        let original = pseudo_random(1024 * 1024, 7);
        let mut edited = original.clone();
        let insert = pseudo_random(4096, 9);
        edited.splice(500_000..500_000, insert);
        let before = ids(&original);
        let after = ids(&edited);
        let kept = after.iter().filter(|id| before.contains(id)).count();
        assert!(
            before.len() > 30,
            "about 64 chunks of 16 KiB: {}",
            before.len()
        );
        assert!(
            kept + 3 >= before.len(),
            "all but a few chunks keep their names: {kept} of {}",
            before.len()
        );
    }

    #[test]
    fn chunks_respect_the_bounds_and_reassemble() {
        let data = pseudo_random(300_000, 3);
        let params = ChunkingParams::default();
        let mut joined = vec![];
        let mut sizes = vec![];
        chunk_stream(&data[..], &params, |c| {
            assert_eq!(c.id, blake3_hash(&c.data));
            sizes.push(c.data.len());
            joined.extend_from_slice(&c.data);
            Ok(())
        })
        .unwrap();
        assert_eq!(joined, data);
        let (last, rest) = sizes.split_last().unwrap();
        assert!(rest
            .iter()
            .all(|s| *s >= params.min as usize && *s <= params.max as usize));
        assert!(*last <= params.max as usize);
    }

    #[test]
    fn bad_params_are_refused() {
        for params in [
            ChunkingParams {
                avg: 12_000,
                ..ChunkingParams::default()
            },
            ChunkingParams {
                max: 4 * 1024 * 1024,
                ..ChunkingParams::default()
            },
            ChunkingParams {
                min: 4097,
                ..ChunkingParams::default()
            },
            ChunkingParams {
                min: 128 * 1024,
                ..ChunkingParams::default()
            },
        ] {
            assert!(params.validate().is_err(), "{params:?}");
        }
        assert!(ChunkingParams::default().validate().is_ok());
    }
}
