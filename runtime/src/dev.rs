//! Well-known development keys. **Never use them outside a test network**: anyone can derive
//! them.
//!
//! The key of a name is the Ed25519 key whose 32-byte seed is
//! `blake3("drchain/dev-seed/" ‖ name)`; the dev CA's seed is the same with the name `ca`.

use drchain_support::AccountId;
use ed25519_dalek::SigningKey;

/// The dev accounts, in order: the dev chain uses the first, the local testnet the first four.
pub const DEV_NAMES: [&str; 6] = ["alice", "bob", "charlie", "dave", "eve", "ferdie"];

/// The dev key of `name`.
pub fn dev_key(name: &str) -> SigningKey {
    let seed = blake3::hash(format!("drchain/dev-seed/{name}").as_bytes());
    SigningKey::from_bytes(seed.as_bytes())
}

/// The dev account of `name`.
pub fn dev_account(name: &str) -> AccountId {
    AccountId::from(&dev_key(name))
}

/// The dev chain specs: `dev` (one validator) and `local` (four validators), with a dev CA
/// and certificates derived from the dev seeds. The same code always produces the same specs;
/// `chain-spec/dev.json` and `chain-spec/local.json` are its output.
#[cfg(any(test, feature = "dev-specs"))]
pub mod specs {
    use std::collections::BTreeMap;

    use drchain_support::ServiceName;
    use pallet_membership::certgen::{self, CaKey, CertGenError, CertParams};
    use pallet_membership::MemberRole;
    use pallet_network_config::ChainParams;

    use super::{dev_account, dev_key};
    use crate::genesis::{AdminsSpec, ChainSpec, MemberSpec, ServiceSpec};

    /// Genesis time of the dev chains: 2026-01-01T00:00:00Z.
    pub const GENESIS_TIME_MS: u64 = 1_767_225_600_000;
    /// Dev certificates are valid from 2025-01-01T00:00:00Z...
    pub const NOT_BEFORE_MS: u64 = 1_735_689_600_000;
    /// ...to 2036-01-01T00:00:00Z.
    pub const NOT_AFTER_MS: u64 = 2_082_758_400_000;
    /// Subject of the dev CA.
    pub const DEV_CA_SUBJECT: &str = "CN=drchain dev CA,O=drchain";

    /// The dev CA key and certificate (DER).
    pub fn dev_ca() -> Result<(CaKey, Vec<u8>), CertGenError> {
        let key = CaKey::Ed25519(dev_key("ca"));
        let params = CertParams {
            subject: DEV_CA_SUBJECT.into(),
            serial: 1,
            not_before_ms: NOT_BEFORE_MS,
            not_after_ms: NOT_AFTER_MS,
        };
        let der = certgen::new_ca(&key, &params)?;
        Ok((key, der))
    }

    fn member(
        ca: &(CaKey, Vec<u8>),
        index: usize,
        name: &str,
        role: MemberRole,
    ) -> Result<MemberSpec, CertGenError> {
        let ou = match role {
            MemberRole::Validator => "validator",
            MemberRole::Member => "member",
        };
        let params = CertParams {
            subject: format!("CN={name},OU={ou},O=drchain"),
            serial: 2 + index as u64,
            not_before_ms: NOT_BEFORE_MS,
            not_after_ms: NOT_AFTER_MS,
        };
        let der = certgen::issue(&ca.0, &ca.1, &dev_account(name), &params)?;
        Ok(MemberSpec {
            name: name.into(),
            role,
            certificate: certgen::to_pem(&der)?,
        })
    }

    fn service(
        name: &str,
        candidates: &[&str],
        first_port: u16,
    ) -> Result<ServiceSpec, CertGenError> {
        let name = ServiceName::new(name).map_err(|e| CertGenError::Build {
            reason: e.to_string(),
        })?;
        let endpoints: BTreeMap<String, String> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c.to_string(),
                    format!("127.0.0.1:{}", first_port + i as u16),
                )
            })
            .collect();
        Ok(ServiceSpec {
            name,
            candidates: candidates.iter().map(|c| c.to_string()).collect(),
            heartbeat_timeout_ms: pallet_failover::DEFAULT_HEARTBEAT_TIMEOUT_MS,
            promotion_timeout_ms: pallet_failover::DEFAULT_PROMOTION_TIMEOUT_MS,
            max_lag_ms: pallet_failover::DEFAULT_MAX_LAG_MS,
            allow_data_loss: false,
            endpoints,
        })
    }

    fn spec(
        name: &str,
        id: &str,
        members: &[(&str, MemberRole)],
        admins: &[&str],
        services: Vec<ServiceSpec>,
    ) -> Result<ChainSpec, CertGenError> {
        let ca = dev_ca()?;
        let members = members
            .iter()
            .enumerate()
            .map(|(i, (n, role))| member(&ca, i, n, *role))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChainSpec {
            name: name.into(),
            id: id.into(),
            genesis_time_ms: GENESIS_TIME_MS,
            params: ChainParams::default(),
            bootnodes: vec![],
            trust_anchors: vec![certgen::to_pem(&ca.1)?],
            admins: AdminsSpec {
                accounts: admins.iter().map(|a| dev_account(a)).collect(),
                threshold: 1,
            },
            members,
            services,
        })
    }

    /// One validator (alice, also the admin) protecting `demo` on itself.
    pub fn dev() -> Result<ChainSpec, CertGenError> {
        spec(
            "drchain development",
            "dev",
            &[("alice", MemberRole::Validator)],
            &["alice"],
            vec![service("demo", &["alice"], 15432)?],
        )
    }

    /// Four validators (alice, bob, charlie, dave), a non-validator member (eve), admins alice
    /// and bob (threshold 1), and two example services.
    pub fn local() -> Result<ChainSpec, CertGenError> {
        spec(
            "drchain local testnet",
            "local",
            &[
                ("alice", MemberRole::Validator),
                ("bob", MemberRole::Validator),
                ("charlie", MemberRole::Validator),
                ("dave", MemberRole::Validator),
                ("eve", MemberRole::Member),
            ],
            &["alice", "bob"],
            vec![
                service("demo-db", &["alice", "bob", "charlie"], 15432)?,
                service("demo-api", &["bob", "charlie", "dave"], 18080)?,
            ],
        )
    }
}
