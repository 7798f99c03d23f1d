//! The main job: a tour of the store, then two workers draining about 2,000 tasks.
//!
//! Run it with `cargo xtask demo` (starts a local engine), or against your own engine:
//! `ELASTICSEARCH_URL=http://localhost:9200 cargo run --release --example quickstart`.
//!
//! It is safe to run again: the recurring task has a fixed id and is scheduled with
//! `ensure_scheduled`; the one-off tasks of each run carry the run's own scope.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_task_store::worker::{
    RunOutput, TaskContext, TaskDefinition, TaskError, Worker, WorkerStats,
};
use es_task_store::{
    ElasticsearchTaskStore, Error, IndexStatus, Interval, RetryPolicy, TaskInstance, TaskQuery,
    TaskStatus,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use tracing_subscriber::EnvFilter;

const TASKS: usize = 2_000;

/// One handler invocation, as the demo's handlers record it.
#[derive(Debug, Clone)]
struct RunRecord {
    task_type: String,
    attempt: u32,
    ok: bool,
    /// From `runAt` to the start of the run.
    latency_ms: i64,
}

type Ledger = Arc<Mutex<Vec<RunRecord>>>;

/// What a demo handler does: how long the work takes and the state it returns, or an error.
type Work = fn(&TaskContext) -> Result<(Duration, Map<String, Value>), TaskError>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let store = ElasticsearchTaskStore::from_env()?;
    println!("es-task-store demo: index `{}`", store.index());

    // 1. The index: created with the fixed mapping, or verified.
    match store.ensure_index().await? {
        IndexStatus::Created { concrete_index } => println!(
            "created index {concrete_index} behind alias {}",
            store.index()
        ),
        IndexStatus::Verified => println!("index {} exists; mapping verified", store.index()),
    }

    // 2. Scheduling: a recurring task with a fixed id (safe on every start) and ~2,000 one-offs.
    let heartbeat = store
        .ensure_scheduled(
            TaskInstance::new("heartbeat")
                .with_id("demo-heartbeat")?
                .with_interval(Interval::seconds(2)?)
                .with_state(json!({ "beats": 0 })),
        )
        .await?;
    println!(
        "recurring task {} every 2s (state {})",
        heartbeat.id,
        Value::Object(heartbeat.state.clone())
    );
    let run_scope = format!("demo-run-{}", &uuid_suffix());
    let started_scheduling = Instant::now();
    let mut scheduled = 0;
    for chunk in demo_tasks(&run_scope).chunks(500) {
        for result in store.bulk_schedule(chunk.to_vec()).await? {
            result?;
            scheduled += 1;
        }
    }
    println!(
        "scheduled {scheduled} one-off tasks in {:.2}s (scope {run_scope})",
        started_scheduling.elapsed().as_secs_f64()
    );
    store.refresh_index().await?;

    // 3. Reading back page by page, updating with versions, a losing update, removals.
    tour(&store, &run_scope).await?;

    // 4. Two workers side by side.
    let ledger: Ledger = Arc::default();
    let started = Instant::now();
    let workers: Vec<Worker> = (1..=2)
        .map(|n| build_worker(&store, &ledger, n))
        .collect::<Result<_, _>>()?;
    let total_one_offs = count_open(&store, &run_scope).await?;
    let shutdowns: Vec<_> = workers.iter().map(Worker::shutdown_handle).collect();
    let counters: Vec<_> = workers.iter().map(Worker::counters).collect();
    let handles: Vec<_> = workers.into_iter().map(|w| tokio::spawn(w.run())).collect();
    let bar = ProgressBar::new(total_one_offs);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} one-off tasks done  {msg}",
    )?);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let open = count_open(&store, &run_scope).await?;
        bar.set_position(total_one_offs.saturating_sub(open));
        let claimed: u64 = counters.iter().map(|c| c.snapshot().claimed).sum();
        bar.set_message(format!("{claimed} claims"));
        if open == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bar.abandon_with_message("giving up after 10 minutes");
            break;
        }
    }
    bar.finish();
    let elapsed = started.elapsed();
    for shutdown in &shutdowns {
        shutdown.shutdown();
    }
    let mut stats = Vec::new();
    for handle in handles {
        stats.push(handle.await?);
    }
    summary(&store, &run_scope, &ledger, &stats, elapsed).await?;
    Ok(())
}

fn uuid_suffix() -> String {
    es_task_store::TaskId::random().as_str()[..8].to_owned()
}

