//! IHE XDM (ITI-32, IHE ITI TF-3 §4.2 and TF-2 §3.32): documents and their XDS metadata laid
//! out as a file system and zipped, the attachment `IHE_XDM.zip` that MSSanté mail carries.
//!
//! ```text
//! README.TXT                      who made the package
//! INDEX.HTM                       a page linking every file, for a reader without software
//! IHE_XDM/SUBSET01/METADATA.XML   ebRIM 3.0 SubmitObjectsRequest: SubmissionSet + DocumentEntries
//! IHE_XDM/SUBSET01/DOC0001.XML    the documents, named by each entry's `URI` slot
//! ```
//!
//! The metadata is the XDS one (the same slots, classifications and identifiers an ITI-41
//! submission carries), so [`DocumentEntry`] and [`SubmissionSet`] say nothing of mail.

use std::io::{Cursor, Write};

use sha1::{Digest, Sha1};

/// A coded value: the code, its coding scheme (an OID where there is one) and its display.
pub use super::xds::metadata::Code;
/// Text or attribute value, XML-escaped.
pub use super::xds::xml::escape;

/// XDS author: `authorPerson` (XCN), `authorInstitution` (XON), roles, specialties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Author {
    pub person: Option<String>,
    pub institutions: Vec<String>,
    pub roles: Vec<String>,
    pub specialties: Vec<String>,
}

/// One document and its XDS DocumentEntry metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocumentEntry {
    /// `XDSDocumentEntry.uniqueId`: the CDA's `id` as `root^extension` (or `root`).
    pub unique_id: String,
    pub title: String,
    pub mime_type: String,
    /// UTC, `YYYYMMDDHHMMSS` (or shorter, as precise as known).
    pub creation_time: Option<String>,
    pub service_start_time: Option<String>,
    pub service_stop_time: Option<String>,
    pub language: Option<String>,
    /// `XDSDocumentEntry.patientId` (CX): the INS `value^^^&1.2.250.1.213.1.4.8&ISO^NH`.
    pub patient_id: String,
    /// The patient's identifier in the sending facility (CX).
    pub source_patient_id: Option<String>,
    /// `PID-3|...`, `PID-5|...`, `PID-7|...`, `PID-8|...` lines.
    pub source_patient_info: Vec<String>,
    pub class_code: Option<Code>,
    pub type_code: Option<Code>,
    pub format_code: Option<Code>,
    pub confidentiality: Vec<Code>,
    pub facility_type: Option<Code>,
    pub practice_setting: Option<Code>,
    pub event_codes: Vec<Code>,
    pub authors: Vec<Author>,
    pub legal_authenticator: Option<String>,
    /// The document's bytes: their SHA-1 and size are the entry's `hash` and `size`.
    pub content: Vec<u8>,
}

/// The SubmissionSet: who sent the package, when, to whom.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubmissionSet {
    /// An OID unique to this submission.
    pub unique_id: String,
    /// The OID of the sending system.
    pub source_id: String,
    /// UTC `YYYYMMDDHHMMSS`.
    pub submission_time: String,
    pub title: String,
    pub authors: Vec<Author>,
    /// `intendedRecipient` (XON|XCN|XTN): `||^^Internet^someone@example.org` for a mailbox.
    pub intended_recipients: Vec<String>,
    pub content_type: Option<Code>,
    /// Seeds the `urn:uuid:` ids of the metadata, so that the same submission gets the same.
    pub seed: String,
}

/// The document's file name in the subset, as the `URI` slot gives it.
pub fn document_name(index: usize, mime_type: &str) -> String {
    let extension = match mime_type {
        "text/xml" | "application/xml" | "application/hl7-cda+xml" => "XML",
        "application/pdf" => "PDF",
        "text/plain" => "TXT",
        _ => "BIN",
    };
    format!("DOC{:04}.{extension}", index + 1)
}

pub const METADATA_PATH: &str = "IHE_XDM/SUBSET01/METADATA.XML";
const SUBSET: &str = "IHE_XDM/SUBSET01/";

