//! The writes of a lease holder: complete, fail, release, renew. Each is conditional on the
//! version the holder's claim (or last renewal) returned, so once another owner has taken the
//! task over, or the task was removed, the write fails with [`Error::LeaseLost`] or
//! [`Error::Removed`] and changes nothing. None of them ever re-creates a removed task.

use chrono::TimeDelta;
use serde_json::{Map, Value};

use super::bulk::BulkBody;
use super::classify::Context;
use super::store::ElasticsearchTaskStore;
use crate::error::{Error, Result};
use crate::outcome::{
    on_failure, on_release, on_renewal, on_success, Completion, NextRun, RetryPolicy,
};
use crate::patch::TaskPatch;
use crate::task::ConcreteTaskInstance;
use crate::version::Version;

impl ElasticsearchTaskStore {
    /// Ends a successful run of a claimed task: a one-off task is deleted, a recurring one goes
    /// back to `idle` with its next `runAt`, the new `state` and no attempts (see
    /// [`outcome`](crate::outcome)). Returns the new version, or `None` when the task was
    /// deleted.
    pub async fn mark_success(
        &self,
        task: &ConcreteTaskInstance,
        state: Map<String, Value>,
        next: Option<NextRun>,
    ) -> Result<Option<Version>> {
        let completion = on_success(task, self.now(), state, next);
        self.complete(task, &completion).await
    }

    /// Ends a failed run of a claimed task: retried later with backoff, or `failed` with its
    /// last error once a one-off task is out of attempts. Returns the new version.
    pub async fn mark_failure(
        &self,
        task: &ConcreteTaskInstance,
        error: &str,
        policy: &RetryPolicy,
    ) -> Result<Version> {
        let patch = on_failure(task, self.now(), error, policy, fastrand::f64());
        self.lease_write(task, patch).await
    }

    /// Gives a claimed task back unrun: `idle`, claimable at once, the claim's attempt not
    /// counted. Returns the new version.
    pub async fn release(&self, task: &ConcreteTaskInstance) -> Result<Version> {
        self.lease_write(task, on_release(task)).await
    }

    /// Extends the lease of a claimed task to now + `lease`, and updates `task` with the new
    /// `retryAt` and version (which every later write must carry).
    pub async fn renew_lease(
        &self,
        task: &mut ConcreteTaskInstance,
        lease: std::time::Duration,
    ) -> Result<Version> {
        let lease = crate::claim::lease_delta(lease)
            .filter(|l| *l > TimeDelta::zero())
            .ok_or_else(|| Error::InvalidQuery {
                field: "lease",
                reason: format!("must be greater than zero and at most 365 days, got {lease:?}"),
            })?;
        let patch = on_renewal(self.now(), lease);
        // The patch only moves retryAt; apply it to the caller's copy once written.
        let version = self.lease_write(task, patch.clone()).await?;
        patch.apply_to(task);
        task.version = Some(version);
        Ok(version)
    }

    /// Writes a [`Completion`] conditional on the task's version. Returns the new version, or
    /// `None` when the task was deleted.
    pub async fn complete(
        &self,
        task: &ConcreteTaskInstance,
        completion: &Completion,
    ) -> Result<Option<Version>> {
        let mut results = self.complete_batch(&[(task, completion)]).await?;
        results.pop().unwrap_or_else(|| {
            Err(Error::MalformedResponse {
                status: 200,
                reason: "_bulk answer has no item".into(),
            })
        })
    }

    /// Writes many [`Completion`]s in one request, each conditional on its task's version.
    /// One result per task, in order: the new version, `None` for a deleted task, or
    /// [`Error::LeaseLost`] / [`Error::Removed`] / another error for that task alone.
    pub async fn complete_batch(
        &self,
        items: &[(&ConcreteTaskInstance, &Completion)],
    ) -> Result<Vec<Result<Option<Version>>>> {
        let mut results: Vec<Result<Option<Version>>> = Vec::with_capacity(items.len());
        let mut body = BulkBody::new();
        let now = self.now();
        for (task, completion) in items {
            let version = match task.require_version() {
                Ok(version) => version,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let doc_id = task.id.document_id();
            match completion {
                Completion::Delete => body.delete_if(&doc_id, version),
                Completion::Update(patch) => {
                    if let Err(e) = patch.validate() {
                        results.push(Err(e));
                        continue;
                    }
                    if patch.status == Some(crate::task::TaskStatus::Idle) {
                        // Given back: this store may claim it again as soon as it is due.
                        self.recent.forget(&doc_id);
                    }
                    body.update_if(&doc_id, version, &super::document::encode_patch(patch, now));
                }
            }
            results.push(Ok(None));
        }
        let mut items_out = self.send_bulk(body).await?.into_iter();
        let mut lost = Vec::new();
        for (index, ((task, completion), result)) in
            items.iter().zip(results.iter_mut()).enumerate()
        {
            if result.is_err() {
                continue;
            }
            let Some(item) = items_out.next() else { break };
            *result = match item.into_result(Context::task(&self.index, task.id.as_str())) {
                Ok(_) if matches!(completion, Completion::Delete) => Ok(None),
                Ok(version) => Ok(version),
                Err(Error::NotFound { id }) => Err(Error::Removed { id }),
                Err(Error::Conflict { id }) => {
                    lost.push(index);
                    Err(Error::LeaseLost { id })
                }
                Err(e) => Err(e),
            };
        }
        // Tell a taken-over task from a removed one (rare: only after a lost race).
        if !lost.is_empty() {
            let ids: Vec<_> = lost.iter().map(|i| items[*i].0.id.clone()).collect();
            if let Ok(found) = self.bulk_get(&ids).await {
                for (i, read) in lost.iter().zip(found) {
                    if let Err(Error::NotFound { id }) = read {
                        results[*i] = Err(Error::Removed { id });
                    }
                }
            }
        }
        Ok(results)
    }

    /// A lease write that updates fields; the new version.
    async fn lease_write(&self, task: &ConcreteTaskInstance, patch: TaskPatch) -> Result<Version> {
        let completion = Completion::Update(Box::new(patch));
        self.complete(task, &completion)
            .await?
            .ok_or_else(|| Error::MalformedResponse {
                status: 200,
                reason: "update answer has no _seq_no/_primary_term".into(),
            })
    }
}
