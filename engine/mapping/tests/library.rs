//! The bundled mapping library (mappings/ and schemas/conceptmaps/ at the workspace root)
//! loads without a problem and passes its golden tests; broken files are reported with the
//! position of the mistake.

use std::path::{Path, PathBuf};

use passerelle_mapping::Library;
use passerelle_mapping::golden::{self, Outcome};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn bundled_mappings_load_and_pass_their_golden_tests() {
    let (library, problems) = Library::load(
        &root().join("mappings"),
        &root().join("schemas/conceptmaps"),
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(library.mapping("adt").is_some());
    let cases = golden::run_all(&library, None, false);
    assert!(cases.len() >= 4, "golden tests found: {}", cases.len());
    let failed: Vec<String> = cases
        .iter()
        .filter(|c| c.outcome != Outcome::Passed)
        .map(|c| format!("{}: {:?}", c.input.display(), c.outcome))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Loads one mapping file (`name.yaml`) with these CSV ConceptMaps (`name`, text), in a
/// folder of its own; the folder lives as long as the returned guard.
fn load_one(
    name: &str,
    mapping: &str,
    conceptmaps: &[(&str, &str)],
) -> (tempfile::TempDir, Library, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("mappings");
    let cms = dir.path().join("conceptmaps");
    std::fs::create_dir_all(&maps).unwrap();
    std::fs::create_dir_all(&cms).unwrap();
    for (cm, text) in conceptmaps {
        std::fs::write(cms.join(format!("{cm}.csv")), text).unwrap();
    }
    std::fs::write(maps.join(format!("{name}.yaml")), mapping).unwrap();
    let (library, problems) = Library::load(&maps, &cms);
    let problems = problems
        .iter()
        .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
        .collect();
    (dir, library, problems)
}

fn problems_of(mapping: &str) -> Vec<String> {
    load_one("broken", mapping, &[("sex", "source,target\nF,female\n")]).2
}

/// The Bundle a loaded mapping makes of a message (segments separated by `\r`).
fn bundle_of(library: &Library, mapping: &str, text: &str) -> serde_json::Value {
    let message = passerelle_hl7v2::Message::parse(text.as_bytes()).unwrap();
    library
        .run(library.mapping(mapping).unwrap(), &message)
        .unwrap()
        .bundle
}

#[test]
fn mistakes_are_reported_at_their_line_and_column() {
    let problems = problems_of(
        "messages: [ADT^A01]
resources:
  - name: patient
    type: Patient
    fields:
      gender: { from: PID-8, lookup: sexe }
      birthDate: { from: PID7, as: date }
      name: PID-5[*]
      active: { from: PID-30, as: bool }
      telecom[]: { from: PID-13, fn: shout }
      identifier[]: { from: \"PID-3[*]\", where: \".5 = PI\" }
      link[]: { ref: nobody }
      colour: { from: PID-8, size: 3 }
",
    );
    let expect = [
        "6:38: unknown ConceptMap `sexe`",
        "7:26: `PID7`: a field number is expected",
        "8:7: `PID-5[*]` selects several values but `name` takes one",
        "9:35: unknown type `bool`",
        "10:38: unknown function `shout`",
        "11:54: in the condition: a quoted value is expected here",
        "12:22: `ref: nobody` names no resource",
        "13:30: unknown key `size` in a rule",
    ];
    for e in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "missing `{e}` in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
}

#[test]
fn invalid_yaml_is_reported_with_its_position() {
    let problems = problems_of("messages: [ADT^A01\nresources: [\n");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("not valid YAML"), "{problems:#?}");
    assert!(!problems[0].starts_with("0:"), "{problems:#?}");
}

/// A key of several parameters: each takes its value, a `ref:` gives the Bundle's `urn:uuid:`
/// of the resource (the store resolves it), a CodeableConcept its `system|code`; with one
/// parameter missing there is no key, and the resource is created rather than matched on
/// half a key.
#[test]
fn keys_of_several_parameters_hold_only_when_complete() {
    let (_dir, library, problems) = load_one(
        "allergies",
        "messages: [ADT^A01]
resources:
  - name: patient
    type: Patient
    key:
      identifier: { from: PID-3.1 }
    fields:
      identifier[]: { fields: { value: PID-3.1 } }
  - name: allergy
    type: AllergyIntolerance
    for: \"AL1[*]\"
    key:
      patient: { ref: patient }
      code:
        fields:
          coding[]:
            fields:
              system: { from: AL1-3.3, lookup: systems }
              code: AL1-3.1
    fields:
      patient: { ref: patient }
      code: { fields: { text: AL1-3.2 } }
",
        &[("systems", "source,target\nSCT,http://snomed.info/sct\n")],
    );
    assert!(problems.is_empty(), "{problems:?}");
    let text = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||123\r\
                AL1|1||91936005^Penicillin^SCT\rAL1|2||^Dust\r";
    let bundle = bundle_of(&library, "allergies", text);
    let entries = bundle["entry"].as_array().unwrap();
    let patient_url = entries[0]["fullUrl"].as_str().unwrap();
    assert_eq!(entries[0]["request"]["url"], "Patient?identifier=123");
    assert_eq!(
        entries[1]["request"]["url"],
        format!("AllergyIntolerance?patient={patient_url}&code=http://snomed.info/sct|91936005")
    );
    assert_eq!(entries[2]["request"]["method"], "POST", "no code: no key");
    assert_eq!(entries[2]["request"]["url"], "AllergyIntolerance");
}

/// Every message type the bundled library is meant to map has a golden test beside its
/// mapping: the ADT events of IHE PAM / PAM FR, results, documents, orders, appointments,
/// prescriptions and dispenses.
#[test]
fn every_bundled_message_type_has_a_golden_test() {
    let mut expected: Vec<String> = [
        "A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13", "A21", "A22",
        "A28", "A31", "A40", "A47", "A52", "A53", "A54", "A55", "Z99",
    ]
    .iter()
    .map(|e| format!("ADT^{e}"))
    .collect();
    expected.extend(
        [
            "ORU^R01", "MDM^T02", "MDM^T04", "MDM^T10", "OML^O21", "ORM^O01", "SIU^S12", "SIU^S13",
            "SIU^S14", "SIU^S15", "SIU^S17", "SIU^S26", "RDE^O11", "OMP^O09", "RDS^O13",
        ]
        .map(String::from),
    );
    let mut found = std::collections::BTreeSet::new();
    for dir in std::fs::read_dir(root().join("mappings/hl7v2")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.to_string_lossy().ends_with(".tests") {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "hl7") {
                let bytes = std::fs::read(&file).unwrap();
                let message = passerelle_hl7v2::Message::parse(&bytes).unwrap();
                let h = message.header();
                found.insert(format!(
                    "{}^{}",
                    h.message_type.as_deref().unwrap_or(""),
                    h.trigger_event.as_deref().unwrap_or("")
                ));
            }
        }
    }
    let missing: Vec<&String> = expected.iter().filter(|t| !found.contains(*t)).collect();
    assert!(missing.is_empty(), "no golden test for {missing:?}");
}

#[test]
fn join_makes_text_only() {
    let problems = problems_of(
        "messages: [MDM^T02]
resources:
  - name: doc
    type: DocumentReference
    fields:
      description: { from: \"OBX[*]-5\", join: \" \", lookup: sex }
      content[]: { from: \"OBX[*]-5\", join: \" \", fn: hd_uri }
",
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("6:20: `join` makes one text"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("7:18: this `fn` reads the parts"),
        "{problems:?}"
    );
}

/// `not-mapped.csv` declares message types left unmapped on purpose, each with its reason;
/// a line without a reason, or with something that is not a message type, is a problem with
/// its line.
#[test]
fn types_left_unmapped_on_purpose_carry_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("not-mapped.csv"),
        "# why\nmessage,reason\nACK,acknowledgements carry no data\nADT^A29,an analyst decides\nbar,lower case\nDFT,\n",
    )
    .unwrap();
    let no_conceptmaps = dir.path().join("none");
    let (library, problems) = Library::load(dir.path(), &no_conceptmaps);
    assert_eq!(
        library.not_mapped("ACK", "R01"),
        Some("acknowledgements carry no data")
    );
    assert_eq!(library.not_mapped("ADT", "A29"), Some("an analyst decides"));
    assert_eq!(library.not_mapped("ADT", "A01"), None);
    let lines: Vec<(usize, &str)> = problems
        .iter()
        .map(|p| (p.line, p.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (5, "`bar` is not a message type (ADT, ADT^A29)"),
            (6, "`DFT` needs a reason")
        ]
    );
}

/// `passerelle mappings test PATH`: a folder or a mapping file runs its tests, a test's input
/// file runs that test alone.
#[test]
fn golden_tests_can_be_run_one_by_one() {
    let (library, _) = Library::load(
        &root().join("mappings"),
        &root().join("schemas/conceptmaps"),
    );
    let one = root().join("mappings/hl7v2/adt.tests/a28-create-qualified.hl7");
    let cases = golden::run_all(&library, Some(&one), false);
    assert_eq!(cases.len(), 1);
    assert!(cases[0].input.ends_with("a28-create-qualified.hl7"));
    let oru = golden::run_all(
        &library,
        Some(&root().join("mappings/hl7v2/oru.yaml")),
        false,
    );
    assert!(oru.len() >= 2 && oru.iter().all(|c| c.mapping == "oru"));
}

/// A value that comes out empty (a code of blanks) produces nothing, as an absent one does:
/// FHIR allows no empty value, and the objects that would hold it are not written either.
#[test]
fn blank_values_produce_nothing() {
    let (_dir, library, problems) = load_one(
        "blank",
        "messages: [ADT^A01]
resources:
  - name: patient
    type: Patient
    fields:
      gender: { from: PID-8, as: code }
      maritalStatus:
        fields:
          coding[]:
            fields:
              code: { from: PID-16, as: code }
      birthDate: { from: PID-7, as: date }
",
        &[],
    );
    assert!(problems.is_empty(), "{problems:?}");
    let text = "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||123||X||19800101| ||||||||  \r";
    assert_eq!(
        bundle_of(&library, "blank", text)["entry"][0]["resource"],
        serde_json::json!({"resourceType": "Patient", "birthDate": "1980-01-01"})
    );
}

/// An outbound mapping (FHIR in, HL7 v2 out) with a datatype map of its own.
const OUTBOUND: &str = "messages: [MedicationRequest]
output: hl7v2
segments:
  - segment: MSH
    fields:
      3.1: { value: PASSERELLE }
      9.1: { value: RDE }
      10: { concat: [id, { value: '/' }, meta.versionId] }
  - segment: PID
    fields:
      3[]: { from: subject.resolve().identifier, as: Identifier-CX }
      8: { from: subject.resolve().gender, lookup: sex, unmapped: U }
  - segment: ORC
    fields:
      1:
        - { value: NW, when: \"meta.versionId = '1'\" }
        - { value: XO }
  - segment: RXR
    for: dosageInstruction
    when: .route
    fields:
      1.1: .route.coding.code
      1.2: .route.text
";

const IDENTIFIER_CX: &str = "datatype: Identifier-CX
target: CX
fields:
  1: .value
  4.2: .system
";

fn load_outbound(mapping: &str) -> (tempfile::TempDir, Library, Vec<String>) {
    let (dir, _, _) = load_one("out", mapping, &[("sex", "source,target\nfemale,F\n")]);
    std::fs::write(
        dir.path().join("mappings/Identifier-CX.yaml"),
        IDENTIFIER_CX,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mappings/Inbound-CX.yaml"),
        "datatype: Inbound-CX\ntarget: Identifier\nfields:\n  value: .1\n",
    )
    .unwrap();
    let (library, problems) = Library::load(
        &dir.path().join("mappings"),
        &dir.path().join("conceptmaps"),
    );
    let problems = problems
        .iter()
        .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
        .collect();
    (dir, library, problems)
}

#[test]
fn an_outbound_mapping_writes_an_hl7_v2_message_from_a_change() {
    let (_dir, library, problems) = load_outbound(OUTBOUND);
    assert!(problems.is_empty(), "{problems:#?}");
    let change = serde_json::json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"resource": {"resourceType": "MedicationRequest", "id": "m1",
                "meta": {"versionId": "2"},
                "subject": {"reference": "Patient/p1"},
                "dosageInstruction": [
                    {"route": {"coding": [{"code": "PO"}], "text": "per os | oral"}},
                    {"text": "no route: no RXR"},
                    {"route": {"coding": [{"code": "IV"}]}}]}},
            {"resource": {"resourceType": "Patient", "id": "p1", "gender": "female",
                "identifier": [{"system": "urn:oid:1.2", "value": "1^2"}, {"value": "9"}]}}
        ]
    });
    let mapping = library.mapping("out").unwrap();
    let out = library.run_fhir(mapping, &change).unwrap();
    assert!(out.bundle.is_null());
    assert_eq!(
        out.message.unwrap(),
        "MSH|^~\\&|PASSERELLE||||||RDE|m1/2\r\
         PID|||1\\S\\2^^^&urn:oid:1.2~9|||||F\r\
         ORC|XO\r\
         RXR|PO^per os \\F\\ oral\r\
         RXR|IV\r"
    );
    // The first version is a new order; a resource on its own resolves nothing (and an
    // absent gender is no unknown code: `unmapped` does not apply).
    let alone = serde_json::json!({"resourceType": "MedicationRequest", "id": "m2",
        "meta": {"versionId": "1"}, "subject": {"reference": "Patient/p1"}});
    assert_eq!(
        library.run_fhir(mapping, &alone).unwrap().message.unwrap(),
        "MSH|^~\\&|PASSERELLE||||||RDE|m2/1\rPID\rORC|NW\r"
    );
}

