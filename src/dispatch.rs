//! The dispatch lifecycle: preview a plan, publish it, reschedule, cancel. Glue between the
//! pure cascade rules (`domain`) and the store; every path checks the caller's scope.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::config::LiveKitConfig;
use crate::domain::access::Principal;
use crate::domain::agenda::{AgendaTemplate, TemplateSet, parse_template};
use crate::domain::cascade::{Directory, Plan, PlanError, PlanRequest, plan};
use crate::domain::meeting::{MeetingStatus, MeetingTimes, move_meeting, subtree};
use crate::error::AppError;
use crate::store::JobSchedule;
use crate::store::{
    AuditEntry, DispatchRecord, MeetingRecord, PublishDispatch, RsvpCounts, Store, StoreError,
};

/// What a convener asks for: a template, a root unit (id or code), a start, and for templates
/// that need them the chosen units (ids or codes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchInput {
    pub template: String,
    pub root_unit: String,
    /// RFC 3339, or a local time `2026-12-05 09:00` read in the template's time zone.
    pub start: String,
    #[serde(default)]
    pub chosen_units: Vec<String>,
}

/// Parses a start time; local times are read in `tz`.
pub fn parse_start(text: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, AppError> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, format) {
            return tz
                .from_local_datetime(&local)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| AppError::invalid(format!("start: {text} does not exist in {tz}")));
        }
    }
    Err(AppError::invalid(format!(
        "start: cannot read {text:?}; write 2026-12-05 09:00 (local time) or 2026-12-05T09:00:00+08:00"
    )))
}

async fn resolve_unit(
    store: &Store,
    reference: &str,
) -> Result<crate::domain::org::Unit, AppError> {
    let reference = reference.trim();
    let by_code = store.unit_by_code(reference).await;
    match (by_code, reference.parse::<i64>()) {
        (Ok(unit), _) => Ok(unit),
        (Err(StoreError::NotFound(_)), Ok(id)) => store.unit(id).await.map_err(|e| match e {
            StoreError::NotFound(_) => {
                AppError::invalid(format!("no unit with code or id {reference:?}"))
            }
            other => other.into(),
        }),
        (Err(StoreError::NotFound(_)), Err(_)) => Err(AppError::invalid(format!(
            "no unit with code or id {reference:?}"
        ))),
        (Err(e), _) => Err(e.into()),
    }
}

/// A checked request, ready to plan.
pub struct Prepared<'a> {
    pub template: &'a AgendaTemplate,
    pub root: crate::domain::org::Unit,
    pub start: DateTime<Utc>,
    pub chosen: Vec<i64>,
}

pub async fn prepare<'a>(
    store: &Store,
    templates: &'a TemplateSet,
    principal: &Principal,
    input: &DispatchInput,
    now: DateTime<Utc>,
) -> Result<Prepared<'a>, AppError> {
    let template = templates.get(input.template.trim()).ok_or_else(|| {
        let mut ids: Vec<&str> = templates.ids().into_iter().collect();
        ids.sort();
        AppError::invalid(format!(
            "template: no template {:?}; known: {}",
            input.template,
            ids.join(", ")
        ))
    })?;
    let root = resolve_unit(store, &input.root_unit).await?;
    principal.require_write(&root.path, &root.name)?;
    let start = parse_start(&input.start, template.timezone)?;
    if start <= now {
        return Err(AppError::invalid(format!(
            "start: {} is in the past",
            input.start.trim()
        )));
    }
    let mut chosen = Vec::new();
    for reference in &input.chosen_units {
        chosen.push(resolve_unit(store, reference).await?.id);
    }
    Ok(Prepared {
        template,
        root,
        start,
        chosen,
    })
}

/// Plans against the current directory.
pub async fn build_plan(
    store: &Store,
    prepared: &Prepared<'_>,
) -> Result<(Plan, Directory), AppError> {
    let (units, people) = store.directory_snapshot().await?;
    let dir = Directory::new(units, people);
    let request = PlanRequest {
        template: prepared.template,
        root_unit_id: prepared.root.id,
        start: prepared.start,
        chosen: &prepared.chosen,
    };
    let plan = plan(&request, &dir).map_err(|e: PlanError| AppError::invalid(e.to_string()))?;
    Ok((plan, dir))
}

