//! The agent's configuration file (`drchain run --agent-config FILE`, TOML).
//!
//! ```toml
//! # Assumed bound on any validator's clock offset from true time (see the lease argument in
//! # docs/architecture.md). Default 25.
//! clock_error_ms = 25
//!
//! [[service]]
//! name = "demo-db"
//! heartbeat_interval_ms = 250        # default: the service's heartbeat_timeout_ms / 4
//! hook_timeout_ms = 3000             # default 3000
//! on_promote = "systemctl start demo-db"
//! on_demote = "systemctl stop demo-db"
//! on_role_change = "logger drchain role=$DRCHAIN_ROLE epoch=$DRCHAIN_EPOCH"
//! applied_checkpoint_file = "/var/lib/demo-db/applied-checkpoint"
//! failed_promotion_holdoff_ms = 10000  # after on_promote fails, report failed this long
//! lease_file = "/run/drchain/demo-db.lease"  # the lease, for a service that checks it
//!
//! [service.health_check]
//! kind = "tcp"                       # tcp | http | command | none
//! address = "127.0.0.1:5432"         # tcp; default: this node's endpoint on chain
//! interval_ms = 500
//! timeout_ms = 300
//! failures = 2                       # consecutive failures before reporting Failed
//!
//! [service.replication]              # optional: replicate the service's data
//! source = "/var/lib/demo-db/data"   # the directory the service writes
//! snapshot_command = "sqlite3 $DRCHAIN_SOURCE/db.sqlite \".backup $1/db.sqlite\""
//! # watch = true                     # instead: read source as is (files replaced atomically)
//! snapshot_timeout_ms = 10000        # default 10000; the command is killed after it
//! target = "/var/lib/demo-db/replica"  # where a standby keeps the applied checkpoint
//! interval_ms = 1000                 # default 1000: longest time between checkpoints
//! min_interval_ms = 100              # default 100: shortest (watch mode: changes coalesce)
//! keep_checkpoints = 8               # default 8: checkpoints kept in the chunk store
//! fetch_timeout_ms = 30000           # default 30000: longest a standby waits for one
//! ```

use std::path::{Path, PathBuf};

use drchain_support::ServiceName;
use serde::Deserialize;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read agent config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not valid TOML of the expected shape.
    #[error("agent config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the position.
        message: String,
    },
    /// Parsed, but a value is out of range or inconsistent.
    #[error("agent config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Assumed bound on any validator's clock offset from true time, ms (`ε` in the lease
    /// argument). The lease is `heartbeat_timeout_ms - 2 * (max_drift_ms + clock_error_ms)`.
    #[serde(default = "default_clock_error")]
    pub clock_error_ms: u64,
    /// The services this node protects.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceAgentConfig>,
}

/// One protected service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAgentConfig {
    /// The service's name on chain.
    pub name: ServiceName,
    /// How often to send heartbeats; default a quarter of the service's `heartbeat_timeout_ms`.
    pub heartbeat_interval_ms: Option<u64>,
    /// Longest a hook may run before it is killed and counted as failed.
    #[serde(default = "default_hook_timeout")]
    pub hook_timeout_ms: u64,
    /// Runs when this node is elected, before it tells the chain it completed its promotion
    /// (and again when it regains a lapsed lease). Must exit 0 for the promotion to complete.
    pub on_promote: Option<String>,
    /// Runs when this node stops serving (lost the role, lease ran out, health failed).
    pub on_demote: Option<String>,
    /// Runs after every role change, with the new role.
    pub on_role_change: Option<String>,
    /// A file holding the sequence number of the last checkpoint this node applied (written by
    /// the replication tooling); reported in heartbeats. Absent or empty: none applied.
    pub applied_checkpoint_file: Option<PathBuf>,
    /// After `on_promote` fails, how long this node reports itself failed, so the chain
    /// elects others instead of retrying it at once.
    #[serde(default = "default_holdoff")]
    pub failed_promotion_holdoff_ms: u64,
    /// Where to keep the lease for a service that checks it before acknowledging a write
    /// (`EPOCH DEADLINE_NS BOOT_ID`, see [`crate::lease_file`]); it expires by itself, so it
    /// fences a service even when the agent is frozen with it.
    pub lease_file: Option<PathBuf>,
    /// How to tell whether the service on this node is healthy.
    #[serde(default)]
    pub health_check: HealthCheckConfig,
    /// How the service's data is replicated; none: it is not.
    pub replication: Option<ReplicationConfig>,
}

