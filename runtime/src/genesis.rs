//! Chain specs and genesis.
//!
//! A chain spec is JSON (documented in `chain-spec/README.md`). Parsing names the offending
//! field of a malformed spec (`members[1].certificate: ...`), and so does building genesis
//! from it (a certificate the pinned CAs did not issue, a candidate that is not a member).

use std::collections::BTreeMap;

use drchain_support::{AccountId, MemoryState, Overlay, ServiceName, H256};
use pallet_failover::ServiceConfig;
use pallet_membership::MemberRole;
use pallet_network_config::ChainParams;
use serde::{Deserialize, Serialize};

use crate::block::Header;
use crate::system;

/// A malformed or inconsistent chain spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain spec field `{field}`: {message}")]
pub struct SpecError {
    /// Path of the offending field, e.g. `members[1].certificate`.
    pub field: String,
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl ToString) -> Self {
        Self {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

/// A chain spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    /// Human-readable name.
    pub name: String,
    /// Short id (`dev`, `local`, ...); part of the genesis state.
    pub id: String,
    /// Genesis header timestamp, ms since the Unix epoch. Certificates are checked against it.
    pub genesis_time_ms: u64,
    /// Chain parameters (defaults apply to missing fields).
    #[serde(default)]
    pub params: ChainParams,
    /// Bootnode multiaddresses.
    #[serde(default)]
    pub bootnodes: Vec<String>,
    /// Pinned CA certificates (PEM).
    pub trust_anchors: Vec<String>,
    /// Admin accounts and how many must approve.
    pub admins: AdminsSpec,
    /// Initial members.
    pub members: Vec<MemberSpec>,
    /// Services protected from genesis.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
}

/// Admins in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminsSpec {
    /// Accounts (hex Ed25519 public keys).
    pub accounts: Vec<AccountId>,
    /// Approvals needed.
    pub threshold: u32,
}

/// A member in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// Name used to refer to the member elsewhere in the spec.
    pub name: String,
    pub role: MemberRole,
    /// Certificate (PEM) issued by a pinned CA; its subject key is the member's account.
    pub certificate: String,
}

/// A service in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Service name.
    pub name: ServiceName,
    /// Candidates, highest priority first: member names or hex accounts.
    pub candidates: Vec<String>,
    /// Heartbeat timeout, ms (default 1000).
    #[serde(default = "pallet_failover::default_heartbeat_timeout")]
    pub heartbeat_timeout_ms: u64,
    /// Promotion timeout, ms (default 5000).
    #[serde(default = "pallet_failover::default_promotion_timeout")]
    pub promotion_timeout_ms: u64,
    /// The RPO: most milliseconds an electable candidate's data may be older than the latest
    /// checkpoint (default 1000).
    #[serde(default = "pallet_failover::default_max_lag_ms")]
    pub max_lag_ms: u64,
    /// Elect the freshest candidate even beyond `max_lag_ms` rather than stay vacant
    /// (default false).
    #[serde(default)]
    pub allow_data_loss: bool,
    /// `host:port` per candidate (member name or hex account).
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
}

/// The genesis block's state and header.
#[derive(Debug, Clone)]
pub struct Genesis {
    /// The state after genesis.
    pub state: MemoryState,
    /// The genesis header.
    pub header: Header,
}

impl Genesis {
    /// The genesis hash: the chain's identity, covered by every transaction signature.
    pub fn hash(&self) -> H256 {
        self.header.hash()
    }
}

