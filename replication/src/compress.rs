//! How a chunk is kept on disk and sent to peers: zstd, with a dictionary trained on the
//! service's own chunks when one is available, or raw when compression does not shrink it.
//! The first byte says which; a dictionary-compressed chunk names its dictionary.
//!
//! Decoding is bounded ([`MAX_CHUNK_BYTES`]) and ends with a check of the plain bytes against
//! the chunk's name, so neither a corrupted file nor a hostile peer can make a node store or
//! serve bytes under the wrong name.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use drchain_support::{blake3_hash, H256};
use zstd::zstd_safe::{self, CCtx, DCtx};

use crate::chunk::{ChunkId, MAX_CHUNK_BYTES};
use crate::error::ReplicationError;

/// zstd level for chunks: fast enough to keep up with a service's writes on one core.
pub const COMPRESSION_LEVEL: i32 = 3;
/// Size of a trained dictionary, bytes (zstd's guidance: about 100 KB).
pub const DICTIONARY_BYTES: usize = 112 * 1024;

const RAW: u8 = 0;
const ZSTD: u8 = 1;
const ZSTD_WITH_DICTIONARY: u8 = 2;

/// A zstd dictionary, named by the blake3 of its bytes, prepared for both directions.
pub struct Dictionary {
    id: H256,
    bytes: Vec<u8>,
    encoder: zstd::dict::EncoderDictionary<'static>,
    decoder: zstd::dict::DecoderDictionary<'static>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("id", &self.id)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Dictionary {
    /// Prepares `bytes` (a dictionary trained by zstd, or received from a peer).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            id: blake3_hash(&bytes),
            encoder: zstd::dict::EncoderDictionary::copy(&bytes, COMPRESSION_LEVEL),
            decoder: zstd::dict::DecoderDictionary::copy(&bytes),
            bytes,
        }
    }

    /// Trains a dictionary on `samples` (the service's chunks). `None` when zstd cannot train
    /// one from them (too few or too small samples): compress without one then.
    pub fn train<S: AsRef<[u8]>>(samples: &[S]) -> Option<Self> {
        zstd::dict::from_samples(samples, DICTIONARY_BYTES)
            .ok()
            .filter(|d| !d.is_empty())
            .map(Self::new)
    }

    /// Its name.
    pub fn id(&self) -> H256 {
        self.id
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A dictionary is used only when it shrinks the service's chunks by at least this fraction
/// more than zstd alone (measured on chunks it was not trained on).
pub const MIN_DICTIONARY_GAIN: f64 = 0.05;

/// What a dictionary does to a set of chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DictionaryGain {
    /// Their plain bytes.
    pub plain: u64,
    /// Compressed with the dictionary.
    pub with: u64,
    /// Compressed without it.
    pub without: u64,
}

impl DictionaryGain {
    /// The fraction of zstd's output the dictionary saves (negative: it costs).
    pub fn gain(&self) -> f64 {
        if self.without == 0 {
            0.0
        } else {
            1.0 - self.with as f64 / self.without as f64
        }
    }

    /// Whether it is worth using ([`MIN_DICTIONARY_GAIN`]).
    pub fn pays(&self) -> bool {
        self.gain() >= MIN_DICTIONARY_GAIN
    }
}

/// Measures `dictionary` on `chunks`.
pub fn measure(
    dictionary: &Dictionary,
    chunks: &[Vec<u8>],
) -> Result<DictionaryGain, ReplicationError> {
    let mut compressor = zstd::bulk::Compressor::with_prepared_dictionary(&dictionary.encoder)
        .map_err(zstd_error)?;
    let mut gain = DictionaryGain::default();
    for chunk in chunks {
        gain.plain += chunk.len() as u64;
        gain.with += compressor.compress(chunk).map_err(zstd_error)?.len() as u64;
        gain.without += zstd::bulk::compress(chunk, COMPRESSION_LEVEL)
            .map_err(zstd_error)?
            .len() as u64;
    }
    Ok(gain)
}

/// Trains a dictionary on half of `samples` and measures it on the other half; `None` when
/// zstd cannot train one from them.
pub fn train_and_measure(
    samples: &[Vec<u8>],
) -> Result<Option<(Dictionary, DictionaryGain)>, ReplicationError> {
    let (train, held_out): (Vec<_>, Vec<_>) =
        samples.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let train: Vec<&[u8]> = train.into_iter().map(|(_, s)| s.as_slice()).collect();
    let held_out: Vec<Vec<u8>> = held_out.into_iter().map(|(_, s)| s.clone()).collect();
    let Some(dictionary) = Dictionary::train(&train) else {
        return Ok(None);
    };
    let gain = measure(&dictionary, &held_out)?;
    Ok(Some((dictionary, gain)))
}

