//! `/api/v1/units`: the org directory's units, scoped to the caller's subtree.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::{ApiJson, ApiQuery};
use super::page_bounds;
use crate::domain::access::Principal;
use crate::domain::org::{Level, Sector, Unit, check_email};
use crate::error::{AppError, AppResult};
use crate::store::{UnitFilter, UnitUpdate};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/units", get(list))
        .route("/units/{id}", get(show).patch(update))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    level: Option<Level>,
    parent_id: Option<i64>,
    sector: Option<Sector>,
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> AppResult<Json<Listing<Unit>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let filter = UnitFilter {
        scope_path: principal.unit_path.clone(),
        level: query.level,
        parent_id: query.parent_id,
        sector: query.sector,
        query: query.q,
        limit,
        offset,
    };
    let (items, total) = state.store.list_units(&filter).await?;
    Ok(Json(Listing {
        items,
        total,
        limit,
        offset,
    }))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<Unit>> {
    let unit = state.store.unit(id).await?;
    principal.require_read(&unit.path, &unit.name)?;
    Ok(Json(unit))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitPatch {
    name: Option<String>,
    /// `""` clears the mailbox.
    mailbox: Option<String>,
    sectors: Option<Vec<Sector>>,
}

async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(patch): ApiJson<UnitPatch>,
) -> AppResult<Json<Unit>> {
    let unit = state.store.unit(id).await?;
    principal.require_write(&unit.path, &unit.name)?;
    if let Some(name) = &patch.name
        && name.trim().is_empty()
    {
        return Err(AppError::invalid("name: must not be empty"));
    }
    let mailbox = match patch.mailbox.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(m) => {
            check_email(m).map_err(|e| AppError::invalid(format!("mailbox: {e}")))?;
            Some(Some(m.to_string()))
        }
    };
    if let Some(sectors) = &patch.sectors {
        match unit.level {
            Level::Enterprise if sectors.is_empty() => {
                return Err(AppError::invalid(
                    "sectors: an enterprise needs at least one sector",
                ));
            }
            Level::Enterprise => {}
            level if !sectors.is_empty() => {
                return Err(AppError::invalid(format!(
                    "sectors: only enterprises have sectors, {} is a {level}",
                    unit.name
                )));
            }
            _ => {}
        }
    }
    let update = UnitUpdate {
        name: patch.name.map(|n| n.trim().to_string()),
        mailbox,
        sectors: patch.sectors,
    };
    Ok(Json(
        state
            .store
            .update_unit(id, &update, &principal.username)
            .await?,
    ))
}
