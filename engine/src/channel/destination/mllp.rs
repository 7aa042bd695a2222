//! Forwards each message over MLLP and waits for the peer's acknowledgement.
//! AA/CA: delivered. AE/CE: the peer had a problem, retried. AR/CR: refused, dead letter.

use std::time::{Duration, Instant};

use passerelle_connectors::mllp::{ClientConfig, MllpClient, MllpError};
use passerelle_hl7v2::Message;
use passerelle_hl7v2::ack::{AckCode, read_ack};
use tokio::sync::Mutex;

use super::{Delivered, DeliveryError, DeliveryFuture, Destination};
use crate::journal::OutboxItem;

/// How long after its reply a connection is watched, the first time it is reused, for the
/// peer closing it: systems that close after each acknowledgement do so a moment after
/// sending it, and a message written meanwhile would be lost with the connection.
const SETTLE: Duration = Duration::from_millis(100);

pub struct MllpDestination {
    address: String,
    config: ClientConfig,
    /// Deliveries of one destination are sequential to keep order.
    link: Mutex<Link>,
}

/// The connection, reused while the peer keeps it open.
#[derive(Default)]
struct Link {
    client: Option<MllpClient>,
    /// When the last reply on `client` arrived.
    replied_at: Option<Instant>,
    /// Whether the peer keeps a connection open after replying; learnt on the first reuse.
    keeps_open: Option<bool>,
}

impl Link {
    /// Drops the connection when the peer has closed it, so that nothing is written on it.
    async fn drop_if_closed(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let closed = match (self.keeps_open, self.replied_at) {
            (None, Some(at)) if at.elapsed() < SETTLE => {
                let closed = client
                    .closed_within(SETTLE.saturating_sub(at.elapsed()))
                    .await;
                self.keeps_open = Some(!closed);
                closed
            }
            (None, Some(_)) => {
                // Long after the reply: open means the peer keeps connections, closed may
                // as well be an idle timeout.
                let closed = client.closed_within(Duration::ZERO).await;
                self.keeps_open = (!closed).then_some(true);
                closed
            }
            _ => client.closed_within(Duration::ZERO).await,
        };
        if closed {
            self.client = None;
        }
    }

    fn replied(&mut self) {
        self.replied_at = Some(Instant::now());
        if self.keeps_open == Some(false) {
            // The peer is about to close it: a new connection for the next message.
            self.client = None;
        }
    }
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
            link: Mutex::new(Link::default()),
        }
    }
}

impl Destination for MllpDestination {
    fn deliver<'a>(&'a self, _channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let mut link = self.link.lock().await;
            link.drop_if_closed().await;
            let mut reused = link.client.is_some();
            loop {
                let client = match link.client.as_mut() {
                    Some(client) => client,
                    None => link.client.insert(
                        MllpClient::connect(&self.address, &self.config)
                            .await
                            .map_err(|e| DeliveryError::retry(format!("{}: {e}", self.address)))?,
                    ),
                };
                match client.send(&item.payload).await {
                    Ok(reply) => {
                        link.replied();
                        let expected = sent_control_id(&item.payload);
                        let expected = expected.as_deref().or(item.control_id.as_deref());
                        return judge_ack(&reply, expected).map(Delivered::from);
                    }
                    // The peer closed the reused connection just before the write: the frame
                    // did not get through whole, so sending it once more on a fresh connection
                    // cannot deliver it twice.
                    Err(MllpError::Write(_)) if reused => {
                        link.client = None;
                        reused = false;
                    }
                    Err(e) => {
                        // The connection's state is unknown (the peer may have the message):
                        // drop it, and let the retry policy decide when to send again.
                        link.client = None;
                        return Err(DeliveryError::retry(format!("{}: {e}", self.address)));
                    }
                }
            }
        })
    }
}

/// The MSH-10 of the message sent, which the peer's MSA-2 must quote. It is not always the
/// journal's control id: an outbound mapping writes a message of its own (with its own
/// MSH-10) from a store change whose id is `Type/id/_history/version`.
fn sent_control_id(payload: &[u8]) -> Option<String> {
    let message = Message::parse(payload).ok()?;
    let id = message.msh().field(10)?.value().trim().to_string();
    (!id.is_empty()).then_some(id)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn item(control_id: &str) -> OutboxItem {
        OutboxItem {
            id: 1,
            message_id: 1,
            generation: 0,
            destination: "lab".into(),
            attempts: 0,
            next_attempt_at: 0,
            control_id: Some(control_id.into()),
            payload: format!("MSH|^~\\&|A|B|C|D|2024||ADT^A01|{control_id}|P|2.5\r").into_bytes(),
        }
    }

    /// A peer answering AA to each frame; with `close_after`, it closes the connection that
    /// long after each answer. Returns its address and the number of connections it accepted.
    async fn peer(close_after: Option<Duration>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer(stream, close_after));
            }
        });
        (address, connections)
    }

    async fn answer(mut stream: TcpStream, close_after: Option<Duration>) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = buffer.windows(2).position(|w| w == b"\x1c\r") {
                let frame: Vec<u8> = buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&frame[1..end]).into_owned();
                let control_id = text.split('|').nth(9).unwrap_or_default().to_string();
                let ack =
                    format!("\x0bMSH|^~\\&|P|Q|A|B|2024||ACK|X|P|2.5\rMSA|AA|{control_id}\r\x1c\r");
                stream.write_all(ack.as_bytes()).await.unwrap();
                if let Some(delay) = close_after {
                    tokio::time::sleep(delay).await;
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn destination(address: String) -> MllpDestination {
        MllpDestination::new(address, Duration::from_secs(5), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_peer_that_keeps_the_connection_gets_every_message_on_it() {
        let (address, connections) = peer(None).await;
        let d = destination(address);
        for id in ["K-1", "K-2", "K-3"] {
            assert_eq!(
                d.deliver("c", &item(id)).await,
                Ok(Delivered::from("AA".to_string()))
            );
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_peer_that_closes_after_each_reply_gets_each_message_at_the_first_try() {
        // Closing a moment after the answer: a message sent at once would meet the close.
        for delay in [Duration::ZERO, Duration::from_millis(30)] {
            let (address, connections) = peer(Some(delay)).await;
            let d = destination(address);
            for id in ["C-1", "C-2", "C-3", "C-4"] {
                assert_eq!(
                    d.deliver("c", &item(id)).await,
                    Ok(Delivered::from("AA".to_string())),
                    "{delay:?}"
                );
            }
            assert_eq!(connections.load(Ordering::SeqCst), 4);
        }
    }

    #[tokio::test]
    async fn the_acknowledgement_expected_is_for_the_message_sent() {
        // An outbound mapping's message has its own MSH-10; the journal's id is the change's.
        let (address, _) = peer(None).await;
        let d = destination(address);
        let mut mapped = item("RDE-1");
        mapped.control_id = Some("MedicationRequest/7/_history/2".into());
        assert_eq!(
            d.deliver("c", &mapped).await,
            Ok(Delivered::from("AA".to_string()))
        );
        assert!(
            judge_ack(
                b"MSH|^~\\&|P|Q|A|B|2024||ACK|X|P|2.5\rMSA|AA|OTHER\r",
                Some("RDE-1")
            )
            .is_err()
        );
    }
}
