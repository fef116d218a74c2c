//! Primitive types: hashes, accounts, signatures, numbers.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex, PoisonError};

use ed25519_dalek::VerifyingKey;
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Block height.
pub type BlockNumber = u64;
/// Milliseconds since the Unix epoch (header timestamps) or on the live clock.
pub type Moment = u64;
/// A service's fencing token: it increases at every election.
pub type Epoch = u64;
/// A per-account transaction counter.
pub type Nonce = u64;

/// Error parsing a fixed-length hex value such as a hash or an account id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// The text is not hex.
    #[error("not hex: {reason}")]
    NotHex {
        /// What the hex decoder said.
        reason: String,
    },
    /// The value has the wrong number of bytes.
    #[error("expected {expected} bytes, got {got}")]
    WrongLength {
        /// Bytes wanted.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let bytes = hex::decode(s).map_err(|e| HexError::NotHex {
        reason: e.to_string(),
    })?;
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| HexError::WrongLength { expected: N, got })
}

macro_rules! fixed_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{}", hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex::<$len>(s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

fixed_bytes!(
    /// A 32-byte blake3 hash.
    #[derive(Default)]
    H256,
    32
);
fixed_bytes!(
    /// An account: the member's Ed25519 public key. The same key signs transactions and is the
    /// node's network identity.
    AccountId,
    32
);
fixed_bytes!(
    /// An Ed25519 signature.
    Signature,
    64
);

/// The hash type of the chain.
pub type Hash = H256;

/// blake3 of `data`.
pub fn blake3_hash(data: &[u8]) -> H256 {
    H256(*blake3::hash(data).as_bytes())
}

/// Decompressed public keys of accounts seen recently. Decompressing a key (a square root in
/// the field) is about a third of a signature verification, and a chain's signers are few:
/// its members. Bounded; starts over when full. Only valid keys are kept.
static VERIFYING_KEYS: LazyLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> =
    LazyLock::new(Mutex::default);
const VERIFYING_KEYS_CAPACITY: usize = 4096;

fn verifying_key(account: &AccountId) -> Option<VerifyingKey> {
    let mut keys = VERIFYING_KEYS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(key) = keys.get(&account.0) {
        return Some(*key);
    }
    let key = VerifyingKey::from_bytes(&account.0).ok()?;
    if keys.len() >= VERIFYING_KEYS_CAPACITY {
        keys.clear();
    }
    keys.insert(account.0, key);
    Some(key)
}

impl AccountId {
    /// Verifies an Ed25519 signature by this account over `message`. Strict verification:
    /// malleable and small-order signatures are refused.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let Some(key) = verifying_key(self) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &sig).is_ok()
    }

    /// A short form for logs: the first four bytes.
    pub fn short(&self) -> String {
        format!("0x{}", hex::encode(&self.0[..4]))
    }
}

impl From<&ed25519_dalek::SigningKey> for AccountId {
    fn from(key: &ed25519_dalek::SigningKey) -> Self {
        AccountId(key.verifying_key().to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn hex_round_trip_and_errors() {
        let h = blake3_hash(b"x");
        assert_eq!(h.to_string().parse::<H256>(), Ok(h));
        assert!(matches!(
            "0x12".parse::<H256>(),
            Err(HexError::WrongLength {
                expected: 32,
                got: 1
            })
        ));
        assert!(matches!(
            "zz".parse::<AccountId>(),
            Err(HexError::NotHex { .. })
        ));
    }

    #[test]
    fn signatures_verify_only_for_the_signed_message() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let who = AccountId::from(&key);
        let sig = Signature(key.sign(b"hello").to_bytes());
        assert!(who.verify(b"hello", &sig));
        assert!(!who.verify(b"hellp", &sig));
        assert!(!AccountId([0; 32]).verify(b"hello", &sig));
    }
}

/// Serde for byte strings as `0x`-prefixed hex (certificates in calls and JSON-RPC answers),
/// for `#[serde(with = "drchain_support::primitives::hex_bytes")]`.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `0x` and the hex of `bytes`.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{}", hex::encode(bytes)))
    }

    /// Reads hex, with or without `0x`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s.strip_prefix("0x").unwrap_or(&s))
            .map_err(|e| serde::de::Error::custom(format!("not hex: {e}")))
    }
}
