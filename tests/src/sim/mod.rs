//! A deterministic simulation of a validator network: every node runs the real consensus
//! driver, runtime and chain store (over an in-memory database that survives crashes), and
//! every message crosses a simulated network with seeded delays, loss, duplication,
//! reordering and partitions. Time is virtual: the run is a queue of timed events, so the same
//! seed replays exactly the same run.
//!
//! Invariants are checked at every finalized block: no two honest nodes finalize different
//! blocks at one height. [`Simulation::run`] then checks liveness: once faults end, every
//! honest running node keeps finalizing. A crash loses what a node had not written durably.
//! Byzantine actors (an equivocating validator, and in [`Faults::byzantine`] a member that
//! tampers, floods and replays) are in [`byzantine`].

mod agents;
mod byzantine;

pub use agents::Serving;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use drchain_agent::machine::HookRun;
use drchain_consensus::codec::{ConsensusMessage, WireCertificate};
use drchain_consensus::context::SigningProvider;
use drchain_consensus::host::{self, ProposeError};
use drchain_consensus::pool::TransactionPool;
use drchain_consensus::store::kv::MemoryDb;
use drchain_consensus::store::ChainStore;
use drchain_consensus::{ConsensusDriver, DriverConfig, Output, TimerKey};
use drchain_runtime::dev::{dev_key, specs};
use drchain_runtime::support::H256;
use drchain_runtime::support::{Health, Overlay, ServiceName};
use drchain_runtime::{pallet_service_status, Block, Genesis, RuntimeCall, UncheckedExtrinsic};
use ed25519_dalek::{Signer as _, SigningKey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The validators of the local spec, in its order.
pub const VALIDATORS: [&str; 4] = ["alice", "bob", "charlie", "dave"];

/// What can go wrong in a run, and for how long.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Virtual ms during which faults happen; afterwards the network is calm.
    pub chaos_ms: u64,
    /// Probability that a message copy is lost (during chaos).
    pub loss: f64,
    /// Probability that a message copy is delivered twice (during chaos).
    pub duplicate: f64,
    /// Delay range of a message, ms (reordering follows from the spread).
    pub delay_ms: (u64, u64),
    /// Extra delay range during chaos.
    pub chaos_delay_ms: (u64, u64),
    /// Partitions: (start, end, nodes cut off from the rest).
    pub partitions: Vec<(u64, u64, BTreeSet<usize>)>,
    /// Crashes: (at, node, restart after ms).
    pub crashes: Vec<(u64, usize, u64)>,
    /// A validator that equivocates: signs a second, conflicting proposal or vote for every
    /// one it sends, and sends each to a random half of the peers.
    pub equivocator: Option<usize>,
    /// Clock skew per node, ms (positive: ahead).
    pub skew_ms: Vec<i64>,
    /// Wall-clock steps: (at, node, ms added to its clock from then on), as a bad NTP step.
    /// Monotonic time (what the agents' leases count) does not step.
    pub clock_steps: Vec<(u64, usize, i64)>,
    /// Whether eve, a Byzantine member that is not a validator, attacks (see [`byzantine`]);
    /// with her, the equivocator also floods the next height.
    pub byzantine_member: bool,
    /// Whether alice, bob and charlie run the failover agent for demo-db (see [`agents`]);
    /// without, a client submits their heartbeats at random.
    pub agents: bool,
}

