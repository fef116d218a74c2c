//! Blocking work on the write's path to a standby, run on the calling worker thread.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Files a service's listing may have for its work on a write's path to count as small.
/// Taking what changed costs ~0.4 µs per listed file, building the push ~0.15 and applying
/// from the prepared copy ~0.3 (docs/benchmarks.md, 1,000 files): at this many, ~0.28 ms on
/// the active and ~0.15 ms on a standby.
pub(crate) const SMALL_FILES: usize = 500;
/// Bytes of changed files that work may read or write to count as small.
pub(crate) const SMALL_BYTES: u64 = 64 * 1024;
/// Changed files that work may read or write to count as small.
pub(crate) const SMALL_CHANGED_FILES: usize = 8;
/// Chunks of those files an apply may look up to count as small: the active's manifest says
/// how a file is cut, and chunks of a byte each would make 64 KiB tens of thousands of
/// look-ups.
pub(crate) const SMALL_CHUNKS: usize = 64;

/// How long work takes, as far as the caller can tell before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// A few small files' worth (see [`SMALL_FILES`], [`SMALL_BYTES`],
    /// [`SMALL_CHANGED_FILES`], [`SMALL_CHUNKS`]): a fraction of a millisecond.
    Small,
    /// Anything else, or unknown.
    Large,
}

impl Work {
    /// `Small` if `small`.
    pub(crate) fn small_if(small: bool) -> Self {
        if small {
            Self::Small
        } else {
            Self::Large
        }
    }
}

/// Runs `work` — file I/O on the path from a write to a standby showing it — on this thread.
/// [`Work::Small`] simply runs: the runtime's other tasks on this worker wait the fraction of
/// a millisecond it takes. Anything larger runs while the runtime moves its other tasks to
/// another worker (`block_in_place`), which costs that hand-over — a thread woken to take
/// the worker's place — on every call: on the 2-vCPU VM of docs/benchmarks.md a 4 KiB write
/// reached a standby sooner with its small work run directly in 14 of 21 runs alternated with
/// the hand-off (by 0.16 ms at the median). Handing work to the blocking pool and back
/// instead costs two thread wake-ups, each ~0.1 ms on a VM whose idle vCPUs halt, more than
/// the work itself. Outside a multi-threaded runtime (unit tests) it simply runs. A panic is
/// returned as an error, as the blocking pool would (the replication task goes on).
pub(crate) fn on_this_thread<R>(size: Work, work: impl FnOnce() -> R) -> Result<R, String> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let work = AssertUnwindSafe(work);
    let caught = if multi_thread && size == Work::Large {
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
