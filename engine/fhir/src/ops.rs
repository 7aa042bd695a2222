//! The FHIR interactions on the store: create, update, patch, delete (plain and
//! conditional), search, `$everything`. Each runs in a write transaction of its own, or in the
//! caller's (a transaction Bundle) through the `WriteTx` methods.

use serde_json::Value;

use crate::error::{FhirError, FhirResult};
use crate::search::{self, Page, Query};
use crate::store::{Expect, Store, Stored, WriteTx};
use crate::types::{check_resource, check_type, new_id};

/// The result of a write: the version written, and whether it was a creation (201).
#[derive(Debug, Clone)]
pub struct Written {
    pub stored: Stored,
    pub created: bool,
}

/// A conditional create that found its match: the existing resource, nothing written.
fn found(stored: Stored) -> Written {
    Written {
        stored,
        created: false,
    }
}

fn only_match(t: &str, criteria: &str, mut matches: Vec<Stored>) -> FhirResult<Option<Stored>> {
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.pop()),
        _ => Err(FhirError::multiple_matches(format!(
            "{t}?{criteria} matches more than one resource"
        ))),
    }
}

/// Whether a patched body says what the current version says, its version and time aside.
fn same_content(patched: &Value, current: Option<&Value>) -> bool {
    let Some(current) = current else {
        return false;
    };
    let bare = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
        }
        v
    };
    bare(patched) == bare(current)
}

impl WriteTx<'_> {
    /// Resources of `t` matching `criteria`, as this transaction sees them.
    pub async fn matching(&mut self, t: &str, criteria: &str) -> FhirResult<Vec<Stored>> {
        let store = self.store();
        search::matching(store, self.connection().await?, t, criteria).await
    }

    /// `POST [type]`, with `If-None-Exist` when `condition` is given. `id` is the one to give
    /// the new resource (a transaction Bundle assigns ids before writing).
    pub async fn create(
        &mut self,
        t: &str,
        body: Value,
        condition: Option<&str>,
        id: Option<String>,
    ) -> FhirResult<Written> {
        check_resource(&body, Some(t))?;
        if let Some(criteria) = condition {
            let matches = self.matching(t, criteria).await?;
            if let Some(existing) = only_match(t, criteria, matches)? {
                return Ok(found(existing));
            }
        }
        let id = id.unwrap_or_else(new_id);
        // Server-made ids are new: no need to ask the database.
        self.fresh(t, &id);
        let stored = self.put(t, &id, body, "POST", Expect::Any).await?;
        crate::supersede::apply(self, &stored).await?;
        Ok(Written {
            stored,
            created: true,
        })
    }

    /// `PUT [type]/[id]`: update, or create with the client's id.
    pub async fn update(
        &mut self,
        t: &str,
        id: &str,
        body: Value,
        expect: Expect,
    ) -> FhirResult<Written> {
        check_resource(&body, Some(t))?;
        match body.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id != id => {
                return Err(FhirError::invalid(format!(
                    "the body's id `{body_id}` is not the URL's `{id}`"
                ))
                .at(format!("{t}.id")));
            }
            None => {
                return Err(FhirError::invalid("an update must carry the resource's id")
                    .at(format!("{t}.id")));
            }
            _ => {}
        }
        let existed = self.head(t, id).await?.is_some_and(|h| !h.deleted);
        let stored = self.put(t, id, body, "PUT", expect).await?;
        crate::supersede::apply(self, &stored).await?;
        Ok(Written {
            stored,
            created: !existed,
        })
    }

    /// `PUT [type]?criteria`: updates the one match, or creates when none.
    pub async fn conditional_update(
        &mut self,
        t: &str,
        criteria: &str,
        mut body: Value,
        expect: Expect,
    ) -> FhirResult<Written> {
        let matches = self.matching(t, criteria).await?;
        let id = match only_match(t, criteria, matches)? {
            Some(existing) => {
                if let Some(body_id) = body.get("id").and_then(Value::as_str)
                    && body_id != existing.id
                {
                    return Err(FhirError::invalid(format!(
                        "the body's id `{body_id}` is not the id of the match, `{}`",
                        existing.id
                    )));
                }
                existing.id
            }
            None => body
                .get("id")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(new_id),
        };
        if let Some(obj) = body.as_object_mut() {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        self.update(t, &id, body, expect).await
    }

    /// `PATCH [type]/[id]` with a JSON Patch document (an array) or a FHIRPath Patch (a
    /// `Parameters` resource).
    pub async fn patch(
        &mut self,
        t: &str,
        id: &str,
        patch: &Value,
        expect: Expect,
    ) -> FhirResult<Written> {
        let current = self.read(t, id).await?;
        if let Expect::Version(v) = expect
            && v != current.version
        {
            return Err(FhirError::precondition(format!(
                "{t}/{id} is at version {}, not {v} (If-Match)",
                current.version
            )));
        }
        let mut body = current.body.clone().expect("read returns live resources");
        if patch.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
            crate::fhirpath_patch::apply(&mut body, patch)?;
        } else {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| FhirError::invalid(format!("not a JSON Patch document: {e}")))?;
            json_patch::patch(&mut body, &ops).map_err(|e| {
                FhirError::new(
                    422,
                    crate::error::IssueType::Processing,
                    format!("the patch does not apply: {e}"),
                )
            })?;
        }
        if body.get("id").and_then(Value::as_str) != Some(id)
            || body.get("resourceType").and_then(Value::as_str) != Some(t)
        {
            return Err(FhirError::new(
                422,
                crate::error::IssueType::Processing,
                "a patch may not change the resource's id or type",
            ));
        }
        // A patch that changes nothing (a status the resource already has, sent again by a
        // peer) makes no version: no change for the feed, nothing for a subscriber to send.
        if same_content(&body, current.body.as_ref()) {
            return Ok(Written {
                stored: current,
                created: false,
            });
        }
        let stored = self
            .put(t, id, body, "PATCH", Expect::Version(current.version))
            .await?;
        Ok(Written {
            stored,
            created: false,
        })
    }

    /// `PATCH [type]?criteria`: patches the one match; none is a 404 (FHIR's conditional
    /// patch), several a 412.
    pub async fn conditional_patch(
        &mut self,
        t: &str,
        criteria: &str,
        patch: &Value,
        expect: Expect,
    ) -> FhirResult<Written> {
        let matches = self.matching(t, criteria).await?;
        match only_match(t, criteria, matches)? {
            Some(m) => self.patch(t, &m.id, patch, expect).await,
            None => Err(FhirError::not_found(format!(
                "no {t} matches {criteria}: nothing to patch"
            ))),
        }
    }

    /// `DELETE [type]?criteria`: deletes the one match (several: 412).
    pub async fn conditional_delete(
        &mut self,
        t: &str,
        criteria: &str,
    ) -> FhirResult<Option<Stored>> {
        let matches = self.matching(t, criteria).await?;
        match only_match(t, criteria, matches)? {
            Some(m) => self.delete(t, &m.id, Expect::Any).await,
            None => Ok(None),
        }
    }
}

