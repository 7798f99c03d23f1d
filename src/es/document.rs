//! The document codec: a task <-> its Elasticsearch document.
//!
//! The layout is Kibana's saved-object envelope, so an index can be shared with or migrated
//! from Kibana Task Manager:
//!
//! ```text
//! _id: "task:<id>"
//! { "type": "task",
//!   "task": { "taskType": ..., "runAt": "2030-01-01T00:00:00.000Z", "params": "{\"a\":1}", ... },
//!   "references": [],
//!   "updated_at": "2030-01-01T00:00:00.000Z" }
//! ```
//!
//! `params` and `state` are stored as JSON strings, dates as RFC 3339 UTC with milliseconds and a
//! `Z`. Reading is strict where a wrong guess would corrupt (a date without an offset is an error,
//! never read as local or UTC time) and lenient where Kibana's own documents vary (missing
//! `enabled` means true, missing `priority` means 50, an empty `traceparent` means none).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::interval::Interval;
use crate::patch::TaskPatch;
use crate::task::{ConcreteTaskInstance, Schedule, TaskId, TaskStatus, DEFAULT_PRIORITY};
use crate::version::Version;

/// The saved-object type of task documents.
pub const DOCUMENT_TYPE: &str = "task";

/// Formats a date the way every stored date is written.
#[must_use]
pub fn format_date(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `task` object of a document, borrowed from the task and serialized directly (no
/// intermediate JSON tree: this runs for every task scheduled or updated).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskFields<'a> {
    task_type: &'a str,
    scheduled_at: Date,
    run_at: Date,
    started_at: Option<Date>,
    retry_at: Option<Date>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<ScheduleFields>,
    params: String,
    state: String,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    scope: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    owner_id: Option<&'a str>,
    status: &'static str,
    attempts: u32,
    enabled: bool,
    priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_override: Option<Interval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
}

#[derive(Serialize)]
struct ScheduleFields {
    interval: Interval,
}

/// The saved-object envelope.
#[derive(Serialize)]
struct DocumentFields<'a> {
    #[serde(rename = "type")]
    doc_type: &'static str,
    task: TaskFields<'a>,
    references: [(); 0],
    updated_at: Date,
}

/// A date in the stored form.
struct Date(DateTime<Utc>);

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_date(self.0))
    }
}

fn task_fields(task: &ConcreteTaskInstance) -> TaskFields<'_> {
    TaskFields {
        task_type: &task.task_type,
        scheduled_at: Date(task.scheduled_at),
        run_at: Date(task.run_at),
        started_at: task.started_at.map(Date),
        retry_at: task.retry_at.map(Date),
        schedule: task.schedule.map(|s| ScheduleFields {
            interval: s.interval,
        }),
        params: object_string(&task.params),
        state: object_string(&task.state),
        scope: &task.scope,
        user: task.user.as_deref(),
        traceparent: task.traceparent.as_deref(),
        owner_id: task.owner_id.as_deref(),
        status: task.status.as_str(),
        attempts: task.attempts,
        enabled: task.enabled,
        priority: task.priority,
        timeout_override: task.timeout_override,
        last_error: task.last_error.as_deref(),
    }
}

fn document_fields(task: &ConcreteTaskInstance, now: DateTime<Utc>) -> DocumentFields<'_> {
    DocumentFields {
        doc_type: DOCUMENT_TYPE,
        task: task_fields(task),
        references: [],
        updated_at: Date(now),
    }
}

/// The `task` object of a document (without the envelope).
#[must_use]
pub fn encode_task(task: &ConcreteTaskInstance) -> Value {
    serde_json::to_value(task_fields(task)).unwrap_or(Value::Null)
}

/// The full document source of a task, stamped `updated_at = now`.
#[must_use]
pub fn encode_document(task: &ConcreteTaskInstance, now: DateTime<Utc>) -> Value {
    serde_json::to_value(document_fields(task, now)).unwrap_or(Value::Null)
}

