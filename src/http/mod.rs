//! The HTTP surface: one module per resource, each with its own `router()`.

mod agendas;
pub(crate) mod attendance;
mod audit;
mod dispatches;
pub mod extract;
pub(crate) mod followups;
mod health;
mod jobs;
mod livekit;
pub(crate) mod meetings;
mod openapi;
mod people;
pub(crate) mod roll_calls;
pub(crate) mod session;
pub(crate) mod units;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::auth::LoginThrottle;
use crate::config::Config;
use crate::domain::agenda::TemplateSet;
use crate::error::AppError;
use crate::store::Store;
use crate::telemetry::{Metrics, RequestLabels, RouteLabels};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub templates: Arc<TemplateSet>,
    pub livekit: Arc<crate::livekit::LiveKit>,
    /// Applies verified webhooks in batches (group commit); see `livekit::writer`.
    pub webhooks: Arc<crate::livekit::writer::WebhookWriter>,
    /// Names of rooms whose ledger just changed, for live boards. Within one instance; boards
    /// also refresh on a timer, for webhooks received by another instance.
    pub room_changes: tokio::sync::broadcast::Sender<String>,
    /// Turns true when the server is shutting down: long-lived streams end so that graceful
    /// shutdown does not wait for them.
    pub shutting_down: Arc<tokio::sync::watch::Sender<bool>>,
    pub metrics: Arc<Metrics>,
    /// Failed logins per account name.
    pub account_throttle: Arc<LoginThrottle>,
    /// Failed logins per client address; looser, since a whole bureau may share one address.
    pub address_throttle: Arc<LoginThrottle>,
}

impl AppState {
    /// Starts the webhook writer, so it must be called on a Tokio runtime.
    pub fn new(store: Store, config: Config, templates: TemplateSet) -> Self {
        let lockout = Duration::from_secs(u64::from(config.auth.lockout_minutes) * 60);
        let limit = config.auth.max_failed_logins;
        let webhooks = Arc::new(crate::livekit::writer::WebhookWriter::spawn(
            &store,
            chrono::Duration::seconds(i64::from(config.livekit.reconcile_seconds)),
        ));
        Self {
            store,
            metrics: Arc::new(Metrics::new()),
            account_throttle: Arc::new(LoginThrottle::new(limit, lockout)),
            address_throttle: Arc::new(LoginThrottle::new(limit.saturating_mul(10), lockout)),
            livekit: Arc::new(crate::livekit::LiveKit::new(&config.livekit)),
            webhooks,
            room_changes: tokio::sync::broadcast::channel(1024).0,
            shutting_down: Arc::new(tokio::sync::watch::channel(false).0),
            config: Arc::new(config),
            templates: Arc::new(templates),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(session::router())
        .merge(units::router())
        .merge(people::router())
        .merge(audit::router())
        .merge(agendas::router())
        .merge(dispatches::router())
        .merge(meetings::router())
        .merge(jobs::router())
        .merge(followups::router())
        .merge(attendance::router())
        .merge(roll_calls::router())
        .merge(openapi::router())
        .fallback(|| async { AppError::NotFound("API route".into()) });
    Router::new()
        .nest("/api/v1", api)
        .merge(livekit::router())
        .merge(health::router())
        .merge(crate::web::router(state.clone()))
        .layer(DefaultBodyLimit::max(state.config.http.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            track_requests,
        ))
        .with_state(state)
}

/// Counts and times every request by its route pattern (not the raw path, which would make
/// one series per id).
async fn track_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    tracing::debug!(%method, %route, status = response.status().as_u16(), ?elapsed, "request");
    response
}

pub const MAX_PAGE: i64 = 1000;

pub fn page_bounds(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), AppError> {
    let limit = limit.unwrap_or(100);
    let offset = offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    if offset < 0 {
        return Err(AppError::invalid(format!(
            "offset must not be negative, got {offset}"
        )));
    }
    Ok((limit, offset))
}

pub(crate) fn no_content() -> Response {
    axum::http::StatusCode::NO_CONTENT.into_response()
}

/// For the invitee page: the same confirmation rules as the bureaus' API.
pub fn attendance_input(
    answer: &str,
    name: Option<String>,
    title: Option<String>,
    mobile: Option<String>,
    reason: Option<String>,
) -> attendance::ConfirmInput {
    attendance::ConfirmInput {
        answer: answer.to_string(),
        name,
        title,
        mobile,
        reason,
    }
}

pub fn confirmation_of(
    input: &attendance::ConfirmInput,
) -> Result<crate::store::Confirmation, AppError> {
    attendance::confirmation(input)
}
