//! Worker counters, readable while the worker runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a worker (shared; read them with [`WorkerCounters::snapshot`]).
#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub(crate) claimed: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) claim_errors: AtomicU64,
    pub(crate) write_errors: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Tasks claimed.
    pub claimed: u64,
    /// Runs that succeeded and were written back.
    pub succeeded: u64,
    /// One-off tasks that ended `failed` (out of attempts, or a fatal error).
    pub failed: u64,
    /// Failed runs scheduled for a retry (timeouts included).
    pub retried: u64,
    /// Runs cancelled by their timeout.
    pub timed_out: u64,
    /// Runs whose lease was taken over or whose task was removed; their results were dropped.
    pub lease_lost: u64,
    /// Claim conflicts with other claimers (normal under concurrency).
    pub conflicts: u64,
    /// Claims given back unrun (shutdown).
    pub released: u64,
    /// Claims that failed (engine overloaded, unreachable...); each was followed by a backoff.
    pub claim_errors: u64,
    /// Outcome writes that failed for another reason than a lost lease; the task is claimed
    /// again when its lease runs out.
    pub write_errors: u64,
}

impl WorkerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            claimed: get(&self.claimed),
            succeeded: get(&self.succeeded),
            failed: get(&self.failed),
            retried: get(&self.retried),
            timed_out: get(&self.timed_out),
            lease_lost: get(&self.lease_lost),
            conflicts: get(&self.conflicts),
            released: get(&self.released),
            claim_errors: get(&self.claim_errors),
            write_errors: get(&self.write_errors),
        }
    }
}
