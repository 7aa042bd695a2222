"""Documents the hospital writes: a DiagnosticReport written through the FHIR API, with its
Observations, patient (with an INS), performing practitioner and laboratory, becomes a CI-SIS
CR-BIO CDA document (the `cda-document` transform) stored as a Binary and a DocumentReference
by a `fhir-store` destination; a discharge letter (a Composition of type 11490-0, with its
patient, author, hospital, stay and discharge MedicationRequests) becomes an LDL-SES document
the same way. The CDA is checked by third-party tools against the ANS material: the CDA R2 XSD
of the CI-SIS (xmllint) and the volet's schematron (Saxon, the ISO schematron skeleton shipped
with the schematrons). An amended report or letter gives version 2 with the same setId, a
relatedDocument RPLC, and a DocumentReference that replaces the first one.
"""

import base64
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import corpus
from test_fhir import Fhir, issue_token

NS = {"cda": "urn:hl7-org:v3"}
INS_TEST = "urn:oid:1.2.250.1.213.1.4.10"
RFC3986 = "urn:ietf:rfc:3986"
TIMEOUT = 30.0

CHANNEL = """\
id: lab-report-documents
source:
  type: store
  subscription: "DiagnosticReport?status=final,amended"
  include: [subject, result, performer, encounter]
transform:
  type: cda-document
  volet: cr-bio
destinations:
  - id: store
    type: fhir-store
"""

LETTER_CHANNEL = """\
id: discharge-letters
source:
  type: store
  subscription: "Composition?type=http://loinc.org|11490-0&status=final,amended"
  include: [subject, author, custodian, encounter, section.entry]
transform:
  type: cda-document
  volet: ldl-ses
destinations:
  - id: store
    type: fhir-store
"""


@pytest.fixture
def validation() -> Path:
    root = corpus()
    if root is None:
        pytest.skip("PASSERELLE_CORPUS is not set: the ANS CDA validation material is not available")
    if shutil.which("xmllint") is None:
        pytest.skip("xmllint is not installed (Debian: libxml2-utils)")
    return root / "ansforge-cda-validation"


@pytest.fixture
def fhir(make_engine):
    engine = make_engine({"lab-report-documents.yaml": CHANNEL})
    return Fhir(engine, issue_token(engine, "system/*.*"))


def xsd_errors(validation: Path, cda: bytes) -> str:
    """xmllint's complaints about the document against the CI-SIS CDA XSD ('' when valid)."""
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        f.write(cda)
        f.flush()
        run = subprocess.run(
            ["xmllint", "--noout", "--schema", "CDA_extended.xsd", f.name],
            cwd=validation / "infrastructure" / "cda", capture_output=True, text=True)
    return "" if run.returncode == 0 else run.stderr


def schematron_failures(validation: Path, schematron: str, cda: bytes) -> list[str]:
    """The failed assertions of a CI-SIS schematron: compiled with the ISO skeleton of the
    schematrons' `moteur` directory (include, abstract patterns, SVRL for XSLT 2), run by
    Saxon. The compiled stylesheet sits in a directory beside a link to the value sets, where
    the schematrons' relative paths (`../jeuxDeValeurs/...`) expect them."""
    from saxonche import PySaxonProcessor

    schematrons = validation / "schematrons"
    engine = schematrons / "moteur"
    with PySaxonProcessor(license=False) as proc, tempfile.TemporaryDirectory() as tmp:
        xslt = proc.new_xslt30_processor()
        node = proc.parse_xml(xml_file_name=str(schematrons / schematron))
        for step in ["iso_dsdl_include.xsl", "iso_abstract_expand.xsl", "iso_svrl_for_xslt2.xsl"]:
            stylesheet = xslt.compile_stylesheet(stylesheet_file=str(engine / step))
            stylesheet.set_base_output_uri(str(engine / "compiled.xsl"))
            node = stylesheet.transform_to_value(xdm_node=node).head
        (Path(tmp) / "xsl").mkdir()
        os.symlink(validation / "jeuxDeValeurs", Path(tmp) / "jeuxDeValeurs")
        compiled = Path(tmp) / "xsl" / "compiled.xsl"
        compiled.write_text(str(node))
        document = Path(tmp) / "document.xml"
        document.write_bytes(cda)
        check = xslt.compile_stylesheet(stylesheet_file=str(compiled))
        svrl = ET.fromstring(check.transform_to_string(
            xdm_node=proc.parse_xml(xml_file_name=str(document))))
    failed = svrl.findall(".//{http://purl.oclc.org/dsdl/svrl}failed-assert")
    return [" ".join("".join(f.itertext()).split()) + " at " + f.get("location", "") for f in failed]


