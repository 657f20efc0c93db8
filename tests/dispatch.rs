//! The dispatch lifecycle over the API and the store, on SQLite and (with
//! MUSTER_TEST_POSTGRES_URL) PostgreSQL: preview, publish (atomic), reschedule, cancel,
//! scoped reads.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{count, raw_execute, spawn_app};
use muster::domain::demo::DEMO_PASSWORD;
use serde_json::{Value, json};

const SHANGHAI: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

/// 09:00 Shanghai time on a weekday at least two days ahead.
fn next_start() -> DateTime<Utc> {
    let mut day = (Utc::now() + Duration::days(2))
        .with_timezone(&SHANGHAI)
        .date_naive();
    while matches!(
        chrono::Datelike::weekday(&day),
        chrono::Weekday::Sat | chrono::Weekday::Sun
    ) {
        day = day.succ_opt().unwrap();
    }
    SHANGHAI
        .from_local_datetime(&day.and_hms_opt(9, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&SHANGHAI)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

fn coal_request(start: DateTime<Utc>) -> Value {
    json!({"template": "coal-mine-resumption", "root_unit": "130000", "start": local(start)})
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

backend_tests! {
    async fn preview_then_publish_then_read(db: TestDb) {
        muster::directory::load_demo(&db.store, 400).await.unwrap();
        let app = spawn_app(db).await;
        let convener = app.client_with("convener", DEMO_PASSWORD).await;
        let start = next_start();

        let (status, preview) = json_of(convener.post(app.url("/api/v1/dispatches/plan")).json(&coal_request(start)).send().await.unwrap()).await;
        assert_eq!(status, 200, "{preview}");
        assert_eq!(count(db, "dispatches").await, 0, "a preview stores nothing");
        assert_eq!(count(db, "jobs").await, 0);
        let meetings = preview["meeting_count"].as_u64().unwrap();
        let invitations = preview["invitation_count"].as_u64().unwrap();
        assert!(meetings > 5 && invitations > 100, "{meetings} meetings, {invitations} invitations");
        assert_eq!(preview["meetings"][0]["local_start"], local(start));
        assert!(preview["skipped"].as_array().unwrap().iter().any(|s| s["unit_name"] == "保定市"), "保定 has no coal mines");

        let (status, published) = json_of(convener.post(app.url("/api/v1/dispatches")).json(&coal_request(start)).send().await.unwrap()).await;
        assert_eq!(status, 201, "{published}");
        let id = published["id"].as_i64().unwrap();
        assert_eq!(count(db, "meetings").await as u64, meetings);
        assert_eq!(count(db, "invitations").await as u64, invitations);
        let jobs = db.store.jobs(Some("meeting.invite")).await.unwrap();
        assert_eq!(jobs.len() as u64, meetings, "one invitation job per meeting");
        let audit = db.store.audit_events(Some(("dispatch", &id.to_string())), 5).await.unwrap();
        assert_eq!(audit[0].action, "dispatch.published");

        // The convener sees the whole tree.
        let (status, view) = json_of(convener.get(app.url(&format!("/api/v1/dispatches/{id}"))).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(view["complete"], true);
        assert_eq!(view["meetings"].as_array().unwrap().len() as u64, meetings);
        let total: i64 = view["meetings"].as_array().unwrap().iter().map(|m| m["rsvp"]["total"].as_i64().unwrap()).sum();
        assert_eq!(total as u64, invitations);
        assert!(view["plan_report"]["skipped"].is_array());

        // 唐山's bureau sees the meetings it hosts or is invited to, and in the provincial call
        // only its own units' invitations.
        let tangshan = app.client_with("tangshan", DEMO_PASSWORD).await;
        let (_, partial) = json_of(tangshan.get(app.url(&format!("/api/v1/dispatches/{id}"))).send().await.unwrap()).await;
        assert_eq!(partial["complete"], false);
        let seen = partial["meetings"].as_array().unwrap();
        assert!(seen.iter().any(|m| m["parent_id"].is_null()), "invited to the provincial call");
        let ts_units = db.store.list_units(&muster::store::UnitFilter { scope_path: "/130000/130200/".into(), limit: 1000, ..Default::default() }).await.unwrap().0;
        for m in seen {
            let hosted_here = ts_units.iter().any(|u| u.id == m["host_unit_id"].as_i64().unwrap());
            assert!(hosted_here || m["rsvp"]["total"].as_i64().unwrap() > 0, "唐山 should not see {}", m["title"]);
        }
        assert!(seen.len() > 2, "the call, 唐山's venue and meetings");
        assert!(!seen.iter().any(|m| m["host_unit_name"] == "邯郸市"), "nothing of 邯郸");
        let root_id = seen.iter().find(|m| m["parent_id"].is_null()).unwrap()["id"].as_i64().unwrap();
        let (_, invites) = json_of(tangshan.get(app.url(&format!("/api/v1/meetings/{root_id}/invitations?limit=1000"))).send().await.unwrap()).await;
        let ts = db.store.unit_by_code("130200").await.unwrap();
        for invite in invites["items"].as_array().unwrap() {
            let unit = db.store.unit(invite["unit_id"].as_i64().unwrap()).await.unwrap();
            assert!(unit.path.starts_with(&ts.path), "{} is not 唐山's", unit.name);
        }
        assert!(invites["total"].as_i64().unwrap() > 0);
        let (status, meeting) = json_of(tangshan.get(app.url(&format!("/api/v1/meetings/{root_id}"))).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(meeting["agenda"].as_array().unwrap().len(), 4);

        // 保定 has no coal mines: it is invited to the provincial call but hosts nothing.
        let baoding = app.client_with("baoding", DEMO_PASSWORD).await;
        let (_, bd) = json_of(baoding.get(app.url(&format!("/api/v1/dispatches/{id}"))).send().await.unwrap()).await;
        assert_eq!(bd["meetings"].as_array().unwrap().len(), 1);
        let list: Value = baoding.get(app.url("/api/v1/dispatches")).send().await.unwrap().json().await.unwrap();
        assert_eq!(list.as_array().unwrap().len(), 1);

        // Who may publish: not a leader, not a bureau for the province.
        let leader = app.client_with("leader", DEMO_PASSWORD).await;
        assert_eq!(leader.post(app.url("/api/v1/dispatches")).json(&coal_request(start)).send().await.unwrap().status(), 403);
        assert_eq!(tangshan.post(app.url("/api/v1/dispatches")).json(&coal_request(start)).send().await.unwrap().status(), 403);
        assert_eq!(count(db, "dispatches").await, 1);
        app.stop().await;
    }

    async fn bad_requests_say_what_is_wrong(db: TestDb) {
        muster::directory::load_demo(&db.store, 100).await.unwrap();
        let app = spawn_app(db).await;
        let convener = app.client_with("convener", DEMO_PASSWORD).await;
        let start = local(next_start());
        let cases = [
            (json!({"template": "nope", "root_unit": "130000", "start": start}), "no template \"nope\""),
            (json!({"template": "coal-mine-resumption", "root_unit": "999", "start": start}), "no unit with code or id \"999\""),
            (json!({"template": "coal-mine-resumption", "root_unit": "130000", "start": "tomorrow"}), "cannot read \"tomorrow\""),
            (json!({"template": "coal-mine-resumption", "root_unit": "130000", "start": "2020-02-17 09:00"}), "in the past"),
            (json!({"template": "coal-mine-resumption", "root_unit": "130200", "start": start}), "hosted by a province unit"),
            (json!({"template": "remote-safety-inspection", "root_unit": "130200", "start": start}), "choose at least one"),
            (json!({"template": "coal-mine-resumption", "root_unit": "130000", "start": start, "colour": 1}), "colour"),
        ];
        for (body, expected) in cases {
            let (status, error) = json_of(convener.post(app.url("/api/v1/dispatches/plan")).json(&body).send().await.unwrap()).await;
            assert_eq!(status, 422, "{body}: {error}");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.contains(expected), "{body}: {message:?} should say {expected:?}");
        }
        // An inspection of one enterprise under 唐山.
        let (enterprises, _) = db.store.list_units(&muster::store::UnitFilter {
            scope_path: "/130000/130200/".into(),
            level: Some(muster::domain::org::Level::Enterprise),
            limit: 1,
            ..Default::default()
        }).await.unwrap();
        let body = json!({"template": "remote-safety-inspection", "root_unit": "130200", "start": start, "chosen_units": [enterprises[0].code]});
        let (status, plan) = json_of(convener.post(app.url("/api/v1/dispatches")).json(&body).send().await.unwrap()).await;
        assert_eq!(status, 201, "{plan}");
        assert_eq!(plan["plan"]["meeting_count"], 1);
        let id = plan["id"].as_i64().unwrap();
        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        assert!(meetings[0].record, "inspections are recorded");
        app.stop().await;
    }

    async fn publishing_is_all_or_nothing(db: TestDb) {
        muster::directory::load_demo(&db.store, 2000).await.unwrap();
        let start = next_start();
        let templates = muster::agendas::load_dir(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/agendas"))).unwrap();
        let principal = muster::domain::access::Principal {
            account_id: 0,
            username: "test".into(),
            role: muster::domain::access::StaffRole::Admin,
            unit_id: 0,
            unit_name: "all".into(),
            unit_path: "/".into(),
        };
        let input = muster::dispatch::DispatchInput {
            template: "industry-trade-resumption".into(),
            root_unit: "130000".into(),
            start: local(start),
            chosen_units: vec![],
        };
        let prepared = muster::dispatch::prepare(&db.store, &templates, &principal, &input, Utc::now()).await.unwrap();
        let (plan, _) = muster::dispatch::build_plan(&db.store, &prepared).await.unwrap();
        assert!(plan.invitation_count() > 3000, "{} invitations", plan.invitation_count());
        // Fail on the very last invitation, after thousands were written in earlier batches.
        let last = plan.meetings.iter().rev().find_map(|m| m.invitations.last()).unwrap();
        let unit = last.unit_id;
        let trigger = match db.backend {
            common::Backend::Sqlite => vec![format!(
                "CREATE TRIGGER injected BEFORE INSERT ON invitations WHEN NEW.unit_id = {unit} \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )],
            common::Backend::Postgres => vec![
                format!("CREATE FUNCTION injected() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                         IF NEW.unit_id = {unit} THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$"),
                "CREATE TRIGGER injected BEFORE INSERT ON invitations FOR EACH ROW EXECUTE FUNCTION injected()".into(),
            ],
        };
        for sql in trigger {
            raw_execute(db, &sql).await.unwrap();
        }
        let audit_before = count(db, "audit_events").await;
        let result = muster::dispatch::publish(&db.store, &templates, &muster::config::Config::default().livekit, &principal, &input, Utc::now()).await;
        assert!(result.is_err(), "the injected failure must surface");
        for table in ["dispatches", "meetings", "invitations", "jobs"] {
            assert_eq!(count(db, table).await, 0, "{table} must be empty after a failed publish");
        }
        assert_eq!(count(db, "audit_events").await, audit_before);

        raw_execute(db, "DROP TRIGGER injected ON invitations").await.or(raw_execute(db, "DROP TRIGGER injected").await).unwrap();
        let (id, preview) = muster::dispatch::publish(&db.store, &templates, &muster::config::Config::default().livekit, &principal, &input, Utc::now()).await.unwrap();
        assert!(id > 0);
        assert_eq!(count(db, "invitations").await as usize, preview.invitation_count);
    }

    async fn reschedule_moves_dependents_and_cancel_takes_the_subtree(db: TestDb) {
        muster::directory::load_demo(&db.store, 400).await.unwrap();
        let app = spawn_app(db).await;
        let convener = app.client_with("convener", DEMO_PASSWORD).await;
        let tangshan = app.client_with("tangshan", DEMO_PASSWORD).await;
        let start = next_start();
        let (_, published) = json_of(convener.post(app.url("/api/v1/dispatches")).json(&coal_request(start)).send().await.unwrap()).await;
        let id = published["id"].as_i64().unwrap();
        let meetings = db.store.dispatch_meetings(id).await.unwrap();
        let root = meetings.iter().find(|m| m.parent_id.is_none()).unwrap().clone();
        let ts_city = meetings.iter().find(|m| m.tier == "city" && m.host_unit_name == "唐山市").unwrap().clone();
        let ts_venue = meetings.iter().find(|m| m.tier == "city-venue" && m.host_unit_name == "唐山市").unwrap().clone();

        // 唐山 moves its own meeting by 2 hours (the template allows 4h); nothing else moves.
        let later = ts_city.planned_start + Duration::hours(2);
        let (status, body) = json_of(tangshan.post(app.url(&format!("/api/v1/meetings/{}/reschedule", ts_city.id))).json(&json!({"start": later.to_rfc3339()})).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["moved_meetings"], 1);
        let moved = db.store.meeting(ts_city.id).await.unwrap();
        assert_eq!((moved.planned_start, moved.sequence, moved.offset_minutes), (later, 1, 120));
        // Beyond the window, the provincial call, another city: refused.
        let far = ts_city.planned_start + Duration::hours(6);
        let (status, error) = json_of(tangshan.post(app.url(&format!("/api/v1/meetings/{}/reschedule", ts_city.id))).json(&json!({"start": far.to_rfc3339()})).send().await.unwrap()).await;
        assert_eq!(status, 422);
        assert!(error["error"]["message"].as_str().unwrap().contains("at most 4h"), "{error}");
        let root_move = tangshan.post(app.url(&format!("/api/v1/meetings/{}/reschedule", root.id))).json(&json!({"start": far.to_rfc3339()})).send().await.unwrap();
        assert_eq!(root_move.status(), 403);
        let other = meetings.iter().find(|m| m.tier == "city" && m.host_unit_name == "邯郸市").unwrap();
        let other_move = tangshan.post(app.url(&format!("/api/v1/meetings/{}/reschedule", other.id))).json(&json!({"start": later.to_rfc3339()})).send().await.unwrap();
        assert_eq!(other_move.status(), 403);

        // The convener moves the whole dispatch an hour later: the call, its sub-venues and the
        // city meetings follow (唐山 keeps its 2 hours), the next-workday meetings stay.
        let (status, body) = json_of(convener.post(app.url(&format!("/api/v1/dispatches/{id}/reschedule"))).json(&json!({"start": local(start + Duration::hours(1))})).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let after = db.store.dispatch_meetings(id).await.unwrap();
        let find = |mid: i64| after.iter().find(|m| m.id == mid).unwrap();
        assert_eq!(find(root.id).planned_start, start + Duration::hours(1));
        assert_eq!(find(ts_venue.id).planned_start, start + Duration::hours(1));
        assert_eq!(find(ts_city.id).planned_start, later + Duration::hours(1));
        assert_eq!(find(ts_city.id).sequence, 2);
        let districts_moved = after.iter().filter(|m| m.tier == "district" && m.sequence > 0).count();
        assert_eq!(districts_moved, 0);
        assert_eq!(db.store.dispatch(id).await.unwrap().planned_start, start + Duration::hours(1));
        let updates = db.store.jobs(Some("meeting.update")).await.unwrap();
        assert_eq!(updates.len() as i64, 1 + body["moved_meetings"].as_i64().unwrap(), "one update job per move of each meeting");

        // 唐山 cancels its city meeting: its district meetings go with it.
        let below: Vec<i64> = after.iter().filter(|m| m.parent_id == Some(ts_city.id)).map(|m| m.id).collect();
        assert!(!below.is_empty());
        let (status, body) = json_of(tangshan.post(app.url(&format!("/api/v1/meetings/{}/cancel", ts_city.id))).json(&json!({"reason": "改为现场会"})).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["cancelled_meetings"].as_u64().unwrap() as usize, 1 + below.len());
        for mid in below.iter().chain([&ts_city.id]) {
            assert_eq!(db.store.meeting(*mid).await.unwrap().status, "cancelled");
        }
        assert_eq!(db.store.meeting(root.id).await.unwrap().status, "scheduled");

        // The convener cancels the dispatch: everything left is cancelled, once.
        let (status, body) = json_of(convener.post(app.url(&format!("/api/v1/dispatches/{id}/cancel"))).json(&json!({"reason": "疫情形势变化"})).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["cancelled_meetings"].as_u64().unwrap() as usize, after.len() - 1 - below.len());
        let dispatch = db.store.dispatch(id).await.unwrap();
        assert_eq!((dispatch.status.as_str(), dispatch.cancel_reason.as_deref()), ("cancelled", Some("疫情形势变化")));
        let cancels = db.store.jobs(Some("meeting.cancel")).await.unwrap();
        assert_eq!(cancels.len(), after.len(), "one cancellation per meeting");
        let again = convener.post(app.url(&format!("/api/v1/dispatches/{id}/cancel"))).json(&json!({})).send().await.unwrap();
        assert_eq!(again.status(), 409);
        let actions: Vec<String> = db.store.audit_events(None, 20).await.unwrap().into_iter().map(|e| e.action).collect();
        for expected in ["dispatch.cancelled", "meeting.cancelled", "meeting.rescheduled"] {
            assert!(actions.iter().any(|a| a == expected), "{expected} not audited: {actions:?}");
        }
        app.stop().await;
    }

    async fn agendas_are_listed(db: TestDb) {
        common::seed(&db.store).await;
        let app = spawn_app(db).await;
        let client = app.client_for("leader").await;
        let list: Value = client.get(app.url("/api/v1/agendas")).send().await.unwrap().json().await.unwrap();
        assert_eq!(list.as_array().unwrap().len(), 4);
        let coal: Value = client.get(app.url("/api/v1/agendas/coal-mine-resumption")).send().await.unwrap().json().await.unwrap();
        assert_eq!(coal["tiers"][1]["start"], "with_parent");
        assert_eq!(client.get(app.url("/api/v1/agendas/nope")).send().await.unwrap().status(), 404);
        app.stop().await;
    }
}

#[test]
fn agendas_check_reports_a_broken_template_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/agendas/non-coal-mine-resumption.toml"
    ))
    .unwrap();
    std::fs::write(dir.path().join("good.toml"), &good).unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["agendas", "check"])
            .arg(dir.path())
            .env("MUSTER_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 template(s)"));

    let broken = good.replacen("duration = \"60m\"", "duration = \"an hour\"", 1);
    std::fs::write(dir.path().join("broken.toml"), &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("an hour")).unwrap() + 1;
    let out = run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("broken.toml:{line}:12: bad duration \"an hour\"")),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");

    // serve refuses the folder and says why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["serve"])
        .current_dir(dir.path())
        .env("MUSTER_AGENDAS_DIR", dir.path())
        .env("MUSTER_LISTEN", "127.0.0.1:0")
        .env("MUSTER_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad duration"));
}