/// Replication of one service's data (see `docs/operations.md`, "Replicating a service").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// The directory the service writes.
    pub source: PathBuf,
    /// Writes a consistent copy of the data into the empty directory `$1`
    /// (`$DRCHAIN_SNAPSHOT_DIR`) before each checkpoint.
    pub snapshot_command: Option<String>,
    /// Instead of a command: `source` is read as it is, its files replaced atomically by the
    /// service; changes are seen through inotify, with a rescan every `interval_ms`.
    #[serde(default)]
    pub watch: bool,
    /// Longest the snapshot command may run.
    #[serde(default = "default_snapshot_timeout")]
    pub snapshot_timeout_ms: u64,
    /// Where a standby materializes the latest checkpoint it applied (a symbolic link the
    /// agent switches atomically).
    pub target: PathBuf,
    /// Longest time between checkpoints while the data changes.
    #[serde(default = "default_replication_interval")]
    pub interval_ms: u64,
    /// Shortest time between checkpoints: in `watch` mode, changes closer together make one
    /// checkpoint, so a busy service does not record one per write on chain.
    #[serde(default = "default_min_interval")]
    pub min_interval_ms: u64,
    /// Checkpoints of this service whose data stays in the chunk store (besides the ones
    /// standbys last acknowledged).
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: u32,
    /// Longest a standby tries to fetch one checkpoint before trying again.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_ms: u64,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// What to check.
    #[serde(default)]
    pub kind: CheckKind,
    /// `tcp`: the address to connect to; default this node's endpoint for the service on chain.
    pub address: Option<String>,
    /// `http`: the URL to GET; any 2xx is healthy.
    pub url: Option<String>,
    /// `command`: a shell command; exit 0 healthy, 2 degraded, anything else failed.
    pub command: Option<String>,
    /// Time between checks.
    #[serde(default = "default_check_interval")]
    pub interval_ms: u64,
    /// A check taking longer has failed.
    #[serde(default = "default_check_timeout")]
    pub timeout_ms: u64,
    /// Consecutive failed checks before the node reports itself failed.
    #[serde(default = "default_failures")]
    pub failures: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: CheckKind::default(),
            address: None,
            url: None,
            command: None,
            interval_ms: default_check_interval(),
            timeout_ms: default_check_timeout(),
            failures: default_failures(),
        }
    }
}

/// Kinds of health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// Connect over TCP.
    #[default]
    Tcp,
    /// GET a URL.
    Http,
    /// Run a command.
    Command,
    /// Always healthy (the service is started by `on_promote` and not running on standbys).
    None,
}

fn default_snapshot_timeout() -> u64 {
    10_000
}
fn default_replication_interval() -> u64 {
    1000
}
fn default_min_interval() -> u64 {
    100
}
fn default_keep_checkpoints() -> u32 {
    8
}
fn default_fetch_timeout() -> u64 {
    30_000
}
fn default_clock_error() -> u64 {
    25
}
fn default_hook_timeout() -> u64 {
    3000
}
fn default_holdoff() -> u64 {
    10_000
}
fn default_check_interval() -> u64 {
    500
}
fn default_check_timeout() -> u64 {
    300
}
fn default_failures() -> u32 {
    2
}

impl AgentConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ParseError::Syntax(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ParseError::Invalid(message) => ConfigError::Invalid {
                path: path.to_owned(),
                message,
            },
        })
    }

    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let config: Self =
            toml::from_str(text).map_err(|e| ParseError::Syntax(e.to_string().trim().into()))?;
        config.validate().map_err(ParseError::Invalid)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.clock_error_ms > 10_000 {
            return Err("clock_error_ms must be at most 10000".into());
        }
        let mut names: Vec<&ServiceName> = self.services.iter().map(|s| &s.name).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("service {} is configured twice", w[0]));
        }
        for s in &self.services {
            s.validate()
                .map_err(|m| format!("service {}: {m}", s.name))?;
        }
        Ok(())
    }
}

/// [`AgentConfig::parse`]'s error, before a path is attached.
#[derive(Debug)]
pub enum ParseError {
    /// Bad TOML or an unexpected field.
    Syntax(String),
    /// A value out of range.
    Invalid(String),
}

