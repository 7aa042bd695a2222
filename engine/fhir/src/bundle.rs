//! Batch and transaction Bundles (`POST /fhir`).
//!
//! A transaction is all or nothing: one database transaction, entries processed in the order
//! FHIR prescribes (DELETE, POST, PUT/PATCH, GET), `urn:uuid:` full URLs given their ids
//! before anything is written, conditional references (`Patient?identifier=...`) resolved to
//! the one resource they match. The first failing entry rolls everything back and the error
//! names it (`Bundle.entry[49]`). A batch runs each entry on its own.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::datetime::instant;
use crate::error::{FhirError, FhirResult};
use crate::ops::Written;
use crate::search;
use crate::store::{Expect, Store, Stored, WriteTx};
use crate::types::{check_id, check_resource, check_type, new_id};

/// What the client asked for in each entry's response (`Prefer: return=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    #[default]
    Minimal,
    Representation,
    OperationOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    /// `POST Patient/$merge` with a Parameters resource.
    Merge,
}

impl Method {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "GET" | "HEAD" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// FHIR transaction processing order.
    fn rank(self) -> u8 {
        match self {
            Self::Delete => 0,
            Self::Post => 1,
            Self::Put | Self::Patch => 2,
            // After the writes: a merge's target may be created by the same transaction.
            Self::Merge => 3,
            Self::Get => 4,
        }
    }
}

/// One entry, read.
struct Entry {
    index: usize,
    method: Method,
    /// `Patient`, `Patient/1` or `Patient?identifier=x`, without the server base.
    url: String,
    full_url: Option<String>,
    resource: Option<Value>,
    if_match: Option<i64>,
    if_none_exist: Option<String>,
}

fn entry_error(i: usize, e: FhirError) -> FhirError {
    e.within(&format!("Bundle.entry[{i}]"))
}

/// `W/"3"` or `3` → 3.
pub fn parse_etag(text: &str) -> Option<i64> {
    let t = text.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.trim_matches('"').parse().ok()
}

fn read_entries(bundle: &Value) -> FhirResult<(String, Vec<Entry>)> {
    let kind = bundle
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind != "transaction" && kind != "batch" {
        return Err(FhirError::invalid(format!(
            "Bundle.type is `{kind}`: POST to the server base takes a transaction or a batch"
        ))
        .at("Bundle.type"));
    }
    let raw = match bundle.get("entry") {
        None => &Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(FhirError::structure("Bundle.entry must be an array").at("Bundle.entry"));
        }
    };
    let mut entries = Vec::with_capacity(raw.len());
    for (index, e) in raw.iter().enumerate() {
        let request = e
            .get("request")
            .ok_or_else(|| entry_error(index, FhirError::invalid("the entry has no request")))?;
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .and_then(Method::parse)
            .ok_or_else(|| {
                entry_error(
                    index,
                    FhirError::invalid("request.method must be GET, POST, PUT, PATCH or DELETE"),
                )
            })?;
        let url = request.get("url").and_then(Value::as_str).ok_or_else(|| {
            entry_error(index, FhirError::invalid("the entry has no request.url"))
        })?;
        let url = url.trim_start_matches('/').to_string();
        let method = match method {
            Method::Post if url == "Patient/$merge" => Method::Merge,
            m => m,
        };
        let if_match = match request.get("ifMatch").and_then(Value::as_str) {
            Some(t) => Some(parse_etag(t).ok_or_else(|| {
                entry_error(
                    index,
                    FhirError::invalid(format!("ifMatch `{t}` is not a version")),
                )
            })?),
            None => None,
        };
        entries.push(Entry {
            index,
            method,
            url,
            full_url: e.get("fullUrl").and_then(Value::as_str).map(String::from),
            resource: e.get("resource").cloned(),
            if_match,
            if_none_exist: request
                .get("ifNoneExist")
                .and_then(Value::as_str)
                .map(|s| s.trim_start_matches('?').to_string()),
        });
    }
    Ok((kind, entries))
}

