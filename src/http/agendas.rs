//! `/api/v1/agendas`: the agenda templates dispatches are built from.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::domain::access::Principal;
use crate::domain::agenda::AgendaTemplate;
use crate::error::{AppError, AppResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agendas", get(list))
        .route("/agendas/{id}", get(show))
}

#[derive(Serialize)]
struct Summary {
    id: String,
    title: String,
    sector: Option<&'static str>,
    tiers: Vec<String>,
}

async fn list(State(state): State<AppState>, _: Principal) -> Json<Vec<Summary>> {
    let summaries = state
        .templates
        .templates
        .iter()
        .map(|t| Summary {
            id: t.id.clone(),
            title: t.title.clone(),
            sector: t.sector.map(|s| s.as_str()),
            tiers: t.tiers.iter().map(|tier| tier.id.clone()).collect(),
        })
        .collect();
    Json(summaries)
}

async fn show(
    State(state): State<AppState>,
    _: Principal,
    Path(id): Path<String>,
) -> AppResult<Json<AgendaTemplate>> {
    state
        .templates
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| AppError::NotFound(format!("agenda template {id:?}")))
}
