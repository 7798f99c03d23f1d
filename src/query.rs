//! What to fetch: filters, order and paging over stored tasks.
//!
//! A [`TaskQuery`] is plain data; the store translates it into a search. Pages are linked with
//! an opaque [`Cursor`] (`search_after`), so walking a large index visits each task exactly once
//! as long as the tasks are not changed meanwhile.
//!
//! ```
//! use es_task_store::{SortDirection, SortField, TaskQuery, TaskStatus};
//!
//! let query = TaskQuery::new()
//!     .with_status(TaskStatus::Idle)
//!     .with_task_type("report")
//!     .sort_by(SortField::RunAt, SortDirection::Asc)
//!     .with_size(500);
//! assert_eq!(query.size, 500);
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::task::{ConcreteTaskInstance, TaskStatus};

/// Default page size of a fetch.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Largest page size (the engine's default `index.max_result_window`).
pub const MAX_PAGE_SIZE: usize = 10_000;

/// A field tasks can be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    /// `task.runAt`
    RunAt,
    /// `task.scheduledAt`
    ScheduledAt,
    /// `task.retryAt`
    RetryAt,
    /// `task.priority` (absent counts as the default 50)
    Priority,
    /// `updated_at`
    UpdatedAt,
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDirection {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// Where the next page starts: the sort values of the last task of the previous page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(pub(crate) Vec<Value>);

/// Filters, order and paging for [`fetch`](crate::ElasticsearchTaskStore::fetch).
///
/// Each filter narrows the result; within a list filter any value matches.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskQuery {
    /// Any of these statuses (all when empty).
    pub statuses: Vec<TaskStatus>,
    /// Any of these task types (all when empty).
    pub task_types: Vec<String>,
    /// Tasks with any of these scopes (all when empty).
    pub scope: Vec<String>,
    /// Tasks whose lease is held by this owner.
    pub owner_id: Option<String>,
    /// `runAt >= from`.
    pub run_at_from: Option<DateTime<Utc>>,
    /// `runAt < to`.
    pub run_at_to: Option<DateTime<Utc>>,
    /// Order; `runAt` ascending when empty. Ties are broken in a stable order.
    pub sort: Vec<(SortField, SortDirection)>,
    /// Page size, 1 to 10,000 (default 100).
    pub size: usize,
    /// Continue after this cursor.
    pub search_after: Option<Cursor>,
}

impl Default for TaskQuery {
    fn default() -> Self {
        Self {
            statuses: Vec::new(),
            task_types: Vec::new(),
            scope: Vec::new(),
            owner_id: None,
            run_at_from: None,
            run_at_to: None,
            sort: Vec::new(),
            size: DEFAULT_PAGE_SIZE,
            search_after: None,
        }
    }
}

impl TaskQuery {
    /// Every task, by `runAt`, 100 per page.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a status to match.
    #[must_use]
    pub fn with_status(mut self, status: TaskStatus) -> Self {
        self.statuses.push(status);
        self
    }

    /// Adds a task type to match.
    #[must_use]
    pub fn with_task_type(mut self, task_type: impl Into<String>) -> Self {
        self.task_types.push(task_type.into());
        self
    }

    /// Adds a scope to match.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope.push(scope.into());
        self
    }

    /// Only tasks held by this owner.
    #[must_use]
    pub fn with_owner(mut self, owner_id: impl Into<String>) -> Self {
        self.owner_id = Some(owner_id.into());
        self
    }

    /// Only tasks with `from <= runAt < to` (either bound optional).
    #[must_use]
    pub fn with_run_at_between(
        mut self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Self {
        self.run_at_from = from;
        self.run_at_to = to;
        self
    }

    /// Adds a sort key.
    #[must_use]
    pub fn sort_by(mut self, field: SortField, direction: SortDirection) -> Self {
        self.sort.push((field, direction));
        self
    }

    /// Sets the page size.
    #[must_use]
    pub fn with_size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// Continues after a page's cursor.
    #[must_use]
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.search_after = Some(cursor);
        self
    }

    /// Checks the query's ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=MAX_PAGE_SIZE).contains(&self.size) {
            return Err(Error::InvalidQuery {
                field: "size",
                reason: format!("must be between 1 and {MAX_PAGE_SIZE}, got {}", self.size),
            });
        }
        if let (Some(from), Some(to)) = (self.run_at_from, self.run_at_to) {
            if from > to {
                return Err(Error::InvalidQuery {
                    field: "run_at",
                    reason: format!("range start {from} is after its end {to}"),
                });
            }
        }
        Ok(())
    }
}

/// One page of a fetch.
#[derive(Debug)]
#[must_use]
pub struct FetchPage {
    /// The tasks, in the query's order.
    pub tasks: Vec<ConcreteTaskInstance>,
    /// Documents on this page that could not be read as tasks (each an
    /// [`Error::Decode`] naming the document and field). They never fail the page.
    pub skipped: Vec<Error>,
    /// Where the next page starts; `None` when this page was the last.
    pub next: Option<Cursor>,
}

/// Counts over the whole index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskStats {
    /// All task documents.
    pub total: u64,
    /// Count per status name.
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// Count per task type.
    pub by_type: std::collections::BTreeMap<String, u64>,
    /// Idle, enabled tasks whose `runAt` has passed (by the store's clock): work waiting.
    pub overdue: u64,
    /// The earliest `runAt` among the overdue tasks.
    pub oldest_overdue_run_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_bounded() {
        assert!(TaskQuery::new().with_size(0).validate().is_err());
        assert!(TaskQuery::new().with_size(10_001).validate().is_err());
        assert!(TaskQuery::new().with_size(10_000).validate().is_ok());
    }

    #[test]
    fn inverted_run_at_range_is_rejected() {
        let now = Utc::now();
        let q = TaskQuery::new()
            .with_run_at_between(Some(now), Some(now - chrono::TimeDelta::seconds(1)));
        assert!(matches!(
            q.validate(),
            Err(Error::InvalidQuery {
                field: "run_at",
                ..
            })
        ));
    }
}
