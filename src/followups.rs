//! Action items and follow-ups (督办): issuing, acting on, delegating, sweeping deadlines,
//! closure roll-ups. Every path checks which side the caller acts for.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::dispatch::parse_start;
use crate::domain::access::Principal;
use crate::domain::agenda::{Assignees, parse_template};
use crate::domain::followup::{
    Action, Closure, Side, Status, may_delegate, overdue_period, transition,
};
use crate::domain::org::Unit;
use crate::error::AppError;
use crate::store::{
    Assignee, FollowupRecord, Grouping, MeetingRecord, NewActionItem, RollupRow, Store,
    followup_message,
};

/// Who acts on a follow-up: a staff account, or an invitee through a personal link (enterprise
/// heads have no accounts).
pub enum Actor<'a> {
    Staff(&'a Principal),
    Unit { unit_id: i64, name: String },
}

impl Actor<'_> {
    pub fn name(&self) -> String {
        match self {
            Actor::Staff(p) => p.username.clone(),
            Actor::Unit { unit_id, name } => format!("unit:{unit_id}:{name}"),
        }
    }

    /// The sides this actor may act for: the assignee's own unit; the assigning unit or any
    /// account whose writable scope holds it.
    pub fn sides(&self, f: &FollowupRecord) -> Vec<Side> {
        let mut sides = Vec::new();
        match self {
            Actor::Staff(p) => {
                if p.unit_id == f.assignee_unit_id && p.role.may_write() {
                    sides.push(Side::Assignee);
                }
                if p.role.may_write() && p.can_read(&f.assigner_path) {
                    sides.push(Side::Assigner);
                }
            }
            Actor::Unit { unit_id, .. } => {
                if *unit_id == f.assignee_unit_id {
                    sides.push(Side::Assignee);
                }
            }
        }
        sides
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionItemInput {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// RFC 3339, a local `2026-12-14 18:00`, or a date `2026-12-14` (end of that day).
    pub due: String,
    /// `invited_units`, `tier:<tier id>`, or `chosen` with `units`.
    pub assign: String,
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default = "yes")]
    pub delegable: bool,
}

fn yes() -> bool {
    true
}

fn parse_due(text: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, AppError> {
    let text = text.trim();
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return parse_start(&format!("{date} 23:59"), tz);
    }
    parse_start(text, tz).map_err(|_| {
        AppError::invalid(format!(
            "due: cannot read {text:?}; write 2026-12-14 or 2026-12-14 18:00"
        ))
    })
}

/// The units an assignment names, within the meeting's dispatch.
async fn assignees(
    store: &Store,
    meeting: &MeetingRecord,
    assign: &Assignees,
    chosen: &[String],
) -> Result<Vec<Assignee>, AppError> {
    let to_assignee = |u: &Unit, tier: &str| Assignee {
        unit_id: u.id,
        path: u.path.clone(),
        level: u.level.as_str().into(),
        tier: tier.into(),
    };
    let mut out: Vec<Assignee> = Vec::new();
    match assign {
        Assignees::InvitedUnits => {
            let (invitations, _) = store
                .meeting_invitations(meeting.id, &meeting.host_unit_path, i64::MAX, 0)
                .await?;
            for i in invitations.iter().filter(|i| i.role != "host") {
                if !out.iter().any(|a| a.unit_id == i.unit_id) {
                    out.push(to_assignee(&store.unit(i.unit_id).await?, &meeting.tier));
                }
            }
        }
        Assignees::Tier(tier) => {
            for m in store.dispatch_meetings(meeting.dispatch_id).await? {
                if &m.tier == tier
                    && m.host_unit_path.starts_with(&meeting.host_unit_path)
                    && m.status != "cancelled"
                {
                    out.push(to_assignee(&store.unit(m.host_unit_id).await?, tier));
                }
            }
        }
        Assignees::Chosen => {
            for code in chosen {
                let unit = store
                    .unit_by_code(code.trim())
                    .await
                    .map_err(|_| AppError::invalid(format!("units: no unit {code:?}")))?;
                if !unit.path.starts_with(&meeting.host_unit_path)
                    || unit.path == meeting.host_unit_path
                {
                    return Err(AppError::invalid(format!(
                        "units: {} is not below {}",
                        unit.name, meeting.host_unit_name
                    )));
                }
                if !out.iter().any(|a| a.unit_id == unit.id) {
                    out.push(to_assignee(&unit, &meeting.tier));
                }
            }
        }
    }
    if out.is_empty() {
        return Err(AppError::invalid("assign: nobody to assign it to"));
    }
    Ok(out)
}

