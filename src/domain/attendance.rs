//! What a LiveKit webhook event means for the attendance ledger. Pure: the event in, the
//! change out. The store applies changes so that any order and any repetition of the same
//! events gives the same ledger (earliest join, latest explicit leave, room end as fallback).

use chrono::{DateTime, TimeZone, Utc};
use livekit_protocol::{ParticipantInfo, WebhookEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    Left,
    /// The participant never became active (`participant_connection_aborted`).
    Aborted,
    /// Reconciliation found it gone while no leave event arrived.
    Reconciled,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Aborted => "aborted",
            LeaveReason::Reconciled => "reconciled",
        }
    }
}

/// One participant connection as an event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub joined_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerChange {
    RoomStarted {
        room: String,
        at: DateTime<Utc>,
    },
    RoomFinished {
        room: String,
        at: DateTime<Utc>,
    },
    Joined {
        room: String,
        connection: Connection,
    },
    Left {
        room: String,
        connection: Connection,
        at: DateTime<Utc>,
        reason: LeaveReason,
    },
    Recording {
        room: String,
        egress_id: String,
        status: String,
        file: Option<String>,
    },
    /// Kinds muster does not track (tracks, ingress, …) and malformed events.
    Ignored,
}

impl LedgerChange {
    /// A participant's join or leave, or an ignored kind: the changes that need neither the
    /// meeting nor the job queue, and that the ledger absorbs however often they are applied.
    pub fn is_participant_or_ignored(&self) -> bool {
        matches!(
            self,
            LedgerChange::Joined { .. } | LedgerChange::Left { .. } | LedgerChange::Ignored
        )
    }

    /// The room the change concerns; `None` when ignored.
    pub fn room(&self) -> Option<&str> {
        match self {
            LedgerChange::RoomStarted { room, .. }
            | LedgerChange::RoomFinished { room, .. }
            | LedgerChange::Joined { room, .. }
            | LedgerChange::Left { room, .. }
            | LedgerChange::Recording { room, .. } => Some(room),
            LedgerChange::Ignored => None,
        }
    }
}

fn seconds(ts: i64) -> Option<DateTime<Utc>> {
    (ts > 0)
        .then(|| Utc.timestamp_opt(ts, 0).single())
        .flatten()
}

/// When the participant joined, to the millisecond where the event says.
pub fn joined_at(p: &ParticipantInfo) -> Option<DateTime<Utc>> {
    if p.joined_at_ms > 0 {
        Utc.timestamp_millis_opt(p.joined_at_ms).single()
    } else {
        seconds(p.joined_at)
    }
}

pub fn connection(p: &ParticipantInfo) -> Connection {
    Connection {
        sid: p.sid.clone(),
        identity: p.identity.clone(),
        name: p.name.clone(),
        joined_at: joined_at(p),
    }
}

pub fn interpret(event: &WebhookEvent) -> LedgerChange {
    let Some(room) = event
        .room
        .as_ref()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
    else {
        return match (&event.egress_info, event.event.as_str()) {
            (Some(info), kind) if kind.starts_with("egress_") => recording(&info.room_name, info),
            _ => LedgerChange::Ignored,
        };
    };
    // Events without a creation time are dated by the room or participant fields.
    let at = seconds(event.created_at);
    let participant = event.participant.as_ref().filter(|p| !p.sid.is_empty());
    match event.event.as_str() {
        "room_started" => {
            match at.or_else(|| event.room.as_ref().and_then(|r| seconds(r.creation_time))) {
                Some(at) => LedgerChange::RoomStarted { room, at },
                None => LedgerChange::Ignored,
            }
        }
        "room_finished" => match at {
            Some(at) => LedgerChange::RoomFinished { room, at },
            None => LedgerChange::Ignored,
        },
        "participant_joined" => match participant {
            Some(p) => LedgerChange::Joined {
                room,
                connection: connection(p),
            },
            None => LedgerChange::Ignored,
        },
        kind @ ("participant_left" | "participant_connection_aborted") => match (participant, at) {
            (Some(p), Some(at)) => LedgerChange::Left {
                room,
                connection: connection(p),
                at,
                reason: if kind == "participant_left" {
                    LeaveReason::Left
                } else {
                    LeaveReason::Aborted
                },
            },
            _ => LedgerChange::Ignored,
        },
        kind if kind.starts_with("egress_") => match &event.egress_info {
            Some(info) => recording(&room, info),
            None => LedgerChange::Ignored,
        },
        _ => LedgerChange::Ignored,
    }
}

/// What one write of a connection carries: every change a batch of events makes to one
/// participant sid, folded together by the ledger's own rules, so that a batch writes each
/// sid once (PostgreSQL refuses an upsert that touches one row twice in one statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionChange {
    pub room: String,
    pub connection: Connection,
    /// The explicit leave, if any: when and why.
    pub left: Option<(DateTime<Utc>, LeaveReason)>,
}

