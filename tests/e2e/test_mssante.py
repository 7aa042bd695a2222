"""The MSSanté flow end to end: a Communication written to the FHIR store (with its Patient,
Practitioner, DocumentReference and the Binary holding a CI-SIS CDA) goes out on the bundled
`mssante-documents` channel as a mail with an IHE XDM attachment, by SMTP submission with
STARTTLS and a client certificate, to a real SMTP server on loopback (aiosmtpd) whose TLS
context requires and verifies that certificate.

The contract: subject `XDM/1.0/DDM ...`, `X-MSS-CODECDA` = the CDA's code, `IHE_XDM.zip` with
exactly README.TXT, INDEX.HTM, IHE_XDM/SUBSET01/METADATA.XML and the document, the metadata
matching the document (SHA-1, size, uniqueId, INS, codes); a server down for a while gets the
mail once it is up, exactly once; a 5xx refusal is dead-lettered with the server's words and
goes once reprocessed.
"""

import base64
import datetime
import email
import email.policy
import hashlib
import io
import smtplib
import ssl
import threading
import uuid
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import ROOT, Engine, corpus, free_port
from test_fhir import Fhir, issue_token

CHANNEL = "mssante-documents"
SENDER = "biologie@chbm.test.mssante.fr"
RECIPIENT = "marie.generaliste@cabinet.test.mssante.fr"
CLIENT_CN = "biologie.chbm.test"
CDA_FILE = "BIO-CR-BIO_2024.01_TSH_1.xml"
TIMEOUT = 30.0
OUTAGE_TIMEOUT = 60.0

RIM = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"
TYPE_SCHEME = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
CLASS_SCHEME = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
FORMAT_SCHEME = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
CONFIDENTIALITY_SCHEME = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
FACILITY_SCHEME = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
PRACTICE_SCHEME = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
PATIENT_ID_SCHEME = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
INS_OIDS = ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11")


# --- a throwaway PKI: a CA, the server's certificate, the sending mailbox's certificate ------


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer_cert=None, issuer_key=None, *, ca=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        import ipaddress
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@dataclass
class Pki:
    dir: Path
    ca: Path = None
    server_cert: Path = None
    server_key: Path = None
    client_cert: Path = None
    client_key: Path = None

    def __post_init__(self):
        def write(name, data: bytes) -> Path:
            path = self.dir / name
            path.write_bytes(data)
            return path

        def pem_key(k):
            return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())

        ca_key = _key()
        ca = _cert("Test MSSante CA", ca_key, ca=True)
        server_key, client_key = _key(), _key()
        server = _cert("localhost", server_key, ca, ca_key, server=True)
        client = _cert(CLIENT_CN, client_key, ca, ca_key)
        pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
        self.ca = write("ca.pem", pem(ca))
        self.server_cert = write("server.pem", pem(server))
        self.server_key = write("server.key", pem_key(server_key))
        self.client_cert = write("client.pem", pem(client))
        self.client_key = write("client.key", pem_key(client_key))


# --- the operator's SMTP server ----------------------------------------------------------------


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list
    content: bytes
    peer_cn: str | None


@dataclass
class Operator:
    """An MSSanté operator's submission server: STARTTLS required, client certificate required
    and verified against the test CA. `mode` accept or reject (5xx with `reason`)."""

    pki: Pki
    port: int = field(default_factory=free_port)
    mode: str = "accept"
    reason: str = "5.7.1 destinataire inconnu de l'annuaire MSSante"
    accepted: list = field(default_factory=list)
    refused: list = field(default_factory=list)
    controller: Controller | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki.ca))
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    # aiosmtpd handler hooks
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.mode == "reject":
            with self.lock:
                self.refused.append(address)
            return f"550 {self.reason}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        # After STARTTLS, the TLS layer's details (aiosmtpd keeps them on the session).
        tls = session.ssl or {}
        peer = tls.get("peercert") if isinstance(tls, dict) else None
        peer = peer or server.transport.get_extra_info("peercert")
        cn = None
        if peer:
            cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        queued = uuid.uuid4().hex[:10].upper()
        with self.lock:
            self.accepted.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, cn))
        return f"250 2.0.0 Ok: queued as {queued}"

    def start(self):
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                     tls_context=self.tls_context(), require_starttls=True,
                                     server_hostname="127.0.0.1")
        self.controller.start()
        return self

    def stop(self):
        if self.controller:
            self.controller.stop()
            self.controller = None

    def wait_mails(self, engine: Engine, count: int, timeout: float = TIMEOUT) -> list[Mail]:
        return engine.wait_for(lambda: list(self.accepted) if len(self.accepted) >= count else None,
                               timeout, f"{count} mail(s) at the operator")


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    return Pki(d)


