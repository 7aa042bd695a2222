//! A channel's processor: parse, filter, transform, then queue the result in the destination
//! outboxes, all recorded on the message's journal entry in one commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::channel::transform::Routing;
use crate::channel::{Channel, Condition, Input};
use crate::journal::{
    Journal, NewOutbox, Outcome, Pending, Processed, Status, TraceStep, now_micros,
};
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
        let mut touched: Vec<String> = Vec::new();
        for r in &results {
            for o in &r.outcome.outbox {
                if !touched.contains(&o.destination) {
                    touched.push(o.destination.clone());
                }
            }
        }
        // Sent together, so the journal commits the whole batch at once.
        let outcomes = join_all(results.into_iter().map(|r| {
            let status = r.outcome.status;
            let queued = r.outcome.outbox.len();
            let journal = self.journal.clone();
            async move { (status, queued, journal.record_processed(r).await) }
        }))
        .await;
        for (status, queued, outcome) in outcomes {
            match outcome {
                Ok(()) => account(&self.stats, status, queued),
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
        let at = now_micros();
        let t = Instant::now();
        let outcome = match self.channel.source.content().parse(&pending.raw) {
            Ok(input) => {
                let parsed = TraceStep::new("parse", at, t.elapsed().as_micros() as i64, "ok");
                pipeline(&self.channel, &self.stats, &input, parsed)
            }
            Err(e) => {
                let step = TraceStep::new("parse", at, t.elapsed().as_micros() as i64, "error")
                    .detail(e.clone());
                Outcome {
                    status: Status::Errored,
                    error: Some(format!("parse: {e}")),
                    steps: vec![step],
                    outbox: vec![],
                }
            }
        };
        Processed {
            id: pending.id,
            generation: pending.generation,
            outcome,
        }
    }
}

/// Counts a recorded outcome in the channel's live counters.
pub(super) fn account(stats: &ChannelStats, status: Status, queued: usize) {
    match status {
        Status::Filtered => {
            stats.filtered.fetch_add(1, Relaxed);
        }
        Status::Errored => {
            stats.errored.fetch_add(1, Relaxed);
        }
        _ => {
            stats.queued.fetch_add(queued as i64, Relaxed);
        }
    }
}

/// Runs a parsed message through the channel's filters and transform. CPU work only, so a
/// source may run it before the journal commit and store the outcome with the message.
/// `parsed` is the trace step of the parse that produced `message`.
pub(super) fn pipeline(
    channel: &Channel,
    stats: &ChannelStats,
    input: &Input<'_>,
    parsed: TraceStep,
) -> Outcome {
    let started = Instant::now();
    let mut steps = vec![parsed];
    let mut step = |name: &str, at: i64, since: Instant, outcome: &str, detail: Option<String>| {
        let mut s = TraceStep::new(name, at, since.elapsed().as_micros() as i64, outcome);
        s.detail = detail;
        steps.push(s);
    };
    let at = now_micros();
    let t = Instant::now();
    if let Some(failing) = Condition::first_failing(&channel.filters, input) {
        step(
            "filter",
            at,
            t,
            "filtered",
            Some(format!("condition not met: {}", failing.describe())),
        );
        return Outcome {
            status: Status::Filtered,
            error: None,
            steps,
            outbox: vec![],
        };
    }
    step("filter", at, t, "ok", None);

    let at = now_micros();
    let t = Instant::now();
    let kind = channel.transform.kind();
    let outputs = match channel.transform.apply(input) {
        Ok(Routing::Deliver(outputs)) => outputs,
        Ok(Routing::Drop(why)) => {
            step(
                "transform",
                at,
                t,
                "filtered",
                Some(format!("{kind}: {why}")),
            );
            return Outcome {
                status: Status::Filtered,
                error: None,
                steps,
                outbox: vec![],
            };
        }
        Err(e) => {
            step("transform", at, t, "error", Some(format!("{kind}: {e}")));
            return Outcome {
                status: Status::Errored,
                error: Some(format!("transform: {e}")),
                steps,
                outbox: vec![],
            };
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
    stats.process_latency.observe(started.elapsed());
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
    Outcome {
        status,
        error: None,
        steps,
        outbox,
    }
}
