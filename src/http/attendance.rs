//! Attendance: confirmation before the meeting (确认参会), the pending overview and reminders,
//! and the attendance report after it (JSON, CSV with BOM, XLSX).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::extract::{ApiJson, ApiQuery};
use crate::dispatch;
use crate::domain::access::Principal;
use crate::domain::org::check_phone;
use crate::error::{AppError, AppResult};
use crate::reports::{self, COLUMNS, Summary, cells};
use crate::store::{Confirmation, ResultRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/meetings/{id}/attendance-report",
            get(report).post(recompute),
        )
        .route("/meetings/{id}/board", get(board))
        .route("/meetings/{id}/board/events", get(board_events))
        .route("/invitations/{id}/confirmation", post(confirm))
        .route("/dispatches/{id}/confirmations", get(pending))
        .route("/dispatches/{id}/confirmations/remind", post(remind))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    format: Option<String>,
}

#[derive(Serialize)]
struct ReportView {
    meeting_id: i64,
    title: String,
    rows: Vec<ResultRow>,
    summary: Summary,
}

async fn report(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> AppResult<Response> {
    let meeting = state.store.meeting(id).await?;
    let scope = dispatch::meeting_scope(&state.store, &principal, &meeting).await?;
    let rows = state.store.report(id, &scope).await?;
    if rows.is_empty() && !matches!(meeting.status.as_str(), "finished") {
        return Err(AppError::Conflict(
            "the report is made when the meeting has ended".into(),
        ));
    }
    let dispatch = state.store.dispatch(meeting.dispatch_id).await?;
    let tz: chrono_tz::Tz = dispatch
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Asia::Shanghai);
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            let summary = reports::summarise(&state.store, &rows, &meeting.host_unit_path).await?;
            Ok(Json(ReportView {
                meeting_id: id,
                title: meeting.title,
                rows,
                summary,
            })
            .into_response())
        }
        "csv" => {
            let mut out = b"\xEF\xBB\xBF".to_vec();
            {
                let mut w = csv::Writer::from_writer(&mut out);
                w.write_record(COLUMNS)
                    .map_err(|e| AppError::Internal(e.into()))?;
                for r in &rows {
                    w.write_record(cells(r, tz))
                        .map_err(|e| AppError::Internal(e.into()))?;
                }
                w.flush().map_err(|e| AppError::Internal(e.into()))?;
            }
            Ok(file("text/csv; charset=utf-8", "attendance.csv", out))
        }
        "xlsx" => {
            use rust_xlsxwriter::{Format, Workbook};
            let internal = |e: rust_xlsxwriter::XlsxError| AppError::Internal(e.into());
            let mut book = Workbook::new();
            let sheet = book.add_worksheet();
            sheet.set_name("参会情况").map_err(internal)?;
            let bold = Format::new().set_bold();
            for (c, h) in COLUMNS.iter().enumerate() {
                sheet
                    .write_string_with_format(0, c as u16, *h, &bold)
                    .map_err(internal)?;
            }
            for (i, r) in rows.iter().enumerate() {
                for (c, v) in cells(r, tz).iter().enumerate() {
                    sheet
                        .write_string(i as u32 + 1, c as u16, v)
                        .map_err(internal)?;
                }
            }
            Ok(file(
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "attendance.xlsx",
                book.save_to_buffer().map_err(internal)?,
            ))
        }
        other => Err(AppError::invalid(format!(
            "format: {other:?}; use json, csv or xlsx"
        ))),
    }
}

