//! The MLLP entry: frame in, journal commit, ACK out. The ACK is positive only once the
//! message is on disk; anything the engine cannot accept is journaled with the reason and
//! answered with an AR/AE (CR/CE in enhanced mode) carrying an ERR segment.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use bytes::Bytes;
use passerelle_connectors::mllp::{Frame, FrameHandler};
use passerelle_hl7v2::ack::{AckBuilder, AckCode, AckError, AckMode, accept_ack_wanted, ack_mode};
use passerelle_hl7v2::{ErrorCode, Header, Message, ParseError, ParseOptions};

use super::Runtime;
use super::processor::{account, pipeline};
use crate::channel::{Input, SourceConfig};
use crate::journal::{NewMessage, Pending, Status, TraceStep, now_micros};
use crate::metrics::ChannelStats;

pub const CONTENT_TYPE: &str = "application/hl7-v2";

pub struct MllpIngest {
    runtime: Arc<Runtime>,
    channel: String,
    stats: Arc<ChannelStats>,
    options: ParseOptions,
    max_size: usize,
    ack_ids: AckIds,
}

/// Our own control ids for the ACKs we send: unique across restarts.
struct AckIds {
    prefix: String,
    next: AtomicU64,
}

impl AckIds {
    fn new() -> Self {
        Self {
            prefix: format!("PSL{}", chrono::Utc::now().timestamp()),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        format!("{}.{}", self.prefix, self.next.fetch_add(1, Relaxed))
    }
}

impl MllpIngest {
    pub fn new(runtime: Arc<Runtime>, channel: &str, max_size: usize) -> Option<Self> {
        let rt = runtime.channel(channel)?;
        let SourceConfig::Mllp {
            default_charset, ..
        } = rt.channel.source
        else {
            return None;
        };
        let stats = rt.stats.clone();
        Some(Self {
            runtime,
            channel: channel.to_string(),
            stats,
            options: ParseOptions { default_charset },
            max_size,
            ack_ids: AckIds::new(),
        })
    }

    fn ack(
        &self,
        header: Option<&Header<'_>>,
        positive: bool,
        reject: bool,
        error: Option<AckError>,
    ) -> Option<Bytes> {
        if let Some(h) = header
            && !accept_ack_wanted(h, positive)
        {
            return None;
        }
        let code = ack_code(header, positive, reject);
        let timestamp = chrono::Local::now().format("%Y%m%d%H%M%S%z").to_string();
        let mut builder = AckBuilder::new(header, code, self.ack_ids.next(), timestamp);
        if let Some(e) = error {
            builder = builder.error(e);
        }
        Some(Bytes::from(builder.build()))
    }

    /// Journals a refused message so that nothing that reached us is lost, then answers.
    async fn refuse(
        &self,
        raw: Vec<u8>,
        peer: SocketAddr,
        started: Instant,
        header: Option<&Header<'_>>,
        error: AckError,
    ) -> Option<Bytes> {
        let reject = is_reject(&error);
        let reply = self.ack(header, false, reject, Some(error.clone()));
        // The code actually sent: CR/CE rather than AR/AE when the sender asked for enhanced
        // mode.
        let code = reply
            .as_ref()
            .map(|_| ack_code(header, false, reject).as_str());
        let record = NewMessage {
            ack: code.map(String::from),
            error: Some(format!(
                "{} ({} {})",
                error.message,
                error.code.code(),
                error.code.text()
            )),
            ..self.record(raw, peer, header, Status::Rejected, started)
        };
        if let Err(e) = self.runtime.journal().append(record).await {
            tracing::error!(channel = %self.channel, error = %e, "cannot journal a rejected message");
        }
        self.stats.received.fetch_add(1, Relaxed);
        self.stats.rejected.fetch_add(1, Relaxed);
        self.stats.ack_latency.observe(started.elapsed());
        reply
    }

    fn record(
        &self,
        raw: Vec<u8>,
        peer: SocketAddr,
        header: Option<&Header<'_>>,
        status: Status,
        started: Instant,
    ) -> NewMessage {
        let text = |v: Option<&std::borrow::Cow<'_, str>>| v.map(|c| c.to_string());
        let (control_id, sender, message_type) = match header {
            Some(h) => (
                text(h.control_id.as_ref()),
                format!(
                    "{}^{}",
                    h.sending_application.as_deref().unwrap_or(""),
                    h.sending_facility.as_deref().unwrap_or("")
                ),
                h.message_type.as_ref().map(|t| match &h.trigger_event {
                    Some(e) => format!("{t}^{e}"),
                    None => t.to_string(),
                }),
            ),
            None => (None, String::new(), None),
        };
        NewMessage {
            channel: self.channel.clone(),
            source: "mllp".into(),
            peer: Some(peer.to_string()),
            received_at: now_micros(),
            control_id,
            sender,
            message_type,
            content_type: CONTENT_TYPE.into(),
            raw,
            status,
            ack: None,
            error: None,
            receive_us: started.elapsed().as_micros() as i64,
            outcome: None,
        }
    }

