//! FHIR in, FHIR to the store: what a system sends (one resource or a Bundle of any type) is
//! adapted (identifier systems, profiles) and turned into the transaction Bundle a
//! `fhir-store` destination applies.
//!
//! - a transaction or batch Bundle goes as it is;
//! - the resources of a collection, searchset or message Bundle are each written;
//! - any other resource, a document Bundle included, is written itself.
//!
//! A resource with an id is written with `PUT Type/id` (the sender's ids are kept); one without
//! an id but with a business identifier is a conditional create on that identifier, so a
//! message applied again (after a crash) never writes a second copy.

use serde_json::{Map, Value, json};

use super::{Output, Routing, Transform};
use crate::channel::Input;

pub struct FhirIntake {
    pub destinations: Vec<String>,
    /// Identifier systems rewritten on the way in, `(from, to)`: a bare OID that a sender
    /// writes for a `urn:oid:` system, an old namespace...
    pub identifier_systems: Vec<(String, String)>,
    /// `(resource type, profile URL)`: declared in `meta.profile` of each such resource.
    pub profiles: Vec<(String, String)>,
}

impl Transform for FhirIntake {
    fn kind(&self) -> &'static str {
        "fhir"
    }

    fn apply(&self, input: &Input<'_>) -> Result<Routing, String> {
        let Input::Fhir(received) = input else {
            return Err("a fhir transform reads FHIR resources".into());
        };
        let mut bundle = transaction(received.clone())?;
        if let Some(entries) = bundle["entry"].as_array_mut() {
            for entry in entries {
                if let Some(resource) = entry.get_mut("resource") {
                    self.adapt(resource);
                }
                self.adapt_request(entry);
            }
        }
        Ok(Routing::Deliver(Output::to_each(
            &self.destinations,
            &bundle,
        )?))
    }
}

