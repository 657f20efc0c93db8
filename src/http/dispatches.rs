//! `/api/v1/dispatches`: plan (dry run), publish, read, reschedule and cancel dispatches.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiJson, ApiQuery};
use super::{AppState, page_bounds};
use crate::dispatch::{self, DispatchInput, DispatchView, PlanPreview};
use crate::domain::access::Principal;
use crate::error::AppResult;
use crate::store::DispatchRecord;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dispatches", get(list).post(publish))
        .route("/dispatches/plan", post(plan))
        .route("/dispatches/{id}", get(show))
        .route("/dispatches/{id}/reschedule", post(reschedule))
        .route("/dispatches/{id}/cancel", post(cancel))
}

/// Preview: the plan as it would be published now; nothing is stored.
async fn plan(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<DispatchInput>,
) -> AppResult<Json<PlanPreview>> {
    let prepared = dispatch::prepare(
        &state.store,
        &state.templates,
        &principal,
        &input,
        Utc::now(),
    )
    .await?;
    let (plan, dir) = dispatch::build_plan(&state.store, &prepared).await?;
    Ok(Json(dispatch::preview(&plan, &dir)))
}

async fn publish(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<DispatchInput>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let (id, preview) = dispatch::publish(
        &state.store,
        &state.templates,
        &state.config.livekit,
        &principal,
        &input,
        Utc::now(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "plan": preview})),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> AppResult<Json<Vec<DispatchRecord>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    Ok(Json(
        state
            .store
            .list_dispatches(&principal.unit_path, limit, offset)
            .await?,
    ))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<DispatchView>> {
    Ok(Json(dispatch::view(&state.store, &principal, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBody {
    /// RFC 3339, or local time in the dispatch's time zone.
    pub start: String,
}

async fn reschedule(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<RescheduleBody>,
) -> AppResult<Json<Value>> {
    let moved = dispatch::reschedule_dispatch(
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default)]
    pub reason: String,
}

async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(body): ApiJson<CancelBody>,
) -> AppResult<Json<Value>> {
    let cancelled =
        dispatch::cancel_dispatch(&state.store, &principal, id, body.reason.trim()).await?;
    Ok(Json(json!({"cancelled_meetings": cancelled})))
}
