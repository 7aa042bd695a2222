"""The pharmacy flow end to end: MedicationRequests written to the FHIR store go out as HL7
v2.5 RDE^O11 on the bundled `pharmacy-orders` channel to the hospital pharmacy (a third-party
MLLP peer that checks every message with hl7apy), through outages, refusals and reprocessing;
the pharmacy's RDS^O13 dispense comes back on the `hl7v2-inbound` channel as a
MedicationDispense that points to the order.

The contract: ORC-1 is NW for a new order, XO for a change, CA for a cancelled one; MSH-10 is
stable per MedicationRequest version; AA marks a delivery sent, AE retries it, AR dead-letters
it; without PASSERELLE_PHARMACY_MLLP the channel is paused.
"""

import datetime
import urllib.parse
import uuid

import pytest

from conftest import ROOT, Engine, send_hl7
from pharmacy_peer import Received, pharmacy, validate  # noqa: F401  (fixture)
from test_fhir import Fhir, issue_token

CHANNEL = "pharmacy-orders"
VARIABLE = "PASSERELLE_PHARMACY_MLLP"

#: The machine running the suite may be slow; every wait is a poll bounded by this.
TIMEOUT = 30.0
#: After an outage the next attempt waits for the retry backoff, which has grown meanwhile.
OUTAGE_TIMEOUT = 60.0

PATIENT_SYSTEM = "urn:oid:1.2.250.1.999.1.1"
ORDER_SYSTEM = "urn:oid:1.2.250.1.999.4.1"
DISPENSE_OID = "1.2.250.1.999.5.1"
CIP = "https://smt.esante.gouv.fr/terminologie-cip"
DOLIPRANE = "3400935955838"


@pytest.fixture
def engine(workdir, pharmacy):
    """The bundled channels, with the pharmacy's address in the variable the channel reads."""
    e = Engine(workdir, ROOT / "channels", env={VARIABLE: pharmacy.address}).start()
    yield e
    e.stop()


@pytest.fixture
def fhir(engine):
    return Fhir(engine, issue_token(engine, "system/*.*"))


# --- resources -------------------------------------------------------------------------------


def new_patient(fhir: Fhir) -> dict:
    ipp = "IPP-" + uuid.uuid4().hex[:8]
    return fhir.ok("POST", "/Patient", {
        "resourceType": "Patient",
        "identifier": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]},
            "system": PATIENT_SYSTEM,
            "value": ipp,
        }],
        "name": [{"family": "GARNIER", "given": ["JEANNE"]}],
        "birthDate": "1985-02-14",
        "gender": "female",
    })


def new_order(fhir: Fhir, patient: dict, dose: float = 1) -> dict:
    return fhir.ok("POST", "/MedicationRequest", {
        "resourceType": "MedicationRequest",
        "identifier": [{"system": ORDER_SYSTEM, "value": "RX-" + uuid.uuid4().hex[:8]}],
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": CIP, "code": DOLIPRANE, "display": "DOLIPRANE 1000MG CPR"}]},
        "subject": {"reference": f"Patient/{patient['id']}"},
        "authoredOn": "2024-11-04T10:55:00+01:00",
        "dosageInstruction": [{
            "text": "1 comprime 3 fois par jour",
            "route": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0162", "code": "PO", "display": "oral"}]},
            "doseAndRate": [{"doseQuantity": {"value": dose, "unit": "comprime"}}],
        }],
        "dispenseRequest": {"quantity": {"value": 30, "unit": "comprime"}},
    })


def update(fhir: Fhir, resource: dict) -> dict:
    return fhir.ok("PUT", f"/{resource['resourceType']}/{resource['id']}", resource)


# --- what the pharmacy received --------------------------------------------------------------


def orders(pharmacy, order_control: str) -> list[Received]:
    return [r for r in pharmacy.of_type("RDE^O11") if r.order_control == order_control]


def wait_order(pharmacy, order_control: str, timeout: float = TIMEOUT) -> Received:
    """The first RDE^O11 with this ORC-1, once it has arrived."""
    return pharmacy.wait_for(lambda p: orders(p, order_control), timeout, f"an RDE^O11 with ORC-1 {order_control}")[0]


def channel_state(engine: Engine) -> dict:
    """The channel in /api/channels: its state, reason and counters."""
    channels = engine.api("/api/channels")
    found = next((c for c in channels if c["id"] == CHANNEL), None)
    assert found, f"no {CHANNEL} channel among the bundled ones: {[c['id'] for c in channels]}"
    return found


def settled(engine: Engine, sent: int):
    """Waits until the channel has sent `sent` messages and holds none: from then on a second
    copy at the pharmacy could only be a duplicate, not a delivery still in flight."""
    def done():
        c = channel_state(engine)
        return c if c["sent"] >= sent and c["queued"] == 0 else None

    return engine.wait_for(done, TIMEOUT, f"{CHANNEL}: {sent} sent, none queued")


