//! Attendance on SQLite and (with MUSTER_TEST_POSTGRES_URL) PostgreSQL: confirmation by
//! bureaus and invitees, the pending overview and reminders, and the report computed from a
//! ledger with overlapping connections, reconnects, late joins, early leaves and a guest,
//! checked against hand-computed figures; absent units get a follow-up.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::spawn_app;
use muster::domain::attendance::interpret;
use serde_json::{Value, json};

/// Publishes the coal-mine dispatch over the small directory, starting in 10 minutes; returns
/// the provincial call.
async fn call(store: &muster::store::Store) -> muster::store::MeetingRecord {
    // Whole seconds, as LiveKit's event times are.
    let start =
        DateTime::from_timestamp((Utc::now() + Duration::minutes(10)).timestamp(), 0).unwrap();
    common::publish(
        store,
        "coal-mine-resumption",
        "130000",
        &start.to_rfc3339(),
        vec![],
    )
    .await
}

/// Feeds one webhook event (as LiveKit would send it) to the ledger.
#[allow(clippy::too_many_arguments)]
async fn event(
    store: &muster::store::Store,
    n: &mut u32,
    kind: &str,
    room: &str,
    sid: &str,
    identity: &str,
    joined: DateTime<Utc>,
    at: DateTime<Utc>,
) {
    *n += 1;
    let body = json!({
        "event": kind, "id": format!("EV_{n}"), "createdAt": at.timestamp().to_string(),
        "room": {"name": room},
        "participant": {"sid": sid, "identity": identity, "joinedAt": joined.timestamp().to_string(), "joinedAtMs": joined.timestamp_millis().to_string()},
    });
    let e: livekit_protocol::WebhookEvent = serde_json::from_value(body).unwrap();
    store
        .apply_webhook(
            &e.id,
            &e.event,
            &interpret(&e),
            Duration::seconds(30),
            Utc::now(),
        )
        .await
        .unwrap();
}