impl Faults {
    /// Seeded random faults for a 4-validator network (f = 1): maybe an equivocator, up to
    /// two crash-restarts of honest nodes, up to two partitions cutting one or two nodes off,
    /// loss, duplication, delays and clock skew, all within the chaos phase. Faults may
    /// overlap there beyond f, so the chain may halt; safety is checked throughout, liveness
    /// once the faults end (when only the equivocator, if any, is faulty).
    pub fn random(rng: &mut ChaCha8Rng) -> Self {
        let chaos_ms = 6_000;
        let equivocator = rng.gen_bool(0.5).then(|| rng.gen_range(0..4));
        let honest: Vec<usize> = (0..4).filter(|n| Some(*n) != equivocator).collect();
        let mut crashes = vec![];
        for _ in 0..rng.gen_range(0..=2) {
            let node = honest[rng.gen_range(0..honest.len())];
            let at = rng.gen_range(200..chaos_ms - 1_500);
            crashes.push((at, node, rng.gen_range(100..1_500)));
        }
        let mut partitions = vec![];
        for _ in 0..rng.gen_range(0..=2) {
            let start = rng.gen_range(0..chaos_ms - 1_000);
            // Up to 4 s: long enough that a cut-off active loses its service to another
            // (heartbeat timeout 1 s, then up to the lease bound of 1 s more).
            let end = start + rng.gen_range(200..4_000);
            let size = rng.gen_range(1..=2);
            let mut cut = BTreeSet::new();
            while cut.len() < size {
                cut.insert(rng.gen_range(0..4));
            }
            partitions.push((start, end.min(chaos_ms), cut));
        }
        Self {
            chaos_ms,
            loss: rng.gen_range(0.0..0.2),
            duplicate: rng.gen_range(0.0..0.1),
            delay_ms: (1, 20),
            chaos_delay_ms: (0, rng.gen_range(1..200)),
            partitions,
            crashes,
            equivocator,
            // Within the clock assumption of the lease argument (2(ε) plus delay < max_drift_ms).
            skew_ms: (0..4).map(|_| rng.gen_range(-30..=30)).collect(),
            clock_steps: vec![],
            byzantine_member: false,
            agents: true,
        }
    }

    /// [`Faults::random`] with f = 1 Byzantine validator (always an equivocator that also
    /// floods) and a Byzantine member (eve) attacking throughout, faults or not.
    pub fn byzantine(rng: &mut ChaCha8Rng) -> Self {
        let mut faults = Self::random(rng);
        let byzantine = faults.equivocator.unwrap_or_else(|| rng.gen_range(0..4));
        faults.equivocator = Some(byzantine);
        // Crashes are of honest nodes only: with the Byzantine one, f would be exceeded.
        faults.crashes.retain(|(_, node, _)| *node != byzantine);
        faults.byzantine_member = true;
        // The agents are checked in the random profile; here the client's heartbeats are the
        // traffic eve attacks around.
        faults.agents = false;
        faults
    }

    /// A calm network.
    pub fn none() -> Self {
        Self {
            chaos_ms: 0,
            loss: 0.0,
            duplicate: 0.0,
            delay_ms: (1, 20),
            chaos_delay_ms: (0, 0),
            partitions: vec![],
            crashes: vec![],
            equivocator: None,
            skew_ms: vec![0; 4],
            clock_steps: vec![],
            byzantine_member: false,
            agents: false,
        }
    }
}

#[derive(Debug, Clone)]
enum Event {
    Deliver {
        to: usize,
        message: Box<ConsensusMessage>,
    },
    Timer {
        node: usize,
        key: TimerKey,
        generation: u64,
    },
    SyncRequest {
        to: usize,
        from: usize,
        height: u64,
    },
    SyncResponse {
        to: usize,
        blocks: Vec<(Block, WireCertificate)>,
        /// From eve: tampered, and refusing it is right.
        byzantine: bool,
    },
    /// The Byzantine actors flood (see [`byzantine`]).
    ByzantineTick,
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Build {
        node: usize,
        height: u64,
        round: u32,
    },
    /// A client submits a heartbeat to `node`, and schedules the next submission.
    Submit {
        node: usize,
    },
    /// A transaction gossiped by a peer.
    DeliverTx {
        to: usize,
        tx: Box<UncheckedExtrinsic>,
    },
    /// An agent's clock tick.
    AgentTick {
        node: usize,
    },
    /// An agent learns of a block its node finalized (after the node has handled it, as the
    /// real agent does from its own task), with the extrinsics that succeeded in it.
    AgentBlock {
        node: usize,
        number: u64,
        applied: Vec<H256>,
    },
    /// An agent's hook finished.
    HookDone {
        node: usize,
        run: HookRun,
        ok: bool,
    },
}

