//! `fhir-transaction`: a store change (the resource that changed and what the channel
//! includes with it) as a FHIR transaction Bundle for another FHIR server, written so that
//! sending it twice changes nothing the second time:
//!
//! - every resource is matched at the peer by a business identifier: its first
//!   `identifier` with a system and a value; one without gets
//!   `{identifier_system}|Type/id` (its id here), added to the resource;
//! - the changed resource, and the types listed in `upsert`, go as conditional updates
//!   (`PUT Type?identifier=...`: created the first time, updated after); the others as
//!   conditional creates (`POST` with `ifNoneExist`: taken as they are if the peer has them);
//!   a deletion goes as a conditional delete of the changed resource alone;
//! - references between the resources sent become `urn:uuid:` references inside the Bundle;
//!   a reference to a resource not sent becomes a logical reference (`Reference.identifier`
//!   `{identifier_system}|Type/id`), since the peer cannot read this store's ids;
//! - a Binary named by an attachment `url` travels inside the attachment (`data`), not on its
//!   own: a Binary has no identifier to match it by;
//! - `id` and `meta` (versions, tags) stay here; `meta.profile` and `meta.security` go.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::{Output, Routing, Transform};
use crate::channel::Input;
use crate::channel::change::{self, Kind};

pub struct FhirTransaction {
    /// The system of the identifiers made from this store's ids.
    pub identifier_system: String,
    /// Resource types sent as conditional updates besides the changed resource's.
    pub upsert: Vec<String>,
    pub destinations: Vec<String>,
}

impl Transform for FhirTransaction {
    fn kind(&self) -> &'static str {
        "fhir-transaction"
    }

    fn apply(&self, input: &Input<'_>) -> Result<Routing, String> {
        let Input::Change(notification) = input else {
            return Err("the fhir-transaction transform takes a store source's changes".into());
        };
        let bundle = self.bundle(notification)?;
        Ok(Routing::Deliver(Output::to_each(
            &self.destinations,
            &bundle,
        )?))
    }
}

/// What a resource is known by at the peer.
struct Sent {
    full_url: String,
    /// `(system, value)` of the identifier it is matched by.
    identifier: (String, String),
    /// Whether that identifier is added (the resource had none).
    added: bool,
}

