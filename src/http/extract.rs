//! Request extractors: the signed-in staff member (the one place authentication happens) and
//! JSON bodies whose rejections become our JSON errors.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum_extra::extract::CookieJar;
use chrono::Utc;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::auth::token_hash;
use crate::domain::access::Principal;
use crate::error::AppError;

pub const SESSION_COOKIE: &str = "muster_session";

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    AppError::Unauthenticated(
                        "Authorization header must be `Bearer <token>`".into(),
                    )
                })?;
            return state
                .store
                .token_principal(&token_hash(token.trim()))
                .await?
                .ok_or_else(|| {
                    AppError::Unauthenticated("API token is unknown or revoked".into())
                });
        }
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(cookie) = jar.get(SESSION_COOKIE) else {
            return Err(AppError::Unauthenticated(
                "sign in first, or send an API token as `Authorization: Bearer <token>`".into(),
            ));
        };
        // Cookies ride along on cross-site requests; refuse changes whose Origin is not us.
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            check_same_origin(parts)?;
        }
        state
            .store
            .session_principal(&token_hash(cookie.value()), Utc::now())
            .await?
            .ok_or_else(|| AppError::Unauthenticated("session expired; sign in again".into()))
    }
}

fn check_same_origin(parts: &Parts) -> Result<(), AppError> {
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    if host.is_some() && origin_host == host {
        Ok(())
    } else {
        Err(AppError::ForbiddenOther(
            "cross-site request refused: the Origin does not match this server".into(),
        ))
    }
}

/// `Json<T>` whose rejections are reported as `invalid_input` (or `payload_too_large`) errors
/// naming what is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::BytesRejection(e)) if e.status() == 413 => {
                Err(AppError::PayloadTooLarge)
            }
            Err(e) => Err(AppError::invalid(e.body_text())),
        }
    }
}

/// `Query<T>` whose rejections are reported as `invalid_input` errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| AppError::invalid(e.body_text()))
    }
}
