//! The attendance ledger: LiveKit connections per room, built from webhooks and repaired by
//! reconciliation. Every write merges, so the order of events does not matter.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::jobs::NewJob;
use super::{Store, StoreResult, Tx, with_db, with_tx};
use crate::domain::attendance::{
    Connection, ConnectionChange, LeaveReason, LedgerChange, merge_connections,
};

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

/// A batch of webhook events with the ids repeated inside it told apart: only the first event
/// of an id may be new.
pub(super) struct Deduped<'a> {
    events: &'a [WebhookRecord],
    first: Vec<bool>,
    /// The first event of each id, in order.
    pub(super) unique: Vec<&'a WebhookRecord>,
}

impl<'a> Deduped<'a> {
    pub(super) fn new(events: &'a [WebhookRecord]) -> Self {
        let mut seen = std::collections::HashSet::new();
        let first: Vec<bool> = events
            .iter()
            .map(|e| seen.insert(e.event_id.as_str()))
            .collect();
        let unique = events
            .iter()
            .zip(&first)
            .filter_map(|(e, &first)| first.then_some(e))
            .collect();
        Self {
            events,
            first,
            unique,
        }
    }

    /// Per event, whether it was new: the first of its id in the batch, and among the ids the
    /// dedupe insert reported `inserted`.
    pub(super) fn fresh(&self, inserted: &std::collections::HashSet<String>) -> Vec<bool> {
        self.events
            .iter()
            .zip(&self.first)
            .map(|(e, &first)| first && inserted.contains(&e.event_id))
            .collect()
    }
}

/// Whether a batch is the common kind, which has a fast path per backend: participant events
/// and ignored kinds only, within one statement's rows.
pub fn is_participant_batch(events: &[WebhookRecord]) -> bool {
    events.len() <= ROWS_PER_STATEMENT
        && events.iter().all(|e| e.change.is_participant_or_ignored())
}

/// One verified webhook event and what it means for the ledger, as the endpoint hands it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub event_id: String,
    pub kind: String,
    pub change: LedgerChange,
}

/// Rows per multi-row statement: within both drivers' limits on bound parameters (SQLite's
/// 32,766, PostgreSQL's 65,535) at 10 per row.
const ROWS_PER_STATEMENT: usize = 512;

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
        let record = WebhookRecord {
            event_id: event_id.to_string(),
            kind: kind.to_string(),
            change: change.clone(),
        };
        let fresh = self
            .apply_webhooks(std::slice::from_ref(&record), reconcile_every, now)
            .await?;
        Ok(fresh[0])
    }

    /// Applies a batch of webhook events in one transaction, each unless its id was seen
    /// before (in the database or earlier in the batch); the dedupe records and the ledger
    /// changes commit together, or nothing does. Returns, per event, whether it was new.
    ///
    /// The ledger ends as if the events had been applied one by one: the connection changes
    /// are merged per sid by the ledger's own rules and written by one multi-row upsert;
    /// room and recording events, which are rare, are applied one at a time.
    pub async fn apply_webhooks(
        &self,
        events: &[WebhookRecord],
        reconcile_every: chrono::Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Deduped::new(events);
        let unique = &batch.unique;
        // PostgreSQL's common batch in one statement; SQLite's webhook writer has a
        // connection of its own for it (`SqliteLedgerWriter`).
        if let super::Db::Postgres(pool) = &self.db
            && is_participant_batch(events)
        {
            let inserted = participant_events_postgres(pool, unique, now).await?;
            return Ok(batch.fresh(&inserted));
        }
        let mut tx = self.begin().await?;
        let mut inserted = std::collections::HashSet::new();
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
            inserted.extend(record_events(&mut tx, chunk, now).await?);
        }
        let fresh = batch.fresh(&inserted);
        let applied = || {
            events
                .iter()
                .zip(&fresh)
                .filter_map(|(e, &fresh)| fresh.then_some(&e.change))
        };
        for change in applied() {
            apply_room_change(&mut tx, change, reconcile_every, now).await?;
        }
        let connections = merge_connections(applied());
        for chunk in connections.chunks(ROWS_PER_STATEMENT) {
            upsert_connections(&mut tx, chunk, "webhook", now).await?;
        }
        tx.commit().await?;
        Ok(fresh)
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
                let change = ConnectionChange {
                    room: room.to_string(),
                    connection: c.clone(),
                    left: None,
                };
                upsert_connections(&mut tx, &[change], "reconciled", now).await?;
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
                let change = ConnectionChange {
                    room: room.to_string(),
                    connection,
                    left: Some((now, LeaveReason::Reconciled)),
                };
                upsert_connections(&mut tx, &[change], "reconciled", now).await?;
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

/// Inserts the dedupe records of events (with distinct ids); returns the ids that were new.
async fn record_events(
    tx: &mut Tx,
    events: &[&WebhookRecord],
    now: DateTime<Utc>,
) -> StoreResult<Vec<String>> {
    let sql = record_events_sql(events.len(), 0, '$');
    Ok(with_tx!(tx, |conn| {
        let mut query = sqlx::query_scalar::<Backend, String>(&sql);
        for e in events {
            query = bind_event!(query, e, now);
        }
        query.fetch_all(conn).await?
    }))
}

