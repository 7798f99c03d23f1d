//! HTTP-level fault tests: every error class is classified from engine-shaped answers served by
//! a mock server. No engine is needed.
//!
//! Error bodies follow what Elasticsearch and OpenSearch send: `{"error": {"root_cause": [..],
//! "type", "reason", ..}, "status"}`, with `root_cause` holding the same cause.

use std::time::{Duration, Instant};

use es_task_store::{
    ElasticsearchTaskStore, Error, TaskId, TaskInstance, TaskPatch, TaskQuery, TaskStatus, Version,
};
use serde_json::{json, Value};
use wiremock::matchers::{header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PASSWORD: &str = "s3cr3t-pass";
/// base64 of `elastic:s3cr3t-pass`, as it goes in the Authorization header.
const BASIC_TOKEN: &str = "ZWxhc3RpYzpzM2NyM3QtcGFzcw==";

fn store(server: &MockServer) -> ElasticsearchTaskStore {
    ElasticsearchTaskStore::builder()
        .with_url(server.uri())
        .with_index("tasks")
        .with_request_timeout(Duration::from_millis(300))
        .build()
        .expect("store")
}

fn id(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}

/// An engine error answer: `cause` is both the error and its only root cause.
fn es_error(status: u16, cause: Value) -> ResponseTemplate {
    let mut error = cause.clone();
    error["root_cause"] = json!([cause]);
    ResponseTemplate::new(status)
        .insert_header("x-elastic-product", "Elasticsearch")
        .set_body_json(json!({ "error": error, "status": status }))
}

/// A JSON body sent verbatim (for truncated or hand-written bodies).
fn raw_json(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json")
}

async fn answer(server: &MockServer, verb: &str, route: &str, template: ResponseTemplate) {
    Mock::given(method(verb))
        .and(path(route))
        .respond_with(template)
        .expect(1)
        .mount(server)
        .await;
}

fn stored_task(task_id: &str, version: Version) -> es_task_store::ConcreteTaskInstance {
    let mut task = TaskInstance::new("email")
        .with_id(task_id)
        .unwrap()
        .into_concrete(chrono::Utc::now())
        .unwrap();
    task.version = Some(version);
    task
}

fn rejected_execution() -> Value {
    json!({
        "type": "es_rejected_execution_exception",
        "reason": "rejected execution of org.elasticsearch.common.util.concurrent.TimedRunnable@4b0a3b2e on \
                   TaskExecutionTimeTrackingEsThreadPoolExecutor[name = node-1/search, queue capacity = 1000, \
                   task execution EWMA = 2.1ms, total task execution time = 1.2m]"
    })
}

// ----- 409 -----

#[tokio::test]
async fn version_conflict_on_update_is_conflict_with_the_task_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tasks/_update/task%3Aa"))
        .and(query_param("if_seq_no", "5"))
        .and(query_param("if_primary_term", "1"))
        .respond_with(raw_json(
            409,
            r#"{"error":{"root_cause":[{"type":"version_conflict_engine_exception","reason":"[task:a]: version conflict, required seqNo [5], primary term [1]. current document has seqNo [6] and primary term [1]","index_uuid":"Vx3bqUO2QmOeUPDzDYk4aw","shard":"0","index":"tasks-000001"}],"type":"version_conflict_engine_exception","reason":"[task:a]: version conflict, required seqNo [5], primary term [1]. current document has seqNo [6] and primary term [1]","index_uuid":"Vx3bqUO2QmOeUPDzDYk4aw","shard":"0","index":"tasks-000001"},"status":409}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;

    let err = store(&server)
        .update(&stored_task("a", Version::new(5, 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { id } if id == "a"),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn version_conflict_on_partial_update_is_conflict_with_the_task_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tasks/_update/task%3Aa"))
        .and(query_param("if_seq_no", "5"))
        .and(query_param("if_primary_term", "1"))
        .respond_with(es_error(
            409,
            json!({
                "type": "version_conflict_engine_exception",
                "reason": "[task:a]: version conflict, required seqNo [5], primary term [1]. current document has seqNo [6] and primary term [1]",
                "index_uuid": "Vx3bqUO2QmOeUPDzDYk4aw",
                "shard": "0",
                "index": "tasks-000001"
            }),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let patch = TaskPatch {
        status: Some(TaskStatus::Idle),
        owner_id: Some(None),
        ..TaskPatch::default()
    };
    let err = store(&server)
        .partial_update(&id("a"), Version::new(5, 1), &patch)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { id } if id == "a"),
        "{err:?}"
    );
}

#[tokio::test]
async fn document_exists_on_schedule_is_already_exists() {
    let server = MockServer::start().await;
    answer(
        &server,
        "PUT",
        "/tasks/_create/task%3Aa",
        es_error(
            409,
            json!({
                "type": "version_conflict_engine_exception",
                "reason": "[task:a]: version conflict, document already exists (current version [1])",
                "index_uuid": "Vx3bqUO2QmOeUPDzDYk4aw",
                "shard": "0",
                "index": "tasks-000001"
            }),
        ),
    )
    .await;

    let err = store(&server)
        .schedule(TaskInstance::new("email").with_id("a").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { id } if id == "a"),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

// ----- 404 -----

#[tokio::test]
async fn missing_document_on_get_is_not_found() {
    let server = MockServer::start().await;
    answer(
        &server,
        "GET",
        "/tasks/_doc/task%3Aa",
        raw_json(
            404,
            r#"{"_index":"tasks-000001","_id":"task:a","found":false}"#,
        ),
    )
    .await;

    let err = store(&server).get(&id("a")).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { id } if id == "a"),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_index_is_index_missing_on_get_fetch_and_schedule() {
    let server = MockServer::start().await;
    let no_such_index = |reason: &str| {
        es_error(
            404,
            json!({
                "type": "index_not_found_exception",
                "reason": reason,
                "resource.type": "index_or_alias",
                "resource.id": "tasks",
                "index_uuid": "_na_",
                "index": "tasks"
            }),
        )
    };
    answer(
        &server,
        "GET",
        "/tasks/_doc/task%3Aa",
        no_such_index("no such index [tasks]"),
    )
    .await;
    answer(
        &server,
        "POST",
        "/tasks/_search",
        no_such_index("no such index [tasks]"),
    )
    .await;
    Mock::given(method("PUT"))
        .and(path("/tasks/_create/task%3Aa"))
        .and(query_param("require_alias", "true"))
        .respond_with(no_such_index(
            "no such index [tasks] and [require_alias] request flag is [true] and [tasks] is not an alias",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let store = store(&server);

    let err = store.get(&id("a")).await.unwrap_err();
    assert!(
        matches!(&err, Error::IndexMissing { index } if index == "tasks"),
        "get: {err:?}"
    );
    let err = store.fetch(&TaskQuery::new()).await.unwrap_err();
    assert!(
        matches!(&err, Error::IndexMissing { index } if index == "tasks"),
        "fetch: {err:?}"
    );
    let err = store
        .schedule(TaskInstance::new("email").with_id("a").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::IndexMissing { index } if index == "tasks"),
        "schedule: {err:?}"
    );
}

// ----- overload -----

#[tokio::test]
async fn rejected_execution_with_retry_after_is_overloaded_and_keeps_the_delay() {
    let server = MockServer::start().await;
    answer(
        &server,
        "POST",
        "/tasks/_search",
        es_error(429, rejected_execution()).insert_header("retry-after", "7"),
    )
    .await;

    let err = store(&server).fetch(&TaskQuery::new()).await.unwrap_err();
    match &err {
        Error::Overloaded {
            status: 429,
            retry_after: Some(delay),
            reason,
        } => {
            assert_eq!(*delay, Duration::from_secs(7));
            assert!(reason.starts_with("rejected execution of"), "{reason}");
        }
        other => panic!("expected Overloaded 429 with retry_after 7s, got {other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn rejected_execution_without_retry_after_is_overloaded_without_a_delay() {
    let server = MockServer::start().await;
    answer(
        &server,
        "PUT",
        "/tasks/_create/task%3Aa",
        es_error(
            429,
            json!({
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution of coordinating operation [coordinating_and_primary_bytes=104857600, \
                           replica_bytes=0, all_bytes=104857600, coordinating_operation_bytes=1204, \
                           max_coordinating_and_primary_bytes=104857600]"
            }),
        ),
    )
    .await;

    let err = store(&server)
        .schedule(TaskInstance::new("email").with_id("a").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Overloaded { status: 429, retry_after: None, reason } if reason.contains("coordinating operation")),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn circuit_breaker_trip_is_overloaded() {
    let server = MockServer::start().await;
    answer(
        &server,
        "POST",
        "/tasks/_search",
        es_error(
            429,
            json!({
                "type": "circuit_breaking_exception",
                "reason": "[parent] Data too large, data for [<http_request>] would be [1021563296/974.2mb], which is \
                           larger than the limit of [1020054732/972.7mb], real usage: [1021563296/974.2mb], new bytes \
                           reserved: [0/0b], usages [request=0/0b, fielddata=0/0b, in_flight_requests=0/0b, \
                           accounting=0/0b]",
                "bytes_wanted": 1_021_563_296_u64,
                "bytes_limit": 1_020_054_732_u64,
                "durability": "TRANSIENT"
            }),
        ),
    )
    .await;

    let err = store(&server).fetch(&TaskQuery::new()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Overloaded { status: 429, retry_after: None, reason } if reason.starts_with("[parent] Data too large")),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn unavailable_engine_503_is_overloaded() {
    let server = MockServer::start().await;
    answer(
        &server,
        "PUT",
        "/tasks/_create/task%3Aa",
        es_error(
            503,
            json!({
                "type": "unavailable_shards_exception",
                "reason": "[tasks-000001][0] primary shard is not active Timeout: [1m], request: [BulkShardRequest \
                           [[tasks-000001][0]] containing [create {[tasks-000001][task:a], source[n/a, actual length: \
                           [1.1kb], max length: 2kb]}] and a refresh]"
            }),
        ),
    )
    .await;
    // A master-level failure: `reason` is null in these answers.
    answer(
        &server,
        "GET",
        "/tasks/_doc/task%3Ab",
        raw_json(
            503,
            r#"{"error":{"root_cause":[{"type":"master_not_discovered_exception","reason":null}],"type":"master_not_discovered_exception","reason":null},"status":503}"#,
        ),
    )
    .await;
    let store = store(&server);

    let err = store
        .schedule(TaskInstance::new("email").with_id("a").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Overloaded { status: 503, retry_after: None, reason } if reason.contains("primary shard is not active")),
        "{err:?}"
    );
    assert!(err.is_transient());

    let err = store.get(&id("b")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Overloaded { status: 503, retry_after: None, reason } if reason.contains("master_not_discovered_exception")),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn retryable_cluster_block_503_is_overloaded_not_blocked() {
    // "No master" and "state not recovered" are the engine's retryable blocks: they clear by
    // themselves once the cluster has a master or has recovered its state.
    let server = MockServer::start().await;
    answer(
        &server,
        "PUT",
        "/tasks/_create/task%3Aa",
        raw_json(
            503,
            r#"{"error":{"root_cause":[{"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/2/no master];"}],"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/2/no master];"},"status":503}"#,
        ),
    )
    .await;
    answer(
        &server,
        "POST",
        "/tasks/_search",
        raw_json(
            503,
            r#"{"error":{"root_cause":[{"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];"}],"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];"},"status":503}"#,
        ),
    )
    .await;
    let store = store(&server);

    let err = store
        .schedule(TaskInstance::new("email").with_id("a").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Overloaded { status: 503, retry_after: None, reason } if reason.contains("no master")),
        "{err:?}"
    );
    assert!(err.is_transient());

    let err = store.fetch(&TaskQuery::new()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Overloaded { status: 503, retry_after: None, reason } if reason.contains("state not recovered")),
        "{err:?}"
    );
    assert!(err.is_transient());
}

// ----- blocks -----

#[tokio::test]
async fn write_block_403_is_blocked_and_not_transient() {
    let server = MockServer::start().await;
    let reason = "index [tasks-000001] blocked by: [FORBIDDEN/8/index write (api)];";
    answer(
        &server,
        "PUT",
        "/tasks/_create/task%3Aa",
        es_error(
            403,
            json!({ "type": "cluster_block_exception", "reason": reason }),
        ),
    )
    .await;

    let err = store(&server)
        .schedule(TaskInstance::new("email").with_id("a").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Blocked { status: 403, reason: r } if r == reason),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn flood_stage_block_429_is_blocked_not_overloaded() {
    let server = MockServer::start().await;
    let reason =
        "index [tasks-000001] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage \
                  watermark, index has read-only-allow-delete block];";
    Mock::given(method("POST"))
        .and(path("/tasks/_update/task%3Aa"))
        .respond_with(es_error(
            429,
            json!({ "type": "cluster_block_exception", "reason": reason }),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let err = store(&server)
        .update(&stored_task("a", Version::new(5, 1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Blocked { status: 429, reason: r } if r == reason),
        "{err:?}"
    );
    assert!(
        !err.is_transient(),
        "a flood-stage block does not clear by waiting"
    );
    assert_eq!(err.retry_after(), None);
}

// ----- 413 -----

#[tokio::test]
async fn request_too_large_on_bulk_schedule_is_too_large() {
    // A proxy's plain text answer.
    let server = MockServer::start().await;
    answer(
        &server,
        "POST",
        "/tasks/_bulk",
        ResponseTemplate::new(413).set_body_raw(b"Request Entity Too Large".to_vec(), "text/plain"),
    )
    .await;
    let tasks = vec![TaskInstance::new("email"), TaskInstance::new("email")];
    let err = store(&server).bulk_schedule(tasks).await.unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { reason } if reason == "Request Entity Too Large"),
        "{err:?}"
    );
    assert!(!err.is_transient());

    // The engine's own answer over http.max_content_length: no body at all.
    let server = MockServer::start().await;
    answer(&server, "POST", "/tasks/_bulk", ResponseTemplate::new(413)).await;
    let tasks = vec![TaskInstance::new("email")];
    let err = store(&server).bulk_schedule(tasks).await.unwrap_err();
    assert!(matches!(&err, Error::TooLarge { .. }), "{err:?}");
}

// ----- timeouts -----

#[tokio::test]
async fn answer_slower_than_the_request_timeout_is_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/tasks/_doc/task%3Aa"))
        .respond_with(
            raw_json(
                200,
                r#"{"_index":"tasks-000001","_id":"task:a","found":true}"#,
            )
            .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;

    let started = Instant::now();
    let err = store(&server).get(&id("a")).await.unwrap_err();
    assert!(matches!(&err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up after {:?}, not after the 300ms timeout",
        started.elapsed()
    );
}

#[tokio::test]
async fn gateway_timeout_504_is_timeout() {
    let server = MockServer::start().await;
    answer(
        &server,
        "POST",
        "/tasks/_search",
        ResponseTemplate::new(504).set_body_raw(
            b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway \
              Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
                .to_vec(),
            "text/html",
        ),
    )
    .await;

    let err = store(&server).fetch(&TaskQuery::new()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { reason } if reason.contains("504 Gateway Time-out")),
        "{err:?}"
    );
    assert!(err.is_transient());
}

// ----- unreadable answers -----

#[tokio::test]
async fn truncated_body_on_get_is_malformed_response() {
    let server = MockServer::start().await;
    answer(
        &server,
        "GET",
        "/tasks/_doc/task%3Aa",
        raw_json(200, r#"{"_index":"tasks-000001","_id":"task:a","_seq_no":"#),
    )
    .await;

    let err = store(&server).get(&id("a")).await.unwrap_err();
    assert!(
        matches!(&err, Error::MalformedResponse { status: 200, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn truncated_body_on_fetch_is_malformed_response() {
    let server = MockServer::start().await;
    answer(
        &server,
        "POST",
        "/tasks/_search",
        raw_json(
            200,
            r#"{"took":2,"timed_out":false,"_shards":{"total":1,"successful":1,"skipped":0,"failed":0},"hits":{"total":{"value":1,"relation":"eq"},"max_score":null,"hits":[{"_index":"tasks-000001","_id":"task:a","_seq_no":"#,
        ),
    )
    .await;

    let err = store(&server).fetch(&TaskQuery::new()).await.unwrap_err();
    assert!(
        matches!(&err, Error::MalformedResponse { status: 200, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn proxy_html_error_page_is_engine_error_with_a_bounded_reason() {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title>\n<style>body { font-family: sans-serif; \
         margin: 4em; } .detail { color: #666; }</style></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n",
    );
    for i in 0..40 {
        page.push_str(&format!(
            "<p class=\"detail\">upstream connect error or disconnect/reset before headers. retried and the latest \
             reset reason: connection failure (attempt {i})</p>\n"
        ));
    }
    page.push_str("<hr><center>nginx</center>\n</body>\n</html>\n");
    assert!(page.len() > 4000);

    let server = MockServer::start().await;
    answer(
        &server,
        "GET",
        "/tasks/_doc/task%3Aa",
        ResponseTemplate::new(502).set_body_raw(page.into_bytes(), "text/html"),
    )
    .await;

    let err = store(&server).get(&id("a")).await.unwrap_err();
    let Error::Engine { status, reason, .. } = &err else {
        panic!("expected Engine 502, got {err:?}");
    };
    assert_eq!(*status, 502);
    assert!(reason.contains("502 Bad Gateway"), "{reason}");
    assert!(
        reason.chars().count() <= 510,
        "reason is {} chars",
        reason.chars().count()
    );
    assert!(err.to_string().chars().count() <= 600, "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn connection_refused_is_transport_and_transient() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let store = ElasticsearchTaskStore::builder()
        .with_url(format!("http://127.0.0.1:{port}"))
        .with_index("tasks")
        .with_request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    let err = store.get(&id("a")).await.unwrap_err();
    assert!(matches!(&err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        std::error::Error::source(&err).is_some(),
        "the client error is kept as the source"
    );
}

// ----- _bulk -----

#[tokio::test]
async fn bulk_item_errors_are_classified_per_item_in_order() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/tasks/_bulk"))
        .and(header("content-type", "application/x-ndjson"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "took": 4,
            "errors": true,
            "items": [
                { "create": {
                    "_index": "tasks-000001", "_id": "task:a", "status": 409,
                    "error": {
                        "type": "version_conflict_engine_exception",
                        "reason": "[task:a]: version conflict, document already exists (current version [1])",
                        "index_uuid": "Vx3bqUO2QmOeUPDzDYk4aw", "shard": "0", "index": "tasks-000001"
                    }
                } },
                { "create": {
                    "_index": "tasks-000001", "_id": "task:b", "status": 429,
                    "error": {
                        "type": "es_rejected_execution_exception",
                        "reason": "rejected execution of primary operation [coordinating_and_primary_bytes=104857600, \
                                   replica_bytes=0, all_bytes=104857600, primary_operation_bytes=1187, \
                                   max_coordinating_and_primary_bytes=104857600]"
                    }
                } },
                { "create": {
                    "_index": "tasks-000001", "_id": "task:c", "_version": 1, "result": "created",
                    "_shards": { "total": 2, "successful": 1, "failed": 0 },
                    "_seq_no": 7, "_primary_term": 1, "status": 201
                } }
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;

    let tasks = ["a", "b", "c"]
        .map(|i| TaskInstance::new("email").with_id(i).unwrap())
        .to_vec();
    let results = store(&server).bulk_schedule(tasks).await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(
        matches!(&results[0], Err(Error::AlreadyExists { id }) if id == "a"),
        "{:?}",
        results[0]
    );
    match &results[1] {
        Err(
            e @ Error::Overloaded {
                status: 429,
                retry_after: None,
                reason,
            },
        ) => {
            assert!(
                reason.starts_with("rejected execution of primary operation"),
                "{reason}"
            );
            assert!(e.is_transient());
        }
        other => panic!("expected Overloaded 429 for item b, got {other:?}"),
    }
    let created = results[2].as_ref().expect("item c was created");
    assert_eq!(created.id, id("c"));
    assert_eq!(created.version, Some(Version::new(7, 1)));
}

#[tokio::test]
async fn bulk_answer_with_the_wrong_item_count_is_malformed_response() {
    let server = MockServer::start().await;
    answer(
        &server,
        "POST",
        "/tasks/_bulk",
        ResponseTemplate::new(200).set_body_json(json!({
            "took": 3,
            "errors": false,
            "items": [
                { "create": { "_index": "tasks-000001", "_id": "task:a", "_version": 1, "result": "created",
                              "_shards": { "total": 2, "successful": 1, "failed": 0 },
                              "_seq_no": 0, "_primary_term": 1, "status": 201 } },
                { "create": { "_index": "tasks-000001", "_id": "task:b", "_version": 1, "result": "created",
                              "_shards": { "total": 2, "successful": 1, "failed": 0 },
                              "_seq_no": 1, "_primary_term": 1, "status": 201 } }
            ]
        })),
    )
    .await;

    let tasks = ["a", "b", "c"]
        .map(|i| TaskInstance::new("email").with_id(i).unwrap())
        .to_vec();
    let err = store(&server).bulk_schedule(tasks).await.unwrap_err();
    assert!(
        matches!(&err, Error::MalformedResponse { status: 200, reason } if reason.contains("2 items for 3 actions")),
        "{err:?}"
    );
}

// ----- credentials -----

#[tokio::test]
async fn credentials_never_leak_into_errors_or_debug_output() {
    let server = MockServer::start().await;
    let reason = "unable to authenticate user [elastic] for REST request [/tasks/_doc/task%3Aa]";
    Mock::given(method("GET"))
        .and(path("/tasks/_doc/task%3Aa"))
        .and(header_exists("authorization"))
        .respond_with(
            es_error(
                401,
                json!({
                    "type": "security_exception",
                    "reason": reason,
                    "header": { "WWW-Authenticate": [
                        "Basic realm=\"security\", charset=\"UTF-8\"",
                        "Bearer realm=\"security\"",
                        "ApiKey"
                    ] }
                }),
            )
            .insert_header(
                "www-authenticate",
                "Basic realm=\"security\", charset=\"UTF-8\"",
            ),
        )
        .expect(1)
        .mount(&server)
        .await;

    let store = ElasticsearchTaskStore::builder()
        .with_url(server.uri())
        .with_index("tasks")
        .with_request_timeout(Duration::from_millis(300))
        .with_basic_auth("elastic", PASSWORD)
        .build()
        .unwrap();
    let err = store.get(&id("a")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Engine { status: 401, error_type, reason: r } if error_type == "security_exception" && r == reason),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_no_secret(&format!("{err}"), "error Display");
    assert_no_secret(&format!("{err:?}"), "error Debug");
    assert_no_secret(&format!("{store:?}"), "store Debug");

    // The credentials did go out, as basic auth.
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let authorization = requests[0]
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(authorization, format!("Basic {BASIC_TOKEN}"));

    // A transport failure carries the URL; credentials given in it must not come along.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let store = ElasticsearchTaskStore::builder()
        .with_url(format!("http://elastic:{PASSWORD}@127.0.0.1:{port}"))
        .with_index("tasks")
        .with_request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = store.get(&id("a")).await.unwrap_err();
    assert!(matches!(&err, Error::Transport { .. }), "{err:?}");
    assert_no_secret(&format!("{err}"), "transport error Display");
    assert_no_secret(&format!("{err:?}"), "transport error Debug");
    assert_no_secret(&format!("{store:?}"), "store Debug (URL credentials)");
}

fn assert_no_secret(text: &str, what: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the password: {text}"
    );
    assert!(
        !text.contains(BASIC_TOKEN),
        "{what} shows the encoded credentials: {text}"
    );
}
