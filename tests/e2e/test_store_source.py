"""Outbound channels: a `store` source follows the FHIR store's change feed. Each matching
change is journaled as a `collection` Bundle (the changed resource first, the resources it
references after it, the kind of change as a tag) and delivered, here by a `file`
destination; the Bundles are validated with the `fhir.resources` R4B models. After kill -9,
every change is journaled exactly once."""

import json
import uuid

from conftest import Engine
from test_fhir import Fhir, issue_token, validate

CHANGE = "https://passerelle.dev/fhir/CodeSystem/change"
SUBSCRIPTION = "MedicationRequest?intent=order"


def channel(out, subscription: str = SUBSCRIPTION, extra: str = "  include: [subject]\n") -> str:
    return (
        "id: orders-out\n"
        f"source:\n  type: store\n  subscription: \"{subscription}\"\n{extra}"
        "transform:\n  type: pass-through\n"
        "destinations:\n"
        f"  - id: archive\n    type: file\n    directory: '{out}'\n"
        '    file_name: "{id}.json"\n'
    )


def start(make_engine, out, **kw) -> tuple[Engine, Fhir]:
    engine = make_engine({"orders.yaml": channel(out, **kw)})
    return engine, Fhir(engine, issue_token(engine, "system/*.*"))


def new_patient(fhir: Fhir) -> dict:
    return fhir.ok("POST", "/Patient", {"resourceType": "Patient", "name": [{"family": "GARNIER"}]})


def new_order(fhir: Fhir, patient: dict, intent: str = "order") -> dict:
    return fhir.ok("POST", "/MedicationRequest", {
        "resourceType": "MedicationRequest",
        "identifier": [{"system": "urn:oid:1.2.250.1.999.4.1", "value": uuid.uuid4().hex}],
        "status": "active",
        "intent": intent,
        "medicationCodeableConcept": {"text": "DOLIPRANE 1000MG CPR"},
        "subject": {"reference": f"Patient/{patient['id']}"},
    })


def written(out) -> list[dict]:
    """The Bundles the file destination wrote, in journal order."""
    if not out.exists():
        return []
    files = sorted(out.glob("*.json"), key=lambda p: int(p.stem))
    return [json.loads(p.read_text()) for p in files]


def tags(bundle: dict) -> list[str]:
    return [t["code"] for t in bundle["meta"]["tag"] if t["system"] == CHANGE]


def change_of(bundle: dict) -> tuple[str, str]:
    focus = bundle["entry"][0]["resource"]
    return focus["id"], focus["meta"]["versionId"]


def journaled(engine: Engine, **query) -> list[dict]:
    """The channel's messages, oldest first."""
    items = engine.messages(channel="orders-out", limit=1000, **query)["items"]
    return sorted(items, key=lambda m: m["id"])


def settled(engine: Engine, count: int) -> list[dict]:
    """Waits until `count` messages of the channel are journaled and done with."""

    def done():
        m = journaled(engine)
        return len(m) >= count and all(x["status"] in ("sent", "filtered") for x in m) and m

    return engine.wait_for(done, what=f"{count} messages sent or filtered")


def wait_written(engine: Engine, out, count: int, timeout: float = 20.0) -> list[dict]:
    return engine.wait_for(lambda: len(b := written(out)) >= count and b, timeout, f"{count} Bundles written")


def test_order_changes_become_collection_bundles_with_their_patient(make_engine, tmp_path):
    out = tmp_path / "out"
    engine, fhir = start(make_engine, out)
    patient = new_patient(fhir)
    order = new_order(fhir, patient)
    plan = new_order(fhir, patient, intent="plan")
    updated = fhir.ok("PUT", f"/MedicationRequest/{order['id']}", {**order, "status": "on-hold"})
    assert updated["meta"]["versionId"] == "2"

    # The plan comes between the two order changes in the feed: once the update is written,
    # the plan has been passed over.
    bundles = wait_written(engine, out, 2)
    assert len(bundles) == 2, [change_of(b) for b in bundles]
    for bundle, kind, version in zip(bundles, ["create", "update"], ["1", "2"]):
        validate(bundle)
        assert bundle["type"] == "collection"
        assert tags(bundle) == [kind]
        mr, included = (e["resource"] for e in bundle["entry"])
        assert (mr["resourceType"], mr["id"], mr["meta"]["versionId"]) == ("MedicationRequest", order["id"], version)
        assert (included["resourceType"], included["id"]) == ("Patient", patient["id"])
        assert len(bundle["entry"]) == 2
        assert all("fullUrl" not in e for e in bundle["entry"])
        assert bundle["timestamp"] == mr["meta"]["lastUpdated"]
    assert bundles[1]["entry"][0]["resource"]["status"] == "on-hold"
    assert all(e["resource"]["id"] != plan["id"] for b in bundles for e in b["entry"])

    messages = settled(engine, 2)
    assert [(m["message_type"], m["control_id"], m["source"], m["peer"], m["content_type"]) for m in messages] == [
        ("MedicationRequest^create", f"MedicationRequest/{order['id']}/_history/1", "store", SUBSCRIPTION, "application/fhir+json"),
        ("MedicationRequest^update", f"MedicationRequest/{order['id']}/_history/2", "store", SUBSCRIPTION, "application/fhir+json"),
    ]
    shown = engine.channel("orders-out")
    assert (shown["source"], shown["state"], shown["received"], shown["sent"]) == ("store", "running", 2, 2)

    # Reprocessing runs the channel again on the journaled Bundle.
    first = messages[0]["id"]
    assert engine.api(f"/api/messages/{first}/reprocess", method="POST")["generation"] == 1
    engine.wait_for(lambda: (d := engine.message(first))["generation"] == 1 and d["status"] == "sent",
                    what="the reprocessed message sent")
    assert json.loads((out / f"{first}.json").read_text()) == bundles[0]


