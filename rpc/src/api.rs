//! The JSON-RPC API, defined once: jsonrpsee's `#[rpc(server, client)]` turns each trait into
//! a server trait (`SubstrateApiServer`, `DrchainApiServer`, implemented in [`crate::substrate`]
//! and [`crate::drchain`]) and a client trait (`SubstrateApiClient`, `DrchainApiClient`)
//! implemented for every jsonrpsee client, so `drchain tx`, `status`, `bench` and `proxy`
//! call typed methods instead of spelling names.
//!
//! Each definition passes through `rpc_api!`, which also records how many positional params
//! each method takes (`SUBSTRATE_PARAM_COUNTS`, `DRCHAIN_PARAM_COUNTS`): the server refuses
//! extra params by that table (`strict.rs`), which the generated code would silently ignore.
//!
//! In a definition the `#[method]` or `#[subscription]` attribute comes first and the doc
//! comment after it (the macro reads the attribute to learn the name).

use drchain_support::{AccountId, ServiceName, H256};
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::proc_macros::rpc;

use crate::views::{
    AckView, AdminsView, BlockEvents, CheckpointView, DiskView, EndpointView, HeaderView,
    HistoryOptions, HistoryView, LiveFailoverEvent, ManifestSummary, MemberView, MethodsView,
    NodeHeartbeatView, NodeServiceView, NumberParam, PeerView, ReadProofView, ServiceView,
    SignedBlockView, SystemHealth, TimelineView, TransactionStatus, TrustAnchorView,
    ValidatorActivityView, ValidatorsView,
};
use crate::RpcError;
use drchain_runtime::pallet_network_config::ChainParams;

/// Counts the params of a signature's tail (`, a: A, b: B`): one `:` per param (a path's `::`
/// is one token, so it does not count).
macro_rules! count_params {
    () => { 0usize };
    (: $($rest:tt)*) => { 1usize + count_params!($($rest)*) };
    ($other:tt $($rest:tt)*) => { count_params!($($rest)*) };
}

/// Defines an API trait and the param counts of its methods. The trait's tokens are passed
/// through untouched (the code `#[rpc]` generates must share the call site's hygiene with the
/// method names, or it cannot name its own variables); [`param_counts!`] reads them again for
/// the counts.
macro_rules! rpc_api {
    (param counts in $counts:ident; $($api:tt)*) => {
        $($api)*

        /// Each method's (or subscription's) name and how many positional params it takes.
        pub const $counts: &[(&str, usize)] = param_counts!(@trait $($api)*);
    };
}

