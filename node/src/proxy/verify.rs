//! `drchain proxy --verify`: the proxy trusts the chain spec, not the node it follows.
//!
//! For each head it routes on, it reads the service's election state, configuration and the
//! active node's endpoint with proofs (`state_getReadProof`), fetches that block's header and
//! commit certificate, checks the certificate against the validator set (followed from the
//! chain spec's genesis through the proven set changes, `chain_getValidatorSetChanges`), and
//! checks every value against the header's state root. The pallets' own getters read the
//! proven values, so the proxy decides exactly as a node would. A node that lies (a forged
//! certificate, a value that does not match its proof, an old head) gives nothing to route on.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use drchain_consensus::codec::{decode_bounded, WireCertificate};
use drchain_consensus::state_sync::target::{follow_set_changes, verify_certificate};
use drchain_consensus::state_sync::{SetChange, TrustRoot};
use drchain_rpc::views::{HeaderView, JUSTIFICATION_ENGINE};
use drchain_rpc::SubstrateApiClient;
use drchain_runtime::pallet_failover::{self, Phase};
use drchain_runtime::{pallet_network_config, Genesis, Header};
use drchain_support::trie_proof::{verify_storage_proof, StorageProof};
use drchain_support::{AccountId, Overlay, ServiceName, StateRead, H256};

use super::target::Target;
use crate::client::RpcClient;

/// Rounds of proof requests for one head: the keys the pallets read depend on values read
/// before (the endpoint on the active node).
const ROUNDS: usize = 4;
/// The largest certificate or set change decoded.
const MAX_ITEM_BYTES: usize = 1 << 20;

/// Why a head was not trusted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The RPC call failed.
    #[error("{0:#}")]
    Rpc(anyhow::Error),
    /// The node's answer does not check: it is lying or broken.
    #[error("the node's answer does not check: {0}")]
    Forged(String),
    /// The head is not newer than one already verified.
    #[error("block #{number} is not newer than #{last}")]
    NotNewer { number: u64, last: u64 },
}

fn forged(reason: impl std::fmt::Display) -> VerifyError {
    VerifyError::Forged(reason.to_string())
}

fn unhex(s: &str) -> Result<Vec<u8>, VerifyError> {
    hex::decode(s.trim_start_matches("0x")).map_err(|e| forged(format!("not hex: {e}")))
}

/// What a verified head says of the service.
#[derive(Debug, Clone)]
pub struct Verified {
    pub number: u64,
    /// Where connections go, if the service has an active node with an endpoint.
    pub target: Option<Target>,
    /// The service's heartbeat timeout, if it exists.
    pub heartbeat_timeout_ms: Option<u64>,
    /// For the log when there is no target.
    pub phase: &'static str,
    pub epoch: u64,
}

/// The proxy's trust: the chain spec's genesis and the validator set it has followed.
#[derive(Debug)]
pub struct Verifier {
    root: TrustRoot,
    validators: Vec<AccountId>,
    last: u64,
}

/// The values of the keys proven so far; reading any other key records it as wanted.
struct Proven<'a> {
    values: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    wanted: RefCell<BTreeSet<Vec<u8>>>,
}

impl StateRead for Proven<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.values.get(key) {
            Some(value) => value.clone(),
            None => {
                self.wanted.borrow_mut().insert(key.to_vec());
                None
            }
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        // No proof shows a range complete: the getters the proxy uses read single keys.
        self.wanted.borrow_mut().insert(prefix.to_vec());
        vec![]
    }
}

impl Verifier {
    /// A verifier that trusts `genesis` only.
    pub fn new(genesis: &Genesis) -> Self {
        let root = crate::chain_io::trust_root(genesis);
        Self {
            validators: root.validators.clone(),
            root,
            last: 0,
        }
    }

    /// Reads `service`'s target at the node's head and checks all of it.
    pub async fn read(
        &mut self,
        client: &RpcClient,
        service: &ServiceName,
    ) -> Result<Verified, VerifyError> {
        let mut values = BTreeMap::new();
        let mut at: Option<H256> = None;
        let mut header: Option<Header> = None;
        for _ in 0..ROUNDS {
            let wanted = match (evaluate(&values, service), &header) {
                (Ok(result), Some(h)) => return self.accept(h.number, result),
                (Ok(_), None) => return Err(forged("nothing was read")),
                (Err(wanted), _) => wanted,
            };
            let keys: Vec<String> = wanted
                .iter()
                .map(|k| format!("0x{}", hex::encode(k)))
                .collect();
            let answer = client
                .state_get_read_proof(keys, at)
                .await
                .map_err(|e| VerifyError::Rpc(e.into()))?;
            let block = match &header {
                Some(h) if Some(answer.at) == at => h.clone(),
                Some(_) => return Err(forged("proofs at another block than asked")),
                None => {
                    let h = self.check_head(client, answer.at).await?;
                    at = Some(answer.at);
                    header = Some(h.clone());
                    h
                }
            };
            for entry in answer.proofs {
                let key = unhex(&entry.key)?;
                let value = entry.value.as_deref().map(unhex).transpose()?;
                let proof: StorageProof =
                    decode_bounded(&unhex(&entry.proof)?, MAX_ITEM_BYTES, "storage proof")
                        .map_err(forged)?;
                if !verify_storage_proof(&block.state_root, &key, value.as_deref(), &proof) {
                    return Err(forged(format!(
                        "the value of key 0x{} does not match its proof",
                        hex::encode(&key)
                    )));
                }
                values.insert(key, value);
            }
            if wanted.iter().any(|k| !values.contains_key(k)) {
                return Err(forged("a key asked for was not answered"));
            }
        }
        Err(forged("the service's state needs more keys than expected"))
    }

