//! muster against the LiveKit stand-in, on SQLite and (with MUSTER_TEST_POSTGRES_URL)
//! PostgreSQL: rooms created and closed by jobs through the real `livekit-api` client,
//! personal join tokens, signed webhooks into the attendance ledger, reconciliation, host
//! controls and recording.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use common::livekit::LiveKitStandIn;
use common::{TestApp, TestDb, spawn_app_with, test_config};
use muster::config::Config;
use muster::jobs::{Clock, ManualClock, Outcome, Worker};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const KEY: &str = "APImuster";
const SECRET: &str = "muster-test-secret-0123456789-abcdefghij";

struct Setup {
    livekit: LiveKitStandIn,
    app: TestApp,
    config: Config,
    clock: ManualClock,
    worker: Worker,
}

/// The small directory, the stand-in, the app (webhooks pointed at it) and a worker on a
/// manual clock.
async fn setup(db: &TestDb) -> Setup {
    common::seed(&db.store).await;
    let livekit = LiveKitStandIn::start(KEY, SECRET, None).await;
    let mut config = test_config(db);
    config.livekit.url = livekit.ws_url();
    config.livekit.api_key = KEY.into();
    config.livekit.api_secret = muster::config::Secret::new(SECRET);
    config.mail.outbox_dir = tempfile::tempdir().unwrap().keep();
    let app = spawn_app_with(db, config.clone()).await;
    livekit.set_webhook_url(Some(app.url("/livekit/webhook")));
    let clock = ManualClock::new(Utc::now() + Duration::seconds(1));
    let worker = muster::startup::job_workers(&config, &db.store, Arc::new(clock.clone()))
        .await
        .unwrap()
        .remove(0);
    Setup {
        livekit,
        app,
        config,
        clock,
        worker,
    }
}

/// Publishes a dispatch starting `minutes` from now; returns the root meeting.
async fn publish(
    db: &TestDb,
    template: &str,
    root: &str,
    minutes: i64,
    chosen: Vec<String>,
) -> muster::store::MeetingRecord {
    let start = (Utc::now() + Duration::minutes(minutes)).to_rfc3339();
    common::publish(&db.store, template, root, &start, chosen).await
}

/// Runs the due jobs of some kinds; returns their outcomes.
async fn run(setup: &Setup, kinds: &[&str]) -> Vec<Outcome> {
    let outcomes = setup.worker.run_until_idle().await.unwrap();
    outcomes
        .into_iter()
        .filter(|o| match o {
            Outcome::Done { kind, .. }
            | Outcome::Retrying { kind, .. }
            | Outcome::Dead { kind, .. } => kinds.iter().any(|k| kind.starts_with(k)),
            Outcome::LostLease { .. } => true,
        })
        .collect()
}

async fn link(db: &TestDb, meeting: i64, unit_code: &str, role: Option<&str>) -> (String, i64) {
    common::invitation_link(&db.store, meeting, unit_code, role).await
}