/// A plan as shown before publishing: the meeting tree with counts, what was skipped and why,
/// double-bookings and warnings.
#[derive(Debug, Serialize)]
pub struct PlanPreview {
    pub template: String,
    pub title: String,
    pub root_unit: String,
    pub timezone: String,
    pub starts_at: DateTime<Utc>,
    pub meeting_count: usize,
    pub invitation_count: usize,
    pub meetings: Vec<PreviewMeeting>,
    pub skipped: Vec<crate::domain::cascade::SkippedUnit>,
    pub double_bookings: Vec<crate::domain::cascade::DoubleBooking>,
    pub warning_count: usize,
    /// The first warnings (all of them are counted in `warning_count`).
    pub warnings: Vec<crate::domain::cascade::PlanWarning>,
}

#[derive(Debug, Serialize)]
pub struct PreviewMeeting {
    pub index: usize,
    pub parent: Option<usize>,
    pub tier: String,
    pub host_unit: String,
    pub title: String,
    pub joins_parent: bool,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Start in the template's time zone, for people.
    pub local_start: String,
    pub invitations: usize,
    pub units: usize,
}

const PREVIEW_WARNINGS: usize = 200;

pub fn preview(plan: &Plan, dir: &Directory) -> PlanPreview {
    let name = |id: i64| {
        dir.unit(id)
            .map_or_else(|| id.to_string(), |u| u.name.clone())
    };
    let meetings = plan
        .meetings
        .iter()
        .enumerate()
        .map(|(index, m)| {
            let mut units: Vec<i64> = m.invitations.iter().map(|i| i.unit_id).collect();
            units.sort_unstable();
            units.dedup();
            PreviewMeeting {
                index,
                parent: m.parent,
                tier: m.tier_id.clone(),
                host_unit: name(m.host_unit_id),
                title: m.title.clone(),
                joins_parent: m.joins_parent,
                starts_at: m.starts_at,
                ends_at: m.ends_at,
                local_start: m
                    .starts_at
                    .with_timezone(&plan.timezone)
                    .format("%Y-%m-%d %H:%M")
                    .to_string(),
                invitations: m.invitations.len(),
                units: units.len(),
            }
        })
        .collect();
    PlanPreview {
        template: plan.template_id.clone(),
        title: plan.title.clone(),
        root_unit: name(plan.root_unit_id),
        timezone: plan.timezone.name().to_string(),
        starts_at: plan.meetings.first().map_or_else(Utc::now, |m| m.starts_at),
        meeting_count: plan.meetings.len(),
        invitation_count: plan.invitation_count(),
        meetings,
        skipped: plan.skipped.clone(),
        double_bookings: plan.double_bookings.clone(),
        warning_count: plan.warnings.len(),
        warnings: plan
            .warnings
            .iter()
            .take(PREVIEW_WARNINGS)
            .cloned()
            .collect(),
    }
}

/// Plans and publishes in one go: the directory as it is now, written in one transaction.
pub async fn publish(
    store: &Store,
    templates: &TemplateSet,
    livekit: &LiveKitConfig,
    principal: &Principal,
    input: &DispatchInput,
    now: DateTime<Utc>,
) -> Result<(i64, PlanPreview), AppError> {
    let prepared = prepare(store, templates, principal, input, now).await?;
    let (plan, dir) = build_plan(store, &prepared).await?;
    if plan.meetings.is_empty() {
        return Err(AppError::invalid(
            "the plan has no meetings: nobody to invite",
        ));
    }
    let id = store
        .publish_dispatch(&PublishDispatch {
            plan: &plan,
            schedule: &job_schedule(prepared.template, livekit),
            planned_start: prepared.start,
            template_source: &prepared.template.source,
            chosen: &prepared.chosen,
            actor: &principal.username,
        })
        .await?;
    Ok((id, preview(&plan, &dir)))
}

