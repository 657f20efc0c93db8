//! Action items and follow-ups (督办).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;

use super::audit::AuditEntry;
use super::jobs::NewJob;
use super::{Backend, Store, StoreError, StoreResult, Tx, with_db, with_tx};
use crate::domain::followup::{Action, Closure, Status};
use crate::domain::org::subtree_range;

/// A unit a follow-up goes to.
#[derive(Debug, Clone)]
pub struct Assignee {
    pub unit_id: i64,
    pub path: String,
    pub level: String,
    pub tier: String,
}

#[derive(Debug, Clone)]
pub struct NewActionItem {
    pub dispatch_id: Option<i64>,
    pub meeting_id: Option<i64>,
    pub issuer_unit_id: i64,
    pub title: String,
    pub description: String,
    pub due_at: DateTime<Utc>,
    pub delegable: bool,
    pub assignees: Vec<Assignee>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FollowupRecord {
    pub id: i64,
    pub action_item_id: i64,
    pub parent_id: Option<i64>,
    pub title: String,
    pub description: String,
    pub delegable: bool,
    pub assignee_unit_id: i64,
    pub assignee_name: String,
    pub assignee_path: String,
    pub assigner_unit_id: i64,
    pub assigner_name: String,
    pub assigner_path: String,
    pub dispatch_id: Option<i64>,
    pub tier: String,
    pub status: String,
    pub assigned_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub open_children: i64,
}

impl FollowupRecord {
    pub fn status(&self) -> StoreResult<Status> {
        self.status.parse().map_err(StoreError::Corrupt)
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FollowupEvent {
    pub id: i64,
    pub action: String,
    pub from_status: String,
    pub to_status: String,
    pub text: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct FollowupFilter {
    pub scope_path: String,
    /// Only those assigned to this unit itself (not below it).
    pub assignee_unit_id: Option<i64>,
    pub status: Option<Status>,
    pub dispatch_id: Option<i64>,
    pub due_from: Option<DateTime<Utc>>,
    pub due_to: Option<DateTime<Utc>>,
    pub limit: i64,
    pub offset: i64,
}

/// How roll-up rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// By the child unit (region) of the scope the follow-up's assignee lies under.
    Region,
    /// By the tier of the meeting the assignee was invited to.
    Tier,
}

#[derive(Debug, Clone, Serialize)]
pub struct RollupRow {
    /// Unit code of the region (empty: the scope unit itself), or the tier id.
    pub key: String,
    pub closure: Closure,
}

const FOLLOWUP_SELECT: &str = "SELECT f.id, f.action_item_id, f.parent_id, a.title, a.description, a.delegable, \
     f.assignee_unit_id, au.name AS assignee_name, au.path AS assignee_path, \
     f.assigner_unit_id, su.name AS assigner_name, su.path AS assigner_path, \
     f.dispatch_id, f.tier, f.status, f.assigned_at, f.due_at, f.closed_at, f.open_children \
     FROM followups f JOIN action_items a ON a.id = f.action_item_id \
     JOIN units au ON au.id = f.assignee_unit_id JOIN units su ON su.id = f.assigner_unit_id";

const BATCH_ROWS: usize = 500;

impl Store {
    /// Records an action item and one follow-up per assignee, with the "assigned" message jobs,
    /// in one transaction.
    pub async fn create_action_item(
        &self,
        item: &NewActionItem,
        actor: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<(i64, usize)> {
        let mut tx = self.begin().await?;
        let id: i64 = with_tx!(&mut tx, |conn| {
            sqlx::query_scalar(
                "INSERT INTO action_items (dispatch_id, meeting_id, issuer_unit_id, title, description, due_at, \
                 delegable, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(item.dispatch_id)
            .bind(item.meeting_id)
            .bind(item.issuer_unit_id)
            .bind(&item.title)
            .bind(&item.description)
            .bind(item.due_at)
            .bind(item.delegable)
            .bind(actor)
            .bind(now)
            .fetch_one(conn)
            .await?
        });
        insert_followups(
            &mut tx,
            id,
            None,
            item.issuer_unit_id,
            item.dispatch_id,
            &item.assignees,
            item.due_at,
            now,
        )
        .await?;
        let entry = AuditEntry::new(actor, "action_item.created", "action_item", &id.to_string()).after(&serde_json::json!({
            "title": item.title, "due_at": item.due_at, "assignees": item.assignees.len(), "meeting_id": item.meeting_id,
        }));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok((id, item.assignees.len()))
    }

    pub async fn followup(&self, id: i64) -> StoreResult<FollowupRecord> {
        let row: Option<FollowupRecord> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!("{FOLLOWUP_SELECT} WHERE f.id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("follow-up {id}")))
    }

    pub async fn followup_children(&self, id: i64) -> StoreResult<Vec<FollowupRecord>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "{FOLLOWUP_SELECT} WHERE f.parent_id = $1 ORDER BY au.path"
            ))
            .bind(id)
            .fetch_all(pool)
            .await?
        }))
    }

