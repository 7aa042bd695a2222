//! The mapping language as a transform: HL7 v2 or a CDA in, a FHIR transaction Bundle out;
//! or FHIR in (a store change), an HL7 v2 message out (outbound mappings, `output: hl7v2`).

use std::sync::Arc;

use passerelle_mapping::live::Live;

use super::{Output, Routing, Transform};
use crate::channel::Input;

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

    fn apply(&self, input: &Input<'_>) -> Result<Routing, String> {
        let library = self.library.get();
        let (kind, event) = input.message_type();
        let event = event.unwrap_or_default();
        let Some(mapping) = library.for_type(&self.mappings, &kind, &event) else {
            return Ok(Routing::Drop(match library.not_mapped(&kind, &event) {
                Some(reason) => format!("{kind}^{event} is not mapped on purpose: {reason}"),
                None => format!(
                    "no mapping for {kind}^{event} (mappings: {})",
                    self.mappings.join(", ")
                ),
            }));
        };
        let output = match input {
            Input::Hl7(message) => library.run(mapping, message),
            Input::Cda(document) => library.run_document(mapping, document),
            Input::Fhir(resource) | Input::Change(resource) => library.run_fhir(mapping, resource),
            Input::Telemetry(_) => {
                return Err("the mapping library reads HL7 v2, CDA and FHIR".into());
            }
        }
        .map_err(|e| format!("mapping `{}`: {e}", mapping.id))?;
        // An outbound mapping writes an HL7 v2 message: its bytes go as they are.
        if let Some(message) = output.message {
            return Ok(Routing::Deliver(
                self.destinations
                    .iter()
                    .map(|d| Output {
                        destination: d.clone(),
                        payload: Some(message.clone().into_bytes()),
                    })
                    .collect(),
            ));
        }
        Ok(Routing::Deliver(Output::to_each(
            &self.destinations,
            &output.bundle,
        )?))
    }
}
