//! Helpers shared by the loopback server tests.
#![allow(dead_code)] // each test file uses a different subset

use bytes::{Bytes, BytesMut};
use passerelle_connectors::mllp::codec::{CR, EB, SB};
use passerelle_connectors::mllp::{
    Frame, FrameHandler, MllpCodec, ServerConfig, ServerStats, serve_with_stats,
};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// Replies with the payload; rejects oversize frames with `AR <size>`.
pub struct Echo;

impl FrameHandler for Echo {
    async fn handle(&self, frame: Frame, _peer: SocketAddr) -> Option<Bytes> {
        Some(echo_reply(frame))
    }
}

pub fn echo_reply(frame: Frame) -> Bytes {
    match frame {
        Frame::Message(payload) => payload,
        Frame::Oversize { size, .. } => Bytes::from(format!("AR {size}")),
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub stats: Arc<ServerStats>,
    pub task: JoinHandle<io::Result<()>>,
}

impl Server {
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Cancels and waits for `serve` to return, failing the test if it hangs.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("serve did not return")
            .unwrap()
            .unwrap();
    }
}

pub async fn start<H: FrameHandler>(config: ServerConfig, handler: H) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stats = Arc::new(ServerStats::default());
    let task = tokio::spawn(serve_with_stats(
        listener,
        config,
        Arc::new(handler),
        shutdown.clone(),
        stats.clone(),
    ));
    Server {
        addr,
        shutdown,
        stats,
        task,
    }
}

pub fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![SB];
    v.extend_from_slice(payload);
    v.extend_from_slice(&[EB, CR]);
    v
}

/// Reads frames from a raw socket until `n` are decoded (or EOF).
pub async fn read_frames(stream: &mut TcpStream, n: usize) -> Vec<Frame> {
    let mut codec = MllpCodec::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    while frames.len() < n {
        if let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
            continue;
        }
        if stream.read_buf(&mut buf).await.unwrap() == 0 {
            break;
        }
    }
    frames
}

/// True when the peer closes the socket (EOF or reset) within `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected data from the server"),
        Err(_) => false,
    }
}
