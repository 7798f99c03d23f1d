//! The task index's mapping, and the check of an existing index against it.
//!
//! The mapping lives in `mappings/task-index.json` (compiled into the crate). Root and `task`
//! objects are `dynamic: false`: fields outside the mapping, such as the keys of `params` and
//! `state`, stay in `_source` and never add fields to the index, however many distinct keys
//! tasks carry.
//!
//! An existing index is verified, never changed: every field of the file must exist with the
//! same type, and both objects must be non-dynamic (`false` or `strict`). Extra fields in the
//! index (Kibana's own, for example) are allowed.

use serde_json::{Map, Value};

use crate::error::{Error, FieldMismatch};

/// The index definition (settings and mappings) the store creates, as JSON text.
pub const TASK_INDEX_JSON: &str = include_str!("../../mappings/task-index.json");

/// The index definition as a JSON value.
#[must_use]
pub fn index_definition() -> Value {
    // The file is part of the crate and checked by a unit test.
    serde_json::from_str(TASK_INDEX_JSON).unwrap_or(Value::Null)
}

/// Compares the mapping of an existing index (`GET <index>/_mapping`'s `mappings` object)
/// with the store's.
pub fn verify(index: &str, actual: &Value) -> Result<(), Error> {
    let expected = index_definition();
    let mut mismatches = Vec::new();
    compare_object("", &expected["mappings"], actual, &mut mismatches);
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(Error::MappingMismatch {
            index: index.to_owned(),
            mismatches,
        })
    }
}

fn compare_object(
    path: &str,
    expected: &Value,
    actual: &Value,
    mismatches: &mut Vec<FieldMismatch>,
) {
    if let Some(dynamic) = expected.get("dynamic") {
        let actual_dynamic = actual.get("dynamic").map(dynamic_text);
        let ok = matches!(actual_dynamic.as_deref(), Some("false" | "strict"));
        if !ok {
            mismatches.push(FieldMismatch {
                field: join(path, "dynamic"),
                expected: dynamic_text(dynamic),
                actual: actual_dynamic.unwrap_or_else(|| "true (default)".to_owned()),
            });
        }
    }
    let empty = Map::new();
    let expected_props = expected
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let actual_props = actual
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (name, expected_field) in expected_props {
        let field_path = join(path, name);
        match actual_props.get(name) {
            None => mismatches.push(FieldMismatch {
                field: field_path,
                expected: describe(expected_field),
                actual: "missing".to_owned(),
            }),
            Some(actual_field) => {
                if expected_field.get("properties").is_some() {
                    compare_object(&field_path, expected_field, actual_field, mismatches);
                } else if expected_field.get("type") != actual_field.get("type") {
                    mismatches.push(FieldMismatch {
                        field: field_path,
                        expected: describe(expected_field),
                        actual: describe(actual_field),
                    });
                } else if let Some(problem) = unusable(actual_field) {
                    mismatches.push(FieldMismatch {
                        field: field_path,
                        expected: format!("{} (searchable)", describe(expected_field)),
                        actual: problem,
                    });
                }
            }
        }
    }
    if path == "task" {
        check_source_only_fields(actual_props, mismatches);
    }
}

/// Why a field of the right type still cannot serve the store's queries, if it cannot.
fn unusable(field: &Value) -> Option<String> {
    if field.get("index") == Some(&Value::Bool(false))
        || field.get("index") == Some(&Value::String("false".into()))
    {
        return Some(format!("{} with index: false", describe(field)));
    }
    if let Some(format) = field.get("format").and_then(Value::as_str) {
        if !format.contains("date_optional_time") {
            return Some(format!("date with format {format}"));
        }
    }
    None
}

