//! CSRF protection for every form post of the pages, in one layer.
//!
//! A form's token is bound to what authenticates its poster, so a page on another site cannot
//! know it: for staff, a hash of the session cookie's value; for invitees, a hash of their
//! personal link token (in the path); for the sign-in form, a random value also set as a
//! cookie (double submit). The token travels as the `csrf` field of a urlencoded form, or as
//! `?csrf=` on the action of a multipart form (file uploads). Only bodies a cross-site form can
//! send are checked (urlencoded, multipart, text/plain, or none); JSON bodies need a CORS
//! preflight another site cannot pass, and API clients send those.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use sha2::{Digest, Sha256};

use crate::http::extract::SESSION_COOKIE;

pub const LOGIN_COOKIE: &str = "muster_login_csrf";

fn digest(purpose: &str, secret: &str) -> String {
    hex::encode(Sha256::digest(format!("muster csrf/{purpose}/{secret}")))
}

pub fn session_token(session_cookie: &str) -> String {
    digest("session", session_cookie)
}

pub fn link_token(link: &str) -> String {
    digest("link", link)
}

/// A fresh sign-in token and the cookie that carries it.
pub fn login_token(jar: CookieJar) -> (CookieJar, String) {
    let token = crate::auth::new_token();
    let cookie = Cookie::build((LOGIN_COOKIE, token.clone()))
        .path("/login")
        .http_only(true)
        .same_site(SameSite::Strict)
        .build();
    (jar.add(cookie), token)
}

/// What the token of a post to `path` must be, or None when nothing can authenticate it.
fn expected(path: &str, jar: &CookieJar) -> Option<String> {
    if let Some(rest) = path.strip_prefix("/i/") {
        let link = rest.split('/').next().filter(|l| !l.is_empty())?;
        return Some(link_token(link));
    }
    if path == "/login" {
        return jar
            .get(LOGIN_COOKIE)
            .map(|c| c.value().to_string())
            .filter(|v| !v.is_empty());
    }
    jar.get(SESSION_COOKIE).map(|c| session_token(c.value()))
}

fn field(encoded: &[u8]) -> Option<String> {
    form_field(encoded, "csrf")
}

/// The first value of `name` in a urlencoded string.
pub fn form_field(encoded: &[u8], name: &str) -> Option<String> {
    url_pairs(encoded)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn url_pairs(encoded: &[u8]) -> Vec<(String, String)> {
    serde_html_form::from_bytes::<Vec<(String, String)>>(encoded).unwrap_or_default()
}

fn refused(reason: &str) -> Response {
    crate::error::AppError::ForbiddenOther(format!(
        "the form could not be checked ({reason}); reload the page and try again"
    ))
    .into_response()
}

pub async fn check(request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        return next.run(request).await;
    }
    let jar = CookieJar::from_headers(request.headers());
    let path = request.uri().path().to_string();
    let Some(expected) = expected(&path, &jar) else {
        // Not signed in: the page itself answers (a redirect to sign in).
        return if path.starts_with("/i/") || path == "/login" {
            refused("no token")
        } else {
            next.run(request).await
        };
    };
    let from_query = request.uri().query().and_then(|q| field(q.as_bytes()));
    let (request, given) = match from_query {
        Some(token) => (request, Some(token)),
        None if content_type.starts_with("application/x-www-form-urlencoded") => {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = to_bytes(body, 1024 * 1024).await else {
                return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
            };
            let token = field(&bytes);
            (Request::from_parts(parts, Body::from(bytes)), token)
        }
        None => (request, None),
    };
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => refused("wrong token"),
        None => refused("no token"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_the_secret() {
        assert_ne!(session_token("a"), session_token("b"));
        assert_ne!(session_token("a"), link_token("a"));
        assert_eq!(session_token("a"), session_token("a"));
    }

    #[test]
    fn fields_are_read_from_forms() {
        assert_eq!(
            form_field(b"a=1&csrf=abc%20d&csrf=x", "csrf").as_deref(),
            Some("abc d")
        );
        assert_eq!(form_field(b"a=1", "csrf"), None);
    }

    #[test]
    fn the_token_is_bound_to_the_invitee_link() {
        let jar = CookieJar::new();
        assert_eq!(expected("/i/abc/rsvp", &jar), Some(link_token("abc")));
        assert_eq!(expected("/dispatches/new", &jar), None);
        assert_eq!(expected("/login", &jar), None);
    }
}
