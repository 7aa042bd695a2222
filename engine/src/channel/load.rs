//! Reads `channels/*.yaml`, checks every value and compiles the channels. Problems are
//! reported as `file:line:col: message`, all of them, not just the first.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use marked_yaml::Spanned;
use passerelle_fhir::bundle::BUNDLE_TYPES;
use passerelle_hl7v2::{Charset, Path as FieldPath};
use passerelle_mapping::Library;
use passerelle_mapping::compile::{load_error_marker, names};
use passerelle_mapping::live::Live;

use super::destination::{DestinationConfig, DestinationKind, SmtpConfig, SmtpTls};
use super::doc::*;
use super::filter::{Condition, Test};
use super::interpolate::from_env;
use super::transform::{
    FhirIntake, MapToFhir, Mssante, PassThrough, RouteByMessageType, Transform, VitalSigns,
};
use super::{Channel, Content, DocumentKind, FeedStart, RetryPolicy, SourceConfig};
use crate::diagnostic::Diagnostic;

#[derive(Debug, Default)]
pub struct LoadedChannels {
    pub channels: Vec<Channel>,
    pub problems: Vec<Diagnostic>,
}

/// Loads every `*.yaml` / `*.yml` file of a directory, in name order, with no mappings.
pub fn load_dir(dir: &Path) -> LoadedChannels {
    load_dir_with(dir, &Live::fixed(Library::default()))
}

/// Loads every `*.yaml` / `*.yml` file of a directory, in name order; `mapping` transforms
/// name mappings of `library`.
pub fn load_dir_with(dir: &Path, library: &Arc<Live>) -> LoadedChannels {
    let mut out = LoadedChannels::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            out.problems.push(Diagnostic::new(
                dir,
                0,
                0,
                format!("cannot read the channels directory: {e}"),
            ));
            return out;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut mllp_addresses: HashMap<Option<SocketAddr>, String> = HashMap::new();
    for file in files {
        match load_file(&file, library) {
            Ok(channel) => {
                if let Some(first) = seen.get(&channel.id) {
                    out.problems.push(Diagnostic::new(
                        &file,
                        1,
                        1,
                        format!(
                            "channel id `{}` is already used by {}",
                            channel.id,
                            first.display()
                        ),
                    ));
                    continue;
                }
                // A source whose address is an unset variable is paused: it listens nowhere
                // and takes no address from another channel.
                if let SourceConfig::Mllp {
                    address,
                    address_unset: false,
                    ..
                } = &channel.source
                    && let Some(other) = mllp_addresses.insert(*address, channel.id.clone())
                {
                    let shown = address
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "the main MLLP address".into());
                    out.problems.push(Diagnostic::new(
                        &file,
                        1,
                        1,
                        format!("channel `{other}` already listens on {shown}; give this source its own `address`"),
                    ));
                    continue;
                }
                seen.insert(channel.id.clone(), file.clone());
                out.channels.push(channel);
            }
            Err(mut problems) => out.problems.append(&mut problems),
        }
    }
    out
}

pub fn load_file(file: &Path, library: &Arc<Live>) -> Result<Channel, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| vec![Diagnostic::new(file, 0, 0, format!("cannot read: {e}"))])?;
    parse_with(file, &text, library)
}

/// A channel file with no mappings available.
pub fn parse(file: &Path, text: &str) -> Result<Channel, Vec<Diagnostic>> {
    parse_with(file, text, &Live::fixed(Library::default()))
}

pub fn parse_with(
    file: &Path,
    text: &str,
    library: &Arc<Live>,
) -> Result<Channel, Vec<Diagnostic>> {
    let options = marked_yaml::LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .toplevel_mapping();
    let doc: ChannelDoc = marked_yaml::from_yaml_with_options(0, text, options)
        .map_err(|e| vec![yaml_error(file, text, e)])?;
    let mut checker = Checker {
        file,
        text,
        library,
        problems: Vec::new(),
        missing_vars: Vec::new(),
        content: None,
    };
    let channel = checker.channel(doc);
    if checker.problems.is_empty() {
        let mut channel = channel.expect("a channel without problems is complete");
        if !checker.missing_vars.is_empty() {
            channel.paused = Some(format!(
                "not configured: {} not set",
                checker.missing_vars.join(", ")
            ));
        }
        Ok(channel)
    } else {
        Err(checker.problems)
    }
}

fn yaml_error(file: &Path, text: &str, error: marked_yaml::FromYamlError) -> Diagnostic {
    match error {
        marked_yaml::FromYamlError::ParseYaml(e) => {
            let message = e.to_string();
            match load_error_marker(&e) {
                Some(mark) => {
                    // The loader starts most messages with "L:C: ", which the diagnostic
                    // already gives in front.
                    let message = message
                        .strip_prefix(&format!("{mark}: "))
                        .map_or_else(|| message.clone(), str::to_string);
                    Diagnostic::new(file, mark.line(), mark.column(), message)
                }
                None => Diagnostic::new(file, 1, 1, message),
            }
        }
        marked_yaml::FromYamlError::FromNode(e) => {
            let message = match &*e {
                marked_yaml::Error::UnknownFieldError(key, expected, _) => {
                    format!(
                        "unknown key `{key}` (expected one of: {})",
                        expected.join(", ")
                    )
                }
                other => friendly_serde_message(&other.to_string()),
            };
            match e.start_mark() {
                Some(mark) => {
                    let (line, column) = key_start(text, mark.line(), mark.column());
                    Diagnostic::new(file, line, column, message)
                }
                None => Diagnostic::at_offset(file, text, 0, message),
            }
        }
    }
}

/// serde's messages speak of fields; an analyst writes keys.
fn friendly_serde_message(message: &str) -> String {
    message
        .replace("missing field", "missing key")
        .replace("invalid type", "wrong kind of value")
}

struct Checker<'f> {
    file: &'f Path,
    text: &'f str,
    library: &'f Arc<Live>,
    problems: Vec<Diagnostic>,
    missing_vars: Vec<String>,
    /// What the channel's source takes, once read: filters and transforms depend on it.
    content: Option<Content>,
}