/// Compression ratios measured on stored chunks: overall, and on a sample of the chunks
/// compressed both with and without the dictionary (the dictionary's gain).
#[derive(Debug, Default)]
pub struct CompressionStats {
    /// Plain bytes of chunks stored.
    pub plain_bytes: AtomicU64,
    /// Their stored (encoded) bytes.
    pub stored_bytes: AtomicU64,
    /// Plain bytes of the sampled chunks.
    pub sampled_plain_bytes: AtomicU64,
    /// Sampled chunks' bytes compressed with the dictionary.
    pub sampled_with_dictionary: AtomicU64,
    /// Sampled chunks' bytes compressed without it.
    pub sampled_without_dictionary: AtomicU64,
    chunks: AtomicU64,
}

/// Every this many chunks compressed with a dictionary is also compressed without one.
const SAMPLE_EVERY: u64 = 16;

impl CompressionStats {
    /// Plain bytes / stored bytes over everything stored (1.0 before anything is).
    pub fn ratio(&self) -> f64 {
        ratio(&self.plain_bytes, &self.stored_bytes)
    }

    /// The sampled ratio with the dictionary.
    pub fn ratio_with_dictionary(&self) -> f64 {
        ratio(&self.sampled_plain_bytes, &self.sampled_with_dictionary)
    }

    /// The sampled ratio without it.
    pub fn ratio_without_dictionary(&self) -> f64 {
        ratio(&self.sampled_plain_bytes, &self.sampled_without_dictionary)
    }
}

fn ratio(plain: &AtomicU64, stored: &AtomicU64) -> f64 {
    let stored = stored.load(Ordering::Relaxed);
    if stored == 0 {
        1.0
    } else {
        plain.load(Ordering::Relaxed) as f64 / stored as f64
    }
}

fn zstd_error(e: std::io::Error) -> ReplicationError {
    ReplicationError::Compression {
        reason: e.to_string(),
    }
}

fn zstd_code_error(code: zstd_safe::ErrorCode) -> ReplicationError {
    ReplicationError::Compression {
        reason: zstd_safe::get_error_name(code).to_owned(),
    }
}

thread_local! {
    // One zstd context per thread, used for every chunk: a context made per chunk allocated
    // and cleared its tables each time — on the path of every write to a standby (a 4 KiB
    // chunk with a dictionary: ~90 µs to encode, ~20 µs to decode with a cold cache; ~55 and
    // ~9 µs with the context kept, on the VM of docs/benchmarks.md). The one-shot calls used
    // below take no settings from earlier calls.
    static ENCODER: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
    static DECODER: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

/// zstd-compresses `data`, with `dictionary` if given (its level was set when it was prepared).
fn compress(data: &[u8], dictionary: Option<&Dictionary>) -> Result<Vec<u8>, ReplicationError> {
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    ENCODER
        .with(|encoder| {
            let mut encoder = encoder.borrow_mut();
            match dictionary {
                Some(d) => encoder.compress_using_cdict(&mut out, data, d.encoder.as_cdict()),
                None => encoder.compress(&mut out, data, COMPRESSION_LEVEL),
            }
        })
        .map_err(zstd_code_error)?;
    Ok(out)
}

/// Decompresses one zstd frame of at most `limit` plain bytes, with `dictionary` if given.
/// The output is sized by the size the frame declares, checked against `limit` first.
fn decompress(
    frame: &[u8],
    dictionary: Option<&Dictionary>,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let capacity = match zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size > limit as u64 => {
            return Err(format!("declares {size} bytes, more than {limit}"))
        }
        Ok(Some(size)) => size as usize,
        // Not declared: decoding stops at `limit` all the same.
        Ok(None) => limit,
        Err(_) => return Err("not a zstd frame".to_owned()),
    };
    let mut plain = Vec::with_capacity(capacity);
    DECODER
        .with(|decoder| {
            let mut decoder = decoder.borrow_mut();
            match dictionary {
                Some(d) => decoder.decompress_using_ddict(&mut plain, frame, d.decoder.as_ddict()),
                None => decoder.decompress(&mut plain, frame),
            }
        })
        .map_err(|code| zstd_safe::get_error_name(code).to_owned())?;
    Ok(plain)
}

