//! The system under test: four validators (alice, bob, charlie, dave) in their own network
//! namespaces, the failover agent and the protected service on alice, bob and charlie, and in
//! the host's namespace HAProxy (httpchk on `/primary`) and `drchain proxy` in front of them.
//! Faults are applied to it here: signals, clock steps, a full disk, and the network's rules.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::netns::{run, Network};

/// Node names, in the order of their indices; the first three are the service's candidates.
pub const NAMES: [&str; 4] = ["alice", "bob", "charlie", "dave"];
/// How many of [`NAMES`] run the agent and the service.
pub const CANDIDATES: usize = 3;
const P2P_PORT: u16 = 30333;
const RPC_PORT: u16 = 9944;
const HEALTH_PORT: u16 = 8008;
const SERVICE_PORT: u16 = 7000;
/// The size of each node's base-path file system: small, so that filling it is quick.
const DISK_MB: u32 = 128;
/// The service's heartbeat timeout, in the chain spec.
pub const HEARTBEAT_TIMEOUT_MS: u64 = 1000;
/// The service's RPO, in the chain spec: how much older than the latest checkpoint a
/// standby's may be for it to be elected.
pub const MAX_LAG_MS: u64 = 1000;
/// The longest time between checkpoints while the service's data changes.
pub const CHECKPOINT_INTERVAL_MS: u64 = 1000;

/// Where the binaries are and where the run keeps its files.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `drchain` binary.
    pub drchain: PathBuf,
    /// This harness's binary (it runs the service).
    pub chaos: PathBuf,
    /// The run's directory: spec, keys, logs, mounts.
    pub dir: PathBuf,
    /// The chain spec to start from (`chain-spec/local.json`).
    pub base_spec: PathBuf,
    /// libfaketime's preload library, for clock steps (none: clock steps are skipped).
    pub faketime: Option<PathBuf>,
    /// Names the namespaces and bridge; distinct per concurrent run.
    pub tag: String,
    /// The third octet of the run's subnet.
    pub subnet: u8,
    /// Break fencing on purpose (services ignore the lease, `on_demote` does nothing): the
    /// harness's self-check.
    pub unfenced: bool,
}

#[derive(Debug)]
struct Node {
    base: PathBuf,
    child: Option<Child>,
    service: Option<Child>,
    paused: bool,
}

