//! Appending received messages: retransmission detection and the insert, a batch at a time.

use super::recent::{Recent, Remember, Seen, key};
use super::script::Script;
use super::{Ids, processed, raw_aad};
use crate::crypto::Cipher;
use crate::journal::model::{Appended, NewMessage, Status};
use crate::journal::now_micros;

/// Adds the inserts of `messages` to the script. A message whose key and content match an
/// earlier one (remembered, or earlier in this batch) is stored as a duplicate of it. Returns
/// the answers, and what to remember once the batch is committed.
pub(super) fn push(
    script: &mut Script,
    messages: &[&NewMessage],
    recent: &Recent,
    cipher: &Cipher,
    ids: &mut Ids,
) -> (Vec<Appended>, Vec<Remember>) {
    let now = now_micros();
    let mut rows = Vec::with_capacity(messages.len());
    let mut appended = Vec::with_capacity(messages.len());
    let mut remember: Vec<Remember> = Vec::new();
    let mut runs = Vec::new();
    for m in messages {
        ids.message += 1;
        let id = ids.message;
        let digest = cipher.digest(&m.raw);
        let mut duplicate_of = None;
        let mut note = None;
        if let Some(key) = key(m) {
            // This batch's own messages first: they are newer than anything remembered.
            let in_batch = remember.iter().rev().find(|r| r.key() == key);
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
                remember.push(Remember::new(key, m.received_at, seen));
            }
        }
        if let Some(first) = duplicate_of {
            note = Some(format!(
                "retransmission of message {first}: not processed again"
            ));
        }
        // A retransmission's outcome is not kept: the first copy's stands.
        let outcome = m.outcome.as_ref().filter(|_| duplicate_of.is_none());
        let (status, error) = match (duplicate_of, outcome) {
            (Some(_), _) => (Status::Duplicate, m.error.clone()),
            (None, Some(o)) => (o.status, o.error.clone()),
            (None, None) => (m.status, m.error.clone()),
        };
        if let Some(o) = outcome {
            runs.push((id, 0, o));
        }
        let sealed = cipher.seal(&m.raw, &raw_aad(id));
        appended.push(Appended { id, duplicate_of });
        rows.push((id, *m, digest, sealed, status, error, duplicate_of, note));
    }
    // 20 values a row: 500 rows stay under SQLite's bound-value limit.
    for chunk in rows.chunks(500) {
        let q = script.statement(
            "INSERT INTO messages (id, channel, source, peer, received_at, receive_us, receive_note, control_id,
                 sender, message_type, content_type, size, digest, raw, status, ack, error, duplicate_of,
                 generation, updated_at) ",
        );
        q.push_values(
            chunk,
            |mut b, (id, m, digest, sealed, status, error, duplicate_of, note)| {
                b.push_bind(*id)
                    .push_bind(m.channel.clone())
                    .push_bind(m.source.clone())
                    .push_bind(m.peer.clone())
                    .push_bind(m.received_at)
                    .push_bind(m.receive_us)
                    .push_bind(note.clone())
                    .push_bind(m.control_id.clone())
                    .push_bind(m.sender.clone())
                    .push_bind(m.message_type.clone())
                    .push_bind(m.content_type.clone())
                    .push_bind(m.raw.len() as i64)
                    .push_bind(digest.clone())
                    .push_bind(sealed.clone())
                    .push_bind(status.as_str())
                    .push_bind(m.ack.clone())
                    .push_bind(error.clone())
                    .push_bind(*duplicate_of)
                    .push_bind(0i64)
                    .push_bind(now);
            },
        );
    }
    processed::push_effects(script, &runs, cipher, ids);
    (appended, remember)
}
