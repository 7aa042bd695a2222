//! The XDS metadata of a CI-SIS CDA document (IHE ITI TF-3 4.2, with the DMP's value sets)
//! and the ebRIM `SubmitObjectsRequest` that registers it: one SubmissionSet, one
//! DocumentEntry, the HasMember association between them and, for a new version of a
//! document, the RPLC association to the DocumentEntry it replaces.
//!
//! Everything is read from the document's own header (the store keeps the CDA as received):
//! the registry checks the metadata against the document, so they must come from it.

use roxmltree::Node;

use super::xml::Xml;
use crate::channel::national_ids::INS_OIDS;

/// Classification schemes and external identifiers of ITI TF-3 4.2.5 (Table 4.2.5-1).
pub mod scheme {
    pub const DOCUMENT_ENTRY: &str = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1";
    pub const DE_AUTHOR: &str = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d";
    pub const DE_CLASS_CODE: &str = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a";
    pub const DE_CONFIDENTIALITY: &str = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f";
    pub const DE_FORMAT_CODE: &str = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d";
    pub const DE_FACILITY_TYPE: &str = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1";
    pub const DE_PRACTICE_SETTING: &str = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead";
    pub const DE_TYPE_CODE: &str = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983";
    pub const DE_PATIENT_ID: &str = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427";
    pub const DE_UNIQUE_ID: &str = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab";
    pub const SUBMISSION_SET: &str = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd";
    pub const SS_AUTHOR: &str = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d";
    pub const SS_CONTENT_TYPE: &str = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500";
    pub const SS_PATIENT_ID: &str = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446";
    pub const SS_SOURCE_ID: &str = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832";
    pub const SS_UNIQUE_ID: &str = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8";
    pub const CLASSIFICATION: &str =
        "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification";
    pub const HAS_MEMBER: &str = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember";
    pub const RPLC: &str = "urn:ihe:iti:2007:AssociationType:RPLC";
}

const CDA: &str = "urn:hl7-org:v3";
const CLASS_SCHEME: &str = "1.2.250.1.213.1.1.4.1";

/// A coded value as XDS writes it: code, coding scheme (an OID) and display name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Code {
    pub code: String,
    pub scheme: String,
    pub display: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Author {
    /// authorPerson, XCN.
    pub person: String,
    /// authorInstitution, XON.
    pub institution: Option<String>,
    /// authorRole and authorSpecialty: the CDA author's functionCode and code.
    pub role: Option<String>,
    pub specialty: Option<String>,
}

/// What the registry is told about the document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocumentEntry {
    /// ClinicalDocument/id as `root^extension` (or `root`).
    pub unique_id: String,
    /// `INS^^^&OID&ISO^NH`.
    pub patient_id: String,
    /// The INS alone, for the VIHF's resource id.
    pub ins: String,
    /// PID-3, PID-5, PID-7, PID-8 values.
    pub source_patient_info: Vec<String>,
    pub author: Author,
    pub class_code: Code,
    pub type_code: Code,
    pub format_code: Code,
    pub confidentiality: Vec<Code>,
    pub facility_type: Code,
    pub practice_setting: Code,
    pub language: String,
    pub creation_time: String,
    pub service_start: Option<String>,
    pub service_stop: Option<String>,
    pub title: String,
    /// uniqueId of the document this version replaces (relatedDocument RPLC).
    pub replaces: Option<String>,
    pub hash: String,
    pub size: usize,
}

