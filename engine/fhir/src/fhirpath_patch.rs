//! FHIRPath Patch (a `Parameters` resource of `operation`s, FHIR R4 §2.21.0.6), the patch
//! format IHE and the French profiles use in transactions (MHD "replace" marks the old
//! DocumentReference `superseded` with one).
//!
//! Paths are the simple FHIRPath this needs: the resource type, then element names, each with
//! an optional `[index]` (`DocumentReference.status`, `Patient.name[0].given`). Functions
//! (`where()`, `first()`...) are refused with a clear error rather than half supported. Values
//! are `value[x]` primitives or complex values; a complex value can also be given as `part`s.
//!
//! Without the structure definitions at hand, `add` tells a list from a single element by what
//! is there: an existing array grows; a new element is a list when its name is one FHIR only
//! uses for lists (`identifier`, `extension`, `coding`...), else a single value.

use serde_json::{Map, Value};

use crate::error::{FhirError, FhirResult, IssueType};

/// Element names that are lists wherever they appear in R4.
const LISTS: &[&str] = &[
    "identifier",
    "extension",
    "modifierExtension",
    "coding",
    "given",
    "prefix",
    "suffix",
    "line",
    "telecom",
    "address",
    "name",
    "contact",
    "contained",
    "profile",
    "tag",
    "security",
    "note",
    "category",
    "relatesTo",
    "content",
    "author",
    "performer",
    "reasonCode",
    "reasonReference",
    "component",
    "parameter",
    "part",
    "entry",
    "link",
];

fn unprocessable(text: impl Into<String>) -> FhirError {
    FhirError::new(422, IssueType::Processing, text)
}

/// One step of a path: an element name and, maybe, an index into it.
#[derive(Debug)]
struct Step {
    name: String,
    index: Option<usize>,
}

fn parse_path(path: &str, resource_type: &str) -> FhirResult<Vec<Step>> {
    let mut parts = path.split('.');
    if parts.next() != Some(resource_type) {
        return Err(FhirError::invalid(format!(
            "patch path `{path}` must start with the resource type {resource_type}"
        )));
    }
    parts
        .map(|p| {
            let (name, index) = match p.split_once('[') {
                Some((n, rest)) => {
                    let i = rest
                        .strip_suffix(']')
                        .and_then(|i| i.parse::<usize>().ok())
                        .ok_or_else(|| {
                            FhirError::invalid(format!("`{p}` in patch path `{path}`: bad index"))
                        })?;
                    (n, Some(i))
                }
                None => (p, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(FhirError::not_supported(format!(
                    "patch path `{path}`: only element names and [index] are supported here"
                )));
            }
            Ok(Step {
                name: name.to_string(),
                index,
            })
        })
        .collect()
}

/// The element a path selects (`None`: it is absent).
fn select<'v>(root: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    let mut at = root;
    for step in steps {
        let next = at.as_object_mut()?.get_mut(&step.name)?;
        at = match (step.index, next) {
            (Some(i), Value::Array(items)) => items.get_mut(i)?,
            (Some(0), v) => v,
            (Some(_), _) => return None,
            (None, v) => v,
        };
    }
    Some(at)
}

/// The value of an operation: `value[x]`, or `part`s building a complex value.
fn value_of(parts: &[Value], what: &str) -> FhirResult<Value> {
    let part = parts
        .iter()
        .find(|p| p["name"] == "value")
        .ok_or_else(|| FhirError::invalid(format!("the {what} operation needs a value")))?;
    part_value(part)
        .ok_or_else(|| FhirError::invalid(format!("the value of the {what} operation is empty")))
}

/// A parameter's `value[x]`, or the object its `part`s make (each named after its element).
fn part_value(part: &Value) -> Option<Value> {
    if let Some((_, v)) = part
        .as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))
    {
        return Some(v.clone());
    }
    let mut obj = Map::new();
    for p in part["part"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        obj.insert(name.to_string(), part_value(p)?);
    }
    (!obj.is_empty()).then_some(Value::Object(obj))
}

fn text<'a>(parts: &'a [Value], name: &str) -> Option<&'a str> {
    parts
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p.as_object())
        .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
        .and_then(|(_, v)| v.as_str())
}

fn number(parts: &[Value], name: &str) -> FhirResult<usize> {
    parts
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["valueInteger"].as_u64())
        .map(|n| n as usize)
        .ok_or_else(|| FhirError::invalid(format!("the operation needs `{name}` (valueInteger)")))
}

/// Applies a FHIRPath Patch to a resource.
pub fn apply(resource: &mut Value, patch: &Value) -> FhirResult<()> {
    let t = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let operations = patch["parameter"].as_array().cloned().unwrap_or_default();
    for (i, op) in operations.iter().enumerate() {
        if op["name"] != "operation" {
            continue;
        }
        let parts = op["part"].as_array().map(Vec::as_slice).unwrap_or_default();
        one(resource, &t, parts).map_err(|e| e.within(&format!("Parameters.parameter[{i}]")))?;
    }
    Ok(())
}

