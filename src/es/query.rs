//! Search request bodies, assembled from named building blocks.
//!
//! Each block is a small function named after the rule it expresses, so the claim query and
//! the fetch filters read like the contract they implement.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::document::{format_date, DOCUMENT_TYPE};
use crate::query::{SortDirection, SortField, TaskQuery};
use crate::task::{TaskStatus, DEFAULT_PRIORITY};

/// Only task documents (an index shared with Kibana may hold others).
pub(crate) fn is_task_document() -> Value {
    json!({ "term": { "type": DOCUMENT_TYPE } })
}

/// `task.status` is one of these.
pub(crate) fn status_in(statuses: &[TaskStatus]) -> Value {
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    json!({ "terms": { "task.status": names } })
}

/// `task.taskType` is one of these.
pub(crate) fn task_type_in(types: &[String]) -> Value {
    json!({ "terms": { "task.taskType": types } })
}

/// `runAt` in `[from, to)`.
pub(crate) fn run_at_between(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Value {
    let mut range = serde_json::Map::new();
    if let Some(from) = from {
        range.insert("gte".into(), json!(format_date(from)));
    }
    if let Some(to) = to {
        range.insert("lt".into(), json!(format_date(to)));
    }
    json!({ "range": { "task.runAt": range } })
}

/// `runAt <= now`.
pub(crate) fn run_at_due(now: DateTime<Utc>) -> Value {
    json!({ "range": { "task.runAt": { "lte": format_date(now) } } })
}

/// Enabled: `enabled` is not `false` (documents without the field predate it and are enabled).
pub(crate) fn enabled_task() -> Value {
    json!({ "bool": { "must_not": [{ "term": { "task.enabled": false } }] } })
}

fn field_name(field: SortField) -> &'static str {
    match field {
        SortField::RunAt => "task.runAt",
        SortField::ScheduledAt => "task.scheduledAt",
        SortField::RetryAt => "task.retryAt",
        SortField::Priority => "task.priority",
        SortField::UpdatedAt => "updated_at",
    }
}

/// One sort clause. Absent priorities sort as the default; other absent values sort last.
pub(crate) fn sort_clause(field: SortField, direction: SortDirection) -> Value {
    let order = match direction {
        SortDirection::Asc => "asc",
        SortDirection::Desc => "desc",
    };
    let missing = match field {
        SortField::Priority => json!(DEFAULT_PRIORITY),
        _ => json!("_last"),
    };
    json!({ field_name(field): { "order": order, "missing": missing } })
}

/// The final tie-breaker: `_seq_no` is unique within a shard, and the task index has one shard,
/// so pages never repeat or skip a task that did not change.
pub(crate) fn tie_breaker() -> Value {
    json!({ "_seq_no": { "order": "asc" } })
}

/// The body of a fetch.
pub(crate) fn fetch_body(query: &TaskQuery) -> Value {
    let mut filter = vec![is_task_document()];
    if !query.statuses.is_empty() {
        filter.push(status_in(&query.statuses));
    }
    if !query.task_types.is_empty() {
        filter.push(task_type_in(&query.task_types));
    }
    if !query.scope.is_empty() {
        filter.push(json!({ "terms": { "task.scope": query.scope } }));
    }
    if let Some(owner) = &query.owner_id {
        filter.push(json!({ "term": { "task.ownerId": owner } }));
    }
    if query.run_at_from.is_some() || query.run_at_to.is_some() {
        filter.push(run_at_between(query.run_at_from, query.run_at_to));
    }
    let mut sort: Vec<Value> = if query.sort.is_empty() {
        vec![sort_clause(SortField::RunAt, SortDirection::Asc)]
    } else {
        query
            .sort
            .iter()
            .map(|(field, dir)| sort_clause(*field, *dir))
            .collect()
    };
    sort.push(tie_breaker());
    let mut body = json!({
        "query": { "bool": { "filter": filter } },
        "sort": sort,
        "size": query.size,
        "seq_no_primary_term": true,
        "track_total_hits": false,
    });
    if let Some(cursor) = &query.search_after {
        body["search_after"] = Value::Array(cursor.0.clone());
    }
    body
}

