//! MLLP listener: one task per connection, frames of a connection handled
//! concurrently up to a window, replies written in request order.

use super::codec::{DEFAULT_MAX_FRAME_SIZE, Frame, MllpCodec, put_frame};
use super::tls::{self, TlsConfig};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What the server does with each frame it receives.
pub trait FrameHandler: Send + Sync + 'static {
    /// Returns the reply to send (e.g. an ACK), or None to send nothing.
    ///
    /// Oversize frames are handed over too, so the handler can reject them
    /// (e.g. with an AR acknowledgement); the connection stays open either way.
    fn handle(&self, frame: Frame, peer: SocketAddr) -> impl Future<Output = Option<Bytes>> + Send;
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest payload accepted; larger frames reach the handler as
    /// [`Frame::Oversize`].
    pub max_frame_size: usize,
    /// A connection that completes no frame and has no reply pending for
    /// this long is closed. Also bounds the TLS handshake and each reply write.
    pub idle_timeout: Duration,
    /// Connections open at once on this listener; beyond it, new ones are accepted and
    /// closed at once. Each call to [`serve`] counts its own connections, even when several
    /// listeners share one [`ServerStats`].
    pub max_connections: usize,
    /// Frames of one connection handled concurrently.
    pub pipeline_window: usize,
    /// On shutdown, how long connections get to finish: they go on reading
    /// and answering the frames the peer already sent (see [`serve`]), and are
    /// cut when this runs out.
    pub drain_timeout: Duration,
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
            pipeline_window: 16,
            drain_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// While draining, a connection with every reply written is closed when no
/// new frame starts within this: long enough for the frames a peer sent just
/// before the shutdown to arrive, short enough not to hold it up.
pub const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// Counters of a running server, cheap to read at any time.
#[derive(Debug, Default)]
pub struct ServerStats {
    active: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    frames: AtomicU64,
    oversize: AtomicU64,
}

impl ServerStats {
    /// Connections currently open.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
    /// Connections served since start.
    pub fn accepted_connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Connections closed at once because `max_connections` was reached.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Frames handed to the handler, oversize ones included.
    pub fn frames_received(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
    /// Frames that exceeded `max_frame_size`.
    pub fn oversize_frames(&self) -> u64 {
        self.oversize.load(Ordering::Relaxed)
    }
}

/// Counts a connection as active, in the (possibly shared) stats and in its own
/// listener's count, for as long as its task holds this, even if the task panics.
struct ActiveGuard {
    stats: Arc<ServerStats>,
    listener: Arc<AtomicUsize>,
}

impl ActiveGuard {
    fn new(stats: Arc<ServerStats>, listener: Arc<AtomicUsize>) -> Self {
        stats.active.fetch_add(1, Ordering::Relaxed);
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        listener.fetch_add(1, Ordering::Relaxed);
        Self { stats, listener }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.listener.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The per-connection part of the configuration.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_frame_size: usize,
    idle_timeout: Duration,
    pipeline_window: usize,
}

/// Serves MLLP on `listener` until `shutdown` is cancelled, then drains: no
/// new connection is accepted, while open ones go on reading and answering
/// the frames their peer already sent, and close once the peer has been quiet
/// for [`DRAIN_QUIET`] with every reply written. Returns once they are closed,
/// or cuts them after `drain_timeout`.
///
/// Fails only if the TLS configuration cannot be loaded.
pub async fn serve<H: FrameHandler>(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with_stats(listener, config, handler, shutdown, Arc::default()).await
}

/// [`serve`], updating `stats` as it goes. Several listeners may share one `stats`: it then
/// counts for all of them, while each keeps its own `max_connections`.
pub async fn serve_with_stats<H: FrameHandler>(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<H>,
    shutdown: CancellationToken,
    stats: Arc<ServerStats>,
) -> io::Result<()> {
    let acceptor = match &config.tls {
        Some(tls) => {
            Some(tls::acceptor(tls).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?)
        }
        None => None,
    };
    let limits = Limits {
        max_frame_size: config.max_frame_size,
        idle_timeout: config.idle_timeout,
        pipeline_window: config.pipeline_window.max(1),
    };
    // This listener's open connections, which `max_connections` limits: `stats` may be
    // shared with other listeners.
    let open = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            // Reap finished tasks so the set does not grow with every connection.
            Some(done) = connections.join_next(), if !connections.is_empty() => log_task_end(done),
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Typically out of file descriptors: back off rather
                        // than spin, the condition may clear.
                        tracing::warn!(error = %e, "MLLP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if open.load(Ordering::Relaxed) >= config.max_connections {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, max = config.max_connections, "too many MLLP connections: closing the new one");
                    drop(tcp);
                    continue;
                }
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
                }
                let guard = ActiveGuard::new(stats.clone(), open.clone());
                let task = connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    handler.clone(),
                    limits,
                    shutdown.clone(),
                    stats.clone(),
                );
                connections.spawn(
                    async move {
                        let _guard = guard;
                        task.await;
                    }
                    .instrument(tracing::info_span!("mllp_connection", %peer)),
                );
            }
        }
    }
    drop(listener);

    let drained = timeout(config.drain_timeout, async {
        while let Some(done) = connections.join_next().await {
            log_task_end(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "MLLP connections did not drain in time: closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn log_task_end(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!("MLLP connection task panicked (handler bug?)");
    }
}

async fn connection<H: FrameHandler>(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    handler: Arc<H>,
    limits: Limits,
    shutdown: CancellationToken,
    stats: Arc<ServerStats>,
) {
    tracing::debug!("MLLP connection opened");
    match acceptor {
        None => serve_stream(tcp, peer, &*handler, limits, &shutdown, &stats).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                r = timeout(limits.idle_timeout, acceptor.accept(tcp)) => r,
                () = shutdown.cancelled() => return,
            };
            match handshake {
                Ok(Ok(tls)) => serve_stream(tls, peer, &*handler, limits, &shutdown, &stats).await,
                Ok(Err(e)) => tracing::warn!(error = %e, "MLLP TLS handshake failed"),
                Err(_) => tracing::warn!("MLLP TLS handshake timed out"),
            }
        }
    }
    tracing::debug!("MLLP connection closed");
}

