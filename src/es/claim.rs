//! Claiming on the engine: the optimistic strategy (search + conditional `_bulk`) and the
//! update-by-query strategy.

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Utc};
use elasticsearch::http::Method;
use serde_json::{json, Value};

use super::bulk::BulkBody;
use super::classify::Context;
use super::client::Body;
use super::document::encode_patch;
use super::document::format_date;
use super::query;
use super::store::{decode_hits, hits_of, ElasticsearchTaskStore};
use crate::claim::{claim_patch, lease_delta, ClaimRequest, ClaimResult, ClaimStrategy};
use crate::error::{Error, Result};
use crate::patch::TaskPatch;
use crate::task::{ConcreteTaskInstance, TaskStatus};

/// Most conditional `_bulk` rounds one optimistic claim makes.
const MAX_ROUNDS: usize = 4;
/// Fewest candidates an optimistic claim searches for, however small its capacity.
const MIN_WINDOW: usize = 20;
/// Most candidate searches one optimistic claim makes.
const MAX_SEARCHES: usize = 2;

impl ElasticsearchTaskStore {
    /// Claims up to `request.capacity` claimable tasks for `request.owner_id`, with the store's
    /// claim strategy, at the store clock's now.
    ///
    /// Conflicts with other claimers are counted in the result, not errors. Every claimed
    /// task carries the version its claim wrote; later writes by the owner must carry it.
    ///
    /// ```no_run
    /// # async fn run(store: es_task_store::ElasticsearchTaskStore) -> es_task_store::Result<()> {
    /// use es_task_store::ClaimRequest;
    /// let claim = store.claim(&ClaimRequest::new("worker-1", ["email"]).with_capacity(10)).await?;
    /// for task in &claim.claimed {
    ///     // run it, then: store.mark_success(task, state, None).await
    /// }
    /// println!("{} claimed, {} conflicts", claim.claimed.len(), claim.conflicts);
    /// # Ok(()) }
    /// ```
    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResult> {
        request.validate()?;
        if request.task_types.is_empty() {
            return Ok(ClaimResult::default());
        }
        let now = self.now();
        let result = match self.claim_strategy {
            ClaimStrategy::Optimistic => self.claim_optimistic(request, now).await,
            ClaimStrategy::UpdateByQuery => self.claim_by_query(request, now).await,
        }?;
        tracing::debug!(
            owner = %request.owner_id,
            claimed = result.claimed.len(),
            conflicts = result.conflicts,
            candidates = result.candidates,
            "claim"
        );
        Ok(result)
    }

