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
use crate::task::{Schedule, TaskStatus};

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
}

impl TaskPatch {
    /// Refuses values that must never be stored.
    pub fn validate(&self) -> Result<(), Error> {
        if self.status == Some(TaskStatus::ShouldDelete) {
            return Err(Error::invalid_task(
                "status",
                "should_delete is an outcome and is never stored",
            ));
        }
        Ok(())
    }

    /// Whether the patch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
