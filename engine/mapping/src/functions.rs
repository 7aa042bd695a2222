//! Functions a rule may apply to the value in hand (`fn: NAME`). One trait, one type per
//! function; a new one is a type implementing [`Function`] added to [`builtin`].

use std::sync::Arc;

use crate::input::Node;

pub trait Function: Send + Sync + std::fmt::Debug {
    /// The name rules call it by.
    fn name(&self) -> &'static str;
    /// The text it makes of a text (after `join:`, or of a value's text); empty produces
    /// nothing.
    fn apply_text(&self, text: &str) -> String;
    /// The text it makes of a value: by default, of the value's text.
    fn apply(&self, node: &Node<'_>) -> String {
        self.apply_text(&node.text())
    }
    /// Whether it reads the parts of a value (components), so cannot apply to plain text.
    fn structured(&self) -> bool {
        false
    }
}

#[derive(Debug)]
struct Upper;
impl Function for Upper {
    fn name(&self) -> &'static str {
        "upper"
    }
    fn apply_text(&self, text: &str) -> String {
        text.to_uppercase()
    }
}

#[derive(Debug)]
struct Lower;
impl Function for Lower {
    fn name(&self) -> &'static str {
        "lower"
    }
    fn apply_text(&self, text: &str) -> String {
        text.to_lowercase()
    }
}

#[derive(Debug)]
struct Trim;
impl Function for Trim {
    fn name(&self) -> &'static str {
        "trim"
    }
    fn apply_text(&self, text: &str) -> String {
        text.trim().to_string()
    }
}

/// The text without a leading `urn:oid:`, for systems that want the bare OID.
#[derive(Debug)]
struct BareOid;
impl Function for BareOid {
    fn name(&self) -> &'static str {
        "bare_oid"
    }
    fn apply_text(&self, text: &str) -> String {
        text.strip_prefix("urn:oid:").unwrap_or(text).to_string()
    }
}

/// The text (UTF-8) in base64: a text document's lines as `Attachment.data`. Of an XML
/// element, its markup as received (`from: /`: the whole document, for a Binary).
#[derive(Debug)]
struct Base64;
impl Function for Base64 {
    fn name(&self) -> &'static str {
        "base64"
    }
    fn apply_text(&self, text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(text)
    }
    fn apply(&self, node: &Node<'_>) -> String {
        match node {
            Node::Xml(crate::xml::XmlNode::Element(_)) => self.apply_text(node.raw()),
            _ => self.apply_text(&node.text()),
        }
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
    fn structured(&self) -> bool {
        true
    }
    fn apply_text(&self, _text: &str) -> String {
        String::new()
    }
    fn apply(&self, node: &Node<'_>) -> String {
        let part = |n: usize| node.child(n).map(|c| c.text()).unwrap_or_default();
        let (namespace, universal, kind) = (part(1), part(2), part(3));
        let is_oid = |s: &str| {
            s.contains('.')
                && s.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        let oid = |s: &str| ["urn:oid:", s].concat();
        match kind.as_ref() {
            "ISO" if is_oid(&universal) => oid(&universal),
            "URI" | "URL" if !universal.is_empty() => universal.into_owned(),
            "UUID" if !universal.is_empty() => ["urn:uuid:", &universal.to_lowercase()].concat(),
            _ if is_oid(&universal) => oid(&universal),
            _ if is_oid(&namespace) => oid(&namespace),
            _ => String::new(),
        }
    }
}

/// A CDA `root` (or any identifier of a namespace) as a URI: `urn:oid:` + an OID,
/// `urn:uuid:` + a UUID (lowercase), anything else as it is.
#[derive(Debug)]
struct OidUri;
impl Function for OidUri {
    fn name(&self) -> &'static str {
        "oid_uri"
    }
    fn apply_text(&self, text: &str) -> String {
        let t = text.trim();
        let is_oid = t.contains('.')
            && t.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let is_uuid = t.len() == 36
            && t.bytes().enumerate().all(|(i, b)| {
                matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
            });
        if is_oid {
            ["urn:oid:", t].concat()
        } else if is_uuid {
            ["urn:uuid:", &t.to_lowercase()].concat()
        } else {
            t.to_string()
        }
    }
}

/// The scheme of a URL (`tel:0144...` -> `tel`), lowercase; nothing without one.
#[derive(Debug)]
struct UriScheme;
impl Function for UriScheme {
    fn name(&self) -> &'static str {
        "uri_scheme"
    }
    fn apply_text(&self, text: &str) -> String {
        text.split_once(':')
            .map(|(s, _)| s.trim().to_lowercase())
            .unwrap_or_default()
    }
}

/// A URL without its scheme (`mailto:a@b.fr` -> `a@b.fr`); an http(s) URL stays whole.
#[derive(Debug)]
struct AfterScheme;
impl Function for AfterScheme {
    fn name(&self) -> &'static str {
        "after_scheme"
    }
    fn apply_text(&self, text: &str) -> String {
        match text.split_once(':') {
            Some((s, _)) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
                text.trim().to_string()
            }
            Some((_, rest)) => rest.trim().to_string(),
            None => text.trim().to_string(),
        }
    }
}

/// The functions rules can call.
/// A FHIR date, dateTime or instant as an HL7 v2 DTM, at the precision it has:
/// `2024-01-15T10:30:00+01:00` -> `20240115103000+0100`, `2024-01` -> `202401`, `Z` ->
/// `+0000`. Text that is not a FHIR date produces nothing (the writer never sends a
/// malformed TS).
#[derive(Debug)]
struct V2DateTime;
impl Function for V2DateTime {
    fn name(&self) -> &'static str {
        "v2_datetime"
    }
    fn apply_text(&self, text: &str) -> String {
        v2_datetime(text).unwrap_or_default()
    }
}

