//! Destinations: where a channel delivers. One trait, one module per kind; each destination
//! has its own durable outbox in the journal (see `runtime::outbox`).

mod fhir_rest;
mod fhir_store;
mod file;
mod http;
mod mllp;
mod smtp;
mod xds;

pub use fhir_rest::{Auth as FhirAuth, FhirRestConfig};
pub use http::{HttpSettings, Tls as HttpTls};
pub use smtp::{SmtpConfig, SmtpTls};

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::journal::OutboxItem;

use super::RetryPolicy;

#[derive(Debug, Clone)]
pub struct DestinationConfig {
    pub id: String,
    pub kind: DestinationKind,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone)]
pub enum DestinationKind {
    File {
        directory: PathBuf,
        file_name: String,
    },
    Mllp {
        address: String,
        ack_timeout: Duration,
        connect_timeout: Duration,
    },
    /// The engine's FHIR store: the payload is a transaction Bundle.
    FhirStore,
    /// SMTP submission of a complete mail (the payload).
    Smtp(SmtpConfig),
    /// An IHE XDS.b repository (the DMP): ITI-41 requests over HTTP(S).
    Xds(HttpSettings),
    /// Another FHIR server (the partner clinic's): the payload, a Bundle, POSTed over HTTP(S).
    Fhir(FhirRestConfig),
}

impl DestinationKind {
    pub fn name(&self) -> &'static str {
        match self {
            DestinationKind::File { .. } => "file",
            DestinationKind::Mllp { .. } => "mllp",
            DestinationKind::FhirStore => "fhir-store",
            DestinationKind::Smtp(_) => "smtp",
            DestinationKind::Xds(_) => "xds",
            DestinationKind::Fhir(_) => "fhir",
        }
    }
}

/// A delivery made: a short note for the trace and, when the peer answers with content (the
/// FHIR store's transaction-response), that answer for a sender waiting on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub note: String,
    pub reply: Option<Reply>,
}

impl From<String> for Delivered {
    fn from(note: String) -> Self {
        Self { note, reply: None }
    }
}

/// The peer's answer, as an HTTP source gives it back to its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}

/// Why a delivery failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryError {
    /// The peer refused the message itself (e.g. an HL7 AR): retrying the same bytes is
    /// pointless, it goes to the dead letter at once.
    pub permanent: bool,
    pub message: String,
    /// The refusal as the peer worded it (the store's OperationOutcome), for a waiting sender.
    pub reply: Option<Reply>,
}

impl DeliveryError {
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            permanent: false,
            message: message.into(),
            reply: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            message: message.into(),
            reply: None,
        }
    }

    pub fn with_reply(self, reply: Reply) -> Self {
        Self {
            reply: Some(reply),
            ..self
        }
    }
}

pub type DeliveryResult = Result<Delivered, DeliveryError>;

pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = DeliveryResult> + Send + 'a>>;

pub type BatchFuture<'a> = Pin<Box<dyn Future<Output = Vec<DeliveryResult>> + Send + 'a>>;

pub trait Destination: Send + Sync {
    /// Delivers one outbox item; on success returns a short note for the trace.
    fn deliver<'a>(&'a self, channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a>;

    /// Delivers several due items at once, one result per item in order, for destinations
    /// that can do it cheaper than one by one (one store commit for many Bundles). None: the
    /// outbox delivers them one by one.
    fn deliver_all<'a>(
        &'a self,
        _channel: &'a str,
        _items: &'a [OutboxItem],
    ) -> Option<BatchFuture<'a>> {
        None
    }
}

/// What destinations may use of the running engine.
#[derive(Clone, Default)]
pub struct Services {
    pub store: Option<Arc<passerelle_fhir::Store>>,
}

pub fn build(config: &DestinationConfig, services: &Services) -> Arc<dyn Destination> {
    match &config.kind {
        DestinationKind::FhirStore => Arc::new(fhir_store::FhirStoreDestination::new(
            services.store.clone(),
        )),
        DestinationKind::File {
            directory,
            file_name,
        } => Arc::new(file::FileDestination::new(
            directory.clone(),
            file_name.clone(),
        )),
        DestinationKind::Smtp(smtp) => Arc::new(smtp::SmtpDestination::new(smtp.clone())),
        DestinationKind::Xds(xds) => Arc::new(xds::XdsDestination::new(xds)),
        DestinationKind::Fhir(fhir) => Arc::new(fhir_rest::FhirRestDestination::new(fhir)),
        DestinationKind::Mllp {
            address,
            ack_timeout,
            connect_timeout,
        } => Arc::new(mllp::MllpDestination::new(
            address.clone(),
            *ack_timeout,
            *connect_timeout,
        )),
    }
}
