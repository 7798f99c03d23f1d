//! # es-task-store
//!
//! A store for scheduled background tasks in Elasticsearch (or OpenSearch), in the document
//! format of Kibana Task Manager, safe under any number of concurrent workers.
//!
//! Each task is one document in one index. Its version is the document's `_seq_no` and
//! `_primary_term`, and every update is conditional on it: when two writers race, exactly one
//! wins and the other gets [`Error::Conflict`], never a silent overwrite.
//!
//! ## A tour
//!
//! ```no_run
//! use es_task_store::{ElasticsearchTaskStore, Error, Interval, TaskInstance, TaskQuery, TaskStatus};
//! use serde_json::json;
//!
//! # async fn tour() -> es_task_store::Result<()> {
//! // ELASTICSEARCH_URL, credentials and the index name come from the environment.
//! let store = ElasticsearchTaskStore::from_env()?;
//! store.ensure_index().await?; // creates the index, or verifies its mapping
//!
//! // A one-off task, and a recurring one with a fixed id that is safe to schedule on every start.
//! let email = store
//!     .schedule(TaskInstance::new("email").with_params(json!({ "to": "a@example.com" })))
//!     .await?;
//! let cleanup = TaskInstance::new("cleanup")
//!     .with_id("nightly-cleanup")?
//!     .with_interval("1d".parse::<Interval>()?);
//! store.ensure_scheduled(cleanup).await?;
//!
//! // Conditional updates: the second write with the same version loses.
//! let mut task = store.get(&email.id).await?;
//! task.priority = 80;
//! let mut stale = task.clone();
//! store.update(&task).await?;
//! stale.priority = 10;
//! assert!(matches!(store.update(&stale).await, Err(Error::Conflict { .. })));
//!
//! // Queries page with a cursor.
//! let mut query = TaskQuery::new().with_status(TaskStatus::Idle).with_size(500);
//! loop {
//!     let page = store.fetch(&query).await?;
//!     for task in &page.tasks {
//!         println!("{} {} {}", task.id, task.task_type, task.run_at);
//!     }
//!     match page.next {
//!         Some(cursor) => query = query.after(cursor),
//!         None => break,
//!     }
//! }
//!
//! store.remove(&email.id).await?; // removing twice is fine
//! println!("{:?}", store.stats().await?);
//! # Ok(()) }
//! ```
//!
//! ## Modules
//!
//! The task model and its rules have no HTTP in them: [`task`], [`interval`], [`version`],
//! [`patch`], [`query`], [`clock`], [`error`]. The Elasticsearch adapter lives in [`es`]: the
//! store, its configuration, the document codec and the mapping.
//!
//! ## Document format
//!
//! Documents are Kibana saved objects (`_id` `task:<id>`, `{type, task, references,
//! updated_at}`), with `params` and `state` stored as JSON strings; see [`es::document`]. The
//! mapping is `mappings/task-index.json`; see [`es::mapping`].

#![warn(missing_docs)]

// The README's examples are compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod claim;
pub mod clock;
pub mod error;
pub mod es;
pub mod interval;
pub mod outcome;
pub mod patch;
pub mod query;
pub mod task;
pub mod version;
pub mod worker;

pub use claim::{ClaimRequest, ClaimResult, ClaimStrategy};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, FieldMismatch, Result};
pub use es::config::{Auth, Refresh, Secret, StoreBuilder};
pub use es::store::{ElasticsearchTaskStore, IndexStatus};
pub use interval::{Interval, IntervalUnit};
pub use outcome::{Completion, NextRun, RetryPolicy};
pub use patch::TaskPatch;
pub use query::{Cursor, FetchPage, SortDirection, SortField, TaskQuery, TaskStats};
pub use task::{ConcreteTaskInstance, Schedule, TaskId, TaskInstance, TaskStatus};
pub use version::Version;
