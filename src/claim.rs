//! Claiming: which tasks a worker may take, and what taking one writes.
//!
//! A task is claimable when it is a task document, enabled, of a registered type, and either
//! idle and due (`runAt <= now`) or leased (`running`/`claiming`) with an expired or missing
//! `retryAt`. Claimable tasks are taken by `priority` (highest first), then `runAt` (oldest
//! first).
//!
//! Claiming a task writes, conditional on the version the claimer read: `status = running`,
//! `ownerId`, `startedAt = now`, `retryAt = now + lease`, `attempts + 1`. Of any number of
//! concurrent claimers, exactly one such write succeeds for a given version; the others see a
//! conflict. So a task is held by at most one owner per lease, and every later write by that
//! owner (completion, failure, renewal, release) is conditional on the version its claim
//! returned: once another owner has taken the task over, those writes fail with
//! [`Error::LeaseLost`] and the stale result is dropped.
//!
//! ```
//! use std::time::Duration;
//! use es_task_store::ClaimRequest;
//!
//! let request = ClaimRequest::new("worker-1", ["email", "report"])
//!     .with_capacity(20)
//!     .with_lease("report", Duration::from_secs(30));
//! assert_eq!(request.lease_for("report"), Duration::from_secs(30));
//! assert_eq!(request.lease_for("email"), Duration::from_secs(300));
//! ```

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::Error;
use crate::patch::TaskPatch;
use crate::task::{ConcreteTaskInstance, TaskId, TaskStatus};

/// Default lease: how long a claim holds a task without renewal.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

/// Default number of tasks one claim may take.
pub const DEFAULT_CAPACITY: usize = 10;

/// Largest capacity of one claim.
pub const MAX_CAPACITY: usize = 10_000;

/// How a store claims tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimStrategy {
    /// Search candidates, then one `_bulk` of conditional updates (no scripts). The default.
    #[default]
    Optimistic,
    /// One `_update_by_query` with a script, then a search for what it claimed (the reference
    /// system's former approach; kept for comparison).
    UpdateByQuery,
}

/// What a worker asks for when it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The claimer; written to `ownerId`.
    pub owner_id: String,
    /// Only these task types are claimed. Empty claims nothing.
    pub task_types: Vec<String>,
    /// At most this many tasks.
    pub capacity: usize,
    /// Lease per task type; types not listed get `default_lease`.
    pub leases: HashMap<String, Duration>,
    /// Lease of types without their own.
    pub default_lease: Duration,
}

impl ClaimRequest {
    /// A request for the given owner and registered types, capacity 10, lease 5 minutes.
    #[must_use]
    pub fn new<I, S>(owner_id: impl Into<String>, task_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            owner_id: owner_id.into(),
            task_types: task_types.into_iter().map(Into::into).collect(),
            capacity: DEFAULT_CAPACITY,
            leases: HashMap::new(),
            default_lease: DEFAULT_LEASE,
        }
    }

    /// Sets the capacity.
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Sets the lease of one task type.
    #[must_use]
    pub fn with_lease(mut self, task_type: impl Into<String>, lease: Duration) -> Self {
        self.leases.insert(task_type.into(), lease);
        self
    }

    /// Sets the lease of types without their own.
    #[must_use]
    pub fn with_default_lease(mut self, lease: Duration) -> Self {
        self.default_lease = lease;
        self
    }

    /// The lease of a task type.
    #[must_use]
    pub fn lease_for(&self, task_type: &str) -> Duration {
        self.leases
            .get(task_type)
            .copied()
            .unwrap_or(self.default_lease)
    }

    /// Checks the request's values.
    pub fn validate(&self) -> Result<(), Error> {
        if self.owner_id.trim().is_empty() {
            return Err(Error::InvalidQuery {
                field: "owner_id",
                reason: "must not be empty".into(),
            });
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return Err(Error::InvalidQuery {
                field: "capacity",
                reason: format!(
                    "must be between 1 and {MAX_CAPACITY}, got {}",
                    self.capacity
                ),
            });
        }
        let leases = std::iter::once(&self.default_lease).chain(self.leases.values());
        for lease in leases {
            if lease.is_zero() || lease_delta(*lease).is_none() {
                return Err(Error::InvalidQuery {
                    field: "lease",
                    reason: format!("must be greater than zero and reasonable, got {lease:?}"),
                });
            }
        }
        Ok(())
    }
}

/// `lease` as a date offset, if it fits.
pub(crate) fn lease_delta(lease: Duration) -> Option<TimeDelta> {
    TimeDelta::from_std(lease)
        .ok()
        .filter(|d| *d <= TimeDelta::days(365))
}

