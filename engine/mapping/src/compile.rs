//! Mapping and datatype-map files (YAML) to plans. Every problem is reported with its
//! `file:line:col`, all of them, not just the first.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{Marker, Node};
use serde_json::Value;

use crate::conceptmap::ConceptMap;
use crate::cond::Cond;
use crate::convert::{Primitive, Zone};
use crate::input::{InputPath, Syntax};
use crate::plan::*;

/// A problem in a file, at a line and column (1-based; 0 when it concerns the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A parsed file before compilation: a mapping or a datatype map.
pub struct Parsed {
    pub file: Arc<PathBuf>,
    pub root: MarkedMappingNode,
    /// The text, to place errors inside quoted values.
    pub text: Arc<str>,
}

impl Parsed {
    pub fn is_datatype(&self) -> bool {
        self.root.get_node("datatype").is_some()
    }
}

pub fn parse_file(file: &Path, text: &str) -> Result<Parsed, Problem> {
    match marked_yaml::parse_yaml(0, text) {
        Ok(Node::Mapping(root)) => Ok(Parsed {
            file: Arc::new(file.to_path_buf()),
            root,
            text: Arc::from(text),
        }),
        Ok(_) => Err(Problem {
            file: file.to_path_buf(),
            line: 1,
            column: 1,
            message: "a mapping file is a YAML mapping (`id:`, `resources:`...)".into(),
        }),
        Err(e) => {
            let text = e.to_string();
            // The loader's message starts with `line:col:` of its own marker.
            let (line, column) = load_error_position(&e);
            Err(Problem {
                file: file.to_path_buf(),
                line,
                column,
                message: format!("not valid YAML: {text}"),
            })
        }
    }
}

/// Where the YAML loader found a problem. Shared with the channel loader.
pub fn load_error_marker(e: &marked_yaml::LoadError) -> Option<&Marker> {
    use marked_yaml::LoadError::*;
    match e {
        TopLevelMustBeMapping(m)
        | TopLevelMustBeSequence(m)
        | UnexpectedAnchor(m)
        | MappingKeyMustBeScalar(m)
        | UnexpectedTag(m)
        | ScanError(m, _) => Some(m),
        DuplicateKey(inner) => inner.key.span().start(),
    }
}

fn load_error_position(e: &marked_yaml::LoadError) -> (usize, usize) {
    load_error_marker(e).map_or((1, 1), |m| (m.line(), m.column()))
}

/// What compiling sees: the names it may resolve against.
pub struct Names<'a> {
    pub datatypes: &'a HashMap<String, usize>,
    /// The datatype maps that write HL7 v2 (FHIR datatype -> HL7 v2 datatype), by index.
    pub writes_v2: &'a HashSet<usize>,
    pub conceptmaps: &'a HashMap<String, ConceptMap>,
}

pub struct Compiler<'a> {
    file: Arc<PathBuf>,
    text: Arc<str>,
    names: Names<'a>,
    pub problems: Vec<Problem>,
    /// Resource names of the mapping being compiled, for `ref:`.
    resources: Vec<String>,
    /// Those compiled so far, for `within:`.
    declared: Vec<String>,
    functions: Vec<std::sync::Arc<dyn crate::functions::Function>>,
    /// The kind of paths the mapping being compiled reads; None for datatype maps into
    /// FHIR, which may serve HL7 v2 and XML mappings alike.
    reads: Option<Syntax>,
    /// Whether it writes HL7 v2 (targets are field and component numbers) rather than FHIR.
    writes_v2: bool,
}

/// Whether a datatype map's `target` names an HL7 v2 datatype (`CX`, `XPN`, `TS`): it then
/// reads a FHIR datatype and writes that one.
pub fn is_v2_datatype(target: &str) -> bool {
    (2..=3).contains(&target.len())
        && target
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Known names for an error message, sorted: `adt, oru`.
pub fn names<'n>(names: impl IntoIterator<Item = &'n String>) -> String {
    let mut list: Vec<&str> = names.into_iter().map(String::as_str).collect();
    list.sort_unstable();
    list.join(", ")
}

