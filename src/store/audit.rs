//! The append-only audit log: who changed what, when, with the state before and after.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;

use super::{Store, StoreResult, Tx, with_db, with_tx};

/// An audit event about to be written.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

impl AuditEntry {
    pub fn new(actor: &str, action: &str, subject_type: &str, subject_id: &str) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            subject_type: subject_type.into(),
            subject_id: subject_id.into(),
            before: None,
            after: None,
        }
    }

    pub fn before(mut self, value: &impl Serialize) -> Self {
        self.before = serde_json::to_value(value).ok();
        self
    }

    pub fn after(mut self, value: &impl Serialize) -> Self {
        self.after = serde_json::to_value(value).ok();
        self
    }
}

/// A stored audit event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

const BATCH_ROWS: usize = 500;

impl Store {
    /// Appends audit events inside the transaction of the change they describe.
    pub(crate) async fn append_audit_tx(tx: &mut Tx, entries: &[AuditEntry]) -> StoreResult<()> {
        let at = Utc::now();
        for chunk in entries.chunks(BATCH_ROWS) {
            with_tx!(&mut *tx, |conn| {
                let mut q = QueryBuilder::<Backend>::new(
                    "INSERT INTO audit_events (at, actor, action, subject_type, subject_id, before, after) ",
                );
                q.push_values(chunk, |mut row, e| {
                    row.push_bind(at)
                        .push_bind(&e.actor)
                        .push_bind(&e.action)
                        .push_bind(&e.subject_type)
                        .push_bind(&e.subject_id)
                        .push_bind(e.before.as_ref().map(|v| v.to_string()))
                        .push_bind(e.after.as_ref().map(|v| v.to_string()));
                });
                q.build().execute(conn).await?;
            });
        }
        Ok(())
    }

    /// Appends audit events on their own (for changes that are not database writes).
    pub async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        Store::append_audit_tx(&mut tx, entries).await?;
        tx.commit().await
    }

    /// Newest first; optionally only about one subject.
    pub async fn audit_events(
        &self,
        subject: Option<(&str, &str)>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEvent>> {
        let (kind, id) = subject.unzip();
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, at, actor, action, subject_type, subject_id, before, after FROM audit_events \
                 WHERE ($1 IS NULL OR (subject_type = $1 AND subject_id = $2)) ORDER BY id DESC LIMIT $3",
            )
            .bind(kind)
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}