def assert_valid_order(order: Received, patient: dict, order_control: str):
    assert order.valid, f"not a valid HL7 2.5 {order.message_type}: {order.errors}\n{order.raw}"
    assert order.message_type.startswith("RDE^O11")
    assert order.order_control == order_control
    ipp = patient["identifier"][0]["value"]
    assert ipp in [cx.split("^")[0] for cx in order.repetitions("PID-3")], order.segment("PID")
    assert order.value("RXE-2.1") == DOLIPRANE, order.segment("RXE")


def placer_number(order: Received) -> str:
    """ORC-2.1, the placer order number the pharmacy will quote back."""
    return order.value("ORC-2.1")


def journaled(engine: Engine, status: str) -> dict:
    """The channel's message in this status, once there is one."""
    def found():
        items = engine.messages(channel=CHANNEL, status=status)["items"]
        return items[0] if items else None

    return engine.wait_for(found, TIMEOUT, f"a {CHANNEL} message {status}")


# --- scenarios -------------------------------------------------------------------------------


def test_without_the_variable_the_channel_is_paused(workdir):
    e = Engine(workdir, ROOT / "channels")
    e.env.pop(VARIABLE, None)
    e.start()
    try:
        state = channel_state(e)
        assert state["state"] == "paused"
        assert VARIABLE in state["reason"]
    finally:
        e.stop()


def test_new_changed_and_cancelled_orders_reach_the_pharmacy_once_each(engine, fhir, pharmacy):
    patient = new_patient(fhir)
    order = new_order(fhir, patient)
    assert channel_state(engine)["state"] == "running"

    new = wait_order(pharmacy, "NW")
    assert_valid_order(new, patient, "NW")
    # The placer order number names the MedicationRequest, by its identifier or its id.
    assert placer_number(new) in (order["identifier"][0]["value"], order["id"]), new.segment("ORC")
    settled(engine, sent=1)

    order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = 2
    order["dosageInstruction"][0]["text"] = "2 comprimes 3 fois par jour"
    order = update(fhir, order)
    changed = wait_order(pharmacy, "XO")
    assert_valid_order(changed, patient, "XO")
    assert float(changed.value("RXE-3")) == 2, changed.segment("RXE")
    settled(engine, sent=2)

    order["status"] = "cancelled"
    update(fhir, order)
    cancelled = wait_order(pharmacy, "CA")
    assert_valid_order(cancelled, patient, "CA")
    settled(engine, sent=3)

    # One message per version, each once; the same order throughout.
    control_ids = [new.control_id, changed.control_id, cancelled.control_id]
    assert len(set(control_ids)) == 3, control_ids
    assert [len(pharmacy.copies(c)) for c in control_ids] == [1, 1, 1], pharmacy.control_ids()
    assert [r.order_control for r in pharmacy.of_type("RDE^O11")] == ["NW", "XO", "CA"]
    assert {placer_number(m) for m in (new, changed, cancelled)} == {placer_number(new)}


def test_an_order_waits_in_the_outbox_while_the_pharmacy_is_down(engine, fhir, pharmacy):
    pharmacy.mode = "down"
    patient = new_patient(fhir)
    new_order(fhir, patient)

    queued = journaled(engine, "queued")
    assert channel_state(engine)["queued"] >= 1
    # An attempt was made and refused, rather than nothing tried yet.
    engine.wait_for(
        lambda: [o for o in engine.message(queued["id"])["outbox"] if o["attempts"] >= 1 and o["last_error"]],
        TIMEOUT, "a refused delivery attempt")
    assert pharmacy.received == []

    pharmacy.mode = "accept"
    delivered = wait_order(pharmacy, "NW", timeout=OUTAGE_TIMEOUT)
    assert_valid_order(delivered, patient, "NW")
    engine.wait_for(lambda: engine.message(queued["id"])["status"] == "sent", TIMEOUT, "the order sent")
    settled(engine, sent=1)
    # The message's view tells the delivery's story: each attempt a trace step with its
    # outcome (the attempts the pharmacy was down for, then the pharmacy's answer), the outbox its count.
    detail = engine.message(queued["id"])
    attempts = [s for s in detail["trace"] if s["step"] == "destination:pharmacy"]
    assert [s["outcome"] for s in attempts][-1] == "sent" and attempts[-1]["detail"] == "AA", attempts
    assert attempts[:-1] and all(s["outcome"] == "retry" and s["detail"] for s in attempts[:-1]), attempts
    [outbox] = detail["outbox"]
    assert (outbox["status"], outbox["attempts"]) == ("sent", len(attempts)), outbox
    assert len(pharmacy.copies(delivered.control_id)) == 1, pharmacy.control_ids()
    assert len(pharmacy.received) == 1


