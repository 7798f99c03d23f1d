//! The worker on a real engine: after-run rules, timeouts, leases, concurrency, shutdown.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::{builder, ensure_index};
use es_task_store::worker::{
    RunOutput, TaskContext, TaskDefinition, TaskError, Worker, WorkerStats,
};
use es_task_store::{
    ClaimRequest, Clock, ElasticsearchTaskStore, Error, ManualClock, Refresh, TaskId, TaskInstance,
    TaskStatus,
};
use serde_json::json;
use tokio::sync::Notify;

/// A store on a new index, writes refreshed so the next claim sees them.
async fn store_with(prefix: &str, clock: Option<ManualClock>) -> ElasticsearchTaskStore {
    let mut b = builder(prefix).with_refresh(Refresh::True);
    if let Some(clock) = clock {
        b = b.with_clock(Arc::new(clock));
    }
    let store = b.build().unwrap();
    ensure_index(&store).await;
    store
}

fn fast_worker(store: &ElasticsearchTaskStore) -> es_task_store::worker::WorkerBuilder {
    Worker::builder(store.clone())
        .with_poll_interval(Duration::from_millis(50))
        .with_idle_interval(Duration::from_millis(100))
        .with_shutdown_timeout(Duration::from_secs(5))
}

/// Runs `worker` in the background; the returned closure stops it and returns its counters.
fn start(worker: Worker) -> impl FnOnce() -> tokio::task::JoinHandle<WorkerStats> {
    let shutdown = worker.shutdown_handle();
    let handle = tokio::spawn(worker.run());
    move || {
        shutdown.shutdown();
        handle
    }
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, h, m, s).unwrap()
}

fn id(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}

/// A handler that counts its runs.
fn counting(
    runs: Arc<AtomicU32>,
) -> impl Fn(TaskContext) -> std::future::Ready<Result<RunOutput, TaskError>> {
    move |_ctx| {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(RunOutput::default()))
    }
}

/// A task due at 12:00 every 5 minutes, a store whose clock reads `now`, and a worker running
/// it that counts its runs.
async fn every_5m_from_noon(
    prefix: &str,
    now: DateTime<Utc>,
) -> (
    ElasticsearchTaskStore,
    Arc<AtomicU32>,
    impl FnOnce() -> tokio::task::JoinHandle<WorkerStats>,
) {
    let store = store_with(prefix, Some(ManualClock::new(now))).await;
    store
        .schedule(
            TaskInstance::new("tick")
                .with_id("every-5m")
                .unwrap()
                .with_run_at(at(12, 0, 0))
                .with_interval("5m".parse().unwrap()),
        )
        .await
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let stop = start(
        fast_worker(&store)
            .register(TaskDefinition::new("tick", counting(runs.clone())))
            .build()
            .unwrap(),
    );
    (store, runs, stop)
}

