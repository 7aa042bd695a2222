//! Retention: prunes finished messages by age, count and size, and gives the disk back.
//!
//! Messages still in flight (received, queued) are never pruned. Failures (rejected, errored)
//! follow their own rule, usually kept longer so analysts can investigate and reprocess.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};

use super::Journal;

const DONE: &str = "('sent', 'filtered', 'duplicate')";
const FAILED: &str = "('rejected', 'errored')";
const CHUNK: i64 = 2000;

/// What pruned messages had counted, per channel, so that the counters seeded at start-up
/// (journal/read.rs `channel_counts`) never go down after retention. A trigger adds each
/// message to it in the transaction that deletes the message (before its outbox rows go), so
/// the totals and the deletions cannot disagree, and nothing runs on the writer's other paths.
const PRUNED_TOTALS: &str = "
CREATE TABLE IF NOT EXISTS pruned_totals (
    channel     TEXT PRIMARY KEY,
    received    INTEGER NOT NULL DEFAULT 0,
    acked       INTEGER NOT NULL DEFAULT 0,
    rejected    INTEGER NOT NULL DEFAULT 0,
    duplicates  INTEGER NOT NULL DEFAULT 0,
    filtered    INTEGER NOT NULL DEFAULT 0,
    errored     INTEGER NOT NULL DEFAULT 0,
    sent        INTEGER NOT NULL DEFAULT 0,
    redelivered INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS pruned_totals_add BEFORE DELETE ON messages
BEGIN
    INSERT INTO pruned_totals
        (channel, received, acked, rejected, duplicates, filtered, errored, sent, redelivered)
    VALUES (
        OLD.channel,
        1,
        COALESCE(OLD.ack IN ('AA', 'CA'), 0),
        OLD.status = 'rejected',
        OLD.status = 'duplicate',
        OLD.status = 'filtered',
        OLD.status = 'errored',
        (SELECT COUNT(*) FROM outbox WHERE message_id = OLD.id AND status = 'sent'),
        (SELECT COALESCE(SUM(redeliveries), 0) FROM outbox WHERE message_id = OLD.id)
    )
    ON CONFLICT (channel) DO UPDATE SET
        received = received + excluded.received,
        acked = acked + excluded.acked,
        rejected = rejected + excluded.rejected,
        duplicates = duplicates + excluded.duplicates,
        filtered = filtered + excluded.filtered,
        errored = errored + excluded.errored,
        sent = sent + excluded.sent,
        redelivered = redelivered + excluded.redelivered;
END;
";

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrunePolicy {
    /// Finished messages older than this are pruned.
    #[serde(default, with = "humantime_serde_opt")]
    pub max_age: Option<Duration>,
    /// At most this many finished messages are kept (oldest pruned first).
    pub max_messages: Option<u64>,
    /// Finished messages' raw bytes are kept under this total (oldest pruned first).
    pub max_bytes: Option<u64>,
    /// Failed messages (rejected, errored) older than this are pruned.
    #[serde(default, with = "humantime_serde_opt")]
    pub failed_max_age: Option<Duration>,
    /// At most this many failed messages are kept.
    pub failed_max_messages: Option<u64>,
    /// How often retention runs (default 1 hour).
    #[serde(default, with = "humantime_serde_opt")]
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PruneReport {
    pub deleted: u64,
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
}

impl Journal {
    /// Applies the policy now. Deletes in chunks so receiving is never blocked for long.
    pub async fn prune(&self, policy: &PrunePolicy, now: i64) -> Result<PruneReport> {
        self.keep_pruned_totals().await?;
        let before = self.file_bytes();
        let mut deleted = 0;
        let age_cut = |age: Option<Duration>| age.map(|a| now - a.as_micros() as i64);
        if let Some(cut) = age_cut(policy.max_age) {
            deleted += self
                .delete_where(&format!("status IN {DONE} AND received_at < {cut}"))
                .await?;
        }
        if let Some(cut) = age_cut(policy.failed_max_age) {
            deleted += self
                .delete_where(&format!("status IN {FAILED} AND received_at < {cut}"))
                .await?;
        }
        if let Some(keep) = policy.max_messages {
            deleted += self.delete_beyond_count(DONE, keep).await?;
        }
        if let Some(keep) = policy.failed_max_messages {
            deleted += self.delete_beyond_count(FAILED, keep).await?;
        }
        if let Some(max) = policy.max_bytes {
            // The newest messages whose sizes add up to `max` are kept.
            let cut: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT id FROM (SELECT id, SUM(size) OVER (ORDER BY id DESC) AS total
                 FROM messages WHERE status IN {DONE}) WHERE total > ? ORDER BY id DESC LIMIT 1"
            )))
            .bind(max as i64)
            .fetch_optional(self.reader())
            .await?;
            if let Some(cut) = cut {
                deleted += self
                    .delete_where(&format!("status IN {DONE} AND id <= {cut}"))
                    .await?;
            }
        }
        if deleted > 0 {
            self.compact().await?;
        }
        Ok(PruneReport {
            deleted,
            file_bytes_before: before,
            file_bytes_after: self.file_bytes(),
        })
    }

    /// Makes sure deleted messages add to `pruned_totals` (once per journal: the table and
    /// its trigger stay). Runs on a connection of its own, the writer's being busy with
    /// receiving; the readers are read-only.
    async fn keep_pruned_totals(&self) -> Result<()> {
        let present: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name = 'pruned_totals_add'",
        )
        .fetch_optional(self.reader())
        .await?;
        if present.is_some() {
            return Ok(());
        }
        let mut conn = SqliteConnectOptions::new()
            .filename(self.db_path())
            .busy_timeout(Duration::from_secs(10))
            .disable_statement_logging()
            .connect()
            .await
            .context("opening the journal to keep pruned totals")?;
        let mut tx = conn.begin().await?;
        tx.execute(PRUNED_TOTALS)
            .await
            .context("creating the pruned totals")?;
        tx.commit().await?;
        conn.close().await?;
        Ok(())
    }

    async fn delete_beyond_count(&self, statuses: &str, keep: u64) -> Result<u64> {
        let cut: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT id FROM messages WHERE status IN {statuses} ORDER BY id DESC LIMIT 1 OFFSET ?"
        )))
        .bind(keep as i64)
        .fetch_optional(self.reader())
        .await?;
        match cut {
            Some(cut) => {
                self.delete_where(&format!("status IN {statuses} AND id <= {cut}"))
                    .await
            }
            None => Ok(0),
        }
    }

    async fn delete_where(&self, condition: &str) -> Result<u64> {
        let sql = format!("SELECT id FROM messages WHERE {condition} ORDER BY id LIMIT {CHUNK}");
        let mut total = 0;
        loop {
            let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                .fetch_all(self.reader())
                .await?;
            if ids.is_empty() {
                return Ok(total);
            }
            total += self.delete(ids).await?;
        }
    }

    /// Size of the database and its write-ahead log on disk.
    pub fn file_bytes(&self) -> u64 {
        let path = self.db_path();
        let wal = path.with_extension("db-wal");
        [path.to_path_buf(), wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// `"30d"`, `"12h"` durations in configuration files.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