/// `Patient/1` → (Patient, Some(1), None); `Patient?x=y` → (Patient, None, Some(x=y)).
fn split_url(url: &str) -> FhirResult<(String, Option<String>, Option<String>)> {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (url, None),
    };
    let mut parts = path.split('/');
    let t = parts.next().unwrap_or_default().to_string();
    check_type(&t).map_err(|e| FhirError::invalid(e.diagnostics))?;
    let id = parts.next().map(String::from);
    if let Some(id) = &id {
        check_id(id)?;
    }
    Ok((t, id, query))
}

fn body(e: &Entry) -> FhirResult<Value> {
    e.resource
        .clone()
        .ok_or_else(|| FhirError::invalid(format!("{:?} needs a resource", e.method)))
}

/// Rewrites every `reference` found in the map (placeholders → `Type/id`).
/// Replaces the placeholders of the map wherever they are: in `Reference.reference` and in
/// any other element that holds one whole (an `Attachment.url` pointing to a Binary of the
/// same transaction), as FHIR's transaction rules say for uri and url elements.
fn rewrite_references(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::String(s) => {
            if let Some(to) = map.get(s.as_str()) {
                *s = to.clone();
            }
        }
        Value::Object(obj) => obj.values_mut().for_each(|c| rewrite_references(c, map)),
        Value::Array(items) => items.iter_mut().for_each(|c| rewrite_references(c, map)),
        _ => {}
    }
}

/// The conditional references (`Type?criteria`) of a resource.
/// Conditional criteria may name an earlier entry by its `urn:uuid:` full URL
/// (`AllergyIntolerance?patient=urn:uuid:...&code=...`): the value is replaced by the id that
/// entry resolved to, so a key can include the resource it belongs to. A full URL that no
/// earlier entry resolved is left as it is (and matches nothing).
fn resolve_criteria(criteria: &str, map: &HashMap<String, String>) -> String {
    if !criteria.contains("urn") || map.is_empty() {
        return criteria.to_string();
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut changed = false;
    for (k, v) in form_urlencoded::parse(criteria.as_bytes()) {
        match map.get(v.as_ref()) {
            Some(resolved) => {
                changed = true;
                out.append_pair(&k, resolved)
            }
            None => out.append_pair(&k, &v),
        };
    }
    if changed {
        out.finish()
    } else {
        criteria.to_string()
    }
}

fn conditional_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(obj) => {
            if let Some(Value::String(r)) = obj.get("reference")
                && r.contains('?')
                && !r.contains("://")
            {
                out.push(r.clone());
            }
            obj.values().for_each(|c| conditional_references(c, out));
        }
        Value::Array(items) => items.iter().for_each(|c| conditional_references(c, out)),
        _ => {}
    }
}

fn response(stored: &Stored, status: &str, ret: Return) -> Value {
    let mut r = Map::new();
    r.insert("status".into(), json!(status));
    r.insert("location".into(), json!(stored.versioned_ref()));
    r.insert("etag".into(), json!(stored.etag()));
    r.insert("lastModified".into(), json!(instant(stored.last_updated)));
    let mut entry = json!({ "response": r });
    entry["fullUrl"] = json!(format!("{}/{}", stored.resource_type, stored.id));
    match ret {
        Return::Representation => {
            if let Some(b) = &stored.body {
                entry["resource"] = b.clone();
            }
        }
        Return::OperationOutcome => {
            entry["response"]["outcome"] = crate::error::operation_outcome(
                "information",
                "informational",
                &format!("{} {}", status, stored.versioned_ref()),
                None,
            );
        }
        Return::Minimal => {}
    }
    entry
}

fn written_response(w: &Written, ret: Return) -> Value {
    response(
        &w.stored,
        if w.created { "201 Created" } else { "200 OK" },
        ret,
    )
}

