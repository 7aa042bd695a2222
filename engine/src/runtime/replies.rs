//! Answers for senders that wait. An HTTP source journals a message, hands it on like any
//! other, then waits for what its destination answered (the FHIR store's
//! transaction-response) to give it back. The outbox worker posts the answer once the
//! delivery is recorded in the journal; an answer may arrive before its sender starts to wait
//! (the worker can be quicker than the request), so it is kept a short while.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::channel::destination::Reply;

/// How long an answer nobody waits for yet is kept.
const KEEP: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Replies {
    slots: Mutex<HashMap<i64, Slot>>,
}

enum Slot {
    Waiting(oneshot::Sender<Reply>),
    Ready(Reply, Instant),
}

impl Replies {
    /// The answer to message `id`.
    pub fn answer(&self, id: i64, reply: Reply) {
        let mut slots = self.slots.lock().expect("replies");
        match slots.remove(&id) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(reply);
            }
            _ => {
                slots.retain(|_, s| !matches!(s, Slot::Ready(_, at) if at.elapsed() > KEEP));
                slots.insert(id, Slot::Ready(reply, Instant::now()));
            }
        }
    }

    /// Waits at most `timeout` for the answer to message `id`.
    pub async fn wait(&self, id: i64, timeout: Duration) -> Option<Reply> {
        let rx = {
            let mut slots = self.slots.lock().expect("replies");
            if let Some(Slot::Ready(reply, _)) = slots.remove(&id) {
                return Some(reply);
            }
            let (tx, rx) = oneshot::channel();
            slots.insert(id, Slot::Waiting(tx));
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Some(reply),
            _ => {
                let mut slots = self.slots.lock().expect("replies");
                if let Some(Slot::Ready(reply, _)) = slots.remove(&id) {
                    return Some(reply);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(status: u16) -> Reply {
        Reply {
            status,
            body: json!({}),
        }
    }

    #[tokio::test]
    async fn an_answer_reaches_its_sender_whether_it_comes_before_or_after_the_wait() {
        let replies = std::sync::Arc::new(Replies::default());
        replies.answer(1, reply(200));
        assert_eq!(
            replies.wait(1, Duration::from_secs(1)).await,
            Some(reply(200))
        );
        let r = replies.clone();
        let waiting = tokio::spawn(async move { r.wait(2, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        replies.answer(2, reply(422));
        assert_eq!(waiting.await.unwrap(), Some(reply(422)));
        assert_eq!(replies.wait(3, Duration::from_millis(10)).await, None);
        assert!(
            replies.slots.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }
}
