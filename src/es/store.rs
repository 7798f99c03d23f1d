//! [`ElasticsearchTaskStore`]: the task store on one Elasticsearch (or OpenSearch) index.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};

use super::bulk::{parse_items, BulkBody};
use super::classify::Context;
use super::client::{segment, Body, Http};
use super::config::{Refresh, StoreBuilder};
use super::document::{decode_document, encode_patch, encode_task, format_date, write_document};
use super::{mapping, query};
use crate::claim::ClaimStrategy;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::patch::TaskPatch;
use crate::query::{Cursor, FetchPage, TaskQuery, TaskStats};
use crate::task::{ConcreteTaskInstance, TaskId, TaskInstance};
use crate::version::Version;

/// What [`ElasticsearchTaskStore::ensure_index`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum IndexStatus {
    /// The index did not exist; it was created with the store's mapping, behind the alias.
    Created {
        /// The concrete index behind the alias.
        concrete_index: String,
    },
    /// The index existed and its mapping is compatible. Nothing was changed.
    Verified,
}

/// A task store on one index (normally an alias).
///
/// Cheap to clone: clones share the HTTP connection pool.
///
/// ```no_run
/// use es_task_store::{ElasticsearchTaskStore, TaskInstance};
/// use serde_json::json;
///
/// # async fn run() -> es_task_store::Result<()> {
/// let store = ElasticsearchTaskStore::from_env()?;
/// store.ensure_index().await?;
/// let task = store
///     .schedule(TaskInstance::new("email").with_params(json!({"to": "a@example.com"})))
///     .await?;
/// let stored = store.get(&task.id).await?;
/// assert_eq!(stored.params["to"], "a@example.com");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ElasticsearchTaskStore {
    pub(crate) http: Http,
    pub(crate) index: Arc<str>,
    pub(crate) refresh: Refresh,
    pub(crate) clock: Arc<dyn Clock>,
    require_alias: bool,
    pub(crate) claim_strategy: ClaimStrategy,
    pub(crate) claim_oversampling: usize,
    pub(crate) recent: Arc<super::recent::RecentClaims>,
}

impl fmt::Debug for ElasticsearchTaskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client holds credentials; it is deliberately not shown.
        f.debug_struct("ElasticsearchTaskStore")
            .field("index", &self.index)
            .field("refresh", &self.refresh)
            .field("clock", &self.clock)
            .field("require_alias", &self.require_alias)
            .field("claim_strategy", &self.claim_strategy)
            .finish_non_exhaustive()
    }
}

impl ElasticsearchTaskStore {
    /// A builder with defaults.
    #[must_use]
    pub fn builder() -> StoreBuilder {
        StoreBuilder::new()
    }

    /// A store configured from the environment (see [`StoreBuilder`]).
    pub fn from_env() -> Result<Self> {
        StoreBuilder::from_env()?.build()
    }

    pub(crate) fn from_parts(client: Elasticsearch, config: StoreBuilder) -> Self {
        Self {
            http: Http::new(client),
            index: Arc::from(config.index.as_str()),
            refresh: config.refresh,
            clock: config.clock,
            require_alias: config.require_alias,
            claim_strategy: config.claim_strategy,
            claim_oversampling: config.claim_oversampling,
            recent: Arc::default(),
        }
    }

    /// The index (alias) name.
    #[must_use]
    pub fn index(&self) -> &str {
        &self.index
    }

    /// The store's current time.
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The same store with another write refresh policy.
    #[must_use]
    pub fn with_refresh(&self, refresh: Refresh) -> Self {
        let mut store = self.clone();
        store.refresh = refresh;
        store
    }

    /// The concrete index `ensure_index` creates behind the alias.
    #[must_use]
    pub fn concrete_index_name(&self) -> String {
        format!("{}-000001", self.index)
    }

    fn path(&self, tail: &str) -> String {
        format!("/{}/{tail}", segment(&self.index))
    }

