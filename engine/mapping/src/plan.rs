//! The execution plan a mapping file compiles into: paths parsed, conditions parsed, types,
//! datatype maps, ConceptMaps and references resolved and checked. Running it never reads
//! the YAML again.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::cond::Cond;
use crate::convert::{Primitive, Zone};
use crate::functions::Function;
use crate::input::InputPath;

/// Where a rule was written, for errors and traces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Where a rule's values come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Each value a path selects.
    Path(InputPath),
    /// The value in hand (a rule with `fields:` or `as:` and no `from:`).
    Here,
    /// A constant (`value:`).
    Constant(Value),
    /// The texts of several rules, one after the other (`concat:`).
    Concat(Vec<Rule>),
}

/// What a rule makes of each value.
#[derive(Debug, Clone)]
pub enum Produce {
    /// A FHIR primitive converted from the text.
    Primitive(Primitive),
    /// A datatype map applied to the value (CX -> Identifier...), by index in the library.
    Datatype(usize),
    /// An object built from nested rules.
    Fields(Template),
    /// A reference to a resource the mapping produces, by its name.
    Ref(String),
    /// The same, as a bare URL (`Attachment.url` to a Binary): `url_of:`.
    UrlOf(String),
    /// The constant itself.
    Constant,
}

/// What to do with a code a ConceptMap does not know.
#[derive(Debug, Clone, PartialEq)]
pub enum Unmapped {
    /// Keep the code as received.
    Keep,
    /// Produce nothing.
    Drop,
    /// Fail the message (the error names the rule and the code).
    Error,
    /// Produce this value instead.
    Default(String),
}

/// Which part of a ConceptMap's target a lookup gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Code,
    Display,
    System,
}

#[derive(Debug, Clone)]
pub struct Lookup {
    pub map: String,
    pub unmapped: Unmapped,
    pub take: Take,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub pos: Pos,
    pub source: Source,
    /// Whether the rule applies at all, tested where the rule is written.
    pub when: Option<Cond>,
    /// Which of the selected values to keep, tested on each (relative paths start from it).
    pub filter: Option<Cond>,
    pub func: Option<Arc<dyn Function>>,
    pub lookup: Option<Lookup>,
    /// Minutes to add to the dateTime produced (`plus_minutes: AIS-7`), read where the rule
    /// is written.
    pub plus_minutes: Option<InputPath>,
    /// The values selected become one text, joined with this (`join: "\n"`: the lines of a
    /// text document), then go through `fn` and `as`.
    pub join: Option<String>,
    pub produce: Produce,
}

/// One step of a target path: `name` or `name[]` (append one element per value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub append: bool,
}

#[derive(Debug, Clone)]
pub struct Assign {
    pub target: Vec<Step>,
    /// Tried in order: for an appending target every rule adds its values; for a single one
    /// the first rule that produces a value wins.
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default)]
pub struct Template {
    pub assigns: Vec<Assign>,
}

/// A datatype map: how one HL7 v2 datatype becomes one FHIR datatype.
#[derive(Debug, Clone)]
pub struct DatatypeMap {
    pub name: String,
    pub target: String,
    pub pos: Pos,
    pub body: DatatypeBody,
}

#[derive(Debug, Clone)]
pub enum DatatypeBody {
    Fields(Template),
    /// A map to a primitive (HD -> uri): the first rule that produces a value.
    Value(Vec<Rule>),
}

/// What a keyed resource does to the stored one with its key (`on_existing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExisting {
    /// Replace it, or create it when none has the key: a conditional update (the default).
    #[default]
    Replace,
    /// Keep it, create only when none has the key: a conditional create (`ifNoneExist`).
    Keep,
    /// Set the elements the mapping gives on the one that has the key, leaving the others
    /// as they are: a conditional patch (a JSON Patch); none with the key fails the message.
    /// A peer's status update (the pharmacy's order status) changes the status, not the
    /// order.
    Patch,
}

