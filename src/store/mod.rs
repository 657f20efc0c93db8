//! Storage: one `Store` over SQLite or PostgreSQL, chosen from the database URL.
//!
//! Each query is written once, with `$n` placeholders that both drivers accept, and run
//! through [`with_db!`]/[`with_tx!`], which expand the same code once per driver. Each
//! expansion is type-checked against its own driver, so a type that one backend cannot encode
//! or decode fails to compile rather than at run time (the problem with sqlx's `Any`). Where
//! the dialects differ, the code branches on [`Store::backend`] explicitly. See
//! `docs/decisions.md` for why this replaced a trait with two implementations.

mod accounts;
mod attendance;
mod audit;
mod dispatches;
mod followups;
mod jobs;
mod notifications;
mod org;
mod overview;
mod reports;
mod roll_calls;
mod sqlite_writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};

pub use accounts::{AccountWithHash, NewAccount, StaffAccount};
pub use attendance::{Interval, WebhookRecord, is_participant_batch};
pub use audit::{AuditEntry, AuditEvent};
pub use dispatches::{
    DispatchRecord, InvitationView, JobSchedule, MeetingRecord, PublishDispatch, RsvpCounts,
    TimedMeeting, room_name,
};
pub use followups::{
    Assignee, AttachmentRecord, FollowupEvent, FollowupFilter, FollowupRecord, Grouping,
    NewActionItem, RollupRow, followup_message,
};
pub use jobs::{ClaimedJob, JobRecord, NewJob};
pub use notifications::{InvitationContext, NewNotification, NotificationRecord, Recipient};
pub use org::{DirectorySummary, PersonFilter, PersonUpdate, UnitFilter, UnitUpdate};
pub use overview::{HostedMeeting, PAGE_ROWS, UpcomingInvitation};
pub use reports::{Confirmation, ExpectedRow, ResultRow};
pub use roll_calls::RollCall;
pub use sqlite_writer::SqliteLedgerWriter;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// From the SQLite webhook writer's own connection (rusqlite).
    #[error("database error in the webhook writer: {0}")]
    Writer(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the driver's pool, once per backend; `Backend` names the
/// driver type inside the body.
macro_rules! with_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => {
                #[allow(unused)]
                type Backend = sqlx::Sqlite;
                $body
            }
            $crate::store::Db::Postgres($pool) => {
                #[allow(unused)]
                type Backend = sqlx::Postgres;
                $body
            }
        }
    };
}

/// As [`with_db!`] for an open transaction: `$conn` is the driver's connection.
macro_rules! with_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(tx) => {
                #[allow(unused)]
                type Backend = sqlx::Sqlite;
                let $conn = &mut **tx;
                $body
            }
            $crate::store::Tx::Postgres(tx) => {
                #[allow(unused)]
                type Backend = sqlx::Postgres;
                let $conn = &mut **tx;
                $body
            }
        }
    };
}
pub(crate) use {with_db, with_tx};

pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn commit(self) -> StoreResult<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
}

impl Store {
    /// Opens the database named by `url` (`sqlite://FILE`, `sqlite::memory:` or
    /// `postgres://…`). A missing SQLite file is created.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options)
                .await?;
            Db::Sqlite(pool)
        } else {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Db::Postgres(pool)
        };
        Ok(Self { db })
    }

    /// A store over one connection of its own to the same database, for a task that does
    /// all of one kind of writing (the webhook writer). SQLite keeps a connection's page
    /// cache only while no other connection writes, and a pool hands out its connections in
    /// turn, so a lone writer on the shared pool would re-read its pages on every
    /// transaction; on its own connection, with a larger cache, it mostly does not. Connects
    /// on first use.
    pub fn dedicated_writer(&self) -> Store {
        let db = match &self.db {
            Db::Sqlite(pool) => {
                // 64 MiB (SQLite's default is 2 MiB) holds the ledger's indexes at province
                // scale. (On a file, the SQLite writer's participant batches go through its
                // own connection, `SqliteLedgerWriter`; this one takes the rest.)
                let options = (*pool.connect_options())
                    .clone()
                    .pragma("cache_size", "-65536");
                Db::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        // A local file does not drop the connection; checking it first would
                        // cost a round trip to SQLite's thread on every transaction.
                        .test_before_acquire(false)
                        .connect_lazy_with(options),
                )
            }
            Db::Postgres(pool) => Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy_with((*pool.connect_options()).clone()),
            ),
        };
        Self { db }
    }

    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the migrations of this backend (`migrations/sqlite` or `migrations/postgres`).
    pub async fn migrate(&self) -> StoreResult<()> {
        match &self.db {
            Db::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// A round trip to the database, for readiness checks.
    pub async fn ping(&self) -> StoreResult<()> {
        with_db!(&self.db, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub(crate) async fn begin(&self) -> StoreResult<Tx> {
        Ok(match &self.db {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    pub async fn close(&self) {
        with_db!(&self.db, |pool| pool.close().await)
    }
}

/// Maps a unique-constraint violation to a conflict with a readable message.
pub(crate) fn conflict_on_unique(e: sqlx::Error, message: impl FnOnce() -> String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message()),
        _ => StoreError::Database(e),
    }
}
