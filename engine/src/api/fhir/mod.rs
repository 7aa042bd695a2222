//! The FHIR R4 REST API at `/fhir`: every interaction goes through the same gate — the
//! resource type checked, the access policy asked, the store called, an AuditEvent written
//! (and committed) before the answer leaves.

pub mod access;
pub mod audit;
mod capability;
mod respond;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use passerelle_fhir::search::parse::parse as parse_search;
use passerelle_fhir::types::check_type;
use passerelle_fhir::{FhirError, Store, Stored, bundle, render};
use serde_json::Value;

use crate::api::AppState;
use access::{Action, Policy};
use audit::{AuditRecord, AuditSink};
use respond::parse_body;
pub use respond::{Ctx, Reply, error_response, json_response};

/// The FHIR side of the server: the store and the two extension points around it.
pub struct FhirApi {
    pub store: Arc<Store>,
    pub policy: Arc<dyn Policy>,
    pub audit: Arc<dyn AuditSink>,
}

type Shared = State<Arc<AppState>>;

/// Bundles and Binary uploads can be large; 64 MiB keeps a runaway client in check.
pub(crate) const BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Resources named in one AuditEvent for a search (the query itself is always there).
const AUDITED_RESULTS: usize = 100;
const HISTORY_COUNT: i64 = 50;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", post(transaction))
        .route("/metadata", get(metadata))
        .route("/_history", get(system_history))
        .route(
            "/{type}",
            get(search_get)
                .post(create)
                .put(conditional_update)
                .patch(conditional_patch)
                .delete(conditional_delete),
        )
        .route("/{type}/_search", post(search_post))
        .route("/{type}/_history", get(type_history))
        .route(
            "/{type}/{id}",
            get(read).put(update).patch(patch).delete(delete),
        )
        .route("/{type}/{id}/_history", get(instance_history))
        .route("/{type}/{id}/_history/{vid}", get(vread))
        .route("/{type}/{id}/{operation}", get(operation).post(operation))
        .fallback(unknown_path)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

async fn unknown_path() -> Response {
    error_response(&FhirError::not_found("no such FHIR path"))
}

fn api(state: &AppState) -> &FhirApi {
    &state.fhir
}

/// Runs one interaction: type check, policy, the work, the audit record, the answer.
async fn gate(
    state: &AppState,
    ctx: &Ctx,
    interaction: &'static str,
    action: Action,
    resource_type: Option<&str>,
    work: impl AsyncFnOnce() -> Result<(Reply, Vec<String>), FhirError>,
) -> Response {
    let fhir = api(state);
    // `*`: an interaction across types (system history, `$everything`), which needs a scope
    // on every type.
    let checked = match resource_type {
        Some("*") => fhir.policy.allow(&ctx.access, "*", action),
        Some(t) => check_type(t).and_then(|_| fhir.policy.allow(&ctx.access, t, action)),
        None => Ok(()),
    };
    let result = match checked {
        Ok(()) => work().await,
        Err(e) => Err(e),
    };
    let (status, entities, detail) = match &result {
        Ok((reply, entities)) => (reply_status(reply), entities.clone(), None),
        Err(e) => (
            e.status,
            ctx.target.iter().cloned().collect(),
            Some(e.diagnostics.clone()),
        ),
    };
    let record = AuditRecord {
        ctx: ctx.access.clone(),
        interaction,
        action,
        entities,
        query: (!ctx.query.is_empty()).then(|| ctx.query.clone()),
        status,
        detail,
    };
    let audited = match fhir.audit.record(record).await {
        Ok(outcome) => outcome,
        Err(_) => Err("the audit writer has stopped".to_string()),
    };
    if let Err(e) = audited {
        tracing::error!(error = %e, interaction, "audit record not written");
        if status < 400 {
            // No trace, no data: an access that cannot be shown later is refused now.
            return error_response(&FhirError::internal(format!(
                "the audit record could not be written: {e}"
            )));
        }
    }
    match result {
        Ok((reply, _)) => reply.render(ctx),
        Err(e) => error_response(&e),
    }
}

