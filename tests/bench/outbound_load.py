"""Outbound load benchmark, the pharmacy flow: `passerelle serve` with the bundled channels, the
`pharmacy-orders` channel pointed at an MLLP pharmacy peer on loopback that acknowledges every
message with AA, and MedicationRequests written to the FHIR store in 100-entry transactions.

A patient has ten orders. Each order goes the whole outbound way: committed in the store, read from the change feed
with its patient (`include`), mapped to RDE^O11 (mappings/outbound/pharmacy-rde.yaml),
journaled, sent over MLLP and acknowledged by the peer. Prints:

- orders/s delivered (acknowledged by the pharmacy), from the first transaction posted to
  the last ACK received by the peer;
- store change -> delivered latency p50/p99, over a sample of the orders: from the commit
  time the change notification carries (`Bundle.timestamp`) to the end of the delivery step
  in the message's trace (the peer's AA read); after the burst (that is the queue behind
  it) and for orders then written one by one at a steady rate, as prescribers sign them
  (that is the engine's own latency);
- next to them the peer's own ceiling: the same peer loaded directly by
  `passerelle bench mllp` over one connection, as the engine's destination uses it (the
  best any sender could get from that peer on this machine), and a published figure of a
  peer engine.

    python3 tests/bench/outbound_load.py [--orders 5000] [--paced 500 --rate 50] [--channels DIR]

Exit status is non-zero when an order is not delivered exactly once; the figures are
reported, not asserted (timings on a shared 2-core machine are not a test).
"""

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import multiprocessing
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from conftest import ROOT, Engine, binary, free_port  # noqa: E402
from mqtt_load import iso_seconds, pct, wait_until  # noqa: E402

CHANNEL = "pharmacy-orders"
START, END = b"\x0b", b"\x1c\x0d"
#: Conevity's published Connexion test: HL7 in, 6 transform steps, HL7 out to an endpoint,
#: 10 channels, peak 4.2 million messages/hour.
PEER_ENGINE = ("Connexion, 10 channels, HL7 in -> transform -> HL7 out (published)", 4_200_000 / 3600)


class AckingPharmacy:
    """An MLLP server that answers AA to every frame with MSA-2 = the frame's MSH-10 and
    counts the control ids it reads, as fast as Python's asyncio lets one be. It runs in a
    process of its own: in a thread of the benchmark it would wait for the interpreter lock
    while the benchmark polls the engine, and the engine would be measured waiting for it."""

    def __init__(self):
        self.port = free_port()
        context = multiprocessing.get_context("fork")
        self._frames = context.Value("q", 0)
        self._duplicates = context.Value("q", 0)
        self._last_at = context.Value("d", 0.0)
        ready = context.Event()
        self._process = context.Process(target=self._run, args=(ready,), daemon=True)
        self._process.start()
        if not ready.wait(10):
            raise RuntimeError("the pharmacy peer did not start")

    @property
    def frames(self) -> int:
        return self._frames.value

    @property
    def duplicates(self) -> int:
        return self._duplicates.value

    @property
    def last_at(self) -> float:
        return self._last_at.value

    def stop(self):
        self._process.terminate()
        self._process.join(5)

    def _run(self, ready):
        seen: set[str] = set()

        async def serve(reader, writer):
            buffer = b""
            while data := await reader.read(65536):
                buffer += data
                while (end := buffer.find(END)) >= 0:
                    frame, buffer = buffer[:end], buffer[end + len(END):]
                    message = frame.lstrip(START)
                    msh = message.split(b"\r", 1)[0]
                    fields = msh.split(msh[3:4])
                    control_id = fields[9].decode() if len(fields) > 9 else ""
                    if control_id in seen:
                        self._duplicates.value += 1
                    seen.add(control_id)
                    self._frames.value += 1
                    self._last_at.value = time.time()
                    ack = (b"MSH|^~\\&|PHARMA|PHARMACIE|PASSERELLE|HOPITAL|"
                           + time.strftime("%Y%m%d%H%M%S").encode() + b"||ACK^O11^ACK|A"
                           + control_id.encode() + b"|P|2.5\rMSA|AA|" + control_id.encode() + b"\r")
                    writer.write(START + ack + END)
                await writer.drain()
            writer.close()

        async def main():
            await asyncio.start_server(serve, "127.0.0.1", self.port)
            ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())


