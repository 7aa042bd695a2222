//! The `mssante` transform: a store change of a `Communication` (a document to send to a health
//! professional) into the MSSanté mail that carries it: RFC 5322 + MIME, subject
//! `XDM/1.0/DDM ...`, `X-MSS-CODECDA`, a short text body and the IHE XDM package
//! `IHE_XDM.zip` ([`crate::channel::xdm`]). The mail is the payload: an `smtp` destination
//! sends it, a `file` destination writes it as it would be sent.
//!
//! What it reads in the notification Bundle (the channel's `include` brings it in):
//!
//! | from | for |
//! |---|---|
//! | `Communication.recipient` -> Practitioner / PractitionerRole `telecom` (`system: email`) | `To:` |
//! | `Communication.payload.contentReference` -> DocumentReference | the XDS metadata |
//! | `DocumentReference.content.attachment` (`data`, or `url` -> Binary) | the document (a CDA) |
//! | `Communication.subject` -> Patient | INS (`patientId`), `sourcePatientId`, `sourcePatientInfo` |

use base64::Engine as _;
use chrono::{DateTime, Datelike, Timelike, Utc};
use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use serde_json::Value;

use super::{Output, Routing, Transform};
use crate::channel::Input;
use crate::channel::change::{self, resolve};
use crate::channel::national_ids::{IDNPS, INS_OIDS, RPPS};
use crate::channel::xdm::{self, Author, Code, DocumentEntry, SubmissionSet};
use crate::channel::xds::metadata as cda_metadata;

pub struct Mssante {
    /// The sending mailbox, `Name <box@domain>` or `box@domain`.
    pub sender: Mailbox,
    /// The OID of the sending system (`XDSSubmissionSet.sourceId`); None: one derived from
    /// the sender's address.
    pub source_id: Option<String>,
    pub destinations: Vec<String>,
}

impl Transform for Mssante {
    fn kind(&self) -> &'static str {
        "mssante"
    }

    fn apply(&self, input: &Input<'_>) -> Result<Routing, String> {
        let Input::Change(bundle) = input else {
            return Err("the mssante transform takes a store source's changes".into());
        };
        let mail = self.mail(bundle)?;
        Ok(Routing::Deliver(
            self.destinations
                .iter()
                .map(|d| Output {
                    destination: d.clone(),
                    payload: Some(mail.clone()),
                })
                .collect(),
        ))
    }
}

