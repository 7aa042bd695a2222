"""The `postgres` fixture itself: each database it gives is fresh, empty and isolated."""

import os
import subprocess
import urllib.parse

from postgres import SUPERUSER, _client


def test_databases_are_separate(postgres):
    first, second = postgres.new_database(), postgres.new_database()
    assert first != second
    for url in (first, second):
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme == "postgres" and parts.hostname == "127.0.0.1"
        assert parts.port == postgres.port and parts.username and parts.password

    postgres.psql("CREATE TABLE patients (id text PRIMARY KEY); INSERT INTO patients VALUES ('p1')", first)
    assert postgres.psql("SELECT id FROM patients", first).split() == ["p1"]

    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert postgres.psql(tables, second).strip() == "0"
    assert postgres.psql("SELECT to_regclass('public.patients') IS NULL", second).strip() == "t"


def test_password_is_required(postgres):
    """The URL's password is what lets a client in: the server does not trust loopback."""
    url = postgres.new_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    wrong = url.replace(postgres.password, "wrong")
    denied = subprocess.run(
        [_client(postgres.bindir, "psql"), "-X", "-w", "-d", wrong, "-c", "SELECT 1"],
        capture_output=True, text=True, env=env,
    )
    assert denied.returncode != 0 and "password authentication failed" in denied.stderr, denied.stderr
    allowed = subprocess.run(
        [_client(postgres.bindir, "psql"), "-X", "-w", "-A", "-t", "-d", url, "-c", "SELECT current_user"],
        capture_output=True, text=True, env=env,
    )
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == SUPERUSER
