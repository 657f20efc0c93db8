//! Units and people.

use std::collections::HashSet;

use chrono::Utc;
use serde::Serialize;
use sqlx::QueryBuilder;

use super::audit::AuditEntry;
use super::{Store, StoreError, StoreResult, Tx, conflict_on_unique, with_db, with_tx};
use crate::domain::import::{ChangeSet, PersonRecord, UnitRecord};
use crate::domain::org::{
    Level, Person, PersonRole, Sector, Unit, join_list, parse_list, subtree_range,
};

/// Rows per multi-row INSERT: well under SQLite's bind-parameter limit, large enough that a
/// province-scale directory loads in a few hundred statements.
const BATCH_ROWS: usize = 500;

#[derive(sqlx::FromRow)]
struct UnitRow {
    id: i64,
    code: String,
    name: String,
    level: String,
    parent_id: Option<i64>,
    path: String,
    sectors: String,
    mailbox: Option<String>,
}

impl TryFrom<UnitRow> for Unit {
    type Error = StoreError;
    fn try_from(r: UnitRow) -> Result<Self, Self::Error> {
        Ok(Unit {
            id: r.id,
            level: r.level.parse().map_err(StoreError::Corrupt)?,
            sectors: parse_list(&r.sectors).map_err(StoreError::Corrupt)?,
            code: r.code,
            name: r.name,
            parent_id: r.parent_id,
            path: r.path,
            mailbox: r.mailbox,
        })
    }
}

#[derive(sqlx::FromRow)]
struct PersonRow {
    id: i64,
    unit_id: i64,
    name: String,
    roles: String,
    email: Option<String>,
    mobile: Option<String>,
}

impl TryFrom<PersonRow> for Person {
    type Error = StoreError;
    fn try_from(r: PersonRow) -> Result<Self, Self::Error> {
        Ok(Person {
            id: r.id,
            unit_id: r.unit_id,
            roles: parse_list(&r.roles).map_err(StoreError::Corrupt)?,
            name: r.name,
            email: r.email,
            mobile: r.mobile,
        })
    }
}

#[derive(sqlx::FromRow)]
struct UnitRecordRow {
    code: String,
    name: String,
    level: String,
    parent_code: Option<String>,
    path: String,
    sectors: String,
    mailbox: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PersonRecordRow {
    unit_code: String,
    name: String,
    roles: String,
    email: Option<String>,
    mobile: Option<String>,
}

/// Which units to list. `scope_path` limits the listing to a subtree.
#[derive(Debug, Clone, Default)]
pub struct UnitFilter {
    pub scope_path: String,
    pub level: Option<Level>,
    pub parent_id: Option<i64>,
    pub sector: Option<Sector>,
    /// Substring of the name or the code.
    pub query: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone, Default)]
