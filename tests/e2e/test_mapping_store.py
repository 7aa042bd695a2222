"""HL7 v2 over MLLP -> the bundled mappings -> the FHIR store, end to end: a sending system
(python-hl7's MLLP client) sends A28, A01 (twice), A08, ORU (twice), an A01 for a duplicate
identity and the A40 that merges it; the store holds exactly the resources they describe
(upserts on the IPP, the visit number and the filler order number, no duplicates), with the
INS kept only while the identity is qualified (PAM FR's VALI rule) and the duplicate's stay
moved to the surviving patient. Every resource read back validates with `fhir.resources`."""

import json

import pytest

from conftest import ROOT, Engine, send_messages
from test_fhir import Fhir, issue_token, validate

IPP = "urn:oid:1.2.250.1.999.1.1|0412345"
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
TESTS = ROOT / "mappings" / "hl7v2" / "adt.tests"


def golden_input(name: str) -> str:
    return (TESTS / name).read_text().replace("\n", "\r")


def with_control_id(message: str, control_id: str) -> str:
    msh, rest = message.split("\r", 1)
    fields = msh.split("|")
    fields[9] = control_id
    return "|".join(fields) + "\r" + rest


A08 = (
    "MSH|^~\\&|GAM|HNFC|PASSERELLE|HNFC|20241105090000||ADT^A08^ADT_A01|A08-0001|P|2.5^FRA^2.11"
    "|||||FRA|UNICODE UTF-8|||2.11^IHE_FRANCE-2.11-PAM\r"
    "EVN||20241105090000\r"
    "PID|1||0412345^^^HNFC&1.2.250.1.999.1.1&ISO^PI~285027512345678^^^ASIP-SANTE-INS-NIR"
    "&1.2.250.1.213.1.4.8&ISO^INS||GARNIER^JEANNE^JEANNE MARIE^^^^L||19850214|F|||"
    "3 avenue Jean Jaurès^^MONTBELIARD^^25200^FRA^H" + "|" * 21 + "PROV\r"
    "PV1|1|I|CARD^101^1^HNFC" + "|" * 16 + "V2024-778^^^HNFC&1.2.250.1.999.1.2&ISO^VN" + "|" * 25
    + "202411041025\r"
)


@pytest.fixture
def engine(workdir):
    e = Engine(workdir, ROOT / "channels").start()
    yield e
    e.stop()


def stays(fhir: Fhir, query: str = "") -> list:
    """The stays (the movements are Encounters part of them)."""
    return [e for e in fhir.search("Encounter" + query) if "partOf" not in e]


def send(engine: Engine, *messages: str):
    acks = send_messages(engine.mllp_port, list(messages))
    assert [a.code for a in acks] == ["AA"] * len(messages), acks
    for a in acks:
        engine.wait_message(a.control_id, status="sent")


