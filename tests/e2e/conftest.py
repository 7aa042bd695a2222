"""Fixtures that run the real `passerelle` binary on loopback ports in a temporary data dir.

The binary is taken from $PASSERELLE_BIN, else target/release, else target/debug (build it
first: `cargo build --release`). Each test gets its own data dir, ports and channels dir.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import hl7
import pytest
from hl7.client import MLLPClient
from postgres import postgres  # noqa: F401  (session fixture: a throwaway PostgreSQL server)

ROOT = Path(__file__).resolve().parents[2]
# Every `passerelle` the tests start (serve, check, mappings...) runs from a temporary
# directory: it finds the bundled mappings and ConceptMaps through these.
os.environ.setdefault("PASSERELLE_MAPPINGS", str(ROOT / "mappings"))
os.environ.setdefault("PASSERELLE_CONCEPTMAPS", str(ROOT / "schemas" / "conceptmaps"))


def binary() -> Path:
    if os.environ.get("PASSERELLE_BIN"):
        return Path(os.environ["PASSERELLE_BIN"])
    for profile in ("release", "debug"):
        candidate = ROOT / "target" / profile / "passerelle"
        if candidate.exists():
            return candidate
    pytest.exit("passerelle binary not found: run `cargo build --release` first", returncode=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(payload: bytes) -> bytes:
    return b"\x0b" + payload + b"\x1c\x0d"


class MllpConnection:
    """A minimal MLLP sender for cases third-party clients cannot produce (junk, oversize)."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        while b"\x1c\x0d" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buffer += chunk
        end = self.buffer.index(b"\x1c\x0d")
        start = self.buffer.index(b"\x0b")
        payload, self.buffer = self.buffer[start + 1 : end], self.buffer[end + 2 :]
        return payload

    def send(self, payload: bytes) -> bytes:
        self.send_raw(frame(payload))
        return self.read_frame()

    def silent_for(self, seconds: float) -> bool:
        """True when no byte arrives for `seconds` (what arrives is kept for `read_frame`)."""
        previous = self.sock.gettimeout()
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(previous)
        self.buffer += chunk
        return False

    def close(self):
        self.sock.close()


def ack_fields(ack: bytes) -> dict:
    """MSA-1, MSA-2 and the ERR segments of an acknowledgement."""
    segments = [s for s in ack.replace(b"\n", b"\r").split(b"\r") if s]
    out = {"code": None, "control_id": None, "err": []}
    for seg in segments:
        fields = seg.split(b"|")
        if fields[0] == b"MSA":
            out["code"] = fields[1].decode()
            out["control_id"] = fields[2].decode() if len(fields) > 2 else ""
        if fields[0] == b"ERR":
            out["err"].append([f.decode("latin-1") for f in fields])
    return out


