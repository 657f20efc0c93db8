//! Loading the org directory: CSV imports and the demo dataset. The planning is pure
//! (`domain::import`); this module reads files and writes the store.

use serde::Serialize;

use crate::auth::{add_account, hash_password};
use crate::domain::access::StaffRole;
use crate::domain::demo::{DEMO_LOGINS, DEMO_PASSWORD, generate};
use crate::domain::import::{
    ChangeSet, ImportError, TextEncoding, decode_text, plan_people, plan_units,
};
use crate::store::{AuditEntry, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    Units,
    People,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImportReport {
    pub encoding: TextEncoding,
    pub rows: usize,
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn report<T>(encoding: TextEncoding, changes: &ChangeSet<T>, rows: usize) -> ImportReport {
    ImportReport {
        encoding,
        rows,
        inserted: changes.inserts.len(),
        updated: changes.updates.len(),
        unchanged: changes.unchanged,
    }
}

/// Imports a units or people file: all rows or none. `source` names the file in the audit
/// log.
pub async fn import(
    store: &Store,
    kind: ImportKind,
    bytes: &[u8],
    source: &str,
    actor: &str,
) -> Result<ImportReport, DirectoryError> {
    let (text, encoding) = decode_text(bytes).map_err(ImportError::File)?;
    let what = match kind {
        ImportKind::Units => "units",
        ImportKind::People => "people",
    };
    let summary = |r: &ImportReport| {
        AuditEntry::new(actor, &format!("import.{what}"), "import", source).after(r)
    };
    match kind {
        ImportKind::Units => {
            let existing = store.unit_records().await?;
            let changes = plan_units(&text, &existing)?;
            // Rows of the file are inserted, updated or unchanged; updates may also include
            // stored descendants of moved units.
            let r = report(
                encoding,
                &changes,
                changes.inserts.len() + changes.updates.len() + changes.unchanged,
            );
            if !changes.is_empty() {
                store
                    .apply_unit_changes(&changes, actor, true, summary(&r))
                    .await?;
            }
            Ok(r)
        }
        ImportKind::People => {
            let codes = store.unit_codes().await?;
            let existing = store.person_records().await?;
            let changes = plan_people(&text, &codes, &existing)?;
            let r = report(
                encoding,
                &changes,
                changes.inserts.len() + changes.updates.len() + changes.unchanged,
            );
            if !changes.is_empty() {
                store
                    .apply_people_changes(&changes, actor, true, summary(&r))
                    .await?;
            }
            Ok(r)
        }
    }
}

/// Loads the demo dataset and the demo logins into an empty directory. Returns false (and
/// changes nothing) when the directory already has units.
pub async fn load_demo(store: &Store, enterprises: usize) -> anyhow::Result<bool> {
    let summary = store.directory_summary().await?;
    if summary.provinces + summary.cities + summary.districts + summary.enterprises > 0 {
        return Ok(false);
    }
    let demo = generate(enterprises);
    let units = ChangeSet {
        inserts: demo.units,
        ..Default::default()
    };
    let people = ChangeSet {
        inserts: demo.people,
        ..Default::default()
    };
    let entry = |what: &str, n: usize| {
        AuditEntry::new("demo", &format!("demo.{what}"), "import", "demo")
            .after(&serde_json::json!({"inserted": n, "enterprises": enterprises}))
    };
    store
        .apply_unit_changes(&units, "demo", false, entry("units", units.inserts.len()))
        .await?;
    store
        .apply_people_changes(
            &people,
            "demo",
            false,
            entry("people", people.inserts.len()),
        )
        .await?;
    let hash = hash_password(DEMO_PASSWORD)?;
    for login in DEMO_LOGINS {
        let role: StaffRole = login.role.parse().map_err(anyhow::Error::msg)?;
        add_account(
            store,
            login.username,
            login.display_name,
            role,
            login.unit_code,
            &hash,
            "demo",
        )
        .await?;
    }
    Ok(true)
}
