//! Running a compiled mapping on a message: the resources it declares, as a FHIR transaction
//! Bundle, and the trace of which rule produced which element.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::conceptmap::ConceptMap;
use crate::convert::{Zone, convert, typed};
use crate::input::{Doc, InputPath, Scope};
use crate::plan::*;

/// One line of the trace: an element of an output resource, the rule that produced it and
/// the input it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// `Patient[0].name[1]`: the resource (by name and instance) and the element.
    pub element: String,
    /// `file:line:col` of the rule.
    pub rule: String,
    /// The input path, or `value` for a constant.
    pub input: String,
}

/// A failure while running a mapping: the rule (file and line) and the input path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    pub rule: String,
    pub input: String,
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (input {})", self.rule, self.message, self.input)
    }
}

#[derive(Debug, Clone)]
pub struct Output {
    /// The transaction Bundle of a mapping that writes FHIR (null for one writing HL7 v2).
    pub bundle: Value,
    /// The message of a mapping that writes HL7 v2 (`output: hl7v2`), segments ended by CR.
    pub message: Option<String>,
    pub trace: Vec<TraceLine>,
    /// The fields (`PID-5`) whose values went into the output (traced runs only): what the
    /// coverage report compares with the fields the message has.
    pub covered: std::collections::BTreeSet<(String, usize)>,
}

pub(crate) struct Env<'l> {
    pub datatypes: &'l [DatatypeMap],
    pub conceptmaps: &'l HashMap<String, ConceptMap>,
}

/// Instances of each resource, in the mapping's order; each is (fullUrl, scope, parent
/// instance).
type Instances<'a> = Vec<Vec<(String, Scope<'a>, Option<usize>)>>;

struct Run<'l, 'a> {
    env: &'l Env<'l>,
    resources: &'l [ResourcePlan],
    zone: Zone,
    instances: Instances<'a>,
    /// The resource being built: its index, instance and parent instance, for `ref:`.
    current: (usize, usize, Option<usize>),
    /// Whether to record the trace (the CLI and the preview do; channels do not, and
    /// then element names are not even formatted).
    tracing: bool,
    trace: Vec<TraceLine>,
    covered: std::collections::BTreeSet<(String, usize)>,
    depth: usize,
}

/// The position of a resource (named by `within:` or `ref:`, checked at compile time).
fn index_of(resources: &[ResourcePlan], name: &str) -> usize {
    resources
        .iter()
        .position(|r| r.name == name)
        .expect("resource names are checked when the mapping is compiled")
}

/// A stable `urn:uuid:` for a produced resource: the same message gives the same ids, so
/// golden files diff cleanly and a retransmission builds the same Bundle.
fn full_url(mapping: &str, identity: &[&str], name: &str, index: usize) -> String {
    let mut h = Sha256::new();
    for part in std::iter::once(&mapping).chain(identity).chain([&name]) {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(index.to_le_bytes());
    let mut b: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
    // A name-based UUID (version 8, RFC 9562 variant).
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(45);
    out.push_str("urn:uuid:");
    for (i, v) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(v >> 4)] as char);
        out.push(HEX[usize::from(v & 15)] as char);
    }
    out
}

/// What identifies an input, for its stable ids: MSH-3, -4, -7 and -10 of a message; the
/// `id` (root and extension) of a document.
fn identity<'a>(doc: Doc<'a>) -> Vec<&'a str> {
    match doc {
        Doc::Hl7(message) => {
            let msh = message.msh();
            [3, 4, 7, 10]
                .into_iter()
                .map(|n| msh.field(n).map_or("", |f| f.raw()))
                .collect()
        }
        Doc::Xml(document) => {
            let id = document
                .root_element()
                .children()
                .find(|c| c.has_tag_name("id"));
            ["root", "extension"]
                .into_iter()
                .map(|a| id.and_then(|i| i.attribute(a)).unwrap_or(""))
                .collect()
        }
        Doc::Fhir(root) => {
            let focus = crate::fhir_path::FhirInput { root }.focus();
            [
                &focus["resourceType"],
                &focus["id"],
                &focus["meta"]["versionId"],
            ]
            .into_iter()
            .map(|v| v.as_str().unwrap_or(""))
            .collect()
        }
    }
}

