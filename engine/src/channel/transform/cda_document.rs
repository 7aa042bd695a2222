//! The `cda-document` transform: a store change of a resource the hospital wrote (a
//! DiagnosticReport for the CR-BIO volet) into a CI-SIS CDA R2 document, as the FHIR
//! transaction that stores it: a Binary holding the CDA and the DocumentReference that
//! describes it (what `dmp-documents` and `mssante-documents` send).
//!
//! Ids come from the change, so a retry or a reprocess writes the same document: the CDA's
//! `id` is an OID of `Type/id/_history/version`, its `setId` an OID of `Type/id`, its
//! `versionNumber` the source's version. A new version of the source is a new CDA with the
//! same `setId`, a `relatedDocument` RPLC to the previous version's id, and a
//! DocumentReference that `replaces` the previous one (the store supersedes it). The
//! DocumentReference is a conditional update on its `masterIdentifier` (the CDA's id, as
//! `cda-inbound` writes it), the Binary an update of an id derived from the same name.

mod cr_bio;
mod ldl_ses;
mod narrative;
mod pdf;
mod read;
mod write;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Output, Routing, Transform};
use crate::channel::Input;
use crate::channel::change::{self, Kind};
use crate::channel::xds::{name_oid, name_uuid};
use read::resolve;
#[cfg(test)]
use read::{FINESS, RPPS, ts};
use write::{Document, Id};

const RFC3986: &str = "urn:ietf:rfc:3986";
const CLASS_CODES: &str = "urn:oid:1.2.250.1.213.1.1.4.1";
const FORMAT_CODES: &str = "urn:oid:1.2.250.1.213.1.1.4.2.282";
pub const CDA_TYPE: &str = "application/hl7-cda+xml";

/// The volets the transform writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volet {
    /// Compte rendu d'examens de biologie médicale, from a DiagnosticReport.
    CrBio,
    /// Lettre de liaison à la sortie d'un établissement de santé, from a Composition.
    LdlSes,
}

impl Volet {
    /// The names a channel file gives them.
    pub const NAMES: &'static str = "cr-bio, ldl-ses";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "cr-bio" => Some(Self::CrBio),
            "ldl-ses" => Some(Self::LdlSes),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::CrBio => "cr-bio",
            Self::LdlSes => "ldl-ses",
        }
    }

    /// The resource type the document is written from, and what it is called.
    fn source(self) -> (&'static str, &'static str) {
        match self {
            Self::CrBio => ("DiagnosticReport", "a report"),
            Self::LdlSes => ("Composition", "a letter"),
        }
    }

    /// The statuses of the source that make a document.
    fn written(self) -> &'static [&'static str] {
        match self {
            Self::CrBio => &["final", "amended", "corrected", "appended"],
            Self::LdlSes => &["final", "amended"],
        }
    }

    /// The element of the source naming its authors (the DocumentReference's `author`).
    fn authors(self) -> &'static str {
        match self {
            Self::CrBio => "performer",
            Self::LdlSes => "author",
        }
    }

    /// The DMP's formatCode (`content.format`).
    fn format_code(self) -> &'static str {
        match self {
            Self::CrBio => "urn:ihe:lab:xd-lab:2008",
            Self::LdlSes => "urn:asip:ci-sis:ldl-ses:2017",
        }
    }
}

pub struct CdaDocument {
    pub volet: Volet,
    pub destinations: Vec<String>,
}

impl Transform for CdaDocument {
    fn kind(&self) -> &'static str {
        "cda-document"
    }

    fn apply(&self, input: &Input<'_>) -> Result<Routing, String> {
        let Input::Change(bundle) = input else {
            return Err("the cda-document transform takes a store source's changes".into());
        };
        match self.transaction(bundle)? {
            Ok(tx) => Ok(Routing::Deliver(Output::to_each(&self.destinations, &tx)?)),
            Err(why) => Ok(Routing::Drop(why)),
        }
    }
}

fn ii_value(id: &Id) -> String {
    match &id.extension {
        Some(e) => format!("{}^{e}", id.root),
        None => format!("urn:oid:{}", id.root),
    }
}

