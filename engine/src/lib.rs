//! Passerelle engine: journal, channel runtime, HTTP API and CLI behind the `passerelle` binary.

pub mod api;
pub mod bench;
pub mod bench_mqtt;
pub mod channel;
pub mod check;
pub mod config;
pub mod crypto;
pub mod diagnostic;
pub mod journal;
pub mod mappings;
pub mod metrics;
pub mod runtime;
pub mod serve;
pub mod settings;
pub mod token;
