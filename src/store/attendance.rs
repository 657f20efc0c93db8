//! The attendance ledger: LiveKit connections per room, built from webhooks and repaired by
//! reconciliation. Every write merges, so the order of events does not matter.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::jobs::NewJob;
use super::{Store, StoreResult, Tx, with_db, with_tx};
use crate::domain::attendance::{Connection, LeaveReason, LedgerChange};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Interval {
    pub participant_sid: String,
    pub identity: String,
    pub name: String,
    pub invitation_id: Option<i64>,
    pub joined_at: Option<DateTime<Utc>>,
    pub left_at: Option<DateTime<Utc>>,
    pub left_reason: Option<String>,
    pub room_closed_at: Option<DateTime<Utc>>,
    pub source: String,
}

impl Interval {
    /// When the connection ended: its own leave, else the room's end.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.left_at.or(self.room_closed_at)
    }
}

/// Earliest of two optional times, as SQL both backends understand.
const EARLIEST_JOIN: &str = "CASE WHEN attendance_intervals.joined_at IS NULL THEN excluded.joined_at \
     WHEN excluded.joined_at IS NULL THEN attendance_intervals.joined_at \
     WHEN excluded.joined_at < attendance_intervals.joined_at THEN excluded.joined_at \
     ELSE attendance_intervals.joined_at END";

