use super::*;
use crate::channel::change::notification;

const NS: &str = "urn:hl7-org:v3";

/// The author of the documents, `Practitioner/pr1`, with an RPPS.
fn practitioner(family: &str, given: &str) -> Value {
    json!({"resourceType": "Practitioner", "id": "pr1",
        "identifier": [{"system": RPPS, "value": "10001234567"}],
        "name": [{"family": family, "given": [given]}]})
}

/// The establishment, `Organization/o1`, with a FINESS and a TRE_R02 facility type.
fn organization(name: &str, code: &str, display: &str) -> Value {
    json!({"resourceType": "Organization", "id": "o1",
        "identifier": [{"system": FINESS, "value": "750000001"}],
        "name": name,
        "type": [{"coding": [{"system": "urn:oid:1.2.250.1.71.4.2.4", "code": code, "display": display}]}]})
}

fn change(version: &str, kind: Kind) -> Value {
    let report = json!({
        "resourceType": "DiagnosticReport", "id": "dr1",
        "meta": {"versionId": version, "lastUpdated": "2024-03-01T09:00:00.123Z"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "18719-5", "display": "Biochimie"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T08:00:00+01:00",
        "issued": "2024-03-01T10:20:00+01:00",
        "performer": [{"reference": "Practitioner/pr1"}, {"reference": "Organization/o1"}],
        "result": [{"reference": "Observation/o-tsh"}],
    });
    let included = vec![
        json!({"resourceType": "Patient", "id": "p1",
            "identifier": [
                {"system": "urn:oid:1.2.250.1.999.2", "value": "IPP-1"},
                {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "279035121518989"}],
            "name": [{"family": "D'ARC & <FILS>", "given": ["JEANNE", "MARIE"]}],
            "gender": "female", "birthDate": "1979-03-28"}),
        practitioner("CAMPARINI", "Marcel"),
        organization(
            "Laboratoire du CHBM",
            "SA25",
            "Laboratoire de biologie médicale",
        ),
        json!({"resourceType": "Observation", "id": "o-tsh", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "3016-3", "display": "TSH"}]},
            "effectiveDateTime": "2024-03-01T08:00:00+01:00",
            "valueQuantity": {"value": 1.95, "unit": "mUI/L", "system": "http://unitsofmeasure.org", "code": "m[IU]/L"},
            "referenceRange": [{"low": {"value": 0.27}, "high": {"value": 4.2}}]}),
    ];
    notification(kind, report, included, "2024-03-01T09:00:00Z")
}

fn transform() -> CdaDocument {
    CdaDocument {
        volet: Volet::CrBio,
        destinations: vec!["store".into()],
    }
}

fn cda_of(tx: &Value) -> String {
    let data = tx["entry"][0]["resource"]["data"].as_str().unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    )
    .unwrap()
}

fn attr<'a>(doc: &'a roxmltree::Document, element: &str, name: &str) -> Option<&'a str> {
    doc.descendants()
        .find(|n| n.tag_name().name() == element && n.tag_name().namespace() == Some(NS))
        .and_then(|n| n.attribute(name))
}

#[test]
fn times_keep_their_zone() {
    assert_eq!(
        ts("2024-03-01T10:20:00+01:00").as_deref(),
        Some("20240301102000+0100")
    );
    assert_eq!(
        ts("2024-03-01T10:20:00.5Z").as_deref(),
        Some("20240301102000+0000")
    );
    assert_eq!(ts("1979-03-28").as_deref(), Some("19790328"));
    assert_eq!(ts("2024-03-01T10:20:00"), None);
    assert_eq!(
        fhir_instant("20240301102000+0100"),
        "2024-03-01T10:20:00+01:00"
    );
}