/// A GET entry: read or search, answered as FHIR would answer it alone.
async fn get_entry(store: &Store, tx: Option<&mut WriteTx<'_>>, url: &str) -> FhirResult<Value> {
    let (t, id, query) = split_url(url)?;
    if let Some(id) = id {
        let s = match tx {
            Some(tx) => tx.read(&t, &id).await?,
            None => store.read(&t, &id).await?,
        };
        let mut entry = response(&s, "200 OK", Return::Representation);
        entry["response"]
            .as_object_mut()
            .expect("object")
            .remove("location");
        return Ok(entry);
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let q = search::parse::parse(&t, &pairs, false)?;
    let page = match tx {
        Some(tx) => {
            let s = tx.store();
            search::run(s, tx.connection().await?, &q).await?
        }
        None => store.search(&q).await?,
    };
    let entries: Vec<Value> = page
        .matches
        .iter()
        .filter_map(|m| m.body.clone())
        .map(|b| json!({ "resource": b, "search": { "mode": "match" } }))
        .collect();
    let mut result = json!({ "resourceType": "Bundle", "type": "searchset", "entry": entries });
    if let Some(n) = page.total {
        result["total"] = json!(n);
    }
    Ok(json!({ "resource": result, "response": { "status": "200 OK" } }))
}

/// The R4 Bundle types.
pub const BUNDLE_TYPES: [&str; 9] = [
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];

/// Checks what a system submits, without a store: the structure of the resource (of each
/// entry's resource for a Bundle, and of each transaction request) and the datatypes of the
/// elements the store indexes. A sender hears at once, with the entry and element at fault,
/// what the store would refuse.
pub fn check_submission(body: &Value) -> FhirResult<()> {
    let t = check_resource(body, None)?;
    crate::extract::index(&t, body)?;
    if t != "Bundle" {
        return Ok(());
    }
    let kind = body.get("type").and_then(Value::as_str).unwrap_or_default();
    if !BUNDLE_TYPES.contains(&kind) {
        return Err(FhirError::structure(format!(
            "Bundle.type `{kind}` is not one of {}",
            BUNDLE_TYPES.join(", ")
        ))
        .at("Bundle.type"));
    }
    if kind == "transaction" || kind == "batch" {
        read_entries(body)?;
    }
    let entries = match body.get("entry") {
        None => return Ok(()),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(FhirError::structure("Bundle.entry must be an array").at("Bundle.entry"));
        }
    };
    for (i, e) in entries.iter().enumerate() {
        let Some(resource) = e.get("resource") else {
            continue;
        };
        // `Bundle.entry[1].resource.effective`: the inner path without its resource type.
        let at = |mut err: FhirError| {
            if let Some(inner) = err.expression.take() {
                let t = resource["resourceType"].as_str().unwrap_or_default();
                let rest = inner
                    .strip_prefix(t)
                    .unwrap_or(&inner)
                    .trim_start_matches('.');
                err.expression = (!rest.is_empty()).then(|| rest.to_string());
            }
            err.within(&format!("Bundle.entry[{i}].resource"))
        };
        let t = check_resource(resource, None).map_err(at)?;
        crate::extract::index(&t, resource).map_err(at)?;
    }
    Ok(())
}

/// Processes a transaction or batch Bundle; returns the response Bundle.
pub async fn process(store: &Store, bundle: &Value, ret: Return) -> FhirResult<Value> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::invalid("POST to the server base takes a Bundle").at("resourceType"));
    }
    let (kind, entries) = read_entries(bundle)?;
    if kind == "batch" {
        return batch(store, entries, ret).await;
    }
    transaction(store, entries, ret).await
}

/// Applies transaction Bundles in one store transaction: all of them, or none (the first
/// failure is returned). For callers with many small Bundles to write at once (a channel's
/// outbox), one commit instead of one each.
pub async fn process_all(store: &Store, bundles: &[&Value]) -> FhirResult<Vec<Value>> {
    let mut tx = store.begin().await?;
    let mut out = Vec::with_capacity(bundles.len());
    for bundle in bundles {
        let (kind, entries) = read_entries(bundle)?;
        if kind != "transaction" {
            return Err(FhirError::invalid(
                "only transaction Bundles are applied together",
            ));
        }
        out.push(transaction_in(&mut tx, store, entries, Return::Minimal).await?);
    }
    tx.commit().await?;
    Ok(out)
}

