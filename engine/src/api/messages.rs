//! The message browser: list with filters and a cursor, one message with its raw bytes,
//! parsed view and trace, and reprocess.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use passerelle_hl7v2::{Message, ParseOptions, SegmentView};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiPath, ApiQuery};
use super::{AppState, error};
use crate::channel::Content;
use crate::journal::read::{MessageQuery, iso};
use crate::journal::{NoSuchMessage, Reprocessed, Status};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize)]
pub struct ListParams {
    channel: Option<String>,
    status: Option<String>,
    /// RFC 3339 time, or unix seconds.
    since: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn parse_since(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(seconds * 1_000_000);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Response {
    let status = match p.status.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => match Status::parse(text) {
            Some(s) => Some(s),
            None => {
                let known: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("status `{text}`: expected one of {}", known.join(", ")),
                );
            }
        },
        None => None,
    };
    let since = match p.since.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => match parse_since(text) {
            Some(t) => Some(t),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("since `{text}`: expected RFC 3339 or unix seconds"),
                );
            }
        },
        None => None,
    };
    let before_id = match p.cursor.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => match text.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => return error(StatusCode::BAD_REQUEST, "invalid cursor"),
        },
        None => None,
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let query = MessageQuery {
        channel: p.channel.filter(|c| !c.is_empty()),
        status,
        since,
        limit,
        before_id,
    };
    match state.runtime.journal().list_messages(&query).await {
        Ok((total, items, more)) => {
            // Keyset paging: stable while new messages arrive (they come before the cursor).
            // A cursor only when another page follows.
            let next_cursor = more
                .then(|| items.last().map(|m| m.id.to_string()))
                .flatten();
            Json(json!({ "total": total, "items": items, "next_cursor": next_cursor }))
                .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

fn segment_json(s: &SegmentView) -> Value {
    let fields: Vec<Value> = s
        .fields
        .iter()
        .filter(|f| !f.value.is_empty())
        .map(|f| {
            let mut field = json!({ "number": f.number, "value": f.value });
            let split =
                f.repetitions.len() > 1 || f.repetitions.iter().any(|r| r.components.len() > 1);
            if split {
                field["repetitions"] = f
                    .repetitions
                    .iter()
                    .map(|r| {
                        r.components
                            .iter()
                            .map(|c| {
                                if c.subcomponents.len() > 1 {
                                    json!(c.subcomponents)
                                } else {
                                    json!(c.value)
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
            }
            field
        })
        .collect();
    json!({ "id": s.id, "position": s.position, "fields": fields })
}

pub async fn detail(State(state): State<Arc<AppState>>, ApiPath(id): ApiPath<i64>) -> Response {
    let detail = match state.runtime.journal().get_message(id).await {
        Ok(Some(d)) => d,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no message {id}")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let (text, parsed, parse_error) = if detail.summary.content_type == Content::Fhir.mime() {
        parsed_json(&detail.raw)
    } else {
        let options = match state.runtime.channel(&detail.summary.channel) {
            Some(c) => match c.channel.source.content() {
                Content::Hl7v2(options) => options,
                _ => ParseOptions::default(),
            },
            None => ParseOptions::default(),
        };
        parsed_hl7(&detail.raw, &options)
    };
    let trace: Vec<Value> = detail
        .trace
        .iter()
        .map(|t| {
            json!({ "step": t.step, "at": iso(t.at), "duration_us": t.duration_us, "outcome": t.outcome, "detail": t.detail })
        })
        .collect();
    let mut body = serde_json::to_value(&detail.summary).unwrap_or(Value::Null);
    body["raw"] = json!(text.replace('\r', "\n"));
    body["raw_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&detail.raw));
    body["parsed"] = parsed;
    body["parse_error"] = json!(parse_error);
    body["trace"] = json!(trace);
    body["outbox"] = json!(detail.outbox);
    Json(body).into_response()
}

/// The raw text, its HL7 v2 tree, and why it does not parse.
fn parsed_hl7(raw: &[u8], options: &ParseOptions) -> (String, Value, Option<String>) {
    match Message::parse_with(raw, options) {
        Ok(m) => {
            let segments: Vec<Value> = m.tree().iter().map(segment_json).collect();
            (
                m.text().to_string(),
                json!({ "charset": m.charset().label(), "segments": segments }),
                None,
            )
        }
        Err(e) => (
            String::from_utf8_lossy(raw).into_owned(),
            Value::Null,
            Some(e.to_string()),
        ),
    }
}

/// The raw text and the JSON it holds.
fn parsed_json(raw: &[u8]) -> (String, Value, Option<String>) {
    let text = String::from_utf8_lossy(raw).into_owned();
    match serde_json::from_slice::<Value>(raw) {
        Ok(v) => (text, v, None),
        Err(e) => (text, Value::Null, Some(e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
pub struct ReprocessParams {
    /// Only queue the dead-lettered deliveries again, instead of re-running the channel.
    #[serde(default)]
    only_failed: bool,
}

pub async fn reprocess(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(p): ApiQuery<ReprocessParams>,
) -> Response {
    match state.runtime.reprocess(id, p.only_failed).await {
        Ok(Reprocessed::Rerun { channel, generation }) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "channel": channel, "action": "rerun", "generation": generation })),
        )
            .into_response(),
        Ok(Reprocessed::Requeued { channel, count }) => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "channel": channel, "action": "requeued", "deliveries": count })),
        )
            .into_response(),
        Err(e) if e.is::<NoSuchMessage>() => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => error(StatusCode::CONFLICT, format!("{e:#}")),
    }
}
