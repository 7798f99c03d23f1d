//! After a run: what is written back, by rule.
//!
//! - Success of a one-off task: it is deleted.
//! - Success of a recurring task: `idle`, `attempts = 0`, lease fields cleared, the new state,
//!   and `runAt` = the first `previous runAt + k * interval` strictly after now. The phase is
//!   kept (a task due at 12:00 every 5 minutes that starts at 12:00:03 next runs at 12:05:00)
//!   and a task that could not run for a while runs once, not once per missed interval.
//!   A run may instead name its own next `runAt` or a new schedule.
//! - Failure: if recurring, or `attempts < max_attempts`, back to `idle` with `runAt` = now +
//!   backoff, state kept. Otherwise (a one-off out of attempts) `failed`, kept in the index
//!   with its last error, never silently deleted.
//! - Release (a claim given back unrun): `idle`, the claim's attempt uncounted.
//!
//! These are pure functions; the store writes their result conditional on the claim's version.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use es_task_store::outcome::next_run_at;
//!
//! let run_at = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
//! let every = "5m".parse()?;
//! let started = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 3).unwrap();
//! assert_eq!(next_run_at(run_at, every, started), Utc.with_ymd_and_hms(2030, 1, 1, 12, 5, 0).unwrap());
//! let after_outage = Utc.with_ymd_and_hms(2030, 1, 1, 14, 0, 0).unwrap();
//! assert_eq!(next_run_at(run_at, every, after_outage), Utc.with_ymd_and_hms(2030, 1, 1, 14, 5, 0).unwrap());
//! # Ok::<(), es_task_store::Error>(())
//! ```

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};

use crate::interval::Interval;
use crate::patch::TaskPatch;
use crate::task::{ConcreteTaskInstance, Schedule, TaskStatus};

/// Default number of attempts before a one-off task is `failed`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// How failed runs are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts a one-off task gets before it is `failed` (default 3).
    pub max_attempts: u32,
    /// Delay before the first retry (default 30 s).
    pub first_delay: Duration,
    /// Longest delay (default 1 h).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            first_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the delay after the `attempts`-th failed attempt:
    /// `first_delay * 2^(attempts - 1)`, capped at `max_delay`.
    #[must_use]
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        self.first_delay
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The delay after the `attempts`-th failed attempt, with full jitter between the first
    /// delay and the ceiling: `jitter` in `[0, 1]` picks the point. The first retry waits
    /// exactly `first_delay`.
    #[must_use]
    pub fn delay(&self, attempts: u32, jitter: f64) -> Duration {
        let low = self.first_delay.min(self.max_delay);
        let high = self.ceiling(attempts);
        let span = high.saturating_sub(low);
        low + span.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What a successful run asks for next, instead of the task's own schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextRun {
    /// Run again at this instant (also turns a one-off task into a rescheduled one).
    At(DateTime<Utc>),
    /// Repeat on this schedule from now on.
    Schedule(Schedule),
}

/// The write that ends a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Delete the task.
    Delete,
    /// Update these fields.
    Update(Box<TaskPatch>),
}

