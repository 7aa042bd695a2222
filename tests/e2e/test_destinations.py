"""Channels that deliver: file and MLLP destinations, filters, routing, retries, the dead
letter and reprocessing, and channels paused for want of a variable."""

import pytest

from conftest import hl7_message, send_messages

FAST_RETRY = """\
    retry:
      initial_backoff: 200ms
      max_backoff: 1s
      max_attempts: {attempts}
"""


def channel(destinations: str, *, filters: str = "", transform: str = "", channel_id: str = "out") -> str:
    return (
        f"id: {channel_id}\nsource:\n  type: mllp\n"
        + (f"filters:\n{filters}" if filters else "")
        + (f"transform:\n{transform}" if transform else "")
        + f"destinations:\n{destinations}"
    )


def file_destination(destination_id: str, directory) -> str:
    return (
        f"  - id: {destination_id}\n    type: file\n    directory: '{directory}'\n"
        '    file_name: "{control_id}.hl7"\n'
    )


def mllp_destination(address: str, attempts: int = 0, ack_timeout: str = "2s") -> str:
    return (
        f"  - id: lab\n    type: mllp\n    address: '{address}'\n"
        f"    ack_timeout: {ack_timeout}\n    connect_timeout: 1s\n" + FAST_RETRY.format(attempts=attempts)
    )


def send(engine, *messages: str):
    acks = send_messages(engine.mllp_port, list(messages))
    assert [a.code for a in acks] == ["AA"] * len(messages), acks


def step(detail: dict, name: str) -> dict:
    return next(s for s in detail["trace"] if s["step"] == name)


# --- file destination, filters, routing ------------------------------------------------------


def test_file_destination_writes_exactly_the_bytes_sent(make_engine, tmp_path):
    out = tmp_path / "out"
    engine = make_engine({"out.yaml": channel(file_destination("archive", out))})
    messages = {f"FILE-{i}": hl7_message(f"FILE-{i}", kind) for i, kind in enumerate(["ADT^A01^ADT_A01", "ORU^R01^ORU_R01", "ADT^A08^ADT_A01"])}
    send(engine, *messages.values())
    for control_id, text in messages.items():
        journaled = engine.wait_message(control_id, status="sent")
        assert (out / f"{control_id}.hl7").read_bytes() == text.encode()
        detail = engine.message(journaled["id"])
        assert [(o["destination"], o["status"], o["attempts"]) for o in detail["outbox"]] == [("archive", "sent", 1)]
        assert step(detail, "destination:archive")["outcome"] == "sent"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{c}.hl7" for c in messages)
    counters = engine.channel("out")
    assert (counters["sent"], counters["queued"], counters["filtered"]) == (3, 0, 0)


def test_control_ids_cannot_escape_the_directory(make_engine, tmp_path):
    out = tmp_path / "out"
    engine = make_engine({"out.yaml": channel(file_destination("archive", out))})
    send(engine, hl7_message("../../escape/x"))
    engine.wait_message("../../escape/x", status="sent")
    assert [p.name for p in out.iterdir()] == ["______escape_x.hl7"]
    assert not (tmp_path / "escape").exists()


FILTERS = """\
  - message_type: [ADT]
  - field: PID-8
    in: [F, M]
  - field: MSH-4
    equals: CHBM
"""


def test_filters_keep_matching_messages_and_mark_the_others_filtered(make_engine, tmp_path):
    out = tmp_path / "out"
    engine = make_engine({"out.yaml": channel(file_destination("archive", out), filters=FILTERS)})
    unknown_sex = "PID|1||123456^^^CHBM^PI||DUPONT^JEAN||19700101|U"
    send(
        engine,
        hl7_message("KEEP-1"),
        hl7_message("DROP-TYPE", "ORU^R01^ORU_R01"),
        hl7_message("DROP-SEX", body=[unknown_sex]),
        hl7_message("DROP-FACILITY", facility="OTHER"),
    )
    engine.wait_message("KEEP-1", status="sent")
    for control_id, reason in [("DROP-TYPE", "message type"), ("DROP-SEX", "PID-8"), ("DROP-FACILITY", "MSH-4")]:
        journaled = engine.wait_message(control_id, status="filtered")
        detail = engine.message(journaled["id"])
        assert [s["step"] for s in detail["trace"]] == ["receive", "parse", "filter"]
        filtered = step(detail, "filter")
        assert filtered["outcome"] == "filtered"
        assert "condition not met" in filtered["detail"] and reason in filtered["detail"], filtered
        assert detail["outbox"] == []
    assert [p.name for p in out.iterdir()] == ["KEEP-1.hl7"]
    assert engine.channel("out")["filtered"] == 3


