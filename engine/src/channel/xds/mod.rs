//! The DMP's document sharing: IHE XDS.b ITI-41 Provide and Register Document Set-b.
//!
//! The `xds-provide` transform turns a store change on a DocumentReference (with its
//! patient, the patient's DMP consents and the Binary holding the CI-SIS CDA) into the
//! ITI-41 request: [`metadata`] (the ebRIM SubmitObjectsRequest read from the CDA header),
//! [`soap`] (SOAP 1.2, WS-Addressing, the VIHF in WS-Security; reading the answer) and
//! [`mtom`] (the multipart/related XOP package). The `xds` destination posts it.

pub mod metadata;
pub mod mtom;
pub mod soap;
pub mod xml;

use base64::Engine as _;
use serde_json::Value;
use sha1::Digest;

use super::Input;
use super::change::{self, Kind};
use super::transform::{Output, Routing, Transform};

/// The tag that marks a DocumentReference for the DMP (`meta.tag`).
pub const MARK_SYSTEM: &str = "https://passerelle.dev/fhir/CodeSystem/destination";
pub const MARK_CODE: &str = "DMP";
/// The category of the DMP consents the ZFA segment gives (mappings/hl7v2/adt.yaml).
const CONSENT_SYSTEM: &str = "urn:passerelle:codesystem:dmp-consent";

/// The transform's settings (`transform: {type: xds-provide, xds: {...}}`).
#[derive(Debug, Clone, Default)]
pub struct XdsSettings {
    /// The repository's address, for WS-Addressing `To`.
    pub to: String,
    /// The sending system's OID (SubmissionSet.sourceId).
    pub source_id: String,
    /// A VIHF assertion (signed) read from a file, inserted as it is.
    pub assertion: Option<String>,
    pub software: String,
    pub software_version: String,
    pub homologation: String,
}

pub struct XdsProvide {
    pub settings: XdsSettings,
    pub destinations: Vec<String>,
}

/// A name-based UUID (RFC 4122 version 5 layout over SHA-1) as `urn:uuid:...`: the same
/// change gives the same ids on every attempt and after a restart.
pub fn name_uuid(name: &str) -> String {
    let h = sha1::Sha1::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// An OID under `2.25` (ITU-T X.667: a UUID as an OID) for a name.
pub(crate) fn name_oid(name: &str) -> String {
    let hex: String = name_uuid(name)
        .trim_start_matches("urn:uuid:")
        .chars()
        .filter(|c| *c != '-')
        .collect();
    format!(
        "2.25.{}",
        u128::from_str_radix(&hex, 16).unwrap_or_default()
    )
}

impl Transform for XdsProvide {
    fn kind(&self) -> &'static str {
        "xds-provide"
    }

    fn apply(&self, input: &Input<'_>) -> Result<Routing, String> {
        let Input::Change(bundle) = input else {
            return Err("the xds-provide transform takes a store source's changes".into());
        };
        match self.request(bundle)? {
            Ok(message) => Ok(Routing::Deliver(
                self.destinations
                    .iter()
                    .map(|d| Output {
                        destination: d.clone(),
                        payload: Some(message.clone()),
                    })
                    .collect(),
            )),
            Err(why) => Ok(Routing::Drop(why)),
        }
    }
}

