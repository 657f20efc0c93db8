//! The live attendance board of a meeting: who is expected, who is in the room now, grouped by
//! tier and region, the absent first. Pushed to browsers by server-sent events whenever a
//! webhook touches the room.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::error::AppError;
use crate::store::{MeetingRecord, Store};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub key: String,
    pub name: String,
    pub expected: usize,
    pub present: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AbsentUnit {
    pub unit_id: i64,
    pub unit_name: String,
    pub region: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Board {
    pub meeting_id: i64,
    pub status: String,
    /// Invited units (hosts not counted).
    pub expected_units: usize,
    pub present_units: usize,
    /// Units with nobody in the room now.
    pub absent: Vec<AbsentUnit>,
    pub by_tier: Vec<Group>,
    pub by_region: Vec<Group>,
    /// Connections without an invitation.
    pub guests: usize,
}

/// The board now, limited to invited units under `scope_path`.
pub async fn board(
    store: &Store,
    meeting: &MeetingRecord,
    scope_path: &str,
) -> Result<Board, AppError> {
    let expected = store.expected(meeting.id).await?;
    let intervals = store.intervals(&meeting.room_name).await?;
    let connected: HashSet<i64> = intervals
        .iter()
        .filter(|i| i.ended_at().is_none())
        .filter_map(|i| i.invitation_id)
        .collect();
    let guests = intervals
        .iter()
        .filter(|i| i.ended_at().is_none() && i.invitation_id.is_none())
        .count();
    // unit → (name, region, tier, present)
    let mut units: BTreeMap<i64, (String, String, String, bool)> = BTreeMap::new();
    for e in expected
        .iter()
        .filter(|e| e.role != "host" && e.unit_path.starts_with(scope_path))
    {
        let region = e
            .unit_path
            .strip_prefix(&meeting.host_unit_path)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("")
            .to_string();
        let entry = units
            .entry(e.unit_id)
            .or_insert_with(|| (e.unit_name.clone(), region, e.tier.clone(), false));
        entry.3 |= connected.contains(&e.invitation_id);
    }
    let mut by_tier: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut by_region: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut absent = Vec::new();
    for (id, (name, region, tier, present)) in &units {
        for (map, key) in [(&mut by_tier, tier), (&mut by_region, region)] {
            let g = map.entry(key.clone()).or_default();
            g.0 += 1;
            g.1 += usize::from(*present);
        }
        if !present {
            absent.push(AbsentUnit {
                unit_id: *id,
                unit_name: name.clone(),
                region: region.clone(),
            });
        }
    }
    let mut regions = Vec::new();
    for (code, (expected, present)) in by_region {
        let name = match code.as_str() {
            "" => meeting.host_unit_name.clone(),
            c => store
                .unit_by_code(c)
                .await
                .map(|u| u.name)
                .unwrap_or_else(|_| c.to_string()),
        };
        regions.push(Group {
            key: code,
            name,
            expected,
            present,
        });
    }
    // Least present first.
    regions.sort_by(|a, b| (a.present * b.expected.max(1)).cmp(&(b.present * a.expected.max(1))));
    Ok(Board {
        meeting_id: meeting.id,
        status: meeting.status.clone(),
        expected_units: units.len(),
        present_units: units.values().filter(|u| u.3).count(),
        absent,
        by_tier: by_tier
            .into_iter()
            .map(|(k, (expected, present))| Group {
                name: k.clone(),
                key: k,
                expected,
                present,
            })
            .collect(),
        by_region: regions,
        guests,
    })
}
