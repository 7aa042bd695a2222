//! `passerelle bench mllp`: an end-to-end load generator. N connections each send HL7 v2
//! messages and wait for every ACK, as a real sender does; prints throughput and ACK latency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use passerelle_connectors::mllp::{
    ClientConfig, Frame, FrameHandler, MllpClient, ServerConfig, serve,
};
use passerelle_hl7v2::Message;
use passerelle_hl7v2::ack::{AckBuilder, AckCode, read_ack};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Args)]
pub struct MllpBenchArgs {
    /// The engine's MLLP address.
    #[arg(long, default_value = "127.0.0.1:2575")]
    pub address: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Messages in all (split across the connections).
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Approximate size of each message in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Measure the peer instead of an engine: serve, on `--address`, an MLLP listener that
    /// parses each message and answers AA without journaling it. The gap between this figure
    /// and the engine's is the cost of durability.
    #[arg(long)]
    pub ceiling: bool,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub messages: usize,
    pub connections: usize,
    pub message_bytes: usize,
    pub seconds: f64,
    pub messages_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub acks: BTreeMap<String, usize>,
}

/// An ADT^A01 of about `size` bytes with a unique control id.
pub fn sample_message(run: &str, connection: usize, seq: usize, size: usize) -> Vec<u8> {
    let mut text = format!(
        "MSH|^~\\&|BENCH|CHBM|PASSERELLE|CHBM|20240101120000||ADT^A01^ADT_A01|{run}-{connection}-{seq}|P|2.5|||AL|NE||8859/1\r\
         EVN|A01|20240101120000\r\
         PID|1||{seq}^^^CHBM^PI||MARTIN^CLAIRE^^^^^L||19800101|F|||1 RUE DES LILAS^^BELFORT^^90000^FRA\r\
         PV1|1|I|CARDIO^101^1^CHBM||||1234^DOC^ALICE\r"
    );
    while text.len() + 8 < size {
        let n = size - text.len() - 8;
        text.push_str("NTE|1||");
        text.push_str(&"x".repeat(n.min(200)));
        text.push('\r');
    }
    text.into_bytes()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// The `--ceiling` peer: the same MLLP transport, parse and ACK as the engine, no journal.
struct AckOnly;

impl FrameHandler for AckOnly {
    async fn handle(&self, frame: Frame, _peer: SocketAddr) -> Option<Bytes> {
        let Frame::Message(bytes) = frame else {
            return None;
        };
        let message = Message::parse(&bytes).ok()?;
        let header = message.header();
        let timestamp = chrono::Local::now().format("%Y%m%d%H%M%S%z").to_string();
        let ack = AckBuilder::new(Some(&header), AckCode::AA, "CEILING", timestamp);
        Some(Bytes::from(ack.build()))
    }
}

pub async fn run(args: &MllpBenchArgs) -> Result<BenchReport> {
    if args.connections == 0 || args.messages == 0 {
        return Err(anyhow!("connections and messages must be at least 1"));
    }
    if !args.ceiling {
        return load(args).await;
    }
    let listener = TcpListener::bind(&args.address).await?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        ServerConfig::default(),
        Arc::new(AckOnly),
        stop.clone(),
    ));
    let report = load(args).await;
    stop.cancel();
    let _ = server.await;
    report
}

/// Sends the load to `args.address` and collects every ACK.
async fn load(args: &MllpBenchArgs) -> Result<BenchReport> {
    let run_id = format!("B{}", chrono::Utc::now().timestamp_millis());
    let per_connection = args.messages.div_ceil(args.connections);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..args.connections {
        let address = args.address.clone();
        let run_id = run_id.clone();
        let size = args.size;
        tasks.push(tokio::spawn(async move {
            let config = ClientConfig::default();
            let mut client = MllpClient::connect(&address, &config).await?;
            let mut latencies = Vec::with_capacity(per_connection);
            let mut acks: BTreeMap<String, usize> = BTreeMap::new();
            for seq in 0..per_connection {
                let message = sample_message(&run_id, connection, seq, size);
                let sent = Instant::now();
                let reply = client.send(&message).await?;
                latencies.push(sent.elapsed());
                let code = Message::parse(&reply)
                    .ok()
                    .and_then(|m| read_ack(&m).map(|(code, _, _)| code.as_str().to_string()))
                    .unwrap_or_else(|| "unreadable".into());
                *acks.entry(code).or_default() += 1;
            }
            anyhow::Ok((latencies, acks))
        }));
    }
    let mut latencies = Vec::with_capacity(args.messages);
    let mut acks: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        let (l, a) = task.await??;
        latencies.extend(l);
        for (code, n) in a {
            *acks.entry(code).or_default() += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok(BenchReport {
        messages: latencies.len(),
        connections: args.connections,
        message_bytes: sample_message(&run_id, 0, 0, args.size).len(),
        seconds,
        messages_per_second: latencies.len() as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies
            .last()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0),
        acks,
    })
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "mllp bench: {} messages of {} bytes over {} connections in {:.2} s",
            self.messages, self.message_bytes, self.connections, self.seconds
        )?;
        writeln!(
            f,
            "  throughput: {:.0} msg/s acknowledged (target >= 10000)",
            self.messages_per_second
        )?;
        writeln!(
            f,
            "  ACK latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 20 ms)",
            self.p50_ms, self.p99_ms, self.max_ms
        )?;
        write!(f, "  acknowledgements: {:?}", self.acks)
    }
}
