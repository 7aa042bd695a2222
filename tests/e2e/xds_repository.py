"""A local IHE XDS.b Document Repository (ITI-41 Provide and Register Document Set-b), as the
DMP's would answer: it checks each request strictly and answers real RegistryResponses.

The checks, each reported by name when it fails:
- HTTP: POST, Content-Type multipart/related with type="application/xop+xml",
  start-info="application/soap+xml", a boundary and a start part that exists;
- SOAP 1.2 envelope; WS-Addressing Action urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b,
  a urn:uuid MessageID, To equal to this repository's URL, ReplyTo anonymous;
- WS-Security header holding a SAML 2.0 assertion (Issuer, Subject/NameID, attributes);
- MTOM: every xdsb:Document is an xop:Include whose cid names a part of the package;
- ebRIM (ITI TF-3 4.2): the DocumentEntry's required slots, its classifications (with their
  scheme UUIDs, a nodeRepresentation and a codingScheme) and external identifiers; the
  SubmissionSet's slots, classification node, contentTypeCode and identifiers; the HasMember
  association; hash and size equal to the document part's; patientId equal in the entry,
  the set and sourcePatientId, and the INS found in sourcePatientInfo; an RPLC association
  pointing to a DocumentEntry registered before.

A request that fails a SOAP/HTTP check gets a SOAP Sender fault; one whose metadata fails
gets a Failure with XDSRegistryMetadataError (the codeContext lists what failed). Modes a
test sets on the fixture: `repository_errors` (answer XDSRepositoryError to that many valid
requests first), `rejected_patients` (INS values answered XDSPatientIdDoesNotMatch),
`accepted_format_codes` (a registry whose value set lacks a formatCode: metadata error).
"""

import base64
import email.parser
import email.policy
import hashlib
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import free_port

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
XDSB = "urn:ihe:iti:xds-b:2007"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XOP = "http://www.w3.org/2004/08/xop/include"
ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
NS = {"s": SOAP, "wsa": WSA, "wsse": WSSE, "saml": SAML, "xdsb": XDSB, "lcm": LCM, "rim": RIM,
      "rs": RS, "xop": XOP}

# ITI TF-3 Table 4.2.5-1.
DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DE_CLASSIFICATIONS = {
    "classCode": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "confidentialityCode": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "formatCode": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "healthcareFacilityTypeCode": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "practiceSettingCode": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "typeCode": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
}
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
INS_ROOTS = ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11")
DTM = re.compile(r"^\d{8}(\d{2}(\d{2}(\d{2})?)?)?$")


class Invalid(Exception):
    """A request the repository refuses; `sender`: a SOAP fault, else a metadata error."""

    def __init__(self, problems: list[str], sender: bool):
        super().__init__("; ".join(problems))
        self.problems, self.sender = problems, sender


@dataclass
class Received:
    """One request as the repository read it."""
    content_type: str
    body: bytes
    status: str = ""
    errors: list = field(default_factory=list)
    envelope: ET.Element | None = None
    document: bytes = b""
    entry: dict = field(default_factory=dict)
    submission: dict = field(default_factory=dict)
    replaces: str | None = None
    message_id: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == SUCCESS


def slots(element: ET.Element) -> dict:
    return {s.get("name"): [v.text or "" for v in s.findall("rim:ValueList/rim:Value", NS)]
            for s in element.findall("rim:Slot", NS)}


def classifications(element: ET.Element) -> dict:
    """scheme UUID -> list of (nodeRepresentation, slots)."""
    out = {}
    for c in element.findall("rim:Classification", NS):
        out.setdefault(c.get("classificationScheme"), []).append((c.get("nodeRepresentation"), slots(c), c))
    return out


def externals(element: ET.Element) -> dict:
    return {e.get("identificationScheme"): e.get("value") for e in element.findall("rim:ExternalIdentifier", NS)}