pub struct PersonFilter {
    pub scope_path: String,
    pub unit_id: Option<i64>,
    pub role: Option<PersonRole>,
    pub query: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// The fields of a unit that can be edited in place; structure (level, parent) changes by
/// import.
#[derive(Debug, Clone, Default)]
pub struct UnitUpdate {
    pub name: Option<String>,
    pub mailbox: Option<Option<String>>,
    pub sectors: Option<Vec<Sector>>,
}

#[derive(Debug, Clone)]
pub struct PersonUpdate {
    pub name: String,
    pub roles: Vec<PersonRole>,
    pub email: Option<String>,
    pub mobile: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DirectorySummary {
    pub provinces: i64,
    pub cities: i64,
    pub districts: i64,
    pub enterprises: i64,
    pub people: i64,
}

const UNIT_COLUMNS: &str = "id, code, name, level, parent_id, path, sectors, mailbox";
const PERSON_COLUMNS: &str = "id, unit_id, name, roles, email, mobile";

fn like_pattern(query: &Option<String>) -> Option<String> {
    query.as_ref().filter(|q| !q.is_empty()).map(|q| {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    })
}

fn person_json(p: &PersonRecord) -> serde_json::Value {
    serde_json::to_value(p).expect("records serialize")
}

impl Store {
    pub async fn list_units(&self, f: &UnitFilter) -> StoreResult<(Vec<Unit>, i64)> {
        let (start, end) = subtree_range(&f.scope_path);
        let level = f.level.map(|l| l.as_str().to_string());
        let sector = f.sector.map(|s| format!("%,{s},%"));
        let pattern = like_pattern(&f.query);
        let filter = "FROM units WHERE path >= $1 AND path < $2 \
             AND ($3 IS NULL OR level = $3) AND ($4 IS NULL OR parent_id = $4) \
             AND ($5 IS NULL OR ',' || sectors || ',' LIKE $5) \
             AND ($6 IS NULL OR name LIKE $6 ESCAPE '\\' OR code LIKE $6 ESCAPE '\\')";
        let (rows, total): (Vec<UnitRow>, i64) = with_db!(&self.db, |pool| {
            let rows = sqlx::query_as(&format!(
                "SELECT {UNIT_COLUMNS} {filter} ORDER BY path LIMIT $7 OFFSET $8"
            ))
            .bind(&start)
            .bind(&end)
            .bind(&level)
            .bind(f.parent_id)
            .bind(&sector)
            .bind(&pattern)
            .bind(f.limit)
            .bind(f.offset)
            .fetch_all(pool)
            .await?;
            let total = sqlx::query_scalar(&format!("SELECT COUNT(*) {filter}"))
                .bind(&start)
                .bind(&end)
                .bind(&level)
                .bind(f.parent_id)
                .bind(&sector)
                .bind(&pattern)
                .fetch_one(pool)
                .await?;
            (rows, total)
        });
        Ok((
            rows.into_iter()
                .map(Unit::try_from)
                .collect::<Result<_, _>>()?,
            total,
        ))
    }

    /// The whole directory, for planning a cascade.
    pub async fn directory_snapshot(&self) -> StoreResult<(Vec<Unit>, Vec<Person>)> {
        let (units, people): (Vec<UnitRow>, Vec<PersonRow>) = with_db!(&self.db, |pool| {
            let units = sqlx::query_as(&format!("SELECT {UNIT_COLUMNS} FROM units ORDER BY path"))
                .fetch_all(pool)
                .await?;
            let people =
                sqlx::query_as(&format!("SELECT {PERSON_COLUMNS} FROM people ORDER BY id"))
                    .fetch_all(pool)
                    .await?;
            (units, people)
        });
        Ok((
            units
                .into_iter()
                .map(Unit::try_from)
                .collect::<Result<_, _>>()?,
            people
                .into_iter()
                .map(Person::try_from)
                .collect::<Result<_, _>>()?,
        ))
    }

    pub async fn unit(&self, id: i64) -> StoreResult<Unit> {
        let row: Option<UnitRow> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!("SELECT {UNIT_COLUMNS} FROM units WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("unit {id}")))?
            .try_into()
    }

    pub async fn unit_by_code(&self, code: &str) -> StoreResult<Unit> {
        let row: Option<UnitRow> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!("SELECT {UNIT_COLUMNS} FROM units WHERE code = $1"))
                .bind(code)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("unit with code {code:?}")))?
            .try_into()
    }

