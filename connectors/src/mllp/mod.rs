//! MLLP (Minimal Lower Layer Protocol): the framing HL7 v2 uses over TCP.
//!
//! [`codec`] turns bytes into frames and back, [`server`] listens and hands
//! frames to a [`FrameHandler`], [`client`] sends frames and waits for
//! replies, [`tls`] holds the optional TLS settings of both sides.

pub mod client;
pub mod codec;
pub mod server;
pub mod tls;

pub use client::{ClientConfig, MllpClient, MllpError};
pub use codec::{Frame, MllpCodec};
pub use server::{DRAIN_QUIET, FrameHandler, ServerConfig, ServerStats, serve, serve_with_stats};
pub use tls::{ClientTls, TlsConfig, TlsSetupError};
