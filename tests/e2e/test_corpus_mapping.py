"""The public HL7 v2 corpus (the LinuxForHealth converter's 139 messages and the ANS samples)
through the bundled mappings with `passerelle mappings coverage`: every message is either
mapped or reported with its reason (its type left unmapped on purpose, with the reason
mappings/not-mapped.csv gives; refused by the parser; or refused by a mapping for a
documented defect of the sample), and every resource produced
validates with `fhir.resources`. The coverage table is printed (`pytest -s`) and by
`.ci/run`."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import binary
from test_fhir import validate

CORPUS = os.environ.get("PASSERELLE_CORPUS")


@pytest.fixture
def corpus():
    if not CORPUS:
        pytest.skip("PASSERELLE_CORPUS is not set: the corpus tests need the shared corpus")
    return Path(CORPUS).resolve()


def test_every_corpus_message_maps_or_is_reported_with_its_reason(corpus, tmp_path):
    sources = [corpus / "hl7v2-fhir-converter", corpus / "ansforge-hl7v2"]
    out = subprocess.run(
        [str(binary()), "mappings", "coverage", "--out", str(tmp_path), *map(str, sources)],
        capture_output=True, text=True,
    )
    print(out.stdout)
    # Deliberate refusals: the ANS samples of documents in ORU messages carry, next to real
    # ones, a placeholder base64 document cut short (93 characters: no base64 has that
    # length). The message is refused with that reason (it would be journaled `errored`),
    # never stored with a broken document.
    errors = [line for line in out.stdout.splitlines() if line.startswith("ERROR")]
    for line in errors:
        assert "base64 data of an impossible length" in line and "TRANS" in line.upper(), line
    assert out.returncode == (1 if errors else 0), out.stdout + out.stderr
    table = out.stdout.split("no mapping yet:")[0].splitlines()[1:]
    rows = {line.split()[0]: line.split() for line in table if line.strip()}
    assert {"ADT^A01", "ADT^A08", "ADT^A28", "ORU^R01"} <= rows.keys(), out.stdout
    # Every message is accounted for: mapped, left unmapped on purpose with the reason that
    # mappings/not-mapped.csv gives (acknowledgements, billing...), or refused. No type is
    # merely waiting for a mapping.
    assert "no mapping yet:" not in out.stdout, out.stdout
    mapped = int(rows["all"][1])
    on_purpose = [line for line in out.stdout.splitlines() if line.startswith("not mapped on purpose:")]
    unmapped = 0
    for line in on_purpose:
        kind_count, reason = line.removeprefix("not mapped on purpose: ").split(": ", 1)
        assert reason.strip(), line
        unmapped += int(kind_count.split("(")[1].rstrip(")"))
    refused = out.stdout.count("rejected by the parser:")
    files = [p for s in sources for p in s.rglob("*") if p.suffix in (".hl7", ".er7")]
    assert mapped + unmapped + refused + len(errors) == len(files), (mapped, unmapped, refused, len(errors), len(files))
    bundles = sorted(tmp_path.glob("*.json"))
    assert len(bundles) == mapped
    for path in bundles:
        bundle = json.loads(path.read_text())
        validate(bundle)
        for entry in bundle["entry"]:
            validate(entry["resource"])