impl FhirIntake {
    /// Rewrites identifier systems (in identifiers and in conditional references) and adds
    /// the declared profiles, in a resource and the resources it contains.
    fn adapt(&self, resource: &mut Value) {
        if !self.identifier_systems.is_empty() {
            rewrite_systems(resource, &self.identifier_systems, false);
        }
        let t = resource["resourceType"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for (of, url) in &self.profiles {
            if *of == t {
                add_profile(resource, url);
            }
        }
        if let Some(contained) = resource.get_mut("contained").and_then(Value::as_array_mut) {
            contained.iter_mut().for_each(|c| self.adapt(c));
        }
    }

    /// Conditional URLs of the request (`Patient?identifier=...`, `ifNoneExist`) follow the
    /// rewritten systems.
    fn adapt_request(&self, entry: &mut Value) {
        let Some(request) = entry.get_mut("request").and_then(Value::as_object_mut) else {
            return;
        };
        for key in ["url", "ifNoneExist"] {
            if let Some(Value::String(s)) = request.get_mut(key) {
                rewrite_query(s, &self.identifier_systems);
            }
        }
    }
}

fn rewrite_systems(v: &mut Value, map: &[(String, String)], in_identifier: bool) {
    match v {
        Value::Object(obj) => {
            if in_identifier
                && let Some(Value::String(system)) = obj.get_mut("system")
                && let Some((_, to)) = map.iter().find(|(from, _)| from == system)
            {
                *system = to.clone();
            }
            for (key, child) in obj.iter_mut() {
                match (key.as_str(), child) {
                    ("reference", Value::String(r)) => rewrite_query(r, map),
                    ("contained", _) => {} // adapted as resources of their own
                    (k, c) => rewrite_systems(c, map, k == "identifier" || k == "masterIdentifier"),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|c| rewrite_systems(c, map, in_identifier)),
        _ => {}
    }
}

/// `Patient?identifier=FROM|123` → `Patient?identifier=TO|123`.
fn rewrite_query(text: &mut String, map: &[(String, String)]) {
    for (from, to) in map {
        for prefix in ["identifier=", "identifier:exact="] {
            let old = format!("{prefix}{from}|");
            if text.contains(&old) {
                *text = text.replace(&old, &format!("{prefix}{to}|"));
            }
        }
    }
}

fn add_profile(resource: &mut Value, url: &str) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let profiles = meta.entry("profile").or_insert_with(|| json!([]));
    if let Some(list) = profiles.as_array_mut()
        && !list.iter().any(|p| p.as_str() == Some(url))
    {
        list.push(json!(url));
    }
}

/// The transaction (or batch) Bundle that writes what was received.
fn transaction(received: Value) -> Result<Value, String> {
    let t = received["resourceType"].as_str().unwrap_or_default();
    let kind = received["type"].as_str().unwrap_or_default();
    if t != "Bundle" || kind == "document" {
        return Ok(bundle_of(vec![write(received, None)]));
    }
    match kind {
        "transaction" | "batch" => Ok(received),
        "collection" | "searchset" | "message" => {
            let entries = received["entry"].as_array().cloned().unwrap_or_default();
            Ok(bundle_of(
                entries
                    .into_iter()
                    // A searchset's OperationOutcome says how the search went: not data.
                    .filter(|e| e["search"]["mode"].as_str() != Some("outcome"))
                    .filter_map(|mut e| {
                        let full_url = e["fullUrl"].as_str().map(String::from);
                        e.get_mut("resource")
                            .map(Value::take)
                            .map(|r| write(r, full_url))
                    })
                    .collect(),
            ))
        }
        "history" | "transaction-response" | "batch-response" => Err(format!(
            "a {kind} Bundle is a server's answer, not data to write: send the resources in a \
             transaction, a batch, a collection or one by one"
        )),
        other => Err(format!(
            "Bundle.type `{other}` is not a FHIR R4 Bundle type"
        )),
    }
}

fn bundle_of(entries: Vec<Value>) -> Value {
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

/// The entry that writes one resource: `PUT Type/id` when it has an id, else a conditional
/// create on its business identifier when it has one, else a create.
fn write(resource: Value, full_url: Option<String>) -> Value {
    let t = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut entry = Map::new();
    let request = match resource["id"].as_str() {
        Some(id) => json!({ "method": "PUT", "url": format!("{t}/{id}") }),
        None => {
            let mut r = json!({ "method": "POST", "url": t });
            if let Some(key) = business_identifier(&resource) {
                r["ifNoneExist"] = json!(format!("identifier={key}"));
            }
            r
        }
    };
    // A `urn:uuid:` full URL lets the other entries refer to this one.
    if let Some(url) = full_url.filter(|u| u.starts_with("urn:")) {
        entry.insert("fullUrl".into(), json!(url));
    }
    entry.insert("resource".into(), resource);
    entry.insert("request".into(), request);
    Value::Object(entry)
}

/// `system|value` of the first identifier that has both (`masterIdentifier` first for a
/// DocumentReference; a Bundle's identifier is a single one).
fn business_identifier(resource: &Value) -> Option<String> {
    let candidates = [&resource["masterIdentifier"], &resource["identifier"]];
    let identifiers = match &resource["identifier"] {
        Value::Array(list) => list.iter().collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    candidates.into_iter().chain(identifiers).find_map(|i| {
        match (i["system"].as_str(), i["value"].as_str()) {
            (Some(s), Some(v)) if !s.is_empty() && !v.is_empty() => {
                Some(format!("{}|{}", s, v.replace(',', "\\,")))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intake() -> FhirIntake {
        FhirIntake {
            destinations: vec!["store".into()],
            identifier_systems: vec![(
                "1.2.250.1.213.1.4.8".into(),
                "urn:oid:1.2.250.1.213.1.4.8".into(),
            )],
            profiles: vec![(
                "Patient".into(),
                "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient".into(),
            )],
        }
    }

    fn bundle_for(received: Value) -> Value {
        let Routing::Deliver(out) = intake().apply(&Input::Fhir(received)).unwrap() else {
            panic!("dropped")
        };
        serde_json::from_slice(out[0].payload.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn a_resource_with_an_id_is_put_one_without_is_created_on_its_identifier() {
        let b = bundle_for(json!({"resourceType": "Observation", "id": "o1", "status": "final"}));
        assert_eq!(b["type"], "transaction");
        assert_eq!(
            b["entry"][0]["request"],
            json!({"method": "PUT", "url": "Observation/o1"})
        );
        let b = bundle_for(json!({"resourceType": "Patient",
            "identifier": [{"value": "no system"}, {"system": "1.2.250.1.213.1.4.8", "value": "1"}]}));
        let e = &b["entry"][0];
        assert_eq!(e["request"]["method"], "POST");
        assert_eq!(
            e["request"]["ifNoneExist"], "identifier=urn:oid:1.2.250.1.213.1.4.8|1",
            "rewritten before the key is made"
        );
        assert_eq!(
            e["resource"]["identifier"][1]["system"],
            "urn:oid:1.2.250.1.213.1.4.8"
        );
        assert_eq!(
            e["resource"]["meta"]["profile"][0],
            "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"
        );
        let b = bundle_for(json!({"resourceType": "Basic"}));
        assert_eq!(
            b["entry"][0]["request"],
            json!({"method": "POST", "url": "Basic"})
        );
    }

    #[test]
    fn bundles_by_type() {
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Encounter",
                          "subject": {"reference": "Patient?identifier=1.2.250.1.213.1.4.8|9"}},
             "request": {"method": "POST", "url": "Encounter"}}]});
        let b = bundle_for(tx);
        assert_eq!(
            b["entry"][0]["resource"]["subject"]["reference"],
            "Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|9"
        );
        let collection = json!({"resourceType": "Bundle", "type": "searchset", "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p"}},
            {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}}]});
        let b = bundle_for(collection);
        assert_eq!(b["entry"].as_array().unwrap().len(), 1);
        assert_eq!(b["entry"][0]["fullUrl"], "urn:uuid:1");
        let document = json!({"resourceType": "Bundle", "type": "document",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"}});
        let b = bundle_for(document);
        assert_eq!(b["entry"][0]["request"]["url"], "Bundle");
        assert_eq!(
            b["entry"][0]["request"]["ifNoneExist"],
            "identifier=urn:ietf:rfc:3986|urn:oid:1.2.3"
        );
        let history = json!({"resourceType": "Bundle", "type": "history"});
        assert!(intake().apply(&Input::Fhir(history)).is_err());
    }
}
