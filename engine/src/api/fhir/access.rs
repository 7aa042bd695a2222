//! Who is asking, and may they: the access context every FHIR request carries, and the
//! policy that decides. SMART scopes on bearer tokens are the policy today; the role and
//! care-team policy will be another implementation of [`Policy`].

use std::net::SocketAddr;

use passerelle_fhir::FhirError;
use passerelle_fhir::types::check_type;
use serde_json::Value;

use crate::token::Principal;

/// Who, with what, from where, why.
#[derive(Debug, Clone)]
pub struct AccessContext {
    /// The token's subject (its name) and id.
    pub subject: String,
    pub client: String,
    pub scopes: Vec<String>,
    /// `X-Purpose-Of-Use` (a v3 PurposeOfUse code such as TREAT), when the client says.
    pub purpose: Option<String>,
    pub source: Option<SocketAddr>,
}

impl AccessContext {
    pub fn new(principal: &Principal, purpose: Option<String>, source: Option<SocketAddr>) -> Self {
        Self {
            subject: principal.name.clone(),
            client: principal.token_id.clone(),
            scopes: principal.scopes.clone(),
            purpose,
            source,
        }
    }
}

/// What an interaction does to data, in SMART v2 terms (c r u d s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Action {
    fn letter(self) -> char {
        match self {
            Self::Create => 'c',
            Self::Read => 'r',
            Self::Update => 'u',
            Self::Delete => 'd',
            Self::Search => 's',
        }
    }

    fn is_write(self) -> bool {
        matches!(self, Self::Create | Self::Update | Self::Delete)
    }
}

/// The extension point for access decisions.
pub trait Policy: Send + Sync {
    /// Ok when `ctx` may do `action` on resources of `resource_type`.
    fn allow(
        &self,
        ctx: &AccessContext,
        resource_type: &str,
        action: Action,
    ) -> Result<(), FhirError>;
}

/// SMART on FHIR scopes: `system/Patient.read`, `user/*.write`, `system/Observation.rs`
/// (v2). `patient/` scopes need a patient launch context, which bearer tokens do not carry:
/// they grant nothing here.
pub struct SmartScopes;

fn grants(scope: &str, resource_type: &str, action: Action) -> bool {
    let Some((context, rest)) = scope.split_once('/') else {
        return false;
    };
    if context != "system" && context != "user" {
        return false;
    }
    let Some((t, perms)) = rest.split_once('.') else {
        return false;
    };
    if t != "*" && t != resource_type {
        return false;
    }
    // v2 permissions may carry a query (`.rs?category=...`): not honoured, so not granted.
    if perms.contains('?') {
        return false;
    }
    match perms {
        "*" => true,
        "read" => !action.is_write(),
        "write" => action.is_write(),
        letters => {
            letters.chars().all(|c| "cruds".contains(c)) && letters.contains(action.letter())
        }
    }
}

impl Policy for SmartScopes {
    fn allow(
        &self,
        ctx: &AccessContext,
        resource_type: &str,
        action: Action,
    ) -> Result<(), FhirError> {
        if ctx.scopes.iter().any(|s| grants(s, resource_type, action)) {
            return Ok(());
        }
        let needed = if action.is_write() { "write" } else { "read" };
        Err(FhirError::forbidden(format!(
            "the token `{}` has no scope for {needed} on {resource_type} (has: {}); e.g. system/{resource_type}.{needed}",
            ctx.subject,
            ctx.scopes.join(" ")
        )))
    }
}

/// A transaction or batch: every entry's type needs the scope for what the entry does.
pub fn check_entries(
    policy: &dyn Policy,
    ctx: &AccessContext,
    bundle: &Value,
) -> Result<(), FhirError> {
    for (i, entry) in entries(bundle).enumerate() {
        let method = entry
            .pointer("/request/method")
            .and_then(Value::as_str)
            .unwrap_or("");
        let url = entry
            .pointer("/request/url")
            .and_then(Value::as_str)
            .unwrap_or("");
        let t = url
            .trim_start_matches('/')
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        let action = match method {
            "GET" | "HEAD" => Action::Read,
            "POST" => Action::Create,
            "DELETE" => Action::Delete,
            _ => Action::Update,
        };
        if check_type(t).is_ok() {
            policy
                .allow(ctx, t, action)
                .map_err(|e| e.within(&format!("Bundle.entry[{i}]")))?;
        }
    }
    Ok(())
}

/// What a sender submits to a FHIR channel: the scopes the FHIR API would ask for the same
/// writes (a channel is no way around them). A transaction or batch is checked entry by
/// entry; otherwise each resource written (the resource itself, or the resources of a
/// collection, searchset or message Bundle) needs `create`, or `update` when it has an id.
pub fn check_submission(
    policy: &dyn Policy,
    ctx: &AccessContext,
    body: &Value,
) -> Result<(), FhirError> {
    let kind = body["type"].as_str().unwrap_or_default();
    let is_bundle = body["resourceType"] == "Bundle";
    if is_bundle && (kind == "transaction" || kind == "batch") {
        return check_entries(policy, ctx, body);
    }
    let written: Vec<&Value> = if is_bundle && kind != "document" {
        entries(body).filter_map(|e| e.get("resource")).collect()
    } else {
        vec![body]
    };
    for r in written {
        let t = r["resourceType"].as_str().unwrap_or_default();
        let action = if r.get("id").is_some() {
            Action::Update
        } else {
            Action::Create
        };
        policy.allow(ctx, t, action)?;
    }
    Ok(())
}

fn entries(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_scopes() {
        assert!(grants("system/*.read", "Patient", Action::Read));
        assert!(grants("system/*.read", "Patient", Action::Search));
        assert!(!grants("system/*.read", "Patient", Action::Create));
        assert!(grants("user/Patient.write", "Patient", Action::Update));
        assert!(!grants("user/Patient.write", "Observation", Action::Update));
        assert!(grants(
            "system/Observation.rs",
            "Observation",
            Action::Search
        ));
        assert!(!grants(
            "system/Observation.rs",
            "Observation",
            Action::Delete
        ));
        assert!(grants("system/*.*", "Binary", Action::Delete));
        assert!(!grants("patient/*.read", "Patient", Action::Read));
        assert!(!grants("admin", "Patient", Action::Read));
        assert!(!grants(
            "system/Observation.rs?category=x",
            "Observation",
            Action::Read
        ));
        assert!(!grants("system/Patient.xyz", "Patient", Action::Read));
    }
}
