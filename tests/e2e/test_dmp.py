"""The DMP flow end to end: a CI-SIS CDA document received on `cda-inbound`, marked for the
DMP and whose patient does not oppose it, goes out on the bundled `dmp-documents` channel as an
IHE XDS.b ITI-41 request (SOAP 1.2 + MTOM, VIHF in WS-Security) to an XDS.b repository that
checks it strictly (tests/e2e/xds_repository.py); through an outage, XDSRepositoryError
(retried), a metadata refusal (dead letter, then reprocessed), a new version (RPLC) and a
patient who opposes the DMP (filtered, nothing sent).
"""

import base64
import hashlib
import re
import urllib.parse
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT, Engine, corpus
from test_cda_inbound import Sender
from test_fhir import Fhir, issue_token
from xds_repository import Repository, repository  # noqa: F401  (fixture)

CHANNEL = "dmp-documents"
SOURCE_OID = "1.2.250.1.999.9.1"
MARK = {"system": "https://passerelle.dev/fhir/CodeSystem/destination", "code": "DMP"}
CONSENT_SYSTEM = "urn:passerelle:codesystem:dmp-consent"
CDA_NS = "{urn:hl7-org:v3}"
#: A CI-SIS lab report of the ANS corpus (read from the corpus at run time).
DOCUMENT = "BIO-CR-BIO_2024.01_TSH_1.xml"
TIMEOUT = 30.0
OUTAGE_TIMEOUT = 60.0


@pytest.fixture
def cda() -> bytes:
    root = corpus()
    if root is None:
        pytest.skip("PASSERELLE_CORPUS is not set: the ANS CDA corpus is not available")
    return (root / "ansforge-cda" / DOCUMENT).read_bytes()


@pytest.fixture
def engine(workdir, repository):
    e = Engine(workdir, ROOT / "channels", env={
        "PASSERELLE_DMP_XDS": repository.url, "PASSERELLE_DMP_SOURCE_OID": SOURCE_OID}).start()
    yield e
    e.stop()


@pytest.fixture
def fhir(engine):
    return Fhir(engine, issue_token(engine, "system/*.*"))


# --- the hospital's side ---------------------------------------------------------------------


def header(cda: bytes) -> ET.Element:
    return ET.fromstring(cda)


def unique_id(cda: bytes) -> str:
    i = header(cda).find(f"{CDA_NS}id")
    return f"{i.get('root')}^{i.get('extension')}" if i.get("extension") else i.get("root")


def receive(engine: Engine, fhir: Fhir, cda: bytes) -> dict:
    """Posts the CDA to cda-inbound; returns the DocumentReference the store made of it."""
    token = fhir.session.headers["Authorization"].removeprefix("Bearer ")
    r = Sender(engine, token).post(cda)
    assert r.status_code in (200, 201), r.text
    i = header(cda).find(f"{CDA_NS}id")
    system = f"urn:oid:{i.get('root')}" if i.get("extension") else "urn:ietf:rfc:3986"
    value = i.get("extension") or f"urn:oid:{i.get('root')}"
    [document] = fhir.search("DocumentReference?identifier=" + urllib.parse.quote(f"{system}|{value}", safe=""))
    return document


def consent(fhir: Fhir, patient: str, permit: bool) -> dict:
    """The patient's DMP feeding consent, as the ZFA segment of an ADT gives it."""
    return fhir.ok("POST", "/Consent", {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": CONSENT_SYSTEM, "code": "feeding"}]}],
        "patient": {"reference": patient},
        "policyRule": {"text": "Dossier Médical Partagé (DMP)"},
        "provision": {"type": "permit" if permit else "deny"},
    })


def mark_for_the_dmp(fhir: Fhir, document: dict) -> dict:
    document.setdefault("meta", {}).setdefault("tag", []).append(MARK)
    return fhir.ok("PUT", f"/DocumentReference/{document['id']}", document)


def publish(engine: Engine, fhir: Fhir, cda: bytes, permit: bool | None = True) -> dict:
    document = receive(engine, fhir, cda)
    if permit is not None:
        consent(fhir, document["subject"]["reference"], permit)
    return mark_for_the_dmp(fhir, document)


def new_version(cda: bytes) -> bytes:
    """Version 2 of a document: a new id, the same setId, relatedDocument RPLC to version 1."""
    ET.register_namespace("", "urn:hl7-org:v3")
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    root = ET.fromstring(cda)
    old = root.find(f"{CDA_NS}id")
    new = ET.Element(f"{CDA_NS}id", {"root": old.get("root") + ".2"})
    old_copy = ET.Element(f"{CDA_NS}id", dict(old.attrib))
    index = list(root).index(old)
    root.remove(old)
    root.insert(index, new)
    root.find(f"{CDA_NS}versionNumber").set("value", "2")
    related = ET.Element(f"{CDA_NS}relatedDocument", {"typeCode": "RPLC"})
    parent = ET.SubElement(related, f"{CDA_NS}parentDocument")
    parent.append(old_copy)
    ET.SubElement(parent, f"{CDA_NS}setId", dict(root.find(f"{CDA_NS}setId").attrib))
    # relatedDocument comes after documentationOf in the CDA header.
    children = list(root)
    last = max(i for i, c in enumerate(children) if c.tag in (f"{CDA_NS}documentationOf", f"{CDA_NS}inFulfillmentOf", f"{CDA_NS}participant", f"{CDA_NS}legalAuthenticator"))
    root.insert(last + 1, related)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


