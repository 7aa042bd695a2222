//! Paths into FHIR JSON: the FHIRPath subset outbound mappings read a resource with.
//!
//! ```text
//! status                            an element of the resource the mapping reads
//! MedicationRequest.status          the same, naming the resource type first (FHIRPath style)
//! identifier[0].value               an element of the first Identifier (indexes from 0)
//! dosageInstruction.route.coding    arrays are walked through: every route coding
//! subject.resolve().identifier      follow a Reference to the resource it names
//! .system                           relative: an element of the value in hand (datatype maps,
//!                                   `fields:` under a rule, `for:` loops)
//! ```
//!
//! `resolve()` finds the referenced resource among those the input carries: a change
//! notification is a `collection` Bundle whose first entry is the resource that changed and
//! whose other entries are the resources it references (the store source adds them). A
//! reference is matched on `Type/id` (relative or at the end of an absolute URL) or on an
//! entry's `fullUrl`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// An element; `Some(i)` keeps only the i-th value of what it selects.
    Element(String, Option<usize>),
    Resolve,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirPath {
    /// Starts from the value in hand rather than from the resource.
    relative: bool,
    /// The resource type written first (`MedicationRequest.status`): another type selects
    /// nothing.
    resource_type: Option<String>,
    steps: Vec<Step>,
}

/// The input of a mapping that reads FHIR: a resource, or a change notification (see the
/// module documentation).
#[derive(Debug, Clone, Copy)]
pub struct FhirInput<'a> {
    pub root: &'a Value,
}

impl<'a> FhirInput<'a> {
    fn is_notification(&self) -> bool {
        self.root["resourceType"] == "Bundle" && self.root["type"] == "collection"
    }

    /// The resource the mapping reads: a notification's first entry, else the input itself.
    pub fn focus(&self) -> &'a Value {
        if self.is_notification()
            && let Some(r) = self.root["entry"].get(0).and_then(|e| e.get("resource"))
        {
            return r;
        }
        self.root
    }

    /// The resource a reference names, among those the input carries.
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let resources = self
            .root
            .get("entry")
            .and_then(Value::as_array)
            .filter(|_| self.is_notification())
            .into_iter()
            .flatten();
        let relative = relative_reference(reference);
        for entry in resources {
            let r = &entry["resource"];
            if entry["fullUrl"].as_str() == Some(reference) {
                return Some(r);
            }
            if let (Some((t, id)), Some(rt), Some(rid)) =
                (relative, r["resourceType"].as_str(), r["id"].as_str())
                && t == rt
                && id == rid
            {
                return Some(r);
            }
        }
        None
    }
}

/// `Patient/12` of `Patient/12`, `https://host/fhir/Patient/12` or `Patient/12/_history/3`.
fn relative_reference(reference: &str) -> Option<(&str, &str)> {
    let path = reference.split("/_history/").next().unwrap_or(reference);
    let mut parts = path.rsplit('/');
    let id = parts.next()?;
    let t = parts.next()?;
    (t.starts_with(|c: char| c.is_ascii_uppercase()) && !id.is_empty()).then_some((t, id))
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl FhirPath {
    pub fn parse(text: &str) -> Result<FhirPath, String> {
        let t = text.trim();
        let (relative, body) = match t.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        if body.is_empty() {
            return Err(format!(
                "`{t}` is not a FHIR path (`status`, `subject.resolve().name`, `.code`)"
            ));
        }
        let mut path = FhirPath {
            relative,
            resource_type: None,
            steps: Vec::new(),
        };
        for (i, part) in body.split('.').enumerate() {
            if part == "resolve()" {
                path.steps.push(Step::Resolve);
                continue;
            }
            let (name, index) = match part.split_once('[') {
                None => (part, None),
                Some((name, rest)) => {
                    let n = rest
                        .strip_suffix(']')
                        .and_then(|n| n.parse::<usize>().ok())
                        .ok_or_else(|| {
                            format!(
                                "`{part}` in `{t}`: an index is a number from 0 (`identifier[0]`)"
                            )
                        })?;
                    (name, Some(n))
                }
            };
            if !is_name(name) {
                return Err(format!(
                    "`{part}` in `{t}` is not an element name or `resolve()`"
                ));
            }
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                if i > 0 || relative || index.is_some() {
                    return Err(format!(
                        "`{name}` in `{t}`: element names start in lower case; a resource type \
                         may only start an absolute path"
                    ));
                }
                path.resource_type = Some(name.to_string());
                continue;
            }
            path.steps.push(Step::Element(name.to_string(), index));
        }
        Ok(path)
    }

    /// Calls `each` with every value the path selects, in order: from the value in hand for
    /// a relative path, else from the resource the input is about.
    pub fn walk<'a>(
        &self,
        input: FhirInput<'a>,
        here: Option<&'a Value>,
        each: &mut impl FnMut(&'a Value),
    ) {
        let start = if self.relative {
            match here {
                Some(v) => v,
                None => return,
            }
        } else {
            input.focus()
        };
        if let Some(t) = &self.resource_type
            && start["resourceType"].as_str() != Some(t)
        {
            return;
        }
        let mut current = vec![start];
        for step in &self.steps {
            let mut next = Vec::new();
            match step {
                Step::Element(name, index) => {
                    for v in &current {
                        match v.get(name) {
                            Some(Value::Array(items)) => next.extend(items.iter()),
                            Some(Value::Null) | None => {}
                            Some(other) => next.push(other),
                        }
                    }
                    if let Some(i) = index {
                        next = next.get(*i).into_iter().copied().collect();
                    }
                }
                Step::Resolve => {
                    for v in &current {
                        if let Some(r) = v["reference"].as_str().and_then(|r| input.resolve(r)) {
                            next.push(r);
                        }
                    }
                }
            }
            if next.is_empty() {
                return;
            }
            current = next;
        }
        current.into_iter().for_each(each);
    }
}

