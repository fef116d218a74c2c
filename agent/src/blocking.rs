//! Blocking work on the write's path to a standby, run on the calling worker thread.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `work` — file I/O of a few syscalls, on the path from a write to a standby showing it
/// — on this thread: the runtime moves its other tasks to another worker meanwhile
/// (`block_in_place`). Handing it to the blocking pool and back instead costs two thread
/// wake-ups, each ~0.1 ms on a VM whose idle vCPUs halt, more than the work itself. Outside a
/// multi-threaded runtime (unit tests) it simply runs. A panic is returned as an error, as
/// the blocking pool would (the replication task goes on).
pub(crate) fn on_this_thread<R>(work: impl FnOnce() -> R) -> Result<R, String> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let work = AssertUnwindSafe(work);
    let caught = if multi_thread {
        tokio::task::block_in_place(|| catch_unwind(work))
    } else {
        catch_unwind(work)
    };
    caught.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".to_owned())
    })
}
