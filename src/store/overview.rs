//! Read-only views across dispatches for the pages: what a bureau must confirm, the meetings
//! it convenes, and the closure of each meeting's action items.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreResult, with_db};
use crate::domain::followup::Closure;
use crate::domain::org::subtree_range;

/// An invitation of a unit in a bureau's subtree to a meeting that has not ended.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UpcomingInvitation {
    pub id: i64,
    pub meeting_id: i64,
    pub meeting_title: String,
    pub meeting_status: String,
    pub planned_start: DateTime<Utc>,
    pub timezone: String,
    pub unit_id: i64,
    pub unit_name: String,
    pub person_name: Option<String>,
    pub role: String,
    pub rsvp: String,
}

/// A meeting hosted in a subtree that has not ended, across dispatches.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HostedMeeting {
    pub id: i64,
    pub dispatch_id: i64,
    pub title: String,
    pub tier: String,
    pub host_unit_name: String,
    pub status: String,
    pub planned_start: DateTime<Utc>,
    pub timezone: String,
    pub joins_parent: bool,
}

/// How many rows a page lists at most; pages say when there are more.
pub const PAGE_ROWS: i64 = 500;

impl Store {
    /// Invitations of units under `scope_path` to scheduled or live meetings, pending first,
    /// then by start. Hosts are left out: a host does not confirm its own meeting.
    pub async fn invitations_to_confirm(
        &self,
        scope_path: &str,
    ) -> StoreResult<Vec<UpcomingInvitation>> {
        let (start, end) = subtree_range(scope_path);
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT i.id, i.meeting_id, m.title AS meeting_title, m.status AS meeting_status, \
                 m.planned_start, d.timezone, i.unit_id, u.name AS unit_name, p.name AS person_name, i.role, i.rsvp \
                 FROM invitations i JOIN units u ON u.id = i.unit_id JOIN meetings m ON m.id = i.meeting_id \
                 JOIN dispatches d ON d.id = m.dispatch_id LEFT JOIN people p ON p.id = i.person_id \
                 WHERE u.path >= $1 AND u.path < $2 AND m.status IN ('scheduled', 'live') AND i.role <> 'host' \
                 ORDER BY CASE WHEN i.rsvp = 'pending' THEN 0 ELSE 1 END, m.planned_start, u.path, i.id LIMIT $3",
            )
            .bind(&start)
            .bind(&end)
            .bind(PAGE_ROWS)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Meetings hosted by units under `scope_path` that are scheduled or live, by start.
    pub async fn hosted_meetings(&self, scope_path: &str) -> StoreResult<Vec<HostedMeeting>> {
        let (start, end) = subtree_range(scope_path);
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT m.id, m.dispatch_id, m.title, m.tier, u.name AS host_unit_name, m.status, m.planned_start, \
                 d.timezone, m.joins_parent \
                 FROM meetings m JOIN units u ON u.id = m.host_unit_id JOIN dispatches d ON d.id = m.dispatch_id \
                 WHERE u.path >= $1 AND u.path < $2 AND m.status IN ('scheduled', 'live') \
                 ORDER BY m.planned_start, u.path LIMIT $3",
            )
            .bind(&start)
            .bind(&end)
            .bind(PAGE_ROWS)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Closure of the follow-ups each meeting of a dispatch assigned directly (delegated
    /// children are counted in their parents' closure), for assignees under `scope_path`.
    pub async fn closure_by_meeting(
        &self,
        dispatch_id: i64,
        scope_path: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<(i64, Closure)>> {
        let (start, end) = subtree_range(scope_path);
        let rows: Vec<(i64, String, DateTime<Utc>)> = with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT a.meeting_id, f.status, f.due_at FROM followups f JOIN action_items a ON a.id = f.action_item_id \
                 WHERE a.dispatch_id = $1 AND a.meeting_id IS NOT NULL AND f.parent_id IS NULL \
                 AND f.assignee_path >= $2 AND f.assignee_path < $3",
            )
            .bind(dispatch_id)
            .bind(&start)
            .bind(&end)
            .fetch_all(pool)
            .await?
        });
        let mut out: Vec<(i64, Closure)> = Vec::new();
        for (meeting, status, due) in rows {
            let Ok(status) = status.parse() else { continue };
            let at = match out.iter().position(|(m, _)| *m == meeting) {
                Some(at) => at,
                None => {
                    out.push((meeting, Closure::default()));
                    out.len() - 1
                }
            };
            out[at].1.count(status, due, now);
        }
        Ok(out)
    }
}
