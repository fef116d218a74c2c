//! # Network configuration pallet
//!
//! What nodes need to find and pace each other, agreed on chain:
//! - **chain parameters**: block pacing, the timestamp drift a validator tolerates, and the live
//!   clock's largest step per block (see [`ChainParams`]);
//! - **bootnodes**: libp2p multiaddresses new nodes dial first;
//! - **endpoints**: per service and node, the `host:port` clients and the proxy connect to.
//!
//! Parameters and bootnodes change only by admin origin; a node may set its own endpoint for a
//! service it is a candidate of.

#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

use drchain_support::dispatch::BadOrigin;
use drchain_support::{
    storage_double_map, storage_value, AccountId, Env, Origin, Overlay, ServiceDirectory,
    ServiceError, ServiceName,
};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Most bootnodes.
pub const MAX_BOOTNODES: usize = 32;
/// Longest bootnode multiaddress or endpoint, in bytes.
pub const MAX_ADDRESS_LEN: usize = 256;

/// Chain-wide timing parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainParams {
    /// A block is proposed at least this often when idle, so chain time advances.
    pub max_block_interval_ms: u64,
    /// Validators refuse proposals whose timestamp is further than this from their clock (in
    /// either direction; see the lease argument in `docs/architecture.md`).
    pub max_drift_ms: u64,
    /// The live clock advances by at most this much per block, so a consensus stall does not
    /// age heartbeats. Must be at least `max_block_interval_ms`.
    pub live_clock_max_gap_ms: u64,
}

impl Default for ChainParams {
    fn default() -> Self {
        Self {
            max_block_interval_ms: 200,
            max_drift_ms: 100,
            live_clock_max_gap_ms: 400,
        }
    }
}

impl ChainParams {
    /// Checks the parameters are usable together.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: &str| {
            Err(Error::InvalidParams {
                reason: reason.into(),
            })
        };
        if !(10..=60_000).contains(&self.max_block_interval_ms) {
            return bad("max_block_interval_ms must be between 10 and 60000");
        }
        if !(1..=60_000).contains(&self.max_drift_ms) {
            return bad("max_drift_ms must be between 1 and 60000");
        }
        if self.live_clock_max_gap_ms < self.max_block_interval_ms
            || self.live_clock_max_gap_ms > 600_000
        {
            return bad(
                "live_clock_max_gap_ms must be at least max_block_interval_ms and at most 600000",
            );
        }
        Ok(())
    }
}

storage_value!(
    /// The chain parameters in force.
    pub Params: ChainParams, "NetworkConfig"
);
storage_value!(
    /// Bootnode multiaddresses.
    pub Bootnodes: Vec<String>, "NetworkConfig"
);
storage_double_map!(
    /// `host:port` of each node for each service.
    pub Endpoints: (ServiceName, AccountId) => String, "NetworkConfig"
);

/// Calls of this pallet. Indices are fixed: they are the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// Admin: replace the chain parameters.
    #[codec(index = 0)]
    SetParams {
        /// New parameters.
        params: ChainParams,
    },
    /// Admin: replace the bootnode list.
    #[codec(index = 1)]
    SetBootnodes {
        /// Multiaddresses, e.g. `/ip4/127.0.0.1/tcp/30333/p2p/12D3…`.
        bootnodes: Vec<String>,
    },
    /// Admin, or signed by `node` itself if it is a candidate of `service`: set or clear the
    /// node's endpoint for the service.
    #[codec(index = 2)]
    SetEndpoint {
        service: ServiceName,
        node: AccountId,
        /// `host:port`, or `None` to clear.
        endpoint: Option<String>,
    },
}

/// Events of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The chain parameters changed.
    #[codec(index = 0)]
    ParamsChanged {
        /// New parameters.
        params: ChainParams,
    },
    /// The bootnode list changed.
    #[codec(index = 1)]
    BootnodesChanged {
        /// New list.
        bootnodes: Vec<String>,
    },
    /// A node's endpoint for a service changed.
    #[codec(index = 2)]
    EndpointChanged {
        service: ServiceName,
        node: AccountId,
        /// New endpoint, `None` if cleared.
        endpoint: Option<String>,
    },
}

