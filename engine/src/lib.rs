//! Passerelle engine: journal, channel runtime, HTTP API and CLI behind the `passerelle` binary.

pub mod config;
pub mod crypto;
pub mod diagnostic;
pub mod journal;
