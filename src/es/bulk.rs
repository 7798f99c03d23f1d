//! `_bulk` request bodies and their per-item answers.
//!
//! A body is built as newline-delimited JSON in one buffer; every action targets the index of
//! the request path, so lines carry only `_id` and the version condition. The answer has one
//! item per action, in order, each turned into a `Result` by the same classification as whole
//! responses.

use serde::Serialize;
use serde_json::{json, Value};

use chrono::{DateTime, Utc};

use super::classify::{classify, Context};
use super::document::write_document;
use crate::error::Error;
use crate::task::ConcreteTaskInstance;
use crate::version::Version;

/// A `_bulk` body under construction.
#[derive(Default)]
pub(crate) struct BulkBody {
    buf: Vec<u8>,
    actions: usize,
}

impl BulkBody {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn len(&self) -> usize {
        self.actions
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.actions == 0
    }

    /// Create only: fails per item if the id exists.
    pub(crate) fn create(&mut self, task: &ConcreteTaskInstance, now: DateTime<Utc>) {
        self.line(&json!({ "create": { "_id": task.id.document_id() } }));
        self.document(task, now);
    }

    fn document(&mut self, task: &ConcreteTaskInstance, now: DateTime<Utc>) {
        write_document(&mut self.buf, task, now);
        self.buf.push(b'\n');
        self.actions += 1;
    }

    /// Merge `doc` into the document, if it is still at `version`.
    pub(crate) fn update_if(&mut self, doc_id: &str, version: Version, doc: &Value) {
        self.line(&json!({ "update": conditional(doc_id, version) }));
        self.line(&json!({ "doc": doc }));
        self.actions += 1;
    }

    /// Delete, whatever the version.
    pub(crate) fn delete(&mut self, doc_id: &str) {
        self.line(&json!({ "delete": { "_id": doc_id } }));
        self.actions += 1;
    }

    /// Delete, if the document is still at `version`.
    pub(crate) fn delete_if(&mut self, doc_id: &str, version: Version) {
        self.line(&json!({ "delete": conditional(doc_id, version) }));
        self.actions += 1;
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn line<T: Serialize>(&mut self, value: &T) {
        // Values built from JSON types always serialize.
        let _ = serde_json::to_writer(&mut self.buf, value);
        self.buf.push(b'\n');
    }
}

fn conditional(doc_id: &str, version: Version) -> Value {
    json!({
        "_id": doc_id,
        "if_seq_no": version.seq_no,
        "if_primary_term": version.primary_term,
    })
}

/// One item of a `_bulk` answer.
#[derive(Debug)]
pub(crate) struct BulkItem {
    pub status: u16,
    pub version: Option<Version>,
    pub error: Option<Value>,
}

impl BulkItem {
    /// The new version of a successful write, or the classified error.
    pub(crate) fn into_result(self, ctx: Context<'_>) -> Result<Option<Version>, Error> {
        match self.error {
            None if (200..300).contains(&self.status) => Ok(self.version),
            // An engine item without an error object, such as a delete's `not_found`.
            None => Err(classify(self.status, None, &json!({}), ctx)),
            Some(error) => Err(classify(self.status, None, &error, ctx)),
        }
    }
}

/// The items of a `_bulk` answer; exactly `expected` of them or a malformed-response error.
pub(crate) fn parse_items(response: &Value, expected: usize) -> Result<Vec<BulkItem>, Error> {
    let malformed = |reason: String| Error::MalformedResponse {
        status: 200,
        reason,
    };
    let items = response
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("_bulk answer has no items".into()))?;
    if items.len() != expected {
        return Err(malformed(format!(
            "_bulk answer has {} items for {expected} actions",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| {
            let inner = item
                .as_object()
                .and_then(|o| o.values().next())
                .ok_or_else(|| malformed(format!("_bulk item is not an action result: {item}")))?;
            let status = inner
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| malformed(format!("_bulk item has no status: {inner}")))?;
            let version = match (
                inner.get("_seq_no").and_then(Value::as_i64),
                inner.get("_primary_term").and_then(Value::as_i64),
            ) {
                (Some(seq_no), Some(term)) if seq_no >= 0 => Some(Version::new(seq_no, term)),
                _ => None,
            };
            Ok(BulkItem {
                status,
                version,
                error: inner.get("error").cloned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_ndjson_with_a_trailing_newline() {
        let mut body = BulkBody::new();
        let task = crate::task::TaskInstance::new("t")
            .with_id("a")
            .unwrap()
            .into_concrete(Utc::now())
            .unwrap();
        body.create(&task, Utc::now());
        body.delete_if("task:b", Version::new(3, 1));
        assert_eq!(body.len(), 2);
        let text = String::from_utf8(body.into_bytes()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
        assert_eq!(
            serde_json::from_str::<Value>(lines[2]).unwrap(),
            json!({"delete": {"_id": "task:b", "if_seq_no": 3, "if_primary_term": 1}})
        );
    }

    #[test]
    fn items_count_must_match() {
        let answer =
            json!({"items": [{"create": {"status": 201, "_seq_no": 0, "_primary_term": 1}}]});
        assert_eq!(
            parse_items(&answer, 1).unwrap()[0].version,
            Some(Version::new(0, 1))
        );
        assert!(matches!(
            parse_items(&answer, 2),
            Err(Error::MalformedResponse { .. })
        ));
    }
}
