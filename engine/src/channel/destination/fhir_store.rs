//! Applies the FHIR transaction Bundle a mapping produced to the engine's own FHIR store.
//! The Bundle's conditional updates make a delivery made again (after a crash, or a message
//! sent twice) change nothing. Every write is audited like a write through the API: an
//! AuditEvent per message, naming the channel, the message and the resources written, added
//! to the message's own transaction, so the data and its trace are committed together or not
//! at all.

use std::sync::Arc;

use passerelle_fhir::Store;
use passerelle_fhir::bundle::{self, Return};
use serde_json::{Value, json};

use super::{Delivered, DeliveryError, DeliveryFuture, DeliveryResult, Destination, Reply};
use crate::api::fhir::access::{AccessContext, Action};
use crate::api::fhir::audit::AuditRecord;
use crate::journal::OutboxItem;

pub struct FhirStoreDestination {
    store: Option<Arc<Store>>,
}

impl FhirStoreDestination {
    pub fn new(store: Option<Arc<Store>>) -> Self {
        Self { store }
    }
}

/// `Patient/12 (201 Created), Encounter/7 (200 OK)`: what the transaction did, for the trace
/// (the audit entry aside).
fn summary(response: &Value) -> String {
    let entries = response
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    entries
        .iter()
        .filter_map(|e| {
            let r = &e["response"];
            let at = r["location"]
                .as_str()
                .map(|l| l.split("/_history").next().unwrap_or(l))
                .unwrap_or("?");
            (!at.starts_with("AuditEvent/"))
                .then(|| format!("{at} ({})", r["status"].as_str().unwrap_or("?")))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The message's Bundle with its AuditEvent added: the resources it writes are named by their
/// `fullUrl`, which the store replaces by their ids in the same transaction.
fn parse(channel: &str, item: &OutboxItem) -> Result<Value, DeliveryError> {
    let mut bundle: Value = serde_json::from_slice(&item.payload).map_err(|_| {
        DeliveryError::permanent(
            "not a FHIR Bundle: a fhir-store destination takes the output of a `mapping` \
             transform",
        )
    })?;
    let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else {
        return Err(DeliveryError::permanent("the Bundle has no entries"));
    };
    let written: Vec<String> = entries
        .iter()
        .filter(|e| !e["request"]["url"].as_str().unwrap_or("").contains('$'))
        .filter_map(|e| e["fullUrl"].as_str().map(String::from))
        .collect();
    let record = AuditRecord {
        ctx: AccessContext {
            subject: format!("channel {channel}"),
            client: format!("channel:{channel}"),
            scopes: Vec::new(),
            purpose: None,
            source: None,
        },
        interaction: "transaction",
        action: Action::Update,
        entities: written,
        query: None,
        status: 200,
        detail: Some(format!(
            "message {} (MSH-10 {}) through destination {}",
            item.message_id,
            item.control_id.as_deref().unwrap_or("-"),
            item.destination
        )),
    };
    entries.push(json!({
        "resource": record.to_resource(),
        "request": { "method": "POST", "url": "AuditEvent" },
    }));
    Ok(bundle)
}

fn refused(e: passerelle_fhir::FhirError) -> DeliveryError {
    let reply = Reply {
        status: e.status,
        body: e.outcome(),
    };
    if e.status < 500 {
        // The store refused the content itself: trying again cannot help.
        DeliveryError::permanent(format!(
            "the FHIR store refused the Bundle ({}): {}",
            e.status, e.diagnostics
        ))
        .with_reply(reply)
    } else {
        DeliveryError::retry(e.diagnostics).with_reply(reply)
    }
}

/// The trace's note, and the transaction-response for a sender waiting on it: the entries
/// answer the entries it sent (the AuditEvent this destination adds is left out).
fn delivered(mut response: Value) -> Delivered {
    let note = summary(&response);
    if let Some(entries) = response.get_mut("entry").and_then(Value::as_array_mut) {
        entries.pop();
    }
    Delivered {
        note,
        reply: Some(Reply {
            status: 200,
            body: response,
        }),
    }
}

impl FhirStoreDestination {
    async fn one(&self, channel: &str, item: &OutboxItem) -> DeliveryResult {
        let Some(store) = &self.store else {
            return Err(DeliveryError::retry("the FHIR store is not open"));
        };
        let bundle = parse(channel, item)?;
        bundle::process(store, &bundle, Return::Minimal)
            .await
            .map(delivered)
            .map_err(refused)
    }
}

impl Destination for FhirStoreDestination {
    fn deliver<'a>(&'a self, channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(self.one(channel, item))
    }

    /// Every due Bundle in one store transaction (one commit, one fsync); when that fails,
    /// one by one, so that one bad Bundle does not hold back the others.
    fn deliver_all<'a>(
        &'a self,
        channel: &'a str,
        items: &'a [OutboxItem],
    ) -> Option<super::BatchFuture<'a>> {
        let store = self.store.as_ref()?;
        Some(Box::pin(async move {
            let parsed: Vec<Result<Value, DeliveryError>> =
                items.iter().map(|i| parse(channel, i)).collect();
            let good: Vec<&Value> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
            if good.len() == items.len()
                && let Ok(responses) = bundle::process_all(store, &good).await
            {
                return responses.into_iter().map(|r| Ok(delivered(r))).collect();
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(self.one(channel, item).await);
            }
            out
        }))
    }
}
