//! The channel runtime: for each channel a processor (parse, filter, transform, queue) and,
//! for each destination, an outbox worker (deliver, retry, dead letter); for a `store`
//! source, the task following the store's change feed. Sources hand messages in through
//! [`Runtime::submit`] once they are journaled.

mod backlog;
pub mod devices;
mod downstream;
pub mod file_ingest;
pub mod http_ingest;
pub mod ingest;
pub mod mqtt_ingest;
mod outbox;
mod pressure;
mod processor;
pub mod replies;
mod store_source;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Result, anyhow};
use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::destination;
use crate::channel::{Channel, SourceConfig};
use crate::journal::{Journal, Pending, Reprocessed};
use crate::metrics::{ChannelStats, CounterSnapshot, Metrics};

/// Messages waiting in memory for a channel's processor. Beyond this the journal holds them
/// and the processor sweeps them up: memory stays bounded under any load.
const QUEUE: usize = 4096;

pub struct Runtime {
    journal: Journal,
    channels: BTreeMap<String, Arc<ChannelRuntime>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Answers for the senders of HTTP sources, who wait for what the store did.
    replies: Arc<replies::Replies>,
    /// The runtime processing, deliveries and store sources run on (after `tasks`: dropped
    /// once they end).
    downstream: downstream::Downstream,
    /// Senders waiting for an acknowledgement: processing gives way to them.
    pressure: Arc<pressure::Pressure>,
}

