//! MLLP framing: `0x0B <payload> 0x1C 0x0D`.
//!
//! The decoder is written for hostile or buggy peers:
//!
//! * bytes before a start block (`0x0B`) are skipped and counted;
//! * a `0x1C` that is not immediately followed by `0x0D` is ordinary payload;
//! * a `0x0B` inside a frame means the peer gave up on the frame it was
//!   sending and started a new one: the unfinished frame is dropped (nothing is
//!   emitted for it, it is counted) and decoding restarts at the new `0x0B`, so a
//!   well-formed frame that follows a broken one is never lost. Emitting the
//!   truncated payload instead would hand a partial message to the application,
//!   which might acknowledge it as if it were complete;
//! * a frame longer than the configured maximum is not buffered: its bytes are
//!   discarded as they arrive (only the first [`OVERSIZE_HEAD_LEN`] bytes are
//!   kept) and a [`Frame::Oversize`] is emitted once its end is seen, so the
//!   connection stays usable and memory stays bounded.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use tokio_util::codec::{Decoder, Encoder};

/// Start block.
pub const SB: u8 = 0x0B;
/// End block.
pub const EB: u8 = 0x1C;
/// Carriage return that must follow the end block.
pub const CR: u8 = 0x0D;

/// How much of an oversize frame is kept, so the application can still log or
/// inspect its beginning (e.g. the MSH segment).
pub const OVERSIZE_HEAD_LEN: usize = 4 * 1024;

/// Default maximum payload size: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// One decoded MLLP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete frame; the payload without the framing bytes.
    Message(Bytes),
    /// A complete frame whose payload was larger than the maximum frame size.
    Oversize {
        /// Total payload size in bytes.
        size: usize,
        /// The first bytes of the payload (at most [`OVERSIZE_HEAD_LEN`]).
        head: Bytes,
    },
}

#[derive(Debug)]
enum State {
    /// Outside a frame, looking for a start block.
    Seeking,
    /// Inside a frame: the buffer starts with the payload (the start block has
    /// been consumed). Bytes before `scan` are known to contain no start block
    /// and no end sequence, so they are not searched again.
    InFrame { scan: usize },
    /// Inside a frame that exceeded the maximum: its bytes are dropped as they
    /// arrive, only their count and the head are kept.
    Discarding { size: usize, head: BytesMut },
}

/// Decoder and encoder for MLLP frames.
#[derive(Debug)]
pub struct MllpCodec {
    max_frame_size: usize,
    state: State,
    skipped_bytes: u64,
    broken_frames: u64,
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl MllpCodec {
    /// A codec accepting payloads of at most `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Self {
        Self {
            max_frame_size,
            state: State::Seeking,
            skipped_bytes: 0,
            broken_frames: 0,
        }
    }

    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Bytes seen outside any frame (before a start block) so far.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// Frames dropped because a new start block arrived before their end.
    pub fn broken_frames(&self) -> u64 {
        self.broken_frames
    }

    /// True while part of a frame has been received but not its end.
    pub fn in_frame(&self) -> bool {
        !matches!(self.state, State::Seeking)
    }

    fn restart_frame(&mut self, had: usize) {
        self.broken_frames += 1;
        tracing::warn!(
            dropped_bytes = had,
            "MLLP start block inside a frame: dropping the unfinished frame"
        );
        self.state = State::InFrame { scan: 0 };
    }
}

/// Checks that `payload` can be framed without changing its meaning for the
/// receiver: a start block or an end sequence inside it would split the frame.
pub fn validate_payload(payload: &[u8]) -> Result<(), &'static str> {
    if memchr::memchr(SB, payload).is_some() {
        return Err("payload contains the MLLP start block byte 0x0B");
    }
    if memchr::memmem::find(payload, &[EB, CR]).is_some() {
        return Err("payload contains the MLLP end sequence 0x1C 0x0D");
    }
    Ok(())
}