/// An outbound mapping's message: each segment (one per value of its `for`), in order.
fn run_segments(
    env: &Env<'_>,
    mapping: &Mapping,
    segments: &[SegmentPlan],
    doc: Doc<'_>,
    tracing: bool,
) -> Result<Output, RunError> {
    let root = Scope::of(doc);
    let mut run = Run {
        env,
        resources: &mapping.resources,
        zone: mapping.zone,
        instances: Vec::new(),
        current: (0, 0, None),
        tracing,
        trace: Vec::new(),
        covered: Default::default(),
        depth: 0,
    };
    let mut message = String::with_capacity(1024);
    for plan in segments {
        let scopes: Vec<Scope<'_>> = match &plan.for_each {
            None => vec![root],
            Some(path) => root
                .select(path)
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(|n| root.enter(n))
                .collect(),
        };
        for (i, scope) in scopes
            .into_iter()
            .filter(|s| plan.when.as_ref().is_none_or(|c| c.holds(s)))
            .enumerate()
        {
            let element = if tracing {
                format!("{}[{i}]", plan.id)
            } else {
                String::new()
            };
            let mut fields = Map::new();
            run.template(&plan.template, &scope, &mut fields, &element)?;
            crate::v2_writer::segment(&plan.id, &fields, &mut message);
        }
    }
    Ok(Output {
        bundle: Value::Null,
        message: Some(message),
        trace: run.trace,
        covered: run.covered,
    })
}

pub(crate) fn run(
    env: &Env<'_>,
    mapping: &Mapping,
    doc: Doc<'_>,
    tracing: bool,
) -> Result<Output, RunError> {
    if let Some(segments) = &mapping.segments {
        return run_segments(env, mapping, segments, doc, tracing);
    }
    let root = Scope::of(doc);
    let identity = identity(doc);
    // Which instances exist, first: a reference may point to a resource declared later.
    let mut instances: Instances<'_> = Vec::with_capacity(mapping.resources.len());
    for r in &mapping.resources {
        // Where its instances are looked for: the message, or each instance of its parent.
        let places: Vec<(Scope<'_>, Option<usize>)> = match &r.within {
            None => vec![(root, None)],
            Some(parent) => instances[index_of(&mapping.resources, parent)]
                .iter()
                .enumerate()
                .map(|(i, (_, scope, _))| (*scope, Some(i)))
                .collect(),
        };
        let mut kept = Vec::new();
        for (place, parent) in places {
            let scopes: Vec<Scope<'_>> = match &r.for_each {
                None => vec![place],
                Some(path) => place
                    .select(path)
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .map(|n| place.enter(n))
                    .collect(),
            };
            for scope in scopes {
                if r.when.as_ref().is_none_or(|c| c.holds(&scope)) {
                    let url = full_url(&mapping.id, &identity, &r.name, kept.len());
                    kept.push((url, scope, parent));
                }
            }
        }
        instances.push(kept);
    }
    let mut run = Run {
        env,
        resources: &mapping.resources,
        zone: mapping.zone,
        instances,
        current: (0, 0, None),
        tracing,
        trace: Vec::new(),
        covered: Default::default(),
        depth: 0,
    };
    let mut entries = Vec::new();
    for (ri, r) in mapping.resources.iter().enumerate() {
        let count = run.instances[ri].len();
        for i in 0..count {
            let (url, scope, parent) = {
                let (u, s, p) = &run.instances[ri][i];
                (u.clone(), *s, *p)
            };
            run.current = (ri, i, parent);
            // Element names only serve the trace: not even formatted without one.
            let element = if run.tracing {
                format!("{}[{i}]", r.name)
            } else {
                String::new()
            };
            let mut body = Map::new();
            body.insert(
                "resourceType".into(),
                Value::String(r.resource_type.clone()),
            );
            if let Some(i) = r.base
                && let DatatypeBody::Fields(t) = &run.env.datatypes[i].body
            {
                run.template(t, &scope, &mut body, &element)?;
            }
            run.template(&r.template, &scope, &mut body, &element)?;
            let body = kept(body).unwrap_or_else(|| json!({}));
            let key = run.key(&r.key, &scope, &element)?;
            let t = &r.resource_type;
            let (request, body) = match (&r.operation, key) {
                (Some(op), _) => (json!({ "method": "POST", "url": op }), body),
                (None, key) => match (key, r.on_existing) {
                    (Some(k), OnExisting::Keep) => (
                        json!({ "method": "POST", "url": t, "ifNoneExist": k }),
                        body,
                    ),
                    (Some(k), OnExisting::Patch) => (
                        json!({ "method": "PATCH", "url": ([t.as_str(), "?", &k].concat()) }),
                        json_patch_binary(&body),
                    ),
                    (Some(k), OnExisting::Replace) => (
                        json!({ "method": "PUT", "url": ([t.as_str(), "?", &k].concat()) }),
                        body,
                    ),
                    (None, _) => (json!({ "method": "POST", "url": t }), body),
                },
            };
            // Built by hand, as the Bundle: `json!` would serialise the value into a copy.
            let mut entry = Map::new();
            entry.insert("fullUrl".into(), Value::String(url));
            entry.insert("resource".into(), body);
            entry.insert("request".into(), request);
            entries.push(Value::Object(entry));
        }
    }
    Ok(Output {
        bundle: {
            let mut b = Map::new();
            b.insert("resourceType".into(), Value::String("Bundle".into()));
            b.insert("type".into(), Value::String("transaction".into()));
            b.insert("entry".into(), Value::Array(entries));
            Value::Object(b)
        },
        message: None,
        trace: run.trace,
        covered: run.covered,
    })
}

