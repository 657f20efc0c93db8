//! The staff pages: conveners (dispatches, meetings), bureaus (confirmations, the meetings they
//! convene, follow-ups) and leaders (closure and attendance). Each handler checks scope
//! through the same services as the API, then renders.

use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{Datelike, Duration, Utc};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{Staff, private, urlencode};
use crate::dispatch::{self, DispatchInput};
use crate::domain::access::StaffRole;
use crate::domain::agenda::parse_template;
use crate::domain::followup::{Action, Closure, Status, may_delegate, transition};
use crate::domain::report::{AttendanceStatus, Rate};
use crate::error::{AppError, AppResult};
use crate::followups::{ActionItemInput, Actor, DelegateInput, TransitionInput};
use crate::http::AppState;
use crate::http::followups::{self as api_followups, thresholds};
use crate::store::{FollowupFilter, UnitFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dispatches", get(dispatches))
        .route("/dispatches/new", get(new_dispatch).post(plan_or_publish))
        .route("/dispatches/{id}", get(dispatch_page))
        .route("/dispatches/{id}/remind", post(remind))
        .route("/dispatches/{id}/reschedule", post(reschedule_dispatch))
        .route("/dispatches/{id}/cancel", post(cancel_dispatch))
        .route("/meetings/{id}/reschedule", post(reschedule_meeting))
        .route("/meetings/{id}/cancel", post(cancel_meeting))
        .route("/meetings/{id}", get(meeting_page))
        .route("/meetings/{id}/end", post(end_meeting))
        .route("/meetings/{id}/roll-calls", post(start_roll_call))
        .route("/meetings/{id}/action-items", post(record_action_item))
        .route("/roll-calls/{id}", get(roll_call_page))
        .route("/confirmations", get(confirmations))
        .route("/invitations/{id}/confirm", post(confirm))
        .route("/confirmations/all", post(confirm_all))
        .route("/follow-ups", get(followups_page))
        .route("/follow-ups/{id}", get(followup_page))
        .route("/follow-ups/{id}/act", post(act))
        .route("/follow-ups/{id}/delegate", post(delegate))
        .route("/follow-ups/{id}/attachments", post(upload))
        .route("/closure", get(closure))
}

/// `?done=…` after a form: the page says what just happened.
#[derive(Deserialize, Default)]
struct Done {
    done: Option<String>,
}

fn done_key(done: &Done) -> Option<String> {
    done.done
        .as_deref()
        .filter(|d| d.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|d| format!("done.{d}"))
}

fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}

// ---- home ----

pub async fn home(State(state): State<AppState>, staff: Staff) -> AppResult<Response> {
    let me = &staff.me;
    let dispatches = state.store.list_dispatches(&me.unit_path, 8, 0).await?;
    let (pending, hosted, mine) = if me.role.may_write() {
        let invitations = state.store.invitations_to_confirm(&me.unit_path).await?;
        let pending = invitations.iter().filter(|i| i.rsvp == "pending").count();
        let hosted = state.store.hosted_meetings(&me.unit_path).await?;
        let mine: Vec<_> = api_followups::own_followups(&state, me.unit_id, &me.unit_path)
            .await?
            .into_iter()
            .filter(|v| v.followup.status().is_ok_and(|s| !s.is_final()))
            .collect();
        (pending, hosted, mine)
    } else {
        (0, Vec::new(), Vec::new())
    };
    let lines = api_followups::rollup_lines(&state, me, None, &None, None, None, None).await?;
    let mut total = Closure::default();
    for l in &lines {
        total.add(&l.closure);
    }
    let html = staff.render(
        "home.html",
        context! {
            dispatches,
            pending,
            hosted => hosted.into_iter().take(10).collect::<Vec<_>>(),
            mine,
            closure => context! {
                total => total.total,
                closed => total.closed,
                overdue => total.overdue,
                rate => total.rate(),
            },
            may_convene => matches!(me.role, StaffRole::Convener | StaffRole::Admin),
        },
    )?;
    Ok(private(html.into_response()))
}

// ---- dispatches ----

#[derive(Deserialize)]
struct Paging {
    offset: Option<i64>,
}

