//! Running hooks: `sh -c COMMAND` with the service, role, epoch and checkpoint as positional
//! arguments (`$1` action, `$2` service, `$3` role, `$4` epoch, `$5` checkpoint or empty) and
//! in the environment (`DRCHAIN_ACTION`, `DRCHAIN_SERVICE`, `DRCHAIN_ROLE`, `DRCHAIN_EPOCH`,
//! `DRCHAIN_CHECKPOINT`, `DRCHAIN_NODE`). A hook that outlives its timeout is killed with its
//! whole process group.

use std::time::Duration;

use drchain_support::{AccountId, ServiceName};

use super::machine::HookRun;
use crate::process::{run as run_process, shell};

/// How a hook ended.
pub type HookOutcome = crate::process::ProcessOutcome;

/// Runs `command` for `run` and waits at most `timeout`.
pub async fn run_hook(
    command: &str,
    service: &ServiceName,
    node: &AccountId,
    run: &HookRun,
    timeout: Duration,
) -> HookOutcome {
    let action = run.kind.as_str();
    let epoch = run.epoch.to_string();
    let checkpoint = run.checkpoint.map(|c| c.to_string()).unwrap_or_default();
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
        .env("DRCHAIN_NODE", node.to_string());
    run_process(cmd, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{HookKind, LocalRole};

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
            run_hook(&cmd, &service, &node, &run(), t).await,
            HookOutcome::Succeeded
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "on_promote db promoting 7 3|on_promote db promoting 7 3"
        );
        let failed = run_hook("echo nope >&2; exit 3", &service, &node, &run(), t).await;
        match failed {
            HookOutcome::Failed { detail } => {
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
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(outcome, HookOutcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the hook's child survived the kill");
    }
}
