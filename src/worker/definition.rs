//! Task definitions: what runs a task type, and under which limits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::outcome::{NextRun, RetryPolicy};
use crate::task::ConcreteTaskInstance;

/// Default run timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a handler gets: the claimed task and a token that is cancelled when the run must stop
/// (timeout, lost lease, shutdown deadline). A handler that awaits is also dropped at its next
/// await point; the token is for work that does not await, such as blocking loops.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The claimed task: params, state, attempts (this one included), traceparent...
    pub task: ConcreteTaskInstance,
    /// Cancelled when the run must stop.
    pub cancel: CancellationToken,
}

impl TaskContext {
    /// The task's params.
    #[must_use]
    pub fn params(&self) -> &Map<String, Value> {
        &self.task.params
    }

    /// The state the previous run returned.
    #[must_use]
    pub fn state(&self) -> &Map<String, Value> {
        &self.task.state
    }

    /// The W3C trace context of whoever scheduled the task.
    #[must_use]
    pub fn traceparent(&self) -> Option<&str> {
        self.task.traceparent.as_deref()
    }
}

/// What a successful run returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOutput {
    /// The new state, handed to the next run of a recurring task.
    pub state: Map<String, Value>,
    /// When to run next instead of the task's schedule (or to reschedule a one-off task).
    pub next: Option<NextRun>,
}

impl RunOutput {
    /// A run with this state.
    #[must_use]
    pub fn with_state(state: Map<String, Value>) -> Self {
        Self { state, next: None }
    }
}

/// Why a run failed, and whether retrying may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    /// What went wrong (kept as the task's last error when it ends `failed`).
    pub message: String,
    /// `false` ends a one-off task at once (`failed`); recurring tasks are always retried.
    pub retryable: bool,
}

impl TaskError {
    /// A failure worth retrying.
    #[must_use]
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure retrying cannot fix.
    #[must_use]
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<RunOutput, TaskError>> + Send>>;

/// Runs tasks of one type. Any `Fn(TaskContext) -> impl Future<Output = Result<RunOutput,
/// TaskError>>` is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Runs one task.
    fn run(&self, ctx: TaskContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<RunOutput, TaskError>> + Send + 'static,
{
    fn run(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(self(ctx))
    }
}

/// A registered task type: its handler, run timeout, lease and retry policy.
///
/// ```
/// use std::time::Duration;
/// use es_task_store::worker::{RunOutput, TaskContext, TaskDefinition};
///
/// let email = TaskDefinition::new("email", |ctx: TaskContext| async move {
///     let _to = ctx.params()["to"].as_str().unwrap_or_default();
///     Ok(RunOutput::default())
/// })
/// .with_timeout(Duration::from_secs(30))
/// .with_max_attempts(5);
/// assert_eq!(email.task_type(), "email");
/// ```
#[derive(Clone)]
pub struct TaskDefinition {
    pub(crate) task_type: String,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) timeout: Duration,
    pub(crate) lease: Duration,
    pub(crate) retry: RetryPolicy,
}

impl std::fmt::Debug for TaskDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskDefinition")
            .field("task_type", &self.task_type)
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl TaskDefinition {
    /// A definition with the default timeout (5 min), lease (5 min) and retry policy
    /// (3 attempts, 30 s first backoff, capped at 1 h).
    pub fn new(task_type: impl Into<String>, handler: impl Handler) -> Self {
        Self {
            task_type: task_type.into(),
            handler: Arc::new(handler),
            timeout: DEFAULT_TIMEOUT,
            lease: crate::claim::DEFAULT_LEASE,
            retry: RetryPolicy::default(),
        }
    }

    /// The task type.
    #[must_use]
    pub fn task_type(&self) -> &str {
        &self.task_type
    }

    /// How long one run may take before it is cancelled and counted as a failed attempt.
    /// A one-off task's own `timeoutOverride` takes precedence.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a claim holds a task between renewals. The worker renews at half of it while
    /// the handler runs, so a crashed worker's tasks are free again after one lease.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Attempts a one-off task gets before it is `failed`.
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.retry.max_attempts = max_attempts.max(1);
        self
    }

    /// The whole retry policy.
    #[must_use]
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The timeout of one run of `task`.
    pub(crate) fn timeout_for(&self, task: &ConcreteTaskInstance) -> Duration {
        match (&task.schedule, &task.timeout_override) {
            (None, Some(timeout)) => timeout.as_duration(),
            _ => self.timeout,
        }
    }
}