# --- the engine's side -----------------------------------------------------------------------


def messages(engine: Engine, status: str | None = None) -> list[dict]:
    query = {"channel": CHANNEL, "limit": 100}
    if status:
        query["status"] = status
    return engine.messages(**query)["items"]


def journaled(engine: Engine, status: str, timeout: float = TIMEOUT) -> dict:
    return engine.wait_for(lambda: (messages(engine, status) or [None])[0], timeout, f"a {CHANNEL} message {status}")


def channel_state(engine: Engine) -> dict:
    return next(c for c in engine.api("/api/channels") if c["id"] == CHANNEL)


def assert_matches_the_cda(received, cda: bytes):
    """The request's document is the CDA as received, and its metadata is the CDA header's."""
    assert received.document == cda
    h = header(cda)
    entry = received.entry
    assert entry["uniqueId"] == unique_id(cda)
    ins = next(i for i in h.findall(f"{CDA_NS}recordTarget/{CDA_NS}patientRole/{CDA_NS}id")
               if i.get("root", "").startswith("1.2.250.1.213.1.4."))
    assert entry["patientId"] == f"{ins.get('extension')}^^^&{ins.get('root')}&ISO^NH"
    assert entry["typeCode"] == h.find(f"{CDA_NS}code").get("code")
    assert entry["confidentialityCode"] == h.find(f"{CDA_NS}confidentialityCode").get("code")
    facility = h.find(f"{CDA_NS}componentOf/{CDA_NS}encompassingEncounter/{CDA_NS}location/"
                      f"{CDA_NS}healthCareFacility/{CDA_NS}code")
    assert entry["healthcareFacilityTypeCode"] == facility.get("code")
    assert entry["classCode"] == "10", "a lab report is a compte rendu"
    assert entry["slots"]["languageCode"] == [h.find(f"{CDA_NS}languageCode").get("code")]
    assert entry["slots"]["hash"] == [hashlib.sha1(cda).hexdigest()]
    assert entry["slots"]["size"] == [str(len(cda))]
    author = h.find(f"{CDA_NS}author/{CDA_NS}assignedAuthor/{CDA_NS}id")
    assert entry["author"]["authorPerson"][0].startswith(f"{author.get('extension')}^")
    assert f"&{author.get('root')}&ISO" in entry["author"]["authorPerson"][0]
    assert received.submission["externals"]["urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"] == SOURCE_OID


# --- scenarios -------------------------------------------------------------------------------


def test_without_the_repository_the_channel_is_paused(workdir):
    e = Engine(workdir, ROOT / "channels")
    e.env.pop("PASSERELLE_DMP_XDS", None)
    e.start()
    try:
        state = channel_state(e)
        assert state["state"] == "paused"
        assert "PASSERELLE_DMP_XDS" in state["reason"]
    finally:
        e.stop()


def test_a_document_marked_for_the_dmp_is_provided_once(engine, fhir, repository, cda):
    publish(engine, fhir, cda)
    [received] = repository.wait_for(lambda r: r.accepted(), TIMEOUT, "an accepted ITI-41 request")
    assert_matches_the_cda(received, cda)
    assert received.replaces is None
    sent = journaled(engine, "sent")
    detail = engine.message(sent["id"])
    [delivery] = detail["outbox"]
    assert delivery["attempts"] == 1
    engine.wait_for(lambda: channel_state(engine)["queued"] == 0, TIMEOUT, "nothing queued")
    assert len(repository.received) == 1, [(r.status, r.errors) for r in repository.received]


def test_a_document_waits_while_the_repository_is_down_then_goes_once(engine, fhir, repository, cda):
    repository.stop()
    publish(engine, fhir, cda)
    queued = journaled(engine, "queued")
    engine.wait_for(lambda: [o for o in engine.message(queued["id"])["outbox"] if o["attempts"] >= 1 and o["last_error"]],
                    TIMEOUT, "a failed delivery attempt")
    repository.start()
    [received] = repository.wait_for(lambda r: r.accepted(), OUTAGE_TIMEOUT, "the document once the repository is up")
    assert_matches_the_cda(received, cda)
    engine.wait_for(lambda: engine.message(queued["id"])["status"] == "sent", TIMEOUT, "the document sent")
    assert len(repository.received) == 1


