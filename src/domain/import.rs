//! CSV import of the org directory, as pure functions: text in, a change set or the complete
//! list of bad rows out. Applying the change set is the store's job, in one transaction.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::org::{
    Level, PersonRole, Sector, check_email, check_phone, check_unit_code, child_path, parse_list,
};

/// Text encodings a directory file may arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TextEncoding {
    Utf8,
    Utf8Bom,
    /// GBK as written by spreadsheet programs on Chinese Windows (decoded as GB 18030, its
    /// superset).
    Gbk,
}

/// Decodes a file: UTF-8 with or without BOM, otherwise GBK.
pub fn decode_text(bytes: &[u8]) -> Result<(String, TextEncoding), String> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        let text = std::str::from_utf8(rest)
            .map_err(|e| format!("file starts with a UTF-8 BOM but is not UTF-8: {e}"))?;
        return Ok((text.to_string(), TextEncoding::Utf8Bom));
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok((text.to_string(), TextEncoding::Utf8));
    }
    let (text, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(bytes);
    if had_errors {
        return Err("file is neither UTF-8 nor GBK".into());
    }
    Ok((text.into_owned(), TextEncoding::Gbk))
}

/// One rejected row: its line in the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    File(String),
    #[error("{} bad row(s); nothing was imported", .0.len())]
    Rows(Vec<RowError>),
}

/// A unit as the directory holds it (or will hold it after the import).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitRecord {
    pub code: String,
    pub name: String,
    pub level: Level,
    pub parent_code: Option<String>,
    pub path: String,
    pub sectors: Vec<Sector>,
    pub mailbox: Option<String>,
}

/// A person as the directory holds it. People are keyed by unit and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersonRecord {
    pub unit_code: String,
    pub name: String,
    pub roles: Vec<PersonRole>,
    pub email: Option<String>,
    pub mobile: Option<String>,
}

/// What an import will write. Inserted units are ordered parents first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet<T> {
    pub inserts: Vec<T>,
    /// (before, after)
    pub updates: Vec<(T, T)>,
    pub unchanged: usize,
}

impl<T> Default for ChangeSet<T> {
    fn default() -> Self {
        Self {
            inserts: Vec::new(),
            updates: Vec::new(),
            unchanged: 0,
        }
    }
}

impl<T> ChangeSet<T> {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.updates.is_empty()
    }
}

const UNIT_COLUMNS: &[(&str, &[&str])] = &[
    ("code", &["编码", "代码", "单位编码"]),
    ("name", &["名称", "单位名称"]),
    ("level", &["层级", "级别"]),
    ("parent_code", &["上级编码", "上级代码"]),
    ("sectors", &["行业"]),
    ("mailbox", &["邮箱", "电子邮箱"]),
];

const PERSON_COLUMNS: &[(&str, &[&str])] = &[
    ("unit_code", &["单位编码", "单位代码"]),
    ("name", &["姓名"]),
    ("roles", &["角色", "职务"]),
    ("email", &["邮箱", "电子邮箱"]),
    ("mobile", &["手机", "手机号", "电话"]),
];

/// A CSV file read into rows of named cells, each with its line number.
struct Table {
    rows: Vec<(u64, HashMap<&'static str, String>)>,
}

fn read_table(
    text: &str,
    columns: &[(&'static str, &[&str])],
    required: &[&str],
) -> Result<Table, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ImportError::File(format!("cannot read the header line: {e}")))?
        .clone();
    let mut index: Vec<(usize, &'static str)> = Vec::new();
    for (i, header) in headers.iter().enumerate() {
        let header = header.trim().to_lowercase();
        match columns
            .iter()
            .find(|(name, aliases)| *name == header || aliases.contains(&header.as_str()))
        {
            Some((name, _)) => index.push((i, name)),
            None if header.is_empty() => {}
            None => {
                let known: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
                return Err(ImportError::File(format!(
                    "line 1: unknown column {header:?} (expected: {})",
                    known.join(", ")
                )));
            }
        }
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| !index.iter().any(|(_, n)| n == r))
        .collect();
    if !missing.is_empty() {
        return Err(ImportError::File(format!(
            "line 1: missing column(s) {}",
            missing.join(", ")
        )));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) => {
                let line = record.position().map(|p| p.line()).unwrap_or(0);
                if record.iter().all(str::is_empty) {
                    continue;
                }
                let cells = index
                    .iter()
                    .map(|(i, name)| (*name, record.get(*i).unwrap_or("").to_string()))
                    .collect();
                rows.push((line, cells));
            }
            Err(e) => errors.push(RowError {
                line: e.position().map(|p| p.line()).unwrap_or(0),
                message: format!("unreadable row: {e}"),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ImportError::Rows(errors));
    }
    Ok(Table { rows })
}

fn optional(cells: &HashMap<&str, String>, key: &str) -> Option<String> {
    cells.get(key).filter(|v| !v.is_empty()).cloned()
}

/// Collects every problem of a row rather than stopping at the first.
struct RowCheck<'a> {
    line: u64,
    errors: &'a mut Vec<RowError>,
    ok: bool,
}

impl RowCheck<'_> {
    fn fail(&mut self, message: impl Into<String>) {
        self.ok = false;
        self.errors.push(RowError {
            line: self.line,
            message: message.into(),
        });
    }
    fn check<T>(&mut self, result: Result<T, String>) -> Option<T> {
        result.map_err(|e| self.fail(e)).ok()
    }
}