/// Appends the document source of a task, as JSON text, to `buf`.
pub fn write_document(buf: &mut Vec<u8>, task: &ConcreteTaskInstance, now: DateTime<Utc>) {
    // Serializing strings, numbers and maps of JSON values into a Vec cannot fail.
    let _ = serde_json::to_writer(buf, &document_fields(task, now));
}

fn object_string(map: &Map<String, Value>) -> String {
    // Serializing a map of JSON values cannot fail.
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}

/// The `doc` of a partial update: the changed `task` fields and `updated_at`.
pub fn encode_patch(patch: &TaskPatch, now: DateTime<Utc>) -> Value {
    let mut task = Map::new();
    let date = |t: DateTime<Utc>| Value::String(format_date(t));
    let opt_date = |t: Option<DateTime<Utc>>| t.map_or(Value::Null, date);
    if let Some(status) = patch.status {
        task.insert("status".into(), json!(status.as_str()));
    }
    if let Some(t) = patch.run_at {
        task.insert("runAt".into(), date(t));
    }
    if let Some(t) = patch.scheduled_at {
        task.insert("scheduledAt".into(), date(t));
    }
    if let Some(t) = patch.started_at {
        task.insert("startedAt".into(), opt_date(t));
    }
    if let Some(t) = patch.retry_at {
        task.insert("retryAt".into(), opt_date(t));
    }
    if let Some(owner) = &patch.owner_id {
        task.insert(
            "ownerId".into(),
            owner.clone().map_or(Value::Null, Value::String),
        );
    }
    if let Some(attempts) = patch.attempts {
        task.insert("attempts".into(), json!(attempts));
    }
    if let Some(params) = &patch.params {
        task.insert(
            "params".into(),
            json!(Value::Object(params.clone()).to_string()),
        );
    }
    if let Some(state) = &patch.state {
        task.insert(
            "state".into(),
            json!(Value::Object(state.clone()).to_string()),
        );
    }
    if let Some(schedule) = &patch.schedule {
        task.insert(
            "schedule".into(),
            schedule.map_or(
                Value::Null,
                |s| json!({ "interval": s.interval.to_string() }),
            ),
        );
    }
    if let Some(enabled) = patch.enabled {
        task.insert("enabled".into(), json!(enabled));
    }
    if let Some(priority) = patch.priority {
        task.insert("priority".into(), json!(priority));
    }
    if let Some(timeout) = &patch.timeout_override {
        task.insert(
            "timeoutOverride".into(),
            timeout.map_or(Value::Null, |t| json!(t.to_string())),
        );
    }
    if let Some(error) = &patch.last_error {
        task.insert(
            "lastError".into(),
            error.clone().map_or(Value::Null, Value::String),
        );
    }
    json!({ "task": task, "updated_at": format_date(now) })
}

/// Reads a task from a document's `_id`, `_seq_no`, `_primary_term` and `_source`.
pub fn decode_document(
    doc_id: &str,
    version: Option<Version>,
    source: &Value,
) -> Result<ConcreteTaskInstance, Error> {
    let id = TaskId::from_document_id(doc_id)?;
    let root = source
        .as_object()
        .ok_or_else(|| decode_error(doc_id, "_source", "is not an object"))?;
    match root.get("type").and_then(Value::as_str) {
        Some(DOCUMENT_TYPE) => {}
        other => {
            return Err(decode_error(
                doc_id,
                "type",
                format!("must be \"task\", found {other:?}"),
            ))
        }
    }
    let task = root
        .get("task")
        .and_then(Value::as_object)
        .ok_or_else(|| decode_error(doc_id, "task", "is missing or not an object"))?;
    let fields = Fields { doc_id, task };
    Ok(ConcreteTaskInstance {
        id,
        task_type: fields.required_str("taskType")?.to_owned(),
        scheduled_at: fields.required_date("scheduledAt")?,
        run_at: fields.required_date("runAt")?,
        started_at: fields.optional_date("startedAt")?,
        retry_at: fields.optional_date("retryAt")?,
        schedule: fields.schedule()?,
        params: fields.json_object("params")?,
        state: fields.json_object("state")?,
        scope: fields.scope()?,
        user: fields.optional_str("user")?,
        traceparent: fields.optional_str("traceparent")?,
        owner_id: fields.optional_str("ownerId")?,
        status: fields.status()?,
        attempts: fields.attempts()?,
        enabled: fields.optional_bool("enabled")?.unwrap_or(true),
        priority: fields.priority()?,
        timeout_override: fields.optional_interval("timeoutOverride")?,
        last_error: fields.optional_str("lastError")?,
        version,
    })
}

