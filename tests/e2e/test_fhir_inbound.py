"""The `fhir-inbound` channel: FHIR resources and Bundles POSTed to /api/inbound/fhir-inbound are
checked, journaled, adapted and applied to the store, and the sender gets FHIR answers
(transaction-response, Location, OperationOutcome). Driven by a third-party HTTP client
(requests); what the server answers and stores is validated with the `fhir.resources` models."""

import json

import pytest
import requests

from conftest import corpus
from test_fhir import FHIR_JSON, Fhir, issue_token, validate

INBOUND = "/api/inbound/fhir-inbound"
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
#: The patient the ANS PDSm/MHD examples refer to (`Patient?identifier=...`).
PDSM_INS = "123456789012345"


class Inbound:
    def __init__(self, engine, token: str):
        self.engine = engine
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def post(self, body, content_type: str = FHIR_JSON, channel: str = "fhir-inbound") -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = self.session.post(f"{self.engine.base}/api/inbound/{channel}", data=data,
                              headers={"Content-Type": content_type}, timeout=120)
        assert r.headers["Content-Type"].startswith(FHIR_JSON), (r.status_code, r.text)
        validate(r.json())
        return r


@pytest.fixture
def tokens(bundled_engine):
    return issue_token(bundled_engine, "system/*.*")


@pytest.fixture
def inbound(bundled_engine, tokens):
    return Inbound(bundled_engine, tokens)


@pytest.fixture
def fhir(bundled_engine, tokens):
    return Fhir(bundled_engine, tokens)


def message_of(engine, response) -> dict:
    """The journal entry a response names in Content-Location."""
    return engine.api(response.headers["Content-Location"])


def test_the_ans_pdsm_and_mhd_examples_are_accepted_applied_and_answered(bundled_engine, inbound, fhir):
    root = corpus()
    if root is None:
        pytest.skip("PASSERELLE_CORPUS is not set: the ANS FHIR examples are not available")
    examples = root / "ansforge-fhir"
    # The patient they refer to, sent as a bare resource with its INS written as a bare OID:
    # the channel normalises it to the urn:oid: the examples search for.
    r = inbound.post({"resourceType": "Patient", "name": [{"family": "EXEMPLE"}],
                      "identifier": [{"system": "1.2.250.1.213.1.4.8", "value": PDSM_INS}]})
    assert r.status_code == 201, r.text
    assert "/fhir/Patient/" in r.headers["Location"] and r.headers["ETag"] == 'W/"1"'
    patient_id = r.headers["Location"].split("/Patient/")[1].split("/")[0]
    assert fhir.ok("GET", f"/Patient/{patient_id}")["identifier"][0]["system"] == INS_SYSTEM

    # In the order a document's life gives them: the first version, a submission set, the
    # replacement (which marks doc-x-id superseded with a FHIRPath Patch), a simplified
    # publication, then a FHIR document and a searchset of DocumentReferences.
    order = [
        "DocumentReference-doc-x-id.json",
        "Bundle-example-td2-iti65-lot-soumission.json",
        "Bundle-example-td2-1-remplacement.json",
        "DocumentReference-example-td2-iti105-publication-simplifiee.json",
        "Bundle-example-annexe-fhir-document.json",
        "Bundle-example-annexe-searchset-documentreferences.json",
    ]
    assert sorted(order) == sorted(p.name for p in examples.glob("*.json")), "every example is sent"
    for name in order:
        sent = json.loads((examples / name).read_text())
        r = inbound.post(sent)
        assert r.status_code in (200, 201), (name, r.status_code, r.text)
        body = r.json()
        if sent["resourceType"] == "Bundle" and sent["type"] != "document":
            assert body["type"] == "transaction-response", name
            assert len(body["entry"]) == len(sent["entry"]), name
            assert all(e["response"]["status"][:1] == "2" for e in body["entry"]), name
        else:
            assert r.status_code == 201 and "Location" in r.headers, name
        assert message_of(bundled_engine, r)["status"] == "sent", name

    old = fhir.ok("GET", "/DocumentReference/doc-x-id")
    assert old["status"] == "superseded", "the FHIRPath Patch of the replacement applied"
    assert old["subject"]["reference"] == f"Patient/{patient_id}", "conditional reference resolved"
    new = fhir.search(f"DocumentReference?relatesto=DocumentReference/doc-x-id")
    assert [d["status"] for d in new] == ["current"]
    assert new[0]["content"][0]["attachment"]["url"].startswith("Binary/"), "urn:uuid resolved"
    assert fhir.ids(f"DocumentReference?patient=Patient/{patient_id}&status=current") >= {new[0]["id"]}
    document = fhir.ok("GET", "/Bundle/example-annexe-fhir-document")
    assert document["type"] == "document"
    for t in ["DocumentReference", "List", "Binary", "Bundle", "Patient"]:
        for resource in fhir.search(f"{t}?_count=100"):
            validate(resource)


