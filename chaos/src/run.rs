//! One seeded schedule against a fresh cluster: start, serve, inject each fault and heal it,
//! then judge: the clients' history, agreement on every finalized block, and recovery after
//! the last heal within a bound.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::checker::{self, Ack, LossBound, Losses};
use crate::cluster::{
    Cluster, Setup, CANDIDATES, CHECKPOINT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, MAX_LAG_MS, NAMES,
};
use crate::schedule::{schedule, Fault, Target};
use crate::stop;
use crate::workload::{read_all, write_once, Holding, Workload};

/// How long the system may take to settle after the last fault heals.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// How long a fresh cluster may take to serve its first request.
const START_BOUND: Duration = Duration::from_secs(120);
/// Beyond the checkpoint interval, the RPO and the heartbeat timeout: time to record a
/// checkpoint on a faulty network (see [`LossBound`]).
const RECORDING_SLACK: Duration = Duration::from_secs(2);
/// How long the final read of the service's data may take to find the active.
const READ_BOUND: Duration = Duration::from_secs(10);
/// Clients per path.
const CLIENTS_PER_PATH: usize = 2;
/// How clients reach the service: through HAProxy, through `drchain proxy`, and straight to
/// each candidate in turn (a client with a stale address or connection pool: what makes a
/// node that fails to fence itself visible).
const PATHS: [&str; 3] = ["haproxy", "proxy", "direct"];

/// What one step did and what clients saw during it (until the next step began).
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The fault with its target resolved, e.g. `crash bob`.
    pub what: String,
    /// The fault's kind, for the failure-modes table.
    pub kind: &'static str,
    /// Whether the fault hit the node that was active when it began.
    pub hit_active: bool,
    /// The longest time without an acknowledged write on any path.
    pub longest_gap: Duration,
    /// From the fault to the first write a different node acknowledged, if one did.
    pub failover: Option<Duration>,
}

/// The result of one schedule.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub steps: Vec<StepReport>,
    /// Acknowledged writes.
    pub acks: usize,
    /// What must not have happened; empty on success.
    pub violations: Vec<String>,
    /// From the end of the last step (its heal, then 2–5 s without faults) to finality on
    /// every node and one active served on every path.
    pub recovery: Option<Duration>,
    /// Blocks whose hashes every node agreed on.
    pub blocks_checked: u64,
    /// Acknowledged writes missing from the data served after recovery.
    pub losses: Losses,
}

/// The write-loss bound of this harness's configuration.
pub fn loss_bound() -> LossBound {
    LossBound(
        Duration::from_millis(CHECKPOINT_INTERVAL_MS + MAX_LAG_MS + HEARTBEAT_TIMEOUT_MS)
            + RECORDING_SLACK,
    )
}

fn kind(fault: &Fault) -> &'static str {
    match fault {
        Fault::Isolate(_) => "isolate",
        Fault::Split { .. } => "split 2|2",
        Fault::Loss { .. } => "packet loss",
        Fault::Crash(_) => "crash",
        Fault::Pause(_) => "pause",
        Fault::ClockStep { .. } => "clock step",
        Fault::DiskFull(_) => "disk full",
    }
}

