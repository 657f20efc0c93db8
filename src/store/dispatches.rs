//! Dispatches, their meetings and invitations.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;

use super::audit::AuditEntry;
use super::jobs::NewJob;
use super::{Store, StoreError, StoreResult, with_db, with_tx};
use crate::domain::cascade::Plan;
use crate::domain::meeting::{MeetingStatus, MeetingTimes, Moved};
use crate::domain::org::subtree_range;

const BATCH_ROWS: usize = 1000;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DispatchRecord {
    pub id: i64,
    pub template_id: String,
    pub title: String,
    pub sector: Option<String>,
    pub root_unit_id: i64,
    pub root_unit_name: String,
    #[serde(skip)]
    pub root_unit_path: String,
    pub timezone: String,
    pub planned_start: DateTime<Utc>,
    pub status: String,
    pub chosen_units: String,
    #[serde(skip)]
    pub plan_report: String,
    pub cancel_reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MeetingRecord {
    pub id: i64,
    pub dispatch_id: i64,
    pub parent_id: Option<i64>,
    pub tier: String,
    pub tier_index: i64,
    pub host_unit_id: i64,
    pub host_unit_name: String,
    #[serde(skip)]
    pub host_unit_path: String,
    pub title: String,
    pub joins_parent: bool,
    pub room_name: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub offset_minutes: i64,
    pub status: String,
    pub actual_start: Option<DateTime<Utc>>,
    pub actual_end: Option<DateTime<Utc>>,
    pub record: bool,
    pub sequence: i64,
    /// LiveKit's id of the room, once created.
    pub room_sid: Option<String>,
}

impl MeetingRecord {
    pub fn status(&self) -> StoreResult<MeetingStatus> {
        self.status.parse().map_err(StoreError::Corrupt)
    }

    pub fn times(&self) -> StoreResult<MeetingTimes> {
        Ok(MeetingTimes {
            id: self.id,
            parent_id: self.parent_id,
            tier_index: usize::try_from(self.tier_index)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            starts_at: self.planned_start,
            ends_at: self.planned_end,
            offset_minutes: self.offset_minutes,
            status: self.status()?,
        })
    }
}

/// Invitations of a meeting by RSVP state.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RsvpCounts {
    pub total: i64,
    pub pending: i64,
    pub confirmed: i64,
    pub declined: i64,
    pub delegated: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InvitationView {
    pub id: i64,
    pub meeting_id: i64,
    pub unit_id: i64,
    pub unit_name: String,
    pub person_id: Option<i64>,
    pub person_name: Option<String>,
    pub email: Option<String>,
    pub role: String,
    pub can_publish: bool,
    pub rsvp: String,
}

pub struct PublishDispatch<'a> {
    pub plan: &'a Plan,
    /// When each meeting's reminders and room jobs run.
    pub schedule: &'a JobSchedule,
    pub planned_start: DateTime<Utc>,
    pub template_source: &'a str,
    pub chosen: &'a [i64],
    pub actor: &'a str,
}

const DISPATCH_SELECT: &str = "SELECT d.id, d.template_id, d.title, d.sector, d.root_unit_id, \
     u.name AS root_unit_name, u.path AS root_unit_path, d.timezone, d.planned_start, d.status, \
     d.chosen_units, d.plan_report, d.cancel_reason, d.created_by, d.created_at, d.updated_at \
     FROM dispatches d JOIN units u ON u.id = d.root_unit_id";

const MEETING_SELECT: &str = "SELECT m.id, m.dispatch_id, m.parent_id, m.tier, m.tier_index, \
     m.host_unit_id, u.name AS host_unit_name, u.path AS host_unit_path, m.title, m.joins_parent, \
     m.room_name, m.planned_start, m.planned_end, m.offset_minutes, m.status, m.actual_start, \
     m.actual_end, m.record, m.sequence, m.room_sid FROM meetings m JOIN units u ON u.id = m.host_unit_id";

