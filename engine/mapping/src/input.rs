//! Paths into an HL7 v2 message, and the values they select.
//!
//! Absolute paths name a segment: `PID-5`, `PID-3[*]`, `OBX[*]-5.1`, `PID-11[2].4`, or only
//! segments (`OBR[*]`, `NK1[2]`: for loops over segment groups).
//! Relative paths start with a dot and go down from the value in hand: in a map applied to
//! `PID-3[*]` (a CX), `.4` is its fourth component; in a map applied to a component (CX.4, an
//! HD), `.2` is the second subcomponent. That is how datatype maps nest.
//!
//! Inside a loop over segments (`for: OBR[*]`) a path naming a segment that occurs in the
//! loop's group (the looped segment and those after it up to the next one of its kind) is
//! read in that group: `OBX[*]-5` under `for: OBR[*]` gives the results of that order only.
//! A segment not in the group is the nearest one before it (`PID`, the order's `ORC`).
//!
//! The input may also be an XML document (a CDA): its paths are the XPath subset of
//! [`crate::xml`], told apart by their look (`/ClinicalDocument/...`, `id/@root`, `@code`).
//! Or a FHIR resource (outbound mappings): its paths are the FHIRPath subset of
//! [`crate::fhir_path`], which look like XML ones, so the mapping says which it reads
//! ([`Syntax`]).

use std::borrow::Cow;

use passerelle_hl7v2::{Component, Field, Message, Repetition, Segment, Subcomponent};

use crate::fhir_path::{FhirInput, FhirPath};
use crate::xml::{XmlNode, XmlPath};

/// Which kind of input a path is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Hl7,
    Xml,
    Fhir,
}

/// Which repetitions (or segment occurrences) a step selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Nth(usize),
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPath {
    /// The text as written, for traces and errors.
    pub text: String,
    /// Set for a path into an XML document; the HL7 v2 parts below are then empty.
    pub xml: Option<XmlPath>,
    /// Set for a path into FHIR JSON; the HL7 v2 parts below are then empty.
    pub fhir: Option<Box<FhirPath>>,
    /// None for a relative path.
    pub segment: Option<(String, Pick)>,
    /// Field number and repetitions (absolute paths only).
    pub field: Option<(usize, Pick)>,
    /// Components, then subcomponents, going down.
    pub down: Vec<usize>,
    /// Read only in the current segment group, never looked up before it (`in_group: true`):
    /// the NTE notes of this OBX, not of an earlier one.
    pub in_group: bool,
}

impl InputPath {
    /// Whether the path can select more than one value.
    pub fn is_multi(&self) -> bool {
        matches!(self.segment, Some((_, Pick::All))) || matches!(self.field, Some((_, Pick::All)))
    }

    /// The syntax of a path, when the input kind is known: FHIR paths cannot be told from
    /// XML ones by their look.
    pub fn parse_as(text: &str, syntax: Option<Syntax>) -> Result<InputPath, String> {
        if syntax != Some(Syntax::Fhir) {
            return Self::parse(text);
        }
        let t = text.trim();
        Ok(InputPath {
            text: t.to_string(),
            xml: None,
            fhir: Some(Box::new(FhirPath::parse(t)?)),
            segment: None,
            field: None,
            down: Vec::new(),
            in_group: false,
        })
    }

    /// Which kind of input the path reads.
    pub fn syntax(&self) -> Syntax {
        if self.xml.is_some() {
            Syntax::Xml
        } else if self.fhir.is_some() {
            Syntax::Fhir
        } else {
            Syntax::Hl7
        }
    }

