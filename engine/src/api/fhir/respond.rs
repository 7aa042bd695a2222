//! What every FHIR request needs from its HTTP envelope (identity, base URL, `Prefer`,
//! conditional headers, format) and how every answer is written (FHIR JSON, ETag,
//! Location, Last-Modified, OperationOutcome for errors).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use passerelle_fhir::bundle::{Return, parse_etag};
use passerelle_fhir::datetime::http_date;
use passerelle_fhir::{Expect, FhirError, Stored};
use serde_json::Value;

use super::access::AccessContext;
use crate::api::AppState;
use crate::api::auth::{authenticate, challenge};

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A FHIR error as an HTTP answer.
pub fn error_response(e: &FhirError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    challenge(json_response(status, &e.outcome(), false))
}

pub fn json_response(status: StatusCode, body: &Value, pretty: bool) -> Response {
    let text = if pretty {
        serde_json::to_string_pretty(body)
    } else {
        serde_json::to_string(body)
    }
    .expect("JSON values serialise");
    (status, [(header::CONTENT_TYPE, FHIR_JSON)], text).into_response()
}

/// The request, as the FHIR handlers see it.
pub struct Ctx {
    pub access: AccessContext,
    /// `http://host/fhir`, for full URLs and links.
    pub base: String,
    pub prefer_return: Return,
    pub strict: bool,
    pub pretty: bool,
    pub if_match: Option<String>,
    pub if_none_exist: Option<String>,
    pub query: String,
    /// The query string's pairs, decoded.
    pub pairs: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// `Type/id` when the URL names one resource: what an audit record of a refused or
    /// failed access says was attempted.
    pub target: Option<String>,
}

impl Ctx {
    pub fn expect(&self) -> Result<Expect, FhirError> {
        match &self.if_match {
            None => Ok(Expect::Any),
            Some(t) => parse_etag(t).map(Expect::Version).ok_or_else(|| {
                FhirError::invalid(format!("If-Match `{t}` is not an ETag such as W/\"3\""))
            }),
        }
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// JSON is what the server speaks; a client that asks only for XML is told so (406).
fn check_format(pairs: &[(String, String)], headers: &HeaderMap) -> Result<(), FhirError> {
    let format = pairs.iter().find(|(k, _)| k == "_format").map(|(_, v)| v);
    let json_like = |f: &str| {
        let f = f.split(';').next().unwrap_or("").trim();
        matches!(
            f,
            "json"
                | "application/json"
                | "application/fhir+json"
                | "application/json+fhir"
                | "*/*"
                | "application/*"
                | ""
        )
    };
    if let Some(f) = format
        && !json_like(f)
    {
        return Err(FhirError::new(
            406,
            passerelle_fhir::IssueType::NotSupported,
            format!("_format={f}: this server speaks FHIR JSON only (application/fhir+json)"),
        ));
    }
    if let Some(accept) = header_str(headers, "accept")
        && !accept.split(',').any(json_like)
    {
        return Err(FhirError::new(
            406,
            passerelle_fhir::IssueType::NotSupported,
            format!("Accept: {accept}: this server speaks FHIR JSON only (application/fhir+json)"),
        ));
    }
    Ok(())
}

impl FromRequestParts<Arc<AppState>> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let query = parts.uri.query().unwrap_or_default().to_string();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        check_format(&pairs, &parts.headers).map_err(|e| error_response(&e))?;
        let principal = authenticate(state, &parts.headers).await.map_err(|r| {
            error_response(&FhirError::new(
                r.status.as_u16(),
                if r.status == StatusCode::UNAUTHORIZED {
                    passerelle_fhir::IssueType::Login
                } else {
                    passerelle_fhir::IssueType::Exception
                },
                r.message,
            ))
        })?;
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let purpose = header_str(&parts.headers, "x-purpose-of-use");
        let host = header_str(&parts.headers, "host").unwrap_or_else(|| "localhost".into());
        let prefer = header_str(&parts.headers, "prefer").unwrap_or_default();
        let mut prefer_return = Return::Representation;
        let mut strict = false;
        for p in prefer.split([',', ';']).map(str::trim) {
            match p {
                "return=minimal" => prefer_return = Return::Minimal,
                "return=representation" => prefer_return = Return::Representation,
                "return=OperationOutcome" => prefer_return = Return::OperationOutcome,
                "handling=strict" => strict = true,
                "handling=lenient" => strict = false,
                _ => {}
            }
        }
        let target = {
            let path = parts.uri.path().trim_start_matches("/fhir");
            let mut segments = path.trim_start_matches('/').split('/');
            match (segments.next(), segments.next()) {
                (Some(t), Some(id))
                    if passerelle_fhir::types::is_resource_type(t)
                        && passerelle_fhir::types::is_valid_id(id) =>
                {
                    Some(format!("{t}/{id}"))
                }
                _ => None,
            }
        };
        let pretty =
            form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "_pretty" && v == "true");
        Ok(Ctx {
            access: AccessContext::new(&principal, purpose, source),
            base: format!("http://{host}/fhir"),
            prefer_return,
            strict,
            pretty,
            if_match: header_str(&parts.headers, "if-match"),
            if_none_exist: header_str(&parts.headers, "if-none-exist")
                .map(|s| s.trim_start_matches('?').to_string()),
            query,
            pairs,
            content_type: header_str(&parts.headers, "content-type"),
            target,
        })
    }
}