struct Node {
    key: SigningKey,
    pool: TransactionPool,
    db: MemoryDb,
    driver: Option<ConsensusDriver<MemoryDb>>,
    timers: BTreeMap<TimerKey, u64>,
    generation: u64,
    finalized: Vec<H256>,
    /// Its failover agent, if it runs one and is up.
    agent: Option<agents::SimAgent>,
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// A digest of every event processed and every block finalized, in order.
    pub trace: H256,
    /// Per node, its finalized block hashes by height (index 0 is height 1).
    pub chains: Vec<Vec<H256>>,
    /// Events processed.
    pub events: u64,
    /// Highest height finalized by any node at the end of the chaos phase.
    pub height_at_calm: u64,
    /// WAL records replayed by restarted nodes.
    pub wal_records_replayed: u64,
    /// Transactions in finalized blocks.
    pub included_transactions: u64,
    /// Tampered sync answers of the Byzantine member that honest nodes refused.
    pub refused_sync_answers: u64,
    /// Blocks proposed in a round after the first (the proposers before missed their turn).
    pub late_blocks: u64,
    /// Every start of serving by an agent, in order.
    pub servings: Vec<Serving>,
}

/// The simulation.
pub struct Simulation {
    seed: u64,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Event>,
    next_event: usize,
    nodes: Vec<Node>,
    genesis: Genesis,
    faults: Faults,
    finalized: BTreeMap<u64, (H256, usize)>,
    trace: blake3::Hasher,
    processed: u64,
    height_at_calm: u64,
    wal_records_replayed: u64,
    included_transactions: u64,
    late_blocks: u64,
    /// Print every event (set `DRCHAIN_SIM_TRACE=1`), to read a failing seed's run.
    print_events: bool,
    /// The Byzantine member, when the faults have one.
    eve: Option<byzantine::Eve>,
    /// The agents' monotonic clock at virtual time 0.
    origin: std::time::Instant,
    /// Every start of serving by an agent.
    servings: Vec<Serving>,
    /// The latest instant (virtual ms, seen at agent ticks) at which some agent served.
    last_served_at: Option<u64>,
}

fn describe(event: &Event) -> String {
    match event {
        Event::Deliver { message, .. } => match message.as_ref() {
            ConsensusMessage::Proposal(p) => format!(
                "proposal h{} r{} pol{} from {} block {}",
                p.height,
                p.round,
                p.pol_round,
                p.proposer.short(),
                p.block.hash()
            ),
            ConsensusMessage::Vote(v) => format!(
                "vote {} h{} r{} {:?} from {}",
                if v.vote_type == 0 {
                    "prevote"
                } else {
                    "precommit"
                },
                v.height,
                v.round,
                v.value,
                v.validator.short()
            ),
            ConsensusMessage::PolkaCertificate(c) => format!(
                "polka certificate h{} r{} {} ({} signatures)",
                c.height,
                c.round,
                c.block_hash,
                c.signatures.len()
            ),
            ConsensusMessage::RoundCertificate(c) => format!(
                "round certificate h{} r{} kind {} ({} signatures)",
                c.height,
                c.round,
                c.kind,
                c.signatures.len()
            ),
        },
        Event::Timer { key, .. } => format!("timer {key:?}"),
        Event::SyncRequest { from, height, .. } => format!("sync request from {from} at #{height}"),
        Event::SyncResponse {
            blocks, byzantine, ..
        } => format!(
            "sync response of {} blocks{}",
            blocks.len(),
            if *byzantine { " (tampered)" } else { "" }
        ),
        Event::ByzantineTick => "byzantine flood".into(),
        Event::Crash { .. } => "crash".into(),
        Event::Restart { .. } => "restart".into(),
        Event::Build { height, round, .. } => format!("build h{height} r{round}"),
        Event::Submit { .. } => "client submits a heartbeat".into(),
        Event::DeliverTx { tx, .. } => format!("transaction {}", tx.hash()),
        Event::AgentTick { .. } => "agent tick".into(),
        Event::AgentBlock { number, .. } => format!("agent reads #{number}"),
        Event::HookDone { run, ok, .. } => {
            format!("hook {:?} epoch {} ok={ok}", run.kind, run.epoch)
        }
    }
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .finish()
    }
}

