//! `GET /fhir/metadata`: the CapabilityStatement, built from what the server really does
//! (the resource types it knows, the search parameters it indexes).

use std::sync::OnceLock;

use passerelle_fhir::Backend;
use passerelle_fhir::registry::{ParamType, registry};
use passerelle_fhir::types::resource_types;
use serde_json::{Value, json};

const COMMON: [(&str, &str, &str); 2] = [
    (
        "_id",
        "token",
        "http://hl7.org/fhir/SearchParameter/Resource-id",
    ),
    (
        "_lastUpdated",
        "date",
        "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
    ),
];

/// How unknown elements are treated, said once for every type.
const CONFORMANCE: &str = "Resources are checked for structure (resourceType, id syntax, \
    element names, no nulls) and for the datatype of every element the server indexes for \
    search (a date must be a FHIR date). Other elements, including ones FHIR does not define, \
    are kept as sent and returned unchanged; they are not validated against the \
    StructureDefinitions.";

fn search_params(t: &str) -> Vec<Value> {
    let mut out: Vec<Value> = COMMON
        .iter()
        .map(|(n, k, d)| json!({ "name": n, "type": k, "definition": d }))
        .collect();
    let mut own: Vec<_> = registry()
        .of_type(t)
        .filter(|p| p.searchable())
        .map(|p| {
            let kind = match p.kind {
                ParamType::Uri => "uri",
                k => k.name(),
            };
            json!({ "name": p.code, "type": kind })
        })
        .collect();
    own.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    out.extend(own);
    out
}

fn references_of(t: &str) -> Vec<String> {
    let mut refs: Vec<String> = registry()
        .of_type(t)
        .filter(|p| p.kind == ParamType::Reference)
        .map(|p| format!("{t}:{}", p.code))
        .collect();
    refs.sort();
    refs
}

/// The `Type:param` references of any type that may point to `t` (its `_revinclude`s).
fn references_to(types: &[&str], t: &str) -> Vec<String> {
    types
        .iter()
        .flat_map(|source| {
            registry()
                .of_type(source)
                .filter(|p| p.kind == ParamType::Reference)
                .filter(|p| p.targets.is_empty() || p.targets.iter().any(|x| x == t))
                .map(move |p| format!("{source}:{}", p.code))
        })
        .collect()
}

const INTERACTIONS: [&str; 9] = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// The statement never changes while a server runs: built once.
pub fn statement(backend: Backend) -> &'static Value {
    static STATEMENT: OnceLock<Value> = OnceLock::new();
    STATEMENT.get_or_init(|| build(backend))
}

fn build(backend: Backend) -> Value {
    let mut types: Vec<&str> = resource_types().iter().copied().collect();
    types.sort();
    let interactions: Vec<Value> = INTERACTIONS.iter().map(|c| json!({ "code": c })).collect();
    let resources: Vec<Value> = types
        .iter()
        .map(|t| {
            let mut r = json!({
                "type": t,
                "documentation": CONFORMANCE,
                "interaction": interactions,
                "versioning": "versioned",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "referencePolicy": ["literal", "local"],
                "searchInclude": references_of(t),
                "searchRevInclude": references_to(&types, t),
                "searchParam": search_params(t),
            });
            if *t == "Patient" {
                r["operation"] = json!([{
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"
                }]);
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "Passerelle",
        "kind": "instance",
        "software": { "name": "Passerelle", "version": env!("CARGO_PKG_VERSION") },
        "implementation": {
            "description": format!("Passerelle FHIR store ({} backend). {CONFORMANCE}", backend.name()),
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search: string (default, :exact, :contains), token (system|code, :not, :text), reference (Type/id, :Type, :identifier, chains such as subject:Patient.name), date, number and quantity with the prefixes eq ne gt lt ge le sa eb ap, uri (:below), :missing on all; _id, _lastUpdated, _count, _sort, _include, _revinclude (:iterate), _summary (count, data, text), _elements, _total=accurate. Paging links stay valid while data changes (keyset cursors). Composite parameters are not supported.",
            "security": {
                "cors": false,
                "service": [{ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"
                }] }],
                "description": "Bearer tokens (passerelle token issue) carrying SMART scopes: system/ or user/ with Type or *, and read, write, * or the v2 letters cruds. Every interaction is recorded as an AuditEvent."
            },
            "resource": resources,
            "interaction": [
                { "code": "transaction" },
                { "code": "batch" },
                { "code": "history-system" }
            ],
            "searchParam": COMMON.iter().map(|(n, k, d)| json!({ "name": n, "type": k, "definition": d })).collect::<Vec<_>>(),
        }]
    })
}
