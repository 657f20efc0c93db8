//! `/api/v1/openapi.json`: the API described as OpenAPI 3.1. Written by hand and kept next to
//! the routes; a test calls every operation it lists to keep the two in step.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/openapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response() }),
    )
}