impl Simulation {
    /// A 4-validator network of the local spec with `faults`, driven by `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        let spec = specs::local().expect("local spec builds");
        let genesis = spec.build_genesis().expect("genesis builds");
        let nodes = VALIDATORS
            .iter()
            .map(|name| Node {
                key: dev_key(name),
                pool: TransactionPool::new(genesis.hash(), host::POOL_LIMIT),
                db: MemoryDb::new(),
                driver: None,
                timers: BTreeMap::new(),
                generation: 0,
                finalized: vec![],
                agent: None,
            })
            .collect();
        let mut sim = Self {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            nodes,
            genesis,
            faults,
            finalized: BTreeMap::new(),
            trace: blake3::Hasher::new(),
            processed: 0,
            height_at_calm: 0,
            wal_records_replayed: 0,
            included_transactions: 0,
            late_blocks: 0,
            print_events: std::env::var_os("DRCHAIN_SIM_TRACE").is_some(),
            eve: None,
            origin: std::time::Instant::now(),
            servings: vec![],
            last_served_at: None,
        };
        if sim.print_events {
            eprintln!("seed {seed}: {:?}", sim.faults);
        }
        if sim.faults.byzantine_member {
            sim.eve = Some(byzantine::Eve::default());
            sim.schedule(byzantine::TICK_MS, Event::ByzantineTick);
        }
        for (at, node, down_for) in sim.faults.crashes.clone() {
            sim.schedule(at, Event::Crash { node });
            sim.schedule(at + down_for, Event::Restart { node });
        }
        for node in 0..sim.nodes.len() {
            sim.schedule(0, Event::Restart { node });
        }
        if !sim.faults.agents {
            sim.schedule(100, Event::Submit { node: 0 });
        }
        sim
    }

    /// The faults this run injects.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// A network with seeded random faults.
    pub fn random(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_fa17);
        let faults = Faults::random(&mut rng);
        Self::new(seed, faults)
    }

    /// A network with seeded random faults and Byzantine actors ([`Faults::byzantine`]).
    pub fn byzantine(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xb42a_471e);
        let faults = Faults::byzantine(&mut rng);
        Self::new(seed, faults)
    }

    fn schedule(&mut self, at: u64, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, event);
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, id)));
    }

    fn local_time(&self, node: usize) -> u64 {
        let stepped: i64 = self
            .faults
            .clock_steps
            .iter()
            .filter(|(at, n, _)| *n == node && *at <= self.now)
            .map(|(_, _, by)| by)
            .sum();
        let skew = self.faults.skew_ms.get(node).copied().unwrap_or(0) + stepped;
        // Virtual time starts at the genesis time, so timestamps look like real ones.
        let base = self.genesis.header.timestamp as i64 + 1_000 + self.now as i64;
        (base + skew).max(0) as u64
    }

    fn chaotic(&self) -> bool {
        self.now < self.faults.chaos_ms
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.faults.partitions.iter().any(|(s, e, cut)| {
            self.now >= *s && self.now < *e && cut.contains(&a) != cut.contains(&b)
        })
    }

    fn delay(&mut self) -> u64 {
        let (lo, hi) = self.faults.delay_ms;
        let mut d = self.rng.gen_range(lo..=hi);
        if self.chaotic() {
            let (lo, hi) = self.faults.chaos_delay_ms;
            d += self.rng.gen_range(lo..=hi);
        }
        d
    }

    fn send(&mut self, from: usize, to: usize, event: Event) {
        if self.cut(from, to) {
            return;
        }
        if self.chaotic() && self.rng.gen_bool(self.faults.loss) {
            return;
        }
        let copies = if self.chaotic() && self.rng.gen_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now + self.delay();
            self.schedule(at, event.clone());
        }
    }

    /// Runs for `duration_ms` of virtual time, then checks that every node finalized at least
    /// `min_progress` blocks after the chaos ended. Panics with the seed on any violation.
    pub fn run(mut self, duration_ms: u64, min_progress: u64) -> Report {
        let mut calm_marked = false;
        while let Some(Reverse((at, _, id))) = self.queue.pop() {
            if at > duration_ms {
                break;
            }
            if !calm_marked && at >= self.faults.chaos_ms {
                calm_marked = true;
                self.height_at_calm = self.finalized.keys().next_back().copied().unwrap_or(0);
            }
            self.now = at;
            let Some(event) = self.events.remove(&id) else {
                continue;
            };
            self.processed += 1;
            self.step(event);
        }
        let chains: Vec<Vec<H256>> = self.nodes.iter().map(|n| n.finalized.clone()).collect();
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match &n.driver {
                Some(d) => format!("h{} r{:?} {:?}", d.height(), d.round(), d.stats()),
                None => "down".into(),
            })
            .collect();
        for (i, node) in self.nodes.iter().enumerate() {
            let progress = (node.finalized.len() as u64).saturating_sub(self.height_at_calm);
            assert!(
                progress >= min_progress,
                "seed {}: node {i} finalized only {progress} blocks after the network healed \
                 (height {} at calm, {} now); nodes: {states:#?}",
                self.seed,
                self.height_at_calm,
                node.finalized.len()
            );
        }
        // Once the faults end, the service has an active: one served at some instant in the
        // second half of the calm phase. Not necessarily at the very end: an equivocator left
        // in the calm phase can make rounds fail for longer than a lease, so a holder may lapse
        // at any time (seed 12266's served from 4.7 s until its lease lapsed at 29.8 s of a
        // 30 s run, and the run ended before its next heartbeat landed).
        if self.faults.agents {
            let since = self.faults.chaos_ms + self.now.saturating_sub(self.faults.chaos_ms) / 2;
            assert!(
                self.last_served_at.is_some_and(|at| at >= since),
                "seed {}: no agent served demo-db from {since} ms, the second half of the \
                 calm phase (last served at {:?} ms; {} starts of serving: {:?}); nodes: \
                 {states:#?}",
                self.seed,
                self.last_served_at,
                self.servings.len(),
                self.servings
            );
        }
        Report {
            trace: H256(*self.trace.finalize().as_bytes()),
            chains,
            events: self.processed,
            height_at_calm: self.height_at_calm,
            wal_records_replayed: self.wal_records_replayed,
            included_transactions: self.included_transactions,
            refused_sync_answers: self.eve.as_ref().map_or(0, |e| e.refused_answers),
            late_blocks: self.late_blocks,
            servings: self.servings,
        }
    }

    fn step(&mut self, event: Event) {
        let node = match &event {
            Event::Deliver { to, .. } => *to,
            Event::Timer { node, .. } => *node,
            Event::SyncRequest { to, .. } => *to,
            Event::SyncResponse { to, .. } => *to,
            Event::Crash { node }
            | Event::Restart { node }
            | Event::Build { node, .. }
            | Event::Submit { node }
            | Event::AgentTick { node }
            | Event::AgentBlock { node, .. }
            | Event::HookDone { node, .. } => *node,
            Event::DeliverTx { to, .. } => *to,
            Event::ByzantineTick => self.eve_id(),
        };
        self.trace.update(&self.now.to_le_bytes());
        self.trace.update(&(node as u64).to_le_bytes());
        if self.print_events {
            eprintln!("{:>6} ms node {node}: {}", self.now, describe(&event));
        }
        let now = self.local_time(node);
        let outputs = match event {
            Event::ByzantineTick => {
                self.byzantine_tick();
                return;
            }
            Event::AgentTick { node } => {
                self.agent_tick(node);
                return;
            }
            Event::HookDone { node, run, ok } => {
                self.hook_done(node, &run, ok);
                return;
            }
            Event::AgentBlock {
                node,
                number,
                applied,
            } => {
                self.agent_block(node, number, applied);
                return;
            }
            Event::Crash { node } => {
                // Power lost: what was not written durably is gone.
                self.nodes[node].db.crash();
                self.nodes[node].driver = None;
                self.nodes[node].agent = None;
                self.nodes[node].timers.clear();
                self.nodes[node].pool = TransactionPool::new(self.genesis.hash(), host::POOL_LIMIT);
                self.trace.update(b"crash");
                return;
            }
            Event::Restart { node } => {
                if self.nodes[node].driver.is_some() {
                    return;
                }
                self.trace.update(b"restart");
                let store = ChainStore::open(self.nodes[node].db.clone(), &self.genesis)
                    .unwrap_or_else(|e| panic!("seed {}: node {node} reopens: {e}", self.seed));
                let signer =
                    SigningProvider::new(self.genesis.hash(), self.nodes[node].key.clone());
                let mut driver = ConsensusDriver::new(store, signer, DriverConfig::default(), true);
                let out = driver.start(now);
                self.wal_records_replayed += driver.stats().wal_records_replayed;
                self.nodes[node].driver = Some(driver);
                self.start_agent(node);
                out
            }
            Event::Deliver { to, message } => match self.nodes[to].driver.as_mut() {
                Some(d) => d.on_message(now, *message),
                None => return,
            },
            Event::Timer {
                node,
                key,
                generation,
            } => {
                if self.nodes[node].timers.get(&key) != Some(&generation) {
                    return;
                }
                self.nodes[node].timers.remove(&key);
                match self.nodes[node].driver.as_mut() {
                    Some(d) => d.on_timer(now, key),
                    None => return,
                }
            }
            Event::Build {
                node,
                height,
                round,
            } => {
                let seed = self.seed;
                let n = &mut self.nodes[node];
                let Some(d) = n.driver.as_mut() else {
                    return;
                };
                if d.height() != height {
                    return;
                }
                match host::propose(d, &n.pool, now, height, round) {
                    Ok(proposed) => Ok(proposed.outputs),
                    Err(ProposeError::Driver(e)) => Err(e),
                    Err(ProposeError::Build(e)) => panic!("seed {seed}: building a block: {e}"),
                }
            }
            Event::Submit { node } => {
                // The next submission, to a random node, in 50 to 400 ms.
                let next = self.rng.gen_range(0..self.nodes.len());
                let at = self.now + self.rng.gen_range(50..400);
                self.schedule(at, Event::Submit { node: next });
                let who = ["alice", "bob", "charlie"][self.rng.gen_range(0..3)];
                let Some(tx) = self.heartbeat(node, who) else {
                    return;
                };
                let out = self.pool_submit(node, now, tx.clone());
                if out.as_ref().is_ok_and(|o| o.is_some()) {
                    for to in (0..self.nodes.len()).filter(|p| *p != node) {
                        let tx = Box::new(tx.clone());
                        self.send(node, to, Event::DeliverTx { to, tx });
                    }
                }
                match out {
                    Ok(Some(out)) => Ok(out),
                    Ok(None) => return,
                    Err(e) => Err(e),
                }
            }
            Event::DeliverTx { to, tx } => match self.pool_submit(to, now, *tx) {
                Ok(Some(out)) => Ok(out),
                Ok(None) => return,
                Err(e) => Err(e),
            },
            Event::SyncRequest { to, from, height } => {
                let Some(d) = self.nodes[to].driver.as_ref() else {
                    return;
                };
                let blocks = host::sync_batch(&d.store().reader(), height, host::SYNC_BATCH)
                    .unwrap_or_else(|e| {
                        panic!("seed {}: node {to} reading blocks: {e}", self.seed)
                    });
                if !blocks.is_empty() {
                    let byzantine = false;
                    let to_asker = Event::SyncResponse {
                        to: from,
                        blocks,
                        byzantine,
                    };
                    self.send(to, from, to_asker);
                }
                return;
            }
            Event::SyncResponse {
                to,
                blocks,
                byzantine,
            } => {
                let mut all = vec![];
                for (block, cert) in blocks {
                    let Some(d) = self.nodes[to].driver.as_mut() else {
                        return;
                    };
                    match d.on_synced_block(now, block, cert) {
                        Ok(Ok(out)) => all.extend(out),
                        Ok(Err(_)) if byzantine => {
                            self.eve_caught(to);
                            break;
                        }
                        Ok(Err(rejected)) => {
                            panic!(
                                "seed {}: node {to} refused a synced block: {rejected}",
                                self.seed
                            )
                        }
                        Err(e) => panic!("seed {}: node {to} failed on sync: {e}", self.seed),
                    }
                }
                Ok(all)
            }
        };
        let outputs = outputs
            .unwrap_or_else(|e| panic!("seed {}: node {node} driver failed: {e}", self.seed));
        self.execute(node, outputs);
    }

    fn execute(&mut self, node: usize, outputs: Vec<Output>) {
        let mut more = vec![];
        for output in outputs {
            match output {
                Output::Broadcast(message) => {
                    if self.print_events {
                        let what = describe(&Event::Deliver {
                            to: node,
                            message: Box::new(message.clone()),
                        });
                        eprintln!("{:>6} ms node {node} sends: {what}", self.now);
                    }
                    self.eve_sees(node, &message);
                    let equivocation = (self.faults.equivocator == Some(node))
                        .then(|| self.conflicting(node, &message))
                        .flatten();
                    for to in 0..self.nodes.len() {
                        if to == node {
                            continue;
                        }
                        let message = match &equivocation {
                            Some(other) if self.rng.gen_bool(0.5) => other.clone(),
                            _ => message.clone(),
                        };
                        let message = Box::new(message);
                        self.send(node, to, Event::Deliver { to, message });
                    }
                }
                Output::ScheduleTimer { key, after_ms } => {
                    let n = &mut self.nodes[node];
                    n.generation += 1;
                    let generation = n.generation;
                    n.timers.insert(key, generation);
                    self.schedule(
                        self.now + after_ms,
                        Event::Timer {
                            node,
                            key,
                            generation,
                        },
                    );
                }
                Output::CancelTimer(key) => {
                    self.nodes[node].timers.remove(&key);
                }
                Output::CancelAllTimers => {
                    self.nodes[node]
                        .timers
                        .retain(|k, _| matches!(k, TimerKey::Idle));
                }
                Output::BuildBlock { height, round } => {
                    // Building takes a little time, as on a real node.
                    let at = self.now + 1;
                    self.schedule(
                        at,
                        Event::Build {
                            node,
                            height,
                            round,
                        },
                    );
                }
                Output::Finalized {
                    header,
                    hash,
                    extrinsics,
                    events,
                    ..
                } => {
                    self.trace.update(&hash.0);
                    if self.print_events {
                        eprintln!(
                            "{:>6} ms node {node} finalized #{} {hash}",
                            self.now, header.number
                        );
                    }
                    let now = self.local_time(node);
                    let n = &mut self.nodes[node];
                    if let Some(d) = n.driver.as_mut() {
                        let (_, out) = host::finalized_into_pool(
                            d,
                            &mut n.pool,
                            now,
                            header.number,
                            &extrinsics,
                        )
                        .unwrap_or_else(|e| {
                            panic!("seed {}: node {node} driver failed: {e}", self.seed)
                        });
                        more.extend(out);
                    }
                    let n = &mut self.nodes[node];
                    assert_eq!(
                        n.finalized.len() as u64 + 1,
                        header.number,
                        "seed {}: node {node} finalized out of order",
                        self.seed
                    );
                    n.finalized.push(hash);
                    // The equivocator's too: it runs the honest driver, which finalizes only
                    // on a commit certificate (2/3+ real precommits), and two certificates for
                    // different blocks at one height break safety whoever holds them.
                    match self.finalized.get(&header.number) {
                        Some((other, by)) if *other != hash => panic!(
                            "seed {}: SAFETY VIOLATION at height {}: node {node} finalized \
                             {hash}, node {by} finalized {other}",
                            self.seed, header.number
                        ),
                        Some(_) => {}
                        None => {
                            self.finalized.insert(header.number, (hash, node));
                            self.included_transactions += extrinsics.len() as u64;
                            self.late_blocks += u64::from(header.round > 0);
                        }
                    }
                    if self.nodes[node].agent.is_some() {
                        let applied = drchain_agent::chain::succeeded(&extrinsics, &events);
                        let number = header.number;
                        self.schedule(
                            self.now,
                            Event::AgentBlock {
                                node,
                                number,
                                applied,
                            },
                        );
                    }
                }
                Output::RequestSync { from } => {
                    let peers: Vec<usize> = (0..self.nodes.len())
                        .filter(|p| *p != node && self.nodes[*p].driver.is_some())
                        .collect();
                    // eve is one more peer to ask, until she is caught.
                    if self.eve_askable(node) && self.rng.gen_range(0..=peers.len()) == 0 {
                        self.eve_answers_sync(node, from);
                        continue;
                    }
                    if peers.is_empty() {
                        continue;
                    }
                    let to = peers[self.rng.gen_range(0..peers.len())];
                    self.send(
                        node,
                        to,
                        Event::SyncRequest {
                            to,
                            from: node,
                            height: from,
                        },
                    );
                }
            }
        }
        if !more.is_empty() {
            self.execute(node, more);
        }
    }

    /// A heartbeat of `who` for demo-db, with the next nonce in `node`'s finalized state (as
    /// a client reading that node would sign it); `None` if the node is down.
    fn heartbeat(&self, node: usize, who: &str) -> Option<UncheckedExtrinsic> {
        let d = self.nodes[node].driver.as_ref()?;
        let state = d.store().state();
        let account = drchain_runtime::dev::dev_account(who);
        let nonce = drchain_runtime::system::nonce(&Overlay::new(&state), &account);
        let call = RuntimeCall::ServiceStatus(pallet_service_status::Call::Heartbeat {
            service: ServiceName::new("demo-db").expect("valid name"),
            epoch_seen: 0,
            health: Health::Healthy,
            applied_checkpoint: None,
        });
        Some(UncheckedExtrinsic::sign(
            &dev_key(who),
            &self.genesis.hash(),
            nonce,
            call,
        ))
    }

    /// Adds a transaction to `node`'s pool; if it is new, the driver learns that transactions
    /// are pending. `Ok(None)`: the node is down or refused it.
    fn pool_submit(
        &mut self,
        node: usize,
        now: u64,
        tx: UncheckedExtrinsic,
    ) -> Result<Option<Vec<Output>>, drchain_consensus::DriverError> {
        let n = &mut self.nodes[node];
        let Some(d) = n.driver.as_mut() else {
            return Ok(None);
        };
        let accepted = {
            let state = d.store().state();
            n.pool.submit(&state, tx).is_ok()
        };
        if !accepted {
            return Ok(None);
        }
        d.on_transactions_pending(now).map(Some)
    }

    /// The equivocator's second message for the same slot: a vote for another value, or a
    /// proposal of another (valid) block.
    fn conflicting(&mut self, node: usize, message: &ConsensusMessage) -> Option<ConsensusMessage> {
        let key = self.nodes[node].key.clone();
        let genesis = self.genesis.hash();
        match message {
            ConsensusMessage::Vote(v) => {
                let mut other = v.clone();
                other.value = match v.value {
                    Some(_) => None,
                    None => Some(H256(self.rng.gen())),
                };
                let vote = drchain_consensus::codec::vote_from_wire(other.clone()).ok()?;
                other.signature = drchain_runtime::support::Signature(
                    key.sign(&vote.message.sign_bytes(&genesis)).to_bytes(),
                );
                Some(ConsensusMessage::Vote(other))
            }
            ConsensusMessage::Proposal(p) => {
                let d = self.nodes[node].driver.as_ref()?;
                let store = d.store();
                if store.head().number + 1 != p.height {
                    return None;
                }
                let pool = TransactionPool::new(genesis, 16);
                let built = pool
                    .build_block(
                        &store.state(),
                        store.head(),
                        p.block.header.timestamp + 1,
                        p.block.header.round,
                        64,
                    )
                    .ok()?;
                let mut other = p.clone();
                other.block = built.block;
                let proposal = drchain_consensus::codec::proposal_from_wire(other.clone()).ok()?;
                other.signature = drchain_runtime::support::Signature(
                    key.sign(&proposal.message.sign_bytes(&genesis)).to_bytes(),
                );
                Some(ConsensusMessage::Proposal(other))
            }
            // Certificates carry others' signatures: nothing to equivocate on.
            ConsensusMessage::PolkaCertificate(_) | ConsensusMessage::RoundCertificate(_) => None,
        }
    }
}