    pub async fn followup_events(&self, id: i64) -> StoreResult<Vec<FollowupEvent>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, action, from_status, to_status, text, actor, at FROM followup_events \
                 WHERE followup_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Follow-ups assigned to units in the scope, most urgent first.
    pub async fn list_followups(
        &self,
        f: &FollowupFilter,
    ) -> StoreResult<(Vec<FollowupRecord>, i64)> {
        let (start, end) = subtree_range(&f.scope_path);
        let status = f.status.map(|s| s.as_str());
        let filter = "WHERE f.assignee_path >= $1 AND f.assignee_path < $2 AND ($3 IS NULL OR f.status = $3) \
             AND ($4 IS NULL OR f.dispatch_id = $4) AND ($5 IS NULL OR f.due_at >= $5) AND ($6 IS NULL OR f.due_at < $6) \
             AND ($7 IS NULL OR f.assignee_unit_id = $7)";
        Ok(with_db!(&self.db, |pool| {
            let rows = sqlx::query_as(&format!(
                "{FOLLOWUP_SELECT} {filter} ORDER BY f.due_at, f.id LIMIT $8 OFFSET $9"
            ))
            .bind(&start)
            .bind(&end)
            .bind(status)
            .bind(f.dispatch_id)
            .bind(f.due_from)
            .bind(f.due_to)
            .bind(f.assignee_unit_id)
            .bind(f.limit)
            .bind(f.offset)
            .fetch_all(pool)
            .await?;
            let total = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM followups f {filter}"))
                .bind(&start)
                .bind(&end)
                .bind(status)
                .bind(f.dispatch_id)
                .bind(f.due_from)
                .bind(f.due_to)
                .bind(f.assignee_unit_id)
                .fetch_one(pool)
                .await?;
            (rows, total)
        }))
    }