/// The zip: README.TXT, INDEX.HTM, the metadata and the documents. `modified` is the time
/// stamped on each file (the submission's, so the same submission makes the same bytes):
/// `(year, month, day, hour, minute, second)`.
pub fn package(
    set: &SubmissionSet,
    entries: &[DocumentEntry],
    readme: &str,
    modified: (u16, u8, u8, u8, u8, u8),
) -> Result<Vec<u8>, String> {
    let metadata = metadata(set, entries);
    let mut files: Vec<(String, &[u8])> = vec![
        ("README.TXT".into(), readme.as_bytes()),
        ("INDEX.HTM".into(), &[]),
        (METADATA_PATH.into(), metadata.as_bytes()),
    ];
    for (i, e) in entries.iter().enumerate() {
        files.push((
            format!("{SUBSET}{}", document_name(i, &e.mime_type)),
            &e.content,
        ));
    }
    let index = index_page(set, entries);
    files[1].1 = index.as_bytes();

    let (y, mo, d, h, mi, s) = modified;
    let time =
        zip::DateTime::from_date_and_time(y.clamp(1980, 2107), mo, d, h, mi, s).unwrap_or_default();
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(time);
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in files {
        zip.start_file(name.as_str(), options)
            .map_err(|e| format!("XDM package: {e}"))?;
        zip.write_all(bytes)
            .map_err(|e| format!("XDM package: {e}"))?;
    }
    let out = zip.finish().map_err(|e| format!("XDM package: {e}"))?;
    Ok(out.into_inner())
}

