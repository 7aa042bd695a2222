"""The `cda-inbound` channel: CDA R2 documents POSTed to /api/inbound/cda-inbound are checked,
journaled and mapped (mappings/cda/cda.yaml) into the store: Patient, Practitioner,
Organization, Encounter, DocumentReference and the Binary holding the document. Every
document of the ANS CI-SIS and C-CDA corpora is accepted or refused with a deliberate reason,
and what the store holds validates with the `fhir.resources` models."""

import base64
import xml.etree.ElementTree as ET

import pytest
import requests

from conftest import ROOT, corpus
from test_fhir import Fhir, issue_token, validate
from test_fhir_inbound import Inbound

CDA = "application/hl7-cda+xml"
#: Our own test document (the mapping's golden input): version 2, replacing version 1.
V2 = ROOT / "mappings" / "cda" / "cda.tests" / "cr-bio-v2-replaces-v1.xml"

#: Documents of the corpora refused on purpose, with what the answer says (docs/inbound.md).
REFUSED = {
    # CI-SIS "auto-présentable": an XSLT stylesheet that carries the CDA inside it, for
    # display; the CDA itself is what an interface sends.
    "BIO-CR-BIO_2021.01_Auto-Presentable.xml": "root element is `stylesheet`",
    "BIO-CR-BIO_2021.01_Auto-Presentable_avec-image.xml": "root element is `stylesheet`",
    "CANCER-PPS_2022.01_Autopresentable.xml": "root element is `stylesheet`",
    # A C-CDA sample showing Direct addresses, without the author CDA R2 requires.
    "Patient-and-Provider-Organization-Direct-Address-C-CDAR2.1.ccda": "author is missing",
}


class Sender(Inbound):
    """Posts CDA documents to `cda-inbound`."""

    def post(self, body: bytes, content_type: str = CDA, channel: str = "cda-inbound") -> requests.Response:
        return super().post(body, content_type, channel)


@pytest.fixture
def token(bundled_engine):
    return issue_token(bundled_engine, "system/*.*")


@pytest.fixture
def sender(bundled_engine, token):
    return Sender(bundled_engine, token)


@pytest.fixture
def fhir(bundled_engine, token):
    return Fhir(bundled_engine, token)


def document_id(path) -> tuple:
    """The root and extension of a CDA's /ClinicalDocument/id."""
    element = ET.parse(path).getroot().find("{urn:hl7-org:v3}id")
    return element.get("root"), element.get("extension")


def all_of(fhir: Fhir, query: str) -> list[dict]:
    """Every resource a search finds, following the paging links."""
    found, page = [], fhir.ok("GET", "/" + query)
    while True:
        found += [e["resource"] for e in page.get("entry", []) if e["search"]["mode"] == "match"]
        following = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
        if not following:
            return found
        page = fhir.ok("GET", following[0].split("/fhir", 1)[1])