#[tokio::test]
async fn recurring_success_keeps_the_phase() {
    let (store, runs, stop) = every_5m_from_noon("phase", at(12, 0, 3)).await;
    eventually("the run", Duration::from_secs(20), || async {
        store.get(&id("every-5m")).await.unwrap().run_at != at(12, 0, 0)
    })
    .await;
    let task = store.get(&id("every-5m")).await.unwrap();
    assert_eq!(task.run_at, at(12, 5, 0));
    assert_eq!(task.status, TaskStatus::Idle);
    stop().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn after_an_outage_a_recurring_task_runs_once_then_keeps_the_phase() {
    let (store, runs, stop) = every_5m_from_noon("outage", at(14, 0, 0)).await;
    eventually("the run", Duration::from_secs(20), || async {
        runs.load(Ordering::SeqCst) >= 1
            && store.get(&id("every-5m")).await.unwrap().status == TaskStatus::Idle
    })
    .await;
    // Give the worker several more polls: no catch-up burst.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop().await.unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one run, not one per missed interval"
    );
    assert_eq!(
        store.get(&id("every-5m")).await.unwrap().run_at,
        at(14, 5, 0)
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn attempts_count_failures_and_reset_on_success_for_a_recurring_task() {
    let clock = ManualClock::new(at(12, 0, 0));
    let store = store_with("attempts", Some(clock.clone())).await;
    store
        .schedule(
            TaskInstance::new("flaky")
                .with_id("r")
                .unwrap()
                .with_run_at(at(11, 59, 0))
                .with_interval("5m".parse().unwrap()),
        )
        .await
        .unwrap();
    let script = Arc::new(Mutex::new(vec![false, false, true, false].into_iter()));
    let runs = Arc::new(AtomicU32::new(0));
    let (s, r) = (script.clone(), runs.clone());
    let handler = move |_ctx: TaskContext| {
        let succeed = s.lock().unwrap().next().unwrap_or(true);
        r.fetch_add(1, Ordering::SeqCst);
        async move {
            if succeed {
                Ok(RunOutput::default())
            } else {
                Err(TaskError::retryable("flaked"))
            }
        }
    };
    let stop = start(
        fast_worker(&store)
            .register(TaskDefinition::new("flaky", handler).with_max_attempts(3))
            .build()
            .unwrap(),
    );
    let mut attempts_seen = Vec::new();
    for run in 1..=4 {
        eventually(&format!("run {run}"), Duration::from_secs(20), || async {
            runs.load(Ordering::SeqCst) >= run
                && store.get(&id("r")).await.unwrap().status == TaskStatus::Idle
        })
        .await;
        let task = store.get(&id("r")).await.unwrap();
        attempts_seen.push(task.attempts);
        assert!(task.schedule.is_some(), "stays scheduled");
        clock.advance(TimeDelta::hours(3));
    }
    stop().await.unwrap();
    assert_eq!(attempts_seen, [1, 2, 0, 1]);
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn a_one_off_failing_every_attempt_ends_failed_with_its_last_error() {
    let clock = ManualClock::new(at(12, 0, 0));
    let store = store_with("one-off-failed", Some(clock.clone())).await;
    store
        .schedule(
            TaskInstance::new("doomed")
                .with_id("d")
                .unwrap()
                .with_run_at(at(11, 0, 0)),
        )
        .await
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let handler = move |ctx: TaskContext| {
        r.fetch_add(1, Ordering::SeqCst);
        async move {
            Err(TaskError::retryable(format!(
                "attempt {} failed",
                ctx.task.attempts
            )))
        }
    };
    let stop = start(
        fast_worker(&store)
            .register(TaskDefinition::new("doomed", handler).with_max_attempts(3))
            .build()
            .unwrap(),
    );
    for run in 1..=3 {
        eventually(&format!("run {run}"), Duration::from_secs(20), || async {
            runs.load(Ordering::SeqCst) >= run
                && !store.get(&id("d")).await.unwrap().status.is_leased()
        })
        .await;
        clock.advance(TimeDelta::hours(3));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = stop().await.unwrap();
    let task = store.get(&id("d")).await.unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.attempts, 3);
    assert_eq!(task.last_error.as_deref(), Some("attempt 3 failed"));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "a failed task is not run again"
    );
    assert_eq!((stats.retried, stats.failed), (2, 1));
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn a_handler_outliving_its_timeout_is_cancelled_and_the_attempt_counted() {
    let store = store_with("timeout", None).await;
    store
        .schedule(TaskInstance::new("slow").with_id("s").unwrap())
        .await
        .unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let token_cancelled = Arc::new(AtomicBool::new(false));
    let (d, c) = (dropped.clone(), token_cancelled.clone());
    let handler = move |ctx: TaskContext| {
        let (d, c) = (d.clone(), c.clone());
        async move {
            struct Flag(Arc<AtomicBool>);
            impl Drop for Flag {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _flag = Flag(d);
            let cancel = ctx.cancel.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                c.store(true, Ordering::SeqCst);
            });
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(RunOutput::default())
        }
    };
    let stop = start(
        fast_worker(&store)
            .register(TaskDefinition::new("slow", handler).with_timeout(Duration::from_millis(300)))
            .build()
            .unwrap(),
    );
    eventually("the timeout", Duration::from_secs(20), || async {
        store.get(&id("s")).await.unwrap().status == TaskStatus::Idle
            && store.get(&id("s")).await.unwrap().attempts == 1
    })
    .await;
    let stats = stop().await.unwrap();
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler future was dropped"
    );
    assert!(
        token_cancelled.load(Ordering::SeqCst),
        "the handler's token was cancelled"
    );
    assert_eq!(stats.timed_out, 1);
    let task = store.get(&id("s")).await.unwrap();
    assert!(task.run_at > Utc::now(), "retried later");
    store.delete_index().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_run_each_one_off_task_exactly_once() {
    let store = builder("two-workers").build().unwrap();
    ensure_index(&store).await;
    let tasks: Vec<TaskInstance> = (0..400)
        .map(|i| {
            TaskInstance::new("job")
                .with_id(format!("j-{i:03}"))
                .unwrap()
        })
        .collect();
    assert!(store
        .bulk_schedule(tasks)
        .await
        .unwrap()
        .iter()
        .all(Result::is_ok));
    store.refresh_index().await.unwrap();
    let ledger: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let mut stops = Vec::new();
    for _ in 0..2 {
        let ledger = ledger.clone();
        let handler = move |ctx: TaskContext| {
            *ledger
                .lock()
                .unwrap()
                .entry(ctx.task.id.to_string())
                .or_default() += 1;
            async { Ok(RunOutput::default()) }
        };
        stops.push(start(
            fast_worker(&store)
                .register(TaskDefinition::new("job", handler))
                .with_capacity(20)
                .build()
                .unwrap(),
        ));
    }
    eventually("all tasks done", Duration::from_secs(60), || async {
        store.refresh_index().await.unwrap();
        store.stats().await.unwrap().total == 0
    })
    .await;
    let mut total = WorkerStats::default();
    for stop in stops {
        let stats = stop().await.unwrap();
        total.succeeded += stats.succeeded;
        total.lease_lost += stats.lease_lost;
    }
    let ledger = ledger.lock().unwrap().clone();
    assert_eq!(ledger.len(), 400);
    assert!(ledger.values().all(|runs| *runs == 1), "a task ran twice");
    assert_eq!(total.succeeded, 400);
    assert_eq!(total.lease_lost, 0);
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_does_not_overwrite_the_new_owner() {
    let clock = ManualClock::new(at(12, 0, 0));
    let store = store_with("takeover", Some(clock.clone())).await;
    store
        .schedule(
            TaskInstance::new("job")
                .with_id("t")
                .unwrap()
                .with_run_at(at(11, 0, 0))
                .with_interval("1h".parse().unwrap()),
        )
        .await
        .unwrap();
    let started = Arc::new(Notify::new());
    let finish = Arc::new(Notify::new());
    let (s, f) = (started.clone(), finish.clone());
    let handler = move |_ctx: TaskContext| {
        let (s, f) = (s.clone(), f.clone());
        async move {
            s.notify_one();
            f.notified().await;
            Ok(RunOutput::with_state(
                json!({"by": "worker"}).as_object().unwrap().clone(),
            ))
        }
    };
    let worker = fast_worker(&store)
        .register(TaskDefinition::new("job", handler).with_lease(Duration::from_secs(60)))
        .build()
        .unwrap();
    let stop = start(worker);
    started.notified().await;

    // The lease runs out (by the shared clock) and another process takes the task and
    // finishes it.
    clock.advance(TimeDelta::seconds(61));
    let usurper = builder("unused")
        .with_index(store.index())
        .with_clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let claim = usurper
        .claim(&ClaimRequest::new("usurper", ["job"]))
        .await
        .unwrap();
    assert_eq!(claim.claimed.len(), 1);
    usurper
        .mark_success(
            &claim.claimed[0],
            json!({"by": "usurper"}).as_object().unwrap().clone(),
            None,
        )
        .await
        .unwrap();

    finish.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = stop().await.unwrap();
    assert_eq!(stats.lease_lost, 1);
    assert_eq!(stats.succeeded, 0);
    let task = store.get(&id("t")).await.unwrap();
    assert_eq!(task.state["by"], "usurper");
    store.delete_index().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_run_keeps_its_lease_and_a_removal_cancels_it_at_the_next_renewal() {
    let store = store_with("renewal", None).await;
    store
        .schedule(TaskInstance::new("long").with_id("long").unwrap())
        .await
        .unwrap();
    let lease = Duration::from_millis(1000);
    let runs: Arc<Mutex<Vec<String>>> = Arc::default();
    let cancelled = Arc::new(AtomicBool::new(false));
    let make_worker = |name: &'static str| {
        let runs = runs.clone();
        let cancelled = cancelled.clone();
        let handler = move |ctx: TaskContext| {
            runs.lock().unwrap().push(format!("{name}:{}", ctx.task.id));
            let cancelled = cancelled.clone();
            let token = ctx.cancel.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                cancelled.store(true, Ordering::SeqCst);
            });
            async move {
                let run_for = if ctx.task.id.as_str() == "long" {
                    3500
                } else {
                    60_000
                };
                tokio::time::sleep(Duration::from_millis(run_for)).await;
                Ok(RunOutput::default())
            }
        };
        fast_worker(&store)
            .register(TaskDefinition::new("long", handler).with_lease(lease))
            .with_owner_id(name)
            .build()
            .unwrap()
    };
    let stop_first = start(make_worker("first"));
    eventually("first claims", Duration::from_secs(10), || async {
        !runs.lock().unwrap().is_empty()
    })
    .await;
    let stop_second = start(make_worker("second"));
    eventually("the long run ends", Duration::from_secs(20), || async {
        matches!(store.get(&id("long")).await, Err(Error::NotFound { .. }))
    })
    .await;
    assert_eq!(*runs.lock().unwrap(), ["first:long"], "nobody else ran it");

    // A removal during a run cancels the handler at the next renewal.
    store
        .schedule(TaskInstance::new("long").with_id("removed").unwrap())
        .await
        .unwrap();
    eventually(
        "the second task starts",
        Duration::from_secs(10),
        || async { runs.lock().unwrap().len() == 2 },
    )
    .await;
    store.remove(&id("removed")).await.unwrap();
    eventually(
        "the handler is cancelled",
        Duration::from_secs(5),
        || async { cancelled.load(Ordering::SeqCst) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        matches!(store.get(&id("removed")).await, Err(Error::NotFound { .. })),
        "not re-created"
    );
    let first = stop_first().await.unwrap();
    let second = stop_second().await.unwrap();
    assert_eq!(first.lease_lost + second.lease_lost, 1);
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn a_task_removed_while_its_handler_runs_is_not_recreated() {
    let store = store_with("removed-run", None).await;
    store
        .schedule(
            TaskInstance::new("job")
                .with_id("gone")
                .unwrap()
                .with_interval("1m".parse().unwrap()),
        )
        .await
        .unwrap();
    let started = Arc::new(Notify::new());
    let finish = Arc::new(Notify::new());
    let (s, f) = (started.clone(), finish.clone());
    let handler = move |_ctx: TaskContext| {
        let (s, f) = (s.clone(), f.clone());
        async move {
            s.notify_one();
            f.notified().await;
            Ok(RunOutput::default())
        }
    };
    let stop = start(
        fast_worker(&store)
            .register(TaskDefinition::new("job", handler))
            .build()
            .unwrap(),
    );
    started.notified().await;
    store.remove(&id("gone")).await.unwrap();
    finish.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = stop().await.unwrap();
    assert_eq!(stats.lease_lost, 1);
    assert!(matches!(
        store.get(&id("gone")).await,
        Err(Error::NotFound { .. })
    ));
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn shutdown_releases_unfinished_claims_so_they_are_claimable_at_once() {
    let store = store_with("shutdown", None).await;
    let tasks: Vec<TaskInstance> = (0..5)
        .map(|i| {
            TaskInstance::new("stuck")
                .with_id(format!("s-{i}"))
                .unwrap()
        })
        .collect();
    store.bulk_schedule(tasks).await.unwrap();
    store.refresh_index().await.unwrap();
    let started = Arc::new(AtomicU32::new(0));
    let s = started.clone();
    let handler = move |ctx: TaskContext| {
        s.fetch_add(1, Ordering::SeqCst);
        async move {
            ctx.cancel.cancelled().await;
            Err(TaskError::retryable("stopped"))
        }
    };
    let worker = fast_worker(&store)
        .register(TaskDefinition::new("stuck", handler))
        .with_shutdown_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let stop = start(worker);
    eventually("all five started", Duration::from_secs(10), || async {
        started.load(Ordering::SeqCst) == 5
    })
    .await;
    let stats = stop().await.unwrap();
    assert_eq!(stats.released, 5);
    store.refresh_index().await.unwrap();
    for i in 0..5 {
        let task = store.get(&id(&format!("s-{i}"))).await.unwrap();
        assert_eq!(
            (task.status, task.owner_id, task.attempts),
            (TaskStatus::Idle, None, 0)
        );
    }
    let claim = store
        .claim(&ClaimRequest::new("next", ["stuck"]).with_capacity(10))
        .await
        .unwrap();
    assert_eq!(
        claim.claimed.len(),
        5,
        "claimable at once, no lease to wait out"
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn the_handler_sees_params_state_attempts_and_traceparent() {
    let store = store_with("context", None).await;
    store
        .schedule(
            TaskInstance::new("echo")
                .with_id("e")
                .unwrap()
                .with_params(json!({"to": "x@example.com"}))
                .with_state(json!({"n": 1}))
                .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        )
        .await
        .unwrap();
    let seen: Arc<Mutex<Option<TaskContext>>> = Arc::default();
    let s = seen.clone();
    let handler = move |ctx: TaskContext| {
        *s.lock().unwrap() = Some(ctx);
        async { Ok(RunOutput::default()) }
    };
    let stop = start(
        fast_worker(&store)
            .register(TaskDefinition::new("echo", handler))
            .build()
            .unwrap(),
    );
    eventually("the run", Duration::from_secs(10), || async {
        seen.lock().unwrap().is_some()
    })
    .await;
    stop().await.unwrap();
    let ctx = seen.lock().unwrap().clone().unwrap();
    assert_eq!(ctx.params()["to"], "x@example.com");
    assert_eq!(ctx.state()["n"], 1);
    assert_eq!(ctx.task.attempts, 1);
    assert_eq!(
        ctx.traceparent(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn a_fatal_error_fails_a_one_off_at_once_and_a_panic_is_a_failed_attempt() {
    let store = store_with("fatal", None).await;
    store
        .schedule(TaskInstance::new("fatal").with_id("f").unwrap())
        .await
        .unwrap();
    store
        .schedule(TaskInstance::new("panics").with_id("p").unwrap())
        .await
        .unwrap();
    let stop = start(
        fast_worker(&store)
            .register(TaskDefinition::new("fatal", |_ctx: TaskContext| async {
                Err(TaskError::fatal("bad params"))
            }))
            .register(TaskDefinition::new("panics", |_ctx: TaskContext| async {
                panic!("handler bug");
                #[allow(unreachable_code)]
                Ok(RunOutput::default())
            }))
            .build()
            .unwrap(),
    );
    eventually("both ran", Duration::from_secs(10), || async {
        store.get(&id("f")).await.unwrap().status == TaskStatus::Failed
            && store.get(&id("p")).await.unwrap().attempts == 1
            && store.get(&id("p")).await.unwrap().status == TaskStatus::Idle
    })
    .await;
    stop().await.unwrap();
    assert_eq!(
        store.get(&id("f")).await.unwrap().last_error.as_deref(),
        Some("bad params")
    );
    store.delete_index().await.unwrap();
}

#[tokio::test]
async fn a_worker_needs_a_task_type_and_a_sane_capacity() {
    let store = builder("config").build().unwrap();
    assert!(Worker::builder(store.clone()).build().is_err());
    let def = TaskDefinition::new("t", |_ctx: TaskContext| async { Ok(RunOutput::default()) });
    assert!(Worker::builder(store.clone())
        .register(def.clone())
        .with_capacity(0)
        .build()
        .is_err());
    let worker = Worker::builder(store)
        .register(def)
        .with_owner_id("me")
        .build()
        .unwrap();
    assert_eq!(worker.owner_id(), "me");
    let _ = Clock::now(&es_task_store::SystemClock);
}
