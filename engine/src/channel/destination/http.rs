//! The HTTP client of the destinations that speak HTTP (`xds`, `fhir`): rustls, the system's
//! roots plus a channel's CA file, and an optional client certificate (mutual TLS).

use std::path::PathBuf;
use std::time::Duration;

/// The TLS material of a destination: mutual TLS (the DMP's), a private CA (a partner's).
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Client certificate chain and its private key (PEM files).
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Trusted roots for the peer's certificate (PEM), beside the system's.
    pub ca: Option<PathBuf>,
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
