//! The CI-SIS CDA R2 writer: the header every volet shares (templateIds, realm FR, the INS in
//! `recordTarget`, the author with the national professional id, the custodian, the
//! confidentiality, language, time zone, `setId`/`versionNumber`, `relatedDocument` RPLC,
//! `documentationOf/serviceEvent`, `componentOf/encompassingEncounter` with its
//! `healthCareFacility` code) and the CR-BIO body; the LDL-SES body is [`letter`]'s. It reads
//! a [`Document`], never FHIR: the transform ([`super`]) fills the model from the store's
//! resources.

mod letter;

pub use letter::{Block, Cell, Letter, Medications, Section, Treatment};

use crate::channel::xds::xml::Xml;

const LOINC: &str = "2.16.840.1.113883.6.1";
const CONFIDENTIALITY: &str = "2.16.840.1.113883.5.25";
const GENDER: &str = "2.16.840.1.113883.5.1";
const ACT_CODE: &str = "2.16.840.1.113883.5.4";
const INTERPRETATION: &str = "2.16.840.1.113883.5.83";
/// TRE_A00 practice settings (`standardIndustryClassCode`).
pub const PRACTICE_SETTING: &str = "1.2.250.1.213.1.1.4.9";

/// A coded value: `code`, `codeSystem` (an OID) and `displayName`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Code {
    pub code: String,
    pub system: String,
    pub display: String,
}

/// An instance identifier (`root`, optional `extension`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Id {
    pub root: String,
    pub extension: Option<String>,
}