/// What a claim took, and what it met on the way.
#[derive(Debug, Default)]
#[must_use]
pub struct ClaimResult {
    /// The claimed tasks, each with the version its claim wrote; every later write by this
    /// owner must carry that version.
    pub claimed: Vec<ConcreteTaskInstance>,
    /// Candidates another claimer took first, or that changed after the search saw them
    /// (stale search hits): version conflicts. Normal under concurrency, not errors.
    pub conflicts: usize,
    /// Candidates removed between search and claim.
    pub removed: usize,
    /// Candidates that failed for another reason, by task.
    pub errors: Vec<(TaskId, Error)>,
    /// Candidate documents that could not be read as tasks ([`Error::Decode`]), skipped.
    pub skipped: Vec<Error>,
    /// Candidates the searches returned.
    pub candidates: usize,
    /// Engine round trips the claim took.
    pub requests: usize,
}

/// Whether a task may be claimed at `now` by a claimer of `task_types` (the rule the claim
/// query expresses, for checks in memory).
#[must_use]
pub fn is_claimable(
    task: &ConcreteTaskInstance,
    now: DateTime<Utc>,
    task_types: &[String],
) -> bool {
    if !task.enabled || !task_types.contains(&task.task_type) {
        return false;
    }
    match task.status {
        TaskStatus::Idle => task.run_at <= now,
        TaskStatus::Running | TaskStatus::Claiming => task.retry_at.is_none_or(|at| at <= now),
        _ => false,
    }
}

/// The write that claims `task` for `owner_id` at `now`.
#[must_use]
pub fn claim_patch(
    task: &ConcreteTaskInstance,
    owner_id: &str,
    now: DateTime<Utc>,
    lease: TimeDelta,
) -> TaskPatch {
    TaskPatch {
        status: Some(TaskStatus::Running),
        owner_id: Some(Some(owner_id.to_owned())),
        started_at: Some(Some(now)),
        retry_at: Some(Some(crate::outcome::add_clamped(now, lease))),
        attempts: Some(task.attempts.saturating_add(1)),
        ..TaskPatch::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskInstance;

    fn task(
        status: TaskStatus,
        run_at_offset: i64,
        retry_at_offset: Option<i64>,
    ) -> (ConcreteTaskInstance, DateTime<Utc>) {
        let now = Utc::now();
        let mut task = TaskInstance::new("a").into_concrete(now).unwrap();
        task.status = status;
        task.run_at = now + TimeDelta::seconds(run_at_offset);
        task.retry_at = retry_at_offset.map(|s| now + TimeDelta::seconds(s));
        (task, now)
    }

    #[test]
    fn claimable_rules() {
        let types = vec!["a".to_owned()];
        let (t, now) = task(TaskStatus::Idle, -1, None);
        assert!(is_claimable(&t, now, &types));
        let (t, now) = task(TaskStatus::Idle, 10, None);
        assert!(!is_claimable(&t, now, &types), "not yet due");
        let (t, now) = task(TaskStatus::Running, -100, Some(10));
        assert!(!is_claimable(&t, now, &types), "lease still held");
        let (t, now) = task(TaskStatus::Running, -100, Some(-1));
        assert!(is_claimable(&t, now, &types), "lease expired");
        let (t, now) = task(TaskStatus::Claiming, -100, None);
        assert!(
            is_claimable(&t, now, &types),
            "no retryAt is an expired lease"
        );
        let (mut t, now) = task(TaskStatus::Idle, -1, None);
        t.enabled = false;
        assert!(!is_claimable(&t, now, &types), "disabled");
        let (t, now) = task(TaskStatus::Idle, -1, None);
        assert!(
            !is_claimable(&t, now, &["b".to_owned()]),
            "unregistered type"
        );
        let (t, now) = task(TaskStatus::Failed, -1, None);
        assert!(!is_claimable(&t, now, &types), "failed");
    }

    #[test]
    fn claim_patch_takes_the_lease_and_counts_the_attempt() {
        let (mut t, now) = task(TaskStatus::Idle, -1, None);
        t.attempts = 2;
        let patch = claim_patch(&t, "me", now, TimeDelta::seconds(30));
        patch.apply_to(&mut t);
        assert_eq!(t.status, TaskStatus::Running);
        assert_eq!(t.owner_id.as_deref(), Some("me"));
        assert_eq!(t.retry_at, Some(now + TimeDelta::seconds(30)));
        assert_eq!(t.started_at, Some(now));
        assert_eq!(t.attempts, 3);
    }

    #[test]
    fn requests_are_validated() {
        assert!(ClaimRequest::new("", ["a"]).validate().is_err());
        assert!(ClaimRequest::new("o", ["a"])
            .with_capacity(0)
            .validate()
            .is_err());
        assert!(ClaimRequest::new("o", ["a"])
            .with_lease("a", Duration::ZERO)
            .validate()
            .is_err());
        assert!(ClaimRequest::new("o", ["a"]).validate().is_ok());
    }
}
