//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// drchain: a BFT-ordered control plane for disaster recovery.
#[derive(Debug, Parser)]
#[command(name = "drchain", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ed25519 member keys (PKCS#8 PEM files).
    #[command(subcommand)]
    Key(KeyCommand),
    /// X.509 certificates: a CA, member certificates, verification.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Print a chain spec (after checking that its genesis builds).
    BuildSpec(BuildSpecArgs),
    /// Run a node.
    Run(RunArgs),
    /// Delete a chain's database (blocks, state, consensus WAL).
    PurgeChain(PurgeArgs),
    /// Sign a call with a key file, submit it, and wait until it is finalized.
    Tx(TxArgs),
    /// Print the chain and every service (active node, epoch, phase, heartbeat ages).
    Status(StatusArgs),
    /// Measure a running testnet: latency, throughput, RPC rate, memory.
    Bench(BenchArgs),
    /// Measure how long a new member takes to follow the chain, by chain length, with
    /// `--sync fast` and `--sync full` (builds the chains itself; takes a while).
    BenchJoin(BenchJoinArgs),
    /// Measure how the database grows with the chain, idle and loaded, with the default
    /// pruning and as an archive (writes the blocks itself; takes a while).
    BenchDisk(BenchDiskArgs),
    /// Write the head's state (block, certificate, validator-set proofs, every entry) to a
    /// file, from a stopped node's database.
    ExportState(ChainIoArgs),
    /// Check a state export and make it a stopped node's state and head (an empty database,
    /// or one behind the export).
    ImportState(ChainIoArgs),
    /// Write finalized blocks with their certificates to a file, from a stopped node's
    /// database (an archive node keeps them all).
    ExportBlocks(ExportBlocksArgs),
    /// Import the blocks of a file that extend a stopped node's head, each certificate
    /// checked and each block executed.
    ImportBlocks(ChainIoArgs),
    /// An L4 TCP proxy to a service's active node, following the chain.
    Proxy(ProxyArgs),
    /// Rebuild a recorded checkpoint of a service's data into a new directory, from the
    /// members' chunk stores (every byte verified).
    Restore(RestoreArgs),
    /// Every service and its candidates as one table (like `patronictl list`).
    List(ListArgs),
    /// Move a service's active role to another candidate, planned (admin).
    Switchover(SwitchoverArgs),
    /// A service's failover timeline: each election, its cause and how long it took.
    History(HistoryArgs),
    /// Maintenance mode: no automatic failover for a service until `resume` (admin).
    Pause(PauseArgs),
    /// End maintenance mode: automatic failover applies again (admin).
    Resume(PauseArgs),
    /// Print a shell completion script: `drchain completions bash > /etc/bash_completion.d/drchain`.
    Completions(CompletionsArgs),
}

/// How the operator commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Where an operator command reads, and how it prints.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The node's JSON-RPC endpoint (ws:// or http://).
    #[arg(long, default_value = "ws://127.0.0.1:9944")]
    pub rpc: String,
    /// `table` or `json`.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Who signs an admin command, and whether to ask first.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// An admin's key (PKCS#8 PEM).
    #[arg(long, conflicts_with = "dev")]
    pub key: Option<PathBuf>,
    /// Sign with the well-known dev key of NAME (alice, ...). Test chains only.
    #[arg(long, value_name = "NAME")]
    pub dev: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
    /// Seconds to wait for the call to be finalized (and, for a switchover, the new active).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// `drchain list`
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    /// Only this service.
    pub service: Option<String>,
}

/// `drchain switchover`
#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The service.
    pub service: String,
    /// The candidate to move it to (its name, e.g. `bob`, or its 0x account); default: the
    /// best eligible one.
    #[arg(long)]
    pub to: Option<String>,
}

/// `drchain history`
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    /// The service.
    pub service: String,
    /// The last this many transitions.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// `drchain pause` / `drchain resume`
#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The service.
    pub service: String,
}

/// `drchain completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// `drchain restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The service whose data to restore.
    #[arg(long)]
    pub service: String,
    /// Which checkpoint: a sequence number on chain, or `latest`.
    #[arg(long, default_value = "latest")]
    pub checkpoint: String,
    /// A new (or empty) directory to write the files into.
    #[arg(long)]
    pub out: PathBuf,
    /// The JSON-RPC endpoint of a node (it gathers the chunks from the members; its unsafe
    /// methods must be allowed, the default on loopback).
    #[arg(long, default_value = "http://127.0.0.1:9944")]
    pub rpc: String,
    /// A chunk store to reuse and fill: chunks it holds are not fetched, received ones are
    /// added (so an interrupted restore resumes). A node's own store
    /// (`BASE/chains/ID/db.chunks`) avoids fetching what it holds. Default: none, the chunks
    /// go straight into the files.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Longest the node may take to gather the checkpoint from the members, ms.
    #[arg(long, default_value_t = 600_000)]
    pub timeout_ms: u64,
}

