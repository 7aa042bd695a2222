//! Posts a FHIR Bundle (a transaction, built by the `fhir-transaction` transform) to another
//! FHIR server, the partner clinic's, with a bearer token or OAuth2 client credentials, and
//! judges the answer:
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx | delivered; the note counts the transaction-response's entry statuses |
//! | 401 | retried with a new access token (the cached one is dropped) |
//! | 408, 429, 5xx, no answer | retried |
//! | other 4xx (400, 403, 404, 409, 412, 422...) | dead letter with the OperationOutcome's words |
//!
//! A token endpoint that cannot be reached or refuses the client is retried: credentials
//! fixed and the channel reloaded, the waiting messages go.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use super::http::{Answer, HttpSettings, Peer};
use super::{Delivered, DeliveryError, DeliveryFuture, Destination};
use crate::journal::OutboxItem;

/// A `fhir` destination's settings.
#[derive(Debug, Clone)]
pub struct FhirRestConfig {
    /// Where the Bundle is POSTed: the server's base URL (its transaction endpoint) or a
    /// channel endpoint that takes Bundles (`/api/inbound/{channel}`).
    pub http: HttpSettings,
    pub auth: Auth,
}

/// How the destination authenticates.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    /// A long-lived bearer token.
    Bearer(String),
    /// OAuth2 client credentials (RFC 6749 §4.4), HTTP Basic client authentication.
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
    },
}

/// An access token is renewed this long before the server says it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

pub struct FhirRestDestination {
    peer: Peer,
    auth: Auth,
    /// The current access token and when to stop using it.
    access: Mutex<Option<(String, Instant)>>,
}

impl FhirRestDestination {
    pub fn new(config: &FhirRestConfig) -> Self {
        Self {
            peer: Peer::new(&config.http),
            auth: config.auth.clone(),
            access: Mutex::new(None),
        }
    }

    /// The bearer token to send, fetched from the token endpoint when none is fresh.
    async fn bearer(&self, client: &reqwest::Client) -> Result<Option<String>, DeliveryError> {
        let (token_url, client_id, client_secret, scope) = match &self.auth {
            Auth::None => return Ok(None),
            Auth::Bearer(token) => return Ok(Some(token.clone())),
            Auth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => (token_url, client_id, client_secret, scope),
        };
        let mut access = self.access.lock().await;
        if let Some((token, until)) = access.as_ref()
            && Instant::now() < *until
        {
            return Ok(Some(token.clone()));
        }
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = scope {
                form.append_pair("scope", scope);
            }
            form.finish()
        };
        let failed =
            |why: String| DeliveryError::retry(format!("token endpoint {token_url}: {why}"));
        let response = client
            .post(token_url)
            .basic_auth(encoded(client_id), Some(encoded(client_secret)))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let Some(token) = body["access_token"]
            .as_str()
            .filter(|_| status.is_success())
        else {
            let why = [&body["error"], &body["error_description"]]
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(": ");
            return Err(failed(format!("{} {why}", status.as_u16())));
        };
        let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(300));
        let until = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE);
        *access = Some((token.to_string(), until));
        Ok(Some(token.to_string()))
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
fn encoded(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl Destination for FhirRestDestination {
    fn deliver<'a>(&'a self, _channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let client = self.peer.client()?;
            let mut request = client
                .post(&self.peer.url)
                .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
                .header(reqwest::header::ACCEPT, "application/fhir+json")
                .body(item.payload.clone());
            if let Some(token) = self.bearer(client).await? {
                request = request.bearer_auth(token);
            }
            let Answer { status, body, .. } = self.peer.exchange(request).await?;
            let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            match status {
                200..=299 => Ok(Delivered::from(delivered_note(status, &answer))),
                401 => {
                    *self.access.lock().await = None;
                    Err(DeliveryError::retry(refusal(status, &answer, &body)))
                }
                408 | 429 | 500..=599 => Err(DeliveryError::retry(refusal(status, &answer, &body))),
                _ => Err(DeliveryError::permanent(refusal(status, &answer, &body))),
            }
        })
    }
}

/// `200 transaction-response: 201 Created x2, 200 OK x3`.
fn delivered_note(status: u16, answer: &Value) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in answer["entry"].as_array().into_iter().flatten() {
        if let Some(s) = entry["response"]["status"].as_str() {
            *counts.entry(s).or_default() += 1;
        }
    }
    let kind = answer["type"].as_str().unwrap_or("answer");
    let counted: Vec<String> = counts.iter().map(|(s, n)| format!("{s} x{n}")).collect();
    if counted.is_empty() {
        format!("{status} {kind}")
    } else {
        format!("{status} {kind}: {}", counted.join(", "))
    }
}

/// The peer's refusal in its own words: the OperationOutcome's issues, else the body's start.
fn refusal(status: u16, answer: &Value, body: &[u8]) -> String {
    let issues: Vec<String> = answer["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let text = i["diagnostics"]
                .as_str()
                .or(i["details"]["text"].as_str())
                .unwrap_or_default();
            format!(
                "{} {}: {text}",
                i["severity"].as_str().unwrap_or("error"),
                i["code"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if !issues.is_empty() {
        return format!("{status}: {}", issues.join("; "));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)])
        .trim()
        .to_string();
    format!("{status}: {text}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_note_counts_the_entry_statuses_and_a_refusal_quotes_the_outcome() {
        let answer = json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
            {"response": {"status": "201 Created"}}, {"response": {"status": "200 OK"}},
            {"response": {"status": "201 Created"}}]});
        assert_eq!(
            delivered_note(200, &answer),
            "200 transaction-response: 200 OK x1, 201 Created x2"
        );
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "multiple-matches", "diagnostics": "2 Patients match identifier=x|1"}]});
        assert_eq!(
            refusal(412, &outcome, b""),
            "412: error multiple-matches: 2 Patients match identifier=x|1"
        );
        assert_eq!(
            refusal(502, &Value::Null, b"<html>Bad gateway</html>"),
            "502: <html>Bad gateway</html>"
        );
    }

    #[test]
    fn client_credentials_are_form_encoded_for_basic() {
        assert_eq!(encoded("a b:c/é"), "a+b%3Ac%2F%C3%A9");
    }
}
