//! Invitation links, outgoing messages and muster's own settings.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;

use super::audit::AuditEntry;
use super::{Store, StoreError, StoreResult, with_db, with_tx};

/// An invitation of a meeting as the fan-out of its messages sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recipient {
    pub invitation_id: i64,
    pub email: Option<String>,
    pub link_nonce: Option<String>,
    pub rsvp: String,
}

/// Everything a message about one invitation needs.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InvitationContext {
    pub id: i64,
    pub role: String,
    pub rsvp: String,
    #[serde(skip)]
    pub link_nonce: Option<String>,
    pub meeting_id: i64,
    pub unit_id: i64,
    pub unit_name: String,
    pub mailbox: Option<String>,
    pub person_name: Option<String>,
    pub person_email: Option<String>,
    pub meeting_title: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub meeting_status: String,
    pub sequence: i64,
    pub joins_parent: bool,
    pub tier_index: i64,
    pub dispatch_id: i64,
    pub host_name: String,
    pub parent_title: Option<String>,
    pub timezone: String,
    pub dispatch_title: String,
    pub cancel_reason: Option<String>,
    pub room_name: String,
    pub tier: String,
    pub can_publish: bool,
}

impl InvitationContext {
    /// The address messages go to: the person's, else the unit's mailbox.
    pub fn email(&self) -> Option<&str> {
        self.person_email.as_deref().or(self.mailbox.as_deref())
    }

    /// "person · unit", or the unit alone.
    pub fn display_name(&self) -> String {
        match &self.person_name {
            Some(person) => format!("{person} · {}", self.unit_name),
            None => self.unit_name.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewNotification {
    pub dedupe_key: String,
    pub kind: String,
    pub invitation_id: Option<i64>,
    pub recipient: String,
    pub subject: String,
    pub message_id: String,
    pub sent_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NotificationRecord {
    pub id: i64,
    pub dedupe_key: String,
    pub kind: String,
    pub invitation_id: Option<i64>,
    pub recipient: String,
    pub subject: String,
    pub message_id: String,
    pub sent_at: DateTime<Utc>,
}

const CONTEXT_SELECT: &str = "SELECT i.id, i.role, i.rsvp, i.link_nonce, i.meeting_id, i.unit_id, \
     u.name AS unit_name, u.mailbox, p.name AS person_name, p.email AS person_email, \
     m.title AS meeting_title, m.planned_start, m.planned_end, m.status AS meeting_status, m.sequence, \
     m.joins_parent, m.tier_index, m.dispatch_id, h.name AS host_name, pm.title AS parent_title, \
     d.timezone, d.title AS dispatch_title, d.cancel_reason, m.room_name, m.tier, i.can_publish \
     FROM invitations i JOIN units u ON u.id = i.unit_id LEFT JOIN people p ON p.id = i.person_id \
     JOIN meetings m ON m.id = i.meeting_id JOIN units h ON h.id = m.host_unit_id \
     LEFT JOIN meetings pm ON pm.id = m.parent_id JOIN dispatches d ON d.id = m.dispatch_id";

const BATCH_ROWS: usize = 1000;

impl Store {
    /// A setting, created with `value` the first time it is asked for (by whichever instance
    /// comes first).
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value)
            .execute(pool)
            .await?;
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await?
        }))
    }

    pub async fn meeting_recipients(&self, meeting_id: i64) -> StoreResult<Vec<Recipient>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT i.id AS invitation_id, COALESCE(p.email, u.mailbox) AS email, i.link_nonce, i.rsvp \
                 FROM invitations i JOIN units u ON u.id = i.unit_id LEFT JOIN people p ON p.id = i.person_id \
                 WHERE i.meeting_id = $1 ORDER BY i.id",
            )
            .bind(meeting_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Gives invitations their link nonce and the hash of their link token:
    /// `(invitation id, nonce, hash)`. Invitations that already have one keep it.
    pub async fn set_links(&self, links: &[(i64, String, String)]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for chunk in links.chunks(BATCH_ROWS) {
            with_tx!(&mut tx, |conn| {
                // VALUES columns are column1… on both backends.
                let mut q = QueryBuilder::<Backend>::new(
                    "UPDATE invitations SET link_nonce = v.column2, link_hash = v.column3 FROM (",
                );
                q.push_values(chunk, |mut row, (id, nonce, hash)| {
                    row.push_bind(*id).push_bind(nonce).push_bind(hash);
                });
                q.push(
                    ") AS v WHERE invitations.id = v.column1 AND invitations.link_nonce IS NULL",
                );
                q.build().execute(conn).await?;
            });
        }
        tx.commit().await
    }

    pub async fn invitation_context(&self, id: i64) -> StoreResult<InvitationContext> {
        let row: Option<InvitationContext> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!("{CONTEXT_SELECT} WHERE i.id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("invitation {id}")))
    }

    /// The invitation behind a personal link, by the hash of its token.
    pub async fn invitation_by_link(
        &self,
        link_hash: &str,
    ) -> StoreResult<Option<InvitationContext>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&format!("{CONTEXT_SELECT} WHERE i.link_hash = $1"))
                .bind(link_hash)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Records an RSVP with its audit event.
    pub async fn set_rsvp(&self, id: i64, rsvp: &str, actor: &str) -> StoreResult<()> {
        let before = self.invitation_context(id).await?;
        let mut tx = self.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE invitations SET rsvp = $1, updated_at = $2 WHERE id = $3")
                .bind(rsvp)
                .bind(Utc::now())
                .bind(id)
                .execute(conn)
                .await?;
        });
        let entry = AuditEntry::new(actor, "invitation.rsvp", "invitation", &id.to_string())
            .before(&serde_json::json!({"rsvp": before.rsvp}))
            .after(&serde_json::json!({"rsvp": rsvp}));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await
    }

    pub async fn notification_sent(&self, dedupe_key: &str) -> StoreResult<bool> {
        let found: Option<i64> = with_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT id FROM notifications WHERE dedupe_key = $1")
                .bind(dedupe_key)
                .fetch_optional(pool)
                .await?
        });
        Ok(found.is_some())
    }

    pub async fn record_notification(&self, n: &NewNotification) -> StoreResult<()> {
        with_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO notifications (dedupe_key, kind, invitation_id, recipient, subject, message_id, sent_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedupe_key) DO NOTHING",
            )
            .bind(&n.dedupe_key)
            .bind(&n.kind)
            .bind(n.invitation_id)
            .bind(&n.recipient)
            .bind(&n.subject)
            .bind(&n.message_id)
            .bind(n.sent_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn notifications(&self, kind: Option<&str>) -> StoreResult<Vec<NotificationRecord>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, dedupe_key, kind, invitation_id, recipient, subject, message_id, sent_at \
                 FROM notifications WHERE ($1 IS NULL OR kind = $1) ORDER BY id",
            )
            .bind(kind)
            .fetch_all(pool)
            .await?
        }))
    }
}
