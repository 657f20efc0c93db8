//! Tests of the LiveKit stand-in (`tests/common/livekit.rs`) itself, driven through the real
//! `livekit-api` clients, so that muster's LiveKit tests rest on a stand-in that answers the
//! way `livekit-api` expects and the way LIVEKIT.md describes the server.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::livekit::{JoinError, LiveKitStandIn};
use hmac::{Hmac, Mac};
use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
use livekit_api::services::egress::{
    EgressClient, EgressListFilter, EgressListOptions, EgressOutput, RoomCompositeOptions,
};
use livekit_api::services::room::{CreateRoomOptions, RemoveParticipantOptions, RoomClient};
use livekit_api::services::{ServerError, ServiceError};
use livekit_api::webhooks::{WebhookError, WebhookReceiver};
use livekit_protocol as proto;
use prost::Message;
use sha2::{Digest, Sha256};

const KEY: &str = "APIstandin";
const SECRET: &str = "stand-in-secret-of-a-decent-length-0123456789";
const T0: i64 = 1_700_000_000;

fn room_client(lk: &LiveKitStandIn) -> RoomClient {
    RoomClient::with_api_key(&lk.url(), KEY, SECRET)
}

fn egress_client(lk: &LiveKitStandIn) -> EgressClient {
    EgressClient::with_api_key(&lk.url(), KEY, SECRET)
}

