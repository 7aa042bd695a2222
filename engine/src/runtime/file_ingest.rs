//! The file-drop entry: documents (CDA, FHIR) dropped in a directory are picked up in name
//! order, journaled, and only then moved to `done/`; a document refused is moved to
//! `rejected/` with `NAME.reason.txt` beside it saying why. A file is taken once it is there
//! whole: writers drop it under a name starting with `.` or ending in `.tmp` / `.part`, then
//! rename it (an atomic rename is how a file arrives whole). A file the journal could not take
//! stays where it is and is tried again at the next look.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Runtime;
use super::http_ingest::{Intake, Sender, receive};
use crate::channel::SourceConfig;

/// Runs a file source until `stop`.
pub async fn run(runtime: Arc<Runtime>, channel: String, stop: CancellationToken) {
    let Some(rt) = runtime.channel(&channel) else {
        return;
    };
    let SourceConfig::File {
        directory, poll, ..
    } = rt.channel.source.clone()
    else {
        return;
    };
    for sub in ["done", "rejected"] {
        if let Err(e) = tokio::fs::create_dir_all(directory.join(sub)).await {
            tracing::error!(%channel, directory = %directory.display(), error = %e, "cannot prepare the drop directory");
        }
    }
    tracing::info!(%channel, directory = %directory.display(), "watching for dropped files");
    loop {
        for file in waiting(&directory).await {
            if stop.is_cancelled() {
                return;
            }
            take(&runtime, &channel, &directory, &file).await;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// The files ready to be taken, in name order.
async fn waiting(directory: &Path) -> Vec<PathBuf> {
    let Ok(mut entries) = tokio::fs::read_dir(directory).await else {
        return Vec::new();
    };
    let mut files = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let partial = name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part");
        if !partial && entry.file_type().await.is_ok_and(|t| t.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    files
}

async fn take(runtime: &Arc<Runtime>, channel: &str, directory: &Path, file: &Path) {
    let Some(name) = file.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let raw = match tokio::fs::read(file).await {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!(%channel, file = %file.display(), error = %e, "cannot read a dropped file");
            return;
        }
    };
    let sender = Sender {
        name: directory.display().to_string(),
        peer: Some(name.clone()),
        source: "file",
    };
    let to = match receive(runtime, channel, raw, sender).await {
        Intake::Accepted { .. } | Intake::Duplicate { .. } => directory.join("done"),
        Intake::Rejected { reply, .. } => {
            let why = reply.body["issue"][0]["diagnostics"]
                .as_str()
                .unwrap_or("refused")
                .to_string();
            let reason = directory
                .join("rejected")
                .join(format!("{name}.reason.txt"));
            if let Err(e) = tokio::fs::write(&reason, format!("{why}\n")).await {
                tracing::warn!(%channel, error = %e, "cannot write the reason of a refused file");
            }
            directory.join("rejected")
        }
        // Not journaled: left in place, tried again.
        Intake::Unavailable(why) => {
            tracing::warn!(%channel, file = %file.display(), "{why}");
            return;
        }
    };
    if let Err(e) = tokio::fs::rename(file, to.join(&name)).await {
        // Journaled already: taking it again would only be recognised as a duplicate (CDA,
        // identified FHIR Bundles), but say so.
        tracing::error!(%channel, file = %file.display(), error = %e, "cannot move a taken file");
    }
}
