//! The LDL-SES body (lettre de liaison à la sortie d'un établissement de santé): the four
//! sections the volet requires, FR-Statut-du-document-LDL-SES, FR-Raison-de-la-recommandation-
//! non-code, FR-Resultats-evenements-LDL-SES (with its FR-Synthese-medicale-sejour entry) and
//! FR-Traitements-a-la-sortie (one FR-Traitement per treatment, else the CI-SIS "no
//! information" or "no known medication" entry), then the letter's other sections, narrative
//! only.

use super::{Code, Document, Id, LOINC, code, id_attrs, part_id, time};
use crate::channel::xds::xml::Xml;

/// TA_ASIP, the ANS's own codes (`GEN-065`, `MED-142`).
const TA_ASIP: &str = "1.2.250.1.213.1.1.4.322";
const SNOMED: &str = "2.16.840.1.113883.6.96";
/// IPS CodeSystem - Absent and Unknown Data.
const ABSENT: &str = "2.16.840.1.113883.5.1150.1";
/// What a required section the letter does not fill says.
const NOT_GIVEN: &str = "Non renseigné";

/// A block of narrative text: the CDA narrative's `paragraph`, `list`, `table` (rows of
/// cells).
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Paragraph(String),
    List(Vec<String>),
    Table(Vec<Vec<Cell>>),
}

/// A table cell: `th` or `td`, its text, the `ID` an entry refers to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    pub header: bool,
    pub text: String,
    pub id: Option<String>,
}

/// A section of the letter: its code (LOINC), title and narrative (empty: not given).
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub code: Option<Code>,
    pub title: String,
    pub text: Vec<Block>,
}

/// One treatment at discharge (FR-Traitement).
#[derive(Debug, Clone, Default)]
pub struct Treatment {
    pub name: String,
    /// The product's code (CIS, ATC...), when its system is known.
    pub code: Option<Code>,
    pub start: Option<String>,
    pub end: Option<String>,
    /// The dosage as written (shown in the narrative).
    pub dosage: Option<String>,
}

/// The coded treatments at discharge.
#[derive(Debug, Clone)]
pub enum Medications {
    Listed(Vec<Treatment>),
    /// The letter says there is none ("no-known-medications").
    NoneKnown,
    /// The letter codes none ("no-medication-info").
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Letter {
    /// Motif de l'hospitalisation (42349-1).
    pub reason: Section,
    /// Synthèse médicale du séjour (42545-4).
    pub outcomes: Section,
    /// Traitements à la sortie (10183-2).
    pub treatments: Section,
    pub medications: Medications,
    /// The letter's other sections, in its order.
    pub others: Vec<Section>,
}

impl Block {
    /// The block as lines of plain text (a table row's cells joined by ` ; `).
    fn lines(&self) -> Vec<String> {
        match self {
            Self::Paragraph(t) => vec![t.clone()],
            Self::List(items) => items.clone(),
            Self::Table(rows) => rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|c| c.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" ; ")
                })
                .collect(),
        }
    }
}

pub(super) fn write(x: &mut Xml, d: &Document, l: &Letter) {
    status(x, d);
    let reason = &l.reason;
    open_section(
        x,
        &["1.3.6.1.4.1.19376.1.5.3.1.3.1", "1.2.250.1.213.1.1.2.127"],
        None,
        reason,
    );
    narrative(x, None, &reason.text);
    x.close().close();
    outcomes(x, d, &l.outcomes);
    treatments(x, d, &l.treatments, &l.medications);
    for s in &l.others {
        let templates: &[&str] = match s.code.as_ref().map(|c| c.code.as_str()) {
            // FR-Resultats-examens-non-code.
            Some("30954-2") => &["1.3.6.1.4.1.19376.1.5.3.1.3.27", "1.2.250.1.213.1.1.2.150"],
            _ => &[],
        };
        open_section(x, templates, None, s);
        narrative(x, None, &s.text);
        x.close().close();
    }
}

