//! `/api/v1/jobs`: the job queue for administrators — failures first, retry, cancel.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;

use super::extract::ApiQuery;
use super::{AppState, page_bounds};
use crate::domain::access::{Principal, StaffRole};
use crate::error::{AppError, AppResult};
use crate::store::JobRecord;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/{id}/retry", post(retry))
        .route("/jobs/{id}/cancel", post(cancel))
}

const STATUSES: &[&str] = &["queued", "running", "done", "dead", "cancelled"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Default `dead`: what needs attention.
    status: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> AppResult<Json<Vec<JobRecord>>> {
    principal.require_role(StaffRole::Admin)?;
    let status = query.status.unwrap_or_else(|| "dead".into());
    let status = match status.as_str() {
        "all" => None,
        s if STATUSES.contains(&s) => Some(s),
        other => {
            return Err(AppError::invalid(format!(
                "status: unknown {other:?}; use one of {}, or all",
                STATUSES.join(", ")
            )));
        }
    };
    let (limit, _) = page_bounds(query.limit, None)?;
    Ok(Json(state.store.jobs_by_status(status, limit).await?))
}

async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<JobRecord>> {
    principal.require_role(StaffRole::Admin)?;
    Ok(Json(state.store.retry_job(id, Utc::now()).await?))
}

async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<JobRecord>> {
    principal.require_role(StaffRole::Admin)?;
    Ok(Json(state.store.cancel_job(id, Utc::now()).await?))
}
