//! Index extraction: the values of a resource's search parameters, as rows of the search
//! tables. The datatype is read from the JSON shape (a CodeableConcept has `coding`, an
//! Identifier `value`, a Period `start`/`end`...), which is what the elements we index have.

use serde_json::{Map, Value};

use crate::datetime::{self, Range};
use crate::error::{FhirError, FhirResult};
use crate::normalize::fold;
use crate::registry::{ParamType, SearchParam, Step, registry};

#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// `value` folded for the default and `:contains` searches, `exact` as written.
    String {
        value: String,
        exact: String,
    },
    /// `system` is empty when the value has none; `text` is folded display text.
    Token {
        system: String,
        code: String,
        text: String,
    },
    /// `target` is `(type, id)` for a resolvable reference; `url` the reference as written.
    Reference {
        target: Option<(String, String)>,
        url: String,
    },
    Date(Range),
    Number {
        value: f64,
        system: String,
        code: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub param: String,
    pub value: IndexValue,
}

/// The nodes a path selects, arrays flattened.
fn select<'a>(root: &'a Value, steps: &[Step]) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for node in current {
            let Some(obj) = node.as_object() else {
                continue;
            };
            let mut push = |v: &'a Value| match v {
                Value::Array(items) => next.extend(items.iter()),
                other => next.push(other),
            };
            if step.choice {
                for (key, value) in obj {
                    if let Some(rest) = key.strip_prefix(step.name.as_str())
                        && rest.starts_with(|c: char| c.is_ascii_uppercase())
                    {
                        push(value);
                    }
                }
            } else if let Some(value) = obj.get(&step.name) {
                push(value);
            }
        }
        if let Some((key, want)) = &step.filter {
            next.retain(|n| n.get(key).and_then(Value::as_str) == Some(want.as_str()));
        }
        current = next;
    }
    current
}

fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or("")
}

const CONTACT_SYSTEMS: [&str; 7] = ["phone", "fax", "email", "pager", "url", "sms", "other"];

