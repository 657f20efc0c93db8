//! The invitee's pages, reached through the personal link in every message (no login): the
//! meeting and its agenda, confirming, declining or sending a deputy, joining, answering the
//! roll call, and the follow-ups assigned to the invitee's unit.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::Utc;
use minijinja::context;
use minijinja::value::Value;
use serde::Deserialize;

use super::{Lang, csrf, private, ui};
use crate::auth::token_hash;
use crate::config::Language;
use crate::domain::agenda::parse_template;
use crate::domain::followup::{Action, transition};
use crate::error::AppError;
use crate::followups::{Actor, TransitionInput};
use crate::http::AppState;
use crate::http::followups::{FollowupView, own_followups};
use crate::store::InvitationContext;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/i/{token}", get(show))
        .route("/i/{token}/rsvp", post(rsvp))
        .route("/i/{token}/join", get(join))
        .route("/i/{token}/join.json", get(join_json))
        .route("/i/{token}/followups", get(followups_page))
        .route("/i/{token}/followups.json", get(followups_json))
        .route("/i/{token}/roll-call", post(answer_roll_call))
        .route("/i/{token}/followups/{id}/actions", post(followup_action))
        .route("/i/{token}/followups/{id}/act", post(followup_form))
}

/// What every invitee page's layout needs.
fn base(lang: Language, token: &str, inv: &InvitationContext, page: Value) -> Value {
    context! {
        lang => ui::lang_code(lang),
        csrf => csrf::link_token(token),
        here => format!("/i/{token}"),
        token,
        inv => Value::from_serialize(inv),
        who => inv.display_name(),
        ..page
    }
}

