"""End-to-end load benchmark: `passerelle serve` with the bundled channels on loopback, loaded by
`passerelle bench mllp` (N connections, each sending a message and waiting for its ACK, as real
senders do). Prints messages/s and ACK latency p50/p99 next to the transport-only ceiling
(the same load against an MLLP server that answers AA without journaling) and the targets;
then the store ingest rate: messages mapped (bundled ADT mapping) and written to the FHIR
store per second, from the first message sent to the last one in the store.

    python3 tests/bench/e2e_load.py [--connections 8] [--messages 20000] [--size 1024]

Exit status is non-zero when any message is not accepted (AA, or CA in enhanced mode); the figures themselves are
reported, not asserted (timings on a shared 2-core machine are not a test).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from conftest import ROOT, Engine, binary, free_port  # noqa: E402

TARGET_RATE = 10_000
TARGET_P99_MS = 20.0


def run_bench(address: str, args, extra=()) -> dict:
    cmd = [
        str(binary()), "bench", "mllp", "--address", address,
        "--connections", str(args.connections), "--messages", str(args.messages),
        "--size", str(args.size), "--json", *extra,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def line(label: str, r: dict) -> str:
    return (f"{label:<34} {r['messages_per_second']:>9.0f} msg/s   p50 {r['p50_ms']:>6.2f} ms   "
            f"p99 {r['p99_ms']:>6.2f} ms   max {r['max_ms']:>7.2f} ms   acks {r['acks']}")


def processed(engine: Engine) -> int:
    """Messages of the bundled channel whose processing is over (in the store, filtered or
    errored), once no delivery is waiting."""
    [channel] = [c for c in engine.http("GET", "/api/channels")[1] if c["id"] == "hl7v2-inbound"]
    if channel["queued"]:
        return -1
    return channel["sent"] + channel["filtered"] + channel["errored"]


def wait_processed(engine: Engine, count: int, timeout: float = 600.0) -> float:
    """Waits until `count` messages are processed; returns when (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processed(engine) >= count:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"{count} messages not processed in {timeout} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--size", type=int, default=1024)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Path(tmp), ROOT / "channels", env={"PASSERELLE_LOG": "warn"}).start()
        try:
            address = f"127.0.0.1:{engine.mllp_port}"
            warm_up = 1000
            run_bench(address, argparse.Namespace(connections=args.connections, messages=warm_up, size=args.size))
            wait_processed(engine, warm_up)
            started = time.monotonic()
            served = run_bench(address, args)
            stored_at = wait_processed(engine, warm_up + args.messages)
            store_rate = args.messages / (stored_at - started)
        finally:
            engine.stop()
    ceiling = run_bench(f"127.0.0.1:{free_port()}", args, ["--ceiling"])

    print(f"\nend-to-end MLLP load: {args.messages} messages of ~{args.size} B over {args.connections} connections")
    print(line("passerelle serve (journal+fsync)", served))
    print(line("peer: ACK-only MLLP server", ceiling))
    print(f"{'target':<34} {TARGET_RATE:>9} msg/s   p99 < {TARGET_P99_MS} ms")
    print(f"{'MLLP -> mapping -> FHIR store':<34} {store_rate:>9.0f} msg/s   (ADT^A01 -> Patient upsert, "
          f"first message sent to last one stored)")
    # The generated messages ask for enhanced mode (MSH-15 AL): the commit accept is CA.
    positive = served["acks"].get("AA", 0) + served["acks"].get("CA", 0)
    if positive != args.messages:
        print(f"FAIL: not every message was accepted: {served['acks']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