def test_a_repository_error_is_retried_until_success(engine, fhir, repository, cda):
    repository.repository_errors = 2
    publish(engine, fhir, cda)
    repository.wait_for(lambda r: r.accepted(), OUTAGE_TIMEOUT, "the document after two XDSRepositoryError")
    assert [r.errors[0][0] if r.errors else "Success" for r in repository.received] == [
        "XDSRepositoryError", "XDSRepositoryError", "Success"]
    sent = journaled(engine, "sent")
    [delivery] = engine.message(sent["id"])["outbox"]
    assert delivery["attempts"] == 3, delivery


def test_a_metadata_error_is_dead_lettered_then_reprocessed(engine, fhir, repository, cda):
    repository.accepted_format_codes = {"urn:some:other:format"}
    publish(engine, fhir, cda)
    dead = journaled(engine, "errored")
    [delivery] = engine.message(dead["id"])["outbox"]
    assert delivery["status"] == "dead"
    assert delivery["attempts"] == 1, "a metadata error is not retried"
    assert "XDSRegistryMetadataError" in delivery["last_error"]
    assert "is not in the registry's value set" in delivery["last_error"], delivery
    repository.accepted_format_codes = None
    status, body, _ = engine.http("POST", f"/api/messages/{dead['id']}/reprocess")
    assert status == 202, body
    engine.wait_for(lambda: engine.message(dead["id"])["status"] == "sent", TIMEOUT, "the reprocessed document sent")
    assert len(repository.accepted()) == 1
    assert len(repository.received) == 2


def test_a_patient_unknown_to_the_dmp_is_a_dead_letter(engine, fhir, repository, cda):
    ins = next(i for i in header(cda).findall(f"{CDA_NS}recordTarget/{CDA_NS}patientRole/{CDA_NS}id")
               if i.get("root", "").startswith("1.2.250.1.213.1.4.")).get("extension")
    repository.rejected_patients.add(ins)
    publish(engine, fhir, cda)
    dead = journaled(engine, "errored")
    [delivery] = engine.message(dead["id"])["outbox"]
    assert "XDSPatientIdDoesNotMatch" in delivery["last_error"] and ins in delivery["last_error"], delivery
    assert delivery["attempts"] == 1


def test_a_new_version_replaces_the_first_in_the_dmp(engine, fhir, repository, cda):
    publish(engine, fhir, cda)
    [first] = repository.wait_for(lambda r: r.accepted(), TIMEOUT, "version 1")
    v2 = new_version(cda)
    mark_for_the_dmp(fhir, receive(engine, fhir, v2))
    accepted = repository.wait_for(lambda r: r.accepted() if len(r.accepted()) == 2 else None, TIMEOUT, "version 2")
    second = accepted[1]
    assert second.document == v2
    assert second.entry["uniqueId"] == unique_id(v2) != first.entry["uniqueId"]
    assert second.replaces == first.entry["entryUUID"], "RPLC to the DocumentEntry of version 1"


def test_a_patient_who_opposes_the_dmp_gets_nothing_sent(engine, fhir, repository, cda):
    publish(engine, fhir, cda, permit=False)
    filtered = journaled(engine, "filtered")
    transform = next(s for s in engine.message(filtered["id"])["trace"] if s["step"] == "transform")
    assert "opposes the feeding of the DMP" in transform["detail"], transform
    assert repository.received == []


def test_a_patient_without_a_known_consent_gets_nothing_sent(engine, fhir, repository, cda):
    publish(engine, fhir, cda, permit=None)
    filtered = journaled(engine, "filtered")
    transform = next(s for s in engine.message(filtered["id"])["trace"] if s["step"] == "transform")
    assert "no DMP feeding consent" in transform["detail"], transform
    assert repository.received == []


def test_the_file_destination_can_write_the_request_for_inspection(make_engine, cda, workdir):
    """The same transform before a file destination: what the repository would receive."""
    out = workdir / "out"
    channel = (ROOT / "channels" / "dmp-documents.yaml").read_text()
    channel = channel.split("destinations:")[0] + (
        "destinations:\n  - id: dmp\n    type: file\n    directory: " + str(out) + "\n"
        "    file_name: \"{id}.mime\"\n")
    inbound = (ROOT / "channels" / "cda-inbound.yaml").read_text()
    e = make_engine({"dmp-documents.yaml": channel, "cda-inbound.yaml": inbound},
                    env={"PASSERELLE_DMP_XDS": "http://dmp.invalid/iti41", "PASSERELLE_DMP_SOURCE_OID": SOURCE_OID})
    fhir = Fhir(e, issue_token(e, "system/*.*"))
    publish(e, fhir, cda)
    written = e.wait_for(lambda: list(out.glob("*.mime")) if out.exists() else None, TIMEOUT, "the request written")
    text = written[0].read_bytes()
    head, _, body = text.partition(b"\r\n\r\n")
    assert b'type="application/xop+xml"' in head and b"start-info=\"application/soap+xml\"" in head
    boundary = re.search(rb'boundary="([^"]+)"', head).group(1)
    assert body.count(b"--" + boundary) == 3
    assert cda in body
    assert base64.b64encode(cda) not in body, "the document travels as binary, not base64"
