//! `/api/v1/people`: contacts in the units of the caller's subtree.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery};
use super::units::Listing;
use super::{AppState, no_content, page_bounds};
use crate::domain::access::Principal;
use crate::domain::org::{Person, PersonRole, Unit, check_email, check_phone};
use crate::error::{AppError, AppResult};
use crate::store::{PersonFilter, PersonUpdate};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/people", get(list).post(create))
        .route("/people/{id}", get(show).patch(update).delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    unit_id: Option<i64>,
    role: Option<PersonRole>,
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> AppResult<Json<Listing<Person>>> {
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let filter = PersonFilter {
        scope_path: principal.unit_path.clone(),
        unit_id: query.unit_id,
        role: query.role,
        query: query.q,
        limit,
        offset,
    };
    let (items, total) = state.store.list_people(&filter).await?;
    Ok(Json(Listing {
        items,
        total,
        limit,
        offset,
    }))
}

/// The person and their unit, if the caller may read that unit.
async fn readable(state: &AppState, principal: &Principal, id: i64) -> AppResult<(Person, Unit)> {
    let person = state.store.person(id).await?;
    let unit = state.store.unit(person.unit_id).await?;
    principal.require_read(&unit.path, &unit.name)?;
    Ok((person, unit))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<Person>> {
    Ok(Json(readable(&state, &principal, id).await?.0))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPerson {
    unit_id: i64,
    name: String,
    roles: Vec<PersonRole>,
    email: Option<String>,
    mobile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonPatch {
    name: Option<String>,
    roles: Option<Vec<PersonRole>>,
    /// `""` clears it.
    email: Option<String>,
    /// `""` clears it.
    mobile: Option<String>,
}

/// Checks a person's fields; empty contact fields mean "none".
fn validated(update: PersonUpdate) -> AppResult<PersonUpdate> {
    let name = update.name.trim().to_string();
    if name.is_empty() {
        return Err(AppError::invalid("name: must not be empty"));
    }
    if update.roles.is_empty() {
        return Err(AppError::invalid("roles: give at least one role"));
    }
    let email = update
        .email
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    if let Some(e) = &email {
        check_email(e).map_err(|m| AppError::invalid(format!("email: {m}")))?;
    }
    let mobile = update
        .mobile
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    if let Some(m) = &mobile {
        check_phone(m).map_err(|e| AppError::invalid(format!("mobile: {e}")))?;
    }
    Ok(PersonUpdate {
        name,
        roles: update.roles,
        email,
        mobile,
    })
}

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewPerson>,
) -> AppResult<(StatusCode, Json<Person>)> {
    let unit = state.store.unit(body.unit_id).await?;
    principal.require_write(&unit.path, &unit.name)?;
    let person = validated(PersonUpdate {
        name: body.name,
        roles: body.roles,
        email: body.email,
        mobile: body.mobile,
    })?;
    let created = state
        .store
        .create_person(&unit, &person, &principal.username)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(patch): ApiJson<PersonPatch>,
) -> AppResult<Json<Person>> {
    let (person, unit) = readable(&state, &principal, id).await?;
    principal.require_write(&unit.path, &unit.name)?;
    let update = validated(PersonUpdate {
        name: patch.name.unwrap_or(person.name),
        roles: patch.roles.unwrap_or(person.roles),
        email: patch.email.or(person.email),
        mobile: patch.mobile.or(person.mobile),
    })?;
    Ok(Json(
        state
            .store
            .update_person(id, &update, &principal.username)
            .await?,
    ))
}

async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let (_, unit) = readable(&state, &principal, id).await?;
    principal.require_write(&unit.path, &unit.name)?;
    state.store.delete_person(id, &principal.username).await?;
    Ok(no_content())
}