fn marker_of(node: &Node) -> Option<&Marker> {
    node.span().start()
}

impl<'a> Compiler<'a> {
    pub fn new(parsed: &Parsed, names: Names<'a>) -> Self {
        Self {
            file: parsed.file.clone(),
            text: parsed.text.clone(),
            names,
            problems: Vec::new(),
            resources: Vec::new(),
            declared: Vec::new(),
            functions: crate::functions::builtin(),
            reads: None,
            writes_v2: false,
        }
    }

    fn pos(&self, m: Option<&Marker>) -> Pos {
        let (line, column) = m.map_or((1, 1), |m| (m.line(), m.column()));
        Pos {
            file: self.file.clone(),
            line,
            column,
        }
    }

    fn problem(&mut self, m: Option<&Marker>, message: impl Into<String>) {
        let p = self.pos(m);
        self.problems.push(Problem {
            file: (*p.file).clone(),
            line: p.line,
            column: p.column,
            message: message.into(),
        });
    }

    fn known_keys(&mut self, map: &MarkedMappingNode, allowed: &[&str], what: &str) {
        for (k, _) in map.iter() {
            if !allowed.contains(&k.as_str()) {
                self.problem(
                    k.span().start(),
                    format!(
                        "unknown key `{}` in {what} (allowed: {})",
                        k.as_str(),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn scalar<'n>(
        &mut self,
        map: &'n MarkedMappingNode,
        key: &str,
    ) -> Option<&'n MarkedScalarNode> {
        match map.get_node(key)? {
            Node::Scalar(s) => Some(s),
            other => {
                self.problem(marker_of(other), format!("`{key}` takes a single value"));
                None
            }
        }
    }

    fn required<'n>(
        &mut self,
        map: &'n MarkedMappingNode,
        key: &str,
        what: &str,
    ) -> Option<&'n MarkedScalarNode> {
        if map.get_node(key).is_none() {
            self.problem(map.span().start(), format!("{what} needs `{key}:`"));
            return None;
        }
        self.scalar(map, key)
    }

    fn path(&mut self, s: &MarkedScalarNode) -> Option<InputPath> {
        match InputPath::parse_as(s.as_str(), self.reads) {
            Ok(p) if self.reads.is_some_and(|r| r != p.syntax()) => {
                let (kind, example) = match self.reads {
                    Some(Syntax::Xml) => ("XML documents", "/ClinicalDocument/id/@root"),
                    Some(Syntax::Fhir) => ("FHIR resources", "subject.resolve().name"),
                    _ => ("HL7 v2 messages", "PID-5.1"),
                };
                self.problem(
                    s.span().start(),
                    format!(
                        "`{}`: this mapping reads {kind}, whose paths look like {example}",
                        s.as_str()
                    ),
                );
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                self.problem(s.span().start(), e);
                None
            }
        }
    }

    fn condition(&mut self, s: &MarkedScalarNode) -> Option<Cond> {
        match Cond::parse_as(s.as_str(), self.reads) {
            Ok(c) => Some(c),
            Err(e) => {
                // Point into the expression when it sits on one line as written (a quoted
                // scalar starts at its quote).
                let m = s.span().start().map(|m| {
                    let quoted = self
                        .text
                        .chars()
                        .nth(m.character())
                        .is_some_and(|c| c == '"' || c == '\'');
                    let shift = e.offset + usize::from(quoted);
                    Marker::new(
                        m.source(),
                        m.character() + shift,
                        m.line(),
                        m.column() + shift,
                    )
                });
                self.problem(m.as_ref(), format!("in the condition: {}", e.message));
                None
            }
        }
    }

    /// A datatype-map file.
    pub fn datatype(&mut self, parsed: &Parsed) -> Option<DatatypeMap> {
        let root = &parsed.root;
        self.known_keys(
            root,
            &["datatype", "description", "target", "fields", "value"],
            "a datatype map",
        );
        let name = self
            .required(root, "datatype", "a datatype map")?
            .as_str()
            .to_string();
        let target = self
            .required(root, "target", "a datatype map")
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        let pos = self.pos(root.span().start());
        if is_v2_datatype(&target) {
            self.reads = Some(Syntax::Fhir);
            self.writes_v2 = true;
        }
        let body = match (root.get_node("fields"), root.get_node("value")) {
            (Some(fields), None) => DatatypeBody::Fields(self.template(fields)),
            (None, Some(value)) => DatatypeBody::Value(self.rules(value)),
            _ => {
                self.problem(
                    root.span().start(),
                    "a datatype map has either `fields:` (to an object) or `value:` (to a primitive)",
                );
                return None;
            }
        };
        Some(DatatypeMap {
            name,
            target,
            pos,
            body,
        })
    }

    /// A mapping file; `default_id` is the file name without extension.
    pub fn mapping(&mut self, parsed: &Parsed, default_id: &str) -> Option<Mapping> {
        let root = &parsed.root;
        self.known_keys(
            root,
            &[
                "id",
                "description",
                "messages",
                "timezone",
                "output",
                "resources",
                "segments",
            ],
            "a mapping",
        );
        let id = self
            .scalar(root, "id")
            .map_or(default_id.to_string(), |s| s.as_str().to_string());
        let description = self
            .scalar(root, "description")
            .map(|s| s.as_str().to_string());
        let mut triggers = Vec::new();
        match root.get_node("messages") {
            Some(Node::Sequence(items)) => {
                for item in items.iter() {
                    match item.as_scalar() {
                        Some(s) => {
                            let t = s.as_str();
                            match Trigger::parse(t) {
                                Some(trigger) => triggers.push(trigger),
                                None => self.problem(
                                    s.span().start(),
                                    format!(
                                        "`{t}` is not a message type (ADT, ADT^A01, \
                                         ClinicalDocument, a FHIR resource type)"
                                    ),
                                ),
                            }
                        }
                        None => self.problem(marker_of(item), "a message type is expected"),
                    }
                }
            }
            Some(other) => {
                self.problem(marker_of(other), "`messages` is a list: [ADT^A01, ADT^A04]")
            }
            None => self.problem(
                root.span().start(),
                "a mapping needs `messages:`, the message types it applies to",
            ),
        }
        let documents = triggers.iter().filter(|t| t.is_document()).count();
        let resources = triggers.iter().filter(|t| t.is_fhir()).count();
        if (documents > 0 || resources > 0) && documents.max(resources) < triggers.len() {
            self.problem(
                marker_of(root.get_node("messages").expect("read above")),
                "a mapping reads one kind of input: HL7 v2 messages, CDA documents \
                 (ClinicalDocument) or FHIR resources, not several",
            );
        }
        self.reads = Some(if documents > 0 {
            Syntax::Xml
        } else if resources > 0 {
            Syntax::Fhir
        } else {
            Syntax::Hl7
        });
        self.writes_v2 = match self.scalar(root, "output").map(|s| (s.as_str(), s)) {
            None | Some(("fhir", _)) => false,
            Some(("hl7v2", _)) => true,
            Some((other, s)) => {
                self.problem(
                    s.span().start(),
                    format!("`output` is `fhir` (resources) or `hl7v2` (segments), not `{other}`"),
                );
                false
            }
        };
        let zone = match self.scalar(root, "timezone") {
            None => Zone::EuropeParis,
            Some(s) => Zone::named(s.as_str()).unwrap_or_else(|| {
                self.problem(
                    s.span().start(),
                    format!(
                        "unknown time zone `{}` (Europe/Paris, UTC or an offset such as +01:00)",
                        s.as_str()
                    ),
                );
                Zone::EuropeParis
            }),
        };
        if self.writes_v2 {
            if root.get_node("resources").is_some() {
                self.problem(
                    root.span().start(),
                    "a mapping with `output: hl7v2` has `segments:`, not `resources:`",
                );
            }
            let segments = self.segments(root)?;
            return Some(Mapping {
                id,
                file: parsed.file.clone(),
                description,
                triggers,
                zone,
                resources: Vec::new(),
                segments: Some(segments),
            });
        }
        if root.get_node("segments").is_some() {
            self.problem(root.span().start(), "`segments:` goes with `output: hl7v2`");
        }
        let Some(Node::Sequence(items)) = root.get_node("resources") else {
            self.problem(root.span().start(), "a mapping needs `resources:`, a list");
            return None;
        };
        // Names first: a rule may refer to a resource declared after it.
        self.resources = items
            .iter()
            .filter_map(|i| {
                i.as_mapping()?
                    .get_scalar("name")
                    .map(|s| s.as_str().to_string())
            })
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        for item in items.iter() {
            if let Some(n) = item.as_mapping().and_then(|m| m.get_scalar("name")) {
                if seen.contains(&n.as_str()) {
                    self.problem(
                        n.span().start(),
                        format!("resource name `{}` is used twice", n.as_str()),
                    );
                }
                seen.push(n.as_str());
            }
        }
        let resources = items.iter().filter_map(|i| self.resource(i)).collect();
        Some(Mapping {
            id,
            file: parsed.file.clone(),
            description,
            triggers,
            zone,
            resources,
            segments: None,
        })
    }

    /// The `segments:` of a mapping that writes HL7 v2, MSH first.
    fn segments(&mut self, root: &MarkedMappingNode) -> Option<Vec<SegmentPlan>> {
        let Some(Node::Sequence(items)) = root.get_node("segments") else {
            self.problem(
                root.span().start(),
                "a mapping with `output: hl7v2` needs `segments:`, a list (MSH first)",
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let Some(map) = item.as_mapping() else {
                self.problem(
                    marker_of(item),
                    "a segment is a mapping (`segment:`, `fields:`)",
                );
                continue;
            };
            self.known_keys(map, &["segment", "for", "when", "fields"], "a segment");
            let Some(id_node) = self.required(map, "segment", "a segment") else {
                continue;
            };
            let id = id_node.as_str().to_string();
            if id.len() != 3
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                self.problem(
                    id_node.span().start(),
                    format!("`{id}` is not a segment id (three capitals: PID, ZBE)"),
                );
                continue;
            }
            if out.is_empty() && id != "MSH" {
                self.problem(id_node.span().start(), "the first segment is MSH");
            }
            let for_each = self.scalar(map, "for").and_then(|s| self.path(s));
            let when = self.scalar(map, "when").and_then(|s| self.condition(s));
            let template = match map.get_node("fields") {
                Some(f) => self.template(f),
                None => Template::default(),
            };
            if id == "MSH"
                && template
                    .assigns
                    .iter()
                    .any(|a| matches!(a.target[0].name.as_str(), "1" | "2"))
            {
                self.problem(
                    map.span().start(),
                    "MSH-1 and MSH-2 are the separators, written by the engine (|^~\\&)",
                );
            }
            out.push(SegmentPlan {
                id,
                pos: self.pos(map.span().start()),
                for_each,
                when,
                template,
            });
        }
        Some(out)
    }

    fn resource(&mut self, node: &Node) -> Option<ResourcePlan> {
        let Some(map) = node.as_mapping() else {
            self.problem(
                marker_of(node),
                "a resource is a mapping (`name:`, `type:`, `fields:`)",
            );
            return None;
        };
        self.known_keys(
            map,
            &[
                "name",
                "type",
                "for",
                "within",
                "when",
                "key",
                "on_existing",
                "operation",
                "as",
                "fields",
            ],
            "a resource",
        );
        let name = self
            .required(map, "name", "a resource")?
            .as_str()
            .to_string();
        let type_node = self.required(map, "type", "a resource")?;
        let resource_type = type_node.as_str().to_string();
        if !resource_type.starts_with(|c: char| c.is_ascii_uppercase())
            || !resource_type.chars().all(|c| c.is_ascii_alphanumeric())
        {
            self.problem(
                type_node.span().start(),
                format!("`{resource_type}` is not a FHIR resource type"),
            );
        }
        let for_each = self.scalar(map, "for").and_then(|s| self.path(s));
        let within = match self.scalar(map, "within") {
            None => None,
            Some(s) if self.declared.iter().any(|d| d == s.as_str()) => {
                Some(s.as_str().to_string())
            }
            Some(s) => {
                self.problem(
                    s.span().start(),
                    format!(
                        "`within: {}` names no resource declared before this one",
                        s.as_str()
                    ),
                );
                None
            }
        };
        let on_existing = match self.scalar(map, "on_existing").map(|s| (s.as_str(), s)) {
            None => None,
            Some(("replace", s)) => Some((OnExisting::Replace, s)),
            Some(("keep", s)) => Some((OnExisting::Keep, s)),
            Some(("patch", s)) => Some((OnExisting::Patch, s)),
            Some((other, s)) => {
                self.problem(
                    s.span().start(),
                    format!("`on_existing` is `replace`, `keep` or `patch`, not `{other}`"),
                );
                None
            }
        };
        if let Some((mode, s)) = on_existing
            && mode != OnExisting::Replace
            && map.get_node("key").is_none()
        {
            self.problem(s.span().start(), "`on_existing` goes with `key`");
        }
        let on_existing = on_existing.map(|(mode, _)| mode).unwrap_or_default();
        let operation = self
            .scalar(map, "operation")
            .map(|s| s.as_str().to_string());
        if let Some(op) = &operation {
            if !op.contains("/$") && !op.starts_with('$') {
                self.problem(
                    map.get_node("operation").and_then(marker_of),
                    format!("`{op}` is not an operation (`Patient/$merge`)"),
                );
            }
            if map.get_node("key").is_some() {
                self.problem(map.span().start(), "an `operation` resource has no `key`");
            }
        }
        let when = self.scalar(map, "when").and_then(|s| self.condition(s));
        let key = match map.get_node("key") {
            None => Vec::new(),
            Some(Node::Mapping(k)) if !k.is_empty() => k
                .iter()
                .map(|(param, rules)| (param.as_str().to_string(), self.rules(rules)))
                .collect(),
            Some(other) => {
                self.problem(
                    marker_of(other),
                    "`key` maps search parameters to their rules: `key: { identifier: ... }`",
                );
                Vec::new()
            }
        };
        let base = match self.scalar(map, "as") {
            None => None,
            Some(s) => match self.names.datatypes.get(s.as_str()) {
                Some(&i) => Some(i),
                None => {
                    self.problem(
                        s.span().start(),
                        format!("unknown datatype map `{}`", s.as_str()),
                    );
                    None
                }
            },
        };
        let template = match map.get_node("fields") {
            Some(f) => self.template(f),
            None if base.is_some() => Template::default(),
            None => {
                self.problem(
                    map.span().start(),
                    "a resource needs `fields:` (or `as:` a map)",
                );
                Template::default()
            }
        };
        self.declared.push(name.clone());
        Some(ResourcePlan {
            name,
            resource_type,
            pos: self.pos(map.span().start()),
            for_each,
            within,
            on_existing,
            operation,
            base,
            when,
            key,
            template,
        })
    }

    fn template(&mut self, node: &Node) -> Template {
        let Some(map) = node.as_mapping() else {
            self.problem(
                marker_of(node),
                "`fields` is a mapping of FHIR element paths to rules",
            );
            return Template::default();
        };
        let mut assigns = Vec::new();
        for (key, value) in map.iter() {
            let Some(target) = self.target(key) else {
                continue;
            };
            let append = target.last().is_some_and(|s| s.append);
            let rules = self.rules(value);
            if !append
                && let Some(multi) = rules.iter().find_map(|r| match &r.source {
                    // With `where`, the first value that passes is meant (`PID-3[*]` where
                    // `.5 = 'PI'`: the IPP). `join` makes one value of them.
                    Source::Path(p) if p.is_multi() && r.filter.is_none() && r.join.is_none() => {
                        Some(p.text.clone())
                    }
                    _ => None,
                })
            {
                self.problem(
                    key.span().start(),
                    format!(
                        "`{multi}` selects several values but `{}` takes one: write `{}[]` to \
                         keep them all, or pick one (`[1]`)",
                        key.as_str(),
                        key.as_str()
                    ),
                );
            }
            assigns.push(Assign { target, rules });
        }
        Template { assigns }
    }

    fn target(&mut self, key: &MarkedScalarNode) -> Option<Vec<Step>> {
        if self.writes_v2 {
            return self.v2_target(key);
        }
        let text = key.as_str();
        let parts: Vec<&str> = text.split('.').collect();
        let mut steps = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let (name, append) = match part.strip_suffix("[]") {
                Some(n) => (n, true),
                None => (*part, false),
            };
            let valid = !name.is_empty()
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || (append && i + 1 != parts.len()) {
                self.problem(
                    key.span().start(),
                    format!(
                        "`{text}` is not a FHIR element path (`birthDate`, `maritalStatus.coding[]`; \
                         `[]` only on the last element)"
                    ),
                );
                return None;
            }
            steps.push(Step {
                name: name.to_string(),
                append,
            });
        }
        Some(steps)
    }