def test_every_cda_of_the_corpora_is_mapped_or_refused_with_its_reason(bundled_engine, sender, fhir):
    root = corpus()
    if root is None:
        pytest.skip("PASSERELLE_CORPUS is not set: the CDA corpora are not available")
    files = sorted((root / "ansforge-cda").glob("*.xml")) + sorted(
        p for p in (root / "ccda-fhir-converter").iterdir() if p.suffix == ".ccda")
    assert len(files) == 94 + 22
    mapped = []
    for f in files:
        r = sender.post(f.read_bytes())
        body = r.json()
        if f.name in REFUSED:
            assert r.status_code == 400, (f.name, r.text[:300])
            assert REFUSED[f.name] in body["issue"][0]["diagnostics"], (f.name, body)
            m = bundled_engine.api(r.headers["Content-Location"])
            assert m["status"] == "rejected" and REFUSED[f.name] in m["error"]
            continue
        assert r.status_code == 200 and body["type"] == "transaction-response", (f.name, r.text[:500])
        assert all(e["response"]["status"][:1] == "2" for e in body["entry"]), f.name
        assert bundled_engine.api(r.headers["Content-Location"])["status"] == "sent", f.name
        mapped.append(f)
    assert len(mapped) == len(files) - len(REFUSED)

    # One DocumentReference per document id: some C-CDA samples reuse one (TT988 nine times),
    # and a document with the id of an earlier one is a new content for it.
    ids = {document_id(f) for f in mapped}
    documents = all_of(fhir, "DocumentReference?_count=200")
    assert len(documents) == len(ids) == 102, "one DocumentReference per document id"
    for d in documents:
        validate(d)
        assert d["subject"]["reference"].startswith("Patient/")
        assert d["content"][0]["attachment"]["url"].startswith("Binary/")
        assert d["type"]["coding"][0]["code"]
    for t in ["Patient", "Practitioner", "Organization", "Encounter", "DiagnosticReport", "Observation"]:
        found = all_of(fhir, f"{t}?_count=200")
        assert found, t
        for resource in found:
            validate(resource)
    # A structured lab report (CR-BIO): its DiagnosticReport and its results.
    [report] = fhir.search(
        "DiagnosticReport?identifier=urn:ietf:rfc:3986|urn:oid:1.2.250.1.213.1.1.1.55.2024.7.1")
    [glucose] = [fhir.ok("GET", "/" + r["reference"]) for r in report["result"]]
    assert glucose["code"]["coding"][0] == {
        "system": "http://loinc.org", "code": "40193-5",
        "display": "Glucose à jeun [Moles/Volume] Sérum/Plasma ; Numérique"}
    assert glucose["valueQuantity"] == {"value": 4.89, "unit": "mmol/L",
                                        "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert glucose["subject"] == report["subject"]
    # The Binary is the document as received.
    first = next(d for d in documents if d["masterIdentifier"]["value"].endswith("1.2.250.1.213.1.1.1.55.2021.3.1"))
    binary = fhir.ok("GET", "/" + first["content"][0]["attachment"]["url"])
    validate(binary)
    sent = (root / "ansforge-cda" / "BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml").read_bytes()
    assert base64.b64decode(binary["data"]) == sent

    # Sent again: the journal knows it (same document id), nothing is applied twice.
    r = sender.post(sent)
    assert r.status_code == 200 and "already received" in r.json()["issue"][0]["diagnostics"]
    assert len(all_of(fhir, "DocumentReference?_count=200")) == len(ids)


def test_a_new_version_supersedes_the_document_it_replaces(bundled_engine, sender, fhir):
    v2 = V2.read_bytes()
    v1 = (v2.replace(b'<id root="1.2.250.1.999.1.42.2"/>', b'<id root="1.2.250.1.999.1.42.1"/>')
            .replace(b'<versionNumber value="2"/>', b'<versionNumber value="1"/>'))
    start, end = v1.index(b"<relatedDocument"), v1.index(b"</relatedDocument>") + len(b"</relatedDocument>")
    v1 = v1[:start] + v1[end:]
    assert sender.post(v1).status_code == 200
    [first] = fhir.search("DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.1.42.1")
    assert first["status"] == "current"

    r = sender.post(v2)
    assert r.status_code == 200, r.text
    first = fhir.ok("GET", f"/DocumentReference/{first['id']}")
    assert first["status"] == "superseded", "the replaced version is superseded"
    [second] = fhir.search("DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.1.42.2")
    assert second["status"] == "current"
    assert second["relatesTo"][0]["code"] == "replaces"
    assert second["identifier"][0]["value"] == first["identifier"][0]["value"] == "urn:oid:1.2.250.1.999.1.42"
    current = fhir.search("DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.1.42&status=current")
    assert [d["id"] for d in current] == [second["id"]], "one current version per set"
    # The patient, the author and the custodian are the same resources for both versions.
    patients = fhir.search("Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|280017512345678")
    assert len(patients) == 1 and second["subject"]["reference"] == f"Patient/{patients[0]['id']}"
    assert patients[0]["name"][0]["family"] == "MARTIN" and patients[0]["birthDate"] == "1980-01-15"
    assert len(fhir.search("Practitioner?identifier=urn:oid:1.2.250.1.71.4.2.1|810000000042")) == 1
    [encounter] = fhir.search("Encounter?identifier=urn:oid:1.2.250.1.999.3|VISIT-0042")
    assert encounter["class"]["code"] == "IMP" and encounter["status"] == "finished"
    for resource in [first, second, encounter, *patients]:
        validate(resource)


def test_bad_documents_are_refused_with_the_reason_and_journaled(bundled_engine, sender):
    r = sender.post(b"<ClinicalDocument xmlns='urn:hl7-org:v3'><id root='1'/>")
    assert r.status_code == 400 and "not well-formed XML" in r.json()["issue"][0]["diagnostics"]
    assert bundled_engine.api(r.headers["Content-Location"])["status"] == "rejected"
    r = sender.post("<ClinicalDocument xmlns='urn:hl7-org:v3'/>".encode("utf-16"))
    assert r.status_code == 400 and "UTF-8" in r.json()["issue"][0]["diagnostics"]
    no_patient = V2.read_bytes().replace(b"<recordTarget>", b"<!--").replace(b"</recordTarget>", b"-->")
    r = sender.post(no_patient)
    assert r.status_code == 400 and "recordTarget is missing" in r.json()["issue"][0]["diagnostics"]
    assert sender.post(V2.read_bytes(), content_type="application/json").status_code == 415
    patients_only = Sender(bundled_engine, issue_token(bundled_engine, "system/Patient.write"))
    r = patients_only.post(V2.read_bytes())
    assert r.status_code == 403 and "DocumentReference" in r.json()["issue"][0]["diagnostics"]
    assert bundled_engine.channel("cda-inbound")["rejected"] == 3


def test_documents_dropped_in_a_directory_are_journaled_mapped_and_moved(make_engine, workdir):
    drop = workdir / "drop"
    engine = make_engine({"cda-drop.yaml": f"""
id: cda-drop
source:
  type: file
  directory: {drop}
  content: cda
  poll: 100ms
transform:
  type: mapping
  mappings: [cda]
destinations:
  - id: store
    type: fhir-store
"""})
    fhir = Fhir(engine, issue_token(engine, "system/*.*"))
    engine.wait_for(lambda: (drop / "done").is_dir(), what="the drop directory prepared")
    # Written under a temporary name, then renamed: the file arrives whole.
    (drop / "report.xml.part").write_bytes(V2.read_bytes())
    (drop / "report.xml.part").rename(drop / "report.xml")
    (drop / "broken.xml").write_bytes(b"<ClinicalDocument xmlns='urn:hl7-org:v3'>")
    engine.wait_for(lambda: (drop / "done" / "report.xml").exists(), what="report.xml taken")
    engine.wait_for(lambda: (drop / "rejected" / "broken.xml").exists(), what="broken.xml refused")
    reason = (drop / "rejected" / "broken.xml.reason.txt").read_text()
    assert "not well-formed XML" in reason
    assert sorted(p.name for p in drop.iterdir()) == ["done", "rejected"], "nothing left behind"
    engine.wait_for(lambda: fhir.search(
        "DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.1.42.2"), what="stored")
    journaled = engine.messages(channel="cda-drop")["items"]
    assert {(m["source"], m["peer"], m["status"]) for m in journaled} == {
        ("file", "report.xml", "sent"), ("file", "broken.xml", "rejected")}
