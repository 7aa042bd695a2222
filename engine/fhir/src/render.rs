//! Resources and Bundles as the client gets them: searchset and history Bundles with their
//! links, `_summary` and `_elements` applied.

use serde_json::{Map, Value, json};

use crate::datetime::instant;
use crate::search::{Page, Query, Summary};
use crate::store::Stored;
use crate::types::new_id;

/// Elements every resource keeps whatever `_elements` says.
const MANDATORY: [&str; 3] = ["resourceType", "id", "meta"];

fn subsetted(mut body: Value) -> Value {
    let tag = json!({
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED",
        "display": "subsetted"
    });
    if let Some(meta) = body.get_mut("meta").and_then(Value::as_object_mut) {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(list) = tags.as_array_mut() {
            list.push(tag);
        }
    }
    body
}

/// Applies `_elements` (top-level element names) and `_summary=data|text`.
pub fn shape(body: &Value, summary: Summary, elements: Option<&[String]>) -> Value {
    let Some(obj) = body.as_object() else {
        return body.clone();
    };
    if let Some(keep) = elements {
        let kept: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| MANDATORY.contains(&k.as_str()) || keep.iter().any(|e| e == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        return subsetted(Value::Object(kept));
    }
    match summary {
        Summary::Data => {
            let mut o = obj.clone();
            o.remove("text");
            subsetted(Value::Object(o))
        }
        Summary::Text => {
            let kept: Map<String, Value> = obj
                .iter()
                .filter(|(k, _)| MANDATORY.contains(&k.as_str()) || *k == "text")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            subsetted(Value::Object(kept))
        }
        _ => body.clone(),
    }
}

fn full_url(base: &str, s: &Stored) -> String {
    format!("{base}/{}/{}", s.resource_type, s.id)
}

fn encode_query(pairs: &[(String, String)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// The searchset Bundle of a page. `base` is the server's FHIR base URL.
pub fn searchset(base: &str, q: &Query, page: &Page) -> Value {
    let path = format!("{base}/{}", q.resource_type);
    let query = encode_query(&q.understood);
    let mut links = vec![json!({ "relation": "self", "url": format!("{path}?{query}") })];
    if let Some(cursor) = &page.next {
        let mut next = q.understood.clone();
        next.push(("_cursor".into(), cursor.clone()));
        links.push(json!({ "relation": "next", "url": format!("{path}?{}", encode_query(&next)) }));
    }
    let mut entries: Vec<Value> = Vec::new();
    for (mode, list) in [("match", &page.matches), ("include", &page.included)] {
        for s in list {
            if let Some(b) = &s.body {
                entries.push(json!({
                    "fullUrl": full_url(base, s),
                    "resource": shape(b, q.summary, q.elements.as_deref()),
                    "search": { "mode": mode },
                }));
            }
        }
    }
    if !q.ignored.is_empty() {
        let text = format!("parameters ignored: {}", q.ignored.join("; "));
        entries.push(json!({
            "resource": crate::error::operation_outcome("warning", "not-supported", &text, None),
            "search": { "mode": "outcome" },
        }));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": { "lastUpdated": instant(crate::datetime::now_micros()) },
        "type": "searchset",
        "link": links,
    });
    if let Some(n) = page.total {
        bundle["total"] = json!(n);
    }
    if !entries.is_empty() {
        bundle["entry"] = json!(entries);
    }
    bundle
}

/// The history Bundle of some versions, newest first. `next` is the link to older ones.
pub fn history(base: &str, versions: &[Stored], next: Option<String>, self_url: &str) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|s| {
            let method = s.method.as_str();
            let url = match method {
                "POST" => s.resource_type.clone(),
                _ => format!("{}/{}", s.resource_type, s.id),
            };
            let status = match method {
                "POST" => "201 Created",
                "DELETE" => "204 No Content",
                _ if s.version == 1 => "201 Created",
                _ => "200 OK",
            };
            let mut e = json!({
                "fullUrl": full_url(base, s),
                "request": { "method": method, "url": url },
                "response": {
                    "status": status,
                    "etag": s.etag(),
                    "lastModified": instant(s.last_updated),
                },
            });
            if let Some(b) = &s.body {
                e["resource"] = b.clone();
            }
            e
        })
        .collect();
    let mut links = vec![json!({ "relation": "self", "url": self_url })];
    if let Some(n) = next {
        links.push(json!({ "relation": "next", "url": n }));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "history",
        "link": links,
    });
    if !entries.is_empty() {
        bundle["entry"] = json!(entries);
    }
    bundle
}

/// A Bundle of resources (`$everything`).
pub fn collection(base: &str, resources: &[Stored]) -> Value {
    let entries: Vec<Value> = resources
        .iter()
        .filter_map(|s| {
            s.body.as_ref().map(|b| {
                json!({ "fullUrl": full_url(base, s), "resource": b, "search": { "mode": "match" } })
            })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_keep_mandatory_and_tag_subsetted() {
        let b = json!({"resourceType": "Patient", "id": "1", "meta": {"versionId": "1"}, "name": [{"family": "X"}], "gender": "male"});
        let s = shape(&b, Summary::False, Some(&["gender".to_string()]));
        assert_eq!(s["gender"], "male");
        assert!(s.get("name").is_none());
        assert_eq!(s["meta"]["tag"][0]["code"], "SUBSETTED");
        assert_eq!(shape(&b, Summary::False, None), b);
    }
}