/// What a handler answers.
pub enum Reply {
    /// One resource version, with its ETag and Last-Modified; `Location` for writes.
    Resource {
        stored: Stored,
        status: StatusCode,
        location: bool,
    },
    /// A deletion (or nothing to delete).
    Deleted,
    /// Any other FHIR JSON (Bundles, CapabilityStatement).
    Json(StatusCode, Value),
}

impl Reply {
    pub fn render(self, ctx: &Ctx) -> Response {
        match self {
            Reply::Json(status, body) => json_response(status, &body, ctx.pretty),
            Reply::Deleted => match ctx.prefer_return {
                Return::OperationOutcome => json_response(
                    StatusCode::OK,
                    &passerelle_fhir::error::operation_outcome(
                        "information",
                        "informational",
                        "deleted",
                        None,
                    ),
                    ctx.pretty,
                ),
                _ => StatusCode::NO_CONTENT.into_response(),
            },
            Reply::Resource {
                stored,
                status,
                location,
            } => {
                let mut response = match (location, ctx.prefer_return) {
                    (true, Return::Minimal) => status.into_response(),
                    (true, Return::OperationOutcome) => json_response(
                        status,
                        &passerelle_fhir::error::operation_outcome(
                            "information",
                            "informational",
                            &format!("{} {}", status.as_u16(), stored.versioned_ref()),
                            None,
                        ),
                        ctx.pretty,
                    ),
                    _ => json_response(
                        status,
                        stored.body.as_ref().unwrap_or(&Value::Null),
                        ctx.pretty,
                    ),
                };
                let headers = response.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&stored.etag()) {
                    headers.insert(header::ETAG, v);
                }
                if let Ok(v) = HeaderValue::from_str(&http_date(stored.last_updated)) {
                    headers.insert(header::LAST_MODIFIED, v);
                }
                if location
                    && let Ok(v) =
                        HeaderValue::from_str(&format!("{}/{}", ctx.base, stored.versioned_ref()))
                {
                    headers.insert(header::LOCATION, v);
                }
                response
            }
        }
    }
}

/// A request body as JSON, with where it breaks when it does not parse.
pub fn parse_body(body: &[u8]) -> Result<Value, FhirError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(FhirError::invalid("the request has no body"));
    }
    serde_json::from_slice(body).map_err(|e| {
        FhirError::invalid(format!(
            "the body is not valid JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}
