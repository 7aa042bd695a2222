//! Sends each message, a complete RFC 5322 mail (the `mssante` transform's), by SMTP
//! submission: STARTTLS required by default, a client certificate as MSSanté operators ask,
//! optional AUTH. The envelope comes from the mail's `From`, `To` and `Cc`.
//!
//! The server's word decides: a 2xx reply is a delivery (its text, `queued as ...`, goes in the
//! trace); 4xx, a refused connection, a TLS or network failure are tried again; 5xx is a
//! refusal of this mail, dead-lettered at once with the server's reply.

use std::path::PathBuf;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::Mailboxes;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, Identity, Tls, TlsParameters,
};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{Delivered, DeliveryError, DeliveryFuture, Destination};
use crate::journal::OutboxItem;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection, then `STARTTLS`, which the server must offer (submission, port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS at all: only for a test server on this machine.
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmtpConfig {
    /// `host:port`.
    pub address: String,
    pub tls: SmtpTls,
    /// PEM files of the client certificate (the leaf first) and its private key.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// PEM file of the CA certificates the server's certificate must chain to (the operator's
    /// PKI); without it, the system's roots.
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
}

/// How long one submission may take once connected: a server that stops answering must not
/// hold the outbox for ever.
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);

pub struct SmtpDestination {
    config: SmtpConfig,
}

impl SmtpDestination {
    pub fn new(config: SmtpConfig) -> Self {
        Self { config }
    }

    /// The transport, built per delivery: the certificate files are read each time, so a
    /// renewed certificate is taken without a restart, and a missing one is a retried failure
    /// that names the file.
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
        let c = &self.config;
        let (host, port) = c
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| DeliveryError::permanent(format!("`{}` is not host:port", c.address)))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(c.connect_timeout));
        let tls = match c.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(self.tls_parameters(host)?),
            SmtpTls::Implicit => Tls::Wrapper(self.tls_parameters(host)?),
        };
        builder = builder.tls(tls);
        if let (Some(user), Some(password)) = (&c.username, &c.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }

    fn tls_parameters(&self, host: &str) -> Result<TlsParameters, DeliveryError> {
        let c = &self.config;
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| DeliveryError::retry(format!("cannot read {}: {e}", path.display())))
        };
        let mut builder = TlsParameters::builder(host.to_string());
        if let Some(ca) = &c.ca_file {
            let pem = read(ca)?;
            let roots = Certificate::from_pem(&pem).map_err(|e| {
                DeliveryError::retry(format!("{}: no CA certificate: {e}", ca.display()))
            })?;
            // The operator's PKI only: a certificate from any other CA is refused.
            builder = builder
                .certificate_store(CertificateStore::None)
                .add_root_certificate(roots);
        }
        match (&c.client_certificate, &c.client_key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read(cert)?;
                let leaf = CertificateDer::pem_slice_iter(&cert_pem)
                    .next()
                    .and_then(Result::ok)
                    .ok_or_else(|| {
                        DeliveryError::retry(format!("{}: no PEM certificate", cert.display()))
                    })?;
                // lettre's rustls backend takes the certificate argument of `from_pem` as the
                // DER of one certificate (the key is read as PEM): the leaf, decoded here.
                let identity = Identity::from_pem(leaf.as_ref(), &read(key)?).map_err(|e| {
                    DeliveryError::retry(format!("{}: no usable private key: {e}", key.display()))
                })?;
                builder = builder.identify_with(identity);
            }
            (None, None) => {}
            _ => {
                return Err(DeliveryError::permanent(
                    "client_certificate and client_key go together",
                ));
            }
        }
        builder
            .build_rustls()
            .map_err(|e| DeliveryError::retry(format!("TLS settings: {e}")))
    }
}

impl Destination for SmtpDestination {
    fn deliver<'a>(&'a self, _channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let envelope = envelope(&item.payload).map_err(DeliveryError::permanent)?;
            let transport = self.transport()?;
            let address = &self.config.address;
            let limit = self.config.connect_timeout + SESSION_TIMEOUT;
            let sent = tokio::time::timeout(limit, transport.send_raw(&envelope, &item.payload))
                .await
                .map_err(|_| {
                    DeliveryError::retry(format!("{address}: no answer within {limit:?}"))
                })?;
            match sent {
                Ok(response) => {
                    let text: Vec<&str> = response.message().collect();
                    Ok(Delivered::from(
                        format!("{} {}", response.code(), text.join(" "))
                            .trim_end()
                            .to_string(),
                    ))
                }
                Err(e) => Err(classify(address, &e)),
            }
        })
    }
}

/// 5xx: the server refuses this mail, sending it again cannot help. Everything else (4xx,
/// connection, TLS, network, an unreadable reply) may pass later.
fn classify(address: &str, e: &lettre::transport::smtp::Error) -> DeliveryError {
    let text = format!("{address}: {}", error_chain(e));
    if e.is_permanent() {
        DeliveryError::permanent(text)
    } else {
        DeliveryError::retry(text)
    }
}

