//! Posts an ITI-41 Provide and Register Document Set-b request (built by the `xds-provide`
//! transform, see `channel::xds`) to an XDS.b repository, the DMP's or a hospital's, and
//! judges the RegistryResponse:
//!
//! | answer | outcome |
//! |---|---|
//! | `ResponseStatusType:Success` | delivered (warnings noted) |
//! | RegistryError XDSRepositoryError, XDSRegistryError, XDSRegistryBusy, XDSRepositoryBusy, XDSRegistryOutOfResources | retried |
//! | any other RegistryError (XDSPatientIdDoesNotMatch, XDSRegistryMetadataError, XDSDuplicateUniqueIdInRegistry...) | dead letter with its codeContext |
//! | SOAP fault `Receiver` | retried |
//! | SOAP fault `Sender` (or another code) | dead letter |
//! | no answer, timeout, HTTP 5xx/408/429 without SOAP | retried |
//! | other HTTP status without SOAP | dead letter |

use std::time::Duration;

use super::http::{Tls, client};
use super::{Delivered, DeliveryError, DeliveryFuture, Destination};
use crate::channel::xds::mtom::Framed;
use crate::channel::xds::soap::{Outcome, classify};
use crate::journal::OutboxItem;

/// An `xds` destination's settings.
#[derive(Debug, Clone)]
pub struct XdsConfig {
    /// The repository's ITI-41 endpoint.
    pub url: String,
    pub tls: Tls,
    pub connect_timeout: Duration,
    /// The whole exchange, answer included (a registry may take a while).
    pub timeout: Duration,
}

pub struct XdsDestination {
    url: String,
    /// The client, or why it could not be built (a missing certificate file): every
    /// delivery then fails with that reason until the channel is fixed and reloaded.
    client: Result<reqwest::Client, String>,
}

impl XdsDestination {
    pub fn new(config: &XdsConfig) -> Self {
        Self {
            url: config.url.clone(),
            client: client(&config.tls, config.connect_timeout, config.timeout),
        }
    }
}

impl Destination for XdsDestination {
    fn deliver<'a>(&'a self, _channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let client = self
                .client
                .as_ref()
                .map_err(|e| DeliveryError::retry(e.clone()))?;
            let request = Framed::from_message(&item.payload).map_err(DeliveryError::permanent)?;
            let response = client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, &request.content_type)
                .header(
                    reqwest::header::ACCEPT,
                    "multipart/related, application/soap+xml",
                )
                .body(request.body)
                .send()
                .await
                .map_err(|e| DeliveryError::retry(format!("{}: {e}", self.url)))?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = response
                .bytes()
                .await
                .map_err(|e| DeliveryError::retry(format!("{}: {e}", self.url)))?;
            match classify(status, &content_type, &body) {
                Outcome::Success(note) => Ok(Delivered::from(note)),
                Outcome::Retry(why) => Err(DeliveryError::retry(why)),
                Outcome::Permanent(why) => Err(DeliveryError::permanent(why)),
            }
        })
    }
}