fn reply_status(r: &Reply) -> u16 {
    match r {
        Reply::Resource { status, .. } | Reply::Json(status, _) => status.as_u16(),
        Reply::Deleted => 204,
    }
}

fn named(s: &Stored) -> Vec<String> {
    vec![format!("{}/{}", s.resource_type, s.id)]
}

fn found(stored: Stored) -> (Reply, Vec<String>) {
    let e = named(&stored);
    (
        Reply::Resource {
            stored,
            status: StatusCode::OK,
            location: false,
        },
        e,
    )
}

fn written(w: passerelle_fhir::ops::Written) -> (Reply, Vec<String>) {
    let e = named(&w.stored);
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        Reply::Resource {
            stored: w.stored,
            status,
            location: true,
        },
        e,
    )
}

fn resource_body(ctx: &Ctx, body: &[u8]) -> Result<Value, FhirError> {
    if let Some(ct) = &ctx.content_type {
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !matches!(
            mime,
            "application/fhir+json" | "application/json" | "application/json+fhir"
        ) {
            return Err(FhirError::new(
                415,
                passerelle_fhir::IssueType::NotSupported,
                format!("Content-Type {mime}: send application/fhir+json"),
            ));
        }
    }
    parse_body(body)
}

async fn metadata(State(state): Shared) -> Response {
    respond::json_response(
        StatusCode::OK,
        capability::statement(state.fhir.store.backend()),
        false,
    )
}

async fn read(State(state): Shared, ctx: Ctx, Path((t, id)): Path<(String, String)>) -> Response {
    gate(&state, &ctx, "read", Action::Read, Some(&t), async || {
        Ok(found(api(&state).store.read(&t, &id).await?))
    })
    .await
}

async fn vread(
    State(state): Shared,
    ctx: Ctx,
    Path((t, id, vid)): Path<(String, String, String)>,
) -> Response {
    gate(&state, &ctx, "vread", Action::Read, Some(&t), async || {
        let v: i64 = vid
            .parse()
            .map_err(|_| FhirError::not_found(format!("`{vid}` is not a version of {t}/{id}")))?;
        Ok(found(api(&state).store.vread(&t, &id, v).await?))
    })
    .await
}

async fn create(State(state): Shared, ctx: Ctx, Path(t): Path<String>, body: Bytes) -> Response {
    gate(
        &state,
        &ctx,
        "create",
        Action::Create,
        Some(&t),
        async || {
            let value = resource_body(&ctx, &body)?;
            let w = api(&state)
                .store
                .create(&t, value, ctx.if_none_exist.as_deref())
                .await?;
            Ok(written(w))
        },
    )
    .await
}