def test_a_filter_item_of_two_kinds_needs_both(make_engine, tmp_path):
    out = tmp_path / "out"
    filters = "  - message_type: [ADT]\n    field: PID-8\n    in: [F, M]\n"
    engine = make_engine({"out.yaml": channel(file_destination("archive", out), filters=filters)})
    unknown_sex = "PID|1||123456^^^CHBM^PI||DUPONT^JEAN||19700101|U"
    send(
        engine,
        hl7_message("BOTH-1"),
        hl7_message("TYPE-ONLY", body=[unknown_sex]),
        hl7_message("FIELD-ONLY", "ORU^R01^ORU_R01"),
    )
    engine.wait_message("BOTH-1", status="sent")
    for control_id, reason in [("TYPE-ONLY", "PID-8"), ("FIELD-ONLY", "message type")]:
        detail = engine.message(engine.wait_message(control_id, status="filtered")["id"])
        assert reason in step(detail, "filter")["detail"]
    assert [p.name for p in out.iterdir()] == ["BOTH-1.hl7"]


def test_a_nested_filter_item_of_two_kinds_needs_both(make_engine, tmp_path):
    out = tmp_path / "out"
    filters = (
        "  - any:\n"
        "      - message_type: [ORU]\n        field: MSH-4\n        equals: CHBM\n"
        "      - field: MSH-3\n        equals: RAD\n"
    )
    engine = make_engine({"out.yaml": channel(file_destination("archive", out), filters=filters)})
    send(
        engine,
        hl7_message("ORU-CHBM", "ORU^R01^ORU_R01"),
        hl7_message("ADT-CHBM"),
        hl7_message("ORU-OTHER", "ORU^R01^ORU_R01", facility="OTHER"),
    )
    engine.wait_message("ORU-CHBM", status="sent")
    engine.wait_message("ADT-CHBM", status="filtered")
    engine.wait_message("ORU-OTHER", status="filtered")
    assert [p.name for p in out.iterdir()] == ["ORU-CHBM.hl7"]


ROUTES = """\
  type: route-by-message-type
  routes:
    - message_type: ADT
      destinations: [adt]
    - message_type: ORU^R01
      destinations: [lab]
"""


def test_route_by_message_type(make_engine, tmp_path):
    destinations = file_destination("adt", tmp_path / "adt") + file_destination("lab", tmp_path / "lab")
    engine = make_engine({"out.yaml": channel(destinations, transform=ROUTES)})
    send(engine, hl7_message("ROUTE-ADT"), hl7_message("ROUTE-ORU", "ORU^R01^ORU_R01"),
         hl7_message("ROUTE-SIU", "SIU^S12^SIU_S12"))
    engine.wait_message("ROUTE-ADT", status="sent")
    engine.wait_message("ROUTE-ORU", status="sent")
    assert [p.name for p in (tmp_path / "adt").iterdir()] == ["ROUTE-ADT.hl7"]
    assert [p.name for p in (tmp_path / "lab").iterdir()] == ["ROUTE-ORU.hl7"]
    unrouted = engine.message(engine.wait_message("ROUTE-SIU", status="filtered")["id"])
    transform = step(unrouted, "transform")
    assert transform["outcome"] == "filtered"
    assert "no route for message type SIU^S12" in transform["detail"]
    assert unrouted["outbox"] == []


# --- MLLP destination ------------------------------------------------------------------------


def test_mllp_destination_delivers_and_records_the_peer_ack(make_engine, peer):
    peer.start()
    engine = make_engine({"out.yaml": channel(mllp_destination(peer.address))})
    messages = [hl7_message(f"FWD-{i}") for i in range(3)]
    send(engine, *messages)
    for i in range(3):
        detail = engine.message(engine.wait_message(f"FWD-{i}", status="sent")["id"])
        assert [(o["status"], o["attempts"]) for o in detail["outbox"]] == [("sent", 1)]
        assert step(detail, "destination:lab")["detail"].startswith("AA")
    assert peer.received == [m.encode() for m in messages]


