//! Validator processes of a test network: the local chain's dev validators, each with its own
//! ports, base path and captured log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use drchain_node::network::peer_id_of;
use drchain_runtime::dev::{dev_account, dev_key};

/// One validator process (dev key `name`) and everything it logged, across restarts.
pub struct NodeProcess {
    pub name: &'static str,
    pub base: PathBuf,
    pub port: u16,
    pub rpc: u16,
    pub health: u16,
    pub child: Option<Child>,
    pub lines: Arc<Mutex<Vec<String>>>,
    /// More environment for its process (a fake clock, say).
    pub env: Vec<(String, String)>,
}

impl NodeProcess {
    /// A node under `dir/name` on free ports, not started.
    pub fn new(dir: &Path, name: &'static str) -> Self {
        Self {
            name,
            base: dir.join(name),
            port: super::free_port(),
            rpc: super::free_port(),
            health: super::free_port(),
            child: None,
            lines: Arc::default(),
            env: vec![],
        }
    }

    /// Starts it on `spec`, dialing `bootnodes`, with `agent_config` (a TOML text) if given;
    /// `RUST_LOG` is `log`, or `DRCHAIN_TEST_RUST_LOG` when set (to debug a failing run).
    pub fn spawn(&mut self, spec: &Path, bootnodes: &str, agent_config: Option<String>, log: &str) {
        std::fs::create_dir_all(&self.base).unwrap();
        let key = self.base.join("node.key");
        if !key.exists() {
            drchain_node::keys::write_secret(
                &key,
                &drchain_node::keys::ed25519_pem(&dev_key(self.name)).unwrap(),
            )
            .unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drchain"));
        cmd.args(["run", "--validator", "--name", self.name])
            .arg("--chain")
            .arg(spec)
            .arg("--node-key-file")
            .arg(&key)
            .arg("--base-path")
            .arg(&self.base)
            .args(["--port", &self.port.to_string(), "--bootnodes", bootnodes])
            .args([
                "--rpc-port",
                &self.rpc.to_string(),
                "--prometheus-port",
                "0",
            ])
            .args(["--health-port", &self.health.to_string()])
            .args(["--worker-threads", "1"])
            .env(
                "RUST_LOG",
                std::env::var("DRCHAIN_TEST_RUST_LOG").unwrap_or_else(|_| log.to_owned()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(config) = agent_config {
            let path = self.base.join("agent.toml");
            std::fs::write(&path, config).unwrap();
            cmd.arg("--agent-config").arg(&path);
        }
        let mut child = cmd.spawn().expect("drchain runs");
        let stderr = child.stderr.take().unwrap();
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
    }

    /// Its log, written to `DRCHAIN_TEST_LOGS/NAME.log` when that is set, and the lines that
    /// `keep` selects, for a failure message.
    pub fn dump(&self, keep: impl Fn(&str) -> bool) -> String {
        let lines = self.lines.lock().unwrap();
        if let Some(dir) = std::env::var_os("DRCHAIN_TEST_LOGS") {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(
                Path::new(&dir).join(format!("{}.log", self.name)),
                lines.join("\n"),
            );
        }
        let mut out = format!("---- {} ({} lines)\n", self.name, lines.len());
        for l in lines.iter().filter(|l| keep(l)) {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process must be continued to die of SIGKILL promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every node's address, for `--bootnodes`.
pub fn bootnodes(nodes: &[NodeProcess]) -> String {
    nodes
        .iter()
        .map(|n| {
            let peer = peer_id_of(&dev_account(n.name)).unwrap();
            format!("/ip4/127.0.0.1/tcp/{}/p2p/{peer}", n.port)
        })
        .collect::<Vec<_>>()
        .join(",")
}