impl Decoder for MllpCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        loop {
            match &mut self.state {
                State::Seeking => match memchr::memchr(SB, buf) {
                    None => {
                        if !buf.is_empty() {
                            self.skipped_bytes += buf.len() as u64;
                            tracing::debug!(
                                bytes = buf.len(),
                                "skipping bytes outside an MLLP frame"
                            );
                            buf.clear();
                        }
                        return Ok(None);
                    }
                    Some(start) => {
                        if start > 0 {
                            self.skipped_bytes += start as u64;
                            tracing::debug!(bytes = start, "skipping bytes outside an MLLP frame");
                        }
                        buf.advance(start + 1);
                        self.state = State::InFrame { scan: 0 };
                    }
                },
                State::InFrame { scan } => {
                    let from = *scan;
                    match memchr::memchr2(SB, EB, &buf[from..]).map(|i| from + i) {
                        Some(at) if buf[at] == SB => {
                            buf.advance(at + 1);
                            self.restart_frame(at);
                        }
                        Some(at) => match buf.get(at + 1) {
                            Some(&CR) => {
                                let frame = if at > self.max_frame_size {
                                    let head =
                                        Bytes::copy_from_slice(&buf[..at.min(OVERSIZE_HEAD_LEN)]);
                                    buf.advance(at + 2);
                                    Frame::Oversize { size: at, head }
                                } else {
                                    let payload = buf.split_to(at).freeze();
                                    buf.advance(2);
                                    Frame::Message(payload)
                                };
                                self.state = State::Seeking;
                                return Ok(Some(frame));
                            }
                            // An end block followed by anything else is payload.
                            Some(_) => *scan = at + 1,
                            // The byte after the end block has not arrived yet:
                            // look at this end block again next time.
                            None => {
                                *scan = at;
                                return Ok(self.check_size(buf));
                            }
                        },
                        None => {
                            *scan = buf.len();
                            return Ok(self.check_size(buf));
                        }
                    }
                }
                State::Discarding { size, head } => {
                    match memchr::memchr2(SB, EB, buf) {
                        Some(at) if buf[at] == SB => {
                            let had = *size + at;
                            buf.advance(at + 1);
                            self.restart_frame(had);
                        }
                        Some(at) => {
                            let end = buf.get(at + 1).copied();
                            // Everything before the end block is payload; so is
                            // the end block itself unless a CR follows it.
                            let payload_len = match end {
                                Some(CR) | None => at,
                                Some(_) => at + 1,
                            };
                            keep_head(head, &buf[..payload_len]);
                            *size += payload_len;
                            buf.advance(payload_len);
                            match end {
                                Some(CR) => {
                                    buf.advance(2);
                                    let frame = Frame::Oversize {
                                        size: *size,
                                        head: std::mem::take(head).freeze(),
                                    };
                                    self.state = State::Seeking;
                                    return Ok(Some(frame));
                                }
                                Some(_) => {}
                                None => return Ok(None),
                            }
                        }
                        None => {
                            keep_head(head, buf);
                            *size += buf.len();
                            buf.clear();
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        // The default implementation turns leftover bytes into an error; an
        // unfinished frame at end of stream is simply lost, like junk.
        if self.in_frame() {
            tracing::debug!(
                buffered = buf.len(),
                "MLLP stream ended inside a frame: dropping it"
            );
        }
        buf.clear();
        self.state = State::Seeking;
        Ok(None)
    }
}

impl MllpCodec {
    /// Called when the buffer holds an unfinished frame: once the bytes known
    /// to be payload exceed the maximum, switch to discarding.
    fn check_size(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let State::InFrame { scan } = self.state else {
            return None;
        };
        if scan > self.max_frame_size {
            tracing::debug!(
                max = self.max_frame_size,
                "MLLP frame exceeds the maximum size: discarding the rest"
            );
            let mut head = BytesMut::with_capacity(OVERSIZE_HEAD_LEN);
            keep_head(&mut head, &buf[..scan]);
            buf.advance(scan);
            self.state = State::Discarding { size: scan, head };
        }
        None
    }
}

fn keep_head(head: &mut BytesMut, bytes: &[u8]) {
    let room = OVERSIZE_HEAD_LEN.saturating_sub(head.len());
    head.extend_from_slice(&bytes[..room.min(bytes.len())]);
}

/// Appends the framed payload to `dst`, or refuses it (appending nothing)
/// when it contains framing bytes.
pub(crate) fn put_frame(payload: &[u8], dst: &mut BytesMut) -> Result<(), &'static str> {
    validate_payload(payload)?;
    dst.reserve(payload.len() + 3);
    dst.put_u8(SB);
    dst.extend_from_slice(payload);
    dst.put_slice(&[EB, CR]);
    Ok(())
}

fn encode_payload(payload: &[u8], dst: &mut BytesMut) -> Result<(), io::Error> {
    put_frame(payload, dst).map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))
}

/// Encoding fails with [`io::ErrorKind::InvalidInput`] (writing nothing) when
/// the payload contains framing bytes; see [`validate_payload`].
impl Encoder<Bytes> for MllpCodec {
    type Error = io::Error;

    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), io::Error> {
        encode_payload(&payload, dst)
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = io::Error;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), io::Error> {
        encode_payload(payload, dst)
    }
}