#[test]
fn a_report_becomes_a_cr_bio_document_and_its_reference() {
    let tx = transform()
        .transaction(&change("1", Kind::Create))
        .unwrap()
        .unwrap();
    let xml = cda_of(&tx);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(attr(&doc, "realmCode", "code"), Some("FR"));
    assert_eq!(attr(&doc, "languageCode", "code"), Some("fr-FR"));
    assert_eq!(
        attr(&doc, "effectiveTime", "value"),
        Some("20240301102000+0100")
    );
    assert_eq!(attr(&doc, "versionNumber", "value"), Some("1"));
    let templates: Vec<_> = doc
        .root_element()
        .children()
        .filter(|n| n.tag_name().name() == "templateId")
        .filter_map(|n| n.attribute("root"))
        .collect();
    assert_eq!(
        templates,
        [
            "2.16.840.1.113883.2.8.2.1",
            "1.2.250.1.213.1.1.1.1",
            "1.3.6.1.4.1.19376.1.3.3",
            "1.2.250.1.213.1.1.1.55"
        ]
    );
    // The INS first in recordTarget, then the IPP; the author's national id is 8 + RPPS.
    let role_ids: Vec<_> = doc
        .descendants()
        .find(|n| n.tag_name().name() == "patientRole")
        .unwrap()
        .children()
        .filter(|n| n.tag_name().name() == "id")
        .map(|n| {
            (
                n.attribute("root").unwrap(),
                n.attribute("extension").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        role_ids,
        [
            ("1.2.250.1.213.1.4.10", "279035121518989"),
            ("1.2.250.1.999.2", "IPP-1")
        ]
    );
    assert!(xml.contains(r#"<id root="1.2.250.1.71.4.2.1" extension="810001234567"/>"#));
    assert!(xml.contains(r#"<id root="1.2.250.1.71.4.2.2" extension="1750000001"/>"#));
    assert!(xml.contains("<family qualifier=\"BR\">D&apos;ARC &amp; &lt;FILS&gt;</family>"));
    assert!(xml.contains(r#"<value xsi:type="PQ" value="1.95" unit="m[IU]/L"/>"#));
    assert!(xml.contains(r#"<code code="SA25" codeSystem="1.2.250.1.71.4.2.4""#));
    assert!(!xml.contains("relatedDocument"));

    let reference = &tx["entry"][1]["resource"];
    let id = attr(&doc, "id", "root").unwrap();
    assert_eq!(
        reference["masterIdentifier"]["value"],
        format!("urn:oid:{id}")
    );
    assert_eq!(reference["status"], "current");
    assert_eq!(
        reference["content"][0]["attachment"]["url"],
        tx["entry"][0]["fullUrl"]
    );
    assert_eq!(
        reference["context"]["related"][0]["reference"],
        "DiagnosticReport/dr1/_history/1"
    );
    assert_eq!(
        tx["entry"][1]["request"]["url"],
        format!("DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:{id}")
    );
    assert!(reference.get("relatesTo").is_none());
    // The same change, the same bytes.
    assert_eq!(
        tx,
        transform()
            .transaction(&change("1", Kind::Create))
            .unwrap()
            .unwrap()
    );
}

/// Version 2 of a document (its transaction) replaces version 1: same set, another id,
/// an RPLC to the first, and a DocumentReference that `replaces` the first one.
fn assert_replaces(v1: &Value, v2: &Value) {
    let (x1, x2) = (cda_of(v1), cda_of(v2));
    let (d1, d2) = (
        roxmltree::Document::parse(&x1).unwrap(),
        roxmltree::Document::parse(&x2).unwrap(),
    );
    assert_eq!(attr(&d1, "setId", "root"), attr(&d2, "setId", "root"));
    assert_ne!(attr(&d1, "id", "root"), attr(&d2, "id", "root"));
    assert_eq!(attr(&d2, "versionNumber", "value"), Some("2"));
    let parent = d2
        .descendants()
        .find(|n| n.tag_name().name() == "relatedDocument")
        .filter(|n| n.attribute("typeCode") == Some("RPLC"))
        .and_then(|n| n.descendants().find(|c| c.tag_name().name() == "id"))
        .and_then(|n| n.attribute("root"));
    assert_eq!(parent, attr(&d1, "id", "root"));
    let replaces = &v2["entry"][1]["resource"]["relatesTo"][0];
    assert_eq!(replaces["code"], "replaces");
    assert_eq!(
        replaces["target"]["identifier"],
        v1["entry"][1]["resource"]["masterIdentifier"]
    );
}

#[test]
fn a_new_version_replaces_the_previous_document() {
    let v1 = transform()
        .transaction(&change("1", Kind::Create))
        .unwrap()
        .unwrap();
    let v2 = transform()
        .transaction(&change("2", Kind::Update))
        .unwrap()
        .unwrap();
    assert_replaces(&v1, &v2);
}

#[test]
fn what_makes_no_document_says_why() {
    let t = transform();
    let deleted = t.transaction(&change("1", Kind::Delete)).unwrap();
    assert!(deleted.unwrap_err().contains("was deleted"));
    let mut preliminary = change("1", Kind::Create);
    preliminary["entry"][0]["resource"]["status"] = json!("preliminary");
    assert_eq!(
        t.transaction(&preliminary).unwrap().unwrap_err(),
        "DiagnosticReport/dr1 is preliminary: a report is written once final"
    );
    let mut no_ins = change("1", Kind::Create);
    no_ins["entry"][1]["resource"]["identifier"] = json!([]);
    assert!(
        t.transaction(&no_ins)
            .unwrap_err()
            .contains("Patient/p1 has no INS")
    );
}

// --- LDL-SES ---------------------------------------------------------------------------

fn div(xhtml: &str) -> Value {
    json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{xhtml}</div>")})
}

fn letter_change(version: &str, sections: Value) -> Value {
    let letter = json!({
        "resourceType": "Composition", "id": "c1",
        "meta": {"versionId": version, "lastUpdated": "2024-03-05T09:00:00Z"},
        "status": if version == "1" { "final" } else { "amended" },
        "type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]},
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
        "date": "2024-03-05T16:30:00+01:00",
        "author": [{"reference": "Practitioner/pr1"}],
        "custodian": {"reference": "Organization/o1"},
        "title": "Lettre de liaison de sortie",
        "section": sections,
    });
    let included = vec![
        json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "279035121518989"}],
            "name": [{"family": "PAT-TROIS", "given": ["DOMINIQUE"]}],
            "gender": "female", "birthDate": "1979-03-28"}),
        practitioner("AUGUIN", "Léon"),
        organization("CH de Paris", "SA01", "Etablissement public de santé"),
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "Hospitalisation"},
            "period": {"start": "2024-03-01T11:17:00+01:00", "end": "2024-03-05T16:00:00+01:00"}}),
        json!({"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "urn:oid:1.2.250.1.213.2.3.1", "code": "62552920", "display": "LEPONEX 100 mg, comprimé sécable"}], "text": "LEPONEX 100 mg"},
            "dosageInstruction": [{"text": "1 comprimé le soir", "timing": {"repeat": {"boundsPeriod": {"start": "2024-03-05", "end": "2024-04-05"}}}}]}),
    ];
    notification(Kind::Update, letter, included, "2024-03-05T09:00:00Z")
}

fn full_letter() -> Value {
    json!([
        {"title": "Motif", "code": {"coding": [{"system": "http://loinc.org", "code": "42349-1"}]},
         "text": div("<p>Episode psychotique</p>")},
        {"title": "Synthèse", "code": {"coding": [{"system": "http://loinc.org", "code": "42545-4"}]},
         "text": div("<p>Infection <b>respiratoire</b> aiguë,</p><p>traitée.</p>")},
        {"title": "Traitements", "code": {"coding": [{"system": "http://loinc.org", "code": "10183-2"}]},
         "text": div("<ul><li>LEPONEX 100 mg</li></ul>"),
         "entry": [{"reference": "MedicationRequest/m1"}]},
        {"title": "Résultats attendus", "code": {"coding": [{"system": "http://loinc.org", "code": "30954-2"}]},
         "text": div("<table><tr><td>Echographie</td><td>attendue</td></tr></table>")},
    ])
}

fn letters() -> CdaDocument {
    CdaDocument {
        volet: Volet::LdlSes,
        destinations: vec!["store".into()],
    }
}

/// The sections of a CDA: (templateIds, code, text of the narrative).
fn sections(doc: &roxmltree::Document) -> Vec<(Vec<String>, String, String)> {
    doc.descendants()
        .filter(|n| n.tag_name().name() == "section")
        .map(|s| {
            let child = |name: &str| s.children().find(|c| c.tag_name().name() == name);
            (
                s.children()
                    .filter(|c| c.tag_name().name() == "templateId")
                    .map(|t| t.attribute("root").unwrap().to_string())
                    .collect(),
                child("code")
                    .and_then(|c| c.attribute("code"))
                    .unwrap_or_default()
                    .to_string(),
                child("text")
                    .map(|t| {
                        t.descendants()
                            .filter(|n| n.is_text())
                            .filter_map(|n| n.text())
                            .collect::<Vec<_>>()
                            .join("|")
                    })
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn a_discharge_letter_becomes_an_ldl_ses_document() {
    let tx = letters()
        .transaction(&letter_change("1", full_letter()))
        .unwrap()
        .unwrap();
    let xml = cda_of(&tx);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(attr(&doc, "code", "code"), Some("11490-0"));
    assert!(xml.contains(r#"<templateId root="1.2.250.1.213.1.1.1.29"/>"#));
    assert!(xml.contains(r#"<birthTime value="19790328"/>"#));
    assert!(
        xml.contains(r#"<low value="20240301111700+0100"/><high value="20240305160000+0100"/>"#)
    );
    assert!(xml.contains(r#"<code code="IMP" codeSystem="2.16.840.1.113883.5.4""#));
    let found = sections(&doc);
    let codes: Vec<_> = found.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        codes,
        ["33557-0", "42349-1", "42545-4", "10183-2", "30954-2"]
    );
    for (template, code) in [
        ("1.2.250.1.213.1.1.2.35.1", "33557-0"),
        ("1.3.6.1.4.1.19376.1.5.3.1.3.1", "42349-1"),
        ("1.3.6.1.4.1.19376.1.7.3.1.1.13.7", "42545-4"),
        ("1.3.6.1.4.1.19376.1.5.3.1.3.22", "10183-2"),
        ("1.3.6.1.4.1.19376.1.5.3.1.3.27", "30954-2"),
    ] {
        assert!(
            found
                .iter()
                .any(|s| s.1 == code && s.0.iter().any(|t| t == template)),
            "{template}"
        );
    }
    assert_eq!(found[1].2, "Episode psychotique");
    assert_eq!(found[2].2, "Infection respiratoire aiguë,|traitée.");
    assert_eq!(found[4].2, "Echographie|attendue");
    // The synthesis entry carries the same text; the treatment its CIS code and narrative.
    assert!(xml.contains(r#"<code code="MED-142" codeSystem="1.2.250.1.213.1.1.4.322""#));
    assert!(xml.contains("<value xsi:type=\"ST\">Infection respiratoire aiguë,\ntraitée.</value>"));
    assert!(xml.contains(r#"<content ID="treatment-1">LEPONEX 100 mg</content>"#));
    assert!(xml.contains(r##"<code code="62552920" codeSystem="1.2.250.1.213.2.3.1" displayName="LEPONEX 100 mg, comprimé sécable"><originalText><reference value="#treatment-1"/></originalText></code><name>LEPONEX 100 mg</name>"##));
    assert!(xml.contains(r#"<low value="20240305"/><high value="20240405"/>"#));
    assert!(xml.contains("<td>1 comprimé le soir</td>"));

    let reference = &tx["entry"][1]["resource"];
    assert_eq!(reference["type"]["coding"][0]["code"], "11490-0");
    assert_eq!(
        reference["content"][0]["format"]["code"],
        "urn:asip:ci-sis:ldl-ses:2017"
    );
    assert_eq!(
        reference["author"],
        json!([{"reference": "Practitioner/pr1"}])
    );
    assert_eq!(reference["custodian"]["reference"], "Organization/o1");
    assert_eq!(
        reference["context"]["encounter"][0]["reference"],
        "Encounter/e1"
    );
    assert_eq!(
        reference["context"]["related"][0]["reference"],
        "Composition/c1/_history/1"
    );
    assert_eq!(reference["description"], "Lettre de liaison de sortie");
}

#[test]
fn an_amended_letter_replaces_the_first() {
    let v1 = letters()
        .transaction(&letter_change("1", full_letter()))
        .unwrap()
        .unwrap();
    let v2 = letters()
        .transaction(&letter_change("2", full_letter()))
        .unwrap()
        .unwrap();
    assert_replaces(&v1, &v2);
}

#[test]
fn a_section_the_letter_lacks_is_not_given() {
    let tx = letters()
        .transaction(&letter_change("1", json!([])))
        .unwrap()
        .unwrap();
    let xml = cda_of(&tx);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let found = sections(&doc);
    assert_eq!(found.len(), 4);
    for s in &found[1..] {
        assert_eq!(s.2, "Non renseigné", "{}", s.1);
    }
    assert!(xml.contains(r#"<value xsi:type="ST" nullFlavor="NI"/>"#));
    assert!(xml.contains(
        r#"<substanceAdministration classCode="SBADM" moodCode="EVN" nullFlavor="UNK">"#
    ));
    assert!(xml.contains(r#"code="no-medication-info""#));

    let none = json!([{"title": "Traitements", "code": {"coding": [{"system": "http://loinc.org", "code": "10183-2"}]},
        "emptyReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "nilknown"}]}}]);
    let xml = cda_of(
        &letters()
            .transaction(&letter_change("1", none))
            .unwrap()
            .unwrap(),
    );
    assert!(xml.contains(r#"code="no-known-medications""#));
    assert!(xml.contains("<paragraph>Aucun traitement</paragraph>"));
}

#[test]
fn what_makes_no_letter_says_why() {
    let t = letters();
    let mut draft = letter_change("1", full_letter());
    draft["entry"][0]["resource"]["status"] = json!("preliminary");
    assert_eq!(
        t.transaction(&draft).unwrap().unwrap_err(),
        "Composition/c1 is preliminary: a letter is written once final"
    );
    assert_eq!(
        transform()
            .transaction(&letter_change("1", full_letter()))
            .unwrap()
            .unwrap_err(),
        "Composition/c1: the cr-bio volet is written from a DiagnosticReport"
    );
    let mut other = letter_change("1", full_letter());
    other["entry"][0]["resource"]["type"]["coding"][0]["code"] = json!("34133-9");
    assert!(
        t.transaction(&other)
            .unwrap_err()
            .contains("has type 34133-9: the ldl-ses volet is written from a discharge letter")
    );
    let mut no_stay = letter_change("1", full_letter());
    no_stay["entry"][0]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("encounter");
    assert!(
        t.transaction(&no_stay)
            .unwrap_err()
            .contains("has no encounter")
    );
    let mut missing = letter_change("1", full_letter());
    missing["entry"][0]["resource"]["section"][2]["entry"] =
        json!([{"reference": "MedicationRequest/gone"}]);
    assert!(
        t.transaction(&missing)
            .unwrap_err()
            .contains("MedicationRequest/gone is not in the change")
    );
    let mut html = letter_change("1", full_letter());
    html["entry"][0]["resource"]["section"][0]["text"]["div"] = json!("<div>a&nbsp;b</div>");
    assert!(
        t.transaction(&html)
            .unwrap_err()
            .contains("the text of section `Motif` is not XHTML")
    );
}

#[test]
fn a_narrative_keeps_its_paragraphs_lists_and_tables() {
    let blocks = narrative::blocks(
        "<div xmlns=\"http://www.w3.org/1999/xhtml\">Avant <span>tout</span><br/>après\n  <ul><li>un</li><li> deux </li></ul><table><thead><tr><th>A</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table><div><p>fin</p></div></div>",
    )
    .unwrap();
    assert_eq!(
        blocks,
        [
            write::Block::Paragraph("Avant tout".into()),
            write::Block::Paragraph("après".into()),
            write::Block::List(vec!["un".into(), "deux".into()]),
            write::Block::Table(vec![
                vec![write::Cell {
                    header: true,
                    text: "A".into(),
                    id: None
                }],
                vec![write::Cell {
                    header: false,
                    text: "1".into(),
                    id: None
                }],
            ]),
            write::Block::Paragraph("fin".into()),
        ]
    );
}
