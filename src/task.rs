//! The task model: what a caller schedules ([`TaskInstance`]) and what the store keeps and
//! returns ([`ConcreteTaskInstance`]).
//!
//! Field names follow Kibana Task Manager's document format; see the crate docs for the mapping
//! between Rust fields and document fields.
//!
//! ```
//! use es_task_store::{Interval, TaskInstance};
//! use serde_json::json;
//!
//! let task = TaskInstance::new("report:generate")
//!     .with_id("nightly-report")?
//!     .with_params(json!({ "format": "pdf" }))
//!     .with_interval("1d".parse::<Interval>()?)
//!     .with_scope(["reporting"]);
//! assert_eq!(task.id.as_ref().unwrap().as_str(), "nightly-report");
//! # Ok::<(), es_task_store::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::truncate_to_millis;
use crate::error::Error;
use crate::interval::Interval;
use crate::version::Version;

/// Default claim priority; higher is claimed first.
pub const DEFAULT_PRIORITY: i32 = 50;

/// Longest id in characters.
pub const MAX_ID_CHARS: usize = 256;

/// Longest id in UTF-8 bytes: the engine limits `_id` to 512 bytes and the store prefixes `task:`.
pub const MAX_ID_BYTES: usize = 512 - "task:".len();

/// A task id: 1 to 256 characters (at most 507 UTF-8 bytes), no control characters.
///
/// The document `_id` is `task:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    /// Validates an id.
    ///
    /// ```
    /// use es_task_store::TaskId;
    /// assert!(TaskId::new("send-email-42").is_ok());
    /// assert!(TaskId::new("").is_err());
    /// assert!(TaskId::new("bad\nid").is_err());
    /// ```
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::invalid_task("id", "must not be empty"));
        }
        if id.chars().count() > MAX_ID_CHARS {
            return Err(Error::invalid_task(
                "id",
                format!("must be at most {MAX_ID_CHARS} characters"),
            ));
        }
        if id.len() > MAX_ID_BYTES {
            return Err(Error::invalid_task(
                "id",
                format!("must be at most {MAX_ID_BYTES} bytes in UTF-8"),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(Error::invalid_task(
                "id",
                format!("must not contain control characters: {id:?}"),
            ));
        }
        Ok(Self(id))
    }

    /// A fresh random (UUID v4) id.
    #[must_use]
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document `_id`: `task:<id>`.
    #[must_use]
    pub fn document_id(&self) -> String {
        format!("task:{}", self.0)
    }

    /// The task id of a document `_id` (`task:<id>`), if it has that form.
    pub fn from_document_id(doc_id: &str) -> Result<Self, Error> {
        let id = doc_id.strip_prefix("task:").ok_or_else(|| Error::Decode {
            id: doc_id.to_owned(),
            field: "_id".into(),
            reason: "does not start with `task:`".into(),
        })?;
        Self::new(id).map_err(|e| Error::Decode {
            id: doc_id.to_owned(),
            field: "_id".into(),
            reason: e.to_string(),
        })
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TaskId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

/// Where a task is in its life.
///
/// `idle -> running` (claimed) `-> idle` (recurring success or retry), deleted (one-off success)
/// or `failed` (one-off out of attempts). `claiming` is used by the update-by-query claim strategy
/// and by documents Kibana wrote. `should_delete` is an outcome only and is never written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for its `runAt`.
    Idle,
    /// Being claimed (update-by-query strategy, Kibana).
    Claiming,
    /// Claimed by `ownerId` until `retryAt`.
    Running,
    /// A one-off task that ran out of attempts; kept with its last error.
    Failed,
    /// In-memory outcome only: the run asked for the task to be deleted. Never stored.
    ShouldDelete,
    /// Its type is no longer registered.
    Unrecognized,
    /// Accepted on read (written by Kibana).
    DeadLetter,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Idle,
        TaskStatus::Claiming,
        TaskStatus::Running,
        TaskStatus::Failed,
        TaskStatus::ShouldDelete,
        TaskStatus::Unrecognized,
        TaskStatus::DeadLetter,
    ];

    /// The string stored in `task.status`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Idle => "idle",
            TaskStatus::Claiming => "claiming",
            TaskStatus::Running => "running",
            TaskStatus::Failed => "failed",
            TaskStatus::ShouldDelete => "should_delete",
            TaskStatus::Unrecognized => "unrecognized",
            TaskStatus::DeadLetter => "dead_letter",
        }
    }

    /// Whether a task in this status holds (or held) a lease.
    #[must_use]
    pub fn is_leased(self) -> bool {
        matches!(self, TaskStatus::Running | TaskStatus::Claiming)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// How a recurring task repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Run every `interval`, keeping the phase of the first `runAt`.
    pub interval: Interval,
}

