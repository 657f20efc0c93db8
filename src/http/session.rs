//! Signing in and out, the current account, and API tokens.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::{get, post};
use axum::{Json, http::StatusCode};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{ApiJson, SESSION_COOKIE};
use crate::auth::{dummy_hash, new_token, token_hash, verify_password};
use crate::domain::access::Principal;
use crate::error::{AppError, AppResult};
use crate::store::{StaffAccount, StoreError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/session", post(sign_in).delete(sign_out))
        .route("/me", get(me))
        .route("/tokens", post(create_token))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Checks credentials under the failed-login throttle and opens a session. Returns the
/// session cookie to set. Shared by the API and the login page.
pub(crate) async fn open_session(
    state: &AppState,
    client: SocketAddr,
    credentials: &Credentials,
) -> AppResult<(StaffAccount, Cookie<'static>)> {
    let account_key = credentials.username.trim().to_lowercase();
    let address_key = client.ip().to_string();
    for (throttle, key) in [
        (&state.account_throttle, &account_key),
        (&state.address_throttle, &address_key),
    ] {
        if let Some(wait) = throttle.locked(key) {
            return Err(AppError::RateLimited {
                message: format!(
                    "too many failed sign-ins; try again in {} minute(s)",
                    wait.as_secs().div_ceil(60)
                ),
                retry_after_secs: wait.as_secs().max(1),
            });
        }
    }
    let found = match state.store.account_by_username(&account_key).await {
        Ok(found) => Some(found),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let password = credentials.password.clone();
    let hash = found
        .as_ref()
        .map(|f| f.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    // Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let valid = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    let account = match found {
        Some(found) if valid && !found.account.disabled => found.account,
        _ => {
            state.metrics.failed_logins.inc();
            state.account_throttle.fail(&account_key);
            state.address_throttle.fail(&address_key);
            tracing::info!(username = %account_key, client = %address_key, "failed sign-in");
            return Err(AppError::Unauthenticated(
                "wrong username or password, or the account is disabled".into(),
            ));
        }
    };
    state.account_throttle.succeed(&account_key);
    let token = new_token();
    let hours = i64::from(state.config.auth.session_hours);
    state
        .store
        .create_session(
            &token_hash(&token),
            account.id,
            Utc::now() + chrono::Duration::hours(hours),
        )
        .await?;
    let cookie = Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.auth.secure_cookies)
        .path("/")
        .max_age(time_hours(hours))
        .build();
    Ok((account, cookie))
}

fn time_hours(hours: i64) -> cookie::time::Duration {
    cookie::time::Duration::hours(hours)
}

pub(crate) async fn close_session(state: &AppState, jar: CookieJar) -> AppResult<CookieJar> {
    if let Some(cookie) = jar.get(SESSION_COOKIE) {
        state
            .store
            .delete_session(&token_hash(cookie.value()))
            .await?;
    }
    Ok(jar.remove(Cookie::build(SESSION_COOKIE).path("/")))
}

async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    ApiJson(credentials): ApiJson<Credentials>,
) -> AppResult<(CookieJar, Json<StaffAccount>)> {
    let (account, cookie) = open_session(&state, client, &credentials).await?;
    Ok((jar.add(cookie), Json(account)))
}

async fn sign_out(
    State(state): State<AppState>,
    jar: CookieJar,
) -> AppResult<(StatusCode, CookieJar)> {
    Ok((StatusCode::NO_CONTENT, close_session(&state, jar).await?))
}

async fn me(principal: Principal) -> Json<Principal> {
    Json(principal)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

/// Issues an API token for the signed-in account. The token is shown once.
async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewToken>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let name = body.name.trim();
    if name.is_empty() {
        return Err(AppError::invalid(
            "name: give the token a name, e.g. the script using it",
        ));
    }
    let token = new_token();
    let id = state
        .store
        .create_api_token(
            principal.account_id,
            name,
            &token_hash(&token),
            &principal.username,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "name": name, "token": token})),
    ))
}
