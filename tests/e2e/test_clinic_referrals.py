"""The partner clinic flow end to end, between two real `passerelle` instances: the hospital
(the bundled channels, `clinic-referrals` configured) and the clinic (its own data dir, ports
and a channel that sends its Tasks back to the hospital's `fhir-inbound`).

The contract: a ServiceRequest whose performer is the clinic's Organization reaches the
clinic's FHIR server as one transaction, with the patient, the referring practitioner, the
reasons, the supporting document (content inline) and the patient's recent results, each once
however often it is sent; the hospital authenticates with OAuth2 client credentials from the
clinic's token endpoint; a clinic down for a while gets the referral once it is up; a refusal
(two patients at the clinic with the referred patient's identifier) is dead-lettered with the
clinic's OperationOutcome and goes once reprocessed after the fix; the clinic's Task
(accepted, then completed with its report) comes back into the hospital's store, on the
hospital's ServiceRequest and patient.
"""

import base64
import uuid

import pytest
import requests

from conftest import ROOT, Engine
from test_fhir import Fhir, issue_token

CHANNEL = "clinic-referrals"
CLINIC_ORG = ("urn:oid:1.2.250.1.71.4.2.2", "1900123456")
HOSPITAL_IDS = "https://chbm.test/fhir"
CLINIC_IDS = "https://saint-plouf.test/fhir"
IPP = "urn:oid:1.2.250.1.999.1.1"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
TIMEOUT = 30.0
OUTAGE_TIMEOUT = 60.0

# The clinic's side: its Tasks (what it does with a referral) go back to the hospital.
CLINIC_TASKS = """
id: referral-tasks
source:
  type: store
  subscription: Task
  include: [basedOn, for, owner, output.valueReference, output.valueReference.resolve().content.attachment.url]
transform:
  type: fhir-transaction
  identifier_system: %s
destinations:
  - id: hospital
    type: fhir
    url: ${HOSPITAL_INBOUND}
    token: ${HOSPITAL_TOKEN}
    retry: { max_attempts: 20, initial_backoff: 200ms, max_backoff: 2s }
""" % CLINIC_IDS


class Pair:
    """The hospital and the clinic, each a `passerelle serve` of its own."""

    def __init__(self, tmp_path):
        self.clinic = Engine(self._dir(tmp_path, "clinic"), tmp_path / "clinic-channels")
        (tmp_path / "clinic-channels").mkdir()
        (tmp_path / "clinic-channels" / "referral-tasks.yaml").write_text(CLINIC_TASKS)
        self.hospital = Engine(self._dir(tmp_path, "hospital"), ROOT / "channels")
        # The hospital is the clinic's OAuth2 client; the clinic holds a token of the hospital.
        client = issue_token(self.clinic, "system/*.*")
        client_id = client.split("_")[1]
        self.hospital.env.update({
            "PASSERELLE_CLINIC_FHIR": self.clinic.base + "/fhir",
            "PASSERELLE_CLINIC_ORG": "|".join(CLINIC_ORG),
            "PASSERELLE_IDENTIFIER_SYSTEM": HOSPITAL_IDS,
            "PASSERELLE_CLINIC_TOKEN_URL": self.clinic.base + "/api/oauth/token",
            "PASSERELLE_CLINIC_CLIENT_ID": client_id,
            "PASSERELLE_CLINIC_CLIENT_SECRET": client,
            "PASSERELLE_CLINIC_SCOPE": "system/*.*",
        })
        self.clinic.env.update({
            "HOSPITAL_INBOUND": self.hospital.base + "/api/inbound/fhir-inbound",
            "HOSPITAL_TOKEN": issue_token(self.hospital, "system/*.*"),
        })

    @staticmethod
    def _dir(tmp_path, name):
        d = tmp_path / name
        d.mkdir()
        return d

    def fhir(self, engine: Engine) -> Fhir:
        return Fhir(engine, issue_token(engine, "system/*.*"))

    def stop(self):
        self.hospital.stop()
        self.clinic.stop()


@pytest.fixture
def pair(tmp_path):
    p = Pair(tmp_path)
    yield p
    p.stop()


@pytest.fixture
def running(pair):
    pair.clinic.start()
    pair.hospital.start()
    return pair


