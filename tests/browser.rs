//! The pages end to end in headless Chromium, driven through WebDriver (chromedriver) with
//! fantoccini: a convener previews and publishes a dispatch; a bureau confirms attendance; the
//! meeting runs through the LiveKit stand-in while the board updates; the convener records an
//! action item and ends the meeting; a bureau delegates, its district reports, the bureau
//! verifies and reports; a leader sees the closure rate change, drills down and switches to
//! English. A screenshot of each main page goes to `target/screenshots/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages `chromium`,
//! `chromium-driver`; `.ci/run` installs them). Without them the test says so and passes,
//! unless `MUSTER_TEST_REQUIRE_BROWSER=1` (set by CI), when it fails. Runs on SQLite: the
//! pages' queries are the store's, which the other suites run on both backends.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use common::livekit::LiveKitStandIn;
use common::{TestDb, spawn_app_with, test_config};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const KEY: &str = "APImuster";
const SECRET: &str = "muster-test-secret-0123456789-abcdefghij";

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Option<Driver> {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !present {
        assert!(
            std::env::var("MUSTER_TEST_REQUIRE_BROWSER").is_err(),
            "MUSTER_TEST_REQUIRE_BROWSER is set but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("browser tests skipped: {CHROMIUM} or {CHROMEDRIVER} is missing");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Owned by `Driver` at once, whose Drop kills and reaps it, whatever happens next.
    let driver = Driver {
        child: Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
        url: format!("http://127.0.0.1:{port}"),
        profile: tempfile::tempdir().unwrap(),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", driver.profile.path().display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session in headless Chromium")
}

/// The browser and the app under test.
struct Session<'a> {
    c: Client,
    base: String,
    shots: PathBuf,
    db: &'a TestDb,
}

impl Session<'_> {
    async fn go(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        let found = self
            .c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(selector))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => {
                let url = self.c.current_url().await.unwrap();
                let source = self.c.source().await.unwrap_or_default();
                panic!("{selector} on {url}: {e}\n{source}")
            }
        }
    }

    async fn text(&self, selector: &str) -> String {
        self.css(selector).await.text().await.unwrap()
    }

    async fn fill(&self, selector: &str, value: &str) {
        let field = self.css(selector).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    async fn click(&self, selector: &str) {
        self.css(selector).await.click().await.unwrap();
    }

    async fn body(&self) -> String {
        self.text("body").await
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn sign_in(&self, username: &str) {
        self.go("/login").await;
        self.fill("input[name=username]", username).await;
        self.fill("input[name=password]", common::PASSWORD).await;
        self.click("#login").await;
        self.wait_path("/").await;
        let h1 = self.text("h1").await;
        assert!(h1.contains("工作台"), "{username} signed in: {h1}");
    }

    /// Waits until the browser is at `path` (after a form's redirect).
    async fn wait_path(&self, path: &str) {
        for _ in 0..100 {
            if self.path().await == path {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "never reached {path}: at {}",
            self.c.current_url().await.unwrap()
        );
    }

    /// Clicks a form's button and waits for the page that says `done=<what>`.
    async fn submit(&self, selector: &str, done: &str) {
        self.click(selector).await;
        self.wait_done(done).await;
    }

    async fn wait_done(&self, done: &str) {
        let selector = "(the last click)";
        let want = format!("done={done}");
        for _ in 0..100 {
            let url = self.c.current_url().await.unwrap();
            if url.query().is_some_and(|q| q.contains(&want)) {
                self.css("p.notice").await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let source = self.c.source().await.unwrap_or_default();
        panic!(
            "{selector} did not lead to {want}: at {}\n{source}",
            self.c.current_url().await.unwrap()
        );
    }

    async fn sign_out(&self) {
        self.click("form[action='/logout'] button").await;
        self.css("input[name=username]").await;
    }

    /// Waits until the element's text is `want` (pages update themselves over SSE).
    async fn wait_text(&self, selector: &str, want: &str) {
        for _ in 0..100 {
            if self.text(selector).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{selector} never became {want:?}: {:?}",
            self.text(selector).await
        );
    }

    async fn wait_text_contains(&self, selector: &str, want: &str) {
        for _ in 0..100 {
            if self.text(selector).await.contains(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{selector} never showed {want:?}: {:?}",
            self.text(selector).await
        );
    }

    /// The id at the end of the current path (`/follow-ups/12` → 12).
    async fn id(&self) -> i64 {
        self.path()
            .await
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn notice(&self) -> String {
        self.text("p.notice").await
    }

    async fn followup_status(&self) -> String {
        self.db
            .store
            .followup(self.id().await)
            .await
            .unwrap()
            .status
    }
}

#[tokio::test]
async fn people_run_a_dispatch_through_the_pages() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let db = TestDb::new(common::Backend::Sqlite).await.unwrap();
    common::seed(&db.store).await;
    let hash = muster::auth::hash_password(common::PASSWORD).unwrap();
    muster::auth::add_account(
        &db.store,
        "lunan",
        "",
        "bureau".parse().unwrap(),
        "130202",
        &hash,
        "test",
    )
    .await
    .unwrap();
    let livekit = LiveKitStandIn::start(KEY, SECRET, None).await;
    livekit.use_wall_clock();
    let mut config = test_config(&db);
    config.livekit.url = livekit.ws_url();
    config.livekit.api_key = KEY.into();
    config.livekit.api_secret = muster::config::Secret::new(SECRET);
    config.mail.outbox_dir = tempfile::tempdir().unwrap().keep();
    let app = spawn_app_with(&db, config).await;
    livekit.set_webhook_url(Some(app.url("/livekit/webhook")));

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let s = Session {
        c: browser(&driver).await,
        base: app.address.clone(),
        shots,
        db: &db,
    };

    // A convener previews the cascade, then publishes.
    s.go("/login").await;
    s.shot("01-login").await;
    s.sign_in("convener").await;
    s.shot("02-home-convener").await;
    s.click("#new-dispatch").await;
    s.css("select[name=template]")
        .await
        .select_by_value("coal-mine-resumption")
        .await
        .unwrap();
    let start =
        (Utc::now() + chrono::Duration::minutes(10)).with_timezone(&chrono_tz::Asia::Shanghai);
    s.fill(
        "input[name=start]",
        &start.format("%Y-%m-%d %H:%M").to_string(),
    )
    .await;
    s.click("#preview").await;
    s.css("#plan-preview").await;
    let meetings: usize = s.text("#preview-meetings").await.parse().unwrap();
    assert!(
        meetings >= 3,
        "province call, city sub-venues and follow-on meetings: {meetings}"
    );
    assert_eq!(
        common::count(&db, "dispatches").await,
        0,
        "a preview stores nothing"
    );
    s.shot("03-dispatch-preview").await;
    s.submit("#publish", "published").await;
    assert!(s.notice().await.contains("已发布"));
    let dispatch = s.id().await;
    let rows =
        s.c.find_all(Locator::Css("#cascade tr[data-meeting]"))
            .await
            .unwrap();
    assert_eq!(rows.len(), meetings, "the cascade tree shows every meeting");
    s.shot("04-dispatch").await;
    let root = db
        .store
        .dispatch_meetings(dispatch)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.parent_id.is_none())
        .unwrap();

    // 唐山's bureau confirms its attendance.
    s.sign_out().await;
    s.sign_in("tangshan").await;
    let pending_before: i64 = s.text("#pending-count b").await.parse().unwrap();
    assert!(pending_before > 0);
    s.go("/confirmations").await;
    s.click("#to-confirm details summary").await;
    s.fill(".confirm-form input[name=name]", "唐山张三").await;
    s.fill(".confirm-form input[name=mobile]", "13800000001")
        .await;
    s.submit(".confirm-form button[type=submit]", "confirmed")
        .await;
    assert!(s.notice().await.contains("已保存"));
    s.shot("05-confirmations").await;
    s.go("/").await;
    let pending_after: i64 = s.text("#pending-count b").await.parse().unwrap();
    assert_eq!(pending_after, pending_before - 1);

    // The meeting runs: 唐山 joins through its personal link while the convener watches.
    s.sign_out().await;
    s.sign_in("convener").await;
    s.go(&format!("/meetings/{}", root.id)).await;
    assert_eq!(s.text("#present-units").await, "0");
    s.shot("06-meeting-before").await;
    let (link, _) = common::invitation_link(&db.store, root.id, "130200", None).await;
    let joined: Value = reqwest::get(app.url(&format!("/i/{link}/join.json")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    livekit
        .join(joined["token"].as_str().unwrap())
        .expect("the stand-in admits the token");
    for delivery in livekit.flush().await {
        assert_eq!(
            delivery.status,
            Some(200),
            "webhook delivered: {delivery:?}"
        );
    }
    s.wait_text("#present-units", "1").await;
    s.wait_text("#meeting-status", "进行中").await;
    s.shot("07-meeting-live").await;

    // The convener records an action item for every invited unit, then ends the meeting.
    s.fill("#action-item-form input[name=title]", "复工复产安全检查")
        .await;
    let due = (Utc::now() + chrono::Duration::days(7))
        .format("%Y-%m-%d")
        .to_string();
    s.fill("#action-item-form input[name=due]", &due).await;
    s.submit("#record-action-item", "action_item").await;
    assert!(s.notice().await.contains("已交办"));
    s.shot("08-action-item").await;
    s.click("#end-meeting").await;
    s.c.accept_alert().await.unwrap();
    s.wait_done("ended").await;
    assert!(s.notice().await.contains("会议已结束"));
    assert!(
        livekit.room(&root.room_name).is_none(),
        "the room is deleted"
    );
    let ended = db.store.meeting(root.id).await.unwrap();
    assert_eq!(ended.status, "finished");
    // What the report job does when the room has ended (the test drives jobs itself).
    let rules = muster::config::Config::default().attendance.rules();
    muster::reports::finalise(&db.store, &ended, rules, Utc::now())
        .await
        .unwrap();

    // The invitee's page, reached without signing in.
    s.go(&format!("/i/{link}")).await;
    assert!(s.body().await.contains(&root.title));
    s.shot("09-invitee").await;
    // Enterprise heads join from phones: the same page at a phone's width.
    s.c.set_window_size(390, 844).await.unwrap();
    s.go(&format!("/i/{link}")).await;
    s.shot("09-invitee-phone").await;
    let width: i64 =
        s.c.execute("return document.documentElement.scrollWidth", vec![])
            .await
            .unwrap()
            .as_i64()
            .unwrap();
    assert!(width <= 390, "no sideways scrolling on a phone: {width}px");
    s.c.set_window_size(1280, 1000).await.unwrap();

    // A leader notes the closure rate.
    s.go("/").await;
    s.sign_out().await;
    s.sign_in("leader").await;
    s.go("/closure").await;
    let rate_before = s.text("#closure-total-rate").await;
    let attended = s.text("#attendance-rate").await;
    assert!(
        attended.ends_with('%'),
        "the report's rate is shown: {attended}"
    );
    s.shot("10-closure-before").await;

    // 唐山 acknowledges and delegates to 路南区, which reports; 唐山 verifies and reports.
    s.sign_out().await;
    s.sign_in("tangshan").await;
    s.go("/follow-ups?view=mine").await;
    // Its list also holds the absence explanation the report asked for (the meeting ended
    // before its planned start, so nobody counts as present).
    s.css("#followup-list").await;
    s.c.find(Locator::LinkText("复工复产安全检查"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    s.css("#followup-actions").await;
    let city = s.id().await;
    s.submit("#action-acknowledge", "acknowledge").await;
    assert_eq!(s.followup_status().await, "acknowledged");
    s.click("#delegate input[value='130202']").await;
    s.submit("#delegate-submit", "delegated").await;
    assert!(s.notice().await.contains("已交办下级"));
    s.shot("11-followup-delegated").await;
    let again =
        s.c.find_all(Locator::Css("#delegate input[value='130202']"))
            .await
            .unwrap();
    assert!(
        again.is_empty(),
        "路南区 has its child already: not offered again"
    );
    let district = db.store.followup_children(city).await.unwrap()[0].id;

    s.sign_out().await;
    s.sign_in("lunan").await;
    s.go(&format!("/follow-ups/{district}")).await;
    s.submit("#action-acknowledge", "acknowledge").await;
    s.fill("#followup-text", "辖区煤矿均已复查").await;
    s.submit("#action-submit", "submit").await;
    assert_eq!(s.followup_status().await, "submitted");

    s.sign_out().await;
    s.sign_in("tangshan").await;
    s.go(&format!("/follow-ups/{district}")).await;
    s.submit("#action-verify", "verify").await;
    assert_eq!(s.followup_status().await, "verified");
    s.go(&format!("/follow-ups/{city}")).await;
    s.fill("#followup-text", "全市复工复产检查已完成").await;
    s.submit("#action-submit", "submit").await;
    assert_eq!(s.followup_status().await, "submitted");
    s.shot("12-followup-submitted").await;

    // The convener verifies; the leader sees the rate change and drills into 唐山.
    s.sign_out().await;
    s.sign_in("convener").await;
    s.go(&format!("/follow-ups/{city}")).await;
    s.submit("#action-verify", "verify").await;
    assert_eq!(s.followup_status().await, "verified");
    s.sign_out().await;
    s.sign_in("leader").await;
    s.go("/closure").await;
    let rate_after = s.text("#closure-total-rate").await;
    assert_ne!(
        rate_after, rate_before,
        "closing 唐山's follow-up moves the rate"
    );
    s.shot("13-closure-after").await;
    s.c.find(Locator::LinkText("唐山市"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    s.wait_text_contains("h1", "唐山市").await;
    s.shot("14-closure-drill-down").await;
    s.click("#lang-switch").await;
    s.wait_text_contains("h1", "Follow-up closure").await;
    s.shot("15-closure-english").await;

    s.c.close().await.unwrap();
    app.stop().await;
    db.cleanup().await;
}
