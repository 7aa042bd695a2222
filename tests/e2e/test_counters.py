"""Channel counters (/api/channels, /metrics) follow one definition whether they are updated
live or seeded from the journal at start: a restart, a reprocess or retention never makes them
disagree, and a restart or retention never makes them go down."""

from conftest import COUNTERS, free_port, hl7_message, send_messages

FILE = "  - id: {id}\n    type: file\n    directory: '{directory}'\n    file_name: \"{{control_id}}.hl7\"\n"
DEAD = (
    "  - id: {id}\n    type: mllp\n    address: '127.0.0.1:{port}'\n    connect_timeout: 1s\n"
    "    retry:\n      max_attempts: 1\n"
)


def channel(destinations: str, filters: str = "") -> str:
    return "id: out\nsource:\n  type: mllp\n" + (f"filters:\n{filters}" if filters else "") + f"destinations:\n{destinations}"


def counters(engine) -> dict:
    state = engine.channel("out")
    return {name: state[name] for name in COUNTERS}


def send(engine, *messages):
    acks = send_messages(engine.mllp_port, list(messages))
    assert [a.code for a in acks] == ["AA"] * len(messages), acks


def test_errored_counts_a_message_once_however_many_deliveries_die(make_engine):
    dead = DEAD.format(id="a", port=free_port()) + DEAD.format(id="b", port=free_port())
    engine = make_engine({"out.yaml": channel(dead)})
    send(engine, hl7_message("DEAD-1"))
    journaled = engine.wait_message("DEAD-1", status="errored")
    engine.wait_for(lambda: all(o["status"] == "dead" for o in engine.message(journaled["id"])["outbox"]),
                    what="both deliveries dead")
    live = engine.wait_for(lambda: (c := counters(engine))["queued"] == 0 and c, what="nothing queued")
    assert (live["received"], live["errored"], live["sent"]) == (1, 1, 0), live
    engine.restart()
    assert counters(engine) == live


def test_reprocess_does_not_count_a_message_twice(make_engine, tmp_path):
    engine = make_engine({"out.yaml": channel(FILE.format(id="archive", directory=tmp_path / "out"),
                                              filters="  - message_type: [ORU]\n")})
    send(engine, hl7_message("FILTERED-1"))
    journaled = engine.wait_message("FILTERED-1", status="filtered")
    assert counters(engine)["filtered"] == 1
    status, _, _ = engine.http("POST", f"/api/messages/{journaled['id']}/reprocess")
    assert status == 202
    engine.wait_for(lambda: engine.message(journaled["id"])["generation"] == 1
                    and engine.message(journaled["id"])["status"] == "filtered", what="second run filtered")
    live = counters(engine)
    assert (live["received"], live["filtered"]) == (1, 1), live
    engine.restart()
    assert counters(engine) == live


def test_requeued_dead_letters_count_the_message_once(make_engine):
    engine = make_engine({"out.yaml": channel(DEAD.format(id="a", port=free_port()))})
    send(engine, hl7_message("DEAD-2"))
    journaled = engine.wait_message("DEAD-2", status="errored")
    engine.wait_for(lambda: counters(engine)["errored"] == 1, what="errored counted")
    status, _, _ = engine.http("POST", f"/api/messages/{journaled['id']}/reprocess?only_failed=true")
    assert status == 202
    engine.wait_for(lambda: [o["attempts"] for o in engine.message(journaled["id"])["outbox"]] == [1]
                    and engine.message(journaled["id"])["status"] == "errored"
                    and any(s["step"] == "reprocess" for s in engine.message(journaled["id"])["trace"])
                    and sum(s["outcome"] == "dead" for s in engine.message(journaled["id"])["trace"]) == 2,
                    what="dead again")
    live = engine.wait_for(lambda: (c := counters(engine))["queued"] == 0 and c, what="nothing queued")
    assert live["errored"] == 1, live
    engine.restart()
    assert counters(engine) == live


def test_counters_survive_retention_and_restart(make_engine, tmp_path):
    config = '[retention]\nmax_messages = 1\ninterval = "1s"\n'
    engine = make_engine({"out.yaml": channel(FILE.format(id="archive", directory=tmp_path / "out"),
                                              filters="  - message_type: [ADT]\n")}, config=config)
    send(engine, hl7_message("KEEP-1"), hl7_message("KEEP-2"), hl7_message("DROP-1", "ORU^R01^ORU_R01"),
         hl7_message("KEEP-3"))
    engine.wait_message("KEEP-3", status="sent")
    engine.wait_for(lambda: engine.messages()["total"] == 1, timeout=30, what="retention pruned all but one")
    live = counters(engine)
    assert (live["received"], live["acked"], live["filtered"], live["sent"]) == (4, 4, 1, 3), live
    engine.restart()
    assert counters(engine) == live
    engine.wait_for(lambda: engine.messages()["total"] == 1, timeout=30, what="retention ran again")
    engine.restart()
    assert counters(engine) == live
