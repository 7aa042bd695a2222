//! The MQTT entry (device telemetry): a persistent session on a broker (clean session off,
//! so the broker keeps what was not acknowledged across restarts of either side), QoS 1
//! subscriptions, and manual acknowledgements: a reading is acknowledged to the broker only
//! once it is in the journal. Readings are handled concurrently and acknowledged in the order
//! they arrived (MQTT 3.1.1 §4.6). A reading from an unknown device, or that is not SenML nor
//! a FHIR Observation, is journaled as rejected with the reason, and acknowledged: sending it
//! again would not change it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::Runtime;
use super::devices::DeviceRegistry;
use super::processor::{account, pipeline};
use crate::channel::SourceConfig;
use crate::channel::input::{Content, Input};
use crate::journal::{NewMessage, Status, TraceStep, now_micros};

/// Readings being journaled at once per channel.
const IN_FLIGHT: usize = 512;

/// Where the broker is: `mqtt://[user:password@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

impl Broker {
    pub fn parse(url: &str) -> Result<Broker, String> {
        let rest = url.strip_prefix("mqtt://").ok_or_else(|| {
            format!("`{url}` is not an MQTT URL like mqtt://127.0.0.1:1883 (mqtts: not yet)")
        })?;
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((user, address)) => {
                let (u, p) = user.split_once(':').unwrap_or((user, ""));
                (Some((u.to_string(), p.to_string())), address)
            }
            None => (None, rest),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("`{url}`: the port `{p}` is not a number"))?,
            ),
            None => (address, 1883),
        };
        if host.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        Ok(Broker {
            host: host.to_string(),
            port,
            credentials,
        })
    }
}

/// The device a topic names: its level where the filter has `+`.
pub fn device_of(filters: &[String], topic: &str) -> Option<String> {
    let levels: Vec<&str> = topic.split('/').collect();
    filters.iter().find_map(|f| {
        let pattern: Vec<&str> = f.split('/').collect();
        if pattern.len() != levels.len() {
            return None;
        }
        let mut device = None;
        for (p, l) in pattern.iter().zip(&levels) {
            match *p {
                "+" => device = Some(l.to_string()),
                p if p == *l => {}
                _ => return None,
            }
        }
        device.filter(|d| !d.is_empty())
    })
}

struct Ingest {
    runtime: Arc<Runtime>,
    devices: Arc<DeviceRegistry>,
    channel: String,
    topics: Vec<String>,
    peer: String,
}

/// Runs an MQTT channel's subscription until `stop`.
pub async fn run(
    runtime: Arc<Runtime>,
    devices: Arc<DeviceRegistry>,
    channel: String,
    broker_url: String,
    stop: CancellationToken,
) {
    let Some(rt) = runtime.channel(&channel) else {
        return;
    };
    let SourceConfig::Mqtt {
        topics, client_id, ..
    } = rt.channel.source.clone()
    else {
        return;
    };
    let broker = match Broker::parse(&broker_url) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(%channel, "{e}");
            return;
        }
    };
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((user, password)) = &broker.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 1024);
    let ingest = Arc::new(Ingest {
        runtime: runtime.clone(),
        devices,
        channel: channel.clone(),
        topics: topics.clone(),
        peer: format!("{}:{}", broker.host, broker.port),
    });
    // Acknowledgements in arrival order, each once its reading is journaled. Unbounded, so
    // that the event loop never waits (it must keep polling for the acknowledgements to go
    // out); the broker bounds it, sending no more unacknowledged readings than its window.
    let (order, mut pending) =
        mpsc::unbounded_channel::<tokio::task::JoinHandle<Option<Publish>>>();
    let acker = {
        let client = client.clone();
        tokio::spawn(async move {
            while let Some(handle) = pending.recv().await {
                if let Ok(Some(publish)) = handle.await
                    && let Err(e) = client.ack(&publish).await
                {
                    tracing::warn!(error = %e, "cannot acknowledge a reading to the broker");
                }
            }
        })
    };
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut subscribed = false;
    tracing::info!(%channel, broker = %ingest.peer, ?topics, "MQTT subscribing");
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // A broker that lost the session (restarted without persistence) has lost
                // the subscriptions too.
                if !ack.session_present || !subscribed {
                    for t in &topics {
                        if let Err(e) = client.subscribe(t.clone(), QoS::AtLeastOnce).await {
                            tracing::error!(%channel, error = %e, "MQTT subscribe failed");
                        }
                    }
                    subscribed = true;
                }
                tracing::info!(%channel, session_present = ack.session_present, "MQTT connected");
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let ingest = ingest.clone();
                let slots = slots.clone();
                let handle = tokio::spawn(async move {
                    let _permit = slots.acquire_owned().await.ok()?;
                    ingest.receive(&publish).await.then_some(publish)
                });
                if order.send(handle).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%channel, error = %e, "MQTT connection lost; reconnecting");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    drop(order);
    let _ = acker.await;
    let _ = client.disconnect().await;
}

