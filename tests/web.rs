//! The pages over HTTP on SQLite and (with MUSTER_TEST_POSTGRES_URL) PostgreSQL: every page
//! renders for the roles that use it, every form carries a CSRF token and posts without one
//! are refused, sign-in redirects, scope on pages, the language switch, invitees' follow-ups.
//! The browser walks through the same pages in `tests/browser.rs`.

mod common;

use chrono::{Duration, Utc};
use common::{TestApp, spawn_app};
use serde_json::json;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in through the page (its CSRF token, its cookie); redirects are not followed.
async fn page_client(app: &TestApp, username: &str) -> reqwest::Client {
    let client = no_redirects();
    let form = client
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = client
        .post(app.url("/login"))
        .form(&[
            ("username", username),
            ("password", common::PASSWORD),
            ("csrf", &common::csrf_of(&form)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{username} signs in");
    client
}

async fn page(client: &reqwest::Client, app: &TestApp, path: &str) -> (u16, String) {
    let r = client
        .get(app.url(path))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Every `<form method="post" …>` of a page carries the token: a `csrf` field or `?csrf=`.
fn forms_carry_tokens(path: &str, html: &str) {
    for (i, form) in html.split("<form").skip(1).enumerate() {
        let form = &form[..form.find("</form>").unwrap_or(form.len())];
        if form.contains("method=\"post\"") {
            assert!(
                form.contains("name=\"csrf\"") || form.contains("csrf="),
                "{path}: form {i} has no CSRF token: <form{form}"
            );
        }
    }
}

async fn published(db: &common::TestDb) -> (i64, muster::store::MeetingRecord) {
    let start = (Utc::now() + Duration::days(2))
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d 09:00")
        .to_string();
    let root = common::publish(&db.store, "coal-mine-resumption", "130000", &start, vec![]).await;
    (root.dispatch_id, root)
}

backend_tests! {
    async fn every_page_renders_and_every_form_is_protected(db: TestDb) {
        common::seed(&db.store).await;
        let (dispatch, root) = published(db).await;
        let due = (Utc::now() + Duration::days(5)).format("%Y-%m-%d").to_string();
        let input: muster::followups::ActionItemInput = serde_json::from_value(json!({"title": "排查隐患", "due": due, "assign": "invited_units"})).unwrap();
        muster::followups::record_action_item(&db.store, &common::admin(), root.id, &input, Utc::now()).await.unwrap();
        let followup = db.store.list_followups(&muster::store::FollowupFilter { scope_path: "/".into(), limit: 10, ..Default::default() }).await.unwrap().0[0].id;
        let app = spawn_app(db).await;
        let pages = [
            "/".to_string(),
            "/dispatches".into(),
            "/dispatches/new".into(),
            format!("/dispatches/{dispatch}"),
            format!("/meetings/{}", root.id),
            "/confirmations".into(),
            "/follow-ups".into(),
            "/follow-ups?view=all".into(),
            "/follow-ups?view=verify".into(),
            format!("/follow-ups/{followup}"),
            "/closure".into(),
            "/closure?group=tier".into(),
            "/closure?unit=130200".into(),
        ];
        for user in ["convener", "leader"] {
            let client = page_client(&app, user).await;
            for path in &pages {
                let (status, html) = page(&client, &app, path).await;
                let expected = if user == "leader" && path == "/dispatches/new" { 403 } else { 200 };
                assert_eq!(status, expected, "{user} {path}: {html}");
                forms_carry_tokens(path, &html);
            }
        }
        let tangshan = page_client(&app, "tangshan").await;
        for path in ["/", "/confirmations", "/follow-ups", "/closure"] {
            let (status, html) = page(&tangshan, &app, path).await;
            assert_eq!(status, 200, "tangshan {path}: {html}");
            forms_carry_tokens(path, &html);
        }
        let (link, _) = common::invitation_link(&db.store, root.id, "130202E1", None).await;
        for path in [format!("/i/{link}"), format!("/i/{link}/followups")] {
            let (status, html) = page(&reqwest::Client::new(), &app, &path).await;
            assert_eq!(status, 200, "{path}: {html}");
            forms_carry_tokens(&path, &html);
        }
        app.stop().await;
    }

    async fn forms_without_the_token_are_refused(db: TestDb) {
        common::seed(&db.store).await;
        let (_, root) = published(db).await;
        let app = spawn_app(db).await;
        let tangshan = page_client(&app, "tangshan").await;
        let (_, html) = page(&tangshan, &app, "/confirmations").await;
        let csrf = common::csrf_of(&html);
        let (invitations, _) = db.store.meeting_invitations(root.id, "/", 100, 0).await.unwrap();
        let mine = invitations.iter().find(|i| i.unit_name == "唐山市").unwrap().id;
        let confirm = |token: Option<&str>| {
            let mut form = vec![("answer", "confirm".to_string()), ("back", "/confirmations".to_string())];
            if let Some(t) = token {
                form.push(("csrf", t.to_string()));
            }
            tangshan.post(app.url(&format!("/invitations/{mine}/confirm"))).form(&form).send()
        };
        assert_eq!(confirm(None).await.unwrap().status(), 403);
        assert_eq!(confirm(Some("0000")).await.unwrap().status(), 403);
        // Another session's token is no good either.
        let other = page_client(&app, "tangshan").await;
        let (_, other_html) = page(&other, &app, "/confirmations").await;
        assert_ne!(common::csrf_of(&other_html), csrf);
        assert_eq!(confirm(Some(&common::csrf_of(&other_html))).await.unwrap().status(), 403);
        assert_eq!(db.store.invitation_context(mine).await.unwrap().rsvp, "pending", "nothing changed");
        let ok = confirm(Some(&csrf)).await.unwrap();
        assert_eq!(ok.status(), 303);
        assert_eq!(ok.headers()["location"], "/confirmations?done=confirmed");
        assert_eq!(db.store.invitation_context(mine).await.unwrap().rsvp, "confirmed");
        // JSON API calls are not forms: they need no token (a browser cannot send them cross-site).
        let api = app.client_for("tangshan").await;
        let r = api.post(app.url(&format!("/api/v1/invitations/{mine}/confirmation"))).json(&json!({"answer": "confirm"})).send().await.unwrap();
        assert_eq!(r.status(), 200);

        // 一键确认: every pending invitation of 唐山's units, none of 保定's.
        let r = tangshan.post(app.url("/confirmations/all")).form(&[("csrf", &csrf)]).send().await.unwrap();
        assert_eq!(r.status(), 303);
        let tangshan_unit = db.store.unit_by_code("130200").await.unwrap();
        let pending: Vec<_> = db.store.invitations_to_confirm(&tangshan_unit.path).await.unwrap().into_iter().filter(|i| i.rsvp == "pending").collect();
        assert!(pending.is_empty(), "{pending:?}");
        let baoding_unit = db.store.unit_by_code("130600").await.unwrap();
        let theirs = db.store.invitations_to_confirm(&baoding_unit.path).await.unwrap();
        assert!(!theirs.is_empty() && theirs.iter().all(|i| i.rsvp == "pending"));
        app.stop().await;
    }

    async fn pages_ask_to_sign_in_and_keep_to_the_scope(db: TestDb) {
        common::seed(&db.store).await;
        let (dispatch, root) = published(db).await;
        let due = (Utc::now() + Duration::days(5)).format("%Y-%m-%d").to_string();
        let input: muster::followups::ActionItemInput = serde_json::from_value(json!({"title": "排查隐患", "due": due, "assign": "chosen", "units": ["130200"]})).unwrap();
        muster::followups::record_action_item(&db.store, &common::admin(), root.id, &input, Utc::now()).await.unwrap();
        let tangshan_followup = db.store.list_followups(&muster::store::FollowupFilter { scope_path: "/".into(), limit: 10, ..Default::default() }).await.unwrap().0[0].id;
        let app = spawn_app(db).await;

        let anonymous = no_redirects();
        let r = anonymous.get(app.url(&format!("/dispatches/{dispatch}"))).header("accept", "text/html").send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], format!("/login?next=/dispatches/{dispatch}"));
        let r = anonymous.get(app.url("/")).send().await.unwrap();
        assert_eq!(r.headers()["location"], "/login");

        let baoding = page_client(&app, "baoding").await;
        let (status, html) = page(&baoding, &app, &format!("/follow-ups/{tangshan_followup}")).await;
        assert_eq!(status, 403);
        assert!(html.contains("无权访问") && html.contains("<html"), "an HTML error page: {html}");
        let (status, _) = page(&baoding, &app, "/closure?unit=130200").await;
        assert_eq!(status, 403, "保定 cannot drill into 唐山");
        let (status, html) = page(&baoding, &app, "/closure?unit=nope").await;
        assert_eq!(status, 404, "{html}");

        // A leader reads but cannot act: the page offers no actions, a forged post is refused.
        let leader = page_client(&app, "leader").await;
        let (status, html) = page(&leader, &app, &format!("/follow-ups/{tangshan_followup}")).await;
        assert_eq!(status, 200);
        assert!(!html.contains("id=\"action-"), "no action buttons for a leader");
        let r = leader
            .post(app.url(&format!("/follow-ups/{tangshan_followup}/act")))
            .header("accept", "text/html")
            .form(&[("action", "cancel"), ("text", "x"), ("csrf", &common::csrf_of(&html))])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(db.store.followup(tangshan_followup).await.unwrap().status, "assigned");

        // Bad input on the new-dispatch form comes back on the form, with what is wrong.
        let convener = page_client(&app, "convener").await;
        let (_, form) = page(&convener, &app, "/dispatches/new").await;
        let r = convener
            .post(app.url("/dispatches/new"))
            .form(&[("template", "coal-mine-resumption"), ("root_unit", "130000"), ("start", "tomorrow"), ("intent", "preview"), ("csrf", &common::csrf_of(&form))])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"form-error\"") && html.contains("tomorrow"), "{html}");
        assert!(html.contains("value=\"coal-mine-resumption\" selected"), "the form keeps what was typed");
        app.stop().await;
    }

    async fn the_language_switch_and_invitee_followups(db: TestDb) {
        common::seed(&db.store).await;
        let (_, root) = published(db).await;
        let due = (Utc::now() + Duration::days(5)).format("%Y-%m-%d").to_string();
        let input: muster::followups::ActionItemInput = serde_json::from_value(json!({"title": "排查隐患", "due": due, "assign": "chosen", "units": ["130202E1"]})).unwrap();
        muster::followups::record_action_item(&db.store, &common::admin(), root.id, &input, Utc::now()).await.unwrap();
        let app = spawn_app(db).await;

        let client = no_redirects();
        let r = client.get(app.url("/lang/en?back=/login")).send().await.unwrap();
        assert_eq!(r.headers()["location"], "/login");
        let (_, html) = page(&client, &app, "/login").await;
        assert!(html.contains("Sign in") && html.contains("lang=\"en\""), "{html}");
        let r = client.get(app.url("/lang/zh-CN?back=//evil.example/x")).send().await.unwrap();
        assert_eq!(r.headers()["location"], "/", "no open redirect");
        let (_, html) = page(&client, &app, "/login").await;
        assert!(html.contains("登录") && html.contains("lang=\"zh-CN\""));

        // The enterprise acknowledges and reports on its follow-up from its link's page.
        let (link, _) = common::invitation_link(&db.store, root.id, "130202E1", None).await;
        let anonymous = no_redirects();
        let (status, html) = page(&anonymous, &app, &format!("/i/{link}/followups")).await;
        assert_eq!(status, 200);
        assert!(html.contains("排查隐患") && html.contains("待签收"), "{html}");
        let id = db.store.list_followups(&muster::store::FollowupFilter { scope_path: "/".into(), limit: 10, ..Default::default() }).await.unwrap().0[0].id;
        let act = |action: &str, text: &str| {
            let form = [("action", action.to_string()), ("text", text.to_string()), ("csrf", common::csrf_of(&html))];
            anonymous.post(app.url(&format!("/i/{link}/followups/{id}/act"))).form(&form).send()
        };
        assert_eq!(act("acknowledge", "").await.unwrap().status(), 303);
        assert_eq!(act("submit", "已全面排查").await.unwrap().status(), 303);
        assert_eq!(db.store.followup(id).await.unwrap().status, "submitted");
        let r = act("verify", "").await.unwrap();
        assert_eq!(r.status(), 403, "an enterprise cannot verify its own report");
        let forged = anonymous
            .post(app.url(&format!("/i/{link}/followups/{id}/act")))
            .form(&[("action", "progress"), ("text", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403);
        app.stop().await;
    }

    async fn conveners_move_and_cancel_from_the_pages(db: TestDb) {
        common::seed(&db.store).await;
        let (dispatch, root) = published(db).await;
        let app = spawn_app(db).await;
        let convener = page_client(&app, "convener").await;
        let (_, html) = page(&convener, &app, &format!("/dispatches/{dispatch}")).await;
        assert!(html.contains("id=\"reschedule-dispatch\"") && html.contains("id=\"cancel-dispatch\""));
        let csrf = common::csrf_of(&html);
        let later = (Utc::now() + Duration::days(3))
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%Y-%m-%d 10:00")
            .to_string();
        let r = convener
            .post(app.url(&format!("/dispatches/{dispatch}/reschedule")))
            .form(&[("start", later.as_str()), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert!(r.headers()["location"].to_str().unwrap().contains("done=rescheduled"));
        let moved = db.store.meeting(root.id).await.unwrap();
        assert_eq!(
            moved.planned_start.with_timezone(&chrono_tz::Asia::Shanghai).format("%Y-%m-%d %H:%M").to_string(),
            later
        );
        // A bad time is an error page naming the problem, and nothing moves.
        let r = convener
            .post(app.url(&format!("/dispatches/{dispatch}/reschedule")))
            .header("accept", "text/html")
            .form(&[("start", "someday"), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        assert!(r.text().await.unwrap().contains("someday"));
        assert_eq!(db.store.meeting(root.id).await.unwrap().planned_start, moved.planned_start);
        // 唐山's bureau may not cancel the provincial call; the convener may.
        let tangshan = page_client(&app, "tangshan").await;
        let (_, theirs) = page(&tangshan, &app, "/confirmations").await;
        let r = tangshan
            .post(app.url(&format!("/dispatches/{dispatch}/cancel")))
            .form(&[("reason", "x"), ("csrf", &common::csrf_of(&theirs))])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = convener
            .post(app.url(&format!("/dispatches/{dispatch}/cancel")))
            .form(&[("reason", "改为现场会"), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(db.store.dispatch(dispatch).await.unwrap().status, "cancelled");
        let (_, html) = page(&convener, &app, &format!("/dispatches/{dispatch}")).await;
        assert!(html.contains("改为现场会") && !html.contains("id=\"cancel-dispatch\""));
        app.stop().await;
    }
}