impl Mssante {
    /// The mail of a Communication notification, as bytes ready for SMTP `DATA`.
    pub fn mail(&self, bundle: &Value) -> Result<Vec<u8>, String> {
        let communication = change::focus(bundle).ok_or("the change has no resource")?;
        if communication["resourceType"] != "Communication" {
            return Err(format!(
                "the mssante transform sends Communications, not {}",
                communication["resourceType"].as_str().unwrap_or("?")
            ));
        }
        let key = change::key(bundle).unwrap_or_default();
        let at = bundle["timestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        let find = |reference: &str| resolve(bundle, reference);

        let recipients = recipients(communication, &find)?;
        let patient = communication["subject"]["reference"]
            .as_str()
            .and_then(find)
            .filter(|p| p["resourceType"] == "Patient");
        let mut entries = Vec::new();
        for payload in communication["payload"].as_array().into_iter().flatten() {
            let Some(reference) = payload["contentReference"]["reference"].as_str() else {
                continue;
            };
            let document_reference = find(reference)
                .filter(|d| d["resourceType"] == "DocumentReference")
                .ok_or_else(|| {
                    format!("payload {reference}: no DocumentReference (is it in the channel's include?)")
                })?;
            entries.push(entry(document_reference, patient, &find)?);
        }
        if entries.is_empty() {
            return Err(
                "the Communication has no payload.contentReference to a DocumentReference".into(),
            );
        }

        let title = entries[0].title.clone();
        let set = SubmissionSet {
            unique_id: xdm::oid_from(&format!("{key}/SubmissionSet")),
            source_id: self
                .source_id
                .clone()
                .unwrap_or_else(|| xdm::oid_from(self.sender.email.as_ref())),
            submission_time: at.format("%Y%m%d%H%M%S").to_string(),
            title: title.clone(),
            authors: entries[0].authors.clone(),
            intended_recipients: recipients
                .iter()
                .map(|r| format!("||^^Internet^{}", r.email))
                .collect(),
            content_type: None,
            seed: key.clone(),
        };
        let readme = format!(
            "IHE XDM package (ITI-32)\r\n\r\nMade by Passerelle {}\r\nSender: {}\r\nSent: {}\r\n\r\n\
             IHE_XDM/SUBSET01/METADATA.XML describes the documents of IHE_XDM/SUBSET01;\r\n\
             INDEX.HTM links them.\r\n",
            env!("CARGO_PKG_VERSION"),
            self.sender.email,
            at.to_rfc3339(),
        );
        let stamp = (
            at.year() as u16,
            at.month() as u8,
            at.day() as u8,
            at.hour() as u8,
            at.minute() as u8,
            at.second() as u8,
        );
        let zip = xdm::package(&set, &entries, &readme, stamp)?;

        let codes: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.type_code.as_ref().map(|c| c.code.as_str()))
            .collect();
        let mut text = String::new();
        if let Some(note) = communication["payload"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|p| p["contentString"].as_str())
        {
            text.push_str(note.trim());
            text.push_str("\r\n\r\n");
        }
        for e in &entries {
            text.push_str(&format!("Document : {}\r\n", e.title));
        }
        if let Some(p) = patient {
            text.push_str(&format!("Patient : {}\r\n", patient_line(p)));
        }
        text.push_str(
            "\r\nLe document est joint au format IHE XDM (IHE_XDM.zip).\r\n\
             The document is attached as an IHE XDM package (IHE_XDM.zip).\r\n",
        );

        let uuid = xdm::uuid_from(&format!("{key}/mail"));
        let uuid = uuid.trim_start_matches("urn:uuid:");
        let domain = self.sender.email.domain().to_string();
        let mut builder = Message::builder()
            .from(self.sender.clone())
            .subject(format!("XDM/1.0/DDM {title}"))
            .date(at.into())
            .message_id(Some(format!("<{uuid}@{domain}>")));
        for r in recipients {
            builder = builder.to(r);
        }
        if !codes.is_empty() {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-MSS-CODECDA"),
                codes.join(","),
            ));
        }
        let zip_type = ContentType::parse("application/zip").map_err(|e| e.to_string())?;
        let message = builder
            .multipart(
                MultiPart::mixed()
                    .boundary(format!("=_{}", uuid.replace('-', "")))
                    .singlepart(SinglePart::plain(text))
                    .singlepart(Attachment::new("IHE_XDM.zip".into()).body(zip, zip_type)),
            )
            .map_err(|e| format!("the mail cannot be built: {e}"))?;
        Ok(message.formatted())
    }
}

/// The mailboxes of the recipients: each one's `telecom` with `system: email` (a
/// PractitionerRole's own, else its practitioner's).
fn recipients<'b>(
    communication: &Value,
    find: &impl Fn(&str) -> Option<&'b Value>,
) -> Result<Vec<Mailbox>, String> {
    let mut out = Vec::new();
    for r in communication["recipient"].as_array().into_iter().flatten() {
        let Some(reference) = r["reference"].as_str() else {
            continue;
        };
        let Some(resource) = find(reference) else {
            return Err(format!(
                "recipient {reference}: not in the change (is `recipient` in the channel's include?)"
            ));
        };
        let practitioner = resource["practitioner"]["reference"]
            .as_str()
            .and_then(find);
        let email = email(resource).or_else(|| practitioner.and_then(email));
        let Some(email) = email else {
            return Err(format!(
                "recipient {reference} has no MSSanté address (a telecom with system email)"
            ));
        };
        let address = email
            .parse()
            .map_err(|e| format!("recipient {reference}: `{email}` is not an address: {e}"))?;
        let named = practitioner.unwrap_or(resource);
        out.push(Mailbox::new(person_name(named), address));
    }
    if out.is_empty() {
        return Err("the Communication has no recipient".into());
    }
    Ok(out)
}