# --- what the hospital writes ----------------------------------------------------------------


def post_organization(fhir: Fhir, finess: str, name: str, facility: tuple[str, str], **more) -> dict:
    """An establishment with its FINESS and its TRE_R02 facility type (code, display)."""
    return fhir.ok("POST", "/Organization", {
        "resourceType": "Organization",
        "identifier": [{"system": "https://finess.esante.gouv.fr", "value": finess}],
        "name": name,
        "type": [{"coding": [{"system": "urn:oid:1.2.250.1.71.4.2.4", "code": facility[0],
                              "display": facility[1]}]}],
        **more})


def post_practitioner(fhir: Fhir, family: str, given: str, specialty: tuple[str, str]) -> dict:
    """A doctor with an RPPS and a TRE_G15 profession/specialty qualification (code, display)."""
    return fhir.ok("POST", "/Practitioner", {
        "resourceType": "Practitioner",
        "identifier": [{"system": "https://rpps.esante.gouv.fr", "value": "10001234567"}],
        "name": [{"family": family, "given": [given]}],
        "qualification": [{"code": {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.5",
                                                "code": specialty[0], "display": specialty[1]}]}}]})


def write_report(fhir: Fhir, tsh: float = 1.95) -> dict:
    patient = fhir.ok("POST", "/Patient", {
        "resourceType": "Patient",
        "identifier": [
            {"system": INS_TEST, "value": "279035121518989"},
            {"system": "urn:oid:1.2.250.1.999.2", "value": "IPP-0042"}],
        "name": [{"use": "official", "family": "PAT-TROIS", "given": ["DOMINIQUE", "MARIE"]}],
        "gender": "female", "birthDate": "1979-03-28",
        "address": [{"line": ["28 avenue de Breteuil"], "postalCode": "75007", "city": "Paris"}]})
    lab = post_organization(
        fhir, "750000001", "Laboratoire du CHBM & associés", ("SA25", "Laboratoire de biologie médicale"),
        telecom=[{"system": "phone", "value": "01 44 53 45 51"}],
        address=[{"line": ["1 rue de l'Hôpital"], "postalCode": "75012", "city": "Paris"}])
    biologist = post_practitioner(fhir, "CAMPARINI", "Marcel", ("G15_10/SM03", "Médecin - Biologie médicale (SM)"))
    observations = [
        fhir.ok("POST", "/Observation", {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{patient['id']}"},
            "effectiveDateTime": "2024-03-01T08:00:00+01:00",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                              "code": unit},
            "referenceRange": [{"low": {"value": low}, "high": {"value": high}}]})
        for code, display, value, unit, low, high in [
            ("3016-3", "Thyréostimuline [Unités arbitraires/Volume] Sérum/Plasma", tsh, "m[IU]/L", 0.27, 4.2),
            ("3024-7", "Thyroxine libre [Masse/Volume] Sérum/Plasma", 7.67, "pg/mL", 9.3, 17.0)]]
    return fhir.ok("POST", "/DiagnosticReport", {
        "resourceType": "DiagnosticReport", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "18719-5",
                             "display": "Biochimie"}]},
        "subject": {"reference": f"Patient/{patient['id']}"},
        "effectiveDateTime": "2024-03-01T08:00:00+01:00",
        "issued": "2024-03-01T10:20:00+01:00",
        "performer": [{"reference": f"Practitioner/{biologist['id']}"},
                      {"reference": f"Organization/{lab['id']}"}],
        "result": [{"reference": f"Observation/{o['id']}"} for o in observations]})


def documents_of(fhir: Fhir, report: dict, version: str, count: int = 1) -> list[dict]:
    """The DocumentReferences generated from the report (or letter), once the one of
    `version` is there."""
    related = f"{report['resourceType']}/{report['id']}/_history/{version}"

    def ready():
        docs = fhir.search(f"DocumentReference?subject={report['subject']['reference']}")
        mine = [d for d in docs if d["context"]["related"][0]["reference"] == related]
        return docs if mine and len(docs) >= count else None

    return fhir.engine.wait_for(ready, TIMEOUT, f"the document of {related}")


