//! MLLP over TLS, with certificates made on the spot.

mod common;

use common::{Echo, start};
use passerelle_connectors::mllp::{
    ClientConfig, ClientTls, MllpClient, MllpError, ServerConfig, TlsConfig,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

struct Pki {
    dir: TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn ca(dir: &Path, name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    write(&dir.join(format!("{name}.pem")), &ca.pem());
    ca
}

fn leaf(
    dir: &Path,
    name: &str,
    san: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, san);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    write(&dir.join(format!("{name}.crt")), &cert.pem());
    write(&dir.join(format!("{name}.key")), &key.serialize_pem());
}

/// A CA issuing the server and client certificates, and an unrelated CA.
fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_cert = ca(dir.path(), "ca");
    ca(dir.path(), "other-ca");
    leaf(
        dir.path(),
        "server",
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca_cert,
    );
    leaf(
        dir.path(),
        "client",
        "lab-system",
        ExtendedKeyUsagePurpose::ClientAuth,
        &ca_cert,
    );
    Pki { dir }
}

fn server_config(pki: &Pki, require_client_cert: bool) -> ServerConfig {
    ServerConfig {
        tls: Some(TlsConfig {
            cert_chain_pem: pki.path("server.crt"),
            private_key_pem: pki.path("server.key"),
            client_ca_pem: require_client_cert.then(|| pki.path("ca.pem")),
        }),
        ..ServerConfig::default()
    }
}

fn client_config(pki: &Pki, ca: &str, with_cert: bool) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(5),
        tls: Some(ClientTls {
            ca_pem: pki.path(ca),
            client_cert_pem: with_cert.then(|| pki.path("client.crt")),
            client_key_pem: with_cert.then(|| pki.path("client.key")),
            // The listener is on 127.0.0.1; the certificate names localhost.
            server_name: Some("localhost".into()),
        }),
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn tls_round_trip() {
    let pki = pki();
    let server = start(server_config(&pki, false), Echo).await;
    let mut client =
        MllpClient::connect(&server.addr_string(), &client_config(&pki, "ca.pem", false))
            .await
            .unwrap();
    for i in 0..5 {
        let payload = format!("MSH|over tls {i}");
        assert_eq!(
            &client.send(payload.as_bytes()).await.unwrap()[..],
            payload.as_bytes()
        );
    }
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn client_rejects_a_server_from_another_ca() {
    let pki = pki();
    let server = start(server_config(&pki, false), Echo).await;
    let err = MllpClient::connect(
        &server.addr_string(),
        &client_config(&pki, "other-ca.pem", false),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MllpError::Tls(_)), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_accepts_a_client_certificate() {
    let pki = pki();
    let server = start(server_config(&pki, true), Echo).await;
    let mut client =
        MllpClient::connect(&server.addr_string(), &client_config(&pki, "ca.pem", true))
            .await
            .unwrap();
    assert_eq!(&client.send(b"MSH|mtls").await.unwrap()[..], b"MSH|mtls");
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_certificate() {
    let pki = pki();
    let server = start(server_config(&pki, true), Echo).await;
    // With TLS 1.3 the client may only learn of the refusal on first use.
    let outcome =
        match MllpClient::connect(&server.addr_string(), &client_config(&pki, "ca.pem", false))
            .await
        {
            Ok(mut client) => client.send(b"MSH|anonymous").await.map(drop),
            Err(e) => Err(e),
        };
    let err = outcome.unwrap_err();
    assert!(
        format!("{err:?}").contains("CertificateRequired"),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_tls_files_are_reported() {
    let pki = pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = server_config(&pki, false);
    config.tls.as_mut().unwrap().private_key_pem = pki.path("missing.key");
    let err = passerelle_connectors::mllp::serve(
        listener,
        config,
        std::sync::Arc::new(Echo),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("missing.key"), "{err}");

    let mut config = client_config(&pki, "ca.pem", true);
    config.tls.as_mut().unwrap().client_key_pem = None;
    let err = MllpClient::connect("127.0.0.1:1", &config)
        .await
        .unwrap_err();
    assert!(matches!(err, MllpError::Tls(_)), "{err:?}");
}

#[test]
fn validate_names_the_file_at_fault() {
    let pki = pki();
    let good = TlsConfig {
        cert_chain_pem: pki.path("server.crt"),
        private_key_pem: pki.path("server.key"),
        client_ca_pem: Some(pki.path("ca.pem")),
    };
    good.validate().unwrap();

    let missing = TlsConfig {
        cert_chain_pem: pki.path("absent.crt"),
        ..good.clone()
    };
    let e = missing.validate().unwrap_err();
    assert_eq!(e.file(), Some(pki.path("absent.crt").as_path()));
    assert!(e.to_string().contains("absent.crt"), "{e}");

    write(&pki.path("junk.key"), "not a key\n");
    let junk_key = TlsConfig {
        private_key_pem: pki.path("junk.key"),
        ..good.clone()
    };
    let e = junk_key.validate().unwrap_err();
    assert_eq!(e.file(), Some(pki.path("junk.key").as_path()));
    assert!(e.to_string().contains("junk.key"), "{e}");

    let bad_ca = TlsConfig {
        client_ca_pem: Some(pki.path("server.key")),
        ..good.clone()
    };
    let e = bad_ca.validate().unwrap_err();
    assert_eq!(e.file(), Some(pki.path("server.key").as_path()));

    // A key that does not go with the certificate: both files are named.
    let mismatch = TlsConfig {
        private_key_pem: pki.path("client.key"),
        ..good
    };
    let e = mismatch.validate().unwrap_err();
    assert!(
        e.to_string().contains("server.crt") && e.to_string().contains("client.key"),
        "{e}"
    );
}
