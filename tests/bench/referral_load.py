"""Outbound load benchmark, the partner clinic flow: two `passerelle serve` on loopback, the
hospital (bundled channels, `clinic-referrals` configured with OAuth2 client credentials) and
the clinic (its own data dir and store). Referrals are written at the hospital: each a
ServiceRequest to the clinic with its Patient and a Condition, 33 referrals to a 99-entry
transaction.

Each referral goes the whole way: committed in the hospital's store, read from the change
feed with its patient, reason, and the patient's conditions and recent observations,
made into a transaction Bundle of conditional creates (`fhir-transaction`), journaled,
POSTed to the clinic's `/fhir` with an access token from the clinic's `/api/oauth/token`,
and committed in the clinic's store. Prints:

- referrals/s delivered (the clinic's transaction-response received), from the first
  transaction posted at the hospital to the last delivery, and the resources/s that makes
  at the clinic's store;
- store change -> delivered latency p50/p99 from the notification's commit time to the end
  of the delivery step in the trace: behind the burst (the queue) and for referrals then
  written one by one at a steady rate (the engine's own latency);
- next to them, published transaction-ingest figures of FHIR servers (the clinic's side is
  a FHIR server taking transactions).

    python3 tests/bench/referral_load.py [--referrals 1000] [--paced 100 --rate 10]

Exit status is non-zero when a referral is not at the clinic exactly once; the figures are
reported, not asserted (timings on a shared 2-core machine are not a test).
"""

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, Engine  # noqa: E402
from mqtt_load import iso_seconds, pct, wait_until  # noqa: E402
from outbound_load import channel, last_message_id, latencies, settled  # noqa: E402

CHANNEL = "clinic-referrals"
CLINIC_ORG = ("urn:oid:1.2.250.1.71.4.2.2", "1900123456")
#: Transaction upload, resources/s: HAPI FHIR JPA as its users report it, and Blaze's
#: published range (both single servers).
PEERS = [("HAPI FHIR JPA, transaction upload (users' reports)", "100-190"),
         ("Blaze, transaction upload (published)", "1,829-7,698")]


def token(engine: Engine, *scopes: str) -> str:
    args = ["token", "issue", "--data-dir", str(engine.data_dir), "--name", "bench"]
    for s in scopes:
        args += ["--scope", s]
    return engine.cli(*args).stdout.strip()


class Referrer:
    """Writes referrals through the hospital's FHIR API."""

    def __init__(self, engine: Engine, bearer: str):
        self.engine = engine
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {bearer}",
                                     "Content-Type": "application/fhir+json"})
        self.clinic = self._post({"resourceType": "Bundle", "type": "transaction", "entry": [{
            "resource": {"resourceType": "Organization", "name": "Clinique Saint-Plouf",
                         "identifier": [{"system": CLINIC_ORG[0], "value": CLINIC_ORG[1]}]},
            "request": {"method": "POST", "url": "Organization"}}]})["entry"][0]["response"]["location"]
        self.clinic = "/".join(self.clinic.split("/")[:2])
        self.written = 0

    def _post(self, body: dict) -> dict:
        r = self.session.post(self.engine.base + "/fhir", timeout=120, data=json.dumps(body))
        assert r.status_code in (200, 201), r.text
        return r.json()

    def _entries(self, count: int) -> list:
        entries = []
        for _ in range(count):
            patient, condition = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
            n = self.written
            entries += [
                {"fullUrl": patient, "request": {"method": "POST", "url": "Patient"}, "resource": {
                    "resourceType": "Patient", "name": [{"family": "BENCH", "given": ["REFERRAL"]}],
                    "identifier": [{"system": "urn:oid:1.2.250.1.999.1.1", "value": f"IPP-REF-{n}-{uuid.uuid4().hex[:6]}"}],
                    "birthDate": "1970-05-01", "gender": "male"}},
                {"fullUrl": condition, "request": {"method": "POST", "url": "Condition"}, "resource": {
                    "resourceType": "Condition", "subject": {"reference": patient},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}}},
                {"request": {"method": "POST", "url": "ServiceRequest"}, "resource": {
                    "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                    "identifier": [{"system": "urn:oid:1.2.250.1.999.1.5", "value": f"REF-BENCH-{n}"}],
                    "subject": {"reference": patient}, "performer": [{"reference": self.clinic}],
                    "reasonReference": [{"reference": condition}]}},
            ]
            self.written += 1
        return entries

    def burst(self, referrals: int):
        for first in range(0, referrals, 33):
            self._post({"resourceType": "Bundle", "type": "transaction",
                        "entry": self._entries(min(33, referrals - first))})

    def paced(self, referrals: int, rate: float):
        start = time.time()
        for n in range(referrals):
            time.sleep(max(0.0, start + n / rate - time.time()))
            self._post({"resourceType": "Bundle", "type": "transaction", "entry": self._entries(1)})