async fn transaction(store: &Store, entries: Vec<Entry>, ret: Return) -> FhirResult<Value> {
    let mut tx = store.begin().await?;
    let response = transaction_in(&mut tx, store, entries, ret).await?;
    tx.commit().await?;
    Ok(response)
}

async fn transaction_in(
    tx: &mut WriteTx<'_>,
    store: &Store,
    mut entries: Vec<Entry>,
    ret: Return,
) -> FhirResult<Value> {
    let mut map: HashMap<String, String> = HashMap::new();
    let mut known_existing: HashMap<usize, Stored> = HashMap::new();
    // Ids first: every POST gets its id (or, for a conditional create that matches, the id
    // of the match), so references between entries can be rewritten before any write.
    let mut ids: HashMap<usize, String> = HashMap::new();
    // The id each conditional PUT resolved to (its match, or the id it will create).
    let mut put_ids: HashMap<usize, String> = HashMap::new();
    for e in &entries {
        let result: FhirResult<()> = async {
            match e.method {
                Method::Post => {
                    let (t, _, _) = split_url(&e.url)?;
                    let id = match &e.if_none_exist {
                        Some(criteria) => {
                            let criteria = resolve_criteria(criteria, &map);
                            let matches = tx.matching(&t, &criteria).await?;
                            match matches.len() {
                                0 => new_id(),
                                1 => {
                                    let m = matches.into_iter().next().expect("one");
                                    let id = m.id.clone();
                                    known_existing.insert(e.index, m);
                                    id
                                }
                                _ => {
                                    return Err(FhirError::multiple_matches(format!(
                                        "ifNoneExist `{criteria}` matches more than one {t}"
                                    )));
                                }
                            }
                        }
                        None => new_id(),
                    };
                    if let Some(full) = &e.full_url {
                        map.insert(full.clone(), format!("{t}/{id}"));
                    }
                    ids.insert(e.index, id);
                }
                Method::Put => {
                    let (t, id, query) = split_url(&e.url)?;
                    // A conditional update is resolved now, like a conditional create: other
                    // entries may refer to it by its fullUrl.
                    let id = match (id, query) {
                        (Some(id), _) => Some(id),
                        (None, Some(criteria)) => {
                            let criteria = resolve_criteria(&criteria, &map);
                            let matches = tx.matching(&t, &criteria).await?;
                            let id = match matches.as_slice() {
                                [] => e
                                    .resource
                                    .as_ref()
                                    .and_then(|r| r.get("id"))
                                    .and_then(Value::as_str)
                                    .map(String::from)
                                    .unwrap_or_else(new_id),
                                [one] => one.id.clone(),
                                _ => {
                                    return Err(FhirError::multiple_matches(format!(
                                        "`{t}?{criteria}` matches more than one {t}"
                                    )));
                                }
                            };
                            put_ids.insert(e.index, id.clone());
                            Some(id)
                        }
                        (None, None) => None,
                    };
                    if let (Some(full), Some(id)) = (&e.full_url, id)
                        && full.starts_with("urn:")
                    {
                        map.insert(full.clone(), format!("{t}/{id}"));
                    }
                }
                _ => {}
            }
            Ok(())
        }
        .await;
        result.map_err(|err| entry_error(e.index, err))?;
    }
    for e in entries.iter_mut() {
        if let Some(r) = e.resource.as_mut() {
            rewrite_references(r, &map);
            let mut conditional = Vec::new();
            conditional_references(r, &mut conditional);
            let mut resolved = HashMap::new();
            for reference in conditional {
                let (t, criteria) = reference.split_once('?').expect("has ?");
                check_type(t)
                    .map_err(|x| entry_error(e.index, FhirError::invalid(x.diagnostics)))?;
                let matches = tx
                    .matching(t, criteria)
                    .await
                    .map_err(|x| entry_error(e.index, x))?;
                let target = match matches.len() {
                    1 => format!("{t}/{}", matches[0].id),
                    0 => {
                        return Err(entry_error(
                            e.index,
                            FhirError::not_found(format!(
                                "the conditional reference `{reference}` matches nothing"
                            )),
                        ));
                    }
                    _ => {
                        return Err(entry_error(
                            e.index,
                            FhirError::multiple_matches(format!(
                                "the conditional reference `{reference}` matches more than one resource"
                            )),
                        ));
                    }
                };
                resolved.insert(reference, target);
            }
            rewrite_references(r, &resolved);
        }
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].method.rank(), i));
    let mut responses: Vec<Value> = vec![Value::Null; entries.len()];
    for i in order {
        let e = &entries[i];
        let result: FhirResult<Value> = async {
            match e.method {
                Method::Post => {
                    if let Some(existing) = known_existing.remove(&e.index) {
                        return Ok(response(&existing, "200 OK", ret));
                    }
                    let (t, _, _) = split_url(&e.url)?;
                    let w = tx.create(&t, body(e)?, None, ids.remove(&e.index)).await?;
                    Ok(written_response(&w, ret))
                }
                Method::Put => {
                    let (t, id, query) = split_url(&e.url)?;
                    let expect = e.if_match.map_or(Expect::Any, Expect::Version);
                    let w = match (id, query) {
                        (Some(id), _) => tx.update(&t, &id, body(e)?, expect).await?,
                        (None, Some(_)) => {
                            let id = put_ids.remove(&e.index).expect("resolved with the ids");
                            let mut b = body(e)?;
                            match b.get("id").and_then(Value::as_str) {
                                Some(body_id) if body_id != id => {
                                    return Err(FhirError::invalid(format!(
                                        "the body's id `{body_id}` is not the id of the match, `{id}`"
                                    )));
                                }
                                _ => {
                                    if let Some(obj) = b.as_object_mut() {
                                        obj.insert("id".into(), json!(id));
                                    }
                                }
                            }
                            tx.update(&t, &id, b, expect).await?
                        }
                        (None, None) => {
                            return Err(FhirError::invalid("PUT needs Type/id or Type?criteria"));
                        }
                    };
                    Ok(written_response(&w, ret))
                }
                Method::Patch => {
                    let (t, id, query) = split_url(&e.url)?;
                    let patch = patch_document(e)?;
                    let expect = e.if_match.map_or(Expect::Any, Expect::Version);
                    let w = match (id, query) {
                        (Some(id), _) => tx.patch(&t, &id, &patch, expect).await?,
                        (None, Some(q)) => tx.conditional_patch(&t, &q, &patch, expect).await?,
                        (None, None) => {
                            return Err(FhirError::invalid(
                                "PATCH needs Type/id or Type?criteria",
                            ));
                        }
                    };
                    Ok(written_response(&w, ret))
                }
                Method::Delete => {
                    let (t, id, query) = split_url(&e.url)?;
                    let expect = e.if_match.map_or(Expect::Any, Expect::Version);
                    match (id, query) {
                        (Some(id), _) => tx.delete(&t, &id, expect).await?,
                        (None, Some(q)) => tx.conditional_delete(&t, &q).await?,
                        (None, None) => {
                            return Err(FhirError::invalid(
                                "DELETE needs Type/id or Type?criteria",
                            ));
                        }
                    };
                    Ok(json!({ "response": { "status": "204 No Content" } }))
                }
                Method::Merge => {
                    let summary = tx.merge_patients(&body(e)?).await?;
                    Ok(json!({ "response": { "status": "200 OK", "outcome": {
                        "resourceType": "OperationOutcome",
                        "issue": [{ "severity": "information", "code": "informational",
                                    "diagnostics": summary }]
                    }}}))
                }
                Method::Get => get_entry(store, Some(&mut *tx), &e.url).await,
            }
        }
        .await;
        responses[i] = result.map_err(|err| entry_error(e.index, err))?;
    }
    Ok(response_bundle("transaction-response", responses))
}

