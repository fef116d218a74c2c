//! `drchain run` and `drchain purge-chain`.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use drchain_runtime::dev::dev_key;
use drchain_runtime::ChainSpec;
use drchain_support::{AccountId, Overlay, StateRead};
use ed25519_dalek::SigningKey;
use libp2p::Multiaddr;

use crate::cli::{PurgeArgs, RunArgs};
use crate::node_loop::{self, NodeConfig};
use crate::{chain_spec, keys};
use drchain_consensus::clock::SystemClock;
use drchain_consensus::DriverConfig;
use drchain_rpc::{Cors, NodeInfo, RpcConfig};

/// Dev names whose well-known keys `--name` selects on the built-in chains.
const DEV_NAMES: [&str; 5] = ["alice", "bob", "charlie", "dave", "eve"];

/// Where a node keeps its data when no `--base-path` is given.
pub fn default_base_path() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/drchain")
}

/// The database directory of a chain under a base path.
pub fn database_path(base: &Path, spec: &ChainSpec) -> PathBuf {
    base.join("chains").join(&spec.id).join("db")
}

fn node_key(args: &RunArgs, chain: &str, name: &str, base: &Path) -> Result<SigningKey> {
    if let Some(path) = &args.node_key_file {
        return keys::read_ed25519(path);
    }
    if matches!(chain, "dev" | "local") && DEV_NAMES.contains(&name) {
        tracing::warn!(
            name,
            "using the well-known dev key of {name}: for testing only"
        );
        return Ok(dev_key(name));
    }
    let path = base.join("node-key.pem");
    if path.exists() {
        return keys::read_ed25519(&path);
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    std::fs::create_dir_all(base)?;
    keys::write_secret(&path, &keys::ed25519_pem(&key)?)?;
    tracing::info!(path = %path.display(), "generated a node key");
    Ok(key)
}

/// Runs a node until Ctrl-C (or SIGTERM).
pub fn run(args: RunArgs) -> Result<()> {
    init_logging();
    let chain = match (&args.chain, args.dev) {
        (Some(c), _) => c.clone(),
        (None, true) => "dev".into(),
        (None, false) => "local".into(),
    };
    let name = args.name.clone().unwrap_or_else(|| {
        if args.dev {
            "alice".into()
        } else {
            "node".into()
        }
    });
    let validator = args.validator || args.dev;
    let spec = chain_spec::load(&chain)?;
    let genesis = spec.build_genesis().context("building genesis")?;
    let tmp = if args.tmp || args.dev && args.base_path.is_none() {
        Some(tempfile::tempdir().context("creating a temporary base path")?)
    } else {
        None
    };
    let base = match (&tmp, &args.base_path) {
        (Some(t), _) => t.path().to_path_buf(),
        (None, Some(p)) => p.clone(),
        (None, None) => default_base_path(),
    };
    let key = node_key(&args, &chain, &name, &base)?;
    let listen_ip = if args.listen_external {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    let listen: Multiaddr = format!("/ip4/{listen_ip}/tcp/{}", args.port).parse()?;
    let mut bootnodes = vec![];
    let state = &genesis.state;
    let spec_bootnodes =
        drchain_runtime::pallet_network_config::bootnodes(&Overlay::new(state as &dyn StateRead));
    for b in spec_bootnodes.iter().chain(args.bootnodes.iter()) {
        bootnodes.push(
            b.parse::<Multiaddr>()
                .with_context(|| format!("bootnode {b:?} is not a multiaddr"))?,
        );
    }
    let public_addrs = args
        .public_addr
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .with_context(|| format!("--public-addr {a:?} is not a multiaddr"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let account = AccountId::from(&key);
    tracing::info!(
        chain = %spec.name,
        genesis = %genesis.hash(),
        %account,
        base_path = %base.display(),
        "drchain {}",
        env!("CARGO_PKG_VERSION")
    );
    let chain_name = spec.name.clone();
    let rpc = (!args.no_rpc).then(|| RpcConfig {
        listen: SocketAddr::new(ip(args.rpc_external), args.rpc_port),
        methods: args.rpc_methods,
        cors: args.rpc_cors.clone().unwrap_or_else(Cors::local),
        max_connections: args.rpc_max_connections,
    });
    // Read before anything starts, so a bad file stops the node with its reason.
    let agent = match &args.agent_config {
        Some(path) => Some(drchain_agent::AgentConfig::load(path)?),
        None => None,
    };
    let health_addr = SocketAddr::new(ip(args.health_external), args.health_port);
    let prometheus = (!args.no_prometheus)
        .then(|| SocketAddr::new(ip(args.prometheus_external), args.prometheus_port));
    let db_path = database_path(&base, &spec);
    let config = NodeConfig {
        database: db_path.clone(),
        genesis,
        key,
        name,
        validator,
        listen,
        bootnodes,
        public_addrs,
        push_listen: Some(SocketAddr::new(ip(args.listen_external), args.push_port)),
        driver: DriverConfig::default(),
        clock: Arc::new(SystemClock),
        sync: args.sync,
        blocks_pruning: args.blocks_pruning,
        state_pruning: args.state_pruning,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.worker_threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        let genesis = config.genesis.hash();
        let node_name = config.name.clone();
        let key = config.key.clone();
        let clock = config.clock.clone();
        let node = node_loop::start(config).await?;
        let _informant = AbortOnDrop(tokio::spawn(crate::informant::run(node.status.clone())));
        let _disk = AbortOnDrop(tokio::spawn(crate::disk::watch(
            node.db.clone(),
            db_path,
            node.metrics.disk.clone(),
        )));
        let local_agent = drchain_rpc::LocalAgent::default();
        // Kept alive until the node stops.
        let _rpc = match &rpc {
            Some(rpc) => {
                let info = NodeInfo {
                    name: node_name,
                    chain: chain_name,
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    peer_id: node.peer_id.to_string(),
                    genesis,
                    local_agent: local_agent.clone(),
                };
                Some(
                    drchain_rpc::start(
                        rpc,
                        Arc::new(node.client()),
                        node.metrics.rpc.clone(),
                        info,
                    )
                    .await?
                    .1,
                )
            }
            None => None,
        };
        let _metrics = match prometheus {
            Some(addr) => {
                let (addr, task) = crate::metrics::serve(addr, node.metrics.clone()).await?;
                tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
                Some(AbortOnDrop(task))
            }
            None => None,
        };
        let agent_and_health = match agent {
            Some(agent_config) => {
                let agent = drchain_agent::start(
                    agent_config,
                    drchain_agent::AgentContext {
                        key,
                        genesis,
                        node: Arc::new(node.client()),
                        metrics: node.metrics.agent.clone(),
                        clock: clock.clone(),
                    },
                );
                let (reports, now) = (agent.reports.clone(), clock.clone());
                local_agent.set(move || {
                    // The lease re-read now, as the health endpoints do.
                    let at = now.now().mono;
                    let current: Vec<_> =
                        reports.borrow().iter().map(|r| r.clone().at(at)).collect();
                    serde_json::to_value(current).unwrap_or(serde_json::Value::Null)
                });
                let (addr, task) = drchain_agent::health::serve(
                    health_addr,
                    agent.reports.clone(),
                    agent.alive.clone(),
                    clock.clone(),
                )
                .await?;
                tracing::info!(%addr, "health endpoints at http://{addr}/primary?service=NAME");
                Some((agent, AbortOnDrop(task)))
            }
            None => None,
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let signal = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        let stopped = node.run_until(signal).await;
        // Stopped by a signal or an error alike: the chain elects another node once the
        // heartbeats stop, so no service this node promoted may outlive it.
        if let Some((agent, _health)) = agent_and_health {
            agent.stop().await;
        }
        stopped
    })?;
    drop(tmp);
    Ok(())
}

fn ip(external: bool) -> IpAddr {
    if external {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// Stops a background task when the node's scope ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: info, quiet libraries).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(
            "info,libp2p=warn,libp2p_gossipsub=error,informalsystems_malachitebft_core_consensus=error",
        ));
    // Colours only on a terminal: log files (the testnet's node.log) stay plain for grep.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Deletes a chain's database.
pub fn purge_chain(args: PurgeArgs) -> Result<()> {
    let spec = chain_spec::load(&args.chain)?;
    let base = args.base_path.unwrap_or_else(default_base_path);
    let db = database_path(&base, &spec);
    if !db.exists() {
        println!("{} does not exist; nothing to purge", db.display());
        return Ok(());
    }
    if !args.yes {
        eprint!("Delete {}? [y/N] ", db.display());
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("aborted");
        }
    }
    std::fs::remove_dir_all(&db).with_context(|| format!("removing {}", db.display()))?;
    println!("{} removed", db.display());
    Ok(())
}
