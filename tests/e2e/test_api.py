"""The HTTP side: bearer tokens on /api, public /health and /metrics, the channel list and the
message browser."""

import base64
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BUNDLED_CHANNEL, BUNDLED_UNCONFIGURED, COUNTERS, hl7_message, send_messages


def send_all(engine, messages: list[str]) -> list[str]:
    """Sends on one connection; returns the ACK codes."""
    return [ack.code for ack in send_messages(engine.mllp_port, messages)]


def token_id(token: str) -> str:
    """`psl_<id>_<secret>`."""
    return token.split("_", 2)[1]


@pytest.mark.parametrize("token", [None, "psl_000000000000_not-a-secret", "not-even-a-token"],
                         ids=["none", "unknown", "garbage"])
def test_api_refuses_requests_without_a_valid_token(bundled_engine, token):
    for method, path in [("GET", "/api/channels"), ("GET", "/api/messages"), ("POST", "/api/messages/1/reprocess")]:
        status, body, headers = bundled_engine.http(method, path, token=token)
        assert status == 401, (method, path, body)
        assert isinstance(body, dict) and body["error"]
        assert headers["WWW-Authenticate"] == "Bearer"


def test_health_and_metrics_need_no_token(bundled_engine):
    status, body, _ = bundled_engine.http("GET", "/health", token=None)
    assert status == 200
    assert (body["live"], body["ready"], body["status"]) == (True, True, "ok")
    assert body["channels"] == {BUNDLED_CHANNEL: "running", "fhir-inbound": "running", "cda-inbound": "running",
                                # No MQTT broker given (--mqtt): waiting for one.
                                "device-telemetry": "paused",
                                # No peer address given: waiting for one.
                                **{c: "paused" for c in BUNDLED_UNCONFIGURED}}
    status, text, headers = bundled_engine.http("GET", "/metrics", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert "passerelle_messages_received_total" in text


def metric_samples(engine) -> dict:
    """{(sample name, channel label or None): value} from /metrics, read by prometheus_client."""
    _, text, _ = engine.http("GET", "/metrics", token=None)
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, s.labels.get("channel"), s.labels.get("le"))
            samples[key] = s.value
    return samples


def test_metrics_count_messages_and_ack_latency(bundled_engine):
    codes = send_all(bundled_engine, [hl7_message(f"MET-{i}") for i in range(3)] + ["PID|1||no-msh\r"])
    assert codes == ["AA", "AA", "AA", "AR"]
    samples = metric_samples(bundled_engine)

    def value(name, le=None):
        return samples[(name, BUNDLED_CHANNEL, le)]

    assert value("passerelle_messages_received_total") == 4
    assert value("passerelle_messages_acked_total") == 3
    assert value("passerelle_messages_rejected_total") == 1
    assert value("passerelle_ack_latency_seconds_count") == 4
    assert value("passerelle_ack_latency_seconds_bucket", "+Inf") == 4
    assert value("passerelle_ack_latency_seconds_sum") > 0
    buckets = sorted(
        (float(le), v) for (name, channel, le), v in samples.items()
        if name == "passerelle_ack_latency_seconds_bucket" and le != "+Inf" and channel == BUNDLED_CHANNEL
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets), "cumulative buckets"
    assert ("passerelle_mllp_connections", None, None) in samples


def test_channels_list_ids_and_counters(bundled_engine):
    send_all(bundled_engine, [hl7_message("CH-1"), hl7_message("CH-2", "QRY^A19^QRY_A19")])
    bundled_engine.wait_message("CH-2", status="filtered")
    bundled_engine.wait_message("CH-1", status="sent")
    channels = bundled_engine.api("/api/channels")
    states = {c["id"]: (c["source"], c["state"]) for c in channels}
    assert [c["id"] for c in channels] == sorted(states), "listed by id"
    assert states == {
        "cda-inbound": ("http", "running"), "device-telemetry": ("mqtt", "paused"),
        "fhir-inbound": ("http", "running"), BUNDLED_CHANNEL: ("mllp", "running"),
        **{c: ("store", "paused") for c in BUNDLED_UNCONFIGURED}}
    by_id = {c["id"]: c for c in channels}
    assert "no MQTT broker" in by_id["device-telemetry"]["reason"]
    for c, variable in BUNDLED_UNCONFIGURED.items():
        assert variable in by_id[c]["reason"], by_id[c]
    channel = by_id[BUNDLED_CHANNEL]
    for counter in COUNTERS:
        assert isinstance(channel[counter], int), counter
    assert {k: channel[k] for k in ("received", "acked", "rejected", "filtered", "errored", "queued")} == {
        "received": 2, "acked": 2, "rejected": 0, "filtered": 1, "errored": 0, "queued": 0,
    }


@pytest.fixture
def journal(bundled_engine):
    """Five accepted messages and one rejected, all processed."""
    codes = send_all(bundled_engine, [hl7_message(f"LIST-{i}") for i in range(5)] + ["garbage\r"])
    assert codes == ["AA"] * 5 + ["AR"]
    bundled_engine.wait_for(lambda: bundled_engine.messages(status="sent")["total"] == 5, what="5 sent")
    return bundled_engine


def test_message_list_pages_newest_first_without_repeats(journal):
    everything = journal.messages()
    assert everything["total"] == 6 and everything["next_cursor"] is None
    ids = [m["id"] for m in everything["items"]]
    assert ids == sorted(ids, reverse=True)

    seen, cursor, pages = [], None, 0
    while True:
        page = journal.messages(limit=2, **({"cursor": cursor} if cursor else {}))
        pages += 1
        assert page["total"] == 6 + (pages > 1)
        assert len(page["items"]) <= 2
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        if pages == 1:  # a message arriving meanwhile does not shift the pages
            send_all(journal, [hl7_message("LIST-LATE")])
        assert pages < 10
    assert seen == ids, "every message once, newest first"


