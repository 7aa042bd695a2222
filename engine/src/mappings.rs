//! `passerelle mappings`: the analyst's tools. `test` runs the golden tests kept beside the
//! mappings; `run` applies one mapping to a message file and prints the Bundle it produces
//! with the trace of which rule produced which element.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use passerelle_mapping::golden::{self, Outcome};

use crate::settings::CommonArgs;

#[derive(Subcommand)]
pub enum MappingsAction {
    /// Run the golden tests (`name.tests/*.hl7` -> `*.json` beside `name.yaml`); exits
    /// non-zero when one fails.
    Test {
        #[command(flatten)]
        common: CommonArgs,
        /// Only the mappings under this file or folder.
        path: Option<PathBuf>,
        /// Write the expected files from the current output (review them before committing).
        #[arg(long)]
        update: bool,
    },
    /// Apply a mapping to a message or document file: prints the output Bundle, then the trace.
    Run {
        #[command(flatten)]
        common: CommonArgs,
        /// The mapping's id (default: the first mapping that takes the message's type).
        #[arg(long)]
        mapping: Option<String>,
        /// An HL7 v2 message file, or an XML document (a CDA).
        file: PathBuf,
        /// Print the Bundle only.
        #[arg(long)]
        no_trace: bool,
    },
    /// Run the mappings over message files (`*.hl7`, `*.er7`, folders walked) and report, per
    /// message type, the fields present and those mapped; exits non-zero when a mapping fails.
    Coverage {
        #[command(flatten)]
        common: CommonArgs,
        /// Files or folders of messages.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write each output Bundle to this folder.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn library(common: &CommonArgs) -> Result<passerelle_mapping::Library> {
    let (_, file) = common.config_file()?;
    let (library, problems) = common.mapping_library(&file);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!(
            "{} problem(s) in the mappings (see `passerelle check`)",
            problems.len()
        );
    }
    Ok(library)
}

pub fn run(action: MappingsAction) -> Result<ExitCode> {
    match action {
        MappingsAction::Test {
            common,
            path,
            update,
        } => {
            let library = library(&common)?;
            let cases = golden::run_all(&library, path.as_deref(), update);
            let (mut passed, mut failed, mut written) = (0, 0, 0);
            for case in &cases {
                let input = case.input.display();
                match &case.outcome {
                    Outcome::Passed => {
                        passed += 1;
                        println!("ok      {} {input}", case.mapping);
                    }
                    Outcome::Written => {
                        written += 1;
                        println!("written {} {input}", case.mapping);
                    }
                    Outcome::Failed(diff) => {
                        failed += 1;
                        println!("FAILED  {} {input}\n{diff}", case.mapping);
                    }
                    Outcome::Error(e) => {
                        failed += 1;
                        println!("ERROR   {} {input}: {e}", case.mapping);
                    }
                }
            }
            println!("{passed} passed, {failed} failed, {written} written");
            if cases.is_empty() {
                eprintln!("no golden tests found");
                return Ok(ExitCode::FAILURE);
            }
            Ok(if failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        MappingsAction::Run {
            common,
            mapping,
            file,
            no_trace,
        } => {
            let library = library(&common)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let ids: Vec<String> = library.mappings().iter().map(|m| m.id.clone()).collect();
            let pick = |kind: &str, event: &str| match &mapping {
                Some(id) => library.mapping(id),
                None => library.for_type(&ids, kind, event),
            };
            let unknown = || match &mapping {
                Some(id) => anyhow::anyhow!("no mapping `{id}` (mappings: {})", ids.join(", ")),
                None => anyhow::anyhow!(
                    "no mapping takes this input's type (mappings: {})",
                    ids.join(", ")
                ),
            };
            let fail = |e: String| anyhow::anyhow!("{}: {e}", file.display());
            // FHIR JSON (a resource or a change notification, for an outbound mapping), an
            // XML document (a CDA) or an HL7 v2 message, by its first character.
            let json: Option<serde_json::Value> = bytes
                .trim_ascii_start()
                .starts_with(b"{")
                .then(|| serde_json::from_slice(&bytes))
                .transpose()
                .map_err(|e| fail(format!("not JSON: {e}")))?;
            let output = if let Some(value) = &json {
                let focus = passerelle_mapping::fhir_path::FhirInput { root: value }.focus();
                let m =
                    pick(focus["resourceType"].as_str().unwrap_or(""), "").ok_or_else(unknown)?;
                library.run_traced_on(m, passerelle_mapping::Doc::Fhir(value))
            } else if bytes.trim_ascii_start().starts_with(b"<")
                || bytes.starts_with(b"\xef\xbb\xbf<")
            {
                let document = passerelle_mapping::xml::parse_document(&bytes).map_err(fail)?;
                let (kind, code) = passerelle_mapping::xml::document_type(&document);
                let m = pick(kind, code).ok_or_else(unknown)?;
                library.run_traced_on(m, passerelle_mapping::Doc::Xml(&document))
            } else {
                let message =
                    passerelle_hl7v2::Message::parse(&bytes).map_err(|e| fail(e.to_string()))?;
                let h = message.header();
                let m = pick(
                    h.message_type.as_deref().unwrap_or(""),
                    h.trigger_event.as_deref().unwrap_or(""),
                )
                .ok_or_else(unknown)?;
                library.run_traced(m, &message)
            }
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            match &output.message {
                Some(message) => print!("{}", golden::message_lines(message)),
                None => print!("{}", golden::pretty(&output.bundle)),
            }
            if !no_trace {
                println!("\ntrace (element <- input, rule):");
                for line in &output.trace {
                    println!("  {} <- {}  ({})", line.element, line.input, line.rule);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        MappingsAction::Coverage { common, paths, out } => {
            let library = library(&common)?;
            if let Some(dir) = &out {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let files = passerelle_mapping::coverage::message_files(&paths);
            if files.is_empty() {
                bail!("no message files (*.hl7, *.er7) under the paths given");
            }
            let report = passerelle_mapping::coverage::run(&library, &files, out.as_deref());
            print!("{report}");
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