fn notice(
    lang: Language,
    status: StatusCode,
    title: &str,
    text: &str,
    back: Option<&str>,
) -> Response {
    let title = ui::translate(lang, title);
    match ui::render(
        "notice.html",
        context! { lang => ui::lang_code(lang), title, text, back, here => back.unwrap_or("/") },
    ) {
        Ok(html) => (status, html).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The invitation a request's link (`/i/{token}/…`) stands for, with the visitor's language.
/// An unknown or malformed link is answered with the "invalid link" page.
struct Link {
    token: String,
    inv: InvitationContext,
    lang: Language,
}

impl FromRequestParts<AppState> for Link {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Lang(lang) = Lang::from_request_parts(parts, state)
            .await
            .unwrap_or(Lang(state.config.language));
        let token = parts
            .uri
            .path()
            .strip_prefix("/i/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_string();
        let inv = find(state, lang, &token).await?;
        Ok(Link { token, inv, lang })
    }
}

/// The invitation behind a link; tokens are 40 hex characters.
async fn find(
    state: &AppState,
    lang: Language,
    token: &str,
) -> Result<InvitationContext, Response> {
    let not_found = || {
        notice(
            lang,
            StatusCode::NOT_FOUND,
            "invitee.bad_link",
            &ui::translate(lang, "invitee.bad_link_text"),
            None,
        )
    };
    if token.len() != 40 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    match state.store.invitation_by_link(&token_hash(token)).await {
        Ok(Some(inv)) => Ok(inv),
        Ok(None) => Err(not_found()),
        Err(e) => Err(AppError::from(e).into_response()),
    }
}

/// Why an invitation cannot join now, in the words of the page.
enum NoJoin {
    Cancelled,
    Declined,
    NotYet(chrono::DateTime<Utc>),
    Over,
}

fn may_join(
    state: &AppState,
    inv: &InvitationContext,
    now: chrono::DateTime<Utc>,
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

fn no_join_text(lang: Language, inv: &InvitationContext, reason: &NoJoin) -> String {
    let tz: chrono_tz::Tz = inv.timezone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
    match reason {
        NoJoin::Cancelled => ui::translate(lang, "invitee.join_cancelled"),
        NoJoin::Declined => ui::translate(lang, "invitee.join_declined"),
        NoJoin::Over => ui::translate(lang, "invitee.join_over"),
        NoJoin::NotYet(opens) => ui::translate(lang, "invitee.join_not_yet")
            .replace(
                "{at}",
                &opens
                    .with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M")
                    .to_string(),
            )
            .replace("{tz}", &inv.timezone),
    }
}

async fn show(State(state): State<AppState>, Link { token, inv, lang }: Link) -> Response {
    match invitation_page(&state, lang, &token, &inv, None).await {
        Ok(html) => private(html.into_response()),
        Err(e) => e.into_response(),
    }
}

async fn invitation_page(
    state: &AppState,
    lang: Language,
    token: &str,
    inv: &InvitationContext,
    error: Option<String>,
) -> Result<Html<String>, AppError> {
    let now = Utc::now();
    let roll_call = state.store.open_roll_call(&inv.room_name, now).await?;
    let answered = match &roll_call {
        Some(rc) => state
            .store
            .roll_call_answers(rc.id)
            .await?
            .iter()
            .any(|(i, _)| *i == inv.id),
        None => false,
    };
    let join = may_join(state, inv, now);
    let source = state
        .store
        .dispatch_template_source(inv.dispatch_id)
        .await?;
    let tier = usize::try_from(inv.tier_index).unwrap_or(usize::MAX);
    let agenda: Vec<_> = parse_template("snapshot", &source)
        .map(|t| t.agenda.into_iter().filter(|a| a.tier == tier).collect())
        .unwrap_or_default();
    let open_followups = unit_followups(state, inv)
        .await?
        .iter()
        .filter(|f| f.followup.status().is_ok_and(|s| !s.is_final()))
        .count();
    ui::render(
        "invitee.html",
        base(
            lang,
            token,
            inv,
            context! {
                agenda,
                roll_call => roll_call.is_some(),
                answered,
                may_join => join.is_ok(),
                no_join => join.err().map(|r| no_join_text(lang, inv, &r)),
                may_answer => inv.meeting_status == "scheduled",
                open_followups,
                error,
            },
        ),
    )
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
    Link { token, inv, lang }: Link,
    Form(answer): Form<Answer>,
) -> Response {
    let back = format!("/i/{token}");
    if inv.meeting_status != "scheduled" {
        return notice(
            lang,
            StatusCode::CONFLICT,
            "invitee.cannot_change",
            &ui::translate(lang, "invitee.cannot_change_text"),
            Some(&back),
        );
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
            return match invitation_page(&state, lang, &token, &inv, Some(e.to_string())).await {
                Ok(html) => (StatusCode::UNPROCESSABLE_ENTITY, html).into_response(),
                Err(e) => e.into_response(),
            };
        }
    };
    let actor = format!("invitee:{}", inv.id);
    if let Err(e) = state
        .store
        .confirm_invitation(inv.id, &confirmation, &actor)
        .await
    {
        return AppError::from(e).into_response();
    }
    Redirect::to(&back).into_response()
}

/// Mints a token and sends the invitee to the meeting client.
async fn join(State(state): State<AppState>, Link { token, inv, lang }: Link) -> Response {
    let now = Utc::now();
    if let Err(reason) = may_join(&state, &inv, now) {
        let status = if matches!(reason, NoJoin::NotYet(_)) {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        let text = no_join_text(lang, &inv, &reason);
        return notice(
            lang,
            status,
            "invitee.join",
            &text,
            Some(&format!("/i/{token}")),
        );
    }
    match state.livekit.join_token(&inv, now) {
        Ok(jwt) => Redirect::to(&state.livekit.join_url(&jwt)).into_response(),
        Err(e) => AppError::Internal(anyhow::anyhow!(e)).into_response(),
    }
}

/// `{url, token}` for custom clients; the same rules as `join`, as JSON errors.
async fn join_json(State(state): State<AppState>, Link { inv, lang, .. }: Link) -> Response {
    let now = Utc::now();
    if let Err(reason) = may_join(&state, &inv, now) {
        let text = no_join_text(lang, &inv, &reason);
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

/// Answers the roll call open in the invitation's room: a redirect back to the page for the
/// page's form, JSON for other clients.
async fn answer_roll_call(
    State(state): State<AppState>,
    Link { token, inv, lang }: Link,
    headers: axum::http::HeaderMap,
) -> Response {
    let now = Utc::now();
    let from_page = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    match state.store.open_roll_call(&inv.room_name, now).await {
        Ok(Some(rc)) => match state.store.answer_roll_call(rc.id, inv.id, now).await {
            Ok(()) if from_page => Redirect::to(&format!("/i/{token}")).into_response(),
            Ok(()) => axum::Json(serde_json::json!({"roll_call": rc.id, "answered": true}))
                .into_response(),
            Err(e) => AppError::from(e).into_response(),
        },
        Ok(None) => AppError::Conflict(ui::translate(lang, "invitee.no_roll_call")).into_response(),
        Err(e) => AppError::from(e).into_response(),
    }
}

/// The follow-ups assigned to the invitee's unit itself (enterprise heads have no staff
/// account).
async fn unit_followups(
    state: &AppState,
    inv: &InvitationContext,
) -> Result<Vec<FollowupView>, AppError> {
    let unit = state.store.unit(inv.unit_id).await?;
    own_followups(state, unit.id, &unit.path).await
}

async fn followups_json(State(state): State<AppState>, Link { inv, .. }: Link) -> Response {
    match unit_followups(&state, &inv).await {
        Ok(own) => axum::Json(own).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Assignee actions an invitee may take from the page.
const INVITEE_ACTIONS: [Action; 4] = [
    Action::Acknowledge,
    Action::Progress,
    Action::Submit,
    Action::RequestNotDoing,
];

async fn followups_page(
    State(state): State<AppState>,
    Link { token, inv, lang }: Link,
) -> Response {
    let page = async {
        let own = unit_followups(&state, &inv).await?;
        let mut rows = Vec::new();
        for v in &own {
            let status = v.followup.status()?;
            let open = usize::try_from(v.followup.open_children).unwrap_or(0);
            let actions: Vec<&str> = INVITEE_ACTIONS
                .iter()
                .filter(|a| transition(status, **a, a.side(), "text", open, false).is_ok())
                .map(|a| a.as_str())
                .collect();
            let timeline = state.store.followup_events(v.followup.id).await?;
            rows.push(context! { actions, timeline, ..Value::from_serialize(v) });
        }
        ui::render(
            "invitee_followups.html",
            base(lang, &token, &inv, context! { rows }),
        )
    }
    .await;
    match page {
        Ok(html) => private(html.into_response()),
        Err(e) => e.into_response(),
    }
}

async fn act_as_unit(
    state: &AppState,
    inv: &InvitationContext,
    id: i64,
    input: &TransitionInput,
) -> Result<crate::domain::followup::Status, AppError> {
    let actor = Actor::Unit {
        unit_id: inv.unit_id,
        name: inv.display_name(),
    };
    crate::followups::act(&state.store, &actor, id, input, Utc::now()).await
}

/// Acts on a follow-up of the invitee's unit, as its assignee (JSON).
async fn followup_action(
    State(state): State<AppState>,
    Link { inv, .. }: Link,
    Path((_, id)): Path<(String, i64)>,
    crate::http::extract::ApiJson(input): crate::http::extract::ApiJson<TransitionInput>,
) -> Response {
    match act_as_unit(&state, &inv, id, &input).await {
        Ok(status) => axum::Json(serde_json::json!({"id": id, "status": status})).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct ActForm {
    action: Action,
    #[serde(default)]
    text: String,
}

/// The same from the page's forms.
async fn followup_form(
    State(state): State<AppState>,
    Link { token, inv, .. }: Link,
    Path((_, id)): Path<(String, i64)>,
    Form(form): Form<ActForm>,
) -> Response {
    let input = TransitionInput {
        action: form.action,
        text: form.text,
        override_children: false,
    };
    match act_as_unit(&state, &inv, id, &input).await {
        Ok(_) => Redirect::to(&format!("/i/{token}/followups")).into_response(),
        Err(e) => e.into_response(),
    }
}