backend_tests! {
    async fn the_report_matches_hand_computed_figures(db: TestDb) {
        common::seed(&db.store).await;
        let store = &db.store;
        let m = call(store).await;
        let (s, room) = (m.planned_start, m.room_name.clone());
        let at = |minutes: i64| s + Duration::minutes(minutes);
        let (invitations, _) = store.meeting_invitations(m.id, "/", 1000, 0).await.unwrap();
        let inv = |person: &str| invitations.iter().find(|i| i.person_name.as_deref() == Some(person)).unwrap().id;
        // 09:00–10:30 (90 minutes). The province's principal hosts; 唐山李四 (deputy and
        // supervisor: one person) and 保定赵六 attend for their cities; 开滦王五 for the mine.
        let (host, tangshan, baoding, mine) = (inv("省厅张三"), inv("唐山李四"), inv("保定赵六"), inv("开滦王五"));
        let mut n = 0;
        // Host: on time, whole meeting.
        event(store, &mut n, "participant_joined", &room, "PA_h", &host.to_string(), at(-3), at(-3)).await;
        // 唐山: joins 08:58, drops 09:20, a reconnect overlapping from 09:18 to 09:40, back
        // 09:50 to the end: connected 09:00–09:40 and 09:50–10:30 = 80 minutes, 2 reconnects.
        event(store, &mut n, "participant_joined", &room, "PA_t1", &tangshan.to_string(), at(-2), at(-2)).await;
        event(store, &mut n, "participant_joined", &room, "PA_t2", &tangshan.to_string(), at(18), at(18)).await;
        event(store, &mut n, "participant_left", &room, "PA_t1", &tangshan.to_string(), at(-2), at(20)).await;
        event(store, &mut n, "participant_left", &room, "PA_t2", &tangshan.to_string(), at(18), at(40)).await;
        event(store, &mut n, "participant_joined", &room, "PA_t3", &tangshan.to_string(), at(50), at(50)).await;
        // 保定: late (09:12), stays to the end: 78 minutes.
        event(store, &mut n, "participant_joined", &room, "PA_b", &baoding.to_string(), at(12), at(12)).await;
        // The mine: on time, leaves 10:00 for good: left early, 60 minutes.
        event(store, &mut n, "participant_joined", &room, "PA_m", &mine.to_string(), at(0), at(0)).await;
        event(store, &mut n, "participant_left", &room, "PA_m", &mine.to_string(), at(0), at(60)).await;
        // A guest from the ministry: in the ledger, not in the report.
        event(store, &mut n, "participant_joined", &room, "PA_g", "ministry-observer", at(5), at(5)).await;
        // The room ends at 10:30: open connections end with it.
        store.finish_room(&room, at(90)).await.unwrap();
        let meeting = store.meeting(m.id).await.unwrap();
        assert_eq!(meeting.status, "finished");
        // The report job was enqueued by the end of the room; run it.
        assert!(store.jobs(Some("meeting.report")).await.unwrap().iter().any(|j| j.payload.contains(&format!("\"meeting_id\":{}", m.id))));
        muster::reports::finalise(store, &meeting, muster::domain::report::Rules::default(), Utc::now()).await.unwrap();

        let app = spawn_app(db).await;
        let leader = app.client_for("leader").await;
        let report: Value = leader.get(app.url(&format!("/api/v1/meetings/{}/attendance-report", m.id))).send().await.unwrap().json().await.unwrap();
        let line = |id: i64| report["rows"].as_array().unwrap().iter().find(|r| r["invitation_id"] == id).unwrap().clone();
        let figures = |id: i64| {
            let l = line(id);
            (l["status"].as_str().unwrap().to_string(), l["connected_seconds"].as_i64().unwrap() / 60, l["reconnects"].as_i64().unwrap())
        };
        assert_eq!(figures(host), ("present".into(), 90, 0));
        assert_eq!(figures(tangshan), ("present".into(), 80, 2));
        assert_eq!(figures(baoding), ("late".into(), 78, 0));
        assert_eq!(figures(mine), ("left_early".into(), 60, 0));
        assert_eq!(line(tangshan)["first_join"].as_str().unwrap(), (at(-2)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true).replace("+00:00", "Z"));
        assert_eq!(report["rows"].as_array().unwrap().len(), 4, "guests are not in the report");
        // Everyone invited came: rate 100% over 3 (the host is not counted).
        assert_eq!(report["summary"]["total"]["expected"], 3);
        assert_eq!(report["summary"]["total"]["attendance_rate"], 100.0);
        assert!(store.intervals(&room).await.unwrap().iter().any(|i| i.identity == "ministry-observer" && i.invitation_id.is_none()));

        let csv = leader.get(app.url(&format!("/api/v1/meetings/{}/attendance-report?format=csv", m.id))).send().await.unwrap().bytes().await.unwrap();
        assert!(csv.starts_with(b"\xEF\xBB\xBF"));
        let text = String::from_utf8(csv[3..].to_vec()).unwrap();
        assert!(text.lines().any(|l| l.starts_with("保定市,保定赵六,speaker,province,") && l.contains(",78.0,0,迟到,130600")), "{text}");
        let xlsx = leader.get(app.url(&format!("/api/v1/meetings/{}/attendance-report?format=xlsx", m.id))).send().await.unwrap().bytes().await.unwrap();
        assert!(xlsx.starts_with(b"PK\x03\x04"));
        app.stop().await;
    }

    async fn absent_and_excused_units(db: TestDb) {
        common::seed(&db.store).await;
        let store = &db.store;
        let m = call(store).await;
        let app = spawn_app(db).await;
        // 保定 declines with a reason through its bureau; the mine says nothing and does not come.
        let baoding = app.client_for("baoding").await;
        let tangshan = app.client_for("tangshan").await;
        let (invitations, _) = store.meeting_invitations(m.id, "/", 1000, 0).await.unwrap();
        let of = |unit: &str| invitations.iter().find(|i| i.unit_name == unit).unwrap().id;
        let confirm = |client: &reqwest::Client, id: i64, body: Value| client.post(app.url(&format!("/api/v1/invitations/{id}/confirmation"))).json(&body).send();
        let r = confirm(&baoding, of("保定市"), json!({"answer": "decline"})).await.unwrap();
        assert_eq!(r.status(), 422, "a decline needs a reason");
        assert_eq!(confirm(&baoding, of("保定市"), json!({"answer": "decline", "reason": "同时段召开全市防汛会议"})).await.unwrap().status(), 200);
        assert_eq!(confirm(&baoding, of("唐山市"), json!({"answer": "confirm"})).await.unwrap().status(), 403, "not 保定's to confirm");
        let r = confirm(&tangshan, of("唐山市"), json!({"answer": "delegate", "name": "王副局长", "title": "副局长", "mobile": "13900001111"})).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(store.invitation_context(of("唐山市")).await.unwrap().rsvp, "delegated");

        // Pending overview and one reminder to all pending.
        let convener = app.client_for("convener").await;
        let pending: Value = convener.get(app.url(&format!("/api/v1/dispatches/{}/confirmations", m.dispatch_id))).send().await.unwrap().json().await.unwrap();
        let province = pending["by_tier"].as_array().unwrap().iter().find(|t| t["key"] == "province").unwrap();
        let total_pending: i64 = store.meeting_invitations(m.id, "/", 1000, 0).await.unwrap().0.iter().filter(|i| i.rsvp == "pending").count() as i64;
        assert_eq!(province["pending"].as_i64().unwrap(), total_pending);
        let reminded: Value = convener.post(app.url(&format!("/api/v1/dispatches/{}/confirmations/remind", m.dispatch_id))).send().await.unwrap().json().await.unwrap();
        assert!(reminded["reminded"].as_i64().unwrap() >= 1);
        let jobs = store.jobs(Some("mail.send")).await.unwrap();
        assert!(jobs.iter().all(|j| j.payload.contains("confirm_reminder")));
        assert!(!jobs.iter().any(|j| j.payload.contains(&format!("\"invitation_id\":{},", of("保定市")))), "not to those who answered");

        // Nobody joins but 唐山's deputy; the meeting ends.
        let tangshan_inv = of("唐山市");
        let mut n = 100;
        event(store, &mut n, "participant_joined", &m.room_name, "PA_1", &tangshan_inv.to_string(), m.planned_start, m.planned_start).await;
        store.finish_room(&m.room_name, m.planned_end).await.unwrap();
        let meeting = store.meeting(m.id).await.unwrap();
        muster::reports::finalise(store, &meeting, muster::domain::report::Rules::default(), Utc::now()).await.unwrap();
        let report = store.report(m.id, "/").await.unwrap();
        let status = |unit: &str| report.iter().find(|r| r.unit_name == unit).unwrap().status.clone();
        assert_eq!(status("保定市"), "excused");
        assert_eq!(status("开滦煤业"), "absent");
        assert_eq!(status("唐山市"), "present");
        // The absent unit, and only it, must explain; recomputing does not ask twice.
        let asked = |store: muster::store::Store| async move {
            store.list_followups(&muster::store::FollowupFilter { scope_path: "/".into(), limit: 100, ..Default::default() }).await.unwrap().0
        };
        let followups = asked(store.clone()).await;
        assert_eq!(followups.len(), 1, "{followups:?}");
        assert_eq!((followups[0].title.as_str(), followups[0].assignee_name.as_str()), ("说明缺席原因", "开滦煤业"));
        let recompute = convener.post(app.url(&format!("/api/v1/meetings/{}/attendance-report", m.id))).send().await.unwrap();
        assert_eq!(recompute.status(), 200);
        assert_eq!(asked(store.clone()).await.len(), 1);
        assert_eq!(tangshan.post(app.url(&format!("/api/v1/meetings/{}/attendance-report", m.id))).send().await.unwrap().status(), 403);
        app.stop().await;
    }
}

