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