    /// An HL7 v2 or XML path, told apart by its look.
    pub fn parse(text: &str) -> Result<InputPath, String> {
        let t = text.trim();
        if XmlPath::looks_like(t) {
            return Ok(InputPath {
                text: t.to_string(),
                xml: Some(XmlPath::parse(t)?),
                fhir: None,
                segment: None,
                field: None,
                down: Vec::new(),
                in_group: false,
            });
        }
        let bytes = t.as_bytes();
        let mut pos = 0;
        let number = |pos: &mut usize, what: &str| -> Result<usize, String> {
            let start = *pos;
            while *pos < bytes.len() && bytes[*pos].is_ascii_digit() {
                *pos += 1;
            }
            match t[start..*pos].parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "expected a {what} number (from 1) at `{}`",
                    &t[start..]
                )),
            }
        };
        let pick = |pos: &mut usize, what: &str| -> Result<Pick, String> {
            if bytes.get(*pos) != Some(&b'[') {
                return Ok(Pick::Nth(1));
            }
            *pos += 1;
            let p = if bytes.get(*pos) == Some(&b'*') {
                *pos += 1;
                Pick::All
            } else {
                Pick::Nth(number(pos, what)?)
            };
            if bytes.get(*pos) != Some(&b']') {
                return Err(format!("`]` expected in `{t}`"));
            }
            *pos += 1;
            Ok(p)
        };
        let mut path = InputPath {
            text: t.to_string(),
            xml: None,
            fhir: None,
            segment: None,
            field: None,
            down: Vec::new(),
            in_group: false,
        };
        if !t.starts_with('.') {
            let id = t.get(..3).unwrap_or(t);
            if id.len() != 3
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                return Err(format!(
                    "`{t}` is not a path: it starts with a segment id (PID-5, OBX[*]-5) or a \
                     dot for a part of the value in hand (.1, .4.2)"
                ));
            }
            pos = 3;
            let occurrence = pick(&mut pos, "segment occurrence")?;
            path.segment = Some((id.to_string(), occurrence));
            // A segment alone (`OBX[*]`): the segments themselves, for loops over groups.
            if pos == bytes.len() && t.len() > 3 {
                return Ok(path);
            }
            if bytes.get(pos) != Some(&b'-') {
                return Err(format!(
                    "`{t}`: a field number is expected after the segment (e.g. {id}-3)"
                ));
            }
            pos += 1;
            let field = number(&mut pos, "field")?;
            let reps = pick(&mut pos, "repetition")?;
            path.field = Some((field, reps));
        }
        while pos < bytes.len() {
            if bytes[pos] != b'.' {
                return Err(format!("unexpected `{}` in `{t}`", &t[pos..]));
            }
            pos += 1;
            path.down.push(number(&mut pos, "component")?);
        }
        let deepest = if path.segment.is_some() { 2 } else { 3 };
        if path.down.len() > deepest || (path.segment.is_none() && path.down.is_empty()) {
            return Err(format!(
                "`{t}` goes deeper than subcomponents or selects nothing"
            ));
        }
        Ok(path)
    }
}