/// The text of a JSON value as a primitive: strings as they are, numbers and booleans as
/// FHIR writes them; objects and arrays have none.
pub fn text(v: &Value) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Number(n) => Cow::Owned(n.to_string()),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        _ => Cow::Borrowed(""),
    }
}

/// Whether a value holds nothing (FHIR forbids empty values, but inputs may have them).
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all<'a>(path: &str, input: &'a Value, here: Option<&'a Value>) -> Vec<String> {
        let mut out = Vec::new();
        FhirPath::parse(path)
            .unwrap()
            .walk(FhirInput { root: input }, here, &mut |v| {
                out.push(match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            });
        out
    }

    #[test]
    fn reads_a_notification_and_follows_references() {
        let n = json!({
            "resourceType": "Bundle", "type": "collection",
            "entry": [
                {"resource": {"resourceType": "MedicationRequest", "id": "m1", "status": "active",
                    "subject": {"reference": "Patient/p1"},
                    "requester": {"reference": "https://h/fhir/Practitioner/d1/_history/2"},
                    "identifier": [{"value": "A"}, {"value": "B"}],
                    "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 2.5}}]}]}},
                {"resource": {"resourceType": "Patient", "id": "p1",
                    "identifier": [{"system": "urn:oid:1.2", "value": "123"}]}},
                {"resource": {"resourceType": "Practitioner", "id": "d1", "name": [{"family": "Kahn"}]}}
            ]
        });
        assert_eq!(all("status", &n, None), ["active"]);
        assert_eq!(all("MedicationRequest.status", &n, None), ["active"]);
        assert!(all("Patient.status", &n, None).is_empty());
        assert_eq!(all("identifier.value", &n, None), ["A", "B"]);
        assert_eq!(all("identifier[1].value", &n, None), ["B"]);
        assert!(all("identifier[2].value", &n, None).is_empty());
        assert_eq!(
            all("dosageInstruction.doseAndRate.doseQuantity.value", &n, None),
            ["2.5"]
        );
        assert_eq!(all("subject.resolve().identifier.value", &n, None), ["123"]);
        assert_eq!(all("requester.resolve().name.family", &n, None), ["Kahn"]);
        let id = json!({"system": "s", "value": "v"});
        assert_eq!(all(".value", &n, Some(&id)), ["v"]);
        assert!(all(".value", &n, None).is_empty());
        // A resource on its own is read as itself; it resolves nothing.
        let alone = json!({"resourceType": "Patient", "id": "p", "gender": "female",
            "managingOrganization": {"reference": "Organization/o"}});
        assert_eq!(all("gender", &alone, None), ["female"]);
        assert!(all("managingOrganization.resolve().name", &alone, None).is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_path() {
        for bad in [
            "",
            ".",
            "a..b",
            "identifier[x]",
            "identifier[-1]",
            "subject.Patient",
            "a b",
        ] {
            assert!(FhirPath::parse(bad).is_err(), "{bad}");
        }
    }
}
