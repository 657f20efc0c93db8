//! `POST /livekit/webhook`: LiveKit's events, verified by their signature alone.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;

use super::AppState;
use crate::domain::attendance::interpret;

pub fn router() -> Router<AppState> {
    Router::new().route("/livekit/webhook", post(webhook))
}

async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: String) -> Response {
    // LiveKit sends the bare JWT; accept a `Bearer ` prefix too, for proxies that add one.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
        .unwrap_or("");
    let event = match state.livekit.receive(&body, authorization) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(error = %e, "rejected a webhook");
            return (StatusCode::UNAUTHORIZED, format!("webhook rejected: {e}")).into_response();
        }
    };
    let change = interpret(&event);
    let every = chrono::Duration::seconds(i64::from(state.config.livekit.reconcile_seconds));
    match state
        .store
        .apply_webhook(&event.id, &event.event, &change, every, Utc::now())
        .await
    {
        Ok(fresh) => {
            if fresh && let Some(room) = event.room.as_ref().map(|r| r.name.clone()) {
                // Nobody listening is fine.
                let _ = state.room_changes.send(room);
            }
            StatusCode::OK.into_response()
        }
        // A 5xx makes LiveKit retry; nothing was stored.
        Err(e) => crate::error::AppError::from(e).into_response(),
    }
}
