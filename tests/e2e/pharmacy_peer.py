"""A third-party hospital pharmacy on MLLP: the peer of the `pharmacy-orders` channel.

It listens on a loopback port, checks every message it reads against the HL7 v2 structure
rules with hl7apy (an independent implementation of the standard, so the engine is not
judged by its own parser), records it, and acknowledges it the way the test asks:

- ``accept``: AA;
- ``error``: AE with an ERR (a transient failure: the sender should retry);
- ``reject``: AR with an ERR giving the reason (the sender should not retry);
- ``down``: the listening socket and every open connection are closed, so connecting is
  refused; switching to another mode listens again on the same port.

Use it through the ``pharmacy`` fixture (``from pharmacy_peer import pharmacy``) or as a
context manager.

How messages are validated: hl7apy 1.3 offers ``parse_message(find_groups=True)`` and
``Validator.validate``. Its group finder is not order-aware, though: it puts a segment in the
first group of the structure that may hold it, so the TQ1 that HL7 2.5 requires *after* RXE in
RDE_O11 (group TIMING_ENCODED) lands in the TIMING group before it, and a correct message is
reported as missing TIMING_ENCODED; it also silently drops segments it cannot place. So the
segments are parsed by hl7apy (strict level: datatypes, dates, component counts), placed in
their groups here by walking hl7apy's own 2.5 message structure in order, and the tree is then
checked by hl7apy's ``Validator`` (required children, cardinalities, datatypes); segments the
structure has no place for are errors. Table and length findings are kept as warnings.
"""

import datetime
import itertools
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field

import hl7
import pytest
from hl7apy import load_reference
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Group, Message
from hl7apy.exceptions import ChildNotFound
from hl7apy.parser import get_message_info, parse_segment
from hl7apy.validation import Validator

START, END = b"\x0b", b"\x1c\x0d"

MODES = ("accept", "error", "reject", "down")

#: What each mode answers: MSA-1, and the default ERR-3 (table 0357) and text.
ANSWERS = {
    "accept": ("AA", None, ""),
    "error": ("AE", "207^Application internal error^HL70357", "pharmacy system temporarily unavailable"),
    "reject": ("AR", "207^Application internal error^HL70357", "order refused by the pharmacy"),
}


# --- validation ------------------------------------------------------------------------------


@dataclass
class Validation:
    valid: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The hl7apy tree when the segments could be parsed and placed, else None.
    message: Message | None = None


# hl7apy keeps module-level caches of its reference files; one validation at a time keeps
# the peer's connection threads from racing on them.
_hl7apy_lock = threading.Lock()


def validate(text: str, version: str = "2.5") -> Validation:
    """Checks one ER7 message (segments ended by CR) against the HL7 structure named by its
    MSH-9 (MSH-9.3, else MSH-9.1_MSH-9.2) in hl7apy's reference for MSH-12."""
    with _hl7apy_lock:
        return _validate(text, version)


def _validate(text: str, expected_version: str) -> Validation:
    if not text.startswith("MSH"):
        return Validation(False, ["the message does not start with an MSH segment"])
    try:
        encoding_chars, structure, version = get_message_info(text)
    except Exception as e:  # noqa: BLE001 - hl7apy raises various types on a broken MSH
        return Validation(False, [f"MSH: {type(e).__name__}: {e}"])
    errors = []
    if version != expected_version:
        errors.append(f"MSH-12 is {version!r}, the pharmacy speaks HL7 {expected_version}")
    try:
        reference = load_reference(structure, "Message", version)
    except (ChildNotFound, TypeError, ValueError, KeyError) as e:
        return Validation(False, errors + [f"unknown message structure {structure!r} in HL7 {version}: {e}"])

    segments, warnings = [], []
    for number, segment_text in enumerate((s for s in text.split("\r") if s), start=1):
        name = segment_text[:3]
        if name.startswith("Z"):
            # Local extensions, allowed anywhere by agreement; the standard says nothing of them.
            warnings.append(f"segment {number} ({name}): Z segment not checked")
            continue
        try:
            segments.append(parse_segment(segment_text, version, encoding_chars, VALIDATION_LEVEL.STRICT))
        except Exception as e:  # noqa: BLE001 - hl7apy's errors are the verdict being recorded
            errors.append(f"segment {number} ({name}): {type(e).__name__}: {e}")
    if errors:
        return Validation(False, errors, warnings)

    message = Message(structure, version=version, validation_level=VALIDATION_LEVEL.STRICT,
                      encoding_chars=encoding_chars)
    top_level = []
    try:
        placed = _place(reference[1], segments, 0, top_level.append, version)
        # Assigned at once, as hl7apy's parser does: the Message already holds an empty MSH.
        message.children = top_level
    except Exception as e:  # noqa: BLE001 - e.g. MaxChildLimitReached from hl7apy
        return Validation(False, [f"{type(e).__name__}: {e}"], warnings)
    if placed < len(segments):
        names = [s.name for s in segments]
        errors.append(
            f"segment {placed + 1} ({names[placed]}) is not allowed here by {structure} "
            f"(after {' '.join(names[:placed])})"
        )

    found_errors, found_warnings = _hl7apy_report(message)
    errors += found_errors
    return Validation(not errors, errors, warnings + found_warnings, message)