def count(engine: Engine, bearer: str, resource_type: str) -> int:
    r = requests.get(f"{engine.base}/fhir/{resource_type}?_summary=count", timeout=60,
                     headers={"Authorization": f"Bearer {bearer}"})
    return r.json()["total"]


def last_delivery_end(engine: Engine) -> float:
    """When the delivery of the channel's last message ended (epoch seconds): the outbox
    delivers in order."""
    [last] = engine.api(f"/api/messages?channel={CHANNEL}&limit=1")["items"]
    done = [s for s in engine.message(last["id"])["trace"] if s["step"] == "destination:clinic"][-1]
    return iso_seconds(done["at"]) + done["duration_us"] / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--referrals", type=int, default=1000, help="referrals of the burst")
    parser.add_argument("--paced", type=int, default=100, help="referrals written one by one afterwards")
    parser.add_argument("--rate", type=float, default=10.0, help="referrals/s of the paced phase")
    args = parser.parse_args()
    total = args.referrals + args.paced
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "clinic").mkdir()
        (Path(tmp) / "clinic-channels").mkdir()
        (Path(tmp) / "hospital").mkdir()
        quiet = {"PASSERELLE_LOG": "warn"}
        clinic = Engine(Path(tmp) / "clinic", Path(tmp) / "clinic-channels", env=quiet)
        client = token(clinic, "system/*.*")
        hospital = Engine(Path(tmp) / "hospital", ROOT / "channels", env={
            **quiet,
            "PASSERELLE_CLINIC_FHIR": clinic.base + "/fhir",
            "PASSERELLE_CLINIC_ORG": "|".join(CLINIC_ORG),
            "PASSERELLE_IDENTIFIER_SYSTEM": "https://chbm.test/fhir",
            "PASSERELLE_CLINIC_TOKEN_URL": clinic.base + "/api/oauth/token",
            "PASSERELLE_CLINIC_CLIENT_ID": client.split("_")[1],
            "PASSERELLE_CLINIC_CLIENT_SECRET": client,
        })
        clinic.start()
        hospital.start()
        try:
            hospital_token, clinic_token = token(hospital, "system/*.*"), token(clinic, "system/*.*")
            referrer = Referrer(hospital, hospital_token)

            started = time.time()
            referrer.burst(args.referrals)
            written_at = time.time()
            wait_until(settled(hospital, args.referrals, CHANNEL), 900)
            burst_latency = latencies(hospital, 300, channel=CHANNEL, step="destination:clinic")
            delivered_at = last_delivery_end(hospital)
            after = last_message_id(hospital, CHANNEL)
            referrer.paced(args.paced, args.rate)
            wait_until(settled(hospital, total, CHANNEL), 900)
            paced_latency = latencies(hospital, 300, after, channel=CHANNEL, step="destination:clinic")
            c = channel(hospital, CHANNEL)
            at_clinic = {t: count(clinic, clinic_token, t) for t in ("ServiceRequest", "Patient", "Condition")}
        finally:
            hospital.stop()
            clinic.stop()
    rate = args.referrals / (delivered_at - started)
    print("outbound referrals: ServiceRequests for the partner clinic -> FHIR transaction (conditional creates, "
          "OAuth2 client credentials) to a second passerelle on loopback")
    print(f"  burst: {args.referrals} referrals (ServiceRequest + Patient + Condition), 33 to a transaction")
    print(f"    written at the hospital      {args.referrals / (written_at - started):>9.0f} referrals/s")
    print(f"    delivered to the clinic      {rate:>9.0f} referrals/s   ({rate * 3:.0f} resources/s at the clinic)")
    print(f"    store change -> delivered    p50 {pct(burst_latency, 0.5):.1f} ms   "
          f"p99 {pct(burst_latency, 0.99):.1f} ms   (the queue behind the burst)")
    print(f"  paced: {args.paced} referrals one by one at {args.rate:.0f}/s")
    print(f"    store change -> delivered    p50 {pct(paced_latency, 0.5):.1f} ms   "
          f"p99 {pct(paced_latency, 0.99):.1f} ms   (sample of {len(paced_latency)})")
    for name, figure in PEERS:
        print(f"  peer: {name}: {figure} resources/s")
    # Each referral has its own patient and condition: each type counts one per referral.
    ok = c["sent"] == total and c["errored"] == 0 and set(at_clinic.values()) == {total}
    if not ok:
        print(f"referrals lost, refused or duplicated: {c}, at the clinic: {at_clinic}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