    /// The whole directory of units as the import planner sees it.
    pub async fn unit_records(&self) -> StoreResult<Vec<UnitRecord>> {
        let rows: Vec<UnitRecordRow> = with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT u.code, u.name, u.level, p.code AS parent_code, u.path, u.sectors, u.mailbox \
                 FROM units u LEFT JOIN units p ON p.id = u.parent_id ORDER BY u.path",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|r| {
                Ok(UnitRecord {
                    level: r.level.parse().map_err(StoreError::Corrupt)?,
                    sectors: parse_list(&r.sectors).map_err(StoreError::Corrupt)?,
                    code: r.code,
                    name: r.name,
                    parent_code: r.parent_code,
                    path: r.path,
                    mailbox: r.mailbox,
                })
            })
            .collect()
    }

    pub async fn unit_codes(&self) -> StoreResult<HashSet<String>> {
        let codes: Vec<String> = with_db!(&self.db, |pool| {
            sqlx::query_scalar("SELECT code FROM units")
                .fetch_all(pool)
                .await?
        });
        Ok(codes.into_iter().collect())
    }

    pub async fn person_records(&self) -> StoreResult<Vec<PersonRecord>> {
        let rows: Vec<PersonRecordRow> = with_db!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT u.code AS unit_code, p.name, p.roles, p.email, p.mobile \
                 FROM people p JOIN units u ON u.id = p.unit_id",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|r| {
                Ok(PersonRecord {
                    roles: parse_list(&r.roles).map_err(StoreError::Corrupt)?,
                    unit_code: r.unit_code,
                    name: r.name,
                    email: r.email,
                    mobile: r.mobile,
                })
            })
            .collect()
    }

    pub async fn directory_summary(&self) -> StoreResult<DirectorySummary> {
        let (levels, people): (Vec<(String, i64)>, i64) = with_db!(&self.db, |pool| {
            let levels = sqlx::query_as("SELECT level, COUNT(*) FROM units GROUP BY level")
                .fetch_all(pool)
                .await?;
            let people = sqlx::query_scalar("SELECT COUNT(*) FROM people")
                .fetch_one(pool)
                .await?;
            (levels, people)
        });
        let mut summary = DirectorySummary {
            people,
            ..Default::default()
        };
        for (level, count) in levels {
            match level.as_str() {
                "province" => summary.provinces = count,
                "city" => summary.cities = count,
                "district" => summary.districts = count,
                _ => summary.enterprises = count,
            }
        }
        Ok(summary)
    }

    /// Writes a planned units import in one transaction. With `audit_each`, every inserted or
    /// changed unit gets its own audit event; otherwise one summary event is written.
    pub async fn apply_unit_changes(
        &self,
        changes: &ChangeSet<UnitRecord>,
        actor: &str,
        audit_each: bool,
        summary: AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_units(&mut tx, &changes.inserts).await?;
        for (_, after) in &changes.updates {
            update_unit_record(&mut tx, after).await?;
        }
        let mut entries = vec![summary];
        if audit_each {
            entries.extend(
                changes
                    .inserts
                    .iter()
                    .map(|u| AuditEntry::new(actor, "unit.created", "unit", &u.code).after(u)),
            );
            entries.extend(changes.updates.iter().map(|(before, after)| {
                AuditEntry::new(actor, "unit.updated", "unit", &after.code)
                    .before(before)
                    .after(after)
            }));
        }
        Store::append_audit_tx(&mut tx, &entries).await?;
        tx.commit().await
    }

    pub async fn apply_people_changes(
        &self,
        changes: &ChangeSet<PersonRecord>,
        actor: &str,
        audit_each: bool,
        summary: AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_people(&mut tx, &changes.inserts).await?;
        let now = Utc::now();
        for (_, p) in &changes.updates {
            with_tx!(&mut tx, |conn| {
                sqlx::query(
                    "UPDATE people SET roles = $1, email = $2, mobile = $3, updated_at = $4 \
                     WHERE name = $5 AND unit_id = (SELECT id FROM units WHERE code = $6)",
                )
                .bind(join_list(&p.roles))
                .bind(&p.email)
                .bind(&p.mobile)
                .bind(now)
                .bind(&p.name)
                .bind(&p.unit_code)
                .execute(conn)
                .await?;
            });
        }
        let mut entries = vec![summary];
        if audit_each {
            let subject = |p: &PersonRecord| format!("{}/{}", p.unit_code, p.name);
            entries.extend(changes.inserts.iter().map(|p| {
                AuditEntry::new(actor, "person.created", "person", &subject(p))
                    .after(&person_json(p))
            }));
            entries.extend(changes.updates.iter().map(|(before, after)| {
                AuditEntry::new(actor, "person.updated", "person", &subject(after))
                    .before(&person_json(before))
                    .after(&person_json(after))
            }));
        }
        Store::append_audit_tx(&mut tx, &entries).await?;
        tx.commit().await
    }

    pub async fn update_unit(
        &self,
        id: i64,
        update: &UnitUpdate,
        actor: &str,
    ) -> StoreResult<Unit> {
        let before = self.unit(id).await?;
        let mut after = before.clone();
        if let Some(name) = &update.name {
            after.name = name.clone();
        }
        if let Some(mailbox) = &update.mailbox {
            after.mailbox = mailbox.clone();
        }
        if let Some(sectors) = &update.sectors {
            after.sectors = sectors.clone();
        }
        let mut tx = self.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE units SET name = $1, mailbox = $2, sectors = $3, updated_at = $4 WHERE id = $5")
                .bind(&after.name)
                .bind(&after.mailbox)
                .bind(join_list(&after.sectors))
                .bind(Utc::now())
                .bind(id)
                .execute(conn)
                .await?;
        });
        let entry = AuditEntry::new(actor, "unit.updated", "unit", &after.code)
            .before(&before)
            .after(&after);
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(after)
    }

    pub async fn list_people(&self, f: &PersonFilter) -> StoreResult<(Vec<Person>, i64)> {
        let (start, end) = subtree_range(&f.scope_path);
        let role = f.role.map(|r| format!("%,{r},%"));
        let pattern = like_pattern(&f.query);
        let filter = "FROM people p JOIN units u ON u.id = p.unit_id \
             WHERE u.path >= $1 AND u.path < $2 AND ($3 IS NULL OR p.unit_id = $3) \
             AND ($4 IS NULL OR ',' || p.roles || ',' LIKE $4) \
             AND ($5 IS NULL OR p.name LIKE $5 ESCAPE '\\' OR p.email LIKE $5 ESCAPE '\\')";
        let (rows, total): (Vec<PersonRow>, i64) = with_db!(&self.db, |pool| {
            let rows = sqlx::query_as(&format!(
                "SELECT p.id, p.unit_id, p.name, p.roles, p.email, p.mobile {filter} \
                 ORDER BY u.path, p.id LIMIT $6 OFFSET $7"
            ))
            .bind(&start)
            .bind(&end)
            .bind(f.unit_id)
            .bind(&role)
            .bind(&pattern)
            .bind(f.limit)
            .bind(f.offset)
            .fetch_all(pool)
            .await?;
            let total = sqlx::query_scalar(&format!("SELECT COUNT(*) {filter}"))
                .bind(&start)
                .bind(&end)
                .bind(f.unit_id)
                .bind(&role)
                .bind(&pattern)
                .fetch_one(pool)
                .await?;
            (rows, total)
        });
        Ok((
            rows.into_iter()
                .map(Person::try_from)
                .collect::<Result<_, _>>()?,
            total,
        ))
    }

    pub async fn person(&self, id: i64) -> StoreResult<Person> {
        let row: Option<PersonRow> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!(
                "SELECT {PERSON_COLUMNS} FROM people WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or_else(|| StoreError::NotFound(format!("person {id}")))?
            .try_into()
    }

    pub async fn create_person(
        &self,
        unit: &Unit,
        p: &PersonUpdate,
        actor: &str,
    ) -> StoreResult<Person> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let id: i64 = with_tx!(&mut tx, |conn| {
            sqlx::query_scalar(
                "INSERT INTO people (unit_id, name, roles, email, mobile, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
            )
            .bind(unit.id)
            .bind(&p.name)
            .bind(join_list(&p.roles))
            .bind(&p.email)
            .bind(&p.mobile)
            .bind(now)
            .fetch_one(conn)
            .await
            .map_err(|e| {
                conflict_on_unique(e, || {
                    format!("{} already has a person named {}", unit.name, p.name)
                })
            })?
        });
        let person = Person {
            id,
            unit_id: unit.id,
            name: p.name.clone(),
            roles: p.roles.clone(),
            email: p.email.clone(),
            mobile: p.mobile.clone(),
        };
        let entry =
            AuditEntry::new(actor, "person.created", "person", &id.to_string()).after(&person);
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(person)
    }

    pub async fn update_person(
        &self,
        id: i64,
        p: &PersonUpdate,
        actor: &str,
    ) -> StoreResult<Person> {
        let before = self.person(id).await?;
        let after = Person {
            name: p.name.clone(),
            roles: p.roles.clone(),
            email: p.email.clone(),
            mobile: p.mobile.clone(),
            ..before.clone()
        };
        let mut tx = self.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE people SET name = $1, roles = $2, email = $3, mobile = $4, updated_at = $5 WHERE id = $6",
            )
            .bind(&after.name)
            .bind(join_list(&after.roles))
            .bind(&after.email)
            .bind(&after.mobile)
            .bind(Utc::now())
            .bind(id)
            .execute(conn)
            .await
            .map_err(|e| conflict_on_unique(e, || format!("the unit already has a person named {}", p.name)))?;
        });
        let entry = AuditEntry::new(actor, "person.updated", "person", &id.to_string())
            .before(&before)
            .after(&after);
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(after)
    }

    pub async fn delete_person(&self, id: i64, actor: &str) -> StoreResult<()> {
        let before = self.person(id).await?;
        let mut tx = self.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query("DELETE FROM people WHERE id = $1")
                .bind(id)
                .execute(conn)
                .await?;
        });
        let entry =
            AuditEntry::new(actor, "person.deleted", "person", &id.to_string()).before(&before);
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await
    }
}

