"""Character sets: what MSH-18 (or the channel's default) says is how the bytes are read,
shown by the message browser and used for the ACK."""

import base64

import pytest

from conftest import Hl7Client, hl7_message, parse_ack, send_hl7

NAME = "HÉLÈNE^François"
FACILITY = "CHÂTEAU-THIERRY"

# MSH-18 label, Python codec, a character only that charset (of these) can carry
CHARSETS = [
    ("8859/1", "latin-1", "±"),
    ("8859/15", "iso8859_15", "€"),
    ("UNICODE UTF-8", "utf-8", "✓"),
]


def accented(control_id: str, charset: str = "", extra: str = "") -> str:
    return hl7_message(
        control_id,
        facility=FACILITY,
        charset=charset,
        body=[f"PID|1||123456^^^CHBM^PI||{NAME}||19700101|F", f"NTE|1||dose {extra} 2"],
    )


def field_of(parsed: dict, segment_id: str, number: int) -> dict:
    segment = next(s for s in parsed["segments"] if s["id"] == segment_id)
    return next(f for f in segment["fields"] if f["number"] == number)


def check_journaled(engine, control_id: str, sent: bytes, label: str, extra: str):
    journaled = engine.wait_message(control_id)
    detail = engine.message(journaled["id"])
    assert detail["parse_error"] is None
    assert detail["parsed"]["charset"] == label
    pid5 = field_of(detail["parsed"], "PID", 5)
    assert pid5["value"] == NAME
    assert pid5["repetitions"] == [["HÉLÈNE", "François"]]
    assert field_of(detail["parsed"], "NTE", 3)["value"] == f"dose {extra} 2"
    assert NAME in detail["raw"] and FACILITY in detail["raw"]
    assert base64.b64decode(detail["raw_base64"]) == sent, "the journal keeps the bytes as received"


@pytest.mark.parametrize("label, codec, extra", CHARSETS, ids=[c[1] for c in CHARSETS])
def test_msh18_charset_is_decoded_and_the_ack_uses_it(bundled_engine, label, codec, extra):
    message = accented(f"CS-{codec}", charset=label, extra=extra)
    with Hl7Client(bundled_engine.mllp_port, encoding=codec) as client:
        reply = client.send_message(message)
    ack = parse_ack(reply, codec)
    assert (ack.code, ack.control_id) == ("AA", f"CS-{codec}")
    assert ack.msh[18] == label, "the ACK names its charset"
    assert ack.msh[6] == FACILITY, "MSH-4 comes back as MSH-6, in the message's charset"
    assert FACILITY.encode(codec) in reply
    check_journaled(bundled_engine, f"CS-{codec}", message.encode(codec), label, extra)


def test_channel_default_charset_reads_latin1_without_msh18(make_engine):
    engine = make_engine({"latin.yaml": "id: latin\nsource:\n  type: mllp\n  charset: 8859/1\n"})
    message = accented("CS-DEFAULT", extra="±")
    assert "|8859/1" not in message
    with Hl7Client(engine.mllp_port, encoding="latin-1") as client:
        reply = client.send_message(message)
    ack = parse_ack(reply, "latin-1")
    assert (ack.code, ack.control_id) == ("AA", "CS-DEFAULT")
    assert FACILITY.encode("latin-1") in reply and FACILITY.encode() not in reply
    check_journaled(engine, "CS-DEFAULT", message.encode("latin-1"), "8859/1", "±")


def test_undeclared_latin1_on_a_utf8_channel_is_refused_with_a_hint(bundled_engine):
    ack = send_hl7(bundled_engine.mllp_port, accented("CS-UNDECLARED", extra="±"), "latin-1")
    assert ack.code == "AR"
    assert "8859/1" in ack.errors[0].text
    assert bundled_engine.messages(status="rejected")["total"] == 1


def test_refusal_for_undeclared_latin1_in_msh_still_echoes_the_control_id(bundled_engine):
    ack = send_hl7(bundled_engine.mllp_port, accented("CS-UNDECLARED"), "latin-1")
    assert (ack.code, ack.control_id) == ("AR", "CS-UNDECLARED")


def test_unsupported_msh18_is_refused(bundled_engine):
    ack = send_hl7(bundled_engine.mllp_port, hl7_message("CS-JIS", charset="ISO IR87"))
    assert ack.code == "AR"
    assert (ack.errors[0].location, ack.errors[0].code) == ("MSH^1^18", "102^Data type error^HL70357")
    assert "ISO IR87" in ack.errors[0].text
