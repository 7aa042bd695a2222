//! The durable journal: every received message is committed here before its sender is
//! acknowledged, then its processing trace and destination outboxes are recorded beside it.
//!
//! All writes go through one writer task ([`writer`]) that batches whatever is waiting into one
//! transaction: many messages per fsync (group commit) with `synchronous=FULL`, so an ACKed
//! message survives a crash or a power cut. Reads use a separate pool (WAL lets them run
//! while the writer commits).

mod checkpoint;
pub mod model;
pub mod read;
pub mod retention;
mod schema;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Executor, SqliteConnection};
use tokio::sync::oneshot;

use crate::crypto::Cipher;
pub use model::*;
pub use retention::{PrunePolicy, PruneReport};
use writer::Op;

/// The database file's name inside the data dir.
pub const DB_FILE: &str = "passerelle.db";

#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    ops: flume::Sender<Op>,
    read: SqlitePool,
    cipher: Arc<Cipher>,
    path: std::path::PathBuf,
}

/// The sqlite URL of the default database in a data dir.
pub fn default_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join(DB_FILE).display())
}

fn base_options(url: &str) -> Result<SqliteConnectOptions> {
    if url.starts_with("postgres") {
        return Err(anyhow!(
            "the journal runs on SQLite for now; PostgreSQL arrives with the store (use a sqlite:// URL)"
        ));
    }
    Ok(SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {url}"))?
        .busy_timeout(Duration::from_secs(10))
        .disable_statement_logging())
}

/// Readers leave the database's settings alone (they could not write them anyway).
fn read_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(base_options(url)?.read_only(true))
}

fn connect_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(base_options(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: the WAL is fsynced at every commit, so an ACK is never ahead of the disk.
        .synchronous(SqliteSynchronous::Full)
        // Incremental: retention can hand freed pages back to the file system.
        .auto_vacuum(SqliteAutoVacuum::Incremental)
        .foreign_keys(true))
}

/// Opens (and migrates) the database without starting the writer: for CLI commands.
pub async fn open_connection(url: &str) -> Result<SqliteConnection> {
    let mut conn = connect_options(url)?
        .connect()
        .await
        .context("opening the database")?;
    migrate(&mut conn).await?;
    Ok(conn)
}

async fn migrate(conn: &mut SqliteConnection) -> Result<()> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        let mut tx = conn.begin().await?;
        tx.execute(*sql)
            .await
            .with_context(|| format!("migration {}", index + 1))?;
        let bump = format!("PRAGMA user_version = {}", index + 1);
        tx.execute(sqlx::AssertSqlSafe(bump)).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The `meta` row holding a value sealed with the journal's key.
const KEY_CHECK: &str = "key_check";
/// What the key check value holds, and its associated data.
const KEY_CHECK_PLAIN: &[u8] = b"passerelle journal key check v1";

/// Refuses a key that is not the one this journal's messages are sealed with: started with it,
/// the engine would accept new messages while every earlier one failed to decrypt.
///
/// A new journal gets a check value sealed with the key. A journal from before check values
/// gets one if its oldest and newest messages open with the key; otherwise the key is refused.
async fn verify_key(conn: &mut SqliteConnection, cipher: &Cipher) -> Result<()> {
    let wrong_key = |what: &str| {
        anyhow!(
            "the encryption key does not match this journal ({what}); the key in use comes from \
             {}. Start with the key this journal was created with (PASSERELLE_KEY or \
             journal.key in the data directory)",
            cipher.origin()
        )
    };
    let check: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
        .bind(KEY_CHECK)
        .fetch_optional(&mut *conn)
        .await
        .context("reading the journal's key check")?;
    if let Some(check) = check {
        return match cipher.open(&check, KEY_CHECK_PLAIN) {
            Ok(plain) if plain == KEY_CHECK_PLAIN => Ok(()),
            _ => Err(wrong_key("its key check value does not decrypt")),
        };
    }
    let ends: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, raw FROM messages WHERE id IN \
         ((SELECT MIN(id) FROM messages), (SELECT MAX(id) FROM messages))",
    )
    .fetch_all(&mut *conn)
    .await
    .context("reading the journal's oldest and newest messages")?;
    for (id, raw) in ends {
        if cipher.open(&raw, &writer::raw_aad(id)).is_err() {
            return Err(wrong_key(&format!("message {id} does not decrypt")));
        }
    }
    sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?)")
        .bind(KEY_CHECK)
        .bind(cipher.seal(KEY_CHECK_PLAIN, KEY_CHECK_PLAIN))
        .execute(&mut *conn)
        .await
        .context("writing the journal's key check")?;
    Ok(())
}

