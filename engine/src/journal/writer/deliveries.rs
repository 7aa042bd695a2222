//! Outbox bookkeeping: deliveries in flight and their results, reprocess, crash recovery.

use anyhow::Result;
use sqlx::SqliteConnection;

use super::script::{Script, push_ids};
use super::{Ids, insert_trace};
use crate::journal::Reprocessed;
use crate::journal::model::{Delivery, DeliveryResult, NoSuchMessage, TraceStep};
use crate::journal::now_micros;

pub(super) fn push_inflight(script: &mut Script, list: &[i64]) {
    let now = now_micros();
    for chunk in list.chunks(500) {
        let q = script.statement("UPDATE outbox SET status = 'inflight', updated_at = ");
        q.push_bind(now);
        q.push(" WHERE status = 'pending' AND id IN (");
        push_ids(q, chunk);
    }
}

/// Adds the results of deliveries: each outbox entry's new state, its trace step, and its
/// message's status. A batch of results comes from one worker (up to 64 deliveries): the
/// common case, delivered, goes in a handful of multi-row statements rather than three per
/// delivery, since these statements share the commit that the next ACKs wait for.
pub(super) fn push_results(script: &mut Script, list: &[Delivery], ids: &mut Ids) {
    let now = now_micros();
    let sent: Vec<i64> = list
        .iter()
        .filter(|d| matches!(d.result, DeliveryResult::Sent))
        .map(|d| d.outbox_id)
        .collect();
    for chunk in sent.chunks(500) {
        let q = script.statement(
            "UPDATE outbox SET status = 'sent', attempts = attempts + 1, last_error = NULL, updated_at = ",
        );
        q.push_bind(now).push(" WHERE id IN (");
        push_ids(q, chunk);
    }
    for d in list {
        match &d.result {
            DeliveryResult::Sent => {}
            DeliveryResult::Retry { at, error } => {
                let q = script.statement(
                    "UPDATE outbox SET status = 'pending', attempts = attempts + 1, next_attempt_at = ",
                );
                q.push_bind(*at)
                    .push(", last_error = ")
                    .push_bind(error.clone())
                    .push(", updated_at = ")
                    .push_bind(now)
                    .push(" WHERE id = ")
                    .push_bind(d.outbox_id);
            }
            DeliveryResult::Dead { error } => {
                let q = script.statement(
                    "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = ",
                );
                q.push_bind(error.clone())
                    .push(", updated_at = ")
                    .push_bind(now)
                    .push(" WHERE id = ")
                    .push_bind(d.outbox_id);
            }
            DeliveryResult::Release => {
                let q = script.statement("UPDATE outbox SET status = 'pending', updated_at = ");
                q.push_bind(now)
                    .push(" WHERE status = 'inflight' AND id = ")
                    .push_bind(d.outbox_id);
            }
        }
    }
    let steps: Vec<(&Delivery, &TraceStep)> = list
        .iter()
        .filter_map(|d| d.step.as_ref().map(|s| (d, s)))
        .collect();
    // 8 values a row, well under SQLite's limit of 32766 bound values per statement.
    for chunk in steps.chunks(500) {
        // The step belongs to the run the delivery was made for: the outbox entry's.
        let q = script.statement(
            "INSERT INTO trace (message_id, seq, generation, step, at, duration_us, outcome, detail)
             SELECT v.column1, v.column2, o.generation, v.column3, v.column4, v.column5, v.column6,
                 v.column7
             FROM (",
        );
        q.push_values(chunk, |mut b, (d, step)| {
            ids.trace_seq += 1;
            b.push_bind(d.message_id)
                .push_bind(ids.trace_seq)
                .push_bind(step.step.clone())
                .push_bind(step.at)
                .push_bind(step.duration_us)
                .push_bind(step.outcome.clone())
                .push_bind(step.detail.clone())
                .push_bind(d.outbox_id);
        });
        q.push(") AS v JOIN outbox o ON o.id = v.column8");
    }
    let settle: Vec<i64> = list
        .iter()
        .filter(|d| !matches!(d.result, DeliveryResult::Release))
        .map(|d| d.message_id)
        .collect();
    for chunk in settle.chunks(500) {
        push_settle(script, chunk, now);
    }
}

/// A message's status follows its current generation's outbox: any dead letter makes it
/// errored, anything still queued keeps it queued, otherwise it has been sent everywhere.
fn push_settle(script: &mut Script, ids: &[i64], now: i64) {
    let q = script.statement(
        "UPDATE messages SET
            status = CASE
                WHEN EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = messages.id
                             AND o.generation = messages.generation AND o.status = 'dead') THEN 'errored'
                WHEN EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = messages.id
                             AND o.generation = messages.generation AND o.status IN ('pending', 'inflight')) THEN 'queued'
                ELSE 'sent' END,
            error = (SELECT o.destination || ': ' || o.last_error FROM outbox o WHERE o.message_id = messages.id
                     AND o.generation = messages.generation AND o.status = 'dead' ORDER BY o.id LIMIT 1),
            updated_at = ",
    );
    q.push_bind(now)
        .push(" WHERE status IN ('queued', 'sent', 'errored') AND id IN (");
    push_ids(q, ids);
}

pub(super) async fn reprocess(
    conn: &mut SqliteConnection,
    id: i64,
    only_failed: bool,
    ids: &mut Ids,
) -> Result<Reprocessed> {
    let now = now_micros();
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT channel, generation FROM messages WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let (channel, generation) = row.ok_or(NoSuchMessage(id))?;
    if only_failed {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ?
             WHERE message_id = ? AND generation = ? AND status = 'dead'",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .bind(generation)
        .execute(&mut *conn)
        .await?;
        let count = done.rows_affected();
        if count > 0 {
            sqlx::query(
                "UPDATE messages SET status = 'queued', error = NULL, updated_at = ? WHERE id = ?",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        }
        let step = TraceStep::new("reprocess", now, 0, "ok")
            .detail(format!("{count} dead-lettered deliveries queued again"));
        insert_trace(conn, ids, id, generation, &step).await?;
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
    .execute(&mut *conn)
    .await?;
    // Deliveries not yet made for the earlier run would repeat the new run's: cancel them.
    sqlx::query(
        "UPDATE outbox SET status = 'cancelled', updated_at = ?
         WHERE message_id = ? AND generation < ? AND status IN ('pending', 'dead')",
    )
    .bind(now)
    .bind(id)
    .bind(generation)
    .execute(&mut *conn)
    .await?;
    let step =
        TraceStep::new("reprocess", now, 0, "ok").detail(format!("run {generation} started"));
    insert_trace(conn, ids, id, generation, &step).await?;
    Ok(Reprocessed::Rerun {
        channel,
        generation,
    })
}

pub(super) async fn recover_inflight(conn: &mut SqliteConnection) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET status = 'pending', redeliveries = redeliveries + 1 WHERE status = 'inflight'",
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