fn email(resource: &Value) -> Option<&str> {
    resource["telecom"]
        .as_array()?
        .iter()
        .find(|t| t["system"] == "email" && t["value"].is_string())
        .and_then(|t| t["value"].as_str())
        .map(|v| v.trim_start_matches("mailto:"))
}

/// `Given FAMILY` of a Practitioner or Patient, None without a name.
fn person_name(resource: &Value) -> Option<String> {
    let name = &resource["name"][0];
    let family = name["family"].as_str().unwrap_or_default();
    let given: Vec<&str> = name["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let full = format!("{} {}", given.join(" "), family);
    let full = full.trim();
    (!full.is_empty()).then(|| full.to_string())
}

fn patient_line(patient: &Value) -> String {
    let name = person_name(patient).unwrap_or_default();
    match patient["birthDate"].as_str() {
        Some(b) => format!("{name} ({b})"),
        None => name,
    }
}

/// The DocumentEntry of a DocumentReference, its document and patient.
fn entry<'b>(
    reference: &Value,
    patient: Option<&Value>,
    find: &impl Fn(&str) -> Option<&'b Value>,
) -> Result<DocumentEntry, String> {
    let id = reference["id"].as_str().unwrap_or("?");
    let attachment = &reference["content"][0]["attachment"];
    let (content, binary_type) =
        document_bytes(attachment, find).map_err(|why| format!("DocumentReference/{id}: {why}"))?;
    // What the FHIR resources do not say, the CDA's header does (as the DMP flow reads it).
    let cda = cda_metadata::read(&content).ok();
    let cda = cda.as_ref();
    let mime_type = attachment["contentType"]
        .as_str()
        .or(binary_type)
        .map(|t| match t {
            // XDS names the CDA's type text/xml.
            "application/hl7-cda+xml" | "application/xml" => "text/xml",
            t => t,
        })
        .unwrap_or("text/xml")
        .to_string();
    let (cda_id, cda_type, cda_title) = name_of(&content);
    let unique_id = cda
        .map(|c| c.unique_id.clone())
        .or(cda_id)
        .or_else(|| {
            reference["masterIdentifier"]["value"]
                .as_str()
                .map(|v| v.trim_start_matches("urn:oid:").to_string())
        })
        .ok_or_else(|| {
            format!("DocumentReference/{id}: no document id (CDA id or masterIdentifier)")
        })?;
    let patient_id = patient
        .and_then(ins_of_patient)
        .or_else(|| cda.map(|c| c.patient_id.clone()))
        .ok_or_else(|| {
            format!("DocumentReference/{id}: the patient has no INS (in the Patient or the CDA)")
        })?;
    let first = |v: &Value| code(&v["coding"][0]);
    // A CDA value, when it says something.
    let cda_code = |pick: fn(&cda_metadata::DocumentEntry) -> &Code| {
        cda.map(pick).filter(|c| !c.code.is_empty()).cloned()
    };
    let cda_text = |pick: fn(&cda_metadata::DocumentEntry) -> &String| {
        cda.map(pick).filter(|t| !t.is_empty()).cloned()
    };
    let title = attachment["title"]
        .as_str()
        .or(reference["description"].as_str())
        .map(String::from)
        .or_else(|| cda_text(|c| &c.title))
        .or(cda_title)
        .unwrap_or_else(|| "Document".into());
    let confidentiality: Vec<Code> = reference["securityLabel"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["coding"].as_array().into_iter().flatten())
        .filter_map(code)
        .collect();
    let period = &reference["context"]["period"];
    let mut authors: Vec<Author> = reference["author"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["reference"].as_str().and_then(find))
        .filter_map(author_of)
        .collect();
    if authors.is_empty()
        && let Some(a) = cda.map(|c| &c.author).filter(|a| !a.person.is_empty())
    {
        authors.push(Author {
            person: Some(a.person.clone()),
            institutions: a.institution.iter().cloned().collect(),
            roles: a.role.iter().cloned().collect(),
            specialties: a.specialty.iter().cloned().collect(),
        });
    }
    Ok(DocumentEntry {
        unique_id,
        title,
        mime_type,
        creation_time: attachment["creation"]
            .as_str()
            .or(reference["date"].as_str())
            .and_then(utc)
            .or_else(|| cda_text(|c| &c.creation_time)),
        service_start_time: period["start"]
            .as_str()
            .and_then(utc)
            .or_else(|| cda.and_then(|c| c.service_start.clone())),
        service_stop_time: period["end"]
            .as_str()
            .and_then(utc)
            .or_else(|| cda.and_then(|c| c.service_stop.clone())),
        language: attachment["language"]
            .as_str()
            .map(String::from)
            .or_else(|| cda_text(|c| &c.language)),
        source_patient_id: patient.and_then(local_id),
        source_patient_info: match patient {
            Some(p) => source_patient_info(p, &patient_id),
            None => cda
                .map(|c| c.source_patient_info.clone())
                .unwrap_or_default(),
        },
        patient_id,
        class_code: reference["category"]
            .get(0)
            .and_then(first)
            .or_else(|| cda_code(|c| &c.class_code)),
        type_code: first(&reference["type"])
            .or_else(|| cda_code(|c| &c.type_code))
            .or(cda_type),
        format_code: code(&reference["content"][0]["format"])
            .or_else(|| cda_code(|c| &c.format_code)),
        confidentiality: if confidentiality.is_empty() {
            cda.map(|c| c.confidentiality.clone()).unwrap_or_default()
        } else {
            confidentiality
        },
        facility_type: first(&reference["context"]["facilityType"])
            .or_else(|| cda_code(|c| &c.facility_type)),
        practice_setting: first(&reference["context"]["practiceSetting"])
            .or_else(|| cda_code(|c| &c.practice_setting)),
        event_codes: reference["context"]["event"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(first)
            .collect(),
        authors,
        legal_authenticator: None,
        content,
    })
}

/// The CDA's `id` (`root^extension`), `code` and `title`, read on their own: a CDA whose header
/// is not complete enough for the DMP's metadata still names itself and its kind.
fn name_of(content: &[u8]) -> (Option<String>, Option<Code>, Option<String>) {
    let Some(doc) = std::str::from_utf8(content)
        .ok()
        .and_then(|t| roxmltree::Document::parse(t).ok())
    else {
        return (None, None, None);
    };
    let root = doc.root_element();
    let child = |name: &str| {
        root.children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
    };
    if root.tag_name().name() != "ClinicalDocument" {
        return (None, None, None);
    }
    let id = child("id").and_then(|i| {
        let r = i.attribute("root")?;
        Some(match i.attribute("extension").filter(|e| !e.is_empty()) {
            Some(e) => format!("{r}^{e}"),
            None => r.to_string(),
        })
    });
    let code = child("code").and_then(|c| {
        Some(Code {
            code: c.attribute("code")?.to_string(),
            scheme: c.attribute("codeSystem").unwrap_or_default().to_string(),
            display: c.attribute("displayName").unwrap_or_default().to_string(),
        })
    });
    let title = child("title")
        .and_then(|t| t.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    (id, code, title)
}

/// The document: the attachment's `data`, or the Binary its `url` names.
fn document_bytes<'b>(
    attachment: &Value,
    find: &impl Fn(&str) -> Option<&'b Value>,
) -> Result<(Vec<u8>, Option<&'b str>), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(data) = attachment["data"].as_str() {
        return b64
            .decode(data)
            .map(|d| (d, None))
            .map_err(|e| format!("content.attachment.data is not base64: {e}"));
    }
    let Some(url) = attachment["url"].as_str() else {
        return Err("content.attachment has neither data nor url".into());
    };
    let binary = find(url)
        .filter(|b| b["resourceType"] == "Binary")
        .ok_or_else(|| format!("the Binary {url} is not in the change (include its url)"))?;
    let data = binary["data"]
        .as_str()
        .ok_or_else(|| format!("{url} has no data"))?;
    let bytes = b64
        .decode(data)
        .map_err(|e| format!("{url}: data is not base64: {e}"))?;
    Ok((bytes, binary["contentType"].as_str()))
}

