//! The HTTP side: `/health`, `/metrics`, the admin API under `/api` and the FHIR API under
//! `/fhir` (both with bearer tokens).

mod auth;
mod extract;
pub mod fhir;
mod inbound;
mod mappings;
mod messages;
mod oauth;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde_json::json;

use crate::runtime::Runtime;

pub struct AppState {
    pub runtime: Arc<Runtime>,
    /// The mapping library in use (reloaded when its files change).
    pub mappings: Arc<passerelle_mapping::live::Live>,
    pub started: Instant,
    /// False until the listeners are up, and again while shutting down.
    pub ready: AtomicBool,
    pub tokens: auth::TokenCache,
    pub mllp_connections: Arc<passerelle_connectors::mllp::ServerStats>,
    pub fhir: fhir::FhirApi,
}

impl AppState {
    pub fn new(
        runtime: Arc<Runtime>,
        mllp_connections: Arc<passerelle_connectors::mllp::ServerStats>,
        fhir: fhir::FhirApi,
        mappings: Arc<passerelle_mapping::live::Live>,
    ) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            mappings,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            tokens: auth::TokenCache::default(),
            mllp_connections,
            fhir,
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route("/channels", get(channels))
        .route("/messages", get(messages::list))
        .route("/messages/{id}", get(messages::detail))
        .route("/messages/{id}/reprocess", post(messages::reprocess))
        .route("/mappings", get(mappings::list))
        .route("/mappings/reload", post(mappings::reload))
        .route("/mappings/{id}/preview", post(mappings::preview))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Authenticated by the client's own credentials (OAuth2 client credentials grant).
        .route("/oauth/token", post(oauth::token))
        // Authenticated by its FHIR request context: refusals are OperationOutcomes.
        .route(
            "/inbound/{channel}",
            post(inbound::receive).layer(DefaultBodyLimit::max(fhir::BODY_LIMIT)),
        );
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .nest("/api", admin)
        .nest("/fhir", fhir::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A JSON error body: `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such path")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path",
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.ready.load(Ordering::Acquire);
    let journal_ok = sqlx::query("SELECT 1")
        .execute(state.runtime.journal().reader())
        .await
        .is_ok();
    let channels: serde_json::Map<String, serde_json::Value> = state
        .runtime
        .views()
        .into_iter()
        .map(|v| (v.id.clone(), json!(v.state)))
        .collect();
    let body = json!({
        "status": if ready && journal_ok { "ok" } else { "unavailable" },
        "live": true,
        "ready": ready && journal_ok,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "checks": { "journal": if journal_ok { "ok" } else { "failing" }, "listeners": if ready { "up" } else { "down" } },
        "channels": channels,
    });
    let status = if ready && journal_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let conns = state.mllp_connections.active_connections() as f64;
    let uptime = state.started.elapsed().as_secs_f64();
    let disk = state.runtime.journal().file_bytes() as f64;
    let text = state.runtime.metrics().render(&[
        (
            "passerelle_mllp_connections",
            "Open MLLP connections",
            conns,
        ),
        (
            "passerelle_journal_bytes",
            "Size of the journal database on disk",
            disk,
        ),
        ("passerelle_uptime_seconds", "Seconds since start", uptime),
    ]);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn channels(State(state): State<Arc<AppState>>) -> Response {
    Json(state.runtime.views()).into_response()
}
