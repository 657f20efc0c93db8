//! The store suite: every test runs on SQLite and (with MUSTER_TEST_POSTGRES_URL) PostgreSQL,
//! each in a fresh database.

mod common;

use chrono::{Duration, Utc};
use common::seed;
use muster::directory::{DirectoryError, ImportKind, import, load_demo};
use muster::domain::access::StaffRole;
use muster::domain::import::{ChangeSet, ImportError, UnitRecord};
use muster::domain::org::{Level, PersonRole, Sector};
use muster::store::{AuditEntry, PersonFilter, PersonUpdate, StoreError, UnitFilter, UnitUpdate};

fn scope(path: &str) -> UnitFilter {
    UnitFilter {
        scope_path: path.into(),
        limit: 100,
        ..Default::default()
    }
}

backend_tests! {
    async fn subtree_queries_and_filters(db: TestDb) {
        seed(&db.store).await;
        let store = &db.store;
        let (all, total) = store.list_units(&scope("/")).await.unwrap();
        assert_eq!((all.len(), total), (8, 8));

        let tangshan = store.unit_by_code("130200").await.unwrap();
        let (units, total) = store.list_units(&scope(&tangshan.path)).await.unwrap();
        let codes: Vec<&str> = units.iter().map(|u| u.code.as_str()).collect();
        assert_eq!(codes, ["130200", "130202", "130202E1", "130202E2"]);
        assert_eq!(total, 4);

        let enterprises = UnitFilter { level: Some(Level::Enterprise), ..scope("/130000/") };
        assert_eq!(store.list_units(&enterprises).await.unwrap().1, 3);
        let coal = UnitFilter { sector: Some(Sector::CoalMine), ..scope("/130000/") };
        let (units, _) = store.list_units(&coal).await.unwrap();
        // `non_coal_mine` contains `coal_mine` as a substring; the filter must not mix them up.
        let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["开滦煤业"]);
        let by_name = UnitFilter { query: Some("保定".into()), ..scope("/130000/") };
        let names: Vec<String> = store.list_units(&by_name).await.unwrap().0.into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["保定市", "保定水泥"]);
        let children = UnitFilter { parent_id: Some(tangshan.id), ..scope("/130000/") };
        assert_eq!(store.list_units(&children).await.unwrap().0[0].code, "130202");
        let page = UnitFilter { limit: 2, offset: 2, ..scope("/130000/") };
        let (units, total) = store.list_units(&page).await.unwrap();
        assert_eq!((units.len(), total), (2, 8));

        let people = PersonFilter { scope_path: tangshan.path.clone(), limit: 100, ..Default::default() };
        let (people, total) = store.list_people(&people).await.unwrap();
        assert_eq!(total, 2);
        assert!(people.iter().all(|p| p.name.starts_with("唐山") || p.name.starts_with("开滦")));
        let safety = PersonFilter { scope_path: "/".into(), role: Some(PersonRole::SafetyHead), limit: 10, ..Default::default() };
        assert_eq!(store.list_people(&safety).await.unwrap().0[0].name, "开滦王五");
    }

    async fn reimport_changes_nothing_and_changes_update_by_code(db: TestDb) {
        seed(&db.store).await;
        let store = &db.store;
        let audit_before = store.audit_events(None, 1000).await.unwrap().len();
        let report = import(store, ImportKind::Units, common::UNITS_CSV.as_bytes(), "units.csv", "t").await.unwrap();
        assert_eq!((report.inserted, report.updated, report.unchanged), (0, 0, 8));
        let report = import(store, ImportKind::People, common::PEOPLE_CSV.as_bytes(), "people.csv", "t").await.unwrap();
        assert_eq!((report.inserted, report.updated, report.unchanged), (0, 0, 5));
        assert_eq!(store.audit_events(None, 1000).await.unwrap().len(), audit_before, "no-op imports are not audited");

        // Rename 路南区 and move it under 保定市: its enterprises move along.
        let changed = "code,name,level,parent_code\n130202,路南新区,district,130600\n";
        let report = import(store, ImportKind::Units, changed.as_bytes(), "move.csv", "t").await.unwrap();
        assert_eq!((report.inserted, report.updated), (0, 3));
        let moved = store.unit_by_code("130202E1").await.unwrap();
        assert_eq!(moved.path, "/130000/130600/130202/130202E1/");
        let district = store.unit_by_code("130202").await.unwrap();
        assert_eq!(district.name, "路南新区");
        assert_eq!(district.parent_id, Some(store.unit_by_code("130600").await.unwrap().id));
        let baoding = store.unit_by_code("130600").await.unwrap();
        assert_eq!(store.list_units(&scope(&baoding.path)).await.unwrap().1, 6);

        let events = store.audit_events(Some(("unit", "130202")), 10).await.unwrap();
        assert_eq!(events[0].action, "unit.updated");
        assert!(events[0].before.as_deref().unwrap().contains("路南区"));
        assert!(events[0].after.as_deref().unwrap().contains("路南新区"));

        let people = "unit_code,name,roles,email\n130202E1,开滦王五,principal,new@kl.example.cn\n";
        let report = import(store, ImportKind::People, people.as_bytes(), "p.csv", "t").await.unwrap();
        assert_eq!((report.inserted, report.updated), (0, 1));
        let records = store.person_records().await.unwrap();
        let wang = records.iter().find(|p| p.name == "开滦王五").unwrap();
        assert_eq!(wang.email.as_deref(), Some("new@kl.example.cn"));
        assert_eq!(wang.roles, vec![PersonRole::Principal]);
    }

    async fn a_rejected_import_changes_nothing(db: TestDb) {
        seed(&db.store).await;
        let store = &db.store;
        let units_before = store.unit_records().await.unwrap();
        let audit_before = store.audit_events(None, 1000).await.unwrap().len();
        let bad = "code,name,level,parent_code\n130200,唐山市改名,city,130000\n130999,某市,city,999\n";
        let err = import(store, ImportKind::Units, bad.as_bytes(), "bad.csv", "t").await.unwrap_err();
        let DirectoryError::Import(ImportError::Rows(rows)) = err else { panic!("{err:?}") };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].line, 3);
        assert_eq!(store.unit_records().await.unwrap(), units_before);
        assert_eq!(store.audit_events(None, 1000).await.unwrap().len(), audit_before);
    }

    async fn a_write_that_fails_midway_leaves_no_trace(db: TestDb) {
        seed(&db.store).await;
        let store = &db.store;
        let before = store.directory_summary().await.unwrap();
        // The second insert collides with a stored code after the first was written in the
        // same transaction.
        let record = |code: &str| UnitRecord {
            code: code.into(),
            name: "新企业".into(),
            level: Level::Enterprise,
            parent_code: Some("130202".into()),
            path: format!("/130000/130200/130202/{code}/"),
            sectors: vec![Sector::CoalMine],
            mailbox: None,
        };
        let changes = ChangeSet {
            inserts: vec![record("NEW1"), record("130202E1")],
            ..Default::default()
        };
        let err = store
            .apply_unit_changes(&changes, "t", true, AuditEntry::new("t", "import.units", "import", "x"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert_eq!(store.directory_summary().await.unwrap(), before);
        assert!(matches!(store.unit_by_code("NEW1").await, Err(StoreError::NotFound(_))));
    }

    async fn people_and_units_are_edited_with_audit(db: TestDb) {
        seed(&db.store).await;
        let store = &db.store;
        let lunan = store.unit_by_code("130202").await.unwrap();
        let new = PersonUpdate {
            name: "路南孙八".into(),
            roles: vec![PersonRole::Supervisor],
            email: Some("sb@ln.example.cn".into()),
            mobile: None,
        };
        let person = store.create_person(&lunan, &new, "tangshan").await.unwrap();
        let dup = store.create_person(&lunan, &new, "tangshan").await.unwrap_err();
        assert!(matches!(dup, StoreError::Conflict(_)), "{dup:?}");
        let changed = PersonUpdate { roles: vec![PersonRole::Deputy], ..new.clone() };
        let updated = store.update_person(person.id, &changed, "tangshan").await.unwrap();
        assert_eq!(store.person(person.id).await.unwrap(), updated);
        store.delete_person(person.id, "tangshan").await.unwrap();
        assert!(matches!(store.person(person.id).await, Err(StoreError::NotFound(_))));
        let actions: Vec<String> = store
            .audit_events(Some(("person", &person.id.to_string())), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["person.deleted", "person.updated", "person.created"]);

        let update = UnitUpdate { mailbox: Some(Some("ln@ts.example.cn".into())), ..Default::default() };
        let unit = store.update_unit(lunan.id, &update, "tangshan").await.unwrap();
        assert_eq!(store.unit(lunan.id).await.unwrap(), unit);
        assert_eq!(unit.mailbox.as_deref(), Some("ln@ts.example.cn"));
    }

    async fn the_audit_log_is_append_only(db: TestDb) {
        seed(&db.store).await;
        assert!(!db.store.audit_events(None, 1).await.unwrap().is_empty());
        let update = common::raw_execute(db, "UPDATE audit_events SET actor = 'someone else'").await;
        assert!(update.is_err(), "an audit event was rewritten");
        let delete = common::raw_execute(db, "DELETE FROM audit_events").await;
        assert!(delete.is_err(), "audit events were deleted");
    }

    async fn accounts_sessions_and_tokens(db: TestDb) {
        seed(&db.store).await;
        let store = &db.store;
        let found = store.account_by_username("tangshan").await.unwrap();
        assert_eq!(found.account.role, StaffRole::Bureau);
        assert!(muster::auth::verify_password(common::PASSWORD, &found.password_hash));
        let hash = muster::auth::hash_password("another-password").unwrap();
        let dup = muster::auth::add_account(store, "TangShan", "", StaffRole::Leader, "130000", &hash, "t").await;
        assert!(dup.unwrap_err().to_string().contains("taken"));
        let unknown_unit = muster::auth::add_account(store, "x", "", StaffRole::Leader, "999", &hash, "t").await;
        assert!(unknown_unit.unwrap_err().to_string().contains("999"));

        let now = Utc::now();
        store.create_session("live", found.account.id, now + Duration::hours(1)).await.unwrap();
        store.create_session("old", found.account.id, now - Duration::seconds(1)).await.unwrap();
        let principal = store.session_principal("live", now).await.unwrap().unwrap();
        assert_eq!(principal.unit_path, "/130000/130200/");
        assert_eq!(principal.unit_name, "唐山市");
        assert!(store.session_principal("old", now).await.unwrap().is_none());
        assert!(store.session_principal("nope", now).await.unwrap().is_none());

        store.create_api_token(found.account.id, "script", "tokenhash", "t").await.unwrap();
        assert!(store.token_principal("tokenhash").await.unwrap().is_some());

        store.set_account_disabled("tangshan", true, "admin").await.unwrap();
        assert!(store.session_principal("live", now).await.unwrap().is_none());
        assert!(store.token_principal("tokenhash").await.unwrap().is_none());
        assert!(store.account_by_username("tangshan").await.unwrap().account.disabled);
        store.set_account_disabled("tangshan", false, "admin").await.unwrap();
        assert!(store.token_principal("tokenhash").await.unwrap().is_none(), "revoked tokens stay revoked");
        let listed: Vec<String> = store.list_accounts().await.unwrap().into_iter().map(|a| a.username).collect();
        assert_eq!(listed, ["admin", "baoding", "convener", "leader", "tangshan"]);
    }

    async fn demo_dataset_loads_once(db: TestDb) {
        assert!(load_demo(&db.store, 500).await.unwrap());
        let summary = db.store.directory_summary().await.unwrap();
        assert_eq!((summary.provinces, summary.cities, summary.enterprises), (1, 14, 500));
        assert!(summary.districts > 150);
        assert_eq!(summary.people, 3 * (1 + 14 + summary.districts + 500));
        assert!(!load_demo(&db.store, 500).await.unwrap(), "a second load is refused");
        assert_eq!(db.store.directory_summary().await.unwrap(), summary);
        assert_eq!(db.store.list_accounts().await.unwrap().len(), 5);
    }
}
