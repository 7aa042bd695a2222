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

mod pdf;
mod write;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{Output, Routing, Transform};
use crate::channel::Input;
use crate::channel::change::{self, Kind};
use crate::channel::xds::{name_oid, name_uuid};
use write::{Body, Code, Contact, Document, Id, LabChapter, LabResult, Organization};

/// The INS OIDs: INS-NIR, INS-NIA, the test and demonstration NIR.
const INS_OIDS: [&str; 4] = [
    "1.2.250.1.213.1.4.8",
    "1.2.250.1.213.1.4.9",
    "1.2.250.1.213.1.4.10",
    "1.2.250.1.213.1.4.11",
];
const RPPS: &str = "https://rpps.esante.gouv.fr";
const FINESS: &str = "https://finess.esante.gouv.fr";
/// TRE_R02 facility types (`healthCareFacility/code`).
const FACILITY_TYPES: &str = "1.2.250.1.71.4.2.4";
const RFC3986: &str = "urn:ietf:rfc:3986";
const CLASS_CODES: &str = "urn:oid:1.2.250.1.213.1.1.4.1";
const FORMAT_CODES: &str = "urn:oid:1.2.250.1.213.1.1.4.2.282";
pub const CDA_TYPE: &str = "application/hl7-cda+xml";

/// The volets the transform writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volet {
    /// Compte rendu d'examens de biologie médicale, from a DiagnosticReport.
    CrBio,
}

impl Volet {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "cr-bio" => Some(Self::CrBio),
            _ => None,
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

/// A `Type/id` reference to a resource of the notification.
fn resolve<'b>(bundle: &'b Value, reference: &str) -> Option<&'b Value> {
    let (t, id) = change::local_target(reference)?;
    bundle["entry"]
        .as_array()?
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == t && r["id"] == id)
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string).filter(|s| !s.is_empty())
}

/// A FHIR system as a CDA code system: `urn:oid:` stripped, LOINC and SNOMED CT known.
fn code_system(system: &str) -> Option<String> {
    match system {
        "http://loinc.org" => Some(write::loinc().into()),
        "http://snomed.info/sct" => Some("2.16.840.1.113883.6.96".into()),
        "http://unitsofmeasure.org" => Some("2.16.840.1.113883.6.8".into()),
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
        | "http://terminology.hl7.org/CodeSystem/v2-0078" => Some("2.16.840.1.113883.5.83".into()),
        "http://terminology.hl7.org/CodeSystem/v3-ActCode" => Some(write::act_code().into()),
        s => s.strip_prefix("urn:oid:").map(str::to_string),
    }
}

/// The first coding of a CodeableConcept whose system is known as an OID.
fn coded(concept: &Value) -> Option<Code> {
    concept["coding"].as_array()?.iter().find_map(|c| {
        Some(Code {
            code: text(&c["code"])?,
            system: code_system(c["system"].as_str()?)?,
            display: text(&c["display"])
                .or_else(|| text(&concept["text"]))
                .unwrap_or_default(),
        })
    })
}

/// A FHIR date, dateTime or instant as a CDA TS: `2024-03-01T10:20:00+01:00` ->
/// `20240301102000+0100`; a `Z` time is written `+0000`. None when it is not one.
pub fn ts(value: &str) -> Option<String> {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let Some((date, rest)) = value.split_once('T') else {
        let d = digits(value);
        return matches!(d.len(), 4 | 6 | 8).then_some(d);
    };
    let (clock, zone) = if let Some(c) = rest.strip_suffix('Z') {
        (c, "+0000".to_string())
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, z) = rest.split_at(i);
        (c, format!("{}{}", &z[..1], digits(z)))
    } else {
        return None;
    };
    let clock = clock.split('.').next().unwrap_or_default();
    let (date, clock) = (digits(date), digits(clock));
    (date.len() == 8 && matches!(clock.len(), 4 | 6) && zone.len() == 5)
        .then(|| format!("{date}{clock}{zone}"))
}

fn contact(resource: &Value) -> Contact {
    let telecoms = resource["telecom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let value = t["value"].as_str()?;
            match t["system"].as_str()? {
                "phone" => Some(format!("tel:{}", value.replace(' ', ""))),
                "fax" => Some(format!("fax:{}", value.replace(' ', ""))),
                "email" => Some(format!("mailto:{value}")),
                _ => None,
            }
        })
        .collect();
    let address = &resource["address"][0];
    Contact {
        telecoms,
        lines: address["line"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(text)
            .collect(),
        postal_code: text(&address["postalCode"]),
        city: text(&address["city"]),
    }
}