/// When the timed jobs of a meeting run, relative to it.
#[derive(Debug, Clone, Default)]
pub struct JobSchedule {
    /// Reminders this many minutes before the start.
    pub reminder_minutes: Vec<i64>,
    /// The room is created this long before the start.
    pub room_lead_minutes: i64,
    /// The room is closed this long after the planned end.
    pub room_grace_minutes: i64,
}

/// A meeting's times as its jobs need them.
pub struct TimedMeeting {
    pub id: i64,
    pub sequence: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// False for sub-venues, whose people join the parent's room.
    pub owns_room: bool,
    pub record: bool,
}

impl JobSchedule {
    /// The timed jobs of a meeting at its current `sequence`: reminders (those not already
    /// due), and for rooms it owns, creating, recording and closing the room. A job that finds
    /// the meeting at another sequence does nothing, so a moved meeting's old jobs fade out.
    pub fn jobs(&self, m: &TimedMeeting, now: DateTime<Utc>) -> Vec<NewJob> {
        let job = |kind: &str, run_at: DateTime<Utc>, extra: serde_json::Value, key: String| {
            let mut payload = serde_json::json!({"meeting_id": m.id, "sequence": m.sequence});
            if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
                p.extend(e.clone());
            }
            NewJob {
                kind: kind.into(),
                payload,
                run_at: run_at.max(now),
                dedupe_key: Some(key),
            }
        };
        let mut jobs: Vec<NewJob> = self
            .reminder_minutes
            .iter()
            .filter(|minutes| m.starts_at - chrono::Duration::minutes(**minutes) > now)
            .map(|minutes| {
                job(
                    "meeting.remind",
                    m.starts_at - chrono::Duration::minutes(*minutes),
                    serde_json::json!({"minutes": minutes}),
                    format!("meeting.remind:{}:{}:{minutes}", m.id, m.sequence),
                )
            })
            .collect();
        if m.owns_room {
            let (id, seq) = (m.id, m.sequence);
            let lead = chrono::Duration::minutes(self.room_lead_minutes);
            let grace = chrono::Duration::minutes(self.room_grace_minutes);
            jobs.push(job(
                "room.create",
                m.starts_at - lead,
                serde_json::json!({}),
                format!("room.create:{id}:{seq}"),
            ));
            jobs.push(job(
                "room.close",
                m.ends_at + grace,
                serde_json::json!({}),
                format!("room.close:{id}:{seq}"),
            ));
            if m.record {
                jobs.push(job(
                    "room.record",
                    m.starts_at,
                    serde_json::json!({}),
                    format!("room.record:{id}:{seq}"),
                ));
            }
        }
        jobs
    }
}

pub fn room_name(dispatch_id: i64, meeting_index: usize) -> String {
    format!("muster-d{dispatch_id}-m{meeting_index}")
}

