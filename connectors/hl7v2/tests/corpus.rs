//! Parses every sample message of the shared corpus, when PASSERELLE_CORPUS
//! points at it.

use std::path::{Path as FsPath, PathBuf};

use passerelle_hl7v2::{Message, Path};

fn collect(dir: &FsPath, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn starts_with_msh(bytes: &[u8]) -> bool {
    bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(bytes)
        .starts_with(b"MSH")
}

/// Message files: `.hl7` and `.er7` always; `.txt` and extension-less files
/// when they start with MSH (the corpus also holds READMEs without extension).
fn is_message(path: &FsPath, bytes: &[u8]) -> bool {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("hl7") || ext.eq_ignore_ascii_case("er7") => true,
        Some(ext) if ext.eq_ignore_ascii_case("txt") => starts_with_msh(bytes),
        None => starts_with_msh(bytes),
        Some(_) => false,
    }
}

#[test]
fn corpus_messages_parse() {
    let Some(root) = std::env::var_os("PASSERELLE_CORPUS") else {
        println!("PASSERELLE_CORPUS is not set: skipping the corpus test");
        return;
    };
    // A relative path is read from the workspace root, as the README says; cargo runs
    // this test from the crate's own directory.
    let root = FsPath::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(root);
    // The whole corpus is walked: which folders it holds is the corpus's business,
    // not this test's.
    assert!(root.is_dir(), "{} is not a directory", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();

    let paths: Vec<Path> = ["MSH-9.1", "PID-3[*].1", "PID-5.1", "OBX[*]-5", "MSA-2"]
        .iter()
        .map(|p| Path::parse(p).unwrap())
        .collect();
    let mut failures = Vec::new();
    let mut parsed = 0;
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        if !is_message(file, &bytes) {
            continue;
        }
        match Message::parse(&bytes) {
            Ok(msg) => {
                let header = msg.header();
                if header.control_id.is_none() {
                    failures.push(format!("{}: no control id", file.display()));
                }
                if header.message_type.is_none() {
                    failures.push(format!("{}: no message type", file.display()));
                }
                for p in &paths {
                    let _ = msg.get_all(p);
                }
                assert_eq!(msg.tree().len(), msg.segment_count());
                parsed += 1;
            }
            Err(e) => failures.push(format!("{}: {e} ({:?})", file.display(), e.location)),
        }
    }
    println!("parsed {parsed} corpus messages");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        parsed > 0,
        "no HL7 v2 message found under {}",
        root.display()
    );
}