impl ServiceAgentConfig {
    fn validate(&self) -> Result<(), String> {
        if let Some(i) = self.heartbeat_interval_ms {
            if !(10..=600_000).contains(&i) {
                return Err("heartbeat_interval_ms must be between 10 and 600000".into());
            }
        }
        if self.failed_promotion_holdoff_ms > 86_400_000 {
            return Err("failed_promotion_holdoff_ms must be at most 86400000".into());
        }
        if !(10..=3_600_000).contains(&self.hook_timeout_ms) {
            return Err("hook_timeout_ms must be between 10 and 3600000".into());
        }
        for (name, hook) in [
            ("on_promote", &self.on_promote),
            ("on_demote", &self.on_demote),
            ("on_role_change", &self.on_role_change),
        ] {
            if hook.as_deref().is_some_and(|h| h.trim().is_empty()) {
                return Err(format!("{name} is empty"));
            }
        }
        let check = &self.health_check;
        if !(10..=3_600_000).contains(&check.interval_ms) {
            return Err("health_check.interval_ms must be between 10 and 3600000".into());
        }
        if check.timeout_ms == 0 || check.timeout_ms > check.interval_ms.max(1000) {
            return Err(
                "health_check.timeout_ms must be positive and at most interval_ms (or 1000)".into(),
            );
        }
        if check.failures == 0 {
            return Err("health_check.failures must be at least 1".into());
        }
        let given = |field: &str, v: &Option<String>| match v {
            Some(s) if s.trim().is_empty() => Err(format!("health_check.{field} is empty")),
            _ => Ok(v.is_some()),
        };
        let (address, url, command) = (
            given("address", &check.address)?,
            given("url", &check.url)?,
            given("command", &check.command)?,
        );
        let shape: Result<(), String> = match check.kind {
            CheckKind::Tcp if url || command => {
                Err("a tcp check takes only address (default: the node's endpoint)".into())
            }
            CheckKind::Http if !url || address || command => {
                Err("an http check needs url (and nothing else)".into())
            }
            CheckKind::Command if !command || address || url => {
                Err("a command check needs command (and nothing else)".into())
            }
            CheckKind::None if address || url || command => {
                Err("a none check takes no address, url or command".into())
            }
            _ => Ok(()),
        };
        shape?;
        if let Some(replication) = &self.replication {
            if self.applied_checkpoint_file.is_some() {
                return Err(
                    "applied_checkpoint_file and [service.replication] exclude each other: with replication the agent knows what it applied".into(),
                );
            }
            replication
                .validate()
                .map_err(|m| format!("replication.{m}"))?;
        }
        if let Some(url) = &check.url {
            let ok = url
                .parse::<hyper::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
            if !ok {
                return Err(format!(
                    "health_check.url {url:?} is not an http:// URL with a host"
                ));
            }
        }
        Ok(())
    }
}

