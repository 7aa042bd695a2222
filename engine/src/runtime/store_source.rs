//! A `store` source: the FHIR store's change feed as a channel's source (outbound flows).
//! Each matching change becomes a notification Bundle ([`crate::channel::change`]) journaled
//! through the same entry as documents ([`super::http_ingest::receive`]: parse, pipeline,
//! journal with the outcome in one commit, outboxes woken; a batch of changes shares its commits). The feed's cursor is
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
use super::http_ingest::{Intake, Sender, prepare};
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
        revinclude,
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
                    journal(
                        &runtime,
                        &store,
                        &channel,
                        (&include, &revinclude),
                        &changes,
                        &sender,
                    )
                    .await
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

/// Journals a batch of changes in commit order (the outboxes deliver in journal order): each
/// is queued for the journal writer in turn, then the batch waits for its commits, which it
/// shares (one commit a change made the feed as slow as the disk's fsync).
async fn journal(
    runtime: &Arc<Runtime>,
    store: &Store,
    channel: &str,
    (include, revinclude): (&[Vec<String>], &[(String, String)]),
    changes: &[Stored],
    sender: &impl Fn() -> Sender,
) -> Result<(), String> {
    let mut queued = Vec::with_capacity(changes.len());
    for c in changes {
        let Some(bundle) = notification(store, include, revinclude, c)
            .await
            .map_err(|e| e.diagnostics)?
        else {
            continue;
        };
        let raw = serde_json::to_vec(&bundle).map_err(|e| e.to_string())?;
        match prepare(runtime, channel, raw, sender()) {
            Ok(prepared) => queued.push((c, prepared.queue(runtime).await)),
            Err(Intake::Unavailable(why)) => return Err(why),
            Err(_) => return Err(format!("channel {channel} cannot take changes")),
        }
    }
    // Every queued change is waited for, so that none is left counted as in the journal's
    // hands when the batch is given up.
    let mut failed = None;
    for (c, journaling) in queued {
        let why = match journaling.finish(runtime).await {
            Intake::Accepted { .. }
            | Intake::Duplicate { .. }
            | Intake::Rejected { id: Some(_), .. } => continue,
            Intake::Rejected { id: None, .. } => {
                format!("{}: the journal could not take it", c.versioned_ref())
            }
            Intake::Unavailable(why) => why,
        };
        failed.get_or_insert(why);
    }
    failed.map_or(Ok(()), Err)
}

/// The notification of one change, or None for a deletion whose last version cannot be
/// read (the message would have nothing to say what was deleted).
async fn notification(
    store: &Store,
    include: &[Vec<String>],
    revinclude: &[(String, String)],
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
    let mut included = included(store, &focus, include).await?;
    let referring = referring(store, &focus, &included, revinclude).await?;
    included.extend(referring);
    let at = instant(c.last_updated);
    Ok(Some(change::notification(kind, focus, included, &at)))
}

