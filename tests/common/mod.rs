//! Test support: a fresh database per test on SQLite (always) or PostgreSQL (when
//! `MUSTER_TEST_POSTGRES_URL` is set), a running app on port 0, and a small directory.
#![allow(dead_code)]
pub mod livekit;
pub mod smtp;

use std::path::PathBuf;

use muster::config::{Config, Secret};
use muster::startup::Application;
use muster::store::Store;
use sqlx::Connection;

pub const PG_VAR: &str = "MUSTER_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, migrated database that exists for one test.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    /// `None` when the backend is PostgreSQL and no server was given: those tests are skipped
    /// outside CI (where `.ci/run` always sets the variable).
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("muster.db").display());
                let store = Store::connect(&url, 5).await.expect("open sqlite");
                store.migrate().await.expect("migrate sqlite");
                Some(Self {
                    backend,
                    url,
                    store,
                    _dir: Some(dir),
                    pg_admin: None,
                })
            }
            Backend::Postgres => {
                let admin_url = std::env::var(PG_VAR).ok()?;
                let name = format!("muster_t_{}", &muster::auth::new_token()[..16]);
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{PG_VAR} is set but PostgreSQL is unreachable: {e}")
                    });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                let url = with_database(&admin_url, &name);
                let store = Store::connect(&url, 5).await.expect("open postgres");
                store.migrate().await.expect("migrate postgres");
                Some(Self {
                    backend,
                    url,
                    store,
                    _dir: None,
                    pg_admin: Some((admin_url, name)),
                })
            }
        }
    }

    /// Drops a PostgreSQL test database (SQLite's goes with its temp dir).
    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin_url, name)) = self.pg_admin
            && let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
}

/// Runs a statement on a separate raw connection, as someone bypassing muster would.
pub async fn raw_execute(db: &TestDb, sql: &str) -> Result<(), sqlx::Error> {
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await?;
            sqlx::query(sql).execute(&mut c).await.map(|_| ())
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await?;
            sqlx::query(sql).execute(&mut c).await.map(|_| ())
        }
    }
}

/// Counts the rows of a table.
pub async fn count(db: &TestDb, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(&sql).fetch_one(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(&sql).fetch_one(&mut c).await.unwrap()
        }
    }
}

/// Replaces the database name of a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// Runs a test body against SQLite and, when configured, PostgreSQL:
/// `backend_tests! { async fn name(db: TestDb) { ... } }` makes `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($db:ident: TestDb) $body:block)+) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn body($db: &common::TestDb) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = common::TestDb::new(common::Backend::Sqlite).await.unwrap();
                    body(&db).await;
                    db.cleanup().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(db) = common::TestDb::new(common::Backend::Postgres).await else {
                        eprintln!("skipped: set {} to run against PostgreSQL", common::PG_VAR);
                        return;
                    };
                    body(&db).await;
                    db.cleanup().await;
                }
            }
        )+
    };
}

/// A small directory: 河北省 with 唐山市 (路南区, two enterprises) and 保定市 (竞秀区, one
/// enterprise).
pub const UNITS_CSV: &str = "code,name,level,parent_code,sectors,mailbox
130000,河北省,province,,,yjt@he.example.cn
130200,唐山市,city,130000,,yjj@ts.example.cn
130202,路南区,district,130200,,
130202E1,开滦煤业,enterprise,130202,coal_mine,
130202E2,唐钢,enterprise,130202,industry_trade,
130600,保定市,city,130000,,yjj@bd.example.cn
130602,竞秀区,district,130600,,
130602E1,保定水泥,enterprise,130602,non_coal_mine,
";

pub const PEOPLE_CSV: &str = "unit_code,name,roles,email,mobile
130000,省厅张三,principal,zs@he.example.cn,13800000001
130200,唐山李四,deputy;supervisor,ls@ts.example.cn,13800000002
130202E1,开滦王五,principal;safety_head,ww@kl.example.cn,13800000003
130600,保定赵六,deputy,zl@bd.example.cn,13800000004
130602E1,水泥钱七,principal,qq@bdsn.example.cn,
";

pub const PASSWORD: &str = "test-password-1";