/// `component/section` with its templateIds, id, code and title; left open for its text
/// and entries.
fn open_section(x: &mut Xml, templates: &[&str], id: Option<&Id>, s: &Section) {
    x.open("component", &[]).open("section", &[]);
    for t in templates {
        x.empty("templateId", &[("root", t)]);
    }
    if let Some(id) = id {
        x.empty("id", &id_attrs(id));
    }
    if let Some(c) = &s.code {
        code(x, "code", c);
    }
    x.leaf("title", &[], &s.title);
}

/// The section's `text` (`ID`, when an entry refers to it); "Non renseigné" when empty.
fn narrative(x: &mut Xml, id: Option<&str>, blocks: &[Block]) {
    x.open("text", &id.map(|i| vec![("ID", i)]).unwrap_or_default());
    if blocks.is_empty() {
        x.leaf("paragraph", &[], NOT_GIVEN);
    }
    for b in blocks {
        match b {
            Block::Paragraph(t) => {
                x.leaf("paragraph", &[], t);
            }
            Block::List(items) => {
                x.open("list", &[]);
                for i in items {
                    x.leaf("item", &[], i);
                }
                x.close();
            }
            Block::Table(rows) => {
                x.open("table", &[("border", "1")]).open("tbody", &[]);
                for row in rows {
                    x.open("tr", &[]);
                    for c in row {
                        let name = if c.header { "th" } else { "td" };
                        match &c.id {
                            Some(id) => {
                                x.open(name, &[]);
                                x.leaf("content", &[("ID", id)], &c.text);
                                x.close();
                            }
                            None => {
                                x.leaf(name, &[], &c.text);
                            }
                        }
                    }
                    x.close();
                }
                x.close().close();
            }
        }
    }
    x.close();
}

fn loinc(c: &str, display: &str) -> Code {
    Code {
        code: c.into(),
        system: LOINC.into(),
        display: display.into(),
    }
}

/// An IHE PCC Simple Observation of the CI-SIS (`1.2.250.1.213.1.1.3.48` and the entry's
/// own template): id, code, text reference, completed, the document's time, its value
/// (written by `value`).
fn simple_observation(
    x: &mut Xml,
    d: &Document,
    template: &str,
    part: &str,
    c: &Code,
    value: impl FnOnce(&mut Xml),
) {
    x.open("entry", &[]);
    x.open("observation", &[("classCode", "OBS"), ("moodCode", "EVN")]);
    for t in ["1.3.6.1.4.1.19376.1.5.3.1.4.13", "1.2.250.1.213.1.1.3.48"] {
        x.empty("templateId", &[("root", t)]);
    }
    x.empty("templateId", &[("root", template)]);
    x.empty("id", &id_attrs(&part_id(d, part)));
    code(x, "code", c);
    x.open("text", &[]);
    x.empty("reference", &[("value", &format!("#{part}"))]);
    x.close();
    x.empty("statusCode", &[("code", "completed")]);
    time(x, "effectiveTime", Some(&d.time));
    value(x);
    x.close().close();
}

/// FR-Statut-du-document-LDL-SES: the letter is written once final, "validé".
fn status(x: &mut Xml, d: &Document) {
    let section = Section {
        code: Some(loinc("33557-0", "Etat d'achèvement")),
        title: "Statut du document".into(),
        text: vec![],
    };
    open_section(
        x,
        &["1.2.250.1.213.1.1.2.35", "1.2.250.1.213.1.1.2.35.1"],
        Some(&part_id(d, "status-section")),
        &section,
    );
    x.open("text", &[])
        .open("table", &[("border", "0")])
        .open("tbody", &[])
        .open("tr", &[]);
    x.leaf("td", &[], "Statut du document");
    x.open("td", &[]);
    x.leaf("content", &[("ID", "status")], "Validé");
    x.close().close().close().close().close();
    let status = Code {
        code: "GEN-065".into(),
        system: TA_ASIP.into(),
        display: "Statut du document".into(),
    };
    simple_observation(x, d, "1.2.250.1.213.1.1.3.48.16", "status", &status, |x| {
        x.empty(
            "value",
            &[
                ("xsi:type", "CD"),
                ("code", "9571008"),
                ("displayName", "approuvé"),
                ("codeSystem", SNOMED),
            ],
        );
    });
    x.close().close();
}

