//! The worker: claims tasks, runs their handlers, writes the outcomes back.
//!
//! A [`Worker`] holds the task definitions of the types it runs. It claims up to its free
//! capacity, runs each claimed task in its own tokio task, and claims again:
//!
//! - as soon as slots free while claims keep filling the free capacity (polling is not capped
//!   by the poll interval when there is work): when every run has finished, or 50 ms after the
//!   first of them finished, whichever comes first;
//! - at once (after up to 25 ms of jitter) when a claim came back short because other
//!   claimers took candidates first;
//! - after the poll interval (500 ms) when a claim came back short otherwise;
//! - after the idle interval (3 s) when there was nothing to claim.
//!
//! While a handler runs, its lease is renewed at half its length, so a long run is never taken
//! over while its worker lives, and a crashed worker's tasks are free again after one lease.
//! A run that outlives its timeout is cancelled and counts as a failed attempt. The outcome
//! follows the rules of [`outcome`](crate::outcome), written conditional on the lease's
//! version: a run whose lease was lost, or whose task was removed, has its result dropped.
//!
//! When the engine is overloaded, blocked or unreachable, claiming backs off exponentially
//! with jitter (honouring `Retry-After`) up to a minute, and logs once when it starts failing
//! and once when it recovers.
//!
//! [`ShutdownHandle::shutdown`] stops claiming, waits for running handlers up to the shutdown
//! timeout, cancels those still running and releases their claims, so the tasks are claimable
//! at once. [`Worker::run`] then returns the counters.
//!
//! ```no_run
//! use std::time::Duration;
//! use es_task_store::ElasticsearchTaskStore;
//! use es_task_store::worker::{RunOutput, TaskContext, TaskDefinition, TaskError, Worker};
//!
//! # async fn run() -> es_task_store::Result<()> {
//! let store = ElasticsearchTaskStore::from_env()?;
//! let worker = Worker::builder(store)
//!     .register(TaskDefinition::new("email", |ctx: TaskContext| async move {
//!         let to = ctx.params()["to"].as_str().ok_or_else(|| TaskError::fatal("no recipient"))?;
//!         println!("sending to {to}");
//!         Ok(RunOutput::default())
//!     }))
//!     .with_capacity(20)
//!     .build()?;
//! let shutdown = worker.shutdown_handle();
//! tokio::spawn(async move {
//!     tokio::signal::ctrl_c().await.ok();
//!     shutdown.shutdown();
//! });
//! let stats = worker.run().await;
//! println!("{} succeeded", stats.succeeded);
//! # Ok(()) }
//! ```

mod completions;
mod definition;
mod execution;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use definition::{
    Handler, HandlerFuture, RunOutput, TaskContext, TaskDefinition, TaskError, DEFAULT_TIMEOUT,
};
pub use stats::{WorkerCounters, WorkerStats};

use crate::claim::{ClaimRequest, DEFAULT_CAPACITY};
use crate::error::Error;
use crate::es::store::ElasticsearchTaskStore;
use crate::outcome::RetryPolicy;

/// Default wait after a claim that came back short.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Default wait after a claim that found nothing to do.
pub const DEFAULT_IDLE_INTERVAL: Duration = Duration::from_secs(3);
/// Default time running handlers get to finish after a shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait before claiming again after a claim lost races to other claimers.
const CONTENTION_DELAY: Duration = Duration::from_millis(25);

/// Longest wait for the other runs of a batch to finish before claiming for fewer slots.
const SLOT_BATCH_DELAY: Duration = Duration::from_millis(50);

/// Backoff of claims while the engine fails: 1 s, doubling, capped at 1 min, with jitter.
const CLAIM_BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    first_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(60),
};

/// Configures a [`Worker`].
#[derive(Debug)]
#[must_use]
pub struct WorkerBuilder {
    store: ElasticsearchTaskStore,
    definitions: HashMap<String, TaskDefinition>,
    capacity: usize,
    poll_interval: Duration,
    idle_interval: Duration,
    shutdown_timeout: Duration,
    owner_id: Option<String>,
}

impl WorkerBuilder {
    /// Registers a task type (a later registration of the same type replaces it).
    pub fn register(mut self, definition: TaskDefinition) -> Self {
        self.definitions
            .insert(definition.task_type.clone(), definition);
        self
    }