def test_a_bad_bundle_gets_an_operation_outcome_naming_entry_and_element_and_is_journaled(
        bundled_engine, inbound, fhir):
    bad_date = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "NEVER"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "effectiveDateTime": "yesterday"},
         "request": {"method": "POST", "url": "Observation"}}]}
    r = inbound.post(bad_date)
    assert r.status_code == 400
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.effective"]
    assert "yesterday" in issue["diagnostics"]
    m = message_of(bundled_engine, r)
    assert m["status"] == "rejected" and m["message_type"] == "Bundle^transaction"
    assert "Bundle.entry[1]" in m["error"] and "yesterday" in m["error"]
    assert json.loads(m["raw"]) == bad_date, "the message is kept as received"

    no_request = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}}]}
    r = inbound.post(no_request)
    assert r.status_code == 400 and "Bundle.entry[0]" in r.json()["issue"][0]["diagnostics"]
    unknown_type = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient"}}, {"resource": {"resourceType": "Nope"}}]}
    r = inbound.post(unknown_type)
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.resourceType"]
    r = inbound.post(b'{"resourceType": "Patient",\n "name": [}')
    assert r.status_code == 400 and "line 2 column" in r.json()["issue"][0]["diagnostics"]
    assert message_of(bundled_engine, r)["status"] == "rejected"

    # What only the store can tell (the patient a conditional reference names does not
    # exist): the store's refusal, naming the entry, and a dead letter with that reason.
    orphan = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                      "subject": {"reference": f"Patient?identifier={INS_SYSTEM}|000000000000000"}},
         "request": {"method": "POST", "url": "Encounter"}}]}
    r = inbound.post(orphan)
    assert 400 <= r.status_code < 500, r.text
    assert "Bundle.entry[0]" in r.json()["issue"][0]["diagnostics"]
    m = message_of(bundled_engine, r)
    assert m["outbox"][0]["status"] == "dead", m["outbox"]
    assert "Bundle.entry[0]" in m["outbox"][0]["last_error"]
    assert fhir.search("Patient?family=NEVER") == [] and fhir.search("Encounter") == []
    counters = bundled_engine.channel("fhir-inbound")
    assert counters["rejected"] == 4 and counters["errored"] == 1