impl Checker<'_> {
    /// A transform that reads store changes refuses any other source (`reads`: what it
    /// expects of the changes). A source that is itself wrong has said so already.
    fn require_store_source(&mut self, doc: &TransformDoc, reads: &str) {
        if self.content.is_some_and(|c| c != Content::Change) {
            let kind = doc.kind.as_str().to_string();
            self.error(
                &doc.kind,
                format!("the `{kind}` transform takes a store source ({reads})"),
            );
        }
    }

    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let diagnostic = match at.span().start() {
            Some(mark) => {
                let (line, column) = key_start(self.text, mark.line(), mark.column());
                Diagnostic::new(self.file, line, column, message)
            }
            None => Diagnostic::at(self.file, None, message),
        };
        self.problems.push(diagnostic);
    }

    /// The value with `${VAR}` replaced; unset variables pause the channel instead of failing.
    fn value(&mut self, text: &Text) -> Option<String> {
        match from_env(text.as_str()) {
            Ok(value) => Some(value),
            Err(missing) => {
                for name in missing {
                    if !self.missing_vars.contains(&name) {
                        self.missing_vars.push(name);
                    }
                }
                None
            }
        }
    }

    fn duration(&mut self, text: Option<&Text>, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        let Some(value) = self.value(text) else {
            return default;
        };
        match humantime::parse_duration(&value) {
            Ok(d) => d,
            Err(_) => {
                self.error(
                    text,
                    format!("`{value}` is not a duration like 500ms, 30s, 5m"),
                );
                default
            }
        }
    }

    fn channel(&mut self, doc: ChannelDoc) -> Option<Channel> {
        let id = match &doc.id {
            Some(id) => {
                if !is_identifier(id) {
                    self.error(
                        id,
                        format!(
                            "channel id `{}`: use lowercase letters, digits and dashes",
                            id.as_str()
                        ),
                    );
                }
                id.as_str().to_string()
            }
            None => self
                .file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("channel")
                .to_string(),
        };
        let source = self.source(&doc.source, &id);
        self.content = source.as_ref().map(SourceConfig::content);
        // An item of several kinds needs each of them, like the list itself.
        let filters = doc
            .filters
            .iter()
            .filter_map(|c| self.condition(c))
            .flatten()
            .collect();
        let destinations = self.destinations(&doc.destinations);
        // Declared ids, valid or not: a broken destination must not also break its routes.
        let ids: Vec<String> = doc
            .destinations
            .iter()
            .map(|d| d.id.as_str().to_string())
            .collect();
        let transform = self.transform(doc.transform.as_ref(), &ids);
        Some(Channel {
            id,
            file: self.file.to_path_buf(),
            description: doc.description,
            enabled: doc.enabled.unwrap_or(true),
            source: source?,
            filters,
            transform: transform?,
            destinations,
            paused: None,
        })
    }

    fn source(&mut self, doc: &SourceDoc, channel: &str) -> Option<SourceConfig> {
        let mqtt_keys = [
            ("topics", doc.topics.as_ref().and_then(|t| t.first())),
            ("broker", doc.broker.as_ref()),
            ("client_id", doc.client_id.as_ref()),
        ];
        let store_keys = [
            ("subscription", doc.subscription.as_ref()),
            ("include", doc.include.as_ref().and_then(|t| t.first())),
            ("start", doc.start.as_ref()),
            (
                "revinclude",
                doc.revinclude.as_ref().and_then(|t| t.first()),
            ),
        ];
        let kind = doc.kind.as_str();
        let article = if matches!(kind, "file" | "store") {
            "a"
        } else {
            "an"
        };
        let what = format!("{article} {kind} source");
        if kind != "mqtt" {
            self.refuse_keys(&what, &mqtt_keys);
        }
        if kind != "store" {
            self.refuse_keys(&what, &store_keys);
        }
        match kind {
            "mllp" => {
                self.refuse_source_keys("an mllp source", doc, &["address", "charset"]);
                self.mllp_source(doc)
            }
            "http" => {
                self.refuse_source_keys(
                    "an http source (it is served on the HTTP address)",
                    doc,
                    &["content", "reply_timeout"],
                );
                let content = self.document_kind(doc)?;
                let reply_timeout =
                    self.duration(doc.reply_timeout.as_ref(), Duration::from_secs(30));
                Some(SourceConfig::Http {
                    content,
                    reply_timeout,
                })
            }
            "file" => {
                self.refuse_source_keys("a file source", doc, &["content", "directory", "poll"]);
                let content = self.document_kind(doc);
                let Some(directory) = &doc.directory else {
                    self.error(&doc.kind, "a file source needs `directory`");
                    return None;
                };
                let directory = self.value(directory).map(PathBuf::from);
                let poll = self.duration(doc.poll.as_ref(), Duration::from_secs(2));
                Some(SourceConfig::File {
                    directory: directory?,
                    content: content?,
                    poll: poll.max(Duration::from_millis(100)),
                })
            }
            "mqtt" => {
                self.refuse_source_keys("an mqtt source", doc, &[]);
                let Some(topics) = doc.topics.as_ref().filter(|t| !t.is_empty()) else {
                    self.error(
                        &doc.kind,
                        "an mqtt source needs `topics`, e.g. [\"devices/+/telemetry\"]",
                    );
                    return None;
                };
                for t in topics {
                    let plus = t.as_str().split('/').filter(|l| *l == "+").count();
                    if plus != 1 || t.as_str().contains('#') {
                        self.error(
                            t,
                            format!(
                                "topic `{}`: one `+` level names the device \
                                 (devices/+/telemetry), and no `#`",
                                t.as_str()
                            ),
                        );
                    }
                }
                let broker = match &doc.broker {
                    Some(text) => match self.value(text) {
                        Some(url) => {
                            if let Err(e) = crate::runtime::mqtt_ingest::Broker::parse(&url) {
                                self.error(text, e);
                            }
                            Some(url)
                        }
                        None => None,
                    },
                    None => None,
                };
                Some(SourceConfig::Mqtt {
                    topics: topics.iter().map(|t| t.as_str().to_string()).collect(),
                    broker,
                    client_id: doc
                        .client_id
                        .as_ref()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_else(|| format!("passerelle-{channel}")),
                })
            }
            "store" => {
                self.refuse_source_keys(
                    "a store source (it reads the engine's FHIR store)",
                    doc,
                    &[],
                );
                self.store_source(doc)
            }
            other => {
                self.error(
                    &doc.kind,
                    format!(
                        "unknown source type `{other}` (expected: mllp, http, mqtt, file, store)"
                    ),
                );
                None
            }
        }
    }

    /// A store source: the subscription's criteria are read as the change feed reads them,
    /// so a typo is reported here rather than when the channel starts.
    fn store_source(&mut self, doc: &SourceDoc) -> Option<SourceConfig> {
        let Some(subscription) = &doc.subscription else {
            self.error(
                &doc.kind,
                "a store source needs `subscription`, FHIR search criteria such as \
                 MedicationRequest?intent=order",
            );
            return None;
        };
        let mut ok = true;
        // `${VAR}` allowed (the partner's organisation identifier): unset, the channel is
        // paused and the criteria are checked once it is set.
        let criteria = self.value(subscription);
        if let Some(criteria) = &criteria
            && let Err(e) = passerelle_fhir::feed::parse_criteria(criteria)
        {
            self.error(
                subscription,
                format!("subscription `{criteria}`: {}", e.diagnostics),
            );
            ok = false;
        }
        let mut include = Vec::new();
        for path in doc.include.iter().flatten() {
            let steps: Vec<String> = path.as_str().split('.').map(String::from).collect();
            let is_name = |s: &String| {
                s.starts_with(|c: char| c.is_ascii_alphabetic())
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            // `resolve()` goes on from the resources named so far; it needs a path on each side.
            let hops = crate::channel::change::hops(&steps);
            let fits = |hop: &&[String]| !hop.is_empty() && hop.iter().all(is_name);
            if hops.iter().all(fits) {
                include.push(steps);
            } else {
                self.error(
                    path,
                    format!(
                        "include `{}`: expected a path of element names, e.g. subject or \
                         dispenseRequest.performer",
                        path.as_str()
                    ),
                );
                ok = false;
            }
        }
        let start = match doc.start.as_ref().map(|t| (t, t.as_str())) {
            None | Some((_, "now")) => FeedStart::Now,
            Some((_, "beginning")) => FeedStart::Beginning,
            Some((t, other)) => {
                self.error(
                    t,
                    format!("unknown start `{other}` (expected: now, beginning)"),
                );
                return None;
            }
        };
        let revinclude = self.revinclude(doc.revinclude.as_deref().unwrap_or_default());
        (ok && revinclude.is_some()).then(|| SourceConfig::Store {
            subscription: criteria.unwrap_or_else(|| subscription.as_str().to_string()),
            include,
            revinclude: revinclude.unwrap_or_default(),
            start,
        })
    }

    /// `content` of an http or file source.
    fn document_kind(&mut self, doc: &SourceDoc) -> Option<DocumentKind> {
        match doc.content.as_ref().map(|t| (t, t.as_str())) {
            Some((_, "fhir")) => Some(DocumentKind::Fhir),
            Some((_, "cda")) => Some(DocumentKind::Cda),
            Some((t, other)) => {
                self.error(
                    t,
                    format!("unknown content `{other}` (expected: fhir, cda)"),
                );
                None
            }
            None => {
                let kind = doc.kind.as_str().to_string();
                self.error(
                    &doc.kind,
                    format!("a {kind} source needs `content` (fhir, cda)"),
                );
                None
            }
        }
    }

    /// Keys given that do not apply to this kind of source or destination.
    /// Refuses the keys shared by several source kinds that this kind does not take
    /// (`allowed`); the keys of one kind only are refused in `source`.
    fn refuse_source_keys(&mut self, what: &str, doc: &SourceDoc, allowed: &[&str]) {
        let shared = [
            ("address", doc.address.as_ref()),
            ("charset", doc.charset.as_ref()),
            ("content", doc.content.as_ref()),
            ("reply_timeout", doc.reply_timeout.as_ref()),
            ("directory", doc.directory.as_ref()),
            ("poll", doc.poll.as_ref()),
        ];
        let refused: Vec<_> = shared
            .into_iter()
            .filter(|(key, _)| !allowed.contains(key))
            .collect();
        self.refuse_keys(what, &refused);
    }

    fn refuse_keys(&mut self, what: &str, keys: &[(&str, Option<&Text>)]) {
        for (key, value) in keys {
            if let Some(v) = value {
                let d = self.at_key(v, key, format!("`{key}` does not apply to {what}"));
                self.problems.push(d);
            }
        }
    }

    fn mllp_source(&mut self, doc: &SourceDoc) -> Option<SourceConfig> {
        let mut address_unset = false;
        let address = match &doc.address {
            Some(text) => match self.value(text) {
                Some(value) => match value.parse::<SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        self.error(
                            text,
                            format!("`{value}` is not an address like 127.0.0.1:2575"),
                        );
                        None
                    }
                },
                None => {
                    address_unset = true;
                    None
                }
            },
            None => None,
        };
        let default_charset = match &doc.charset {
            Some(text) => match Charset::from_label(text.as_str()) {
                Some(c) => c,
                None => {
                    self.error(
                        text,
                        format!(
                            "unknown character set `{}` (UTF-8, 8859/1, 8859/15, ASCII)",
                            text.as_str()
                        ),
                    );
                    Charset::Utf8
                }
            },
            None => Charset::Utf8,
        };
        Some(SourceConfig::Mllp {
            address,
            address_unset,
            default_charset,
        })
    }

    fn path(&mut self, text: &Text) -> Option<FieldPath> {
        match text.as_str().parse::<FieldPath>() {
            Ok(path) => Some(path),
            Err(e) => {
                self.error(text, e.to_string());
                None
            }
        }
    }

    /// The conditions of one filter item: an item may hold several kinds (`field` with its
    /// test, `message_type`, `any`, `all`), which must all hold. `None` when it is wrong.
    fn condition(&mut self, doc: &Spanned<ConditionDoc>) -> Option<Vec<Condition>> {
        let mut parts = Vec::new();
        let mut complete = true;
        if let Some(list) = &doc.any {
            parts.push(Condition::Any(self.nested(list)));
        }
        if let Some(list) = &doc.all {
            parts.push(Condition::All(self.nested(list)));
        }
        if let Some(types) = &doc.message_type {
            for t in types {
                self.message_type(t);
            }
            parts.push(Condition::MessageType(
                types.iter().map(|t| t.as_str().to_string()).collect(),
            ));
        }
        let has_test = doc.equals.is_some()
            || doc.not_equals.is_some()
            || doc.one_of.is_some()
            || doc.not_in.is_some()
            || doc.starts_with.is_some()
            || doc.exists.is_some();
        match &doc.field {
            Some(field)
                if matches!(
                    self.content,
                    Some(Content::Fhir | Content::Cda | Content::Telemetry | Content::Change)
                ) =>
            {
                self.error(
                    field,
                    "`field` reads HL7 v2 fields: this channel's source does not take HL7 v2 \
                     (filter on `message_type`)",
                );
                complete = false;
            }
            Some(field) => match self.field_condition(field, doc) {
                Some(c) => parts.push(c),
                None => complete = false,
            },
            None if has_test => {
                self.error(
                    doc,
                    "a test (equals, not_equals, in, not_in, starts_with, exists) needs `field`",
                );
                complete = false;
            }
            None => {}
        }
        if parts.is_empty() && complete {
            self.error(
                doc,
                "a filter needs `field` (with a test), `message_type`, `any` or `all`",
            );
            return None;
        }
        complete.then_some(parts)
    }

    /// The conditions of an `any` / `all` list, an item of several kinds becoming an `all`.
    fn nested(&mut self, list: &[Spanned<ConditionDoc>]) -> Vec<Condition> {
        list.iter()
            .filter_map(|c| self.condition(c))
            .map(|mut parts| {
                if parts.len() == 1 {
                    parts.remove(0)
                } else {
                    Condition::All(parts)
                }
            })
            .collect()
    }

    /// `TYPE` or `TYPE^EVENT` (filters and routes): three letters or digits each for HL7 v2,
    /// a resource type (and for a Bundle its type) for FHIR.
    fn message_type(&mut self, t: &Text) {
        let parts: Vec<&str> = t.as_str().split('^').collect();
        // A source in error: what its types look like is unknown.
        let Some(content) = self.content else { return };
        if content == Content::Telemetry {
            if !matches!(t.as_str(), "SenML" | "Observation") {
                self.error(
                    t,
                    format!(
                        "message type `{}`: a reading is SenML or Observation",
                        t.as_str()
                    ),
                );
            }
            return;
        }
        if content == Content::Cda {
            if parts[0] != "ClinicalDocument" || parts.len() > 2 {
                self.error(
                    t,
                    format!(
                        "message type `{}`: expected ClinicalDocument, or \
                         ClinicalDocument^CODE (the document's code, e.g. 11502-2)",
                        t.as_str()
                    ),
                );
            }
            return;
        }
        if content == Content::Change {
            let event_ok = parts
                .get(1)
                .is_none_or(|e| ["create", "update", "delete"].contains(e));
            if !passerelle_fhir::types::is_resource_type(parts[0]) || !event_ok || parts.len() > 2 {
                self.error(
                    t,
                    format!(
                        "message type `{}`: expected the changed resource's type, e.g. \
                         MedicationRequest, or TYPE^create, TYPE^update, TYPE^delete",
                        t.as_str()
                    ),
                );
            }
            return;
        }
        if content == Content::Fhir {
            let known = passerelle_fhir::types::is_resource_type(parts[0]);
            let event_ok = match parts.get(1) {
                None => true,
                Some(e) => parts[0] == "Bundle" && BUNDLE_TYPES.contains(e),
            };
            if !known || !event_ok || parts.len() > 2 {
                self.error(
                    t,
                    format!(
                        "message type `{}`: expected a FHIR resource type, e.g. Patient, or \
                         Bundle^TYPE ({})",
                        t.as_str(),
                        BUNDLE_TYPES.join(", ")
                    ),
                );
            }
            return;
        }
        if !parts
            .iter()
            .all(|part| part.len() == 3 && part.chars().all(|c| c.is_ascii_alphanumeric()))
            || parts.len() > 2
        {
            self.error(
                t,
                format!(
                    "message type `{}`: expected TYPE or TYPE^EVENT, e.g. ADT^A01",
                    t.as_str()
                ),
            );
        }
    }

    fn field_condition(&mut self, field: &Text, doc: &ConditionDoc) -> Option<Condition> {
        let strings = |list: &Vec<Text>| {
            list.iter()
                .map(|t| t.as_str().to_string())
                .collect::<Vec<_>>()
        };
        let path = self.path(field);
        let mut tests = Vec::new();
        if let Some(v) = &doc.equals {
            tests.push(Test::Equals(v.as_str().into()));
        }
        if let Some(v) = &doc.not_equals {
            tests.push(Test::NotEquals(v.as_str().into()));
        }
        if let Some(v) = &doc.one_of {
            tests.push(Test::In(strings(v)));
        }
        if let Some(v) = &doc.not_in {
            tests.push(Test::NotIn(strings(v)));
        }
        if let Some(v) = &doc.starts_with {
            tests.push(Test::StartsWith(v.as_str().into()));
        }
        if let Some(v) = &doc.exists {
            tests.push(Test::Exists(**v));
        }
        if tests.len() != 1 {
            self.error(
                field,
                format!(
                    "field `{}` needs exactly one test: equals, not_equals, in, not_in, starts_with or exists (found {})",
                    field.as_str(),
                    tests.len()
                ),
            );
            return None;
        }
        Some(Condition::Field {
            path: path?,
            test: tests.remove(0),
        })
    }

    fn destinations(&mut self, docs: &[DestinationDoc]) -> Vec<DestinationConfig> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for doc in docs {
            if !is_identifier(&doc.id) {
                self.error(
                    &doc.id,
                    format!(
                        "destination id `{}`: use lowercase letters, digits and dashes",
                        doc.id.as_str()
                    ),
                );
            }
            if !seen.insert(doc.id.as_str().to_string()) {
                self.error(
                    &doc.id,
                    format!("destination id `{}` is used twice", doc.id.as_str()),
                );
            }
            if let Some(d) = self.destination(doc) {
                out.push(d);
            }
        }
        out
    }

    fn destination(&mut self, doc: &DestinationDoc) -> Option<DestinationConfig> {
        let retry = self.retry(doc.retry.as_ref());
        if !matches!(doc.kind.as_str(), "fhir") {
            self.refuse_keys(
                &format!("a {} destination", doc.kind.as_str()),
                &[
                    ("token", doc.token.as_ref()),
                    ("token_url", doc.token_url.as_ref()),
                    ("client_id", doc.client_id.as_ref()),
                    ("client_secret", doc.client_secret.as_ref()),
                    ("scope", doc.scope.as_ref()),
                ],
            );
        }
        if !matches!(doc.kind.as_str(), "smtp" | "xds" | "fhir") {
            self.refuse_keys(
                &format!("a {} destination", doc.kind.as_str()),
                &[
                    ("tls", doc.tls.as_ref()),
                    ("client_certificate", doc.client_certificate.as_ref()),
                    ("client_key", doc.client_key.as_ref()),
                    ("ca_file", doc.ca_file.as_ref()),
                    ("username", doc.username.as_ref()),
                    ("password", doc.password.as_ref()),
                ],
            );
        }
        let kind = match doc.kind.as_str() {
            "smtp" => DestinationKind::Smtp(self.smtp_destination(doc)?),
            "xds" => DestinationKind::Xds(self.xds_destination(doc)?),
            "fhir" => DestinationKind::Fhir(self.fhir_destination(doc)?),
            "file" => {
                let Some(dir) = &doc.directory else {
                    self.error(&doc.kind, "a file destination needs `directory`");
                    return None;
                };
                let directory = PathBuf::from(self.value(dir).unwrap_or_default());
                let file_name = doc.file_name.as_ref().map(|t| t.as_str().to_string());
                let file_name = file_name.unwrap_or_else(|| "{channel}-{id}.hl7".to_string());
                if file_name.contains('/') || file_name.contains("..") {
                    self.error(
                        doc.file_name.as_ref().unwrap_or(&doc.kind),
                        "`file_name` must not contain `/` or `..`",
                    );
                }
                self.refuse_keys(
                    &format!("a {} destination", doc.kind.as_str()),
                    &[
                        ("address", doc.address.as_ref()),
                        ("ack_timeout", doc.ack_timeout.as_ref()),
                        ("connect_timeout", doc.connect_timeout.as_ref()),
                    ],
                );
                DestinationKind::File {
                    directory,
                    file_name,
                }
            }
            "fhir-store" => {
                self.refuse_keys(
                    &format!("a {} destination", doc.kind.as_str()),
                    &[
                        ("address", doc.address.as_ref()),
                        ("directory", doc.directory.as_ref()),
                        ("file_name", doc.file_name.as_ref()),
                        ("ack_timeout", doc.ack_timeout.as_ref()),
                        ("connect_timeout", doc.connect_timeout.as_ref()),
                    ],
                );
                DestinationKind::FhirStore
            }
            "mllp" => {
                let Some(address) = &doc.address else {
                    self.error(&doc.kind, "an mllp destination needs `address` (host:port)");
                    return None;
                };
                let value = self.value(address).unwrap_or_default();
                if !value.is_empty() && !looks_like_host_port(&value) {
                    self.error(address, format!("`{value}` is not host:port"));
                }
                self.refuse_keys(
                    &format!("a {} destination", doc.kind.as_str()),
                    &[
                        ("directory", doc.directory.as_ref()),
                        ("file_name", doc.file_name.as_ref()),
                    ],
                );
                DestinationKind::Mllp {
                    address: value,
                    ack_timeout: self.duration(doc.ack_timeout.as_ref(), Duration::from_secs(30)),
                    connect_timeout: self
                        .duration(doc.connect_timeout.as_ref(), Duration::from_secs(10)),
                }
            }
            other => {
                self.error(
                    &doc.kind,
                    format!(
                        "unknown destination type `{other}` (expected: file, mllp, fhir-store, fhir, smtp, xds)"
                    ),
                );
                return None;
            }
        };
        Some(DestinationConfig {
            id: doc.id.as_str().to_string(),
            kind,
            retry,
        })
    }

    /// An `smtp` destination: address, TLS mode, certificate files, credentials.
    fn smtp_destination(&mut self, doc: &DestinationDoc) -> Option<SmtpConfig> {
        let Some(address) = &doc.address else {
            self.error(
                &doc.kind,
                "an smtp destination needs `address` (host:port or smtp://host:port)",
            );
            return None;
        };
        // `smtp://host:port` (the form of PASSERELLE_SMTP) or plain `host:port`.
        let written = self.value(address).unwrap_or_default();
        let value = written
            .strip_prefix("smtp://")
            .map_or(written.as_str(), |rest| rest.trim_end_matches('/'))
            .to_string();
        if !value.is_empty() && !looks_like_host_port(&value) {
            self.error(address, format!("`{written}` is not host:port"));
        }
        self.refuse_keys(
            "an smtp destination",
            &[
                ("directory", doc.directory.as_ref()),
                ("file_name", doc.file_name.as_ref()),
                ("ack_timeout", doc.ack_timeout.as_ref()),
            ],
        );
        let tls = match doc.tls.as_ref().map(|t| (t, t.as_str())) {
            None | Some((_, "starttls")) => SmtpTls::StartTls,
            Some((_, "tls")) => SmtpTls::Implicit,
            Some((_, "none")) => SmtpTls::None,
            Some((t, other)) => {
                self.error(
                    t,
                    format!("unknown tls `{other}` (expected: starttls, tls, none)"),
                );
                SmtpTls::StartTls
            }
        };
        // A file named but missing is reported now rather than at the first mail.
        let file = |text: Option<&Text>, checker: &mut Self| -> Option<PathBuf> {
            let text = text?;
            let value = checker.value(text)?;
            // `${VAR:-}` left empty: none.
            if value.is_empty() {
                return None;
            }
            let path = PathBuf::from(&value);
            if !path.is_file() {
                checker.error(text, format!("no file `{value}`"));
            }
            Some(path)
        };
        let client_certificate = file(doc.client_certificate.as_ref(), self);
        let client_key = file(doc.client_key.as_ref(), self);
        let ca_file = file(doc.ca_file.as_ref(), self);
        if doc.client_certificate.is_some() != doc.client_key.is_some() {
            self.error(
                doc.client_certificate
                    .as_ref()
                    .or(doc.client_key.as_ref())
                    .unwrap_or(&doc.kind),
                "`client_certificate` and `client_key` go together",
            );
        }
        if tls == SmtpTls::None && (doc.client_certificate.is_some() || doc.ca_file.is_some()) {
            self.error(
                doc.tls.as_ref().unwrap_or(&doc.kind),
                "`tls: none` sends no certificate: remove it or the certificate files",
            );
        }
        let username = doc.username.as_ref().and_then(|t| self.value(t));
        let password = doc.password.as_ref().and_then(|t| self.value(t));
        if doc.username.is_some() != doc.password.is_some() {
            self.error(
                doc.username
                    .as_ref()
                    .or(doc.password.as_ref())
                    .unwrap_or(&doc.kind),
                "`username` and `password` go together",
            );
        }
        Some(SmtpConfig {
            address: value,
            tls,
            client_certificate,
            client_key,
            ca_file,
            username,
            password,
            connect_timeout: self.duration(doc.connect_timeout.as_ref(), Duration::from_secs(10)),
        })
    }

    /// A problem reported at the key whose value is `value` (`key: value` on one line), or at
    /// the value when the key is not found in front of it.
    fn at_key(&self, value: &Text, key: &str, message: String) -> Diagnostic {
        let Some(mark) = value.span().start() else {
            return Diagnostic::new(self.file, 1, 1, message);
        };
        let column = self
            .text
            .lines()
            .nth(mark.line().saturating_sub(1))
            .and_then(|line| {
                let before: String = line.chars().take(mark.column().saturating_sub(1)).collect();
                let at = before.rfind(&format!("{key}:"))?;
                Some(before[..at].chars().count() + 1)
            });
        match column {
            Some(column) => Diagnostic::new(self.file, mark.line(), column, message),
            None => Diagnostic::at(self.file, Some(mark), message),
        }
    }

    fn retry(&mut self, doc: Option<&RetryDoc>) -> RetryPolicy {
        let default = RetryPolicy::default();
        let Some(doc) = doc else { return default };
        let policy = RetryPolicy {
            max_attempts: doc
                .max_attempts
                .as_ref()
                .map(|v| **v)
                .unwrap_or(default.max_attempts),
            initial_backoff: self.duration(doc.initial_backoff.as_ref(), default.initial_backoff),
            max_backoff: self.duration(doc.max_backoff.as_ref(), default.max_backoff),
            multiplier: doc
                .multiplier
                .as_ref()
                .map(|v| **v)
                .unwrap_or(default.multiplier),
            jitter: doc.jitter.as_ref().map(|v| **v).unwrap_or(default.jitter),
        };
        if let Some(m) = &doc.multiplier
            && **m < 1.0
        {
            self.error(m, "`multiplier` must be at least 1.0");
        }
        if let Some(j) = &doc.jitter
            && !(0.0..=1.0).contains(&**j)
        {
            self.error(j, "`jitter` must be between 0.0 and 1.0");
        }
        policy
    }

    /// The `mssante` transform: a store source's Communications as MSSanté mail.
    fn mssante(
        &mut self,
        doc: &TransformDoc,
        destinations: &[String],
    ) -> Option<Arc<dyn Transform>> {
        self.require_store_source(doc, "Communication changes");
        if doc.routes.is_some() || doc.mappings.is_some() || doc.default.is_some() {
            self.error(
                &doc.kind,
                "`routes`, `mappings` and `default` do not apply to the mssante transform",
            );
        }
        let Some(sender) = &doc.sender else {
            self.error(
                &doc.kind,
                "the mssante transform needs `sender`, the sending mailbox (box@domain)",
            );
            return None;
        };
        // Unset variable: the channel is paused; a placeholder keeps the rest checked.
        let value = self
            .value(sender)
            .unwrap_or_else(|| "unset@invalid".to_string());
        let sender = match value.parse() {
            Ok(mailbox) => mailbox,
            Err(e) => {
                self.error(sender, format!("sender `{value}` is not a mailbox: {e}"));
                return None;
            }
        };
        let source_id = doc.source_id.as_ref().and_then(|t| self.value(t));
        if let (Some(id), Some(text)) = (&source_id, &doc.source_id)
            && !is_oid(id)
        {
            self.error(text, format!("source_id `{id}` is not an OID"));
        }
        Some(Arc::new(Mssante {
            sender,
            source_id,
            destinations: destinations.to_vec(),
        }))
    }

    fn transform(
        &mut self,
        doc: Option<&TransformDoc>,
        destinations: &[String],
    ) -> Option<Arc<dyn Transform>> {
        let fhir = matches!(self.content, Some(Content::Fhir));
        let telemetry = matches!(self.content, Some(Content::Telemetry));
        let Some(doc) = doc else {
            // Readings: vital signs, every one kept.
            if telemetry {
                return Some(Arc::new(VitalSigns::new(destinations.to_vec(), None)));
            }
            // FHIR in: written as received (a single resource still needs its transaction).
            if fhir {
                return Some(Arc::new(FhirIntake {
                    destinations: destinations.to_vec(),
                    identifier_systems: Vec::new(),
                    profiles: Vec::new(),
                }));
            }
            return Some(Arc::new(PassThrough {
                destinations: destinations.to_vec(),
            }));
        };
        if doc.kind.as_str() != "xds-provide" {
            self.refuse_keys(
                &format!("a {} transform", doc.kind.as_str()),
                &[("repository", doc.repository.as_ref())],
            );
            if doc.vihf.is_some() {
                self.error(
                    &doc.kind,
                    "`vihf` applies to the xds-provide transform only",
                );
            }
        }
        if doc.kind.as_str() != "fhir-transaction" {
            self.refuse_keys(
                &format!("a {} transform", doc.kind.as_str()),
                &[
                    ("identifier_system", doc.identifier_system.as_ref()),
                    ("upsert", doc.upsert.as_ref().and_then(|l| l.first())),
                ],
            );
        }
        if !matches!(doc.kind.as_str(), "mssante" | "xds-provide") {
            self.refuse_keys(
                &format!("a {} transform", doc.kind.as_str()),
                &[
                    ("sender", doc.sender.as_ref()),
                    ("source_id", doc.source_id.as_ref()),
                ],
            );
        }
        if doc.kind.as_str() != "fhir" {
            self.refuse_keys(
                &format!("a {} transform", doc.kind.as_str()),
                &[
                    (
                        "identifier_systems",
                        doc.identifier_systems
                            .as_ref()
                            .and_then(|l| l.first())
                            .map(|d| &d.from),
                    ),
                    (
                        "profiles",
                        doc.profiles
                            .as_ref()
                            .and_then(|l| l.first())
                            .map(|d| &d.resource),
                    ),
                ],
            );
        }
        let known = |list: &[Text], checker: &mut Self| -> Vec<String> {
            for d in list {
                if !destinations.iter().any(|x| x == d.as_str()) {
                    checker.error(
                        d,
                        format!("no destination `{}` in this channel", d.as_str()),
                    );
                }
            }
            list.iter().map(|d| d.as_str().to_string()).collect()
        };
        match doc.kind.as_str() {
            "pass-through" => {
                if doc.routes.is_some() || doc.default.is_some() {
                    self.error(
                        &doc.kind,
                        "`routes` and `default` apply to route-by-message-type only",
                    );
                }
                Some(Arc::new(PassThrough {
                    destinations: destinations.to_vec(),
                }))
            }
            "route-by-message-type" => {
                let Some(routes) = &doc.routes else {
                    self.error(&doc.kind, "route-by-message-type needs `routes`");
                    return None;
                };
                let routes = routes
                    .iter()
                    .map(|r| {
                        self.message_type(&r.message_type);
                        (
                            r.message_type.as_str().to_string(),
                            known(&r.destinations, self),
                        )
                    })
                    .collect();
                let default = doc.default.as_ref().map(|d| known(d, self));
                Some(Arc::new(RouteByMessageType { routes, default }))
            }
            "vital-signs" => {
                if !telemetry {
                    self.error(
                        &doc.kind,
                        "the `vital-signs` transform takes an mqtt source",
                    );
                }
                let min_interval = doc
                    .min_interval
                    .as_ref()
                    .map(|t| self.duration(Some(t), Duration::ZERO))
                    .filter(|d| !d.is_zero());
                let to = match &doc.default {
                    Some(d) => known(d, self),
                    None => destinations.to_vec(),
                };
                Some(Arc::new(VitalSigns::new(to, min_interval)))
            }
            "mssante" => self.mssante(doc, destinations),
            "xds-provide" => self.xds_provide(doc, destinations),
            "cda-document" => self.cda_document(doc, destinations),
            "fhir-transaction" => self.fhir_transaction(doc, destinations),
            _ if telemetry && doc.kind.as_str() != "pass-through" => {
                self.error(
                    &doc.kind,
                    "an mqtt source takes the `vital-signs` transform (or pass-through)",
                );
                None
            }
            "mapping" if fhir => {
                self.error(
                    &doc.kind,
                    "the mapping library reads HL7 v2: a FHIR channel takes the `fhir` transform",
                );
                None
            }
            "fhir" => {
                if !fhir {
                    self.error(&doc.kind, "the `fhir` transform takes a FHIR source");
                }
                if doc.routes.is_some() || doc.mappings.is_some() {
                    self.error(
                        &doc.kind,
                        "`routes` and `mappings` do not apply to the fhir transform",
                    );
                }
                let identifier_systems = doc
                    .identifier_systems
                    .iter()
                    .flatten()
                    .map(|d| (d.from.as_str().to_string(), d.to.as_str().to_string()))
                    .collect();
                let profiles = doc
                    .profiles
                    .iter()
                    .flatten()
                    .filter_map(|d| {
                        if !passerelle_fhir::types::is_resource_type(d.resource.as_str()) {
                            self.error(
                                &d.resource,
                                format!("`{}` is not a FHIR R4 resource type", d.resource.as_str()),
                            );
                            return None;
                        }
                        Some((
                            d.resource.as_str().to_string(),
                            d.profile.as_str().to_string(),
                        ))
                    })
                    .collect();
                let to = match &doc.default {
                    Some(d) => known(d, self),
                    None => destinations.to_vec(),
                };
                Some(Arc::new(FhirIntake {
                    destinations: to,
                    identifier_systems,
                    profiles,
                }))
            }
            "mapping" => {
                let Some(ids) = &doc.mappings else {
                    self.error(
                        &doc.kind,
                        "a mapping transform needs `mappings`, a list of mapping ids",
                    );
                    return None;
                };
                let library = self.library.get();
                // An id may come from the environment (`pharmacy-${PASSERELLE_PHARMACY_MESSAGE:-rde}`):
                // the same channel, the message the peer wants.
                let mut resolved = Vec::with_capacity(ids.len());
                for id in ids {
                    let Some(name) = self.value(id) else { continue };
                    self.library.require(&name);
                    if library.mapping(&name).is_none() {
                        let loaded = names(library.mappings().iter().map(|m| &m.id));
                        self.error(id, format!("no mapping `{name}` (loaded: {loaded})"));
                    }
                    resolved.push(name);
                }
                let to = match &doc.default {
                    Some(d) => known(d, self),
                    None => destinations.to_vec(),
                };
                Some(Arc::new(MapToFhir {
                    library: self.library.clone(),
                    mappings: resolved,
                    destinations: to,
                }))
            }
            other => {
                self.error(
                    &doc.kind,
                    format!("unknown transform type `{other}` (expected: pass-through, route-by-message-type, mapping, fhir, fhir-transaction, vital-signs, mssante, xds-provide)"),
                );
                None
            }
        }
    }
}

