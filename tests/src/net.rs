//! In-process networks of real nodes: each node is the real service (rocksdb store, libp2p on
//! loopback, consensus driver) in one tokio runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use drchain_consensus::DriverConfig;
use drchain_node::node_loop::{self, NodeConfig, NodeHandle};
use drchain_rpc::ChainStatus;
use drchain_runtime::dev::{dev_key, specs};
use drchain_runtime::support::H256;
use drchain_runtime::Genesis;
use ed25519_dalek::SigningKey;
use libp2p::Multiaddr;

/// A node of an in-process network, running or stopped.
#[derive(Debug)]
pub struct TestNode {
    pub name: String,
    pub key: SigningKey,
    /// Its database directory (kept across restarts).
    pub database: PathBuf,
    /// Its address, once it has listened.
    pub address: Option<Multiaddr>,
    /// The running node.
    pub handle: Option<NodeHandle>,
    /// Whether it listens for direct checkpoint push connections (from its next start).
    pub direct_pushes: bool,
}

/// Several nodes of the local chain on loopback.
#[derive(Debug)]
pub struct TestNetwork {
    /// The chain.
    pub genesis: Genesis,
    pub nodes: Vec<TestNode>,
    _dir: tempfile::TempDir,
}

impl TestNetwork {
    /// The four validators of the local chain, started one after the other, each dialling
    /// those before it.
    pub async fn local_validators() -> Self {
        let spec = specs::local().expect("local spec");
        let genesis = spec.build_genesis().expect("genesis");
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = crate::sim::VALIDATORS
            .iter()
            .map(|name| TestNode {
                name: (*name).into(),
                key: dev_key(name),
                database: dir.path().join(name),
                address: None,
                handle: None,
                direct_pushes: true,
            })
            .collect();
        let mut net = Self {
            genesis,
            nodes,
            _dir: dir,
        };
        for i in 0..net.nodes.len() {
            net.start(i).await;
        }
        net
    }

    fn bootnodes(&self, except: usize) -> Vec<Multiaddr> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .filter_map(|(_, n)| n.address.clone())
            .collect()
    }

    /// Adds a node with `key` (not necessarily a member) that dials the others.
    pub async fn add(&mut self, name: &str, key: SigningKey, validator: bool) -> usize {
        let database = self._dir.path().join(name);
        self.nodes.push(TestNode {
            name: name.into(),
            key,
            database,
            address: None,
            handle: None,
            direct_pushes: true,
        });
        let i = self.nodes.len() - 1;
        self.start_with(i, validator).await;
        i
    }

    /// Starts (or restarts) node `i` as a validator.
    pub async fn start(&mut self, i: usize) {
        self.start_with(i, true).await;
    }

    async fn start_with(&mut self, i: usize, validator: bool) {
        let port = self.nodes[i]
            .address
            .as_ref()
            .and_then(|a| {
                a.iter().find_map(|p| match p {
                    libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                    _ => None,
                })
            })
            .unwrap_or(0);
        let config = NodeConfig {
            genesis: self.genesis.clone(),
            database: self.nodes[i].database.clone(),
            key: self.nodes[i].key.clone(),
            name: self.nodes[i].name.clone(),
            validator,
            listen: format!("/ip4/127.0.0.1/tcp/{port}")
                .parse()
                .expect("multiaddr"),
            bootnodes: self.bootnodes(i),
            public_addrs: vec![],
            push_listen: self.nodes[i]
                .direct_pushes
                .then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            driver: DriverConfig::default(),
            clock: std::sync::Arc::new(drchain_consensus::clock::SystemClock),
            sync: drchain_node::node_loop::SyncMode::Full,
            blocks_pruning: drchain_consensus::store::BlocksPruning::Archive,
            state_pruning: drchain_consensus::store::StatePruning::Archive,
        };
        let handle = node_loop::start(config).await.expect("node starts");
        let mut listening = handle.listening.clone();
        let addr = tokio::time::timeout(
            Duration::from_secs(10),
            listening.wait_for(|l| !l.is_empty()),
        )
        .await
        .expect("node listens in time")
        .expect("node alive")[0]
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(handle.peer_id));
        self.nodes[i].address = Some(addr);
        self.nodes[i].handle = Some(handle);
    }

    /// Stops node `i` cleanly (as on Ctrl-C).
    pub async fn stop(&mut self, i: usize) {
        if let Some(h) = self.nodes[i].handle.take() {
            h.stop().await.expect("node stopped cleanly");
        }
    }

    /// Aborts node `i`'s task wherever it is, without letting it finish what it was doing
    /// (the in-process stand-in for a kill; the process tests use real SIGKILLs).
    pub async fn abort(&mut self, i: usize) {
        if let Some(h) = self.nodes[i].handle.take() {
            h.abort().await;
        }
    }

    /// The status of node `i`.
    pub fn status(&self, i: usize) -> ChainStatus {
        *self.nodes[i]
            .handle
            .as_ref()
            .expect("node running")
            .status
            .borrow()
    }

    /// Waits until every node in `which` has finalized `height`.
    pub async fn wait_for_height(&self, which: &[usize], height: u64, within: Duration) {
        let waits = which.iter().map(|i| {
            let mut status = self.nodes[*i]
                .handle
                .as_ref()
                .expect("node running")
                .status
                .clone();
            async move {
                status
                    .wait_for(|s| s.finalized >= height)
                    .await
                    .map(|_| ())
                    .expect("node alive");
            }
        });
        if tokio::time::timeout(within, futures::future::join_all(waits))
            .await
            .is_err()
        {
            let heights: BTreeMap<String, u64> = which
                .iter()
                .map(|i| (self.nodes[*i].name.clone(), self.status(*i).finalized))
                .collect();
            panic!("nodes did not reach height {height} within {within:?}: {heights:?}");
        }
    }

    /// The finalized hash of `number` at running node `i`.
    pub async fn hash_at(&self, i: usize, number: u64) -> Option<H256> {
        let handle = self.nodes[i].handle.as_ref().expect("node running");
        handle.finalized_hash(number).await.expect("node answers")
    }
}

