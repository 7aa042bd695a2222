//! Effective settings of a run: command-line flags and environment variables first, then
//! `passerelle.toml`, then built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;

use crate::config::{CONFIG_FILE, ConfigFile, DEFAULT_HTTP, DEFAULT_MLLP, duration_or};
use crate::diagnostic::Diagnostics;
use crate::journal::{PrunePolicy, default_url};

/// Options shared by `serve`, `check` and the other commands that read a deployment.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Configuration file (default: ./passerelle.toml when present).
    #[arg(long, env = "PASSERELLE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the journal, its key and runtime files live.
    #[arg(long, env = "PASSERELLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (default: sqlite under the data dir).
    #[arg(long, env = "PASSERELLE_DATABASE_URL")]
    pub database: Option<String>,
    /// Directory of channel files.
    #[arg(long, env = "PASSERELLE_CHANNELS")]
    pub channels: Option<PathBuf>,
    /// Directory of mapping and datatype-map files (default: ./mappings).
    #[arg(long, env = "PASSERELLE_MAPPINGS")]
    pub mappings: Option<PathBuf>,
    /// Directory of ConceptMaps, FHIR JSON or CSV (default: ./schemas/conceptmaps).
    #[arg(long, env = "PASSERELLE_CONCEPTMAPS")]
    pub conceptmaps: Option<PathBuf>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct ListenArgs {
    /// HTTP address for /fhir, /api, /health, /metrics.
    #[arg(long, env = "PASSERELLE_HTTP")]
    pub http: Option<String>,
    /// Main MLLP address (the `hl7v2-inbound` channel's).
    #[arg(long, env = "PASSERELLE_MLLP")]
    pub mllp: Option<String>,
    /// MQTT broker for device telemetry, e.g. mqtt://127.0.0.1:1883 (user and password may
    /// be given as mqtt://user:password@host:port). Without it, MQTT channels are paused.
    #[arg(long, env = "PASSERELLE_MQTT")]
    pub mqtt: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "PASSERELLE_LOG_FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration file read, if any.
    pub config_path: Option<PathBuf>,
    pub file: ConfigFile,
    pub data_dir: PathBuf,
    /// The journal's database (SQLite).
    pub database_url: String,
    /// The FHIR store's database (SQLite or PostgreSQL).
    pub store_url: String,
    pub channels_dir: PathBuf,
    pub mappings_dir: PathBuf,
    pub conceptmaps_dir: PathBuf,
    pub http: SocketAddr,
    pub mllp: SocketAddr,
    /// The MQTT broker of MQTT sources that name none.
    pub mqtt: Option<String>,
    pub log_json: bool,
    pub log_level: String,
    pub retention: PrunePolicy,
    pub retention_interval: Duration,
}

impl CommonArgs {
    /// The configuration file in force, if any, checked.
    pub fn config_file(&self) -> Result<(Option<PathBuf>, ConfigFile)> {
        let path = match &self.config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(CONFIG_FILE)).filter(|p| p.exists()),
        };
        match &path {
            Some(p) => {
                let file = ConfigFile::load(p).map_err(|d| anyhow!(Diagnostics(d)))?;
                Ok((path, file))
            }
            None => Ok((None, ConfigFile::default())),
        }
    }

    pub fn data_dir(&self, file: &ConfigFile) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("data"))
    }

    /// The database URL as configured, if any.
    fn configured_database(&self, file: &ConfigFile) -> Option<String> {
        self.database.clone().or_else(|| file.database.clone())
    }

    /// The journal's database: the configured SQLite URL, else the data dir's. With a
    /// PostgreSQL database the journal stays in the data dir (only the FHIR store moves).
    pub fn database_url(&self, file: &ConfigFile, data_dir: &Path) -> String {
        match self.configured_database(file) {
            Some(url) if !is_postgres(&url) => url,
            _ => default_url(data_dir),
        }
    }

    /// The FHIR store's database: the configured PostgreSQL URL, else `fhir.db` in the data dir.
    pub fn store_url(&self, file: &ConfigFile, data_dir: &Path) -> String {
        match self.configured_database(file) {
            Some(url) if is_postgres(&url) => url,
            _ => format!("sqlite://{}", data_dir.join(STORE_FILE).display()),
        }
    }

    pub fn mappings_dir(&self, file: &ConfigFile) -> PathBuf {
        self.mappings
            .clone()
            .or_else(|| file.mappings_dir.clone())
            .unwrap_or_else(|| PathBuf::from("mappings"))
    }

    pub fn conceptmaps_dir(&self, file: &ConfigFile) -> PathBuf {
        self.conceptmaps
            .clone()
            .or_else(|| file.conceptmaps_dir.clone())
            .unwrap_or_else(|| PathBuf::from("schemas/conceptmaps"))
    }

    /// The mapping library of the deployment, with every problem found loading it.
    pub fn mapping_library(
        &self,
        file: &ConfigFile,
    ) -> (
        passerelle_mapping::Library,
        Vec<passerelle_mapping::Problem>,
    ) {
        passerelle_mapping::Library::load(&self.mappings_dir(file), &self.conceptmaps_dir(file))
    }

    pub fn channels_dir(&self, file: &ConfigFile) -> PathBuf {
        self.channels
            .clone()
            .or_else(|| file.channels_dir.clone())
            .unwrap_or_else(|| PathBuf::from("channels"))
    }
}

