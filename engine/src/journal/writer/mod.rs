//! The journal's single writer, on a thread of its own. Whatever is waiting is applied in one
//! transaction and committed with one fsync (group commit); each caller is answered after the
//! commit.
//!
//! A batch is gathered (`gather.rs`) while its messages are prepared (`append::prepare`), then
//! sent to SQLite as one multi-statement script, `BEGIN` to `COMMIT` (`script.rs`): with SQLite
//! behind an async driver, each query is a round trip to the database thread.

mod append;
mod deliveries;
mod gather;
mod processed;
mod recent;
mod script;

use std::sync::Arc;

use anyhow::{Result, anyhow};
use script::Script;
use sqlx::{Executor, Sqlite, SqliteConnection};
use tokio::sync::oneshot;

use super::Reprocessed;
use super::model::*;
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

/// Ids the writer hands out itself: it is the only writer, and knowing the id before the
/// insert lets the sealed payload be bound to its row in a single statement.
pub(super) struct Ids {
    message: i64,
    outbox: i64,
    trace_seq: i64,
}

/// What an operation produced; sent to its caller once the batch is committed.
enum Done {
    Appended(Appended),
    Unit,
    Reprocessed(Reprocessed),
    Count(u64),
}

impl Op {
    /// Answers the caller.
    fn answer(self, result: Result<Done>) {
        fn send<T>(reply: Reply<T>, result: Result<T>) {
            // The caller may have given up waiting; the outcome stands in the journal anyway.
            let _ = reply.send(result);
        }
        match (self, result) {
            (Op::Append(_, r), Ok(Done::Appended(a))) => send(r, Ok(a)),
            (Op::Reprocess { reply, .. }, Ok(Done::Reprocessed(x))) => send(reply, Ok(x)),
            (Op::RecoverInflight(r) | Op::Delete(_, r), Ok(Done::Count(n))) => send(r, Ok(n)),
            (
                Op::Processed(_, r)
                | Op::Inflight(_, r)
                | Op::Delivered(_, r)
                | Op::Compact(r)
                | Op::Flush(r),
                Ok(Done::Unit),
            ) => send(r, Ok(())),
            (op, Ok(_)) => op.answer(Err(anyhow!("journal writer: unexpected result kind"))),
            (Op::Append(_, r), Err(e)) => send(r, Err(e)),
            (Op::Reprocess { reply, .. }, Err(e)) => send(reply, Err(e)),
            (Op::RecoverInflight(r) | Op::Delete(_, r), Err(e)) => send(r, Err(e)),
            (
                Op::Processed(_, r)
                | Op::Inflight(_, r)
                | Op::Delivered(_, r)
                | Op::Compact(r)
                | Op::Flush(r),
                Err(e),
            ) => send(r, Err(e)),
        }
    }

    /// Operations that run outside any transaction, after the batch's commit.
    fn after_commit(&self) -> bool {
        matches!(self, Op::Compact(_) | Op::Flush(_))
    }
}

/// Starts the writer on a thread of its own: it blocks while gathering a batch (see
/// `gather.rs`), with deadlines finer than the async runtime's timers, and drives the
/// database calls of the batch on that thread.
pub(super) fn spawn(
    conn: SqliteConnection,
    rx: flume::Receiver<Op>,
    cipher: Arc<Cipher>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || runtime.block_on(run(conn, rx, cipher)))?;
    Ok(())
}

async fn run(mut conn: SqliteConnection, rx: flume::Receiver<Op>, cipher: Arc<Cipher>) {
    let start = async {
        let ids = load_ids(&mut conn).await?;
        let recent = recent::Recent::load(&mut conn, crate::journal::now_micros()).await?;
        anyhow::Ok((ids, recent))
    };
    let (mut ids, mut recent) = match start.await {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "journal writer cannot start");
            return;
        }
    };
    let mut gatherer = gather::Gatherer::new(rx);
    let mut ops = Vec::with_capacity(gather::MAX_BATCH);
    let mut prepared = Vec::with_capacity(gather::MAX_BATCH);
    while gatherer.next(&mut ops, |op| {
        if let Op::Append(m, _) = op {
            let p = append::prepare(m, &prepared, &recent, &cipher, &mut ids);
            prepared.push(p);
        }
    }) {
        let started = std::time::Instant::now();
        let (later, batch): (Vec<Op>, Vec<Op>) = ops.drain(..).partition(Op::after_commit);
        let size = batch.len();
        let ready = std::mem::take(&mut prepared);
        if !batch.is_empty() {
            match commit(&mut conn, &batch, ready, &cipher, &mut ids).await {
                Ok((done, seen)) => {
                    recent.remember(seen);
                    for (op, d) in batch.into_iter().zip(done) {
                        op.answer(Ok(d));
                    }
                }
                Err(e) => {
                    ids = recover(&mut conn, ids, &e).await;
                    // One bad operation must not fail its neighbours: each runs again alone,
                    // and only the ones that fail on their own get the error.
                    for op in batch {
                        let one = std::slice::from_ref(&op);
                        let ready = match &op {
                            Op::Append(m, _) => {
                                vec![append::prepare(m, &[], &recent, &cipher, &mut ids)]
                            }
                            _ => Vec::new(),
                        };
                        let alone = commit(&mut conn, one, ready, &cipher, &mut ids).await;
                        let alone = match alone {
                            Ok((mut done, seen)) => {
                                recent.remember(seen);
                                Ok(done.remove(0))
                            }
                            Err(e) => {
                                ids = recover(&mut conn, ids, &e).await;
                                Err(e)
                            }
                        };
                        op.answer(alone);
                    }
                }
            }
        }
        tracing::debug!(
            ops = size,
            micros = started.elapsed().as_micros() as u64,
            "journal batch"
        );
        for op in later {
            let result = match op {
                Op::Compact(_) => compact(&mut conn).await.map(|_| Done::Unit),
                _ => Ok(Done::Unit),
            };
            op.answer(result);
        }
    }
}

