//! Read side of the journal: recovery, outbox queues, the message browser.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};

use super::Journal;
use super::model::*;
use super::writer::{payload_aad, raw_aad};

/// Filters of the message browser (`GET /api/messages`).
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    pub channel: Option<String>,
    pub status: Option<Status>,
    /// Unix microseconds: messages received at or after.
    pub since: Option<i64>,
    pub limit: i64,
    /// Keyset cursor: the id below which to continue (newest first).
    pub before_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageSummary {
    pub id: i64,
    pub channel: String,
    pub source: String,
    pub peer: Option<String>,
    pub received_at: String,
    pub control_id: Option<String>,
    pub sender: String,
    pub message_type: Option<String>,
    pub content_type: String,
    pub size: i64,
    pub status: String,
    pub ack: Option<String>,
    pub error: Option<String>,
    pub duplicate_of: Option<i64>,
    pub generation: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutboxView {
    pub id: i64,
    pub destination: String,
    pub generation: i64,
    pub status: String,
    pub attempts: i64,
    pub redeliveries: i64,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MessageDetail {
    pub summary: MessageSummary,
    pub raw: Vec<u8>,
    pub trace: Vec<TraceStep>,
    pub outbox: Vec<OutboxView>,
}

/// Per channel, how many messages are in each state, and the outbox totals.
#[derive(Debug, Clone, Default)]
pub struct ChannelCounts {
    pub by_status: HashMap<Status, u64>,
    pub acked: u64,
    pub outbox_pending: u64,
    pub outbox_sent: u64,
    pub outbox_dead: u64,
    pub redeliveries: u64,
    /// What the messages retention deleted had counted.
    pub pruned: PrunedTotals,
}

/// Counts of pruned messages (retention.rs keeps them as it deletes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunedTotals {
    pub received: u64,
    pub acked: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub filtered: u64,
    pub errored: u64,
    pub sent: u64,
    pub redelivered: u64,
}

pub fn iso(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

const SUMMARY_COLUMNS: &str =
    "id, channel, source, peer, received_at, control_id, sender, message_type,
    content_type, size, status, ack, error, duplicate_of, generation";

fn summary(row: &sqlx::sqlite::SqliteRow) -> MessageSummary {
    MessageSummary {
        id: row.get("id"),
        channel: row.get("channel"),
        source: row.get("source"),
        peer: row.get("peer"),
        received_at: iso(row.get("received_at")),
        control_id: row.get("control_id"),
        sender: row.get("sender"),
        message_type: row.get("message_type"),
        content_type: row.get("content_type"),
        size: row.get("size"),
        status: row.get("status"),
        ack: row.get("ack"),
        error: row.get("error"),
        duplicate_of: row.get("duplicate_of"),
        generation: row.get("generation"),
    }
}

impl Journal {
    fn open_raw(&self, id: i64, sealed: &[u8]) -> Result<Vec<u8>> {
        self.cipher()
            .open(sealed, &raw_aad(id))
            .with_context(|| format!("message {id}"))
    }

    /// Messages of `channel` committed but not yet processed (after a restart, an overflow of
    /// the processor's queue, or reprocessed), oldest first: at most `limit` of them,
    /// after message `after` (0 from the start). A page at a time, so that a backlog of any
    /// size is swept with bounded memory.
    pub async fn pending_received(
        &self,
        channel: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Pending>> {
        let rows = sqlx::query(
            "SELECT id, channel, generation, raw FROM messages
             WHERE status = 'received' AND channel = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(channel)
        .bind(after)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.get("id");
                Ok(Pending {
                    id,
                    channel: row.get("channel"),
                    generation: row.get("generation"),
                    raw: self.open_raw(id, row.get("raw"))?,
                })
            })
            .collect()
    }

    pub async fn load_pending(&self, id: i64) -> Result<Pending> {
        let row = sqlx::query("SELECT id, channel, generation, raw FROM messages WHERE id = ?")
            .bind(id)
            .fetch_optional(self.reader())
            .await?
            .ok_or(NoSuchMessage(id))?;
        Ok(Pending {
            id,
            channel: row.get("channel"),
            generation: row.get("generation"),
            raw: self.open_raw(id, row.get("raw"))?,
        })
    }

    /// The head of a destination's queue, oldest first (due or not: order is kept).
    pub async fn outbox_head(
        &self,
        channel: &str,
        destination: &str,
        limit: i64,
    ) -> Result<Vec<OutboxItem>> {
        let rows = sqlx::query(
            "SELECT o.id, o.message_id, o.generation, o.destination, o.attempts, o.next_attempt_at,
                    o.payload, m.raw, m.control_id
             FROM outbox o JOIN messages m ON m.id = o.message_id
             WHERE o.channel = ? AND o.destination = ? AND o.status = 'pending'
             ORDER BY o.id LIMIT ?",
        )
        .bind(channel)
        .bind(destination)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.get("id");
                let message_id: i64 = row.get("message_id");
                let payload: Option<Vec<u8>> = row.get("payload");
                let payload = match payload {
                    Some(sealed) => self.cipher().open(&sealed, &payload_aad(id))?,
                    None => self.open_raw(message_id, row.get("raw"))?,
                };
                Ok(OutboxItem {
                    id,
                    message_id,
                    generation: row.get("generation"),
                    destination: row.get("destination"),
                    attempts: row.get("attempts"),
                    next_attempt_at: row.get("next_attempt_at"),
                    control_id: row.get("control_id"),
                    payload,
                })
            })
            .collect()
    }

    /// The total matching, one page newest first, and whether more messages follow the page.
    pub async fn list_messages(
        &self,
        q: &MessageQuery,
    ) -> Result<(i64, Vec<MessageSummary>, bool)> {
        fn filters(b: &mut QueryBuilder<Sqlite>, q: &MessageQuery) {
            b.push(" WHERE 1 = 1");
            if let Some(channel) = &q.channel {
                b.push(" AND channel = ").push_bind(channel.clone());
            }
            if let Some(status) = q.status {
                b.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(since) = q.since {
                b.push(" AND received_at >= ").push_bind(since);
            }
        }
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM messages");
        filters(&mut count, q);
        let total: i64 = count.build_query_scalar().fetch_one(self.reader()).await?;
        let mut select = QueryBuilder::new(format!("SELECT {SUMMARY_COLUMNS} FROM messages"));
        filters(&mut select, q);
        if let Some(before) = q.before_id {
            select.push(" AND id < ").push_bind(before);
        }
        // One row more than the page tells whether another page follows.
        select
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(q.limit.saturating_add(1));
        let rows = select.build().fetch_all(self.reader()).await?;
        let more = rows.len() as i64 > q.limit;
        let items = rows
            .iter()
            .take(q.limit.max(0) as usize)
            .map(summary)
            .collect();
        Ok((total, items, more))
    }

    pub async fn get_message(&self, id: i64) -> Result<Option<MessageDetail>> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS}, raw, receive_us, receive_note, steps FROM messages WHERE id = ?"
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.reader())
            .await?
        else {
            return Ok(None);
        };
        let raw = self.open_raw(id, row.get("raw"))?;
        // The receive step lives on the message row itself (one row less per message).
        let received_at: i64 = row.get("received_at");
        let status: String = row.get("status");
        let outcome = match status.as_str() {
            "rejected" | "duplicate" => status.as_str(),
            _ => "ok",
        };
        let note: Option<String> = row.get("receive_note");
        let error: Option<String> = row.get("error");
        let receive = TraceStep {
            step: "receive".into(),
            at: received_at,
            duration_us: row.get("receive_us"),
            outcome: outcome.into(),
            detail: note.or(if status == "rejected" { error } else { None }),
        };
        let steps = sqlx::query(
            "SELECT step, at, duration_us, outcome, detail FROM trace WHERE message_id = ? ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.reader())
        .await?;
        // Steps run at receipt are kept on the message row as JSON.
        let at_receipt: Vec<TraceStep> = row
            .get::<Option<String>, _>("steps")
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default();
        let trace = std::iter::once(receive)
            .chain(at_receipt)
            .chain(steps.iter().map(|r| TraceStep {
                step: r.get("step"),
                at: r.get("at"),
                duration_us: r.get("duration_us"),
                outcome: r.get("outcome"),
                detail: r.get("detail"),
            }))
            .collect();
        let outbox = sqlx::query(
            "SELECT id, destination, generation, status, attempts, redeliveries, next_attempt_at, last_error
             FROM outbox WHERE message_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.reader())
        .await?
        .iter()
        .map(|r| OutboxView {
            id: r.get("id"),
            destination: r.get("destination"),
            generation: r.get("generation"),
            status: r.get("status"),
            attempts: r.get("attempts"),
            redeliveries: r.get("redeliveries"),
            next_attempt_at: iso(r.get("next_attempt_at")),
            last_error: r.get("last_error"),
        })
        .collect();
        Ok(Some(MessageDetail {
            summary: summary(&row),
            raw,
            trace,
            outbox,
        }))
    }

    /// Counts per channel, used to seed the live counters at start-up.
    pub async fn channel_counts(&self) -> Result<HashMap<String, ChannelCounts>> {
        let mut out: HashMap<String, ChannelCounts> = HashMap::new();
        let rows = sqlx::query(
            "SELECT channel, status, COUNT(*) AS n, SUM(ack IN ('AA', 'CA')) AS acked
             FROM messages GROUP BY channel, status",
        )
        .fetch_all(self.reader())
        .await?;
        for row in rows {
            let entry = out.entry(row.get("channel")).or_default();
            if let Some(status) = Status::parse(row.get("status")) {
                entry
                    .by_status
                    .insert(status, row.get::<i64, _>("n") as u64);
            }
            entry.acked += row.get::<Option<i64>, _>("acked").unwrap_or(0) as u64;
        }
        let rows = sqlx::query(
            "SELECT channel, status, COUNT(*) AS n, SUM(redeliveries) AS r FROM outbox GROUP BY channel, status",
        )
        .fetch_all(self.reader())
        .await?;
        for row in rows {
            let entry = out.entry(row.get("channel")).or_default();
            let n = row.get::<i64, _>("n") as u64;
            match row.get::<&str, _>("status") {
                "pending" | "inflight" => entry.outbox_pending += n,
                "sent" => entry.outbox_sent += n,
                "dead" => entry.outbox_dead += n,
                _ => {}
            }
            entry.redeliveries += row.get::<Option<i64>, _>("r").unwrap_or(0) as u64;
        }
        let kept: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'pruned_totals'",
        )
        .fetch_optional(self.reader())
        .await?;
        if kept.is_some() {
            let rows = sqlx::query(
                "SELECT channel, received, acked, rejected, duplicates, filtered, errored, sent,
                        redelivered FROM pruned_totals",
            )
            .fetch_all(self.reader())
            .await?;
            for row in rows {
                let n = |column: &str| row.get::<i64, _>(column).max(0) as u64;
                out.entry(row.get("channel")).or_default().pruned = PrunedTotals {
                    received: n("received"),
                    acked: n("acked"),
                    rejected: n("rejected"),
                    duplicates: n("duplicates"),
                    filtered: n("filtered"),
                    errored: n("errored"),
                    sent: n("sent"),
                    redelivered: n("redelivered"),
                };
            }
        }
        Ok(out)
    }

    /// A message's status now, if it exists.
    pub async fn message_status(&self, id: i64) -> Result<Option<Status>> {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM messages WHERE id = ?")
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        Ok(status.as_deref().and_then(Status::parse))
    }

    /// Whether this dead-lettered delivery is the first of its message's current run, i.e.
    /// the one that made the message `errored` (a message counts once however many of its
    /// deliveries fail).
    pub async fn first_dead_letter_of_run(&self, outbox_id: i64) -> Result<bool> {
        let first: Option<bool> = sqlx::query_scalar(
            "SELECT o.status = 'dead' AND o.generation = m.generation AND NOT EXISTS (
                 SELECT 1 FROM outbox d WHERE d.message_id = o.message_id
                 AND d.generation = o.generation AND d.status = 'dead' AND d.id <> o.id)
             FROM outbox o JOIN messages m ON m.id = o.message_id WHERE o.id = ?",
        )
        .bind(outbox_id)
        .fetch_optional(self.reader())
        .await?;
        Ok(first.unwrap_or(false))
    }
}