/// The loader places a block mapping (a list item such as `- field: PID-8`) at the `:` of its
/// first key; an analyst expects the key. Other positions are returned as they are.
fn key_start(text: &str, line: usize, column: usize) -> (usize, usize) {
    let Some(row) = text.lines().nth(line.saturating_sub(1)) else {
        return (line, column);
    };
    let before: String = row.chars().take(column.saturating_sub(1)).collect();
    if row.chars().nth(column.saturating_sub(1)) != Some(':') {
        return (line, column);
    }
    let key_at = before
        .trim_end()
        .rfind(char::is_whitespace)
        .map_or(0, |i| i + 1);
    let key = &before[key_at..];
    if key.trim().is_empty() {
        return (line, column);
    }
    (line, before[..key_at].chars().count() + 1)
}

fn is_oid(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('.')
            .all(|arc| !arc.is_empty() && arc.chars().all(|c| c.is_ascii_digit()))
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
}

fn looks_like_host_port(text: &str) -> bool {
    matches!(text.rsplit_once(':'), Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok())
}

mod cda_document;
mod fhir_rest;
mod http;
mod xds;

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(Path::new("channels/lab.yaml"), text)
            .unwrap_err()
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    const GOOD: &str = "\
id: lab-in
source:
  type: mllp
  address: 127.0.0.1:2600