class Engine:
    """One `passerelle serve` process."""

    def __init__(self, workdir: Path, channels_dir: Path, env: dict | None = None, config: str | None = None):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.channels_dir = channels_dir
        self.http_port = free_port()
        self.mllp_port = free_port()
        self.env = dict(os.environ, **(env or {}))
        self.config = None
        if config is not None:
            self.config = workdir / "passerelle.toml"
            self.config.write_text(config)
        self.proc = None
        self.log = workdir / "serve.log"
        self._token = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self, *args: str) -> list:
        return [str(binary()), *args]

    def start(self, wait: bool = True):
        args = [
            "serve",
            "--data-dir", str(self.data_dir),
            "--channels", str(self.channels_dir),
            "--http", f"127.0.0.1:{self.http_port}",
            "--mllp", f"127.0.0.1:{self.mllp_port}",
        ]
        if self.config:
            args += ["--config", str(self.config)]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(self.command(*args), cwd=self.workdir, env=self.env, stdout=log, stderr=log)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"passerelle exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=1) as r:
                    if json.load(r).get("ready"):
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"passerelle not ready:\n{self.log.read_text()}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def kill(self):
        """kill -9: no shutdown code runs."""
        self.stop(signal.SIGKILL)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), cwd=self.workdir, env=self.env, capture_output=True, text=True, check=check)

    @property
    def token(self) -> str:
        if self._token is None:
            out = self.cli("token", "issue", "--data-dir", str(self.data_dir), "--name", "tests")
            self._token = out.stdout.strip()
        return self._token

    def http(self, method: str, path: str, token: str | None = "default", body: bytes | None = None):
        """Returns (status, parsed JSON or text, headers)."""
        request = urllib.request.Request(self.base + path, method=method, data=body)
        if token == "default":
            token = self.token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, raw, headers = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, raw, headers = e.code, e.read(), e.headers
        try:
            return status, json.loads(raw), headers
        except ValueError:
            return status, raw.decode(), headers

    def api(self, path: str, method: str = "GET"):
        status, body, _ = self.http(method, path)
        assert status < 400, (status, body)
        return body

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "condition"):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what} (last: {last!r})")

    def channel(self, channel_id: str) -> dict:
        return next(c for c in self.api("/api/channels") if c["id"] == channel_id)

    def restart(self, wait: bool = True):
        """SIGTERM, then a new process on the same data dir, channels and ports."""
        self.stop()
        return self.start(wait=wait)

    def messages(self, **query) -> dict:
        """GET /api/messages with these query parameters: {"total", "items", "next_cursor"}."""
        return self.api("/api/messages?" + urllib.parse.urlencode(query))

    def message(self, message_id: int) -> dict:
        return self.api(f"/api/messages/{message_id}")

    def find_message(self, control_id: str, **query) -> dict | None:
        """The newest journaled message with this MSH-10, or None."""
        items = self.messages(limit=1000, **query)["items"]
        return next((m for m in items if m["control_id"] == control_id), None)

    def wait_message(self, control_id: str, status: str | None = None, timeout: float = 20.0) -> dict:
        """Waits until the message with this MSH-10 is journaled (with this status) and returns it."""

        def found():
            m = self.find_message(control_id)
            return m if m and (status is None or m["status"] == status) else None

        return self.wait_for(found, timeout, f"message {control_id} with status {status}")


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def bundled_engine(workdir):
    """The engine as `passerelle serve` runs it by default: the bundled channels."""
    engine = Engine(workdir, ROOT / "channels").start()
    yield engine
    engine.stop()


@pytest.fixture
def make_engine(workdir):
    """Builds an engine on channel files written by the test."""
    engines = []

    def make(channels: dict, env: dict | None = None, config: str | None = None, start: bool = True) -> Engine:
        channels_dir = workdir / "channels"
        if channels_dir.exists():
            shutil.rmtree(channels_dir)
        channels_dir.mkdir()
        for name, text in channels.items():
            (channels_dir / name).write_text(text)
        engine = Engine(workdir, channels_dir, env=env, config=config)
        engines.append(engine)
        return engine.start() if start else engine

    yield make
    for e in engines:
        e.stop()


def bundled_counts() -> tuple[int, int]:
    """The channels and mappings shipped in the repository, as `passerelle check` counts them:
    every channel file, and every mapping outside the datatype maps and golden-test folders."""
    channels = len(list((ROOT / "channels").glob("*.yaml")))
    mappings = [
        p for p in (ROOT / "mappings").rglob("*.yaml")
        if "datatypes" not in p.parts and not any(part.endswith(".tests") for part in p.parts)
    ]
    return channels, len(mappings)


def check_ok(channels: int) -> str:
    """The last line of a clean `passerelle check` over `channels` channel files."""
    return f"ok: {channels} channel(s), {bundled_counts()[1]} mapping(s)"


