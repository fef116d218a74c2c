//! A service's failover timeline (`failover_timeline`): its failover log folded into one entry
//! per transition of the active role — each election with its cause and measured durations
//! (heartbeats stopped → elected → promoted), each vacancy, pause and resume. `drchain
//! history` and the dashboard show it.

use drchain_consensus::store::FailoverRecord;
use drchain_runtime::pallet_failover::{Event, Reason};
use drchain_support::{AccountId, Epoch};
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// A node was elected (first election, failover or switchover).
    Elected,
    /// The holder was lost and nobody was elected.
    Vacant,
    /// An admin paused automatic failover.
    Paused,
    /// An admin resumed it.
    Resumed,
}

/// How an election ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectionOutcome {
    /// The elected node completed its promotion.
    Promoted,
    /// Still promoting at the newest entry.
    Promoting,
    /// A newer epoch began before it completed (promotion timeout, lost again).
    NotPromoted,
}

/// One transition of a service's active role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub kind: TransitionKind,
    /// The block it happened in, and that block's timestamp (ms).
    pub block: u64,
    pub timestamp: u64,
    /// The epoch it began (elections and vacancies).
    pub epoch: Option<Epoch>,
    /// Why (elections and vacancies).
    pub reason: Option<Reason>,
    /// The holder that lost the service, if any.
    pub from: Option<AccountId>,
    /// The elected node.
    pub to: Option<AccountId>,
    /// How long the lost holder had been silent when it was found stale (live clock):
    /// heartbeats stopped → elected.
    pub silent_ms: Option<u64>,
    /// Elected → promotion completed (block timestamps).
    pub promoted_after_ms: Option<u64>,
    /// Elections only.
    pub outcome: Option<ElectionOutcome>,
    /// Data lost to elect a lagging node (`allow_data_loss` or a forced switchover), ms.
    pub data_loss_ms: Option<u64>,
    /// A vacancy kept because every live candidate's data was older than the RPO: how old
    /// the freshest one's was (`None` inside: it held none).
    pub withheld_lag_ms: Option<Option<u64>>,
}

impl Transition {
    fn new(kind: TransitionKind, record: &FailoverRecord) -> Self {
        Self {
            kind,
            block: record.block,
            timestamp: record.timestamp,
            epoch: None,
            reason: None,
            from: None,
            to: None,
            silent_ms: None,
            promoted_after_ms: None,
            outcome: None,
            data_loss_ms: None,
            withheld_lag_ms: None,
        }
    }
}

/// Folds a service's failover log (oldest first) into its transitions, oldest first.
pub fn transitions(log: &[FailoverRecord]) -> Vec<Transition> {
    let mut out: Vec<Transition> = vec![];
    // A deposition and its cause precede the election or vacancy of the same block.
    let mut deposed: Option<(u64, AccountId)> = None;
    let mut silent: Option<(u64, Option<u64>)> = None;
    for record in log {
        let this_block = |block: u64| block == record.block;
        match &record.event {
            Event::HeartbeatsStopped { silent_ms, .. } => silent = Some((record.block, *silent_ms)),
            Event::Deposed { node, .. } => deposed = Some((record.block, *node)),
            Event::Elected {
                node,
                epoch,
                previous,
                reason,
                ..
            } => {
                let mut t = Transition::new(TransitionKind::Elected, record);
                t.epoch = Some(*epoch);
                t.reason = Some(*reason);
                t.from = *previous;
                t.to = Some(*node);
                t.silent_ms = silent.filter(|(b, _)| this_block(*b)).and_then(|(_, s)| s);
                t.outcome = Some(ElectionOutcome::Promoting);
                close_previous(&mut out);
                out.push(t);
            }
            Event::WentVacant { epoch, reason, .. } => {
                let mut t = Transition::new(TransitionKind::Vacant, record);
                t.epoch = Some(*epoch);
                t.reason = Some(*reason);
                t.from = deposed.filter(|(b, _)| this_block(*b)).map(|(_, n)| n);
                t.silent_ms = silent.filter(|(b, _)| this_block(*b)).and_then(|(_, s)| s);
                close_previous(&mut out);
                out.push(t);
            }
            Event::PromotionCompleted { epoch, .. } => {
                if let Some(t) = last_of_epoch(&mut out, *epoch) {
                    t.promoted_after_ms = Some(record.timestamp.saturating_sub(t.timestamp));
                    t.outcome = Some(ElectionOutcome::Promoted);
                }
            }
            Event::DataLossAccepted { epoch, lag_ms, .. } => {
                if let Some(t) = last_of_epoch(&mut out, *epoch) {
                    t.data_loss_ms = *lag_ms;
                }
            }
            Event::PromotionWithheld { epoch, lag_ms, .. } => {
                if let Some(t) = last_of_epoch(&mut out, *epoch) {
                    t.withheld_lag_ms = Some(*lag_ms);
                }
            }
            Event::Paused { .. } => out.push(Transition::new(TransitionKind::Paused, record)),
            Event::Resumed { .. } => out.push(Transition::new(TransitionKind::Resumed, record)),
            Event::ServiceRegistered { .. }
            | Event::ServiceUpdated { .. }
            | Event::ServiceRemoved { .. }
            | Event::RoleChanged { .. } => {}
        }
    }
    out
}