impl ConnectionChange {
    /// The connection a participant event reports; `None` for other changes.
    pub fn of(change: &LedgerChange) -> Option<Self> {
        match change {
            LedgerChange::Joined { room, connection } => Some(Self {
                room: room.clone(),
                connection: connection.clone(),
                left: None,
            }),
            LedgerChange::Left {
                room,
                connection,
                at,
                reason,
            } => Some(Self {
                room: room.clone(),
                connection: connection.clone(),
                left: Some((*at, *reason)),
            }),
            _ => None,
        }
    }

    /// Folds a later change of the same sid into this one exactly as the ledger's upsert
    /// merges it into a stored row: room and identity stay as first written, the first
    /// non-empty name stays, the earliest join wins, and the latest explicit leave wins (on
    /// equal times the reason that sorts first, so the outcome never depends on order).
    pub fn merge(&mut self, later: &ConnectionChange) {
        if self.connection.name.is_empty() {
            self.connection.name = later.connection.name.clone();
        }
        self.connection.joined_at = match (self.connection.joined_at, later.connection.joined_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.left = match (self.left, later.left) {
            (Some((at, reason)), Some((later_at, later_reason)))
                if later_at > at || (later_at == at && later_reason.as_str() < reason.as_str()) =>
            {
                Some((later_at, later_reason))
            }
            (Some(kept), _) => Some(kept),
            (None, later) => later,
        };
    }
}

/// A batch's participant changes merged per sid (in order of each sid's first change); other
/// changes are left out.
pub fn merge_connections<'a>(
    changes: impl IntoIterator<Item = &'a LedgerChange>,
) -> Vec<ConnectionChange> {
    let mut merged: Vec<ConnectionChange> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for change in changes.into_iter().filter_map(ConnectionChange::of) {
        match index.get(&change.connection.sid) {
            Some(&i) => merged[i].merge(&change),
            None => {
                index.insert(change.connection.sid.clone(), merged.len());
                merged.push(change);
            }
        }
    }
    merged
}

