//! The benchmarks behind BENCHMARKS.md, against a real engine, each beside the raw engine doing
//! the same requests with the same HTTP client, so the figures come as ratios.
//!
//! `cargo xtask bench` runs it (after the criterion micro benchmarks) and rewrites
//! BENCHMARKS.md and `benchmarks/throughput.svg`. `--quick` runs smaller sizes.
//!
//! Correctness checks run inside every scenario (each task done exactly once, no recurring run
//! skipped or doubled); a failed check aborts the run.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::Transport;
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use es_task_store::es::document::{encode_document, format_date};
use es_task_store::worker::{RunOutput, TaskContext, TaskDefinition, Worker, WorkerStats};
use es_task_store::{ClaimStrategy, ElasticsearchTaskStore, Interval, TaskInstance};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Sizes {
    schedule: usize,
    drain: usize,
    recurring: usize,
    recurring_secs: u64,
    rss_tasks: usize,
}

const FULL: Sizes = Sizes {
    schedule: 100_000,
    drain: 50_000,
    recurring: 5_000,
    recurring_secs: 60,
    rss_tasks: 10_000,
};
const QUICK: Sizes = Sizes {
    schedule: 10_000,
    drain: 5_000,
    recurring: 500,
    recurring_secs: 20,
    rss_tasks: 2_000,
};

const BATCH: usize = 1_000;
const WORKER_CAPACITY: usize = 100;
const WORKER_COUNTS: [usize; 3] = [1, 4, 8];