/// Name, address and contact of a person or an organisation.
#[derive(Debug, Clone, Default)]
pub struct Contact {
    pub telecoms: Vec<String>,
    /// Address lines (`streetAddressLine`), postal code and city.
    pub lines: Vec<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Organization {
    pub id: Id,
    pub name: String,
    pub contact: Contact,
}

#[derive(Debug, Clone, Default)]
pub struct Professional {
    pub id: Id,
    /// Profession and specialty (TRE_G15 / TRE_R38): `assignedAuthor/code`.
    pub code: Option<Code>,
    pub family: String,
    pub given: Vec<String>,
    pub contact: Contact,
    pub organization: Organization,
}

#[derive(Debug, Clone, Default)]
pub struct Patient {
    /// The INS first (root an INS OID), then the other identifiers (IPP).
    pub ids: Vec<Id>,
    pub birth_family: String,
    pub given: Vec<String>,
    /// `M`, `F` or `U`.
    pub gender: String,
    /// `YYYYMMDD`.
    pub birth_time: Option<String>,
    pub contact: Contact,
}

/// One laboratory result (CR-BIO "Résultat d'examen de biologie médicale").
#[derive(Debug, Clone, Default)]
pub struct LabResult {
    pub code: Code,
    /// The text shown (the Observation's code text or display).
    pub label: String,
    pub time: Option<String>,
    /// A quantity (`value`, UCUM unit), else a text value.
    pub quantity: Option<(String, String)>,
    pub text: Option<String>,
    pub interpretation: Option<Code>,
    /// Reference range low and high, in the result's unit.
    pub low: Option<String>,
    pub high: Option<String>,
}

/// A CR-BIO chapter: the report's code, its results.
#[derive(Debug, Clone, Default)]
pub struct LabChapter {
    pub code: Code,
    pub title: String,
    pub results: Vec<LabResult>,
}

/// The `encompassingEncounter`: the stay or visit the document belongs to.
#[derive(Debug, Clone, Default)]
pub struct Encounter {
    pub id: Option<Id>,
    /// ActCode: `AMB`, `IMP`, `EMER`...
    pub code: Code,
    pub start: Option<String>,
    pub end: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Body {
    Lab(LabChapter),
    Letter(Box<Letter>),
}

/// Everything a CI-SIS document says, already in CDA terms.
#[derive(Debug, Clone)]
pub struct Document {
    /// The volet's templateIds (after the HL7 France and CI-SIS ones).
    pub templates: Vec<&'static str>,
    pub id: Id,
    pub code: Code,
    pub title: String,
    /// `effectiveTime`, with its time zone (`20240101120000+0100`).
    pub time: String,
    /// `N`, `R` or `V`.
    pub confidentiality: String,
    pub set_id: Id,
    pub version: u64,
    /// The document this version replaces (`relatedDocument` RPLC).
    pub replaces: Option<Id>,
    pub patient: Patient,
    pub author: Professional,
    pub custodian: Organization,
    pub service_code: Code,
    pub service_start: Option<String>,
    pub service_end: Option<String>,
    /// `standardIndustryClassCode` of the performer's organisation (the DMP's
    /// practiceSettingCode).
    pub practice_setting: Code,
    pub encounter: Encounter,
    /// `healthCareFacility/code` (TRE_R02, the DMP's healthcareFacilityTypeCode).
    pub facility: Code,
    pub body: Body,
}

fn id_attrs(id: &Id) -> Vec<(&str, &str)> {
    let mut a = vec![("root", id.root.as_str())];
    if let Some(e) = &id.extension {
        a.push(("extension", e.as_str()));
    }
    a
}

fn code(x: &mut Xml, name: &str, c: &Code) {
    let mut a = vec![("code", c.code.as_str()), ("codeSystem", c.system.as_str())];
    if !c.display.is_empty() {
        a.push(("displayName", c.display.as_str()));
    }
    x.empty(name, &a);
}

fn time(x: &mut Xml, name: &str, value: Option<&str>) {
    match value {
        Some(v) => x.empty(name, &[("value", v)]),
        None => x.empty(name, &[("nullFlavor", "UNK")]),
    };
}

/// `addr` then `telecom` (a person, an assigned entity).
fn contact(x: &mut Xml, c: &Contact) {
    address(x, c);
    telecoms(x, c);
}

fn telecoms(x: &mut Xml, c: &Contact) {
    if c.telecoms.is_empty() {
        x.empty("telecom", &[("nullFlavor", "UNK")]);
    }
    for t in &c.telecoms {
        x.empty("telecom", &[("value", t.as_str())]);
    }
}

fn person_name(x: &mut Xml, family: &str, given: &[String]) {
    x.open("name", &[]);
    for g in given {
        x.leaf("given", &[], g);
    }
    x.leaf("family", &[], family);
    x.close();
}

fn organization(x: &mut Xml, name: &str, o: &Organization, industry: Option<&Code>) {
    x.open(name, &[]);
    x.empty("id", &id_attrs(&o.id));
    x.leaf("name", &[], &o.name);
    // An organisation's `telecom` comes before its `addr` (CDA R2 schema order).
    telecoms(x, &o.contact);
    address(x, &o.contact);
    if let Some(c) = industry {
        code(x, "standardIndustryClassCode", c);
    }
    x.close();
}

fn address(x: &mut Xml, c: &Contact) {
    if c.lines.is_empty() && c.postal_code.is_none() && c.city.is_none() {
        x.empty("addr", &[("nullFlavor", "UNK")]);
        return;
    }
    x.open("addr", &[]);
    for line in &c.lines {
        x.leaf("streetAddressLine", &[], line);
    }
    if let Some(p) = &c.postal_code {
        x.leaf("postalCode", &[], p);
    }
    if let Some(city) = &c.city {
        x.leaf("city", &[], city);
    }
    x.close();
}

/// The assigned entity of a professional: id, code, addr, telecom, person, organisation.
fn professional(x: &mut Xml, p: &Professional, industry: Option<&Code>) {
    x.empty("id", &id_attrs(&p.id));
    match &p.code {
        Some(c) => code(x, "code", c),
        None => {
            x.empty("code", &[("nullFlavor", "UNK")]);
        }
    }
    contact(x, &p.contact);
    x.open("assignedPerson", &[]);
    person_name(x, &p.family, &p.given);
    x.close();
    organization(x, "representedOrganization", &p.organization, industry);
}

/// The whole document, UTF-8.
pub fn write(d: &Document) -> String {
    let mut x = Xml::new();
    x.open(
        "ClinicalDocument",
        &[
            ("xmlns", "urn:hl7-org:v3"),
            ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
            ("xmlns:lab", "urn:oid:1.3.6.1.4.1.19376.1.3.2"),
        ],
    );
    x.empty("realmCode", &[("code", "FR")]);
    x.empty(
        "typeId",
        &[
            ("root", "2.16.840.1.113883.1.3"),
            ("extension", "POCD_HD000040"),
        ],
    );
    x.empty("templateId", &[("root", "2.16.840.1.113883.2.8.2.1")]);
    x.empty("templateId", &[("root", "1.2.250.1.213.1.1.1.1")]);
    for t in &d.templates {
        x.empty("templateId", &[("root", t)]);
    }
    x.empty("id", &id_attrs(&d.id));
    code(&mut x, "code", &d.code);
    x.leaf("title", &[], &d.title);
    x.empty("effectiveTime", &[("value", d.time.as_str())]);
    let (conf, conf_name) = match d.confidentiality.as_str() {
        "R" => ("R", "Restreint"),
        "V" => ("V", "Très restreint"),
        _ => ("N", "Normal"),
    };
    x.empty(
        "confidentialityCode",
        &[
            ("code", conf),
            ("displayName", conf_name),
            ("codeSystem", CONFIDENTIALITY),
        ],
    );
    x.empty("languageCode", &[("code", "fr-FR")]);
    x.empty("setId", &id_attrs(&d.set_id));
    x.empty("versionNumber", &[("value", &d.version.to_string())]);

    // The patient.
    x.open("recordTarget", &[]).open("patientRole", &[]);
    for id in &d.patient.ids {
        x.empty("id", &id_attrs(id));
    }
    contact(&mut x, &d.patient.contact);
    x.open("patient", &[("classCode", "PSN")]);
    x.open("name", &[]);
    x.leaf("family", &[("qualifier", "BR")], &d.patient.birth_family);
    if !d.patient.given.is_empty() {
        x.leaf("given", &[], &d.patient.given.join(" "));
        x.leaf("given", &[("qualifier", "BR")], &d.patient.given[0]);
    }
    x.close();
    let gender_name = match d.patient.gender.as_str() {
        "M" => "Masculin",
        "F" => "Féminin",
        _ => "Inconnu",
    };
    x.empty(
        "administrativeGenderCode",
        &[
            ("code", d.patient.gender.as_str()),
            ("displayName", gender_name),
            ("codeSystem", GENDER),
        ],
    );
    time(&mut x, "birthTime", d.patient.birth_time.as_deref());
    x.close().close().close();

    // Author, custodian, legal authenticator.
    x.open("author", &[]);
    x.empty("time", &[("value", d.time.as_str())]);
    x.open("assignedAuthor", &[]);
    professional(&mut x, &d.author, None);
    x.close().close();
    x.open("custodian", &[]).open("assignedCustodian", &[]);
    organization(
        &mut x,
        "representedCustodianOrganization",
        &d.custodian,
        None,
    );
    x.close().close();
    x.open("legalAuthenticator", &[]);
    x.empty("time", &[("value", d.time.as_str())]);
    x.empty("signatureCode", &[("code", "S")]);
    x.open("assignedEntity", &[]);
    professional(&mut x, &d.author, Some(&d.practice_setting));
    x.close().close();

    // The act documented: the service event, its performer.
    x.open("documentationOf", &[]).open("serviceEvent", &[]);
    code(&mut x, "code", &d.service_code);
    if matches!(d.body, Body::Lab(_)) {
        x.empty("lab:statusCode", &[("code", "completed")]);
    }
    x.open("effectiveTime", &[]);
    time(&mut x, "low", d.service_start.as_deref());
    time(&mut x, "high", d.service_end.as_deref());
    x.close();
    x.open("performer", &[("typeCode", "PRF")]);
    if matches!(d.body, Body::Lab(_)) {
        x.empty("templateId", &[("root", "1.3.6.1.4.1.19376.1.3.3.1.7")]);
    }
    x.open("time", &[]);
    time(&mut x, "high", d.service_end.as_deref().or(Some(&d.time)));
    x.close();
    x.open("assignedEntity", &[]);
    professional(&mut x, &d.author, Some(&d.practice_setting));
    x.close().close();
    x.close().close();

    // The version replaced.
    if let Some(parent) = &d.replaces {
        x.open("relatedDocument", &[("typeCode", "RPLC")])
            .open("parentDocument", &[]);
        x.empty("id", &id_attrs(parent));
        x.close().close();
    }

    // The encounter and its facility.
    x.open("componentOf", &[])
        .open("encompassingEncounter", &[]);
    if let Some(id) = &d.encounter.id {
        x.empty("id", &id_attrs(id));
    }
    code(&mut x, "code", &d.encounter.code);
    x.open("effectiveTime", &[]);
    time(
        &mut x,
        "low",
        d.encounter.start.as_deref().or(d.service_start.as_deref()),
    );
    if let Some(end) = &d.encounter.end {
        x.empty("high", &[("value", end.as_str())]);
    }
    x.close();
    x.open("responsibleParty", &[]).open("assignedEntity", &[]);
    professional(&mut x, &d.author, None);
    x.close().close();
    x.open("location", &[]).open("healthCareFacility", &[]);
    code(&mut x, "code", &d.facility);
    x.close().close();
    x.close().close();

    x.open("component", &[]).open("structuredBody", &[]);
    match &d.body {
        Body::Lab(chapter) => {
            lab_chapter(&mut x, chapter);
            pdf_copy(&mut x, d, &lab_lines(d, chapter));
        }
        Body::Letter(l) => letter::write(&mut x, d, l),
    }
    x.finish()
}

/// A CR-BIO chapter: a section (IHE XD-LAB Laboratory Specialty Section) holding one
/// Laboratory Report Item Section, its narrative table and the Laboratory Report Data
/// Processing Entry with one result observation per result.
fn lab_chapter(x: &mut Xml, c: &LabChapter) {
    x.open("component", &[]).open("section", &[]);
    x.empty("templateId", &[("root", "1.3.6.1.4.1.19376.1.3.3.2.1")]);
    x.empty("templateId", &[("root", "1.2.250.1.213.1.1.2.70")]);
    code(x, "code", &c.code);
    x.leaf("title", &[], &c.title);
    x.open("component", &[]).open("section", &[]);
    x.empty("templateId", &[("root", "1.3.6.1.4.1.19376.1.3.3.2.2")]);
    x.empty("templateId", &[("root", "1.2.250.1.213.1.1.2.71")]);
    code(x, "code", &c.code);
    x.open("text", &[]).open("table", &[("border", "1")]);
    x.open("thead", &[]).open("tr", &[]);
    for h in [
        "Examen",
        "Résultat",
        "Valeurs de référence",
        "Interprétation",
    ] {
        x.leaf("th", &[], h);
    }
    x.close().close();
    x.open("tbody", &[]);
    for (i, r) in c.results.iter().enumerate() {
        let value = match (&r.quantity, &r.text) {
            (Some((v, unit)), _) => format!("{v} {unit}"),
            (None, Some(t)) => t.clone(),
            (None, None) => String::new(),
        };
        let range = match (&r.low, &r.high) {
            (Some(l), Some(h)) => format!("{l} - {h}"),
            (Some(l), None) => format!(">= {l}"),
            (None, Some(h)) => format!("<= {h}"),
            (None, None) => String::new(),
        };
        x.open("tr", &[]);
        x.open("td", &[]);
        x.leaf("content", &[("ID", &format!("result-{}", i + 1))], &r.label);
        x.close();
        x.leaf("td", &[], &value);
        x.leaf("td", &[], &range);
        x.leaf(
            "td",
            &[],
            r.interpretation.as_ref().map_or("", |c| c.display.as_str()),
        );
        x.close();
    }
    x.close().close().close();
    x.open("entry", &[("typeCode", "DRIV")]);
    x.empty("templateId", &[("root", "1.3.6.1.4.1.19376.1.3.1")]);
    x.empty("templateId", &[("root", "1.2.250.1.213.1.1.3.21")]);
    x.open("act", &[("classCode", "ACT"), ("moodCode", "EVN")]);
    code(x, "code", &c.code);
    x.empty("statusCode", &[("code", "completed")]);
    for (i, r) in c.results.iter().enumerate() {
        lab_result(x, r, i + 1);
    }
    x.close().close();
    x.close().close();
    x.close().close();
}

fn lab_result(x: &mut Xml, r: &LabResult, n: usize) {
    x.open("entryRelationship", &[("typeCode", "COMP")]);
    x.open("observation", &[("classCode", "OBS"), ("moodCode", "EVN")]);
    x.empty("templateId", &[("root", "1.3.6.1.4.1.19376.1.3.1.6")]);
    x.empty("templateId", &[("root", "1.2.250.1.213.1.1.3.80")]);
    let mut a = vec![
        ("code", r.code.code.as_str()),
        ("codeSystem", r.code.system.as_str()),
    ];
    if !r.code.display.is_empty() {
        a.push(("displayName", r.code.display.as_str()));
    }
    x.open("code", &a);
    x.open("originalText", &[]);
    x.empty("reference", &[("value", &format!("#result-{n}"))]);
    x.close().close();
    x.empty("statusCode", &[("code", "completed")]);
    time(x, "effectiveTime", r.time.as_deref());
    match (&r.quantity, &r.text) {
        (Some((v, unit)), _) => {
            x.empty("value", &[("xsi:type", "PQ"), ("value", v), ("unit", unit)]);
        }
        (None, Some(t)) => {
            x.leaf("value", &[("xsi:type", "ST")], t);
        }
        (None, None) => {}
    }
    if let Some(i) = &r.interpretation {
        code(x, "interpretationCode", i);
    }
    if r.low.is_some() || r.high.is_some() {
        let unit = r.quantity.as_ref().map_or("1", |(_, u)| u.as_str());
        x.open("referenceRange", &[("typeCode", "REFV")]);
        x.open(
            "observationRange",
            &[("classCode", "OBS"), ("moodCode", "EVN.CRT")],
        );
        x.open("value", &[("xsi:type", "IVL_PQ")]);
        if let Some(l) = &r.low {
            x.empty("low", &[("value", l), ("unit", unit)]);
        }
        if let Some(h) = &r.high {
            x.empty("high", &[("value", h), ("unit", unit)]);
        }
        x.close();
        code(
            x,
            "interpretationCode",
            &Code {
                code: "N".into(),
                system: INTERPRETATION.into(),
                display: "Normal".into(),
            },
        );
        x.close().close();
    }
    x.close().close();
}

/// What the PDF copy of a lab report shows.
fn lab_lines(d: &Document, c: &LabChapter) -> Vec<String> {
    let mut lines = vec![
        d.title.clone(),
        d.custodian.name.clone(),
        format!(
            "Patient : {} {}",
            d.patient.birth_family,
            d.patient.given.join(" ")
        ),
        format!(
            "Biologiste : {} {}",
            d.author.given.join(" "),
            d.author.family
        ),
        String::new(),
        c.title.clone(),
    ];
    for r in &c.results {
        let value = match (&r.quantity, &r.text) {
            (Some((v, unit)), _) => format!("{v} {unit}"),
            (None, Some(t)) => t.clone(),
            (None, None) => String::new(),
        };
        let range = match (&r.low, &r.high) {
            (Some(l), Some(h)) => format!(" ({l} - {h})"),
            _ => String::new(),
        };
        lines.push(format!("{} : {value}{range}", r.label));
    }
    lines
}

/// The "FR-Document-PDF-copie" section: the document as a PDF, for readers that do not
/// render CDA.
fn pdf_copy(x: &mut Xml, d: &Document, lines: &[String]) {
    use base64::Engine as _;
    let pdf = base64::engine::general_purpose::STANDARD.encode(super::pdf::text_pdf(lines));
    let id = |part: &str| part_id(d, part);
    let copy = Code {
        code: "55108-5".into(),
        system: LOINC.into(),
        display: "Copie du document".into(),
    };
    x.open("component", &[]).open("section", &[]);
    x.empty("templateId", &[("root", "1.2.250.1.213.1.1.2.243")]);
    x.empty("id", &id_attrs(&id("pdf-section")));
    code(x, "code", &copy);
    x.leaf("title", &[], "Copie du document");
    x.open("text", &[])
        .open("table", &[("border", "0")])
        .open("tbody", &[]);
    x.open("tr", &[]).open("td", &[]);
    x.empty("renderMultiMedia", &[("referencedObject", "pdf-copy")]);
    x.close().close().close().close().close();
    x.open("entry", &[]);
    x.open(
        "organizer",
        &[("classCode", "CLUSTER"), ("moodCode", "EVN")],
    );
    x.empty("templateId", &[("root", "1.2.250.1.213.1.1.3.18")]);
    x.empty("id", &id_attrs(&id("pdf-organizer")));
    code(
        x,
        "code",
        &Code {
            code: "55107-7".into(),
            system: LOINC.into(),
            display: "Document attaché".into(),
        },
    );
    x.empty("statusCode", &[("code", "completed")]);
    x.open("component", &[]);
    x.open("observation", &[("classCode", "OBS"), ("moodCode", "EVN")]);
    x.empty("templateId", &[("root", "1.3.6.1.4.1.19376.1.5.3.1.4.13")]);
    x.empty("templateId", &[("root", "1.2.250.1.213.1.1.3.48")]);
    x.empty("templateId", &[("root", "1.2.250.1.213.1.1.3.48.18")]);
    x.empty("id", &id_attrs(&id("pdf-type")));
    code(
        x,
        "code",
        &Code {
            code: "69764-9".into(),
            system: LOINC.into(),
            display: "Type de document".into(),
        },
    );
    x.empty("statusCode", &[("code", "completed")]);
    x.empty("effectiveTime", &[("nullFlavor", "NA")]);
    x.empty(
        "value",
        &[
            ("xsi:type", "CD"),
            ("code", "55108-5"),
            ("displayName", "Copie du document"),
            ("codeSystem", LOINC),
        ],
    );
    x.close().close();
    x.open("component", &[]);
    x.open(
        "observationMedia",
        &[
            ("classCode", "OBS"),
            ("moodCode", "EVN"),
            ("ID", "pdf-copy"),
        ],
    );
    x.leaf(
        "value",
        &[("mediaType", "application/pdf"), ("representation", "B64")],
        &pdf,
    );
    x.close().close();
    x.close().close();
    x.close().close();
}

/// An id of one part of the document: the document's root, the part as extension.
fn part_id(d: &Document, part: &str) -> Id {
    Id {
        root: d.id.root.clone(),
        extension: Some(part.to_string()),
    }
}

/// The practice setting of a hospital (TRE_A00 `ETABLISSEMENT`).
pub fn establishment() -> Code {
    Code {
        code: "ETABLISSEMENT".into(),
        system: PRACTICE_SETTING.into(),
        display: "Etablissement de santé".into(),
    }
}

/// The LOINC code system, for the transform.
pub fn loinc() -> &'static str {
    LOINC
}

/// The encounter codes of HL7 ActCode.
pub fn act_code() -> &'static str {
    ACT_CODE
}