fn recording(room: &str, info: &livekit_protocol::EgressInfo) -> LedgerChange {
    let status = livekit_protocol::EgressStatus::try_from(info.status)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| info.status.to_string());
    let file = info
        .file_results
        .first()
        .map(|f| f.filename.clone())
        .filter(|f| !f.is_empty());
    LedgerChange::Recording {
        room: room.to_string(),
        egress_id: info.egress_id.clone(),
        status,
        file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> WebhookEvent {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn participant_events_become_connections() {
        let joined = event(
            r#"{"event":"participant_joined","room":{"name":"r1","sid":"RM_1"},
            "participant":{"sid":"PA_1","identity":"42","name":"唐山 · 张伟","state":"ACTIVE","joinedAt":"1700000000","joinedAtMs":"1700000000250"},
            "id":"EV_1","createdAt":"1700000001"}"#,
        );
        let LedgerChange::Joined { room, connection } = interpret(&joined) else {
            panic!()
        };
        assert_eq!(room, "r1");
        assert_eq!(connection.identity, "42");
        assert_eq!(
            connection.joined_at.unwrap().timestamp_millis(),
            1_700_000_000_250
        );

        let left = event(
            r#"{"event":"participant_left","room":{"name":"r1"},
            "participant":{"sid":"PA_1","identity":"42"},"id":"EV_2","createdAt":"1700000600"}"#,
        );
        assert!(matches!(
            interpret(&left),
            LedgerChange::Left {
                reason: LeaveReason::Left,
                connection: Connection {
                    joined_at: None,
                    ..
                },
                ..
            }
        ));
        let aborted = event(
            r#"{"event":"participant_connection_aborted","room":{"name":"r1"},
            "participant":{"sid":"PA_2","identity":"43"},"id":"EV_3","createdAt":"1700000010"}"#,
        );
        assert!(matches!(
            interpret(&aborted),
            LedgerChange::Left {
                reason: LeaveReason::Aborted,
                ..
            }
        ));
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn joined(sid: &str, name: &str, joined: i64) -> LedgerChange {
        LedgerChange::Joined {
            room: "r1".into(),
            connection: Connection {
                sid: sid.into(),
                identity: "42".into(),
                name: name.into(),
                joined_at: Some(at(joined)),
            },
        }
    }

    fn left(sid: &str, joined: Option<i64>, t: i64, reason: LeaveReason) -> LedgerChange {
        LedgerChange::Left {
            room: "r1".into(),
            connection: Connection {
                sid: sid.into(),
                identity: "42".into(),
                name: String::new(),
                joined_at: joined.map(at),
            },
            at: at(t),
            reason,
        }
    }

    #[test]
    fn a_join_and_its_leave_merge_into_one_connection_in_either_order() {
        let (j, l) = (
            joined("PA_1", "张伟", 0),
            left("PA_1", None, 600, LeaveReason::Left),
        );
        let forward = merge_connections([&j, &l]);
        let backward = merge_connections([&l, &j]);
        assert_eq!(forward.len(), 1);
        assert_eq!(forward[0].connection.joined_at, Some(at(0)));
        assert_eq!(forward[0].left, Some((at(600), LeaveReason::Left)));
        assert_eq!(
            forward[0].connection.name, "张伟",
            "the leave carries no name"
        );
        assert_eq!(forward, backward);
        // Repeating events changes nothing.
        assert_eq!(merge_connections([&j, &l, &j, &l, &l]), forward);
    }

    #[test]
    fn merging_keeps_the_earliest_join_and_the_latest_leave() {
        let changes = [
            joined("PA_1", "", 30),
            left("PA_1", Some(10), 500, LeaveReason::Reconciled),
            left("PA_1", Some(20), 900, LeaveReason::Left),
            left("PA_1", None, 900, LeaveReason::Aborted),
            left("PA_1", None, 700, LeaveReason::Left),
        ];
        let expected = ConnectionChange {
            room: "r1".into(),
            connection: Connection {
                sid: "PA_1".into(),
                identity: "42".into(),
                name: String::new(),
                joined_at: Some(at(10)),
            },
            // Equal times: the reason that sorts first, as the upsert breaks ties.
            left: Some((at(900), LeaveReason::Aborted)),
        };
        // Every order gives the same connection.
        let mut order: Vec<usize> = (0..changes.len()).collect();
        permutations(&mut order, 0, &mut |order| {
            let merged = merge_connections(order.iter().map(|&i| &changes[i]));
            assert_eq!(merged, vec![expected.clone()], "order {order:?}");
        });
    }

    fn permutations(items: &mut [usize], k: usize, f: &mut impl FnMut(&[usize])) {
        if k == items.len() {
            return f(items);
        }
        for i in k..items.len() {
            items.swap(k, i);
            permutations(items, k + 1, f);
            items.swap(k, i);
        }
    }

    #[test]
    fn the_first_name_and_identity_stay_as_the_upsert_keeps_them() {
        let mut other = joined("PA_1", "李四", 5);
        if let LedgerChange::Joined { connection, .. } = &mut other {
            connection.identity = "43".into();
        }
        let merged = merge_connections([
            &left("PA_1", None, 60, LeaveReason::Left),
            &joined("PA_1", "张伟", 0),
            &other,
        ]);
        assert_eq!(
            merged[0].connection.name, "张伟",
            "the first non-empty name"
        );
        assert_eq!(merged[0].connection.identity, "42", "as first inserted");
    }

    #[test]
    fn sids_stay_apart_and_other_changes_are_left_out() {
        let finished = LedgerChange::RoomFinished {
            room: "r1".into(),
            at: at(3600),
        };
        let merged = merge_connections([
            &joined("PA_2", "", 0),
            &finished,
            &LedgerChange::Ignored,
            &joined("PA_1", "", 0),
            &left("PA_2", None, 60, LeaveReason::Left),
        ]);
        let sids: Vec<&str> = merged.iter().map(|c| c.connection.sid.as_str()).collect();
        assert_eq!(sids, ["PA_2", "PA_1"]);
        assert_eq!(merged[0].left, Some((at(60), LeaveReason::Left)));
        assert_eq!(merged[1].left, None);
    }

    #[test]
    fn rooms_recordings_and_unknown_kinds() {
        let finished = event(
            r#"{"event":"room_finished","room":{"name":"r1"},"id":"EV_4","createdAt":"1700003600"}"#,
        );
        assert!(matches!(
            interpret(&finished),
            LedgerChange::RoomFinished { .. }
        ));
        let track = event(
            r#"{"event":"track_published","room":{"name":"r1"},"id":"EV_5","createdAt":"1700000002"}"#,
        );
        assert_eq!(interpret(&track), LedgerChange::Ignored);
        let egress = event(
            r#"{"event":"egress_ended","egressInfo":{"egressId":"EG_1","roomName":"r1","status":"EGRESS_COMPLETE",
            "fileResults":[{"filename":"recordings/r1.mp4"}]},"id":"EV_6","createdAt":"1700003700"}"#,
        );
        assert_eq!(
            interpret(&egress),
            LedgerChange::Recording {
                room: "r1".into(),
                egress_id: "EG_1".into(),
                status: "EGRESS_COMPLETE".into(),
                file: Some("recordings/r1.mp4".into())
            }
        );
    }
}
