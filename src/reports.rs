//! Attendance reports: computed from the ledger when a meeting ends (and on demand), with the
//! roll-up per unit, region and tier, exports, and the "explain your absence" follow-ups.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::report::{AttendanceStatus, Rate, Rules, Span, attendance};
use crate::error::AppError;
use crate::store::{Assignee, MeetingRecord, NewActionItem, ResultRow, Store};

pub const ABSENCE_TITLE: &str = "说明缺席原因";

/// Computes and stores a meeting's report from its room's ledger, then assigns each absent
/// unit a follow-up to explain its absence (once per meeting). Returns the lines.
pub async fn finalise(
    store: &Store,
    meeting: &MeetingRecord,
    rules: Rules,
    now: DateTime<Utc>,
) -> Result<usize, AppError> {
    let expected = store.expected(meeting.id).await?;
    let intervals = store.intervals(&meeting.room_name).await?;
    let mut by_invitation: HashMap<i64, Vec<Span>> = HashMap::new();
    for i in &intervals {
        if let (Some(inv), Some(joined)) = (i.invitation_id, i.joined_at) {
            by_invitation.entry(inv).or_default().push(Span {
                joined,
                ended: i.ended_at(),
            });
        }
    }
    let start = meeting.planned_start;
    let end = meeting.actual_end.unwrap_or(meeting.planned_end).max(start);
    let lines: Vec<(i64, crate::domain::report::Attendance)> = expected
        .iter()
        .map(|e| {
            let spans = by_invitation
                .get(&e.invitation_id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let declined = e.rsvp == "declined"
                && e.decline_reason
                    .as_deref()
                    .is_some_and(|r| !r.trim().is_empty());
            (
                e.invitation_id,
                attendance(spans, start, end, declined, rules),
            )
        })
        .collect();
    store.save_report(meeting.id, &lines, now).await?;

    // Units none of whose people came, and who did not excuse themselves.
    let mut units: BTreeMap<i64, (bool, &crate::store::ExpectedRow)> = BTreeMap::new();
    for (e, (_, a)) in expected.iter().zip(&lines) {
        if e.role == "host" {
            continue;
        }
        let entry = units.entry(e.unit_id).or_insert((true, e));
        entry.0 &= a.status == AttendanceStatus::Absent;
    }
    let absent: Vec<Assignee> = units
        .values()
        .filter(|(absent, _)| *absent)
        .map(|(_, e)| Assignee {
            unit_id: e.unit_id,
            path: e.unit_path.clone(),
            level: String::new(),
            tier: e.tier.clone(),
        })
        .collect();
    if !absent.is_empty() && !store.action_item_exists(meeting.id, ABSENCE_TITLE).await? {
        let item = NewActionItem {
            dispatch_id: Some(meeting.dispatch_id),
            meeting_id: Some(meeting.id),
            issuer_unit_id: meeting.host_unit_id,
            title: ABSENCE_TITLE.into(),
            description: format!("贵单位未参加“{}”，请书面说明缺席原因。", meeting.title),
            due_at: now + chrono::Duration::days(3),
            delegable: false,
            assignees: absent,
        };
        store.create_action_item(&item, "muster", now).await?;
    }
    Ok(lines.len())
}

/// One group's figures in the report summary.
#[derive(Debug, Clone, Serialize)]
pub struct RateLine {
    pub key: String,
    pub name: String,
    #[serde(flatten)]
    pub rate: Rate,
    pub attendance_rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub total: RateLine,
    pub by_unit: Vec<RateLine>,
    pub by_region: Vec<RateLine>,
    pub by_tier: Vec<RateLine>,
}

/// Rates per unit, per region (the unit right below `scope_path` each line lies under) and
/// per tier.
pub async fn summarise(
    store: &Store,
    rows: &[ResultRow],
    scope_path: &str,
) -> Result<Summary, AppError> {
    let mut total = Rate::default();
    let mut units: BTreeMap<String, (String, Rate)> = BTreeMap::new();
    let mut regions: BTreeMap<String, Rate> = BTreeMap::new();
    let mut tiers: BTreeMap<String, Rate> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.role != "host") {
        let status: AttendanceStatus =
            serde_json::from_value(serde_json::Value::String(r.status.clone()))
                .map_err(|e| AppError::Internal(e.into()))?;
        total.count(status);
        units
            .entry(r.unit_code.clone())
            .or_insert_with(|| (r.unit_name.clone(), Rate::default()))
            .1
            .count(status);
        let region = r
            .unit_path
            .strip_prefix(scope_path)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("")
            .to_string();
        regions.entry(region).or_default().count(status);
        tiers.entry(r.tier.clone()).or_default().count(status);
    }
    let line = |key: String, name: String, rate: Rate| RateLine {
        attendance_rate: rate.rate(),
        key,
        name,
        rate,
    };
    let mut by_region = Vec::new();
    for (code, rate) in regions {
        let name = if code.is_empty() {
            "（本级）".to_string()
        } else {
            store
                .unit_by_code(&code)
                .await
                .map(|u| u.name)
                .unwrap_or_else(|_| code.clone())
        };
        by_region.push(line(code, name, rate));
    }
    // Lowest attendance first: who to chase.
    let worst_first = |a: &RateLine, b: &RateLine| {
        a.attendance_rate
            .partial_cmp(&b.attendance_rate)
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    by_region.sort_by(worst_first);
    let mut by_unit: Vec<RateLine> = units.into_iter().map(|(k, (n, r))| line(k, n, r)).collect();
    by_unit.sort_by(worst_first);
    Ok(Summary {
        total: line(String::new(), "合计".into(), total),
        by_unit,
        by_region,
        by_tier: tiers
            .into_iter()
            .map(|(k, r)| line(k.clone(), k, r))
            .collect(),
    })
}

pub const COLUMNS: [&str; 10] = [
    "单位",
    "人员",
    "参会身份",
    "层级",
    "首次入会",
    "最后离会",
    "在线时长(分钟)",
    "重连次数",
    "状态",
    "单位编码",
];

pub fn cells(r: &ResultRow, tz: chrono_tz::Tz) -> [String; 10] {
    let time = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    };
    let status: Option<AttendanceStatus> =
        serde_json::from_value(serde_json::Value::String(r.status.clone())).ok();
    [
        r.unit_name.clone(),
        r.person_name.clone().unwrap_or_default(),
        r.role.clone(),
        r.tier.clone(),
        time(r.first_join),
        time(r.last_leave),
        format!("{:.1}", r.connected_seconds as f64 / 60.0),
        r.reconnects.to_string(),
        status.map_or(r.status.clone(), |s| s.label_zh().to_string()),
        r.unit_code.clone(),
    ]
}

/// The `meeting.report` job: finalises the report once the meeting has ended.
pub fn report_handler(
    store: Store,
    clock: std::sync::Arc<dyn crate::jobs::Clock>,
    rules: Rules,
) -> crate::jobs::Handler {
    std::sync::Arc::new(move |payload| {
        let (store, clock) = (store.clone(), clock.clone());
        Box::pin(async move {
            let id = payload["meeting_id"]
                .as_i64()
                .ok_or_else(|| crate::jobs::JobFailure::Permanent("meeting_id missing".into()))?;
            let meeting = store.meeting(id).await?;
            finalise(&store, &meeting, rules, clock.now())
                .await
                .map_err(|e| crate::jobs::JobFailure::Retry(e.to_string()))?;
            Ok(())
        })
    })
}
