use super::*;
use crate::channel::change::notification;

const NS: &str = "urn:hl7-org:v3";

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
        json!({"resourceType": "Practitioner", "id": "pr1",
            "identifier": [{"system": RPPS, "value": "10001234567"}],
            "name": [{"family": "CAMPARINI", "given": ["Marcel"]}]}),
        json!({"resourceType": "Organization", "id": "o1",
            "identifier": [{"system": FINESS, "value": "750000001"}],
            "name": "Laboratoire du CHBM",
            "type": [{"coding": [{"system": "urn:oid:1.2.250.1.71.4.2.4", "code": "SA25", "display": "Laboratoire de biologie médicale"}]}]}),
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
    let (x1, x2) = (cda_of(&v1), cda_of(&v2));
    let (d1, d2) = (
        roxmltree::Document::parse(&x1).unwrap(),
        roxmltree::Document::parse(&x2).unwrap(),
    );
    assert_eq!(attr(&d1, "setId", "root"), attr(&d2, "setId", "root"));
    assert_ne!(attr(&d1, "id", "root"), attr(&d2, "id", "root"));
    assert_eq!(attr(&d2, "versionNumber", "value"), Some("2"));
    let parent = d2
        .descendants()
        .find(|n| n.tag_name().name() == "parentDocument")
        .and_then(|n| n.children().find(|c| c.tag_name().name() == "id"))
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