    /// How many tasks run at once (default 10).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Wait after a claim that came back short (default 500 ms).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Wait after a claim that found nothing (default 3 s).
    pub fn with_idle_interval(mut self, interval: Duration) -> Self {
        self.idle_interval = interval;
        self
    }

    /// How long running handlers get to finish after a shutdown (default 30 s).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The owner id written to claimed tasks (default: a fresh UUID).
    pub fn with_owner_id(mut self, owner_id: impl Into<String>) -> Self {
        self.owner_id = Some(owner_id.into());
        self
    }

    /// Builds the worker.
    pub fn build(self) -> Result<Worker, Error> {
        if self.definitions.is_empty() {
            return Err(Error::InvalidQuery {
                field: "definitions",
                reason: "register at least one task type".into(),
            });
        }
        let owner_id = self
            .owner_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // The claim request checks the capacity, the owner id and every lease.
        let mut request = ClaimRequest::new(owner_id, self.definitions.keys().cloned())
            .with_capacity(self.capacity);
        for definition in self.definitions.values() {
            request = request.with_lease(definition.task_type.clone(), definition.lease);
        }
        request.validate()?;
        Ok(Worker {
            store: self.store,
            definitions: Arc::new(self.definitions),
            capacity: self.capacity,
            poll_interval: self.poll_interval,
            idle_interval: self.idle_interval,
            shutdown_timeout: self.shutdown_timeout,
            request,
            counters: Arc::default(),
            shutdown: CancellationToken::new(),
        })
    }
}

/// Stops a running worker (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Asks the worker to stop.
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

/// Claims and runs tasks until shut down. See the module docs.
#[derive(Debug)]
pub struct Worker {
    store: ElasticsearchTaskStore,
    definitions: Arc<HashMap<String, TaskDefinition>>,
    capacity: usize,
    poll_interval: Duration,
    idle_interval: Duration,
    shutdown_timeout: Duration,
    request: ClaimRequest,
    counters: Arc<WorkerCounters>,
    shutdown: CancellationToken,
}

/// What the loop waits for before the next claim.
enum Wait {
    SlotFree,
    For(Duration),
}

/// The loop's mode, logged once per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Busy,
    Idle,
    BackingOff,
}

impl Worker {
    /// A builder with the defaults: capacity 10, poll 500 ms, idle 3 s, shutdown timeout 30 s.
    pub fn builder(store: ElasticsearchTaskStore) -> WorkerBuilder {
        WorkerBuilder {
            store,
            definitions: HashMap::new(),
            capacity: DEFAULT_CAPACITY,
            poll_interval: DEFAULT_POLL_INTERVAL,
            idle_interval: DEFAULT_IDLE_INTERVAL,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            owner_id: None,
        }
    }

    /// The owner id this worker claims with.
    #[must_use]
    pub fn owner_id(&self) -> &str {
        &self.request.owner_id
    }

    /// The live counters.
    #[must_use]
    pub fn counters(&self) -> Arc<WorkerCounters> {
        self.counters.clone()
    }

    /// A handle that stops the worker.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Runs until [`ShutdownHandle::shutdown`], then returns the counters.
    pub async fn run(self) -> WorkerStats {
        let span = tracing::info_span!("worker", owner = %self.request.owner_id);
        self.run_loop().instrument(span).await
    }

