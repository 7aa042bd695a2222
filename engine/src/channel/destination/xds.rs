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

use super::http::{HttpSettings, Peer};
use super::{Delivered, DeliveryError, DeliveryFuture, Destination};
use crate::channel::xds::mtom::Framed;
use crate::channel::xds::soap::{Outcome, classify};
use crate::journal::OutboxItem;

pub struct XdsDestination {
    peer: Peer,
}

impl XdsDestination {
    pub fn new(settings: &HttpSettings) -> Self {
        Self {
            peer: Peer::new(settings),
        }
    }
}

impl Destination for XdsDestination {
    fn deliver<'a>(&'a self, _channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let client = self.peer.client()?;
            let request = Framed::from_message(&item.payload).map_err(DeliveryError::permanent)?;
            let answer = self
                .peer
                .exchange(
                    client
                        .post(&self.peer.url)
                        .header(reqwest::header::CONTENT_TYPE, &request.content_type)
                        .header(
                            reqwest::header::ACCEPT,
                            "multipart/related, application/soap+xml",
                        )
                        .body(request.body),
                )
                .await?;
            match classify(answer.status, &answer.content_type, &answer.body) {
                Outcome::Success(note) => Ok(Delivered::from(note)),
                Outcome::Retry(why) => Err(DeliveryError::retry(why)),
                Outcome::Permanent(why) => Err(DeliveryError::permanent(why)),
            }
        })
    }
}