    /// A target in an HL7 v2 segment or datatype: field, component and subcomponent numbers
    /// (`3`, `5.1`, `4.2` in a map), `[]` on a field for its repetitions (`3[]`).
    fn v2_target(&mut self, key: &MarkedScalarNode) -> Option<Vec<Step>> {
        let text = key.as_str();
        let mut steps = Vec::new();
        let parts: Vec<&str> = text.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let (n, append) = match part.strip_suffix("[]") {
                Some(n) => (n, true),
                None => (*part, false),
            };
            let number = n.parse::<usize>().ok().filter(|&n| n > 0);
            if number.is_none() || (append && i != 0) || parts.len() > 3 {
                self.problem(
                    key.span().start(),
                    format!(
                        "`{text}` is not an HL7 v2 position: a field number, then component and \
                         subcomponent numbers (`3`, `5.1`, `3[]` for the field's repetitions)"
                    ),
                );
                return None;
            }
            steps.push(Step {
                name: n.to_string(),
                append,
            });
        }
        Some(steps)
    }

    /// A rule, or a list of rules.
    fn rules(&mut self, node: &Node) -> Vec<Rule> {
        match node {
            Node::Sequence(items) => items.iter().filter_map(|i| self.rule(i)).collect(),
            other => self.rule(other).into_iter().collect(),
        }
    }

    fn rule(&mut self, node: &Node) -> Option<Rule> {
        let pos = self.pos(marker_of(node));
        match node {
            Node::Scalar(s) => {
                let path = self.path(s)?;
                Some(Rule {
                    pos,
                    source: Source::Path(path),
                    when: None,
                    filter: None,
                    func: None,
                    lookup: None,
                    plus_minutes: None,
                    join: None,
                    produce: Produce::Primitive(Primitive::String),
                })
            }
            Node::Sequence(_) => {
                self.problem(
                    marker_of(node),
                    "a list of rules cannot be nested in a list",
                );
                None
            }
            Node::Mapping(map) => {
                self.known_keys(
                    map,
                    &[
                        "from",
                        "in_group",
                        "value",
                        "concat",
                        "as",
                        "lookup",
                        "unmapped",
                        "take",
                        "fn",
                        "when",
                        "where",
                        "plus_minutes",
                        "join",
                        "fields",
                        "ref",
                        "url_of",
                    ],
                    "a rule",
                );
                let sources = ["from", "value", "concat"]
                    .iter()
                    .filter(|k| map.get_node(k).is_some())
                    .count();
                if sources > 1 {
                    self.problem(
                        map.span().start(),
                        "a rule has one of `from:`, `value:` or `concat:`",
                    );
                    return None;
                }
                let source = match (map.get_node("from"), map.get_node("value")) {
                    _ if map.get_node("concat").is_some() => {
                        let parts = map.get_node("concat").expect("checked");
                        if !matches!(parts, Node::Sequence(_)) {
                            self.problem(marker_of(parts), "`concat` is a list of rules");
                            return None;
                        }
                        Source::Concat(self.rules(parts))
                    }
                    (Some(_), Some(_)) => unreachable!("counted above"),
                    (Some(_), None) => {
                        let mut path = self.scalar(map, "from").and_then(|s| self.path(s))?;
                        path.in_group = map
                            .get_scalar("in_group")
                            .is_some_and(|b| b.as_bool() == Some(true));
                        Source::Path(path)
                    }
                    (None, Some(v)) => Source::Constant(self.constant(v)?),
                    (None, None) => Source::Here,
                };
                let when = self.scalar(map, "when").and_then(|s| self.condition(s));
                let filter = self.scalar(map, "where").and_then(|s| self.condition(s));
                if matches!(source, Source::Concat(_)) && map.get_node("lookup").is_some() {
                    self.problem(
                        map.span().start(),
                        "`concat` takes no `lookup` (put it on its parts)",
                    );
                }
                if filter.is_some() && !matches!(source, Source::Path(_)) {
                    self.problem(map.span().start(), "`where` filters the values of `from:`");
                }
                let func = match self.scalar(map, "fn") {
                    None => None,
                    Some(s) => match self.functions.iter().find(|f| f.name() == s.as_str()) {
                        Some(f) => Some(f.clone()),
                        None => {
                            let known: Vec<&str> =
                                self.functions.iter().map(|f| f.name()).collect();
                            self.problem(
                                s.span().start(),
                                format!(
                                    "unknown function `{}` (known: {})",
                                    s.as_str(),
                                    known.join(", ")
                                ),
                            );
                            return None;
                        }
                    },
                };
                let lookup = match self.scalar(map, "lookup") {
                    None => None,
                    Some(s) => {
                        if !self.names.conceptmaps.contains_key(s.as_str()) {
                            self.problem(
                                s.span().start(),
                                format!(
                                    "unknown ConceptMap `{}` (loaded: {})",
                                    s.as_str(),
                                    names(self.names.conceptmaps.keys())
                                ),
                            );
                            return None;
                        }
                        let unmapped = match self.scalar(map, "unmapped").map(|u| (u.as_str(), u)) {
                            None | Some(("keep", _)) => Unmapped::Keep,
                            Some(("drop", _)) => Unmapped::Drop,
                            Some(("error", _)) => Unmapped::Error,
                            Some((other, _)) => Unmapped::Default(other.to_string()),
                        };
                        let take = match self.scalar(map, "take").map(|t| (t.as_str(), t)) {
                            None | Some(("code", _)) => Take::Code,
                            Some(("display", _)) => Take::Display,
                            Some(("system", _)) => Take::System,
                            Some((other, t)) => {
                                self.problem(
                                    t.span().start(),
                                    format!("`take` is code, display or system, not `{other}`"),
                                );
                                Take::Code
                            }
                        };
                        Some(Lookup {
                            map: s.as_str().to_string(),
                            unmapped,
                            take,
                        })
                    }
                };
                if lookup.is_none()
                    && (map.get_node("unmapped").is_some() || map.get_node("take").is_some())
                {
                    self.problem(map.span().start(), "`unmapped` and `take` go with `lookup`");
                }
                let target_key = if map.get_node("url_of").is_some() {
                    "url_of"
                } else {
                    "ref"
                };
                let produce = match (
                    map.get_node("as"),
                    map.get_node("fields"),
                    map.get_node(target_key),
                ) {
                    (None, None, None) if matches!(source, Source::Constant(_)) => {
                        Produce::Constant
                    }
                    (None, None, None) => Produce::Primitive(Primitive::String),
                    (Some(_), None, None) => {
                        let s = self.scalar(map, "as")?;
                        let name = s.as_str();
                        if let Some(p) = Primitive::named(name) {
                            Produce::Primitive(p)
                        } else if let Some(&i) = self.names.datatypes.get(name) {
                            if self.names.writes_v2.contains(&i) != self.writes_v2 {
                                let (it, this) = if self.writes_v2 {
                                    ("turns HL7 v2 into FHIR", "writes HL7 v2")
                                } else {
                                    ("writes HL7 v2", "writes FHIR")
                                };
                                self.problem(
                                    s.span().start(),
                                    format!("datatype map `{name}` {it}; this file {this}"),
                                );
                            }
                            Produce::Datatype(i)
                        } else {
                            self.problem(
                                s.span().start(),
                                format!(
                                    "unknown type `{name}`: a FHIR primitive (string, code, date, \
                                     dateTime, decimal...) or a datatype map ({})",
                                    names(self.names.datatypes.keys())
                                ),
                            );
                            return None;
                        }
                    }
                    (None, Some(f), None) => Produce::Fields(self.template(f)),
                    (None, None, Some(_)) => {
                        let s = self.scalar(map, target_key)?;
                        if !self.resources.iter().any(|r| r == s.as_str()) {
                            self.problem(
                                s.span().start(),
                                format!(
                                    "`{target_key}: {}` names no resource of this mapping (names: {})",
                                    s.as_str(),
                                    self.resources.join(", ")
                                ),
                            );
                            return None;
                        }
                        if target_key == "ref" {
                            Produce::Ref(s.as_str().to_string())
                        } else {
                            Produce::UrlOf(s.as_str().to_string())
                        }
                    }
                    _ => {
                        self.problem(
                            map.span().start(),
                            "a rule has one of `as:`, `fields:` or `ref:`",
                        );
                        return None;
                    }
                };
                if matches!(source, Source::Concat(_)) && !matches!(produce, Produce::Primitive(_))
                {
                    self.problem(
                        map.span().start(),
                        "`concat` makes text: it may have `as:` a primitive only",
                    );
                    return None;
                }
                if matches!(source, Source::Constant(_))
                    && !matches!(produce, Produce::Constant | Produce::Primitive(_))
                {
                    self.problem(
                        map.span().start(),
                        "a `value:` rule is a constant: it may have `as:` a primitive (boolean, \
                         integer...), not `fields` or `ref` or a datatype map",
                    );
                    return None;
                }
                let join = self.scalar(map, "join").map(|s| s.as_str().to_string());
                if join.is_some() {
                    if !matches!(source, Source::Path(_))
                        || !matches!(produce, Produce::Primitive(_))
                        || lookup.is_some()
                    {
                        self.problem(
                            map.span().start(),
                            "`join` makes one text of the values of `from:`: it may have `fn` \
                             and `as:` a primitive, not `lookup`, `fields`, `ref` or a datatype map",
                        );
                    }
                    if func.as_ref().is_some_and(|f| f.structured()) {
                        self.problem(
                            map.span().start(),
                            "this `fn` reads the parts of a value: it cannot apply to joined text",
                        );
                    }
                }
                if matches!(source, Source::Concat(_))
                    && func.as_ref().is_some_and(|f| f.structured())
                {
                    self.problem(
                        map.span().start(),
                        "this `fn` reads the parts of a value: it cannot apply to concatenated text",
                    );
                }
                let plus_minutes = self.scalar(map, "plus_minutes").and_then(|s| self.path(s));
                if plus_minutes.is_some()
                    && !matches!(
                        produce,
                        Produce::Primitive(Primitive::DateTime | Primitive::Instant)
                    )
                {
                    self.problem(
                        map.span().start(),
                        "`plus_minutes` goes with `as: dateTime` or `as: instant`",
                    );
                }
                Some(Rule {
                    pos,
                    source,
                    when,
                    filter,
                    func,
                    lookup,
                    plus_minutes,
                    join,
                    produce,
                })
            }
        }
    }

    fn constant(&mut self, node: &Node) -> Option<Value> {
        match node {
            Node::Scalar(s) => Some(Value::String(s.as_str().to_string())),
            other => {
                self.problem(marker_of(other), "`value` is a single text value");
                None
            }
        }
    }
}
