"""Stopping: SIGTERM finishes what was read, answers it, and leaves a journal the next start
picks up where this one stopped."""

import signal
import time

import pytest

from conftest import BUNDLED_CHANNEL, COUNTERS, MllpConnection, ack_fields, frame, hl7_message, send_messages


def test_sigterm_while_idle_stops_cleanly_and_quickly(bundled_engine):
    started = time.monotonic()
    assert bundled_engine.stop() == 0
    assert time.monotonic() - started < 5
    log = bundled_engine.log.read_text()
    assert "stopping" in log
    assert "stopped" in log.strip().splitlines()[-1], "the last word of the log"


def pipelined_then_sigterm(engine, count: int) -> list[str]:
    """Sends `count` messages in one write, SIGTERMs the engine at once, and returns the
    control ids of the ACKs read until the engine closes the connection."""
    conn = MllpConnection(engine.mllp_port, timeout=30)
    control_ids = []
    try:
        # One round trip first: the engine has taken the connection before the signal.
        assert ack_fields(conn.send(hl7_message("STOP-FIRST").encode()))["code"] == "AA"
        conn.send_raw(b"".join(frame(hl7_message(f"STOP-{i}").encode()) for i in range(count)))
        engine.proc.send_signal(signal.SIGTERM)
        while True:
            try:
                ack = ack_fields(conn.read_frame())
            except ConnectionError:
                break
            assert ack["code"] == "AA", ack
            control_ids.append(ack["control_id"])
    finally:
        conn.close()
    assert engine.proc.wait(timeout=30) == 0
    return control_ids


def test_sigterm_after_sending_answers_every_message_before_closing(bundled_engine):
    acked = pipelined_then_sigterm(bundled_engine, 10)
    assert acked == [f"STOP-{i}" for i in range(10)]
    bundled_engine.start()
    assert bundled_engine.messages()["total"] == 11, "every ACKed message is in the journal"


def test_sigterm_answers_every_message_sent_even_beyond_the_pipeline_window(bundled_engine):
    acked = pipelined_then_sigterm(bundled_engine, 200)
    assert len(acked) == 200


def test_restart_keeps_the_journal_and_the_counters(bundled_engine):
    send_messages(bundled_engine.mllp_port, [hl7_message("KEEP-1"), hl7_message("KEEP-2"), hl7_message("KEEP-2"),
                                             hl7_message("KEEP-3", "QRY^A19^QRY_A19"), "garbage\r"])
    bundled_engine.wait_message("KEEP-3", status="filtered")
    # The bundled channel writes to the FHIR store after the ACK: let it finish, so that the
    # snapshot is not taken while a message is still `queued`.
    bundled_engine.wait_for(lambda: bundled_engine.channel(BUNDLED_CHANNEL)["queued"] == 0, 20,
                            "every delivery to the store made")
    before = bundled_engine.messages()
    counters = {k: bundled_engine.channel(BUNDLED_CHANNEL)[k] for k in COUNTERS}
    assert (counters["received"], counters["duplicates"], counters["rejected"], counters["filtered"]) == (5, 1, 1, 1)

    bundled_engine.restart()
    after = bundled_engine.messages()
    assert after == before
    assert {k: bundled_engine.channel(BUNDLED_CHANNEL)[k] for k in COUNTERS} == counters
    send_messages(bundled_engine.mllp_port, [hl7_message("KEEP-4")])
    assert bundled_engine.channel(BUNDLED_CHANNEL)["received"] == counters["received"] + 1
