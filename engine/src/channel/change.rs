//! The message a `store` source makes of a change in the FHIR store: a `collection` Bundle
//! whose first entry is the resource that changed (at that version; for a deletion, the
//! version before it) and whose other entries are the resources it references that the
//! channel `include`s, with the kind of change as a `meta.tag`. Outbound mappings read it
//! (`resolve()` finds the included resources); a file destination writes it as it is.

use serde_json::{Value, json};

/// The code system of the tag saying what happened to the first entry.
pub const SYSTEM: &str = "https://passerelle.dev/fhir/CodeSystem/change";

/// What happened to the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Create,
    Update,
    Delete,
}

impl Kind {
    pub fn code(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Update => "update",
            Kind::Delete => "delete",
        }
    }

    fn of_code(code: &str) -> Option<Kind> {
        [Kind::Create, Kind::Update, Kind::Delete]
            .into_iter()
            .find(|k| k.code() == code)
    }
}

/// The notification Bundle. `timestamp`: when the change was committed (FHIR instant).
pub fn notification(kind: Kind, focus: Value, included: Vec<Value>, timestamp: &str) -> Value {
    // No fullUrl: FHIR wants an absolute URL there, and readers match `Type/id` references
    // on the resources' own type and id.
    let entry: Vec<Value> = std::iter::once(focus)
        .chain(included)
        .map(|resource| json!({ "resource": resource }))
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "meta": { "tag": [{ "system": SYSTEM, "code": kind.code() }] },
        "timestamp": timestamp,
        "entry": entry,
    })
}

/// The resource that changed, first entry of a notification.
pub fn focus(bundle: &Value) -> Option<&Value> {
    bundle["entry"][0].get("resource").filter(|r| r.is_object())
}

/// The kind of change a notification's tag gives.
pub fn kind(bundle: &Value) -> Option<Kind> {
    bundle["meta"]["tag"]
        .as_array()?
        .iter()
        .find(|t| t["system"] == SYSTEM)
        .and_then(|t| Kind::of_code(t["code"].as_str()?))
}

/// Checks that a JSON value is a notification (a reprocessed message is read back with this).
pub fn check(bundle: &Value) -> Result<(), String> {
    let is_collection = bundle["resourceType"] == "Bundle" && bundle["type"] == "collection";
    let typed = focus(bundle).is_some_and(|f| f["resourceType"].is_string());
    if !is_collection || !typed || kind(bundle).is_none() {
        return Err(format!(
            "not a change notification: a collection Bundle with a resource first and a \
             `{SYSTEM}` tag is expected"
        ));
    }
    Ok(())
}

/// The change a notification is about, `Type/id/_history/version`: the journal's key, so
/// that a change read twice from the feed (a stop between the journal commit and the feed's
/// ack) is journaled once. A deletion's first entry is the version before the deletion.
pub fn key(bundle: &Value) -> Option<String> {
    let focus = focus(bundle)?;
    let version: i64 = focus["meta"]["versionId"].as_str()?.parse().ok()?;
    let version = match kind(bundle)? {
        Kind::Delete => version + 1,
        Kind::Create | Kind::Update => version,
    };
    Some(format!(
        "{}/{}/_history/{version}",
        focus["resourceType"].as_str()?,
        focus["id"].as_str()?
    ))
}

/// The step of an `include` path that goes on from the resources named so far
/// (`payload.contentReference.resolve().content.attachment.url`), as FHIRPath's `resolve()`.
pub const RESOLVE: &str = "resolve()";

/// An `include` path cut at its `resolve()` steps: the first part is read on the changed
/// resource, each next one on the resources the previous part names.
pub fn hops(path: &[String]) -> Vec<&[String]> {
    path.split(|step| step == RESOLVE).collect()
}

/// The references at a dot path of a resource (`subject`, `dispenseRequest.performer`),
/// arrays followed at every step: `Reference.reference` values, and the value itself where
/// the element is a `url` that names a resource (`content.attachment.url` -> `Binary/1`).
pub fn references<'r>(resource: &'r Value, path: &[String]) -> Vec<&'r str> {
    let mut values = vec![resource];
    for step in path {
        values = values
            .into_iter()
            .flat_map(|v| match v.get(step) {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(one) => vec![one],
                None => vec![],
            })
            .collect();
    }
    values
        .into_iter()
        .filter_map(|v| v.as_str().or_else(|| v["reference"].as_str()))
        .collect()
}