@pytest.fixture
def operator(pki):
    server = Operator(pki)
    yield server
    server.stop()


@pytest.fixture
def cda() -> bytes:
    root = corpus()
    if root is None:
        pytest.skip("PASSERELLE_CORPUS is not set: the CI-SIS CDA samples are in the shared corpus")
    path = root / "ansforge-cda" / CDA_FILE
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path.read_bytes()


def engine_env(operator: Operator, pki: Pki) -> dict:
    return {
        "PASSERELLE_SMTP": f"smtp://{operator.address}",
        "PASSERELLE_MSSANTE_FROM": f"Laboratoire CHBM <{SENDER}>",
        "PASSERELLE_MSSANTE_CERT": str(pki.client_cert),
        "PASSERELLE_MSSANTE_KEY": str(pki.client_key),
        "PASSERELLE_MSSANTE_CA": str(pki.ca),
    }


@pytest.fixture
def engine(workdir, operator, pki):
    e = Engine(workdir, ROOT / "channels", env=engine_env(operator, pki)).start()
    yield e
    e.stop()


@pytest.fixture
def fhir(engine):
    return Fhir(engine, issue_token(engine, "system/*.*"))


# --- the document and what the store holds --------------------------------------------------


@dataclass
class Header:
    unique_id: str
    code: str
    ins: str
    ins_oid: str
    title: str


def cda_header(document: bytes) -> Header:
    v3 = "{urn:hl7-org:v3}"
    root = ET.fromstring(document)
    i = root.find(f"{v3}id")
    unique_id = i.get("root") + (f"^{i.get('extension')}" if i.get("extension") else "")
    ins = next(x for x in root.iter(f"{v3}id") if x.get("root") in INS_OIDS)
    return Header(unique_id, root.find(f"{v3}code").get("code"), ins.get("extension"), ins.get("root"),
                  root.find(f"{v3}title").text.strip())


def send_document(fhir: Fhir, document: bytes) -> dict:
    """Writes what a clinician's 'send to Dr X' does: Patient, Practitioner, Binary,
    DocumentReference, then the Communication that asks for the sending."""
    h = cda_header(document)
    ipp = "IPP-" + uuid.uuid4().hex[:8]
    patient = fhir.ok("POST", "/Patient", {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:1.2.250.1.999.1.1", "value": ipp},
            {"system": f"urn:oid:{h.ins_oid}", "value": h.ins,
             "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", "code": "INS-NIR"}]}},
        ],
        "name": [{"family": "NESSI", "given": ["RUTH"]}],
        "gender": "female", "birthDate": "1979-03-21",
    })
    practitioner = fhir.ok("POST", "/Practitioner", {
        "resourceType": "Practitioner",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810002673899"}],
        "name": [{"family": "GENERALISTE", "given": ["Marie"]}],
        "telecom": [{"system": "phone", "value": "0123456789"}, {"system": "email", "value": RECIPIENT}],
    })
    binary = fhir.ok("POST", "/Binary", {
        "resourceType": "Binary", "contentType": "application/hl7-cda+xml",
        "data": base64.b64encode(document).decode(),
    })
    reference = fhir.ok("POST", "/DocumentReference", {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:" + h.unique_id.split("^")[0]},
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": h.code, "display": "CR d'examens biologiques"}]},
        "category": [{"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument",
                                  "code": "10", "display": "Compte rendu"}]}],
        "subject": {"reference": f"Patient/{patient['id']}"},
        "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]}],
        "content": [{
            "attachment": {"contentType": "application/hl7-cda+xml", "url": f"Binary/{binary['id']}", "title": h.title},
            "format": {"system": "urn:oid:1.2.250.1.213.1.1.4.2.282", "code": "urn:asip:ci-sis:cr-bio:2024",
                       "display": "CR de biologie"},
        }],
        "context": {
            "facilityType": {"coding": [{"system": "urn:oid:1.2.250.1.71.4.2.4", "code": "SA01", "display": "Etablissement public de sante"}]},
            "practiceSetting": {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.9", "code": "ETABLISSEMENT"}]},
        },
    })
    communication = fhir.ok("POST", "/Communication", {
        "resourceType": "Communication",
        "status": "in-progress",
        "subject": {"reference": f"Patient/{patient['id']}"},
        "recipient": [{"reference": f"Practitioner/{practitioner['id']}"}],
        "payload": [
            {"contentReference": {"reference": f"DocumentReference/{reference['id']}"}},
            {"contentString": "Bonjour, voici le compte rendu de biologie de votre patiente."},
        ],
    })
    return {"patient": patient, "header": h, "communication": communication, "ipp": ipp}


