//! What a FHIR R4 resource must look like before the store takes it: a known resource type,
//! a valid logical id, and the elements the store indexes of the datatype they claim.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde_json::Value;

use crate::error::{FhirError, FhirResult};

/// The R4 (4.0.1) resource types, from `schemas/fhir/resource-types.txt`.
pub fn resource_types() -> &'static HashSet<&'static str> {
    static TYPES: OnceLock<HashSet<&'static str>> = OnceLock::new();
    TYPES.get_or_init(|| {
        include_str!("../../../schemas/fhir/resource-types.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

pub fn is_resource_type(name: &str) -> bool {
    resource_types().contains(name)
}

/// Checks a resource type named in a URL or a body.
pub fn check_type(name: &str) -> FhirResult<()> {
    if is_resource_type(name) {
        Ok(())
    } else {
        Err(FhirError::not_found(format!(
            "`{name}` is not a FHIR R4 resource type"
        )))
    }
}

/// FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

pub fn check_id(id: &str) -> FhirResult<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::invalid(format!(
            "`{id}` is not a valid FHIR id (1 to 64 of A-Z a-z 0-9 - .)"
        )))
    }
}

/// A new server-assigned id: a UUID in its usual text form, version 7 (RFC 9562): the time in
/// milliseconds first, then 74 random bits. Ids made close in time sort close together, so a
/// transaction's new resources land on a few index pages instead of one page each (random
/// version 4 ids made SQLite rewrite a page per row of every `(type, id)` index).
pub fn new_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut b: [u8; 16] = rand::random();
    b[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Structure checks of a resource body: a JSON object whose `resourceType` is `expected`
/// (when given) and a known type, an `id` of the right syntax, `meta` an object. Elements
/// the store indexes are checked by the index extraction itself (a date that is not a date
/// is refused there, with its path).
pub fn check_resource(body: &Value, expected: Option<&str>) -> FhirResult<String> {
    let Some(obj) = body.as_object() else {
        return Err(FhirError::structure("a resource must be a JSON object"));
    };
    let Some(rt) = obj.get("resourceType") else {
        return Err(FhirError::structure("the resource has no resourceType").at("resourceType"));
    };
    let Some(rt) = rt.as_str() else {
        return Err(FhirError::structure("resourceType must be a string").at("resourceType"));
    };
    if !is_resource_type(rt) {
        return Err(FhirError::structure(format!(
            "resourceType `{rt}` is not a FHIR R4 resource type"
        ))
        .at("resourceType"));
    }
    if let Some(want) = expected
        && want != rt
    {
        return Err(
            FhirError::invalid(format!("the body is a {rt} but the URL is for {want}"))
                .at("resourceType"),
        );
    }
    if let Some(id) = obj.get("id") {
        match id.as_str() {
            Some(id) if is_valid_id(id) => {}
            _ => {
                return Err(FhirError::structure(format!(
                    "id {id} is not a valid FHIR id (1 to 64 of A-Z a-z 0-9 - .)"
                ))
                .at(format!("{rt}.id")));
            }
        }
    }
    if let Some(meta) = obj.get("meta")
        && !meta.is_object()
    {
        return Err(FhirError::structure("meta must be an object").at(format!("{rt}.meta")));
    }
    for (key, value) in obj {
        if value.is_null() {
            return Err(FhirError::structure(format!(
                "element `{key}` is null: FHIR JSON leaves absent elements out"
            ))
            .at(format!("{rt}.{key}")));
        }
        let first = key.trim_start_matches('_').chars().next();
        if !first.is_some_and(|c| c.is_ascii_alphabetic()) {
            return Err(
                FhirError::structure(format!("`{key}` is not a FHIR element name"))
                    .at(rt.to_string()),
            );
        }
    }
    Ok(rt.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn r4_types_are_known() {
        for t in [
            "Patient",
            "Observation",
            "MedicationRequest",
            "Binary",
            "Bundle",
        ] {
            assert!(is_resource_type(t), "{t}");
        }
        for t in ["patient", "Citation", "Resource", "DomainResource", ""] {
            assert!(!is_resource_type(t), "{t}");
        }
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("a-1.B"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id(""));
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert!(is_valid_id(&id));
        assert_ne!(id, new_id());
        assert_eq!(&id[14..15], "7", "version 7");
        // Time-ordered: an id made a few milliseconds later sorts after.
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert!(new_id() > id);
    }

    #[test]
    fn structure() {
        let ok = json!({"resourceType": "Patient", "id": "p1"});
        assert_eq!(check_resource(&ok, Some("Patient")).unwrap(), "Patient");
        let e = check_resource(&ok, Some("Observation")).unwrap_err();
        assert_eq!(e.status, 400);
        for bad in [
            json!([]),
            json!({"id": "x"}),
            json!({"resourceType": "Nope"}),
            json!({"resourceType": "Patient", "id": "bad id"}),
            json!({"resourceType": "Patient", "meta": 3}),
            json!({"resourceType": "Patient", "name": null}),
            json!({"resourceType": "Patient", "1x": 1}),
        ] {
            let e = check_resource(&bad, None).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
    }
}