/// Posts a webhook signed the way LiveKit signs it (the app runs on the dev key and secret).
async fn signed_webhook(app: &common::TestApp, body: &str) -> u16 {
    use base64::Engine;
    use sha2::Digest;
    let hash =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes()));
    let jwt = livekit_api::access_token::AccessToken::with_api_key("devkey", "secret")
        .with_sha256(&hash)
        .to_jwt()
        .unwrap();
    reqwest::Client::new()
        .post(app.url("/livekit/webhook"))
        .header("content-type", "application/webhook+json")
        .header("authorization", jwt)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Reads the next `board` event of a server-sent event stream.
async fn next_board(response: &mut reqwest::Response, buffer: &mut String) -> Value {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(data).unwrap();
            }
            continue;
        }
        let chunk = response.chunk().await.unwrap().expect("the stream goes on");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

backend_tests! {
    async fn the_live_board_updates_within_two_seconds_of_a_webhook(db: TestDb) {
        common::seed(&db.store).await;
        let m = call(&db.store).await;
        let app = spawn_app(db).await;
        let convener = app.client_for("convener").await;
        let board: Value = convener.get(app.url(&format!("/api/v1/meetings/{}/board", m.id))).send().await.unwrap().json().await.unwrap();
        assert_eq!((board["expected_units"].as_i64(), board["present_units"].as_i64()), (Some(3), Some(0)));
        assert_eq!(board["absent"].as_array().unwrap().len(), 3, "everyone absent, listed first");

        let mut stream = convener.get(app.url(&format!("/api/v1/meetings/{}/board/events", m.id))).send().await.unwrap();
        assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let mut buffer = String::new();
        let first = next_board(&mut stream, &mut buffer).await;
        assert_eq!(first["present_units"], 0);

        let (invitations, _) = db.store.meeting_invitations(m.id, "/", 1000, 0).await.unwrap();
        let tangshan = invitations.iter().find(|i| i.unit_name == "唐山市").unwrap().id;
        let now = Utc::now();
        let body = json!({
            "event": "participant_joined", "id": "EV_board_1", "createdAt": now.timestamp().to_string(),
            "room": {"name": m.room_name},
            "participant": {"sid": "PA_board", "identity": tangshan.to_string(), "state": "ACTIVE", "joinedAt": now.timestamp().to_string()},
        })
        .to_string();
        let sent = std::time::Instant::now();
        assert_eq!(signed_webhook(&app, &body).await, 200);
        let update = tokio::time::timeout(std::time::Duration::from_secs(2), next_board(&mut stream, &mut buffer))
            .await
            .expect("an update within 2 seconds of the webhook");
        assert!(sent.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(update["present_units"], 1);
        let absent: Vec<&str> = update["absent"].as_array().unwrap().iter().map(|a| a["unit_name"].as_str().unwrap()).collect();
        assert!(!absent.contains(&"唐山市"), "{absent:?}");
        // A bureau sees its own units only.
        let bd = app.client_for("baoding").await;
        let theirs: Value = bd.get(app.url(&format!("/api/v1/meetings/{}/board", m.id))).send().await.unwrap().json().await.unwrap();
        assert_eq!(theirs["expected_units"], 1);
        // Shutting down ends the stream instead of waiting for it.
        tokio::time::timeout(std::time::Duration::from_secs(10), app.stop()).await.expect("shutdown is not held up by open streams");
        drop(stream);
    }
}

backend_tests! {
    async fn a_roll_call_with_answers_silence_and_an_absent_unit(db: TestDb) {
        common::seed(&db.store).await;
        let store = &db.store;
        let m = call(store).await;
        let (invitations, _) = store.meeting_invitations(m.id, "/", 1000, 0).await.unwrap();
        let of = |unit: &str| invitations.iter().find(|i| i.unit_name == unit).unwrap().id;
        let mut tokens = std::collections::HashMap::new();
        for (unit, code) in [("唐山市", "130200"), ("保定市", "130600"), ("开滦煤业", "130202E1")] {
            tokens.insert(unit, common::invitation_link(store, m.id, code, None).await.0);
        }
        let now = Utc::now();
        let mut n = 200;
        let started = json!({"event": "room_started", "id": "EV_rc_start", "createdAt": now.timestamp().to_string(), "room": {"name": m.room_name}});
        let e: livekit_protocol::WebhookEvent = serde_json::from_value(started).unwrap();
        store.apply_webhook(&e.id, &e.event, &interpret(&e), Duration::seconds(30), now).await.unwrap();
        event(store, &mut n, "participant_joined", &m.room_name, "PA_ts", &of("唐山市").to_string(), now, now).await;
        event(store, &mut n, "participant_joined", &m.room_name, "PA_bd", &of("保定市").to_string(), now, now).await;

        let app = spawn_app(db).await;
        let convener = app.client_for("convener").await;
        let anonymous = reqwest::Client::new();
        // The answer is the page's form: it carries the page's CSRF token.
        let answer = |unit: &str| {
            let token = tokens[unit].clone();
            let (anonymous, app) = (anonymous.clone(), &app);
            async move {
                let page = anonymous.get(app.url(&format!("/i/{token}"))).send().await?.text().await?;
                let csrf = common::csrf_of(&page);
                anonymous.post(app.url(&format!("/i/{token}/roll-call"))).form(&[("csrf", csrf)]).send().await
            }
        };
        assert_eq!(answer("唐山市").await.unwrap().status(), 409, "no roll call open yet");
        let tangshan = app.client_for("tangshan").await;
        let r = tangshan.post(app.url(&format!("/api/v1/meetings/{}/roll-calls", m.id))).json(&json!({"seconds": 60})).send().await.unwrap();
        assert_eq!(r.status(), 403, "only the host runs the roll call");
        let r = convener.post(app.url(&format!("/api/v1/meetings/{}/roll-calls", m.id))).json(&json!({"seconds": 5})).send().await.unwrap();
        assert_eq!(r.status(), 422, "at least 10 seconds");
        let rc: Value = convener.post(app.url(&format!("/api/v1/meetings/{}/roll-calls", m.id))).json(&json!({"seconds": 60})).send().await.unwrap().json().await.unwrap();
        let id = rc["id"].as_i64().unwrap();
        // The page offers the answer; 唐山 answers (twice: counted once).
        let page = anonymous.get(app.url(&format!("/i/{}", tokens["唐山市"]))).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("点名应答"));
        assert_eq!(answer("唐山市").await.unwrap().status(), 200);
        assert_eq!(answer("唐山市").await.unwrap().status(), 200);

        let result: Value = convener.get(app.url(&format!("/api/v1/roll-calls/{id}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(result["open"], true);
        // The call's room holds 唐山's sub-venue too: 路南区 is expected as well.
        assert_eq!((result["answered"].as_i64(), result["not_answered"].as_i64()), (Some(1), Some(3)));
        assert_eq!(result["in_room_silent"], json!(["保定市"]));
        assert_eq!(result["answered_not_in_room"], json!([]));
        let mine = result["units"].as_array().unwrap().iter().find(|u| u["unit_name"] == "开滦煤业").unwrap();
        assert_eq!((mine["answered"].as_bool(), mine["in_room"].as_bool()), (Some(false), Some(false)), "absent from the room");
        // 保定's bureau sees its own unit only.
        let bd: Value = app.client_for("baoding").await.get(app.url(&format!("/api/v1/roll-calls/{id}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(bd["units"].as_array().unwrap().len(), 1);
        app.stop().await;
    }
}

/// A webhook event as the endpoint hands it to the writer: participant events when `sid` is
/// given, room events otherwise.
fn record(
    id: &str,
    kind: &str,
    room: &str,
    participant: Option<(&str, &str, DateTime<Utc>)>,
    at: DateTime<Utc>,
) -> muster::store::WebhookRecord {
    let mut body = json!({"event": kind, "id": id, "createdAt": at.timestamp().to_string(), "room": {"name": room}});
    if let Some((sid, identity, joined)) = participant {
        body["participant"] = json!({"sid": sid, "identity": identity, "joinedAtMs": joined.timestamp_millis().to_string()});
    }
    let e: livekit_protocol::WebhookEvent = serde_json::from_value(body).unwrap();
    muster::store::WebhookRecord {
        change: interpret(&e),
        event_id: e.id,
        kind: e.event,
    }
}

/// A room's connections: sid, invitation, join, end, leave reason.
type Row = (
    String,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
);

async fn ledger(store: &muster::store::Store, room: &str) -> Vec<Row> {
    store
        .intervals(room)
        .await
        .unwrap()
        .into_iter()
        .map(|i| {
            (
                i.participant_sid.clone(),
                i.invitation_id,
                i.joined_at,
                i.ended_at(),
                i.left_reason.clone(),
            )
        })
        .collect()
}

backend_tests! {
    async fn a_batch_applies_its_events_by_the_ledgers_rules(db: TestDb) {
        common::seed(&db.store).await;
        let store = &db.store;
        let m = call(store).await;
        let (s, room) = (m.planned_start, m.room_name.clone());
        let at = |minutes: i64| s + Duration::minutes(minutes);
        let (invitations, _) = store.meeting_invitations(m.id, "/", 1000, 0).await.unwrap();
        let inv = |person: &str| invitations.iter().find(|i| i.person_name.as_deref() == Some(person)).unwrap().id.to_string();
        let (a, b, c) = (inv("唐山李四"), inv("保定赵六"), inv("开滦王五"));
        let joined = |id: &str, sid: &str, who: &str, t: i64| record(id, "participant_joined", &room, Some((sid, who, at(t))), at(t));
        let left = |id: &str, sid: &str, who: &str, joined: i64, t: i64| record(id, "participant_left", &room, Some((sid, who, at(joined))), at(t));
        let every = Duration::seconds(30);
        // One event is in before the batch.
        let before = joined("EV_0", "PA_a", &a, 0);
        assert!(store.apply_webhook(&before.event_id, &before.kind, &before.change, every, Utc::now()).await.unwrap());

        let batch = vec![
            // A leave ahead of its join, then the join.
            left("EV_1", "PA_b", &b, 2, 30),
            joined("EV_2", "PA_b", &b, 2),
            // A retry of the event applied before, and a retry inside the batch.
            before.clone(),
            left("EV_3", "PA_a", &a, 0, 20),
            left("EV_3", "PA_a", &a, 0, 20),
            joined("EV_4", "PA_c", &c, 5),
            record("EV_5", "room_finished", &room, None, at(60)),
            // Reported after the room ended: it ends with the room.
            joined("EV_6", "PA_g", "ministry-observer", 61),
        ];
        let fresh = store.apply_webhooks(&batch, every, Utc::now()).await.unwrap();
        assert_eq!(fresh, [true, true, false, true, false, true, true, true]);

        let id = |s: &str| s.parse::<i64>().ok();
        let expected = vec![
            ("PA_a".to_string(), id(&a), Some(at(0)), Some(at(20)), Some("left".to_string())),
            ("PA_b".to_string(), id(&b), Some(at(2)), Some(at(30)), Some("left".to_string())),
            ("PA_c".to_string(), id(&c), Some(at(5)), Some(at(60)), None),
            ("PA_g".to_string(), None, Some(at(61)), Some(at(60)), None),
        ];
        assert_eq!(ledger(store, &room).await, expected);
        assert_eq!(store.meeting(m.id).await.unwrap().status, "finished");
        assert_eq!(common::count(db, "webhook_events").await, 7);
        // LiveKit retrying the whole batch changes nothing.
        let again = store.apply_webhooks(&batch, every, Utc::now()).await.unwrap();
        assert!(again.iter().all(|fresh| !fresh));
        assert_eq!(ledger(store, &room).await, expected);
    }

    async fn participant_batches_give_the_same_ledger_by_every_writer(db: TestDb) {
        // The webhook writer's common batch (participant events only) has a path of its own
        // per backend: SQLite's writer connection, PostgreSQL's one statement. Rows it writes
        // are merged with rows the pool's path writes, in both directions.
        common::seed(&db.store).await;
        let store = &db.store;
        let m = call(store).await;
        let (s, room) = (m.planned_start, m.room_name.clone());
        // Milliseconds, as LiveKit's joinedAtMs has them.
        let at = |t: i64| s + Duration::minutes(t) + Duration::milliseconds(250);
        let (invitations, _) = store.meeting_invitations(m.id, "/", 1000, 0).await.unwrap();
        let (a, b) = (invitations[0].id.to_string(), invitations[1].id.to_string());
        let joined = |id: &str, sid: &str, who: &str, t: i64| record(id, "participant_joined", &room, Some((sid, who, at(t))), at(t));
        let left = |id: &str, sid: &str, who: &str, joined: i64, t: i64| record(id, "participant_left", &room, Some((sid, who, at(joined))), at(t));
        let every = Duration::seconds(30);
        let mut sqlite = muster::store::SqliteLedgerWriter::open(store).unwrap();
        assert_eq!(sqlite.is_some(), db.backend == common::Backend::Sqlite, "SQLite on a file has a writer connection");
        let mut common_batch = async |batch: &[muster::store::WebhookRecord]| {
            assert!(muster::store::is_participant_batch(batch));
            match sqlite.as_mut() {
                Some(writer) => writer.apply(batch, Utc::now()).unwrap(),
                None => store.apply_webhooks(batch, every, Utc::now()).await.unwrap(),
            }
        };
        // An empty batch (a writer woken only to stop) is nothing to do.
        assert!(common_batch(&[]).await.is_empty());
        assert!(store.apply_webhooks(&[], every, Utc::now()).await.unwrap().is_empty());
        // Through the pool first.
        let before = joined("EV_0", "PA_a", &a, 0);
        assert!(store.apply_webhook(&before.event_id, &before.kind, &before.change, every, Utc::now()).await.unwrap());
        let batch = vec![
            // A leave ahead of its join, then the join.
            left("EV_1", "PA_b", &b, 2, 30),
            joined("EV_2", "PA_b", &b, 2),
            // A retry of the event applied before, and a retry inside the batch.
            before.clone(),
            left("EV_3", "PA_a", &a, 0, 20),
            left("EV_3", "PA_a", &a, 0, 20),
            // Another event for PA_a claiming an earlier join: the earliest wins.
            joined("EV_4", "PA_a", &a, -1),
            joined("EV_5", "PA_g", "ministry-observer", 5),
            record("EV_6", "track_published", &room, None, at(6)),
        ];
        assert_eq!(common_batch(&batch).await, [true, true, false, true, false, true, true, true]);
        // Then the pool's path again, over rows the batch wrote: a later leave wins, an
        // earlier one does not.
        let later = left("EV_7", "PA_b", &b, 2, 45);
        let earlier = left("EV_8", "PA_a", &a, 0, 10);
        assert_eq!(store.apply_webhooks(&[later, earlier], every, Utc::now()).await.unwrap(), [true, true]);
        let id = |s: &str| s.parse::<i64>().ok();
        // A leave is the event's `createdAt`: whole seconds.
        let second = |t: i64| DateTime::from_timestamp(at(t).timestamp(), 0);
        let expected = vec![
            ("PA_a".to_string(), id(&a), Some(at(-1)), second(20), Some("left".to_string())),
            ("PA_b".to_string(), id(&b), Some(at(2)), second(45), Some("left".to_string())),
            ("PA_g".to_string(), None, Some(at(5)), None, None),
        ];
        assert_eq!(ledger(store, &room).await, expected);
        assert_eq!(common::count(db, "webhook_events").await, 9);
        // LiveKit retrying the whole batch changes nothing.
        assert!(common_batch(&batch).await.iter().all(|fresh| !fresh));
        assert_eq!(ledger(store, &room).await, expected);
        let sources: Vec<String> = store.intervals(&room).await.unwrap().into_iter().map(|i| i.source).collect();
        assert_eq!(sources, ["webhook"; 3]);
    }

    async fn the_sqlite_writer_checkpoints_its_wal_off_the_writing_thread(db: TestDb) {
        // The writer's connection leaves checkpoints to a thread of its own: what it commits
        // reaches the database file (not only the WAL) without anyone else writing.
        let Some(mut writer) = muster::store::SqliteLedgerWriter::open(&db.store).unwrap() else {
            assert_eq!(db.backend, common::Backend::Postgres, "SQLite on a file has a writer connection");
            return;
        };
        let path = db.url.strip_prefix("sqlite://").unwrap().to_string();
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        let now = Utc::now();
        let batch: Vec<_> = (0..400)
            .map(|n| record(&format!("EV_{n}"), "participant_joined", "r1", Some((&format!("PA_{n:04}"), "guest", now)), now))
            .collect();
        writer.apply(&batch, now).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while size() <= before && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(size() > before, "the database file grew from {before} bytes: the WAL was checkpointed");
        assert_eq!(db.store.intervals("r1").await.unwrap().len(), 400);
    }

    async fn one_failing_event_does_not_fail_its_batch(db: TestDb) {
        let store = &db.store;
        // The database refuses one event id, as it might refuse any one event.
        match db.backend {
            common::Backend::Sqlite => common::raw_execute(db, "CREATE TRIGGER refuse BEFORE INSERT ON webhook_events \
                WHEN NEW.event_id = 'EV_bad' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END").await.unwrap(),
            common::Backend::Postgres => {
                common::raw_execute(db, "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                    IF NEW.event_id = 'EV_bad' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$").await.unwrap();
                common::raw_execute(db, "CREATE TRIGGER refuse BEFORE INSERT ON webhook_events FOR EACH ROW EXECUTE FUNCTION refuse()").await.unwrap();
            }
        }
        let now = Utc::now();
        let joined = |id: &str, sid: &str| record(id, "participant_joined", "r1", Some((sid, "guest", now)), now);
        let batch = vec![joined("EV_1", "PA_1"), joined("EV_bad", "PA_2"), joined("EV_3", "PA_3"), joined("EV_1", "PA_1")];
        let every = Duration::seconds(30);
        assert!(store.apply_webhooks(&batch, every, now).await.is_err(), "the batch as a whole fails");
        let mut sqlite = muster::store::SqliteLedgerWriter::open(store).unwrap();
        if let Some(writer) = sqlite.as_mut() {
            assert!(writer.apply(&batch, now).is_err(), "the batch as a whole fails on the writer's connection");
        }
        assert_eq!(common::count(db, "webhook_events").await, 0, "a failed batch stores nothing");
        let results = muster::livekit::writer::apply_batch_via(sqlite.as_mut(), store, &batch, every, now).await;
        let outcome: Vec<Option<bool>> = results.iter().map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(outcome, [Some(true), None, Some(true), Some(false)]);
        let sids: Vec<String> = store.intervals("r1").await.unwrap().into_iter().map(|i| i.participant_sid).collect();
        assert_eq!(sids, ["PA_1", "PA_3"], "nothing of the refused event is stored");
        assert_eq!(common::count(db, "webhook_events").await, 2);
    }

    async fn the_writer_applies_what_is_queued_before_it_stops(db: TestDb) {
        let writer = muster::livekit::writer::WebhookWriter::spawn(&db.store, Duration::seconds(30));
        let now = Utc::now();
        let mut answers = Vec::new();
        for n in 0..5 {
            let event = record(&format!("EV_{n}"), "participant_joined", "r1", Some((&format!("PA_{n}"), "guest", now)), now);
            answers.push(writer.submit(event).await.unwrap());
        }
        writer.shutdown().await;
        for answer in answers {
            assert!(answer.await.unwrap().unwrap(), "answered, and new");
        }
        assert_eq!(db.store.intervals("r1").await.unwrap().len(), 5);
        let late = record("EV_late", "participant_joined", "r1", Some(("PA_late", "guest", now)), now);
        assert!(matches!(writer.apply(late).await, Err(muster::livekit::writer::WriteError::Closed)));
    }
}
