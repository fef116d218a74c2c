//! Running an operator's command (a hook, a snapshot command) as `sh -c`, in a process group
//! of its own, for at most a timeout: one that outlives it is killed with everything it
//! started, so a hung command never holds the agent or leaves orphans behind.

use std::process::Stdio;
use std::time::Duration;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessOutcome {
    /// Exited 0.
    Succeeded,
    /// Exited otherwise (code, or the signal that ended it).
    Failed {
        /// Its exit code, if it exited (not killed by a signal).
        code: Option<i32>,
        /// What it said on stderr (last line), and how it exited.
        detail: String,
    },
    /// Still running at the timeout; killed with its process group.
    TimedOut,
    /// Could not be started.
    NotStarted {
        /// Why.
        detail: String,
    },
}

impl ProcessOutcome {
    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        matches!(self, ProcessOutcome::Succeeded)
    }

    /// A label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ProcessOutcome::Succeeded => "succeeded",
            ProcessOutcome::Failed { .. } => "failed",
            ProcessOutcome::TimedOut => "timed_out",
            ProcessOutcome::NotStarted { .. } => "not_started",
        }
    }
}

impl std::fmt::Display for ProcessOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessOutcome::Succeeded => write!(f, "succeeded"),
            ProcessOutcome::Failed { detail, .. } => write!(f, "failed: {detail}"),
            ProcessOutcome::TimedOut => write!(f, "timed out and was killed"),
            ProcessOutcome::NotStarted { detail } => write!(f, "could not start: {detail}"),
        }
    }
}

/// `sh -c COMMAND NAME ARGS...` with stdin and stdout closed and stderr kept for the outcome.
pub fn shell(command: &str, name: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .arg(name)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd` (made by [`shell`]) and waits at most `timeout`.
pub async fn run(mut cmd: tokio::process::Command, timeout: Duration) -> ProcessOutcome {
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ProcessOutcome::NotStarted {
                detail: e.to_string(),
            }
        }
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => ProcessOutcome::Succeeded,
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("").trim();
            ProcessOutcome::Failed {
                code: out.status.code(),
                detail: format!("{} {last}", out.status).trim().to_owned(),
            }
        }
        Ok(Err(e)) => ProcessOutcome::Failed {
            code: None,
            detail: e.to_string(),
        },
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid).await;
            }
            ProcessOutcome::TimedOut
        }
    }
}

/// Kills the process group `pgid` (the shell and everything it started).
async fn kill_group(pgid: u32) {
    let _ = tokio::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}
