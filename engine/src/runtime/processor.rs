//! A channel's processor: parse, filter, transform, then queue the result in the destination
//! outboxes, all recorded on the message's journal entry in one commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use passerelle_hl7v2::{Message, ParseOptions};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::channel::transform::Routing;
use crate::channel::{Channel, Condition, SourceConfig};
use crate::journal::{Journal, NewOutbox, Pending, Processed, Status, TraceStep, now_micros};
use crate::metrics::ChannelStats;

pub(super) struct Processor {
    pub journal: Journal,
    pub channel: Channel,
    pub stats: Arc<ChannelStats>,
    pub queue: mpsc::Receiver<Pending>,
    pub overflow: Arc<AtomicBool>,
    pub wake: Arc<Notify>,
    pub outboxes: HashMap<String, Arc<Notify>>,
    pub shutdown: CancellationToken,
}

const BATCH: usize = 256;

pub(super) async fn run(mut p: Processor) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if p.overflow.swap(false, AcqRel) {
            // Messages the in-memory queue could not take (or left by a stop) are in the
            // journal as `received`. Processing one twice is harmless: results are keyed.
            match p.journal.pending_received(&p.channel.id).await {
                Ok(list) => {
                    for chunk in list.chunks(BATCH) {
                        p.process_batch(chunk.to_vec()).await;
                    }
                }
                Err(e) => {
                    tracing::error!(channel = %p.channel.id, error = %e, "cannot read waiting messages");
                    p.overflow.store(true, Release);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        }
        tokio::select! {
            n = p.queue.recv_many(&mut batch, BATCH) => {
                if n == 0 { return; }
                let work = std::mem::take(&mut batch);
                p.process_batch(work).await;
            }
            _ = p.wake.notified() => {}
            _ = p.shutdown.cancelled() => return,
        }
    }
}

impl Processor {
    async fn process_batch(&self, batch: Vec<Pending>) {
        let results: Vec<Processed> = batch.iter().map(|m| self.process(m)).collect();
        let mut touched: Vec<&str> = Vec::new();
        for r in &results {
            for o in &r.outbox {
                if !touched.contains(&o.destination.as_str()) {
                    touched.push(&o.destination);
                }
            }
        }
        let touched: Vec<String> = touched.into_iter().map(String::from).collect();
        // Sent together, so the journal commits the whole batch at once.
        let outcomes = join_all(results.into_iter().map(|r| {
            let status = r.status;
            let queued = r.outbox.len();
            let journal = self.journal.clone();
            async move { (status, queued, journal.record_processed(r).await) }
        }))
        .await;
        for (status, queued, outcome) in outcomes {
            match outcome {
                Ok(()) => match status {
                    Status::Filtered => {
                        self.stats.filtered.fetch_add(1, Relaxed);
                    }
                    Status::Errored => {
                        self.stats.errored.fetch_add(1, Relaxed);
                    }
                    _ => {
                        self.stats.queued.fetch_add(queued as i64, Relaxed);
                    }
                },
                Err(e) => {
                    // Still `received` in the journal: retried by the next sweep.
                    tracing::error!(channel = %self.channel.id, error = %e, "cannot record processing");
                    self.overflow.store(true, Release);
                }
            }
        }
        for id in touched {
            if let Some(waker) = self.outboxes.get(&id) {
                waker.notify_one();
            }
        }
    }

    fn process(&self, pending: &Pending) -> Processed {
        let started = Instant::now();
        let mut steps = Vec::with_capacity(3);
        let mut step =
            |name: &str, at: i64, since: Instant, outcome: &str, detail: Option<String>| {
                let mut s = TraceStep::new(name, at, since.elapsed().as_micros() as i64, outcome);
                s.detail = detail;
                steps.push(s);
            };
        let done = |status, error: Option<String>, steps, outbox| Processed {
            id: pending.id,
            generation: pending.generation,
            status,
            error,
            steps,
            outbox,
        };
        let SourceConfig::Mllp {
            default_charset, ..
        } = &self.channel.source;
        let options = ParseOptions {
            default_charset: *default_charset,
        };
        let at = now_micros();
        let t = Instant::now();
        let message = match Message::parse_with(&pending.raw, &options) {
            Ok(m) => m,
            Err(e) => {
                step("parse", at, t, "error", Some(e.to_string()));
                return done(Status::Errored, Some(format!("parse: {e}")), steps, vec![]);
            }
        };
        step("parse", at, t, "ok", None);

        let at = now_micros();
        let t = Instant::now();
        if let Some(failing) = Condition::first_failing(&self.channel.filters, &message) {
            step(
                "filter",
                at,
                t,
                "filtered",
                Some(format!("condition not met: {}", failing.describe())),
            );
            return done(Status::Filtered, None, steps, vec![]);
        }
        step("filter", at, t, "ok", None);

        let at = now_micros();
        let t = Instant::now();
        let kind = self.channel.transform.kind();
        let outputs = match self.channel.transform.apply(&message) {
            Ok(Routing::Deliver(outputs)) => outputs,
            Ok(Routing::Drop(why)) => {
                step(
                    "transform",
                    at,
                    t,
                    "filtered",
                    Some(format!("{kind}: {why}")),
                );
                return done(Status::Filtered, None, steps, vec![]);
            }
            Err(e) => {
                step("transform", at, t, "error", Some(format!("{kind}: {e}")));
                return done(
                    Status::Errored,
                    Some(format!("transform: {e}")),
                    steps,
                    vec![],
                );
            }
        };
        let names: Vec<&str> = outputs.iter().map(|o| o.destination.as_str()).collect();
        step(
            "transform",
            at,
            t,
            "ok",
            Some(format!("{kind} -> [{}]", names.join(", "))),
        );
        self.stats.process_latency.observe(started.elapsed());
        let outbox: Vec<NewOutbox> = outputs
            .into_iter()
            .map(|o| NewOutbox {
                destination: o.destination,
                payload: o.payload,
            })
            .collect();
        let status = if outbox.is_empty() {
            Status::Sent
        } else {
            Status::Queued
        };
        done(status, None, steps, outbox)
    }
}
