//! A seeded schedule of faults: the same seed gives the same steps, so a failing run replays.

use std::fmt;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which node a fault hits. `Active` is resolved when the step starts: whichever candidate the
/// chain names active then (the node a fault hurts most).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The service's active node at the time.
    Active,
    /// Node `i` (0-based: alice, bob, charlie, dave).
    Node(usize),
}

/// One fault, held for a step's duration and then healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Drop every packet between the node and the other nodes (clients still reach it).
    Isolate(Target),
    /// Two halves that cannot reach each other: no quorum on either side.
    Split {
        /// The two nodes on one side; the other two are on the other.
        side: [usize; 2],
    },
    /// Drop this percentage of the packets between the node and the other nodes.
    Loss { target: Target, percent: u8 },
    /// The machine dies: node and service are SIGKILLed; at heal both start again.
    Crash(Target),
    /// The machine freezes: node and service are SIGSTOPped; at heal, SIGCONT.
    Pause(Target),
    /// The node's wall clock steps by this many seconds (its monotonic clock does not).
    ClockStep { target: Target, seconds: i32 },
    /// The file system under the node's base path fills up.
    DiskFull(Target),
}

/// One step: a fault held for `hold`, then healed, then `quiet` without faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub hold: Duration,
    pub quiet: Duration,
}

/// Steps for about `total` of faults from `seed`.
pub fn schedule(seed: u64, total: Duration) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = vec![];
    let mut elapsed = Duration::ZERO;
    while elapsed < total {
        let target = |rng: &mut ChaCha8Rng| {
            if rng.gen_bool(0.5) {
                Target::Active
            } else {
                Target::Node(rng.gen_range(0..4))
            }
        };
        let fault = match rng.gen_range(0..7) {
            0 => Fault::Isolate(target(&mut rng)),
            1 => {
                let other = rng.gen_range(1..4);
                Fault::Split { side: [0, other] }
            }
            2 => Fault::Loss {
                target: target(&mut rng),
                percent: rng.gen_range(10..=60),
            },
            3 => Fault::Crash(target(&mut rng)),
            4 => Fault::Pause(target(&mut rng)),
            5 => Fault::ClockStep {
                target: target(&mut rng),
                seconds: if rng.gen_bool(0.5) { 10 } else { -10 },
            },
            _ => Fault::DiskFull(target(&mut rng)),
        };
        let step = Step {
            fault,
            hold: Duration::from_millis(rng.gen_range(2_000..=6_000)),
            quiet: Duration::from_millis(rng.gen_range(2_000..=5_000)),
        };
        elapsed += step.hold + step.quiet;
        steps.push(step);
    }
    steps
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Active => write!(f, "the active"),
            Self::Node(i) => write!(f, "node {i}"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Isolate(t) => write!(f, "isolate {t}"),
            Self::Split { side } => write!(f, "split {side:?} from the rest"),
            Self::Loss { target, percent } => write!(f, "{percent}% packet loss at {target}"),
            Self::Crash(t) => write!(f, "crash {t}"),
            Self::Pause(t) => write!(f, "pause {t}"),
            Self::ClockStep { target, seconds } => write!(f, "step {target}'s clock {seconds:+} s"),
            Self::DiskFull(t) => write!(f, "fill {t}'s disk"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_steps_and_another_seed_others() {
        let total = Duration::from_secs(120);
        assert_eq!(schedule(7, total), schedule(7, total));
        assert_ne!(schedule(7, total), schedule(8, total));
    }

    #[test]
    fn a_schedule_fills_its_time_and_mixes_faults() {
        let steps = schedule(1, Duration::from_secs(600));
        let time: Duration = steps.iter().map(|s| s.hold + s.quiet).sum();
        assert!(time >= Duration::from_secs(600));
        let kinds: std::collections::BTreeSet<_> = steps
            .iter()
            .map(|s| std::mem::discriminant(&s.fault))
            .map(|d| format!("{d:?}"))
            .collect();
        assert_eq!(kinds.len(), 7, "every kind of fault appears in ten minutes");
    }
}