def identifier_query(system: str, value: str) -> str:
    return requests.utils.quote(f"{system}|{value}", safe="")


def refer(fhir: Fhir) -> dict:
    """What a clinician's referral writes at the hospital, the ServiceRequest last."""
    ins = f"2{uuid.uuid4().int % 10**14:014d}"
    ipp = "IPP-" + uuid.uuid4().hex[:8]
    clinic = fhir.ok("POST", "/Organization", {
        "resourceType": "Organization", "name": "Clinique Saint-Plouf",
        "identifier": [{"system": CLINIC_ORG[0], "value": CLINIC_ORG[1]}]})
    doctor = fhir.ok("POST", "/Practitioner", {
        "resourceType": "Practitioner", "name": [{"family": "MEDECIN", "given": ["Paul"]}],
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810000000" + uuid.uuid4().hex[:3]}]})
    patient = fhir.ok("POST", "/Patient", {
        "resourceType": "Patient", "name": [{"family": "NESSI", "given": ["Ruth"]}],
        "gender": "female", "birthDate": "1979-03-21",
        "identifier": [{"system": IPP, "value": ipp}, {"system": INS_NIR, "value": ins}]})
    subject = {"reference": f"Patient/{patient['id']}"}
    condition = fhir.ok("POST", "/Condition", {
        "resourceType": "Condition", "subject": subject,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}]}})
    observations = [fhir.ok("POST", "/Observation", {
        "resourceType": "Observation", "status": "final", "subject": subject,
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "HbA1c"}]},
        "valueQuantity": {"value": v, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}})
        for v in (7.9, 8.4)]
    letter = b"%PDF-1.4 lettre d'adressage"
    binary = fhir.ok("POST", "/Binary", {"resourceType": "Binary", "contentType": "application/pdf",
                                         "data": base64.b64encode(letter).decode()})
    document = fhir.ok("POST", "/DocumentReference", {
        "resourceType": "DocumentReference", "status": "current", "subject": subject,
        "type": {"coding": [{"system": "http://loinc.org", "code": "57133-1", "display": "Referral note"}]},
        "content": [{"attachment": {"contentType": "application/pdf", "url": f"Binary/{binary['id']}"}}]})
    referral = fhir.ok("POST", "/ServiceRequest", {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"system": "urn:oid:1.2.250.1.999.1.5", "value": "REF-" + uuid.uuid4().hex[:8]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "183519002", "display": "Referral to endocrinology service"}]},
        "subject": subject,
        "requester": {"reference": f"Practitioner/{doctor['id']}"},
        "performer": [{"reference": f"Organization/{clinic['id']}"}],
        "reasonReference": [{"reference": f"Condition/{condition['id']}"}],
        "supportingInfo": [{"reference": f"DocumentReference/{document['id']}"}]})
    return {"referral": referral, "patient": patient, "ins": ins, "letter": letter,
            "observations": observations, "doctor": doctor}


def at_clinic(fhir: Fhir, sent: dict) -> dict | None:
    """The referral as the clinic's store holds it, with what came with it; None until there."""
    ident = sent["referral"]["identifier"][0]
    [*found] = fhir.search("ServiceRequest?identifier=" + identifier_query(ident["system"], ident["value"]))
    if not found:
        return None
    [referral] = found
    patients = fhir.search("Patient?identifier=" + identifier_query(INS_NIR, sent["ins"]))
    [patient] = patients
    return {
        "referral": referral,
        "patients": patients,
        "conditions": fhir.search(f"Condition?subject=Patient/{patient['id']}"),
        "observations": fhir.search(f"Observation?subject=Patient/{patient['id']}"),
        "documents": fhir.search(f"DocumentReference?subject=Patient/{patient['id']}"),
        "doctors": fhir.search("Practitioner?identifier=" + identifier_query(
            "urn:oid:1.2.250.1.71.4.2.1", sent["doctor"]["identifier"][0]["value"])),
    }


