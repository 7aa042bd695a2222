//! `passerelle.toml`: the settings of a deployment. Every key is optional; command-line flags
//! and environment variables win over the file, the file over the built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::diagnostic::Diagnostic;
use crate::journal::PrunePolicy;

pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
pub const DEFAULT_MLLP: &str = "127.0.0.1:2575";
pub const CONFIG_FILE: &str = "passerelle.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub channels_dir: Option<PathBuf>,
    #[serde(default)]
    pub mappings_dir: Option<PathBuf>,
    #[serde(default)]
    pub conceptmaps_dir: Option<PathBuf>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub mllp: MllpSection,
    #[serde(default)]
    pub retention: PrunePolicy,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    pub address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpSection {
    pub address: Option<String>,
    /// Largest accepted message in bytes (default 16 MiB); larger ones get an AR.
    pub max_message_size: Option<usize>,
    /// Connections silent this long are closed (default "5m").
    pub idle_timeout: Option<String>,
    /// Open connections per MLLP listener (default 1024); more are closed at once.
    pub max_connections: Option<usize>,
    /// Messages of one connection processed concurrently, ACKs kept in order (default 16).
    pub pipeline_window: Option<usize>,
    pub tls: Option<TlsSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` (default) or `json`.
    pub format: Option<String>,
    /// A tracing filter, e.g. `info,passerelle=debug` (default `info`).
    pub level: Option<String>,
}

impl ConfigFile {
    /// Reads and checks a configuration file; errors point at the offending line and column.
    pub fn load(path: &Path) -> Result<ConfigFile, Vec<Diagnostic>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![Diagnostic::new(path, 0, 0, format!("cannot read: {e}"))])?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, Vec<Diagnostic>> {
        let config: ConfigFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            vec![Diagnostic::at_offset(
                path,
                text,
                offset,
                e.message().to_string(),
            )]
        })?;
        let mut problems = Vec::new();
        let mut check = |key: &[&str], ok: bool, what: String| {
            if !ok {
                let offset = key_offset(text, key).unwrap_or(0);
                problems.push(Diagnostic::at_offset(path, text, offset, what));
            }
        };
        for (key, value) in [
            (["http", "address"], &config.http.address),
            (["mllp", "address"], &config.mllp.address),
        ] {
            if let Some(v) = value {
                check(
                    &key,
                    v.parse::<SocketAddr>().is_ok(),
                    format!("`{v}` is not an address like 127.0.0.1:8080"),
                );
            }
        }
        if let Some(v) = &config.mllp.idle_timeout {
            check(
                &["mllp", "idle_timeout"],
                humantime::parse_duration(v).is_ok(),
                format!("`{v}` is not a duration like 30s, 5m, 12h"),
            );
        }
        if let Some(format) = &config.log.format {
            check(
                &["log", "format"],
                matches!(format.as_str(), "text" | "json"),
                format!("log format `{format}`: expected text or json"),
            );
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// Byte offset of the key at `path` (`["mllp", "address"]`) where the file writes it, be it
/// under a `[section]` header, as a dotted key or in an inline table. Searching the text for
/// the name would find the same key of another section, or a comment.
pub(crate) fn key_offset(text: &str, path: &[&str]) -> Option<usize> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let (last, sections) = path.split_last()?;
    let mut table = document.get_ref();
    for section in sections {
        match table.get(*section)?.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    let (key, _) = table.get_key_value(*last)?;
    Some(key.span().start)
}

impl TlsSection {
    /// The server TLS settings these keys describe.
    pub fn server_config(&self) -> passerelle_connectors::mllp::TlsConfig {
        passerelle_connectors::mllp::TlsConfig {
            cert_chain_pem: self.certificate.clone(),
            private_key_pem: self.private_key.clone(),
            client_ca_pem: self.client_ca.clone(),
        }
    }

    /// Reads the certificate, key and client CA files as the MLLP listeners do when they
    /// start. The error names the file; the diagnostic points at the key of `config_text`
    /// (the text of `config_path`) that names it.
    pub fn check(&self, config_path: &Path, config_text: &str) -> Result<(), Diagnostic> {
        let Err(e) = self.server_config().validate() else {
            return Ok(());
        };
        let key = match e.file() {
            Some(f) if f == self.private_key => "private_key",
            Some(f) if Some(f) == self.client_ca.as_deref() => "client_ca",
            Some(f) if f == self.certificate => "certificate",
            // The certificate and key do not go together: point at the key.
            _ => "private_key",
        };
        let offset = key_offset(config_text, &["mllp", "tls", key])
            .or_else(|| key_offset(config_text, &["mllp", "tls"]))
            .unwrap_or(0);
        Err(Diagnostic::at_offset(
            config_path,
            config_text,
            offset,
            format!("[mllp.tls] {key}: {e}"),
        ))
    }
}

pub fn duration_or(text: Option<&str>, default: Duration) -> Duration {
    text.and_then(|t| humantime::parse_duration(t).ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_point_at_line_and_column() {
        let text = "[mllp]\naddress = \"127.0.0.1:2575\"\nidle_timeout = \"soon\"\n";
        let err = ConfigFile::parse(Path::new("passerelle.toml"), text).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "passerelle.toml:3:1: `soon` is not a duration like 30s, 5m, 12h"
        );
        let err = ConfigFile::parse(Path::new("p.toml"), "[http]\nadress = \"x\"\n").unwrap_err();
        assert!(
            err[0]
                .to_string()
                .starts_with("p.toml:2:1: unknown field `adress`"),
            "{}",
            err[0]
        );
    }

    #[test]
    fn value_errors_point_at_the_key_of_their_own_section() {
        let at =
            |text: &str| ConfigFile::parse(Path::new("p.toml"), text).unwrap_err()[0].to_string();
        assert_eq!(
            at("[http]\naddress = \"127.0.0.1:8080\"\n[mllp]\naddress = \"nowhere\"\n"),
            "p.toml:4:1: `nowhere` is not an address like 127.0.0.1:8080"
        );
        assert!(
            at("# idle_timeout: how long\n[mllp]\n  idle_timeout = \"soon\"\n")
                .starts_with("p.toml:3:3: "),
            "not the comment"
        );
        assert!(at("mllp.idle_timeout = \"soon\"\n").starts_with("p.toml:1:6: "));
        assert!(at("log = { level = \"info\", format = \"xml\" }\n").starts_with("p.toml:1:25: "));
    }

    #[test]
    fn retention_section_reads_durations_and_limits() {
        let text = "[retention]\nmax_age = \"30d\"\nmax_messages = 1000\nfailed_max_age = \"90d\"\ninterval = \"10m\"\n";
        let c = ConfigFile::parse(Path::new("p.toml"), text).unwrap();
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(c.retention.max_messages, Some(1000));
        assert_eq!(c.retention.interval, Some(Duration::from_secs(600)));
        let err = ConfigFile::parse(Path::new("p.toml"), "[retention]\nmax_age = \"long\"\n")
            .unwrap_err();
        assert!(err[0].to_string().starts_with("p.toml:2:11:"), "{}", err[0]);
    }
}