/// Reads the metadata from a CDA's header; `hash`/`size` are the document's bytes'.
pub fn read(document: &[u8]) -> Result<DocumentEntry, String> {
    let source = std::str::from_utf8(document).map_err(|_| "the CDA is not UTF-8".to_string())?;
    let doc = roxmltree::Document::parse_with_options(
        source,
        roxmltree::ParsingOptions {
            allow_dtd: false,
            ..Default::default()
        },
    )
    .map_err(|e| format!("the CDA is not well-formed XML: {e}"))?;
    let root = doc.root_element();
    if !is(root, "ClinicalDocument") {
        return Err(format!(
            "the document is a `{}`, not a CDA ClinicalDocument",
            root.tag_name().name()
        ));
    }
    let need = |path: &[&'static str], what: &str| {
        find(root, path).ok_or_else(|| format!("the CDA header has no {what}"))
    };
    let unique_id =
        instance_id(need(&["id"], "id")?).ok_or("the CDA's ClinicalDocument/id has no root")?;
    let patient = need(&["recordTarget", "patientRole"], "recordTarget/patientRole")?;
    let ins = children(patient, "id")
        .find(|id| INS_OIDS.contains(&id.attribute("root").unwrap_or_default()))
        .ok_or("the patient has no INS (recordTarget/patientRole/id with an INS root): the DMP files documents under the INS")?;
    let (ins_value, ins_root) = (
        ins.attribute("extension").unwrap_or_default(),
        ins.attribute("root").unwrap_or_default(),
    );
    if ins_value.is_empty() {
        return Err("the patient's INS has no extension".into());
    }
    let patient_id = format!("{}^^^&{ins_root}&ISO^NH", cx_escape(ins_value));
    let mut pid3: Vec<String> = children(patient, "id")
        .filter_map(|id| {
            let value = id.attribute("extension")?;
            let root = id.attribute("root")?;
            let kind = if INS_OIDS.contains(&root) { "NH" } else { "PI" };
            Some(format!("PID-3|{}^^^&{root}&ISO^{kind}", cx_escape(value)))
        })
        .collect();
    let person = find(patient, &["patient"]);
    if let Some(p) = person {
        if let Some(name) = child(p, "name") {
            pid3.push(format!("PID-5|{}", xpn(name)));
        }
        if let Some(birth) = child(p, "birthTime").and_then(|b| b.attribute("value")) {
            pid3.push(format!("PID-7|{}", &birth[..birth.len().min(8)]));
        }
        if let Some(sex) = child(p, "administrativeGenderCode").and_then(|g| g.attribute("code")) {
            pid3.push(format!("PID-8|{sex}"));
        }
    }
    let type_code = code(need(&["code"], "code")?).ok_or("the CDA's code has no @code")?;
    let confidentiality: Vec<Code> = children(root, "confidentialityCode")
        .filter_map(code)
        .collect();
    if confidentiality.is_empty() {
        return Err("the CDA header has no confidentialityCode".into());
    }
    let creation_time = utc(need(&["effectiveTime"], "effectiveTime")?
        .attribute("value")
        .unwrap_or_default())
    .ok_or("the CDA's effectiveTime is not a date-time")?;
    let event = find(root, &["documentationOf", "serviceEvent"]);
    let period = event.and_then(|e| child(e, "effectiveTime"));
    let bound = |name: &str| {
        period
            .and_then(|p| child(p, name))
            .and_then(|b| b.attribute("value"))
            .and_then(utc)
    };
    let facility_type = find(
        root,
        &[
            "componentOf",
            "encompassingEncounter",
            "location",
            "healthCareFacility",
            "code",
        ],
    )
    .and_then(code)
    .ok_or(
        "the CDA header has no healthCareFacility/code (the DMP's healthcareFacilityTypeCode)",
    )?;
    let practice_setting = event
        .and_then(|e| {
            children(e, "performer")
                .filter_map(|p| {
                    find(p, &["assignedEntity", "representedOrganization", "standardIndustryClassCode"])
                })
                .find_map(code)
        })
        .ok_or("the CDA header has no serviceEvent performer's standardIndustryClassCode (the DMP's practiceSettingCode)")?;
    let author = author(need(
        &["author", "assignedAuthor"],
        "author/assignedAuthor",
    )?)?;
    let replaces = children(root, "relatedDocument")
        .filter(|r| r.attribute("typeCode") == Some("RPLC"))
        .find_map(|r| find(r, &["parentDocument", "id"]).and_then(instance_id));
    let templates: Vec<&str> = children(root, "templateId")
        .filter_map(|t| t.attribute("root"))
        .collect();
    use sha1::Digest;
    let hash = sha1::Sha1::digest(document)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(DocumentEntry {
        unique_id,
        patient_id,
        ins: ins_value.to_string(),
        source_patient_info: pid3,
        author,
        class_code: class_code(&type_code.code),
        format_code: format_code(&templates),
        type_code,
        confidentiality,
        facility_type,
        practice_setting,
        language: child(root, "languageCode")
            .and_then(|l| l.attribute("code"))
            .unwrap_or("fr-FR")
            .to_string(),
        creation_time,
        service_start: bound("low"),
        service_stop: bound("high"),
        title: child(root, "title").map(text).unwrap_or_default(),
        replaces,
        hash,
        size: document.len(),
    })
}

