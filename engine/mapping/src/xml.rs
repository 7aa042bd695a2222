//! Paths into an XML document (a CDA): the XPath subset mappings need, compiled once.
//!
//! ```text
//! /ClinicalDocument/recordTarget/patientRole/id     absolute, from the document
//! //section[code/@code='30954-2']/entry             `//`: at any depth
//! id[@root='1.2.250.1.213.1.4.8']/@extension         relative to the value in hand
//! author[1]/assignedAuthor/assignedPerson/name/given  `[n]`: the n-th (from 1)
//! ./code/@code   .   ..   text()   *                 self, parent, text, any element
//! sdtc:raceCode   @xsi:type                          prefixed names
//! ```
//!
//! Element names without a prefix are in the CDA namespace (`urn:hl7-org:v3`), and match
//! elements of no namespace too (documents that forget it); `sdtc:`, `xsi:`, `pharm:` and
//! `lab:` name the usual extension namespaces, so `raceCode` and `sdtc:raceCode` never collide.
//! Attributes without a prefix have no namespace. Predicates are `[n]`, `[path]` (the path has
//! a value) and `[path='text']`, and may follow one another.
//!
//! A relative path read where no value is in hand starts from the document's root element.

use std::borrow::Cow;

use roxmltree::{Document, Node};

const CDA: &str = "urn:hl7-org:v3";