    /// Moves a follow-up from `from` to `to` (if nobody moved it meanwhile), records the event
    /// and the audit, keeps the parent's count of open children in step, and cancels the open
    /// follow-ups below a cancelled one.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_transition(
        &self,
        f: &FollowupRecord,
        action: Action,
        from: Status,
        to: Status,
        text: &str,
        actor: &str,
        now: DateTime<Utc>,
        jobs: &[NewJob],
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        set_status(
            &mut tx,
            f.id,
            f.parent_id,
            action,
            from,
            to,
            text,
            actor,
            now,
        )
        .await?;
        if to == Status::Cancelled {
            let mut frontier = vec![f.id];
            while let Some(parent) = frontier.pop() {
                let children: Vec<(i64, String)> = with_tx!(&mut tx, |conn| {
                    sqlx::query_as("SELECT id, status FROM followups WHERE parent_id = $1")
                        .bind(parent)
                        .fetch_all(conn)
                        .await?
                });
                for (child, status) in children {
                    let status: Status = status.parse().map_err(StoreError::Corrupt)?;
                    if !status.is_final() {
                        set_status(
                            &mut tx,
                            child,
                            Some(parent),
                            Action::Cancel,
                            status,
                            Status::Cancelled,
                            text,
                            actor,
                            now,
                        )
                        .await?;
                    }
                    frontier.push(child);
                }
            }
        }
        Store::enqueue_tx(&mut tx, jobs).await?;
        let entry = AuditEntry::new(
            actor,
            &format!("followup.{}", action.as_str()),
            "followup",
            &f.id.to_string(),
        )
        .before(&serde_json::json!({"status": from}))
        .after(&serde_json::json!({"status": to, "text": text}));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await
    }

    /// Delegates a follow-up to units below its assignee: one child each, due no later than
    /// the parent.
    pub async fn delegate_followup(
        &self,
        f: &FollowupRecord,
        children: &[Assignee],
        due_at: DateTime<Utc>,
        note: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let from: Status = f.status()?;
        let mut tx = self.begin().await?;
        insert_followups(
            &mut tx,
            f.action_item_id,
            Some(f.id),
            f.assignee_unit_id,
            f.dispatch_id,
            children,
            due_at,
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                StoreError::Conflict("one of these units already has this action item".into())
            }
            other => other,
        })?;
        let rows = with_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE followups SET open_children = open_children + $1, status = $2, updated_at = $3 \
                 WHERE id = $4 AND status = $5",
            )
            .bind(children.len() as i64)
            .bind(Status::InProgress.as_str())
            .bind(now)
            .bind(f.id)
            .bind(from.as_str())
            .execute(conn)
            .await?
            .rows_affected()
        });
        if rows != 1 {
            return Err(StoreError::Conflict(format!(
                "follow-up {} changed meanwhile; reload and try again",
                f.id
            )));
        }
        insert_event(
            &mut tx,
            f.id,
            "delegate",
            from,
            Status::InProgress,
            note,
            actor,
            now,
        )
        .await?;
        let entry = AuditEntry::new(actor, "followup.delegate", "followup", &f.id.to_string())
            .after(&serde_json::json!({"children": children.iter().map(|c| c.unit_id).collect::<Vec<_>>(), "due_at": due_at}));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(children.len())
    }

    /// Closure figures under `scope_path`, grouped by region (children of the scope) or tier.
    pub async fn rollup(
        &self,
        scope_path: &str,
        grouping: Grouping,
        dispatch_id: Option<i64>,
        due_from: Option<DateTime<Utc>>,
        due_to: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RollupRow>> {
        let scope = path_codes(scope_path);
        if scope.len() > PATH_DEPTH {
            // No follow-up's assignee lies that deep.
            return Ok(Vec::new());
        }
        // The scope's codes select its subtree; the next code names the region (empty: the
        // scope unit itself, or a scope as deep as paths go).
        let depth = scope.len();
        let mut filter: Vec<String> = (1..=depth).map(|n| format!("f.code_{n} = ${n}")).collect();
        let p = depth + 1;
        filter.push(format!(
            "(${} IS NULL OR f.dispatch_id = ${})",
            p + 1,
            p + 1
        ));
        filter.push(format!("(${} IS NULL OR f.due_us >= ${})", p + 2, p + 2));
        filter.push(format!("(${} IS NULL OR f.due_us < ${})", p + 3, p + 3));
        let (key, group) = match grouping {
            Grouping::Tier => ("f.tier".to_string(), "f.tier".to_string()),
            Grouping::Region if depth < PATH_DEPTH => {
                let column = format!("f.code_{}", depth + 1);
                (column.clone(), column)
            }
            Grouping::Region => ("''".to_string(), format!("f.code_{PATH_DEPTH}")),
        };
        // Every row passes through these predicates, so the cheap test comes first (the integer
        // due date before the status) and the statuses are spelled out as comparisons: SQLite
        // runs `IN (…)` through a lookup table per row, which measured a third slower.
        let late = format!(
            "f.due_us < ${p} AND f.status <> 'verified' AND f.status <> 'not_doing' \
             AND f.status <> 'cancelled'"
        );
        // Days overdue as `days_overdue` counts them: started days, from whole seconds late.
        let sql = format!(
            "SELECT {key} AS key, COUNT(*) AS total, \
             COUNT(*) FILTER (WHERE f.status = 'verified' OR f.status = 'not_doing') AS closed, \
             COUNT(*) FILTER (WHERE f.status = 'cancelled') AS cancelled, \
             COUNT(*) FILTER (WHERE {late}) AS overdue, \
             CAST(COALESCE(SUM(((${p} - f.due_us) / 1000000 + 86399) / 86400) FILTER (WHERE {late}), 0) AS BIGINT) \
             AS overdue_days \
             FROM followups f WHERE {} GROUP BY {group}",
            filter.join(" AND ")
        );
        let (now, from, to) = (
            now.timestamp_micros(),
            due_from.map(|d| d.timestamp_micros()),
            due_to.map(|d| d.timestamp_micros()),
        );
        let mut tx = self.begin().await?;
        if self.backend() == Backend::Postgres {
            // At province scale every row matches, and PostgreSQL then prefers reading the
            // table to reading the covering index: it costs index pages as random reads and
            // not what it takes to reach the roll-up's columns at the end of each wide row.
            // The index-only scan measured 20-30% faster; for a smaller scope it is the plan
            // anyway. SET LOCAL ends with the transaction.
            with_tx!(&mut tx, |conn| {
                sqlx::query("SET LOCAL enable_seqscan = off")
                    .execute(conn)
                    .await?;
            });
        }
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = with_tx!(&mut tx, |conn| {
            let mut q = sqlx::query_as(&sql);
            for code in &scope {
                q = q.bind(*code);
            }
            q.bind(now)
                .bind(dispatch_id)
                .bind(from)
                .bind(to)
                .fetch_all(conn)
                .await?
        });
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(
                |(key, total, closed, cancelled, overdue, overdue_days)| RollupRow {
                    key,
                    closure: Closure {
                        total,
                        closed,
                        cancelled,
                        overdue,
                        overdue_days,
                    },
                },
            )
            .collect())
    }
}

