//! Running hooks: `sh -c COMMAND` with the service, role, epoch and checkpoint as positional
//! arguments (`$1` action, `$2` service, `$3` role, `$4` epoch, `$5` checkpoint or empty) and
//! in the environment (`DRCHAIN_ACTION`, `DRCHAIN_SERVICE`, `DRCHAIN_ROLE`, `DRCHAIN_EPOCH`,
//! `DRCHAIN_CHECKPOINT`, `DRCHAIN_NODE`). A hook that outlives its timeout is killed with its
//! whole process group.
//!
//! For a replicated service the checkpoint is the one this node's target shows (the data the
//! service must start from), with `DRCHAIN_CHECKPOINT_ROOT` and `DRCHAIN_CHECKPOINT_PATH` (the
//! directory of its files); otherwise it is the chain's latest. `DRCHAIN_KEEP_DATA` is `1` when
//! the service's own data is newer than any checkpoint — this node produced the latest one on
//! chain, e.g. it serves again after its lease lapsed while nobody else was elected — and the
//! hook must keep that data rather than restore the (older) checkpoint; `0` otherwise.

use std::time::Duration;

use drchain_support::{AccountId, ServiceName};

use super::machine::HookRun;
use crate::process::{run as run_process, shell};
use crate::replica::Applied;

/// How a hook ended.
pub type HookOutcome = crate::process::ProcessOutcome;

/// Runs `command` for `run` and waits at most `timeout`.
pub async fn run_hook(
    command: &str,
    service: &ServiceName,
    node: &AccountId,
    run: &HookRun,
    applied: Option<&Applied>,
    keep_data: bool,
    timeout: Duration,
) -> HookOutcome {
    let action = run.kind.as_str();
    let epoch = run.epoch.to_string();
    let checkpoint = match applied {
        Some(a) => a.sequence.to_string(),
        None => run.checkpoint.map(|c| c.to_string()).unwrap_or_default(),
    };
    let mut cmd = shell(
        command,
        "drchain-hook",
        &[
            action,
            service.as_str(),
            run.role.as_str(),
            &epoch,
            &checkpoint,
        ],
    );
    cmd.env("DRCHAIN_ACTION", action)
        .env("DRCHAIN_SERVICE", service.as_str())
        .env("DRCHAIN_ROLE", run.role.as_str())
        .env("DRCHAIN_EPOCH", &epoch)
        .env("DRCHAIN_CHECKPOINT", &checkpoint)
        .env("DRCHAIN_NODE", node.to_string())
        .env("DRCHAIN_KEEP_DATA", if keep_data { "1" } else { "0" });
    if let Some(a) = applied {
        cmd.env("DRCHAIN_CHECKPOINT_ROOT", a.root.to_string())
            .env("DRCHAIN_CHECKPOINT_PATH", &a.path);
    }
    run_process(cmd, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{HookKind, LocalRole};
    use drchain_support::H256;

    fn run() -> HookRun {
        HookRun {
            kind: HookKind::OnPromote,
            role: LocalRole::Promoting,
            epoch: 7,
            checkpoint: Some(3),
        }
    }

    #[tokio::test]
    async fn hooks_get_arguments_and_environment_and_their_failures_are_told() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let service = ServiceName::new("db").unwrap();
        let node = AccountId([7; 32]);
        let cmd = format!(
            "echo \"$1 $2 $3 $4 $5|$DRCHAIN_ACTION $DRCHAIN_SERVICE $DRCHAIN_ROLE $DRCHAIN_EPOCH $DRCHAIN_CHECKPOINT\" > {}",
            out.display()
        );
        let t = Duration::from_secs(5);
        assert_eq!(
            run_hook(&cmd, &service, &node, &run(), None, false, t).await,
            HookOutcome::Succeeded
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "on_promote db promoting 7 3|on_promote db promoting 7 3"
        );
        // A replicated service: the checkpoint its target shows, and where its files are.
        let applied = Applied {
            sequence: 2,
            root: H256([9; 32]),
            path: dir.path().join("replica"),
        };
        let cmd = format!(
            "echo \"$5 $DRCHAIN_CHECKPOINT $DRCHAIN_CHECKPOINT_ROOT $DRCHAIN_CHECKPOINT_PATH $DRCHAIN_KEEP_DATA\" > {}",
            out.display()
        );
        for keep in [false, true] {
            run_hook(&cmd, &service, &node, &run(), Some(&applied), keep, t).await;
            assert_eq!(
                std::fs::read_to_string(&out).unwrap().trim(),
                format!(
                    "2 2 {} {} {}",
                    applied.root,
                    applied.path.display(),
                    u8::from(keep)
                )
            );
        }
        let failed = run_hook(
            "echo nope >&2; exit 3",
            &service,
            &node,
            &run(),
            None,
            false,
            t,
        )
        .await;
        match failed {
            HookOutcome::Failed { detail, .. } => {
                assert!(detail.contains("3") && detail.contains("nope"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_hanging_hook_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        let service = ServiceName::new("db").unwrap();
        let cmd = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let started = std::time::Instant::now();
        let outcome = run_hook(
            &cmd,
            &service,
            &AccountId([7; 32]),
            &run(),
            None,
            false,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(outcome, HookOutcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the hook's child survived the kill");
    }
}