/// When a dispatch's timed jobs run: the template's reminders, the configured room timing.
pub fn job_schedule(template: &AgendaTemplate, livekit: &LiveKitConfig) -> JobSchedule {
    JobSchedule {
        reminder_minutes: template.reminders.iter().map(|r| r.minutes()).collect(),
        room_lead_minutes: i64::from(livekit.room_lead_minutes),
        room_grace_minutes: i64::from(livekit.grace_minutes),
    }
}

/// A meeting with its RSVP counts, as the dispatch tree shows it.
#[derive(Debug, Serialize)]
pub struct MeetingNode {
    #[serde(flatten)]
    pub meeting: MeetingRecord,
    pub rsvp: RsvpCounts,
}

#[derive(Debug, Serialize)]
pub struct DispatchView {
    #[serde(flatten)]
    pub dispatch: DispatchRecord,
    /// Skipped units, double-bookings and warnings recorded when it was planned.
    pub plan_report: serde_json::Value,
    /// Whether the caller sees the whole dispatch or only the meetings of its scope.
    pub complete: bool,
    pub meetings: Vec<MeetingNode>,
}

/// The dispatch and the meetings of it the caller may see.
pub async fn view(store: &Store, principal: &Principal, id: i64) -> Result<DispatchView, AppError> {
    let dispatch = store.dispatch(id).await?;
    let meetings = store.dispatch_meetings(id).await?;
    let counts = store.rsvp_counts(id, &principal.unit_path).await?;
    let complete = principal.can_read(&dispatch.root_unit_path);
    let mut nodes = Vec::new();
    for meeting in meetings {
        let rsvp = counts
            .iter()
            .find(|(m, _)| *m == meeting.id)
            .map(|(_, c)| c.clone());
        if complete || principal.can_read(&meeting.host_unit_path) || rsvp.is_some() {
            nodes.push(MeetingNode {
                meeting,
                rsvp: rsvp.unwrap_or_default(),
            });
        }
    }
    if nodes.is_empty() {
        return Err(AppError::Forbidden(
            crate::domain::access::Denied::OutsideScope {
                unit: format!("dispatch {id}"),
                scope: principal.unit_name.clone(),
            },
        ));
    }
    let plan_report = if complete {
        serde_json::from_str(&dispatch.plan_report).unwrap_or(serde_json::Value::Null)
    } else {
        serde_json::Value::Null
    };
    Ok(DispatchView {
        dispatch,
        plan_report,
        complete,
        meetings: nodes,
    })
}

/// Whether the caller may see a meeting, and then which part of its invitations: the whole
/// meeting (root or host in scope) or only its own units' invitations.
pub async fn meeting_scope(
    store: &Store,
    principal: &Principal,
    meeting: &MeetingRecord,
) -> Result<String, AppError> {
    let dispatch = store.dispatch(meeting.dispatch_id).await?;
    if principal.can_read(&dispatch.root_unit_path) || principal.can_read(&meeting.host_unit_path) {
        return Ok(meeting.host_unit_path.clone());
    }
    if store
        .meeting_invites_scope(meeting.id, &principal.unit_path)
        .await?
    {
        return Ok(principal.unit_path.clone());
    }
    Err(AppError::Forbidden(
        crate::domain::access::Denied::OutsideScope {
            unit: meeting.title.clone(),
            scope: principal.unit_name.clone(),
        },
    ))
}

async fn template_of(store: &Store, dispatch: &DispatchRecord) -> Result<AgendaTemplate, AppError> {
    let source = store.dispatch_template_source(dispatch.id).await?;
    parse_template(&format!("dispatch {} snapshot", dispatch.id), &source).map_err(|e| {
        AppError::Internal(anyhow::anyhow!(
            "stored template of dispatch {} is invalid: {e}",
            dispatch.id
        ))
    })
}

fn require_open(dispatch: &DispatchRecord) -> Result<(), AppError> {
    match dispatch.status.as_str() {
        "cancelled" | "finished" => Err(AppError::Conflict(format!(
            "dispatch {} is {}",
            dispatch.id, dispatch.status
        ))),
        _ => Ok(()),
    }
}