impl Store {
    /// Applies one webhook event unless its id was seen before; the dedupe record and the
    /// ledger change commit together. Returns whether the event was new.
    pub async fn apply_webhook(
        &self,
        event_id: &str,
        kind: &str,
        change: &LedgerChange,
        reconcile_every: chrono::Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let room = match change {
            LedgerChange::RoomStarted { room, .. }
            | LedgerChange::RoomFinished { room, .. }
            | LedgerChange::Joined { room, .. }
            | LedgerChange::Left { room, .. }
            | LedgerChange::Recording { room, .. } => Some(room.as_str()),
            LedgerChange::Ignored => None,
        };
        let mut tx = self.begin().await?;
        let fresh = with_tx!(&mut tx, |conn| {
            sqlx::query(
                "INSERT INTO webhook_events (event_id, kind, room_name, received_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(event_id)
            .bind(kind)
            .bind(room)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
                == 1
        });
        if !fresh {
            return Ok(false);
        }
        match change {
            LedgerChange::Ignored => {}
            LedgerChange::RoomStarted { room, at } => {
                room_started(&mut tx, room, *at).await?;
                // While the room is live, reconcile the ledger with LiveKit every so often.
                let owner: Option<i64> = with_tx!(&mut tx, |conn| {
                    sqlx::query_scalar(
                        "SELECT id FROM meetings WHERE room_name = $1 AND NOT joins_parent",
                    )
                    .bind(room)
                    .fetch_optional(conn)
                    .await?
                });
                if let Some(id) = owner {
                    let job = NewJob {
                        kind: "room.reconcile".into(),
                        payload: serde_json::json!({"meeting_id": id, "round": 1}),
                        run_at: now + reconcile_every,
                        dedupe_key: Some(format!("room.reconcile:{id}:1")),
                    };
                    Store::enqueue_tx(&mut tx, &[job]).await?;
                }
            }
            LedgerChange::RoomFinished { room, at } => {
                room_finished(&mut tx, room, *at).await?;
            }
            LedgerChange::Joined { room, connection } => {
                upsert_connection(&mut tx, room, connection, None, "webhook", now).await?;
                close_connection_if_finished(&mut tx, room, &connection.sid).await?;
            }
            LedgerChange::Left {
                room,
                connection,
                at,
                reason,
            } => {
                upsert_connection(
                    &mut tx,
                    room,
                    connection,
                    Some((*at, *reason)),
                    "webhook",
                    now,
                )
                .await?;
                close_connection_if_finished(&mut tx, room, &connection.sid).await?;
            }
            LedgerChange::Recording {
                room,
                egress_id,
                status,
                file,
            } => {
                with_tx!(&mut tx, |conn| {
                    sqlx::query(
                        "UPDATE meetings SET recording_egress_id = $1, recording_status = $2, \
                         recording_path = COALESCE($3, recording_path) WHERE room_name = $4 AND NOT joins_parent",
                    )
                    .bind(egress_id)
                    .bind(status)
                    .bind(file)
                    .bind(room)
                    .execute(conn)
                    .await?;
                });
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Repairs the ledger of a live room from LiveKit's list of its participants: connections
    /// the ledger missed are added, open ones LiveKit no longer has are closed, both marked
    /// `reconciled`. Returns (added, closed).
    pub async fn reconcile_room(
        &self,
        room: &str,
        present: &[Connection],
        now: DateTime<Utc>,
    ) -> StoreResult<(usize, usize)> {
        let known = self.intervals(room).await?;
        let mut tx = self.begin().await?;
        let mut added = 0;
        for c in present {
            if !known.iter().any(|k| k.participant_sid == c.sid) {
                upsert_connection(&mut tx, room, c, None, "reconciled", now).await?;
                added += 1;
            }
        }
        let mut closed = 0;
        for open in known.iter().filter(|k| k.ended_at().is_none()) {
            if !present.iter().any(|c| c.sid == open.participant_sid) {
                let connection = Connection {
                    sid: open.participant_sid.clone(),
                    identity: open.identity.clone(),
                    name: open.name.clone(),
                    joined_at: None,
                };
                upsert_connection(
                    &mut tx,
                    room,
                    &connection,
                    Some((now, LeaveReason::Reconciled)),
                    "reconciled",
                    now,
                )
                .await?;
                closed += 1;
            }
        }
        tx.commit().await?;
        Ok((added, closed))
    }

    /// Every connection of a room, by participant sid.
    pub async fn intervals(&self, room: &str) -> StoreResult<Vec<Interval>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT participant_sid, identity, name, invitation_id, joined_at, left_at, left_reason, \
                 room_closed_at, source FROM attendance_intervals WHERE room_name = $1 ORDER BY participant_sid",
            )
            .bind(room)
            .fetch_all(pool)
            .await?
        }))
    }

    pub async fn set_room_sid(&self, meeting_id: i64, sid: &str) -> StoreResult<()> {
        with_db!(&self.db, |pool| {
            sqlx::query("UPDATE meetings SET room_sid = $1 WHERE id = $2")
                .bind(sid)
                .bind(meeting_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn set_recording(
        &self,
        meeting_id: i64,
        egress_id: &str,
        status: &str,
        path: &str,
    ) -> StoreResult<()> {
        with_db!(&self.db, |pool| {
            sqlx::query(
                "UPDATE meetings SET recording_egress_id = $1, recording_status = $2, recording_path = $3 WHERE id = $4",
            )
            .bind(egress_id)
            .bind(status)
            .bind(path)
            .bind(meeting_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Ends a meeting's room in the ledger as `room_finished` would (the host ended it, or its
    /// time ran out while LiveKit's event went missing).
    pub async fn finish_room(&self, room: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        room_finished(&mut tx, room, at).await?;
        tx.commit().await
    }

    /// Invitations expected in a room (its meeting and the sub-venues joining it).
    pub async fn room_invitation_count(&self, room: &str) -> StoreResult<i64> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM invitations i JOIN meetings m ON m.id = i.meeting_id WHERE m.room_name = $1",
            )
            .bind(room)
            .fetch_one(pool)
            .await?
        }))
    }

    /// Recording details of a meeting: (egress id, status, path).
    pub async fn recording(
        &self,
        meeting_id: i64,
    ) -> StoreResult<(Option<String>, Option<String>, Option<String>)> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT recording_egress_id, recording_status, recording_path FROM meetings WHERE id = $1",
            )
            .bind(meeting_id)
            .fetch_one(pool)
            .await?
        }))
    }
}

async fn room_started(tx: &mut Tx, room: &str, at: DateTime<Utc>) -> StoreResult<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE meetings SET actual_start = CASE WHEN actual_start IS NULL OR $1 < actual_start THEN $1 ELSE actual_start END, \
             status = CASE WHEN status = 'scheduled' THEN 'live' ELSE status END \
             WHERE room_name = $2",
        )
        .bind(at)
        .bind(room)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE dispatches SET status = 'live' WHERE status = 'scheduled' \
             AND id IN (SELECT dispatch_id FROM meetings WHERE room_name = $1)",
        )
        .bind(room)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

