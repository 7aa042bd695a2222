//! Forwards each message over MLLP and waits for the peer's acknowledgement.
//! AA/CA: delivered. AE/CE: the peer had a problem, retried. AR/CR: refused, dead letter.

use std::time::Duration;

use passerelle_connectors::mllp::{ClientConfig, MllpClient};
use passerelle_hl7v2::Message;
use passerelle_hl7v2::ack::{AckCode, read_ack};
use tokio::sync::Mutex;

use super::{DeliveryError, DeliveryFuture, Destination};
use crate::journal::OutboxItem;

pub struct MllpDestination {
    address: String,
    config: ClientConfig,
    /// One connection, reused; deliveries of one destination are sequential to keep order.
    connection: Mutex<Option<MllpClient>>,
}

impl MllpDestination {
    pub fn new(address: String, ack_timeout: Duration, connect_timeout: Duration) -> Self {
        let config = ClientConfig {
            connect_timeout,
            reply_timeout: ack_timeout,
            ..ClientConfig::default()
        };
        Self {
            address,
            config,
            connection: Mutex::new(None),
        }
    }
}

impl Destination for MllpDestination {
    fn deliver<'a>(&'a self, _channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let mut slot = self.connection.lock().await;
            if slot.is_none() {
                let client = MllpClient::connect(&self.address, &self.config)
                    .await
                    .map_err(|e| DeliveryError::retry(format!("{}: {e}", self.address)))?;
                *slot = Some(client);
            }
            let client = slot.as_mut().expect("connected above");
            let reply = match client.send(&item.payload).await {
                Ok(reply) => reply,
                Err(e) => {
                    // The connection's state is unknown: drop it, the retry reconnects.
                    *slot = None;
                    return Err(DeliveryError::retry(format!("{}: {e}", self.address)));
                }
            };
            judge_ack(&reply, item.control_id.as_deref())
        })
    }
}

fn judge_ack(reply: &[u8], control_id: Option<&str>) -> Result<String, DeliveryError> {
    let parsed = Message::parse(reply)
        .map_err(|e| DeliveryError::retry(format!("unreadable acknowledgement: {e}")))?;
    let Some((code, acked_id, text)) = read_ack(&parsed) else {
        return Err(DeliveryError::retry("the reply has no MSA segment"));
    };
    if let (Some(expected), Some(got)) = (control_id, acked_id.as_deref())
        && expected != got
    {
        return Err(DeliveryError::retry(format!(
            "acknowledgement for {got}, expected {expected}"
        )));
    }
    let said = format!("{} {}", code.as_str(), text.unwrap_or_default());
    let said = said.trim_end().to_string();
    match code {
        AckCode::AA | AckCode::CA => Ok(said),
        AckCode::AE | AckCode::CE => Err(DeliveryError::retry(said)),
        AckCode::AR | AckCode::CR => Err(DeliveryError::permanent(said)),
    }
}