/// Records an action item of a meeting and assigns it. The caller must be able to run the
/// meeting (write access to its host unit).
pub async fn record_action_item(
    store: &Store,
    principal: &Principal,
    meeting_id: i64,
    input: &ActionItemInput,
    now: DateTime<Utc>,
) -> Result<(i64, usize), AppError> {
    let meeting = store.meeting(meeting_id).await?;
    principal.require_write(&meeting.host_unit_path, &meeting.host_unit_name)?;
    let title = input.title.trim();
    if title.is_empty() {
        return Err(AppError::invalid("title: must not be empty"));
    }
    let dispatch = store.dispatch(meeting.dispatch_id).await?;
    let tz: chrono_tz::Tz = dispatch
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Asia::Shanghai);
    let due = parse_due(&input.due, tz)?;
    if due <= now {
        return Err(AppError::invalid("due: must be in the future"));
    }
    let assign = match input.assign.trim() {
        "invited_units" => Assignees::InvitedUnits,
        "chosen" => Assignees::Chosen,
        other => match other.strip_prefix("tier:") {
            Some(t) => Assignees::Tier(t.trim().to_string()),
            None => {
                return Err(AppError::invalid(format!(
                    "assign: {other:?}; use invited_units, tier:<id> or chosen"
                )));
            }
        },
    };
    let list = assignees(store, &meeting, &assign, &input.units).await?;
    let item = NewActionItem {
        dispatch_id: Some(meeting.dispatch_id),
        meeting_id: Some(meeting.id),
        issuer_unit_id: meeting.host_unit_id,
        title: title.to_string(),
        description: input.description.trim().to_string(),
        due_at: due,
        delegable: input.delegable,
        assignees: list,
    };
    Ok(store
        .create_action_item(&item, &principal.username, now)
        .await?)
}

