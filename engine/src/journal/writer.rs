//! The journal's single writer. Whatever is waiting is applied in one transaction and
//! committed with one fsync (group commit); each caller is answered after the commit.
//! Each operation runs in its own savepoint so one bad operation does not fail the batch.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use sqlx::{Connection, Executor, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::model::*;
use super::{Reprocessed, now_micros};
use crate::crypto::Cipher;

type Reply<T> = oneshot::Sender<Result<T>>;

pub(super) enum Op {
    Append(Box<NewMessage>, Reply<Appended>),
    Processed(Box<Processed>, Reply<()>),
    Inflight(Vec<i64>, Reply<()>),
    Delivered(Vec<Delivery>, Reply<()>),
    Reprocess {
        id: i64,
        only_failed: bool,
        reply: Reply<Reprocessed>,
    },
    RecoverInflight(Reply<u64>),
    Delete(Vec<i64>, Reply<u64>),
    /// Hands freed pages back to the file system; runs outside any transaction.
    Compact(Reply<()>),
    Flush(Reply<()>),
}

/// Sends an operation's answer once the batch's fate is known.
type Answer = Box<dyn FnOnce(Option<&anyhow::Error>) + Send>;

fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T>) -> Answer {
    Box::new(move |commit_error| {
        let result = match commit_error {
            Some(e) => Err(anyhow!("journal commit failed: {e:#}")),
            None => result,
        };
        let _ = reply.send(result);
    })
}

/// Ids the writer hands out itself: it is the only writer, and knowing the id before the
/// insert lets the sealed payload be bound to its row in a single statement.
struct Ids {
    message: i64,
    outbox: i64,
    trace_seq: i64,
}

pub(super) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Op>,
    cipher: Arc<Cipher>,
) {
    let mut ids = match load_ids(&mut conn).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "journal writer cannot start");
            return;
        }
    };
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut after_commit = Vec::new();
        let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
        let outcome = async {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            for op in batch.drain(..) {
                match op {
                    Op::Compact(reply) => after_commit.push(Op::Compact(reply)),
                    Op::Flush(reply) => after_commit.push(Op::Flush(reply)),
                    op => answers.push(apply(&mut tx, op, &cipher, &mut ids).await),
                }
            }
            tx.commit().await?;
            anyhow::Ok(())
        }
        .await;
        if outcome.is_err() {
            // Ids may have been consumed by rolled back rows: reload them.
            if let Ok(fresh) = load_ids(&mut conn).await {
                ids = fresh;
            }
        }
        let error = outcome.err();
        if let Some(e) = &error {
            tracing::error!(error = %e, "journal commit failed");
        }
        for a in answers {
            a(error.as_ref());
        }
        for op in after_commit {
            match op {
                Op::Compact(reply) => {
                    let _ = reply.send(compact(&mut conn).await);
                }
                Op::Flush(reply) => {
                    let _ = reply.send(Ok(()));
                }
                _ => unreachable!("only out-of-transaction operations are deferred"),
            }
        }
    }
}

async fn load_ids(conn: &mut SqliteConnection) -> Result<Ids> {
    let message: i64 = sqlx::query_scalar("SELECT IFNULL(MAX(id), 0) FROM messages")
        .fetch_one(&mut *conn)
        .await?;
    let outbox: i64 = sqlx::query_scalar("SELECT IFNULL(MAX(id), 0) FROM outbox")
        .fetch_one(&mut *conn)
        .await?;
    let trace_seq: i64 = sqlx::query_scalar("SELECT IFNULL(MAX(seq), 0) FROM trace")
        .fetch_one(&mut *conn)
        .await?;
    Ok(Ids {
        message,
        outbox,
        trace_seq,
    })
}