/// `drchain proxy`
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The service to route to.
    #[arg(long)]
    pub service: String,
    /// Where clients connect (for example 127.0.0.1:5432).
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// WebSocket RPC of a node to follow; repeat (or comma-separate) to fall back to others
    /// when one fails.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_value = "ws://127.0.0.1:9944")]
    pub rpc: Vec<String>,
    /// How long to wait for the active node's endpoint to accept a connection.
    #[arg(long, default_value_t = 1000)]
    pub connect_timeout_ms: u64,
    /// How long without a newer finalized head before the proxy stops routing and follows
    /// the freshest of its RPC nodes [default: the service's heartbeat_timeout_ms].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_head_age_ms: Option<u64>,
    /// Serve Prometheus metrics on 127.0.0.1:PORT at /metrics (0: any free port; absent: no
    /// metrics).
    #[arg(long)]
    pub prometheus_port: Option<u16>,
    /// Trust the chain spec, not the RPC node: check each head's commit certificate against
    /// the validator set followed from genesis, and read the service through storage proofs
    /// against that head's state root.
    #[arg(long)]
    pub verify: bool,
    /// With `--verify`: `dev`, `local`, or the path of the chain spec to trust.
    #[arg(long, default_value = "local")]
    pub chain: String,
}

/// `drchain tx`
#[derive(Debug, Args)]
pub struct TxArgs {
    /// The signer's key (PKCS#8 PEM). With `--chain dev|local` style testnets, `--dev NAME`
    /// selects a well-known dev key instead.
    #[arg(long, required_unless_present = "dev", conflicts_with = "dev")]
    pub key: Option<PathBuf>,
    /// Sign with the well-known dev key of NAME (alice, bob, ...). Test chains only.
    #[arg(long, value_name = "NAME")]
    pub dev: Option<String>,
    /// The node's JSON-RPC endpoint (ws:// or http://).
    #[arg(long, default_value = "ws://127.0.0.1:9944")]
    pub rpc: String,
    /// Wrap the call in an admin proposal (`admin.propose`), for calls that need admins.
    #[arg(long)]
    pub admin: bool,
    /// Nonce to use (default: the account's next, counting pending transactions).
    #[arg(long)]
    pub nonce: Option<u64>,
    /// Return once the node accepted it, without waiting for finalization.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for finalization.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// The pallet: membership, service_status, network_config, checkpoints, failover, admin.
    pub pallet: String,
    /// The call in snake case, e.g. `heartbeat`, `switchover`, `register_service`.
    pub call: String,
    /// The call's fields as a JSON object, e.g. '{"service":"db","target":null}'. Accounts
    /// and hashes are 0x hex; certificates are 0x hex of their DER.
    #[arg(default_value = "{}")]
    pub fields: String,
}

/// `drchain status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's JSON-RPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:9944")]
    pub rpc: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// A stopped node's database and a file.
#[derive(Debug, Args)]
pub struct ChainIoArgs {
    /// `dev`, `local`, or the path of a chain spec JSON file.
    #[arg(long, default_value = "local")]
    pub chain: String,
    /// The base path the node runs with.
    #[arg(long)]
    pub base_path: Option<PathBuf>,
    /// The export file.
    pub file: PathBuf,
}

/// `drchain export-blocks`
#[derive(Debug, Args)]
pub struct ExportBlocksArgs {
    #[command(flatten)]
    pub io: ChainIoArgs,
    /// The first block.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// The last block (default: the head).
    #[arg(long)]
    pub to: Option<u64>,
}

/// `drchain bench-disk`
#[derive(Debug, Args)]
pub struct BenchDiskArgs {
    /// Blocks to write per workload and pruning.
    #[arg(long, default_value_t = 50_000)]
    pub blocks: u64,
    /// Sizes printed along the way.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoints: u64,
}

/// `drchain bench-join`
#[derive(Debug, Args)]
pub struct BenchJoinArgs {
    /// Chain lengths to measure at (each rounded up to just before a sync point).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub blocks: Vec<u64>,
}

