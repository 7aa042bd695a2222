"""The mapping tools of a running engine: `POST /api/mappings/{id}/preview` (message in,
Bundle and trace out, nothing written), `GET /api/mappings`, and reloading: an edited mapping
file is picked up without a restart, a broken one is refused with its file:line:col and the
mappings in use stay."""

import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT, Engine, binary, send_messages
from test_fhir import Fhir, issue_token

A01 = (ROOT / "mappings" / "hl7v2" / "adt.tests" / "a01-admit.hl7").read_text().replace("\n", "\r")


@pytest.fixture
def mappings(tmp_path):
    copy = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", copy)
    return copy


@pytest.fixture
def engine(tmp_path, mappings):
    e = Engine(tmp_path / "run", ROOT / "channels", env={"PASSERELLE_MAPPINGS": str(mappings)})
    e.workdir.mkdir()
    e.start()
    yield e
    e.stop()


def position(needle: str, at: str) -> str:
    """`line:col` of `at` inside the first line of adt.yaml that holds `needle`."""
    lines = (ROOT / "mappings" / "hl7v2" / "adt.yaml").read_text().splitlines()
    n, line = next((i, l) for i, l in enumerate(lines, 1) if needle in l)
    return f"{n}:{line.index(at) + 1}"


def post(engine: Engine, path: str, body: bytes = b""):
    request = urllib.request.Request(engine.base + path, data=body, method="POST")
    request.add_header("Authorization", f"Bearer {engine.token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_preview_maps_without_writing(engine):
    status, out = post(engine, "/api/mappings/adt/preview", A01.encode())
    assert status == 200, out
    kinds = [e["resource"]["resourceType"] for e in out["bundle"]["entry"]]
    assert kinds == ["Patient", "Encounter", "Encounter"], "the patient, the stay, its movement"
    gender = next(t for t in out["trace"] if t["element"] == "patient[0].gender")
    where = position("gender: { from: PID-8", "{")
    assert gender["input"] == "PID-8" and gender["rule"].endswith(f"hl7v2/adt.yaml:{where}"), gender
    assert "PID-5" in out["fields_used"] and "PV1-19" in out["fields_used"]
    fhir = Fhir(engine, issue_token(engine, "system/*.read"))
    assert fhir.search("Patient") == [], "a preview writes nothing"

    status, out = post(engine, "/api/mappings/adt/preview", A01.replace("PV1|1|I|", "PV1|1|Q|").encode())
    assert status == 422 and "patient-class" in out["error"] and out["input"] == "PV1-2", out
    where = position("code: { from: PV1-2, lookup: patient-class", "{")
    assert out["rule"].endswith(f"hl7v2/adt.yaml:{where}"), out
    assert post(engine, "/api/mappings/nope/preview", A01.encode())[0] == 404
    assert post(engine, "/api/mappings/adt/preview", b"not hl7")[0] == 400
    listed = engine.http("GET", "/api/mappings")[1]
    assert {m["id"] for m in listed} == {
        "adt", "oru", "orders", "pharmacy", "scheduling", "documents", "immunizations", "problems", "cda",
        "pharmacy-rde", "pharmacy-omp"}


def test_an_edited_mapping_is_used_without_a_restart_and_a_broken_one_is_refused(engine, mappings):
    adt = mappings / "hl7v2" / "adt.yaml"
    text = adt.read_text()
    edited = text.replace(
        "      birthDate: { from: PID-7, as: date }",
        "      birthDate: { from: PID-7, as: date }\n      active: { value: \"true\", as: boolean }",
    )
    assert edited != text
    adt.write_text(edited)

    def patient_of_preview():
        status, out = post(engine, "/api/mappings/adt/preview", A01.encode())
        assert status == 200, out
        return out["bundle"]["entry"][0]["resource"]

    engine.wait_for(lambda: patient_of_preview().get("active") is True, 20, "the edited mapping in use")
    acks = send_messages(engine.mllp_port, [A01])
    assert acks[0].code == "AA"
    engine.wait_message(acks[0].control_id, status="sent")
    fhir = Fhir(engine, issue_token(engine, "system/*.read"))
    [patient] = fhir.search("Patient")
    assert patient["active"] is True, "the channel maps with the reloaded mapping"

    adt.write_text(edited.replace("from: PID-7, as: date", "from: PID7, as: date"))
    status, out = post(engine, "/api/mappings/reload")
    assert status == 422, out
    assert any("hl7v2/adt.yaml:" in p and "PID7" in p for p in out["problems"]), out
    time.sleep(2.5)  # the watcher sees the broken file too, and refuses it the same way
    assert patient_of_preview().get("active") is True, "the mappings in use stay"
    assert "mappings not reloaded" in engine.log.read_text()


def test_check_reports_a_broken_mapping_at_its_line_and_column(mappings, tmp_path):
    """The acceptance item as an analyst meets it: `passerelle check` on a mapping with a
    mistake exits non-zero and points at the mistake, and `serve` refuses to start on it."""
    adt = mappings / "hl7v2" / "adt.yaml"
    adt.write_text(adt.read_text().replace("from: PID-7, as: date", "from: PID-7, as: datum"))
    line = next(i for i, l in enumerate(adt.read_text().splitlines(), 1) if "as: datum" in l)
    column = adt.read_text().splitlines()[line - 1].index("datum") + 1
    env = {**os.environ, "PASSERELLE_MAPPINGS": str(mappings)}
    out = subprocess.run([str(binary()), "check", "--channels", str(ROOT / "channels")],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 1, out
    assert f"{adt}:{line}:{column}: unknown type `datum`" in out.stdout, out.stdout
    serve = subprocess.run([str(binary()), "serve", "--channels", str(ROOT / "channels"),
                            "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0",
                            "--mllp", "127.0.0.1:0"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert serve.returncode != 0 and "unknown type `datum`" in serve.stderr, serve
