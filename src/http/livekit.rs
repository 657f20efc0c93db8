//! `POST /livekit/webhook`: LiveKit's events, verified by their signature alone.

use super::AppState;
use crate::domain::attendance::interpret;
use crate::error::AppError;
use crate::livekit::writer::WriteError;
use crate::store::WebhookRecord;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

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
    let room = event.room.as_ref().map(|r| r.name.clone());
    let record = WebhookRecord {
        change: interpret(&event),
        event_id: event.id,
        kind: event.event,
    };
    // Answered once the event's batch has committed.
    match state.webhooks.apply(record).await {
        Ok(fresh) => {
            if fresh && let Some(room) = room {
                // Nobody listening is fine.
                let _ = state.room_changes.send(room);
            }
            StatusCode::OK.into_response()
        }
        // A 5xx makes LiveKit retry; nothing was stored.
        Err(WriteError::Store(e)) => AppError::from(e).into_response(),
        Err(e @ WriteError::Closed) => AppError::Unavailable(e.to_string()).into_response(),
    }
}
