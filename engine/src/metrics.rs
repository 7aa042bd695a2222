//! Live counters per channel and latency histograms, exposed at `/metrics` (Prometheus text
//! format 0.0.4) and in `/api/channels`. Counters start from the journal's totals at start-up,
//! so a restart does not reset what an operator sees.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

use crate::journal::Status;
use crate::journal::read::ChannelCounts;

/// One exported counter family: metric name, help text, and how to read it from a snapshot.
type CounterSeries = (&'static str, &'static str, fn(&CounterSnapshot) -> u64);
/// One exported histogram family: metric name, help text, and the histogram it reads.
type HistogramSeries = (&'static str, &'static str, fn(&ChannelStats) -> &Histogram);

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.counts) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// One channel's counters. `queued` is a gauge (outbox entries waiting); the others only grow,
/// but for a reprocess, which takes the message out of the status it leaves ([`Self::leave`]).
/// Definitions: docs/operations.md, `/metrics`.
#[derive(Default)]
pub struct ChannelStats {
    pub received: AtomicU64,
    pub acked: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicates: AtomicU64,
    pub filtered: AtomicU64,
    pub errored: AtomicU64,
    pub queued: AtomicI64,
    pub sent: AtomicU64,
    /// Deliveries repeated after a crash cut them: the peer may have received them twice.
    pub redelivered: AtomicU64,
    /// From the last byte received to the ACK being ready (journal commit included).
    pub ack_latency: Histogram,
    /// Parse, filter and transform of one message.
    pub process_latency: Histogram,
    /// One delivery attempt to a destination.
    pub delivery_latency: Histogram,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub received: u64,
    pub acked: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub filtered: u64,
    pub errored: u64,
    pub queued: u64,
    pub sent: u64,
    pub redelivered: u64,
}

impl ChannelStats {
    pub fn seeded(counts: &ChannelCounts) -> Self {
        let s = ChannelStats::default();
        let n = |status| counts.by_status.get(&status).copied().unwrap_or(0);
        // The journal's rows plus what retention pruned: the same definitions as the live
        // updates (see docs/operations.md, /metrics), so a restart changes nothing.
        let pruned = &counts.pruned;
        let received = counts.by_status.values().sum::<u64>() + pruned.received;
        s.received.store(received, Relaxed);
        s.acked.store(counts.acked + pruned.acked, Relaxed);
        s.rejected
            .store(n(Status::Rejected) + pruned.rejected, Relaxed);
        s.duplicates
            .store(n(Status::Duplicate) + pruned.duplicates, Relaxed);
        s.filtered
            .store(n(Status::Filtered) + pruned.filtered, Relaxed);
        s.errored
            .store(n(Status::Errored) + pruned.errored, Relaxed);
        s.queued.store(counts.outbox_pending as i64, Relaxed);
        s.sent.store(counts.outbox_sent + pruned.sent, Relaxed);
        s.redelivered
            .store(counts.redeliveries + pruned.redelivered, Relaxed);
        s
    }

    /// Takes a message out of the counter of the status it leaves when it is reprocessed
    /// (`rejected`, `duplicates`, `filtered`, `errored` count messages by their current
    /// status; the new run counts it again where it ends).
    pub fn leave(&self, status: Status) {
        let counter = match status {
            Status::Rejected => &self.rejected,
            Status::Duplicate => &self.duplicates,
            Status::Filtered => &self.filtered,
            Status::Errored => &self.errored,
            _ => return,
        };
        let _ = counter.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            received: self.received.load(Relaxed),
            acked: self.acked.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            filtered: self.filtered.load(Relaxed),
            errored: self.errored.load(Relaxed),
            queued: self.queued.load(Relaxed).max(0) as u64,
            sent: self.sent.load(Relaxed),
            redelivered: self.redelivered.load(Relaxed),
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    channels: BTreeMap<String, Arc<ChannelStats>>,
}

impl Metrics {
    pub fn new(channels: impl IntoIterator<Item = (String, Arc<ChannelStats>)>) -> Self {
        Self {
            channels: channels.into_iter().collect(),
        }
    }

    pub fn channel(&self, id: &str) -> Option<&Arc<ChannelStats>> {
        self.channels.get(id)
    }

    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [CounterSeries; 9] = [
            ("received", "Messages journaled", |s| s.received),
            ("acked", "Positive acknowledgements sent", |s| s.acked),
            (
                "rejected",
                "Messages refused with a negative acknowledgement",
                |s| s.rejected,
            ),
            (
                "duplicates",
                "Retransmissions recognised and not processed again",
                |s| s.duplicates,
            ),
            ("filtered", "Messages dropped by a filter or a route", |s| {
                s.filtered
            }),
            (
                "errored",
                "Messages whose processing failed or a delivery was dead-lettered (once per message)",
                |s| s.errored,
            ),
            ("sent", "Deliveries made to destinations", |s| s.sent),
            (
                "redelivered",
                "Deliveries repeated after a crash (possible duplicates)",
                |s| s.redelivered,
            ),
            ("queued", "Deliveries waiting in outboxes", |s| s.queued),
        ];
        let snapshots: Vec<_> = self
            .channels
            .iter()
            .map(|(id, s)| (id, s.snapshot()))
            .collect();
        for (name, help, get) in counters {
            let kind = if name == "queued" { "gauge" } else { "counter" };
            let metric = if kind == "counter" {
                format!("passerelle_messages_{name}_total")
            } else {
                format!("passerelle_messages_{name}")
            };
            let _ = writeln!(out, "# HELP {metric} {help}.\n# TYPE {metric} {kind}");
            for (id, snap) in &snapshots {
                let _ = writeln!(out, "{metric}{{channel=\"{id}\"}} {}", get(snap));
            }
        }
        let histograms: [HistogramSeries; 3] = [
            (
                "passerelle_ack_latency_seconds",
                "Time from receipt to acknowledgement",
                |s| &s.ack_latency,
            ),
            (
                "passerelle_process_latency_seconds",
                "Time to parse, filter and transform a message",
                |s| &s.process_latency,
            ),
            (
                "passerelle_delivery_latency_seconds",
                "Time of one delivery attempt",
                |s| &s.delivery_latency,
            ),
        ];
        for (name, help, get) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} histogram");
            for (id, stats) in &self.channels {
                get(stats).render(&mut out, name, &format!("channel=\"{id}\""));
            }
        }
        for (name, help, value) in extra {
            let _ = writeln!(
                out,
                "# HELP {name} {help}.\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let stats = Arc::new(ChannelStats::default());
        stats.received.fetch_add(3, Relaxed);
        stats.ack_latency.observe(Duration::from_micros(300));
        stats.ack_latency.observe(Duration::from_millis(3));
        let m = Metrics::new([("hl7v2-inbound".to_string(), stats)]);
        let text = m.render(&[("passerelle_up", "Whether the engine runs", 1.0)]);
        assert!(text.contains("passerelle_messages_received_total{channel=\"hl7v2-inbound\"} 3\n"));
        assert!(text.contains(
            "passerelle_ack_latency_seconds_bucket{channel=\"hl7v2-inbound\",le=\"0.001\"} 1\n"
        ));
        assert!(text.contains(
            "passerelle_ack_latency_seconds_bucket{channel=\"hl7v2-inbound\",le=\"0.005\"} 2\n"
        ));
        assert!(
            text.contains("passerelle_ack_latency_seconds_count{channel=\"hl7v2-inbound\"} 2\n")
        );
        assert!(text.contains("# TYPE passerelle_messages_queued gauge\n"));
        assert!(text.ends_with("passerelle_up 1\n"));
    }
}
