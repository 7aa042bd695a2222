//! The coverage report: run the mappings over a set of messages (a corpus, a day of traffic)
//! and count, per message type, the fields the messages carry and those whose values reach
//! the output. Messages no mapping takes, and messages the parser rejects, are listed with
//! the reason; a mapping that fails on a message is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use passerelle_hl7v2::Message;

use crate::Library;

pub type Field = (String, usize);

#[derive(Debug, Default)]
pub struct TypeCoverage {
    pub messages: usize,
    pub mapping: String,
    pub present: BTreeSet<Field>,
    pub mapped: BTreeSet<Field>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub by_type: BTreeMap<String, TypeCoverage>,
    /// Message types no mapping takes, with how many messages.
    pub no_mapping: BTreeMap<String, usize>,
    /// Message types left unmapped on purpose (`not-mapped.csv`): how many, and why.
    pub not_mapped: BTreeMap<String, (usize, String)>,
    /// Files the parser refused, with its reason.
    pub rejected: Vec<(PathBuf, String)>,
    /// Messages a mapping failed on.
    pub errors: Vec<(PathBuf, String)>,
    /// Output Bundles written (with `out`).
    pub written: Vec<PathBuf>,
}

/// The HL7 v2 message files under these paths (`*.hl7`, `*.er7`), in name order.
pub fn message_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            for e in entries {
                walk(&e, out);
            }
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("hl7" | "er7")) {
            out.push(p.to_path_buf());
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

/// The fields of a message that hold a value (MSH-1 and MSH-2, the delimiters, aside).
pub fn present_fields(message: &Message<'_>) -> BTreeSet<Field> {
    let mut out = BTreeSet::new();
    for seg in message.segments() {
        for (i, f) in seg.fields().enumerate() {
            let n = i + 1;
            if seg.is_header() && n <= 2 {
                continue;
            }
            if !f.is_empty() {
                out.insert((seg.id().to_string(), n));
            }
        }
    }
    out
}

/// Runs every file through the first mapping that takes its type; with `out`, writes each
/// output Bundle there (`0001-<file stem>.json`...).
pub fn run(library: &Library, files: &[PathBuf], out: Option<&Path>) -> Report {
    let ids: Vec<String> = library.mappings().iter().map(|m| m.id.clone()).collect();
    let mut report = Report::default();
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                report.rejected.push((file.clone(), e.to_string()));
                continue;
            }
        };
        let message = match Message::parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                report.rejected.push((file.clone(), e.to_string()));
                continue;
            }
        };
        let h = message.header();
        let kind = format!(
            "{}^{}",
            h.message_type.as_deref().unwrap_or(""),
            h.trigger_event.as_deref().unwrap_or("")
        );
        let Some(mapping) = library.for_message(&ids, &message) else {
            let (t, e) = (
                h.message_type.as_deref().unwrap_or(""),
                h.trigger_event.as_deref().unwrap_or(""),
            );
            match library.not_mapped(t, e) {
                Some(reason) => {
                    let entry = report
                        .not_mapped
                        .entry(kind)
                        .or_insert_with(|| (0, reason.to_string()));
                    entry.0 += 1;
                }
                None => *report.no_mapping.entry(kind).or_default() += 1,
            }
            continue;
        };
        match library.run_traced(mapping, &message) {
            Ok(output) => {
                let c = report.by_type.entry(kind).or_default();
                c.messages += 1;
                c.mapping = mapping.id.clone();
                c.present.extend(present_fields(&message));
                c.mapped.extend(output.covered);
                if let Some(dir) = out {
                    let stem = file
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("message");
                    // Numbered: corpora reuse file names across folders.
                    let n = report.written.len() + 1;
                    let target = dir.join(format!("{n:04}-{stem}.json"));
                    let text = crate::golden::pretty(&output.bundle);
                    match std::fs::write(&target, text) {
                        Ok(()) => report.written.push(target),
                        Err(e) => report.errors.push((target, e.to_string())),
                    }
                }
            }
            Err(e) => report.errors.push((file.clone(), e.to_string())),
        }
    }
    report
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<12} {:<14} {:>8} {:>14} {:>7} {:>9}",
            "type", "mapping", "messages", "fields present", "mapped", "coverage"
        )?;
        let (mut present, mut mapped) = (0, 0);
        for (kind, c) in &self.by_type {
            let m = c.mapped.intersection(&c.present).count();
            present += c.present.len();
            mapped += m;
            writeln!(
                f,
                "{kind:<12} {:<14} {:>8} {:>14} {:>7} {:>8.0}%",
                c.mapping,
                c.messages,
                c.present.len(),
                m,
                100.0 * m as f64 / c.present.len().max(1) as f64
            )?;
        }
        writeln!(
            f,
            "{:<12} {:<14} {:>8} {:>14} {:>7} {:>8.0}%",
            "all",
            "",
            self.by_type.values().map(|c| c.messages).sum::<usize>(),
            present,
            mapped,
            100.0 * mapped as f64 / present.max(1) as f64
        )?;
        if !self.no_mapping.is_empty() {
            let list: Vec<String> = self
                .no_mapping
                .iter()
                .map(|(k, n)| format!("{k} ({n})"))
                .collect();
            writeln!(f, "no mapping yet: {}", list.join(", "))?;
        }
        for (kind, (n, reason)) in &self.not_mapped {
            writeln!(f, "not mapped on purpose: {kind} ({n}): {reason}")?;
        }
        for (file, why) in &self.rejected {
            writeln!(f, "rejected by the parser: {}: {why}", file.display())?;
        }
        for (file, why) in &self.errors {
            writeln!(f, "ERROR {}: {why}", file.display())?;
        }
        Ok(())
    }
}
