//! Writes each message to a file in a directory. The name comes from a template; writing is
//! atomic and idempotent, so a message delivered again after a crash overwrites its own file.

use std::path::PathBuf;

use passerelle_connectors::file::FileWriter;
use passerelle_hl7v2::{Message, ParseOptions};

use super::{DeliveryError, DeliveryFuture, Destination};
use crate::journal::OutboxItem;

pub struct FileDestination {
    writer: FileWriter,
    template: String,
}

impl FileDestination {
    pub fn new(directory: PathBuf, template: String) -> Self {
        let writer = FileWriter::new(directory);
        // A crash in the middle of a write leaves its temporary file behind; the write
        // itself is redone from the outbox.
        match writer.remove_leftovers() {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(directory = %writer.dir().display(), files = n, "removed temporary files left by a crash")
            }
            Err(e) => {
                tracing::warn!(directory = %writer.dir().display(), error = %e, "cannot clean temporary files")
            }
        }
        Self { writer, template }
    }

    /// The template with its placeholders replaced, in one pass so that a value cannot
    /// bring in a placeholder of its own; unknown ones are left as written.
    fn file_name(&self, channel: &str, item: &OutboxItem) -> String {
        let mut name = String::with_capacity(self.template.len() + 32);
        let mut rest = self.template.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open..];
            let Some(close) = after.find('}') else {
                break;
            };
            name.push_str(&rest[..open]);
            match placeholder(&after[1..close], channel, item) {
                Some(value) => name.push_str(&sanitize(&value)),
                None => name.push_str(&after[..=close]),
            }
            rest = &after[close + 1..];
        }
        name.push_str(rest);
        name
    }
}

/// The value of a `file_name` placeholder (the list is in `doc.rs`), not yet sanitized.
fn placeholder(key: &str, channel: &str, item: &OutboxItem) -> Option<String> {
    Some(match key {
        "id" => item.message_id.to_string(),
        "control_id" => item.control_id.clone().unwrap_or_default(),
        "message_type" => message_type(&item.payload),
        "channel" => channel.to_string(),
        "destination" => item.destination.clone(),
        "generation" => item.generation.to_string(),
        _ => return None,
    })
}

/// `MSH-9.1^MSH-9.2` of the payload as the journal shows it (`ADT^A01`), empty when absent.
/// The header is read leniently: the message was accepted, its name must not fail on a
/// charset detail.
fn message_type(payload: &[u8]) -> String {
    let Ok(msh) = Message::parse_header_lenient(payload, &ParseOptions::default()) else {
        return String::new();
    };
    let header = msh.header();
    match (header.message_type, header.trigger_event) {
        (Some(kind), Some(event)) => format!("{kind}^{event}"),
        (Some(kind), None) => kind.into_owned(),
        (None, _) => String::new(),
    }
}

/// Values come from the sender: keep them out of path syntax (`/`, `..`, and anything a
/// file system might read specially), whatever the placeholder.
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
                Ok(path) => Ok(format!("written to {}", path.display()).into()),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(
                    DeliveryError::permanent(format!("invalid file name {name:?}: {e}")),
                ),
                Err(e) => Err(DeliveryError::retry(format!("cannot write {name}: {e}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(payload: &str) -> OutboxItem {
        OutboxItem {
            id: 1,
            message_id: 42,
            generation: 2,
            destination: "archive".into(),
            attempts: 0,
            next_attempt_at: 0,
            control_id: Some("C/../1".into()),
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn name(template: &str, payload: &str) -> String {
        FileDestination::new(PathBuf::from("out"), template.into())
            .file_name("lab-in", &item(payload))
    }

    const ADT: &str = "MSH|^~\\&|HIS|CHBM|EHR|CHBM|2024||ADT^A01^ADT_A01|C1|P|2.5\rPID|1\r";

    #[test]
    fn every_documented_placeholder_is_replaced() {
        assert_eq!(
            name(
                "{channel}-{destination}-{id}-{generation}-{message_type}-{control_id}.hl7",
                ADT
            ),
            "lab-in-archive-42-2-ADT_A01-C____1.hl7"
        );
    }

    #[test]
    fn message_type_without_trigger_or_msh() {
        let no_trigger = "MSH|^~\\&|A|B|C|D|2024||ACK|C1|P|2.5\r";
        assert_eq!(name("{message_type}.hl7", no_trigger), "ACK.hl7");
        assert_eq!(name("x{message_type}.hl7", "not hl7"), "x.hl7");
        // Read leniently: a Latin-1 byte in an undeclared charset does not matter.
        let latin1 = "MSH|^~\\&|A|CH\u{e2}TEAU|C|D|2024||ORU^R01|C1|P|2.5\r";
        let latin1: Vec<u8> = latin1.chars().map(|c| c as u8).collect();
        let mut i = item("");
        i.payload = latin1;
        let d = FileDestination::new(PathBuf::from("out"), "{message_type}".into());
        assert_eq!(d.file_name("c", &i), "ORU_R01");
    }

    #[test]
    fn values_cannot_inject_paths_or_placeholders() {
        let tricky = "MSH|^~\\&|A|B|C|D|2024||../{id}^..|C1|P|2.5\r";
        let n = name("{message_type}-{unknown}-{id", tricky);
        assert_eq!(n, "____id____-{unknown}-{id");
        assert!(!n.contains('/') && !n.contains(".."));
    }
}