impl CdaDocument {
    /// The transaction Bundle, or why this change makes no document.
    pub fn transaction(&self, bundle: &Value) -> Result<Result<Value, String>, String> {
        let focus = change::focus(bundle).ok_or("the change has no resource")?;
        let kind = focus["resourceType"].as_str().unwrap_or_default();
        let id = focus["id"].as_str().unwrap_or_default();
        let reference = format!("{kind}/{id}");
        if change::kind(bundle) == Some(Kind::Delete) {
            return Ok(Err(format!(
                "{reference} was deleted: no document is written for a deletion"
            )));
        }
        let (source, what) = self.volet.source();
        if kind != source {
            return Ok(Err(format!(
                "{reference}: the {} volet is written from a {source}",
                self.volet.name()
            )));
        }
        let status = focus["status"].as_str();
        if !status.is_some_and(|s| self.volet.written().contains(&s)) {
            return Ok(Err(format!(
                "{reference} is {}: {what} is written once final",
                status.unwrap_or("without status")
            )));
        }
        let version: u64 = focus["meta"]["versionId"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{reference} has no meta.versionId"))?;
        let built = match self.volet {
            Volet::CrBio => cr_bio::document(bundle, focus, &reference, version)?,
            Volet::LdlSes => ldl_ses::document(bundle, focus, &reference, version)?,
        };
        Ok(Ok(self.bundle(bundle, focus, &reference, version, &built)))
    }

    /// The Binary and the DocumentReference, as one transaction.
    fn bundle(
        &self,
        bundle: &Value,
        focus: &Value,
        reference: &str,
        version: u64,
        d: &Document,
    ) -> Value {
        let xml = write::write(d);
        let binary_url = name_uuid(&format!(
            "cda-document:binary:{reference}/_history/{version}"
        ));
        let binary_id = binary_url.trim_start_matches("urn:uuid:").to_string();
        let master = json!({"system": RFC3986, "value": ii_value(&d.id)});
        let subject = focus["subject"]["reference"].clone();
        let mut authors = vec![];
        for p in focus[self.volet.authors()].as_array().into_iter().flatten() {
            if let Some(r) = p["reference"].as_str()
                && resolve(bundle, r).is_some()
            {
                authors.push(json!({"reference": r}));
            }
        }
        // The source's custodian, else the organisation among its authors.
        let custodian = focus["custodian"]["reference"]
            .as_str()
            .map(|r| json!({"reference": r}))
            .or_else(|| {
                authors
                    .iter()
                    .find(|a| {
                        a["reference"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("Organization/"))
                    })
                    .cloned()
            });
        let mut doc = json!({
            "resourceType": "DocumentReference",
            "masterIdentifier": master,
            "identifier": [{"system": RFC3986, "value": ii_value(&d.set_id)}],
            "status": "current",
            "docStatus": "final",
            "type": {"coding": [{"system": "http://loinc.org", "code": d.code.code, "display": d.code.display}]},
            "category": [{"coding": [{"system": CLASS_CODES, "code": "10", "display": "Compte rendu"}]}],
            "subject": {"reference": subject},
            "date": fhir_instant(&d.time),
            "author": authors,
            "description": d.title,
            "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": d.confidentiality}]}],
            "content": [{
                "attachment": {
                    "contentType": CDA_TYPE,
                    "language": "fr-FR",
                    "url": binary_url,
                    "title": d.title,
                    "creation": fhir_instant(&d.time),
                },
                "format": {"system": FORMAT_CODES, "code": self.volet.format_code()},
            }],
            "context": {
                "facilityType": {"coding": [{"system": format!("urn:oid:{}", d.facility.system), "code": d.facility.code, "display": d.facility.display}]},
                "practiceSetting": {"coding": [{"system": format!("urn:oid:{}", d.practice_setting.system), "code": d.practice_setting.code, "display": d.practice_setting.display}]},
                "sourcePatientInfo": {"reference": subject},
                "related": [{"reference": format!("{reference}/_history/{version}")}],
            },
        });
        if let Some(c) = custodian {
            doc["custodian"] = c;
        }
        if let Some(e) = focus["encounter"]["reference"].as_str() {
            doc["context"]["encounter"] = json!([{"reference": e}]);
        }
        if let Some(parent) = &d.replaces {
            doc["relatesTo"] = json!([{
                "code": "replaces",
                "target": {
                    "type": "DocumentReference",
                    "identifier": {"system": RFC3986, "value": ii_value(parent)},
                },
            }]);
        }
        let criteria = format!("identifier={RFC3986}|{}", ii_value(&d.id));
        json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": binary_url,
                    "resource": {
                        "resourceType": "Binary",
                        "id": binary_id,
                        "contentType": CDA_TYPE,
                        "data": base64::engine::general_purpose::STANDARD.encode(xml.as_bytes()),
                    },
                    "request": {"method": "PUT", "url": format!("Binary/{binary_id}")},
                },
                {
                    "fullUrl": name_uuid(&format!("cda-document:doc:{reference}/_history/{version}")),
                    "resource": doc,
                    "request": {"method": "PUT", "url": format!("DocumentReference?{criteria}")},
                },
            ],
        })
    }
}

/// The CDA's `setId`, `id` and the id of the version it replaces, from the source's
/// reference and version.
pub(super) fn ids(reference: &str, version: u64) -> (Id, Id, Option<Id>) {
    let of = |name: String| Id {
        root: name_oid(&name),
        extension: None,
    };
    (
        of(format!("cda-document:{reference}")),
        of(format!("cda-document:{reference}/_history/{version}")),
        (version > 1).then(|| of(format!("cda-document:{reference}/_history/{}", version - 1))),
    )
}

/// A CDA TS back as a FHIR instant (`20240301102000+0100` -> `2024-03-01T10:20:00+01:00`).
fn fhir_instant(ts: &str) -> String {
    if ts.len() < 17 {
        return format!("{}-{}-{}", &ts[..4], &ts[4..6], &ts[6..8.min(ts.len())]);
    }
    let (clock, zone) = ts.split_at(ts.len() - 5);
    let seconds = if clock.len() >= 14 {
        &clock[12..14]
    } else {
        "00"
    };
    format!(
        "{}-{}-{}T{}:{}:{}{}:{}",
        &clock[..4],
        &clock[4..6],
        &clock[6..8],
        &clock[8..10],
        &clock[10..12],
        seconds,
        &zone[..3],
        &zone[3..]
    )
}

#[cfg(test)]
mod tests;