/// Reads frames, runs the handler on up to `pipeline_window` of them at
/// once, and writes the replies in the order the frames came in. On shutdown
/// it goes on until the peer is quiet, so that frames already sent (possibly
/// many more than the window) are answered rather than dropped unanswered.
async fn serve_stream<S, H>(
    stream: S,
    peer: SocketAddr,
    handler: &H,
    limits: Limits,
    shutdown: &CancellationToken,
    stats: &ServerStats,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    H: FrameHandler,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut frames = FramedRead::new(read, MllpCodec::new(limits.max_frame_size));
    let mut pending = FuturesOrdered::new();
    let mut out = BytesMut::new();
    let mut reading = true;
    let mut draining = false;
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    // Armed on shutdown, pushed back by every frame and reply.
    let quiet = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(quiet);

    while reading || !pending.is_empty() {
        let mid_frame = frames.decoder().in_frame();
        tokio::select! {
            // Replies first: writing one frees a slot in the window.
            biased;
            Some(reply) = pending.next(), if !pending.is_empty() => {
                if let Some(reply) = reply
                    && let Err(e) = write_reply(&mut write, &mut out, reply, limits.idle_timeout).await
                {
                    tracing::debug!(error = %e, "MLLP reply write failed: closing");
                    return;
                }
                idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                quiet.as_mut().reset(Instant::now() + DRAIN_QUIET);
            }
            next = frames.next(), if reading && pending.len() < limits.pipeline_window => match next {
                Some(Ok(frame)) => {
                    stats.frames.fetch_add(1, Ordering::Relaxed);
                    if let Frame::Oversize { size, .. } = &frame {
                        stats.oversize.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(size, max = limits.max_frame_size, "oversize MLLP frame");
                    }
                    idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                    quiet.as_mut().reset(Instant::now() + DRAIN_QUIET);
                    pending.push_back(handler.handle(frame, peer));
                }
                // A read error or EOF ends reading only: the replies of frames
                // already read are still owed (the peer may have half-closed).
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "MLLP read failed");
                    reading = false;
                }
                None => reading = false,
            },
            // Stopping reading at once would leave the frames the peer already
            // sent unanswered; the server cuts the connection after its drain
            // timeout in any case.
            () = shutdown.cancelled(), if reading && !draining => {
                draining = true;
                quiet.as_mut().reset(Instant::now() + DRAIN_QUIET);
            }
            // A frame being received is awaited: its sender is still sending.
            () = &mut quiet, if draining && reading && pending.is_empty() && !mid_frame => {
                if !frames.decoder().in_frame() {
                    tracing::debug!("MLLP connection quiet while shutting down: closing");
                    reading = false;
                }
            }
            () = &mut idle, if reading && pending.is_empty() => {
                tracing::debug!(timeout = ?limits.idle_timeout, "MLLP connection idle: closing");
                break;
            }
        }
    }
    // For TLS this sends close_notify; a peer that stopped reading must not
    // hold the task forever.
    let _ = timeout(limits.idle_timeout, write.shutdown()).await;
}

async fn write_reply<W: AsyncWrite + Unpin>(
    write: &mut W,
    out: &mut BytesMut,
    reply: Bytes,
    limit: Duration,
) -> io::Result<()> {
    out.clear();
    if let Err(why) = put_frame(&reply, out) {
        // The handler's bug must not desynchronise the peer: skip the reply.
        tracing::error!(why, "MLLP reply cannot be framed: not sent");
        return Ok(());
    }
    timeout(limit, async {
        write.write_all(out).await?;
        write.flush().await
    })
    .await
    .unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "reply write timed out",
        ))
    })
}