/// The latest instant a stored date can hold (year 9999).
fn latest_storable() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t + delta`, but never past the latest storable date.
pub(crate) fn add_clamped(t: DateTime<Utc>, delta: TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(delta)
        .filter(|sum| *sum <= latest_storable())
        .unwrap_or_else(latest_storable)
}

/// The first `run_at + k * interval` (k >= 1) strictly after `now` (never past year 9999).
#[must_use]
pub fn next_run_at(run_at: DateTime<Utc>, interval: Interval, now: DateTime<Utc>) -> DateTime<Utc> {
    let step = interval.as_time_delta();
    let next = add_clamped(run_at, step);
    if next > now {
        return next;
    }
    let behind = (now - run_at).num_milliseconds();
    let k = behind / step.num_milliseconds() + 1;
    add_clamped(
        run_at,
        TimeDelta::milliseconds(k.saturating_mul(step.num_milliseconds())),
    )
}

/// The write after a successful run at `now` that returned `state`.
#[must_use]
pub fn on_success(
    task: &ConcreteTaskInstance,
    now: DateTime<Utc>,
    state: Map<String, Value>,
    next: Option<NextRun>,
) -> Completion {
    let (run_at, schedule) = match (next, task.schedule) {
        (Some(NextRun::At(at)), schedule) => (at, schedule),
        (Some(NextRun::Schedule(schedule)), _) => {
            (next_run_at(now, schedule.interval, now), Some(schedule))
        }
        (None, Some(schedule)) => (
            next_run_at(task.run_at, schedule.interval, now),
            Some(schedule),
        ),
        (None, None) => return Completion::Delete,
    };
    Completion::Update(Box::new(TaskPatch {
        status: Some(TaskStatus::Idle),
        run_at: Some(run_at),
        schedule: (schedule != task.schedule).then_some(schedule),
        state: Some(state),
        attempts: Some(0),
        last_error: task.last_error.as_ref().map(|_| None),
        ..released()
    }))
}

/// The write after a failed run at `now`. `jitter` in `[0, 1]` spreads the retries.
#[must_use]
pub fn on_failure(
    task: &ConcreteTaskInstance,
    now: DateTime<Utc>,
    error: &str,
    policy: &RetryPolicy,
    jitter: f64,
) -> TaskPatch {
    if task.is_recurring() || task.attempts < policy.max_attempts {
        let delay = policy.delay(task.attempts.max(1), jitter);
        let delay = TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
        TaskPatch {
            status: Some(TaskStatus::Idle),
            run_at: Some(add_clamped(now, delay)),
            ..released()
        }
    } else {
        TaskPatch {
            status: Some(TaskStatus::Failed),
            last_error: Some(Some(error.to_owned())),
            ..released()
        }
    }
}

/// The write that gives a claimed task back unrun: the claim's attempt is not counted.
#[must_use]
pub fn on_release(task: &ConcreteTaskInstance) -> TaskPatch {
    TaskPatch {
        status: Some(TaskStatus::Idle),
        attempts: Some(task.attempts.saturating_sub(1)),
        ..released()
    }
}

/// The write that extends a lease to `now + lease`.
#[must_use]
pub fn on_renewal(now: DateTime<Utc>, lease: TimeDelta) -> TaskPatch {
    TaskPatch {
        retry_at: Some(Some(add_clamped(now, lease))),
        ..TaskPatch::default()
    }
}

/// Lease fields cleared.
fn released() -> TaskPatch {
    TaskPatch {
        owner_id: Some(None),
        started_at: Some(None),
        retry_at: Some(None),
        ..TaskPatch::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskInstance;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, h, m, s).unwrap()
    }

    fn recurring(run_at: DateTime<Utc>) -> ConcreteTaskInstance {
        TaskInstance::new("r")
            .with_run_at(run_at)
            .with_interval("5m".parse().unwrap())
            .into_concrete(run_at)
            .unwrap()
    }

    #[test]
    fn recurring_success_keeps_the_phase() {
        let task = recurring(at(12, 0, 0));
        let Completion::Update(patch) = on_success(&task, at(12, 0, 3), Map::new(), None) else {
            panic!()
        };
        assert_eq!(patch.run_at, Some(at(12, 5, 0)));
        assert_eq!(patch.attempts, Some(0));
        assert_eq!(patch.status, Some(TaskStatus::Idle));
        assert_eq!(patch.owner_id, Some(None));
    }

    #[test]
    fn recurring_success_after_an_outage_runs_once_then_keeps_the_phase() {
        let task = recurring(at(12, 0, 0));
        assert_eq!(
            next_run_at(task.run_at, "5m".parse().unwrap(), at(14, 0, 0)),
            at(14, 5, 0)
        );
        assert_eq!(
            next_run_at(task.run_at, "5m".parse().unwrap(), at(14, 0, 1)),
            at(14, 5, 0)
        );
        assert_eq!(
            next_run_at(task.run_at, "5m".parse().unwrap(), at(13, 59, 59)),
            at(14, 0, 0)
        );
    }

    #[test]
    fn date_arithmetic_never_overflows_or_leaves_the_storable_range() {
        let far = DateTime::<Utc>::MAX_UTC - TimeDelta::days(10);
        let mut task = recurring(at(12, 0, 0));
        task.run_at = far;
        assert!(next_run_at(far, "36500d".parse().unwrap(), far) <= latest_storable());
        let policy = RetryPolicy {
            first_delay: Duration::from_secs(10u64.pow(13)),
            max_delay: Duration::from_secs(10u64.pow(13)),
            ..RetryPolicy::default()
        };
        let patch = on_failure(&task, at(12, 0, 0), "x", &policy, 1.0);
        assert_eq!(patch.run_at, Some(latest_storable()));
    }

    #[test]
    fn one_off_success_deletes() {
        let task = TaskInstance::new("o").into_concrete(at(12, 0, 0)).unwrap();
        assert_eq!(
            on_success(&task, at(12, 0, 1), Map::new(), None),
            Completion::Delete
        );
        let Completion::Update(patch) = on_success(
            &task,
            at(12, 0, 1),
            Map::new(),
            Some(NextRun::At(at(13, 0, 0))),
        ) else {
            panic!()
        };
        assert_eq!(patch.run_at, Some(at(13, 0, 0)));
    }

    #[test]
    fn success_stores_the_new_state() {
        let task = recurring(at(12, 0, 0));
        let state = json!({"n": 1}).as_object().unwrap().clone();
        let Completion::Update(patch) = on_success(&task, at(12, 0, 1), state.clone(), None) else {
            panic!()
        };
        assert_eq!(patch.state, Some(state));
    }

    #[test]
    fn failures_retry_until_one_off_tasks_run_out_of_attempts() {
        let policy = RetryPolicy::default();
        let mut task = TaskInstance::new("o").into_concrete(at(12, 0, 0)).unwrap();
        task.attempts = 1;
        let patch = on_failure(&task, at(12, 0, 0), "boom", &policy, 0.5);
        assert_eq!(patch.status, Some(TaskStatus::Idle));
        assert_eq!(patch.run_at, Some(at(12, 0, 30)), "first retry after 30 s");
        task.attempts = 3;
        let patch = on_failure(&task, at(12, 0, 0), "boom", &policy, 0.5);
        assert_eq!(patch.status, Some(TaskStatus::Failed));
        assert_eq!(patch.last_error, Some(Some("boom".into())));
        let mut recurring = recurring(at(12, 0, 0));
        recurring.attempts = 10;
        assert_eq!(
            on_failure(&recurring, at(12, 0, 0), "boom", &policy, 0.0).status,
            Some(TaskStatus::Idle)
        );
    }

    #[test]
    fn backoff_is_exponential_jittered_and_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, 1.0), Duration::from_secs(30));
        assert_eq!(policy.ceiling(2), Duration::from_secs(60));
        assert_eq!(policy.ceiling(3), Duration::from_secs(120));
        assert_eq!(policy.ceiling(50), Duration::from_secs(3600));
        assert_eq!(policy.delay(3, 0.0), Duration::from_secs(30));
        assert_eq!(policy.delay(3, 1.0), Duration::from_secs(120));
        assert!(policy.delay(3, 0.5) > Duration::from_secs(30));
    }

    #[test]
    fn release_uncounts_the_claims_attempt() {
        let mut task = recurring(at(12, 0, 0));
        task.attempts = 2;
        assert_eq!(on_release(&task).attempts, Some(1));
        task.attempts = 0;
        assert_eq!(on_release(&task).attempts, Some(0));
    }
}
