//! The invitee's page, reached through the personal link in every message (no login): the
//! meeting, and confirming or declining attendance.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
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
        .route("/i/{token}/join", get(join))
        .route("/i/{token}/join.json", get(join_json))
        .route("/i/{token}/followups", get(unit_followups))
        .route("/i/{token}/roll-call", post(answer_roll_call))
        .route("/i/{token}/followups/{id}/actions", post(followup_action))
}

/// The follow-ups assigned to the invitee's unit (enterprise heads have no staff account).
async fn unit_followups(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let inv = match find(&state, &token).await {
        Ok(inv) => inv,
        Err(response) => return response,
    };
    let unit = match state.store.unit(inv.unit_id).await {
        Ok(u) => u,
        Err(e) => return crate::error::AppError::from(e).into_response(),
    };
    let filter = crate::store::FollowupFilter {
        scope_path: unit.path.clone(),
        limit: 1000,
        ..Default::default()
    };
    match state.store.list_followups(&filter).await {
        Ok((items, _)) => {
            let own: Vec<_> = items
                .into_iter()
                .filter(|f| f.assignee_unit_id == unit.id)
                .collect();
            axum::Json(own).into_response()
        }
        Err(e) => crate::error::AppError::from(e).into_response(),
    }
}

/// Acts on a follow-up of the invitee's unit, as its assignee.
async fn followup_action(
    State(state): State<AppState>,
    Path((token, id)): Path<(String, i64)>,
    crate::http::extract::ApiJson(input): crate::http::extract::ApiJson<
        crate::followups::TransitionInput,
    >,
) -> Response {
    let inv = match find(&state, &token).await {
        Ok(inv) => inv,
        Err(response) => return response,
    };
    let actor = crate::followups::Actor::Unit {
        unit_id: inv.unit_id,
        name: inv.display_name(),
    };
    match crate::followups::act(&state.store, &actor, id, &input, chrono::Utc::now()).await {
        Ok(status) => axum::Json(serde_json::json!({"id": id, "status": status})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Why an invitation cannot join now, in the words of the page.
enum NoJoin {
    Cancelled,
    Declined,
    NotYet(chrono::DateTime<chrono::Utc>),
    Over,
}

fn may_join(
    state: &AppState,
    inv: &InvitationContext,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), NoJoin> {
    let (opens, closes) = state.livekit.join_window(inv);
    match () {
        _ if inv.meeting_status == "cancelled" => Err(NoJoin::Cancelled),
        _ if inv.rsvp == "declined" => Err(NoJoin::Declined),
        _ if inv.meeting_status == "finished" || now > closes => Err(NoJoin::Over),
        _ if now < opens => Err(NoJoin::NotYet(opens)),
        _ => Ok(()),
    }
}

fn no_join_text(inv: &InvitationContext, reason: &NoJoin) -> String {
    let tz: chrono_tz::Tz = inv.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
    match reason {
        NoJoin::Cancelled => "该会议已取消。".into(),
        NoJoin::Declined => "您已请假。如需参会，请先在本页确认参会。".into(),
        NoJoin::Over => "会议已结束。".into(),
        NoJoin::NotYet(opens) => format!(
            "会议将于 {} 开放入会（{}）。",
            opens.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
            inv.timezone
        ),
    }
}

/// Mints a token and sends the invitee to the meeting client.
async fn join(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let inv = match find(&state, &token).await {
        Ok(inv) => inv,
        Err(response) => return response,
    };
    let now = chrono::Utc::now();
    if let Err(reason) = may_join(&state, &inv, now) {
        let status = if matches!(reason, NoJoin::NotYet(_)) {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        let text = no_join_text(&inv, &reason);
        return (
            status,
            page(&inv.meeting_title, &format!("<h1>{}</h1><p role=\"status\">{text}</p><p><a href=\"/i/{token}\">返回</a></p>", escape(&inv.meeting_title))),
        )
            .into_response();
    }
    match state.livekit.join_token(&inv, now) {
        Ok(jwt) => Redirect::to(&state.livekit.join_url(&jwt)).into_response(),
        Err(e) => crate::error::AppError::Internal(anyhow::anyhow!(e)).into_response(),
    }
}

/// `{url, token}` for custom clients; the same rules as `join`, as JSON errors.
async fn join_json(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    use crate::error::AppError;
    let inv = match find(&state, &token).await {
        Ok(inv) => inv,
        Err(response) => return response,
    };
    let now = chrono::Utc::now();
    if let Err(reason) = may_join(&state, &inv, now) {
        let text = no_join_text(&inv, &reason);
        return match reason {
            NoJoin::NotYet(opens) => (
                StatusCode::CONFLICT,
                axum::Json(serde_json::json!({"error": {"code": "not_open", "message": text, "opens_at": opens}})),
            )
                .into_response(),
            _ => AppError::ForbiddenOther(text).into_response(),
        };
    }
    match state.livekit.join_token(&inv, now) {
        Ok(jwt) => axum::Json(serde_json::json!({"url": state.livekit.config.url, "token": jwt}))
            .into_response(),
        Err(e) => AppError::Internal(anyhow::anyhow!(e)).into_response(),
    }
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
    let roll_call = match state
        .store
        .open_roll_call(&inv.room_name, chrono::Utc::now())
        .await
    {
        Ok(Some(_)) => format!(
            "<form method=\"post\" action=\"/i/{token}/roll-call\"><button id=\"roll-call\" type=\"submit\">点名应答</button></form>"
        ),
        _ => String::new(),
    };
    let join_link = match may_join(&state, &inv, chrono::Utc::now()) {
        Ok(()) => format!("<p><a class=\"join\" href=\"/i/{token}/join\">进入会议</a></p>"),
        Err(reason) => format!("<p>{}</p>", no_join_text(&inv, &reason)),
    };
    let buttons = if inv.meeting_status == "scheduled" {
        format!(
            "<form method=\"post\" action=\"/i/{token}/rsvp\"><input type=\"hidden\" name=\"answer\" value=\"confirm\">\
             <button type=\"submit\">确认参会</button></form>\
             <form method=\"post\" action=\"/i/{token}/rsvp\"><input type=\"hidden\" name=\"answer\" value=\"decline\">\
             <label>请假原因 <input name=\"reason\" maxlength=\"200\" required></label><button type=\"submit\">请假</button></form>\
             <form method=\"post\" action=\"/i/{token}/rsvp\"><input type=\"hidden\" name=\"answer\" value=\"delegate\">\
             <label>替会人员 <input name=\"name\" maxlength=\"50\" required></label><label>职务 <input name=\"title\" maxlength=\"50\"></label>\
             <label>手机 <input name=\"mobile\" maxlength=\"20\"></label><button type=\"submit\">委托他人参会</button></form>"
        )
    } else {
        String::new()
    };
    page(
        &inv.meeting_title,
        &format!(
            "<h1>{title}</h1>{joins}<p>时间：{when}（{}）</p><p>主办单位：{}</p><p>参会单位：{}</p>\
             <p>参会状态：<strong id=\"rsvp\">{}</strong></p>{roll_call}{join_link}{buttons}",
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
    #[serde(default)]
    name: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    mobile: String,
}

/// Confirms, declines (with a reason) or names a deputy (替会), as a bureau can for it.
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
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.trim().is_empty());
    let input = crate::http::attendance_input(
        &answer.answer,
        some(&answer.name),
        some(&answer.title),
        some(&answer.mobile),
        some(&answer.reason),
    );
    let confirmation = match crate::http::confirmation_of(&input) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                page("请补充信息", &format!("<h1>请补充信息</h1><p role=\"alert\">{}</p><p><a href=\"/i/{token}\">返回</a></p>", escape(&e.to_string()))),
            )
                .into_response();
        }
    };
    let actor = format!("invitee:{}", inv.id);
    if let Err(e) = state
        .store
        .confirm_invitation(inv.id, &confirmation, &actor)
        .await
    {
        return crate::error::AppError::from(e).into_response();
    }
    Redirect::to(&format!("/i/{token}")).into_response()
}

/// Answers the roll call open in the invitation's room (JSON, for the page and any client).
async fn answer_roll_call(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    use crate::error::AppError;
    let inv = match find(&state, &token).await {
        Ok(inv) => inv,
        Err(response) => return response,
    };
    let now = chrono::Utc::now();
    match state.store.open_roll_call(&inv.room_name, now).await {
        Ok(Some(rc)) => match state.store.answer_roll_call(rc.id, inv.id, now).await {
            Ok(()) => axum::Json(serde_json::json!({"roll_call": rc.id, "answered": true}))
                .into_response(),
            Err(e) => AppError::from(e).into_response(),
        },
        Ok(None) => {
            AppError::Conflict("no roll call is open in this meeting".into()).into_response()
        }
        Err(e) => AppError::from(e).into_response(),
    }
}