filters:
  - message_type: [ORU^R01]
  - field: MSH-4
    in: [LAB, RAD]
transform:
  type: route-by-message-type
  routes:
    - message_type: ORU
      destinations: [archive]
destinations:
  - id: archive
    type: file
    directory: out
    retry:
      max_attempts: 3
      initial_backoff: 2s
";

    #[test]
    fn a_good_channel_compiles() {
        let c = parse(Path::new("channels/lab.yaml"), GOOD).unwrap();
        assert_eq!(c.id, "lab-in");
        assert_eq!(c.filters.len(), 2);
        assert_eq!(c.destinations[0].retry.max_attempts, 3);
        assert_eq!(
            c.destinations[0].retry.initial_backoff,
            Duration::from_secs(2)
        );
        assert!(c.paused.is_none());
    }

    #[test]
    fn an_http_source_takes_fhir_and_filters_and_transforms_that_fit() {
        let good = "source:\n  type: http\n  content: fhir\n  reply_timeout: 5s\nfilters:\n  - message_type: [Patient, Bundle^transaction]\ndestinations:\n  - id: store\n    type: fhir-store\n";
        let c = parse(Path::new("channels/fhir.yaml"), good).unwrap();
        assert_eq!(c.source.kind(), "http");
        assert!(matches!(
            c.source,
            SourceConfig::Http { reply_timeout, .. } if reply_timeout == Duration::from_secs(5)
        ));
        assert_eq!(
            c.transform.kind(),
            "fhir",
            "FHIR in is written as received by default"
        );
        let bad = |from: &str, to: &str| errors(&good.replace(from, to));
        assert_eq!(
            bad("content: fhir", "content: pdf"),
            vec!["channels/lab.yaml:3:12: unknown content `pdf` (expected: fhir, cda)"]
        );
        assert_eq!(
            bad(
                "  content: fhir\n",
                "  address: 127.0.0.1:1\n  content: fhir\n"
            ),
            vec![
                "channels/lab.yaml:3:3: `address` does not apply to an http source (it is served on the HTTP address)"
            ]
        );
        assert!(bad("Bundle^transaction", "ADT^A01")[0].contains("expected a FHIR resource type"));
        assert!(
            bad("Bundle^transaction", "Patient^x")[0].contains("expected a FHIR resource type")
        );
        let field = bad(
            "- message_type: [Patient, Bundle^transaction]",
            "- field: PID-3\n    equals: x",
        );
        assert!(field[0].contains("reads HL7 v2 fields"), "{field:?}");
        let mapping = errors(&format!(
            "{good}transform:\n  type: mapping\n  mappings: [adt]\n"
        ));
        assert!(
            mapping[0].contains("a FHIR channel takes the `fhir` transform"),
            "{mapping:?}"
        );
        let fhir_on_mllp = errors(
            "source:\n  type: mllp\ntransform:\n  type: fhir\ndestinations:\n  - id: store\n    type: fhir-store\n",
        );
        assert!(
            fhir_on_mllp
                .iter()
                .any(|e| e.contains("takes a FHIR source")),
            "{fhir_on_mllp:?}"
        );
        let profiles = errors(&format!(
            "{good}transform:\n  type: fhir\n  profiles:\n    - resource: Patiant\n      profile: http://x\n"
        ));
        assert!(
            profiles[0].contains("`Patiant` is not a FHIR R4 resource type"),
            "{profiles:?}"
        );
        let file = |source: &str| {
            errors(&format!(
                "source:\n{source}destinations:\n  - id: store\n    type: fhir-store\n"
            ))
        };
        assert!(file("  type: file\n  content: cda\n")[0].contains("needs `directory`"));
        assert!(
            file("  type: file\n  directory: in\n")[0].contains("a file source needs `content`")
        );
        assert!(
            file("  type: file\n  directory: in\n  content: cda\n  reply_timeout: 1s\n")[0]
                .contains("`reply_timeout` does not apply to a file source")
        );
        let ok = "source:\n  type: file\n  directory: in\n  content: cda\n  poll: 500ms\ntransform:\n  type: pass-through\n";
        assert!(matches!(
            parse(Path::new("c.yaml"), ok).unwrap().source,
            SourceConfig::File { poll, .. } if poll == Duration::from_millis(500)
        ));
    }

    #[test]
    fn a_store_source_reads_its_subscription_includes_and_start() {
        let good = "source:\n  type: store\n  subscription: \"MedicationRequest?intent=order\"\n  include: [subject, dispenseRequest.performer]\n  start: beginning\nfilters:\n  - message_type: [MedicationRequest^create, MedicationRequest]\ndestinations:\n  - id: out\n    type: file\n    directory: out\n";
        let c = parse(Path::new("channels/orders.yaml"), good).unwrap();
        assert_eq!(c.source.kind(), "store");
        assert_eq!(c.source.content(), Content::Change);
        let SourceConfig::Store {
            subscription,
            include,
            start,
            ..
        } = &c.source
        else {
            panic!("{:?}", c.source)
        };
        assert_eq!(subscription, "MedicationRequest?intent=order");
        assert_eq!(
            include,
            &vec![
                vec!["subject".to_string()],
                vec!["dispenseRequest".to_string(), "performer".to_string()]
            ]
        );
        assert_eq!(*start, FeedStart::Beginning);
        assert_eq!(c.transform.kind(), "pass-through");
        let bare = parse(
            Path::new("c.yaml"),
            "source:\n  type: store\n  subscription: Patient\n",
        )
        .unwrap();
        assert!(matches!(
            bare.source,
            SourceConfig::Store { start: FeedStart::Now, ref include, .. } if include.is_empty()
        ));

        let bad = |from: &str, to: &str| errors(&good.replace(from, to));
        assert_eq!(
            bad("\"MedicationRequest?intent=order\"", "MedicationRequst"),
            vec![
                "channels/lab.yaml:3:17: subscription `MedicationRequst`: `MedicationRequst` is not a FHIR R4 resource type"
            ]
        );
        let e = bad("intent=order", "colour=red");
        assert!(
            e.len() == 1
                && e[0].starts_with(
                    "channels/lab.yaml:3:17: subscription `MedicationRequest?colour=red`: "
                ),
            "{e:?}"
        );
        assert_eq!(
            bad("dispenseRequest.performer", "dispenseRequest..performer"),
            vec![
                "channels/lab.yaml:4:22: include `dispenseRequest..performer`: expected a path of element names, e.g. subject or dispenseRequest.performer"
            ]
        );
        // `resolve()` goes on from the resources named so far, with a path on each side.
        let chained = good.replace("dispenseRequest.performer", "basedOn.resolve().subject");
        assert!(parse(Path::new("c.yaml"), &chained).is_ok(), "{chained}");
        for half in [
            "basedOn.resolve()",
            "resolve().subject",
            "basedOn.resolve().resolve().x",
        ] {
            assert_eq!(bad("dispenseRequest.performer", half).len(), 1, "{half}");
        }
        assert_eq!(
            bad("start: beginning", "start: yesterday"),
            vec!["channels/lab.yaml:5:10: unknown start `yesterday` (expected: now, beginning)"]
        );
        assert_eq!(
            bad("  subscription: \"MedicationRequest?intent=order\"\n", ""),
            vec![
                "channels/lab.yaml:2:9: a store source needs `subscription`, FHIR search criteria such as MedicationRequest?intent=order"
            ]
        );
        assert_eq!(
            bad("  start: beginning\n", "  start: now\n  directory: in\n"),
            vec![
                "channels/lab.yaml:6:3: `directory` does not apply to a store source (it reads the engine's FHIR store)"
            ]
        );
        assert_eq!(
            bad("  start: beginning\n", "  starts: now\n")[0],
            "channels/lab.yaml:5:3: unknown key `starts` (expected one of: type, address, charset, content, reply_timeout, directory, poll, topics, broker, client_id, subscription, include, start, revinclude)"
        );
        assert!(
            bad("MedicationRequest^create", "MedicationRequest^A01")[0]
                .contains("TYPE^create, TYPE^update, TYPE^delete")
        );
        let field = bad(
            "- message_type: [MedicationRequest^create, MedicationRequest]",
            "- field: PID-3\n    equals: x",
        );
        assert!(field[0].contains("reads HL7 v2 fields"), "{field:?}");
        // The store's keys belong to it alone.
        let on_file = errors(
            "source:\n  type: file\n  directory: in\n  content: fhir\n  subscription: Patient\n",
        );
        assert_eq!(
            on_file,
            vec!["channels/lab.yaml:5:3: `subscription` does not apply to a file source"]
        );
    }

    #[test]
    fn errors_have_file_line_column() {
        let bad = GOOD.replace("type: file", "type: fil");
        assert_eq!(
            errors(&bad),
            vec![
                "channels/lab.yaml:16:11: unknown destination type `fil` (expected: file, mllp, fhir-store, fhir, smtp, xds)"
            ]
        );
        let bad = GOOD.replace("field: MSH-4", "field: MSH4");
        let e = errors(&bad);
        assert!(
            e[0].starts_with("channels/lab.yaml:7:12: invalid path \"MSH4\""),
            "{e:?}"
        );
        let bad = GOOD.replace("destinations: [archive]", "destinations: [archiv]");
        assert_eq!(
            errors(&bad),
            vec!["channels/lab.yaml:13:22: no destination `archiv` in this channel"]
        );
        let bad = GOOD.replace("initial_backoff: 2s", "initial_backof: 2s");
        let e = errors(&bad);
        assert!(
            e[0].starts_with("channels/lab.yaml:20:7: unknown key `initial_backof`"),
            "{e:?}"
        );
        let bad = GOOD.replace("address: 127.0.0.1:2600", "address: nowhere");
        assert_eq!(
            errors(&bad),
            vec!["channels/lab.yaml:4:12: `nowhere` is not an address like 127.0.0.1:2575"]
        );
    }

    #[test]
    fn a_filter_item_of_several_kinds_needs_each() {
        let text = GOOD.replace(
            "  - message_type: [ORU^R01]\n",
            "  - message_type: [ORU^R01]\n    field: MSH-3\n    equals: LAB\n",
        );
        let c = parse(Path::new("channels/lab.yaml"), &text).unwrap();
        assert_eq!(c.filters.len(), 3, "{:?}", c.filters);
        assert!(matches!(c.filters[0], Condition::MessageType(_)));
        assert!(matches!(c.filters[1], Condition::Field { .. }));
    }

    #[test]
    fn item_route_and_key_errors_have_their_position() {
        let bad = GOOD.replace("- message_type: [ORU^R01]", "- {}");
        assert_eq!(
            errors(&bad),
            vec![
                "channels/lab.yaml:6:5: a filter needs `field` (with a test), `message_type`, `any` or `all`"
            ]
        );
        let bad = GOOD.replace("  - field: MSH-4\n", "  - equals: X\n");
        assert_eq!(
            errors(&bad),
            vec![
                "channels/lab.yaml:7:5: a test (equals, not_equals, in, not_in, starts_with, exists) needs `field`"
            ]
        );
        let bad = GOOD.replace("message_type: ORU\n", "message_type: ORU-R01\n");
        assert_eq!(
            errors(&bad),
            vec![
                "channels/lab.yaml:12:21: message type `ORU-R01`: expected TYPE or TYPE^EVENT, e.g. ADT^A01"
            ]
        );
        let bad = GOOD.replace(
            "directory: out\n",
            "directory: out\n    connect_timeout: 1s\n",
        );
        assert_eq!(
            errors(&bad),
            vec!["channels/lab.yaml:18:5: `connect_timeout` does not apply to a file destination"]
        );
    }

    #[test]
    fn yaml_syntax_errors_have_a_position() {
        let e = errors("id: x\nsource: [\n");
        assert!(e[0].starts_with("channels/lab.yaml:"), "{e:?}");
        assert!(
            !e[0].starts_with("channels/lab.yaml:1:1:"),
            "a real position: {e:?}"
        );
        assert_eq!(
            errors("id: x\nsource:\n  type: mllp: tcp\n"),
            vec!["channels/lab.yaml:3:13: mapping values are not allowed in this context"],
            "the position is not repeated in the message"
        );
        let e = errors("id: x\nid: y\n");
        assert!(
            e[0].starts_with("channels/lab.yaml:2:1: Duplicate key \"id\""),
            "{e:?}"
        );
    }

    #[test]
    fn unset_source_address_pauses_the_channel_without_taking_the_main_address() {
        let dir = tempfile::tempdir().unwrap();
        let main = GOOD
            .replace("id: lab-in", "id: main-in")
            .replace("  address: 127.0.0.1:2600\n", "");
        std::fs::write(dir.path().join("a.yaml"), main).unwrap();
        let other = GOOD.replace("127.0.0.1:2600", "${PASSERELLE_TEST_UNSET_ADDRESS}");
        std::fs::write(dir.path().join("b.yaml"), other).unwrap();
        let loaded = load_dir(dir.path());
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        assert_eq!(loaded.channels.len(), 2);
        assert!(loaded.channels[0].paused.is_none());
        assert_eq!(
            loaded.channels[1].paused.as_deref(),
            Some("not configured: PASSERELLE_TEST_UNSET_ADDRESS not set")
        );
    }

    #[test]
    fn an_smtp_destination_and_the_mssante_transform_are_checked() {
        let good = "source:\n  type: store\n  subscription: Communication\ntransform:\n  type: mssante\n  sender: Labo <labo@h.test>\ndestinations:\n  - id: mss\n    type: smtp\n    address: smtp.test:587\n";
        let c = parse(Path::new("c.yaml"), good).unwrap();
        let DestinationKind::Smtp(smtp) = &c.destinations[0].kind else {
            panic!("{:?}", c.destinations[0].kind);
        };
        assert_eq!(
            smtp.tls,
            SmtpTls::StartTls,
            "STARTTLS unless said otherwise"
        );
        assert_eq!(smtp.address, "smtp.test:587");
        let url = parse(
            Path::new("c.yaml"),
            &good.replace("smtp.test:587", "smtp://smtp.test:587/"),
        )
        .unwrap();
        assert!(
            matches!(&url.destinations[0].kind, DestinationKind::Smtp(s) if s.address == "smtp.test:587"),
            "{:?}",
            url.destinations[0].kind
        );
        assert_eq!(c.transform.kind(), "mssante");

        let bad = |from: &str, to: &str| errors(&good.replace(from, to));
        let one = |e: Vec<String>, says: &str| {
            assert!(
                e.len() == 1 && e[0].contains(says),
                "{e:?} should say {says}"
            );
        };
        one(
            bad("587\n", "587\n    tls: ssl\n"),
            "11:10: unknown tls `ssl` (expected: starttls, tls, none)",
        );
        let missing = bad(
            "587\n",
            "587\n    client_certificate: /nowhere/cert.pem\n    client_key: /nowhere/key.pem\n",
        );
        assert_eq!(
            missing,
            [
                "channels/lab.yaml:11:25: no file `/nowhere/cert.pem`",
                "channels/lab.yaml:12:17: no file `/nowhere/key.pem`"
            ]
        );
        one(
            bad("587\n", "587\n    username: me\n"),
            "`username` and `password` go together",
        );
        one(
            bad("smtp.test:587", "smtp.test"),
            "`smtp.test` is not host:port",
        );
        assert_eq!(
            bad(
                "type: smtp",
                "type: file\n    directory: out\n    tls: none"
            ),
            [
                "channels/lab.yaml:11:5: `tls` does not apply to a file destination",
                "channels/lab.yaml:12:5: `address` does not apply to a file destination"
            ]
        );
        one(
            bad("Labo <labo@h.test>", "not a mailbox"),
            "sender `not a mailbox` is not a mailbox",
        );
        one(bad("  sender: Labo <labo@h.test>\n", ""), "needs `sender`");
        one(
            bad(
                "subscription: Communication",
                "subscription: Communication\n  include: [payload.resolve()]",
            ),
            "include `payload.resolve()`",
        );
        let http = good.replace(
            "  type: store\n  subscription: Communication",
            "  type: http\n  content: fhir",
        );
        assert!(
            errors(&http)
                .iter()
                .any(|e| e.contains("the `mssante` transform takes a store source")),
            "{:?}",
            errors(&http)
        );
    }

    #[test]
    fn unset_endpoint_variable_pauses_the_channel() {
        let text = GOOD.replace("directory: out", "directory: ${PASSERELLE_TEST_UNSET_DIR}");
        let c = parse(Path::new("channels/lab.yaml"), &text).unwrap();
        assert_eq!(
            c.paused.as_deref(),
            Some("not configured: PASSERELLE_TEST_UNSET_DIR not set")
        );
    }
}
