//! The `muster` binary: imports, accounts and `serve --demo`, on SQLite and (with
//! MUSTER_TEST_POSTGRES_URL) PostgreSQL.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::seed;

/// Runs `muster ARGS` against the test database, in `dir`, with `stdin` piped in.
fn muster(db: &common::TestDb, dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(args)
        .current_dir(dir)
        .env("MUSTER_DATABASE__URL", &db.url)
        .env("MUSTER_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run muster");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().expect("muster output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A 1,000-row units file (header not counted): the province, two cities, and enterprises.
/// `bad` maps data-row numbers to broken rows.
fn thousand_units(bad: &[(usize, &str)]) -> String {
    let mut csv = String::from("code,name,level,parent_code,sectors,mailbox\n");
    for row in 1..=1000 {
        let line = match row {
            1 => "130000,河北省,province,,,yjt@he.example.cn".to_string(),
            2 => "130200,唐山市,city,130000,,".to_string(),
            3 => "130600,保定市,city,130000,,".to_string(),
            n => {
                let parent = if n % 2 == 0 { "130200" } else { "130600" };
                format!("E{n:04},企业{n},enterprise,{parent},industry_trade,e{n}@example.cn")
            }
        };
        match bad.iter().find(|(r, _)| *r == row) {
            Some((_, broken)) => csv.push_str(broken),
            None => csv.push_str(&line),
        }
        csv.push('\n');
    }
    csv
}

backend_tests! {
    async fn a_file_with_three_bad_rows_is_rejected_whole(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        // Rows 137, 500 and 999 are data rows; with the header they sit on lines 138, 501, 1000.
        let bad = [
            (137, "E0137,坏企业,enterprise,999999,industry_trade,"),
            (500, "E0500,坏邮箱,enterprise,130200,industry_trade,not-an-address"),
            (999, "E0999,坏层级,factory,130600,industry_trade,"),
        ];
        std::fs::write(dir.path().join("bad.csv"), thousand_units(&bad)).unwrap();
        let out = muster(db, dir.path(), &["import", "units", "bad.csv"], "");
        assert!(!out.status.success(), "a bad file must fail");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("3 bad row(s); nothing was imported"), "{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.trim_start().starts_with("line ")).collect();
        assert_eq!(lines.len(), 3, "{stderr}");
        assert!(lines[0].contains("line 138: unknown parent_code \"999999\""), "{stderr}");
        assert!(lines[1].contains("line 501: invalid e-mail address \"not-an-address\""), "{stderr}");
        assert!(lines[2].contains("line 1000: unknown level \"factory\""), "{stderr}");
        assert_eq!(db.store.directory_summary().await.unwrap(), Default::default(), "nothing stored");

        std::fs::write(dir.path().join("good.csv"), thousand_units(&[])).unwrap();
        let out = muster(db, dir.path(), &["import", "units", "good.csv"], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("1000 rows (Utf8): 1000 inserted, 0 updated, 0 unchanged"), "{}", text(&out.stdout));
        let out = muster(db, dir.path(), &["import", "units", "good.csv"], "");
        assert!(text(&out.stdout).contains("0 inserted, 0 updated, 1000 unchanged"), "{}", text(&out.stdout));

        // The same file with bad rows again: still rejected, the stored directory untouched.
        let before = db.store.unit_records().await.unwrap();
        let out = muster(db, dir.path(), &["import", "units", "bad.csv"], "");
        assert!(!out.status.success());
        assert_eq!(db.store.unit_records().await.unwrap(), before);
    }

    async fn gbk_and_bom_files_import_with_chinese_intact(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        let units = "编码,名称,层级,上级编码,行业\n130000,河北省,省,,\n130200,唐山市,市,130000,\n130202E1,开滦（集团）煤业,企业,130200,煤矿\n";
        let (gbk, _, unmappable) = encoding_rs::GBK.encode(units);
        assert!(!unmappable);
        std::fs::write(dir.path().join("units-gbk.csv"), &gbk).unwrap();
        let out = muster(db, dir.path(), &["import", "units", "units-gbk.csv"], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("(Gbk)"));
        let kailuan = db.store.unit_by_code("130202E1").await.unwrap();
        assert_eq!(kailuan.name, "开滦（集团）煤业");
        assert_eq!(kailuan.sectors, vec![muster::domain::org::Sector::CoalMine]);

        let people = "\u{feff}unit_code,name,roles,email,mobile\n130202E1,张伟,principal;safety_head,zw@kl.example.cn,138 0013 8000\n";
        std::fs::write(dir.path().join("people.csv"), people).unwrap();
        let out = muster(db, dir.path(), &["import", "people", "people.csv"], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("(Utf8Bom): 1 inserted"), "{}", text(&out.stdout));
        let records = db.store.person_records().await.unwrap();
        assert_eq!(records[0].name, "张伟");

        let missing = muster(db, dir.path(), &["import", "people", "nope.csv"], "");
        assert!(!missing.status.success());
        assert!(text(&missing.stderr).contains("cannot read nope.csv"));
    }

    async fn users_add_list_disable_token(db: TestDb) {
        seed(&db.store).await;
        let dir = tempfile::tempdir().unwrap();
        let out = muster(db, dir.path(), &["users", "add", "lunan", "--role", "bureau", "--unit", "130202", "--name", "路南区应急管理局"], "a-long-password\n");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("created lunan (bureau, 路南区)"));
        let found = db.store.account_by_username("lunan").await.unwrap();
        assert!(muster::auth::verify_password("a-long-password", &found.password_hash));

        let short = muster(db, dir.path(), &["users", "add", "x", "--role", "leader", "--unit", "130000"], "short\n");
        assert!(!short.status.success());
        assert!(text(&short.stderr).contains("at least 8 characters"));
        let bad_role = muster(db, dir.path(), &["users", "add", "x", "--role", "king", "--unit", "130000"], "a-long-password\n");
        assert!(!bad_role.status.success());
        assert!(text(&bad_role.stderr).contains("unknown staff role \"king\""));
        let bad_unit = muster(db, dir.path(), &["users", "add", "x", "--role", "leader", "--unit", "424242"], "a-long-password\n");
        assert!(text(&bad_unit.stderr).contains("424242"));

        let token = text(&muster(db, dir.path(), &["users", "token", "lunan"], "").stdout).trim().to_string();
        assert_eq!(token.len(), 64);
        assert!(db.store.token_principal(&muster::auth::token_hash(&token)).await.unwrap().is_some());

        let out = muster(db, dir.path(), &["users", "disable", "lunan"], "");
        assert!(out.status.success());
        let list = text(&muster(db, dir.path(), &["users", "list"], "").stdout);
        assert!(list.lines().any(|l| l.starts_with("lunan") && l.ends_with("(disabled)")), "{list}");
        assert!(db.store.token_principal(&muster::auth::token_hash(&token)).await.unwrap().is_none());
    }

    async fn invalid_configuration_stops_start_up_naming_the_key(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("muster.toml"), "[livekit]\napi_secrett = \"x\"\n").unwrap();
        let out = muster(db, dir.path(), &["migrate"], "");
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains("unknown key `livekit.api_secrett`"), "{stderr}");

        std::fs::write(dir.path().join("muster.toml"), "listen = \"somewhere\"\n").unwrap();
        let stderr = text(&muster(db, dir.path(), &["migrate"], "").stderr);
        assert!(stderr.contains("listen") && stderr.contains("muster.toml"), "{stderr}");
        std::fs::remove_file(dir.path().join("muster.toml")).unwrap();
        let out = muster(db, dir.path(), &["migrate"], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

#[test]
fn serve_demo_answers_health_and_demo_logins() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["serve", "--demo", "--enterprises", "300"])
        .current_dir(dir.path())
        .env("MUSTER_LISTEN", "127.0.0.1:0")
        .env("MUSTER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut printed = Vec::new();
    let address = loop {
        let line = lines.next().expect("muster exited early").unwrap();
        if let Some(address) = line.strip_prefix("muster is serving on ") {
            break address.to_string();
        }
        printed.push(line);
    };
    let printed = printed.join("\n");
    assert!(printed.contains("Loaded the demo dataset"), "{printed}");
    assert!(
        printed.contains("tangshan") && printed.contains("muster-demo"),
        "{printed}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let health = client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let login = client
            .post(format!("{address}/api/v1/session"))
            .json(&serde_json::json!({"username": "tangshan", "password": "muster-demo"}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200);
    });
    assert!(
        dir.path().join("muster.db").exists(),
        "the default database is ./muster.db"
    );
    // SIGTERM: graceful shutdown, exit code 0.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
