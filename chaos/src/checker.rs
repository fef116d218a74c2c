//! Judges a run from what clients saw, not from what nodes logged. Each acknowledged request
//! happened at some instant between its send and its reply, as measured by the client, so:
//!
//! - **Stale epoch**: once a reply with epoch `e` has arrived, no reply sent later may carry
//!   an epoch below `e`. A new epoch is granted only after the previous holder's lease ended,
//!   so an older epoch answering later means a deposed node still served.
//! - **Overlap**: two nodes' serving spans (from a node's first reply to its last request,
//!   per epoch: instants at which it certainly served) must not intersect, and no epoch is
//!   served by two nodes.
//!
//! - **Lost write**: after recovery, the serving node's data must hold every value the
//!   clients saw acknowledged that the RPO promises: all of its own epoch's, and of an older
//!   epoch every value acknowledged at least [`LossBound`] before that epoch's last certain
//!   serving instant. Writes closer to an epoch's end may be lost: replication is
//!   asynchronous, and the chain elects a standby whose checkpoint is at most `max_lag_ms`
//!   older than the active's latest recorded one.
//!
//! All are sound: none reports a violation that did not happen.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::workload::Holding;

/// One acknowledged request: which client path, which node answered with which epoch, and
/// when the client sent it and read the reply (since the run started, one clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub path: &'static str,
    pub node: String,
    pub epoch: u64,
    /// The value it wrote (unique in a run).
    pub value: String,
    pub sent: Duration,
    pub received: Duration,
}

/// What the clients saw that must not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `stale` was sent after `newer` had arrived, yet carries an older epoch.
    StaleEpoch { newer: Ack, stale: Ack },
    /// Two nodes certainly served at the same instant.
    Overlap {
        a: (String, u64, Duration, Duration),
        b: (String, u64, Duration, Duration),
    },
    /// Two nodes answered with the same epoch.
    SharedEpoch { epoch: u64, nodes: [String; 2] },
    /// An acknowledged write the RPO promised is missing from the data served after
    /// recovery; its epoch certainly served until `epoch_end`.
    LostWrite {
        ack: Ack,
        epoch_end: Duration,
        held_by: (String, u64),
    },
}

/// How long before its epoch's end an acknowledged write may still be lost:
/// `interval_ms` (the write waits for the next checkpoint) + `max_lag_ms` (how much older the
/// promoted standby's checkpoint may be) + the heartbeat timeout (how long a cut-off active
/// serves on its lease while its checkpoints can no longer be recorded) + the time to record a
/// checkpoint on a faulty network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossBound(pub Duration);

/// Writes missing from the data served after recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Losses {
    /// Acknowledged writes missing (within the bound or not).
    pub lost: usize,
    /// The largest time from a lost write's acknowledgement to its epoch's end.
    pub widest: Option<Duration>,
    /// The lost writes the RPO promised.
    pub violations: Vec<Violation>,
}

/// Compares what clients saw acknowledged with what `held` (read from the serving node after
/// recovery) holds.
pub fn lost_writes(acks: &[Ack], held: &Holding, bound: LossBound) -> Losses {
    // Per epoch: the last instant it certainly served (its latest request sent).
    let mut ends: BTreeMap<u64, Duration> = BTreeMap::new();
    for a in acks {
        let end = ends.entry(a.epoch).or_insert(a.sent);
        *end = (*end).max(a.sent);
    }
    let mut out = Losses::default();
    for a in acks.iter().filter(|a| !held.values.contains(&a.value)) {
        out.lost += 1;
        let end = ends.get(&a.epoch).copied().unwrap_or(a.sent);
        let before_end = end.saturating_sub(a.received);
        out.widest = out.widest.max(Some(before_end));
        if a.epoch >= held.epoch || before_end >= bound.0 {
            out.violations.push(Violation::LostWrite {
                ack: a.clone(),
                epoch_end: end,
                held_by: (held.node.clone(), held.epoch),
            });
        }
    }
    out
}

