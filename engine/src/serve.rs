//! `passerelle serve`: opens the journal, starts the channels and the listeners, and stops
//! them in order on SIGTERM / SIGINT (stop accepting, drain connections, flush).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, anyhow};
use passerelle_connectors::mllp::{ServerStats, serve_with_stats};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::fhir::FhirApi;
use crate::api::fhir::access::SmartScopes;
use crate::api::fhir::audit::StoreAudit;
use crate::api::{AppState, router};
use crate::channel::destination::Services;
use crate::channel::{SourceConfig, load_dir_with};
use crate::crypto::Cipher;
use crate::diagnostic::Diagnostics;
use crate::journal::{Journal, now_micros};
use crate::runtime::Runtime;
use crate::runtime::devices::DeviceRegistry;
use crate::runtime::ingest::MllpIngest;
use crate::settings::Settings;

pub async fn run(settings: Settings) -> Result<()> {
    settings.check_tls()?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating the data dir {}", settings.data_dir.display()))?;
    let (mappings, problems) =
        passerelle_mapping::live::Live::load(&settings.mappings_dir, &settings.conceptmaps_dir);
    if !problems.is_empty() {
        let problems = problems
            .into_iter()
            .map(|p| crate::diagnostic::Diagnostic::new(&p.file, p.line, p.column, p.message))
            .collect();
        return Err(anyhow!(Diagnostics(problems))
            .context("the mappings have errors (see `passerelle check`)"));
    }
    let mut loaded = load_dir_with(&settings.channels_dir, &mappings);
    if !loaded.problems.is_empty() {
        return Err(anyhow!(Diagnostics(loaded.problems))
            .context("the channels have errors (see `passerelle check`)"));
    }
    // An MQTT source without a broker of its own uses the server's; without one, it waits.
    for channel in &mut loaded.channels {
        if let SourceConfig::Mqtt { broker: None, .. } = channel.source
            && settings.mqtt.is_none()
            && channel.paused.is_none()
        {
            channel.paused =
                Some("not configured: no MQTT broker (--mqtt / PASSERELLE_MQTT)".into());
        }
    }
    let cipher = Arc::new(Cipher::load_or_create(&settings.data_dir)?);
    let journal = Journal::open(&settings.database_url, cipher.clone()).await?;
    // The store opens before the channels start: their fhir-store destinations write to it.
    let store = Arc::new(
        passerelle_fhir::Store::open(&settings.store_url, cipher.clone())
            .await
            .context("opening the FHIR store")?,
    );
    tracing::info!(backend = store.backend().name(), "FHIR store open");
    let runtime = Runtime::start(
        journal.clone(),
        loaded.channels,
        Services {
            store: Some(store.clone()),
        },
    )
    .await?;

    // One MLLP listener per address; a channel without its own address uses the main one.
    let mllp_config = settings.mllp_server_config();
    let max_size = mllp_config.max_frame_size;
    let mut listeners: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for channel in runtime.channels().filter(|c| c.is_running()) {
        let SourceConfig::Mllp { address, .. } = &channel.channel.source else {
            continue;
        };
        listeners.insert(address.unwrap_or(settings.mllp), channel.channel.id.clone());
    }
    let stop_mllp = CancellationToken::new();
    let mllp_stats = Arc::new(ServerStats::default());
    let mut mllp_tasks = Vec::new();
    for (address, channel) in listeners {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("MLLP address {address}"))?;
        let handler = Arc::new(
            MllpIngest::new(runtime.clone(), &channel, max_size).expect("channel is loaded"),
        );
        tracing::info!(%address, %channel, tls = mllp_config.tls.is_some(), "MLLP listening");
        mllp_tasks.push(tokio::spawn(serve_with_stats(
            listener,
            mllp_config.clone(),
            handler,
            stop_mllp.clone(),
            mllp_stats.clone(),
        )));
    }

    // MQTT sources (one persistent session each) and file sources (a directory each).
    let stop_sources = CancellationToken::new();
    let devices = Arc::new(DeviceRegistry::new(store.clone()));
    let mut source_tasks = Vec::new();
    for channel in runtime.channels().filter(|c| c.is_running()) {
        let id = channel.channel.id.clone();
        match &channel.channel.source {
            SourceConfig::Mqtt { broker, .. } => {
                let Some(url) = broker.clone().or_else(|| settings.mqtt.clone()) else {
                    continue;
                };
                source_tasks.push(tokio::spawn(crate::runtime::mqtt_ingest::run(
                    runtime.clone(),
                    devices.clone(),
                    id,
                    url,
                    stop_sources.clone(),
                )));
            }
            SourceConfig::File { .. } => {
                source_tasks.push(tokio::spawn(crate::runtime::file_ingest::run(
                    runtime.clone(),
                    id,
                    stop_sources.clone(),
                )));
            }
            // Store sources run on the downstream runtime, started by `Runtime::start`.
            SourceConfig::Mllp { .. } | SourceConfig::Http { .. } | SourceConfig::Store { .. } => {}
        }
    }

    let fhir = FhirApi {
        store: store.clone(),
        policy: Arc::new(SmartScopes),
        audit: Arc::new(StoreAudit::start(store.clone())),
    };
    let state = AppState::new(runtime.clone(), mllp_stats, fhir, mappings.clone());
    let http = TcpListener::bind(settings.http)
        .await
        .with_context(|| format!("HTTP address {}", settings.http))?;
    tracing::info!(address = %settings.http, "HTTP listening");
    let stop_http = CancellationToken::new();
    let http_task = {
        let stop = stop_http.clone();
        let app = router(state.clone());
        tokio::spawn(async move {
            axum::serve(
                http,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        })
    };
    let retention = tokio::spawn(retention_loop(journal.clone(), settings.clone()));
    let watcher = tokio::spawn(watch_mappings(mappings.clone()));
    state.ready.store(true, Ordering::Release);
    tracing::info!(data_dir = %settings.data_dir.display(), "passerelle is ready");

    shutdown_signal().await;
    tracing::info!("stopping: no new connections, draining");
    state.ready.store(false, Ordering::Release);
    stop_mllp.cancel();
    for task in mllp_tasks {
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "MLLP listener stopped with an error");
        }
    }
    stop_sources.cancel();
    for task in source_tasks {
        let _ = task.await;
    }
    retention.abort();
    watcher.abort();
    runtime.stop().await;
    stop_http.cancel();
    let _ = http_task.await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn retention_loop(journal: Journal, settings: Settings) {
    let policy = settings.retention.clone();
    if policy == Default::default() {
        return;
    }
    let mut every = tokio::time::interval(settings.retention_interval);
    loop {
        every.tick().await;
        match journal.prune(&policy, now_micros()).await {
            Ok(r) if r.deleted > 0 => tracing::info!(
                deleted = r.deleted,
                bytes_before = r.file_bytes_before,
                bytes_after = r.file_bytes_after,
                "retention pruned the journal"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention failed"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Reloads the mappings when their files change (checked every two seconds): a library with
/// problems is refused, with each problem logged, and the one in use stays.
async fn watch_mappings(mappings: Arc<passerelle_mapping::live::Live>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let live = mappings.clone();
        match tokio::task::spawn_blocking(move || live.reload(false)).await {
            Ok(reload) => log_reload(&reload),
            Err(e) => tracing::error!(error = %e, "mapping reload failed"),
        }
    }
}

pub fn log_reload(reload: &passerelle_mapping::live::Reload) {
    use passerelle_mapping::live::Reload;
    match reload {
        Reload::Unchanged => {}
        Reload::Swapped(n) => tracing::info!(mappings = n, "mappings reloaded"),
        Reload::Refused(problems) => {
            for p in problems {
                tracing::error!("{p}");
            }
            tracing::error!(
                problems = problems.len(),
                "mappings not reloaded: the ones in use stay (see `passerelle check`)"
            );
        }
    }
}