/// A PATCH entry carries a FHIRPath Patch (a Parameters resource), a JSON Patch in a Binary
/// (FHIR's way for JSON Patch) or, leniently, a JSON Patch array.
fn patch_document(e: &Entry) -> FhirResult<Value> {
    let r = e
        .resource
        .as_ref()
        .ok_or_else(|| FhirError::invalid("PATCH needs a patch document"))?;
    if r.is_array() || r.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
        return Ok(r.clone());
    }
    if r.get("resourceType").and_then(Value::as_str) == Some("Binary") {
        let data = r.get("data").and_then(Value::as_str).unwrap_or_default();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| FhirError::invalid("the patch Binary's data is not base64"))?;
        return serde_json::from_slice(&bytes)
            .map_err(|e| FhirError::invalid(format!("the patch Binary's data is not JSON: {e}")));
    }
    Err(FhirError::not_supported(
        "PATCH entries take a FHIRPath Patch (Parameters) or a JSON Patch in a Binary",
    ))
}

async fn batch(store: &Store, entries: Vec<Entry>, ret: Return) -> FhirResult<Value> {
    let mut responses = Vec::with_capacity(entries.len());
    for e in entries {
        let index = e.index;
        let result = match e.method {
            Method::Get => get_entry(store, None, &e.url).await,
            _ => {
                let single = Entry { index: 0, ..e };
                transaction(store, vec![single], ret)
                    .await
                    .map(|mut b| b["entry"][0].take())
            }
        };
        responses.push(match result {
            Ok(v) => v,
            Err(err) => {
                let err = entry_error(index, err);
                json!({ "response": {
                    "status": format!("{} {}", err.status, status_text(err.status)),
                    "outcome": err.outcome(),
                }})
            }
        });
    }
    Ok(response_bundle("batch-response", responses))
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        422 => "Unprocessable Entity",
        _ => "Error",
    }
}