    async fn accept(&self, bytes: Bytes, peer: SocketAddr, started: Instant) -> Option<Bytes> {
        let parse_at = now_micros();
        let input = match Message::parse_with(&bytes, &self.options) {
            Ok(m) => Input::Hl7(m),
            Err(e) => return self.refuse_unparseable(&bytes, peer, started, e).await,
        };
        let parsed = TraceStep::new(
            "parse",
            parse_at,
            started.elapsed().as_micros() as i64,
            "ok",
        );
        // The pipeline is CPU work: run it now and commit its outcome with the message, which
        // halves the journal writes per message. The ACK still waits for that one commit, so
        // while other senders wait for theirs, the processor (running below them) does it;
        // and while the processor has earlier messages, it does this one after them.
        let channel = self
            .runtime
            .channel(&self.channel)
            .filter(|c| c.is_running() && !c.has_backlog())
            .filter(|_| !self.runtime.pressure().contended());
        let outcome = channel.map(|c| pipeline(&c.channel, &self.stats, &input, parsed));
        let effects = outcome.as_ref().map(|o| {
            let destinations: Vec<String> = o
                .outbox
                .iter()
                .map(|item| item.destination.clone())
                .collect();
            (o.status, destinations)
        });
        let header = input.hl7().expect("an HL7 v2 input").header();
        let wants_ack = accept_ack_wanted(&header, true);
        let record = NewMessage {
            ack: wants_ack.then(|| ack_code(Some(&header), true, false).as_str().to_string()),
            ..self.record(
                bytes.to_vec(),
                peer,
                Some(&header),
                Status::Received,
                started,
            )
        };
        let record = NewMessage { outcome, ..record };
        match self.runtime.journal().append(record).await {
            Ok(appended) => {
                self.stats.received.fetch_add(1, Relaxed);
                match (appended.duplicate_of, effects) {
                    (Some(_), _) => {
                        self.stats.duplicates.fetch_add(1, Relaxed);
                    }
                    (None, Some((status, destinations))) => {
                        account(&self.stats, status, destinations.len());
                        self.runtime.wake_outboxes(&self.channel, &destinations);
                    }
                    (None, None) => self.runtime.submit(Pending {
                        id: appended.id,
                        channel: self.channel.clone(),
                        generation: 0,
                        raw: bytes.to_vec(),
                    }),
                }
                let reply = self.ack(Some(&header), true, false, None);
                if reply.is_some() {
                    self.stats.acked.fetch_add(1, Relaxed);
                }
                self.stats.ack_latency.observe(started.elapsed());
                reply
            }
            Err(e) => {
                // Not on disk: the sender must keep the message and send it again.
                tracing::error!(channel = %self.channel, error = %e, "journal append failed");
                let error = AckError::error(
                    ErrorCode::ApplicationInternalError,
                    None,
                    "the message could not be stored; send it again later",
                );
                self.ack(Some(&header), false, false, Some(error))
            }
        }
    }

    async fn refuse_unparseable(
        &self,
        bytes: &Bytes,
        peer: SocketAddr,
        started: Instant,
        error: ParseError,
    ) -> Option<Bytes> {
        // The MSH line alone can usually still be read (the fault is further down, or is a
        // byte in the wrong charset): use it so the sender can match our answer to its message.
        let msh_only = Message::parse_header_lenient(bytes, &self.options).ok();
        let header = msh_only.as_ref().map(|m| m.header());
        let mut error = AckError::from(error);
        if error
            .location
            .as_ref()
            .is_some_and(|l| l.segment == "FHS" || l.segment == "BHS")
        {
            // A batch file or batch (FHS/BHS envelope): rejected (AR, see `is_reject`) with
            // 200 "Unsupported message type" rather than 207 "Application internal error":
            // nothing failed on our side, the sender sent a kind of transmission this engine
            // does not take over MLLP, and sending it again as is would fail the same way.
            error.code = ErrorCode::UnsupportedMessageType;
            error.message = "batches (FHS/BHS) are not accepted over MLLP by this engine: \
                             send each message in its own frame, starting with MSH"
                .into();
        }
        self.refuse(bytes.to_vec(), peer, started, header.as_ref(), error)
            .await
    }
}

/// The acknowledgement code for an answer: AA/AR/AE in original mode, CA/CR/CE when the
/// message asks for enhanced mode (MSH-15/16).
fn ack_code(header: Option<&Header<'_>>, positive: bool, reject: bool) -> AckCode {
    let enhanced = header.is_some_and(|h| ack_mode(h) == AckMode::Enhanced);
    match (enhanced, positive, reject) {
        (false, true, _) => AckCode::AA,
        (false, false, true) => AckCode::AR,
        (false, false, false) => AckCode::AE,
        (true, true, _) => AckCode::CA,
        (true, false, true) => AckCode::CR,
        (true, false, false) => AckCode::CE,
    }
}

/// Whether a refusal is a reject (AR/CR: the message as a whole cannot be taken, the sender
/// must not send it again as is) rather than an error in its content (AE/CE).
fn is_reject(error: &AckError) -> bool {
    match error.location.as_ref() {
        // Nothing to point at, or the header: the message is unusable.
        None => true,
        Some(l) if l.segment == "MSH" => true,
        // A batch (FHS/BHS envelope) is not accepted over MLLP: one message per frame.
        Some(l) if l.segment == "FHS" || l.segment == "BHS" => true,
        Some(_) => false,
    }
}

impl FrameHandler for MllpIngest {
    async fn handle(&self, frame: Frame, peer: SocketAddr) -> Option<Bytes> {
        let started = Instant::now();
        let _waiting = self.runtime.pressure().waiting();
        match frame {
            Frame::Message(bytes) => self.accept(bytes, peer, started).await,
            Frame::Oversize { size, head } => {
                let error = AckError::error(
                    ErrorCode::ApplicationInternalError,
                    None,
                    format!(
                        "message of {size} bytes exceeds the maximum of {} bytes",
                        self.max_size
                    ),
                );
                let msh_only = Message::parse_header_lenient(&head, &self.options).ok();
                let header = msh_only.as_ref().map(|m| m.header());
                // Only the head is kept: the journal must not become the way to store huge blobs.
                self.refuse(head.to_vec(), peer, started, header.as_ref(), error)
                    .await
            }
        }
    }
}
