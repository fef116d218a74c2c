//! Health checks of the protected service on this node: TCP connect, HTTP GET, a command, or
//! none. A check that does not answer within its timeout has failed; the node reports itself
//! failed only after `failures` consecutive failed checks, so one slow check does not cause a
//! failover.

use std::time::Duration;

use drchain_support::Health;

use super::config::{CheckKind, HealthCheckConfig};
use crate::process::ProcessOutcome;

/// One check, not counting consecutive failures.
pub async fn check_once(config: &HealthCheckConfig, default_address: Option<&str>) -> Health {
    let timeout = Duration::from_millis(config.timeout_ms);
    let attempt = async {
        match config.kind {
            CheckKind::None => Health::Healthy,
            CheckKind::Tcp => {
                let Some(address) = config.address.as_deref().or(default_address) else {
                    return Health::Failed;
                };
                match tokio::net::TcpStream::connect(address).await {
                    Ok(_) => Health::Healthy,
                    Err(_) => Health::Failed,
                }
            }
            CheckKind::Http => match config.url.as_deref() {
                Some(url) => match crate::http::get(url).await {
                    Ok((status, _)) if status.is_success() => Health::Healthy,
                    _ => Health::Failed,
                },
                None => Health::Failed,
            },
            // Bounded by its own timeout (below), which also kills what it started.
            CheckKind::Command => Health::Failed,
        }
    };
    if config.kind == CheckKind::Command {
        return command_check(config.command.as_deref(), timeout).await;
    }
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Health::Failed)
}

/// Runs a check command in a process group of its own, killed with all it started at the
/// timeout: exit 0 is healthy, 2 degraded, anything else failed.
async fn command_check(command: Option<&str>, timeout: Duration) -> Health {
    let Some(command) = command else {
        return Health::Failed;
    };
    let check = crate::process::shell(command, "drchain-check", &[]);
    match crate::process::run(check, timeout).await {
        ProcessOutcome::Succeeded => Health::Healthy,
        ProcessOutcome::Failed { code: Some(2), .. } => Health::Degraded,
        _ => Health::Failed,
    }
}

/// Turns single results into the reported health: failed only after `failures` in a row.
#[derive(Debug, Clone)]
pub struct Debounce {
    failures: u32,
    in_a_row: u32,
    last_good: Health,
}

impl Debounce {
    /// Reports failure after `failures` consecutive failed checks.
    pub fn new(failures: u32) -> Self {
        Self {
            failures: failures.max(1),
            in_a_row: 0,
            last_good: Health::Healthy,
        }
    }

    /// The health to report after a check that returned `result`.
    pub fn feed(&mut self, result: Health) -> Health {
        if result == Health::Failed {
            self.in_a_row = self.in_a_row.saturating_add(1);
            if self.in_a_row >= self.failures {
                return Health::Failed;
            }
            // Not yet: keep reporting what the last good check said (a blip is not a failure).
            return self.last_good;
        }
        self.in_a_row = 0;
        self.last_good = result;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(address: Option<String>) -> HealthCheckConfig {
        HealthCheckConfig {
            address,
            ..HealthCheckConfig::default()
        }
    }

    #[tokio::test]
    async fn tcp_checks_follow_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        assert_eq!(
            check_once(&tcp(None), Some(&address)).await,
            Health::Healthy
        );
        assert_eq!(
            check_once(&tcp(Some(address.clone())), None).await,
            Health::Healthy
        );
        drop(listener);
        assert_eq!(check_once(&tcp(None), Some(&address)).await, Health::Failed);
        assert_eq!(check_once(&tcp(None), None).await, Health::Failed);
    }

    #[tokio::test]
    async fn command_checks_map_exit_codes_and_time_out() {
        let cmd = |c: &str, timeout_ms| HealthCheckConfig {
            kind: CheckKind::Command,
            command: Some(c.into()),
            timeout_ms,
            ..HealthCheckConfig::default()
        };
        assert_eq!(
            check_once(&cmd("exit 0", 1000), None).await,
            Health::Healthy
        );
        assert_eq!(
            check_once(&cmd("exit 2", 1000), None).await,
            Health::Degraded
        );
        assert_eq!(check_once(&cmd("exit 1", 1000), None).await, Health::Failed);
        assert_eq!(check_once(&cmd("sleep 5", 100), None).await, Health::Failed);
    }

    /// A check command that hangs is killed at its timeout with everything it started: a
    /// hung check run every interval must not pile up processes on the node.
    #[tokio::test]
    async fn a_hung_check_command_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let command = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let config = HealthCheckConfig {
            kind: CheckKind::Command,
            command: Some(command),
            timeout_ms: 300,
            ..HealthCheckConfig::default()
        };
        assert_eq!(check_once(&config, None).await, Health::Failed);
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let pid = pid.trim();
        // Killed by the time the check returns, or a moment later (reaping is asynchronous).
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.contains(") Z "))
        };
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(), "the check's child {pid} outlived the check");
    }

    #[test]
    fn failure_is_reported_only_after_enough_in_a_row() {
        let mut d = Debounce::new(2);
        assert_eq!(d.feed(Health::Failed), Health::Healthy);
        assert_eq!(d.feed(Health::Healthy), Health::Healthy);
        assert_eq!(d.feed(Health::Failed), Health::Healthy);
        assert_eq!(d.feed(Health::Failed), Health::Failed);
        assert_eq!(d.feed(Health::Degraded), Health::Degraded);
    }
}
