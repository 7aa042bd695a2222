"""The FHIR R4 API at /fhir, driven by a third-party HTTP client (requests), on SQLite and on a
real PostgreSQL: the same suite on both. Every resource the server returns is validated with
the `fhir.resources` R4B models."""

import base64
import json
import os
import urllib.parse
import uuid

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class

from conftest import Engine, ROOT

FHIR_JSON = "application/fhir+json"


def validate(resource: dict):
    """Validates a resource (and a Bundle's entries) with the R4B models."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


class Fhir:
    """A FHIR client on one engine, with the token given."""

    def __init__(self, engine: Engine, token: str):
        self.engine = engine
        self.base = engine.base + "/fhir"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["Accept"] = FHIR_JSON

    def call(self, method: str, path: str, body=None, headers=None, raw: bytes | None = None, **kw):
        h = {"Content-Type": FHIR_JSON, **(headers or {})}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        r = self.session.request(method, self.base + path, data=data, headers=h, timeout=60, **kw)
        assert r.status_code < 500, (r.status_code, r.text)
        if r.content:
            assert r.headers["Content-Type"].startswith(FHIR_JSON), r.headers
            validate(r.json())
        return r

    def ok(self, method, path, body=None, **kw) -> dict:
        r = self.call(method, path, body, **kw)
        assert r.status_code < 300, (r.status_code, r.text)
        return r.json() if r.content else {}

    def search(self, query: str) -> list[dict]:
        bundle = self.ok("GET", "/" + query)
        return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]

    def ids(self, query: str) -> set[str]:
        return {r["id"] for r in self.search(query)}


def issue_token(engine: Engine, *scopes: str) -> str:
    args = ["token", "issue", "--data-dir", str(engine.data_dir), "--name", f"fhir-{len(scopes)}"]
    for s in scopes:
        args += ["--scope", s]
    return engine.cli(*args).stdout.strip()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    if request.param == "postgres":
        server = request.getfixturevalue("postgres")
        return {"PASSERELLE_DATABASE_URL": server.new_database()}
    return {}


@pytest.fixture
def engine(workdir, backend):
    e = Engine(workdir, ROOT / "channels", env=backend).start()
    yield e
    e.stop()


@pytest.fixture
def fhir(engine):
    return Fhir(engine, issue_token(engine, "system/*.*"))


def patient(family: str, given: str = "Anne", ins: str | None = None, birth: str = "1980-05-01", **extra) -> dict:
    p = {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], "birthDate": birth, **extra}
    if ins:
        p["identifier"] = [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": ins}]
    return p


def test_crud_versions_conditional_create_and_history(fhir):
    r = fhir.call("POST", "/Patient", patient("Bergère", ins="2800175123456"))
    assert r.status_code == 201
    created = r.json()
    pid = created["id"]
    assert r.headers["ETag"] == 'W/"1"'
    assert r.headers["Location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    assert "Last-Modified" in r.headers
    assert created["meta"]["versionId"] == "1"

    read = fhir.call("GET", f"/Patient/{pid}")
    assert read.json()["name"][0]["family"] == "Bergère"
    assert read.headers["ETag"] == 'W/"1"'

    created["gender"] = "female"
    r = fhir.call("PUT", f"/Patient/{pid}", created, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    stale = fhir.call("PUT", f"/Patient/{pid}", created, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"

    # Conditional create: the match is returned, nothing created.
    again = fhir.call("POST", "/Patient", patient("Bergère", ins="2800175123456"),
                      headers={"If-None-Exist": "identifier=urn:oid:1.2.250.1.213.1.4.8|2800175123456"})
    assert again.status_code == 200 and again.json()["id"] == pid

    # Create on update with the client's id; Prefer: return=minimal.
    r = fhir.call("PUT", "/Patient/chosen-id", {**patient("Martin"), "id": "chosen-id"},
                  headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and not r.content

    # JSON Patch.
    r = fhir.call("PATCH", f"/Patient/{pid}", raw=json.dumps([{"op": "replace", "path": "/gender", "value": "other"}]).encode(),
                  headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and r.json()["gender"] == "other" and r.json()["meta"]["versionId"] == "3"
    # Conditional patch (PATCH [type]?criteria), and a patch that changes nothing: no version.
    by_ins = "/Patient?identifier=" + urllib.parse.quote("urn:oid:1.2.250.1.213.1.4.8|2800175123456")
    same = json.dumps([{"op": "replace", "path": "/gender", "value": "other"}]).encode()
    r = fhir.call("PATCH", by_ins, raw=same, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and r.json()["id"] == pid and r.json()["meta"]["versionId"] == "3", r.text
    r = fhir.call("PATCH", "/Patient?identifier=urn:x|none", raw=same, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome", r.text

    assert fhir.call("GET", f"/Patient/{pid}/_history/1").json()["meta"]["versionId"] == "1"
    assert fhir.call("DELETE", f"/Patient/{pid}").status_code == 204
    gone = fhir.call("GET", f"/Patient/{pid}")
    assert gone.status_code == 410 and gone.json()["resourceType"] == "OperationOutcome"
    assert fhir.call("GET", "/Patient/never-was").status_code == 404

    history = fhir.ok("GET", f"/Patient/{pid}/_history")
    assert history["type"] == "history"
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']
    assert history["entry"][0]["request"]["method"] == "DELETE"
    type_history = fhir.ok("GET", "/Patient/_history?_count=2")
    assert len(type_history["entry"]) == 2
    assert any(link["relation"] == "next" for link in type_history["link"])
    system = fhir.ok("GET", "/_history?_count=100")
    assert {e["resource"]["resourceType"] for e in system["entry"] if "resource" in e} >= {"Patient", "AuditEvent"}


@pytest.fixture
def clinic(fhir):
    """A small record: two patients, a practitioner, observations and a condition."""
    prac = fhir.ok("POST", "/Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Lefèvre"}],
                                              "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810000000001"}]})
    p1 = fhir.ok("POST", "/Patient", patient("Dupont", "Jean", ins="1700175000001", birth="1970-01-01",
                                             gender="male", generalPractitioner=[{"reference": f"Practitioner/{prac['id']}"}]))
    p2 = fhir.ok("POST", "/Patient", patient("Durand", "Marie", ins="2850275000002", birth="1985-02-15", gender="female"))
    obs = []
    for p, value, when in [(p1, 72, "2024-01-10T08:00:00Z"), (p1, 95, "2024-03-05T09:30:00+01:00"), (p2, 60, "2023-12-31")]:
        obs.append(fhir.ok("POST", "/Observation", {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": f"Patient/{p['id']}"},
            "performer": [{"reference": f"Practitioner/{prac['id']}"}],
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        }))
    cond = fhir.ok("POST", "/Condition", {
        "resourceType": "Condition", "subject": {"reference": f"Patient/{p1['id']}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}], "text": "Hypertension artérielle"},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
    })
    return {"prac": prac, "p1": p1, "p2": p2, "obs": obs, "cond": cond}


def test_search_every_parameter_kind(fhir, clinic):
    p1, p2, prac = clinic["p1"]["id"], clinic["p2"]["id"], clinic["prac"]["id"]
    o = [x["id"] for x in clinic["obs"]]
    # string: default (prefix, case and accent insensitive), :exact, :contains
    assert fhir.ids("Patient?family=dup") == {p1}
    assert fhir.ids("Practitioner?name=lefevre") == {prac}
    assert fhir.ids("Patient?family:exact=Dupont") == {p1}
    assert fhir.ids("Patient?family:exact=dupont") == set()
    assert fhir.ids("Patient?name:contains=ura") == {p2}
    # token: system|code, code, |code, :not, :text
    assert fhir.ids("Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|1700175000001") == {p1}
    assert fhir.ids("Patient?identifier=2850275000002") == {p2}
    assert fhir.ids("Patient?gender:not=male") == {p2}
    assert fhir.ids("Condition?code:text=hypertension") == {clinic["cond"]["id"]}
    assert fhir.ids("Observation?code=http://loinc.org|8867-4") == set(o)
    # reference: Type/id, id with :Type, chained, :missing
    assert fhir.ids(f"Observation?subject=Patient/{p1}") == {o[0], o[1]}
    assert fhir.ids(f"Observation?patient={p2}") == {o[2]}
    assert fhir.ids(f"Observation?subject:Patient={p2}") == {o[2]}
    assert fhir.ids("Observation?subject:Patient.name=durand") == {o[2]}
    assert fhir.ids("Observation?patient.identifier=urn:oid:1.2.250.1.213.1.4.8|1700175000001") == {o[0], o[1]}
    assert fhir.ids("Patient?general-practitioner:missing=true") == {p2}
    # date with prefixes
    assert fhir.ids("Patient?birthdate=1970") == {p1}
    assert fhir.ids("Patient?birthdate=gt1980") == {p2}
    assert fhir.ids("Patient?birthdate=lt1980-01-01") == {p1}
    assert fhir.ids("Patient?birthdate=ge1985-02-15&birthdate=le1985-02-15") == {p2}
    assert fhir.ids("Patient?birthdate=ne1970-01-01") == {p2}
    assert fhir.ids("Observation?date=sa2024-01-31") == {o[1]}
    assert fhir.ids("Observation?date=eb2024") == {o[2]}
    assert fhir.ids("Observation?date=2024-03-05T08:30:00Z") == {o[1]}
    assert fhir.ids("Observation?date=ap2024-01-10") >= {o[0]}
    # quantity
    assert fhir.ids("Observation?value-quantity=gt70") == {o[0], o[1]}
    assert fhir.ids("Observation?value-quantity=72|http://unitsofmeasure.org|/min") == {o[0]}
    assert fhir.ids("Observation?value-quantity=le60") == {o[2]}
    # _id, _lastUpdated
    assert fhir.ids(f"Patient?_id={p1},{p2}") == {p1, p2}
    assert fhir.ids("Patient?_lastUpdated=ge2020-01-01") >= {p1, p2}
    assert fhir.ids("Patient?_lastUpdated=lt2020-01-01") == set()
    # OR within a parameter, AND across
    assert fhir.ids("Patient?family=dupont,durand&gender=female") == {p2}

    # _summary=count, _total, _elements, _sort
    count = fhir.ok("GET", "/Observation?_summary=count")
    assert count["total"] == 3 and "entry" not in count
    elements = fhir.search(f"Patient?_id={p1}&_elements=birthDate")
    assert elements[0]["birthDate"] == "1970-01-01" and "name" not in elements[0]
    assert any(t["code"] == "SUBSETTED" for t in elements[0]["meta"]["tag"])
    by_date = [r["id"] for r in fhir.search("Observation?_sort=-date")]
    assert by_date == [o[1], o[0], o[2]]
    by_family = [r["name"][0]["family"] for r in fhir.search("Patient?_sort=family")]
    assert by_family == sorted(by_family)

    # _include and _revinclude
    bundle = fhir.ok("GET", f"/Observation?_id={o[0]}&_include=Observation:subject&_include=Observation:performer")
    included = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"] if e["search"]["mode"] == "include"}
    assert included == {("Patient", p1), ("Practitioner", prac)}
    bundle = fhir.ok("GET", f"/Patient?_id={p1}&_revinclude=Observation:subject&_revinclude=Condition:subject")
    rev = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
    assert rev == {o[0], o[1], clinic["cond"]["id"]}

    # POST _search gives the same as GET
    r = fhir.call("POST", "/Patient/_search", raw=b"family=dupont",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {p1}


def test_paging_links_stay_valid_while_data_changes(fhir):
    ids = [fhir.ok("POST", "/Patient", patient(f"Pagination{i}"))["id"] for i in range(7)]
    first = fhir.ok("GET", "/Patient?family=pagination&_count=3&_sort=family")
    seen = [e["resource"]["id"] for e in first["entry"]]
    # Data changes between pages: a resource already shown is deleted, another one created.
    fhir.ok("DELETE", f"/Patient/{seen[0]}")
    fhir.ok("POST", "/Patient", patient("Pagination99"))
    link = next(x["url"] for x in first["link"] if x["relation"] == "next")
    while link:
        page = fhir.session.get(link, timeout=30).json()
        validate(page)
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        link = next((x["url"] for x in page["link"] if x["relation"] == "next"), None)
    assert len(seen) == len(set(seen)), "no resource shown twice"
    assert set(ids) <= set(seen), "no resource skipped"


def transaction(entries: list) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_transaction_with_placeholders_conditional_references_and_everything(fhir):
    fhir.ok("POST", "/Organization", {"resourceType": "Organization", "name": "Hôpital Nord Franche-Comté",
                                       "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "900000001"}]})
    pat_url = f"urn:uuid:{uuid.uuid4()}"
    enc_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = transaction([
        {"fullUrl": pat_url, "resource": {**patient("Moreau", ins="1900175000009"),
                                          "managingOrganization": {"reference": "Organization?identifier=urn:oid:1.2.250.1.71.4.2.2|900000001"}},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.250.1.213.1.4.8|1900175000009"}},
        {"fullUrl": enc_url, "resource": {"resourceType": "Encounter", "status": "in-progress",
                                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                                          "subject": {"reference": pat_url}},
         "request": {"method": "POST", "url": "Encounter"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "Température"},
                      "subject": {"reference": pat_url}, "encounter": {"reference": enc_url},
                      "valueQuantity": {"value": 37.2, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"}},
         "request": {"method": "POST", "url": "Observation"}},
    ])
    r = fhir.ok("POST", "", bundle, headers={"Prefer": "return=representation"})
    assert r["type"] == "transaction-response"
    assert [e["response"]["status"] for e in r["entry"]] == ["201 Created"] * 3
    pid = r["entry"][0]["resource"]["id"]
    assert r["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{pid}"
    assert r["entry"][2]["resource"]["encounter"]["reference"].startswith("Encounter/")
    assert r["entry"][0]["resource"]["managingOrganization"]["reference"].startswith("Organization/")

    # The same transaction again: the conditional create finds the patient.
    again = fhir.ok("POST", "", bundle)
    assert again["entry"][0]["response"]["status"] == "200 OK"
    assert again["entry"][0]["response"]["location"].startswith(f"Patient/{pid}/")

    everything = fhir.ok("GET", f"/Patient/{pid}/$everything")
    types = sorted(e["resource"]["resourceType"] for e in everything["entry"])
    assert types == sorted(["Patient", "Encounter", "Encounter", "Observation", "Observation", "Organization"])


def test_failing_50th_entry_leaves_nothing_behind(fhir):
    entries = [{"resource": patient(f"Rollback{i}"), "request": {"method": "POST", "url": "Patient"}} for i in range(49)]
    entries.append({"resource": {"resourceType": "Patient", "birthDate": "31/12/1999"},
                    "request": {"method": "POST", "url": "Patient"}})
    r = fhir.call("POST", "", transaction(entries))
    assert r.status_code == 400
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "entry[49]" in outcome["issue"][0]["diagnostics"]
    assert fhir.ok("GET", "/Patient?family=rollback&_summary=count")["total"] == 0

    # A batch is not atomic: each entry answers for itself.
    batch = {"resourceType": "Bundle", "type": "batch", "entry": entries[-2:]}
    b = fhir.ok("POST", "", batch)
    assert [e["response"]["status"][:3] for e in b["entry"]] == ["201", "400"]


@pytest.mark.parametrize("method,path,body,headers", [
    ("POST", "/Patient", b"{not json", {}),
    ("POST", "/Patient", b'{"resourceType": "Observation", "status": "final"}', {}),
    ("POST", "/Patient", b'{"resourceType": "Patient", "birthDate": "yesterday"}', {}),
    ("POST", "/Patient", b'["a"]', {}),
    ("POST", "/Patient", b'{"resourceType": "Patient", "id": "bad id!"}', {}),
    ("GET", "/Patient?birthdate=not-a-date", None, {}),
    ("GET", "/Patient?nonsense=1", None, {"Prefer": "handling=strict"}),
    ("GET", "/Patient?_count=many", None, {"Prefer": "handling=strict"}),
    ("GET", "/Observation?subject.name=x", None, {"Prefer": "handling=strict"}),
    ("PUT", "/Patient/abc", b'{"resourceType": "Patient", "id": "xyz"}', {}),
    ("POST", "", b'{"resourceType": "Bundle", "type": "collection"}', {}),
    ("POST", "", b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}}]}', {}),
])
def test_bad_input_gets_400_with_an_operation_outcome(fhir, method, path, body, headers):
    r = fhir.call(method, path, raw=body, headers=headers)
    assert r.status_code == 400, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"]


def test_lenient_handling_ignores_unknown_parameters_and_says_so(fhir, clinic):
    bundle = fhir.ok("GET", "/Patient?nonsense=1&family=dupont")
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(matches) == 1 and "nonsense" in outcomes[0]["resource"]["issue"][0]["diagnostics"]


def test_unknown_type_and_xml_are_refused_clearly(fhir):
    assert fhir.call("GET", "/Nonsense/1").status_code == 404
    r = fhir.call("GET", "/Patient?_format=xml")
    assert r.status_code == 406 and r.json()["resourceType"] == "OperationOutcome"


def test_tokens_scopes_and_audit_trail(engine, fhir):
    anonymous = requests.get(engine.base + "/fhir/Patient", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["resourceType"] == "OperationOutcome"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(engine.base + "/fhir/metadata", timeout=10).status_code == 200

    pid = fhir.ok("POST", "/Patient", patient("Audité"))["id"]
    reader = Fhir(engine, issue_token(engine, "system/Patient.read"))
    reader.session.headers["X-Purpose-Of-Use"] = "TREAT"
    assert reader.ok("GET", f"/Patient/{pid}")["id"] == pid
    denied = reader.call("POST", "/Patient", patient("Interdit"))
    assert denied.status_code == 403 and "scope" in denied.json()["issue"][0]["diagnostics"]
    assert reader.call("GET", "/Observation").status_code == 403
    admin_only = Fhir(engine, engine.token)  # `admin` scope: the admin API, not patient data
    assert admin_only.call("GET", f"/Patient/{pid}").status_code == 403

    events = fhir.search(f"AuditEvent?entity=Patient/{pid}&_count=100")
    reads = [e for e in events if e["subtype"][0]["code"] == "read"]
    assert len(reads) == 2  # the reader's read and the admin token's refused read
    ok = next(e for e in reads if e["outcome"] == "0")
    assert ok["action"] == "R"
    assert ok["agent"][0]["who"]["display"] == "fhir-1"
    assert ok["agent"][0]["network"]["address"] == "127.0.0.1"
    assert ok["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    assert next(e for e in reads if e["outcome"] == "4")["agent"][0]["who"]["display"] == "tests"
    creates = fhir.search(f"AuditEvent?entity=Patient/{pid}&action=C")
    assert len(creates) == 1


def test_metadata_tells_the_truth(fhir):
    cap = fhir.ok("GET", "/metadata")
    assert cap["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in cap["rest"][0]["resource"]}
    assert len(resources) >= 140
    patient_params = {p["name"]: p["type"] for p in resources["Patient"]["searchParam"]}
    assert patient_params["family"] == "string" and patient_params["birthdate"] == "date"
    assert "Observation:subject" in resources["Observation"]["searchInclude"]
    assert "Observation:subject" in resources["Patient"]["searchRevInclude"]
    assert "Observation:patient" not in resources["Device"]["searchRevInclude"]
    # Every advertised parameter is accepted in strict mode.
    for name, kind in patient_params.items():
        value = {"date": "2020", "quantity": "1", "number": "1"}.get(kind, "x")
        r = fhir.call("GET", f"/Patient?{name}={value}", headers={"Prefer": "handling=strict"})
        assert r.status_code == 200, (name, r.text)


def test_restart_loses_nothing(engine, fhir):
    ids = [fhir.ok("POST", "/Patient", patient(f"Persist{i}"))["id"] for i in range(5)]
    engine.restart()
    assert fhir.ids("Patient?family=persist") == set(ids)
    engine.kill()
    engine.start()
    assert fhir.ids("Patient?family=persist") == set(ids)


def test_two_servers_on_one_postgres_see_each_others_writes(workdir, postgres):
    # Nodes of one deployment share the database and the encryption key.
    env = {"PASSERELLE_DATABASE_URL": postgres.new_database(),
           "PASSERELLE_KEY": base64.b64encode(os.urandom(32)).decode()}
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    a = Engine(workdir / "a", ROOT / "channels", env=env).start()
    b = Engine(workdir / "b", ROOT / "channels", env=env).start()
    try:
        fa = Fhir(a, issue_token(a, "system/*.*"))
        fb = Fhir(b, issue_token(b, "system/*.*"))
        pid = fa.ok("POST", "/Patient", patient("Partagé"))["id"]
        assert fb.ok("GET", f"/Patient/{pid}")["name"][0]["family"] == "Partagé"
        updated = fb.ok("GET", f"/Patient/{pid}")
        updated["gender"] = "female"
        fb.ok("PUT", f"/Patient/{pid}", updated, headers={"If-Match": 'W/"1"'})
        assert fa.ok("GET", f"/Patient/{pid}")["meta"]["versionId"] == "2"
        # A's stale If-Match is refused: the version check is in the shared database.
        assert fa.call("PUT", f"/Patient/{pid}", updated, headers={"If-Match": 'W/"1"'}).status_code == 412
        # Concurrent writes from both servers all land, with distinct versions.
        for i in range(10):
            (fa if i % 2 else fb).ok("POST", "/Observation", {"resourceType": "Observation", "status": "final",
                                                             "code": {"text": "n"}, "subject": {"reference": f"Patient/{pid}"}})
        assert fa.ok("GET", f"/Observation?subject=Patient/{pid}&_summary=count")["total"] == 10
    finally:
        a.stop()
        b.stop()
