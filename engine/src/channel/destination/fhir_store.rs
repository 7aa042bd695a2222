//! Applies the FHIR transaction Bundle a mapping produced to the engine's own FHIR store.
//! The Bundle's conditional updates make a delivery made again (after a crash, or a message
//! sent twice) change nothing.

use std::sync::Arc;

use passerelle_fhir::Store;
use passerelle_fhir::bundle::{self, Return};
use serde_json::Value;

use super::{DeliveryError, DeliveryFuture, Destination};
use crate::journal::OutboxItem;

pub struct FhirStoreDestination {
    store: Option<Arc<Store>>,
}

impl FhirStoreDestination {
    pub fn new(store: Option<Arc<Store>>) -> Self {
        Self { store }
    }
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
    async fn one(&self, item: &OutboxItem) -> Result<String, DeliveryError> {
        let Some(store) = &self.store else {
            return Err(DeliveryError::retry("the FHIR store is not open"));
        };
        let bundle = parse(item)?;
        bundle::process(store, &bundle, Return::Minimal)
            .await
            .map(|r| summary(&r))
            .map_err(refused)
    }
}

impl Destination for FhirStoreDestination {
    fn deliver<'a>(&'a self, _channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(self.one(item))
    }

    /// Every due Bundle in one store transaction (one commit, one fsync); when that fails,
    /// one by one, so that one bad Bundle does not hold back the others.
    fn deliver_all<'a>(
        &'a self,
        _channel: &'a str,
        items: &'a [OutboxItem],
    ) -> Option<super::BatchFuture<'a>> {
        let store = self.store.as_ref()?;
        Some(Box::pin(async move {
            let parsed: Vec<Result<Value, DeliveryError>> = items.iter().map(parse).collect();
            let good: Vec<&Value> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
            if good.len() == items.len()
                && let Ok(responses) = bundle::process_all(store, &good).await
            {
                return responses.iter().map(|r| Ok(summary(r))).collect();
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(self.one(item).await);
            }
            out
        }))
    }
}