/// `drchain bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// JSON-RPC endpoints of the testnet's nodes (ws://); the first one receives transactions.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:9944,ws://127.0.0.1:9945,ws://127.0.0.1:9946,ws://127.0.0.1:9947"
    )]
    pub rpc: Vec<String>,
    /// Prometheus endpoints of the nodes, for their memory (`http://host:port`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9615,http://127.0.0.1:9616,http://127.0.0.1:9617,http://127.0.0.1:9618"
    )]
    pub prometheus: Vec<String>,
    /// Transactions for the latency measurement (one at a time).
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Seconds of sustained load for the throughput measurement.
    #[arg(long, default_value_t = 20)]
    pub load_seconds: u64,
    /// Sending accounts for the load (dev-derived keys; each must be a member).
    #[arg(long, default_value = "alice,bob,charlie,dave")]
    pub senders: String,
    /// Seconds of RPC calls for the request-rate measurement.
    #[arg(long, default_value_t = 10)]
    pub rpc_seconds: u64,
    /// Concurrent RPC clients.
    #[arg(long, default_value_t = 16)]
    pub rpc_clients: usize,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// `drchain run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Development mode: the one-validator `dev` chain, alice's dev key, a temporary base
    /// path, validating. Blocks are produced and finalized at once.
    #[arg(long)]
    pub dev: bool,
    /// `dev`, `local`, or the path of a chain spec JSON file.
    #[arg(long)]
    pub chain: Option<String>,
    /// Take part in consensus (when the key is in the validator set).
    #[arg(long)]
    pub validator: bool,
    /// The node's name in logs. With `--chain dev|local` and no `--node-key-file`, a dev name
    /// (alice, bob, charlie, dave, eve) also selects that well-known dev key.
    #[arg(long)]
    pub name: Option<String>,
    /// Where the node keeps its data (default `$HOME/.local/share/drchain`).
    #[arg(long, conflicts_with = "tmp")]
    pub base_path: Option<PathBuf>,
    /// Use a temporary base path, deleted on exit.
    #[arg(long)]
    pub tmp: bool,
    /// P2P TCP port (0: any free port).
    #[arg(long, default_value_t = 30333)]
    pub port: u16,
    /// Port for the direct connections checkpoint pushes take to this node, a candidate of a
    /// service (0: any free port; on the interfaces `--port` listens on). Where members cannot
    /// reach it, pushes go through the P2P connection, a little slower.
    #[arg(long, default_value_t = 0)]
    pub push_port: u16,
    /// Listen on every interface instead of loopback only.
    #[arg(long)]
    pub listen_external: bool,
    /// Peers to dial, as multiaddrs (`/ip4/127.0.0.1/tcp/30333/p2p/12D3...`); added to the
    /// chain spec's bootnodes.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub bootnodes: Vec<String>,
    /// Addresses other members can reach this node at, told to them besides the ones it
    /// listens on (a node behind NAT or a port forward: `/ip4/203.0.113.7/tcp/30333`).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub public_addr: Vec<String>,
    /// How a node with an empty database gets the chain: `full` replays every block from
    /// genesis; `fast` downloads the state of a recent sync point from its peers (checked
    /// against the validator set followed from genesis), then follows blocks from there.
    #[arg(long, value_enum, default_value = "full")]
    pub sync: crate::node_loop::SyncMode,
    /// Which finalized blocks to keep: `archive` (or `archive-canonical`, the same here: every
    /// stored block is final) keeps all; a number N (at least 256) keeps the last N with their
    /// certificates and events. Genesis, the failover log and validator-set change proofs are
    /// always kept.
    #[arg(long, default_value = "16384")]
    pub blocks_pruning: drchain_consensus::store::BlocksPruning,
    /// Which past states to keep for queries (`state_getStorage`, `state_getReadProof` at a
    /// block): `archive` keeps every block's; a number N keeps the last N blocks'.
    #[arg(long, default_value = "256")]
    pub state_pruning: drchain_consensus::store::StatePruning,
    /// The member key (PKCS#8 PEM); also the node's network identity. Without it (and without
    /// a dev name), the key at `<base-path>/node-key.pem` is used, created on first run.
    #[arg(long)]
    pub node_key_file: Option<PathBuf>,
    /// JSON-RPC port, HTTP and WebSocket (0: any free port).
    #[arg(long, default_value_t = 9944)]
    pub rpc_port: u16,
    /// Serve JSON-RPC on every interface instead of loopback only.
    #[arg(long)]
    pub rpc_external: bool,
    /// Browser origins allowed to call the RPC: `all`, or a comma-separated list of origins
    /// (default: pages from localhost and 127.0.0.1).
    #[arg(long)]
    pub rpc_cors: Option<drchain_rpc::Cors>,
    /// Which RPC methods to serve: `unsafe` ones reveal or change the node's private state
    /// (peers, the pool). `auto`: unsafe only when listening on loopback.
    #[arg(long, value_enum, default_value = "auto")]
    pub rpc_methods: drchain_rpc::RpcMethods,
    /// Open RPC connections at most; more are refused.
    #[arg(long, default_value_t = drchain_rpc::DEFAULT_MAX_CONNECTIONS)]
    pub rpc_max_connections: u32,
    /// Do not serve JSON-RPC.
    #[arg(long)]
    pub no_rpc: bool,
    /// Prometheus metrics port (`/metrics`; 0: any free port).
    #[arg(long, default_value_t = 9615)]
    pub prometheus_port: u16,
    /// Serve metrics on every interface instead of loopback only.
    #[arg(long)]
    pub prometheus_external: bool,
    /// Do not serve metrics.
    #[arg(long)]
    pub no_prometheus: bool,
    /// Threads of the node's async runtime (default: one per CPU core). Nodes sharing a
    /// machine, like a local testnet, do better with fewer each.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// Run the failover agent for the services this TOML file names (health checks,
    /// heartbeats, hooks, leases; see docs/operations.md). Also serves the health endpoints.
    #[arg(long)]
    pub agent_config: Option<PathBuf>,
    /// Port of the health endpoints (`/primary`, `/replica`, `/health`, `/liveness`,
    /// `/readiness`; 0: any free port). Served only with `--agent-config`.
    #[arg(long, default_value_t = 8008)]
    pub health_port: u16,
    /// Serve the health endpoints on every interface instead of loopback only (for a load
    /// balancer on another machine).
    #[arg(long)]
    pub health_external: bool,
}

