//! The DMP's keys of a channel file: the store source's `revinclude`, the `xds-provide`
//! transform and the `xds` destination.

use std::path::PathBuf;
use std::sync::Arc;

use super::Checker;
use crate::channel::destination::HttpSettings;
use crate::channel::doc::{DestinationDoc, Text, TransformDoc};
use crate::channel::transform::Transform;
use crate::channel::xds::{XdsProvide, XdsSettings};

impl Checker<'_> {
    /// `revinclude: [Consent:patient]`: the type must be a resource type with that reference
    /// search parameter. None when one is wrong (reported).
    pub(super) fn revinclude(&mut self, list: &[Text]) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut ok = true;
        for item in list {
            let parsed = item.as_str().split_once(':').filter(|(t, p)| {
                passerelle_fhir::types::is_resource_type(t)
                    && passerelle_fhir::registry::registry()
                        .get(t, p)
                        .is_some_and(|sp| {
                            sp.kind == passerelle_fhir::registry::ParamType::Reference
                        })
            });
            match parsed {
                Some((t, p)) => out.push((t.to_string(), p.to_string())),
                None => {
                    self.error(
                        item,
                        format!(
                            "revinclude `{}`: expected Type:reference-parameter, e.g. Consent:patient",
                            item.as_str()
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A path value that must name an existing file (checked now, not at the first send).
    pub(super) fn existing_file(&mut self, text: Option<&Text>) -> Option<PathBuf> {
        let text = text?;
        let value = self.value(text)?;
        let path = PathBuf::from(&value);
        if !path.is_file() {
            self.error(text, format!("no file `{value}`"));
        }
        Some(path)
    }

    pub(super) fn xds_destination(&mut self, doc: &DestinationDoc) -> Option<HttpSettings> {
        self.http_destination(doc, "xds", "the repository's ITI-41 endpoint")
    }

    pub(super) fn xds_provide(
        &mut self,
        doc: &TransformDoc,
        destinations: &[String],
    ) -> Option<Arc<dyn Transform>> {
        self.require_store_source(doc, "DocumentReference changes");
        let Some(source_id) = &doc.source_id else {
            self.error(
                &doc.kind,
                "xds-provide needs `source_id`, the OID of the sending system",
            );
            return None;
        };
        let source_id = self.value(source_id).unwrap_or_default();
        let to = doc
            .repository
            .as_ref()
            .and_then(|t| self.value(t))
            .unwrap_or_default();
        let mut settings = XdsSettings {
            to,
            source_id,
            software: "Passerelle".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            ..XdsSettings::default()
        };
        if let Some(vihf) = &doc.vihf {
            if let Some(path) = self.existing_file(vihf.assertion.as_ref()) {
                match std::fs::read_to_string(&path) {
                    Ok(text)
                        if roxmltree::Document::parse(&text)
                            .is_ok_and(|d| d.root_element().tag_name().name() == "Assertion") =>
                    {
                        settings.assertion = Some(text)
                    }
                    _ => self.error(
                        vihf.assertion.as_ref().unwrap_or(&doc.kind),
                        format!("`{}` is not a SAML Assertion (XML)", path.display()),
                    ),
                }
            }
            let text =
                |t: &Option<Text>, checker: &mut Self| t.as_ref().and_then(|t| checker.value(t));
            if let Some(v) = text(&vihf.software, self) {
                settings.software = v;
            }
            if let Some(v) = text(&vihf.software_version, self) {
                settings.software_version = v;
            }
            if let Some(v) = text(&vihf.homologation, self) {
                settings.homologation = v;
            }
        }
        Some(Arc::new(XdsProvide {
            settings,
            destinations: destinations.to_vec(),
        }))
    }
}
