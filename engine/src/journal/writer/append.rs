//! Appending received messages: retransmission detection and the insert, a batch at a time.

use super::recent::{Recent, Remember, Seen, key};
use super::script::Script;
use super::{Ids, processed, raw_aad};
use crate::crypto::Cipher;
use crate::journal::model::{Appended, NewMessage, Status};
use crate::journal::now_micros;

/// A received message made ready for SQL: its id, the keyed digest and sealed copy of its
/// bytes, and whether it repeats an earlier message. Computed as the message reaches the
/// writer, while the writer waits for the rest of its batch, so the crypto is not on the
/// commit's critical path.
pub(super) struct Prepared {
    id: i64,
    digest: Vec<u8>,
    sealed: Vec<u8>,
    duplicate_of: Option<i64>,
    note: Option<String>,
    remember: Option<Remember>,
}

/// Prepares `m`, the next message of a batch whose earlier messages are `batch`.
pub(super) fn prepare(
    m: &NewMessage,
    batch: &[Prepared],
    recent: &Recent,
    cipher: &Cipher,
    ids: &mut Ids,
) -> Prepared {
    ids.message += 1;
    let id = ids.message;
    let digest = cipher.digest(&m.raw);
    let mut duplicate_of = None;
    let mut note = None;
    let mut remember = None;
    if let Some(key) = key(m) {
        // This batch's own messages first: they are newer than anything remembered.
        let in_batch = batch
            .iter()
            .rev()
            .filter_map(|p| p.remember.as_ref())
            .find(|r| r.key() == key);
        match in_batch.map(Remember::seen).or_else(|| recent.get(key)) {
            Some(Seen {
                id: first,
                digest: d,
            }) if *d == digest => duplicate_of = Some(*first),
            Some(Seen { id: first, .. }) => {
                note = Some(format!(
                    "control id already used by message {first} with other content"
                ))
            }
            None => {}
        }
        if duplicate_of.is_none() {
            let seen = Seen {
                id,
                digest: digest.clone(),
            };
            remember = Some(Remember::new(key, m.received_at, seen));
        }
    }
    if let Some(first) = duplicate_of {
        note = Some(format!(
            "retransmission of message {first}: not processed again"
        ));
    }
    let sealed = cipher.seal(&m.raw, &raw_aad(id));
    Prepared {
        id,
        digest,
        sealed,
        duplicate_of,
        note,
        remember,
    }
}

/// Adds the inserts of prepared messages (and the effects of their outcomes) to the script.
/// Returns the answers, and what to remember once the batch is committed.
pub(super) fn push(
    script: &mut Script,
    messages: Vec<(&NewMessage, Prepared)>,
    cipher: &Cipher,
    ids: &mut Ids,
) -> (Vec<Appended>, Vec<Remember>) {
    let now = now_micros();
    let mut appended = Vec::with_capacity(messages.len());
    let mut remember = Vec::new();
    let mut runs = Vec::new();
    let mut rows = Vec::with_capacity(messages.len());
    for (m, mut p) in messages {
        // A retransmission's outcome is not kept: the first copy's stands.
        let outcome = m.outcome.as_ref().filter(|_| p.duplicate_of.is_none());
        let (status, error) = match (p.duplicate_of, outcome) {
            (Some(_), _) => (Status::Duplicate, m.error.clone()),
            (None, Some(o)) => (o.status, o.error.clone()),
            (None, None) => (m.status, m.error.clone()),
        };
        // The steps of a run at receipt go on the message's row (read.rs shows them first).
        let steps = outcome.map(|o| serde_json::to_string(&o.steps).unwrap_or_default());
        if let Some(o) = outcome {
            runs.push((p.id, 0, o));
        }
        remember.extend(p.remember.take());
        appended.push(Appended {
            id: p.id,
            duplicate_of: p.duplicate_of,
        });
        rows.push((m, p, status, error, steps));
    }
    // 21 values a row: 500 rows stay under SQLite's bound-value limit.
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let q = script.statement(
            "INSERT INTO messages (id, channel, source, peer, received_at, receive_us, receive_note, control_id,
                 sender, message_type, content_type, size, digest, raw, status, ack, error, duplicate_of,
                 generation, updated_at, steps) ",
        );
        q.push_values(
            rows.by_ref().take(500),
            |mut b, (m, p, status, error, steps)| {
                b.push_bind(p.id)
                    .push_bind(m.channel.clone())
                    .push_bind(m.source.clone())
                    .push_bind(m.peer.clone())
                    .push_bind(m.received_at)
                    .push_bind(m.receive_us)
                    .push_bind(p.note)
                    .push_bind(m.control_id.clone())
                    .push_bind(m.sender.clone())
                    .push_bind(m.message_type.clone())
                    .push_bind(m.content_type.clone())
                    .push_bind(m.raw.len() as i64)
                    .push_bind(p.digest)
                    .push_bind(p.sealed)
                    .push_bind(status.as_str())
                    .push_bind(m.ack.clone())
                    .push_bind(error)
                    .push_bind(p.duplicate_of)
                    .push_bind(0i64)
                    .push_bind(now)
                    .push_bind(steps);
            },
        );
    }
    processed::push_outbox(script, &runs, cipher, ids, processed::Waiting::Any);
    (appended, remember)
}