def test_a_bare_type_subscription_sees_deletions_and_a_filter_keeps_by_kind(make_engine, tmp_path):
    out = tmp_path / "out"
    # `start: beginning`: the Organization created before the channel first ran is seen too.
    engine = make_engine({})
    fhir = Fhir(engine, issue_token(engine, "system/*.*"))
    before = fhir.ok("POST", "/Organization", {"resourceType": "Organization", "name": "Before"})
    engine.stop()
    (engine.channels_dir / "orders.yaml").write_text(
        channel(out, subscription="Organization", extra="  start: beginning\n")
        + "filters:\n  - message_type: [Organization^create, Organization^delete]\n")
    engine.start()
    org = fhir.ok("POST", "/Organization", {"resourceType": "Organization", "name": "Pharmacie centrale"})
    fhir.ok("PUT", f"/Organization/{org['id']}", {**org, "name": "Pharmacie du CHU"})
    assert fhir.call("DELETE", f"/Organization/{org['id']}").status_code == 204

    messages = settled(engine, 4)
    assert [(m["message_type"], m["status"]) for m in messages] == [
        ("Organization^create", "sent"), ("Organization^create", "sent"),
        ("Organization^update", "filtered"), ("Organization^delete", "sent")]
    assert messages[3]["control_id"] == f"Organization/{org['id']}/_history/3"
    bundles = written(out)
    assert [(tags(b), change_of(b)) for b in bundles] == [
        (["create"], (before["id"], "1")),
        (["create"], (org["id"], "1")),
        # A deletion carries the version before it.
        (["delete"], (org["id"], "2")),
    ]
    assert bundles[2]["entry"][0]["resource"]["name"] == "Pharmacie du CHU"


def test_kill_9_while_following_the_feed_journals_every_change_exactly_once(make_engine, tmp_path):
    out = tmp_path / "out"
    engine, fhir = start(make_engine, out)
    patient = new_patient(fhir)
    expected = set()
    orders = [new_order(fhir, patient) for _ in range(5)]
    expected |= {(o["id"], "1") for o in orders}
    engine.wait_for(lambda: len(journaled(engine)) >= 3, what="the first changes journaled")

    # More changes, then kill -9 at once: the feed is behind, some of them are journaled and
    # maybe not acknowledged to the feed.
    for o in orders[:3]:
        expected.add((fhir.ok("PUT", f"/MedicationRequest/{o['id']}", {**o, "status": "on-hold"})["id"], "2"))
    for _ in range(25):
        expected.add((new_order(fhir, patient)["id"], "1"))
    engine.kill()
    engine.start()

    def taken():
        m = [x for x in journaled(engine) if x["status"] != "duplicate"]
        return len(m) >= len(expected) and m

    messages = engine.wait_for(taken, timeout=60, what="every change journaled")
    keys = [m["control_id"] for m in messages]
    assert len(keys) == len(set(keys)), "a change journaled twice"
    assert set(keys) == {f"MedicationRequest/{i}/_history/{v}" for i, v in expected}
    # A change read again after the restart is recognised, never run again.
    for m in journaled(engine, status="duplicate"):
        assert m["control_id"] in keys and m["duplicate_of"]
    print(f"\nstore source kill -9: {len(expected)} changes, {len(journaled(engine, status='duplicate'))} read again after the restart")
    bundles = wait_written(engine, out, len(expected), timeout=60)
    assert sorted(change_of(b) for b in bundles) == sorted(expected)
