//! The job queue's table. Jobs are enqueued inside the transaction of the change that causes
//! them; running them is the worker's business.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;

use super::{Backend, Store, StoreError, StoreResult, Tx, with_db, with_tx};

/// A job about to be enqueued. A job whose `dedupe_key` is already queued or done is not
/// enqueued again.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: serde_json::Value,
    pub run_at: DateTime<Utc>,
    pub dedupe_key: Option<String>,
}

impl NewJob {
    pub fn now(kind: &str, payload: serde_json::Value, dedupe_key: String) -> Self {
        Self {
            kind: kind.into(),
            payload,
            run_at: Utc::now(),
            dedupe_key: Some(dedupe_key),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub status: String,
    pub run_at: DateTime<Utc>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    pub dedupe_key: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A job a worker has claimed: it holds the lease until it completes, fails or the lease
/// runs out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    /// Including this one.
    pub attempts: i64,
    pub max_attempts: i64,
}

const JOB_COLUMNS: &str = "id, kind, payload, status, run_at, attempts, max_attempts, last_error, \
     lease_until, locked_by, dedupe_key, updated_at";

const BATCH_ROWS: usize = 500;

impl Store {
    pub(crate) async fn enqueue_tx(tx: &mut Tx, jobs: &[NewJob]) -> StoreResult<()> {
        let now = Utc::now();
        for chunk in jobs.chunks(BATCH_ROWS) {
            with_tx!(&mut *tx, |conn| {
                let mut q = QueryBuilder::<Backend>::new(
                    "INSERT INTO jobs (kind, payload, run_at, dedupe_key, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut row, job| {
                    row.push_bind(&job.kind)
                        .push_bind(job.payload.to_string())
                        .push_bind(job.run_at)
                        .push_bind(&job.dedupe_key)
                        .push_bind(now)
                        .push_bind(now);
                });
                q.push(" ON CONFLICT (dedupe_key) DO NOTHING");
                q.build().execute(conn).await?;
            });
        }
        Ok(())
    }

    /// Enqueues jobs on their own (outside another change).
    pub async fn enqueue(&self, jobs: &[NewJob]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        Store::enqueue_tx(&mut tx, jobs).await?;
        tx.commit().await
    }

    /// Jobs of one kind (all kinds with `None`), oldest first.
    pub async fn jobs(&self, kind: Option<&str>) -> StoreResult<Vec<JobRecord>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1 IS NULL OR kind = $1) ORDER BY id"
            ))
            .bind(kind)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Jobs by status (all with `None`), most recently changed first.
    pub async fn jobs_by_status(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<JobRecord>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1 IS NULL OR status = $1) \
                 ORDER BY updated_at DESC, id DESC LIMIT $2"
            ))
            .bind(status)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    pub async fn job(&self, id: i64) -> StoreResult<JobRecord> {
        let row: Option<JobRecord> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("job {id}")))
    }

    /// Claims the oldest due job for `worker` until `lease_until`. On PostgreSQL the row is
    /// picked with `FOR UPDATE SKIP LOCKED`, so instances never claim the same job; SQLite
    /// serialises writers, and the outer `status = 'queued'` guard makes the update a no-op if
    /// another claim won.
    pub async fn claim_job(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Option<ClaimedJob>> {
        let lock = match self.backend() {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = $1, \
             locked_by = $2, updated_at = $3 \
             WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND run_at <= $3 \
                         ORDER BY run_at, id LIMIT 1 {lock}) AND status = 'queued' \
             RETURNING id, kind, payload, attempts, max_attempts"
        );
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(lease_until)
                .bind(worker)
                .bind(now)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Extends a lease; false if the job is no longer this worker's.
    pub async fn heartbeat_job(
        &self,
        id: i64,
        worker: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let rows = with_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND locked_by = $3 AND status = 'running'",
            )
            .bind(lease_until)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(rows == 1)
    }

    /// Marks a job done; false if this worker had lost it meanwhile.
    pub async fn complete_job(
        &self,
        id: i64,
        worker: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let rows = with_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE jobs SET status = 'done', lease_until = NULL, last_error = NULL, updated_at = $1 \
                 WHERE id = $2 AND locked_by = $3 AND status = 'running'",
            )
            .bind(now)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(rows == 1)
    }

    /// Records a failure: the job runs again at `retry_at`, or with `None` it is dead.
    pub async fn fail_job(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        with_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE jobs SET status = CASE WHEN $1 IS NULL THEN 'dead' ELSE 'queued' END, \
                 run_at = COALESCE($1, run_at), last_error = $2, lease_until = NULL, updated_at = $3 \
                 WHERE id = $4 AND locked_by = $5 AND status = 'running'",
            )
            .bind(retry_at)
            .bind(error)
            .bind(now)
            .bind(id)
            .bind(worker)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Puts jobs whose lease ran out (their worker died) back in the queue, or marks them
    /// dead when they have used up their attempts. Returns how many were re-queued.
    pub async fn reap_expired_jobs(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
                 last_error = COALESCE(last_error, '') || CASE WHEN last_error IS NULL THEN '' ELSE '; ' END \
                              || 'lease of ' || COALESCE(locked_by, '?') || ' expired', \
                 locked_by = NULL, lease_until = NULL, run_at = $1, updated_at = $1 \
                 WHERE status = 'running' AND lease_until < $1",
            )
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Queues a dead or cancelled job again, with fresh attempts.
    pub async fn retry_job(&self, id: i64, now: DateTime<Utc>) -> StoreResult<JobRecord> {
        let job = self.job(id).await?;
        if !matches!(job.status.as_str(), "dead" | "cancelled") {
            return Err(StoreError::Conflict(format!(
                "job {id} is {}; only dead or cancelled jobs can be retried",
                job.status
            )));
        }
        with_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $1, updated_at = $1 WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?;
        });
        self.job(id).await
    }

    /// Cancels a queued job.
    pub async fn cancel_job(&self, id: i64, now: DateTime<Utc>) -> StoreResult<JobRecord> {
        let rows = with_db!(&self.db, |pool| {
            sqlx::query("UPDATE jobs SET status = 'cancelled', updated_at = $1 WHERE id = $2 AND status = 'queued'")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        let job = self.job(id).await?;
        if rows == 0 {
            return Err(StoreError::Conflict(format!(
                "job {id} is {}; only queued jobs can be cancelled",
                job.status
            )));
        }
        Ok(job)
    }
}