/// The date part only (`YYYYMMDD`), for DT fields.
#[derive(Debug)]
struct V2Date;
impl Function for V2Date {
    fn name(&self) -> &'static str {
        "v2_date"
    }
    fn apply_text(&self, text: &str) -> String {
        let t = text.split('T').next().unwrap_or_default();
        v2_datetime(t).unwrap_or_default()
    }
}

/// The HD universal id type (HL7 table 0301) of an identifier system: `ISO` for an OID
/// (`urn:oid:`), `UUID` for `urn:uuid:`, `URI` otherwise.
#[derive(Debug)]
struct HdType;
impl Function for HdType {
    fn name(&self) -> &'static str {
        "hd_type"
    }
    fn apply_text(&self, text: &str) -> String {
        if text.starts_with("urn:oid:") {
            "ISO"
        } else if text.starts_with("urn:uuid:") {
            "UUID"
        } else {
            "URI"
        }
        .to_string()
    }
}

/// A message control id (MSH-10, 20 characters at most in HL7 v2.5) made of any text: the
/// first 20 hex digits of its SHA-256. The same resource version always gives the same id,
/// so a receiver recognises a message sent again.
#[derive(Debug)]
struct ControlId;
impl Function for ControlId {
    fn name(&self) -> &'static str {
        "control_id"
    }
    fn apply_text(&self, text: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(text.as_bytes());
        digest[..10].iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn v2_datetime(text: &str) -> Option<String> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut out = String::with_capacity(24);
    let parts: Vec<&str> = date.split('-').collect();
    let widths = [4, 2, 2];
    if parts.len() > 3 {
        return None;
    }
    for (p, w) in parts.iter().zip(widths) {
        if p.len() != w || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        out.push_str(p);
    }
    let Some(time) = time else {
        return Some(out);
    };
    if parts.len() != 3 {
        return None;
    }
    let (clock, zone) = match time.find(['+', '-', 'Z']) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, ""),
    };
    let (hms, fraction) = match clock.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (clock, None),
    };
    for p in hms.split(':') {
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        out.push_str(p);
    }
    if let Some(f) = fraction {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        out.push('.');
        out.push_str(&f[..f.len().min(4)]);
    }
    match zone {
        "" => {}
        "Z" => out.push_str("+0000"),
        z => {
            let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            out.push_str(&z[..1]);
            out.push_str(&digits);
        }
    }
    Some(out)
}

pub fn builtin() -> Vec<Arc<dyn Function>> {
    vec![
        Arc::new(V2DateTime),
        Arc::new(V2Date),
        Arc::new(HdType),
        Arc::new(ControlId),
        Arc::new(OidUri),
        Arc::new(UriScheme),
        Arc::new(AfterScheme),
        Arc::new(Upper),
        Arc::new(Lower),
        Arc::new(Trim),
        Arc::new(HdUri),
        Arc::new(BareOid),
        Arc::new(Base64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_hl7v2::Message;

    #[test]
    fn fhir_dates_as_hl7_v2() {
        let f = V2DateTime;
        assert_eq!(
            f.apply_text("2024-01-15T10:30:00+01:00"),
            "20240115103000+0100"
        );
        assert_eq!(
            f.apply_text("2024-01-15T10:30:00.123Z"),
            "20240115103000.123+0000"
        );
        assert_eq!(f.apply_text("2024-01-15"), "20240115");
        assert_eq!(f.apply_text("2024-01"), "202401");
        assert_eq!(f.apply_text("1980"), "1980");
        for bad in [
            "",
            "15/01/2024",
            "2024-1-5",
            "2024-01T10:00",
            "2024-01-15T10:30:00+1",
        ] {
            assert_eq!(f.apply_text(bad), "", "{bad}");
        }
        assert_eq!(V2Date.apply_text("2024-01-15T10:30:00+01:00"), "20240115");
        assert_eq!(HdType.apply_text("urn:oid:1.2.250.1.71.4.2.1"), "ISO");
        assert_eq!(HdType.apply_text("https://chbm.fr/ipp"), "URI");
        let id = ControlId.apply_text("0190-abc/2");
        assert_eq!(id.len(), 20);
        assert_eq!(id, ControlId.apply_text("0190-abc/2"));
        assert_ne!(id, ControlId.apply_text("0190-abc/3"));
    }

    #[test]
    fn uris_of_cda_values() {
        let f = |name: &str, t: &str| {
            builtin()
                .into_iter()
                .find(|f| f.name() == name)
                .unwrap()
                .apply_text(t)
        };
        assert_eq!(
            f("oid_uri", "1.2.250.1.213.1.4.8"),
            "urn:oid:1.2.250.1.213.1.4.8"
        );
        assert_eq!(
            f("oid_uri", "2A5E7C1F-5B0D-4C55-9A2B-1C7E0F3B9D11"),
            "urn:uuid:2a5e7c1f-5b0d-4c55-9a2b-1c7e0f3b9d11"
        );
        assert_eq!(f("oid_uri", "http://x.org/ids"), "http://x.org/ids");
        assert_eq!(f("uri_scheme", "tel:+33 1 44"), "tel");
        assert_eq!(f("after_scheme", "mailto:a@b.fr"), "a@b.fr");
        assert_eq!(f("after_scheme", "https://x.org/a"), "https://x.org/a");
        assert_eq!(f("uri_scheme", "0144"), "");
    }

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
