//! The SOAP 1.2 side of ITI-41: the envelope (WS-Addressing, WS-Security with the DMP's
//! VIHF SAML assertion, the request body) and the reading of the repository's answer.

use super::metadata::{self, DocumentEntry, Submission};
use super::xml::Xml;

pub const ACTION: &str = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b";
pub const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const WSA: &str = "http://www.w3.org/2005/08/addressing";
pub const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
pub const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const XDSB: &str = "urn:ihe:iti:xds-b:2007";
pub const LCM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0";
pub const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
pub const RS: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0";
const XOP: &str = "http://www.w3.org/2004/08/xop/include";
const ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";

/// Who sends: what the VIHF built here says of the software.
pub struct Sender<'a> {
    /// The VIHF as delivered by the DMP's signing chain, inserted as it is; None: one is
    /// built unsigned from the document's author and structure (see [`vihf`]).
    pub assertion: Option<&'a str>,
    pub software: &'a str,
    pub software_version: &'a str,
    /// The DMP's homologation number of the software.
    pub homologation: &'a str,
}

/// The SOAP envelope; `document_cid` is the Content-ID of the document's MTOM part.
pub fn envelope(
    entry: &DocumentEntry,
    submission: &Submission,
    sender: &Sender,
    message_id: &str,
    to: &str,
    document_cid: &str,
) -> String {
    let mut x = Xml::new();
    x.open(
        "soap:Envelope",
        &[
            ("xmlns:soap", SOAP),
            ("xmlns:wsa", WSA),
            ("xmlns:wsse", WSSE),
            ("xmlns:saml2", SAML),
            ("xmlns:xdsb", XDSB),
            ("xmlns:lcm", LCM),
            ("xmlns:rim", RIM),
            ("xmlns:xop", XOP),
        ],
    );
    x.open("soap:Header", &[]);
    x.leaf("wsa:Action", &[("soap:mustUnderstand", "true")], ACTION);
    x.leaf("wsa:MessageID", &[], message_id);
    x.open("wsa:ReplyTo", &[])
        .leaf("wsa:Address", &[], ANONYMOUS)
        .close();
    x.leaf("wsa:To", &[("soap:mustUnderstand", "true")], to);
    x.open("wsse:Security", &[("soap:mustUnderstand", "true")]);
    match sender.assertion {
        Some(signed) => {
            x.raw(signed);
        }
        None => vihf(&mut x, entry, submission, sender),
    }
    x.close().close();
    x.open("soap:Body", &[]);
    x.open("xdsb:ProvideAndRegisterDocumentSetRequest", &[]);
    metadata::submit_objects(&mut x, entry, submission);
    let document = metadata::entry_uuid(&entry.unique_id);
    x.open("xdsb:Document", &[("id", &document)])
        .empty("xop:Include", &[("href", &format!("cid:{document_cid}"))])
        .close();
    x.finish()
}

/// The VIHF (the DMP's SAML 2.0 identification token, version 3.0) for the document's
/// author acting for its structure, in the indirect mode of a hospital system.
///
/// It is NOT signed: the DMP requires the assertion to be signed with the structure's
/// IGC Santé certificate. Until the real certificates are installed, a signed assertion is
/// given as a file (`assertion:`), or this unsigned one serves the test platforms that
/// accept it.
fn vihf(x: &mut Xml, entry: &DocumentEntry, s: &Submission, sender: &Sender) {
    let instant = iso_instant(s.submission_time);
    let subject = entry.author.person.split('^').next().unwrap_or_default();
    let structure = entry
        .author
        .institution
        .as_deref()
        .and_then(|i| i.rsplit('^').next())
        .unwrap_or_default();
    x.open(
        "saml2:Assertion",
        &[
            (
                "ID",
                &format!(
                    "_{}",
                    super::name_uuid(&format!("vihf|{}", s.unique_id))
                        .trim_start_matches("urn:uuid:")
                ),
            ),
            ("IssueInstant", &instant),
            ("Version", "2.0"),
        ],
    );
    x.leaf("saml2:Issuer", &[], sender.software);
    x.open("saml2:Subject", &[]);
    x.leaf(
        "saml2:NameID",
        &[(
            "Format",
            "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
        )],
        subject,
    );
    x.empty(
        "saml2:SubjectConfirmation",
        &[("Method", "urn:oasis:names:tc:SAML:2.0:cm:sender-vouches")],
    );
    x.close();
    x.open("saml2:AuthnStatement", &[("AuthnInstant", &instant)])
        .open("saml2:AuthnContext", &[])
        .leaf(
            "saml2:AuthnContextClassRef",
            &[],
            "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient",
        )
        .close()
        .close();
    x.open("saml2:AttributeStatement", &[]);
    let facility = format!(
        "{}^{}",
        entry.facility_type.code, entry.facility_type.scheme
    );
    let attributes: [(&str, &str); 9] = [
        ("VIHF_Version", "3.0"),
        ("Identifiant_Structure", structure),
        ("Secteur_Activite", &facility),
        ("urn:oasis:names:tc:xspa:1.0:subject:subject-id", subject),
        (
            "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
            &entry.patient_id,
        ),
        ("Authentification_Mode", "INDIRECT"),
        ("LPS_Nom", sender.software),
        ("LPS_Version", sender.software_version),
        ("LPS_ID_HOMOLOGATION_DMP", sender.homologation),
    ];
    for (name, value) in attributes {
        x.open("saml2:Attribute", &[("Name", name)])
            .leaf("saml2:AttributeValue", &[], value)
            .close();
    }
    x.close().close();
}

