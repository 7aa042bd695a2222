//! Recording processing results: status, trace and outbox entries, a batch at a time.
//!
//! Only the first result of a message's current run counts: a reprocess (or a prune) in
//! between makes a result stale, a second result of the same run (the message was swept up
//! //! from the journal while also queued in memory) comes too late, and either is dropped. The
//! statements check the generation and the status themselves (a join on `messages`), so no
//! read is needed before writing.

use super::script::Script;
use super::{Ids, payload_aad, push_traces};
use crate::crypto::Cipher;
use crate::journal::model::{Outcome, Processed};
use crate::journal::now_micros;

pub(super) fn push(script: &mut Script, list: &[&Processed], cipher: &Cipher, ids: &mut Ids) {
    if list.is_empty() {
        return;
    }
    // The effects first, while the message still shows whether this result counts: a
    // message processed twice (swept from the journal while also queued in memory) keeps
    // the first result only, its outbox and trace included.
    let runs: Vec<_> = list
        .iter()
        .map(|p| (p.id, p.generation, &p.outcome))
        .collect();
    push_effects(script, &runs, cipher, ids, Waiting::Only);
    let now = now_micros();
    for chunk in list.chunks(500) {
        let q = script.statement(
            "UPDATE messages SET status = v.column2, error = v.column3, updated_at = v.column4 FROM (",
        );
        q.push_values(chunk, |mut b, p| {
            b.push_bind(p.id)
                .push_bind(p.outcome.status.as_str())
                .push_bind(p.outcome.error.clone())
                .push_bind(now)
                .push_bind(p.generation);
        });
        q.push(
            ") AS v WHERE messages.id = v.column1 AND messages.generation = v.column5
             AND messages.status = 'received'",
        );
    }
}

/// Which messages effects may be written for: any in the run they belong to, or only those
/// still waiting for their processing result.
#[derive(Clone, Copy)]
pub(super) enum Waiting {
    Any,
    Only,
}

impl Waiting {
    /// The join condition on `messages m` this adds.
    pub(super) fn condition(self) -> &'static str {
        match self {
            Waiting::Any => "",
            Waiting::Only => " AND m.status = 'received'",
        }
    }
}

/// Adds the trace and the outbox entries of runs `(message id, generation, outcome)`.
pub(super) fn push_effects(
    script: &mut Script,
    runs: &[(i64, i64, &Outcome)],
    cipher: &Cipher,
    ids: &mut Ids,
    waiting: Waiting,
) {
    let steps: Vec<_> = runs
        .iter()
        .flat_map(|(id, generation, o)| o.steps.iter().map(|s| (*id, *generation, s)))
        .collect();
    push_traces(script, ids, &steps, waiting);
    push_outbox(script, runs, cipher, ids, waiting);
}

/// Adds the outbox entries of runs `(message id, generation, outcome)`.
pub(super) fn push_outbox(
    script: &mut Script,
    runs: &[(i64, i64, &Outcome)],
    cipher: &Cipher,
    ids: &mut Ids,
    waiting: Waiting,
) {
    let now = now_micros();
    let mut rows = Vec::new();
    for (id, generation, outcome) in runs {
        for item in &outcome.outbox {
            ids.outbox += 1;
            let payload = item
                .payload
                .as_ref()
                .map(|bytes| cipher.seal(bytes, &payload_aad(ids.outbox)));
            rows.push((ids.outbox, *id, *generation, &item.destination, payload));
        }
    }
    for chunk in rows.chunks(500) {
        let q = script.statement(
            "INSERT INTO outbox (id, message_id, generation, channel, destination, payload, status,
                 next_attempt_at, updated_at)
             SELECT v.column1, v.column2, v.column3, m.channel, v.column4, v.column5, 'pending',
                 v.column6, v.column6
             FROM (",
        );
        q.push_values(
            chunk,
            |mut b, (id, message_id, generation, destination, payload)| {
                b.push_bind(*id)
                    .push_bind(*message_id)
                    .push_bind(*generation)
                    .push_bind((*destination).clone())
                    .push_bind(payload.clone())
                    .push_bind(now);
            },
        );
        // `WHERE true` tells SQLite's parser that ON CONFLICT is the upsert clause, not part
        // of the join. A message processed twice (after a sweep) keeps its first entries.
        q.push(") AS v JOIN messages m ON m.id = v.column2 AND m.generation = v.column3")
            .push(waiting.condition())
            .push(" WHERE true ON CONFLICT (message_id, generation, destination) DO NOTHING");
    }
}