fn namespace_of(prefix: &str) -> Option<&'static str> {
    Some(match prefix {
        "sdtc" => "urn:hl7-org:sdtc",
        "xsi" => "http://www.w3.org/2001/XMLSchema-instance",
        "pharm" => "urn:ihe:pharm:medication",
        "lab" => "urn:oid:1.3.6.1.4.1.19376.1.3.2",
        "hl7" | "cda" | "v3" => CDA,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// None: no namespace (attributes without a prefix).
    pub namespace: Option<&'static str>,
    pub local: String,
}

impl Name {
    fn parse(text: &str, element: bool) -> Result<Name, String> {
        let (namespace, local) = match text.split_once(':') {
            Some((prefix, local)) => (
                Some(namespace_of(prefix).ok_or_else(|| {
                    format!("unknown prefix `{prefix}:` (known: sdtc, xsi, pharm, lab)")
                })?),
                local,
            ),
            None => (element.then_some(CDA), text),
        };
        let ok = local
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            return Err(format!("`{text}` is not an XML name"));
        }
        Ok(Name {
            namespace,
            local: local.to_string(),
        })
    }

    fn matches_element(&self, node: &Node<'_, '_>) -> bool {
        let tag = node.tag_name();
        tag.name() == self.local
            && match tag.namespace() {
                Some(ns) => Some(ns) == self.namespace,
                None => self.namespace == Some(CDA),
            }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axis {
    Child,
    Descendant,
    Parent,
    Itself,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    Index(usize),
    Valued(XmlPath),
    Equals(XmlPath, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub axis: Axis,
    /// None: any element (`*`), or the node itself for `.` and `..`.
    pub name: Option<Name>,
    pub predicates: Vec<Predicate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlPath {
    pub absolute: bool,
    pub steps: Vec<Step>,
    /// A final `@name`: the attribute's value.
    pub attribute: Option<Name>,
}

/// A value selected in a document: an element, or an attribute's value.
#[derive(Debug, Clone, Copy)]
pub enum XmlNode<'a> {
    Element(Node<'a, 'a>),
    Attribute(&'a str),
}

impl<'a> XmlNode<'a> {
    /// An attribute's value; an element's text (its text and its descendants', trimmed).
    pub fn text(&self) -> Cow<'a, str> {
        match self {
            XmlNode::Attribute(v) => Cow::Borrowed(v),
            XmlNode::Element(n) => {
                let mut texts = n
                    .descendants()
                    .filter(|d| d.is_text())
                    .filter_map(|d| d.text());
                match (texts.next(), texts.next()) {
                    (None, _) => Cow::Borrowed(""),
                    (Some(one), None) => Cow::Borrowed(one.trim()),
                    (Some(a), Some(b)) => {
                        let mut all = String::from(a);
                        all.push_str(b);
                        texts.for_each(|t| all.push_str(t));
                        Cow::Owned(all.trim().to_string())
                    }
                }
            }
        }
    }

    /// The markup as received: an element with its content (the whole document for the
    /// root), an attribute's value.
    pub fn raw(&self) -> &'a str {
        match self {
            XmlNode::Attribute(v) => v,
            XmlNode::Element(n) => {
                let text = n.document().input_text();
                if n.is_root() {
                    text
                } else {
                    text.get(n.range()).unwrap_or_default()
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            XmlNode::Attribute(v) => v.trim().is_empty(),
            XmlNode::Element(n) => !n.is_root() && !n.has_children() && n.attributes().len() == 0,
        }
    }
}

impl XmlPath {
    /// Whether a text is written as an XML path rather than an HL7 v2 one.
    pub fn looks_like(text: &str) -> bool {
        let t = text.trim();
        // `pid-3`, `obx[*]-5`: an HL7 v2 path with a typo, to be reported as one.
        let b = t.as_bytes();
        let hl7ish = b.len() > 4
            && b[..3].iter().all(u8::is_ascii_alphanumeric)
            && ((b[3] == b'-' && b[4].is_ascii_digit()) || b[3] == b'[');
        if hl7ish && !t.contains('/') {
            return false;
        }
        t.starts_with('/')
            || t.starts_with('@')
            || t == "."
            || t.starts_with("./")
            || t.starts_with("..")
            || t.starts_with('*')
            || t.starts_with("text()")
            || t.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            || t.contains('/')
    }

    pub fn parse(text: &str) -> Result<XmlPath, String> {
        let t = text.trim();
        let mut rest = t;
        let absolute = rest.starts_with('/');
        let mut steps = Vec::new();
        let mut attribute = None;
        let mut axis = Axis::Child;
        if let Some(r) = rest.strip_prefix("//") {
            axis = Axis::Descendant;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('/') {
            rest = r;
        }
        loop {
            if rest.is_empty() {
                if steps.is_empty() && !absolute {
                    return Err(format!("`{t}`: an empty step"));
                }
                break;
            }
            let (step, after) = split_step(rest).map_err(|e| format!("`{t}`: {e}"))?;
            if let Some(a) = step.strip_prefix('@') {
                if !after.is_empty() {
                    return Err(format!("`{t}`: an attribute ends a path"));
                }
                attribute = Some(Name::parse(a, false).map_err(|e| format!("`{t}`: {e}"))?);
                break;
            }
            let (head, predicates) = match step.find('[') {
                Some(i) => (
                    &step[..i],
                    parse_predicates(&step[i..]).map_err(|e| format!("`{t}`: {e}"))?,
                ),
                None => (step, Vec::new()),
            };
            let (step_axis, name) = match head {
                "." => (Axis::Itself, None),
                ".." => (Axis::Parent, None),
                "*" => (axis.clone(), None),
                "text()" => (Axis::Itself, None),
                n => (
                    axis.clone(),
                    Some(Name::parse(n, true).map_err(|e| format!("`{t}`: {e}"))?),
                ),
            };
            steps.push(Step {
                axis: step_axis,
                name,
                predicates,
            });
            axis = Axis::Child;
            rest = after;
            if let Some(r) = rest.strip_prefix("//") {
                axis = Axis::Descendant;
                rest = r;
                if rest.is_empty() {
                    return Err(format!("`{t}`: a step is expected after `//`"));
                }
            } else if let Some(r) = rest.strip_prefix('/') {
                rest = r;
                if rest.is_empty() {
                    return Err(format!("`{t}`: a step is expected after `/`"));
                }
            }
        }
        Ok(XmlPath {
            absolute,
            steps,
            attribute,
        })
    }

    /// Calls `each` with every value the path selects from `from` (the value in hand) or,
    /// for an absolute path or none in hand, from the document.
    pub fn walk<'a>(
        &self,
        document: &'a Document<'a>,
        from: Option<Node<'a, 'a>>,
        // `dyn`: predicates walk paths of their own, which a generic would nest without end.
        each: &mut dyn FnMut(XmlNode<'a>),
    ) {
        let start = match (self.absolute, from) {
            (true, _) => document.root(),
            (false, Some(n)) => n,
            (false, None) => document.root_element(),
        };
        let mut current = vec![start];
        for step in &self.steps {
            let mut next = Vec::new();
            for node in &current {
                let mut found: Vec<Node<'a, 'a>> = match step.axis {
                    Axis::Itself => vec![*node],
                    Axis::Parent => node.parent_element().into_iter().collect(),
                    Axis::Child => node.children().filter(|c| c.is_element()).collect(),
                    Axis::Descendant => node
                        .descendants()
                        .skip(1)
                        .filter(|c| c.is_element())
                        .collect(),
                };
                if let Some(name) = &step.name {
                    found.retain(|n| name.matches_element(n));
                }
                for p in &step.predicates {
                    found = match p {
                        Predicate::Index(i) => found.get(i - 1).copied().into_iter().collect(),
                        Predicate::Valued(path) => found
                            .into_iter()
                            .filter(|n| path.exists(document, *n))
                            .collect(),
                        Predicate::Equals(path, value) => found
                            .into_iter()
                            .filter(|n| path.any(document, *n, |v| v == value))
                            .collect(),
                    };
                }
                next.extend(found);
            }
            current = next;
        }
        for node in current {
            match &self.attribute {
                None => each(XmlNode::Element(node)),
                Some(name) => {
                    let value = node
                        .attributes()
                        .find(|a| a.name() == name.local && a.namespace() == name.namespace);
                    if let Some(a) = value {
                        each(XmlNode::Attribute(a.value()));
                    }
                }
            }
        }
    }

    /// Whether the path selects something that is not empty from `from`.
    fn exists<'a>(&self, document: &'a Document<'a>, from: Node<'a, 'a>) -> bool {
        let mut found = false;
        self.walk(document, Some(from), &mut |n| {
            found = found || !n.is_empty()
        });
        found
    }

    fn any<'a>(
        &self,
        document: &'a Document<'a>,
        from: Node<'a, 'a>,
        test: impl Fn(&str) -> bool,
    ) -> bool {
        let mut found = false;
        self.walk(document, Some(from), &mut |n| {
            found = found || test(&n.text());
        });
        found
    }
}

/// Reads an XML document: UTF-8 (a byte order mark is skipped), namespaces resolved. A DTD is
/// refused: a CDA has none, and entities are a way to blow up a parser.
pub fn parse_document(bytes: &[u8]) -> Result<Document<'_>, String> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (byte {}): send the document in UTF-8",
            e.valid_up_to()
        )
    })?;
    Document::parse(text).map_err(|e| format!("not well-formed XML: {e}"))
}