impl FhirTransaction {
    pub fn bundle(&self, notification: &Value) -> Result<Value, String> {
        let focus = change::focus(notification).ok_or("the change has no resource")?;
        let resources: Vec<&Value> = notification["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource"))
            .filter(|r| r["resourceType"].is_string() && r["id"].is_string())
            .collect();
        let name = |r: &Value| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            )
        };
        if change::kind(notification) == Some(Kind::Delete) {
            let sent = self.sent(focus, &name(focus));
            return Ok(json!({
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{ "request": {
                    "method": "DELETE",
                    "url": format!("{}?{}", type_of(focus), search(&sent.identifier)),
                }}],
            }));
        }
        let binaries: HashMap<String, &Value> = resources
            .iter()
            .filter(|r| r["resourceType"] == "Binary")
            .map(|r| (name(r), *r))
            .collect();
        // Each resource once: two entries creating the same one would both create it.
        let mut names = std::collections::HashSet::new();
        let sent: Vec<(&Value, Sent)> = resources
            .iter()
            .filter(|r| r["resourceType"] != "Binary" && names.insert(name(r)))
            .map(|r| (*r, self.sent(r, &name(r))))
            .collect();
        let by_name: HashMap<String, &Sent> = sent.iter().map(|(r, s)| (name(r), s)).collect();
        let focus_type = type_of(focus);
        let entries: Vec<Value> = sent
            .iter()
            .map(|(resource, s)| {
                let mut body = (*resource).clone();
                let fields = body.as_object_mut().expect("a resource is an object");
                fields.remove("id");
                if let Some(meta) = fields.remove("meta") {
                    let kept: Map<String, Value> = ["profile", "security"]
                        .into_iter()
                        .filter_map(|k| Some((k.to_string(), meta.get(k)?.clone())))
                        .collect();
                    if !kept.is_empty() {
                        fields.insert("meta".into(), Value::Object(kept));
                    }
                }
                if s.added {
                    let (system, value) = &s.identifier;
                    let identifier = json!({ "system": system, "value": value });
                    match fields.get_mut("identifier") {
                        Some(Value::Array(list)) => list.push(identifier),
                        _ => {
                            fields.insert("identifier".into(), json!([identifier]));
                        }
                    }
                }
                self.rewrite(&mut body, &by_name, &binaries);
                let t = type_of(resource);
                let condition = search(&s.identifier);
                let request = if t == focus_type || self.upsert.iter().any(|u| u == t) {
                    json!({ "method": "PUT", "url": format!("{t}?{condition}") })
                } else {
                    json!({ "method": "POST", "url": t, "ifNoneExist": condition })
                };
                json!({ "fullUrl": s.full_url, "resource": body, "request": request })
            })
            .collect();
        Ok(json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries }))
    }

    fn sent(&self, resource: &Value, name: &str) -> Sent {
        let own = resource["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(
                resource["identifier"]
                    .as_object()
                    .map(|_| &resource["identifier"]),
            )
            .find_map(|i| Some((i["system"].as_str()?, i["value"].as_str()?)));
        let (identifier, added) = match own {
            Some((system, value)) => ((system.to_string(), value.to_string()), false),
            None => ((self.identifier_system.clone(), name.to_string()), true),
        };
        Sent {
            full_url: crate::channel::xds::name_uuid(&format!(
                "{}|{}",
                self.identifier_system, name
            )),
            identifier,
            added,
        }
    }

    /// References to resources sent become their `urn:uuid:`; to others, logical
    /// references; attachment urls naming an included Binary carry its data instead.
    fn rewrite(
        &self,
        value: &mut Value,
        sent: &HashMap<String, &Sent>,
        binaries: &HashMap<String, &Value>,
    ) {
        match value {
            Value::Array(items) => items
                .iter_mut()
                .for_each(|v| self.rewrite(v, sent, binaries)),
            Value::Object(fields) => {
                let target = fields
                    .get("reference")
                    .and_then(Value::as_str)
                    .and_then(change::local_target)
                    .map(|(t, id)| (t.to_string(), format!("{t}/{id}")));
                if let Some((t, name)) = target {
                    match sent.get(&name) {
                        Some(s) => {
                            fields.insert("reference".into(), json!(s.full_url));
                        }
                        None => {
                            fields.remove("reference");
                            fields.insert("type".into(), json!(t));
                            fields.insert(
                                "identifier".into(),
                                json!({ "system": self.identifier_system, "value": name }),
                            );
                        }
                    }
                }
                let binary = fields
                    .get("url")
                    .and_then(Value::as_str)
                    .filter(|_| fields.contains_key("contentType"))
                    .and_then(|url| binaries.get(url.split("/_history/").next().unwrap_or(url)));
                if let Some(binary) = binary {
                    if let Some(data) = binary.get("data") {
                        fields.insert("data".into(), data.clone());
                    }
                    fields.remove("url");
                }
                fields
                    .values_mut()
                    .for_each(|v| self.rewrite(v, sent, binaries));
            }
            _ => {}
        }
    }
}

fn type_of(resource: &Value) -> &str {
    resource["resourceType"].as_str().unwrap_or_default()
}

/// `identifier=system|value`, the value escaped for FHIR search (`\`, `|`, `,`, `$`) and
/// then for a URL query.
fn search((system, value): &(String, String)) -> String {
    let escape = |s: &str| {
        s.chars().fold(String::new(), |mut out, c| {
            if matches!(c, '\\' | '|' | ',' | '$') {
                out.push('\\');
            }
            out.push(c);
            out
        })
    };
    format!(
        "identifier={}|{}",
        percent(&escape(system)),
        percent(&escape(value))
    )
}

