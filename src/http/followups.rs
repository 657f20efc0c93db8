//! `/api/v1/follow-ups`: follow-ups (督办) in the caller's subtree, their actions, delegation,
//! attachments, and the closure roll-up (JSON, CSV or XLSX). Action items are recorded on
//! meetings: `/api/v1/meetings/{id}/action-items`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::extract::{ApiJson, ApiQuery};
use super::units::Listing;
use super::{AppState, page_bounds};
use crate::domain::access::Principal;
use crate::domain::followup::{Colour, Status, Thresholds, colour, days_overdue};
use crate::error::{AppError, AppResult};
use crate::followups::{self, ActionItemInput, Actor, DelegateInput, RollupLine, TransitionInput};
use crate::store::{FollowupEvent, FollowupFilter, FollowupRecord, Grouping};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/meetings/{id}/action-items", post(record))
        .route("/meetings/{id}/action-items/prefill", post(prefill))
        .route("/follow-ups", get(list))
        .route("/follow-ups/rollup", get(rollup))
        .route("/follow-ups/{id}", get(show))
        .route("/follow-ups/{id}/actions", post(act))
        .route("/follow-ups/{id}/delegate", post(delegate))
        // Attachments have their own size limit (followups.attachment_max_bytes), checked in the
        // handler; this cap only bounds what is buffered.
        .route(
            "/follow-ups/{id}/attachments",
            post(upload).layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024)),
        )
        .route("/attachments/{id}", get(download))
}

pub fn thresholds(state: &AppState) -> Thresholds {
    Thresholds {
        yellow_days: i64::from(state.config.followups.yellow_days),
        yellow_percent: i64::from(state.config.followups.yellow_percent),
    }
}

async fn record(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<ActionItemInput>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let (item, followups) =
        followups::record_action_item(&state.store, &principal, id, &input, Utc::now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"action_item_id": item, "followups": followups})),
    ))
}

async fn prefill(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let (items, followups) =
        followups::prefill_action_items(&state.store, &principal, id, Utc::now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"action_items": items, "followups": followups})),
    ))
}

/// A follow-up as listed: with its deadline colour and days overdue now.
#[derive(Serialize)]
pub struct FollowupView {
    #[serde(flatten)]
    pub followup: FollowupRecord,
    pub colour: Colour,
    pub days_overdue: i64,
}

pub(crate) fn view(f: FollowupRecord, now: DateTime<Utc>, t: Thresholds) -> FollowupView {
    let status: Status = f.status.parse().unwrap_or(Status::Assigned);
    let days = if status.is_final() {
        0
    } else {
        days_overdue(f.due_at, now)
    };
    FollowupView {
        colour: colour(status, f.assigned_at, f.due_at, now, t),
        days_overdue: days,
        followup: f,
    }
}