fn one(resource: &mut Value, t: &str, parts: &[Value]) -> FhirResult<()> {
    let kind = text(parts, "type").unwrap_or_default();
    let path =
        text(parts, "path").ok_or_else(|| FhirError::invalid("the operation has no path"))?;
    let mut steps = parse_path(path, t)?;
    match kind {
        "replace" => {
            let value = value_of(parts, kind)?;
            let at = select(resource, &steps)
                .ok_or_else(|| unprocessable(format!("replace: nothing at `{path}`")))?;
            *at = value;
        }
        "delete" => {
            let Some(last) = steps.pop() else {
                return Err(FhirError::invalid(
                    "delete: the path names the resource itself",
                ));
            };
            if let Some(Value::Object(parent)) = select(resource, &steps) {
                match (last.index, parent.get_mut(&last.name)) {
                    (Some(i), Some(Value::Array(items))) if i < items.len() => {
                        items.remove(i);
                        if items.is_empty() {
                            parent.remove(&last.name);
                        }
                    }
                    (None, Some(_)) | (Some(0), Some(_)) => {
                        parent.remove(&last.name);
                    }
                    _ => {}
                }
            }
        }
        "add" => {
            let name = text(parts, "name")
                .ok_or_else(|| FhirError::invalid("add: the operation needs a name"))?;
            let value = value_of(parts, kind)?;
            let Some(Value::Object(container)) = select(resource, &steps) else {
                return Err(unprocessable(format!("add: no element at `{path}`")));
            };
            match container.get_mut(name) {
                Some(Value::Array(items)) => items.push(value),
                Some(_) => {
                    return Err(unprocessable(format!(
                        "add: `{path}.{name}` already has a value (use replace)"
                    )));
                }
                None if LISTS.contains(&name) => {
                    container.insert(name.to_string(), Value::Array(vec![value]));
                }
                None => {
                    container.insert(name.to_string(), value);
                }
            }
        }
        "insert" | "move" => {
            let Some(Value::Array(items)) = select(resource, &steps) else {
                return Err(unprocessable(format!("{kind}: `{path}` is not a list")));
            };
            let (value, to) = if kind == "insert" {
                (value_of(parts, kind)?, number(parts, "index")?)
            } else {
                let from = number(parts, "source")?;
                if from >= items.len() {
                    return Err(unprocessable(format!("move: no item {from} in `{path}`")));
                }
                (items.remove(from), number(parts, "destination")?)
            };
            if to > items.len() {
                return Err(unprocessable(format!(
                    "{kind}: index {to} is past the end of `{path}`"
                )));
            }
            items.insert(to, value);
        }
        other => {
            return Err(FhirError::invalid(format!(
                "patch operation type `{other}`: expected add, insert, delete, replace or move"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(parts: Value) -> Value {
        json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]})
    }

    #[test]
    fn replace_add_insert_move_delete() {
        let mut r = json!({"resourceType": "DocumentReference", "status": "current",
                           "category": [{"text": "a"}]});
        apply(
            &mut r,
            &op(json!([{"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "DocumentReference.status"},
            {"name": "value", "valueCode": "superseded"}])),
        )
        .unwrap();
        assert_eq!(r["status"], "superseded");
        apply(
            &mut r,
            &op(json!([{"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": "DocumentReference"},
            {"name": "name", "valueString": "identifier"},
            {"name": "value", "part": [{"name": "system", "valueUri": "urn:x"},
                                       {"name": "value", "valueString": "1"}]}])),
        )
        .unwrap();
        assert_eq!(r["identifier"], json!([{"system": "urn:x", "value": "1"}]));
        apply(
            &mut r,
            &op(json!([{"name": "type", "valueCode": "insert"},
            {"name": "path", "valueString": "DocumentReference.category"},
            {"name": "index", "valueInteger": 0},
            {"name": "value", "valueCodeableConcept": {"text": "b"}}])),
        )
        .unwrap();
        assert_eq!(r["category"], json!([{"text": "b"}, {"text": "a"}]));
        apply(
            &mut r,
            &op(json!([{"name": "type", "valueCode": "move"},
            {"name": "path", "valueString": "DocumentReference.category"},
            {"name": "source", "valueInteger": 1},
            {"name": "destination", "valueInteger": 0}])),
        )
        .unwrap();
        assert_eq!(r["category"], json!([{"text": "a"}, {"text": "b"}]));
        apply(
            &mut r,
            &op(json!([{"name": "type", "valueCode": "delete"},
            {"name": "path", "valueString": "DocumentReference.category[1]"}])),
        )
        .unwrap();
        assert_eq!(r["category"], json!([{"text": "a"}]));
        apply(
            &mut r,
            &op(json!([{"name": "type", "valueCode": "delete"},
            {"name": "path", "valueString": "DocumentReference.status"}])),
        )
        .unwrap();
        assert!(r.get("status").is_none());
    }

    #[test]
    fn errors_name_the_operation() {
        let mut r = json!({"resourceType": "Patient"});
        let e = apply(
            &mut r,
            &op(json!([{"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.gender"},
            {"name": "value", "valueCode": "male"}])),
        )
        .unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(e.expression.as_deref(), Some("Parameters.parameter[0]"));
        let e = apply(
            &mut r,
            &op(json!([{"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.name.where(use='official')"},
            {"name": "value", "valueCode": "x"}])),
        )
        .unwrap_err();
        assert!(
            e.diagnostics.contains("only element names"),
            "{}",
            e.diagnostics
        );
        let e = apply(
            &mut r,
            &op(json!([{"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Observation.status"},
            {"name": "value", "valueCode": "x"}])),
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
    }
}