def assert_referral_at_clinic(found: dict, sent: dict):
    referral, [patient] = found["referral"], found["patients"]
    assert referral["subject"]["reference"] == f"Patient/{patient['id']}"
    assert {i["value"] for i in patient["identifier"]} >= {sent["ins"], sent["patient"]["identifier"][0]["value"]}
    [doctor] = found["doctors"]
    assert referral["requester"]["reference"] == f"Practitioner/{doctor['id']}"
    [condition] = found["conditions"]
    assert referral["reasonReference"][0]["reference"] == f"Condition/{condition['id']}"
    assert sorted(o["valueQuantity"]["value"] for o in found["observations"]) == [7.9, 8.4]
    [document] = found["documents"]
    assert referral["supportingInfo"][0]["reference"] == f"DocumentReference/{document['id']}"
    attachment = document["content"][0]["attachment"]
    assert base64.b64decode(attachment["data"]) == sent["letter"] and "url" not in attachment
    # The hospital's own ids are not the clinic's: a resource that had no identifier carries
    # one made from the hospital's id, which is what it is matched by the next time.
    assert [i for i in condition["identifier"] if i["system"] == HOSPITAL_IDS and i["value"].startswith("Condition/")]


def journaled(engine: Engine, status: str, timeout: float = TIMEOUT) -> dict:
    def found():
        items = engine.messages(channel=CHANNEL, status=status)["items"]
        return items[0] if items else None

    return engine.wait_for(found, timeout, f"a {CHANNEL} message {status}")


# --- the clinic's token endpoint --------------------------------------------------------------


