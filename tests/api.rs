//! The HTTP API over a running app, on SQLite and (with MUSTER_TEST_POSTGRES_URL) PostgreSQL.

mod common;

use common::{seed, spawn_app, spawn_app_with, test_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn unit_id(store: &muster::store::Store, code: &str) -> i64 {
    store.unit_by_code(code).await.unwrap().id
}

async fn person_id(store: &muster::store::Store, unit_code: &str) -> i64 {
    let unit = store.unit_by_code(unit_code).await.unwrap();
    let filter = muster::store::PersonFilter {
        scope_path: "/".into(),
        unit_id: Some(unit.id),
        limit: 1,
        ..Default::default()
    };
    store.list_people(&filter).await.unwrap().0[0].id
}

async fn status(
    client: &reqwest::Client,
    method: Method,
    url: String,
    body: Option<Value>,
) -> StatusCode {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status()
}

backend_tests! {
    async fn authorization_matrix(db: TestDb) {
        seed(&db.store).await;
        let app = spawn_app(db).await;
        let s = &db.store;
        let (tangshan, lunan, kailuan) = (unit_id(s, "130200").await, unit_id(s, "130202").await, unit_id(s, "130202E1").await);
        let (baoding, jingxiu) = (unit_id(s, "130600").await, unit_id(s, "130602").await);
        let kailuan_person = person_id(s, "130202E1").await;
        let baoding_person = person_id(s, "130600").await;
        let patch = Some(json!({"mailbox": "new@example.cn"}));
        let new_person = |unit: i64| Some(json!({"unit_id": unit, "name": "新人", "roles": ["liaison"]}));
        let person_patch = Some(json!({"mobile": "13900000000"}));

        use Method as M;
        let rows: Vec<(&str, Method, String, Option<Value>, u16)> = vec![
            // 唐山 bureau: reads and writes 唐山 and below, nothing of 保定.
            ("tangshan", M::GET, format!("/api/v1/units/{tangshan}"), None, 200),
            ("tangshan", M::GET, format!("/api/v1/units/{lunan}"), None, 200),
            ("tangshan", M::GET, format!("/api/v1/units/{kailuan}"), None, 200),
            ("tangshan", M::GET, format!("/api/v1/units/{baoding}"), None, 403),
            ("tangshan", M::GET, format!("/api/v1/units/{jingxiu}"), None, 403),
            ("tangshan", M::PATCH, format!("/api/v1/units/{lunan}"), patch.clone(), 200),
            ("tangshan", M::PATCH, format!("/api/v1/units/{baoding}"), patch.clone(), 403),
            ("tangshan", M::GET, format!("/api/v1/people/{kailuan_person}"), None, 200),
            ("tangshan", M::GET, format!("/api/v1/people/{baoding_person}"), None, 403),
            ("tangshan", M::PATCH, format!("/api/v1/people/{kailuan_person}"), person_patch.clone(), 200),
            ("tangshan", M::PATCH, format!("/api/v1/people/{baoding_person}"), person_patch.clone(), 403),
            ("tangshan", M::DELETE, format!("/api/v1/people/{baoding_person}"), None, 403),
            ("tangshan", M::POST, "/api/v1/people".into(), new_person(kailuan), 201),
            ("tangshan", M::POST, "/api/v1/people".into(), new_person(jingxiu), 403),
            ("tangshan", M::GET, "/api/v1/audit".into(), None, 403),
            // 保定 bureau: the mirror image.
            ("baoding", M::GET, format!("/api/v1/units/{tangshan}"), None, 403),
            ("baoding", M::GET, format!("/api/v1/units/{jingxiu}"), None, 200),
            // Leader: reads everything, writes nothing.
            ("leader", M::GET, format!("/api/v1/units/{baoding}"), None, 200),
            ("leader", M::GET, format!("/api/v1/units/{kailuan}"), None, 200),
            ("leader", M::GET, format!("/api/v1/people/{baoding_person}"), None, 200),
            ("leader", M::PATCH, format!("/api/v1/units/{baoding}"), patch.clone(), 403),
            ("leader", M::POST, "/api/v1/people".into(), new_person(baoding), 403),
            ("leader", M::PATCH, format!("/api/v1/people/{baoding_person}"), person_patch.clone(), 403),
            ("leader", M::DELETE, format!("/api/v1/people/{baoding_person}"), None, 403),
            ("leader", M::GET, "/api/v1/audit".into(), None, 403),
            // Province staff.
            ("convener", M::PATCH, format!("/api/v1/units/{baoding}"), patch.clone(), 200),
            ("admin", M::GET, "/api/v1/audit".into(), None, 200),
            ("admin", M::DELETE, format!("/api/v1/people/{baoding_person}"), None, 204),
        ];
        let mut failures = Vec::new();
        for (user, method, path, body, expected) in rows {
            let client = app.client_for(user).await;
            let got = status(&client, method.clone(), app.url(&path), body).await;
            if got.as_u16() != expected {
                failures.push(format!("{user} {method} {path}: expected {expected}, got {got}"));
            }
        }
        assert!(failures.is_empty(), "authorization matrix:\n{}", failures.join("\n"));

        // Listings are cut to the subtree, whatever the filters ask for.
        let client = app.client_for("tangshan").await;
        let units: Value = client.get(app.url("/api/v1/units?limit=1000")).send().await.unwrap().json().await.unwrap();
        let codes: Vec<&str> = units["items"].as_array().unwrap().iter().map(|u| u["code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["130200", "130202", "130202E1", "130202E2"]);
        let other = client.get(app.url(&format!("/api/v1/units?parent_id={baoding}"))).send().await.unwrap();
        assert_eq!(other.json::<Value>().await.unwrap()["total"], 0);
        let people: Value = client.get(app.url(&format!("/api/v1/people?unit_id={baoding}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(people["total"], 0);
        let leader = app.client_for("leader").await;
        let all: Value = leader.get(app.url("/api/v1/units")).send().await.unwrap().json().await.unwrap();
        assert_eq!(all["total"], 8);

        // Nobody signed in: 401 with a JSON error.
        let anonymous = reqwest::Client::new();
        let response = anonymous.get(app.url("/api/v1/units")).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "unauthenticated");
        app.stop().await;
    }

    async fn errors_are_json_with_a_stable_code(db: TestDb) {
        seed(&db.store).await;
        let app = spawn_app(db).await;
        let client = app.client_for("tangshan").await;
        let lunan = unit_id(&db.store, "130202").await;
        let baoding = unit_id(&db.store, "130600").await;
        // (method, path, body, status, error code, a word the message must contain)
        type Case = (Method, String, Option<Value>, u16, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (Method::GET, format!("/api/v1/units/{baoding}"), None, 403, "forbidden", "保定市"),
            (Method::GET, "/api/v1/units/999999".into(), None, 404, "not_found", "unit 999999"),
            (Method::GET, "/api/v1/units?level=town".into(), None, 422, "invalid_input", "town"),
            (Method::GET, "/api/v1/units?limit=0".into(), None, 422, "invalid_input", "limit"),
            (Method::PATCH, format!("/api/v1/units/{lunan}"), Some(json!({"mailbox": "nope"})), 422, "invalid_input", "mailbox"),
            (Method::PATCH, format!("/api/v1/units/{lunan}"), Some(json!({"colour": "red"})), 422, "invalid_input", "colour"),
            (Method::PATCH, format!("/api/v1/units/{lunan}"), Some(json!({"sectors": ["coal_mine"]})), 422, "invalid_input", "only enterprises"),
            (Method::POST, "/api/v1/people".into(), Some(json!({"unit_id": lunan, "name": "", "roles": ["deputy"]})), 422, "invalid_input", "name"),
            (Method::POST, "/api/v1/people".into(), Some(json!({"unit_id": lunan, "name": "甲", "roles": ["boss"]})), 422, "invalid_input", "boss"),
            (Method::GET, "/api/v1/nothing-here".into(), None, 404, "not_found", "route"),
        ];
        for (method, path, body, code, error_code, mentions) in cases {
            let mut request = client.request(method.clone(), app.url(&path));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), code, "{method} {path}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], error_code, "{method} {path}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(mentions), "{method} {path}: {message:?} should mention {mentions:?}");
        }
        let dup = json!({"unit_id": lunan, "name": "重名", "roles": ["deputy"]});
        assert_eq!(status(&client, Method::POST, app.url("/api/v1/people"), Some(dup.clone())).await, 201);
        assert_eq!(status(&client, Method::POST, app.url("/api/v1/people"), Some(dup)).await, 409);
        app.stop().await;
    }

    async fn request_bodies_are_limited(db: TestDb) {
        seed(&db.store).await;
        let mut config = test_config(db);
        config.http.body_limit_bytes = 1024;
        let app = spawn_app_with(db, config).await;
        let client = app.client_for("tangshan").await;
        let lunan = unit_id(&db.store, "130202").await;
        let response = client
            .patch(app.url(&format!("/api/v1/units/{lunan}")))
            .json(&json!({"name": "长".repeat(2000)}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");
        assert_eq!(db.store.unit(lunan).await.unwrap().name, "路南区");
        app.stop().await;
    }

    async fn failed_logins_are_rate_limited(db: TestDb) {
        seed(&db.store).await;
        let app = spawn_app(db).await;
        let client = reqwest::Client::new();
        let login = |password: &str| {
            client
                .post(app.url("/api/v1/session"))
                .json(&json!({"username": "tangshan", "password": password}))
                .send()
        };
        for _ in 0..5 {
            assert_eq!(login("wrong password").await.unwrap().status(), 401);
        }
        let locked = login(common::PASSWORD).await.unwrap();
        assert_eq!(locked.status(), 429, "locked out even with the right password");
        assert!(locked.headers().contains_key("retry-after"));
        // Other accounts are not locked by one account's failures.
        assert_eq!(login_as(&app, "baoding").await, 200);
        let metrics = client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("muster_failed_logins_total 5"), "{metrics}");
        app.stop().await;
    }

    async fn api_tokens_and_sessions(db: TestDb) {
        seed(&db.store).await;
        let app = spawn_app(db).await;
        let client = app.client_for("tangshan").await;
        let me: Value = client.get(app.url("/api/v1/me")).send().await.unwrap().json().await.unwrap();
        assert_eq!(me["unit_name"], "唐山市");
        assert_eq!(me["role"], "bureau");
        let created: Value = client
            .post(app.url("/api/v1/tokens"))
            .json(&json!({"name": "报表脚本"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = created["token"].as_str().unwrap().to_string();
        let script = reqwest::Client::new();
        let with_token = script.get(app.url("/api/v1/units")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(with_token.status(), 200);
        assert_eq!(with_token.json::<Value>().await.unwrap()["total"], 4);
        let bad = script.get(app.url("/api/v1/units")).bearer_auth("not-a-token").send().await.unwrap();
        assert_eq!(bad.status(), 401);

        // A cross-site write riding on the session cookie is refused.
        let lunan = unit_id(&db.store, "130202").await;
        let cross = client
            .patch(app.url(&format!("/api/v1/units/{lunan}")))
            .header("origin", "https://evil.example")
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(cross.status(), 403);

        assert_eq!(client.delete(app.url("/api/v1/session")).send().await.unwrap().status(), 204);
        assert_eq!(client.get(app.url("/api/v1/me")).send().await.unwrap().status(), 401);

        db.store.set_account_disabled("tangshan", true, "admin").await.unwrap();
        let revoked = script.get(app.url("/api/v1/units")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(revoked.status(), 401);
        assert_eq!(login_as(&app, "tangshan").await, 401);
        app.stop().await;
    }

    async fn health_readiness_metrics_and_openapi(db: TestDb) {
        seed(&db.store).await;
        let app = spawn_app(db).await;
        let client = reqwest::Client::new();
        assert_eq!(client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
        assert_eq!(client.get(app.url("/readyz")).send().await.unwrap().status(), 200);

        // Every operation the OpenAPI document lists is routed (no 404/405 for the route).
        let doc: Value = client.get(app.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let admin = app.client_for("admin").await;
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "post", "patch", "delete"] {
                if item.get(method).is_none() {
                    continue;
                }
                operations += 1;
                let url = app.url(&format!("/api/v1{}", path.replace("{id}", "1")));
                let m: Method = method.to_uppercase().parse().unwrap();
                let response = admin.request(m, url).json(&json!({})).send().await.unwrap();
                let code = response.status().as_u16();
                let body = response.text().await.unwrap();
                assert!(code != 405, "{method} {path} is documented but not routed");
                assert!(!(code == 404 && body.contains("API route")), "{method} {path} is documented but not routed");
            }
        }
        assert!(operations >= 12, "{operations} operations");

        let metrics = client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("muster_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"), "{metrics}");
        assert!(metrics.contains("muster_http_request_duration_seconds"));

        // With the database gone, readiness fails and liveness does not.
        db.store.close().await;
        assert_eq!(client.get(app.url("/readyz")).send().await.unwrap().status(), 503);
        assert_eq!(client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    }

    async fn login_page_sets_the_session_cookie(db: TestDb) {
        seed(&db.store).await;
        let app = spawn_app(db).await;
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let form = client.get(app.url("/login")).send().await.unwrap().text().await.unwrap();
        assert!(form.contains("用户名") && form.contains("name=\"password\""));
        let forged = client
            .post(app.url("/login"))
            .form(&[("username", "tangshan"), ("password", common::PASSWORD), ("csrf", "forged")])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403, "a sign-in without the form's token is refused");
        let wrong = client
            .post(app.url("/login"))
            .form(&[("username", "tangshan"), ("password", "nope"), ("csrf", &common::csrf_of(&form))])
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let again = wrong.text().await.unwrap();
        assert!(again.contains("用户名或密码错误"));
        let ok = client
            .post(app.url("/login"))
            .form(&[("username", "tangshan"), ("password", common::PASSWORD), ("csrf", &common::csrf_of(&again))])
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 303);
        let cookie = ok.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
        let home = client.get(app.url("/")).send().await.unwrap().text().await.unwrap();
        assert!(home.contains("唐山市"), "{home}");
        app.stop().await;
    }
}

async fn login_as(app: &common::TestApp, username: &str) -> u16 {
    reqwest::Client::new()
        .post(app.url("/api/v1/session"))
        .json(&json!({"username": username, "password": common::PASSWORD}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
