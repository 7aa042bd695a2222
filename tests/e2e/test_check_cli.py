"""`passerelle check` (and `serve`) point at configuration mistakes as `file:line:col: message`."""

import subprocess

import pytest

from conftest import ROOT, binary, bundled_check_lines, check_ok

GOOD = """\
id: lab-in
description: lab results
source:
  type: mllp
  address: 127.0.0.1:2600
filters:
  - message_type: [ORU^R01]
  - field: MSH-4
    in: [LAB, RAD]
transform:
  type: route-by-message-type
  routes:
    - message_type: ORU
      destinations: [archive]
destinations:
  - id: archive
    type: file
    directory: out
    retry:
      max_attempts: 3
      initial_backoff: 2s
"""

RETRY_KEYS = "max_attempts, initial_backoff, max_backoff, multiplier, jitter"

# id: (text in GOOD, replacement, the token the error points at, message or its start)
BROKEN = {
    "unknown-destination-type": ("type: file", "type: fil", "fil",
                                 "unknown destination type `fil` (expected: file, mllp, fhir-store, fhir, smtp, xds)"),
    "invalid-field-path": ("field: MSH-4", "field: MSH4", "MSH4", 'invalid path "MSH4"'),
    "unknown-key": ("initial_backoff: 2s", "initial_backof: 2s", "initial_backof",
                    f"unknown key `initial_backof` (expected one of: {RETRY_KEYS})"),
    "yaml-syntax": ("  type: mllp", "  type: mllp: tcp", ": tcp",
                    "mapping values are not allowed in this context"),
    "unknown-route-destination": ("destinations: [archive]", "destinations: [archiv]", "archiv",
                                  "no destination `archiv` in this channel"),
    "bad-duration": ("initial_backoff: 2s", "initial_backoff: soon", "soon",
                     "`soon` is not a duration like 500ms, 30s, 5m"),
}