/// A FHIR Coding as an XDS code: the system as an OID where one is known.
fn code(coding: &Value) -> Option<Code> {
    let code = coding["code"].as_str()?.to_string();
    let system = coding["system"].as_str().unwrap_or_default();
    Some(Code {
        code,
        scheme: scheme_of(system),
        display: coding["display"].as_str().unwrap_or_default().to_string(),
    })
}

/// XDS coding schemes are OIDs; FHIR systems are URIs. The ANS terminologies are matched on
/// their table name (TRE_A03...), whatever the URL around it.
fn scheme_of(system: &str) -> String {
    if let Some(oid) = system.strip_prefix("urn:oid:") {
        return oid.to_string();
    }
    let known = [
        ("http://loinc.org", "2.16.840.1.113883.6.1"),
        ("http://snomed.info/sct", "2.16.840.1.113883.6.96"),
        (
            "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
            "2.16.840.1.113883.5.25",
        ),
        (
            "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
            "1.3.6.1.4.1.19376.1.2.3",
        ),
        ("TRE_A03-ClasseDocument", "1.2.250.1.213.1.1.4.1"),
        ("TRE_R02-SecteurActivite", "1.2.250.1.71.4.2.4"),
        ("TRE_A01-CadreExercice", "1.2.250.1.213.1.1.4.9"),
        (
            "TRE_A06-FormatCodeComplementaire",
            "1.2.250.1.213.1.1.4.2.282",
        ),
    ];
    known
        .iter()
        .find(|(uri, _)| system == *uri || (uri.starts_with("TRE_") && system.contains(uri)))
        .map(|(_, oid)| oid.to_string())
        .unwrap_or_else(|| system.to_string())
}