/// How many codes a unit's path holds at most: levels nest province > city > district >
/// enterprise. The follow-ups' `code_1` … `code_4` columns hold them.
const PATH_DEPTH: usize = 4;

/// The codes of a materialised path, from the root down (`/130000/130200/`: 130000, 130200).
fn path_codes(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// A job sending one follow-up message; `key` also dedupes the mail itself.
pub fn followup_message(followup_id: i64, message: &str, key: String) -> NewJob {
    NewJob::now(
        "followup.notify",
        serde_json::json!({"followup_id": followup_id, "message": message, "key": key}),
        key.clone(),
    )
}

#[allow(clippy::too_many_arguments)]
async fn insert_followups(
    tx: &mut Tx,
    action_item_id: i64,
    parent_id: Option<i64>,
    assigner_unit_id: i64,
    dispatch_id: Option<i64>,
    assignees: &[Assignee],
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    // The roll-up's columns hold at most `PATH_DEPTH` codes.
    if let Some(a) = assignees
        .iter()
        .find(|a| path_codes(&a.path).len() > PATH_DEPTH)
    {
        return Err(StoreError::Corrupt(format!(
            "unit path {} is deeper than {PATH_DEPTH} levels",
            a.path
        )));
    }
    let mut ids: Vec<i64> = Vec::with_capacity(assignees.len());
    for chunk in assignees.chunks(BATCH_ROWS) {
        let batch: Vec<i64> = with_tx!(&mut *tx, |conn| {
            let mut q = QueryBuilder::<Backend>::new(
                "INSERT INTO followups (action_item_id, parent_id, assignee_unit_id, assignee_path, assignee_level, \
                 assigner_unit_id, dispatch_id, tier, status, assigned_at, due_at, updated_at, due_us, \
                 code_1, code_2, code_3, code_4) ",
            );
            q.push_values(chunk, |mut row, a| {
                row.push_bind(action_item_id)
                    .push_bind(parent_id)
                    .push_bind(a.unit_id)
                    .push_bind(&a.path)
                    .push_bind(&a.level)
                    .push_bind(assigner_unit_id)
                    .push_bind(dispatch_id)
                    .push_bind(&a.tier)
                    .push_bind(Status::Assigned.as_str())
                    .push_bind(now)
                    .push_bind(due_at)
                    .push_bind(now)
                    .push_bind(due_at.timestamp_micros());
                let codes = path_codes(&a.path);
                for n in 0..PATH_DEPTH {
                    row.push_bind(codes.get(n).copied().unwrap_or(""));
                }
            });
            q.push(" RETURNING id");
            q.build_query_scalar().fetch_all(conn).await.map_err(|e| {
                super::conflict_on_unique(e, || {
                    "a unit was given the same action item twice".into()
                })
            })?
        });
        ids.extend(batch);
    }
    // "Assigned" messages: one job per follow-up.
    let jobs: Vec<NewJob> = ids
        .iter()
        .map(|id| followup_message(*id, "followup_assigned", format!("followup.assigned:{id}")))
        .collect();
    Store::enqueue_tx(tx, &jobs).await
}

#[allow(clippy::too_many_arguments)]
async fn set_status(
    tx: &mut Tx,
    id: i64,
    parent_id: Option<i64>,
    action: Action,
    from: Status,
    to: Status,
    text: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let closed_at = to.is_final().then_some(now);
    let rows = with_tx!(&mut *tx, |conn| {
        sqlx::query("UPDATE followups SET status = $1, closed_at = $2, updated_at = $3 WHERE id = $4 AND status = $5")
            .bind(to.as_str())
            .bind(closed_at)
            .bind(now)
            .bind(id)
            .bind(from.as_str())
            .execute(conn)
            .await?
            .rows_affected()
    });
    if rows != 1 {
        return Err(StoreError::Conflict(format!(
            "follow-up {id} changed meanwhile; reload and try again"
        )));
    }
    // A child leaving or re-entering the open set moves its parent's count.
    let delta: i64 = match (from.is_final(), to.is_final()) {
        (false, true) => -1,
        (true, false) => 1,
        _ => 0,
    };
    if let (Some(parent), true) = (parent_id, delta != 0) {
        with_tx!(&mut *tx, |conn| {
            sqlx::query("UPDATE followups SET open_children = open_children + $1 WHERE id = $2")
                .bind(delta)
                .bind(parent)
                .execute(conn)
                .await?;
        });
    }
    insert_event(tx, id, action.as_str(), from, to, text, actor, now).await
}

#[allow(clippy::too_many_arguments)]
async fn insert_event(
    tx: &mut Tx,
    id: i64,
    action: &str,
    from: Status,
    to: Status,
    text: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO followup_events (followup_id, action, from_status, to_status, text, actor, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(action)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(text)
        .bind(actor)
        .bind(now)
        .execute(conn)
        .await?;
    });
    Ok(())
}