impl Schedule {
    /// Every `interval`.
    #[must_use]
    pub fn every(interval: Interval) -> Self {
        Self { interval }
    }
}

/// A task as a caller schedules it. Unset fields get their defaults when stored: a random id,
/// `scheduledAt`/`runAt` = now (the store's clock), `enabled`, priority 50.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInstance {
    /// Caller-chosen id, or `None` for a random UUID.
    pub id: Option<TaskId>,
    /// Which registered definition runs it. Must not be empty.
    pub task_type: String,
    /// When it was scheduled; `None` for now.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Not run before this; `None` for now.
    pub run_at: Option<DateTime<Utc>>,
    /// A recurring task has a schedule.
    pub schedule: Option<Schedule>,
    /// Caller input; must be a JSON object (`null` is taken as `{}`), nested at most 100 deep.
    pub params: Value,
    /// Initial state; must be a JSON object (`null` is taken as `{}`), nested at most 100 deep.
    pub state: Value,
    /// Groups tasks for queries.
    pub scope: Vec<String>,
    /// Who scheduled it.
    pub user: Option<String>,
    /// W3C trace context of the scheduler.
    pub traceparent: Option<String>,
    /// Disabled tasks are never claimed.
    pub enabled: bool,
    /// Higher is claimed first.
    pub priority: i32,
    /// Per-task run timeout (one-off tasks).
    pub timeout_override: Option<Interval>,
}

// Note: empty `user` and `traceparent` strings are stored as given but read back as `None`,
// as Kibana writes `""` for "none".

impl TaskInstance {
    /// A task of the given type with every other field at its default.
    #[must_use]
    pub fn new(task_type: impl Into<String>) -> Self {
        Self {
            id: None,
            task_type: task_type.into(),
            scheduled_at: None,
            run_at: None,
            schedule: None,
            params: Value::Object(Map::new()),
            state: Value::Object(Map::new()),
            scope: Vec::new(),
            user: None,
            traceparent: None,
            enabled: true,
            priority: DEFAULT_PRIORITY,
            timeout_override: None,
        }
    }

    /// Sets the id (validated).
    pub fn with_id(mut self, id: impl Into<String>) -> Result<Self, Error> {
        self.id = Some(TaskId::new(id)?);
        Ok(self)
    }

    /// Sets the params (must be a JSON object; checked when stored).
    #[must_use]
    pub fn with_params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }

    /// Sets the initial state (must be a JSON object; checked when stored).
    #[must_use]
    pub fn with_state(mut self, state: Value) -> Self {
        self.state = state;
        self
    }

    /// Makes the task recurring.
    #[must_use]
    pub fn with_interval(mut self, interval: Interval) -> Self {
        self.schedule = Some(Schedule::every(interval));
        self
    }

    /// Sets `runAt`.
    #[must_use]
    pub fn with_run_at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }

    /// Sets the scope.
    #[must_use]
    pub fn with_scope<I, S>(mut self, scope: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scope = scope.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Enables or disables the task.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the user.
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the traceparent.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Sets the per-task timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Interval) -> Self {
        self.timeout_override = Some(timeout);
        self
    }

    /// The stored form of this task at `now`: defaults filled in, status `idle`, no attempts.
    /// Fails with [`Error::InvalidTask`] naming the field when a rule is broken.
    pub fn into_concrete(self, now: DateTime<Utc>) -> Result<ConcreteTaskInstance, Error> {
        let params = into_object("params", self.params)?;
        let state = into_object("state", self.state)?;
        let task = ConcreteTaskInstance {
            id: self.id.unwrap_or_else(TaskId::random),
            task_type: self.task_type,
            // Stored dates have millisecond precision; keep what is returned equal to what is
            // read back.
            scheduled_at: truncate_to_millis(self.scheduled_at.unwrap_or(now)),
            run_at: truncate_to_millis(self.run_at.unwrap_or(now)),
            started_at: None,
            retry_at: None,
            schedule: self.schedule,
            params,
            state,
            scope: self.scope,
            user: self.user,
            traceparent: self.traceparent,
            owner_id: None,
            status: TaskStatus::Idle,
            attempts: 0,
            enabled: self.enabled,
            priority: self.priority,
            timeout_override: self.timeout_override,
            last_error: None,
            version: None,
        };
        task.validate()?;
        Ok(task)
    }
}