def _place(children: tuple, segments: list, position: int, add, version: str) -> int:
    """Hands the segments from `position` to `add` (the parent's) following the structure `children`
    (hl7apy reference entries: name, reference, (min, max), "SEG" or "GRP") in order,
    greedily, as HL7 parsers do; returns the position of the first segment left. Minimum
    counts are left for the validator to report."""
    for name, reference, (_, maximum), kind in children:
        count = 0
        while position < len(segments) and (maximum == -1 or count < maximum):
            if kind == "SEG":
                if segments[position].name != name:
                    break
                add(segments[position])
                position += 1
            else:
                group = Group(name, version=version, reference=reference, validation_level=VALIDATION_LEVEL.STRICT)
                after = _place(reference[1], segments, position, group.add, version)
                if after == position:
                    break
                add(group)
                position = after
            count += 1
    return position


def _hl7apy_report(message: Message) -> tuple[list[str], list[str]]:
    """hl7apy's Validator raises only its first error; its report file lists them all."""
    fd, path = tempfile.mkstemp(prefix="hl7apy-", suffix=".txt")
    os.close(fd)
    try:
        try:
            Validator.validate(message, report_file=path)
        except Exception:  # noqa: BLE001 - the report has every error, this one included
            pass
        with open(path, encoding="utf-8") as report:
            lines = report.read().splitlines()
    finally:
        os.unlink(path)
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    warnings = [line.removeprefix("Warning: ") for line in lines if line.startswith("Warning: ")]
    return errors, warnings


# --- what the peer records --------------------------------------------------------------------


@dataclass
class Received:
    raw: str
    #: MSH-9 as written, e.g. RDE^O11^RDE_O11.
    message_type: str
    #: MSH-10.
    control_id: str
    #: ORC-1 of the first ORC, None without one.
    order_control: str | None
    valid: bool
    errors: list[str]
    warnings: list[str]
    #: MSA-1 of the answer, None when the connection closed before it could be sent.
    ack_code: str | None = None

    def value(self, path: str, repetition: int = 1) -> str:
        """A field or component of the first segment of that name, '' when absent:
        `ORC-2` (the field as written), `RXE-2.1`, `PID-3.1` with `repetition`."""
        message = hl7.parse(self.raw)
        segment, _, rest = path.partition("-")
        number, _, component = rest.partition(".")
        key = f"{segment}.F{number}" + (f".R{repetition}.C{component}" if component else "")
        try:
            if not component:
                return str(message.segment(segment)[int(number)])
            return message[key]
        except (KeyError, IndexError):
            return ""

    def repetitions(self, path: str) -> list[str]:
        """Each repetition of a field, as written: `PID-3`."""
        written = self.value(path)
        return written.split("~") if written else []

    def segment(self, name: str) -> str:
        """The first segment of that name as written, '' when absent."""
        return next((s for s in self.raw.split("\r") if s[:3] == name), "")


def _fields(text: str) -> list[str]:
    """MSH fields numbered as in the standard: [n] is MSH-n (MSH-1 is the field separator)."""
    msh = text.split("\r", 1)[0]
    return ["MSH", "|"] + msh[4:].split("|") if msh.startswith("MSH") and len(msh) > 3 else []


def _order_control(text: str) -> str | None:
    orc = next((s for s in text.split("\r") if s.startswith("ORC|")), None)
    return orc.split("|")[1] if orc and len(orc.split("|")) > 1 else None


# --- acknowledgements ------------------------------------------------------------------------