/// Inserts units level by level, so that each batch's parents already exist for the
/// `parent_id` subquery.
async fn insert_units(tx: &mut Tx, units: &[UnitRecord]) -> StoreResult<()> {
    let now = Utc::now();
    let mut by_depth: Vec<&UnitRecord> = units.iter().collect();
    by_depth.sort_by_key(|u| u.path.matches('/').count());
    for depth_group in
        by_depth.chunk_by(|a, b| a.path.matches('/').count() == b.path.matches('/').count())
    {
        for chunk in depth_group.chunks(BATCH_ROWS) {
            with_tx!(&mut *tx, |conn| {
                let mut q = QueryBuilder::<Backend>::new(
                    "INSERT INTO units (code, name, level, parent_id, path, sectors, mailbox, created_at, updated_at) ",
                );
                q.push_values(chunk, |mut row, u| {
                    row.push_bind(&u.code)
                        .push_bind(&u.name)
                        .push_bind(u.level.as_str())
                        .push("(SELECT id FROM units WHERE code = ")
                        .push_bind_unseparated(&u.parent_code)
                        .push_unseparated(")")
                        .push_bind(&u.path)
                        .push_bind(join_list(&u.sectors))
                        .push_bind(&u.mailbox)
                        .push_bind(now)
                        .push_bind(now);
                });
                q.build().execute(conn).await.map_err(|e| {
                    conflict_on_unique(e, || "a unit code or path already exists".into())
                })?;
            });
        }
    }
    Ok(())
}