/// A new epoch began: an election still promoting never completed.
fn close_previous(out: &mut [Transition]) {
    if let Some(t) = out
        .iter_mut()
        .rev()
        .find(|t| t.kind == TransitionKind::Elected)
    {
        if t.outcome == Some(ElectionOutcome::Promoting) {
            t.outcome = Some(ElectionOutcome::NotPromoted);
        }
    }
}

fn last_of_epoch(out: &mut [Transition], epoch: Epoch) -> Option<&mut Transition> {
    out.iter_mut().rev().find(|t| t.epoch == Some(epoch))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use drchain_support::ServiceName;

    use super::*;

    fn at(block: u64, event: Event) -> FailoverRecord {
        FailoverRecord {
            sequence: 0,
            block,
            timestamp: block * 200,
            event,
        }
    }

    #[test]
    fn a_failover_shows_its_cause_and_how_long_each_step_took() {
        let db = ServiceName::new("db").unwrap();
        let (a, b, c) = (AccountId([1; 32]), AccountId([2; 32]), AccountId([3; 32]));
        let elected = |block, node, epoch, previous, reason| {
            at(
                block,
                Event::Elected {
                    service: db.clone(),
                    node,
                    epoch,
                    previous,
                    reason,
                },
            )
        };
        let completed = |block, node, epoch| {
            at(
                block,
                Event::PromotionCompleted {
                    service: db.clone(),
                    node,
                    epoch,
                },
            )
        };
        let log = vec![
            elected(1, a, 1, None, Reason::Vacancy),
            completed(2, a, 1),
            at(
                10,
                Event::HeartbeatsStopped {
                    service: db.clone(),
                    node: a,
                    epoch: 1,
                    silent_ms: Some(1200),
                },
            ),
            at(
                10,
                Event::Deposed {
                    service: db.clone(),
                    node: a,
                    epoch: 1,
                    reason: Reason::HeartbeatStale,
                },
            ),
            elected(10, b, 2, Some(a), Reason::HeartbeatStale),
            at(
                11,
                Event::Paused {
                    service: db.clone(),
                },
            ),
            // b never completes: its promotion times out and c takes over.
            elected(40, c, 3, Some(b), Reason::PromotionTimeout),
            completed(42, c, 3),
        ];
        let t = transitions(&log);
        assert_eq!(t.len(), 4, "{t:#?}");
        assert_eq!(t[0].outcome, Some(ElectionOutcome::Promoted));
        assert_eq!(t[0].promoted_after_ms, Some(200));
        assert_eq!((t[1].from, t[1].to), (Some(a), Some(b)));
        assert_eq!(t[1].silent_ms, Some(1200));
        assert_eq!(t[1].outcome, Some(ElectionOutcome::NotPromoted));
        assert_eq!(t[2].kind, TransitionKind::Paused);
        assert_eq!(t[3].reason, Some(Reason::PromotionTimeout));
        assert_eq!(t[3].silent_ms, None);
        assert_eq!(t[3].promoted_after_ms, Some(400));
    }
}
