//! Golden tests: beside each mapping `name.yaml`, a folder `name.tests/` holds input
//! messages (`*.hl7`) and the Bundles they must produce (`*.json`, same name); for an
//! outbound mapping (`output: hl7v2`) the other way round: FHIR inputs (`*.json`, a resource
//! or a change notification) and the messages they must produce (`*.hl7`, one segment a
//! line). With
//! `update`, expected files are (re)written from the current output, to be reviewed and
//! committed; without it a missing expected file is an error.

use std::path::{Path, PathBuf};

use passerelle_hl7v2::Message;
use serde_json::Value;

use crate::Library;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The expected file was written (`update`).
    Written,
    /// The output differs: a line diff, expected (`-`) against produced (`+`).
    Failed(String),
    /// The test could not run (unreadable input, unparsable message, mapping error).
    Error(String),
}

#[derive(Debug, Clone)]
pub struct Case {
    pub mapping: String,
    pub input: PathBuf,
    pub outcome: Outcome,
}

/// The tests folder of a mapping file.
pub fn tests_dir(mapping_file: &Path) -> PathBuf {
    let stem = mapping_file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("");
    mapping_file.with_file_name(format!("{stem}.tests"))
}

/// Runs the golden tests of every mapping whose file is under `filter` (a mapping file or a
/// folder; every mapping when None), or the one test whose input file `filter` names.
pub fn run_all(library: &Library, filter: Option<&Path>, update: bool) -> Vec<Case> {
    let filter = filter.map(|f| f.canonicalize().unwrap_or_else(|_| f.to_path_buf()));
    let mut cases = Vec::new();
    for mapping in library.mappings() {
        let file = mapping
            .file
            .canonicalize()
            .unwrap_or_else(|_| (*mapping.file).clone());
        // A mapping file or a folder: all its tests; a test's input file: that test alone.
        let whole = filter
            .as_ref()
            .is_none_or(|f| file.starts_with(f) || tests_dir(&file).starts_with(f));
        if !whole
            && !filter
                .as_ref()
                .is_some_and(|f| f.starts_with(tests_dir(&file)))
        {
            continue;
        }
        let dir = tests_dir(&mapping.file);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let inputs_are: &[&str] = if mapping.segments.is_some() {
            &["json"]
        } else {
            &["hl7", "xml"]
        };
        let mut inputs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| inputs_are.contains(&e))
            })
            .collect();
        inputs.sort();
        if !whole {
            inputs.retain(|i| {
                filter.as_ref() == Some(&i.canonicalize().unwrap_or_else(|_| i.clone()))
            });
        }
        for input in inputs {
            let outcome = run_case(library, mapping, &input, update);
            cases.push(Case {
                mapping: mapping.id.clone(),
                input,
                outcome,
            });
        }
    }
    cases
}

/// The output of a mapping on a message file, as the pretty JSON kept in golden files.
pub fn output_text(
    library: &Library,
    mapping: &crate::Mapping,
    input: &Path,
) -> Result<String, String> {
    let bytes =
        std::fs::read(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let takes = |kind: &str, event: &str| {
        if mapping.triggers.iter().any(|t| t.matches(kind, event)) {
            return Ok(());
        }
        Err(format!(
            "{}: a {kind}^{event} input, which mapping `{}` does not take (messages:)",
            input.display(),
            mapping.id
        ))
    };
    let output = if mapping.segments.is_some() {
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not JSON: {e}", input.display()))?;
        let focus = crate::fhir_path::FhirInput { root: &value }.focus();
        takes(focus["resourceType"].as_str().unwrap_or(""), "")?;
        library.run_fhir(mapping, &value)
    } else if input.extension().and_then(|e| e.to_str()) == Some("xml") {
        let document =
            crate::xml::parse_document(&bytes).map_err(|e| format!("{}: {e}", input.display()))?;
        let (kind, code) = crate::xml::document_type(&document);
        takes(kind, code)?;
        library.run_document(mapping, &document)
    } else {
        let message = Message::parse(&bytes).map_err(|e| format!("{}: {e}", input.display()))?;
        let h = message.header();
        takes(
            h.message_type.as_deref().unwrap_or(""),
            h.trigger_event.as_deref().unwrap_or(""),
        )?;
        library.run(mapping, &message)
    };
    let output = output.map_err(|e| e.to_string())?;
    Ok(match &output.message {
        Some(message) => message_lines(message),
        None => pretty(&output.bundle),
    })
}

/// An HL7 v2 message one segment a line, as golden files keep it (and a diff shows it).
pub fn message_lines(message: &str) -> String {
    message.replace(crate::v2_writer::SEGMENT_END, "\n")
}

pub fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON always serialises");
    s.push('\n');
    s
}

fn run_case(library: &Library, mapping: &crate::Mapping, input: &Path, update: bool) -> Outcome {
    let produced = match output_text(library, mapping, input) {
        Ok(t) => t,
        Err(e) => return Outcome::Error(e),
    };
    let expected_file = input.with_extension(if mapping.segments.is_some() {
        "hl7"
    } else {
        "json"
    });
    if update {
        return match std::fs::write(&expected_file, &produced) {
            Ok(()) => Outcome::Written,
            Err(e) => Outcome::Error(format!("cannot write {}: {e}", expected_file.display())),
        };
    }
    match std::fs::read_to_string(&expected_file) {
        Ok(expected) if expected == produced => Outcome::Passed,
        Ok(expected) => Outcome::Failed(diff(&expected, &produced)),
        Err(_) => Outcome::Error(format!(
            "no expected output {}: write it with `passerelle mappings test --update`, then \
             review it",
            expected_file.display()
        )),
    }
}

/// A line diff (longest common subsequence), with two lines of context around changes.
pub fn diff(expected: &str, produced: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = produced.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push_str(&format!("{c} {line}\n"));
        } else {
            skipped = true;
        }
    }
    if skipped {
        out.push_str("  ...\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changes_with_context() {
        let d = diff("a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nD\ne\nf\ng\n");
        assert_eq!(d, "  ...\n  b\n  c\n- d\n+ D\n  e\n  f\n  ...\n");
    }
}
