//! Service primitives shared by the service pallets.

use std::fmt;

use parity_scale_codec::{Decode, Encode, Error as CodecError, Input};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::primitives::{AccountId, Epoch};
use crate::storage::Overlay;

/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME: usize = 64;

/// Why a service name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceNameError {
    /// Empty or longer than [`MAX_SERVICE_NAME`].
    #[error("service name must be 1 to {MAX_SERVICE_NAME} bytes, got {len}")]
    Length {
        /// The given length.
        len: usize,
    },
    /// A character outside `[a-z0-9._-]`.
    #[error("service name may hold only a-z, 0-9, '.', '_' and '-', found {found:?}")]
    Character {
        /// The offending character.
        found: char,
    },
}

/// A service's name: 1–64 bytes of `[a-z0-9._-]`, checked on construction and on decode.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode)]
pub struct ServiceName(String);

impl ServiceName {
    /// Checks and wraps a name.
    pub fn new(name: impl Into<String>) -> Result<Self, ServiceNameError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_SERVICE_NAME {
            return Err(ServiceNameError::Length { len: name.len() });
        }
        if let Some(found) = name.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(ServiceNameError::Character { found });
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Decode for ServiceName {
    fn decode<I: Input>(input: &mut I) -> Result<Self, CodecError> {
        let s = String::decode(input)?;
        ServiceName::new(s).map_err(|_| CodecError::from("invalid service name"))
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for ServiceName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ServiceName::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Health a node reports for a service in its heartbeat.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Serving, or ready to take over.
    #[codec(index = 0)]
    Healthy,
    /// Running but impaired: an active stays active, a standby is not elected.
    #[codec(index = 1)]
    Degraded,
    /// Failed: an active reporting this is replaced.
    #[codec(index = 2)]
    Failed,
}

/// Why a call naming a service (and a node of it) is refused: the same in every service
/// pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum ServiceError {
    /// No such service.
    #[codec(index = 0)]
    #[error("unknown service {service}")]
    UnknownService {
        /// The service named.
        service: ServiceName,
    },
    /// The node is not one of the service's candidates.
    #[codec(index = 1)]
    #[error("{node} is not a candidate of {service}")]
    NotACandidate {
        /// The service named.
        service: ServiceName,
        node: AccountId,
    },
}

/// What the service pallets need to know about services, implemented by the runtime over the
/// failover pallet (which owns service configuration), so these pallets need not depend on it.
pub trait ServiceDirectory {
    /// Whether the service is registered.
    fn exists(&self, state: &Overlay<'_>, service: &ServiceName) -> bool;
    /// Whether `node` is one of the service's candidates.
    fn is_candidate(&self, state: &Overlay<'_>, service: &ServiceName, node: &AccountId) -> bool;
    /// The current epoch of the service.
    fn epoch(&self, state: &Overlay<'_>, service: &ServiceName) -> Option<Epoch>;
    /// The node that holds the active role (promotion completed) and its epoch.
    fn active(&self, state: &Overlay<'_>, service: &ServiceName) -> Option<(AccountId, Epoch)>;

    /// The service's current epoch, if it exists; `UnknownService` otherwise.
    fn existing_epoch(
        &self,
        state: &Overlay<'_>,
        service: &ServiceName,
    ) -> Result<Epoch, ServiceError> {
        self.epoch(state, service)
            .ok_or_else(|| ServiceError::UnknownService {
                service: service.clone(),
            })
    }

    /// The service's current epoch, if it exists and `node` is one of its candidates; why not
    /// otherwise.
    fn candidate_epoch(
        &self,
        state: &Overlay<'_>,
        service: &ServiceName,
        node: &AccountId,
    ) -> Result<Epoch, ServiceError> {
        let epoch = self.existing_epoch(state, service)?;
        if !self.is_candidate(state, service, node) {
            return Err(ServiceError::NotACandidate {
                service: service.clone(),
                node: *node,
            });
        }
        Ok(epoch)
    }
}

/// One service as a [`StaticDirectory`] describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticService {
    /// Candidates in priority order.
    pub candidates: Vec<AccountId>,
    pub epoch: Epoch,
    /// The node holding the active role.
    pub active: Option<AccountId>,
}

/// A fixed directory, for pallet tests and tools that have no failover state at hand.
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    /// Services by name.
    pub services: std::collections::BTreeMap<ServiceName, StaticService>,
}

impl ServiceDirectory for StaticDirectory {
    fn exists(&self, _: &Overlay<'_>, service: &ServiceName) -> bool {
        self.services.contains_key(service)
    }
    fn is_candidate(&self, _: &Overlay<'_>, service: &ServiceName, node: &AccountId) -> bool {
        self.services
            .get(service)
            .is_some_and(|s| s.candidates.contains(node))
    }
    fn epoch(&self, _: &Overlay<'_>, service: &ServiceName) -> Option<Epoch> {
        self.services.get(service).map(|s| s.epoch)
    }
    fn active(&self, _: &Overlay<'_>, service: &ServiceName) -> Option<(AccountId, Epoch)> {
        self.services
            .get(service)
            .and_then(|s| s.active.map(|a| (a, s.epoch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_checked_on_decode_too() {
        assert!(ServiceName::new("pg-main.eu_1").is_ok());
        assert_eq!(
            ServiceName::new(""),
            Err(ServiceNameError::Length { len: 0 })
        );
        assert_eq!(
            ServiceName::new("Pg"),
            Err(ServiceNameError::Character { found: 'P' })
        );
        let bad = "Bad Name".to_string().encode();
        assert!(ServiceName::decode(&mut bad.as_slice()).is_err());
    }
}
