//! Server-rendered pages for conveners, bureaus, leaders and invitees. Pages call the same
//! services as the API; their forms post here, never to `/api`. Two layers wrap every page:
//! CSRF checks on form posts (`csrf`) and HTML error pages instead of JSON (`html_errors`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use minijinja::context;
use minijinja::value::Value;
use serde::Deserialize;

use crate::config::Language;
use crate::domain::access::Principal;
use crate::error::{AppError, AppResult};
use crate::http::AppState;
use crate::http::extract::SESSION_COOKIE;
use crate::http::session::{Credentials, close_session, open_session};

mod csrf;
pub use csrf::link_token as link_csrf;
mod invitee;
mod staff;
pub mod ui;

pub use ui::render;

pub const LANG_COOKIE: &str = "muster_lang";

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .merge(invitee::router())
        .merge(staff::router())
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/lang/{code}", get(switch_language))
        .layer(middleware::from_fn(csrf::check))
        .layer(middleware::from_fn_with_state(state, html_errors))
}

/// The language of the request: the visitor's choice (a cookie), else the configured default.
#[derive(Debug, Clone, Copy)]
pub struct Lang(pub Language);

impl FromRequestParts<AppState> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Lang(request_language(
            &parts.headers,
            state.config.language,
        )))
    }
}

fn request_language(headers: &axum::http::HeaderMap, default: Language) -> Language {
    match CookieJar::from_headers(headers)
        .get(LANG_COOKIE)
        .map(|c| c.value())
    {
        Some("en") => Language::En,
        Some("zh-CN") => Language::ZhCn,
        _ => default,
    }
}

/// A signed-in staff member viewing a page: who, in which language, the page's CSRF token and
/// where it is (for the language switch to come back to).
pub struct Staff {
    pub me: Principal,
    pub lang: Language,
    pub csrf: String,
    pub here: String,
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let me = Principal::from_request_parts(parts, state).await?;
        let jar = CookieJar::from_headers(&parts.headers);
        let csrf = jar
            .get(SESSION_COOKIE)
            .map(|c| csrf::session_token(c.value()))
            .unwrap_or_default();
        Ok(Staff {
            me,
            lang: request_language(&parts.headers, state.config.language),
            csrf,
            here: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".into(), |p| p.to_string()),
        })
    }
}

impl Staff {
    /// What every staff page's layout needs, merged with the page's own values.
    pub fn context(&self, page: Value) -> Value {
        context! {
            lang => ui::lang_code(self.lang),
            csrf => self.csrf,
            here => self.here,
            me => context! {
                username => self.me.username,
                role => self.me.role.as_str(),
                unit_name => self.me.unit_name,
                may_write => self.me.role.may_write(),
            },
            ..page
        }
    }

    pub fn render(&self, name: &str, page: Value) -> AppResult<Html<String>> {
        render(name, self.context(page))
    }
}

/// Errors of page requests become pages: a sign-in redirect for a missing or expired session,
/// otherwise the error's message on a page in the visitor's language. JSON clients of the few
/// JSON routes here (and `fetch` calls) keep JSON: only requests that accept HTML get pages.
async fn html_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    let lang = request_language(request.headers(), state.config.language);
    let here = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".into(), |p| p.to_string());
    let is_get = request.method() == axum::http::Method::GET;
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !wants_html || !is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if status == StatusCode::UNAUTHORIZED {
        let next = if is_get { here.as_str() } else { "/" };
        return Redirect::to(&format!("/login?next={}", urlencode(next))).into_response();
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    let title = match status {
        StatusCode::FORBIDDEN => "error.forbidden",
        StatusCode::NOT_FOUND => "error.not_found",
        StatusCode::CONFLICT => "error.conflict",
        s if s.is_client_error() => "error.invalid",
        _ => "error.internal",
    };
    let page = render(
        "error.html",
        context! { lang => ui::lang_code(lang), here, title, message, status => status.as_u16() },
    );
    match page {
        Ok(html) => (status, html).into_response(),
        Err(_) => (status, message).into_response(),
    }
}

pub fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Only local paths may be gone back to after sign-in or a language switch (no open redirect).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => "/".into(),
    }
}

#[derive(Deserialize)]
struct Back {
    back: Option<String>,
}

async fn switch_language(
    axum::extract::Path(code): axum::extract::Path<String>,
    Query(q): Query<Back>,
    jar: CookieJar,
) -> Response {
    let code = if code == "en" { "en" } else { "zh-CN" };
    let cookie = Cookie::build((LANG_COOKIE, code))
        .path("/")
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::days(365))
        .build();
    (
        jar.add(cookie),
        Redirect::to(&local_path(q.back.as_deref())),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NextPage {
    next: Option<String>,
}

fn login_form(
    lang: Language,
    csrf: &str,
    next: &str,
    error: Option<&str>,
) -> AppResult<Html<String>> {
    render(
        "login.html",
        context! { lang => ui::lang_code(lang), csrf, next, error, here => "/login" },
    )
}

/// The sign-in form. Before there is a session, its CSRF token is a random value also set as
/// a cookie (double submit).
async fn login_page(Lang(lang): Lang, jar: CookieJar, Query(q): Query<NextPage>) -> Response {
    let (jar, token) = csrf::login_token(jar);
    match login_form(lang, &token, &local_path(q.next.as_deref()), None) {
        Ok(html) => (jar, html).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
    #[allow(dead_code)]
    csrf: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Lang(lang): Lang,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Response {
    let credentials = Credentials {
        username: form.username,
        password: form.password,
    };
    let next = local_path(form.next.as_deref());
    match open_session(&state, client, &credentials).await {
        Ok((_, cookie)) => (jar.add(cookie), Redirect::to(&next)).into_response(),
        Err(e @ (AppError::Unauthenticated(_) | AppError::RateLimited { .. })) => {
            let key = match e {
                AppError::RateLimited { .. } => "login.locked",
                _ => "login.failed",
            };
            let (jar, token) = csrf::login_token(jar);
            let message = ui::translate(lang, key);
            match login_form(lang, &token, &next, Some(&message)) {
                Ok(html) => {
                    // 200-range would let a browser offer to save a wrong password; say 401,
                    // as HTML (the error layer only rewrites JSON).
                    let mut response = (jar, html).into_response();
                    *response.status_mut() = e.status();
                    response
                }
                Err(e) => e.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

async fn logout(State(state): State<AppState>, jar: CookieJar) -> Response {
    match close_session(&state, jar).await {
        Ok(jar) => (jar, Redirect::to("/login")).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The home page: what the account's role works on, with counts.
async fn home(state: State<AppState>, staff: Result<Staff, AppError>) -> Response {
    match staff {
        Ok(staff) => staff::home(state, staff).await.into_response(),
        Err(AppError::Unauthenticated(_)) => Redirect::to("/login").into_response(),
        Err(e) => e.into_response(),
    }
}

/// Marks a page as not to be cached: it shows one person's data.
pub fn private(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}
