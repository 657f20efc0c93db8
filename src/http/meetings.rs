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
    let moved =
        dispatch::reschedule_meeting(&state.store, &principal, id, &body.start, Utc::now()).await?;
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
