//! What a channel receives, read by the reader its source's content needs: HL7 v2 from MLLP,
//! FHIR JSON or a CDA document from HTTP, a change notification from the FHIR store. Filters
//! and transforms work on the parsed [`Input`], so a message is parsed once per run, whatever
//! its kind.

use std::borrow::Cow;

use passerelle_hl7v2::{Message, ParseOptions};
use serde_json::Value;

/// The kind of content a source hands in, with what its reader needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Hl7v2(ParseOptions),
    Fhir,
    Cda,
    /// Device readings: SenML JSON (RFC 8428) or a FHIR Observation.
    Telemetry,
    /// A change in the FHIR store, as a `store` source's notification Bundle
    /// ([`super::change`]).
    Change,
}

impl Content {
    /// The MIME type recorded in the journal.
    pub fn mime(self) -> &'static str {
        match self {
            Content::Hl7v2(_) => "application/hl7-v2",
            Content::Fhir | Content::Change => "application/fhir+json",
            Content::Cda => "application/hl7-cda+xml",
            Content::Telemetry => "application/senml+json",
        }
    }

    pub fn parse(self, raw: &[u8]) -> Result<Input<'_>, String> {
        match self {
            Content::Hl7v2(options) => Message::parse_with(raw, &options)
                .map(Input::Hl7)
                .map_err(|e| e.to_string()),
            Content::Fhir => parse_fhir(raw).map(Input::Fhir),
            Content::Cda => passerelle_mapping::xml::parse_document(raw).map(Input::Cda),
            Content::Change => parse_json(raw)
                .and_then(|v| super::change::check(&v).map(|()| v))
                .map(Input::Change),
            Content::Telemetry => parse_telemetry(raw).map(|payload| {
                Input::Telemetry(Reading {
                    payload,
                    device: String::new(),
                    subject: None,
                })
            }),
        }
    }
}

/// JSON, or why not with its line and column.
fn parse_json(raw: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(raw).map_err(|e| {
        format!(
            "not JSON: {} at line {} column {}",
            e.to_string().split(" at line ").next().unwrap_or_default(),
            e.line(),
            e.column()
        )
    })
}

fn parse_fhir(raw: &[u8]) -> Result<Value, String> {
    let value = parse_json(raw)?;
    if value.get("resourceType").and_then(Value::as_str).is_none() {
        return Err("not a FHIR resource: a JSON object with a resourceType is expected".into());
    }
    Ok(value)
}

/// A device reading: SenML records (a JSON array) or a FHIR Observation (an object).
fn parse_telemetry(raw: &[u8]) -> Result<Value, String> {
    let value = parse_json(raw)?;
    match &value {
        Value::Array(records) if records.iter().all(Value::is_object) && !records.is_empty() => {
            Ok(value)
        }
        Value::Object(o)
            if o.get("resourceType").and_then(Value::as_str) == Some("Observation") =>
        {
            Ok(value)
        }
        _ => Err("neither SenML (a JSON array of records, RFC 8428) nor a FHIR Observation".into()),
    }
}