async fn apply(tx: &mut Transaction<'_, Sqlite>, op: Op, cipher: &Cipher, ids: &mut Ids) -> Answer {
    macro_rules! in_savepoint {
        ($reply:expr, |$sp:ident| $body:expr) => {{
            let result = async {
                let mut $sp = tx.begin().await?;
                let value = $body.await?;
                $sp.commit().await?;
                anyhow::Ok(value)
            }
            .await;
            answer($reply, result)
        }};
    }
    match op {
        Op::Append(message, reply) => {
            in_savepoint!(reply, |sp| append(&mut sp, *message, cipher, ids))
        }
        Op::Processed(processed, reply) => {
            in_savepoint!(reply, |sp| record_processed(
                &mut sp, *processed, cipher, ids
            ))
        }
        Op::Inflight(list, reply) => in_savepoint!(reply, |sp| mark_inflight(&mut sp, list)),
        Op::Delivered(list, reply) => {
            in_savepoint!(reply, |sp| record_deliveries(&mut sp, list, ids))
        }
        Op::Reprocess {
            id,
            only_failed,
            reply,
        } => {
            in_savepoint!(reply, |sp| reprocess(&mut sp, id, only_failed, ids))
        }
        Op::RecoverInflight(reply) => in_savepoint!(reply, |sp| recover_inflight(&mut sp)),
        Op::Delete(list, reply) => in_savepoint!(reply, |sp| delete(&mut sp, list)),
        Op::Compact(_) | Op::Flush(_) => unreachable!("handled outside the transaction"),
    }
}

type Tx<'t, 'c> = &'t mut Transaction<'c, Sqlite>;

fn aad(kind: &str, id: i64) -> Vec<u8> {
    format!("{kind}:{id}").into_bytes()
}

pub(crate) fn raw_aad(id: i64) -> Vec<u8> {
    aad("message", id)
}

pub(crate) fn payload_aad(id: i64) -> Vec<u8> {
    aad("outbox", id)
}

