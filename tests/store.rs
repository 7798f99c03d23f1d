//! The store's operations against a real engine. Each test works in its own index.

mod common;

use chrono::{TimeDelta, TimeZone, Utc};
use common::{builder, store, Raw};
use elasticsearch::http::Method;
use es_task_store::{
    ConcreteTaskInstance, Error, IndexStatus, Interval, SortDirection, SortField, TaskId,
    TaskInstance, TaskPatch, TaskQuery, TaskStatus, Version,
};
use serde_json::{json, Map, Value};

fn id(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}

#[tokio::test]
async fn ensure_index_creates_then_verifies() {
    let store = builder("ensure").build().unwrap();
    let created = store.ensure_index().await.unwrap();
    assert!(
        matches!(created, IndexStatus::Created { .. }),
        "{created:?}"
    );
    assert_eq!(store.ensure_index().await.unwrap(), IndexStatus::Verified);
    let mapping = Raw::new().mapping(store.index()).await;
    assert_eq!(
        mapping["properties"]["task"]["properties"]["runAt"]["type"],
        "date"
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn ensure_index_reports_a_different_mapping_and_changes_nothing() {
    let store = builder("mismatch").build().unwrap();
    let raw = Raw::new();
    let concrete = store.concrete_index_name();
    let body = json!({
        "mappings": { "properties": {
            "type": { "type": "keyword" },
            "task": { "properties": { "runAt": { "type": "keyword" }, "status": { "type": "keyword" } } }
        } },
        "aliases": { store.index(): {} }
    });
    let (status, answer) = raw
        .send(Method::Put, &format!("/{concrete}"), Some(body))
        .await;
    assert_eq!(status, 200, "{answer}");
    let before = raw.mapping(store.index()).await;

    let Err(Error::MappingMismatch { mismatches, .. }) = store.ensure_index().await else {
        panic!("expected a mapping mismatch");
    };
    let fields: Vec<&str> = mismatches.iter().map(|m| m.field.as_str()).collect();
    assert!(fields.contains(&"task.runAt"), "{fields:?}");
    assert!(fields.contains(&"task.retryAt"), "{fields:?}");
    assert!(fields.contains(&"dynamic"), "{fields:?}");
    assert_eq!(
        raw.mapping(store.index()).await,
        before,
        "mapping must not change"
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn schedule_then_get_round_trips_every_field() {
    let store = store("roundtrip").await;
    let run_at = Utc.with_ymd_and_hms(2031, 3, 4, 5, 6, 7).unwrap() + TimeDelta::milliseconds(89);
    let scheduled = store
        .schedule(
            TaskInstance::new("report")
                .with_id("r-1")
                .unwrap()
                .with_run_at(run_at)
                .with_params(json!({"to": "ops@example.com", "nested": {"n": [1, 2]}}))
                .with_state(json!({"count": 3}))
                .with_interval("5m".parse().unwrap())
                .with_scope(["reporting", "daily"])
                .with_user("elastic")
                .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .with_priority(70)
                .with_timeout("30s".parse().unwrap()),
        )
        .await
        .unwrap();
    assert!(scheduled.version.is_some());
    let stored = store.get(&id("r-1")).await.unwrap();
    assert_eq!(stored, scheduled);
    assert_eq!(stored.run_at, run_at);
    assert_eq!(stored.params["nested"]["n"], json!([1, 2]));
    assert_eq!(stored.status, TaskStatus::Idle);
    assert_eq!(stored.schedule.unwrap().interval.to_string(), "5m");
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn schedule_twice_is_already_exists() {
    let store = store("dup").await;
    let task = TaskInstance::new("t").with_id("same").unwrap();
    store.schedule(task.clone()).await.unwrap();
    let err = store.schedule(task).await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { id } if id == "same"),
        "{err:?}"
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn ensure_scheduled_twice_returns_the_original_untouched() {
    let store = store("ensure-sched").await;
    let task = TaskInstance::new("cleanup")
        .with_id("nightly")
        .unwrap()
        .with_interval("1d".parse().unwrap())
        .with_state(json!({"initial": true}));
    let first = store.ensure_scheduled(task.clone()).await.unwrap();

    // The task runs and its state changes...
    let mut ran = first.clone();
    ran.state = json!({"lastRun": "yesterday"}).as_object().unwrap().clone();
    ran.attempts = 1;
    let version = store.update(&ran).await.unwrap();

    // ...then the service restarts and schedules it again.
    let again = store
        .ensure_scheduled(task.with_state(json!({"initial": true})))
        .await
        .unwrap();
    assert_eq!(again.version, Some(version));
    assert_eq!(again.state, ran.state);
    assert_eq!(again.attempts, 1);
    assert_eq!(again.run_at, first.run_at);
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn two_updates_with_the_same_version_exactly_one_wins() {
    let store = store("race").await;
    let task = store.schedule(TaskInstance::new("t")).await.unwrap();
    for round in 0..5 {
        let current = store.get(&task.id).await.unwrap();
        let mut a = current.clone();
        a.priority = 100 + round;
        let mut b = current.clone();
        b.priority = 200 + round;
        let (ra, rb) = tokio::join!(store.update(&a), store.update(&b));
        let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {ra:?} {rb:?}");
        let loser = if ra.is_ok() { &rb } else { &ra };
        assert!(matches!(loser, Err(Error::Conflict { .. })), "{loser:?}");
        let winner_priority = if ra.is_ok() { a.priority } else { b.priority };
        assert_eq!(store.get(&task.id).await.unwrap().priority, winner_priority);
    }
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn update_of_a_removed_task_conflicts_and_does_not_recreate_it() {
    let store = store("update-removed").await;
    let task = store.schedule(TaskInstance::new("t")).await.unwrap();
    store.remove(&task.id).await.unwrap();
    let err = store.update(&task).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let patch = TaskPatch {
        priority: Some(1),
        ..TaskPatch::default()
    };
    let err = store
        .partial_update(&task.id, task.version.unwrap(), &patch)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(matches!(
        store.get(&task.id).await,
        Err(Error::NotFound { .. })
    ));
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn update_without_a_version_is_rejected() {
    let store = store("noversion").await;
    let mut task = store.schedule(TaskInstance::new("t")).await.unwrap();
    task.version = None;
    let err = store.update(&task).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidTask {
                field: "version",
                ..
            }
        ),
        "{err:?}"
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn partial_update_changes_only_the_given_fields() {
    let store = store("partial").await;
    let task = store
        .schedule(
            TaskInstance::new("t")
                .with_params(json!({"keep": 1}))
                .with_scope(["s"]),
        )
        .await
        .unwrap();
    let started = store.now();
    let patch = TaskPatch {
        status: Some(TaskStatus::Running),
        owner_id: Some(Some("worker-a".into())),
        started_at: Some(Some(started)),
        retry_at: Some(Some(started + TimeDelta::minutes(5))),
        attempts: Some(1),
        ..TaskPatch::default()
    };
    let v2 = store
        .partial_update(&task.id, task.version.unwrap(), &patch)
        .await
        .unwrap();
    let stored = store.get(&task.id).await.unwrap();
    assert_eq!(stored.version, Some(v2));
    assert_eq!(stored.status, TaskStatus::Running);
    assert_eq!(stored.owner_id.as_deref(), Some("worker-a"));
    assert_eq!(stored.started_at, Some(started));
    assert_eq!(stored.params, task.params);
    assert_eq!(stored.scope, task.scope);

    // Stale version: conflict, nothing changes.
    let err = store
        .partial_update(&task.id, task.version.unwrap(), &TaskPatch::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");

    // Clearing nullable fields.
    let release = TaskPatch {
        status: Some(TaskStatus::Idle),
        owner_id: Some(None),
        started_at: Some(None),
        retry_at: Some(None),
        ..TaskPatch::default()
    };
    store.partial_update(&task.id, v2, &release).await.unwrap();
    let stored = store.get(&task.id).await.unwrap();
    assert_eq!(stored.owner_id, None);
    assert_eq!(stored.retry_at, None);
    assert_eq!(stored.status, TaskStatus::Idle);

    let err = store
        .partial_update(
            &task.id,
            stored.version.unwrap(),
            &TaskPatch {
                status: Some(TaskStatus::ShouldDelete),
                ..TaskPatch::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidTask {
                field: "status",
                ..
            }
        ),
        "{err:?}"
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn remove_is_idempotent() {
    let store = store("remove").await;
    let task = store.schedule(TaskInstance::new("t")).await.unwrap();
    store.remove(&task.id).await.unwrap();
    store.remove(&task.id).await.unwrap();
    store.remove(&id("never-existed")).await.unwrap();
    assert!(matches!(
        store.get(&task.id).await,
        Err(Error::NotFound { .. })
    ));
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn bulk_operations_answer_per_item_in_order() {
    let store = store("bulk").await;
    store
        .schedule(TaskInstance::new("t").with_id("taken").unwrap())
        .await
        .unwrap();
    let results = store
        .bulk_schedule(vec![
            TaskInstance::new("t").with_id("b-0").unwrap(),
            TaskInstance::new("t").with_id("taken").unwrap(),
            TaskInstance::new("t")
                .with_id("b-2")
                .unwrap()
                .with_params(json!([1])),
            TaskInstance::new("t").with_id("b-3").unwrap(),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap().id.as_str(), "b-0");
    assert!(results[0].as_ref().unwrap().version.is_some());
    assert!(matches!(&results[1], Err(Error::AlreadyExists { id }) if id == "taken"));
    assert!(matches!(
        &results[2],
        Err(Error::InvalidTask {
            field: "params",
            ..
        })
    ));
    assert_eq!(results[3].as_ref().unwrap().id.as_str(), "b-3");
    assert!(matches!(
        store.get(&id("b-2")).await,
        Err(Error::NotFound { .. })
    ));

    let got = store
        .bulk_get(&[id("b-3"), id("missing"), id("b-0")])
        .await
        .unwrap();
    assert_eq!(got[0].as_ref().unwrap().id.as_str(), "b-3");
    assert!(matches!(&got[1], Err(Error::NotFound { id }) if id == "missing"));
    assert_eq!(got[2].as_ref().unwrap().id.as_str(), "b-0");

    let fresh = got[0].as_ref().unwrap().clone();
    let mut stale = got[2].as_ref().unwrap().clone();
    stale.version = Some(Version::new(
        stale.version.unwrap().seq_no + 100,
        stale.version.unwrap().primary_term,
    ));
    let mut no_version = fresh.clone();
    no_version.version = None;
    let updated = store
        .bulk_update(&[stale.clone(), fresh.clone(), no_version])
        .await
        .unwrap();
    assert!(
        matches!(&updated[0], Err(Error::Conflict { id }) if id == "b-0"),
        "{updated:?}"
    );
    assert!(updated[1].as_ref().unwrap() > &fresh.version.unwrap());
    assert!(matches!(
        &updated[2],
        Err(Error::InvalidTask {
            field: "version",
            ..
        })
    ));

    let removed = store
        .bulk_remove(&[id("b-0"), id("missing"), id("b-3")])
        .await
        .unwrap();
    assert_eq!(removed.len(), 3);
    assert!(removed.iter().all(Result::is_ok), "{removed:?}");
    let got = store
        .bulk_get(&[id("b-0"), id("b-3"), id("taken")])
        .await
        .unwrap();
    assert!(matches!(&got[0], Err(Error::NotFound { .. })));
    assert!(matches!(&got[1], Err(Error::NotFound { .. })));
    assert!(got[2].is_ok());
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn paging_through_2500_tasks_returns_each_exactly_once() {
    let store = store("paging").await;
    let base = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    // Many tasks share a runAt, so the tie-breaker matters.
    let tasks: Vec<TaskInstance> = (0..2500)
        .map(|i| {
            TaskInstance::new("page")
                .with_id(format!("p-{i:04}"))
                .unwrap()
                .with_run_at(base + TimeDelta::seconds(i / 100))
        })
        .collect();
    for chunk in tasks.chunks(1000) {
        let results = store.bulk_schedule(chunk.to_vec()).await.unwrap();
        assert!(results.iter().all(Result::is_ok));
    }
    store.refresh_index().await.unwrap();

    let mut seen = std::collections::HashSet::new();
    let mut query = TaskQuery::new().with_size(300);
    let mut pages = 0;
    let mut last_run_at = None;
    loop {
        let page = store.fetch(&query).await.unwrap();
        assert!(page.skipped.is_empty());
        pages += 1;
        for task in &page.tasks {
            assert!(seen.insert(task.id.clone()), "{} returned twice", task.id);
            assert!(last_run_at <= Some(task.run_at), "out of order");
            last_run_at = Some(task.run_at);
        }
        match page.next {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2500);
    assert_eq!(pages, 9);
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn fetch_filters_and_sorts() {
    let store = store("filters").await;
    let base = Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap();
    let mut tasks = Vec::new();
    for i in 0..12 {
        tasks.push(
            TaskInstance::new(if i % 2 == 0 { "even" } else { "odd" })
                .with_id(format!("f-{i:02}"))
                .unwrap()
                .with_run_at(base + TimeDelta::hours(i))
                .with_scope(if i % 3 == 0 {
                    vec!["third"]
                } else {
                    vec!["other"]
                }),
        );
    }
    store.bulk_schedule(tasks).await.unwrap();
    let claimed = store.get(&id("f-04")).await.unwrap();
    store
        .partial_update(
            &claimed.id,
            claimed.version.unwrap(),
            &TaskPatch {
                status: Some(TaskStatus::Running),
                owner_id: Some(Some("owner-x".into())),
                ..TaskPatch::default()
            },
        )
        .await
        .unwrap();
    store.refresh_index().await.unwrap();
    let ids =
        |page: &[ConcreteTaskInstance]| page.iter().map(|t| t.id.to_string()).collect::<Vec<_>>();

    let page = store
        .fetch(&TaskQuery::new().with_task_type("even"))
        .await
        .unwrap();
    assert_eq!(
        ids(&page.tasks),
        ["f-00", "f-02", "f-04", "f-06", "f-08", "f-10"]
    );
    assert!(page.next.is_none());

    let page = store
        .fetch(&TaskQuery::new().with_scope("third"))
        .await
        .unwrap();
    assert_eq!(ids(&page.tasks), ["f-00", "f-03", "f-06", "f-09"]);

    let page = store
        .fetch(&TaskQuery::new().with_status(TaskStatus::Running))
        .await
        .unwrap();
    assert_eq!(ids(&page.tasks), ["f-04"]);
    let page = store
        .fetch(&TaskQuery::new().with_owner("owner-x"))
        .await
        .unwrap();
    assert_eq!(ids(&page.tasks), ["f-04"]);

    let page = store
        .fetch(&TaskQuery::new().with_run_at_between(
            Some(base + TimeDelta::hours(3)),
            Some(base + TimeDelta::hours(6)),
        ))
        .await
        .unwrap();
    assert_eq!(ids(&page.tasks), ["f-03", "f-04", "f-05"]);

    let page = store
        .fetch(
            &TaskQuery::new()
                .with_task_type("odd")
                .sort_by(SortField::RunAt, SortDirection::Desc)
                .with_size(2),
        )
        .await
        .unwrap();
    assert_eq!(ids(&page.tasks), ["f-11", "f-09"]);
    let next = store
        .fetch(
            &TaskQuery::new()
                .with_task_type("odd")
                .sort_by(SortField::RunAt, SortDirection::Desc)
                .with_size(2)
                .after(page.next.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(ids(&next.tasks), ["f-07", "f-05"]);

    let err = store
        .fetch(&TaskQuery::new().with_size(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidQuery { field: "size", .. }));
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn payload_keys_never_grow_the_mapping() {
    let store = store("mapping-growth").await;
    let raw = Raw::new();
    let before = raw.mapping(store.index()).await;
    let params: Map<String, Value> = (0..2000)
        .map(|i| (format!("param_{i}"), json!(i)))
        .collect();
    let state: Map<String, Value> = (0..1000)
        .map(|i| (format!("state_{i}"), json!({ "nested": i })))
        .collect();
    store
        .schedule(TaskInstance::new("wide").with_params(Value::Object(params.clone())))
        .await
        .unwrap();
    let wide_state = store
        .schedule(TaskInstance::new("wide").with_state(Value::Object(state.clone())))
        .await
        .unwrap();
    store.refresh_index().await.unwrap();
    assert_eq!(raw.mapping(store.index()).await, before);
    let back = store.get(&wide_state.id).await.unwrap();
    assert_eq!(back.state, state);
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn writes_to_a_missing_index_fail_and_create_nothing() {
    let store = builder("missing").build().unwrap();
    let raw = Raw::new();
    let task = TaskInstance::new("t").with_id("x").unwrap();
    let phantom = ConcreteTaskInstance {
        version: Some(Version::new(0, 1)),
        ..task.clone().into_concrete(Utc::now()).unwrap()
    };
    let missing = |r: &es_task_store::Error| matches!(r, Error::IndexMissing { index } if index == store.index());

    let e = store.schedule(task.clone()).await.unwrap_err();
    assert!(missing(&e), "schedule: {e:?}");
    let e = store.bulk_schedule(vec![task.clone()]).await.unwrap_err();
    assert!(missing(&e), "bulk_schedule: {e:?}");
    let e = store.update(&phantom).await.unwrap_err();
    assert!(missing(&e), "update: {e:?}");
    let e = store
        .bulk_update(std::slice::from_ref(&phantom))
        .await
        .unwrap_err();
    assert!(missing(&e), "bulk_update: {e:?}");
    let e = store
        .partial_update(&phantom.id, Version::new(0, 1), &TaskPatch::default())
        .await
        .unwrap_err();
    assert!(missing(&e), "partial_update: {e:?}");
    let e = store.remove(&phantom.id).await.unwrap_err();
    assert!(missing(&e), "remove: {e:?}");
    let e = store.get(&phantom.id).await.unwrap_err();
    assert!(missing(&e), "get: {e:?}");
    let e = store
        .bulk_get(std::slice::from_ref(&phantom.id))
        .await
        .unwrap_err();
    assert!(missing(&e), "bulk_get: {e:?}");
    let e = store.fetch(&TaskQuery::new()).await.unwrap_err();
    assert!(missing(&e), "fetch: {e:?}");
    let e = store.ensure_scheduled(task).await.unwrap_err();
    assert!(missing(&e), "ensure_scheduled: {e:?}");

    assert!(
        !raw.index_exists(store.index()).await,
        "a write created the index"
    );
    assert!(!raw.index_exists(&store.concrete_index_name()).await);
}

#[tokio::test]
async fn stats_count_by_status_and_type_and_find_overdue_work() {
    let store = store("stats").await;
    let now = store.now();
    let mut tasks = Vec::new();
    for i in 0..5 {
        tasks.push(TaskInstance::new("a").with_run_at(now - TimeDelta::minutes(10 + i)));
    }
    for _ in 0..3 {
        tasks.push(TaskInstance::new("b").with_run_at(now + TimeDelta::hours(1)));
    }
    tasks.push(
        TaskInstance::new("b")
            .with_run_at(now - TimeDelta::hours(2))
            .with_enabled(false),
    );
    store.bulk_schedule(tasks).await.unwrap();
    store.refresh_index().await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, 9);
    assert_eq!(stats.by_status.get("idle"), Some(&9));
    assert_eq!(stats.by_type.get("a"), Some(&5));
    assert_eq!(stats.by_type.get("b"), Some(&4));
    assert_eq!(stats.overdue, 5);
    assert_eq!(
        stats.oldest_overdue_run_at,
        Some(now - TimeDelta::minutes(14))
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn a_document_written_by_kibana_is_read() {
    let store = store("kibana").await;
    let raw = Raw::new();
    let fixture: Value = serde_json::from_str(include_str!("fixtures/kibana_task.json")).unwrap();
    let (status, answer) = raw
        .send(
            Method::Put,
            &format!("/{}/_doc/task:kibana-1?refresh=true", store.index()),
            Some(fixture),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let task = store.get(&id("kibana-1")).await.unwrap();
    assert_eq!(task.task_type, "alerting:.index-threshold");
    assert_eq!(
        task.schedule.unwrap().interval,
        "1m".parse::<Interval>().unwrap()
    );
    assert_eq!(task.params["spaceId"], "default");
    assert_eq!(task.state["previousStartedAt"], "2023-05-10T09:12:45.102Z");
    assert_eq!(task.traceparent, None);
    assert_eq!(task.priority, 50);
    assert!(task.enabled);
    assert_eq!(task.scope, ["alerting"]);
    assert_eq!(
        task.run_at,
        Utc.with_ymd_and_hms(2023, 5, 10, 9, 13, 45).unwrap() + TimeDelta::milliseconds(102)
    );
    let page = store
        .fetch(&TaskQuery::new().with_scope("alerting"))
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 1);

    // And a conditional write on it works with the version read.
    let mut disabled = task.clone();
    disabled.enabled = false;
    store.update(&disabled).await.unwrap();
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn undecodable_documents_are_skipped_by_id_not_fatal() {
    let store = store("skip").await;
    let raw = Raw::new();
    store
        .schedule(TaskInstance::new("good").with_id("good").unwrap())
        .await
        .unwrap();
    let mut bad_interval: Value =
        serde_json::from_str(include_str!("fixtures/kibana_task.json")).unwrap();
    bad_interval["task"]["schedule"]["interval"] = json!("PT1M");
    let mut no_offset = bad_interval.clone();
    no_offset["task"]["schedule"]["interval"] = json!("1m");
    no_offset["task"]["runAt"] = json!("2023-05-10T09:13:45.102");
    for (doc_id, doc) in [
        ("task:bad-interval", bad_interval),
        ("task:no-offset", no_offset),
    ] {
        let (status, answer) = raw
            .send(
                Method::Put,
                &format!("/{}/_doc/{doc_id}?refresh=true", store.index()),
                Some(doc),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    store.refresh_index().await.unwrap();
    let page = store.fetch(&TaskQuery::new()).await.unwrap();
    assert_eq!(page.tasks.len(), 1);
    assert_eq!(page.tasks[0].id.as_str(), "good");
    let mut skipped: Vec<(String, String)> = page
        .skipped
        .iter()
        .map(|e| match e {
            Error::Decode { id, field, .. } => (id.clone(), field.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            (
                "task:bad-interval".to_owned(),
                "task.schedule.interval".to_owned()
            ),
            ("task:no-offset".to_owned(), "task.runAt".to_owned())
        ]
    );
    let err = store.get(&id("no-offset")).await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn a_concrete_index_is_refused_when_writes_require_an_alias() {
    let raw = Raw::new();
    let store = builder("concrete").build().unwrap();
    let mut definition: Value =
        serde_json::from_str(include_str!("../mappings/task-index.json")).unwrap();
    definition.as_object_mut().unwrap().remove("settings");
    let (status, _) = raw
        .send(
            Method::Put,
            &format!("/{}", store.index()),
            Some(definition),
        )
        .await;
    assert_eq!(status, 200);
    let err = store.ensure_index().await.unwrap_err();
    assert!(
        matches!(&err, Error::Config { key, .. } if key == "index"),
        "{err:?}"
    );

    // Opting out of aliases works on the same index.
    let direct = builder("unused")
        .with_index(store.index())
        .with_require_alias(false)
        .build()
        .unwrap();
    assert_eq!(direct.ensure_index().await.unwrap(), IndexStatus::Verified);
    direct.schedule(TaskInstance::new("t")).await.unwrap();
    raw.send(Method::Delete, &format!("/{}", store.index()), None)
        .await;
}

#[tokio::test]
async fn updates_keep_the_fields_kibana_wrote_that_the_store_does_not_model() {
    let store = store("kibana-fields").await;
    let raw = Raw::new();
    let mut fixture: Value =
        serde_json::from_str(include_str!("fixtures/kibana_task.json")).unwrap();
    fixture["namespaces"] = json!(["default"]);
    fixture["references"] = json!([{ "id": "rule-1", "name": "source", "type": "alert" }]);
    fixture["task"]["apiKey"] = json!("c2VjcmV0");
    fixture["task"]["numSkippedRuns"] = json!(2);
    let path = format!("/{}/_doc/task:kibana-2?refresh=true", store.index());
    let (status, answer) = raw.send(Method::Put, &path, Some(fixture)).await;
    assert_eq!(status, 201, "{answer}");

    let mut task = store.get(&id("kibana-2")).await.unwrap();
    task.priority = 77;
    task.user = None;
    store.update(&task).await.unwrap();
    let task = store.get(&id("kibana-2")).await.unwrap();
    store.bulk_update(&[task]).await.unwrap().remove(0).unwrap();

    let (_, doc) = raw
        .send(
            Method::Get,
            &format!("/{}/_doc/task:kibana-2", store.index()),
            None,
        )
        .await;
    let source = &doc["_source"];
    assert_eq!(source["task"]["priority"], 77);
    assert_eq!(
        source["task"]["user"],
        Value::Null,
        "a cleared field is cleared"
    );
    assert_eq!(source["task"]["apiKey"], "c2VjcmV0");
    assert_eq!(source["task"]["partition"], 187);
    assert_eq!(source["task"]["numSkippedRuns"], 2);
    assert_eq!(source["namespaces"], json!(["default"]));
    assert_eq!(source["references"][0]["id"], "rule-1");
    assert_eq!(source["typeMigrationVersion"], "8.5.0");
    store.delete_index().await.unwrap();
}
