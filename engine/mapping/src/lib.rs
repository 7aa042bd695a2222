//! The Passerelle mapping language: YAML files an interface analyst writes, compiled at load
//! into execution plans that turn HL7 v2 messages into FHIR transaction Bundles.
//!
//! - [`Library::load`] reads the mappings, the datatype maps and the ConceptMaps, and reports
//!   every problem as `file:line:col` ([`Problem`]).
//! - [`Library::run`] applies a mapping to a parsed message: the output Bundle (conditional
//!   updates on business identifiers, so a retransmission changes nothing) and the trace of
//!   which rule produced which element ([`Output`]); failures name the rule and the input
//!   path ([`RunError`]).
//! - [`golden`] runs the tests kept beside each mapping (`name.tests/*.hl7` with the
//!   expected `*.json`).
//!
//! The language itself is described in docs/mappings.md.

pub mod compile;
pub mod conceptmap;
pub mod cond;
pub mod convert;
pub mod coverage;
mod exec;
pub mod fhir_path;
pub mod functions;
pub mod golden;
pub mod input;
pub mod live;
pub mod not_mapped;
pub mod plan;
pub mod v2_writer;
pub mod xml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use passerelle_hl7v2::Message;

pub use input::Doc;

pub use compile::Problem;
pub use conceptmap::ConceptMap;
pub use exec::{Output, RunError, TraceLine};
pub use plan::Mapping;

use compile::{Compiler, Names, Parsed};
use plan::DatatypeMap;

/// Everything the mappings of a deployment need, compiled.
#[derive(Debug, Default)]
pub struct Library {
    mappings: Vec<Mapping>,
    datatypes: Vec<DatatypeMap>,
    conceptmaps: HashMap<String, ConceptMap>,
    not_mapped: Vec<not_mapped::NotMapped>,
}

/// The YAML files of a directory and its subdirectories, in name order.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

