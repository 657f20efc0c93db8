//! Group commit of LiveKit webhooks. The endpoint verifies and interprets each event, then
//! hands it to one writer task, which applies whatever is waiting in one transaction and
//! answers each event only once that transaction has committed: LiveKit retries what is not
//! answered 200, so nothing is acknowledged before it is durable. One transaction per event
//! spends nearly all its time on per-statement and per-commit overhead; a batch shares it.

use std::sync::Mutex;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::store::{Store, StoreError, StoreResult, WebhookRecord};

/// Most events applied in one transaction: enough to share a commit among every request a
/// busy server has waiting, small enough that a batch stays quick.
pub const MAX_BATCH: usize = 512;

/// Events waiting for the writer; beyond this, the endpoint waits to queue.
const QUEUE: usize = 4 * MAX_BATCH;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The server is stopping and takes no more events (LiveKit will retry).
    #[error(
        "webhooks are not being accepted: the writer has stopped (the server is shutting down)"
    )]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Pending {
    record: WebhookRecord,
    reply: oneshot::Sender<StoreResult<bool>>,
}

pub struct WebhookWriter {
    queue: mpsc::Sender<Pending>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WebhookWriter {
    /// Starts the writer task (on the current Tokio runtime), on a connection of its own.
    pub fn spawn(store: &Store, reconcile_every: chrono::Duration) -> Self {
        let store = store.dedicated_writer();
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(run(store, reconcile_every, receiver, stopping));
        Self {
            queue,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues one event; the receiver answers, once its batch has committed, whether the
    /// event was new.
    pub async fn submit(
        &self,
        record: WebhookRecord,
    ) -> Result<oneshot::Receiver<StoreResult<bool>>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { record, reply })
            .await
            .map_err(|_| WriteError::Closed)?;
        Ok(answer)
    }

    /// Applies one event with whatever else is waiting; returns whether it was new.
    pub async fn apply(&self, record: WebhookRecord) -> Result<bool, WriteError> {
        let answer = self.submit(record).await?;
        // A dropped reply means the writer died before committing: nothing is acknowledged.
        Ok(answer.await.map_err(|_| WriteError::Closed)??)
    }

    /// Stops taking events, applies those already queued, and waits for the writer to end.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().expect("writer handle lock").take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the webhook writer failed");
        }
    }
}

async fn run(
    store: Store,
    reconcile_every: chrono::Duration,
    mut queue: mpsc::Receiver<Pending>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    loop {
        tokio::select! {
            // Waiting events first, so that stopping never skips one.
            biased;
            received = queue.recv_many(&mut batch, MAX_BATCH) => {
                // Zero: closed (by shutdown, or every sender dropped) and drained.
                if received == 0 {
                    store.close().await;
                    break;
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                queue.close();
                continue;
            }
        }
        let (records, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|p| (p.record, p.reply)).unzip();
        let started = std::time::Instant::now();
        let results = apply_batch(&store, &records, reconcile_every, Utc::now()).await;
        tracing::debug!(events = records.len(), elapsed = ?started.elapsed(), "applied a webhook batch");
        for (reply, result) in replies.into_iter().zip(results) {
            // The request may have gone (client hung up); the event is stored all the same.
            let _ = reply.send(result);
        }
    }
}

/// Applies a batch in one transaction; if that fails, each event in a transaction of its own,
/// so that one bad event fails only itself. Returns one result per event, in order.
pub async fn apply_batch(
    store: &Store,
    records: &[WebhookRecord],
    reconcile_every: chrono::Duration,
    now: chrono::DateTime<Utc>,
) -> Vec<StoreResult<bool>> {
    let error = match store.apply_webhooks(records, reconcile_every, now).await {
        Ok(fresh) => return fresh.into_iter().map(Ok).collect(),
        Err(e) if records.len() == 1 => return vec![Err(e)],
        Err(e) => e,
    };
    tracing::warn!(error = %error, events = records.len(), "a webhook batch failed; applying its events one by one");
    let mut results = Vec::with_capacity(records.len());
    for record in records {
        let result = store
            .apply_webhooks(std::slice::from_ref(record), reconcile_every, now)
            .await
            .map(|fresh| fresh[0]);
        results.push(result);
    }
    results
}