def test_messages_wait_in_the_outbox_until_the_peer_is_up(make_engine, peer):
    engine = make_engine({"out.yaml": channel(mllp_destination(peer.address))})  # peer's port closed
    control_ids = [f"QUEUED-{i}" for i in range(4)]
    send(engine, *(hl7_message(c) for c in control_ids))
    for c in control_ids:
        engine.wait_message(c, status="queued")
    assert engine.channel("out")["queued"] == len(control_ids)
    first_id = engine.find_message(control_ids[0])["id"]
    head = engine.wait_for(lambda: [o for o in engine.message(first_id)["outbox"] if o["attempts"] >= 2],
                           what="failed attempts")[0]
    assert peer.address in head["last_error"]

    peer.start()
    for c in control_ids:
        engine.wait_message(c, status="sent")
    assert peer.control_ids() == control_ids, "each message once, in order"
    counters = engine.channel("out")
    assert (counters["queued"], counters["sent"], counters["errored"]) == (0, len(control_ids), 0)


def test_refused_delivery_is_dead_lettered_then_reprocessed(make_engine, peer):
    peer.reply, peer.text = "AR", "unknown patient 123456"
    peer.start()
    engine = make_engine({"out.yaml": channel(mllp_destination(peer.address, attempts=5))})
    send(engine, hl7_message("DEAD-1"))
    journaled = engine.wait_message("DEAD-1", status="errored")
    assert "unknown patient 123456" in journaled["error"]
    detail = engine.message(journaled["id"])
    assert [(o["status"], o["attempts"]) for o in detail["outbox"]] == [("dead", 1)], "AR: no retry"
    assert "unknown patient 123456" in detail["outbox"][0]["last_error"]
    assert step(detail, "destination:lab")["outcome"] == "dead"
    assert engine.channel("out")["errored"] == 1 and len(peer.received) == 1

    # The peer is fixed: only the dead-lettered delivery is made again.
    peer.reply = "AA"
    status, body, _ = engine.http("POST", f"/api/messages/{journaled['id']}/reprocess?only_failed=true")
    assert status == 202 and (body["action"], body["deliveries"]) == ("requeued", 1)
    engine.wait_message("DEAD-1", status="sent")
    detail = engine.message(journaled["id"])
    assert [(o["generation"], o["status"]) for o in detail["outbox"]] == [(0, "sent")]
    assert detail["error"] is None
    assert len(peer.received) == 2

    # A full reprocess runs the channel again as a new generation and delivers again.
    status, body, _ = engine.http("POST", f"/api/messages/{journaled['id']}/reprocess")
    assert status == 202 and (body["action"], body["generation"]) == ("rerun", 1)
    def rerun_sent():
        d = engine.message(journaled["id"])
        return d if (d["generation"], d["status"]) == (1, "sent") else None

    detail = engine.wait_for(rerun_sent, what="generation 1 delivered")
    assert [(o["generation"], o["status"]) for o in detail["outbox"]] == [(0, "sent"), (1, "sent")]
    steps = [s["step"] for s in detail["trace"]]
    assert "reprocess" in steps
    rerun = steps[len(steps) - 1 - steps[::-1].index("reprocess"):]
    assert rerun == ["reprocess", "parse", "filter", "transform", "destination:lab"]
    assert peer.control_ids() == ["DEAD-1"] * 3
    assert engine.channel("out")["queued"] == 0


def test_peer_error_is_retried_until_max_attempts(make_engine, peer):
    peer.reply, peer.text = "AE", "database busy"
    peer.start()
    engine = make_engine({"out.yaml": channel(mllp_destination(peer.address, attempts=3))})
    send(engine, hl7_message("AE-1"))
    journaled = engine.wait_message("AE-1", status="errored", timeout=30)
    detail = engine.message(journaled["id"])
    assert [(o["status"], o["attempts"]) for o in detail["outbox"]] == [("dead", 3)]
    assert "database busy" in journaled["error"]
    outcomes = [s["outcome"] for s in detail["trace"] if s["step"] == "destination:lab"]
    assert outcomes == ["retry", "retry", "dead"]
    assert peer.control_ids() == ["AE-1"] * 3


