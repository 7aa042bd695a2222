"""The `device-telemetry` channel: readings published with `mosquitto_pub` on a real Mosquitto
broker (started on loopback by the tests) become vital-sign Observations for the patient of
the registered Device. Unknown devices and malformed payloads are journaled with the reason;
readings published while the engine is down, across a broker restart, are all applied."""

import getpass
import json
import shutil
import signal
import subprocess
import time

import pytest

from conftest import ROOT, Engine, free_port
from test_fhir import Fhir, issue_token, validate


class Mosquitto:
    """A Mosquitto broker on a free loopback port, with a persistent store in `workdir`."""

    def __init__(self, workdir):
        self.port = free_port()
        self.dir = workdir / "mosquitto"
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        # Run as root, Mosquitto changes to its own user unless told to stay: it must write
        # its store here.
        self.conf.write_text(
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.dir}/\nautosave_interval 1\n"
            "max_inflight_messages 100\nmax_queued_messages 100000\n")
        self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "ab"))
        deadline = time.time() + 10
        while time.time() < deadline:
            if subprocess.run(["mosquitto_pub", "-p", str(self.port), "-t", "ping", "-m", "x"],
                              capture_output=True).returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start: " + (self.dir / "log").read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves the persistent store
            self.proc.wait(timeout=10)

    def publish(self, device: str, payload, qos: int = 1):
        body = payload if isinstance(payload, str) else json.dumps(payload)
        subprocess.run(["mosquitto_pub", "-p", str(self.port), "-q", str(qos),
                        "-t", f"devices/{device}/telemetry", "-m", body], check=True)


@pytest.fixture
def broker(workdir):
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_pub") is None:
        pytest.skip("mosquitto is not installed (Debian: mosquitto mosquitto-clients)")
    b = Mosquitto(workdir).start()
    yield b
    b.stop()


@pytest.fixture
def engine(workdir, broker):
    e = Engine(workdir, ROOT / "channels", env={"PASSERELLE_MQTT": broker.url}).start()
    e.wait_for(lambda: e.channel("device-telemetry")["state"] == "running", what="channel running")
    yield e
    e.stop()


@pytest.fixture
def fhir(engine):
    return Fhir(engine, issue_token(engine, "system/*.*"))


def register(fhir: Fhir, device: str, family: str = "MONITORE") -> str:
    """A patient and the Device (identifier value `device`) linked to it; the patient's id."""
    patient = fhir.ok("POST", "/Patient", {"resourceType": "Patient", "name": [{"family": family}]})
    fhir.ok("POST", "/Device", {
        "resourceType": "Device", "status": "active",
        "identifier": [{"system": "urn:oid:1.2.250.1.999.9", "value": device}],
        "patient": {"reference": f"Patient/{patient['id']}"}})
    return patient["id"]


def observations(fhir: Fhir, patient: str) -> list[dict]:
    return fhir.search(f"Observation?subject=Patient/{patient}&_count=500")


def wait_count(engine, fhir, patient, n, timeout=30.0):
    return engine.wait_for(lambda: len(observations(fhir, patient)) >= n and observations(fhir, patient),
                           timeout, f"{n} observations")


def test_senml_readings_of_a_registered_device_become_vital_signs(engine, broker, fhir):
    patient = register(fhir, "mon-7")
    t = 1_795_000_000
    broker.publish("mon-7", [
        {"bn": "urn:dev:mon-7:", "bt": t, "n": "heart-rate", "u": "beat/min", "v": 72},
        {"n": "spo2", "u": "%", "v": 97},
        {"n": "systolic", "u": "mmHg", "v": 121},
        {"n": "diastolic", "u": "mmHg", "v": 79},
        {"n": "temperature", "u": "Cel", "v": 37.2},
        {"n": "battery", "u": "%", "v": 80}])
    found = wait_count(engine, fhir, patient, 5)
    assert len(found) == 5, "the battery level is no vital sign"
    by_code = {o["code"]["coding"][0]["code"]: o for o in found}
    assert set(by_code) == {"8867-4", "59408-5", "8480-6", "8462-4", "8310-5"}
    assert by_code["8867-4"]["valueQuantity"] == {
        "value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    assert by_code["8480-6"]["valueQuantity"]["code"] == "mm[Hg]"
    for o in found:
        validate(o)
        assert o["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]
        assert o["category"][0]["coding"][0]["code"] == "vital-signs"
        assert o["device"]["reference"].startswith("Device/")
        assert o["effectiveDateTime"] == "2026-11-18T11:06:40.000Z", "SenML base time"

    # A FHIR Observation from a device: its subject and device filled in from the registry.
    broker.publish("mon-7", {
        "resourceType": "Observation", "status": "final",
        "identifier": [{"system": "urn:oid:1.2.250.1.999.8", "value": "rr-1"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "9279-1"}]},
        "effectiveDateTime": "2026-11-23T10:00:00Z",
        "valueQuantity": {"value": 16, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
    found = wait_count(engine, fhir, patient, 6)
    [rr] = [o for o in found if o["code"]["coding"][0]["code"] == "9279-1"]
    validate(rr)
    # The same reading again (QoS 1 delivers at least once): written once.
    broker.publish("mon-7", [{"bn": "urn:dev:mon-7:", "bt": t, "n": "heart-rate", "u": "beat/min", "v": 72}])
    engine.wait_for(lambda: engine.channel("device-telemetry")["received"] >= 3, what="third reading")
    engine.wait_for(lambda: engine.channel("device-telemetry")["queued"] == 0, what="delivered")
    assert len(observations(fhir, patient)) == 6


def test_unknown_devices_and_malformed_readings_are_journaled_with_the_reason(engine, broker, fhir):
    register(fhir, "scale-1")
    broker.publish("ghost-9", [{"n": "heart-rate", "v": 60}])
    broker.publish("scale-1", "{not json")
    broker.publish("scale-1", {"resourceType": "Patient"})
    engine.wait_for(lambda: engine.channel("device-telemetry")["rejected"] == 3, what="3 rejected")
    rejected = engine.messages(channel="device-telemetry", status="rejected")["items"]
    reasons = {m["sender"]: [] for m in rejected}
    for m in rejected:
        reasons[m["sender"]].append(m["error"])
    assert "unknown device `ghost-9`" in reasons["ghost-9"][0]
    assert sorted(reasons["scale-1"]) == sorted([
        "not JSON: key must be a string at line 1 column 2",
        "neither SenML (a JSON array of records, RFC 8428) nor a FHIR Observation"])
    assert all(m["source"] == "mqtt" for m in rejected)


def test_readings_published_while_the_engine_is_down_survive_a_broker_restart(engine, broker, fhir, workdir):
    patient = register(fhir, "oxi-3")
    broker.publish("oxi-3", [{"n": "spo2", "u": "%", "v": 95, "t": 1_795_000_000}])
    wait_count(engine, fhir, patient, 1)
    engine.stop()
    # QoS 1 readings for the engine's persistent session, kept by the broker...
    for i in range(1, 21):
        broker.publish("oxi-3", [{"n": "spo2", "u": "%", "v": 90 + i % 5, "t": 1_795_000_000 + i}])
    # ...through a restart of the broker itself (saved to its persistent store).
    broker.stop()
    broker.start()
    engine.start()
    found = wait_count(engine, fhir, patient, 21)
    assert len(found) == 21, "no reading lost, none twice"
    assert len({o["effectiveDateTime"] for o in found}) == 21