/// Longest keyword value (task type, scope entry, owner id), in bytes. The engine refuses
/// indexed terms over 32,766 bytes; anything near that is a mistake.
pub const MAX_KEYWORD_BYTES: usize = 1_000;

/// Deepest nesting of `params` and `state`: the JSON reader refuses to read back more than
/// 128 levels, so a deeper payload would be stored but unreadable.
pub const MAX_PAYLOAD_DEPTH: usize = 100;

fn validate_task_type(task_type: &str) -> Result<(), Error> {
    if task_type.trim().is_empty() {
        return Err(Error::invalid_task("taskType", "must not be empty"));
    }
    validate_keyword("taskType", task_type)
}

pub(crate) fn validate_keyword(field: &'static str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_KEYWORD_BYTES {
        return Err(Error::invalid_task(
            field,
            format!(
                "must be at most {MAX_KEYWORD_BYTES} bytes, got {}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Dates are stored with a four-digit year.
pub(crate) fn validate_date(field: &'static str, t: DateTime<Utc>) -> Result<(), Error> {
    use chrono::Datelike;
    if (0..=9999).contains(&t.year()) {
        Ok(())
    } else {
        Err(Error::invalid_task(
            field,
            format!("{t} is outside the storable years 0000 to 9999"),
        ))
    }
}

/// `params` or `state` nested deeper than can be read back.
pub(crate) fn validate_payload(field: &'static str, map: &Map<String, Value>) -> Result<(), Error> {
    // Iterative, so a hostile payload cannot overflow the stack here.
    let mut stack: Vec<(&Value, usize)> = map.values().map(|v| (v, 2)).collect();
    while let Some((value, depth)) = stack.pop() {
        if depth > MAX_PAYLOAD_DEPTH {
            return Err(Error::invalid_task(
                field,
                format!("is nested deeper than {MAX_PAYLOAD_DEPTH} levels"),
            ));
        }
        match value {
            Value::Object(o) => stack.extend(o.values().map(|v| (v, depth + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

fn into_object(field: &'static str, value: Value) -> Result<Map<String, Value>, Error> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(Error::invalid_task(
            field,
            format!("must be a JSON object, got {}", json_kind(&other)),
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A stored task, as the store returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConcreteTaskInstance {
    /// Task id (document `_id` is `task:<id>`).
    pub id: TaskId,
    /// Which registered definition runs it.
    pub task_type: String,
    /// When it was (re)scheduled.
    pub scheduled_at: DateTime<Utc>,
    /// Not run before this.
    pub run_at: DateTime<Utc>,
    /// Set while running.
    pub started_at: Option<DateTime<Utc>>,
    /// End of the current lease while `claiming`/`running`.
    pub retry_at: Option<DateTime<Utc>>,
    /// Recurring tasks have one.
    pub schedule: Option<Schedule>,
    /// Caller input.
    pub params: Map<String, Value>,
    /// What the previous run returned (`{}` when none).
    pub state: Map<String, Value>,
    /// Groups tasks for queries.
    pub scope: Vec<String>,
    /// Who scheduled it.
    pub user: Option<String>,
    /// W3C trace context of the scheduler.
    pub traceparent: Option<String>,
    /// Worker that holds the current lease.
    pub owner_id: Option<String>,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// Disabled tasks are never claimed.
    pub enabled: bool,
    /// Higher is claimed first.
    pub priority: i32,
    /// Per-task run timeout.
    pub timeout_override: Option<Interval>,
    /// The error of the last failed run, kept on a task that ended `failed` (stored as
    /// `task.lastError`, in `_source` only). Cleared by a success.
    pub last_error: Option<String>,
    /// The stored state this value was read from; `None` for a task not yet stored.
    pub version: Option<Version>,
}

impl ConcreteTaskInstance {
    /// Whether the task repeats.
    #[must_use]
    pub fn is_recurring(&self) -> bool {
        self.schedule.is_some()
    }

    /// Checks the rules a stored task must satisfy before it is written.
    pub fn validate(&self) -> Result<(), Error> {
        validate_task_type(&self.task_type)?;
        for scope in &self.scope {
            validate_keyword("scope", scope)?;
        }
        if let Some(owner) = &self.owner_id {
            validate_keyword("ownerId", owner)?;
        }
        validate_date("scheduledAt", self.scheduled_at)?;
        validate_date("runAt", self.run_at)?;
        if let Some(t) = self.started_at {
            validate_date("startedAt", t)?;
        }
        if let Some(t) = self.retry_at {
            validate_date("retryAt", t)?;
        }
        validate_payload("params", &self.params)?;
        validate_payload("state", &self.state)?;
        if i32::try_from(self.attempts).is_err() {
            return Err(Error::invalid_task(
                "attempts",
                format!("{} is too large", self.attempts),
            ));
        }
        if self.status == TaskStatus::ShouldDelete {
            return Err(Error::invalid_task(
                "status",
                "should_delete is an outcome and is never stored",
            ));
        }
        Ok(())
    }

    /// The version, or [`Error::InvalidTask`] for a task that was never stored.
    pub fn require_version(&self) -> Result<Version, Error> {
        let version = self.version.ok_or_else(|| {
            Error::invalid_task(
                "version",
                format!(
                    "task {} has no version: read it from the store before updating it",
                    self.id
                ),
            )
        })?;
        version.check()?;
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_checked() {
        assert!(TaskId::new("a").is_ok());
        assert!(TaskId::new("x".repeat(256)).is_ok());
        assert!(TaskId::new("x".repeat(257)).is_err());
        // 200 four-byte characters: within the character limit, over the byte limit.
        assert!(TaskId::new("😀".repeat(200)).is_err());
        assert!(TaskId::new("tab\there").is_err());
        assert!(TaskId::new("").is_err());
        assert_eq!(TaskId::new("abc").unwrap().document_id(), "task:abc");
        assert_eq!(
            TaskId::from_document_id("task:abc").unwrap().as_str(),
            "abc"
        );
        assert!(TaskId::from_document_id("alert:abc").is_err());
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                json!(status.as_str())
            );
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn params_must_be_an_object() {
        let err = TaskInstance::new("t")
            .with_params(json!([1, 2]))
            .into_concrete(Utc::now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidTask {
                    field: "params",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = TaskInstance::new("t")
            .with_state(json!("x"))
            .into_concrete(Utc::now())
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidTask { field: "state", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn unstorable_values_are_rejected_naming_the_field() {
        use chrono::TimeZone;
        let far = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
        let err = TaskInstance::new("t")
            .with_run_at(far)
            .into_concrete(Utc::now())
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidTask { field: "runAt", .. }),
            "{err:?}"
        );
        let mut deep = json!(1);
        for _ in 0..150 {
            deep = json!([deep]);
        }
        let err = TaskInstance::new("t")
            .with_params(json!({ "x": deep }))
            .into_concrete(Utc::now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidTask {
                    field: "params",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = TaskInstance::new("x".repeat(2000))
            .into_concrete(Utc::now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidTask {
                    field: "taskType",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = TaskInstance::new("t")
            .with_scope(["y".repeat(2000)])
            .into_concrete(Utc::now())
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidTask { field: "scope", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn user_dates_are_truncated_to_stored_precision() {
        let t = Utc::now();
        let task = TaskInstance::new("t")
            .with_run_at(t)
            .into_concrete(t)
            .unwrap();
        assert_eq!(task.run_at, truncate_to_millis(t));
    }

    #[test]
    fn a_hand_built_out_of_range_version_is_refused() {
        let mut task = TaskInstance::new("t").into_concrete(Utc::now()).unwrap();
        task.version = Some(Version::new(-2, 0));
        assert!(matches!(
            task.require_version(),
            Err(Error::InvalidVersion { .. })
        ));
    }

    #[test]
    fn empty_task_type_is_rejected() {
        let err = TaskInstance::new(" ")
            .into_concrete(Utc::now())
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidTask {
                field: "taskType",
                ..
            }
        ));
    }

    #[test]
    fn defaults_are_filled_in() {
        let now = truncate_to_millis(Utc::now());
        let task = TaskInstance::new("t").into_concrete(now).unwrap();
        assert_eq!(task.run_at, now);
        assert_eq!(task.scheduled_at, now);
        assert_eq!(task.status, TaskStatus::Idle);
        assert_eq!(task.priority, DEFAULT_PRIORITY);
        assert!(task.enabled);
        assert!(task.version.is_none());
    }
}