    async fn claim_optimistic(
        &self,
        request: &ClaimRequest,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult> {
        let mut result = ClaimResult::default();
        let window = request
            .capacity
            .saturating_mul(self.claim_oversampling)
            .clamp(MIN_WINDOW, 10_000);
        let mut tried: HashSet<String> = HashSet::new();
        let mut candidates = VecDeque::new();
        let mut searches = 0;
        for _ in 0..MAX_ROUNDS {
            let wanted = request.capacity - result.claimed.len();
            if wanted == 0 {
                break;
            }
            if candidates.is_empty() {
                // Search again only when conflicts, or unreadable documents, took what the last
                // search offered.
                let refill = result.conflicts > 0 || !result.skipped.is_empty();
                if searches == MAX_SEARCHES || (searches > 0 && !refill) {
                    break;
                }
                candidates = self
                    .claim_candidates(request, now, window, &mut result)
                    .await?;
                candidates.retain(|t: &ConcreteTaskInstance| !tried.contains(t.id.as_str()));
                searches += 1;
                if candidates.is_empty() {
                    break;
                }
            }
            let batch: Vec<ConcreteTaskInstance> =
                candidates.drain(..wanted.min(candidates.len())).collect();
            tried.extend(batch.iter().map(|t| t.id.to_string()));
            self.claim_batch(request, now, batch, &mut result).await?;
        }
        Ok(result)
    }

    /// The next candidates, best first; among equal priorities in random order, so concurrent
    /// claimers spread over the window instead of all racing for the same tasks.
    async fn claim_candidates(
        &self,
        request: &ClaimRequest,
        now: DateTime<Utc>,
        window: usize,
        result: &mut ClaimResult,
    ) -> Result<VecDeque<ConcreteTaskInstance>> {
        let answer = self
            .search(query::claim_candidates_body(
                now,
                &request.task_types,
                window,
                &self.recent.current(),
            ))
            .await?;
        result.requests += 1;
        let (mut tasks, skipped) = decode_hits(hits_of(&answer)?);
        for e in skipped {
            tracing::warn!(error = %e, "skipping a claim candidate that is not a valid task; this store will not offer it again");
            if let Error::Decode { id, .. } = &e {
                self.recent.note_unreadable(id.clone());
            }
            result.skipped.push(e);
        }
        result.candidates += tasks.len();
        shuffle_within_priority(&mut tasks);
        Ok(tasks.into())
    }

    async fn claim_batch(
        &self,
        request: &ClaimRequest,
        now: DateTime<Utc>,
        batch: Vec<ConcreteTaskInstance>,
        result: &mut ClaimResult,
    ) -> Result<()> {
        let claims = batch
            .into_iter()
            .map(|task| {
                let lease = lease_delta(request.lease_for(&task.task_type)).unwrap_or_default();
                let patch = claim_patch(&task, &request.owner_id, now, lease);
                (task, patch)
            })
            .collect();
        let sent = self.write_claims(claims, now, result).await?;
        // Won or lost, these are taken: keep them out of the next searches until a refresh.
        self.recent.note(sent);
        Ok(())
    }

    /// Writes each task's claim patch conditional on the version it was read at, and sorts the
    /// answers into `result`: claimed (with the new version), conflicts, removed, errors.
    /// Returns the document ids it sent.
    async fn write_claims(
        &self,
        claims: Vec<(ConcreteTaskInstance, TaskPatch)>,
        now: DateTime<Utc>,
        result: &mut ClaimResult,
    ) -> Result<Vec<String>> {
        let mut body = BulkBody::new();
        let mut sent = Vec::with_capacity(claims.len());
        for (task, patch) in claims {
            let Some(version) = task.version else {
                result.errors.push((task.id.clone(), missing_version()));
                continue;
            };
            body.update_if(&task.id.document_id(), version, &encode_patch(&patch, now));
            sent.push((task, patch));
        }
        let items = self.send_bulk(body).await?;
        result.requests += 1;
        let doc_ids = sent.iter().map(|(task, _)| task.id.document_id()).collect();
        for ((mut task, patch), item) in sent.into_iter().zip(items) {
            match item.into_result(Context::task(&self.index, task.id.as_str())) {
                Ok(version) => {
                    patch.apply_to(&mut task);
                    task.version = version;
                    result.claimed.push(task);
                }
                Err(Error::Conflict { .. }) => result.conflicts += 1,
                Err(Error::NotFound { .. }) => result.removed += 1,
                Err(e) => result.errors.push((task.id.clone(), e)),
            }
        }
        Ok(doc_ids)
    }

    async fn claim_by_query(
        &self,
        request: &ClaimRequest,
        now: DateTime<Utc>,
    ) -> Result<ClaimResult> {
        let mut result = ClaimResult::default();
        let retry_at: serde_json::Map<String, Value> = request
            .leases
            .iter()
            .filter_map(|(ty, lease)| {
                Some((ty.clone(), json!(format_date(now + lease_delta(*lease)?))))
            })
            .collect();
        let default_retry_at =
            format_date(now + lease_delta(request.default_lease).unwrap_or_default());
        let body = json!({
            "query": query::claimable(now, &request.task_types),
            "sort": query::claim_sort(),
            "script": {
                "lang": "painless",
                "source": CLAIM_SCRIPT,
                "params": {
                    "ownerId": request.owner_id,
                    "now": format_date(now),
                    "retryAt": retry_at,
                    "defaultRetryAt": default_retry_at,
                }
            }
        });
        let max_docs = request.capacity.to_string();
        let answer = self
            .http
            .send(
                Method::Post,
                &format!("/{}/_update_by_query", super::client::segment(&self.index)),
                &[
                    ("conflicts", "proceed"),
                    ("refresh", "true"),
                    ("max_docs", &max_docs),
                ],
                Some(Body::Json(body)),
                Context::index(&self.index),
            )
            .await?;
        result.requests += 1;
        result.conflicts = answer["version_conflicts"].as_u64().unwrap_or(0) as usize;
        if answer["updated"].as_u64() == Some(0) {
            return Ok(result);
        }
        // What this owner holds in `claiming` is what its claims took; mark it running and
        // take the versions.
        let answer = self
            .search(query::claiming_by_owner_body(
                &request.owner_id,
                request.capacity,
            ))
            .await?;
        result.requests += 1;
        let (batch, skipped) = decode_hits(hits_of(&answer)?);
        result.skipped.extend(skipped);
        result.candidates += batch.len();
        let running = TaskPatch {
            status: Some(TaskStatus::Running),
            ..TaskPatch::default()
        };
        let claims = batch
            .into_iter()
            .map(|task| (task, running.clone()))
            .collect();
        self.write_claims(claims, now, &mut result).await?;
        Ok(result)
    }
}

fn missing_version() -> Error {
    Error::MalformedResponse {
        status: 200,
        reason: "search hit without _seq_no/_primary_term".into(),
    }
}

/// The update-by-query claim, in Painless.
const CLAIM_SCRIPT: &str = "\
def t = ctx._source.task;\
t.status = 'claiming';\
t.ownerId = params.ownerId;\
t.startedAt = params.now;\
t.retryAt = params.retryAt.containsKey(t.taskType) ? params.retryAt[t.taskType] : params.defaultRetryAt;\
t.attempts = (t.attempts == null ? 0 : t.attempts) + 1;\
ctx._source.updated_at = params.now;";

/// Keeps priority order but shuffles tasks of equal priority.
fn shuffle_within_priority(tasks: &mut [ConcreteTaskInstance]) {
    let mut start = 0;
    while start < tasks.len() {
        let priority = tasks[start].priority;
        let end = start
            + tasks[start..]
                .iter()
                .take_while(|t| t.priority == priority)
                .count();
        fastrand::shuffle(&mut tasks[start..end]);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskInstance;

    #[test]
    fn shuffling_keeps_priority_order() {
        let now = Utc::now();
        let mut tasks: Vec<ConcreteTaskInstance> = [90, 90, 90, 50, 50, 10]
            .iter()
            .map(|p| {
                TaskInstance::new("t")
                    .with_priority(*p)
                    .into_concrete(now)
                    .unwrap()
            })
            .collect();
        for _ in 0..20 {
            shuffle_within_priority(&mut tasks);
            let priorities: Vec<i32> = tasks.iter().map(|t| t.priority).collect();
            assert_eq!(priorities, [90, 90, 90, 50, 50, 10]);
        }
    }
}