impl Store {
    /// Open follow-ups due by `until` that have had no reminder yet (overdue ones are the
    /// sweep's other business).
    pub async fn followups_due_for_reminder(
        &self,
        until: DateTime<Utc>,
    ) -> StoreResult<Vec<FollowupRecord>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "{FOLLOWUP_SELECT} WHERE f.status NOT IN ('verified', 'not_doing', 'cancelled') \
                 AND NOT f.reminded_before AND f.due_at <= $1 ORDER BY f.id"
            ))
            .bind(until)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Open follow-ups past due, with the last overdue period messages went out for.
    pub async fn overdue_followups(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<(FollowupRecord, i64)>> {
        let rows: Vec<FollowupRecord> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "{FOLLOWUP_SELECT} WHERE f.status NOT IN ('verified', 'not_doing', 'cancelled') AND f.due_at < $1 ORDER BY f.id"
            ))
            .bind(now)
            .fetch_all(pool)
            .await?
        });
        let periods: Vec<(i64, i64)> = with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT id, overdue_period FROM followups WHERE status NOT IN ('verified', 'not_doing', 'cancelled') AND due_at < $1",
            )
            .bind(now)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|f| {
                let last = periods
                    .iter()
                    .find(|(id, _)| *id == f.id)
                    .map_or(-1, |(_, p)| *p);
                (f, last)
            })
            .collect())
    }

    /// Records what a sweep sent: reminders and overdue periods, with their message jobs.
    pub async fn record_sweep(
        &self,
        reminded: &[i64],
        periods: &[(i64, i64)],
        jobs: &[NewJob],
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for id in reminded {
            with_tx!(&mut tx, |conn| {
                sqlx::query("UPDATE followups SET reminded_before = TRUE WHERE id = $1")
                    .bind(id)
                    .execute(conn)
                    .await?;
            });
        }
        for (id, period) in periods {
            with_tx!(&mut tx, |conn| {
                sqlx::query("UPDATE followups SET overdue_period = $1 WHERE id = $2 AND overdue_period < $1")
                    .bind(period)
                    .bind(id)
                    .execute(conn)
                    .await?;
            });
        }
        Store::enqueue_tx(&mut tx, jobs).await?;
        tx.commit().await
    }

    /// Where messages to a unit go: its mailbox, else its principal's (or anyone's) e-mail.
    pub async fn unit_address(&self, unit_id: i64) -> StoreResult<Option<(String, String)>> {
        let row: Option<(String, Option<String>, Option<String>)> = with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT u.name, u.mailbox, (SELECT p.email FROM people p WHERE p.unit_id = u.id AND p.email IS NOT NULL \
                 ORDER BY CASE WHEN ',' || p.roles || ',' LIKE '%,principal,%' THEN 0 ELSE 1 END, p.id LIMIT 1) \
                 FROM units u WHERE u.id = $1",
            )
            .bind(unit_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.and_then(|(name, mailbox, email)| mailbox.or(email).map(|a| (name, a))))
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttachmentRecord {
    pub id: i64,
    pub followup_id: i64,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
    #[serde(skip)]
    pub sha256: String,
    pub uploaded_by: String,
    pub uploaded_at: DateTime<Utc>,
}