fn response_bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "type": kind,
        "entry": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("7"), Some(7));
        assert_eq!(parse_etag("W/\"x\""), None);
    }

    #[test]
    fn references_are_rewritten_everywhere() {
        let mut v = json!({"subject": {"reference": "urn:uuid:1"}, "x": [{"y": {"reference": "urn:uuid:1"}}], "z": {"reference": "Patient/2"}});
        let map = HashMap::from([("urn:uuid:1".to_string(), "Patient/abc".to_string())]);
        rewrite_references(&mut v, &map);
        assert_eq!(v["subject"]["reference"], "Patient/abc");
        assert_eq!(v["x"][0]["y"]["reference"], "Patient/abc");
        assert_eq!(v["z"]["reference"], "Patient/2");
    }

    #[test]
    fn criteria_name_earlier_entries() {
        let map = HashMap::from([("urn:uuid:1".to_string(), "Patient/abc".to_string())]);
        assert_eq!(
            resolve_criteria("patient=urn:uuid:1&code=http://loinc.org|1-8", &map),
            "patient=Patient%2Fabc&code=http%3A%2F%2Floinc.org%7C1-8"
        );
        assert_eq!(
            resolve_criteria("patient=urn%3Auuid%3A1", &map),
            "patient=Patient%2Fabc"
        );
        assert_eq!(
            resolve_criteria("patient=urn:uuid:2", &map),
            "patient=urn:uuid:2"
        );
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("Patient/1").unwrap(),
            ("Patient".into(), Some("1".into()), None)
        );
        assert_eq!(
            split_url("Patient?identifier=x").unwrap(),
            ("Patient".into(), None, Some("identifier=x".into()))
        );
        assert!(split_url("Nope/1").is_err());
        assert!(split_url("Patient/bad id").is_err());
    }
}