/// The DMP's classCode (JDV XdsClassCode-CISIS) of a document type (LOINC): reports unless
/// the type is known to be a synthesis, imaging, prescription, dispensing or care plan.
fn class_code(type_code: &str) -> Code {
    let (code, display) = match type_code {
        "60591-5" | "34133-9" => ("11", "Synthèse"),
        "18748-4" | "85430-7" => ("31", "Imagerie médicale"),
        "57833-6" => ("42", "Prescription"),
        "60593-1" => ("43", "Dispensation"),
        "18776-5" => ("44", "Plan de soins, protocole de soins"),
        _ => ("10", "Compte rendu"),
    };
    Code {
        code: code.into(),
        scheme: CLASS_SCHEME.into(),
        display: display.into(),
    }
}

/// The formatCode of the CI-SIS volet a document declares (its templateIds); a document
/// of a volet not listed is sent as a CI-SIS CDA of minimal structure.
fn format_code(templates: &[&str]) -> Code {
    const VOLETS: [(&str, &str, &str); 6] = [
        (
            "1.2.250.1.213.1.1.1.55",
            "urn:ihe:lab:xd-lab:2008",
            "CR d'examens biologiques",
        ),
        (
            "1.2.250.1.213.1.1.1.13",
            "urn:asip:ci-sis:vsm:2012",
            "Volet de synthèse médicale",
        ),
        (
            "1.2.250.1.213.1.1.1.29",
            "urn:asip:ci-sis:ldl-ses:2017",
            "Lettre de liaison de sortie",
        ),
        (
            "1.2.250.1.213.1.1.1.21",
            "urn:asip:ci-sis:ldl-ees:2017",
            "Lettre de liaison d'entrée",
        ),
        (
            "1.2.250.1.213.1.1.1.45",
            "urn:ihe:rad:CDA:imaging:2013",
            "CR d'imagerie médicale",
        ),
        (
            "1.2.250.1.213.1.1.1.26",
            "urn:asip:ci-sis:pps:2014",
            "Programme personnalisé de soins",
        ),
    ];
    let (code, display) = VOLETS
        .iter()
        .find(|(t, ..)| templates.contains(t))
        .map(|(_, c, d)| (*c, *d))
        .unwrap_or((
            "urn:asip:ci-sis:2010",
            "Document à corps structuré (CI-SIS)",
        ));
    Code {
        code: code.into(),
        scheme: "1.2.250.1.213.1.1.4.2.282".into(),
        display: display.into(),
    }
}

