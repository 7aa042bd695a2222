//! Appending received messages: duplicate detection and the insert, a batch at a time.

use std::collections::HashMap;

use anyhow::Result;
use sqlx::{Row, SqliteConnection};

use super::script::Script;
use super::{Ids, processed, raw_aad};
use crate::crypto::Cipher;
use crate::journal::model::{Appended, NewMessage, Status};
use crate::journal::now_micros;

/// Identity of a message for retransmission detection: channel, sender, control id.
type Key = (String, String, String);

/// The latest accepted message with each key: id and digest of its raw bytes.
type Earlier = HashMap<Key, (i64, Option<Vec<u8>>)>;

fn key(m: &NewMessage) -> Option<Key> {
    (m.status == Status::Received)
        .then(|| {
            m.control_id
                .clone()
                .map(|c| (m.channel.clone(), m.sender.clone(), c))
        })
        .flatten()
}

/// Opens the write transaction and, in the same round trip, looks up the messages already
/// journaled under the keys of this batch.
pub(super) async fn begin_and_find_earlier(
    conn: &mut SqliteConnection,
    messages: &[&NewMessage],
) -> Result<Earlier> {
    let keys: Vec<Key> = messages.iter().filter_map(|m| key(m)).collect();
    let mut script = Script::new();
    script.statement("BEGIN IMMEDIATE");
    // Three values a key: 300 keys stay well under SQLite's bound-value limit.
    for chunk in keys.chunks(300) {
        let q = script.statement(
            "SELECT m.id, m.digest, m.channel, m.sender, m.control_id FROM messages m JOIN (",
        );
        q.push_values(chunk, |mut b, (channel, sender, control_id)| {
            b.push_bind(channel.clone())
                .push_bind(sender.clone())
                .push_bind(control_id.clone());
        });
        q.push(
            ") AS k ON m.channel = k.column1 AND m.sender = k.column2 AND m.control_id = k.column3
             WHERE m.status NOT IN ('rejected', 'duplicate') ORDER BY m.id",
        );
    }
    let mut found = HashMap::new();
    for row in script.fetch(conn).await? {
        let k = (row.get("channel"), row.get("sender"), row.get("control_id"));
        found.insert(k, (row.get("id"), row.get("digest")));
    }
    Ok(found)
}

/// Adds the inserts of `messages` to the script. A message whose key and content match an
/// earlier one (in the journal, or earlier in this batch) is stored as a duplicate of it.
pub(super) fn push(
    script: &mut Script,
    messages: &[&NewMessage],
    mut earlier: Earlier,
    cipher: &Cipher,
    ids: &mut Ids,
) -> Vec<Appended> {
    let now = now_micros();
    let mut rows = Vec::with_capacity(messages.len());
    let mut appended = Vec::with_capacity(messages.len());
    let mut runs = Vec::new();
    for m in messages {
        ids.message += 1;
        let id = ids.message;
        let digest = cipher.digest(&m.raw);
        let mut duplicate_of = None;
        let mut note = None;
        if let Some(key) = key(m) {
            match earlier.get(&key) {
                Some((first, Some(d))) if *d == digest => duplicate_of = Some(*first),
                Some((first, _)) => {
                    note = Some(format!(
                        "control id already used by message {first} with other content"
                    ))
                }
                None => {}
            }
            if duplicate_of.is_none() {
                earlier.insert(key, (id, Some(digest.clone())));
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
    appended
}
