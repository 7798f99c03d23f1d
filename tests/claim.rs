//! Claiming and the writes that end a claim, on a real engine.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::{builder, ensure_index, Raw};
use elasticsearch::http::Method;
use es_task_store::{
    ClaimRequest, ClaimStrategy, Clock, ElasticsearchTaskStore, Error, ManualClock, RetryPolicy,
    TaskId, TaskInstance, TaskQuery, TaskStatus,
};
use serde_json::{json, Value};

const STRATEGIES: [ClaimStrategy; 2] = [ClaimStrategy::Optimistic, ClaimStrategy::UpdateByQuery];

fn request(owner: &str, types: &[&str]) -> ClaimRequest {
    ClaimRequest::new(owner, types.iter().copied())
}

/// A store on a new index whose clock is a manual one, returned with it.
async fn manual_store(
    prefix: &str,
    strategy: ClaimStrategy,
) -> (ElasticsearchTaskStore, ManualClock) {
    let clock = ManualClock::new(Utc::now());
    let store = builder(prefix)
        .with_claim_strategy(strategy)
        .with_clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    ensure_index(&store).await;
    (store, clock)
}

/// Another store (own client, own owner) on the same index and clock.
fn sibling(
    store: &ElasticsearchTaskStore,
    clock: &ManualClock,
    strategy: ClaimStrategy,
) -> ElasticsearchTaskStore {
    builder("unused")
        .with_index(store.index())
        .with_claim_strategy(strategy)
        .with_clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

async fn schedule_due(store: &ElasticsearchTaskStore, task_type: &str, count: usize, prefix: &str) {
    let run_at = store.now() - TimeDelta::minutes(1);
    let tasks: Vec<TaskInstance> = (0..count)
        .map(|i| {
            TaskInstance::new(task_type)
                .with_id(format!("{prefix}-{i:05}"))
                .unwrap()
                .with_run_at(run_at)
        })
        .collect();
    for chunk in tasks.chunks(1000) {
        let results = store.bulk_schedule(chunk.to_vec()).await.unwrap();
        assert!(results.iter().all(Result::is_ok));
    }
    store.refresh_index().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_claim_2000_tasks_exactly_once_with_either_strategy() {
    for strategy in STRATEGIES {
        let (store, clock) = manual_store("race8", strategy).await;
        schedule_due(&store, "job", 2000, "t").await;
        let ledger: Arc<Mutex<HashMap<TaskId, String>>> = Arc::default();
        let mut handles = Vec::new();
        for claimer in 0..8 {
            let store = sibling(&store, &clock, strategy);
            let ledger = ledger.clone();
            handles.push(tokio::spawn(async move {
                let owner = format!("owner-{claimer}");
                let request = request(&owner, &["job"]).with_capacity(50);
                let (mut claimed, mut conflicts, mut empty_in_a_row) = (0usize, 0usize, 0);
                while empty_in_a_row < 2 {
                    let result = store.claim(&request).await.unwrap();
                    assert!(result.errors.is_empty(), "{:?}", result.errors);
                    assert!(result.skipped.is_empty());
                    conflicts += result.conflicts;
                    if result.claimed.is_empty() {
                        empty_in_a_row += 1;
                        store.refresh_index().await.unwrap();
                        continue;
                    }
                    empty_in_a_row = 0;
                    claimed += result.claimed.len();
                    let mut ledger = ledger.lock().unwrap();
                    for task in result.claimed {
                        assert_eq!(task.owner_id.as_deref(), Some(owner.as_str()));
                        assert!(task.version.is_some());
                        if let Some(previous) = ledger.insert(task.id.clone(), owner.clone()) {
                            panic!("{} claimed by {previous} and {owner}", task.id);
                        }
                    }
                }
                (claimed, conflicts)
            }));
        }
        let mut total = 0;
        let mut conflicts = 0;
        for handle in handles {
            let (claimed, c) = handle.await.unwrap();
            total += claimed;
            conflicts += c;
        }
        assert_eq!(total, 2000, "{strategy:?}");
        let ledger = ledger.lock().unwrap().clone();
        assert_eq!(ledger.len(), 2000, "{strategy:?}");
        eprintln!("{strategy:?}: 2000 claimed by 8 claimers, {conflicts} conflicts");

        // The index agrees with the ledger.
        store.refresh_index().await.unwrap();
        let mut query = TaskQuery::new().with_size(1000);
        let mut seen = 0;
        loop {
            let page = store.fetch(&query).await.unwrap();
            for task in &page.tasks {
                assert_eq!(task.status, TaskStatus::Running);
                assert_eq!(task.attempts, 1, "claimed once");
                assert_eq!(task.owner_id.as_ref(), ledger.get(&task.id));
                seen += 1;
            }
            match page.next {
                Some(cursor) => query = query.after(cursor),
                None => break,
            }
        }
        assert_eq!(seen, 2000);
        store.delete_index().await.unwrap();
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_first_owner_loses_its_write() {
    for strategy in STRATEGIES {
        let (first, clock) = manual_store("lease", strategy).await;
        let second = sibling(&first, &clock, strategy);
        first
            .schedule(
                TaskInstance::new("job")
                    .with_id("recurring")
                    .unwrap()
                    .with_run_at(clock_now(&first) - TimeDelta::seconds(1))
                    .with_interval("1h".parse().unwrap()),
            )
            .await
            .unwrap();
        first.refresh_index().await.unwrap();
        let lease = Duration::from_secs(30);
        let claim = first
            .claim(&request("first", &["job"]).with_default_lease(lease))
            .await
            .unwrap();
        assert_eq!(claim.claimed.len(), 1, "{strategy:?}");
        let held_by_first = claim.claimed[0].clone();
        first.refresh_index().await.unwrap();

        // While the lease holds, nobody else gets it.
        let early = second.claim(&request("second", &["job"])).await.unwrap();
        assert!(early.claimed.is_empty());

        clock.advance(TimeDelta::seconds(31));
        let claim = second.claim(&request("second", &["job"])).await.unwrap();
        assert_eq!(claim.claimed.len(), 1, "{strategy:?}");
        let held_by_second = claim.claimed[0].clone();
        assert_eq!(held_by_second.attempts, 2);

        let err = first
            .mark_success(
                &held_by_first,
                json!({"by": "first"}).as_object().unwrap().clone(),
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
        second
            .mark_success(
                &held_by_second,
                json!({"by": "second"}).as_object().unwrap().clone(),
                None,
            )
            .await
            .unwrap();
        let stored = first.get(&held_by_first.id).await.unwrap();
        assert_eq!(stored.state["by"], "second");
        assert_eq!(stored.status, TaskStatus::Idle);
        assert_eq!(stored.attempts, 0);
        assert_eq!(stored.owner_id, None);
        // Late writes of the first owner keep failing.
        let err = first.release(&held_by_first).await.unwrap_err();
        assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
        first.delete_index().await.unwrap();
    }
}

fn clock_now(store: &ElasticsearchTaskStore) -> chrono::DateTime<Utc> {
    store.now()
}

#[tokio::test]
async fn a_candidate_changed_after_the_search_saw_it_is_not_claimed_and_is_counted() {
    let (store, clock) = manual_store("stale", ClaimStrategy::Optimistic).await;
    let raw = Raw::new();
    schedule_due(&store, "job", 1, "s").await;
    // Stop periodic refreshes so the search keeps seeing the old version.
    let (status, body) = raw
        .send(
            Method::Put,
            &format!("/{}/_settings", store.index()),
            Some(json!({"index": {"refresh_interval": "-1"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let task = store.get(&TaskId::new("s-00000").unwrap()).await.unwrap();
    let mut changed = task.clone();
    changed.params = json!({"edited": true}).as_object().unwrap().clone();
    store.update(&changed).await.unwrap();

    let claim = store.claim(&request("me", &["job"])).await.unwrap();
    assert!(claim.claimed.is_empty());
    assert_eq!(claim.conflicts, 1);
    assert!(claim.errors.is_empty());

    // Once the search sees the new version, the task is claimable again. (The store that
    // lost the race leaves it out of its own searches for a few seconds, so ask another.)
    store.refresh_index().await.unwrap();
    let other = sibling(&store, &clock, ClaimStrategy::Optimistic);
    let claim = other.claim(&request("other", &["job"])).await.unwrap();
    assert_eq!(claim.claimed.len(), 1);
    assert_eq!(claim.claimed[0].params["edited"], true);
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn unregistered_types_never_fill_a_claim() {
    for strategy in STRATEGIES {
        let (store, _clock) = manual_store("unregistered", strategy).await;
        let old = store.now() - TimeDelta::hours(1);
        let foreign: Vec<TaskInstance> = (0..1000)
            .map(|_| {
                TaskInstance::new("nobody-runs-this")
                    .with_run_at(old)
                    .with_priority(100)
            })
            .collect();
        assert!(store
            .bulk_schedule(foreign)
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok));
        schedule_due(&store, "mine", 10, "m").await;
        let claim = store
            .claim(&request("me", &["mine"]).with_capacity(10))
            .await
            .unwrap();
        assert_eq!(claim.claimed.len(), 10, "{strategy:?}");
        assert!(claim.claimed.iter().all(|t| t.task_type == "mine"));
        store.delete_index().await.unwrap();
    }
}

#[tokio::test]
async fn a_running_document_without_retry_at_is_claimable() {
    for strategy in STRATEGIES {
        let (store, _clock) = manual_store("no-retry-at", strategy).await;
        let raw = Raw::new();
        let mut doc: Value =
            serde_json::from_str(include_str!("fixtures/kibana_task.json")).unwrap();
        doc["task"]["status"] = json!("running");
        doc["task"]["ownerId"] = json!("kibana-instance-that-died");
        doc["task"]["retryAt"] = Value::Null;
        doc["task"]["startedAt"] = json!("2023-05-10T09:13:46.000Z");
        let (status, body) = raw
            .send(
                Method::Put,
                &format!("/{}/_doc/task:orphan?refresh=true", store.index()),
                Some(doc),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let claim = store
            .claim(&request("me", &["alerting:.index-threshold"]))
            .await
            .unwrap();
        assert_eq!(claim.claimed.len(), 1, "{strategy:?}");
        assert_eq!(claim.claimed[0].owner_id.as_deref(), Some("me"));
        assert!(claim.claimed[0].retry_at.is_some());
        store.delete_index().await.unwrap();
    }
}

#[tokio::test]
async fn disabled_and_future_tasks_are_never_claimed() {
    for strategy in STRATEGIES {
        let (store, clock) = manual_store("never", strategy).await;
        let now = store.now();
        store
            .bulk_schedule(vec![
                TaskInstance::new("job")
                    .with_run_at(now - TimeDelta::hours(1))
                    .with_enabled(false),
                TaskInstance::new("job").with_run_at(now + TimeDelta::minutes(10)),
            ])
            .await
            .unwrap();
        store.refresh_index().await.unwrap();
        let claim = store.claim(&request("me", &["job"])).await.unwrap();
        assert!(claim.claimed.is_empty(), "{strategy:?}");
        clock.advance(TimeDelta::minutes(11));
        let claim = store.claim(&request("me", &["job"])).await.unwrap();
        assert_eq!(
            claim.claimed.len(),
            1,
            "the future task became due; the disabled one never does"
        );
        assert!(claim.claimed[0].enabled);
        store.delete_index().await.unwrap();
    }
}

#[tokio::test]
async fn claiming_on_a_missing_index_is_index_missing() {
    for strategy in STRATEGIES {
        let store = builder("claim-missing")
            .with_claim_strategy(strategy)
            .build()
            .unwrap();
        let err = store.claim(&request("me", &["job"])).await.unwrap_err();
        assert!(
            matches!(err, Error::IndexMissing { .. }),
            "{strategy:?}: {err:?}"
        );
        assert!(!Raw::new().index_exists(store.index()).await);
    }
}

#[tokio::test]
async fn a_task_removed_while_claimed_stays_removed() {
    let (store, _clock) = manual_store("removed", ClaimStrategy::Optimistic).await;
    schedule_due(&store, "job", 1, "one-off").await;
    store
        .schedule(
            TaskInstance::new("job")
                .with_id("recurring")
                .unwrap()
                .with_run_at(store.now() - TimeDelta::minutes(1))
                .with_interval("5m".parse().unwrap()),
        )
        .await
        .unwrap();
    store.refresh_index().await.unwrap();
    let claim = store.claim(&request("me", &["job"])).await.unwrap();
    assert_eq!(claim.claimed.len(), 2);
    for task in &claim.claimed {
        store.remove(&task.id).await.unwrap();
        let err = store
            .mark_success(task, serde_json::Map::new(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Removed { id } if *id == task.id.as_str()),
            "{err:?}"
        );
        let err = store
            .mark_failure(task, "boom", &RetryPolicy::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Removed { .. }), "{err:?}");
        let err = store.release(task).await.unwrap_err();
        assert!(matches!(err, Error::Removed { .. }), "{err:?}");
        assert!(matches!(
            store.get(&task.id).await,
            Err(Error::NotFound { .. })
        ));
    }
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn success_failure_release_and_renewal_write_their_rules() {
    let (store, clock) = manual_store("outcomes", ClaimStrategy::Optimistic).await;
    schedule_due(&store, "job", 3, "o").await;
    let claim = store.claim(&request("me", &["job"])).await.unwrap();
    assert_eq!(claim.claimed.len(), 3);
    let mut tasks = claim.claimed.clone();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));

    // One-off success deletes.
    assert_eq!(
        store
            .mark_success(&tasks[0], serde_json::Map::new(), None)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        store.get(&tasks[0].id).await,
        Err(Error::NotFound { .. })
    ));

    // Failure with attempts left: idle, retried after the first backoff, attempt kept.
    store
        .mark_failure(&tasks[1], "boom", &RetryPolicy::default())
        .await
        .unwrap();
    let failed = store.get(&tasks[1].id).await.unwrap();
    assert_eq!(failed.status, TaskStatus::Idle);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.run_at, clock.now() + TimeDelta::seconds(30));
    assert_eq!(failed.owner_id, None);

    // Renewal extends the lease and moves the version on; release gives it back uncounted.
    let mut held = tasks[2].clone();
    clock.advance(TimeDelta::minutes(1));
    let before = held.version.unwrap();
    store
        .renew_lease(&mut held, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(held.version.unwrap() > before);
    assert_eq!(held.retry_at, Some(clock.now() + TimeDelta::minutes(10)));
    let stored = store.get(&held.id).await.unwrap();
    assert_eq!(stored.retry_at, held.retry_at);
    // The claim's original version is stale now.
    assert!(matches!(
        store.release(&tasks[2]).await,
        Err(Error::LeaseLost { .. })
    ));
    store.release(&held).await.unwrap();
    let released = store.get(&held.id).await.unwrap();
    assert_eq!(
        (released.status, released.attempts, released.retry_at),
        (TaskStatus::Idle, 0, None)
    );
    store.refresh_index().await.unwrap();
    let again = store.claim(&request("other", &["job"])).await.unwrap();
    assert!(
        again.claimed.iter().any(|t| t.id == held.id),
        "a released task is claimable at once"
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn a_one_off_out_of_attempts_ends_failed_with_its_last_error() {
    let (store, clock) = manual_store("failed", ClaimStrategy::Optimistic).await;
    schedule_due(&store, "job", 1, "f").await;
    let policy = RetryPolicy::default();
    for attempt in 1..=3 {
        store.refresh_index().await.unwrap();
        let claim = store.claim(&request("me", &["job"])).await.unwrap();
        assert_eq!(claim.claimed.len(), 1, "attempt {attempt}");
        assert_eq!(claim.claimed[0].attempts, attempt);
        store
            .mark_failure(&claim.claimed[0], &format!("failure {attempt}"), &policy)
            .await
            .unwrap();
        clock.advance(TimeDelta::hours(2));
    }
    let task = store.get(&TaskId::new("f-00000").unwrap()).await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.last_error.as_deref(), Some("failure 3"));
    store.refresh_index().await.unwrap();
    assert!(store
        .claim(&request("me", &["job"]))
        .await
        .unwrap()
        .claimed
        .is_empty());
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn unrecognized_types_are_marked_and_stuck_tasks_listed() {
    let (store, clock) = manual_store("maintenance", ClaimStrategy::Optimistic).await;
    schedule_due(&store, "gone", 3, "g").await;
    schedule_due(&store, "job", 2, "j").await;
    let marked = store
        .with_refresh(es_task_store::Refresh::WaitFor)
        .mark_unrecognized(&["job".to_owned()])
        .await
        .unwrap();
    assert_eq!(marked, 3);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.by_status.get("unrecognized"), Some(&3));

    let claim = store
        .claim(&request("crashed-worker", &["job"]).with_default_lease(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(claim.claimed.len(), 2);
    store.refresh_index().await.unwrap();
    assert!(store
        .stuck(Duration::from_secs(600), 100)
        .await
        .unwrap()
        .tasks
        .is_empty());
    clock.advance(TimeDelta::minutes(20));
    let stuck = store.stuck(Duration::from_secs(600), 100).await.unwrap();
    assert_eq!(stuck.tasks.len(), 2);
    assert!(stuck
        .tasks
        .iter()
        .all(|t| t.owner_id.as_deref() == Some("crashed-worker")));
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn unreadable_documents_never_block_claims() {
    let (store, _clock) = manual_store("unreadable", ClaimStrategy::Optimistic).await;
    let raw = Raw::new();
    // 30 documents ahead of everything (highest priority) that cannot be read as tasks.
    let mut doc: Value = serde_json::from_str(include_str!("fixtures/kibana_task.json")).unwrap();
    doc["task"]["taskType"] = json!("job");
    doc["task"]["schedule"]["interval"] = json!("PT1M");
    doc["task"]["priority"] = json!(i32::MAX);
    for i in 0..30 {
        let (status, body) = raw
            .send(
                Method::Put,
                &format!("/{}/_doc/task:bad-{i}", store.index()),
                Some(doc.clone()),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    schedule_due(&store, "job", 5, "good").await;
    let mut claimed = 0;
    let mut skipped = 0;
    for _ in 0..2 {
        let claim = store
            .claim(&request("me", &["job"]).with_capacity(5))
            .await
            .unwrap();
        claimed += claim.claimed.len();
        skipped += claim.skipped.len();
    }
    assert_eq!(
        claimed, 5,
        "the readable tasks are claimed despite the unreadable ones"
    );
    assert!(
        skipped >= 20,
        "unreadable documents are reported: {skipped}"
    );
    // Reported once, then left out of this store's searches.
    let again = store.claim(&request("me", &["job"])).await.unwrap();
    assert!(again.skipped.is_empty());
    store.delete_index().await.unwrap();
}
