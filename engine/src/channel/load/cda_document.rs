//! The `cda-document` transform's keys: `volet` (the CI-SIS document written), on a store
//! source.

use std::sync::Arc;

use super::Checker;
use crate::channel::doc::TransformDoc;
use crate::channel::transform::Transform;
use crate::channel::transform::cda_document::{CdaDocument, Volet};

impl Checker<'_> {
    pub(super) fn cda_document(
        &mut self,
        doc: &TransformDoc,
        destinations: &[String],
    ) -> Option<Arc<dyn Transform>> {
        self.require_store_source(doc, "the resources a document is written from");
        let Some(volet) = &doc.volet else {
            self.error(
                &doc.kind,
                format!(
                    "cda-document needs `volet`, the CI-SIS document to write ({})",
                    Volet::NAMES
                ),
            );
            return None;
        };
        let value = self.value(volet)?;
        let Some(parsed) = Volet::parse(&value) else {
            self.error(
                volet,
                format!("unknown volet `{value}` (expected: {})", Volet::NAMES),
            );
            return None;
        };
        Some(Arc::new(CdaDocument {
            volet: parsed,
            destinations: destinations.to_vec(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::channel::load::parse;

    const GOOD: &str = "\
id: lab-docs
source:
  type: store
  subscription: DiagnosticReport?status=final
  include: [subject, result, performer]
transform:
  type: cda-document
  volet: cr-bio
destinations:
  - id: store
    type: fhir-store
";

    fn errors(text: &str) -> Vec<String> {
        match parse(std::path::Path::new("channels/lab-docs.yaml"), text) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_cr_bio_channel_loads() {
        assert_eq!(errors(GOOD), Vec::<String>::new());
    }

    #[test]
    fn an_ldl_ses_channel_loads() {
        let letters = GOOD
            .replace(
                "subscription: DiagnosticReport?status=final\n  include: [subject, result, performer]",
                "subscription: \"Composition?type=http://loinc.org|11490-0&status=final,amended\"\n  include: [subject, author, custodian, encounter, section.entry]",
            )
            .replace("volet: cr-bio", "volet: ldl-ses");
        assert!(letters.contains("ldl-ses") && letters.contains("section.entry"));
        assert_eq!(errors(&letters), Vec::<String>::new());
    }

    #[test]
    fn mistakes_are_reported_where_they_are() {
        assert_eq!(
            errors(&GOOD.replace("volet: cr-bio", "volet: cr-bi0")),
            vec!["channels/lab-docs.yaml:8:10: unknown volet `cr-bi0` (expected: cr-bio, ldl-ses)"]
        );
        assert_eq!(
            errors(&GOOD.replace("  volet: cr-bio\n", "")),
            vec![
                "channels/lab-docs.yaml:7:9: cda-document needs `volet`, the CI-SIS document to write (cr-bio, ldl-ses)"
            ]
        );
        let http = GOOD.replace(
            "  type: store\n  subscription: DiagnosticReport?status=final\n  include: [subject, result, performer]\n",
            "  type: http\n  content: fhir\n",
        );
        assert_eq!(
            errors(&http),
            vec![
                "channels/lab-docs.yaml:6:9: the `cda-document` transform takes a store source (the resources a document is written from)"
            ]
        );
    }
}