impl ReplicationConfig {
    fn validate(&self) -> Result<(), String> {
        let absolute = |field: &str, path: &Path| {
            if path.is_absolute() && path.file_name().is_some() {
                Ok(())
            } else {
                Err(format!(
                    "{field} {} must be an absolute path naming a directory",
                    path.display()
                ))
            }
        };
        absolute("source", &self.source)?;
        absolute("target", &self.target)?;
        if self.target.starts_with(&self.source) || self.source.starts_with(&self.target) {
            return Err("target and source must not contain one another".into());
        }
        match (&self.snapshot_command, self.watch) {
            (Some(_), true) => {
                return Err("snapshot_command or watch = true, not both".into());
            }
            (None, false) => {
                return Err("needs snapshot_command, or watch = true".into());
            }
            (Some(c), false) if c.trim().is_empty() => {
                return Err("snapshot_command is empty".into());
            }
            _ => {}
        }
        if !(10..=3_600_000).contains(&self.snapshot_timeout_ms) {
            return Err("snapshot_timeout_ms must be between 10 and 3600000".into());
        }
        if !(10..=86_400_000).contains(&self.interval_ms) {
            return Err("interval_ms must be between 10 and 86400000".into());
        }
        if self.min_interval_ms > self.interval_ms {
            return Err("min_interval_ms must be at most interval_ms".into());
        }
        if !(1..=1024).contains(&self.keep_checkpoints) {
            return Err("keep_checkpoints must be between 1 and 1024".into());
        }
        if !(100..=86_400_000).contains(&self.fetch_timeout_ms) {
            return Err("fetch_timeout_ms must be between 100 and 86400000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let c = AgentConfig::parse("[[service]]\nname = \"db\"\n").unwrap();
        assert_eq!(c.clock_error_ms, 25);
        let s = &c.services[0];
        assert_eq!(s.name.to_string(), "db");
        assert_eq!(s.heartbeat_interval_ms, None);
        assert_eq!(s.hook_timeout_ms, 3000);
        assert_eq!(s.health_check, HealthCheckConfig::default());
        assert_eq!(s.health_check.kind, CheckKind::Tcp);
    }

    #[test]
    fn a_full_file_parses() {
        let c = AgentConfig::parse(
            r#"
clock_error_ms = 10
[[service]]
name = "db"
heartbeat_interval_ms = 200
hook_timeout_ms = 1000
on_promote = "touch /tmp/p"
on_demote = "rm -f /tmp/p"
on_role_change = "true"
applied_checkpoint_file = "/tmp/cp"
[service.health_check]
kind = "http"
url = "http://127.0.0.1:8080/health"
interval_ms = 100
timeout_ms = 50
failures = 3
[[service]]
name = "cache"
[service.replication]
source = "/srv/db/data"
snapshot_command = "cp -a $DRCHAIN_SOURCE/. $1"
target = "/srv/db/replica"
[[service]]
name = "api"
[service.health_check]
kind = "command"
command = "exit 0"
[service.replication]
source = "/srv/api/data"
watch = true
target = "/srv/api/replica"
interval_ms = 200
keep_checkpoints = 3
"#,
        )
        .unwrap();
        assert_eq!(c.services.len(), 3);
        assert_eq!(c.services[0].health_check.kind, CheckKind::Http);
        assert_eq!(c.services[2].health_check.kind, CheckKind::Command);
        assert_eq!(c.services[0].on_promote.as_deref(), Some("touch /tmp/p"));
        assert!(c.services[0].replication.is_none());
        let r = c.services[1].replication.as_ref().unwrap();
        assert_eq!(
            (r.interval_ms, r.keep_checkpoints, r.watch),
            (1000, 8, false)
        );
        assert_eq!(r.snapshot_timeout_ms, 10_000);
        let r = c.services[2].replication.as_ref().unwrap();
        assert_eq!((r.interval_ms, r.keep_checkpoints, r.watch), (200, 3, true));
    }

    /// A file whose only service replicates `/d` to `/r`, with `extra` in its table.
    fn replication(extra: &str) -> &'static str {
        let text = format!(
            "[[service]]\nname = \"db\"\n[service.replication]\nsource = \"/d\"\ntarget = \"/r\"\n{extra}\n"
        );
        // Leaked so the cases stay one table of string slices (a test, run once).
        Box::leak(text.into_boxed_str())
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            ("[[service]]\nname = \"db\"\nbogus = 1\n", "unknown field"),
            ("[[service]]\nname = 5\n", "invalid type"),
            ("[[service]]\n", "missing field `name`"),
            ("[[service]]\nname = \"db\"\n[[service]]\nname = \"db\"\n", "twice"),
            ("[[service]]\nname = \"db\"\nheartbeat_interval_ms = 0\n", "heartbeat_interval_ms"),
            ("[[service]]\nname = \"db\"\non_promote = \" \"\n", "on_promote is empty"),
            ("[[service]]\nname = \"db\"\n[service.health_check]\nkind = \"http\"\n", "needs url"),
            ("[[service]]\nname = \"db\"\n[service.health_check]\nkind = \"http\"\nurl = \"ftp://x\"\n", "not an http"),
            ("[[service]]\nname = \"db\"\n[service.health_check]\nkind = \"ping\"\n", "unknown variant"),
            ("[[service]]\nname = \"db\"\n[service.health_check]\nfailures = 0\n", "failures"),
            ("[[service]]\nname = \"db\"\n[service.health_check]\ntimeout_ms = 0\n", "timeout_ms"),
            ("clock_error_ms = 99999\n", "clock_error_ms"),
            ("[[service]\n", "TOML parse error"),
            (replication("watch = true\nsnapshot_command = \"x\""), "not both"),
            (replication(""), "needs snapshot_command"),
            (replication("snapshot_command = \" \""), "snapshot_command is empty"),
            (replication("watch = true\ninterval_ms = 0"), "interval_ms"),
            (replication("watch = true\nkeep_checkpoints = 0"), "keep_checkpoints"),
            (replication("watch = true\nmin_interval_ms = 2000"), "min_interval_ms"),
            (replication("watch = true\nsnapshot_timeout_ms = 1"), "snapshot_timeout_ms"),
            (replication("watch = true\nfetch_timeout_ms = 1"), "fetch_timeout_ms"),
            (replication("watch = true\nbogus = 1"), "unknown field"),
            (
                "[[service]]\nname = \"db\"\napplied_checkpoint_file = \"/f\"\n[service.replication]\nsource = \"/d\"\ntarget = \"/r\"\nwatch = true\n",
                "exclude each other",
            ),
            (
                "[[service]]\nname = \"db\"\n[service.replication]\nsource = \"data\"\ntarget = \"/r\"\nwatch = true\n",
                "replication.source data must be an absolute path",
            ),
            (
                "[[service]]\nname = \"db\"\n[service.replication]\nsource = \"/d\"\ntarget = \"/d/r\"\nwatch = true\n",
                "must not contain one another",
            ),
        ];
        for (text, needle) in cases {
            let err = match AgentConfig::parse(text) {
                Err(ParseError::Syntax(m) | ParseError::Invalid(m)) => m,
                Ok(c) => panic!("{text:?} was accepted: {c:?}"),
            };
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
        }
    }
}
