//! Meetings after publication: their status, and moving them in time. Pure.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::agenda::{AgendaTemplate, StartRule};
use super::cascade::schedule;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingStatus {
    Scheduled,
    Live,
    Finished,
    Cancelled,
}

impl MeetingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MeetingStatus::Scheduled => "scheduled",
            MeetingStatus::Live => "live",
            MeetingStatus::Finished => "finished",
            MeetingStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for MeetingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MeetingStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "scheduled" => Ok(MeetingStatus::Scheduled),
            "live" => Ok(MeetingStatus::Live),
            "finished" => Ok(MeetingStatus::Finished),
            "cancelled" => Ok(MeetingStatus::Cancelled),
            other => Err(format!("unknown meeting status {other:?}")),
        }
    }
}

/// What rescheduling needs to know of a stored meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingTimes {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub tier_index: usize,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub offset_minutes: i64,
    pub status: MeetingStatus,
}

/// A meeting whose time changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moved {
    pub id: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub offset_minutes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    #[error("meeting {0} is not part of this dispatch")]
    Unknown(i64),
    #[error("meeting {id} is {status}; only scheduled meetings can be moved")]
    NotScheduled { id: i64, status: MeetingStatus },
    #[error("a sub-venue is held during the call it joins; move that call instead")]
    SubVenue,
    #[error(
        "the template allows moving this meeting by at most {allowed} from its planned time ({planned}); {requested} is {by} away"
    )]
    OutsideWindow {
        allowed: String,
        planned: DateTime<Utc>,
        requested: DateTime<Utc>,
        by: String,
    },
    #[error("a follow-on meeting cannot start before the meeting it follows ends ({0})")]
    BeforeParent(DateTime<Utc>),
    #[error("the new time is in the past")]
    InThePast,
}

fn minutes_text(minutes: i64) -> String {
    super::agenda::Span(Duration::minutes(minutes.abs())).to_string()
}

/// Recomputes every meeting's time from the root's start, each tier's rule and each meeting's
/// own offset; returns the meetings whose time changes. Cancelled and finished meetings stay
/// as they are.
pub fn recompute(
    template: &AgendaTemplate,
    meetings: &[MeetingTimes],
    root_start: DateTime<Utc>,
) -> Vec<Moved> {
    let mut times: std::collections::HashMap<i64, (DateTime<Utc>, DateTime<Utc>)> =
        std::collections::HashMap::new();
    let mut moved = Vec::new();
    // Parents are stored before their children, so ids ascend down the tree.
    let mut ordered: Vec<&MeetingTimes> = meetings.iter().collect();
    ordered.sort_by_key(|m| m.id);
    for m in ordered {
        let tier = &template.tiers[m.tier_index];
        let parent = m.parent_id.and_then(|p| times.get(&p).copied());
        let (base_start, _) = schedule(tier, template.timezone, parent, root_start);
        let (start, end) = if tier.joins_parent() {
            parent.unwrap_or((m.starts_at, m.ends_at))
        } else {
            let start = base_start + Duration::minutes(m.offset_minutes);
            (start, start + tier.duration.0)
        };
        let frozen = matches!(m.status, MeetingStatus::Cancelled | MeetingStatus::Finished);
        let (start, end) = if frozen {
            (m.starts_at, m.ends_at)
        } else {
            (start, end)
        };
        times.insert(m.id, (start, end));
        if !frozen && (start, end) != (m.starts_at, m.ends_at) {
            moved.push(Moved {
                id: m.id,
                starts_at: start,
                ends_at: end,
                offset_minutes: m.offset_minutes,
            });
        }
    }
    moved
}