/// One kind of resource a mapping produces.
#[derive(Debug, Clone)]
pub struct ResourcePlan {
    pub name: String,
    pub resource_type: String,
    pub pos: Pos,
    /// One resource per value selected (segments: with their group).
    pub for_each: Option<InputPath>,
    /// The resource whose instances this one's are made inside (`for` is then read in each
    /// of that resource's groups): observations within their report.
    pub within: Option<String>,
    /// What an upsert does when a resource with the key exists.
    pub on_existing: OnExisting,
    /// An operation to post the resource to instead of storing it (`Patient/$merge` with a
    /// Parameters resource).
    pub operation: Option<String>,
    /// A datatype map (with `fields:`) applied to the message first: the elements several
    /// mappings share (`as: PID-Patient`); `fields` then adds to them.
    pub base: Option<usize>,
    pub when: Option<Cond>,
    /// Search parameters and, for each, the rules giving its value (the first that gives
    /// one): the resource is upserted through `PUT Type?param=value&...` (conditional update)
    /// instead of created. The key holds only when every parameter has a value; empty: no key.
    pub key: Vec<(String, Vec<Rule>)>,
    pub template: Template,
}

/// The type of CDA documents, for `messages:`.
pub const DOCUMENT: &str = "ClinicalDocument";

/// `MedicationRequest`: a capital, then letters with at least one in lower case (HL7 v2
/// message types are three capitals).
fn is_resource_type(kind: &str) -> bool {
    kind.starts_with(|c: char| c.is_ascii_uppercase())
        && kind.chars().all(|c| c.is_ascii_alphanumeric())
        && kind.chars().any(|c| c.is_ascii_lowercase())
}

/// Which messages a mapping applies to: `ADT^A01`, or `ADT` for every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub message_type: String,
    pub event: Option<String>,
}

impl Trigger {
    /// `ADT^A01`, or `ADT` for every event; `ClinicalDocument` for every CDA, or
    /// `ClinicalDocument^11490-0` for the documents of that code. None when it is neither.
    pub fn parse(text: &str) -> Option<Trigger> {
        let (kind, event) = match text.split_once('^') {
            Some((k, e)) => (k, Some(e.to_string())),
            None => (text, None),
        };
        let hl7 = kind.len() == 3 && kind.bytes().all(|b| b.is_ascii_uppercase());
        (hl7 || kind == DOCUMENT || is_resource_type(kind)).then(|| Trigger {
            message_type: kind.to_string(),
            event,
        })
    }

    /// Whether it takes XML documents rather than HL7 v2 messages.
    pub fn is_document(&self) -> bool {
        self.message_type == DOCUMENT
    }

    /// Whether it takes FHIR resources (`MedicationRequest`; with the change as event for a
    /// store subscription: `MedicationRequest^create`).
    pub fn is_fhir(&self) -> bool {
        is_resource_type(&self.message_type) && !self.is_document()
    }

    pub fn matches(&self, message_type: &str, event: &str) -> bool {
        self.message_type == message_type && self.event.as_deref().is_none_or(|e| e == event)
    }
}

#[derive(Debug, Clone)]
pub struct Mapping {
    pub id: String,
    pub file: Arc<PathBuf>,
    pub description: Option<String>,
    pub triggers: Vec<Trigger>,
    pub zone: Zone,
    pub resources: Vec<ResourcePlan>,
    /// Set for a mapping that writes an HL7 v2 message (`segments:`) rather than FHIR
    /// resources; `resources` is then empty.
    pub segments: Option<Vec<SegmentPlan>>,
}

/// One segment (or one per value of `for`) of the HL7 v2 message an outbound mapping writes.
/// Its template's targets are field numbers (`3`, `5.1`, `3[]` for repetitions), filled like
/// a FHIR element, then written out by [`crate::v2_writer`].
#[derive(Debug, Clone)]
pub struct SegmentPlan {
    pub id: String,
    pub pos: Pos,
    pub for_each: Option<InputPath>,
    pub when: Option<Cond>,
    pub template: Template,
}
