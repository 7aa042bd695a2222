//! `POST /api/oauth/token`: the OAuth2 client credentials grant (RFC 6749 §4.4), so that a
//! partner system (or another Passerelle, such as the clinic's) gets short-lived access
//! tokens from its long-lived credentials instead of sending those on every request.
//!
//! The client is an issued API token: `client_id` is its id, `client_secret` the whole token,
//! given with HTTP Basic (preferred by the RFC) or in the form. The access token carries the
//! requested scopes (each one of the client's) or, without `scope`, all of the client's.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::AppState;
use crate::token::{self, ACCESS_LIFETIME};

/// An RFC 6749 §5.2 error response.
fn refuse(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let mut response = (
        status,
        Json(json!({ "error": error, "error_description": description.into() })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"passerelle\""),
        );
    }
    response
}

/// `client_id` and `client_secret` from the Basic header, else from the form.
fn credentials(headers: &HeaderMap, form: &[(String, String)]) -> Option<(String, String)> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    if let Some(pair) = basic {
        // Each half is form-urlencoded before joining (RFC 6749 §2.3.1).
        let (id, secret) = pair.split_once(':')?;
        let decode = |s: &str| -> String {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return Some((decode(id), decode(secret)));
    }
    Some((
        field(form, "client_id")?.to_string(),
        field(form, "client_secret")?.to_string(),
    ))
}

/// A field of the form body.
fn field<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub async fn token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    match field(&form, "grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type `{other}`: only client_credentials is offered"),
            );
        }
        None => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required (application/x-www-form-urlencoded body)",
            );
        }
    }
    let Some((client_id, secret)) = credentials(&headers, &form) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client credentials are required: HTTP Basic client_id:client_secret",
        );
    };
    let journal = state.runtime.journal();
    // Only an issued token is a client: an access token cannot buy another one.
    let client = if secret.starts_with("psl_") {
        token::verify(journal.reader(), journal.cipher(), &secret).await
    } else {
        Ok(None)
    };
    let client = match client {
        Ok(Some(p)) if p.token_id == client_id => p,
        Ok(_) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client, wrong secret or revoked token",
            );
        }
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("cannot check the client: {e}"),
            );
        }
    };
    let scopes: Vec<String> = match field(&form, "scope") {
        None | Some("") => client.scopes.clone(),
        Some(asked) => {
            let asked: Vec<String> = asked.split_whitespace().map(String::from).collect();
            if let Some(extra) = asked.iter().find(|s| !client.scopes.contains(s)) {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    format!(
                        "scope `{extra}` is not the client's (has: {})",
                        client.scopes.join(" ")
                    ),
                );
            }
            asked
        }
    };
    let lifetime = ACCESS_LIFETIME.as_secs() as i64;
    let expires = crate::journal::now_micros() / 1_000_000 + lifetime;
    let access = token::access_token(journal.cipher(), &client, &scopes, expires);
    let mut response = Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": scopes.join(" "),
    }))
    .into_response();
    // RFC 6749 §5.1: token responses are not cached.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
