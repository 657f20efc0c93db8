//! The invitee's page, reached through the personal link in every message (no login): the
//! meeting, and confirming or declining attendance.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::{escape, page};
use crate::auth::token_hash;
use crate::http::AppState;
use crate::store::InvitationContext;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/i/{token}", get(show))
        .route("/i/{token}/rsvp", post(rsvp))
}

/// The invitation behind a link; tokens are 40 hex characters.
async fn find(state: &AppState, token: &str) -> Result<InvitationContext, Response> {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            page(
                "链接无效",
                "<h1>链接无效</h1><p>此参会链接不存在或已失效，请联系会议主办单位。</p>",
            ),
        )
            .into_response()
    };
    if token.len() != 40 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    match state.store.invitation_by_link(&token_hash(token)).await {
        Ok(Some(inv)) => Ok(inv),
        Ok(None) => Err(not_found()),
        Err(e) => Err(crate::error::AppError::from(e).into_response()),
    }
}

fn rsvp_text(rsvp: &str) -> &'static str {
    match rsvp {
        "confirmed" => "已确认参会",
        "declined" => "已请假（不参会）",
        "delegated" => "已委托他人参会",
        _ => "尚未确认",
    }
}

async fn show(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let inv = match find(&state, &token).await {
        Ok(inv) => inv,
        Err(response) => return response,
    };
    let tz: chrono_tz::Tz = inv.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
    let when = format!(
        "{} 至 {}",
        inv.planned_start
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M"),
        inv.planned_end.with_timezone(&tz).format("%H:%M")
    );
    let title = escape(&inv.meeting_title);
    if inv.meeting_status == "cancelled" {
        return page(
            &inv.meeting_title,
            &format!(
                "<h1>{title}</h1><p role=\"status\"><strong>该会议已取消。</strong></p><p>原定时间：{when}</p>{}",
                inv.cancel_reason
                    .as_deref()
                    .filter(|r| !r.is_empty())
                    .map(|r| format!("<p>取消原因：{}</p>", escape(r)))
                    .unwrap_or_default()
            ),
        )
        .into_response();
    }
    let joins = inv
        .parent_title
        .as_deref()
        .filter(|_| inv.joins_parent)
        .map(|t| {
            format!(
                "<p>在{}分会场参加：{}</p>",
                escape(&inv.host_name),
                escape(t)
            )
        })
        .unwrap_or_default();
    let buttons = if inv.meeting_status == "scheduled" {
        format!(
            "<form method=\"post\" action=\"/i/{token}/rsvp\"><input type=\"hidden\" name=\"answer\" value=\"confirm\">\
             <button type=\"submit\">确认参会</button></form>\
             <form method=\"post\" action=\"/i/{token}/rsvp\"><input type=\"hidden\" name=\"answer\" value=\"decline\">\
             <label>请假原因 <input name=\"reason\" maxlength=\"200\"></label><button type=\"submit\">请假</button></form>"
        )
    } else {
        String::new()
    };
    page(
        &inv.meeting_title,
        &format!(
            "<h1>{title}</h1>{joins}<p>时间：{when}（{}）</p><p>主办单位：{}</p><p>参会单位：{}</p>\
             <p>参会状态：<strong id=\"rsvp\">{}</strong></p>{buttons}",
            escape(&inv.timezone),
            escape(&inv.host_name),
            escape(&inv.display_name()),
            rsvp_text(&inv.rsvp)
        ),
    )
    .into_response()
}

#[derive(Deserialize)]
struct Answer {
    answer: String,
    #[serde(default)]
    reason: String,
}

async fn rsvp(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(answer): Form<Answer>,
) -> Response {
    let inv = match find(&state, &token).await {
        Ok(inv) => inv,
        Err(response) => return response,
    };
    if inv.meeting_status != "scheduled" {
        return (
            StatusCode::CONFLICT,
            page(
                "无法更改",
                "<h1>无法更改</h1><p>该会议已取消或已开始，不能再更改参会状态。</p>",
            ),
        )
            .into_response();
    }
    let rsvp = match answer.answer.as_str() {
        "confirm" => "confirmed",
        "decline" => "declined",
        _ => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Html("answer must be confirm or decline"),
            )
                .into_response();
        }
    };
    let actor = format!("invitee:{}", inv.id);
    if let Err(e) = state.store.set_rsvp(inv.id, rsvp, &actor).await {
        return crate::error::AppError::from(e).into_response();
    }
    if rsvp == "declined" && !answer.reason.trim().is_empty() {
        let entry = crate::store::AuditEntry::new(
            &actor,
            "invitation.decline_reason",
            "invitation",
            &inv.id.to_string(),
        )
        .after(&serde_json::json!({"reason": answer.reason.trim()}));
        if let Err(e) = state.store.append_audit(&[entry]).await {
            return crate::error::AppError::from(e).into_response();
        }
    }
    Redirect::to(&format!("/i/{token}")).into_response()
}