impl TestNetwork {
    /// Alice (admin, threshold 1) proposes `call` through her node; waits until it is
    /// finalized.
    pub async fn as_admin(&self, call: drchain_runtime::pallet_membership::Call) {
        let call = drchain_runtime::RuntimeCall::Admin(drchain_runtime::AdminCall::Propose {
            call: Box::new(drchain_runtime::RuntimeCall::Membership(call)),
        });
        let x = drchain_runtime::UncheckedExtrinsic::sign(
            &dev_key("alice"),
            &self.genesis.hash(),
            0,
            call,
        );
        self.submit_until_finalized(0, x).await;
    }

    /// Submits `x` through node `i` and waits until a block holding a transaction is
    /// finalized.
    pub async fn submit_until_finalized(&self, i: usize, x: drchain_runtime::UncheckedExtrinsic) {
        let handle = self.nodes[i].handle.as_ref().expect("node running");
        handle
            .submit(x)
            .await
            .expect("node answers")
            .expect("the pool accepts the transaction");
        let mut status = handle.status.clone();
        tokio::time::timeout(
            Duration::from_secs(30),
            status.wait_for(|s| s.included_transactions >= 1),
        )
        .await
        .expect("the transaction is finalized")
        .expect("node running");
    }

    /// Serves JSON-RPC for running node `i` on a free loopback port.
    pub async fn serve_rpc(
        &self,
        i: usize,
        methods: drchain_rpc::RpcMethods,
        max_connections: u32,
    ) -> (std::net::SocketAddr, jsonrpsee::server::ServerHandle) {
        let node = self.nodes[i].handle.as_ref().expect("node running");
        let config = drchain_rpc::RpcConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            methods,
            cors: drchain_rpc::Cors::local(),
            max_connections,
        };
        let info = drchain_rpc::NodeInfo {
            name: self.nodes[i].name.clone(),
            chain: "Local Testnet".into(),
            version: "test".into(),
            peer_id: node.peer_id.to_string(),
            genesis: self.genesis.hash(),
            local_agent: drchain_rpc::LocalAgent::default(),
        };
        drchain_rpc::start(
            &config,
            std::sync::Arc::new(node.client()),
            node.metrics.rpc.clone(),
            info,
        )
        .await
        .expect("RPC server starts")
    }
}
