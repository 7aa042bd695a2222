"""The pharmacy peer on its own (no engine): hl7apy validation of what it reads, the ACKs it
builds, and its modes. The pharmacy-orders end-to-end test trusts it as a witness, so it is
checked here against hand-written messages sent by python-hl7's MLLP client."""

import socket

import pytest

from conftest import Hl7Client, parse_ack, send_hl7
from pharmacy_peer import PharmacyPeer, pharmacy, validate  # noqa: F401  (fixture)

MSH = "MSH|^~\\&|PASSERELLE|CHBM|PHARMA|CHBM|20241104110000||RDE^O11^RDE_O11|{control_id}|P|2.5|||AL|NE||UNICODE UTF-8"
PID = "PID|1||0412345^^^CHBM&1.2.250.1.999.1.1&ISO^PI||GARNIER^JEANNE^^^^^L||19850214|F"
PV1 = "PV1|1|I|CARD^101^1^CHBM"
ORC = "ORC|{control}|RX-1^PASSERELLE^1.2.250.1.999.4.1^ISO|||||||20241104105500"
RXE = "RXE||3400935955838^DOLIPRANE 1000MG CPR^CIP|1||CPR^comprime||^1 comprime 3 fois par jour|||30|CPR^comprime"
# HL7 2.5 RDE_O11 requires the TIMING_ENCODED group (TQ1) after RXE: RXE-1 is kept for
# backward compatibility only.
TQ1 = "TQ1|1||||||20241104110000"
RXR = "RXR|PO^oral^HL70162"


def rde(control_id: str = "RDE-1", control: str = "NW", segments=None) -> str:
    """An RDE^O11 v2.5 as the standard structures it: MSH, PATIENT (PID, PATIENT_VISIT (PV1)),
    ORDER (ORC, RXE, TIMING_ENCODED (TQ1), RXR)."""
    if segments is None:
        segments = [PID, PV1, ORC.format(control=control), RXE, TQ1, RXR]
    return "\r".join([MSH.format(control_id=control_id), *segments]) + "\r"


def test_a_valid_order_is_recorded_and_acknowledged_aa(pharmacy):
    ack = send_hl7(pharmacy.port, rde("RDE-OK-1"))
    assert (ack.code, ack.control_id, ack.errors) == ("AA", "RDE-OK-1", [])
    # Sender and receiver swapped; the ACK names the trigger of the order.
    assert ack.msh[3:7] == ["PHARMA", "CHBM", "PASSERELLE", "CHBM"]
    assert ack.msh[9] == "ACK^O11^ACK" and ack.msh[12] == "2.5"

    [received] = pharmacy.received
    assert received.valid, received.errors
    assert (received.message_type, received.control_id, received.order_control, received.ack_code) == (
        "RDE^O11^RDE_O11", "RDE-OK-1", "NW", "AA")
    assert received.value("RXE-2.1") == "3400935955838"
    assert received.repetitions("PID-3") == ["0412345^^^CHBM&1.2.250.1.999.1.1&ISO^PI"]
    assert received.value("ORC-2") == "RX-1^PASSERELLE^1.2.250.1.999.4.1^ISO"


def test_the_acks_themselves_validate_as_hl7_2_5():
    peer = PharmacyPeer()
    with peer:
        replies = []
        for mode in ("accept", "error", "reject"):
            peer.set_mode(mode, reason="lot | 42 ^ out of stock")
            with Hl7Client(peer.port) as client:
                replies.append(client.send_message(rde(f"ACK-{mode}")).decode())
    for reply in replies:
        result = validate(reply)
        assert result.valid, (reply, result.errors)
    assert [parse_ack(r.encode()).errors[0].text for r in replies[1:]] == ["lot | 42 ^ out of stock"] * 2