async fn update(
    State(state): Shared,
    ctx: Ctx,
    Path((t, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    gate(
        &state,
        &ctx,
        "update",
        Action::Update,
        Some(&t),
        async || {
            let value = resource_body(&ctx, &body)?;
            let w = api(&state)
                .store
                .update(&t, &id, value, ctx.expect()?)
                .await?;
            Ok(written(w))
        },
    )
    .await
}

async fn conditional_update(
    State(state): Shared,
    ctx: Ctx,
    Path(t): Path<String>,
    body: Bytes,
) -> Response {
    gate(
        &state,
        &ctx,
        "update",
        Action::Update,
        Some(&t),
        async || {
            let value = resource_body(&ctx, &body)?;
            let w = api(&state)
                .store
                .conditional_update(&t, &ctx.query, value, ctx.expect()?)
                .await?;
            Ok(written(w))
        },
    )
    .await
}

async fn patch(
    State(state): Shared,
    ctx: Ctx,
    Path((t, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    gate(
        &state,
        &ctx,
        "patch",
        Action::Update,
        Some(&t),
        async || {
            let doc = patch_body(&ctx, &body)?;
            let w = api(&state)
                .store
                .patch(&t, &id, &doc, ctx.expect()?)
                .await?;
            Ok(written(w))
        },
    )
    .await
}

/// `PATCH [type]?criteria`: the one match patched; none is a 404, several a 412.
async fn conditional_patch(
    State(state): Shared,
    ctx: Ctx,
    Path(t): Path<String>,
    body: Bytes,
) -> Response {
    gate(
        &state,
        &ctx,
        "patch",
        Action::Update,
        Some(&t),
        async || {
            let doc = patch_body(&ctx, &body)?;
            let w = api(&state)
                .store
                .conditional_patch(&t, &ctx.query, &doc, ctx.expect()?)
                .await?;
            Ok(written(w))
        },
    )
    .await
}

/// A PATCH body in the format its Content-Type says: a JSON Patch array, or a FHIRPath
/// Patch (a Parameters resource).
fn patch_body(ctx: &Ctx, body: &[u8]) -> Result<Value, FhirError> {
    let mime = ctx
        .content_type
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let doc = parse_body(body)?;
    let fits = match mime {
        "application/json-patch+json" => doc.is_array(),
        "application/fhir+json" | "application/json" => {
            doc.get("resourceType").and_then(Value::as_str) == Some("Parameters")
        }
        _ => false,
    };
    if !fits {
        return Err(FhirError::new(
            415,
            passerelle_fhir::IssueType::NotSupported,
            "PATCH takes a JSON Patch (Content-Type: application/json-patch+json) or a \
             FHIRPath Patch Parameters resource (Content-Type: application/fhir+json)",
        ));
    }
    Ok(doc)
}

async fn delete(State(state): Shared, ctx: Ctx, Path((t, id)): Path<(String, String)>) -> Response {
    gate(
        &state,
        &ctx,
        "delete",
        Action::Delete,
        Some(&t),
        async || {
            api(&state).store.delete(&t, &id, ctx.expect()?).await?;
            Ok((Reply::Deleted, vec![format!("{t}/{id}")]))
        },
    )
    .await
}

async fn conditional_delete(State(state): Shared, ctx: Ctx, Path(t): Path<String>) -> Response {
    gate(
        &state,
        &ctx,
        "delete",
        Action::Delete,
        Some(&t),
        async || {
            let gone = api(&state).store.conditional_delete(&t, &ctx.query).await?;
            Ok((Reply::Deleted, gone.iter().flat_map(named).collect()))
        },
    )
    .await
}

async fn search(state: &AppState, ctx: &Ctx, t: &str, pairs: &[(String, String)]) -> Response {
    gate(
        state,
        ctx,
        "search-type",
        Action::Search,
        Some(t),
        async || {
            let q = parse_search(t, pairs, ctx.strict)?;
            let page = api(state).store.search(&q).await?;
            let entities = page
                .matches
                .iter()
                .chain(&page.included)
                .take(AUDITED_RESULTS)
                .flat_map(named)
                .collect();
            Ok((
                Reply::Json(StatusCode::OK, render::searchset(&ctx.base, &q, &page)),
                entities,
            ))
        },
    )
    .await
}

async fn search_get(State(state): Shared, ctx: Ctx, Path(t): Path<String>) -> Response {
    search(&state, &ctx, &t, &ctx.pairs).await
}

async fn search_post(
    State(state): Shared,
    ctx: Ctx,
    Path(t): Path<String>,
    body: Bytes,
) -> Response {
    let mut pairs = ctx.pairs.clone();
    pairs.extend(form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    search(&state, &ctx, &t, &pairs).await
}

/// `_count`, `_since` and the paging cursor of a history request.
fn history_params(ctx: &Ctx) -> Result<(i64, Option<i64>, Option<i64>), FhirError> {
    let mut count = HISTORY_COUNT;
    let mut since = None;
    let mut before = None;
    for (k, v) in &ctx.pairs {
        match k.as_str() {
            "_count" => {
                count = v
                    .parse::<i64>()
                    .map_err(|_| FhirError::invalid(format!("_count={v} is not a number")))?
                    .clamp(1, 1000)
            }
            "_since" => {
                since = Some(
                    passerelle_fhir::datetime::parse(v)
                        .ok_or_else(|| FhirError::invalid(format!("_since={v} is not an instant")))?
                        .low,
                )
            }
            "_cursor" => {
                before = Some(
                    v.parse()
                        .map_err(|_| FhirError::invalid("_cursor is not one this server gave"))?,
                )
            }
            "_format" | "_pretty" => {}
            other if ctx.strict => {
                return Err(FhirError::invalid(format!(
                    "`{other}` is not a history parameter"
                )));
            }
            _ => {}
        }
    }
    Ok((count, since, before))
}

async fn history(
    state: &AppState,
    ctx: &Ctx,
    t: Option<&str>,
    id: Option<&str>,
    interaction: &'static str,
) -> Response {
    gate(
        state,
        ctx,
        interaction,
        Action::Read,
        Some(t.unwrap_or("*")),
        async || {
            let (count, since, before) = history_params(ctx)?;
            let versions = api(state)
                .store
                .history(t, id, since, before, count + 1)
                .await?;
            let more = versions.len() as i64 > count;
            let shown = &versions[..versions.len().min(count as usize)];
            let path = match (t, id) {
                (Some(t), Some(id)) => format!("{}/{t}/{id}/_history", ctx.base),
                (Some(t), None) => format!("{}/{t}/_history", ctx.base),
                _ => format!("{}/_history", ctx.base),
            };
            let next = (more && !shown.is_empty()).then(|| {
                format!(
                    "{path}?_count={count}&_cursor={}",
                    shown.last().expect("non-empty").seq
                )
            });
            let self_url = if ctx.query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{}", ctx.query)
            };
            let entities = shown.iter().take(AUDITED_RESULTS).flat_map(named).collect();
            Ok((
                Reply::Json(
                    StatusCode::OK,
                    render::history(&ctx.base, shown, next, &self_url),
                ),
                entities,
            ))
        },
    )
    .await
}

async fn system_history(State(state): Shared, ctx: Ctx) -> Response {
    history(&state, &ctx, None, None, "history-system").await
}

async fn type_history(State(state): Shared, ctx: Ctx, Path(t): Path<String>) -> Response {
    history(&state, &ctx, Some(&t), None, "history-type").await
}

async fn instance_history(
    State(state): Shared,
    ctx: Ctx,
    Path((t, id)): Path<(String, String)>,
) -> Response {
    history(&state, &ctx, Some(&t), Some(&id), "history-instance").await
}

async fn operation(
    State(state): Shared,
    ctx: Ctx,
    Path((t, id, op)): Path<(String, String, String)>,
) -> Response {
    gate(
        &state,
        &ctx,
        "operation",
        Action::Read,
        Some(&t),
        async || {
            if t != "Patient" || op != "$everything" {
                return Err(FhirError::not_found(format!(
                    "operation `{op}` is not supported on {t}"
                )));
            }
            // Everything reaches across types: it takes a read scope on all of them.
            api(&state).policy.allow(&ctx.access, "*", Action::Read)?;
            let all = api(&state).store.everything(&id, 5000).await?;
            let entities = all.iter().take(AUDITED_RESULTS).flat_map(named).collect();
            Ok((
                Reply::Json(StatusCode::OK, render::collection(&ctx.base, &all)),
                entities,
            ))
        },
    )
    .await
}

async fn transaction(State(state): Shared, ctx: Ctx, body: Bytes) -> Response {
    gate(
        &state,
        &ctx,
        "transaction",
        Action::Update,
        None,
        async || {
            let value = resource_body(&ctx, &body)?;
            access::check_entries(api(&state).policy.as_ref(), &ctx.access, &value)?;
            let response = bundle::process(&api(&state).store, &value, ctx.prefer_return).await?;
            let entities = response
                .get("entry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| e.pointer("/response/location").and_then(Value::as_str))
                .take(AUDITED_RESULTS)
                .map(|l| l.split("/_history").next().unwrap_or(l).to_string())
                .collect();
            Ok((Reply::Json(StatusCode::OK, response), entities))
        },
    )
    .await
}