/// The one-off tasks of a run: emails, reports, thumbnails, and a few video transcodes.
fn demo_tasks(scope: &str) -> Vec<TaskInstance> {
    (0..TASKS)
        .map(|i| {
            let (task_type, params) = match i % 20 {
                0..=9 => ("email.send", json!({ "to": format!("user{i}@example.com"), "template": "welcome" })),
                10..=14 => ("report.render", json!({ "report": "sales", "quarter": format!("Q{}", i % 4 + 1), "format": "pdf" })),
                15..=18 => ("thumbnail.generate", json!({ "image": format!("s3://photos/{i}.jpg"), "sizes": [64, 256] })),
                _ => ("video.transcode", json!({ "video": format!("s3://videos/{i}.mp4"), "codec": "av1" })),
            };
            TaskInstance::new(task_type)
                .with_params(params)
                .with_scope([scope])
                .with_priority(if task_type == "email.send" { 60 } else { 50 })
        })
        .collect()
}

async fn tour(store: &ElasticsearchTaskStore, scope: &str) -> Result<(), Error> {
    let mut query = TaskQuery::new().with_scope(scope).with_size(500);
    let (mut pages, mut seen) = (0, 0);
    let mut first_page = Vec::new();
    loop {
        let page = store.fetch(&query).await?;
        pages += 1;
        seen += page.tasks.len();
        if first_page.is_empty() {
            first_page = page.tasks.clone();
        }
        match page.next {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    println!("fetched {seen} tasks back in {pages} pages of up to 500 (search_after)");

    // Raise the priority of some reports, each update conditional on the version read.
    let mut reports: Vec<_> = first_page
        .iter()
        .filter(|t| t.task_type == "report.render")
        .take(50)
        .cloned()
        .collect();
    for task in &mut reports {
        task.priority = 70;
    }
    let updated = store
        .bulk_update(&reports)
        .await?
        .into_iter()
        .filter(Result::is_ok)
        .count();
    println!("raised the priority of {updated} reports (bulk, conditional on each version)");

    // Two writers holding the same version: exactly one wins.
    let mut task = store.get(&first_page[0].id).await?;
    let mut stale = task.clone();
    task.priority = 90;
    stale.priority = 10;
    store.update(&task).await?;
    match store.update(&stale).await {
        Err(Error::Conflict { id }) => {
            println!("a second update with the same version lost: Conflict on {id}")
        }
        other => println!("unexpected: {other:?}"),
    }

    // Remove a few thumbnails (removal is idempotent).
    let doomed: Vec<_> = first_page
        .iter()
        .filter(|t| t.task_type == "thumbnail.generate")
        .take(20)
        .map(|t| t.id.clone())
        .collect();
    store.bulk_remove(&doomed).await?;
    store.bulk_remove(&doomed).await?;
    println!(
        "removed {} thumbnail tasks (twice; the second time is a no-op)",
        doomed.len()
    );
    store.refresh_index().await?;
    let stats = store.stats().await?;
    println!(
        "stats: {} tasks, by status {:?}, {} overdue (oldest runAt {})",
        stats.total,
        stats.by_status,
        stats.overdue,
        stats
            .oldest_overdue_run_at
            .map(es_task_store::es::document::format_date)
            .unwrap_or_default()
    );
    Ok(())
}

fn build_worker(
    store: &ElasticsearchTaskStore,
    ledger: &Ledger,
    n: usize,
) -> Result<Worker, Error> {
    // Quick retries for the demo; production defaults start at 30 s.
    let retry = RetryPolicy {
        max_attempts: 3,
        first_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(4),
    };
    let def = |task_type: &str, work: Work| {
        let ledger = ledger.clone();
        let task_type_owned = task_type.to_owned();
        TaskDefinition::new(task_type, move |ctx: TaskContext| {
            let ledger = ledger.clone();
            let task_type = task_type_owned.clone();
            async move {
                let task = &ctx.task;
                let latency_ms = task
                    .started_at
                    .map_or(0, |s| (s - task.run_at).num_milliseconds().max(0));
                let outcome = work(&ctx);
                // Recorded at the start, so runs cancelled by their timeout are counted too.
                ledger.lock().unwrap().push(RunRecord {
                    task_type,
                    attempt: task.attempts,
                    ok: outcome.is_ok(),
                    latency_ms,
                });
                if let Ok((duration, _)) = &outcome {
                    tokio::time::sleep(*duration).await;
                }
                outcome.map(|(_, state)| RunOutput::with_state(state))
            }
        })
        .with_retry_policy(retry)
    };
    Worker::builder(store.clone())
        .with_owner_id(format!("demo-worker-{n}"))
        .with_capacity(25)
        .with_shutdown_timeout(Duration::from_secs(5))
        .register(def("email.send", |_| {
            if fastrand::u8(..100) < 5 {
                return Err(TaskError::retryable(
                    "SMTP server said 421: try again later",
                ));
            }
            Ok((Duration::from_millis(fastrand::u64(2..10)), Map::new()))
        }))
        .register(def("report.render", |_| {
            if fastrand::u8(..100) < 2 {
                return Err(TaskError::retryable("renderer crashed"));
            }
            Ok((Duration::from_millis(fastrand::u64(20..80)), Map::new()))
        }))
        .register(def("thumbnail.generate", |ctx| {
            if ctx
                .params()
                .get("sizes")
                .and_then(Value::as_array)
                .is_none()
            {
                return Err(TaskError::fatal("no sizes given"));
            }
            Ok((Duration::from_millis(fastrand::u64(5..20)), Map::new()))
        }))
        .register(
            // The first attempt of each transcode hangs and is cancelled by its timeout.
            def("video.transcode", |ctx| {
                let duration = if ctx.task.attempts == 1 { 5_000 } else { 100 };
                Ok((Duration::from_millis(duration), Map::new()))
            })
            .with_timeout(Duration::from_secs(1)),
        )
        .register(def("heartbeat", |ctx| {
            let beats = ctx
                .state()
                .get("beats")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                + 1;
            let mut state = Map::new();
            state.insert("beats".into(), json!(beats));
            Ok((Duration::ZERO, state))
        }))
        .build()
}

/// One-off tasks of this run not yet done (idle or held).
async fn count_open(store: &ElasticsearchTaskStore, scope: &str) -> Result<u64, Error> {
    let mut query = TaskQuery::new().with_scope(scope).with_size(10_000);
    for status in [TaskStatus::Idle, TaskStatus::Running, TaskStatus::Claiming] {
        query = query.with_status(status);
    }
    Ok(store.fetch(&query).await?.tasks.len() as u64)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn summary(
    store: &ElasticsearchTaskStore,
    scope: &str,
    ledger: &Ledger,
    stats: &[WorkerStats],
    elapsed: Duration,
) -> Result<(), Error> {
    let records = ledger.lock().unwrap().clone();
    let failed = store
        .fetch(
            &TaskQuery::new()
                .with_scope(scope)
                .with_status(TaskStatus::Failed)
                .with_size(10_000),
        )
        .await?;
    let mut by_type: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for record in &records {
        by_type.entry(&record.task_type).or_default().push(record);
    }
    println!();
    println!(
        "{:<20} {:>6} {:>8} {:>9} {:>7} {:>12} {:>12}",
        "type", "runs", "retries", "errors", "failed", "p50 start", "p99 start"
    );
    for (task_type, runs) in &by_type {
        let mut latencies: Vec<i64> = runs.iter().map(|r| r.latency_ms).collect();
        latencies.sort_unstable();
        let retries = runs.iter().filter(|r| r.attempt > 1).count();
        let errors = runs.iter().filter(|r| !r.ok).count();
        let ended_failed = failed
            .tasks
            .iter()
            .filter(|t| t.task_type == *task_type)
            .count();
        println!(
            "{:<20} {:>6} {:>8} {:>9} {:>7} {:>10}ms {:>10}ms",
            task_type,
            runs.len(),
            retries,
            errors,
            ended_failed,
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0)
        );
    }
    let total = stats.iter().fold(WorkerStats::default(), |mut acc, s| {
        acc.claimed += s.claimed;
        acc.succeeded += s.succeeded;
        acc.retried += s.retried;
        acc.failed += s.failed;
        acc.timed_out += s.timed_out;
        acc.lease_lost += s.lease_lost;
        acc.conflicts += s.conflicts;
        acc
    });
    println!();
    println!(
        "2 workers: {} claimed, {} succeeded, {} retried ({} timed out), {} failed for good, {} lease lost, {} claim conflicts",
        total.claimed, total.succeeded, total.retried, total.timed_out, total.failed, total.lease_lost, total.conflicts
    );
    println!(
        "{} runs in {:.1}s: {:.0} tasks/s (runs include deliberate sleeps, failures and retry backoff)",
        records.len(),
        elapsed.as_secs_f64(),
        total.succeeded as f64 / elapsed.as_secs_f64()
    );
    let heartbeat = store
        .get(&es_task_store::TaskId::new("demo-heartbeat")?)
        .await?;
    println!(
        "heartbeat: {} beats so far, next run at {}",
        heartbeat.state.get("beats").cloned().unwrap_or(json!(0)),
        es_task_store::es::document::format_date(heartbeat.run_at)
    );
    Ok(())
}
