//! One run of one claimed task: the handler under its timeout, the lease renewed while it
//! runs, and the outcome written back conditional on the version the lease holds.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{interval_at, sleep, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::completions::Completions;
use super::definition::{RunOutput, TaskContext, TaskDefinition, TaskError};
use super::stats::WorkerCounters;
use crate::error::Error;
use crate::es::store::ElasticsearchTaskStore;
use crate::outcome::{on_failure, on_release, on_success, Completion, RetryPolicy};
use crate::task::ConcreteTaskInstance;

/// How a run ended, before its outcome is written.
enum RunEnd {
    Finished(Result<RunOutput, TaskError>),
    TimedOut(Duration),
    /// The lease was taken over or the task removed (seen when renewing).
    LeaseLost(Error),
    /// The worker's shutdown deadline passed.
    Stopped,
}

/// Runs one claimed task to the end and writes its outcome.
pub(crate) async fn execute(
    store: ElasticsearchTaskStore,
    definition: TaskDefinition,
    task: ConcreteTaskInstance,
    counters: Arc<WorkerCounters>,
    completions: Completions,
    hard_stop: CancellationToken,
) {
    let span = tracing::info_span!(
        "task_run",
        task.id = %task.id,
        task.r#type = %task.task_type,
        attempt = task.attempts,
        traceparent = task.traceparent.as_deref().unwrap_or(""),
    );
    async move {
        let mut task = task;
        let end = supervise(&store, &definition, &mut task, &hard_stop).await;
        write_outcome(&store, &completions, &definition, task, end, &counters).await;
    }
    .instrument(span)
    .await
}

/// Runs the handler until it ends, times out, loses its lease or the worker stops, renewing
/// the lease at half its length. `task` keeps the latest version.
async fn supervise(
    store: &ElasticsearchTaskStore,
    definition: &TaskDefinition,
    task: &mut ConcreteTaskInstance,
    hard_stop: &CancellationToken,
) -> RunEnd {
    let cancel = hard_stop.child_token();
    let ctx = TaskContext {
        task: task.clone(),
        cancel: cancel.clone(),
    };
    // Its own tokio task, so a panicking handler is a failed run, not a dead worker.
    let mut handler = tokio::spawn(definition.handler.run(ctx));
    let timeout = definition.timeout_for(task);
    let deadline = sleep(timeout);
    tokio::pin!(deadline);
    let every = (definition.lease / 2).max(Duration::from_millis(10));
    let mut renewal = interval_at(Instant::now() + every, every);
    renewal.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            joined = &mut handler => break RunEnd::Finished(joined.unwrap_or_else(|e| {
                Err(TaskError::retryable(if e.is_panic() { "handler panicked" } else { "handler was cancelled" }))
            })),
            () = &mut deadline => break RunEnd::TimedOut(timeout),
            () = hard_stop.cancelled() => break RunEnd::Stopped,
            _ = renewal.tick() => match store.renew_lease(task, definition.lease).await {
                Ok(_) => tracing::trace!("lease renewed"),
                Err(e @ (Error::LeaseLost { .. } | Error::Removed { .. })) => break RunEnd::LeaseLost(e),
                Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying at the next renewal"),
            },
        }
    };
    if !matches!(end, RunEnd::Finished(_)) {
        cancel.cancel();
        handler.abort();
    }
    match end {
        // A handler that gave up because the worker is stopping did not fail: release the task.
        RunEnd::Finished(Err(_)) if hard_stop.is_cancelled() => RunEnd::Stopped,
        end => end,
    }
}

async fn write_outcome(
    store: &ElasticsearchTaskStore,
    completions: &Completions,
    definition: &TaskDefinition,
    task: ConcreteTaskInstance,
    end: RunEnd,
    counters: &WorkerCounters,
) {
    let now = store.now();
    let (completion, counter) = match end {
        RunEnd::Finished(Ok(output)) => (
            on_success(&task, now, output.state, output.next),
            &counters.succeeded,
        ),
        RunEnd::Finished(Err(error)) => failure(definition, &task, &error, now, counters),
        RunEnd::TimedOut(after) => {
            WorkerCounters::add(&counters.timed_out, 1);
            let error = TaskError::retryable(format!("timed out after {after:?}"));
            failure(definition, &task, &error, now, counters)
        }
        RunEnd::LeaseLost(e) => return lease_lost(&e, counters),
        RunEnd::Stopped => (
            Completion::Update(Box::new(on_release(&task))),
            &counters.released,
        ),
    };
    match completions.write(task, completion).await {
        Ok(_) => WorkerCounters::add(counter, 1),
        Err(e @ (Error::LeaseLost { .. } | Error::Removed { .. })) => lease_lost(&e, counters),
        Err(e) => {
            WorkerCounters::add(&counters.write_errors, 1);
            tracing::warn!(error = %e, "could not write the outcome; the task is retried when its lease ends");
        }
    }
}

fn lease_lost(e: &Error, counters: &WorkerCounters) {
    WorkerCounters::add(&counters.lease_lost, 1);
    tracing::info!(reason = %e, "result dropped: the task was taken over or removed");
}

/// The write after a failed run, and the counter it adds to once written.
fn failure<'c>(
    definition: &TaskDefinition,
    task: &ConcreteTaskInstance,
    error: &TaskError,
    now: chrono::DateTime<chrono::Utc>,
    counters: &'c WorkerCounters,
) -> (Completion, &'c std::sync::atomic::AtomicU64) {
    let policy = if error.retryable || task.is_recurring() {
        definition.retry
    } else {
        RetryPolicy {
            max_attempts: 0,
            ..definition.retry
        }
    };
    let ends_failed = !task.is_recurring() && task.attempts >= policy.max_attempts;
    tracing::debug!(error = %error, ends_failed, "run failed");
    let patch = on_failure(task, now, &error.message, &policy, fastrand::f64());
    let counter = if ends_failed {
        &counters.failed
    } else {
        &counters.retried
    };
    (Completion::Update(Box::new(patch)), counter)
}
