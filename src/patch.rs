//! Partial updates: the fields of a task to change, and nothing else.
//!
//! A [`TaskPatch`] is what [`partial_update`](crate::ElasticsearchTaskStore::partial_update)
//! writes, conditional on a version. Fields left `None` are untouched; `Some(None)` clears a
//! nullable field.
//!
//! ```
//! use es_task_store::{TaskPatch, TaskStatus};
//!
//! let release = TaskPatch {
//!     status: Some(TaskStatus::Idle),
//!     owner_id: Some(None),
//!     retry_at: Some(None),
//!     started_at: Some(None),
//!     ..TaskPatch::default()
//! };
//! assert!(release.validate().is_ok());
//! ```

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::interval::Interval;
use crate::task::{ConcreteTaskInstance, Schedule, TaskStatus};

/// Fields to change in a stored task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPatch {
    /// New status (`should_delete` is refused).
    pub status: Option<TaskStatus>,
    /// New `runAt`.
    pub run_at: Option<DateTime<Utc>>,
    /// New `scheduledAt`.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// New `startedAt` (`Some(None)` clears it).
    pub started_at: Option<Option<DateTime<Utc>>>,
    /// New `retryAt` (`Some(None)` clears it).
    pub retry_at: Option<Option<DateTime<Utc>>>,
    /// New `ownerId` (`Some(None)` clears it).
    pub owner_id: Option<Option<String>>,
    /// New attempt count.
    pub attempts: Option<u32>,
    /// New params.
    pub params: Option<Map<String, Value>>,
    /// New state.
    pub state: Option<Map<String, Value>>,
    /// New schedule (`Some(None)` makes the task one-off).
    pub schedule: Option<Option<Schedule>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New priority.
    pub priority: Option<i32>,
    /// New timeout (`Some(None)` clears it).
    pub timeout_override: Option<Option<Interval>>,
    /// New last error (`Some(None)` clears it).
    pub last_error: Option<Option<String>>,
}

impl TaskPatch {
    /// Refuses values that must never be stored.
    pub fn validate(&self) -> Result<(), Error> {
        use crate::task::{validate_date, validate_keyword, validate_payload};
        if self.status == Some(TaskStatus::ShouldDelete) {
            return Err(Error::invalid_task(
                "status",
                "should_delete is an outcome and is never stored",
            ));
        }
        let dates = [
            ("runAt", self.run_at),
            ("scheduledAt", self.scheduled_at),
            ("startedAt", self.started_at.flatten()),
            ("retryAt", self.retry_at.flatten()),
        ];
        for (field, date) in dates {
            if let Some(date) = date {
                validate_date(field, date)?;
            }
        }
        if let Some(Some(owner)) = &self.owner_id {
            validate_keyword("ownerId", owner)?;
        }
        if let Some(params) = &self.params {
            validate_payload("params", params)?;
        }
        if let Some(state) = &self.state {
            validate_payload("state", state)?;
        }
        if self.attempts.is_some_and(|a| i32::try_from(a).is_err()) {
            return Err(Error::invalid_task("attempts", "is too large"));
        }
        Ok(())
    }

    /// Applies the patch to a task in memory, as the engine applies it to the document.
    pub fn apply_to(&self, task: &mut ConcreteTaskInstance) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut task.status, &self.status);
        set(&mut task.run_at, &self.run_at);
        set(&mut task.scheduled_at, &self.scheduled_at);
        set(&mut task.started_at, &self.started_at);
        set(&mut task.retry_at, &self.retry_at);
        set(&mut task.owner_id, &self.owner_id);
        set(&mut task.attempts, &self.attempts);
        set(&mut task.params, &self.params);
        set(&mut task.state, &self.state);
        set(&mut task.schedule, &self.schedule);
        set(&mut task.enabled, &self.enabled);
        set(&mut task.priority, &self.priority);
        set(&mut task.timeout_override, &self.timeout_override);
        set(&mut task.last_error, &self.last_error);
    }

    /// Whether the patch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