/// PostgreSQL's common batch — participant events only (and ignored kinds) — as one
/// statement, which is one transaction: the dedupe records and the merged connection upsert
/// commit together or not at all, in one round trip. Every connection change of the batch is
/// applied, also one whose event was seen before: the ledger's merge rules (earliest join,
/// latest leave, first name) give the same row however often a change is applied. Returns
/// the ids that were new.
async fn participant_events_postgres(
    pool: &sqlx::PgPool,
    unique: &[&WebhookRecord],
    now: DateTime<Utc>,
) -> StoreResult<std::collections::HashSet<String>> {
    let connections = merge_connections(unique.iter().map(|e| &e.change));
    let dedupe = record_events_sql(unique.len(), 0, '$');
    let sql = if connections.is_empty() {
        dedupe
    } else {
        format!(
            "WITH fresh AS ({dedupe}), ledger AS ({}) SELECT event_id FROM fresh",
            upsert_sql(connections.len(), 4 * unique.len(), '$')
        )
    };
    let mut query = sqlx::query_scalar::<sqlx::Postgres, String>(&sql);
    for e in unique {
        query = bind_event!(query, e, now);
    }
    for c in &connections {
        query = bind_connection!(query, c, "webhook", now);
    }
    Ok(query.fetch_all(pool).await?.into_iter().collect())
}

/// Applies a room or recording change; connection changes are written per batch instead.
async fn apply_room_change(
    tx: &mut Tx,
    change: &LedgerChange,
    reconcile_every: chrono::Duration,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    match change {
        LedgerChange::Ignored | LedgerChange::Joined { .. } | LedgerChange::Left { .. } => {}
        LedgerChange::RoomStarted { room, at } => {
            room_started(tx, room, *at).await?;
            // While the room is live, reconcile the ledger with LiveKit every so often.
            let owner: Option<i64> = with_tx!(&mut *tx, |conn| {
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
                Store::enqueue_tx(tx, &[job]).await?;
            }
        }
        LedgerChange::RoomFinished { room, at } => {
            room_finished(tx, room, *at).await?;
        }
        LedgerChange::Recording {
            room,
            egress_id,
            status,
            file,
        } => {
            with_tx!(tx, |conn| {
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
    Ok(())
}

/// Inserts or merges connections (one per sid) by the rules of [`upsert_sql`].
async fn upsert_connections(
    tx: &mut Tx,
    changes: &[ConnectionChange],
    source: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let sql = upsert_sql(changes.len(), 0, '$');
    with_tx!(tx, |conn| {
        let mut query = sqlx::query(&sql);
        for c in changes {
            query = bind_connection!(query, c, source, now);
        }
        query.execute(conn).await?;
    });
    Ok(())
}

/// `INSERT` of `rows` dedupe records (event id, kind, room, received) returning the new ids;
/// parameters numbered from `offset + 1`, written `$n` (sqlx, both backends) or `?n`
/// (SQLite's own numbering, for the SQLite webhook writer).
pub(super) fn record_events_sql(rows: usize, offset: usize, mark: char) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let n = offset + 4 * i;
            format!(
                "({mark}{}, {mark}{}, {mark}{}, {mark}{})",
                n + 1,
                n + 2,
                n + 3,
                n + 4
            )
        })
        .collect();
    format!(
        "INSERT INTO webhook_events (event_id, kind, room_name, received_at) VALUES {} \
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        values.join(", ")
    )
}

/// The ledger's upsert of `rows` connections (ten parameters each, numbered from
/// `offset + 1` and marked as in [`record_events_sql`]): the earliest join wins, the latest explicit leave wins (ties broken by
/// reason, so the outcome never depends on order), and a connection reported after its room
/// ended ends with the room. The room's end is read per row rather than by closing the whole
/// room, which would read all its rows each time.
pub(super) fn upsert_sql(rows: usize, offset: usize, mark: char) -> String {
    let values: Vec<String> = (0..rows)
        .map(|i| {
            let p = |k: usize| format!("{mark}{}", offset + 10 * i + k);
            format!(
                "({room}, {sid}, {identity}, {name}, \
                 (SELECT i.id FROM invitations i JOIN meetings m ON m.id = i.meeting_id \
                  WHERE i.id = {invitation} AND m.room_name = {room}), \
                 {joined}, {left}, {reason}, \
                 (SELECT MAX(actual_end) FROM meetings WHERE room_name = {room}), {source}, {now})",
                room = p(1),
                sid = p(2),
                identity = p(3),
                name = p(4),
                joined = p(5),
                left = p(6),
                reason = p(7),
                source = p(8),
                now = p(9),
                invitation = p(10),
            )
        })
        .collect();
    format!(
        "INSERT INTO attendance_intervals (room_name, participant_sid, identity, name, invitation_id, joined_at, \
         left_at, left_reason, room_closed_at, source, updated_at) \
         VALUES {} \
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
           room_closed_at = COALESCE(attendance_intervals.room_closed_at, excluded.room_closed_at), \
           updated_at = excluded.updated_at",
        values.join(", ")
    )
}

/// Binds one dedupe record's four parameters, in the order [`record_events_sql`] numbers them.
macro_rules! bind_event {
    ($query:expr, $e:expr, $now:expr) => {
        $query
            .bind(&$e.event_id)
            .bind(&$e.kind)
            .bind($e.change.room())
            .bind($now)
    };
}
use bind_event;

/// Binds one connection change's ten parameters, in the order [`upsert_sql`] numbers them.
macro_rules! bind_connection {
    ($query:expr, $c:expr, $source:expr, $now:expr) => {
        $query
            .bind(&$c.room)
            .bind(&$c.connection.sid)
            .bind(&$c.connection.identity)
            .bind(&$c.connection.name)
            .bind($c.connection.joined_at)
            .bind($c.left.map(|(at, _)| at))
            .bind($c.left.map(|(_, r)| r.as_str()))
            .bind($source)
            .bind($now)
            // Identities are invitation ids; anything else is a guest.
            .bind($c.connection.identity.parse::<i64>().ok())
    };
}
use bind_connection;
