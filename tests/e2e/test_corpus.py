"""Every HL7 v2 sample of the shared corpus ($PASSERELLE_CORPUS) is accepted by the bundled
deployment."""

from pathlib import Path

import pytest

from conftest import Hl7Client, corpus, frame, parse_ack

BOM = b"\xef\xbb\xbf"


def is_message(path: Path, data: bytes) -> bool:
    """`.hl7` and `.er7` files; `.txt` and extension-less ones only when they start with MSH
    (the corpus also holds READMEs without extension, XML and PDF documents)."""
    suffix = path.suffix.lower()
    if suffix in (".hl7", ".er7"):
        return True
    return suffix in ("", ".txt") and data.removeprefix(BOM).startswith(b"MSH")


def msh_field(data: bytes, n: int) -> str:
    """MSH-n (n >= 3) of a message file, as written."""
    msh = data.removeprefix(BOM).split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = msh.split(msh[3:4])
    return fields[n - 1].decode("latin-1").strip() if len(fields) >= n else ""


def declared_charset(data: bytes) -> str:
    return msh_field(data, 18).split("~")[0]


def accept_ack_wanted(data: bytes) -> bool:
    """Original mode always gets an ACK; enhanced mode (MSH-15 or MSH-16 valued) on success
    only when MSH-15 is not NE or ER."""
    enhanced = msh_field(data, 15) or msh_field(data, 16)
    return not enhanced or msh_field(data, 15) not in ("NE", "ER")


def as_sent(data: bytes) -> bytes:
    """Segments ended by CR, as on the wire. A file in ISO 8859-1 that does not say so in
    MSH-18 is sent as UTF-8, as a correctly configured sender would."""
    data = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        if not declared_charset(data).startswith("8859"):
            data = data.decode("latin-1").encode("utf-8")
    return data


def corpus_messages(root: Path) -> list[Path]:
    """Every message file anywhere under the corpus: which folders it holds is the corpus's
    business, not this test's."""
    assert root.is_dir(), f"{root} is not a directory"
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and is_message(p, p.read_bytes())]
    assert files, f"no HL7 v2 message under {root}"
    return files


def test_every_corpus_message_is_accepted(bundled_engine):
    root = corpus()
    if root is None:
        pytest.skip("PASSERELLE_CORPUS is not set")
    files = corpus_messages(root)
    refused = []
    with Hl7Client(bundled_engine.mllp_port, timeout=60) as client:
        for count, path in enumerate(files, start=1):
            data = as_sent(path.read_bytes())
            if accept_ack_wanted(data):
                ack = parse_ack(client.send_message(data), "latin-1")
                code, reasons = ack.code, "; ".join(f"{e.location} {e.code}: {e.text}" for e in ack.errors)
            else:
                # MSH-15 asks for no accept ACK: the journal tells what became of it.
                client.socket.sendall(frame(data))
                bundled_engine.wait_for(lambda: bundled_engine.messages(limit=1)["total"] == count,
                                        what=f"{path.name} journaled")
                newest = bundled_engine.messages(limit=1)["items"][0]
                code = "AA" if newest["status"] != "rejected" else newest["ack"] or "rejected"
                reasons = newest["error"] or ""
            if code not in ("AA", "CA"):
                refused.append(f"{path.relative_to(root)}: {code} {reasons}")
    print(f"{len(files)} corpus messages sent, {len(refused)} refused")
    assert not refused, "refused corpus messages:\n" + "\n".join(refused)
    assert bundled_engine.messages(status="rejected")["total"] == 0
    assert bundled_engine.channel("hl7v2-inbound")["received"] == len(files)
