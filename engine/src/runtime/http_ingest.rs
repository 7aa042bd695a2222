//! The entry of documents (`POST /api/inbound/{channel}`, files dropped in a directory, the
//! store's changes for a `store` source): body in, checks, journal commit, then the answer.
//! As with MLLP, a message is on disk before the sender hears it is accepted, and a message
//! refused is journaled with the reason.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::processor::{account, pipeline};
use super::{ChannelRuntime, Runtime};
use crate::channel::destination::{DestinationKind, Reply};
use crate::channel::{Input, SourceConfig};
use crate::journal::{Appended, NewMessage, Queued, Status, TraceStep, now_micros};

/// Who sent a message.
pub struct Sender {
    /// The token's subject; for a file, the source's directory; for a store change, the
    /// feed's subscriber.
    pub name: String,
    /// The client's address; for a file, its name; for a store change, the subscription.
    pub peer: Option<String>,
    /// `http`, `file` or `store`, as the journal shows it.
    pub source: &'static str,
}

/// What became of a message.
pub enum Intake {
    /// Journaled and handed on. `wait`: how long the sender may wait for the store's answer
    /// (none when no destination answers).
    Accepted {
        id: i64,
        status: Status,
        error: Option<String>,
        wait: Option<Duration>,
        /// One resource was sent (not a Bundle of resources): answered as a create or update.
        single: bool,
    },
    /// The same message (same sender and business identifier) was journaled before: it is
    /// not applied twice.
    Duplicate { id: i64, of: i64 },
    /// Refused and journaled as such (`id`, unless the journal failed too).
    Rejected { id: Option<i64>, reply: Reply },
    /// The journal could not take it: the sender must send it again.
    Unavailable(String),
}

/// Receives one message for an HTTP channel.
pub async fn receive(
    runtime: &Arc<Runtime>,
    channel: &str,
    raw: Vec<u8>,
    sender: Sender,
) -> Intake {
    match prepare(runtime, channel, raw, sender) {
        Ok(prepared) => prepared.queue(runtime).await.finish(runtime).await,
        Err(intake) => intake,
    }
}

/// A message through its channel's checks and pipeline, not journaled yet. Receiving is
/// `prepare`, [`Prepared::queue`], [`Journaling::finish`]; a store source queues a whole
/// batch before it waits, so that the batch shares its commits and keeps its order.
pub(super) struct Prepared {
    rt: Arc<ChannelRuntime>,
    message: NewMessage,
    started: Instant,
    verdict: Verdict,
}

enum Verdict {
    /// Refused (journaled with the reason), and what the sender is answered.
    Refused(Reply),
    Accepted {
        status: Status,
        error: Option<String>,
        destinations: Vec<String>,
        wait: Option<Duration>,
        single: bool,
    },
}

/// A prepared message handed to the journal writer.
pub(super) struct Journaling {
    rt: Arc<ChannelRuntime>,
    started: Instant,
    verdict: Verdict,
    queued: anyhow::Result<Queued<Appended>>,
}

/// Parses and checks a message and runs its channel's pipeline (CPU work, committed with the
/// message in one write, as for MLLP). Err: the channel cannot take messages now.
pub(super) fn prepare(
    runtime: &Arc<Runtime>,
    channel: &str,
    raw: Vec<u8>,
    sender: Sender,
) -> Result<Prepared, Intake> {
    let started = Instant::now();
    let Some(rt) = runtime.channel(channel).filter(|c| c.is_running()) else {
        return Err(Intake::Unavailable(format!(
            "channel {channel} is not running"
        )));
    };
    // An HTTP sender waits for the store's answer; a file or a store change is not waited for.
    let reply_timeout = match rt.channel.source {
        SourceConfig::Http { reply_timeout, .. } => Some(reply_timeout),
        SourceConfig::File { .. } | SourceConfig::Store { .. } => None,
        _ => {
            return Err(Intake::Unavailable(format!(
                "channel {channel} takes no documents"
            )));
        }
    };
    let content = rt.channel.source.content();
    let record = |raw: Vec<u8>, status: Status, input: Option<&Input<'_>>| NewMessage {
        channel: channel.to_string(),
        source: sender.source.into(),
        peer: sender.peer.clone(),
        received_at: now_micros(),
        control_id: input.and_then(business_id),
        sender: sender.name.clone(),
        message_type: input.and_then(Input::message_type_text),
        content_type: content.mime().into(),
        raw,
        status,
        ack: None,
        error: None,
        receive_us: started.elapsed().as_micros() as i64,
        outcome: None,
    };
    let refused = |message: NewMessage, reply: Reply| Prepared {
        rt: rt.clone(),
        message: NewMessage {
            error: Some(diagnostics(&reply.body)),
            ..message
        },
        started,
        verdict: Verdict::Refused(reply),
    };
    let parse_at = now_micros();
    let input = match content.parse(&raw) {
        Ok(input) => input,
        Err(e) => {
            let reply = Reply {
                status: 400,
                body: passerelle_fhir::error::operation_outcome("error", "structure", &e, None),
            };
            return Ok(refused(record(raw.clone(), Status::Rejected, None), reply));
        }
    };
    if let Err(reply) = check(&input) {
        let message = record(raw.clone(), Status::Rejected, Some(&input));
        return Ok(refused(message, reply));
    }
    let parsed = TraceStep::new(
        "parse",
        parse_at,
        started.elapsed().as_micros() as i64,
        "ok",
    );
    let outcome = pipeline(&rt.channel, &rt.stats, &input, parsed);
    let (status, error) = (outcome.status, outcome.error.clone());
    let destinations: Vec<String> = outcome
        .outbox
        .iter()
        .map(|o| o.destination.clone())
        .collect();
    let answers = rt
        .channel
        .destinations
        .iter()
        .any(|d| destinations.contains(&d.id) && matches!(d.kind, DestinationKind::FhirStore));
    let message = NewMessage {
        outcome: Some(outcome),
        ..record(raw.clone(), Status::Received, Some(&input))
    };
    let single = is_single(&input);
    drop(input);
    Ok(Prepared {
        rt: rt.clone(),
        message,
        started,
        verdict: Verdict::Accepted {
            status,
            error,
            destinations,
            wait: reply_timeout.filter(|_| answers),
            single,
        },
    })
}