    fn accept(&mut self, number: u64, result: Verified) -> Result<Verified, VerifyError> {
        if number <= self.last {
            return Err(VerifyError::NotNewer {
                number,
                last: self.last,
            });
        }
        self.last = number;
        Ok(Verified { number, ..result })
    }

    /// The header of block `hash`, checked: its hash, and its certificate by the validators.
    async fn check_head(&mut self, client: &RpcClient, hash: H256) -> Result<Header, VerifyError> {
        let block = client
            .chain_get_block(Some(hash))
            .await
            .map_err(|e| VerifyError::Rpc(e.into()))?
            .ok_or_else(|| forged(format!("block {hash} is unknown to the node that named it")))?;
        let header = header_of(&block.block.header)?;
        if header.hash() != hash {
            return Err(forged(format!(
                "the header of {hash} hashes to something else"
            )));
        }
        let justification = block
            .justifications
            .unwrap_or_default()
            .into_iter()
            .find(|(engine, _)| engine == JUSTIFICATION_ENGINE)
            .ok_or_else(|| forged(format!("block #{} has no certificate", header.number)))?;
        let certificate: WireCertificate =
            decode_bounded(&unhex(&justification.1)?, MAX_ITEM_BYTES, "certificate")
                .map_err(forged)?;
        if verify_certificate(&self.root, &header, &certificate, &self.validators).is_err() {
            // The set may have changed since: follow the proven changes, then check again.
            let changes = client
                .chain_get_validator_set_changes()
                .await
                .map_err(|e| VerifyError::Rpc(e.into()))?;
            let changes = changes
                .iter()
                .map(|c| {
                    decode_bounded::<SetChange>(&unhex(c)?, MAX_ITEM_BYTES, "set change")
                        .map_err(forged)
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.validators =
                follow_set_changes(&self.root, &changes, header.number).map_err(forged)?;
            verify_certificate(&self.root, &header, &certificate, &self.validators)
                .map_err(forged)?;
        }
        Ok(header)
    }
}

/// The header an RPC view describes (its claimed hash is checked by the caller).
fn header_of(view: &HeaderView) -> Result<Header, VerifyError> {
    let number = u64::from_str_radix(view.number.trim_start_matches("0x"), 16)
        .map_err(|e| forged(format!("block number {:?}: {e}", view.number)))?;
    Ok(Header {
        parent_hash: view.parent_hash,
        number,
        timestamp: view.timestamp,
        extrinsics_root: view.extrinsics_root,
        state_root: view.state_root,
        round: view.round,
    })
}

/// The service's target from proven values, or the keys still to prove.
fn evaluate(
    values: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    service: &ServiceName,
) -> Result<Verified, BTreeSet<Vec<u8>>> {
    let proven = Proven {
        values,
        wanted: RefCell::new(BTreeSet::new()),
    };
    let state = Overlay::new(&proven);
    let config = pallet_failover::config(&state, service);
    let election = pallet_failover::service_state(&state, service);
    let (phase, active) = match election.as_ref().map(|s| &s.phase) {
        Some(Phase::Active { node }) => ("active", Some(*node)),
        Some(Phase::Promoting { .. }) => ("promoting", None),
        Some(Phase::Vacant) => ("vacant", None),
        None => ("unknown service", None),
    };
    let address = active.and_then(|node| pallet_network_config::endpoint(&state, service, &node));
    let wanted = proven.wanted.into_inner();
    if !wanted.is_empty() {
        return Err(wanted);
    }
    let epoch = election.as_ref().map_or(0, |s| s.epoch);
    Ok(Verified {
        number: 0,
        target: match (active, address) {
            (Some(node), Some(address)) => Some(Target {
                node,
                epoch,
                address,
            }),
            _ => None,
        },
        heartbeat_timeout_ms: config.map(|c| c.heartbeat_timeout_ms),
        phase,
        epoch,
    })
}
