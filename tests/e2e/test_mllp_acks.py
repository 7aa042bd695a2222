"""MLLP acknowledgements as a sending system sees them: AA for what is journaled, AE/AR with
an ERR segment for what is refused (and the refusal journaled), batches rejected, enhanced
mode (MSH-15) and retransmissions."""

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from conftest import (
    BUNDLED_CHANNEL,
    ROOT,
    Engine,
    Hl7Client,
    MllpConnection,
    frame,
    hl7_message,
    parse_ack,
    send_hl7,
    send_messages,
)

MAX_SIZE = 4096


@pytest.fixture
def engine(workdir):
    """The bundled channel, with a small maximum message size for the oversize case."""
    e = Engine(workdir, ROOT / "channels", config=f"[mllp]\nmax_message_size = {MAX_SIZE}\n").start()
    yield e
    e.stop()


def test_valid_message_gets_an_aa_echoing_its_control_id(engine):
    with Hl7Client(engine.mllp_port) as client:
        reply = client.send_message(hl7_message("VALID-1"))
    ack = parse_ack(reply)
    assert (ack.code, ack.control_id, ack.errors) == ("AA", "VALID-1", [])
    # The ACK swaps sender and receiver and answers with the trigger event of the message.
    assert ack.msh[3:7] == ["PASSERELLE", "CHBM", "HIS", "CHBM"]
    assert ack.msh[9] == "ACK^A01^ACK"
    # An independent parser accepts it as a valid HL7 2.5 ACK.
    strict = parse_message(reply.decode(), validation_level=VALIDATION_LEVEL.STRICT)
    assert strict.validate()
    assert strict.msa.msa_2.value == "VALID-1"


MSH_TRUNCATED = b"MSH|^~\\&|HIS|CHBM|PASSERELLE|CHBM|20240101120000||ADT^A01^ADT_A01|TRUNC-1|P\rPID|1||123\r"
MSH_BAD_ENCODING = b"MSH|^~|HIS|CHBM|PASSERELLE|CHBM|20240101120000||ADT^A01^ADT_A01|ENC-1|P|2.5\rPID|1||123\r"
JUNK = bytes(range(0x80, 0x100)) + b"\x00\x01\x02\x03" * 8


# A batch file: FHS/BHS envelope around two messages, BTS/FTS trailers.
BATCH = (
    "FHS|^~\\&|HIS|CHBM|PASSERELLE|CHBM|20240101120000||||FILE-1\r"
    "BHS|^~\\&|HIS|CHBM|PASSERELLE|CHBM|20240101120000||||BATCH-1\r"
    + hl7_message("IN-BATCH-1")
    + hl7_message("IN-BATCH-2")
    + "BTS|2\rFTS|1\r"
).encode()

OVERSIZE = hl7_message("BIG-1", body=["PID|1||123", "NTE|1||" + "x" * 10240]).encode()

# id, payload, MSA-1, MSA-2 (None: not checked, the MSH itself is broken), ERR-2, ERR-3,
# words of ERR-8
REFUSALS = [
    ("no-msh", b"PID|1||123^^^CHBM^PI||DUPONT^JEAN\r", "AR", "", "MSH^1",
     "100^Segment sequence error^HL70357", ["no MSH segment"]),
    ("truncated-msh", MSH_TRUNCATED, "AR", None, "MSH^1^12",
     "101^Required field missing^HL70357", ["MSH-12", "required"]),
    ("binary-junk", JUNK, "AR", "", "MSH^1",
     "100^Segment sequence error^HL70357", ["no MSH segment"]),
    ("wrong-encoding-characters", MSH_BAD_ENCODING, "AR", None, "MSH^1^2",
     "102^Data type error^HL70357", ["MSH-2"]),
    ("bad-segment-id", hl7_message("SEG-1", body=["PID|1||123", "pv1|1|I"]).encode(), "AE", "SEG-1", "pv1^3",
     "100^Segment sequence error^HL70357", ["invalid segment id", "pv1"]),
    ("invalid-utf8", hl7_message("LAT-1", body=["PID|1||123||H\xc9L\xc8NE^Fran\xe7ois"]).encode("latin-1"),
     "AR", "LAT-1", "", "102^Data type error^HL70357", ["0xC9", "8859/1"]),
    ("batch", BATCH, "AR", "", "FHS^1", "200^Unsupported message type^HL70357",
     ["batches (FHS/BHS) are not accepted over MLLP"]),
    ("oversize", OVERSIZE, "AR", "BIG-1", "", "207^Application internal error^HL70357",
     [f"message of {len(OVERSIZE)} bytes", f"maximum of {MAX_SIZE} bytes"]),
]