def test_single_resources_are_created_once_updated_by_id_and_duplicates_are_not_applied(
        bundled_engine, inbound, fhir):
    p = {"resourceType": "Patient", "identifier": [{"system": INS_SYSTEM, "value": "2800175123456"}],
         "name": [{"family": "UNIQUE"}]}
    first, again = inbound.post(p), inbound.post(p)
    assert first.status_code == 201 and again.status_code == 200, (first.text, again.text)
    assert first.headers["Location"] == again.headers["Location"], "a conditional create on the INS"
    assert len(fhir.search("Patient?family=UNIQUE")) == 1

    o = {"resourceType": "Observation", "id": "obs-1", "status": "preliminary", "code": {"text": "pouls"}}
    assert inbound.post(o).status_code == 201
    r = inbound.post({**o, "status": "final"})
    assert r.status_code == 200 and r.headers["ETag"] == 'W/"2"'
    assert fhir.ok("GET", "/Observation/obs-1")["status"] == "final"

    bundle = {"resourceType": "Bundle", "type": "collection",
              "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:5e1f6d3a-0000-4000-8000-000000000001"},
              "entry": [{"resource": {"resourceType": "Patient", "name": [{"family": "ONCE"}]}}]}
    r = inbound.post(bundle)
    assert r.status_code == 200 and r.json()["type"] == "transaction-response"
    r = inbound.post(bundle)
    assert r.status_code == 200
    assert "already received" in r.json()["issue"][0]["diagnostics"]
    assert message_of(bundled_engine, r)["status"] == "duplicate"
    assert len(fhir.search("Patient?family=ONCE")) == 1, "a retransmitted Bundle is not applied twice"


def test_tokens_scopes_content_types_and_channels_are_checked(bundled_engine, inbound, fhir):
    p = {"resourceType": "Patient", "name": [{"family": "GATE"}]}
    anonymous = Inbound(bundled_engine, "")
    anonymous.session.headers.pop("Authorization")
    r = anonymous.post(p)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    reader = Inbound(bundled_engine, issue_token(bundled_engine, "system/*.read"))
    r = reader.post(p)
    assert r.status_code == 403 and "Patient" in r.json()["issue"][0]["diagnostics"]
    only_patients = Inbound(bundled_engine, issue_token(bundled_engine, "system/Patient.write"))
    assert only_patients.post(p).status_code == 201
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
         "request": {"method": "POST", "url": "Observation"}}]}
    r = only_patients.post(tx)
    assert r.status_code == 403 and "Bundle.entry[0]" in r.json()["issue"][0]["diagnostics"]
    assert inbound.post(p, content_type="application/xml").status_code == 415
    assert inbound.post(p, channel="no-such-channel").status_code == 404
    r = inbound.post(p, channel="hl7v2-inbound")
    assert r.status_code == 404 and "mllp" in r.json()["issue"][0]["diagnostics"]
    assert len(fhir.search("Patient?family=GATE")) == 1, "only the permitted write was applied"
    assert bundled_engine.channel("fhir-inbound")["received"] == 1, "refused requests are not messages"


CUSTOM = """
id: fhir-labs
source:
  type: http
  content: fhir
filters:
  - message_type: [Observation, Bundle^transaction]
transform:
  type: fhir
  identifier_systems:
    - from: LAB-A
      to: https://lab-a.example.org/ids
  profiles:
    - resource: Observation
      profile: http://hl7.org/fhir/StructureDefinition/vitalsigns
destinations:
  - id: store
    type: fhir-store
"""


def test_a_channel_filters_by_resource_type_and_adapts_identifiers_and_profiles(make_engine):
    engine = make_engine({"fhir-labs.yaml": CUSTOM})
    token = issue_token(engine, "system/*.*")
    inbound, fhir = Inbound(engine, token), Fhir(engine, token)
    obs = {"resourceType": "Observation", "status": "final",
           "identifier": [{"system": "LAB-A", "value": "42"}],
           "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                     "code": "vital-signs"}]}],
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "subject": {"display": "x"}, "effectiveDateTime": "2026-11-23T10:00:00+01:00",
           "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}
    r = inbound.post(obs, channel="fhir-labs")
    assert r.status_code == 201, r.text
    stored = fhir.search("Observation?identifier=https://lab-a.example.org/ids|42")
    assert len(stored) == 1
    assert stored[0]["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]
    r = inbound.post({"resourceType": "Patient"}, channel="fhir-labs")
    assert r.status_code == 200 and "filtered" in r.json()["issue"][0]["diagnostics"]
    assert message_of(engine, r)["status"] == "filtered"
    assert fhir.search("Patient") == []
