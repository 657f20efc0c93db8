//! Server-rendered pages. For now: sign-in and a home page per account; the full pages come
//! with the UI work.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::CookieJar;

use crate::domain::access::Principal;
use crate::error::AppError;
use crate::http::AppState;
use crate::http::session::{Credentials, close_session, open_session};

mod invitee;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(invitee::router())
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

/// Minimal HTML escaping for the few values these pages interpolate (a template engine
/// arrives with the full pages).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · muster</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}\
         label{{display:block;margin:.8rem 0}}input{{width:100%;padding:.5rem;font-size:1rem}}\
         button{{padding:.5rem 1.2rem;font-size:1rem}}.error{{color:#b00020}}</style></head>\
         <body>{body}</body></html>",
        escape(title)
    ))
}

fn login_form(error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        "登录",
        &format!(
            "<h1>muster 视频调度会</h1>{error}\
             <form method=\"post\" action=\"/login\">\
             <label>用户名 <input name=\"username\" autocomplete=\"username\" required></label>\
             <label>密码 <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">登录</button></form>"
        ),
    )
}

async fn login_page() -> Html<String> {
    login_form(None)
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    Form(credentials): Form<Credentials>,
) -> Response {
    match open_session(&state, client, &credentials).await {
        Ok((_, cookie)) => (jar.add(cookie), Redirect::to("/")).into_response(),
        Err(e @ (AppError::Unauthenticated(_) | AppError::RateLimited { .. })) => {
            let message = match e {
                AppError::RateLimited { .. } => "登录失败次数过多，请稍后再试。",
                _ => "用户名或密码错误，或账号已停用。",
            };
            (e.status(), login_form(Some(message))).into_response()
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

async fn home(principal: Result<Principal, AppError>) -> Response {
    let Ok(p) = principal else {
        return Redirect::to("/login").into_response();
    };
    let role = match p.role.as_str() {
        "admin" => "系统管理员",
        "convener" => "调度员",
        "bureau" => "应急管理局",
        _ => "领导",
    };
    page(
        "首页",
        &format!(
            "<h1>muster 视频调度会</h1><p>{}（{role}，{}）</p>\
             <form method=\"post\" action=\"/logout\"><button>退出登录</button></form>",
            escape(&p.username),
            escape(&p.unit_name)
        ),
    )
    .into_response()
}