def channel(engine: Engine, name: str = CHANNEL) -> dict:
    [c] = [c for c in engine.api("/api/channels") if c["id"] == name]
    return c


def settled(engine: Engine, count: int, name: str = CHANNEL):
    """A condition for wait_until: the channel has handled `count` messages, none waiting."""
    return lambda: (c := channel(engine, name))["queued"] == 0 and c["sent"] + c["errored"] >= count


def order(n: int, patient: str) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "identifier": [{"system": "urn:oid:1.2.250.1.999.4.1", "value": f"RX-BENCH-{n}"}],
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{
            "system": "https://smt.esante.gouv.fr/terminologie-cip", "code": "3400935955838",
            "display": "DOLIPRANE 1000MG CPR"}]},
        "subject": {"reference": patient},
        "authoredOn": "2024-11-04T10:55:00+01:00",
        "dosageInstruction": [{"text": "1 comprime 3 fois par jour",
                               "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "comprime"}}]}],
        "dispenseRequest": {"quantity": {"value": 30, "unit": "comprime"}},
    }


class Prescriber:
    """Writes MedicationRequests through the FHIR API, ten orders a patient."""

    def __init__(self, engine: Engine, token: str):
        self.engine = engine
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}",
                                     "Content-Type": "application/fhir+json"})
        self.written = 0
        self.patient = ""

    def _post(self, path: str, body: dict) -> dict:
        r = self.session.post(self.engine.base + "/fhir" + path, timeout=120, data=json.dumps(body))
        assert r.status_code in (200, 201), r.text
        return r.json()

    def _entries(self, count: int) -> list:
        """`count` orders, with a new Patient (in the same transaction) every ten."""
        entries = []
        for _ in range(count):
            if self.written % 10 == 0:
                self.patient = f"urn:uuid:{uuid.uuid4()}"
                entries.append({"fullUrl": self.patient, "resource": {
                    "resourceType": "Patient", "name": [{"family": "BENCH", "given": ["ORDERS"]}],
                    "identifier": [{"system": "urn:oid:1.2.250.1.999.1.1", "value": "IPP-" + uuid.uuid4().hex[:8]}],
                    "birthDate": "1985-02-14", "gender": "female"},
                    "request": {"method": "POST", "url": "Patient"}})
            entries.append({"resource": order(self.written, self.patient),
                            "request": {"method": "POST", "url": "MedicationRequest"}})
            self.written += 1
        return entries

    def _transaction(self, entries: list):
        answer = self._post("", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
        if self.patient.startswith("urn:uuid:"):
            [created] = [e["response"]["location"] for e in answer["entry"]
                         if e["response"]["location"].startswith("Patient/")][-1:]
            self.patient = "/".join(created.split("/")[:2])

    def burst(self, orders: int):
        """`orders` in 100-entry transactions, as fast as the store takes them."""
        for first in range(0, orders, 100):
            self._transaction(self._entries(min(100, orders - first)))

    def paced(self, orders: int, rate: float):
        """`orders` one by one (as prescribers sign them), `rate` a second."""
        start = time.time()
        for n in range(orders):
            time.sleep(max(0.0, start + n / rate - time.time()))
            self._transaction(self._entries(1))


def latencies(engine: Engine, sample: int, after: int = 0, channel: str = CHANNEL,
              step: str = "destination:pharmacy") -> list[float]:
    """Store change -> delivered, in ms, for `sample` messages of `channel` journaled after
    message `after`: from the commit time the notification carries to the end of `step`."""
    items, cursor = [], None
    while True:
        page = engine.api(f"/api/messages?channel={channel}&limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        items += [m for m in page["items"] if m["id"] > after]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    out = []
    for m in items[::max(1, len(items) // sample)]:
        detail = engine.message(m["id"])
        changed = iso_seconds(json.loads(detail["raw"])["timestamp"])
        # The last delivery: a message is delivered once, unless reprocessed.
        done = [s for s in detail["trace"] if s["step"] == step][-1]
        delivered = iso_seconds(done["at"]) + done["duration_us"] / 1e6
        out.append((delivered - changed) * 1000)
    return sorted(out)


def last_message_id(engine: Engine, channel: str = CHANNEL) -> int:
    items = engine.api(f"/api/messages?channel={channel}&limit=1")["items"]
    return items[0]["id"] if items else 0


def peer_ceiling(peer: AckingPharmacy, messages: int) -> dict:
    out = subprocess.run([str(binary()), "bench", "mllp", "--address", f"127.0.0.1:{peer.port}",
                          "--connections", "1", "--messages", str(messages), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=5000, help="orders of the burst")
    parser.add_argument("--paced", type=int, default=500, help="orders written one by one afterwards")
    parser.add_argument("--rate", type=float, default=50.0, help="orders/s of the paced phase")
    parser.add_argument("--channels", type=Path, default=ROOT / "channels",
                        help="the channels directory (default: the bundled one)")
    args = parser.parse_args()
    total = args.orders + args.paced
    peer = AckingPharmacy()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Path(tmp), args.channels, env={
            "PASSERELLE_PHARMACY_MLLP": f"127.0.0.1:{peer.port}", "PASSERELLE_LOG": "warn"}).start()
        try:
            engine.wait_for(lambda: channel(engine)["state"] == "running", what="channel running")
            token = engine.cli("token", "issue", "--data-dir", str(engine.data_dir), "--name", "bench",
                               "--scope", "system/*.*").stdout.strip()
            prescriber = Prescriber(engine, token)

            started = time.time()
            prescriber.burst(args.orders)
            written_at = time.time()
            wait_until(settled(engine, args.orders), 600)
            delivered_rate = args.orders / (peer.last_at - started)
            burst_latency = latencies(engine, 300)
            after = last_message_id(engine)
            prescriber.paced(args.paced, args.rate)
            wait_until(settled(engine, total), 600)
            paced_latency = latencies(engine, 300, after)
            c = channel(engine)
        finally:
            engine.stop()
    frames, duplicates = peer.frames, peer.duplicates
    ceiling = peer_ceiling(peer, max(args.orders, 5000))
    peer.stop()
    print(f"outbound pharmacy orders: MedicationRequests written to the FHIR store -> RDE^O11 over MLLP "
          f"to an AA-only peer on loopback")
    print(f"  burst: {args.orders} orders in 100-entry transactions")
    print(f"    written to the store         {args.orders / (written_at - started):>9.0f} orders/s")
    print(f"    delivered (peer AA)          {delivered_rate:>9.0f} orders/s")
    print(f"    store change -> delivered    p50 {pct(burst_latency, 0.5):.1f} ms   "
          f"p99 {pct(burst_latency, 0.99):.1f} ms   (the queue behind the burst)")
    print(f"  paced: {args.paced} orders one by one at {args.rate:.0f}/s")
    print(f"    store change -> delivered    p50 {pct(paced_latency, 0.5):.1f} ms   "
          f"p99 {pct(paced_latency, 0.99):.1f} ms   (sample of {len(paced_latency)})")
    print(f"  peer: the same MLLP peer, loaded by `passerelle bench mllp` on one connection: "
          f"{ceiling['messages_per_second']:.0f} msg/s, p99 {ceiling['p99_ms']:.2f} ms")
    print(f"  peer: {PEER_ENGINE[0]}: {PEER_ENGINE[1]:.0f} msg/s")
    ok = c["sent"] == total == frames and c["errored"] == 0 and not duplicates
    if not ok:
        print(f"orders lost, refused or sent twice: {c}, {frames} received by the peer, "
              f"{duplicates} duplicates", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