/// The body of the stats aggregation.
pub(crate) fn stats_body(now: DateTime<Utc>) -> Value {
    json!({
        "size": 0,
        "track_total_hits": true,
        "query": { "bool": { "filter": [is_task_document()] } },
        "aggs": {
            "by_status": { "terms": { "field": "task.status", "size": 50 } },
            "by_type": { "terms": { "field": "task.taskType", "size": 10_000 } },
            "overdue": {
                "filter": { "bool": { "filter": [
                    status_in(&[TaskStatus::Idle]),
                    run_at_due(now),
                    enabled_task(),
                ] } },
                "aggs": { "oldest": { "min": { "field": "task.runAt" } } }
            }
        }
    })
}

/// Idle and due: `status == idle AND runAt <= now`.
pub(crate) fn idle_task_due(now: DateTime<Utc>) -> Value {
    json!({ "bool": { "filter": [status_in(&[TaskStatus::Idle]), run_at_due(now)] } })
}

/// Leased (`running`/`claiming`) and the lease has run out by `expired_at`, or was never set.
pub(crate) fn leased_task_with_expired_lease(expired_at: DateTime<Utc>) -> Value {
    json!({ "bool": {
        "filter": [status_in(&[TaskStatus::Running, TaskStatus::Claiming])],
        "should": [
            { "range": { "task.retryAt": { "lte": format_date(expired_at) } } },
            { "bool": { "must_not": [{ "exists": { "field": "task.retryAt" } }] } }
        ],
        "minimum_should_match": 1
    } })
}

/// What a claimer of `types` may take at `now`.
pub(crate) fn claimable(now: DateTime<Utc>, types: &[String]) -> Value {
    json!({ "bool": { "filter": [
        is_task_document(),
        enabled_task(),
        task_type_in(types),
        { "bool": {
            "should": [idle_task_due(now), leased_task_with_expired_lease(now)],
            "minimum_should_match": 1
        } }
    ] } })
}

/// Claim order: highest priority first, then the longest overdue.
pub(crate) fn claim_sort() -> Value {
    json!([
        sort_clause(SortField::Priority, SortDirection::Desc),
        sort_clause(SortField::RunAt, SortDirection::Asc),
    ])
}

/// Candidates of an optimistic claim, leaving out documents just taken.
pub(crate) fn claim_candidates_body(
    now: DateTime<Utc>,
    types: &[String],
    size: usize,
    exclude: &[String],
) -> Value {
    let mut query = claimable(now, types);
    if !exclude.is_empty() {
        query["bool"]["must_not"] = json!([{ "ids": { "values": exclude } }]);
    }
    json!({
        "query": query,
        "sort": claim_sort(),
        "size": size,
        "seq_no_primary_term": true,
        "track_total_hits": false,
    })
}

/// Tasks an owner holds in `claiming` (what its update-by-query claim took).
pub(crate) fn claiming_by_owner_body(owner_id: &str, size: usize) -> Value {
    json!({
        "query": { "bool": { "filter": [
            is_task_document(),
            status_in(&[TaskStatus::Claiming]),
            { "term": { "task.ownerId": owner_id } }
        ] } },
        "sort": claim_sort(),
        "size": size,
        "seq_no_primary_term": true,
        "track_total_hits": false,
    })
}

/// Tasks whose lease ran out before `expired_at` (or that have none).
pub(crate) fn stuck_body(expired_at: DateTime<Utc>, size: usize) -> Value {
    json!({
        "query": { "bool": { "filter": [is_task_document(), leased_task_with_expired_lease(expired_at)] } },
        "sort": [sort_clause(SortField::RetryAt, SortDirection::Asc), tie_breaker()],
        "size": size,
        "seq_no_primary_term": true,
        "track_total_hits": false,
    })
}

/// Idle tasks whose type is not among `types`.
pub(crate) fn unrecognized_query(types: &[String]) -> Value {
    json!({ "bool": {
        "filter": [is_task_document(), status_in(&[TaskStatus::Idle])],
        "must_not": [task_type_in(types)]
    } })
}