/// Errors of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// Wrong origin for the call.
    #[error(transparent)]
    BadOrigin(#[from] drchain_support::dispatch::BadOrigin),
    /// Parameters out of range.
    #[error("invalid chain parameters: {reason}")]
    InvalidParams { reason: String },
    /// A bootnode that is not a multiaddress.
    #[error("invalid bootnode {address:?}: {reason}")]
    InvalidBootnode { address: String, reason: String },
    /// An endpoint that is not `host:port`.
    #[error("invalid endpoint {endpoint:?}: expected host:port with a port of 1 to 65535")]
    InvalidEndpoint { endpoint: String },
    /// The service is unknown, or the node is not one of its candidates.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// The pallet, for its block hooks (none: everything happens in calls).
#[derive(Debug)]
pub struct Pallet;

impl<E> drchain_support::Hooks<E> for Pallet {}

/// The chain parameters in force (defaults before genesis sets them).
pub fn params(state: &Overlay<'_>) -> ChainParams {
    Params::get(state).unwrap_or_default()
}

/// The bootnodes.
pub fn bootnodes(state: &Overlay<'_>) -> Vec<String> {
    Bootnodes::get(state).unwrap_or_default()
}

/// The endpoint of `node` for `service`.
pub fn endpoint(state: &Overlay<'_>, service: &ServiceName, node: &AccountId) -> Option<String> {
    Endpoints::get(state, service, node)
}

/// Checks a bootnode multiaddress: `/proto/value/...` with no empty component.
pub fn check_bootnode(address: &str) -> Result<(), Error> {
    let err = |reason: &str| {
        Err(Error::InvalidBootnode {
            address: address.into(),
            reason: reason.into(),
        })
    };
    if address.len() > MAX_ADDRESS_LEN {
        return err("too long");
    }
    let Some(rest) = address.strip_prefix('/') else {
        return err("a multiaddress starts with '/'");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return err("expected /protocol/value pairs such as /ip4/127.0.0.1/tcp/30333");
    }
    Ok(())
}

/// Checks an endpoint: `host:port` (IPv6 as `[addr]:port`), port 1–65535.
pub fn check_endpoint(endpoint: &str) -> Result<(), Error> {
    let invalid = || Error::InvalidEndpoint {
        endpoint: endpoint.into(),
    };
    if endpoint.len() > MAX_ADDRESS_LEN {
        return Err(invalid());
    }
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if port == 0 || !host_ok {
        return Err(invalid());
    }
    Ok(())
}

/// Executes a call.
pub fn dispatch<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    directory: &dyn ServiceDirectory,
    origin: Origin,
    call: Call,
) -> Result<(), Error> {
    match call {
        Call::SetParams { params } => {
            origin.admin()?;
            params.validate()?;
            Params::put(env.state, &params);
            env.deposit(Event::ParamsChanged { params });
        }
        Call::SetBootnodes { bootnodes } => {
            origin.admin()?;
            if bootnodes.len() > MAX_BOOTNODES {
                return Err(Error::InvalidBootnode {
                    address: format!("{} entries", bootnodes.len()),
                    reason: format!("at most {MAX_BOOTNODES} bootnodes"),
                });
            }
            bootnodes.iter().try_for_each(|b| check_bootnode(b))?;
            Bootnodes::put(env.state, &bootnodes);
            env.deposit(Event::BootnodesChanged { bootnodes });
        }
        Call::SetEndpoint {
            service,
            node,
            endpoint,
        } => {
            if let Origin::Signed(who) = origin {
                if who != node {
                    return Err(BadOrigin::needs("admin, or the node's own signed").into());
                }
            }
            directory.candidate_epoch(env.state, &service, &node)?;
            match &endpoint {
                Some(e) => {
                    check_endpoint(e)?;
                    Endpoints::insert(env.state, &service, &node, e);
                }
                None => Endpoints::remove(env.state, &service, &node),
            }
            env.deposit(Event::EndpointChanged {
                service,
                node,
                endpoint,
            });
        }
    }
    Ok(())
}

/// Writes the genesis parameters and bootnodes.
pub fn build_genesis(
    state: &mut Overlay<'_>,
    params: &ChainParams,
    bootnodes: &[String],
) -> Result<(), Error> {
    params.validate()?;
    bootnodes.iter().try_for_each(|b| check_bootnode(b))?;
    Params::put(state, params);
    Bootnodes::put(state, &bootnodes.to_vec());
    Ok(())
}

/// Writes an endpoint without the candidate check (genesis, where the runtime checks services).
pub fn set_endpoint_unchecked(
    state: &mut Overlay<'_>,
    service: &ServiceName,
    node: &AccountId,
    endpoint: &str,
) -> Result<(), Error> {
    check_endpoint(endpoint)?;
    Endpoints::insert(state, service, node, &endpoint.to_string());
    Ok(())
}

/// Drops every endpoint of a removed service.
pub fn clear_service(state: &mut Overlay<'_>, service: &ServiceName) {
    Endpoints::remove_prefix(state, service);
}