async fn insert_trace(
    tx: Tx<'_, '_>,
    ids: &mut Ids,
    id: i64,
    generation: i64,
    step: &TraceStep,
) -> Result<()> {
    ids.trace_seq += 1;
    sqlx::query(
        "INSERT INTO trace (message_id, seq, generation, step, at, duration_us, outcome, detail)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(ids.trace_seq)
    .bind(generation)
    .bind(&step.step)
    .bind(step.at)
    .bind(step.duration_us)
    .bind(&step.outcome)
    .bind(&step.detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn append(tx: Tx<'_, '_>, m: NewMessage, cipher: &Cipher, ids: &mut Ids) -> Result<Appended> {
    let digest = cipher.digest(&m.raw);
    let mut duplicate_of = None;
    let mut note = None;
    if m.status == Status::Received
        && let Some(control_id) = &m.control_id
    {
        let earlier: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, digest FROM messages
             WHERE channel = ? AND sender = ? AND control_id = ? AND status NOT IN ('rejected', 'duplicate')
             ORDER BY id DESC LIMIT 1",
        )
        .bind(&m.channel)
        .bind(&m.sender)
        .bind(control_id)
        .fetch_optional(&mut **tx)
        .await?;
        match earlier {
            Some((id, Some(d))) if d == digest => duplicate_of = Some(id),
            Some((id, _)) => {
                note = Some(format!(
                    "control id already used by message {id} with other content"
                ))
            }
            None => {}
        }
    }
    let status = if duplicate_of.is_some() {
        Status::Duplicate
    } else {
        m.status
    };
    ids.message += 1;
    let id = ids.message;
    let sealed = cipher.seal(&m.raw, &raw_aad(id));
    sqlx::query(
        "INSERT INTO messages (id, channel, source, peer, received_at, control_id, sender, message_type,
             content_type, size, digest, raw, status, ack, error, duplicate_of, generation, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
    )
    .bind(id)
    .bind(&m.channel)
    .bind(&m.source)
    .bind(&m.peer)
    .bind(m.received_at)
    .bind(&m.control_id)
    .bind(&m.sender)
    .bind(&m.message_type)
    .bind(&m.content_type)
    .bind(m.raw.len() as i64)
    .bind(&digest)
    .bind(&sealed)
    .bind(status.as_str())
    .bind(&m.ack)
    .bind(&m.error)
    .bind(duplicate_of)
    .bind(now_micros())
    .execute(&mut **tx)
    .await?;
    let outcome = match status {
        Status::Rejected => "rejected",
        Status::Duplicate => "duplicate",
        _ => "ok",
    };
    let mut step = TraceStep::new("receive", m.received_at, m.receive_us, outcome);
    step.detail = match (duplicate_of, &m.error, note) {
        (Some(first), _, _) => Some(format!(
            "retransmission of message {first}: not processed again"
        )),
        (None, Some(error), _) => Some(error.clone()),
        (None, None, note) => note,
    };
    insert_trace(tx, ids, id, 0, &step).await?;
    Ok(Appended { id, duplicate_of })
}

async fn record_processed(
    tx: Tx<'_, '_>,
    p: Processed,
    cipher: &Cipher,
    ids: &mut Ids,
) -> Result<()> {
    let updated = sqlx::query(
        "UPDATE messages SET status = ?, error = ?, updated_at = ? WHERE id = ? AND generation = ?",
    )
    .bind(p.status.as_str())
    .bind(&p.error)
    .bind(now_micros())
    .bind(p.id)
    .bind(p.generation)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        // Reprocessed (or pruned) meanwhile: this run's result is stale.
        return Ok(());
    }
    for step in &p.steps {
        insert_trace(tx, ids, p.id, p.generation, step).await?;
    }
    let channel: String = sqlx::query_scalar("SELECT channel FROM messages WHERE id = ?")
        .bind(p.id)
        .fetch_one(&mut **tx)
        .await?;
    let now = now_micros();
    for item in &p.outbox {
        ids.outbox += 1;
        let payload = item
            .payload
            .as_ref()
            .map(|bytes| cipher.seal(bytes, &payload_aad(ids.outbox)));
        sqlx::query(
            "INSERT INTO outbox (id, message_id, generation, channel, destination, payload, status,
                 next_attempt_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)
             ON CONFLICT (message_id, generation, destination) DO NOTHING",
        )
        .bind(ids.outbox)
        .bind(p.id)
        .bind(p.generation)
        .bind(&channel)
        .bind(&item.destination)
        .bind(payload)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn mark_inflight(tx: Tx<'_, '_>, list: Vec<i64>) -> Result<()> {
    let now = now_micros();
    for id in list {
        sqlx::query("UPDATE outbox SET status = 'inflight', updated_at = ? WHERE id = ? AND status = 'pending'")
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn record_deliveries(tx: Tx<'_, '_>, list: Vec<Delivery>, ids: &mut Ids) -> Result<()> {
    let now = now_micros();
    for d in list {
        let query = match &d.result {
            DeliveryResult::Sent => sqlx::query(
                "UPDATE outbox SET status = 'sent', attempts = attempts + 1, last_error = NULL, updated_at = ?
                 WHERE id = ?",
            )
            .bind(now)
            .bind(d.outbox_id),
            DeliveryResult::Retry { at, error } => sqlx::query(
                "UPDATE outbox SET status = 'pending', attempts = attempts + 1, next_attempt_at = ?,
                     last_error = ?, updated_at = ? WHERE id = ?",
            )
            .bind(*at)
            .bind(error.clone())
            .bind(now)
            .bind(d.outbox_id),
            DeliveryResult::Dead { error } => sqlx::query(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = ?, updated_at = ?
                 WHERE id = ?",
            )
            .bind(error.clone())
            .bind(now)
            .bind(d.outbox_id),
            DeliveryResult::Release => sqlx::query(
                "UPDATE outbox SET status = 'pending', updated_at = ? WHERE id = ? AND status = 'inflight'",
            )
            .bind(now)
            .bind(d.outbox_id),
        };
        query.execute(&mut **tx).await?;
        if let Some(step) = &d.step {
            let generation: i64 = sqlx::query_scalar("SELECT generation FROM outbox WHERE id = ?")
                .bind(d.outbox_id)
                .fetch_one(&mut **tx)
                .await?;
            insert_trace(tx, ids, d.message_id, generation, step).await?;
        }
        if !matches!(d.result, DeliveryResult::Release) {
            settle_message(tx, d.message_id, now).await?;
        }
    }
    Ok(())
}

/// A message's status follows its current generation's outbox: any dead letter makes it
/// errored, anything still queued keeps it queued, otherwise it has been sent everywhere.
async fn settle_message(tx: Tx<'_, '_>, id: i64, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE messages SET
            status = CASE
                WHEN EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = messages.id
                             AND o.generation = messages.generation AND o.status = 'dead') THEN 'errored'
                WHEN EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = messages.id
                             AND o.generation = messages.generation AND o.status IN ('pending', 'inflight')) THEN 'queued'
                ELSE 'sent' END,
            error = (SELECT o.destination || ': ' || o.last_error FROM outbox o WHERE o.message_id = messages.id
                     AND o.generation = messages.generation AND o.status = 'dead' ORDER BY o.id LIMIT 1),
            updated_at = ?
         WHERE id = ? AND status IN ('queued', 'sent', 'errored')",
    )
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn reprocess(
    tx: Tx<'_, '_>,
    id: i64,
    only_failed: bool,
    ids: &mut Ids,
) -> Result<Reprocessed> {
    let now = now_micros();
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT channel, generation FROM messages WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    let (channel, generation) = row.ok_or_else(|| anyhow!("no message {id}"))?;
    if only_failed {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?
             WHERE message_id = ? AND generation = ? AND status = 'dead'",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .bind(generation)
        .execute(&mut **tx)
        .await?;
        let count = done.rows_affected();
        if count > 0 {
            sqlx::query(
                "UPDATE messages SET status = 'queued', error = NULL, updated_at = ? WHERE id = ?",
            )
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        let step = TraceStep::new("reprocess", now, 0, "ok")
            .detail(format!("{count} dead-lettered deliveries queued again"));
        insert_trace(tx, ids, id, generation, &step).await?;
        return Ok(Reprocessed::Requeued { channel, count });
    }
    let generation = generation + 1;
    sqlx::query(
        "UPDATE messages SET generation = ?, status = 'received', error = NULL, duplicate_of = NULL,
             updated_at = ? WHERE id = ?",
    )
    .bind(generation)
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    // Deliveries not yet made for the earlier run would repeat the new run's: cancel them.
    sqlx::query(
        "UPDATE outbox SET status = 'cancelled', updated_at = ?
         WHERE message_id = ? AND generation < ? AND status IN ('pending', 'dead')",
    )
    .bind(now)
    .bind(id)
    .bind(generation)
    .execute(&mut **tx)
    .await?;
    let step =
        TraceStep::new("reprocess", now, 0, "ok").detail(format!("run {generation} started"));
    insert_trace(tx, ids, id, generation, &step).await?;
    Ok(Reprocessed::Rerun {
        channel,
        generation,
    })
}

async fn recover_inflight(tx: Tx<'_, '_>) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET status = 'pending', redeliveries = redeliveries + 1 WHERE status = 'inflight'",
    )
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

async fn delete(tx: Tx<'_, '_>, list: Vec<i64>) -> Result<u64> {
    let mut count = 0;
    for chunk in list.chunks(500) {
        let placeholders = vec!["?"; chunk.len()].join(",");
        let sql = format!("DELETE FROM messages WHERE id IN ({placeholders})");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id);
        }
        count += query.execute(&mut **tx).await?.rows_affected();
    }
    Ok(count)
}

async fn compact(conn: &mut SqliteConnection) -> Result<()> {
    conn.execute("PRAGMA incremental_vacuum").await?;
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    Ok(())
}