/// `drchain purge-chain`
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// `dev`, `local`, or the path of a chain spec JSON file.
    #[arg(long, default_value = "local")]
    pub chain: String,
    /// The base path the node ran with.
    #[arg(long)]
    pub base_path: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// `drchain key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a new Ed25519 key (or derive a well-known dev key) and print its account.
    Generate {
        /// Write the PKCS#8 PEM key here (mode 0600); without it the PEM goes to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Derive the well-known dev key of this name (alice, bob, ...) instead. Test only.
        #[arg(long, value_name = "NAME")]
        dev: Option<String>,
    },
    /// Print the account (public key) of a key file.
    Inspect {
        /// PKCS#8 PEM Ed25519 key.
        file: PathBuf,
        /// Print the libp2p peer id (the same key) instead.
        #[arg(long)]
        peer_id: bool,
    },
}

/// CA key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaAlgorithm {
    /// Ed25519.
    Ed25519,
    /// ECDSA over P-256 with SHA-256.
    P256,
}

/// Member roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Signs consensus votes.
    Validator,
    /// Runs services, does not vote.
    Member,
}

/// `drchain cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a CA: a key (unless --key is given) and a self-signed CA certificate.
    CaNew {
        /// Use this existing CA key (PKCS#8 or SEC1 PEM) instead of generating one.
        #[arg(long, conflicts_with_all = ["key_out", "algorithm"])]
        key: Option<PathBuf>,
        /// Where to write the new CA key (PKCS#8 PEM, mode 0600).
        #[arg(long, required_unless_present = "key")]
        key_out: Option<PathBuf>,
        /// Key algorithm of a new CA key.
        #[arg(long, value_enum)]
        algorithm: Option<CaAlgorithm>,
        /// Where to write the CA certificate (PEM).
        #[arg(long)]
        cert_out: PathBuf,
        /// Subject, RFC 4514.
        #[arg(long, default_value = "CN=drchain CA,O=drchain")]
        subject: String,
        /// Validity in days from now.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a member certificate for an Ed25519 key.
    Issue {
        /// The CA certificate (PEM).
        #[arg(long)]
        ca_cert: PathBuf,
        /// The CA key (PKCS#8 or SEC1 PEM, Ed25519 or P-256).
        #[arg(long)]
        ca_key: PathBuf,
        /// The member's key file; its public key goes into the certificate.
        #[arg(long, conflicts_with = "account", required_unless_present = "account")]
        subject_key: Option<PathBuf>,
        /// The member's account (0x hex public key), instead of --subject-key.
        #[arg(long)]
        account: Option<String>,
        /// The member's name (certificate CN).
        #[arg(long)]
        name: String,
        /// The role the certificate grants (its OU).
        #[arg(long, value_enum, default_value = "member")]
        role: RoleArg,
        /// Validity in days from now.
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// Serial number (default: derived from the key and the time).
        #[arg(long)]
        serial: Option<u64>,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a member certificate against CA certificates, as admission would.
    Verify {
        /// CA certificate (PEM or DER); repeat for several.
        #[arg(long = "ca", required = true)]
        cas: Vec<PathBuf>,
        /// The certificate to check (PEM or DER).
        cert: PathBuf,
        /// Check validity at this time (ms since the Unix epoch) instead of now.
        #[arg(long)]
        at_ms: Option<u64>,
    },
}

/// `drchain build-spec`
#[derive(Debug, Args)]
pub struct BuildSpecArgs {
    /// `dev`, `local`, or the path of a chain spec JSON file.
    #[arg(long, default_value = "local")]
    pub chain: String,
    /// Write the spec here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}