/// Percent-encodes all but the URL's unreserved characters (and `|`, `/`, `:` that a search
/// value keeps readable).
fn percent(s: &str) -> String {
    s.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-._~/:|".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transform() -> FhirTransaction {
        FhirTransaction {
            identifier_system: "https://hospital.test/fhir".into(),
            upsert: vec![],
            destinations: vec!["clinic".into()],
        }
    }

    fn referral() -> Value {
        let sr = json!({"resourceType": "ServiceRequest", "id": "7", "meta": {"versionId": "2", "lastUpdated": "2026-01-01T00:00:00Z",
            "profile": ["http://x/p"], "tag": [{"system": "https://passerelle.dev/fhir/CodeSystem/destination", "code": "DMP"}]},
            "identifier": [{"system": "urn:oid:1.2.3", "value": "REF-1"}], "status": "active", "intent": "order",
            "subject": {"reference": "Patient/1"}, "requester": {"reference": "Practitioner/9", "display": "Dr Who"},
            "reasonReference": [{"reference": "Condition/3"}], "supportingInfo": [{"reference": "DocumentReference/4"}]});
        let patient = json!({"resourceType": "Patient", "id": "1", "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1 55 55 55 555 555"}]});
        let condition =
            json!({"resourceType": "Condition", "id": "3", "subject": {"reference": "Patient/1"}});
        let document = json!({"resourceType": "DocumentReference", "id": "4", "status": "current", "subject": {"reference": "Patient/1"},
            "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/5"}}]});
        let binary = json!({"resourceType": "Binary", "id": "5", "contentType": "application/pdf", "data": "JVBERg=="});
        change::notification(
            Kind::Update,
            sr,
            vec![patient, condition, document, binary],
            "2026-01-01T00:00:00Z",
        )
    }

    #[test]
    fn a_referral_becomes_a_transaction_that_matches_on_identifiers() {
        let bundle = transform().bundle(&referral()).unwrap();
        assert_eq!(bundle["type"], "transaction");
        let entries = bundle["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 4, "the Binary travels inside its attachment");
        let [sr, patient, condition, document] =
            [&entries[0], &entries[1], &entries[2], &entries[3]];

        assert_eq!(
            sr["request"],
            json!({"method": "PUT", "url": "ServiceRequest?identifier=urn:oid:1.2.3|REF-1"})
        );
        assert!(sr["resource"].get("id").is_none());
        assert_eq!(
            sr["resource"]["meta"],
            json!({"profile": ["http://x/p"]}),
            "no version, no tags"
        );
        assert_eq!(sr["resource"]["subject"]["reference"], patient["fullUrl"]);
        assert_eq!(
            sr["resource"]["reasonReference"][0]["reference"],
            condition["fullUrl"]
        );
        assert_eq!(
            sr["resource"]["requester"],
            json!({"type": "Practitioner", "display": "Dr Who",
                   "identifier": {"system": "https://hospital.test/fhir", "value": "Practitioner/9"}}),
            "not sent: a logical reference"
        );

        assert_eq!(
            patient["request"],
            json!({"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.250.1.213.1.4.8|1%2055%2055%2055%20555%20555"})
        );
        assert_eq!(
            condition["resource"]["identifier"],
            json!([{"system": "https://hospital.test/fhir", "value": "Condition/3"}]),
            "an identifier made from the id"
        );
        assert_eq!(
            condition["request"]["ifNoneExist"],
            "identifier=https://hospital.test/fhir|Condition/3"
        );
        assert_eq!(
            document["resource"]["content"][0]["attachment"],
            json!({"contentType": "application/pdf", "data": "JVBERg=="})
        );
        // The same change, the same Bundle: a retry is the same request.
        assert_eq!(transform().bundle(&referral()).unwrap(), bundle);
        assert!(
            entries
                .iter()
                .all(|e| e["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"))
        );
    }

    #[test]
    fn upsert_types_and_deletions() {
        let t = FhirTransaction {
            upsert: vec!["Condition".into()],
            ..transform()
        };
        let bundle = t.bundle(&referral()).unwrap();
        assert_eq!(bundle["entry"][2]["request"]["method"], "PUT");
        assert_eq!(bundle["entry"][1]["request"]["method"], "POST");

        let mut deleted = referral();
        deleted["meta"]["tag"][0]["code"] = json!("delete");
        let bundle = transform().bundle(&deleted).unwrap();
        assert_eq!(
            bundle["entry"],
            json!([{"request": {"method": "DELETE", "url": "ServiceRequest?identifier=urn:oid:1.2.3|REF-1"}}])
        );
    }

    #[test]
    fn a_resource_named_twice_is_sent_once() {
        let mut twice = referral();
        let condition = twice["entry"][2].clone();
        twice["entry"].as_array_mut().unwrap().push(condition);
        let bundle = transform().bundle(&twice).unwrap();
        assert_eq!(bundle, transform().bundle(&referral()).unwrap());
    }

    #[test]
    fn search_values_are_escaped() {
        let s = search(&("urn:x".into(), "a|b,c$d\\e&f".into()));
        assert_eq!(s, "identifier=urn:x|a%5C|b%5C%2Cc%5C%24d%5C%5Ce%26f");
    }
}
