//! The SQLite webhook writer's own connection, through `rusqlite` instead of sqlx.
//!
//! sqlx runs every SQLite call on a worker thread of its own and answers over a channel:
//! each statement is two thread wake-ups, which on a small machine cost more than SQLite's
//! work for a batch of participant events (measured: 108 µs per one-event batch through
//! sqlx, of which SQLite's own transaction is about 40 µs). The writer thread calls SQLite
//! directly instead. Only the hot path lives here — participant joins and leaves, and kinds
//! muster ignores; room and recording events, which touch meetings and the job queue, go
//! through [`Store::apply_webhooks`]. The SQL is the same text (see `attendance.rs`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::attendance::{Deduped, is_participant_batch, record_events_sql, upsert_sql};
use super::{Db, Store, StoreError, StoreResult, WebhookRecord};
use crate::domain::attendance::merge_connections;

/// Distinct statements kept prepared: one dedupe insert and one upsert per batch size seen.
const PREPARED: usize = 128;

pub struct SqliteLedgerWriter {
    conn: Connection,
    /// Tells the checkpointer that the WAL has grown; dropped with the writer, which ends it.
    wal_grew: SyncSender<()>,
}

impl SqliteLedgerWriter {
    /// Opens a connection of its own to the store's database file; `None` when the store is
    /// not SQLite on a file (an in-memory database is private to each connection).
    pub fn open(store: &Store) -> StoreResult<Option<Self>> {
        let Db::Sqlite(pool) = &store.db else {
            return Ok(None);
        };
        let path = pool.connect_options().get_filename().to_path_buf();
        if !path.is_file() {
            return Ok(None);
        }
        Ok(Some(Self::open_file(&path)?))
    }

    fn open_file(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // As the pool's connections (WAL is a property of the file, set by the pool), plus the
        // writer's own: 64 MiB of page cache for the ledger's indexes, statement journals in
        // memory (a multi-row upsert would otherwise spill one to a temporary file per batch),
        // and no checkpoints of its own below ~160 MiB of WAL: the checkpointer thread copies
        // the WAL into the database meanwhile, so no batch waits for a checkpoint (one took up
        // to 40 ms, every few thousand batches).
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536; \
             PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 40000;",
        )?;
        conn.set_prepared_statement_cache_capacity(PREPARED);
        let checkpointer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        checkpointer.busy_timeout(Duration::from_secs(10))?;
        let (wal_grew, grown) = sync_channel(1);
        std::thread::Builder::new()
            .name("wal-checkpointer".into())
            .spawn(move || checkpoint_while_written(&checkpointer, &grown))
            .map_err(|e| StoreError::Writer(format!("starting the checkpointer: {e}")))?;
        Ok(Self { conn, wal_grew })
    }

    /// Applies a batch of participant events ([`is_participant_batch`]) in one transaction,
    /// as [`Store::apply_webhooks`] does: each event unless its id was seen before (in the
    /// database or earlier in the batch), the dedupe records and the ledger together or
    /// nothing. Every connection change is applied, also one whose event was seen before: the
    /// ledger's merge rules give the same row however often a change is applied. Returns, per
    /// event, whether it was new.
    pub fn apply(
        &mut self,
        events: &[WebhookRecord],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        if !is_participant_batch(events) {
            // A caller's mistake, answered as an error rather than a panic on the writer thread.
            return Err(StoreError::Writer(
                "room and recording events are applied through the pool, not here".into(),
            ));
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Deduped::new(events);
        let unique = &batch.unique;
        let connections = merge_connections(unique.iter().map(|e| &e.change));
        // Times as sqlx writes them, so that the upsert's text comparisons order them.
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, false);
        let received = time(now);

        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut inserted = HashSet::new();
        {
            let mut dedupe = tx.prepare_cached(&record_events_sql(unique.len(), 0, '?'))?;
            let mut n = 0;
            let mut bind = |value: &dyn rusqlite::ToSql| {
                n += 1;
                dedupe.raw_bind_parameter(n, value)
            };
            for e in unique {
                bind(&e.event_id)?;
                bind(&e.kind)?;
                bind(&e.change.room())?;
                bind(&received)?;
            }
            let mut rows = dedupe.raw_query();
            while let Some(row) = rows.next()? {
                inserted.insert(row.get::<_, String>(0)?);
            }
        }
        if !connections.is_empty() {
            let mut upsert = tx.prepare_cached(&upsert_sql(connections.len(), 0, '?'))?;
            let mut n = 0;
            let mut bind = |value: &dyn rusqlite::ToSql| {
                n += 1;
                upsert.raw_bind_parameter(n, value)
            };
            for c in &connections {
                // In the order `upsert_sql` numbers them.
                bind(&c.room)?;
                bind(&c.connection.sid)?;
                bind(&c.connection.identity)?;
                bind(&c.connection.name)?;
                bind(&c.connection.joined_at.map(time))?;
                bind(&c.left.map(|(at, _)| time(at)))?;
                bind(&c.left.map(|(_, reason)| reason.as_str()))?;
                bind(&"webhook")?;
                bind(&received)?;
                // Identities are invitation ids; anything else is a guest.
                bind(&c.connection.identity.parse::<i64>().ok())?;
            }
            upsert.raw_execute()?;
        }
        tx.commit()?;
        // Full means a checkpoint is already due.
        let _ = self.wal_grew.try_send(());
        Ok(batch.fresh(&inserted))
    }
}

/// Checkpoints the WAL (passively: never waiting for, nor holding up, the writer or readers)
/// a little after each time the writer has committed, until the writer is gone.
fn checkpoint_while_written(conn: &Connection, grown: &Receiver<()>) {
    /// Batches committed meanwhile share one checkpoint.
    const GATHER: Duration = Duration::from_millis(100);
    while grown.recv().is_ok() {
        std::thread::sleep(GATHER);
        while grown.try_recv().is_ok() {}
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            // The writer's own checkpoint at its limit still bounds the WAL.
            tracing::warn!(error = %e, "a WAL checkpoint failed");
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Writer(e.to_string())
    }
}