def test_identity_feed_and_movements_upsert_the_same_resources(engine):
    fhir = Fhir(engine, issue_token(engine, "system/*.*"))
    a28 = golden_input("a28-create-qualified.hl7")
    a01 = golden_input("a01-admit.hl7")

    send(engine, a28)
    [patient] = fhir.search(f"Patient?identifier={IPP}")
    ins = [i for i in patient["identifier"] if i.get("system") == INS_SYSTEM]
    assert [i["value"] for i in ins] == ["285027512345678"], patient["identifier"]
    assert ins[0]["type"]["coding"][0]["code"] == "INS-NIR"
    status = patient["extension"][0]["extension"][0]["valueCoding"]["code"]
    assert status == "QUAL", "PAM FR VALI is FR Core QUAL"
    # The channel's write is audited like an API write: who (the channel), what, which message.
    events = fhir.search(f"AuditEvent?entity=Patient/{patient['id']}")
    by_channel = [e for e in events if e["agent"][0]["who"]["display"] == "channel hl7v2-inbound"]
    assert len(by_channel) == 1, events
    assert "A28-0001" in by_channel[0]["outcomeDesc"] and by_channel[0]["action"] == "U"

    # The admission, then the same admission again (a retransmission with a new MSH-10).
    send(engine, a01, with_control_id(a01, "A01-0001-RESENT"))
    assert fhir.ids("Patient") == {patient["id"]}, "the IPP keys the Patient: no duplicate"
    [encounter] = stays(fhir)
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
    assert (encounter["status"], encounter["class"]["code"]) == ("in-progress", "IMP")
    assert encounter["period"]["start"] == "2024-11-04T10:25:00+01:00"
    assert encounter["participant"][0]["individual"]["identifier"]["value"] == "10101010101"
    assert encounter["meta"]["versionId"] == "2", "the retransmission updated, not created"
    [movement] = fhir.search(f"Encounter?part-of=Encounter/{encounter['id']}")
    assert movement["identifier"][0]["value"] == "MVT-1" and movement["meta"]["versionId"] == "2"

    # An update whose identity is no longer qualified: new address, and the INS must go.
    send(engine, A08)
    [patient] = fhir.search(f"Patient?identifier={IPP}")
    assert [a["city"] for a in patient["address"]] == ["MONTBELIARD"]
    assert [i for i in patient["identifier"] if i.get("system") == INS_SYSTEM] == []
    assert fhir.search(f"Patient?identifier={INS_SYSTEM}|285027512345678") == []
    assert len(stays(fhir)) == 1
    history = fhir.ok("GET", f"/Patient/{patient['id']}/_history")
    assert len(history["entry"]) == 4, "A28, A01, the A01 again, A08: one version each"

    # Lab results for that patient, twice (a retransmission): two reports, four results,
    # all on the same Patient, which the lab's demographics do not overwrite.
    oru = golden_input("../oru.tests/r01-two-orders.hl7")
    send(engine, oru, with_control_id(oru, "ORU-0001-RESENT"))
    reports = fhir.search("DiagnosticReport")
    observations = fhir.search("Observation")
    assert sorted(r["identifier"][0]["value"] for r in reports) == ["LAB-1", "LAB-2"]
    assert sorted(o["identifier"][0]["value"] for o in observations) == ["LAB-1-1", "LAB-1-2", "LAB-2-1", "LAB-2-2"]
    subjects = {r["subject"]["reference"] for r in reports + observations}
    assert subjects == {f"Patient/{patient['id']}"}, subjects
    [lipids] = [r for r in reports if r["identifier"][0]["value"] == "LAB-1"]
    by_id = {o["id"]: o for o in observations}
    results = [by_id[r["reference"].split("/")[1]] for r in lipids["result"]]
    assert [o["valueQuantity"]["value"] for o in results] == [2.1, 1.2]
    assert results[0]["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    assert fhir.ids("Patient") == {patient["id"]}
    [after] = fhir.search(f"Patient?identifier={IPP}")
    assert after["meta"]["versionId"] == patient["meta"]["versionId"], "ORU never overwrites the Patient"

    # A duplicate identity is admitted (another IPP), then merged into the first one (A40).
    duplicate = with_control_id(
        a01.replace("0412345^", "0499998^").replace("V2024-778", "V2024-900").replace("MVT-1", "MVT-9"),
        "A01-DUPLICATE")
    send(engine, duplicate)
    [dup] = fhir.search("Patient?identifier=urn:oid:1.2.250.1.999.1.1|0499998")
    [stay] = fhir.search("Encounter?identifier=urn:oid:1.2.250.1.999.1.2|V2024-900")
    assert stay["subject"]["reference"] == f"Patient/{dup['id']}"
    send(engine, golden_input("a40-merge.hl7"))
    [stay] = fhir.search("Encounter?identifier=urn:oid:1.2.250.1.999.1.2|V2024-900")
    assert stay["subject"]["reference"] == f"Patient/{patient['id']}", "the merge moved the stay"
    [dup] = fhir.search("Patient?identifier=urn:oid:1.2.250.1.999.1.1|0499998")
    assert dup["active"] is False
    assert dup["link"] == [{"other": {"reference": f"Patient/{patient['id']}"}, "type": "replaced-by"}]
    [survivor] = fhir.search(f"Patient?identifier={IPP}")
    assert {"other": {"reference": f"Patient/{dup['id']}"}, "type": "replaces"} in survivor["link"]
    assert fhir.search(f"Encounter?subject=Patient/{dup['id']}") == []
    assert len(fhir.search("Patient")) == 2 and len(stays(fhir)) == 2


def test_a_stay_with_contacts_allergies_diagnoses_and_dmp_consents(engine):
    """Everything an A01 of PAM FR carries besides the patient and the stay: next of kin,
    insurance, allergies, diagnoses, movement (ZBE), DMP consents (ZFA), identity evidence
    (ZFD). Sent twice, then updated, then the admission cancelled: each of them stays one
    resource, updated in place."""
    fhir = Fhir(engine, issue_token(engine, "system/*.*"))
    a01 = golden_input("a01-full-stay.hl7")
    send(engine, a01, with_control_id(a01, "A01-0002-RESENT"))
    [patient] = fhir.search("Patient")
    me = f"Patient/{patient['id']}"
    reliability = {x["url"]: x for x in patient["extension"][0]["extension"]}
    assert reliability["methodCollection"]["valueCoding"]["code"] == "INSI"
    assert reliability["validationMode"]["valueCoding"]["code"] == "CN"
    contacts = fhir.search(f"RelatedPerson?patient={me}")
    assert sorted(c["name"][0]["given"][0] for c in contacts) == ["LUCIE", "PIERRE"]
    assert all(c["meta"]["versionId"] == "2" for c in contacts), "upserted, not created twice"
    [coverage] = fhir.search(f"Coverage?beneficiary={me}")
    assert coverage["payor"][0]["display"] == "CPAM du Territoire de Belfort"
    [allergy] = fhir.search(f"AllergyIntolerance?patient={me}")
    assert [r["manifestation"][0]["text"] for r in allergy["reaction"]] == ["Urticaria", "Angioedema"]
    [diagnosis] = fhir.search(f"Condition?patient={me}")
    assert diagnosis["code"]["coding"][0]["code"] == "I21.9"
    [stay] = stays(fhir)
    assert diagnosis["encounter"]["reference"] == f"Encounter/{stay['id']}"
    [movement] = fhir.search(f"Encounter?part-of=Encounter/{stay['id']}")
    assert movement["serviceProvider"]["identifier"]["value"] == "4010"
    consents = {c["category"][1]["coding"][0]["code"]: c for c in fhir.search(f"Consent?patient={me}")}
    assert {k: (c["status"], c["provision"]["type"]) for k, c in consents.items()} == {
        "feeding": ("active", "permit"), "consultation": ("active", "permit")}

    # The patient now objects to feeding the DMP and refuses its consultation (A31).
    a31 = with_control_id(a01, "A31-0002").replace("ADT^A01^ADT_A01", "ADT^A31^ADT_A05")
    a31 = a31.replace("|INO|", "|IO|").replace("|IC|", "|INC|")
    send(engine, a31)
    consents = {c["category"][1]["coding"][0]["code"]: c for c in fhir.search(f"Consent?patient={me}")}
    assert {k: c["provision"]["type"] for k, c in consents.items()} == {
        "feeding": "deny", "consultation": "deny"}
    assert len(fhir.search(f"Consent?patient={me}")) == 2, "the same two consents, updated"
    assert len(fhir.search("RelatedPerson")) == 2 and len(fhir.search("AllergyIntolerance")) == 1
    assert len(fhir.search("Coverage")) == 1 and len(fhir.search("Condition")) == 1

    # The admission is cancelled (A11, ZBE-4 CANCEL naming the movement): the stay is
    # cancelled and its movement entered-in-error, neither is deleted.
    a11 = with_control_id(a01, "A11-0002").replace("ADT^A01^ADT_A01", "ADT^A11^ADT_A09")
    a11 = a11.replace("|INSERT|N|", "|CANCEL|N|A01|")
    send(engine, a11)
    [stay] = stays(fhir)
    [movement] = fhir.search(f"Encounter?part-of=Encounter/{stay['id']}")
    assert (stay["status"], movement["status"]) == ("cancelled", "entered-in-error")
    assert movement["type"][0]["coding"][0]["code"] == "A01", "the movement keeps its event"
    for resource in [patient, stay, movement, coverage, allergy, diagnosis, *contacts, *consents.values()]:
        validate(resource)


def test_a_mapping_failure_is_journaled_with_the_rule_and_nothing_is_written(engine):
    fhir = Fhir(engine, issue_token(engine, "system/*.*"))
    bad = golden_input("a01-admit.hl7").replace("PV1|1|I|", "PV1|1|Q|")
    bad = with_control_id(bad, "A01-BAD-CLASS")
    acks = send_messages(engine.mllp_port, [bad])
    journaled = engine.wait_message("A01-BAD-CLASS", status="errored")
    detail = engine.message(journaled["id"])
    transform = next(s for s in detail["trace"] if s["step"] == "transform")
    assert "hl7v2/adt.yaml:" in transform["detail"], transform
    assert "PV1-2" in transform["detail"] and "`Q`" in transform["detail"], transform
    # The message is safe in the journal, hence AA; it waits as `errored`, with the rule
    # that failed in its trace, until the mapping is fixed and the message reprocessed.
    assert [a.code for a in acks] == ["AA"], acks
    assert fhir.search("Patient") == [] and fhir.search("Encounter") == []


def test_every_golden_output_validates_with_fhir_resources():
    """What the bundled mappings produce is valid FHIR for a third-party model, not only for
    our own store."""
    outputs = sorted((ROOT / "mappings").rglob("*.tests/*.json"))
    assert outputs, "no golden outputs found"
    for path in outputs:
        bundle = json.loads(path.read_text())
        validate(bundle)
        for entry in bundle["entry"]:
            validate(entry["resource"])


def test_the_bundled_channel_maps_every_type_of_the_library(engine):
    """Every mapping of the library is wired into the bundled channel: a golden input of each,
    sent over MLLP, ends `sent` with its resources in the store; a type left unmapped on
    purpose (mappings/not-mapped.csv) is acknowledged and `filtered`, with the reason."""
    fhir = Fhir(engine, issue_token(engine, "system/*.*"))
    cases = [
        ("../oru.tests/r01-two-orders.hl7", "DiagnosticReport"),
        ("../orders.tests/o21-new-and-cancelled.hl7", "ServiceRequest"),
        ("../pharmacy.tests/o11-new-prescription.hl7", "MedicationRequest"),
        ("../pharmacy.tests/o13-dispense.hl7", "MedicationDispense"),
        ("../scheduling.tests/s12-booked.hl7", "Appointment"),
        ("../documents.tests/t02-text-report.hl7", "DocumentReference"),
        ("../immunizations.tests/v04-two-vaccinations.hl7", "Immunization"),
        ("../problems.tests/pc1-add-and-resolve.hl7", "Condition"),
    ]
    for name, resource_type in cases:
        send(engine, golden_input(name))
        assert fhir.search(resource_type), f"{name}: no {resource_type} stored"
    assert len(fhir.search("Immunization")) == 2 and len(fhir.search("Condition")) == 2
    assert fhir.ids("Patient") and len(fhir.search("Patient")) == 1, "every feed found the same patient"

    # An appointment booked in a named schedule, then cancelled: one Schedule, one Slot,
    # busy then free again, which the Appointment points to.
    send(engine, golden_input("../scheduling.tests/s12-booked-in-schedule.hl7"))
    [slot] = fhir.search("Slot")
    assert slot["status"] == "busy"
    send(engine, golden_input("../scheduling.tests/s15-cancelled-in-schedule.hl7"))
    [slot] = fhir.search("Slot")
    [schedule] = fhir.search("Schedule")
    assert (slot["status"], slot["schedule"]["reference"]) == ("free", f"Schedule/{schedule['id']}")
    [booked] = fhir.search("Appointment?identifier=urn:oid:1.2.250.1.999.6.2|APT-77")
    assert booked["status"] == "cancelled" and booked["slot"] == [{"reference": f"Slot/{slot['id']}"}]

    a29 = with_control_id(golden_input("a01-admit.hl7"), "A29-0001").replace("ADT^A01^ADT_A01", "ADT^A29^ADT_A21")
    acks = send_messages(engine.mllp_port, [a29])
    assert [a.code for a in acks] == ["AA"], acks
    journaled = engine.wait_message("A29-0001", status="filtered")
    trace = engine.message(journaled["id"])["trace"]
    assert any("not mapped on purpose" in (s.get("detail") or "") for s in trace), trace