@pytest.mark.parametrize(
    "segments, error",
    [
        # What hl7apy's own group finder gets wrong both ways: TQ1 missing after RXE...
        ([PID, PV1, ORC.format(control="NW"), RXE, RXR], "Missing required child RDE_O11_ORDER.RDE_O11_TIMING_ENCODED"),
        # ... and the order without its RXE.
        ([PID, PV1, ORC.format(control="NW"), TQ1, RXR], "Missing required child RDE_O11_ORDER.RXE"),
        # A patient segment after the order has no place in RDE_O11.
        ([ORC.format(control="NW"), RXE, TQ1, RXR, PID], "segment 6 (PID) is not allowed here by RDE_O11"),
        # Strict datatypes: ORC-9 is a TS.
        ([PID, ORC.format(control="NW").replace("20241104105500", "yesterday"), RXE, TQ1, RXR], "not an HL7 valid date"),
    ],
    ids=["no-tq1", "no-rxe", "misplaced-pid", "bad-date"],
)
def test_an_invalid_order_is_recorded_with_hl7apys_error(pharmacy, segments, error):
    ack = send_hl7(pharmacy.port, rde("RDE-BAD-1", segments=segments))
    # A witness by default: the answer follows the mode, the verdict is in the record.
    assert ack.code == "AA"
    [received] = pharmacy.received
    assert not received.valid
    assert any(error in e for e in received.errors), received.errors


def test_a_strict_pharmacy_rejects_what_does_not_validate(pharmacy):
    pharmacy.reject_invalid = True
    ack = send_hl7(pharmacy.port, rde("RDE-BAD-2", segments=[PID, PV1, ORC.format(control="NW"), RXE, RXR]))
    assert (ack.code, ack.control_id) == ("AR", "RDE-BAD-2")
    assert "RDE_O11_TIMING_ENCODED" in ack.errors[0].text
    assert send_hl7(pharmacy.port, rde("RDE-OK-2")).code == "AA"


def test_error_and_reject_modes_answer_ae_and_ar_with_the_reason(pharmacy):
    pharmacy.set_mode("error")
    busy = send_hl7(pharmacy.port, rde("MODE-AE"))
    assert (busy.code, busy.control_id) == ("AE", "MODE-AE")
    assert busy.errors[0].code.startswith("207") and busy.errors[0].severity == "E"

    pharmacy.set_mode("reject", reason="unknown patient 0412345")
    refused = send_hl7(pharmacy.port, rde("MODE-AR"))
    assert (refused.code, refused.control_id) == ("AR", "MODE-AR")
    assert refused.errors[0].text == "unknown patient 0412345"

    pharmacy.mode = "accept"
    assert send_hl7(pharmacy.port, rde("MODE-AA")).code == "AA"
    assert [(r.control_id, r.ack_code) for r in pharmacy.received] == [
        ("MODE-AE", "AE"), ("MODE-AR", "AR"), ("MODE-AA", "AA")]


def test_down_refuses_connections_then_listens_again_on_the_same_port(pharmacy):
    port = pharmacy.port
    # A connection open before the outage is cut too, as when the pharmacy system stops.
    client = Hl7Client(port)
    assert parse_ack(client.send_message(rde("UP-1"))).code == "AA"

    pharmacy.mode = "down"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(ConnectionError):
        client.send_message(rde("LOST-1"))
    client.close()

    pharmacy.mode = "accept"
    assert pharmacy.port == port
    assert send_hl7(port, rde("UP-2")).code == "AA"
    assert pharmacy.control_ids() == ["UP-1", "UP-2"]


def test_a_retransmission_is_recognised_by_its_control_id(pharmacy):
    with Hl7Client(pharmacy.port) as client:
        for message in (rde("RDE-7", "NW"), rde("RDE-7", "NW"), rde("RDE-8", "XO")):
            assert parse_ack(client.send_message(message)).code == "AA"
    assert len(pharmacy.copies("RDE-7")) == 2 and len(pharmacy.copies("RDE-8")) == 1
    assert [r.order_control for r in pharmacy.of_type("RDE^O11")] == ["NW", "NW", "XO"]
