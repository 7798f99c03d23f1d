//! Outcome writes of many runs in one request.
//!
//! Finished runs hand their [`Completion`] to one writer task per worker. The writer takes
//! whatever has queued up while its previous request was in flight and writes it as one
//! conditional `_bulk`, so under load a completion costs a fraction of a request, and when idle
//! it is written after a 2 ms linger. A batch that fails as a whole on a
//! transient error (overload, timeout, connection) is retried with jittered backoff before
//! its items report the error.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::es::store::ElasticsearchTaskStore;
use crate::outcome::{Completion, RetryPolicy};
use crate::task::ConcreteTaskInstance;
use crate::version::Version;

/// How long the writer waits for more completions after the first of a batch.
const LINGER: Duration = Duration::from_millis(2);

/// Most completions written in one request.
const MAX_BATCH: usize = 1_000;

/// Retries of a batch that failed as a whole on a transient error.
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    first_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
};

type Reply = oneshot::Sender<Result<Option<Version>, Error>>;

/// Queues completions for the writer task.
#[derive(Clone)]
pub(crate) struct Completions {
    queue: mpsc::UnboundedSender<(ConcreteTaskInstance, Completion, Reply)>,
}

impl Completions {
    /// Starts the writer; it ends when every `Completions` clone is dropped and the queue is
    /// written.
    pub(crate) fn start(store: ElasticsearchTaskStore) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(store, receiver));
        (Self { queue }, writer)
    }

    /// Writes one completion (batched with others) and returns its result.
    pub(crate) async fn write(
        &self,
        task: ConcreteTaskInstance,
        completion: Completion,
    ) -> Result<Option<Version>, Error> {
        let (reply, answer) = oneshot::channel();
        let id = task.id.to_string();
        let stopped = || Error::Transport {
            source: format!("the completion writer stopped before writing task {id}").into(),
        };
        self.queue
            .send((task, completion, reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_loop(
    store: ElasticsearchTaskStore,
    mut receiver: mpsc::UnboundedReceiver<(ConcreteTaskInstance, Completion, Reply)>,
) {
    let mut batch = Vec::with_capacity(64);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Runs of one claim tend to finish together: give the rest of them a moment to queue.
        if batch.len() < MAX_BATCH {
            tokio::time::sleep(LINGER).await;
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        let (items, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|(t, c, r)| ((t, c), r)).unzip();
        let results = write_with_retries(&store, &items).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // The run may have been dropped meanwhile; nobody waits for its result then.
            let _ = reply.send(result);
        }
    }
}

async fn write_with_retries(
    store: &ElasticsearchTaskStore,
    items: &[(ConcreteTaskInstance, Completion)],
) -> Vec<Result<Option<Version>, Error>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let refs: Vec<(&ConcreteTaskInstance, &Completion)> =
            items.iter().map(|(t, c)| (t, c)).collect();
        match store.complete_batch(&refs).await {
            Ok(results) => return results,
            Err(e) if e.is_transient() && attempt < RETRY.max_attempts => {
                let delay = e
                    .retry_after()
                    .unwrap_or_else(|| RETRY.delay(attempt, fastrand::f64()));
                tracing::debug!(error = %e, attempt, ?delay, "completion batch failed; retrying");
                tokio::time::sleep(delay.min(RETRY.max_delay)).await;
            }
            Err(e) => return items.iter().map(|_| Err(e.replicate())).collect(),
        }
    }
}
