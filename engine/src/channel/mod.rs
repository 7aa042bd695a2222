//! Channels: where messages come from, which ones are kept, how they are transformed and
//! where they go. Each channel is one YAML file in `channels/`; see docs/channels.md.

pub mod destination;
pub mod doc;
pub mod filter;
pub mod interpolate;
pub mod load;
pub mod retry;
pub mod transform;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use passerelle_hl7v2::Charset;

pub use destination::DestinationConfig;
pub use filter::Condition;
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
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Mllp { .. } => "mllp",
        }
    }
}
