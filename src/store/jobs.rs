//! The job queue's table. Jobs are enqueued inside the transaction of the change that causes
//! them; running them is the worker's business.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;

use super::{Store, StoreResult, Tx, with_db, with_tx};

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
    pub last_error: Option<String>,
    pub dedupe_key: Option<String>,
}

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

    /// Jobs of one kind (all kinds with `None`), oldest first.
    pub async fn jobs(&self, kind: Option<&str>) -> StoreResult<Vec<JobRecord>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, kind, payload, status, run_at, attempts, last_error, dedupe_key FROM jobs \
                 WHERE ($1 IS NULL OR kind = $1) ORDER BY id",
            )
            .bind(kind)
            .fetch_all(pool)
            .await?
        }))
    }
}