fn decode_error(doc_id: &str, field: &str, reason: impl Into<String>) -> Error {
    Error::Decode {
        id: doc_id.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Field readers over the `task` object that name the field in every error.
struct Fields<'a> {
    doc_id: &'a str,
    task: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn error(&self, field: &str, reason: impl Into<String>) -> Error {
        decode_error(self.doc_id, &format!("task.{field}"), reason)
    }

    /// The value, treating JSON null as absent.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.task.get(field).filter(|v| !v.is_null())
    }

    fn required_str(&self, field: &str) -> Result<&'a str, Error> {
        match self.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(Value::String(_)) => Err(self.error(field, "is empty")),
            Some(other) => Err(self.error(field, format!("is not a string: {other}"))),
            None => Err(self.error(field, "is missing")),
        }
    }

    fn optional_str(&self, field: &str) -> Result<Option<String>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.error(field, format!("is not a string: {other}"))),
        }
    }

    fn required_date(&self, field: &str) -> Result<DateTime<Utc>, Error> {
        self.optional_date(field)?
            .ok_or_else(|| self.error(field, "is missing"))
    }

    fn optional_date(&self, field: &str) -> Result<Option<DateTime<Utc>>, Error> {
        let Some(text) = self.optional_str(field)? else {
            return Ok(None);
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                self.error(
                    field,
                    format!("{text:?} is not an RFC 3339 date with an offset (e.g. 2030-01-01T00:00:00.000Z)"),
                )
            })
    }

    fn optional_bool(&self, field: &str) -> Result<Option<bool>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(field, format!("is not a boolean: {other}"))),
        }
    }

    fn optional_interval(&self, field: &str) -> Result<Option<Interval>, Error> {
        let Some(text) = self.optional_str(field)? else {
            return Ok(None);
        };
        text.parse()
            .map(Some)
            .map_err(|e: Error| self.error(field, e.to_string()))
    }

    fn schedule(&self) -> Result<Option<Schedule>, Error> {
        let Some(schedule) = self.get("schedule") else {
            return Ok(None);
        };
        let interval = schedule
            .get("interval")
            .filter(|v| !v.is_null())
            .ok_or_else(|| self.error("schedule.interval", "is missing"))?;
        let text = interval.as_str().ok_or_else(|| {
            self.error("schedule.interval", format!("is not a string: {interval}"))
        })?;
        let interval = text
            .parse()
            .map_err(|e: Error| self.error("schedule.interval", e.to_string()))?;
        Ok(Some(Schedule { interval }))
    }

    /// `params` and `state`: a JSON string holding an object (Kibana's layout). An object stored
    /// directly, an empty string or an absent field are accepted too.
    fn json_object(&self, field: &str) -> Result<Map<String, Value>, Error> {
        match self.get(field) {
            None => Ok(Map::new()),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(Map::new()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err(self.error(field, "does not hold a JSON object")),
                Err(e) => Err(self.error(field, format!("is not valid JSON: {e}"))),
            },
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(other) => Err(self.error(field, format!("is not a JSON string: {other}"))),
        }
    }

    fn scope(&self) -> Result<Vec<String>, Error> {
        match self.get("scope") {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| self.error("scope", format!("holds a non-string: {item}")))
                })
                .collect(),
            Some(other) => Err(self.error("scope", format!("is not a list of strings: {other}"))),
        }
    }

    fn status(&self) -> Result<TaskStatus, Error> {
        let text = self.required_str("status")?;
        text.parse().map_err(|e: String| self.error("status", e))
    }

    fn attempts(&self) -> Result<u32, Error> {
        match self.get("attempts") {
            None => Ok(0),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.error("attempts", format!("is not a count: {v}"))),
        }
    }

    fn priority(&self) -> Result<i32, Error> {
        match self.get("priority") {
            None => Ok(DEFAULT_PRIORITY),
            Some(v) => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| self.error("priority", format!("is not an integer: {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskInstance;
    use chrono::TimeZone;

    fn sample() -> ConcreteTaskInstance {
        let now = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        let mut task = TaskInstance::new("report")
            .with_id("r1")
            .unwrap()
            .with_params(json!({"to": "a@example.com", "n": 3}))
            .with_state(json!({"runs": 1}))
            .with_interval("5m".parse().unwrap())
            .with_scope(["reporting"])
            .with_user("elastic")
            .with_traceparent("00-abc-def-01")
            .with_timeout("30s".parse().unwrap())
            .into_concrete(now)
            .unwrap();
        task.owner_id = Some("worker-1".into());
        task.retry_at = Some(now + chrono::TimeDelta::minutes(5));
        task.started_at = Some(now);
        task.status = TaskStatus::Running;
        task.attempts = 2;
        task.last_error = Some("boom".into());
        task.version = Some(Version::new(7, 1));
        task
    }

    #[test]
    fn round_trips_every_field() {
        let task = sample();
        let doc = encode_document(&task, Utc::now());
        let back = decode_document("task:r1", task.version, &doc).unwrap();
        assert_eq!(back, task);
    }

    #[test]
    fn writes_kibana_layout() {
        let task = sample();
        let now = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        let doc = encode_document(&task, now);
        assert_eq!(doc["type"], "task");
        assert_eq!(doc["references"], json!([]));
        assert_eq!(doc["updated_at"], "2030-01-02T03:04:05.000Z");
        assert_eq!(doc["task"]["runAt"], "2030-01-02T03:04:05.000Z");
        assert_eq!(doc["task"]["schedule"], json!({"interval": "5m"}));
        let params: Value = serde_json::from_str(doc["task"]["params"].as_str().unwrap()).unwrap();
        assert_eq!(params, json!({"to": "a@example.com", "n": 3}));
        assert_eq!(doc["task"]["status"], "running");
    }

    #[test]
    fn date_without_offset_is_an_error_naming_the_field() {
        let mut doc = encode_document(&sample(), Utc::now());
        doc["task"]["runAt"] = json!("2030-01-02T03:04:05.000");
        match decode_document("task:r1", None, &doc) {
            Err(Error::Decode { id, field, .. }) => {
                assert_eq!(id, "task:r1");
                assert_eq!(field, "task.runAt");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn bad_stored_interval_is_an_error_naming_the_field() {
        let mut doc = encode_document(&sample(), Utc::now());
        doc["task"]["schedule"]["interval"] = json!("PT1M");
        let err = decode_document("task:r1", None, &doc).unwrap_err();
        assert!(
            matches!(&err, Error::Decode { field, .. } if field == "task.schedule.interval"),
            "{err:?}"
        );
    }

    #[test]
    fn offsets_other_than_z_are_converted_to_utc() {
        let mut doc = encode_document(&sample(), Utc::now());
        doc["task"]["runAt"] = json!("2030-01-02T05:04:05.000+02:00");
        let task = decode_document("task:r1", None, &doc).unwrap();
        assert_eq!(
            task.run_at,
            Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap()
        );
    }

    #[test]
    fn params_that_are_not_an_object_are_an_error() {
        let mut doc = encode_document(&sample(), Utc::now());
        doc["task"]["params"] = json!("[1,2]");
        let err = decode_document("task:r1", None, &doc).unwrap_err();
        assert!(matches!(&err, Error::Decode { field, .. } if field == "task.params"));
        doc["task"]["params"] = json!("{not json");
        let err = decode_document("task:r1", None, &doc).unwrap_err();
        assert!(matches!(&err, Error::Decode { field, .. } if field == "task.params"));
    }

    #[test]
    fn wrong_document_type_is_an_error() {
        let mut doc = encode_document(&sample(), Utc::now());
        doc["type"] = json!("alert");
        assert!(decode_document("task:r1", None, &doc).is_err());
    }
}
