//! The LDL-SES volet (lettre de liaison à la sortie d'un établissement de santé): a
//! Composition of type LOINC 11490-0, its patient, author, custodian and stay. Its sections
//! are matched to the volet's by their LOINC code; a required section the letter lacks is
//! written "Non renseigné", as the CI-SIS allows.

use serde_json::Value;

use super::ids;
use super::narrative;
use super::read::{
    coded, encounter, facility, organization, patient, professional, resolve, text, ts,
};
use super::write::{self, Body, Code, Document, Letter, Medications, Section, Treatment};

/// The document's code, the letter's `type`.
const LETTER: &str = "11490-0";
const REASON: &str = "42349-1";
const OUTCOMES: &str = "42545-4";
const TREATMENTS: &str = "10183-2";

pub(super) fn document(
    bundle: &Value,
    letter: &Value,
    reference: &str,
    version: u64,
) -> Result<Document, String> {
    let kind = coded(&letter["type"]);
    if kind.as_ref().map(|c| c.code.as_str()) != Some(LETTER) {
        return Err(format!(
            "{reference} has type {}: the ldl-ses volet is written from a discharge letter (LOINC {LETTER})",
            kind.map_or("none".into(), |c| c.code)
        ));
    }
    let patient = patient(bundle, letter, reference)?;
    let authors: Vec<&Value> = letter["author"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| resolve(bundle, a["reference"].as_str()?))
        .collect();
    let practitioner = authors
        .iter()
        .find(|r| r["resourceType"] == "Practitioner")
        .ok_or(format!(
            "{reference} has no author Practitioner in the change (is `author` in the channel's include?)"
        ))?;
    let custodian = letter["custodian"]["reference"]
        .as_str()
        .and_then(|c| resolve(bundle, c))
        .or_else(|| {
            authors
                .iter()
                .find(|r| r["resourceType"] == "Organization")
                .copied()
        })
        .ok_or(format!(
            "{reference} has no custodian Organization in the change (is `custodian` in the channel's include?): the hospital"
        ))?;
    let custodian_org = organization(custodian)?;
    // The author's organisation: an Organization among the authors, else the hospital.
    let author_org = match authors.iter().find(|r| r["resourceType"] == "Organization") {
        Some(o) => organization(o)?,
        None => custodian_org.clone(),
    };
    let author = professional(practitioner, author_org)?;
    if letter["encounter"]["reference"]
        .as_str()
        .and_then(|e| resolve(bundle, e))
        .is_none()
    {
        return Err(format!(
            "{reference} has no encounter in the change (is `encounter` in the channel's include?): the stay the letter closes"
        ));
    }
    let stay = encounter(bundle, letter);
    let time = letter["date"]
        .as_str()
        .and_then(ts)
        .ok_or(format!("{reference} has no date with its time zone"))?;
    let (set_id, doc_id, replaces) = ids(reference, version);
    Ok(Document {
        templates: vec!["1.2.250.1.213.1.1.1.29"],
        id: doc_id,
        code: Code {
            code: LETTER.into(),
            system: write::loinc().into(),
            display: "Lettre de liaison à la sortie d'un établissement de soins".into(),
        },
        title: text(&letter["title"])
            .unwrap_or_else(|| "Lettre de liaison à la sortie de l'établissement de santé".into()),
        confidentiality: letter["confidentiality"]
            .as_str()
            .filter(|c| matches!(*c, "R" | "V"))
            .unwrap_or("N")
            .into(),
        set_id,
        version,
        replaces,
        patient,
        author,
        facility: facility(custodian)?,
        custodian: custodian_org,
        service_code: stay.code.clone(),
        service_start: stay.start.clone(),
        service_end: stay.end.clone().or(Some(time.clone())),
        time,
        practice_setting: write::establishment(),
        encounter: stay,
        body: Body::Letter(Box::new(body(bundle, letter, reference)?)),
    })
}