def run(*args: str, cwd, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary()), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def position(text: str, line_text: str, token: str) -> tuple[int, int]:
    """1-based line and column of `token` in the first line containing `line_text`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line_text in line:
            return number, line.index(token, line.index(line_text)) + 1
    raise AssertionError(f"{line_text!r} not in the text")


def broken_channel(tmp_path, case: str):
    """Writes the broken file in its own directory; returns (dir, file, expected line start)."""
    old, new, token, message = BROKEN[case]
    assert GOOD.count(old) == 1
    text = GOOD.replace(old, new)
    directory = tmp_path / case
    directory.mkdir()
    path = directory / f"{case}.yaml"
    path.write_text(text)
    line, column = position(text, new, token)
    return directory, path, f"{path}:{line}:{column}: ", message


def test_bundled_channels_are_ok(tmp_path):
    out = run("check", "--channels", str(ROOT / "channels"), cwd=tmp_path)
    assert out.returncode == 0, out
    assert out.stdout.splitlines() == bundled_check_lines()


def test_a_good_channel_is_ok(tmp_path):
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "lab.yaml").write_text(GOOD)
    out = run("check", "--channels", str(tmp_path / "channels"), cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, check_ok(1) + "\n"), out


@pytest.mark.parametrize("case", BROKEN)
def test_broken_channel_is_reported_at_its_line_and_column(tmp_path, case):
    directory, _, where, message = broken_channel(tmp_path, case)
    out = run("check", "--channels", str(directory), cwd=tmp_path)
    assert out.returncode != 0
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout
    assert lines[0].startswith(where), (lines[0], where)
    assert message in lines[0]
    assert "1 problem(s)" in out.stderr


@pytest.mark.parametrize("case", [c for c in BROKEN if c != "yaml-syntax"])
def test_broken_channel_line_is_exactly_file_line_col_message(tmp_path, case):
    directory, _, where, message = broken_channel(tmp_path, case)
    line = run("check", "--channels", str(directory), cwd=tmp_path).stdout.splitlines()[0]
    if message.endswith('"'):  # a message whose end quotes the engine's own explanation
        assert line.startswith(where + message)
    else:
        assert line == where + message


def test_yaml_syntax_error_line_is_exactly_file_line_col_message(tmp_path):
    directory, _, where, message = broken_channel(tmp_path, "yaml-syntax")
    line = run("check", "--channels", str(directory), cwd=tmp_path).stdout.splitlines()[0]
    assert line == where + message


def test_every_broken_file_is_reported(tmp_path):
    directory = tmp_path / "channels"
    directory.mkdir()
    expected = []
    for case in BROKEN:
        _, path, where, _ = broken_channel(tmp_path, case)
        target = directory / path.name
        path.rename(target)
        expected.append(where.replace(str(path), str(target)))
    out = run("check", "--channels", str(directory), cwd=tmp_path)
    assert out.returncode != 0
    lines = sorted(out.stdout.splitlines())
    assert len(lines) == len(BROKEN), out.stdout
    for line, where in zip(lines, sorted(expected)):
        assert line.startswith(where), (line, where)
    assert f"{len(BROKEN)} problem(s)" in out.stderr


def test_several_problems_of_one_file_are_all_reported(tmp_path):
    text = GOOD.replace("type: file", "type: fil").replace("initial_backoff: 2s", "initial_backoff: soon")
    (tmp_path / "channels").mkdir()
    path = tmp_path / "channels" / "lab.yaml"
    path.write_text(text)
    out = run("check", "--channels", str(path.parent), cwd=tmp_path)
    assert out.returncode != 0
    assert sorted(out.stdout.splitlines()) == sorted([
        "{}:{}:{}: unknown destination type `fil` (expected: file, mllp, fhir-store, fhir, smtp, xds)".format(path, *position(text, "type: fil", "fil")),
        "{}:{}:{}: `soon` is not a duration like 500ms, 30s, 5m".format(path, *position(text, "initial_backoff: soon", "soon")),
    ])


def test_unset_variable_is_a_note_not_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("PASSERELLE_E2E_UNSET_DIR", raising=False)
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "lab.yaml").write_text(GOOD.replace("directory: out", "directory: ${PASSERELLE_E2E_UNSET_DIR}"))
    out = run("check", "--channels", str(tmp_path / "channels"), cwd=tmp_path)
    assert out.returncode == 0, out
    assert out.stdout.splitlines() == [
        "note: channel `lab-in` will be paused: not configured: PASSERELLE_E2E_UNSET_DIR not set",
        check_ok(1),
    ]


# passerelle.toml: (text, line of the error, the token it points at, message)
BROKEN_CONFIG = {
    "bad-duration": ('[mllp]\nidle_timeout = "soon"\n', 'idle_timeout = "soon"', "idle_timeout",
                     "`soon` is not a duration like 30s, 5m, 12h"),
    "wrong-type": ('[mllp]\nmax_message_size = "big"\n', "max_message_size", '"big"',
                   'invalid type: string "big", expected usize'),
    "unknown-key": ("[mllp]\nmax_mesage_size = 4096\n", "max_mesage_size", "max_mesage_size",
                    "unknown field `max_mesage_size`"),
    "syntax": ("[http]\naddress = \"127.0.0.1:8080\"\n[mllp\n", "[mllp", "\n",
               "unclosed table, expected `]`"),
    "bad-log-format": ('[log]\nformat = "xml"\n', 'format = "xml"', "format",
                       "log format `xml`: expected text or json"),
}


def config_position(text: str, line_text: str, token: str) -> tuple[int, int]:
    if token == "\n":  # the error is at the end of that line
        line, _ = position(text, line_text, line_text)
        return line, len(text.splitlines()[line - 1]) + 1
    return position(text, line_text, token)


@pytest.mark.parametrize("case", BROKEN_CONFIG)
def test_broken_config_file_is_reported_at_its_line_and_column(tmp_path, case):
    text, line_text, token, message = BROKEN_CONFIG[case]
    config = tmp_path / "passerelle.toml"
    config.write_text(text)
    out = run("check", "--config", str(config), "--channels", str(ROOT / "channels"), cwd=tmp_path)
    assert out.returncode != 0
    line, column = config_position(text, line_text, token)
    assert out.stdout.splitlines()[0].startswith(f"{config}:{line}:{column}: {message}"), out.stdout


@pytest.mark.parametrize("text, line_text", [
    ('[http]\naddress = "127.0.0.1:8080"\n[mllp]\naddress = "nowhere"\n', 'address = "nowhere"'),
    ('# idle_timeout: how long a silent connection stays open\n[mllp]\nidle_timeout = "soon"\n', 'idle_timeout = "soon"'),
], ids=["second-section", "key-in-a-comment"])
def test_config_value_error_points_at_the_right_key(tmp_path, text, line_text):
    config = tmp_path / "passerelle.toml"
    config.write_text(text)
    out = run("check", "--config", str(config), "--channels", str(ROOT / "channels"), cwd=tmp_path)
    line, column = position(text, line_text, line_text)
    assert out.stdout.startswith(f"{config}:{line}:{column}: "), out.stdout


def serve_args(tmp_path, channels) -> list:
    return ["serve", "--channels", str(channels), "--data-dir", str(tmp_path / "data"),
            "--http", "127.0.0.1:0", "--mllp", "127.0.0.1:0"]


def test_serve_refuses_a_broken_channel_with_the_same_message(tmp_path):
    directory, _, where, message = broken_channel(tmp_path, "unknown-destination-type")
    out = run(*serve_args(tmp_path, directory), cwd=tmp_path)
    assert out.returncode != 0
    assert where + message in out.stderr


def test_serve_refuses_a_broken_config_file_with_its_position(tmp_path):
    text, line_text, token, message = BROKEN_CONFIG["bad-duration"]
    config = tmp_path / "passerelle.toml"
    config.write_text(text)
    out = run(*serve_args(tmp_path, ROOT / "channels"), "--config", str(config), cwd=tmp_path)
    assert out.returncode != 0
    line, column = position(text, line_text, token)
    assert f"{config}:{line}:{column}: {message}" in out.stderr


def test_unset_source_address_pauses_the_channel_and_leaves_the_main_address(tmp_path, monkeypatch):
    monkeypatch.delenv("PASSERELLE_E2E_UNSET_ADDRESS", raising=False)
    (tmp_path / "channels").mkdir()
    main = GOOD.replace("id: lab-in", "id: main-in").replace("  address: 127.0.0.1:2600\n", "")
    (tmp_path / "channels" / "a.yaml").write_text(main)
    (tmp_path / "channels" / "b.yaml").write_text(GOOD.replace("127.0.0.1:2600", "${PASSERELLE_E2E_UNSET_ADDRESS}"))
    out = run("check", "--channels", str(tmp_path / "channels"), cwd=tmp_path)
    assert out.returncode == 0, out
    assert out.stdout.splitlines() == [
        "note: channel `lab-in` will be paused: not configured: PASSERELLE_E2E_UNSET_ADDRESS not set",
        check_ok(2),
    ]


# (text in GOOD, replacement, the line the error is on, the token it points at, message)
BROKEN_POSITIONS = {
    "filter-without-condition": ("- message_type: [ORU^R01]", "- {}", "- {}", "{",
                                 "a filter needs `field` (with a test), `message_type`, `any` or `all`"),
    "unknown-key-in-a-filter-item": ("  - field: MSH-4\n", "  - description: lab\n", "- description", "description",
                           "unknown key `description`"),
    "nested-filter-without-condition": (
        "- message_type: [ORU^R01]", "- any:\n      - field: MSH-3\n        equals: LAB\n      - {}", "      - {}", "{",
        "a filter needs `field` (with a test), `message_type`, `any` or `all`"),
    "route-message-type": ("message_type: ORU\n", "message_type: ORU_R01\n", "message_type: ORU_R01", "ORU_R01",
                           "message type `ORU_R01`: expected TYPE or TYPE^EVENT, e.g. ADT^A01"),
    "file-connect-timeout": ("directory: out\n", "directory: out\n    connect_timeout: 1s\n", "connect_timeout",
                             "connect_timeout", "`connect_timeout` does not apply to a file destination"),
    "file-ack-timeout": ("directory: out\n", "directory: out\n    ack_timeout: 1s\n", "ack_timeout",
                         "ack_timeout", "`ack_timeout` does not apply to a file destination"),
}


@pytest.mark.parametrize("case", BROKEN_POSITIONS)
def test_channel_errors_point_at_the_item_or_key(tmp_path, case):
    old, new, line_text, token, message = BROKEN_POSITIONS[case]
    assert GOOD.count(old) == 1
    text = GOOD.replace(old, new)
    (tmp_path / "channels").mkdir()
    path = tmp_path / "channels" / "lab.yaml"
    path.write_text(text)
    out = run("check", "--channels", str(path.parent), cwd=tmp_path)
    assert out.returncode != 0
    line, column = position(text, line_text, token)
    assert out.stdout.splitlines() == [f"{path}:{line}:{column}: {message}"] or (
        message.startswith("unknown key") and out.stdout.startswith(f"{path}:{line}:{column}: {message}")
    ), out.stdout


def test_test_without_field_beside_another_condition_is_an_error(tmp_path):
    text = GOOD.replace("- message_type: [ORU^R01]", "- message_type: [ORU^R01]\n    equals: LAB")
    (tmp_path / "channels").mkdir()
    path = tmp_path / "channels" / "lab.yaml"
    path.write_text(text)
    out = run("check", "--channels", str(path.parent), cwd=tmp_path)
    line, column = position(text, "- message_type: [ORU^R01]", "message_type")
    assert out.stdout.splitlines() == [
        f"{path}:{line}:{column}: a test (equals, not_equals, in, not_in, starts_with, exists) needs `field`"
    ], out.stdout
