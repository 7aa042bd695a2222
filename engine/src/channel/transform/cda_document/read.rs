//! What the volets read from FHIR, in CDA terms: references resolved in the change, codes
//! with their OIDs, times with their zone, the patient with the INS, professionals and
//! organisations with their national ids, the encounter.

use serde_json::Value;

use super::write::{self, Code, Contact, Encounter, Id, Organization};
pub(super) use crate::channel::national_ids::{FINESS, IDNPS, IDNST, INS_OIDS, RPPS};

/// TRE_R02 facility types (`healthCareFacility/code`).
const FACILITY_TYPES: &str = "1.2.250.1.71.4.2.4";

pub(super) use crate::channel::change::resolve;

/// A HumanName's given names, in order.
fn given(name: &Value) -> Vec<String> {
    name["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(text)
        .collect()
}

pub(super) fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string).filter(|s| !s.is_empty())
}

/// A FHIR system as a CDA code system: `urn:oid:` stripped, LOINC and SNOMED CT known.
pub(super) fn code_system(system: &str) -> Option<String> {
    match system {
        "http://loinc.org" => Some(write::loinc().into()),
        "http://snomed.info/sct" => Some("2.16.840.1.113883.6.96".into()),
        "http://unitsofmeasure.org" => Some("2.16.840.1.113883.6.8".into()),
        "http://www.whocc.no/atc" => Some("2.16.840.1.113883.6.73".into()),
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
        | "http://terminology.hl7.org/CodeSystem/v2-0078" => Some("2.16.840.1.113883.5.83".into()),
        "http://terminology.hl7.org/CodeSystem/v3-ActCode" => Some(write::act_code().into()),
        s => s.strip_prefix("urn:oid:").map(str::to_string),
    }
}

/// The first coding of a CodeableConcept whose system is known as an OID.
pub(super) fn coded(concept: &Value) -> Option<Code> {
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
pub(super) fn ts(value: &str) -> Option<String> {
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

pub(super) fn contact(resource: &Value) -> Contact {
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
pub(super) fn national_id(resource: &Value) -> Option<Id> {
    let ids = resource["identifier"].as_array()?;
    let find = |system: &str| {
        ids.iter()
            .find(|i| i["system"] == system)
            .and_then(|i| text(&i["value"]))
    };
    if let Some(v) = find(RPPS) {
        return Some(Id {
            root: IDNPS.into(),
            extension: Some(format!("8{v}")),
        });
    }
    if let Some(v) = find(FINESS) {
        return Some(Id {
            root: IDNST.into(),
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

pub(super) fn organization(org: &Value) -> Result<Organization, String> {
    let reference = format!("Organization/{}", org["id"].as_str().unwrap_or_default());
    Ok(Organization {
        id: national_id(org).ok_or(format!(
            "{reference} has no identifier (FINESS, or an urn:oid: system such as {})",
            IDNST
        ))?,
        name: text(&org["name"]).ok_or(format!("{reference} has no name"))?,
        contact: contact(org),
    })
}

pub(super) fn patient(
    bundle: &Value,
    focus: &Value,
    reference: &str,
) -> Result<write::Patient, String> {
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
        given: given(name),
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

pub(super) fn professional(
    p: &Value,
    organization: Organization,
) -> Result<write::Professional, String> {
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
        given: given(name),
        contact: contact(p),
        organization,
    })
}

/// The TRE_R02 type of an organisation: the `healthCareFacility` code.
pub(super) fn facility(org: &Value) -> Result<Code, String> {
    org["type"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(coded)
        .find(|c| c.system == FACILITY_TYPES)
        .ok_or(format!(
            "Organization/{} has no type of system urn:oid:{FACILITY_TYPES} (TRE_R02: the healthCareFacility code)",
            org["id"].as_str().unwrap_or_default()
        ))
}

/// The `encompassingEncounter` of the focus's `encounter` (when in the change): its class
/// (else `AMB`), its period.
pub(super) fn encounter(bundle: &Value, focus: &Value) -> Encounter {
    let e = focus["encounter"]["reference"]
        .as_str()
        .and_then(|r| resolve(bundle, r));
    let period = |end: &str| e.and_then(|e| e["period"][end].as_str()).and_then(ts);
    Encounter {
        id: e.and_then(national_id),
        code: e
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
        start: period("start"),
        end: period("end"),
    }
}