/// Fields the store writes but does not index. An index may map them (Kibana's does), but
/// only in a way that accepts what the store writes: strings (and a date for `startedAt`).
fn check_source_only_fields(actual: &Map<String, Value>, mismatches: &mut Vec<FieldMismatch>) {
    const STRING_TYPES: [&str; 4] = ["text", "keyword", "match_only_text", "wildcard"];
    for (name, extra) in [
        ("params", None),
        ("state", None),
        ("user", None),
        ("traceparent", None),
        ("timeoutOverride", None),
        ("lastError", None),
        ("startedAt", Some("date")),
    ] {
        let Some(field) = actual.get(name) else {
            continue;
        };
        if field.get("enabled") == Some(&Value::Bool(false)) {
            continue;
        }
        let ty = field
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("object");
        let ok = STRING_TYPES.contains(&ty) || Some(ty) == extra;
        let ok = ok && (ty != "date" || unusable(field).is_none());
        if !ok {
            mismatches.push(FieldMismatch {
                field: format!("task.{name}"),
                expected: if extra.is_some() {
                    "unmapped, a string type or date".into()
                } else {
                    "unmapped or a string type".into()
                },
                actual: describe(field),
            });
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn describe(field: &Value) -> String {
    match field.get("type").and_then(Value::as_str) {
        Some(ty) => ty.to_owned(),
        None if field.get("properties").is_some() => "object".to_owned(),
        None => field.to_string(),
    }
}

/// `dynamic` comes back as a string (`"false"`) from some engines and a boolean from others.
fn dynamic_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_mapping_file_is_valid_json_with_non_dynamic_objects() {
        let def = index_definition();
        assert_eq!(def["mappings"]["dynamic"], json!(false));
        assert_eq!(
            def["mappings"]["properties"]["task"]["dynamic"],
            json!(false)
        );
        assert_eq!(
            def["mappings"]["properties"]["task"]["properties"]["runAt"]["type"],
            "date"
        );
    }

    #[test]
    fn an_identical_mapping_verifies() {
        verify("i", &index_definition()["mappings"]).unwrap();
    }

    #[test]
    fn string_dynamic_and_extra_fields_are_accepted() {
        let mut actual = index_definition()["mappings"].clone();
        actual["dynamic"] = json!("strict");
        actual["properties"]["task"]["dynamic"] = json!("false");
        actual["properties"]["namespace"] = json!({"type": "keyword"});
        verify("i", &actual).unwrap();
    }

    #[test]
    fn fields_of_the_right_type_that_cannot_serve_queries_or_writes_are_named() {
        let mut actual = index_definition()["mappings"].clone();
        actual["properties"]["task"]["properties"]["status"] =
            json!({"type": "keyword", "index": false});
        actual["properties"]["task"]["properties"]["runAt"] =
            json!({"type": "date", "format": "epoch_millis"});
        actual["properties"]["task"]["properties"]["params"] = json!({"type": "long"});
        actual["properties"]["task"]["properties"]["startedAt"] = json!({"type": "integer"});
        actual["properties"]["task"]["properties"]["state"] =
            json!({"type": "object", "enabled": false});
        actual["properties"]["task"]["properties"]["user"] = json!({"type": "keyword"});
        let Err(Error::MappingMismatch { mismatches, .. }) = verify("i", &actual) else {
            panic!("expected a mismatch");
        };
        let mut fields: Vec<&str> = mismatches.iter().map(|m| m.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["task.params", "task.runAt", "task.startedAt", "task.status"]
        );
    }

    #[test]
    fn differences_are_named() {
        let mut actual = index_definition()["mappings"].clone();
        actual["properties"]["task"]["properties"]["runAt"] = json!({"type": "keyword"});
        actual["properties"]["task"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("priority");
        actual["properties"]["task"]
            .as_object_mut()
            .unwrap()
            .remove("dynamic");
        let Err(Error::MappingMismatch { mismatches, .. }) = verify("i", &actual) else {
            panic!("expected a mismatch");
        };
        let found = |field: &str| {
            mismatches
                .iter()
                .find(|m| m.field == field)
                .map(|m| m.actual.clone())
        };
        assert_eq!(mismatches.len(), 3, "{mismatches:?}");
        assert_eq!(found("task.dynamic").as_deref(), Some("true (default)"));
        assert_eq!(found("task.runAt").as_deref(), Some("keyword"));
        assert_eq!(found("task.priority").as_deref(), Some("missing"));
    }
}
