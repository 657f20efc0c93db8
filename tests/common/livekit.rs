//! A LiveKit server stand-in inside the test process, for the tests of muster's LiveKit side.
//!
//! No LiveKit server can run on the test machines, so this speaks the part of LiveKit's
//! server API that muster uses, the way `/work/shared/LIVEKIT.md` and the server sources
//! describe it:
//!
//! - Twirp over HTTP: `POST /twirp/livekit.RoomService/{CreateRoom, ListRooms, DeleteRoom,
//!   ListParticipants, RemoveParticipant, UpdateRoomMetadata}` and `POST
//!   /twirp/livekit.Egress/{StartRoomCompositeEgress, StopEgress, ListEgress}`, with bodies in
//!   binary protobuf (`application/protobuf`, what `livekit-api` sends) or protobuf JSON
//!   (`application/json`); the answer comes in the encoding of the request. Twirp errors are
//!   JSON `{"code","msg"}` with the HTTP status of the code.
//! - Auth like LiveKit's middleware: `Authorization: Bearer <HS256 JWT>` whose issuer is a
//!   known API key, `exp` required, 60 s leeway. A bad, expired or foreign token, or a header
//!   without `Bearer `, is answered with a **plain-text** 401 before any routing; a request
//!   without a token, or whose grants do not cover the method, gets the JSON 401
//!   `unauthenticated` "permissions denied".
//! - Rooms, participants and egresses held in memory. Participants are simulated with
//!   [`LiveKitStandIn::join`], which checks the join token like the real server does.
//! - Webhooks: every event is queued and sent when the test calls [`LiveKitStandIn::flush`],
//!   signed like LiveKit signs them (bare JWT in `Authorization`, `sha256` claim over the
//!   exact body), with switches to duplicate, reorder, drop or tamper with them.
//!
//! Where LiveKit is asynchronous (the room closing after its timeouts, an egress completing)
//! the stand-in acts at once, or when the test moves its clock ([`LiveKitStandIn::advance`]).
//! JSON answers use lowerCamelCase and leave zero values out (what `pbjson` writes); a real
//! server's Twirp JSON would use the proto field names. Every protobuf JSON reader takes both.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use livekit_api::access_token::{AccessToken, Claims};
use livekit_protocol as proto;
use prost::Message;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The JWT leeway of LiveKit's token verifier.
const LEEWAY_SECS: i64 = 60;
/// LiveKit's default `limit.max_room_name_length`.
const MAX_ROOM_NAME: usize = 256;
/// LiveKit's default `limit.max_metadata_size`.
const MAX_METADATA: usize = 64_000;
/// What `retryablehttp` (LiveKit's webhook client) retries by default.
const DEFAULT_WEBHOOK_RETRIES: u32 = 4;
/// Events queued longer than this are dropped by LiveKit's webhook notifier.
const DEFAULT_MAX_QUEUE_AGE: Duration = Duration::from_secs(30);

pub const ROOM_STARTED: &str = "room_started";
pub const ROOM_FINISHED: &str = "room_finished";
pub const PARTICIPANT_JOINED: &str = "participant_joined";
pub const PARTICIPANT_LEFT: &str = "participant_left";
pub const PARTICIPANT_CONNECTION_ABORTED: &str = "participant_connection_aborted";
pub const EGRESS_STARTED: &str = "egress_started";
pub const EGRESS_UPDATED: &str = "egress_updated";
pub const EGRESS_ENDED: &str = "egress_ended";

/// Why [`LiveKitStandIn::join`] (or `abort`) refused a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The stand-in is down ([`LiveKitStandIn::set_down`]).
    Unavailable,
    /// Not a JWT, not HS256, or a bad signature.
    InvalidToken(String),
    /// The issuer is not a known API key.
    UnknownKey(String),
    /// The token has no `exp` claim.
    MissingExp,
    /// `exp` is more than 60 s in the past.
    Expired,
    /// `nbf` is more than 60 s in the future.
    NotYetValid,
    /// No `video.roomJoin` grant.
    PermissionDenied,
    /// The grant names no room.
    NoRoom,
    /// The token has no identity (`sub`).
    NoIdentity,
    /// The room has `max_participants` participants already.
    RoomFull,
    /// RemoveParticipant revoked tokens of this identity whose `nbf` is before the cut-off.
    Revoked,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable => write!(f, "server unavailable"),
            Self::InvalidToken(e) => write!(f, "invalid token: {e}"),
            Self::UnknownKey(k) => write!(f, "invalid API key: {k}"),
            Self::MissingExp => write!(f, "token is missing required claim: exp"),
            Self::Expired => write!(f, "token has expired"),
            Self::NotYetValid => write!(f, "token is not valid yet"),
            Self::PermissionDenied => write!(f, "permissions denied"),
            Self::NoRoom => write!(f, "no room name"),
            Self::NoIdentity => write!(f, "identity cannot be empty"),
            Self::RoomFull => write!(f, "room is full"),
            Self::Revoked => write!(f, "token revoked"),
        }
    }
}

impl std::error::Error for JoinError {}

/// One Twirp request the stand-in answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// `RoomService` or `Egress` (empty when the path was not a Twirp route).
    pub service: String,
    /// `CreateRoom`, `StopEgress`, …
    pub method: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The Twirp error code, when the answer was a JSON error.
    pub code: Option<String>,
    /// The request was `application/json` (otherwise protobuf, or refused before decoding).
    pub json: bool,
}

/// One webhook POST (a retry or a duplicate is a delivery of its own).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event kind, e.g. `participant_joined`.
    pub event: String,
    /// The event id (`EV_…`); a duplicate or a retry has the same one.
    pub id: String,
    /// The body as sent (after tampering, if any).
    pub body: String,
    /// The `Authorization` header as sent: a bare JWT.
    pub authorization: String,
    /// The receiver's HTTP status; `None` when the request failed (connection refused, …).
    pub status: Option<u16>,
    /// The transport error when `status` is `None`.
    pub error: Option<String>,
    /// 1 for the first try, 2… for retries after a 5xx, 429 or transport error.
    pub attempt: u32,
    /// The body was altered after signing ([`LiveKitStandIn::tamper_next`]).
    pub tampered: bool,
}