/// A token like the ones muster hands to browsers.
fn join_token(identity: &str, room: &str) -> String {
    AccessToken::with_api_key(KEY, SECRET)
        .with_identity(identity)
        .with_name(&format!("Name of {identity}"))
        .with_metadata(r#"{"unit":"130200"}"#)
        .with_grants(VideoGrants {
            room_join: true,
            room: room.to_string(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap()
}

fn api_token(grants: VideoGrants) -> String {
    AccessToken::with_api_key(KEY, SECRET)
        .with_grants(grants)
        .to_jwt()
        .unwrap()
}

/// A JWT made by hand, for what `AccessToken` refuses to make.
fn hand_jwt(alg: &str, payload: serde_json::Value, secret: &str) -> String {
    let head = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": alg, "typ": "JWT"}).to_string());
    let body = URL_SAFE_NO_PAD.encode(payload.to_string());
    let input = format!("{head}.{body}");
    let signature = match alg {
        "HS384" => {
            let mut mac = Hmac::<sha2::Sha384>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The Twirp code and message of a JSON error answer, if the client got one.
fn twirp(err: &ServiceError) -> Option<(String, String)> {
    match err {
        ServiceError::Twirp(ServerError::Twirp(e)) => Some((e.code.clone(), e.msg.clone())),
        _ => None,
    }
}

/// A raw Twirp request, as a JSON or hand-made client would send it.
async fn raw(
    lk: &LiveKitStandIn,
    method_path: &str,
    content_type: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/twirp/livekit.{method_path}", lk.url()))
        .header("content-type", content_type)
        .body(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

// ---- A webhook receiver, verifying like muster must ----------------------------------------

#[derive(Debug, Clone)]
struct Got {
    content_type: String,
    authorization: String,
    body: String,
    event: Result<proto::WebhookEvent, String>,
}

struct Hook {
    receiver: WebhookReceiver,
    got: Mutex<Vec<Got>>,
    /// How many of the next requests get a 500 before being looked at.
    fail_first: AtomicUsize,
}

struct HookServer {
    url: String,
    hook: Arc<Hook>,
}

impl HookServer {
    async fn start() -> Self {
        let hook = Arc::new(Hook {
            receiver: WebhookReceiver::new(TokenVerifier::with_api_key(KEY, SECRET)),
            got: Mutex::new(Vec::new()),
            fail_first: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/livekit", post(receive))
            .with_state(Arc::clone(&hook));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/livekit", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, hook }
    }

    fn got(&self) -> Vec<Got> {
        self.hook.got.lock().unwrap().clone()
    }

    /// The events that passed verification, in arrival order.
    fn events(&self) -> Vec<proto::WebhookEvent> {
        self.got()
            .into_iter()
            .filter_map(|g| g.event.ok())
            .collect()
    }
}

async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: String) -> StatusCode {
    if hook
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let authorization = header("authorization");
    let event = hook
        .receiver
        .receive(&body, &authorization)
        .map_err(|e| match e {
            WebhookError::InvalidSignature => "invalid signature".to_string(),
            other => other.to_string(),
        });
    let status = if event.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    hook.got.lock().unwrap().push(Got {
        content_type: header("content-type"),
        authorization,
        body,
        event,
    });
    status
}

// ---- RoomService ----------------------------------------------------------------------------

#[tokio::test]
async fn create_room_is_idempotent_with_defaults_and_overrides() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    lk.set_now(T0);
    let client = room_client(&lk);

    let first = client
        .create_room("dispatch-1", CreateRoomOptions::default())
        .await
        .unwrap();
    assert!(
        first.sid.starts_with("RM_") && first.sid.len() > 3,
        "{}",
        first.sid
    );
    assert_eq!(first.name, "dispatch-1");
    assert_eq!(
        (
            first.empty_timeout,
            first.departure_timeout,
            first.max_participants
        ),
        (300, 20, 0)
    );
    assert_eq!(
        (first.creation_time, first.creation_time_ms),
        (T0, T0 * 1000)
    );

    let again = client
        .create_room(
            "dispatch-1",
            CreateRoomOptions {
                empty_timeout: 600,
                max_participants: 50,
                metadata: "m1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(again.sid, first.sid, "the existing room comes back");
    assert_eq!(
        (
            again.empty_timeout,
            again.departure_timeout,
            again.max_participants
        ),
        (600, 20, 50),
        "non-zero fields override, zero ones keep"
    );
    assert_eq!(again.metadata, "m1");

    let zeros = client
        .create_room("dispatch-1", CreateRoomOptions::default())
        .await
        .unwrap();
    assert_eq!(zeros.sid, first.sid);
    assert_eq!((zeros.empty_timeout, zeros.max_participants), (600, 50));
    assert_eq!(zeros.metadata, "m1");

    assert_eq!(lk.rooms().len(), 1);
    assert_eq!(
        lk.emitted_kinds(),
        ["room_started"],
        "room_started fires once, on the first CreateRoom"
    );

    let empty = client.create_room("", CreateRoomOptions::default()).await;
    assert_eq!(
        twirp(&empty.unwrap_err()).map(|(c, _)| c).as_deref(),
        Some("invalid_argument")
    );
}

#[tokio::test]
async fn list_rooms_all_or_by_name() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    let client = room_client(&lk);
    for name in ["b-room", "a-room"] {
        client
            .create_room(name, CreateRoomOptions::default())
            .await
            .unwrap();
    }
    lk.join(&join_token("u1", "a-room")).unwrap();

    let all = client.list_rooms(vec![]).await.unwrap();
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a-room", "b-room"]);
    assert_eq!(all[0].num_participants, 1);

    let some = client.list_rooms(vec!["b-room".into()]).await.unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some[0].name, "b-room");
    assert!(
        client
            .list_rooms(vec!["nope".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn delete_room_missing_is_not_found_and_existing_empties_and_finishes() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    let client = room_client(&lk);

    let err = client.delete_room("missing").await.unwrap_err();
    assert_eq!(twirp(&err).unwrap().0, "not_found");
    let last = lk.calls().pop().unwrap();
    assert_eq!((last.method.as_str(), last.status), ("DeleteRoom", 404));

    client
        .create_room("r", CreateRoomOptions::default())
        .await
        .unwrap();
    let a = lk.join(&join_token("alice", "r")).unwrap();
    let b = lk.join(&join_token("bob", "r")).unwrap();
    client.delete_room("r").await.unwrap();

    assert!(lk.rooms().is_empty());
    assert!(client.list_rooms(vec![]).await.unwrap().is_empty());
    let events = lk.emitted_events();
    let tail: Vec<(&str, String)> = events[events.len() - 3..]
        .iter()
        .map(|e| {
            let sid = e
                .participant
                .as_ref()
                .map(|p| p.sid.clone())
                .unwrap_or_default();
            (e.event.as_str(), sid)
        })
        .collect();
    assert_eq!(
        tail,
        [
            ("participant_left", a),
            ("participant_left", b),
            ("room_finished", String::new())
        ]
    );
    let left = events[events.len() - 2].participant.clone().unwrap();
    assert_eq!(
        left.disconnect_reason,
        proto::DisconnectReason::RoomDeleted as i32
    );
    assert_eq!(
        left.state,
        proto::participant_info::State::Disconnected as i32
    );
    assert_eq!(
        twirp(&client.delete_room("r").await.unwrap_err())
            .unwrap()
            .0,
        "not_found",
        "deleted means gone"
    );
}

#[tokio::test]
async fn list_participants_unknown_room_is_empty_known_room_lists_active_ones() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    lk.set_now(T0);
    let client = room_client(&lk);

    assert!(
        client
            .list_participants("never-made")
            .await
            .unwrap()
            .is_empty()
    );

    let sid = lk.join(&join_token("alice", "r")).unwrap();
    assert!(sid.starts_with("PA_"), "{sid}");
    let listed = client.list_participants("r").await.unwrap();
    assert_eq!(listed.len(), 1);
    let p = &listed[0];
    assert_eq!(
        (p.sid.as_str(), p.identity.as_str(), p.name.as_str()),
        (sid.as_str(), "alice", "Name of alice")
    );
    assert_eq!(p.metadata, r#"{"unit":"130200"}"#);
    assert_eq!(p.state, proto::participant_info::State::Active as i32);
    assert_eq!((p.joined_at, p.joined_at_ms), (T0, T0 * 1000));

    assert!(lk.leave(&sid));
    assert!(!lk.leave(&sid), "gone already");
    assert!(client.list_participants("r").await.unwrap().is_empty());
}

#[tokio::test]
async fn remove_participant_missing_is_not_found_and_revokes_older_tokens() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    let client = room_client(&lk);

    let err = client.remove_participant("r", "alice").await.unwrap_err();
    assert_eq!(twirp(&err).unwrap().0, "not_found", "no room");
    lk.join(&join_token("bob", "r")).unwrap();
    let err = client.remove_participant("r", "alice").await.unwrap_err();
    assert_eq!(twirp(&err).unwrap().0, "not_found", "no such participant");

    let sid = lk.join(&join_token("alice", "r")).unwrap();
    client.remove_participant("r", "alice").await.unwrap();
    assert_eq!(
        lk.participants("r")
            .iter()
            .map(|p| p.identity.as_str())
            .collect::<Vec<_>>(),
        ["bob"]
    );
    let left = lk.emitted_events().pop().unwrap();
    assert_eq!(left.event, "participant_left");
    let left = left.participant.unwrap();
    assert_eq!(
        (left.sid.as_str(), left.identity.as_str()),
        (sid.as_str(), "alice")
    );
    assert_eq!(
        left.disconnect_reason,
        proto::DisconnectReason::ParticipantRemoved as i32
    );

    // Default cut-off: now + 1 min, so even a token minted just now is refused.
    assert_eq!(lk.join(&join_token("alice", "r")), Err(JoinError::Revoked));
    // An explicit cut-off in the past lets a fresh token in.
    client
        .remove_participant_with_options(
            "r",
            "bob",
            RemoveParticipantOptions {
                revoke_token_ts: now_secs() - 120,
            },
        )
        .await
        .unwrap();
    lk.join(&join_token("bob", "r")).unwrap();
}

#[tokio::test]
async fn update_room_metadata_returns_the_room() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    let client = room_client(&lk);
    let err = client.update_room_metadata("r", "x").await.unwrap_err();
    assert_eq!(twirp(&err).unwrap().0, "not_found");

    let created = client
        .create_room("r", CreateRoomOptions::default())
        .await
        .unwrap();
    let updated = client
        .update_room_metadata("r", r#"{"phase":"roll-call"}"#)
        .await
        .unwrap();
    assert_eq!(updated.sid, created.sid);
    assert_eq!(updated.metadata, r#"{"phase":"roll-call"}"#);
    assert_eq!(
        client.list_rooms(vec!["r".into()]).await.unwrap()[0].metadata,
        r#"{"phase":"roll-call"}"#
    );
}

// ---- Auth -------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_secret_and_bad_tokens_get_plain_text_401_which_the_client_cannot_decode() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;

    let wrong = RoomClient::with_api_key(&lk.url(), KEY, "not-the-secret");
    let err = wrong
        .create_room("r", CreateRoomOptions::default())
        .await
        .unwrap_err();
    // The client reads every non-200 answer as a JSON Twirp error; a plain-text body makes
    // that fail, so the 401 surfaces as a decode error of the HTTP layer.
    match &err {
        ServiceError::Twirp(ServerError::Request(e)) => {
            assert!(e.is_decode(), "{e:?}");
            assert!(e.status().is_none(), "the status is lost: {e:?}");
        }
        other => panic!("expected a request/decode error, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with(
            "server error: failed to execute the request: error decoding response body"
        ),
        "{err}"
    );
    assert!(lk.rooms().is_empty());
    let last = lk.calls().pop().unwrap();
    assert_eq!((last.status, last.code), (401, None));

    let unknown_key = RoomClient::with_api_key(&lk.url(), "APIother", SECRET);
    let err = unknown_key.list_rooms(vec![]).await.unwrap_err();
    assert!(matches!(err, ServiceError::Twirp(ServerError::Request(ref e)) if e.is_decode()));

    // The bodies, seen raw.
    let body = proto::ListRoomsRequest::default().encode_to_vec();
    let good = api_token(VideoGrants {
        room_list: true,
        ..Default::default()
    });
    let cases: Vec<(String, &str)> = vec![
        (
            good.clone(),
            "invalid authorization header. Must start with Bearer ",
        ),
        (format!("Basic {good}"), "invalid authorization header"),
        ("Bearer not.a.jwt".into(), "invalid authorization token"),
        (
            format!(
                "Bearer {}",
                AccessToken::with_api_key("APIother", SECRET)
                    .with_grants(VideoGrants {
                        room_list: true,
                        ..Default::default()
                    })
                    .to_jwt()
                    .unwrap()
            ),
            "invalid API key: APIother",
        ),
        (
            format!(
                "Bearer {}",
                hand_jwt(
                    "HS384",
                    serde_json::json!({"iss": KEY, "exp": now_secs() + 600, "video": {"roomList": true}}),
                    SECRET
                )
            ),
            "invalid token",
        ),
        (
            format!(
                "Bearer {}",
                hand_jwt(
                    "HS256",
                    serde_json::json!({"iss": KEY, "video": {"roomList": true}}),
                    SECRET
                )
            ),
            "exp",
        ),
        (
            format!(
                "Bearer {}",
                hand_jwt(
                    "HS256",
                    serde_json::json!({"iss": KEY, "exp": now_secs() - 61, "video": {"roomList": true}}),
                    SECRET
                )
            ),
            "expired",
        ),
    ];
    for (authorization, expected) in cases {
        let (status, content_type, answer) = raw(
            &lk,
            "RoomService/ListRooms",
            "application/protobuf",
            Some(&authorization),
            body.clone(),
        )
        .await;
        let text = String::from_utf8(answer).unwrap();
        assert_eq!(status, 401, "{authorization}: {text}");
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert!(text.contains(expected), "{authorization}: {text}");
    }

    // Within the 60 s leeway an expired token still passes.
    let barely = hand_jwt(
        "HS256",
        serde_json::json!({"iss": KEY, "exp": now_secs() - 30, "video": {"roomList": true}}),
        SECRET,
    );
    let (status, _, _) = raw(
        &lk,
        "RoomService/ListRooms",
        "application/protobuf",
        Some(&format!("Bearer {barely}")),
        body.clone(),
    )
    .await;
    assert_eq!(status, 200);

    // A server clock 7 h ahead makes the client's 6 h tokens expire.
    lk.skew_token_clock(7 * 3600);
    let err = room_client(&lk).list_rooms(vec![]).await.unwrap_err();
    assert!(matches!(err, ServiceError::Twirp(ServerError::Request(ref e)) if e.is_decode()));
    lk.skew_token_clock(0);
    room_client(&lk).list_rooms(vec![]).await.unwrap();
}

#[tokio::test]
async fn missing_or_insufficient_grants_get_json_unauthenticated() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    let list_only = RoomClient::with_token(
        &lk.url(),
        &api_token(VideoGrants {
            room_list: true,
            ..Default::default()
        }),
    );
    let err = list_only
        .create_room("r", CreateRoomOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        twirp(&err),
        Some(("unauthenticated".into(), "permissions denied".into()))
    );
    assert!(lk.rooms().is_empty());
    list_only.list_rooms(vec![]).await.unwrap();

    room_client(&lk)
        .create_room("b", CreateRoomOptions::default())
        .await
        .unwrap();
    // roomAdmin for room "a" does not cover room "b".
    let admin_of_a = RoomClient::with_token(
        &lk.url(),
        &api_token(VideoGrants {
            room_admin: true,
            room: "a".into(),
            ..Default::default()
        }),
    );
    for err in [
        admin_of_a.list_participants("b").await.unwrap_err(),
        admin_of_a.remove_participant("b", "x").await.unwrap_err(),
        admin_of_a.update_room_metadata("b", "m").await.unwrap_err(),
        admin_of_a.delete_room("b").await.unwrap_err(),
    ] {
        assert_eq!(twirp(&err).unwrap().0, "unauthenticated", "{err}");
    }
    assert!(admin_of_a.list_participants("a").await.unwrap().is_empty());

    let no_record = EgressClient::with_token(
        &lk.url(),
        &api_token(VideoGrants {
            room_create: true,
            ..Default::default()
        }),
    );
    let err = no_record
        .list_egress(EgressListOptions::default())
        .await
        .unwrap_err();
    assert_eq!(twirp(&err).unwrap().0, "unauthenticated");

    // No Authorization at all: no grants, so the same JSON answer.
    let (status, content_type, body) = raw(
        &lk,
        "RoomService/ListRooms",
        "application/protobuf",
        None,
        vec![],
    )
    .await;
    assert_eq!((status, content_type.as_str()), (401, "application/json"));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"code": "unauthenticated", "msg": "permissions denied"})
    );
}

// ---- JSON, routing, outages --------------------------------------------------------------------

#[tokio::test]
async fn json_requests_get_json_answers_and_errors_have_twirp_statuses() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    let auth = format!(
        "Bearer {}",
        api_token(VideoGrants {
            room_create: true,
            room_list: true,
            ..Default::default()
        })
    );
    let (status, content_type, body) = raw(
        &lk,
        "RoomService/CreateRoom",
        "application/json",
        Some(&auth),
        br#"{"name":"j","emptyTimeout":60,"max_participants":3}"#.to_vec(),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let room: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(room["sid"].as_str().unwrap().starts_with("RM_"));
    assert_eq!(room["emptyTimeout"], 60);
    assert_eq!(room["departureTimeout"], 20);
    assert_eq!(room["maxParticipants"], 3);
    assert!(
        room["creationTime"].is_string(),
        "int64 as a string: {room}"
    );

    let (status, content_type, body) = raw(
        &lk,
        "RoomService/DeleteRoom",
        "application/json",
        Some(&auth),
        br#"{"room":"nope"}"#.to_vec(),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (404, "application/json"));
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["code"], "not_found");
    assert!(err["msg"].is_string());

    let (status, _, body) = raw(
        &lk,
        "RoomService/ListRooms",
        "application/protobuf",
        Some(&auth),
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = raw(
        &lk,
        "RoomService/ListRooms",
        "text/plain",
        Some(&auth),
        vec![],
    )
    .await;
    assert_eq!(status, 404, "bad_route for an unknown content type");
    let (status, _, _) = raw(
        &lk,
        "RoomService/Frobnicate",
        "application/protobuf",
        Some(&auth),
        vec![],
    )
    .await;
    assert_eq!(status, 404);

    lk.fail_next("ListRooms", "resource_exhausted");
    let err = room_client(&lk).list_rooms(vec![]).await.unwrap_err();
    assert_eq!(twirp(&err).unwrap().0, "resource_exhausted");
    assert_eq!(lk.calls().pop().unwrap().status, 429);
    room_client(&lk).list_rooms(vec![]).await.unwrap();
}

#[tokio::test]
async fn an_outage_fails_every_call() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    let client = room_client(&lk);
    client
        .create_room("r", CreateRoomOptions::default())
        .await
        .unwrap();

    lk.set_down(true);
    let err = client.list_rooms(vec![]).await.unwrap_err();
    assert_eq!(twirp(&err).unwrap().0, "unavailable");
    assert_eq!(lk.calls().pop().unwrap().status, 503);
    let err = egress_client(&lk)
        .list_egress(EgressListOptions::default())
        .await
        .unwrap_err();
    assert_eq!(twirp(&err).unwrap().0, "unavailable");
    assert_eq!(lk.join(&join_token("a", "r")), Err(JoinError::Unavailable));
    lk.set_down(false);
    assert_eq!(client.list_rooms(vec![]).await.unwrap().len(), 1);

    lk.set_unreachable(true).await;
    let err = client.list_rooms(vec![]).await.unwrap_err();
    match &err {
        ServiceError::Twirp(ServerError::Request(e)) => assert!(e.is_connect(), "{e:?}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
    lk.set_unreachable(false).await;
    assert_eq!(client.list_rooms(vec![]).await.unwrap().len(), 1);

    lk.set_delay(Some(Duration::from_secs(2)));
    let impatient = room_client(&lk).with_request_timeout(Duration::from_millis(200));
    match impatient.list_rooms(vec![]).await.unwrap_err() {
        ServiceError::Twirp(ServerError::Request(e)) => assert!(e.is_timeout(), "{e:?}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

// ---- Participants -------------------------------------------------------------------------------

#[tokio::test]
async fn join_checks_the_token_like_the_server() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    let forged = AccessToken::with_api_key(KEY, "wrong-secret")
        .with_identity("a")
        .with_grants(VideoGrants {
            room_join: true,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    assert!(matches!(lk.join(&forged), Err(JoinError::InvalidToken(_))));
    let foreign = AccessToken::with_api_key("APIother", SECRET)
        .with_identity("a")
        .with_grants(VideoGrants {
            room_join: true,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    assert_eq!(
        lk.join(&foreign),
        Err(JoinError::UnknownKey("APIother".into()))
    );
    let no_join = AccessToken::with_api_key(KEY, SECRET)
        .with_identity("a")
        .with_grants(VideoGrants {
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    assert_eq!(lk.join(&no_join), Err(JoinError::PermissionDenied));
    let short = AccessToken::with_api_key(KEY, SECRET)
        .with_identity("a")
        .with_ttl(Duration::from_secs(10))
        .with_grants(VideoGrants {
            room_join: true,
            room: "r".into(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    lk.skew_token_clock(71);
    assert_eq!(lk.join(&short), Err(JoinError::Expired));
    lk.skew_token_clock(-61);
    assert_eq!(lk.join(&short), Err(JoinError::NotYetValid));
    lk.skew_token_clock(0);
    assert!(lk.rooms().is_empty(), "nothing refused made a room");

    // The first join makes the room; max_participants is enforced.
    lk.join(&short).unwrap();
    let room = lk.room("r").unwrap();
    assert_eq!((room.empty_timeout, room.departure_timeout), (300, 20));
    room_client(&lk)
        .create_room(
            "r",
            CreateRoomOptions {
                max_participants: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let b = lk.join(&join_token("b", "r")).unwrap();
    assert_eq!(lk.join(&join_token("c", "r")), Err(JoinError::RoomFull));

    // The same identity again replaces its earlier connection.
    let b2 = lk.join(&join_token("b", "r")).unwrap();
    assert_ne!(b, b2);
    let ids: Vec<(String, String)> = lk
        .participants("r")
        .into_iter()
        .map(|p| (p.identity, p.sid))
        .collect();
    assert_eq!(ids, [("a".to_string(), ids[0].1.clone()), ("b".into(), b2)]);
    let kinds = lk.emitted_kinds();
    assert_eq!(
        kinds,
        [
            "room_started",
            "participant_joined",
            "participant_joined",
            "participant_left",
            "participant_joined"
        ]
    );
    let replaced = lk.emitted_events()[3].participant.clone().unwrap();
    assert_eq!(replaced.sid, b);
    assert_eq!(
        replaced.disconnect_reason,
        proto::DisconnectReason::DuplicateIdentity as i32
    );
}

#[tokio::test]
async fn aborted_connections_and_room_timeouts() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    lk.set_now(T0);
    let sid = lk.abort(&join_token("shy", "r")).unwrap();
    let events = lk.emitted_events();
    assert_eq!(
        lk.emitted_kinds(),
        ["room_started", "participant_connection_aborted"]
    );
    let p = events[1].participant.clone().unwrap();
    assert_eq!((p.sid.as_str(), p.identity.as_str()), (sid.as_str(), "shy"));
    assert!(lk.participants("r").is_empty());

    // Nobody ever joined: empty_timeout (300 s) closes it.
    lk.advance(Duration::from_secs(299));
    assert!(lk.room("r").is_some());
    lk.advance(Duration::from_secs(1));
    assert!(lk.room("r").is_none());
    assert_eq!(lk.emitted_kinds().last().unwrap(), "room_finished");

    // Someone came and went: departure_timeout (20 s) closes it.
    let a = lk.join(&join_token("a", "s")).unwrap();
    lk.advance(Duration::from_secs(3600));
    assert!(lk.room("s").is_some(), "occupied rooms stay");
    lk.leave(&a);
    lk.advance(Duration::from_secs(19));
    assert!(lk.room("s").is_some());
    lk.advance(Duration::from_secs(1));
    assert!(lk.room("s").is_none());
}

// ---- Egress -------------------------------------------------------------------------------------

#[tokio::test]
async fn egress_start_list_stop() {
    let lk = LiveKitStandIn::start(KEY, SECRET, None).await;
    lk.set_now(T0);
    let egress = egress_client(&lk);
    let output = || {
        vec![EgressOutput::File(proto::EncodedFileOutput {
            file_type: proto::EncodedFileType::Mp4 as i32,
            filepath: "recordings/{room_name}-{time}".into(),
            ..Default::default()
        })]
    };

    let err = egress
        .start_room_composite_egress("r", output(), RoomCompositeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(twirp(&err).unwrap().0, "not_found", "no such room");

    let room = room_client(&lk)
        .create_room("r", CreateRoomOptions::default())
        .await
        .unwrap();
    let started = egress
        .start_room_composite_egress(
            "r",
            output(),
            RoomCompositeOptions {
                layout: "grid".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        started.egress_id.starts_with("EG_"),
        "{}",
        started.egress_id
    );
    assert_eq!(
        (started.room_name.as_str(), started.room_id.as_str()),
        ("r", room.sid.as_str())
    );
    assert_eq!(started.status, proto::EgressStatus::EgressStarting as i32);
    assert_eq!(
        started.file_results[0].filename,
        "recordings/r-2023-11-14T221320.mp4"
    );
    match &started.request {
        Some(proto::egress_info::Request::RoomComposite(req)) => {
            assert_eq!(req.layout, "grid");
            assert_eq!(
                req.file_outputs[0].filepath,
                "recordings/{room_name}-{time}"
            );
        }
        other => panic!("request not kept: {other:?}"),
    }
    assert!(lk.room("r").unwrap().active_recording);

    let all = egress
        .list_egress(EgressListOptions::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, proto::EgressStatus::EgressActive as i32);
    let by_room = egress
        .list_egress(EgressListOptions {
            filter: EgressListFilter::Room("other".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(by_room.is_empty());

    lk.advance(Duration::from_secs(90));
    let stopped = egress.stop_egress(&started.egress_id).await.unwrap();
    assert_eq!(stopped.egress_id, started.egress_id);
    assert_eq!(stopped.status, proto::EgressStatus::EgressEnding as i32);
    assert_eq!(
        lk.emitted_kinds(),
        [
            "room_started",
            "egress_started",
            "egress_updated",
            "egress_updated",
            "egress_ended"
        ]
    );
    let ended = lk.emitted_events().pop().unwrap().egress_info.unwrap();
    assert_eq!(ended.status, proto::EgressStatus::EgressComplete as i32);
    let file = &ended.file_results[0];
    assert_eq!(file.duration, 90_000_000_000, "ns");
    assert_eq!(file.location, "recordings/r-2023-11-14T221320.mp4");
    assert!(file.size > 0);
    assert!(!lk.room("r").unwrap().active_recording);

    let active = egress
        .list_egress(EgressListOptions {
            active: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(active.is_empty());
    let by_id = egress
        .list_egress(EgressListOptions {
            filter: EgressListFilter::Egress(started.egress_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_id[0].status, proto::EgressStatus::EgressComplete as i32);

    let again = egress.stop_egress(&started.egress_id).await.unwrap_err();
    assert_eq!(twirp(&again).unwrap().0, "failed_precondition");
    let unknown = egress.stop_egress("EG_nothing").await.unwrap_err();
    assert_eq!(twirp(&unknown).unwrap().0, "not_found");
}

// ---- Webhooks -----------------------------------------------------------------------------------

#[tokio::test]
async fn webhooks_are_signed_and_carry_the_participant() {
    let hook = HookServer::start().await;
    let lk = LiveKitStandIn::start(KEY, SECRET, Some(hook.url.clone())).await;
    lk.set_now(T0);
    let sid = lk.join(&join_token("alice", "r")).unwrap();
    assert_eq!(lk.pending_events().len(), 2, "queued until flushed");
    assert!(hook.got().is_empty());
    let made = lk.flush().await;
    assert_eq!(made.len(), 2);
    assert!(made.iter().all(|d| d.status == Some(200)), "{made:?}");

    let got = hook.got();
    assert_eq!(got.len(), 2);
    for g in &got {
        assert_eq!(g.content_type, "application/webhook+json");
        assert!(!g.authorization.starts_with("Bearer "), "a bare JWT");
        let claims = TokenVerifier::with_api_key(KEY, SECRET)
            .verify(&g.authorization)
            .unwrap();
        assert_eq!(
            claims.sha256,
            STANDARD.encode(Sha256::digest(g.body.as_bytes()))
        );
        assert!(
            (claims.exp as i64 - now_secs() - 300).abs() <= 2,
            "5 min validity"
        );
    }
    let events = hook.events();
    assert_eq!(events[0].event, "room_started");
    assert_eq!(events[0].room.as_ref().unwrap().name, "r");
    let joined = &events[1];
    assert_eq!(joined.event, "participant_joined");
    assert!(joined.id.starts_with("EV_"));
    assert_ne!(joined.id, events[0].id);
    assert_eq!(joined.created_at, T0);
    let p = joined.participant.as_ref().unwrap();
    assert_eq!(
        (p.sid.as_str(), p.identity.as_str(), p.name.as_str()),
        (sid.as_str(), "alice", "Name of alice")
    );
    assert_eq!(p.metadata, r#"{"unit":"130200"}"#);
    assert_eq!(p.state, proto::participant_info::State::Active as i32);
    assert_eq!((p.joined_at, p.joined_at_ms), (T0, T0 * 1000));
    assert_eq!(joined.room.as_ref().unwrap().num_participants, 1);

    // The wire form: lowerCamelCase, int64 as strings, enums by name, zero values left out.
    let body = &got[1].body;
    for needle in [
        r#""event":"participant_joined""#,
        r#""state":"ACTIVE""#,
        r#""joinedAt":"1700000000""#,
        r#""joinedAtMs":"1700000000000""#,
        r#""createdAt":"1700000000""#,
        r#""identity":"alice""#,
        r#""id":"EV_"#,
    ] {
        assert!(body.contains(needle), "{needle} in {body}");
    }
    assert!(!body.contains("isPublisher"), "zero values omitted: {body}");

    lk.advance(Duration::from_secs(5));
    assert!(lk.leave(&sid));
    lk.flush().await;
    let left = hook.events().pop().unwrap();
    assert_eq!(left.event, "participant_left");
    let p = left.participant.unwrap();
    assert_eq!(
        (p.sid.as_str(), p.identity.as_str()),
        (sid.as_str(), "alice")
    );
    assert_eq!(left.created_at, T0 + 5);
    assert_eq!(lk.sent_events().len(), 3);
}

#[tokio::test]
async fn duplicates_share_the_id_and_tampered_bodies_are_refused() {
    let hook = HookServer::start().await;
    let lk = LiveKitStandIn::start(KEY, SECRET, Some(hook.url.clone())).await;
    lk.duplicate(true);
    lk.join(&join_token("alice", "r")).unwrap();
    let made = lk.flush().await;
    assert_eq!(made.len(), 4);
    let events = hook.events();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].id, events[1].id);
    assert_eq!(events[2].id, events[3].id);
    assert_eq!(events[2].event, "participant_joined");
    assert_ne!(events[0].id, events[2].id);
    lk.duplicate(false);

    lk.tamper_next(1);
    let sid = lk.participants("r")[0].sid.clone();
    lk.leave(&sid);
    let made = lk.flush().await;
    assert_eq!(made.len(), 1, "a 4xx is not retried");
    assert!(made[0].tampered);
    assert_eq!(made[0].status, Some(401));
    let last = hook.got().pop().unwrap();
    assert_eq!(last.event.unwrap_err(), "invalid signature");
    assert!(serde_json::from_str::<serde_json::Value>(&last.body).is_ok());

    // Signed with another secret: refused too.
    lk.sign_webhooks_with(KEY, "another-secret");
    lk.join(&join_token("bob", "r")).unwrap();
    let made = lk.flush().await;
    assert_eq!(made[0].status, Some(401));
    assert!(hook.got().pop().unwrap().event.is_err());
}

#[tokio::test]
async fn reordered_dropped_and_retried_deliveries() {
    let hook = HookServer::start().await;
    let lk = LiveKitStandIn::start(KEY, SECRET, Some(hook.url.clone())).await;
    lk.reorder(Some(7));
    let mut sids = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        sids.push(lk.join(&join_token(name, "r")).unwrap());
    }
    let emitted: Vec<String> = lk.emitted_events().into_iter().map(|e| e.id).collect();
    lk.flush().await;
    let delivered: Vec<String> = hook.events().into_iter().map(|e| e.id).collect();
    assert_ne!(delivered, emitted, "shuffled");
    let mut sorted = delivered.clone();
    sorted.sort();
    let mut expected = emitted.clone();
    expected.sort();
    assert_eq!(sorted, expected, "nothing lost or added");
    lk.reorder(None);

    lk.drop_kind("participant_left");
    lk.leave(&sids[0]);
    lk.drop_next(1);
    lk.leave(&sids[1]);
    lk.undrop_kind("participant_left");
    lk.leave(&sids[2]);
    assert_eq!(lk.dropped_events().len(), 2);
    let before = hook.events().len();
    lk.flush().await;
    let after = hook.events();
    assert_eq!(after.len(), before + 1);
    assert_eq!(
        after.last().unwrap().participant.as_ref().unwrap().sid,
        sids[2]
    );

    // A 500 is retried with the same id.
    hook.hook.fail_first.store(2, Ordering::SeqCst);
    lk.leave(&sids[3]);
    let made = lk.flush().await;
    assert_eq!(
        made.iter()
            .map(|d| (d.attempt, d.status))
            .collect::<Vec<_>>(),
        [(1, Some(500)), (2, Some(500)), (3, Some(200))]
    );
    assert!(made.iter().all(|d| d.id == made[0].id));

    // Events older than 30 s on the stand-in's clock are dropped; the room_finished that
    // the departure timeout (20 s) brings is fresh.
    lk.set_now(T0);
    lk.leave(&sids[4]);
    lk.advance(Duration::from_secs(31));
    let made = lk.flush().await;
    assert_eq!(
        made.iter().map(|d| d.event.as_str()).collect::<Vec<_>>(),
        ["room_finished"]
    );
    assert_eq!(
        lk.dropped_events().last().unwrap().event,
        "participant_left"
    );

    // No receiver listening: retried, then given up.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let nowhere = LiveKitStandIn::start(KEY, SECRET, Some(format!("http://{closed}/x"))).await;
    nowhere.set_webhook_retries(1);
    nowhere.join(&join_token("a", "r")).unwrap();
    let made = nowhere.flush().await;
    assert_eq!(made.len(), 4);
    assert!(made.iter().all(|d| d.status.is_none() && d.error.is_some()));
}