async fn dispatches(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<Paging>,
) -> AppResult<Response> {
    let offset = q.offset.unwrap_or(0).max(0);
    let rows = state
        .store
        .list_dispatches(&staff.me.unit_path, 51, offset)
        .await?;
    let more = rows.len() > 50;
    let html = staff.render(
        "dispatches.html",
        context! {
            dispatches => rows.into_iter().take(50).collect::<Vec<_>>(),
            offset,
            next => more.then_some(offset + 50),
            may_convene => matches!(staff.me.role, StaffRole::Convener | StaffRole::Admin),
        },
    )?;
    Ok(private(html.into_response()))
}

#[derive(Serialize)]
struct TemplateChoice {
    id: String,
    title: String,
    sector: Option<String>,
    description: Option<String>,
}

fn template_choices(state: &AppState) -> Vec<TemplateChoice> {
    let mut out: Vec<TemplateChoice> = state
        .templates
        .templates
        .iter()
        .map(|t| TemplateChoice {
            id: t.id.clone(),
            title: t.title.clone(),
            sector: t.sector.map(|s| s.as_str().to_string()),
            description: t.description.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[derive(Deserialize, Serialize, Default)]
struct DispatchForm {
    #[serde(default)]
    template: String,
    #[serde(default)]
    root_unit: String,
    #[serde(default)]
    start: String,
    /// Unit codes, separated by spaces, commas or new lines.
    #[serde(default)]
    chosen_units: String,
    /// `preview` or `publish`.
    #[serde(default)]
    intent: String,
}

async fn new_dispatch(State(state): State<AppState>, staff: Staff) -> AppResult<Response> {
    require_convener(&staff)?;
    let unit = state.store.unit(staff.me.unit_id).await?;
    let tomorrow = Utc::now().with_timezone(&state.config.timezone) + Duration::days(1);
    let form = DispatchForm {
        template: String::new(),
        root_unit: unit.code,
        start: format!(
            "{:04}-{:02}-{:02} 09:00",
            tomorrow.year(),
            tomorrow.month(),
            tomorrow.day()
        ),
        ..Default::default()
    };
    render_new(&state, &staff, &form, None, None)
}

fn require_convener(staff: &Staff) -> AppResult<()> {
    if matches!(staff.me.role, StaffRole::Convener | StaffRole::Admin) {
        Ok(())
    } else {
        Err(AppError::Forbidden(crate::domain::access::Denied::Role {
            needed: StaffRole::Convener,
            has: staff.me.role,
        }))
    }
}

fn render_new(
    state: &AppState,
    staff: &Staff,
    form: &DispatchForm,
    preview: Option<&dispatch::PlanPreview>,
    error: Option<String>,
) -> AppResult<Response> {
    // The tree as nested levels: each meeting's depth from its parent chain.
    let tree: Vec<minijinja::Value> = preview
        .map(|p| {
            p.meetings
                .iter()
                .take(PREVIEW_MEETINGS)
                .map(|m| {
                    let mut depth = 0;
                    let mut parent = m.parent;
                    while let Some(i) = parent {
                        depth += 1;
                        parent = p.meetings.get(i).and_then(|pm| pm.parent);
                    }
                    context! { depth, ..minijinja::Value::from_serialize(m) }
                })
                .collect()
        })
        .unwrap_or_default();
    let status = if error.is_some() {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        axum::http::StatusCode::OK
    };
    let html = staff.render(
        "dispatch_new.html",
        context! {
            templates => template_choices(state),
            form,
            preview,
            tree,
            hidden_meetings => preview.map_or(0, |p| p.meetings.len().saturating_sub(PREVIEW_MEETINGS)),
            error,
        },
    )?;
    Ok(private((status, html).into_response()))
}

const PREVIEW_MEETINGS: usize = 400;

fn codes(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '，' || c == '、')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Preview (nothing stored) or publish, from the same form; errors are shown on the form.
async fn plan_or_publish(
    State(state): State<AppState>,
    staff: Staff,
    Form(form): Form<DispatchForm>,
) -> AppResult<Response> {
    require_convener(&staff)?;
    let input = DispatchInput {
        template: form.template.clone(),
        root_unit: form.root_unit.clone(),
        start: form.start.clone(),
        chosen_units: codes(&form.chosen_units),
    };
    let now = Utc::now();
    if form.intent == "publish" {
        return match dispatch::publish(
            &state.store,
            &state.templates,
            &state.config.livekit,
            &staff.me,
            &input,
            now,
        )
        .await
        {
            Ok((id, _)) => Ok(see_other(&format!("/dispatches/{id}?done=published"))),
            Err(e @ (AppError::Invalid { .. } | AppError::Conflict(_))) => {
                render_new(&state, &staff, &form, None, Some(e.to_string()))
            }
            Err(e) => Err(e),
        };
    }
    let planned = async {
        let prepared =
            dispatch::prepare(&state.store, &state.templates, &staff.me, &input, now).await?;
        let (plan, dir) = dispatch::build_plan(&state.store, &prepared).await?;
        Ok::<_, AppError>(dispatch::preview(&plan, &dir))
    }
    .await;
    match planned {
        Ok(preview) => render_new(&state, &staff, &form, Some(&preview), None),
        Err(e @ AppError::Invalid { .. }) => {
            render_new(&state, &staff, &form, None, Some(e.to_string()))
        }
        Err(e) => Err(e),
    }
}

/// Attended share of a finished meeting's report rows (hosts left out), in percent.
fn attendance_rate(rows: &[crate::store::ResultRow]) -> Option<f64> {
    let mut rate = Rate::default();
    for r in rows.iter().filter(|r| r.role != "host") {
        if let Ok(status) =
            serde_json::from_value::<AttendanceStatus>(serde_json::Value::String(r.status.clone()))
        {
            rate.count(status);
        }
    }
    rate.rate()
}

async fn dispatch_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> AppResult<Response> {
    let view = dispatch::view(&state.store, &staff.me, id).await?;
    let now = Utc::now();
    let closure = state
        .store
        .closure_by_meeting(id, &staff.me.unit_path, now)
        .await?;
    let mut meetings = Vec::new();
    for node in &view.meetings {
        let m = &node.meeting;
        let attendance = match m.status.as_str() {
            "finished" => attendance_rate(&state.store.report(m.id, &staff.me.unit_path).await?),
            "live" => {
                let scope = dispatch::meeting_scope(&state.store, &staff.me, m).await?;
                let board = crate::board::board(&state.store, m, &scope).await?;
                (board.expected_units > 0)
                    .then(|| board.present_units as f64 * 100.0 / board.expected_units as f64)
            }
            _ => None,
        };
        let c = closure
            .iter()
            .find(|(mid, _)| *mid == m.id)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let depth = depth_of(&view.meetings, m.parent_id);
        meetings.push(context! {
            depth,
            attendance,
            closure_rate => c.rate(),
            followups => c.total,
            overdue => c.overdue,
            confirmed => node.rsvp.confirmed + node.rsvp.delegated,
            ..minijinja::Value::from_serialize(node)
        });
    }
    let html = staff.render(
        "dispatch.html",
        context! {
            dispatch => view.dispatch,
            plan_report => view.plan_report,
            complete => view.complete,
            meetings,
            done => done_key(&done),
        },
    )?;
    Ok(private(html.into_response()))
}

fn depth_of(nodes: &[dispatch::MeetingNode], mut parent: Option<i64>) -> usize {
    let mut depth = 0;
    while let Some(p) = parent {
        depth += 1;
        parent = nodes
            .iter()
            .find(|n| n.meeting.id == p)
            .and_then(|n| n.meeting.parent_id);
        if depth > 16 {
            break;
        }
    }
    depth
}

async fn remind(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let n = crate::http::attendance::remind_pending(&state, &staff.me, id).await?;
    Ok(see_other(&format!("/dispatches/{id}?done=reminded&n={n}")))
}

#[derive(Deserialize)]
struct StartForm {
    start: String,
}

#[derive(Deserialize)]
struct CancelForm {
    #[serde(default)]
    reason: String,
}

/// Moves the whole dispatch; dependent meetings follow, invitees get updated invitations.
async fn reschedule_dispatch(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Form(form): Form<StartForm>,
) -> AppResult<Response> {
    let n = dispatch::reschedule_dispatch(
        &state.store,
        &state.config.livekit,
        &staff.me,
        id,
        &form.start,
        Utc::now(),
    )
    .await?;
    Ok(see_other(&format!(
        "/dispatches/{id}?done=rescheduled&n={n}"
    )))
}

async fn cancel_dispatch(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Form(form): Form<CancelForm>,
) -> AppResult<Response> {
    let n = dispatch::cancel_dispatch(&state.store, &staff.me, id, form.reason.trim()).await?;
    Ok(see_other(&format!("/dispatches/{id}?done=cancelled&n={n}")))
}

/// A host moves its own meeting (within its tier's window); meetings below follow.
async fn reschedule_meeting(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Form(form): Form<StartForm>,
) -> AppResult<Response> {
    let n = dispatch::reschedule_meeting(
        &state.store,
        &state.config.livekit,
        &staff.me,
        id,
        &form.start,
        Utc::now(),
    )
    .await?;
    Ok(see_other(&format!("/meetings/{id}?done=rescheduled&n={n}")))
}

async fn cancel_meeting(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Form(form): Form<CancelForm>,
) -> AppResult<Response> {
    let n = dispatch::cancel_meeting(&state.store, &staff.me, id, form.reason.trim()).await?;
    Ok(see_other(&format!("/meetings/{id}?done=cancelled&n={n}")))
}

// ---- meetings ----

async fn meeting_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> AppResult<Response> {
    let meeting = state.store.meeting(id).await?;
    let scope = dispatch::meeting_scope(&state.store, &staff.me, &meeting).await?;
    let dispatch_record = state.store.dispatch(meeting.dispatch_id).await?;
    let source = state
        .store
        .dispatch_template_source(meeting.dispatch_id)
        .await?;
    let template = parse_template("snapshot", &source).ok();
    let tier = usize::try_from(meeting.tier_index).unwrap_or(usize::MAX);
    let agenda: Vec<_> = template
        .as_ref()
        .map(|t| {
            t.agenda
                .iter()
                .filter(|a| a.tier == tier)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let tiers: Vec<String> = template
        .as_ref()
        .map(|t| t.tiers.iter().skip(tier).map(|t| t.id.clone()).collect())
        .unwrap_or_default();
    let hosts = staff
        .me
        .require_write(&meeting.host_unit_path, &meeting.host_unit_name)
        .is_ok()
        && !meeting.joins_parent;
    let (invitations, total) = state
        .store
        .meeting_invitations(id, &scope, crate::store::PAGE_ROWS, 0)
        .await?;
    // Which invitations this account may answer for (its own units, while scheduled).
    let answerable: Vec<i64> = if staff.me.role.may_write() && meeting.status == "scheduled" {
        state
            .store
            .meeting_invitations(id, &staff.me.unit_path, crate::store::PAGE_ROWS, 0)
            .await?
            .0
            .into_iter()
            .filter(|i| i.role != "host")
            .map(|i| i.id)
            .collect()
    } else {
        Vec::new()
    };
    let board = if meeting.joins_parent {
        None
    } else {
        Some(crate::board::board(&state.store, &meeting, &scope).await?)
    };
    let roll_call = state
        .store
        .open_roll_call(&meeting.room_name, Utc::now())
        .await?;
    let report = if meeting.status == "finished" {
        let rows = state.store.report(id, &scope).await?;
        if rows.is_empty() {
            None
        } else {
            Some(crate::reports::summarise(&state.store, &rows, &meeting.host_unit_path).await?)
        }
    } else {
        None
    };
    let closure = state
        .store
        .closure_by_meeting(meeting.dispatch_id, &staff.me.unit_path, Utc::now())
        .await?
        .into_iter()
        .find(|(m, _)| *m == id)
        .map(|(_, c)| c);
    let html = staff.render(
        "meeting.html",
        context! {
            meeting,
            timezone => dispatch_record.timezone,
            dispatch_title => dispatch_record.title,
            agenda,
            tiers,
            hosts,
            invitations,
            invitation_total => total,
            answerable,
            board,
            roll_call,
            report,
            closure => closure.map(|c| context! { total => c.total, closed => c.closed, overdue => c.overdue, rate => c.rate() }),
            done => done_key(&done),
        },
    )?;
    Ok(private(html.into_response()))
}

async fn end_meeting(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    crate::http::meetings::end_meeting(&state, &staff.me, id).await?;
    Ok(see_other(&format!("/meetings/{id}?done=ended")))
}

#[derive(Deserialize)]
struct RollCallForm {
    seconds: i64,
}

async fn start_roll_call(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Form(form): Form<RollCallForm>,
) -> AppResult<Response> {
    let rc = crate::http::roll_calls::start_roll_call(&state, &staff.me, id, form.seconds).await?;
    Ok(see_other(&format!("/roll-calls/{}", rc.id)))
}

async fn roll_call_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let result = crate::http::roll_calls::roll_call_result(&state, &staff.me, id).await?;
    let meeting = state.store.meeting(result.roll_call.meeting_id).await?;
    let html = staff.render("roll_call.html", context! { result, meeting })?;
    Ok(private(html.into_response()))
}

#[derive(Deserialize)]
struct ActionItemForm {
    title: String,
    #[serde(default)]
    description: String,
    due: String,
    assign: String,
    #[serde(default)]
    units: String,
    #[serde(default)]
    delegable: Option<String>,
}

async fn record_action_item(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Form(form): Form<ActionItemForm>,
) -> AppResult<Response> {
    let input = ActionItemInput {
        title: form.title,
        description: form.description,
        due: form.due,
        assign: form.assign,
        units: codes(&form.units),
        delegable: form.delegable.is_some(),
    };
    let (_, n) =
        crate::followups::record_action_item(&state.store, &staff.me, id, &input, Utc::now())
            .await?;
    Ok(see_other(&format!("/meetings/{id}?done=action_item&n={n}")))
}

// ---- confirmations (bureaus) ----

async fn confirmations(
    State(state): State<AppState>,
    staff: Staff,
    Query(done): Query<Done>,
) -> AppResult<Response> {
    let invitations = state
        .store
        .invitations_to_confirm(&staff.me.unit_path)
        .await?;
    let pending = invitations.iter().filter(|i| i.rsvp == "pending").count();
    let html = staff.render(
        "confirmations.html",
        context! { invitations, pending, done => done_key(&done) },
    )?;
    Ok(private(html.into_response()))
}

#[derive(Deserialize)]
struct ConfirmForm {
    answer: String,
    name: Option<String>,
    title: Option<String>,
    mobile: Option<String>,
    reason: Option<String>,
    /// Where to go back to: the confirmations list or the meeting.
    back: Option<String>,
}

async fn confirm(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Form(form): Form<ConfirmForm>,
) -> AppResult<Response> {
    let input = crate::http::attendance_input(
        &form.answer,
        form.name,
        form.title,
        form.mobile,
        form.reason,
    );
    crate::http::attendance::confirm_invitation(&state, &staff.me, id, &input).await?;
    let back = super::local_path(form.back.as_deref());
    let sep = if back.contains('?') { '&' } else { '?' };
    Ok(see_other(&format!("{back}{sep}done=confirmed")))
}

/// Confirms every pending invitation of the account's units to meetings not yet started
/// (一键确认), each through the same checks as one by one.
async fn confirm_all(State(state): State<AppState>, staff: Staff) -> AppResult<Response> {
    let input = crate::http::attendance_input("confirm", None, None, None, None);
    for i in state
        .store
        .invitations_to_confirm(&staff.me.unit_path)
        .await?
        .iter()
        .filter(|i| i.rsvp == "pending" && i.meeting_status == "scheduled")
    {
        crate::http::attendance::confirm_invitation(&state, &staff.me, i.id, &input).await?;
    }
    Ok(see_other("/confirmations?done=confirmed_all"))
}

// ---- follow-ups ----

#[derive(Deserialize)]
struct FollowupQuery {
    /// `mine` (assigned to my unit), `verify` (submitted, waiting for my side) or `all`.
    view: Option<String>,
    status: Option<String>,
    dispatch: Option<i64>,
}

async fn followups_page(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<FollowupQuery>,
) -> AppResult<Response> {
    let me = &staff.me;
    let view = q.view.as_deref().unwrap_or("mine");
    let status: Option<Status> = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse()
                .map_err(|e: String| AppError::invalid(format!("status: {e}")))?,
        ),
        None if view == "verify" => Some(Status::Submitted),
        None => None,
    };
    let filter = FollowupFilter {
        scope_path: me.unit_path.clone(),
        assignee_unit_id: (view == "mine").then_some(me.unit_id),
        status,
        dispatch_id: q.dispatch,
        limit: crate::http::MAX_PAGE,
        ..Default::default()
    };
    let (items, total) = state.store.list_followups(&filter).await?;
    let now = Utc::now();
    let t = thresholds(&state);
    let mut rows: Vec<_> = items
        .into_iter()
        // To verify: reports below that this account's side assigned (not the unit's own).
        .filter(|f| {
            view != "verify" || (f.assignee_unit_id != me.unit_id && me.can_read(&f.assigner_path))
        })
        .map(|f| api_followups::view(f, now, t))
        .collect();
    rows.sort_by_key(|v| (v.days_overdue == 0, v.followup.due_at));
    let html = staff.render(
        "followups.html",
        context! {
            view,
            status => q.status,
            rows,
            total,
            statuses => Status::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        },
    )?;
    Ok(private(html.into_response()))
}

async fn followup_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> AppResult<Response> {
    let detail = api_followups::detail(&state, &staff.me, id).await?;
    let f = &detail.followup.followup;
    let sides = Actor::Staff(&staff.me).sides(f);
    let status = f.status()?;
    let open_children = usize::try_from(f.open_children).unwrap_or(0);
    let actions: Vec<&str> = Action::ALL
        .iter()
        .filter(|a| {
            sides.contains(&a.side())
                && transition(status, **a, a.side(), "text", open_children, true).is_ok()
        })
        .map(|a| a.as_str())
        .collect();
    let needs_text: Vec<&str> = Action::ALL
        .iter()
        .filter(|a| a.needs_reason())
        .map(|a| a.as_str())
        .collect();
    let assignee_side = sides.contains(&crate::domain::followup::Side::Assignee);
    let may_delegate = assignee_side && may_delegate(status, f.delegable).is_ok();
    let below = if assignee_side && f.delegable {
        let (units, _) = state
            .store
            .list_units(&UnitFilter {
                scope_path: f.assignee_path.clone(),
                parent_id: Some(f.assignee_unit_id),
                limit: 1000,
                ..Default::default()
            })
            .await?;
        // Units that already have a child of it cannot get a second one.
        units
            .into_iter()
            .filter(|u| {
                !detail
                    .children
                    .iter()
                    .any(|c| c.followup.assignee_unit_id == u.id)
            })
            .collect()
    } else {
        Vec::new()
    };
    let may_attach = assignee_side && !status.is_final();
    let html = staff.render(
        "followup.html",
        context! {
            f => minijinja::Value::from_serialize(&detail.followup),
            timeline => detail.timeline,
            children => detail.children,
            attachments => detail.attachments,
            actions,
            needs_text,
            may_delegate,
            below,
            may_attach,
            open_children,
            done => done_key(&done),
        },
    )?;
    Ok(private(html.into_response()))
}

#[derive(Deserialize)]
struct ActForm {
    action: Action,
    #[serde(default)]
    text: String,
    #[serde(default)]
    override_children: Option<String>,
}

async fn act(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    Form(form): Form<ActForm>,
) -> AppResult<Response> {
    let input = TransitionInput {
        action: form.action,
        text: form.text,
        override_children: form.override_children.is_some(),
    };
    crate::followups::act(
        &state.store,
        &Actor::Staff(&staff.me),
        id,
        &input,
        Utc::now(),
    )
    .await?;
    Ok(see_other(&format!(
        "/follow-ups/{id}?done={}",
        input.action.as_str()
    )))
}

#[derive(Deserialize)]
struct DelegateForm {
    #[serde(default)]
    units: Vec<String>,
    #[serde(default)]
    due: String,
    #[serde(default)]
    note: String,
}

async fn delegate(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<DelegateForm>,
) -> AppResult<Response> {
    let input = DelegateInput {
        units: form.units,
        due: Some(form.due.trim().to_string()).filter(|d| !d.is_empty()),
        note: form.note,
    };
    crate::followups::delegate(
        &state.store,
        &Actor::Staff(&staff.me),
        id,
        &input,
        Utc::now(),
    )
    .await?;
    Ok(see_other(&format!("/follow-ups/{id}?done=delegated")))
}

/// A file for the report, from a multipart form (`file`).
async fn upload(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<i64>,
    mut multipart: Multipart,
) -> AppResult<Response> {
    let bad = |e: axum::extract::multipart::MultipartError| AppError::invalid(e.body_text());
    let mut saved = false;
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().unwrap_or_default().to_string();
        let content_type = field.content_type().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(bad)?;
        if name.is_empty() && bytes.is_empty() {
            return Err(AppError::invalid("file: choose a file to attach"));
        }
        api_followups::attach(&state, &staff.me, id, &name, &content_type, &bytes).await?;
        saved = true;
    }
    if !saved {
        return Err(AppError::invalid("file: choose a file to attach"));
    }
    Ok(see_other(&format!("/follow-ups/{id}?done=attached")))
}

// ---- closure and attendance (leaders) ----

#[derive(Deserialize)]
struct ClosureQuery {
    group: Option<String>,
    unit: Option<String>,
    dispatch: Option<i64>,
}

async fn closure(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ClosureQuery>,
) -> AppResult<Response> {
    let group = match q.group.as_deref() {
        Some("tier") => "tier",
        _ => "region",
    };
    let unit = q.unit.clone().filter(|u| !u.trim().is_empty());
    let lines = api_followups::rollup_lines(
        &state,
        &staff.me,
        Some(group),
        &unit,
        q.dispatch,
        None,
        None,
    )
    .await?;
    let mut total = Closure::default();
    for l in &lines {
        total.add(&l.closure);
    }
    let here_unit = match &unit {
        Some(code) => Some(state.store.unit_by_code(code.trim()).await?),
        None => None,
    };
    // The way back up: the drilled unit's ancestors within the account's scope.
    let mut trail = Vec::new();
    if let Some(u) = &here_unit {
        let mut parent = u.parent_id;
        while let Some(pid) = parent {
            let p = state.store.unit(pid).await?;
            if !staff.me.can_read(&p.path) {
                break;
            }
            parent = p.parent_id;
            trail.push(context! { code => p.code, name => p.name });
        }
        trail.reverse();
    }
    let dispatches = state
        .store
        .list_dispatches(&staff.me.unit_path, 30, 0)
        .await?;
    let attendance = match q.dispatch.or_else(|| dispatches.first().map(|d| d.id)) {
        Some(id) => Some(dispatch_attendance(&state, &staff, id).await?),
        None => None,
    };
    let mut query = format!("group={group}");
    if let Some(u) = &unit {
        query.push_str(&format!("&unit={}", urlencode(u)));
    }
    if let Some(d) = q.dispatch {
        query.push_str(&format!("&dispatch={d}"));
    }
    let html = staff.render(
        "closure.html",
        context! {
            group,
            unit => here_unit,
            trail,
            lines,
            total => context! { total => total.total, closed => total.closed, overdue => total.overdue, rate => total.rate(), average => total.average_days_overdue() },
            dispatches,
            dispatch => q.dispatch,
            attendance,
            query,
        },
    )?;
    Ok(private(html.into_response()))
}

/// Attendance of every finished meeting of a dispatch the account may see, by region and
/// tier.
async fn dispatch_attendance(
    state: &AppState,
    staff: &Staff,
    id: i64,
) -> AppResult<minijinja::Value> {
    let view = dispatch::view(&state.store, &staff.me, id).await?;
    let mut rows = Vec::new();
    let mut finished = 0;
    for node in view
        .meetings
        .iter()
        .filter(|n| n.meeting.status == "finished")
    {
        finished += 1;
        rows.extend(
            state
                .store
                .report(node.meeting.id, &staff.me.unit_path)
                .await?,
        );
    }
    let summary = crate::reports::summarise(&state.store, &rows, &staff.me.unit_path).await?;
    let mut by_region = summary.by_region;
    by_region.sort_by(|a, b| {
        a.attendance_rate
            .unwrap_or(101.0)
            .total_cmp(&b.attendance_rate.unwrap_or(101.0))
    });
    Ok(context! {
        dispatch_id => id,
        title => view.dispatch.title,
        finished,
        total => summary.total,
        by_region,
        by_tier => summary.by_tier,
    })
}
