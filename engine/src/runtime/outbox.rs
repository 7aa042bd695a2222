//! One worker per destination: delivers its outbox in order, retries with backoff, and
//! dead-letters what cannot be delivered. Order is kept: while the head of the queue waits
//! for its retry, the messages behind it wait too (HL7 receivers expect events in order).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::pressure::Pressure;
use super::replies::Replies;
use crate::channel::DestinationConfig;
use crate::channel::destination::{Destination, Reply};
use crate::journal::{Delivery, DeliveryResult, Journal, TraceStep, now_micros};
use crate::metrics::ChannelStats;

pub(super) struct Worker {
    pub journal: Journal,
    pub channel: String,
    pub config: DestinationConfig,
    pub destination: Arc<dyn Destination>,
    pub wake: Arc<Notify>,
    pub stats: Arc<ChannelStats>,
    /// Shared by the channel's workers: dead letters are recorded one at a time.
    pub dead_letters: Arc<tokio::sync::Mutex<()>>,
    /// Where a waiting sender gets the destination's answer (HTTP sources only).
    pub replies: Option<Arc<Replies>>,
    pub shutdown: CancellationToken,
    pub pressure: Arc<Pressure>,
}

const BATCH: i64 = 64;
const HELD_BATCH: i64 = 16;
/// Even without a wake-up, look at the queue this often (a reprocess from another node...).
const POLL: Duration = Duration::from_secs(5);

pub(super) async fn run(w: Worker) {
    loop {
        if w.shutdown.is_cancelled() {
            return;
        }
        let size = w.pressure.next_batch(BATCH, HELD_BATCH).await;
        let head = match w.journal.outbox_head(&w.channel, &w.config.id, size).await {
            Ok(head) => head,
            Err(e) => {
                tracing::error!(channel = %w.channel, destination = %w.config.id, error = %e, "cannot read the outbox");
                w.idle(POLL).await;
                continue;
            }
        };
        let now = now_micros();
        let Some(first) = head.first() else {
            w.idle(POLL).await;
            continue;
        };
        if first.next_attempt_at > now {
            let wait = Duration::from_micros((first.next_attempt_at - now) as u64);
            w.idle(wait.min(POLL)).await;
            continue;
        }
        let due: Vec<_> = head
            .into_iter()
            .take_while(|i| i.next_attempt_at <= now)
            .collect();
        if let Err(e) = w
            .journal
            .mark_inflight(due.iter().map(|i| i.id).collect())
            .await
        {
            tracing::error!(error = %e, "cannot mark deliveries in flight");
            w.idle(POLL).await;
            continue;
        }
        let mut results = Vec::with_capacity(due.len());
        let mut answers: Vec<(i64, Reply)> = Vec::new();
        let mut stop = false;
        // A destination that delivers many at once does so now; the loop below then records
        // each item's outcome as if it had been delivered alone.
        let batch_started = Instant::now();
        let mut batched = match w.destination.deliver_all(&w.channel, &due) {
            Some(all) => Some(all.await.into_iter()),
            None => None,
        };
        let batch_took = batch_started.elapsed();
        for item in &due {
            // Outcomes already known (delivered together) are recorded whatever happens.
            if batched.is_none() && (stop || w.shutdown.is_cancelled()) {
                results.push(Delivery {
                    outbox_id: item.id,
                    message_id: item.message_id,
                    result: DeliveryResult::Release,
                    step: None,
                });
                continue;
            }
            let at = now_micros();
            let started = Instant::now();
            let (outcome, took) = match batched.as_mut().and_then(Iterator::next) {
                Some(outcome) => (outcome, batch_took),
                None => {
                    let outcome = w.destination.deliver(&w.channel, item).await;
                    (outcome, started.elapsed())
                }
            };
            w.stats.delivery_latency.observe(took);
            let step_name = format!("destination:{}", w.config.id);
            let step = |outcome: &str, detail: String| {
                TraceStep::new(step_name.clone(), at, took.as_micros() as i64, outcome)
                    .detail(detail)
            };
            let attempt = item.attempts as u32 + 1;
            let (result, step) = match outcome {
                Ok(delivered) => {
                    w.stats.sent.fetch_add(1, Relaxed);
                    w.stats.queued.fetch_sub(1, Relaxed);
                    if let Some(reply) = delivered.reply {
                        answers.push((item.message_id, reply));
                    }
                    (DeliveryResult::Sent, step("sent", delivered.note))
                }
                Err(e) => match (e.permanent, w.config.retry.delay_after(attempt)) {
                    (false, Some(delay)) => {
                        stop = true;
                        let at = now_micros() + delay.as_micros() as i64;
                        let detail = format!(
                            "attempt {attempt} failed: {}; next in {delay:.1?}",
                            e.message
                        );
                        tracing::warn!(channel = %w.channel, destination = %w.config.id, "{detail}");
                        answers.push((item.message_id, will_retry(item.message_id, &detail)));
                        (
                            DeliveryResult::Retry {
                                at,
                                error: e.message,
                            },
                            step("retry", detail),
                        )
                    }
                    (permanent, _) => {
                        let why = if permanent {
                            "refused"
                        } else {
                            "attempts exhausted"
                        };
                        let detail =
                            format!("dead letter after attempt {attempt} ({why}): {}", e.message);
                        tracing::error!(channel = %w.channel, destination = %w.config.id, "{detail}");
                        if let Some(reply) = e.reply {
                            answers.push((item.message_id, reply));
                        }
                        w.stats.queued.fetch_sub(1, Relaxed);
                        (
                            DeliveryResult::Dead { error: e.message },
                            step("dead", detail),
                        )
                    }
                },
            };
            results.push(Delivery {
                outbox_id: item.id,
                message_id: item.message_id,
                result,
                step: Some(step),
            });
        }
        let dead: Vec<i64> = results
            .iter()
            .filter(|d| matches!(d.result, DeliveryResult::Dead { .. }))
            .map(|d| d.outbox_id)
            .collect();
        // `errored` counts messages, not deliveries: only the first dead letter of a message's
        // run counts. The destinations of a channel record their dead letters one at a time so
        // that exactly one of them sees itself first.
        let one_at_a_time = if dead.is_empty() {
            None
        } else {
            Some(w.dead_letters.lock().await)
        };
        if let Err(e) = w.journal.record_deliveries(results).await {
            // The rows stay in flight; the next start puts them back (counted as redeliveries).
            tracing::error!(channel = %w.channel, destination = %w.config.id, error = %e, "cannot record deliveries");
            drop(one_at_a_time);
            w.idle(POLL).await;
            continue;
        }
        // Recorded: the waiting senders may now hear what happened.
        if let Some(replies) = &w.replies {
            for (message_id, reply) in answers {
                replies.answer(message_id, reply);
            }
        }
        for outbox_id in dead {
            match w.journal.first_dead_letter_of_run(outbox_id).await {
                Ok(true) => {
                    w.stats.errored.fetch_add(1, Relaxed);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(channel = %w.channel, error = %e, "cannot read a dead letter")
                }
            }
        }
        drop(one_at_a_time);
    }
}

/// The answer while a delivery waits for its next attempt: accepted, not yet applied.
fn will_retry(message_id: i64, detail: &str) -> Reply {
    Reply {
        status: 202,
        body: passerelle_fhir::error::operation_outcome(
            "warning",
            "transient",
            &format!("journaled as message {message_id}, not applied yet: {detail}"),
            None,
        ),
    }
}

impl Worker {
    async fn idle(&self, at_most: Duration) {
        tokio::select! {
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(at_most) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }
}