/// The follow-ups assigned to the unit itself (not below it), by due date, with colours.
pub(crate) async fn own_followups(
    state: &AppState,
    unit_id: i64,
    unit_path: &str,
) -> AppResult<Vec<FollowupView>> {
    let filter = FollowupFilter {
        scope_path: unit_path.to_string(),
        assignee_unit_id: Some(unit_id),
        limit: crate::http::MAX_PAGE,
        ..Default::default()
    };
    let (items, _) = state.store.list_followups(&filter).await?;
    let (now, t) = (Utc::now(), thresholds(state));
    Ok(items.into_iter().map(|f| view(f, now, t)).collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<Status>,
    /// Code of a unit in the caller's subtree: only follow-ups under it.
    unit: Option<String>,
    dispatch: Option<i64>,
    due_from: Option<DateTime<Utc>>,
    due_to: Option<DateTime<Utc>>,
    colour: Option<Colour>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn scope_of(
    state: &AppState,
    principal: &Principal,
    unit: &Option<String>,
) -> AppResult<String> {
    match unit {
        None => Ok(principal.unit_path.clone()),
        Some(code) => {
            let unit = state.store.unit_by_code(code.trim()).await?;
            principal.require_read(&unit.path, &unit.name)?;
            Ok(unit.path)
        }
    }
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> AppResult<Json<Listing<FollowupView>>> {
    let (limit, offset) = page_bounds(q.limit, q.offset)?;
    let now = Utc::now();
    let t = thresholds(&state);
    let mut filter = FollowupFilter {
        scope_path: scope_of(&state, &principal, &q.unit).await?,
        assignee_unit_id: None,
        status: q.status,
        dispatch_id: q.dispatch,
        due_from: q.due_from,
        due_to: q.due_to,
        limit,
        offset,
    };
    let Some(wanted) = q.colour else {
        let (items, total) = state.store.list_followups(&filter).await?;
        return Ok(Json(Listing {
            items: items.into_iter().map(|f| view(f, now, t)).collect(),
            total,
            limit,
            offset,
        }));
    };
    // Colour depends on the clock: narrow by due date in SQL, then by colour here.
    match wanted {
        Colour::Red => filter.due_to = Some(filter.due_to.map_or(now, |d| d.min(now))),
        Colour::Green | Colour::Yellow => {
            filter.due_from = Some(filter.due_from.map_or(now, |d| d.max(now)))
        }
        Colour::None => {}
    }
    filter.limit = 100_000;
    filter.offset = 0;
    let (items, _) = state.store.list_followups(&filter).await?;
    let matching: Vec<FollowupView> = items
        .into_iter()
        .map(|f| view(f, now, t))
        .filter(|v| v.colour == wanted)
        .collect();
    let total = matching.len() as i64;
    let items = matching
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    Ok(Json(Listing {
        items,
        total,
        limit,
        offset,
    }))
}

/// The caller may see a follow-up assigned in its subtree, or one its unit assigned.
fn require_visible(principal: &Principal, f: &FollowupRecord) -> AppResult<()> {
    if principal.can_read(&f.assignee_path) || principal.can_read(&f.assigner_path) {
        Ok(())
    } else {
        Err(AppError::ForbiddenOther(format!(
            "{} is outside the scope of your account",
            f.assignee_name
        )))
    }
}

#[derive(Serialize)]
pub(crate) struct Detail {
    #[serde(flatten)]
    pub followup: FollowupView,
    pub timeline: Vec<FollowupEvent>,
    pub children: Vec<FollowupView>,
    pub attachments: Vec<crate::store::AttachmentRecord>,
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Json<Value>> {
    let detail = detail(&state, &principal, id).await?;
    Ok(Json(
        serde_json::to_value(detail).map_err(|e| AppError::Internal(e.into()))?,
    ))
}

/// A follow-up with its timeline, delegated children and attachments, if the caller may see it.
pub(crate) async fn detail(state: &AppState, principal: &Principal, id: i64) -> AppResult<Detail> {
    let f = state.store.followup(id).await?;
    require_visible(principal, &f)?;
    let now = Utc::now();
    let t = thresholds(state);
    Ok(Detail {
        timeline: state.store.followup_events(id).await?,
        children: state
            .store
            .followup_children(id)
            .await?
            .into_iter()
            .map(|c| view(c, now, t))
            .collect(),
        attachments: state.store.attachments(id).await?,
        followup: view(f, now, t),
    })
}

async fn act(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<TransitionInput>,
) -> AppResult<Json<Value>> {
    let status = followups::act(
        &state.store,
        &Actor::Staff(&principal),
        id,
        &input,
        Utc::now(),
    )
    .await?;
    Ok(Json(json!({"id": id, "status": status})))
}

async fn delegate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiJson(input): ApiJson<DelegateInput>,
) -> AppResult<(StatusCode, Json<Value>)> {
    let n = followups::delegate(
        &state.store,
        &Actor::Staff(&principal),
        id,
        &input,
        Utc::now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({"delegated": n}))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollupQuery {
    /// `region` (default) or `tier`.
    group: Option<String>,
    /// Drill down: a unit code in the caller's subtree.
    unit: Option<String>,
    dispatch: Option<i64>,
    due_from: Option<DateTime<Utc>>,
    due_to: Option<DateTime<Utc>>,
    /// `json` (default), `csv` or `xlsx`.
    format: Option<String>,
}

async fn rollup(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<RollupQuery>,
) -> AppResult<Response> {
    let lines = rollup_lines(
        &state,
        &principal,
        q.group.as_deref(),
        &q.unit,
        q.dispatch,
        q.due_from,
        q.due_to,
    )
    .await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(lines).into_response()),
        "csv" => Ok(download_file(
            "text/csv; charset=utf-8",
            "followup-closure.csv",
            rollup_csv(&lines)?,
        )),
        "xlsx" => Ok(download_file(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "followup-closure.xlsx",
            rollup_xlsx(&lines)?,
        )),
        other => Err(AppError::invalid(format!(
            "format: {other:?}; use json, csv or xlsx"
        ))),
    }
}

/// The closure roll-up by `region` (default) or `tier`, at the caller's unit or drilled down
/// into `unit` (a code in its subtree).
pub(crate) async fn rollup_lines(
    state: &AppState,
    principal: &Principal,
    group: Option<&str>,
    unit: &Option<String>,
    dispatch: Option<i64>,
    due_from: Option<DateTime<Utc>>,
    due_to: Option<DateTime<Utc>>,
) -> AppResult<Vec<RollupLine>> {
    let grouping = match group.unwrap_or("region") {
        "region" => Grouping::Region,
        "tier" => Grouping::Tier,
        other => {
            return Err(AppError::invalid(format!(
                "group: {other:?}; use region or tier"
            )));
        }
    };
    let scope = scope_of(state, principal, unit).await?;
    let unit = state
        .store
        .unit_by_code(scope.trim_end_matches('/').rsplit('/').next().unwrap_or(""))
        .await?;
    let scoped = Principal {
        unit_path: scope,
        unit_id: unit.id,
        unit_name: unit.name,
        ..principal.clone()
    };
    followups::rollup(
        &state.store,
        &scoped,
        grouping,
        dispatch,
        due_from,
        due_to,
        Utc::now(),
    )
    .await
}

const HEADERS: [&str; 8] = [
    "单位/层级",
    "事项总数",
    "已办结",
    "已撤销",
    "逾期",
    "平均逾期天数",
    "办结率(%)",
    "编码",
];

fn row_cells(l: &RollupLine) -> [String; 8] {
    [
        l.name.clone(),
        l.closure.total.to_string(),
        l.closure.closed.to_string(),
        l.closure.cancelled.to_string(),
        l.closure.overdue.to_string(),
        l.average_days_overdue
            .map(|d| format!("{d:.1}"))
            .unwrap_or_default(),
        l.rate.map(|r| format!("{r:.1}")).unwrap_or_default(),
        l.key.clone(),
    ]
}

/// UTF-8 with a BOM, so spreadsheet programs show the Chinese.
fn rollup_csv(lines: &[RollupLine]) -> AppResult<Vec<u8>> {
    let mut out = b"\xEF\xBB\xBF".to_vec();
    {
        let mut w = csv::Writer::from_writer(&mut out);
        w.write_record(HEADERS)
            .map_err(|e| AppError::Internal(e.into()))?;
        for l in lines {
            w.write_record(row_cells(l))
                .map_err(|e| AppError::Internal(e.into()))?;
        }
        w.flush().map_err(|e| AppError::Internal(e.into()))?;
    }
    Ok(out)
}

fn rollup_xlsx(lines: &[RollupLine]) -> AppResult<Vec<u8>> {
    use rust_xlsxwriter::{Format, Workbook};
    let internal = |e: rust_xlsxwriter::XlsxError| AppError::Internal(e.into());
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("督办办结情况").map_err(internal)?;
    let bold = Format::new().set_bold();
    for (c, h) in HEADERS.iter().enumerate() {
        sheet
            .write_string_with_format(0, c as u16, *h, &bold)
            .map_err(internal)?;
    }
    for (r, l) in lines.iter().enumerate() {
        let r = r as u32 + 1;
        sheet.write_string(r, 0, &l.name).map_err(internal)?;
        for (c, v) in [
            l.closure.total,
            l.closure.closed,
            l.closure.cancelled,
            l.closure.overdue,
        ]
        .into_iter()
        .enumerate()
        {
            sheet
                .write_number(r, c as u16 + 1, v as f64)
                .map_err(internal)?;
        }
        if let Some(d) = l.average_days_overdue {
            sheet.write_number(r, 5, d).map_err(internal)?;
        }
        if let Some(rate) = l.rate {
            sheet.write_number(r, 6, rate).map_err(internal)?;
        }
        sheet.write_string(r, 7, &l.key).map_err(internal)?;
    }
    sheet.set_column_width(0, 24).map_err(internal)?;
    book.save_to_buffer().map_err(internal)
}

fn download_file(content_type: &str, name: &str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            // RFC 6266: an ASCII fallback, and the real (often Chinese) name encoded.
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"download\"; filename*=UTF-8''{}",
                    crate::livekit::percent_encode(name)
                ),
            ),
        ],
        body,
    )
        .into_response()
}

