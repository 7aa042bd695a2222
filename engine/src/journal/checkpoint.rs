//! Copies the write-ahead log back into the database file, off the commit path.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses the threshold: that
//! commit (and every ACK waiting on it) pays for copying thousands of pages and an extra
//! fsync of the database file. The writer turns it off and this task, on a connection of its
//! own, checkpoints in the background; in WAL mode that does not block the writer.

use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// How often the log is copied back.
const INTERVAL: Duration = Duration::from_millis(250);
/// Under a load that never pauses, a passive checkpoint never catches up with the writer and
/// the log is never restarted: it would grow without bound. Once it holds more than this
/// (pages of 4 KiB: 16 MiB), the passive pass that just ran has copied nearly all of it, and a
/// restarting checkpoint finishes the rest in a few milliseconds, during which the writer
/// waits.
const MAX_WAL_PAGES: i64 = 4_096;

pub(super) async fn run(options: SqliteConnectOptions) {
    let mut conn = match options.connect().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "journal checkpointer cannot start; the log will grow");
            return;
        }
    };
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Columns: busy, pages in the log, pages copied back.
        let result: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut conn)
            .await;
        match result {
            Ok((_, log, _)) if log > MAX_WAL_PAGES => {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                    .execute(&mut conn)
                    .await
                {
                    tracing::warn!(error = %e, "journal checkpoint (restart) failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "journal checkpoint failed"),
        }
    }
}