/// The letter's sections: the volet's by their code, the others as they come.
fn body(bundle: &Value, letter: &Value, reference: &str) -> Result<Letter, String> {
    let required = |code: &str, display: &str, title: &str| Section {
        code: Some(Code {
            code: code.into(),
            system: write::loinc().into(),
            display: display.into(),
        }),
        title: title.into(),
        text: vec![],
    };
    let mut l = Letter {
        reason: required(
            REASON,
            "Raison de la recommandation",
            "Motif de l'hospitalisation",
        ),
        outcomes: required(
            OUTCOMES,
            "Evènements observés",
            "Synthèse médicale du séjour",
        ),
        treatments: required(
            TREATMENTS,
            "Traitements à la sortie",
            "Traitements à la sortie",
        ),
        medications: Medications::Unknown,
        others: vec![],
    };
    for s in letter["section"].as_array().into_iter().flatten() {
        let code = coded(&s["code"]);
        let title = text(&s["title"]);
        let blocks = match s["text"]["div"].as_str() {
            Some(div) => narrative::blocks(div).map_err(|e| {
                format!(
                    "{reference}: the text of section `{}` is {e}",
                    title.as_deref().unwrap_or_default()
                )
            })?,
            None => vec![],
        };
        let slot = match code.as_ref().map(|c| c.code.as_str()) {
            Some(REASON) => &mut l.reason,
            Some(OUTCOMES) => &mut l.outcomes,
            Some(TREATMENTS) => {
                l.medications = medications(bundle, s, reference)?;
                &mut l.treatments
            }
            _ => {
                l.others.push(Section {
                    title: title
                        .or_else(|| code.as_ref().map(|c| c.display.clone()))
                        .unwrap_or_default(),
                    code,
                    text: blocks,
                });
                continue;
            }
        };
        if let Some(t) = title {
            slot.title = t;
        }
        slot.text = blocks;
    }
    Ok(l)
}

/// The treatments at discharge: the section's MedicationRequests; none, when its
/// `emptyReason` is `nilknown`.
fn medications(bundle: &Value, section: &Value, reference: &str) -> Result<Medications, String> {
    let mut listed = Vec::new();
    for e in section["entry"].as_array().into_iter().flatten() {
        let Some(target) = e["reference"].as_str() else {
            continue;
        };
        let request = resolve(bundle, target).ok_or(format!(
            "{reference}: the treatment {target} is not in the change (is `section.entry` in the channel's include?)"
        ))?;
        if request["resourceType"] != "MedicationRequest" {
            return Err(format!(
                "{reference}: {target} in the discharge treatments is not a MedicationRequest"
            ));
        }
        listed.push(treatment(bundle, request, target)?);
    }
    if !listed.is_empty() {
        return Ok(Medications::Listed(listed));
    }
    let nil = section["emptyReason"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["code"] == "nilknown");
    Ok(if nil {
        Medications::NoneKnown
    } else {
        Medications::Unknown
    })
}

fn treatment(bundle: &Value, request: &Value, target: &str) -> Result<Treatment, String> {
    let concept = match request["medicationReference"]["reference"].as_str() {
        Some(m) => resolve(bundle, m).map_or(&Value::Null, |m| &m["code"]),
        None => &request["medicationCodeableConcept"],
    };
    let code = coded(concept);
    let name = text(&concept["text"])
        .or_else(|| code.as_ref().map(|c| c.display.clone()).filter(|d| !d.is_empty()))
        .or_else(|| text(&request["medicationReference"]["display"]))
        .ok_or(format!("{target} names no medication (medicationCodeableConcept, or a medicationReference in the change)"))?;
    let dosages: Vec<String> = request["dosageInstruction"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| text(&d["text"]))
        .collect();
    let bounds = &request["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"];
    let validity = &request["dispenseRequest"]["validityPeriod"];
    let at = |end: &str| bounds[end].as_str().or(validity[end].as_str()).and_then(ts);
    Ok(Treatment {
        name,
        code,
        start: at("start").or_else(|| request["authoredOn"].as_str().and_then(ts)),
        end: at("end"),
        dosage: (!dosages.is_empty()).then(|| dosages.join(" ; ")),
    })
}
