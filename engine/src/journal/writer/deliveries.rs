//! Outbox bookkeeping: deliveries in flight and their results, reprocess, crash recovery.

use anyhow::{Result, anyhow};

use super::{Ids, Tx, insert_trace};
use crate::journal::Reprocessed;
use crate::journal::model::{Delivery, DeliveryResult, TraceStep};
use crate::journal::now_micros;

pub(super) async fn mark_inflight(tx: Tx<'_, '_>, list: Vec<i64>) -> Result<()> {
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

pub(super) async fn record(tx: Tx<'_, '_>, list: Vec<Delivery>, ids: &mut Ids) -> Result<()> {
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

pub(super) async fn reprocess(
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

pub(super) async fn recover_inflight(tx: Tx<'_, '_>) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE outbox SET status = 'pending', redeliveries = redeliveries + 1 WHERE status = 'inflight'",
    )
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}