    fn doc_path(&self, endpoint: &str, id: &TaskId) -> String {
        self.path(&format!("{endpoint}/{}", segment(&id.document_id())))
    }

    /// Query parameters of a write.
    fn write_params(&self) -> Vec<(&'static str, &'static str)> {
        let mut params = vec![("refresh", self.refresh.as_str())];
        if self.require_alias {
            params.push(("require_alias", "true"));
        }
        params
    }

    /// Merges `doc` into a task's document, if it is still at `version`; the new version.
    async fn update_if(&self, id: &TaskId, version: Version, doc: Value) -> Result<Version> {
        version.check()?;
        let (seq_no, term) = (version.seq_no.to_string(), version.primary_term.to_string());
        let mut params = self.write_params();
        params.push(("if_seq_no", &seq_no));
        params.push(("if_primary_term", &term));
        let answer = self
            .http
            .send(
                Method::Post,
                &self.doc_path("_update", id),
                &params,
                Some(Body::Json(json!({ "doc": doc }))),
                Context::task(&self.index, id.as_str()),
            )
            .await?;
        version_of(&answer)
    }

    // ----- index -----

    /// Creates the index with the store's mapping if it does not exist, or verifies the
    /// mapping of the existing one. An existing mapping is never changed: a difference is
    /// [`Error::MappingMismatch`] naming each field.
    ///
    /// A new index is created as `<index>-000001` with `<index>` as its write alias, so writes
    /// can require an alias and a deleted index is never re-created by a write.
    pub async fn ensure_index(&self) -> Result<IndexStatus> {
        match self.verify_index().await {
            Err(Error::IndexMissing { .. }) => {}
            other => return other.map(|()| IndexStatus::Verified),
        }
        let concrete = self.concrete_index_name();
        let mut body = mapping::index_definition();
        body["aliases"] = json!({ self.index.as_ref(): { "is_write_index": true } });
        let created = self
            .http
            .send(
                Method::Put,
                &format!("/{}", segment(&concrete)),
                &[("wait_for_active_shards", "1")],
                Some(Body::Json(body)),
                Context::index(&concrete),
            )
            .await;
        match created {
            Ok(_) => {
                tracing::info!(index = %self.index, concrete_index = %concrete, "created task index");
                Ok(IndexStatus::Created {
                    concrete_index: concrete,
                })
            }
            // Another process created it first: verify what it created.
            Err(Error::Engine { error_type, .. })
                if error_type == "resource_already_exists_exception"
                    || error_type == "invalid_alias_name_exception" =>
            {
                self.verify_index().await.map(|()| IndexStatus::Verified)
            }
            Err(e) => Err(e),
        }
    }

    async fn verify_index(&self) -> Result<()> {
        let answer = self
            .http
            .send(
                Method::Get,
                &self.path("_mapping"),
                &[],
                None,
                Context::index(&self.index),
            )
            .await?;
        let indices = answer.as_object().ok_or_else(|| Error::MalformedResponse {
            status: 200,
            reason: "mapping answer is not an object".into(),
        })?;
        if self.require_alias && indices.contains_key(self.index.as_ref()) {
            return Err(Error::Config {
                key: "index".into(),
                reason: format!(
                    "{} is a concrete index, not an alias; the store writes with require_alias so \
                     that a deleted index is never re-created. Point it at an alias, or build it \
                     with with_require_alias(false)",
                    self.index
                ),
            });
        }
        for (name, definition) in indices {
            mapping::verify(name, &definition["mappings"]).map_err(|e| match e {
                Error::MappingMismatch { mismatches, .. } => Error::MappingMismatch {
                    index: name.clone(),
                    mismatches,
                },
                other => other,
            })?;
        }
        Ok(())
    }

