//! Recording processing results: status, trace and outbox entries, a batch at a time.

use std::collections::HashMap;

use anyhow::Result;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Ids, Tx, insert_traces, payload_aad};
use crate::crypto::Cipher;
use crate::journal::model::Processed;
use crate::journal::now_micros;

pub(super) async fn record_all(
    tx: Tx<'_, '_>,
    list: Vec<Processed>,
    cipher: &Cipher,
    ids: &mut Ids,
) -> Result<()> {
    // Only results of a message's current run count: a reprocess (or a prune) in between
    // makes a result stale, and it is dropped.
    let mut current: HashMap<i64, (i64, String)> = HashMap::new();
    for chunk in list.chunks(500) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, generation, channel FROM messages WHERE id IN (",
        );
        let mut sep = q.separated(", ");
        for p in chunk {
            sep.push_bind(p.id);
        }
        q.push(")");
        for row in q.build().persistent(false).fetch_all(&mut **tx).await? {
            current.insert(row.get("id"), (row.get("generation"), row.get("channel")));
        }
    }
    let live: Vec<&Processed> = list
        .iter()
        .filter(|p| {
            current
                .get(&p.id)
                .is_some_and(|(generation, _)| *generation == p.generation)
        })
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    let now = now_micros();
    for chunk in live.chunks(500) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE messages SET status = v.column2, error = v.column3, updated_at = v.column4 FROM (",
        );
        q.push_values(chunk, |mut b, p| {
            b.push_bind(p.id)
                .push_bind(p.status.as_str())
                .push_bind(p.error.clone())
                .push_bind(now);
        });
        q.push(") AS v WHERE messages.id = v.column1");
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    let steps = live
        .iter()
        .flat_map(|p| p.steps.iter().map(|s| (p.id, p.generation, s)))
        .collect();
    insert_traces(tx, ids, steps).await?;
    let mut rows = Vec::new();
    for p in &live {
        let channel = &current[&p.id].1;
        for item in &p.outbox {
            ids.outbox += 1;
            let payload = item
                .payload
                .as_ref()
                .map(|bytes| cipher.seal(bytes, &payload_aad(ids.outbox)));
            rows.push((
                ids.outbox,
                p.id,
                p.generation,
                channel.clone(),
                item.destination.clone(),
                payload,
            ));
        }
    }
    for chunk in rows.chunks(500) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO outbox (id, message_id, generation, channel, destination, payload, status,
                 next_attempt_at, updated_at) ",
        );
        q.push_values(
            chunk,
            |mut b, (id, message_id, generation, channel, destination, payload)| {
                b.push_bind(*id)
                    .push_bind(*message_id)
                    .push_bind(*generation)
                    .push_bind(channel.clone())
                    .push_bind(destination.clone())
                    .push_bind(payload.clone())
                    .push_bind("pending")
                    .push_bind(now)
                    .push_bind(now);
            },
        );
        // A message processed twice (after a sweep) keeps its first outbox entries.
        q.push(" ON CONFLICT (message_id, generation, destination) DO NOTHING");
        q.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}