fn author(assigned: Node) -> Result<Author, String> {
    let id = children(assigned, "id")
        .find(|i| i.attribute("extension").is_some())
        .ok_or("the CDA's author has no id with an extension")?;
    let (value, root) = (
        id.attribute("extension").unwrap_or_default(),
        id.attribute("root").unwrap_or_default(),
    );
    let name = find(assigned, &["assignedPerson", "name"]);
    let part = |n: &str| {
        name.and_then(|name| child(name, n))
            .map(text)
            .unwrap_or_default()
    };
    // XCN with the national professional id's type (D: the DMP's, IDNPS).
    let person = format!(
        "{}^{}^{}^^^^^^&{root}&ISO^D^^^IDNPS",
        cx_escape(value),
        cx_escape(&part("family")),
        cx_escape(&part("given"))
    );
    let institution = child(assigned, "representedOrganization").and_then(|org| {
        let name = child(org, "name").map(text).unwrap_or_default();
        let id = child(org, "id")?;
        Some(format!(
            "{}^^^^^&{}&ISO^IDNST^^^{}",
            cx_escape(&name),
            id.attribute("root").unwrap_or_default(),
            cx_escape(id.attribute("extension").unwrap_or_default())
        ))
    });
    let coded = |n: &str| {
        child(assigned.parent().unwrap_or(assigned), n)
            .or_else(|| child(assigned, n))
            .and_then(code)
            .map(|c| format!("{}^{}^{}", c.code, cx_escape(&c.display), c.scheme))
    };
    Ok(Author {
        person,
        institution,
        role: coded("functionCode"),
        specialty: child(assigned, "code")
            .and_then(code)
            .map(|c| format!("{}^{}^{}", c.code, cx_escape(&c.display), c.scheme)),
    })
}

/// XPN of a CDA name: the birth (or first) family name and the first given name.
fn xpn(name: Node) -> String {
    let family = children(name, "family")
        .find(|f| f.attribute("qualifier") == Some("BR"))
        .or_else(|| child(name, "family"))
        .map(text)
        .unwrap_or_default();
    let given = child(name, "given").map(text).unwrap_or_default();
    format!("{}^{}^^^^^L", cx_escape(&family), cx_escape(&given))
}

/// HL7 v2 component separators in a value would split it: escaped as v2 does.
fn cx_escape(value: &str) -> String {
    value
        .replace('\\', "\\E\\")
        .replace('^', "\\S\\")
        .replace('&', "\\T\\")
        .replace('|', "\\F\\")
        .replace('~', "\\R\\")
}

fn instance_id(id: Node) -> Option<String> {
    let root = id.attribute("root").filter(|r| !r.is_empty())?;
    Some(match id.attribute("extension").filter(|e| !e.is_empty()) {
        Some(ext) => format!("{root}^{ext}"),
        None => root.to_string(),
    })
}

fn code(node: Node) -> Option<Code> {
    let code = node.attribute("code").filter(|c| !c.is_empty())?;
    Some(Code {
        code: code.to_string(),
        scheme: node.attribute("codeSystem").unwrap_or_default().to_string(),
        display: node.attribute("displayName").unwrap_or(code).to_string(),
    })
}

/// An HL7 TS (`20210401171000+0100`) as the UTC `YYYYMMDDHHMMSS` XDS wants; a date alone
/// stays a date (XDS takes the precision given).
pub fn utc(ts: &str) -> Option<String> {
    let digits: String = ts.chars().take_while(char::is_ascii_digit).collect();
    if digits.len() < 8 {
        return None;
    }
    let rest = &ts[digits.len()..];
    let rest = rest
        .strip_prefix('.')
        .map_or(rest, |r| r.trim_start_matches(|c: char| c.is_ascii_digit()));
    if digits.len() < 12 || rest.is_empty() {
        // No time or no zone: written as given.
        return Some(digits[..digits.len().min(14)].to_string());
    }
    let padded = format!("{:0<14}", &digits[..digits.len().min(14)]);
    let local = chrono::NaiveDateTime::parse_from_str(&padded, "%Y%m%d%H%M%S").ok()?;
    let sign = match rest.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zone = &rest[1..];
    if zone.len() != 4 || !zone.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let minutes: i64 = zone[..2].parse::<i64>().ok()? * 60 + zone[2..].parse::<i64>().ok()?;
    let at = local - chrono::Duration::minutes(sign * minutes);
    Some(at.format("%Y%m%d%H%M%S").to_string())
}

