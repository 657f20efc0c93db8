//! `/api/v1/audit`: the audit log, for administrators.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::AppState;
use super::extract::ApiQuery;
use super::page_bounds;
use crate::domain::access::{Principal, StaffRole};
use crate::error::{AppError, AppResult};
use crate::store::AuditEvent;

pub fn router() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    subject_type: Option<String>,
    subject_id: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> AppResult<Json<Vec<AuditEvent>>> {
    principal.require_role(StaffRole::Admin)?;
    let (limit, _) = page_bounds(query.limit, None)?;
    let subject = match (&query.subject_type, &query.subject_id) {
        (Some(t), Some(id)) => Some((t.as_str(), id.as_str())),
        (None, None) => None,
        _ => {
            return Err(AppError::invalid(
                "subject_type and subject_id go together: give both or neither",
            ));
        }
    };
    Ok(Json(state.store.audit_events(subject, limit).await?))
}