/// The FHIR store's SQLite file in the data dir.
pub const STORE_FILE: &str = "fhir.db";

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

pub fn resolve(common: &CommonArgs, listen: &ListenArgs) -> Result<Settings> {
    let (config_path, file) = common.config_file()?;
    let data_dir = common.data_dir(&file);
    let database_url = common.database_url(&file, &data_dir);
    let store_url = common.store_url(&file, &data_dir);
    let address = |flag: &Option<String>,
                   from_file: &Option<String>,
                   default: &str,
                   what: &str|
     -> Result<SocketAddr> {
        let text = flag
            .clone()
            .or_else(|| from_file.clone())
            .unwrap_or_else(|| default.to_string());
        text.parse()
            .with_context(|| format!("{what} address `{text}` is not like 127.0.0.1:8080"))
    };
    let http = address(&listen.http, &file.http.address, DEFAULT_HTTP, "HTTP")?;
    let mllp = address(&listen.mllp, &file.mllp.address, DEFAULT_MLLP, "MLLP")?;
    let log_format = listen
        .log_format
        .clone()
        .or_else(|| file.log.format.clone())
        .unwrap_or_else(|| "text".into());
    if !matches!(log_format.as_str(), "text" | "json") {
        return Err(anyhow!("log format `{log_format}`: expected text or json"));
    }
    Ok(Settings {
        channels_dir: common.channels_dir(&file),
        mappings_dir: common.mappings_dir(&file),
        conceptmaps_dir: common.conceptmaps_dir(&file),
        retention: file.retention.clone(),
        retention_interval: file.retention.interval.unwrap_or(Duration::from_secs(3600)),
        log_level: file.log.level.clone().unwrap_or_else(|| "info".into()),
        log_json: log_format == "json",
        data_dir,
        database_url,
        store_url,
        http,
        mllp,
        mqtt: listen.mqtt.clone().filter(|m| !m.trim().is_empty()),
        config_path,
        file,
    })
}

impl Settings {
    /// Reads the `[mllp.tls]` files as the MLLP listeners will, so that a missing or invalid
    /// file stops the start instead of leaving the listeners down.
    pub fn check_tls(&self) -> Result<()> {
        let Some(tls) = &self.file.mllp.tls else {
            return Ok(());
        };
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        tls.check(path, &text)
            .map_err(|d| anyhow!("{d}").context("MLLP over TLS cannot be set up"))
    }

    pub fn mllp_server_config(&self) -> passerelle_connectors::mllp::ServerConfig {
        let section = &self.file.mllp;
        let mut config = passerelle_connectors::mllp::ServerConfig::default();
        if let Some(size) = section.max_message_size {
            config.max_frame_size = size;
        }
        config.idle_timeout = duration_or(section.idle_timeout.as_deref(), config.idle_timeout);
        if let Some(n) = section.max_connections {
            config.max_connections = n;
        }
        if let Some(n) = section.pipeline_window {
            config.pipeline_window = n.max(1);
        }
        config.tls = section.tls.as_ref().map(|t| t.server_config());
        config
    }
}