/// The running system; everything is stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    setup: Setup,
    /// The namespaces.
    pub net: Network,
    nodes: Vec<Node>,
    spec: PathBuf,
    bootnodes: String,
    haproxy: Option<Child>,
    proxy: Option<Child>,
    /// HAProxy's frontend on loopback.
    pub haproxy_port: u16,
    /// `drchain proxy`'s listener on loopback.
    pub proxy_port: u16,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn output(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Cluster {
    /// Creates the namespaces and starts every process.
    pub fn start(setup: Setup) -> Result<Self> {
        std::fs::create_dir_all(&setup.dir)?;
        let net = Network::create(&setup.tag, setup.subnet, NAMES.len())?;
        let mut bootnodes = vec![];
        let mut nodes = vec![];
        for (i, name) in NAMES.into_iter().enumerate() {
            let home = setup.dir.join(name);
            let base = home.join("base");
            std::fs::create_dir_all(&base)?;
            std::fs::create_dir_all(home.join("data"))?;
            run(
                "mount",
                &[
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={DISK_MB}m"),
                    "tmpfs",
                    &base.display().to_string(),
                ],
            )
            .context("mounting a tmpfs for a node's base path")?;
            let key = home.join("node.key");
            let key_arg = key.display().to_string();
            output(
                &setup.drchain,
                &["key", "generate", "--dev", name, "--out", &key_arg],
            )?;
            let peer = output(&setup.drchain, &["key", "inspect", "--peer-id", &key_arg])?;
            bootnodes.push(format!("/ip4/{}/tcp/{P2P_PORT}/p2p/{peer}", net.ip(i)));
            std::fs::write(home.join("clock"), "+0\n")?;
            nodes.push(Node {
                base,
                child: None,
                service: None,
                paused: false,
            });
        }
        let spec = write_spec(&setup, &net)?;
        let mut cluster = Self {
            setup,
            net,
            nodes,
            spec,
            bootnodes: bootnodes.join(","),
            haproxy: None,
            proxy: None,
            haproxy_port: free_port()?,
            proxy_port: free_port()?,
        };
        for i in 0..NAMES.len() {
            cluster.start_node(i)?;
        }
        cluster.start_haproxy()?;
        cluster.start_proxy()?;
        Ok(cluster)
    }

    fn home(&self, i: usize) -> PathBuf {
        self.setup.dir.join(NAMES[i])
    }

    fn log(&self, file: &str) -> Result<File> {
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.setup.dir.join(file))?)
    }

    /// Starts node `i` (and its service, if a candidate) in its namespace.
    fn start_node(&mut self, i: usize) -> Result<()> {
        let home = self.home(i);
        let ns = self.net.namespace(i);
        let ip = self.net.ip(i);
        let name = NAMES[i];
        if i < CANDIDATES && self.nodes[i].service.is_none() {
            let service = Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(&self.setup.chaos)
                .args(["service", "--name", name])
                .args(["--listen", &format!("{ip}:{SERVICE_PORT}")])
                .arg("--epoch-file")
                .arg(home.join("epoch"))
                .arg("--lease-file")
                .arg(home.join("lease"))
                .arg("--data")
                .arg(home.join("data").join("values"))
                .args(self.setup.unfenced.then_some("--ignore-lease"))
                .stdout(Stdio::null())
                .stderr(self.log(&format!("{name}.service.log"))?)
                .spawn()
                .context("starting the service")?;
            self.nodes[i].service = Some(service);
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns])
            .arg(&self.setup.drchain)
            .args(["run", "--validator", "--name", name, "--chain"])
            .arg(&self.spec)
            .arg("--node-key-file")
            .arg(home.join("node.key"))
            .arg("--base-path")
            .arg(&self.nodes[i].base)
            .args(["--port", &P2P_PORT.to_string(), "--listen-external"])
            .args(["--bootnodes", &self.bootnodes])
            .args(["--rpc-port", &RPC_PORT.to_string(), "--rpc-external"])
            .args(["--no-prometheus", "--worker-threads", "1"])
            .env(
                "RUST_LOG",
                "info,libp2p=warn,informalsystems_malachitebft_core_consensus=error",
            )
            .stdout(Stdio::null())
            .stderr(self.log(&format!("{name}.log"))?);
        if let Some(lib) = &self.setup.faketime {
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", home.join("clock"))
                .env("FAKETIME_NO_CACHE", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        if i < CANDIDATES {
            let config = home.join("agent.toml");
            std::fs::write(&config, agent_config(&home, self.setup.unfenced))?;
            cmd.arg("--agent-config").arg(config).args([
                "--health-port",
                &HEALTH_PORT.to_string(),
                "--health-external",
            ]);
        }
        self.nodes[i].child = Some(cmd.spawn().context("starting drchain")?);
        Ok(())
    }

    fn start_haproxy(&mut self) -> Result<()> {
        let servers: String = (0..CANDIDATES)
            .map(|i| {
                format!(
                    "    server {} {}:{SERVICE_PORT} check port {HEALTH_PORT}\n",
                    NAMES[i],
                    self.net.ip(i)
                )
            })
            .collect();
        let config = format!(
            "global\n    maxconn 512\ndefaults\n    mode tcp\n    timeout connect 300ms\n    \
             timeout client 2s\n    timeout server 2s\nfrontend svc\n    bind 127.0.0.1:{}\n    \
             default_backend svc\nbackend svc\n    option httpchk GET /primary?service=svc\n    \
             http-check expect status 200\n    timeout check 300ms\n    \
             default-server inter 100ms fall 1 rise 1 on-marked-down shutdown-sessions\n{servers}",
            self.haproxy_port
        );
        let path = self.setup.dir.join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(self.log("haproxy.log")?)
            .spawn()
            .context("starting haproxy (apt-get install haproxy)")?;
        self.haproxy = Some(child);
        Ok(())
    }

    fn start_proxy(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.setup.drchain);
        cmd.args(["proxy", "--service", "svc"])
            .args(["--listen", &format!("127.0.0.1:{}", self.proxy_port)]);
        for i in 0..NAMES.len() {
            cmd.args(["--rpc", &format!("ws://{}:{RPC_PORT}", self.net.ip(i))]);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log("proxy.log")?)
            .spawn()
            .context("starting drchain proxy")?;
        self.proxy = Some(child);
        Ok(())
    }

    fn signal(child: &Option<Child>, signal: &str) {
        if let Some(child) = child {
            let _ = run("kill", &[&format!("-{signal}"), &child.id().to_string()]);
        }
    }

    /// The machine dies: node and service SIGKILLed.
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        for child in [node.child.take(), node.service.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// The machine freezes: node and service SIGSTOPped.
    pub fn pause(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        Self::signal(&node.child, "STOP");
        Self::signal(&node.service, "STOP");
        node.paused = true;
    }

    /// Steps node `i`'s wall clock to `offset_s` seconds from the real one.
    pub fn set_clock(&self, i: usize, offset_s: i32) -> Result<()> {
        Ok(std::fs::write(
            self.home(i).join("clock"),
            format!("{offset_s:+}\n"),
        )?)
    }

    /// Whether clock steps take effect (libfaketime is there).
    pub fn can_step_clocks(&self) -> bool {
        self.setup.faketime.is_some()
    }

    /// Fills node `i`'s base-path file system.
    pub fn fill_disk(&self, i: usize) -> Result<()> {
        let mut file = File::create(self.nodes[i].base.join("fill"))?;
        let block = vec![0u8; 1 << 20];
        for _ in 0..DISK_MB {
            if file.write_all(&block).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Undoes every process, clock and disk fault on node `i`: continues it, frees its disk,
    /// resets its clock, and starts what is not running.
    pub fn heal_node(&mut self, i: usize) -> Result<()> {
        let _ = std::fs::remove_file(self.nodes[i].base.join("fill"));
        self.set_clock(i, 0)?;
        let node = &mut self.nodes[i];
        if node.paused {
            Self::signal(&node.child, "CONT");
            Self::signal(&node.service, "CONT");
            node.paused = false;
        }
        // A node the disk fault killed exits on its own; a crashed one is gone.
        let exited = node
            .child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            node.child = None;
            self.start_node(i)?;
        }
        Ok(())
    }

    /// The candidates' service addresses.
    pub fn service_addrs(&self) -> Vec<SocketAddr> {
        (0..CANDIDATES)
            .map(|i| SocketAddr::new(self.net.ip(i).into(), SERVICE_PORT))
            .collect()
    }

    /// Node `i`'s JSON-RPC answer to `method`, over HTTP.
    pub fn rpc(&self, i: usize, method: &str, params: Value) -> Result<Value> {
        let addr = SocketAddr::new(self.net.ip(i).into(), RPC_PORT);
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let request = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let text = http(addr, &request)?;
        let json = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .context("no HTTP body")?;
        let value: Value = serde_json::from_str(json).context("RPC answer is not JSON")?;
        if let Some(error) = value.get("error") {
            bail!("{method} failed: {error}");
        }
        Ok(value["result"].clone())
    }

    /// The HTTP status of candidate `i`'s health endpoint `path` (0 if it does not answer).
    pub fn health(&self, i: usize, path: &str) -> u16 {
        let addr = SocketAddr::new(self.net.ip(i).into(), HEALTH_PORT);
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        http(addr, &request)
            .ok()
            .and_then(|t| t.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// The candidate the chain names active, asked of the first node that answers.
    pub fn active(&self) -> Option<usize> {
        (0..NAMES.len()).find_map(|i| {
            let services = self.rpc(i, "failover_services", json!([])).ok()?;
            let svc = services.as_array()?.iter().find(|s| s["name"] == "svc")?;
            let account = svc["active"].as_str()?.to_lowercase();
            (0..CANDIDATES).find(|c| {
                drchain_runtime::dev::dev_account(NAMES[*c])
                    .to_string()
                    .to_lowercase()
                    == account
            })
        })
    }

    /// Node `i`'s finalized height.
    pub fn finalized(&self, i: usize) -> Result<u64> {
        let head = self.rpc(i, "chain_getHeader", json!([]))?;
        let number = head["number"].as_str().context("no number")?;
        Ok(u64::from_str_radix(number.trim_start_matches("0x"), 16)?)
    }

    /// Node `i`'s hash of block `n`.
    pub fn block_hash(&self, i: usize, n: u64) -> Result<String> {
        let hash = self.rpc(i, "chain_getBlockHash", json!([n]))?;
        Ok(hash.as_str().context("no block hash")?.to_owned())
    }

    /// Node `i`'s log so far.
    pub fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.setup.dir.join(format!("{}.log", NAMES[i])))
            .unwrap_or_default()
    }
}

fn http(addr: SocketAddr, request: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(request.as_bytes())?;
    let mut text = String::new();
    stream.take(16 << 20).read_to_string(&mut text)?;
    Ok(text)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in [self.haproxy.take(), self.proxy.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                Self::signal(&self.nodes[i].child, "CONT");
                Self::signal(&self.nodes[i].service, "CONT");
            }
            self.crash(i);
            let deadline = Instant::now() + Duration::from_secs(5);
            while run("umount", &[&self.nodes[i].base.display().to_string()]).is_err()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The agent's config: `on_promote` restores the service's data from the checkpoint the node
/// holds (empty on the first promotion; kept when it is newer than any checkpoint) before it
/// writes the epoch that lets the service answer; the data directory is replicated by
/// snapshots.
fn agent_config(home: &Path, unfenced: bool) -> String {
    let epoch = home.join("epoch");
    let data = home.join("data");
    let on_demote = if unfenced {
        "true".to_owned()
    } else {
        format!("rm -f {}", epoch.display())
    };
    // TOML literal strings: the commands hold double quotes.
    format!(
        r#"
[[service]]
name = "svc"
on_promote = 'mkdir -p {data} && if [ "$DRCHAIN_KEEP_DATA" = 1 ]; then touch {data}/values; elif [ -n "$DRCHAIN_CHECKPOINT_PATH" ] && [ -f "$DRCHAIN_CHECKPOINT_PATH/values" ]; then cp "$DRCHAIN_CHECKPOINT_PATH/values" {data}/values.tmp && mv {data}/values.tmp {data}/values; else : > {data}/values; fi && echo $DRCHAIN_EPOCH > {epoch}.tmp && mv {epoch}.tmp {epoch}'
on_demote = "{on_demote}"
lease_file = "{lease}"
[service.health_check]
kind = "tcp"
interval_ms = 200
[service.replication]
source = "{data}"
snapshot_command = 'if [ -f "$DRCHAIN_SOURCE/values" ]; then cp "$DRCHAIN_SOURCE/values" "$1/values"; else : > "$1/values"; fi'
target = "{replica}"
interval_ms = {CHECKPOINT_INTERVAL_MS}
"#,
        epoch = epoch.display(),
        data = data.display(),
        lease = home.join("lease").display(),
        replica = home.join("replica").display(),
    )
}

/// The local spec with service `svc` on alice, bob and charlie at their namespaces' addresses.
fn write_spec(setup: &Setup, net: &Network) -> Result<PathBuf> {
    let text = std::fs::read_to_string(&setup.base_spec)
        .with_context(|| format!("reading {}", setup.base_spec.display()))?;
    let mut spec: Value = serde_json::from_str(&text)?;
    spec["id"] = "chaos".into();
    let endpoints: serde_json::Map<String, Value> = (0..CANDIDATES)
        .map(|i| {
            (
                NAMES[i].to_owned(),
                format!("{}:{SERVICE_PORT}", net.ip(i)).into(),
            )
        })
        .collect();
    spec["services"] = json!([{
        "name": "svc",
        "candidates": &NAMES[..CANDIDATES],
        "heartbeat_timeout_ms": HEARTBEAT_TIMEOUT_MS,
        "promotion_timeout_ms": 5000,
        "max_lag_ms": MAX_LAG_MS,
        "endpoints": endpoints,
    }]);
    let path = setup.dir.join("spec.json");
    std::fs::write(&path, serde_json::to_string_pretty(&spec)?)?;
    Ok(path)
}
