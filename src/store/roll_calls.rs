//! Roll calls (点名).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audit::AuditEntry;
use super::{Store, StoreError, StoreResult, with_db, with_tx};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RollCall {
    pub id: i64,
    pub meeting_id: i64,
    pub room_name: String,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl Store {
    pub async fn start_roll_call(
        &self,
        meeting_id: i64,
        room: &str,
        actor: &str,
        now: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> StoreResult<RollCall> {
        let mut tx = self.begin().await?;
        let rc: RollCall = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "INSERT INTO roll_calls (meeting_id, room_name, started_by, started_at, ends_at) VALUES ($1, $2, $3, $4, $5) \
                 RETURNING id, meeting_id, room_name, started_by, started_at, ends_at",
            )
            .bind(meeting_id)
            .bind(room)
            .bind(actor)
            .bind(now)
            .bind(ends_at)
            .fetch_one(conn)
            .await?
        });
        let entry = AuditEntry::new(
            actor,
            "roll_call.started",
            "meeting",
            &meeting_id.to_string(),
        )
        .after(&serde_json::json!({"roll_call": rc.id, "ends_at": ends_at}));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(rc)
    }

    pub async fn roll_call(&self, id: i64) -> StoreResult<RollCall> {
        let row: Option<RollCall> = with_db!(&self.db, |pool| {
            sqlx::query_as("SELECT id, meeting_id, room_name, started_by, started_at, ends_at FROM roll_calls WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("roll call {id}")))
    }

    /// The roll call of a room open at `now`, if any (the latest).
    pub async fn open_roll_call(
        &self,
        room: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<RollCall>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, meeting_id, room_name, started_by, started_at, ends_at FROM roll_calls \
                 WHERE room_name = $1 AND started_at <= $2 AND ends_at > $2 ORDER BY id DESC LIMIT 1",
            )
            .bind(room)
            .bind(now)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Records an answer; a second answer keeps the first time.
    pub async fn answer_roll_call(
        &self,
        roll_call: i64,
        invitation: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        with_db!(&self.db, |pool| {
            sqlx::query(
                "INSERT INTO roll_call_answers (roll_call_id, invitation_id, answered_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (roll_call_id, invitation_id) DO NOTHING",
            )
            .bind(roll_call)
            .bind(invitation)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// (invitation id, answered at) of a roll call.
    pub async fn roll_call_answers(
        &self,
        roll_call: i64,
    ) -> StoreResult<Vec<(i64, DateTime<Utc>)>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT invitation_id, answered_at FROM roll_call_answers WHERE roll_call_id = $1",
            )
            .bind(roll_call)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Invitations of every meeting in a room (the call and its sub-venues).
    pub async fn room_expected(&self, room: &str) -> StoreResult<Vec<super::ExpectedRow>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT i.id AS invitation_id, i.meeting_id, m.tier, i.unit_id, u.code AS unit_code, \
                 u.name AS unit_name, u.path AS unit_path, p.name AS person_name, i.role, i.rsvp, i.decline_reason \
                 FROM invitations i JOIN meetings m ON m.id = i.meeting_id JOIN units u ON u.id = i.unit_id \
                 LEFT JOIN people p ON p.id = i.person_id WHERE m.room_name = $1 ORDER BY u.path, i.id",
            )
            .bind(room)
            .fetch_all(pool)
            .await?
        }))
    }
}