/// A value selected in a message: a segment, or a part of a field.
#[derive(Debug, Clone, Copy)]
pub enum Node<'m> {
    Segment(Segment<'m>),
    Field(Field<'m>),
    Repetition(Repetition<'m>),
    Component(Component<'m>),
    Subcomponent(Subcomponent<'m>),
    /// An element or attribute of an XML document.
    Xml(XmlNode<'m>),
    /// A value of a FHIR resource.
    Json(&'m serde_json::Value),
}

impl<'m> Node<'m> {
    /// The n-th part one level down: a field of a segment, a component of a field or
    /// repetition, a subcomponent of a component.
    pub fn child(&self, n: usize) -> Option<Node<'m>> {
        match self {
            Node::Segment(s) => s.field(n).map(Node::Field),
            Node::Field(f) => f.component(n).map(Node::Component),
            Node::Repetition(r) => r.component(n).map(Node::Component),
            Node::Component(c) => c.subcomponent(n).map(Node::Subcomponent),
            Node::Subcomponent(s) => (n == 1).then_some(Node::Subcomponent(*s)),
            Node::Xml(_) | Node::Json(_) => None,
        }
    }

    /// The value as a primitive: a composite read as text is its first part (HL7's rule for
    /// reading a composite where a primitive is expected). Empty when absent.
    pub fn text(&self) -> Cow<'m, str> {
        match self {
            Node::Segment(s) => Cow::Borrowed(s.id()),
            Node::Field(f) => match f.repetition(1).and_then(|r| r.component(1)) {
                Some(c) => Node::Component(c).text(),
                None => Cow::Borrowed(""),
            },
            Node::Repetition(r) => match r.component(1) {
                Some(c) => Node::Component(c).text(),
                None => Cow::Borrowed(""),
            },
            Node::Component(c) => match c.subcomponent(1) {
                Some(s) => s.value(),
                None => Cow::Borrowed(""),
            },
            Node::Subcomponent(s) => s.value(),
            Node::Xml(x) => x.text(),
            Node::Json(v) => crate::fhir_path::text(v),
        }
    }

    /// The whole value with its separators, for values read as text that must keep them
    /// (an ED payload, a formatted text).
    pub fn raw(&self) -> &'m str {
        match self {
            Node::Segment(s) => s.raw(),
            Node::Field(f) => f.raw(),
            Node::Repetition(r) => r.raw(),
            Node::Component(c) => c.raw(),
            Node::Subcomponent(s) => s.raw(),
            Node::Xml(x) => x.raw(),
            Node::Json(v) => v.as_str().unwrap_or_default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Node::Segment(_) => false,
            Node::Xml(x) => x.is_empty(),
            Node::Json(v) => crate::fhir_path::is_empty(v),
            _ => self.raw().is_empty(),
        }
    }
}

/// What a mapping reads.
#[derive(Clone, Copy)]
pub enum Doc<'a> {
    Hl7(&'a Message<'a>),
    Xml(&'a roxmltree::Document<'a>),
    /// A FHIR resource, or a change notification ([`crate::fhir_path`]).
    Fhir(&'a serde_json::Value),
}

/// Where a rule is evaluated: the message, the segment group of the enclosing loop, and the
/// value in hand.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub doc: Doc<'a>,
    /// Segment positions `[start, end)` of the current group; the whole message outside loops.
    pub group: (usize, usize),
    pub node: Option<Node<'a>>,
}

impl<'a> Scope<'a> {
    pub fn message(message: &'a Message<'a>) -> Self {
        Self::of(Doc::Hl7(message))
    }

    pub fn of(doc: Doc<'a>) -> Self {
        let all = match doc {
            Doc::Hl7(m) => (0, m.segment_count()),
            Doc::Xml(_) | Doc::Fhir(_) => (0, 0),
        };
        Scope {
            doc,
            group: all,
            node: None,
        }
    }

    pub fn with_node(self, node: Node<'a>) -> Self {
        Scope {
            node: Some(node),
            ..self
        }
    }

    /// Every value the path selects, in order; absent parts select nothing, empty ones are
    /// kept (a condition may test them) and dropped by the caller when producing output.
    pub fn select(&self, path: &InputPath) -> Vec<Node<'a>> {
        let mut out = Vec::new();
        self.walk(path, |_, n| out.push(n));
        out
    }

    /// Whether one of the values the path selects passes the test (conditions), without
    /// collecting them.
    pub fn any(&self, path: &InputPath, test: impl Fn(&str) -> bool) -> bool {
        let mut found = false;
        self.walk(path, |_, n| {
            if !found && test(&n.text()) {
                found = true;
            }
        });
        found
    }

    /// Whether the path selects a value: a non-empty text, or for an XML element, an element
    /// with content or attributes (`when: "componentOf/encompassingEncounter"`).
    pub fn has_value(&self, path: &InputPath) -> bool {
        let mut found = false;
        self.walk(path, |_, n| {
            found = found
                || match n {
                    Node::Xml(XmlNode::Element(_)) | Node::Json(_) => !n.is_empty(),
                    _ => !n.text().is_empty(),
                };
        });
        found
    }

    /// [`Scope::select`], with the segment each value was read in (none for a path relative
    /// to the value in hand).
    pub fn select_in_segments(&self, path: &InputPath) -> Vec<(Option<Segment<'a>>, Node<'a>)> {
        let mut out = Vec::new();
        self.walk(path, |s, n| out.push((s, n)));
        out
    }

    /// Calls `each` with every value the path selects (and the segment it was read in), in
    /// order, without collecting: paths are read many times per message.
    fn walk(&self, path: &InputPath, mut each: impl FnMut(Option<Segment<'a>>, Node<'a>)) {
        if let Some(xml) = &path.xml {
            let Doc::Xml(document) = self.doc else { return };
            let from = match self.node {
                Some(Node::Xml(XmlNode::Element(n))) => Some(n),
                // Below an attribute's value there is nothing.
                Some(Node::Xml(XmlNode::Attribute(_))) if !xml.absolute => return,
                _ => None,
            };
            xml.walk(document, from, &mut |n| each(None, Node::Xml(n)));
            return;
        }
        if let Some(fhir) = &path.fhir {
            let Doc::Fhir(root) = self.doc else { return };
            let here = match self.node {
                Some(Node::Json(v)) => Some(v),
                _ => None,
            };
            fhir.walk(FhirInput { root }, here, &mut |v| each(None, Node::Json(v)));
            return;
        }
        let mut from = |start: Node<'a>, segment: Option<Segment<'a>>| match path.field {
            None => descend(start, &path.down, segment, &mut each),
            Some((field, reps)) => {
                let Some(f) = start.child(field) else {
                    return;
                };
                match (f, reps) {
                    (Node::Field(f), Pick::All) => {
                        for r in f.repetitions() {
                            descend(Node::Repetition(r), &path.down, segment, &mut each);
                        }
                    }
                    (Node::Field(f), Pick::Nth(n)) => {
                        if let Some(r) = f.repetition(n) {
                            descend(Node::Repetition(r), &path.down, segment, &mut each);
                        }
                    }
                    (other, _) => descend(other, &path.down, segment, &mut each),
                }
            }
        };
        match &path.segment {
            None => {
                if let Some(n) = self.node {
                    from(n, None);
                }
            }
            Some((id, occurrence)) => {
                let mut i = 0;
                self.each_segment(id, path.in_group, |s| {
                    i += 1;
                    if matches!(occurrence, Pick::All) || *occurrence == Pick::Nth(i) {
                        from(Node::Segment(s), Some(s));
                    }
                });
            }
        }
    }

    /// The scope a `where` tests a selected value in: relative paths start from the value,
    /// and absolute ones read the group of the segment it came from (`OBX-2` is the type of
    /// the OBX whose `OBX[*]-5` is in hand).
    pub fn filter_scope(&self, segment: Option<Segment<'a>>, node: Node<'a>) -> Scope<'a> {
        match (segment, node) {
            (
                Some(s),
                Node::Field(_) | Node::Repetition(_) | Node::Component(_) | Node::Subcomponent(_),
            ) => self.enter(Node::Segment(s)).with_node(node),
            _ => self.enter(node),
        }
    }

    /// The segments named `id` in the group when it has any; else the nearest one before
    /// the group (looking up, never sideways): inside an OBX, `OBR-3` is its order's and
    /// `PID-3` the patient's, but `NTE[*]` only the notes of this OBX.
    fn each_segment(&self, id: &str, in_group: bool, mut each: impl FnMut(Segment<'a>)) {
        let Doc::Hl7(message) = self.doc else { return };
        let (start, end) = self.group;
        let mut found = false;
        for s in message
            .segments()
            .skip(start)
            .take(end.saturating_sub(start))
        {
            if s.id() == id {
                found = true;
                each(s);
            }
        }
        if found || in_group {
            return;
        }
        if let Some(s) = message
            .segments()
            .take(start)
            .filter(|s| s.id() == id)
            .last()
        {
            each(s);
        }
    }

    /// The scope of a selected value: a segment brings its group, nested in this one.
    pub fn enter(&self, node: Node<'a>) -> Scope<'a> {
        match node {
            Node::Segment(s) => Scope {
                doc: self.doc,
                group: self.group_of(&s),
                node: Some(node),
            },
            other => self.with_node(other),
        }
    }

    /// The group a looped segment heads: it and the segments after it, up to the next segment
    /// with its id or the end of the current group.
    pub fn group_of(&self, segment: &Segment<'a>) -> (usize, usize) {
        let Doc::Hl7(message) = self.doc else {
            return self.group;
        };
        // `position` counts from 1; groups are indexes from 0.
        let start = segment.position() - 1;
        let limit = if (self.group.0..self.group.1).contains(&start) {
            self.group.1
        } else {
            message.segment_count()
        };
        let end = message
            .segments()
            .skip(start + 1)
            .take(limit.saturating_sub(start + 1))
            .find(|s| s.id() == segment.id())
            .map_or(limit, |s| s.position() - 1);
        (start, end.max(start + 1))
    }
}

/// Goes down the component (and subcomponent) numbers of a path from a value.
fn descend<'m>(
    node: Node<'m>,
    down: &[usize],
    segment: Option<Segment<'m>>,
    each: &mut impl FnMut(Option<Segment<'m>>, Node<'m>),
) {
    match down.split_first() {
        None => each(segment, node),
        Some((&n, rest)) => {
            if let Some(child) = node.child(n) {
                descend(child, rest, segment, each);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = InputPath::parse("PID-3[*].4.2").unwrap();
        assert_eq!(p.segment, Some(("PID".into(), Pick::Nth(1))));
        assert_eq!(p.field, Some((3, Pick::All)));
        assert_eq!(p.down, vec![4, 2]);
        assert!(p.is_multi());
        let r = InputPath::parse(".4.2").unwrap();
        assert!(r.segment.is_none() && r.down == vec![4, 2] && !r.is_multi());
        assert!(InputPath::parse("OBX[*]-5").unwrap().is_multi());
        let seg = InputPath::parse("OBX[*]").unwrap();
        assert!(seg.field.is_none() && seg.is_multi());
        for bad in [
            "PID",
            "pid-3",
            "PID-0",
            "PID-3.1.2.3",
            "PID-3[x]",
            "PID-3 4",
        ] {
            assert!(InputPath::parse(bad).is_err(), "{bad}");
        }
        // XML paths (a CDA's) are told apart by their look.
        for xml in [
            ".",
            "/ClinicalDocument/id/@root",
            "id[@root='1.2']/@extension",
            "@code",
        ] {
            assert!(InputPath::parse(xml).unwrap().xml.is_some(), "{xml}");
        }
    }
}