fn file(content_type: &str, name: &str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// Recomputes the report (after late webhooks or a reconciliation); the meeting's host.
async fn recompute(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<Value>> {
    let meeting = state.store.meeting(id).await?;
    principal.require_write(&meeting.host_unit_path, &meeting.host_unit_name)?;
    let lines = reports::finalise(
        &state.store,
        &meeting,
        state.config.attendance.rules(),
        Utc::now(),
    )
    .await?;
    Ok(Json(json!({"lines": lines})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmInput {
    /// `confirm`, `decline` or `delegate` (替会).
    pub answer: String,
    pub name: Option<String>,
    pub title: Option<String>,
    pub mobile: Option<String>,
    pub reason: Option<String>,
}

/// Checks a confirmation and turns it into what is stored.
pub fn confirmation(input: &ConfirmInput) -> AppResult<Confirmation> {
    let clean = |v: &Option<String>| {
        v.as_ref()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let (name, title, mobile, reason) = (
        clean(&input.name),
        clean(&input.title),
        clean(&input.mobile),
        clean(&input.reason),
    );
    if let Some(m) = &mobile {
        check_phone(m).map_err(|e| AppError::invalid(format!("mobile: {e}")))?;
    }
    Ok(match input.answer.as_str() {
        "confirm" => Confirmation {
            rsvp: "confirmed".into(),
            attendee_name: name,
            attendee_title: title,
            attendee_mobile: mobile,
            ..Default::default()
        },
        "decline" => {
            let reason = reason.ok_or_else(|| {
                AppError::invalid("reason: say why the unit cannot attend (请假原因)")
            })?;
            Confirmation {
                rsvp: "declined".into(),
                decline_reason: Some(reason),
                ..Default::default()
            }
        }
        "delegate" => {
            let name =
                name.ok_or_else(|| AppError::invalid("name: who attends instead (替会人员)"))?;
            Confirmation {
                rsvp: "delegated".into(),
                delegate_name: Some(name.clone()),
                attendee_name: Some(name),
                attendee_title: title,
                attendee_mobile: mobile,
                ..Default::default()
            }
        }
        other => {
            return Err(AppError::invalid(format!(
                "answer: {other:?}; use confirm, decline or delegate"
            )));
        }
    })
}

/// A bureau confirms for an invitation of one of its units.
async fn confirm(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<ConfirmInput>,
) -> AppResult<Json<Value>> {
    let rsvp = confirm_invitation(&state, &principal, id, &input).await?;
    Ok(Json(json!({"id": id, "rsvp": rsvp})))
}

/// A bureau answers for an invitation of one of its units; returns the new RSVP state.
pub(crate) async fn confirm_invitation(
    state: &AppState,
    principal: &Principal,
    id: i64,
    input: &ConfirmInput,
) -> AppResult<String> {
    let inv = state.store.invitation_context(id).await?;
    let unit = state.store.unit(inv.unit_id).await?;
    principal.require_write(&unit.path, &unit.name)?;
    if inv.meeting_status != "scheduled" {
        return Err(AppError::Conflict(format!(
            "the meeting is {}; attendance can no longer be confirmed",
            inv.meeting_status
        )));
    }
    let c = confirmation(input)?;
    state
        .store
        .confirm_invitation(id, &c, &principal.username)
        .await?;
    Ok(c.rsvp)
}

/// Pending confirmations of a dispatch per tier and per region (children of the caller's unit).
async fn pending(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<Value>> {
    let view = dispatch::view(&state.store, &principal, id).await?;
    let mut by_tier: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    let mut by_region: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for node in &view.meetings {
        let (invitations, _) = state
            .store
            .meeting_invitations(node.meeting.id, &principal.unit_path, i64::MAX, 0)
            .await?;
        for i in invitations {
            let unit = state.store.unit(i.unit_id).await?;
            let region = unit
                .path
                .strip_prefix(&principal.unit_path)
                .and_then(|r| r.split('/').next())
                .unwrap_or("")
                .to_string();
            let pending = i64::from(i.rsvp == "pending");
            let t = by_tier.entry(node.meeting.tier.clone()).or_default();
            t.0 += 1;
            t.1 += pending;
            let r = by_region.entry(region).or_default();
            r.0 += 1;
            r.1 += pending;
        }
    }
    let lines = |m: std::collections::BTreeMap<String, (i64, i64)>| -> Vec<Value> {
        m.into_iter()
            .map(
                |(k, (total, pending))| json!({"key": k, "invitations": total, "pending": pending}),
            )
            .collect()
    };
    Ok(Json(
        json!({"dispatch_id": id, "by_tier": lines(by_tier), "by_region": lines(by_region)}),
    ))
}

/// Sends a reminder to every invitation in the caller's scope still pending, in one action.
async fn remind(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<Value>> {
    let n = remind_pending(&state, &principal, id).await?;
    Ok(Json(json!({"reminded": n})))
}

/// Reminds every pending invitation of the dispatch in the caller's scope; how many.
pub(crate) async fn remind_pending(
    state: &AppState,
    principal: &Principal,
    id: i64,
) -> AppResult<usize> {
    let view = dispatch::view(&state.store, principal, id).await?;
    if !principal.role.may_write() {
        return Err(AppError::Forbidden(
            crate::domain::access::Denied::ReadOnly(principal.role),
        ));
    }
    let now = Utc::now();
    let mut jobs = Vec::new();
    for node in view
        .meetings
        .iter()
        .filter(|n| n.meeting.status == "scheduled")
    {
        let (invitations, _) = state
            .store
            .meeting_invitations(node.meeting.id, &principal.unit_path, i64::MAX, 0)
            .await?;
        for i in invitations
            .iter()
            .filter(|i| i.rsvp == "pending" && i.email.is_some())
        {
            let key = format!("mail:confirm_reminder:{}:{}", i.id, now.timestamp() / 3600);
            jobs.push(crate::store::NewJob {
                kind: "mail.send".into(),
                payload: json!({"invitation_id": i.id, "message": "confirm_reminder", "dedupe": key, "sequence": node.meeting.sequence}),
                run_at: now,
                dedupe_key: Some(format!("send:{key}")),
            });
        }
    }
    let n = jobs.len();
    state.store.enqueue(&jobs).await?;
    Ok(n)
}

async fn board(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<crate::board::Board>> {
    let meeting = state.store.meeting(id).await?;
    let scope = dispatch::meeting_scope(&state.store, &principal, &meeting).await?;
    Ok(Json(
        crate::board::board(&state.store, &meeting, &scope).await?,
    ))
}

/// The board as server-sent events: one `board` event now, then one whenever a webhook changes
/// the room (and every 5 s in any case).
async fn board_events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let meeting = state.store.meeting(id).await?;
    let scope = dispatch::meeting_scope(&state.store, &principal, &meeting).await?;
    let changes = state.room_changes.subscribe();
    let store = state.store.clone();
    let shutdown = state.shutting_down.subscribe();
    let stream = futures_util::stream::unfold((changes, true), move |(mut changes, first)| {
        let (store, scope, room) = (store.clone(), scope.clone(), meeting.room_name.clone());
        let mut shutdown = shutdown.clone();
        async move {
            if *shutdown.borrow() {
                return None;
            }
            if !first {
                let wait = async {
                    loop {
                        match changes.recv().await {
                            Ok(changed) if changed == room => return,
                            Ok(_) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait) => {}
                    _ = shutdown.changed() => return None,
                }
            }
            let meeting = store.meeting(id).await.ok()?;
            let board = crate::board::board(&store, &meeting, &scope).await.ok()?;
            let event = Event::default().event("board").json_data(&board).ok()?;
            Some((Ok(event), (changes, false)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
