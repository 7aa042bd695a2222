//! Server and client over loopback.

mod common;

use bytes::Bytes;
use common::{Echo, Server, closed_within, echo_reply, framed, read_frames, start};
use passerelle_connectors::mllp::{
    ClientConfig, DRAIN_QUIET, Frame, FrameHandler, MllpClient, MllpError, ServerConfig,
    ServerStats, serve_with_stats,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

async fn client(server: &Server) -> MllpClient {
    MllpClient::connect(&server.addr_string(), &client_config())
        .await
        .unwrap()
}

/// Sleeps for the number of milliseconds before the first `:` of the
/// payload, then echoes it. Tracks how many frames are in the handler at once.
#[derive(Default)]
struct Slow {
    in_handler: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl FrameHandler for Slow {
    async fn handle(&self, frame: Frame, _peer: SocketAddr) -> Option<Bytes> {
        let now = self.in_handler.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        if let Frame::Message(payload) = &frame {
            let text = std::str::from_utf8(payload).unwrap();
            let ms: u64 = text.split(':').next().unwrap().parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.in_handler.fetch_sub(1, Ordering::SeqCst);
        Some(echo_reply(frame))
    }
}

/// Replies nothing; reports what it got.
struct Sink(mpsc::UnboundedSender<Frame>);

impl FrameHandler for Sink {
    async fn handle(&self, frame: Frame, _peer: SocketAddr) -> Option<Bytes> {
        self.0.send(frame).unwrap();
        None
    }
}

/// Lets a test keep a handle on a handler the server owns.
struct Shared<H>(Arc<H>);

impl<H: FrameHandler> FrameHandler for Shared<H> {
    fn handle(&self, frame: Frame, peer: SocketAddr) -> impl Future<Output = Option<Bytes>> + Send {
        self.0.handle(frame, peer)
    }
}

#[tokio::test]
async fn echo_round_trip() {
    let server = start(ServerConfig::default(), Echo).await;
    let mut client = client(&server).await;
    let reply = client.send(b"MSH|^~\\&|A\rPID|1\r").await.unwrap();
    assert_eq!(&reply[..], b"MSH|^~\\&|A\rPID|1\r");
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_connections_twenty_messages_each() {
    let server = start(ServerConfig::default(), Echo).await;
    let addr = server.addr_string();
    let mut clients = Vec::new();
    for c in 0..50 {
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            let mut client = MllpClient::connect(&addr, &client_config()).await.unwrap();
            for m in 0..20 {
                let payload = format!("MSH|client {c}|message {m}");
                let reply = client.send(payload.as_bytes()).await.unwrap();
                assert_eq!(&reply[..], payload.as_bytes());
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(server.stats.frames_received(), 1000);
    assert_eq!(server.stats.accepted_connections(), 50);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_frames_are_handled_concurrently_and_answered_in_order() {
    let handler = Arc::new(Slow::default());
    let server = start(ServerConfig::default(), Shared(handler.clone())).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();

    // Earlier frames take longer, so handlers finish in reverse order.
    let payloads: Vec<String> = (0..10)
        .map(|i| format!("{}:frame {i}", 200 - i * 20))
        .collect();
    let mut bytes = Vec::new();
    for p in &payloads {
        bytes.extend(framed(p.as_bytes()));
    }
    let started = Instant::now();
    stream.write_all(&bytes).await.unwrap();
    let replies = read_frames(&mut stream, 10).await;
    let elapsed = started.elapsed();

    let expected: Vec<Frame> = payloads
        .iter()
        .map(|p| Frame::Message(Bytes::from(p.clone())))
        .collect();
    assert_eq!(replies, expected);
    // One after the other they would take 1.1 s.
    assert!(elapsed < Duration::from_millis(800), "took {elapsed:?}");
    assert!(handler.most_at_once.load(Ordering::SeqCst) > 1);
    server.stop().await;
}

#[tokio::test]
async fn pipeline_window_bounds_frames_in_flight() {
    let handler = Arc::new(Slow::default());
    let config = ServerConfig {
        pipeline_window: 3,
        ..ServerConfig::default()
    };
    let server = start(config, Shared(handler.clone())).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut bytes = Vec::new();
    for i in 0..12 {
        bytes.extend(framed(format!("30:{i}").as_bytes()));
    }
    stream.write_all(&bytes).await.unwrap();
    assert_eq!(read_frames(&mut stream, 12).await.len(), 12);
    assert_eq!(handler.most_at_once.load(Ordering::SeqCst), 3);
    server.stop().await;
}

#[tokio::test]
async fn oversize_frame_is_answered_and_connection_stays_usable() {
    let config = ServerConfig {
        max_frame_size: 1024,
        ..ServerConfig::default()
    };
    let server = start(config, Echo).await;
    let mut client = client(&server).await;
    let big = vec![b'x'; 50_000];
    assert_eq!(&client.send(&big).await.unwrap()[..], b"AR 50000");
    assert_eq!(&client.send(b"MSH|next").await.unwrap()[..], b"MSH|next");
    assert_eq!(server.stats.oversize_frames(), 1);
    server.stop().await;
}

#[tokio::test]
async fn junk_and_broken_frames_do_not_close_the_connection() {
    let server = start(ServerConfig::default(), Echo).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut bytes = b"junk".to_vec();
    bytes.extend_from_slice(b"\x0bMSH|never finished");
    bytes.extend(framed(b"MSH|good"));
    stream.write_all(&bytes).await.unwrap();
    assert_eq!(
        read_frames(&mut stream, 1).await,
        vec![Frame::Message(Bytes::from_static(b"MSH|good"))]
    );
    stream.write_all(&framed(b"MSH|again")).await.unwrap();
    assert_eq!(
        read_frames(&mut stream, 1).await,
        vec![Frame::Message(Bytes::from_static(b"MSH|again"))]
    );
    server.stop().await;
}

#[tokio::test]
async fn replies_are_written_after_the_peer_half_closes() {
    let server = start(ServerConfig::default(), Slow::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&framed(b"100:last words")).await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(
        read_frames(&mut stream, 1).await,
        vec![Frame::Message(Bytes::from_static(b"100:last words"))]
    );
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    server.stop().await;
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = start(config, Echo).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    // Activity postpones the deadline.
    stream.write_all(&framed(b"MSH|alive")).await.unwrap();
    assert_eq!(read_frames(&mut stream, 1).await.len(), 1);
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let server = start(config, Echo).await;
    let mut first = client(&server).await;
    // The round trip proves the server has accepted the first connection.
    first.send(b"MSH|1").await.unwrap();

    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut second, Duration::from_secs(2)).await);
    assert_eq!(server.stats.refused_connections(), 1);
    assert_eq!(server.stats.active_connections(), 1);

    // The first one is unaffected, and its slot frees up when it leaves.
    first.send(b"MSH|2").await.unwrap();
    first.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.stats.active_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut third = client(&server).await;
    third.send(b"MSH|3").await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn max_connections_is_per_listener_even_with_shared_stats() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let stats = Arc::new(ServerStats::default());
    let shutdown = CancellationToken::new();
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap().to_string());
        tasks.push(tokio::spawn(serve_with_stats(
            listener,
            config.clone(),
            Arc::new(Echo),
            shutdown.clone(),
            stats.clone(),
        )));
    }
    // One connection on each listener: both are served.
    let mut first = MllpClient::connect(&addrs[0], &client_config())
        .await
        .unwrap();
    assert_eq!(&first.send(b"MSH|1").await.unwrap()[..], b"MSH|1");
    let mut second = MllpClient::connect(&addrs[1], &client_config())
        .await
        .unwrap();
    assert_eq!(&second.send(b"MSH|2").await.unwrap()[..], b"MSH|2");
    assert_eq!(stats.active_connections(), 2, "the shared stats count both");
    assert_eq!(stats.refused_connections(), 0);

    // A second connection on the first listener is over its own limit.
    let mut extra = TcpStream::connect(&addrs[0]).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    assert_eq!(stats.refused_connections(), 1);

    first.close().await.unwrap();
    second.close().await.unwrap();
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn shutdown_drains_in_flight_replies() {
    let server = start(ServerConfig::default(), Slow::default()).await;
    let addr = server.addr_string();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let busy = tokio::spawn(async move {
        let mut client = MllpClient::connect(&addr, &client_config()).await.unwrap();
        client.send(b"400:in flight").await
    });
    // Let the frame reach the handler, then shut down while it sleeps.
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.stats.frames_received() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = server.addr;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "did not wait for the reply"
    );

    assert_eq!(&busy.await.unwrap().unwrap()[..], b"400:in flight");
    assert!(closed_within(&mut idle, Duration::from_secs(1)).await);
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn shutdown_gives_up_after_the_drain_timeout() {
    let config = ServerConfig {
        drain_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let server = start(config, Slow::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&framed(b"60000:forever")).await.unwrap();
    while server.stats.frames_received() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(closed_within(&mut stream, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn shutdown_answers_every_frame_already_sent_even_beyond_the_window() {
    let config = ServerConfig {
        pipeline_window: 4,
        ..ServerConfig::default()
    };
    let server = start(config, Slow::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let payloads: Vec<String> = (0..50).map(|i| format!("10:frame {i}")).collect();
    let mut bytes = Vec::new();
    for p in &payloads {
        bytes.extend(framed(p.as_bytes()));
    }
    stream.write_all(&bytes).await.unwrap();
    while server.stats.frames_received() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Most frames are still in the socket when the shutdown starts.
    server.shutdown.cancel();
    let replies = read_frames(&mut stream, payloads.len()).await;
    let expected: Vec<Frame> = payloads
        .iter()
        .map(|p| Frame::Message(Bytes::from(p.clone())))
        .collect();
    assert_eq!(replies, expected);
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    server.stop().await;
}

#[tokio::test]
async fn frames_sent_while_draining_are_answered_until_the_peer_is_quiet() {
    let server = start(ServerConfig::default(), Echo).await;
    let addr = server.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&framed(b"MSH|before")).await.unwrap();
    assert_eq!(read_frames(&mut stream, 1).await.len(), 1);
    server.shutdown.cancel();
    // New connections are refused at once...
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...while the open one still answers what its peer sends.
    for i in 0..3 {
        let payload = format!("MSH|during {i}");
        stream.write_all(&framed(payload.as_bytes())).await.unwrap();
        assert_eq!(
            read_frames(&mut stream, 1).await,
            vec![Frame::Message(Bytes::from(payload))]
        );
    }
    let quiet_from = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
    assert!(quiet_from.elapsed() >= DRAIN_QUIET - Duration::from_millis(50));
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_keeps_sending_is_cut_at_the_drain_timeout() {
    let config = ServerConfig {
        drain_timeout: Duration::from_millis(400),
        ..ServerConfig::default()
    };
    let server = start(config, Echo).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        while write.write_all(&framed(b"MSH|more")).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let reader = tokio::spawn(async move {
        let mut sink = vec![0u8; 4096];
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut read, &mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    while server.stats.frames_received() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let stats = server.stats.clone();
    let before = stats.frames_received();
    server.stop().await;
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "served during the drain"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(stats.frames_received() > before + 5);
    tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .expect("connection closed")
        .unwrap();
    sender.abort();
}

#[tokio::test]
async fn client_times_out_and_becomes_unusable() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = start(ServerConfig::default(), Sink(tx)).await;
    let config = ClientConfig {
        reply_timeout: Duration::from_millis(200),
        ..client_config()
    };
    let mut client = MllpClient::connect(&server.addr_string(), &config)
        .await
        .unwrap();
    let started = Instant::now();
    assert!(matches!(
        client.send(b"MSH|1").await,
        Err(MllpError::Timeout)
    ));
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(matches!(
        client.send(b"MSH|2").await,
        Err(MllpError::Closed)
    ));
    // The first frame did arrive; the second was never sent.
    assert_eq!(
        rx.recv().await.unwrap(),
        Frame::Message(Bytes::from_static(b"MSH|1"))
    );
    assert!(rx.try_recv().is_err());
    server.stop().await;
}

#[tokio::test]
async fn send_no_reply_delivers_frames() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = start(ServerConfig::default(), Sink(tx)).await;
    let mut client = client(&server).await;
    client.send_no_reply(b"MSH|a").await.unwrap();
    client.send_no_reply(b"MSH|b").await.unwrap();
    assert_eq!(
        rx.recv().await.unwrap(),
        Frame::Message(Bytes::from_static(b"MSH|a"))
    );
    assert_eq!(
        rx.recv().await.unwrap(),
        Frame::Message(Bytes::from_static(b"MSH|b"))
    );
    server.stop().await;
}

#[tokio::test]
async fn client_refuses_payloads_with_framing_bytes_and_stays_usable() {
    let server = start(ServerConfig::default(), Echo).await;
    let mut client = client(&server).await;
    assert!(matches!(
        client.send(b"MSH|\x0b").await,
        Err(MllpError::InvalidPayload(_))
    ));
    assert_eq!(&client.send(b"MSH|ok").await.unwrap()[..], b"MSH|ok");
    server.stop().await;
}

#[tokio::test]
async fn client_reports_oversize_replies() {
    let server = start(ServerConfig::default(), Echo).await;
    let config = ClientConfig {
        max_frame_size: 10,
        ..client_config()
    };
    let mut client = MllpClient::connect(&server.addr_string(), &config)
        .await
        .unwrap();
    assert!(matches!(
        client.send(&[b'x'; 100]).await,
        Err(MllpError::Oversize(100))
    ));
    // The oversize reply was read to its end: the next exchange works.
    assert_eq!(&client.send(b"short").await.unwrap()[..], b"short");
    server.stop().await;
}

#[tokio::test]
async fn client_connect_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = MllpClient::connect(&addr, &client_config())
        .await
        .unwrap_err();
    assert!(matches!(err, MllpError::Connect(_)), "{err}");
    assert!(err.to_string().contains("connect"));
}

#[tokio::test]
async fn client_sees_the_server_closing() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = start(config, Echo).await;
    let mut client = client(&server).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = client.send(b"MSH|late").await.unwrap_err();
    assert!(
        matches!(
            err,
            MllpError::Closed | MllpError::Io(_) | MllpError::Write(_)
        ),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn client_knows_before_sending_that_the_server_closed() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = start(config, Echo).await;
    let mut client = client(&server).await;
    assert_eq!(&client.send(b"MSH|1").await.unwrap()[..], b"MSH|1");
    assert!(!client.closed_within(Duration::ZERO).await, "still open");
    assert!(
        client.closed_within(Duration::from_secs(5)).await,
        "closed by the idle timeout"
    );
    assert!(matches!(
        client.send(b"MSH|2").await,
        Err(MllpError::Closed)
    ));
    assert_eq!(server.stats.frames_received(), 1, "nothing written after");
    server.stop().await;
}

#[tokio::test]
async fn client_does_not_take_a_stray_frame_for_the_next_reply() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(&framed(b"unasked")).await.unwrap();
        stream
    });
    let mut client = MllpClient::connect(&addr, &client_config()).await.unwrap();
    let _stream = peer.await.unwrap();
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(matches!(
        client.send(b"MSH|1").await,
        Err(MllpError::Closed)
    ));
}