/// A FHIR date or dateTime as XDS time: UTC, `YYYYMMDD[HHMMSS]`.
fn utc(text: &str) -> Option<String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc).format("%Y%m%d%H%M%S").to_string());
    }
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    (text.len() <= 10 && matches!(digits.len(), 4 | 6 | 8)).then_some(digits)
}

/// The INS of a Patient as XDS `patientId` (CX, `^NH` as FRANCE.md's DMP metadata has it).
fn ins_of_patient(patient: &Value) -> Option<String> {
    patient["identifier"].as_array()?.iter().find_map(|i| {
        let oid = i["system"].as_str()?.strip_prefix("urn:oid:")?;
        let value = i["value"].as_str()?;
        INS_OIDS
            .contains(&oid)
            .then(|| format!("{value}^^^&{oid}&ISO^NH"))
    })
}

/// The patient's identifier in the facility (IPP), as CX: the first non-INS identifier whose
/// system is an OID.
fn local_id(patient: &Value) -> Option<String> {
    patient["identifier"].as_array()?.iter().find_map(|i| {
        let oid = i["system"].as_str()?.strip_prefix("urn:oid:")?;
        let value = i["value"].as_str()?;
        (!INS_OIDS.contains(&oid)).then(|| format!("{value}^^^&{oid}&ISO^PI"))
    })
}

fn source_patient_info(patient: &Value, patient_id: &str) -> Vec<String> {
    let mut lines = vec![format!("PID-3|{patient_id}")];
    let name = &patient["name"][0];
    if let Some(family) = name["family"].as_str() {
        let given = name["given"][0].as_str().unwrap_or_default();
        lines.push(format!("PID-5|{family}^{given}^^^^^L"));
    }
    if let Some(b) = patient["birthDate"].as_str() {
        lines.push(format!("PID-7|{}", b.replace('-', "")));
    }
    let sex = match patient["gender"].as_str() {
        Some("male") => "M",
        Some("female") => "F",
        Some("other") => "A",
        _ => "U",
    };
    lines.push(format!("PID-8|{sex}"));
    lines
}