def test_a_refused_order_is_dead_lettered_with_the_reason_then_reprocessed(engine, fhir, pharmacy):
    reason = "unknown patient at the pharmacy"
    pharmacy.set_mode("reject", reason=reason)
    patient = new_patient(fhir)
    new_order(fhir, patient)

    dead = journaled(engine, "errored")
    detail = engine.message(dead["id"])
    deliveries = [o for o in detail["outbox"] if o["status"] == "dead"]
    assert deliveries, detail["outbox"]
    assert reason in deliveries[0]["last_error"], deliveries
    assert deliveries[0]["attempts"] == 1, "AR: not retried"
    [refused] = pharmacy.received
    assert_valid_order(refused, patient, "NW")
    assert refused.ack_code == "AR"

    pharmacy.mode = "accept"
    status, body, _ = engine.http("POST", f"/api/messages/{dead['id']}/reprocess")
    assert status == 202, body
    engine.wait_for(lambda: engine.message(dead["id"])["status"] == "sent", TIMEOUT, "the reprocessed order sent")
    # The same version again: the same MSH-10, so the pharmacy knows it for a retransmission.
    copies = pharmacy.copies(refused.control_id)
    assert [c.ack_code for c in copies] == ["AR", "AA"], [(r.control_id, r.ack_code) for r in pharmacy.received]
    assert copies[1].valid, copies[1].errors


def test_the_pharmacy_dispense_comes_back_as_a_medication_dispense(engine, fhir, pharmacy):
    patient = new_patient(fhir)
    order = new_order(fhir, patient)
    received = wait_order(pharmacy, "NW")
    assert_valid_order(received, patient, "NW")
    settled(engine, sent=1)

    filler = "DISP-" + uuid.uuid4().hex[:8]
    dispense_message = rds_from(received, filler)
    # The pharmacy's own message must be as standard as what it asks of the engine.
    checked = validate(dispense_message)
    assert checked.valid, checked.errors
    ack = send_hl7(engine.mllp_port, dispense_message)
    assert (ack.code, ack.errors) == ("AA", []), ack

    query = "MedicationDispense?identifier=" + urllib.parse.quote(f"urn:oid:{DISPENSE_OID}|{filler}-1")
    [dispense] = engine.wait_for(lambda: fhir.search(query), TIMEOUT, "the MedicationDispense")
    assert dispense["status"] == "completed"
    assert dispense["medicationCodeableConcept"]["coding"][0]["code"] == DOLIPRANE
    assert dispense["subject"]["reference"] == f"Patient/{patient['id']}", "the order's patient, found by PID-3"
    [prescription] = dispense["authorizingPrescription"]
    assert prescriptions_named(fhir, prescription) == {order["id"]}, prescription


def rds_from(order: Received, filler: str, status: str = "", counter: int = 1, placer: str | None = None) -> str:
    """The pharmacy's RDS^O13 v2.5 for a received order: addressed back to its sender, the
    order's PID, ORC-2 (placer number) and RXR quoted as received, the pharmacy's filler
    number in ORC-3, the order status it reports in ORC-5 (table 0038), and RXD the dispense
    number `counter` (RDS_O13 requires RXR after RXD)."""
    msh = order.raw.split("\r", 1)[0].split("|")
    now = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    segments = [
        "|".join(["MSH", msh[1], msh[4] or "PHARMA", msh[5], msh[2], msh[3], now, "",
                  "RDS^O13^RDS_O13", f"DISP-MSG-{filler}-{counter}", "P", "2.5", "", "", "", "", "FRA", "UNICODE UTF-8"]),
        order.segment("PID"),
        "|".join(["ORC", "RE", placer or order.value("ORC-2"), f"{filler}^PHARMA^{DISPENSE_OID}^ISO", "", status]),
        # RXD-7, the prescription number, is required in 2.5: the placer's.
        "|".join(["RXD", str(counter), order.value("RXE-2"), now, "30", "CPR^comprime", "", placer_number(order)]),
        order.segment("RXR") or "RXR|PO^oral^HL70162",
    ]
    return "\r".join(segments) + "\r"


def prescriptions_named(fhir: Fhir, reference: dict) -> set[str]:
    """The MedicationRequest ids a Reference designates: its literal reference, else the
    MedicationRequests carrying its logical identifier."""
    if reference.get("reference"):
        kind, _, rid = reference["reference"].rpartition("/")
        assert kind.endswith("MedicationRequest"), reference
        return {rid}
    identifier = reference["identifier"]
    token = f"{identifier['system']}|{identifier['value']}" if identifier.get("system") else identifier["value"]
    return fhir.ids("MedicationRequest?identifier=" + urllib.parse.quote(token))


