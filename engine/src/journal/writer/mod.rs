//! The journal's single writer. Whatever is waiting is applied in one transaction and
//! committed with one fsync (group commit); each caller is answered after the commit.
//!
//! The hot operations (appending received messages, recording their processing) are applied
//! as a few multi-row statements per batch rather than a few statements per message: with
//! SQLite behind an async driver, each statement is a round trip to the database thread.

mod append;
mod deliveries;
mod processed;

use std::sync::Arc;

use anyhow::{Result, anyhow};
use sqlx::{Connection, Executor, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::Reprocessed;
use super::model::*;
use crate::crypto::Cipher;

type Reply<T> = oneshot::Sender<Result<T>>;
type Tx<'t, 'c> = &'t mut Transaction<'c, Sqlite>;

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

/// Ids the writer hands out itself: it is the only writer, and knowing the id before the
/// insert lets the sealed payload be bound to its row in a single statement.
pub(super) struct Ids {
    message: i64,
    outbox: i64,
    trace_seq: i64,
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

/// Operations of one batch, sorted by kind. Appends go first: the other operations can only
/// concern messages committed by earlier batches, so this order changes no outcome.
#[derive(Default)]
struct Batch {
    appends: Vec<(NewMessage, Reply<Appended>)>,
    processed: Vec<(Processed, Reply<()>)>,
    others: Vec<Op>,
    after_commit: Vec<Op>,
}

impl Batch {
    fn sort(ops: &mut Vec<Op>) -> Batch {
        let mut b = Batch::default();
        for op in ops.drain(..) {
            match op {
                Op::Append(m, reply) => b.appends.push((*m, reply)),
                Op::Processed(p, reply) => b.processed.push((*p, reply)),
                op @ (Op::Compact(_) | Op::Flush(_)) => b.after_commit.push(op),
                op => b.others.push(op),
            }
        }
        b
    }
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
    let mut ops = Vec::with_capacity(1024);
    while rx.recv_many(&mut ops, 1024).await > 0 {
        let size = ops.len();
        let started = std::time::Instant::now();
        let batch = Batch::sort(&mut ops);
        let mut answers: Vec<Answer> = Vec::new();
        let outcome = async {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            if !batch.appends.is_empty() {
                let (messages, replies): (Vec<_>, Vec<_>) = batch.appends.into_iter().unzip();
                match append::append_all(&mut tx, messages, &cipher, &mut ids).await {
                    Ok(appended) => {
                        for (reply, a) in replies.into_iter().zip(appended) {
                            answers.push(answer(reply, Ok(a)));
                        }
                    }
                    // The whole transaction is abandoned: nobody in this batch gets an ACK.
                    Err(e) => return Err(e),
                }
            }
            if !batch.processed.is_empty() {
                let (list, replies): (Vec<_>, Vec<_>) = batch.processed.into_iter().unzip();
                processed::record_all(&mut tx, list, &cipher, &mut ids).await?;
                answers.extend(replies.into_iter().map(|r| answer(r, Ok(()))));
            }
            for op in batch.others {
                answers.push(apply(&mut tx, op, &mut ids).await);
            }
            tx.commit().await?;
            anyhow::Ok(())
        }
        .await;
        let error = outcome.err();
        if let Some(e) = &error {
            tracing::error!(error = %e, "journal commit failed");
            // Ids may have been consumed by rolled back rows: reload them.
            if let Ok(fresh) = load_ids(&mut conn).await {
                ids = fresh;
            }
        }
        for a in answers {
            a(error.as_ref());
        }
        tracing::debug!(
            ops = size,
            micros = started.elapsed().as_micros() as u64,
            "journal batch"
        );
        for op in batch.after_commit {
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
    let max = |table: &'static str, column: &'static str| {
        format!("SELECT IFNULL(MAX({column}), 0) FROM {table}")
    };
    let mut get = async |sql: String| -> Result<i64> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await?)
    };
    Ok(Ids {
        message: get(max("messages", "id")).await?,
        outbox: get(max("outbox", "id")).await?,
        trace_seq: get(max("trace", "seq")).await?,
    })
}

/// The rarer operations, each in its own savepoint so one failure does not sink the batch.
async fn apply(tx: Tx<'_, '_>, op: Op, ids: &mut Ids) -> Answer {
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
        Op::Inflight(list, reply) => {
            in_savepoint!(reply, |sp| deliveries::mark_inflight(&mut sp, list))
        }
        Op::Delivered(list, reply) => {
            in_savepoint!(reply, |sp| deliveries::record(&mut sp, list, ids))
        }
        Op::Reprocess {
            id,
            only_failed,
            reply,
        } => {
            in_savepoint!(reply, |sp| deliveries::reprocess(
                &mut sp,
                id,
                only_failed,
                ids
            ))
        }
        Op::RecoverInflight(reply) => {
            in_savepoint!(reply, |sp| deliveries::recover_inflight(&mut sp))
        }
        Op::Delete(list, reply) => in_savepoint!(reply, |sp| delete(&mut sp, list)),
        Op::Append(..) | Op::Processed(..) | Op::Compact(_) | Op::Flush(_) => {
            unreachable!("sorted out by Batch::sort")
        }
    }
}

fn aad(kind: &str, id: i64) -> Vec<u8> {
    format!("{kind}:{id}").into_bytes()
}

pub(crate) fn raw_aad(id: i64) -> Vec<u8> {
    aad("message", id)
}

pub(crate) fn payload_aad(id: i64) -> Vec<u8> {
    aad("outbox", id)
}

/// Trace rows of a batch in one statement.
async fn insert_traces(
    tx: Tx<'_, '_>,
    ids: &mut Ids,
    rows: Vec<(i64, i64, &TraceStep)>,
) -> Result<()> {
    // 8 values a row, well under SQLite's limit of 32766 bound values per statement.
    for chunk in rows.chunks(1000) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO trace (message_id, seq, generation, step, at, duration_us, outcome, detail) ",
        );
        q.push_values(chunk, |mut b, (id, generation, step)| {
            ids.trace_seq += 1;
            b.push_bind(*id)
                .push_bind(ids.trace_seq)
                .push_bind(*generation)
                .push_bind(step.step.clone())
                .push_bind(step.at)
                .push_bind(step.duration_us)
                .push_bind(step.outcome.clone())
                .push_bind(step.detail.clone());
        });
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_trace(
    tx: Tx<'_, '_>,
    ids: &mut Ids,
    id: i64,
    generation: i64,
    step: &TraceStep,
) -> Result<()> {
    insert_traces(tx, ids, vec![(id, generation, step)]).await
}

async fn delete(tx: Tx<'_, '_>, list: Vec<i64>) -> Result<u64> {
    let mut count = 0;
    for chunk in list.chunks(500) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("DELETE FROM messages WHERE id IN (");
        let mut ids = q.separated(", ");
        for id in chunk {
            ids.push_bind(*id);
        }
        q.push(")");
        count += q
            .build()
            .persistent(false)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    Ok(count)
}

async fn compact(conn: &mut SqliteConnection) -> Result<()> {
    conn.execute("PRAGMA incremental_vacuum").await?;
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    Ok(())
}
