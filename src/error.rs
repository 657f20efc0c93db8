//! The one error type of the HTTP layer: every failure becomes JSON
//! `{"error": {"code": "...", "message": "..."}}` with a stable `code`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::access::Denied;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or a value in it is invalid.
    #[error("{message}")]
    Invalid {
        message: String,
        details: Option<serde_json::Value>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Forbidden(#[from] Denied),
    #[error("{0}")]
    ForbiddenOther(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("request body is larger than this server accepts")]
    PayloadTooLarge,
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn invalid(message: impl Into<String>) -> Self {
        AppError::Invalid {
            message: message.into(),
            details: None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::Invalid { .. } => "invalid_input",
            AppError::Unauthenticated(_) => "unauthenticated",
            AppError::Forbidden(_) | AppError::ForbiddenOther(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::PayloadTooLarge => "payload_too_large",
            AppError::Unavailable(_) => "unavailable",
            AppError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::ForbiddenOther(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => AppError::NotFound(what),
            StoreError::Conflict(message) => AppError::Conflict(message),
            other => AppError::Internal(other.into()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // Details of internal failures go to the log, not to the client.
            AppError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                "internal error; the details are in the server log".to_string()
            }
            other => other.to_string(),
        };
        let mut body = json!({"error": {"code": self.code(), "message": message}});
        if let AppError::Invalid {
            details: Some(details),
            ..
        } = &self
        {
            body["error"]["details"] = details.clone();
        }
        let mut response = (status, Json(body)).into_response();
        if let AppError::RateLimited {
            retry_after_secs, ..
        } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        response
    }
}

pub type AppResult<T> = Result<T, AppError>;
