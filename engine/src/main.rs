//! The `passerelle` command.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use passerelle::settings::{CommonArgs, ListenArgs, resolve};
use passerelle::{bench, bench_mqtt, check, journal, mappings, serve, token};
use tracing_subscriber::EnvFilter;

// Mapping and storing messages allocate many small values; mimalloc handles that better than
// the system allocator (see the workspace Cargo.toml and docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "passerelle",
    version,
    about = "HL7 v2 / FHIR integration engine for hospitals"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: MLLP and HTTP listeners, channels, journal.
    Serve {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Check the configuration, every channel and every mapping; errors as file:line:col.
    Check {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Mapping tools: golden tests, and running a mapping on a message.
    Mappings {
        #[command(subcommand)]
        action: mappings::MappingsAction,
    },
    /// API credentials.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Load generators.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a bearer token and print it (once: only its hash is kept).
    Issue {
        #[command(flatten)]
        common: CommonArgs,
        /// Who or what uses the token.
        #[arg(long, default_value = "admin")]
        name: String,
        /// Scopes (repeatable); default `admin`.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Revoke a token by its id (the part after `psl_`, before the second `_`).
    Revoke {
        #[command(flatten)]
        common: CommonArgs,
        id: String,
    },
}

#[derive(Subcommand)]
enum BenchTarget {
    /// Send HL7 v2 over MLLP to a running engine and measure ACK throughput and latency.
    Mllp(bench::MllpBenchArgs),
    /// Publish SenML readings from simulated devices to an MQTT broker (QoS 1).
    Mqtt(bench_mqtt::MqttBenchArgs),
}

fn init_logs(json: bool, level: &str) {
    let filter =
        EnvFilter::try_from_env("PASSERELLE_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn open_db(common: &CommonArgs) -> Result<sqlx::SqliteConnection> {
    let (_, file) = common.config_file()?;
    let data_dir = common.data_dir(&file);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    journal::open_connection(&common.database_url(&file, &data_dir)).await
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve { common, listen } => {
            let settings = resolve(&common, &listen)?;
            init_logs(settings.log_json, &settings.log_level);
            serve::run(settings).await?;
        }
        Command::Check { common } => {
            let report = check::run(&common);
            for problem in &report.problems {
                out(format_args!("{problem}"));
            }
            for (id, why) in &report.paused {
                out(format_args!("note: channel `{id}` will be paused: {why}"));
            }
            if !report.problems.is_empty() {
                eprintln!("{} problem(s)", report.problems.len());
                return Ok(ExitCode::FAILURE);
            }
            out(format_args!(
                "ok: {} channel(s), {} mapping(s)",
                report.channels, report.mappings
            ));
        }
        Command::Mappings { action } => return mappings::run(action),
        Command::Token {
            action:
                TokenAction::Issue {
                    common,
                    name,
                    scopes,
                },
        } => {
            let mut conn = open_db(&common).await?;
            let issued = token::issue(&mut conn, &name, &scopes).await?;
            eprintln!(
                "token {} issued for {name}; it is shown once, keep it safe \
                 (as OAuth2 client credentials: client_id {}, client_secret the token)",
                issued.id, issued.id
            );
            out(format_args!("{}", issued.token));
        }
        Command::Token {
            action: TokenAction::Revoke { common, id },
        } => {
            let mut conn = open_db(&common).await?;
            if !token::revoke(&mut conn, &id).await? {
                eprintln!("no active token {id}");
                return Ok(ExitCode::FAILURE);
            }
            eprintln!("token {id} revoked");
        }
        Command::Bench {
            target: BenchTarget::Mqtt(args),
        } => report(&bench_mqtt::run(&args).await?, args.json)?,
        Command::Bench {
            target: BenchTarget::Mllp(args),
        } => report(&bench::run(&args).await?, args.json)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A benchmark's report on stdout, as JSON or as text.
fn report(r: &(impl serde::Serialize + std::fmt::Display), json: bool) -> anyhow::Result<()> {
    if json {
        out(format_args!("{}", serde_json::to_string_pretty(r)?));
    } else {
        out(format_args!("{r}"));
    }
    Ok(())
}

/// Prints a line on stdout. A reader that went away (`passerelle ... | head`) is not an
/// error worth a panic.
fn out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