fn level_alias(text: &str) -> Result<Level, String> {
    match text {
        "省" | "省级" => Ok(Level::Province),
        "市" | "市级" => Ok(Level::City),
        "县" | "区" | "区县" | "县级" => Ok(Level::District),
        "企业" => Ok(Level::Enterprise),
        other => other.to_lowercase().parse(),
    }
}

fn sector_aliases(text: &str) -> Result<Vec<Sector>, String> {
    let replaced = text
        .replace("非煤矿山", "non_coal_mine")
        .replace("煤矿", "coal_mine")
        .replace("工贸", "industry_trade");
    parse_list(&replaced)
}

/// Plans a units import against the current directory. Units not in the file are left alone.
pub fn plan_units(
    text: &str,
    existing: &[UnitRecord],
) -> Result<ChangeSet<UnitRecord>, ImportError> {
    let table = read_table(text, UNIT_COLUMNS, &["code", "name", "level"])?;
    let mut errors = Vec::new();
    // Final state of every unit: the directory overlaid with the file. Paths are recomputed
    // below, so a moved unit carries its subtree along.
    let mut merged: HashMap<String, UnitRecord> = existing
        .iter()
        .map(|u| (u.code.clone(), u.clone()))
        .collect();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut file_rows: Vec<(u64, String)> = Vec::new();

    let file_codes: HashSet<&str> = table.rows.iter().map(|(_, c)| c["code"].as_str()).collect();
    for (line, cells) in &table.rows {
        let mut row = RowCheck {
            line: *line,
            errors: &mut errors,
            ok: true,
        };
        let code = cells["code"].clone();
        row.check(check_unit_code(&code));
        if let Some(first) = seen.get(&code) {
            row.fail(format!("duplicate code {code:?} (first on line {first})"));
        }
        let name = cells["name"].clone();
        if name.is_empty() {
            row.fail("name is empty");
        }
        let level = row.check(level_alias(&cells["level"]));
        let parent_code = optional(cells, "parent_code");
        let sectors = row
            .check(sector_aliases(
                cells.get("sectors").map_or("", String::as_str),
            ))
            .unwrap_or_default();
        let mailbox = optional(cells, "mailbox");
        if let Some(m) = &mailbox {
            row.check(check_email(m));
        }
        match level {
            Some(Level::Enterprise) if sectors.is_empty() => {
                row.fail("an enterprise needs at least one sector (coal_mine, non_coal_mine, industry_trade)")
            }
            Some(l) if l != Level::Enterprise && !sectors.is_empty() => {
                row.fail(format!("only enterprises have sectors, this unit is a {l}"))
            }
            Some(Level::Province) if parent_code.is_some() => {
                row.fail("a province has no parent_code")
            }
            Some(l) if l != Level::Province && parent_code.is_none() => {
                row.fail(format!("parent_code is empty; a {l} needs the code of its parent unit"))
            }
            _ => {}
        }
        if parent_code.as_deref() == Some(code.as_str()) {
            row.fail("a unit cannot be its own parent");
        } else if let Some(parent) = &parent_code
            && !file_codes.contains(parent.as_str())
            && !merged.contains_key(parent)
        {
            row.fail(format!(
                "unknown parent_code {parent:?}: no such unit in the file or the directory"
            ));
        }
        if row.ok {
            seen.insert(code.clone(), *line);
            file_rows.push((*line, code.clone()));
            merged.insert(
                code.clone(),
                UnitRecord {
                    code,
                    name,
                    level: level.expect("checked"),
                    parent_code,
                    path: String::new(),
                    sectors,
                    mailbox,
                },
            );
        } else {
            seen.entry(code).or_insert(*line);
        }
    }

    // Parent relations, checked on the final state for every row of the file and for every
    // unit already stored under a unit the file changes.
    let line_of: HashMap<&str, u64> = file_rows.iter().map(|(l, c)| (c.as_str(), *l)).collect();
    for unit in merged.values() {
        let Some(parent_code) = &unit.parent_code else {
            continue;
        };
        let parent_line = line_of.get(parent_code.as_str());
        let Some(line) = line_of.get(unit.code.as_str()).or(parent_line) else {
            continue;
        };
        match merged.get(parent_code) {
            // An unknown parent was reported with the row; a parent whose own row is bad is
            // reported there.
            None => {}
            Some(parent) if !unit.level.may_sit_under(parent.level) => errors.push(RowError {
                line: *line,
                message: format!(
                    "unit {} ({}) cannot sit under unit {} ({}): levels go province > city > district > enterprise",
                    unit.code, unit.level, parent.code, parent.level
                ),
            }),
            Some(_) => {}
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        errors.dedup();
        return Err(ImportError::Rows(errors));
    }

    // Levels strictly descend along every parent link (checked above), so walking up
    // always ends at a root: no cycles.
    let mut paths: HashMap<String, String> = HashMap::new();
    let codes: Vec<String> = merged.keys().cloned().collect();
    for code in &codes {
        resolve_path(code, &merged, &mut paths);
    }
    let before: HashMap<&str, &UnitRecord> =
        existing.iter().map(|u| (u.code.as_str(), u)).collect();
    let mut changes = ChangeSet::default();
    let mut ordered: Vec<UnitRecord> = merged
        .into_values()
        .map(|mut u| {
            u.path = paths.remove(&u.code).expect("every path resolved");
            u
        })
        .collect();
    ordered.sort_by(|a, b| {
        (a.path.matches('/').count(), &a.path).cmp(&(b.path.matches('/').count(), &b.path))
    });
    for unit in ordered {
        match before.get(unit.code.as_str()) {
            None => changes.inserts.push(unit),
            Some(old) if **old == unit => {
                if line_of.contains_key(unit.code.as_str()) {
                    changes.unchanged += 1;
                }
            }
            Some(old) => changes.updates.push(((*old).clone(), unit)),
        }
    }
    Ok(changes)
}

fn resolve_path(
    code: &str,
    units: &HashMap<String, UnitRecord>,
    paths: &mut HashMap<String, String>,
) -> String {
    if let Some(p) = paths.get(code) {
        return p.clone();
    }
    let unit = &units[code];
    let parent_path = unit
        .parent_code
        .as_deref()
        .map(|parent| resolve_path(parent, units, paths));
    let path = child_path(parent_path.as_deref(), code);
    paths.insert(code.to_string(), path.clone());
    path
}

/// Plans a people import. `units` maps unit codes known to the directory to their level.
pub fn plan_people(
    text: &str,
    unit_codes: &HashSet<String>,
    existing: &[PersonRecord],
) -> Result<ChangeSet<PersonRecord>, ImportError> {
    let table = read_table(text, PERSON_COLUMNS, &["unit_code", "name", "roles"])?;
    let mut errors = Vec::new();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut rows: Vec<PersonRecord> = Vec::new();
    for (line, cells) in &table.rows {
        let mut row = RowCheck {
            line: *line,
            errors: &mut errors,
            ok: true,
        };
        let unit_code = cells["unit_code"].clone();
        if unit_code.is_empty() {
            row.fail("unit_code is empty");
        } else if !unit_codes.contains(&unit_code) {
            row.fail(format!(
                "unknown unit_code {unit_code:?}: import the unit first"
            ));
        }
        let name = cells["name"].clone();
        if name.is_empty() {
            row.fail("name is empty");
        }
        let key = (unit_code.clone(), name.clone());
        if let Some(first) = seen.get(&key) {
            row.fail(format!(
                "duplicate person {name:?} in unit {unit_code:?} (first on line {first})"
            ));
        } else {
            seen.insert(key, *line);
        }
        let roles: Vec<PersonRole> = row
            .check(parse_list(&cells["roles"].to_lowercase()))
            .unwrap_or_default();
        if roles.is_empty() && row.ok {
            row.fail("roles is empty; give at least one role (principal, deputy, safety_head, supervisor, liaison)");
        }
        let email = optional(cells, "email");
        if let Some(e) = &email {
            row.check(check_email(e));
        }
        let mobile = optional(cells, "mobile");
        if let Some(m) = &mobile {
            row.check(check_phone(m));
        }
        if row.ok {
            rows.push(PersonRecord {
                unit_code,
                name,
                roles,
                email,
                mobile,
            });
        }
    }
    if !errors.is_empty() {
        return Err(ImportError::Rows(errors));
    }
    let before: HashMap<(&str, &str), &PersonRecord> = existing
        .iter()
        .map(|p| ((p.unit_code.as_str(), p.name.as_str()), p))
        .collect();
    let mut changes = ChangeSet::default();
    for person in rows {
        match before.get(&(person.unit_code.as_str(), person.name.as_str())) {
            None => changes.inserts.push(person),
            Some(old) if **old == person => changes.unchanged += 1,
            Some(old) => changes.updates.push(((*old).clone(), person)),
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: &str = "code,name,level,parent_code,sectors,mailbox\n\
        130000,河北省,province,,,yjt@he.gov.cn\n\
        130200,唐山市,city,130000,,\n\
        130202,路南区,district,130200,,\n\
        E1,开滦煤矿,enterprise,130202,coal_mine,\n";

    #[test]
    fn plans_inserts_parents_first_with_paths() {
        let changes = plan_units(UNITS, &[]).unwrap();
        let paths: Vec<&str> = changes.inserts.iter().map(|u| u.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/130000/",
                "/130000/130200/",
                "/130000/130200/130202/",
                "/130000/130200/130202/E1/"
            ]
        );
        assert_eq!(changes.inserts[3].sectors, vec![Sector::CoalMine]);
    }

    #[test]
    fn reimport_is_unchanged_and_a_move_carries_the_subtree() {
        let existing = plan_units(UNITS, &[]).unwrap().inserts;
        let again = plan_units(UNITS, &existing).unwrap();
        assert!(again.is_empty());
        assert_eq!(again.unchanged, 4);

        let moved = "code,name,level,parent_code\n130300,秦皇岛市,city,130000\n130202,路南区,district,130300\n";
        let changes = plan_units(moved, &existing).unwrap();
        assert_eq!(changes.inserts.len(), 1);
        let updated: Vec<(&str, &str)> = changes
            .updates
            .iter()
            .map(|(_, after)| (after.code.as_str(), after.path.as_str()))
            .collect();
        assert_eq!(
            updated,
            [
                ("130202", "/130000/130300/130202/"),
                ("E1", "/130000/130300/130202/E1/")
            ]
        );
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let text = "code,name,level,parent_code,sectors,mailbox\n\
            130000,河北省,province,,,\n\
            130200,唐山市,town,130000,,\n\
            130300,,city,130000,,not-mail\n\
            130300,秦皇岛市,city,999999,,\n\
            E1,开滦,enterprise,130000,,\n";
        let Err(ImportError::Rows(errors)) = plan_units(text, &[]) else {
            panic!("expected row errors");
        };
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 4, 5, 5, 6]);
        assert!(errors[0].message.contains("unknown level \"town\""));
        assert!(errors.iter().any(|e| {
            e.message
                .contains("duplicate code \"130300\" (first on line 4)")
        }));
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("unknown parent_code \"999999\""))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.line == 6 && e.message.contains("at least one sector"))
        );
    }

    #[test]
    fn a_level_change_that_strands_children_is_refused() {
        let existing = plan_units(UNITS, &[]).unwrap().inserts;
        let text =
            "code,name,level,parent_code,sectors\n130202,路南区,enterprise,130200,coal_mine\n";
        let Err(ImportError::Rows(errors)) = plan_units(text, &existing) else {
            panic!("expected row errors");
        };
        assert_eq!(errors[0].line, 2);
        assert!(
            errors[0]
                .message
                .contains("cannot sit under unit 130202 (enterprise)"),
            "{errors:?}"
        );
    }

    #[test]
    fn gbk_and_bom_are_decoded() {
        let (gbk, _, _) = encoding_rs::GBK.encode("编码,名称\n130000,河北省\n");
        assert_eq!(
            decode_text(&gbk).unwrap(),
            ("编码,名称\n130000,河北省\n".into(), TextEncoding::Gbk)
        );
        let bom = [b"\xEF\xBB\xBF".as_slice(), "code\n".as_bytes()].concat();
        assert_eq!(decode_text(&bom).unwrap().1, TextEncoding::Utf8Bom);
    }

    #[test]
    fn people_are_keyed_by_unit_and_name() {
        let units: HashSet<String> = ["E1".to_string()].into();
        let text = "unit_code,name,roles,email,mobile\n\
            E1,张伟,principal;safety_head,zw@example.cn,13800138000\n\
            E1,张伟,deputy,,\n\
            E9,李娜,principal,bad,12\n";
        let Err(ImportError::Rows(errors)) = plan_people(text, &units, &[]) else {
            panic!("expected row errors");
        };
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 4, 4]);
        let ok = "unit_code,name,roles,email\nE1,张伟,principal,zw@example.cn\n";
        let first = plan_people(ok, &units, &[]).unwrap();
        let again = plan_people(ok, &units, &first.inserts).unwrap();
        assert!(again.is_empty());
    }
}