def cda_of(fhir: Fhir, doc: dict) -> bytes:
    binary = fhir.ok("GET", "/" + doc["content"][0]["attachment"]["url"])
    assert binary["contentType"] == "application/hl7-cda+xml"
    return base64.b64decode(binary["data"])


def test_a_lab_report_becomes_a_valid_cr_bio_document(fhir, validation):
    report = write_report(fhir)
    [doc] = documents_of(fhir, report, "1")
    cda = cda_of(fhir, doc)

    assert xsd_errors(validation, cda) == ""
    assert schematron_failures(validation, "CI-SIS_BIO-CR-BIO_2024.01.sch", cda) == []

    root = ET.fromstring(cda)
    assert root.find("cda:realmCode", NS).get("code") == "FR"
    assert [t.get("root") for t in root.findall("cda:templateId", NS)] == [
        "2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1", "1.3.6.1.4.1.19376.1.3.3",
        "1.2.250.1.213.1.1.1.55"]
    assert root.find("cda:code", NS).get("code") == "11502-2"
    assert root.find("cda:languageCode", NS).get("code") == "fr-FR"
    assert root.find("cda:effectiveTime", NS).get("value") == "20240301102000+0100"
    assert root.find("cda:versionNumber", NS).get("value") == "1"
    ins = root.find("cda:recordTarget/cda:patientRole/cda:id", NS)
    assert (ins.get("root"), ins.get("extension")) == ("1.2.250.1.213.1.4.10", "279035121518989")
    author = root.find("cda:author/cda:assignedAuthor/cda:id", NS)
    assert (author.get("root"), author.get("extension")) == ("1.2.250.1.71.4.2.1", "810001234567")
    custodian = root.find("cda:custodian//cda:representedCustodianOrganization", NS)
    assert custodian.find("cda:id", NS).get("extension") == "1750000001"
    assert custodian.find("cda:name", NS).text == "Laboratoire du CHBM & associés"
    facility = root.find(".//cda:healthCareFacility/cda:code", NS)
    assert facility.get("code") == "SA25"
    values = [(o.find("cda:code", NS).get("code"), o.find("cda:value", NS).get("value"))
              for o in root.findall(".//cda:entryRelationship/cda:observation", NS)]
    assert values == [("3016-3", "1.95"), ("3024-7", "7.67")]
    assert root.find("cda:relatedDocument", NS) is None

    # The DocumentReference describes it, as cda-inbound would have.
    doc_id = root.find("cda:id", NS).get("root")
    set_id = root.find("cda:setId", NS).get("root")
    assert doc["status"] == "current"
    assert doc["masterIdentifier"] == {"system": RFC3986, "value": f"urn:oid:{doc_id}"}
    assert doc["identifier"] == [{"system": RFC3986, "value": f"urn:oid:{set_id}"}]
    assert doc["type"]["coding"][0]["code"] == "11502-2"
    assert doc["category"][0]["coding"][0]["code"] == "10"
    assert doc["content"][0]["format"]["code"] == "urn:ihe:lab:xd-lab:2008"
    assert doc["securityLabel"][0]["coding"][0]["code"] == "N"
    assert doc["context"]["facilityType"]["coding"][0]["code"] == "SA25"
    assert doc["context"]["practiceSetting"]["coding"][0]["code"] == "ETABLISSEMENT"
    assert doc["subject"] == report["subject"]
    assert {a["reference"] for a in doc["author"]} == {p["reference"] for p in report["performer"]}


def assert_replaces(root: ET.Element, first_cda: ET.Element, second: dict, first: dict):
    """Version 2 replaces version 1: the same setId, an RPLC to the first CDA's id, and a
    DocumentReference that `replaces` the first one."""
    assert root.find("cda:setId", NS).get("root") == first_cda.find("cda:setId", NS).get("root")
    assert root.find("cda:versionNumber", NS).get("value") == "2"
    parent = root.find("cda:relatedDocument[@typeCode='RPLC']/cda:parentDocument/cda:id", NS)
    assert parent.get("root") == first_cda.find("cda:id", NS).get("root")
    assert second["relatesTo"] == [{"code": "replaces", "target": {
        "type": "DocumentReference", "identifier": first["masterIdentifier"]}}]


