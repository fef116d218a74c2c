//! Signed extrinsics.
//!
//! The signature covers a domain tag, the chain's genesis hash, the signer, the nonce and the
//! call, so a transaction can neither be replayed on another chain nor twice on this one.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use drchain_support::{blake3_hash, AccountId, Nonce, Signature, H256};
use ed25519_dalek::{Signer, SigningKey};
use parity_scale_codec::{Decode, DecodeLimit, Encode};

use crate::call::RuntimeCall;
use crate::MAX_DECODE_DEPTH;

/// Domain separation tag of transaction signatures.
pub const SIGNING_DOMAIN: &[u8] = b"drchain/tx/v1";
/// Largest encoded extrinsic, bytes.
pub const MAX_EXTRINSIC_BYTES: usize = 64 * 1024;

/// Signatures this process has verified, keyed by blake3 of the genesis hash and the whole
/// encoded extrinsic (signer, nonce, call, signature): a memo of a pure function, so it cannot
/// change any result, only skip repeating it. Bounded; when full it starts over.
#[derive(Debug, Default)]
pub struct VerifiedSignatures {
    seen: Mutex<HashSet<H256>>,
}

/// Entries kept at most (32 bytes each).
const VERIFIED_CAPACITY: usize = 1 << 17;

static VERIFIED: LazyLock<VerifiedSignatures> = LazyLock::new(VerifiedSignatures::default);

impl VerifiedSignatures {
    fn key(genesis_hash: &H256, x: &UncheckedExtrinsic) -> H256 {
        let mut bytes = genesis_hash.0.to_vec();
        x.encode_to(&mut bytes);
        blake3_hash(&bytes)
    }

    fn contains(&self, key: &H256) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    fn insert(&self, key: H256) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= VERIFIED_CAPACITY {
            seen.clear();
        }
        seen.insert(key);
    }
}

/// A signed call.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct UncheckedExtrinsic {
    /// Who signed.
    pub signer: AccountId,
    /// The signer's transaction counter; must equal the chain's for the signer.
    pub nonce: Nonce,
    pub call: RuntimeCall,
    /// Ed25519 signature over [`signing_payload`].
    pub signature: Signature,
}

/// The bytes a transaction's signature covers.
pub fn signing_payload(
    genesis_hash: &H256,
    signer: &AccountId,
    nonce: Nonce,
    call: &RuntimeCall,
) -> Vec<u8> {
    (SIGNING_DOMAIN, genesis_hash, signer, nonce, call).encode()
}

impl UncheckedExtrinsic {
    /// Signs `call` with `key` for the chain with `genesis_hash`.
    pub fn sign(key: &SigningKey, genesis_hash: &H256, nonce: Nonce, call: RuntimeCall) -> Self {
        let signer = AccountId::from(key);
        let payload = signing_payload(genesis_hash, &signer, nonce, &call);
        let signature = Signature(key.sign(&payload).to_bytes());
        Self {
            signer,
            nonce,
            call,
            signature,
        }
    }

    /// Whether the signature is valid for the chain with `genesis_hash`.
    ///
    /// A node checks a transaction when it pools it and again when it builds or validates the
    /// block holding it; successful checks are remembered (see [`VerifiedSignatures`]) so the
    /// later ones cost a hash instead of an Ed25519 verification. The answer is the same.
    pub fn verify(&self, genesis_hash: &H256) -> bool {
        let memo = VerifiedSignatures::key(genesis_hash, self);
        if VERIFIED.contains(&memo) {
            return true;
        }
        let payload = signing_payload(genesis_hash, &self.signer, self.nonce, &self.call);
        let valid = self.signer.verify(&payload, &self.signature);
        if valid {
            VERIFIED.insert(memo);
        }
        valid
    }

    /// blake3 of the encoding: the transaction hash.
    pub fn hash(&self) -> H256 {
        blake3_hash(&self.encode())
    }

    /// Decodes an extrinsic from untrusted bytes: size-limited, nesting-limited, and all bytes
    /// must be used.
    pub fn decode_untrusted(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_EXTRINSIC_BYTES {
            return Err(format!(
                "extrinsic of {} bytes exceeds {MAX_EXTRINSIC_BYTES}",
                bytes.len()
            ));
        }
        Self::decode_all_with_depth_limit(MAX_DECODE_DEPTH, &mut &bytes[..])
            .map_err(|e| e.to_string())
    }
}

/// Decodes a SCALE `Vec<UncheckedExtrinsic>` (a gossiped batch of transactions) from untrusted
/// bytes: at most `max_count` of them, each bounded like a submitted extrinsic, no trailing
/// bytes.
pub fn decode_transaction_batch(
    bytes: &[u8],
    max_count: usize,
) -> Result<Vec<UncheckedExtrinsic>, String> {
    use parity_scale_codec::Compact;
    let input = &mut &bytes[..];
    let count = Compact::<u32>::decode(input).map_err(|e| e.to_string())?.0 as usize;
    if count > max_count {
        return Err(format!(
            "{count} transactions in one message (at most {max_count})"
        ));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let x = UncheckedExtrinsic::decode_with_depth_limit(MAX_DECODE_DEPTH, input)
            .map_err(|e| e.to_string())?;
        if x.encoded_size() > MAX_EXTRINSIC_BYTES {
            return Err(format!("a transaction exceeds {MAX_EXTRINSIC_BYTES} bytes"));
        }
        out.push(x);
    }
    if !input.is_empty() {
        return Err(format!("{} trailing bytes", input.len()));
    }
    Ok(out)
}
