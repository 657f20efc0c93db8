//! Who may see and change what. Every staff account is bound to a unit and acts on that
//! unit's subtree only; the checks here are the single place that rule lives.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// Manages accounts and the directory of its subtree.
    Admin,
    /// Convenes dispatches (provincial staff).
    Convener,
    /// A city or district bureau: confirms attendance, relays calls, works follow-ups.
    Bureau,
    /// Reads everything in its subtree, changes nothing.
    Leader,
}

impl StaffRole {
    pub const ALL: [StaffRole; 4] = [
        StaffRole::Admin,
        StaffRole::Convener,
        StaffRole::Bureau,
        StaffRole::Leader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Admin => "admin",
            StaffRole::Convener => "convener",
            StaffRole::Bureau => "bureau",
            StaffRole::Leader => "leader",
        }
    }

    pub fn may_write(self) -> bool {
        !matches!(self, StaffRole::Leader)
    }
}

impl fmt::Display for StaffRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StaffRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StaffRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown staff role {s:?} (expected admin, convener, bureau or leader)")
            })
    }
}

/// The signed-in staff member on whose behalf a request runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub account_id: i64,
    pub username: String,
    pub role: StaffRole,
    pub unit_id: i64,
    pub unit_name: String,
    /// Materialised path of the account's unit; its scope is every path under it.
    pub unit_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{unit} is outside the scope of your account (bound to {scope})")]
    OutsideScope { unit: String, scope: String },
    #[error("your role `{0}` may read but not change anything")]
    ReadOnly(StaffRole),
    #[error("this needs the `{needed}` role; your account has `{has}`")]
    Role { needed: StaffRole, has: StaffRole },
}

impl Principal {
    pub fn can_read(&self, unit_path: &str) -> bool {
        unit_path.starts_with(&self.unit_path)
    }

    /// Reading a unit (or anything attached to it) needs the unit inside the scope.
    pub fn require_read(&self, unit_path: &str, unit_name: &str) -> Result<(), Denied> {
        if self.can_read(unit_path) {
            Ok(())
        } else {
            Err(self.outside(unit_name))
        }
    }

    /// Changing a unit needs a writing role and the unit inside the scope.
    pub fn require_write(&self, unit_path: &str, unit_name: &str) -> Result<(), Denied> {
        if !self.role.may_write() {
            return Err(Denied::ReadOnly(self.role));
        }
        self.require_read(unit_path, unit_name)
    }

    pub fn require_role(&self, needed: StaffRole) -> Result<(), Denied> {
        if self.role == needed {
            Ok(())
        } else {
            Err(Denied::Role {
                needed,
                has: self.role,
            })
        }
    }

    fn outside(&self, unit_name: &str) -> Denied {
        Denied::OutsideScope {
            unit: unit_name.to_string(),
            scope: self.unit_name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: StaffRole, path: &str) -> Principal {
        Principal {
            account_id: 1,
            username: "u".into(),
            role,
            unit_id: 1,
            unit_name: "唐山市".into(),
            unit_path: path.into(),
        }
    }

    #[test]
    fn bureau_reads_and_writes_its_subtree_only() {
        let tangshan = principal(StaffRole::Bureau, "/130000/130200/");
        assert!(
            tangshan
                .require_read("/130000/130200/130202/", "路南区")
                .is_ok()
        );
        assert!(tangshan.require_write("/130000/130200/", "唐山市").is_ok());
        assert!(matches!(
            tangshan.require_read("/130000/130600/", "保定市"),
            Err(Denied::OutsideScope { .. })
        ));
        assert!(tangshan.require_read("/130000/", "河北省").is_err());
    }

    #[test]
    fn leader_reads_everything_and_writes_nothing() {
        let leader = principal(StaffRole::Leader, "/130000/");
        assert!(leader.require_read("/130000/130600/", "保定市").is_ok());
        assert_eq!(
            leader.require_write("/130000/130600/", "保定市"),
            Err(Denied::ReadOnly(StaffRole::Leader))
        );
    }
}
