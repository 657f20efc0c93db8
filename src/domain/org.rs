//! The org directory: units of the administrative tree and the people in them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Level of a unit in the administrative tree, from the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Province,
    City,
    District,
    Enterprise,
}

impl Level {
    pub const ALL: [Level; 4] = [
        Level::Province,
        Level::City,
        Level::District,
        Level::Enterprise,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Province => "province",
            Level::City => "city",
            Level::District => "district",
            Level::Enterprise => "enterprise",
        }
    }

    /// Whether a unit of this level may sit directly under a unit of level `parent`.
    /// Levels may be skipped (an enterprise directly under a city), never reversed.
    pub fn may_sit_under(self, parent: Level) -> bool {
        parent < self && parent != Level::Enterprise
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!("unknown level {s:?} (expected province, city, district or enterprise)")
            })
    }
}

/// Closed vocabularies that templates and CSV files refer to by their snake_case names.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let known: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown {} {s:?} (expected one of: {})", $what, known.join(", "))
                })
            }
        }
    };
}

vocabulary!(
    /// Industry sector of an enterprise; a dispatch addresses one sector.
    Sector, "sector" {
        CoalMine = "coal_mine",
        NonCoalMine = "non_coal_mine",
        IndustryTrade = "industry_trade",
    }
);

vocabulary!(
    /// Role of a person in their unit, as agenda templates address them.
    PersonRole, "role" {
        Principal = "principal",
        Deputy = "deputy",
        SafetyHead = "safety_head",
        Supervisor = "supervisor",
        Liaison = "liaison",
    }
);

/// Parses a list written in one CSV cell or stored column: values separated by `;`, `,`,
/// `|`, `、` or whitespace.
pub fn parse_list<T: FromStr<Err = String>>(text: &str) -> Result<Vec<T>, String> {
    let mut out: Vec<T> = Vec::new();
    for part in text
        .split(|c: char| matches!(c, ';' | ',' | '|' | '、' | '；' | '，') || c.is_whitespace())
        .filter(|p| !p.is_empty())
    {
        out.push(part.parse()?);
    }
    Ok(out)
}

/// Stores a list the way [`parse_list`] reads it back.
pub fn join_list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A unit code: the administrative code of a region (GB/T 2260 style) or an enterprise's
/// identifier. Codes are the stable key of a unit and segments of its materialised path, so
/// they are restricted to ASCII letters, digits, `-` and `_`.
pub fn check_unit_code(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("code is empty".into());
    }
    if code.len() > 40 {
        return Err(format!("code {code:?} is longer than 40 characters"));
    }
    if let Some(c) = code
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "code {code:?} contains {c:?}; only letters, digits, '-' and '_' are allowed"
        ));
    }
    Ok(())
}

/// Materialised path of a unit: the codes from the root down, each followed by `/`, e.g.
/// `/130000/130200/`. Everything under a unit is every path that starts with its path.
pub fn child_path(parent_path: Option<&str>, code: &str) -> String {
    format!("{}{code}/", parent_path.unwrap_or("/"))
}

/// The half-open range `[start, end)` of paths in the subtree rooted at `path`, usable with
/// a plain B-tree index on both backends (unlike `LIKE`, which SQLite only indexes under
/// special pragmas). `/` is followed by `0` in byte order.
pub fn subtree_range(path: &str) -> (String, String) {
    let end = format!("{}0", path.strip_suffix('/').unwrap_or(path));
    (path.to_string(), end)
}

pub fn check_email(email: &str) -> Result<(), String> {
    if email_address::EmailAddress::is_valid(email) && email.contains('.') {
        Ok(())
    } else {
        Err(format!("invalid e-mail address {email:?}"))
    }
}

/// Mainland mobile numbers (11 digits starting with 1) or other numbers written with digits,
/// spaces, `+` and `-`.
pub fn check_phone(phone: &str) -> Result<(), String> {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    let allowed = phone
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' '));
    if allowed && (7..=15).contains(&digits) {
        Ok(())
    } else {
        Err(format!("invalid phone number {phone:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub id: i64,
    pub code: String,
    pub name: String,
    pub level: Level,
    pub parent_id: Option<i64>,
    pub path: String,
    pub sectors: Vec<Sector>,
    pub mailbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: i64,
    pub unit_id: i64,
    pub name: String,
    pub roles: Vec<PersonRole>,
    pub email: Option<String>,
    pub mobile: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_only_go_down() {
        assert!(Level::City.may_sit_under(Level::Province));
        assert!(Level::Enterprise.may_sit_under(Level::City));
        assert!(!Level::City.may_sit_under(Level::District));
        assert!(!Level::City.may_sit_under(Level::City));
        assert!(!Level::Enterprise.may_sit_under(Level::Enterprise));
    }

    #[test]
    fn subtree_range_covers_descendants_only() {
        let (start, end) = subtree_range("/130000/130200/");
        let inside = [
            "/130000/130200/",
            "/130000/130200/130202/",
            "/130000/130200/x/y/",
        ];
        let outside = [
            "/130000/",
            "/130000/1302001/",
            "/130000/130300/",
            "/130000/13020/",
        ];
        for p in inside {
            assert!(
                p >= start.as_str() && p < end.as_str(),
                "{p} should be inside"
            );
        }
        for p in outside {
            assert!(
                !(p >= start.as_str() && p < end.as_str()),
                "{p} should be outside"
            );
        }
    }

    #[test]
    fn lists_accept_common_separators() {
        let roles: Vec<PersonRole> = parse_list("principal;safety_head、deputy").unwrap();
        assert_eq!(
            roles,
            vec![
                PersonRole::Principal,
                PersonRole::SafetyHead,
                PersonRole::Deputy
            ]
        );
        assert!(
            parse_list::<Sector>("coal")
                .unwrap_err()
                .contains("unknown sector")
        );
    }

    #[test]
    fn codes_and_contacts_are_checked() {
        assert!(check_unit_code("130200").is_ok());
        assert!(check_unit_code("13/02").is_err());
        assert!(check_unit_code("").is_err());
        assert!(check_email("a@b.cn").is_ok());
        assert!(check_email("not-an-address").is_err());
        assert!(check_phone("13800138000").is_ok());
        assert!(check_phone("call me").is_err());
    }
}
