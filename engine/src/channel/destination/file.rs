//! Writes each message to a file in a directory. The name comes from a template; writing is
//! atomic and idempotent, so a message delivered again after a crash overwrites its own file.

use std::path::PathBuf;

use passerelle_connectors::file::FileWriter;

use super::{DeliveryError, DeliveryFuture, Destination};
use crate::journal::OutboxItem;

pub struct FileDestination {
    writer: FileWriter,
    template: String,
}

impl FileDestination {
    pub fn new(directory: PathBuf, template: String) -> Self {
        Self {
            writer: FileWriter::new(directory),
            template,
        }
    }

    fn file_name(&self, channel: &str, item: &OutboxItem) -> String {
        let control_id = item.control_id.as_deref().unwrap_or("");
        self.template
            .replace("{id}", &item.message_id.to_string())
            .replace("{control_id}", &sanitize(control_id))
            .replace("{channel}", channel)
            .replace("{destination}", &item.destination)
            .replace("{generation}", &item.generation.to_string())
    }
}

/// Control ids come from the sender: keep them out of path syntax.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Destination for FileDestination {
    fn deliver<'a>(&'a self, channel: &'a str, item: &'a OutboxItem) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let name = self.file_name(channel, item);
            match self.writer.write(&name, &item.payload).await {
                Ok(path) => Ok(format!("written to {}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(
                    DeliveryError::permanent(format!("invalid file name {name:?}: {e}")),
                ),
                Err(e) => Err(DeliveryError::retry(format!("cannot write {name}: {e}"))),
            }
        })
    }
}