def escape(text: str) -> str:
    """ER7 escaping (HL7 2.5 section 2.7.4) with the default delimiters, which the ACK uses;
    a free text must not break the segment either."""
    for char, sequence in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        text = text.replace(char, sequence)
    return " ".join(text.splitlines())


_ack_ids = itertools.count(1)


def build_ack(received: str, code: str, error_code: str | None = None, text: str = "") -> str:
    """An original-mode ACK built with hl7apy: MSH with sender and receiver swapped,
    MSH-9 ACK^<trigger>^ACK, MSA-1 `code`, MSA-2 the received MSH-10, and for AE/AR the
    reason in MSA-3 (deprecated in 2.5, still read by many senders) and in ERR (ERR-3 the
    table 0357 code, ERR-4 severity E, ERR-8 the text)."""
    msh = _fields(received)

    def get(n: int, default: str = "") -> str:
        return msh[n] if len(msh) > n and msh[n] else default

    version = get(12, "2.5").split("^")[0]
    trigger = get(9).split("^")[1] if len(get(9).split("^")) > 1 else ""
    try:
        ack = Message("ACK", version=version, validation_level=VALIDATION_LEVEL.STRICT)
    except Exception:  # noqa: BLE001 - a version hl7apy does not know: answer in ours
        version = "2.5"
        ack = Message("ACK", version=version, validation_level=VALIDATION_LEVEL.STRICT)
    for target, source, default in ((3, 5, "PHARMACY"), (4, 6, ""), (5, 3, ""), (6, 4, "")):
        value = get(source, default)
        try:
            if value:
                setattr(ack.msh, f"msh_{target}", value)
        except Exception:  # noqa: BLE001 - an HD hl7apy refuses: the ACK still goes, unaddressed
            pass
    ack.msh.msh_7 = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    ack.msh.msh_9 = f"ACK^{trigger}^ACK" if trigger else "ACK"
    ack.msh.msh_10 = f"PHARMA-ACK-{next(_ack_ids)}"
    ack.msh.msh_11 = get(11, "P")
    ack.msh.msh_12 = version
    ack.msa.msa_1 = code
    ack.msa.msa_2 = get(10)
    if code != "AA":
        reason = escape(text)
        if reason:
            ack.msa.msa_3 = reason
        ack.err.err_3 = error_code or "207^Application internal error^HL70357"
        ack.err.err_4 = "E"
        if reason:
            ack.err.err_8 = reason
    return ack.to_er7() + "\r"


# --- the server ------------------------------------------------------------------------------


