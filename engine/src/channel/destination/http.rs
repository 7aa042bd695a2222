//! The HTTP client of the destinations that speak HTTP (`xds`, `fhir`): rustls, the system's
//! roots plus a channel's CA file, and an optional client certificate (mutual TLS).

use std::path::PathBuf;
use std::time::Duration;

use super::DeliveryError;

/// The TLS material of a destination: mutual TLS (the DMP's), a private CA (a partner's).
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Client certificate chain and its private key (PEM files).
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Trusted roots for the peer's certificate (PEM), beside the system's.
    pub ca: Option<PathBuf>,
}

/// Where an HTTP destination sends and how: what its channel file says.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub url: String,
    pub tls: Tls,
    pub connect_timeout: Duration,
    /// The whole exchange, answer included (a registry may take a while).
    pub timeout: Duration,
}

/// A client with those timeouts and that TLS, or why not (a missing certificate file).
pub fn client(
    tls: &Tls,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .use_rustls_tls();
    if let Some(ca) = &tls.ca {
        let pem = read(ca)?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&tls.certificate, &tls.key) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => return Err("`certificate` and `key` go together".into()),
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// A destination's HTTP peer: where it is, and the client that reaches it or why there is
/// none (a missing certificate file): every delivery then fails with that reason until the
/// channel is fixed and reloaded.
pub struct Peer {
    pub url: String,
    client: Result<reqwest::Client, String>,
}

/// What a peer answered.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: bytes::Bytes,
}

impl Peer {
    pub fn new(settings: &HttpSettings) -> Self {
        Self {
            url: settings.url.clone(),
            client: client(&settings.tls, settings.connect_timeout, settings.timeout),
        }
    }

    pub fn client(&self) -> Result<&reqwest::Client, DeliveryError> {
        self.client
            .as_ref()
            .map_err(|e| DeliveryError::retry(e.clone()))
    }

    /// Sends the request and reads the whole answer. No answer (refused, reset, timed out)
    /// is retried: the peer may be down for a while.
    pub async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, DeliveryError> {
        let unreachable = |e: reqwest::Error| DeliveryError::retry(format!("{}: {e}", self.url));
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.bytes().await.map_err(unreachable)?;
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }
}
