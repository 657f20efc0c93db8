//! Group commit of LiveKit webhooks. The endpoint verifies and interprets each event, then
//! hands it to one writer task, which applies whatever is waiting in one transaction and
//! answers each event only once that transaction has committed: LiveKit retries what is not
//! answered 200, so nothing is acknowledged before it is durable. One transaction per event
//! spends nearly all its time on per-statement and per-commit overhead; a batch shares it.
//! On SQLite the writer is a thread that calls SQLite directly ([`SqliteLedgerWriter`]);
//! on PostgreSQL a task that writes through sqlx.

use std::sync::Mutex;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{
    SqliteLedgerWriter, Store, StoreError, StoreResult, WebhookRecord, is_participant_batch,
};

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

enum Message {
    Event(Pending),
    /// Stop taking events; apply those already queued, then end.
    Stop,
}

/// Where the writer runs: a thread of its own calling SQLite directly (SQLite on a file), or
/// a task on the runtime going through sqlx (PostgreSQL).
enum Worker {
    Task(JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

pub struct WebhookWriter {
    queue: mpsc::Sender<Message>,
    worker: Mutex<Option<Worker>>,
}

impl WebhookWriter {
    /// Starts the writer (on the current Tokio runtime), on a connection of its own.
    pub fn spawn(store: &Store, reconcile_every: chrono::Duration) -> Self {
        let store = store.dedicated_writer();
        let (queue, receiver) = mpsc::channel(QUEUE);
        let worker = match SqliteLedgerWriter::open(&store) {
            Ok(Some(sqlite)) => {
                let runtime = tokio::runtime::Handle::current();
                let thread = std::thread::Builder::new()
                    .name("webhook-writer".into())
                    .spawn(move || {
                        run_thread(sqlite, store, reconcile_every, receiver, runtime);
                    })
                    .expect("starting the webhook writer thread");
                Worker::Thread(thread)
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!(error = %e, "the SQLite webhook writer could not open its connection; writing through the pool");
                }
                Worker::Task(tokio::spawn(run_task(store, reconcile_every, receiver)))
            }
        };
        Self {
            queue,
            worker: Mutex::new(Some(worker)),
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
            .send(Message::Event(Pending { record, reply }))
            .await
            .map_err(|_| WriteError::Closed)?;
        Ok(answer)
    }

    /// Applies one event with whatever else is waiting; returns whether it was new.
    pub async fn apply(&self, record: WebhookRecord) -> Result<bool, WriteError> {
        // Nothing else queued: a lone event, whose commit is quick.
        let alone = self.queue.capacity() == self.queue.max_capacity();
        let mut answer = self.submit(record).await?;
        // A lone event commits within ~50 µs: look for the answer, letting other tasks run in
        // between, before this task sleeps. A sleeping task is woken through its worker
        // thread, and when that thread had nothing else to do it has parked, which costs a
        // wake-up (~30 µs on a small VM) — as much as the commit itself when LiveKit posts a
        // room's events one at a time. Behind other events the wait is longer and the
        // workers are busy anyway: looking would only take their time.
        let started = std::time::Instant::now();
        while alone && started.elapsed() < ANSWER_SPIN {
            match answer.try_recv() {
                Ok(result) => return Ok(result?),
                Err(oneshot::error::TryRecvError::Empty) => tokio::task::yield_now().await,
                Err(oneshot::error::TryRecvError::Closed) => return Err(WriteError::Closed),
            }
        }
        // A dropped reply means the writer died before committing: nothing is acknowledged.
        Ok(answer.await.map_err(|_| WriteError::Closed)??)
    }

    /// Stops taking events, applies those already queued, and waits for the writer to end.
    pub async fn shutdown(&self) {
        // Fails only when the writer has already ended.
        let _ = self.queue.send(Message::Stop).await;
        let worker = self.worker.lock().expect("writer handle lock").take();
        let failed = match worker {
            Some(Worker::Task(task)) => task.await.err().map(|e| e.to_string()),
            Some(Worker::Thread(thread)) => tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| e.to_string())
                .and_then(|joined| joined.map_err(|_| "the thread panicked".to_string()))
                .err(),
            None => None,
        };
        if let Some(e) = failed {
            tracing::error!(error = %e, "the webhook writer failed");
        }
    }
}

/// Moves what a received message holds into `batch`; on `Stop`, closes the queue (events
/// already in it are still received, later senders get an error).
fn take(message: Message, batch: &mut Vec<Pending>, queue: &mut mpsc::Receiver<Message>) {
    match message {
        Message::Event(pending) => batch.push(pending),
        Message::Stop => queue.close(),
    }
}

async fn run_task(
    store: Store,
    reconcile_every: chrono::Duration,
    mut queue: mpsc::Receiver<Message>,
) {
    let mut messages = Vec::with_capacity(MAX_BATCH);
    loop {
        // Zero: closed (by `Stop`, or every sender dropped) and drained.
        if queue.recv_many(&mut messages, MAX_BATCH).await == 0 {
            break;
        }
        let mut batch = Vec::with_capacity(messages.len());
        for message in messages.drain(..) {
            take(message, &mut batch, &mut queue);
        }
        apply_and_answer(None, &store, batch, reconcile_every).await;
    }
    store.close().await;
}

/// The SQLite writer: waits for an event only when nothing is queued, so a busy server's
/// batches follow one another without a thread wake-up in between.
fn run_thread(
    mut sqlite: SqliteLedgerWriter,
    store: Store,
    reconcile_every: chrono::Duration,
    mut queue: mpsc::Receiver<Message>,
    runtime: tokio::runtime::Handle,
) {
    loop {
        let mut batch = Vec::new();
        let first = match poll_briefly(&mut queue) {
            Some(message) => Some(message),
            None => queue.blocking_recv(),
        };
        match first {
            Some(message) => take(message, &mut batch, &mut queue),
            // Closed and drained.
            None => break,
        }
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(message) => take(message, &mut batch, &mut queue),
                Err(_) => break,
            }
        }
        runtime.block_on(apply_and_answer(
            Some(&mut sqlite),
            &store,
            batch,
            reconcile_every,
        ));
    }
    // Not `store.close()`: the runtime may already be gone when every sender was dropped
    // without a shutdown; dropping the pool closes its connection all the same.
}