async fn room_finished(tx: &mut Tx, room: &str, at: DateTime<Utc>) -> StoreResult<()> {
    // The attendance report of every meeting in the room is finalised once it has ended.
    let meetings: Vec<i64> = with_tx!(&mut *tx, |conn| {
        sqlx::query_scalar("SELECT id FROM meetings WHERE room_name = $1 AND status <> 'cancelled'")
            .bind(room)
            .fetch_all(conn)
            .await?
    });
    let jobs: Vec<NewJob> = meetings
        .iter()
        .map(|id| {
            NewJob::now(
                "meeting.report",
                serde_json::json!({"meeting_id": id}),
                format!("meeting.report:{id}"),
            )
        })
        .collect();
    Store::enqueue_tx(tx, &jobs).await?;
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE meetings SET actual_end = CASE WHEN actual_end IS NULL OR $1 > actual_end THEN $1 ELSE actual_end END, \
             status = CASE WHEN status IN ('scheduled', 'live') THEN 'finished' ELSE status END \
             WHERE room_name = $2",
        )
        .bind(at)
        .bind(room)
        .execute(&mut *conn)
        .await?;
    });
    close_if_finished(tx, room).await
}

/// Once a room has ended, every connection in it ends no later than the room.
async fn close_if_finished(tx: &mut Tx, room: &str) -> StoreResult<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE attendance_intervals SET room_closed_at = \
             (SELECT MAX(actual_end) FROM meetings WHERE room_name = $1) \
             WHERE room_name = $1 AND room_closed_at IS NULL \
             AND EXISTS (SELECT 1 FROM meetings WHERE room_name = $1 AND actual_end IS NOT NULL)",
        )
        .bind(room)
        .execute(conn)
        .await?;
    });
    Ok(())
}

/// A connection reported after its room ended ends with the room. Only that connection is
/// touched: closing the whole room on every event would read all its rows each time.
async fn close_connection_if_finished(tx: &mut Tx, room: &str, sid: &str) -> StoreResult<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE attendance_intervals SET room_closed_at = \
             (SELECT MAX(actual_end) FROM meetings WHERE room_name = $1) \
             WHERE participant_sid = $2 AND room_closed_at IS NULL \
             AND EXISTS (SELECT 1 FROM meetings WHERE room_name = $1 AND actual_end IS NOT NULL)",
        )
        .bind(room)
        .bind(sid)
        .execute(conn)
        .await?;
    });
    Ok(())
}

/// Inserts or merges one connection: the earliest join wins, the latest explicit leave wins
/// (ties broken by reason, so the outcome never depends on order).
async fn upsert_connection(
    tx: &mut Tx,
    room: &str,
    c: &Connection,
    left: Option<(DateTime<Utc>, LeaveReason)>,
    source: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO attendance_intervals (room_name, participant_sid, identity, name, invitation_id, joined_at, \
         left_at, left_reason, source, updated_at) \
         VALUES ($1, $2, $3, $4, \
                 (SELECT i.id FROM invitations i JOIN meetings m ON m.id = i.meeting_id \
                  WHERE i.id = $10 AND m.room_name = $1), \
                 $5, $6, $7, $8, $9) \
         ON CONFLICT (participant_sid) DO UPDATE SET \
           joined_at = {EARLIEST_JOIN}, \
           name = CASE WHEN attendance_intervals.name = '' THEN excluded.name ELSE attendance_intervals.name END, \
           left_reason = CASE \
             WHEN excluded.left_at IS NULL THEN attendance_intervals.left_reason \
             WHEN attendance_intervals.left_at IS NULL OR excluded.left_at > attendance_intervals.left_at THEN excluded.left_reason \
             WHEN excluded.left_at = attendance_intervals.left_at AND excluded.left_reason < attendance_intervals.left_reason \
               THEN excluded.left_reason \
             ELSE attendance_intervals.left_reason END, \
           left_at = CASE \
             WHEN excluded.left_at IS NULL THEN attendance_intervals.left_at \
             WHEN attendance_intervals.left_at IS NULL OR excluded.left_at > attendance_intervals.left_at THEN excluded.left_at \
             ELSE attendance_intervals.left_at END, \
           updated_at = excluded.updated_at"
    );
    with_tx!(tx, |conn| {
        sqlx::query(&sql)
            .bind(room)
            .bind(&c.sid)
            .bind(&c.identity)
            .bind(&c.name)
            .bind(c.joined_at)
            .bind(left.map(|(at, _)| at))
            .bind(left.map(|(_, r)| r.as_str()))
            .bind(source)
            .bind(now)
            // Identities are invitation ids; anything else is a guest.
            .bind(c.identity.parse::<i64>().ok())
            .execute(conn)
            .await?;
    });
    Ok(())
}
