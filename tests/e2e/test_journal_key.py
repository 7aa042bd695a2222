"""`serve` refuses to start on a journal with an encryption key that is not the journal's."""

import base64
import os

from conftest import ROOT, Engine, hl7_message, send_hl7


def other_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def start_fails(engine: Engine) -> str:
    engine.start(wait=False)
    assert engine.proc.wait(timeout=30) != 0
    return engine.log.read_text()


def test_wrong_key_stops_the_start_and_earlier_messages_stay_readable(workdir):
    env = {k: v for k, v in os.environ.items() if k != "PASSERELLE_KEY"}
    first = Engine(workdir, ROOT / "channels", env=env).start()
    try:
        assert send_hl7(first.mllp_port, hl7_message("KEY-1")).code == "AA"
        first.wait_message("KEY-1")
    finally:
        first.stop()

    # The environment's key wins over data/journal.key: not this journal's.
    key = other_key()
    wrong = Engine(workdir, ROOT / "channels", env=dict(env, PASSERELLE_KEY=key))
    log = start_fails(wrong)
    assert "the encryption key does not match this journal" in log, log
    assert "PASSERELLE_KEY" in log, log
    assert key not in log, "the key is never logged"

    # A replaced key file is refused too, and named.
    key_file = workdir / "data" / "journal.key"
    original = key_file.read_text()
    key_file.unlink()
    key_file.write_text(other_key())
    wrong = Engine(workdir, ROOT / "channels", env=env)
    wrong.log = workdir / "serve-2.log"
    log = start_fails(wrong)
    assert "the encryption key does not match this journal" in log, log
    assert "journal.key" in log, log

    # With its own key the journal opens and the earlier message still reads.
    key_file.unlink()
    key_file.write_text(original)
    again = Engine(workdir, ROOT / "channels", env=env).start()
    try:
        message = again.find_message("KEY-1")
        detail = again.message(message["id"])
        assert "KEY-1" in str(detail), detail
    finally:
        again.stop()
