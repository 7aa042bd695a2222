//! `/api/mappings`: the mapping library in use, reloading it, and previewing a mapping on a
//! message (the web console's "try it": message in, Bundle and trace out, nothing written).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use passerelle_hl7v2::Message;
use passerelle_mapping::live::Reload;
use serde_json::json;

use super::extract::ApiPath;
use super::{AppState, error};

pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let library = state.mappings.get();
    let items: Vec<_> = library
        .mappings()
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "file": m.file.display().to_string(),
                "description": m.description,
                "messages": m.triggers.iter().map(|t| match &t.event {
                    Some(e) => format!("{}^{e}", t.message_type),
                    None => t.message_type.clone(),
                }).collect::<Vec<_>>(),
                "resources": m.resources.iter().map(|r| json!({
                    "name": r.name, "type": r.resource_type
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(items).into_response()
}

/// Reloads the files now (the engine also does when it sees them change).
pub async fn reload(State(state): State<Arc<AppState>>) -> Response {
    let live = state.mappings.clone();
    let result = match tokio::task::spawn_blocking(move || live.reload(true)).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    crate::serve::log_reload(&result);
    match result {
        Reload::Swapped(n) => Json(json!({ "reloaded": true, "mappings": n })).into_response(),
        Reload::Unchanged => Json(json!({ "reloaded": false })).into_response(),
        Reload::Refused(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "reloaded": false,
                "error": "the mappings have problems; the ones in use stay",
                "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    }
}

/// The raw message in the body; the output Bundle, the trace and the fields used out.
pub async fn preview(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Response {
    let library = state.mappings.get();
    let Some(mapping) = library.mapping(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no mapping `{id}`"));
    };
    let message = match Message::parse(&body) {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("not an HL7 v2 message: {e}"),
            );
        }
    };
    match library.run_traced(mapping, &message) {
        Ok(output) => Json(json!({
            "mapping": mapping.id,
            "bundle": output.bundle,
            "trace": output.trace.iter().map(|t| json!({
                "element": t.element, "input": t.input, "rule": t.rule,
            })).collect::<Vec<_>>(),
            "fields_used": output.covered.iter().map(|(s, f)| format!("{s}-{f}")).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": e.message, "rule": e.rule, "input": e.input,
            })),
        )
            .into_response(),
    }
}