def test_an_amended_report_replaces_the_document(fhir, validation):
    report = write_report(fhir)
    [first] = documents_of(fhir, report, "1")
    first_cda = ET.fromstring(cda_of(fhir, first))

    report["status"] = "amended"
    report["conclusion"] = "Contrôle : TSH recalculée."
    amended = fhir.ok("PUT", f"/DiagnosticReport/{report['id']}", report)
    assert amended["meta"]["versionId"] == "2"
    docs = documents_of(fhir, report, "2", count=2)
    second = next(d for d in docs if d["id"] != first["id"])
    cda = cda_of(fhir, second)
    assert xsd_errors(validation, cda) == ""
    assert schematron_failures(validation, "CI-SIS_BIO-CR-BIO_2024.01.sch", cda) == []

    assert_replaces(ET.fromstring(cda), first_cda, second, first)
    # The store supersedes the version replaced.
    assert fhir.ok("GET", f"/DocumentReference/{first['id']}")["status"] == "superseded"
    assert second["status"] == "current"


def test_a_change_read_twice_writes_one_document(fhir, validation):
    """Reprocessing the change writes the same Binary and DocumentReference again (the
    conditional update on the CDA's id), not a second document."""
    report = write_report(fhir)
    [doc] = documents_of(fhir, report, "1")
    engine = fhir.engine
    [message] = [m for m in engine.messages(channel="lab-report-documents", limit=100)["items"]]
    assert engine.api(f"/api/messages/{message['id']}/reprocess", method="POST")["generation"] == 1
    engine.wait_for(lambda: (m := engine.message(message["id"]))["generation"] == 1
                    and m["status"] == "sent", TIMEOUT, "the reprocessed message sent")
    docs = fhir.search(f"DocumentReference?subject={report['subject']['reference']}")
    assert [d["id"] for d in docs] == [doc["id"]]
    assert cda_of(fhir, docs[0]) == cda_of(fhir, doc)


# --- the discharge letter (LDL-SES) ------------------------------------------------------------

LDL_SES = "CI-SIS_LDL-SES_2022.01.sch"


@pytest.fixture
def letters(make_engine):
    engine = make_engine({"discharge-letters.yaml": LETTER_CHANNEL})
    return Fhir(engine, issue_token(engine, "system/*.*"))


def narrative(xhtml: str) -> dict:
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{xhtml}</div>'}


def write_letter(fhir: Fhir) -> dict:
    patient = fhir.ok("POST", "/Patient", {
        "resourceType": "Patient",
        "identifier": [{"system": INS_TEST, "value": "279035121518989"}],
        "name": [{"use": "official", "family": "PAT-TROIS", "given": ["DOMINIQUE"]}],
        "gender": "female", "birthDate": "1979-03-28"})
    hospital = post_organization(
        fhir, "750803447", "Hôpital Européen Georges Pompidou", ("SA01", "Etablissement public de santé"),
        address=[{"line": ["20 rue Leblanc"], "postalCode": "75015", "city": "Paris"}])
    doctor = post_practitioner(fhir, "AUGUIN", "Léon", ("G15_10/SM27", "Médecin - Médecine interne (SM)"))
    stay = fhir.ok("POST", "/Encounter", {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP",
                  "display": "Hospitalisation"},
        "subject": {"reference": f"Patient/{patient['id']}"},
        "period": {"start": "2024-03-01T11:17:00+01:00", "end": "2024-03-05T16:00:00+01:00"}})
    treatment = fhir.ok("POST", "/MedicationRequest", {
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "subject": {"reference": f"Patient/{patient['id']}"},
        "medicationCodeableConcept": {
            "coding": [{"system": "urn:oid:1.2.250.1.213.2.3.1", "code": "62552920",
                        "display": "LEPONEX 100 mg, comprimé sécable"}],
            "text": "LEPONEX 100 mg"},
        "dosageInstruction": [{"text": "1 comprimé le soir", "timing": {"repeat": {
            "boundsPeriod": {"start": "2024-03-05", "end": "2024-04-05"}}}}]})
    loinc = lambda code: {"coding": [{"system": "http://loinc.org", "code": code}]}  # noqa: E731
    return fhir.ok("POST", "/Composition", {
        "resourceType": "Composition", "status": "final",
        "type": loinc("11490-0"),
        "subject": {"reference": f"Patient/{patient['id']}"},
        "encounter": {"reference": f"Encounter/{stay['id']}"},
        "date": "2024-03-05T16:30:00+01:00",
        "author": [{"reference": f"Practitioner/{doctor['id']}"}],
        "custodian": {"reference": f"Organization/{hospital['id']}"},
        "title": "Lettre de liaison à la sortie",
        "section": [
            {"title": "Motif de l'hospitalisation", "code": loinc("42349-1"),
             "text": narrative("<p>Episode psychotique, cachexie</p>")},
            {"title": "Synthèse médicale du séjour", "code": loinc("42545-4"),
             "text": narrative("<p>Infection respiratoire <b>aiguë</b> &amp; traitée.</p>"
                               "<ul><li>Pas d'événement indésirable</li></ul>")},
            {"title": "Traitements à la sortie", "code": loinc("10183-2"),
             "text": narrative("<p>Poursuivre LEPONEX.</p>"),
             "entry": [{"reference": f"MedicationRequest/{treatment['id']}"}]},
        ]})


