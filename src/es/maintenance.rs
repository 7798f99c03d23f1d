//! Housekeeping queries: tasks of types nobody runs any more, and tasks stuck in a lease.

use std::time::Duration;

use chrono::TimeDelta;
use elasticsearch::http::Method;
use serde_json::json;

use super::classify::Context;
use super::client::{segment, Body};
use super::document::format_date;
use super::query;
use super::store::{page_of, ElasticsearchTaskStore};
use crate::error::{Error, Result};
use crate::query::{FetchPage, MAX_PAGE_SIZE};
use crate::task::TaskStatus;

impl ElasticsearchTaskStore {
    /// Marks idle tasks whose type is not among `registered_types` as `unrecognized`, so
    /// they stop being candidates anywhere and show up in stats. Returns how many changed.
    ///
    /// Pass every type any worker on the index still runs.
    pub async fn mark_unrecognized(&self, registered_types: &[String]) -> Result<u64> {
        if registered_types.is_empty() {
            return Err(Error::InvalidQuery {
                field: "registered_types",
                reason: "must not be empty: that would mark every idle task".into(),
            });
        }
        let body = json!({
            "query": query::unrecognized_query(registered_types),
            "script": {
                "lang": "painless",
                "source": "ctx._source.task.status = params.status; ctx._source.updated_at = params.now;",
                "params": { "status": TaskStatus::Unrecognized.as_str(), "now": format_date(self.now()) }
            }
        });
        // _update_by_query takes only true/false for refresh.
        let refresh = if self.refresh == super::config::Refresh::False {
            "false"
        } else {
            "true"
        };
        let answer = self
            .http
            .send(
                Method::Post,
                &format!("/{}/_update_by_query", segment(&self.index)),
                &[("conflicts", "proceed"), ("refresh", refresh)],
                Some(Body::Json(body)),
                Context::index(&self.index),
            )
            .await?;
        Ok(answer["updated"].as_u64().unwrap_or(0))
    }

    /// Tasks held in `running`/`claiming` whose lease ran out more than `expired_for` ago (or
    /// that have no `retryAt` at all), oldest lease first: workers that died or cannot
    /// write. They are claimable again; this lists them for inspection.
    pub async fn stuck(&self, expired_for: Duration, size: usize) -> Result<FetchPage> {
        if !(1..=MAX_PAGE_SIZE).contains(&size) {
            return Err(Error::InvalidQuery {
                field: "size",
                reason: format!("must be between 1 and {MAX_PAGE_SIZE}, got {size}"),
            });
        }
        let expired_for = TimeDelta::from_std(expired_for).map_err(|_| Error::InvalidQuery {
            field: "expired_for",
            reason: format!("{expired_for:?} is too long"),
        })?;
        let answer = self
            .search(query::stuck_body(self.now() - expired_for, size))
            .await?;
        page_of(&answer, size)
    }
}