def test_message_list_gives_a_cursor_only_when_more_messages_follow(journal):
    full = journal.messages(limit=6)
    assert len(full["items"]) == 6 and full["next_cursor"] is None, "a full last page has no cursor"
    first = journal.messages(limit=3)
    assert len(first["items"]) == 3 and first["next_cursor"] is not None
    last = journal.messages(limit=3, cursor=first["next_cursor"])
    assert len(last["items"]) == 3 and last["next_cursor"] is None
    assert journal.messages(limit=5, status="sent")["next_cursor"] is None


def test_message_list_filters(journal):
    assert journal.messages(status="rejected")["total"] == 1
    assert journal.messages(status="sent")["total"] == 5
    assert {m["status"] for m in journal.messages(status="sent")["items"]} == {"sent"}
    assert journal.messages(channel=BUNDLED_CHANNEL)["total"] == 6
    assert journal.messages(channel="no-such-channel")["total"] == 0
    assert journal.messages(channel=BUNDLED_CHANNEL, status="rejected", limit=1)["total"] == 1
    now = int(time.time())
    assert journal.messages(since=now + 3600) == {"total": 0, "items": [], "next_cursor": None}
    assert journal.messages(since=now - 3600)["total"] == 6
    assert journal.messages(since="2099-01-01T00:00:00Z")["total"] == 0
    assert journal.messages(since="2000-01-01T00:00:00Z")["total"] == 6


@pytest.mark.parametrize("query", ["status=bogus", "since=yesterday", "cursor=abc"])
def test_message_list_rejects_bad_parameters(bundled_engine, query):
    status, body, _ = bundled_engine.http("GET", f"/api/messages?{query}")
    assert status == 400
    assert body["error"]
    if query.startswith("status"):
        assert "received" in body["error"] and "rejected" in body["error"], "lists the statuses"


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/messages?limit=abc"),
    ("GET", "/api/messages/abc"),
    ("POST", "/api/messages/1/reprocess?only_failed=yes"),
])
def test_every_api_error_is_json(bundled_engine, method, path):
    status, body, headers = bundled_engine.http(method, path)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json"), headers["Content-Type"]
    assert body["error"]


def test_message_detail_has_raw_parsed_trace_and_outbox(bundled_engine):
    message = hl7_message("DETAIL-1")
    send_all(bundled_engine, [message])
    summary = bundled_engine.wait_message("DETAIL-1", status="sent")
    detail = bundled_engine.message(summary["id"])
    assert detail["id"] == summary["id"]
    assert (detail["channel"], detail["message_type"], detail["sender"]) == (BUNDLED_CHANNEL, "ADT^A01", "HIS^CHBM")
    assert detail["raw"] == message.replace("\r", "\n")
    assert base64.b64decode(detail["raw_base64"]) == message.encode()
    assert detail["size"] == len(message)
    segments = detail["parsed"]["segments"]
    assert [s["id"] for s in segments] == ["MSH", "PID", "PV1"]
    msh10 = next(f for f in segments[0]["fields"] if f["number"] == 10)
    assert msh10["value"] == "DETAIL-1"
    steps = detail["trace"]
    # The bundled channel maps ADT to FHIR and writes it to the store (its `store`
    # destination); the trace says which resources the store wrote.
    assert [s["step"] for s in steps] == ["receive", "parse", "filter", "transform", "destination:store"]
    assert [s["outcome"] for s in steps] == ["ok", "ok", "ok", "ok", "sent"], steps
    for step in steps:
        assert isinstance(step["duration_us"], int) and step["duration_us"] >= 0
        assert step["at"].endswith("Z")
    assert "mapping -> [store]" in steps[3]["detail"], steps[3]
    assert "Patient/" in steps[4]["detail"], steps[4]
    assert [(o["destination"], o["status"], o["attempts"]) for o in detail["outbox"]] == [("store", "sent", 1)]


def test_unknown_message_is_404(bundled_engine):
    status, body, _ = bundled_engine.http("GET", "/api/messages/999999")
    assert status == 404 and "999999" in body["error"]
    status, body, _ = bundled_engine.http("POST", "/api/messages/999999/reprocess")
    assert status == 404


def issue(engine, name: str) -> str:
    return engine.cli("token", "issue", "--data-dir", str(engine.data_dir), "--name", name).stdout.strip()


def revoke(engine, token: str, check: bool = True):
    return engine.cli("token", "revoke", "--data-dir", str(engine.data_dir), token_id(token), check=check)


def test_revoked_token_that_was_never_used_fails_at_once(bundled_engine):
    token = issue(bundled_engine, "console")
    revoke(bundled_engine, token)
    assert bundled_engine.http("GET", "/api/channels", token=token)[0] == 401


def test_revoked_token_fails_once_the_cache_is_gone(bundled_engine):
    token = issue(bundled_engine, "console")
    assert bundled_engine.http("GET", "/api/channels", token=token)[0] == 200
    out = revoke(bundled_engine, token)
    assert f"token {token_id(token)} revoked" in out.stderr
    # Verified tokens are cached up to 30 s; a fresh process on the same data dir has no cache.
    bundled_engine.restart()
    assert bundled_engine.http("GET", "/api/channels", token=token)[0] == 401
    assert bundled_engine.http("GET", "/api/channels")[0] == 200, "other tokens still work"
    again = revoke(bundled_engine, token, check=False)
    assert again.returncode != 0 and "no active token" in again.stderr
