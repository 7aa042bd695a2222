//! The writer's memory of recent messages, to recognise retransmissions.
//!
//! A sender retransmits a message when it did not get the ACK: within seconds or minutes, as
//! its timeout and retry say. The writer remembers the messages of the last [`WINDOW`] (at
//! most [`CAPACITY`] of them) by sender and control id, loads them from the journal at start,
//! and needs no index on disk: such an index had one insertion point per sender, which cost
//! every commit one page written per sender.
//!
//! A key is kept as a 64-bit hash of (channel, sender, control id). Two keys colliding would
//! at worst make a message look like a retransmission of another one; it is taken for one
//! only if the keyed digests of their bytes are equal too, i.e. if it is the same message.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use anyhow::Result;
use sqlx::{Row, SqliteConnection};

use crate::journal::model::{NewMessage, Status};

/// How long a message is remembered.
pub(super) const WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The most messages remembered (about 60 bytes each).
pub(super) const CAPACITY: usize = 200_000;

/// A message as remembered: its id and the keyed digest of its bytes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    pub id: i64,
    pub digest: Vec<u8>,
}

/// What a committed batch adds to the memory.
pub(super) struct Remember {
    key: u64,
    received_at: i64,
    seen: Seen,
}

impl Remember {
    pub fn new(key: u64, received_at: i64, seen: Seen) -> Self {
        Self {
            key,
            received_at,
            seen,
        }
    }

    pub fn key(&self) -> u64 {
        self.key
    }

    pub fn seen(&self) -> &Seen {
        &self.seen
    }
}

#[derive(Default)]
pub(super) struct Recent {
    by_key: HashMap<u64, Seen>,
    /// Insertion order, for forgetting the oldest: (received_at, key, id).
    order: VecDeque<(i64, u64, i64)>,
}

/// The key of a message that takes part in retransmission detection: an accepted message
/// with a control id.
pub(super) fn key(m: &NewMessage) -> Option<u64> {
    (m.status == Status::Received)
        .then_some(m.control_id.as_deref())
        .flatten()
        .map(|control_id| hash_key(&m.channel, &m.sender, control_id))
}

fn hash_key(channel: &str, sender: &str, control_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (channel, sender, control_id).hash(&mut h);
    h.finish()
}

impl Recent {
    /// The messages of the last [`WINDOW`] that retransmissions may repeat.
    pub async fn load(conn: &mut SqliteConnection, now: i64) -> Result<Recent> {
        let since = now - WINDOW.as_micros() as i64;
        let rows = sqlx::query(
            "SELECT id, channel, sender, control_id, digest, received_at FROM messages
             WHERE received_at >= ? AND control_id IS NOT NULL
               AND status NOT IN ('rejected', 'duplicate')
             ORDER BY id DESC LIMIT ?",
        )
        .bind(since)
        .bind(CAPACITY as i64)
        .fetch_all(&mut *conn)
        .await?;
        let mut recent = Recent::default();
        recent.remember(rows.iter().rev().map(|row| {
            let key = hash_key(row.get("channel"), row.get("sender"), row.get("control_id"));
            Remember::new(
                key,
                row.get("received_at"),
                Seen {
                    id: row.get("id"),
                    digest: row.get::<Option<Vec<u8>>, _>("digest").unwrap_or_default(),
                },
            )
        }));
        Ok(recent)
    }

    pub fn get(&self, key: u64) -> Option<&Seen> {
        self.by_key.get(&key)
    }

    /// Adds what a committed batch appended, then forgets what is past the window or the
    /// capacity.
    pub fn remember(&mut self, batch: impl IntoIterator<Item = Remember>) {
        let mut newest = i64::MIN;
        for r in batch {
            newest = newest.max(r.received_at);
            self.order.push_back((r.received_at, r.key, r.seen.id));
            self.by_key.insert(r.key, r.seen);
        }
        let horizon = newest.saturating_sub(WINDOW.as_micros() as i64);
        while let Some(&(at, key, id)) = self.order.front() {
            if self.order.len() <= CAPACITY && at >= horizon {
                break;
            }
            self.order.pop_front();
            // The key may have been used again since (other content): keep the newer entry.
            if self.by_key.get(&key).is_some_and(|seen| seen.id == id) {
                self.by_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: i64) -> Seen {
        Seen {
            id,
            digest: vec![id as u8],
        }
    }

    #[test]
    fn remembers_and_forgets_past_the_window() {
        let mut recent = Recent::default();
        let hour = 3_600_000_000i64;
        recent.remember([
            Remember::new(1, 0, seen(1)),
            Remember::new(2, hour, seen(2)),
        ]);
        assert_eq!(recent.get(1), Some(&seen(1)));
        // A day and a bit later, the first is forgotten, the second not yet.
        recent.remember([Remember::new(3, 24 * hour + 1, seen(3))]);
        assert_eq!(recent.get(1), None);
        assert_eq!(recent.get(2), Some(&seen(2)));
        assert_eq!(recent.get(3), Some(&seen(3)));
    }

    #[test]
    fn keys_differ_by_channel_sender_and_control_id() {
        let k = hash_key("in", "LAB^HOSP", "1");
        assert_ne!(k, hash_key("out", "LAB^HOSP", "1"));
        assert_ne!(k, hash_key("in", "RAD^HOSP", "1"));
        assert_ne!(k, hash_key("in", "LAB^HOSP", "2"));
        assert_eq!(k, hash_key("in", "LAB^HOSP", "1"));
    }
}