/// Encodes a chunk's plain bytes for the store and the wire.
pub fn encode_chunk(
    data: &[u8],
    dictionary: Option<&Dictionary>,
    stats: &CompressionStats,
) -> Result<Vec<u8>, ReplicationError> {
    let (tag, compressed) = match dictionary {
        Some(d) => {
            let compressed = compress(data, Some(d))?;
            let n = stats.chunks.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(SAMPLE_EVERY) {
                let plain = compress(data, None)?;
                stats
                    .sampled_plain_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                stats
                    .sampled_with_dictionary
                    .fetch_add(compressed.len() as u64, Ordering::Relaxed);
                stats
                    .sampled_without_dictionary
                    .fetch_add(plain.len() as u64, Ordering::Relaxed);
            }
            (ZSTD_WITH_DICTIONARY, compressed)
        }
        None => (ZSTD, compress(data, None)?),
    };
    let header = if tag == ZSTD_WITH_DICTIONARY { 33 } else { 1 };
    let encoded = if compressed.len() + header < data.len() + 1 {
        let mut out = Vec::with_capacity(header + compressed.len());
        out.push(tag);
        if let Some(d) = dictionary {
            out.extend_from_slice(&d.id.0);
        }
        out.extend_from_slice(&compressed);
        out
    } else {
        encode_raw(data)
    };
    stats
        .plain_bytes
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    stats
        .stored_bytes
        .fetch_add(encoded.len() as u64, Ordering::Relaxed);
    Ok(encoded)
}

/// A chunk's plain bytes encoded unchanged (for a push that must not wait for compression).
pub(crate) fn encode_raw(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(RAW);
    out.extend_from_slice(data);
    out
}

/// The plain bytes of an encoding that is unchanged (RAW); `None` for a compressed one.
pub(crate) fn raw_bytes(encoded: &[u8]) -> Option<&[u8]> {
    match encoded {
        [RAW, data @ ..] => Some(data),
        _ => None,
    }
}

/// The dictionary an encoded chunk needs, if any.
pub fn needed_dictionary(encoded: &[u8]) -> Option<H256> {
    match encoded {
        [ZSTD_WITH_DICTIONARY, rest @ ..] if rest.len() >= 32 => {
            let mut id = [0u8; 32];
            id.copy_from_slice(&rest[..32]);
            Some(H256(id))
        }
        _ => None,
    }
}