/// Moves a meeting (the root meeting moves the whole dispatch); dependent meetings follow.
/// Returns how many meetings moved.
pub async fn reschedule_meeting(
    store: &Store,
    livekit: &LiveKitConfig,
    principal: &Principal,
    meeting_id: i64,
    new_start: &str,
    now: DateTime<Utc>,
) -> Result<usize, AppError> {
    let meeting = store.meeting(meeting_id).await?;
    principal.require_write(&meeting.host_unit_path, &meeting.host_unit_name)?;
    let dispatch = store.dispatch(meeting.dispatch_id).await?;
    require_open(&dispatch)?;
    let template = template_of(store, &dispatch).await?;
    let start = parse_start(new_start, template.timezone)?;
    let times: Vec<MeetingTimes> = store
        .dispatch_meetings(dispatch.id)
        .await?
        .iter()
        .map(MeetingRecord::times)
        .collect::<Result<_, _>>()?;
    let moved = move_meeting(
        &template,
        &times,
        dispatch.planned_start,
        meeting_id,
        start,
        now,
    )
    .map_err(|e| AppError::invalid(e.to_string()))?;
    let is_root = meeting.parent_id.is_none();
    let entry = AuditEntry::new(
        &principal.username,
        "meeting.rescheduled",
        "meeting",
        &meeting_id.to_string(),
    )
    .before(&serde_json::json!({"planned_start": meeting.planned_start}))
    .after(&serde_json::json!({"planned_start": start, "moved": moved}));
    store
        .reschedule(
            dispatch.id,
            &moved,
            is_root.then_some(start),
            &job_schedule(&template, livekit),
            entry,
        )
        .await?;
    Ok(moved.len())
}

/// Moves a whole dispatch: its root meeting to `new_start`.
pub async fn reschedule_dispatch(
    store: &Store,
    livekit: &LiveKitConfig,
    principal: &Principal,
    dispatch_id: i64,
    new_start: &str,
    now: DateTime<Utc>,
) -> Result<usize, AppError> {
    let root = store
        .dispatch_meetings(dispatch_id)
        .await?
        .into_iter()
        .find(|m| m.parent_id.is_none())
        .ok_or_else(|| AppError::NotFound(format!("dispatch {dispatch_id}")))?;
    reschedule_meeting(store, livekit, principal, root.id, new_start, now).await
}

/// Cancels a meeting and everything under it; cancelling the root meeting cancels the
/// dispatch. Returns how many meetings were cancelled.
pub async fn cancel_meeting(
    store: &Store,
    principal: &Principal,
    meeting_id: i64,
    reason: &str,
) -> Result<usize, AppError> {
    let meeting = store.meeting(meeting_id).await?;
    principal.require_write(&meeting.host_unit_path, &meeting.host_unit_name)?;
    let dispatch = store.dispatch(meeting.dispatch_id).await?;
    require_open(&dispatch)?;
    if meeting.status()? != MeetingStatus::Scheduled {
        return Err(AppError::Conflict(format!(
            "meeting {meeting_id} is {}; only scheduled meetings can be cancelled",
            meeting.status
        )));
    }
    let times: Vec<MeetingTimes> = store
        .dispatch_meetings(dispatch.id)
        .await?
        .iter()
        .map(MeetingRecord::times)
        .collect::<Result<_, _>>()?;
    let ids = subtree(&times, meeting_id);
    let is_root = meeting.parent_id.is_none();
    let entry = AuditEntry::new(
        &principal.username,
        if is_root {
            "dispatch.cancelled"
        } else {
            "meeting.cancelled"
        },
        "meeting",
        &meeting_id.to_string(),
    )
    .after(&serde_json::json!({"reason": reason, "meetings": ids}));
    let cancelled = store
        .cancel_meetings(dispatch.id, &ids, reason, is_root, entry)
        .await?;
    Ok(cancelled)
}

pub async fn cancel_dispatch(
    store: &Store,
    principal: &Principal,
    dispatch_id: i64,
    reason: &str,
) -> Result<usize, AppError> {
    let root = store
        .dispatch_meetings(dispatch_id)
        .await?
        .into_iter()
        .find(|m| m.parent_id.is_none())
        .ok_or_else(|| AppError::NotFound(format!("dispatch {dispatch_id}")))?;
    cancel_meeting(store, principal, root.id, reason).await
}