impl ChainSpec {
    /// Parses a spec, naming the field that is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(root)".to_string()
            } else {
                path
            };
            SpecError::new(field, e.into_inner())
        })
    }

    /// The spec as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    fn resolve(
        &self,
        field: &str,
        who: &str,
        accounts: &BTreeMap<&str, AccountId>,
    ) -> Result<AccountId, SpecError> {
        if who.starts_with("0x") {
            return who
                .parse()
                .map_err(|e| SpecError::new(field, format!("{who:?}: {e}")));
        }
        accounts.get(who).copied().ok_or_else(|| {
            SpecError::new(
                field,
                format!("{who:?} is neither a member name nor a 0x account"),
            )
        })
    }

    /// Builds the genesis state and header, checking every certificate at `genesis_time_ms`.
    pub fn build_genesis(&self) -> Result<Genesis, SpecError> {
        if self.id.is_empty() {
            return Err(SpecError::new("id", "must not be empty"));
        }
        let mut anchors = vec![];
        for (i, pem) in self.trust_anchors.iter().enumerate() {
            let der = pallet_membership::x509::certificate_der(pem.as_bytes())
                .map_err(|e| SpecError::new(format!("trust_anchors[{i}]"), e))?;
            anchors.push(der);
        }
        let mut members = vec![];
        let mut names = BTreeMap::new();
        for (i, m) in self.members.iter().enumerate() {
            let field = format!("members[{i}].certificate");
            let der = pallet_membership::x509::certificate_der(m.certificate.as_bytes())
                .map_err(|e| SpecError::new(&field, e))?;
            let account = pallet_membership::x509::parse(&der)
                .and_then(|c| c.ed25519_subject())
                .map_err(|e| SpecError::new(&field, e))?;
            if names.insert(m.name.as_str(), account).is_some() {
                return Err(SpecError::new(
                    format!("members[{i}].name"),
                    format!("duplicate name {:?}", m.name),
                ));
            }
            members.push((der, m.role));
        }
        let mut services = vec![];
        for (i, s) in self.services.iter().enumerate() {
            let candidates = s
                .candidates
                .iter()
                .enumerate()
                .map(|(j, c)| self.resolve(&format!("services[{i}].candidates[{j}]"), c, &names))
                .collect::<Result<Vec<_>, _>>()?;
            let config = ServiceConfig {
                candidates,
                heartbeat_timeout_ms: s.heartbeat_timeout_ms,
                promotion_timeout_ms: s.promotion_timeout_ms,
                max_lag_ms: s.max_lag_ms,
                allow_data_loss: s.allow_data_loss,
            };
            services.push((s.name.clone(), config));
        }

        let mut state = MemoryState::new();
        let changes = {
            let mut o = Overlay::new(&state);
            system::ChainId::put(&mut o, &self.id);
            system::Number::put(&mut o, &0);
            system::Timestamp::put(&mut o, &self.genesis_time_ms);
            system::LiveClock::put(&mut o, &0);
            pallet_network_config::build_genesis(&mut o, &self.params, &self.bootnodes).map_err(
                |e| {
                    let field = match e {
                        pallet_network_config::Error::InvalidBootnode { .. } => "bootnodes",
                        _ => "params",
                    };
                    SpecError::new(field, e)
                },
            )?;
            let config = pallet_membership::GenesisConfig {
                trust_anchors: anchors,
                admins: self.admins.accounts.clone(),
                admin_threshold: self.admins.threshold,
                members,
            };
            pallet_membership::build_genesis(&mut o, &config, self.genesis_time_ms)
                .map_err(|e| SpecError::new(e.field, e.error))?;
            pallet_failover::build_genesis(&mut o, &services)
                .map_err(|(i, e)| SpecError::new(format!("services[{i}]"), e))?;
            for (i, s) in self.services.iter().enumerate() {
                let config = &services[i].1;
                for (who, endpoint) in &s.endpoints {
                    let field = format!("services[{i}].endpoints.{who}");
                    let node = self.resolve(&field, who, &names)?;
                    if !config.candidates.contains(&node) {
                        return Err(SpecError::new(field, "not a candidate of this service"));
                    }
                    pallet_network_config::set_endpoint_unchecked(&mut o, &s.name, &node, endpoint)
                        .map_err(|e| SpecError::new(&field, e))?;
                }
            }
            o.into_changes()
        };
        let state_root = state.commit(changes);
        let header = Header {
            parent_hash: H256::default(),
            number: 0,
            timestamp: self.genesis_time_ms,
            extrinsics_root: H256::default(),
            state_root,
            round: 0,
        };
        Ok(Genesis { state, header })
    }
}