# Bundled channels whose peer is named by an environment variable a fresh machine does not set:
# `check` notes them and `serve` keeps them paused until it is set.
BUNDLED_UNCONFIGURED = {
    "pharmacy-orders": "PASSERELLE_PHARMACY_MLLP",
    # Paused until its operator, sending mailbox and certificate are all set; the reason
    # names every unset variable, in the order the channel file uses them.
    "mssante-documents": "PASSERELLE_SMTP, PASSERELLE_MSSANTE_CERT, PASSERELLE_MSSANTE_KEY, "
                         "PASSERELLE_MSSANTE_FROM",
    # The DMP's repository and the OID of the hospital's sending system.
    "dmp-documents": "PASSERELLE_DMP_XDS, PASSERELLE_DMP_SOURCE_OID",
    # The clinic's Organization (in the subscription), its FHIR server, and the system of
    # the identifiers made from this store's ids.
    "clinic-referrals": "PASSERELLE_CLINIC_ORG, PASSERELLE_CLINIC_FHIR, PASSERELLE_IDENTIFIER_SYSTEM",
}


def bundled_check_lines() -> list[str]:
    """What `passerelle check` prints for the bundled channels with none of their peers set."""
    notes = [f"note: channel `{c}` will be paused: not configured: {v} not set"
             for c, v in sorted(BUNDLED_UNCONFIGURED.items())]
    return notes + [check_ok(bundled_counts()[0])]


def corpus() -> Path | None:
    value = os.environ.get("PASSERELLE_CORPUS")
    return Path(value) if value else None


# --- HL7 v2 helpers shared by the end-to-end tests -------------------------------------------

BUNDLED_CHANNEL = "hl7v2-inbound"

#: The counters of a channel in /api/channels.
COUNTERS = ["received", "acked", "rejected", "duplicates", "filtered", "errored", "queued", "sent"]

PID = "PID|1||123456^^^CHBM^PI||DUPONT^JEAN||19700101|M"


def hl7_message(
    control_id: str,
    message_type: str = "ADT^A01^ADT_A01",
    *,
    sender: str = "HIS",
    facility: str = "CHBM",
    body: list[str] | None = None,
    accept_ack: str = "",
    application_ack: str = "",
    charset: str = "",
    version: str = "2.5",
) -> str:
    """A small valid message, segments ended by CR. MSH-15, MSH-16 and MSH-18 are written
    only when given."""
    msh = ["MSH", "^~\\&", sender, facility, "PASSERELLE", "CHBM", "20240101120000", "",
           message_type, control_id, "P", version]
    optional = {15: accept_ack, 16: application_ack, 18: charset}
    last = max((n for n, value in optional.items() if value), default=12)
    msh += [optional.get(n, "") for n in range(13, last + 1)]
    if body is None:
        kind = message_type.split("^")[0]
        body = [PID, "OBR|1|||GLU^Glucose", "OBX|1|NM|GLU^Glucose||5.4|mmol/L|||||F"] if kind == "ORU" else [PID, "PV1|1|I"]
    return "\r".join(["|".join(msh), *body]) + "\r"


class Hl7Client(MLLPClient):
    """python-hl7's MLLP client as a sending system uses it, with a socket timeout, and
    `send` reading until the end of the reply frame (the library returns whatever one
    `recv` gives, frame bytes included); returns the reply without its framing."""

    def __init__(self, port: int, encoding: str = "utf-8", timeout: float = 10.0):
        super().__init__("127.0.0.1", port, encoding=encoding)
        self.socket.settimeout(timeout)

    def send(self, data: bytes) -> bytes:
        self.socket.sendall(data)
        reply = b""
        while b"\x1c\x0d" not in reply:
            chunk = self.socket.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server before the ACK")
            reply += chunk
        return reply[reply.index(b"\x0b") + 1 : reply.index(b"\x1c\x0d")]


@dataclass
class AckError:
    location: str
    code: str
    severity: str
    text: str


@dataclass
class Ack:
    code: str
    control_id: str
    errors: list[AckError] = field(default_factory=list)
    #: `msh[n]` is MSH-n as written (python-hl7 numbering).
    msh: list[str] = field(default_factory=list)


