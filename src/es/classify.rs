//! Turning engine answers into [`Error`] variants.
//!
//! This is the only place that looks at HTTP statuses and `error.type` strings, for whole
//! responses and for the items of `_bulk` and `_mget` alike, so one condition always surfaces as
//! one variant.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Error;

/// What the failed request was doing, which decides what a 404 or 409 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `op_type=create`: a 409 means the id is taken.
    Create,
    /// Any other request about one task: a 409 is a version conflict, a 404 a missing task.
    Task,
    /// A request about the index as a whole (search, mapping...).
    Index,
}

/// The request context an error is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub index: &'a str,
    pub id: Option<&'a str>,
    pub op: Op,
}

impl<'a> Context<'a> {
    pub(crate) fn index(index: &'a str) -> Self {
        Self {
            index,
            id: None,
            op: Op::Index,
        }
    }

    pub(crate) fn task(index: &'a str, id: &'a str) -> Self {
        Self {
            index,
            id: Some(id),
            op: Op::Task,
        }
    }

    pub(crate) fn create(index: &'a str, id: &'a str) -> Self {
        Self {
            index,
            id: Some(id),
            op: Op::Create,
        }
    }
}

/// Classifies an error answer: `status`, the `Retry-After` header, and the `error` object (or
/// the whole body when it has none).
pub(crate) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    error: &Value,
    ctx: Context<'_>,
) -> Error {
    let error_type = error_type(error);
    let reason = reason(error);
    let id = || ctx.id.unwrap_or_default().to_owned();
    // A block sent as 503 is one of the engine's retryable blocks ("no master", "state not
    // recovered"): it clears by itself, so it is an overload, not a block to lift.
    if status != 503 && has_type(error, "cluster_block_exception") {
        return Error::Blocked { status, reason };
    }
    // A 404 or 409 is a verdict on the task only when the engine said so in JSON; an HTML page
    // from a proxy or a wrong URL prefix is not.
    let from_engine = error.is_object();
    match (status, error_type.as_str()) {
        (404, "index_not_found_exception") => Error::IndexMissing {
            index: ctx.index.to_owned(),
        },
        (404, _) if from_engine && ctx.op != Op::Index => Error::NotFound { id: id() },
        (409, _) if from_engine && ctx.op == Op::Create => Error::AlreadyExists { id: id() },
        (409, _) if from_engine && ctx.op == Op::Task => Error::Conflict { id: id() },
        (429 | 503, _) => Error::Overloaded {
            status,
            retry_after,
            reason,
        },
        (413, _) => Error::TooLarge { reason },
        (408 | 504, _) => Error::Timeout { reason },
        _ => Error::Engine {
            status,
            error_type,
            reason,
        },
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn error_type(error: &Value) -> String {
    match error {
        Value::Object(map) => map
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
        _ => "unknown".to_owned(),
    }
}

fn reason(error: &Value) -> String {
    match error {
        Value::Object(map) => map
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| truncate(&error.to_string())),
        Value::String(s) => truncate(s),
        Value::Null => "no error details".to_owned(),
        other => truncate(&other.to_string()),
    }
}

/// Whether the error or one of its root causes has this type.
fn has_type(error: &Value, ty: &str) -> bool {
    if error.get("type").and_then(Value::as_str) == Some(ty) {
        return true;
    }
    error
        .get("root_cause")
        .and_then(Value::as_array)
        .is_some_and(|causes| {
            causes
                .iter()
                .any(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        })
}

fn truncate(s: &str) -> String {
    const MAX: usize = 500;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(ty: &str) -> Value {
        json!({"type": ty, "reason": format!("{ty} happened")})
    }

    #[test]
    fn version_conflicts_depend_on_the_operation() {
        let e = err("version_conflict_engine_exception");
        assert!(matches!(
            classify(409, None, &e, Context::create("i", "a")),
            Error::AlreadyExists { id } if id == "a"
        ));
        assert!(matches!(
            classify(409, None, &e, Context::task("i", "a")),
            Error::Conflict { id } if id == "a"
        ));
    }

    #[test]
    fn a_404_page_that_is_not_json_is_not_a_missing_task() {
        let page = Value::String("<html><body>404 Not Found</body></html>".into());
        for ctx in [Context::task("i", "a"), Context::create("i", "a")] {
            assert!(matches!(
                classify(404, None, &page, ctx),
                Error::Engine { status: 404, .. }
            ));
            assert!(matches!(
                classify(409, None, &page, ctx),
                Error::Engine { status: 409, .. }
            ));
        }
    }

    #[test]
    fn missing_index_and_missing_document() {
        assert!(matches!(
            classify(404, None, &err("index_not_found_exception"), Context::task("i", "a")),
            Error::IndexMissing { index } if index == "i"
        ));
        assert!(matches!(
            classify(
                404,
                None,
                &err("document_missing_exception"),
                Context::task("i", "a")
            ),
            Error::NotFound { .. }
        ));
    }

    #[test]
    fn blocks_are_blocked_whatever_the_status() {
        for status in [403, 429] {
            assert!(matches!(
                classify(
                    status,
                    None,
                    &err("cluster_block_exception"),
                    Context::index("i")
                ),
                Error::Blocked { .. }
            ));
        }
        let nested =
            json!({"type": "x", "reason": "r", "root_cause": [err("cluster_block_exception")]});
        assert!(matches!(
            classify(403, None, &nested, Context::index("i")),
            Error::Blocked { .. }
        ));
    }

    #[test]
    fn retryable_blocks_sent_as_503_are_overload() {
        let e = json!({"type": "cluster_block_exception", "reason": "blocked by: [SERVICE_UNAVAILABLE/2/no master];"});
        let e = classify(503, None, &e, Context::index("i"));
        assert!(matches!(e, Error::Overloaded { status: 503, .. }), "{e:?}");
        assert!(e.is_transient());
    }

    #[test]
    fn overload_keeps_retry_after() {
        let e = classify(
            429,
            Some(Duration::from_secs(7)),
            &err("es_rejected_execution_exception"),
            Context::index("i"),
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(e.is_transient());
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("12", now), Some(Duration::from_secs(12)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