class PharmacyPeer:
    """The pharmacy's MLLP server. `mode`, `reason` and `reject_invalid` may be changed at any
    time; a message is answered with the values current when it is read."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", version: str = "2.5", reject_invalid: bool = False):
        self.host = host
        self.port = port
        self.version = version
        #: Answer AR (hl7apy's first error as the reason) to a message that does not validate,
        #: as a strict pharmacy does; by default the peer is only a witness and answers per mode.
        self.reject_invalid = reject_invalid
        self._mode = "accept"
        self._reason: str | None = None
        self._error_code: str | None = None
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()

    # lifecycle

    def start(self):
        self._listen()
        return self

    def stop(self):
        self._close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self) -> str:
        """host:port, as PASSERELLE_PHARMACY_MLLP takes it."""
        return f"{self.host}:{self.port}"

    # modes

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str):
        self.set_mode(mode)

    def set_mode(self, mode: str, reason: str | None = None, error_code: str | None = None):
        """Switches the answer; `reason` (ERR-8, MSA-3) and `error_code` (ERR-3) replace the
        mode's defaults for `error` and `reject`. Returns once the switch is effective: after
        `down`, connecting is refused."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        with self._lock:
            was, self._mode, self._reason, self._error_code = self._mode, mode, reason, error_code
        if mode == "down" and was != "down":
            self._close()
        elif mode != "down" and was == "down":
            self._listen()

    # what was received

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def of_type(self, message_type: str) -> list[Received]:
        """The messages whose MSH-9 starts with `message_type` (RDE^O11 takes RDE^O11^RDE_O11)."""
        return [r for r in self.received if r.message_type.startswith(message_type)]

    def control_ids(self) -> list[str]:
        return [r.control_id for r in self.received]

    def copies(self, control_id: str) -> list[Received]:
        """Every copy read of the message with this MSH-10 (a retransmission has the same)."""
        return [r for r in self.received if r.control_id == control_id]

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        """Polls `predicate(peer)` until it returns something true, and returns that."""
        deadline = time.monotonic() + timeout
        while True:
            found = predicate(self)
            if found:
                return found
            if time.monotonic() > deadline:
                summary = [(r.message_type, r.control_id, r.order_control, r.ack_code) for r in self.received]
                raise TimeoutError(f"pharmacy: timed out waiting for {what}; received {summary}")
            time.sleep(0.05)

    # sockets

    def _listen(self):
        # create_server sets SO_REUSEADDR: the port can be bound again while connections of the
        # previous listener are in TIME_WAIT, so `down` then `accept` keeps the address.
        server = socket.create_server((self.host, self.port))
        self.port = server.getsockname()[1]
        # A timeout rather than closing the socket under a blocked accept(): on Linux that
        # does not wake it, and the port would go on accepting connections while "down".
        server.settimeout(0.1)
        self._stopping.clear()
        self._listener = threading.Thread(target=self._accept, args=(server,), name="pharmacy-accept", daemon=True)
        self._listener.start()

    def _close(self):
        self._stopping.set()
        if self._listener:
            self._listener.join()
            self._listener = None
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()
            except OSError:
                pass
            conn.close()

    def _accept(self, server: socket.socket):
        with server:
            while not self._stopping.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(None)
                with self._lock:
                    self._connections.add(conn)
                threading.Thread(target=self._serve, args=(conn,), name="pharmacy-conn", daemon=True).start()

    def _serve(self, conn: socket.socket):
        buffer = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                while END in buffer:
                    end = buffer.index(END)
                    start = buffer.find(START)
                    payload = buffer[start + 1 : end] if 0 <= start < end else buffer[:end]
                    buffer = buffer[end + len(END) :]
                    record, ack = self._handle(payload)
                    try:
                        conn.sendall(START + ack + END)
                    except OSError:
                        with self._lock:
                            record.ack_code = None
                        raise
        except OSError:
            return  # closed by `down`/`stop`, or by the sender
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _handle(self, payload: bytes) -> tuple[Received, bytes]:
        """Validates and records a message; returns the record and the ACK to send. The
        record is complete before the ACK leaves: a sender that has its ACK sees it."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = payload.decode("latin-1")
        # A sender may end the message with a CR or not; neither is a segment.
        text = text.rstrip("\r\n")
        result = validate(text, self.version)
        msh = _fields(text)
        record = Received(
            raw=text,
            message_type=msh[9] if len(msh) > 9 else "",
            control_id=msh[10] if len(msh) > 10 else "",
            order_control=_order_control(text),
            valid=result.valid,
            errors=result.errors,
            warnings=result.warnings,
        )
        with self._lock:
            mode, reason, error_code = self._mode, self._reason, self._error_code
        if not result.valid and self.reject_invalid:
            code, error_code, reason = "AR", "100^Segment sequence error^HL70357", result.errors[0]
        else:
            code, default_error, default_reason = ANSWERS.get(mode, ANSWERS["error"])
            error_code, reason = error_code or default_error, reason or default_reason
        ack = build_ack(text, code, error_code, reason)
        record.ack_code = code
        with self._lock:
            self._received.append(record)
        return record, ack.encode("utf-8")


@pytest.fixture
def pharmacy():
    """The hospital pharmacy, listening (mode `accept`) on a free loopback port."""
    with PharmacyPeer() as peer:
        yield peer


def main():
    """Runs the peer on its own, to try the `pharmacy-orders` channel by hand: it prints each
    message it receives, whether it is valid HL7 2.5, and what it answered."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=2600)
    parser.add_argument("--mode", choices=sorted(ANSWERS), default="accept")
    args = parser.parse_args()
    with PharmacyPeer(port=args.port) as peer:
        peer.set_mode(args.mode)
        print(f"pharmacy listening on {peer.address} ({args.mode})", flush=True)
        shown = 0
        while True:
            time.sleep(0.2)
            for r in peer.received[shown:]:
                verdict = "valid" if r.valid else "INVALID: " + "; ".join(r.errors)
                print(f"--- {r.message_type} {r.control_id} ORC-1={r.order_control} {verdict} -> {r.ack_code}")
                print(r.raw.replace("\r", "\n"), flush=True)
            shown = len(peer.received)


if __name__ == "__main__":
    main()