def parse_ack(reply: bytes, encoding: str = "utf-8") -> Ack:
    """Reads an acknowledgement with python-hl7: MSA-1, MSA-2 and each ERR (ERR-2 location,
    ERR-3 code, ERR-4 severity, ERR-8 text unescaped)."""
    message = hl7.parse(reply.decode(encoding))

    def value(segment, n: int) -> str:
        return str(segment[n]) if len(segment) > n else ""

    msa = message.segment("MSA")
    errors = [
        AckError(value(err, 2), value(err, 3), value(err, 4), message.unescape(value(err, 8)))
        for err in message
        if str(err[0]) == "ERR"
    ]
    msh = [str(f) for f in message.segment("MSH")]
    return Ack(code=value(msa, 1), control_id=value(msa, 2), errors=errors, msh=msh)


def send_messages(port: int, messages: list, encoding: str = "utf-8") -> list[Ack]:
    """Sends with the third-party client on one connection, each after the ACK of the
    previous one; returns the parsed ACKs."""
    with Hl7Client(port, encoding=encoding) as client:
        return [parse_ack(client.send_message(m), encoding) for m in messages]


def send_hl7(port: int, message: str | bytes, encoding: str = "utf-8") -> Ack:
    """One message on a fresh connection of the third-party client; its parsed ACK."""
    return send_messages(port, [message], encoding)[0]


def control_id_of(payload: bytes) -> str:
    return payload.split(b"\r", 1)[0].split(b"|")[9].decode()


class MllpPeer:
    """A downstream HL7 system for `mllp` destinations, on a loopback port. Records every
    message it reads and answers as `reply` says: "AA", "AE" or "AR" (with `text` in MSA-3
    and ERR-8), or None for no answer at all; with `close_after_reply` it closes the
    connection after each answer, as some systems do. Change these at any time."""

    def __init__(self, port: int | None = None, reply: str | None = "AA", text: str = ""):
        self.port = port or free_port()
        self.reply = reply
        self.text = text
        self.close_after_reply = False
        #: Seconds to wait before each answer, as a busy system does.
        self.delay = 0.0
        self.received: list[bytes] = []
        self._lock = threading.Lock()
        self._server = None
        self._connections: list[socket.socket] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()
        return self

    def stop(self):
        if self._server:
            self._server.close()
            self._server = None
        for conn in self._connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._connections.clear()

    def control_ids(self) -> list[str]:
        with self._lock:
            return [control_id_of(m) for m in self.received]

    def _accept(self, server: socket.socket):
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            self._connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        buffer = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                conn.close()
                return
            buffer += chunk
            while b"\x1c\x0d" in buffer:
                end = buffer.index(b"\x1c\x0d")
                payload = buffer[buffer.index(b"\x0b") + 1 : end]
                buffer = buffer[end + 2 :]
                with self._lock:
                    self.received.append(payload)
                    code, text, close = self.reply, self.text, self.close_after_reply
                if self.delay:
                    time.sleep(self.delay)
                if code is not None:
                    conn.sendall(frame(self._ack(payload, code, text)))
                    if close:
                        conn.close()
                        return

    @staticmethod
    def _ack(payload: bytes, code: str, text: str) -> bytes:
        lines = [
            "MSH|^~\\&|PEER|LAB|PASSERELLE|CHBM|20240101120000||ACK|ACK-" + control_id_of(payload) + "|P|2.5",
            f"MSA|{code}|{control_id_of(payload)}|{text}",
        ]
        if code != "AA":
            lines.append(f"ERR||PID^1^3|101^Required field missing^HL70357|E||||{text}")
        return ("\r".join(lines) + "\r").encode()


@pytest.fixture
def peer():
    """A downstream MLLP system (not started: call `start()`, possibly after the engine)."""
    p = MllpPeer()
    yield p
    p.stop()