def test_peer_that_does_not_answer_gets_the_message_again(make_engine, peer):
    peer.reply = None
    peer.start()
    engine = make_engine({"out.yaml": channel(mllp_destination(peer.address, ack_timeout="500ms"))})
    send(engine, hl7_message("SILENT-1"))
    engine.wait_for(lambda: peer.received, what="first delivery attempt")
    peer.reply = "AA"
    detail = engine.message(engine.wait_message("SILENT-1", status="sent")["id"])
    assert [(o["status"], o["attempts"]) for o in detail["outbox"]] == [("sent", 2)]
    assert peer.control_ids() == ["SILENT-1"] * 2, "at-least-once: the unacknowledged copy is sent again"


def test_peer_that_closes_after_each_ack_gets_each_message_in_one_attempt(make_engine, peer):
    peer.close_after_reply = True
    peer.start()
    engine = make_engine({"out.yaml": channel(mllp_destination(peer.address, attempts=1))})
    send(engine, *(hl7_message(f"CLOSE-{i}") for i in range(3)))
    engine.wait_for(lambda: all(m["status"] in ("sent", "errored") for m in engine.messages()["items"])
                    and engine.messages()["total"] == 3, what="3 deliveries settled")
    assert [m["status"] for m in engine.messages()["items"]] == ["sent"] * 3
    assert peer.control_ids() == [f"CLOSE-{i}" for i in range(3)]


# --- channels paused for want of a variable --------------------------------------------------

VARIABLE = "PASSERELLE_E2E_PEER_ADDRESS"


def test_unset_variable_pauses_the_channel_until_it_is_set(make_engine, peer, monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    engine = make_engine({"out.yaml": channel(mllp_destination("${" + VARIABLE + "}"))})
    state = engine.channel("out")
    assert state["state"] == "paused"
    assert VARIABLE in state["reason"]
    status, health, _ = engine.http("GET", "/health", token=None)
    assert status == 200 and health["channels"] == {"out": "paused"}

    peer.start()
    engine.stop()
    engine.env[VARIABLE] = peer.address
    engine.start()
    state = engine.channel("out")
    assert state["state"] == "running" and "reason" not in state
    send(engine, hl7_message("UNPAUSED-1"))
    engine.wait_message("UNPAUSED-1", status="sent")
    assert peer.control_ids() == ["UNPAUSED-1"]


def test_unset_source_address_pauses_the_channel_beside_one_on_the_main_address(make_engine, tmp_path, monkeypatch):
    monkeypatch.delenv("PASSERELLE_E2E_SOURCE_ADDRESS", raising=False)
    main = channel(file_destination("archive", tmp_path / "main"), channel_id="main")
    other = channel(file_destination("archive", tmp_path / "other"), channel_id="other").replace(
        "  type: mllp\n", "  type: mllp\n  address: ${PASSERELLE_E2E_SOURCE_ADDRESS}\n", 1)
    engine = make_engine({"main.yaml": main, "other.yaml": other})
    assert engine.channel("main")["state"] == "running"
    state = engine.channel("other")
    assert state["state"] == "paused"
    assert "PASSERELLE_E2E_SOURCE_ADDRESS" in state["reason"]
    send(engine, hl7_message("MAIN-1"))
    engine.wait_message("MAIN-1", status="sent")
    assert (tmp_path / "main" / "MAIN-1.hl7").exists()


def test_file_name_template_replaces_the_message_type(make_engine, tmp_path):
    out = tmp_path / "out"
    destination = file_destination("archive", out).replace("{control_id}.hl7", "{message_type}-{control_id}.hl7")
    engine = make_engine({"out.yaml": channel(destination)})
    send(engine, hl7_message("TYPED-1"))
    engine.wait_message("TYPED-1", status="sent")
    [written] = [p.name for p in out.iterdir()]
    assert "{message_type}" not in written
    assert "ADT" in written and "A01" in written and written.endswith("-TYPED-1.hl7")