/// INDEX.HTM: a plain page that names the submission and links each file.
fn index_page(set: &SubmissionSet, entries: &[DocumentEntry]) -> String {
    let mut links = String::new();
    for (i, e) in entries.iter().enumerate() {
        let name = document_name(i, &e.mime_type);
        links.push_str(&format!(
            "<li><a href=\"{SUBSET}{name}\">{}</a> ({})</li>\n",
            escape(&e.title),
            escape(&e.mime_type)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body>\n\
         <h1>{title}</h1>\n<ul>\n{links}<li><a href=\"{METADATA_PATH}\">METADATA.XML</a></li>\n\
         <li><a href=\"README.TXT\">README.TXT</a></li>\n</ul>\n</body></html>\n",
        title = escape(&set.title),
    )
}

const RIM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0";
const LCM: &str = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0";
const DOCUMENT_ENTRY: &str = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1";
const SUBMISSION_SET: &str = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd";
const CLASSIFICATION: &str =
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification";
const EXTERNAL_IDENTIFIER: &str =
    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier";
const APPROVED: &str = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved";

/// The classification schemes and identification schemes of ITI TF-3 §4.2.5.
mod scheme {
    pub const CLASS: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
    pub const CONFIDENTIALITY: &str = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f";
    pub const EVENT: &str = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4";
    pub const FORMAT: &str = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d";
    pub const FACILITY: &str = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1";
    pub const PRACTICE: &str = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead";
    pub const TYPE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
    pub const DOC_AUTHOR: &str = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d";
    pub const DOC_PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
    pub const DOC_UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";
    pub const SET_AUTHOR: &str = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d";
    pub const SET_CONTENT_TYPE: &str = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500";
    pub const SET_PATIENT_ID: &str = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446";
    pub const SET_SOURCE_ID: &str = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832";
    pub const SET_UNIQUE_ID: &str = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8";
}

/// SHA-1 of the document, lowercase hex, as the `hash` slot holds it.
pub fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `urn:uuid:` from a seed: the same seed, the same id (a retry, a restart).
pub fn uuid_from(seed: &str) -> String {
    super::xds::name_uuid(seed)
}

/// An OID under `2.25` (ITU-T X.667: a UUID as one decimal arc) from a seed.
pub fn oid_from(seed: &str) -> String {
    super::xds::name_oid(seed)
}

/// METADATA.XML: the SubmitObjectsRequest with the SubmissionSet, one ExtrinsicObject per
/// document and the HasMember associations between them.
pub fn metadata(set: &SubmissionSet, entries: &[DocumentEntry]) -> String {
    let mut x = Xml::default();
    x.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.raw(&format!(
        "<lcm:SubmitObjectsRequest xmlns:lcm=\"{LCM}\" xmlns:rim=\"{RIM}\">\n<rim:RegistryObjectList>\n"
    ));
    let set_id = uuid_from(&format!("{}/SubmissionSet", set.seed));
    let patient = entries.first().map(|e| e.patient_id.as_str()).unwrap_or("");
    let mut ids = Ids::new(&set.seed);

    // The documents.
    let mut doc_ids = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let id = uuid_from(&format!("{}/DocumentEntry/{i}", set.seed));
        x.raw(&format!(
            "<rim:ExtrinsicObject id=\"{id}\" mimeType=\"{}\" objectType=\"{DOCUMENT_ENTRY}\" status=\"{APPROVED}\">\n",
            attr(&e.mime_type)
        ));
        if let Some(t) = &e.creation_time {
            x.slot("creationTime", [t.as_str()]);
        }
        x.slot("hash", [sha1_hex(&e.content).as_str()]);
        if let Some(l) = &e.language {
            x.slot("languageCode", [l.as_str()]);
        }
        if let Some(l) = &e.legal_authenticator {
            x.slot("legalAuthenticator", [l.as_str()]);
        }
        if let Some(t) = &e.service_start_time {
            x.slot("serviceStartTime", [t.as_str()]);
        }
        if let Some(t) = &e.service_stop_time {
            x.slot("serviceStopTime", [t.as_str()]);
        }
        x.slot("size", [e.content.len().to_string().as_str()]);
        if let Some(s) = &e.source_patient_id {
            x.slot("sourcePatientId", [s.as_str()]);
        }
        if !e.source_patient_info.is_empty() {
            x.slot(
                "sourcePatientInfo",
                e.source_patient_info.iter().map(String::as_str),
            );
        }
        x.slot("URI", [document_name(i, &e.mime_type).as_str()]);
        x.name(&e.title);
        for a in &e.authors {
            x.author(&mut ids, scheme::DOC_AUTHOR, &id, a);
        }
        let codes = [
            (scheme::CLASS, e.class_code.iter().collect::<Vec<_>>()),
            (scheme::CONFIDENTIALITY, e.confidentiality.iter().collect()),
            (scheme::EVENT, e.event_codes.iter().collect()),
            (scheme::FORMAT, e.format_code.iter().collect()),
            (scheme::FACILITY, e.facility_type.iter().collect()),
            (scheme::PRACTICE, e.practice_setting.iter().collect()),
            (scheme::TYPE, e.type_code.iter().collect()),
        ];
        for (scheme, list) in codes {
            for code in list {
                x.code(&mut ids, scheme, &id, code);
            }
        }
        x.external(
            &mut ids,
            scheme::DOC_PATIENT_ID,
            &id,
            &e.patient_id,
            "XDSDocumentEntry.patientId",
        );
        x.external(
            &mut ids,
            scheme::DOC_UNIQUE_ID,
            &id,
            &e.unique_id,
            "XDSDocumentEntry.uniqueId",
        );
        x.raw("</rim:ExtrinsicObject>\n");
        doc_ids.push(id);
    }

    // The submission set.
    x.raw(&format!(
        "<rim:RegistryPackage id=\"{set_id}\" objectType=\"urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage\" status=\"{APPROVED}\">\n"
    ));
    x.slot("submissionTime", [set.submission_time.as_str()]);
    if !set.intended_recipients.is_empty() {
        x.slot(
            "intendedRecipient",
            set.intended_recipients.iter().map(String::as_str),
        );
    }
    x.name(&set.title);
    for a in &set.authors {
        x.author(&mut ids, scheme::SET_AUTHOR, &set_id, a);
    }
    if let Some(c) = &set.content_type {
        x.code(&mut ids, scheme::SET_CONTENT_TYPE, &set_id, c);
    }
    x.external(
        &mut ids,
        scheme::SET_UNIQUE_ID,
        &set_id,
        &set.unique_id,
        "XDSSubmissionSet.uniqueId",
    );
    x.external(
        &mut ids,
        scheme::SET_SOURCE_ID,
        &set_id,
        &set.source_id,
        "XDSSubmissionSet.sourceId",
    );
    x.external(
        &mut ids,
        scheme::SET_PATIENT_ID,
        &set_id,
        patient,
        "XDSSubmissionSet.patientId",
    );
    x.raw("</rim:RegistryPackage>\n");
    x.raw(&format!(
        "<rim:Classification id=\"{}\" classifiedObject=\"{set_id}\" classificationNode=\"{SUBMISSION_SET}\" objectType=\"{CLASSIFICATION}\"/>\n",
        ids.next()
    ));
    for doc in doc_ids {
        x.raw(&format!(
            "<rim:Association id=\"{}\" associationType=\"urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember\" sourceObject=\"{set_id}\" targetObject=\"{doc}\" objectType=\"urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association\">\n",
            ids.next()
        ));
        x.slot("SubmissionSetStatus", ["Original"]);
        x.raw("</rim:Association>\n");
    }
    x.raw("</rim:RegistryObjectList>\n</lcm:SubmitObjectsRequest>\n");
    x.0
}

/// The ids of the metadata's other objects, numbered from the submission's seed.
struct Ids {
    seed: String,
    n: usize,
}

impl Ids {
    fn new(seed: &str) -> Self {
        Self {
            seed: seed.to_string(),
            n: 0,
        }
    }

    fn next(&mut self) -> String {
        self.n += 1;
        uuid_from(&format!("{}/object/{}", self.seed, self.n))
    }
}

#[derive(Default)]
struct Xml(String);

impl Xml {
    fn raw(&mut self, s: &str) {
        self.0.push_str(s);
    }

    fn slot<'v>(&mut self, name: &str, values: impl IntoIterator<Item = &'v str>) {
        self.0.push_str(&format!(
            "<rim:Slot name=\"{}\"><rim:ValueList>",
            attr(name)
        ));
        for v in values {
            self.0
                .push_str(&format!("<rim:Value>{}</rim:Value>", escape(v)));
        }
        self.0.push_str("</rim:ValueList></rim:Slot>\n");
    }

    fn name(&mut self, text: &str) {
        if !text.is_empty() {
            self.0.push_str(&format!(
                "<rim:Name><rim:LocalizedString value=\"{}\"/></rim:Name>\n",
                attr(text)
            ));
        }
    }

    fn code(&mut self, ids: &mut Ids, scheme: &str, object: &str, code: &Code) {
        self.0.push_str(&format!(
            "<rim:Classification id=\"{}\" classificationScheme=\"{scheme}\" classifiedObject=\"{object}\" nodeRepresentation=\"{}\" objectType=\"{CLASSIFICATION}\">\n",
            ids.next(),
            attr(&code.code)
        ));
        self.slot("codingScheme", [code.scheme.as_str()]);
        self.name(&code.display);
        self.0.push_str("</rim:Classification>\n");
    }

    fn author(&mut self, ids: &mut Ids, scheme: &str, object: &str, a: &Author) {
        self.0.push_str(&format!(
            "<rim:Classification id=\"{}\" classificationScheme=\"{scheme}\" classifiedObject=\"{object}\" nodeRepresentation=\"\" objectType=\"{CLASSIFICATION}\">\n",
            ids.next()
        ));
        if let Some(p) = &a.person {
            self.slot("authorPerson", [p.as_str()]);
        }
        if !a.institutions.is_empty() {
            self.slot(
                "authorInstitution",
                a.institutions.iter().map(String::as_str),
            );
        }
        if !a.roles.is_empty() {
            self.slot("authorRole", a.roles.iter().map(String::as_str));
        }
        if !a.specialties.is_empty() {
            self.slot("authorSpecialty", a.specialties.iter().map(String::as_str));
        }
        self.0.push_str("</rim:Classification>\n");
    }

    fn external(&mut self, ids: &mut Ids, scheme: &str, object: &str, value: &str, name: &str) {
        self.0.push_str(&format!(
            "<rim:ExternalIdentifier id=\"{}\" identificationScheme=\"{scheme}\" registryObject=\"{object}\" value=\"{}\" objectType=\"{EXTERNAL_IDENTIFIER}\">\n",
            ids.next(),
            attr(value)
        ));
        self.name(name);
        self.0.push_str("</rim:ExternalIdentifier>\n");
    }
}