/// An operation the writer has been given: [`Queued::committed`] waits for its commit.
pub struct Queued<T>(oneshot::Receiver<Result<T>>);

impl<T> Queued<T> {
    pub async fn committed(self) -> Result<T> {
        self.0
            .await
            .map_err(|_| anyhow!("journal writer stopped"))?
    }
}

impl Journal {
    pub async fn open(url: &str, cipher: Arc<Cipher>) -> Result<Journal> {
        let options = connect_options(url)?;
        let mut conn = options
            .clone()
            // Checkpoints are the background task's job (checkpoint.rs).
            .pragma("wal_autocheckpoint", "0")
            // After a checkpoint the log restarts from its beginning; a log file that grew
            // past 64 MiB during a burst is cut back then.
            .pragma("journal_size_limit", "67108864")
            .connect()
            .await
            .context("opening the journal")?;
        migrate(&mut conn).await?;
        verify_key(&mut conn, &cipher).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(read_options(url)?)
            .await?;
        let (ops, rx) = flume::bounded(8192);
        let path = options.get_filename().to_path_buf();
        writer::spawn(conn, rx, cipher.clone()).context("starting the journal writer")?;
        tokio::spawn(checkpoint::run(base_options(url)?));
        Ok(Journal {
            inner: Arc::new(Inner {
                ops,
                read,
                cipher,
                path,
            }),
        })
    }

    pub fn cipher(&self) -> &Cipher {
        &self.inner.cipher
    }

    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.inner.read
    }

    pub fn db_path(&self) -> &Path {
        &self.inner.path
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        self.queue(make).await?.committed().await
    }

    /// Hands an operation to the writer; returns once it is queued.
    async fn queue<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Op,
    ) -> Result<Queued<T>> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .ops
            .send_async(make(tx))
            .await
            .map_err(|_| anyhow!("journal writer stopped"))?;
        Ok(Queued(rx))
    }

    /// Commits a received message. Returns once it is on disk.
    pub async fn append(&self, message: NewMessage) -> Result<Appended> {
        self.call(|tx| Op::Append(Box::new(message), tx)).await
    }

    /// Queues a received message for the writer and returns at once, with the wait for its
    /// commit. Messages queued one after the other are journaled in that order, and those
    /// queued before the first wait share commits: a store source journals its batch of
    /// changes so, in order and without a commit each.
    pub async fn queue_append(&self, message: NewMessage) -> Result<Queued<Appended>> {
        self.queue(|tx| Op::Append(Box::new(message), tx)).await
    }

    /// Records a message's processing: status, trace steps and outbox entries, atomically.
    pub async fn record_processed(&self, processed: Processed) -> Result<()> {
        self.call(|tx| Op::Processed(Box::new(processed), tx)).await
    }

    /// Marks outbox entries as being delivered, so a crash mid-delivery is counted as a
    /// possible duplicate when they are sent again.
    pub async fn mark_inflight(&self, ids: Vec<i64>) -> Result<()> {
        self.call(|tx| Op::Inflight(ids, tx)).await
    }

    pub async fn record_deliveries(&self, deliveries: Vec<Delivery>) -> Result<()> {
        self.call(|tx| Op::Delivered(deliveries, tx)).await
    }

    /// Runs a message through its channel again. With `only_failed`, re-queues its dead-lettered
    /// deliveries instead. Returns the message's generation to process (if any).
    pub async fn reprocess(&self, id: i64, only_failed: bool) -> Result<Reprocessed> {
        self.call(|tx| Op::Reprocess {
            id,
            only_failed,
            reply: tx,
        })
        .await
    }

    /// Puts in-flight deliveries cut by a crash back in their queue; returns how many.
    pub async fn recover_inflight(&self) -> Result<u64> {
        self.call(Op::RecoverInflight).await
    }

    /// Deletes messages (with their trace and outbox rows).
    pub(crate) async fn delete(&self, ids: Vec<i64>) -> Result<u64> {
        self.call(|tx| Op::Delete(ids, tx)).await
    }

    /// Gives the pages freed by deletions back to the file system.
    pub(crate) async fn compact(&self) -> Result<()> {
        self.call(Op::Compact).await
    }

    /// Waits for the writer to finish what it was given (used at shutdown).
    pub async fn flush(&self) -> Result<()> {
        self.call(Op::Flush).await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reprocessed {
    /// The whole pipeline runs again as this generation.
    Rerun { channel: String, generation: i64 },
    /// Dead-lettered deliveries were queued again (count).
    Requeued { channel: String, count: u64 },
}

pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