/// `(Type, id)` of a reference to a resource of the store: `Patient/1` or
/// `Patient/1/_history/2` (the current version is what gets read). Contained (`#x`),
/// absolute, `urn:` and conditional references name nothing the store can read here.
pub fn local_target(reference: &str) -> Option<(&str, &str)> {
    let path = reference.split("/_history/").next()?;
    let (t, id) = path.split_once('/')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    (plain(t) && plain(id) && passerelle_fhir::types::is_resource_type(t)).then_some((t, id))
}

/// The resource of a change notification (the changed one or one it included) that a
/// `Type/id` reference names.
pub fn resolve<'b>(bundle: &'b Value, reference: &str) -> Option<&'b Value> {
    let (t, id) = local_target(reference)?;
    bundle["entry"]
        .as_array()?
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == t && r["id"] == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(version: &str) -> Value {
        json!({
            "resourceType": "MedicationRequest", "id": "mr1",
            "meta": {"versionId": version},
            "subject": {"reference": "Patient/p1"},
            "dispenseRequest": {"performer": {"reference": "Organization/o1"}},
            "basedOn": [{"reference": "CarePlan/c1"}, {"reference": "#contained"}],
            "note": [{"authorReference": {"reference": "Practitioner/pr1"}}]
        })
    }

    #[test]
    fn a_notification_reads_back_its_focus_kind_and_key() {
        let n = notification(
            Kind::Update,
            order("2"),
            vec![json!({"resourceType": "Patient", "id": "p1"})],
            "2026-01-01T00:00:00.000Z",
        );
        assert_eq!(check(&n), Ok(()));
        assert_eq!(focus(&n).unwrap()["id"], "mr1");
        assert_eq!(kind(&n), Some(Kind::Update));
        assert_eq!(key(&n).as_deref(), Some("MedicationRequest/mr1/_history/2"));
        assert_eq!(n["entry"][1]["resource"]["resourceType"], "Patient");
        assert!(n["entry"][0].get("fullUrl").is_none());
        // A deletion carries the version before it; the key is the deletion's.
        let d = notification(Kind::Delete, order("2"), vec![], "2026-01-01T00:00:00.000Z");
        assert_eq!(key(&d).as_deref(), Some("MedicationRequest/mr1/_history/3"));
        assert!(check(&json!({"resourceType": "Bundle", "type": "collection"})).is_err());
        assert!(check(&json!({"resourceType": "Patient"})).is_err());
    }

    #[test]
    fn references_follow_dot_paths_and_arrays() {
        let r = order("1");
        let at = |p: &str| {
            let path: Vec<String> = p.split('.').map(String::from).collect();
            references(&r, &path)
        };
        assert_eq!(at("subject"), vec!["Patient/p1"]);
        assert_eq!(at("dispenseRequest.performer"), vec!["Organization/o1"]);
        assert_eq!(at("basedOn"), vec!["CarePlan/c1", "#contained"]);
        assert_eq!(at("note.authorReference"), vec!["Practitioner/pr1"]);
        assert!(at("encounter").is_empty());
        // A url element naming a resource is a reference too.
        let d = json!({"resourceType": "DocumentReference",
            "content": [{"attachment": {"url": "Binary/b1"}}, {"attachment": {"data": "AA=="}}]});
        let url: Vec<String> = ["content", "attachment", "url"].map(String::from).into();
        assert_eq!(references(&d, &url), vec!["Binary/b1"]);
        let path: Vec<String> = "payload.contentReference.resolve().content.attachment.url"
            .split('.')
            .map(String::from)
            .collect();
        let hops = hops(&path);
        assert_eq!(hops.len(), 2);
        assert_eq!(hops[0], ["payload", "contentReference"]);
        assert_eq!(hops[1], ["content", "attachment", "url"]);
        assert_eq!(
            local_target("Patient/p1/_history/3"),
            Some(("Patient", "p1"))
        );
        for skipped in [
            "#contained",
            "https://other/fhir/Patient/1",
            "urn:uuid:1",
            "Patient?identifier=x|1",
            "Nothing/1",
        ] {
            assert_eq!(local_target(skipped), None, "{skipped}");
        }
    }
}
