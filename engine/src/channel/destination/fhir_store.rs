//! Applies the FHIR transaction Bundle a mapping produced to the engine's own FHIR store.
//! The Bundle's conditional updates make a delivery made again (after a crash, or a message
//! sent twice) change nothing. Every write is audited like a write through the API: an
//! AuditEvent per message, naming the channel, the message and the resources written; a
//! delivery counts as made only once its AuditEvent is durable.

use std::sync::Arc;

use passerelle_fhir::Store;
use passerelle_fhir::bundle::{self, Return};
use serde_json::Value;

use super::{DeliveryError, DeliveryFuture, Destination};
use crate::api::fhir::access::{AccessContext, Action};
use crate::api::fhir::audit::{AuditRecord, AuditSink};
use crate::journal::OutboxItem;

pub struct FhirStoreDestination {
    store: Option<Arc<Store>>,
    audit: Option<Arc<dyn AuditSink>>,
}

impl FhirStoreDestination {
    pub fn new(store: Option<Arc<Store>>, audit: Option<Arc<dyn AuditSink>>) -> Self {
        Self { store, audit }
    }

    /// Records the write of one message's Bundle; an error when the record is not durable.
    async fn audited(
        &self,
        channel: &str,
        item: &OutboxItem,
        response: &Value,
    ) -> Result<String, DeliveryError> {
        let note = summary(response);
        let Some(audit) = &self.audit else {
            return Ok(note);
        };
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
            entities: written(response),
            query: None,
            status: 200,
            detail: Some(format!(
                "message {} (MSH-10 {}) through destination {}",
                item.message_id,
                item.control_id.as_deref().unwrap_or("-"),
                item.destination
            )),
        };
        match audit.record(record).await {
            Ok(Ok(())) => Ok(note),
            Ok(Err(e)) => Err(DeliveryError::retry(format!(
                "audit record not written: {e}"
            ))),
            Err(_) => Err(DeliveryError::retry("the audit writer has stopped")),
        }
    }
}

/// `Type/id` of every resource a transaction response says it wrote.
fn written(response: &Value) -> Vec<String> {
    response
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e["response"]["location"].as_str())
        .map(|l| l.split("/_history").next().unwrap_or(l).to_string())
        .collect()
}

/// `Patient/12 (201 Created), Encounter/7 (200 OK)`: what the transaction did, for the trace.
fn summary(response: &Value) -> String {
    let entries = response
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let r = &e["response"];
            let at = r["location"]
                .as_str()
                .map(|l| l.split("/_history").next().unwrap_or(l))
                .unwrap_or("?");
            format!("{at} ({})", r["status"].as_str().unwrap_or("?"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse(item: &OutboxItem) -> Result<Value, DeliveryError> {
    serde_json::from_slice(&item.payload).map_err(|_| {
        DeliveryError::permanent(
            "not a FHIR Bundle: a fhir-store destination takes the output of a `mapping` \
             transform",
        )
    })
}

fn refused(e: passerelle_fhir::FhirError) -> DeliveryError {
    if e.status < 500 {
        // The store refused the content itself: trying again cannot help.
        DeliveryError::permanent(format!(
            "the FHIR store refused the Bundle ({}): {}",
            e.status, e.diagnostics
        ))
    } else {
        DeliveryError::retry(e.diagnostics)
    }
}

impl FhirStoreDestination {
    async fn one(&self, channel: &str, item: &OutboxItem) -> Result<String, DeliveryError> {
        let Some(store) = &self.store else {
            return Err(DeliveryError::retry("the FHIR store is not open"));
        };
        let bundle = parse(item)?;
        let response = bundle::process(store, &bundle, Return::Minimal)
            .await
            .map_err(refused)?;
        self.audited(channel, item, &response).await
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
            let parsed: Vec<Result<Value, DeliveryError>> = items.iter().map(parse).collect();
            let good: Vec<&Value> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
            if good.len() == items.len()
                && let Ok(responses) = bundle::process_all(store, &good).await
            {
                // The audit sink commits the records together.
                let records = items
                    .iter()
                    .zip(&responses)
                    .map(|(item, r)| self.audited(channel, item, r));
                return futures_util::future::join_all(records).await;
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(self.one(channel, item).await);
            }
            out
        }))
    }
}