/// `&[(name, count)]` of a trait whose methods are each written
/// `#[method(name = "..", ..)] /// docs async fn f(&self, ..) -> T;` (or `#[subscription]`).
macro_rules! param_counts {
    (@trait $(#[$attr:meta])* pub trait $api:ident { $($body:tt)* }) => {
        param_counts!(@items [] $($body)*)
    };
    (@items [$($out:tt)*]) => { &[$($out)*] };
    (@items [$($out:tt)*]
        #[$kind:ident(name = $name:literal $($options:tt)*)]
        $(#[doc = $doc:literal])*
        async fn $method:ident(&self $($params:tt)*) -> $ret:ty;
        $($rest:tt)*
    ) => {
        param_counts!(@items [$($out)* ($name, count_params!($($params)*)),] $($rest)*)
    };
}

rpc_api! {
    param counts in SUBSTRATE_PARAM_COUNTS;

    #[rpc(server, client)]
    /// Methods under Substrate's names, in Substrate's shapes, so its tools can read them.
    pub trait SubstrateApi {
        #[method(name = "system_name")]
        /// The node's `--name`.
        async fn system_name(&self) -> Result<String, RpcError>;
        #[method(name = "system_version")]
        /// The node's version.
        async fn system_version(&self) -> Result<String, RpcError>;
        #[method(name = "system_chain")]
        /// The chain spec's name.
        async fn system_chain(&self) -> Result<String, RpcError>;
        #[method(name = "system_localPeerId")]
        /// The node's libp2p peer id.
        async fn system_local_peer_id(&self) -> Result<String, RpcError>;
        #[method(name = "system_genesisHash")]
        /// The genesis hash.
        async fn system_genesis_hash(&self) -> Result<H256, RpcError>;
        #[method(name = "system_health")]
        /// Peers and whether the node is catching up.
        async fn system_health(&self) -> Result<SystemHealth, RpcError>;
        #[method(name = "system_disk")]
        /// The database's size per kind of data and its disk's free space.
        async fn system_disk(&self) -> Result<Option<DiskView>, RpcError>;
        #[method(name = "system_peers")]
        /// Connected peers (unsafe).
        async fn system_peers(&self) -> Result<Vec<PeerView>, RpcError>;
        #[method(name = "system_accountNextIndex")]
        /// The nonce `account`'s next transaction should use, past its pending ones.
        async fn system_account_next_index(&self, account: AccountId) -> Result<u64, RpcError>;
        #[method(name = "chain_getHeader")]
        /// The header of block `hash`, or of the finalized head.
        async fn chain_get_header(&self, hash: Option<H256>) -> Result<Option<HeaderView>, RpcError>;
        #[method(name = "chain_getBlock")]
        /// Block `hash` (or the finalized head) with its commit certificate.
        async fn chain_get_block(&self, hash: Option<H256>) -> Result<Option<SignedBlockView>, RpcError>;
        #[method(name = "chain_getBlockHash")]
        /// The hash of block `number` (a number or `0x` hex), or of the finalized head.
        async fn chain_get_block_hash(&self, number: Option<NumberParam>) -> Result<Option<H256>, RpcError>;
        #[method(name = "chain_getFinalizedHead")]
        /// The finalized head's hash.
        async fn chain_get_finalized_head(&self) -> Result<H256, RpcError>;
        #[method(name = "chain_getEvents")]
        /// The events of block `hash`, or of the finalized head.
        async fn chain_get_events(&self, hash: Option<H256>) -> Result<BlockEvents, RpcError>;
        #[method(name = "chain_getValidatorSetChanges")]
        /// The proofs of every validator-set change up to the finalized head, oldest first
        /// (each a SCALE `drchain_consensus::state_sync::SetChange`, `0x` hex): what a client
        /// that trusts only the chain spec follows to check a head's certificate.
        async fn chain_get_validator_set_changes(&self) -> Result<Vec<String>, RpcError>;
        #[subscription(name = "chain_subscribeNewHeads" => "chain_newHead", unsubscribe = "chain_unsubscribeNewHeads", item = HeaderView)]
        /// Every new head; with BFT finality, the same as finalized heads.
        async fn chain_subscribe_new_heads(&self) -> SubscriptionResult;
        #[subscription(name = "chain_subscribeFinalizedHeads" => "chain_finalizedHead", unsubscribe = "chain_unsubscribeFinalizedHeads", item = HeaderView)]
        /// Every finalized head.
        async fn chain_subscribe_finalized_heads(&self) -> SubscriptionResult;
        #[method(name = "state_getStorage")]
        /// The value at storage `key` (`0x` hex) in the finalized state; `at` must name the
        /// finalized head.
        async fn state_get_storage(&self, key: String, at: Option<H256>) -> Result<Option<String>, RpcError>;
        #[method(name = "state_getReadProof")]
        /// The values at storage `keys` (`0x` hex, at most 64) in the finalized state, each
        /// with a proof of it (or of its absence) against the state root of block `at` (the
        /// finalized head; `at` must name it).
        async fn state_get_read_proof(&self, keys: Vec<String>, at: Option<H256>) -> Result<ReadProofView, RpcError>;
        #[method(name = "author_submitExtrinsic")]
        /// Submits a SCALE-encoded extrinsic (`0x` hex); returns its hash.
        async fn author_submit_extrinsic(&self, extrinsic: String) -> Result<H256, RpcError>;
        #[method(name = "author_pendingExtrinsics")]
        /// The pool's transactions, SCALE-encoded.
        async fn author_pending_extrinsics(&self) -> Result<Vec<String>, RpcError>;
        #[method(name = "author_removeExtrinsic")]
        /// Takes transactions out of the pool (unsafe); returns those that were there.
        async fn author_remove_extrinsic(&self, hashes: Vec<H256>) -> Result<Vec<H256>, RpcError>;
        #[subscription(name = "author_submitAndWatchExtrinsic" => "author_extrinsicUpdate", unsubscribe = "author_unwatchExtrinsic", item = TransactionStatus)]
        /// Submits an extrinsic and reports `ready`, then `inBlock` and `finalized`, or
        /// `invalid` or `dropped`.
        async fn author_submit_and_watch_extrinsic(&self, extrinsic: String) -> SubscriptionResult;
        #[method(name = "rpc_methods")]
        /// Every method this server answers.
        async fn rpc_methods(&self) -> Result<MethodsView, RpcError>;
    }
}

rpc_api! {
    param counts in DRCHAIN_PARAM_COUNTS;

    #[rpc(server, client)]
    /// drchain's own methods: services and failover, heartbeats, chain configuration,
    /// checkpoints and members.
    pub trait DrchainApi {
        #[method(name = "failover_services")]
        /// Every protected service, its holder and candidates.
        async fn failover_services(&self) -> Result<Vec<ServiceView>, RpcError>;
        #[method(name = "failover_service")]
        /// One service.
        async fn failover_service(&self, service: ServiceName) -> Result<ServiceView, RpcError>;
        #[method(name = "failover_history")]
        /// A service's failover log.
        async fn failover_history(&self, service: ServiceName, options: Option<HistoryOptions>) -> Result<HistoryView, RpcError>;
        #[method(name = "failover_timeline")]
        /// A service's transitions of the active role, with causes and durations.
        async fn failover_timeline(&self, service: ServiceName, limit: Option<usize>) -> Result<TimelineView, RpcError>;
        #[subscription(name = "failover_subscribeEvents" => "failover_event", unsubscribe = "failover_unsubscribeEvents", item = LiveFailoverEvent)]
        /// Failover events of every service, or of the one named, as blocks finalize.
        async fn failover_subscribe_events(&self, service: Option<ServiceName>) -> SubscriptionResult;
        #[method(name = "status_heartbeats")]
        /// Each candidate's last heartbeat for a service.
        async fn status_heartbeats(&self, service: ServiceName) -> Result<Vec<NodeHeartbeatView>, RpcError>;
        #[method(name = "status_node")]
        /// One node's standing in every service it is a candidate of.
        async fn status_node(&self, node: AccountId) -> Result<Vec<NodeServiceView>, RpcError>;
        #[method(name = "config_params")]
        /// The chain parameters.
        async fn config_params(&self) -> Result<ChainParams, RpcError>;
        #[method(name = "config_bootnodes")]
        /// The bootnodes on chain.
        async fn config_bootnodes(&self) -> Result<Vec<String>, RpcError>;
        #[method(name = "config_endpoints")]
        /// Where clients reach each candidate of a service.
        async fn config_endpoints(&self, service: ServiceName) -> Result<Vec<EndpointView>, RpcError>;
        #[method(name = "checkpoints_latest")]
        /// A service's latest recorded checkpoint.
        async fn checkpoints_latest(&self, service: ServiceName) -> Result<Option<CheckpointView>, RpcError>;
        #[method(name = "checkpoints_list")]
        /// A service's recorded checkpoints.
        async fn checkpoints_list(&self, service: ServiceName) -> Result<Vec<CheckpointView>, RpcError>;
        #[method(name = "checkpoints_acks")]
        /// The newest checkpoint each node holds (acknowledged, or recorded as the active).
        async fn checkpoints_acks(&self, service: ServiceName) -> Result<Vec<AckView>, RpcError>;
        #[method(name = "replication_fetch")]
        /// Unsafe. Makes the node fetch checkpoint `root` into its chunk store from the members
        /// that hold it (every object verified), waiting at most `timeout_ms` (default 60000).
        async fn replication_fetch(&self, root: H256, timeout_ms: Option<u64>) -> Result<ManifestSummary, RpcError>;
        #[method(name = "replication_transfer")]
        /// Unsafe. Answers one transfer request (SCALE, hex), as members answer each other,
        /// from the node's chunk store: what `drchain restore` reads a checkpoint with.
        async fn replication_transfer(&self, request: String) -> Result<String, RpcError>;
        #[method(name = "membership_members")]
        /// Every member.
        async fn membership_members(&self) -> Result<Vec<MemberView>, RpcError>;
        #[method(name = "membership_member")]
        /// One member.
        async fn membership_member(&self, account: AccountId) -> Result<MemberView, RpcError>;
        #[method(name = "membership_validators")]
        /// The validator set and its scheduled changes.
        async fn membership_validators(&self) -> Result<ValidatorsView, RpcError>;
        #[method(name = "agent_status")]
        /// This node's failover agent per service (role, serving, lease left, health, last hook); null without an agent.
        async fn agent_status(&self) -> Result<Option<serde_json::Value>, RpcError>;
        #[method(name = "membership_validatorActivity")]
        /// Each validator's recent precommits and missed proposer turns.
        async fn membership_validator_activity(&self) -> Result<Vec<ValidatorActivityView>, RpcError>;
        #[method(name = "membership_admins")]
        /// The admins and how many must approve.
        async fn membership_admins(&self) -> Result<AdminsView, RpcError>;
        #[method(name = "membership_trustAnchors")]
        /// The pinned CAs.
        async fn membership_trust_anchors(&self) -> Result<Vec<TrustAnchorView>, RpcError>;
    }
}

/// How many positional params `method` takes; `None` for a name not in the API.
pub fn param_count(method: &str) -> Option<(&'static str, usize)> {
    SUBSTRATE_PARAM_COUNTS
        .iter()
        .chain(DRCHAIN_PARAM_COUNTS)
        .find(|(name, _)| *name == method)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::param_count;

    #[test]
    fn param_counts_follow_the_signatures() {
        assert_eq!(param_count("system_name"), Some(("system_name", 0)));
        assert_eq!(param_count("chain_getHeader").map(|c| c.1), Some(1));
        assert_eq!(param_count("state_getStorage").map(|c| c.1), Some(2));
        assert_eq!(param_count("state_getReadProof").map(|c| c.1), Some(2));
        assert_eq!(param_count("failover_history").map(|c| c.1), Some(2));
        assert_eq!(
            param_count("chain_subscribeFinalizedHeads").map(|c| c.1),
            Some(0)
        );
        assert_eq!(
            param_count("failover_subscribeEvents").map(|c| c.1),
            Some(1)
        );
        assert_eq!(param_count("no_suchMethod"), None);
    }
}