/// An XDS author from a Practitioner (its national id, `8` + RPPS) or a PractitionerRole's.
fn author_of(resource: &Value) -> Option<Author> {
    if resource["resourceType"] != "Practitioner" {
        return None;
    }
    let id = resource["identifier"].as_array()?.iter().find_map(|i| {
        let value = i["value"].as_str()?;
        match i["system"].as_str()? {
            "urn:oid:1.2.250.1.71.4.2.1" => Some(value.to_string()),
            RPPS => Some(format!("8{value}")),
            _ => None,
        }
    })?;
    let name = &resource["name"][0];
    Some(Author {
        person: Some(format!(
            "{id}^{}^{}^^^^^^&{IDNPS}&ISO^D^^^IDNPS",
            name["family"].as_str().unwrap_or_default(),
            name["given"][0].as_str().unwrap_or_default()
        )),
        ..Author::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CDA: &str = r#"<ClinicalDocument xmlns="urn:hl7-org:v3">
  <id root="1.2.250.1.213.1.1.1.55.2024.9.1"/>
  <code code="11502-2" codeSystem="2.16.840.1.113883.6.1" displayName="CR d'examens biologiques"/>
  <title>Compte rendu d'examens biologiques</title>
  <effectiveTime value="20210401171000+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <recordTarget><patientRole><id extension="279035121518989" root="1.2.250.1.213.1.4.10"/></patientRole></recordTarget>
  <author><assignedAuthor><id root="1.2.250.1.71.4.2.1" extension="801234567890"/>
    <assignedPerson><name><family>MEDECIN</family><given>Paul</given></name></assignedPerson>
  </assignedAuthor></author>
</ClinicalDocument>"#;

    fn notification(recipient_email: Option<&str>) -> Value {
        let data = base64::engine::general_purpose::STANDARD.encode(CDA);
        let mut practitioner = json!({"resourceType": "Practitioner", "id": "dr",
            "name": [{"family": "GENERALISTE", "given": ["Marie"]}]});
        if let Some(e) = recipient_email {
            practitioner["telecom"] =
                json!([{"system": "phone", "value": "0102"}, {"system": "email", "value": e}]);
        }
        change::notification(
            change::Kind::Create,
            json!({"resourceType": "Communication", "id": "c1", "meta": {"versionId": "1"},
                "status": "in-progress",
                "subject": {"reference": "Patient/p1"},
                "recipient": [{"reference": "Practitioner/dr"}],
                "payload": [{"contentReference": {"reference": "DocumentReference/d1"}},
                            {"contentString": "Bonjour, voici le compte rendu."}]}),
            vec![
                json!({"resourceType": "Patient", "id": "p1",
                    "identifier": [{"system": "urn:oid:1.2.250.1.999.1.1", "value": "IPP-1"},
                                   {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "279035121518989"}],
                    "name": [{"family": "NOM", "given": ["Prenom"]}], "gender": "female", "birthDate": "1979-03-21"}),
                practitioner,
                json!({"resourceType": "Practitioner", "id": "author",
                    "identifier": [{"system": "https://rpps.esante.gouv.fr", "value": "10001234567"}],
                    "name": [{"family": "MEDECIN", "given": ["Paul"]}]}),
                json!({"resourceType": "DocumentReference", "id": "d1", "status": "current",
                    "author": [{"reference": "Practitioner/author"}],
                    "date": "2021-04-01T17:10:00+01:00",
                    "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}],
                    "type": {"coding": [{"system": "http://loinc.org", "code": "11502-2"}]},
                    "category": [{"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument", "code": "10"}]}],
                    "content": [{"attachment": {"contentType": "application/hl7-cda+xml", "url": "Binary/b1"},
                                 "format": {"system": "urn:oid:1.2.250.1.213.1.1.4.2.282", "code": "urn:asip:ci-sis:cr-bio:2024"}}],
                    "context": {"practiceSetting": {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.9", "code": "ETABLISSEMENT"}]}}}),
                json!({"resourceType": "Binary", "id": "b1", "contentType": "application/hl7-cda+xml", "data": data}),
            ],
            "2026-01-02T10:00:00.000Z",
        )
    }

    fn transform() -> Mssante {
        Mssante {
            sender: "Service de biologie <biologie@hopital.mssante.fr>"
                .parse()
                .unwrap(),
            source_id: Some("1.2.250.1.999.9".into()),
            destinations: vec!["mssante".into()],
        }
    }

    #[test]
    fn the_mail_carries_the_document_in_an_xdm_package() {
        let mail = transform()
            .mail(&notification(Some("marie.generaliste@test.mssante.fr")))
            .unwrap();
        let text = String::from_utf8_lossy(&mail);
        assert!(
            text.contains("Subject: XDM/1.0/DDM Compte rendu d'examens biologiques\r\n"),
            "{text}"
        );
        assert!(text.contains("X-MSS-CODECDA: 11502-2\r\n"), "{text}");
        assert!(
            text.contains("To: \"Marie GENERALISTE\" <marie.generaliste@test.mssante.fr>")
                || text.contains("To: Marie GENERALISTE <marie.generaliste@test.mssante.fr>"),
            "{text}"
        );
        assert!(text.contains("filename=\"IHE_XDM.zip\""), "{text}");
        assert!(text.contains("Content-Type: application/zip"), "{text}");
        // The same change makes the same mail (a retry resends the same bytes).
        assert_eq!(
            mail,
            transform()
                .mail(&notification(Some("marie.generaliste@test.mssante.fr")))
                .unwrap()
        );

        let b = notification(Some("x@test.mssante.fr"));
        let find = |r: &str| resolve(&b, r);
        let patient = resolve(&b, "Patient/p1");
        let e = entry(resolve(&b, "DocumentReference/d1").unwrap(), patient, &find).unwrap();
        assert_eq!(e.unique_id, "1.2.250.1.213.1.1.1.55.2024.9.1");
        assert_eq!(
            e.patient_id,
            "279035121518989^^^&1.2.250.1.213.1.4.8&ISO^NH"
        );
        assert_eq!(
            e.source_patient_id.as_deref(),
            Some("IPP-1^^^&1.2.250.1.999.1.1&ISO^PI")
        );
        assert_eq!(e.mime_type, "text/xml");
        assert_eq!(e.content, CDA.as_bytes());
        assert_eq!(
            e.class_code
                .as_ref()
                .map(|c| (c.code.as_str(), c.scheme.as_str())),
            Some(("10", "1.2.250.1.213.1.1.4.1"))
        );
        assert_eq!(
            e.type_code.as_ref().map(|c| c.scheme.as_str()),
            Some("2.16.840.1.113883.6.1")
        );
        assert_eq!(
            e.format_code.as_ref().map(|c| c.code.as_str()),
            Some("urn:asip:ci-sis:cr-bio:2024")
        );
        assert_eq!(
            e.practice_setting.as_ref().map(|c| c.code.as_str()),
            Some("ETABLISSEMENT")
        );
        assert_eq!(e.confidentiality[0].code, "N");
        assert_eq!(e.creation_time.as_deref(), Some("20210401161000"));
        assert_eq!(
            e.authors[0].person.as_deref(),
            Some("810001234567^MEDECIN^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS")
        );
        assert!(
            e.source_patient_info
                .contains(&"PID-5|NOM^Prenom^^^^^L".to_string())
        );
    }

    #[test]
    fn a_recipient_without_an_address_or_a_missing_document_is_an_error_that_says_so() {
        let e = transform().mail(&notification(None)).unwrap_err();
        assert!(e.contains("Practitioner/dr has no MSSanté address"), "{e}");
        let mut b = notification(Some("x@test.mssante.fr"));
        b["entry"].as_array_mut().unwrap().pop();
        let e = transform().mail(&b).unwrap_err();
        assert!(e.contains("Binary/b1 is not in the change"), "{e}");
    }
}