/// Decodes an encoded chunk and checks it is `id`. `dictionary` gives the dictionary the
/// chunk names (see [`needed_dictionary`]).
pub fn decode_chunk(
    id: &ChunkId,
    encoded: &[u8],
    dictionary: Option<&Dictionary>,
) -> Result<Vec<u8>, ReplicationError> {
    let bad = |reason: String| ReplicationError::BadChunk { id: *id, reason };
    let limit = MAX_CHUNK_BYTES as usize;
    let plain = match encoded {
        [RAW, data @ ..] => data.to_vec(),
        [ZSTD, data @ ..] => decompress(data, None, limit).map_err(bad)?,
        [ZSTD_WITH_DICTIONARY, rest @ ..] if rest.len() >= 32 => {
            let named = needed_dictionary(encoded);
            let dictionary = dictionary.filter(|d| Some(d.id) == named).ok_or_else(|| {
                ReplicationError::Missing {
                    what: "dictionary",
                    id: named.unwrap_or_default(),
                }
            })?;
            decompress(&rest[32..], Some(dictionary), limit).map_err(bad)?
        }
        [] => return Err(bad("empty".to_owned())),
        [tag, ..] => return Err(bad(format!("unknown encoding {tag}"))),
    };
    if plain.len() > limit {
        return Err(bad(format!("{} bytes, more than {limit}", plain.len())));
    }
    let actual = blake3_hash(&plain);
    if actual != *id {
        return Err(bad(format!("its bytes hash to {actual}")));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::database_pages;

    #[test]
    fn chunks_round_trip_with_and_without_a_dictionary() {
        let samples = database_pages(2000, 1);
        let dictionary = Dictionary::train(&samples).expect("enough samples to train");
        let stats = CompressionStats::default();
        for chunk in database_pages(64, 2) {
            let id = blake3_hash(&chunk);
            let with = encode_chunk(&chunk, Some(&dictionary), &stats).unwrap();
            assert_eq!(needed_dictionary(&with), Some(dictionary.id()));
            assert_eq!(decode_chunk(&id, &with, Some(&dictionary)).unwrap(), chunk);
            let without = encode_chunk(&chunk, None, &stats).unwrap();
            assert_eq!(decode_chunk(&id, &without, None).unwrap(), chunk);
        }
        assert!(
            stats.ratio() > 1.5,
            "text pages compress: {}",
            stats.ratio()
        );
        // Both sides of the dictionary's gain are measured (whether it gains depends on the
        // data: the benchmark reports it on a service's data; the agent drops a dictionary
        // that does not pay).
        assert!(stats.ratio_with_dictionary() > 1.5);
        assert!(stats.ratio_without_dictionary() > 1.5);
    }

    #[test]
    fn incompressible_chunks_are_stored_raw() {
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let encoded = encode_chunk(&data, None, &CompressionStats::default()).unwrap();
        assert!(encoded.len() <= data.len() + 1);
        assert_eq!(
            decode_chunk(&blake3_hash(&data), &encoded, None).unwrap(),
            data
        );
    }

    #[test]
    fn corrupt_forged_and_oversized_chunks_are_refused() {
        let data = database_pages(1, 3).remove(0);
        let id = blake3_hash(&data);
        let stats = CompressionStats::default();
        let mut encoded = encode_chunk(&data, None, &stats).unwrap();
        let middle = encoded.len() / 2;
        encoded[middle] ^= 0x40;
        assert!(matches!(
            decode_chunk(&id, &encoded, None),
            Err(ReplicationError::BadChunk { .. })
        ));
        // Bytes of another chunk under this name.
        let other = encode_chunk(b"something else", None, &stats).unwrap();
        assert!(matches!(
            decode_chunk(&id, &other, None),
            Err(ReplicationError::BadChunk { .. })
        ));
        // A zstd bomb: 64 MiB of zeros compresses to a few KiB; decoding stops at the bound.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 * 1024 * 1024], 3).unwrap();
        let mut encoded = vec![ZSTD];
        encoded.extend(bomb);
        assert!(decode_chunk(&id, &encoded, None).is_err());
        // The same bomb, its size not declared: decoding still stops at the bound.
        let mut undeclared = CCtx::create();
        undeclared
            .set_parameter(zstd_safe::CParameter::ContentSizeFlag(false))
            .unwrap();
        let mut bomb = Vec::with_capacity(1 << 20);
        undeclared
            .compress2(&mut bomb, &vec![0u8; 64 * 1024 * 1024])
            .unwrap();
        let mut encoded = vec![ZSTD];
        encoded.extend(bomb);
        assert!(matches!(
            decode_chunk(&id, &encoded, None),
            Err(ReplicationError::BadChunk { .. })
        ));
        // A dictionary chunk without its dictionary: named as missing, not garbage.
        let samples = database_pages(2000, 4);
        let dictionary = Dictionary::train(&samples).unwrap();
        let with = encode_chunk(&data, Some(&dictionary), &stats).unwrap();
        assert!(matches!(
            decode_chunk(&id, &with, None),
            Err(ReplicationError::Missing { .. })
        ));
        assert!(decode_chunk(&id, &[], None).is_err());
        assert!(decode_chunk(&id, &[9, 1, 2], None).is_err());
    }

    #[test]
    fn a_dictionary_pays_on_similar_records_and_is_measured_on_chunks_it_did_not_see() {
        // Small records sharing their structure: what a dictionary is for.
        let samples: Vec<Vec<u8>> = (0..2000u64)
            .map(|i| {
                format!(
                    "{{\"id\":{i},\"customer\":\"{}\",\"status\":\"shipped\",\"warehouse\":\"eu-west-3\",\"carrier\":\"dhl-express\",\"notes\":\"handle with care, fragile\"}}",
                    hex::encode(crate::testdata::pseudo_random(8, i))
                )
                .into_bytes()
            })
            .collect();
        let (_, gain) = train_and_measure(&samples).unwrap().expect("trained");
        assert!(gain.plain > 0 && gain.with < gain.without, "{gain:?}");
        assert!(gain.pays(), "{:.3}", gain.gain());
        // Random bytes: nothing to learn.
        let noise: Vec<Vec<u8>> = (0..400u64)
            .map(|i| {
                (0..128u64)
                    .flat_map(|k| blake3_hash(&[i.to_le_bytes(), k.to_le_bytes()].concat()).0)
                    .collect()
            })
            .collect();
        if let Some((_, gain)) = train_and_measure(&noise).unwrap() {
            assert!(!gain.pays(), "{:.3}", gain.gain());
        }
    }
}