def journaled(engine: Engine, status: str) -> dict:
    def found():
        items = engine.messages(channel=CHANNEL, status=status)["items"]
        return items[0] if items else None

    return engine.wait_for(found, TIMEOUT, f"a {CHANNEL} message {status}")


def settled(engine: Engine, sent: int):
    def done():
        c = engine.channel(CHANNEL)
        return c if c["sent"] >= sent and c["queued"] == 0 else None

    return engine.wait_for(done, TIMEOUT, f"{CHANNEL}: {sent} sent, none queued")


# --- what the operator received ----------------------------------------------------------------


def assert_mssante_mail(mail: Mail, document: bytes, sent: dict):
    h: Header = sent["header"]
    assert mail.mail_from == SENDER
    assert mail.rcpt_tos == [RECIPIENT]
    assert mail.peer_cn == CLIENT_CN, "the engine presented its client certificate"

    message = email.message_from_bytes(mail.content, policy=email.policy.default)
    assert message["Subject"].startswith("XDM/1.0/DDM"), message["Subject"]
    assert message["X-MSS-CODECDA"] == h.code
    assert SENDER in message["From"] and RECIPIENT in message["To"]
    assert message["Message-ID"] and message["Date"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "voici le compte rendu" in text and h.title in text, text

    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "IHE_XDM.zip"
    assert attachment.get_content_type() == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(attachment.get_content()))
    assert archive.testzip() is None
    assert archive.namelist() == ["README.TXT", "INDEX.HTM", "IHE_XDM/SUBSET01/METADATA.XML",
                                  "IHE_XDM/SUBSET01/DOC0001.XML"]
    assert archive.read("IHE_XDM/SUBSET01/DOC0001.XML") == document
    assert b"IHE_XDM/SUBSET01/DOC0001.XML" in archive.read("INDEX.HTM")

    metadata = ET.fromstring(archive.read("IHE_XDM/SUBSET01/METADATA.XML"))
    assert metadata.tag == "{urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0}SubmitObjectsRequest"
    [entry] = metadata.iter(f"{RIM}ExtrinsicObject")
    assert entry.get("objectType") == "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    assert entry.get("mimeType") == "text/xml"

    def slot(name):
        return [v.text for s in entry.findall(f"{RIM}Slot") if s.get("name") == name for v in s.iter(f"{RIM}Value")]

    def codes(scheme):
        return [(c.get("nodeRepresentation"),
                 [v.text for s in c.findall(f"{RIM}Slot") if s.get("name") == "codingScheme" for v in s.iter(f"{RIM}Value")])
                for c in entry.findall(f"{RIM}Classification") if c.get("classificationScheme") == scheme]

    def external(scheme):
        return [x.get("value") for x in entry.findall(f"{RIM}ExternalIdentifier") if x.get("identificationScheme") == scheme]

    assert slot("hash") == [hashlib.sha1(document).hexdigest()]
    assert slot("size") == [str(len(document))]
    assert slot("URI") == ["DOC0001.XML"]
    assert external(UNIQUE_ID_SCHEME) == [h.unique_id]
    assert external(PATIENT_ID_SCHEME) == [f"{h.ins}^^^&{h.ins_oid}&ISO^NH"]
    assert slot("sourcePatientId") == [f"{sent['ipp']}^^^&1.2.250.1.999.1.1&ISO^PI"]
    info = slot("sourcePatientInfo")
    assert "PID-5|NESSI^RUTH^^^^^L" in info and "PID-7|19790321" in info and "PID-8|F" in info, info
    assert codes(TYPE_SCHEME) == [(h.code, ["2.16.840.1.113883.6.1"])]
    assert codes(CLASS_SCHEME) == [("10", ["1.2.250.1.213.1.1.4.1"])]
    assert codes(FORMAT_SCHEME) == [("urn:asip:ci-sis:cr-bio:2024", ["1.2.250.1.213.1.1.4.2.282"])]
    assert codes(CONFIDENTIALITY_SCHEME) == [("N", ["2.16.840.1.113883.5.25"])]
    assert codes(FACILITY_SCHEME) == [("SA01", ["1.2.250.1.71.4.2.4"])]
    assert codes(PRACTICE_SCHEME) == [("ETABLISSEMENT", ["1.2.250.1.213.1.1.4.9"])]
    # The author, from the CDA header (the DocumentReference names none).
    authors = [c for c in entry.findall(f"{RIM}Classification")
               if c.get("classificationScheme") == "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"]
    assert authors, "an author classification"

    [package] = metadata.iter(f"{RIM}RegistryPackage")
    recipients = [v.text for s in package.findall(f"{RIM}Slot") if s.get("name") == "intendedRecipient"
                  for v in s.iter(f"{RIM}Value")]
    assert recipients == [f"||^^Internet^{RECIPIENT}"]
    [member] = metadata.iter(f"{RIM}Association")
    assert member.get("sourceObject") == package.get("id") and member.get("targetObject") == entry.get("id")


