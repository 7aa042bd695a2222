"""kill -9 in the middle of a stream, then a restart on the same data dir.

What must hold (the journal's contract):
- every message that got an AA is in the journal and reaches every destination;
- an idempotent destination (file: one file per control id, written atomically) holds each
  message exactly once;
- a non-idempotent destination (an MLLP peer) gets each message at least once; a message it
  gets twice was in flight when the engine died, and is counted in `redeliveries`
  (at-least-once, see docs/operations.md);
- a sender that retransmits a message whose ACK it never got does not make it applied twice.
"""

import threading
import time

from conftest import Hl7Client, hl7_message, parse_ack, send_hl7

SENDERS = 4
ACKED_BEFORE_KILL = 400


def crash_channel(out, peer_address: str) -> str:
    return f"""\
id: crash
source:
  type: mllp
destinations:
  - id: archive
    type: file
    directory: '{out}'
    file_name: "{{control_id}}.hl7"
  - id: lab
    type: mllp
    address: '{peer_address}'
    ack_timeout: 5s
    connect_timeout: 1s
    retry:
      initial_backoff: 100ms
      max_backoff: 500ms
"""


def stream(port: int, sender: int, acked: list, unacked: list, lock: threading.Lock):
    """One sending system: sends, waits for the ACK, sends the next; stops when the engine dies."""
    try:
        client = Hl7Client(port, timeout=5)
    except OSError:
        return
    with client:
        i = 0
        while True:
            control_id = f"CRASH{sender}-{i}"
            try:
                ack = parse_ack(client.send_message(hl7_message(control_id)))
            except (OSError, ConnectionError):
                with lock:
                    unacked.append(control_id)
                return
            assert ack.code == "AA" and ack.control_id == control_id, ack
            with lock:
                acked.append(control_id)
            i += 1


def all_messages(engine, **query) -> list:
    items, cursor = [], ""
    while True:
        page = engine.messages(limit=1000, cursor=cursor, **query)
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor or not page["items"]:
            return items


def test_kill_9_mid_stream_loses_no_acked_message_and_applies_none_twice(make_engine, tmp_path, peer):
    out = tmp_path / "out"
    # A peer slower than the engine, so that deliveries are in flight when the engine dies.
    peer.delay = 0.002
    peer.start()
    engine = make_engine({"crash.yaml": crash_channel(out, peer.address)})

    acked, unacked, lock = [], [], threading.Lock()
    senders = [
        threading.Thread(target=stream, args=(engine.mllp_port, n, acked, unacked, lock), daemon=True)
        for n in range(SENDERS)
    ]
    for t in senders:
        t.start()
    engine.wait_for(lambda: len(acked) >= ACKED_BEFORE_KILL, timeout=60, what="ACKs before the kill")
    engine.kill()
    for t in senders:
        t.join(timeout=10)
    acked_before_kill = set(acked)
    assert len(acked_before_kill) >= ACKED_BEFORE_KILL

    engine.start()
    # Each sender sends again the message whose ACK it did not get, as MLLP senders do.
    for control_id in unacked:
        assert send_hl7(engine.mllp_port, hl7_message(control_id)).code == "AA"
    expected = acked_before_kill | set(unacked)

    def settled():
        items = all_messages(engine, channel="crash")
        return items if all(m["status"] in ("sent", "duplicate") for m in items) else None

    items = engine.wait_for(settled, timeout=120, what="every message delivered")

    # 1. Every ACKed message is in the journal, once as an accepted message.
    accepted = [m["control_id"] for m in items if m["status"] == "sent"]
    assert len(accepted) == len(set(accepted)), "a message was accepted twice"
    assert expected <= set(accepted), f"lost: {sorted(expected - set(accepted))[:10]}"
    # A retransmission of a message journaled before the kill is recognised, not re-applied.
    for m in items:
        if m["status"] == "duplicate":
            assert m["control_id"] in unacked

    # 2. The idempotent destination holds each message exactly once, byte for byte.
    files = {p.stem: p for p in out.iterdir()}
    assert set(files) == set(accepted)
    for control_id in expected:
        assert files[control_id].read_bytes() == hl7_message(control_id).encode()

    # 3. The MLLP peer got everything at least once; what it got twice is accounted for.
    engine.wait_for(lambda: expected <= set(peer.control_ids()), timeout=60, what="peer deliveries")
    received = peer.control_ids()
    duplicates = len(received) - len(set(received))
    redelivered = engine.channel("crash")["redelivered"]
    print(
        f"\ncrash test: {len(acked_before_kill)} ACKed before kill -9, {len(unacked)} retransmitted; "
        f"journal and file destination: {len(files)} messages, none twice; "
        f"MLLP peer: {duplicates} duplicate(s), engine counted {redelivered} redelivery(ies)"
    )
    assert duplicates <= redelivered
    # Nothing stays in flight or pending.
    assert engine.channel("crash")["queued"] == 0