/// Moves one meeting to `new_start` within the window its tier allows; dependent meetings
/// move with it. `root_start` is the dispatch's planned start.
pub fn move_meeting(
    template: &AgendaTemplate,
    meetings: &[MeetingTimes],
    root_start: DateTime<Utc>,
    id: i64,
    new_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Moved>, MoveError> {
    let target = meetings
        .iter()
        .find(|m| m.id == id)
        .ok_or(MoveError::Unknown(id))?;
    if target.status != MeetingStatus::Scheduled {
        return Err(MoveError::NotScheduled {
            id,
            status: target.status,
        });
    }
    if new_start <= now {
        return Err(MoveError::InThePast);
    }
    let tier = &template.tiers[target.tier_index];
    if tier.joins_parent() {
        return Err(MoveError::SubVenue);
    }
    // Where the rule alone would put it (without its current offset).
    let planned = target.starts_at - Duration::minutes(target.offset_minutes);
    let offset = (new_start - planned).num_minutes();
    if target.parent_id.is_some() && offset.abs() > tier.move_within.minutes() {
        return Err(MoveError::OutsideWindow {
            allowed: tier.move_within.to_string(),
            planned,
            requested: new_start,
            by: minutes_text(offset),
        });
    }
    if let Some(parent) = target
        .parent_id
        .and_then(|p| meetings.iter().find(|m| m.id == p))
        && matches!(
            tier.start,
            Some(StartRule::AfterParent(_)) | Some(StartRule::NextWorkday(_))
        )
        && new_start < parent.ends_at
    {
        return Err(MoveError::BeforeParent(parent.ends_at));
    }
    let mut updated: Vec<MeetingTimes> = meetings.to_vec();
    let root_start = if target.parent_id.is_none() {
        new_start
    } else {
        root_start
    };
    for m in updated
        .iter_mut()
        .filter(|m| m.id == id && m.parent_id.is_some())
    {
        m.offset_minutes = offset;
    }
    let mut moved = recompute(template, &updated, root_start);
    // The moved meeting reports its new offset even if only the offset changed.
    for m in moved
        .iter_mut()
        .filter(|m| m.id == id && target.parent_id.is_some())
    {
        m.offset_minutes = offset;
    }
    if let Some(blocked) = moved
        .iter()
        .filter_map(|mv| meetings.iter().find(|m| m.id == mv.id))
        .find(|m| m.status != MeetingStatus::Scheduled)
    {
        return Err(MoveError::NotScheduled {
            id: blocked.id,
            status: blocked.status,
        });
    }
    Ok(moved)
}

/// The meeting and every meeting below it.
pub fn subtree(meetings: &[MeetingTimes], id: i64) -> Vec<i64> {
    let mut out = vec![id];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            meetings
                .iter()
                .filter(|m| m.parent_id == Some(parent))
                .map(|m| m.id),
        );
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::agenda::parse_template;
    use chrono::TimeZone;

    fn template() -> AgendaTemplate {
        let path = format!(
            "{}/agendas/coal-mine-resumption.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        parse_template(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2026, 12, 4, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// province call 09:00–10:30, a sub-venue, a city meeting 12:30–13:30, a district meeting
    /// Monday 09:00.
    fn tree() -> Vec<MeetingTimes> {
        let monday = chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2026, 12, 7, 9, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let m = |id, parent, tier_index, s: DateTime<Utc>, e: DateTime<Utc>| MeetingTimes {
            id,
            parent_id: parent,
            tier_index,
            starts_at: s,
            ends_at: e,
            offset_minutes: 0,
            status: MeetingStatus::Scheduled,
        };
        vec![
            m(1, None, 0, at(9, 0), at(10, 30)),
            m(2, Some(1), 1, at(9, 0), at(10, 30)),
            m(3, Some(1), 2, at(12, 30), at(13, 30)),
            m(4, Some(3), 3, monday, monday + Duration::hours(1)),
        ]
    }

    #[test]
    fn moving_the_root_moves_everything_that_depends_on_it() {
        let moved = move_meeting(&template(), &tree(), at(9, 0), 1, at(10, 0), at(8, 0)).unwrap();
        let ids: Vec<i64> = moved.iter().map(|m| m.id).collect();
        // The district meeting stays on Monday 09:00: its rule depends on the day only.
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(
            moved[1].starts_at,
            at(10, 0),
            "the sub-venue follows its call"
        );
        assert_eq!(moved[2].starts_at, at(13, 30));
    }

    #[test]
    fn a_host_moves_its_meeting_within_the_window_and_dependents_follow() {
        let t = template();
        let moved = move_meeting(&t, &tree(), at(9, 0), 3, at(15, 0), at(8, 0)).unwrap();
        assert_eq!(moved.len(), 1, "the district meeting keeps Monday 09:00");
        assert_eq!(
            (moved[0].starts_at, moved[0].offset_minutes),
            (at(15, 0), 150)
        );

        let too_far = move_meeting(&t, &tree(), at(9, 0), 3, at(17, 0), at(8, 0)).unwrap_err();
        assert!(
            matches!(too_far, MoveError::OutsideWindow { .. }),
            "{too_far}"
        );
        assert!(too_far.to_string().contains("at most 4h"), "{too_far}");
        let early = move_meeting(&t, &tree(), at(9, 0), 3, at(10, 0), at(8, 0)).unwrap_err();
        assert!(matches!(early, MoveError::BeforeParent(_)), "{early}");
        assert_eq!(
            move_meeting(&t, &tree(), at(9, 0), 2, at(10, 0), at(8, 0)).unwrap_err(),
            MoveError::SubVenue
        );
        assert_eq!(
            move_meeting(&t, &tree(), at(9, 0), 3, at(13, 0), at(14, 0)).unwrap_err(),
            MoveError::InThePast
        );

        // After the move, moving the root keeps the host's offset.
        let mut stored = tree();
        stored[2].starts_at = at(15, 0);
        stored[2].ends_at = at(16, 0);
        stored[2].offset_minutes = 150;
        let moved = move_meeting(&t, &stored, at(9, 0), 1, at(9, 30), at(8, 0)).unwrap();
        let city = moved.iter().find(|m| m.id == 3).unwrap();
        assert_eq!(city.starts_at, at(15, 30));
    }

    #[test]
    fn live_meetings_cannot_be_moved_or_dragged_along() {
        let mut stored = tree();
        stored[2].status = MeetingStatus::Live;
        let e = move_meeting(&template(), &stored, at(9, 0), 1, at(9, 30), at(8, 0)).unwrap_err();
        assert_eq!(
            e,
            MoveError::NotScheduled {
                id: 3,
                status: MeetingStatus::Live
            }
        );
    }

    #[test]
    fn subtree_collects_descendants() {
        assert_eq!(subtree(&tree(), 1), [1, 2, 3, 4]);
        assert_eq!(subtree(&tree(), 3), [3, 4]);
    }
}