impl Prepared {
    /// Hands the message to the journal writer, in the order of the calls.
    pub(super) async fn queue(self, runtime: &Runtime) -> Journaling {
        Journaling {
            rt: self.rt,
            started: self.started,
            verdict: self.verdict,
            queued: runtime.journal().queue_append(self.message).await,
        }
    }
}

impl Journaling {
    /// Waits for the commit, then counts the message and wakes its outboxes.
    pub(super) async fn finish(self, runtime: &Runtime) -> Intake {
        let Journaling {
            rt,
            started,
            verdict,
            queued,
        } = self;
        let channel = rt.channel.id.as_str();
        let appended = match queued {
            Ok(queued) => queued.committed().await,
            Err(e) => Err(e),
        };
        match verdict {
            Verdict::Refused(reply) => {
                let id = match appended {
                    Ok(a) => Some(a.id),
                    Err(e) => {
                        tracing::error!(%channel, error = %e, "cannot journal a rejected message");
                        None
                    }
                };
                rt.stats.received.fetch_add(1, Relaxed);
                rt.stats.rejected.fetch_add(1, Relaxed);
                Intake::Rejected { id, reply }
            }
            Verdict::Accepted {
                status,
                error,
                destinations,
                wait,
                single,
            } => match appended {
                Ok(appended) => {
                    rt.stats.received.fetch_add(1, Relaxed);
                    rt.stats.acked.fetch_add(1, Relaxed);
                    rt.stats.ack_latency.observe(started.elapsed());
                    if let Some(of) = appended.duplicate_of {
                        rt.stats.duplicates.fetch_add(1, Relaxed);
                        return Intake::Duplicate {
                            id: appended.id,
                            of,
                        };
                    }
                    account(&rt.stats, status, destinations.len());
                    runtime.wake_outboxes(channel, &destinations);
                    Intake::Accepted {
                        id: appended.id,
                        status,
                        error,
                        wait,
                        single,
                    }
                }
                Err(e) => {
                    tracing::error!(%channel, error = %e, "journal append failed");
                    Intake::Unavailable(format!("the message could not be stored: {e}"))
                }
            },
        }
    }
}

/// One resource, rather than a Bundle carrying resources (a document Bundle is one).
fn is_single(input: &Input<'_>) -> bool {
    match input {
        Input::Fhir(v) => v["resourceType"] != "Bundle" || v["type"].as_str() == Some("document"),
        Input::Hl7(_) | Input::Cda(_) | Input::Telemetry(_) | Input::Change(_) => false,
    }
}

/// Content checks beyond parsing: a FHIR submission must be one the store can take, a CDA
/// must have the header CDA R2 requires. A store change was checked by the store already.
fn check(input: &Input<'_>) -> Result<(), Reply> {
    match input {
        Input::Fhir(v) => passerelle_fhir::bundle::check_submission(v).map_err(|e| Reply {
            status: e.status,
            body: e.outcome(),
        }),
        Input::Cda(d) => crate::channel::cda::check(d).map_err(|e| Reply {
            status: 400,
            body: passerelle_fhir::error::operation_outcome("error", "structure", &e, None),
        }),
        Input::Hl7(_) | Input::Telemetry(_) | Input::Change(_) => Ok(()),
    }
}

/// The business identifier of a submission, the journal's key against retransmissions: a
/// Bundle's `identifier` (`system|value`), a CDA's id (`root^extension`), a store change's
/// `Type/id/_history/version`.
fn business_id(input: &Input<'_>) -> Option<String> {
    let v = match input {
        Input::Fhir(v) => v,
        Input::Cda(d) => return crate::channel::cda::document_id(d),
        Input::Change(v) => return crate::channel::change::key(v),
        Input::Hl7(_) | Input::Telemetry(_) => return None,
    };
    if v["resourceType"] != "Bundle" {
        return None;
    }
    let i = &v["identifier"];
    let value = i["value"].as_str()?;
    Some(match i["system"].as_str() {
        Some(system) => format!("{system}|{value}"),
        None => value.to_string(),
    })
}

fn diagnostics(outcome: &Value) -> String {
    let issue = &outcome["issue"][0];
    let text = issue["diagnostics"].as_str().unwrap_or("refused");
    match issue["expression"][0].as_str() {
        Some(at) if !text.contains(at) => format!("{text} (at {at})"),
        _ => text.to_string(),
    }
}
