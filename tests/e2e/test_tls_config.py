"""`[mllp.tls]` files that are missing or invalid stop `serve` and are reported by `check`."""

import subprocess

from conftest import ROOT, binary, bundled_check_lines, free_port

CONFIG = """\
[mllp]
idle_timeout = "5m"

[mllp.tls]
certificate = "{cert}"
private_key = "{key}"
"""


def write_config(tmp_path, cert: str, key: str):
    config = tmp_path / "passerelle.toml"
    config.write_text(CONFIG.format(cert=cert, key=key))
    return config


def run(tmp_path, *args, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary()), *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def serve(tmp_path, config) -> subprocess.CompletedProcess:
    return run(
        tmp_path,
        "serve",
        "--config", str(config),
        "--data-dir", str(tmp_path / "data"),
        "--channels", str(ROOT / "channels"),
        "--http", f"127.0.0.1:{free_port()}",
        "--mllp", f"127.0.0.1:{free_port()}",
    )


def test_missing_certificate_stops_serve_and_fails_check(tmp_path):
    config = write_config(tmp_path, str(tmp_path / "absent.crt"), str(tmp_path / "absent.key"))
    out = serve(tmp_path, config)
    assert out.returncode != 0, out
    assert "absent.crt" in out.stderr, out.stderr
    assert f"{config}:5:1: " in out.stderr, out.stderr

    out = run(tmp_path, "check", "--config", str(config), "--channels", str(ROOT / "channels"))
    assert out.returncode == 1, out
    assert out.stdout.startswith(f"{config}:5:1: [mllp.tls] certificate: "), out.stdout
    assert "absent.crt" in out.stdout


def self_signed(tmp_path):
    """A certificate and its key, made with the `cryptography` package."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tmp_path / "server.crt", tmp_path / "server.key"


def test_invalid_private_key_stops_serve_and_fails_check(tmp_path):
    cert, _ = self_signed(tmp_path)
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    config = write_config(tmp_path, str(cert), str(junk))

    out = run(tmp_path, "check", "--config", str(config), "--channels", str(ROOT / "channels"))
    assert out.returncode == 1, out
    assert out.stdout.startswith(f"{config}:6:1: [mllp.tls] private_key: "), out.stdout
    assert "junk.key" in out.stdout

    out = serve(tmp_path, config)
    assert out.returncode != 0, out
    assert "junk.key" in out.stderr, out.stderr
    assert not (tmp_path / "data" / "passerelle.db").exists(), "stopped before opening the journal"


def test_valid_tls_files_pass_check(tmp_path):
    cert, key = self_signed(tmp_path)
    config = write_config(tmp_path, str(cert), str(key))
    out = run(tmp_path, "check", "--config", str(config), "--channels", str(ROOT / "channels"))
    assert out.returncode == 0, out
    assert out.stdout.splitlines() == bundled_check_lines()
