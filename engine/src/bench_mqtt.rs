//! `passerelle bench mqtt`: simulated devices publishing SenML readings (QoS 1) to a broker,
//! each on its own MQTT connection and topic `devices/{prefix}-{n}/telemetry`, as fast as the
//! broker acknowledges them. Prints the publish rate; what the engine journals and stores
//! is measured beside it (tests/bench/mqtt_load.py reads the engine's counters and traces).
//!
//! Each reading's SenML base time is the moment it is published (milliseconds, strictly
//! increasing per device), so the latency from publish to store can be read from the store.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;

use crate::runtime::mqtt_ingest::Broker;

#[derive(Debug, Clone, Args)]
pub struct MqttBenchArgs {
    /// The broker the engine subscribes to.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// Simulated devices, one connection each.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Readings in all (split across the devices).
    #[arg(long, default_value_t = 20_000)]
    pub readings: usize,
    /// Device ids are `{prefix}-{n}`, n from 0.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct MqttBenchReport {
    pub devices: usize,
    pub readings: usize,
    pub seconds: f64,
    /// Readings acknowledged by the broker per second.
    pub published_per_second: f64,
    /// Unix time (seconds) of the first and last publish.
    pub first_publish: f64,
    pub last_publish: f64,
}

impl std::fmt::Display for MqttBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mqtt bench: {} readings from {} devices in {:.2} s: {:.0} readings/s acknowledged by the broker",
            self.readings, self.devices, self.seconds, self.published_per_second
        )
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One device: connects, publishes its readings (QoS 1, a window of them in flight), and
/// returns once the broker acknowledged them all.
async fn device(broker: Broker, id: String, readings: usize) -> Result<(i64, i64)> {
    let mut options = MqttOptions::new(format!("{id}-pub"), broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(20);
    if let Some((u, p)) = &broker.credentials {
        options.set_credentials(u.clone(), p.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    let topic = format!("devices/{id}/telemetry");
    let publisher = {
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let (mut last, mut first) = (0i64, None);
            for seq in 0..readings {
                // Strictly increasing per device: each reading has its own time.
                let at = now_ms().max(last + 1);
                last = at;
                first.get_or_insert(at);
                let payload = format!(
                    r#"[{{"bn":"urn:dev:{id}:","bt":{}.{:03},"n":"heart-rate","u":"/min","v":{}}}]"#,
                    at / 1000,
                    at % 1000,
                    60 + seq % 40
                );
                client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                    .await?;
            }
            anyhow::Ok((first.unwrap_or(last), last))
        })
    };
    let mut acked = 0;
    while acked < readings {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => return Err(anyhow!("device {id}: {e}")),
        }
    }
    let span = publisher.await??;
    let _ = client.disconnect().await;
    // Let the disconnect go out.
    let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
    Ok(span)
}

pub async fn run(args: &MqttBenchArgs) -> Result<MqttBenchReport> {
    if args.devices == 0 || args.readings == 0 {
        return Err(anyhow!("devices and readings must be at least 1"));
    }
    let broker = Broker::parse(&args.broker).map_err(|e| anyhow!(e))?;
    let per_device = args.readings / args.devices;
    let extra = args.readings % args.devices;
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.devices)
        .map(|n| (n, per_device + usize::from(n < extra)))
        .filter(|(_, count)| *count > 0)
        .map(|(n, count)| {
            tokio::spawn(device(
                broker.clone(),
                format!("{}-{n}", args.prefix),
                count,
            ))
        })
        .collect();
    let (mut first, mut last) = (i64::MAX, 0i64);
    for t in tasks {
        let (f, l) = t.await??;
        first = first.min(f);
        last = last.max(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(MqttBenchReport {
        devices: args.devices,
        readings: args.readings,
        seconds,
        published_per_second: args.readings as f64 / seconds,
        first_publish: first as f64 / 1000.0,
        last_publish: last as f64 / 1000.0,
    })
}
