//! Channels: where messages come from, which ones are kept, how they are transformed and
//! where they go. Each channel is one YAML file in `channels/`; see docs/channels.md.

pub mod cda;
pub mod change;
pub mod destination;
pub mod doc;
pub mod filter;
pub mod input;
pub mod interpolate;
pub mod load;
pub mod national_ids;
pub mod retry;
pub mod transform;
pub mod xdm;
pub mod xds;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use passerelle_hl7v2::{Charset, ParseOptions};

pub use destination::DestinationConfig;
pub use filter::Condition;
pub use input::{Content, Input};
pub use load::{LoadedChannels, load_dir, load_dir_with};
pub use retry::RetryPolicy;
pub use transform::Transform;

#[derive(Clone)]
pub struct Channel {
    pub id: String,
    pub file: PathBuf,
    pub description: Option<String>,
    pub enabled: bool,
    pub source: SourceConfig,
    pub filters: Vec<Condition>,
    pub transform: Arc<dyn Transform>,
    pub destinations: Vec<DestinationConfig>,
    /// Why the channel is loaded but not running (an endpoint's variable is unset).
    pub paused: Option<String>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum SourceConfig {
    Mllp {
        /// `None`: the server's main MLLP address.
        address: Option<SocketAddr>,
        /// `address` names an unset `${VAR}`: the channel is paused and listens nowhere (its
        /// `address` is then `None` but does not mean the main MLLP address).
        address_unset: bool,
        default_charset: Charset,
    },
    /// Subscriptions on an MQTT broker; each topic's `+` level names the device.
    Mqtt {
        /// Topic filters, e.g. `devices/+/telemetry`.
        topics: Vec<String>,
        /// `mqtt://[user:password@]host:port`; None: the server's `--mqtt`.
        broker: Option<String>,
        /// The session's client id: the broker keeps unacknowledged QoS 1 messages for it
        /// across restarts.
        client_id: String,
    },
    /// Files dropped in a directory (FHIR or CDA), picked up, journaled, then moved to
    /// `done/` (or `rejected/`, with the reason beside them).
    File {
        directory: PathBuf,
        content: DocumentKind,
        /// How often the directory is looked at.
        poll: std::time::Duration,
    },
    /// Changes committed to the engine's FHIR store, read from its change feed (subscriber
    /// `channel:{id}`), each as a notification Bundle ([`change`]).
    Store {
        /// FHIR search criteria, `Type` or `Type?params` (checked at load).
        subscription: String,
        /// Reference elements of the changed resource, as paths of element names
        /// (`dispenseRequest.performer`): their targets are read and added to the message.
        include: Vec<Vec<String>>,
        /// `(Type, search parameter)`: the resources of that type whose parameter refers to
        /// the changed or an included resource are added too (`Consent`, `patient`).
        revinclude: Vec<(String, String)>,
        /// Where a new subscriber starts; once started, its durable cursor says.
        start: FeedStart,
    },
    /// `POST /api/inbound/{channel}` on the HTTP address.
    Http {
        content: DocumentKind,
        /// How long a request waits for the store's answer before it gets `202 Accepted`
        /// (the message is journaled and will be applied).
        reply_timeout: std::time::Duration,
    },
}

/// Where a store source's subscriber starts the first time its channel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStart {
    /// Only changes committed after that.
    Now,
    /// Every change the store ever had.
    Beginning,
}

/// What an HTTP or file source takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Fhir,
    Cda,
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Mllp { .. } => "mllp",
            SourceConfig::Http { .. } => "http",
            SourceConfig::Mqtt { .. } => "mqtt",
            SourceConfig::File { .. } => "file",
            SourceConfig::Store { .. } => "store",
        }
    }

    /// How the channel's messages are read.
    pub fn content(&self) -> Content {
        match self {
            SourceConfig::Mllp {
                default_charset, ..
            } => Content::Hl7v2(ParseOptions {
                default_charset: *default_charset,
            }),
            SourceConfig::Mqtt { .. } => Content::Telemetry,
            SourceConfig::Store { .. } => Content::Change,
            SourceConfig::Http { content, .. } | SourceConfig::File { content, .. } => {
                match content {
                    DocumentKind::Fhir => Content::Fhir,
                    DocumentKind::Cda => Content::Cda,
                }
            }
        }
    }
}