fn tokens(node: &Value, out: &mut Vec<IndexValue>) {
    let token = |system: &str, code: &str, text: &str| IndexValue::Token {
        system: system.to_string(),
        code: code.to_string(),
        text: fold(text),
    };
    match node {
        Value::String(s) => out.push(token("", s, "")),
        Value::Bool(b) => out.push(token("", if *b { "true" } else { "false" }, "")),
        Value::Object(obj) => {
            if let Some(Value::Array(codings)) = obj.get("coding") {
                let text = str_of(obj, "text");
                for c in codings.iter().filter_map(Value::as_object) {
                    let display = str_of(c, "display");
                    out.push(token(
                        str_of(c, "system"),
                        str_of(c, "code"),
                        if display.is_empty() { text } else { display },
                    ));
                }
                if codings.is_empty() && !text.is_empty() {
                    out.push(token("", "", text));
                }
            } else if obj.contains_key("value") && !obj["value"].is_number() {
                let system = str_of(obj, "system");
                let value = str_of(obj, "value");
                if CONTACT_SYSTEMS.contains(&system) {
                    // ContactPoint: searched by its value (`phone=0381...`).
                    out.push(token("", value, ""));
                } else {
                    let text = obj
                        .get("type")
                        .and_then(|t| t.get("text"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    out.push(token(system, value, text));
                }
            } else if obj.contains_key("code") || obj.contains_key("system") {
                out.push(token(
                    str_of(obj, "system"),
                    str_of(obj, "code"),
                    str_of(obj, "display"),
                ));
            } else if obj.contains_key("text") {
                out.push(token("", "", str_of(obj, "text")));
            }
        }
        _ => {}
    }
}

fn strings(node: &Value, out: &mut Vec<IndexValue>) {
    let mut push = |s: &str| {
        if !s.trim().is_empty() {
            out.push(IndexValue::String {
                value: fold(s),
                exact: s.to_string(),
            })
        }
    };
    match node {
        Value::String(s) => push(s),
        // HumanName, Address and the like: their string parts, each searchable.
        Value::Object(obj) => {
            for (key, value) in obj {
                if matches!(key.as_str(), "use" | "type" | "id" | "extension" | "period") {
                    continue;
                }
                match value {
                    Value::String(s) => push(s),
                    Value::Array(items) => {
                        items.iter().filter_map(Value::as_str).for_each(&mut push)
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// `Patient/123`, `Patient/123/_history/2` or `https://host/fhir/Patient/123` → (type, id).
pub fn parse_reference(text: &str) -> Option<(String, String)> {
    if text.starts_with('#') || text.starts_with("urn:") {
        return None;
    }
    let path = text.split(['?', '#']).next().unwrap_or(text);
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let n = parts.len();
    let (t, id) = if n >= 4 && parts[n - 2] == "_history" {
        (parts[n - 4], parts[n - 3])
    } else if n >= 2 {
        (parts[n - 2], parts[n - 1])
    } else {
        return None;
    };
    (crate::types::is_resource_type(t) && crate::types::is_valid_id(id))
        .then(|| (t.to_string(), id.to_string()))
}

fn references(param: &SearchParam, node: &Value, out: &mut Vec<IndexRow>) {
    let url = match node {
        Value::String(s) => s.as_str(),
        Value::Object(obj) => {
            if let Some(ident) = obj.get("identifier") {
                let mut toks = Vec::new();
                tokens(ident, &mut toks);
                out.extend(toks.into_iter().map(|value| IndexRow {
                    param: format!("{}:identifier", param.code),
                    value,
                }));
            }
            str_of(obj, "reference")
        }
        _ => return,
    };
    if url.is_empty() {
        return;
    }
    let target = parse_reference(url);
    if let Some((t, _)) = &target
        && !param.targets.is_empty()
        && !param.targets.iter().any(|x| x == t)
    {
        return; // `subject.where(resolve() is Patient)`: another type does not count
    }
    out.push(IndexRow {
        param: param.code.clone(),
        value: IndexValue::Reference {
            target,
            url: url.to_string(),
        },
    });
}

fn date_of(text: &str, path: &str) -> FhirResult<Range> {
    datetime::parse(text).ok_or_else(|| {
        FhirError::invalid(format!("`{text}` is not a FHIR date or dateTime")).at(path)
    })
}

fn dates(node: &Value, path: &str, out: &mut Vec<IndexValue>) -> FhirResult<()> {
    match node {
        Value::String(s) => out.push(IndexValue::Date(date_of(s, path)?)),
        Value::Object(obj) if obj.contains_key("start") || obj.contains_key("end") => {
            let low = match obj.get("start").and_then(Value::as_str) {
                Some(s) => date_of(s, path)?.low,
                None => i64::MIN,
            };
            let high = match obj.get("end").and_then(Value::as_str) {
                Some(s) => date_of(s, path)?.high,
                None => i64::MAX,
            };
            out.push(IndexValue::Date(Range { low, high }));
        }
        Value::Object(obj) => {
            // Timing: its events.
            if let Some(Value::Array(events)) = obj.get("event") {
                for e in events.iter().filter_map(Value::as_str) {
                    out.push(IndexValue::Date(date_of(e, path)?));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn numbers(node: &Value, out: &mut Vec<IndexValue>) {
    match node {
        Value::Number(n) => out.extend(n.as_f64().map(|value| IndexValue::Number {
            value,
            system: String::new(),
            code: String::new(),
        })),
        Value::Object(obj) => {
            if let Some(value) = obj.get("value").and_then(Value::as_f64) {
                let code = match str_of(obj, "code") {
                    "" => str_of(obj, "unit"),
                    c => c,
                };
                out.push(IndexValue::Number {
                    value,
                    system: str_of(obj, "system").to_string(),
                    code: code.to_string(),
                });
            }
        }
        _ => {}
    }
}

/// Every index row of a resource. Fails only when an indexed element has the wrong datatype
/// in a way the client must hear about (a date that is not a date).
pub fn index(resource_type: &str, body: &Value) -> FhirResult<Vec<IndexRow>> {
    let mut rows = Vec::new();
    for param in registry().of_type(resource_type) {
        if !param.searchable() {
            continue;
        }
        for path in &param.paths {
            for node in select(body, path) {
                let mut values = Vec::new();
                match param.kind {
                    ParamType::String => strings(node, &mut values),
                    ParamType::Token | ParamType::Uri => tokens(node, &mut values),
                    ParamType::Reference => references(param, node, &mut rows),
                    ParamType::Date => {
                        let where_ = format!("{resource_type}.{}", describe(path));
                        dates(node, &where_, &mut values)?
                    }
                    ParamType::Quantity | ParamType::Number => numbers(node, &mut values),
                    ParamType::Composite => {}
                }
                rows.extend(values.into_iter().map(|value| IndexRow {
                    param: param.code.clone(),
                    value,
                }));
            }
        }
    }
    rows.dedup();
    Ok(rows)
}

fn describe(path: &[Step]) -> String {
    path.iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(rows: &[IndexRow], param: &str) -> Vec<IndexValue> {
        rows.iter()
            .filter(|r| r.param == param)
            .map(|r| r.value.clone())
            .collect()
    }

    #[test]
    fn patient_rows() {
        let p = json!({
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1800175123456"}],
            "name": [{"family": "Bergère", "given": ["Anne", "Marie"]}],
            "telecom": [{"system": "phone", "value": "0381000000"}, {"system": "email", "value": "a@b.fr"}],
            "gender": "female",
            "birthDate": "1980-05-01",
            "generalPractitioner": [{"reference": "Practitioner/pr1"}]
        });
        let rows = index("Patient", &p).unwrap();
        let fam = values(&rows, "family");
        assert_eq!(
            fam,
            vec![IndexValue::String {
                value: "bergere".into(),
                exact: "Bergère".into()
            }]
        );
        assert_eq!(values(&rows, "name").len(), 3);
        assert!(values(&rows, "identifier").contains(&IndexValue::Token {
            system: "urn:oid:1.2.250.1.213.1.4.8".into(),
            code: "1800175123456".into(),
            text: String::new()
        }));
        assert_eq!(
            values(&rows, "phone").len(),
            1,
            "telecom[system=phone] only"
        );
        assert!(matches!(values(&rows, "birthdate")[0], IndexValue::Date(_)));
        assert_eq!(
            values(&rows, "general-practitioner"),
            vec![IndexValue::Reference {
                target: Some(("Practitioner".into(), "pr1".into())),
                url: "Practitioner/pr1".into()
            }]
        );
    }

    #[test]
    fn observation_rows() {
        let o = json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": "Patient/p1"},
            "effectivePeriod": {"start": "2024-01-01T10:00:00Z"},
            "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "/min"}
        });
        let rows = index("Observation", &o).unwrap();
        assert_eq!(values(&rows, "patient").len(), 1);
        assert_eq!(values(&rows, "subject").len(), 1);
        let IndexValue::Date(r) = values(&rows, "date")[0] else {
            panic!()
        };
        assert_eq!(r.high, i64::MAX, "open period");
        assert_eq!(
            values(&rows, "value-quantity"),
            vec![IndexValue::Number {
                value: 72.0,
                system: "http://unitsofmeasure.org".into(),
                code: "/min".into()
            }]
        );
        let device = json!({"resourceType": "Observation", "subject": {"reference": "Device/d1"}});
        let rows = index("Observation", &device).unwrap();
        assert!(
            values(&rows, "patient").is_empty(),
            "a Device is not a patient"
        );
        assert_eq!(values(&rows, "subject").len(), 1);
    }

    #[test]
    fn bad_dates_are_reported_with_their_path() {
        let p = json!({"resourceType": "Patient", "birthDate": "01/05/1980"});
        let e = index("Patient", &p).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.expression.as_deref(), Some("Patient.birthDate"));
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            parse_reference("Patient/1"),
            Some(("Patient".into(), "1".into()))
        );
        assert_eq!(
            parse_reference("https://h/fhir/Patient/1/_history/3"),
            Some(("Patient".into(), "1".into()))
        );
        assert_eq!(parse_reference("#c1"), None);
        assert_eq!(parse_reference("urn:uuid:0f"), None);
        assert_eq!(parse_reference("Nope/1"), None);
    }
}