@pytest.mark.parametrize(
    "payload, code, control_id, location, error_code, words",
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refused_message_gets_a_negative_ack_is_journaled_and_the_connection_goes_on(
    engine, payload, code, control_id, location, error_code, words
):
    with Hl7Client(engine.mllp_port) as client:
        ack = parse_ack(client.send_message(payload))
        assert ack.code == code
        if control_id is not None:
            assert ack.control_id == control_id
        assert len(ack.errors) == 1, ack
        err = ack.errors[0]
        assert (err.location, err.code, err.severity) == (location, error_code, "E")
        for word in words:
            assert word in err.text, err.text

        # The same connection still works.
        after = parse_ack(client.send_message(hl7_message("AFTER-1")))
        assert (after.code, after.control_id) == ("AA", "AFTER-1")

    rejected = engine.messages(status="rejected")
    assert rejected["total"] == 1
    journaled = rejected["items"][0]
    assert journaled["ack"] == code
    assert journaled["channel"] == BUNDLED_CHANNEL
    assert err.text in journaled["error"]
    assert f"({error_code.split('^')[0]} " in journaled["error"]
    if control_id:
        assert journaled["control_id"] == control_id
    counters = engine.channel(BUNDLED_CHANNEL)
    assert (counters["received"], counters["rejected"], counters["acked"]) == (2, 1, 1)


def test_bytes_outside_frames_are_ignored(engine):
    conn = MllpConnection(engine.mllp_port)
    try:
        conn.send_raw(b"GET / HTTP/1.0\r\n\r\n\x00\x01garbage\x1c\r")
        ack = parse_ack(conn.send(hl7_message("AFTER-JUNK").encode()))
        assert (ack.code, ack.control_id) == ("AA", "AFTER-JUNK")
        conn.send_raw(b"more junk" + frame(hl7_message("AFTER-JUNK-2").encode()) + b"trailing junk")
        ack = parse_ack(conn.read_frame())
        assert (ack.code, ack.control_id) == ("AA", "AFTER-JUNK-2")
    finally:
        conn.close()
    assert engine.messages()["total"] == 2, "junk outside frames is not a message"


def test_enhanced_mode_always_gets_a_commit_accept(engine):
    ack = send_hl7(engine.mllp_port, hl7_message("ENH-AL", accept_ack="AL", application_ack="NE"))
    assert (ack.code, ack.control_id) == ("CA", "ENH-AL")
    assert engine.wait_message("ENH-AL")["ack"] == "CA"


@pytest.mark.parametrize("accept_ack", ["NE", "ER"])
def test_enhanced_mode_without_accept_ack_on_success_sends_nothing(engine, accept_ack):
    conn = MllpConnection(engine.mllp_port)
    try:
        conn.send_raw(frame(hl7_message(f"ENH-{accept_ack}", accept_ack=accept_ack).encode()))
        journaled = engine.wait_message(f"ENH-{accept_ack}")
        assert journaled["status"] != "rejected"
        assert journaled["ack"] is None
        # Journaled: an ACK would have been written by now.
        assert conn.silent_for(0.3), "no accept acknowledgement was asked for"
        ack = parse_ack(conn.send(hl7_message("ENH-NEXT", accept_ack="AL").encode()))
        assert (ack.code, ack.control_id) == ("CA", "ENH-NEXT")
    finally:
        conn.close()


def test_enhanced_mode_error_condition_gets_a_commit_error(engine):
    message = hl7_message("ENH-ER-BAD", accept_ack="ER", body=["PID|1||123", "pv1|1|I"])
    ack = send_hl7(engine.mllp_port, message)
    assert (ack.code, ack.control_id) == ("CE", "ENH-ER-BAD")
    assert ack.errors[0].code.startswith("100^")
    # The journal records the code sent.
    assert engine.wait_message("ENH-ER-BAD", status="rejected")["ack"] == "CE"


def test_enhanced_mode_reject_gets_a_commit_reject_journaled_as_sent(engine):
    message = hl7_message("ENH-CR", accept_ack="AL", body=["PID|1||123||H\xc9L\xc8NE"])
    ack = send_hl7(engine.mllp_port, message.encode("latin-1"))
    assert (ack.code, ack.control_id) == ("CR", "ENH-CR")
    assert engine.wait_message("ENH-CR", status="rejected")["ack"] == "CR"


def test_retransmission_is_acknowledged_again_and_journaled_as_duplicate(engine):
    message = hl7_message("RETRY-1")
    first = send_hl7(engine.mllp_port, message)
    second = send_hl7(engine.mllp_port, message)  # a new connection, as after a timeout
    assert (first.code, first.control_id) == ("AA", "RETRY-1")
    assert (second.code, second.control_id) == ("AA", "RETRY-1")

    items = engine.messages()["items"]
    assert [m["control_id"] for m in items] == ["RETRY-1", "RETRY-1"]
    duplicate, original = items
    assert original["status"] != "duplicate" and original["duplicate_of"] is None
    assert duplicate["status"] == "duplicate"
    assert duplicate["duplicate_of"] == original["id"]
    receive = engine.message(duplicate["id"])["trace"][0]
    assert (receive["step"], receive["outcome"]) == ("receive", "duplicate")
    counters = engine.channel(BUNDLED_CHANNEL)
    assert (counters["duplicates"], counters["received"], counters["acked"]) == (1, 2, 2)


def test_same_control_id_with_other_content_is_not_a_duplicate(engine):
    acks = send_messages(engine.mllp_port, [hl7_message("REUSED-1", "ADT^A01^ADT_A01"),
                                            hl7_message("REUSED-1", "ADT^A08^ADT_A01")])
    assert [a.code for a in acks] == ["AA", "AA"]
    second, first = engine.messages()["items"]
    assert second["control_id"] == first["control_id"] == "REUSED-1"
    assert second["status"] != "duplicate" and second["duplicate_of"] is None
    assert engine.channel(BUNDLED_CHANNEL)["duplicates"] == 0
    note = engine.message(second["id"])["trace"][0]["detail"]
    assert f"already used by message {first['id']}" in note