def sections_of(root: ET.Element) -> dict[str, list[str]]:
    """Each section's code and its templateIds."""
    return {s.find("cda:code", NS).get("code"): [t.get("root") for t in s.findall("cda:templateId", NS)]
            for s in root.findall(".//cda:section", NS)}


def test_a_discharge_letter_becomes_a_valid_ldl_ses_document(letters, validation):
    letter = write_letter(letters)
    [doc] = documents_of(letters, letter, "1")
    cda = cda_of(letters, doc)

    assert xsd_errors(validation, cda) == ""
    assert schematron_failures(validation, LDL_SES, cda) == []

    root = ET.fromstring(cda)
    assert [t.get("root") for t in root.findall("cda:templateId", NS)] == [
        "2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1", "1.2.250.1.213.1.1.1.29"]
    assert root.find("cda:code", NS).get("code") == "11490-0"
    assert root.find("cda:recordTarget//cda:birthTime", NS).get("value") == "19790328"
    service = root.find("cda:documentationOf/cda:serviceEvent/cda:effectiveTime", NS)
    assert service.find("cda:low", NS).get("value") == "20240301111700+0100"
    sections = sections_of(root)
    assert list(sections) == ["33557-0", "42349-1", "42545-4", "10183-2"]
    assert "1.2.250.1.213.1.1.2.35.1" in sections["33557-0"]
    assert "1.3.6.1.4.1.19376.1.5.3.1.3.1" in sections["42349-1"]
    assert "1.3.6.1.4.1.19376.1.7.3.1.1.13.7" in sections["42545-4"]
    assert "1.3.6.1.4.1.19376.1.5.3.1.3.22" in sections["10183-2"]
    [synthesis] = [o.find("cda:value", NS) for o in root.iterfind(".//cda:observation", NS)
                   if o.find("cda:code", NS).get("code") == "MED-142"]
    assert synthesis.text == "Infection respiratoire aiguë & traitée.\nPas d'événement indésirable"
    product = root.find(".//cda:substanceAdministration//cda:manufacturedMaterial", NS)
    assert product.find("cda:code", NS).get("code") == "62552920"
    assert product.find("cda:name", NS).text == "LEPONEX 100 mg"
    custodian = root.find("cda:custodian//cda:representedCustodianOrganization", NS)
    assert custodian.find("cda:id", NS).get("extension") == "1750803447"

    assert doc["type"]["coding"][0]["code"] == "11490-0"
    assert doc["content"][0]["format"]["code"] == "urn:asip:ci-sis:ldl-ses:2017"
    assert doc["context"]["facilityType"]["coding"][0]["code"] == "SA01"
    assert doc["author"] == letter["author"]
    assert doc["custodian"] == letter["custodian"]
    assert doc["context"]["encounter"] == [letter["encounter"]]


def test_an_amended_letter_replaces_the_document(letters, validation):
    letter = write_letter(letters)
    [first] = documents_of(letters, letter, "1")
    first_cda = ET.fromstring(cda_of(letters, first))

    letter["status"] = "amended"
    letter["section"][1]["text"] = narrative("<p>Infection respiratoire aiguë, guérie.</p>")
    amended = letters.ok("PUT", f"/Composition/{letter['id']}", letter)
    assert amended["meta"]["versionId"] == "2"
    docs = documents_of(letters, letter, "2", count=2)
    second = next(d for d in docs if d["id"] != first["id"])
    cda = cda_of(letters, second)
    assert xsd_errors(validation, cda) == ""
    assert schematron_failures(validation, LDL_SES, cda) == []

    assert_replaces(ET.fromstring(cda), first_cda, second, first)
    assert letters.ok("GET", f"/DocumentReference/{first['id']}")["status"] == "superseded"
