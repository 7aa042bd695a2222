//! The transform stage: one trait, one implementation per kind. The mapping language plugs in
//! here as another implementation.

use std::sync::Arc;

use passerelle_hl7v2::Message;
use passerelle_mapping::live::Live;

/// What the transform decided for one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Routing {
    /// Deliver to these destinations; `payload: None` means the raw message unchanged.
    Deliver(Vec<Output>),
    /// Nothing to deliver, with the reason kept in the trace.
    Drop(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub destination: String,
    pub payload: Option<Vec<u8>>,
}

pub trait Transform: Send + Sync {
    fn kind(&self) -> &'static str;
    fn apply(&self, message: &Message<'_>) -> Result<Routing, String>;
}

/// Every destination gets the message as received.
pub struct PassThrough {
    pub destinations: Vec<String>,
}

impl Transform for PassThrough {
    fn kind(&self) -> &'static str {
        "pass-through"
    }

    fn apply(&self, _: &Message<'_>) -> Result<Routing, String> {
        Ok(Routing::Deliver(unchanged(&self.destinations)))
    }
}

/// Destinations chosen by message type: the first route whose type matches (`ADT^A01`
/// before `ADT` if listed first), else the default ones, else the message is dropped.
pub struct RouteByMessageType {
    pub routes: Vec<(String, Vec<String>)>,
    pub default: Option<Vec<String>>,
}

impl Transform for RouteByMessageType {
    fn kind(&self) -> &'static str {
        "route-by-message-type"
    }

    fn apply(&self, message: &Message<'_>) -> Result<Routing, String> {
        let header = message.header();
        let kind = header.message_type.as_deref().unwrap_or("");
        let event = header.trigger_event.as_deref().unwrap_or("");
        let found = self
            .routes
            .iter()
            .find(|(pattern, _)| match pattern.split_once('^') {
                Some((k, e)) => k == kind && e == event,
                None => pattern == kind,
            });
        match (found, &self.default) {
            (Some((_, destinations)), _) | (None, Some(destinations)) => {
                Ok(Routing::Deliver(unchanged(destinations)))
            }
            (None, None) => Ok(Routing::Drop(format!(
                "no route for message type {kind}^{event}"
            ))),
        }
    }
}

/// Maps the message to FHIR with the first of its mappings that takes its type: the output
/// is a transaction Bundle (JSON) for the destinations (a `fhir-store` one applies it).
pub struct MapToFhir {
    /// The library in use: a reload swaps it between two messages.
    pub library: Arc<Live>,
    pub mappings: Vec<String>,
    pub destinations: Vec<String>,
}

impl Transform for MapToFhir {
    fn kind(&self) -> &'static str {
        "mapping"
    }

    fn apply(&self, message: &Message<'_>) -> Result<Routing, String> {
        let library = self.library.get();
        let Some(mapping) = library.for_message(&self.mappings, message) else {
            let h = message.header();
            let (kind, event) = (
                h.message_type.as_deref().unwrap_or(""),
                h.trigger_event.as_deref().unwrap_or(""),
            );
            return Ok(Routing::Drop(match library.not_mapped(kind, event) {
                Some(reason) => format!("{kind}^{event} is not mapped on purpose: {reason}"),
                None => format!(
                    "no mapping for {kind}^{event} (mappings: {})",
                    self.mappings.join(", ")
                ),
            }));
        };
        let output = library
            .run(mapping, message)
            .map_err(|e| format!("mapping `{}`: {e}", mapping.id))?;
        let payload = serde_json::to_vec(&output.bundle).map_err(|e| e.to_string())?;
        Ok(Routing::Deliver(
            self.destinations
                .iter()
                .map(|d| Output {
                    destination: d.clone(),
                    payload: Some(payload.clone()),
                })
                .collect(),
        ))
    }
}

fn unchanged(destinations: &[String]) -> Vec<Output> {
    destinations
        .iter()
        .map(|d| Output {
            destination: d.clone(),
            payload: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_type_then_default_then_drop() {
        let oru = b"MSH|^~\\&|LAB|H|||20240101||ORU^R01|1|P|2.5\r";
        let adt = b"MSH|^~\\&|HIS|H|||20240101||ADT^A08|2|P|2.5\r";
        let m = |raw: &'static [u8]| Message::parse(raw).unwrap();
        let t = RouteByMessageType {
            routes: vec![
                ("ORU^R01".into(), vec!["lab".into()]),
                ("ADT".into(), vec!["adt".into(), "archive".into()]),
            ],
            default: None,
        };
        let names = |r: Routing| match r {
            Routing::Deliver(o) => o.into_iter().map(|o| o.destination).collect::<Vec<_>>(),
            Routing::Drop(why) => vec![why],
        };
        assert_eq!(names(t.apply(&m(oru)).unwrap()), vec!["lab"]);
        assert_eq!(names(t.apply(&m(adt)).unwrap()), vec!["adt", "archive"]);
        let only_lab = RouteByMessageType {
            routes: vec![("ORU".into(), vec!["lab".into()])],
            default: None,
        };
        assert_eq!(
            names(only_lab.apply(&m(adt)).unwrap()),
            vec!["no route for message type ADT^A08"]
        );
        let with_default = RouteByMessageType {
            default: Some(vec!["archive".into()]),
            ..only_lab
        };
        assert_eq!(names(with_default.apply(&m(adt)).unwrap()), vec!["archive"]);
    }
}