/// Runs schedule `seed` with `fault_time` of faults; `say` gets progress lines.
pub fn run(setup: Setup, seed: u64, fault_time: Duration, say: &dyn Fn(&str)) -> Result<Outcome> {
    let steps = schedule(seed, fault_time);
    let mut cluster = Cluster::start(setup)?;
    let origin = Instant::now();
    let ports = [cluster.haproxy_port, cluster.proxy_port];
    let ready = Instant::now() + START_BOUND;
    while !ports.iter().all(|p| {
        write_once(SocketAddr::from(([127, 0, 0, 1], *p)), "ready")
            .is_some_and(|(_, epoch)| epoch > 0)
    }) {
        stop::check()?;
        if Instant::now() > ready {
            anyhow::bail!(
                "seed {seed}: nothing served within {START_BOUND:?}; alice's log:\n{}",
                tail(&cluster.node_log(0))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say(&format!(
        "seed {seed}: serving after {:.1} s",
        origin.elapsed().as_secs_f64()
    ));
    let local = |port| vec![SocketAddr::from(([127, 0, 0, 1], port))];
    let paths = vec![
        (PATHS[0], local(ports[0])),
        (PATHS[1], local(ports[1])),
        (PATHS[2], cluster.service_addrs()),
    ];
    let workload = Workload::start(&paths, CLIENTS_PER_PATH, origin);
    let mut windows = vec![];
    for step in &steps {
        let active = cluster.active();
        let resolve = |t: Target| match t {
            Target::Active => active.unwrap_or(0),
            Target::Node(i) => i,
        };
        let started = origin.elapsed();
        let (what, touched, hit) = apply(&mut cluster, &step.fault, resolve)?;
        say(&format!("  {:>7.2} s  {what}", started.as_secs_f64()));
        stop::pause(step.hold)?;
        for i in &touched {
            cluster.net.heal(*i)?;
            cluster.heal_node(*i)?;
        }
        stop::pause(step.quiet)?;
        windows.push((
            what,
            kind(&step.fault),
            hit.is_some() && hit == active,
            started,
            origin.elapsed(),
            active,
        ));
    }
    let healed = origin.elapsed();
    let recovery = recover(&cluster, &workload, healed, origin);
    stop::check()?;
    let acks = workload.stop();
    let mut violations: Vec<String> = checker::check(&acks)
        .iter()
        .map(ToString::to_string)
        .collect();
    if recovery.is_none() {
        violations.push(format!(
            "no recovery within {RECOVERY_BOUND:?} of the last step's end (finality on every \
             node and one active served on every path)"
        ));
    }
    let losses = match final_read(&cluster) {
        Some(held) => checker::lost_writes(&acks, &held, loss_bound()),
        None => {
            violations.push(format!(
                "no node served a read of the data within {READ_BOUND:?} after recovery"
            ));
            Losses::default()
        }
    };
    violations.extend(losses.violations.iter().map(ToString::to_string));
    let blocks_checked = match agreement(&cluster) {
        Ok(n) => n,
        Err(e) => {
            violations.push(format!("{e:#}"));
            0
        }
    };
    let steps = windows
        .into_iter()
        .map(|(what, kind, hit_active, from, to, active)| {
            let name = active.map(|a| NAMES[a]);
            StepReport {
                what,
                kind,
                hit_active,
                longest_gap: longest_gap(&acks, from, to),
                failover: acks
                    .iter()
                    .filter(|a| a.sent >= from && a.received < to)
                    .filter(|a| Some(a.node.as_str()) != name)
                    .map(|a| a.received - from)
                    .min(),
            }
        })
        .collect();
    Ok(Outcome {
        seed,
        steps,
        acks: acks.len(),
        violations,
        recovery,
        blocks_checked,
        losses,
    })
}

/// Everything the serving node holds, read straight from it once the clients have stopped.
fn final_read(c: &Cluster) -> Option<Holding> {
    let deadline = Instant::now() + READ_BOUND;
    let addrs = c.service_addrs();
    loop {
        if let Some(held) = addrs.iter().find_map(|a| read_all(*a)) {
            return Some(held);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Applies `fault`; returns its description, the nodes to heal, and the node it hit.
fn apply(
    c: &mut Cluster,
    fault: &Fault,
    resolve: impl Fn(Target) -> usize,
) -> Result<(String, Vec<usize>, Option<usize>)> {
    let all: Vec<usize> = (0..NAMES.len()).collect();
    let others = |i: usize| all.iter().copied().filter(|j| *j != i).collect::<Vec<_>>();
    Ok(match *fault {
        Fault::Isolate(t) => {
            let i = resolve(t);
            c.net.drop_from(i, &others(i), 100)?;
            (format!("isolate {}", NAMES[i]), vec![i], Some(i))
        }
        Fault::Split { side } => {
            let rest: Vec<usize> = all.iter().copied().filter(|j| !side.contains(j)).collect();
            for i in side {
                c.net.drop_from(i, &rest, 100)?;
            }
            for &j in &rest {
                c.net.drop_from(j, &side, 100)?;
            }
            let names = |s: &[usize]| s.iter().map(|i| NAMES[*i]).collect::<Vec<_>>().join("+");
            (
                format!("split {} | {}", names(&side), names(&rest)),
                all.clone(),
                None,
            )
        }
        Fault::Loss { target, percent } => {
            let i = resolve(target);
            c.net.drop_from(i, &others(i), percent)?;
            (format!("{percent}% loss at {}", NAMES[i]), vec![i], Some(i))
        }
        Fault::Crash(t) => {
            let i = resolve(t);
            c.crash(i);
            (format!("crash {}", NAMES[i]), vec![i], Some(i))
        }
        Fault::Pause(t) => {
            let i = resolve(t);
            c.pause(i);
            (format!("pause {}", NAMES[i]), vec![i], Some(i))
        }
        Fault::ClockStep { target, seconds } => {
            let i = resolve(target);
            if !c.can_step_clocks() {
                return Ok((
                    format!("(skipped: no libfaketime) step {}'s clock", NAMES[i]),
                    vec![],
                    None,
                ));
            }
            c.set_clock(i, seconds)?;
            (
                format!("step {}'s clock {seconds:+} s", NAMES[i]),
                vec![i],
                Some(i),
            )
        }
        Fault::DiskFull(t) => {
            let i = resolve(t);
            c.fill_disk(i)?;
            (format!("fill {}'s disk", NAMES[i]), vec![i], Some(i))
        }
    })
}

/// Waits until every node finalizes past where the chain was when the last step ended and one
/// active candidate is served on every path; returns how long that took.
fn recover(c: &Cluster, w: &Workload, healed: Duration, origin: Instant) -> Option<Duration> {
    let deadline = Instant::now() + RECOVERY_BOUND;
    let target = (0..NAMES.len())
        .filter_map(|i| c.finalized(i).ok())
        .max()
        .unwrap_or(0)
        + 1;
    loop {
        let finalized = (0..NAMES.len()).all(|i| c.finalized(i).is_ok_and(|n| n >= target));
        let primaries: Vec<usize> = (0..CANDIDATES)
            .filter(|i| c.health(*i, "/primary?service=svc") == 200)
            .collect();
        let served = match (c.active(), &primaries[..]) {
            (Some(active), [primary]) if active == *primary => {
                let acks = w.acks();
                let since = origin.elapsed().saturating_sub(Duration::from_millis(500));
                PATHS.iter().all(|p| {
                    acks.iter()
                        .rev()
                        .any(|a: &Ack| a.path == *p && a.sent >= since && a.node == NAMES[active])
                })
            }
            _ => false,
        };
        if finalized && served {
            return Some(origin.elapsed() - healed);
        }
        if Instant::now() > deadline || stop::requested() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks that every node holds the same block at every height all of them finalized.
fn agreement(c: &Cluster) -> Result<u64> {
    let mut lowest = u64::MAX;
    for i in 0..NAMES.len() {
        lowest = lowest.min(c.finalized(i).context("reading a finalized head")?);
    }
    for n in 1..=lowest {
        let reference = c.block_hash(0, n)?;
        for (i, name) in NAMES.iter().enumerate().skip(1) {
            let hash = c.block_hash(i, n)?;
            anyhow::ensure!(
                hash == reference,
                "fork: {name} holds {hash} at #{n}, alice {reference}"
            );
        }
    }
    Ok(lowest)
}

/// The longest time in `[from, to)` without an acknowledgement through one of the proxies
/// (the direct clients wait on unresponsive standbys too).
fn longest_gap(acks: &[Ack], from: Duration, to: Duration) -> Duration {
    PATHS[..2]
        .iter()
        .map(|p| {
            let mut times: Vec<Duration> = acks
                .iter()
                .filter(|a| a.path == *p && a.received >= from && a.received < to)
                .map(|a| a.received)
                .collect();
            times.sort();
            let mut last = from;
            let mut longest = Duration::ZERO;
            for t in times.into_iter().chain([to]) {
                longest = longest.max(t - last);
                last = t;
            }
            longest
        })
        .max()
        .unwrap_or_default()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