/// How long a request looks for its batch's answer before it sleeps (see [`WebhookWriter::apply`]).
const ANSWER_SPIN: std::time::Duration = std::time::Duration::from_micros(150);

/// How long the SQLite writer keeps looking for the next event before it sleeps: a sleeping
/// thread costs a wake-up (~30 µs on a small VM) when the event comes, and under load — or a
/// LiveKit node posting one room's events one after another — it comes within this time.
/// Idle, it spins at most this long once per batch, yielding the core to others meanwhile.
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// The next message if one arrives within [`SPIN`].
fn poll_briefly(queue: &mut mpsc::Receiver<Message>) -> Option<Message> {
    let started = std::time::Instant::now();
    while started.elapsed() < SPIN {
        match queue.try_recv() {
            Ok(message) => return Some(message),
            Err(mpsc::error::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
        }
    }
    None
}

/// Applies what a writer took from its queue and answers each request with its event's
/// result. Nothing to do when only `Stop` was taken.
async fn apply_and_answer(
    sqlite: Option<&mut SqliteLedgerWriter>,
    store: &Store,
    batch: Vec<Pending>,
    reconcile_every: chrono::Duration,
) {
    if batch.is_empty() {
        return;
    }
    let (records, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.record, p.reply)).unzip();
    let started = std::time::Instant::now();
    let results = apply_batch_via(sqlite, store, &records, reconcile_every, Utc::now()).await;
    tracing::debug!(events = records.len(), elapsed = ?started.elapsed(), "applied a webhook batch");
    for (reply, result) in replies.into_iter().zip(results) {
        // The request may have gone (client hung up); the event is stored all the same.
        let _ = reply.send(result);
    }
}

/// Applies a batch as the SQLite writer thread does: participant events directly on its own
/// connection, in one transaction; room events, or a batch that failed there (and was rolled
/// back), through [`apply_batch`].
pub async fn apply_batch_via(
    sqlite: Option<&mut SqliteLedgerWriter>,
    store: &Store,
    records: &[WebhookRecord],
    reconcile_every: chrono::Duration,
    now: chrono::DateTime<Utc>,
) -> Vec<StoreResult<bool>> {
    if let Some(sqlite) = sqlite
        && is_participant_batch(records)
    {
        match sqlite.apply(records, now) {
            Ok(fresh) => return fresh.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::warn!(error = %e, events = records.len(), "a webhook batch failed; applying it through the pool");
            }
        }
    }
    apply_batch(store, records, reconcile_every, now).await
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