/// The error and its causes (the TLS alert, the I/O error...), which lettre's Display leaves out
/// past the first.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The envelope of a mail: `MAIL FROM` its `From`, `RCPT TO` its `To` and `Cc`.
pub fn envelope(mail: &[u8]) -> Result<Envelope, String> {
    let end = mail
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| mail.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(mail.len());
    let head = String::from_utf8_lossy(&mail[..end]);
    // Unfold continuation lines, then read the address headers.
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let addresses = |name: &str| -> Result<Vec<Address>, String> {
        let mut out = Vec::new();
        for (_, value) in fields.iter().filter(|(n, _)| n == name) {
            let boxes: Mailboxes = value
                .parse()
                .map_err(|e| format!("{name}: `{value}` is not a list of addresses: {e}"))?;
            out.extend(boxes.into_iter().map(|m| m.email));
        }
        Ok(out)
    };
    let from = addresses("from")?;
    let mut to = addresses("to")?;
    to.extend(addresses("cc")?);
    let Some(from) = from.into_iter().next() else {
        return Err("the mail has no From address".into());
    };
    if to.is_empty() {
        return Err("the mail has no To or Cc address".into());
    }
    Envelope::new(Some(from), to).map_err(|e| format!("envelope: {e}"))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    const MAIL: &[u8] = b"From: Service <sender@hopital.test>\r\nTo: \"Dr, Marie\" <marie@cabinet.test>,\r\n other@cabinet.test\r\nCc: =?utf-8?b?w4lsb2RpZQ==?= <elodie@cabinet.test>\r\nSubject: XDM/1.0/DDM x\r\n\r\nbody\r\n";

    fn item() -> OutboxItem {
        OutboxItem {
            id: 1,
            message_id: 1,
            generation: 0,
            destination: "mss".into(),
            attempts: 0,
            next_attempt_at: 0,
            control_id: None,
            payload: MAIL.to_vec(),
        }
    }

    #[test]
    fn the_envelope_comes_from_the_mail_headers() {
        let e = envelope(MAIL).unwrap();
        assert_eq!(e.from().unwrap().to_string(), "sender@hopital.test");
        let to: Vec<String> = e.to().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            to,
            [
                "marie@cabinet.test",
                "other@cabinet.test",
                "elodie@cabinet.test"
            ]
        );
        assert!(envelope(b"Subject: x\r\n\r\n").is_err());
        assert!(
            envelope(b"From: a@b.test\r\n\r\n")
                .unwrap_err()
                .contains("no To")
        );
    }

    /// A plain SMTP server answering `rcpt` to RCPT TO (and 250 to the rest); counts DATA.
    async fn server(rcpt: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                    let mut in_data = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply: &str = if in_data {
                            if line != "." {
                                continue;
                            }
                            in_data = false;
                            "250 2.0.0 Ok: queued as ABC123\r\n"
                        } else {
                            match line.get(..4).map(|s| s.to_ascii_uppercase()).as_deref() {
                                Some("EHLO") => "250-test\r\n250 8BITMIME\r\n",
                                Some("RCPT") => rcpt,
                                Some("DATA") => {
                                    in_data = true;
                                    "354 go ahead\r\n"
                                }
                                Some("QUIT") => {
                                    let _ = write.write_all(b"221 bye\r\n").await;
                                    return;
                                }
                                _ => "250 Ok\r\n",
                            }
                        };
                        write.write_all(reply.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        address
    }

    fn destination(address: String) -> SmtpDestination {
        SmtpDestination::new(SmtpConfig {
            address,
            tls: SmtpTls::None,
            client_certificate: None,
            client_key: None,
            ca_file: None,
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
        })
    }

    #[tokio::test]
    async fn the_server_reply_decides_delivered_retried_or_refused() {
        let ok = destination(server("250 2.1.5 Ok\r\n").await);
        let note = ok.deliver("c", &item()).await.unwrap().note;
        assert_eq!(note, "250 2.0.0 Ok: queued as ABC123");

        let busy = destination(server("451 4.3.0 try again later\r\n").await);
        let e = busy.deliver("c", &item()).await.unwrap_err();
        assert!(
            !e.permanent && e.message.contains("try again later"),
            "{e:?}"
        );

        let refused = destination(server("550 5.1.1 no such mailbox\r\n").await);
        let e = refused.deliver("c", &item()).await.unwrap_err();
        assert!(
            e.permanent && e.message.contains("no such mailbox"),
            "{e:?}"
        );

        // Nothing listening: a retry.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = destination(format!("127.0.0.1:{port}"));
        let e = down.deliver("c", &item()).await.unwrap_err();
        assert!(!e.permanent, "{e:?}");

        // STARTTLS required and not offered: never sent in clear, retried.
        let mut plain_only = destination(server("250 Ok\r\n").await);
        plain_only.config.tls = SmtpTls::StartTls;
        let e = plain_only.deliver("c", &item()).await.unwrap_err();
        assert!(!e.permanent, "{e:?}");

        // A mail without recipients cannot be sent at all.
        let mut bad = item();
        bad.payload = b"From: a@b.test\r\n\r\nx".to_vec();
        assert!(ok.deliver("c", &bad).await.unwrap_err().permanent);
    }
}
