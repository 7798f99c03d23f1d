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
                }
            }
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