/// A document's type for `messages:` and channel filters: `ClinicalDocument` and its code
/// (`/ClinicalDocument/code/@code`) for a CDA; the root element's name otherwise.
pub fn document_type<'a>(document: &'a Document<'a>) -> (&'a str, &'a str) {
    let root = document.root_element();
    let code = root
        .children()
        .find(|c| c.has_tag_name((CDA, "code")))
        .and_then(|c| c.attribute("code"))
        .unwrap_or("");
    (root.tag_name().name(), code)
}

/// Where `target` first occurs in `text` outside quotes and at bracket depth 0, counting
/// from `depth` (1 inside a predicate, to find its `]`). None when it does not occur; an
/// error when the text ends inside a quote or a bracket.
fn find_outside(text: &str, target: char, mut depth: i32) -> Result<Option<usize>, String> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if target == ']' && depth == 0 {
                    return Ok(Some(i));
                }
            }
            (None, c) if c == target && depth == 0 => return Ok(Some(i)),
            _ => {}
        }
    }
    if depth != 0 || quote.is_some() {
        return Err("unbalanced `[` or quote".into());
    }
    Ok(None)
}

/// The first step of `text` (brackets and quotes kept whole) and what follows it.
fn split_step(text: &str) -> Result<(&str, &str), String> {
    Ok(match find_outside(text, '/', 0)? {
        Some(i) => (&text[..i], &text[i..]),
        None => (text, ""),
    })
}

fn parse_predicates(text: &str) -> Result<Vec<Predicate>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(body) = rest.strip_prefix('[') {
        let end = find_outside(body, ']', 1)
            .ok()
            .flatten()
            .ok_or("a `]` is missing")?;
        out.push(predicate(body[..end].trim())?);
        rest = &body[end + 1..];
    }
    if !rest.is_empty() {
        return Err(format!("unexpected `{rest}` after a predicate"));
    }
    Ok(out)
}

