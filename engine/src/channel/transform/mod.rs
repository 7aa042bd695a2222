//! The transform stage: one trait, one implementation per kind: pass-through and routing here,
//! the mapping language in [`mapping`], FHIR intake in [`fhir`], device readings in
//! [`telemetry`].

pub mod cda_document;
mod fhir;
mod fhir_transaction;
mod mapping;
mod mssante;
pub mod telemetry;

pub use fhir::FhirIntake;
pub use fhir_transaction::FhirTransaction;
pub use mapping::MapToFhir;
pub use mssante::Mssante;
pub use telemetry::VitalSigns;

use super::Input;

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

impl Output {
    /// The same JSON payload for each destination.
    pub fn to_each(
        destinations: &[String],
        payload: &serde_json::Value,
    ) -> Result<Vec<Output>, String> {
        let bytes = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
        Ok(destinations
            .iter()
            .map(|d| Output {
                destination: d.clone(),
                payload: Some(bytes.clone()),
            })
            .collect())
    }
}

pub trait Transform: Send + Sync {
    fn kind(&self) -> &'static str;
    fn apply(&self, input: &Input<'_>) -> Result<Routing, String>;
}

/// Every destination gets the message as received.
pub struct PassThrough {
    pub destinations: Vec<String>,
}

impl Transform for PassThrough {
    fn kind(&self) -> &'static str {
        "pass-through"
    }

    fn apply(&self, _: &Input<'_>) -> Result<Routing, String> {
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

    fn apply(&self, input: &Input<'_>) -> Result<Routing, String> {
        let found = self
            .routes
            .iter()
            .find(|(pattern, _)| input.is_of_type(pattern));
        match (found, &self.default) {
            (Some((_, destinations)), _) | (None, Some(destinations)) => {
                Ok(Routing::Deliver(unchanged(destinations)))
            }
            (None, None) => Ok(Routing::Drop(format!(
                "no route for message type {}",
                input.message_type_text().unwrap_or_default()
            ))),
        }
    }
}

pub(super) fn unchanged(destinations: &[String]) -> Vec<Output> {
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
    use passerelle_hl7v2::Message;

    #[test]
    fn routes_by_type_then_default_then_drop() {
        let oru = b"MSH|^~\\&|LAB|H|||20240101||ORU^R01|1|P|2.5\r";
        let adt = b"MSH|^~\\&|HIS|H|||20240101||ADT^A08|2|P|2.5\r";
        let m = |raw: &'static [u8]| Input::Hl7(Message::parse(raw).unwrap());
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