impl Store {
    /// Writes a planned dispatch — the dispatch, every meeting and invitation, the audit
    /// event and the invitation jobs — in one transaction.
    pub async fn publish_dispatch(&self, p: &PublishDispatch<'_>) -> StoreResult<i64> {
        let plan = p.plan;
        let now = Utc::now();
        let report = serde_json::json!({
            "skipped": plan.skipped,
            "double_bookings": plan.double_bookings,
            "warnings": plan.warnings,
        });
        let chosen = p
            .chosen
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut tx = self.begin().await?;
        let dispatch_id: i64 = with_tx!(&mut tx, |conn| {
            sqlx::query_scalar(
                "INSERT INTO dispatches (template_id, title, sector, root_unit_id, timezone, planned_start, \
                 status, template_source, chosen_units, plan_report, created_by, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8, $9, $10, $11, $11) RETURNING id",
            )
            .bind(&plan.template_id)
            .bind(&plan.title)
            .bind(plan.sector.map(|s| s.as_str()))
            .bind(plan.root_unit_id)
            .bind(plan.timezone.name())
            .bind(p.planned_start)
            .bind(p.template_source)
            .bind(&chosen)
            .bind(report.to_string())
            .bind(p.actor)
            .bind(now)
            .fetch_one(conn)
            .await?
        });
        let mut ids: Vec<i64> = Vec::with_capacity(plan.meetings.len());
        for (index, m) in plan.meetings.iter().enumerate() {
            let room = room_name(dispatch_id, plan.room_owner(index));
            let parent_id = m.parent.map(|p| ids[p]);
            let id: i64 = with_tx!(&mut tx, |conn| {
                sqlx::query_scalar(
                    "INSERT INTO meetings (dispatch_id, parent_id, tier, tier_index, host_unit_id, title, \
                     joins_parent, room_name, planned_start, planned_end, status, record, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'scheduled', $11, $12, $12) RETURNING id",
                )
                .bind(dispatch_id)
                .bind(parent_id)
                .bind(&m.tier_id)
                .bind(m.tier as i64)
                .bind(m.host_unit_id)
                .bind(&m.title)
                .bind(m.joins_parent)
                .bind(&room)
                .bind(m.starts_at)
                .bind(m.ends_at)
                .bind(m.record)
                .bind(now)
                .fetch_one(conn)
                .await?
            });
            ids.push(id);
        }
        let rows: Vec<(i64, &crate::domain::cascade::PlannedInvitation)> = plan
            .meetings
            .iter()
            .zip(&ids)
            .flat_map(|(m, id)| m.invitations.iter().map(move |i| (*id, i)))
            .collect();
        for chunk in rows.chunks(BATCH_ROWS) {
            with_tx!(&mut tx, |conn| {
                let mut q = QueryBuilder::<Backend>::new(
                    "INSERT INTO invitations (meeting_id, unit_id, person_id, role, can_publish, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut row, (meeting_id, i)| {
                    row.push_bind(*meeting_id)
                        .push_bind(i.unit_id)
                        .push_bind(i.person_id)
                        .push_bind(i.role.as_str())
                        .push_bind(i.can_publish)
                        .push_bind(now)
                        .push_bind(now);
                });
                q.build().execute(conn).await?;
            });
        }
        let mut jobs: Vec<NewJob> = ids
            .iter()
            .map(|id| {
                NewJob::now(
                    "meeting.invite",
                    serde_json::json!({"meeting_id": id}),
                    format!("meeting.invite:{id}"),
                )
            })
            .collect();
        for (m, id) in plan.meetings.iter().zip(&ids) {
            let timed = TimedMeeting {
                id: *id,
                sequence: 0,
                starts_at: m.starts_at,
                ends_at: m.ends_at,
                owns_room: !m.joins_parent,
                record: m.record,
            };
            jobs.extend(p.schedule.jobs(&timed, now));
        }
        Store::enqueue_tx(&mut tx, &jobs).await?;
        let entry = AuditEntry::new(
            p.actor,
            "dispatch.published",
            "dispatch",
            &dispatch_id.to_string(),
        )
        .after(&serde_json::json!({
            "template": plan.template_id,
            "root_unit_id": plan.root_unit_id,
            "planned_start": p.planned_start,
            "meetings": ids.len(),
            "invitations": rows.len(),
        }));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(dispatch_id)
    }

    pub async fn dispatch(&self, id: i64) -> StoreResult<DispatchRecord> {
        let row: Option<DispatchRecord> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!("{DISPATCH_SELECT} WHERE d.id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("dispatch {id}")))
    }

    pub async fn dispatch_template_source(&self, id: i64) -> StoreResult<String> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT template_source FROM dispatches WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await?
        }))
    }

    /// Dispatches a scope takes part in: rooted in it, hosting a meeting in it, or inviting a
    /// unit of it. Newest first.
    pub async fn list_dispatches(
        &self,
        scope_path: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<DispatchRecord>> {
        let (start, end) = subtree_range(scope_path);
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "{DISPATCH_SELECT} WHERE (u.path >= $1 AND u.path < $2) \
                 OR EXISTS (SELECT 1 FROM meetings m JOIN units h ON h.id = m.host_unit_id \
                            WHERE m.dispatch_id = d.id AND h.path >= $1 AND h.path < $2) \
                 OR EXISTS (SELECT 1 FROM meetings m JOIN invitations i ON i.meeting_id = m.id \
                            JOIN units iu ON iu.id = i.unit_id \
                            WHERE m.dispatch_id = d.id AND iu.path >= $1 AND iu.path < $2) \
                 ORDER BY d.planned_start DESC, d.id DESC LIMIT $3 OFFSET $4"
            ))
            .bind(&start)
            .bind(&end)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?
        }))
    }

    pub async fn dispatch_meetings(&self, dispatch_id: i64) -> StoreResult<Vec<MeetingRecord>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "{MEETING_SELECT} WHERE m.dispatch_id = $1 ORDER BY m.id"
            ))
            .bind(dispatch_id)
            .fetch_all(pool)
            .await?
        }))
    }

    pub async fn meeting(&self, id: i64) -> StoreResult<MeetingRecord> {
        let row: Option<MeetingRecord> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!("{MEETING_SELECT} WHERE m.id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("meeting {id}")))
    }

    /// RSVP counts of every meeting of a dispatch, limited to invited units in `scope_path`.
    pub async fn rsvp_counts(
        &self,
        dispatch_id: i64,
        scope_path: &str,
    ) -> StoreResult<Vec<(i64, RsvpCounts)>> {
        let (start, end) = subtree_range(scope_path);
        let rows: Vec<(i64, String, i64)> = with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT i.meeting_id, i.rsvp, COUNT(*) FROM invitations i \
                 JOIN meetings m ON m.id = i.meeting_id JOIN units u ON u.id = i.unit_id \
                 WHERE m.dispatch_id = $1 AND u.path >= $2 AND u.path < $3 \
                 GROUP BY i.meeting_id, i.rsvp ORDER BY i.meeting_id",
            )
            .bind(dispatch_id)
            .bind(&start)
            .bind(&end)
            .fetch_all(pool)
            .await?
        });
        let mut out: Vec<(i64, RsvpCounts)> = Vec::new();
        for (meeting, rsvp, count) in rows {
            if out.last().is_none_or(|(m, _)| *m != meeting) {
                out.push((meeting, RsvpCounts::default()));
            }
            let counts = &mut out.last_mut().expect("pushed").1;
            counts.total += count;
            match rsvp.as_str() {
                "pending" => counts.pending += count,
                "confirmed" => counts.confirmed += count,
                "declined" => counts.declined += count,
                _ => counts.delegated += count,
            }
        }
        Ok(out)
    }

    /// Invitations of a meeting for units in `scope_path`, by unit.
    pub async fn meeting_invitations(
        &self,
        meeting_id: i64,
        scope_path: &str,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<InvitationView>, i64)> {
        let (start, end) = subtree_range(scope_path);
        let filter = "FROM invitations i JOIN units u ON u.id = i.unit_id LEFT JOIN people p ON p.id = i.person_id \
             WHERE i.meeting_id = $1 AND u.path >= $2 AND u.path < $3";
        Ok(with_db!(&self.db, |pool| {
            let rows = sqlx::query_as(&format!(
                "SELECT i.id, i.meeting_id, i.unit_id, u.name AS unit_name, i.person_id, p.name AS person_name, \
                 COALESCE(p.email, u.mailbox) AS email, i.role, i.can_publish, i.rsvp {filter} \
                 ORDER BY u.path, i.id LIMIT $4 OFFSET $5"
            ))
            .bind(meeting_id)
            .bind(&start)
            .bind(&end)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let total = sqlx::query_scalar(&format!("SELECT COUNT(*) {filter}"))
                .bind(meeting_id)
                .bind(&start)
                .bind(&end)
                .fetch_one(pool)
                .await?;
            (rows, total)
        }))
    }

    /// Whether any unit of `scope_path` is invited to the meeting.
    pub async fn meeting_invites_scope(
        &self,
        meeting_id: i64,
        scope_path: &str,
    ) -> StoreResult<bool> {
        let (start, end) = subtree_range(scope_path);
        let found: Option<i64> = with_db!(&self.db, |pool| {
            sqlx::query_scalar(
                "SELECT i.id FROM invitations i JOIN units u ON u.id = i.unit_id \
                 WHERE i.meeting_id = $1 AND u.path >= $2 AND u.path < $3 LIMIT 1",
            )
            .bind(meeting_id)
            .bind(&start)
            .bind(&end)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.is_some())
    }

    /// Applies new times: each moved meeting's `sequence` goes up and an update job is
    /// enqueued for it, in one transaction with the audit event.
    pub async fn reschedule(
        &self,
        dispatch_id: i64,
        moved: &[Moved],
        dispatch_start: Option<DateTime<Utc>>,
        schedule: &JobSchedule,
        audit: AuditEntry,
    ) -> StoreResult<()> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut jobs = Vec::new();
        for m in moved {
            let updated: Option<(i64, bool, bool)> = with_tx!(&mut tx, |conn| {
                sqlx::query_as(
                    "UPDATE meetings SET planned_start = $1, planned_end = $2, offset_minutes = $3, \
                     sequence = sequence + 1, updated_at = $4 \
                     WHERE id = $5 AND dispatch_id = $6 AND status = 'scheduled' \
                     RETURNING sequence, joins_parent, record",
                )
                .bind(m.starts_at)
                .bind(m.ends_at)
                .bind(m.offset_minutes)
                .bind(now)
                .bind(m.id)
                .bind(dispatch_id)
                .fetch_optional(conn)
                .await?
            });
            let (sequence, joins_parent, record) = updated.ok_or_else(|| {
                StoreError::Conflict(format!(
                    "meeting {} changed meanwhile; reload and try again",
                    m.id
                ))
            })?;
            jobs.push(NewJob::now(
                "meeting.update",
                serde_json::json!({"meeting_id": m.id, "sequence": sequence}),
                format!("meeting.update:{}:{sequence}", m.id),
            ));
            let timed = TimedMeeting {
                id: m.id,
                sequence,
                starts_at: m.starts_at,
                ends_at: m.ends_at,
                owns_room: !joins_parent,
                record,
            };
            jobs.extend(schedule.jobs(&timed, now));
        }
        if let Some(start) = dispatch_start {
            with_tx!(&mut tx, |conn| {
                sqlx::query(
                    "UPDATE dispatches SET planned_start = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(start)
                .bind(now)
                .bind(dispatch_id)
                .execute(conn)
                .await?;
            });
        }
        Store::enqueue_tx(&mut tx, &jobs).await?;
        Store::append_audit_tx(&mut tx, &[audit]).await?;
        tx.commit().await
    }

    /// Cancels scheduled meetings (and with `dispatch_reason`, the dispatch), enqueueing a
    /// cancellation job for each, in one transaction with the audit event.
    pub async fn cancel_meetings(
        &self,
        dispatch_id: i64,
        meeting_ids: &[i64],
        reason: &str,
        cancel_dispatch: bool,
        audit: AuditEntry,
    ) -> StoreResult<usize> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut jobs = Vec::new();
        for id in meeting_ids {
            let sequence: Option<i64> = with_tx!(&mut tx, |conn| {
                sqlx::query_scalar(
                    "UPDATE meetings SET status = 'cancelled', sequence = sequence + 1, updated_at = $1 \
                     WHERE id = $2 AND dispatch_id = $3 AND status = 'scheduled' RETURNING sequence",
                )
                .bind(now)
                .bind(id)
                .bind(dispatch_id)
                .fetch_optional(conn)
                .await?
            });
            if let Some(sequence) = sequence {
                jobs.push(NewJob::now(
                    "meeting.cancel",
                    serde_json::json!({"meeting_id": id, "sequence": sequence, "reason": reason}),
                    format!("meeting.cancel:{id}"),
                ));
            }
        }
        if cancel_dispatch {
            with_tx!(&mut tx, |conn| {
                sqlx::query(
                    "UPDATE dispatches SET status = 'cancelled', cancel_reason = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(reason)
                .bind(now)
                .bind(dispatch_id)
                .execute(conn)
                .await?;
            });
        }
        let cancelled = jobs.len();
        Store::enqueue_tx(&mut tx, &jobs).await?;
        Store::append_audit_tx(&mut tx, &[audit]).await?;
        tx.commit().await?;
        Ok(cancelled)
    }
}