fn predicate(inner: &str) -> Result<Predicate, String> {
    if let Ok(n) = inner.parse::<usize>() {
        return match n {
            0 => Err("positions count from 1".into()),
            n => Ok(Predicate::Index(n)),
        };
    }
    match inner.split_once('=') {
        Some((path, value)) => {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .ok_or_else(|| format!("`{value}`: a quoted text is expected after `=`"))?;
            Ok(Predicate::Equals(
                XmlPath::parse(path)?,
                unquoted.to_string(),
            ))
        }
        None => Ok(Predicate::Valued(XmlPath::parse(inner)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<?xml version="1.0"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:sdtc="urn:hl7-org:sdtc" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <id root="1.2.3" extension="D1"/>
  <recordTarget><patientRole>
    <id root="1.2.250.1.213.1.4.8" extension="INS-1"/>
    <id root="1.2.250.1.71.4.2.7" extension="IPP-1"/>
    <patient><name><given>Jean</given><given>Paul</given><family>DUPONT</family></name>
      <raceCode code="R1"/><sdtc:raceCode code="R2"/></patient>
  </patientRole></recordTarget>
  <component><structuredBody>
    <component><section><code code="A"/><entry><observation><value xsi:type="PQ" value="5"/></observation></entry></section></component>
    <component><section><code code="B"/><entry><observation><value xsi:type="ST">x</value></observation></entry>
      <entry><observation><value xsi:type="PQ" value="7"/></observation></entry></section></component>
  </structuredBody></component>
</ClinicalDocument>"#;

    fn texts(path: &str) -> Vec<String> {
        let doc = Document::parse(DOC).unwrap();
        let p = XmlPath::parse(path).unwrap();
        let mut out = Vec::new();
        p.walk(&doc, None, &mut |n| out.push(n.text().into_owned()));
        out
    }

    #[test]
    fn absolute_relative_descendant_predicates_attributes() {
        assert_eq!(texts("/ClinicalDocument/id/@extension"), ["D1"]);
        assert_eq!(
            texts("recordTarget/patientRole/id[@root='1.2.250.1.213.1.4.8']/@extension"),
            ["INS-1"]
        );
        assert_eq!(
            texts("recordTarget/patientRole/id[2]/@extension"),
            ["IPP-1"]
        );
        assert_eq!(texts("//patient/name/given"), ["Jean", "Paul"]);
        assert_eq!(texts("//patient/name/given[2]"), ["Paul"]);
        assert_eq!(
            texts("//section[code/@code='B']/entry/observation/value/@value"),
            ["7"]
        );
        assert_eq!(texts("//value[@xsi:type='PQ']/@value"), ["5", "7"]);
        assert_eq!(
            texts("//patient/raceCode/@code"),
            ["R1"],
            "namespaces kept apart"
        );
        assert_eq!(texts("//patient/sdtc:raceCode/@code"), ["R2"]);
        assert_eq!(texts("//given/../family"), ["DUPONT", "DUPONT"]);
        assert_eq!(
            texts("//observation[value/@value]/value/@value"),
            ["5", "7"]
        );
        assert_eq!(texts("//nothing/@x"), Vec::<String>::new());
    }

    #[test]
    fn raw_is_the_markup_and_the_root_is_the_document() {
        let doc = Document::parse(DOC).unwrap();
        let mut raw = Vec::new();
        XmlPath::parse("/")
            .unwrap()
            .walk(&doc, None, &mut |n| raw.push(n.raw()));
        assert_eq!(raw, [DOC]);
        let mut raw = Vec::new();
        XmlPath::parse("//patient/name/family")
            .unwrap()
            .walk(&doc, None, &mut |n| raw.push(n.raw()));
        assert_eq!(raw, ["<family>DUPONT</family>"]);
    }

    #[test]
    fn bad_paths_say_why() {
        for (bad, why) in [
            ("a/", "a step is expected"),
            ("a[", "unbalanced"),
            ("a[0]", "count from 1"),
            ("a/@b/c", "an attribute ends a path"),
            ("foo:a", "unknown prefix"),
            ("a[@b=c]", "quoted text"),
            ("a b", "not an XML name"),
        ] {
            let e = XmlPath::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(XmlPath::looks_like("/ClinicalDocument") && XmlPath::looks_like("id/@root"));
        assert!(XmlPath::looks_like("@code") && XmlPath::looks_like("."));
        assert!(
            !XmlPath::looks_like("PID-3")
                && !XmlPath::looks_like(".4")
                && !XmlPath::looks_like("OBX[*]")
        );
    }
}