    async fn run_loop(mut self) -> WorkerStats {
        let mut running: JoinSet<()> = JoinSet::new();
        let (completions, writer) = completions::Completions::start(self.store.clone());
        let hard_stop = CancellationToken::new();
        let mut failures: u32 = 0;
        let mut mode = Mode::Busy;
        tracing::info!(types = ?self.request.task_types, capacity = self.capacity, "worker started");
        while !self.shutdown.is_cancelled() {
            while running.try_join_next().is_some() {}
            let free = self.capacity - running.len();
            if free == 0 {
                self.wait(&mut running, Wait::SlotFree).await;
                continue;
            }
            self.request.capacity = free;
            let claim_started = std::time::Instant::now();
            let claim = self
                .store
                .claim(&self.request)
                .instrument(tracing::debug_span!("claim", free))
                .await;
            if claim.is_ok() {
                self.counters.record_claim(claim_started.elapsed());
            }
            let (wait, next_mode) = match claim {
                Ok(result) => {
                    if failures > 0 {
                        tracing::info!(after_failures = failures, "claiming recovered");
                        failures = 0;
                    }
                    WorkerCounters::add(&self.counters.conflicts, result.conflicts as u64);
                    for (id, e) in &result.errors {
                        tracing::debug!(task.id = %id, error = %e, "claim of one task failed");
                    }
                    let got = result.claimed.len();
                    WorkerCounters::add(&self.counters.claimed, got as u64);
                    for task in result.claimed {
                        if self.shutdown.is_cancelled() {
                            self.release_unstarted(task).await;
                            continue;
                        }
                        let Some(definition) = self.definitions.get(&task.task_type).cloned()
                        else {
                            // The claim asked only for registered types.
                            self.release_unstarted(task).await;
                            continue;
                        };
                        running.spawn(execution::execute(
                            self.store.clone(),
                            definition,
                            task,
                            self.counters.clone(),
                            completions.clone(),
                            hard_stop.clone(),
                        ));
                    }
                    if got == free {
                        (Wait::SlotFree, Mode::Busy)
                    } else if result.conflicts > 0 {
                        // Other claimers took candidates first: more work is likely there.
                        // Claim again soon, at a random offset so claimers fall out of step.
                        (
                            Wait::For(CONTENTION_DELAY.mul_f64(fastrand::f64())),
                            Mode::Busy,
                        )
                    } else if got == 0 && result.candidates == 0 {
                        (Wait::For(self.idle_interval), Mode::Idle)
                    } else {
                        (Wait::For(self.poll_interval), Mode::Busy)
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    WorkerCounters::add(&self.counters.claim_errors, 1);
                    let delay = e
                        .retry_after()
                        .unwrap_or_else(|| CLAIM_BACKOFF.delay(failures, fastrand::f64()))
                        .min(CLAIM_BACKOFF.max_delay);
                    if failures == 1 {
                        tracing::warn!(error = %e, "claiming failed; backing off until the engine recovers");
                    } else {
                        tracing::debug!(error = %e, failures, ?delay, "claiming still failing");
                    }
                    (Wait::For(delay), Mode::BackingOff)
                }
            };
            if next_mode != mode && next_mode != Mode::BackingOff {
                tracing::info!(mode = ?next_mode, "worker is now {}", if next_mode == Mode::Idle { "idle" } else { "busy" });
            }
            mode = next_mode;
            self.wait(&mut running, wait).await;
        }
        tracing::info!(running = running.len(), "worker stopping");
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        loop {
            match tokio::time::timeout_at(deadline, running.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        running = running.len(),
                        "shutdown timeout passed; cancelling the remaining runs and releasing their tasks"
                    );
                    hard_stop.cancel();
                    while running.join_next().await.is_some() {}
                    break;
                }
            }
        }
        drop(completions);
        if writer.await.is_err() {
            tracing::warn!("the completion writer panicked");
        }
        let stats = self.counters.snapshot();
        tracing::info!(?stats, "worker stopped");
        stats
    }

    async fn wait(&self, running: &mut JoinSet<()>, wait: Wait) {
        match wait {
            Wait::SlotFree if !running.is_empty() => {
                tokio::select! {
                    _ = running.join_next() => {}
                    () = self.shutdown.cancelled() => return,
                }
                // Runs of one claim tend to finish together: wait a moment for the rest of them,
                // so the next claim fills many slots at once instead of a few at a time.
                let want = self.capacity;
                let deadline = tokio::time::Instant::now() + SLOT_BATCH_DELAY;
                while self.capacity - running.len() < want {
                    match tokio::time::timeout_at(deadline, running.join_next()).await {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
            Wait::SlotFree => {}
            Wait::For(delay) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = self.shutdown.cancelled() => {}
                }
            }
        }
    }

    async fn release_unstarted(&self, task: crate::task::ConcreteTaskInstance) {
        match self.store.release(&task).await {
            Ok(_) => WorkerCounters::add(&self.counters.released, 1),
            Err(e) => {
                tracing::warn!(task.id = %task.id, error = %e, "could not release a claimed task")
            }
        }
    }
}
