//! Roll calls (点名): the host starts one with a time limit, invitees answer from their page
//! (or any client with the invitation's link token), and the result lists, per unit, who
//! answered, cross-checked with who was in the room.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::ApiJson;
use crate::dispatch;
use crate::domain::access::Principal;
use crate::error::{AppError, AppResult};
use crate::store::RollCall;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/meetings/{id}/roll-calls", post(start))
        .route("/roll-calls/{id}", get(result))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartInput {
    /// How long invitees have to answer: 10 s to 10 min.
    seconds: i64,
}

async fn start(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<StartInput>,
) -> AppResult<(StatusCode, Json<RollCall>)> {
    let rc = start_roll_call(&state, &principal, id, input.seconds).await?;
    Ok((StatusCode::CREATED, Json(rc)))
}

/// Starts a roll call in a live meeting; invitees have `seconds` to answer.
pub(crate) async fn start_roll_call(
    state: &AppState,
    principal: &Principal,
    id: i64,
    seconds: i64,
) -> AppResult<RollCall> {
    let meeting = state.store.meeting(id).await?;
    principal.require_write(&meeting.host_unit_path, &meeting.host_unit_name)?;
    if meeting.status != "live" {
        return Err(AppError::Conflict(format!(
            "a roll call needs the meeting live; it is {}",
            meeting.status
        )));
    }
    if !(10..=600).contains(&seconds) {
        return Err(AppError::invalid("seconds: between 10 and 600"));
    }
    let now = Utc::now();
    let rc = state
        .store
        .start_roll_call(
            meeting.id,
            &meeting.room_name,
            &principal.username,
            now,
            now + Duration::seconds(seconds),
        )
        .await?;
    Ok(rc)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnitAnswer {
    pub unit_id: i64,
    pub unit_name: String,
    pub answered: bool,
    /// Connected to the room at some time during the roll call.
    pub in_room: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct RollCallResult {
    #[serde(flatten)]
    pub roll_call: RollCall,
    pub open: bool,
    pub answered: usize,
    pub not_answered: usize,
    /// Answered without being in the room (a link used elsewhere?).
    pub answered_not_in_room: Vec<String>,
    /// In the room but did not answer.
    pub in_room_silent: Vec<String>,
    pub units: Vec<UnitAnswer>,
}

async fn result(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<RollCallResult>> {
    Ok(Json(roll_call_result(&state, &principal, id).await?))
}

/// A roll call's answers, cross-checked with who was in the room, for units in the caller's
/// part of the meeting.
pub(crate) async fn roll_call_result(
    state: &AppState,
    principal: &Principal,
    id: i64,
) -> AppResult<RollCallResult> {
    let rc = state.store.roll_call(id).await?;
    let meeting = state.store.meeting(rc.meeting_id).await?;
    let scope = dispatch::meeting_scope(&state.store, principal, &meeting).await?;
    let expected = state.store.room_expected(&rc.room_name).await?;
    let answers = state.store.roll_call_answers(id).await?;
    let intervals = state.store.intervals(&rc.room_name).await?;
    let mut units: BTreeMap<i64, UnitAnswer> = BTreeMap::new();
    for e in expected
        .iter()
        .filter(|e| e.role != "host" && e.unit_path.starts_with(&scope))
    {
        let answered = answers.iter().any(|(inv, _)| *inv == e.invitation_id);
        let in_room = intervals.iter().any(|i| {
            i.invitation_id == Some(e.invitation_id)
                && i.joined_at.is_some_and(|j| j < rc.ends_at)
                && i.ended_at().is_none_or(|end| end > rc.started_at)
        });
        let u = units.entry(e.unit_id).or_insert(UnitAnswer {
            unit_id: e.unit_id,
            unit_name: e.unit_name.clone(),
            answered: false,
            in_room: false,
        });
        u.answered |= answered;
        u.in_room |= in_room;
    }
    let units: Vec<UnitAnswer> = units.into_values().collect();
    Ok(RollCallResult {
        open: Utc::now() < rc.ends_at,
        answered: units.iter().filter(|u| u.answered).count(),
        not_answered: units.iter().filter(|u| !u.answered).count(),
        answered_not_in_room: units
            .iter()
            .filter(|u| u.answered && !u.in_room)
            .map(|u| u.unit_name.clone())
            .collect(),
        in_room_silent: units
            .iter()
            .filter(|u| !u.answered && u.in_room)
            .map(|u| u.unit_name.clone())
            .collect(),
        units,
        roll_call: rc,
    })
}
