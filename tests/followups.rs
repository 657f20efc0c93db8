//! Follow-ups (督办) on SQLite and (with MUSTER_TEST_POSTGRES_URL) PostgreSQL: a delegation
//! chain from the province to an enterprise and back to verified closure, the closure roll-up
//! against hand-computed figures, refused transitions, deadline sweeps, attachments.

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::{spawn_app_with, test_config};
use muster::domain::followup::Status;
use muster::store::{Assignee, Grouping, NewActionItem, Store};
use serde_json::{Value, json};

async fn unit(store: &Store, code: &str) -> muster::domain::org::Unit {
    store.unit_by_code(code).await.unwrap()
}

/// Publishes the coal-mine dispatch over the small directory (its call invites 唐山, 保定 and
/// the coal mine 130202E1) and returns the root meeting's id.
async fn dispatch(store: &Store) -> i64 {
    let start = (Utc::now() + Duration::days(2))
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d 09:00")
        .to_string();
    common::publish(store, "coal-mine-resumption", "130000", &start, vec![])
        .await
        .id
}

async fn invitation_token(store: &Store, meeting: i64, unit_code: &str) -> String {
    common::invitation_link(store, meeting, unit_code, None)
        .await
        .0
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn id_of(list: &Value, assignee: &str) -> i64 {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["assignee_name"] == assignee)
        .unwrap_or_else(|| panic!("no follow-up of {assignee}: {list}"))["id"]
        .as_i64()
        .unwrap()
}

