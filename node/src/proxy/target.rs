//! Where the proxy sends new connections.

use drchain_rpc::views::ServiceView;
use drchain_support::{AccountId, Epoch};

/// Where new connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The active node.
    pub node: AccountId,
    pub epoch: Epoch,
    /// Its endpoint for the service.
    pub address: String,
}

/// The target a service view implies: its active node's endpoint, if it has both.
pub fn target_of(view: &ServiceView) -> Option<Target> {
    let node = view.active?;
    let address = view
        .nodes
        .iter()
        .find(|n| n.node == node)?
        .endpoint
        .clone()?;
    Some(Target {
        node,
        epoch: view.epoch,
        address,
    })
}
