//! Patient merge (FHIR's `Patient/$merge`, as a transaction entry): the source patient is a
//! duplicate of the target. Every resource that refers to the source is made to refer to the
//! target, the source is marked inactive and `replaced-by` the target, and the target
//! `replaces` the source (Patient.link). HL7 v2 ADT^A40 maps to it.
//!
//! The audit trail (AuditEvent, Provenance) is left as it was: it records what happened to
//! whom at the time.

use serde_json::{Value, json};

use crate::error::{FhirError, FhirResult};
use crate::store::{Expect, WriteTx};

/// The `Parameters` of a merge: `source-patient-identifier` and `target-patient-identifier`
/// (Identifier), or `source-patient` and `target-patient` (Reference `Patient/id`).
fn criteria(params: &Value, side: &str) -> FhirResult<String> {
    let list = params
        .get("parameter")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let find = |name: &str| list.iter().find(|p| p["name"] == name);
    if let Some(p) = find(&format!("{side}-patient-identifier")) {
        let id = &p["valueIdentifier"];
        let value = id["value"].as_str().unwrap_or_default();
        if value.is_empty() {
            return Err(FhirError::invalid(format!(
                "{side}-patient-identifier has no value"
            )));
        }
        return Ok(match id["system"].as_str() {
            Some(system) => format!("identifier={system}|{value}"),
            None => format!("identifier={value}"),
        });
    }
    if let Some(p) = find(&format!("{side}-patient"))
        && let Some(r) = p["valueReference"]["reference"].as_str()
        && let Some(id) = r.strip_prefix("Patient/")
    {
        return Ok(format!("_id={id}"));
    }
    Err(FhirError::invalid(format!(
        "$merge needs `{side}-patient-identifier` or `{side}-patient`"
    )))
}

/// Replaces every reference to `from` (`Patient/1`, or a URL ending in `/Patient/1`) by `to`.
fn rewrite(v: &mut Value, from: &str, to: &str) -> bool {
    match v {
        Value::Object(map) => {
            let mut changed = false;
            if let Some(Value::String(r)) = map.get_mut("reference")
                && (r == from || r.ends_with(&format!("/{from}")))
            {
                *r = to.to_string();
                changed = true;
            }
            for (_, child) in map.iter_mut() {
                changed |= rewrite(child, from, to);
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |acc, i| rewrite(i, from, to) | acc),
        _ => false,
    }
}

fn link(body: &mut Value, other: &str, kind: &str) {
    let links = body
        .as_object_mut()
        .expect("a stored resource is an object")
        .entry("link")
        .or_insert_with(|| json!([]));
    if let Value::Array(list) = links
        && !list
            .iter()
            .any(|l| l["other"]["reference"] == other && l["type"] == kind)
    {
        list.push(json!({ "other": { "reference": other }, "type": kind }));
    }
}

impl WriteTx<'_> {
    async fn one_patient(&mut self, criteria: &str, side: &str) -> FhirResult<Option<String>> {
        let mut found = self.matching("Patient", criteria).await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(found.pop().expect("one").id)),
            _ => Err(FhirError::multiple_matches(format!(
                "the {side} patient `Patient?{criteria}` is more than one patient"
            ))),
        }
    }

    /// Merges the source patient into the target; returns a summary for the response.
    pub async fn merge_patients(&mut self, params: &Value) -> FhirResult<String> {
        let (source, target) = (criteria(params, "source")?, criteria(params, "target")?);
        let Some(target_id) = self.one_patient(&target, "target").await? else {
            return Err(FhirError::not_found(format!(
                "the target patient `Patient?{target}` does not exist"
            )));
        };
        let Some(source_id) = self.one_patient(&source, "source").await? else {
            // Nothing was recorded under the old identity: nothing to move.
            return Ok(format!("no patient `Patient?{source}`: nothing to merge"));
        };
        if source_id == target_id {
            return Ok("source and target are the same patient".into());
        }
        let (from, to) = (
            format!("Patient/{source_id}"),
            format!("Patient/{target_id}"),
        );
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT type, id FROM search_reference WHERE target_type = 'Patient' \
             AND target_id = $1 AND type NOT IN ('AuditEvent', 'Provenance')",
        )
        .bind(&source_id)
        .fetch_all(self.connection().await?)
        .await?;
        let mut moved = 0;
        for (t, id) in rows {
            if t == "Patient" && (id == source_id || id == target_id) {
                continue;
            }
            let current = self.read(&t, &id).await?;
            let mut body = current.body.expect("read returns live resources");
            if rewrite(&mut body, &from, &to) {
                self.put(&t, &id, body, "PUT", Expect::Version(current.version))
                    .await?;
                moved += 1;
            }
        }
        let source = self.read("Patient", &source_id).await?;
        let mut body = source.body.expect("live");
        body["active"] = json!(false);
        link(&mut body, &to, "replaced-by");
        self.put(
            "Patient",
            &source_id,
            body,
            "PUT",
            Expect::Version(source.version),
        )
        .await?;
        let target = self.read("Patient", &target_id).await?;
        let mut body = target.body.expect("live");
        link(&mut body, &from, "replaces");
        self.put(
            "Patient",
            &target_id,
            body,
            "PUT",
            Expect::Version(target.version),
        )
        .await?;
        Ok(format!(
            "{from} merged into {to}: {moved} resource(s) now refer to {to}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_rewritten_everywhere() {
        let mut v = json!({"subject": {"reference": "Patient/1"},
            "performer": [{"reference": "http://x/fhir/Patient/1"}, {"reference": "Patient/10"}]});
        assert!(rewrite(&mut v, "Patient/1", "Patient/2"));
        assert_eq!(v["subject"]["reference"], "Patient/2");
        assert_eq!(v["performer"][0]["reference"], "Patient/2");
        assert_eq!(v["performer"][1]["reference"], "Patient/10");
        let p = json!({"parameter": [
            {"name": "source-patient-identifier", "valueIdentifier": {"system": "s", "value": "1"}},
            {"name": "target-patient", "valueReference": {"reference": "Patient/7"}}]});
        assert_eq!(criteria(&p, "source").unwrap(), "identifier=s|1");
        assert_eq!(criteria(&p, "target").unwrap(), "_id=7");
    }
}
