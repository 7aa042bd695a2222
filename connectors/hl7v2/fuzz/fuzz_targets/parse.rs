//! Parses arbitrary bytes, evaluates paths, walks the tree and builds an ACK.
//! Any panic is a bug; so is an ACK of ours that does not parse back.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use passerelle_hl7v2::ack::{AckBuilder, AckCode, AckError, read_ack};
use passerelle_hl7v2::{ErrorCode, Message, ParseOptions, Path};

fn paths() -> &'static [Path] {
    static PATHS: OnceLock<Vec<Path>> = OnceLock::new();
    PATHS.get_or_init(|| {
        [
            "MSH-1",
            "MSH-2",
            "MSH-9.2",
            "MSH-18",
            "PID-3[*].4.1",
            "PID-5.1",
            "OBX[*]-5[*]",
            "OBX[2]-5.1.2",
            "ZZZ-1",
        ]
        .iter()
        .map(|p| Path::parse(p).expect("valid path"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    match Message::parse(data) {
        Ok(msg) => {
            for path in paths() {
                let _ = msg.get(path);
                let _ = msg.get_all(path);
            }
            let _ = msg.tree();
            let header = msg.header();
            let ack = AckBuilder::new(Some(&header), AckCode::AE, "ACK1", "20240101000000+0000")
                .text("fuzz")
                .error(AckError::error(
                    ErrorCode::DataTypeError,
                    None,
                    String::from_utf8_lossy(data).chars().take(64).collect::<String>(),
                ))
                .build();
            let opts = ParseOptions {
                default_charset: header.charset(),
            };
            let back = Message::parse_with(&ack, &opts).expect("our own ACK parses");
            assert!(read_ack(&back).is_some());
        }
        Err(e) => {
            let ack = AckBuilder::new(None, AckCode::AR, "ACK1", "20240101000000+0000")
                .error(AckError::from(&e))
                .build();
            Message::parse(&ack).expect("our own ACK parses");
        }
    }
});
