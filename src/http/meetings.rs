//! `/api/v1/meetings/{id}`: one meeting of a cascade, its agenda and invitations; moving and
//! cancelling it (with everything that depends on it).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::dispatches::{CancelBody, RescheduleBody};
use super::extract::{ApiJson, ApiQuery};
use super::units::Listing;
use super::{AppState, page_bounds};
use crate::dispatch;
use crate::domain::access::Principal;
use crate::domain::agenda::{AgendaItem, parse_template};
use crate::error::AppResult;
use crate::store::{InvitationView, MeetingRecord};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/meetings/{id}", get(show))
        .route("/meetings/{id}/invitations", get(invitations))
        .route("/meetings/{id}/reschedule", post(reschedule))
        .route("/meetings/{id}/cancel", post(cancel))
        .route(
            "/meetings/{id}/participants/{identity}/remove",
            post(remove_participant),
        )
        .route("/meetings/{id}/end", post(end))
        .route("/meetings/{id}/attendance", get(attendance))
}

/// The meeting, if the caller may run it (write access to its host unit).
async fn hosted(state: &AppState, principal: &Principal, id: i64) -> AppResult<MeetingRecord> {
    let meeting = state.store.meeting(id).await?;
    principal.require_write(&meeting.host_unit_path, &meeting.host_unit_name)?;
    if meeting.joins_parent {
        return Err(crate::error::AppError::invalid(
            "a sub-venue takes place in its parent meeting's room; act on that meeting",
        ));
    }
    Ok(meeting)
}

fn livekit_error(e: livekit_api::services::ServiceError) -> crate::error::AppError {
    let failure = crate::livekit::LiveKit::classify(&e);
    if failure.not_found {
        crate::error::AppError::NotFound("participant or room in LiveKit".into())
    } else {
        crate::error::AppError::Unavailable(failure.message)
    }
}

/// Host control: removes a participant (by identity) from the meeting's room.
async fn remove_participant(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, identity)): Path<(i64, String)>,
) -> AppResult<Json<Value>> {
    let meeting = hosted(&state, &principal, id).await?;
    state
        .livekit
        .rooms
        .remove_participant(&meeting.room_name, &identity)
        .await
        .map_err(livekit_error)?;
    let entry = crate::store::AuditEntry::new(
        &principal.username,
        "meeting.participant_removed",
        "meeting",
        &id.to_string(),
    )
    .after(&json!({"identity": identity}));
    state.store.append_audit(&[entry]).await?;
    Ok(Json(json!({"removed": identity})))
}

/// Host control: ends the meeting for everyone (deletes the room).
async fn end(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<Value>> {
    end_meeting(&state, &principal, id).await?;
    Ok(Json(json!({"ended": id})))
}

/// Ends a meeting: deletes its room (gone already is fine) and records the end, audited.
pub(crate) async fn end_meeting(state: &AppState, principal: &Principal, id: i64) -> AppResult<()> {
    let meeting = hosted(state, principal, id).await?;
    match state.livekit.rooms.delete_room(&meeting.room_name).await {
        Ok(()) => {}
        Err(e) if crate::livekit::LiveKit::classify(&e).not_found => {}
        Err(e) => return Err(livekit_error(e)),
    }
    state
        .store
        .finish_room(&meeting.room_name, Utc::now())
        .await?;
    let entry = crate::store::AuditEntry::new(
        &principal.username,
        "meeting.ended",
        "meeting",
        &id.to_string(),
    );
    state.store.append_audit(&[entry]).await?;
    Ok(())
}

/// The attendance ledger of the meeting's room: every connection.
async fn attendance(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<Vec<crate::store::Interval>>> {
    let meeting = state.store.meeting(id).await?;
    let scope = dispatch::meeting_scope(&state.store, &principal, &meeting).await?;
    if scope != meeting.host_unit_path {
        return Err(crate::error::AppError::ForbiddenOther(
            "the attendance of a meeting is for its host and its conveners".into(),
        ));
    }
    Ok(Json(state.store.intervals(&meeting.room_name).await?))
}

#[derive(Serialize)]
struct MeetingView {
    #[serde(flatten)]
    meeting: MeetingRecord,
    agenda: Vec<AgendaItem>,
    timezone: String,
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<MeetingView>> {
    let meeting = state.store.meeting(id).await?;
    dispatch::meeting_scope(&state.store, &principal, &meeting).await?;
    let source = state
        .store
        .dispatch_template_source(meeting.dispatch_id)
        .await?;
    let (agenda, timezone) = match parse_template("snapshot", &source) {
        Ok(t) => {
            let tier = usize::try_from(meeting.tier_index).unwrap_or(usize::MAX);
            let items = t.agenda.into_iter().filter(|a| a.tier == tier).collect();
            (items, t.timezone.name().to_string())
        }
        Err(_) => (Vec::new(), String::new()),
    };
    Ok(Json(MeetingView {
        meeting,
        agenda,
        timezone,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvitationsQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn invitations(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiQuery(query): ApiQuery<InvitationsQuery>,
) -> AppResult<Json<Listing<InvitationView>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let meeting = state.store.meeting(id).await?;
    let scope = dispatch::meeting_scope(&state.store, &principal, &meeting).await?;
    let (items, total) = state
        .store
        .meeting_invitations(id, &scope, limit, offset)
        .await?;
    Ok(Json(Listing {
        items,
        total,
        limit,
        offset,
    }))
}

async fn reschedule(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<RescheduleBody>,
) -> AppResult<Json<Value>> {
    let moved = dispatch::reschedule_meeting(
        &state.store,
        &state.config.livekit,
        &principal,
        id,
        &body.start,
        Utc::now(),
    )
    .await?;
    Ok(Json(json!({"moved_meetings": moved})))
}

async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<CancelBody>,
) -> AppResult<Json<Value>> {
    let cancelled =
        dispatch::cancel_meeting(&state.store, &principal, id, body.reason.trim()).await?;
    Ok(Json(json!({"cancelled_meetings": cancelled})))
}