/// Issues the action items the meeting's template pre-fills, due that long after the meeting
/// ends. Returns (action items, follow-ups).
pub async fn prefill_action_items(
    store: &Store,
    principal: &Principal,
    meeting_id: i64,
    now: DateTime<Utc>,
) -> Result<(usize, usize), AppError> {
    let meeting = store.meeting(meeting_id).await?;
    principal.require_write(&meeting.host_unit_path, &meeting.host_unit_name)?;
    let source = store.dispatch_template_source(meeting.dispatch_id).await?;
    let template = parse_template("snapshot", &source)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
    if meeting.parent_id.is_some() {
        return Err(AppError::invalid(
            "the template's action items are issued from the first meeting of the dispatch",
        ));
    }
    let (mut items, mut followups) = (0, 0);
    for action in &template.actions {
        if matches!(action.assign, Assignees::Chosen) {
            continue; // the convener picks the units when issuing it by hand
        }
        let list = assignees(store, &meeting, &action.assign, &[]).await?;
        let item = NewActionItem {
            dispatch_id: Some(meeting.dispatch_id),
            meeting_id: Some(meeting.id),
            issuer_unit_id: meeting.host_unit_id,
            title: action.title.clone(),
            description: action.description.clone().unwrap_or_default(),
            due_at: meeting.planned_end + action.due.0,
            delegable: action.delegable,
            assignees: list,
        };
        let (_, n) = store
            .create_action_item(&item, &principal.username, now)
            .await?;
        items += 1;
        followups += n;
    }
    Ok((items, followups))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionInput {
    pub action: Action,
    #[serde(default)]
    pub text: String,
    /// Submit although delegated follow-ups below are still open (audited).
    #[serde(default)]
    pub override_children: bool,
}

/// Applies an action, if the actor may take it for its side.
pub async fn act(
    store: &Store,
    actor: &Actor<'_>,
    id: i64,
    input: &TransitionInput,
    now: DateTime<Utc>,
) -> Result<Status, AppError> {
    let f = store.followup(id).await?;
    let sides = actor.sides(&f);
    if sides.is_empty() {
        return Err(AppError::ForbiddenOther(format!(
            "this follow-up is assigned to {} by {}; you act for neither",
            f.assignee_name, f.assigner_name
        )));
    }
    let from = f.status()?;
    let needed = input.action.side();
    let side = if sides.contains(&needed) {
        needed
    } else {
        sides[0]
    };
    let to = transition(
        from,
        input.action,
        side,
        &input.text,
        f.open_children as usize,
        input.override_children,
    )
    .map_err(|e| match e {
        crate::domain::followup::TransitionError::WrongSide { .. } => {
            AppError::ForbiddenOther(e.to_string())
        }
        other => AppError::Conflict(other.to_string()),
    })?;
    let text = if input.override_children && input.action == Action::Submit && f.open_children > 0 {
        format!(
            "{}（{} 个下级事项未办结，强制报送）",
            input.text.trim(),
            f.open_children
        )
    } else {
        input.text.trim().to_string()
    };
    let mut jobs = Vec::new();
    if input.action == Action::Return {
        jobs.push(followup_message(
            id,
            "followup_returned",
            format!("followup.returned:{id}:{}", now.timestamp()),
        ));
    }
    store
        .apply_transition(&f, input.action, from, to, &text, &actor.name(), now, &jobs)
        .await?;
    Ok(to)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateInput {
    /// Codes of units below the assignee.
    pub units: Vec<String>,
    /// Defaults to the follow-up's own due date; never later.
    pub due: Option<String>,
    #[serde(default)]
    pub note: String,
}

/// Delegates a follow-up to units below its assignee (a city to its districts, a district to
/// its enterprises).
pub async fn delegate(
    store: &Store,
    actor: &Actor<'_>,
    id: i64,
    input: &DelegateInput,
    now: DateTime<Utc>,
) -> Result<usize, AppError> {
    let f = store.followup(id).await?;
    if !actor.sides(&f).contains(&Side::Assignee) {
        return Err(AppError::ForbiddenOther(format!(
            "only {} may delegate this follow-up",
            f.assignee_name
        )));
    }
    may_delegate(f.status()?, f.delegable).map_err(AppError::Conflict)?;
    let due = match &input.due {
        None => f.due_at,
        Some(text) => parse_due(text, chrono_tz::Asia::Shanghai)?,
    };
    if due > f.due_at {
        return Err(AppError::invalid(format!(
            "due: a delegated follow-up is due no later than its parent ({})",
            f.due_at
        )));
    }
    if input.units.is_empty() {
        return Err(AppError::invalid("units: name the units to delegate to"));
    }
    let mut children = Vec::new();
    for code in &input.units {
        let unit = store
            .unit_by_code(code.trim())
            .await
            .map_err(|_| AppError::invalid(format!("units: no unit {code:?}")))?;
        if !unit.path.starts_with(&f.assignee_path) || unit.path == f.assignee_path {
            return Err(AppError::invalid(format!(
                "units: {} is not below {}",
                unit.name, f.assignee_name
            )));
        }
        if !children.iter().any(|c: &Assignee| c.unit_id == unit.id) {
            children.push(Assignee {
                unit_id: unit.id,
                path: unit.path.clone(),
                level: unit.level.as_str().into(),
                tier: f.tier.clone(),
            });
        }
    }
    Ok(store
        .delegate_followup(&f, &children, due, input.note.trim(), &actor.name(), now)
        .await?)
}

/// Progress of a follow-up including everything delegated below it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    pub status: Status,
    pub below: Closure,
}

/// The roll-up of closure per region or tier, with the scope's own line; overdue first.
pub async fn rollup(
    store: &Store,
    principal: &Principal,
    grouping: Grouping,
    dispatch_id: Option<i64>,
    due_from: Option<DateTime<Utc>>,
    due_to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Vec<RollupLine>, AppError> {
    let rows = store
        .rollup(
            &principal.unit_path,
            grouping,
            dispatch_id,
            due_from,
            due_to,
            now,
        )
        .await?;
    let mut lines = Vec::new();
    for RollupRow { key, closure } in rows {
        let (unit_id, name) = match grouping {
            Grouping::Tier => (None, key.clone()),
            Grouping::Region if key.is_empty() => {
                (Some(principal.unit_id), principal.unit_name.clone())
            }
            Grouping::Region => match store.unit_by_code(&key).await {
                Ok(u) => (Some(u.id), u.name),
                Err(_) => (None, key.clone()),
            },
        };
        lines.push(RollupLine {
            key,
            unit_id,
            name,
            rate: closure.rate(),
            average_days_overdue: closure.average_days_overdue(),
            closure,
        });
    }
    lines.sort_by(|a, b| {
        b.closure
            .overdue
            .cmp(&a.closure.overdue)
            .then(a.name.cmp(&b.name))
    });
    Ok(lines)
}

#[derive(Debug, Clone, Serialize)]
pub struct RollupLine {
    pub key: String,
    pub unit_id: Option<i64>,
    pub name: String,
    #[serde(flatten)]
    pub closure: Closure,
    /// Percent closed of those that count.
    pub rate: Option<f64>,
    pub average_days_overdue: Option<f64>,
}

/// The periodic sweep: a reminder before the due date, and once per overdue period a reminder
/// to the assignee and an escalation to its superior unit and the assigning unit. Returns how
/// many messages were enqueued.
pub async fn sweep(
    store: &Store,
    remind_before: chrono::Duration,
    period: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<usize, AppError> {
    let due_soon = store
        .followups_due_for_reminder(now + remind_before)
        .await?;
    let mut jobs = Vec::new();
    for f in &due_soon {
        jobs.push(followup_message(
            f.id,
            "followup_reminder",
            format!("followup.reminder:{}", f.id),
        ));
    }
    let overdue = store.overdue_followups(now).await?;
    let mut periods = Vec::new();
    for (f, last) in &overdue {
        let Some(p) = overdue_period(f.due_at, now, period) else {
            continue;
        };
        if p <= *last {
            continue;
        }
        periods.push((f.id, p));
        jobs.push(followup_message(
            f.id,
            "followup_overdue",
            format!("followup.overdue:{}:{p}", f.id),
        ));
        jobs.push(followup_message(
            f.id,
            "followup_escalation",
            format!("followup.escalation:{}:{p}", f.id),
        ));
    }
    let reminded: Vec<i64> = due_soon.iter().map(|f| f.id).collect();
    store.record_sweep(&reminded, &periods, &jobs).await?;
    Ok(jobs.len())
}

/// The `followups.sweep` job: sweeps, then enqueues the next sweep one interval later.
pub fn sweep_handler(
    store: Store,
    clock: std::sync::Arc<dyn crate::jobs::Clock>,
    config: crate::config::FollowupsConfig,
) -> crate::jobs::Handler {
    std::sync::Arc::new(move |_payload| {
        let (store, clock, config) = (store.clone(), clock.clone(), config.clone());
        Box::pin(async move {
            let now = clock.now();
            let hours = |h: u32| chrono::Duration::hours(i64::from(h));
            sweep(
                &store,
                hours(config.remind_before_hours),
                hours(config.overdue_period_hours),
                now,
            )
            .await
            .map_err(|e| crate::jobs::JobFailure::Retry(e.to_string()))?;
            store.enqueue(&[next_sweep(&config, now)]).await?;
            Ok(())
        })
    })
}

/// The sweep job for the interval after `now` (deduplicated per interval, so instances share it).
pub fn next_sweep(
    config: &crate::config::FollowupsConfig,
    now: DateTime<Utc>,
) -> crate::store::NewJob {
    let every = i64::from(config.sweep_minutes) * 60;
    let slot = now.timestamp() / every + 1;
    crate::store::NewJob {
        kind: "followups.sweep".into(),
        payload: serde_json::json!({"slot": slot}),
        run_at: DateTime::from_timestamp(slot * every, 0).unwrap_or(now),
        dedupe_key: Some(format!("followups.sweep:{slot}")),
    }
}