/// FR-Resultats-evenements-LDL-SES: the letter's synthesis, and the same text as the
/// FR-Synthese-medicale-sejour entry.
fn outcomes(x: &mut Xml, d: &Document, s: &Section) {
    open_section(
        x,
        &[
            "1.3.6.1.4.1.19376.1.5.3.1.1.21.2.9",
            "1.3.6.1.4.1.19376.1.7.3.1.1.13.7",
            "1.2.250.1.213.1.1.2.163",
            "1.2.250.1.213.1.1.2.163.1",
        ],
        Some(&part_id(d, "outcomes-section")),
        s,
    );
    narrative(x, Some("synthesis"), &s.text);
    let synthesis = Code {
        code: "MED-142".into(),
        system: TA_ASIP.into(),
        display: "Synthèse médicale".into(),
    };
    let text: Vec<String> = s.text.iter().flat_map(Block::lines).collect();
    simple_observation(
        x,
        d,
        "1.2.250.1.213.1.1.3.48.9",
        "synthesis",
        &synthesis,
        |x| {
            if text.is_empty() {
                x.empty("value", &[("xsi:type", "ST"), ("nullFlavor", "NI")]);
            } else {
                x.leaf("value", &[("xsi:type", "ST")], &text.join("\n"));
            }
        },
    );
    x.close().close();
}

/// FR-Traitements-a-la-sortie: the letter's narrative, then the table of the treatments
/// the entries refer to.
fn treatments(x: &mut Xml, d: &Document, s: &Section, m: &Medications) {
    open_section(
        x,
        &["1.3.6.1.4.1.19376.1.5.3.1.3.22", "1.2.250.1.213.1.1.2.146"],
        Some(&part_id(d, "treatments-section")),
        s,
    );
    let mut blocks = s.text.clone();
    match m {
        Medications::Listed(list) => blocks.push(treatment_table(list)),
        Medications::NoneKnown if blocks.is_empty() => {
            blocks.push(Block::Paragraph("Aucun traitement".into()));
        }
        _ => {}
    }
    narrative(x, Some("treatments"), &blocks);
    match m {
        Medications::Listed(list) => {
            for (i, t) in list.iter().enumerate() {
                treatment(x, d, t, i + 1);
            }
        }
        Medications::NoneKnown => no_treatment(x, d, false),
        Medications::Unknown => no_treatment(x, d, true),
    }
    x.close().close();
}

fn treatment_table(list: &[Treatment]) -> Block {
    let cell = |text: &str| Cell {
        text: text.into(),
        ..Cell::default()
    };
    let date = |ts: &Option<String>| {
        ts.as_deref()
            .filter(|t| t.len() >= 8)
            .map(|t| format!("{}/{}/{}", &t[6..8], &t[4..6], &t[..4]))
            .unwrap_or_default()
    };
    let head = ["Médicament", "Posologie", "Date de début", "Date de fin"]
        .iter()
        .map(|h| Cell {
            header: true,
            text: (*h).into(),
            id: None,
        })
        .collect();
    let mut rows = vec![head];
    for (i, t) in list.iter().enumerate() {
        rows.push(vec![
            Cell {
                header: false,
                text: t.name.clone(),
                id: Some(format!("treatment-{}", i + 1)),
            },
            cell(t.dosage.as_deref().unwrap_or_default()),
            cell(&date(&t.start)),
            cell(&date(&t.end)),
        ]);
    }
    Block::Table(rows)
}

