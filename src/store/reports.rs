//! Attendance reports and confirmation of attendance.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;

use super::audit::AuditEntry;
use super::{Store, StoreResult, with_db, with_tx};
use crate::domain::report::Attendance;

/// An invitation as the report sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ExpectedRow {
    pub invitation_id: i64,
    pub meeting_id: i64,
    pub tier: String,
    pub unit_id: i64,
    pub unit_code: String,
    pub unit_name: String,
    pub unit_path: String,
    pub person_name: Option<String>,
    pub role: String,
    pub rsvp: String,
    pub decline_reason: Option<String>,
}

/// A finalised line of the report.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ResultRow {
    pub invitation_id: i64,
    pub meeting_id: i64,
    pub tier: String,
    pub unit_id: i64,
    pub unit_code: String,
    pub unit_name: String,
    pub unit_path: String,
    pub person_name: Option<String>,
    pub role: String,
    pub first_join: Option<DateTime<Utc>>,
    pub last_leave: Option<DateTime<Utc>>,
    pub connected_seconds: i64,
    pub reconnects: i64,
    pub status: String,
}

/// What a bureau or invitee confirms for an invitation.
#[derive(Debug, Clone, Default)]
pub struct Confirmation {
    pub rsvp: String,
    pub attendee_name: Option<String>,
    pub attendee_title: Option<String>,
    pub attendee_mobile: Option<String>,
    pub decline_reason: Option<String>,
    pub delegate_name: Option<String>,
}

const EXPECTED_SELECT: &str = "SELECT i.id AS invitation_id, i.meeting_id, m.tier, i.unit_id, u.code AS unit_code, \
     u.name AS unit_name, u.path AS unit_path, p.name AS person_name, i.role, i.rsvp, i.decline_reason \
     FROM invitations i JOIN meetings m ON m.id = i.meeting_id JOIN units u ON u.id = i.unit_id \
     LEFT JOIN people p ON p.id = i.person_id";

impl Store {
    /// Everyone expected in a meeting (its own invitations).
    pub async fn expected(&self, meeting_id: i64) -> StoreResult<Vec<ExpectedRow>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "{EXPECTED_SELECT} WHERE i.meeting_id = $1 ORDER BY u.path, i.id"
            ))
            .bind(meeting_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Replaces a meeting's report with freshly computed lines.
    pub async fn save_report(
        &self,
        meeting_id: i64,
        lines: &[(i64, Attendance)],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query("DELETE FROM attendance_results WHERE meeting_id = $1")
                .bind(meeting_id)
                .execute(conn)
                .await?;
        });
        for chunk in lines.chunks(1000) {
            with_tx!(&mut tx, |conn| {
                let mut q = QueryBuilder::<Backend>::new(
                    "INSERT INTO attendance_results (invitation_id, meeting_id, first_join, last_leave, \
                     connected_seconds, reconnects, status, computed_at) ",
                );
                q.push_values(chunk, |mut row, (invitation, a)| {
                    row.push_bind(*invitation)
                        .push_bind(meeting_id)
                        .push_bind(a.first_join)
                        .push_bind(a.last_leave)
                        .push_bind(a.connected_seconds)
                        .push_bind(a.reconnects)
                        .push_bind(a.status.as_str())
                        .push_bind(now);
                });
                q.build().execute(conn).await?;
            });
        }
        tx.commit().await
    }

    /// The finalised report of a meeting, limited to units under `scope_path`.
    pub async fn report(&self, meeting_id: i64, scope_path: &str) -> StoreResult<Vec<ResultRow>> {
        let (start, end) = crate::domain::org::subtree_range(scope_path);
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT r.invitation_id, r.meeting_id, m.tier, i.unit_id, u.code AS unit_code, u.name AS unit_name, \
                 u.path AS unit_path, p.name AS person_name, i.role, r.first_join, r.last_leave, r.connected_seconds, \
                 r.reconnects, r.status FROM attendance_results r JOIN invitations i ON i.id = r.invitation_id \
                 JOIN meetings m ON m.id = r.meeting_id JOIN units u ON u.id = i.unit_id \
                 LEFT JOIN people p ON p.id = i.person_id \
                 WHERE r.meeting_id = $1 AND u.path >= $2 AND u.path < $3 ORDER BY u.path, r.invitation_id",
            )
            .bind(meeting_id)
            .bind(&start)
            .bind(&end)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Whether an action item with this title was already issued on the meeting.
    pub async fn action_item_exists(&self, meeting_id: i64, title: &str) -> StoreResult<bool> {
        let found: Option<i64> = with_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM action_items WHERE meeting_id = $1 AND title = $2 LIMIT 1",
            )
            .bind(meeting_id)
            .bind(title)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.is_some())
    }

    /// Records a confirmation (确认参会) with its audit event.
    pub async fn confirm_invitation(
        &self,
        id: i64,
        c: &Confirmation,
        actor: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE invitations SET rsvp = $1, attendee_name = $2, attendee_title = $3, attendee_mobile = $4, \
                 decline_reason = $5, delegate_name = $6, updated_at = $7 WHERE id = $8",
            )
            .bind(&c.rsvp)
            .bind(&c.attendee_name)
            .bind(&c.attendee_title)
            .bind(&c.attendee_mobile)
            .bind(&c.decline_reason)
            .bind(&c.delegate_name)
            .bind(Utc::now())
            .bind(id)
            .execute(conn)
            .await?;
        });
        let entry = AuditEntry::new(actor, "invitation.confirmation", "invitation", &id.to_string()).after(&serde_json::json!({
            "rsvp": c.rsvp, "attendee": c.attendee_name, "title": c.attendee_title, "reason": c.decline_reason, "delegate": c.delegate_name,
        }));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await
    }
}
