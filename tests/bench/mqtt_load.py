"""Device telemetry load benchmark: a Mosquitto broker and `passerelle serve` on loopback,
1,000 registered devices (FHIR Devices of one patient), and `passerelle bench mqtt`
publishing SenML heart-rate readings from each of them, one MQTT connection per device, QoS 1.

Prints the rate at which readings are journaled (the engine acknowledges a QoS 1 reading to
the broker only once it is in the journal) and stored (as vital-sign Observations), from the
first publish to the last reading journaled / stored, next to the target (10,000 readings/s
journaled), and the latency from publish to stored (p50, p99) over a sample of the readings.

    python3 tests/bench/mqtt_load.py [--devices 1000] [--readings 50000]

Exit status is non-zero when a reading is lost or refused; the figures are reported, not
asserted (timings on a shared 2-core machine are not a test).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from conftest import ROOT, Engine, binary  # noqa: E402
from test_device_telemetry import Mosquitto  # noqa: E402

TARGET_RATE = 10_000


def counters(engine: Engine) -> dict:
    [c] = [c for c in engine.http("GET", "/api/channels")[1] if c["id"] == "device-telemetry"]
    return c


def wait_until(predicate, timeout: float) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return time.time()
        time.sleep(0.02)
    raise TimeoutError("timed out")


def register(engine: Engine, token: str, devices: int):
    entries = [{"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
                "resource": {"resourceType": "Patient", "name": [{"family": "BENCH"}]},
                "request": {"method": "POST", "url": "Patient"}}]
    for n in range(devices):
        entries.append({"resource": {
            "resourceType": "Device", "status": "active",
            "identifier": [{"system": "urn:oid:1.2.250.1.999.9", "value": f"bench-{n}"}],
            "patient": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}},
            "request": {"method": "POST", "url": "Device"}})
    body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    r = requests.post(engine.base + "/fhir", data=body, timeout=120, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    assert r.status_code == 200, r.text


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def latencies(engine: Engine, sample: int) -> list[float]:
    """Publish → stored, in ms, for `sample` readings spread over the run."""
    items, cursor = [], None
    while True:
        query = "/api/messages?channel=device-telemetry&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = engine.api(query)
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    step = max(1, len(items) // sample)
    out = []
    for m in items[::step]:
        detail = engine.message(m["id"])
        published = json.loads(detail["raw"])[0]["bt"]
        [store] = [s for s in detail["trace"] if s["step"] == "destination:store"]
        stored = iso_seconds(store["at"]) + store["duration_us"] / 1e6
        out.append((stored - published) * 1000)
    return sorted(out)


def pct(sorted_values: list[float], p: float) -> float:
    return sorted_values[round((len(sorted_values) - 1) * p)] if sorted_values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--readings", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Mosquitto(work).start()
        engine = Engine(work, ROOT / "channels", env={"PASSERELLE_MQTT": broker.url,
                                                      "PASSERELLE_LOG": "warn"}).start()
        try:
            engine.wait_for(lambda: counters(engine)["state"] == "running", what="channel running")
            token = engine.cli("token", "issue", "--data-dir", str(engine.data_dir), "--name", "bench",
                               "--scope", "system/*.*").stdout.strip()
            register(engine, token, args.devices)
            out = subprocess.run([str(binary()), "bench", "mqtt", "--broker", broker.url,
                                  "--devices", str(args.devices), "--readings", str(args.readings),
                                  "--json"], capture_output=True, text=True, check=True)
            published = json.loads(out.stdout)
            journaled_at = wait_until(lambda: counters(engine)["received"] >= args.readings, 600)
            stored_at = wait_until(lambda: (c := counters(engine))["queued"] == 0
                                   and c["sent"] + c["filtered"] + c["errored"] >= args.readings, 600)
            c = counters(engine)
            start = published["first_publish"]
            journaled_rate = args.readings / (journaled_at - start)
            stored_rate = args.readings / (stored_at - start)
            lat = latencies(engine, 300)
            print(f"mqtt telemetry: {args.readings} SenML readings from {args.devices} devices "
                  f"(QoS 1, one connection each), Mosquitto on loopback")
            print(f"  published (broker acks)   {published['published_per_second']:>9.0f} readings/s")
            print(f"  journaled                 {journaled_rate:>9.0f} readings/s   "
                  f"(target >= {TARGET_RATE:,}: {'met' if journaled_rate >= TARGET_RATE else 'NOT met'})")
            print(f"  stored as Observations    {stored_rate:>9.0f} readings/s")
            print(f"  publish -> stored         p50 {pct(lat, 0.5):.1f} ms   p99 {pct(lat, 0.99):.1f} ms   "
                  f"(sample of {len(lat)})")
            ok = c["received"] == args.readings and c["rejected"] == 0 and c["sent"] == args.readings
            if not ok:
                print(f"readings lost or refused: {c}", file=sys.stderr)
            return 0 if ok else 1
        finally:
            engine.stop()
            broker.stop()


if __name__ == "__main__":
    sys.exit(main())
