//! `POST /api/inbound/{channel}`: the HTTP source of channels such as `fhir-inbound`. The
//! message is checked, journaled, run through its channel, and the sender gets what the store
//! did (a transaction-response, or the created resource's location), in FHIR terms: errors are
//! OperationOutcomes naming the entry and element at fault. When the store has not answered
//! within the source's `reply_timeout`, the answer is `202 Accepted`: the message is journaled
//! and will be applied; `Content-Location` names it in the message browser.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use passerelle_fhir::FhirError;
use passerelle_fhir::error::operation_outcome;
use serde_json::Value;

use super::AppState;
use super::fhir::Ctx;
use super::fhir::access::{Action, check_submission};
use crate::channel::destination::Reply;
use crate::channel::{Content, SourceConfig};
use crate::journal::Status;
use crate::runtime::http_ingest::{self, Intake, Sender};

pub async fn receive(
    State(state): State<Arc<AppState>>,
    ctx: Ctx,
    Path(channel): Path<String>,
    body: Bytes,
) -> Response {
    let content = match accepting(&state, &channel, &ctx) {
        Ok(c) => c,
        Err(e) => return super::fhir::error_response(&e),
    };
    // A channel is no way around the FHIR API's scopes. Unreadable JSON is refused (and
    // journaled) below, with the reason.
    let policy = state.fhir.policy.as_ref();
    let allowed = match content {
        Content::Fhir => match serde_json::from_slice::<Value>(&body) {
            Ok(value) => check_submission(policy, &ctx.access, &value),
            Err(_) => Ok(()),
        },
        // A document becomes a DocumentReference (and the resources of its header).
        Content::Cda => policy.allow(&ctx.access, "DocumentReference", Action::Create),
        Content::Hl7v2(_) | Content::Telemetry | Content::Change => Ok(()),
    };
    if let Err(e) = allowed {
        return super::fhir::error_response(&e);
    }
    let sender = Sender {
        name: ctx.access.subject.clone(),
        peer: ctx.access.source.map(|a| a.to_string()),
        source: "http",
    };
    let intake = http_ingest::receive(&state.runtime, &channel, body.to_vec(), sender).await;
    let (id, reply) = match intake {
        Intake::Accepted {
            id,
            status,
            error,
            wait,
            single,
        } => {
            let reply = accepted(&state, id, status, error, wait).await;
            (Some(id), if single { as_write(reply) } else { reply })
        }
        Intake::Duplicate { id, of } => (
            Some(id),
            info(
                200,
                &format!("already received as message {of}: not applied again"),
            ),
        ),
        Intake::Rejected { id, reply } => (id, reply),
        Intake::Unavailable(why) => (
            None,
            Reply {
                status: 503,
                body: operation_outcome("error", "transient", &why, None),
            },
        ),
    };
    respond(&ctx, id, reply)
}

/// The channel's content, when it exists, takes HTTP, runs, and the request's body is of
/// its kind.
fn accepting(state: &AppState, channel: &str, ctx: &Ctx) -> Result<Content, FhirError> {
    let Some(rt) = state.runtime.channel(channel) else {
        return Err(FhirError::not_found(format!("no channel `{channel}`")));
    };
    if !matches!(rt.channel.source, SourceConfig::Http { .. }) {
        return Err(FhirError::not_found(format!(
            "channel `{channel}` has a {} source: it does not take HTTP",
            rt.channel.source.kind()
        )));
    }
    if !rt.is_running() {
        let why = rt.channel.paused.as_deref().unwrap_or("disabled");
        return Err(FhirError::new(
            503,
            passerelle_fhir::IssueType::Transient,
            format!("channel `{channel}` is not running ({why})"),
        ));
    }
    let content = rt.channel.source.content();
    let mime = ctx
        .content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    let fits = match content {
        Content::Fhir => matches!(
            mime,
            "application/fhir+json" | "application/json" | "application/json+fhir"
        ),
        Content::Cda => matches!(
            mime,
            "application/hl7-cda+xml" | "application/xml" | "text/xml"
        ),
        Content::Hl7v2(_) | Content::Telemetry | Content::Change => false,
    };
    if !fits {
        return Err(FhirError::new(
            415,
            passerelle_fhir::IssueType::NotSupported,
            format!(
                "Content-Type `{mime}`: channel `{channel}` takes {}",
                content.mime()
            ),
        ));
    }
    Ok(content)
}

/// The answer for a journaled message: the store's, when it comes in time.
async fn accepted(
    state: &AppState,
    id: i64,
    status: Status,
    error: Option<String>,
    wait: Option<std::time::Duration>,
) -> Reply {
    match status {
        Status::Errored => Reply {
            status: 422,
            body: operation_outcome(
                "error",
                "processing",
                &error.unwrap_or_else(|| "the channel could not process it".into()),
                None,
            ),
        },
        Status::Filtered => info(
            200,
            &format!("journaled as message {id} and filtered by the channel: nothing written"),
        ),
        Status::Queued => {
            let answer = match wait {
                Some(timeout) => state.runtime.replies().wait(id, timeout).await,
                None => None,
            };
            answer.unwrap_or_else(|| Reply {
                status: 202,
                body: operation_outcome(
                    "information",
                    "informational",
                    &format!("journaled as message {id}; it will be applied"),
                    None,
                ),
            })
        }
        _ => info(200, &format!("journaled as message {id}")),
    }
}

/// One resource sent, one written: answered as the FHIR API answers a create or update, with
/// the entry's status (`201 Created`) and, in the body, what was done.
fn as_write(reply: Reply) -> Reply {
    let entries = reply.body["entry"].as_array();
    let Some([entry]) = entries.map(Vec::as_slice) else {
        return reply;
    };
    let r = &entry["response"];
    let status = r["status"]
        .as_str()
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(reply.status);
    let text = format!(
        "{} {}",
        r["status"].as_str().unwrap_or_default(),
        r["location"].as_str().unwrap_or_default()
    );
    let mut body = operation_outcome("information", "informational", &text, None);
    // Kept for `respond`, which sets Location and ETag from it, then drops it.
    body["entry"] = serde_json::json!([entry]);
    Reply { status, body }
}

fn info(status: u16, text: &str) -> Reply {
    Reply {
        status,
        body: operation_outcome("information", "informational", text, None),
    }
}

fn respond(ctx: &Ctx, id: Option<i64>, mut reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // An OperationOutcome carrying the entry of a single write (see `as_write`).
    let written = match reply.body["resourceType"] == "OperationOutcome" {
        true => reply.body.as_object_mut().and_then(|o| o.remove("entry")),
        false => None,
    };
    let mut response = super::fhir::json_response(status, &reply.body, ctx.pretty);
    let headers = response.headers_mut();
    if let Some(etag) = written
        .as_ref()
        .and_then(|w| w[0]["response"]["etag"].as_str())
        && let Ok(v) = HeaderValue::from_str(etag)
    {
        headers.insert(header::ETAG, v);
    }
    if let Some(id) = id {
        let link = format!("/api/messages/{id}");
        if let Ok(v) = HeaderValue::from_str(&link) {
            headers.insert(header::CONTENT_LOCATION, v.clone());
            if status == StatusCode::ACCEPTED {
                headers.insert(header::LOCATION, v);
            }
        }
    }
    // One resource written: where it is, as a create through the FHIR API would say.
    if let Some(location) = written
        .as_ref()
        .and_then(|w| w[0]["response"]["location"].as_str())
        && let Ok(v) = HeaderValue::from_str(&format!("{}/{location}", ctx.base))
    {
        headers.insert(header::LOCATION, v);
    }
    response.into_response()
}