    /// Deletes the index (every index behind the alias). Tasks are lost; for tests and
    /// migrations. A missing index is not an error.
    pub async fn delete_index(&self) -> Result<()> {
        let answer = match self
            .http
            .send(
                Method::Get,
                &self.path("_alias"),
                &[],
                None,
                Context::index(&self.index),
            )
            .await
        {
            Ok(answer) => answer,
            Err(Error::IndexMissing { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let names: Vec<String> = answer
            .as_object()
            .map(|o| o.keys().map(|k| segment(k)).collect())
            .unwrap_or_default();
        if names.is_empty() {
            return Ok(());
        }
        match self
            .http
            .send(
                Method::Delete,
                &format!("/{}", names.join(",")),
                &[],
                None,
                Context::index(&self.index),
            )
            .await
        {
            Ok(_) | Err(Error::IndexMissing { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Makes every write so far visible to search.
    pub async fn refresh_index(&self) -> Result<()> {
        self.http
            .send(
                Method::Post,
                &self.path("_refresh"),
                &[],
                None,
                Context::index(&self.index),
            )
            .await
            .map(drop)
    }

    // ----- scheduling -----

    /// Stores a new task. Create only: an existing id is [`Error::AlreadyExists`].
    ///
    /// Unset fields get their defaults (see [`TaskInstance`]); the returned task carries its
    /// version.
    pub async fn schedule(&self, task: TaskInstance) -> Result<ConcreteTaskInstance> {
        let now = self.now();
        let mut task = task.into_concrete(now)?;
        let id = task.id.to_string();
        let answer = self
            .http
            .send(
                Method::Put,
                &self.doc_path("_create", &task.id),
                &self.write_params(),
                Some(Body::JsonBytes(document_bytes(&task, now))),
                Context::create(&self.index, &id),
            )
            .await?;
        task.version = Some(version_of(&answer)?);
        Ok(task)
    }

    /// Stores a task unless one with its id exists, in which case the existing task is
    /// returned untouched (its state, schedule and runAt are kept). Safe to call on every
    /// start of a service for tasks with fixed ids.
    pub async fn ensure_scheduled(&self, task: TaskInstance) -> Result<ConcreteTaskInstance> {
        let id = task.id.clone().ok_or_else(|| {
            Error::invalid_task("id", "ensure_scheduled needs a fixed id to be idempotent")
        })?;
        // Bounded: the task could be removed between a failed create and the read.
        for _ in 0..3 {
            match self.schedule(task.clone()).await {
                Err(Error::AlreadyExists { .. }) => match self.get(&id).await {
                    Err(Error::NotFound { .. }) => continue,
                    other => return other,
                },
                other => return other,
            }
        }
        self.get(&id).await
    }

    /// Stores many new tasks in one request. One result per task, in order; a task that breaks
    /// a rule is rejected on its own without reaching the engine.
    pub async fn bulk_schedule(
        &self,
        tasks: Vec<TaskInstance>,
    ) -> Result<Vec<Result<ConcreteTaskInstance>>> {
        let now = self.now();
        let mut results: Vec<Result<ConcreteTaskInstance>> = Vec::with_capacity(tasks.len());
        let mut body = BulkBody::new();
        for task in tasks {
            let concrete = task.into_concrete(now);
            if let Ok(task) = &concrete {
                body.create(task, now);
            }
            results.push(concrete);
        }
        let items = self.send_bulk(body).await?;
        let mut items = items.into_iter();
        for result in results.iter_mut() {
            let Ok(task) = result else { continue };
            let Some(item) = items.next() else { break };
            let id = task.id.to_string();
            match item.into_result(Context::create(&self.index, &id)) {
                Ok(version) => task.version = version,
                Err(e) => *result = Err(e),
            }
        }
        Ok(results)
    }

    /// Sends a bulk body to the index; the items, one per action. An empty body sends nothing.
    /// When every item failed because the index is missing, that is the whole call's error.
    pub(crate) async fn send_bulk(&self, body: BulkBody) -> Result<Vec<super::bulk::BulkItem>> {
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let expected = body.len();
        let answer = self
            .http
            .send(
                Method::Post,
                &self.path("_bulk"),
                &self.write_params(),
                Some(Body::Ndjson(body.into_bytes())),
                Context::index(&self.index),
            )
            .await?;
        let items = parse_items(&answer, expected)?;
        let index_missing = |item: &super::bulk::BulkItem| {
            item.status == 404
                && item
                    .error
                    .as_ref()
                    .and_then(|e| e.get("type"))
                    .and_then(Value::as_str)
                    == Some("index_not_found_exception")
        };
        if items.iter().all(index_missing) {
            return Err(Error::IndexMissing {
                index: self.index.to_string(),
            });
        }
        Ok(items)
    }

    // ----- reading -----

    /// Reads one task in real time (no refresh needed).
    pub async fn get(&self, id: &TaskId) -> Result<ConcreteTaskInstance> {
        let answer = self
            .http
            .send(
                Method::Get,
                &self.doc_path("_doc", id),
                &[],
                None,
                Context::task(&self.index, id.as_str()),
            )
            .await?;
        decode_hit(&answer)
    }

    /// Reads many tasks in real time: one result per id, in order ([`Error::NotFound`] per
    /// missing task).
    pub async fn bulk_get(&self, ids: &[TaskId]) -> Result<Vec<Result<ConcreteTaskInstance>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let doc_ids: Vec<String> = ids.iter().map(TaskId::document_id).collect();
        let answer = self
            .http
            .send(
                Method::Post,
                &self.path("_mget"),
                &[],
                Some(Body::Json(json!({ "ids": doc_ids }))),
                Context::index(&self.index),
            )
            .await?;
        let docs = answer
            .get("docs")
            .and_then(Value::as_array)
            .filter(|docs| docs.len() == ids.len())
            .ok_or_else(|| Error::MalformedResponse {
                status: 200,
                reason: format!("_mget answer does not hold {} docs", ids.len()),
            })?;
        let results: Vec<Result<ConcreteTaskInstance>> = docs
            .iter()
            .zip(ids)
            .map(|(doc, id)| {
                if let Some(error) = doc.get("error") {
                    let status = if error.get("type").and_then(Value::as_str)
                        == Some("index_not_found_exception")
                    {
                        404
                    } else {
                        500
                    };
                    return Err(super::classify::classify(
                        status,
                        None,
                        error,
                        Context::task(&self.index, id.as_str()),
                    ));
                }
                if doc.get("found").and_then(Value::as_bool) != Some(true) {
                    return Err(Error::NotFound { id: id.to_string() });
                }
                decode_hit(doc)
            })
            .collect();
        if results
            .iter()
            .all(|r| matches!(r, Err(Error::IndexMissing { .. })))
        {
            return Err(Error::IndexMissing {
                index: self.index.to_string(),
            });
        }
        Ok(results)
    }

    /// One page of tasks matching a query. Documents that cannot be read as tasks are listed
    /// in [`FetchPage::skipped`] instead of failing the page.
    ///
    /// Search is near-real-time: writes show up after the next refresh (see [`Refresh`]).
    pub async fn fetch(&self, query: &TaskQuery) -> Result<FetchPage> {
        query.validate()?;
        let answer = self.search(query::fetch_body(query)).await?;
        page_of(&answer, query.size)
    }

    pub(crate) async fn search(&self, body: Value) -> Result<Value> {
        self.http
            .send(
                Method::Post,
                &self.path("_search"),
                &[],
                Some(Body::Json(body)),
                Context::index(&self.index),
            )
            .await
    }

    /// Counts by status and type, and the work waiting (idle tasks past their `runAt` by the
    /// store's clock).
    pub async fn stats(&self) -> Result<TaskStats> {
        let answer = self.search(query::stats_body(self.now())).await?;
        let total = answer["hits"]["total"]["value"]
            .as_u64()
            .or_else(|| answer["hits"]["total"].as_u64())
            .unwrap_or(0);
        let buckets = |name: &str| {
            answer["aggregations"][name]["buckets"]
                .as_array()
                .map(|buckets| {
                    buckets
                        .iter()
                        .filter_map(|b| {
                            Some((b["key"].as_str()?.to_owned(), b["doc_count"].as_u64()?))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let overdue = &answer["aggregations"]["overdue"];
        Ok(TaskStats {
            total,
            by_status: buckets("by_status"),
            by_type: buckets("by_type"),
            overdue: overdue["doc_count"].as_u64().unwrap_or(0),
            oldest_overdue_run_at: overdue["oldest"]["value"]
                .as_f64()
                .and_then(|ms| Utc.timestamp_millis_opt(ms as i64).single()),
        })
    }

    // ----- updating -----

    /// Writes every field of a stored task, if it is still at `task.version`. Returns the new
    /// version; [`Error::Conflict`] if the task changed or was removed meanwhile (it is never
    /// re-created).
    ///
    /// Fields of the document this crate does not model (Kibana's `apiKey`, `partition`,
    /// `namespaces`, `references`...) are kept: the task's fields are merged into the stored
    /// document rather than replacing it.
    pub async fn update(&self, task: &ConcreteTaskInstance) -> Result<Version> {
        task.validate()?;
        let version = task.require_version()?;
        self.update_if(&task.id, version, encode_merge(task, self.now()))
            .await
            .map_err(|e| missing_is_conflict(e, task.id.as_str()))
    }

    /// Writes many stored tasks in one request, each conditional on its own version, keeping
    /// the fields this crate does not model (see [`update`](Self::update)). One result per
    /// task, in order.
    pub async fn bulk_update(
        &self,
        tasks: &[ConcreteTaskInstance],
    ) -> Result<Vec<Result<Version>>> {
        let now = self.now();
        let mut results: Vec<Result<Version>> = Vec::with_capacity(tasks.len());
        let mut body = BulkBody::new();
        for task in tasks {
            let checked = task.validate().and_then(|()| task.require_version());
            if let Ok(version) = &checked {
                body.update_if(&task.id.document_id(), *version, &encode_merge(task, now));
            }
            results.push(checked);
        }
        let mut items = self.send_bulk(body).await?.into_iter();
        for (result, task) in results.iter_mut().zip(tasks) {
            if result.is_err() {
                continue;
            }
            let Some(item) = items.next() else { break };
            let id = task.id.to_string();
            *result = item
                .into_result(Context::task(&self.index, &id))
                .map_err(|e| missing_is_conflict(e, &id))
                .and_then(|v| v.ok_or_else(missing_version));
        }
        Ok(results)
    }

    /// Changes some fields of a stored task, if it is still at `version`. Returns the new
    /// version. [`Error::Conflict`] if the task changed since; [`Error::NotFound`] if it is
    /// gone (it is never re-created).
    pub async fn partial_update(
        &self,
        id: &TaskId,
        version: Version,
        patch: &TaskPatch,
    ) -> Result<Version> {
        patch.validate()?;
        self.update_if(id, version, encode_patch(patch, self.now()))
            .await
    }

    // ----- removing -----

    /// Removes a task. Idempotent: a task that is already gone is success.
    pub async fn remove(&self, id: &TaskId) -> Result<()> {
        let items = self.bulk_remove(std::slice::from_ref(id)).await?;
        items.into_iter().next().unwrap_or(Ok(()))
    }

    /// Removes many tasks in one request; one result per id, in order. Already gone is success.
    pub async fn bulk_remove(&self, ids: &[TaskId]) -> Result<Vec<Result<()>>> {
        // Deletes go through _bulk because a bulk request honours require_alias: a plain DELETE
        // on a missing index would let the engine create it.
        let mut body = BulkBody::new();
        for id in ids {
            body.delete(&id.document_id());
        }
        let items = self.send_bulk(body).await?;
        Ok(items
            .into_iter()
            .zip(ids)
            .map(
                |(item, id)| match item.into_result(Context::task(&self.index, id.as_str())) {
                    Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                },
            )
            .collect())
    }
}

/// Every field of a task, as a `doc` to merge into its document: fields the task does not set
/// are written as null, so the merge clears them.
fn encode_merge(task: &ConcreteTaskInstance, now: DateTime<Utc>) -> Value {
    let mut fields = encode_task(task);
    if let Value::Object(map) = &mut fields {
        for key in [
            "schedule",
            "scope",
            "user",
            "traceparent",
            "timeoutOverride",
            "lastError",
        ] {
            map.entry(key).or_insert(Value::Null);
        }
    }
    json!({ "type": super::document::DOCUMENT_TYPE, "task": fields, "updated_at": format_date(now) })
}

fn document_bytes(task: &ConcreteTaskInstance, now: DateTime<Utc>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    write_document(&mut buf, task, now);
    buf
}

/// A conditional full write on a removed document is a version conflict for the engine; some
/// engines answer 404 instead. Both mean: somebody else's change won.
fn missing_is_conflict(e: Error, id: &str) -> Error {
    match e {
        Error::NotFound { .. } => Error::Conflict { id: id.to_owned() },
        other => other,
    }
}

fn missing_version() -> Error {
    Error::MalformedResponse {
        status: 200,
        reason: "write answer has no _seq_no/_primary_term".into(),
    }
}

/// The version in a write answer.
fn version_of(answer: &Value) -> Result<Version> {
    match (
        answer.get("_seq_no").and_then(Value::as_i64),
        answer.get("_primary_term").and_then(Value::as_i64),
    ) {
        (Some(seq_no), Some(term)) => Ok(Version::new(seq_no, term)),
        _ => Err(missing_version()),
    }
}

/// A page of decoded tasks from a search answer for `size` hits.
pub(crate) fn page_of(answer: &Value, size: usize) -> Result<FetchPage> {
    let hits = hits_of(answer)?;
    let (tasks, skipped) = decode_hits(hits);
    for e in &skipped {
        tracing::warn!(error = %e, "skipping a document that is not a valid task");
    }
    let mut page = FetchPage {
        tasks,
        skipped,
        next: None,
    };
    if hits.len() == size {
        page.next = hits
            .last()
            .and_then(|hit| hit.get("sort"))
            .and_then(Value::as_array)
            .map(|sort| Cursor(sort.clone()));
    }
    Ok(page)
}

/// The hits of a search answer.
pub(crate) fn hits_of(answer: &Value) -> Result<&Vec<Value>> {
    answer["hits"]["hits"]
        .as_array()
        .ok_or_else(|| Error::MalformedResponse {
            status: 200,
            reason: "search answer has no hits.hits".into(),
        })
}

/// The tasks of search hits, and the decode errors of the hits that are not valid tasks.
pub(crate) fn decode_hits(hits: &[Value]) -> (Vec<ConcreteTaskInstance>, Vec<Error>) {
    let mut tasks = Vec::with_capacity(hits.len());
    let mut skipped = Vec::new();
    for hit in hits {
        match decode_hit(hit) {
            Ok(task) => tasks.push(task),
            Err(e) => skipped.push(e),
        }
    }
    (tasks, skipped)
}

/// A task from a document read by get, mget or search (with `_seq_no` and `_primary_term`).
pub(crate) fn decode_hit(hit: &Value) -> Result<ConcreteTaskInstance> {
    let doc_id = hit["_id"]
        .as_str()
        .ok_or_else(|| Error::MalformedResponse {
            status: 200,
            reason: "document has no _id".into(),
        })?;
    let version = match (hit["_seq_no"].as_i64(), hit["_primary_term"].as_i64()) {
        (Some(seq_no), Some(term)) => Some(Version::new(seq_no, term)),
        _ => None,
    };
    decode_document(doc_id, version, &hit["_source"])
}
