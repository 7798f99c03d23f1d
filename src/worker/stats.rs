//! Worker counters, readable while the worker runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Live counters of a worker (shared; read them with [`WorkerCounters::snapshot`]).
#[derive(Debug)]
pub struct WorkerCounters {
    /// Claim round trips in microseconds (1 µs to 10 min, 2 significant digits).
    claim_latency: Mutex<Histogram<u64>>,
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

impl Default for WorkerCounters {
    fn default() -> Self {
        Self {
            // The bounds are constants that hdrhistogram accepts.
            claim_latency: Mutex::new(
                Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds"),
            ),
            claimed: AtomicU64::default(),
            succeeded: AtomicU64::default(),
            failed: AtomicU64::default(),
            retried: AtomicU64::default(),
            timed_out: AtomicU64::default(),
            lease_lost: AtomicU64::default(),
            conflicts: AtomicU64::default(),
            released: AtomicU64::default(),
            claim_errors: AtomicU64::default(),
            write_errors: AtomicU64::default(),
        }
    }
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
    /// Claims made (successful ones).
    pub claims: u64,
    /// Median time of a claim (search and conditional bulk).
    pub claim_latency_p50: Duration,
    /// 99th percentile time of a claim.
    pub claim_latency_p99: Duration,
}

impl WorkerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_claim(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency().saturating_record(micros.max(1));
    }

    fn latency(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        self.claim_latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters now.
    pub fn snapshot(&self) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let latency = self.latency();
        WorkerStats {
            claims: latency.len(),
            claim_latency_p50: Duration::from_micros(latency.value_at_quantile(0.5)),
            claim_latency_p99: Duration::from_micros(latency.value_at_quantile(0.99)),
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