backend_tests! {
    async fn delegation_down_the_tree_to_verified_closure(db: TestDb) {
        common::seed(&db.store).await;
        let hash = muster::auth::hash_password(common::PASSWORD).unwrap();
        muster::auth::add_account(&db.store, "lunan", "", "bureau".parse().unwrap(), "130202", &hash, "t").await.unwrap();
        let meeting = dispatch(&db.store).await;
        let mine_token = invitation_token(&db.store, meeting, "130202E1").await;
        let mut config = test_config(db);
        config.followups.attachments_dir = tempfile::tempdir().unwrap().keep();
        let app = spawn_app_with(db, config).await;
        let convener = app.client_for("convener").await;
        let tangshan = app.client_for("tangshan").await;
        let lunan = app.client_for("lunan").await;
        let baoding = app.client_for("baoding").await;
        let leader = app.client_for("leader").await;
        let anonymous = reqwest::Client::new();

        let due = (Utc::now() + Duration::days(7)).format("%Y-%m-%d").to_string();
        let (status, created) = post(&convener, app.url(&format!("/api/v1/meetings/{meeting}/action-items")),
            json!({"title": "完成复工复产安全条件验收并报送结果", "due": due, "assign": "chosen", "units": ["130200"]})).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["followups"], 1);
        let (status, err) = post(&tangshan, app.url(&format!("/api/v1/meetings/{meeting}/action-items")),
            json!({"title": "x", "due": due, "assign": "invited_units"})).await;
        assert_eq!(status, 403, "a city cannot issue on the provincial call: {err}");

        let list: Value = tangshan.get(app.url("/api/v1/follow-ups")).send().await.unwrap().json().await.unwrap();
        let city = id_of(&list, "唐山市");
        let act = |client: &reqwest::Client, id: i64, action: &str, text: &str| {
            let (client, url) = (client.clone(), app.url(&format!("/api/v1/follow-ups/{id}/actions")));
            let body = json!({"action": action, "text": text});
            async move { post(&client, url, body).await }
        };
        // Delegating before acknowledging is refused; then 唐山 → 路南区 → the mine.
        let (status, _) = post(&tangshan, app.url(&format!("/api/v1/follow-ups/{city}/delegate")), json!({"units": ["130202"]})).await;
        assert_eq!(status, 409);
        assert_eq!(act(&tangshan, city, "acknowledge", "").await.0, 200);
        let later = (Utc::now() + Duration::days(30)).format("%Y-%m-%d").to_string();
        let (status, err) = post(&tangshan, app.url(&format!("/api/v1/follow-ups/{city}/delegate")), json!({"units": ["130202"], "due": later})).await;
        assert_eq!(status, 422, "a child cannot be due after its parent: {err}");
        let (status, err) = post(&tangshan, app.url(&format!("/api/v1/follow-ups/{city}/delegate")), json!({"units": ["130602"]})).await;
        assert_eq!(status, 422, "保定's district is not below 唐山: {err}");
        assert_eq!(post(&tangshan, app.url(&format!("/api/v1/follow-ups/{city}/delegate")), json!({"units": ["130202"], "note": "请路南区督促落实"})).await.0, 201);
        let list: Value = lunan.get(app.url("/api/v1/follow-ups")).send().await.unwrap().json().await.unwrap();
        let district = id_of(&list, "路南区");
        assert_eq!(act(&lunan, district, "acknowledge", "").await.0, 200);
        assert_eq!(post(&lunan, app.url(&format!("/api/v1/follow-ups/{district}/delegate")), json!({"units": ["130202E1"]})).await.0, 201);
        let mine_list: Value = anonymous.get(app.url(&format!("/i/{mine_token}/followups.json"))).send().await.unwrap().json().await.unwrap();
        let mine = mine_list[0]["id"].as_i64().unwrap();
        assert_eq!(mine_list[0]["parent_id"], district);

        // The mine works through its personal link.
        let mine_act = |action: &str, text: &str| {
            let url = app.url(&format!("/i/{mine_token}/followups/{mine}/actions"));
            let body = json!({"action": action, "text": text});
            let client = anonymous.clone();
            async move { post(&client, url, body).await }
        };
        assert_eq!(mine_act("acknowledge", "").await.0, 200);
        assert_eq!(mine_act("progress", "已完成井下通风系统检查").await.0, 200);
        assert_eq!(mine_act("submit", "验收合格，详见报告").await.0, 200);
        let (status, err) = mine_act("verify", "").await;
        assert_eq!(status, 403, "an enterprise cannot verify its own report: {err}");

        // 路南区 cannot report while the mine's follow-up is open…
        let (status, err) = act(&lunan, district, "submit", "已督促").await;
        assert_eq!(status, 409, "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("not verified yet"), "{err}");
        // …returns the mine's report once, then verifies the corrected one.
        assert_eq!(act(&lunan, mine, "return", "缺少验收签字").await.0, 200);
        assert_eq!(mine_act("submit", "已补签字").await.0, 200);
        assert_eq!(act(&lunan, mine, "verify", "").await.0, 200);
        assert_eq!(act(&lunan, district, "submit", "辖区煤矿均已验收").await.0, 200);
        // 保定 touching 唐山's follow-up, a leader acting: refused.
        assert_eq!(act(&baoding, district, "verify", "").await.0, 403);
        assert_eq!(act(&leader, district, "verify", "").await.0, 403);
        assert_eq!(act(&tangshan, district, "verify", "").await.0, 200);
        assert_eq!(act(&tangshan, city, "submit", "全市已完成").await.0, 200);
        assert_eq!(act(&convener, city, "verify", "").await.0, 200);

        let detail: Value = leader.get(app.url(&format!("/api/v1/follow-ups/{district}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(detail["status"], "verified");
        assert_eq!(detail["children"][0]["status"], "verified");
        let actions: Vec<&str> = detail["timeline"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["acknowledge", "delegate", "submit", "verify"]);
        let mine_detail: Value = leader.get(app.url(&format!("/api/v1/follow-ups/{mine}"))).send().await.unwrap().json().await.unwrap();
        let texts: Vec<&str> = mine_detail["timeline"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap()).collect();
        assert!(texts.contains(&"缺少验收签字"), "{texts:?}");
        let audited = db.store.audit_events(Some(("followup", &mine.to_string())), 20).await.unwrap();
        assert!(audited.iter().any(|e| e.action == "followup.return"));

        // Attachments: only the assignee side adds them; only those who may see the follow-up
        // read them.
        let pdf = b"%PDF-1.4\n% report\n".to_vec();
        let upload = |client: &reqwest::Client, body: Vec<u8>, content_type: &str| {
            client
                .post(app.url(&format!("/api/v1/follow-ups/{city}/attachments?name=验收报告.pdf")))
                .header("content-type", content_type)
                .body(body)
                .send()
        };
        let response = upload(&tangshan, pdf.clone(), "application/pdf").await.unwrap();
        assert_eq!(response.status(), 201);
        let attachment = response.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        assert_eq!(upload(&tangshan, b"MZ\x90\x00".to_vec(), "application/x-msdownload").await.unwrap().status(), 422);
        assert_eq!(upload(&tangshan, b"not a pdf".to_vec(), "application/pdf").await.unwrap().status(), 422);
        assert_eq!(upload(&convener, pdf.clone(), "application/pdf").await.unwrap().status(), 403);
        let download = leader.get(app.url(&format!("/api/v1/attachments/{attachment}"))).send().await.unwrap();
        assert_eq!(download.status(), 200);
        assert!(download.headers()["content-disposition"].to_str().unwrap().contains("filename*=UTF-8''%E9%AA%8C"));
        assert_eq!(download.bytes().await.unwrap().to_vec(), pdf);
        assert_eq!(baoding.get(app.url(&format!("/api/v1/attachments/{attachment}"))).send().await.unwrap().status(), 403);
        app.stop().await;
    }

    async fn the_rollup_matches_hand_computed_figures(db: TestDb) {
        common::seed(&db.store).await;
        let meeting = dispatch(&db.store).await;
        let store = &db.store;
        let now = Utc::now();
        let province = unit(store, "130000").await;
        let assignee = |u: &muster::domain::org::Unit| Assignee { unit_id: u.id, path: u.path.clone(), level: u.level.as_str().into(), tier: "province".into() };
        let (ts, ln, e1, bd) = (unit(store, "130200").await, unit(store, "130202").await, unit(store, "130202E1").await, unit(store, "130600").await);
        let item = |title: &str, due, units: Vec<Assignee>| NewActionItem {
            dispatch_id: None,
            meeting_id: Some(meeting),
            issuer_unit_id: province.id,
            title: title.into(),
            description: String::new(),
            due_at: due,
            delegable: true,
            assignees: units,
        };
        // A: 唐山, 路南区 and the mine, all verified.  B: 唐山 (not doing, approved) and 保定
        // (acknowledged, due 2.5 days ago: 3 days overdue).  C: 保定, cancelled.
        store.create_action_item(&item("A", now + Duration::days(5), vec![assignee(&ts), assignee(&ln), assignee(&e1)]), "t", now).await.unwrap();
        store.create_action_item(&item("B", now - Duration::hours(60), vec![assignee(&ts), assignee(&bd)]), "t", now - Duration::days(10)).await.unwrap();
        store.create_action_item(&item("C", now + Duration::days(10), vec![assignee(&bd)]), "t", now).await.unwrap();
        let all = store.list_followups(&muster::store::FollowupFilter { scope_path: "/".into(), limit: 100, ..Default::default() }).await.unwrap().0;
        let find = |title: &str, unit: i64| all.iter().find(|f| f.title == title && f.assignee_unit_id == unit).unwrap().clone();
        // A unit's own follow-ups, not those below it: 唐山 has A and B, 路南区's A is below it.
        let own = store.list_followups(&muster::store::FollowupFilter { scope_path: ts.path.clone(), assignee_unit_id: Some(ts.id), limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(own.1, 2);
        assert!(own.0.iter().all(|f| f.assignee_unit_id == ts.id));
        use muster::domain::followup::Action as A;
        let step = |f: &muster::store::FollowupRecord, action, from, to| {
            let f = f.clone();
            async move { store.apply_transition(&f, action, from, to, "x", "t", now, &[]).await.unwrap() }
        };
        for u in [ts.id, ln.id, e1.id] {
            let f = find("A", u);
            step(&f, A::Acknowledge, Status::Assigned, Status::Acknowledged).await;
            step(&f, A::Submit, Status::Acknowledged, Status::Submitted).await;
            step(&f, A::Verify, Status::Submitted, Status::Verified).await;
        }
        let b_ts = find("B", ts.id);
        step(&b_ts, A::RequestNotDoing, Status::Assigned, Status::NotDoingRequested).await;
        step(&b_ts, A::ApproveNotDoing, Status::NotDoingRequested, Status::NotDoing).await;
        step(&find("B", bd.id), A::Acknowledge, Status::Assigned, Status::Acknowledged).await;
        step(&find("C", bd.id), A::Cancel, Status::Assigned, Status::Cancelled).await;

        // The store's roll-up at both ends of the tree: above the province (each path's first
        // code is a region) and at the mine, as deep as paths go (its own line only).
        let top = store.rollup("/", Grouping::Region, None, None, None, now).await.unwrap();
        assert_eq!(top.iter().map(|r| (r.key.as_str(), r.closure.total, r.closure.overdue_days)).collect::<Vec<_>>(), [("130000", 6, 3)]);
        let mine = store.rollup(&e1.path, Grouping::Region, None, None, None, now).await.unwrap();
        assert_eq!(mine.iter().map(|r| (r.key.as_str(), r.closure.total, r.closure.closed)).collect::<Vec<_>>(), [("", 1, 1)]);

        let app = common::spawn_app(db).await;
        let leader = app.client_for("leader").await;
        let rollup: Value = leader.get(app.url("/api/v1/follow-ups/rollup")).send().await.unwrap().json().await.unwrap();
        let lines = rollup.as_array().unwrap_or_else(|| panic!("{rollup}"));
        let figures = |l: &Value| (l["name"].as_str().unwrap().to_string(), l["total"].as_i64().unwrap(), l["closed"].as_i64().unwrap(),
            l["cancelled"].as_i64().unwrap(), l["overdue"].as_i64().unwrap(), l["overdue_days"].as_i64().unwrap());
        assert_eq!(lines.len(), 2, "{rollup}");
        // Overdue first.
        assert_eq!(figures(&lines[0]), ("保定市".into(), 2, 0, 1, 1, 3));
        assert_eq!(lines[0]["rate"], 0.0);
        assert_eq!(lines[0]["average_days_overdue"], 3.0);
        assert_eq!(figures(&lines[1]), ("唐山市".into(), 4, 4, 0, 0, 0));
        assert_eq!(lines[1]["rate"], 100.0);

        // Drill down into 唐山: its own line and 路南区's.
        let drill: Value = leader.get(app.url("/api/v1/follow-ups/rollup?unit=130200")).send().await.unwrap().json().await.unwrap();
        let mut drilled: Vec<(String, i64, i64)> = drill.as_array().unwrap().iter().map(|l| (l["name"].as_str().unwrap().to_string(), l["total"].as_i64().unwrap(), l["closed"].as_i64().unwrap())).collect();
        drilled.sort();
        assert_eq!(drilled, [("唐山市".to_string(), 2, 2), ("路南区".to_string(), 2, 2)]);
        let tiers: Value = leader.get(app.url("/api/v1/follow-ups/rollup?group=tier")).send().await.unwrap().json().await.unwrap();
        assert_eq!(figures(&tiers[0]), ("province".into(), 6, 4, 1, 1, 3));
        // A due range keeps only B.
        let from = (now - Duration::days(3)).to_rfc3339();
        let to = (now - Duration::days(2)).to_rfc3339();
        let ranged: Value = leader.get(app.url("/api/v1/follow-ups/rollup")).query(&[("due_from", from.as_str()), ("due_to", to.as_str())]).send().await.unwrap().json().await.unwrap();
        let total: i64 = ranged.as_array().unwrap().iter().map(|l| l["total"].as_i64().unwrap()).sum();
        assert_eq!(total, 2);

        // Exports.
        let csv = leader.get(app.url("/api/v1/follow-ups/rollup?format=csv")).send().await.unwrap().bytes().await.unwrap();
        assert!(csv.starts_with(b"\xEF\xBB\xBF"), "UTF-8 with BOM");
        let text = String::from_utf8(csv[3..].to_vec()).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "单位/层级,事项总数,已办结,已撤销,逾期,平均逾期天数,办结率(%),编码");
        assert_eq!(rows[1], "保定市,2,0,1,1,3.0,0.0,130600");
        let xlsx = leader.get(app.url("/api/v1/follow-ups/rollup?format=xlsx")).send().await.unwrap();
        assert!(xlsx.headers()["content-type"].to_str().unwrap().contains("spreadsheetml"));
        assert!(xlsx.bytes().await.unwrap().starts_with(b"PK\x03\x04"));

        // Listing filters: colour and status.
        let red: Value = leader.get(app.url("/api/v1/follow-ups?colour=red")).send().await.unwrap().json().await.unwrap();
        assert_eq!(red["total"], 1);
        assert_eq!(red["items"][0]["assignee_name"], "保定市");
        assert_eq!(red["items"][0]["days_overdue"], 3);
        let verified: Value = leader.get(app.url("/api/v1/follow-ups?status=verified&unit=130200")).send().await.unwrap().json().await.unwrap();
        assert_eq!(verified["total"], 3);
        let bd_client = app.client_for("baoding").await;
        let own: Value = bd_client.get(app.url("/api/v1/follow-ups")).send().await.unwrap().json().await.unwrap();
        assert_eq!(own["total"], 2, "保定 sees its own only");
        assert_eq!(bd_client.get(app.url("/api/v1/follow-ups?unit=130200")).send().await.unwrap().status(), 403);
        app.stop().await;
    }

    async fn reminders_and_escalations_go_out_once_per_period(db: TestDb) {
        common::seed(&db.store).await;
        let meeting = dispatch(&db.store).await;
        let store = &db.store;
        let t0 = Utc.with_ymd_and_hms(2030, 3, 1, 8, 0, 0).unwrap();
        let due = t0 + Duration::days(5);
        let province = unit(store, "130000").await;
        let ln = unit(store, "130202").await;
        let item = NewActionItem {
            dispatch_id: None,
            meeting_id: Some(meeting),
            issuer_unit_id: province.id,
            title: "报送隐患排查台账".into(),
            description: String::new(),
            due_at: due,
            delegable: true,
            assignees: vec![Assignee { unit_id: ln.id, path: ln.path.clone(), level: "district".into(), tier: "city".into() }],
        };
        store.create_action_item(&item, "t", t0).await.unwrap();
        let day = Duration::days(1);
        let sweep = |at| muster::followups::sweep(store, day, day, at);
        let count = |kind: &'static str| async move {
            store.jobs(Some("followup.notify")).await.unwrap().iter().filter(|j| j.payload.contains(kind)).count()
        };
        assert_eq!(sweep(t0 + Duration::days(2)).await.unwrap(), 0, "nothing due yet");
        assert_eq!(sweep(due - Duration::hours(20)).await.unwrap(), 1, "the reminder before the due date");
        assert_eq!(sweep(due - Duration::hours(2)).await.unwrap(), 0, "only once");
        assert_eq!(count("followup_reminder").await, 1);
        assert_eq!(sweep(due + Duration::hours(3)).await.unwrap(), 2, "overdue: a reminder and an escalation at once");
        assert_eq!(sweep(due + Duration::hours(20)).await.unwrap(), 0, "not twice in a period");
        assert_eq!(sweep(due + Duration::hours(25)).await.unwrap(), 2, "the next period");
        assert_eq!(sweep(due + Duration::hours(30)).await.unwrap(), 0, "not twice in a period");
        assert_eq!(sweep(due + Duration::hours(49)).await.unwrap(), 2, "and the next");
        assert_eq!(count("followup_overdue").await, 3);
        assert_eq!(count("followup_escalation").await, 3);

        // The messages themselves: the escalation goes to the superior unit (唐山) and the
        // assigning unit (the province), the overdue reminder to 路南区 (no mailbox: its
        // principal's address, or none).
        let outbox = tempfile::tempdir().unwrap();
        let mut config = test_config(db);
        config.mail.outbox_dir = outbox.path().to_path_buf();
        let clock = muster::jobs::ManualClock::new(due + Duration::hours(49));
        let workers = muster::startup::job_workers(&config, store, std::sync::Arc::new(clock.clone())).await.unwrap();
        workers[0].run_until_idle().await.unwrap();
        let mut recipients: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(outbox.path()).unwrap() {
            let raw = std::fs::read(entry.unwrap().path()).unwrap();
            let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
            let subject = message.subject().unwrap_or_default().to_string();
            if subject.starts_with("【督办逾期通报】") {
                let to = message.to().unwrap().first().unwrap().address().unwrap().to_string();
                recipients.push(to);
            }
        }
        recipients.sort();
        recipients.dedup();
        assert_eq!(recipients, ["yjj@ts.example.cn", "yjt@he.example.cn"], "superior unit and assigning unit");
    }
}