impl Ingest {
    /// The device's link; a store that cannot answer is asked again a few times (it is the
    /// engine's own: a failure is a moment's).
    async fn link(&self, device: &str) -> Result<crate::channel::input::DeviceLink, String> {
        let mut found = self.devices.link(device).await;
        for _ in 0..3 {
            if !found.as_ref().is_err_and(|e| e.starts_with("store:")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            found = self.devices.link(device).await;
        }
        found
    }

    /// Journals one reading (with its outcome, or refused with the reason). True when it is
    /// on disk: then, and only then, the broker may forget it.
    async fn receive(&self, publish: &Publish) -> bool {
        let started = Instant::now();
        let Some(rt) = self.runtime.channel(&self.channel) else {
            return false;
        };
        let device = device_of(&self.topics, &publish.topic).unwrap_or_default();
        let parse_at = now_micros();
        let parsed = Content::Telemetry.parse(&publish.payload);
        let link = if device.is_empty() {
            Err(format!("topic `{}` names no device", publish.topic))
        } else {
            self.link(&device).await
        };
        let mut record = NewMessage {
            channel: self.channel.clone(),
            source: "mqtt".into(),
            peer: Some(self.peer.clone()),
            received_at: now_micros(),
            control_id: None,
            sender: device.clone(),
            message_type: None,
            content_type: Content::Telemetry.mime().into(),
            raw: publish.payload.to_vec(),
            status: Status::Received,
            ack: None,
            error: None,
            receive_us: 0,
            outcome: None,
        };
        let mut effects = None;
        match (parsed, link) {
            (Ok(mut input), Ok(link)) => {
                if let Input::Telemetry(reading) = &mut input {
                    reading.device = device;
                    reading.subject = Some(link);
                }
                record.message_type = input.message_type_text();
                let step = TraceStep::new(
                    "parse",
                    parse_at,
                    started.elapsed().as_micros() as i64,
                    "ok",
                );
                let outcome = pipeline(&rt.channel, &rt.stats, &input, step);
                effects = Some((
                    outcome.status,
                    outcome
                        .outbox
                        .iter()
                        .map(|o| o.destination.clone())
                        .collect::<Vec<_>>(),
                ));
                record.outcome = Some(outcome);
            }
            (Err(e), _) | (Ok(_), Err(e)) => {
                if e.starts_with("store:") {
                    // The registry could not answer: not the reading's fault. Not
                    // acknowledged: the broker sends it again when the session reconnects.
                    tracing::error!(channel = %self.channel, "device registry: {e}");
                    return false;
                }
                record.status = Status::Rejected;
                record.error = Some(e);
            }
        }
        record.receive_us = started.elapsed().as_micros() as i64;
        let rejected = record.status == Status::Rejected;
        match self.runtime.journal().append(record).await {
            Ok(_) => {
                rt.stats.received.fetch_add(1, Relaxed);
                if rejected {
                    rt.stats.rejected.fetch_add(1, Relaxed);
                } else {
                    rt.stats.acked.fetch_add(1, Relaxed);
                }
                rt.stats.ack_latency.observe(started.elapsed());
                if let Some((status, destinations)) = effects {
                    account(&rt.stats, status, destinations.len());
                    self.runtime.wake_outboxes(&self.channel, &destinations);
                }
                true
            }
            Err(e) => {
                tracing::error!(channel = %self.channel, error = %e, "journal append failed: the reading stays with the broker");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            Broker::parse("mqtt://127.0.0.1:1884").unwrap(),
            Broker {
                host: "127.0.0.1".into(),
                port: 1884,
                credentials: None
            }
        );
        let b = Broker::parse("mqtt://dev:s3cret@broker.local").unwrap();
        assert_eq!(
            (b.port, b.credentials),
            (1883, Some(("dev".into(), "s3cret".into())))
        );
        assert!(Broker::parse("http://x").is_err());
        assert!(Broker::parse("mqtt://x:port").is_err());
    }

    #[test]
    fn the_plus_level_of_a_topic_names_the_device() {
        let filters = vec!["devices/+/telemetry".to_string()];
        assert_eq!(
            device_of(&filters, "devices/mon-7/telemetry").as_deref(),
            Some("mon-7")
        );
        assert_eq!(device_of(&filters, "devices/mon-7/status"), None);
        assert_eq!(device_of(&filters, "devices//telemetry"), None);
        assert_eq!(device_of(&filters, "devices/a/b/telemetry"), None);
    }
}