fn is(node: Node, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(CDA)
}

fn children<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| is(*c, name))
}

fn child<'a, 'i>(node: Node<'a, 'i>, name: &'a str) -> Option<Node<'a, 'i>> {
    children(node, name).next()
}

fn find<'a, 'i>(node: Node<'a, 'i>, path: &[&'a str]) -> Option<Node<'a, 'i>> {
    path.iter().try_fold(node, |n, step| child(n, step))
}

fn text(node: Node) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the submission needs besides the document's own metadata.
pub struct Submission<'a> {
    /// The SubmissionSet's uniqueId (an OID).
    pub unique_id: &'a str,
    /// The sending system's OID.
    pub source_id: &'a str,
    /// UTC `YYYYMMDDHHMMSS`.
    pub submission_time: &'a str,
}

/// The entryUUID of a document's DocumentEntry: derived from its uniqueId, so that a new
/// version's RPLC association names the entry registered for the version it replaces
/// without asking the registry.
pub fn entry_uuid(unique_id: &str) -> String {
    super::name_uuid(&format!("DocumentEntry|{unique_id}"))
}

/// Writes the `lcm:SubmitObjectsRequest` into `x`.
pub fn submit_objects(x: &mut Xml, entry: &DocumentEntry, s: &Submission) {
    let document = entry_uuid(&entry.unique_id);
    let set = super::name_uuid(&format!("SubmissionSet|{}", s.unique_id));
    x.open("lcm:SubmitObjectsRequest", &[]);
    x.open("rim:RegistryObjectList", &[]);

    // The DocumentEntry.
    x.open(
        "rim:ExtrinsicObject",
        &[
            ("id", &document),
            ("mimeType", "text/xml"),
            ("objectType", scheme::DOCUMENT_ENTRY),
        ],
    );
    slot(x, "creationTime", &[&entry.creation_time]);
    slot(x, "languageCode", &[&entry.language]);
    slot(x, "hash", &[&entry.hash]);
    slot(x, "size", &[&entry.size.to_string()]);
    if let Some(start) = &entry.service_start {
        slot(x, "serviceStartTime", &[start]);
    }
    if let Some(stop) = &entry.service_stop {
        slot(x, "serviceStopTime", &[stop]);
    }
    slot(x, "sourcePatientId", &[&entry.patient_id]);
    let info: Vec<&str> = entry
        .source_patient_info
        .iter()
        .map(String::as_str)
        .collect();
    slot(x, "sourcePatientInfo", &info);
    name(x, &entry.title);
    author_classification(x, scheme::DE_AUTHOR, &document, &entry.author);
    coded(x, scheme::DE_CLASS_CODE, &document, &entry.class_code);
    for c in &entry.confidentiality {
        coded(x, scheme::DE_CONFIDENTIALITY, &document, c);
    }
    coded(x, scheme::DE_FORMAT_CODE, &document, &entry.format_code);
    coded(x, scheme::DE_FACILITY_TYPE, &document, &entry.facility_type);
    coded(
        x,
        scheme::DE_PRACTICE_SETTING,
        &document,
        &entry.practice_setting,
    );
    coded(x, scheme::DE_TYPE_CODE, &document, &entry.type_code);
    external(
        x,
        scheme::DE_PATIENT_ID,
        &document,
        &entry.patient_id,
        "XDSDocumentEntry.patientId",
    );
    external(
        x,
        scheme::DE_UNIQUE_ID,
        &document,
        &entry.unique_id,
        "XDSDocumentEntry.uniqueId",
    );
    x.close();

    // The SubmissionSet.
    x.open("rim:RegistryPackage", &[("id", &set)]);
    slot(x, "submissionTime", &[s.submission_time]);
    name(x, &entry.title);
    author_classification(x, scheme::SS_AUTHOR, &set, &entry.author);
    coded(x, scheme::SS_CONTENT_TYPE, &set, &entry.type_code);
    external(
        x,
        scheme::SS_UNIQUE_ID,
        &set,
        s.unique_id,
        "XDSSubmissionSet.uniqueId",
    );
    external(
        x,
        scheme::SS_SOURCE_ID,
        &set,
        s.source_id,
        "XDSSubmissionSet.sourceId",
    );
    external(
        x,
        scheme::SS_PATIENT_ID,
        &set,
        &entry.patient_id,
        "XDSSubmissionSet.patientId",
    );
    x.close();
    x.empty(
        "rim:Classification",
        &[
            ("id", &super::name_uuid(&format!("{set}|node"))),
            ("classifiedObject", &set),
            ("classificationNode", scheme::SUBMISSION_SET),
            ("objectType", scheme::CLASSIFICATION),
        ],
    );

    // The entry is a member of the set; a new version replaces the previous entry.
    x.open(
        "rim:Association",
        &[
            ("id", &super::name_uuid(&format!("{set}|{document}|member"))),
            ("associationType", scheme::HAS_MEMBER),
            ("sourceObject", &set),
            ("targetObject", &document),
            (
                "objectType",
                "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association",
            ),
        ],
    );
    slot(x, "SubmissionSetStatus", &["Original"]);
    x.close();
    if let Some(previous) = &entry.replaces {
        x.empty(
            "rim:Association",
            &[
                ("id", &super::name_uuid(&format!("{document}|rplc"))),
                ("associationType", scheme::RPLC),
                ("sourceObject", &document),
                ("targetObject", &entry_uuid(previous)),
                (
                    "objectType",
                    "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association",
                ),
            ],
        );
    }
    x.close();
    x.close();
}