def test_the_token_endpoint_gives_access_tokens_for_client_credentials(workdir):
    e = Engine(workdir, ROOT / "channels").start()
    try:
        client = issue_token(e, "system/Patient.read", "system/Observation.read")
        client_id = client.split("_")[1]
        url = e.base + "/api/oauth/token"
        form = {"grant_type": "client_credentials"}

        r = requests.post(url, data=form, auth=(client_id, client + "x"), timeout=10)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
        r = requests.post(url, data={"grant_type": "password"}, auth=(client_id, client), timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type", r.text
        r = requests.post(url, data={**form, "scope": "system/*.*"}, auth=(client_id, client), timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope", r.text

        r = requests.post(url, data={**form, "scope": "system/Patient.read"}, auth=(client_id, client), timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["Cache-Control"] == "no-store"
        answer = r.json()
        assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600
        assert answer["scope"] == "system/Patient.read"
        fhir = Fhir(e, answer["access_token"])
        assert fhir.call("GET", "/Patient").status_code == 200
        assert fhir.call("GET", "/Observation").status_code == 403, "only the scope asked for"
        # Credentials in the form work too; the client's scopes when none is asked.
        r = requests.post(url, data={**form, "client_id": client_id, "client_secret": client}, timeout=10)
        assert r.json()["scope"] == "system/Patient.read system/Observation.read", r.text
        # An access token cannot buy another one, and dies with its client.
        r2 = requests.post(url, data=form, auth=(client_id, answer["access_token"]), timeout=10)
        assert r2.status_code == 401, r2.text
        e.cli("token", "revoke", "--data-dir", str(e.data_dir), client_id)
        e.wait_for(lambda: fhir.call("GET", "/Patient").status_code == 401, 40, "the access token refused")
    finally:
        e.stop()


# --- the referral ------------------------------------------------------------------------------


def test_without_the_variables_the_channel_is_paused(workdir):
    e = Engine(workdir, ROOT / "channels").start()
    try:
        state = e.channel(CHANNEL)
        assert state["state"] == "paused"
        assert "PASSERELLE_CLINIC_FHIR" in state["reason"] and "PASSERELLE_CLINIC_ORG" in state["reason"]
    finally:
        e.stop()


def test_a_referral_reaches_the_clinic_once_with_what_it_needs(running):
    hospital, clinic = running.fhir(running.hospital), running.fhir(running.clinic)
    sent = refer(hospital)
    found = running.clinic.wait_for(lambda: at_clinic(clinic, sent), TIMEOUT, "the referral at the clinic")
    assert_referral_at_clinic(found, sent)

    message = journaled(running.hospital, "sent")
    detail = running.hospital.message(message["id"])
    [delivery] = detail["outbox"]
    assert delivery["status"] == "sent" and delivery["attempts"] == 1, delivery
    [step] = [t for t in detail["trace"] if t["step"] == "destination:clinic"]
    assert "transaction-response" in step["detail"], step

    # Sent again (a reprocess, as after a lost answer): nothing new at the clinic.
    status, body, _ = running.hospital.http("POST", f"/api/messages/{message['id']}/reprocess")
    assert status == 202, body
    running.hospital.wait_for(
        lambda: len([o for o in running.hospital.message(message["id"])["outbox"] if o["status"] == "sent"]) == 2,
        TIMEOUT, "the second delivery")
    again = at_clinic(clinic, sent)
    assert_referral_at_clinic(again, sent)
    assert again["referral"]["id"] == found["referral"]["id"]

    # A change of the referral follows it: the clinic's copy is updated, not duplicated.
    referral = dict(sent["referral"], status="revoked")
    hospital.ok("PUT", f"/ServiceRequest/{referral['id']}", referral)
    running.clinic.wait_for(lambda: (at_clinic(clinic, sent) or {}).get("referral", {}).get("status") == "revoked",
                            TIMEOUT, "the revoked referral at the clinic")
    assert_referral_at_clinic(at_clinic(clinic, sent), sent)


def test_a_referral_waits_while_the_clinic_is_down_then_goes_once(pair):
    pair.hospital.start()
    hospital = pair.fhir(pair.hospital)
    sent = refer(hospital)
    queued = journaled(pair.hospital, "queued")
    pair.hospital.wait_for(
        lambda: [o for o in pair.hospital.message(queued["id"])["outbox"] if o["attempts"] >= 1 and o["last_error"]],
        TIMEOUT, "a failed delivery attempt")

    pair.clinic.start()
    clinic = pair.fhir(pair.clinic)
    found = pair.clinic.wait_for(lambda: at_clinic(clinic, sent), OUTAGE_TIMEOUT, "the referral once the clinic is up")
    assert_referral_at_clinic(found, sent)
    pair.hospital.wait_for(lambda: pair.hospital.message(queued["id"])["status"] == "sent", TIMEOUT, "sent")


def test_a_refused_referral_is_dead_lettered_with_the_reason_then_reprocessed(running):
    hospital, clinic = running.fhir(running.hospital), running.fhir(running.clinic)
    # Two patients at the clinic carry the identifier the referred patient is matched by.
    ipp = "IPP-DUP-" + uuid.uuid4().hex[:6]
    twins = [clinic.ok("POST", "/Patient", {"resourceType": "Patient", "name": [{"family": "NESSI"}],
                                            "identifier": [{"system": IPP, "value": ipp}]}) for _ in range(2)]
    sent = refer_patient_with_ipp(hospital, ipp)

    dead = journaled(running.hospital, "errored")
    [delivery] = [o for o in running.hospital.message(dead["id"])["outbox"] if o["status"] == "dead"]
    assert delivery["last_error"].startswith("412"), delivery
    assert delivery["attempts"] == 1, "a refusal is not retried"
    ident = sent["referral"]["identifier"][0]
    assert clinic.search("ServiceRequest?identifier=" + identifier_query(ident["system"], ident["value"])) == []

    clinic.ok("DELETE", f"/Patient/{twins[1]['id']}")
    status, body, _ = running.hospital.http("POST", f"/api/messages/{dead['id']}/reprocess")
    assert status == 202, body
    running.hospital.wait_for(lambda: running.hospital.message(dead["id"])["status"] == "sent", TIMEOUT, "sent")
    [referral] = clinic.search("ServiceRequest?identifier=" + identifier_query(ident["system"], ident["value"]))
    assert referral["subject"]["reference"] == f"Patient/{twins[0]['id']}", "matched to the clinic's patient"


def refer_patient_with_ipp(fhir: Fhir, ipp: str) -> dict:
    clinic = fhir.ok("POST", "/Organization", {"resourceType": "Organization",
                                               "identifier": [{"system": CLINIC_ORG[0], "value": CLINIC_ORG[1]}]})
    patient = fhir.ok("POST", "/Patient", {"resourceType": "Patient", "name": [{"family": "NESSI"}],
                                           "identifier": [{"system": IPP, "value": ipp}]})
    referral = fhir.ok("POST", "/ServiceRequest", {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "identifier": [{"system": "urn:oid:1.2.250.1.999.1.5", "value": "REF-" + uuid.uuid4().hex[:8]}],
        "subject": {"reference": f"Patient/{patient['id']}"},
        "performer": [{"reference": f"Organization/{clinic['id']}"}]})
    return {"referral": referral, "patient": patient}


def test_a_referral_for_another_performer_is_not_sent(running):
    hospital = running.fhir(running.hospital)
    other = hospital.ok("POST", "/Organization", {"resourceType": "Organization",
                                                  "identifier": [{"system": CLINIC_ORG[0], "value": "1900999999"}]})
    patient = hospital.ok("POST", "/Patient", {"resourceType": "Patient", "name": [{"family": "X"}]})
    hospital.ok("POST", "/ServiceRequest", {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": f"Patient/{patient['id']}"},
        "performer": [{"reference": f"Organization/{other['id']}"}]})
    # A referral to the clinic written after it is sent: the first one was never taken.
    sent = refer(hospital)
    clinic = running.fhir(running.clinic)
    running.clinic.wait_for(lambda: at_clinic(clinic, sent), TIMEOUT, "the clinic's referral")
    assert running.hospital.messages(channel=CHANNEL)["total"] == 1


# --- the clinic's answer -----------------------------------------------------------------------


def test_the_clinics_task_comes_back_on_the_hospitals_referral(running):
    hospital, clinic = running.fhir(running.hospital), running.fhir(running.clinic)
    sent = refer(hospital)
    found = running.clinic.wait_for(lambda: at_clinic(clinic, sent), TIMEOUT, "the referral at the clinic")
    [clinic_org] = clinic.search("Organization?identifier=" + identifier_query(*CLINIC_ORG))

    # The clinic accepts the referral...
    task = clinic.ok("POST", "/Task", {
        "resourceType": "Task", "status": "accepted", "intent": "order",
        "basedOn": [{"reference": f"ServiceRequest/{found['referral']['id']}"}],
        "for": {"reference": f"Patient/{found['patients'][0]['id']}"},
        "owner": {"reference": f"Organization/{clinic_org['id']}"}})
    query = "Task?identifier=" + identifier_query(CLINIC_IDS, f"Task/{task['id']}")
    [back] = running.hospital.wait_for(lambda: hospital.search(query), TIMEOUT, "the Task at the hospital")
    assert back["status"] == "accepted"
    assert back["basedOn"] == [{"reference": f"ServiceRequest/{sent['referral']['id']}"}], "the hospital's referral"
    assert back["for"] == {"reference": f"Patient/{sent['patient']['id']}"}, "the hospital's patient"

    # ...then completes it with its report.
    report = b"%PDF-1.4 compte rendu de consultation"
    binary = clinic.ok("POST", "/Binary", {"resourceType": "Binary", "contentType": "application/pdf",
                                           "data": base64.b64encode(report).decode()})
    document = clinic.ok("POST", "/DocumentReference", {
        "resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": f"Patient/{found['patients'][0]['id']}"},
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]},
        "content": [{"attachment": {"contentType": "application/pdf", "url": f"Binary/{binary['id']}"}}]})
    task = dict(task, status="completed",
                output=[{"type": {"text": "report"}, "valueReference": {"reference": f"DocumentReference/{document['id']}"}}])
    clinic.ok("PUT", f"/Task/{task['id']}", task)

    def completed():
        [t] = hospital.search(query)
        return t if t["status"] == "completed" else None

    done = running.hospital.wait_for(completed, TIMEOUT, "the completed Task at the hospital")
    assert done["id"] == back["id"], "the same Task, updated"
    reference = done["output"][0]["valueReference"]["reference"]
    report_here = hospital.ok("GET", "/" + reference)
    assert report_here["subject"]["reference"] == f"Patient/{sent['patient']['id']}"
    assert base64.b64decode(report_here["content"][0]["attachment"]["data"]) == report
    # Nothing echoed: the hospital's referral was not changed by its copy coming back.
    assert hospital.ok("GET", f"/ServiceRequest/{sent['referral']['id']}")["meta"]["versionId"] == "1"
