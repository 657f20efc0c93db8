//! A worker claims due jobs one at a time, runs the handler registered for the job's kind
//! while heartbeating its lease, and records the outcome. Several workers — in one process or
//! many, on one PostgreSQL — never run a job twice while their leases hold.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::Duration;
use tokio::sync::watch;

use super::{Clock, backoff};
use crate::store::{ClaimedJob, Store, StoreError};

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobFailure {
    /// Worth trying again later (a server down, a timeout).
    #[error("{0}")]
    Retry(String),
    /// Trying again cannot help (an address that does not exist): the job is dead at once.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for JobFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => JobFailure::Permanent(format!("{what} not found")),
            other => JobFailure::Retry(other.to_string()),
        }
    }
}

pub type JobFuture = Pin<Box<dyn Future<Output = Result<(), JobFailure>> + Send>>;
/// Runs one job of a kind, given its JSON payload.
pub type Handler = Arc<dyn Fn(serde_json::Value) -> JobFuture + Send + Sync>;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub lease: Duration,
    pub poll_interval: std::time::Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            lease: Duration::seconds(60),
            poll_interval: std::time::Duration::from_secs(1),
            backoff_base: Duration::seconds(30),
            backoff_max: Duration::hours(1),
        }
    }
}

/// What happened to one claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        id: i64,
        kind: String,
    },
    Retrying {
        id: i64,
        kind: String,
        error: String,
    },
    Dead {
        id: i64,
        kind: String,
        error: String,
    },
    /// The lease ran out while the job ran and another worker may have it now.
    LostLease {
        id: i64,
    },
}

#[derive(Clone)]
pub struct Worker {
    store: Store,
    clock: Arc<dyn Clock>,
    handlers: Arc<HashMap<String, Handler>>,
    id: String,
    config: WorkerConfig,
}

impl Worker {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        handlers: HashMap<String, Handler>,
        id: impl Into<String>,
        config: WorkerConfig,
    ) -> Self {
        Self {
            store,
            clock,
            handlers: Arc::new(handlers),
            id: id.into(),
            config,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claims and runs one due job; `None` when nothing is due.
    pub async fn run_once(&self) -> Result<Option<Outcome>, StoreError> {
        let now = self.clock.now();
        let Some(job) = self
            .store
            .claim_job(&self.id, now, now + self.config.lease)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(self.execute(job).await?))
    }

    /// Runs due jobs until none is left (jobs enqueued by jobs included); re-queues expired
    /// leases first. Tests drive the queue with this and a manual clock.
    pub async fn run_until_idle(&self) -> Result<Vec<Outcome>, StoreError> {
        self.store.reap_expired_jobs(self.clock.now()).await?;
        let mut outcomes = Vec::new();
        while let Some(outcome) = self.run_once().await? {
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn execute(&self, job: ClaimedJob) -> Result<Outcome, StoreError> {
        let span =
            tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
        let _enter = span.enter();
        let result = match self.handlers.get(&job.kind) {
            None => Err(JobFailure::Permanent(format!(
                "no handler for job kind {:?}",
                job.kind
            ))),
            Some(handler) => match serde_json::from_str(&job.payload) {
                Err(e) => Err(JobFailure::Permanent(format!("bad payload: {e}"))),
                Ok(payload) => self.with_heartbeat(job.id, handler(payload)).await,
            },
        };
        let now = self.clock.now();
        Ok(match result {
            Ok(()) => {
                if self.store.complete_job(job.id, &self.id, now).await? {
                    Outcome::Done {
                        id: job.id,
                        kind: job.kind,
                    }
                } else {
                    tracing::warn!("lease lost before the job finished");
                    Outcome::LostLease { id: job.id }
                }
            }
            Err(failure) => {
                let (error, retry_at) = match &failure {
                    JobFailure::Retry(e) if job.attempts < job.max_attempts => (
                        e.clone(),
                        Some(
                            now + backoff(
                                job.attempts,
                                self.config.backoff_base,
                                self.config.backoff_max,
                            ),
                        ),
                    ),
                    JobFailure::Retry(e) => (
                        format!("{e} (gave up after {} attempts)", job.attempts),
                        None,
                    ),
                    JobFailure::Permanent(e) => (e.clone(), None),
                };
                self.store
                    .fail_job(job.id, &self.id, &error, retry_at, now)
                    .await?;
                if retry_at.is_some() {
                    tracing::warn!(%error, "job failed; will retry");
                    Outcome::Retrying {
                        id: job.id,
                        kind: job.kind,
                        error,
                    }
                } else {
                    tracing::error!(%error, "job is dead");
                    Outcome::Dead {
                        id: job.id,
                        kind: job.kind,
                        error,
                    }
                }
            }
        })
    }

    /// Runs `work`, extending the lease every third of it meanwhile.
    async fn with_heartbeat(&self, id: i64, work: JobFuture) -> Result<(), JobFailure> {
        let every = (self.config.lease / 3)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(10));
        let mut work = work;
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            tokio::select! {
                result = &mut work => return result,
                _ = ticker.tick() => {
                    let until = self.clock.now() + self.config.lease;
                    if let Err(e) = self.store.heartbeat_job(id, &self.id, until).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
        }
    }

    /// Works until `stop` turns true: a running job is finished first (graceful shutdown).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(worker = %self.id, "job worker started");
        let mut last_reap = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let now = self.clock.now();
            if last_reap.is_none_or(|t| now - t > self.config.lease / 2) {
                match self.store.reap_expired_jobs(now).await {
                    Ok(n) if n > 0 => {
                        tracing::warn!(requeued = n, "re-queued jobs whose lease expired")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reaping expired leases failed"),
                }
                last_reap = Some(now);
            }
            match self.run_once().await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "job queue unavailable"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!(worker = %self.id, "job worker stopped");
    }
}
