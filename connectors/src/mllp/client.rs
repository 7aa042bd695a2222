//! MLLP sender: one connection, one frame out, one reply frame back.

use super::codec::{DEFAULT_MAX_FRAME_SIZE, Frame, MllpCodec, put_frame};
use super::tls::{self, ClientTls};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use std::fmt;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::FramedRead;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Bounds the TCP connect and the TLS handshake together.
    pub connect_timeout: Duration,
    /// Bounds writing a frame and receiving its reply together.
    pub reply_timeout: Duration,
    /// Largest reply accepted.
    pub max_frame_size: usize,
    pub tls: Option<ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(30),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    #[error("MLLP connect failed: {0}")]
    Connect(io::Error),
    #[error("MLLP connection I/O error: {0}")]
    Io(io::Error),
    /// Writing the frame failed: its end never left this side, so the peer
    /// cannot have received it whole.
    #[error("MLLP write failed: {0}")]
    Write(io::Error),
    #[error("MLLP peer did not answer in time")]
    Timeout,
    #[error("MLLP connection is closed")]
    Closed,
    #[error("MLLP reply of {0} bytes exceeds the maximum frame size")]
    Oversize(usize),
    #[error("MLLP TLS error: {0}")]
    Tls(String),
    /// The payload contains framing bytes; nothing was sent.
    #[error("MLLP payload cannot be framed: {0}")]
    InvalidPayload(&'static str),
}

/// Plain TCP and TLS streams behind one type, so the client is not generic.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection to an MLLP listener.
///
/// After a timeout or an I/O error the connection state is unknown (a late
/// reply could be taken for the next one), so every later call fails with
/// [`MllpError::Closed`]: the caller reconnects.
pub struct MllpClient {
    // Writes go straight to the inner stream; the FramedRead only reads.
    frames: FramedRead<Box<dyn Io>, MllpCodec>,
    out: BytesMut,
    reply_timeout: Duration,
    usable: bool,
}

impl fmt::Debug for MllpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MllpClient")
            .field("reply_timeout", &self.reply_timeout)
            .field("usable", &self.usable)
            .finish_non_exhaustive()
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => addr,
    }
}

impl MllpClient {
    /// Connects to `addr` (`host:port`), with TLS when configured.
    pub async fn connect(addr: &str, config: &ClientConfig) -> Result<Self, MllpError> {
        // Build the TLS settings first: a bad file is reported as such, not
        // as a network problem.
        let tls = match &config.tls {
            Some(tls) => Some(
                tls::connector(tls, host_of(addr)).map_err(|e| MllpError::Tls(e.to_string()))?,
            ),
            None => None,
        };
        let open = async {
            let tcp = TcpStream::connect(addr).await.map_err(MllpError::Connect)?;
            tcp.set_nodelay(true).map_err(MllpError::Connect)?;
            let stream: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                Some((connector, name)) => Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| MllpError::Tls(e.to_string()))?,
                ),
            };
            Ok::<_, MllpError>(stream)
        };
        let stream = timeout(config.connect_timeout, open)
            .await
            .map_err(|_| MllpError::Timeout)??;
        Ok(Self {
            frames: FramedRead::new(stream, MllpCodec::new(config.max_frame_size)),
            out: BytesMut::new(),
            reply_timeout: config.reply_timeout,
            usable: true,
        })
    }

    /// Whether the peer closes the connection within `wait` (zero: whether it
    /// has closed it already), or sends something unasked, which would be
    /// taken for the next reply. Some systems close after each reply, others
    /// when idle: asking before reusing a connection costs no frame. True as
    /// well after an error or a timeout; the connection is unusable when true.
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        if !self.usable {
            return true;
        }
        // Let the runtime look at the socket first: an end of stream that
        // arrived since it last did would not be seen otherwise.
        tokio::task::yield_now().await;
        // Between exchanges nothing is expected: anything readable is the end
        // of the stream, an error or a stray frame. Reading is cancel-safe, a
        // timeout loses nothing. A zero wait is one poll, not a timer: tokio's
        // timers round up to the next millisecond, which made every delivery
        // on a reused connection wait a millisecond (about 600 a second at most).
        let readable = if wait.is_zero() {
            self.frames.next().now_or_never().is_some()
        } else {
            timeout(wait, self.frames.next()).await.is_ok()
        };
        if readable {
            self.usable = false;
        }
        !self.usable
    }

    /// Sends one frame and waits for one reply frame.
    pub async fn send(&mut self, payload: &[u8]) -> Result<Bytes, MllpError> {
        self.prepare(payload)?;
        let limit = self.reply_timeout;
        let exchange = async {
            self.write_out().await?;
            match self.frames.next().await {
                Some(Ok(Frame::Message(reply))) => Ok(reply),
                // The whole reply was consumed: the connection is still in step.
                Some(Ok(Frame::Oversize { size, .. })) => Err(MllpError::Oversize(size)),
                Some(Err(e)) => Err(MllpError::Io(e)),
                None => Err(MllpError::Closed),
            }
        };
        let result = timeout(limit, exchange)
            .await
            .unwrap_or(Err(MllpError::Timeout));
        self.usable = !matches!(&result, Err(e) if !matches!(e, MllpError::Oversize(_)));
        result
    }

    /// Sends one frame without waiting for a reply. Do not mix with
    /// [`send`](Self::send) on a connection whose peer does reply: unread
    /// replies would be taken for later ones.
    pub async fn send_no_reply(&mut self, payload: &[u8]) -> Result<(), MllpError> {
        self.prepare(payload)?;
        let result = timeout(self.reply_timeout, self.write_out())
            .await
            .unwrap_or(Err(MllpError::Timeout));
        self.usable = result.is_ok();
        result
    }

    /// Closes the connection cleanly (TLS close_notify, TCP FIN).
    pub async fn close(mut self) -> Result<(), MllpError> {
        timeout(self.reply_timeout, self.frames.get_mut().shutdown())
            .await
            .map_err(|_| MllpError::Timeout)?
            .map_err(MllpError::Io)
    }

    fn prepare(&mut self, payload: &[u8]) -> Result<(), MllpError> {
        if !self.usable {
            return Err(MllpError::Closed);
        }
        self.out.clear();
        put_frame(payload, &mut self.out).map_err(MllpError::InvalidPayload)
    }

    async fn write_out(&mut self) -> Result<(), MllpError> {
        let stream = self.frames.get_mut();
        stream
            .write_all(&self.out)
            .await
            .map_err(MllpError::Write)?;
        stream.flush().await.map_err(MllpError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(host_of("localhost:2575"), "localhost");
        assert_eq!(host_of("[::1]:2575"), "::1");
        assert_eq!(host_of("mllp.example"), "mllp.example");
    }
}