/// An FR-Traitement prescribed for after the stay (`INT`).
fn treatment(x: &mut Xml, d: &Document, t: &Treatment, n: usize) {
    let reference = format!("#treatment-{n}");
    x.open("entry", &[]);
    x.open(
        "substanceAdministration",
        &[("classCode", "SBADM"), ("moodCode", "INT")],
    );
    medication_templates(x);
    x.empty("id", &id_attrs(&part_id(d, &format!("treatment-{n}"))));
    x.open("text", &[]);
    x.empty("reference", &[("value", &reference)]);
    x.close();
    x.empty("statusCode", &[("code", "completed")]);
    x.open("effectiveTime", &[("xsi:type", "IVL_TS")]);
    time(x, "low", t.start.as_deref());
    time(x, "high", t.end.as_deref());
    x.close();
    product(x, None, Some((t.code.as_ref(), &t.name, &reference)));
    x.close().close();
}

/// The CI-SIS entry of a treatment section with no treatment coded: "no known medication"
/// when the letter says there is none, else "no information" (`nullFlavor` `UNK`).
fn no_treatment(x: &mut Xml, d: &Document, unknown: bool) {
    let (c, display) = if unknown {
        (
            "no-medication-info",
            "Pas d'information sur les traitements médicamenteux",
        )
    } else {
        (
            "no-known-medications",
            "Pas de traitement médicamenteux connu",
        )
    };
    let mut attrs = vec![("classCode", "SBADM"), ("moodCode", "EVN")];
    if unknown {
        attrs.push(("nullFlavor", "UNK"));
    }
    x.open("entry", &[]);
    x.open("substanceAdministration", &attrs);
    medication_templates(x);
    x.empty("id", &id_attrs(&part_id(d, "treatment-none")));
    x.open(
        "code",
        &[
            ("code", c),
            ("displayName", display),
            ("codeSystem", ABSENT),
        ],
    );
    x.open("originalText", &[]);
    x.empty("reference", &[("value", "#treatments")]);
    x.close().close();
    x.open("text", &[]);
    x.empty("reference", &[("value", "#treatments")]);
    x.close();
    x.empty("statusCode", &[("code", "completed")]);
    x.open("effectiveTime", &[("xsi:type", "IVL_TS")]);
    x.empty("low", &[("nullFlavor", "NA")]);
    x.empty("high", &[("nullFlavor", "NA")]);
    x.close();
    product(x, unknown.then_some("UNK"), None);
    x.close().close();
}

/// The templateIds of an FR-Traitement in normal dosing.
fn medication_templates(x: &mut Xml) {
    for t in [
        "1.2.250.1.213.1.1.3.42",
        "2.16.840.1.113883.10.20.1.24",
        "1.3.6.1.4.1.19376.1.5.3.1.4.7",
        "1.3.6.1.4.1.19376.1.5.3.1.4.7.1",
    ] {
        x.empty("templateId", &[("root", t)]);
    }
}

/// FR-Produit-de-sante: the product's code (its text the narrative's `reference`), name.
fn product(x: &mut Xml, null: Option<&str>, material: Option<(Option<&Code>, &str, &str)>) {
    fn null_attr(n: Option<&str>) -> Vec<(&str, &str)> {
        n.map(|v| vec![("nullFlavor", v)]).unwrap_or_default()
    }
    x.open("consumable", &[])
        .open("manufacturedProduct", &null_attr(null));
    for t in [
        "1.2.250.1.213.1.1.3.43",
        "2.16.840.1.113883.10.20.1.53",
        "1.3.6.1.4.1.19376.1.5.3.1.4.7.2",
    ] {
        x.empty("templateId", &[("root", t)]);
    }
    x.open("manufacturedMaterial", &null_attr(null));
    match material {
        Some((c, name, reference)) => {
            match c {
                Some(c) => {
                    let mut a = vec![("code", c.code.as_str()), ("codeSystem", c.system.as_str())];
                    if !c.display.is_empty() {
                        a.push(("displayName", c.display.as_str()));
                    }
                    x.open("code", &a);
                }
                None => {
                    x.open("code", &[("nullFlavor", "UNK")]);
                }
            }
            x.open("originalText", &[]);
            x.empty("reference", &[("value", reference)]);
            x.close().close();
            x.leaf("name", &[], name);
        }
        None => {
            x.empty("code", &[("nullFlavor", "NA")]);
            x.empty("name", &[("nullFlavor", "NA")]);
        }
    }
    x.close().close().close();
}