/// After a failed batch: the transaction is rolled back and the ids its rows consumed are
/// read again.
async fn recover(conn: &mut SqliteConnection, ids: Ids, error: &anyhow::Error) -> Ids {
    tracing::error!(error = %error, "journal commit failed");
    // Fails harmlessly when the failure already ended the transaction.
    let _ = conn.execute("ROLLBACK").await;
    load_ids(conn).await.unwrap_or(ids)
}

/// Applies `ops` (their appends already `prepared`, in order) in one transaction and commits
/// it (one fsync). The hot operations (appends,
/// processing results, deliveries) are written as one script: a batch costs one round trip
/// to the database thread, whatever its size. Returns the answers, and the messages to
/// remember for retransmission detection once the commit is known to have held.
async fn commit(
    conn: &mut SqliteConnection,
    ops: &[Op],
    prepared: Vec<append::Prepared>,
    cipher: &Cipher,
    ids: &mut Ids,
) -> Result<(Vec<Done>, Vec<recent::Remember>)> {
    let appends: Vec<&NewMessage> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Append(m, _) => Some(&**m),
            _ => None,
        })
        .collect();
    if appends.len() != prepared.len() {
        return Err(anyhow!(
            "journal writer: {} appends, {} prepared",
            appends.len(),
            prepared.len()
        ));
    }
    let mut script = Script::new();
    script.statement("BEGIN IMMEDIATE");
    let (appended, seen) = append::push(
        &mut script,
        appends.into_iter().zip(prepared).collect(),
        cipher,
        ids,
    );
    let mut appended = appended.into_iter();
    let processed: Vec<&Processed> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Processed(p, _) => Some(&**p),
            _ => None,
        })
        .collect();
    processed::push(&mut script, &processed, cipher, ids);

    let mut done = Vec::with_capacity(ops.len());
    for op in ops {
        done.push(match op {
            Op::Append(..) => Done::Appended(
                appended
                    .next()
                    .ok_or_else(|| anyhow!("append without a row"))?,
            ),
            Op::Processed(..) | Op::Compact(_) | Op::Flush(_) => Done::Unit,
            Op::Inflight(list, _) => {
                deliveries::push_inflight(&mut script, list);
                Done::Unit
            }
            Op::Delivered(list, _) => {
                deliveries::push_results(&mut script, list, ids);
                Done::Unit
            }
            // The rare operations read as they go: what is queued so far runs first.
            Op::Reprocess {
                id, only_failed, ..
            } => {
                script.run(conn).await?;
                Done::Reprocessed(deliveries::reprocess(conn, *id, *only_failed, ids).await?)
            }
            Op::RecoverInflight(_) => {
                script.run(conn).await?;
                Done::Count(deliveries::recover_inflight(conn).await?)
            }
            Op::Delete(list, _) => {
                script.run(conn).await?;
                Done::Count(delete(conn, list).await?)
            }
        });
    }
    script.statement("COMMIT");
    script.run(conn).await?;
    Ok((done, seen))
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

fn aad(kind: &str, id: i64) -> Vec<u8> {
    format!("{kind}:{id}").into_bytes()
}

pub(crate) fn raw_aad(id: i64) -> Vec<u8> {
    aad("message", id)
}

pub(crate) fn payload_aad(id: i64) -> Vec<u8> {
    aad("outbox", id)
}

/// Adds trace rows to the script; a row is kept only while its message is still in the
/// run (generation) it belongs to.
fn push_traces(
    script: &mut Script,
    ids: &mut Ids,
    rows: &[(i64, i64, &TraceStep)],
    waiting: processed::Waiting,
) {
    // 8 values a row, well under SQLite's limit of 32766 bound values per statement.
    for chunk in rows.chunks(1000) {
        let q = script.statement(
            "INSERT INTO trace (message_id, seq, generation, step, at, duration_us, outcome, detail)
             SELECT v.* FROM (",
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
        q.push(") AS v JOIN messages m ON m.id = v.column1 AND m.generation = v.column3")
            .push(waiting.condition());
    }
}

async fn insert_trace(
    conn: &mut SqliteConnection,
    ids: &mut Ids,
    id: i64,
    generation: i64,
    step: &TraceStep,
) -> Result<()> {
    let mut script = Script::new();
    push_traces(
        &mut script,
        ids,
        &[(id, generation, step)],
        processed::Waiting::Any,
    );
    script.run(conn).await
}

async fn delete(conn: &mut SqliteConnection, list: &[i64]) -> Result<u64> {
    let mut count = 0;
    for chunk in list.chunks(500) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("DELETE FROM messages WHERE id IN (");
        script::push_ids(&mut q, chunk);
        count += q
            .build()
            .persistent(false)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(count)
}

async fn compact(conn: &mut SqliteConnection) -> Result<()> {
    conn.execute("PRAGMA incremental_vacuum").await?;
    // The background checkpointer may hold the checkpoint lock for a moment: SQLite then
    // answers "busy" at once rather than waiting, so try again a few times.
    for _ in 0..50 {
        let busy: i64 = sqlx::query_scalar("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await?;
        if busy == 0 {
            return Ok(());
        }
        // The writer's own thread: nothing else waits on it meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(anyhow!(
        "the write-ahead log could not be truncated (checkpoint kept busy)"
    ))
}