#[test]
fn outbound_mistakes_are_reported_at_their_line_and_column() {
    let broken = OUTBOUND
        .replace("3.1: { value", "2: { value")
        .replace("1.1: .route", "1.x: .route")
        .replace("as: Identifier-CX", "as: CX")
        .replace("when: .route", "when: RXR-1");
    let (_dir, _, problems) = load_outbound(&broken);
    let text = problems.join("\n");
    for expected in [
        "4:12: MSH-1 and MSH-2 are the separators",
        "22:7: `1.x` is not an HL7 v2 position",
        "unknown type `CX`",
        "20:11: in the condition: `RXR-1` in `RXR-1` is not an element name",
    ] {
        assert!(text.contains(expected), "{expected} not in:\n{text}");
    }
    let (_dir, _, problems) =
        load_outbound(&OUTBOUND.replace("segments:", "resources: []\nsegments:"));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("has `segments:`, not `resources:`")),
        "{problems:?}"
    );
    let (_dir, _, problems) =
        load_outbound(&OUTBOUND.replace("  - segment: MSH\n", "  - segment: EVN\n"));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("the first segment is MSH")),
        "{problems:?}"
    );
    // An inbound map (HL7 v2 to FHIR) in a mapping that writes HL7 v2 is refused by name.
    let (_dir, _, problems) =
        load_outbound(&OUTBOUND.replace("as: Identifier-CX", "as: Inbound-CX"));
    assert!(
        problems.iter().any(|p| p
            .contains("datatype map `Inbound-CX` turns HL7 v2 into FHIR; this file writes HL7 v2")),
        "{problems:?}"
    );
}