/// The elements a `patch` resource gives, as FHIR carries a JSON Patch in a transaction: a
/// Binary of the patch document. `add` on an object member sets it whether or not it is
/// there; the other elements of the stored resource are left alone.
fn json_patch_binary(body: &Value) -> Value {
    use base64::Engine;
    let ops: Vec<Value> = body
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "resourceType")
        .map(|(k, v)| json!({ "op": "add", "path": format!("/{k}"), "value": v }))
        .collect();
    let document = serde_json::to_vec(&ops).expect("JSON values always serialise");
    json!({
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64::engine::general_purpose::STANDARD.encode(document),
    })
}

/// A key value as a search value: `system|value` for an Identifier, `system|code` for a
/// Coding or a CodeableConcept (its first coding), the reference of a Reference (a
/// `urn:uuid:` of this Bundle, which the store resolves), the text otherwise.
fn token(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("reference").and_then(Value::as_str) {
                return r.to_string();
            }
            if let Some(first) = o.get("coding").and_then(|c| c.get(0)) {
                return token(first);
            }
            let value = o
                .get("value")
                .or_else(|| o.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("");
            match o.get("system").and_then(Value::as_str) {
                Some(system) => format!("{system}|{value}"),
                None => value.to_string(),
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes a search value into a request URL (the store decodes it).
fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:|/".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// Drops, in place, what FHIR does not allow: empty strings, objects and arrays, nulls.
/// Returns whether anything is left of the value.
fn prune(v: &mut Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => {
            items.retain_mut(prune);
            !items.is_empty()
        }
        Value::Object(map) => {
            map.retain(|_, v| prune(v));
            !map.is_empty()
        }
        _ => true,
    }
}

/// An object built by rules, if it has anything. Rules never produce an empty value (empty
/// input produces nothing, empty constants are dropped, nested objects are kept only when
/// not empty), so a shallow look is enough.
fn kept(obj: Map<String, Value>) -> Option<Value> {
    (!obj.is_empty()).then_some(Value::Object(obj))
}

/// Datatype maps may use one another; a map that ends up using itself stops here.
const MAX_DEPTH: usize = 16;

impl<'a> Run<'_, 'a> {
    fn template(
        &mut self,
        t: &Template,
        scope: &Scope<'a>,
        out: &mut Map<String, Value>,
        element: &str,
    ) -> Result<(), RunError> {
        for assign in &t.assigns {
            let here = if self.tracing {
                let path: Vec<&str> = assign.target.iter().map(|s| s.name.as_str()).collect();
                format!("{element}.{}", path.join("."))
            } else {
                String::new()
            };
            let append = assign.target.last().is_some_and(|s| s.append);
            let mut values = Vec::new();
            for rule in &assign.rules {
                // Elements of an array are traced with their index in it.
                let first = append.then(|| values.len() + out_len(out, &assign.target));
                let produced = self.values(rule, scope, &here, first)?;
                if !produced.is_empty() {
                    values.extend(produced);
                    if !append {
                        break;
                    }
                }
            }
            if values.is_empty() {
                continue;
            }
            place(out, &assign.target, values);
        }
        Ok(())
    }

    /// The search criteria of a resource's key (`identifier=...&patient=...`): each parameter
    /// takes the first value its rules give; with one parameter left without a value there is
    /// no key (an incomplete key could match another resource).
    fn key(
        &mut self,
        params: &[(String, Vec<Rule>)],
        scope: &Scope<'a>,
        element: &str,
    ) -> Result<Option<String>, RunError> {
        let mut criteria = Vec::with_capacity(params.len());
        let here = if self.tracing {
            format!("{element}.key")
        } else {
            String::new()
        };
        for (param, rules) in params {
            let mut found = None;
            for rule in rules {
                if let Some(v) = self.values(rule, scope, &here, None)?.first() {
                    let mut c = String::with_capacity(64);
                    c.push_str(param);
                    c.push('=');
                    encode_into(&mut c, &token(v));
                    found = Some(c);
                    break;
                }
            }
            match found {
                Some(c) => criteria.push(c),
                None => return Ok(None),
            }
        }
        Ok((!criteria.is_empty()).then(|| criteria.join("&")))
    }

    /// The values a rule produces in a scope.
    fn values(
        &mut self,
        rule: &Rule,
        scope: &Scope<'a>,
        element: &str,
        first: Option<usize>,
    ) -> Result<Vec<Value>, RunError> {
        let mut out = Vec::new();
        let tracing = self.tracing;
        let at = |n: usize| match first {
            Some(f) if tracing => format!("{element}[{}]", f + n),
            _ => element.to_string(),
        };
        match &rule.source {
            Source::Constant(c) => {
                if rule.when.as_ref().is_none_or(|w| w.holds(scope)) {
                    let v = match (&rule.produce, c) {
                        (Produce::Primitive(p), Value::String(text)) => {
                            convert(text, *p, self.zone)
                                .map_err(|m| self.error(rule, "value", m))?
                        }
                        _ => c.clone(),
                    };
                    // An empty constant produces nothing, as an absent input does: what rules
                    // produce is never empty, so objects built of them need no deep pruning.
                    let mut v = v;
                    if prune(&mut v) {
                        self.traced(&at(0), rule, "value");
                        out.push(v);
                    }
                }
            }
            Source::Concat(parts) => {
                if rule.when.as_ref().is_none_or(|w| w.holds(scope)) {
                    let mut text = String::new();
                    for part in parts {
                        if let Some(v) = self.values(part, scope, element, None)?.first() {
                            match v {
                                Value::String(s) => text.push_str(s),
                                other => text.push_str(&other.to_string()),
                            }
                        }
                    }
                    // `fn` applies to the whole text (a digest of several parts).
                    if let Some(f) = &rule.func
                        && !text.is_empty()
                    {
                        text = f.apply_text(&text);
                    }
                    if !text.is_empty() {
                        let p = match rule.produce {
                            Produce::Primitive(p) => p,
                            _ => crate::convert::Primitive::String,
                        };
                        if let Some(v) =
                            typed(&text, p, self.zone).map_err(|m| self.error(rule, "concat", m))?
                        {
                            self.traced(&at(0), rule, "concat");
                            out.push(v);
                        }
                    }
                }
            }
            Source::Here => {
                if rule.when.as_ref().is_none_or(|w| w.holds(scope)) {
                    out.extend(self.produce(rule, scope, &at(0), "(this value)")?);
                }
            }
            Source::Path(path) if rule.join.is_some() => {
                if rule.when.as_ref().is_some_and(|w| !w.holds(scope)) {
                    return Ok(out);
                }
                out.extend(self.joined(rule, path, scope, &at(0))?);
            }
            Source::Path(path) => {
                if rule.when.as_ref().is_some_and(|w| !w.holds(scope)) {
                    return Ok(out);
                }
                for (segment, node) in scope.select_in_segments(path) {
                    if node.is_empty() {
                        continue;
                    }
                    if rule
                        .filter
                        .as_ref()
                        .is_some_and(|w| !w.holds(&scope.filter_scope(segment, node)))
                    {
                        continue;
                    }
                    let inner = scope.enter(node);
                    let here = at(out.len());
                    let produced = self.produce(rule, &inner, &here, &path.text)?;
                    if self.tracing
                        && !produced.is_empty()
                        && let (Some((seg, _)), Some((field, _))) = (&path.segment, path.field)
                    {
                        self.covered.insert((seg.clone(), field));
                    }
                    out.extend(produced);
                }
            }
        }
        Ok(out)
    }

    /// A `join:` rule: the texts of the values selected (and kept by `where`), joined, then
    /// through `fn` and `as`.
    fn joined(
        &mut self,
        rule: &Rule,
        path: &InputPath,
        scope: &Scope<'a>,
        element: &str,
    ) -> Result<Option<Value>, RunError> {
        let separator = rule.join.as_deref().unwrap_or_default();
        let mut parts = Vec::new();
        for (segment, node) in scope.select_in_segments(path) {
            if node.is_empty()
                || rule
                    .filter
                    .as_ref()
                    .is_some_and(|w| !w.holds(&scope.filter_scope(segment, node)))
            {
                continue;
            }
            parts.push(node.text());
        }
        if parts.is_empty() {
            return Ok(None);
        }
        let mut text = parts.join(separator);
        if let Some(f) = &rule.func {
            text = f.apply_text(&text);
        }
        let p = match rule.produce {
            Produce::Primitive(p) => p,
            _ => crate::convert::Primitive::String,
        };
        let Some(v) = typed(&text, p, self.zone).map_err(|m| self.error(rule, &path.text, m))?
        else {
            return Ok(None);
        };
        if self.tracing
            && let (Some((seg, _)), Some((field, _))) = (&path.segment, path.field)
        {
            self.covered.insert((seg.clone(), field));
        }
        self.traced(element, rule, &path.text);
        Ok(Some(v))
    }

    fn produce(
        &mut self,
        rule: &Rule,
        scope: &Scope<'a>,
        element: &str,
        input: &str,
    ) -> Result<Vec<Value>, RunError> {
        match &rule.produce {
            Produce::Primitive(p) => {
                let Some(text) = self.text(rule, scope, input)? else {
                    return Ok(vec![]);
                };
                let Some(mut v) =
                    typed(&text, *p, self.zone).map_err(|m| self.error(rule, input, m))?
                else {
                    return Ok(vec![]);
                };
                if let (Some(minutes), Value::String(at)) = (&rule.plus_minutes, &v) {
                    let Some(n) = minutes_at(scope, minutes) else {
                        return Ok(vec![]);
                    };
                    let later = crate::convert::add_minutes(at, n)
                        .map_err(|m| self.error(rule, input, m))?;
                    v = Value::String(later);
                }
                self.traced(element, rule, input);
                Ok(vec![v])
            }
            Produce::Constant => Ok(vec![]),
            Produce::Fields(t) => {
                let mut obj = Map::new();
                self.template(t, scope, &mut obj, element)?;
                Ok(kept(obj).into_iter().collect())
            }
            Produce::Datatype(i) => {
                if self.depth >= MAX_DEPTH {
                    return Err(self.error(
                        rule,
                        input,
                        "datatype maps nest too deep (a map uses itself?)".into(),
                    ));
                }
                let map = &self.env.datatypes[*i];
                self.depth += 1;
                let result = match &map.body {
                    DatatypeBody::Fields(t) => {
                        let mut obj = Map::new();
                        self.template(t, scope, &mut obj, element)
                            .map(|_| kept(obj).into_iter().collect())
                    }
                    DatatypeBody::Value(rules) => {
                        let mut found = Ok(vec![]);
                        for r in rules {
                            match self.values(r, scope, element, None) {
                                Ok(v) if v.is_empty() => continue,
                                Ok(v) => {
                                    found = Ok(v.into_iter().take(1).collect());
                                    break;
                                }
                                Err(e) => {
                                    found = Err(e);
                                    break;
                                }
                            }
                        }
                        found
                    }
                };
                self.depth -= 1;
                result
            }
            Produce::UrlOf(name) => {
                let urls = self.refs(name);
                if !urls.is_empty() {
                    self.traced(element, rule, &format!("url of {name}"));
                }
                Ok(urls.into_iter().map(Value::String).collect())
            }
            Produce::Ref(name) => {
                let urls = self.refs(name);
                if !urls.is_empty() {
                    let input = format!("ref {name}");
                    self.traced(element, rule, &input);
                }
                Ok(urls
                    .into_iter()
                    .map(|u| {
                        let mut r = Map::new();
                        r.insert("reference".into(), Value::String(u));
                        Value::Object(r)
                    })
                    .collect())
            }
        }
    }

    /// The fullUrls `ref: name` points to from the resource being built: its parent when
    /// `name` is the resource it is made within, its children when `name` is made within it,
    /// the same instance when both loop over the same path, else every instance.
    fn refs(&self, name: &str) -> Vec<String> {
        let them = index_of(self.resources, name);
        let list = &self.instances[them];
        let (me, index, parent) = self.current;
        let (mine, theirs) = (&self.resources[me], &self.resources[them]);
        let pick = |keep: &dyn Fn(usize, Option<usize>) -> bool| -> Vec<String> {
            list.iter()
                .enumerate()
                .filter(|(i, (_, _, p))| keep(*i, *p))
                .map(|(_, (u, _, _))| u.clone())
                .collect()
        };
        if mine.within.as_deref() == Some(name) {
            pick(&|i, _| Some(i) == parent)
        } else if theirs.within.as_deref() == Some(mine.name.as_str()) {
            pick(&|_, p| p == Some(index))
        } else if theirs.for_each.is_some()
            && theirs.for_each.as_ref().map(|p| &p.text) == mine.for_each.as_ref().map(|p| &p.text)
            && theirs.within == mine.within
        {
            pick(&|i, _| i == index)
        } else {
            pick(&|_, _| true)
        }
    }

    /// The text of the value in hand, through the rule's function and lookup; None when
    /// there is nothing to produce.
    fn text(
        &self,
        rule: &Rule,
        scope: &Scope<'a>,
        input: &str,
    ) -> Result<Option<String>, RunError> {
        let Some(node) = scope.node else {
            return Ok(None);
        };
        let mut text = match &rule.func {
            Some(f) => f.apply(&node),
            None => node.text().into_owned(),
        };
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(lookup) = &rule.lookup {
            let map = &self.env.conceptmaps[&lookup.map];
            let found = map.lookup(&text).and_then(|t| match lookup.take {
                Take::Code => Some(t.code.clone()),
                Take::Display => t.display.clone(),
                Take::System => t.system.clone(),
            });
            match found {
                Some(t) => text = t,
                None => match &lookup.unmapped {
                    Unmapped::Keep => {}
                    Unmapped::Drop => return Ok(None),
                    Unmapped::Default(d) => text = d.clone(),
                    Unmapped::Error => {
                        return Err(self.error(
                            rule,
                            input,
                            format!("code `{text}` is not in ConceptMap `{}`", lookup.map),
                        ));
                    }
                },
            }
        }
        Ok(Some(text))
    }

    fn traced(&mut self, element: &str, rule: &Rule, input: &str) {
        if !self.tracing {
            return;
        }
        self.trace.push(TraceLine {
            element: element.to_string(),
            rule: rule.pos.to_string(),
            input: input.to_string(),
        });
    }

    fn error(&self, rule: &Rule, input: &str, message: String) -> RunError {
        RunError {
            rule: rule.pos.to_string(),
            input: input.to_string(),
            message,
        }
    }
}

/// A whole number of minutes at a path (`plus_minutes`); None when absent or not a number.
fn minutes_at(scope: &Scope<'_>, path: &InputPath) -> Option<i64> {
    let text = scope.select(path).first()?.text().into_owned();
    text.trim().parse().ok()
}

/// How many elements the array at a target path has already.
fn out_len(out: &Map<String, Value>, target: &[Step]) -> usize {
    let mut v = out;
    let Some((last, parents)) = target.split_last() else {
        return 0;
    };
    for step in parents {
        match v.get(&step.name).and_then(Value::as_object) {
            Some(o) => v = o,
            None => return 0,
        }
    }
    v.get(&last.name)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// Puts values at a target path of an object, creating the objects on the way: all of them
/// appended for `name[]`, else the first (two rules may fill parts of one object, as
/// `code.coding[]` and `code.text` do).
fn place(out: &mut Map<String, Value>, target: &[Step], values: Vec<Value>) {
    let Some((last, parents)) = target.split_last() else {
        return;
    };
    let mut obj = out;
    for step in parents {
        let v = obj
            .entry(step.name.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        obj = v.as_object_mut().expect("made an object");
    }
    if last.append {
        let list = obj
            .entry(last.name.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.extend(values);
        }
        return;
    }
    let Some(first) = values.into_iter().next() else {
        return;
    };
    match (obj.get_mut(&last.name), first) {
        (Some(Value::Object(existing)), Value::Object(more)) => existing.extend(more),
        (_, v) => {
            obj.insert(last.name.clone(), v);
        }
    }
}