fn abort(msg: String) -> ! {
    eprintln!("bench: correctness check failed: {msg}");
    std::process::exit(3);
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = std::env::var("ELASTICSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into());
    if let Some(pos) = args.iter().position(|a| a == "--rss-probe") {
        let tasks: usize = args
            .get(pos + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        return rss_probe(&url, tasks).await;
    }
    if let Some(pos) = args.iter().position(|a| a == "--drain-only") {
        // For profiling: one draining scenario, printed, BENCHMARKS.md untouched.
        let n: usize = args
            .get(pos + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(20_000);
        let workers: usize = args.get(pos + 2).and_then(|n| n.parse().ok()).unwrap_or(1);
        let raw = Raw::new(&url)?;
        let cpu = cpu_secs();
        let lib = drain_library(&url, &raw, n, workers, ClaimStrategy::Optimistic).await?;
        let lib_cpu = cpu_secs() - cpu;
        let cpu = cpu_secs();
        let base = drain_raw(&raw, n, workers).await?;
        let raw_cpu = cpu_secs() - cpu;
        println!(
            "library {:.0} tasks/s ({:.1} µs client CPU per task), raw {:.0} tasks/s ({:.1} µs), ratio {:.2}",
            lib.tasks_per_sec,
            lib_cpu / n as f64 * 1e6,
            base.tasks_per_sec,
            raw_cpu / n as f64 * 1e6,
            lib.tasks_per_sec / base.tasks_per_sec
        );
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sizes = if quick { QUICK } else { FULL };
    let raw = Raw::new(&url)?;
    let mut report = Report {
        machine: machine(&raw).await?,
        quick,
        ..Report::default()
    };
    eprintln!("bench: {}", report.machine.replace('\n', "; "));

    eprintln!(
        "bench: scheduling {} tasks, library vs raw _bulk",
        sizes.schedule
    );
    report.schedule = Some(schedule_bench(&url, &raw, sizes.schedule).await?);

    for strategy in [ClaimStrategy::Optimistic, ClaimStrategy::UpdateByQuery] {
        for workers in WORKER_COUNTS {
            eprintln!(
                "bench: draining {} tasks, {strategy:?}, {workers} workers",
                sizes.drain
            );
            let row = drain_library(&url, &raw, sizes.drain, workers, strategy).await?;
            eprintln!("bench:   {:.0} tasks/s", row.tasks_per_sec);
            report.drain.push(row);
        }
    }
    for workers in WORKER_COUNTS {
        eprintln!(
            "bench: draining {} tasks, raw requests, {workers} loops",
            sizes.drain
        );
        let row = drain_raw(&raw, sizes.drain, workers).await?;
        eprintln!("bench:   {:.0} tasks/s", row.tasks_per_sec);
        report.drain.push(row);
    }

    eprintln!(
        "bench: {} recurring tasks every 10s for {}s, 4 workers",
        sizes.recurring, sizes.recurring_secs
    );
    report.recurring =
        Some(recurring_bench(&url, &raw, sizes.recurring, sizes.recurring_secs).await?);

    eprintln!(
        "bench: peak RSS of a worker holding {} claimed tasks",
        sizes.rss_tasks
    );
    report.rss = Some(rss_of_probe(&url, sizes.rss_tasks)?);
    report.micro = read_criterion();

    std::fs::create_dir_all("benchmarks")?;
    std::fs::write("benchmarks/throughput.svg", chart(&report.drain))?;
    std::fs::write("BENCHMARKS.md", report.markdown())?;
    eprintln!("bench: wrote BENCHMARKS.md and benchmarks/throughput.svg");
    Ok(())
}

// ----- the raw engine -----

/// The engine with no library code in between: the same `elasticsearch` client, hand-written
/// request bodies.
#[derive(Clone)]
struct Raw {
    client: Elasticsearch,
}

impl Raw {
    fn new(url: &str) -> Result<Self, BoxError> {
        Ok(Self {
            client: Elasticsearch::new(Transport::single_node(url)?),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        ndjson: bool,
    ) -> Result<Value, BoxError> {
        let mut headers = HeaderMap::new();
        if ndjson {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
        }
        let response = self
            .client
            .send::<Vec<u8>, ()>(method, path, headers, None, body, None)
            .await?;
        let status = response.status_code().as_u16();
        let bytes = response.bytes().await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 300 {
            return Err(format!("{method:?} {path}: HTTP {status}: {value}").into());
        }
        Ok(value)
    }

    async fn json(&self, method: Method, path: &str, body: Value) -> Result<Value, BoxError> {
        self.send(method, path, Some(serde_json::to_vec(&body)?), false)
            .await
    }

    async fn bulk(&self, index: &str, body: Vec<u8>) -> Result<Value, BoxError> {
        self.send(Method::Post, &format!("/{index}/_bulk"), Some(body), true)
            .await
    }

    async fn create_index(&self, index: &str) -> Result<(), BoxError> {
        let mut definition: Value =
            serde_json::from_str(include_str!("../mappings/task-index.json"))?;
        definition["aliases"] = json!({ index: { "is_write_index": true } });
        self.json(Method::Put, &format!("/{index}-000001"), definition)
            .await?;
        Ok(())
    }

    async fn delete_index(&self, index: &str) {
        let _ = self
            .send(Method::Delete, &format!("/{index}-000001"), None, false)
            .await;
    }

    async fn count(&self, index: &str) -> Result<u64, BoxError> {
        self.send(Method::Post, &format!("/{index}/_refresh"), None, false)
            .await?;
        let answer = self
            .send(Method::Get, &format!("/{index}/_count"), None, false)
            .await?;
        Ok(answer["count"].as_u64().unwrap_or(0))
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "bench-{prefix}-{}",
        &es_task_store::TaskId::random().as_str()[..8]
    )
}

fn store(
    url: &str,
    index: &str,
    strategy: ClaimStrategy,
) -> Result<ElasticsearchTaskStore, BoxError> {
    Ok(ElasticsearchTaskStore::builder()
        .with_url(url)
        .with_index(index)
        .with_claim_strategy(strategy)
        .build()?)
}

/// `n` due one-off tasks, as instances and as the identical raw `_bulk` bodies.
fn due_tasks(n: usize, run_at: DateTime<Utc>) -> Vec<TaskInstance> {
    (0..n)
        .map(|i| {
            TaskInstance::new("noop")
                .with_id(format!("t-{i:07}"))
                .expect("valid id")
                .with_run_at(run_at)
                .with_params(json!({ "n": i, "to": format!("user{i}@example.com") }))
        })
        .collect()
}

fn raw_bodies(tasks: &[TaskInstance], now: DateTime<Utc>) -> Vec<Vec<u8>> {
    tasks
        .chunks(BATCH)
        .map(|chunk| {
            let mut body = Vec::new();
            for task in chunk {
                let concrete = task.clone().into_concrete(now).expect("valid task");
                serde_json::to_writer(
                    &mut body,
                    &json!({ "create": { "_id": concrete.id.document_id() } }),
                )
                .unwrap();
                body.push(b'\n');
                serde_json::to_writer(&mut body, &encode_document(&concrete, now)).unwrap();
                body.push(b'\n');
            }
            body
        })
        .collect()
}

async fn load(raw: &Raw, index: &str, tasks: &[TaskInstance]) -> Result<(), BoxError> {
    for body in raw_bodies(tasks, Utc::now()) {
        let answer = raw.bulk(index, body).await?;
        if answer["errors"].as_bool() != Some(false) {
            return Err(format!("loading tasks failed: {answer}").into());
        }
    }
    raw.count(index).await?;
    Ok(())
}

/// A fresh index holding `n` due one-off tasks.
async fn due_index(raw: &Raw, prefix: &str, n: usize) -> Result<String, BoxError> {
    let index = unique(prefix);
    raw.create_index(&index).await?;
    load(
        raw,
        &index,
        &due_tasks(n, Utc::now() - TimeDelta::minutes(1)),
    )
    .await?;
    Ok(index)
}

// ----- a. scheduling -----

struct ScheduleResult {
    tasks: usize,
    library_docs_per_sec: f64,
    raw_docs_per_sec: f64,
}

async fn schedule_bench(url: &str, raw: &Raw, n: usize) -> Result<ScheduleResult, BoxError> {
    let tasks = due_tasks(n, Utc::now());
    let mut lib_rates = Vec::new();
    let mut raw_rates = Vec::new();
    // Alternate which goes first; report medians.
    for round in 0..ROUNDS {
        for library_turn in [round % 2 == 0, round % 2 != 0] {
            if library_turn {
                lib_rates.push(schedule_library(url, raw, &tasks).await?);
            } else {
                raw_rates.push(schedule_raw(raw, &tasks).await?);
            }
        }
    }
    Ok(ScheduleResult {
        tasks: n,
        library_docs_per_sec: median(lib_rates),
        raw_docs_per_sec: median(raw_rates),
    })
}

const ROUNDS: usize = 3;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `bulk_schedule` in batches; docs/s.
async fn schedule_library(url: &str, raw: &Raw, tasks: &[TaskInstance]) -> Result<f64, BoxError> {
    let index = unique("schedule-lib");
    raw.create_index(&index).await?;
    let store = store(url, &index, ClaimStrategy::Optimistic)?;
    let batches: Vec<Vec<TaskInstance>> =
        tasks.chunks(BATCH).map(<[TaskInstance]>::to_vec).collect();
    let started = Instant::now();
    for batch in batches {
        for result in store.bulk_schedule(batch).await? {
            result.map_err(|e| format!("bulk_schedule item failed: {e}"))?;
        }
    }
    let rate = tasks.len() as f64 / started.elapsed().as_secs_f64();
    if raw.count(&index).await? != tasks.len() as u64 {
        abort("library scheduling stored a different number of tasks".into());
    }
    raw.delete_index(&index).await;
    Ok(rate)
}

/// The identical documents, prebuilt, as raw `_bulk` requests; docs/s.
async fn schedule_raw(raw: &Raw, tasks: &[TaskInstance]) -> Result<f64, BoxError> {
    let index = unique("schedule-raw");
    raw.create_index(&index).await?;
    let bodies = raw_bodies(tasks, Utc::now());
    let started = Instant::now();
    for body in bodies {
        let answer = raw.bulk(&index, body).await?;
        if answer["errors"].as_bool() != Some(false) {
            abort(format!("raw _bulk reported errors: {answer}"));
        }
    }
    let rate = tasks.len() as f64 / started.elapsed().as_secs_f64();
    if raw.count(&index).await? != tasks.len() as u64 {
        abort("raw scheduling stored a different number of tasks".into());
    }
    raw.delete_index(&index).await;
    Ok(rate)
}

// ----- b. draining -----

struct DrainRow {
    what: &'static str,
    workers: usize,
    tasks_per_sec: f64,
    conflicts: u64,
    claim_p50: Duration,
    claim_p99: Duration,
}

async fn drain_library(
    url: &str,
    raw: &Raw,
    n: usize,
    workers: usize,
    strategy: ClaimStrategy,
) -> Result<DrainRow, BoxError> {
    let index = due_index(raw, "drain", n).await?;
    let ran: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::with_capacity(n)));
    let mut shutdowns = Vec::new();
    let mut counters = Vec::new();
    let mut handles = Vec::new();
    let started = Instant::now();
    for w in 0..workers {
        let ran = ran.clone();
        let handler = move |ctx: TaskContext| {
            if !ran.lock().unwrap().insert(ctx.task.id.to_string()) {
                abort(format!("task {} ran twice", ctx.task.id));
            }
            std::future::ready(Ok(RunOutput::default()))
        };
        let worker = Worker::builder(store(url, &index, strategy)?)
            .register(TaskDefinition::new("noop", handler))
            .with_capacity(WORKER_CAPACITY)
            .with_owner_id(format!("bench-worker-{w}"))
            .build()?;
        shutdowns.push(worker.shutdown_handle());
        counters.push(worker.counters());
        handles.push(tokio::spawn(worker.run()));
    }
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done: u64 = counters.iter().map(|c| c.snapshot().succeeded).sum();
        if done >= n as u64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            abort(format!("draining stalled at {done} of {n}"));
        }
    }
    let elapsed = started.elapsed();
    for s in &shutdowns {
        s.shutdown();
    }
    let mut stats: Vec<WorkerStats> = Vec::new();
    for h in handles {
        stats.push(h.await?);
    }
    if ran.lock().unwrap().len() != n {
        abort(format!(
            "{} distinct tasks ran, expected {n}",
            ran.lock().unwrap().len()
        ));
    }
    let left = raw.count(&index).await?;
    if left != 0 {
        abort(format!("{left} tasks left in the index after draining"));
    }
    raw.delete_index(&index).await;
    let mut p50s: Vec<Duration> = stats.iter().map(|s| s.claim_latency_p50).collect();
    p50s.sort();
    Ok(DrainRow {
        what: match strategy {
            ClaimStrategy::Optimistic => "library, optimistic",
            _ => "library, update-by-query",
        },
        workers,
        tasks_per_sec: n as f64 / elapsed.as_secs_f64(),
        conflicts: stats.iter().map(|s| s.conflicts).sum(),
        claim_p50: p50s[p50s.len() / 2],
        claim_p99: stats
            .iter()
            .map(|s| s.claim_latency_p99)
            .max()
            .unwrap_or_default(),
    })
}

/// The raw ceiling: `loops` concurrent loops, each searching candidates, claiming them with a
/// conditional `_bulk` update, then deleting the claimed tasks with one `_bulk` of conditional
/// deletes (the requests the library sends, with no library code in between).
async fn drain_raw(raw: &Raw, n: usize, loops: usize) -> Result<DrainRow, BoxError> {
    let index = due_index(raw, "drain-raw", n).await?;
    let done = Arc::new(Mutex::new(HashSet::<String>::with_capacity(n)));
    let conflicts = Arc::new(Mutex::new(0u64));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for l in 0..loops {
        let (raw, index, done, conflicts, latencies) = (
            raw.clone(),
            index.clone(),
            done.clone(),
            conflicts.clone(),
            latencies.clone(),
        );
        handles.push(tokio::spawn(async move {
            let owner = format!("raw-{l}");
            let mut recent: Vec<(Instant, String)> = Vec::new();
            let mut empty = 0;
            while empty < 3 {
                let claim_started = Instant::now();
                let now = Utc::now();
                recent.retain(|(at, _)| at.elapsed() < Duration::from_secs(3));
                let exclude: Vec<&String> = recent.iter().map(|(_, id)| id).collect();
                let search = json!({
                    "query": { "bool": {
                        "filter": [
                            { "term": { "type": "task" } },
                            { "bool": { "must_not": [{ "term": { "task.enabled": false } }] } },
                            { "terms": { "task.taskType": ["noop"] } },
                            { "bool": { "should": [
                                { "bool": { "filter": [{ "terms": { "task.status": ["idle"] } }, { "range": { "task.runAt": { "lte": format_date(now) } } }] } },
                                { "bool": { "filter": [{ "terms": { "task.status": ["running", "claiming"] } }],
                                    "should": [{ "range": { "task.retryAt": { "lte": format_date(now) } } },
                                               { "bool": { "must_not": [{ "exists": { "field": "task.retryAt" } }] } }],
                                    "minimum_should_match": 1 } }
                            ], "minimum_should_match": 1 } }
                        ],
                        "must_not": [{ "ids": { "values": exclude } }]
                    } },
                    "sort": [{ "task.priority": { "order": "desc", "missing": 50 } }, { "task.runAt": { "order": "asc", "missing": "_last" } }],
                    "size": WORKER_CAPACITY * 4,
                    "seq_no_primary_term": true,
                    "track_total_hits": false
                });
                let answer = raw.json(Method::Post, &format!("/{index}/_search"), search).await?;
                let mut hits: Vec<Value> = answer["hits"]["hits"].as_array().cloned().unwrap_or_default();
                if hits.is_empty() {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                empty = 0;
                fastrand::shuffle(&mut hits);
                hits.truncate(WORKER_CAPACITY);
                let mut body = Vec::new();
                let retry_at = format_date(now + TimeDelta::minutes(5));
                for hit in &hits {
                    let id = hit["_id"].as_str().unwrap_or_default();
                    recent.push((Instant::now(), id.to_owned()));
                    let action = json!({ "update": { "_id": id, "if_seq_no": hit["_seq_no"], "if_primary_term": hit["_primary_term"] } });
                    let attempts = hit["_source"]["task"]["attempts"].as_u64().unwrap_or(0) + 1;
                    let doc = json!({ "doc": { "task": { "status": "running", "ownerId": owner, "startedAt": format_date(now), "retryAt": retry_at, "attempts": attempts }, "updated_at": format_date(now) } });
                    serde_json::to_writer(&mut body, &action)?;
                    body.push(b'\n');
                    serde_json::to_writer(&mut body, &doc)?;
                    body.push(b'\n');
                }
                let answer = raw.bulk(&index, body).await?;
                latencies.lock().unwrap().push(claim_started.elapsed());
                let items = answer["items"].as_array().cloned().unwrap_or_default();
                // Complete every claimed task with one conditional delete each, in one _bulk
                // (as the worker's completion writer does under load).
                let mut body = Vec::new();
                let mut claimed = Vec::new();
                for (hit, item) in hits.iter().zip(items) {
                    let item = &item["update"];
                    if item["status"].as_u64() != Some(200) {
                        *conflicts.lock().unwrap() += 1;
                        continue;
                    }
                    let id = hit["_id"].as_str().unwrap_or_default().to_owned();
                    serde_json::to_writer(&mut body, &json!({ "delete": { "_id": id, "if_seq_no": item["_seq_no"], "if_primary_term": item["_primary_term"] } }))?;
                    body.push(b'\n');
                    claimed.push(id);
                }
                if claimed.is_empty() {
                    continue;
                }
                let answer = raw.bulk(&index, body).await?;
                let items = answer["items"].as_array().cloned().unwrap_or_default();
                for (id, item) in claimed.into_iter().zip(items) {
                    if item["delete"]["status"].as_u64() == Some(200) && !done.lock().unwrap().insert(id.clone()) {
                        abort(format!("raw: task {id} completed twice"));
                    }
                }
            }
            Ok::<(), BoxError>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    // The loops stop after three empty searches of 500 ms; that idle tail is not work.
    let elapsed = started
        .elapsed()
        .saturating_sub(Duration::from_millis(1500));
    if done.lock().unwrap().len() != n {
        abort(format!(
            "raw: {} tasks completed, expected {n}",
            done.lock().unwrap().len()
        ));
    }
    raw.delete_index(&index).await;
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let conflicts = *conflicts.lock().unwrap();
    Ok(DrainRow {
        what: "raw requests",
        workers: loops,
        tasks_per_sec: n as f64 / elapsed.as_secs_f64(),
        conflicts,
        claim_p50: pct(0.5),
        claim_p99: pct(0.99),
    })
}

// ----- c. recurring load -----

/// One run of a recurring task: id, its `runAt`, when the handler started.
type RecurringRun = (String, DateTime<Utc>, DateTime<Utc>);

struct RecurringResult {
    tasks: usize,
    secs: u64,
    runs: usize,
    late_p50: Duration,
    late_p99: Duration,
    late_max: Duration,
}

async fn recurring_bench(
    url: &str,
    raw: &Raw,
    n: usize,
    secs: u64,
) -> Result<RecurringResult, BoxError> {
    let index = unique("recurring");
    raw.create_index(&index).await?;
    let every = Interval::seconds(10)?;
    let t0 = Utc::now() + TimeDelta::seconds(3);
    // Phases spread over the interval: a steady load of n / 10 runs per second.
    let tasks: Vec<TaskInstance> = (0..n)
        .map(|i| {
            TaskInstance::new("tick")
                .with_id(format!("r-{i:06}"))
                .expect("valid id")
                .with_interval(every)
                .with_run_at(t0 + TimeDelta::milliseconds((i * 10_000 / n) as i64))
        })
        .collect();
    load(raw, &index, &tasks).await?;
    let runs: Arc<Mutex<Vec<RecurringRun>>> = Arc::default();
    let mut shutdowns = Vec::new();
    let mut handles = Vec::new();
    for w in 0..4 {
        let runs = runs.clone();
        let handler = move |ctx: TaskContext| {
            runs.lock()
                .unwrap()
                .push((ctx.task.id.to_string(), ctx.task.run_at, Utc::now()));
            std::future::ready(Ok(RunOutput::default()))
        };
        let worker = Worker::builder(store(url, &index, ClaimStrategy::Optimistic)?)
            .register(TaskDefinition::new("tick", handler))
            .with_capacity(WORKER_CAPACITY)
            .with_owner_id(format!("recurring-{w}"))
            .build()?;
        shutdowns.push(worker.shutdown_handle());
        handles.push(tokio::spawn(worker.run()));
    }
    let end = t0 + TimeDelta::seconds(secs as i64);
    tokio::time::sleep((end - Utc::now()).to_std().unwrap_or_default()).await;
    for s in &shutdowns {
        s.shutdown();
    }
    for h in handles {
        let _ = h.await?;
    }
    raw.delete_index(&index).await;
    let runs = runs.lock().unwrap().clone();
    // Every run of a task is one interval after the previous: none skipped, none doubled.
    let mut by_task: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
    for (id, run_at, _) in &runs {
        by_task.entry(id).or_default().push(*run_at);
    }
    for (id, run_ats) in &mut by_task {
        run_ats.sort();
        for pair in run_ats.windows(2) {
            if pair[1] - pair[0] != every.as_time_delta() {
                abort(format!(
                    "task {id}: runs at {} then {} (skipped or doubled)",
                    pair[0], pair[1]
                ));
            }
        }
    }
    // Tasks due well before the end ran at least once per interval that passed.
    let expected_min = (secs / 10).saturating_sub(1) as usize;
    if let Some((id, r)) = by_task.iter().find(|(_, r)| r.len() < expected_min) {
        abort(format!("task {id} ran {} times in {secs}s", r.len()));
    }
    if by_task.len() != n {
        abort(format!("{} of {n} recurring tasks ran", by_task.len()));
    }
    let mut lateness: Vec<Duration> = runs
        .iter()
        .map(|(_, run_at, started)| (*started - *run_at).to_std().unwrap_or_default())
        .collect();
    lateness.sort();
    let pct = |p: f64| lateness[((lateness.len() - 1) as f64 * p) as usize];
    Ok(RecurringResult {
        tasks: n,
        secs,
        runs: runs.len(),
        late_p50: pct(0.5),
        late_p99: pct(0.99),
        late_max: *lateness.last().unwrap_or(&Duration::ZERO),
    })
}

// ----- d. memory -----

struct RssResult {
    tasks: usize,
    baseline_kib: u64,
    peak_kib: u64,
}

/// CPU time (user + system) this process used so far, in seconds (loading tasks included).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// In a fresh process: one worker claims `tasks` tasks whose handlers all wait; prints the
/// peak RSS before and while holding them.
async fn rss_probe(url: &str, tasks: usize) -> Result<(), BoxError> {
    let raw = Raw::new(url)?;
    let index = due_index(&raw, "rss", tasks).await?;
    let baseline = status_kib("VmHWM:");
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let handler = move |_ctx: TaskContext| {
        s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let r = r.clone();
        async move {
            r.notified().await;
            Ok(RunOutput::default())
        }
    };
    let worker = Worker::builder(store(url, &index, ClaimStrategy::Optimistic)?)
        .register(TaskDefinition::new("noop", handler))
        .with_capacity(tasks)
        .with_shutdown_timeout(Duration::from_millis(100))
        .build()?;
    let shutdown = worker.shutdown_handle();
    let handle = tokio::spawn(worker.run());
    let wait_started = Instant::now();
    while started.load(std::sync::atomic::Ordering::SeqCst) < tasks {
        if wait_started.elapsed() > Duration::from_secs(300) {
            abort("rss probe: the worker never held all tasks".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = status_kib("VmHWM:");
    println!("RSS baseline_kib={baseline} peak_kib={peak}");
    shutdown.shutdown();
    let _ = handle.await;
    raw.delete_index(&index).await;
    Ok(())
}

fn rss_of_probe(url: &str, tasks: usize) -> Result<RssResult, BoxError> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["--rss-probe", &tasks.to_string()])
        .env("ELASTICSEARCH_URL", url)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RSS "))
        .ok_or_else(|| {
            format!(
                "rss probe failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.parse().ok())
            .unwrap_or(0)
    };
    Ok(RssResult {
        tasks,
        baseline_kib: field("baseline_kib="),
        peak_kib: field("peak_kib="),
    })
}

// ----- report -----

fn read_criterion() -> Vec<(String, f64)> {
    [
        "write_document",
        "decode_document",
        "decode_search_hit_bytes",
        "claim_line",
    ]
    .iter()
    .filter_map(|name| {
        let path = format!("target/criterion/{name}/new/estimates.json");
        let estimates: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        Some((
            name.to_string(),
            estimates["median"]["point_estimate"].as_f64()?,
        ))
    })
    .collect()
}

async fn machine(raw: &Raw) -> Result<String, BoxError> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let root = raw.send(Method::Get, "/", None, false).await?;
    let nodes = raw.send(Method::Get, "/_nodes/jvm", None, false).await?;
    let heap = nodes["nodes"]
        .as_object()
        .and_then(|n| n.values().next())
        .and_then(|n| n["jvm"]["mem"]["heap_max_in_bytes"].as_u64())
        .unwrap_or(0);
    let jvm = nodes["nodes"]
        .as_object()
        .and_then(|n| n.values().next())
        .and_then(|n| n["jvm"]["version"].as_str())
        .unwrap_or("?")
        .to_owned();
    Ok(format!(
        "{cores} cores ({cpu}), {:.1} GiB memory\nengine: {} {} on Java {jvm}, heap {} MiB, one node on the same machine",
        mem_kib as f64 / 1024.0 / 1024.0,
        root["version"]["distribution"].as_str().unwrap_or("elasticsearch"),
        root["version"]["number"].as_str().unwrap_or("?"),
        heap / 1024 / 1024
    ))
}

#[derive(Default)]
struct Report {
    machine: String,
    quick: bool,
    schedule: Option<ScheduleResult>,
    drain: Vec<DrainRow>,
    recurring: Option<RecurringResult>,
    rss: Option<RssResult>,
    micro: Vec<(String, f64)>,
}

impl Report {
    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(md, "Written by `cargo xtask bench`{} on {} UTC. Every figure below comes from that one run; the raw-engine figures were measured in the same run, so compare ratios, not absolute times (the machine is shared and noisy).\n", if self.quick { " --quick (reduced sizes)" } else { "" }, Utc::now().format("%Y-%m-%d %H:%M"));
        let _ = writeln!(md, "## Machine\n");
        for line in self.machine.lines() {
            let _ = writeln!(md, "- {line}");
        }
        let _ = writeln!(md, "- commands: `cargo xtask bench` (runs `cargo bench --bench codec`, then `cargo run --release --example bench`)\n");
        if let Some(s) = &self.schedule {
            let _ = writeln!(md, "## a. Scheduling\n\n{} tasks in batches of {BATCH}, one batch at a time, median of three rounds each (alternating which goes first). Library: `bulk_schedule`. Raw: the identical documents, prebuilt, as `_bulk` requests with the same HTTP client.\n", s.tasks);
            let _ = writeln!(md, "| | docs/s |\n|---|---:|\n| library | {:.0} |\n| raw `_bulk` | {:.0} |\n| **library / raw** | **{:.2}** |\n", s.library_docs_per_sec, s.raw_docs_per_sec, s.library_docs_per_sec / s.raw_docs_per_sec);
        }
        if !self.drain.is_empty() {
            let _ = writeln!(md, "## b. Draining due one-off tasks\n\nEach run: a fresh index of due one-off tasks; N workers (each its own store and HTTP client, capacity {WORKER_CAPACITY}) claim them, run a no-op handler and complete them (a conditional delete per task; the worker writes the completions that queue up while a write is in flight as one `_bulk`). Every task is checked to run exactly once and the index to be empty afterwards. Raw: N loops issuing the same search, conditional `_bulk` claim and one `_bulk` of conditional deletes per claimed batch, directly.\n");
            let _ = writeln!(md, "| claimer | workers | tasks/s | vs raw | conflicts | claim p50 | claim p99 |\n|---|---:|---:|---:|---:|---:|---:|");
            for row in &self.drain {
                let raw = self
                    .drain
                    .iter()
                    .find(|r| r.what == "raw requests" && r.workers == row.workers)
                    .map(|r| r.tasks_per_sec);
                let ratio = raw
                    .map(|r| format!("{:.2}", row.tasks_per_sec / r))
                    .unwrap_or_default();
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | {} | {} | {:.1} ms | {:.1} ms |",
                    row.what,
                    row.workers,
                    row.tasks_per_sec,
                    ratio,
                    row.conflicts,
                    row.claim_p50.as_secs_f64() * 1e3,
                    row.claim_p99.as_secs_f64() * 1e3
                );
            }
            let _ = writeln!(
                md,
                "\n![tasks/s against workers](benchmarks/throughput.svg)\n"
            );
            if let Some(four) = self
                .drain
                .iter()
                .find(|r| r.what == "library, optimistic" && r.workers == 4)
            {
                let _ = writeln!(md, "Target: at least 1,000 tasks/s with 4 workers (50 times the reference system's 20 tasks/s per node). Measured: **{:.0} tasks/s**, {}.\n", four.tasks_per_sec, if four.tasks_per_sec >= 1000.0 { "met" } else { "not met" });
            }
        }
        if let Some(r) = &self.recurring {
            let _ = writeln!(md, "## c. Recurring load\n\n{} recurring tasks every 10 s, phases spread over the interval, 4 workers, {} s. {} runs. Lateness = handler start minus the run's `runAt`. Checked: every task's consecutive runs are exactly one interval apart (none skipped, none doubled).\n", r.tasks, r.secs, r.runs);
            let _ = writeln!(
                md,
                "| p50 | p99 | max |\n|---:|---:|---:|\n| {:.0} ms | {:.0} ms | {:.0} ms |\n",
                r.late_p50.as_secs_f64() * 1e3,
                r.late_p99.as_secs_f64() * 1e3,
                r.late_max.as_secs_f64() * 1e3
            );
        }
        let _ = writeln!(md, "## d. Per-task CPU and memory\n");
        if !self.micro.is_empty() {
            let _ = writeln!(md, "criterion (`cargo bench --bench codec`), median time per task:\n\n| operation | time |\n|---|---:|");
            for (name, ns) in &self.micro {
                let _ = writeln!(md, "| {name} | {:.2} µs |", ns / 1000.0);
            }
            let _ = writeln!(md);
        }
        if let Some(r) = &self.rss {
            let _ = writeln!(md, "Peak RSS of a process whose one worker holds {} claimed tasks (all handlers waiting): {:.1} MiB, of which {:.1} MiB before the worker started ({:.1} KiB per held task).\n", r.tasks, r.peak_kib as f64 / 1024.0, r.baseline_kib as f64 / 1024.0, (r.peak_kib.saturating_sub(r.baseline_kib)) as f64 / r.tasks as f64);
        }
        md
    }
}

/// tasks/s against workers, one line per claimer, as SVG.
fn chart(rows: &[DrainRow]) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 400.0, 70.0, 50.0, 30.0, 190.0);
    let max = rows.iter().map(|r| r.tasks_per_sec).fold(1.0, f64::max) * 1.1;
    let x = |workers: usize| left + (workers as f64 - 1.0) / 7.0 * (w - left - right);
    let y = |v: f64| h - bottom - v / max * (h - bottom - top);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(svg, "<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">Draining due one-off tasks: tasks/s against workers</text>", w / 2.0);
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom,
        w - right,
        h - bottom
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom
    );
    for workers in WORKER_COUNTS {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{workers}</text>",
            x(workers),
            h - bottom + 16.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">workers</text>",
        (left + w - right) / 2.0,
        h - 12.0
    );
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}</text><line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>", left - 6.0, y(v) + 4.0, v, y(v), w - right, y(v));
    }
    let series = [
        ("library, optimistic", "#1f77b4"),
        ("library, update-by-query", "#ff7f0e"),
        ("raw requests", "#2ca02c"),
    ];
    for (i, (name, color)) in series.iter().enumerate() {
        let points: Vec<String> = rows
            .iter()
            .filter(|r| r.what == *name)
            .map(|r| format!("{:.1},{:.1}", x(r.workers), y(r.tasks_per_sec)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
        for p in &points {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                svg,
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{color}\"/>"
            );
        }
        let ly = top + 20.0 + i as f64 * 20.0;
        let _ = writeln!(svg, "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{name}</text>", w - right + 10.0, w - right + 30.0, w - right + 36.0, ly + 4.0);
    }
    svg.push_str("</svg>\n");
    svg
}