impl Library {
    /// Compiles every mapping and datatype map under `mappings_dir` against the ConceptMaps
    /// of `conceptmaps_dir`. A file with problems is left out; the others load.
    pub fn load(mappings_dir: &Path, conceptmaps_dir: &Path) -> (Library, Vec<Problem>) {
        let mut problems = Vec::new();
        let (conceptmaps, cm_problems) = conceptmap::load_dir(conceptmaps_dir);
        problems.extend(cm_problems.into_iter().map(|(file, message)| Problem {
            file,
            line: 0,
            column: 0,
            message,
        }));
        let (not_mapped, nm_problems) = not_mapped::load(mappings_dir);
        problems.extend(nm_problems);
        let mut files = Vec::new();
        yaml_files(mappings_dir, &mut files);
        let mut parsed: Vec<Parsed> = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => match compile::parse_file(&file, &text) {
                    Ok(p) => parsed.push(p),
                    Err(p) => problems.push(p),
                },
                Err(e) => problems.push(Problem {
                    file,
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        // Datatype names first: maps use one another and mappings use them by name.
        let mut index: HashMap<String, usize> = HashMap::new();
        // Maps whose target is an HL7 v2 datatype write HL7 v2: only outbound mappings use them.
        let mut writes_v2 = std::collections::HashSet::new();
        for p in parsed.iter().filter(|p| p.is_datatype()) {
            if let Some(name) = p.root.get_scalar("datatype") {
                let n = index.len();
                if p.root
                    .get_scalar("target")
                    .is_some_and(|t| compile::is_v2_datatype(t.as_str()))
                {
                    writes_v2.insert(n);
                }
                if index.insert(name.as_str().to_string(), n).is_some() {
                    let m = name.span().start();
                    problems.push(Problem {
                        file: (*p.file).clone(),
                        line: m.map_or(1, |m| m.line()),
                        column: m.map_or(1, |m| m.column()),
                        message: format!("datatype map `{}` is defined twice", name.as_str()),
                    });
                }
            }
        }
        let mut datatypes: Vec<Option<DatatypeMap>> = vec![None; index.len()];
        let mut mappings = Vec::new();
        for p in &parsed {
            let mut c = Compiler::new(
                p,
                Names {
                    datatypes: &index,
                    writes_v2: &writes_v2,
                    conceptmaps: &conceptmaps,
                },
            );
            if p.is_datatype() {
                if let Some(d) = c.datatype(p)
                    && let Some(&i) = index.get(&d.name)
                    && datatypes[i].is_none()
                {
                    datatypes[i] = Some(d);
                }
            } else {
                let stem = p.file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                if let Some(m) = c.mapping(p, stem)
                    && c.problems.is_empty()
                {
                    if mappings.iter().any(|x: &Mapping| x.id == m.id) {
                        problems.push(Problem {
                            file: (*p.file).clone(),
                            line: 1,
                            column: 1,
                            message: format!("mapping id `{}` is used twice", m.id),
                        });
                    } else {
                        mappings.push(m);
                    }
                }
            }
            problems.extend(c.problems);
        }
        // A datatype map that failed to compile still has its index: keep a placeholder that
        // produces nothing, the problem is reported above and `check` fails.
        let datatypes = datatypes
            .into_iter()
            .map(|d| {
                d.unwrap_or_else(|| DatatypeMap {
                    name: String::new(),
                    target: String::new(),
                    pos: plan::Pos {
                        file: std::sync::Arc::new(PathBuf::new()),
                        line: 0,
                        column: 0,
                    },
                    body: plan::DatatypeBody::Value(Vec::new()),
                })
            })
            .collect();
        (
            Library {
                mappings,
                datatypes,
                conceptmaps,
                not_mapped,
            },
            problems,
        )
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    pub fn mapping(&self, id: &str) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.id == id)
    }

    pub fn conceptmaps(&self) -> &HashMap<String, ConceptMap> {
        &self.conceptmaps
    }

    /// Why messages of this type are not mapped, when `not-mapped.csv` says they are not on
    /// purpose.
    pub fn not_mapped(&self, message_type: &str, event: &str) -> Option<&str> {
        self.not_mapped
            .iter()
            .find(|n| n.trigger.matches(message_type, event))
            .map(|n| n.reason.as_str())
    }

    /// The first of `candidates` (mapping ids) whose messages include this one's type.
    pub fn for_message<'l>(
        &'l self,
        candidates: &[String],
        message: &Message<'_>,
    ) -> Option<&'l Mapping> {
        let h = message.header();
        let kind = h.message_type.as_deref().unwrap_or("");
        let event = h.trigger_event.as_deref().unwrap_or("");
        self.for_type(candidates, kind, event)
    }

    /// The first of `candidates` whose `messages` take this type: `ADT` and `A01` for a
    /// message, `ClinicalDocument` and the document's code for a CDA.
    pub fn for_type<'l>(
        &'l self,
        candidates: &[String],
        kind: &str,
        event: &str,
    ) -> Option<&'l Mapping> {
        candidates
            .iter()
            .filter_map(|id| self.mapping(id))
            .find(|m| m.triggers.iter().any(|t| t.matches(kind, event)))
    }

    /// The Bundle a mapping makes of a message (no trace: what channels run).
    pub fn run(&self, mapping: &Mapping, message: &Message<'_>) -> Result<Output, RunError> {
        self.execute(mapping, Doc::Hl7(message), false)
    }

    /// The Bundle a mapping makes of an XML document (a CDA).
    pub fn run_document(
        &self,
        mapping: &Mapping,
        document: &roxmltree::Document<'_>,
    ) -> Result<Output, RunError> {
        self.execute(mapping, Doc::Xml(document), false)
    }

    /// What a mapping makes of a FHIR resource, or of a change notification (the changed
    /// resource with those it references: [`fhir_path`]).
    pub fn run_fhir(
        &self,
        mapping: &Mapping,
        resource: &serde_json::Value,
    ) -> Result<Output, RunError> {
        self.execute(mapping, Doc::Fhir(resource), false)
    }

    /// The Bundle and the trace of which rule produced which element.
    pub fn run_traced(&self, mapping: &Mapping, message: &Message<'_>) -> Result<Output, RunError> {
        self.execute(mapping, Doc::Hl7(message), true)
    }

    pub fn run_traced_on(&self, mapping: &Mapping, doc: Doc<'_>) -> Result<Output, RunError> {
        self.execute(mapping, doc, true)
    }

    fn execute(&self, mapping: &Mapping, doc: Doc<'_>, tracing: bool) -> Result<Output, RunError> {
        let env = exec::Env {
            datatypes: &self.datatypes,
            conceptmaps: &self.conceptmaps,
        };
        exec::run(&env, mapping, doc, tracing)
    }
}