/// Text for an attribute value: line breaks kept as character references.
fn attr(text: &str) -> String {
    escape(text).replace('\n', "&#10;").replace('\r', "&#13;")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn entry() -> DocumentEntry {
        DocumentEntry {
            unique_id: "1.2.250.1.213.1.1.1.55.2024.9.1".into(),
            title: "Compte rendu d'examens biologiques & <TSH>".into(),
            mime_type: "text/xml".into(),
            creation_time: Some("20210401161000".into()),
            patient_id: "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH".into(),
            source_patient_info: vec!["PID-5|NOM^Prenom^^^^^L".into(), "PID-8|F".into()],
            class_code: Some(Code {
                code: "10".into(),
                scheme: "1.2.250.1.213.1.1.4.1".into(),
                display: "Compte rendu".into(),
            }),
            type_code: Some(Code {
                code: "11502-2".into(),
                scheme: "2.16.840.1.113883.6.1".into(),
                display: "CR d'examens biologiques".into(),
            }),
            confidentiality: vec![Code {
                code: "N".into(),
                scheme: "2.16.840.1.113883.5.25".into(),
                display: "Normal".into(),
            }],
            authors: vec![Author {
                person: Some(
                    "801234567890^MEDECIN^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS".into(),
                ),
                ..Author::default()
            }],
            content: b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"/>".to_vec(),
            ..DocumentEntry::default()
        }
    }

    fn set() -> SubmissionSet {
        SubmissionSet {
            unique_id: oid_from("s"),
            source_id: "1.2.250.1.999.1".into(),
            submission_time: "20240101120000".into(),
            title: "Envoi".into(),
            intended_recipients: vec!["||^^Internet^dr@test.mssante.fr".into()],
            seed: "Communication/c1/_history/1".into(),
            ..SubmissionSet::default()
        }
    }

    /// The slot values of the element with this id (a crude reader is enough for a test:
    /// roxmltree checks the XML is well-formed).
    fn slot<'a>(doc: &'a roxmltree::Document, name: &str) -> Vec<&'a str> {
        doc.descendants()
            .filter(|n| n.has_tag_name((RIM, "Slot")) && n.attribute("name") == Some(name))
            .flat_map(|s| s.descendants().filter(|n| n.has_tag_name((RIM, "Value"))))
            .filter_map(|v| v.text())
            .collect()
    }

    #[test]
    fn the_package_has_the_xdm_layout_and_its_metadata_matches_the_document() {
        let e = entry();
        let zip = package(
            &set(),
            std::slice::from_ref(&e),
            "made by test",
            (2024, 1, 1, 12, 0, 0),
        )
        .unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
        let names: Vec<String> = archive
            .file_names()
            .map(|n| n.unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "README.TXT",
                "INDEX.HTM",
                "IHE_XDM/SUBSET01/METADATA.XML",
                "IHE_XDM/SUBSET01/DOC0001.XML"
            ]
        );
        let mut read = |name: &str| {
            let mut text = String::new();
            archive
                .by_name(name)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        };
        assert_eq!(read("IHE_XDM/SUBSET01/DOC0001.XML").as_bytes(), e.content);
        assert!(read("INDEX.HTM").contains("href=\"IHE_XDM/SUBSET01/DOC0001.XML\""));
        let xml = read(METADATA_PATH);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        assert_eq!(doc.root_element().tag_name().namespace(), Some(LCM));
        assert_eq!(slot(&doc, "hash"), [sha1_hex(&e.content)]);
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(slot(&doc, "size"), [e.content.len().to_string()]);
        assert_eq!(slot(&doc, "URI"), ["DOC0001.XML"]);
        assert_eq!(
            slot(&doc, "sourcePatientInfo"),
            ["PID-5|NOM^Prenom^^^^^L", "PID-8|F"]
        );
        assert_eq!(
            slot(&doc, "intendedRecipient"),
            ["||^^Internet^dr@test.mssante.fr"]
        );
        let external = |scheme: &str| {
            doc.descendants()
                .filter(|n| n.attribute("identificationScheme") == Some(scheme))
                .filter_map(|n| n.attribute("value"))
                .collect::<Vec<_>>()
        };
        assert_eq!(external(scheme::DOC_UNIQUE_ID), [e.unique_id.as_str()]);
        assert_eq!(external(scheme::DOC_PATIENT_ID), [e.patient_id.as_str()]);
        assert_eq!(external(scheme::SET_PATIENT_ID), [e.patient_id.as_str()]);
        let code = |scheme: &str| {
            doc.descendants()
                .filter(|n| n.attribute("classificationScheme") == Some(scheme))
                .filter_map(|n| n.attribute("nodeRepresentation"))
                .collect::<Vec<_>>()
        };
        assert_eq!(code(scheme::TYPE), ["11502-2"]);
        assert_eq!(code(scheme::CLASS), ["10"]);
        assert_eq!(code(scheme::CONFIDENTIALITY), ["N"]);
        assert!(code(scheme::FORMAT).is_empty());
        // The title's markup is escaped, not interpreted.
        let names: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name((RIM, "LocalizedString")))
            .filter_map(|n| n.attribute("value"))
            .collect();
        assert!(names.contains(&e.title.as_str()), "{names:?}");
        // One HasMember from the set to the document, and every id distinct.
        let ids: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("id"))
            .collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(ids.len(), unique.len());
        assert_eq!(
            doc.descendants()
                .filter(|n| n.has_tag_name((RIM, "Association")))
                .count(),
            1
        );
    }

    #[test]
    fn the_same_submission_makes_the_same_bytes() {
        let a = package(&set(), &[entry()], "r", (2024, 1, 1, 12, 0, 0)).unwrap();
        let b = package(&set(), &[entry()], "r", (2024, 1, 1, 12, 0, 0)).unwrap();
        assert_eq!(a, b);
        assert!(uuid_from("x").starts_with("urn:uuid:") && uuid_from("x") != uuid_from("y"));
        assert!(oid_from("x").starts_with("2.25."));
    }
}