/// The resources the `include` paths name from `focus`, each once and never `focus` itself,
/// in the order first named. A path with `resolve()` steps goes on from the resources its
/// previous part named (those are included too).
async fn included(store: &Store, focus: &Value, include: &[Vec<String>]) -> FhirResult<Vec<Value>> {
    let key = |r: &Value| {
        (
            r["resourceType"].as_str().unwrap_or_default().to_string(),
            r["id"].as_str().unwrap_or_default().to_string(),
        )
    };
    let mut seen = HashSet::from([key(focus)]);
    let mut included: Vec<Value> = Vec::new();
    for path in include {
        let mut from = vec![focus.clone()];
        for hop in change::hops(path) {
            let mut reached = Vec::new();
            for resource in &from {
                for reference in change::references(resource, hop) {
                    let Some((t, id)) = change::local_target(reference) else {
                        continue;
                    };
                    let target = (t.to_string(), id.to_string());
                    // Read once: a resource named twice is taken from what was read.
                    if let Some(known) = included.iter().find(|r| key(r) == target) {
                        reached.push(known.clone());
                        continue;
                    }
                    if !seen.insert(target) {
                        continue;
                    }
                    match store.read(t, id).await {
                        Ok(Stored {
                            body: Some(body), ..
                        }) => {
                            included.push(body.clone());
                            reached.push(body);
                        }
                        Ok(_) => {}
                        // A dangling reference is the resource's business, not a failure to retry.
                        Err(e) if missing(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            from = reached;
        }
    }
    Ok(included)
}

/// The resources of each `revinclude` `(Type, parameter)` whose parameter refers to the
/// changed resource or an included one (a patient's consents), each once and at most
/// [`REVINCLUDE_MAX`] per target, the most recently changed.
async fn referring(
    store: &Store,
    focus: &Value,
    included: &[Value],
    revinclude: &[(String, String)],
) -> FhirResult<Vec<Value>> {
    // A resource both included and referring (a referral's reason, also the patient's
    // condition) is in the message once.
    let mut seen: HashSet<(String, String)> = std::iter::once(focus)
        .chain(included)
        .filter_map(|r| {
            Some((
                r["resourceType"].as_str()?.to_string(),
                r["id"].as_str()?.to_string(),
            ))
        })
        .collect();
    let mut found = Vec::new();
    let targets: Vec<String> = std::iter::once(focus)
        .chain(included)
        .filter_map(|r| {
            Some(format!(
                "{}/{}",
                r["resourceType"].as_str()?,
                r["id"].as_str()?
            ))
        })
        .collect();
    for (t, param) in revinclude {
        for target in &targets {
            let pairs = vec![
                (param.clone(), target.clone()),
                ("_count".to_string(), REVINCLUDE_MAX.to_string()),
                // The most recent first: a referral takes the patient's recent results.
                ("_sort".to_string(), "-_lastUpdated".to_string()),
            ];
            let query = passerelle_fhir::search::parse::parse(t, &pairs, false)?;
            for hit in store.search(&query).await?.matches {
                if let Some(body) = hit.body
                    && seen.insert((hit.resource_type, hit.id))
                {
                    found.push(body);
                }
            }
        }
    }
    Ok(found)
}

/// At most this many resources per `revinclude` and target: a patient's consents, not a
/// whole record.
const REVINCLUDE_MAX: i64 = 50;

/// Not found or gone: nothing to read, not a failure of the store.
fn missing(e: &FhirError) -> bool {
    matches!(e.status, 404 | 410)
}

#[cfg(test)]
mod tests {
    use passerelle_fhir::{Expect, Sealer};
    use serde_json::json;

    use super::*;

    /// Payloads in clear: what is under test is which resources are read.
    struct Clear;

    impl Sealer for Clear {
        fn seal(&self, plain: &[u8], _: &[u8]) -> Vec<u8> {
            plain.to_vec()
        }

        fn open(&self, blob: &[u8], _: &[u8]) -> anyhow::Result<Vec<u8>> {
            Ok(blob.to_vec())
        }
    }

    #[tokio::test]
    async fn resolve_steps_include_what_the_included_resources_name() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("fhir.db").display());
        let store = Store::open(&url, Arc::new(Clear)).await.unwrap();
        let put = |t: &'static str, id: &'static str, body: Value| {
            let store = &store;
            async move { store.update(t, id, body, Expect::Any).await.unwrap() }
        };
        put(
            "Patient",
            "p1",
            json!({"resourceType": "Patient", "id": "p1"}),
        )
        .await;
        put("Binary", "b1", json!({"resourceType": "Binary", "id": "b1", "contentType": "text/xml", "data": "PHgvPg=="})).await;
        put(
            "DocumentReference",
            "d1",
            json!({"resourceType": "DocumentReference", "id": "d1",
            "status": "current", "subject": {"reference": "Patient/p1"},
            "content": [{"attachment": {"url": "Binary/b1"}}]}),
        )
        .await;
        let communication = json!({"resourceType": "Communication", "id": "c1", "status": "in-progress",
            "subject": {"reference": "Patient/p1"},
            "payload": [{"contentReference": {"reference": "DocumentReference/d1"}},
                        {"contentReference": {"reference": "DocumentReference/gone"}}]});
        let path = |p: &str| p.split('.').map(String::from).collect::<Vec<_>>();
        let include = [
            path("subject"),
            path("payload.contentReference.resolve().content.attachment.url"),
            // The patient again, through the document: read once, listed once.
            path("payload.contentReference.resolve().subject"),
        ];
        let got = included(&store, &communication, &include).await.unwrap();
        let refs: Vec<String> = got
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(refs, ["Patient/p1", "DocumentReference/d1", "Binary/b1"]);
    }
}