impl XdsProvide {
    /// The request (a MIME message, see [`mtom`]), or why the change is not for the DMP.
    pub fn request(&self, bundle: &Value) -> Result<Result<Vec<u8>, String>, String> {
        let focus = change::focus(bundle).ok_or("the change has no resource")?;
        let reference = format!(
            "{}/{}",
            focus["resourceType"].as_str().unwrap_or_default(),
            focus["id"].as_str().unwrap_or_default()
        );
        if focus["resourceType"] != "DocumentReference" {
            return Ok(Err(format!("{reference} is not a DocumentReference")));
        }
        if change::kind(bundle) == Some(Kind::Delete) {
            return Ok(Err(format!(
                "{reference} was deleted: a document is withdrawn from the DMP by a new version, not sent"
            )));
        }
        if focus["status"] != "current" {
            return Ok(Err(format!(
                "{reference} is {}: only current documents go to the DMP",
                focus["status"].as_str().unwrap_or("without status")
            )));
        }
        let marked = focus["meta"]["tag"].as_array().is_some_and(|tags| {
            tags.iter()
                .any(|t| t["system"] == MARK_SYSTEM && t["code"] == MARK_CODE)
        });
        if !marked {
            return Ok(Err(format!(
                "{reference} is not marked for the DMP (meta.tag {MARK_SYSTEM}|{MARK_CODE})"
            )));
        }
        let Some(patient) = focus["subject"]["reference"].as_str() else {
            return Ok(Err(format!("{reference} has no subject patient")));
        };
        if let Err(why) = consent(bundle, patient) {
            return Ok(Err(why));
        }
        let document = attachment(bundle, focus)?;
        let mut entry = metadata::read(&document).map_err(|e| format!("{reference}: {e}"))?;
        if let Some(previous) = replaced(focus) {
            entry.replaces = Some(previous);
        }
        let key = change::key(bundle).unwrap_or_else(|| reference.clone());
        let submission_time =
            chrono::DateTime::parse_from_rfc3339(bundle["timestamp"].as_str().unwrap_or_default())
                .map(|t| {
                    t.with_timezone(&chrono::Utc)
                        .format("%Y%m%d%H%M%S")
                        .to_string()
                })
                .map_err(|_| "the change has no timestamp".to_string())?;
        let unique_id = name_oid(&format!("SubmissionSet|{key}"));
        let submission = metadata::Submission {
            unique_id: &unique_id,
            source_id: &self.settings.source_id,
            submission_time: &submission_time,
        };
        let sender = soap::Sender {
            assertion: self.settings.assertion.as_deref(),
            software: &self.settings.software,
            software_version: &self.settings.software_version,
            homologation: &self.settings.homologation,
        };
        let cid = format!("{}@passerelle", entry.hash);
        let envelope = soap::envelope(
            &entry,
            &submission,
            &sender,
            &name_uuid(&format!("MessageID|{key}")),
            &self.settings.to,
            &cid,
        );
        let boundary = format!("MIMEBoundary_{}", &entry.hash[..20]);
        let framed = mtom::frame(&envelope, &document, &cid, &boundary)?;
        Ok(Ok(framed.to_message()))
    }
}

/// Whether the patient's DMP feeding consent lets the document go: an active Consent of
/// category `feeding` whose provision permits. A refusal (ZFA-9 IO), a consent not asked
/// yet (NA, `proposed`) or none known keep the document home.
fn consent(bundle: &Value, patient: &str) -> Result<(), String> {
    let feeding = entries(bundle).find(|r| {
        r["resourceType"] == "Consent"
            && r["patient"]["reference"].as_str() == Some(patient)
            && r["category"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["coding"].as_array().is_some_and(|cd| {
                        cd.iter()
                            .any(|x| x["system"] == CONSENT_SYSTEM && x["code"] == "feeding")
                    })
                })
            })
    });
    let Some(c) = feeding else {
        return Err(format!(
            "no DMP feeding consent is known for {patient} (ZFA-9): the document is not sent"
        ));
    };
    let id = c["id"].as_str().unwrap_or_default();
    match (c["status"].as_str(), c["provision"]["type"].as_str()) {
        (Some("active"), Some("permit")) => Ok(()),
        (Some("active"), Some("deny")) => Err(format!(
            "{patient} opposes the feeding of the DMP (Consent/{id}): the document is not sent"
        )),
        (status, _) => Err(format!(
            "the DMP feeding consent of {patient} is not given (Consent/{id} is {}): the document is not sent",
            status.unwrap_or("without status")
        )),
    }
}

fn entries(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
}

/// The CDA: the Binary the first attachment's url names, included in the change.
fn attachment(bundle: &Value, focus: &Value) -> Result<Vec<u8>, String> {
    let url = focus["content"][0]["attachment"]["url"]
        .as_str()
        .ok_or("the DocumentReference has no content.attachment.url")?;
    let (t, id) = change::local_target(url)
        .ok_or_else(|| format!("the attachment url `{url}` is not a Binary of the store"))?;
    let binary = entries(bundle)
        .find(|r| r["resourceType"] == t && r["id"] == id)
        .ok_or_else(|| {
            format!("{url} is not in the message (the channel must include content.attachment.url)")
        })?;
    base64::engine::general_purpose::STANDARD
        .decode(binary["data"].as_str().unwrap_or_default())
        .map_err(|e| format!("{url}: the data is not base64: {e}"))
}

/// The uniqueId of the document this one replaces: `relatesTo` (code replaces) by the
/// target's identifier, as the CDA mapping writes an II: `urn:oid:root` system and the
/// extension as value, or a root alone as an RFC 3986 `urn:oid:` value.
fn replaced(focus: &Value) -> Option<String> {
    focus["relatesTo"].as_array()?.iter().find_map(|r| {
        if r["code"] != "replaces" {
            return None;
        }
        let identifier = &r["target"]["identifier"];
        let system = identifier["system"].as_str()?;
        let value = identifier["value"].as_str()?;
        match system.strip_prefix("urn:oid:") {
            Some(root) => Some(format!("{root}^{value}")),
            None if system == "urn:ietf:rfc:3986" => {
                value.strip_prefix("urn:oid:").map(String::from)
            }
            None => None,
        }
    })
}
