//! Claiming under engine distress (HTTP-level faults a real engine cannot produce on demand):
//! 429 storms, index blocks and a cluster that is down slow claiming with capped, jittered
//! exponential backoff, log once per change of state, and recover after success.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_task_store::worker::{RunOutput, TaskContext, TaskDefinition, Worker, WorkerStats};
use es_task_store::ElasticsearchTaskStore;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Log lines captured from the worker.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

fn worker(url: &str) -> Worker {
    let store = ElasticsearchTaskStore::builder()
        .with_url(url)
        .with_index("tasks")
        .with_request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    Worker::builder(store)
        .register(TaskDefinition::new("job", |_ctx: TaskContext| async {
            Ok(RunOutput::default())
        }))
        .with_poll_interval(Duration::from_millis(50))
        .with_idle_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

async fn run_for(worker: Worker, duration: Duration) -> WorkerStats {
    let shutdown = worker.shutdown_handle();
    let handle = tokio::spawn(worker.run());
    tokio::time::sleep(duration).await;
    shutdown.shutdown();
    handle.await.unwrap()
}

fn empty_search() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "took": 1, "timed_out": false,
        "hits": { "total": { "value": 0, "relation": "eq" }, "hits": [] }
    }))
}

/// How many searches the server has answered.
async fn searches_seen(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().ends_with("/_search"))
        .count()
}

#[tokio::test]
async fn a_429_storm_backs_off_then_recovers_with_one_log_line_each_way() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tasks/_search"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution of coordinating operation"},
            "status": 429
        })))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/tasks/_search"))
        .respond_with(empty_search())
        .with_priority(2)
        .mount(&server)
        .await;
    let (logs, _guard) = capture_logs();
    let started = Instant::now();
    let w = worker(&server.uri());
    let shutdown = w.shutdown_handle();
    let counters = w.counters();
    let handle = tokio::spawn(w.run());
    while searches_seen(&server).await < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_after = started.elapsed();
    // Backoff after failures 1, 2, 3 is at least 1 s each (1 s, then jittered up to 2 s, 4 s).
    assert!(
        recovered_after >= Duration::from_secs(3),
        "retried too fast: {recovered_after:?}"
    );
    // After recovery the worker polls at its idle interval again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = searches_seen(&server).await;
    assert!(
        after >= 8,
        "claiming did not resume after recovery: {after} searches"
    );
    shutdown.shutdown();
    let stats = handle.await.unwrap();
    assert_eq!(stats.claim_errors, 3);
    assert_eq!(counters.snapshot().claim_errors, 3);
    assert_eq!(logs.count("claiming failed"), 1, "{}", logs.text());
    assert_eq!(logs.count("claiming recovered"), 1, "{}", logs.text());
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tasks/_search"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "3")
                .set_body_json(json!({"error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}, "status": 503})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/tasks/_search"))
        .respond_with(empty_search())
        .with_priority(2)
        .mount(&server)
        .await;
    let started = Instant::now();
    let w = worker(&server.uri());
    let shutdown = w.shutdown_handle();
    let handle = tokio::spawn(w.run());
    while searches_seen(&server).await < 2 {
        assert!(started.elapsed() < Duration::from_secs(20), "never retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "Retry-After ignored: {:?}",
        started.elapsed()
    );
    shutdown.shutdown();
    let _stats = handle.await.unwrap();
}

#[tokio::test]
async fn an_index_block_backs_off_instead_of_looping() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tasks/_search"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "error": {"type": "cluster_block_exception", "reason": "index [tasks-000001] blocked by: [FORBIDDEN/8/index write (api)];"},
            "status": 403
        })))
        .mount(&server)
        .await;
    let (logs, _guard) = capture_logs();
    let stats = run_for(worker(&server.uri()), Duration::from_millis(3500)).await;
    // 1 s, then 1..2 s, then 1..4 s: at most 3 attempts fit in 3.5 s; a tight loop would make thousands.
    let searches = searches_seen(&server).await;
    assert!((2..=4).contains(&searches), "{searches} claims in 3.5 s");
    assert_eq!(stats.claim_errors as usize, searches);
    assert_eq!(logs.count("claiming failed"), 1, "{}", logs.text());
}

#[tokio::test]
async fn a_cluster_that_is_down_does_not_cause_a_tight_loop_or_a_log_flood() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (logs, _guard) = capture_logs();
    let stats = run_for(
        worker(&format!("http://127.0.0.1:{port}")),
        Duration::from_millis(3500),
    )
    .await;
    assert!(
        (2..=4).contains(&stats.claim_errors),
        "{} claims in 3.5 s",
        stats.claim_errors
    );
    assert_eq!(logs.count("claiming failed"), 1, "{}", logs.text());
    assert!(
        logs.text().lines().count() <= 6,
        "log flood:\n{}",
        logs.text()
    );
}