class Repository:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.received: list[Received] = []
        self.registered: dict[str, str] = {}  # uniqueId -> entryUUID
        self.repository_errors = 0
        self.rejected_patients: set[str] = set()
        self.accepted_format_codes: set[str] | None = None
        # Re-entrant: wait_for holds it while its predicate calls accepted().
        self.lock = threading.RLock()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/xds/iti41"

    # --- lifecycle -----------------------------------------------------------------------

    def start(self):
        repository = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, content_type, answer = repository.handle(self.path, self.headers.get("Content-Type", ""), body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # --- what arrived --------------------------------------------------------------------

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.accepted]

    def wait_for(self, predicate, timeout: float, what: str):
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = predicate(self)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"the repository did not get {what} in {timeout}s: {[(r.status, r.errors) for r in self.received]}")

    # --- the exchange --------------------------------------------------------------------

    def handle(self, path: str, content_type: str, body: bytes) -> tuple[int, str, bytes]:
        r = Received(content_type, body)
        with self.lock:
            self.received.append(r)
            try:
                if path != "/xds/iti41":
                    raise Invalid([f"no ITI-41 service at {path}"], sender=True)
                self.read(r)
                self.judge(r)
            except Invalid as e:
                if e.sender:
                    r.status, r.errors = "fault", [("Sender", "; ".join(e.problems))]
                    return 400, 'application/soap+xml; charset=UTF-8', fault("; ".join(e.problems))
                r.status, r.errors = FAILURE, [("XDSRegistryMetadataError", p) for p in e.problems]
            return self.answer(r)

    def judge(self, r: Received):
        """The registry's decision on well-formed metadata."""
        if self.repository_errors > 0:
            self.repository_errors -= 1
            r.status, r.errors = FAILURE, [("XDSRepositoryError", "the document store is not available")]
            return
        if r.entry["ins"] in self.rejected_patients:
            r.status, r.errors = FAILURE, [("XDSPatientIdDoesNotMatch",
                                            f"patient {r.entry['patientId']} is not known to the DMP")]
            return
        if self.accepted_format_codes is not None and r.entry["formatCode"] not in self.accepted_format_codes:
            raise Invalid([f"formatCode {r.entry['formatCode']} is not in the registry's value set"], sender=False)
        if r.entry["uniqueId"] in self.registered:
            r.status, r.errors = FAILURE, [("XDSDuplicateUniqueIdInRegistry", f"uniqueId {r.entry['uniqueId']} is already registered")]
            return
        self.registered[r.entry["uniqueId"]] = r.entry["entryUUID"]
        r.status = SUCCESS

    def answer(self, r: Received) -> tuple[int, str, bytes]:
        errors = "".join(
            f'<rs:RegistryError errorCode="{code}" codeContext="{escape(context)}" location="xds-repository" '
            f'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/>'
            for code, context in r.errors)
        error_list = f"<rs:RegistryErrorList>{errors}</rs:RegistryErrorList>" if errors else ""
        envelope = (
            f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP}" xmlns:wsa="{WSA}">'
            f'<s:Header><wsa:Action s:mustUnderstand="true">{ACTION}Response</wsa:Action>'
            f'<wsa:RelatesTo>{escape(r.message_id)}</wsa:RelatesTo></s:Header>'
            f'<s:Body><rs:RegistryResponse xmlns:rs="{RS}" status="{r.status}">{error_list}</rs:RegistryResponse>'
            f'</s:Body></s:Envelope>').encode()
        # Answered as MTOM, as repositories do for an MTOM request.
        boundary = "MIMEBoundary_" + uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: <0.answer@repository>\r\n\r\n").encode() \
            + envelope + f"\r\n--{boundary}--\r\n".encode()
        content_type = (f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
                        f'start="<0.answer@repository>"; start-info="application/soap+xml"')
        return 200, content_type, body

    # --- reading the request -------------------------------------------------------------

    def read(self, r: Received):
        ct = r.content_type
        problems = []
        if not ct.lower().startswith("multipart/related"):
            raise Invalid([f"Content-Type is {ct!r}, not multipart/related (MTOM)"], sender=True)
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ct.encode() + b"\r\n\r\n" + r.body)
        params = dict(message["Content-Type"].params)
        if params.get("type") != "application/xop+xml":
            problems.append(f'Content-Type type is {params.get("type")!r}, not "application/xop+xml"')
        if params.get("start-info") != "application/soap+xml":
            problems.append(f'Content-Type start-info is {params.get("start-info")!r}, not "application/soap+xml"')
        parts = {}
        for part in message.iter_parts():
            cid = (part.get("Content-ID") or "").strip()
            parts[cid.strip("<>")] = part
        start = (params.get("start") or "").strip("<>")
        root = parts.get(start) if start else next(iter(parts.values()), None)
        if root is None:
            raise Invalid(problems + [f"no start part <{start}> among {list(parts)}"], sender=True)
        root_type = root.get_content_type()
        if root_type != "application/xop+xml" or root["Content-Type"].params.get("type") != "application/soap+xml":
            problems.append(f"the root part is {root['Content-Type']}, not application/xop+xml; type=\"application/soap+xml\"")
        try:
            envelope = ET.fromstring(root.get_payload(decode=True))
        except ET.ParseError as e:
            raise Invalid(problems + [f"the envelope is not XML: {e}"], sender=True)
        if envelope.tag != f"{{{SOAP}}}Envelope":
            raise Invalid(problems + [f"the root element is {envelope.tag}, not a SOAP 1.2 Envelope"], sender=True)
        r.envelope = envelope
        header = envelope.find("s:Header", NS)
        if header is None:
            raise Invalid(problems + ["no SOAP Header"], sender=True)
        text = lambda path: (header.findtext(path, default="", namespaces=NS) or "").strip()  # noqa: E731
        if text("wsa:Action") != ACTION:
            problems.append(f"wsa:Action is {text('wsa:Action')!r}")
        r.message_id = text("wsa:MessageID")
        if not re.match(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", r.message_id):
            problems.append(f"wsa:MessageID {r.message_id!r} is not a urn:uuid")
        if text("wsa:To") != self.url:
            problems.append(f"wsa:To is {text('wsa:To')!r}, not {self.url}")
        if text("wsa:ReplyTo/wsa:Address") != "http://www.w3.org/2005/08/addressing/anonymous":
            problems.append("wsa:ReplyTo is not anonymous")
        assertion = header.find("wsse:Security/saml:Assertion", NS)
        if assertion is None:
            problems.append("no SAML assertion (VIHF) in wsse:Security")
        else:
            if assertion.get("Version") != "2.0" or not assertion.get("ID") or not assertion.get("IssueInstant"):
                problems.append("the assertion lacks Version 2.0, ID or IssueInstant")
            if not assertion.findtext("saml:Issuer", namespaces=NS):
                problems.append("the assertion has no Issuer")
            if not assertion.findtext("saml:Subject/saml:NameID", namespaces=NS):
                problems.append("the assertion has no Subject/NameID")
            names = {a.get("Name") for a in assertion.findall("saml:AttributeStatement/saml:Attribute", NS)}
            for needed in ("VIHF_Version", "Identifiant_Structure", "Secteur_Activite",
                           "urn:oasis:names:tc:xacml:2.0:resource:resource-id", "Authentification_Mode"):
                if needed not in names:
                    problems.append(f"the VIHF has no attribute {needed}")
        if problems:
            raise Invalid(problems, sender=True)
        request = envelope.find("s:Body/xdsb:ProvideAndRegisterDocumentSetRequest", NS)
        if request is None:
            raise Invalid(["no ProvideAndRegisterDocumentSetRequest in the Body"], sender=True)
        documents = {}
        for d in request.findall("xdsb:Document", NS):
            include = d.find("xop:Include", NS)
            href = include.get("href", "") if include is not None else ""
            if not href.startswith("cid:"):
                raise Invalid([f"xdsb:Document {d.get('id')} is not an xop:Include of a cid"], sender=True)
            cid = href[4:]
            part = parts.get(cid)
            if part is None:
                raise Invalid([f"xop:Include {href} names no MIME part"], sender=True)
            documents[d.get("id")] = part.get_payload(decode=True)
        self.read_metadata(r, request, documents)

    def read_metadata(self, r: Received, request: ET.Element, documents: dict):
        problems = []
        objects = request.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
        if objects is None:
            raise Invalid(["no SubmitObjectsRequest/RegistryObjectList"], sender=False)
        entries = objects.findall("rim:ExtrinsicObject", NS)
        packages = objects.findall("rim:RegistryPackage", NS)
        if len(entries) != 1 or len(packages) != 1:
            raise Invalid([f"{len(entries)} DocumentEntry and {len(packages)} SubmissionSet, expected one each"], sender=False)
        de, ss = entries[0], packages[0]
        de_id, ss_id = de.get("id"), ss.get("id")
        if de.get("objectType") != DOCUMENT_ENTRY:
            problems.append(f"DocumentEntry objectType {de.get('objectType')}")
        if not de.get("mimeType"):
            problems.append("DocumentEntry without mimeType")
        de_slots = slots(de)
        for needed in ("creationTime", "languageCode", "sourcePatientId", "sourcePatientInfo"):
            if not de_slots.get(needed):
                problems.append(f"DocumentEntry slot {needed} is missing")
        for t in ("creationTime", "serviceStartTime", "serviceStopTime"):
            for v in de_slots.get(t, []):
                if not DTM.match(v):
                    problems.append(f"{t} {v!r} is not a UTC DTM")
        de_class = classifications(de)
        coded = {}
        for name, scheme in DE_CLASSIFICATIONS.items():
            found = de_class.get(scheme, [])
            if not found:
                problems.append(f"DocumentEntry classification {name} ({scheme}) is missing")
                continue
            for node, s, c in found:
                if not node or not s.get("codingScheme") or c.get("classifiedObject") != de_id:
                    problems.append(f"{name}: nodeRepresentation, codingScheme or classifiedObject missing")
            coded[name] = found[0][0]
        author = de_class.get(DE_AUTHOR, [])
        if not author or not author[0][1].get("authorPerson"):
            problems.append("DocumentEntry author with authorPerson is missing")
        ext = externals(de)
        patient_id, unique_id = ext.get(DE_PATIENT_ID), ext.get(DE_UNIQUE_ID)
        if not patient_id or not unique_id:
            problems.append("DocumentEntry patientId or uniqueId external identifier is missing")
        # patientId: the INS in CX form with its assigning authority, as in sourcePatientId.
        m = re.match(r"^([^^]+)\^\^\^&([0-9.]+)&ISO(\^NH)?$", patient_id or "")
        if not m or m.group(2) not in INS_ROOTS:
            problems.append(f"patientId {patient_id!r} is not an INS^^^&OID&ISO")
        if de_slots.get("sourcePatientId", [None])[0] != patient_id:
            problems.append("sourcePatientId differs from patientId")
        ins = m.group(1) if m else ""
        pid3 = [v for v in de_slots.get("sourcePatientInfo", []) if v.startswith("PID-3|")]
        if not any(v.startswith(f"PID-3|{ins}^^^&{m.group(2) if m else ''}&ISO") for v in pid3):
            problems.append(f"sourcePatientInfo has no PID-3 with the INS {ins}")
        document = documents.get(de_id)
        if document is None:
            problems.append(f"no xdsb:Document for the DocumentEntry {de_id}")
            document = b""
        if "hash" in de_slots and de_slots["hash"][0] != hashlib.sha1(document).hexdigest():
            problems.append("hash differs from the document's SHA-1")
        if "size" in de_slots and de_slots["size"][0] != str(len(document)):
            problems.append("size differs from the document's")
        ss_slots = slots(ss)
        if not DTM.match((ss_slots.get("submissionTime") or [""])[0]):
            problems.append("SubmissionSet submissionTime is missing or not a DTM")
        ss_ext = externals(ss)
        for name, scheme in (("uniqueId", SS_UNIQUE_ID), ("sourceId", SS_SOURCE_ID), ("patientId", SS_PATIENT_ID)):
            if not ss_ext.get(scheme):
                problems.append(f"SubmissionSet {name} is missing")
        for name in ("uniqueId", "sourceId"):
            value = ss_ext.get({"uniqueId": SS_UNIQUE_ID, "sourceId": SS_SOURCE_ID}[name]) or ""
            if not re.match(r"^[0-2](\.(0|[1-9][0-9]*))+$", value):
                problems.append(f"SubmissionSet {name} {value!r} is not an OID")
        if ss_ext.get(SS_PATIENT_ID) != patient_id:
            problems.append("SubmissionSet patientId differs from the DocumentEntry's")
        if not classifications(ss).get(SS_CONTENT_TYPE):
            problems.append("SubmissionSet contentTypeCode is missing")
        if not classifications(ss).get(SS_AUTHOR):
            problems.append("SubmissionSet author is missing")
        nodes = [c for c in objects.findall("rim:Classification", NS)
                 if c.get("classifiedObject") == ss_id and c.get("classificationNode") == SUBMISSION_SET]
        if not nodes:
            problems.append("no Classification of the RegistryPackage as a SubmissionSet")
        associations = objects.findall("rim:Association", NS)
        members = [a for a in associations if a.get("associationType") == HAS_MEMBER
                   and a.get("sourceObject") == ss_id and a.get("targetObject") == de_id]
        if not members or slots(members[0]).get("SubmissionSetStatus") != ["Original"]:
            problems.append("no HasMember association (SubmissionSetStatus Original) from the set to the entry")
        replaces = [a for a in associations if a.get("associationType") == RPLC]
        for a in replaces:
            if a.get("sourceObject") != de_id:
                problems.append("the RPLC association does not start at the new DocumentEntry")
            if a.get("targetObject") not in self.registered.values():
                problems.append(f"the RPLC association targets {a.get('targetObject')}, no DocumentEntry registered here")
        r.document = document
        r.entry = {"entryUUID": de_id, "uniqueId": unique_id, "patientId": patient_id, "ins": ins,
                   "slots": de_slots, "author": author[0][1] if author else {}, **coded}
        r.submission = {"slots": ss_slots, "externals": ss_ext}
        r.replaces = replaces[0].get("targetObject") if replaces else None
        if problems:
            raise Invalid(problems, sender=False)


def fault(reason: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault>'
            f'<s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason><s:Text xml:lang="en">{escape(reason)}</s:Text>'
            f'</s:Reason></s:Fault></s:Body></s:Envelope>').encode()


def escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


@pytest.fixture
def repository():
    r = Repository().start()
    yield r
    r.stop()


__all__ = ["Repository", "Received", "repository", "base64"]
