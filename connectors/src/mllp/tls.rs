//! TLS settings for MLLP over TLS, and their translation to rustls configs.
//!
//! Certificates and keys are read from PEM files. The ring crypto provider is
//! passed explicitly, so nothing depends on a process-wide default provider.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Server side TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The server certificate followed by its intermediates.
    pub cert_chain_pem: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs.
    pub client_ca_pem: Option<PathBuf>,
}

/// Client side TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates trusted to issue the server's certificate.
    pub ca_pem: PathBuf,
    /// Client certificate chain, for servers that require one (with `client_key_pem`).
    pub client_cert_pem: Option<PathBuf>,
    /// Private key of the client certificate (with `client_cert_pem`).
    pub client_key_pem: Option<PathBuf>,
    /// Name to verify the server certificate against; defaults to the host
    /// part of the address connected to.
    pub server_name: Option<String>,
}

/// Why a TLS configuration could not be built. The message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsSetupError {
    message: String,
    file: Option<PathBuf>,
}

impl TlsSetupError {
    fn new(message: String) -> Self {
        Self {
            message,
            file: None,
        }
    }

    fn in_file(path: &Path, message: String) -> Self {
        Self {
            message,
            file: Some(path.to_path_buf()),
        }
    }

    /// The file at fault, when the problem is in one file (a missing or unreadable file, no
    /// certificate or key in it, an invalid CA certificate).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

impl TlsConfig {
    /// Reads the certificate, key and client CA files and builds the server configuration,
    /// as the listener does when it starts, so that a mistake is found before it is needed.
    pub fn validate(&self) -> Result<(), TlsSetupError> {
        acceptor(self).map(drop)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            TlsSetupError::in_file(
                path,
                format!("reading certificates from {}: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::in_file(
            path,
            format!("no certificate found in {}", path.display()),
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsSetupError::in_file(
            path,
            format!("reading private key from {}: {e}", path.display()),
        )
    })
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| {
            TlsSetupError::in_file(path, format!("CA certificate in {}: {e}", path.display()))
        })?;
    }
    Ok(roots)
}

fn rustls_error(what: &str) -> impl FnOnce(rustls::Error) -> TlsSetupError + '_ {
    move |e| TlsSetupError::new(format!("{what}: {e}"))
}

/// Builds the acceptor used by the server for every connection.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsSetupError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error("TLS protocol versions"))?;
    let builder = match &config.client_ca_pem {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                    .build()
                    .map_err(|e| {
                        TlsSetupError::in_file(ca, format!("client CA {}: {e}", ca.display()))
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(
            load_certs(&config.cert_chain_pem)?,
            load_key(&config.private_key_pem)?,
        )
        .map_err(|e| {
            TlsSetupError::new(format!(
                "server certificate {} and private key {}: {e}",
                config.cert_chain_pem.display(),
                config.private_key_pem.display()
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Builds the connector and the name to verify the server against.
pub(crate) fn connector(
    config: &ClientTls,
    host: &str,
) -> Result<(TlsConnector, ServerName<'static>), TlsSetupError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error("TLS protocol versions"))?
        .with_root_certificates(load_roots(&config.ca_pem)?);
    let client = match (&config.client_cert_pem, &config.client_key_pem) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(rustls_error("client certificate and key"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsSetupError::new(
                "client certificate and client key must be given together".into(),
            ));
        }
    };
    let name = config.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| TlsSetupError::new(format!("invalid TLS server name {name:?}: {e}")))?;
    Ok((TlsConnector::from(Arc::new(client)), server_name))
}
