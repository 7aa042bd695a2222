"""End-to-end load benchmark: `passerelle serve` with the bundled channels on loopback, loaded by
`passerelle bench mllp` (N connections, each sending a message and waiting for its ACK, as real
senders do). Prints messages/s and ACK latency p50/p99 next to the transport-only ceiling
(the same load against an MLLP server that answers AA without journaling) and the targets.

    python3 tests/bench/e2e_load.py [--connections 8] [--messages 20000] [--size 1024]

Exit status is non-zero when any message is not accepted (AA, or CA in enhanced mode); the figures themselves are
reported, not asserted (timings on a shared 2-core machine are not a test).
"""

import argparse
import json
import subprocess
import sys
import tempfile
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
            run_bench(address, argparse.Namespace(connections=args.connections, messages=1000, size=args.size))  # warm-up
            served = run_bench(address, args)
        finally:
            engine.stop()
    ceiling = run_bench(f"127.0.0.1:{free_port()}", args, ["--ceiling"])

    print(f"\nend-to-end MLLP load: {args.messages} messages of ~{args.size} B over {args.connections} connections")
    print(line("passerelle serve (journal+fsync)", served))
    print(line("peer: ACK-only MLLP server", ceiling))
    print(f"{'target':<34} {TARGET_RATE:>9} msg/s   p99 < {TARGET_P99_MS} ms")
    # The generated messages ask for enhanced mode (MSH-15 AL): the commit accept is CA.
    positive = served["acks"].get("AA", 0) + served["acks"].get("CA", 0)
    if positive != args.messages:
        print(f"FAIL: not every message was accepted: {served['acks']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