/// A reading, with what its source knows of the device that sent it.
pub struct Reading {
    pub payload: Value,
    /// The device id (the topic's `+` level).
    pub device: String,
    /// What the device is linked to (`Patient/1`, `Location/2`) and the Device itself, from
    /// the device registry (the store's Device resources); None when not looked up.
    pub subject: Option<DeviceLink>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLink {
    /// `Device/{id}`.
    pub device: String,
    /// `Patient/{id}` or `Location/{id}`.
    pub subject: String,
}

/// A parsed message.
pub enum Input<'a> {
    Hl7(Message<'a>),
    Fhir(Value),
    /// An XML document: `ClinicalDocument` for a CDA.
    Cda(roxmltree::Document<'a>),
    Telemetry(Reading),
    /// A change notification: a `collection` Bundle, the changed resource first.
    Change(Value),
}

impl Input<'_> {
    /// The type filters and routes match: `ADT^A01` for HL7 v2 (MSH-9), `Bundle^transaction`
    /// or `Patient` for FHIR (resourceType, and a Bundle's type as its event),
    /// `ClinicalDocument^11502-2` for a CDA (its code as the event), `MedicationRequest^create`
    /// for a store change (the changed resource's type, the kind of change as the event).
    pub fn message_type(&self) -> (Cow<'_, str>, Option<Cow<'_, str>>) {
        match self {
            Input::Hl7(m) => {
                let h = m.header();
                (
                    h.message_type.unwrap_or_default(),
                    h.trigger_event.filter(|e| !e.is_empty()),
                )
            }
            Input::Fhir(v) => {
                let t = v["resourceType"].as_str().unwrap_or_default();
                let event = (t == "Bundle")
                    .then(|| v["type"].as_str())
                    .flatten()
                    .map(Cow::Borrowed);
                (Cow::Borrowed(t), event)
            }
            Input::Telemetry(r) => (
                Cow::Borrowed(if r.payload.is_array() {
                    "SenML"
                } else {
                    "Observation"
                }),
                None,
            ),
            Input::Change(v) => (
                Cow::Borrowed(
                    super::change::focus(v)
                        .and_then(|f| f["resourceType"].as_str())
                        .unwrap_or_default(),
                ),
                super::change::kind(v).map(|k| Cow::Borrowed(k.code())),
            ),
            Input::Cda(d) => {
                let (kind, code) = passerelle_mapping::xml::document_type(d);
                (
                    Cow::Borrowed(kind),
                    (!code.is_empty()).then_some(Cow::Borrowed(code)),
                )
            }
        }
    }

    /// `TYPE^EVENT` or `TYPE`, as the journal shows it.
    pub fn message_type_text(&self) -> Option<String> {
        let (kind, event) = self.message_type();
        if kind.is_empty() {
            return None;
        }
        Some(match event {
            Some(e) => format!("{kind}^{e}"),
            None => kind.into_owned(),
        })
    }

    /// Whether a `TYPE` or `TYPE^EVENT` pattern (filters, routes) takes this message.
    pub fn is_of_type(&self, pattern: &str) -> bool {
        let (kind, event) = self.message_type();
        match pattern.split_once('^') {
            Some((k, e)) => k == kind && event.as_deref() == Some(e),
            None => pattern == kind,
        }
    }

    pub fn hl7(&self) -> Option<&Message<'_>> {
        match self {
            Input::Hl7(m) => Some(m),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_of_each_kind() {
        let hl7 = Content::Hl7v2(ParseOptions::default())
            .parse(b"MSH|^~\\&|HIS|H|||20240101||ADT^A01|1|P|2.5\r")
            .unwrap();
        assert_eq!(hl7.message_type_text().as_deref(), Some("ADT^A01"));
        assert!(hl7.is_of_type("ADT") && hl7.is_of_type("ADT^A01") && !hl7.is_of_type("ADT^A08"));
        let bundle = Content::Fhir
            .parse(br#"{"resourceType":"Bundle","type":"transaction"}"#)
            .unwrap();
        assert_eq!(
            bundle.message_type_text().as_deref(),
            Some("Bundle^transaction")
        );
        assert!(bundle.is_of_type("Bundle") && bundle.is_of_type("Bundle^transaction"));
        let patient = Content::Fhir
            .parse(br#"{"resourceType":"Patient"}"#)
            .unwrap();
        assert_eq!(patient.message_type_text().as_deref(), Some("Patient"));
        assert!(!patient.is_of_type("Patient^x"));
    }

    #[test]
    fn a_store_change_is_typed_by_its_resource_and_kind() {
        let raw = br#"{"resourceType":"Bundle","type":"collection",
            "meta":{"tag":[{"system":"https://passerelle.dev/fhir/CodeSystem/change","code":"create"}]},
            "entry":[{"resource":{"resourceType":"MedicationRequest","id":"1"}}]}"#;
        let change = Content::Change.parse(raw).unwrap();
        assert_eq!(
            change.message_type_text().as_deref(),
            Some("MedicationRequest^create")
        );
        assert!(change.is_of_type("MedicationRequest") && !change.is_of_type("Bundle"));
        assert_eq!(Content::Change.mime(), "application/fhir+json");
        let e = Content::Change
            .parse(br#"{"resourceType":"Bundle","type":"collection"}"#)
            .err()
            .unwrap();
        assert!(e.contains("not a change notification"), "{e}");
    }

    #[test]
    fn fhir_errors_say_where() {
        let e = Content::Fhir
            .parse(b"{\n  \"resourceType\": }")
            .err()
            .unwrap();
        assert!(e.contains("line 2 column"), "{e}");
        let e = Content::Fhir.parse(b"[1]").err().unwrap();
        assert!(e.contains("resourceType"), "{e}");
    }
}
