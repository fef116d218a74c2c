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
    /// Listen on every interface instead of loopback only.
    #[arg(long)]
    pub listen_external: bool,
    /// Peers to dial, as multiaddrs (`/ip4/127.0.0.1/tcp/30333/p2p/12D3...`); added to the
    /// chain spec's bootnodes.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub bootnodes: Vec<String>,
    /// The member key (PKCS#8 PEM); also the node's network identity. Without it (and without
    /// a dev name), the key at `<base-path>/node-key.pem` is used, created on first run.
    #[arg(long)]
    pub node_key_file: Option<PathBuf>,
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
