"""The bundled deployment answers a third-party MLLP client and its health check."""

import hl7
from hl7.client import MLLPClient


def test_bundled_channel_acknowledges_a_third_party_sender(bundled_engine):
    message = hl7.parse(
        "MSH|^~\\&|HIS|CHBM|PASSERELLE|CHBM|20240101120000||ADT^A01^ADT_A01|SMOKE1|P|2.5\r"
        "PID|1||123^^^CHBM^PI||DUPONT^JEAN\r"
    )
    with MLLPClient("127.0.0.1", bundled_engine.mllp_port) as client:
        ack = hl7.parse(client.send_message(message).decode())
    assert str(ack.segment("MSA")[1]) == "AA"
    assert str(ack.segment("MSA")[2]) == "SMOKE1"
    status, body, _ = bundled_engine.http("GET", "/health", token=None)
    assert status == 200 and body["ready"] is True
    assert body["channels"]["hl7v2-inbound"] == "running"