/// The first SOAP element `name` under `parent`.
fn under<'a, 'i>(parent: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    parent
        .descendants()
        .find(|n| n.tag_name().namespace() == Some(SOAP) && n.tag_name().name() == name)
}

/// `YYYYMMDDHHMMSS` (UTC) as an xs:dateTime.
fn iso_instant(ts: &str) -> String {
    let d = |a: usize, b: usize| ts.get(a..b).unwrap_or("00");
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        d(0, 4),
        d(4, 6),
        d(6, 8),
        d(8, 10),
        d(10, 12),
        d(12, 14)
    )
}

/// What the repository's answer means for the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Registered; the note for the trace.
    Success(String),
    /// Worth sending again later (the repository or registry could not take it now).
    Retry(String),
    /// Refused for what the request says: sending it again gives the same answer.
    Permanent(String),
}

/// Registry error codes that say "not now" (ITI TF-3 Table 4.2.4.1-2): retried.
const TRANSIENT: [&str; 5] = [
    "XDSRepositoryError",
    "XDSRegistryError",
    "XDSRegistryBusy",
    "XDSRepositoryBusy",
    "XDSRegistryOutOfResources",
];

/// Reads the repository's HTTP answer: a RegistryResponse, a SOAP fault, or neither.
pub fn classify(status: u16, content_type: &str, body: &[u8]) -> Outcome {
    let xml = super::mtom::root_part(content_type, body)
        .ok()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| roxmltree::Document::parse(t).ok());
    let Some(doc) = xml else {
        let why = format!("HTTP {status}: the answer is not a SOAP message");
        return if status >= 500 || status == 408 || status == 429 || status < 300 {
            Outcome::Retry(why)
        } else {
            Outcome::Permanent(why)
        };
    };
    let element = |ns: &str, name: &str| {
        doc.descendants()
            .find(|n| n.tag_name().namespace() == Some(ns) && n.tag_name().name() == name)
    };
    if let Some(fault) = element(SOAP, "Fault") {
        let code = under(fault, "Code")
            .and_then(|c| under(c, "Value"))
            .and_then(|v| v.text())
            .unwrap_or_default()
            .trim()
            .to_string();
        let reason = under(fault, "Reason")
            .and_then(|r| under(r, "Text"))
            .and_then(|t| t.text())
            .unwrap_or_default()
            .trim()
            .to_string();
        let why = format!("SOAP fault {code}: {reason}");
        // Receiver: the service failed; Sender (and version or header faults): the request.
        return if code.ends_with("Receiver") {
            Outcome::Retry(why)
        } else {
            Outcome::Permanent(why)
        };
    }
    let Some(response) = element(RS, "RegistryResponse") else {
        return Outcome::Retry(format!("HTTP {status}: no RegistryResponse in the answer"));
    };
    let status_value = response.attribute("status").unwrap_or_default();
    let short = status_value.rsplit(':').next().unwrap_or_default();
    let errors: Vec<(String, String, bool)> = response
        .descendants()
        .filter(|n| n.tag_name().namespace() == Some(RS) && n.tag_name().name() == "RegistryError")
        .map(|e| {
            let severity = e.attribute("severity").unwrap_or_default();
            (
                e.attribute("errorCode").unwrap_or_default().to_string(),
                e.attribute("codeContext").unwrap_or_default().to_string(),
                severity.ends_with("Warning"),
            )
        })
        .collect();
    let said = errors
        .iter()
        .map(|(code, context, _)| format!("{code}: {context}"))
        .collect::<Vec<_>>()
        .join("; ");
    if short == "Success" {
        return Outcome::Success(if said.is_empty() {
            "Success".into()
        } else {
            format!("Success ({said})")
        });
    }
    let failing: Vec<&(String, String, bool)> = errors.iter().filter(|e| !e.2).collect();
    let why = format!("{short}: {said}");
    if failing.is_empty() {
        return Outcome::Retry(format!("{short} without a RegistryError"));
    }
    // One error of the request itself is enough: a new attempt would meet it again.
    if failing
        .iter()
        .all(|(code, ..)| TRANSIENT.contains(&code.as_str()))
    {
        Outcome::Retry(why)
    } else {
        Outcome::Permanent(why)
    }
}
