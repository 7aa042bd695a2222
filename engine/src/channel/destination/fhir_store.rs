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

impl Destination for FhirStoreDestination {
    fn deliver<'a>(&'a self, _channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let Some(store) = &self.store else {
                return Err(DeliveryError::retry("the FHIR store is not open"));
            };
            let bundle: Value = serde_json::from_slice(&item.payload).map_err(|_| {
                DeliveryError::permanent(
                    "not a FHIR Bundle: a fhir-store destination takes the output of a \
                     `mapping` transform",
                )
            })?;
            match bundle::process(store, &bundle, Return::Minimal).await {
                Ok(response) => Ok(summary(&response)),
                // The store refused the content itself: trying again cannot help.
                Err(e) if e.status < 500 => Err(DeliveryError::permanent(format!(
                    "the FHIR store refused the Bundle ({}): {}",
                    e.status, e.diagnostics
                ))),
                Err(e) => Err(DeliveryError::retry(e.diagnostics)),
            }
        })
    }
}
