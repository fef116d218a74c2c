//! Ctrl-C or SIGTERM ends a run early but cleanly: a flag is set, the run notices it at its
//! next pause and returns an error, and dropping the cluster kills its processes, unmounts its
//! file systems and removes its namespaces (an abrupt exit would leave all three behind).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

static REQUESTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Sets the flag on SIGINT and SIGTERM from now on.
pub fn install() -> Result<()> {
    let flag = REQUESTED.get_or_init(Arc::default);
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(())
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Fails if a stop was asked for.
pub fn check() -> Result<()> {
    if requested() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `duration`, waking early to fail if a stop is asked for meanwhile.
pub fn pause(duration: Duration) -> Result<()> {
    let until = Instant::now() + duration;
    loop {
        check()?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