def dispensed(engine: Engine, fhir: Fhir, filler: str, counter: int) -> dict:
    """The MedicationDispense of an RDS once it is in the store: the message's transaction,
    status patch included, has been applied."""
    query = "MedicationDispense?identifier=" + urllib.parse.quote(f"urn:oid:{DISPENSE_OID}|{filler}-{counter}")
    return engine.wait_for(lambda: fhir.search(query), TIMEOUT, f"the MedicationDispense {filler}-{counter}")[0]


def test_the_order_status_the_pharmacy_reports_becomes_the_orders_and_is_not_sent_back(engine, fhir, pharmacy):
    patient = new_patient(fhir)
    order = new_order(fhir, patient)
    received = wait_order(pharmacy, "NW")
    settled(engine, sent=1)
    filler = "DISP-" + uuid.uuid4().hex[:8]

    # In process (IP): what the order says already: no new version, nothing to send.
    message = rds_from(received, filler, status="IP", counter=1)
    assert validate(message).valid, validate(message).errors
    assert send_hl7(engine.mllp_port, message).code == "AA"
    dispensed(engine, fhir, filler, 1)
    assert fhir.ok("GET", f"/MedicationRequest/{order['id']}")["meta"]["versionId"] == "1"

    # The last dispense completes it (CM): the order's status changes, nothing else of it.
    assert send_hl7(engine.mllp_port, rds_from(received, filler, status="CM", counter=2)).code == "AA"
    dispensed(engine, fhir, filler, 2)
    now = fhir.ok("GET", f"/MedicationRequest/{order['id']}")
    assert (now["status"], now["meta"]["versionId"]) == ("completed", "2"), now
    assert now["dosageInstruction"] == order["dosageInstruction"], "the rest of the order kept"
    assert now["medicationCodeableConcept"] == order["medicationCodeableConcept"]

    # Not echoed: the change feed is in order, so once a later order has reached the
    # pharmacy, a message for the completion would have been there before it.
    later = new_order(fhir, patient)
    engine.wait_for(lambda: len(orders(pharmacy, "NW")) == 2, TIMEOUT, "the second order")
    assert [r.order_control for r in pharmacy.received] == ["NW", "NW"], pharmacy.control_ids()
    assert placer_number(pharmacy.received[1]) in (later["identifier"][0]["value"], later["id"])


def test_a_status_for_an_order_the_store_does_not_have_is_journaled_as_an_error(engine, fhir, pharmacy):
    patient = new_patient(fhir)
    new_order(fhir, patient)
    received = wait_order(pharmacy, "NW")
    filler = "DISP-" + uuid.uuid4().hex[:8]
    message = rds_from(received, filler, status="DC", placer=f"RX-UNKNOWN^DPI^{ORDER_SYSTEM[8:]}^ISO")
    # Journaled first, hence AA; the store refuses the transaction, naming the order.
    assert send_hl7(engine.mllp_port, message).code == "AA"
    journaled = engine.wait_message(f"DISP-MSG-{filler}-1", status="errored")
    detail = engine.message(journaled["id"])
    store = [s for s in detail["trace"] if "RX-UNKNOWN" in (s.get("detail") or "")]
    assert store and "nothing to patch" in store[0]["detail"], detail["trace"]
    assert fhir.search("MedicationDispense?identifier=" + urllib.parse.quote(f"urn:oid:{DISPENSE_OID}|{filler}-1")) == []


def test_a_pharmacy_that_takes_omp_gets_omp_o09(workdir, pharmacy):
    engine = Engine(workdir, ROOT / "channels",
                    env={VARIABLE: pharmacy.address, "PASSERELLE_PHARMACY_MESSAGE": "omp"}).start()
    try:
        fhir = Fhir(engine, issue_token(engine, "system/*.*"))
        patient = new_patient(fhir)
        order = new_order(fhir, patient)
        [sent] = pharmacy.wait_for(lambda p: p.of_type("OMP^O09"), TIMEOUT, "an OMP^O09")
        assert sent.valid, f"not a valid HL7 2.5 OMP_O09: {sent.errors}\n{sent.raw}"
        assert sent.message_type == "OMP^O09^OMP_O09"
        assert sent.order_control == "NW"
        assert placer_number(sent) in (order["identifier"][0]["value"], order["id"])
        assert sent.value("RXO-1.1") == DOLIPRANE, sent.segment("RXO")
        assert float(sent.value("RXO-11")) == 30, sent.segment("RXO")
        assert pharmacy.of_type("RDE^O11") == []
    finally:
        engine.stop()