/// Imports the small directory and creates one account per role.
pub async fn seed(store: &Store) {
    use muster::directory::{ImportKind, import};
    import(
        store,
        ImportKind::Units,
        UNITS_CSV.as_bytes(),
        "units.csv",
        "test",
    )
    .await
    .expect("units import");
    import(
        store,
        ImportKind::People,
        PEOPLE_CSV.as_bytes(),
        "people.csv",
        "test",
    )
    .await
    .expect("people import");
    let hash = muster::auth::hash_password(PASSWORD).unwrap();
    for (name, role, unit) in [
        ("admin", "admin", "130000"),
        ("convener", "convener", "130000"),
        ("leader", "leader", "130000"),
        ("tangshan", "bureau", "130200"),
        ("baoding", "bureau", "130600"),
    ] {
        muster::auth::add_account(store, name, "", role.parse().unwrap(), unit, &hash, "test")
            .await
            .expect("account");
    }
}

pub struct TestApp {
    pub address: String,
    pub store: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        agendas_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agendas"),
        ..Default::default()
    };
    config.database.url = Secret::new(db.url.clone());
    config.mail.outbox_dir = std::env::temp_dir().join("muster-test-outbox");
    // Tests drive the job queue themselves, with a manual clock.
    config.jobs.enabled = false;
    config
}

/// Starts the app on a free port over the test database.
pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, test_config(db)).await
}

pub async fn spawn_app_with(db: &TestDb, config: Config) -> TestApp {
    let app = Application::build(config, db.store.clone())
        .await
        .expect("build app");
    let address = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        store: db.store.clone(),
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A client signed in as `username` (session cookie).
    pub async fn client_for(&self, username: &str) -> reqwest::Client {
        self.client_with(username, PASSWORD).await
    }

    pub async fn client_with(&self, username: &str, password: &str) -> reqwest::Client {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let response = client
            .post(self.url("/api/v1/session"))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "sign-in of {username}");
        client
    }

    /// Stops the server the way SIGTERM does and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An account that may do anything anywhere, for tests that drive the services directly.
pub fn admin() -> muster::domain::access::Principal {
    muster::domain::access::Principal {
        account_id: 0,
        username: "test".into(),
        role: muster::domain::access::StaffRole::Admin,
        unit_id: 0,
        unit_name: "all".into(),
        unit_path: "/".into(),
    }
}

/// The shipped agenda templates.
pub fn templates() -> muster::domain::agenda::TemplateSet {
    muster::agendas::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/agendas"
    )))
    .unwrap()
}

/// Publishes a dispatch as [`admin`] with the default configuration; returns its root meeting.
pub async fn publish(
    store: &Store,
    template: &str,
    root: &str,
    start: &str,
    chosen: Vec<String>,
) -> muster::store::MeetingRecord {
    let input = muster::dispatch::DispatchInput {
        template: template.into(),
        root_unit: root.into(),
        start: start.into(),
        chosen_units: chosen,
    };
    let config = Config::default();
    let (id, _) = muster::dispatch::publish(
        store,
        &templates(),
        &config.livekit,
        &admin(),
        &input,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    store
        .dispatch_meetings(id)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.parent_id.is_none())
        .unwrap()
}

/// The personal link token of the first invitation of `unit_code` in the meeting (with
/// `role`, if given) and that invitation's id, as the invitation mail would carry it.
pub async fn invitation_link(
    store: &Store,
    meeting: i64,
    unit_code: &str,
    role: Option<&str>,
) -> (String, i64) {
    let key = store
        .setting_or_insert("link_key", &muster::notify::links::new_key())
        .await
        .unwrap();
    let unit = store.unit_by_code(unit_code).await.unwrap();
    let (invitations, _) = store
        .meeting_invitations(meeting, "/", 1000, 0)
        .await
        .unwrap();
    let inv = invitations
        .iter()
        .find(|i| i.unit_id == unit.id && role.is_none_or(|r| i.role == r))
        .unwrap_or_else(|| panic!("{unit_code} is invited to meeting {meeting}"));
    let nonce = muster::notify::links::new_nonce();
    let token = muster::notify::links::link_token(&key, inv.id, &nonce);
    store
        .set_links(&[(inv.id, nonce, muster::auth::token_hash(&token))])
        .await
        .unwrap();
    // Links are only set once; read back the nonce that stuck.
    let stuck = store
        .invitation_context(inv.id)
        .await
        .unwrap()
        .link_nonce
        .unwrap();
    (
        muster::notify::links::link_token(&key, inv.id, &stuck),
        inv.id,
    )
}

/// The CSRF token of a page (every page with forms names it in a `<meta>`).
pub fn csrf_of(html: &str) -> String {
    let marker = "<meta name=\"csrf\" content=\"";
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF token in the page: {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}