async fn update_unit_record(tx: &mut Tx, u: &UnitRecord) -> StoreResult<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE units SET name = $1, level = $2, parent_id = (SELECT id FROM units WHERE code = $3), \
             path = $4, sectors = $5, mailbox = $6, updated_at = $7 WHERE code = $8",
        )
        .bind(&u.name)
        .bind(u.level.as_str())
        .bind(&u.parent_code)
        .bind(&u.path)
        .bind(join_list(&u.sectors))
        .bind(&u.mailbox)
        .bind(Utc::now())
        .bind(&u.code)
        .execute(conn)
        .await?;
    });
    Ok(())
}

async fn insert_people(tx: &mut Tx, people: &[PersonRecord]) -> StoreResult<()> {
    let now = Utc::now();
    for chunk in people.chunks(BATCH_ROWS) {
        with_tx!(&mut *tx, |conn| {
            let mut q = QueryBuilder::<Backend>::new(
                "INSERT INTO people (unit_id, name, roles, email, mobile, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut row, p| {
                row.push("(SELECT id FROM units WHERE code = ")
                    .push_bind_unseparated(&p.unit_code)
                    .push_unseparated(")")
                    .push_bind(&p.name)
                    .push_bind(join_list(&p.roles))
                    .push_bind(&p.email)
                    .push_bind(&p.mobile)
                    .push_bind(now)
                    .push_bind(now);
            });
            q.build().execute(conn).await.map_err(|e| {
                conflict_on_unique(e, || {
                    "a person with this name already exists in the unit".into()
                })
            })?;
        });
    }
    Ok(())
}
