//! The network: one Linux network namespace per node, joined by a bridge in the host's
//! namespace (where clients, HAProxy and `drchain proxy` run). Network faults are nftables
//! rules inside a node's namespace that drop traffic to and from other nodes only, so clients
//! still reach a partitioned node: it must fence itself, not merely become unreachable.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The namespaces and bridge of one run; removed on drop.
#[derive(Debug)]
pub struct Network {
    tag: String,
    subnet: u8,
    nodes: usize,
}

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `nft -f -` inside namespace `ns` with `rules` on stdin.
fn nft(ns: &str, rules: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (apt-get install nftables)")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} refused {rules:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Network {
    /// Creates `nodes` namespaces on subnet `10.77.<subnet>.0/24` (node `i` at `.i+1`, the host
    /// at `.254`). Leftovers of an earlier run with the same tag are removed first.
    pub fn create(tag: &str, subnet: u8, nodes: usize) -> Result<Self> {
        let net = Self {
            tag: tag.to_owned(),
            subnet,
            nodes,
        };
        net.remove();
        let bridge = net.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])
            .context("creating a bridge (needs root)")?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.host_ip()),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..nodes {
            let ns = net.namespace(i);
            let veth = net.veth(i);
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            let addr = format!("{}/24", net.ip(i));
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    /// Node `i`'s namespace.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, i as u8 + 1)
    }

    /// The host's address on the bridge.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 254)
    }

    /// Node `i` drops `percent`% of its packets to and from `peers` (100: all of them).
    pub fn drop_from(&self, i: usize, peers: &[usize], percent: u8) -> Result<()> {
        self.heal(i)?;
        if peers.is_empty() {
            return Ok(());
        }
        let set = peers
            .iter()
            .map(|p| self.ip(*p).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let chance = if percent >= 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        let rules = format!(
            "table inet chaos {{\n\
             chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} {chance}drop; }}\n\
             chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} {chance}drop; }}\n\
             }}\n"
        );
        nft(&self.namespace(i), &rules)
    }

    /// Removes node `i`'s fault rules.
    pub fn heal(&self, i: usize) -> Result<()> {
        nft(&self.namespace(i), "flush ruleset\n")
    }

    /// Removes what a run with this tag made. The host's end of each veth pair is deleted
    /// first, which removes the pair at once: deleting a namespace frees its devices later,
    /// in the kernel's own time, and the next run would find the old pair still there.
    fn remove(&self) {
        for i in 0..self.nodes {
            let _ = run("ip", &["link", "del", &self.veth(i)]);
            let _ = run("ip", &["netns", "del", &self.namespace(i)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }

    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.tag)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}
