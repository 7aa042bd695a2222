//! A channel's processor: parse, filter, transform, then queue the result in the destination
//! outboxes, all recorded on the message's journal entry in one commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::*};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::backlog::Backlog;
use super::pressure::Pressure;
use crate::channel::transform::Routing;
use crate::channel::{Channel, Condition, Input};
use crate::journal::{self, Journal, NewOutbox, Outcome, Pending, Status, TraceStep, now_micros};
use crate::metrics::ChannelStats;

pub(super) struct Processor {
    pub journal: Journal,
    pub channel: Channel,
    pub stats: Arc<ChannelStats>,
    pub queue: mpsc::Receiver<Pending>,
    pub backlog: Arc<Backlog>,
    pub wake: Arc<Notify>,
    pub outboxes: HashMap<String, Arc<Notify>>,
    pub shutdown: CancellationToken,
    pub pressure: Arc<Pressure>,
    /// The last message a sweep of the journal went through (see `skip_swept`).
    pub swept_through: AtomicI64,
}

const BATCH: usize = 256;
const HELD_BATCH: usize = 32;

pub(super) async fn run(mut p: Processor) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if p.backlog.begin_sweep() {
            // Messages the in-memory queue could not take (or left by a stop) are in the
            // journal as `received`. Processing one twice is harmless: results are keyed.
            p.sweep().await;
            p.backlog.swept();
            continue;
        }
        tokio::select! {
            n = p.queue.recv_many(&mut batch, BATCH) => {
                if n == 0 { return; }
                let work = p.skip_swept(std::mem::take(&mut batch));
                p.process_batch(work).await;
                p.backlog.done(n);
            }
            _ = p.wake.notified() => {}
            _ = p.shutdown.cancelled() => return,
        }
    }
}

impl Processor {
    /// Drops from a batch taken from the in-memory queue the messages a sweep has already
    /// processed: they were queued when the queue overflowed, and swept up with the rest.
    /// Journal ids are given in commit order, so a first run (generation 0) with an id the
    /// sweep went past was committed before the sweep read that far, and was in it. (The
    /// journal itself keeps only the first result of a run; this spares the work and keeps
    /// the live counters right.)
    fn skip_swept(&self, batch: Vec<Pending>) -> Vec<Pending> {
        let swept = self.swept_through.load(Acquire);
        batch
            .into_iter()
            .filter(|m| m.generation > 0 || m.id > swept)
            .collect()
    }

    /// Processes the channel's messages waiting in the journal, a page at a time.
    async fn sweep(&self) {
        let mut after = 0;
        loop {
            match self
                .journal
                .pending_received(&self.channel.id, after, BATCH as i64)
                .await
            {
                Ok(page) => {
                    let Some(last) = page.last() else { return };
                    after = last.id;
                    self.process_batch(page).await;
                    self.swept_through.fetch_max(after, AcqRel);
                }
                Err(e) => {
                    tracing::error!(channel = %self.channel.id, error = %e, "cannot read waiting messages");
                    self.backlog.left_in_journal();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return;
                }
            }
            if self.shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// Processes `batch`, in smaller parts while senders contend (see `pressure.rs`).
    async fn process_batch(&self, mut batch: Vec<Pending>) {
        while !batch.is_empty() {
            let size = self.pressure.next_batch(batch.len(), HELD_BATCH).await;
            let rest = batch.split_off(size.min(batch.len()));
            self.process_now(std::mem::replace(&mut batch, rest)).await;
        }
    }

    async fn process_now(&self, batch: Vec<Pending>) {
        let results: Vec<journal::Processed> = batch.iter().map(|m| self.process(m)).collect();
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
                    self.backlog.left_in_journal();
                }
            }
        }
        for id in touched {
            if let Some(waker) = self.outboxes.get(&id) {
                waker.notify_one();
            }
        }
    }

    fn process(&self, pending: &Pending) -> journal::Processed {
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
        journal::Processed {
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