impl Delivery {
    /// The body parsed back into the event.
    pub fn parsed(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

/// A Twirp error.
#[derive(Debug, Clone)]
struct TwirpError {
    code: &'static str,
    msg: String,
}

impl TwirpError {
    fn new(code: &'static str, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    fn permission_denied() -> Self {
        Self::new("unauthenticated", "permissions denied")
    }
}

/// The HTTP status Twirp gives an error code.
fn twirp_status(code: &str) -> StatusCode {
    match code {
        "canceled" | "deadline_exceeded" => StatusCode::REQUEST_TIMEOUT,
        "invalid_argument" | "malformed" | "out_of_range" => StatusCode::BAD_REQUEST,
        "not_found" | "bad_route" => StatusCode::NOT_FOUND,
        "already_exists" | "aborted" => StatusCode::CONFLICT,
        "permission_denied" => StatusCode::FORBIDDEN,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
        "failed_precondition" => StatusCode::PRECONDITION_FAILED,
        "unimplemented" => StatusCode::NOT_IMPLEMENTED,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Maps a code given by a test (`fail_next`) onto the static Twirp code.
fn known_code(code: &str) -> &'static str {
    const CODES: [&str; 17] = [
        "canceled",
        "unknown",
        "invalid_argument",
        "malformed",
        "deadline_exceeded",
        "not_found",
        "bad_route",
        "already_exists",
        "permission_denied",
        "unauthenticated",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or_else(|| panic!("unknown Twirp code {code:?}"))
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// A LiveKit-style id: prefix and 12 alphanumerics.
fn new_id(prefix: &str) -> String {
    let tail: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

/// Why a JWT was refused.
#[derive(Debug)]
enum TokenError {
    /// Could not even be parsed (LiveKit: "invalid authorization token").
    Unparsable,
    UnknownKey(String),
    Invalid(String),
    MissingExp,
    Expired,
    NotYetValid,
}

impl TokenError {
    fn into_join_error(self) -> JoinError {
        match self {
            Self::Unparsable => JoinError::InvalidToken("malformed token".into()),
            Self::UnknownKey(k) => JoinError::UnknownKey(k),
            Self::Invalid(e) => JoinError::InvalidToken(e),
            Self::MissingExp => JoinError::MissingExp,
            Self::Expired => JoinError::Expired,
            Self::NotYetValid => JoinError::NotYetValid,
        }
    }

    /// The plain-text body of LiveKit's auth middleware.
    fn middleware_text(&self, token: &str) -> String {
        match self {
            Self::Unparsable => "invalid authorization token".into(),
            Self::UnknownKey(k) => format!("invalid API key: {k}"),
            Self::Invalid(e) => format!("invalid token: {token}, error: {e}"),
            Self::MissingExp => {
                format!(
                    "invalid token: {token}, error: token is missing required claim: exp claim is required"
                )
            }
            Self::Expired => {
                format!("invalid token: {token}, error: token has invalid claims: token is expired")
            }
            Self::NotYetValid => {
                format!(
                    "invalid token: {token}, error: token has invalid claims: token is not valid yet"
                )
            }
        }
    }
}

/// Verifies a LiveKit JWT the way `protocol/auth` does: HS256 only, the issuer names the key,
/// `exp` required, 60 s leeway on `exp` and `nbf`.
fn verify_jwt(keys: &HashMap<String, String>, token: &str, now: i64) -> Result<Claims, TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(TokenError::Unparsable);
    }
    let json = |part: &str| -> Result<serde_json::Value, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Unparsable)?;
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Unparsable)
    };
    let head = json(parts[0])?;
    let payload = json(parts[1])?;
    let iss = payload
        .get("iss")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let Some(secret) = keys.get(&iss) else {
        return Err(TokenError::UnknownKey(iss));
    };
    let alg = head.get("alg").and_then(|v| v.as_str()).unwrap_or_default();
    if alg != "HS256" {
        return Err(TokenError::Invalid(format!(
            "token is unverifiable: signing method {alg} is invalid"
        )));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|_| TokenError::Invalid("token signature is invalid".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(parts[0].as_bytes());
    mac.update(b".");
    mac.update(parts[1].as_bytes());
    mac.verify_slice(&signature).map_err(|_| {
        TokenError::Invalid("token signature is invalid: signature is invalid".into())
    })?;
    let Some(exp) = payload.get("exp").and_then(|v| v.as_f64()) else {
        return Err(TokenError::MissingExp);
    };
    if (now as f64) > exp + LEEWAY_SECS as f64 {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = payload.get("nbf").and_then(|v| v.as_f64())
        && nbf > (now + LEEWAY_SECS) as f64
    {
        return Err(TokenError::NotYetValid);
    }
    serde_json::from_value(payload).map_err(|e| TokenError::Invalid(format!("bad claims: {e}")))
}

struct RoomState {
    room: proto::Room,
    participants: Vec<proto::ParticipantInfo>,
    /// Someone became active in the room at some point.
    had_participants: bool,
    /// When the last participant left (ms).
    last_left_ms: Option<i64>,
}

impl RoomState {
    fn snapshot(&self) -> proto::Room {
        let mut room = self.room.clone();
        room.num_participants = self.participants.len() as u32;
        room
    }
}

struct Queued {
    event: proto::WebhookEvent,
    queued_at_ms: i64,
}

struct State {
    keys: HashMap<String, String>,
    /// The stand-in's clock for timestamps (ms); `None` = wall clock.
    clock_ms: Option<i64>,
    /// Added to the wall clock when checking `exp`/`nbf` (seconds).
    token_skew: i64,
    down: bool,
    delay: Option<Duration>,
    fail_next: HashMap<String, VecDeque<TwirpError>>,
    calls: Vec<Call>,
    rooms: BTreeMap<String, RoomState>,
    /// (room, identity) → tokens with `nbf` before this (seconds) are refused.
    revocations: HashMap<(String, String), i64>,
    egresses: Vec<proto::EgressInfo>,
    // Webhooks.
    webhook_url: Option<String>,
    webhook_key: (String, String),
    queue: Vec<Queued>,
    emitted: Vec<proto::WebhookEvent>,
    dropped: Vec<proto::WebhookEvent>,
    sent: Vec<Delivery>,
    duplicate: bool,
    reorder: Option<rand::rngs::StdRng>,
    drop_next: usize,
    drop_kinds: HashSet<String>,
    tamper_next: usize,
    retries: u32,
    max_queue_age: Option<Duration>,
}

impl State {
    fn now_ms(&self) -> i64 {
        self.clock_ms.unwrap_or_else(wall_ms)
    }

    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    fn token_now(&self) -> i64 {
        wall_ms().div_euclid(1000) + self.token_skew
    }

    /// Records an event and queues it for delivery (unless a drop switch takes it).
    fn emit(&mut self, mut event: proto::WebhookEvent) {
        event.id = new_id("EV_");
        event.created_at = self.now_secs();
        self.emitted.push(event.clone());
        if self.drop_next > 0 {
            self.drop_next -= 1;
            self.dropped.push(event);
        } else if self.drop_kinds.contains(&event.event) {
            self.dropped.push(event);
        } else {
            let queued_at_ms = self.now_ms();
            self.queue.push(Queued {
                event,
                queued_at_ms,
            });
        }
    }

    fn emit_room(&mut self, kind: &str, room: proto::Room) {
        self.emit(proto::WebhookEvent {
            event: kind.into(),
            room: Some(room),
            ..Default::default()
        });
    }

    fn emit_participant(&mut self, kind: &str, room: proto::Room, p: proto::ParticipantInfo) {
        self.emit(proto::WebhookEvent {
            event: kind.into(),
            room: Some(room),
            participant: Some(p),
            ..Default::default()
        });
    }

    fn emit_egress(&mut self, kind: &str, info: proto::EgressInfo) {
        self.emit(proto::WebhookEvent {
            event: kind.into(),
            egress_info: Some(info),
            ..Default::default()
        });
    }

    /// Creates a room with LiveKit's defaults (fires `room_started`), or applies the non-zero
    /// fields to the existing one.
    fn create_or_update_room(&mut self, req: &proto::CreateRoomRequest) -> proto::Room {
        if let Some(rs) = self.rooms.get_mut(&req.name) {
            if req.empty_timeout > 0 {
                rs.room.empty_timeout = req.empty_timeout;
            }
            if req.departure_timeout > 0 {
                rs.room.departure_timeout = req.departure_timeout;
            }
            if req.max_participants > 0 {
                rs.room.max_participants = req.max_participants;
            }
            if !req.metadata.is_empty() {
                rs.room.metadata = req.metadata.clone();
            }
            return rs.snapshot();
        }
        let now_ms = self.now_ms();
        let room = proto::Room {
            sid: new_id("RM_"),
            name: req.name.clone(),
            empty_timeout: if req.empty_timeout > 0 {
                req.empty_timeout
            } else {
                300
            },
            departure_timeout: if req.departure_timeout > 0 {
                req.departure_timeout
            } else {
                20
            },
            max_participants: req.max_participants,
            creation_time: now_ms.div_euclid(1000),
            creation_time_ms: now_ms,
            metadata: req.metadata.clone(),
            ..Default::default()
        };
        self.rooms.insert(
            req.name.clone(),
            RoomState {
                room: room.clone(),
                participants: Vec::new(),
                had_participants: false,
                last_left_ms: None,
            },
        );
        self.emit_room(ROOM_STARTED, room.clone());
        room
    }

    /// Takes participant `sid` out of its room and fires `participant_left`.
    fn disconnect(&mut self, sid: &str, reason: proto::DisconnectReason) -> bool {
        let now_ms = self.now_ms();
        let found = self.rooms.iter_mut().find_map(|(name, rs)| {
            let idx = rs.participants.iter().position(|p| p.sid == sid)?;
            let mut p = rs.participants.remove(idx);
            if rs.participants.is_empty() {
                rs.last_left_ms = Some(now_ms);
            }
            p.state = proto::participant_info::State::Disconnected as i32;
            p.disconnect_reason = reason as i32;
            Some((name.clone(), p))
        });
        let Some((room, p)) = found else {
            return false;
        };
        let snapshot = self.rooms[&room].snapshot();
        self.emit_participant(PARTICIPANT_LEFT, snapshot, p);
        true
    }

    /// Closes a room: everyone leaves, `room_finished` fires, its egresses end.
    fn close_room(&mut self, name: &str, reason: proto::DisconnectReason) {
        let sids: Vec<String> = match self.rooms.get(name) {
            Some(rs) => rs.participants.iter().map(|p| p.sid.clone()).collect(),
            None => return,
        };
        for sid in sids {
            self.disconnect(&sid, reason);
        }
        let rs = self.rooms.remove(name).expect("room still there");
        self.emit_room(ROOM_FINISHED, rs.snapshot());
        let active: Vec<String> = self
            .egresses
            .iter()
            .filter(|e| e.room_name == name && egress_is_active(e))
            .map(|e| e.egress_id.clone())
            .collect();
        for id in active {
            self.finish_egress(&id, proto::EgressStatus::EgressComplete, "");
        }
    }

    /// Closes the empty rooms whose `empty_timeout` (nobody ever joined) or
    /// `departure_timeout` (since the last one left) has run out on the stand-in's clock.
    fn close_idle_rooms(&mut self) {
        let now_ms = self.now_ms();
        let idle: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, rs)| rs.participants.is_empty())
            .filter(|(_, rs)| {
                let (since, timeout) = match (rs.had_participants, rs.last_left_ms) {
                    (true, Some(left)) => (left, rs.room.departure_timeout),
                    _ => (rs.room.creation_time_ms, rs.room.empty_timeout),
                };
                now_ms - since >= i64::from(timeout) * 1000
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in idle {
            self.close_room(&name, proto::DisconnectReason::RoomClosed);
        }
    }

    /// Checks a join token; creates the room if needed (from the token's `roomConfig`).
    fn admit(&mut self, token: &str) -> Result<(Claims, String), JoinError> {
        if self.down {
            return Err(JoinError::Unavailable);
        }
        let claims =
            verify_jwt(&self.keys, token, self.token_now()).map_err(TokenError::into_join_error)?;
        if !claims.video.room_join {
            return Err(JoinError::PermissionDenied);
        }
        let room = claims.video.room.clone();
        if room.is_empty() {
            return Err(JoinError::NoRoom);
        }
        if claims.sub.is_empty() {
            return Err(JoinError::NoIdentity);
        }
        if let Some(cut) = self.revocations.get(&(room.clone(), claims.sub.clone()))
            && (claims.nbf as i64) < *cut
        {
            return Err(JoinError::Revoked);
        }
        if !self.rooms.contains_key(&room) {
            let config = claims.room_config.clone().unwrap_or_default();
            self.create_or_update_room(&proto::CreateRoomRequest {
                name: room.clone(),
                empty_timeout: config.empty_timeout,
                departure_timeout: config.departure_timeout,
                max_participants: config.max_participants,
                metadata: config.metadata,
                ..Default::default()
            });
        }
        Ok((claims, room))
    }

    fn participant_from(
        &self,
        claims: &Claims,
        state: proto::participant_info::State,
    ) -> proto::ParticipantInfo {
        let now_ms = self.now_ms();
        let grants = &claims.video;
        let sources = grants
            .can_publish_sources
            .iter()
            .filter_map(|s| proto::TrackSource::from_str_name(&s.to_uppercase()))
            .map(|s| s as i32)
            .collect();
        let kind = proto::participant_info::Kind::from_str_name(&claims.kind.to_uppercase())
            .unwrap_or(proto::participant_info::Kind::Standard);
        proto::ParticipantInfo {
            sid: new_id("PA_"),
            identity: claims.sub.clone(),
            state: state as i32,
            metadata: claims.metadata.clone(),
            joined_at: now_ms.div_euclid(1000),
            joined_at_ms: now_ms,
            name: claims.name.clone(),
            version: 1,
            permission: Some(proto::ParticipantPermission {
                can_subscribe: grants.can_subscribe(),
                can_publish: grants.can_publish(),
                can_publish_data: grants.can_publish_data(),
                can_publish_sources: sources,
                hidden: grants.hidden,
                can_update_metadata: grants.can_update_own_metadata(),
                ..Default::default()
            }),
            kind: kind as i32,
            attributes: claims.attributes.clone(),
            ..Default::default()
        }
    }

    fn join(&mut self, token: &str) -> Result<String, JoinError> {
        let (claims, room) = self.admit(token)?;
        // A second connection with the same identity replaces the first.
        let duplicate = self.rooms[&room]
            .participants
            .iter()
            .find(|p| p.identity == claims.sub)
            .map(|p| p.sid.clone());
        if let Some(sid) = duplicate {
            self.disconnect(&sid, proto::DisconnectReason::DuplicateIdentity);
        }
        let rs = &self.rooms[&room];
        let max = rs.room.max_participants as usize;
        if max > 0 && rs.participants.len() >= max {
            return Err(JoinError::RoomFull);
        }
        let p = self.participant_from(&claims, proto::participant_info::State::Active);
        let rs = self.rooms.get_mut(&room).expect("room exists");
        rs.participants.push(p.clone());
        rs.had_participants = true;
        rs.last_left_ms = None;
        let snapshot = rs.snapshot();
        let sid = p.sid.clone();
        self.emit_participant(PARTICIPANT_JOINED, snapshot, p);
        Ok(sid)
    }

    fn abort(&mut self, token: &str) -> Result<String, JoinError> {
        let (claims, room) = self.admit(token)?;
        let mut p = self.participant_from(&claims, proto::participant_info::State::Joining);
        p.disconnect_reason = proto::DisconnectReason::JoinFailure as i32;
        let sid = p.sid.clone();
        let snapshot = self.rooms[&room].snapshot();
        self.emit_participant(PARTICIPANT_CONNECTION_ABORTED, snapshot, p);
        Ok(sid)
    }

    fn finish_egress(&mut self, egress_id: &str, status: proto::EgressStatus, error: &str) {
        let now_ns = self.now_ms() * 1_000_000;
        let Some(info) = self.egresses.iter_mut().find(|e| e.egress_id == egress_id) else {
            return;
        };
        info.status = status as i32;
        info.ended_at = now_ns;
        info.updated_at = now_ns;
        info.error = error.to_string();
        if !error.is_empty() {
            info.error_code = 500;
        }
        let started = info.started_at;
        for f in &mut info.file_results {
            f.started_at = started;
            f.ended_at = now_ns;
            f.duration = now_ns - started;
            if status == proto::EgressStatus::EgressComplete {
                // About 2 Mbit/s.
                f.size = (now_ns - started) / 4_000;
                f.location = f.filename.clone();
            }
        }
        for s in &mut info.stream_results {
            s.ended_at = now_ns;
            s.duration = now_ns - s.started_at;
            s.status = proto::stream_info::Status::Finished as i32;
        }
        let info = info.clone();
        let room = info.room_name.clone();
        if let Some(rs) = self.rooms.get_mut(&room) {
            rs.room.active_recording = self
                .egresses
                .iter()
                .any(|e| e.room_name == room && egress_is_active(e));
        }
        self.emit_egress(EGRESS_ENDED, info);
    }

    // ---- Twirp methods ------------------------------------------------------------------

    fn create_room(
        &mut self,
        claims: Option<&Claims>,
        req: proto::CreateRoomRequest,
    ) -> Result<proto::Room, TwirpError> {
        if !claims.is_some_and(|c| c.video.room_create) {
            return Err(TwirpError::permission_denied());
        }
        if req.name.is_empty() {
            return Err(TwirpError::new("invalid_argument", "no room name"));
        }
        if req.name.len() > MAX_ROOM_NAME {
            return Err(TwirpError::new(
                "invalid_argument",
                "room name length exceeds limits",
            ));
        }
        if req.metadata.len() > MAX_METADATA {
            return Err(TwirpError::new(
                "invalid_argument",
                "metadata size exceeds limits",
            ));
        }
        Ok(self.create_or_update_room(&req))
    }

    fn list_rooms(
        &mut self,
        claims: Option<&Claims>,
        req: proto::ListRoomsRequest,
    ) -> Result<proto::ListRoomsResponse, TwirpError> {
        if !claims.is_some_and(|c| c.video.room_list) {
            return Err(TwirpError::permission_denied());
        }
        let rooms = self
            .rooms
            .values()
            .filter(|rs| req.names.is_empty() || req.names.contains(&rs.room.name))
            .map(RoomState::snapshot)
            .collect();
        Ok(proto::ListRoomsResponse { rooms })
    }

    fn delete_room(
        &mut self,
        claims: Option<&Claims>,
        req: proto::DeleteRoomRequest,
    ) -> Result<proto::DeleteRoomResponse, TwirpError> {
        if !claims.is_some_and(|c| c.video.room_create) {
            return Err(TwirpError::permission_denied());
        }
        if !self.rooms.contains_key(&req.room) {
            return Err(TwirpError::new("not_found", "room not found"));
        }
        self.close_room(&req.room, proto::DisconnectReason::RoomDeleted);
        Ok(proto::DeleteRoomResponse {})
    }

    fn ensure_admin(claims: Option<&Claims>, room: &str) -> Result<(), TwirpError> {
        match claims {
            Some(c) if c.video.room_admin && c.video.room == room => Ok(()),
            _ => Err(TwirpError::permission_denied()),
        }
    }

    fn list_participants(
        &mut self,
        claims: Option<&Claims>,
        req: proto::ListParticipantsRequest,
    ) -> Result<proto::ListParticipantsResponse, TwirpError> {
        Self::ensure_admin(claims, &req.room)?;
        let participants = self
            .rooms
            .get(&req.room)
            .map(|rs| rs.participants.clone())
            .unwrap_or_default();
        Ok(proto::ListParticipantsResponse { participants })
    }

    fn remove_participant(
        &mut self,
        claims: Option<&Claims>,
        req: proto::RoomParticipantIdentity,
    ) -> Result<proto::RemoveParticipantResponse, TwirpError> {
        Self::ensure_admin(claims, &req.room)?;
        let sid = self
            .rooms
            .get(&req.room)
            .and_then(|rs| rs.participants.iter().find(|p| p.identity == req.identity))
            .map(|p| p.sid.clone());
        let Some(sid) = sid else {
            return Err(TwirpError::new("not_found", "participant not found"));
        };
        let cut = if req.revoke_token_ts > 0 {
            req.revoke_token_ts
        } else {
            self.token_now() + LEEWAY_SECS
        };
        self.revocations
            .insert((req.room.clone(), req.identity.clone()), cut);
        self.disconnect(&sid, proto::DisconnectReason::ParticipantRemoved);
        Ok(proto::RemoveParticipantResponse {})
    }

    fn update_room_metadata(
        &mut self,
        claims: Option<&Claims>,
        req: proto::UpdateRoomMetadataRequest,
    ) -> Result<proto::Room, TwirpError> {
        if req.metadata.len() > MAX_METADATA {
            return Err(TwirpError::new(
                "invalid_argument",
                "metadata size exceeds limits",
            ));
        }
        Self::ensure_admin(claims, &req.room)?;
        let Some(rs) = self.rooms.get_mut(&req.room) else {
            return Err(TwirpError::new(
                "not_found",
                "requested room does not exist",
            ));
        };
        rs.room.metadata = req.metadata;
        Ok(rs.snapshot())
    }

    #[allow(deprecated)]
    fn start_room_composite_egress(
        &mut self,
        claims: Option<&Claims>,
        req: proto::RoomCompositeEgressRequest,
    ) -> Result<proto::EgressInfo, TwirpError> {
        if !claims.is_some_and(|c| c.video.room_record) {
            return Err(TwirpError::permission_denied());
        }
        let Some(rs) = self.rooms.get(&req.room_name) else {
            return Err(TwirpError::new(
                "not_found",
                "requested room does not exist",
            ));
        };
        let room_sid = rs.room.sid.clone();
        let mut files: Vec<proto::EncodedFileOutput> = req.file_outputs.clone();
        let mut streams: Vec<proto::StreamOutput> = req.stream_outputs.clone();
        match &req.output {
            Some(proto::room_composite_egress_request::Output::File(f)) => files.push(f.clone()),
            Some(proto::room_composite_egress_request::Output::Stream(s)) => {
                streams.push(s.clone())
            }
            _ => {}
        }
        if files.is_empty()
            && streams.is_empty()
            && req.segment_outputs.is_empty()
            && req.image_outputs.is_empty()
            && !matches!(
                req.output,
                Some(proto::room_composite_egress_request::Output::Segments(_))
            )
        {
            return Err(TwirpError::new("invalid_argument", "no outputs"));
        }
        let now_ms = self.now_ms();
        let file_results = files
            .iter()
            .map(|f| proto::FileInfo {
                filename: egress_filename(f, &req.room_name, &room_sid, req.audio_only, now_ms),
                ..Default::default()
            })
            .collect();
        let stream_results = streams
            .iter()
            .flat_map(|s| s.urls.iter())
            .map(|url| proto::StreamInfo {
                url: url.clone(),
                ..Default::default()
            })
            .collect();
        let mut info = proto::EgressInfo {
            egress_id: new_id("EG_"),
            room_id: room_sid,
            room_name: req.room_name.clone(),
            source_type: proto::EgressSourceType::Web as i32,
            status: proto::EgressStatus::EgressStarting as i32,
            updated_at: now_ms * 1_000_000,
            file_results,
            stream_results,
            request: Some(proto::egress_info::Request::RoomComposite(req)),
            ..Default::default()
        };
        let answer = info.clone();
        self.emit_egress(EGRESS_STARTED, info.clone());
        // The egress worker comes up at once.
        info.status = proto::EgressStatus::EgressActive as i32;
        info.started_at = now_ms * 1_000_000;
        for s in &mut info.stream_results {
            s.started_at = info.started_at;
        }
        self.egresses.push(info.clone());
        if let Some(rs) = self.rooms.get_mut(&info.room_name) {
            rs.room.active_recording = true;
        }
        self.emit_egress(EGRESS_UPDATED, info);
        Ok(answer)
    }

    fn stop_egress(
        &mut self,
        claims: Option<&Claims>,
        req: proto::StopEgressRequest,
    ) -> Result<proto::EgressInfo, TwirpError> {
        if !claims.is_some_and(|c| c.video.room_record) {
            return Err(TwirpError::permission_denied());
        }
        let now_ns = self.now_ms() * 1_000_000;
        let Some(info) = self
            .egresses
            .iter_mut()
            .find(|e| e.egress_id == req.egress_id)
        else {
            return Err(TwirpError::new("not_found", "egress does not exist"));
        };
        if !egress_is_active(info) {
            let status = proto::EgressStatus::try_from(info.status)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            return Err(TwirpError::new(
                "failed_precondition",
                format!("egress with status {status} cannot be stopped"),
            ));
        }
        info.status = proto::EgressStatus::EgressEnding as i32;
        info.updated_at = now_ns;
        let ending = info.clone();
        self.emit_egress(EGRESS_UPDATED, ending.clone());
        self.finish_egress(&req.egress_id, proto::EgressStatus::EgressComplete, "");
        Ok(ending)
    }

    fn list_egress(
        &mut self,
        claims: Option<&Claims>,
        req: proto::ListEgressRequest,
    ) -> Result<proto::ListEgressResponse, TwirpError> {
        if !claims.is_some_and(|c| c.video.room_record) {
            return Err(TwirpError::permission_denied());
        }
        let items = self
            .egresses
            .iter()
            .filter(|e| req.room_name.is_empty() || e.room_name == req.room_name)
            .filter(|e| req.egress_id.is_empty() || e.egress_id == req.egress_id)
            .filter(|e| !req.active || egress_is_active(e))
            .cloned()
            .collect();
        Ok(proto::ListEgressResponse {
            items,
            next_page_token: None,
        })
    }
}

fn egress_is_active(info: &proto::EgressInfo) -> bool {
    use proto::EgressStatus as S;
    matches!(
        S::try_from(info.status),
        Ok(S::EgressStarting | S::EgressActive | S::EgressEnding)
    )
}

/// The file name the egress writes: templates filled in, a default name for an empty path or
/// a directory, the extension of the file type added when missing.
fn egress_filename(
    f: &proto::EncodedFileOutput,
    room_name: &str,
    room_id: &str,
    audio_only: bool,
    now_ms: i64,
) -> String {
    let time = chrono::DateTime::from_timestamp_millis(now_ms)
        .expect("valid time")
        .format("%Y-%m-%dT%H%M%S")
        .to_string();
    let mut path = f.filepath.clone();
    if path.is_empty() || path.ends_with('/') {
        path.push_str("{room_name}-{time}");
    }
    let path = path
        .replace("{room_name}", room_name)
        .replace("{room_id}", room_id)
        .replace("{time}", &time);
    let ext = match proto::EncodedFileType::try_from(f.file_type) {
        Ok(proto::EncodedFileType::Ogg) => ".ogg",
        Ok(proto::EncodedFileType::Mp3) => ".mp3",
        Ok(proto::EncodedFileType::Mp4) => ".mp4",
        _ if audio_only => ".ogg",
        _ => ".mp4",
    };
    let last = path.rsplit('/').next().unwrap_or_default();
    if last.contains('.') {
        path
    } else {
        format!("{path}{ext}")
    }
}

struct Inner {
    api_key: String,
    api_secret: String,
    addr: SocketAddr,
    state: Mutex<State>,
    http: reqwest::Client,
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running stand-in; it stops when dropped.
pub struct LiveKitStandIn {
    inner: Arc<Inner>,
}

impl LiveKitStandIn {
    /// Listens on 127.0.0.1 on a free port, accepting tokens of `api_key`/`api_secret` and
    /// signing webhooks with them; webhooks go to `webhook_url` when given.
    pub async fn start(api_key: &str, api_secret: &str, webhook_url: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind LiveKit stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let state = State {
            keys: HashMap::from([(api_key.to_string(), api_secret.to_string())]),
            clock_ms: None,
            token_skew: 0,
            down: false,
            delay: None,
            fail_next: HashMap::new(),
            calls: Vec::new(),
            rooms: BTreeMap::new(),
            revocations: HashMap::new(),
            egresses: Vec::new(),
            webhook_url,
            webhook_key: (api_key.to_string(), api_secret.to_string()),
            queue: Vec::new(),
            emitted: Vec::new(),
            dropped: Vec::new(),
            sent: Vec::new(),
            duplicate: false,
            reorder: None,
            drop_next: 0,
            drop_kinds: HashSet::new(),
            tamper_next: 0,
            retries: DEFAULT_WEBHOOK_RETRIES,
            max_queue_age: Some(DEFAULT_MAX_QUEUE_AGE),
        };
        let inner = Arc::new(Inner {
            api_key: api_key.to_string(),
            api_secret: api_secret.to_string(),
            addr,
            state: Mutex::new(state),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("webhook HTTP client"),
            server: Mutex::new(None),
        });
        serve(&inner, listener);
        Self { inner }
    }

    /// `http://127.0.0.1:PORT`, the host to give `RoomClient::with_api_key`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// `ws://127.0.0.1:PORT`, what a browser would be given.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.inner.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.inner.api_key
    }

    pub fn api_secret(&self) -> &str {
        &self.inner.api_secret
    }

    /// Accepts tokens of one more key pair (LiveKit's `keys:` map can hold several).
    pub fn add_api_key(&self, key: &str, secret: &str) {
        self.inner
            .state()
            .keys
            .insert(key.to_string(), secret.to_string());
    }

    // ---- Simulated participants ----------------------------------------------------------

    /// A participant connects with `token` and becomes active: the token is checked like the
    /// real server does (signature, key, `exp`/`nbf` with 60 s leeway, `video.roomJoin`, room
    /// and identity, revocation by RemoveParticipant), the room is created if missing
    /// (`room_started`), a participant with the same identity is replaced
    /// (`participant_left`, DUPLICATE_IDENTITY), a full room refuses, and
    /// `participant_joined` fires. Returns the new participant's sid (`PA_…`).
    pub fn join(&self, token: &str) -> Result<String, JoinError> {
        self.inner.state().join(token)
    }

    /// The participant leaves (`participant_left`, CLIENT_INITIATED). False when no such sid.
    pub fn leave(&self, sid: &str) -> bool {
        self.inner
            .state()
            .disconnect(sid, proto::DisconnectReason::ClientInitiated)
    }

    /// A participant connects with `token` but gives up before becoming active:
    /// `participant_connection_aborted` fires (after `room_started` if the room was new).
    /// Returns the sid it had.
    pub fn abort(&self, token: &str) -> Result<String, JoinError> {
        self.inner.state().abort(token)
    }

    /// The active participants of a room, in joining order.
    pub fn participants(&self, room: &str) -> Vec<proto::ParticipantInfo> {
        self.inner
            .state()
            .rooms
            .get(room)
            .map(|rs| rs.participants.clone())
            .unwrap_or_default()
    }

    /// The open rooms, by name.
    pub fn rooms(&self) -> Vec<proto::Room> {
        self.inner
            .state()
            .rooms
            .values()
            .map(RoomState::snapshot)
            .collect()
    }

    pub fn room(&self, name: &str) -> Option<proto::Room> {
        self.inner.state().rooms.get(name).map(RoomState::snapshot)
    }

    /// Every egress started, as it is now.
    pub fn egresses(&self) -> Vec<proto::EgressInfo> {
        self.inner.state().egresses.clone()
    }

    /// An active egress fails on its own (`egress_ended` with EGRESS_FAILED and `error`).
    pub fn fail_egress(&self, egress_id: &str, error: &str) {
        self.inner
            .state()
            .finish_egress(egress_id, proto::EgressStatus::EgressFailed, error);
    }

    // ---- Outages and faults --------------------------------------------------------------

    /// While down, every Twirp call is answered 503 `unavailable` and joins are refused.
    pub fn set_down(&self, down: bool) {
        self.inner.state().down = down;
    }

    /// While unreachable, nothing listens on the port (connections are refused); the same
    /// port is listened on again afterwards.
    pub async fn set_unreachable(&self, unreachable: bool) {
        if unreachable {
            let server = self
                .inner
                .server
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some((stop, task)) = server {
                let _ = stop.send(());
                let _ = task.await;
            }
        } else {
            let running = self
                .inner
                .server
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            if !running {
                let listener = TcpListener::bind(self.inner.addr)
                    .await
                    .expect("listen again on the stand-in port");
                serve(&self.inner, listener);
            }
        }
    }

    /// Every Twirp answer waits this long first (for client timeouts).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.inner.state().delay = delay;
    }

    /// The next call of `method` (e.g. `"CreateRoom"`) that passes authentication fails with
    /// Twirp `code` (e.g. `"internal"`); calls queue up.
    pub fn fail_next(&self, method: &str, code: &str) {
        let code = known_code(code);
        self.inner
            .state()
            .fail_next
            .entry(method.to_string())
            .or_default()
            .push_back(TwirpError::new(code, format!("injected {code}")));
    }

    /// Every Twirp request answered so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.state().calls.clone()
    }

    /// How many calls of `method` were answered so far.
    pub fn call_count(&self, method: &str) -> usize {
        self.inner
            .state()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    // ---- Time ------------------------------------------------------------------------------

    /// Freezes the stand-in's clock (room creation, joinedAt, createdAt, egress times) at
    /// `unix_seconds`, then closes rooms whose timeouts ran out.
    pub fn set_now(&self, unix_seconds: i64) {
        let mut state = self.inner.state();
        state.clock_ms = Some(unix_seconds * 1000);
        state.close_idle_rooms();
    }

    /// Moves the stand-in's clock on (freezing it first if it followed the wall clock), then
    /// closes rooms whose `empty_timeout`/`departure_timeout` ran out (`room_finished`).
    pub fn advance(&self, by: Duration) {
        let mut state = self.inner.state();
        let now = state.now_ms();
        state.clock_ms = Some(now + by.as_millis() as i64);
        state.close_idle_rooms();
    }

    /// The stand-in's clock follows the wall clock again.
    pub fn use_wall_clock(&self) {
        self.inner.state().clock_ms = None;
    }

    /// The stand-in's clock, in ms.
    pub fn now_ms(&self) -> i64 {
        self.inner.state().now_ms()
    }

    /// Token checks (`exp`, `nbf`, the RemoveParticipant cut-off) use the wall clock plus
    /// `seconds`: a positive skew makes tokens expire early, as on a server whose clock is ahead.
    pub fn skew_token_clock(&self, seconds: i64) {
        self.inner.state().token_skew = seconds;
    }

    // ---- Webhooks ---------------------------------------------------------------------------

    /// Where webhooks go (`None`: nowhere; `flush` then drops the queue).
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.inner.state().webhook_url = url;
    }

    /// Signs webhooks with another key pair (to see a receiver refuse them).
    pub fn sign_webhooks_with(&self, key: &str, secret: &str) {
        self.inner.state().webhook_key = (key.to_string(), secret.to_string());
    }

    /// Delivers each event twice, with the same id (as a retry after a lost answer does).
    pub fn duplicate(&self, on: bool) {
        self.inner.state().duplicate = on;
    }

    /// `Some(seed)`: each flush delivers its batch in an order shuffled by a generator seeded
    /// with `seed` (deterministic); `None`: in order.
    pub fn reorder(&self, seed: Option<u64>) {
        self.inner.state().reorder = seed.map(rand::rngs::StdRng::seed_from_u64);
    }

    /// The next `n` events emitted are lost (counted at emission, not at flush).
    pub fn drop_next(&self, n: usize) {
        self.inner.state().drop_next = n;
    }

    /// Every event of this kind emitted from now on is lost.
    pub fn drop_kind(&self, kind: &str) {
        self.inner.state().drop_kinds.insert(kind.to_string());
    }

    /// Events of this kind are delivered again.
    pub fn undrop_kind(&self, kind: &str) {
        self.inner.state().drop_kinds.remove(kind);
    }

    /// The next `n` deliveries have their body altered after signing (the receiver must
    /// refuse them: the `sha256` claim no longer matches).
    pub fn tamper_next(&self, n: usize) {
        self.inner.state().tamper_next = n;
    }

    /// How many times a delivery answered with a 5xx (not 501), a 429 or a transport error is
    /// retried (at once, no back-off). LiveKit's client retries 4 times, the default here.
    pub fn set_webhook_retries(&self, retries: u32) {
        self.inner.state().retries = retries;
    }

    /// Events that waited longer than this on the stand-in's clock are dropped at flush
    /// (LiveKit: 30 s, the default); `None` keeps them.
    pub fn set_max_queue_age(&self, age: Option<Duration>) {
        self.inner.state().max_queue_age = age;
    }

    /// Delivers the queued events (in order, unless reordered), waiting for each answer, and
    /// returns the deliveries made.
    pub async fn flush(&self) -> Vec<Delivery> {
        let (batch, url, key, duplicate, retries) = {
            let mut state = self.inner.state();
            let queued = std::mem::take(&mut state.queue);
            let now_ms = state.now_ms();
            let max_age = state.max_queue_age;
            let mut batch = Vec::new();
            for q in queued {
                let too_old =
                    max_age.is_some_and(|age| now_ms - q.queued_at_ms > age.as_millis() as i64);
                if too_old || state.webhook_url.is_none() {
                    state.dropped.push(q.event);
                } else {
                    batch.push(q.event);
                }
            }
            if let Some(rng) = state.reorder.as_mut() {
                batch.shuffle(rng);
            }
            (
                batch,
                state.webhook_url.clone(),
                state.webhook_key.clone(),
                state.duplicate,
                state.retries,
            )
        };
        let Some(url) = url else {
            return Vec::new();
        };
        let mut made = Vec::new();
        for event in batch {
            let copies = if duplicate { 2 } else { 1 };
            for _ in 0..copies {
                for attempt in 1..=retries + 1 {
                    let delivery = self.deliver(&url, &key, &event, attempt).await;
                    self.inner.state().sent.push(delivery.clone());
                    let retry = match delivery.status {
                        None => true,
                        Some(s) => s == 429 || (s >= 500 && s != 501),
                    };
                    made.push(delivery);
                    if !retry {
                        break;
                    }
                }
            }
        }
        made
    }

    async fn deliver(
        &self,
        url: &str,
        (key, secret): &(String, String),
        event: &proto::WebhookEvent,
        attempt: u32,
    ) -> Delivery {
        let body = serde_json::to_string(event).expect("webhook event as JSON");
        let sha = STANDARD.encode(Sha256::digest(body.as_bytes()));
        let token = AccessToken::with_api_key(key, secret)
            .with_ttl(Duration::from_secs(300))
            .with_sha256(&sha)
            .to_jwt()
            .expect("sign webhook");
        let tampered = {
            let mut state = self.inner.state();
            if state.tamper_next > 0 {
                state.tamper_next -= 1;
                true
            } else {
                false
            }
        };
        // Still valid JSON, so only the signature check can catch it.
        let body = if tampered {
            body.replacen('{', "{ ", 1)
        } else {
            body
        };
        let sent = self
            .inner
            .http
            .post(url)
            .header(header::AUTHORIZATION, &token)
            .header(header::CONTENT_TYPE, "application/webhook+json")
            .header(header::USER_AGENT, "LiveKit")
            .body(body.clone())
            .send()
            .await;
        let (status, error) = match sent {
            Ok(resp) => (Some(resp.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Delivery {
            event: event.event.clone(),
            id: event.id.clone(),
            body,
            authorization: token,
            status,
            error,
            attempt,
            tampered,
        }
    }

    /// Every delivery made so far (retries and duplicates included), in order.
    pub fn sent_events(&self) -> Vec<Delivery> {
        self.inner.state().sent.clone()
    }

    /// Every event the stand-in produced, delivered or not, in order.
    pub fn emitted_events(&self) -> Vec<proto::WebhookEvent> {
        self.inner.state().emitted.clone()
    }

    /// The kinds of [`Self::emitted_events`], for quick assertions.
    pub fn emitted_kinds(&self) -> Vec<String> {
        self.inner
            .state()
            .emitted
            .iter()
            .map(|e| e.event.clone())
            .collect()
    }

    /// Events waiting for the next flush.
    pub fn pending_events(&self) -> Vec<proto::WebhookEvent> {
        self.inner
            .state()
            .queue
            .iter()
            .map(|q| q.event.clone())
            .collect()
    }

    /// Events lost on purpose (drop switches, too old, no webhook URL).
    pub fn dropped_events(&self) -> Vec<proto::WebhookEvent> {
        self.inner.state().dropped.clone()
    }
}

impl Drop for LiveKitStandIn {
    fn drop(&mut self) {
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((stop, task)) = server {
            let _ = stop.send(());
            task.abort();
        }
    }
}

fn serve(inner: &Arc<Inner>, listener: TcpListener) {
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(inner));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    *inner.server.lock().unwrap_or_else(|e| e.into_inner()) = Some((stop, task));
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

fn twirp_error_response(err: &TwirpError) -> Response {
    let body = serde_json::json!({"code": err.code, "msg": err.msg}).to_string();
    Response::builder()
        .status(twirp_status(err.code))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("error response")
}

fn plain_401(text: String) -> Response {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .expect("401 response")
}

/// LiveKit's auth middleware: `Ok(None)` when no token came at all, `Err` with the text of
/// the plain 401 otherwise.
fn authenticate(
    state: &State,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<Claims>, String> {
    let header_value = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .filter(|v| !v.is_empty());
    let token = match header_value {
        Some(value) => match value.strip_prefix("Bearer ") {
            Some(token) => token.to_string(),
            None => {
                return Err("invalid authorization header. Must start with Bearer ".into());
            }
        },
        None => query
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .unwrap_or_default()
            .to_string(),
    };
    if token.is_empty() {
        return Ok(None);
    }
    verify_jwt(&state.keys, &token, state.token_now())
        .map(Some)
        .map_err(|e| e.middleware_text(&token))
}

fn decode<T: Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &Bytes,
) -> Result<T, TwirpError> {
    match encoding {
        Encoding::Protobuf => T::decode(body.as_ref()).map_err(|e| {
            TwirpError::new(
                "malformed",
                format!("the protobuf request could not be decoded: {e}"),
            )
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            TwirpError::new(
                "malformed",
                format!("the json request could not be decoded: {e}"),
            )
        }),
    }
}

fn encode<T: Message + Serialize>(encoding: Encoding, value: &T) -> Response {
    let (content_type, body) = match encoding {
        Encoding::Protobuf => ("application/protobuf", value.encode_to_vec()),
        Encoding::Json => (
            "application/json",
            serde_json::to_vec(value).expect("answer as JSON"),
        ),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("answer")
}

/// Decodes the request, runs `f` on the state and encodes its answer.
fn run<Req, Resp>(
    inner: &Inner,
    encoding: Encoding,
    body: &Bytes,
    claims: Option<&Claims>,
    f: impl FnOnce(&mut State, Option<&Claims>, Req) -> Result<Resp, TwirpError>,
) -> Result<Response, TwirpError>
where
    Req: Message + Default + DeserializeOwned,
    Resp: Message + Serialize,
{
    let req: Req = decode(encoding, body)?;
    let mut state = inner.state();
    let answer = f(&mut state, claims, req)?;
    drop(state);
    Ok(encode(encoding, &answer))
}

async fn handle(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let delay = inner.state().delay;
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let path = parts.uri.path().to_string();
    let (service, method) = path
        .strip_prefix("/twirp/livekit.")
        .and_then(|rest| rest.split_once('/'))
        .map(|(s, m)| (s.to_string(), m.to_string()))
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = content_type == "application/json";
    let record = |status: StatusCode, code: Option<&str>| {
        inner.state().calls.push(Call {
            service: service.clone(),
            method: method.clone(),
            status: status.as_u16(),
            code: code.map(str::to_string),
            json,
        });
    };
    let fail = |err: TwirpError| {
        record(twirp_status(err.code), Some(err.code));
        twirp_error_response(&err)
    };

    if inner.state().down {
        return fail(TwirpError::new(
            "unavailable",
            "the LiveKit stand-in is down",
        ));
    }
    let claims = {
        let state = inner.state();
        authenticate(&state, &parts.headers, parts.uri.query())
    };
    let claims = match claims {
        Ok(claims) => claims,
        Err(text) => {
            record(StatusCode::UNAUTHORIZED, None);
            return plain_401(text);
        }
    };
    if parts.method == Method::GET && path == "/" {
        return Response::new(Body::from("OK"));
    }
    if parts.method != Method::POST {
        return fail(TwirpError::new(
            "bad_route",
            format!(
                "unsupported method {:?} (only POST is allowed)",
                parts.method.as_str()
            ),
        ));
    }
    let known = matches!(
        (service.as_str(), method.as_str()),
        (
            "RoomService",
            "CreateRoom"
                | "ListRooms"
                | "DeleteRoom"
                | "ListParticipants"
                | "RemoveParticipant"
                | "UpdateRoomMetadata"
        ) | (
            "Egress",
            "StartRoomCompositeEgress" | "StopEgress" | "ListEgress"
        )
    );
    if !known {
        return fail(TwirpError::new(
            "bad_route",
            format!("no handler for path {path:?}"),
        ));
    }
    let encoding = match content_type.as_str() {
        "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return fail(TwirpError::new(
                "bad_route",
                format!("unexpected Content-Type: {other:?}"),
            ));
        }
    };
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return fail(TwirpError::new("malformed", "failed to read request body"));
    };
    let injected = inner
        .state()
        .fail_next
        .get_mut(&method)
        .and_then(VecDeque::pop_front);
    if let Some(err) = injected {
        return fail(err);
    }
    let c = claims.as_ref();
    let answer = match method.as_str() {
        "CreateRoom" => run(&inner, encoding, &body, c, State::create_room),
        "ListRooms" => run(&inner, encoding, &body, c, State::list_rooms),
        "DeleteRoom" => run(&inner, encoding, &body, c, State::delete_room),
        "ListParticipants" => run(&inner, encoding, &body, c, State::list_participants),
        "RemoveParticipant" => run(&inner, encoding, &body, c, State::remove_participant),
        "UpdateRoomMetadata" => run(&inner, encoding, &body, c, State::update_room_metadata),
        "StartRoomCompositeEgress" => run(
            &inner,
            encoding,
            &body,
            c,
            State::start_room_composite_egress,
        ),
        "StopEgress" => run(&inner, encoding, &body, c, State::stop_egress),
        "ListEgress" => run(&inner, encoding, &body, c, State::list_egress),
        _ => unreachable!("routes checked above"),
    };
    match answer {
        Ok(response) => {
            record(StatusCode::OK, None);
            response
        }
        Err(err) => fail(err),
    }
}