async fn join_token(app: &TestApp, link: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(app.url(&format!("/i/{link}/join.json")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

backend_tests! {
    async fn rooms_are_created_before_and_closed_after(db: TestDb) {
        let s = setup(db).await;
        let root = publish(db, "coal-mine-resumption", "130000", 10, vec![]).await;
        let outcomes = run(&s, &["room."]).await;
        assert!(outcomes.iter().any(|o| matches!(o, Outcome::Done { kind, .. } if kind == "room.create")), "{outcomes:?}");
        let room = s.livekit.room(&root.room_name).expect("room created ahead of the start");
        let invited = db.store.room_invitation_count(&root.room_name).await.unwrap();
        assert_eq!(room.max_participants as i64, invited + 20, "invitations plus the margin");
        assert_eq!(room.empty_timeout, 3600);
        let metadata: Value = serde_json::from_str(&room.metadata).unwrap();
        assert_eq!(metadata["meeting_id"], root.id);
        assert_eq!(db.store.meeting(root.id).await.unwrap().room_sid.as_deref(), Some(room.sid.as_str()));
        // Sub-venues join the call's room and get none of their own.
        let rooms: Vec<String> = s.livekit.rooms().into_iter().map(|r| r.name).collect();
        let meetings = db.store.dispatch_meetings(root.dispatch_id).await.unwrap();
        for m in meetings.iter().filter(|m| m.joins_parent) {
            assert_eq!(m.room_name, root.room_name);
        }
        assert!(!rooms.iter().any(|r| r.contains("-m1")), "{rooms:?}");

        // After the end plus grace the room is closed and the meeting finished.
        s.clock.set(root.planned_end + Duration::minutes(31));
        let outcomes = run(&s, &["room.close"]).await;
        assert!(outcomes.iter().any(|o| matches!(o, Outcome::Done { .. })), "{outcomes:?}");
        assert!(s.livekit.room(&root.room_name).is_none());
        assert_eq!(db.store.meeting(root.id).await.unwrap().status, "finished");
        s.app.stop().await;
    }

    async fn an_outage_delays_room_creation_and_a_wrong_secret_says_so(db: TestDb) {
        let s = setup(db).await;
        s.livekit.set_down(true);
        let root = publish(db, "coal-mine-resumption", "130000", 10, vec![]).await;
        let outcomes = run(&s, &["room.create"]).await;
        assert!(outcomes.iter().any(|o| matches!(o, Outcome::Retrying { error, .. } if error.contains("unavailable"))), "{outcomes:?}");
        // Joining is not blocked: tokens are self-contained.
        let (link, _) = link(db, root.id, "130200", None).await;
        let (status, token) = join_token(&s.app, &link).await;
        assert_eq!(status, 200, "{token}");
        s.livekit.set_down(false);
        s.clock.advance(Duration::minutes(2));
        let outcomes = run(&s, &["room.create"]).await;
        assert!(outcomes.iter().any(|o| matches!(o, Outcome::Done { .. })), "{outcomes:?}");
        assert!(s.livekit.room(&root.room_name).is_some());

        // The same with a wrong secret: the error names the setting to check.
        let mut wrong = s.config.clone();
        wrong.livekit.api_secret = muster::config::Secret::new("not-the-secret-at-all-0123456789");
        let worker = muster::startup::job_workers(&wrong, &db.store, Arc::new(s.clock.clone())).await.unwrap().remove(0);
        let other = publish(db, "remote-safety-inspection", "130200", 10, vec!["130202E1".into()]).await;
        let outcomes = worker.run_until_idle().await.unwrap();
        let error = outcomes.iter().find_map(|o| match o {
            Outcome::Retrying { kind, error, .. } if kind == "room.create" => Some(error.clone()),
            _ => None,
        });
        assert!(error.as_deref().is_some_and(|e| e.contains("livekit.api_secret")), "{outcomes:?}");
        assert!(s.livekit.room(&other.room_name).is_none());
        s.app.stop().await;
    }

    async fn join_tokens_carry_identity_grants_and_window(db: TestDb) {
        let s = setup(db).await;
        let root = publish(db, "coal-mine-resumption", "130000", 10, vec![]).await;
        let (host_link, host_inv) = link(db, root.id, "130000", Some("host")).await;
        let (mine_link, mine_inv) = link(db, root.id, "130202E1", None).await;
        let (status, body) = join_token(&s.app, &mine_link).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["url"], s.livekit.ws_url());
        let verifier = livekit_api::access_token::TokenVerifier::with_api_key(KEY, SECRET);
        let claims = verifier.verify(body["token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.sub, mine_inv.to_string());
        assert_eq!(claims.name, "开滦王五 · 开滦煤业");
        assert!(claims.video.room_join && claims.video.room == root.room_name);
        assert!(!claims.video.room_admin);
        assert_eq!(claims.video.can_publish, Some(false), "attendees of a large call listen");
        let metadata: Value = serde_json::from_str(&claims.metadata).unwrap();
        assert_eq!((metadata["unit"].as_str(), metadata["role"].as_str(), metadata["tier"].as_str()), (Some("开滦煤业"), Some("attendee"), Some("province")));
        assert!(claims.exp as i64 >= (root.planned_end + Duration::minutes(29)).timestamp());
        let (_, host) = join_token(&s.app, &host_link).await;
        let host_claims = verifier.verify(host["token"].as_str().unwrap()).unwrap();
        assert_eq!(host_claims.sub, host_inv.to_string());
        assert!(host_claims.video.room_admin && host_claims.video.can_publish == Some(true));
        // The stand-in lets it in (the room auto-creates).
        let sid = s.livekit.join(body["token"].as_str().unwrap()).unwrap();
        assert!(sid.starts_with("PA_"));
        // The page redirects to the client with the token filled in.
        let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let r = no_redirect.get(s.app.url(&format!("/i/{mine_link}/join"))).send().await.unwrap();
        assert_eq!(r.status(), 303);
        let location = r.headers()["location"].to_str().unwrap();
        assert!(location.starts_with("https://meet.livekit.io/custom?liveKitUrl=ws%3A%2F%2F127.0.0.1"), "{location}");

        // Declined: no token. Too early: says when it opens.
        db.store.set_rsvp(mine_inv, "declined", "test").await.unwrap();
        assert_eq!(join_token(&s.app, &mine_link).await.0, 403);
        let later = publish(db, "coal-mine-resumption", "130000", 3 * 24 * 60, vec![]).await;
        let (early_link, _) = link(db, later.id, "130200", None).await;
        let (status, body) = join_token(&s.app, &early_link).await;
        assert_eq!(status, 409, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("开放入会"));
        let page = reqwest::get(s.app.url(&format!("/i/{early_link}/join"))).await.unwrap().text().await.unwrap();
        assert!(page.contains("开放入会"), "{page}");
        s.app.stop().await;
    }

    async fn webhooks_build_the_ledger_and_bad_signatures_are_refused(db: TestDb) {
        let s = setup(db).await;
        s.livekit.use_wall_clock();
        let root = publish(db, "coal-mine-resumption", "130000", 10, vec![]).await;
        run(&s, &["room.create"]).await;
        let (ts_link, ts_inv) = link(db, root.id, "130200", None).await;
        let (_, body) = join_token(&s.app, &ts_link).await;
        let token = body["token"].as_str().unwrap().to_string();
        let first = s.livekit.join(&token).unwrap();
        s.livekit.leave(&first);
        let second = s.livekit.join(&token).unwrap(); // a reconnect
        // A guest with a token muster did not mint.
        let guest = livekit_api::access_token::AccessToken::with_api_key(KEY, SECRET)
            .with_identity("observer-from-ministry")
            .with_grants(livekit_api::access_token::VideoGrants { room_join: true, room: root.room_name.clone(), ..Default::default() })
            .to_jwt()
            .unwrap();
        s.livekit.join(&guest).unwrap();
        s.livekit.duplicate(true);
        let deliveries = s.livekit.flush().await;
        assert!(deliveries.iter().all(|d| d.status == Some(200)), "{:?}", deliveries.iter().map(|d| (&d.event, d.status)).collect::<Vec<_>>());
        let ledger = db.store.intervals(&root.room_name).await.unwrap();
        assert_eq!(ledger.len(), 3, "{ledger:?}");
        let mine: Vec<_> = ledger.iter().filter(|i| i.invitation_id == Some(ts_inv)).collect();
        assert_eq!(mine.len(), 2, "two connections of the same invitation");
        assert!(mine.iter().find(|i| i.participant_sid == first).unwrap().left_at.is_some());
        assert!(mine.iter().find(|i| i.participant_sid == second).unwrap().left_at.is_none());
        let g = ledger.iter().find(|i| i.identity == "observer-from-ministry").unwrap();
        assert_eq!(g.invitation_id, None, "kept as a guest");
        let meeting = db.store.meeting(root.id).await.unwrap();
        assert_eq!(meeting.status, "live");
        assert!(meeting.actual_start.is_some());
        let events = common::count(db, "webhook_events").await;

        // A tampered body: 401, nothing stored.
        s.livekit.duplicate(false);
        s.livekit.tamper_next(1);
        s.livekit.leave(&second);
        let deliveries = s.livekit.flush().await;
        assert_eq!(deliveries[0].status, Some(401));
        assert_eq!(common::count(db, "webhook_events").await, events);
        assert!(db.store.intervals(&root.room_name).await.unwrap().iter().find(|i| i.participant_sid == second).unwrap().left_at.is_none());
        let unsigned = reqwest::Client::new().post(s.app.url("/livekit/webhook")).body("{}").send().await.unwrap();
        assert_eq!(unsigned.status(), 401);

        // Host controls: remove the guest; end the meeting.
        let convener = s.app.client_for("convener").await;
        let tangshan = s.app.client_for("tangshan").await;
        let remove = |client: &reqwest::Client, who: &str| client.post(s.app.url(&format!("/api/v1/meetings/{}/participants/{who}/remove", root.id))).send();
        assert_eq!(remove(&tangshan, "observer-from-ministry").await.unwrap().status(), 403);
        assert_eq!(remove(&convener, "observer-from-ministry").await.unwrap().status(), 200);
        assert!(!s.livekit.participants(&root.room_name).iter().any(|p| p.identity == "observer-from-ministry"));
        assert_eq!(remove(&convener, "nobody").await.unwrap().status(), 404);
        let end = convener.post(s.app.url(&format!("/api/v1/meetings/{}/end", root.id))).send().await.unwrap();
        assert_eq!(end.status(), 200);
        s.livekit.flush().await;
        assert!(s.livekit.room(&root.room_name).is_none());
        let ledger = db.store.intervals(&root.room_name).await.unwrap();
        assert!(ledger.iter().all(|i| i.ended_at().is_some()), "every connection ends with the room: {ledger:?}");
        assert_eq!(db.store.meeting(root.id).await.unwrap().status, "finished");
        let attendance: Value = convener.get(s.app.url(&format!("/api/v1/meetings/{}/attendance", root.id))).send().await.unwrap().json().await.unwrap();
        assert_eq!(attendance.as_array().unwrap().len(), 3);
        s.app.stop().await;
    }

    async fn reconciliation_repairs_dropped_events(db: TestDb) {
        let s = setup(db).await;
        s.livekit.use_wall_clock();
        let root = publish(db, "coal-mine-resumption", "130000", 10, vec![]).await;
        run(&s, &["room.create"]).await;
        s.livekit.flush().await; // room_started: live, and a reconcile job is due in 30 s
        let (a_link, _) = link(db, root.id, "130200", None).await;
        let (b_link, _) = link(db, root.id, "130600", None).await;
        let a = s.livekit.join(join_token(&s.app, &a_link).await.1["token"].as_str().unwrap()).unwrap();
        s.livekit.drop_kind("participant_joined");
        let b = s.livekit.join(join_token(&s.app, &b_link).await.1["token"].as_str().unwrap()).unwrap();
        s.livekit.undrop_kind("participant_joined");
        s.livekit.drop_kind("participant_left");
        s.livekit.leave(&a);
        s.livekit.flush().await;
        let before = db.store.intervals(&root.room_name).await.unwrap();
        assert_eq!(before.len(), 1, "b's join was lost");
        assert!(before[0].ended_at().is_none(), "a's leave was lost");

        s.clock.set(Utc::now() + Duration::seconds(31));
        let outcomes = run(&s, &["room.reconcile"]).await;
        assert!(outcomes.iter().any(|o| matches!(o, Outcome::Done { .. })), "{outcomes:?}");
        let after = db.store.intervals(&root.room_name).await.unwrap();
        let a_row = after.iter().find(|i| i.participant_sid == a).unwrap();
        assert_eq!(a_row.left_reason.as_deref(), Some("reconciled"));
        let b_row = after.iter().find(|i| i.participant_sid == b).unwrap();
        assert_eq!((b_row.source.as_str(), b_row.ended_at()), ("reconciled", None));
        assert!(b_row.invitation_id.is_some());
        // It keeps going while the meeting is live.
        let next = db.store.jobs(Some("room.reconcile")).await.unwrap();
        assert!(next.iter().any(|j| j.status == "queued"), "the next round is queued");
        s.app.stop().await;
    }

    async fn any_order_and_repetition_of_events_gives_the_same_ledger(db: TestDb) {
        let s = setup(db).await;
        s.livekit.use_wall_clock();
        let root = publish(db, "coal-mine-resumption", "130000", 10, vec![]).await;
        // A meeting's stream: joins, a quick reconnect, an aborted connection, leaves, the end.
        s.livekit.set_webhook_url(None);
        let mut tokens = Vec::new();
        for code in ["130200", "130600", "130202E1"] {
            let (l, _) = link(db, root.id, code, None).await;
            tokens.push(join_token(&s.app, &l).await.1["token"].as_str().unwrap().to_string());
        }
        let p0 = s.livekit.join(&tokens[0]).unwrap();
        let p1 = s.livekit.join(&tokens[1]).unwrap();
        s.livekit.advance(std::time::Duration::from_secs(60));
        s.livekit.leave(&p0);
        s.livekit.join(&tokens[0]).unwrap();
        s.livekit.abort(&tokens[2]).unwrap();
        s.livekit.advance(std::time::Duration::from_secs(600));
        s.livekit.leave(&p1);
        let _ = muster::livekit::LiveKit::new(&s.config.livekit).rooms.delete_room(&root.room_name).await;
        s.livekit.flush().await;
        let stream = s.livekit.emitted_events();
        assert!(stream.len() >= 8, "{}", stream.len());

        // Apply shuffled, duplicated copies of the stream, each to a room of its own, and
        // compare the ledgers.
        let ledger_of = |room: String| async move {
            db.store
                .intervals(&room)
                .await
                .unwrap()
                .into_iter()
                .map(|i| {
                    let ended = i.ended_at();
                    let sid = i.participant_sid.rsplit_once('-').map_or(i.participant_sid.clone(), |(s, _)| s.to_string());
                    (sid, i.identity, i.joined_at, ended, i.left_reason)
                })
                .collect::<Vec<_>>()
        };
        let mut reference = None;
        for seed in 0..12u64 {
            let room = format!("perm-{seed}");
            let mut events: Vec<_> = stream.clone();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let dupes: Vec<_> = events.choose_multiple(&mut rng, 4).cloned().collect();
            events.extend(dupes);
            events.shuffle(&mut rng);
            // Each copy is a stream of its own: its own room, event ids and participant sids.
            let copy = |room: &str, suffix: &str| {
                events.iter().cloned().map(|mut event| {
                    if let Some(r) = event.room.as_mut() {
                        r.name = room.to_string();
                    }
                    event.id = format!("{}-{suffix}", event.id);
                    if let Some(p) = event.participant.as_mut() {
                        p.sid = format!("{}-{suffix}", p.sid);
                    }
                    event
                }).collect::<Vec<_>>()
            };
            for event in copy(&room, &seed.to_string()) {
                let change = muster::domain::attendance::interpret(&event);
                db.store.apply_webhook(&event.id, &event.event, &change, Duration::seconds(30), Utc::now()).await.unwrap();
            }
            let ledger = ledger_of(room.clone()).await;
            assert_eq!(ledger.len(), 4, "{ledger:?} from {:?}", stream.iter().map(|e| (e.event.clone(), e.room.as_ref().map(|r| r.name.clone()))).collect::<Vec<_>>());
            match &reference {
                None => reference = Some(ledger),
                Some(r) => assert_eq!(&ledger, r, "seed {seed} gave another ledger"),
            }
            // The same events in batches, as the webhook writer applies them, give it too.
            let batched = format!("batch-{seed}");
            let records: Vec<_> = copy(&batched, &format!("b{seed}")).into_iter().map(|e| muster::store::WebhookRecord {
                change: muster::domain::attendance::interpret(&e),
                event_id: e.id,
                kind: e.event,
            }).collect();
            let mut rest = &records[..];
            let mut fresh = 0;
            // On SQLite, participant batches go through the writer's own connection.
            let mut sqlite = muster::store::SqliteLedgerWriter::open(&db.store).unwrap();
            while !rest.is_empty() {
                let (batch, tail) = rest.split_at(rng.gen_range(1..=rest.len().min(6)));
                let results = muster::livekit::writer::apply_batch_via(sqlite.as_mut(), &db.store, batch, Duration::seconds(30), Utc::now()).await;
                fresh += results.into_iter().filter(|r| *r.as_ref().unwrap()).count();
                rest = tail;
            }
            let distinct: std::collections::HashSet<_> = records.iter().map(|r| &r.event_id).collect();
            assert_eq!(fresh, distinct.len(), "each event is new once");
            assert_eq!(&ledger_of(batched).await, reference.as_ref().unwrap(), "seed {seed} in batches gave another ledger");
        }
        s.app.stop().await;
    }

    async fn inspections_are_recorded(db: TestDb) {
        let s = setup(db).await;
        s.livekit.use_wall_clock();
        let meeting = publish(db, "remote-safety-inspection", "130202", 10, vec!["130202E1".into()]).await;
        assert!(meeting.record);
        run(&s, &["room.create"]).await;
        s.clock.set(meeting.planned_start + Duration::seconds(1));
        let outcomes = run(&s, &["room.record"]).await;
        assert!(outcomes.iter().any(|o| matches!(o, Outcome::Done { .. })), "{outcomes:?}");
        let egress = s.livekit.egresses();
        assert_eq!(egress.len(), 1);
        assert_eq!(egress[0].room_name, meeting.room_name);
        let (id, status, path) = db.store.recording(meeting.id).await.unwrap();
        assert_eq!(id.as_deref(), Some(egress[0].egress_id.as_str()));
        assert!(status.is_some());
        assert!(path.unwrap().starts_with("recordings/"));
        // The egress events update it; a second run does not start another recording.
        s.livekit.flush().await;
        assert!(s.clock.now() > meeting.planned_start);
        assert!(run(&s, &["room.record"]).await.is_empty());
        assert_eq!(s.livekit.egresses().len(), 1);
        s.app.stop().await;
    }
}

#[tokio::test]
async fn tls_hosts_are_accepted() {
    // The rustls feature is on: an https host fails to connect, not "scheme is not http".
    let client =
        livekit_api::services::room::RoomClient::with_api_key("https://127.0.0.1:9", KEY, SECRET);
    let error = client.list_rooms(vec![]).await.unwrap_err().to_string();
    assert!(!error.contains("scheme"), "{error}");
    assert!(error.contains("error sending request"), "{error}");
}