pub struct ChannelRuntime {
    pub channel: Channel,
    pub stats: Arc<ChannelStats>,
    queue: Option<mpsc::Sender<Pending>>,
    /// What the processor still has to do (the queue, and what waits in the journal).
    backlog: Arc<backlog::Backlog>,
    wake: Arc<Notify>,
    /// One waker per destination outbox worker.
    outboxes: HashMap<String, Arc<Notify>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    pub id: String,
    pub description: Option<String>,
    pub source: &'static str,
    /// `running`, `paused` (not configured) or `disabled`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub destinations: Vec<DestinationView>,
    #[serde(flatten)]
    pub counters: CounterSnapshot,
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl ChannelRuntime {
    pub fn is_running(&self) -> bool {
        self.queue.is_some()
    }

    /// Whether the processor has messages still to process (see `backlog.rs`).
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    fn view(&self) -> ChannelView {
        let (state, reason) = if !self.channel.enabled {
            ("disabled", None)
        } else if let Some(why) = &self.channel.paused {
            ("paused", Some(why.clone()))
        } else {
            ("running", None)
        };
        ChannelView {
            id: self.channel.id.clone(),
            description: self.channel.description.clone(),
            source: self.channel.source.kind(),
            state,
            reason,
            destinations: self
                .channel
                .destinations
                .iter()
                .map(|d| DestinationView {
                    id: d.id.clone(),
                    kind: d.kind.name(),
                })
                .collect(),
            counters: self.stats.snapshot(),
        }
    }
}

impl Runtime {
    /// Starts every enabled, configured channel, and resumes what a stop or crash left:
    /// messages not yet processed and deliveries not yet made.
    pub async fn start(
        journal: Journal,
        channels: Vec<Channel>,
        services: destination::Services,
    ) -> Result<Arc<Runtime>> {
        let cut = journal.recover_inflight().await?;
        if cut > 0 {
            tracing::warn!(
                deliveries = cut,
                "deliveries were cut by a stop; they will be made again (at-least-once)"
            );
        }
        let counts = journal.channel_counts().await?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let downstream = downstream::Downstream::start()?;
        let replies = Arc::new(replies::Replies::default());
        let pressure = Arc::new(pressure::Pressure::default());
        let mut runtimes = BTreeMap::new();
        for channel in channels {
            let stats = Arc::new(
                counts
                    .get(&channel.id)
                    .map(ChannelStats::seeded)
                    .unwrap_or_default(),
            );
            let runs = channel.enabled && channel.paused.is_none();
            let mut outboxes = HashMap::new();
            let mut queue = None;
            let backlog = Arc::new(backlog::Backlog::starting());
            let wake = Arc::new(Notify::new());
            if runs {
                let dead_letters = Arc::new(tokio::sync::Mutex::new(()));
                for config in &channel.destinations {
                    let waker = Arc::new(Notify::new());
                    outboxes.insert(config.id.clone(), waker.clone());
                    downstream.spawn(
                        &tasks,
                        outbox::run(outbox::Worker {
                            journal: journal.clone(),
                            channel: channel.id.clone(),
                            config: config.clone(),
                            destination: destination::build(config, &services),
                            wake: waker,
                            stats: stats.clone(),
                            dead_letters: dead_letters.clone(),
                            // Only HTTP senders wait for an answer.
                            replies: matches!(channel.source, SourceConfig::Http { .. })
                                .then(|| replies.clone()),
                            shutdown: shutdown.clone(),
                            pressure: pressure.clone(),
                        }),
                    );
                }
                let (tx, rx) = mpsc::channel(QUEUE);
                queue = Some(tx);
                downstream.spawn(
                    &tasks,
                    processor::run(processor::Processor {
                        journal: journal.clone(),
                        channel: channel.clone(),
                        stats: stats.clone(),
                        queue: rx,
                        backlog: backlog.clone(),
                        wake: wake.clone(),
                        outboxes: outboxes.clone(),
                        shutdown: shutdown.clone(),
                        pressure: pressure.clone(),
                        swept_through: Default::default(),
                    }),
                );
            } else {
                tracing::info!(channel = %channel.id, reason = ?channel.paused, "channel loaded but not running");
            }
            let id = channel.id.clone();
            runtimes.insert(
                id,
                Arc::new(ChannelRuntime {
                    channel,
                    stats,
                    queue,
                    backlog,
                    wake,
                    outboxes,
                }),
            );
        }
        let metrics = Arc::new(Metrics::new(
            runtimes.iter().map(|(id, c)| (id.clone(), c.stats.clone())),
        ));
        let runtime = Arc::new(Runtime {
            journal,
            channels: runtimes,
            metrics,
            shutdown,
            tasks,
            replies,
            downstream,
            pressure,
        });
        // Store sources journal through the runtime itself, so they start once it exists;
        // like the processors, they run downstream and end with `stop`.
        for c in runtime.channels().filter(|c| c.is_running()) {
            if !matches!(c.channel.source, SourceConfig::Store { .. }) {
                continue;
            }
            let Some(store) = services.store.clone() else {
                tracing::error!(channel = %c.channel.id, "a store source without a FHIR store does not run");
                continue;
            };
            runtime.downstream.spawn(
                &runtime.tasks,
                store_source::run(
                    runtime.clone(),
                    store,
                    c.channel.id.clone(),
                    runtime.shutdown.clone(),
                ),
            );
        }
        Ok(runtime)
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Senders waiting for an acknowledgement (see `pressure.rs`).
    fn pressure(&self) -> &pressure::Pressure {
        &self.pressure
    }

    pub fn replies(&self) -> &replies::Replies {
        &self.replies
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn channel(&self, id: &str) -> Option<&Arc<ChannelRuntime>> {
        self.channels.get(id)
    }

    pub fn channels(&self) -> impl Iterator<Item = &Arc<ChannelRuntime>> {
        self.channels.values()
    }

    pub fn views(&self) -> Vec<ChannelView> {
        self.channels.values().map(|c| c.view()).collect()
    }

    /// Hands a journaled message to its channel's processor.
    pub fn submit(&self, pending: Pending) {
        let Some(channel) = self.channels.get(&pending.channel) else {
            return;
        };
        let Some(queue) = &channel.queue else { return };
        channel.backlog.handing();
        if queue.try_send(pending).is_err() {
            // Still safe in the journal as `received`: the processor will sweep it up.
            channel.backlog.not_handed();
            channel.wake.notify_one();
        }
    }

    /// Tells the outbox workers of these destinations that entries are waiting.
    pub fn wake_outboxes(&self, channel: &str, destinations: &[String]) {
        let Some(runtime) = self.channels.get(channel) else {
            return;
        };
        for id in destinations {
            if let Some(waker) = runtime.outboxes.get(id) {
                waker.notify_one();
            }
        }
    }

    pub async fn reprocess(&self, id: i64, only_failed: bool) -> Result<Reprocessed> {
        let before = self.journal.message_status(id).await?;
        let result = self.journal.reprocess(id, only_failed).await?;
        // The message leaves its status (a rerun starts from `received`; queued-again dead
        // letters make it `queued`): its counter gives it back, and the new outcome counts it
        // again, so a message is never counted twice.
        let left = match &result {
            Reprocessed::Rerun { channel, .. } => Some(channel),
            Reprocessed::Requeued { channel, count } if *count > 0 => Some(channel),
            Reprocessed::Requeued { .. } => None,
        };
        if let (Some(channel), Some(status)) = (left, before)
            && let Some(runtime) = self.channels.get(channel)
        {
            runtime.stats.leave(status);
        }
        match &result {
            Reprocessed::Rerun { channel, .. } => {
                let pending = self.journal.load_pending(id).await?;
                let runtime = self
                    .channels
                    .get(channel)
                    .ok_or_else(|| anyhow!("channel {channel} is not loaded"))?;
                if !runtime.is_running() {
                    return Err(anyhow!(
                        "channel {channel} is not running; the message will run when it starts"
                    ));
                }
                self.submit(pending);
            }
            Reprocessed::Requeued { channel, count } => {
                if let Some(runtime) = self.channels.get(channel) {
                    runtime
                        .stats
                        .queued
                        .fetch_add(*count as i64, Ordering::Relaxed);
                    for waker in runtime.outboxes.values() {
                        waker.notify_one();
                    }
                }
            }
        }
        Ok(result)
    }

    /// Stops processors, outbox workers and store sources after their current step; what is
    /// left waits in the journal (or in the store's feed) for the next start.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(e) = self.journal.flush().await {
            tracing::error!(error = %e, "journal flush at shutdown failed");
        }
    }
}