fn slot(x: &mut Xml, name: &str, values: &[&str]) {
    x.open("rim:Slot", &[("name", name)])
        .open("rim:ValueList", &[]);
    for v in values {
        x.leaf("rim:Value", &[], v);
    }
    x.close().close();
}

fn name(x: &mut Xml, value: &str) {
    if value.is_empty() {
        return;
    }
    x.open("rim:Name", &[])
        .empty("rim:LocalizedString", &[("value", value)])
        .close();
}

fn coded(x: &mut Xml, scheme: &str, object: &str, c: &Code) {
    let id = super::name_uuid(&format!("{object}|{scheme}|{}", c.code));
    x.open(
        "rim:Classification",
        &[
            ("id", &id),
            ("classificationScheme", scheme),
            ("classifiedObject", object),
            ("nodeRepresentation", &c.code),
            ("objectType", scheme::CLASSIFICATION),
        ],
    );
    slot(x, "codingScheme", &[&c.scheme]);
    name(x, &c.display);
    x.close();
}

fn author_classification(x: &mut Xml, scheme: &str, object: &str, a: &Author) {
    let id = super::name_uuid(&format!("{object}|{scheme}|author"));
    x.open(
        "rim:Classification",
        &[
            ("id", &id),
            ("classificationScheme", scheme),
            ("classifiedObject", object),
            ("nodeRepresentation", ""),
            ("objectType", scheme::CLASSIFICATION),
        ],
    );
    slot(x, "authorPerson", &[&a.person]);
    if let Some(i) = &a.institution {
        slot(x, "authorInstitution", &[i]);
    }
    if let Some(r) = &a.role {
        slot(x, "authorRole", &[r]);
    }
    if let Some(s) = &a.specialty {
        slot(x, "authorSpecialty", &[s]);
    }
    x.close();
}

fn external(x: &mut Xml, scheme: &str, object: &str, value: &str, label: &str) {
    let id = super::name_uuid(&format!("{object}|{scheme}"));
    x.open(
        "rim:ExternalIdentifier",
        &[
            ("id", &id),
            ("identificationScheme", scheme),
            ("registryObject", object),
            ("value", value),
            (
                "objectType",
                "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier",
            ),
        ],
    );
    name(x, label);
    x.close();
}