# --- scenarios ---------------------------------------------------------------------------------


def test_the_server_refuses_a_client_without_a_certificate(operator, pki):
    """The operator really checks the certificate: without one the STARTTLS handshake fails,
    with the mailbox's certificate the same server takes the mail."""
    operator.start()
    host, port = operator.address.split(":")
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP(host, int(port), timeout=10) as s:
            s.starttls(context=ctx)
            s.sendmail(SENDER, [RECIPIENT], b"Subject: x\r\n\r\nx\r\n")
    assert operator.accepted == []
    ctx.load_cert_chain(pki.client_cert, pki.client_key)
    with smtplib.SMTP(host, int(port), timeout=10) as s:
        s.starttls(context=ctx)
        s.sendmail(SENDER, [RECIPIENT], b"Subject: x\r\n\r\nx\r\n")
    assert [m.peer_cn for m in operator.accepted] == [CLIENT_CN]


def test_without_the_variables_the_channel_is_paused(workdir):
    e = Engine(workdir, ROOT / "channels")
    for v in ("PASSERELLE_SMTP", "PASSERELLE_MSSANTE_FROM", "PASSERELLE_MSSANTE_CERT", "PASSERELLE_MSSANTE_KEY"):
        e.env.pop(v, None)
    e.start()
    try:
        state = e.channel(CHANNEL)
        assert state["state"] == "paused"
        assert "PASSERELLE_SMTP" in state["reason"]
    finally:
        e.stop()


def test_a_communication_sends_its_document_as_an_xdm_mail(engine, fhir, operator, cda):
    operator.start()
    sent = send_document(fhir, cda)
    [mail] = operator.wait_mails(engine, 1)
    assert_mssante_mail(mail, cda, sent)

    settled(engine, sent=1)
    message = journaled(engine, "sent")
    detail = engine.message(message["id"])
    [delivery] = detail["outbox"]
    assert delivery["status"] == "sent" and delivery["attempts"] == 1, delivery
    steps = [t for t in detail["trace"] if t["step"] == "destination:mssante"]
    assert steps and "queued as" in steps[-1]["detail"], detail["trace"]
    assert len(operator.accepted) == 1


def test_a_mail_waits_while_the_server_is_down_then_goes_once(engine, fhir, operator, cda):
    sent = send_document(fhir, cda)
    queued = journaled(engine, "queued")
    engine.wait_for(
        lambda: [o for o in engine.message(queued["id"])["outbox"] if o["attempts"] >= 1 and o["last_error"]],
        TIMEOUT, "a failed delivery attempt")
    assert operator.accepted == []

    operator.start()
    [mail] = operator.wait_mails(engine, 1, timeout=OUTAGE_TIMEOUT)
    assert_mssante_mail(mail, cda, sent)
    engine.wait_for(lambda: engine.message(queued["id"])["status"] == "sent", TIMEOUT, "the mail sent")
    settled(engine, sent=1)
    assert len(operator.accepted) == 1


def test_a_refused_mail_is_dead_lettered_with_the_reason_then_reprocessed(engine, fhir, operator, cda):
    operator.mode = "reject"
    operator.start()
    sent = send_document(fhir, cda)

    dead = journaled(engine, "errored")
    detail = engine.message(dead["id"])
    [delivery] = [o for o in detail["outbox"] if o["status"] == "dead"]
    assert operator.reason in delivery["last_error"], delivery
    assert "550" in delivery["last_error"], delivery
    assert delivery["attempts"] == 1, "5xx: not retried"
    assert operator.refused == [RECIPIENT] and operator.accepted == []

    operator.mode = "accept"
    status, body, _ = engine.http("POST", f"/api/messages/{dead['id']}/reprocess")
    assert status == 202, body
    [mail] = operator.wait_mails(engine, 1)
    assert_mssante_mail(mail, cda, sent)
    engine.wait_for(lambda: engine.message(dead["id"])["status"] == "sent", TIMEOUT, "the reprocessed mail sent")
    settled(engine, sent=1)
    assert len(operator.accepted) == 1