/// Content types accepted for attachments (reports, scans, photos, office documents).
const ALLOWED_TYPES: &[&str] = &[
    "application/pdf",
    "image/jpeg",
    "image/png",
    "text/plain",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/msword",
    "application/vnd.ms-excel",
];

/// Whether the bytes look like what the content type claims (magic numbers).
fn content_matches(content_type: &str, bytes: &[u8]) -> bool {
    match content_type {
        "application/pdf" => bytes.starts_with(b"%PDF"),
        "image/jpeg" => bytes.starts_with(&[0xFF, 0xD8, 0xFF]),
        "image/png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "text/plain" => std::str::from_utf8(bytes).is_ok(),
        t if t.contains("openxmlformats") => bytes.starts_with(b"PK\x03\x04"),
        _ => bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    name: String,
}

/// Uploads an attachment: the raw body, its `Content-Type`, `?name=` the file name. Only the
/// assignee side may add to its report.
async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> AppResult<(StatusCode, Json<crate::store::AttachmentRecord>)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let record = attach(&state, &principal, id, &q.name, content_type, &body).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// Adds a file to the assignee's report: checks side, type (declared and by content), size
/// and name, then stores it.
pub(crate) async fn attach(
    state: &AppState,
    principal: &Principal,
    id: i64,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> AppResult<crate::store::AttachmentRecord> {
    let f = state.store.followup(id).await?;
    if !Actor::Staff(principal)
        .sides(&f)
        .contains(&crate::domain::followup::Side::Assignee)
    {
        return Err(AppError::ForbiddenOther(format!(
            "only {} may attach files to its report",
            f.assignee_name
        )));
    }
    let content_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_lowercase();
    if !ALLOWED_TYPES.contains(&content_type.as_str()) {
        return Err(AppError::invalid(format!(
            "Content-Type {content_type:?} is not accepted; send PDF, JPEG, PNG, text or Office documents"
        )));
    }
    let max = state.config.followups.attachment_max_bytes;
    if body.len() as u64 > max {
        return Err(AppError::invalid(format!(
            "the file is {} bytes; at most {max} are accepted",
            body.len()
        )));
    }
    if body.is_empty() || !content_matches(&content_type, body) {
        return Err(AppError::invalid(format!(
            "the file's content is not {content_type}"
        )));
    }
    let name = name.trim().replace(['/', '\\'], "_");
    if name.is_empty() || name.len() > 200 {
        return Err(AppError::invalid(
            "name: give the file name (at most 200 bytes)",
        ));
    }
    crate::attachments::save(
        &state.store,
        &state.config.followups.attachments_dir,
        id,
        &name,
        &content_type,
        body,
        &principal.username,
    )
    .await
}

async fn download(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<i64>,
) -> AppResult<Response> {
    let record = state.store.attachment(id).await?;
    let f = state.store.followup(record.followup_id).await?;
    require_visible(&principal, &f)?;
    let bytes =
        crate::attachments::load(&state.config.followups.attachments_dir, &record.sha256).await?;
    Ok(download_file(
        &record.content_type,
        &record.file_name,
        bytes,
    ))
}
