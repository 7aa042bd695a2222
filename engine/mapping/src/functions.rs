//! Functions a rule may apply to the value in hand (`fn: NAME`). One trait, one type per
//! function; a new one is a type implementing [`Function`] added to [`builtin`].

use std::sync::Arc;

use crate::input::Node;

pub trait Function: Send + Sync + std::fmt::Debug {
    /// The name rules call it by.
    fn name(&self) -> &'static str;
    /// The text it makes of a value; empty produces nothing.
    fn apply(&self, node: &Node<'_>) -> String;
}

#[derive(Debug)]
struct Upper;
impl Function for Upper {
    fn name(&self) -> &'static str {
        "upper"
    }
    fn apply(&self, node: &Node<'_>) -> String {
        node.text().to_uppercase()
    }
}

#[derive(Debug)]
struct Lower;
impl Function for Lower {
    fn name(&self) -> &'static str {
        "lower"
    }
    fn apply(&self, node: &Node<'_>) -> String {
        node.text().to_lowercase()
    }
}

#[derive(Debug)]
struct Trim;
impl Function for Trim {
    fn name(&self) -> &'static str {
        "trim"
    }
    fn apply(&self, node: &Node<'_>) -> String {
        node.text().trim().to_string()
    }
}

/// The text without a leading `urn:oid:`, for systems that want the bare OID.
#[derive(Debug)]
struct BareOid;
impl Function for BareOid {
    fn name(&self) -> &'static str {
        "bare_oid"
    }
    fn apply(&self, node: &Node<'_>) -> String {
        let t = node.text();
        t.strip_prefix("urn:oid:").unwrap_or(&t).to_string()
    }
}

/// An HD (assigning authority, facility) as a URI: `urn:oid:` + its universal id when that
/// is an OID (type ISO, or shaped like one), the universal id itself when it is a URI, a
/// `urn:uuid:` for a UUID; nothing for a bare namespace (a ConceptMap names those).
#[derive(Debug)]
struct HdUri;
impl Function for HdUri {
    fn name(&self) -> &'static str {
        "hd_uri"
    }
    fn apply(&self, node: &Node<'_>) -> String {
        let part = |n: usize| {
            node.child(n)
                .map(|c| c.text().into_owned())
                .unwrap_or_default()
        };
        let (namespace, universal, kind) = (part(1), part(2), part(3));
        let is_oid = |s: &str| {
            s.contains('.')
                && s.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        match kind.as_str() {
            "ISO" if is_oid(&universal) => format!("urn:oid:{universal}"),
            "URI" | "URL" if !universal.is_empty() => universal,
            "UUID" if !universal.is_empty() => format!("urn:uuid:{}", universal.to_lowercase()),
            _ if is_oid(&universal) => format!("urn:oid:{universal}"),
            _ if is_oid(&namespace) => format!("urn:oid:{namespace}"),
            _ => String::new(),
        }
    }
}

/// The functions rules can call.
pub fn builtin() -> Vec<Arc<dyn Function>> {
    vec![
        Arc::new(Upper),
        Arc::new(Lower),
        Arc::new(Trim),
        Arc::new(HdUri),
        Arc::new(BareOid),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_hl7v2::Message;

    #[test]
    fn hd_as_uri() {
        let m = Message::parse(
            b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||1^^^X&1.2.3&ISO~2^^^Y&http://x.org/ids&URI~3^^^CHU-X&000897406&N\r",
        )
        .unwrap();
        let scope = crate::input::Scope::message(&m);
        let path = crate::input::InputPath::parse("PID-3[*].4").unwrap();
        let got: Vec<String> = scope.select(&path).iter().map(|n| HdUri.apply(n)).collect();
        assert_eq!(got, ["urn:oid:1.2.3", "http://x.org/ids", ""]);
    }
}
