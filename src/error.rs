//! The one error type of the crate.
//!
//! Every variant is something a caller can act on: a [`Error::Conflict`] means somebody else
//! changed the task first (re-read it, do not retry blindly), [`Error::Overloaded`] means back
//! off (honouring `retry_after`), [`Error::Blocked`] means an operator must lift an index block,
//! and so on. Engine responses are classified into these variants in one place, so the same
//! condition always surfaces as the same variant.

use std::time::Duration;

/// Shorthand for `Result<T, es_task_store::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A difference between the mapping the store needs and the one an existing index has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMismatch {
    /// Dotted path of the field, e.g. `task.runAt`, or `task.dynamic` for the dynamic setting.
    pub field: String,
    /// What the store's mapping file says.
    pub expected: String,
    /// What the index has (`missing` when absent).
    pub actual: String,
}

impl std::fmt::Display for FieldMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (expected {}, found {})",
            self.field, self.expected, self.actual
        )
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A conditional write lost: the task changed (or was removed) since the version the write
    /// carried. Somebody else's write won; re-read before deciding what to do.
    #[error("version conflict on task {id}: it changed since the version this write carried")]
    Conflict {
        /// Task id.
        id: String,
    },

    /// The task does not exist.
    #[error("task {id} not found")]
    NotFound {
        /// Task id.
        id: String,
    },

    /// A create found a task with the same id.
    #[error("task {id} already exists")]
    AlreadyExists {
        /// Task id.
        id: String,
    },

    /// A task handed to the store breaks a rule of the task model.
    #[error("invalid task: field `{field}` {reason}")]
    InvalidTask {
        /// The offending field, by its document name (e.g. `params`, `id`, `taskType`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A query or request handed to the store is out of range.
    #[error("invalid query: `{field}` {reason}")]
    InvalidQuery {
        /// The offending parameter (e.g. `size`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A string is not an interval of the grammar `<whole number > 0><s|m|h|d>`.
    #[error("invalid interval {input:?}: {reason}")]
    InvalidInterval {
        /// The rejected input, verbatim.
        input: String,
        /// Why.
        reason: &'static str,
    },

    /// A string is not a version token (base64 of `[seq_no,primary_term]`).
    #[error("invalid version token {input:?}: {reason}")]
    InvalidVersion {
        /// The rejected input, verbatim.
        input: String,
        /// Why.
        reason: &'static str,
    },

    /// A stored document cannot be read as a task.
    #[error("cannot decode document {id}: field `{field}` {reason}")]
    Decode {
        /// Document `_id`.
        id: String,
        /// Dotted path of the field, e.g. `task.runAt`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The task index (or alias) does not exist. Create it with `ensure_index`.
    #[error("index {index} does not exist (or is not an alias); create it with ensure_index")]
    IndexMissing {
        /// Index or alias name.
        index: String,
    },

    /// An existing index's mapping differs from the one the store needs. Nothing was changed.
    #[error("index {index} has an incompatible mapping: {}", join(mismatches))]
    MappingMismatch {
        /// Index or alias name.
        index: String,
        /// Every difference found.
        mismatches: Vec<FieldMismatch>,
    },

    /// A write was refused because of an index or cluster block (read-only index, flood-stage
    /// disk watermark...). Persistent until an operator lifts it, even when sent as HTTP 429.
    #[error("blocked by the engine ({status}): {reason}")]
    Blocked {
        /// HTTP status the engine answered with (403 or 429).
        status: u16,
        /// The engine's reason.
        reason: String,
    },

    /// The engine is too busy (HTTP 429) or unavailable (HTTP 503). Back off and retry.
    #[error("engine overloaded ({status}){}: {reason}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    Overloaded {
        /// 429 or 503.
        status: u16,
        /// The `Retry-After` the engine asked for, if it gave one.
        retry_after: Option<Duration>,
        /// The engine's reason.
        reason: String,
    },

    /// A request was too large for the engine (HTTP 413). Send smaller batches.
    #[error("request too large for the engine (413): {reason}")]
    TooLarge {
        /// The engine's reason.
        reason: String,
    },

    /// The engine did not answer in time (client timeout, HTTP 408 or 504).
    #[error("request timed out: {reason}")]
    Timeout {
        /// What timed out.
        reason: String,
    },

    /// The request did not reach the engine, or the connection failed.
    #[error("transport error: {source}")]
    Transport {
        /// The underlying client error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The engine answered with a body this crate cannot read (truncated, not JSON, wrong shape).
    #[error("malformed engine response (HTTP {status}): {reason}")]
    MalformedResponse {
        /// HTTP status of the response.
        status: u16,
        /// What is wrong with it.
        reason: String,
    },

    /// Any other error the engine reported.
    #[error("engine error {status} {error_type}: {reason}")]
    Engine {
        /// HTTP status.
        status: u16,
        /// The engine's `error.type`, e.g. `mapper_parsing_exception`.
        error_type: String,
        /// The engine's `error.reason`.
        reason: String,
    },

    /// The store's configuration is invalid (a bad URL, an unreadable CA certificate...).
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The configuration key or environment variable.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The task was claimed by another owner since this worker's claim: its lease was lost.
    /// Whatever the run produced is dropped.
    #[error("lease on task {id} lost: another owner holds it now")]
    LeaseLost {
        /// Task id.
        id: String,
    },

    /// The task was removed while it was claimed; it is not re-created.
    #[error("task {id} was removed while claimed")]
    Removed {
        /// Task id.
        id: String,
    },
}

fn join(mismatches: &[FieldMismatch]) -> String {
    mismatches
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// Whether retrying the same request later may succeed (overload, timeout, connection
    /// failure). Conflicts, blocks and bad input are not transient.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Overloaded { .. } | Error::Timeout { .. } | Error::Transport { .. }
        )
    }

    /// The delay the engine asked for, when it gave one.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Overloaded { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The same error again, for reporting one failure of a batch on each of its items.
    /// (A transport error's source is kept as its message.)
    pub(crate) fn replicate(&self) -> Error {
        match self {
            Error::Conflict { id } => Error::Conflict { id: id.clone() },
            Error::NotFound { id } => Error::NotFound { id: id.clone() },
            Error::AlreadyExists { id } => Error::AlreadyExists { id: id.clone() },
            Error::InvalidTask { field, reason } => Error::InvalidTask {
                field,
                reason: reason.clone(),
            },
            Error::InvalidQuery { field, reason } => Error::InvalidQuery {
                field,
                reason: reason.clone(),
            },
            Error::InvalidInterval { input, reason } => Error::InvalidInterval {
                input: input.clone(),
                reason,
            },
            Error::InvalidVersion { input, reason } => Error::InvalidVersion {
                input: input.clone(),
                reason,
            },
            Error::Decode { id, field, reason } => Error::Decode {
                id: id.clone(),
                field: field.clone(),
                reason: reason.clone(),
            },
            Error::IndexMissing { index } => Error::IndexMissing {
                index: index.clone(),
            },
            Error::MappingMismatch { index, mismatches } => Error::MappingMismatch {
                index: index.clone(),
                mismatches: mismatches.clone(),
            },
            Error::Blocked { status, reason } => Error::Blocked {
                status: *status,
                reason: reason.clone(),
            },
            Error::Overloaded {
                status,
                retry_after,
                reason,
            } => Error::Overloaded {
                status: *status,
                retry_after: *retry_after,
                reason: reason.clone(),
            },
            Error::TooLarge { reason } => Error::TooLarge {
                reason: reason.clone(),
            },
            Error::Timeout { reason } => Error::Timeout {
                reason: reason.clone(),
            },
            Error::Transport { source } => Error::Transport {
                source: source.to_string().into(),
            },
            Error::MalformedResponse { status, reason } => Error::MalformedResponse {
                status: *status,
                reason: reason.clone(),
            },
            Error::Engine {
                status,
                error_type,
                reason,
            } => Error::Engine {
                status: *status,
                error_type: error_type.clone(),
                reason: reason.clone(),
            },
            Error::Config { key, reason } => Error::Config {
                key: key.clone(),
                reason: reason.clone(),
            },
            Error::LeaseLost { id } => Error::LeaseLost { id: id.clone() },
            Error::Removed { id } => Error::Removed { id: id.clone() },
        }
    }

    pub(crate) fn invalid_task(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidTask {
            field,
            reason: reason.into(),
        }
    }
}
