//! What the journal stores and hands back.

use serde::{Deserialize, Serialize};

/// Where a message stands. Terminal states are the ones retention may prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Committed, waiting to be processed (or being processed).
    Received,
    /// Refused at the door (unparseable, invalid, oversize): negative ACK sent.
    Rejected,
    /// A retransmission of a message already journaled (same sender, control id and content).
    Duplicate,
    /// Dropped by a channel filter.
    Filtered,
    /// Transformed, waiting in one or more destination outboxes.
    Queued,
    /// Delivered to every destination (or had none).
    Sent,
    /// Processing failed, or a destination dead-lettered it.
    Errored,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Received,
        Status::Rejected,
        Status::Duplicate,
        Status::Filtered,
        Status::Queued,
        Status::Sent,
        Status::Errored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Rejected => "rejected",
            Status::Duplicate => "duplicate",
            Status::Filtered => "filtered",
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Errored => "errored",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Failures are kept by their own retention rule (usually longer).
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Rejected | Status::Errored)
    }
}

/// A message as handed to the journal by a source.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub channel: String,
    pub source: String,
    pub peer: Option<String>,
    pub received_at: i64,
    pub control_id: Option<String>,
    pub sender: String,
    pub message_type: Option<String>,
    pub content_type: String,
    pub raw: Vec<u8>,
    /// `Received` for accepted messages, `Rejected` for refused ones.
    pub status: Status,
    pub ack: Option<String>,
    pub error: Option<String>,
    /// Time spent between the last byte received and the journal commit request.
    pub receive_us: i64,
    /// Set when the source ran the channel's pipeline at receipt: the outcome is committed
    /// with the message (one write instead of two). `None`: the processor runs it later.
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub id: i64,
    /// Set when this is a retransmission of an earlier message: do not process it again.
    pub duplicate_of: Option<i64>,
}

/// One row of a message's trace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceStep {
    pub step: String,
    /// Unix microseconds when the step started.
    pub at: i64,
    pub duration_us: i64,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl TraceStep {
    pub fn new(step: impl Into<String>, at: i64, duration_us: i64, outcome: &str) -> Self {
        Self {
            step: step.into(),
            at,
            duration_us,
            outcome: outcome.to_string(),
            detail: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// One destination's copy of a processed message.
#[derive(Debug, Clone)]
pub struct NewOutbox {
    pub destination: String,
    /// `None` when the destination gets the raw message unchanged (stored once).
    pub payload: Option<Vec<u8>>,
}

/// What a channel's pipeline (parse, filters, transform) made of a message.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `Filtered`, `Queued` (when there are outbox items), `Sent` (no destination) or `Errored`.
    pub status: Status,
    pub error: Option<String>,
    pub steps: Vec<TraceStep>,
    pub outbox: Vec<NewOutbox>,
}

/// The outcome of one run (generation) of a journaled message.
#[derive(Debug, Clone)]
pub struct Processed {
    pub id: i64,
    pub generation: i64,
    pub outcome: Outcome,
}

/// An outbox entry ready to deliver.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub message_id: i64,
    pub generation: i64,
    pub destination: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub control_id: Option<String>,
    /// Decrypted payload (the raw message when the transform did not change it).
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum DeliveryResult {
    Sent,
    /// Failed; try again at the given time (unix microseconds).
    Retry {
        at: i64,
        error: String,
    },
    /// Failed for good: dead letter.
    Dead {
        error: String,
    },
    /// Not attempted (an earlier item of the batch failed): back to the queue, no attempt counted.
    Release,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub outbox_id: i64,
    pub message_id: i64,
    pub result: DeliveryResult,
    pub step: Option<TraceStep>,
}

/// A message received for processing, with its raw bytes already decrypted.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub channel: String,
    pub generation: i64,
    pub raw: Vec<u8>,
}

/// The message asked for is not in the journal (never was, or pruned).
#[derive(Debug, thiserror::Error)]
#[error("no message {0}")]
pub struct NoSuchMessage(pub i64);
