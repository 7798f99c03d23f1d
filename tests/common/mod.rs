//! Shared test setup: the engine URL, one uniquely named index per test, raw engine access.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::Transport;
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use es_task_store::{ElasticsearchTaskStore, Refresh, StoreBuilder};
use serde_json::Value;

/// The engine the tests run against: `ELASTICSEARCH_URL`, or the one `cargo xtask engine start`
/// left running. Fails with instructions when there is none.
pub fn engine_url() -> String {
    if let Ok(url) = std::env::var("ELASTICSEARCH_URL") {
        if !url.trim().is_empty() {
            return url;
        }
    }
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/.engine/engine.url");
    match std::fs::read_to_string(file) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "no search engine for the integration tests: run them with `cargo xtask test` \
             (starts a local OpenSearch), or start one with `cargo xtask engine start`, or set \
             ELASTICSEARCH_URL to a running Elasticsearch/OpenSearch"
        ),
    }
}

/// A unique index name for one test.
pub fn unique_index(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "test-{prefix}-{}-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A builder for a store on a fresh, not yet created index.
pub fn builder(prefix: &str) -> StoreBuilder {
    ElasticsearchTaskStore::builder()
        .with_url(engine_url())
        .with_index(unique_index(prefix))
        .with_refresh(Refresh::False)
}

/// A store on a fresh index that exists.
pub async fn store(prefix: &str) -> ElasticsearchTaskStore {
    let store = builder(prefix).build().expect("store");
    ensure_index(&store).await;
    store
}

/// `ensure_index`, failing the test with instructions when the engine does not answer.
pub async fn ensure_index(store: &ElasticsearchTaskStore) {
    if let Err(e) = store.ensure_index().await {
        panic!(
            "ensure_index on {} failed: {e}. Is the engine running? Use `cargo xtask test`, \
             or `cargo xtask engine start`",
            engine_url()
        );
    }
}

/// Direct access to the engine, bypassing the store.
pub struct Raw {
    client: Elasticsearch,
}

impl Raw {
    pub fn new() -> Self {
        let transport = Transport::single_node(&engine_url()).expect("transport");
        Self {
            client: Elasticsearch::new(transport),
        }
    }

    /// Sends a request; returns the status and JSON body (Null when empty).
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let response = self
            .client
            .send::<Vec<u8>, ()>(method, path, HeaderMap::new(), None, body, None)
            .await
            .expect("raw request");
        let status = response.status_code().as_u16();
        let bytes = response.bytes().await.expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn index_exists(&self, index: &str) -> bool {
        let (status, _) = self.send(Method::Head, &format!("/{index}"), None).await;
        status == 200
    }

    pub async fn mapping(&self, index: &str) -> Value {
        let (status, body) = self
            .send(Method::Get, &format!("/{index}/_mapping"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_object().unwrap().values().next().unwrap()["mappings"].clone()
    }
}
