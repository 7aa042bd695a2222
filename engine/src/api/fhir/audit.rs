//! The audit trail of the FHIR API: every interaction becomes an AuditEvent (who, what,
//! when, where from, outcome) stored in the FHIR store itself, so it is searched like any
//! resource (`AuditEvent?patient=Patient/1&date=ge2024`) and kept with the store.
//!
//! A request is answered only once its AuditEvent is committed; events are written in
//! batches by one task so auditing reads costs a shared commit, not one each.

use std::sync::Arc;

use passerelle_fhir::datetime::{instant, now_micros};
use passerelle_fhir::{FhirError, Store};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::access::{AccessContext, Action};

/// The extension point: where audit records go.
pub trait AuditSink: Send + Sync {
    /// Records one event; resolves when it is durable.
    fn record(&self, event: AuditRecord) -> oneshot::Receiver<Result<(), String>>;
}

/// One audited interaction.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub ctx: AccessContext,
    /// FHIR restful-interaction code: read, vread, search-type, create, update...
    pub interaction: &'static str,
    pub action: Action,
    /// `Type/id` of the resources concerned.
    pub entities: Vec<String>,
    /// The search query, when there was one.
    pub query: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
    pub detail: Option<String>,
}

fn action_code(a: Action) -> &'static str {
    match a {
        Action::Create => "C",
        Action::Read | Action::Search => "R",
        Action::Update => "U",
        Action::Delete => "D",
    }
}

impl AuditRecord {
    pub fn to_resource(&self) -> Value {
        // AuditEvent.outcome: 0 success, 4 minor failure (client error), 8 serious failure.
        let outcome = match self.status {
            s if s < 400 => "0",
            s if s < 500 => "4",
            _ => "8",
        };
        let mut agent = json!({
            "type": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "IRCP", "display": "information recipient" }] },
            "who": {
                "identifier": { "system": "urn:passerelle:token", "value": self.ctx.client },
                "display": self.ctx.subject,
            },
            "requestor": true,
        });
        if let Some(addr) = self.ctx.source {
            agent["network"] = json!({ "address": addr.ip().to_string(), "type": "2" });
        }
        let mut entities: Vec<Value> = self
            .entities
            .iter()
            .map(|r| json!({ "what": { "reference": r } }))
            .collect();
        if let Some(q) = &self.query {
            use base64::Engine;
            entities.push(json!({
                "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
                "description": "search query",
                "query": base64::engine::general_purpose::STANDARD.encode(q),
            }));
        }
        let mut event = json!({
            "resourceType": "AuditEvent",
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" },
            "subtype": [{ "system": "http://hl7.org/fhir/restful-interaction", "code": self.interaction }],
            "action": action_code(self.action),
            "recorded": instant(now_micros()),
            "outcome": outcome,
            "agent": [agent],
            "source": {
                "site": "passerelle",
                "observer": { "display": "passerelle FHIR API" },
                "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
            },
        });
        if let Some(d) = &self.detail {
            event["outcomeDesc"] = json!(d);
        }
        if let Some(p) = &self.ctx.purpose {
            event["purposeOfEvent"] = json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": p }] }]);
        }
        if !entities.is_empty() {
            event["entity"] = json!(entities);
        }
        event
    }
}

type Pending = (Value, oneshot::Sender<Result<(), String>>);

/// Writes AuditEvents into the store, many per transaction.
pub struct StoreAudit {
    tx: mpsc::Sender<Pending>,
}

const BATCH: usize = 256;

impl StoreAudit {
    pub fn start(store: Arc<Store>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let result = write(&store, &batch).await.map_err(|e| e.diagnostics);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "audit events could not be stored");
                }
                for (_, done) in batch.drain(..) {
                    let _ = done.send(result.clone());
                }
            }
        });
        Self { tx }
    }
}

async fn write(store: &Store, batch: &[Pending]) -> Result<(), FhirError> {
    let mut tx = store.begin().await?;
    for (event, _) in batch {
        tx.create("AuditEvent", event.clone(), None, None).await?;
    }
    tx.commit().await
}

impl AuditSink for StoreAudit {
    fn record(&self, event: AuditRecord) -> oneshot::Receiver<Result<(), String>> {
        let (done, wait) = oneshot::channel();
        if let Err(
            mpsc::error::TrySendError::Full((e, done))
            | mpsc::error::TrySendError::Closed((e, done)),
        ) = self.tx.try_send((event.to_resource(), done))
        {
            // Back-pressure: the writer is behind; wait for room rather than drop the event.
            let tx = self.tx.clone();
            tokio::spawn(async move {
                if let Err(mpsc::error::SendError((_, done))) = tx.send((e, done)).await {
                    let _ = done.send(Err("the audit writer has stopped".into()));
                }
            });
        }
        wait
    }
}
