//! A `store` source: the FHIR store's change feed as a channel's source (outbound flows).
//! Each matching change becomes a notification Bundle ([`crate::channel::change`]) journaled
//! through the same entry as documents ([`super::http_ingest::receive`]: parse, pipeline,
//! journal with the outcome in one commit, outboxes woken). The feed's cursor is
//! acknowledged only once a batch is journaled; a change read again after a stop between
//! the two is recognised by the journal (its key is `Type/id/_history/version`) and not
//! journaled twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use passerelle_fhir::datetime::instant;
use passerelle_fhir::feed::Feed;
use passerelle_fhir::{FhirError, FhirResult, Store, Stored};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Runtime;
use super::http_ingest::{Intake, Sender, receive};
use crate::channel::change::{self, Kind};
use crate::channel::{FeedStart, SourceConfig};

/// Changes read (and journaled) per feed acknowledgement.
const BATCH: i64 = 64;
/// The wait before trying again when the store or the journal fails.
const BACKOFF: Duration = Duration::from_secs(2);

/// Runs a store source until `stop`.
pub(super) async fn run(
    runtime: Arc<Runtime>,
    store: Arc<Store>,
    channel: String,
    stop: CancellationToken,
) {
    let Some(SourceConfig::Store {
        subscription,
        include,
        start,
    }) = runtime.channel(&channel).map(|c| c.channel.source.clone())
    else {
        return;
    };
    let subscriber = format!("channel:{channel}");
    let sender = || Sender {
        name: subscriber.clone(),
        peer: Some(subscription.clone()),
        source: "store",
    };
    // The feed's in-memory cursor runs ahead of what is journaled: after any failure the
    // feed is opened again, from its durable cursor, and what was journaled meanwhile comes
    // back as duplicates.
    'open: loop {
        // `now`: the last committed change, recorded by the first open.
        let from = match start {
            FeedStart::Now => *store.subscribe().borrow(),
            FeedStart::Beginning => 0,
        };
        let mut feed = match Feed::open(store.clone(), &subscriber, Some(&subscription), from).await
        {
            Ok(feed) => feed,
            Err(e) => {
                tracing::error!(%channel, error = %e, "cannot open the store's change feed");
                if pause(&stop).await {
                    return;
                }
                continue 'open;
            }
        };
        tracing::info!(%channel, %subscription, cursor = feed.cursor(), "following the store's changes");
        loop {
            let changes = tokio::select! {
                _ = stop.cancelled() => return,
                changes = feed.next(BATCH) => changes,
            };
            let journaled = match changes {
                Ok(changes) => {
                    journal(&runtime, &store, &channel, &include, &changes, &sender).await
                }
                Err(e) => Err(e.diagnostics),
            };
            // Only what is journaled is acknowledged.
            let acked = match journaled {
                Ok(()) => feed.ack().await.map_err(|e| e.diagnostics),
                Err(why) => Err(why),
            };
            if let Err(why) = acked {
                tracing::warn!(%channel, "store changes not taken yet: {why}");
                if pause(&stop).await {
                    return;
                }
                continue 'open;
            }
        }
    }
}

/// Waits [`BACKOFF`]; true when stopped meanwhile.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(BACKOFF) => false,
    }
}

/// Journals a batch of changes in commit order (the outboxes deliver in journal order).
async fn journal(
    runtime: &Arc<Runtime>,
    store: &Store,
    channel: &str,
    include: &[Vec<String>],
    changes: &[Stored],
    sender: &impl Fn() -> Sender,
) -> Result<(), String> {
    for c in changes {
        let Some(bundle) = notification(store, include, c)
            .await
            .map_err(|e| e.diagnostics)?
        else {
            continue;
        };
        let raw = serde_json::to_vec(&bundle).map_err(|e| e.to_string())?;
        match receive(runtime, channel, raw, sender()).await {
            Intake::Accepted { .. }
            | Intake::Duplicate { .. }
            | Intake::Rejected { id: Some(_), .. } => {}
            Intake::Rejected { id: None, .. } => {
                return Err(format!(
                    "{}: the journal could not take it",
                    c.versioned_ref()
                ));
            }
            Intake::Unavailable(why) => return Err(why),
        }
    }
    Ok(())
}

/// The notification of one change, or None for a deletion whose last version cannot be
/// read (the message would have nothing to say what was deleted).
async fn notification(
    store: &Store,
    include: &[Vec<String>],
    c: &Stored,
) -> FhirResult<Option<Value>> {
    let (kind, focus) = match &c.body {
        Some(body) if c.version == 1 => (Kind::Create, body.clone()),
        Some(body) => (Kind::Update, body.clone()),
        None => match store.vread(&c.resource_type, &c.id, c.version - 1).await {
            Ok(Stored {
                body: Some(body), ..
            }) => (Kind::Delete, body),
            Ok(_) => return Ok(None),
            Err(e) if missing(&e) => {
                tracing::warn!(change = %c.versioned_ref(), reason = %e.diagnostics,
                    "a deletion skipped: the version before it cannot be read");
                return Ok(None);
            }
            Err(e) => return Err(e),
        },
    };
    // Each target once, and never the changed resource itself.
    let mut seen = HashSet::from([(c.resource_type.clone(), c.id.clone())]);
    let mut included = Vec::new();
    for path in include {
        for reference in change::references(&focus, path) {
            let Some((t, id)) = change::local_target(reference) else {
                continue;
            };
            if !seen.insert((t.to_string(), id.to_string())) {
                continue;
            }
            match store.read(t, id).await {
                Ok(Stored {
                    body: Some(body), ..
                }) => included.push(body),
                Ok(_) => {}
                // A dangling reference is the resource's business, not a failure to retry.
                Err(e) if missing(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let at = instant(c.last_updated);
    Ok(Some(change::notification(kind, focus, included, &at)))
}

/// Not found or gone: nothing to read, not a failure of the store.
fn missing(e: &FhirError) -> bool {
    matches!(e.status, 404 | 410)
}