impl Store {
    async fn in_tx<T>(
        &self,
        f: impl AsyncFnOnce(&mut WriteTx<'_>) -> FhirResult<T>,
    ) -> FhirResult<T> {
        let mut tx = self.begin().await?;
        let out = f(&mut tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn create(
        &self,
        t: &str,
        body: Value,
        condition: Option<&str>,
    ) -> FhirResult<Written> {
        check_type(t)?;
        self.in_tx(async |tx| tx.create(t, body, condition, None).await)
            .await
    }

    pub async fn update(
        &self,
        t: &str,
        id: &str,
        body: Value,
        expect: Expect,
    ) -> FhirResult<Written> {
        check_type(t)?;
        self.in_tx(async |tx| tx.update(t, id, body, expect).await)
            .await
    }

    pub async fn conditional_update(
        &self,
        t: &str,
        criteria: &str,
        body: Value,
        expect: Expect,
    ) -> FhirResult<Written> {
        check_type(t)?;
        self.in_tx(async |tx| tx.conditional_update(t, criteria, body, expect).await)
            .await
    }

    pub async fn patch(
        &self,
        t: &str,
        id: &str,
        patch: &Value,
        expect: Expect,
    ) -> FhirResult<Written> {
        check_type(t)?;
        self.in_tx(async |tx| tx.patch(t, id, patch, expect).await)
            .await
    }

    pub async fn conditional_patch(
        &self,
        t: &str,
        criteria: &str,
        patch: &Value,
        expect: Expect,
    ) -> FhirResult<Written> {
        check_type(t)?;
        self.in_tx(async |tx| tx.conditional_patch(t, criteria, patch, expect).await)
            .await
    }

    pub async fn delete(&self, t: &str, id: &str, expect: Expect) -> FhirResult<Option<Stored>> {
        check_type(t)?;
        self.in_tx(async |tx| tx.delete(t, id, expect).await).await
    }

    pub async fn conditional_delete(&self, t: &str, criteria: &str) -> FhirResult<Option<Stored>> {
        check_type(t)?;
        self.in_tx(async |tx| tx.conditional_delete(t, criteria).await)
            .await
    }

    pub async fn search(&self, q: &Query) -> FhirResult<Page> {
        let mut conn = self.pool().acquire().await?;
        search::run(self, &mut conn, q).await
    }

    /// `Patient/[id]/$everything`: the patient, every resource that points to it, and what
    /// those point to (practitioners, organisations, medications...). The audit trail is not
    /// part of the record: it is read through `AuditEvent?patient=`.
    pub async fn everything(&self, patient_id: &str, limit: i64) -> FhirResult<Vec<Stored>> {
        let patient = self.read("Patient", patient_id).await?;
        let mut conn = self.pool().acquire().await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT type, id FROM search_reference \
             WHERE target_type = 'Patient' AND target_id = $1 AND type <> 'AuditEvent' LIMIT $2",
        )
        .bind(patient_id)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let compartment = search::fetch(self, &mut conn, &rows).await?;
        let mut seen: std::collections::HashSet<(String, String)> = rows.into_iter().collect();
        seen.insert(("Patient".into(), patient_id.into()));
        let mut sources = vec![("Patient".to_string(), patient_id.to_string())];
        sources.extend(
            compartment
                .iter()
                .map(|s| (s.resource_type.clone(), s.id.clone())),
        );
        let mut referenced = Vec::new();
        for (t, ids) in search::by_type(&sources) {
            for chunk in ids.chunks(500) {
                let targets = search::targets_of(&mut conn, t, chunk, None, None).await?;
                referenced.extend(targets.into_iter().filter(|k| seen.insert(k.clone())));
            }
        }
        let others = search::fetch(self, &mut conn, &referenced).await?;
        let mut all = vec![patient];
        all.extend(compartment);
        all.extend(others);
        Ok(all)
    }
}