/// An identifier of the national directories: the RPPS as `8` + RPPS under the national
/// professional id OID, FINESS as `1` + FINESS under the structure OID, an `urn:oid:`
/// system as its root.
fn national_id(resource: &Value) -> Option<Id> {
    let ids = resource["identifier"].as_array()?;
    let find = |system: &str| {
        ids.iter()
            .find(|i| i["system"] == system)
            .and_then(|i| text(&i["value"]))
    };
    if let Some(v) = find(RPPS) {
        return Some(Id {
            root: write::IDNPS.into(),
            extension: Some(format!("8{v}")),
        });
    }
    if let Some(v) = find(FINESS) {
        return Some(Id {
            root: write::IDNST.into(),
            extension: Some(format!("1{v}")),
        });
    }
    ids.iter().find_map(|i| {
        Some(Id {
            root: i["system"].as_str()?.strip_prefix("urn:oid:")?.to_string(),
            extension: text(&i["value"]),
        })
    })
}

fn organization(org: &Value) -> Result<Organization, String> {
    let reference = format!("Organization/{}", org["id"].as_str().unwrap_or_default());
    Ok(Organization {
        id: national_id(org).ok_or(format!(
            "{reference} has no identifier (FINESS, or an urn:oid: system such as {})",
            write::IDNST
        ))?,
        name: text(&org["name"]).ok_or(format!("{reference} has no name"))?,
        contact: contact(org),
    })
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
        let version: u64 = focus["meta"]["versionId"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{reference} has no meta.versionId"))?;
        let built = match self.volet {
            Volet::CrBio => {
                if kind != "DiagnosticReport" {
                    return Ok(Err(format!(
                        "{reference}: the cr-bio volet is written from a DiagnosticReport"
                    )));
                }
                if !matches!(
                    focus["status"].as_str(),
                    Some("final" | "amended" | "corrected" | "appended")
                ) {
                    return Ok(Err(format!(
                        "{reference} is {}: a report is written once final",
                        focus["status"].as_str().unwrap_or("without status")
                    )));
                }
                self.cr_bio(bundle, focus, &reference, version)?
            }
        };
        Ok(Ok(self.bundle(bundle, focus, &reference, version, &built)))
    }

    fn cr_bio(
        &self,
        bundle: &Value,
        report: &Value,
        reference: &str,
        version: u64,
    ) -> Result<Document, String> {
        let patient = patient(bundle, report, reference)?;
        let performers: Vec<&Value> = report["performer"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| resolve(bundle, p["reference"].as_str()?))
            .collect();
        let practitioner = performers
            .iter()
            .find(|r| r["resourceType"] == "Practitioner")
            .ok_or(format!(
                "{reference} has no performer Practitioner in the change (is `performer` in the channel's include?)"
            ))?;
        let org = performers
            .iter()
            .find(|r| r["resourceType"] == "Organization")
            .ok_or(format!(
                "{reference} has no performer Organization in the change: the laboratory"
            ))?;
        let organization = organization(org)?;
        let facility = org["type"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(coded)
            .find(|c| c.system == FACILITY_TYPES)
            .ok_or(format!(
                "Organization/{} has no type of system urn:oid:{FACILITY_TYPES} (TRE_R02: the healthCareFacility code)",
                org["id"].as_str().unwrap_or_default()
            ))?;
        let author = professional(practitioner, organization.clone())?;
        let report_code = coded(&report["code"]).ok_or(format!(
            "{reference} has no code with a known system (LOINC)"
        ))?;
        let mut results = Vec::new();
        for r in report["result"].as_array().into_iter().flatten() {
            let Some(target) = r["reference"].as_str() else {
                continue;
            };
            let obs = resolve(bundle, target).ok_or(format!(
                "{reference}: result {target} is not in the change (is `result` in the channel's include?)"
            ))?;
            results.push(lab_result(obs, target)?);
        }
        if results.is_empty() {
            return Err(format!("{reference} has no result Observation"));
        }
        let time = report["issued"]
            .as_str()
            .or(report["meta"]["lastUpdated"].as_str())
            .and_then(ts)
            .ok_or(format!("{reference} has no issued time"))?;
        let start = report["effectiveDateTime"]
            .as_str()
            .or(report["effectivePeriod"]["start"].as_str())
            .and_then(ts);
        let encounter = report["encounter"]["reference"]
            .as_str()
            .and_then(|e| resolve(bundle, e));
        let (set_id, doc_id, replaces) = ids(reference, version);
        Ok(Document {
            templates: vec!["1.3.6.1.4.1.19376.1.3.3", "1.2.250.1.213.1.1.1.55"],
            id: doc_id,
            code: Code {
                code: "11502-2".into(),
                system: write::loinc().into(),
                display: "CR d'examens biologiques".into(),
            },
            title: "Compte rendu d'examens biologiques".into(),
            time: time.clone(),
            confidentiality: "N".into(),
            set_id,
            version,
            replaces,
            patient,
            author,
            custodian: organization,
            service_code: report_code.clone(),
            service_start: start.clone(),
            service_end: Some(time),
            practice_setting: Code {
                code: "ETABLISSEMENT".into(),
                system: write::PRACTICE_SETTING.into(),
                display: "Etablissement de santé".into(),
            },
            encounter_id: encounter.and_then(national_id),
            encounter_code: encounter
                .and_then(|e| {
                    let c = &e["class"];
                    Some(Code {
                        code: text(&c["code"])?,
                        system: write::act_code().into(),
                        display: text(&c["display"]).unwrap_or_default(),
                    })
                })
                .unwrap_or(Code {
                    code: "AMB".into(),
                    system: write::act_code().into(),
                    display: "Ambulatoire".into(),
                }),
            encounter_start: encounter
                .and_then(|e| e["period"]["start"].as_str())
                .and_then(ts),
            encounter_end: encounter
                .and_then(|e| e["period"]["end"].as_str())
                .and_then(ts),
            facility,
            body: Body::Lab(LabChapter {
                title: text(&report["code"]["text"]).unwrap_or_else(|| report_code.display.clone()),
                code: report_code,
                results,
            }),
        })
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
        for p in focus["performer"].as_array().into_iter().flatten() {
            if let Some(r) = p["reference"].as_str()
                && resolve(bundle, r).is_some()
            {
                authors.push(json!({"reference": r}));
            }
        }
        let custodian = authors
            .iter()
            .find(|a| {
                a["reference"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("Organization/"))
            })
            .cloned();
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
                "format": {"system": FORMAT_CODES, "code": "urn:ihe:lab:xd-lab:2008"},
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
fn ids(reference: &str, version: u64) -> (Id, Id, Option<Id>) {
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

fn patient(bundle: &Value, focus: &Value, reference: &str) -> Result<write::Patient, String> {
    let target = focus["subject"]["reference"]
        .as_str()
        .ok_or(format!("{reference} has no subject"))?;
    let p = resolve(bundle, target).ok_or(format!(
        "{reference}: the subject {target} is not in the change (is `subject` in the channel's include?)"
    ))?;
    let mut ids = Vec::new();
    let mut others = Vec::new();
    for i in p["identifier"].as_array().into_iter().flatten() {
        let (Some(system), Some(value)) = (i["system"].as_str(), text(&i["value"])) else {
            continue;
        };
        let Some(root) = system.strip_prefix("urn:oid:") else {
            continue;
        };
        let id = Id {
            root: root.to_string(),
            extension: Some(value),
        };
        if INS_OIDS.contains(&root) {
            ids.push(id);
        } else {
            others.push(id);
        }
    }
    if ids.is_empty() {
        return Err(format!(
            "{target} has no INS (an identifier of system urn:oid:1.2.250.1.213.1.4.8, .9, .10 or .11)"
        ));
    }
    ids.extend(others);
    let names = p["name"].as_array().cloned().unwrap_or_default();
    let name = names
        .iter()
        .find(|n| n["use"] == "official")
        .or(names.first())
        .ok_or(format!("{target} has no name"))?;
    Ok(write::Patient {
        ids,
        birth_family: text(&name["family"]).ok_or(format!("{target} has no family name"))?,
        given: name["given"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(text)
            .collect(),
        gender: match p["gender"].as_str() {
            Some("male") => "M",
            Some("female") => "F",
            _ => "U",
        }
        .into(),
        birth_time: p["birthDate"].as_str().and_then(ts),
        contact: contact(p),
    })
}

fn professional(p: &Value, organization: Organization) -> Result<write::Professional, String> {
    let reference = format!("Practitioner/{}", p["id"].as_str().unwrap_or_default());
    let id = national_id(p).ok_or(format!(
        "{reference} has no RPPS (an identifier of system {RPPS}) or national id"
    ))?;
    let name = &p["name"][0];
    Ok(write::Professional {
        id,
        code: p["qualification"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|q| coded(&q["code"])),
        family: text(&name["family"]).ok_or(format!("{reference} has no family name"))?,
        given: name["given"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(text)
            .collect(),
        contact: contact(p),
        organization,
    })
}

fn lab_result(obs: &Value, target: &str) -> Result<LabResult, String> {
    let code =
        coded(&obs["code"]).ok_or(format!("{target} has no code with a known system (LOINC)"))?;
    let number = |v: &Value| match v {
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let q = &obs["valueQuantity"];
    let quantity = number(&q["value"]).map(|v| {
        let unit = q["code"]
            .as_str()
            .filter(|_| q["system"] == "http://unitsofmeasure.org")
            .or(q["unit"].as_str())
            .unwrap_or("1");
        (v, unit.to_string())
    });
    let range = &obs["referenceRange"][0];
    Ok(LabResult {
        label: text(&obs["code"]["text"]).unwrap_or_else(|| code.display.clone()),
        code,
        time: obs["effectiveDateTime"]
            .as_str()
            .or(obs["issued"].as_str())
            .and_then(ts),
        text: text(&obs["valueString"]),
        quantity,
        interpretation: obs["interpretation"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(coded),
        low: number(&range["low"]["value"]),
        high: number(&range["high"]["value"]),
    })
}

#[cfg(test)]
mod tests;
