//! Transports of the Passerelle engine, one module per protocol.
//!
//! Connectors move bytes: they know nothing of channels, journals or HL7
//! semantics. The engine decides what a payload means and what to reply.

pub mod file;
pub mod mllp;