/// Every violation in `acks`.
pub fn check(acks: &[Ack]) -> Vec<Violation> {
    let mut out = stale_epochs(acks);
    out.extend(overlaps(acks));
    out
}

fn stale_epochs(acks: &[Ack]) -> Vec<Violation> {
    let mut by_received: Vec<&Ack> = acks.iter().collect();
    by_received.sort_by_key(|a| a.received);
    let mut by_sent: Vec<&Ack> = acks.iter().collect();
    by_sent.sort_by_key(|a| a.sent);
    let mut out = vec![];
    let mut newest: Option<&Ack> = None;
    let mut arrived = by_received.iter().peekable();
    for ack in by_sent {
        while let Some(done) = arrived.next_if(|d| d.received < ack.sent) {
            if newest.is_none_or(|n| done.epoch > n.epoch) {
                newest = Some(done);
            }
        }
        if let Some(newer) = newest.filter(|n| n.epoch > ack.epoch) {
            out.push(Violation::StaleEpoch {
                newer: newer.clone(),
                stale: ack.clone(),
            });
        }
    }
    out
}

fn overlaps(acks: &[Ack]) -> Vec<Violation> {
    // Per (epoch, node): the earliest reply and the latest send.
    let mut spans: BTreeMap<(u64, &str), (Duration, Duration)> = BTreeMap::new();
    for a in acks {
        let span = spans
            .entry((a.epoch, a.node.as_str()))
            .or_insert((a.received, a.sent));
        span.0 = span.0.min(a.received);
        span.1 = span.1.max(a.sent);
    }
    let spans: Vec<_> = spans.into_iter().collect();
    let mut out = vec![];
    for (i, ((epoch_a, node_a), (from_a, to_a))) in spans.iter().enumerate() {
        for ((epoch_b, node_b), (from_b, to_b)) in &spans[i + 1..] {
            if node_a == node_b {
                continue;
            }
            if epoch_a == epoch_b {
                out.push(Violation::SharedEpoch {
                    epoch: *epoch_a,
                    nodes: [(*node_a).to_owned(), (*node_b).to_owned()],
                });
            } else if from_a.max(from_b) < to_a.min(to_b) {
                out.push(Violation::Overlap {
                    a: ((*node_a).to_owned(), *epoch_a, *from_a, *to_a),
                    b: ((*node_b).to_owned(), *epoch_b, *from_b, *to_b),
                });
            }
        }
    }
    out
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} epoch {} via {} (sent {:.3} s, reply {:.3} s)",
            self.node,
            self.epoch,
            self.path,
            self.sent.as_secs_f64(),
            self.received.as_secs_f64()
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StaleEpoch { newer, stale } => {
                write!(f, "stale epoch: {stale} answered after {newer}")
            }
            Self::Overlap { a, b } => write!(
                f,
                "overlap: {} (epoch {}) served from {:.3} s to {:.3} s and {} (epoch {}) from {:.3} s to {:.3} s",
                a.0,
                a.1,
                a.2.as_secs_f64(),
                a.3.as_secs_f64(),
                b.0,
                b.1,
                b.2.as_secs_f64(),
                b.3.as_secs_f64()
            ),
            Self::SharedEpoch { epoch, nodes } => {
                write!(f, "epoch {epoch} served by both {} and {}", nodes[0], nodes[1])
            }
            Self::LostWrite {
                ack,
                epoch_end,
                held_by,
            } => write!(
                f,
                "lost write: {} ({ack}) is missing from {} at epoch {}; epoch {} served until {:.3} s",
                ack.value,
                held_by.0,
                held_by.1,
                ack.epoch,
                epoch_end.as_secs_f64()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(node: &str, epoch: u64, sent_ms: u64, received_ms: u64) -> Ack {
        Ack {
            path: "test",
            node: node.to_owned(),
            epoch,
            value: format!("{node}-{epoch}-{sent_ms}"),
            sent: Duration::from_millis(sent_ms),
            received: Duration::from_millis(received_ms),
        }
    }

    #[test]
    fn a_clean_handover_passes() {
        let acks = [
            ack("alice", 1, 0, 5),
            ack("alice", 1, 100, 105),
            // The slow request to alice overlaps bob's first in flight only: fine.
            ack("alice", 1, 200, 900),
            ack("bob", 2, 850, 860),
            ack("bob", 2, 1000, 1010),
        ];
        assert_eq!(check(&acks), vec![]);
    }

    #[test]
    fn an_old_epoch_answering_after_a_newer_one_is_caught() {
        let acks = [
            ack("alice", 1, 0, 5),
            ack("bob", 2, 100, 110),
            ack("alice", 1, 120, 125),
        ];
        let found = check(&acks);
        assert!(
            matches!(&found[..], [Violation::StaleEpoch { stale, .. }, ..] if stale.sent.as_millis() == 120),
            "{found:?}"
        );
    }

    #[test]
    fn two_nodes_serving_at_once_are_caught_whatever_their_epochs() {
        // bob answered epoch 2 from 100 ms to 300 ms while alice kept answering epoch 3: the
        // epochs are in order at each instant a client compared them, yet both served.
        let acks = [
            ack("bob", 2, 100, 110),
            ack("alice", 3, 150, 160),
            ack("bob", 2, 300, 310),
            ack("alice", 3, 400, 410),
        ];
        let found = check(&acks);
        assert!(
            found.iter().any(|v| matches!(v, Violation::Overlap { .. })),
            "{found:?}"
        );
    }

    #[test]
    fn one_epoch_from_two_nodes_is_caught() {
        let acks = [ack("alice", 4, 0, 10), ack("bob", 4, 500, 510)];
        assert!(matches!(
            &check(&acks)[..],
            [Violation::SharedEpoch { epoch: 4, .. }]
        ));
    }

    fn holding(node: &str, epoch: u64, acks: &[Ack]) -> Holding {
        Holding {
            node: node.to_owned(),
            epoch,
            values: acks.iter().map(|a| a.value.clone()).collect(),
        }
    }

    const BOUND: LossBound = LossBound(Duration::from_secs(5));

    #[test]
    fn writes_near_an_epochs_end_may_be_lost_older_ones_not() {
        let kept = [ack("alice", 1, 0, 5), ack("bob", 2, 20_000, 20_005)];
        // alice served until 10 s; a write 2 s before that is within the RPO's reach.
        let recent = ack("alice", 1, 8_000, 8_005);
        let last = ack("alice", 1, 10_000, 10_005);
        let mut acks = kept.to_vec();
        acks.extend([recent.clone(), last.clone()]);
        let losses = lost_writes(&acks, &holding("bob", 2, &kept), BOUND);
        assert_eq!(losses.lost, 2);
        assert_eq!(losses.widest, Some(Duration::from_millis(1_995)));
        assert_eq!(losses.violations, vec![]);

        // A write 9.995 s before alice's last is one the RPO promised.
        let losses = lost_writes(&acks, &holding("bob", 2, &[]), BOUND);
        assert!(
            matches!(&losses.violations[..], [Violation::LostWrite { ack, .. }, Violation::LostWrite { .. }] if ack.sent.is_zero()),
            "{losses:?}"
        );
    }

    #[test]
    fn the_serving_epoch_must_hold_all_its_own_writes() {
        let acks = [ack("bob", 2, 0, 5), ack("bob", 2, 100, 105)];
        let losses = lost_writes(&acks, &holding("bob", 2, &acks[..1]), BOUND);
        assert!(
            matches!(&losses.violations[..], [Violation::LostWrite { ack, .. }] if ack.sent.as_millis() == 100),
            "{losses:?}"
        );
    }
}
