//! Staff accounts, login sessions and API tokens. Secrets are stored as hashes only.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audit::AuditEntry;
use super::{Store, StoreError, StoreResult, conflict_on_unique, with_db, with_tx};
use crate::domain::access::{Principal, StaffRole};

#[derive(Debug, Clone, Serialize)]
pub struct StaffAccount {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: StaffRole,
    pub unit_id: i64,
    pub unit_name: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// An account with its password hash, for checking a login.
#[derive(Debug, Clone)]
pub struct AccountWithHash {
    pub account: StaffAccount,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: StaffRole,
    pub unit_id: i64,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: i64,
    username: String,
    display_name: String,
    role: String,
    unit_id: i64,
    unit_name: String,
    unit_path: String,
    disabled: bool,
    created_at: DateTime<Utc>,
    password_hash: String,
}

impl AccountRow {
    fn account(&self) -> StoreResult<StaffAccount> {
        Ok(StaffAccount {
            id: self.id,
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            role: self.role.parse().map_err(StoreError::Corrupt)?,
            unit_id: self.unit_id,
            unit_name: self.unit_name.clone(),
            disabled: self.disabled,
            created_at: self.created_at,
        })
    }

    fn principal(&self) -> StoreResult<Principal> {
        Ok(Principal {
            account_id: self.id,
            username: self.username.clone(),
            role: self.role.parse().map_err(StoreError::Corrupt)?,
            unit_id: self.unit_id,
            unit_name: self.unit_name.clone(),
            unit_path: self.unit_path.clone(),
        })
    }
}

const ACCOUNT_SELECT: &str = "SELECT a.id, a.username, a.display_name, a.role, a.unit_id, \
     u.name AS unit_name, u.path AS unit_path, a.disabled, a.created_at, a.password_hash \
     FROM staff_accounts a JOIN units u ON u.id = a.unit_id";

impl Store {
    pub async fn create_account(&self, new: &NewAccount, actor: &str) -> StoreResult<StaffAccount> {
        let mut tx = self.begin().await?;
        let id: i64 = with_tx!(&mut tx, |conn| {
            sqlx::query_scalar(
                "INSERT INTO staff_accounts (username, display_name, password_hash, role, unit_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&new.username)
            .bind(&new.display_name)
            .bind(&new.password_hash)
            .bind(new.role.as_str())
            .bind(new.unit_id)
            .bind(Utc::now())
            .fetch_one(conn)
            .await
            .map_err(|e| conflict_on_unique(e, || format!("username {:?} is taken", new.username)))?
        });
        let entry = AuditEntry::new(actor, "account.created", "account", &new.username).after(
            &serde_json::json!({"username": new.username, "role": new.role, "unit_id": new.unit_id}),
        );
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        self.account(id).await
    }

    pub async fn account(&self, id: i64) -> StoreResult<StaffAccount> {
        self.account_row(AccountKey::Id(id)).await?.account()
    }

    pub async fn account_by_username(&self, username: &str) -> StoreResult<AccountWithHash> {
        let row = self.account_row(AccountKey::Username(username)).await?;
        Ok(AccountWithHash {
            account: row.account()?,
            password_hash: row.password_hash,
        })
    }

    async fn account_row(&self, key: AccountKey<'_>) -> StoreResult<AccountRow> {
        let row: Option<AccountRow> = match key {
            AccountKey::Id(id) => with_db!(&self.db, |pool| {
                sqlx::query_as(&format!("{ACCOUNT_SELECT} WHERE a.id = $1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?
            }),
            AccountKey::Username(name) => with_db!(&self.db, |pool| {
                sqlx::query_as(&format!("{ACCOUNT_SELECT} WHERE a.username = $1"))
                    .bind(name)
                    .fetch_optional(pool)
                    .await?
            }),
        };
        row.ok_or_else(|| match key {
            AccountKey::Id(id) => StoreError::NotFound(format!("account {id}")),
            AccountKey::Username(name) => StoreError::NotFound(format!("account {name:?}")),
        })
    }

    pub async fn list_accounts(&self) -> StoreResult<Vec<StaffAccount>> {
        let rows: Vec<AccountRow> = with_db!(&self.db, |pool| {
            sqlx::query_as(&format!("{ACCOUNT_SELECT} ORDER BY a.username"))
                .fetch_all(pool)
                .await?
        });
        rows.iter().map(AccountRow::account).collect()
    }

    /// Disables (or re-enables) an account; disabling also ends its sessions and revokes its
    /// API tokens.
    pub async fn set_account_disabled(
        &self,
        username: &str,
        disabled: bool,
        actor: &str,
    ) -> StoreResult<StaffAccount> {
        let before = self.account_by_username(username).await?.account;
        let mut tx = self.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE staff_accounts SET disabled = $1 WHERE id = $2")
                .bind(disabled)
                .bind(before.id)
                .execute(&mut *conn)
                .await?;
            if disabled {
                sqlx::query("DELETE FROM sessions WHERE account_id = $1")
                    .bind(before.id)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("UPDATE api_tokens SET revoked = TRUE WHERE account_id = $1")
                    .bind(before.id)
                    .execute(&mut *conn)
                    .await?;
            }
        });
        let action = if disabled {
            "account.disabled"
        } else {
            "account.enabled"
        };
        let entry = AuditEntry::new(actor, action, "account", username)
            .before(&serde_json::json!({"disabled": before.disabled}))
            .after(&serde_json::json!({"disabled": disabled}));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(StaffAccount { disabled, ..before })
    }

    pub async fn create_session(
        &self,
        token_hash: &str,
        account_id: i64,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        with_db!(&self.db, |pool| {
            sqlx::query("INSERT INTO sessions (token_hash, account_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(token_hash)
                .bind(account_id)
                .bind(Utc::now())
                .bind(expires_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The principal of a live session of an enabled account.
    pub async fn session_principal(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Principal>> {
        let sql = format!(
            "{ACCOUNT_SELECT} JOIN sessions s ON s.account_id = a.id \
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND NOT a.disabled"
        );
        let row: Option<AccountRow> = with_db!(&self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(token_hash)
                .bind(now)
                .fetch_optional(pool)
                .await?
        });
        row.map(|r| r.principal()).transpose()
    }

    pub async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        with_db!(&self.db, |pool| {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1 OR expires_at < $2")
                .bind(token_hash)
                .bind(Utc::now())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn create_api_token(
        &self,
        account_id: i64,
        name: &str,
        token_hash: &str,
        actor: &str,
    ) -> StoreResult<i64> {
        let mut tx = self.begin().await?;
        let id: i64 = with_tx!(&mut tx, |conn| {
            sqlx::query_scalar(
                "INSERT INTO api_tokens (account_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(account_id)
            .bind(name)
            .bind(token_hash)
            .bind(Utc::now())
            .fetch_one(conn)
            .await?
        });
        let entry = AuditEntry::new(
            actor,
            "api_token.created",
            "account",
            &account_id.to_string(),
        )
        .after(&serde_json::json!({"token_id": id, "name": name}));
        Store::append_audit_tx(&mut tx, &[entry]).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The principal behind an API token that is not revoked, of an enabled account.
    pub async fn token_principal(&self, token_hash: &str) -> StoreResult<Option<Principal>> {
        let sql = format!(
            "{ACCOUNT_SELECT} JOIN api_tokens t ON t.account_id = a.id \
             WHERE t.token_hash = $1 AND NOT t.revoked AND NOT a.disabled"
        );
        let row: Option<AccountRow> = with_db!(&self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(token_hash)
                .fetch_optional(pool)
                .await?
        });
        row.map(|r| r.principal()).transpose()
    }
}

#[derive(Clone, Copy)]
enum AccountKey<'a> {
    Id(i64),
    Username(&'a str),
}