const ATTACHMENT_COLUMNS: &str =
    "id, followup_id, file_name, content_type, size_bytes, sha256, uploaded_by, uploaded_at";

impl Store {
    pub async fn insert_attachment(
        &self,
        followup_id: i64,
        name: &str,
        content_type: &str,
        size: i64,
        sha256: &str,
        actor: &str,
    ) -> StoreResult<AttachmentRecord> {
        let mut tx = self.begin().await?;
        let record: AttachmentRecord = with_tx!(&mut tx, |conn| {
            sqlx::query_as(&format!(
                "INSERT INTO attachments (followup_id, file_name, content_type, size_bytes, sha256, uploaded_by, uploaded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ATTACHMENT_COLUMNS}"
            ))
            .bind(followup_id)
            .bind(name)
            .bind(content_type)
            .bind(size)
            .bind(sha256)
            .bind(actor)
            .bind(Utc::now())
            .fetch_one(conn)
            .await?
        });
        let entry = AuditEntry::new(
            actor,
            "followup.attachment",
            "followup",
            &followup_id.to_string(),
        )
        .after(&serde_json::json!({"attachment": record.id, "name": name, "size": size}));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub async fn attachments(&self, followup_id: i64) -> StoreResult<Vec<AttachmentRecord>> {
        Ok(with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE followup_id = $1 ORDER BY id"
            ))
            .bind(followup_id)
            .fetch_all(pool)
            .await?
        }))
    }

    pub async fn attachment(&self, id: i64) -> StoreResult<AttachmentRecord> {
        let row: Option<AttachmentRecord> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("attachment {id}")))
    }
}
